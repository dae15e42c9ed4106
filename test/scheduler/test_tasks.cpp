// Tasks: spawn, get, join, done, name, start order, stacks, many tasks, sleeping and yielding order.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/stack.hpp"
#include "tendril/sync.hpp"

using namespace sched_test;

TEST_CASE("spawn and get return the task's result") {
  int r = tendril::run([] {
    auto t = tendril::spawn([] { return 21; });
    return t.get() * 2;
  });
  CHECK(r == 42);
}

TEST_CASE("get may be called repeatedly and returns the same value") {
  tendril::run([] {
    auto t = tendril::spawn([] { return std::string("hello"); });
    CHECK(t.get() == "hello");
    CHECK(t.get() == "hello");
  });
}

TEST_CASE("a void task: get and join wait for it") {
  tendril::run([] {
    int ran = 0;
    auto t = tendril::spawn([&] {
      tendril::sleep_for(20ms);
      ++ran;
    });
    CHECK_FALSE(t.done());
    t.join();
    CHECK(t.done());
    CHECK(ran == 1);
    t.get();
    CHECK(ran == 1);
  });
}

TEST_CASE("a move-only result can be taken") {
  tendril::run([] {
    auto t = tendril::spawn([] { return std::make_unique<int>(7); });
    std::unique_ptr<int> p = t.get();
    REQUIRE(p);
    CHECK(*p == 7);
  });
}

TEST_CASE("taking a move-only result a second time throws usage_error instead of returning a moved-from value") {
  tendril::run([] {
    auto t = tendril::spawn([] { return std::make_unique<int>(7); }, {.name = "maker"});
    auto first = t.get();
    REQUIRE(first);
    auto copy = t;  // another handle to the same task
    try {
      auto second = copy.get();
      FAIL("the second get() returned " << std::string(second ? "a value" : "an empty unique_ptr"));
    } catch (const tendril::usage_error& e) {
      CHECK(std::string(e.what()).find("maker") != std::string::npos);
    }
    CHECK(*first == 7);
  });
}

TEST_CASE("done() is false until the task finishes, then true") {
  tendril::run([] {
    auto t = tendril::spawn([] { tendril::sleep_for(30ms); });
    CHECK_FALSE(t.done());
    tendril::yield();
    CHECK_FALSE(t.done());  // started, now sleeping
    t.join();
    CHECK(t.done());
    CHECK_FALSE(t.cancelled());
    CHECK(t.exception() == nullptr);
  });
}

TEST_CASE("tasks have names; unnamed tasks have an empty name") {
  tendril::run([] {
    auto a = tendril::spawn([] { return 1; }, {.name = "yan1"});
    auto b = tendril::spawn([] { return 2; });
    CHECK(a.name() == "yan1");
    CHECK(b.name().empty());
    CHECK(a.get() + b.get() == 3);
  });
}

TEST_CASE("an empty task handle is a usage error") {
  tendril::task<int> t;
  CHECK_FALSE(t.valid());
  CHECK_FALSE(t.done());
  CHECK_FALSE(t.cancel());
  CHECK_THROWS_AS(t.get(), tendril::usage_error);
  // Like every tendril error, a std::runtime_error (DESIGN.md's conventions).
  CHECK_THROWS_AS(t.get(), std::runtime_error);
}

TEST_CASE("exception() works on a const handle, and before the task finishes it is a usage error") {
  capture_unhandled cap;
  tendril::run([] {
    const auto t = tendril::spawn([]() -> int { throw std::runtime_error("const-visible"); });
    CHECK_THROWS_AS(t.exception(), tendril::usage_error);  // not started yet
    tendril::task<int>(t).join();
    REQUIRE(t.exception() != nullptr);
    CHECK_THROWS_WITH(std::rethrow_exception(t.exception()), "const-visible");
  });
  CHECK(cap.reports.empty());  // retrieved through the const handle
}

TEST_CASE("tasks start only at the creator's next suspension point (main start, main end, then tasks)") {
  std::vector<std::string> log;
  tendril::run([&] {
    log.push_back("main start");
    auto t1 = tendril::spawn([&] {
      log.push_back("t1 start");
      tendril::sleep_for(20ms);
      log.push_back("t1 end");
      return 1;
    });
    auto t2 = tendril::spawn([&] {
      log.push_back("t2 start");
      tendril::sleep_for(20ms);
      log.push_back("t2 end");
      return 2;
    });
    log.push_back("main end");
    int r1 = t1.get();
    int r2 = t2.get();
    log.push_back("results " + std::to_string(r1) + " " + std::to_string(r2));
  });
  std::vector<std::string> expected{"main start", "main end", "t1 start",   "t2 start",
                                    "t1 end",     "t2 end",   "results 1 2"};
  CHECK(log == expected);
}

TEST_CASE("spawn with a custom stack size") {
  tendril::run([] {
    // Touch most of a 64 KiB stack: it must really be there.
    auto t = tendril::spawn(
        [] {
          volatile char buf[48 * 1024];
          for (std::size_t i = 0; i < sizeof buf; i += 512) buf[i] = static_cast<char>(1 + i / 512 % 100);
          tendril::sleep_for(1ms);
          int sum = 0;
          for (std::size_t i = 0; i < sizeof buf; i += 512) sum += buf[i] != 0;
          return sum;
        },
        {.name = "big frame", .stack_size = 64 * 1024});
    CHECK(t.get() == 48 * 1024 / 512);
    auto small = tendril::spawn([] { return 5; }, {.name = {}, .stack_size = 16 * 1024});
    CHECK(small.get() == 5);
  });
}

TEST_CASE("spawn with a stack size that cannot be mapped throws std::bad_alloc naming it; nothing is spawned") {
  tendril::run([] {
    for (std::size_t size : {SIZE_MAX, std::size_t{1} << 50}) {
      try {
        tendril::spawn([] { return 1; }, {.name = "huge", .stack_size = size});
        FAIL("a task with a stack of " << size << " bytes was spawned");
      } catch (const std::bad_alloc& e) {
        CHECK(std::string(e.what()).find("cannot allocate a stack of") != std::string::npos);
      }
    }
    CHECK(tendril::spawn([] { return 2; }).get() == 2);  // the scheduler goes on
  });
}

TEST_CASE("many tasks sleep concurrently and all finish with correct results") {
  const int n = under_valgrind() ? 500 : 10000;
  stopwatch sw;
  long long total = tendril::run([n] {
    std::vector<tendril::task<int>> ts;
    ts.reserve(n);
    for (int i = 0; i < n; ++i) {
      ts.push_back(tendril::spawn([i] {
        tendril::sleep_for(100ms);
        return i * 2;
      }));
    }
    long long sum = 0;
    int correct = 0;
    for (int i = 0; i < n; ++i) {
      int v = ts[i].get();
      sum += v;
      correct += v == i * 2;
    }
    CHECK(correct == n);
    return sum;
  });
  CHECK(total == static_cast<long long>(n) * (n - 1));
  CHECK(sw.elapsed() >= 100ms);
  CHECK(sw.elapsed() < generous(10s));  // concurrently: far less than n * 100 ms
}

TEST_CASE("sleeping tasks wake in deadline order") {
  std::vector<int> order;
  tendril::run([&] {
    std::vector<tendril::task<void>> ts;
    for (int ms : {150, 50, 250, 100, 200}) {
      ts.push_back(tendril::spawn([&order, ms] {
        tendril::sleep_for(std::chrono::milliseconds(ms));
        order.push_back(ms);
      }));
    }
    for (auto& t : ts) t.join();
  });
  CHECK(order == std::vector<int>{50, 100, 150, 200, 250});
}

TEST_CASE("three sleeps of 100, 200 and 300 ms run concurrently") {
  stopwatch sw;
  tendril::run([] {
    auto a = tendril::spawn([] { tendril::sleep_for(100ms); });
    auto b = tendril::spawn([] { tendril::sleep_for(200ms); });
    auto c = tendril::spawn([] { tendril::sleep_for(300ms); });
    a.join();
    b.join();
    c.join();
  });
  CHECK(sw.elapsed() >= 300ms);
  CHECK(sw.elapsed() < generous(550ms) + 300ms);
}

TEST_CASE("sleep_until a past time returns at once; sleep_for waits at least that long") {
  tendril::run([] {
    stopwatch sw;
    tendril::sleep_until(clock::now() - 1s);
    tendril::sleep_for(0ms);
    tendril::sleep_for(-5ms);
    CHECK(sw.elapsed() < generous(1s));
    stopwatch sw2;
    tendril::sleep_for(60ms);
    CHECK(sw2.elapsed() >= 60ms);
  });
}

TEST_CASE("yield() alternates round robin between three tasks") {
  std::string log;
  tendril::run([&] {
    auto make = [&](char c) {
      return tendril::spawn([&log, c] {
        for (int i = 0; i < 4; ++i) {
          log += c;
          tendril::yield();
        }
      });
    };
    auto a = make('A');
    auto b = make('B');
    auto c = make('C');
    a.join();
    b.join();
    c.join();
  });
  CHECK(log == "ABCABCABCABC");
}

TEST_CASE("yield() with no other task returns at once") {
  tendril::run([] {
    for (int i = 0; i < 1000; ++i) tendril::yield();
  });
  for (int i = 0; i < 10; ++i) tendril::yield();  // also in the thread's main context
}

TEST_CASE("wait_for on a task: false while running, true once done") {
  tendril::run([] {
    auto t = tendril::spawn([] {
      tendril::sleep_for(200ms);
      return 3;
    });
    stopwatch sw;
    CHECK_FALSE(t.wait_for(30ms));
    CHECK(sw.elapsed() >= 30ms);
    CHECK_FALSE(t.done());
    CHECK(t.wait_for(5s));
    CHECK(t.get() == 3);
  });
}

TEST_CASE("add_done_callback runs once when the task finishes, or at once if already finished") {
  tendril::run([] {
    int calls = 0;
    int seen = 0;
    auto t = tendril::spawn([] {
      tendril::sleep_for(10ms);
      return 9;
    });
    t.add_done_callback([&](tendril::task<int>& self) {
      ++calls;
      seen = self.get();
    });
    CHECK(calls == 0);
    t.join();
    CHECK(calls == 1);
    CHECK(seen == 9);
    int late = 0;
    t.add_done_callback([&](tendril::task<int>&) { ++late; });
    CHECK(late == 1);
    CHECK(calls == 1);
  });
}

TEST_CASE("tasks may spawn tasks, and handles can be shared") {
  int r = tendril::run([] {
    auto outer = tendril::spawn([] {
      auto inner = tendril::spawn([] {
        tendril::sleep_for(5ms);
        return 4;
      });
      return inner;  // a handle outlives the task that created it
    });
    tendril::task<int> inner = outer.get();
    return inner.get();
  });
  CHECK(r == 4);
}

TEST_CASE("task stacks are returned to the pool after the tasks finish") {
  std::thread([] {
    tendril::run([] {
      std::vector<tendril::task<void>> ts;
      for (int i = 0; i < 20; ++i) ts.push_back(tendril::spawn([] { tendril::sleep_for(1ms); }));
      for (auto& t : ts) t.join();
    });
    tendril::yield();  // let the finished fibers be cleaned up
    CHECK(tendril::stack_pool_statistics().in_use == 0);
  }).join();
}

// A batch of tasks spawned and then joined one by one: when the joiner resumes after the last join, the
// scheduler has released the finished tasks and their stacks are back in the pool, so the next batch reuses
// them instead of mapping new ones. (A scheduling change that let the joiner run before the dispatcher released
// them doubled the stacks mapped, and cost a page fault per task.)
TEST_CASE("a joined batch's stacks are reused by the next batch") {
  std::thread([] {
    constexpr std::size_t batch = 200;
    for (int round = 0; round < 3; ++round) {
      std::vector<tendril::task<void>> ts;
      for (std::size_t i = 0; i < batch; ++i) ts.push_back(tendril::spawn([] {}));
      CHECK(tendril::stack_pool_statistics().mapped <= batch + batch / 4);
      for (auto& t : ts) t.join();
      CHECK(tendril::stack_pool_statistics().in_use <= 1);  // the last task may still be switching away
    }
  }).join();
}

// Stack colouring (lib/stack_pool.hpp): tasks parked at the same depth do not all sit at the same offset in a
// page, and a coloured stack goes back to the pool whole: the second round reuses the first round's stacks (none
// mapped anew: its size is right) and its tasks' frames sit exactly where the first round's did (its top is right;
// a wrong one would also change its colour).
TEST_CASE("task stacks are coloured: parked tasks sit at different page offsets, and every stack goes back whole") {
  std::thread([] {
    for (const std::size_t size : {std::size_t{16} * 1024, std::size_t{64} * 1024, std::size_t{256} * 1024}) {
      CAPTURE(size);
      std::vector<std::uintptr_t> frames[2];
      std::size_t mapped_after_first = 0;
      for (int round = 0; round < 2; ++round) {
        std::vector<tendril::task<void>> ts;
        for (int i = 0; i < 32; ++i) {
          ts.push_back(tendril::spawn(
              [&frames, round] {
                frames[round].push_back(reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0)));
                tendril::yield();
              },
              {.name = {}, .stack_size = size}));
        }
        for (auto& t : ts) t.join();
        tendril::yield();  // let the last finished fiber be released
        const tendril::stack_pool_stats st = tendril::stack_pool_statistics();
        CHECK(st.in_use == 0);
        if (round == 0) mapped_after_first = st.mapped;
        if (round == 1) CHECK(st.mapped == mapped_after_first);
        std::sort(frames[round].begin(), frames[round].end());
      }
      CHECK(frames[1] == frames[0]);
      std::vector<std::uintptr_t> offsets;
      for (const std::uintptr_t f : frames[0]) offsets.push_back(f % 4096);
      std::sort(offsets.begin(), offsets.end());
      const auto distinct = std::unique(offsets.begin(), offsets.end()) - offsets.begin();
      CHECK(distinct >= 3);  // 32 stacks over 4 (16 KiB) or 8 colours
    }
  }).join();
}

// join() returns without taking the task's lock again once notified (finish() is still in its critical section
// on the task's thread): a joiner on another thread must still see the result, and the state must stay alive.
TEST_CASE("tasks joined from another OS thread while they finish") {
  // Also hundreds of short-lived tendril threads: under valgrind this is the regression test for Boost.Fiber's
  // per-thread setup (docs/internals.md, "Sanitizers and valgrind"), with fewer rounds.
  const int rounds = under_valgrind() ? 200 : 1000;
  for (int i = 0; i < rounds; ++i) {
    tendril::promise<tendril::task<int>> handle;
    auto hf = handle.get_future();
    tendril::promise<int> go;
    std::thread owner([&] {
      tendril::run([&] {
        auto f = go.get_future();
        auto t = tendril::spawn([f] { return f.get() + 1; });
        handle.set_value(t);
        t.join();
      });
    });
    tendril::run([&] {
      auto t = hf.get();
      go.set_value(i);
      if (i % 2 == 0) {
        t.join();
      } else {
        while (!t.wait_for(std::chrono::microseconds(i % 7))) {
        }
      }
      CHECK(t.done());
      CHECK(t.get() == i + 1);
    });
    owner.join();
  }
}
