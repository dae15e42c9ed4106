// http::get and friends: concurrency between tasks, and the same call in main(), in a task, in a greenlet.
#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"
#include "tendril/greenlet.hpp"
#include "tendril/wait.hpp"

using namespace http_test;

TEST_CASE("20 one-second requests from 20 tasks take about one second in total") {
  const std::string u = url("/delay/1");
  stopwatch sw;
  auto bodies = tendril::run([&] {
    std::vector<tendril::task<std::string>> ts;
    for (int i = 0; i < 20; ++i) ts.push_back(tendril::spawn([&] { return http::get(u).raise_for_status().body; }));
    return tendril::gather(ts);
  });
  const auto took = sw.elapsed();
  MESSAGE("20 x /delay/1 took " << sw.ms() << " ms");
  REQUIRE(bodies.size() == 20);
  for (const auto& b : bodies) CHECK(b == "delayed 1");
  CHECK(took >= 1s);
  CHECK(took < generous(5s));  // sequential would be 20 s
}

TEST_CASE("other tasks keep running while a request waits") {
  std::atomic<bool> done{false};
  int ticks = 0;
  tendril::run([&] {
    auto ticker = tendril::spawn([&] {
      while (!done) {
        tendril::sleep_for(10ms);
        ++ticks;
      }
    });
    auto r = http::get(url("/delay/1"));
    done = true;
    ticker.get();
    CHECK(r.status == 200);
    CHECK(r.elapsed >= 1s);
  });
  CHECK(ticks >= 5);
}

TEST_CASE("the same call works in plain main(), in a task, and in a greenlet inside a task") {
  const std::string u = url("/bytes/5000");
  const std::string want = expected_bytes(5000);

  SUBCASE("plain main(): no run(), no task") {
    auto r = http::get(u);
    CHECK(r.status == 200);
    CHECK(r.ok());
    CHECK(r.body == want);
    CHECK(r.url == u);
    CHECK(r.header("Content-Length") == "5000");
    CHECK(r.header("content-type") == "application/octet-stream");
    CHECK(r.elapsed > 0ns);
  }
  SUBCASE("plain main(), twice in a row and with a task spawned from main") {
    auto t = tendril::spawn([&] { return http::get(u).body; });
    CHECK(http::get(u).body == want);
    CHECK(t.get() == want);
  }
  SUBCASE("in a task") {
    auto body = tendril::run([&] { return http::get(u).body; });
    CHECK(body == want);
  }
  SUBCASE("in a greenlet inside a task, while another task ticks") {
    int ticks = 0;
    std::string body;
    tendril::run([&] {
      bool done = false;
      auto ticker = tendril::spawn([&] {
        while (!done) {
          tendril::sleep_for(10ms);
          ++ticks;
        }
      });
      tendril::greenlet g([&] { body = http::get(url("/bytes/5000?delay=0.5")).body; });
      g.switch_();
      CHECK(g.dead());
      done = true;
      ticker.get();
    });
    CHECK(body == want);
    CHECK(ticks >= 5);  // the greenlet's request suspended the whole task, not the thread
  }
  SUBCASE("in a greenlet in plain main()") {
    std::string body;
    tendril::greenlet g([&] { body = http::get(u).body; });
    g.switch_();
    CHECK(body == want);
  }
}

TEST_CASE("request(): HEAD, PUT, DELETE and an empty body") {
  auto head = http::request("HEAD", url("/bytes/1234"));
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  CHECK(head.header("content-length") == "1234");

  auto put = http::request("PUT", url("/echo"), "put body");
  CHECK(put.status == 200);
  CHECK(put.body == "put body");

  auto del = http::request("DELETE", url("/bytes/10"));
  CHECK(del.status == 404);  // the server only serves GET/HEAD there: a response, not an error

  auto empty = http::post(url("/echo"), "");
  CHECK(empty.status == 200);
  CHECK(empty.body.empty());

  auto none = http::get(url("/status/204"));
  CHECK(none.status == 204);
  CHECK(none.body.empty());
}

TEST_CASE("response headers are lower-cased, and looking them up is case-insensitive") {
  auto r = http::get(url("/status/200"));
  CHECK(r.headers.count("content-type") == 1);
  CHECK(r.headers.count("Content-Type") == 1);
  CHECK(r.headers.contains("CONTENT-TYPE"));
  CHECK(r.headers.find("Content-Type")->first == "content-type");
  CHECK(r.headers.at("Content-Type") == "text/plain");
  CHECK(r.header("CONTENT-TYPE") == "text/plain");
  CHECK(r.header("x-not-there").empty());
  CHECK(r.headers.count("x-not-there") == 0);
  CHECK(r.headers.find("x-not-there") == r.headers.end());
  CHECK_THROWS_AS(r.headers.at("x-not-there"), std::out_of_range);
  CHECK(r.header("server") == "tendril-test-server/1.0");
  for (const auto& [name, value] : r.headers) {
    CHECK(!name.empty());
    for (char c : name) CHECK_FALSE((c >= 'A' && c <= 'Z'));
  }
}

TEST_CASE("repeated response headers are joined with \", \" in the first one's place; order is the server's") {
  auto r = http::get(url("/repeat-headers"));
  REQUIRE(r.status == 200);
  CHECK(r.body == "repeats");
  CHECK(r.headers.at("x-repeat") == "one, two");
  CHECK(r.headers.at("X-Other") == "1");
  std::vector<std::string> names;
  for (const auto& [name, value] : r.headers) names.push_back(name);
  const auto pos = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) - names.begin(); };
  CHECK(std::count(names.begin(), names.end(), "x-repeat") == 1);
  CHECK(pos("content-length") < pos("x-repeat"));
  CHECK(pos("x-repeat") < pos("x-other"));
}

TEST_CASE("a chunked response's trailers are among its headers") {
  auto r = http::get(url("/trailers"));
  CHECK(r.body == "hello world");
  CHECK(r.headers.at("x-trailer") == "done");
  CHECK(r.headers.at("content-type") == "text/plain");
}

TEST_CASE("header values lose the blanks around them; an empty value is a header too") {
  auto r = http::get(url("/repeat-headers"));
  CHECK(r.headers.at("x-padded") == "padded value");
  REQUIRE(r.headers.contains("x-blank"));
  CHECK(r.headers.at("x-blank").empty());
}

// A response's headers are kept as the lines that arrived and parsed on their first read (headers_access.hpp).
TEST_CASE("headers parsed on first read: copies, moves, adds and concurrent first reads all see the same headers") {
  const http::response fetched = http::get(url("/repeat-headers"));  // never read before the copies below
  const std::vector<std::pair<std::string, std::string>> want = {
      {"content-type", "text/plain"}, {"content-length", "7"}, {"x-repeat", "one, two"}, {"x-other", "1"},
      {"x-padded", "padded value"},   {"x-blank", ""}};
  auto entries = [](const http::headers_map& h) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [name, value] : h) {
      if (name != "server" && name != "date") out.emplace_back(name, value);  // http.server's own, varying
    }
    return out;
  };
  SUBCASE("a copy of an unread map, and the map itself") {
    http::headers_map copy = fetched.headers;
    const http::headers_map other = fetched.headers;
    CHECK(copy == other);  // both unread until compared
    CHECK(entries(copy) == want);
    CHECK(entries(fetched.headers) == want);
    CHECK(copy == fetched.headers);
    http::headers_map& self = copy;
    copy = self;  // self-assignment keeps the map
    CHECK(entries(copy) == want);
  }
  SUBCASE("moved from unread: the target has the headers, the source none") {
    http::response r = fetched;
    http::headers_map moved = std::move(r.headers);
    CHECK(entries(moved) == want);
    CHECK(r.headers.empty());  // NOLINT(bugprone-use-after-move): a moved-from map is empty, as documented
    http::headers_map assigned{{"X-Old", "1"}};
    assigned = std::move(moved);
    CHECK(entries(assigned) == want);
    CHECK(!assigned.contains("x-old"));
  }
  SUBCASE("add() to an unread map comes after the arrived headers") {
    http::headers_map h = fetched.headers;
    h.add("X-Repeat", "three");
    h.add("X-Mine", "m");
    auto got = entries(h);
    REQUIRE(got.size() == want.size() + 1);
    CHECK(got[2] == std::pair<std::string, std::string>{"x-repeat", "one, two, three"});
    CHECK(got.back() == std::pair<std::string, std::string>{"x-mine", "m"});
  }
  SUBCASE("copy-assigned, and cleared, while unread") {
    http::headers_map h{{"X-Old", "1"}};
    h = fetched.headers;
    CHECK(entries(h) == want);
    http::headers_map cleared = fetched.headers;
    cleared.clear();
    CHECK(cleared.empty());
    CHECK(cleared.find("x-repeat") == cleared.end());
  }
  SUBCASE("threads reading and copying one unread map at once") {
    // 50 rounds of four threads starting together on a fresh, unread copy: two read it, two copy it and read
    // their copy. Each first read parses; the others wait for it and see the same entries.
    for (int round = 0; round < 50; ++round) {
      const http::response shared = fetched;
      std::atomic<int> ready{0};
      std::vector<std::vector<std::pair<std::string, std::string>>> seen(4);
      std::vector<std::thread> threads;
      for (std::size_t i = 0; i < seen.size(); ++i) {
        threads.emplace_back([&, i] {
          ready.fetch_add(1);
          while (ready.load() < static_cast<int>(seen.size())) std::this_thread::yield();
          if (i % 2 == 0) {
            seen[i] = entries(shared.headers);
          } else {
            const http::headers_map copy = shared.headers;
            seen[i] = entries(copy);
          }
        });
      }
      for (auto& t : threads) t.join();
      for (const auto& s : seen) REQUIRE(s == want);
    }
  }
}

TEST_CASE("headers_map on its own: add() lower-cases and joins, lookups ignore case") {
  http::headers_map h{{"Content-Type", "text/html"}, {"Set-Cookie", "a=1"}, {"SET-COOKIE", "b=2"}};
  CHECK(h.size() == 2);
  CHECK(!h.empty());
  CHECK(h.begin()->first == "content-type");
  CHECK(h.at("set-cookie") == "a=1, b=2");
  h.add("X-Empty", "");
  CHECK(h.contains("x-empty"));
  CHECK(h.at("X-EMPTY").empty());
  CHECK(h.count("content-typ") == 0);  // a prefix is not a match
  CHECK(h.count("content-type-x") == 0);
  http::headers_map same{{"content-type", "text/html"}, {"set-cookie", "a=1, b=2"}, {"x-empty", ""}};
  CHECK(h == same);
  h.clear();
  CHECK(h.empty());
  CHECK(h.find("content-type") == h.end());
}

TEST_CASE("headers_map::add() lower-cases ASCII letters only, at any length and position") {
  // add() lower-cases eight bytes at a time: every length up to a few words, the letters' neighbours in ASCII
  // ('@' 'A' 'Z' '[' '`' 'a' 'z' '{') and bytes >= 0x80 (left alone) in every position.
  const std::string pattern = "@AZ[`az{\x80\xC1\xDA\xFF-X9_";
  const std::string lowered = "@az[`az{\x80\xC1\xDA\xFF-x9_";
  for (std::size_t len = 1; len <= 80; ++len) {
    for (std::size_t shift = 0; shift < pattern.size(); ++shift) {
      std::string name, want;
      for (std::size_t i = 0; i < len; ++i) {
        name += pattern[(i + shift) % pattern.size()];
        want += lowered[(i + shift) % lowered.size()];
      }
      http::headers_map h;
      h.add(name, "1");
      h.add(want, "2");  // the same name: joined
      REQUIRE(h.size() == 1);
      CHECK(h.begin()->first == want);
      CHECK(h.begin()->second == "1, 2");
      CHECK(h.contains(name));
    }
  }
  http::headers_map h;
  h.add("ab", "1");
  h.add("AC", "2");  // same length, different name
  h.add("a", "3");   // a prefix is not a repeat
  CHECK(h.size() == 3);
  CHECK(h.at("ab") == "1");
  CHECK(h.at("ac") == "2");
  CHECK(h.at("A") == "3");
}

TEST_CASE("a request from another OS thread runs on that thread's own loop") {
  const std::string u = url("/bytes/100");  // the server starts on the main thread, not on `th`
  std::string body;
  std::thread th([&] { body = http::get(u).body; });
  th.join();
  CHECK(body == expected_bytes(100));
}

TEST_CASE("options::proxy sends the request through that proxy") {
  http::options o;
  o.proxy = proxy_url();
  const std::string target = unreachable_target();
  auto r = http::get(target, o);
  CHECK(r.status == 200);
  // The proxy got the target's host (the Host header of a proxied request names the target, not the proxy).
  const std::string host = target.substr(7, target.find('/', 7) - 7);
  CHECK(contains(r.body, "\"host\": \"" + host + "\""));
  // Without it, the same URL is refused.
  CHECK_THROWS_AS(http::get(target), http::error);
}
