// tendril/stack.hpp — stacks for greenlets and tasks.
//
// Every greenlet and every task runs on a stack from one allocator:
//  - each stack is an mmap'd region with an inaccessible guard page below it, so running off the end faults;
//  - a fault in a guard page ends the process with a message on stderr naming the greenlet or task and its
//    stack size (a SIGSEGV handler on an alternate signal stack), never silent corruption. A single frame larger
//    than the guard page (a big local array) could jump over it: compile code that runs on tendril stacks with
//    -fstack-clash-protection, which `pkg-config --cflags tendril` includes, so such frames fault in it too;
//  - a size that cannot be mapped (beyond the address space or ulimit -v) throws std::bad_alloc whose what()
//    names the size (rounded up to pages, and capped at the address space's 2^47 bytes), when the task is spawned
//    or the greenlet first switched to;
//  - freed stacks are kept in a per-thread pool and reused, which makes creating greenlets and tasks cheap;
//  - when tendril is built with valgrind's headers available, stacks are registered with valgrind.
//
// Memory is reserved, not committed: a 256 KiB stack costs only the pages it actually touches.
#pragma once

#include <cstddef>
#include <string>

#include "tendril/export.hpp"

namespace tendril {

// Options for the stack of one greenlet or task.
struct stack_options {
  // Size in bytes, rounded up to whole pages; 0 means default_stack_size(). Nearly all of it is usable: the
  // greenlet's record and its stack colour (an offset that keeps stacks from sharing cache sets: at most a
  // sixteenth of the size, and 1,792 bytes) take the top.
  std::size_t size = 0;
  // Name used in the stack-overflow message; empty means "greenlet" or the task's name.
  std::string name;
};

// The default usable stack size: 256 KiB.
TENDRIL_API std::size_t default_stack_size() noexcept;

// Statistics of the calling thread's stack pool (for tests and benchmarks).
struct stack_pool_stats {
  std::size_t in_use = 0;  // stacks handed out and not yet returned
  std::size_t pooled = 0;  // freed stacks kept for reuse
  std::size_t mapped = 0;  // stacks ever mmap'd by this thread and not yet unmapped
};
TENDRIL_API stack_pool_stats stack_pool_statistics() noexcept;

}  // namespace tendril
