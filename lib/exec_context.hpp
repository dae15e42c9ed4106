// lib/exec_context.hpp — what tendril keeps per running task (or per thread's main context), and park().
//
// park() is the single suspension primitive: every blocking call parks the current execution context with an
// optional deadline, and it is woken by waiter::notify() (an event), the deadline, or cancellation.
#pragma once

#include <boost/fiber/context.hpp>
#include <boost/fiber/detail/spinlock.hpp>

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "exception_state.hpp"
#include "greenlet_domain.hpp"
#include "stack_pool.hpp"
#include "tendril/detail/wait_queue.hpp"
#include "tendril/scheduler.hpp"

namespace tendril::detail {

struct exec_context {
  task_base* task = nullptr;  // null for a thread's main context
  // Guards `parked` against cancel() from another thread, which notifies the parked waiter while holding it.
  // A spinlock: held for a few instructions, and contended only by a cross-thread cancel().
  boost::fibers::detail::spinlock lock;
  waiter* parked = nullptr;
  // Set by cancel() (under `lock`), consumed by the context at its next suspension point. Atomic so that
  // yield() can look at it without taking the lock.
  std::atomic<bool> cancel_pending{false};
  tendril::timeout* timeouts = nullptr;  // innermost open timeout scope
  duration expired_scope_length{};       // for the timeout_error message
  greenlet_domain* domain = nullptr;     // the task's greenlets, created on first use
  stack_label label;
  // Its Boost.Fiber context, looked up on first use (context::active() is a call and a __tls_get_addr).
  boost::fibers::context* fiber = nullptr;
  // While set, this context must not suspend (it is running user code inside a libcurl callback): park() returns
  // waiter::outcome::forbidden and yield() throws; throw_for() turns that into a usage_error with this text.
  const char* suspend_forbidden = nullptr;
};

// Marks the current context as one that must not suspend while it lives (see exec_context::suspend_forbidden).
class no_suspend_scope {
 public:
  no_suspend_scope(exec_context& ctx, const char* why) noexcept
      : ctx_(ctx), saved_(std::exchange(ctx.suspend_forbidden, why)) {}
  ~no_suspend_scope() { ctx_.suspend_forbidden = saved_; }
  no_suspend_scope(const no_suspend_scope&) = delete;
  no_suspend_scope& operator=(const no_suspend_scope&) = delete;

 private:
  exec_context& ctx_;
  const char* saved_;
};

// Wakes one suspension of a Boost.Fiber context: what boost::fibers::waker holds (the context and its waker
// epoch), with a wake() that finds out whether the context belongs to the calling thread by comparing schedulers
// with a pointer tendril keeps in initial-exec TLS. boost::fibers::waker::wake() asks context::active() instead:
// two __tls_get_addr calls inside Boost, on every wake-up.
struct context_waker {
  boost::fibers::context* ctx = nullptr;
  std::size_t epoch = 0;

  // Invalidates every earlier waker of `c` (as context::create_waker()).
  static context_waker create(boost::fibers::context* c) noexcept { return {c, ++c->waker_epoch_}; }
  // Makes the context ready unless this waker is outdated (another one woke it). As boost::fibers::waker::wake().
  bool wake() const noexcept;
};

// A parked context. Lives on the parked context's stack.
struct waiter {
  enum class outcome { waiting, notified, timed_out, cancelled, scope_timeout, forbidden };

  // Wakes the parked context with `why` unless it was already woken. Returns true if this call woke it.
  bool notify(outcome why) noexcept;

  boost::fibers::detail::spinlock spin;
  context_waker waker;
  // park() has created `waker` (under `spin`). A cross-thread cancel() can notify a published waiter before that;
  // it must then only record the outcome, which park() finds before suspending.
  bool armed = false;
  // Parked by a task (cancel() may notify it from another thread); set by park() before anyone can find w.
  bool cancellable = false;
  // Written under `spin`; atomic so that park() can read it without the lock when a notify() of its own
  // thread woke it (that notify() has returned before the parked context can run again).
  std::atomic<outcome> state{outcome::waiting};
  const void* notified_by = nullptr;  // the notifying thread's tendril state (null: a thread without one)
  // Links in a wait_queue (protected by the queue's mutex).
  wait_queue* queue = nullptr;
  waiter* prev = nullptr;
  waiter* next = nullptr;
  // Set (under `spin`) while a deferred_wakeups still has to wake this waiter; park() does not return before it
  // is clear, so the waiter and its task outlive the wake-up.
  std::atomic<bool> wake_pending{false};
  waiter* next_deferred = nullptr;
};

// The context running now (the thread's main context when no task runs). Installs the scheduler if needed.
exec_context& current_exec();

// Parks the current context until w is notified, `deadline` (or an enclosing timeout scope) passes, or the task
// is cancelled. `outer`, if given, is unlocked once the context is committed to parking and relocked before
// returning. Returns the outcome; never throws.
waiter::outcome park(waiter& w, std::unique_lock<std::mutex>* outer, std::optional<time_point> deadline) noexcept;

// A background task of the library itself (the curl driver): not cancelled by run(), only at thread exit, after
// every user task has been cancelled and joined, by the teardown hook its owner registers.
std::shared_ptr<task_base> spawn_service(std::function<void()> body, std::string name);
// Runs `hook` when the calling thread exits, after its tasks have been cancelled and joined (in reverse order of
// registration).
void at_scheduler_teardown(std::function<void()> hook);

// Throws task_cancelled / timeout_error for those outcomes.
void throw_for(waiter::outcome o, exec_context& ctx);
// Throws usage_error if `self` must not suspend now (see exec_context::suspend_forbidden): for suspension points
// that do not reach park(), or must refuse before they change anything.
void check_may_suspend(exec_context& self);
// What a suspension point checks before it suspends, for one that may go on without suspending (yield(), a wait
// on an fd already known to be ready): throws usage_error (see check_may_suspend), task_cancelled for a pending
// cancel(), or timeout_error for an expired tendril::timeout scope.
void checkpoint(exec_context& self);

}  // namespace tendril::detail
