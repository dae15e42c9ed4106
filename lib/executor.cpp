// lib/executor.cpp — thread_pool: plain OS worker threads fulfilling tendril promises.
#include "tendril/executor.hpp"

#include <algorithm>

namespace tendril {

namespace {
// Set on a worker whose own job destroyed its pool (see ~thread_pool): work() must then return without touching
// the pool. A worker thread belongs to one pool, so one flag per thread is enough.
thread_local bool tl_pool_destroyed_by_job = false;
}  // namespace

thread_pool::thread_pool(std::size_t threads) {
  threads = std::max<std::size_t>(threads, 1);
  workers_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard<std::mutex> lk(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  // Destroyed by one of its own jobs: that worker cannot join itself (std::system_error, then std::terminate from
  // this noexcept destructor). It helps finish the queue (work() returns once the queue is empty, stopping_ being
  // set), the others are joined, and it is detached: it finishes the job that destroyed the pool and exits,
  // touching the pool no more (tl_pool_destroyed_by_job).
  const std::thread::id self = std::this_thread::get_id();
  const auto own =
      std::find_if(workers_.begin(), workers_.end(), [&](const std::thread& w) { return w.get_id() == self; });
  if (own != workers_.end()) work();
  for (auto& w : workers_) {
    if (w.get_id() == self) {
      w.detach();
    } else {
      w.join();
    }
  }
  if (own != workers_.end()) tl_pool_destroyed_by_job = true;
}

void thread_pool::enqueue(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lk(mutex_);
    if (stopping_) throw usage_error("thread_pool::submit() after the pool was shut down");
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void thread_pool::work() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lk(mutex_);
      cv_.wait(lk, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping and drained
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();  // exceptions are captured into the job's promise by submit()
    if (tl_pool_destroyed_by_job) {
      tl_pool_destroyed_by_job = false;
      return;  // the job destroyed the pool (see ~thread_pool)
    }
  }
}

thread_pool& thread_pool::default_pool() {
  static thread_pool pool(std::max<std::size_t>(4, std::thread::hardware_concurrency() + 4));
  return pool;
}

}  // namespace tendril
