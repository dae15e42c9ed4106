// thread_pool and run_in_thread (run_in_executor).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <latch>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "helpers.hpp"
#include "tendril/executor.hpp"
#include "tendril/scheduler.hpp"

using namespace sched_test;

TEST_CASE("thread_pool: 10 jobs of 200 ms on 5 workers take two rounds, results correct") {
  tendril::run([] {
    tendril::thread_pool pool(5);
    CHECK(pool.size() == 5);
    std::atomic<int> running{0}, max_running{0};
    std::vector<tendril::future<int>> fs;
    stopwatch sw;
    for (int i = 0; i < 10; ++i) {
      fs.push_back(pool.submit([i, &running, &max_running] {
        int now = ++running;
        int prev = max_running.load();
        while (now > prev && !max_running.compare_exchange_weak(prev, now)) {
        }
        std::this_thread::sleep_for(200ms);
        --running;
        return i * i;
      }));
    }
    for (int i = 0; i < 10; ++i) CHECK(fs[i].get() == i * i);
    CHECK(sw.elapsed() >= 400ms);
    CHECK(sw.elapsed() < generous(1500ms));  // not ten rounds
    CHECK(max_running.load() <= 5);
  });
}

TEST_CASE("run_in_thread suspends only the calling task: a ticker keeps ticking") {
  tendril::run([] {
    int ticks = 0;
    bool stop = false;
    auto ticker = tendril::spawn([&] {
      while (!stop) {
        tendril::sleep_for(5ms);
        ++ticks;
      }
    });
    tendril::yield();
    const int before = ticks;
    stopwatch sw;
    std::thread::id worker;
    int r = tendril::run_in_thread([&worker] {
      worker = std::this_thread::get_id();
      std::this_thread::sleep_for(200ms);  // a blocking call
      return 5;
    });
    const int during = ticks - before;
    stop = true;
    ticker.join();
    CHECK(r == 5);
    CHECK(worker != std::this_thread::get_id());
    CHECK(sw.elapsed() >= 200ms);
    CHECK(during > 0);
  });
}

TEST_CASE("an exception in a job reaches the future") {
  tendril::thread_pool pool(2);
  auto f = pool.submit([]() -> int { throw std::runtime_error("job failed"); });
  CHECK_THROWS_WITH_AS(f.get(), "job failed", std::runtime_error);
  tendril::run([] {
    CHECK_THROWS_WITH_AS(tendril::run_in_thread([] { throw std::invalid_argument("bad arg"); }), "bad arg",
                         std::invalid_argument);
  });
}

TEST_CASE("void jobs, and the pool finishes queued jobs before its destructor returns") {
  std::atomic<int> ran{0};
  {
    tendril::thread_pool pool(2);
    for (int i = 0; i < 6; ++i)
      pool.submit([&ran] {
        std::this_thread::sleep_for(10ms);
        ++ran;
      });
  }
  CHECK(ran == 6);
}

TEST_CASE("several tasks in run_in_thread at once overlap") {
  stopwatch sw;
  tendril::run([] {
    std::vector<tendril::task<int>> ts;
    for (int i = 0; i < 4; ++i) {
      ts.push_back(tendril::spawn([i] {
        return tendril::run_in_thread([i] {
          std::this_thread::sleep_for(150ms);
          return i;
        });
      }));
    }
    int sum = 0;
    for (auto& t : ts) sum += t.get();
    CHECK(sum == 6);
  });
  CHECK(sw.elapsed() >= 150ms);
  CHECK(sw.elapsed() < generous(550ms));  // the default pool has at least 4 workers
}

TEST_CASE("cancelling a task waiting in run_in_thread stops the wait, not the job") {
  std::atomic<bool> job_started{false}, job_finished{false};
  bool finished_when_joined = true;
  tendril::run([&] {
    auto t = tendril::spawn([&] {
      return tendril::run_in_thread([&] {
        job_started = true;
        std::this_thread::sleep_for(500ms);
        job_finished = true;
        return 1;
      });
    });
    while (!job_started) tendril::sleep_for(1ms);
    t.cancel();
    t.join();
    finished_when_joined = job_finished;  // the wait ended; the OS thread cannot be interrupted
    CHECK(t.cancelled());
  });
  CHECK_FALSE(finished_when_joined);
  for (int i = 0; i < 500 && !job_finished; ++i) std::this_thread::sleep_for(10ms);
  CHECK(job_finished);  // ...and the job ran to completion, its result dropped
}

TEST_CASE("a thread_pool destroyed by one of its own jobs finishes the queue and returns; nothing terminates") {
  // The destructor joined every worker, the calling one too: std::system_error out of a noexcept destructor,
  // std::terminate. Now the calling worker helps finish the queued jobs, the others are joined, and it is
  // detached to finish its own job.
  std::size_t workers = 1;
  SUBCASE("one worker: the queued jobs run on the destroying worker") { workers = 1; }
  SUBCASE("three workers: the others are joined") { workers = 3; }
  tendril::run([&] {
    auto* pool = new tendril::thread_pool(workers);
    std::latch queued(1);
    std::atomic<int> ran{0};
    auto destroyer = pool->submit([&] {
      queued.wait();
      delete pool;  // from inside the pool's own job
      return ran.load();
    });
    std::vector<tendril::future<void>> rest;
    for (int i = 0; i < 5; ++i) {
      rest.push_back(pool->submit([&] { ++ran; }));
    }
    queued.count_down();
    CHECK(destroyer.get() == 5);  // every queued job had run when the destructor returned
    for (auto& f : rest) f.get();
    CHECK(ran.load() == 5);
  });
}
