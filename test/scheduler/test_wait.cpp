// gather, gather_settled, wait (asyncio's toolkit for several tasks).
#include <doctest/doctest.h>

#include <malloc.h>

#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "helpers.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/sync.hpp"
#include "tendril/wait.hpp"

using namespace sched_test;

namespace {
tendril::task<int> sleeper(int ms, int value) {
  return tendril::spawn([ms, value] {
    tendril::sleep_for(std::chrono::milliseconds(ms));
    return value;
  });
}
tendril::task<int> failer(int ms, std::string what) {
  return tendril::spawn([ms, what]() -> int {
    tendril::sleep_for(std::chrono::milliseconds(ms));
    throw std::runtime_error(what);
  });
}
}  // namespace

TEST_CASE("gather returns results in the order given, whatever the completion order") {
  tendril::run([] {
    std::vector<int> finish_order;
    std::vector<tendril::task<int>> ts;
    for (auto [ms, v] : {std::pair{120, 1}, {40, 2}, {80, 3}}) {
      ts.push_back(tendril::spawn([ms, v, &finish_order] {
        tendril::sleep_for(std::chrono::milliseconds(ms));
        finish_order.push_back(v);
        return v;
      }));
    }
    stopwatch sw;
    std::vector<int> rs = tendril::gather(ts);
    CHECK(rs == std::vector<int>{1, 2, 3});
    CHECK(finish_order == std::vector<int>{2, 3, 1});
    CHECK(sw.elapsed() >= 120ms);
    CHECK(sw.elapsed() < generous(2s));
  });
}

TEST_CASE("gather of an empty list returns at once") {
  tendril::run([] {
    std::vector<tendril::task<int>> none;
    CHECK(tendril::gather(none).empty());
  });
}

TEST_CASE("gather rethrows the first error promptly; the other tasks keep running") {
  tendril::run([] {
    std::vector<tendril::task<int>> ts{sleeper(400, 1), failer(40, "first"), failer(200, "second")};
    stopwatch sw;
    CHECK_THROWS_WITH_AS(tendril::gather(ts), "first", std::runtime_error);
    CHECK(sw.elapsed() >= 40ms);
    CHECK_FALSE(ts[0].done());  // rethrown before the slow task finished...
    CHECK_FALSE(ts[0].cancelled());
    CHECK(ts[0].get() == 1);  // ...and it was not cancelled: it finishes normally
    CHECK(sw.elapsed() >= 400ms);
    CHECK_THROWS_WITH(ts[2].get(), "second");
  });
}

TEST_CASE("gather and wait on a list holding the calling task are a usage error, not a silent deadlock") {
  tendril::run([] {
    tendril::task<int> me;
    auto other = sleeper(10, 2);
    me = tendril::spawn(
        [&] {
          int refused = 0;
          std::vector<tendril::task<int>> both{other, me};
          try {
            tendril::gather(both);
          } catch (const tendril::usage_error& e) {
            refused += std::string(e.what()).find("task 'selfie' cannot wait for itself") != std::string::npos;
          }
          try {
            tendril::gather(other, me);
          } catch (const tendril::usage_error&) {
            ++refused;
          }
          try {
            tendril::wait(both, 1h, tendril::return_when::first_completed);
          } catch (const tendril::usage_error&) {
            ++refused;
          }
          return refused;
        },
        {.name = "selfie", .stack_size = 0});
    CHECK(me.get() == 3);
    CHECK(other.get() == 2);
  });
}

TEST_CASE("gather of void tasks returns monostates") {
  tendril::run([] {
    int ran = 0;
    std::vector<tendril::task<void>> ts;
    for (int i = 0; i < 3; ++i) ts.push_back(tendril::spawn([&] { ++ran; }));
    auto rs = tendril::gather(ts);
    CHECK(rs.size() == 3);
    CHECK(ran == 3);
  });
}

TEST_CASE("gather of tasks of different types, including void, returns a tuple") {
  tendril::run([] {
    auto a = sleeper(60, 5);
    auto b = tendril::spawn([] {
      tendril::sleep_for(20ms);
      return std::string("text");
    });
    bool c_ran = false;
    auto c = tendril::spawn([&] {
      tendril::sleep_for(40ms);
      c_ran = true;
    });
    auto [x, y, z] = tendril::gather(a, b, c);
    CHECK(x == 5);
    CHECK(y == "text");
    CHECK(std::is_same_v<decltype(z), std::monostate>);
    CHECK(c_ran);
  });
}

TEST_CASE("the tuple form of gather rethrows a task's exception") {
  tendril::run([] {
    auto a = sleeper(10, 1);
    auto b = failer(20, "tuple failure");
    CHECK_THROWS_WITH(tendril::gather(a, b), "tuple failure");
  });
}

TEST_CASE("the tuple form of gather rethrows the first error promptly, before slower tasks finish") {
  tendril::run([] {
    tendril::event release;
    auto slow = tendril::spawn([&] {
      release.wait_for(5s);  // bounded, so that a gather waiting for it would fail below instead of hanging
      return 1;
    });
    auto b = failer(20, "tuple first");
    CHECK_THROWS_WITH(tendril::gather(slow, b), "tuple first");
    CHECK_FALSE(slow.done());  // a join in argument order would still be waiting for it
    release.set();
    CHECK(slow.get() == 1);
  });
}

TEST_CASE("gather rethrows the error that happened first, not the first in the list") {
  capture_unhandled cap;
  tendril::run([] {
    std::vector<tendril::task<int>> ts{failer(150, "later"), failer(20, "earlier")};
    CHECK_THROWS_WITH(tendril::gather(ts), "earlier");
    CHECK_THROWS_WITH(ts[0].get(), "later");
  });
  tendril::run([] {  // tasks that had already failed when gather looked: the first in the list, as in asyncio
    std::vector<tendril::task<int>> ts{failer(30, "listed first"), failer(0, "failed first")};
    tendril::sleep_for(60ms);
    REQUIRE(ts[0].done());
    CHECK_THROWS_WITH(tendril::gather(ts), "listed first");
  });
  CHECK(cap.reports.size() == 1);  // "failed first", never retrieved
}

TEST_CASE("gather treats a cancelled task as failing with task_cancelled, at once (asyncio)") {
  tendril::run([] {
    tendril::event release;
    std::vector<tendril::task<int>> ts;
    ts.push_back(tendril::spawn([&] {
      release.wait_for(5s);
      return 1;
    }));
    ts.push_back(tendril::spawn([] {
      tendril::sleep_for(1h);
      return 2;
    }));
    auto canceller = tendril::spawn([&] {
      tendril::sleep_for(20ms);
      ts[1].cancel();
    });
    CHECK_THROWS_AS(tendril::gather(ts), tendril::task_cancelled);
    CHECK(ts[1].cancelled());
    CHECK_FALSE(ts[0].done());  // not held up by the task still running
    release.set();
    CHECK(ts[0].get() == 1);
    canceller.join();
  });
  tendril::run([] {  // the tuple form too
    auto a = tendril::spawn([] {
      tendril::sleep_for(1h);
      return 1;
    });
    auto b = tendril::spawn([] { return std::string("b"); });
    tendril::yield();
    a.cancel();
    CHECK_THROWS_AS(tendril::gather(a, b), tendril::task_cancelled);
  });
}

TEST_CASE("gather_settled returns an outcome per task (return_exceptions=True)") {
  capture_unhandled cap;
  tendril::run([] {
    std::vector<tendril::task<int>> ts{sleeper(60, 1), failer(20, "bad"), sleeper(40, 3)};
    auto rs = tendril::gather_settled(ts);
    REQUIRE(rs.size() == 3);
    CHECK(rs[0].ok());
    CHECK(*rs[0].value == 1);
    CHECK_FALSE(rs[1].ok());
    CHECK_FALSE(rs[1].value.has_value());
    CHECK_THROWS_WITH(rs[1].get(), "bad");
    CHECK(rs[2].get() == 3);
    for (auto& t : ts) CHECK(t.done());
  });
  CHECK(cap.reports.empty());  // the errors were retrieved
}

TEST_CASE("gather_settled reports a cancelled task as task_cancelled") {
  tendril::run([] {
    std::vector<tendril::task<void>> ts;
    ts.push_back(tendril::spawn([] { tendril::sleep_for(1h); }));
    ts.push_back(tendril::spawn([] {}));
    tendril::yield();
    ts[0].cancel();
    auto rs = tendril::gather_settled(ts);
    CHECK_THROWS_AS(rs[0].get(), tendril::task_cancelled);
    CHECK(rs[1].ok());
  });
}

TEST_CASE("wait with a timeout returns empty done and every task pending (seed 004 example 2)") {
  tendril::run([] {
    std::vector<tendril::task<int>> ts{sleeper(300, 1), sleeper(300, 2)};
    stopwatch sw;
    auto [done, pending] = tendril::wait(ts, 100ms);
    CHECK(sw.elapsed() >= 100ms);
    CHECK(done.empty());
    REQUIRE(pending.size() == 2);
    CHECK(pending[0] == ts[0]);
    CHECK(pending[1] == ts[1]);
    CHECK_FALSE(ts[0].cancelled());  // wait() does not cancel on timeout
    auto all = tendril::wait(ts);
    CHECK(all.done.size() == 2);
    CHECK(all.pending.empty());
    CHECK(ts[0].get() + ts[1].get() == 3);
  });
}

TEST_CASE("wait with all_completed waits for every task, never throwing their errors") {
  capture_unhandled cap;
  tendril::run([] {
    std::vector<tendril::task<int>> ts{sleeper(30, 1), failer(10, "x"), sleeper(60, 3)};
    stopwatch sw;
    auto r = tendril::wait(ts);
    CHECK(sw.elapsed() >= 60ms);
    CHECK(r.done.size() == 3);
    CHECK(r.pending.empty());
    CHECK(ts[1].exception() != nullptr);
  });
}

TEST_CASE("wait with first_completed returns as soon as one finishes") {
  tendril::run([] {
    std::vector<tendril::task<int>> ts{sleeper(400, 1), sleeper(40, 2), sleeper(300, 3)};
    stopwatch sw;
    auto r = tendril::wait(ts, std::nullopt, tendril::return_when::first_completed);
    CHECK(sw.elapsed() >= 40ms);
    REQUIRE(r.done.size() == 1);
    CHECK(r.done[0] == ts[1]);
    CHECK(r.done[0].get() == 2);
    CHECK(r.pending.size() == 2);
    CHECK_FALSE(ts[0].done());
  });
}

TEST_CASE("wait with first_exception returns at the first failure, or when all complete") {
  capture_unhandled cap;
  tendril::run([] {
    std::vector<tendril::task<int>> ts{sleeper(400, 1), sleeper(20, 2), failer(60, "boom")};
    stopwatch sw;
    auto r = tendril::wait(ts, std::nullopt, tendril::return_when::first_exception);
    CHECK(sw.elapsed() >= 60ms);
    CHECK(r.done.size() == 2);  // the quick success and the failure
    CHECK(r.pending.size() == 1);
    CHECK(r.pending[0] == ts[0]);
    CHECK_THROWS_WITH(ts[2].get(), "boom");

    std::vector<tendril::task<int>> ok{sleeper(20, 1), sleeper(40, 2)};
    auto r2 = tendril::wait(ok, std::nullopt, tendril::return_when::first_exception);
    CHECK(r2.done.size() == 2);
    CHECK(r2.pending.empty());
  });
}

TEST_CASE("wait on already finished tasks returns at once") {
  tendril::run([] {
    std::vector<tendril::task<int>> ts{sleeper(0, 1), sleeper(0, 2)};
    for (auto& t : ts) t.join();
    auto r = tendril::wait(ts, 1s, tendril::return_when::first_completed);
    CHECK(r.done.size() == 2);
  });
}

TEST_CASE("wait and gather leave nothing behind on tasks that are still running (a polling loop does not leak)") {
  tendril::run([] {
    tendril::event stop;
    std::vector<tendril::task<void>> ts;
    for (int i = 0; i < 2; ++i) ts.push_back(tendril::spawn([&] { stop.wait(); }));
    auto poll_rounds = [&](int n) {
      for (int i = 0; i < n; ++i) {
        auto r = tendril::wait(ts, 0ms, tendril::return_when::first_completed);
        REQUIRE(r.pending.size() == 2);
      }
    };
    poll_rounds(100);  // warm up the allocator
    const std::size_t before = ::mallinfo2().uordblks;
    poll_rounds(under_valgrind() || under_asan() ? 1000 : 40000);
    const std::size_t after = ::mallinfo2().uordblks;
    // Each wait() used to leave a done callback (and the counter it holds) on every task it watched, until the
    // task finished: over 60 bytes per task per call, 5 MB here. malloc's statistics are not meaningful
    // under valgrind or ASan, which replace malloc.
    if (!under_valgrind() && !under_asan()) CHECK(after < before + 1024 * 1024);
    stop.set();
    for (auto& t : ts) t.join();
  });
}
