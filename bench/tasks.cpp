// bench/tasks.cpp — tendril's scheduler against plain Boost.Fiber, measured in the same run.
//
// Figures are printed, never asserted. Each ratio is tendril / Boost.Fiber (lower is better) next to its target.
//
//   spawn+join           spawn a task and join it, one at a time   vs boost::fibers::fiber(fn).join()
//                        (Boost's default stack allocator: fixedsize_stack, 128 KiB malloc'd per fiber)
//   yield ping-pong      two tasks calling tendril::yield()        vs two fibers calling this_fiber::yield()
//                        (and a ring of 100 of each, yielding in turn)
//   channel ping-pong    a round trip through two channels         vs buffered_channel / unbuffered_channel
//   cross-thread wake    a std::thread fulfils a promise a task waits on, the task acknowledges: round trips
//                                                                  vs boost::fibers::promise / future
//   sleeping tasks       N tasks each sleeping 1 s at once: total time, and resident memory per sleeping task
//                        (VmRSS before/after)                      vs N fibers with Boost's default stacks
//
// A thread has one Boost.Fiber scheduling algorithm, so every Boost.Fiber baseline runs in its own std::thread
// (default round_robin algorithm) and every tendril measurement in another. The sleeping-task cases run in child
// processes (this program re-executed with --sleep-case), so each starts from a clean heap and its VmRSS delta is
// its own.
//
// Where the time goes in the sleeping cases is the kernel: mapping stacks, first-touch page faults, and unmapping.
// tendril stacks are mmap'd a slab of up to 64 at a time, their guard pages being MADV_GUARD_INSTALL markers (no
// VMA of their own; Linux 6.13+), and stacks freed beyond the pool's 1024 are unmapped in address-sorted batches,
// adjacent ones in one munmap(); a slab's stacks get their top page faulted in by one process_madvise() call. A
// sleeping task dirties one 4 KiB page of stack (Boost's malloc'd stacks two).
// On older kernels (and under valgrind) each stack is its own mapping with an mprotect'd guard page: two memory
// mappings per task, so 100,000 tasks need vm.max_map_count above 200,000 and 1,000,000 tasks above 2,000,000;
// the benchmark raises it when it can (as root, by writing /proc/sys/vm/max_map_count) and otherwise says which
// case it skips and why. The 1,000,000 case uses 16 KiB task stacks (spawn_options.stack_size) to keep the address
// space reasonable; the 100,000 case uses the default 256 KiB (committed lazily: only touched pages count).
//
//   build/bench/bench_tasks            all cases
//   build/bench/bench_tasks --quick    smaller counts, and no 1,000,000-task case
//   build/bench/bench_tasks --case NAME tendril|boost [N]
//                                      one side of one case, N operations, no warm-up pairs (for profiling, e.g.
//                                      under valgrind --tool=callgrind); NAME: spawn-join, spawn-batch (100),
//                                      spawn-batch-1000, yield, yield-ring, channel, rendezvous, cross-thread. Prints
//                                      ns per operation.
#include <unistd.h>

#include <boost/fiber/all.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "tendril/scheduler.hpp"
#include "tendril/sync.hpp"

using namespace std::chrono_literals;
using bench_clock = std::chrono::steady_clock;

namespace {

bool quick = false;

// Runs fn() on a fresh std::thread and returns what it returns.
template <class F>
auto on_thread(F fn) -> decltype(fn()) {
  std::optional<decltype(fn())> result;
  std::thread([&] { result.emplace(fn()); }).join();
  return std::move(*result);
}

double ns_since(bench_clock::time_point start, double ops) {
  return std::chrono::duration<double, std::nano>(bench_clock::now() - start).count() / ops;
}

long status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::size_t n = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, n, field) == 0) return std::atol(line.c_str() + n + 1);
  }
  return -1;
}
long rss_kib() { return status_kib("VmRSS"); }

long read_long(const char* path) {
  std::ifstream in(path);
  long v = -1;
  in >> v;
  return v;
}

// The machine may be busy with other work: run each pair `reps` times, alternating, and keep each side's best.
template <class B, class T>
std::pair<double, double> best_of(int reps, B boost_run, T tendril_run) {
  double b = 1e300, t = 1e300;
  for (int i = 0; i < reps; ++i) {
    b = std::min(b, boost_run());
    t = std::min(t, tendril_run());
  }
  return {b, t};
}

void print_ratio(const char* what, double tendril_ns, double boost_ns, const char* unit, double target) {
  const double ratio = tendril_ns / boost_ns;
  std::printf("  %-34s tendril %9.1f %-9s Boost.Fiber %9.1f %-9s ratio %5.2fx", what, tendril_ns, unit, boost_ns, unit,
              ratio);
  if (target > 0) {
    std::printf("  (target <= %.1fx%s)", target, ratio <= target ? "" : ", MISSED");
  }
  std::printf("\n");
}

// ---- spawn + join ---------------------------------------------------------------------------------------------------

double tendril_spawn_join(int n) {
  return on_thread([n] {
    for (int i = 0; i < 1000; ++i) tendril::spawn([] {}).join();  // warm the stack pool
    auto start = bench_clock::now();
    for (int i = 0; i < n; ++i) tendril::spawn([] {}).join();
    return ns_since(start, n);
  });
}

double boost_spawn_join(int n) {
  return on_thread([n] {
    for (int i = 0; i < 1000; ++i) boost::fibers::fiber([] {}).join();
    auto start = bench_clock::now();
    for (int i = 0; i < n; ++i) boost::fibers::fiber([] {}).join();
    return ns_since(start, n);
  });
}

// Spawns `batch` tasks, then joins them all: creation and teardown without a switch back after each one.
double tendril_spawn_batch(int n, int batch) {
  return on_thread([n, batch] {
    std::vector<tendril::task<void>> ts;
    ts.reserve(batch);
    auto start = bench_clock::now();
    for (int done = 0; done < n; done += batch) {
      for (int i = 0; i < batch; ++i) ts.push_back(tendril::spawn([] {}));
      for (auto& t : ts) t.join();
      ts.clear();
    }
    return ns_since(start, n);
  });
}

double boost_spawn_batch(int n, int batch) {
  return on_thread([n, batch] {
    std::vector<boost::fibers::fiber> fs;
    fs.reserve(batch);
    auto start = bench_clock::now();
    for (int done = 0; done < n; done += batch) {
      for (int i = 0; i < batch; ++i) fs.emplace_back([] {});
      for (auto& f : fs) f.join();
      fs.clear();
    }
    return ns_since(start, n);
  });
}

// ---- yield ping-pong, and a ring of tasks yielding in turn -----------------------------------------------------------

// ns per yield() (each yield is one switch to the next task): `tasks` tasks each yielding n / tasks times.
double tendril_yield(int n, int tasks = 2) {
  return on_thread([n, tasks] {
    const int each = n / tasks;
    auto body = [each] {
      for (int i = 0; i < each; ++i) tendril::yield();
    };
    std::vector<tendril::task<void>> ts;
    for (int i = 0; i < tasks; ++i) ts.push_back(tendril::spawn(body));
    auto start = bench_clock::now();
    for (auto& t : ts) t.join();
    return ns_since(start, static_cast<double>(each) * tasks);
  });
}

double boost_yield(int n, int tasks = 2) {
  return on_thread([n, tasks] {
    const int each = n / tasks;
    auto body = [each] {
      for (int i = 0; i < each; ++i) boost::this_fiber::yield();
    };
    std::vector<boost::fibers::fiber> fs;
    for (int i = 0; i < tasks; ++i) fs.emplace_back(body);  // launch::post: none runs before the first join()
    auto start = bench_clock::now();
    for (auto& f : fs) f.join();
    return ns_since(start, static_cast<double>(each) * tasks);
  });
}

// ---- channel ping-pong ----------------------------------------------------------------------------------------------

// ns per round trip: A pushes into `there`, B pops it and pushes into `back`, A pops that.
double tendril_channel(int n, std::size_t capacity) {
  return on_thread([n, capacity] {
    tendril::channel<int> there(capacity), back(capacity);
    auto b = tendril::spawn([&] {
      while (auto v = there.pop()) back.push(*v);
    });
    auto start = bench_clock::now();
    auto a = tendril::spawn([&] {
      for (int i = 0; i < n; ++i) {
        there.push(i);
        back.pop();
      }
      there.close();
    });
    a.join();
    double ns = ns_since(start, n);
    b.join();
    return ns;
  });
}

template <class Channel>
double boost_channel(int n, std::function<std::unique_ptr<Channel>()> make) {
  return on_thread([n, make] {
    auto there = make();
    auto back = make();
    boost::fibers::fiber b([&] {
      int v;
      while (there->pop(v) == boost::fibers::channel_op_status::success) back->push(v);
    });
    auto start = bench_clock::now();
    boost::fibers::fiber a([&] {
      int v;
      for (int i = 0; i < n; ++i) {
        there->push(i);
        back->pop(v);
      }
      there->close();
    });
    a.join();
    double ns = ns_since(start, n);
    b.join();
    return ns;
  });
}

// ---- wake-up from another OS thread -------------------------------------------------------------------------------

// ns per round trip: a std::thread fulfils promise i, the waiting task wakes and acknowledges through an atomic the
// std::thread waits on (std::atomic::wait, a futex: the same for both, and no core burnt spinning).
double tendril_cross_thread(int n) {
  std::vector<tendril::promise<void>> ps(n);
  std::vector<tendril::future<void>> fs;
  fs.reserve(n);
  for (auto& p : ps) fs.push_back(p.get_future());
  std::atomic<int> ack{0};
  std::atomic<bool> ready{false};
  double ns = 0;
  std::thread waiter([&] {
    auto t = tendril::spawn([&] {
      ready = true;
      for (int i = 0; i < n; ++i) {
        fs[i].get();
        ack.store(i + 1, std::memory_order_release);
        ack.notify_one();
      }
    });
    t.join();
  });
  while (!ready) std::this_thread::yield();
  std::this_thread::sleep_for(10ms);  // let the task park
  auto start = bench_clock::now();
  for (int i = 0; i < n; ++i) {
    ps[i].set_value();
    for (int a = ack.load(std::memory_order_acquire); a != i + 1; a = ack.load(std::memory_order_acquire)) {
      ack.wait(a);
    }
  }
  ns = ns_since(start, n);
  waiter.join();
  return ns;
}

double boost_cross_thread(int n) {
  std::vector<boost::fibers::promise<void>> ps(n);
  std::vector<boost::fibers::future<void>> fs;
  fs.reserve(n);
  for (auto& p : ps) fs.push_back(p.get_future());
  std::atomic<int> ack{0};
  std::atomic<bool> ready{false};
  std::thread waiter([&] {
    boost::fibers::fiber t([&] {
      ready = true;
      for (int i = 0; i < n; ++i) {
        fs[i].get();
        ack.store(i + 1, std::memory_order_release);
        ack.notify_one();
      }
    });
    t.join();
  });
  while (!ready) std::this_thread::yield();
  std::this_thread::sleep_for(10ms);
  auto start = bench_clock::now();
  for (int i = 0; i < n; ++i) {
    ps[i].set_value();
    for (int a = ack.load(std::memory_order_acquire); a != i + 1; a = ack.load(std::memory_order_acquire)) {
      ack.wait(a);
    }
  }
  double ns = ns_since(start, n);
  waiter.join();
  return ns;
}

// ---- many sleeping tasks (child process) ----------------------------------------------------------------------------

struct sleep_result {
  double total_s = 0;       // spawn of the first .. end of the last
  double spawn_ns = 0;      // per task, spawning them all
  double rss_per_task = 0;  // bytes of VmRSS per sleeping task
};

sleep_result tendril_sleepers(int n, std::size_t stack) {
  return on_thread([n, stack] {
    sleep_result r;
    tendril::yield();  // install the scheduler first: its own memory is not the tasks'
    const long rss0 = rss_kib();
    int started = 0;
    int finished = 0;
    std::vector<tendril::task<void>> ts;
    ts.reserve(n);
    auto start = bench_clock::now();
    for (int i = 0; i < n; ++i) {
      ts.push_back(tendril::spawn(
          [&] {
            ++started;
            tendril::sleep_for(1s);
            ++finished;
          },
          {.name = {}, .stack_size = stack}));
    }
    r.spawn_ns = ns_since(start, n);
    tendril::yield();  // every task runs up to its sleep
    const long rss1 = rss_kib();
    for (auto& t : ts) t.join();
    r.total_s = std::chrono::duration<double>(bench_clock::now() - start).count();
    r.rss_per_task = (rss1 - rss0) * 1024.0 / n;
    if (started != n || finished != n) std::fprintf(stderr, "tendril: %d started, %d finished\n", started, finished);
    return r;
  });
}

sleep_result boost_sleepers(int n) {
  return on_thread([n] {
    sleep_result r;
    boost::this_fiber::yield();
    const long rss0 = rss_kib();
    int started = 0;
    int finished = 0;
    std::vector<boost::fibers::fiber> fs;
    fs.reserve(n);
    auto start = bench_clock::now();
    for (int i = 0; i < n; ++i) {
      fs.emplace_back([&] {
        ++started;
        boost::this_fiber::sleep_for(1s);
        ++finished;
      });
    }
    r.spawn_ns = ns_since(start, n);
    boost::this_fiber::yield();
    const long rss1 = rss_kib();
    for (auto& f : fs) f.join();
    r.total_s = std::chrono::duration<double>(bench_clock::now() - start).count();
    r.rss_per_task = (rss1 - rss0) * 1024.0 / n;
    if (started != n || finished != n) std::fprintf(stderr, "boost: %d started, %d finished\n", started, finished);
    return r;
  });
}

// Runs one sleeping-task case in a child process; false if it failed.
bool run_sleep_case(const char* which, int n, std::size_t stack, sleep_result& r) {
  char self[4096];
  ssize_t len = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return false;
  self[len] = '\0';
  std::string cmd =
      std::string("'") + self + "' --sleep-case " + which + " " + std::to_string(n) + " " + std::to_string(stack);
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return false;
  int got = std::fscanf(p, "%lf %lf %lf", &r.total_s, &r.spawn_ns, &r.rss_per_task);
  int status = ::pclose(p);
  return got == 3 && status == 0;
}

// Makes sure vm.max_map_count allows `needed` mappings; returns an empty string or why it cannot.
std::string ensure_map_count(long needed) {
  long current = read_long("/proc/sys/vm/max_map_count");
  if (current >= needed) return {};
  {
    std::ofstream out("/proc/sys/vm/max_map_count");
    out << needed;
  }
  long now = read_long("/proc/sys/vm/max_map_count");
  if (now >= needed) {
    std::printf("  (raised vm.max_map_count from %ld to %ld: tendril stacks take two mappings each)\n", current, now);
    return {};
  }
  return "vm.max_map_count is " + std::to_string(current) + ", needs " + std::to_string(needed) +
         ", and writing /proc/sys/vm/max_map_count failed (not root?)";
}

void sleeping_case(int n, std::size_t stack, long avail_kib_needed) {
  std::printf("  %d tasks sleeping 1 s each (tendril stacks: %s):\n", n,
              stack == 0 ? "default 256 KiB" : (std::to_string(stack / 1024) + " KiB").c_str());
  std::string why = ensure_map_count(2L * n + 100000);
  if (!why.empty()) {
    std::printf("    skipped: %s\n", why.c_str());
    return;
  }
  {
    std::ifstream in("/proc/meminfo");
    std::string key;
    long value = 0;
    std::string unit;
    while (in >> key >> value >> unit) {
      if (key == "MemAvailable:") {
        if (value < avail_kib_needed) {
          std::printf("    skipped: only %ld MiB available, this case needs about %ld MiB\n", value / 1024,
                      avail_kib_needed / 1024);
          return;
        }
        break;
      }
    }
  }
  sleep_result b, t;
  if (!run_sleep_case("boost", n, 0, b)) {
    std::printf("    Boost.Fiber baseline failed\n");
    return;
  }
  if (!run_sleep_case("tendril", n, stack, t)) {
    std::printf("    tendril case failed\n");
    return;
  }
  std::printf("    %-32s tendril %8.3f s     Boost.Fiber %8.3f s     overhead beyond the 1 s sleep: %.3f s vs %.3f s\n",
              "total time", t.total_s, b.total_s, t.total_s - 1, b.total_s - 1);
  std::printf("    %-32s tendril %8.0f ns    Boost.Fiber %8.0f ns    ratio %.2fx\n", "spawn, per task", t.spawn_ns,
              b.spawn_ns, t.spawn_ns / b.spawn_ns);
  std::printf("    %-32s tendril %8.2f KiB   Boost.Fiber %8.2f KiB   (target <= 8 KiB per task%s)\n",
              "resident memory per task", t.rss_per_task / 1024, b.rss_per_task / 1024,
              t.rss_per_task <= 8 * 1024 ? "" : ", MISSED");
}

int sleep_case_main(int argc, char** argv) {
  if (argc < 5) return 2;
  const std::string which = argv[2];
  const int n = std::atoi(argv[3]);
  const std::size_t stack = static_cast<std::size_t>(std::atol(argv[4]));
  sleep_result r = which == "tendril" ? tendril_sleepers(n, stack) : boost_sleepers(n);
  std::printf("%f %f %f\n", r.total_s, r.spawn_ns, r.rss_per_task);
  return 0;
}

int single_case_main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s --case NAME tendril|boost [N]\n", argv[0]);
    return 2;
  }
  const std::string name = argv[2];
  const bool t = std::strcmp(argv[3], "tendril") == 0;
  if (!t && std::strcmp(argv[3], "boost") != 0) return 2;
  const int n = argc >= 5 ? std::atoi(argv[4]) : 100000;
  double ns = 0;
  if (name == "spawn-join") {
    ns = t ? tendril_spawn_join(n) : boost_spawn_join(n);
  } else if (name == "spawn-batch") {
    ns = t ? tendril_spawn_batch(n, 100) : boost_spawn_batch(n, 100);
  } else if (name == "spawn-batch-1000") {
    ns = t ? tendril_spawn_batch(n, 1000) : boost_spawn_batch(n, 1000);
  } else if (name == "yield") {
    ns = t ? tendril_yield(n) : boost_yield(n);
  } else if (name == "yield-ring") {
    ns = t ? tendril_yield(n, 100) : boost_yield(n, 100);
  } else if (name == "channel") {
    ns = t ? tendril_channel(n, 1) : boost_channel<boost::fibers::buffered_channel<int>>(n, [] {
      return std::make_unique<boost::fibers::buffered_channel<int>>(2);
    });
  } else if (name == "rendezvous") {
    ns = t ? tendril_channel(n, 0) : boost_channel<boost::fibers::unbuffered_channel<int>>(n, [] {
      return std::make_unique<boost::fibers::unbuffered_channel<int>>();
    });
  } else if (name == "cross-thread") {
    ns = t ? tendril_cross_thread(n) : boost_cross_thread(n);
  } else {
    std::fprintf(stderr, "unknown case %s\n", name.c_str());
    return 2;
  }
  std::printf("%s %s: %.1f ns per operation (%d)\n", name.c_str(), argv[3], ns, n);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--sleep-case") == 0) return sleep_case_main(argc, argv);
  if (argc >= 2 && std::strcmp(argv[1], "--case") == 0) return single_case_main(argc, argv);
  quick = argc >= 2 && std::strcmp(argv[1], "--quick") == 0;
  const int scale = quick ? 10 : 1;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  std::printf("tendril scheduler vs plain Boost.Fiber (ratios: tendril / Boost.Fiber, lower is better)\n\n");

  const int reps = quick ? 2 : 5;
  std::printf("(each figure: the best of %d alternating runs)\n\n", reps);

  std::printf("spawn + join\n");
  {
    const int n = 200000 / scale;
    auto [b, t] = best_of(
        reps, [&] { return boost_spawn_join(n); }, [&] { return tendril_spawn_join(n); });
    print_ratio("one at a time", t, b, "ns/task", 1.3);
    std::tie(b, t) = best_of(
        reps, [&] { return boost_spawn_batch(n, 100); }, [&] { return tendril_spawn_batch(n, 100); });
    print_ratio("100 spawned, then joined", t, b, "ns/task", 1.3);
    // 1000 default (256 KiB) stacks fit the per-thread stack pool (1024 stacks, 256 MiB), so each batch reuses
    // the previous batch's stacks, as Boost reuses malloc'd memory.
    std::tie(b, t) = best_of(
        reps, [&] { return boost_spawn_batch(n, 1000); }, [&] { return tendril_spawn_batch(n, 1000); });
    print_ratio("1000 spawned, then joined", t, b, "ns/task", 1.3);
  }

  std::printf("yield ping-pong (two tasks), and a ring of 100 tasks yielding in turn\n");
  {
    const int n = 1000000 / scale;
    auto [b, t] = best_of(
        reps, [&] { return boost_yield(n); }, [&] { return tendril_yield(n); });
    print_ratio("yield", t, b, "ns/yield", 1.2);
    // Many parked contexts at the same depth: what stack colouring is for (see lib/stack_pool.hpp).
    std::tie(b, t) = best_of(
        reps, [&] { return boost_yield(n, 100); }, [&] { return tendril_yield(n, 100); });
    print_ratio("yield, a ring of 100 tasks", t, b, "ns/yield", 0);  // no target: the yield target is for two
  }

  std::printf("channel ping-pong (round trips)\n");
  {
    const int n = 200000 / scale;
    auto [b, t] = best_of(
        reps,
        [&] {
          return boost_channel<boost::fibers::buffered_channel<int>>(
              n, [] { return std::make_unique<boost::fibers::buffered_channel<int>>(2); });
        },
        [&] { return tendril_channel(n, 1); });
    print_ratio("buffered (tendril 1, Boost 2)", t, b, "ns/trip", 0);
    std::tie(b, t) = best_of(
        reps,
        [&] {
          return boost_channel<boost::fibers::unbuffered_channel<int>>(
              n, [] { return std::make_unique<boost::fibers::unbuffered_channel<int>>(); });
        },
        [&] { return tendril_channel(n, 0); });
    print_ratio("rendezvous / unbuffered", t, b, "ns/trip", 0);
  }

  std::printf("wake-up from another OS thread (promise set on a std::thread; round trips)\n");
  {
    const int n = 20000 / scale;
    auto [b, t] = best_of(
        reps, [&] { return boost_cross_thread(n); }, [&] { return tendril_cross_thread(n); });
    print_ratio("promise -> waiting task -> ack", t, b, "ns/trip", 0);
  }

  std::printf("many sleeping tasks\n");
  sleeping_case(100000 / scale, 0, 4L * 1024 * 1024);
  if (!quick) sleeping_case(1000000, 16 * 1024, 16L * 1024 * 1024);
  return 0;
}
