// tendril/greenlet.hpp — explicit coroutines with the semantics of Python's greenlet.
//
// A greenlet is a function running on its own stack that you enter and leave explicitly with switch_():
//
//   tendril::greenlet gr1, gr2;
//   gr1 = tendril::greenlet([&] { std::puts("1"); gr2.switch_(); std::puts("2"); gr2.switch_(); });
//   gr2 = tendril::greenlet([&] { std::puts("3"); gr1.switch_(); std::puts("4"); });
//   gr1.switch_();                                   // prints 1 3 2 4
//
// The rules are Python greenlet's (see docs/porting-greenlet.md for a line-by-line table):
//  - A greenlet's parent defaults to the greenlet current at construction. Each thread, and each scheduler task,
//    has its own implicit *main greenlet*; a greenlet belongs to the thread or task of the main greenlet in its
//    parent chain, and switching or throwing into one that belongs elsewhere throws greenlet_error.
//  - switch_(args...) to an unstarted greenlet calls run(args...); to a suspended one, its pending switch_()
//    returns args. Switching to the current greenlet returns args at once.
//  - When run returns r, the first live ancestor receives r (dead parents are skipped; an unstarted parent is
//    started with r). When run throws, the exception is rethrown where that ancestor is suspended.
//    greenlet_exit escaping run is not an error: the parent receives it as a value.
//  - Switching to a dead greenlet goes to its first live ancestor with the same values.
//  - throw_() raises at a suspended greenlet's pending switch; an unstarted greenlet dies without running and
//    the exception follows the rules above; on a dead greenlet, throw_() of greenlet_exit returns it as a value
//    and any other exception is raised in the first live ancestor.
//  - When the last handle to a started, unfinished greenlet goes away, greenlet_exit is thrown into it (its
//    parent temporarily set to the greenlet dropping it) so its destructors run. One that refuses to die is
//    reported on stderr and leaked, never resumed silently; one that took a new handle to itself meanwhile is
//    resurrected, as in Python, and lives on. Dropped on another thread: killed at the owning thread's next
//    greenlet call (greenlet::current(), a switch, a new greenlet) or when its thread or task ends. Dropped after
//    its thread or task has ended, it can no longer be unwound: it is reported on stderr and leaked. Handles are
//    plain reference counts, with no cycle collector: a greenlet whose own stack holds a handle to a child of its
//    own (whose parent reference points back) is not freed by dropping the last outside handle; drop or finish
//    such children first.
//  - A greenlet may switch away inside a catch block: `throw;` and std::current_exception() still see the right
//    exception when it resumes.
//  - An exception escaping a greenlet never calls std::terminate.
//
// Handles are cheap to copy (reference counted) and may be passed between threads, but a greenlet runs only on
// the thread (or task) that owns it.
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>

#include "tendril/export.hpp"
#include "tendril/stack.hpp"
#include "tendril/value.hpp"

namespace tendril {

// Misuse of a greenlet: switching to one of another thread or task, a parent cycle, no run function...
class TENDRIL_API greenlet_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown into a greenlet to kill it (Python's GreenletExit). Escaping run, it is delivered to the parent as a
// value, not as an error.
class TENDRIL_API greenlet_exit : public std::exception {
 public:
  const char* what() const noexcept override;
};

namespace detail {
class greenlet_impl;

template <class F>
struct callable_traits : callable_traits<decltype(&std::decay_t<F>::operator())> {};
template <class R, class... A>
struct callable_traits<R (*)(A...)> {
  using args = std::tuple<std::decay_t<A>...>;
};
template <class R, class... A>
struct callable_traits<R(A...)> : callable_traits<R (*)(A...)> {};
template <class C, class R, class... A>
struct callable_traits<R (C::*)(A...)> : callable_traits<R (*)(A...)> {};
template <class C, class R, class... A>
struct callable_traits<R (C::*)(A...) const> : callable_traits<R (*)(A...)> {};
template <class C, class R, class... A>
struct callable_traits<R (C::*)(A...) noexcept> : callable_traits<R (*)(A...)> {};
template <class C, class R, class... A>
struct callable_traits<R (C::*)(A...) const noexcept> : callable_traits<R (*)(A...)> {};

template <class R>
value to_value(R&& r) {
  return value::of(std::forward<R>(r));
}

// Calls f with the typed arguments unpacked from v, and wraps its result in a value.
template <class F, class... A>
value invoke_unpacked(F& f, const value& v, std::tuple<A...>*) {
  if constexpr (sizeof...(A) == 0) {
    if (v.size() != 0) {
      throw_value_missing("run function takes no arguments but was switched to with " + std::to_string(v.size()));
    }
  }
  auto args = v.as_tuple<A...>();
  using R = decltype(std::apply(f, std::move(args)));
  if constexpr (std::is_void_v<R>) {
    std::apply(f, std::move(args));
    return value();
  } else {
    return to_value(std::apply(f, std::move(args)));
  }
}

template <class F>
std::function<value(value)> wrap_run(F&& f) {
  using D = std::decay_t<F>;
  if constexpr (std::is_invocable_v<D&, value>) {
    return [fn = D(std::forward<F>(f))](value v) mutable -> value {
      using R = std::invoke_result_t<D&, value>;
      if constexpr (std::is_void_v<R>) {
        fn(std::move(v));
        return value();
      } else {
        return to_value(fn(std::move(v)));
      }
    };
  } else {
    return [fn = D(std::forward<F>(f))](value v) mutable -> value {
      return invoke_unpacked(fn, v, static_cast<typename callable_traits<D>::args*>(nullptr));
    };
  }
}
}  // namespace detail

enum class trace_event { switch_, throw_ };

class greenlet;
// A tracer runs in the target greenlet right after each switch or throw, before switch_() returns there or
// its run function starts. If it throws, it is removed and its exception replaces the value being delivered.
using tracer = std::function<void(trace_event, const greenlet& origin, const greenlet& target)>;

class TENDRIL_API greenlet {
 public:
  using run_function = std::function<value(value)>;

  // An unstarted greenlet with no run function; switching to it throws greenlet_error in the caller and leaves
  // it unstarted (Python's AttributeError: run). Its parent is the current greenlet.
  greenlet();

  // A greenlet that will call run(...) when first switched to. `run` may take a `value`, or typed parameters
  // unpacked from the first switch's positional values; it may return void, a T, or a value.
  // Throws greenlet_error if `parent` belongs to another thread or task.
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, greenlet>>>
  explicit greenlet(F&& run, std::optional<greenlet> parent = {}, stack_options stack = {})
      : greenlet(detail::wrap_run(std::forward<F>(run)), parent ? parent->impl_ : nullptr, std::move(stack)) {}

  greenlet(const greenlet& other) noexcept;
  greenlet(greenlet&& other) noexcept;
  greenlet& operator=(const greenlet& other) noexcept;
  greenlet& operator=(greenlet&& other) noexcept;
  // Dropping the last handle to a started, unfinished greenlet kills it (see the top of this file).
  ~greenlet();

  // The greenlet running now on this thread (or task): Python's getcurrent().
  static greenlet current();

  // Switches to this greenlet with positional and keyword (tendril::kw) arguments. Returns what is passed to the
  // next switch back into the calling greenlet, or rethrows an exception thrown into it.
  // Throws greenlet_error if this greenlet belongs to another thread or task, or has no run function.
  template <class... A>
  value switch_(A&&... args) {
    return switch_value(value::of(std::forward<A>(args)...));
  }
  value switch_value(value v);

  // Kills this greenlet: throws greenlet_exit into it (see the rules at the top of this file).
  value throw_();
  // Raises `e` in this greenlet at its pending switch (Python's throw(typ, val)).
  value throw_(std::exception_ptr e);

  // The parent; empty only for a main greenlet.
  std::optional<greenlet> parent() const;
  // Throws greenlet_error on a cycle, for a main greenlet, or for a parent of another thread or task.
  void set_parent(const greenlet& p);

  bool started() const noexcept;
  bool dead() const noexcept;
  bool active() const noexcept;  // started() && !dead()
  explicit operator bool() const noexcept { return active(); }
  bool is_main() const noexcept;

  friend bool operator==(const greenlet& a, const greenlet& b) noexcept { return a.impl_ == b.impl_; }

  // For internal use: handle of an implementation object (adds a reference).
  explicit greenlet(detail::greenlet_impl* impl) noexcept;

 private:
  greenlet(run_function&& run, detail::greenlet_impl* parent, stack_options&& stack);
  detail::greenlet_impl* impl_;
};

// Python's getcurrent(), for ports.
TENDRIL_API greenlet getcurrent();

// Installs a tracer for the calling thread; returns the previous one. An empty tracer removes it.
TENDRIL_API tracer settrace(tracer t);
TENDRIL_API tracer gettrace();

}  // namespace tendril
