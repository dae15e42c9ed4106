// bench/download.cpp — many HTTP downloads at once: tendril against raw libcurl multi loops, same process kind.
//
// One program, several modes, driven by bench/download.sh (which starts nginx, makes the files and compares the
// figures with curl --parallel and aiohttp):
//
//   bench_download tendril    URLFILE [INFLIGHT] [SINK]   tasks sharing one http::session
//   bench_download raw        URLFILE [INFLIGHT] [SINK]   libcurl multi + curl_multi_poll (the baseline)
//   bench_download raw-socket URLFILE [INFLIGHT] [SINK]   libcurl multi_socket_action + epoll (no scheduler)
//
// URLFILE holds one URL per line. INFLIGHT (default 100) transfers run at once. SINK says what happens to each
// body, so that tendril and the raw loops can be made to do the same work:
//   --memory      each body in a std::string of its own, dropped once counted. tendril: session::get() (the
//                 default for tendril); raw: the write callback appends to the transfer's string, which is moved
//                 out when the transfer is done (what a libcurl program that keeps bodies does).
//   --to DIR      each body written to DIR/<last URL segment>. tendril: session::download() (a temporary file
//                 beside it, renamed at the end); raw: open(), write() from the write callback, close().
//   --count       bytes counted in the write callback, nothing kept (the default for the raw loops).
//                 tendril has no such sink; its closest are:
//   --stream      tendril: session::open(), stream::read(64 KiB) (a std::string per piece).
//   --stream-into tendril: session::open(), stream::read_into() a reused 256 KiB buffer.
// Every mode uses CURLOPT_BUFFERSIZE 256 KiB, as tendril does; `--buffer BYTES` sets another size for the raw
// loops (for measuring what the size costs: libcurl allocates that buffer for every transfer).
//
// Each run prints one line of key=value figures for the script:
//   mode=raw-memory requests=20000 failed=0 bytes=81920000 wall_s=0.91 cpu_s=0.84 maxrss_kib=9000
// cpu_s is getrusage(RUSAGE_SELF) user+sys over the transfers only (not reading the URL file); maxrss_kib is the
// process's peak resident set. Nothing is asserted: this is a measurement, not a test.
#include <curl/curl.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_time.hpp"
#include "tendril/http.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/wait.hpp"

namespace {

constexpr long buffer_size = 256 * 1024;
// stream::read() size in tendril --stream mode: 64 KiB pieces stay below glibc's mmap threshold, so each returned
// std::string reuses heap memory instead of mapping and faulting in fresh pages.
constexpr std::size_t read_size = 64 * 1024;
// The reused buffer of --stream-into: as large as libcurl's receive buffer.
constexpr std::size_t read_into_size = 256 * 1024;

enum class sink { count, memory, file, stream, stream_into };

struct config {
  sink kind = sink::count;
  std::filesystem::path dir;  // --to
  long buffer = buffer_size;  // --buffer: the raw loops' CURLOPT_BUFFERSIZE
};

// DIR/<last segment of the URL's path>.
std::filesystem::path target_for(const config& c, const std::string& url) {
  auto slash = url.find_last_of('/');
  return c.dir / (slash == std::string::npos ? url : url.substr(slash + 1));
}

struct figures {
  std::size_t requests = 0;
  std::size_t failed = 0;
  std::uint64_t bytes = 0;
};

long max_rss_kib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

std::vector<std::string> read_urls(const char* path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(std::string("cannot read ") + path);
  std::vector<std::string> urls;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) urls.push_back(line);
  }
  return urls;
}

// ---- tendril --------------------------------------------------------------------------------------------------

figures run_tendril(const std::vector<std::string>& urls, std::size_t inflight, const config& c) {
  namespace http = tendril::http;
  figures f;
  http::session_options so;
  so.max_connections = inflight;
  http::session session(so);
  tendril::run([&] {
    std::size_t next = 0;  // one thread: the workers share the index without atomics
    std::vector<tendril::task<void>> workers;
    for (std::size_t w = 0; w < std::min(inflight, urls.size()); ++w) {
      workers.push_back(tendril::spawn([&] {
        std::unique_ptr<char[]> buffer;
        if (c.kind == sink::stream_into) buffer = std::make_unique<char[]>(read_into_size);
        while (next < urls.size()) {
          const std::string& u = urls[next++];
          try {
            if (c.kind == sink::stream || c.kind == sink::stream_into) {
              auto st = session.open(u);
              if (st.status() != 200) ++f.failed;
              if (c.kind == sink::stream) {
                for (std::string piece; !(piece = st.read(read_size)).empty();) f.bytes += piece.size();
              } else {
                const std::span<char> into(buffer.get(), read_into_size);
                for (std::size_t n; (n = st.read_into(into)) != 0;) f.bytes += n;
              }
            } else if (c.kind == sink::file) {
              auto d = session.download(u, target_for(c, u));
              f.bytes += d.bytes;
            } else {
              auto r = session.get(u);
              if (r.status != 200) ++f.failed;
              f.bytes += r.body.size();
            }
          } catch (const http::error& e) {
            if (f.failed++ == 0) std::fprintf(stderr, "%s\n", e.what());
          }
          ++f.requests;
        }
      }));
    }
    tendril::gather(workers);
  });
  return f;
}

// ---- raw libcurl: the baseline ----------------------------------------------------------------------------------

// One easy handle of a raw loop and what its current transfer writes to.
struct raw_handle {
  CURL* easy = nullptr;
  const config* cfg = nullptr;
  figures* f = nullptr;
  std::string body;  // --memory
  int fd = -1;       // --to
  bool write_failed = false;
};

std::size_t on_raw_data(char* data, std::size_t size, std::size_t n, void* userp) {
  auto* h = static_cast<raw_handle*>(userp);
  const std::size_t bytes = size * n;
  switch (h->cfg->kind) {
    case sink::memory:
      h->body.append(data, bytes);
      break;
    case sink::file:
      for (std::size_t done = 0; done < bytes;) {
        const ssize_t w = ::write(h->fd, data + done, bytes - done);
        if (w < 0) {
          h->write_failed = true;
          return 0;
        }
        done += static_cast<std::size_t>(w);
      }
      h->f->bytes += bytes;
      break;
    default:
      h->f->bytes += bytes;
      break;
  }
  return bytes;
}

raw_handle make_handle(const config& c, figures& f) {
  raw_handle h;
  h.cfg = &c;
  h.f = &f;
  h.easy = curl_easy_init();
  curl_easy_setopt(h.easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h.easy, CURLOPT_WRITEFUNCTION, &on_raw_data);
  curl_easy_setopt(h.easy, CURLOPT_BUFFERSIZE, c.buffer);
  return h;
}

// Takes finished transfers off the multi handle and gives each handle the next URL.
struct feeder {
  CURLM* multi;
  const std::vector<std::string>& urls;
  std::size_t next = 0;
  std::size_t active = 0;
  figures& f;

  void start(raw_handle& h) {
    if (next >= urls.size()) return;
    const std::string& u = urls[next++];
    if (h.cfg->kind == sink::file) {
      h.fd = ::open(target_for(*h.cfg, u).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (h.fd < 0) throw std::runtime_error("raw: cannot create " + target_for(*h.cfg, u).string());
    }
    curl_easy_setopt(h.easy, CURLOPT_URL, u.c_str());
    curl_easy_setopt(h.easy, CURLOPT_WRITEDATA, &h);
    curl_easy_setopt(h.easy, CURLOPT_PRIVATE, &h);
    curl_multi_add_handle(multi, h.easy);
    ++active;
  }
  void collect() {
    int queued = 0;
    while (CURLMsg* m = curl_multi_info_read(multi, &queued)) {
      if (m->msg != CURLMSG_DONE) continue;
      CURL* e = m->easy_handle;
      raw_handle* h = nullptr;
      curl_easy_getinfo(e, CURLINFO_PRIVATE, &h);
      long status = 0;
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
      if (m->data.result != CURLE_OK || status != 200) {
        if (f.failed++ == 0) std::fprintf(stderr, "raw: %s (status %ld)\n", curl_easy_strerror(m->data.result), status);
      }
      if (h->cfg->kind == sink::memory) {
        const std::string body = std::move(h->body);  // the caller's now; dropped once counted
        h->body = std::string();
        f.bytes += body.size();
      } else if (h->cfg->kind == sink::file) {
        if (::close(h->fd) != 0 || h->write_failed) ++f.failed;
        h->fd = -1;
      }
      ++f.requests;
      curl_multi_remove_handle(multi, e);
      --active;
      start(*h);  // reuse the handle (and, through the multi's cache, the connection)
    }
  }
};

figures run_raw_poll(const std::vector<std::string>& urls, std::size_t inflight, const config& c) {
  figures f;
  CURLM* multi = curl_multi_init();
  std::vector<raw_handle> handles;
  handles.reserve(inflight);
  feeder feed{multi, urls, 0, 0, f};
  for (std::size_t i = 0; i < std::min(inflight, urls.size()); ++i) {
    handles.push_back(make_handle(c, f));
    feed.start(handles.back());
  }
  while (feed.active > 0) {
    int running = 0;
    curl_multi_perform(multi, &running);
    feed.collect();
    if (feed.active > 0) curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
  }
  for (raw_handle& h : handles) curl_easy_cleanup(h.easy);
  curl_multi_cleanup(multi);
  return f;
}

// ---- raw libcurl with multi_socket_action and epoll: what tendril's driver does, without a scheduler ------------

// As a careful hand-written loop does (and tendril's driver): a connection's epoll registration is kept while it
// idles in libcurl's cache between two transfers (libcurl reports CURL_POLL_REMOVE after every transfer and asks
// again for the next), and dropped when libcurl closes the socket or an idle one turns readable (the server closed
// it). Reusing a kept-alive connection then costs no epoll_ctl.
struct socket_loop {
  int ep = -1;
  bool has_deadline = false;
  std::chrono::steady_clock::time_point deadline{};
  struct fd_state {
    std::uint32_t wanted = 0;      // what libcurl watches now; 0 after CURL_POLL_REMOVE
    std::uint32_t registered = 0;  // the epoll registration's events; 0: none
  };
  std::vector<fd_state> fds;  // by fd number

  fd_state& state(curl_socket_t s) {
    if (static_cast<std::size_t>(s) >= fds.size()) fds.resize(static_cast<std::size_t>(s) + 64);
    return fds[static_cast<std::size_t>(s)];
  }
  void unregister(curl_socket_t s) {
    fd_state& st = state(s);
    if (st.registered != 0) epoll_ctl(ep, EPOLL_CTL_DEL, s, nullptr);
    st.registered = 0;
  }
  static int on_socket(CURL*, curl_socket_t s, int what, void* userp, void*) {
    auto* self = static_cast<socket_loop*>(userp);
    fd_state& st = self->state(s);
    if (what == CURL_POLL_REMOVE) {
      st.wanted = 0;  // registration kept: see above
      return 0;
    }
    std::uint32_t events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= EPOLLOUT;
    st.wanted = events;
    if (st.registered == events) return 0;
    epoll_event ev{};
    ev.data.fd = s;
    ev.events = events;
    if (epoll_ctl(self->ep, st.registered != 0 ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) != 0) {
      epoll_ctl(self->ep, st.registered != 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, s, &ev);
    }
    st.registered = events;
    return 0;
  }
  static int on_close(void* userp, curl_socket_t s) {
    static_cast<socket_loop*>(userp)->unregister(s);
    return ::close(s);
  }
  static int on_timer(CURLM*, long ms, void* userp) {
    auto* self = static_cast<socket_loop*>(userp);
    self->has_deadline = ms >= 0;
    if (ms >= 0) self->deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    return 0;
  }
  // Milliseconds until curl's timer (0: due), or 1000 without a timer.
  int wait_ms() const {
    if (!has_deadline) return 1000;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1000));
  }
};

figures run_raw_socket(const std::vector<std::string>& urls, std::size_t inflight, const config& c) {
  figures f;
  socket_loop loop;
  loop.ep = epoll_create1(EPOLL_CLOEXEC);
  CURLM* multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, &socket_loop::on_socket);
  curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, &loop);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, &socket_loop::on_timer);
  curl_multi_setopt(multi, CURLMOPT_TIMERDATA, &loop);
  std::vector<raw_handle> handles;
  handles.reserve(inflight);
  feeder feed{multi, urls, 0, 0, f};
  for (std::size_t i = 0; i < std::min(inflight, urls.size()); ++i) {
    handles.push_back(make_handle(c, f));
    curl_easy_setopt(handles.back().easy, CURLOPT_CLOSESOCKETFUNCTION, &socket_loop::on_close);
    curl_easy_setopt(handles.back().easy, CURLOPT_CLOSESOCKETDATA, &loop);
    feed.start(handles.back());
  }
  int running = 0;
  std::vector<epoll_event> events(256);
  while (feed.active > 0) {
    const int n = epoll_wait(loop.ep, events.data(), static_cast<int>(events.size()), loop.wait_ms());
    for (int i = 0; i < n; ++i) {
      const epoll_event& ev = events[static_cast<std::size_t>(i)];
      if (loop.state(ev.data.fd).wanted == 0) {  // an idle connection kept registered: the server closed it
        loop.unregister(ev.data.fd);
        continue;
      }
      int mask = 0;
      if ((ev.events & EPOLLIN) != 0) mask |= CURL_CSELECT_IN;
      if ((ev.events & EPOLLOUT) != 0) mask |= CURL_CSELECT_OUT;
      if ((ev.events & (EPOLLERR | EPOLLHUP)) != 0) mask |= CURL_CSELECT_ERR;
      curl_multi_socket_action(multi, ev.data.fd, mask, &running);
    }
    if (loop.has_deadline && loop.wait_ms() == 0) {
      loop.has_deadline = false;
      curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    feed.collect();
  }
  for (raw_handle& h : handles) curl_easy_cleanup(h.easy);
  curl_multi_cleanup(multi);
  ::close(loop.ep);
  return f;
}

int usage() {
  std::fprintf(stderr,
               "usage: bench_download tendril|raw|raw-socket URLFILE [INFLIGHT]\n"
               "                      [--count|--memory|--to DIR|--stream|--stream-into] [--buffer BYTES]\n"
               "Driven by bench/download.sh, which starts nginx, makes the files and prints the comparison.\n");
  return 2;
}

const char* sink_name(sink k) {
  switch (k) {
    case sink::memory:
      return "memory";
    case sink::file:
      return "file";
    case sink::stream:
      return "stream";
    case sink::stream_into:
      return "stream-into";
    default:
      return "count";
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    // Run without arguments (meson test --benchmark): nothing to measure without the script's server.
    usage();
    std::puts("bench_download: run bench/download.sh for the download benchmark (it needs nginx)");
    return 0;
  }
  const std::string mode = argv[1];
  std::size_t inflight = 100;
  config c;
  c.kind = mode == "tendril" ? sink::memory : sink::count;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--count") {
      c.kind = sink::count;
    } else if (a == "--memory") {
      c.kind = sink::memory;
    } else if (a == "--stream") {
      c.kind = sink::stream;
    } else if (a == "--stream-into") {
      c.kind = sink::stream_into;
    } else if (a == "--buffer" && i + 1 < argc) {
      c.buffer = std::strtol(argv[++i], nullptr, 10);
    } else if (a == "--to" && i + 1 < argc) {
      c.kind = sink::file;
      c.dir = argv[++i];
    } else if (!a.empty() && a[0] != '-') {
      inflight = static_cast<std::size_t>(std::strtoul(a.c_str(), nullptr, 10));
    } else {
      return usage();
    }
  }
  if (inflight == 0) return usage();
  const bool tendril_mode = mode == "tendril";
  if (tendril_mode && c.kind == sink::count) return usage();  // tendril has no counting sink
  if (!tendril_mode && (c.kind == sink::stream || c.kind == sink::stream_into)) return usage();
  if (c.kind == sink::file) std::filesystem::create_directories(c.dir);
  const auto urls = read_urls(argv[2]);
  curl_global_init(CURL_GLOBAL_DEFAULT);

  const double cpu0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  figures f;
  if (tendril_mode) {
    f = run_tendril(urls, inflight, c);
  } else if (mode == "raw") {
    f = run_raw_poll(urls, inflight, c);
  } else if (mode == "raw-socket") {
    f = run_raw_socket(urls, inflight, c);
  } else {
    return usage();
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;
  std::printf("mode=%s-%s requests=%zu failed=%zu bytes=%llu wall_s=%.4f cpu_s=%.4f maxrss_kib=%ld\n", mode.c_str(),
              sink_name(c.kind), f.requests, f.failed, static_cast<unsigned long long>(f.bytes), wall, cpu,
              max_rss_kib());
  curl_global_cleanup();
  return f.failed == 0 ? 0 : 1;
}
