// lib/context_switch.cpp — continuation on boost::context::fiber: creating contexts on pooled stacks, unwinding.
#include "context_switch.hpp"

#include <boost/context/fiber.hpp>
#include <boost/context/preallocated.hpp>
#include <boost/context/stack_context.hpp>

#include <sys/mman.h>

#include <exception>
#include <new>
#include <utility>

#include "stack_pool.hpp"

#if defined(TENDRIL_HAVE_VALGRIND)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#define VALGRIND_STACK_REGISTER(lo, hi) ((void)(lo), (void)(hi), 0U)
#define VALGRIND_STACK_DEREGISTER(id) ((void)(id))
#endif

namespace tendril::detail {
namespace {

namespace ctx = boost::context;
static_assert(sizeof(ctx::fiber) == sizeof(ctx::detail::fcontext_t),
              "boost::context::fiber is expected to hold one fcontext_t");

// Boost.Context stack allocator over the tendril stack pool.
class pooled_stack_allocator {
 public:
  pooled_stack_allocator(std::size_t size, stack_label* label) noexcept : size_(size), label_(label) {}
  ctx::stack_context allocate() {
    stack_block b = allocate_stack(size_);
    if (label_ != nullptr) label_stack(*label_, b);
    ctx::stack_context sc;
    sc.size = b.size;
    sc.sp = b.top;
    return sc;
  }
  void deallocate(ctx::stack_context& sc) noexcept { free_stack(stack_block{static_cast<char*>(sc.sp), sc.size}); }

 private:
  std::size_t size_;
  stack_label* label_;
};

ctx::fiber& as_fiber(void*& slot) noexcept { return *std::launder(reinterpret_cast<ctx::fiber*>(&slot)); }

ctx::fiber take(void*& slot) noexcept { return std::move(as_fiber(slot)); }

void put(void*& slot, ctx::fiber&& f) noexcept {
  slot = nullptr;
  ::new (static_cast<void*>(&slot)) ctx::fiber(std::move(f));
}

}  // namespace

void continuation::unwind() noexcept { ctx::fiber doomed = take(fctx_); }

continuation continuation::create(std::size_t stack_size, body_fn body, void* arg, stack_label* label) {
  pooled_stack_allocator alloc(usable_stack_size(stack_size), label);
  ctx::fiber f(std::allocator_arg, alloc, [body, arg](ctx::fiber&& caller) -> ctx::fiber {
    continuation c;
    put(c.fctx_, std::move(caller));
    continuation next = body(arg, std::move(c));
    return take(next.fctx_);
  });
  continuation result;
  put(result.fctx_, std::move(f));
  return result;
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

// Boost.Context stack allocator over one stack the caller owns.
class borrowed_stack_allocator {
 public:
  borrowed_stack_allocator(char* top, std::size_t size) noexcept : top_(top), size_(size) {}
  ctx::stack_context allocate() noexcept {
    ctx::stack_context sc;
    sc.size = size_;
    sc.sp = top_;
    return sc;
  }
  void deallocate(ctx::stack_context&) noexcept {}

 private:
  char* top_;
  std::size_t size_;
};

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
  unsigned id = VALGRIND_STACK_REGISTER(lo, lo + usable);
  std::exception_ptr error;
  {
    ctx::fiber f(std::allocator_arg, borrowed_stack_allocator(lo + usable, usable),
                 [fn, arg, &error](ctx::fiber&& caller) -> ctx::fiber {
                   try {
                     fn(arg);
                   } catch (...) {
                     error = std::current_exception();
                   }
                   return std::move(caller);
                 });
    std::move(f).resume();  // returns when fn has, the fiber finished
  }
  VALGRIND_STACK_DEREGISTER(id);
  ::munmap(base, reserve);
  if (error) std::rethrow_exception(error);
}

}  // namespace tendril::detail
