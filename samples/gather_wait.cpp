// samples/gather_wait.cpp — waiting for several tasks: gather, gather_settled, wait(timeout), first_completed.
//
// The Python originals (seeds 000 and 004):
//
//   results = await asyncio.gather(f1, f2, f3, return_exceptions=True)   # a list, in the order given
//   done, pending = await asyncio.wait(tasks)                             # two sets, no order
//   done, pending = await asyncio.wait(task_list, timeout=2)              # done is empty if none finished
//
// tendril's versions are in tendril/wait.hpp. Each suspends only the calling task; none of them cancels the
// tasks it waits for (wait_for(task, d) does, on timeout — see samples/tasks.cpp and the header).
//
// Run it: ./build/samples/gather_wait        (takes about a second)
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "tendril/scheduler.hpp"
#include "tendril/wait.hpp"

using namespace std::chrono_literals;

namespace {

// A download that takes `ms` milliseconds and returns `value`.
tendril::task<int> download(std::string name, int ms, int value) {
  return tendril::spawn(
      [name, ms, value] {
        tendril::sleep_for(std::chrono::milliseconds(ms));
        std::printf("finished: %s\n", name.c_str());
        return value;
      },
      {.name = name});
}

// ---- 1. gather: results in the order the tasks were given, whatever order they finish in --------------------------

void gather_in_order() {
  std::puts("== 1. gather keeps the order of the tasks ==");
  // a is the slowest and c the fastest, so they finish c, b, a...
  std::vector<tendril::task<int>> tasks{download("a", 150, 1), download("b", 100, 2), download("c", 50, 3)};
  // ...but results = await asyncio.gather(a, b, c) is [1, 2, 3].
  std::vector<int> results = tendril::gather(tasks);
  std::printf("results: [%d, %d, %d]\n", results[0], results[1], results[2]);
}

// ---- 2. gather_settled: return_exceptions=True ---------------------------------------------------------------------

void gather_with_errors() {
  std::puts("== 2. gather_settled (return_exceptions=True) ==");
  std::vector<tendril::task<int>> tasks{
      download("ok1", 30, 10),
      tendril::spawn([]() -> int {
        tendril::sleep_for(10ms);
        throw std::runtime_error("connection refused");
      }),
      download("ok2", 60, 30),
  };
  // With return_exceptions=False (tendril::gather), the first error is raised at once in the caller, and the
  // other tasks keep running. With return_exceptions=True every task gets an outcome: a value or its error.
  std::vector<tendril::outcome<int>> outcomes = tendril::gather_settled(tasks);
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    if (outcomes[i].ok()) {
      std::printf("%zu: %d\n", i, *outcomes[i].value);
    } else {
      try {
        outcomes[i].get();  // rethrows the task's exception
      } catch (const std::exception& e) {
        std::printf("%zu: error: %s\n", i, e.what());
      }
    }
  }
}

// ---- 3. seed 004, Task对象 示例2: asyncio.wait(task_list, timeout=...) -----------------------------------------------

// async def fun(): print('start'); await asyncio.sleep(2); print('end'); return '返回值'
std::string fun() {
  std::puts("start");
  tendril::sleep_for(300ms);
  std::puts("end");
  return "返回值";
}

void wait_with_timeout() {
  std::puts("== 3. wait with a timeout (seed 004, 示例2) ==");
  std::puts("执行协程函数内部代码");
  std::vector<tendril::task<std::string>> task_list{tendril::spawn(fun), tendril::spawn(fun)};
  std::puts("main finish");
  // done, pending = await asyncio.wait(task_list, timeout=2). The seed sleeps 2 s and waits 2 s, a race; here the
  // tasks need 300 ms and we wait 100 ms, so nothing is done yet: done is empty and both tasks are pending.
  auto [done, pending] = tendril::wait(task_list, 100ms);
  std::printf("IO操作完成，结果为： done=%zu pending=%zu\n", done.size(), pending.size());
  // The pending tasks are still running: wait() never cancels them. (asyncio.run would cancel them when main
  // returns, and so would tendril::run.) Here we let them finish.
  tendril::wait(pending);
  std::printf("now: done=%zu\n", tendril::wait(task_list, 0ms).done.size());
}

// ---- 4. return_when=FIRST_COMPLETED ----------------------------------------------------------------------------------

void first_completed() {
  std::puts("== 4. wait(first_completed) ==");
  std::vector<tendril::task<int>> mirrors{download("mirror 1", 400, 1), download("mirror 2", 40, 2),
                                          download("mirror 3", 300, 3)};
  // asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED): whichever mirror answers first.
  auto [done, pending] = tendril::wait(mirrors, std::nullopt, tendril::return_when::first_completed);
  std::printf("first: %s -> %d; still pending: %zu\n", done[0].name().c_str(), done[0].get(), pending.size());
  // We no longer need the others: cancel them (task.cancel() in asyncio). They never print "finished".
  for (auto& t : pending) t.cancel();
  for (auto& t : pending) t.join();
  std::printf("cancelled: %s, %s\n", pending[0].cancelled() ? "yes" : "no", pending[1].cancelled() ? "yes" : "no");
}

}  // namespace

int main() {
  tendril::run([] {
    gather_in_order();
    gather_with_errors();
    wait_with_timeout();
    first_completed();
  });
}
