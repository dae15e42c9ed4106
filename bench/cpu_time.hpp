// bench/cpu_time.hpp — the process's CPU time (user + system), which the benchmarks divide by operations.
#pragma once

#include <sys/resource.h>

inline double cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return seconds(ru.ru_utime) + seconds(ru.ru_stime);
}
