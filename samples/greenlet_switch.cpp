// samples/greenlet_switch.cpp — two functions taking turns on one thread, with explicit switches.
//
// This is the first greenlet example of the asyncio notes (seed 001, "greenlet 实现协程"), line for line.
// In Python:
//
//   from greenlet import greenlet
//
//   def func1():
//       print(1)        # step 2: print 1
//       gr2.switch()    # step 3: switch to func2
//       print(2)        # step 6: print 2
//       gr2.switch()    # step 7: switch to func2, which carries on where it stopped
//
//   def func2():
//       print(3)        # step 4: print 3
//       gr1.switch()    # step 5: switch to func1, which carries on where it stopped
//       print(4)        # step 8: print 4
//
//   gr1 = greenlet(func1)
//   gr2 = greenlet(func2)
//   gr1.switch()        # step 1: run func1
//
// It prints 1 3 2 4: each switch() freezes the running function in the middle, with its whole call stack, and
// resumes the other one exactly where *it* froze. Nothing runs in parallel; there is one thread throughout.
//
// Build: c++ -std=c++20 greenlet_switch.cpp $(pkg-config --cflags --libs tendril)
#include <tendril/greenlet.hpp>

#include <cstdio>

int main() {
  // In Python, func1 and func2 find gr1 and gr2 as module globals when they run. Here the two handles are
  // declared first (as greenlets without a run function, like `greenlet()`), the lambdas capture them by
  // reference, and the real greenlets are assigned below, before anything runs.
  tendril::greenlet gr1;
  tendril::greenlet gr2;

  auto func1 = [&] {
    std::puts("1");  // step 2: print 1
    gr2.switch_();   // step 3: switch to func2
    std::puts("2");  // step 6: print 2
    gr2.switch_();   // step 7: switch to func2, which carries on after its gr1.switch_()
  };

  auto func2 = [&] {
    std::puts("3");  // step 4: print 3
    gr1.switch_();   // step 5: switch to func1, which carries on after its first gr2.switch_()
    std::puts("4");  // step 8: print 4
  };

  // greenlet(func1): nothing runs yet. Each greenlet gets its own stack, and its parent is the greenlet that
  // created it: here the thread's implicit *main greenlet* (the one running main()).
  gr1 = tendril::greenlet(func1);
  gr2 = tendril::greenlet(func2);

  gr1.switch_();  // step 1: run func1

  // How did we get back here? func2 returned after printing 4, and a greenlet that returns switches to its
  // parent, main, so gr1.switch_() returns now. gr2 is finished ("dead")...
  if (!gr2.dead() || !gr1.active()) return 1;
  // ...but gr1 is still frozen inside its second gr2.switch_(): nobody switched back to it, so "after step 7"
  // never happens. When main returns and its last handle goes away, tendril throws greenlet_exit into it (as
  // Python does with GreenletExit when a suspended greenlet is garbage-collected), which unwinds its stack.
  return 0;
}
