// lib/valgrind_requests.hpp — valgrind's client requests, or no-ops when the library is built without
// <valgrind/valgrind.h> (TENDRIL_HAVE_VALGRIND, set by meson.build). Natively each request costs a few
// instructions and does nothing; RUNNING_ON_VALGRIND is 0.
#pragma once

#if defined(TENDRIL_HAVE_VALGRIND)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#define VALGRIND_STACK_REGISTER(lo, hi) ((void)(lo), (void)(hi), 0U)
#define VALGRIND_STACK_DEREGISTER(id) ((void)(id))
#define VALGRIND_MAKE_MEM_NOACCESS(addr, len) ((void)(addr), (void)(len))
#define VALGRIND_MAKE_MEM_UNDEFINED(addr, len) ((void)(addr), (void)(len))
#endif
