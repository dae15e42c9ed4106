// Scale check: the sample HTTP server and 5,000 concurrent client tasks on one thread, all connections open at
// the same time, no error and no lost response. Counts, not timings.
//
// 5,000 clients + 5,000 server-side connections need ~10,000 file descriptors, more than the usual soft limit
// (1024): the test raises RLIMIT_NOFILE to the hard limit first (what `ulimit -n $(ulimit -Hn)` does in a shell),
// and scales the task count down to fit a smaller hard limit, saying so. Under valgrind it uses 200 tasks.
#include <doctest/doctest.h>

#include <sys/resource.h>

#include <cstdio>
#include <string>
#include <vector>

#include "net_helpers.hpp"
#include "sample_http_server.hpp"
#include "tendril/http.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/sync.hpp"
#include "tendril/wait.hpp"

using namespace net_test;
using tendril::net::tcp_stream;

namespace {

// Counts the outcome of every client: the right response for request i, a wrong one, or an exception.
struct tally {
  int ok = 0, wrong = 0, failed = 0;
  std::string first_error;
  void record(int i, long status, const std::string& body) {
    if (status == 200 && body == "response " + std::to_string(i)) {
      ++ok;
      return;
    }
    ++wrong;
    if (first_error.empty()) first_error = std::to_string(status) + " " + body;
  }
  void fail(const char* what) {
    ++failed;
    if (first_error.empty()) first_error = what;
  }
  void check(int n) const {
    INFO("first error: ", first_error);
    CHECK(ok == n);
    CHECK(wrong == 0);
    CHECK(failed == 0);
  }
};

constexpr int wanted_tasks = 5000;

// Raises the soft open-file limit to the hard limit and returns how many client tasks fit (each needs two fds:
// its own socket and the server's side of the connection), at most `wanted`.
int tasks_that_fit(int wanted) {
  rlimit rl{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &rl) == 0);
  const rlim_t before = rl.rlim_cur;
  const long long limit = raise_open_file_limit();
  const long long fit = (limit - 512) / 2;  // room for the runtime's own fds (epoll, eventfds, std streams...)
  MESSAGE("open-file limit: soft ", before, " -> ", limit, " (hard ", rl.rlim_max, ")");
  if (fit < wanted) {
    std::printf("net_scale: the open-file hard limit (%lld) is too low for %d tasks: scaling down to %lld tasks\n",
                limit, wanted, fit);
    return static_cast<int>(fit > 0 ? fit : 1);
  }
  return wanted;
}

int task_count() {
  if (under_valgrind()) return tasks_that_fit(200);
  return tasks_that_fit(wanted_tasks);
}

// A server whose handler answers only once all `n` requests have arrived: proves they were all in flight at
// once. Answers 503 if that does not happen within a minute (the test then fails on counts, not on a hang).
struct barrier_routes {
  int n;
  int arrived = 0;
  std::shared_ptr<tendril::event> all_in = std::make_shared<tendril::event>();

  sample::handler handler() {
    return [this](const sample::request& r) -> std::optional<sample::reply> {
      if (r.path.rfind("/n/", 0) != 0) return std::nullopt;
      if (++arrived == n) all_in->set();
      if (!all_in->wait_for(60s)) return sample::reply::text("barrier timed out", 503);
      return sample::reply::text("response " + r.path.substr(3));
    };
  }
};

}  // namespace

TEST_SUITE("net") {

TEST_CASE("scale: 5,000 concurrent raw tendril::net clients against the sample server, one thread") {
  const int n = task_count();
  tendril::run([n] {
    barrier_routes routes{n};
    sample::http_server server(routes.handler());
    server.start();
    tally results;
    std::vector<tendril::task<void>> clients;
    clients.reserve(n);
    for (int i = 0; i < n; ++i) {
      clients.push_back(tendril::spawn([&, i] {
        try {
          auto s = tcp_stream::connect("127.0.0.1", server.port(), 60s);
          std::string buf;
          auto r = exchange(s, buf, get_request("/n/" + std::to_string(i), "Connection: close\r\n"));
          results.record(i, r.status, r.body);
        } catch (const std::exception& e) {
          results.fail(e.what());
        }
      }));
    }
    for (auto& t : clients) t.join();
    results.check(n);
    CHECK(routes.arrived == n);
    CHECK(server.requests_served() == static_cast<std::uint64_t>(n));
    CHECK(server.connections_accepted() == static_cast<std::uint64_t>(n));
    CHECK(server.peak_connections() == static_cast<std::uint64_t>(n));  // all open at the same time
    MESSAGE(n, " clients: ", results.ok, " responses checked, peak ", server.peak_connections(), " open connections");
    server.stop();
  });
}

TEST_CASE("scale: 5,000 concurrent requests through one tendril::http session against the sample server") {
  const int n = task_count();
  tendril::run([n] {
    barrier_routes routes{n};
    sample::http_server server(routes.handler());
    server.start();
    tendril::http::session_options so;
    so.max_connections = static_cast<std::size_t>(n);
    so.defaults.timeout = 120s;
    tendril::http::session session(so);
    tally results;
    std::vector<tendril::task<void>> clients;
    clients.reserve(n);
    for (int i = 0; i < n; ++i) {
      clients.push_back(tendril::spawn([&, i] {
        try {
          auto r = session.get(server.url("/n/" + std::to_string(i)));
          results.record(i, r.status, r.body);
        } catch (const std::exception& e) {
          results.fail(e.what());
        }
      }));
    }
    for (auto& t : clients) t.join();
    results.check(n);
    CHECK(routes.arrived == n);
    CHECK(server.requests_served() == static_cast<std::uint64_t>(n));
    CHECK(server.peak_connections() == static_cast<std::uint64_t>(n));
    MESSAGE(n, " session requests: ", results.ok, " responses checked, ", server.connections_accepted(),
            " connections, peak ", server.peak_connections());
    server.stop();
  });
}

}  // TEST_SUITE
