// Shared helpers for the http suite: the one test server of the executable, timing, memory and directory probes.
#pragma once

#include <doctest/doctest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "../support/test_server.hpp"
#include "../support/text.hpp"
#include "../support/timing.hpp"
#include "tendril/http.hpp"
#include "tendril/scheduler.hpp"

namespace http_test {

using namespace std::chrono_literals;
using tendril_test::clock;
using tendril_test::contains;
using tendril_test::generous;
using tendril_test::slack;
using tendril_test::stopwatch;
using tendril_test::under_asan;
using tendril_test::under_valgrind;
namespace http = tendril::http;
namespace fs = std::filesystem;
using tendril_test::expected_bytes;

// The executable's one test server, started on first use. Tests run on the main thread, so the server is created
// there (its child dies with the thread that forked it) and stopped at exit.
inline tendril_test::http_test_server& server() {
  static tendril_test::http_test_server s(TENDRIL_TEST_SERVER_SCRIPT);
  return s;
}
inline std::string url(const std::string& path) { return server().url(path); }

// A TCP port on 127.0.0.1 with no listener: bound to port 0, read back, closed.
inline int refused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A loopback port whose connections never complete: a listening socket that never accepts, its accept queue
// filled by connections made here (Linux drops further SYNs while the queue is full, so a client's connect stays
// pending and is retried). What a firewalled or overloaded host looks like to a client: for connect timeouts.
struct unanswered_port {
  int listener = -1;
  std::vector<int> fillers;
  int port = 0;
  unanswered_port() {
    listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listener >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listener, 0) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
    // A backlog of 0 holds one connection; a few more make sure the queue is full, whatever the kernel rounds
    // it to. Non-blocking: the later ones stay pending, which is the point.
    for (int i = 0; i < 4; ++i) {
      int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      REQUIRE(c >= 0);
      (void)::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
      fillers.push_back(c);
    }
  }
  ~unanswered_port() {
    for (int c : fillers) ::close(c);
    ::close(listener);
  }
  unanswered_port(const unanswered_port&) = delete;
  unanswered_port& operator=(const unanswered_port&) = delete;
};

// A fresh empty directory, removed with its contents at scope exit.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::random_device rd;
    for (int i = 0; i < 100; ++i) {
      fs::path p = fs::temp_directory_path() / ("tendril-http-test-" + std::to_string(rd()));
      if (fs::create_directory(p)) {
        path = p;
        return;
      }
    }
    FAIL("cannot create a temporary directory");
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  // Names of the entries (hidden ones included: a leftover ".x.part-XXXXXX" must show).
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path)) names.push_back(e.path().filename().string());
    return names;
  }
};

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Whether `data` is the server's pattern (byte i = (i*7+3)%256) starting at absolute offset `offset`.
inline bool is_pattern(const char* data, std::size_t n, std::uint64_t offset) {
  for (std::size_t i = 0; i < n; ++i) {
    if (static_cast<unsigned char>(data[i]) != static_cast<unsigned char>(((offset + i) * 7 + 3) % 256)) return false;
  }
  return true;
}

// Checks a file against the pattern without loading it whole.
inline bool file_is_pattern(const fs::path& p, std::uint64_t expected_size) {
  if (fs::file_size(p) != expected_size) return false;
  std::ifstream in(p, std::ios::binary);
  std::vector<char> buf(1 << 20);
  std::uint64_t off = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    auto got = static_cast<std::size_t>(in.gcount());
    if (got == 0) break;
    if (!is_pattern(buf.data(), got, off)) return false;
    off += got;
  }
  return off == expected_size;
}

// A field of /proc/self/status in KiB (VmRSS, VmHWM).
inline long proc_status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::strtol(line.c_str() + key.size(), nullptr, 10);
  }
  return -1;
}

// Resets the peak RSS (VmHWM) to the current RSS, so a later VmHWM is the peak of what follows.
inline bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

// "/stats" of the server: {"connections": N, "requests": M}.
struct server_stats {
  long connections = 0;
  long requests = 0;
};
inline long json_int(const std::string& json, const std::string& key) {
  auto k = json.find("\"" + key + "\"");
  REQUIRE(k != std::string::npos);
  auto colon = json.find(':', k);
  return std::strtol(json.c_str() + colon + 1, nullptr, 10);
}
inline server_stats stats() {
  // A fresh session of its own: never waits behind the session under test.
  http::session s;
  auto r = s.get(url("/stats"));
  REQUIRE(r.status == 200);
  return {json_int(r.body, "connections"), json_int(r.body, "requests")};
}

// The test server answers a proxy's request line ("GET http://host:port/path") as it answers "GET /path", so it can
// stand in for an HTTP proxy: proxy_url() is its address as a proxy. unreachable_target() is a URL on a refused
// port: only a request that goes through the proxy succeeds.
inline std::string proxy_url() { return "http://127.0.0.1:" + std::to_string(server().http_port()); }
inline std::string unreachable_target() { return "http://127.0.0.1:" + std::to_string(refused_port()) + "/headers"; }

}  // namespace http_test
