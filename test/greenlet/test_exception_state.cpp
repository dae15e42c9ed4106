// Switching inside catch blocks: each greenlet keeps its own C++ exception state (greenlet's test_exc_state).
#include <doctest/doctest.h>

#include <exception>
#include <string>
#include <vector>

#include "helpers.hpp"
#include "tendril/greenlet.hpp"

using tendril::greenlet;
using tendril::greenlet_exit;
using namespace tendril_test;

namespace {

struct error_a : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct error_b : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What `throw;` rethrows right now, as a string.
std::string rethrown() {
  try {
    throw;
  } catch (const error_a& e) {
    return std::string("error_a:") + e.what();
  } catch (const error_b& e) {
    return std::string("error_b:") + e.what();
  } catch (...) {
    return "other";
  }
}

}  // namespace

TEST_SUITE("exception_state") {

TEST_CASE("a new greenlet starts with no current exception, even when started from a catch block") {
  bool clean = false;
  try {
    throw error_a("outer");
  } catch (...) {
    greenlet h([&] { clean = !std::current_exception() && std::uncaught_exceptions() == 0; });
    h.switch_();
    CHECK(rethrown() == "error_a:outer");  // ours is intact after the switch back
  }
  CHECK(clean);
  CHECK_FALSE(std::current_exception());
}

TEST_CASE("A switches away inside a catch block, B throws and catches another exception meanwhile") {
  greenlet a;
  greenlet b;
  std::vector<std::string> log;
  std::exception_ptr a_original;
  std::exception_ptr a_after;
  std::exception_ptr b_original;
  std::exception_ptr b_after;

  a = greenlet([&] {
    try {
      throw error_a("A's");
    } catch (...) {
      a_original = std::current_exception();
      b.switch_();  // B throws and catches error_b, then switches back here from inside its own catch block
      a_after = std::current_exception();
      log.push_back("A rethrows " + rethrown());
      b.switch_();  // resume B, still inside its catch block
      log.emplace_back("A never resumed");
    }
  });
  b = greenlet([&] {
    log.push_back(std::current_exception() ? "B starts with an exception" : "B starts clean");
    try {
      throw error_b("B's");
    } catch (...) {
      b_original = std::current_exception();
      a.switch_();
      b_after = std::current_exception();
      log.push_back("B rethrows " + rethrown());
    }
    log.push_back(std::current_exception() ? "B still has an exception" : "B clean after its catch");
  });

  a.switch_();  // b finishes and returns to its parent: us
  CHECK(log == std::vector<std::string>{"B starts clean", "A rethrows error_a:A's", "B rethrows error_b:B's",
                                        "B clean after its catch"});
  CHECK(a_original);
  CHECK(a_after == a_original);
  CHECK(b_original);
  CHECK(b_after == b_original);
  CHECK_FALSE(a_original == b_original);
  CHECK_FALSE(std::current_exception());  // main was never in a catch block
  CHECK(a.active());                      // suspended inside its catch block; killed when the test ends
}

TEST_CASE("a greenlet killed while suspended inside a catch block unwinds cleanly") {
  int handlers_left = 0;
  {
    greenlet g([&] {
      try {
        throw error_a("held");
      } catch (const error_a&) {
        struct on_exit {
          int* n;
          ~on_exit() { ++*n; }
        } guard{&handlers_left};
        switch_to_parent();
      }
    });
    g.switch_();
  }
  CHECK(handlers_left == 1);
  CHECK_FALSE(std::current_exception());
  // The runtime's caught-exception stack is consistent: a fresh throw/catch works and leaves nothing behind.
  try {
    throw error_b("after");
  } catch (...) {
    CHECK(rethrown() == "error_b:after");
  }
  CHECK_FALSE(std::current_exception());
}

TEST_CASE("std::uncaught_exceptions() is per greenlet: switching from a destructor during unwinding") {
  int seen_in_other = -1;
  int seen_in_dtor_after = -1;
  greenlet other([&] {
    for (;;) {
      seen_in_other = std::uncaught_exceptions();
      switch_to_parent();
    }
  });
  greenlet unwinding([&] {
    struct switches_in_dtor {
      greenlet* other;
      int* after;
      ~switches_in_dtor() {
        // We are being destroyed by stack unwinding: one uncaught exception here, none in `other`.
        greenlet target = *other;
        target.set_parent(greenlet::current());
        target.switch_();
        *after = std::uncaught_exceptions();
      }
    };
    try {
      switches_in_dtor s{&other, &seen_in_dtor_after};
      throw error_a("unwinding");
    } catch (const error_a&) {
      return 1;
    }
    return 0;
  });
  CHECK(unwinding.switch_().as<int>() == 1);
  CHECK(seen_in_other == 0);
  CHECK(seen_in_dtor_after == 1);
  CHECK(std::uncaught_exceptions() == 0);
}

}  // TEST_SUITE
