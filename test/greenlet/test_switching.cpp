// Switching rules, ported from greenlet's test_greenlet.py (the tests that make sense without Python objects).
#include <doctest/doctest.h>

#include <cfenv>
#include <cstdint>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "helpers.hpp"
#include "tendril/greenlet.hpp"

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

using tendril::greenlet;
using tendril::greenlet_error;
using tendril::greenlet_exit;
using tendril::kw;
using tendril::value;
using namespace tendril_test;

namespace {

// greenlet's _do_simple_test: a child that appends, switches to its parent, and appends again.
std::vector<int> simple_switching() {
  std::vector<int> lst;
  greenlet g([&] {
    lst.push_back(1);
    switch_to_parent();
    lst.push_back(3);
  });
  lst.push_back(0);
  g.switch_();
  lst.push_back(2);
  g.switch_();
  lst.push_back(4);
  return lst;
}

// greenlet's fmain: switch to the parent; whatever is raised there is recorded and re-raised; a normal resume
// raises some_error.
void fmain(std::vector<std::string>& seen) {
  try {
    switch_to_parent();
  } catch (const some_error&) {
    seen.emplace_back("some_error");
    throw;
  } catch (const key_error&) {
    seen.emplace_back("key_error");
    throw;
  } catch (const greenlet_exit&) {
    seen.emplace_back("greenlet_exit");
    throw;
  } catch (...) {
    seen.emplace_back("other");
    throw;
  }
  throw some_error("fmain resumed normally");
}

greenlet fmain_greenlet() {
  return greenlet([](std::vector<std::string>* seen) { fmain(*seen); });
}

}  // namespace

TEST_SUITE("switching") {

TEST_CASE("simple switching: a child runs, switches to its parent, and is resumed where it left off") {
  CHECK(simple_switching() == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("the first switch starts run with the switch's arguments; started/active/dead follow the lifecycle") {
  std::vector<std::string> got;
  greenlet g([&](int a, std::string b) {
    got.push_back(std::to_string(a) + b);
    value v = switch_to_parent(std::string("suspended"));
    got.push_back(v.as<std::string>());
    return 7;
  });
  CHECK_FALSE(g.started());
  CHECK_FALSE(g.active());
  CHECK_FALSE(static_cast<bool>(g));
  CHECK_FALSE(g.dead());
  CHECK(g.parent() == greenlet::current());

  value r = g.switch_(1, "x");
  CHECK(r.as<std::string>() == "suspended");
  CHECK(got == std::vector<std::string>{"1x"});
  CHECK(g.started());
  CHECK(g.active());
  CHECK(static_cast<bool>(g));
  CHECK_FALSE(g.dead());

  r = g.switch_("resumed");
  CHECK(r.as<int>() == 7);  // run's return value goes to the parent
  CHECK(got == std::vector<std::string>{"1x", "resumed"});
  CHECK(g.dead());
  CHECK(g.started());
  CHECK_FALSE(g.active());
  CHECK_FALSE(static_cast<bool>(g));
}

TEST_CASE("two children switch independently") {
  std::vector<int> lst;
  auto f = [&] {
    lst.push_back(1);
    switch_to_parent();
    lst.push_back(1);
    lst.push_back(1);
  };
  greenlet g(f);
  greenlet h(f);
  g.switch_();
  CHECK(lst.size() == 1);
  h.switch_();
  CHECK(lst.size() == 2);
  h.switch_();
  CHECK(lst.size() == 4);
  CHECK(h.dead());
  CHECK_FALSE(g.dead());
  g.switch_();
  CHECK(lst.size() == 6);
  CHECK(g.dead());
}

TEST_CASE("recursive children: a greenlet creates and runs its own child") {
  std::vector<std::string> lst;
  greenlet outer([&] {
    lst.emplace_back("a");
    greenlet inner([&] {
      lst.emplace_back("b");
      switch_to_parent();
      lst.emplace_back("never");
    });
    CHECK(inner.parent() == greenlet::current());  // default parent: the creator
    inner.switch_();
    lst.emplace_back("c");
  });
  outer.switch_();
  CHECK(lst == std::vector<std::string>{"a", "b", "c"});
  CHECK(outer.dead());
}

TEST_CASE("the main greenlet: no parent, is_main, current() is stable and == getcurrent()") {
  greenlet main = greenlet::current();
  CHECK(main.is_main());
  CHECK_FALSE(main.parent().has_value());
  CHECK(main == tendril::getcurrent());
  CHECK(main.started());
  CHECK(main.active());
  CHECK_FALSE(main.dead());
  greenlet seen_inside;
  greenlet g([&] {
    seen_inside = greenlet::current();
    CHECK_FALSE(greenlet::current().is_main());
  });
  g.switch_();
  CHECK(seen_inside == g);
  CHECK_FALSE(seen_inside == main);
  CHECK(greenlet::current() == main);
}

TEST_CASE("switching to the current greenlet returns the values at once") {
  value v = greenlet::current().switch_(1, "two", kw("three", 3));
  CHECK(v.size() == 2);
  CHECK(v.get<int>(0) == 1);
  CHECK(v.get<std::string>(1) == "two");
  CHECK(v.keyword<int>("three") == 3);

  greenlet g([] {
    greenlet me = greenlet::current();
    return me.switch_(42).as<int>() + 1;
  });
  CHECK(g.switch_().as<int>() == 43);
}

// switch_value() is hand-written assembly on x86-64 (lib/switch_x86_64.S): errors raised before the jump and
// exceptions raised after landing must unwind through it into the caller's frames, running their destructors.
TEST_CASE("errors and thrown-in exceptions unwind through switch_ into the caller, running destructors") {
  greenlet moved([] {});
  greenlet taker(std::move(moved));
  CHECK_THROWS_WITH_AS(moved.switch_(), "switch_() on a moved-from greenlet handle", greenlet_error);
  CHECK(greenlet::current().is_main());

  struct counted {
    int& n;
    ~counted() { ++n; }
  };
  int destroyed = 0;
  std::string caught;
  greenlet g([&] {
    try {
      counted outer{destroyed};
      long kept = 7;  // live in a callee-saved register or the frame across the switch
      switch_to_parent();
      caught = "no exception, kept " + std::to_string(kept);
    } catch (const some_error& e) {
      caught = e.what();
    }
    return 5;
  });
  g.switch_();
  CHECK(destroyed == 0);
  CHECK(g.throw_(std::make_exception_ptr(some_error("thrown in"))).as<int>() == 5);
  CHECK(destroyed == 1);
  CHECK(caught == "thrown in");
  CHECK(g.dead());
}

TEST_CASE("a lone value argument is passed on as it is: v = parent.switch_(v) echoes") {
  greenlet echo([](value v) {
    for (;;) v = switch_to_parent(v);
  });
  value v = echo.switch_(1, 2, kw("k", std::string("x")));
  CHECK(v.size() == 2);
  CHECK(v.get<int>(1) == 2);
  CHECK(v.keyword<std::string>("k") == "x");
  v = echo.switch_(v);
  CHECK(v.size() == 2);  // not nested into a value holding a value
  CHECK(v.get<int>(0) == 1);
  CHECK(v.keyword<std::string>("k") == "x");
}

TEST_CASE("an exception escaping a child is raised in its first live ancestor (test_exception)") {
  std::vector<std::string> seen;
  greenlet g1 = fmain_greenlet();
  greenlet g2 = fmain_greenlet();
  g1.switch_(&seen);
  g2.switch_(&seen);
  g2.set_parent(g1);
  CHECK(seen.empty());

  // g2 resumes normally and raises some_error; it goes to g1 (suspended in fmain), which records and re-raises
  // it; g1 dies and it reaches us, the first live ancestor.
  CHECK_THROWS_AS(g2.switch_(), some_error);
  CHECK(seen == std::vector<std::string>{"some_error"});
  CHECK(g1.dead());
  CHECK(g2.dead());

  // Both are dead now: switching to g2 lands in main with the same values.
  value v = g2.switch_();
  CHECK(v.empty());
  CHECK(seen == std::vector<std::string>{"some_error"});
  v = g2.switch_(25);
  CHECK(v.as<int>() == 25);
  CHECK(seen == std::vector<std::string>{"some_error"});
}

TEST_CASE("an exception raised in a child whose parent is suspended goes to that parent (test_send_exception)") {
  std::vector<std::string> seen;
  greenlet g1 = fmain_greenlet();
  g1.switch_(&seen);
  greenlet crasher([](std::string what) { throw key_error(what); }, g1);
  CHECK_THROWS_AS(crasher.switch_("boom"), key_error);
  CHECK(seen == std::vector<std::string>{"key_error"});
}

TEST_CASE("an exception escaping a greenlet never terminates the process: it reaches the parent") {
  // Not derived from std::exception, thrown through two levels of greenlets.
  bool outer_caught = false;
  bool inner_dead = false;
  greenlet outer([&] {
    greenlet inner([] { throw 42; });  // its parent is outer, its creator
    try {
      inner.switch_();
    } catch (int v) {
      outer_caught = v == 42;
    }
    inner_dead = inner.dead();
    throw std::string("from outer");
  });
  CHECK_THROWS_AS(outer.switch_(), std::string);
  CHECK(outer_caught);
  CHECK(inner_dead);
  CHECK(outer.dead());

  // With the parent set explicitly, a greenlet created elsewhere reports to that parent.
  greenlet catcher([] {
    try {
      switch_to_parent();
    } catch (double d) {
      return d;
    }
    return 0.0;
  });
  catcher.switch_();
  greenlet thrower([] { throw 2.5; }, catcher);
  CHECK(thrower.switch_().as<double>() == 2.5);
}

TEST_CASE("greenlet_exit escaping run is delivered to the parent as a value, not raised") {
  greenlet g([] { throw greenlet_exit(); });
  value v;
  CHECK_NOTHROW(v = g.switch_());
  CHECK(v.holds<greenlet_exit>());
  CHECK(g.dead());
}

TEST_CASE("switching to a dead greenlet goes to its first live ancestor with the same values") {
  SUBCASE("the ancestor is suspended") {
    greenlet g1([] {
      value v = switch_to_parent();  // parked; later resumed by the switch to the dead child
      return v;                      // hand what it got back to main
    });
    g1.switch_();
    greenlet child([] { return 1; });
    CHECK(child.switch_().as<int>() == 1);
    REQUIRE(child.dead());
    child.set_parent(g1);
    value v = child.switch_(7, "x");  // child is dead: g1 receives (7, "x") at its pending switch
    CHECK(v.size() == 2);
    CHECK(v.get<int>(0) == 7);
    CHECK(v.get<std::string>(1) == "x");
    CHECK(g1.dead());
  }
  SUBCASE("every ancestor is dead up to the caller (greenlet docs' inner/outer)") {
    std::vector<std::string> log;
    greenlet outer([&] {
      greenlet inner([&] { return 42; });
      log.push_back("got " + std::to_string(inner.switch_().as<int>()));
      value again = inner.switch_("ping");  // inner is dead; its parent is us: returns at once
      log.push_back("again " + again.as<std::string>());
      return inner;
    });
    value r = outer.switch_();
    CHECK(log == std::vector<std::string>{"got 42", "again ping"});
    greenlet inner = r.as<greenlet>();
    CHECK(inner.dead());
    CHECK(outer.dead());
    value v = inner.switch_(5);  // both dead: lands in main
    CHECK(v.as<int>() == 5);
  }
}

TEST_CASE("run returning into an unstarted parent starts the parent with the return value") {
  SUBCASE("the parent takes the value") {
    greenlet parent_never_started([](int x) { return value::of(x, 24); });
    greenlet child([] { return 42; }, parent_never_started);
    value r = child.switch_();
    CHECK(r.as_tuple<int, int>() == std::tuple<int, int>{42, 24});
    CHECK(parent_never_started.dead());
    CHECK(child.dead());
  }
  SUBCASE("the parent takes no arguments: the error is raised in the caller") {
    greenlet parent_never_started([] { return 13; });
    greenlet child([] { return 42; }, parent_never_started);
    CHECK_THROWS_AS(child.switch_(), tendril::value_type_error);
    CHECK(child.dead());
    CHECK(parent_never_started.dead());
  }
  SUBCASE("a dead child reparented onto an unstarted greenlet: switching to it starts that greenlet") {
    std::vector<int> seen;
    greenlet parent_never_started([&] { seen.push_back(24); });
    greenlet child([&] { seen.push_back(42); });
    child.switch_();
    CHECK(seen == std::vector<int>{42});
    child.set_parent(parent_never_started);
    value r = child.switch_();
    CHECK(r.empty());
    CHECK(seen == std::vector<int>{42, 24});
  }
}

TEST_CASE("a greenlet without a run function") {
  SUBCASE("switching to it throws greenlet_error naming run") {
    greenlet g;
    CHECK(g.parent() == greenlet::current());
    try {
      g.switch_();
      FAIL("switch_() to a greenlet without run did not throw");
    } catch (const greenlet_error& e) {
      CHECK(std::string(e.what()).find("run") != std::string::npos);
    }
    CHECK_FALSE(g.started());  // nothing happened to it, as in Python
    CHECK_FALSE(g.dead());
  }
  SUBCASE("the error is raised in the caller, not in the run-less greenlet's parent") {
    std::vector<std::string> log;
    greenlet p([&] {
      log.push_back("p started");
      greenlet::current().parent()->switch_();
      log.push_back("p resumed");
      return 7;
    });
    p.switch_();
    greenlet g;
    g.set_parent(p);
    CHECK_THROWS_AS(g.switch_(), greenlet_error);
    CHECK(log == std::vector<std::string>{"p started"});  // p was not resumed with the error
    CHECK_FALSE(g.started());
    CHECK(p.switch_().as<int>() == 7);
  }
  SUBCASE("a child returning into it raises greenlet_error in the caller (test_parent_return_failure)") {
    greenlet g1;
    greenlet g2([] {}, g1);
    CHECK_THROWS_AS(g2.switch_(), greenlet_error);
    CHECK(g2.dead());
    CHECK_FALSE(g1.started());  // the error went on to g1's parent; g1 itself never ran
  }
  SUBCASE("throw_ into it: it dies without running and the exception reaches the caller") {
    greenlet g;
    CHECK_THROWS_AS(g.throw_(std::make_exception_ptr(some_error("x"))), some_error);
    CHECK(g.dead());
  }
}

TEST_CASE("keyword arguments travel with switch_ (test_switch_kwargs, test_switch_kwargs_to_parent)") {
  SUBCASE("to run") {
    greenlet g([](value v) {
      CHECK(v.size() == 0);
      CHECK(v.keywords().size() == 2);
      return v.keyword<int>("a") * 10 + v.keyword<int>("b");
    });
    CHECK(g.switch_(kw("a", 4), kw("b", 2)).as<int>() == 42);
  }
  SUBCASE("to the parent") {
    greenlet g([](int x) {
      switch_to_parent(kw("x", x));
      switch_to_parent(2, kw("x", 3));
      return value::of(x, x * x);
    });
    value v = g.switch_(3);
    CHECK(v.size() == 0);
    CHECK_FALSE(v.empty());
    REQUIRE(v.keywords().size() == 1);
    CHECK(v.keywords()[0].first == "x");
    CHECK(v.keyword<int>("x") == 3);

    v = g.switch_();
    CHECK(v.as<int>() == 2);
    CHECK(v.has_keyword("x"));
    CHECK(v.keyword<int>("x") == 3);

    v = g.switch_();
    CHECK(v.as_tuple<int, int>() == std::tuple<int, int>{3, 9});
    CHECK(v.keywords().empty());
  }
}

TEST_CASE("set_parent errors: cycles and the main greenlet throw greenlet_error") {
  SUBCASE("trivial cycle") {
    greenlet g([] {});
    CHECK_THROWS_AS(g.set_parent(g), greenlet_error);
    CHECK(g.parent() == greenlet::current());
  }
  SUBCASE("deeper cycle") {
    greenlet g1([] {});
    greenlet g2([] {});
    greenlet g3([] {});
    g1.set_parent(g2);
    g2.set_parent(g3);
    try {
      g3.set_parent(g1);
      FAIL("a cycle was accepted");
    } catch (const greenlet_error& e) {
      CHECK(std::string(e.what()).find("cycl") != std::string::npos);
    }
    CHECK(g3.parent() == greenlet::current());
    CHECK(g1.parent() == g2);
  }
  SUBCASE("the main greenlet's parent cannot be set") {
    greenlet g([] {});
    greenlet main = greenlet::current();
    CHECK_THROWS_AS(main.set_parent(g), greenlet_error);
    CHECK_THROWS_AS(main.set_parent(main), greenlet_error);
    CHECK_FALSE(main.parent().has_value());
  }
  SUBCASE("reparenting a suspended greenlet changes where it returns") {
    std::vector<std::string> log;
    greenlet hub([&](value v) { log.push_back("hub got " + std::to_string(v.as<int>())); });
    greenlet g([] {
      switch_to_parent();
      return 5;
    });
    g.switch_();
    g.set_parent(hub);
    value r = g.switch_();  // g returns 5 into hub (unstarted: started with 5); hub returns into main
    CHECK(r.empty());
    CHECK(log == std::vector<std::string>{"hub got 5"});
  }
}

}  // TEST_SUITE

TEST_CASE("no memory for a new greenlet's stack: switch_ throws std::bad_alloc and nothing has changed") {
  greenlet g([] { return 1; }, std::nullopt,
             tendril::stack_options{.size = std::size_t{1} << 50, .name = {}});  // 1 PiB
  CHECK_THROWS_AS(g.switch_(), std::bad_alloc);
  CHECK(greenlet::current().is_main());
  CHECK_FALSE(g.started());
  greenlet h([] { return 2; });
  CHECK(h.switch_().as<int>() == 2);
}

TEST_CASE("a stack size near SIZE_MAX is refused with a message naming it, not wrapped around to a tiny stack") {
  for (std::size_t size : {SIZE_MAX, SIZE_MAX - 100, std::size_t{1} << 50}) {
    greenlet g([] { return 1; }, std::nullopt, tendril::stack_options{.size = size, .name = {}});
    try {
      g.switch_();
      FAIL("a greenlet with a stack of " << size << " bytes ran");
    } catch (const std::bad_alloc& e) {
      CHECK(std::string(e.what()).find("cannot allocate a stack of") != std::string::npos);
    }
    CHECK_FALSE(g.started());
  }
}

// The allocation fails in the finishing child, on its way to its parent: it cannot throw there (nothing is left to
// catch it on that stack), so the unstarted parent dies of it without running, and the error goes up its chain.
TEST_CASE("no memory for the stack of a finished greenlet's unstarted parent: the error reaches the next live one") {
  bool parent_ran = false;
  greenlet p(
      [&](value v) {
        parent_ran = true;
        return v;
      },
      std::nullopt, tendril::stack_options{.size = std::size_t{1} << 50, .name = {}});
  greenlet c([] { return 1; }, p);
  CHECK_THROWS_AS(c.switch_(), std::bad_alloc);
  CHECK(c.dead());
  CHECK(p.dead());
  CHECK_FALSE(parent_ran);
  CHECK(greenlet::current().is_main());
}

namespace {

// The rounding mode as both the x87 unit and SSE see it (glibc's fegetround() reads only the x87 control word).
struct rounding {
  int x87;
  unsigned sse;
  bool operator==(const rounding&) const = default;
};
rounding current_rounding() {
#if defined(__x86_64__)
  return {std::fegetround(), _mm_getcsr() & 0x6000u};
#else
  return {std::fegetround(), 0};
#endif
}

}  // namespace

// Python's greenlet and Boost.Context keep the floating-point control state per context; tendril's switch saves
// it on every switch and reloads it only when the receiver's differs, so a switch between different modes must
// still restore each side's own.
TEST_CASE("each greenlet keeps its own floating-point rounding mode across switches") {
  const rounding main_mode = current_rounding();
  REQUIRE(std::fegetround() == FE_TONEAREST);
  std::vector<rounding> seen;
  greenlet main = greenlet::current();
  greenlet other([&] {
    std::fesetround(FE_TOWARDZERO);
    for (;;) {
      main.switch_();
      seen.push_back(current_rounding());
    }
  });
  greenlet g([&] {
    std::fesetround(FE_UPWARD);
    const rounding up = current_rounding();
    main.switch_();
    seen.push_back(current_rounding());
    other.switch_();  // greenlet to greenlet: other runs toward zero, and comes back to main
    CHECK(current_rounding() == up);
    std::fesetround(FE_DOWNWARD);
    main.switch_();
    seen.push_back(current_rounding());
  });
  g.switch_();
  CHECK(current_rounding() == main_mode);
  other.switch_();  // starts other: it sets toward-zero and switches back
  CHECK(current_rounding() == main_mode);
  g.switch_();  // g sees upward, switches to other, which comes back here
  CHECK(current_rounding() == main_mode);
  g.switch_();  // g sees upward again, sets downward, comes back
  CHECK(current_rounding() == main_mode);
  g.switch_();  // g sees downward and finishes
  CHECK(current_rounding() == main_mode);
  std::fesetround(FE_UPWARD);
  other.switch_();  // other sees its own toward-zero; main's mode stays upward
  CHECK(current_rounding().x87 == FE_UPWARD);
  std::fesetround(FE_TONEAREST);
  CHECK(g.dead());
  REQUIRE(seen.size() == 4);
  std::fesetround(FE_UPWARD);
  const rounding upward = current_rounding();
  std::fesetround(FE_DOWNWARD);
  const rounding downward = current_rounding();
  std::fesetround(FE_TOWARDZERO);
  const rounding towardzero = current_rounding();
  std::fesetround(FE_TONEAREST);
  CHECK(seen[0] == upward);
  CHECK(seen[1] == towardzero);  // other, resumed from g's other.switch_()
  CHECK(seen[2] == downward);
  CHECK(seen[3] == towardzero);
}
