// Shared helpers for the scheduler suites.
#pragma once

#include <chrono>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "../support/timing.hpp"
#include "tendril/scheduler.hpp"

namespace sched_test {

using namespace std::chrono_literals;
using tendril_test::clock;
using tendril_test::generous;
using tendril_test::slack;
using tendril_test::stopwatch;
using tendril_test::under_asan;
using tendril_test::under_valgrind;

// Sets a flag when destroyed: proves that a task's stack was unwound.
struct on_destroy {
  bool& flag;
  explicit on_destroy(bool& f) : flag(f) {}
  ~on_destroy() { flag = true; }
};

// Records (name, message) of every report made to the unhandled-exception handler while alive; restores the
// previous handler afterwards.
struct capture_unhandled {
  struct report {
    std::string name;
    std::string what;
  };
  std::vector<report> reports;
  tendril::unhandled_exception_handler previous;
  capture_unhandled() {
    previous = tendril::set_unhandled_exception_handler([this](const std::string& name, std::exception_ptr e) {
      std::string what = "?";
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        what = ex.what();
      } catch (...) {
      }
      reports.push_back({name, what});
    });
  }
  ~capture_unhandled() { tendril::set_unhandled_exception_handler(std::move(previous)); }
  capture_unhandled(const capture_unhandled&) = delete;
  capture_unhandled& operator=(const capture_unhandled&) = delete;
};

// Yields until `pred()` holds (at most `max_rounds` rounds); returns whether it holds. Used to let a task reach
// its blocking call: since a task only gives up control by suspending, once it has set a flag just before
// blocking, the next time we run it is parked.
template <class Pred>
bool yield_until(Pred pred, int max_rounds = 10000) {
  for (int i = 0; i < max_rounds && !pred(); ++i) tendril::yield();
  return pred();
}

}  // namespace sched_test
