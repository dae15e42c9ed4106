// tendril/net.hpp — TCP sockets whose blocking calls suspend only the calling task (asyncio's open_connection and
// start_server, gevent's socket).
//
//   auto listener = tendril::net::tcp_listener::bind("127.0.0.1", 0);  // port 0: any free port
//   tendril::spawn([&] {
//     for (;;) {
//       auto client = std::make_shared<tendril::net::tcp_stream>(listener.accept());
//       tendril::spawn([client] {  // echo
//         char buf[4096];
//         while (std::size_t n = client->read(buf, sizeof buf)) client->write_all(buf, n);
//       });
//     }
//   });
//   auto s = tendril::net::tcp_stream::connect("127.0.0.1", listener.port(), 2s);
//   s.write_all("ping");
//   char reply[4];
//   s.read_exactly(reply, 4, 2s);
//
// Errors:
// - A socket failure is a net::error naming the address ("connect to 127.0.0.1:8080: Connection refused");
//   code() is the errno value. A timeout argument that passes throws net::timeout_error (a net::error).
// - A peer that disconnects makes read() return 0 (end of stream), and read_exactly() and write_all() throw.
//   Their net::error says how many bytes they moved first (transferred()), so a timed-out read_exactly() can go on.
// - Not net::errors: every blocking call is a cancellation point (task_cancelled) and obeys tendril::timeout
//   scopes (tendril::timeout_error); these say nothing of the bytes moved. A second task waiting to read (or
//   accept), or to write, on the same socket gets tendril::usage_error.
// Closing: close(), destroying the object, move-assigning another socket to it, or moving its socket out to
// another object wakes the tasks of its thread waiting on it with net::error "... was closed while waiting"; they
// never touch the object again. (A close from another thread does not wake them.)
// Threads: a socket may be handed to another thread and used there, while no task waits on it, by moving its object
// there (the move unregisters it from the first thread's event loop). An object shared between threads (a
// shared_ptr) keeps the socket registered with the first thread that waited on it until it is closed: that thread
// then wakes for its traffic, and once another thread has closed it, polls its event loop each round instead of
// sleeping when it has nothing else to watch.
// Host names are resolved on the thread pool (getaddrinfo blocks), numeric addresses directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "tendril/detail/wait_queue.hpp"
#include "tendril/export.hpp"

namespace tendril::net {

// A socket operation failed. address() is "host:port"; code() the errno value (0 if none). transferred(): the
// bytes read_exactly() stored in the caller's buffer, or write_all() handed to the kernel, before it failed (0 for
// other calls), so a caller can resume or knows how far the stream got; what() says it too.
class TENDRIL_API error : public std::runtime_error {
 public:
  error(const std::string& what, std::string address, int code, std::size_t transferred = 0);
  const std::string& address() const noexcept { return address_; }
  int code() const noexcept { return code_; }
  std::size_t transferred() const noexcept { return transferred_; }

 private:
  std::string address_;
  int code_;
  std::size_t transferred_;
};

// A socket operation's timeout passed.
class TENDRIL_API timeout_error : public error {
 public:
  using error::error;
};

class TENDRIL_API tcp_stream {
 public:
  // Connects to host:port. Throws net::error (refused, unreachable, unknown host) or net::timeout_error. `host`: a
  // name, an IPv4 or IPv6 address, bracketed or not ("::1", "[::1]"). A name is resolved on the thread pool, and
  // every address it resolves to is tried in turn until one accepts, as Python's socket.create_connection does.
  // "localhost" is not looked up (/etc/hosts is not read for it): it is 127.0.0.1, then ::1, as libcurl has it.
  // With more than one address, the error of a failure names each address tried and its reason, and its type is
  // the last attempt's (timeout_error only if the last one timed out). `timeout` covers the whole call: resolving
  // the name and every attempt, each attempt but the last taking at most an equal share of the time left (so an
  // address that never answers leaves time for the next).
  static tcp_stream connect(std::string_view host, std::uint16_t port, std::optional<duration> timeout = std::nullopt);

  tcp_stream() = default;
  // Takes ownership of a connected socket (made non-blocking here): from now on only this object closes it.
  tcp_stream(int fd, std::string peer);
  tcp_stream(tcp_stream&& other) noexcept;
  tcp_stream& operator=(tcp_stream&& other) noexcept;
  ~tcp_stream();  // closes

  // Reads at most n bytes; returns 0 at end of stream (the peer closed). Waits until some data is available;
  // n == 0 returns 0 at once.
  std::size_t read(void* buf, std::size_t n, std::optional<duration> timeout = std::nullopt);
  // Reads exactly n bytes; throws net::error if the peer closes first (saying how many bytes arrived).
  void read_exactly(void* buf, std::size_t n, std::optional<duration> timeout = std::nullopt);
  // Writes all n bytes. `timeout` bounds the whole write.
  void write_all(const void* buf, std::size_t n, std::optional<duration> timeout = std::nullopt);
  void write_all(std::string_view s, std::optional<duration> timeout = std::nullopt) {
    write_all(s.data(), s.size(), timeout);
  }
  // Ends the sending direction (the peer reads end of stream); reading still works.
  void shutdown();
  void close() noexcept;
  bool is_open() const noexcept { return fd_ >= 0; }
  // The socket, for setsockopt(), getsockname() or tendril::wait_readable(). Close it only through close(): its
  // thread's event loop keeps it registered between waits, and learns of a close only from this object.
  int native_handle() const noexcept { return fd_; }
  // "host:port" of the peer.
  const std::string& peer() const noexcept { return peer_; }

 private:
  int fd_ = -1;
  std::string peer_;
};

class TENDRIL_API tcp_listener {
 public:
  // Binds and listens on host:port (port 0: a free port; see port()). SO_REUSEADDR is set. A name is bound on the
  // first address it resolves to ("localhost": 127.0.0.1 only; "" or "*": every IPv4 address).
  static tcp_listener bind(std::string_view host, std::uint16_t port, int backlog = 4096);

  tcp_listener() = default;
  tcp_listener(tcp_listener&& other) noexcept;
  tcp_listener& operator=(tcp_listener&& other) noexcept;
  ~tcp_listener();

  // Waits for the next connection. Out of file descriptors (net::error EMFILE/ENFILE), the pending connection
  // stays queued and the listener stays readable: a loop that retries at once spins; wait a little first (asyncio
  // pauses accepting for a second).
  tcp_stream accept(std::optional<duration> timeout = std::nullopt);
  std::uint16_t port() const noexcept { return port_; }
  const std::string& address() const noexcept { return address_; }
  void close() noexcept;
  // The listening socket (as tcp_stream::native_handle(): close it only through close()).
  int native_handle() const noexcept { return fd_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::string address_;
};

}  // namespace tendril::net
