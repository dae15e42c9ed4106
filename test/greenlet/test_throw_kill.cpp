// throw_() and kill-on-last-handle, ported from greenlet's test_throw.py and the dealloc tests of test_greenlet.py.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"
#include "tendril/greenlet.hpp"

using tendril::greenlet;
using tendril::greenlet_error;
using tendril::greenlet_exit;
using tendril::value;
using namespace tendril_test;

namespace {

// Counts its destructions: proof that a killed greenlet's stack was unwound.
struct destructor_counter {
  int* count;
  explicit destructor_counter(int& c) : count(&c) {}
  destructor_counter(const destructor_counter&) = delete;
  destructor_counter& operator=(const destructor_counter&) = delete;
  ~destructor_counter() { ++*count; }
};

template <class E>
std::exception_ptr make(const char* what) {
  return std::make_exception_ptr(E(what));
}

// Switches to the parent and records how control came back: "killed" (greenlet_exit, rethrown so the greenlet
// dies) or "resumed".
void wait_logging(std::vector<std::string>& log) {
  try {
    switch_to_parent();
  } catch (const greenlet_exit&) {
    log.push_back("killed");
    throw;
  }
  log.push_back("resumed");
}

}  // namespace

TEST_SUITE("throw_kill") {

TEST_CASE("throw_ into a suspended greenlet raises at its pending switch (test_class, test_val)") {
  auto f = [] {
    try {
      switch_to_parent("ok");
    } catch (const std::runtime_error& e) {
      switch_to_parent(std::string("ok: ") + e.what());
      return;
    }
    switch_to_parent("fail");
  };
  greenlet g(f);
  CHECK(g.switch_().as<std::string>() == "ok");
  CHECK(g.throw_(make<std::runtime_error>("ciao")).as<std::string>() == "ok: ciao");
  CHECK_FALSE(g.dead());
  CHECK(g.switch_().empty());  // returns: its parent gets nothing
  CHECK(g.dead());
}

TEST_CASE("throw_() kills: the greenlet_exit comes back as a value; throwing into the dead greenlet again too") {
  int unwound = 0;
  greenlet g([&] {
    destructor_counter c(unwound);
    switch_to_parent("ok");
    switch_to_parent("fail");
  });
  CHECK(g.switch_().as<std::string>() == "ok");
  value res = g.throw_();
  CHECK(res.holds<greenlet_exit>());
  CHECK(g.dead());
  CHECK(unwound == 1);
  res = g.throw_();  // immediately eaten by the already-dead greenlet
  CHECK(res.holds<greenlet_exit>());
  res = g.throw_(std::make_exception_ptr(greenlet_exit()));
  CHECK(res.holds<greenlet_exit>());
  CHECK(unwound == 1);
}

TEST_CASE("throw_ into an unstarted greenlet: it dies without running, the exception is raised in its parent") {
  bool ran = false;
  SUBCASE("the parent is the caller") {
    greenlet g([&] { ran = true; });
    CHECK_THROWS_AS(g.throw_(make<some_error>("x")), some_error);
    CHECK_FALSE(ran);
    CHECK(g.dead());
    CHECK(g.started());
    CHECK_THROWS_AS(g.throw_(make<some_error>("again")), some_error);  // now dead: to the first live ancestor
  }
  SUBCASE("greenlet_exit: the parent receives it as a value") {
    greenlet g([&] { ran = true; });
    value v = g.throw_();
    CHECK(v.holds<greenlet_exit>());
    CHECK_FALSE(ran);
    CHECK(g.dead());
  }
  SUBCASE("the parent is a suspended greenlet: it receives the exception at its pending switch") {
    greenlet catcher([] {
      try {
        switch_to_parent("ready");
      } catch (const index_error&) {
        return std::string("caught");
      }
      return std::string("normal exit");
    });
    CHECK(catcher.switch_().as<std::string>() == "ready");
    greenlet g([&] { ran = true; }, catcher);
    CHECK(g.throw_(make<index_error>("x")).as<std::string>() == "caught");
    CHECK_FALSE(ran);
    CHECK(g.dead());
    CHECK(catcher.dead());
  }
}

TEST_CASE("throw_ into a dead greenlet: exceptions other than greenlet_exit go to the first live ancestor") {
  greenlet dead([] {});
  dead.switch_();
  REQUIRE(dead.dead());
  SUBCASE("the ancestor is the caller") { CHECK_THROWS_AS(dead.throw_(make<some_error>("x")), some_error); }
  SUBCASE("the ancestor is suspended elsewhere") {
    greenlet catcher([] {
      try {
        switch_to_parent("ready");
      } catch (const some_error& e) {
        return std::string("caught ") + e.what();
      }
      return std::string("normal exit");
    });
    catcher.switch_();
    dead.set_parent(catcher);
    CHECK(dead.throw_(make<some_error>("late")).as<std::string>() == "caught late");
    CHECK(catcher.dead());
  }
}

TEST_CASE("a throw goes to the original parent, not to the thrower (test_throw_goes_to_original_parent)") {
  greenlet main = greenlet::current();
  auto f1 = [&main]() -> std::string {
    try {
      main.switch_("f1 ready to catch");
    } catch (const index_error&) {
      return "caught";
    }
    return "normal exit";
  };
  auto f2 = [&main] { main.switch_("from f2"); };

  SUBCASE("both unstarted") {
    greenlet g1(f1);
    greenlet g2(f2, g1);
    CHECK_THROWS_AS(g2.throw_(make<index_error>("x")), index_error);
    CHECK(g2.dead());
    CHECK(g1.dead());
  }
  SUBCASE("the parent is waiting to catch, the child unstarted") {
    greenlet g1(f1);
    greenlet g2(f2, g1);
    CHECK(g1.switch_().as<std::string>() == "f1 ready to catch");
    CHECK(g2.throw_(make<index_error>("x")).as<std::string>() == "caught");
    CHECK(g2.dead());
    CHECK(g1.dead());
  }
  SUBCASE("both suspended") {
    greenlet g1(f1);
    greenlet g2(f2, g1);
    CHECK(g1.switch_().as<std::string>() == "f1 ready to catch");
    CHECK(g2.switch_().as<std::string>() == "from f2");
    CHECK(g2.throw_(make<index_error>("x")).as<std::string>() == "caught");
    CHECK(g2.dead());
    CHECK(g1.dead());
  }
  SUBCASE("the thrower is a third greenlet: the parent catches, and its result goes to *its* parent") {
    greenlet g1(f1);
    greenlet g2(f2, g1);
    CHECK(g1.switch_().as<std::string>() == "f1 ready to catch");
    CHECK(g2.switch_().as<std::string>() == "from f2");
    bool thrower_resumed = false;
    greenlet thrower([&] {
      g2.throw_(make<index_error>("x"));
      thrower_resumed = true;
    });
    // g2 doesn't catch: g1 (its parent) does and returns "caught" into main, its own parent; the thrower stays
    // suspended in throw_().
    CHECK(thrower.switch_().as<std::string>() == "caught");
    CHECK_FALSE(thrower_resumed);
    CHECK(thrower.active());
    CHECK(g1.dead());
    CHECK(g2.dead());
  }
}

TEST_CASE("throw_ with an empty exception_ptr or on a moved-from handle throws greenlet_error") {
  greenlet g([] {});
  CHECK_THROWS_AS(g.throw_(std::exception_ptr()), greenlet_error);
  CHECK_FALSE(g.started());
  greenlet moved = std::move(g);
  CHECK_THROWS_AS(g.switch_(), greenlet_error);  // NOLINT(bugprone-use-after-move): that's the point
  CHECK_THROWS_AS(g.throw_(), greenlet_error);
  CHECK_FALSE(moved.started());
}

TEST_CASE("dropping the last handle kills a suspended greenlet: greenlet_exit at its switch (test_dealloc)") {
  std::vector<std::string> seen;
  std::optional<greenlet> g1(std::in_place, [](std::vector<std::string>* s) {
    try {
      switch_to_parent();
    } catch (const greenlet_exit&) {
      s->emplace_back("greenlet_exit");
      throw;
    }
  });
  std::optional<greenlet> g2(std::in_place, *g1);  // a second handle to the same greenlet
  g1->switch_(&seen);
  g1.reset();
  CHECK(seen.empty());  // g2 still refers to it
  g2.reset();
  CHECK(seen == std::vector<std::string>{"greenlet_exit"});
}

TEST_CASE("a killed greenlet's destructors run, and the dropping greenlet continues with what it was doing") {
  int destroyed = 0;
  int after_switch = 0;
  {
    greenlet g([&] {
      destructor_counter c(destroyed);
      switch_to_parent();
      ++after_switch;
    });
    g.switch_();
    CHECK(destroyed == 0);
  }
  CHECK(destroyed == 1);
  CHECK(after_switch == 0);

  // An unstarted or finished greenlet is simply freed; its run never runs.
  bool ran = false;
  {
    greenlet unstarted([&] { ran = true; });
  }
  CHECK_FALSE(ran);

  // Killed from inside another greenlet: the kill returns there, not to main.
  std::vector<std::string> log;
  greenlet outer([&] {
    {
      greenlet inner([&] {
        destructor_counter c(destroyed);
        switch_to_parent();
      });
      inner.switch_();
      log.emplace_back("inner suspended");
    }
    log.emplace_back("inner dropped");
    return 1;
  });
  CHECK(outer.switch_().as<int>() == 1);
  CHECK(log == std::vector<std::string>{"inner suspended", "inner dropped"});
  CHECK(destroyed == 2);
}

TEST_CASE(
    "the killed greenlet's parent is the dropping greenlet during the kill and is restored afterwards "
    "(test_parent_restored_on_kill)") {
  greenlet hub([] {});
  greenlet main = greenlet::current();
  std::vector<greenlet> result;
  int unwound = 0;
  auto worker = [&] {
    destructor_counter c(unwound);
    try {
      main.switch_();  // wait to be killed
    } catch (const greenlet_exit&) {
      // Resurrect: take a new handle to ourselves, then switch to the parent we were created with.
      result.push_back(*greenlet::current().parent());
      result.push_back(greenlet::current());
      hub.switch_();
    }
  };
  std::optional<greenlet> g(std::in_place, worker, hub);
  g->switch_();
  stderr_capture capture;
  g.reset();  // the only handle: greenlet_exit is thrown into it with its parent set to us (main)
  REQUIRE(result.size() == 2);
  CHECK(result[0] == main);
  CHECK(result[1].parent() == hub);  // restored after the kill
  CHECK(hub.dead());
  CHECK(result[1].active());  // it resurrected itself and is suspended in hub.switch_()
  CHECK(unwound == 0);
  // Resurrected (it holds a new handle to itself), as in Python: not reported, not leaked.
  CHECK(capture.finish().find("refused to die") == std::string::npos);
  result.clear();  // the last handle again: this time greenlet_exit escapes at hub.switch_() and it dies
  CHECK(unwound == 1);
}

TEST_CASE(
    "a killed greenlet that throws something else: the error is reported on stderr, not raised "
    "(test_dealloc_catches_GreenletExit_throws_other)") {
  std::optional<greenlet> g(std::in_place, [] {
    try {
      switch_to_parent();
    } catch (const greenlet_exit&) {
      throw some_error("SomeError raised while dying");
    }
  });
  g->switch_();
  stderr_capture capture;
  CHECK_NOTHROW(g.reset());
  std::string err = capture.finish();
  CHECK(err.find("SomeError raised while dying") != std::string::npos);
  CHECK(err.find("killed") != std::string::npos);
}

TEST_CASE("a greenlet that refuses to die is reported on stderr and leaked, never resumed silently") {
  [[maybe_unused]] lsan_disabled_scope leak_on_purpose;
  int resumed = 0;
  int kill_seen = 0;
  std::optional<greenlet> g(std::in_place, [&] {
    for (;;) {
      try {
        switch_to_parent();
        ++resumed;
      } catch (const greenlet_exit&) {
        ++kill_seen;  // and loop: switch back to the parent without dying
      }
    }
  });
  g->switch_();
  stderr_capture capture;
  g.reset();
  std::string err = capture.finish();
  CHECK(kill_seen == 1);
  CHECK(err.find("refused to die") != std::string::npos);
  // Creating and running other greenlets never resumes it.
  for (int i = 0; i < 3; ++i) greenlet([] {}).switch_();
  greenlet::current();
  CHECK(resumed == 0);
  CHECK(kill_seen == 1);
}

// The running greenlet holds no reference to itself; these check what happens when its last handle goes while it
// runs. Where the test drops `holder` from inside the greenlet, the outer `holder->switch_()` call outlives the
// handle object it was called on, which is fine: switch_ touches nothing of the handle after switching.
TEST_CASE(
    "the last handle of the running greenlet dropped by itself: it runs on, and is killed when it switches away") {
  std::optional<greenlet> holder;
  int unwound = 0;
  std::vector<std::string> log;
  holder.emplace([&] {
    destructor_counter c(unwound);
    holder.reset();  // the last handle goes while this greenlet runs
    log.push_back("running on");
    wait_logging(log);
  });
  CHECK(holder->switch_().empty());  // the value of the greenlet's switch_to_parent(), delivered before the kill
  CHECK(log == std::vector<std::string>{"running on", "killed"});
  CHECK(unwound == 1);
}

TEST_CASE("the running greenlet drops its last handle and returns: it is freed, its result delivered") {
  std::optional<greenlet> holder;
  int unwound = 0;
  holder.emplace([&] {
    destructor_counter c(unwound);
    holder.reset();
    return 5;
  });
  CHECK(holder->switch_().as<int>() == 5);
  CHECK(unwound == 1);
}

TEST_CASE("the running greenlet drops its last handle, then takes a new one: it lives on (resurrection)") {
  std::optional<greenlet> holder;
  std::optional<greenlet> again;
  int unwound = 0;
  std::vector<std::string> log;
  holder.emplace([&] {
    destructor_counter c(unwound);
    holder.reset();
    again.emplace(greenlet::current());
    switch_to_parent();
    log.push_back("resumed");
    switch_to_parent();
    log.push_back("never");
  });
  holder->switch_();
  CHECK(unwound == 0);
  REQUIRE(again->active());
  again->switch_();
  CHECK(log == std::vector<std::string>{"resumed"});
  again.reset();  // now suspended: the last handle kills it
  CHECK(unwound == 1);
  CHECK(log == std::vector<std::string>{"resumed"});
}

TEST_CASE("the last handle of the running greenlet dropped on another thread: killed when it switches away") {
  std::optional<greenlet> holder;
  int unwound = 0;
  std::vector<std::string> log;
  holder.emplace([&] {
    destructor_counter c(unwound);
    std::thread([h = std::move(*holder)]() mutable { greenlet last = std::move(h); }).join();
    log.push_back("dropped elsewhere");
    wait_logging(log);
  });
  holder->switch_();  // `holder` keeps a moved-from handle
  CHECK(log == std::vector<std::string>{"dropped elsewhere", "killed"});
  CHECK(unwound == 1);
}

TEST_CASE("the last handle of the running greenlet dropped on another thread, then it finishes: freed, not killed") {
  std::optional<greenlet> holder;
  int unwound = 0;
  holder.emplace([&] {
    destructor_counter c(unwound);
    std::thread([h = std::move(*holder)]() mutable { greenlet last = std::move(h); }).join();
    return 7;
  });
  CHECK(holder->switch_().as<int>() == 7);
  CHECK(unwound == 1);
  // The owner's next call frees the finished greenlet queued by the other thread (leak checkers would see it).
  CHECK(greenlet::current().is_main());
  CHECK(greenlet([] { return 1; }).switch_().as<int>() == 1);
}

}  // TEST_SUITE
