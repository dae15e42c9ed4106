// lib/context_switch.hpp — the only doorway to Boost.Context.
//
// A `continuation` is a suspended execution context (a stack plus saved registers). It wraps
// boost::context::fiber without exposing Boost to the rest of the library, as folly's FiberImpl does.
#pragma once

#include <cstddef>
#include <exception>

namespace tendril::detail {

struct stack_label;

class continuation {
 public:
  // The body of a new context: runs on its own stack, receives the continuation of whoever first resumed it,
  // and returns the continuation to jump to when it ends (the stack is freed after that jump).
  using body_fn = continuation (*)(void* arg, continuation&& caller);

  continuation() noexcept = default;
  continuation(continuation&& other) noexcept;
  continuation& operator=(continuation&& other) noexcept;
  continuation(const continuation&) = delete;
  continuation& operator=(const continuation&) = delete;
  // Destroying a non-empty continuation unwinds its stack (Boost's forced_unwind); tendril never does that
  // except for contexts it has finished with.
  ~continuation();

  explicit operator bool() const noexcept { return fctx_ != nullptr; }

  // Suspends the running context and resumes this one. Returns the continuation of the context that later
  // resumes the caller, or an empty one if that context finished.
  continuation resume() &&;

  // A new suspended context on a pooled stack of `stack_size` usable bytes. `label` (may be null) is filled
  // with the stack's guard-page range, for the stack-overflow message.
  static continuation create(std::size_t stack_size, body_fn body, void* arg, stack_label* label);

  // Forgets the suspended context without unwinding it: its stack is leaked. For contexts that can never run
  // again (a greenlet that refused to die, or whose thread is gone).
  void leak() && noexcept { fctx_ = nullptr; }

 private:
  void* fctx_ = nullptr;  // boost::context::fiber's single member, held opaquely
};

// Inside a catch(...) block: true if the exception is Boost.Context's forced_unwind, which must be rethrown.
bool is_forced_unwind() noexcept;

}  // namespace tendril::detail
