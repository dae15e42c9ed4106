// samples/sample_http_server.hpp: HTTP/1.1 behaviour (keep-alive, pipelining, HEAD, bodies, errors), static
// files with the traversal check, slow handlers that block only their own connection, and stop().
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "net_helpers.hpp"
#include "sample_http_server.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/wait.hpp"

using namespace net_test;
using tendril::net::tcp_stream;

namespace {

// The routes used by these tests.
std::optional<sample::reply> routes(const sample::request& r) {
  if (r.path == "/hello") return sample::reply::text("hello");
  if (r.path == "/echo") return sample::reply::text(r.method + " " + r.body);
  if (r.path == "/slow") {
    tendril::sleep_for(under_valgrind() ? 2000ms : 500ms);  // long enough for a fast request to overtake it
    return sample::reply::text("slow");
  }
  if (r.path == "/throw") throw std::runtime_error("handler failed");
  if (r.path == "/query") return sample::reply::text(r.query);
  return std::nullopt;
}

struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string t = (std::filesystem::temp_directory_path() / "tendril-net-XXXXXX").string();
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  void write(const std::string& rel, const std::string& content) const {
    std::filesystem::create_directories((path / rel).parent_path());
    std::ofstream(path / rel, std::ios::binary) << content;
  }
};

tcp_stream connect_to(const sample::http_server& s) { return tcp_stream::connect("127.0.0.1", s.port(), 5s); }

}  // namespace

TEST_SUITE("net") {

TEST_CASE("sample server: keep-alive serves several requests on one connection") {
  tendril::run([] {
    sample::http_server server(routes);
    server.start();
    auto s = connect_to(server);
    std::string buf;
    for (int i = 0; i < 3; ++i) {
      auto r = exchange(s, buf, get_request("/hello"));
      CHECK(r.status == 200);
      CHECK(r.body == "hello");
      CHECK(r.headers["content-length"] == "5");
      CHECK(r.headers["connection"] == "keep-alive");
    }
    CHECK(server.connections_accepted() == 1);
    CHECK(server.requests_served() == 3);
    server.stop();
  });
}

TEST_CASE("sample server: pipelined requests are answered in order") {
  tendril::run([] {
    sample::http_server server(routes);
    server.start();
    auto s = connect_to(server);
    s.write_all(get_request("/slow") + get_request("/hello") + get_request("/nope"));
    std::string buf;
    CHECK(read_reply(s, buf).body == "slow");
    CHECK(read_reply(s, buf).body == "hello");
    CHECK(read_reply(s, buf).status == 404);
  });
}

TEST_CASE("sample server: Connection: close and HTTP/1.0 close after the answer") {
  tendril::run([] {
    sample::http_server server(routes);
    server.start();
    for (std::string req :
         {get_request("/hello", "Connection: close\r\n"), std::string("GET /hello HTTP/1.0\r\n\r\n")}) {
      auto s = connect_to(server);
      std::string buf;
      auto r = exchange(s, buf, req);
      CHECK(r.status == 200);
      CHECK(r.headers["connection"] == "close");
      char c;
      CHECK(s.read(&c, 1, 5s) == 0);  // the server closed
    }
    // HTTP/1.0 with keep-alive asked for stays open.
    auto s = connect_to(server);
    std::string buf;
    CHECK(exchange(s, buf, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").body == "hello");
    CHECK(exchange(s, buf, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").body == "hello");
  });
}

TEST_CASE("sample server: HEAD, request bodies, query strings, 404 and 500") {
  tendril::run([] {
    sample::http_server server(routes);
    server.start();
    auto s = connect_to(server);
    std::string buf;
    auto head = exchange(s, buf, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(head.status == 200);
    CHECK(head.headers["content-length"] == "5");
    CHECK(head.body.empty());
    auto post = exchange(s, buf, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    CHECK(post.body == "POST hello world");
    CHECK(exchange(s, buf, get_request("/query?a=1&b=%20")).body == "a=1&b=%20");
    auto missing = exchange(s, buf, get_request("/missing"));
    CHECK(missing.status == 404);
    auto failed = exchange(s, buf, get_request("/throw"));
    CHECK(failed.status == 500);
    CHECK(failed.body.find("handler failed") != std::string::npos);
    CHECK(exchange(s, buf, get_request("/hello")).body == "hello");  // the connection survived all that
  });
}

TEST_CASE("sample server: malformed requests get 400 and the connection is closed") {
  tendril::run([] {
    sample::http_server server(routes);
    server.start();
    const char* bad[] = {
        "GARBAGE\r\n\r\n",
        "GET /hello HTTP/2.0\r\n\r\n",
        "GET hello HTTP/1.1\r\n\r\n",
        "get /hello HTTP/1.1\r\n\r\n",
        "GET /hello HTTP/1.1\r\nno colon here\r\n\r\n",
        "GET /hello HTTP/1.1\r\n folded: header\r\n\r\n",
        "POST /echo HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET /bad%zzescape HTTP/1.1\r\n\r\n",
    };
    for (const char* req : bad) {
      CAPTURE(req);
      auto s = connect_to(server);
      std::string buf;
      auto r = exchange(s, buf, req);
      CHECK(r.status == 400);
      CHECK(r.headers["connection"] == "close");
      char c;
      CHECK(s.read(&c, 1, 5s) == 0);
    }
    // A header block that never ends is cut off at 64 KiB.
    auto s = connect_to(server);
    std::string huge = "GET /hello HTTP/1.1\r\nX-Filler: " + std::string(70 * 1024, 'x');
    s.write_all(huge);
    std::string buf;
    CHECK(read_reply(s, buf).status == 400);
  });
}

TEST_CASE("sample server: static files, with '..' rejected") {
  temp_dir root;
  root.write("public/index.html", "<h1>home</h1>");
  root.write("public/img/a.jpg", std::string(200000, 'J'));
  root.write("secret.txt", "top secret");
  tendril::run([&] {
    sample::server_config cfg;
    cfg.static_dir = root.path / "public";
    sample::http_server server(routes, cfg);
    server.start();
    auto s = connect_to(server);
    std::string buf;
    auto img = exchange(s, buf, get_request("/img/a.jpg"));
    CHECK(img.status == 200);
    CHECK(img.headers["content-type"] == "image/jpeg");
    CHECK(img.body == std::string(200000, 'J'));
    auto index = exchange(s, buf, get_request("/"));
    CHECK(index.body == "<h1>home</h1>");
    CHECK(index.headers["content-type"].rfind("text/html", 0) == 0);
    auto head = exchange(s, buf, "HEAD /img/a.jpg HTTP/1.1\r\n\r\n");
    CHECK(head.headers["content-length"] == "200000");
    CHECK(exchange(s, buf, get_request("/img/b.jpg")).status == 404);
    CHECK(exchange(s, buf, get_request("/hello")).body == "hello");  // routes first, then files
    for (const char* evil :
         {"/../secret.txt", "/img/../../secret.txt", "/%2e%2e/secret.txt", "/img/%2E%2E/..", "/..\\secret.txt"}) {
      CAPTURE(evil);
      auto c = connect_to(server);
      std::string b;
      auto r = exchange(c, b, get_request(evil));
      CHECK(r.status == 400);
      CHECK(r.body.find("top secret") == std::string::npos);
    }
  });
}

TEST_CASE("sample server: a slow handler delays only its own connection") {
  tendril::run([] {
    sample::http_server server(routes);
    server.start();
    stopwatch sw;
    auto slow = tendril::spawn([&] {
      auto s = connect_to(server);
      std::string buf;
      return exchange(s, buf, get_request("/slow")).body;
    });
    tendril::sleep_for(50ms);  // the slow request is now sleeping in its handler
    auto s = connect_to(server);
    std::string buf;
    CHECK(exchange(s, buf, get_request("/hello")).body == "hello");
    CHECK_FALSE(slow.done());  // answered while the slow one still sleeps
    CHECK(slow.get() == "slow");
    CHECK(sw.elapsed() >= 500ms);
  });
}

TEST_CASE("sample server: stop() closes the listener and cancels connection tasks mid-handler") {
  tendril::run([] {
    bool unwound = false;
    bool finished = false;
    sample::http_server server([&](const sample::request&) -> std::optional<sample::reply> {
      on_destroy guard(unwound);
      tendril::sleep_for(60s);
      finished = true;
      return sample::reply::text("too late");
    });
    server.start();
    const auto port = server.port();
    auto s = connect_to(server);
    auto idle = connect_to(server);  // an idle keep-alive connection, waiting in read()
    s.write_all(get_request("/"));
    tendril::sleep_for(100ms);
    CHECK(server.open_connections() == 2);
    stopwatch sw;
    server.stop();
    CHECK(sw.elapsed() < generous(5s));
    CHECK(unwound);
    CHECK_FALSE(finished);
    CHECK(server.open_connections() == 0);
    char c;
    CHECK(s.read(&c, 1, 5s) == 0);  // closed without an answer
    CHECK(idle.read(&c, 1, 5s) == 0);
    CHECK_THROWS_AS(tcp_stream::connect("127.0.0.1", port, 5s), tendril::net::error);  // nobody listens
    server.stop();                                                                     // idempotent
  });
}

TEST_CASE("sample server: an idle keep-alive connection is closed after idle_timeout") {
  tendril::run([] {
    sample::server_config cfg;
    cfg.idle_timeout = 200ms;
    sample::http_server server(routes, cfg);
    server.start();
    auto s = connect_to(server);
    std::string buf;
    stopwatch sw;  // started before the server's idle wait can start (it starts after its answer)
    CHECK(exchange(s, buf, get_request("/hello")).body == "hello");
    char c;
    CHECK(s.read(&c, 1, 10s) == 0);
    CHECK(sw.elapsed() >= 200ms);
    CHECK(server.open_connections() == 0);
  });
}

TEST_CASE("sample server: the destructor stops a running server") {
  tendril::run([] {
    std::uint16_t port = 0;
    {
      sample::http_server server(routes);
      server.start();
      port = server.port();
      auto s = connect_to(server);
      std::string buf;
      CHECK(exchange(s, buf, get_request("/hello")).body == "hello");
    }
    CHECK_THROWS_AS(tcp_stream::connect("127.0.0.1", port, 5s), tendril::net::error);
  });
}

}  // TEST_SUITE
