// Header-only helper that runs test/servers/http_server.py (a loopback
// HTTP + HTTPS test server) as a child process for the duration of a test.
//
// Standard library + POSIX (Linux: prctl) only.
//
// Protocol with the script: it prints exactly one line
//     READY <http_port> <https_port> <path_to_cert_pem>
// on stdout when listening, and exits as soon as its stdin reaches EOF.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace tendril_test {

// Deterministic body the server produces for /bytes/<n> and /drop/<n>
// (the latter truncated to n/2 bytes): byte i = (i*7+3)%256.
inline std::string expected_bytes(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) {
    s[i] = static_cast<char>(static_cast<unsigned char>((i * 7 + 3) % 256));
  }
  return s;
}

// Starts `python3 <script_path>` as a child process (fork+execvp, stdin and
// stdout are pipes), waits (at most 30 s) for the READY line and parses it.
// The destructor closes the child's stdin, then waitpid()s it (SIGKILL after
// 5 s if it has not exited). Throws std::runtime_error if python3 cannot start
// or no READY line arrives.
class http_test_server {
 public:
  explicit http_test_server(const std::string& script_path) { start(script_path); }

  ~http_test_server() { stop(); }

  http_test_server(const http_test_server&) = delete;
  http_test_server& operator=(const http_test_server&) = delete;
  http_test_server(http_test_server&&) = delete;
  http_test_server& operator=(http_test_server&&) = delete;

  int http_port() const { return http_port_; }
  int https_port() const { return https_port_; }
  const std::string& cert_file() const { return cert_file_; }
  pid_t pid() const { return pid_; }

  // "http://127.0.0.1:<http_port>" + path
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(http_port_) + path; }
  // "https://localhost:<https_port>" + path (certificate is for localhost/127.0.0.1)
  std::string tls_url(const std::string& path) const {
    return "https://localhost:" + std::to_string(https_port_) + path;
  }

 private:
  pid_t pid_ = -1;
  int stdin_fd_ = -1;   // parent's write end of the child's stdin
  int stdout_fd_ = -1;  // parent's read end of the child's stdout
  int http_port_ = 0;
  int https_port_ = 0;
  std::string cert_file_;

  static void close_fd(int& fd) noexcept {
    if (fd >= 0) {
      ::close(fd);
      fd = -1;
    }
  }

  static std::string errno_text(int err) { return std::string(std::strerror(err)); }

  [[noreturn]] void fail(const std::string& message) {
    stop();
    throw std::runtime_error("tendril_test::http_test_server: " + message);
  }

  void start(const std::string& script_path) {
    // All pipe fds are O_CLOEXEC so that no other child (nor python's own
    // children) inherits them; dup2() onto 0/1 in the child clears the flag.
    int in_pipe[2] = {-1, -1};
    int out_pipe[2] = {-1, -1};
    int err_pipe[2] = {-1, -1};  // reports an execvp() failure from the child
    auto close_all = [&] {
      for (int* p : {in_pipe, out_pipe, err_pipe}) {
        close_fd(p[0]);
        close_fd(p[1]);
      }
    };
    if (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
      const int err = errno;
      close_all();
      throw std::runtime_error("tendril_test::http_test_server: pipe2() failed: " + errno_text(err));
    }

    // Everything the child needs is prepared before fork(): between fork and
    // exec only async-signal-safe calls are allowed.
    std::string prog = "python3";
    std::string script = script_path;
    std::vector<char*> argv = {prog.data(), script.data(), nullptr};
    const pid_t parent = ::getpid();

    const pid_t pid = ::fork();
    if (pid < 0) {
      const int err = errno;
      close_all();
      throw std::runtime_error("tendril_test::http_test_server: fork() failed: " + errno_text(err));
    }
    if (pid == 0) {
      // Child: die with the parent.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);  // parent already gone
      sigset_t none;
      ::sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::signal(SIGPIPE, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      auto move_to = [](int fd, int target) {
        if (fd == target) {
          int flags = ::fcntl(fd, F_GETFD);
          return flags >= 0 && ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) == 0;
        }
        return ::dup2(fd, target) == target;
      };
      int err = 0;
      if (!move_to(in_pipe[0], STDIN_FILENO) || !move_to(out_pipe[1], STDOUT_FILENO)) {
        err = errno;
      } else {
        ::execvp(argv[0], argv.data());
        err = errno;
      }
      ssize_t ignored = ::write(err_pipe[1], &err, sizeof err);
      (void)ignored;
      ::_exit(127);
    }

    // Parent.
    pid_ = pid;
    close_fd(in_pipe[0]);
    close_fd(out_pipe[1]);
    close_fd(err_pipe[1]);
    stdin_fd_ = in_pipe[1];
    stdout_fd_ = out_pipe[0];
    in_pipe[1] = out_pipe[0] = -1;

    // EOF on err_pipe means exec succeeded; data means it failed.
    int child_errno = 0;
    ssize_t got;
    do {
      got = ::read(err_pipe[0], &child_errno, sizeof child_errno);
    } while (got < 0 && errno == EINTR);
    close_fd(err_pipe[0]);
    if (got > 0) {
      fail("cannot start python3 (" + script_path + "): " + errno_text(child_errno));
    }

    read_ready_line(script_path);
  }

  void read_ready_line(const std::string& script_path) {
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::seconds(30);
    std::string buffer;
    for (;;) {
      const auto newline = buffer.find('\n');
      if (newline != std::string::npos) {
        parse_ready(buffer.substr(0, newline), script_path);
        return;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
      if (left.count() <= 0) {
        fail("no READY line from " + script_path + " within 30 s (got: \"" + buffer + "\")");
      }
      pollfd pfd{stdout_fd_, POLLIN, 0};
      const int r = ::poll(&pfd, 1, static_cast<int>(left.count()));
      if (r < 0) {
        if (errno == EINTR) continue;
        fail("poll() failed: " + errno_text(errno));
      }
      if (r == 0) continue;  // deadline re-checked above
      char chunk[512];
      const ssize_t n = ::read(stdout_fd_, chunk, sizeof chunk);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        fail("read() from server failed: " + errno_text(errno));
      }
      if (n == 0) {
        // The child closed stdout before READY: it most likely exited.
        std::string status;
        int ws = 0;
        if (::waitpid(pid_, &ws, 0) == pid_) {
          pid_ = -1;
          if (WIFEXITED(ws)) status = " (exit status " + std::to_string(WEXITSTATUS(ws)) + ")";
          if (WIFSIGNALED(ws)) status = " (killed by signal " + std::to_string(WTERMSIG(ws)) + ")";
        }
        fail(script_path + " exited without a READY line" + status + "; see its stderr above (got: \"" + buffer +
             "\")");
      }
      buffer.append(chunk, static_cast<std::size_t>(n));
    }
  }

  void parse_ready(const std::string& line, const std::string& script_path) {
    // "READY <http_port> <https_port> <cert path (rest of the line)>"
    const std::string prefix = "READY ";
    bool ok = line.rfind(prefix, 0) == 0;
    if (ok) {
      try {
        std::size_t pos = prefix.size();
        std::size_t used = 0;
        http_port_ = std::stoi(line.substr(pos), &used);
        pos += used;
        https_port_ = std::stoi(line.substr(pos), &used);
        pos += used;
        while (pos < line.size() && line[pos] == ' ') ++pos;
        cert_file_ = line.substr(pos);
        while (!cert_file_.empty() && (cert_file_.back() == '\r' || cert_file_.back() == ' ')) {
          cert_file_.pop_back();
        }
      } catch (const std::exception&) {
        ok = false;
      }
    }
    if (!ok || http_port_ <= 0 || https_port_ <= 0 || cert_file_.empty()) {
      fail("malformed READY line from " + script_path + ": \"" + line + "\"");
    }
  }

  void stop() noexcept {
    close_fd(stdin_fd_);  // EOF on the child's stdin: it exits
    if (pid_ > 0) {
      using clock = std::chrono::steady_clock;
      const auto deadline = clock::now() + std::chrono::seconds(5);
      bool reaped = false;
      for (;;) {
        int ws = 0;
        const pid_t r = ::waitpid(pid_, &ws, WNOHANG);
        if (r == pid_ || (r < 0 && errno != EINTR)) {  // exited, or ECHILD
          reaped = true;
          break;
        }
        if (clock::now() >= deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (!reaped) {
        ::kill(pid_, SIGKILL);
        int ws = 0;
        while (::waitpid(pid_, &ws, 0) < 0 && errno == EINTR) {
        }
      }
      pid_ = -1;
    }
    close_fd(stdout_fd_);
  }
};

}  // namespace tendril_test
