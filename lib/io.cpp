// lib/io.cpp — waiting for fds on the reactor: wait_readable / wait_writable, and tendril::net's sockets.
//
// Two ways to watch an fd, both through one fd_entry per fd number and thread:
//  - per wait (wait_readable()/wait_writable() on any fd): registered level-triggered for the wait, unregistered
//    after it, since tendril does not know when such an fd is closed;
//  - kept (tendril::net's sockets, which tell forget_fd() before they close or give away an fd): registered once,
//    edge-triggered for reading and writing, until forget_fd(). A wait then costs no epoll_ctl: the entry records
//    the edges that came while nobody waited, and a wait that finds one returns at once for the caller to retry
//    its call (which said EAGAIN before the edge, or reads what came since). A keep-alive connection's read used to
//    cost an epoll_ctl pair; it now costs none.
// A kept registration is valid while the fd's generation (bumped by every forget_fd(), on any thread) is the one
// it was made for: an fd closed by another thread leaves a stale entry here, which the next wait on that fd
// number registers afresh instead of trusting.
#include "tendril/io.hpp"

#include <poll.h>
#include <sys/epoll.h>

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "exec_context.hpp"
#include "reactor.hpp"

namespace tendril {
namespace {

constexpr std::uint32_t readable_events = EPOLLIN | EPOLLRDHUP | EPOLLPRI | EPOLLHUP | EPOLLERR;
constexpr std::uint32_t writable_events = EPOLLOUT | EPOLLHUP | EPOLLERR;

// The generation of every fd number, bumped by forget_fd() (on any thread); a kept registration made for an
// older generation is stale. Chunks of a two-level table, allocated on first use and never freed, so that readers
// need no lock. fds beyond the table (a million) are watched per wait.
class fd_generations {
 public:
  static constexpr int chunk_bits = 12;
  static constexpr int chunks = 256;
  static constexpr int limit = chunks << chunk_bits;

  // The counter of `fd` (0 <= fd < limit), its chunk allocated if need be.
  static std::atomic<std::uint32_t>& of(int fd) {
    std::atomic<chunk*>& slot = table()[chunk_index(fd)];
    chunk* c = slot.load(std::memory_order_acquire);
    if (c == nullptr) {
      auto fresh = std::make_unique<chunk>();
      if (slot.compare_exchange_strong(c, fresh.get(), std::memory_order_acq_rel)) {
        c = fresh.release();
      }  // else another thread installed one: `c` is it, `fresh` is freed
    }
    return (*c)[index_in_chunk(fd)];
  }
  // The counter of `fd` without allocating its chunk (0 if there is none).
  static std::uint32_t peek(int fd) noexcept {
    std::atomic<std::uint32_t>* counter = existing(fd);
    return counter != nullptr ? counter->load() : 0;
  }
  // Bumps the counter of `fd` if its chunk exists (no chunk: no kept registration was ever made in its range).
  static void bump(int fd) noexcept {
    if (std::atomic<std::uint32_t>* counter = existing(fd)) counter->fetch_add(1);
  }

 private:
  using chunk = std::array<std::atomic<std::uint32_t>, std::size_t{1} << chunk_bits>;
  static std::size_t chunk_index(int fd) noexcept { return static_cast<std::size_t>(fd >> chunk_bits); }
  static std::size_t index_in_chunk(int fd) noexcept { return static_cast<std::size_t>(fd & ((1 << chunk_bits) - 1)); }
  // The counter of `fd` if its chunk exists (null if not, or if `fd` is outside the table).
  static std::atomic<std::uint32_t>* existing(int fd) noexcept {
    if (fd < 0 || fd >= limit) return nullptr;
    chunk* c = table()[chunk_index(fd)].load(std::memory_order_acquire);
    return c != nullptr ? &(*c)[index_in_chunk(fd)] : nullptr;
  }
  static std::array<std::atomic<chunk*>, chunks>& table() noexcept {
    static std::array<std::atomic<chunk*>, chunks> t{};  // trivially destructible: usable until the very end
    return t;
  }
};

// The waiters of one fd on this thread: at most one for readability and one for writability. One epoll
// registration serves both (an fd can be registered only once per epoll set).
struct fd_entry final : detail::io_source {
  detail::waiter* reader = nullptr;
  detail::waiter* writer = nullptr;
  detail::reactor* owner = nullptr;  // this thread's reactor, which watches the fd
  bool kept = false;                 // registered edge-triggered until forget_fd() (see the top of this file)
  std::uint32_t generation = 0;      // of the fd, when it was last registered
  // Stale (its fd closed on another thread): out of the map, but never freed before the thread's teardown, since
  // epoll may still hold it for the old socket, if that lives on elsewhere (a dup, a forked child).
  bool retired = false;
  std::uint32_t seen = 0;  // kept: the events epoll reported that no wait has consumed yet
  // forget_fd() took it out of the map (its fd is being closed): its waiters were woken and the last one to
  // leave deletes it.
  bool forgotten = false;

  std::uint32_t mask() const noexcept {
    return (reader != nullptr ? EPOLLIN | EPOLLRDHUP : 0u) | (writer != nullptr ? EPOLLOUT : 0u);
  }
  void on_ready(std::uint32_t events) noexcept override {
    if (kept) seen |= events;
    if (reader != nullptr && (events & readable_events) != 0) reader->notify(detail::waiter::outcome::notified);
    if (writer != nullptr && (events & writable_events) != 0) writer->notify(detail::waiter::outcome::notified);
  }
};

// fd -> its entry, for this thread. Allocated while some fd is waited on or kept, and freed when none is or when
// the thread's scheduler is torn down, so nothing outlives the thread (a thread_local object with a destructor
// could be destroyed before thread exit cancels the tasks still waiting here). Entries are heap objects:
// forget_fd() detaches an entry its parked waiters still use, so that the fd number, once reused, starts afresh.
thread_local std::unordered_map<int, fd_entry*>* tl_fds = nullptr;

void drop_map_if_empty() noexcept {
  if (tl_fds != nullptr && tl_fds->empty()) {
    delete tl_fds;
    tl_fds = nullptr;
  }
}

std::uint32_t generation_of(int fd) {
  return fd >= 0 && fd < fd_generations::limit ? fd_generations::of(fd).load() : 0;
}

// Whether `entry` may still be registered under a socket closed on another thread since: registered (kept, or
// waited on now) for an older generation of its fd number.
bool is_stale(const fd_entry& entry, std::uint32_t generation) noexcept {
  return entry.generation != generation && (entry.kept || entry.mask() != 0);
}

// Retired entries (see fd_entry::retired), freed at the thread's teardown.
thread_local std::vector<fd_entry*>* tl_retired = nullptr;

// At scheduler teardown (every task of the thread has finished, so nobody waits): forgets the kept entries of
// sockets still open, whose reactor is going away, and frees the retired ones.
void forget_all() noexcept {
  if (tl_fds != nullptr) {
    for (auto& [fd, entry] : *tl_fds) {
      if (!is_stale(*entry, fd_generations::peek(fd))) entry->owner->unwatch(fd);  // else not ours to unwatch
      delete entry;
    }
    tl_fds->clear();
    drop_map_if_empty();
  }
  if (tl_retired != nullptr) {
    for (fd_entry* entry : *tl_retired) delete entry;
    delete tl_retired;
    tl_retired = nullptr;
  }
}

// Takes a stale entry out of the map for good (see fd_entry::retired); its waiters, if any, wake as from a close.
void retire(int fd, fd_entry* entry) noexcept {
  tl_fds->erase(fd);
  entry->retired = true;
  entry->forgotten = true;
  try {
    if (tl_retired == nullptr) tl_retired = new std::vector<fd_entry*>();
    tl_retired->push_back(entry);
  } catch (...) {
    // out of memory: leave it allocated (a leak, never a use after free)
  }
  if (entry->reader != nullptr) entry->reader->notify(detail::waiter::outcome::notified);
  if (entry->writer != nullptr) entry->writer->notify(detail::waiter::outcome::notified);
  drop_map_if_empty();
}

std::unordered_map<int, fd_entry*>& fds() {
  if (tl_fds == nullptr) {
    tl_fds = new std::unordered_map<int, fd_entry*>();
    static thread_local bool hooked = false;  // one hook per thread, however often the map comes and goes
    if (!hooked) {
      hooked = true;
      detail::at_scheduler_teardown(forget_all);
    }
  }
  return *tl_fds;
}

// The entry of `fd` on this thread, made if need be.
fd_entry* entry_for(int fd, detail::reactor& r) {
  auto& map = fds();
  fd_entry*& found = map[fd];
  if (found == nullptr) {
    try {
      found = new fd_entry();
      found->owner = &r;
    } catch (...) {
      map.erase(fd);
      drop_map_if_empty();
      throw;
    }
  }
  return found;
}

}  // namespace

namespace detail {
fd_wait wait_fd(int fd, bool readable, std::optional<duration> timeout, bool keep) {
  detail::reactor& r = detail::reactor::current();
  const bool in_table = fd >= 0 && fd < fd_generations::limit;
  const std::uint32_t generation = generation_of(fd);
  fd_entry* entry = entry_for(fd, r);
  if (is_stale(*entry, generation)) {
    // Closed on another thread, and the number reused since (see the top of this file).
    retire(fd, entry);
    entry = entry_for(fd, r);
  }
  detail::waiter*& slot = readable ? entry->reader : entry->writer;
  if (slot != nullptr) {
    throw usage_error("another task is already waiting for fd " + std::to_string(fd) + " to become " +
                      (readable ? "readable" : "writable"));
  }
  const std::uint32_t wanted = readable ? readable_events : writable_events;
  if (keep && in_table && !entry->kept) {
    // New, or watched per wait by another waiter: edge-triggered from now on. epoll reports an fd that is ready
    // already at the next poll.
    try {
      r.watch(fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, entry);
    } catch (...) {
      if (entry->mask() == 0) {  // made for this wait
        tl_fds->erase(fd);
        delete entry;
        drop_map_if_empty();
      }
      throw;
    }
    entry->kept = true;
    entry->generation = generation;
    entry->seen = 0;
  } else if (entry->kept && keep && (entry->seen & wanted) != 0) {
    // An edge since the last wait: the caller tries again first. Still a cancellation point (checked before the
    // edge is consumed, which a caller that catches task_cancelled and reads on must still find).
    detail::checkpoint(detail::current_exec());
    entry->seen &= ~wanted;
    return fd_wait::ready;
  } else if (entry->kept && !keep) {
    // wait_readable()/wait_writable() on a socket of tendril::net: their callers may not have seen EAGAIN first,
    // and an edge only reports what changes, so the level decides (the edges seen stay for net's next wait).
    detail::checkpoint(detail::current_exec());
    pollfd p{fd, static_cast<short>(readable ? POLLIN : POLLOUT), 0};
    if (::poll(&p, 1, 0) > 0) return fd_wait::ready;
  }
  // Takes this waiter off the entry; true if the fd was forgotten (closed) meanwhile.
  auto release = [&](bool woken) {
    slot = nullptr;
    if (entry->forgotten) {  // no longer in the map nor watched by us
      if (entry->mask() == 0 && !entry->retired) delete entry;
      return true;
    }
    if (entry->kept) {
      // A wake-up by an edge consumes it (the caller's next call takes everything that has come). Any other end
      // leaves it for the next wait: an edge that came as the wait timed out must not be lost.
      if (woken) entry->seen &= ~wanted;
    } else if (entry->mask() == 0) {
      if (generation_of(fd) != entry->generation) {
        retire(fd, entry);  // closed on another thread meanwhile: epoll may still hold it for the old socket
      } else {
        r.unwatch(fd);
        tl_fds->erase(fd);
        delete entry;
        drop_map_if_empty();
      }
    } else {
      try {
        r.watch(fd, entry->mask(), entry);
      } catch (...) {
        // the fd was closed under the other waiter; it will time out or be cancelled
      }
    }
    return false;
  };
  detail::waiter w;
  slot = &w;
  if (!entry->kept) {
    try {
      r.watch(fd, entry->mask(), entry);
      entry->generation = generation;
    } catch (...) {
      release(false);
      throw;
    }
  }
  detail::waiter::outcome o = detail::park(w, nullptr, detail::deadline_after(timeout));
  // Closed before or after the wake-up (a task that ran in between closed it): either way the fd is gone. A
  // cancellation (or a timeout scope) still wins: it must not be swallowed.
  const bool closed = release(o == detail::waiter::outcome::notified);
  if (o != detail::waiter::outcome::notified && o != detail::waiter::outcome::timed_out) {
    detail::throw_for(o, detail::current_exec());
  }
  if (closed) return fd_wait::closed;
  return o == detail::waiter::outcome::notified ? fd_wait::ready : fd_wait::timed_out;
}

void forget_fd(int fd) noexcept {
  const bool in_table = fd >= 0 && fd < fd_generations::limit;
  // The generation before this close: an entry registered for an older one is stale.
  const std::uint32_t generation = in_table ? fd_generations::peek(fd) : 0;
  fd_generations::bump(fd);  // a kept registration of it on another thread is stale from now on
  if (tl_fds == nullptr) return;
  auto it = tl_fds->find(fd);
  if (it == tl_fds->end()) return;
  fd_entry* entry = it->second;
  if (is_stale(*entry, generation)) {
    retire(fd, entry);
    return;
  }
  tl_fds->erase(it);
  entry->owner->unwatch(fd);
  if (entry->mask() == 0) {  // kept, and nobody waits
    delete entry;
    drop_map_if_empty();
    return;
  }
  drop_map_if_empty();
  entry->forgotten = true;
  // Its waiters wake up as if the fd were ready; the caller finds its object closed and reports it.
  if (entry->reader != nullptr) entry->reader->notify(waiter::outcome::notified);
  if (entry->writer != nullptr) entry->writer->notify(waiter::outcome::notified);
}
}  // namespace detail

// Closed meanwhile reads as ready: the caller's next I/O call on the fd reports it (EBADF, or whatever now has
// that number: callers that close fds they wait on should use net's objects, which tell the two apart).
bool wait_readable(int fd, std::optional<duration> timeout) {
  return detail::wait_fd(fd, true, timeout, false) != detail::fd_wait::timed_out;
}
bool wait_writable(int fd, std::optional<duration> timeout) {
  return detail::wait_fd(fd, false, timeout, false) != detail::fd_wait::timed_out;
}

}  // namespace tendril
