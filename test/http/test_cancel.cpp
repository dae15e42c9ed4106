// Cancelling a task in a request removes its transfer at once.
#include <string>
#include <vector>

#include "helpers.hpp"
#include "tendril/wait.hpp"

using namespace http_test;

TEST_CASE("cancelling a task in a 30 s request frees it quickly") {
  bool started = false;
  bool unwound = false;
  tendril::run([&] {
    auto t = tendril::spawn([&] {
      struct mark {
        bool& f;
        ~mark() { f = true; }
      } m{unwound};
      started = true;
      return http::get(url("/delay/30")).status;
    });
    while (!started) tendril::yield();
    tendril::sleep_for(100ms);  // let the request reach the server (the test holds either way)
    stopwatch sw;
    CHECK(t.cancel());
    t.join();
    CHECK(sw.elapsed() < generous(2s));
    CHECK(t.cancelled());
    CHECK(unwound);
    CHECK_THROWS_AS(t.get(), tendril::task_cancelled);
    // The loop and the default session carry on.
    CHECK(http::get(url("/bytes/100")).body == expected_bytes(100));
  });
}

TEST_CASE("cancelling one of many requests leaves the others alone") {
  tendril::run([&] {
    std::vector<tendril::task<std::string>> ts;
    for (int i = 0; i < 10; ++i) ts.push_back(tendril::spawn([] { return http::get(url("/delay/0.5")).body; }));
    tendril::sleep_for(100ms);
    ts[3].cancel();
    ts[7].cancel();
    auto outcomes = tendril::gather_settled(ts);
    for (std::size_t i = 0; i < outcomes.size(); ++i) {
      if (i == 3 || i == 7) {
        CHECK(ts[i].cancelled());
      } else {
        CHECK(outcomes[i].ok());
        if (outcomes[i].ok()) CHECK(*outcomes[i].value == "delayed 0.5");
      }
    }
  });
}

TEST_CASE("a cancelled task waiting for a session slot gives the slot up cleanly") {
  http::session_options so;
  so.max_connections = 1;
  http::session s(so);
  tendril::run([&] {
    auto busy = tendril::spawn([&] { return s.get(url("/delay/0.5")).status; });
    auto queued = tendril::spawn([&] { return s.get(url("/delay/0.5")).status; });
    tendril::sleep_for(100ms);
    queued.cancel();
    queued.join();
    CHECK(queued.cancelled());
    CHECK(busy.get() == 200);
    // The slot count is intact: two more requests run, one after the other.
    stopwatch sw;
    auto a = tendril::spawn([&] { return s.get(url("/delay/0.3")).status; });
    auto b = tendril::spawn([&] { return s.get(url("/delay/0.3")).status; });
    CHECK(a.get() == 200);
    CHECK(b.get() == 200);
    CHECK(sw.elapsed() >= 600ms);
  });
}

TEST_CASE("cancelling a task reading a stream aborts the transfer") {
  http::session s;
  tendril::run([&] {
    std::uint64_t got = 0;
    auto t = tendril::spawn([&] {
      auto st = s.open(url("/slow/1000000?chunk=1000&interval=0.01"));
      for (std::string piece; !(piece = st.read(4096)).empty();) got += piece.size();
    });
    while (got == 0 && !t.done()) tendril::sleep_for(5ms);
    stopwatch sw;
    t.cancel();
    t.join();
    CHECK(t.cancelled());
    CHECK(sw.elapsed() < generous(2s));
    CHECK(got < 1000000);
  });
}

TEST_CASE("run() cancels a request its main task left running") {
  stopwatch sw;
  tendril::run([&] {
    tendril::spawn([] { http::get(url("/delay/30")); });
    tendril::sleep_for(50ms);
  });
  CHECK(sw.elapsed() < generous(3s));
}

TEST_CASE("a stream read cut short by a timeout scope fails the next reads instead of hanging") {
  // The timeout aborts the transfer; the stream stays usable as an object, and reading it again must report that
  // it was aborted (it used to park forever, waiting for a transfer that was no longer in libcurl).
  http::session s;
  tendril::run([&] {
    auto st = s.open(url("/stall"));  // 10 bytes, then nothing for 60 s
    std::string got;
    bool timed_out = false;
    try {
      tendril::timeout t(200ms);
      for (std::string piece; !(piece = st.read(100)).empty();) got += piece;
    } catch (const tendril::timeout_error&) {
      timed_out = true;
    }
    REQUIRE(timed_out);
    CHECK(got == expected_bytes(got.size()));
    CHECK(st.status() == 200);
    auto again = [&](auto&& read_once) {
      auto t = tendril::spawn([&]() -> std::string {
        try {
          read_once();
          return "no error";
        } catch (const http::error& e) {
          return e.what();
        }
      });
      std::string what;
      CHECK_NOTHROW(what = tendril::wait_for(t, generous(10s)));
      return what;
    };
    const std::string w1 = again([&] { st.read(100); });
    INFO("read(): " << w1);
    CHECK(contains(w1, "aborted"));
    CHECK(contains(w1, url("/stall")));
    std::vector<char> buf(100);
    CHECK(contains(again([&] { st.read_into(buf); }), "aborted"));
    CHECK(contains(again([&] { st.read_all(); }), "aborted"));
  });
}
