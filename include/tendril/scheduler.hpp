// tendril/scheduler.hpp — tasks: green threads on Boost.Fiber, asyncio's and gevent's toolkit.
//
// A task is a green thread with its own stack and its own main greenlet. Blocking tendril calls inside a task
// (sleep_for, task::get, future::get, channel::pop, wait_readable, http::get...) suspend only that task; other
// tasks of the same thread run meanwhile. Nothing needs a special entry point: the first tendril call on a thread
// installs tendril's scheduler there, and blocking calls made directly in main() drive the scheduler too
// (gevent style). tendril::run(main) is asyncio.run(): it also cleans up the tasks main leaves behind.
//
//   int main() {
//     return tendril::run([] {
//       auto a = tendril::spawn([] { tendril::sleep_for(1s); return 1; }, {.name = "one"});
//       auto b = tendril::spawn([] { tendril::sleep_for(1s); return 2; });
//       return a.get() + b.get() == 3 ? 0 : 1;     // both finish after about 1 s, not 2
//     });
//   }
//
// Cancellation: task::cancel() throws task_cancelled inside the task at its current or next suspension point,
// which unwinds it (catching it and carrying on is allowed, as in asyncio). Timeouts: tendril::timeout (RAII
// scope, like gevent.Timeout) and wait_for() in wait.hpp.
//
// Tasks run on the thread that spawned them; handles may be used from any thread (get() from another OS thread
// blocks that thread's main context, which runs that thread's own tasks meanwhile).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tendril/detail/wait_queue.hpp"
#include "tendril/export.hpp"

namespace tendril {

// Thrown inside a task that is cancelled, at its current or next suspension point (asyncio.CancelledError).
// Derives from std::exception only, so `catch (const std::runtime_error&)` does not swallow it.
class TENDRIL_API task_cancelled : public std::exception {
 public:
  const char* what() const noexcept override;
};

// A timeout expired: wait_for(), a tendril::timeout scope, future::get with a deadline...
class TENDRIL_API timeout_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Misuse of the API: a task waiting on itself, a promise satisfied twice, run() inside a task...
// A std::runtime_error, like every tendril error (before 0.6 it was a std::logic_error).
class TENDRIL_API usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct spawn_options {
  // Shown in error reports and the stack-overflow message; empty means "task".
  std::string name;
  // Stack size in bytes; 0 means tendril::default_stack_size() (256 KiB, committed lazily). The task's own records
  // and its stack colour (an offset that keeps stacks from sharing cache sets: at most a sixteenth of the size,
  // and 1,792 bytes) take about 2 KiB of it at the top.
  std::size_t stack_size = 0;
};

// Called with a task's name and exception when a task fails and nobody ever retrieved its exception (through
// get(), exception(), gather...), at the moment the last handle to it goes away. Default: print to stderr.
using unhandled_exception_handler = std::function<void(const std::string& task_name, std::exception_ptr)>;
// Replaces the process-wide handler; returns the previous one. An empty handler restores the default.
TENDRIL_API unhandled_exception_handler set_unhandled_exception_handler(unhandled_exception_handler h);

namespace detail {
struct exec_context;

// The shared state of a task (internal). task<T> is a handle to a task_state<T>.
class TENDRIL_API task_base {
 public:
  explicit task_base(std::string&& name);
  task_base(const task_base&) = delete;
  task_base& operator=(const task_base&) = delete;
  virtual ~task_base();

  void join();                           // wait until done; never throws the task's exception
  bool join_until(time_point deadline);  // false on timeout
  bool done() const noexcept { return done_.load(std::memory_order_acquire); }
  bool cancelled() const noexcept;
  bool failed() const noexcept;  // done with an exception other than task_cancelled (does not retrieve it)
  bool cancel() noexcept;
  const std::string& name() const noexcept { return name_; }
  // "task 'name'", or "unnamed task": how messages name it.
  std::string describe() const;
  // Throws usage_error if the caller is this task (which would wait for itself forever).
  void check_not_current() const;
  std::exception_ptr exception() const;  // after done; marks the exception retrieved
  void rethrow_if_failed();              // after done
  void on_done(std::function<void()> callback);
  // Like on_done(), for a waiter that may stop caring before the task finishes (wait(), gather()): returns a key
  // for remove_done_callback(), or 0 if the task had already finished (the callback has then run).
  std::uint64_t on_done_removable(std::function<void()> callback);
  // Drops a callback added by on_done_removable() that has not run; a key of 0 or one already run is ignored.
  void remove_done_callback(std::uint64_t key) noexcept;

  // Where the task's stack is, for the stack-overflow message.
  struct stack_info {
    const char* guard_low = nullptr;
    const char* guard_high = nullptr;
    std::size_t size = 0;
  };

 protected:
  virtual void invoke() = 0;  // runs the task's function, storing its result

 private:
  friend struct task_runner;
  std::string name_;
  mutable spin_mutex mutex_;
  wait_queue done_waiters_;
  std::vector<std::pair<std::uint64_t, std::function<void()>>> callbacks_;  // each with its key
  std::uint64_t last_callback_key_ = 0;
  std::exception_ptr error_;
  // The task's context (at the top of its stack) from spawn until it finishes. Set by the spawning thread before
  // the handle exists; cancel() reads it under the lock; cleared under the lock when the task finishes, so
  // cancel() never uses a context that has gone.
  std::atomic<exec_context*> running_{nullptr};
  std::atomic<bool> done_{false};
  std::atomic<bool> cancel_requested_{false};  // cancel() was called (for the record; the context carries it)
  bool cancelled_ = false;
  mutable bool retrieved_ = false;   // exception() (const) records that the error was seen
  std::shared_ptr<task_base> self_;  // keeps the state alive while the task runs
  stack_info stack_;                 // for the stack-overflow message
  // Links in its thread's list of live tasks (an intrusive list: spawning allocates no list node).
  task_base* live_prev_ = nullptr;
  task_base* live_next_ = nullptr;
  bool live_listed_ = false;
};

template <class T>
class task_state : public task_base {
 public:
  using task_base::task_base;
  T& result() { return *result_; }
  // For a move-only result: moves it out, once; a second call throws usage_error (never a moved-from value).
  T take_result() {
    if (taken_.exchange(true, std::memory_order_acq_rel)) {
      throw usage_error(describe() +
                        ": its move-only result was already taken by an earlier get(); keep what that get() "
                        "returned, or return a copyable type (e.g. std::shared_ptr) to read it more than once");
    }
    return std::move(*result_);
  }

 protected:
  std::optional<T> result_;
  std::atomic<bool> taken_{false};
};

template <>
class task_state<void> : public task_base {
 public:
  using task_base::task_base;
};

// The task's function lives here until it returns, then is destroyed at once (releasing what it captured).
template <class T, class F>
class task_impl final : public task_state<T> {
 public:
  template <class G>
  task_impl(G&& fn, std::string&& name) : task_state<T>(std::move(name)), fn_(std::forward<G>(fn)) {}

 private:
  void invoke() override {
    struct reset_on_exit {
      std::optional<F>& f;
      ~reset_on_exit() { f.reset(); }
    } guard{fn_};
    if constexpr (std::is_void_v<T>) {
      (*fn_)();
    } else {
      this->result_.emplace((*fn_)());
    }
  }
  std::optional<F> fn_;
};

TENDRIL_API void start_task(const std::shared_ptr<task_base>& state, std::size_t stack_size);
// run(): waits for `main_task`, then cancels and joins every other task of this thread.
TENDRIL_API void finish_run(const std::shared_ptr<task_base>& main_task);
TENDRIL_API bool in_task() noexcept;
}  // namespace detail

// A handle to a task; copyable. T is what the task's function returns (void allowed).
template <class T>
class task {
 public:
  task() = default;
  explicit task(std::shared_ptr<detail::task_state<T>> s) : state_(std::move(s)) {}

  // Waits for the task, then returns its result or rethrows its exception (asyncio's `await task`).
  // Throws usage_error when called from inside the task itself, or a second time for a move-only result;
  // task_cancelled if the *caller* is cancelled.
  T get() {
    state().join();
    state().rethrow_if_failed();
    if constexpr (std::is_void_v<T>) {
      return;
    } else if constexpr (std::is_copy_constructible_v<T>) {
      return state_->result();
    } else {
      return state_->take_result();  // a move-only result can be taken once
    }
  }
  // Waits for the task; never throws the task's exception.
  void join() { state().join(); }
  // Waits at most `d`; true if the task is done.
  bool wait_for(duration d) { return state().join_until(detail::deadline_in(d)); }
  bool done() const noexcept { return state_ && state_->done(); }
  // True once the task has finished by task_cancelled.
  bool cancelled() const noexcept { return state_ && state_->cancelled(); }
  // Requests cancellation: task_cancelled is thrown inside the task at its current or next suspension point
  // (a task cancelled before it first runs never runs). Returns false if the task has already finished; true
  // otherwise (also when cancellation was already requested: cancelling twice is harmless).
  bool cancel() noexcept { return state_ && state_->cancel(); }
  const std::string& name() const { return state().name(); }
  // The exception the task finished with (task_cancelled if it was cancelled), or null if it returned; marks
  // the exception retrieved (no "never retrieved" report). Throws usage_error if the task has not finished.
  std::exception_ptr exception() const { return state().exception(); }
  // Runs `cb(task)` once the task finishes, in the finishing task (at once if it has already finished).
  // An exception from the callback goes to the unhandled-exception handler.
  void add_done_callback(std::function<void(task&)> cb) {
    task self = *this;
    state().on_done([self, cb = std::move(cb)]() mutable { cb(self); });
  }
  bool valid() const noexcept { return state_ != nullptr; }
  friend bool operator==(const task& a, const task& b) noexcept { return a.state_ == b.state_; }

  // For internal use.
  const std::shared_ptr<detail::task_state<T>>& state_ptr() const noexcept { return state_; }

 private:
  detail::task_state<T>& state() const {
    if (!state_) throw usage_error("use of an empty tendril::task handle");
    return *state_;
  }
  std::shared_ptr<detail::task_state<T>> state_;
};

// Starts `fn()` as a new task on this thread (asyncio.create_task, gevent.spawn). The caller keeps running; the
// task starts at the caller's next suspension point. Dropping the handle does not cancel the task.
template <class F>
auto spawn(F&& fn, spawn_options options = {}) -> task<std::invoke_result_t<std::decay_t<F>&>> {
  using R = std::invoke_result_t<std::decay_t<F>&>;
  auto state = std::make_shared<detail::task_impl<R, std::decay_t<F>>>(std::forward<F>(fn), std::move(options.name));
  detail::start_task(state, options.stack_size);
  return task<R>(std::shared_ptr<detail::task_state<R>>(std::move(state)));
}

// asyncio.run(): runs `main` as a task named "main", waits for it, then cancels and joins every other task of
// this thread, and returns main's result or rethrows its exception.
// Throws usage_error if called from inside a task.
template <class F>
auto run(F&& main) -> std::invoke_result_t<std::decay_t<F>&> {
  if (detail::in_task()) throw usage_error("tendril::run() cannot be called from inside a task; use spawn()");
  auto t = spawn(std::forward<F>(main), spawn_options{"main", 0});
  detail::finish_run(t.state_ptr());
  return t.get();
}

// Suspend the calling task (or main context) for a while. Cancellation points.
TENDRIL_API void sleep_for(duration d);
TENDRIL_API void sleep_until(time_point t);
// Lets every other ready task run once before the caller continues (asyncio.sleep(0), gevent.sleep(0)).
TENDRIL_API void yield();

// gevent.Timeout as an RAII scope: if the scope is still open `d` from now, timeout_error is thrown in this task
// at its current or next suspension point (once). Scopes nest; the earliest deadline wins.
class TENDRIL_API timeout {
 public:
  explicit timeout(duration d);
  ~timeout();
  timeout(const timeout&) = delete;
  timeout& operator=(const timeout&) = delete;
  // True once this scope has thrown its timeout_error.
  bool expired() const noexcept { return expired_; }

 private:
  friend struct timeout_access;
  time_point deadline_;
  duration length_;
  timeout* outer_ = nullptr;
  detail::exec_context* owner_ = nullptr;
  bool expired_ = false;
};

}  // namespace tendril
