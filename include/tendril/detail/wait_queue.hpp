// tendril/detail/wait_queue.hpp — the one suspension primitive behind every blocking call (internal).
//
// Not part of the public API; public headers' templates (futures, channels, tasks...) are built on it.
//
// A wait_queue is a list of parked tasks, protected by a lock that belongs to the object using it (a channel, a
// future...: a detail::spin_mutex in tendril's own objects; std::mutex works too). wait() parks the calling task —
// or the thread's main context when no task runs — with an optional deadline; it is woken by
// notify_one()/notify_all(), by the deadline, or by cancel() of the task. Nothing else wakes it, which is what
// makes cancellation and timeouts uniform across tendril.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>

#include "tendril/export.hpp"

namespace tendril {

// All tendril timeouts use the steady clock. std::chrono::seconds, milliseconds... convert implicitly.
using duration = std::chrono::steady_clock::duration;
using time_point = std::chrono::steady_clock::time_point;

namespace detail {

struct waiter;
struct wait_queue_access;

// A lock for state that is held for a few instructions at a time (internal): one atomic exchange to lock, a
// store to unlock, where std::mutex costs two atomic operations and two calls into libc. Contended only between
// OS threads; then it spins briefly and yields the CPU. Never held across a suspension.
class TENDRIL_API spin_mutex {
 public:
  void lock() noexcept {
    if (flag_.exchange(true, std::memory_order_acquire)) lock_contended();
  }
  bool try_lock() noexcept {
    return !flag_.load(std::memory_order_relaxed) && !flag_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { flag_.store(false, std::memory_order_release); }

 private:
  void lock_contended() noexcept;
  std::atomic<bool> flag_{false};
};

// Wake-ups decided under a queue's lock and carried out when this object is destroyed, which should be after that
// lock is released: the woken task then finds the lock free. Matters when the waker is another OS thread: waking
// a sleeping thread is a system call, and a lock held across it is a lock the woken task spins or sleeps on.
// Declare it before the lock guard. A waiter stays parked (its stack alive) until its wake-up has been done.
class TENDRIL_API deferred_wakeups {
 public:
  deferred_wakeups() = default;
  deferred_wakeups(const deferred_wakeups&) = delete;
  deferred_wakeups& operator=(const deferred_wakeups&) = delete;
  ~deferred_wakeups() { run(); }
  // Carries out the wake-ups collected so far.
  void run() noexcept {
    if (head_ != nullptr) run_all();
  }

 private:
  friend struct wait_queue_access;
  void run_all() noexcept;
  waiter* head_ = nullptr;
};

class TENDRIL_API wait_queue {
 public:
  wait_queue() = default;
  wait_queue(const wait_queue&) = delete;
  wait_queue& operator=(const wait_queue&) = delete;

  // Preconditions: `lk` owns the mutex that protects this queue.
  // Effects: releases lk, parks until notified, `deadline` passes, or the task is cancelled; relocks lk.
  // Returns: true if notified, false if the deadline passed.
  // Throws: task_cancelled if the calling task is cancelled; timeout_error if an enclosing tendril::timeout
  // scope expires. lk is locked again in every case.
  bool wait(std::unique_lock<std::mutex>& lk, std::optional<time_point> deadline = std::nullopt);
  // The same, for a queue protected by a spin_mutex.
  bool wait(std::unique_lock<spin_mutex>& lk, std::optional<time_point> deadline = std::nullopt);

  // Wake one / all parked waiters. Precondition: the protecting mutex is held.
  void notify_one() noexcept;
  void notify_all() noexcept;
  // The same, with the wake-ups themselves carried out by `later` (see deferred_wakeups).
  void notify_one(deferred_wakeups& later) noexcept;
  void notify_all(deferred_wakeups& later) noexcept;
  bool empty() const noexcept { return head_ == nullptr; }

 private:
  friend struct wait_queue_access;
  waiter* head_ = nullptr;
  waiter* tail_ = nullptr;
};

// `d` from now. Saturates at time_point::max() (no deadline) instead of overflowing into the past, so a
// timeout of duration::max() means "wait forever", not "time out at once".
inline time_point deadline_in(duration d) {
  const time_point now = std::chrono::steady_clock::now();
  return d >= time_point::max() - now ? time_point::max() : now + d;
}

// Converts an optional relative timeout to a deadline.
inline std::optional<time_point> deadline_after(std::optional<duration> d) {
  if (!d) return std::nullopt;
  return deadline_in(*d);
}

}  // namespace detail
}  // namespace tendril
