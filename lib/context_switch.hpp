// lib/context_switch.hpp — the only doorway to Boost.Context.
//
// A `continuation` is a suspended execution context (a stack plus saved registers): one fcontext_t, the layout of
// boost::context::fiber, with Boost.Context's rules for entering, leaving and unwinding contexts. Contexts are
// made with Boost.Context's make_fcontext directly, with a small record at the top of the stack, as
// boost::context::fiber does, minus the jump into the new context and back that fiber's constructor makes: a
// new context waits at its entry function until first resumed (context_switch.cpp). Only the hot operations
// (move, test, resume) are inline here, calling jump_fcontext exactly as fiber::resume() does. The other
// doorway is lib/switch_x86_64.S, greenlet::switch_value() on x86-64, which calls jump_fcontext itself with a
// raw context taken out of a continuation (release/adopt below); see there for why.
#pragma once

#include <boost/context/detail/fcontext.hpp>

#include <cstddef>
#include <exception>
#include <utility>

namespace tendril::detail {

struct stack_label;

class continuation {
 public:
  // The body of a new context: runs on its own stack, receives the continuation of whoever first resumed it,
  // and returns the continuation to jump to when it ends (the stack is freed after that jump).
  using body_fn = continuation (*)(void* arg, continuation&& caller);

  continuation() noexcept = default;
  continuation(continuation&& other) noexcept : fctx_(std::exchange(other.fctx_, nullptr)) {}
  continuation& operator=(continuation&& other) noexcept {
    if (this != &other) {
      if (fctx_ != nullptr) [[unlikely]]
        unwind();
      fctx_ = std::exchange(other.fctx_, nullptr);
    }
    return *this;
  }
  continuation(const continuation&) = delete;
  continuation& operator=(const continuation&) = delete;
  // Destroying a non-empty continuation unwinds its stack (Boost's forced_unwind); tendril never does that
  // except for contexts it has finished with.
  ~continuation() {
    if (fctx_ != nullptr) [[unlikely]]
      unwind();
  }

  explicit operator bool() const noexcept { return fctx_ != nullptr; }

  // Suspends the running context and resumes this one. Returns the continuation of the context that later
  // resumes the caller, or an empty one if that context finished.
  [[gnu::always_inline]] continuation resume() && {
    continuation back;
    back.fctx_ = boost::context::detail::jump_fcontext(std::exchange(fctx_, nullptr), nullptr).fctx;
    return back;
  }

  // A new suspended context on a pooled stack of `stack_size` usable bytes (0: the default; rounded up as
  // allocate_stack() does). `label` (may be null) is filled with the stack's guard-page range, for the
  // stack-overflow message. It must be resumed before any other context is created or resumed on this thread:
  // its entry finds its record through a thread-local (the first jump in passes no data).
  static continuation create(std::size_t stack_size, body_fn body, void* arg, stack_label* label);

  // The raw context, for the assembly switch (lib/switch_x86_64.S): taken out of, or adopted into, a continuation.
  void* release() && noexcept { return std::exchange(fctx_, nullptr); }
  static continuation adopt(void* raw) noexcept {
    continuation c;
    c.fctx_ = raw;
    return c;
  }

  // Forgets the suspended context without unwinding it: its stack is leaked. For contexts that can never run
  // again (a greenlet that refused to die, or whose thread is gone).
  void leak() && noexcept { fctx_ = nullptr; }

 private:
  void unwind() noexcept;  // destroys the suspended context as ~fiber() does: forced_unwind on its stack

  boost::context::detail::fcontext_t fctx_ = nullptr;  // boost::context::fiber's single member
};

// Inside a catch(...) block: true if the exception is Boost.Context's forced_unwind, which must be rethrown.
bool is_forced_unwind() noexcept;

// Calls fn(arg); under valgrind, on a stack of its own, registered with valgrind and mapped more than 2 MB
// (memcheck's --max-stackframe) away from every other mapping. For code that jumps onto a stack valgrind has not
// been told about (Boost.Fiber creating a thread's dispatcher): from such a stack memcheck sees that jump, and the
// jump back, as stack switches, and not as a push and a pop that mark all memory in between (other threads' live
// stacks included) inaccessible. Rethrows what fn throws.
void call_on_isolated_stack_under_valgrind(void (*fn)(void*), void* arg);

}  // namespace tendril::detail
