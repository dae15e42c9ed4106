// tendril/export.hpp — TENDRIL_API marks the names libtendril.so exports.
//
// The library is built with hidden symbol visibility; only declarations carrying TENDRIL_API are visible to
// programs that link it. Users never need this macro themselves.
#pragma once

#if defined(TENDRIL_BUILDING_LIBRARY)
#define TENDRIL_API __attribute__((visibility("default")))
#else
#define TENDRIL_API
#endif
