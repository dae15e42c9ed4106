// samples/greenlet_tour.cpp — the classic examples of greenlet's documentation, in C++.
//
//  1. "12 56 34": two greenlets switching back and forth, and what happens to the one left behind.
//  2. "hello world" then 42: switches carry values; the first switch passes run()'s arguments.
//  3. The GUI example: a pull-style command loop ("read the next character") driven by a push-style event loop
//     ("a key was pressed"), both on one thread, with no rewrite of the loop into a state machine.
//
// Each part shows the Python from the greenlet docs first, then the same program with tendril.
//
// Build: c++ -std=c++20 greenlet_tour.cpp $(pkg-config --cflags --libs tendril)
#include <tendril/greenlet.hpp>

#include <cstdio>
#include <string>
#include <string_view>

using tendril::greenlet;

// ---- 1. 12 56 34 --------------------------------------------------------------------------------------------
//
//   from greenlet import greenlet
//
//   def test1():
//       print(12)
//       gr2.switch()
//       print(34)
//
//   def test2():
//       print(56)
//       gr1.switch()
//       print(78)
//
//   gr1 = greenlet(test1)
//   gr2 = greenlet(test2)
//   gr1.switch()
void part1() {
  std::puts("== 1. switching: 12 56 34 ==");
  greenlet gr1;
  greenlet gr2;
  gr1 = greenlet([&] {
    std::puts("12");
    gr2.switch_();
    std::puts("34");
  });
  gr2 = greenlet([&] {
    std::puts("56");
    gr1.switch_();
    std::puts("78");
  });
  // Jumps into test1, which prints 12 and jumps into test2, which prints 56 and jumps back into test1, which
  // prints 34. Then test1 finishes, gr1 dies, and control returns to its parent — us, the main greenlet — so
  // this switch_() returns.
  gr1.switch_();
  // 78 is never printed: gr2 is still suspended in its gr1.switch_(). When gr2's last handle goes away at the
  // end of this function, tendril kills it by throwing greenlet_exit at that switch, which unwinds its stack
  // without running the rest of test2 (Python does the same when the greenlet is garbage-collected).
}

// ---- 2. hello world, then 42 ----------------------------------------------------------------------------------
//
//   def test1(x, y):
//       z = gr2.switch(x + y)
//       print(z)
//
//   def test2(u):
//       print(u)
//       gr1.switch(42)
//
//   gr1 = greenlet(test1)
//   gr2 = greenlet(test2)
//   gr1.switch("hello", " world")
void part2() {
  std::puts("== 2. passing values: hello world, 42 ==");
  greenlet gr1;
  greenlet gr2;
  // A run function may take typed parameters: they are unpacked from the values of the first switch_() into
  // the greenlet, like Python's run(*args). (Or take one tendril::value and read it yourself.)
  gr1 = greenlet([&](std::string x, std::string y) {
    // switch_() sends x + y to gr2 — as the argument of test2, since gr2 hasn't started — and returns whatever
    // is later sent back to gr1: here the 42 of gr1.switch_(42).
    tendril::value z = gr2.switch_(x + y);
    std::printf("%d\n", z.as<int>());
  });
  gr2 = greenlet([&](std::string u) {
    std::printf("%s\n", u.c_str());
    gr1.switch_(42);
  });
  gr1.switch_("hello", " world");  // string literals travel as std::string
  // test1 printed 42 and returned; gr1's parent (us) receives its (empty) return value. gr2 stays suspended in
  // gr1.switch_(42) and is killed at the end of this function, like gr2 in part 1.
}

// ---- 3. the GUI example ---------------------------------------------------------------------------------------
//
// A console program reads commands character by character, in a loop that *pulls* input:
//
//   def process_commands():
//       while True:
//           line = ''
//           while not line.endswith('\n'):
//               line += read_next_char()
//           echo_user_input(line)
//           if line == 'quit\n':
//               print("Are you sure?")
//               if echo_user_input(read_next_char()) != 'y':
//                   continue    # ignore the command
//               print("(Exiting loop.)")
//               break # stop the command loop
//           process_command(line)
//
// A GUI toolkit instead runs its own loop and *pushes* each key to a callback, event_keydown(key). The two
// don't fit: read_next_char() must block until the next event_keydown(). With greenlets, process_commands runs
// in its own greenlet, and the two functions just switch:
//
//   g_processor = greenlet(process_commands)
//   main_greenlet = greenlet.getcurrent()
//
//   def event_keydown(key):       # running in main_greenlet, called by the GUI
//       g_processor.switch(key)   # jump into g_processor, sending it the key
//
//   def read_next_char():         # running in g_processor
//       # jump to the main greenlet, where the GUI loop runs, and wait for the next key
//       next_char = main_greenlet.switch('blocking in read_next_char')
//       return next_char
//
//   g_processor.switch()          # -> 'blocking in read_next_char'
//   gui_mainloop()                # feeds 'hello\n', 'quit\n', 'y' to event_keydown
//
// We have no GUI, so gui_mainloop() below feeds a fixed list of characters, as the greenlet docs do.

std::string_view strip(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  return s;
}

std::string echo_user_input(const std::string& user_input) {
  std::printf("    <<< %.*s\n", static_cast<int>(strip(user_input).size()), strip(user_input).data());
  return user_input;
}

void process_command(const std::string& line) {
  std::printf("(Processing command: %.*s)\n", static_cast<int>(strip(line).size()), strip(line).data());
}

void part3() {
  std::puts("== 3. a pull-style loop inside a push-style GUI ==");
  greenlet main_greenlet = greenlet::current();
  greenlet g_processor;

  // read_next_char(): runs in g_processor. It "blocks" by switching to the main greenlet, where the GUI loop is;
  // the switch_() returns when event_keydown() switches back with a key.
  auto read_next_char = [&]() -> std::string {
    tendril::value next_char = main_greenlet.switch_("blocking in read_next_char");
    return next_char.as<std::string>();
  };

  // process_commands(): the console loop, unchanged — it has no idea it is driven by events.
  auto process_commands = [&] {
    for (;;) {
      std::string line;
      while (line.empty() || line.back() != '\n') line += read_next_char();
      echo_user_input(line);
      if (line == "quit\n") {
        std::puts("Are you sure?");
        if (echo_user_input(read_next_char()) != "y") continue;  // ignore the command
        std::puts("(Exiting loop.)");
        break;  // stop the command loop
      }
      process_command(line);
    }
  };
  g_processor = greenlet(process_commands);

  // event_keydown(key): runs in the main greenlet, called by the "GUI". Jump into g_processor with the key; it
  // comes back here the next time process_commands wants a character.
  auto event_keydown = [&](char key) { g_processor.switch_(std::string(1, key)); };

  // Start process_commands: it runs up to its first read_next_char() and switches straight back to us.
  tendril::value first = g_processor.switch_();
  std::printf("g_processor.switch_() returned '%s'\n", first.as<std::string>().c_str());

  // The fake GUI loop: the user types "hello", then "quit", then answers 'y' to the prompt.
  auto gui_mainloop = [&] {
    for (char c : std::string_view("hello\n")) event_keydown(c);
    for (char c : std::string_view("quit\n")) event_keydown(c);
    event_keydown('y');
  };
  gui_mainloop();

  // After 'y', process_commands left its loop and returned, so g_processor died and switched to its parent —
  // the main greenlet, inside the last event_keydown() — without ever switching there explicitly.
  std::printf("g_processor.dead: %s\n", g_processor.dead() ? "true" : "false");
}

int main() {
  part1();
  part2();
  part3();
  return 0;
}
