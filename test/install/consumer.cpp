// A program outside the project, built against the *installed* tendril with nothing but
// `g++ -std=c++20 consumer.cpp $(pkg-config --cflags --libs tendril)`. test/install/install_test.sh checks its output.
#include <tendril/greenlet.hpp>

#include <cstdio>
#include <string>

int main() {
  // Two greenlets pass a counter back and forth; the main greenlet starts the game and receives the result.
  tendril::greenlet ping;
  tendril::greenlet pong;
  ping = tendril::greenlet([&](int n) {
    while (n < 10) n = pong.switch_(n + 1).as<int>();
    return n;
  });
  pong = tendril::greenlet([&](int n) {
    for (;;) n = ping.switch_(n + 1).as<int>();
  });
  const int result = ping.switch_(0).as<int>();

  // An exception thrown in a greenlet reaches its parent.
  std::string caught;
  tendril::greenlet thrower([] { throw tendril::greenlet_error("from a greenlet"); });
  try {
    thrower.switch_();
  } catch (const tendril::greenlet_error& e) {
    caught = e.what();
  }

  std::printf("consumer: ping-pong reached %d, caught \"%s\", ping dead=%d\n", result, caught.c_str(),
              static_cast<int>(ping.dead()));
  return result == 10 && caught == "from a greenlet" && ping.dead() ? 0 : 1;
}
