// samples/slow_server.cpp — seed 002's Flask server, on tendril::net: slow endpoints that don't block each other.
//
// The Python original:
//
//   @app.route('/index')
//   def index():
//       sleep(2)
//       return 'hello'
//
// Flask's development server gives each request an OS thread, so the sleeps overlap. Here each *connection* gets
// a tendril task (a green thread) and the handler calls tendril::sleep_for(2s), which suspends only that task:
// one OS thread answers 50 simultaneous requests to /index in about 2 seconds, not 100.
//
//   slow_server [--port P] [--dir DIR] [--delay S] [--quiet] [--until-stdin-eof]
//
//   --port P            listen on 127.0.0.1:P (default 5000, like Flask; 0 picks a free port)
//   --dir DIR           also serve the files under DIR (e.g. /index.html, /img/a.jpg); `..` is rejected
//   --delay S           how long /index and /index1 sleep (default 2 seconds)
//   --quiet             no access log
//   --until-stdin-eof   also stop when standard input reaches end of file (for tests driving it through a pipe)
//
// Try it:   ./build/samples/slow_server &
//           time curl -s --parallel --parallel-max 50 $(printf 'http://127.0.0.1:5000/index %.0s' {1..50})
//
// It prints "listening on http://127.0.0.1:PORT", one line per request, and runs until SIGINT or SIGTERM (Ctrl-C).
// Signals arrive through a signalfd that a task waits on with tendril::wait_readable: signal handling becomes
// one more task, with no async-signal-safety puzzles.
#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "command_line.hpp"
#include "sample_http_server.hpp"
#include "tendril/io.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/sync.hpp"

using namespace std::chrono_literals;

namespace {

constexpr const char* usage_line =
    "usage: slow_server [--port P] [--dir DIR] [--delay S] [--quiet] [--until-stdin-eof]\n";

[[noreturn]] void usage(const std::string& why) { sample::usage_failure("slow_server", why, usage_line); }

// Waits (suspending only this task) until fd has data, then reads it. Pipes and terminals go through the
// reactor; a regular file or /dev/null (which epoll refuses) never blocks, so it is read directly.
ssize_t read_when_ready(int fd, void* buf, std::size_t n) {
  try {
    tendril::wait_readable(fd);
  } catch (const std::system_error&) {
    // not pollable: read() will not block
  }
  return ::read(fd, buf, n);
}

}  // namespace

int main(int argc, char** argv) {
  int port = 5000;
  std::string dir;
  double delay = 2.0;
  bool quiet = false;
  bool until_stdin_eof = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value after " + a);
      return argv[++i];
    };
    if (a == "--port") {
      std::string v = value();
      auto p = sample::parse_number<int>(v, 0, 65535);
      if (!p) usage(sample::bad_value("--port", v, "0 to 65535"));
      port = *p;
    } else if (a == "--dir") {
      dir = value();
    } else if (a == "--delay") {
      std::string v = value();
      auto d = sample::parse_number<double>(v, 0, 3600);
      if (!d) usage(sample::bad_value("--delay", v, "seconds, from 0 to 3600"));
      delay = *d;
    } else if (a == "--quiet") {
      quiet = true;
    } else if (a == "--until-stdin-eof") {
      until_stdin_eof = true;
    } else if (a == "-h" || a == "--help") {
      std::printf(
          "slow_server: serves seed 002's slow endpoints /index and /index1\n%s"
          "  --port P            listen on 127.0.0.1:P (default 5000; 0 picks a free port)\n"
          "  --dir DIR           also serve the files under DIR\n"
          "  --delay S           how long /index and /index1 sleep, in seconds (default 2)\n"
          "  --quiet             no access log\n"
          "  --until-stdin-eof   also stop when standard input closes\n",
          usage_line);
      return 0;
    } else {
      usage("unknown argument " + a);
    }
  }
  // Check what we can before starting, so that a mistake is one clear line, not a server that half works.
  if (!dir.empty()) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) usage("--dir " + dir + ": " + std::strerror(errno));
    if (!S_ISDIR(st.st_mode)) usage("--dir " + dir + ": not a directory");
  }
  // With standard input closed (`<&-`), the next descriptor we open would become fd 0, and the stdin watcher
  // would wait on one of the server's own sockets.
  if (until_stdin_eof && ::fcntl(0, F_GETFD) < 0) usage("--until-stdin-eof: standard input is closed");
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // one line at a time, even into a pipe

  // Block SIGINT/SIGTERM before any thread exists (tendril's thread pool inherits the mask), and receive them
  // through a file descriptor instead.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  int sfd = ::signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) {
    std::perror("slow_server: signalfd");
    return 1;
  }

  const auto pause = std::chrono::duration_cast<tendril::duration>(std::chrono::duration<double>(delay));
  int status = 0;
  tendril::run([&] {
    // The routes. The handler runs in the connection's task; sleeping here suspends only that connection.
    sample::handler routes = [pause](const sample::request& r) -> std::optional<sample::reply> {
      if (r.path == "/index") {
        tendril::sleep_for(pause);
        return sample::reply::text("hello");
      }
      if (r.path == "/index1") {
        tendril::sleep_for(pause);
        return sample::reply::text("hello1");
      }
      return std::nullopt;  // static file from --dir, or 404
    };
    sample::server_config config;
    config.port = static_cast<std::uint16_t>(port);
    config.static_dir = dir;
    if (!quiet) {
      config.log = [](const sample::request& r, int code, std::uint64_t bytes, tendril::duration took, bool complete) {
        std::printf("%s  %s %s -> %d, %llu bytes, %.2f s%s\n", r.peer.c_str(), r.method.c_str(), r.target.c_str(), code,
                    static_cast<unsigned long long>(bytes), std::chrono::duration<double>(took).count(),
                    complete ? "" : " (cut short)");
      };
    }
    sample::http_server server(routes, config);
    try {
      server.start();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "slow_server: %s\n", e.what());
      status = 1;
      return;
    }
    std::printf("listening on %s\n", server.url("").c_str());
    std::printf("try: curl %s   (\"hello\" after %g s; /index1 says \"hello1\"; 50 at once take %g s too)\n",
                server.url("/index").c_str(), delay, delay);
    if (!dir.empty()) std::printf("serving the files under %s\n", dir.c_str());
    std::fflush(stdout);

    tendril::event stop;
    auto on_signal = tendril::spawn([&] {
      signalfd_siginfo info{};
      while (read_when_ready(sfd, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) {
      }
      std::printf("got %s, stopping\n", info.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
      stop.set();
    });
    tendril::task<void> on_eof;
    if (until_stdin_eof) {
      on_eof = tendril::spawn([&] {
        char buf[256];
        while (read_when_ready(0, buf, sizeof buf) > 0) {
        }
        std::printf("standard input closed, stopping\n");
        stop.set();
      });
    }
    stop.wait();
    server.stop();  // closes the listener, cancels the connection tasks (mid-sleep ones too)
    std::printf("served %llu requests on %llu connections (at most %llu at once)\n",
                static_cast<unsigned long long>(server.requests_served()),
                static_cast<unsigned long long>(server.connections_accepted()),
                static_cast<unsigned long long>(server.peak_connections()));
    // run() cancels the watcher task that is still waiting.
  });
  ::close(sfd);
  return status;
}
