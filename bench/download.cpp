// bench/download.cpp — many HTTP downloads at once: tendril against raw libcurl multi loops, same process kind.
//
// One program, several modes, driven by bench/download.sh (which starts nginx, makes the files and compares the
// figures with curl --parallel and aiohttp):
//
//   bench_download tendril    URLFILE [INFLIGHT] [--stream]   tasks sharing one http::session
//   bench_download raw        URLFILE [INFLIGHT]              libcurl multi + curl_multi_poll (the baseline)
//   bench_download raw-socket URLFILE [INFLIGHT]              libcurl multi_socket_action + epoll (no scheduler)
//
// URLFILE holds one URL per line. INFLIGHT (default 100) transfers run at once. Bodies are counted, not kept:
// tendril mode uses session::get() (the body is a std::string that is dropped), or with --stream session::open()
// read in 64 KiB pieces (bounded memory for big bodies); the raw loops count bytes in their write callback.
// Every mode uses CURLOPT_BUFFERSIZE 256 KiB, as tendril does.
//
// Each run prints one line of key=value figures for the script:
//   mode=raw requests=20000 failed=0 bytes=81920000 wall_s=0.91 cpu_s=0.84 maxrss_kib=9000
// cpu_s is getrusage(RUSAGE_SELF) user+sys over the transfers only (not reading the URL file); maxrss_kib is the
// process's peak resident set. Nothing is asserted: this is a measurement, not a test.
#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tendril/http.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/wait.hpp"

namespace {

constexpr long buffer_size = 256 * 1024;
// stream::read() size in tendril --stream mode: 64 KiB pieces stay below glibc's mmap threshold, so each returned
// std::string reuses heap memory instead of mapping and faulting in fresh pages.
constexpr std::size_t read_size = 64 * 1024;

struct figures {
  std::size_t requests = 0;
  std::size_t failed = 0;
  std::uint64_t bytes = 0;
};

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

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

figures run_tendril(const std::vector<std::string>& urls, std::size_t inflight, bool stream) {
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
        while (next < urls.size()) {
          const std::string& u = urls[next++];
          try {
            if (stream) {
              auto st = session.open(u);
              if (st.status() != 200) ++f.failed;
              for (std::string piece; !(piece = st.read(read_size)).empty();) f.bytes += piece.size();
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

std::size_t count_bytes(char*, std::size_t size, std::size_t n, void* userp) {
  *static_cast<std::uint64_t*>(userp) += size * n;
  return size * n;
}

CURL* make_easy(std::uint64_t* bytes) {
  CURL* e = curl_easy_init();
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &count_bytes);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, bytes);
  curl_easy_setopt(e, CURLOPT_BUFFERSIZE, buffer_size);
  return e;
}

// Takes finished transfers off the multi handle and gives each handle the next URL.
struct feeder {
  CURLM* multi;
  const std::vector<std::string>& urls;
  std::size_t next = 0;
  std::size_t active = 0;
  figures& f;

  void start(CURL* e) {
    if (next >= urls.size()) return;
    curl_easy_setopt(e, CURLOPT_URL, urls[next++].c_str());
    curl_multi_add_handle(multi, e);
    ++active;
  }
  void collect() {
    int queued = 0;
    while (CURLMsg* m = curl_multi_info_read(multi, &queued)) {
      if (m->msg != CURLMSG_DONE) continue;
      CURL* e = m->easy_handle;
      long status = 0;
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
      if (m->data.result != CURLE_OK || status != 200) {
        if (f.failed++ == 0) std::fprintf(stderr, "raw: %s (status %ld)\n", curl_easy_strerror(m->data.result), status);
      }
      ++f.requests;
      curl_multi_remove_handle(multi, e);
      --active;
      start(e);  // reuse the handle (and, through the multi's cache, the connection)
    }
  }
};

figures run_raw_poll(const std::vector<std::string>& urls, std::size_t inflight) {
  figures f;
  CURLM* multi = curl_multi_init();
  std::vector<CURL*> handles;
  feeder feed{multi, urls, 0, 0, f};
  for (std::size_t i = 0; i < std::min(inflight, urls.size()); ++i) {
    handles.push_back(make_easy(&f.bytes));
    feed.start(handles.back());
  }
  while (feed.active > 0) {
    int running = 0;
    curl_multi_perform(multi, &running);
    feed.collect();
    if (feed.active > 0) curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
  }
  for (CURL* e : handles) curl_easy_cleanup(e);
  curl_multi_cleanup(multi);
  return f;
}

// ---- raw libcurl with multi_socket_action and epoll: what tendril's driver does, without a scheduler ------------

struct socket_loop {
  int ep = -1;
  bool has_deadline = false;
  std::chrono::steady_clock::time_point deadline{};

  static int on_socket(CURL*, curl_socket_t s, int what, void* userp, void*) {
    auto* self = static_cast<socket_loop*>(userp);
    if (what == CURL_POLL_REMOVE) {
      epoll_ctl(self->ep, EPOLL_CTL_DEL, s, nullptr);
      return 0;
    }
    epoll_event ev{};
    ev.data.fd = s;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev.events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev.events |= EPOLLOUT;
    if (epoll_ctl(self->ep, EPOLL_CTL_MOD, s, &ev) != 0) epoll_ctl(self->ep, EPOLL_CTL_ADD, s, &ev);
    return 0;
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

figures run_raw_socket(const std::vector<std::string>& urls, std::size_t inflight) {
  figures f;
  socket_loop loop;
  loop.ep = epoll_create1(EPOLL_CLOEXEC);
  CURLM* multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, &socket_loop::on_socket);
  curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, &loop);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, &socket_loop::on_timer);
  curl_multi_setopt(multi, CURLMOPT_TIMERDATA, &loop);
  std::vector<CURL*> handles;
  feeder feed{multi, urls, 0, 0, f};
  for (std::size_t i = 0; i < std::min(inflight, urls.size()); ++i) {
    handles.push_back(make_easy(&f.bytes));
    feed.start(handles.back());
  }
  int running = 0;
  std::vector<epoll_event> events(256);
  while (feed.active > 0) {
    const int n = epoll_wait(loop.ep, events.data(), static_cast<int>(events.size()), loop.wait_ms());
    for (int i = 0; i < n; ++i) {
      const epoll_event& ev = events[static_cast<std::size_t>(i)];
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
  for (CURL* e : handles) curl_easy_cleanup(e);
  curl_multi_cleanup(multi);
  ::close(loop.ep);
  return f;
}

int usage() {
  std::fprintf(stderr,
               "usage: bench_download tendril|raw|raw-socket URLFILE [INFLIGHT] [--stream]\n"
               "Driven by bench/download.sh, which starts nginx, makes the files and prints the comparison.\n");
  return 2;
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
  bool stream = false;
  for (int i = 3; i < argc; ++i) {
    if (std::strcmp(argv[i], "--stream") == 0) {
      stream = true;
    } else {
      inflight = static_cast<std::size_t>(std::strtoul(argv[i], nullptr, 10));
    }
  }
  if (inflight == 0) return usage();
  const auto urls = read_urls(argv[2]);
  curl_global_init(CURL_GLOBAL_DEFAULT);

  const double cpu0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  figures f;
  if (mode == "tendril") {
    f = run_tendril(urls, inflight, stream);
  } else if (mode == "raw") {
    f = run_raw_poll(urls, inflight);
  } else if (mode == "raw-socket") {
    f = run_raw_socket(urls, inflight);
  } else {
    return usage();
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;
  std::printf("mode=%s requests=%zu failed=%zu bytes=%llu wall_s=%.4f cpu_s=%.4f maxrss_kib=%ld\n",
              (mode + (stream ? "-stream" : "")).c_str(), f.requests, f.failed,
              static_cast<unsigned long long>(f.bytes), wall, cpu, max_rss_kib());
  curl_global_cleanup();
  return f.failed == 0 ? 0 : 1;
}
