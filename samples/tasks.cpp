// samples/tasks.cpp — asyncio's tasks, in C++: create_task, named tasks, awaiting tasks, asyncio.wait.
//
// The Python originals (the asyncio tutorials in seeds 000, 003 and 004):
//
//   async def func1():                          async def main():
//       print("我是函数1")                           f1 = asyncio.create_task(func1())
//       await asyncio.sleep(1)                      f2 = asyncio.create_task(func2())
//       print("函数1结束")                           f3 = asyncio.create_task(func3())
//   # func2 and func3 sleep 2 and 3 seconds        await asyncio.wait([f1, f2, f3])
//
//   asyncio.run(main())                         # about 3 seconds in all, not 1 + 2 + 3 = 6
//
// In tendril a task is a green thread: its function is an ordinary C++ function, and a blocking call in it
// (tendril::sleep_for, task::get, future::get, http::get...) suspends only that task. There is no `async` and no
// `await`: where Python writes `await asyncio.sleep(1)`, tendril writes `tendril::sleep_for(1s)`.
//
// Run it: ./build/samples/tasks        (takes about 3.5 seconds)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "tendril/scheduler.hpp"
#include "tendril/wait.hpp"

using namespace std::chrono_literals;

namespace {

// ---- 1. seed 000: three coroutines that sleep 1, 2 and 3 seconds ------------------------------------------------

void func1() {
  std::puts("我是函数1");
  tendril::sleep_for(1s);  // await asyncio.sleep(1): suspends this task only
  std::puts("函数1结束");
}
void func2() {
  std::puts("我是函数2");
  tendril::sleep_for(2s);
  std::puts("函数2结束");
}
void func3() {
  std::puts("我是函数3");
  tendril::sleep_for(3s);
  std::puts("函数3结束");
}

void three_sleepers() {
  std::puts("== 1. three tasks sleeping 1, 2 and 3 seconds (seed 000) ==");
  auto start = std::chrono::steady_clock::now();
  // f1 = asyncio.create_task(func1()) ... : spawn() starts a task; it runs once main next suspends.
  std::vector<tendril::task<void>> tasks{tendril::spawn(func1), tendril::spawn(func2), tendril::spawn(func3)};
  // await asyncio.wait(tasks): suspends main until all three are done.
  tendril::wait(tasks);
  std::chrono::duration<double> total = std::chrono::steady_clock::now() - start;
  // The sleeps overlap: the total is the longest sleep, 3 s, not 1 + 2 + 3 = 6 s.
  std::printf("total: %ld s\n", std::lround(total.count()));
}

// ---- 2. seed 004 (Task对象, 示例1): main开始 / main结束, then the tasks run -------------------------------------------

// async def func(): print(1); await asyncio.sleep(5); print(3); return '返回值'
// (The seed sleeps 5 seconds; 200 ms shows the same thing.)
std::string func() {
  std::puts("1");
  tendril::sleep_for(200ms);
  std::puts("3");
  return "返回值";
}

void awaiting_tasks() {
  std::puts("== 2. awaiting tasks (seed 004, Task对象 示例1) ==");
  std::puts("main开始");
  // task1 = asyncio.create_task(func()): the task is created but does not run yet...
  auto task1 = tendril::spawn(func);
  auto task2 = tendril::spawn(func);
  // ...so "main结束" comes before the tasks' first "1": a task starts only when its creator suspends.
  std::puts("main结束");
  // ret1 = await task1: main suspends here, and both tasks run (and sleep) concurrently.
  std::string ret1 = task1.get();
  std::string ret2 = task2.get();
  std::printf("%s %s\n", ret1.c_str(), ret2.c_str());
}

// ---- 3. seed 004 (示例2): named tasks and asyncio.wait ----------------------------------------------------------------

void named_tasks() {
  std::puts("== 3. named tasks and wait (seed 004, Task对象 示例2) ==");
  std::puts("main开始");
  // asyncio.create_task(func(), name='yan1'): the name shows in error reports and in name().
  std::vector<tendril::task<std::string>> task_list{tendril::spawn(func, {.name = "yan1"}),
                                                    tendril::spawn(func, {.name = "yan2"})};
  std::puts("main结束");
  // done, pending = await asyncio.wait(task_list)
  auto [done, pending] = tendril::wait(task_list);
  // Python prints the set `done`; a set has no order, so we print the tasks in the order they were given.
  for (auto& t : done) std::printf("done: %s -> %s\n", t.name().c_str(), t.get().c_str());
  std::printf("pending: %zu\n", pending.size());
}

}  // namespace

int main() {
  // asyncio.run(main()): runs main as a task, then cancels whatever it left behind.
  tendril::run([] {
    three_sleepers();
    awaiting_tasks();
    named_tasks();
  });
}
