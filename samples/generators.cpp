// samples/generators.cpp — Python generators and async iterators as tendril::generator<T>.
//
// Part 1 is the `yield` example of the asyncio notes (seed 001, "yield关键字"):
//
//   def func1():
//       yield 1
//       yield from func2()
//       yield 2
//
//   def func2():
//       yield 3
//       yield 4
//
//   f1 = func1()
//   for item in f1:
//       print(item)          # 1 3 4 2
//
// Part 2 is the asynchronous iterator of the notes (seed 004, "异步迭代器"): a Reader whose read_count() counts
// up and returns None at 100, consumed with `async for`:
//
//   class Reader:
//       def __init__(self):
//           self.count = 0
//       async def read_count(self):
//           self.count += 1
//           if self.count == 100:
//               return None
//           return self.count
//       def __aiter__(self):
//           return self
//       async def __anext__(self):
//           val = await self.read_count()
//           if val == None:
//               raise StopAsyncIteration
//           return val
//
//   async def func():
//       obj = Reader()
//       async for item in obj:
//           print(item)      # 1, 2, ..., 99
//
// A tendril::generator runs its body on its own greenlet: the body calls yield(v) — from any depth of nested
// calls, which Python's `yield` cannot do — and the consumer gets v from range-for or next(). No keyword, no
// special function colour: the body is an ordinary function.
//
// Build: c++ -std=c++20 generators.cpp $(pkg-config --cflags --libs tendril)
#include <tendril/generator.hpp>

#include <cstdio>
#include <optional>

// ---- part 1: yield and yield from -----------------------------------------------------------------------------

// def func2(): yield 3; yield 4
tendril::generator<int> func2() {
  return tendril::generator<int>([](tendril::yielder<int>& yield) {
    yield(3);
    yield(4);
  });
}

// def func1(): yield 1; yield from func2(); yield 2
tendril::generator<int> func1() {
  return tendril::generator<int>([](tendril::yielder<int>& yield) {
    yield(1);
    yield.from(func2());  // `yield from`: every value of func2() is passed straight through to our consumer
    yield(2);
  });
}

// ---- part 2: the async iterator Reader ------------------------------------------------------------------------

// The Reader itself is unchanged: read_count() returns the next number, or nothing (None) at 100.
class Reader {
 public:
  std::optional<int> read_count() {
    // In Python this is `async def` so it could `await asyncio.sleep(1)` here. A tendril generator body may
    // block in a real call instead (a tendril::sleep_for or an HTTP request inside a task suspends only that
    // task); the consumer below would not change at all.
    count_ += 1;
    if (count_ == 100) return std::nullopt;
    return count_;
  }

  // __aiter__ + __anext__: a generator that pulls from read_count() until it says "no more". Returning from
  // the body is StopAsyncIteration: the consumer's loop ends.
  tendril::generator<int> items() {
    return tendril::generator<int>([this](tendril::yielder<int>& yield) {
      while (std::optional<int> val = read_count()) yield(*val);
    });
  }

 private:
  int count_ = 0;
};

int main() {
  // Part 1 — f1 = func1(); for item in f1: print(item)
  std::puts("yield / yield from:");
  tendril::generator<int> f1 = func1();  // like calling a generator function: nothing runs yet
  for (int item : f1) std::printf("%d\n", item);

  // Part 2 — obj = Reader(); async for item in obj: print(item)
  std::puts("async iterator Reader:");
  Reader obj;
  for (int item : obj.items()) std::printf("%d\n", item);

  // next() is the explicit form of one loop step (Python's __anext__ / next()): a value, or std::nullopt when
  // the body has finished.
  Reader again;
  tendril::generator<int> it = again.items();
  std::optional<int> first = it.next();
  std::optional<int> second = it.next();
  std::printf("next(): %d, %d\n", *first, *second);
  // `it` is dropped here without being finished: its greenlet is killed (greenlet_exit is thrown at its pending
  // yield), so the body's destructors run, like closing a Python generator.
  return 0;
}
