// HTTP/2, against nginx on loopback (test/servers/h2_server.py: TLS with ALPN h2, plus plain HTTP/1.1): a
// session multiplexes concurrent requests over one connection, and responses and streams read the same as over
// HTTP/1.1. nginx's access log (served by the same nginx) says which connection and protocol served each request.
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "helpers.hpp"
#include "tendril/wait.hpp"

using namespace http_test;

namespace {

tendril_test::http_test_server& h2() {
  static tendril_test::http_test_server s(TENDRIL_H2_SERVER_SCRIPT);
  return s;
}

struct served {
  std::string connection;  // nginx's connection serial number
  std::string protocol;    // "HTTP/2.0", "HTTP/1.1"
  std::string status;
  std::string uri;  // with its query string
};

// The requests nginx has logged whose URI contains `tag`.
std::vector<served> served_with(const std::string& tag) {
  const http::response log = http::get(h2().url("/log/access.log"));
  REQUIRE(log.status == 200);
  std::vector<served> out;
  std::istringstream lines(log.body);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    served s;
    std::string request_number;
    fields >> s.connection >> request_number >> s.protocol >> s.status >> s.uri;
    if (s.uri.find(tag) != std::string::npos) out.push_back(s);
  }
  return out;
}

http::options trusting_the_test_ca() {
  http::options o;
  o.ca_file = h2().cert_file();
  return o;
}

}  // namespace

TEST_CASE("a session multiplexes concurrent https requests over one HTTP/2 connection") {
  http::session_options so;
  so.defaults = trusting_the_test_ca();
  http::session s(so);
  const std::size_t n = under_valgrind() ? 10 : 20;
  int ok = 0;
  tendril::run([&] {
    for (int wave = 0; wave < 2; ++wave) {  // a burst on a fresh host, then one on the open connection
      std::vector<tendril::task<bool>> ts;
      for (std::size_t i = 0; i < n; ++i) {
        ts.push_back(tendril::spawn([&, wave, i] {
          const http::response r =
              s.get(h2().tls_url("/bytes/100000?mux&w=" + std::to_string(wave) + "&i=" + std::to_string(i)));
          return r.status == 200 && r.body == expected_bytes(100000);
        }));
      }
      for (bool good : tendril::gather(ts)) ok += good ? 1 : 0;
    }
  });
  CHECK(ok == static_cast<int>(2 * n));
  const std::vector<served> log = served_with("?mux&");
  REQUIRE(log.size() == 2 * n);
  std::set<std::string> connections;
  for (const served& r : log) {
    CHECK(r.protocol == "HTTP/2.0");
    CHECK(r.status == "200");
    connections.insert(r.connection);
  }
  // Without waiting for the first connection to say it multiplexes (CURLOPT_PIPEWAIT), libcurl would open one
  // connection per request of the first burst.
  CHECK(connections.size() == 1);
}

TEST_CASE("over HTTP/2 a response reads as over HTTP/1.1") {
  const http::options o = trusting_the_test_ca();
  const http::response over2 = http::get(h2().tls_url("/bytes/1000?same-2"), o);
  const http::response over1 = http::get(h2().url("/bytes/1000?same-1"));
  CHECK(over2.status == 200);
  CHECK(over2.ok());
  CHECK(over2.body == over1.body);
  CHECK(over2.body == expected_bytes(1000));
  // HTTP/2 sends header names in lower case, HTTP/1.1 as nginx writes them: the map finds both the same way.
  CHECK(over2.headers.at("Content-Length") == "1000");
  CHECK(over1.headers.at("content-length") == "1000");
  const std::vector<served> two = served_with("?same-2");
  const std::vector<served> one = served_with("?same-1");
  REQUIRE(two.size() == 1);
  REQUIRE(one.size() == 1);
  CHECK(two[0].protocol == "HTTP/2.0");
  CHECK(one[0].protocol == "HTTP/1.1");
}

TEST_CASE("streams over HTTP/2 read slowly: paused and resumed (backpressure), every byte in order") {
  http::session_options so;
  so.defaults = trusting_the_test_ca();
  http::session s(so);
  constexpr std::size_t size = 4 << 20;  // four times a stream's 1 MiB buffer: the transfers must pause
  tendril::run([&] {
    std::vector<tendril::task<bool>> readers;
    for (int i = 0; i < 3; ++i) {  // three streams at once (on one connection, unless libcurl's cache says otherwise)
      readers.push_back(tendril::spawn([&, i] {
        auto st = s.open(h2().tls_url("/bytes/4194304?stream&i=" + std::to_string(i)));
        std::string body;
        body.reserve(size);
        for (std::string piece; !(piece = st.read(16 * 1024)).empty();) {
          body += piece;
          tendril::sleep_for(1ms);  // a reader slower than loopback
        }
        return body == expected_bytes(size);
      }));
    }
    for (bool same : tendril::gather(readers)) CHECK(same);
  });
  const std::vector<served> log = served_with("?stream&");
  REQUIRE(log.size() == 3);
  for (const served& r : log) CHECK(r.protocol == "HTTP/2.0");
}

TEST_CASE("a handle reused from plain http:// requests still waits to multiplex an https:// burst") {
  // The same options for both schemes, so the pooled handles are reused as configured (a plain profile does not
  // record the scheme): what depends on the scheme must be set again. The https:// burst goes to 127.0.0.1, not to
  // the localhost the other tests use: a host of its own, with no HTTP/2 connection of theirs left in libcurl's
  // cache (a known-multiplexing host whose connection was closed is not waited for: each transfer opens its own).
  http::session_options so;
  so.defaults = trusting_the_test_ca();
  http::session s(so);
  const std::size_t n = 10;
  int ok = 0;
  tendril::run([&] {
    for (const bool tls : {false, true}) {
      std::vector<tendril::task<bool>> ts;
      for (std::size_t i = 0; i < n; ++i) {
        ts.push_back(tendril::spawn([&, tls, i] {
          const std::string path = "/bytes/1000?reuse&tls=" + std::to_string(tls) + "&i=" + std::to_string(i);
          const std::string tls_url = "https://127.0.0.1:" + std::to_string(h2().https_port()) + path;
          return s.get(tls ? tls_url : h2().url(path)).status == 200;
        }));
      }
      for (bool good : tendril::gather(ts)) ok += good ? 1 : 0;
    }
  });
  CHECK(ok == static_cast<int>(2 * n));
  std::set<std::string> tls_connections;
  for (const served& r : served_with("?reuse&tls=1")) {
    CHECK(r.protocol == "HTTP/2.0");
    tls_connections.insert(r.connection);
  }
  CHECK(tls_connections.size() == 1);
}
