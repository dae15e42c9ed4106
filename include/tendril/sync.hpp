// tendril/sync.hpp — synchronisation between tasks: futures, events, semaphores, channels, mutexes.
//
// Every blocking member suspends only the calling task (or the thread's main context), is a cancellation point
// (task_cancelled), and honours enclosing tendril::timeout scopes. All of them are safe to use from several OS
// threads at once: a promise fulfilled or a channel pushed from another thread wakes the waiting task there.
//
//   tendril::promise<std::string> p;
//   auto f = p.get_future();
//   tendril::spawn([p]() mutable { tendril::sleep_for(1s); p.set_value("done"); });
//   std::string s = f.get();                       // suspends this task for about 1 s
//
//   tendril::channel<int> ch(8);                   // bounded; channel<int>(0) is a rendezvous
//   tendril::spawn([&] { for (int i = 0; i < 3; ++i) ch.push(i); ch.close(); });
//   for (int v : ch) use(v);                        // 0 1 2, ends when closed and drained
#pragma once

#include <cstddef>
#include <deque>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "tendril/detail/wait_queue.hpp"
#include "tendril/scheduler.hpp"

namespace tendril {

// A promise was destroyed without a value or exception; thrown by the future's get().
class TENDRIL_API broken_promise : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// push() on a closed channel.
class TENDRIL_API channel_closed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class T>
struct future_state {
  detail::spin_mutex mutex;
  wait_queue waiters;
  bool ready = false;
  std::conditional_t<std::is_void_v<T>, bool, std::optional<T>> value{};
  std::exception_ptr error;

  void wait() {
    std::unique_lock<detail::spin_mutex> lk(mutex);
    while (!ready) waiters.wait(lk);
  }
  bool wait_until(time_point deadline) {
    std::unique_lock<detail::spin_mutex> lk(mutex);
    while (!ready) {
      if (!waiters.wait(lk, deadline)) return ready;
    }
    return true;
  }
  template <class F>
  void fulfil(F&& store) {
    deferred_wakeups later;  // wakes the waiters after `lk` is released
    std::lock_guard<detail::spin_mutex> lk(mutex);
    if (ready) throw usage_error("promise already satisfied: set_value/set_exception may be called only once");
    store();
    ready = true;
    waiters.notify_all(later);
  }
};
}  // namespace detail

// The reading side of a promise (asyncio.Future / concurrent.futures.Future). Copyable: copies share the state,
// and get() may be called any number of times (it returns a copy of the value).
template <class T>
class future {
 public:
  future() = default;
  explicit future(std::shared_ptr<detail::future_state<T>> s) : state_(std::move(s)) {}

  // Waits for the value; rethrows a stored exception (broken_promise if the promise was dropped).
  T get() const {
    check();
    state_->wait();
    if (state_->error) std::rethrow_exception(state_->error);
    if constexpr (!std::is_void_v<T>) return *state_->value;
  }
  // Waits at most `d`; true if ready.
  bool wait_for(duration d) const {
    check();
    return state_->wait_until(detail::deadline_in(d));
  }
  void wait() const {
    check();
    state_->wait();
  }
  bool ready() const {
    check();
    std::lock_guard<detail::spin_mutex> lk(state_->mutex);
    return state_->ready;
  }
  bool valid() const noexcept { return state_ != nullptr; }

 private:
  void check() const {
    if (!state_) throw usage_error("use of an empty tendril::future");
  }
  std::shared_ptr<detail::future_state<T>> state_;
};

// The writing side. Copyable (copies share the state); when the last copy goes away unfulfilled, the future
// receives broken_promise. set_value/set_exception may be called from any OS thread.
template <class T>
class promise {
 public:
  promise() : state_(std::make_shared<detail::future_state<T>>()), owner_(std::make_shared<guard>(state_)) {}

  future<T> get_future() const { return future<T>(checked()); }

  // Throws usage_error if already satisfied, or on a moved-from promise.
  template <class U = T, class = std::enable_if_t<!std::is_void_v<U>>>
  void set_value(U v) {
    auto& st = checked();
    st->fulfil([&] { st->value.emplace(std::move(v)); });
  }
  template <class U = T, class = std::enable_if_t<std::is_void_v<U>>>
  void set_value() {
    auto& st = checked();
    st->fulfil([&] { st->value = true; });
  }
  // Throws usage_error for a null exception_ptr (the future would have neither a value nor an error).
  void set_exception(std::exception_ptr e) {
    if (!e)
      throw usage_error("promise::set_exception(nullptr): give the exception to deliver (std::current_exception())");
    auto& st = checked();
    st->fulfil([&] { st->error = std::move(e); });
  }
  bool valid() const noexcept { return state_ != nullptr; }

 private:
  const std::shared_ptr<detail::future_state<T>>& checked() const {
    if (!state_) throw usage_error("use of a moved-from tendril::promise");
    return state_;
  }
  struct guard {
    std::shared_ptr<detail::future_state<T>> s;
    explicit guard(std::shared_ptr<detail::future_state<T>> st) : s(std::move(st)) {}
    ~guard() {
      std::lock_guard<detail::spin_mutex> lk(s->mutex);
      if (s->ready) return;
      s->error = std::make_exception_ptr(broken_promise("the promise was destroyed without a value"));
      s->ready = true;
      s->waiters.notify_all();
    }
  };
  std::shared_ptr<detail::future_state<T>> state_;
  std::shared_ptr<guard> owner_;
};

// asyncio.Event: wait() suspends until set(); set() wakes every waiter; clear() resets.
class event {
 public:
  void set() {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    set_ = true;
    waiters_.notify_all();
  }
  void clear() {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    set_ = false;
  }
  bool is_set() const {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    return set_;
  }
  void wait() {
    std::unique_lock<detail::spin_mutex> lk(mutex_);
    while (!set_) waiters_.wait(lk);
  }
  // True if set within `d`.
  bool wait_for(duration d) {
    const time_point deadline = detail::deadline_in(d);
    std::unique_lock<detail::spin_mutex> lk(mutex_);
    while (!set_) {
      if (!waiters_.wait(lk, deadline)) return set_;
    }
    return true;
  }

 private:
  mutable detail::spin_mutex mutex_;
  detail::wait_queue waiters_;
  bool set_ = false;
};

// A counting semaphore (asyncio.Semaphore). Use semaphore_guard to hold it for a scope.
class semaphore {
 public:
  explicit semaphore(std::size_t count) : count_(count) {}
  void acquire() {
    std::unique_lock<detail::spin_mutex> lk(mutex_);
    while (count_ == 0) waiters_.wait(lk);
    --count_;
  }
  bool try_acquire() {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    if (count_ == 0) return false;
    --count_;
    return true;
  }
  // True if acquired within `d`.
  bool acquire_for(duration d) {
    const time_point deadline = detail::deadline_in(d);
    std::unique_lock<detail::spin_mutex> lk(mutex_);
    while (count_ == 0) {
      if (!waiters_.wait(lk, deadline) && count_ == 0) return false;
    }
    --count_;
    return true;
  }
  // Adds n permits and wakes up to n waiters. Throws usage_error if the count would overflow.
  void release(std::size_t n = 1) {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    if (n > static_cast<std::size_t>(-1) - count_) {
      throw usage_error("semaphore::release(" + std::to_string(n) + "): the count would overflow");
    }
    count_ += n;
    for (std::size_t i = 0; i < n && !waiters_.empty(); ++i) waiters_.notify_one();
  }
  std::size_t available() const {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    return count_;
  }

 private:
  mutable detail::spin_mutex mutex_;
  detail::wait_queue waiters_;
  std::size_t count_;
};

// `async with semaphore:` — acquires in the constructor, releases in the destructor.
class semaphore_guard {
 public:
  explicit semaphore_guard(semaphore& s) : s_(s) { s_.acquire(); }
  // release() throws only when the count would overflow, which cannot follow this guard's acquire().
  ~semaphore_guard() { s_.release(); }  // NOLINT(bugprone-exception-escape)
  semaphore_guard(const semaphore_guard&) = delete;
  semaphore_guard& operator=(const semaphore_guard&) = delete;

 private:
  semaphore& s_;
};

// A mutex for tasks: lock() suspends the task instead of blocking the thread. Not recursive.
// Works with std::lock_guard / std::unique_lock.
class mutex {
 public:
  void lock() {
    std::unique_lock<detail::spin_mutex> lk(mutex_);
    while (locked_) waiters_.wait(lk);
    locked_ = true;
  }
  bool try_lock() {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    if (locked_) return false;
    locked_ = true;
    return true;
  }
  // Throws usage_error if the mutex is not locked (asyncio.Lock.release() raises RuntimeError).
  void unlock() {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    if (!locked_) throw usage_error("mutex::unlock() of a mutex that is not locked");
    locked_ = false;
    waiters_.notify_one();
  }

 private:
  friend class condition_variable;
  detail::spin_mutex mutex_;
  detail::wait_queue waiters_;
  bool locked_ = false;
};

// A condition variable for tendril::mutex.
class condition_variable {
 public:
  // Atomically unlocks `lk`, waits for a notification, and locks it again. If the task is cancelled while
  // waiting, the mutex is still locked again before task_cancelled propagates (as asyncio.Condition does).
  void wait(std::unique_lock<tendril::mutex>& lk) { wait_until_impl(lk, std::nullopt); }
  template <class Pred>
  void wait(std::unique_lock<tendril::mutex>& lk, Pred pred) {
    while (!pred()) wait(lk);
  }
  // False on timeout.
  bool wait_for(std::unique_lock<tendril::mutex>& lk, duration d) {
    return wait_until_impl(lk, detail::deadline_in(d));
  }
  void notify_one() {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    waiters_.notify_one();
  }
  void notify_all() {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    waiters_.notify_all();
  }

 private:
  bool wait_until_impl(std::unique_lock<tendril::mutex>& lk, std::optional<time_point> deadline) {
    std::exception_ptr failure;
    bool notified = false;
    {
      std::unique_lock<detail::spin_mutex> inner(mutex_);
      lk.unlock();  // under `inner`: a notify after this point cannot be lost
      try {
        notified = waiters_.wait(inner, deadline);
      } catch (...) {
        failure = std::current_exception();
      }
    }
    for (;;) {
      try {
        lk.lock();
        break;
      } catch (const task_cancelled&) {
        if (!failure) failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
    return notified;
  }

  detail::spin_mutex mutex_;
  detail::wait_queue waiters_;
};

// A channel between tasks (and threads): bounded by `capacity` items; capacity 0 is a rendezvous (push waits
// until a pop takes the item; a push cancelled or timed out before that takes its item back). close() ends it: push()
// then throws channel_closed, and pop() returns the items still buffered, then std::nullopt. Range-for pops until
// closed and drained.
template <class T>
class channel {
 public:
  explicit channel(std::size_t capacity) : capacity_(capacity) {}
  channel(const channel&) = delete;
  channel& operator=(const channel&) = delete;

  // Waits for room, then adds v. Throws channel_closed if the channel is (or becomes) closed first.
  void push(T v) {
    std::unique_lock<detail::spin_mutex> lk(mutex_);
    while (!closed_ && buffer_.size() >= std::max<std::size_t>(capacity_, 1)) not_full_.wait(lk);
    if (closed_) throw channel_closed("push() on a closed tendril::channel");
    buffer_.push_back(std::move(v));
    const std::size_t ticket = ++pushed_;
    not_empty_.notify_one();
    if (capacity_ == 0) {
      // Rendezvous: wait until a receiver has taken this item (or the channel closed: the item stays for pop()).
      try {
        while (popped_ < ticket && !closed_) taken_.wait(lk);
      } catch (...) {
        // Cancelled, or a timeout scope expired, before a receiver took the item: take it back, so that a push()
        // that throws never delivers. A rendezvous channel buffers one item at a time: this one. Counting it as
        // popped keeps the later pushers' tickets in step. (wait() relocked lk.)
        if (popped_ < ticket) {
          buffer_.pop_back();
          ++popped_;
          not_full_.notify_one();
        }
        throw;
      }
    }
  }
  // Adds v if there is room now; false if full or closed.
  bool try_push(T v) {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    if (closed_ || buffer_.size() >= std::max<std::size_t>(capacity_, 1)) return false;
    if (capacity_ == 0 && not_empty_.empty()) return false;  // a rendezvous needs a waiting receiver
    buffer_.push_back(std::move(v));
    ++pushed_;
    not_empty_.notify_one();
    return true;
  }
  // Waits for an item; std::nullopt once the channel is closed and drained.
  std::optional<T> pop() {
    std::unique_lock<detail::spin_mutex> lk(mutex_);
    while (buffer_.empty() && !closed_) not_empty_.wait(lk);
    return take(lk);
  }
  // An item if one is buffered now.
  std::optional<T> try_pop() {
    std::unique_lock<detail::spin_mutex> lk(mutex_);
    return take(lk);
  }
  // Closes the channel, waking every waiting pusher and popper. Closing twice is harmless.
  void close() {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    closed_ = true;
    not_full_.notify_all();
    not_empty_.notify_all();
    taken_.notify_all();
  }
  bool closed() const {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    return closed_;
  }
  std::size_t size() const {
    std::lock_guard<detail::spin_mutex> lk(mutex_);
    return buffer_.size();
  }

  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(channel* c) : c_(c) { ++*this; }
    T& operator*() { return *cur_; }
    iterator& operator++() {
      cur_ = c_->pop();
      return *this;
    }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.cur_.has_value(); }

   private:
    channel* c_ = nullptr;
    std::optional<T> cur_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  std::optional<T> take(std::unique_lock<detail::spin_mutex>&) {
    if (buffer_.empty()) return std::nullopt;
    std::optional<T> v(std::move(buffer_.front()));
    buffer_.pop_front();
    ++popped_;
    not_full_.notify_one();
    if (capacity_ == 0) taken_.notify_all();
    return v;
  }

  mutable detail::spin_mutex mutex_;
  detail::wait_queue not_full_, not_empty_, taken_;
  std::deque<T> buffer_;
  std::size_t capacity_;
  std::size_t pushed_ = 0, popped_ = 0;
  bool closed_ = false;
};

}  // namespace tendril
