// lib/context_switch.cpp — continuation on boost::context::fiber: creating contexts on pooled stacks, unwinding.
#include "context_switch.hpp"

#include <boost/context/fiber.hpp>
#include <boost/context/preallocated.hpp>
#include <boost/context/stack_context.hpp>

#include <new>
#include <utility>

#include "stack_pool.hpp"

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
