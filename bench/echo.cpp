// bench/echo.cpp — tendril::net against a raw epoll loop, measured in the same run: TCP ping-pong on loopback.
//
// N connections, each doing M round trips of a 16-byte message to an echo server, all in one thread:
//   tendril    a task per client connection (write_all, read_exactly) and a task per server connection (read,
//              write_all), as the samples' servers are written
//   raw epoll  one level-triggered epoll loop over the same 2N non-blocking sockets, handling each ready socket in
//              a callback: what hand-written event-loop code does
// Figures are printed, never asserted: round trips per second, CPU time per round trip (getrusage), and their
// ratios tendril / raw (best of the rounds for each side, and the median of the per-round ratios, the two sides
// running back to back in each round, taking turns going first). Both sides' measurements include connecting,
// the server sides seeing each client's end, and closing every socket. No target is set by an issue; the gap is the
// price of the blocking style: every blocking read tries recv() first and waits only after EAGAIN (one extra system
// call per wait), and each wake-up switches to the waiting task.
//
//   build/bench/bench_echo [CONNECTIONS [ROUND_TRIPS [ROUNDS]]]     (default 100 1000 5)
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_time.hpp"
#include "tendril/net.hpp"
#include "tendril/scheduler.hpp"

namespace {

constexpr char message[] = "0123456789abcdef";
constexpr std::size_t message_size = sizeof message - 1;

struct figures {
  double wall = 0;
  double cpu = 0;
};

template <class F>
figures measure(F&& run) {
  const double cpu0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  run();
  return {std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), cpu_seconds() - cpu0};
}

// ---- tendril ---------------------------------------------------------------------------------------------------

figures run_tendril(int connections, int round_trips) {
  figures f;
  tendril::run([&] {
    using tendril::net::tcp_listener;
    using tendril::net::tcp_stream;
    auto listener = tcp_listener::bind("127.0.0.1", 0);
    f = measure([&] {
      auto server = tendril::spawn([&] {
        std::vector<tendril::task<void>> echoes;
        for (int i = 0; i < connections; ++i) {
          auto c = std::make_shared<tcp_stream>(listener.accept());
          echoes.push_back(tendril::spawn([c] {
            char buf[64];
            while (std::size_t n = c->read(buf, sizeof buf)) c->write_all(buf, n);
          }));
        }
        for (auto& t : echoes) t.get();
      });
      std::vector<tendril::task<void>> clients;
      for (int i = 0; i < connections; ++i) {
        clients.push_back(tendril::spawn([&] {
          auto s = tcp_stream::connect("127.0.0.1", listener.port());
          char buf[message_size];
          for (int r = 0; r < round_trips; ++r) {
            s.write_all(message, message_size);
            s.read_exactly(buf, message_size);
          }
        }));
      }
      for (auto& t : clients) t.get();
      server.get();
    });
  });
  return f;
}

// ---- raw epoll -------------------------------------------------------------------------------------------------

[[noreturn]] void fail(const char* what) { throw std::runtime_error(std::string(what) + ": " + std::strerror(errno)); }

struct raw_socket {
  int fd = -1;
  bool client = false;
  int left = 0;          // client: round trips still to start
  std::size_t have = 0;  // client: bytes of the current echo received
};

void send_message(int fd) {
  if (::send(fd, message, message_size, MSG_NOSIGNAL) != static_cast<ssize_t>(message_size)) fail("send");
}

figures run_raw(int connections, int round_trips) {
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(lfd, 4096) != 0 ||
      ::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    fail("listen");
  }
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<std::unique_ptr<raw_socket>> sockets;
  auto add = [&](int fd, bool client) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto s = std::make_unique<raw_socket>();
    s->fd = fd;
    s->client = client;
    s->left = round_trips;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = s.get();
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) fail("epoll_ctl");
    sockets.push_back(std::move(s));
    return sockets.back().get();
  };
  const figures f = measure([&] {
    std::vector<raw_socket*> clients;
    for (int i = 0; i < connections; ++i) {
      const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fail("connect");
      const int a = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (a < 0) fail("accept");
      ::fcntl(c, F_SETFL, O_NONBLOCK);
      clients.push_back(add(c, true));
      add(a, false);
    }
    int running = connections;  // clients with round trips to go
    int serving = connections;  // server sides that have not seen their client's end yet
    for (raw_socket* c : clients) {
      send_message(c->fd);
      --c->left;
    }
    epoll_event events[256];
    char buf[64];
    while (running > 0 || serving > 0) {
      const int n = ::epoll_wait(ep, events, 256, -1);
      for (int i = 0; i < n; ++i) {
        auto* s = static_cast<raw_socket*>(events[i].data.ptr);
        const ssize_t got = ::recv(s->fd, buf, sizeof buf, 0);
        if (got < 0 && errno == EAGAIN) continue;
        if (got < 0) fail("recv");
        if (got == 0) {  // a server side whose client has finished (as the tendril side's echo tasks see it)
          if (s->client) throw std::runtime_error("raw epoll loop: the server closed a connection");
          ::epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, nullptr);
          --serving;
          continue;
        }
        if (!s->client) {
          if (::send(s->fd, buf, static_cast<std::size_t>(got), MSG_NOSIGNAL) != got) fail("send");
          continue;
        }
        s->have += static_cast<std::size_t>(got);
        if (s->have < message_size) continue;
        s->have = 0;
        if (s->left > 0) {
          send_message(s->fd);
          --s->left;
        } else {
          ::epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, nullptr);
          ::shutdown(s->fd, SHUT_WR);
          --running;
        }
      }
    }
    for (auto& s : sockets) ::close(s->fd);  // inside the measurement, as the tendril side's closes are
  });
  ::close(ep);
  ::close(lfd);
  return f;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int connections = argc > 1 ? std::atoi(argv[1]) : 100;
  const int round_trips = argc > 2 ? std::atoi(argv[2]) : 1000;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 5;
  if (connections <= 0 || round_trips <= 0 || rounds <= 0) {
    std::fprintf(stderr, "usage: bench_echo [CONNECTIONS [ROUND_TRIPS [ROUNDS]]] (positive numbers)\n");
    return 2;
  }
  const double total = static_cast<double>(connections) * round_trips;
  std::printf("== TCP ping-pong on loopback, one thread: %d connections x %d round trips of %zu bytes, %d rounds\n",
              connections, round_trips, message_size, rounds);
  run_raw(connections, std::min(round_trips, 100));  // warm-up
  run_tendril(connections, std::min(round_trips, 100));
  std::vector<figures> raw, tendril;
  std::vector<double> rate_ratio, cpu_ratio;
  for (int r = 0; r < rounds; ++r) {  // the two sides take turns going first
    if (r % 2 == 0) {
      raw.push_back(run_raw(connections, round_trips));
      tendril.push_back(run_tendril(connections, round_trips));
    } else {
      tendril.push_back(run_tendril(connections, round_trips));
      raw.push_back(run_raw(connections, round_trips));
    }
    rate_ratio.push_back(raw.back().wall / tendril.back().wall);
    cpu_ratio.push_back(tendril.back().cpu / raw.back().cpu);
  }
  auto best = [](const std::vector<figures>& v, double figures::*field) {
    double b = v.front().*field;
    for (const auto& f : v) b = std::min(b, f.*field);
    return b;
  };
  const double raw_wall = best(raw, &figures::wall), raw_cpu = best(raw, &figures::cpu);
  const double t_wall = best(tendril, &figures::wall), t_cpu = best(tendril, &figures::cpu);
  std::printf("                       round trips/s   vs raw   CPU/round trip us   vs raw\n");
  std::printf("raw epoll loop           %11.0f    1.00x   %17.2f    1.00x\n", total / raw_wall, raw_cpu / total * 1e6);
  std::printf("tendril::net tasks       %11.0f    %.2fx   %17.2f    %.2fx\n", total / t_wall, raw_wall / t_wall,
              t_cpu / total * 1e6, t_cpu / raw_cpu);
  std::printf(
      "  paired (median over the rounds of tendril / raw in the same round): %.3fx round trips/s, %.3fx CPU per "
      "round trip\n",
      median(rate_ratio), median(cpu_ratio));
  std::printf("Best of %d rounds for each side; no target (see the header comment).\n", rounds);
  return 0;
}
