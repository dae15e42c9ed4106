// run(), thread exit, plain main()-style code, unhandled exceptions and misuse.
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "helpers.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/sync.hpp"

using namespace sched_test;

// ---- run() -----------------------------------------------------------------------------------------------------

TEST_CASE("run returns main's result") {
  CHECK(tendril::run([] { return std::string("result"); }) == "result");
  tendril::run([] {});  // void main
}

TEST_CASE("run rethrows main's exception") {
  CHECK_THROWS_WITH_AS(tendril::run([]() -> int { throw std::runtime_error("main failed"); }), "main failed",
                       std::runtime_error);
}

TEST_CASE("run cancels and joins every task main left behind") {
  bool d1 = false, d2 = false, d3 = false;
  tendril::task<void> a, b;
  tendril::task<int> c;
  bool spawned_while_unwinding_ran = false;
  tendril::task<void> spawned_while_unwinding;
  int r = tendril::run([&] {
    a = tendril::spawn([&] {
      on_destroy g(d1);
      tendril::sleep_for(1h);
    });
    b = tendril::spawn([&] {
      on_destroy g(d2);
      tendril::event never;
      never.wait();
    });
    c = tendril::spawn([&] {
      on_destroy g(d3);
      try {
        tendril::sleep_for(1h);
      } catch (const tendril::task_cancelled&) {
        spawned_while_unwinding = tendril::spawn([&] {
          tendril::sleep_for(10ms);
          spawned_while_unwinding_ran = true;
        });
        throw;
      }
      return 0;
    });
    tendril::yield();
    return 7;
  });
  CHECK(r == 7);
  CHECK(d1);
  CHECK(d2);
  CHECK(d3);
  CHECK(a.done());
  CHECK(b.done());
  CHECK(c.done());
  CHECK(a.cancelled());
  CHECK(b.cancelled());
  CHECK(c.cancelled());
  // A task spawned while unwinding is left behind too: run() cancels it as well (before it ever ran).
  CHECK(spawned_while_unwinding.done());
  CHECK(spawned_while_unwinding.cancelled());
  CHECK_FALSE(spawned_while_unwinding_ran);
}

TEST_CASE("run also cleans up after main throws") {
  bool destroyed = false;
  tendril::task<void> left;
  CHECK_THROWS_AS(tendril::run([&] {
                    left = tendril::spawn([&] {
                      on_destroy g(destroyed);
                      tendril::sleep_for(1h);
                    });
                    tendril::yield();
                    throw std::logic_error("oops");
                  }),
                  std::logic_error);
  CHECK(left.done());
  CHECK(destroyed);
}

TEST_CASE("a timeout scope of the caller that expires during run(): its tasks are cancelled and joined first") {
  bool main_unwound = false;
  bool left_unwound = false;
  tendril::task<void> left;
  {
    tendril::timeout scope(30ms);  // the calling (main) context's scope, around the whole run()
    CHECK_THROWS_AS(tendril::run([&] {
                      left = tendril::spawn([&] {
                        on_destroy g(left_unwound);
                        tendril::sleep_for(1h);
                      });
                      on_destroy g(main_unwound);
                      tendril::sleep_for(1h);
                    }),
                    tendril::timeout_error);
    CHECK(scope.expired());
  }
  // run() did not leave main or the task it spawned running behind it.
  CHECK(main_unwound);
  REQUIRE(left.valid());
  CHECK(left.done());
  CHECK(left_unwound);
}

TEST_CASE("run does not hang on a task blocked forever on a future that is never set") {
  tendril::promise<int> p;  // kept alive: the future is never broken
  stopwatch sw;
  tendril::task<int> t;
  tendril::run([&] {
    t = tendril::spawn([&] { return p.get_future().get(); });
    tendril::sleep_for(10ms);
  });
  CHECK(t.done());
  CHECK(t.cancelled());
  CHECK(sw.elapsed() < generous(5s));
}

TEST_CASE("run waits for main but does not wait for left-behind tasks to finish by themselves") {
  bool finished = false;
  stopwatch sw;
  tendril::run([&] {
    tendril::spawn([&] {
      tendril::sleep_for(10s);
      finished = true;
    });
  });
  CHECK_FALSE(finished);
  CHECK(sw.elapsed() < generous(5s));
}

TEST_CASE("run inside a task throws usage_error") {
  tendril::run([] {
    CHECK_THROWS_AS(tendril::run([] { return 1; }), tendril::usage_error);
    auto t = tendril::spawn([] { tendril::run([] {}); });
    CHECK_THROWS_AS(t.get(), tendril::usage_error);
  });
}

TEST_CASE("run can be called repeatedly on a thread") {
  for (int i = 0; i < 3; ++i) {
    CHECK(tendril::run([i] {
            auto t = tendril::spawn([i] {
              tendril::sleep_for(1ms);
              return i;
            });
            return t.get();
          }) == i);
  }
}

// ---- thread exit and plain main()-style code ----------------------------------------------------------------------

TEST_CASE("thread exit does not hang on tasks blocked forever; their destructors run") {
  auto sleeping_destroyed = std::make_shared<std::atomic<bool>>(false);
  auto waiting_destroyed = std::make_shared<std::atomic<bool>>(false);
  struct flag_on_destroy {
    std::shared_ptr<std::atomic<bool>> f;
    ~flag_on_destroy() { *f = true; }
  };
  stopwatch sw;
  std::thread th([=] {
    tendril::spawn([=] {
      flag_on_destroy g{sleeping_destroyed};
      tendril::sleep_for(1h);
    });
    tendril::spawn([=] {
      flag_on_destroy g{waiting_destroyed};
      tendril::event never;
      never.wait();
    });
    tendril::yield();  // both are parked now
  });
  th.join();
  CHECK(*sleeping_destroyed);
  CHECK(*waiting_destroyed);
  CHECK(sw.elapsed() < generous(5s));
}

TEST_CASE("thread exit cancels tasks that never started") {
  auto ran = std::make_shared<std::atomic<bool>>(false);
  std::thread([=] { tendril::spawn([=] { *ran = true; }); }).join();
  CHECK_FALSE(*ran);
}

TEST_CASE("blocking calls work in plain thread code without run()") {
  int result = 0;
  long long slept_ms = 0;
  std::vector<std::string> log;
  std::thread([&] {
    stopwatch sw;
    tendril::sleep_for(50ms);
    slept_ms = sw.ms();
    auto t = tendril::spawn([&] {
      log.push_back("task");
      tendril::sleep_for(20ms);
      return 40;
    });
    log.push_back("main");
    result = t.get() + 2;
    tendril::event ev;
    auto setter = tendril::spawn([&] {
      tendril::sleep_for(10ms);
      ev.set();
    });
    ev.wait();
    setter.join();
    log.push_back("event");
  }).join();
  CHECK(slept_ms >= 50);
  CHECK(result == 42);
  CHECK(log == std::vector<std::string>{"main", "task", "event"});
}

TEST_CASE("the main thread's own context can block and run tasks without run()") {
  auto t = tendril::spawn([] {
    tendril::sleep_for(5ms);
    return 3;
  });
  CHECK(t.get() == 3);
}

// ---- unhandled exceptions ---------------------------------------------------------------------------------------

TEST_CASE("an exception in a task nobody awaits goes to the handler exactly once, with the task's name") {
  capture_unhandled cap;
  tendril::run([] {
    tendril::spawn([]() -> int { throw std::runtime_error("nobody listens"); }, {.name = "orphan"});
    tendril::sleep_for(20ms);
  });
  tendril::sleep_for(1ms);
  REQUIRE(cap.reports.size() == 1);
  CHECK(cap.reports[0].name == "orphan");
  CHECK(cap.reports[0].what == "nobody listens");
}

TEST_CASE("the report comes when the last handle goes, and never for a retrieved exception") {
  capture_unhandled cap;
  tendril::run([&] {
    auto t = tendril::spawn([] { throw std::runtime_error("kept"); }, {.name = "held"});
    t.join();
    CHECK(cap.reports.empty());  // a handle is still alive: someone may still look
    { auto copy = t; }
    CHECK(cap.reports.empty());
    t = {};  // the last handle
    REQUIRE(cap.reports.size() == 1);
    CHECK(cap.reports[0].name == "held");
  });
  CHECK(cap.reports.size() == 1);

  cap.reports.clear();
  tendril::run([] {
    auto t = tendril::spawn([] { throw std::runtime_error("seen"); });
    CHECK_THROWS_WITH(t.get(), "seen");
    auto u = tendril::spawn([] { throw std::runtime_error("inspected"); });
    u.join();
    CHECK(u.exception() != nullptr);
  });
  CHECK(cap.reports.empty());
}

TEST_CASE("an exception in a task never terminates the process, in a plain thread either") {
  capture_unhandled cap;
  std::thread([] {
    tendril::spawn([] { throw 42; }, {.name = "int thrower"});
    tendril::sleep_for(5ms);
  }).join();
  REQUIRE(cap.reports.size() == 1);
  CHECK(cap.reports[0].name == "int thrower");
}

TEST_CASE("the default handler is restored by an empty handler") {
  auto prev = tendril::set_unhandled_exception_handler({});
  auto mine = tendril::set_unhandled_exception_handler(prev);
  CHECK_FALSE(mine);  // what we installed: the empty (default) handler
}

TEST_CASE("an exception from a done callback goes to the handler") {
  capture_unhandled cap;
  tendril::run([] {
    auto t = tendril::spawn([] { return 1; }, {.name = "cb"});
    t.add_done_callback([](tendril::task<int>&) { throw std::runtime_error("callback failed"); });
    t.join();
  });
  REQUIRE(cap.reports.size() == 1);
  CHECK(cap.reports[0].name.find("cb") != std::string::npos);
  CHECK(cap.reports[0].what == "callback failed");
}

// ---- misuse --------------------------------------------------------------------------------------------------------

TEST_CASE("get() or join() on a task from inside itself is a usage error") {
  tendril::run([] {
    auto self = std::make_shared<tendril::task<int>>();
    auto joiner = std::make_shared<tendril::task<void>>();
    *self = tendril::spawn([self] {
      tendril::yield();
      try {
        self->get();
      } catch (const tendril::usage_error&) {
        return 1;
      }
      return 0;
    });
    *joiner = tendril::spawn([joiner] {
      tendril::yield();
      joiner->join();
    });
    CHECK(self->get() == 1);
    CHECK_THROWS_AS(joiner->get(), tendril::usage_error);
    *self = {};
    *joiner = {};
  });
}

TEST_CASE("set_value twice is a usage error") {
  tendril::promise<int> p;
  p.set_value(1);
  CHECK_THROWS_AS(p.set_value(2), tendril::usage_error);
  CHECK_THROWS_AS(p.set_exception(std::make_exception_ptr(std::runtime_error("x"))), tendril::usage_error);
  CHECK(p.get_future().get() == 1);
}

TEST_CASE("push into a closed channel throws channel_closed") {
  tendril::channel<int> ch(2);
  ch.close();
  CHECK_THROWS_AS(ch.push(1), tendril::channel_closed);
  CHECK_FALSE(ch.try_push(1));
}

TEST_CASE("a dropped promise breaks its future") {
  tendril::future<int> f;
  {
    tendril::promise<int> p;
    f = p.get_future();
    auto copy = p;  // copies share the state: only the last one breaks it
  }
  CHECK_THROWS_AS(f.get(), tendril::broken_promise);

  tendril::run([] {
    tendril::future<std::string> g;
    auto t = tendril::spawn([&] {
      tendril::promise<std::string> p;
      g = p.get_future();
      tendril::sleep_for(10ms);
    });  // p dies with the task while main waits
    tendril::yield();
    CHECK_THROWS_AS(g.get(), tendril::broken_promise);
  });
}

TEST_CASE("spawning from an exiting thread's teardown is refused, not hung") {
  // A task that spawns another while being cancelled at thread exit: the spawn is refused with usage_error,
  // or the new task is cancelled too; either way the thread finishes.
  stopwatch sw;
  std::thread([] {
    tendril::spawn([] {
      try {
        tendril::sleep_for(1h);
      } catch (const tendril::task_cancelled&) {
        try {
          tendril::spawn([] { tendril::sleep_for(1h); });
        } catch (const tendril::usage_error&) {
        }
        throw;
      }
    });
    tendril::yield();
  }).join();
  CHECK(sw.elapsed() < generous(5s));
}

TEST_CASE("an unhandled-exception handler may block: it runs on the finishing task's own fiber") {
  // The handler runs when the last handle to a failed task goes, which for a dropped task is at the end of its
  // own fiber. A blocking call there must suspend that fiber (it used to wait on the thread's main context).
  std::vector<std::string> log;
  auto previous = tendril::set_unhandled_exception_handler([&](const std::string& name, std::exception_ptr) {
    log.push_back("handler for " + name);
    tendril::sleep_for(5ms);
    log.push_back("handler woke");
  });
  const int r = tendril::run([&] {
    tendril::spawn(
        [] {
          tendril::sleep_for(10ms);
          throw std::runtime_error("dropped and failed");
        },
        {.name = "detached"});
    tendril::sleep_for(100ms);
    log.push_back("main done");
    return 7;
  });
  tendril::set_unhandled_exception_handler(previous);
  CHECK(r == 7);
  CHECK(log == std::vector<std::string>{"handler for detached", "handler woke", "main done"});
}
