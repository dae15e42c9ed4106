// lib/reactor.hpp — the per-thread epoll reactor that lives inside tendril's Boost.Fiber scheduling algorithm.
//
// The event loop is an interface: file-descriptor waits (io.cpp), the libcurl driver and tendril::net are its
// clients. The reactor never runs client code beyond io_source::on_ready(), which must only record what
// happened and wake a parked task ("callbacks record, the loop acts").
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

namespace tendril::detail {

class io_source {
 public:
  // Called on the scheduler's context when a watched fd is ready (epoll event bits). Must not block, switch
  // or throw: record the event and notify a waiter.
  virtual void on_ready(std::uint32_t events) noexcept = 0;

 protected:
  ~io_source() = default;
};

class reactor {
 public:
  // This thread's reactor; installs tendril's scheduler on the thread if it is not installed yet.
  static reactor& current();

  // Watches `fd` for `events` (EPOLLIN/EPOLLOUT, level-triggered), reporting to `source`. An fd already watched
  // is modified instead (libcurl hands back the same fd number after closing it). Throws std::system_error.
  void watch(int fd, std::uint32_t events, io_source* source);
  // Stops watching `fd`; ENOENT/EBADF (an fd already closed) are ignored.
  void unwatch(int fd) noexcept;

  // Waits for events at most until `timeout_ms` (-1: forever, 0: poll) and dispatches them. Returns the number
  // of events dispatched. Used by the scheduling algorithm.
  int poll(int timeout_ms) noexcept;
  // Wakes a poll() blocked in another thread (writes the eventfd).
  void interrupt() noexcept;

  reactor();
  ~reactor();
  reactor(const reactor&) = delete;
  reactor& operator=(const reactor&) = delete;

 private:
  int epoll_fd_ = -1;
  int event_fd_ = -1;
};

// Called just before `fd` is closed by tendril (tcp_stream::close(), tcp_listener::close()), or moved out of the
// object its waiters hold: stops watching it and wakes the tasks of this thread that wait on it (their wait_fd()
// returns fd_wait::closed), so they do not wait forever on an fd epoll has dropped, nor touch an object that no
// longer holds it, and the fd number can be reused at once. (io.cpp)
void forget_fd(int fd) noexcept;

// How a wait on an fd ended: it became ready, the timeout passed, or forget_fd() was called for it meanwhile (its
// object was closed, destroyed or replaced: the waiter must not touch that object again).
enum class fd_wait { ready, timed_out, closed };
// wait_readable()/wait_writable() telling a close apart from readiness. `keep`: the fd belongs to tendril::net,
// which calls forget_fd() before it closes or gives it away, and waits only after a call said EAGAIN: its
// registration is kept between waits (see io.cpp). (io.cpp)
fd_wait wait_fd(int fd, bool readable, std::optional<std::chrono::steady_clock::duration> timeout, bool keep);

// Installs tendril's scheduling algorithm on the calling thread (once) and returns its reactor.
reactor& install_scheduler();

// Set by a deferred wake-up (scheduler.cpp) around a wake that may notify another thread's scheduler. That
// scheduling algorithm's notify() clears the flag it points to as soon as the woken context is queued and it has
// no more business with it, before it makes its system call, so the woken task need not wait for that call.
extern thread_local std::atomic<bool>* tl_wake_pending __attribute__((tls_model("initial-exec")));

}  // namespace tendril::detail
