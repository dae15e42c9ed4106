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
  detail::reactor* owner = nullptr;  // this thread's reactor, which watches the fd
  // forget_fd() took it out of the map (its fd is being closed): its waiters were woken and the last one to
  // leave deletes it.
  bool forgotten = false;

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
// the tasks still waiting here). Entries are heap objects: forget_fd() detaches an entry its parked waiters
// still use, so that the fd number, once reused, starts afresh.
thread_local std::unordered_map<int, fd_entry*>* tl_fds = nullptr;

void drop_map_if_empty() noexcept {
  if (tl_fds != nullptr && tl_fds->empty()) {
    delete tl_fds;
    tl_fds = nullptr;
  }
}

}  // namespace

namespace detail {
fd_wait wait_fd(int fd, bool readable, std::optional<duration> timeout) {
  detail::reactor& r = detail::reactor::current();
  if (tl_fds == nullptr) tl_fds = new std::unordered_map<int, fd_entry*>();
  fd_entry*& found = (*tl_fds)[fd];
  if (found == nullptr) {
    try {
      found = new fd_entry();
      found->owner = &r;
    } catch (...) {
      tl_fds->erase(fd);
      drop_map_if_empty();
      throw;
    }
  }
  fd_entry* entry = found;
  detail::waiter*& slot = readable ? entry->reader : entry->writer;
  // Takes this waiter off the entry; true if the fd was forgotten (closed) meanwhile.
  auto release = [&] {
    slot = nullptr;
    if (entry->forgotten) {  // no longer in the map nor watched
      if (entry->mask() == 0) delete entry;
      return true;
    }
    if (entry->mask() == 0) {
      r.unwatch(fd);
      tl_fds->erase(fd);
      delete entry;
      drop_map_if_empty();
    } else {
      try {
        r.watch(fd, entry->mask(), entry);
      } catch (...) {
        // the fd was closed under the other waiter; it will time out or be cancelled
      }
    }
    return false;
  };
  if (slot != nullptr) {
    throw usage_error("another task is already waiting for fd " + std::to_string(fd) + " to become " +
                      (readable ? "readable" : "writable"));
  }
  detail::waiter w;
  slot = &w;
  try {
    r.watch(fd, entry->mask(), entry);
  } catch (...) {
    release();
    throw;
  }
  detail::waiter::outcome o = detail::park(w, nullptr, detail::deadline_after(timeout));
  // Closed before or after the wake-up (a task that ran in between closed it): either way the fd is gone. A
  // cancellation (or a timeout scope) still wins: it must not be swallowed.
  const bool closed = release();
  if (o != detail::waiter::outcome::notified && o != detail::waiter::outcome::timed_out) {
    detail::throw_for(o, detail::current_exec());
  }
  if (closed) return fd_wait::closed;
  return o == detail::waiter::outcome::notified ? fd_wait::ready : fd_wait::timed_out;
}

void forget_fd(int fd) noexcept {
  if (tl_fds == nullptr) return;
  auto it = tl_fds->find(fd);
  if (it == tl_fds->end()) return;
  fd_entry* entry = it->second;
  tl_fds->erase(it);
  drop_map_if_empty();
  entry->owner->unwatch(fd);
  entry->forgotten = true;
  // Its waiters (parked: an entry exists only while someone waits) wake up as if the fd were ready; the caller
  // finds its object closed and reports it.
  if (entry->reader != nullptr) entry->reader->notify(waiter::outcome::notified);
  if (entry->writer != nullptr) entry->writer->notify(waiter::outcome::notified);
}
}  // namespace detail

// Closed meanwhile reads as ready: the caller's next I/O call on the fd reports it (EBADF, or whatever now has
// that number: callers that close fds they wait on should use net's objects, which tell the two apart).
bool wait_readable(int fd, std::optional<duration> timeout) {
  return detail::wait_fd(fd, true, timeout) != detail::fd_wait::timed_out;
}
bool wait_writable(int fd, std::optional<duration> timeout) {
  return detail::wait_fd(fd, false, timeout) != detail::fd_wait::timed_out;
}

}  // namespace tendril
