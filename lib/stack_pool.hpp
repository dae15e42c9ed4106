// lib/stack_pool.hpp — the stack allocator shared by greenlets and tasks (see include/tendril/stack.hpp).
#pragma once

#include <cstddef>
#include <string>

namespace tendril::detail {

// One stack: [guard page][usable bytes], `top` is the highest address (stacks grow down).
struct stack_block {
  char* top = nullptr;
  std::size_t size = 0;  // usable bytes
};

// Rounds `size` (0 = default) up to whole pages; at least 4 pages, at most the address space's size.
std::size_t usable_stack_size(std::size_t size) noexcept;

// A stack from the calling thread's pool, or a new mapping. Throws std::bad_alloc (with a message naming the size
// and the failed call) if it cannot be mapped.
stack_block allocate_stack(std::size_t size);
// Returns a stack to the calling thread's pool (or unmaps it when the pool is full or gone).
void free_stack(stack_block block) noexcept;

// What the stack-overflow handler reports for the stack the thread is running on.
struct stack_label {
  std::string name;                 // "greenlet", a task's name...
  const char* unnamed = nullptr;    // shown when `name` is empty (null: "greenlet"); saves building a string
  const char* guard_low = nullptr;  // the guard page's range
  const char* guard_high = nullptr;
  std::size_t size = 0;
};

// The label of the stack the calling thread runs on now (null: the thread's own stack). Every context switch
// sets it; the SIGSEGV handler reads it. initial-exec TLS: inline and signal-safe, no __tls_get_addr call.
extern __thread const stack_label* tl_current_label __attribute__((tls_model("initial-exec")));
inline const stack_label* current_stack_label() noexcept { return tl_current_label; }
inline void set_current_stack_label(const stack_label* label) noexcept { tl_current_label = label; }
// The size of the guard page below every stack (the page size).
extern const std::size_t stack_guard_size;
// Fills `label` for `block`. Inline: part of every greenlet's creation.
inline void label_stack(stack_label& label, const stack_block& block) noexcept {
  label.size = block.size;
  label.guard_high = block.top - block.size;
  label.guard_low = label.guard_high - stack_guard_size;
}

// Under valgrind, registers the calling thread's own stack (not the main thread's, which is far from every other
// mapping) until the thread exits, so that memcheck takes switches between it and the registered task and
// dispatcher stacks for stack switches, not for pushes and pops that mark the memory in between. Call it before
// the thread's first Boost.Fiber call: the registration must outlast Boost.Fiber's per-thread teardown.
void register_thread_stack_with_valgrind() noexcept;

}  // namespace tendril::detail
