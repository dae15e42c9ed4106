// tendril/io.hpp — waiting for a file descriptor without blocking other tasks.
//
//   // fd is non-blocking; instead of blocking in read(), park this task until data arrives:
//   if (!tendril::wait_readable(fd, 5s)) throw my_timeout{};
//   ssize_t n = ::read(fd, buf, sizeof buf);
//
// The wait goes through the thread's epoll reactor. Cancellation points. On a thread, at most one task may wait
// for a given fd to become readable and one for it to become writable at a time (so one task can read a socket
// while another writes it); a second waiter for the same direction gets usage_error.
#pragma once

#include <optional>

#include "tendril/detail/wait_queue.hpp"
#include "tendril/export.hpp"
#include "tendril/scheduler.hpp"  // usage_error

namespace tendril {

// Suspends the calling task until `fd` is readable (or has an error/hang-up to report). Returns false if
// `timeout` passes first. Throws std::system_error if the fd cannot be watched (e.g. EBADF, or a regular file).
TENDRIL_API bool wait_readable(int fd, std::optional<duration> timeout = std::nullopt);
// The same for writability.
TENDRIL_API bool wait_writable(int fd, std::optional<duration> timeout = std::nullopt);

}  // namespace tendril
