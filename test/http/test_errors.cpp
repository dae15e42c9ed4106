// Every error path gives its typed exception, with the libcurl code and a message naming the URL.
#include <stdexcept>
#include <string>

#include "helpers.hpp"
#include "tendril/wait.hpp"

using namespace http_test;

namespace {

// Runs `fn`, which must throw E; returns a copy of the exception.
template <class E, class F>
E expect_throw(F&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e;
  } catch (const std::exception& e) {
    FAIL("unexpected exception type: " << e.what());
  }
  FAIL("no exception");
  throw std::logic_error("unreachable");
}

void check_names_url(const http::error& e, const std::string& u) {
  INFO("what(): " << e.what());
  CHECK(e.url() == u);
  CHECK(contains(e.what(), u));
  CHECK(!e.curl_message().empty());
}

}  // namespace

TEST_CASE("an unsupported scheme is an http::error naming the URL") {
  const std::string u = "ftp://127.0.0.1:1/file.txt";
  auto e = expect_throw<http::error>([&] { http::get(u); });
  check_names_url(e, u);
  CHECK(e.code() == 1);                  // CURLE_UNSUPPORTED_PROTOCOL
  CHECK(contains(e.what(), "http://"));  // the hint says what is supported
}

TEST_CASE("a malformed URL is an http::error naming the URL") {
  for (std::string u : {"http://[::1", "http://exa mple.com/", "http://127.0.0.1:99999/"}) {
    INFO("url: " << u);
    auto e = expect_throw<http::error>([&] { http::get(u); });
    check_names_url(e, u);
    CHECK(e.code() == 3);  // CURLE_URL_MALFORMAT
  }
  auto e = expect_throw<http::error>([&] { http::get(""); });
  CHECK(e.code() == 3);
}

TEST_CASE("a NUL byte in the URL is an http::error, not a request to the URL cut at the NUL") {
  // libcurl takes a C string: "/status/200\0..." would silently fetch /status/200.
  const long before = stats().requests;
  const std::string u = url("/status/200") + std::string("\0/../status/404", 15);
  auto e = expect_throw<http::error>([&] { http::get(u); });
  INFO("what(): " << e.what());
  CHECK(e.code() == 3);  // CURLE_URL_MALFORMAT
  CHECK(e.url() == u);
  CHECK(contains(e.what(), "NUL"));
  CHECK(contains(e.what(), url("/status/200") + "\\0/../status/404"));
  temp_dir dir;
  CHECK_THROWS_AS(http::download(u, dir.path / "f"), http::error);
  CHECK(dir.entries().empty());
  CHECK_THROWS_AS(http::session().open(u), http::error);
  CHECK(stats().requests == before + 1);  // only the stats() request itself reached the server
}

TEST_CASE("a method or request header that would inject into the request is an http::error") {
  const long before = stats().requests;
  SUBCASE("CR LF in a header value") {
    http::options o;
    o.headers = {{"X-A", "1\r\nX-Injected: yes"}};
    auto e = expect_throw<http::error>([&] { http::get(url("/headers"), o); });
    INFO("what(): " << e.what());
    CHECK(e.code() == 43);  // CURLE_BAD_FUNCTION_ARGUMENT
    CHECK(contains(e.what(), "X-A"));
    CHECK(contains(e.what(), "\\r\\n"));
  }
  SUBCASE("a session's default header too") {
    http::session_options so;
    so.headers = {{"X-A", std::string("a\0b", 3)}};
    http::session s(so);
    auto e = expect_throw<http::error>([&] { s.get(url("/headers")); });
    CHECK(e.code() == 43);
  }
  SUBCASE("bad header names") {
    for (std::string name : {"", "X A", "X-A:", "X-A\r\nX-B"}) {
      INFO("name: " << name);
      http::options o;
      o.headers = {{name, "v"}};
      auto e = expect_throw<http::error>([&] { http::get(url("/headers"), o); });
      CHECK(e.code() == 43);
      CHECK(contains(e.what(), "header name"));
    }
  }
  SUBCASE("bad methods") {
    for (std::string m : {"", "HEAD ", "GET /x HTTP/1.1\r\nX-B: 1\r\n\r\nGET"}) {
      INFO("method: " << m);
      auto e = expect_throw<http::error>([&] { http::request(m, url("/headers")); });
      CHECK(e.code() == 43);
      CHECK(contains(e.what(), "method"));
    }
  }
  CHECK(stats().requests == before + 1);  // nothing was sent (but stats() itself)
}

TEST_CASE("a refused connection is http::error code 7 with a hint") {
  const std::string u = "http://127.0.0.1:" + std::to_string(refused_port()) + "/x";
  auto e = expect_throw<http::error>([&] { http::get(u); });
  check_names_url(e, u);
  CHECK(e.code() == 7);  // CURLE_COULDNT_CONNECT
  CHECK(contains(e.what(), "is the server running"));
  // Also from a task.
  auto e2 = expect_throw<http::error>([&] { tendril::run([&] { http::get(u); }); });
  CHECK(e2.code() == 7);
}

TEST_CASE("the server dropping the connection mid-body is http::error code 18") {
  const std::string u = url("/drop/200000");
  auto e = expect_throw<http::error>([&] { http::get(u); });
  check_names_url(e, u);
  CHECK(e.code() == 18);  // CURLE_PARTIAL_FILE
  CHECK(contains(e.what(), "closed the connection"));
}

TEST_CASE("a Content-Length too large to be real, with the connection closed after a short body, is code 18") {
  // libcurl reads such a body until the server closes the connection and calls that success (so does the curl
  // tool); the body can never be complete, so tendril reports it as cut short.
  const std::string u = url("/huge-length/5000");
  auto e = expect_throw<http::error>([&] { http::get(u); });
  check_names_url(e, u);
  CHECK(e.code() == 18);  // CURLE_PARTIAL_FILE
  CHECK(contains(e.what(), "Content-Length is too large"));
  CHECK(contains(e.what(), "after 5000 bytes"));
  // A stream gets the body, then the error instead of the end of the body.
  http::session s;
  auto st = s.open(u);
  std::string got;
  auto e2 = expect_throw<http::error>([&] {
    for (std::string piece; !(piece = st.read(1024)).empty();) got += piece;
  });
  CHECK(e2.code() == 18);
  CHECK(got.size() == 5000);
  // A HEAD has no body to be incomplete.
  CHECK(http::request("HEAD", u).status == 200);
  // With Transfer-Encoding the Content-Length does not frame the body (RFC 9112 6.3): complete, no error.
  CHECK(http::get(url("/huge-length-chunked/5000")).body == expected_bytes(5000));
}

TEST_CASE("a stalled transfer with options.timeout throws http::timeout_error, also an http::error") {
  const std::string u = url("/stall");
  http::options o;
  o.timeout = 300ms;
  stopwatch sw;
  auto e = expect_throw<http::timeout_error>([&] { http::get(u, o); });
  CHECK(sw.elapsed() >= 300ms);
  CHECK(sw.elapsed() < generous(5s));  // /stall holds the connection for 60 s
  check_names_url(e, u);
  CHECK(e.code() == 28);  // CURLE_OPERATION_TIMEDOUT
  const http::error& base = e;
  CHECK(base.code() == 28);
  // Caught as the base class too.
  bool caught_as_error = false;
  try {
    http::get(u, o);
  } catch (const http::error&) {
    caught_as_error = true;
  }
  CHECK(caught_as_error);
}

TEST_CASE("a connection that is never accepted, with options.connect_timeout, throws http::timeout_error") {
  unanswered_port target;
  const std::string u = "http://127.0.0.1:" + std::to_string(target.port) + "/never";
  http::options o;
  o.connect_timeout = 300ms;
  stopwatch sw;
  auto e = expect_throw<http::timeout_error>([&] { http::get(u, o); });
  CHECK(sw.elapsed() >= 300ms);
  CHECK(sw.elapsed() < generous(10s));  // without the option, libcurl waits 300 s for a connection
  check_names_url(e, u);
  CHECK(e.code() == 28);  // CURLE_OPERATION_TIMEDOUT
  INFO("what(): " << e.what());
  CHECK(contains(e.what(), "onnect"));  // libcurl's message says it was the connection that timed out
  // From a task, beside another task that keeps running.
  int ticks = 0;
  tendril::run([&] {
    auto ticker = tendril::spawn([&] {
      for (;;) {
        tendril::sleep_for(20ms);
        ++ticks;
      }
    });
    CHECK_THROWS_AS(http::get(u, o), http::timeout_error);
    ticker.cancel();
  });
  CHECK(ticks >= 5);
}

TEST_CASE("negative limits in options are a usage_error before anything is sent (libcurl reads -1 as unlimited)") {
  const auto before = stats();
  http::options redirects;
  redirects.max_redirects = -1;
  try {
    http::get(url("/redirect-loop"), redirects);  // would loop forever with libcurl's reading of -1
    FAIL("max_redirects = -1 was accepted");
  } catch (const tendril::usage_error& e) {
    CHECK(contains(e.what(), "max_redirects is -1"));
  }
  http::options timeout;
  timeout.timeout = -1ms;
  CHECK_THROWS_AS(http::get(url("/bytes/10"), timeout), tendril::usage_error);
  http::options connect;
  connect.connect_timeout = -1s;
  CHECK_THROWS_AS(http::get(url("/bytes/10"), connect), tendril::usage_error);
  http::session_options so;  // a session's defaults too, when it is made
  so.defaults.max_redirects = -3;
  CHECK_THROWS_AS(http::session{so}, tendril::usage_error);
  http::session_options busy_options;  // and before a call waits for a slot of a busy session
  busy_options.max_connections = 1;
  http::session busy(busy_options);
  tendril::run([&] {
    auto holder = tendril::spawn([&] { return busy.get(url("/delay/1")).status; });
    tendril::sleep_for(50ms);
    CHECK_THROWS_AS(busy.get(url("/bytes/10"), connect), tendril::usage_error);
    CHECK_FALSE(holder.done());  // refused at once, not after waiting for the holder's slot
    CHECK(holder.get() == 200);
  });
  CHECK(stats().requests == before.requests + 2);  // nothing was sent (but stats() itself and the holder's)
  redirects.max_redirects = 0;                     // zero is fine: a redirect is then an error
  CHECK_THROWS_AS(http::get(url("/redirect/1"), redirects), http::error);
}

TEST_CASE("a 404 is a response until raise_for_status() throws status_error") {
  const std::string u = url("/status/404");
  auto r = http::get(u);
  CHECK(r.status == 404);
  CHECK(!r.ok());
  CHECK(r.body == "status 404");
  auto e = expect_throw<http::status_error>([&] { r.raise_for_status(); });
  CHECK(e.status() == 404);
  CHECK(e.url() == u);
  CHECK(contains(e.what(), u));
  CHECK(contains(e.what(), "404"));
  // status_error is an http::error.
  bool caught = false;
  try {
    http::get(url("/status/503")).raise_for_status();
  } catch (const http::error& err) {
    caught = true;
    CHECK(contains(err.what(), "503"));
  }
  CHECK(caught);
  // 2xx and 3xx do not throw.
  CHECK_NOTHROW(http::get(url("/status/200")).raise_for_status());
  http::options no_follow;
  no_follow.follow_redirects = false;
  CHECK_NOTHROW(http::get(url("/redirect/1"), no_follow).raise_for_status());
}

TEST_CASE("redirects: a chain is followed, a loop is an error, follow_redirects=false returns the 302") {
  SUBCASE("chain") {
    auto r = http::get(url("/redirect/3"));
    CHECK(r.status == 200);
    CHECK(r.body == "redirect done");
    CHECK(r.url == url("/redirect/0"));
    CHECK(r.header("location").empty());  // headers of the final response only
  }
  SUBCASE("loop beyond max_redirects") {
    const std::string u = url("/redirect-loop");
    http::options o;
    o.max_redirects = 5;
    auto e = expect_throw<http::error>([&] { http::get(u, o); });
    check_names_url(e, u);
    CHECK(e.code() == 47);  // CURLE_TOO_MANY_REDIRECTS
    CHECK(contains(e.what(), "max_redirects"));
  }
  SUBCASE("a chain longer than max_redirects") {
    http::options o;
    o.max_redirects = 2;
    auto e = expect_throw<http::error>([&] { http::get(url("/redirect/3"), o); });
    CHECK(e.code() == 47);
    o.max_redirects = 3;
    CHECK(http::get(url("/redirect/3"), o).status == 200);
  }
  SUBCASE("not followed") {
    http::options o;
    o.follow_redirects = false;
    auto r = http::get(url("/redirect/3"), o);
    CHECK(r.status == 302);
    CHECK(r.header("location") == "/redirect/2");
    CHECK(r.url == url("/redirect/3"));
  }
}

TEST_CASE("on_progress is called, and returning false aborts with http::error") {
  SUBCASE("called") {
    int calls = 0;
    std::int64_t most = 0;
    http::options o;
    o.on_progress = [&](const http::progress& p) {
      ++calls;
      most = std::max(most, p.downloaded);
      return true;
    };
    auto r = http::get(url("/slow/20000?chunk=5000&interval=0.05"), o);
    CHECK(r.body == expected_bytes(20000));
    CHECK(calls > 0);
    CHECK(most > 0);
    CHECK(most <= 20000);
  }
  SUBCASE("abort") {
    const std::string u = url("/slow/100000?chunk=1000&interval=0.02");
    http::options o;
    int calls_after_abort = 0;
    bool aborted = false;
    o.on_progress = [&](const http::progress& p) {
      if (aborted) ++calls_after_abort;
      if (p.downloaded > 0) aborted = true;
      return !aborted;
    };
    stopwatch sw;
    auto e = expect_throw<http::error>([&] { http::get(u, o); });
    CHECK(sw.elapsed() < generous(4s));  // the whole body takes 2 s
    check_names_url(e, u);
    CHECK(e.code() == 42);  // CURLE_ABORTED_BY_CALLBACK
    CHECK(contains(e.what(), "on_progress"));
    CHECK(calls_after_abort == 0);
  }
  SUBCASE("an exception from the callback aborts too, and reaches the requester as it was thrown") {
    http::options o;
    o.on_progress = [](const http::progress&) -> bool { throw std::invalid_argument("boom"); };
    CHECK_THROWS_WITH_AS(http::get(url("/slow/10000?chunk=1000&interval=0.02"), o), "boom", std::invalid_argument);
    CHECK(http::get(url("/bytes/10")).body == expected_bytes(10));  // the next request is fine
  }
}

TEST_CASE("on_progress must not suspend: a sleep in it throws usage_error, and HTTP on the thread goes on") {
  const std::string slow = url("/slow/100000?chunk=1000&interval=0.02");
  SUBCASE("from main(), with no task") {
    http::options o;
    o.on_progress = [](const http::progress&) {
      tendril::sleep_for(50ms);
      return true;
    };
    try {
      http::get(slow, o);
      FAIL("a request whose on_progress sleeps succeeded");
    } catch (const tendril::usage_error& e) {
      CHECK(contains(e.what(), "on_progress must not block"));
    }
    CHECK(http::get(url("/bytes/10")).body == expected_bytes(10));
  }
  SUBCASE("from tasks: a yield or a nested request is refused too; another task's transfer is unharmed") {
    tendril::run([&] {
      auto neighbour = tendril::spawn([&] { return http::get(url("/slow/20000?chunk=2000&interval=0.02")).body; });
      http::options yielding;
      yielding.on_progress = [](const http::progress&) {
        tendril::yield();
        return true;
      };
      CHECK_THROWS_AS(http::get(slow, yielding), tendril::usage_error);
      http::options requesting;
      requesting.on_progress = [&](const http::progress&) { return http::get(url("/bytes/10")).status == 200; };
      CHECK_THROWS_AS(http::get(slow, requesting), tendril::usage_error);
      CHECK(neighbour.get() == expected_bytes(20000));
      CHECK(http::get(url("/bytes/10")).body == expected_bytes(10));
    });
  }
}

TEST_CASE("a tendril::timeout scope around a request aborts it, and the loop stays usable") {
  tendril::run([&] {
    stopwatch sw;
    bool timed_out = false;
    try {
      tendril::timeout t(200ms);
      http::get(url("/delay/30"));
    } catch (const tendril::timeout_error&) {
      timed_out = true;
    }
    CHECK(timed_out);
    CHECK(sw.elapsed() >= 200ms);
    CHECK(sw.elapsed() < generous(2s));
    CHECK(http::get(url("/bytes/10")).body == expected_bytes(10));
  });
}

TEST_CASE("wait_for() on a task in a request cancels it on timeout") {
  tendril::run([&] {
    auto t = tendril::spawn([&] { return http::get(url("/delay/30")).status; });
    stopwatch sw;
    CHECK_THROWS_AS(tendril::wait_for(t, 200ms), tendril::timeout_error);
    CHECK(sw.elapsed() >= 200ms);
    CHECK(sw.elapsed() < generous(2s));
    CHECK(t.done());
    CHECK(t.cancelled());
  });
}
