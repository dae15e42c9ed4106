// Timing and environment helpers shared by the test suites.
//
// Tests assert lower bounds on elapsed time and only generous upper bounds, scaled for slow runtimes
// (valgrind, ASan): a test must fail because behaviour is wrong, never because the machine is busy.
#pragma once

#include <chrono>
#include <cstdlib>

namespace tendril_test {

using clock = std::chrono::steady_clock;

// Set by the meson test setups.
inline bool under_valgrind() { return std::getenv("TENDRIL_UNDER_VALGRIND") != nullptr; }
inline bool under_asan() { return std::getenv("TENDRIL_UNDER_ASAN") != nullptr; }

// Multiplier for generous upper bounds on elapsed time (never for lower bounds).
inline double slack() { return under_valgrind() ? 10.0 : under_asan() ? 3.0 : 1.0; }

// A generous upper bound: `base` scaled for slow runtimes.
inline clock::duration generous(clock::duration base) {
  return std::chrono::duration_cast<clock::duration>(base * slack());
}

// Elapsed time since construction.
struct stopwatch {
  clock::time_point start = clock::now();
  clock::duration elapsed() const { return clock::now() - start; }
  long long ms() const { return std::chrono::duration_cast<std::chrono::milliseconds>(elapsed()).count(); }
};

}  // namespace tendril_test
