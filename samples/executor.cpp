// samples/executor.cpp — blocking code on OS threads: a thread pool (seed 004) and run_in_thread.
//
// The Python originals (seed 004, concurrent.futures and run_in_executor):
//
//   def func(value):                            async def main():
//       time.sleep(1)                               loop = asyncio.get_running_loop()
//       print(value)                                fut = loop.run_in_executor(None, func1)
//                                                   result = await fut
//   pool = ThreadPoolExecutor(max_workers=5)
//   for i in range(10):
//       fut = pool.submit(func, i)
//
// A blocking call (time.sleep, requests.get, a synchronous database driver) inside a task would stop every task
// of its thread. tendril::thread_pool runs such calls on OS threads; waiting for the result (future::get)
// suspends only the waiting task. tendril::run_in_thread(fn) is loop.run_in_executor(None, fn).
//
// Run it: ./build/samples/executor        (takes about 0.7 seconds)
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "tendril/executor.hpp"
#include "tendril/scheduler.hpp"

using namespace std::chrono_literals;

namespace {

// def func(value): time.sleep(1); return value   — a *blocking* sleep: it holds its OS thread.
// (The seed sleeps 1 second and prints from the worker; 200 ms is enough, and we print from the futures below so
// the output has a fixed order: workers finish in any order.)
int func(int value) {
  std::this_thread::sleep_for(200ms);
  return value;
}

void thread_pool_jobs() {
  std::puts("== 1. ten jobs on a pool of five workers (seed 004) ==");
  auto start = std::chrono::steady_clock::now();
  // pool = ThreadPoolExecutor(max_workers=5)
  tendril::thread_pool pool(5);
  // for i in range(10): fut = pool.submit(func, i)   — five run at once, the other five wait in the queue.
  std::vector<tendril::future<int>> futures;
  for (int i = 0; i < 10; ++i) futures.push_back(pool.submit([i] { return func(i); }));
  std::printf("submitted %zu jobs\n", futures.size());
  // Waiting on a future suspends this task only (other tasks would keep running).
  for (auto& f : futures) std::printf("%d\n", f.get());
  std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  // Ten 200 ms jobs, five at a time: two rounds, so at least 400 ms (and about that much, not 2 s).
  std::printf("two rounds of five (at least 0.4 s): %s\n", took >= 400ms ? "yes" : "no");
}

// A blocking call we cannot rewrite (think requests.get): it holds its OS thread for 300 ms.
int blocking_call() {
  std::this_thread::sleep_for(300ms);
  return 42;
}

void run_in_thread_with_ticker() {
  std::puts("== 2. run_in_thread: a blocking call while another task keeps ticking ==");
  int ticks = 0;
  bool stop = false;
  auto ticker = tendril::spawn([&] {
    while (!stop) {
      tendril::sleep_for(10ms);
      ++ticks;
    }
  });
  // fut = loop.run_in_executor(None, blocking_call); result = await fut
  // Called directly, blocking_call() would freeze the ticker for 300 ms. On the default pool it does not.
  int result = tendril::run_in_thread(blocking_call);
  const int ticks_during_call = ticks;
  stop = true;
  ticker.join();
  std::printf("default thread pool %d\n", result);
  std::printf("the ticker ticked while we waited: %s\n", ticks_during_call > 0 ? "yes" : "no");
}

}  // namespace

int main() {
  tendril::run([] {
    thread_pool_jobs();
    run_in_thread_with_ticker();
  });
}
