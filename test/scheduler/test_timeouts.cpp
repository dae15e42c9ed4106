// Timeouts: wait_for(task, d) and the RAII tendril::timeout scope.
#include <doctest/doctest.h>

#include <string>
#include <thread>

#include "helpers.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/sync.hpp"
#include "tendril/wait.hpp"

using namespace sched_test;

TEST_CASE("wait_for returns the result of a task that finishes in time") {
  tendril::run([] {
    auto t = tendril::spawn([] {
      tendril::sleep_for(20ms);
      return 11;
    });
    CHECK(tendril::wait_for(t, 5s) == 11);
    CHECK_FALSE(t.cancelled());
  });
}

TEST_CASE("wait_for cancels the task on timeout and throws timeout_error") {
  tendril::run([] {
    bool destroyed = false;
    auto t = tendril::spawn(
        [&] {
          on_destroy g(destroyed);
          tendril::sleep_for(1h);
          return 1;
        },
        {.name = "slow"});
    stopwatch sw;
    CHECK_THROWS_AS(tendril::wait_for(t, 80ms), tendril::timeout_error);
    CHECK(sw.elapsed() >= 80ms);
    CHECK(sw.elapsed() < generous(2s));
    CHECK(t.done());
    CHECK(t.cancelled());
    CHECK(destroyed);
  });
}

TEST_CASE("wait_for's timeout_error names the task") {
  tendril::run([] {
    auto t = tendril::spawn([] { tendril::sleep_for(1h); }, {.name = "napper"});
    try {
      tendril::wait_for(t, 10ms);
      FAIL("no timeout");
    } catch (const tendril::timeout_error& e) {
      CHECK(std::string(e.what()).find("napper") != std::string::npos);
    }
  });
}

TEST_CASE("wait_for rethrows the task's own exception") {
  tendril::run([] {
    auto t = tendril::spawn([]() -> int { throw std::runtime_error("inner"); });
    CHECK_THROWS_WITH_AS(tendril::wait_for(t, 5s), "inner", std::runtime_error);
  });
}

TEST_CASE("a timeout scope throws timeout_error at the next suspension point") {
  tendril::run([] {
    bool after = false;
    stopwatch sw;
    tendril::timeout* seen = nullptr;
    try {
      tendril::timeout scope(60ms);
      seen = &scope;
      tendril::sleep_for(10s);
      after = true;
    } catch (const tendril::timeout_error&) {
    }
    CHECK_FALSE(after);
    CHECK(sw.elapsed() >= 60ms);
    CHECK(sw.elapsed() < generous(3s));
    (void)seen;
  });
}

TEST_CASE("a timeout scope fires in a blocking wait on an event") {
  tendril::run([] {
    tendril::event ev;
    tendril::promise<int> p;
    stopwatch sw;
    CHECK_THROWS_AS(
        [&] {
          tendril::timeout scope(50ms);
          ev.wait();
        }(),
        tendril::timeout_error);
    CHECK(sw.elapsed() >= 50ms);
    CHECK_THROWS_AS(
        [&] {
          tendril::timeout scope(30ms);
          p.get_future().get();
        }(),
        tendril::timeout_error);
  });
}

TEST_CASE("an expired scope raises when the task next suspends, even after a busy stretch") {
  tendril::run([] {
    tendril::timeout scope(20ms);
    stopwatch sw;
    while (sw.elapsed() < 40ms) {
    }  // busy: nothing can interrupt us here
    CHECK_FALSE(scope.expired());
    CHECK_THROWS_AS(tendril::sleep_for(0ms), tendril::timeout_error);
    CHECK(scope.expired());
  });
}

TEST_CASE("an expired scope raises at a yield()") {
  tendril::run([] {
    auto other = tendril::spawn([] {
      for (;;) tendril::yield();
    });
    stopwatch sw;
    bool raised = false;
    try {
      tendril::timeout scope(50ms);
      while (sw.elapsed() < generous(5s)) tendril::yield();
    } catch (const tendril::timeout_error&) {
      raised = true;
    }
    CHECK(raised);
    CHECK(sw.elapsed() >= 50ms);
    other.cancel();
  });
}

TEST_CASE("nested scopes: the earliest deadline wins (outer shorter)") {
  tendril::run([] {
    stopwatch sw;
    bool inner_expired = true, outer_expired = false;
    try {
      tendril::timeout outer(50ms);
      try {
        tendril::timeout inner(10s);
        try {
          tendril::sleep_for(1h);
        } catch (const tendril::timeout_error&) {
          inner_expired = inner.expired();
          outer_expired = outer.expired();
          throw;
        }
      } catch (const tendril::timeout_error&) {
        throw;
      }
    } catch (const tendril::timeout_error&) {
    }
    CHECK(outer_expired);
    CHECK_FALSE(inner_expired);
    CHECK(sw.elapsed() >= 50ms);
    CHECK(sw.elapsed() < generous(5s));
  });
}

TEST_CASE("nested scopes: the inner one fires first, the outer keeps running") {
  tendril::run([] {
    stopwatch sw;
    bool inner_fired = false, outer_fired = false;
    try {
      tendril::timeout outer(300ms);
      try {
        tendril::timeout inner(40ms);
        tendril::sleep_for(1h);
      } catch (const tendril::timeout_error&) {
        inner_fired = true;
      }
      CHECK_FALSE(outer.expired());
      CHECK(sw.elapsed() >= 40ms);
      tendril::sleep_for(1h);  // now the outer scope fires
    } catch (const tendril::timeout_error&) {
      outer_fired = true;
    }
    CHECK(inner_fired);
    CHECK(outer_fired);
    CHECK(sw.elapsed() >= 300ms);
  });
}

TEST_CASE("a scope that does not expire does not fire, now or later") {
  tendril::run([] {
    {
      tendril::timeout scope(80ms);
      tendril::sleep_for(10ms);
      CHECK_FALSE(scope.expired());
    }
    stopwatch sw;
    CHECK_NOTHROW(tendril::sleep_for(200ms));  // well past the closed scope's deadline
    CHECK(sw.elapsed() >= 200ms);
  });
}

TEST_CASE("a timed wait shorter than the scope times out normally") {
  tendril::run([] {
    tendril::timeout scope(5s);
    tendril::event ev;
    CHECK_FALSE(ev.wait_for(20ms));
    CHECK_FALSE(scope.expired());
  });
}

TEST_CASE("the expired() flag is set only for the scope that fired") {
  tendril::run([] {
    tendril::timeout a(10s);
    bool b_expired = false;
    try {
      tendril::timeout b(20ms);
      try {
        tendril::sleep_for(1h);
      } catch (...) {
        b_expired = b.expired();
        throw;
      }
    } catch (const tendril::timeout_error&) {
    }
    CHECK(b_expired);
    CHECK_FALSE(a.expired());
  });
}

TEST_CASE("a timeout scope works in the thread's main context, without run()") {
  std::thread([] {
    stopwatch sw;
    bool raised = false;
    try {
      tendril::timeout scope(40ms);
      tendril::sleep_for(1h);
    } catch (const tendril::timeout_error&) {
      raised = true;
    }
    CHECK(raised);
    CHECK(sw.elapsed() >= 40ms);
  }).join();
}

TEST_CASE("duration::max() as a timeout means no timeout, not an overflowed deadline in the past") {
  tendril::run([] {
    constexpr tendril::duration forever = tendril::duration::max();
    // A sleep that long is still asleep a little later, until cancelled.
    auto sleeper = tendril::spawn([] { tendril::sleep_for(forever); });
    tendril::sleep_for(20ms);
    CHECK_FALSE(sleeper.done());
    sleeper.cancel();
    sleeper.join();
    CHECK(sleeper.cancelled());

    auto quick = [] {
      return tendril::spawn([] {
        tendril::sleep_for(20ms);
        return 5;
      });
    };
    auto t1 = quick();
    CHECK(t1.wait_for(forever));
    auto t2 = quick();
    CHECK(tendril::wait_for(t2, forever) == 5);
    auto t3 = quick();
    {
      tendril::timeout scope(forever);
      CHECK(t3.get() == 5);
      CHECK_FALSE(scope.expired());
    }
    tendril::event ev;
    auto setter = tendril::spawn([&] {
      tendril::sleep_for(20ms);
      ev.set();
    });
    CHECK(ev.wait_for(forever));
    setter.join();
    tendril::promise<int> p;
    auto fulfil = tendril::spawn([&p] {
      tendril::sleep_for(20ms);
      p.set_value(7);
    });
    CHECK(p.get_future().wait_for(forever));
    fulfil.join();
    tendril::semaphore sem(0);
    auto releaser = tendril::spawn([&] {
      tendril::sleep_for(20ms);
      sem.release();
    });
    CHECK(sem.acquire_for(forever));
    releaser.join();
  });
}
