// tendril/executor.hpp — running blocking code on OS threads without blocking other tasks (run_in_executor).
//
//   // A blocking call (a C library, a synchronous database driver...) would stop every task of this thread.
//   // run_in_thread runs it on a worker thread and suspends only the calling task until it returns:
//   std::string body = tendril::run_in_thread([] { return blocking_fetch(); });
//
//   tendril::thread_pool pool(5);                     // concurrent.futures.ThreadPoolExecutor(max_workers=5)
//   std::vector<tendril::future<int>> fs;
//   for (int i = 0; i < 10; ++i) fs.push_back(pool.submit([i] { std::this_thread::sleep_for(1s); return i; }));
//   for (auto& f : fs) f.get();                       // 10 jobs, 5 at a time: about 2 s
//
// Jobs run in submission order on the pool's threads. The future is fulfilled with the job's result or
// exception. Cancelling a task that waits in run_in_thread stops the wait (task_cancelled), not the job: an OS
// thread cannot be interrupted, so the job runs to completion and its result is dropped (as in asyncio).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "tendril/export.hpp"
#include "tendril/sync.hpp"

namespace tendril {

class TENDRIL_API thread_pool {
 public:
  // Starts `threads` worker threads (at least 1).
  explicit thread_pool(std::size_t threads);
  // Finishes every queued job, then joins the workers (shutdown(wait=True)).
  // Destroyed from inside one of its own jobs (the job deletes the pool that runs it), the destructor still
  // returns normally: that worker runs the queued jobs left, the other workers are joined, and that worker is
  // detached instead of joining itself; it finishes the job that destroyed the pool, then exits without touching
  // the pool. The job must not use the pool after destroying it.
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  // Queues fn() and returns a future for its result. Throws usage_error after shutdown.
  template <class F>
  auto submit(F&& fn) -> future<std::invoke_result_t<std::decay_t<F>&>> {
    using R = std::invoke_result_t<std::decay_t<F>&>;
    promise<R> p;
    future<R> f = p.get_future();
    enqueue([p, fn = std::decay_t<F>(std::forward<F>(fn))]() mutable {
      try {
        if constexpr (std::is_void_v<R>) {
          fn();
          p.set_value();
        } else {
          p.set_value(fn());
        }
      } catch (...) {
        p.set_exception(std::current_exception());
      }
    });
    return f;
  }

  std::size_t size() const noexcept { return workers_.size(); }

  // The process-wide pool run_in_thread uses: max(4, hardware threads + 4) workers, created on first use.
  static thread_pool& default_pool();

 private:
  void enqueue(std::function<void()> job);
  void work();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

// Runs fn() on the default thread pool and suspends only the calling task until it returns; returns its result
// or rethrows its exception (loop.run_in_executor(None, fn)).
template <class F>
auto run_in_thread(F&& fn) -> std::invoke_result_t<std::decay_t<F>&> {
  return thread_pool::default_pool().submit(std::forward<F>(fn)).get();
}

}  // namespace tendril
