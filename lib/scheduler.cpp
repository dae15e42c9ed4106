// lib/scheduler.cpp — tasks on Boost.Fiber fibers, park(), wait queues, sleeping, timeouts, run().
// Boost.Fiber's library is built with NDEBUG; its inline code compiled here (ready-queue links, context records)
// gets the same treatment, so tendril's hot paths don't pay for assertions (an out-of-line ready_is_linked() call
// per scheduling decision) that plain Boost.Fiber doesn't, in tendril's default debugoptimized build too.
#define BOOST_DISABLE_ASSERTS
#include "tendril/scheduler.hpp"

#include <boost/context/stack_context.hpp>

// After stack_context.hpp, which it uses without including it.
#include <boost/context/preallocated.hpp>

#include <boost/fiber/context.hpp>
#include <boost/fiber/operations.hpp>
#include <boost/fiber/policy.hpp>
#include <boost/fiber/scheduler.hpp>

#include <cstdint>
#include <cstdio>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "context_switch.hpp"
#include "exec_context.hpp"
#include "reactor.hpp"

namespace tendril {

const char* task_cancelled::what() const noexcept { return "task cancelled"; }

struct timeout_access {
  static time_point deadline(const timeout& t) { return t.deadline_; }
  static duration length(const timeout& t) { return t.length_; }
  static timeout* outer(const timeout& t) { return t.outer_; }
  static bool expired(const timeout& t) { return t.expired_; }
  static void expire(timeout& t) { t.expired_ = true; }
};

namespace detail {
namespace {

// ---- per-thread state ------------------------------------------------------------------------------------------

struct thread_state {
  exec_context main_context;
  task_base* live_tasks = nullptr;  // intrusive list (task_base::live_next_) of the thread's user tasks
  std::vector<std::function<void()>> teardown_hooks;
  bool tearing_down = false;
  ~thread_state();

  void add_live(task_base* t) noexcept;
  void remove_live(task_base* t) noexcept;
};

// initial-exec: read on every switch; a general-dynamic access from a shared library costs a __tls_get_addr call.
thread_local thread_state* tl_state __attribute__((tls_model("initial-exec"))) = nullptr;
thread_local exec_context* tl_current __attribute__((tls_model("initial-exec"))) = nullptr;
// The C++ runtime's per-thread exception record (__cxa_get_globals()): its address is fixed for the thread's
// lifetime, so it is looked up once instead of on every switch.
thread_local exception_state* tl_eh __attribute__((tls_model("initial-exec"))) = nullptr;
// This thread's Boost.Fiber scheduler while tendril is installed here (null otherwise): context_waker::wake()
// compares it with the woken context's scheduler to choose a local or a remote wake-up.
thread_local boost::fibers::scheduler* tl_scheduler __attribute__((tls_model("initial-exec"))) = nullptr;

[[gnu::noinline]] thread_state& install_thread() {
  // Boost.Fiber's per-thread objects must be constructed before ours, so that ours are destroyed first:
  // thread exit must cancel blocked tasks while the scheduler still exists.
  register_thread_stack_with_valgrind();  // first: Boost.Fiber's teardown switches stacks at thread exit
  // Boost.Fiber's first call on a thread creates its dispatcher, jumping onto a stack Boost mallocs and has not
  // registered with valgrind (docs/internals.md, "Sanitizers and valgrind").
  call_on_isolated_stack_under_valgrind([](void*) { tl_scheduler = boost::fibers::context::active()->get_scheduler(); },
                                        nullptr);
  install_scheduler();
  tl_eh = &current_exception_state();
  thread_local thread_state state;
  tl_state = &state;
  return state;
}

inline thread_state& ensure_installed() {
  if (tl_state != nullptr) [[likely]]
    return *tl_state;
  return install_thread();
}

void report_unhandled(const std::string& name, std::exception_ptr e) noexcept;

// Saves what belongs to the running context in thread-local storage, and puts it back after a switch.
class switch_guard {
 public:
  explicit switch_guard(exec_context& ctx) noexcept : ctx_(ctx), eh_(*tl_eh), label_(current_stack_label()) {}
  ~switch_guard() {
    tl_current = &ctx_;
    *tl_eh = eh_;
    set_current_stack_label(label_);
    exchange_domain_slot(ctx_.task != nullptr ? &ctx_.domain : nullptr);
  }
  switch_guard(const switch_guard&) = delete;
  switch_guard& operator=(const switch_guard&) = delete;

 private:
  exec_context& ctx_;
  exception_state eh_;
  const stack_label* label_;
};

// The innermost-deadline open timeout scope of `ctx`, or null.
timeout* nearest_scope(exec_context& ctx) noexcept {
  timeout* best = nullptr;
  for (timeout* t = ctx.timeouts; t != nullptr; t = timeout_access::outer(*t)) {
    if (timeout_access::expired(*t)) continue;
    if (best == nullptr || timeout_access::deadline(*t) < timeout_access::deadline(*best)) best = t;
  }
  return best;
}

void unlink(wait_queue* q, waiter* w) noexcept;

}  // namespace

exec_context& current_exec() {
  thread_state& ts = ensure_installed();
  return tl_current != nullptr ? *tl_current : ts.main_context;
}

namespace {
using spinlock = boost::fibers::detail::spinlock;

// Boost's spinlock_ttas::lock() has a 5 KB stack frame (room for its backoff generator's one-time
// std::random_device), and the call it makes right away touches the far end of that frame: every task that
// parked through it dirtied a second page of its stack (8 KiB resident per sleeping task instead of 4). Take the
// lock with try_lock() and call lock() only when it is contended, which happens only between threads.
[[gnu::noinline]] void lock_contended(spinlock& s) noexcept { s.lock(); }
std::unique_lock<spinlock> lock_spin(spinlock& s) noexcept {
  if (!s.try_lock()) lock_contended(s);
  return std::unique_lock<spinlock>(s, std::adopt_lock);
}
}  // namespace

bool context_waker::wake() const noexcept {
  std::size_t expected = epoch;
  if (!ctx->waker_epoch_.compare_exchange_strong(expected, epoch + 1, std::memory_order_acq_rel)) return false;
  boost::fibers::scheduler* s = ctx->get_scheduler();
  if (s == tl_scheduler) {
    s->schedule(ctx);
  } else {
    s->schedule_from_remote(ctx);  // another thread's context (its scheduler's notify() wakes that thread)
  }
  return true;
}

bool waiter::notify(outcome why) noexcept {
  // A waiter no cancel() can reach (a main context's), notified from its own thread: every other notify() of it
  // is of this thread too (the caller's lock, or the reactor), and park() settles a deadline on this thread, so
  // nothing can run between these lines: no spinlock.
  if (!cancellable && armed && waker.ctx->get_scheduler() == tl_scheduler) {
    if (state.load(std::memory_order_relaxed) != outcome::waiting) return false;
    notified_by = tl_state;
    state.store(why, std::memory_order_release);
    waker.wake();
    return true;
  }
  std::unique_lock<spinlock> lk = lock_spin(spin);
  if (state.load(std::memory_order_relaxed) != outcome::waiting) return false;
  notified_by = tl_state;
  state.store(why, std::memory_order_release);
  if (armed) waker.wake();  // else park() has not suspended yet and sees the outcome first (a cancel())
  return true;
}

void spin_mutex::lock_contended() noexcept {
  for (int spins = 0;; ++spins) {
    if (!flag_.load(std::memory_order_relaxed) && !flag_.exchange(true, std::memory_order_acquire)) return;
    if (spins < 64) {
      __builtin_ia32_pause();
    } else {
      std::this_thread::yield();  // the holder may have been preempted
    }
  }
}

namespace {
// park() for either kind of lock around the caller's state.
// Relock: take `outer` again before returning. Without it, `outer` is left unlocked when `w` was notified (only
// then; the caller knows which).
template <class Lock, bool Relock = true>
waiter::outcome park_impl(exec_context& self, waiter& w, Lock* outer, std::optional<time_point> deadline) noexcept {
  timeout* scope = nearest_scope(self);
  bool scope_wins = false;
  if (scope != nullptr && (!deadline || timeout_access::deadline(*scope) <= *deadline)) {
    deadline = timeout_access::deadline(*scope);
    scope_wins = true;
  }
  if (scope_wins && *deadline <= std::chrono::steady_clock::now()) {
    if (self.cancel_pending.exchange(false)) return waiter::outcome::cancelled;
    timeout_access::expire(*scope);
    self.expired_scope_length = timeout_access::length(*scope);
    return waiter::outcome::scope_timeout;
  }
  // Only a task can be cancelled (a thread's main context never is): only a task publishes its waiter.
  const bool cancellable = self.task != nullptr;
  w.cancellable = cancellable;
  if (self.fiber == nullptr) self.fiber = boost::fibers::context::active();
  boost::fibers::context* fiber = self.fiber;
  // cancel() sets the flag under self.lock, then notifies whatever is parked: either it sees `parked` (and wakes
  // w), or this sees the flag. False: cancelled (nothing published).
  auto publish = [&]() noexcept {
    std::unique_lock<spinlock> lk = lock_spin(self.lock);
    if (self.cancel_pending.load(std::memory_order_relaxed)) {
      self.cancel_pending.store(false, std::memory_order_relaxed);
      return false;
    }
    self.parked = &w;
    return true;
  };
  waiter::outcome result;
  if (!deadline) {
    // Without a deadline only a notify() ends the wait, and every notify() that finds w (through `outer`, or
    // through self.parked for cancel(), or on this thread) finds it armed, so the one that changes its state
    // wakes it, exactly once (nothing else uses this waker's epoch). Hence no spinlock across the suspension:
    // this context suspends unconditionally, and a wake-up issued before it is switched out comes from another
    // thread, through the scheduler's remote queue, which this thread looks at only once it is.
    w.waker = context_waker::create(fiber);
    w.armed = true;
    if (cancellable && !publish()) return waiter::outcome::cancelled;
    if (outer != nullptr) outer->unlock();
    {
      switch_guard guard(self);
      fiber->suspend();
    }
    result = w.state.load(std::memory_order_acquire);
    // A notify() from another thread may still hold w's spinlock: wait for it to let go of w.
    if (result == waiter::outcome::waiting || w.notified_by != tl_state) {
      std::unique_lock<spinlock> lk = lock_spin(w.spin);
      result = w.state.load(std::memory_order_relaxed);
      if (result == waiter::outcome::waiting) {  // not expected: only a notify() resumes this context
        result = waiter::outcome::timed_out;
        w.state.store(result, std::memory_order_relaxed);
      }
    }
  } else {
    if (cancellable && !publish()) return waiter::outcome::cancelled;
    std::unique_lock<spinlock> lk = lock_spin(w.spin);
    w.waker = context_waker::create(fiber);
    w.armed = true;
    if (outer != nullptr) outer->unlock();
    if (w.state.load(std::memory_order_relaxed) != waiter::outcome::waiting) {
      lk.unlock();  // cancel()ed between publishing w and arming it: nothing to wait for
    } else {
      switch_guard guard(self);
      // wait_until() releases `lk` only after this context is switched out, so a notify() (which takes the same
      // spinlock) can never run between our decision to park and the park itself: no lost wake-ups, and the
      // deadline and a notify() settle who woke it under the lock.
      fiber->wait_until(*deadline, lk, boost::fibers::waker(w.waker.ctx, w.waker.epoch));
    }
    result = w.state.load(std::memory_order_acquire);
    // Woken by a notify() of this thread: it has returned (the threads' contexts take turns), nothing else can
    // touch w. Otherwise the deadline may race with a notify(), or a notify() from another thread may still hold
    // w's spinlock: settle it under the lock (Boost unlocked it after the switch).
    if (result == waiter::outcome::waiting || w.notified_by != tl_state) {
      lk = lock_spin(w.spin);
      result = w.state.load(std::memory_order_relaxed);
      if (result == waiter::outcome::waiting) {
        result = waiter::outcome::timed_out;
        w.state.store(result, std::memory_order_relaxed);
      }
    }
  }
  // A deferred wake-up chose w but has not finished waking it (we were woken by the deadline, or its wake() is
  // still returning): wait for it, it is a few instructions away.
  for (int spins = 0; w.wake_pending.load(std::memory_order_acquire); ++spins) {
    if (spins < 256) {
      __builtin_ia32_pause();
    } else {
      std::this_thread::yield();  // the waking thread was preempted
    }
  }
  if (cancellable) {
    // Once this is done no cancel() can still be using w (it notifies it under the same lock).
    std::unique_lock<spinlock> lk = lock_spin(self.lock);
    self.parked = nullptr;
    if (result == waiter::outcome::cancelled) self.cancel_pending.store(false, std::memory_order_relaxed);
  }
  if (outer != nullptr && (Relock || result != waiter::outcome::notified)) outer->lock();
  if (result == waiter::outcome::timed_out && scope_wins) {
    timeout_access::expire(*scope);
    self.expired_scope_length = timeout_access::length(*scope);
    result = waiter::outcome::scope_timeout;
  }
  return result;
}
}  // namespace

waiter::outcome park(waiter& w, std::unique_lock<std::mutex>* outer, std::optional<time_point> deadline) noexcept {
  exec_context& self = current_exec();
  if (self.suspend_forbidden != nullptr) [[unlikely]]
    return waiter::outcome::forbidden;
  return park_impl(self, w, outer, deadline);
}

void check_may_suspend(exec_context& self) {
  if (self.suspend_forbidden != nullptr) [[unlikely]]
    throw_for(waiter::outcome::forbidden, self);
}

void throw_for(waiter::outcome o, exec_context& ctx) {
  if (o == waiter::outcome::cancelled) throw task_cancelled();
  if (o == waiter::outcome::forbidden) throw usage_error(ctx.suspend_forbidden);
  if (o == waiter::outcome::scope_timeout) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(ctx.expired_scope_length).count();
    throw timeout_error("timed out: the enclosing tendril::timeout scope of " + std::to_string(ms) + " ms expired");
  }
}

// ---- wait_queue ------------------------------------------------------------------------------------------------

namespace {
void unlink(wait_queue* q, waiter* w) noexcept;
}

struct wait_queue_access {
  static waiter*& head(wait_queue& q) { return q.head_; }
  static waiter*& tail(wait_queue& q) { return q.tail_; }
  static waiter*& head(deferred_wakeups& d) { return d.head_; }
};

namespace {
void unlink(wait_queue* q, waiter* w) noexcept {
  if (w->queue == nullptr) return;
  (w->prev != nullptr ? w->prev->next : wait_queue_access::head(*q)) = w->next;
  (w->next != nullptr ? w->next->prev : wait_queue_access::tail(*q)) = w->prev;
  w->prev = w->next = nullptr;
  w->queue = nullptr;
}
}  // namespace

namespace {
// Relock: see park_impl(). Without it, a notified wait returns true with `lk` released (it no longer owns it).
template <class Lock, bool Relock = true>
bool wait_impl(wait_queue& q, Lock& lk, std::optional<time_point> deadline) {
  exec_context& self = current_exec();
  check_may_suspend(self);
  waiter w;
  w.queue = &q;
  waiter*& head = wait_queue_access::head(q);
  waiter*& tail = wait_queue_access::tail(q);
  w.prev = tail;
  (tail != nullptr ? tail->next : head) = &w;
  tail = &w;
  waiter::outcome o = park_impl<typename Lock::mutex_type, Relock>(self, w, lk.mutex(), deadline);
  if (Relock || o != waiter::outcome::notified) {
    unlink(&q, &w);
  } else {
    // notify_*() unlinked w (under the lock, before waking this context) and the lock was not taken again.
    lk.release();
  }
  switch (o) {
    case waiter::outcome::notified:
      return true;
    case waiter::outcome::timed_out:
      return false;
    default:
      throw_for(o, self);
      return false;
  }
}
}  // namespace

bool wait_queue::wait(std::unique_lock<std::mutex>& lk, std::optional<time_point> deadline) {
  return wait_impl(*this, lk, deadline);
}

bool wait_queue::wait(std::unique_lock<spin_mutex>& lk, std::optional<time_point> deadline) {
  return wait_impl(*this, lk, deadline);
}

void wait_queue::notify_one() noexcept {
  while (head_ != nullptr) {
    waiter* w = head_;
    unlink(this, w);
    if (w->notify(waiter::outcome::notified)) return;
  }
}

namespace {
// Decides to wake w (as waiter::notify() does) but leaves the wake-up to `later`. True if w was still waiting.
bool notify_later(waiter* w, deferred_wakeups& later) noexcept {
  std::unique_lock<spinlock> lk = lock_spin(w->spin);
  if (w->state.load(std::memory_order_relaxed) != waiter::outcome::waiting) return false;
  w->notified_by = tl_state;
  w->state.store(waiter::outcome::notified, std::memory_order_release);
  w->wake_pending.store(true, std::memory_order_relaxed);  // published by the unlock
  waiter*& head = wait_queue_access::head(later);
  w->next_deferred = head;
  head = w;
  return true;
}
}  // namespace

void deferred_wakeups::run_all() noexcept {
  waiter* w = head_;
  head_ = nullptr;
  while (w != nullptr) {
    waiter* next = w->next_deferred;
    // w is armed (see park_impl()). If w's context belongs to this thread it is suspended; if another thread's,
    // the wake-up goes through that scheduler's remote queue, which it looks at only once the context is switched
    // out. Resumed by its deadline meanwhile: the waker's epoch makes this a no-op.
    tl_wake_pending = &w->wake_pending;
    w->waker.wake();
    if (tl_wake_pending != nullptr) {  // no remote notify() released it
      tl_wake_pending = nullptr;
      w->wake_pending.store(false, std::memory_order_release);  // from here on w may be gone
    }
    w = next;
  }
}

void wait_queue::notify_one(deferred_wakeups& later) noexcept {
  while (head_ != nullptr) {
    waiter* w = head_;
    unlink(this, w);
    if (notify_later(w, later)) return;
  }
}

void wait_queue::notify_all(deferred_wakeups& later) noexcept {
  while (head_ != nullptr) {
    waiter* w = head_;
    unlink(this, w);
    notify_later(w, later);
  }
}

void wait_queue::notify_all() noexcept {
  while (head_ != nullptr) {
    waiter* w = head_;
    unlink(this, w);
    w->notify(waiter::outcome::notified);
  }
}

// ---- tasks -----------------------------------------------------------------------------------------------------

namespace {

// A task's exec_context lives at the top of its stack (below the stack's colour), above Boost's context record:
// launch() constructs it (on the spawning thread, before anyone else can see the task) and the stack allocator
// destroys it when Boost releases the stack, after the fiber has terminated (or without it ever running).
constexpr std::size_t exec_context_reserve = (sizeof(exec_context) + 255) & ~std::size_t{255};

static_assert(exec_context_reserve + max_stack_colour < 4096,
              "a task's exec_context and its stack colour stay in the top page (the one faulted in up front)");

// Boost.Fiber stack allocator over the tendril stack pool. Boost only deallocates through it (launch() allocates
// the stack itself); the stack_context it hands back lies below the task's exec_context.
class task_stack_allocator {
 public:
  void deallocate(boost::context::stack_context& sc) noexcept {
    auto* ctx = std::launder(reinterpret_cast<exec_context*>(sc.sp));
    // The whole stack, as its label (made by launch()) records it: the colour and the reserve lie above sc.sp.
    const stack_block b{const_cast<char*>(ctx->label.guard_high) + ctx->label.size, ctx->label.size};
    ctx->~exec_context();
    free_stack(b);
  }
};

}  // namespace

struct task_runner {
  // The body of every task's fiber. Its exec_context was made by launch().
  // The task is kept alive by its self_ reference until finish() takes that over.
  static void main(exec_context* c) {
    exec_context& ctx = *c;
    task_base* st = ctx.task;
    tl_current = &ctx;
    *tl_eh = exception_state{};
    set_current_stack_label(&ctx.label);
    exchange_domain_slot(&ctx.domain);

    bool cancelled = false;
    std::exception_ptr error;
    // cancel() found the context published since launch(); one that raced with this load is delivered at the
    // first suspension point instead.
    if (ctx.cancel_pending.load(std::memory_order_acquire)) {
      cancelled = true;  // cancelled before it ever ran: it never runs (asyncio)
    } else {
      try {
        st->invoke();
      } catch (const task_cancelled&) {
        cancelled = true;
      } catch (...) {
        if (is_forced_unwind()) throw;
        error = std::current_exception();
      }
    }
    std::shared_ptr<task_base> keep = finish(st, ctx, cancelled, std::move(error));
    // Drop the last reference (if it is the last) while this fiber is still the task's current context: the
    // state's destructor may run user code (the unhandled-exception handler, the result's destructor) that
    // blocks, and a blocking call must find this fiber's own context, not the thread's main one.
    keep.reset();
    if (ctx.domain != nullptr) end_domain(&ctx.domain);  // the task used greenlets
    exchange_domain_slot(nullptr);
    set_current_stack_label(nullptr);
    tl_current = nullptr;
  }

  // Returns the task's self reference, which keeps it alive until the fiber's body ends.
  static std::shared_ptr<task_base> finish(task_base* st, exec_context& ctx, bool cancelled, std::exception_ptr error) {
    std::vector<std::pair<std::uint64_t, std::function<void()>>> callbacks;
    std::shared_ptr<task_base> keep;
    {
      std::lock_guard<spin_mutex> lk(st->mutex_);
      st->running_.store(nullptr, std::memory_order_relaxed);
      st->cancelled_ = cancelled;
      st->error_ = cancelled ? std::make_exception_ptr(task_cancelled()) : std::move(error);
      if (cancelled) st->retrieved_ = true;  // cancellation is not an error to report
      st->done_.store(true, std::memory_order_release);
      st->done_waiters_.notify_all();
      callbacks.swap(st->callbacks_);
      keep = std::move(st->self_);
    }
    // running_ is null now: no cancel() reaches ctx any more.
    ctx.cancel_pending.store(false, std::memory_order_relaxed);
    for (auto& cb : callbacks) run_callback(*st, cb.second);
    if (tl_state != nullptr) tl_state->remove_live(st);
    return keep;
  }

  static void launch(const std::shared_ptr<task_base>& state, std::size_t stack_size) {
    // The task's exec_context, at the top of its stack. Published in running_ now, on the spawning thread and
    // before the handle exists: cancel() always finds it, and a task needs no handshake with cancel() when it
    // starts.
    stack_block b = allocate_stack(stack_size);
    const std::size_t colour = stack_colour(b);  // see stack_pool.hpp
    auto* ctx = new (b.top - colour - exec_context_reserve) exec_context();
    ctx->task = state.get();
    const char* guard_high = b.top - b.size;
    ctx->label.guard_low = guard_high - stack_guard_size;
    ctx->label.guard_high = guard_high;
    ctx->label.size = b.size;
    state->stack_ = task_base::stack_info{ctx->label.guard_low, guard_high, b.size};
    try {
      if (state->name_.empty()) {
        ctx->label.unnamed = "task";
      } else {
        ctx->label.name = "task '" + state->name_ + "'";
      }
    } catch (...) {
      ctx->~exec_context();
      free_stack(b);
      throw;
    }
    // What boost::fibers::fiber's constructor and detach() do, minus their context::active() lookup (two
    // __tls_get_addr calls inside Boost) and a reference count increment and decrement: Boost's context record
    // goes below the exec_context (aligned as make_worker_context_with_properties() does), created with the one
    // reference the scheduler releases once the fiber has terminated, attached to this thread's scheduler and
    // made ready (launch::post).
    using context_t = boost::fibers::worker_context<void (*)(exec_context*), exec_context*>;
    char* const sp = b.top - colour - exec_context_reserve;
    boost::context::stack_context sctx;
    sctx.sp = sp;
    sctx.size = b.size - colour - exec_context_reserve;
    char* const record = sp - sizeof(context_t);
    static_assert(alignof(context_t) <= 256);
    void* storage = record - (reinterpret_cast<std::uintptr_t>(record) & 0xff);  // 256-byte aligned, as Boost does
    const std::size_t size = static_cast<std::size_t>(static_cast<char*>(storage) - (sp - sctx.size));
    // The fiber gets a plain pointer: self_ keeps the state alive while the task runs (one reference count
    // update less on each side than passing a shared_ptr).
    state->self_ = state;
    context_t* fiber = nullptr;
    try {
      fiber = new (storage) context_t{boost::fibers::launch::post,
                                      nullptr,
                                      boost::context::preallocated{storage, size, sctx},
                                      task_stack_allocator{},
                                      &task_runner::main,
                                      ctx};
    } catch (...) {
      state->self_.reset();
      task_stack_allocator{}.deallocate(sctx);
      throw;
    }
    ctx->fiber = fiber;
    state->running_.store(ctx, std::memory_order_relaxed);
    tl_scheduler->attach_worker_context(fiber);
    tl_scheduler->schedule(fiber);
  }

  static std::shared_ptr<task_base> self_of(task_base* t) { return t->self_; }
  static task_base* next_live(task_base* t) { return t->live_next_; }
  static void link_live(task_base*& head, task_base* t) noexcept {
    t->live_prev_ = nullptr;
    t->live_next_ = head;
    if (head != nullptr) head->live_prev_ = t;
    head = t;
    t->live_listed_ = true;
  }
  static void unlink_live(task_base*& head, task_base* t) noexcept {
    if (!t->live_listed_) return;
    (t->live_prev_ != nullptr ? t->live_prev_->live_next_ : head) = t->live_next_;
    if (t->live_next_ != nullptr) t->live_next_->live_prev_ = t->live_prev_;
    t->live_prev_ = t->live_next_ = nullptr;
    t->live_listed_ = false;
  }

  static void run_callback(task_base& st, std::function<void()>& cb) noexcept {
    try {
      cb();
    } catch (...) {
      report_unhandled((st.name_.empty() ? std::string("task") : st.name_) + " (done callback)",
                       std::current_exception());
    }
  }
};

task_base::task_base(std::string&& name) : name_(std::move(name)) {}

task_base::~task_base() {
  if (error_ && !retrieved_) report_unhandled(name_, error_);
}

std::string task_base::describe() const { return name_.empty() ? "unnamed task" : "task '" + name_ + "'"; }

void task_base::check_not_current() const {
  if (tl_current != nullptr && tl_current->task == this) throw usage_error(describe() + " cannot wait for itself");
}

void task_base::join() {
  if (done()) return;
  check_not_current();
  std::unique_lock<spin_mutex> lk(mutex_);
  while (!done()) {
    // finish() notifies done_waiters_ only once done_ is set: a notified wait is the end, and returns without
    // taking the lock again (lk is released).
    if (wait_impl<std::unique_lock<spin_mutex>, false>(done_waiters_, lk, std::nullopt)) return;
  }
}

bool task_base::join_until(time_point deadline) {
  if (done()) return true;
  check_not_current();
  std::unique_lock<spin_mutex> lk(mutex_);
  while (!done()) {
    // As in join(): notified means done, and lk is released.
    if (wait_impl<std::unique_lock<spin_mutex>, false>(done_waiters_, lk, deadline)) return true;
    return done();  // timed out (with lk held)
  }
  return true;
}

bool task_base::cancelled() const noexcept {
  std::lock_guard<spin_mutex> lk(mutex_);
  return cancelled_;
}

bool task_base::failed() const noexcept {
  std::lock_guard<spin_mutex> lk(mutex_);
  return done() && error_ != nullptr && !cancelled_;
}

bool task_base::cancel() noexcept {
  std::lock_guard<spin_mutex> lk(mutex_);
  if (done()) return false;
  cancel_requested_.store(true, std::memory_order_relaxed);
  // running_ is published by launch() before the task can be seen by anyone else, and cleared by finish() under
  // mutex_ before the context goes: under mutex_, a context read here stays alive. Before the task has started,
  // this only sets the context's cancel_pending, which the task reads first thing.
  if (exec_context* running = running_.load(std::memory_order_relaxed); running != nullptr) {
    std::unique_lock<spinlock> ctx_lock = lock_spin(running->lock);
    running->cancel_pending.store(true, std::memory_order_relaxed);
    if (running->parked != nullptr) running->parked->notify(waiter::outcome::cancelled);
  }
  return true;
}

std::exception_ptr task_base::exception() const {
  std::lock_guard<spin_mutex> lk(mutex_);
  if (!done()) throw usage_error(describe() + " has not finished yet; exception() needs a finished task");
  retrieved_ = true;
  return error_;
}

void task_base::rethrow_if_failed() {
  std::exception_ptr e = exception();
  if (e) std::rethrow_exception(e);
}

void task_base::on_done(std::function<void()> callback) { (void)on_done_removable(std::move(callback)); }

std::uint64_t task_base::on_done_removable(std::function<void()> callback) {
  {
    std::lock_guard<spin_mutex> lk(mutex_);
    if (!done()) {
      const std::uint64_t key = ++last_callback_key_;
      callbacks_.emplace_back(key, std::move(callback));
      return key;
    }
  }
  task_runner::run_callback(*this, callback);
  return 0;
}

void task_base::remove_done_callback(std::uint64_t key) noexcept {
  if (key == 0) return;
  std::function<void()> dropped;  // destroyed after the lock is released (it may hold the last reference to
                                  // what it captured)
  std::lock_guard<spin_mutex> lk(mutex_);
  for (auto it = callbacks_.begin(); it != callbacks_.end(); ++it) {
    if (it->first == key) {
      dropped = std::move(it->second);
      callbacks_.erase(it);
      return;
    }
  }
}

void start_task(const std::shared_ptr<task_base>& state, std::size_t stack_size) {
  thread_state& ts = ensure_installed();
  if (ts.tearing_down) throw usage_error("cannot spawn a task while the thread is exiting");
  task_runner::launch(state, stack_size);
  ts.add_live(state.get());
}

std::shared_ptr<task_base> spawn_service(std::function<void()> body, std::string name) {
  ensure_installed();
  auto state = std::make_shared<task_impl<void, std::function<void()>>>(std::move(body), std::move(name));
  task_runner::launch(state, 0);
  return state;
}

void at_scheduler_teardown(std::function<void()> hook) { ensure_installed().teardown_hooks.push_back(std::move(hook)); }

bool in_task() noexcept { return tl_current != nullptr && tl_current->task != nullptr; }

namespace {

// Cancels every live task of this thread (but `except`) and waits until all have finished, including tasks they
// spawn while unwinding.
void cancel_and_join_all(thread_state& ts, task_base* except) {
  for (;;) {
    std::vector<std::shared_ptr<task_base>> tasks;
    for (task_base* t = ts.live_tasks; t != nullptr; t = task_runner::next_live(t)) {
      if (t == except) continue;
      std::shared_ptr<task_base> s = task_runner::self_of(t);
      if (s) tasks.push_back(std::move(s));
    }
    if (tasks.empty()) return;
    for (auto& t : tasks) t->cancel();
    for (auto& t : tasks) {
      try {
        t->join();
      } catch (const task_cancelled&) {
        // the caller itself was cancelled; keep cleaning up
      }
    }
  }
}

void thread_state::add_live(task_base* t) noexcept { task_runner::link_live(live_tasks, t); }
void thread_state::remove_live(task_base* t) noexcept { task_runner::unlink_live(live_tasks, t); }

thread_state::~thread_state() {
  try {
    cancel_and_join_all(*this, nullptr);
    tearing_down = true;
    while (!teardown_hooks.empty()) {
      auto hook = std::move(teardown_hooks.back());
      teardown_hooks.pop_back();
      hook();
    }
  } catch (...) {
  }
  tl_state = nullptr;
  // From here on, wake-ups from this thread take the remote path, which is right for any context (Boost
  // destroys this thread's scheduler next; the pointer must not match a later one at the same address).
  tl_scheduler = nullptr;
}

std::mutex handler_mutex;
unhandled_exception_handler& handler_slot() {
  static unhandled_exception_handler h;
  return h;
}

void report_unhandled(const std::string& name, std::exception_ptr e) noexcept {
  unhandled_exception_handler h;
  {
    std::lock_guard<std::mutex> lk(handler_mutex);
    h = handler_slot();
  }
  if (h) {
    try {
      h(name, e);
      return;
    } catch (...) {
      std::fprintf(stderr, "tendril: the unhandled-exception handler threw\n");
    }
  }
  std::string what = "unknown exception";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    what = ex.what();
  } catch (...) {
  }
  std::fprintf(stderr, "tendril: exception in task '%s' was never retrieved: %s\n",
               name.empty() ? "task" : name.c_str(), what.c_str());
}

}  // namespace

void finish_run(const std::shared_ptr<task_base>& main_task) {
  thread_state& ts = ensure_installed();
  // The caller's own wait may be interrupted (a tendril::timeout scope of the calling context expires): main and
  // what it spawned must not be left running behind run() all the same. The expired scope no longer fires.
  std::exception_ptr interrupted;
  try {
    main_task->join();
  } catch (...) {
    interrupted = std::current_exception();
  }
  cancel_and_join_all(ts, nullptr);
  if (interrupted) std::rethrow_exception(interrupted);
}

}  // namespace detail

unhandled_exception_handler set_unhandled_exception_handler(unhandled_exception_handler h) {
  std::lock_guard<std::mutex> lk(detail::handler_mutex);
  return std::exchange(detail::handler_slot(), std::move(h));
}

// ---- sleeping, yielding, timeouts ------------------------------------------------------------------------------

void sleep_until(time_point t) {
  detail::waiter w;
  detail::waiter::outcome o = detail::park(w, nullptr, t);
  detail::throw_for(o, detail::current_exec());
}

void sleep_for(duration d) { sleep_until(detail::deadline_in(d)); }

namespace detail {
void checkpoint(exec_context& self) {
  check_may_suspend(self);
  if (self.cancel_pending.load(std::memory_order_relaxed) && self.cancel_pending.exchange(false)) {
    throw task_cancelled();
  }
  // An expired tendril::timeout scope fires here too (a loop that only yields would otherwise never time out).
  if (timeout* scope = nearest_scope(self);
      scope != nullptr && timeout_access::deadline(*scope) <= std::chrono::steady_clock::now()) {
    timeout_access::expire(*scope);
    self.expired_scope_length = timeout_access::length(*scope);
    throw_for(waiter::outcome::scope_timeout, self);
  }
}
}  // namespace detail

void yield() {
  detail::exec_context& self = detail::current_exec();
  detail::checkpoint(self);
  if (self.fiber == nullptr) self.fiber = boost::fibers::context::active();
  detail::switch_guard guard(self);
  self.fiber->yield();
}

timeout::timeout(duration d) : deadline_(detail::deadline_in(d)), length_(d), owner_(&detail::current_exec()) {
  outer_ = owner_->timeouts;
  owner_->timeouts = this;
}

timeout::~timeout() {
  // Usually the innermost scope, but not always: the greenlets of a task share its scopes, and one (a generator's
  // body) may be suspended with a scope open while another closes its own, so scopes can close out of order.
  // Unlink this one wherever it is in the chain, so that no scope points at one that is gone.
  for (timeout** link = &owner_->timeouts; *link != nullptr; link = &(*link)->outer_) {
    if (*link == this) {
      *link = outer_;
      return;
    }
  }
}

}  // namespace tendril

namespace tendril::detail {
reactor& reactor::current() {
  ensure_installed();
  return install_scheduler();
}
}  // namespace tendril::detail
