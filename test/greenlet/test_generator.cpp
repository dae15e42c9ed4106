// tendril::generator<T>, ported from greenlet's test_generator.py and test_generator_nested.py.
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"
#include "tendril/generator.hpp"

using tendril::generator;
using tendril::greenlet;
using tendril::yielder;
using namespace tendril_test;

namespace {

generator<int> count_to(int n, std::vector<int>* seen = nullptr) {
  return generator<int>([n, seen](yielder<int>& yield) {
    for (int i = 0; i < n; ++i) {
      if (seen != nullptr) seen->push_back(i + 1);
      yield(i);
    }
  });
}

// Yields from a nested call, not from the body itself (greenlet's g3 / nested()).
void nested_yield(yielder<int>& yield, int v) { yield(v); }

// Every permutation of `l`, recursively, one nested generator per level (test_generator_nested's perms).
generator<std::vector<int>> perms(std::vector<int> l) {
  return generator<std::vector<int>>([l = std::move(l)](yielder<std::vector<int>>& yield) {
    if (l.size() <= 1) {
      yield(l);
      return;
    }
    for (int e : l) {
      std::vector<int> rest;
      for (int x : l) {
        if (x != e) rest.push_back(x);
      }
      for (std::vector<int>& p : perms(rest)) {
        p.insert(p.begin(), e);
        yield(std::move(p));
      }
    }
  });
}

// greenlet's ax: a recursive generator delegating to itself.
generator<int> ax(int n) {
  return generator<int>([n](yielder<int>& yield) {
    if (n == 0) return;
    yield.from(ax(n - 1));
    yield(n);
  });
}

}  // namespace

TEST_SUITE("generator") {

TEST_CASE("yield hands values to range-for, interleaved with the body (test_generator)") {
  std::vector<int> seen;
  for (int round = 0; round < 3; ++round) {
    for (int j : count_to(5, &seen)) seen.push_back(j);
  }
  std::vector<int> once = {1, 0, 2, 1, 3, 2, 4, 3, 5, 4};
  std::vector<int> expected;
  for (int i = 0; i < 3; ++i) expected.insert(expected.end(), once.begin(), once.end());
  CHECK(seen == expected);
}

TEST_CASE("next() returns each value, then nullopt for good; done() follows") {
  generator<int> g = count_to(2);
  CHECK_FALSE(g.done());
  CHECK(g.next() == 0);
  CHECK(g.next() == 1);
  CHECK_FALSE(g.done());  // suspended after the last yield
  CHECK(g.next() == std::nullopt);
  CHECK(g.done());
  CHECK(g.next() == std::nullopt);
}

TEST_CASE("the body does not run until the first value is asked for") {
  bool started = false;
  generator<int> g([&](yielder<int>& yield) {
    started = true;
    yield(1);
  });
  CHECK_FALSE(started);
  CHECK(g.next() == 1);
  CHECK(started);
}

TEST_CASE("yield.from delegates (seed 001: 1 3 4 2), and yield works from nested calls") {
  generator<int> inner([](yielder<int>& yield) {
    yield(3);
    yield(4);
  });
  generator<int> outer([&](yielder<int>& yield) {
    yield(1);
    yield.from(inner);
    yield(2);
  });
  std::vector<int> got;
  for (int x : outer) got.push_back(x);
  CHECK(got == std::vector<int>{1, 3, 4, 2});
  CHECK(inner.done());

  generator<int> g3([](yielder<int>& yield) {
    for (int i = 0; i < 3; ++i) nested_yield(yield, i * 10);
  });
  got.clear();
  for (int x : g3) got.push_back(x);
  CHECK(got == std::vector<int>{0, 10, 20});
}

TEST_CASE("nested generators: recursive delegation (test_nested_genlets)") {
  std::vector<int> seen;
  for (int x : ax(5)) seen.push_back(x);
  CHECK(seen == std::vector<int>{1, 2, 3, 4, 5});
}

TEST_CASE("nested generators: recursive permutations of 4 items, all 24 in lexicographic order (test_permutations)") {
  std::vector<std::vector<int>> got;
  for (std::vector<int>& p : perms({0, 1, 2, 3})) got.push_back(p);
  REQUIRE(got.size() == 24);
  std::vector<int> expected = {0, 1, 2, 3};
  for (const std::vector<int>& p : got) {
    CHECK(p == expected);
    std::next_permutation(expected.begin(), expected.end());
  }
  CHECK(got.front() == std::vector<int>{0, 1, 2, 3});
  CHECK(got.back() == std::vector<int>{3, 2, 1, 0});

  // Two generators advanced in lock step (zip) stay independent.
  generator<std::vector<int>> p4 = perms({0, 1, 2, 3});
  generator<std::vector<int>> p3 = perms({0, 1, 2});
  std::vector<std::pair<std::vector<int>, std::vector<int>>> zipped;
  for (;;) {
    auto a = p4.next();
    if (!a) break;
    auto b = p3.next();
    if (!b) break;
    zipped.emplace_back(*a, *b);
  }
  REQUIRE(zipped.size() == 6);
  CHECK(zipped[0] == std::pair<std::vector<int>, std::vector<int>>{{0, 1, 2, 3}, {0, 1, 2}});
  CHECK(zipped[1] == std::pair<std::vector<int>, std::vector<int>>{{0, 1, 3, 2}, {0, 2, 1}});
  CHECK(zipped[5] == std::pair<std::vector<int>, std::vector<int>>{{0, 3, 2, 1}, {2, 1, 0}});
  CHECK(p3.done());
  CHECK_FALSE(p4.done());  // dropped unfinished at the end of the test: killed
}

TEST_CASE("an exception thrown by the body reaches the consumer at the next() that resumed it") {
  generator<int> g([](yielder<int>& yield) {
    yield(1);
    throw some_error("body failed");
  });
  CHECK(g.next() == 1);
  CHECK_THROWS_AS(g.next(), some_error);
  CHECK(g.done());
  CHECK(g.next() == std::nullopt);

  // Through range-for and through a delegating generator.
  generator<int> failing([](yielder<int>& yield) {
    yield(7);
    throw key_error("inner failed");
  });
  generator<int> outer([&](yielder<int>& yield) {
    yield.from(failing);
    yield(8);
  });
  std::vector<int> got;
  try {
    for (int x : outer) got.push_back(x);
    FAIL("no exception");
  } catch (const key_error& e) {
    CHECK(std::string(e.what()) == "inner failed");
  }
  CHECK(got == std::vector<int>{7});
  CHECK(outer.done());
}

TEST_CASE("destroying an unfinished generator unwinds its body") {
  int destroyed = 0;
  bool after_yield = false;
  struct guard {
    int* n;
    ~guard() { ++*n; }
  };
  {
    generator<int> g([&](yielder<int>& yield) {
      guard gd{&destroyed};
      yield(1);
      after_yield = true;
      yield(2);
    });
    CHECK(g.next() == 1);
    CHECK(destroyed == 0);
  }
  CHECK(destroyed == 1);
  CHECK_FALSE(after_yield);

  // Breaking out of a range-for over a nested generator unwinds both levels.
  destroyed = 0;
  {
    generator<int> outer([&](yielder<int>& yield) {
      guard gd{&destroyed};
      generator<int> inner([&](yielder<int>& y) {
        guard gi{&destroyed};
        for (int i = 0;; ++i) y(i);
      });
      yield.from(inner);
    });
    for (int x : outer) {
      if (x == 3) break;
    }
  }
  CHECK(destroyed == 2);

  // A generator that was never started has nothing to unwind; its body never runs.
  bool ran = false;
  {
    generator<int> never([&](yielder<int>&) { ran = true; });
  }
  CHECK_FALSE(ran);
}

TEST_CASE("a generator consumed from inside a greenlet yields to that greenlet") {
  generator<int> g = count_to(3);
  std::vector<int> got;
  greenlet consumer([&] {
    got.push_back(*g.next());
    switch_to_parent();  // park; the generator's next value must still come back to us
    got.push_back(*g.next());
  });
  consumer.switch_();
  got.push_back(*g.next() + 100);  // main consumes one directly
  consumer.switch_();
  CHECK(got == std::vector<int>{0, 101, 2});
}

TEST_CASE("move-only values and moved generators") {
  generator<std::unique_ptr<int>> g([](yielder<std::unique_ptr<int>>& yield) {
    yield(std::make_unique<int>(1));
    yield(std::make_unique<int>(2));
  });
  generator<std::unique_ptr<int>> moved = std::move(g);
  std::vector<int> got;
  for (std::unique_ptr<int>& p : moved) got.push_back(*p);
  CHECK(got == std::vector<int>{1, 2});
}

TEST_CASE("consuming a generator on another thread throws greenlet_error") {
  generator<int> g = count_to(3);
  bool threw = false;
  std::thread([&] {
    try {
      g.next();
    } catch (const tendril::greenlet_error&) {
      threw = true;
    }
  }).join();
  CHECK(threw);
  CHECK(g.next() == 0);  // still usable on its own thread
}

}  // TEST_SUITE

TEST_CASE("next() from inside the generator's own body, or on a moved-from one, throws greenlet_error") {
  std::optional<tendril::generator<int>> self;
  std::string seen;
  self.emplace([&](tendril::yielder<int>& yield) {
    yield(1);
    try {
      self->next();  // re-entering itself
    } catch (const tendril::greenlet_error& e) {
      seen = e.what();
    }
    yield(2);
  });
  CHECK(self->next() == 1);
  CHECK(self->next() == 2);  // the body went on after the refused re-entry
  CHECK(seen.find("already executing") != std::string::npos);
  CHECK(self->next() == std::nullopt);
  tendril::generator<int> moved = std::move(*self);
  CHECK_THROWS_AS(self->next(), tendril::greenlet_error);
}
