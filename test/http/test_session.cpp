// Sessions: many requests from many tasks, connection reuse, max_connections / max_per_host, retries.
#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "helpers.hpp"
#include "tendril/wait.hpp"

using namespace http_test;

TEST_CASE("a session serves 500 requests from 100 tasks, reusing connections") {
  const int tasks = under_valgrind() ? 20 : 100;
  const int per_task = 5;
  http::session_options so;
  so.max_connections = 50;
  http::session s(so);
  const std::string u = url("/bytes/1000");
  const std::string want = expected_bytes(1000);
  const auto before = stats();
  int ok = 0;
  tendril::run([&] {
    std::vector<tendril::task<int>> ts;
    for (int i = 0; i < tasks; ++i) {
      ts.push_back(tendril::spawn([&] {
        int good = 0;
        for (int k = 0; k < per_task; ++k) good += s.get(u).body == want ? 1 : 0;
        return good;
      }));
    }
    for (int g : tendril::gather(ts)) ok += g;
  });
  const auto after = stats();
  CHECK(ok == tasks * per_task);
  CHECK(after.requests - before.requests == tasks * per_task + 1);  // + the second /stats
  const long opened = after.connections - before.connections;
  MESSAGE((tasks * per_task) << " requests opened " << opened << " connections");
  CHECK(opened >= 1);
  CHECK(opened <= static_cast<long>(so.max_connections) + 5);  // far below 500: connections are reused
}

TEST_CASE("max_connections limits the requests in flight") {
  http::session_options so;
  so.max_connections = 4;
  http::session s(so);
  const auto before = stats();
  stopwatch sw;
  tendril::run([&] {
    std::vector<tendril::task<long>> ts;
    for (int i = 0; i < 20; ++i) ts.push_back(tendril::spawn([&] { return s.get(url("/delay/0.3")).status; }));
    for (long st : tendril::gather(ts)) CHECK(st == 200);
  });
  const auto took = sw.elapsed();
  CHECK(took >= 1200ms);  // 5 rounds of 4 at 0.3 s: at least 1.5 s
  CHECK(took < generous(10s));
  const long opened = stats().connections - before.connections;
  CHECK(opened <= 4 + 2);
}

TEST_CASE("a session destroyed while its requests run or wait for a slot lets them finish, still limited") {
  http::session_options so;
  so.max_connections = 1;
  auto s = std::make_unique<http::session>(so);
  stopwatch sw;
  tendril::run([&] {
    std::vector<tendril::task<long>> ts;
    for (int i = 0; i < 3; ++i) {
      ts.push_back(tendril::spawn([&] {
        http::session& mine = *s;  // the reference the caller had; the session goes while this waits
        return mine.get(url("/delay/0.2")).status;
      }));
    }
    tendril::sleep_for(50ms);  // one request in flight, two waiting for its slot
    s.reset();
    for (long status : tendril::gather(ts)) CHECK(status == 200);
  });
  CHECK(sw.elapsed() >= 550ms);  // one at a time: the limit held after the session went
}

TEST_CASE("max_per_host limits each host separately") {
  http::session_options so;
  so.max_per_host = 2;
  http::session s(so);
  // "127.0.0.1" and "localhost" are two hosts for the limit (the server listens on 127.0.0.1).
  const std::string a = url("/delay/0.3");
  const std::string b = "http://localhost:" + std::to_string(server().http_port()) + "/delay/0.3";
  std::vector<clock::time_point> a_done, b_done;
  stopwatch sw;
  tendril::run([&] {
    std::vector<tendril::task<void>> ts;
    for (int i = 0; i < 6; ++i)
      ts.push_back(tendril::spawn([&] {
        CHECK(s.get(a).status == 200);
        a_done.push_back(clock::now());
      }));
    for (int i = 0; i < 2; ++i)
      ts.push_back(tendril::spawn([&] {
        CHECK(s.get(b).status == 200);
        b_done.push_back(clock::now());
      }));
    tendril::gather(ts);
  });
  REQUIRE(a_done.size() == 6);
  REQUIRE(b_done.size() == 2);
  CHECK(sw.elapsed() >= 900ms);  // 6 requests, 2 at a time, 0.3 s each
  // The other host's requests did not queue behind the first host's.
  CHECK(*std::max_element(b_done.begin(), b_done.end()) < *std::max_element(a_done.begin(), a_done.end()));
}

namespace {
// GETs every URL through one session with max_per_host = 1, each from a task of its own, all at once: how many
// gave 200, and how long it took (requests that count as one host run one after another).
std::pair<int, std::chrono::nanoseconds> get_all_one_per_host(const std::vector<std::string>& urls) {
  http::session_options so;
  so.max_per_host = 1;
  http::session s(so);
  CHECK(stats().requests > 0);  // the server is up before the clock starts
  stopwatch sw;
  int ok = 0;
  tendril::run([&] {
    std::vector<tendril::task<void>> ts;
    for (const auto& u : urls) ts.push_back(tendril::spawn([&] { ok += s.get(u).status == 200; }));
    tendril::gather(ts);
  });
  return {ok, sw.elapsed()};
}
}  // namespace

TEST_CASE("max_per_host counts spellings of one origin as one host") {
  // Scheme and host names are case-insensitive and user info is not part of the host: these are two hosts
  // (127.0.0.1 and localhost), so max_per_host = 1 runs the requests to each one after another.
  const std::string port = std::to_string(server().http_port());
  const std::vector<std::string> urls = {
      url("/delay/0.3"), "HTTP://127.0.0.1:" + port + "/delay/0.3", "http://user@127.0.0.1:" + port + "/delay/0.3",
      "http://LocalHost:" + port + "/delay/0.3", "http://localhost:" + port + "/delay/0.3"};
  const auto [ok, elapsed] = get_all_one_per_host(urls);
  CHECK(ok == 5);
  // Two hosts (127.0.0.1 three times, localhost twice), one request at a time each: at least 3 × 0.3 s.
  CHECK(elapsed >= 900ms);
}

TEST_CASE("max_per_host finds the host of a URL without a scheme, whatever its query holds") {
  // libcurl takes "host:port/path" as http://host:port/path. A "://" in the query is not the end of a scheme: these
  // three requests all go to 127.0.0.1, so max_per_host = 1 runs them one after another.
  const std::string base = "127.0.0.1:" + std::to_string(server().http_port()) + "/delay/0.3";
  const std::vector<std::string> urls = {base, base + "?next=http://one.example/", base + "?next=https://two.example/"};
  const auto [ok, elapsed] = get_all_one_per_host(urls);
  CHECK(ok == 3);
  CHECK(elapsed >= 900ms);
}

TEST_CASE("retries: idempotent requests are retried with backoff, POST is not") {
  http::session_options so;
  so.retries = 2;
  so.retry_backoff = 100ms;
  http::session s(so);
  SUBCASE("a refused connection: 3 attempts, then the error") {
    const std::string u = "http://127.0.0.1:" + std::to_string(refused_port()) + "/";
    stopwatch sw;
    try {
      s.get(u);
      FAIL("no exception");
    } catch (const http::error& e) {
      CHECK(e.code() == 7);
    }
    CHECK(sw.elapsed() >= 300ms);  // backoffs of 100 ms and 200 ms
    CHECK(sw.elapsed() < generous(5s));
  }
  SUBCASE("the doubling stops at retry_backoff_max") {
    http::session_options capped = so;
    capped.retries = 8;
    capped.retry_backoff_max = 100ms;  // waits 100 ms eight times; doubling would wait 25.5 s in all
    std::vector<tendril::duration> waits;
    capped.on_retry = [&](const http::retry_event& e) { waits.push_back(e.wait); };
    http::session s2(capped);
    const std::string u = "http://127.0.0.1:" + std::to_string(refused_port()) + "/";
    stopwatch sw;
    CHECK_THROWS_AS(s2.get(u), http::error);
    CHECK(waits == std::vector<tendril::duration>(8, 100ms));  // the old code: 100 ms, 200 ms ... 12.8 s
    CHECK(sw.elapsed() >= 800ms);                              // and the session does wait them
    http::session_options negative = so;
    negative.retry_backoff_max = -1ms;
    CHECK_THROWS_AS(http::session{negative}, tendril::usage_error);
  }
  SUBCASE("on_retry hears each retry before its wait, and may end the request") {
    http::session_options told = so;
    std::vector<std::tuple<int, int, tendril::duration, std::string>> events;
    told.on_retry = [&](const http::retry_event& e) {
      CHECK(e.method == "GET");
      events.emplace_back(e.retry, e.retries, e.wait, std::string(e.reason) + " @ " + std::string(e.url));
    };
    http::session s2(told);
    const std::string u = "http://127.0.0.1:" + std::to_string(refused_port()) + "/x";
    CHECK_THROWS_AS(s2.get(u), http::error);
    REQUIRE(events.size() == 2);
    CHECK(std::get<0>(events[0]) == 1);
    CHECK(std::get<0>(events[1]) == 2);
    CHECK(std::get<1>(events[0]) == 2);
    CHECK(std::get<2>(events[0]) == 100ms);
    CHECK(std::get<2>(events[1]) == 200ms);
    INFO("reason: " << std::get<3>(events[0]));
    CHECK(contains(std::get<3>(events[0]), "is the server running"));  // the error's what(), with its hint
    CHECK(contains(std::get<3>(events[0]), "@ " + u));
    events.clear();
    CHECK(s2.get(url("/status/503")).status == 503);
    REQUIRE(events.size() == 2);
    CHECK(std::get<3>(events[0]) == "HTTP status 503 @ " + url("/status/503"));
    // A callback that throws ends the request at once, with its exception.
    http::session_options stop = so;
    stop.on_retry = [](const http::retry_event&) { throw std::runtime_error("no more"); };
    http::session s3(stop);
    const auto before = stats();
    CHECK_THROWS_WITH_AS(s3.get(url("/status/503")), "no more", std::runtime_error);
    CHECK(stats().requests - before.requests == 1 + 1);  // one attempt (and the stats request)
  }
  SUBCASE("a 503: 3 requests reach the server, the last response is returned") {
    const auto before = stats();
    stopwatch sw;
    auto r = s.get(url("/status/503"));
    CHECK(r.status == 503);
    CHECK(sw.elapsed() >= 300ms);
    CHECK(stats().requests - before.requests == 3 + 1);
  }
  SUBCASE("a 404 is not retried") {
    const auto before = stats();
    CHECK(s.get(url("/status/404")).status == 404);
    CHECK(stats().requests - before.requests == 1 + 1);
  }
  SUBCASE("POST is not retried") {
    http::session_options slow = so;
    slow.retry_backoff = 2s;
    http::session s2(slow);
    const std::string u = "http://127.0.0.1:" + std::to_string(refused_port()) + "/echo";
    stopwatch sw;
    CHECK_THROWS_AS(s2.post(u, "body"), http::error);
    CHECK(sw.elapsed() < 2s);  // a retry would first sleep 2 s
    const auto before = stats();
    CHECK(s2.post(url("/status/503"), "x").status == 404);  // the server answers POST there with 404
    CHECK(s2.request("PATCH", url("/echo"), "x").body == "x");
    CHECK(stats().requests - before.requests == 2 + 1);
  }
  SUBCASE("a download is retried too") {
    temp_dir dir;
    const auto before = stats();
    CHECK_THROWS_AS(s.download(url("/drop/1000"), dir.path / "f"), http::error);
    CHECK(stats().requests - before.requests == 3 + 1);
    CHECK(dir.entries().empty());
  }
}

TEST_CASE("session defaults apply to every request; per-request options override them") {
  http::session_options so;
  // Long enough for the redirect below on a loaded machine (1 s; 10 s under valgrind), short next to /stall's 60 s.
  so.defaults.timeout = std::chrono::duration_cast<tendril::duration>(generous(1s));
  so.defaults.follow_redirects = false;
  http::session s(so);
  CHECK_THROWS_AS(s.get(url("/stall")), http::timeout_error);
  CHECK(s.get(url("/redirect/1")).status == 302);
  http::options o;
  o.timeout = 60s;
  CHECK(s.get(url("/delay/1.2"), o).status == 200);  // longer than the default's 1 s: the request's own applies
  CHECK(s.settings().defaults.timeout == so.defaults.timeout);
}

TEST_CASE("a session is usable from another OS thread") {
  const std::string u = url("/bytes/100");
  http::session s;
  std::string a, b;
  std::thread th([&] { a = s.get(u).body; });
  b = s.get(u).body;
  th.join();
  CHECK(a == expected_bytes(100));
  CHECK(b == expected_bytes(100));
}

TEST_CASE("requests on reused connections and handles carry no options over from earlier requests") {
  // Handles are pooled per thread and plain GETs reuse them without a reset: every combination below must still
  // behave as if each request had a fresh handle.
  http::session s;
  for (int round = 0; round < 3; ++round) {
    http::options short_timeout;
    short_timeout.timeout = 200ms;
    CHECK_THROWS_AS(s.get(url("/stall"), short_timeout), http::timeout_error);
    stopwatch sw;
    CHECK(s.get(url("/delay/0.4")).status == 200);  // no timeout left over
    CHECK(sw.elapsed() >= 400ms);

    auto head = s.request("HEAD", url("/bytes/100"));
    CHECK(head.body.empty());
    CHECK(s.get(url("/bytes/100")).body == expected_bytes(100));  // a body again after HEAD

    CHECK(s.post(url("/echo"), "posted").body == "posted");
    auto after_post = s.get(url("/headers"));
    CHECK(after_post.status == 200);  // a GET again: POST /headers would be a 404
    CHECK(!contains(after_post.body, "content-length"));

    http::options no_follow;
    no_follow.follow_redirects = false;
    CHECK(s.get(url("/redirect/1"), no_follow).status == 302);
    CHECK(s.get(url("/redirect/1")).status == 200);  // follows again

    http::options one_redirect;  // a plain GET with options of its own: a handle configured for it is reused as is
    one_redirect.max_redirects = 1;
    CHECK_THROWS_AS(s.get(url("/redirect/3"), one_redirect), http::error);
    CHECK_THROWS_AS(s.get(url("/redirect/3"), one_redirect), http::error);
    CHECK(s.get(url("/redirect/3")).status == 200);  // the default limit again

    http::options with_header;
    with_header.headers = {{"X-Once", "1"}};
    CHECK(contains(s.get(url("/headers"), with_header).body, "x-once"));
    CHECK(!contains(s.get(url("/headers")).body, "x-once"));

    http::options tls_off;
    tls_off.verify_tls = false;
    CHECK(s.get(server().tls_url("/bytes/10"), tls_off).status == 200);
    CHECK_THROWS_AS(s.get(server().tls_url("/bytes/10")), http::error);  // verification is back on
  }
}
