// samples/futures_callbacks.cpp — done callbacks on tasks (seed 002), and futures set by another task (seed 004).
//
// The Python originals:
//
//   def callback(task):                         async def set_after(fut):
//       print("i am callback")                      await asyncio.sleep(2)
//       print(task.result())                        fut.set_result('0')
//
//   async def get_request(url):                 async def main():
//       print('当前下载任务: %s' % url)              loop = asyncio.get_running_loop()
//       await asyncio.sleep(2)                      fut = loop.create_future()
//       print('当前下载任务: %s 下载成功' % url)       await loop.create_task(set_after(fut))
//       return "hhh"                                data = await fut
//
//   for i in urls:
//       task = asyncio.ensure_future(get_request(i))
//       task.add_done_callback(callback)
//
// A tendril::promise / tendril::future pair is asyncio's Future: one side sets the result, the other waits for it
// (suspending only its task). Unlike asyncio's, a tendril promise may be fulfilled from any OS thread.
//
// Run it: ./build/samples/futures_callbacks        (takes about half a second)
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "tendril/scheduler.hpp"
#include "tendril/sync.hpp"
#include "tendril/wait.hpp"

using namespace std::chrono_literals;

namespace {

// ---- 1. seed 002: add_done_callback ----------------------------------------------------------------------------------

// def callback(task): print("i am callback"); print(task.result())
void callback(tendril::task<std::string>& task) {
  std::puts("i am callback");
  std::puts(task.get().c_str());  // the task is done: get() returns at once
}

// The seed sleeps 2 seconds; 200 ms shows the same.
std::string get_request(const std::string& url) {
  std::printf("当前下载任务: %s\n", url.c_str());
  tendril::sleep_for(200ms);
  std::printf("当前下载任务: %s 下载成功\n", url.c_str());
  return "hhh";
}

void done_callbacks() {
  std::puts("== 1. done callbacks (seed 002) ==");
  std::vector<std::string> urls{"www.1.com", "www.2.com", "www.3.com"};
  std::vector<tendril::task<std::string>> tasks;
  for (const auto& url : urls) {
    auto task = tendril::spawn([url] { return get_request(url); });
    // task.add_done_callback(callback): runs in the task as it finishes, right after get_request returns.
    task.add_done_callback(callback);
    tasks.push_back(task);
  }
  // loop.run_until_complete(asyncio.wait(tasks))
  tendril::wait(tasks);
  // A callback added to a task that is already done runs at once.
  tasks[0].add_done_callback([](tendril::task<std::string>&) { std::puts("late callback runs at once"); });
}

// ---- 2. seed 004: a future whose result another task sets ----------------------------------------------------------

// async def set_after(fut): await asyncio.sleep(2); fut.set_result('0')
void set_after(tendril::promise<std::string> fut) {
  tendril::sleep_for(200ms);
  std::puts("set_after: setting the result");
  fut.set_value("0");
}

void future_set_by_a_task() {
  std::puts("== 2. a future set by another task (seed 004) ==");
  // fut = loop.create_future(): the promise is the writing side, the future the reading side.
  tendril::promise<std::string> promise;
  tendril::future<std::string> fut = promise.get_future();

  // seed 004 示例1: a future that nobody sets waits forever (`await fut` never returns). We only look for 50 ms.
  std::printf("ready after 50 ms with nobody setting it: %s\n", fut.wait_for(50ms) ? "yes" : "no");

  // await loop.create_task(set_after(fut)); data = await fut
  auto setter = tendril::spawn([promise] { set_after(promise); });
  setter.get();
  std::string data = fut.get();
  std::printf("data = '%s'\n", data.c_str());
}

// ---- 3. a dropped promise ----------------------------------------------------------------------------------------------

void broken_promise() {
  std::puts("== 3. a promise dropped without a result ==");
  // asyncio would leave `await fut` hanging forever; tendril gives the waiter broken_promise instead.
  tendril::future<int> fut;
  {
    tendril::promise<int> p;
    fut = p.get_future();
  }
  try {
    fut.get();
  } catch (const tendril::broken_promise& e) {
    std::printf("broken_promise: %s\n", e.what());
  }
}

}  // namespace

int main() {
  tendril::run([] {
    done_callbacks();
    future_set_by_a_task();
    broken_promise();
  });
}
