// The proxy environment variables (http_proxy, no_proxy...), in an executable of their own: the test sets and
// unsets them, and setenv() must not race with getenv() on another thread (a libcurl resolver thread left by an
// earlier test, say). Here no other thread runs while the environment changes: the ones the test starts are
// joined before it changes the variables again.
#include <stdlib.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "helpers.hpp"

using namespace http_test;

TEST_CASE("proxy environment variables: honoured as libcurl reads them, if set before a thread's first request") {
  // These cases set and unset the variables themselves; with some already set (a machine behind a proxy) they
  // cannot say what they check, so they are skipped, saying why.
  for (const char* v : {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"}) {
    if (std::getenv(v) != nullptr) {
      const std::string why = "skipped: the proxy variable " + std::string(v) + " is set; unset them to run this";
      MESSAGE(why);
      return;
    }
  }
  CHECK(http::get(url("/status/200")).status == 200);  // this thread's first request (if not before): no variables
  struct unset_on_exit {
    ~unset_on_exit() {
      ::unsetenv("http_proxy");
      ::unsetenv("no_proxy");
    }
  } cleanup;
  ::setenv("http_proxy", proxy_url().c_str(), 1);
  SUBCASE("http_proxy, set before a new thread's first request, is used") {
    int status = 0;
    std::thread th([&] { status = http::get(unreachable_target()).status; });
    th.join();
    CHECK(status == 200);
  }
  SUBCASE("no_proxy names hosts that bypass the proxy") {
    ::setenv("http_proxy", ("http://127.0.0.1:" + std::to_string(refused_port())).c_str(), 1);
    ::setenv("no_proxy", "127.0.0.1", 1);
    int status = 0;
    std::thread th([&] { status = http::get(url("/status/200")).status; });
    th.join();
    CHECK(status == 200);
  }
  SUBCASE("a thread that found no proxy variables at its first request does not look again") {
    try {
      http::get(unreachable_target());
      FAIL("the request went through the proxy");
    } catch (const http::error& e) {
      CHECK(e.code() == 7);  // CURLE_COULDNT_CONNECT: straight to the refused port
    }
  }
}
