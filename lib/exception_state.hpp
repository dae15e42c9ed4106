// lib/exception_state.hpp — the C++ runtime's per-thread exception state, saved and restored on every switch.
//
// Why: libstdc++ keeps the stack of caught exceptions (what `throw;` and std::current_exception() see) and the
// uncaught-exception count in one per-thread record. Two greenlets or tasks on one thread would otherwise share
// it: a greenlet that switches away inside a catch block and is resumed after another caught and finished an
// exception would see the wrong (or a destroyed) exception. Every context switch therefore swaps the record,
// as Python's greenlet does for its exception state.
#pragma once

#include <cxxabi.h>

namespace tendril::detail {

// Layout of libstdc++'s __cxa_eh_globals on x86-64 and aarch64 (unwind-cxx.h).
struct exception_state {
  void* caught_exceptions = nullptr;
  unsigned int uncaught_exceptions = 0;
};

inline exception_state& current_exception_state() noexcept {
  return *reinterpret_cast<exception_state*>(abi::__cxa_get_globals());
}

}  // namespace tendril::detail
