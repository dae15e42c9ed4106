// Tasks and the C++ runtime: per-task exception state, and greenlets inside tasks.
#include <doctest/doctest.h>

#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "helpers.hpp"
#include "tendril/generator.hpp"
#include "tendril/greenlet.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/sync.hpp"

using namespace sched_test;

namespace {
struct error_a : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct error_b : std::runtime_error {
  using std::runtime_error::runtime_error;
};
std::string rethrown() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "other";
  }
}
std::string what_of(std::exception_ptr e) {
  if (!e) return "none";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "other";
  }
}
}  // namespace

// ---- exception state ---------------------------------------------------------------------------------------------

TEST_CASE("a task sleeping inside a catch block keeps its exception while other tasks throw and catch") {
  tendril::run([] {
    std::string current_after, rethrown_after;
    std::vector<std::string> others_saw;
    auto sleeper = tendril::spawn([&] {
      try {
        throw error_a("the sleeper's own");
      } catch (...) {
        tendril::sleep_for(60ms);  // others throw and catch meanwhile
        current_after = what_of(std::current_exception());
        rethrown_after = rethrown();
        throw;  // rethrows the original
      }
    });
    std::vector<tendril::task<void>> others;
    for (int i = 0; i < 3; ++i) {
      others.push_back(tendril::spawn([&, i] {
        for (int k = 0; k < 3; ++k) {
          try {
            throw error_b("other " + std::to_string(i));
          } catch (...) {
            tendril::sleep_for(5ms);  // also suspended inside a catch block
            others_saw.push_back(rethrown());
          }
        }
      }));
    }
    for (auto& t : others) t.join();
    sleeper.join();
    CHECK(current_after == "the sleeper's own");
    CHECK(rethrown_after == "the sleeper's own");
    CHECK_THROWS_WITH_AS(sleeper.get(), "the sleeper's own", error_a);
    REQUIRE(others_saw.size() == 9);
    for (std::size_t k = 0; k < others_saw.size(); ++k) {
      CHECK(others_saw[k].rfind("other ", 0) == 0);
    }
    // Each other task saw its own exception, not a neighbour's.
    int per_task[3] = {0, 0, 0};
    for (auto& s : others_saw) per_task[s.back() - '0']++;
    CHECK(per_task[0] == 3);
    CHECK(per_task[1] == 3);
    CHECK(per_task[2] == 3);
  });
}

TEST_CASE("a new task starts with no current exception, even when spawned from a catch block") {
  tendril::run([] {
    bool clean = false;
    try {
      throw error_a("spawner's");
    } catch (...) {
      auto t = tendril::spawn([&] { clean = !std::current_exception() && std::uncaught_exceptions() == 0; });
      t.join();
      CHECK(rethrown() == "spawner's");
    }
    CHECK(clean);
  });
}

TEST_CASE("the main context's exception state survives tasks throwing while it waits") {
  try {
    throw error_b("main's");
  } catch (...) {
    auto t = tendril::spawn([] {
      try {
        throw error_a("task's");
      } catch (...) {
        tendril::sleep_for(5ms);
      }
    });
    t.join();
    CHECK(what_of(std::current_exception()) == "main's");
  }
}

// ---- greenlets inside tasks --------------------------------------------------------------------------------------

TEST_CASE("each task has its own main greenlet") {
  tendril::run([] {
    std::optional<tendril::greenlet> ga, gb;
    bool a_main = false, b_main = false;
    auto a = tendril::spawn([&] {
      ga = tendril::greenlet::current();
      a_main = ga->is_main();
      tendril::sleep_for(10ms);
      ga.reset();
    });
    auto b = tendril::spawn([&] {
      gb = tendril::greenlet::current();
      b_main = gb->is_main();
      tendril::yield();
      CHECK(ga.has_value());
      if (ga) CHECK_FALSE(*ga == *gb);
      CHECK_FALSE(tendril::greenlet::current() == tendril::greenlet());
      CHECK(*gb == tendril::greenlet::current());
      gb.reset();
    });
    a.join();
    b.join();
    CHECK(a_main);
    CHECK(b_main);
  });
}

TEST_CASE("a greenlet created in task A cannot be switched to from task B") {
  tendril::run([] {
    std::optional<tendril::greenlet> g;
    tendril::event created, tried;
    bool ran_in_b = false;
    auto a = tendril::spawn([&] {
      g.emplace([&] { ran_in_b = true; });
      created.set();
      tried.wait();
      g.reset();  // dropped in its own task: unstarted, nothing to kill
    });
    auto b = tendril::spawn([&] {
      created.wait();
      bool threw = false;
      try {
        g->switch_();
      } catch (const tendril::greenlet_error&) {
        threw = true;
      }
      tried.set();
      return threw;
    });
    CHECK(b.get());
    a.join();
    CHECK_FALSE(ran_in_b);
  });
}

TEST_CASE("throw_, set_parent and a parent from another task are refused with greenlet_error") {
  tendril::run([] {
    std::optional<tendril::greenlet> in_a;
    tendril::event created, tried;
    auto a = tendril::spawn([&] {
      in_a.emplace([] { tendril::greenlet::current().parent()->switch_(); });
      in_a->switch_();  // started, suspended in task A
      created.set();
      tried.wait();
      in_a->switch_();  // let it finish in its own task
      CHECK(in_a->dead());
      in_a.reset();
    });
    auto b = tendril::spawn([&] {
      created.wait();
      int refused = 0;
      try {
        in_a->throw_();
      } catch (const tendril::greenlet_error&) {
        ++refused;
      }
      tendril::greenlet mine([] {});
      try {
        mine.set_parent(*in_a);
      } catch (const tendril::greenlet_error&) {
        ++refused;
      }
      try {
        tendril::greenlet child([] {}, *in_a);
      } catch (const tendril::greenlet_error&) {
        ++refused;
      }
      CHECK(mine.parent() == tendril::greenlet::current());  // unchanged
      tried.set();
      return refused;
    });
    CHECK(b.get() == 3);
    a.get();
  });
}

TEST_CASE("a blocking call inside a greenlet of a task suspends just that task") {
  tendril::run([] {
    std::vector<std::string> log;
    auto a = tendril::spawn([&] {
      tendril::greenlet child([&] {
        log.push_back("greenlet sleeps");
        tendril::sleep_for(50ms);
        log.push_back("greenlet wakes");
        return 5;
      });
      tendril::value v = child.switch_();
      log.push_back("back in task A");
      return v.as<int>();
    });
    auto b = tendril::spawn([&] {
      for (int i = 0; i < 3; ++i) {
        log.push_back("B tick");
        tendril::sleep_for(5ms);
      }
    });
    CHECK(a.get() == 5);
    b.join();
    std::vector<std::string> expected{"greenlet sleeps", "B tick",         "B tick",
                                      "B tick",          "greenlet wakes", "back in task A"};
    CHECK(log == expected);
  });
}

TEST_CASE("a task cancelled while a greenlet of it is blocked unwinds the greenlet and the task") {
  tendril::run([] {
    bool greenlet_unwound = false, task_unwound = false;
    auto t = tendril::spawn([&] {
      on_destroy g(task_unwound);
      tendril::greenlet child([&] {
        on_destroy gg(greenlet_unwound);
        tendril::sleep_for(1h);
      });
      child.switch_();
    });
    tendril::yield();
    t.cancel();
    t.join();
    CHECK(t.cancelled());
    CHECK(greenlet_unwound);
    CHECK(task_unwound);
  });
}

TEST_CASE("a generator consumed inside a task, its body sleeping between values") {
  tendril::run([] {
    int ticks = 0;
    auto ticker = tendril::spawn([&] {
      for (int i = 0; i < 4; ++i) {
        tendril::sleep_for(3ms);
        ++ticks;
      }
    });
    auto consumer = tendril::spawn([] {
      tendril::generator<int> gen([](tendril::yielder<int>& yield) {
        for (int i = 1; i <= 3; ++i) {
          tendril::sleep_for(10ms);
          yield(i);
        }
      });
      int sum = 0;
      for (int v : gen) sum += v;
      return sum;
    });
    CHECK(consumer.get() == 6);
    ticker.join();
    CHECK(ticks == 4);
  });
}

TEST_CASE("timeout scopes of a generator body and its consumer that close out of order leave no stale scope") {
  tendril::run([] {
    // The body opens a scope and yields with it open; the consumer opens its own around next() and closes it
    // before the body closes its: the scopes of one task are not strictly nested.
    tendril::generator<int> gen([](tendril::yielder<int>& yield) {
      tendril::timeout body_scope(10s);
      yield(1);
      yield(2);
    });
    std::optional<tendril::timeout> consumer_scope;
    consumer_scope.emplace(20ms);
    CHECK(gen.next() == 1);  // the body's scope is now the innermost one, the consumer's outside it
    consumer_scope.reset();  // the consumer's 20 ms scope is closed
    CHECK(gen.next() == 2);
    CHECK_FALSE(gen.next().has_value());  // the body's scope closes
    // No scope is open any more: sleeping past the closed 20 ms scope's deadline must not time out.
    CHECK_NOTHROW(tendril::sleep_for(60ms));
    // A scope opened afterwards works as usual.
    {
      tendril::timeout again(20ms);
      CHECK_THROWS_AS(tendril::sleep_for(10s), tendril::timeout_error);
      CHECK(again.expired());
    }
    CHECK_NOTHROW(tendril::sleep_for(1ms));
  });
}
