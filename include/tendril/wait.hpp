// tendril/wait.hpp — waiting for several tasks: gather, gather_settled, wait, wait_for (asyncio's toolkit).
//
//   std::vector<tendril::task<int>> ts = ...;
//   std::vector<int> rs = tendril::gather(ts);                    // results in order; first error rethrown
//   auto [a, b] = tendril::gather(t1, t2);                        // mixed types (void becomes std::monostate)
//   auto all = tendril::gather_settled(ts);                       // return_exceptions=True: an outcome per task
//   auto [done, pending] = tendril::wait(ts, 2s);                 // asyncio.wait(tasks, timeout=2)
//   auto first = tendril::wait(ts, {}, tendril::return_when::first_completed);
//   int r = tendril::wait_for(t, 1s);                              // cancels t and throws timeout_error after 1 s
//
// All of these suspend only the calling task and are cancellation points. None of them cancels the tasks it
// waits for, except wait_for() on timeout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "tendril/detail/wait_queue.hpp"
#include "tendril/scheduler.hpp"

namespace tendril {

// The result of one task for gather_settled: a value or the exception it finished with.
template <class T>
struct outcome {
  std::optional<T> value;
  std::exception_ptr error;
  bool ok() const noexcept { return !error; }
  // The value, or rethrows the error.
  T& get() {
    if (error) std::rethrow_exception(error);
    return *value;
  }
};
template <>
struct outcome<void> {
  std::exception_ptr error;
  bool ok() const noexcept { return !error; }
  void get() const {
    if (error) std::rethrow_exception(error);
  }
};

enum class return_when { all_completed, first_completed, first_exception };

template <class T>
struct wait_result {
  std::vector<task<T>> done;     // finished tasks, in the order given
  std::vector<task<T>> pending;  // the others, in the order given
};

namespace detail {
// Counts task completions so one waiter can wait for "any of these" (shared with the tasks' done callbacks).
struct completion_counter {
  spin_mutex mutex;
  wait_queue waiters;
  std::size_t finished = 0;
  std::size_t failed = 0;            // finished with an exception other than task_cancelled
  task_base* first_error = nullptr;  // the first to finish with any exception, cancellation included
};

// The done callbacks watch() puts on the tasks, removed when the wait is over (however it ends): waiting again
// and again on tasks that keep running (a polling loop) must not pile callbacks up on them.
struct watch_set {
  std::shared_ptr<completion_counter> counter = std::make_shared<completion_counter>();
  std::vector<std::pair<std::shared_ptr<task_base>, std::uint64_t>> keys;

  watch_set() = default;
  watch_set(const watch_set&) = delete;
  watch_set& operator=(const watch_set&) = delete;
  ~watch_set() {
    for (auto& [state, key] : keys) state->remove_done_callback(key);
  }
};

// Counts one task's completion in w's counter (the watch_set keeps the task's state alive meanwhile).
inline void watch_one(std::shared_ptr<task_base> state, watch_set& w) {
  if (!state) throw usage_error("tendril::wait/gather: empty task handle");
  if (!state->done()) state->check_not_current();
  std::uint64_t key = state->on_done_removable([c = w.counter, raw = state.get()] {
    const bool failed = raw->failed();
    const bool error = failed || raw->cancelled();
    std::lock_guard<spin_mutex> lk(c->mutex);
    ++c->finished;
    if (failed) ++c->failed;
    if (error && c->first_error == nullptr) c->first_error = raw;
    c->waiters.notify_all();
  });
  w.keys.emplace_back(std::move(state), key);
}

template <class T>
void watch(std::vector<task<T>>& tasks, watch_set& w) {
  w.keys.reserve(tasks.size());
  for (auto& t : tasks) watch_one(t.state_ptr(), w);
}

// Waits until `enough(counter)` or the deadline; returns false on timeout.
template <class Pred>
bool wait_counter(completion_counter& c, std::optional<time_point> deadline, Pred enough) {
  std::unique_lock<spin_mutex> lk(c.mutex);
  while (!enough(c)) {
    if (!c.waiters.wait(lk, deadline) && !enough(c)) return false;
  }
  return true;
}

// gather's wait: until every watched task has finished or one has finished with an exception (a cancelled one
// too, as in asyncio); then rethrows that first exception.
inline void wait_all_or_first_error(watch_set& w, std::size_t n) {
  detail::wait_counter(*w.counter, std::nullopt,
                       [n](const completion_counter& c) { return c.first_error != nullptr || c.finished == n; });
  task_base* first_error = nullptr;
  {
    std::lock_guard<spin_mutex> lk(w.counter->mutex);
    first_error = w.counter->first_error;
  }
  if (first_error != nullptr) std::rethrow_exception(first_error->exception());
}

template <class T>
using gathered_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class T>
gathered_t<T> get_gathered(task<T>& t) {
  if constexpr (std::is_void_v<T>) {
    t.get();
    return {};
  } else {
    return t.get();
  }
}
}  // namespace detail

// asyncio.wait: waits until `when` is satisfied or `timeout` passes; returns {done, pending}. Never throws the
// tasks' exceptions. first_exception behaves like all_completed when no task fails.
template <class T>
wait_result<T> wait(std::vector<task<T>>& tasks, std::optional<duration> timeout = std::nullopt,
                    return_when when = return_when::all_completed) {
  detail::watch_set watched;
  detail::watch(tasks, watched);
  const std::size_t n = tasks.size();
  detail::wait_counter(*watched.counter, detail::deadline_after(timeout), [&](const detail::completion_counter& c) {
    switch (when) {
      case return_when::first_completed:
        return c.finished >= 1 || n == 0;
      case return_when::first_exception:
        return c.failed >= 1 || c.finished == n;
      default:
        return c.finished == n;
    }
  });
  wait_result<T> r;
  for (auto& t : tasks) (t.done() ? r.done : r.pending).push_back(t);
  return r;
}

// asyncio.gather: waits for all tasks and returns their results in order. The first task to fail has its
// exception rethrown as soon as it happens; a task that is cancelled counts as failing with task_cancelled, as
// in asyncio. The other tasks keep running (gather cancels nothing).
template <class T>
std::vector<detail::gathered_t<T>> gather(std::vector<task<T>>& tasks) {
  detail::watch_set watched;
  detail::watch(tasks, watched);
  detail::wait_all_or_first_error(watched, tasks.size());
  std::vector<detail::gathered_t<T>> results;
  results.reserve(tasks.size());
  for (auto& t : tasks) results.push_back(detail::get_gathered(t));
  return results;
}

// gather for tasks of different types: a tuple of their results (void results are std::monostate). Errors as
// for the vector form: the first one is rethrown as soon as it happens.
template <class... T>
std::tuple<detail::gathered_t<T>...> gather(task<T>&... tasks) {
  detail::watch_set watched;
  watched.keys.reserve(sizeof...(T));
  (detail::watch_one(tasks.state_ptr(), watched), ...);
  detail::wait_all_or_first_error(watched, sizeof...(T));
  return std::tuple<detail::gathered_t<T>...>(detail::get_gathered(tasks)...);
}

// asyncio.gather(..., return_exceptions=True): waits for all tasks, returns an outcome per task, in order.
template <class T>
std::vector<outcome<T>> gather_settled(std::vector<task<T>>& tasks) {
  std::vector<outcome<T>> results;
  results.reserve(tasks.size());
  for (auto& t : tasks) t.join();
  for (auto& t : tasks) {
    outcome<T> o;
    o.error = t.exception();
    if constexpr (!std::is_void_v<T>) {
      if (!o.error) o.value.emplace(t.get());
    }
    results.push_back(std::move(o));
  }
  return results;
}

// asyncio.wait_for: the task's result if it finishes within `d`; otherwise cancels it, waits for it to unwind,
// and throws timeout_error.
template <class T>
T wait_for(task<T>& t, duration d) {
  if (!t.wait_for(d)) {
    t.cancel();
    t.join();
    if (t.cancelled() || !t.done()) {
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
      throw timeout_error(t.state_ptr()->describe() + " did not finish within " + std::to_string(ms) +
                          " ms; it was cancelled");
    }
  }
  return t.get();
}

}  // namespace tendril
