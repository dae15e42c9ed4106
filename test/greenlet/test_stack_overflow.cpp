// Stacks: sizes, and the stack-overflow death tests for greenlets and tasks (in forked children).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "helpers.hpp"
#include "tendril/greenlet.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/stack.hpp"

using tendril::greenlet;
using tendril::stack_options;
using namespace tendril_test;

namespace {

volatile bool stop_recursing = false;  // never set: keeps the compiler from proving the recursion infinite

// Recurses without bound; the volatile local array gives every frame a real footprint the optimiser can't drop,
// and using it after the call keeps this from becoming a tail call.
int recurse(int depth) {
  volatile char pad[512];
  pad[0] = static_cast<char>(depth);
  pad[sizeof pad - 1] = static_cast<char>(depth);
  if (stop_recursing) return pad[0];
  return recurse(depth + 1) + pad[0] + pad[sizeof pad - 1];
}

// Recurses to a fixed depth with a 512-byte frame per level; returns depth + (depth-1) + ... + 0.
int recurse_to(int depth) {
  volatile char pad[512];
  pad[0] = static_cast<char>(depth);
  if (depth == 0) return pad[0];
  return recurse_to(depth - 1) + pad[0];
}

// One frame larger than a stack's guard page. Compiled as tendril's consumers are (tendril_dep, like pkg-config,
// adds -fstack-clash-protection), its prologue touches every page on the way down, so it faults in the guard page;
// without that flag it would skip the guard and write into whatever lies below the stack.
[[gnu::noinline]] int big_frame() {
  volatile char big[100 * 1024];
  big[0] = 1;  // the frame's low end: 100 KiB down, past a 64 KiB stack and its guard page
  big[sizeof big - 1] = 2;
  return big[0] + big[sizeof big - 1];
}

struct child_result {
  bool signalled = false;
  int signal = 0;
  int exit_code = -1;
  std::string err;
};

// Forks; the child runs `body` with its stderr redirected into a pipe and then _exit(0)s. The parent collects
// everything the child wrote to stderr and how it ended.
template <class F>
child_result run_in_child(F body) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    ::dup2(fds[1], 2);
    ::close(fds[1]);
    // doctest's own crash reporter (inherited) would print a test summary from the child; keep stdout quiet.
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) ::dup2(devnull, 1);
    try {
      body();
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  child_result r;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) {
      r.err.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.signalled = WIFSIGNALED(status);
  if (r.signalled) r.signal = WTERMSIG(status);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

// The child died by SIGSEGV after tendril's overflow message naming `who` and the stack's usable size.
void check_overflow_reported(const child_result& r, const std::string& who, std::size_t size) {
  INFO("child stderr: " << r.err);
  CHECK(r.signalled);
  CHECK(r.signal == SIGSEGV);
  CHECK(r.err.find("stack overflow in " + who + " (stack size " + std::to_string(size) + " bytes)") !=
        std::string::npos);
}

}  // namespace

TEST_SUITE("stack") {

TEST_CASE("the default stack size is 256 KiB") { CHECK(tendril::default_stack_size() == 256 * 1024); }

// Every greenlet in this file runs in a forked child, never in the test process itself. Why: tendril installs its
// SIGSEGV handler once per process, when the first stack is allocated, and keeps whatever was installed before
// as the fallback for faults that are not overflows. doctest installs its own crash handler at the start of each
// test case and restores the previous one at the end, which would silently remove tendril's if tendril had
// installed it during an earlier test case. In a fresh child, tendril installs its handler on top of doctest's,
// exactly like a program that installs a crash reporter first and then uses tendril.
TEST_CASE("a greenlet with a small named stack runs fine within it") {
  child_result r = run_in_child([] {
    greenlet g([] { return recurse_to(40); }, std::nullopt, stack_options{.size = 64 * 1024, .name = "small"});
    // 40 + 39 + ... + 0, one 512-byte frame per level: well within 64 KiB.
    if (g.switch_().as<int>() != 40 * 41 / 2 || !g.dead()) ::_exit(1);
  });
  INFO("child stderr: " << r.err);
  CHECK_FALSE(r.signalled);
  CHECK(r.exit_code == 0);
  CHECK(r.err.empty());
}

TEST_CASE("a stack overflow ends the process by SIGSEGV with a message naming the greenlet and its stack size") {
  child_result r = run_in_child([] {
    greenlet g([] { return recurse(0); }, std::nullopt, stack_options{.size = 64 * 1024, .name = "deep-recursion"});
    g.switch_();
  });
  check_overflow_reported(r, "deep-recursion", 64 * 1024);
}

TEST_CASE("a stack overflow in a task names the task and its stack size") {
  child_result r = run_in_child([] {
    tendril::run(
        [] { tendril::spawn([] { return recurse(0); }, {.name = "deep-task", .stack_size = 64 * 1024}).get(); });
  });
  check_overflow_reported(r, "task 'deep-task'", 64 * 1024);
}

TEST_CASE("a frame larger than the guard page is reported as an overflow too, not jumped over") {
  child_result r = run_in_child([] {
    greenlet g([] { return big_frame(); }, std::nullopt, stack_options{.size = 64 * 1024, .name = "big-frame"});
    g.switch_();
  });
  check_overflow_reported(r, "big-frame", 64 * 1024);
}

TEST_CASE("an overflow in an unnamed greenlet is reported as 'greenlet' with the default size") {
  child_result r = run_in_child([] {
    greenlet g([] { return recurse(0); });
    g.switch_();
  });
  check_overflow_reported(r, "greenlet", 256 * 1024);
}

// Under valgrind, memcheck reports the child's deliberate null write ("Invalid write of size 4 ... Address 0x0")
// in the test log; that is expected, and the child's death does not count as a valgrind error exit.
TEST_CASE("a segfault that is not a stack overflow is not reported as one") {
  child_result r = run_in_child([] {
    greenlet g([] {
      volatile int* p = nullptr;
      if (!stop_recursing) *p = 1;  // an ordinary null-pointer write on a greenlet stack
    });
    g.switch_();
  });
  INFO("child stderr: " << r.err);
  // It dies (by SIGSEGV; under ASan, whose handler it is forwarded to, by ASan's report and abort) ...
  CHECK((r.signalled || r.exit_code != 0));
  // ... but not with tendril's overflow message.
  CHECK(r.err.find("stack overflow") == std::string::npos);
}

}  // TEST_SUITE
