// lib/curl_driver.cpp — the libcurl multi_socket driver on the scheduler's reactor. The only file that includes curl.
//
// Shape (PhotonLibOS-style "callbacks record, the loop acts"):
//  - CURLMOPT_SOCKETFUNCTION only updates the epoll set (level-triggered) and the driver's per-fd socket_state
//    (kept by fd number, see socket_state); CURLMOPT_TIMERFUNCTION only records a deadline.
//  - The reactor reports ready sockets to socket_state::on_ready, which records the event bits and wakes the
//    driver: a service task of the scheduler that parks with curl's timer as its deadline.
//  - The driver task calls curl_multi_socket_action() and curl_multi_info_read(), and wakes the task parked on
//    each finished transfer. No curl_multi_* call ever happens inside a curl callback (libcurl 7.82+ refuses
//    them with CURLM_RECURSIVE_API_CALL).
// libcurl 7.88.1 facts honoured: the same fd number comes back after CURL_POLL_REMOVE (state is per fd, the
// reactor falls back from ADD to MOD, and ignores ENOENT/EBADF on DEL); CURLOPT_NOSIGNAL on every handle and
// SIGPIPE ignored once; CURLOPT_QUICK_EXIT so removing a cancelled transfer never waits for a resolver thread;
// CURLOPT_MAXREDIRS always set; a larger CURLOPT_BUFFERSIZE for bulk transfers.
#include "curl_driver.hpp"

#include <curl/curl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>

#include "ascii.hpp"
#include "exec_context.hpp"
#include "headers_access.hpp"
#include "reactor.hpp"

namespace tendril::detail {
namespace {

constexpr long transfer_buffer_size = 256 * 1024;
constexpr std::size_t easy_pool_limit = 256;
// The most a collected body reserves up front from the response's Content-Length (a hint from the server, not
// trusted beyond this); a longer body grows past it as usual.
constexpr std::size_t body_reserve_limit = 16 * 1024 * 1024;

struct curl_driver;

long to_ms(const std::optional<duration>& d) {
  if (!d) return 0;
  return static_cast<long>(std::max<long long>(std::chrono::ceil<std::chrono::milliseconds>(*d).count(), 1));
}

// How a pooled transfer's easy handle was last configured, when that request was "plain": a GET with no extra
// headers, no body, no progress callback, never paused, run to completion. A plain request that finds a handle
// with the same profile reuses it as configured (only the URL and what depends on its scheme are set again: the
// other per-transfer pointers point into the same pooled transfer_impl), as a hand-written libcurl loop reuses its
// handles; any other handle is curl_easy_reset first. Resetting and re-parsing every option costs more than a small
// transfer's own work.
struct easy_profile {
  bool follow_redirects = true;
  long max_redirects = 10;
  bool verify_tls = true;
  std::string ca_file;
  std::string proxy;
  long timeout_ms = 0;  // 0: none
  long connect_timeout_ms = 0;

  // The profile of plain request `r`.
  static easy_profile of(const transfer_request& r) {
    return easy_profile{r.follow_redirects, r.max_redirects,         r.verify_tls, r.ca_file, r.proxy,
                        to_ms(r.timeout),   to_ms(r.connect_timeout)};
  }
  // Whether this is the profile of plain request `r`: of(r) == *this, without building of(r) (two strings) for
  // every request. Keep the two field lists in step.
  bool matches(const transfer_request& r) const noexcept {
    return follow_redirects == r.follow_redirects && max_redirects == r.max_redirects && verify_tls == r.verify_tls &&
           timeout_ms == to_ms(r.timeout) && connect_timeout_ms == to_ms(r.connect_timeout) && ca_file == r.ca_file &&
           proxy == r.proxy;
  }
};

// Whether `r` is plain (see easy_profile).
bool is_plain(const transfer_request& r) noexcept {
  return r.method == "GET" && r.headers.empty() && r.body.empty() && !r.on_progress;
}

// Whether any of the variables libcurl 7.88 consults for an http or https URL names a proxy: <scheme>_proxy (and
// HTTPS_PROXY; never HTTP_PROXY, see libcurl's url.c), all_proxy and ALL_PROXY. libcurl reads them, and
// no_proxy/NO_PROXY, with getenv() for every connection it sets up: five calls per request, each a walk through the
// whole environment. When none is set, a request gets CURLOPT_PROXY "" and CURLOPT_NOPROXY "" ("no proxy", the
// same outcome) and libcurl looks no further.
bool proxy_environment_set() noexcept {
  for (const char* name : {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return true;
  }
  return false;
}

// One per fd number the driver has seen, kept for the driver's lifetime (fd numbers are small and reused).
// Connection sockets are opened and closed through the driver's own callbacks, so it knows when such an fd is
// closed; their epoll registration is therefore kept while a connection idles in libcurl's cache between two
// transfers (libcurl reports CURL_POLL_REMOVE after every transfer and asks again for the next one): reusing a
// kept-alive connection costs no epoll_ctl. Other sockets (a resolver's socketpair) are unwatched at once.
struct socket_state final : io_source {
  curl_driver* driver = nullptr;
  curl_socket_t fd = CURL_SOCKET_BAD;
  std::uint32_t pending = 0;     // epoll events not yet handed to curl
  std::uint32_t wanted = 0;      // what libcurl asked to watch; 0 after CURL_POLL_REMOVE
  std::uint32_t registered = 0;  // the events of the fd's epoll registration; 0: not registered
  bool ours = false;             // opened by on_open_socket: its close goes through on_close_socket
  bool in_idle = false;          // listed in curl_driver::idle (listed once, however often it idles)
  void on_ready(std::uint32_t events) noexcept override;
};

struct curl_driver {
  CURLM* multi = nullptr;
  reactor* loop = nullptr;
  std::vector<std::unique_ptr<socket_state>> sockets;  // by fd
  std::vector<curl_socket_t> ready_fds;
  std::vector<curl_socket_t> processing;  // ready_fds being handed to curl (kept to reuse its capacity)
  std::vector<curl_socket_t> idle;        // registered sockets libcurl stopped watching (see socket_state)
  std::optional<time_point> timer;        // time_point::min(): due now (libcurl's common 0 ms)
  bool timer_changed = false;
  std::optional<time_point> sweep_at;  // when to unwatch idle connections if no transfer has started by then
  waiter* parked = nullptr;            // the driver task, when parked
  std::shared_ptr<task_base> service;
  std::vector<transfer_impl*> spare;  // finished transfers, each with its easy handle, for reuse
  transfer_impl* in_use = nullptr;    // transfers owned by a live transfer object (list through in_use_next)
  int running = 0;
  // Whether a proxy environment variable libcurl reads for HTTP(S) was set when this driver started (see
  // proxy_environment_set()). If none was, requests without options::proxy tell libcurl so.
  bool environment_proxies = false;

  curl_driver();
  ~curl_driver();
  // Wakes the driver task once per park: many sockets may report in one round.
  void wake() noexcept {
    if (parked != nullptr) {
      parked->notify(waiter::outcome::notified);
      parked = nullptr;
    }
  }
  socket_state& state_for(curl_socket_t fd) {
    const auto i = static_cast<std::size_t>(fd);
    if (i >= sockets.size()) sockets.resize(std::max<std::size_t>(i + 1, sockets.size() * 2));
    auto& st = sockets[i];
    if (!st) {
      st = std::make_unique<socket_state>();
      st->driver = this;
      st->fd = fd;
    }
    return *st;
  }
  socket_state* find_state(curl_socket_t fd) noexcept {
    const auto i = static_cast<std::size_t>(fd);
    return fd >= 0 && i < sockets.size() ? sockets[i].get() : nullptr;
  }
  void unregister(socket_state& st) noexcept {
    if (st.registered != 0) loop->unwatch(st.fd);
    st.registered = 0;
  }
  bool timer_due() const noexcept {
    return timer && (*timer == time_point::min() || *timer <= std::chrono::steady_clock::now());
  }
  // Unwatches the idle connections kept registered, a while after the last transfer ended (so that an idle
  // thread watches no fd, and busy tasks pay no epoll_wait per round for it). Not at once: requests often come
  // in waves, each wave's transfers all ending before the tasks start the next.
  static constexpr std::chrono::milliseconds idle_sweep_delay{100};
  void sweep_idle() noexcept {
    for (curl_socket_t fd : idle) {
      socket_state* st = find_state(fd);
      if (st == nullptr) continue;
      st->in_idle = false;
      if (st->wanted == 0) unregister(*st);
    }
    idle.clear();
  }
  void loop_forever();
  void process();
  void collect_finished();
  // A pooled transfer (with its easy handle) or a new one.
  transfer_impl* acquire();
  // Back to the pool (or freed when the pool is full).
  void release(transfer_impl* t) noexcept;
  // Detaches every transfer still owned by a transfer object (see ~curl_driver).
  void orphan_in_use() noexcept;
};

thread_local curl_driver* tl_driver = nullptr;

curl_driver& driver() {
  if (tl_driver == nullptr) {
    auto* d = new curl_driver();
    tl_driver = d;
    d->service = spawn_service([d] { d->loop_forever(); }, "tendril curl driver");
    at_scheduler_teardown([d] {
      d->service->cancel();
      d->service->join();
      tl_driver = nullptr;
      delete d;
    });
  }
  return *tl_driver;
}

void socket_state::on_ready(std::uint32_t events) noexcept {
  if (wanted == 0) {
    // An idle connection kept registered became readable: the server closed it (or sent junk). libcurl finds
    // out when it next checks the connection; stop watching it until then.
    driver->unregister(*this);
    return;
  }
  if (pending == 0) driver->ready_fds.push_back(fd);
  pending |= events;
  driver->wake();
}

// CURLMOPT_SOCKETFUNCTION: record what to watch. Only epoll_ctl (allowed in callbacks).
int on_socket(CURL*, curl_socket_t s, int what, void* userp, void*) {
  auto* d = static_cast<curl_driver*>(userp);
  try {
    socket_state& st = d->state_for(s);
    if (what == CURL_POLL_REMOVE) {
      st.wanted = 0;
      st.pending = 0;
      if (st.ours && st.registered != 0) {
        if (!st.in_idle) {  // kept registered while it idles; on_close_socket unwatches it
          st.in_idle = true;
          d->idle.push_back(s);
        }
      } else {
        d->unregister(st);
      }
      return 0;
    }
    std::uint32_t events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= EPOLLOUT;
    st.wanted = events;
    // Another socket's close (not reported to the driver) may have dropped a registration under the same fd
    // number: only the driver's own sockets skip epoll_ctl when nothing changed.
    if (!st.ours || st.registered != events) {
      d->loop->watch(s, events, &st);
      st.registered = events;
    }
  } catch (...) {
    return -1;  // libcurl fails the transfers using this socket
  }
  return 0;
}

// CURLOPT_OPENSOCKETFUNCTION: a connection socket, as libcurl would open it, marked as the driver's own.
curl_socket_t on_open_socket(void* userp, curlsocktype purpose, curl_sockaddr* addr) {
  auto* d = static_cast<curl_driver*>(userp);
  const curl_socket_t s = ::socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
  if (s == CURL_SOCKET_BAD || purpose != CURLSOCKTYPE_IPCXN) return s;
  try {
    socket_state& st = d->state_for(s);
    d->unregister(st);  // a registration left by an earlier socket of this fd number is gone with its close
    st.ours = true;
    st.wanted = 0;
    st.pending = 0;
  } catch (...) {
    ::close(s);
    return CURL_SOCKET_BAD;
  }
  return s;
}

// CURLOPT_CLOSESOCKETFUNCTION: unwatch before closing, so that the fd number can be reused safely.
int on_close_socket(void* userp, curl_socket_t s) {
  auto* d = static_cast<curl_driver*>(userp);
  if (socket_state* st = d->find_state(s)) {
    d->unregister(*st);
    st->ours = false;
    st->wanted = 0;
    st->pending = 0;
  }
  return ::close(s);
}

// CURLMOPT_TIMERFUNCTION: record when curl wants to be called.
int on_timer(CURLM*, long timeout_ms, void* userp) {
  auto* d = static_cast<curl_driver*>(userp);
  if (timeout_ms < 0) {
    d->timer.reset();
  } else if (timeout_ms == 0) {
    d->timer = time_point::min();  // no clock read for the most frequent case
  } else {
    d->timer = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  }
  d->timer_changed = true;
  return 0;
}

curl_driver::curl_driver() {
  static std::once_flag global_init;
  std::call_once(global_init, [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    ::signal(SIGPIPE, SIG_IGN);
  });
  loop = &reactor::current();
  environment_proxies = proxy_environment_set();
  multi = curl_multi_init();
  if (multi == nullptr) throw std::runtime_error("tendril: curl_multi_init failed");
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, &on_socket);
  curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, &on_timer);
  curl_multi_setopt(multi, CURLMOPT_TIMERDATA, this);
  curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
}

void curl_driver::loop_forever() {
  for (;;) {
    if (ready_fds.empty() && !timer_due()) {
      std::optional<time_point> deadline = timer;
      if (sweep_at) {
        if (*sweep_at <= std::chrono::steady_clock::now()) {
          sweep_idle();
          sweep_at.reset();
        } else if (!deadline || *sweep_at < *deadline) {
          deadline = sweep_at;
        }
      }
      waiter w;
      parked = &w;
      timer_changed = false;
      waiter::outcome o = park(w, nullptr, deadline);
      parked = nullptr;
      if (o == waiter::outcome::cancelled) return;  // thread teardown
    }
    process();
  }
}

void curl_driver::process() {
  processing.swap(ready_fds);
  for (curl_socket_t fd : processing) {
    socket_state* st = find_state(fd);
    if (st == nullptr) continue;
    const std::uint32_t ev = std::exchange(st->pending, 0U);
    if (ev == 0) continue;  // libcurl stopped watching it since
    int mask = 0;
    if ((ev & EPOLLIN) != 0) mask |= CURL_CSELECT_IN;
    if ((ev & EPOLLOUT) != 0) mask |= CURL_CSELECT_OUT;
    if ((ev & (EPOLLERR | EPOLLHUP)) != 0) mask |= CURL_CSELECT_ERR;
    curl_multi_socket_action(multi, fd, mask, &running);
  }
  processing.clear();
  if (timer_due()) {
    timer.reset();
    curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
  }
  collect_finished();
  if (running > 0 || idle.empty()) {
    sweep_at.reset();
  } else if (!sweep_at) {
    sweep_at = std::chrono::steady_clock::now() + idle_sweep_delay;
  }
}

}  // namespace

// One transfer's state and its easy handle; pooled by the driver, so kept across transfers (with the handle's
// configuration, see easy_profile) and reset by begin().
struct transfer_impl {
  curl_driver* driver = nullptr;
  CURL* easy = nullptr;
  std::optional<easy_profile> configured_for;  // how `easy` is set up while pooled; empty: blank (new or reset)
  transfer_request request;
  body_sink* sink = nullptr;
  curl_slist* header_list = nullptr;
  std::string body;
  std::size_t expected_body = 0;  // the final response's Content-Length, for a collected body (0: unknown)
  http::headers_map headers;
  char error_buffer[CURL_ERROR_SIZE] = {};
  CURLcode code = CURLE_OK;
  std::exception_ptr callback_error;  // what the user's on_progress threw (it aborted the transfer)
  bool added = false;
  bool finished = false;
  bool paused = false;
  bool ever_paused = false;
  bool plain = false;                  // a plain request (see easy_profile)
  bool headers_done = false;           // the final response's headers are all in; set for a sink only (see on_header)
  bool has_location = false;           // the response being received has a Location header
  bool length_overflow = false;        // its Content-Length is all digits but too large (see complete())
  bool has_transfer_encoding = false;  // it has a Transfer-Encoding, which frames the body instead (RFC 9112 6.3)
  bool aborted = false;                // removed from libcurl unfinished (transfer::abort); finished says so too
  bool orphaned = false;               // aborted unfinished when its driver was destroyed (thread exit)
  // The driver that made this transfer (its thread's), never changed: unlike `driver`, which orphan_in_use()
  // clears, another thread may read it (transfer::check_thread()).
  curl_driver* home = nullptr;
  // Set last by orphan_in_use(): the home thread has let go of the transfer, any thread may read it now.
  std::atomic<bool> detached{false};
  std::optional<easy_profile> profile;  // a plain request's profile when this transfer configured the handle
  waiter* parked = nullptr;             // the owning task, while it waits
  // Links in curl_driver::in_use, while a transfer object owns this transfer.
  transfer_impl* in_use_prev = nullptr;
  transfer_impl* in_use_next = nullptr;
  time_point started{};
  time_point ended{};

  transfer_impl() = default;
  ~transfer_impl() {
    if (easy != nullptr) curl_easy_cleanup(easy);
  }
  transfer_impl(const transfer_impl&) = delete;
  transfer_impl& operator=(const transfer_impl&) = delete;

  // Resets the per-transfer state for a new request.
  void begin(transfer_request r, body_sink* s) {
    request = std::move(r);
    sink = s;
    header_list = nullptr;
    body.clear();
    expected_body = 0;
    headers.clear();
    error_buffer[0] = '\0';
    code = CURLE_OK;
    callback_error = nullptr;
    added = finished = paused = ever_paused = headers_done = has_location = length_overflow = has_transfer_encoding =
        aborted = false;
    plain = false;
    profile.reset();
    parked = nullptr;
  }
  // After the transfer: keeps the handle configured for a plain request that ran to its end (not aborted, never
  // paused), resets it otherwise; drops what could hold much memory while pooled.
  void end() noexcept {
    curl_slist_free_all(header_list);
    header_list = nullptr;
    if (plain && finished && !aborted && !ever_paused) {
      if (profile) configured_for = std::move(profile);  // else: reused as configured_for says
    } else {
      curl_easy_reset(easy);
      configured_for.reset();
    }
    profile.reset();
    std::string().swap(request.body);
    std::string().swap(body);
    headers = http::headers_map();  // its line buffer too (a stream's or a download's unread header block)
    request.on_progress = nullptr;
    sink = nullptr;
  }

  // Wakes the owning task once per park: libcurl delivers a body in many small writes.
  void notify_owner() noexcept {
    if (parked != nullptr) {
      parked->notify(waiter::outcome::notified);
      parked = nullptr;
    }
  }
  // Finished as a failure without libcurl's say (transfer::abort(), curl_driver::orphan_in_use()): whoever looks at
  // the transfer again gets an error instead of waiting for a transfer libcurl no longer runs.
  void finish_aborted() noexcept {
    finished = true;
    aborted = true;
    code = CURLE_ABORTED_BY_CALLBACK;
    ended = std::chrono::steady_clock::now();
  }
  void complete(CURLcode rc) noexcept {
    if (rc == CURLE_OK && length_overflow && !has_transfer_encoding && expects_body()) {
      // libcurl reads a body whose Content-Length overflows its 63-bit size until the server closes the
      // connection, and calls that success; but such a body can never be complete, so a download of it must not
      // be kept as if it were.
      rc = CURLE_PARTIAL_FILE;
      std::snprintf(error_buffer, sizeof error_buffer,
                    "the response's Content-Length is too large to be a real body size; the server closed the "
                    "connection after %llu bytes of it",
                    static_cast<unsigned long long>(received_body_bytes()));
    }
    code = rc;
    finished = true;
    added = false;
    ended = std::chrono::steady_clock::now();
    notify_owner();
  }

  // Whether the final response has a body by its status and the request's method (not a HEAD, 1xx, 204, 304).
  bool expects_body() const noexcept {
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    return request.method != "HEAD" && status >= 200 && status != 204 && status != 304;
  }
  curl_off_t received_body_bytes() const noexcept {
    curl_off_t n = 0;
    curl_easy_getinfo(easy, CURLINFO_SIZE_DOWNLOAD_T, &n);
    return n;
  }

  static std::size_t on_write(char* data, std::size_t size, std::size_t n, void* userp) {
    auto* t = static_cast<transfer_impl*>(userp);
    const std::size_t bytes = size * n;
    if (t->sink == nullptr) {
      try {
        // A body that arrives in several pieces is collected in one allocation when the server said how long it
        // is, instead of growing (and copying) by doubling. Reserved on the first piece, not at the header: a
        // HEAD or 304 response has a Content-Length but no body.
        if (t->body.empty() && t->expected_body > bytes)
          t->body.reserve(std::min(t->expected_body, body_reserve_limit));
        t->body.append(data, bytes);
      } catch (...) {
        return 0;  // out of memory: fail the transfer (CURLE_WRITE_ERROR) rather than throw through libcurl
      }
      return bytes;
    }
    switch (t->sink->on_data(data, bytes)) {
      case body_sink::result::consumed:
        t->notify_owner();
        return bytes;
      case body_sink::result::stored:
        return bytes;
      case body_sink::result::pause:
        t->paused = true;
        t->ever_paused = true;
        t->notify_owner();
        return CURL_WRITEFUNC_PAUSE;
      default:
        return 0;  // abort: CURLE_WRITE_ERROR
    }
  }

  static std::size_t on_header(char* data, std::size_t size, std::size_t n, void* userp) {
    auto* t = static_cast<transfer_impl*>(userp);
    const std::size_t bytes = size * n;
    if (bytes >= 5 && std::memcmp(data, "HTTP/", 5) == 0) {
      t->headers.clear();  // a new response (redirect, 100-continue): keep only the final one's headers
      t->expected_body = 0;
      t->headers_done = false;
      t->has_location = false;
      t->length_overflow = false;
      t->has_transfer_encoding = false;
      return bytes;
    }
    if (bytes <= 2 && (bytes == 0 || data[0] == '\r' || data[0] == '\n')) {
      // The blank line ending a response's headers. If that response is the final one (not a 1xx, not a
      // redirect libcurl will follow), a streaming reader may go on before any of the body arrives: a server may
      // send the headers and hold the body back (a long poll, server-sent events). Only a sink's reader looks
      // at headers_done: a collected body is read once the transfer has finished.
      if (t->sink == nullptr) return bytes;
      long status = 0;
      curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
      const bool interim = status < 200;
      const bool redirect = status >= 300 && status < 400 && t->request.follow_redirects && t->has_location;
      if (!interim && !redirect) {
        t->headers_done = true;
        t->notify_owner();
      }
      return bytes;
    }
    std::string_view line(data, bytes);
    if (line.back() == '\n') line.remove_suffix(1);  // one line with its ending (not empty: see above)
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // The two headers the driver itself needs, found without parsing the others (the map parses them when read).
    // A header name ends at its colon (no blanks before it), so the colon's place rules out most lines at once.
    if (line.size() > 9 && line[8] == ':' && same_ignoring_ascii_case(line.substr(0, 9), "location:")) {
      t->has_location = true;
    } else if (line.size() > 15 && line[14] == ':' &&
               (std::memcmp(line.data(), "Content-Length:", 15) == 0 ||  // as most servers write it
                same_ignoring_ascii_case(line.substr(0, 15), "content-length:"))) {
      const std::string_view value = trim_blanks(line.substr(15));
      curl_off_t n = 0;  // libcurl's type for it: it overflows where libcurl's does
      const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      const bool whole = p == value.data() + value.size();
      t->expected_body = (ec == std::errc() && whole && n > 0) ? static_cast<std::size_t>(n) : 0;
      t->length_overflow = ec == std::errc::result_out_of_range && whole && value.front() != '-';
    } else if (line.size() > 18 && line[17] == ':' &&
               same_ignoring_ascii_case(line.substr(0, 18), "transfer-encoding:")) {
      t->has_transfer_encoding = true;
    }
    try {
      http::detail::headers_access::append_line(t->headers, line);
    } catch (...) {
      return 0;  // out of memory: fail the transfer (CURLE_WRITE_ERROR) rather than throw through libcurl
    }
    return bytes;
  }

  // Runs the user's callback on the driver task, inside libcurl: it must not suspend (a sleep or a wait would
  // stall every transfer of the thread with libcurl mid-call), so a suspension throws usage_error there. An
  // exception from the callback aborts the transfer, and the requester gets that exception.
  static int on_progress(void* userp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    auto* t = static_cast<transfer_impl*>(userp);
    http::progress p{dlnow, dltotal, ulnow, ultotal};
    try {
      no_suspend_scope inside_libcurl(
          current_exec(),
          "options::on_progress must not block or suspend (sleep, wait, yield, I/O, a request): it runs inside "
          "libcurl on the thread's event loop; record the progress and act on it from a task");
      return t->request.on_progress(p) ? 0 : 1;
    } catch (...) {
      t->callback_error = std::current_exception();
      return 1;
    }
  }

  // What changes from one transfer to the next on the same handle.
  void configure_transfer() {
    CURL* e = easy;
    curl_easy_setopt(e, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(e, CURLOPT_PRIVATE, this);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, error_buffer);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, this);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, this);
    configure_for_scheme();
  }

  // What depends on the URL's scheme; set for every transfer, also on a handle reused as configured (a plain
  // profile does not record the scheme). An https:// transfer may get HTTP/2 (ALPN): wait for a connection still
  // being set up to the same host to say whether it multiplexes, rather than opening one connection per transfer
  // of a burst (libcurl's default). Not for http://, which libcurl speaks as HTTP/1.1 (no h2c): there the wait
  // would last until the first response.
  void configure_for_scheme() {
    curl_easy_setopt(easy, CURLOPT_PIPEWAIT,
                     same_ignoring_ascii_case(std::string_view(request.url).substr(0, 8), "https://") ? 1L : 0L);
  }

  // Everything, on a blank (new or reset) handle.
  void configure() {
    CURL* e = easy;
    configure_transfer();
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &transfer_impl::on_write);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &transfer_impl::on_header);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, driver);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, &on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, driver);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, transfer_buffer_size);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);  // a proxy's CONNECT reply is not the response
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, request.follow_redirects ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, request.max_redirects);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, request.verify_tls ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, request.verify_tls ? 2L : 0L);
    if (!request.ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, request.ca_file.c_str());
    if (!request.proxy.empty()) {
      curl_easy_setopt(e, CURLOPT_PROXY, request.proxy.c_str());
    } else if (!driver->environment_proxies) {
      curl_easy_setopt(e, CURLOPT_PROXY, "");
      curl_easy_setopt(e, CURLOPT_NOPROXY, "");
    }
    if (request.timeout) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, to_ms(request.timeout));
    if (request.connect_timeout) curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, to_ms(request.connect_timeout));
    if (request.on_progress) {
      curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
      curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, &transfer_impl::on_progress);
      curl_easy_setopt(e, CURLOPT_XFERINFODATA, this);
    }
    for (const auto& [k, v] : request.headers) {
      std::string line = k;
      if (v.find_first_not_of(" \t") == std::string::npos) {
        line += ';';  // libcurl drops "Name:" with a blank value; "Name;" is how it sends an empty header
      } else {
        line += ": ";
        line += v;
      }
      curl_slist* l = curl_slist_append(header_list, line.c_str());
      if (l == nullptr) throw std::bad_alloc();
      header_list = l;
    }
    if (header_list != nullptr) curl_easy_setopt(e, CURLOPT_HTTPHEADER, header_list);
    const std::string& m = request.method;
    if (m == "GET") {
      curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (m == "HEAD") {
      curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
      if (m != "POST") curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m.c_str());
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, request.body.data());
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    }
  }
};

namespace {

// An RFC 9110 token (a method or a header name): one or more of ALPHA, DIGIT and !#$%&'*+-.^_`|~.
bool is_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) return false;
  }
  return true;
}

// Rejects what libcurl would truncate at a NUL or put on the wire as it stands (a CR LF in a header value or a
// method would inject headers or a second request): an http::error naming what to fix, before anything is sent.
void check_request(const transfer_request& r) {
  auto fail = [&](int code, const std::string& why) {
    const std::string url = printable(r.url);
    throw http::error(code, why, r.url, printable(r.method) + " " + url + ": " + why);
  };
  if (r.url.find('\0') != std::string::npos) fail(CURLE_URL_MALFORMAT, "the URL contains a NUL byte");
  if (!is_token(r.method)) {
    fail(CURLE_BAD_FUNCTION_ARGUMENT, "invalid HTTP method \"" + printable(r.method) +
                                          "\": a method is a non-empty token such as GET or POST (no spaces or "
                                          "control characters)");
  }
  for (const auto& [name, value] : r.headers) {
    if (!is_token(name)) {
      fail(CURLE_BAD_FUNCTION_ARGUMENT, "invalid request header name \"" + printable(name) +
                                            "\": a header name is a non-empty token (no spaces, colons or control "
                                            "characters)");
    }
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
      fail(CURLE_BAD_FUNCTION_ARGUMENT,
           "the value of request header \"" + name + "\" contains a CR, LF or NUL byte (\"" + printable(value) + "\")");
    }
  }
  if (r.ca_file.find('\0') != std::string::npos)
    fail(CURLE_BAD_FUNCTION_ARGUMENT, "options::ca_file contains a NUL byte");
  if (r.proxy.find('\0') != std::string::npos) fail(CURLE_BAD_FUNCTION_ARGUMENT, "options::proxy contains a NUL byte");
}

}  // namespace

transfer::transfer(transfer_request request, body_sink* sink) {
  check_request(request);
  curl_driver& d = driver();
  impl_.reset(d.acquire());
  transfer_impl& t = *impl_;
  t.begin(std::move(request), sink);
  const bool plain = is_plain(t.request);
  try {
    if (plain && t.configured_for && t.configured_for->matches(t.request)) {
      curl_easy_setopt(t.easy, CURLOPT_URL, t.request.url.c_str());
      curl_easy_setopt(t.easy, CURLOPT_HTTPGET, 1L);
      t.configure_for_scheme();
    } else {
      if (t.configured_for) curl_easy_reset(t.easy);
      t.configured_for.reset();
      t.configure();
      if (plain) t.profile = easy_profile::of(t.request);
    }
  } catch (...) {
    t.end();
    d.release(impl_.release());
    throw;
  }
  t.plain = plain;
}

transfer::~transfer() {
  abort();
  impl_->end();
  curl_driver* d = impl_->driver;
  if (d == nullptr) return;  // orphaned: its driver is gone; impl_ frees the transfer and its easy handle
  d->release(impl_.release());
}

void transfer::start() {
  check_may_suspend(current_exec());  // a request from inside on_progress would call libcurl from its callback
  impl_->started = std::chrono::steady_clock::now();
  CURLMcode rc = curl_multi_add_handle(impl_->driver->multi, impl_->easy);
  if (rc != CURLM_OK) {
    throw http::error(
        -1, curl_multi_strerror(rc), impl_->request.url,
        impl_->request.method + " " + impl_->request.url + ": cannot start the transfer: " + curl_multi_strerror(rc));
  }
  impl_->added = true;
  impl_->driver->wake();  // let the driver pick up the new timer
}

void transfer::wait() {
  if (impl_->finished) return;
  // Inside a libcurl callback (on_progress reading a stream): refuse before parking, and without abort(), whose
  // curl_multi_remove_handle() libcurl would refuse there.
  check_may_suspend(current_exec());
  waiter w;
  impl_->parked = &w;
  waiter::outcome o = park(w, nullptr, std::nullopt);
  impl_->parked = nullptr;
  if (o != waiter::outcome::notified) {  // cancelled or a timeout scope
    abort();
    throw_for(o, current_exec());
  }
}

void transfer::run() {
  start();
  while (!impl_->finished) wait();
}

void transfer::unpause() {
  if (!impl_->paused || impl_->finished) return;
  impl_->paused = false;
  // May deliver buffered data to the sink synchronously (the sink may pause again).
  curl_easy_pause(impl_->easy, CURLPAUSE_CONT);
  impl_->driver->wake();
}

void transfer::abort() noexcept {
  if (impl_->added) {
    // Refused only from inside a libcurl callback (CURLM_RECURSIVE_API_CALL), which the callers rule out: were it
    // refused, the handle would still be in the multi, so it must not look removed (and be pooled, reused).
    if (curl_multi_remove_handle(impl_->driver->multi, impl_->easy) != CURLM_OK) return;
    impl_->added = false;
    impl_->finish_aborted();  // a stream read after its task's timeout scope expired in an earlier read: an error
  }
}

void transfer::check_thread() const {
  // detached first: a thread started after the home thread exited may get the old driver's address.
  if (impl_->detached.load(std::memory_order_acquire) || impl_->home == tl_driver) return;
  throw usage_error(
      "a stream is used on the thread that opened it, while that thread lives: its transfer runs on that thread's "
      "event loop, which fills the stream's buffer and headers (using it from another thread would race with the "
      "loop, or wait forever on a thread blocked elsewhere); use it there, or hand it over only once that thread "
      "has exited");
}

bool transfer::finished() const noexcept { return impl_->finished; }
bool transfer::headers_done() const noexcept { return impl_->headers_done; }
int transfer::code() const noexcept { return static_cast<int>(impl_->code); }

std::exception_ptr transfer::callback_error() const noexcept { return impl_->callback_error; }

std::string transfer::describe_failure() const {
  const CURLcode c = impl_->code;
  if (impl_->orphaned) {
    return "the transfer was aborted when the thread that started it exited (a thread's transfers end with its "
           "event loop); the rest of the body cannot be read: finish reading a stream on the thread that opened it, "
           "before that thread exits (or returns from main())";
  }
  if (impl_->aborted) {
    return "the transfer was aborted when its task was cancelled or a tendril::timeout expired while it waited; the "
           "rest of the body cannot be read: request the URL again";
  }
  std::string msg = curl_easy_strerror(c);
  if (impl_->error_buffer[0] != '\0' && msg != impl_->error_buffer)
    msg += " (" + std::string(impl_->error_buffer) + ")";
  const char* hint = nullptr;
  switch (c) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      hint = "check the URL: tendril speaks http:// and https://";
      break;
    case CURLE_COULDNT_RESOLVE_HOST:
      hint = "check the host name";
      break;
    case CURLE_COULDNT_CONNECT:
      hint = "is the server running, and are the host and port right?";
      break;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
      hint = "the server closed the connection before the response was complete";
      break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
      hint =
          "the server's TLS certificate is not trusted: pass its CA in options::ca_file, or set "
          "options::verify_tls = false for a test server";
      break;
    case CURLE_TOO_MANY_REDIRECTS:
      hint = "raise options::max_redirects, or the server has a redirect loop";
      break;
    case CURLE_ABORTED_BY_CALLBACK:
      hint = "options::on_progress returned false";
      break;
    default:
      break;
  }
  if (hint != nullptr) msg += "; " + std::string(hint);
  return msg;
}

long transfer::status() const {
  long s = 0;
  curl_easy_getinfo(impl_->easy, CURLINFO_RESPONSE_CODE, &s);
  return s;
}

std::string transfer::effective_url() const {
  char* u = nullptr;
  curl_easy_getinfo(impl_->easy, CURLINFO_EFFECTIVE_URL, &u);
  return u != nullptr ? std::string(u) : impl_->request.url;
}

std::string transfer::take_effective_url() {
  char* u = nullptr;
  curl_easy_getinfo(impl_->easy, CURLINFO_EFFECTIVE_URL, &u);
  if (u == nullptr || impl_->request.url == u) return std::move(impl_->request.url);
  return u;
}

http::headers_map& transfer::headers() noexcept { return impl_->headers; }
std::string& transfer::body() noexcept { return impl_->body; }
duration transfer::elapsed() const noexcept {
  return (impl_->finished ? impl_->ended : std::chrono::steady_clock::now()) - impl_->started;
}
const transfer_request& transfer::request() const noexcept { return impl_->request; }

curl_driver::~curl_driver() {
  orphan_in_use();
  curl_multi_cleanup(multi);  // closes cached connections (through on_close_socket)
  for (auto& st : sockets) {
    if (st) unregister(*st);
  }
  for (transfer_impl* t : spare) delete t;
}

transfer_impl* curl_driver::acquire() {
  transfer_impl* t = nullptr;
  if (!spare.empty()) {
    t = spare.back();
    spare.pop_back();
  } else {
    auto fresh = std::make_unique<transfer_impl>();
    fresh->driver = this;
    fresh->home = this;
    fresh->easy = curl_easy_init();
    if (fresh->easy == nullptr) throw std::runtime_error("tendril: curl_easy_init failed");
    t = fresh.release();
  }
  t->in_use_prev = nullptr;
  t->in_use_next = in_use;
  if (in_use != nullptr) in_use->in_use_prev = t;
  in_use = t;
  return t;
}

void curl_driver::release(transfer_impl* t) noexcept {
  if (t->in_use_prev != nullptr) {
    t->in_use_prev->in_use_next = t->in_use_next;
  } else {
    in_use = t->in_use_next;
  }
  if (t->in_use_next != nullptr) t->in_use_next->in_use_prev = t->in_use_prev;
  t->in_use_prev = t->in_use_next = nullptr;
  if (spare.size() < easy_pool_limit) {
    try {
      spare.push_back(t);
      return;
    } catch (...) {
    }
  }
  delete t;
}

// A transfer object may outlive its thread's driver: an http::stream moved to another thread, or kept in a static
// that is destroyed after main() returned (the driver goes at thread exit, see driver()). Its transfer_impl points
// at the driver and its easy handle may still be in the multi handle; once the driver is freed, the transfer
// object's destructor (abort(), release()) and its reads (unpause(), the driver's wake()) would use freed memory.
// So before the multi handle goes, every transfer still owned by a transfer object is taken out of libcurl,
// finished as aborted if it was running (a read then throws http::error saying why, after the data already
// buffered), and cut loose: driver = null, which the transfer's members check. Every task of the thread has been
// cancelled and joined by now, but a reader on another thread (the stream was moved there) may be parked on one:
// it is woken, and finds the transfer finished. Only a transfer still running is marked orphaned: one aborted
// earlier (a cancelled task, an expired timeout) keeps that cause in its error message.
void curl_driver::orphan_in_use() noexcept {
  while (transfer_impl* t = in_use) {
    in_use = t->in_use_next;
    if (t->added) curl_multi_remove_handle(multi, t->easy);  // closes its connection through on_close_socket
    t->added = false;
    if (!t->finished) {
      t->finish_aborted();
      t->orphaned = true;
    }
    t->notify_owner();
    t->driver = nullptr;
    t->in_use_prev = t->in_use_next = nullptr;
    t->detached.store(true, std::memory_order_release);
  }
}

void curl_driver::collect_finished() {
  int queued = 0;
  while (CURLMsg* m = curl_multi_info_read(multi, &queued)) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL* e = m->easy_handle;
    const CURLcode rc = m->data.result;
    transfer_impl* t = nullptr;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, &t);
    curl_multi_remove_handle(multi, e);
    if (t != nullptr) t->complete(rc);
  }
}

}  // namespace tendril::detail
