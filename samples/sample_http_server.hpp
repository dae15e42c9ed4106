// samples/sample_http_server.hpp — a small HTTP/1.1 server on tendril::net, for the samples and the tests.
//
// It is the classic "one thread per connection" server, except that a "thread" here is a tendril task: a green
// thread with its own small stack. Each connection's task reads a request, calls the handler, writes the answer,
// and loops (keep-alive). Every blocking call in it — accept(), read(), write_all(), and a handler that sleeps —
// suspends only that task, so one OS thread serves thousands of connections at once, and a slow handler (like
// seed 002's Flask view that sleeps 2 s) delays only its own client:
//
//   sample::http_server server([](const sample::request& r) -> std::optional<sample::reply> {
//     if (r.path == "/index") { tendril::sleep_for(2s); return sample::reply::text("hello"); }
//     return std::nullopt;                      // not mine: try the static directory, then 404
//   }, {.port = 5000, .static_dir = "public"});
//   server.start();                             // binds, then accepts in a background task
//   ...
//   server.stop();                              // closes the listener and cancels every connection task
//
// What it speaks: HTTP/1.0 and 1.1, GET and HEAD (and any other method the handler wants to see; a request body
// announced by Content-Length is read and handed over), keep-alive by default in 1.1 (`Connection: close` is
// honoured), pipelined requests, answers always with Content-Length. Unknown path: 404. Malformed request
// (bad request line, bad header, chunked body, header block over 64 KiB): 400, then the connection is closed.
// Static files: `static_dir` is served under "/", with `..` segments rejected (400) so nothing outside it is
// reachable. Not a production server: no TLS, no chunked request bodies, no compression, no range requests.
//
// Threading: everything happens on the thread that called start(); use the server from that thread only.
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tendril/net.hpp"
#include "tendril/scheduler.hpp"

namespace sample {

using namespace std::chrono_literals;

// One parsed request.
struct request {
  std::string method;                          // "GET"
  std::string target;                          // as sent: "/img/1.jpg?x=1"
  std::string path;                            // percent-decoded path part: "/img/1.jpg"
  std::string query;                           // after '?', undecoded: "x=1"
  std::string version;                         // "HTTP/1.1"
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // the Content-Length body, if any
  std::string peer;                            // "127.0.0.1:53412"

  std::string header(const std::string& lower_case_name) const {
    auto it = headers.find(lower_case_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// What a handler answers. The server adds Content-Length and Connection.
struct reply {
  int status = 200;
  std::string body;
  std::string content_type = "text/plain; charset=utf-8";
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers

  static reply text(std::string body, int status = 200) {
    reply r;
    r.status = status;
    r.body = std::move(body);
    return r;
  }
  static reply bytes(std::string body, std::string content_type) {
    reply r;
    r.body = std::move(body);
    r.content_type = std::move(content_type);
    return r;
  }
};

// The handler: an answer, or nullopt for "not mine" (then the static directory is tried, then 404). It runs in
// the connection's task and may block (tendril::sleep_for, tendril::http calls...): only this connection waits.
// An exception from it becomes a 500 answer.
using handler = std::function<std::optional<reply>(const request&)>;

// Called after each answer, e.g. to print an access log line. `bytes` counts the body sent; `complete` is false
// when the answer was cut short (the client went away or stopped reading, or a file shrank while being sent).
using access_logger =
    std::function<void(const request&, int status, std::uint64_t bytes, tendril::duration took, bool complete)>;

struct server_config {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;                // 0: any free port (see http_server::port())
  std::filesystem::path static_dir;      // empty: no static files
  tendril::duration idle_timeout = 60s;  // a keep-alive connection idle this long is closed
  std::size_t stack_size = 0;            // per connection task (0: tendril's default, committed lazily)
  access_logger log;                     // optional
};

inline const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

namespace detail {

inline std::string lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

inline int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "%2e%2E/a%20b" -> "../a b"; nullopt for a broken escape or an encoded NUL.
inline std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

inline std::string content_type_for(const std::filesystem::path& p) {
  static const std::map<std::string, std::string> types = {{".html", "text/html; charset=utf-8"},
                                                           {".htm", "text/html; charset=utf-8"},
                                                           {".txt", "text/plain; charset=utf-8"},
                                                           {".css", "text/css"},
                                                           {".js", "text/javascript"},
                                                           {".json", "application/json"},
                                                           {".jpg", "image/jpeg"},
                                                           {".jpeg", "image/jpeg"},
                                                           {".png", "image/png"},
                                                           {".gif", "image/gif"},
                                                           {".svg", "image/svg+xml"},
                                                           {".pdf", "application/pdf"}};
  auto it = types.find(lower(p.extension().string()));
  return it == types.end() ? "application/octet-stream" : it->second;
}

// Thrown by the parser: answer 400 with this text and close.
struct bad_request {
  std::string why;
};

// Everything the server's tasks share. Held by shared_ptr so a task never outlives what it uses, whatever order
// things are torn down in.
struct server_state {
  handler on_request;
  server_config config;
  tendril::net::tcp_listener listener;
  tendril::task<void> acceptor;
  std::unordered_map<std::uint64_t, tendril::task<void>> connections;  // the live connection tasks
  std::uint64_t next_id = 0;
  bool stopping = false;
  // Counters, for narration and tests.
  std::uint64_t accepted = 0;
  std::uint64_t requests = 0;
  std::uint64_t peak_connections = 0;
};

// Reads from `s` into `buf` until it holds a full header block; returns its length (up to and including the
// blank line), or 0 if the peer closed cleanly before sending anything.
inline std::size_t read_head(tendril::net::tcp_stream& s, std::string& buf, tendril::duration idle) {
  constexpr std::size_t max_head = 64 * 1024;
  char chunk[16 * 1024];
  for (;;) {
    auto end = buf.find("\r\n\r\n");
    if (end != std::string::npos) return end + 4;
    if (buf.size() > max_head) throw bad_request{"request header block larger than 64 KiB"};
    std::size_t n = s.read(chunk, sizeof chunk, idle);
    if (n == 0) {
      if (buf.empty()) return 0;
      throw bad_request{"connection closed in the middle of a request"};
    }
    buf.append(chunk, n);
  }
}

// Parses the header block `head` (request line + headers, CRLF-separated, ending with the blank line).
inline request parse_head(std::string_view head) {
  request r;
  auto line_end = head.find("\r\n");
  std::string_view line = head.substr(0, line_end);
  auto sp1 = line.find(' ');
  auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != line.npos) {
    throw bad_request{"malformed request line"};
  }
  r.method = std::string(line.substr(0, sp1));
  r.target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  r.version = std::string(line.substr(sp2 + 1));
  if (r.method.empty()) throw bad_request{"empty method"};
  for (char c : r.method) {
    if (c < 'A' || c > 'Z') throw bad_request{"malformed method"};
  }
  if (r.version != "HTTP/1.1" && r.version != "HTTP/1.0") throw bad_request{"unsupported HTTP version"};
  if (r.target.empty() || r.target[0] != '/') throw bad_request{"the target must start with '/'"};
  auto q = r.target.find('?');
  auto decoded = percent_decode(std::string_view(r.target).substr(0, q));
  if (!decoded) throw bad_request{"bad percent-escape in the path"};
  r.path = std::move(*decoded);
  if (q != std::string::npos) r.query = r.target.substr(q + 1);

  std::size_t pos = line_end + 2;
  while (pos < head.size()) {
    auto e = head.find("\r\n", pos);
    std::string_view h = head.substr(pos, e - pos);
    pos = e + 2;
    if (h.empty()) break;  // the blank line
    auto colon = h.find(':');
    if (colon == std::string_view::npos || colon == 0 || h[0] == ' ' || h[0] == '\t') {
      throw bad_request{"malformed header line"};
    }
    std::string name = lower(std::string(h.substr(0, colon)));
    if (name.find_first_of(" \t") != std::string::npos) throw bad_request{"malformed header name"};
    std::string value(trim(h.substr(colon + 1)));
    auto [it, fresh] = r.headers.emplace(name, value);
    if (!fresh) {
      if (name == "content-length" && it->second != value) throw bad_request{"conflicting Content-Length"};
      if (name != "content-length") it->second += ", " + value;
    }
  }
  return r;
}

inline bool wants_keep_alive(const request& r) {
  std::string c = lower(r.header("connection"));
  if (r.version == "HTTP/1.0") return c.find("keep-alive") != std::string::npos;
  return c.find("close") == std::string::npos;
}

inline std::string response_head(int status, const std::string& content_type, std::uint64_t length, bool keep_alive,
                                 const std::vector<std::pair<std::string, std::string>>& extra) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
  h += "Server: tendril-sample\r\n";
  h += "Content-Type: " + content_type + "\r\n";
  h += "Content-Length: " + std::to_string(length) + "\r\n";
  for (const auto& [k, v] : extra) h += k + ": " + v + "\r\n";
  h += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  h += "\r\n";
  return h;
}

// The static file for `path` under `dir`, or nullopt if there is none. Throws bad_request for `..` segments.
inline std::optional<std::filesystem::path> static_file(const std::filesystem::path& dir, const std::string& path) {
  if (dir.empty()) return std::nullopt;
  // Reject any ".." segment (after percent-decoding, so "%2e%2e" is caught too) and backslashes.
  std::string_view p(path);
  if (p.find('\\') != p.npos) throw bad_request{"backslash in the path"};
  std::size_t start = 0;
  while (start <= p.size()) {
    auto slash = p.find('/', start);
    std::string_view seg = p.substr(start, slash == p.npos ? p.npos : slash - start);
    if (seg == "..") throw bad_request{"'..' in the path"};
    if (slash == p.npos) break;
    start = slash + 1;
  }
  std::filesystem::path file = dir / std::filesystem::path(path).relative_path();
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) file /= "index.html";
  if (!std::filesystem::is_regular_file(file, ec)) return std::nullopt;
  return file;
}

// Answers 400 and closes "lingering": stop sending, then read and drop what the client still sends (for at most
// a second), so that closing with unread data does not reset the connection before the client reads the answer.
// Returns the body size.
inline std::size_t refuse(tendril::net::tcp_stream& s, const std::string& why) {
  std::string body = "400 Bad Request: " + why + "\n";
  s.write_all(response_head(400, "text/plain; charset=utf-8", body.size(), false, {}) + body, 10s);
  s.shutdown();
  const auto until = std::chrono::steady_clock::now() + 1s;
  char sink[4096];
  try {
    for (std::size_t total = 0; total < (1u << 20);) {
      auto left = until - std::chrono::steady_clock::now();
      if (left <= tendril::duration::zero()) break;
      std::size_t n = s.read(sink, sizeof sink, left);
      if (n == 0) break;
      total += n;
    }
  } catch (const tendril::net::error&) {
    // timed out or reset: we are closing anyway
  }
  return body.size();
}

// Serves one connection until it closes, fails, idles out or is cancelled.
inline void serve_connection(const std::shared_ptr<server_state>& st, tendril::net::tcp_stream s) {
  std::string buf;  // bytes read but not yet consumed (pipelined requests stay here)
  for (;;) {
    request req;
    std::size_t head_len = 0;
    try {
      head_len = read_head(s, buf, st->config.idle_timeout);
      if (head_len == 0) return;  // clean close between requests
      req = parse_head(std::string_view(buf).substr(0, head_len));
      buf.erase(0, head_len);
      if (req.headers.count("transfer-encoding")) throw bad_request{"chunked request bodies are not supported"};
      if (auto cl = req.header("content-length"); !cl.empty()) {
        std::size_t len = 0;
        for (char c : cl) {
          if (c < '0' || c > '9' || len > (std::size_t{1} << 32)) throw bad_request{"bad Content-Length"};
          len = len * 10 + static_cast<std::size_t>(c - '0');
        }
        if (len > (std::size_t{64} << 20)) throw bad_request{"request body over 64 MiB"};
        if (buf.size() < len) {
          std::size_t have = buf.size();
          buf.resize(len);
          s.read_exactly(buf.data() + have, len - have, st->config.idle_timeout);
        }
        req.body = buf.substr(0, len);
        buf.erase(0, len);
      }
    } catch (const bad_request& e) {
      refuse(s, e.why);
      return;
    } catch (const tendril::net::timeout_error&) {
      return;  // idle keep-alive connection (or a client too slow to send its request): just close
    }
    req.peer = s.peer();
    ++st->requests;
    const auto started = std::chrono::steady_clock::now();
    const bool keep_alive = wants_keep_alive(req);
    const bool head_only = req.method == "HEAD";

    reply rep;
    std::optional<std::filesystem::path> file;
    try {
      std::optional<reply> answer = st->on_request ? st->on_request(req) : std::nullopt;
      if (answer) {
        rep = std::move(*answer);
      } else if ((file = static_file(st->config.static_dir, req.path))) {
        if (req.method != "GET" && req.method != "HEAD") {
          file.reset();
          rep = reply::text("405 Method Not Allowed\n", 405);
          rep.headers.emplace_back("Allow", "GET, HEAD");
        }
      } else {
        rep = reply::text("404 Not Found: " + req.path + "\n", 404);
      }
    } catch (const bad_request& e) {
      std::size_t bytes = refuse(s, e.why);
      if (st->config.log) st->config.log(req, 400, bytes, std::chrono::steady_clock::now() - started, true);
      return;
    } catch (const tendril::task_cancelled&) {
      throw;  // stop() cancelled us: unwind (it derives from std::exception, so it must not reach the next line)
    } catch (const std::exception& e) {
      rep = reply::text(std::string("500 Internal Server Error: ") + e.what() + "\n", 500);
    }

    std::uint64_t sent = 0;  // body bytes written
    const tendril::duration write_timeout = st->config.idle_timeout;
    auto log = [&](bool complete) {
      if (st->config.log) st->config.log(req, rep.status, sent, std::chrono::steady_clock::now() - started, complete);
    };
    if (file) {
      // Stream the file in chunks: memory stays small whatever its size.
      errno = 0;
      std::ifstream in(*file, std::ios::binary);
      const int open_error = errno;
      std::error_code ec;
      const std::uint64_t size = std::filesystem::file_size(*file, ec);
      if (!in && (open_error == EACCES || open_error == EPERM)) {
        rep = reply::text("403 Forbidden: " + req.path + "\n", 403);  // there, but we may not read it
        file.reset();
      } else if (!in && open_error == ENOENT) {
        rep = reply::text("404 Not Found: " + req.path + "\n", 404);  // removed since static_file() saw it
        file.reset();
      } else if (!in || ec) {
        rep = reply::text("500 Internal Server Error: cannot read " + req.path + "\n", 500);
        file.reset();
      } else {
        rep.status = 200;
        try {
          s.write_all(response_head(200, content_type_for(*file), size, keep_alive, {}), write_timeout);
        } catch (const tendril::net::error&) {
          log(false);  // gone before the head was out: no body bytes sent
          throw;
        }
        if (!head_only) {
          std::vector<char> chunk(64 * 1024);
          while (sent < size && in) {
            const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), size - sent));
            in.read(chunk.data(), static_cast<std::streamsize>(want));
            auto n = static_cast<std::size_t>(in.gcount());
            if (n == 0) break;
            try {
              s.write_all(chunk.data(), n, write_timeout);
            } catch (const tendril::net::error& e) {
              // The client went away (or stopped reading) in the middle of the file: log what it got, then close.
              sent += e.transferred();
              log(false);
              throw;
            }
            sent += n;
          }
          if (sent != size) {  // the file shrank under us: the Content-Length is a lie now, so close
            log(false);
            return;
          }
        }
      }
    }
    if (!file) {
      std::string out = response_head(rep.status, rep.content_type, rep.body.size(), keep_alive, rep.headers);
      const std::size_t head_size = out.size();
      if (!head_only) out += rep.body;
      try {
        s.write_all(out, write_timeout);
      } catch (const tendril::net::error& e) {
        sent = e.transferred() > head_size ? e.transferred() - head_size : 0;
        log(false);
        throw;
      }
      sent = head_only ? 0 : rep.body.size();
    }
    log(true);
    if (!keep_alive) {
      s.shutdown();
      return;
    }
  }
}

}  // namespace detail

class http_server {
 public:
  explicit http_server(handler h, server_config config = {}) : st_(std::make_shared<detail::server_state>()) {
    st_->on_request = std::move(h);
    st_->config = std::move(config);
  }
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;
  // Cancels everything still running (see stop()).
  ~http_server() {
    try {
      stop();
    } catch (...) {
      // A destructor must not throw: if this task is itself being cancelled, the connection tasks have been
      // cancelled anyway and hold the shared state alive until they finish.
    }
  }

  // Binds the listener (throws tendril::net::error if it cannot) and starts accepting in a background task.
  void start() {
    st_->listener = tendril::net::tcp_listener::bind(st_->config.host, st_->config.port);
    std::shared_ptr<detail::server_state> st = st_;
    st_->acceptor = tendril::spawn([st] { accept_loop(st); }, {.name = "http_server accept", .stack_size = 0});
  }

  // Stops accepting, closes the listener, cancels every connection task (a handler in the middle of a sleep
  // is interrupted) and waits for them to unwind. Idempotent. Call it from outside the server's own tasks (a
  // handler cannot wait for itself).
  void stop() {
    if (st_->stopping) return;
    st_->stopping = true;
    // Cancel everything first, then wait: if this task is itself cancelled while waiting, every server task has
    // been told to stop already.
    std::vector<tendril::task<void>> tasks;
    if (st_->acceptor.valid()) tasks.push_back(st_->acceptor);
    for (auto& [id, t] : st_->connections) tasks.push_back(t);
    st_->connections.clear();
    for (auto& t : tasks) t.cancel();
    for (auto& t : tasks) t.join();
    st_->listener.close();  // after the acceptor left accept(): nobody waits on the fd any more
  }

  // Waits until the server stops (stop() from another task).
  void wait() {
    if (st_->acceptor.valid()) st_->acceptor.join();
  }

  std::uint16_t port() const { return st_->listener.port(); }
  // "http://127.0.0.1:PORT" + path
  std::string url(const std::string& path = "/") const {
    return "http://" + st_->config.host + ":" + std::to_string(port()) + path;
  }
  std::uint64_t connections_accepted() const { return st_->accepted; }
  std::uint64_t requests_served() const { return st_->requests; }
  std::size_t open_connections() const { return st_->connections.size(); }
  std::uint64_t peak_connections() const { return st_->peak_connections; }

 private:
  static void accept_loop(const std::shared_ptr<detail::server_state>& st) {
    struct close_on_stop {  // if stop() could not wait for us, we close the listener ourselves on the way out
      detail::server_state& st;
      ~close_on_stop() {
        if (st.stopping) st.listener.close();
      }
    } guard{*st};
    for (;;) {
      tendril::net::tcp_stream conn;
      try {
        conn = st->listener.accept();
      } catch (const tendril::net::error& e) {
        if (e.code() == EMFILE || e.code() == ENFILE || e.code() == ENOBUFS || e.code() == ENOMEM) {
          // Out of file descriptors: the pending connections wait in the backlog until some close.
          std::fprintf(stderr, "http_server: %s (raise `ulimit -n`); retrying\n", e.what());
          tendril::sleep_for(50ms);
          continue;
        }
        throw;
      }
      if (st->stopping) return;  // accepted just as stop() began: drop it
      const std::uint64_t id = st->next_id++;
      ++st->accepted;
      // One task per connection. It removes itself from the table when it ends.
      auto t = tendril::spawn(
          [st, id, c = std::make_shared<tendril::net::tcp_stream>(std::move(conn))]() mutable {
            struct forget {
              detail::server_state& st;
              std::uint64_t id;
              ~forget() { st.connections.erase(id); }
            } guard{*st, id};
            try {
              detail::serve_connection(st, std::move(*c));
            } catch (const tendril::net::error&) {
              // the peer went away mid-answer: nothing to tell anyone
            }
          },
          {.name = "http_server connection", .stack_size = st->config.stack_size});
      st->connections.emplace(id, std::move(t));
      if (st->connections.size() > st->peak_connections) st->peak_connections = st->connections.size();
    }
  }

  std::shared_ptr<detail::server_state> st_;
};

}  // namespace sample
