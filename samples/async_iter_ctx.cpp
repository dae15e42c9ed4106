// samples/async_iter_ctx.cpp — seed 004's async iterator and async context manager: a generator and RAII.
//
// The Python originals (seed 004, 异步迭代器 / 异步上下文管理器):
//
//   class Reader:                                   class AsyncContextManager:
//       def __init__(self): self.count = 0              async def do_something(self): return
//       async def read_count(self):                     async def __aenter__(self):
//           # await asyncio.sleep(1)                        self.conn = await asyncio.sleep(1)
//           self.count += 1                                 return self
//           if self.count == 100: return None           async def __aexit__(self, exc_type, exc, tb):
//           return self.count                               await asyncio.sleep(1)
//       def __aiter__(self): return self
//       async def __anext__(self):                  async def func():
//           val = await self.read_count()               async with obj as f:
//           if val == None: raise StopAsyncIteration        result = await f.do_something()
//           return val
//
//   async def func():
//       async for item in Reader(): print(item)
//
// Python needs *async* versions of iterators and context managers because an ordinary __next__ or __exit__
// cannot await. In tendril any function may block — the task suspends, not the thread — so the ordinary C++
// tools are enough: a generator (tendril::generator, on greenlets) for `async for`, and a constructor/destructor
// pair (RAII) for `async with`.
//
// Run it: ./build/samples/async_iter_ctx        (takes about half a second)
#include <chrono>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>

#include "tendril/generator.hpp"
#include "tendril/scheduler.hpp"

using namespace std::chrono_literals;

namespace {

// ---- 1. the async iterator: Reader as a generator ---------------------------------------------------------------

// class Reader with __aiter__/__anext__ becomes a function that yields. read_count() could suspend the task (the
// seed's commented-out `await asyncio.sleep(1)`): pass `pause` to see that.
tendril::generator<int> reader(bool pause = false) {
  return tendril::generator<int>([pause](tendril::yielder<int>& yield) {
    int count = 0;
    for (;;) {
      if (pause) tendril::yield();  // await asyncio.sleep(0): let the other tasks run
      count += 1;
      if (count == 100) return;  // return None -> StopAsyncIteration: the loop ends
      yield(count);
    }
  });
}

void async_iterator() {
  std::puts("== 1. async for item in Reader() ==");
  // async for item in obj: print(item)
  for (int item : reader()) std::printf("%d\n", item);

  std::puts("== 2. two readers in two tasks, each pausing between items ==");
  // Each reader's body suspends its task at every step, so two tasks reading at once take turns.
  auto read_some = [](const char* who) {
    return tendril::spawn([who] {
      for (int item : reader(/*pause=*/true)) {
        std::printf("%s %d\n", who, item);
        if (item == 3) break;  // leaving the loop early destroys the generator, unwinding its body
      }
    });
  };
  auto a = read_some("A");
  auto b = read_some("B");
  a.join();
  b.join();
}

// ---- 2. the async context manager: RAII ----------------------------------------------------------------------------

class connection {
 public:
  // async def __aenter__(self): self.conn = await asyncio.sleep(1) — the constructor may block (suspend the task).
  explicit connection(std::string name) : name_(std::move(name)), exceptions_at_entry_(std::uncaught_exceptions()) {
    std::printf("%s: connecting\n", name_.c_str());
    tendril::sleep_for(100ms);
    std::printf("%s: connected\n", name_.c_str());
  }
  // async def __aexit__(self, exc_type, exc, tb): await asyncio.sleep(1)
  // A destructor may block too, but must not throw: the sleep is a cancellation point (task_cancelled) and this
  // destructor may run while an exception is already unwinding the stack, so catch everything here.
  ~connection() {
    const bool by_exception = std::uncaught_exceptions() > exceptions_at_entry_;  // __aexit__'s exc_type
    std::printf("%s: closing%s\n", name_.c_str(), by_exception ? " (leaving by an exception)" : "");
    try {
      tendril::sleep_for(100ms);
    } catch (...) {
    }
    std::printf("%s: closed\n", name_.c_str());
  }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  // async def do_something(self): return
  std::string do_something() {
    tendril::sleep_for(10ms);
    return "result from " + name_;
  }

 private:
  std::string name_;
  int exceptions_at_entry_;
};

void async_context_manager() {
  std::puts("== 3. async with AsyncContextManager() as f ==");
  {
    connection f("conn");                   // async with obj as f:
    std::string result = f.do_something();  //     result = await f.do_something()
    std::printf("%s\n", result.c_str());
  }  // __aexit__ runs here, at the end of the scope

  std::puts("== 4. leaving the block by an exception still closes the connection ==");
  try {
    connection f("conn2");
    throw std::runtime_error("query failed");
  } catch (const std::exception& e) {
    std::printf("caught: %s\n", e.what());
  }
}

}  // namespace

int main() {
  tendril::run([] {
    async_iterator();
    async_context_manager();
  });
}
