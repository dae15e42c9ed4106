// Greenlets and OS threads: each thread has its own main greenlet; greenlets never cross threads.
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"
#include "tendril/greenlet.hpp"

using tendril::greenlet;
using tendril::greenlet_error;
using tendril::greenlet_exit;
using tendril::value;
using namespace tendril_test;

namespace {

// A one-shot flag to step two threads through a scenario in order.
class latch {
 public:
  void set() {
    std::lock_guard<std::mutex> lk(m_);
    set_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lk(m_);
    cv_.wait(lk, [&] { return set_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool set_ = false;
};

// Runs `body` on a thread that creates a greenlet (returned through `out`), then waits for `done` before
// exiting, so the greenlet's domain is alive while the main thread uses the handle.
struct foreign_greenlet {
  latch created, done;
  std::optional<greenlet> g;
  std::optional<greenlet> foreign_main;
  std::thread th;

  explicit foreign_greenlet(bool start_it) {
    th = std::thread([this, start_it] {
      greenlet local([] { switch_to_parent(); });
      if (start_it) local.switch_();
      g = local;
      foreign_main = greenlet::current();
      created.set();
      done.wait();
      // Let it finish here: a greenlet still suspended when its thread ends can never run again, and its stack
      // (with whatever its frames reference) is deliberately leaked.
      if (local.active()) local.switch_();
    });
    created.wait();
  }
  foreign_greenlet(const foreign_greenlet&) = delete;
  foreign_greenlet& operator=(const foreign_greenlet&) = delete;
  ~foreign_greenlet() { finish(); }
  void finish() {
    if (th.joinable()) {
      done.set();
      th.join();
    }
  }
};

}  // namespace

TEST_SUITE("threads") {

TEST_CASE("greenlets in 10 threads at once: each thread runs its own, results checked (test_threads)") {
  constexpr int thread_count = 10;
  constexpr int rounds = 200;
  std::vector<std::vector<int>> results(thread_count);
  std::vector<int> main_ok(thread_count, 0);
  latch go;
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([&, t] {
      go.wait();  // start together so the threads really interleave
      greenlet main = greenlet::current();
      std::vector<int>& out = results[t];
      for (int r = 0; r < rounds; ++r) {
        // Two children ping-ponging through the main greenlet, tagged with the thread number.
        greenlet a([&](int base) {
          out.push_back(base + 1);
          int v = switch_to_parent(base + 2).as<int>();
          out.push_back(v);
          return base + 4;
        });
        int x = a.switch_(t * 1000).as<int>();
        out.push_back(x);
        out.push_back(a.switch_(t * 1000 + 3).as<int>());
        if (greenlet::current() == main && main.is_main()) ++main_ok[t];
        if (r + 1 < rounds) out.clear();
      }
    });
  }
  go.set();
  for (auto& th : threads) th.join();
  for (int t = 0; t < thread_count; ++t) {
    CAPTURE(t);
    CHECK(results[t] == std::vector<int>{t * 1000 + 1, t * 1000 + 2, t * 1000 + 3, t * 1000 + 4});
    CHECK(main_ok[t] == rounds);
  }
}

TEST_CASE("every thread has its own main greenlet") {
  greenlet here = greenlet::current();
  std::optional<greenlet> there;
  bool there_is_main = false;
  std::thread([&] {
    there = greenlet::current();
    there_is_main = there->is_main() && !there->parent().has_value();
  }).join();
  CHECK(there_is_main);
  CHECK_FALSE(*there == here);
  CHECK(here.is_main());
}

TEST_CASE(
    "switching to or throwing into another thread's greenlet throws greenlet_error (test_switch_to_another_thread)") {
  SUBCASE("unstarted") {
    foreign_greenlet f(false);
    CHECK_THROWS_AS(f.g->switch_(), greenlet_error);
    CHECK_THROWS_AS(f.g->throw_(), greenlet_error);
    CHECK_THROWS_AS(f.g->throw_(std::make_exception_ptr(some_error("x"))), greenlet_error);
    CHECK_FALSE(f.g->started());  // nothing happened to it
    CHECK_THROWS_AS(f.foreign_main->switch_(), greenlet_error);
    f.finish();
  }
  SUBCASE("suspended") {
    foreign_greenlet f(true);
    CHECK(f.g->active());
    try {
      f.g->switch_();
      FAIL("switched into another thread's greenlet");
    } catch (const greenlet_error& e) {
      CHECK(std::string(e.what()).find("thread") != std::string::npos);
    }
    CHECK_THROWS_AS(f.g->throw_(), greenlet_error);
    CHECK(f.g->active());
    f.finish();
  }
  SUBCASE("after the thread has exited") {
    foreign_greenlet f(false);
    f.finish();
    CHECK_THROWS_AS(f.g->switch_(), greenlet_error);
    CHECK_THROWS_AS(f.g->throw_(std::make_exception_ptr(some_error("x"))), greenlet_error);
  }
}

TEST_CASE("a greenlet's parent cannot belong to another thread") {
  SUBCASE("set_parent (test_threaded_reparent)") {
    foreign_greenlet f(false);
    greenlet g([] { switch_to_parent(); });
    g.switch_();
    try {
      g.set_parent(*f.g);
      FAIL("accepted a parent of another thread");
    } catch (const greenlet_error& e) {
      CHECK(std::string(e.what()).find("thread") != std::string::npos);
    }
    CHECK(g.parent() == greenlet::current());
    CHECK_THROWS_AS(f.g->set_parent(g), greenlet_error);  // and the other way round
    CHECK_THROWS_AS(g.set_parent(*f.foreign_main), greenlet_error);
    g.switch_();
    CHECK(g.dead());
  }
  SUBCASE("the constructor") {
    foreign_greenlet f(false);
    CHECK_THROWS_AS(greenlet([] {}, *f.g), greenlet_error);
    CHECK_THROWS_AS(greenlet([] {}, *f.foreign_main), greenlet_error);
  }
}

TEST_CASE(
    "a greenlet dropped on another thread is killed when its owner next calls tendril "
    "(test_dealloc_other_thread)") {
  struct on_unwind {
    int* count;
    std::thread::id* where;
    ~on_unwind() {
      ++*count;
      *where = std::this_thread::get_id();
    }
  };
  int destroyed = 0;
  std::thread::id destroyed_on;
  std::optional<greenlet> g(std::in_place, [&] {
    on_unwind u{&destroyed, &destroyed_on};
    switch_to_parent();
  });
  g->switch_();
  REQUIRE(g->active());

  // Hand the only handle to a thread that drops it.
  std::thread dropper([h = std::move(*g)]() mutable {
    greenlet last = std::move(h);
    (void)last;
  });
  g.reset();  // a moved-from handle
  dropper.join();
  CHECK(destroyed == 0);  // deferred: it can only run on its own thread

  greenlet::current();  // the owner calls tendril: the deferred kill happens here
  CHECK(destroyed == 1);
  CHECK(destroyed_on == std::this_thread::get_id());
}

TEST_CASE("greenlets left suspended by a thread are killed when the thread ends its own use of them") {
  int destroyed = 0;
  std::thread([&] {
    struct on_unwind {
      int* count;
      ~on_unwind() { ++*count; }
    };
    std::vector<greenlet> held;
    for (int i = 0; i < 5; ++i) {
      held.emplace_back([&] {
        on_unwind u{&destroyed};
        switch_to_parent();
      });
      held.back().switch_();
    }
  }).join();
  CHECK(destroyed == 5);
}

TEST_CASE("tracers are per thread") {
  int calls_here = 0;
  tendril::tracer previous =
      tendril::settrace([&](tendril::trace_event, const greenlet&, const greenlet&) { ++calls_here; });
  bool other_thread_has_none = false;
  int other_thread_calls = 0;
  std::thread([&] {
    other_thread_has_none = !tendril::gettrace();
    greenlet([] {}).switch_();
    other_thread_calls = calls_here;
  }).join();
  CHECK(other_thread_has_none);
  CHECK(other_thread_calls == 0);
  greenlet([] {}).switch_();
  CHECK(calls_here == 2);
  tendril::settrace(previous);
}

TEST_CASE(
    "the last handle dropped on another thread while the greenlet runs and takes handles to itself: killed once, "
    "freed once") {
  // A race the reference count must survive: thread B drops the last outside handle at any moment while the
  // greenlet, on this thread, keeps making and dropping handles to itself (greenlet::current()). Each greenlet
  // must be killed exactly once, at its pending switch, and freed exactly once (ASan and valgrind check that).
  constexpr int iterations = 1000;
  std::atomic<greenlet*> slot{nullptr};
  std::atomic<bool> done{false};
  std::thread dropper([&] {
    while (!done.load()) {
      if (greenlet* h = slot.exchange(nullptr)) {
        delete h;
      } else {
        std::this_thread::yield();
      }
    }
  });
  int killed = 0;
  int resumed = 0;
  for (int it = 0; it < iterations; ++it) {
    greenlet parent = greenlet::current();
    std::optional<greenlet> mine;
    mine.emplace([&] {
      slot.store(new greenlet(std::move(*mine)));  // the only handle, now B's to drop
      for (int i = 0; i < 50; ++i) {
        greenlet self = greenlet::current();
        (void)self;
      }
      try {
        parent.switch_();
        ++resumed;
      } catch (const greenlet_exit&) {
        ++killed;
        throw;
      }
    });
    mine->switch_();                                           // `mine` keeps a moved-from handle
    while (slot.load() != nullptr) std::this_thread::yield();  // B has taken the handle, and drops it
  }
  done = true;
  dropper.join();
  greenlet::current();  // the owner's next call releases what B queued
  CHECK(killed == iterations);
  CHECK(resumed == 0);
}

TEST_CASE(
    "greenlets freed on another thread than their own (their thread has ended) are freed there, and that thread's "
    "new greenlets reuse the memory") {
  // Each greenlet's state comes from a small per-thread cache of freed blocks. Blocks made on thread A and freed on
  // thread B join B's cache; ASan and valgrind check that nothing is freed twice or used after being freed.
  constexpr int count = 200;  // more than the cache keeps
  std::vector<greenlet> from_a;
  std::vector<greenlet> copies;
  std::thread([&] {
    for (int i = 0; i < count; ++i) {
      from_a.emplace_back([i] { return i; });
      if (i % 2 == 0) from_a.back().switch_();  // half of them finished, half never started
    }
  }).join();
  // A has ended: its greenlets can never run again, but handles to them are still handles.
  for (int i = 0; i < count; i += 3) copies.push_back(from_a[i]);
  // Dropped on two threads at once (copies here, originals on C), each block freed once.
  std::thread c([&] { from_a.clear(); });
  copies.clear();
  c.join();
  // Greenlets made here now reuse blocks that came from A.
  for (int round = 0; round < 3; ++round) {
    std::vector<greenlet> made;
    for (int i = 0; i < count; ++i) made.emplace_back([i](int x) { return i + x; });
    long sum = 0;
    for (int i = 0; i < count; ++i) sum += made[i].switch_(1).as<int>();
    CHECK(sum == static_cast<long>(count) * (count + 1) / 2);
    for (const greenlet& g : made) CHECK(g.dead());
  }
}

TEST_CASE(
    "handles copied on another thread while the owner lives keep the greenlet alive after the owner drops its own") {
  // The owner counts its own references without atomics, and references taken elsewhere atomically: the greenlet
  // lives while either count is non-zero.
  int killed = 0;
  int destroyed = 0;
  struct on_unwind {
    int* count;
    ~on_unwind() { ++*count; }
  };
  std::optional<greenlet> g(std::in_place, [&] {
    on_unwind u{&destroyed};
    try {
      switch_to_parent();
    } catch (const greenlet_exit&) {
      ++killed;
      throw;
    }
  });
  g->switch_();
  REQUIRE(g->active());
  latch copied, owner_dropped;
  std::thread other([&, h = *g]() {     // a handle made here, on the owner
    std::vector<greenlet> more(10, h);  // ten more references taken on this thread
    copied.set();
    owner_dropped.wait();
    more.clear();  // dropped here: queued for the owner
  });
  copied.wait();
  g.reset();  // the owner's last handle
  greenlet::current();
  CHECK(killed == 0);  // still referenced from the other thread
  owner_dropped.set();
  other.join();
  greenlet::current();  // the owner releases what was queued: the last references
  CHECK(killed == 1);
  CHECK(destroyed == 1);
}

}  // TEST_SUITE

// At thread exit the owner kills the greenlets queued for it by other threads; those kills run greenlet code,
// which can hand a handle to yet another thread. A handle dropped there meanwhile must still go through the
// owner's queue: released directly, it freed a greenlet that was running on the owner (memcheck: a read of freed
// memory; natively, sometimes an abort).
TEST_CASE("a handle dropped elsewhere while the owner kills its queued greenlets at exit goes through its queue") {
  std::optional<greenlet> g_out, h_out;  // handed from the owner to this thread
  greenlet* on_g_stack = nullptr;        // h's handle, on g's stack while g is being killed
  std::optional<greenlet> mailbox;       // to the foreign thread
  std::atomic<int> step{0};
  std::atomic<bool> h_saw_itself{false};
  std::thread owner([&] {
    greenlet h([&] {
      switch_to_parent();                       // until g switches here while being killed
      mailbox.emplace(std::move(*on_g_stack));  // h's last handle goes to another thread...
      step.store(2);
      while (step.load() != 3) std::this_thread::yield();  // ...which drops it while h runs
      greenlet me = greenlet::current();
      h_saw_itself = me.started() && !me.dead() && !me.is_main();
    });
    h.switch_();
    greenlet g([&] {
      try {
        switch_to_parent();
      } catch (const greenlet_exit&) {
        greenlet local = std::move(*h_out);
        h_out.reset();
        local.set_parent(greenlet::current());  // so that h comes back here when it finishes
        on_g_stack = &local;
        local.switch_();
        throw;
      }
    });
    g.switch_();
    g_out.emplace(std::move(g));
    h_out.emplace(std::move(h));
    step.store(1);
    while (step.load() != 10) std::this_thread::yield();  // g's handle dropped elsewhere: queued here
  });                                                     // thread exit: the queued g is killed here
  std::thread foreign([&] {
    while (step.load() != 2) std::this_thread::yield();
    mailbox.reset();
    step.store(3);
  });
  while (step.load() != 1) std::this_thread::yield();
  g_out.reset();
  step.store(10);
  owner.join();
  foreign.join();
  CHECK(h_saw_itself);
}

// Its thread has ended, so it can never run again: its stack is leaked with the closure on it, not unwound or
// destroyed on whichever thread drops the last handle (that would run its code on the wrong thread: a captured
// lock released there, say).
TEST_CASE("a greenlet suspended inside run when its thread ends: not destroyed elsewhere, and reported on stderr") {
  struct probe {
    std::atomic<int>* destroyed;
    bool live = true;
    explicit probe(std::atomic<int>* d) : destroyed(d) {}
    probe(const probe& o) : destroyed(o.destroyed), live(o.live) {}
    probe(probe&& o) noexcept : destroyed(o.destroyed), live(o.live) { o.live = false; }
    ~probe() {
      if (live) ++*destroyed;
    }
  };
  std::atomic<int> destroyed{0};
  std::optional<greenlet> g;
  std::thread([&] {
    // What the leaked stack references (the closure's storage, its parent, the thread's domain) is leaked too.
    [[maybe_unused]] lsan_disabled_scope leaks_on_purpose;
    g.emplace([p = probe(&destroyed)] { switch_to_parent(); });
    g->switch_();  // suspended inside run
  }).join();
  stderr_capture capture;
  g.reset();  // the last handle, here: the owner has ended
  const std::string err = capture.finish();
  CHECK(destroyed.load() == 0);
  // Never silently (the old code said nothing).
  CHECK(err.find("after its thread or task had ended") != std::string::npos);
  CHECK(err.find("its stack is leaked") != std::string::npos);
}
