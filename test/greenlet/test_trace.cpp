// settrace/gettrace, ported from greenlet's test_tracing.py.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "helpers.hpp"
#include "tendril/greenlet.hpp"

using tendril::greenlet;
using tendril::greenlet_exit;
using tendril::trace_event;
using tendril::value;
using namespace tendril_test;

namespace {

struct tracer_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Installs a tracer that records "event origin->target" with names looked up by identity; restores the previous
// tracer on destruction. Names are compared against handles the test keeps, so the tracer itself keeps no
// greenlet alive.
class recording_tracer {
 public:
  explicit recording_tracer(bool throw_on_trace = false) : throw_(throw_on_trace) {
    previous_ = tendril::settrace([this](trace_event e, const greenlet& origin, const greenlet& target) {
      actions.push_back(std::string(e == trace_event::switch_ ? "switch " : "throw ") + name(origin) + "->" +
                        name(target));
      target_is_current = target_is_current && target == greenlet::current();
      if (throw_) throw tracer_error("from the tracer");
    });
  }
  recording_tracer(const recording_tracer&) = delete;
  recording_tracer& operator=(const recording_tracer&) = delete;
  ~recording_tracer() { tendril::settrace(std::move(previous_)); }

  void name_it(const greenlet& g, std::string n) { names_.emplace_back(&g, std::move(n)); }

  std::vector<std::string> actions;
  bool target_is_current = true;

 private:
  std::string name(const greenlet& g) const {
    for (const auto& [p, n] : names_) {
      if (*p == g) return n;
    }
    return "?";
  }
  bool throw_;
  tendril::tracer previous_;
  std::vector<std::pair<const greenlet*, std::string>> names_;
};

}  // namespace

TEST_SUITE("trace") {

TEST_CASE("no tracer by default; settrace returns the previous tracer") {
  CHECK_FALSE(tendril::gettrace());
  int a = 0;
  int b = 0;
  tendril::tracer first = [&](trace_event, const greenlet&, const greenlet&) { ++a; };
  tendril::tracer second = [&](trace_event, const greenlet&, const greenlet&) { ++b; };
  CHECK_FALSE(tendril::settrace(first));
  CHECK(tendril::gettrace());
  greenlet([] {}).switch_();
  CHECK(a == 2);
  tendril::tracer prev = tendril::settrace(second);
  REQUIRE(prev);
  greenlet([] {}).switch_();
  CHECK(a == 2);
  CHECK(b == 2);
  prev = tendril::settrace(nullptr);
  REQUIRE(prev);
  prev(trace_event::switch_, greenlet::current(), greenlet::current());  // it really was `second`
  CHECK(b == 3);
  CHECK_FALSE(tendril::gettrace());
  greenlet([] {}).switch_();
  CHECK(a == 2);
  CHECK(b == 3);
}

TEST_CASE("switch_ and throw_ events carry the right origin and target (test_a_greenlet_tracing)") {
  greenlet main = greenlet::current();
  greenlet g1([] {});
  greenlet g2([] { throw some_error("x"); });
  {
    recording_tracer t;
    t.name_it(main, "main");
    t.name_it(g1, "g1");
    t.name_it(g2, "g2");
    g1.switch_();
    CHECK_THROWS_AS(g2.switch_(), some_error);
    CHECK(t.actions ==
          std::vector<std::string>{"switch main->g1", "switch g1->main", "switch main->g2", "throw g2->main"});
    CHECK(t.target_is_current);
  }
  CHECK_FALSE(tendril::gettrace());
}

TEST_CASE("the tracer runs in the target, before run starts and before switch_ returns there") {
  std::vector<std::string> log;
  greenlet g([&] {
    log.emplace_back("run starts");
    switch_to_parent();
    log.emplace_back("switch_ returned in g");
  });
  tendril::tracer prev = tendril::settrace([&](trace_event, const greenlet&, const greenlet& target) {
    log.emplace_back(target == g ? "trace into g" : "trace into main");
  });
  g.switch_();
  log.emplace_back("switch_ returned in main");
  g.switch_();
  tendril::settrace(prev);
  CHECK(log == std::vector<std::string>{"trace into g", "run starts", "trace into main", "switch_ returned in main",
                                        "trace into g", "switch_ returned in g", "trace into main"});
}

TEST_CASE("throw_ events: throw_ into a greenlet, a kill, and a child dying with an exception") {
  greenlet main = greenlet::current();
  greenlet a([] {
    try {
      switch_to_parent();
    } catch (const some_error&) {
    }
    switch_to_parent();
  });
  greenlet b([] {
    switch_to_parent();
    throw key_error("b dies");
  });
  a.switch_();
  b.switch_();
  recording_tracer t;
  t.name_it(main, "main");
  t.name_it(a, "a");
  t.name_it(b, "b");
  a.throw_(std::make_exception_ptr(some_error("x")));  // caught; a switches back normally
  CHECK(a.throw_().holds<greenlet_exit>());            // kill: greenlet_exit escapes, comes back as a value
  CHECK_THROWS_AS(b.switch_(), key_error);
  CHECK(t.actions == std::vector<std::string>{"throw main->a", "switch a->main", "throw main->a", "switch a->main",
                                              "switch main->b", "throw b->main"});
}

TEST_CASE("dropping the last handle is traced as a throw_ into the killed greenlet") {
  greenlet main = greenlet::current();
  std::optional<greenlet> g(std::in_place, [] { switch_to_parent(); });
  g->switch_();
  recording_tracer t;
  t.name_it(main, "main");
  g.reset();
  // The killed greenlet has no handle left in the test: it shows as "?".
  CHECK(t.actions == std::vector<std::string>{"throw main->?", "switch ?->main"});
}

TEST_CASE(
    "a tracer that throws is removed and its exception replaces the pending value "
    "(test_b_exception_disables_tracing)") {
  greenlet main = greenlet::current();
  SUBCASE("raised at the pending switch_ in the target, which does not catch it") {
    greenlet g([&] { main.switch_(); });
    g.switch_();
    recording_tracer t(/*throw_on_trace=*/true);
    t.name_it(main, "main");
    t.name_it(g, "g");
    CHECK_THROWS_AS(g.switch_(), tracer_error);  // raised in g, escapes g, reaches us
    CHECK_FALSE(tendril::gettrace());
    CHECK(t.actions == std::vector<std::string>{"switch main->g"});  // removed before g died
    CHECK(g.dead());
  }
  SUBCASE("the target catches it at its switch_") {
    std::string caught_in_g;
    greenlet g([&] {
      try {
        value v = main.switch_();
        caught_in_g = "no exception: " + std::to_string(v.size());
      } catch (const tracer_error& e) {
        caught_in_g = e.what();
      }
      return std::string("g done");
    });
    g.switch_();
    recording_tracer t(/*throw_on_trace=*/true);
    value r = g.switch_(1, 2, 3);  // the values never arrive: the tracer's exception replaces them
    CHECK(caught_in_g == "from the tracer");
    CHECK(r.as<std::string>() == "g done");
    CHECK_FALSE(tendril::gettrace());
    CHECK(t.actions.size() == 1);
  }
  SUBCASE("into an unstarted greenlet: run never starts, the exception follows the rules for escaping run") {
    bool ran = false;
    greenlet g([&] { ran = true; });
    recording_tracer t(/*throw_on_trace=*/true);
    CHECK_THROWS_AS(g.switch_(), tracer_error);
    CHECK_FALSE(ran);
    CHECK(g.dead());
    CHECK_FALSE(tendril::gettrace());
  }
}

TEST_CASE("a tracer may replace itself while running") {
  int first_calls = 0;
  int second_calls = 0;
  tendril::tracer second = [&](trace_event, const greenlet&, const greenlet&) { ++second_calls; };
  tendril::settrace([&](trace_event, const greenlet&, const greenlet&) {
    ++first_calls;
    tendril::settrace(second);  // destroys the running tracer's stored copy: must be safe
  });
  greenlet g([] { switch_to_parent(); });
  g.switch_();
  g.switch_();
  CHECK(first_calls == 1);
  CHECK(second_calls == 3);
  tendril::settrace(nullptr);
}

}  // TEST_SUITE
