// promise/future, event, semaphore, channel, mutex, condition_variable.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/sync.hpp"

using namespace sched_test;

// ---- promise / future ----------------------------------------------------------------------------------------------

TEST_CASE("a future set by another task (seed 004's set_after)") {
  tendril::run([] {
    tendril::promise<std::string> p;
    auto f = p.get_future();
    auto setter = tendril::spawn([p]() mutable {
      tendril::sleep_for(50ms);
      p.set_value("0");
    });
    stopwatch sw;
    CHECK_FALSE(f.ready());
    CHECK(f.get() == "0");
    CHECK(sw.elapsed() >= 50ms);
    CHECK(f.ready());
    CHECK(f.get() == "0");  // again
    setter.join();
  });
}

TEST_CASE("a future fulfilled from another OS thread wakes the task while other tasks keep running") {
  tendril::run([] {
    tendril::promise<int> p;
    auto f = p.get_future();
    int ticks = 0;
    bool stop = false;
    auto ticker = tendril::spawn([&] {
      while (!stop) {
        tendril::sleep_for(5ms);
        ++ticks;
      }
    });
    std::thread th([p]() mutable {
      std::this_thread::sleep_for(150ms);
      p.set_value(99);
    });
    stopwatch sw;
    int v = f.get();
    int ticks_during_wait = ticks;
    stop = true;
    th.join();
    ticker.join();
    CHECK(v == 99);
    CHECK(sw.elapsed() >= 150ms);
    CHECK(ticks_during_wait > 0);
  });
}

TEST_CASE("a void future and set_exception") {
  tendril::run([] {
    tendril::promise<void> p;
    auto f = p.get_future();
    tendril::spawn([p]() mutable { p.set_value(); });
    f.get();
    tendril::promise<int> q;
    q.set_exception(std::make_exception_ptr(std::runtime_error("stored")));
    CHECK_THROWS_WITH_AS(q.get_future().get(), "stored", std::runtime_error);
  });
}

TEST_CASE("future::wait_for times out, then succeeds") {
  tendril::run([] {
    tendril::promise<int> p;
    auto f = p.get_future();
    stopwatch sw;
    CHECK_FALSE(f.wait_for(60ms));
    CHECK(sw.elapsed() >= 60ms);
    tendril::spawn([p]() mutable {
      tendril::sleep_for(20ms);
      p.set_value(1);
    });
    CHECK(f.wait_for(5s));
    CHECK(f.get() == 1);
  });
}

TEST_CASE("an empty future is a usage error") {
  tendril::future<int> f;
  CHECK_FALSE(f.valid());
  CHECK_THROWS_AS(f.get(), tendril::usage_error);
}

TEST_CASE("a moved-from promise and a null exception are usage errors, and leave the future as it was") {
  tendril::promise<int> p;
  auto f = p.get_future();
  tendril::promise<int> q = std::move(p);
  CHECK_FALSE(p.valid());
  CHECK_THROWS_AS(p.set_value(1), tendril::usage_error);
  CHECK_THROWS_AS(p.get_future(), tendril::usage_error);
  CHECK_THROWS_AS(q.set_exception(nullptr), tendril::usage_error);
  CHECK_FALSE(f.ready());
  q.set_value(7);
  CHECK(f.get() == 7);
}

TEST_CASE(
    "semaphore::release of a huge count returns at once; an overflowing one and unlocking an unlocked mutex "
    "are usage errors") {
  tendril::semaphore sem(0);
  sem.release(std::size_t{1} << 40);  // wakes the waiters there are (none), not 2^40 of them
  CHECK(sem.available() == std::size_t{1} << 40);
  CHECK_THROWS_AS(sem.release(SIZE_MAX), tendril::usage_error);
  CHECK(sem.available() == std::size_t{1} << 40);  // unchanged
  tendril::mutex m;
  CHECK_THROWS_AS(m.unlock(), tendril::usage_error);
  m.lock();
  m.unlock();
  CHECK_THROWS_AS(m.unlock(), tendril::usage_error);
}

TEST_CASE("a future waited on by several tasks wakes them all") {
  tendril::run([] {
    tendril::promise<int> p;
    auto f = p.get_future();
    std::vector<tendril::task<int>> ts;
    for (int i = 0; i < 5; ++i) ts.push_back(tendril::spawn([f, i] { return f.get() + i; }));
    tendril::yield();
    p.set_value(10);
    int sum = 0;
    for (auto& t : ts) sum += t.get();
    CHECK(sum == 50 + 10);
  });
}

// ---- event -----------------------------------------------------------------------------------------------------------

TEST_CASE("event: wait suspends until set; set wakes every waiter; clear resets") {
  tendril::run([] {
    tendril::event ev;
    CHECK_FALSE(ev.is_set());
    int woken = 0;
    std::vector<tendril::task<void>> ts;
    for (int i = 0; i < 3; ++i)
      ts.push_back(tendril::spawn([&] {
        ev.wait();
        ++woken;
      }));
    tendril::sleep_for(20ms);
    CHECK(woken == 0);
    ev.set();
    CHECK(ev.is_set());
    for (auto& t : ts) t.join();
    CHECK(woken == 3);
    ev.wait();  // already set: returns at once
    ev.clear();
    CHECK_FALSE(ev.is_set());
    stopwatch sw;
    CHECK_FALSE(ev.wait_for(40ms));
    CHECK(sw.elapsed() >= 40ms);
    tendril::spawn([&] {
      tendril::sleep_for(10ms);
      ev.set();
    });
    CHECK(ev.wait_for(5s));
  });
}

// ---- semaphore -------------------------------------------------------------------------------------------------------

TEST_CASE("a semaphore limits concurrency to its count") {
  tendril::run([] {
    tendril::semaphore sem(3);
    int holders = 0, max_holders = 0, done = 0;
    std::vector<tendril::task<void>> ts;
    for (int i = 0; i < 12; ++i) {
      ts.push_back(tendril::spawn([&] {
        tendril::semaphore_guard g(sem);
        ++holders;
        max_holders = std::max(max_holders, holders);
        tendril::sleep_for(10ms);
        --holders;
        ++done;
      }));
    }
    stopwatch sw;
    for (auto& t : ts) t.join();
    CHECK(done == 12);
    CHECK(max_holders == 3);
    CHECK(sw.elapsed() >= 40ms);  // 12 jobs, 3 at a time, 10 ms each
    CHECK(sem.available() == 3);
  });
}

TEST_CASE("semaphore try_acquire, acquire_for and release(n)") {
  tendril::run([] {
    tendril::semaphore sem(1);
    CHECK(sem.try_acquire());
    CHECK_FALSE(sem.try_acquire());
    stopwatch sw;
    CHECK_FALSE(sem.acquire_for(40ms));
    CHECK(sw.elapsed() >= 40ms);
    int acquired = 0;
    std::vector<tendril::task<void>> ts;
    for (int i = 0; i < 3; ++i)
      ts.push_back(tendril::spawn([&] {
        sem.acquire();
        ++acquired;
      }));
    tendril::yield();
    CHECK(acquired == 0);
    sem.release(2);
    tendril::yield();
    tendril::yield();
    CHECK(acquired == 2);
    tendril::spawn([&] {
      tendril::sleep_for(10ms);
      sem.release();
    });
    for (auto& t : ts) t.join();
    CHECK(acquired == 3);
    CHECK(sem.available() == 0);
  });
}

// ---- channel ---------------------------------------------------------------------------------------------------------

TEST_CASE("a bounded channel blocks the producer when full") {
  tendril::run([] {
    tendril::channel<int> ch(2);
    std::vector<std::string> log;
    int pushed = 0, popped = 0, max_backlog = 0;
    auto producer = tendril::spawn([&] {
      for (int i = 0; i < 6; ++i) {
        ch.push(i);
        ++pushed;
        max_backlog = std::max(max_backlog, pushed - popped);
        log.push_back("push " + std::to_string(i));
      }
      ch.close();
    });
    auto consumer = tendril::spawn([&] {
      tendril::sleep_for(50ms);  // the producer fills the channel and blocks meanwhile
      log.push_back("consumer starts");
      std::vector<int> got;
      while (auto v = ch.pop()) {
        ++popped;
        log.push_back("pop " + std::to_string(*v));
        got.push_back(*v);
      }
      return got;
    });
    CHECK(consumer.get() == std::vector<int>{0, 1, 2, 3, 4, 5});
    producer.join();
    REQUIRE(log.size() >= 3);
    CHECK(log[0] == "push 0");
    CHECK(log[1] == "push 1");
    CHECK(log[2] == "consumer starts");  // push 2 waited for room
    CHECK(max_backlog <= 2);
    // Every pop happens after the push of the same item.
    for (int i = 0; i < 6; ++i) {
      auto p = std::find(log.begin(), log.end(), "push " + std::to_string(i));
      auto q = std::find(log.begin(), log.end(), "pop " + std::to_string(i));
      CHECK(p < q);
    }
  });
}

TEST_CASE("a rendezvous channel: push returns only after a pop took the item") {
  tendril::run([] {
    tendril::channel<std::string> ch(0);
    std::vector<std::string> log;
    auto producer = tendril::spawn([&] {
      stopwatch sw;
      ch.push("hello");
      log.push_back("push returned");
      return sw.ms();
    });
    auto consumer = tendril::spawn([&] {
      tendril::sleep_for(60ms);
      auto v = ch.pop();
      log.push_back("popped " + v.value_or("?"));
    });
    long long push_ms = producer.get();
    consumer.join();
    CHECK(push_ms >= 60);
    CHECK(log == std::vector<std::string>{"popped hello", "push returned"});
  });
}

TEST_CASE("a rendezvous push cancelled or timed out before a pop took its item takes the item back") {
  tendril::run([] {
    tendril::channel<int> ch(0);
    SUBCASE("cancelled") {
      auto pusher = tendril::spawn([&] { ch.push(1); });
      tendril::yield();
      CHECK_FALSE(pusher.done());
      pusher.cancel();
      CHECK_THROWS_AS(pusher.get(), tendril::task_cancelled);
    }
    SUBCASE("a timeout scope expired") {
      auto pusher = tendril::spawn([&] {
        tendril::timeout t(20ms);
        ch.push(1);
      });
      CHECK_THROWS_AS(pusher.get(), tendril::timeout_error);
    }
    CHECK(ch.size() == 0);
    CHECK_FALSE(ch.try_pop().has_value());  // the failed push delivered nothing
    // The channel still works: the next push meets a pop, in order.
    auto pusher2 = tendril::spawn([&] { ch.push(2); });
    CHECK(ch.pop() == 2);
    pusher2.get();
  });
}

TEST_CASE("close ends a channel: range-for drains what is buffered, then stops") {
  tendril::run([] {
    tendril::channel<int> ch(5);
    ch.push(1);
    ch.push(2);
    ch.push(3);
    ch.close();
    ch.close();  // harmless
    CHECK(ch.closed());
    CHECK_THROWS_AS(ch.push(4), tendril::channel_closed);
    std::vector<int> got;
    for (int v : ch) got.push_back(v);
    CHECK(got == std::vector<int>{1, 2, 3});
    CHECK_FALSE(ch.pop().has_value());
  });
}

TEST_CASE("close wakes a blocked popper (nullopt) and a blocked pusher (channel_closed)") {
  tendril::run([] {
    tendril::channel<int> empty(1);
    auto popper = tendril::spawn([&] { return empty.pop(); });
    tendril::channel<int> full(1);
    full.push(1);
    auto pusher = tendril::spawn([&] { full.push(2); });
    tendril::yield();
    CHECK_FALSE(popper.done());
    CHECK_FALSE(pusher.done());
    empty.close();
    full.close();
    CHECK_FALSE(popper.get().has_value());
    CHECK_THROWS_AS(pusher.get(), tendril::channel_closed);
    CHECK(full.pop() == 1);  // still drained after close
  });
}

TEST_CASE("range-for over a channel fed by a producer task") {
  tendril::run([] {
    tendril::channel<int> ch(3);
    tendril::spawn([&] {
      for (int i = 0; i < 10; ++i) ch.push(i);
      ch.close();
    });
    int sum = 0, n = 0;
    for (int v : ch) {
      sum += v;
      ++n;
    }
    CHECK(n == 10);
    CHECK(sum == 45);
  });
}

TEST_CASE("try_push and try_pop never block") {
  tendril::channel<int> ch(1);
  CHECK_FALSE(ch.try_pop().has_value());
  CHECK(ch.try_push(1));
  CHECK_FALSE(ch.try_push(2));
  CHECK(ch.size() == 1);
  CHECK(ch.try_pop() == 1);
  CHECK_FALSE(ch.try_pop().has_value());

  tendril::channel<int> rv(0);
  CHECK_FALSE(rv.try_push(1));  // nobody is waiting to receive
  tendril::run([&] {
    auto receiver = tendril::spawn([&] { return rv.pop(); });
    tendril::yield();
    CHECK(rv.try_push(7));
    CHECK(receiver.get() == 7);
  });
}

TEST_CASE("a channel between two OS threads, each running tasks") {
  tendril::channel<int> ch(16);
  constexpr int per_producer = 2000;
  long long consumed_sum = 0;
  int consumed = 0;
  std::thread producers([&] {
    tendril::run([&] {
      std::vector<tendril::task<void>> ts;
      for (int p = 0; p < 2; ++p) {
        ts.push_back(tendril::spawn([&, p] {
          for (int i = 0; i < per_producer; ++i) {
            ch.push(p * per_producer + i);
            if (i % 100 == 0) tendril::yield();
          }
        }));
      }
      for (auto& t : ts) t.join();
      ch.close();
    });
  });
  std::thread consumers([&] {
    tendril::run([&] {
      std::vector<tendril::task<std::pair<long long, int>>> ts;
      for (int c = 0; c < 3; ++c) {
        ts.push_back(tendril::spawn([&] {
          long long sum = 0;
          int n = 0;
          for (int v : ch) {
            sum += v;
            ++n;
          }
          return std::pair{sum, n};
        }));
      }
      for (auto& t : ts) {
        auto [s, n] = t.get();
        consumed_sum += s;
        consumed += n;
      }
    });
  });
  producers.join();
  consumers.join();
  const long long total = 2LL * per_producer;
  CHECK(consumed == total);
  CHECK(consumed_sum == total * (total - 1) / 2);
}

// ---- mutex and condition_variable ------------------------------------------------------------------------------------

TEST_CASE("a tendril::mutex excludes tasks that sleep while holding it") {
  tendril::run([] {
    tendril::mutex m;
    int inside = 0, max_inside = 0, counter = 0;
    std::vector<tendril::task<void>> ts;
    for (int i = 0; i < 5; ++i) {
      ts.push_back(tendril::spawn([&] {
        for (int k = 0; k < 3; ++k) {
          std::lock_guard<tendril::mutex> lk(m);
          ++inside;
          max_inside = std::max(max_inside, inside);
          int before = counter;
          tendril::sleep_for(2ms);
          counter = before + 1;
          --inside;
        }
      }));
    }
    for (auto& t : ts) t.join();
    CHECK(max_inside == 1);
    CHECK(counter == 15);
    CHECK(m.try_lock());
    CHECK_FALSE(m.try_lock());
    m.unlock();
  });
}

TEST_CASE("condition_variable: wait with a predicate, notify_one and notify_all") {
  tendril::run([] {
    tendril::mutex m;
    tendril::condition_variable cv;
    std::vector<int> queue;
    int consumed = 0;
    bool finished = false;
    std::vector<tendril::task<void>> consumers;
    for (int c = 0; c < 2; ++c) {
      consumers.push_back(tendril::spawn([&] {
        for (;;) {
          std::unique_lock<tendril::mutex> lk(m);
          cv.wait(lk, [&] { return !queue.empty() || finished; });
          if (queue.empty()) return;
          queue.pop_back();
          ++consumed;
        }
      }));
    }
    for (int i = 0; i < 10; ++i) {
      {
        std::lock_guard<tendril::mutex> lk(m);
        queue.push_back(i);
      }
      cv.notify_one();
      tendril::sleep_for(1ms);
    }
    {
      std::lock_guard<tendril::mutex> lk(m);
      finished = true;
    }
    cv.notify_all();
    for (auto& t : consumers) t.join();
    CHECK(consumed == 10);
  });
}

TEST_CASE("condition_variable wait_for times out with the mutex held again") {
  tendril::run([] {
    tendril::mutex m;
    tendril::condition_variable cv;
    std::unique_lock<tendril::mutex> lk(m);
    stopwatch sw;
    CHECK_FALSE(cv.wait_for(lk, 40ms));
    CHECK(sw.elapsed() >= 40ms);
    CHECK(lk.owns_lock());
    CHECK_FALSE(m.try_lock());  // still ours
  });
}

TEST_CASE("a task cancelled in condition_variable::wait gets the mutex back before unwinding") {
  tendril::run([] {
    tendril::mutex m;
    tendril::condition_variable cv;
    bool held_when_cancelled = false;
    auto t = tendril::spawn([&] {
      std::unique_lock<tendril::mutex> lk(m);
      try {
        cv.wait(lk);
      } catch (const tendril::task_cancelled&) {
        held_when_cancelled = lk.owns_lock() && !m.try_lock();
        throw;
      }
    });
    tendril::yield();
    t.cancel();
    t.join();
    CHECK(t.cancelled());
    CHECK(held_when_cancelled);
    CHECK(m.try_lock());  // released by the unique_lock's destructor
    m.unlock();
  });
}

TEST_CASE("wake-ups between two OS threads are never lost (promise ping-pong)") {
  // Each side parks in a future until the other thread fulfils it: a lost wake-up hangs this test (a stress test:
  // the race it guards against, a remote wake-up arriving while the scheduler polls, hits only now and then).
  const int n = under_valgrind() ? 300 : 5000;
  std::vector<tendril::promise<int>> ping(n), pong(n);
  std::thread other([&] {
    tendril::run([&] {
      for (int i = 0; i < n; ++i) pong[i].set_value(ping[i].get_future().get() + 1);
    });
  });
  int last = -1;
  bool in_order = true;
  tendril::run([&] {
    for (int i = 0; i < n; ++i) {
      ping[i].set_value(2 * i);
      int v = pong[i].get_future().get();
      in_order = in_order && v == 2 * i + 1;
      last = v;
    }
  });
  other.join();
  CHECK(in_order);
  CHECK(last == 2 * (n - 1) + 1);
}

TEST_CASE("wake-ups between two OS threads are never lost (channels, several tasks per side)") {
  const int n = under_valgrind() ? 1000 : 20000;
  tendril::channel<int> there(1), back(1);
  std::thread relay([&] {
    tendril::run([&] {
      std::vector<tendril::task<void>> ts;
      for (int k = 0; k < 3; ++k)
        ts.push_back(tendril::spawn([&] {
          while (auto v = there.pop()) back.push(*v);
        }));
      for (auto& t : ts) t.join();
      back.close();
    });
  });
  long long sum = 0;
  tendril::run([&] {
    auto producer = tendril::spawn([&] {
      for (int i = 0; i < n; ++i) there.push(i);
      there.close();
    });
    std::vector<tendril::task<long long>> consumers;
    for (int k = 0; k < 3; ++k)
      consumers.push_back(tendril::spawn([&] {
        long long s = 0;
        while (auto v = back.pop()) s += *v;
        return s;
      }));
    for (auto& c : consumers) sum += c.get();
    producer.join();
  });
  relay.join();
  CHECK(sum == static_cast<long long>(n) * (n - 1) / 2);
}
