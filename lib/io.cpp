// lib/io.cpp — wait_readable / wait_writable on the reactor.
#include "tendril/io.hpp"

#include <sys/epoll.h>

#include <system_error>

#include "exec_context.hpp"
#include "reactor.hpp"

namespace tendril {
namespace {

// Reports readiness of one fd to one parked waiter.
struct fd_wait final : detail::io_source {
  detail::waiter* w = nullptr;
  void on_ready(std::uint32_t) noexcept override { w->notify(detail::waiter::outcome::notified); }
};

bool wait_fd(int fd, std::uint32_t events, std::optional<duration> timeout) {
  detail::reactor& r = detail::reactor::current();
  detail::waiter w;
  fd_wait source;
  source.w = &w;
  epoll_event probe{};
  (void)probe;
  r.watch(fd, events, &source);
  detail::waiter::outcome o = detail::park(w, nullptr, detail::deadline_after(timeout));
  r.unwatch(fd);
  if (o == detail::waiter::outcome::notified) return true;
  if (o == detail::waiter::outcome::timed_out) return false;
  detail::throw_for(o, detail::current_exec());
  return false;
}

}  // namespace

bool wait_readable(int fd, std::optional<duration> timeout) { return wait_fd(fd, EPOLLIN | EPOLLRDHUP, timeout); }
bool wait_writable(int fd, std::optional<duration> timeout) { return wait_fd(fd, EPOLLOUT, timeout); }

}  // namespace tendril
