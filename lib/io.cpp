// lib/io.cpp — wait_readable / wait_writable on the reactor.
#include "tendril/io.hpp"

#include <sys/epoll.h>

#include <string>
#include <system_error>
#include <unordered_map>

#include "exec_context.hpp"
#include "reactor.hpp"

namespace tendril {
namespace {

// The waiters of one fd on this thread: at most one for readability and one for writability. One epoll
// registration serves both (an fd can be registered only once per epoll set).
struct fd_entry final : detail::io_source {
  detail::waiter* reader = nullptr;
  detail::waiter* writer = nullptr;

  std::uint32_t mask() const noexcept {
    return (reader != nullptr ? EPOLLIN | EPOLLRDHUP : 0u) | (writer != nullptr ? EPOLLOUT : 0u);
  }
  void on_ready(std::uint32_t events) noexcept override {
    const bool error = (events & (EPOLLERR | EPOLLHUP)) != 0;
    if (reader != nullptr && (error || (events & (EPOLLIN | EPOLLRDHUP | EPOLLPRI)) != 0)) {
      reader->notify(detail::waiter::outcome::notified);
    }
    if (writer != nullptr && (error || (events & EPOLLOUT) != 0)) {
      writer->notify(detail::waiter::outcome::notified);
    }
  }
};

// fd -> its waiters, for this thread. Allocated while some fd is waited on and freed when none is, so nothing
// outlives the thread (a thread_local object with a destructor could be destroyed before thread exit cancels
// the tasks still waiting here).
thread_local std::unordered_map<int, fd_entry>* tl_fds = nullptr;

bool wait_fd(int fd, bool readable, std::optional<duration> timeout) {
  detail::reactor& r = detail::reactor::current();
  if (tl_fds == nullptr) tl_fds = new std::unordered_map<int, fd_entry>();
  fd_entry& entry = (*tl_fds)[fd];
  detail::waiter*& slot = readable ? entry.reader : entry.writer;
  auto release = [&] {
    slot = nullptr;
    if (entry.mask() == 0) {
      r.unwatch(fd);
      tl_fds->erase(fd);
      if (tl_fds->empty()) {
        delete tl_fds;
        tl_fds = nullptr;
      }
    } else {
      try {
        r.watch(fd, entry.mask(), &entry);
      } catch (...) {
        // the fd was closed under the other waiter; it will time out or be cancelled
      }
    }
  };
  if (slot != nullptr) {
    throw usage_error("another task is already waiting for fd " + std::to_string(fd) + " to become " +
                      (readable ? "readable" : "writable"));
  }
  detail::waiter w;
  slot = &w;
  try {
    r.watch(fd, entry.mask(), &entry);
  } catch (...) {
    release();
    throw;
  }
  detail::waiter::outcome o = detail::park(w, nullptr, detail::deadline_after(timeout));
  release();
  if (o == detail::waiter::outcome::notified) return true;
  if (o == detail::waiter::outcome::timed_out) return false;
  detail::throw_for(o, detail::current_exec());
  return false;
}

}  // namespace

bool wait_readable(int fd, std::optional<duration> timeout) { return wait_fd(fd, true, timeout); }
bool wait_writable(int fd, std::optional<duration> timeout) { return wait_fd(fd, false, timeout); }

}  // namespace tendril
