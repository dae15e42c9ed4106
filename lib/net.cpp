// lib/net.cpp — tendril::net on POSIX sockets and the public wait_readable / wait_writable.
#include "tendril/net.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ascii.hpp"
#include "reactor.hpp"
#include "tendril/executor.hpp"
#include "tendril/io.hpp"

namespace tendril::net {

error::error(const std::string& what, std::string address, int code, std::size_t transferred)
    : std::runtime_error(what), address_(std::move(address)), code_(code), transferred_(transferred) {}

namespace {

std::string join(std::string_view host, std::uint16_t port) {
  const bool bare_v6 = host.find(':') != std::string_view::npos && host.front() != '[';
  return (bare_v6 ? "[" + std::string(host) + "]" : std::string(host)) + ":" + std::to_string(port);
}

[[noreturn]] void fail(const std::string& op, const std::string& address, int err) {
  throw error(op + " " + address + ": " + std::strerror(err), address, err);
}

// Remaining time until `deadline`, for the next wait.
std::optional<duration> remaining(std::optional<time_point> deadline) {
  if (!deadline) return std::nullopt;
  auto left = *deadline - std::chrono::steady_clock::now();
  return left > duration::zero() ? left : duration::zero();
}

// The object was closed (by another task) while this call waited on it.
[[noreturn]] void closed_meanwhile(const std::string& op, const std::string& what, const std::string& address) {
  throw error(op + " " + address + ": the " + what + " was closed while waiting", address, EBADF);
}

[[noreturn]] void time_out(const std::string& op, const std::string& address);

// Called from a handler of `e`, thrown by a read_exactly() or write_all() after `done` of `total` bytes: rethrows
// it with that progress (as is when nothing was done). Uses only `e`: the object may be gone.
[[noreturn]] void rethrow_after(const error& e, std::size_t done, std::size_t total) {
  if (done == 0) throw;
  const std::string what =
      std::string(e.what()) + " (after " + std::to_string(done) + " of " + std::to_string(total) + " bytes)";
  if (dynamic_cast<const timeout_error*>(&e) != nullptr) throw timeout_error(what, e.address(), e.code(), done);
  throw error(what, e.address(), e.code(), done);
}

// Waits until `fd` is ready; throws net::timeout_error when `deadline` passes, and net::error when the object was
// closed meanwhile by another task: close(), its destructor, or a move assignment that replaced its socket. Then the
// object must not be touched again (it may be gone, or hold another connection, whose data this call must not
// take): hence the copy of the address, and the caller's loop goes no further.
void await(int fd, bool readable, std::optional<time_point> deadline, const char* op, const char* what,
           const std::string& address) {
  // A copy (the object, and `address` with it, may be gone when the wait ends); only on the way to a wait, which
  // costs system calls anyway.
  const std::string addr = address;  // NOLINT(performance-unnecessary-copy-initialization)
  switch (detail::wait_fd(fd, readable, remaining(deadline), true)) {
    case detail::fd_wait::ready:
      return;
    case detail::fd_wait::timed_out:
      time_out(op, addr);
    case detail::fd_wait::closed:
      closed_meanwhile(op, what, addr);
  }
}

// Closes an fd tendril may be waiting on: wakes those waits first (see detail::forget_fd()).
void close_fd(int fd) noexcept {
  detail::forget_fd(fd);
  ::close(fd);
}

[[noreturn]] void time_out(const std::string& op, const std::string& address) {
  throw timeout_error(op + " " + address + ": timed out", address, ETIMEDOUT);
}

// (Sockets tendril makes are non-blocking already: one fcntl() to see it, none to set it.)
void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

struct resolved {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = AF_INET;
};

resolved numeric(const sockaddr* a, socklen_t len) {
  resolved r;
  std::memcpy(&r.addr, a, len);
  r.len = len;
  r.family = a->sa_family;
  return r;
}

// A name's addresses (ports unset), or why there are none.
using lookup = std::pair<std::vector<resolved>, std::string>;

void set_port(resolved& r, std::uint16_t port) noexcept {
  if (r.family == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(&r.addr)->sin6_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in*>(&r.addr)->sin_port = htons(port);
  }
}

// getaddrinfo() of `host` on the default thread pool (it blocks). A lookup of a name already being looked up joins
// it: a wait that times out leaves its lookup running, and tasks retrying a name whose DNS server does not answer
// must not queue one more each time on the pool every run_in_thread() shares.
tendril::future<lookup> start_lookup(const std::string& host, bool passive) {
  struct in_flight {
    std::mutex mutex;
    std::unordered_map<std::string, tendril::future<lookup>> lookups;
  };
  static auto* const state = new in_flight();  // never destroyed: lookups may end after static destructors
  const std::string key = (passive ? "passive " : "active ") + host;
  tendril::promise<lookup> done;
  tendril::future<lookup> result = done.get_future();
  {
    std::lock_guard<std::mutex> lk(state->mutex);
    if (auto it = state->lookups.find(key); it != state->lookups.end()) return it->second;
    state->lookups.emplace(key, result);
  }
  try {
    thread_pool::default_pool().submit([host, passive, key, done]() mutable {
      addrinfo hints{};
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = passive ? AI_PASSIVE : 0;
      addrinfo* res = nullptr;
      const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
      lookup out;
      if (rc != 0 || res == nullptr) {
        out.second = rc == EAI_SYSTEM ? std::strerror(errno) : rc != 0 ? ::gai_strerror(rc) : "no address";
      } else {
        for (const addrinfo* a = res; a != nullptr; a = a->ai_next) {
          if (a->ai_addrlen <= sizeof(sockaddr_storage)) out.first.push_back(numeric(a->ai_addr, a->ai_addrlen));
        }
        ::freeaddrinfo(res);
        if (out.first.empty()) out.second = "no address";
      }
      {
        std::lock_guard<std::mutex> lk(state->mutex);
        state->lookups.erase(key);
      }
      done.set_value(std::move(out));
    });
  } catch (...) {
    std::lock_guard<std::mutex> lk(state->mutex);
    state->lookups.erase(key);
    throw;
  }
  return result;
}

// The addresses of host:port, in the order to try them: a numeric address as is; "localhost" as 127.0.0.1 and then
// ::1 (as libcurl and the system's resolver see it; a listener binds the first only); other names through
// getaddrinfo on the thread pool (see start_lookup()), every address it gives, in its order. The wait for it ends at
// `deadline`: net::timeout_error, naming `op` (the lookup runs on, and a later call for the name joins it).
std::vector<resolved> resolve(std::string_view host, std::uint16_t port, const std::string& address, bool passive,
                              const char* op, std::optional<time_point> deadline = std::nullopt) {
  std::string h(host);
  if (h.find('\0') != std::string::npos) {
    const std::string shown = detail::printable(address);
    throw error("resolve " + shown + ": the host contains a NUL byte", shown, EINVAL);
  }
  // "[::1]", as addresses are written with a port (and as address() and peer() write them), is "::1"; brackets
  // are for IPv6 addresses only.
  if (!h.empty() && h.front() == '[') {
    in6_addr probe{};
    if (h.size() < 2 || h.back() != ']' || ::inet_pton(AF_INET6, h.substr(1, h.size() - 2).c_str(), &probe) != 1) {
      throw error("resolve " + address +
                      ": brackets are for IPv6 addresses (\"[::1]\"); write names and IPv4 "
                      "addresses without them",
                  address, EINVAL);
    }
    h = h.substr(1, h.size() - 2);
  }
  if (h.empty() || h == "*") h = "0.0.0.0";
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = htons(port);
  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  v6.sin6_port = htons(port);
  if (h == "localhost") {
    v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    v6.sin6_addr = in6addr_loopback;
    return {numeric(reinterpret_cast<sockaddr*>(&v4), sizeof v4), numeric(reinterpret_cast<sockaddr*>(&v6), sizeof v6)};
  }
  if (::inet_pton(AF_INET, h.c_str(), &v4.sin_addr) == 1) return {numeric(reinterpret_cast<sockaddr*>(&v4), sizeof v4)};
  if (::inet_pton(AF_INET6, h.c_str(), &v6.sin6_addr) == 1) {
    return {numeric(reinterpret_cast<sockaddr*>(&v6), sizeof v6)};
  }
  tendril::future<lookup> found = start_lookup(h, passive);
  if (deadline && !found.wait_for(*remaining(deadline))) {
    throw timeout_error(std::string(op) + " " + address + ": timed out resolving the name", address, ETIMEDOUT);
  }
  auto [addresses, reason] = found.get();
  if (addresses.empty()) throw error("resolve " + address + ": " + reason, address, 0);
  for (resolved& r : addresses) set_port(r, port);
  return addresses;
}

std::string describe(const sockaddr_storage& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
    ::inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
    return join(buf, ntohs(v6->sin6_port));
  }
  const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
  ::inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
  return join(buf, ntohs(v4->sin_port));
}

// Takes the fd out of an object another task may be waiting on: wakes those waits as a close does (they hold the
// object, not the socket), so that none of them touches the object later, moved-from or gone.
int take_fd(int& fd) noexcept {
  if (fd >= 0) detail::forget_fd(fd);
  return std::exchange(fd, -1);
}

}  // namespace

// ---- tcp_stream ------------------------------------------------------------------------------------------------

tcp_stream::tcp_stream(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) { set_nonblocking(fd_); }

tcp_stream::tcp_stream(tcp_stream&& other) noexcept : fd_(take_fd(other.fd_)), peer_(std::move(other.peer_)) {}

tcp_stream& tcp_stream::operator=(tcp_stream&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = take_fd(other.fd_);
    peer_ = std::move(other.peer_);
  }
  return *this;
}

tcp_stream::~tcp_stream() { close(); }

tcp_stream tcp_stream::connect(std::string_view host, std::uint16_t port, std::optional<duration> timeout) {
  const std::string address = join(host, port);
  const auto deadline = detail::deadline_after(timeout);
  const std::vector<resolved> addresses = resolve(host, port, address, false, "connect to", deadline);
  // Each address in turn until one accepts (socket.create_connection), all within `timeout`: each attempt but the
  // last may take an equal share of the time left, so that an address that never answers (an unroutable IPv6
  // one, say) leaves time for the next. The error of a failure names every address tried, with its reason, when
  // there was more than one.
  std::string tried;
  int last_error = 0;
  bool last_timed_out = false;
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    const resolved& r = addresses[i];
    const std::size_t left = addresses.size() - i;
    std::optional<time_point> attempt_deadline = deadline;
    if (deadline && left > 1) attempt_deadline = std::chrono::steady_clock::now() + *remaining(deadline) / left;
    // Closed (through close_fd) unless handed to the stream returned: built in place there, not moved out of a
    // local, whose move would unregister the fd that the wait below registered.
    struct fd_guard {
      int fd;
      ~fd_guard() {
        if (fd >= 0) close_fd(fd);
      }
    } guard{::socket(r.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
    const int fd = guard.fd;
    int err = fd < 0 ? errno : 0;
    if (fd >= 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&r.addr), r.len) != 0) {
        err = errno;
        if (err == EINPROGRESS) {
          try {
            await(fd, false, attempt_deadline, "connect to", "tcp_stream", address);
            socklen_t len = sizeof err;
            ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
          } catch (const timeout_error&) {
            if (addresses.size() == 1) throw;
            err = ETIMEDOUT;
          }
        }
      }
      if (err == 0) return tcp_stream(std::exchange(guard.fd, -1), address);
    }
    last_error = err;
    last_timed_out = err == ETIMEDOUT;
    tried +=
        (tried.empty() ? "" : "; ") + describe(r.addr) + ": " + (last_timed_out ? "timed out" : std::strerror(err));
  }
  if (addresses.size() == 1) fail("connect to", address, last_error);
  if (last_timed_out) {
    throw timeout_error("connect to " + address + ": timed out (tried " + tried + ")", address, ETIMEDOUT);
  }
  throw error("connect to " + address + ": " + std::strerror(last_error) + " (tried " + tried + ")", address,
              last_error);
}

std::size_t tcp_stream::read(void* buf, std::size_t n, std::optional<duration> timeout) {
  if (fd_ < 0) throw error("read from a closed tcp_stream", peer_, EBADF);
  if (n == 0) return 0;  // as recv(0) would, at once (on an empty socket recv() says EAGAIN: no wait for data)
  const auto deadline = detail::deadline_after(timeout);
  for (;;) {
    if (fd_ < 0) closed_meanwhile("read from", "tcp_stream", peer_);  // moved out (moved-to objects are alive)
    ssize_t r = ::recv(fd_, buf, n, 0);
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) fail("read from", peer_, errno);
    await(fd_, true, deadline, "read from", "tcp_stream", peer_);
  }
}

void tcp_stream::read_exactly(void* buf, std::size_t n, std::optional<duration> timeout) {
  if (fd_ < 0) throw error("read from a closed tcp_stream", peer_, EBADF);
  const auto deadline = detail::deadline_after(timeout);
  auto* p = static_cast<char*>(buf);
  std::size_t got = 0;
  try {
    while (got < n) {
      const std::size_t r = read(p + got, n - got, remaining(deadline));
      if (r == 0) break;
      got += r;
    }
  } catch (const error& e) {
    rethrow_after(e, got, n);
  }
  if (got < n) {
    throw error("read from " + peer_ + ": connection closed by the peer after " + std::to_string(got) + " of " +
                    std::to_string(n) + " bytes",
                peer_, 0, got);
  }
}

void tcp_stream::write_all(const void* buf, std::size_t n, std::optional<duration> timeout) {
  if (fd_ < 0) throw error("write to a closed tcp_stream", peer_, EBADF);
  const auto deadline = detail::deadline_after(timeout);
  const auto* p = static_cast<const char*>(buf);
  std::size_t done = 0;
  try {
    while (done < n) {
      if (fd_ < 0) closed_meanwhile("write to", "tcp_stream", peer_);  // moved out
      const ssize_t w = ::send(fd_, p + done, n - done, MSG_NOSIGNAL);
      if (w >= 0) {
        done += static_cast<std::size_t>(w);
        continue;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) fail("write to", peer_, errno);
      await(fd_, false, deadline, "write to", "tcp_stream", peer_);
    }
  } catch (const error& e) {
    rethrow_after(e, done, n);
  }
}

void tcp_stream::shutdown() {
  if (fd_ < 0) throw error("shutdown of a closed tcp_stream", peer_, EBADF);
  if (::shutdown(fd_, SHUT_WR) != 0 && errno != ENOTCONN) fail("shutdown of", peer_, errno);
}

void tcp_stream::close() noexcept {
  if (fd_ >= 0) close_fd(std::exchange(fd_, -1));
}

// ---- tcp_listener ----------------------------------------------------------------------------------------------

tcp_listener::tcp_listener(tcp_listener&& other) noexcept
    : fd_(take_fd(other.fd_)), port_(std::exchange(other.port_, 0)), address_(std::move(other.address_)) {}

tcp_listener& tcp_listener::operator=(tcp_listener&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = take_fd(other.fd_);
    port_ = std::exchange(other.port_, 0);
    address_ = std::move(other.address_);
  }
  return *this;
}

tcp_listener::~tcp_listener() { close(); }

tcp_listener tcp_listener::bind(std::string_view host, std::uint16_t port, int backlog) {
  std::string address = join(host, port);
  const resolved r = resolve(host, port, address, true, "listen on").front();
  tcp_listener l;
  l.fd_ = ::socket(r.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (l.fd_ < 0) fail("listen on", address, errno);
  int one = 1;
  ::setsockopt(l.fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(l.fd_, reinterpret_cast<const sockaddr*>(&r.addr), r.len) != 0) fail("bind to", address, errno);
  if (::listen(l.fd_, backlog) != 0) fail("listen on", address, errno);
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(l.fd_, reinterpret_cast<sockaddr*>(&bound), &len);
  l.address_ = describe(bound);
  l.port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return l;
}

tcp_stream tcp_listener::accept(std::optional<duration> timeout) {
  if (fd_ < 0) throw error("accept on a closed tcp_listener", address_, EBADF);
  const auto deadline = detail::deadline_after(timeout);
  for (;;) {
    if (fd_ < 0) closed_meanwhile("accept on", "tcp_listener", address_);  // moved out
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return tcp_stream(fd, describe(peer));
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) fail("accept on", address_, errno);
    await(fd_, true, deadline, "accept on", "tcp_listener", address_);
  }
}

void tcp_listener::close() noexcept {
  if (fd_ >= 0) close_fd(std::exchange(fd_, -1));
}

}  // namespace tendril::net
