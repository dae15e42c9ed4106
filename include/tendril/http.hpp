// tendril/http.hpp — an HTTP client that looks blocking but suspends only the calling task.
//
//   tendril::run([] {
//     std::vector<tendril::task<std::size_t>> ts;
//     for (auto& url : urls)
//       ts.push_back(tendril::spawn([url] { return tendril::http::get(url).raise_for_status().body.size(); }));
//     for (auto n : tendril::gather(ts)) std::printf("%zu\n", n);   // all downloads run at once, on one thread
//   });
//
// Every call runs a libcurl transfer on the calling thread's event loop: while it waits for the network, the
// other tasks of the thread run. The same calls work in a task, in a greenlet inside a task, and in plain main()
// with no task at all. Cancelling a task removes its transfer at once.
//
// A `session` (aiohttp.ClientSession) adds connection reuse, default headers, concurrency limits, retries,
// streaming reads and downloads to files. The free functions use a per-thread default session.
//
// Errors: http::error (with the libcurl code, libcurl's message and the URL) for anything that prevents a
// response — wrong URL, refused connection, TLS failure, a connection dropped mid-body; http::timeout_error for
// timeouts; http::status_error from raise_for_status() for 4xx/5xx. A response with status 404 is not an error
// until you call raise_for_status(). (libcurl is an implementation detail: codes are plain ints.)
//
// TLS certificates are verified by default (set verify_tls = false for self-signed test servers, or pass their
// certificate as ca_file). SIGPIPE is ignored process-wide once the first transfer starts (libcurl's advice).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tendril/detail/wait_queue.hpp"
#include "tendril/export.hpp"

namespace tendril::http {

// Transfer progress, passed to options::on_progress. Totals are 0 while unknown.
struct progress {
  std::int64_t downloaded = 0;
  std::int64_t download_total = 0;
  std::int64_t uploaded = 0;
  std::int64_t upload_total = 0;
};

namespace detail {
struct headers_access;  // lib/: how the HTTP driver hands a response's header lines to a headers_map
}  // namespace detail

// Response headers: a flat container (one vector of name/value pairs, not a node per header), in the order the
// server sent them. Names are lower-cased; a repeated header's values are joined with ", " (the first one's place
// is kept). Lookups are case-insensitive: find("Content-Type") finds "content-type".
//
//   for (const auto& [name, value] : r.headers) std::printf("%s: %s\n", name.c_str(), value.c_str());
//   if (auto it = r.headers.find("etag"); it != r.headers.end()) remember(it->second);
//   std::size_t n = std::stoul(r.headers.at("content-length"));   // throws std::out_of_range if absent
//
// A response's headers are parsed when they are first read (any member below), not when they arrive: a response
// whose headers are never looked at never pays for splitting them into strings. That first read may therefore
// allocate (and throw std::bad_alloc). Reading one map from several threads at once is safe, as for any const
// object of the standard library (the first read parses, the others wait for it); changing it (add, clear,
// assignment) needs the caller's own exclusion, as usual. A moved-from map is empty. A stream's map grows when a
// chunked body's trailers arrive (after the body): as with any vector, that may invalidate iterators and
// references into stream::headers() taken before the body was read to its end.
class TENDRIL_API headers_map {
 public:
  using value_type = std::pair<std::string, std::string>;  // lower-cased name, value
  using const_iterator = std::vector<value_type>::const_iterator;
  using iterator = const_iterator;  // entries are read-only: add() keeps names lower-cased and unique
  using size_type = std::size_t;

  headers_map() = default;
  // Adds each pair as add() does.
  headers_map(std::initializer_list<std::pair<std::string_view, std::string_view>> headers);
  headers_map(const headers_map& other);
  headers_map(headers_map&& other) noexcept;
  headers_map& operator=(const headers_map& other);
  headers_map& operator=(headers_map&& other) noexcept;
  ~headers_map() = default;

  const_iterator begin() const { return entries().begin(); }
  const_iterator end() const { return entries().end(); }
  size_type size() const { return entries().size(); }
  bool empty() const { return entries().empty(); }

  // The header named `name` (case-insensitive), or end().
  const_iterator find(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != end(); }
  size_type count(std::string_view name) const { return contains(name) ? 1 : 0; }
  // The value of header `name` (case-insensitive). Throws std::out_of_range if there is none.
  const std::string& at(std::string_view name) const;

  // Adds a header: the name is lower-cased (ASCII); a name already present gets ", " and `value` appended to its
  // value, as HTTP folds repeated fields.
  void add(std::string_view name, std::string_view value);
  void clear() noexcept;
  // Reserves room for `n` headers.
  void reserve(size_type n) {
    entries();  // parses the pending lines first (their parse would not keep the capacity)
    entries_.reserve(n);
  }

  friend bool operator==(const headers_map& a, const headers_map& b) { return a.entries() == b.entries(); }

 private:
  friend struct detail::headers_access;

  // entries() is inline: this layout and the state values below are part of the ABI (a change bumps the SONAME).

  // state_: `parsed` (entries_ is everything), `pending` (lines_ still to be parsed into entries_), or `busy` (one
  // thread is parsing lines_, or copying them, and the others wait for it).
  enum : std::uint8_t { parsed, pending, busy };

  // The entries, once the pending lines are parsed into them.
  const std::vector<value_type>& entries() const {
    return state_.load(std::memory_order_acquire) == parsed ? entries_ : parse_pending();
  }
  const std::vector<value_type>& parse_pending() const;
  // Waits until no other thread parses or copies, then takes the pending lines: returns false if there are none.
  bool lock_pending() const noexcept;

  mutable std::vector<value_type> entries_;  // in arrival order
  // Header lines as they arrived and not parsed yet ("Name: value\n" each), while state_ is not `parsed`.
  mutable std::string lines_;
  mutable std::atomic<std::uint8_t> state_{parsed};
};

// Per-request options. Every field has a safe default.
struct options {
  // Extra request headers, e.g. {"Accept", "application/json"}. Added after the session's default headers; a name
  // given here replaces a session default of the same name (case-insensitive).
  std::vector<std::pair<std::string, std::string>> headers;
  // Limit for the whole transfer (connect + send + receive); none by default. Exceeding it throws timeout_error.
  // Rounded up to whole milliseconds (zero: 1 ms); a negative one is a tendril::usage_error.
  std::optional<duration> timeout;
  // Limit for establishing the connection; libcurl's default (300 s) if unset. Rounded as timeout.
  std::optional<duration> connect_timeout;
  // Follow 3xx redirects, at most max_redirects of them (an error beyond that; a negative limit is a usage_error).
  bool follow_redirects = true;
  int max_redirects = 10;
  // Verify the server's TLS certificate and host name. Turn off only for test servers. In a session, true means
  // "as the session's defaults say" (see session_options::defaults).
  bool verify_tls = true;
  // A PEM file of CA certificates to trust instead of the system's.
  std::string ca_file;
  // Proxy URL ("http://host:port", "socks5://..."). Empty: the environment's, as libcurl reads it (http_proxy,
  // https_proxy/HTTPS_PROXY, all_proxy/ALL_PROXY, no_proxy/NO_PROXY), provided one of those proxy variables was set
  // when the thread made its first HTTP request; if none was, the thread never looks again (set them before).
  std::string proxy;
  // Called as data moves; return false to abort the transfer (it then fails with http::error). It runs inside
  // libcurl on the thread's event loop, so it must not block: a sleep, wait, yield, I/O or request in it throws
  // tendril::usage_error there. An exception it throws aborts the transfer and is rethrown to the requester.
  std::function<bool(const progress&)> on_progress;
};

struct TENDRIL_API response {
  long status = 0;      // HTTP status of the final response
  headers_map headers;  // of the final response
  std::string body;
  std::string url;     // the effective URL, after redirects
  duration elapsed{};  // from the start of the request to the end of the body
  bool ok() const noexcept { return status >= 200 && status < 300; }
  // Throws status_error for a 4xx or 5xx status; returns *this otherwise.
  const response& raise_for_status() const;
  // A header's value ("" if absent); `name` is case-insensitive.
  std::string header(std::string_view name) const;
};

// A request could not be completed (no response). code() is libcurl's CURLcode as an int.
class TENDRIL_API error : public std::runtime_error {
 public:
  error(int code, std::string curl_message, std::string url, const std::string& what);
  int code() const noexcept { return code_; }
  const std::string& curl_message() const noexcept { return curl_message_; }
  const std::string& url() const noexcept { return url_; }

 private:
  int code_;
  std::string curl_message_;
  std::string url_;
};

// The request or connection timed out.
class TENDRIL_API timeout_error : public error {
 public:
  using error::error;
};

// raise_for_status() on a 4xx/5xx response.
class TENDRIL_API status_error : public error {
 public:
  status_error(long status, const std::string& url);
  long status() const noexcept { return status_; }

 private:
  long status_;
};

struct download_result {
  std::filesystem::path path;  // where the file now is
  std::uint64_t bytes = 0;
  long status = 0;
  std::string url;  // effective URL
  duration elapsed{};
};

class session;
namespace detail {
class stream_state;
class session_state;
}  // namespace detail

// A body being received: read(n) suspends the task until data arrives. At most ~1 MiB is buffered: when the
// reader falls behind, the transfer is paused (backpressure), so memory stays bounded whatever the body size.
// Destroying an unfinished stream aborts its transfer. The transfer runs on the event loop of the thread that
// opened the stream: use it on that thread. On another thread, while that one lives, every member but the
// destructor and assignment throws usage_error (destroying it there is not checked: don't). A stream that outlives
// that thread (moved to another thread, or held
// in a static destroyed after main() returns) may still be destroyed; its transfer, if still running, was aborted
// when the thread exited, and reads throw http::error (after the data that had arrived). Move-only; every member
// but the destructor and assignment throws usage_error on a moved-from stream.
class TENDRIL_API stream {
 public:
  stream(stream&&) noexcept;
  stream& operator=(stream&&) noexcept;
  ~stream();

  // Up to n bytes; an empty string once the body is complete. Throws http::error if the transfer fails.
  std::string read(std::size_t n);
  // Like read(into.size()), into a buffer of the caller's (Python's readinto): returns the number of bytes
  // stored at the start of `into`, 0 once the body is complete (or if `into` is empty). No allocation per
  // piece, and while the task waits for data libcurl's pieces are copied straight into `into`: the cheapest way
  // to consume a large body. `into` must stay valid during the call only. Throws http::error as read() does.
  std::size_t read_into(std::span<char> into);
  // Reads the rest of the body.
  std::string read_all();
  long status() const;
  const headers_map& headers() const;
  const std::string& url() const;  // effective URL
  // Throws status_error for 4xx/5xx.
  const stream& raise_for_status() const;

 private:
  friend class session;
  explicit stream(std::unique_ptr<detail::stream_state> s);
  // Throws usage_error for a moved-from stream, or on another thread while the opening one lives.
  detail::stream_state& state() const;
  std::unique_ptr<detail::stream_state> state_;
};

// What session_options::on_retry hears before each retry (method and url point into the request: valid during
// the call only).
struct retry_event {
  std::string_view method;
  std::string_view url;
  int retry = 0;       // 1 for the first retry
  int retries = 0;     // the most there will be (session_options::retries)
  duration wait{};     // how long the session waits before this retry
  std::string reason;  // why the attempt before failed: the error's what(), or "HTTP status 503"
};

struct session_options {
  // Headers sent with every request of the session (a request's own header of the same name replaces one).
  std::vector<std::pair<std::string, std::string>> headers;
  // At most this many requests of the session in flight at once (others wait in tendril, not in libcurl).
  std::size_t max_connections = 100;
  // At most this many in flight to one host (scheme://host:port); 0: no per-host limit.
  std::size_t max_per_host = 0;
  // Retries for idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS) that fail to connect, time out, lose the
  // connection, or get 502/503/504; waits retry_backoff, doubling each time up to retry_backoff_max (0: retry at
  // once; negative: usage_error when the session is made). 0 retries: none.
  int retries = 0;
  duration retry_backoff = std::chrono::milliseconds(200);
  duration retry_backoff_max = std::chrono::seconds(30);
  // Called in the requesting task before each retry's wait (what curl's "Will retry in N seconds" warning and
  // urllib3's retry log tell). An exception from it ends the request with that exception.
  std::function<void(const retry_event&)> on_retry;
  // Defaults for every request's options (timeouts, TLS, proxy...). Per-request headers are added to these. A
  // request's field takes the default given here when it holds its own built-in value (no timeout, an empty
  // ca_file or proxy, follow_redirects true, max_redirects 10, verify_tls true, no on_progress), so a request
  // cannot set a field back to its built-in value: in a session whose defaults turn verify_tls off, a request's
  // verify_tls = true does not verify (as aiohttp's ssl=True defers to its connector). Requests that must verify
  // belong in a session that does.
  options defaults;
};

// aiohttp.ClientSession: shares connections (keep-alive, HTTP/2 multiplexing where the server offers it),
// default headers, limits and retries between requests. Usable from any task of the thread that created it
// (and from other threads: each thread's transfers run on that thread's event loop). Destroying a session while
// other tasks have calls in it already begun lets those finish, under the session's settings and limits.
class TENDRIL_API session {
 public:
  // Throws tendril::usage_error if o.defaults holds a negative limit (see options).
  explicit session(session_options o = {});
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  response get(std::string_view url, const options& o = {});
  response post(std::string_view url, std::string body, const options& o = {});
  response request(std::string_view method, std::string_view url, std::string body = {}, const options& o = {});
  // Streams the body into a temporary file beside `to`, renames it to `to` on success, removes it on any failure
  // or cancellation before the rename (never a half-written file under the final name). A 4xx/5xx status is a failure
  // (status_error). Throws std::filesystem::filesystem_error naming the path, before anything is sent, when `to`
  // is an existing directory, symbolic link, device, FIFO or socket (only a regular file is replaced) or has no file
  // name, or its directory is missing, not a directory or not writable; and when the temporary file cannot be written
  // or flushed to disk (it is fdatasync()ed before the rename, so a completed download is durable before it appears
  // under its final name). After the rename its directory is flushed too (fsync), so that the new name is durable
  // once download() returns; if that flush fails, the error says so, and the complete file stays in place (as it
  // does for a task cancelled during that flush). Not flushed: a directory the process may write to but not read,
  // and one whose file system cannot sync directories (EINVAL). Cost: on ext4 or xfs each flush waits for a
  // journal commit, so many small downloads into one directory pay one each.
  download_result download(std::string_view url, const std::filesystem::path& to, const options& o = {});
  // Starts a GET and returns once the response headers are in (without waiting for the body); read the body with
  // stream::read(). Throws http::error if the request fails before the headers arrive (later failures are thrown
  // by read()).
  stream open(std::string_view url, const options& o = {});

  const session_options& settings() const noexcept;

 private:
  std::shared_ptr<detail::session_state> state_;  // shared with the calls in progress
};

// One-off requests through the calling thread's default session.
TENDRIL_API response get(std::string_view url, const options& o = {});
TENDRIL_API response post(std::string_view url, std::string body, const options& o = {});
TENDRIL_API response request(std::string_view method, std::string_view url, std::string body = {},
                             const options& o = {});
TENDRIL_API download_result download(std::string_view url, const std::filesystem::path& to, const options& o = {});

}  // namespace tendril::http
