// lib/executor.cpp — thread_pool: plain OS worker threads fulfilling tendril promises.
#include "tendril/executor.hpp"

#include <algorithm>

namespace tendril {

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
  for (auto& w : workers_) w.join();
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
  }
}

thread_pool& thread_pool::default_pool() {
  static thread_pool pool(std::max<std::size_t>(4, std::thread::hardware_concurrency() + 4));
  return pool;
}

}  // namespace tendril
