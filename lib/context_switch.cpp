// lib/context_switch.cpp — continuation on Boost.Context's fcontext: creating contexts on pooled stacks, unwinding.
#include "context_switch.hpp"

#include <boost/context/detail/exception.hpp>

#include <sys/mman.h>

#include <cstdint>
#include <exception>
#include <new>
#include <utility>

#include "stack_pool.hpp"
#include "valgrind_requests.hpp"

namespace tendril::detail {
namespace {

namespace ctx = boost::context;
using ctx::detail::fcontext_t;
using ctx::detail::transfer_t;

// What a new context needs, at the top of its own stack (where boost::context::fiber keeps its fiber_record).
struct context_record {
  continuation::body_fn body;
  void* arg;
  stack_block stack;
  // Entered from a finishing context's exit (free_finished_stack() below) rather than by a jump: the entry's
  // transfer_t is then meaningless, and there is no caller context to hand to the body.
  bool sender_finished;
};

// The record of the context this thread created last, until that context is first entered. Why a thread-local:
// the first jump into a new context is the switch itself (lib/switch_x86_64.S, resume()), which passes no data,
// and a context is always entered right after it is created (prepare_landing() in lib/greenlet.cpp), before any
// other context is created or entered on the thread.
thread_local context_record* tl_unentered __attribute__((tls_model("initial-exec"))) = nullptr;

// Runs on the stack of the context a finished one jumped to, before that context goes on: the finished stack is
// no longer in use and goes back to the pool (as Boost's fiber_exit()). The receiver sees an empty continuation.
transfer_t free_finished_stack(transfer_t t) noexcept {
  const stack_block b = static_cast<context_record*>(t.data)->stack;  // read before the stack can be reused
  free_stack(b);
  return {nullptr, nullptr};
}

// Every context starts here (as Boost's fiber_entry(), without its jump back to the creator and the creator's
// jump in again: a new context is created suspended at this function's first instruction).
void context_entry(transfer_t t) noexcept {
  context_record* rec = tl_unentered;
  tl_unentered = nullptr;
  fcontext_t next;
  try {
    continuation caller = continuation::adopt(rec->sender_finished ? nullptr : t.fctx);
    next = rec->body(rec->arg, std::move(caller)).release();
  } catch (const ctx::detail::forced_unwind& e) {
    next = e.fctx;  // unwound (continuation::unwind()): back to the unwinder
  }
  // Jumping to a context that was created and never entered (a finished greenlet's unstarted parent) lands in
  // context_entry() after free_finished_stack() returns: tell it that no jump brought it there.
  if (tl_unentered != nullptr) tl_unentered->sender_finished = true;
  ctx::detail::ontop_fcontext(next, rec, &free_finished_stack);
  __builtin_unreachable();  // a finished context is never resumed
}

transfer_t unwind_context(transfer_t t) { throw ctx::detail::forced_unwind(t.fctx); }

}  // namespace

void continuation::unwind() noexcept {
  void* fctx = std::exchange(fctx_, nullptr);
  context_record* rec = tl_unentered;
  if (rec != nullptr && static_cast<char*>(fctx) < rec->stack.top &&
      static_cast<char*>(fctx) > rec->stack.top - rec->stack.size) {
    // Created and never entered: nothing runs on it yet, so there is nothing to unwind.
    tl_unentered = nullptr;
    free_stack(rec->stack);
    return;
  }
  // As ~boost::context::fiber(): forced_unwind is thrown on the suspended stack, which unwinds to
  // context_entry() and comes back here, its stack freed.
  ctx::detail::ontop_fcontext(fctx, nullptr, &unwind_context);
}

continuation continuation::create(std::size_t stack_size, body_fn body, void* arg, stack_label* label) {
  const stack_block b = allocate_stack(stack_size);
  if (label != nullptr) label_stack(*label, b);
  // The record at the top (below the stack's colour, see stack_pool.hpp), then a 64-byte gap and the context's
  // first frame below it (as Boost's create_fiber1()).
  constexpr std::uintptr_t record_align = 64;
  char* at = b.top - stack_colour(b) - sizeof(context_record);
  at -= reinterpret_cast<std::uintptr_t>(at) & (record_align - 1);
  auto* rec = ::new (static_cast<void*>(at)) context_record{body, arg, b, false};
  char* sp = reinterpret_cast<char*>(rec) - 64;
  const std::size_t size = static_cast<std::size_t>(sp - (b.top - b.size));
  continuation c;
  c.fctx_ = ctx::detail::make_fcontext(sp, size, &context_entry);
  tl_unentered = rec;
  return c;
}

bool is_forced_unwind() noexcept {
  try {
    throw;
  } catch (const ctx::detail::forced_unwind&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace tendril::detail

// ---- valgrind: Boost.Fiber's first call on a thread -------------------------------------------------------------

namespace tendril::detail {
namespace {

struct isolated_call {
  void (*fn)(void*);
  void* arg;
  std::exception_ptr error;
};

// Runs the call, then jumps back for good: the context is abandoned with nothing left on its stack to destroy.
void isolated_entry(transfer_t t) noexcept {
  auto* call = static_cast<isolated_call*>(t.data);
  try {
    call->fn(call->arg);
  } catch (...) {
    call->error = std::current_exception();
  }
  ctx::detail::jump_fcontext(t.fctx, nullptr);
  __builtin_unreachable();
}

}  // namespace

void call_on_isolated_stack_under_valgrind(void (*fn)(void*), void* arg) {
  if (RUNNING_ON_VALGRIND == 0) {
    fn(arg);
    return;
  }
  // 256 KiB usable in the middle of an 8 MiB reservation: any other mapping is more than 3.9 MiB away.
  constexpr std::size_t reserve = std::size_t{8} << 20;
  constexpr std::size_t usable = std::size_t{256} << 10;
  void* base = ::mmap(nullptr, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) throw std::bad_alloc();
  char* lo = static_cast<char*>(base) + (reserve - usable) / 2;
  if (::mprotect(lo, usable, PROT_READ | PROT_WRITE) != 0) {
    ::munmap(base, reserve);
    throw std::bad_alloc();
  }
  const unsigned id = VALGRIND_STACK_REGISTER(lo, lo + usable);
  isolated_call call{fn, arg, nullptr};
  ctx::detail::jump_fcontext(ctx::detail::make_fcontext(lo + usable, usable, &isolated_entry), &call);
  VALGRIND_STACK_DEREGISTER(id);
  ::munmap(base, reserve);
  if (call.error) std::rethrow_exception(call.error);
}

}  // namespace tendril::detail
