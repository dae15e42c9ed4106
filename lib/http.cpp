// lib/http.cpp — tendril::http: sessions (limits, retries, default headers), streaming reads and downloads.
// Talks to libcurl only through detail::transfer (curl_driver.hpp).
#include "tendril/http.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <tuple>

#include "ascii.hpp"
#include "curl_driver.hpp"
#include "headers_access.hpp"
#include "tendril/executor.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/sync.hpp"

namespace tendril::http {

// ---- errors and response ---------------------------------------------------------------------------------------

error::error(int code, std::string curl_message, std::string url, const std::string& what)
    : std::runtime_error(what), code_(code), curl_message_(std::move(curl_message)), url_(std::move(url)) {}

status_error::status_error(long status, const std::string& url)
    : error(0, "", url, "HTTP status " + std::to_string(status) + " for " + url), status_(status) {}

const response& response::raise_for_status() const {
  if (status >= 400) throw status_error(status, url);
  return *this;
}

std::string response::header(std::string_view name) const {
  auto it = headers.find(name);
  return it != headers.end() ? it->second : std::string();
}

// ---- headers_map -----------------------------------------------------------------------------------------------

namespace {

using tendril::detail::lower_ascii;
using tendril::detail::same_ignoring_ascii_case;
using tendril::detail::trim_blanks;

// Eight bytes lower-cased (ASCII letters only; bytes >= 0x80 kept) without a branch per byte: a byte's top bit in
// `upper` says it is in 'A'..'Z', and moving that bit down to 0x20 adds the case bit. Header names arrive with
// every response (a dozen per response), so a byte-by-byte loop was a visible part of parsing them.
std::uint64_t lower_ascii8(std::uint64_t x) noexcept {
  constexpr std::uint64_t ones = 0x0101010101010101ULL;
  const std::uint64_t low7 = x & (0x7F * ones);
  const std::uint64_t ge_a = low7 + (0x80 - 'A') * ones;          // top bit set where the byte >= 'A'
  const std::uint64_t gt_z = low7 + (0x80 - 'Z' - 1) * ones;      // top bit set where the byte > 'Z'
  const std::uint64_t upper = ge_a & ~gt_z & ~x & (0x80 * ones);  // ~x: not for bytes >= 0x80
  return x | (upper >> 2);
}

// Copies n bytes from `from` to `to`, lower-cased (ASCII). A tail shorter than eight bytes is done as the last
// eight bytes again (lower-casing twice changes nothing), not through a zero-padded word: copying a few bytes into
// a word and reading it whole stalls on store forwarding.
void lower_ascii_copy(const char* from, std::size_t n, char* to) noexcept {
  auto word = [&](std::size_t at) {
    std::uint64_t x;
    std::memcpy(&x, from + at, 8);
    x = lower_ascii8(x);
    std::memcpy(to + at, &x, 8);
  };
  if (n < 8) {
    for (std::size_t i = 0; i < n; ++i) to[i] = lower_ascii(from[i]);
    return;
  }
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) word(i);
  if (i < n) word(n - 8);
}

// Adds a header to `entries` as headers_map::add() documents.
void add_entry(std::vector<headers_map::value_type>& entries, std::string_view name, std::string_view value) {
  // The name is lower-cased once, up front, into the string the new entry keeps: the stored names are all
  // lower-case (this is the only way in), so the search for a repeat compares bytes.
  std::string key(name.size(), '\0');
  lower_ascii_copy(name.data(), name.size(), key.data());
  for (headers_map::value_type& e : entries) {
    if (e.first == key) {
      std::string& v = e.second;
      v.reserve(v.size() + 2 + value.size());
      v.append(", ", 2).append(value);
      return;
    }
  }
  entries.emplace_back(std::piecewise_construct, std::forward_as_tuple(std::move(key)), std::forward_as_tuple(value));
}

}  // namespace

headers_map::headers_map(std::initializer_list<std::pair<std::string_view, std::string_view>> headers) {
  entries_.reserve(headers.size());
  for (const auto& [name, value] : headers) add_entry(entries_, name, value);
}

bool headers_map::lock_pending() const noexcept {
  for (;;) {
    std::uint8_t s = state_.load(std::memory_order_acquire);
    if (s == parsed) return false;
    if (s == pending && state_.compare_exchange_weak(s, busy, std::memory_order_acquire)) return true;
    std::this_thread::yield();  // another thread is parsing (or copying) the lines: a few microseconds
  }
}

headers_map::headers_map(const headers_map& other) {
  if (!other.lock_pending()) {
    entries_ = other.entries_;
    return;
  }
  try {
    entries_ = other.entries_;
    lines_ = other.lines_;
  } catch (...) {
    other.state_.store(pending, std::memory_order_release);
    throw;
  }
  other.state_.store(pending, std::memory_order_release);
  state_.store(pending, std::memory_order_relaxed);
}

headers_map::headers_map(headers_map&& other) noexcept
    : entries_(std::move(other.entries_)),
      lines_(std::move(other.lines_)),
      state_(other.state_.load(std::memory_order_relaxed)) {
  other.entries_.clear();
  other.lines_.clear();
  other.state_.store(parsed, std::memory_order_relaxed);
}

headers_map& headers_map::operator=(const headers_map& other) {
  if (this != &other) *this = headers_map(other);
  return *this;
}

headers_map& headers_map::operator=(headers_map&& other) noexcept {
  if (this != &other) {
    entries_ = std::move(other.entries_);
    lines_ = std::move(other.lines_);
    state_.store(other.state_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    other.entries_.clear();
    other.lines_.clear();
    other.state_.store(parsed, std::memory_order_relaxed);
  }
  return *this;
}

void detail::headers_access::add_line(std::vector<headers_map::value_type>& entries, std::string_view line) {
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) return;  // not a header line (HTTP/1.1 forbids line folding)
  add_entry(entries, line.substr(0, colon), trim_blanks(line.substr(colon + 1)));
}

const std::vector<headers_map::value_type>& headers_map::parse_pending() const {
  if (!lock_pending()) return entries_;  // another thread parsed them meanwhile
  try {
    // Into a copy, so that a failed allocation leaves the map as it was. entries_ is empty unless lines arrived
    // after an earlier read (a stream's trailers).
    std::vector<value_type> out = entries_;
    std::string_view rest = lines_;
    // Room for the lines, and for a few trailers a stream may add later without moving the entries.
    out.reserve(out.size() + static_cast<std::size_t>(std::count(rest.begin(), rest.end(), '\n')) + 4);
    while (!rest.empty()) {
      const std::size_t eol = rest.find('\n');
      std::string_view line = rest.substr(0, eol);
      rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 1);
      detail::headers_access::add_line(out, line);
    }
    entries_.swap(out);
    std::string().swap(lines_);
  } catch (...) {
    state_.store(pending, std::memory_order_release);
    throw;
  }
  state_.store(parsed, std::memory_order_release);
  return entries_;
}

headers_map::const_iterator headers_map::find(std::string_view name) const {
  // A response has a dozen headers or so: a linear scan (mostly length compares) beats any index.
  return std::find_if(begin(), end(), [&](const value_type& e) { return same_ignoring_ascii_case(e.first, name); });
}

const std::string& headers_map::at(std::string_view name) const {
  auto it = find(name);
  if (it == end()) throw std::out_of_range("tendril::http::headers_map::at: no header named " + std::string(name));
  return it->second;
}

void headers_map::add(std::string_view name, std::string_view value) {
  entries();  // the pending lines came first
  add_entry(entries_, name, value);
}

void headers_map::clear() noexcept {
  entries_.clear();
  lines_.clear();
  state_.store(parsed, std::memory_order_relaxed);
}

namespace detail {
namespace {

using tendril::detail::transfer;
using tendril::detail::transfer_request;

[[noreturn]] void throw_transfer_error(const transfer& t) {
  if (std::exception_ptr thrown = t.callback_error()) std::rethrow_exception(thrown);  // on_progress's own
  const std::string& url = t.request().url;
  std::string what = t.request().method + " " + url + " failed: " + t.describe_failure();
  if (t.code() == tendril::detail::curl_operation_timedout) {
    throw timeout_error(t.code(), t.describe_failure(), url, what);
  }
  throw error(t.code(), t.describe_failure(), url, what);
}

bool is_idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" || method == "OPTIONS";
}

bool is_transient(int code) {
  using namespace tendril::detail;
  return code == curl_couldnt_connect || code == curl_operation_timedout || code == curl_partial_file ||
         code == curl_got_nothing || code == curl_send_error || code == curl_recv_error;
}

bool is_retryable_status(long s) { return s == 502 || s == 503 || s == 504; }

// Appends `more` to `to`; a name in `more` replaces (case-insensitively) every earlier header of that name, as
// aiohttp and requests do with session headers. Repeats within `more` itself are all kept.
void add_headers(std::vector<std::pair<std::string, std::string>>& to,
                 const std::vector<std::pair<std::string, std::string>>& more) {
  if (more.empty()) return;
  std::erase_if(to, [&](const auto& h) {
    for (const auto& m : more) {
      if (same_ignoring_ascii_case(h.first, m.first)) return true;
    }
    return false;
  });
  to.insert(to.end(), more.begin(), more.end());
}

// "scheme://host:port" of a URL, for the per-host limit: lower-cased (scheme and host names are
// case-insensitive), without user info, with the scheme's default port when none is given, so that every
// spelling of one origin shares one limit.
std::string host_key(std::string_view url) {
  // A "://" is the end of a scheme only before the first "/", "?" or "#": a URL without one (libcurl reads
  // "host:port/path" as http) may carry "://" in its path, query or fragment.
  auto scheme_end = url.find("://");
  if (scheme_end != std::string_view::npos && url.find_first_of("/?#") < scheme_end)
    scheme_end = std::string_view::npos;
  auto lower = [](std::string_view v) {
    std::string out(v.size(), '\0');
    lower_ascii_copy(v.data(), v.size(), out.data());
    return out;
  };
  const std::string scheme =
      scheme_end == std::string_view::npos ? std::string("http") : lower(url.substr(0, scheme_end));
  const std::size_t start = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
  std::string_view authority = url.substr(start, url.find_first_of("/?#", start) - start);
  if (auto at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
  std::string host = lower(authority);
  const auto bracket = host.rfind(']');  // an IPv6 address: "[::1]:8080"
  const auto colon = host.rfind(':');
  bool has_port = colon != std::string::npos && (bracket == std::string::npos || colon > bracket);
  if (has_port && colon + 1 == host.size()) {  // "host:" is "host"
    host.pop_back();
    has_port = false;
  }
  if (!has_port && scheme == "http") host += ":80";
  if (!has_port && scheme == "https") host += ":443";
  return scheme + "://" + host;
}

}  // namespace

// One host's slots, and how many requests hold or wait for them.
struct host_slots {
  explicit host_slots(std::size_t n) : sem(n) {}
  semaphore sem;
  std::size_t users = 0;  // guarded by session_limits::hosts_mutex
};

// A session's limits. Shared with every request's slot, so that a stream may outlive its session: the slot it
// holds until the stream is gone stays valid.
struct session_limits {
  session_limits(std::size_t max_connections, std::size_t per_host)
      : in_flight(std::max<std::size_t>(max_connections, 1)), max_per_host(per_host) {}
  semaphore in_flight;
  const std::size_t max_per_host;
  std::mutex hosts_mutex;
  // The per-host limit's semaphores, by host_key(); an entry lives while requests hold or wait for its slots.
  std::map<std::string, host_slots> hosts;
};

class session_state {
 public:
  explicit session_state(session_options o)
      : settings(std::move(o)),
        limits(std::make_shared<session_limits>(settings.max_connections, settings.max_per_host)) {
    check_limits(settings.defaults, "the session's defaults");
    if (settings.retry_backoff < duration::zero() || settings.retry_backoff_max < duration::zero()) {
      throw usage_error(
          "http::session_options::retry_backoff and retry_backoff_max must not be negative (0: retry at once)");
    }
  }

  // Holds one in-flight slot of the session (and of the host, with a per-host limit) for its lifetime.
  class slot {
   public:
    slot(session_state& s, std::string_view url) : s_(*s.limits), keep_(s.limits) {
      if (s_.max_per_host > 0) {
        std::lock_guard<std::mutex> lk(s_.hosts_mutex);
        auto [it, added] = s_.hosts.try_emplace(host_key(url), s_.max_per_host);
        ++it->second.users;
        host_ = it;
      }
      bool host_held = false;
      try {
        if (host_) (*host_)->second.sem.acquire();
        host_held = true;
        s_.in_flight.acquire();
      } catch (...) {  // cancelled or timed out while waiting
        leave_host(host_held);
        throw;
      }
    }
    // release() throws only when a count would overflow, which cannot follow the constructor's acquire().
    ~slot() {  // NOLINT(bugprone-exception-escape)
      s_.in_flight.release();
      leave_host(true);
    }
    slot(const slot&) = delete;
    slot& operator=(const slot&) = delete;

   private:
    // Gives the host's slot back if `holding`, and drops the host's entry once no request holds or waits for its
    // slots: a session that talks to many hosts over time keeps entries only for those in use.
    void leave_host(bool holding) noexcept {  // NOLINT(bugprone-exception-escape): as ~slot()
      if (!host_) return;
      if (holding) (*host_)->second.sem.release();
      std::lock_guard<std::mutex> lk(s_.hosts_mutex);
      if (--(*host_)->second.users == 0) s_.hosts.erase(*host_);
      host_.reset();
    }

    session_limits& s_;
    std::shared_ptr<session_limits> keep_;  // keeps s_ alive: a stream's slot may outlive the session
    std::optional<std::map<std::string, host_slots>::iterator> host_;
  };

  // The request as libcurl will run it: session defaults, overridden by every field the request sets.
  transfer_request make_request(std::string_view method, std::string_view url, std::string body,
                                const options& o) const {
    const options& d = settings.defaults;
    const options unset{};
    transfer_request r;
    r.method = std::string(method);
    r.url = std::string(url);
    r.body = std::move(body);
    r.headers = settings.headers;
    add_headers(r.headers, d.headers);
    add_headers(r.headers, o.headers);
    r.timeout = o.timeout ? o.timeout : d.timeout;
    r.connect_timeout = o.connect_timeout ? o.connect_timeout : d.connect_timeout;
    r.follow_redirects = o.follow_redirects != unset.follow_redirects ? o.follow_redirects : d.follow_redirects;
    r.max_redirects = o.max_redirects != unset.max_redirects ? o.max_redirects : d.max_redirects;
    r.verify_tls = o.verify_tls != unset.verify_tls ? o.verify_tls : d.verify_tls;
    r.ca_file = !o.ca_file.empty() ? o.ca_file : d.ca_file;
    r.proxy = !o.proxy.empty() ? o.proxy : d.proxy;
    r.on_progress = o.on_progress ? o.on_progress : d.on_progress;
    return r;
  }

  // Limits libcurl would take in a different sense (a negative max_redirects is "unlimited" to it) or not at all.
  // Checked when a call begins (and for the session's defaults, when it is made): before anything is sent, and
  // before the call waits for a slot of the session.
  static void check_limits(const options& o, std::string_view url) {
    if (o.max_redirects < 0) {
      throw usage_error("http::options::max_redirects is " + std::to_string(o.max_redirects) + " for " +
                        std::string(url) + ": it must be 0 or more (0: a redirect is an error)");
    }
    auto check = [&](const std::optional<duration>& d, const char* name) {
      if (d && *d < duration::zero()) {
        throw usage_error(std::string("http::options::") + name + " is negative for " + std::string(url) +
                          ": give a positive duration, or leave it unset for no limit");
      }
    };
    check(o.timeout, "timeout");
    check(o.connect_timeout, "connect_timeout");
  }

  // Runs `attempt` with the session's retry policy (idempotent methods only).
  template <class F>
  auto with_retries(std::string_view method, std::string_view url, F attempt) {
    const int retries = is_idempotent(method) ? settings.retries : 0;
    duration backoff = settings.retry_backoff;
    for (int i = 0;; ++i) {
      std::string reason;
      try {
        return attempt(i < retries);
      } catch (const status_error& e) {
        if (i >= retries || !is_retryable_status(e.status())) throw;
        reason = "HTTP status " + std::to_string(e.status());
      } catch (const error& e) {
        if (i >= retries || !is_transient(e.code())) throw;
        reason = e.what();
      }
      const duration wait = std::min(backoff, settings.retry_backoff_max);
      if (settings.on_retry) settings.on_retry(retry_event{method, url, i + 1, retries, wait, std::move(reason)});
      sleep_for(wait);
      backoff = backoff > settings.retry_backoff_max / 2 ? settings.retry_backoff_max : backoff * 2;
    }
  }

  session_options settings;
  std::shared_ptr<session_limits> limits;
};

// A streamed body: a bounded buffer between the driver (producer) and the reading task.
class stream_state final : public tendril::detail::body_sink {
 public:
  static constexpr std::size_t buffer_limit = 1024 * 1024;

  stream_state(session_state& s, transfer_request r) : slot_(s, r.url), transfer_(std::move(r), this) {}

  // The body waits in a ring buffer (grown on demand up to about buffer_limit + one write): no per-piece
  // allocations and no shifting of unread data; read() copies out what it returns.
  result on_data(const char* data, std::size_t n) noexcept override {
    got_data_ = true;
    if (n == 0) return result::consumed;
    if (size_ == 0 && direct_n_ < direct_.size()) {
      // The reader waits in read_into() and nothing is buffered before this data: straight into its buffer.
      const std::size_t take = std::min(n, direct_.size() - direct_n_);
      std::memcpy(direct_.data() + direct_n_, data, take);
      direct_n_ += take;
      data += take;
      n -= take;
      if (n == 0) return result::consumed;
    }
    if (size_ >= buffer_limit) return result::pause;  // curl hands the same data again on unpause
    try {
      if (cap_ - size_ < n) grow(size_ + n);
    } catch (...) {
      return result::abort;
    }
    std::size_t tail = (head_ + size_) % cap_;
    const std::size_t first = std::min(n, cap_ - tail);
    std::memcpy(ring_.get() + tail, data, first);
    std::memcpy(ring_.get(), data + first, n - first);
    size_ += n;
    return result::consumed;
  }

  // Returns once the final response's headers are in (or the transfer is over), not waiting for its body: a
  // server may send the headers and hold the body back.
  void start() {
    transfer_.start();
    while (!responded() && !transfer_.finished()) transfer_.wait();
    // A failure after the headers arrived is read()'s to report, after any body before it: whether the transfer
    // failed before or after this point must not depend on how fast the loop ran.
    if (transfer_.finished() && transfer_.code() != 0 && !responded()) throw_transfer_error(transfer_);
  }

  std::string read(std::size_t n) {
    while (buffered() == 0 && !transfer_.finished()) {
      transfer_.unpause();
      if (buffered() == 0 && !transfer_.finished()) transfer_.wait();
    }
    if (buffered() == 0) {
      if (transfer_.code() != 0) throw_transfer_error(transfer_);
      return {};
    }
    const std::size_t take = std::min(n, size_);
    const std::size_t first = std::min(take, cap_ - head_);
    std::string out;
    out.reserve(take);
    out.append(ring_.get() + head_, first);
    out.append(ring_.get(), take - first);
    head_ = (head_ + take) % cap_;
    size_ -= take;
    if (size_ == 0) head_ = 0;
    if (buffered() < buffer_limit / 2) transfer_.unpause();
    return out;
  }

  std::size_t read_into(std::span<char> into) {
    if (into.empty()) return 0;
    for (;;) {
      if (buffered() > 0) return take_into(into);
      if (transfer_.finished()) {
        if (transfer_.code() != 0) throw_transfer_error(transfer_);
        return 0;
      }
      transfer_.unpause();  // may deliver data synchronously (into the ring)
      if (buffered() > 0 || transfer_.finished()) continue;
      // Wait with `into` offered to on_data(); whatever lands there is the result.
      struct offer {
        stream_state& s;
        ~offer() { s.direct_ = {}; }
      } guard{*this};
      direct_ = into;
      direct_n_ = 0;
      transfer_.wait();
      if (direct_n_ > 0) return direct_n_;
    }
  }

  transfer& xfer() { return transfer_; }
  const std::string& url() {
    url_ = transfer_.effective_url();
    return url_;
  }

 private:
  std::size_t buffered() const { return size_; }
  bool responded() const { return got_data_ || transfer_.headers_done(); }
  // Moves up to into.size() buffered bytes to `into`.
  std::size_t take_into(std::span<char> into) {
    const std::size_t take = std::min(into.size(), size_);
    const std::size_t first = std::min(take, cap_ - head_);
    std::memcpy(into.data(), ring_.get() + head_, first);
    std::memcpy(into.data() + first, ring_.get(), take - first);
    head_ = (head_ + take) % cap_;
    size_ -= take;
    if (size_ == 0) head_ = 0;
    if (buffered() < buffer_limit / 2) transfer_.unpause();
    return take;
  }
  // Reallocates the ring to hold at least `need` bytes, unwrapping the unread data to the start.
  void grow(std::size_t need) {
    std::size_t cap = std::max<std::size_t>(cap_ * 2, 64 * 1024);
    while (cap < need) cap *= 2;
    std::unique_ptr<char[]> ring(new char[cap]);
    const std::size_t first = std::min(size_, cap_ - head_);
    if (size_ > 0) {
      std::memcpy(ring.get(), ring_.get() + head_, first);
      std::memcpy(ring.get() + first, ring_.get(), size_ - first);
    }
    ring_ = std::move(ring);
    cap_ = cap;
    head_ = 0;
  }

  session_state::slot slot_;
  std::unique_ptr<char[]> ring_;  // declared before transfer_, which is destroyed (aborted) first
  std::size_t cap_ = 0;
  std::size_t head_ = 0;  // first unread byte
  std::size_t size_ = 0;  // unread bytes
  transfer transfer_;
  bool got_data_ = false;
  std::span<char> direct_;    // read_into()'s buffer while it waits for data
  std::size_t direct_n_ = 0;  // bytes on_data() stored there
  std::string url_;
};

namespace {

// A download's file-system failure: `what`, the path (and the second one, if any), errno `err`.
[[noreturn]] void throw_file_error(const char* what, const std::filesystem::path& p, int err) {
  throw std::filesystem::filesystem_error(what, p, std::error_code(err, std::generic_category()));
}
[[noreturn]] void throw_file_error(const char* what, const std::filesystem::path& p1, const std::filesystem::path& p2,
                                   int err) {
  throw std::filesystem::filesystem_error(what, p1, p2, std::error_code(err, std::generic_category()));
}

// Writes the body to a file as it arrives.
class file_sink final : public tendril::detail::body_sink {
 public:
  explicit file_sink(int fd) : fd_(fd) {}
  result on_data(const char* data, std::size_t n) noexcept override {
    while (n > 0) {
      ssize_t w = ::write(fd_, data, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        error_ = errno;
        return result::abort;
      }
      data += w;
      n -= static_cast<std::size_t>(w);
      bytes_ += static_cast<std::uint64_t>(w);
    }
    return result::stored;  // download() waits for the end only: no task switch per piece
  }
  int write_error() const { return error_; }
  std::uint64_t bytes() const { return bytes_; }

 private:
  int fd_;
  int error_ = 0;
  std::uint64_t bytes_ = 0;
};

// The process's file mode creation mask, read without changing it (/proc/self/status, Linux 4.7+); umask()'s
// set-and-restore otherwise.
mode_t current_umask() {
  if (std::FILE* f = std::fopen("/proc/self/status", "re")) {
    char line[256];
    unsigned mask = 0;
    bool found = false;
    while (!found && std::fgets(line, sizeof line, f) != nullptr) {
      found = std::sscanf(line, "Umask: %o", &mask) == 1;
    }
    std::fclose(f);
    if (found) return static_cast<mode_t>(mask);
  }
  const mode_t mask = ::umask(022);
  ::umask(mask);
  return mask;
}

// The directory a download to `to` is written in (".": a bare file name).
std::filesystem::path directory_of(const std::filesystem::path& to) {
  return to.has_parent_path() ? to.parent_path() : std::filesystem::path(".");
}

// Rejects, before anything is sent (and before waiting for a slot of the session), a destination the download
// could never be written to: a path that names a directory (an existing one, or one with no file name such as
// "dir/"), or whose directory is missing, not a directory, or not writable. Without this, a directory destination
// was only found out by the final rename(), after the whole body had been transferred; a bad directory, by the
// temporary file's creation after a wait for a slot. The path itself is looked at (lstat): a symbolic link to a
// directory is replaced by the file, as rename() does.
void check_destination(const std::filesystem::path& to) {
  if (!to.has_filename()) {
    throw_file_error("cannot download to a path with no file name (name the file: dir / \"name\")", to, EISDIR);
  }
  struct stat st {};
  if (::lstat(to.c_str(), &st) == 0) {
    // The download replaces `to` by a rename, which replaces whatever is there: only a regular file may be.
    if (S_ISDIR(st.st_mode)) {
      throw_file_error("cannot download to an existing directory (name the file: dir / \"name\")", to, EISDIR);
    }
    if (S_ISLNK(st.st_mode)) {
      throw_file_error(
          "cannot download to a symbolic link: the download would replace the link itself, not what "
          "it points to (download to std::filesystem::canonical(path) to replace the target)",
          to, EEXIST);
    }
    if (!S_ISREG(st.st_mode)) {
      throw_file_error("cannot download over something that is not a regular file (a device, FIFO or socket)", to,
                       EEXIST);
    }
  }
  const std::filesystem::path dir = directory_of(to);
  if (::stat(dir.c_str(), &st) != 0) throw_file_error("cannot download into this directory", dir, errno);
  if (!S_ISDIR(st.st_mode)) throw_file_error("cannot download into this directory", dir, ENOTDIR);
  if (::faccessat(AT_FDCWD, dir.c_str(), W_OK | X_OK, AT_EACCESS) != 0) {
    throw_file_error("cannot create the download's file in this directory", dir, errno);
  }
}

// Runs flush(fd) (fdatasync, fsync) on the thread pool, suspending only the calling task, and returns its errno
// (0: success). Takes `fd` over: it is closed once the job has run, or at once if the job could not be queued
// (run_in_thread threw), never while the job may still use it (a task cancelled while it waits leaves the job
// running, and the job closes it).
template <class Flush>
int flush_on_pool(int fd, Flush flush) {
  struct owned_fd {
    int fd;
    explicit owned_fd(int f) noexcept : fd(f) {}
    owned_fd(const owned_fd&) = delete;
    owned_fd& operator=(const owned_fd&) = delete;
    ~owned_fd() { ::close(fd); }
  };
  std::shared_ptr<owned_fd> owned;
  try {
    owned = std::make_shared<owned_fd>(fd);
  } catch (...) {
    ::close(fd);
    throw;
  }
  return run_in_thread([owned, flush] { return flush(owned->fd) == 0 ? 0 : errno; });
}

// A temporary file beside the destination, removed unless committed. mkostemp() creates it 0600; commit() gives
// it the mode a file created the usual way gets (0666 less the umask), as curl -o or an ofstream would.
class temp_file {
 public:
  explicit temp_file(const std::filesystem::path& dest) : dest_(dest) {
    const std::filesystem::path dir = directory_of(dest);
    // ".NAME.part-XXXXXX" adds 13 bytes to the name: a name that fits the file system's limit (NAME_MAX, 255 on
    // Linux) but not with them is cut (at a UTF-8 character's start, for file systems that insist on valid
    // UTF-8), so that only the final name decides whether a download can be saved.
    std::string name = dest.filename().string();
    constexpr std::size_t added = std::string_view(".").size() + std::string_view(".part-XXXXXX").size();
    if (name.size() + added > NAME_MAX) {
      std::size_t keep = NAME_MAX - added;
      while (keep > 0 && (static_cast<unsigned char>(name[keep]) & 0xC0) == 0x80) --keep;  // a continuation byte
      name.resize(keep);
    }
    std::string pattern = (dir / ("." + name + ".part-XXXXXX")).string();
    fd_ = ::mkostemp(pattern.data(), O_CLOEXEC);
    if (fd_ < 0) {
      throw_file_error("cannot create a temporary file for the download", std::filesystem::path(pattern), errno);
    }
    path_ = pattern;
  }
  ~temp_file() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  int fd() const { return fd_; }
  void commit() {
    if (::fchmod(fd_, 0666 & ~current_umask()) != 0) {
      throw_file_error("cannot set the download's permissions", path_, errno);
    }
    // The data reaches the disk before the file appears under its final name: after a crash or a power loss the
    // destination holds the old file or the whole new one, never the new name over missing data (a file system
    // with delayed allocation may otherwise commit the rename before the data). One call per download; the
    // directory is flushed after the rename (sync_directory()).
    // Writing a big file out takes a while (a quarter of a second for 256 MiB on this machine's disk, seconds on
    // a slow one), so the flush runs on the thread pool and only the downloading task waits for it, not the
    // thread's other tasks and transfers. It gets a duplicate of the descriptor, so that a task cancelled while
    // it waits can close the file without the job then flushing whatever reuses the number.
    const int dup_fd = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) {
      throw_file_error("cannot flush the download to disk (dup)", dest_, path_, errno);
    }
    const int flush_errno = flush_on_pool(dup_fd, [](int fd) { return ::fdatasync(fd); });
    if (flush_errno != 0) {
      throw_file_error("cannot flush the download to disk (fdatasync)", dest_, path_, flush_errno);
    }
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) {
      throw_file_error("cannot finish writing the download", path_, errno);
    }
    std::filesystem::rename(path_, dest_);
    committed_ = true;
    sync_directory();
  }

 private:
  // Flushes the destination's directory to disk (fsync), so that the rename is durable too: once download()
  // returns, a crash or a power loss no longer brings back the old file (or no file). On the thread pool, like the
  // data. The file is already complete under its final name, so a failure is reported but removes nothing (there
  // is no old file left to restore); a file system that cannot sync a directory (EINVAL) has nothing to flush.
  // A task cancelled while it waits for this flush has its complete file in place. A directory the process may
  // write to but not read (mode -wx) cannot be opened to be flushed, and is not.
  void sync_directory() {
    const int dir_fd = ::open(directory_of(dest_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0 && errno == EACCES) return;  // a directory we may write to but not read: it cannot be flushed
    int err = dir_fd < 0 ? errno : flush_on_pool(dir_fd, [](int fd) { return ::fsync(fd); });
    if (err == EINVAL) err = 0;
    if (err != 0) {
      throw_file_error(
          "the download is complete under its final name, but flushing its directory to disk (fsync) failed: a crash "
          "may still lose the new name",
          dest_, err);
    }
  }

  std::filesystem::path dest_;
  std::filesystem::path path_;
  int fd_ = -1;
  bool committed_ = false;
};

response perform(session_state& s, std::string_view method, std::string_view url, const std::string& body,
                 const options& o, bool may_retry) {
  session_state::slot slot(s, url);
  transfer t(s.make_request(method, url, body, o), nullptr);
  t.run();
  if (t.code() != 0) throw_transfer_error(t);
  response r;
  r.status = t.status();
  r.headers = std::move(t.headers());
  r.body = std::move(t.body());
  r.url = t.take_effective_url();
  r.elapsed = t.elapsed();
  if (may_retry && is_retryable_status(r.status)) throw status_error(r.status, r.url);
  return r;
}

}  // namespace
}  // namespace detail

// ---- session ---------------------------------------------------------------------------------------------------

session::session(session_options o) : state_(std::make_shared<detail::session_state>(std::move(o))) {}
session::~session() = default;

const session_options& session::settings() const noexcept { return state_->settings; }

namespace {
// How every call of a session begins: the request's options checked, and the session's state held while the call
// runs, so that a session destroyed meanwhile (by another task) leaves the call to finish instead of pulling its
// settings and limits from under it.
std::shared_ptr<detail::session_state> begin_call(const std::shared_ptr<detail::session_state>& state, const options& o,
                                                  std::string_view url) {
  detail::session_state::check_limits(o, url);
  return state;
}
}  // namespace

response session::request(std::string_view method, std::string_view url, std::string body, const options& o) {
  const std::shared_ptr<detail::session_state> st = begin_call(state_, o, url);
  return st->with_retries(method, url,
                          [&](bool may_retry) { return detail::perform(*st, method, url, body, o, may_retry); });
}

response session::get(std::string_view url, const options& o) { return request("GET", url, {}, o); }

response session::post(std::string_view url, std::string body, const options& o) {
  return request("POST", url, std::move(body), o);
}

download_result session::download(std::string_view url, const std::filesystem::path& to, const options& o) {
  const std::shared_ptr<detail::session_state> st = begin_call(state_, o, url);
  detail::check_destination(to);
  return st->with_retries("GET", url, [&](bool) {
    detail::session_state::slot slot(*st, url);
    detail::temp_file file(to);
    detail::file_sink sink(file.fd());
    tendril::detail::transfer t(st->make_request("GET", url, {}, o), &sink);
    t.run();
    if (sink.write_error() != 0) {
      detail::throw_file_error("cannot write the download", to, sink.write_error());
    }
    if (t.code() != 0) detail::throw_transfer_error(t);
    const long status = t.status();
    if (status >= 400) throw status_error(status, t.effective_url());
    file.commit();
    return download_result{to, sink.bytes(), status, t.effective_url(), t.elapsed()};
  });
}

stream session::open(std::string_view url, const options& o) {
  const std::shared_ptr<detail::session_state> st = begin_call(state_, o, url);
  auto reader = std::make_unique<detail::stream_state>(*st, st->make_request("GET", url, {}, o));
  reader->start();
  return stream(std::move(reader));
}

// ---- stream ----------------------------------------------------------------------------------------------------

stream::stream(std::unique_ptr<detail::stream_state> s) : state_(std::move(s)) {}
stream::stream(stream&&) noexcept = default;
stream& stream::operator=(stream&&) noexcept = default;
stream::~stream() = default;

// The state of a stream that has not been moved from, on a thread that may use it: using a moved-from stream is a
// usage_error (it was a null dereference), and so is using it on another thread while the one that opened it lives.
// Every member but the destructor and assignment comes through here.
detail::stream_state& stream::state() const {
  if (!state_) {
    throw usage_error(
        "tendril::http::stream: this stream was moved from (its transfer belongs to the stream it was moved to)");
  }
  state_->xfer().check_thread();
  return *state_;
}

std::string stream::read(std::size_t n) { return state().read(n); }
std::size_t stream::read_into(std::span<char> into) { return state().read_into(into); }

std::string stream::read_all() {
  std::string all;
  for (std::string chunk; !(chunk = read(1 << 20)).empty();) all += chunk;
  return all;
}

long stream::status() const { return state().xfer().status(); }
const headers_map& stream::headers() const { return state().xfer().headers(); }
const std::string& stream::url() const { return state().url(); }
const stream& stream::raise_for_status() const {
  if (status() >= 400) throw status_error(status(), url());
  return *this;
}

// ---- free functions --------------------------------------------------------------------------------------------

namespace {
session& default_session() {
  thread_local session s;
  return s;
}
}  // namespace

response get(std::string_view url, const options& o) { return default_session().get(url, o); }
response post(std::string_view url, std::string body, const options& o) {
  return default_session().post(url, std::move(body), o);
}
response request(std::string_view method, std::string_view url, std::string body, const options& o) {
  return default_session().request(method, url, std::move(body), o);
}
download_result download(std::string_view url, const std::filesystem::path& to, const options& o) {
  return default_session().download(url, to, o);
}

}  // namespace tendril::http
