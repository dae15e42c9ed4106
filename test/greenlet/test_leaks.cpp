// No leaks: stacks go back to the pool, and every dropped greenlet is unwound (greenlet's test_leaks.py).
// Memory itself is checked by running this suite under valgrind and ASan (meson test --setup valgrind / asan).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "helpers.hpp"
#include "tendril/generator.hpp"
#include "tendril/greenlet.hpp"
#include "tendril/stack.hpp"

using tendril::greenlet;
using tendril::greenlet_exit;
using tendril::stack_pool_statistics;
using namespace tendril_test;

TEST_SUITE("leaks") {

TEST_CASE("10,000 create-run-finish cycles: no stack is mapped or kept in use beyond the first") {
  greenlet([] {}).switch_();  // warm the pool
  const tendril::stack_pool_stats before = stack_pool_statistics();
  long sum = 0;
  for (int i = 0; i < 10000; ++i) {
    greenlet g([](int x) { return x + 1; });
    sum += g.switch_(i).as<int>();
    REQUIRE(g.dead());
  }
  const tendril::stack_pool_stats after = stack_pool_statistics();
  CHECK(sum == 10000L * 10001 / 2);
  CHECK(after.mapped == before.mapped);
  CHECK(after.in_use == before.in_use);
  CHECK(after.pooled == before.pooled);
}

TEST_CASE("a running greenlet holds a stack; it goes back to the pool when the greenlet finishes or is killed") {
  greenlet([] {}).switch_();
  const tendril::stack_pool_stats before = stack_pool_statistics();
  {
    greenlet g([] { switch_to_parent(); });
    CHECK(stack_pool_statistics().in_use == before.in_use);  // unstarted: no stack yet
    g.switch_();
    CHECK(stack_pool_statistics().in_use == before.in_use + 1);
  }
  CHECK(stack_pool_statistics().in_use == before.in_use);
  CHECK(stack_pool_statistics().mapped == before.mapped);
}

// Stack colouring (lib/stack_pool.hpp): suspended greenlets do not all sit at the same offset in a page.
TEST_CASE("greenlet stacks are coloured: suspended greenlets sit at different page offsets") {
  std::vector<std::uintptr_t> offsets;
  std::vector<greenlet> gs;
  for (int i = 0; i < 32; ++i) {
    gs.emplace_back([&offsets] {
      offsets.push_back(reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0)) % 4096);
      switch_to_parent();
    });
    gs.back().switch_();
  }
  REQUIRE(offsets.size() == 32);
  std::sort(offsets.begin(), offsets.end());
  CHECK(std::unique(offsets.begin(), offsets.end()) - offsets.begin() >= 3);  // 32 stacks over 8 colours
}

TEST_CASE("20,000 suspended greenlets dropped: each receives greenlet_exit and unwinds") {
  int unwound = 0;
  int exits_caught = 0;
  struct on_unwind {
    int* n;
    ~on_unwind() { ++*n; }
  };
  auto body = [&] {
    on_unwind u{&unwound};
    try {
      switch_to_parent();
    } catch (const greenlet_exit&) {
      ++exits_caught;
      throw;
    }
  };
  greenlet(body).switch_();  // warm up: one suspended greenlet, killed at the end of this statement
  REQUIRE(unwound == 1);
  unwound = exits_caught = 0;
  const std::size_t mapped_before = stack_pool_statistics().mapped;
  const std::size_t in_use_before = stack_pool_statistics().in_use;

  // In batches of 1000 alive at once, so memory stays bounded under valgrind.
  constexpr int batches = 20;
  constexpr int batch = 1000;
  std::size_t peak_in_use = 0;
  for (int b = 0; b < batches; ++b) {
    std::vector<greenlet> held;
    held.reserve(batch);
    for (int i = 0; i < batch; ++i) {
      held.emplace_back(body);
      held.back().switch_();
    }
    peak_in_use = std::max(peak_in_use, stack_pool_statistics().in_use);
  }
  CHECK(peak_in_use == in_use_before + batch);
  CHECK(unwound == batches * batch);
  CHECK(exits_caught == batches * batch);
  CHECK(stack_pool_statistics().in_use == in_use_before);
  // Later batches reuse pooled stacks (the pool keeps a bounded number; the rest are unmapped).
  const tendril::stack_pool_stats after = stack_pool_statistics();
  CHECK(after.mapped <= mapped_before + batch);
  CHECK(after.mapped == after.in_use + after.pooled);
}

TEST_CASE("unfinished generators dropped in a loop leave no stacks behind") {
  tendril::generator<int>([](tendril::yielder<int>& y) { y(1); }).next();
  const tendril::stack_pool_stats before = stack_pool_statistics();
  for (int i = 0; i < 2000; ++i) {
    tendril::generator<int> g([](tendril::yielder<int>& y) {
      for (int k = 0;; ++k) y(k);
    });
    REQUIRE(g.next() == 0);
    REQUIRE(g.next() == 1);
  }
  CHECK(stack_pool_statistics().in_use == before.in_use);
  CHECK(stack_pool_statistics().mapped == before.mapped);
}

TEST_CASE("a forked child that closed and reused its inherited descriptors keeps them while it maps new stacks") {
  // The stack pool may use a pidfd of its own; a child must not close the parent's by number.
  std::vector<greenlet> held;
  for (int i = 0; i < 20; ++i) {  // more stacks than a slab holds: the parent maps slabs (and opens what it needs)
    held.emplace_back([] { switch_to_parent(); });
    held.back().switch_();
  }
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    for (int fd = 3; fd < 256; ++fd) ::close(fd);  // a daemon-style child closes what it inherited...
    std::vector<int> mine;
    for (int i = 0; i < 10; ++i) mine.push_back(::open("/dev/null", O_RDONLY));  // ...and reuses the numbers
    std::vector<greenlet> more;
    for (int i = 0; i < 40; ++i) {  // new slabs, in the child
      more.emplace_back([] { switch_to_parent(); });
      more.back().switch_();
    }
    int lost = 0;
    for (int fd : mine) {
      char target[256] = {};
      const std::string link = "/proc/self/fd/" + std::to_string(fd);
      if (::readlink(link.c_str(), target, sizeof target - 1) < 0 || std::string(target) != "/dev/null") ++lost;
    }
    ::_exit(lost);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // descriptors of the child's own that changed under it
}

}  // TEST_SUITE
