// Shared helpers for the net suite: timing, environment, and a minimal raw HTTP/1.1 client on tendril::net.
#pragma once

#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>

#include "../support/text.hpp"
#include "../support/timing.hpp"
#include "tendril/net.hpp"

namespace net_test {

using namespace std::chrono_literals;
using tendril_test::clock;
using tendril_test::contains;
using tendril_test::generous;
using tendril_test::slack;
using tendril_test::stopwatch;
using tendril_test::under_asan;
using tendril_test::under_valgrind;

// Sets a flag when destroyed: proves that a task's stack was unwound.
struct on_destroy {
  bool& flag;
  explicit on_destroy(bool& f) : flag(f) {}
  ~on_destroy() { flag = true; }
};

// Raises the soft open-file limit to the hard limit (`ulimit -n $(ulimit -Hn)`); returns the new soft limit.
inline long long raise_open_file_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit up = rl;
    up.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
  }
  return rl.rlim_cur == RLIM_INFINITY ? (1LL << 20) : static_cast<long long>(rl.rlim_cur);
}

// A free loopback port with nothing listening on it (bound, then closed).
inline std::uint16_t closed_port() {
  auto l = tendril::net::tcp_listener::bind("127.0.0.1", 0);
  return l.port();
}

struct http_reply {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// Reads one response (status line, headers, Content-Length body) from `s`; `buf` keeps bytes read beyond it.
// Throws std::runtime_error on a malformed response and tendril::net::error when the connection closes early.
inline http_reply read_reply(tendril::net::tcp_stream& s, std::string& buf, bool head_request = false) {
  char chunk[8192];
  std::size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
    std::size_t n = s.read(chunk, sizeof chunk, 30s);
    if (n == 0) throw tendril::net::error("connection closed before a response", s.peer(), 0);
    buf.append(chunk, n);
  }
  http_reply r;
  std::string head = buf.substr(0, end + 2);
  buf.erase(0, end + 4);
  if (head.rfind("HTTP/1.", 0) != 0 || head.size() < 12) throw std::runtime_error("bad status line: " + head);
  r.status = std::stoi(head.substr(9, 3));
  std::size_t pos = head.find("\r\n") + 2;
  while (pos < head.size()) {
    std::size_t e = head.find("\r\n", pos);
    std::string line = head.substr(pos, e - pos);
    pos = e + 2;
    auto colon = line.find(':');
    if (colon == std::string::npos) throw std::runtime_error("bad header: " + line);
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::size_t v = colon + 1;
    while (v < line.size() && line[v] == ' ') ++v;
    r.headers[name] = line.substr(v);
  }
  std::size_t len = r.headers.count("content-length") ? std::stoul(r.headers["content-length"]) : 0;
  if (head_request) len = 0;
  while (buf.size() < len) {
    std::size_t n = s.read(chunk, sizeof chunk, 30s);
    if (n == 0) throw tendril::net::error("connection closed in the middle of a body", s.peer(), 0);
    buf.append(chunk, n);
  }
  r.body = buf.substr(0, len);
  buf.erase(0, len);
  return r;
}

// Sends `request` on `s` and reads the reply.
inline http_reply exchange(tendril::net::tcp_stream& s, std::string& buf, const std::string& request) {
  s.write_all(request, 30s);
  return read_reply(s, buf, request.rfind("HEAD ", 0) == 0);
}

inline std::string get_request(const std::string& path, const std::string& extra_headers = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers + "\r\n";
}

}  // namespace net_test
