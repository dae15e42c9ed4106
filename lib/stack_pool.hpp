// lib/stack_pool.hpp — the stack allocator shared by greenlets and tasks (see include/tendril/stack.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace tendril::detail {

// One stack: [guard page][usable bytes], `top` is the highest address (stacks grow down).
struct stack_block {
  char* top = nullptr;
  std::size_t size = 0;  // usable bytes
};

// Stack colouring: how far below a stack's top its user starts (its record and first frame). Every stack's top is
// page-aligned, so without it the hot top of every stack (a task's exec_context and Boost's context record, a
// greenlet's record, the frames of a parked context, all at the same depth) sits at the same offset in a page:
// in the same L1 cache sets for every context, and meeting the CPU's 4 KiB store-to-load aliasing when a switch
// saves registers on one stack and loads them from another at the same page offset (100 tasks yielding in turn:
// 6 % less time per switch, the median of 16 processes; up to 25 % in some). One of 8 offsets 256 bytes apart
// (Boost.Context rounds a task's fiber record down to 256 bytes, so finer steps would fall together in pairs for
// tasks), picked by a hash of the stack's address: a stack taken again from the pool keeps its colour, and stacks a
// multiple of 8 pages apart still differ. Less than max_stack_colour bytes (at most 1,792), and a sixteenth of the
// stack (16 KiB stacks: 4 colours), so that a parked context's frames mostly stay in the stack's top page, the one a
// new slab's stacks get faulted in.
inline constexpr std::size_t stack_colour_step = 256;
inline constexpr std::size_t max_stack_colour = 8 * stack_colour_step;
inline std::size_t stack_colour(const stack_block& b) noexcept {
  std::size_t colours = b.size / 16 / stack_colour_step;
  if (colours > max_stack_colour / stack_colour_step) colours = max_stack_colour / stack_colour_step;
  if (colours <= 1) return 0;
  const std::uint64_t page = reinterpret_cast<std::uintptr_t>(b.top) >> 12;
  return static_cast<std::size_t>((page * 0x9e3779b97f4a7c15ULL) >> 32) % colours * stack_colour_step;
}

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
