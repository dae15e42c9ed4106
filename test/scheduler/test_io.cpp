// wait_readable / wait_writable on the reactor.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "helpers.hpp"
#include "tendril/io.hpp"
#include "tendril/scheduler.hpp"

using namespace sched_test;

namespace {
struct fd_pair {
  int r = -1, w = -1;
  explicit fd_pair(bool socket = false) {
    int fds[2];
    if (socket) {
      REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
    } else {
      REQUIRE(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    }
    r = fds[0];
    w = fds[1];
  }
  ~fd_pair() {
    ::close(r);
    ::close(w);
  }
};
}  // namespace

TEST_CASE("wait_readable wakes when data arrives from another task") {
  fd_pair p;
  tendril::run([&] {
    tendril::spawn([&] {
      tendril::sleep_for(50ms);
      CHECK(::write(p.w, "hi", 2) == 2);
    });
    stopwatch sw;
    CHECK(tendril::wait_readable(p.r, 5s));
    CHECK(sw.elapsed() >= 50ms);
    char buf[4];
    CHECK(::read(p.r, buf, sizeof buf) == 2);
  });
}

TEST_CASE("wait_readable wakes when data arrives from another OS thread") {
  fd_pair p(true);
  tendril::run([&] {
    std::thread th([&] {
      std::this_thread::sleep_for(50ms);
      (void)!::write(p.w, "x", 1);
    });
    stopwatch sw;
    bool ok = tendril::wait_readable(p.r);  // no timeout at all
    th.join();
    CHECK(ok);
    CHECK(sw.elapsed() >= 50ms);
  });
}

TEST_CASE("wait_readable returns false on timeout") {
  fd_pair p;
  tendril::run([&] {
    stopwatch sw;
    CHECK_FALSE(tendril::wait_readable(p.r, 60ms));
    CHECK(sw.elapsed() >= 60ms);
    CHECK(sw.elapsed() < generous(3s));
  });
}

TEST_CASE("wait_readable returns at once when data is already there, and on hang-up") {
  fd_pair p;
  CHECK(::write(p.w, "a", 1) == 1);
  tendril::run([&] {
    CHECK(tendril::wait_readable(p.r, 0ms + 5s));
    fd_pair q(true);
    ::shutdown(q.w, SHUT_WR);
    CHECK(tendril::wait_readable(q.r, 5s));  // EOF is readable
  });
}

TEST_CASE("other tasks run while one waits for an fd") {
  fd_pair p;
  tendril::run([&] {
    int ticks = 0;
    auto waiter = tendril::spawn([&] { return tendril::wait_readable(p.r, 5s); });
    auto ticker = tendril::spawn([&] {
      for (int i = 0; i < 10; ++i) {
        tendril::sleep_for(5ms);
        ++ticks;
      }
      CHECK(::write(p.w, "z", 1) == 1);
    });
    CHECK(waiter.get());
    CHECK(ticks == 10);  // the ticker ran to completion while the waiter waited
    ticker.join();
  });
}

TEST_CASE("wait_writable: ready at once; waits while the buffer is full; wakes when drained") {
  fd_pair p(true);
  tendril::run([&] {
    CHECK(tendril::wait_writable(p.w, 5s));
    std::vector<char> chunk(65536, 'x');
    while (::write(p.w, chunk.data(), chunk.size()) > 0) {
    }
    stopwatch sw;
    CHECK_FALSE(tendril::wait_writable(p.w, 50ms));
    CHECK(sw.elapsed() >= 50ms);
    tendril::spawn([&] {
      tendril::sleep_for(20ms);
      while (::read(p.r, chunk.data(), chunk.size()) > 0) {
      }
    });
    CHECK(tendril::wait_writable(p.w, 5s));
  });
}

TEST_CASE("several tasks wait on different fds at once") {
  std::vector<std::unique_ptr<fd_pair>> ps;
  for (int i = 0; i < 5; ++i) ps.push_back(std::make_unique<fd_pair>());
  tendril::run([&] {
    std::vector<int> order;
    std::vector<tendril::task<void>> ts;
    for (int i = 0; i < 5; ++i) {
      ts.push_back(tendril::spawn([&, i] {
        if (tendril::wait_readable(ps[i]->r, 5s)) order.push_back(i);
      }));
    }
    tendril::yield();
    for (int i : {3, 1, 4, 0, 2}) {
      CHECK(::write(ps[i]->w, "k", 1) == 1);
      tendril::sleep_for(5ms);
    }
    for (auto& t : ts) t.join();
    CHECK(order == std::vector<int>{3, 1, 4, 0, 2});
  });
}

TEST_CASE("a second waiter on the same fd gets usage_error") {
  fd_pair p;
  tendril::run([&] {
    auto first = tendril::spawn([&] { return tendril::wait_readable(p.r, 5s); });
    tendril::yield();
    CHECK_THROWS_AS(tendril::wait_readable(p.r, 10ms), tendril::usage_error);
    CHECK(::write(p.w, "1", 1) == 1);
    CHECK(first.get());  // the first waiter still wakes
  });
}

TEST_CASE("one task may wait for readability while another waits for writability of the same fd") {
  fd_pair p(true);
  std::vector<char> chunk(65536, 'x');
  while (::write(p.r, chunk.data(), chunk.size()) > 0) {
  }  // p.r's send buffer is full: not writable
  tendril::run([&] {
    std::vector<std::string> log;
    auto reader = tendril::spawn([&] {
      bool ok = tendril::wait_readable(p.r, 5s);
      log.push_back("readable");
      return ok;
    });
    auto writer = tendril::spawn([&] {
      bool ok = tendril::wait_writable(p.r, 5s);
      log.push_back("writable");
      return ok;
    });
    tendril::yield();
    CHECK(log.empty());
    CHECK_THROWS_AS(tendril::wait_readable(p.r, 10ms), tendril::usage_error);
    CHECK_THROWS_AS(tendril::wait_writable(p.r, 10ms), tendril::usage_error);
    CHECK(::write(p.w, "r", 1) == 1);  // wakes the reader only
    CHECK(reader.get());
    CHECK(log == std::vector<std::string>{"readable"});
    while (::read(p.w, chunk.data(), chunk.size()) > 0) {
    }  // drain: wakes the writer
    CHECK(writer.get());
    CHECK(log == std::vector<std::string>{"readable", "writable"});
  });
}

TEST_CASE("an fd that cannot be watched throws std::system_error") {
  tendril::run([] {
    CHECK_THROWS_AS(tendril::wait_readable(-1, 10ms), std::system_error);
    char path[] = "/tmp/tendril-io-XXXXXX";
    int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::unlink(path);
    CHECK_THROWS_AS(tendril::wait_readable(fd, 10ms), std::system_error);  // regular files are not pollable
    ::close(fd);
  });
}

TEST_CASE("I/O never starves: a task that only yields does not block a wait_readable") {
  fd_pair p;
  tendril::run([&] {
    bool got = false;
    auto spinner = tendril::spawn([&] {
      stopwatch sw;
      long long rounds = 0;
      while (!got && sw.elapsed() < generous(5s)) {
        tendril::yield();
        ++rounds;
      }
      return rounds;
    });
    auto reader = tendril::spawn([&] { got = tendril::wait_readable(p.r); });
    std::thread writer([&] {
      std::this_thread::sleep_for(50ms);
      (void)!::write(p.w, "w", 1);
    });
    spinner.join();
    writer.join();
    reader.join();
    CHECK(got);
  });
}

TEST_CASE("wait_readable in the thread's main context, without run()") {
  fd_pair p;
  std::thread([&] {
    auto t = tendril::spawn([&] {
      tendril::sleep_for(20ms);
      (void)!::write(p.w, "m", 1);
    });
    bool ok = tendril::wait_readable(p.r, 5s);
    t.join();
    CHECK(ok);
  }).join();
}
