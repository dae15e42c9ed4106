// tendril/export.hpp — TENDRIL_API marks the names libtendril.so exports.
//
// The library is built with hidden symbol visibility; only declarations carrying TENDRIL_API are visible to
// programs that link it. Users never need this macro themselves.
#pragma once

// Every tendril header needs C++20. g++ 12 (Debian 12) defaults to gnu++17, and `pkg-config --cflags tendril`
// does not add -std (a build system puts dependency flags after its own, so it would override a project's newer
// standard): say it once, clearly, rather than with a page of errors.
#if __cplusplus < 202002L
#error "tendril needs C++20 or later: compile with -std=c++20 (g++ 12 defaults to C++17)"
#endif

#if defined(TENDRIL_BUILDING_LIBRARY)
#define TENDRIL_API __attribute__((visibility("default")))
#else
#define TENDRIL_API
#endif
