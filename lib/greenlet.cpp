// lib/greenlet.cpp — greenlets: switching, parents, kill-on-last-handle, tracing.
#include "tendril/greenlet.hpp"

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <mutex>
#include <type_traits>
#include <vector>

#include "context_switch.hpp"
#include "exception_state.hpp"
#include "greenlet_domain.hpp"
#include "stack_pool.hpp"
#include "switch_layout.h"
#include "valgrind_requests.hpp"

// On x86-64 ELF, greenlet::switch_value() is the assembly entry in lib/switch_x86_64.S (why: see there), over
// tendril_switch_begin() and tendril_switch_end() below. Elsewhere it is plain C++.
#if defined(__x86_64__) && defined(__ELF__)
#define TENDRIL_ASM_SWITCH 1
#else
#define TENDRIL_ASM_SWITCH 0
#endif

namespace tendril {

const char* greenlet_exit::what() const noexcept { return "greenlet_exit"; }

namespace detail {

// Reference counts (of greenlets and of domains) are split in two, as in biased reference counting: the owner
// domain, while it lives, counts in a plain `owner_refs`; other threads and tasks, and everyone once the owner has
// ended, count in the atomic `refs`. The count is their sum. Creating, finishing and freeing a greenlet on its own
// thread (the common case) thus takes no atomic read-modify-write; they were five of them, about a quarter of a
// create-run-finish. Why the owner can tell zero without a read-modify-write: while the owner lives, only it
// decrements (a handle dropped elsewhere goes through its deferred queue, under a mutex), and every increment made
// elsewhere was made from a handle that is still live or whose drop the owner has since synchronised with; so
// when its own count is zero, an acquire load of `refs` sees every increment that matters. Once the owner has ended
// (`alive` false, stored with release after its last plain update), `owner_refs` is frozen and everyone uses
// `refs`, which may then go negative: the count is still the sum.
//
// The first members of greenlet_domain and greenlet_impl are read by offset by the assembly switch
// (lib/switch_layout.h, checked below): keep them first and in this order.
struct greenlet_domain {
  greenlet_impl* current = nullptr;
  std::atomic<bool> has_deferred{false};
  std::atomic<long> refs{1};  // the domain's own reference, released by teardown_domain(), is always here
  greenlet_impl* main = nullptr;
  std::atomic<bool> alive{true};
  bool killing_deferred = false;
  std::mutex deferred_mutex;
  std::vector<greenlet_impl*> deferred;  // dropped on another thread: kill here
  std::exception_ptr outbox;             // an exception in flight from tendril_switch_begin() to its receiver
  long owner_refs = 0;                   // see above; folded into `refs` when the domain ends
};

class greenlet_impl {
 public:
  // From a small per-thread cache of freed blocks (see impl_cache below): malloc and free were an eighth of a
  // greenlet's create-run-finish.
  static void* operator new(std::size_t size);
  static void operator delete(void* p, std::size_t size) noexcept;

  greenlet_impl() noexcept = default;
  explicit greenlet_impl(greenlet::run_function&& r) noexcept : run(std::move(r)) {}  // cheaper than assigning it

  continuation ctx;                            // the suspended context, when started and not running
  greenlet_domain* domain = nullptr;           // counted reference
  const stack_label* running_label = nullptr;  // &label, or for a main greenlet the thread's or task's stack
  exception_state eh;
  bool started = false;
  bool dead = false;
  // Its last handle went away while it was running (the running greenlet holds no reference of its own): the
  // greenlet it switches to next settles it, as release() would have (kill, or free when dead).
  bool orphaned = false;
  bool is_main = false;
  bool leaked = false;
  std::atomic<long> refs{0};        // references taken elsewhere (see greenlet_domain)
  greenlet_impl* parent = nullptr;  // counted reference; null only for a main greenlet
  greenlet::run_function run;
  // What run returned or threw, kept here (not on the finished stack, which is freed by the switch away) until
  // the receiving greenlet has taken it.
  value result;
  std::exception_ptr error;
  std::size_t stack_size = 0;
  stack_label label;
  long owner_refs = 1;  // references taken by the owner domain while it lives (see greenlet_domain)
};

// ---- the greenlet_impl cache ----------------------------------------------------------------------------------
//
// Freed greenlet_impl blocks are kept in a per-thread list (up to impl_cache_limit) and reused by the next
// greenlet created on that thread. A block freed on another thread than the one that allocated it (a greenlet
// whose thread has ended is freed wherever its last handle goes) simply joins that thread's list: the blocks are
// plain operator new memory. The list is freed at thread exit; blocks freed after that are deleted at once.
// Plain __thread variables (initial-exec, no TLS wrapper call); the list's destructor is registered on first use.
// While on the list, a block is unaddressable to memcheck (but for its link word), so a use after free is still
// reported. Under AddressSanitizer there is no cache: its own allocator reports more (where a block was freed),
// and LeakSanitizer must see where a leaked block was allocated (a reused block would be attributed to its first
// user, and a leak the tests make on purpose, under __lsan_disable(), to an allocation made outside it).
namespace {
#if defined(__SANITIZE_ADDRESS__)
constexpr unsigned impl_cache_limit = 0;
#else
constexpr unsigned impl_cache_limit = 64;
#endif
bool running_on_valgrind() noexcept { return RUNNING_ON_VALGRIND != 0; }
const bool on_valgrind = running_on_valgrind();  // a client request costs a few instructions even natively
enum class cache_phase : unsigned char { unborn, alive, dead };
__thread void* tl_impl_cache TENDRIL_DOMAIN_TLS = nullptr;  // the first free block; each starts with the next
__thread unsigned tl_impl_cached TENDRIL_DOMAIN_TLS = 0;
__thread cache_phase tl_impl_cache_phase TENDRIL_DOMAIN_TLS = cache_phase::unborn;

struct impl_cache_guard {
  ~impl_cache_guard() {
    tl_impl_cache_phase = cache_phase::dead;
    while (void* p = tl_impl_cache) {
      tl_impl_cache = *static_cast<void**>(p);
      if (on_valgrind) VALGRIND_MAKE_MEM_UNDEFINED(p, sizeof(greenlet_impl));
      ::operator delete(p);  // unsized: clang (and so clang-tidy) declares no sized one by default
    }
    tl_impl_cached = 0;
  }
};

[[gnu::noinline]] void free_impl_slow(void* p) noexcept {
  if (tl_impl_cache_phase == cache_phase::unborn) {
    thread_local impl_cache_guard guard;
    (void)guard;
    tl_impl_cache_phase = cache_phase::alive;
  }
  if (tl_impl_cache_phase == cache_phase::alive && tl_impl_cached < impl_cache_limit) {
    greenlet_impl::operator delete(p, sizeof(greenlet_impl));
    return;
  }
  ::operator delete(p);
}
}  // namespace

void* greenlet_impl::operator new(std::size_t size) {
  if (void* p = tl_impl_cache) [[likely]] {
    tl_impl_cache = *static_cast<void**>(p);
    --tl_impl_cached;
    if (on_valgrind) VALGRIND_MAKE_MEM_UNDEFINED(p, sizeof(greenlet_impl));
    return p;
  }
  return ::operator new(size);
}

void greenlet_impl::operator delete(void* p, std::size_t) noexcept {
  if (tl_impl_cache_phase != cache_phase::alive || tl_impl_cached >= impl_cache_limit) [[unlikely]] {
    free_impl_slow(p);
    return;
  }
  *static_cast<void**>(p) = tl_impl_cache;
  tl_impl_cache = p;
  ++tl_impl_cached;
  if (on_valgrind)
    VALGRIND_MAKE_MEM_NOACCESS(static_cast<char*>(p) + sizeof(void*), sizeof(greenlet_impl) - sizeof(void*));
}

__thread greenlet_domain* tl_thread_domain TENDRIL_DOMAIN_TLS = nullptr;
__thread greenlet_domain** tl_domain_slot TENDRIL_DOMAIN_TLS = nullptr;

namespace {

// The per-thread state touched on every switch uses the initial-exec TLS model: a plain %fs-relative access
// instead of a __tls_get_addr call per access (~9 per switch otherwise; bench/switch.cpp measured -18%
// instructions). Users link libtendril rather than dlopen it; even dlopen'ed, these few bytes fit in glibc's
// surplus static TLS (stack_pool.cpp already relies on the same model).
#define TENDRIL_FAST_TLS __attribute__((tls_model("initial-exec")))
thread_local tracer tl_tracer TENDRIL_FAST_TLS;

}  // namespace

// Handed from the switching side to the landing side of a context switch. The delivered value and exception are
// not copied: they stay where the sender keeps them (its suspended frame, or a finished greenlet's `result`) and
// the receiver moves them out first thing. One switch is in flight per thread at a time.
struct switch_message {
  greenlet_impl* from;
  value* v;
  std::exception_ptr* e;  // null or an empty exception_ptr: no exception
  trace_event event;
};

}  // namespace detail
}  // namespace tendril

namespace tendril::detail {
// The per-thread state of the switch, in one block so that the assembly reaches all of it from one TLS offset.
struct switch_tls {
  switch_message message;
  // The C++ runtime's exception record of this thread: its address is fixed for the thread's lifetime, so it is
  // looked up once (each abi::__cxa_get_globals() call is a PLT call plus a __tls_get_addr inside libstdc++).
  // Set when the thread's first domain is made (new_domain()), so it is never null where a switch can run.
  exception_state* eh;
  bool has_tracer;  // tl_tracer is set (checked on every switch)
};
}  // namespace tendril::detail

// The assembly switch reads it too, hence a C name (hidden: -fvisibility=hidden).
extern "C" {
__thread tendril::detail::switch_tls tendril_tl_switch TENDRIL_FAST_TLS = {};
}

namespace tendril {
namespace detail {
namespace {

exception_state& thread_exception_state() noexcept {
  exception_state* e = tendril_tl_switch.eh;
  if (e == nullptr) tendril_tl_switch.eh = e = &current_exception_state();
  return *e;
}

// The domain of whatever runs now on this thread (null if none yet); never creates one.
[[gnu::always_inline]] inline greenlet_domain* here_domain() noexcept {
  return tl_domain_slot != nullptr ? *tl_domain_slot : tl_thread_domain;
}

// True when the calling code runs in `d` and `d` has not ended: then its plain counts are ours to use. `alive` is
// only ever written by the owner, so the owner reads it exactly without ordering.
[[gnu::always_inline]] inline bool on_live_owner(greenlet_domain* d) noexcept {
  return here_domain() == d && d->alive.load(std::memory_order_relaxed);
}

[[gnu::always_inline]] inline void acquire(greenlet_impl* g) noexcept {
  if (on_live_owner(g->domain)) [[likely]] {
    ++g->owner_refs;
  } else {
    g->refs.fetch_add(1, std::memory_order_relaxed);
  }
}
void release(greenlet_impl* g) noexcept;

// The count now. On the owner, or anywhere once the owner has ended (owner_refs frozen).
long ref_count(greenlet_impl* g) noexcept { return g->owner_refs + g->refs.load(std::memory_order_acquire); }

// Sets the count of a greenlet nobody else holds (its count was zero) to n.
void reset_refs(greenlet_impl* g, long n) noexcept {
  if (on_live_owner(g->domain)) {
    g->owner_refs = n;
    g->refs.store(0, std::memory_order_relaxed);
  } else {
    g->refs.store(n - g->owner_refs, std::memory_order_relaxed);
  }
}

// Drops one reference on the owner or after the owner has ended (release() sends the others to the owner); true
// if it was the last.
[[gnu::always_inline]] inline bool drop_owner_ref(greenlet_impl* g) noexcept {  // on the live owner
  if (g->owner_refs > 0) return --g->owner_refs == 0 && g->refs.load(std::memory_order_acquire) == 0;
  return g->refs.fetch_sub(1, std::memory_order_acq_rel) == 1;  // the rest were taken elsewhere
}
[[gnu::always_inline]] inline bool drop_shared_ref(greenlet_impl* g) noexcept {  // once the owner has ended
  return g->refs.fetch_sub(1, std::memory_order_acq_rel) - 1 + g->owner_refs == 0;
}
bool drop_ref(greenlet_impl* g) noexcept { return on_live_owner(g->domain) ? drop_owner_ref(g) : drop_shared_ref(g); }

// Only the owner creates greenlets in a domain, so it takes every domain reference but those of greenlets made
// while it is being torn down.
void acquire_domain(greenlet_domain* d) noexcept {
  if (d->alive.load(std::memory_order_relaxed)) [[likely]] {
    ++d->owner_refs;
  } else {
    d->refs.fetch_add(1, std::memory_order_relaxed);
  }
}
void release_domain(greenlet_domain* d) noexcept {
  if (on_live_owner(d)) [[likely]] {
    --d->owner_refs;  // never the last: the domain's own reference is in `refs` until it ends
    return;
  }
  if (d->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete d;
}

void report(const char* what, const char* detail) noexcept {
  std::fprintf(stderr, "tendril: %s%s%s\n", what, detail != nullptr ? ": " : "", detail != nullptr ? detail : "");
}

bool is_greenlet_exit(const std::exception_ptr& e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const greenlet_exit&) {
    return true;
  } catch (...) {
    return false;
  }
}

void process_deferred(greenlet_domain* d) noexcept;
void teardown_domain(greenlet_domain* d) noexcept;

// Tears down the thread's own domain when the thread exits.
struct thread_domain_guard {
  ~thread_domain_guard() {
    if (tl_thread_domain != nullptr) {
      greenlet_domain* d = tl_thread_domain;
      tl_domain_slot = &tl_thread_domain;
      teardown_domain(d);
      tl_thread_domain = nullptr;
    }
  }
};

greenlet_domain* new_domain() {
  (void)thread_exception_state();  // from now on tendril_tl_switch.eh is set (the assembly relies on it)
  auto* d = new greenlet_domain;
  auto* m = new greenlet_impl;  // its one reference is domain->main (domain->current is never counted)
  m->domain = d;
  m->started = true;
  m->is_main = true;
  m->running_label = current_stack_label();
  acquire_domain(d);
  d->main = m;
  d->current = m;
  return d;
}

greenlet_domain*& domain_ref() noexcept {
  if (tl_domain_slot == nullptr) tl_domain_slot = &tl_thread_domain;
  return *tl_domain_slot;
}

// The domain of whatever runs now; created on first use. Kills greenlets queued for it by other threads.
[[gnu::noinline]] greenlet_domain* current_domain_slow() {
  greenlet_domain*& d = domain_ref();
  if (d == nullptr) {
    if (&d == &tl_thread_domain) {
      thread_local thread_domain_guard guard;
      (void)guard;
    }
    d = new_domain();
  }
  if (d->has_deferred.load(std::memory_order_acquire)) process_deferred(d);
  return d;
}

#define TENDRIL_HOT [[gnu::always_inline]] inline  // the switch path: one frame between user code and the jump

TENDRIL_HOT greenlet_domain* current_domain() {
  greenlet_domain** slot = tl_domain_slot;
  if (slot != nullptr && *slot != nullptr && !(*slot)->has_deferred.load(std::memory_order_acquire)) [[likely]]
    return *slot;
  return current_domain_slow();
}

void release_at_zero(greenlet_impl* g) noexcept;

void destroy(greenlet_impl* g) noexcept {
  greenlet_impl* parent = g->parent;
  greenlet_domain* d = g->domain;
  delete g;
  if (on_live_owner(d)) [[likely]] {
    // The common case, decided once for both references (the parent belongs to the same domain).
    --d->owner_refs;  // never the last (see release_domain())
    if (parent != nullptr && drop_owner_ref(parent)) release_at_zero(parent);
    return;
  }
  if (parent != nullptr) release(parent);
  release_domain(d);
}

// ---- switching -----------------------------------------------------------------------------------------------

// Who is switching: a live greenlet (switch_(), throw_()), or one that has just finished (its result goes up).
enum class switch_origin { caller, finished };

// Follows the rules for dead and unstarted targets until it finds the greenlet that really receives (v, e).
greenlet_impl* resolve(greenlet_impl* target, value& v, std::exception_ptr& e, switch_origin origin) {
  for (;;) {
    if (target->dead) {
      target = target->parent;  // a main greenlet never dies, so the chain ends
      continue;
    }
    if (!target->started && !target->run && !e) {
      // As in Python (which fails to look up `run`): nothing changes and the error is raised in the caller; the
      // run-less greenlet stays unstarted. A finished greenlet has no caller left to raise in: the error goes on
      // to the run-less greenlet's parent, as an exception escaping the finished one would.
      greenlet_error no_run("cannot switch to a greenlet that has no run function");
      if (origin == switch_origin::caller) throw no_run;
      e = std::make_exception_ptr(std::move(no_run));
      target = target->parent;
      continue;
    }
    if (!target->started && e) {
      // An unstarted greenlet that receives an exception dies without running; greenlet_exit becomes a value.
      target->started = true;
      target->dead = true;
      target->run = nullptr;
      if (is_greenlet_exit(e)) {
        v = value::of(greenlet_exit{});
        e = nullptr;
      }
      target = target->parent;
      continue;
    }
    return target;
  }
}

continuation run_greenlet(void* arg, continuation&& caller);
void settle_orphan(greenlet_impl* g) noexcept;

// Makes `target` the current greenlet and leaves it the message; returns its continuation (created if unstarted).
TENDRIL_HOT continuation prepare_landing(greenlet_domain* d, greenlet_impl* self, greenlet_impl* target, value& v,
                                         std::exception_ptr& e, trace_event event) {
  continuation next;
  if (!target->started) [[unlikely]] {
    // First, as it may throw (no memory for a stack): then nothing has changed and the caller stays current.
    next = continuation::create(target->stack_size, &run_greenlet, target, &target->label);
    target->started = true;
  } else {
    next = std::move(target->ctx);
  }
  tendril_tl_switch.message = switch_message{self, &v, &e, event};
  d->current = target;
  set_current_stack_label(target->running_label);
  return next;
}

// The tracer, on the landing side. A handle to the origin is held meanwhile; an orphaned origin is settled when
// that handle goes.
[[gnu::noinline]] void call_tracer(greenlet_impl* self, const switch_message& m, std::exception_ptr& e) {
  greenlet origin(m.from);
  m.from->orphaned = false;
  try {
    tracer t = tl_tracer;
    t(m.event, origin, greenlet(self));
  } catch (...) {
    tl_tracer = nullptr;
    tendril_tl_switch.has_tracer = false;
    e = std::current_exception();
  }
}

// Runs on the landing side of every switch: stores the context we came from, takes what was delivered, calls
// the tracer, settles an orphaned sender, and returns the value or raises the exception.
TENDRIL_HOT value receive(greenlet_impl* self, continuation&& back) {
  const switch_message m = tendril_tl_switch.message;
  if (back) m.from->ctx = std::move(back);  // empty when the sender finished
  value v(std::move(*m.v));
  std::exception_ptr e;
  if (m.e != nullptr && *m.e) [[unlikely]]
    e = std::move(*m.e);
  if (tendril_tl_switch.has_tracer) [[unlikely]] {
    call_tracer(self, m, e);
  } else if (m.from->orphaned) [[unlikely]] {
    settle_orphan(m.from);
  }
  if (e) [[unlikely]]
    std::rethrow_exception(std::move(e));
  return v;
}

TENDRIL_HOT value transfer(greenlet_domain* d, greenlet_impl* self, greenlet_impl* target, value& v,
                           std::exception_ptr& e, trace_event event) {
  continuation next = prepare_landing(d, self, target, v, e, event);
  exception_state& eh = thread_exception_state();
  self->eh = eh;
  continuation back = std::move(next).resume();
  thread_exception_state() = self->eh;  // looked up again: never assume which thread resumes us
  return receive(self, std::move(back));
}

continuation run_greenlet(void* arg, continuation&& caller) {
  auto* self = static_cast<greenlet_impl*>(arg);
  thread_exception_state() = exception_state{};
  try {
    value in = receive(self, std::move(caller));  // raises what a throwing tracer threw
    // Moved onto this stack first: if the greenlet's thread or task ends while it is suspended, the stack is
    // leaked with the closure on it, rather than the closure destroyed on whichever thread drops the last handle
    // while its call is still suspended (release_at_zero()).
    greenlet::run_function fn = std::move(self->run);
    self->run = nullptr;
    self->result = fn(std::move(in));
  } catch (const greenlet_exit& e) {
    self->result = value::of(e);
  } catch (...) {
    if (is_forced_unwind()) throw;
    self->error = std::current_exception();
  }
  self->dead = true;
  greenlet_domain* d = self->domain;
  trace_event event = self->error ? trace_event::throw_ : trace_event::switch_;
  greenlet_impl* target = self->parent;
  for (;;) {
    if (!target->started || target->dead) target = resolve(target, self->result, self->error, switch_origin::finished);
    try {
      continuation next = prepare_landing(d, self, target, self->result, self->error, event);
      if (!self->error) tendril_tl_switch.message.e = nullptr;  // nothing thrown: the landing can take the fast path
      return next;
    } catch (...) {
      // No memory for the stack of an unstarted target: it dies of that without running, as an unstarted
      // greenlet receiving an exception does, and the error goes on up its parent chain (whose end, a main
      // greenlet, needs no stack). prepare_landing() changed nothing.
      self->result = value();
      self->error = std::current_exception();
      event = trace_event::throw_;
    }
  }
}

TENDRIL_HOT value switch_to(greenlet_impl* target, value& v, std::exception_ptr& e, trace_event event) {
  greenlet_domain* d = current_domain();
  if (target->domain != d) [[unlikely]] {
    throw greenlet_error("cannot switch to a greenlet of another thread or task");
  }
  greenlet_impl* self = d->current;
  if (target->dead || (!target->started && (e || !target->run))) [[unlikely]]
    target = resolve(target, v, e, switch_origin::caller);
  if (target == self) [[unlikely]] {
    if (e) std::rethrow_exception(e);
    return std::move(v);
  }
  return transfer(d, self, target, v, e, event);
}

// ---- the switch_value() entry (lib/switch_x86_64.S on x86-64) -------------------------------------------------
#if TENDRIL_ASM_SWITCH

}  // namespace

// What lib/switch_x86_64.S reads by offset. offsetof on these non-standard-layout classes is conditionally
// supported; GCC and Clang compute it as for any class without virtual bases.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
static_assert(offsetof(greenlet_impl, ctx) == TENDRIL_GREENLET_CTX && sizeof(continuation) == sizeof(void*));
static_assert(offsetof(greenlet_impl, domain) == TENDRIL_GREENLET_DOMAIN);
static_assert(offsetof(greenlet_impl, running_label) == TENDRIL_GREENLET_LABEL);
static_assert(offsetof(greenlet_impl, eh) == TENDRIL_GREENLET_EH && sizeof(exception_state) == 16 &&
              offsetof(exception_state, uncaught_exceptions) == 8 && sizeof(unsigned int) == 4);
static_assert(offsetof(greenlet_impl, started) == TENDRIL_GREENLET_STARTED_DEAD &&
              offsetof(greenlet_impl, dead) == TENDRIL_GREENLET_STARTED_DEAD + 1 && sizeof(bool) == 1);
static_assert(offsetof(greenlet_impl, orphaned) == TENDRIL_GREENLET_ORPHANED);
static_assert(offsetof(greenlet_domain, current) == TENDRIL_DOMAIN_CURRENT);
static_assert(offsetof(greenlet_domain, has_deferred) == TENDRIL_DOMAIN_HAS_DEFERRED && sizeof(std::atomic<bool>) == 1);
static_assert(offsetof(switch_message, from) == TENDRIL_MESSAGE_FROM);
static_assert(offsetof(switch_message, v) == TENDRIL_MESSAGE_VALUE && sizeof(value) == sizeof(void*));
static_assert(offsetof(switch_message, e) == TENDRIL_MESSAGE_ERROR);
static_assert(offsetof(switch_message, event) == TENDRIL_MESSAGE_EVENT && sizeof(trace_event) == 4 &&
              static_cast<int>(trace_event::switch_) == 0);
static_assert(offsetof(switch_tls, message) == 0 && offsetof(switch_tls, eh) == TENDRIL_TLS_EH &&
              offsetof(switch_tls, has_tracer) == TENDRIL_TLS_HAS_TRACER);
#pragma GCC diagnostic pop
// The thread-locals it reads by their C++ names, through @gottpoff (initial-exec: see their declarations).
static_assert(std::is_same_v<decltype(tl_domain_slot), greenlet_domain**>);
static_assert(std::is_same_v<decltype(tl_current_label), const stack_label*>);

// What tendril_switch_begin() returns to the assembly entry, in %rax:%rdx.
struct switch_plan {
  void* to;  // the context to resume; null when there is no switch (the result is built)
  greenlet_impl* self;
};

// The assembly entry passes the greenlet object itself as `handle`: its impl pointer must be all it holds.
static_assert(std::is_standard_layout_v<greenlet> && sizeof(greenlet) == sizeof(void*),
              "lib/switch_x86_64.S reads a greenlet handle as its one greenlet_impl* member");

// Called by the assembly entry before the jump when its fast path does not apply (an unstarted, dead or run-less
// target, a switch to oneself, an error, greenlets queued to be killed, a thread's first switch): checks, leaves
// the receiver its message, makes the target current. `handle` is the greenlet object (its only member is the
// impl pointer), `v` the caller's value, alive until the switch returns.
extern "C" switch_plan tendril_switch_begin(value* out, greenlet_impl* const* handle, value* v) {
  greenlet_impl* target = *handle;
  if (target == nullptr) throw greenlet_error("switch_() on a moved-from greenlet handle");
  greenlet_domain* d = current_domain();
  if (target->domain != d) throw greenlet_error("cannot switch to a greenlet of another thread or task");
  greenlet_impl* self = d->current;
  std::exception_ptr e;
  if (target->dead || (!target->started && !target->run)) target = resolve(target, *v, e, switch_origin::caller);
  if (target == self) {
    if (e) std::rethrow_exception(std::move(e));
    ::new (static_cast<void*>(out)) value(std::move(*v));
    return {nullptr, nullptr};
  }
  // An exception from resolve() must outlive this frame: the receiver takes it from the domain's outbox (which
  // it leaves empty).
  continuation next = prepare_landing(d, self, target, *v, d->outbox, trace_event::switch_);
  if (e) {
    d->outbox = std::move(e);
  } else {
    tendril_tl_switch.message.e = nullptr;  // nothing thrown: the landing can take the fast path
  }
  self->eh = thread_exception_state();
  return {std::move(next).release(), self};
}

// Called by the assembly entry after landing back in `self` when its fast path does not apply (an exception
// thrown in, a tracer, an orphaned sender): `back` is the context we came from (null if it finished). Builds the
// received value at `out`, or throws what was thrown into `self`.
extern "C" void tendril_switch_end(value* out, greenlet_impl* self, void* back) {
  thread_exception_state() = self->eh;
  ::new (static_cast<void*>(out)) value(receive(self, continuation::adopt(back)));
}

namespace {
#endif  // TENDRIL_ASM_SWITCH

// ---- killing -------------------------------------------------------------------------------------------------

// The last handle to a started, unfinished greenlet of the current domain went away: throw greenlet_exit into
// it with its parent set to the current greenlet, so its destructors run.
void kill_unreferenced(greenlet_domain* d, greenlet_impl* g) noexcept {
  reset_refs(g, 1);
  greenlet_impl* saved_parent = g->parent;
  greenlet_impl* cur = d->current;
  acquire(cur);
  g->parent = cur;
  try {
    value none;
    std::exception_ptr e = std::make_exception_ptr(greenlet_exit{});
    switch_to(g, none, e, trace_event::throw_);
  } catch (const std::exception& e) {
    report("exception raised by a greenlet while it was being killed", e.what());
  } catch (...) {
    report("exception raised by a greenlet while it was being killed", nullptr);
  }
  g->parent = saved_parent;
  release(cur);
  if (!g->dead) {
    // Resurrected: it made a new handle to itself while being killed (as Python's greenlet allows). It lives
    // on as a normal suspended greenlet; dropping the kill's reference is not the last one.
    if (!drop_ref(g)) return;
    reset_refs(g, 1);
    report("a greenlet refused to die when its last handle was dropped; it is leaked", nullptr);
    g->leaked = true;
    return;
  }
  release(g);
}

void process_deferred(greenlet_domain* d) noexcept {
  if (d->killing_deferred) return;
  d->killing_deferred = true;
  for (;;) {
    std::vector<greenlet_impl*> batch;
    {
      std::lock_guard<std::mutex> lk(d->deferred_mutex);
      batch.swap(d->deferred);
      d->has_deferred.store(false, std::memory_order_release);
    }
    if (batch.empty()) break;
    // Each entry is a reference dropped by a handle elsewhere, released here where it may reach zero.
    for (greenlet_impl* g : batch) release(g);
  }
  d->killing_deferred = false;
}

// What becomes of a greenlet whose reference count reached zero. Runs in its own domain, except when that domain
// has ended (see release()).
void release_at_zero(greenlet_impl* g) noexcept {
  if (g->started && !g->dead && !g->is_main && !g->leaked) {
    greenlet_domain* here = here_domain();
    greenlet_domain* owner = g->domain;
    if (here == owner) {
      if (owner->current == g) {
        g->orphaned = true;  // running now: settled by whoever it switches to
        return;
      }
      kill_unreferenced(owner, g);
      return;
    }
    // Its thread or task has ended: it can never run again, and unwinding it here would run its code on the
    // wrong thread. Leak its stack, and say so (never silently).
    report(
        "the last handle to a suspended greenlet was dropped after its thread or task had ended; it can no longer be "
        "unwound, so its stack is leaked and its destructors never run (finish or drop greenlets before their thread "
        "or task ends)",
        nullptr);
    std::move(g->ctx).leak();
  }
  if (g->leaked) return;
  destroy(g);
}

// Drops one reference. Only the owning domain takes references to zero while it lives: a handle dropped on
// another thread (or in another task) hands its reference to the owner's queue, released there at the owner's
// next greenlet call. So the count never reaches zero on a foreign thread while the owner could be bringing it
// back from zero (greenlet::current() in a greenlet whose last handle went) or settling an orphan.
void release(greenlet_impl* g) noexcept {
  greenlet_domain* owner = g->domain;
  if (here_domain() == owner) [[likely]] {
    if (owner->alive.load(std::memory_order_relaxed) ? drop_owner_ref(g) : drop_shared_ref(g)) release_at_zero(g);
    return;
  }
  if (owner->alive.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lk(owner->deferred_mutex);
    // Re-check under the lock: teardown_domain() marks the domain dead under it, then drains the queue.
    if (owner->alive.load(std::memory_order_acquire)) {
      owner->deferred.push_back(g);
      owner->has_deferred.store(true, std::memory_order_release);
      return;
    }
  }
  if (drop_shared_ref(g)) release_at_zero(g);
}

// The landing side found its sender orphaned (last handle dropped while it ran).
void settle_orphan(greenlet_impl* g) noexcept {
  g->orphaned = false;
  if (ref_count(g) == 0) release_at_zero(g);  // else it took a new handle meanwhile
}

void teardown_domain(greenlet_domain* d) noexcept {
  // Greenlets queued here by other threads are killed first, while the domain still counts as alive: a kill runs
  // greenlet code, which may hand handles to other threads, and a handle dropped there meanwhile must still come
  // here through the queue, not free a greenlet that runs here. (Unless this is called from inside
  // process_deferred() itself, which then finishes its own round.)
  for (;;) {
    process_deferred(d);
    std::lock_guard<std::mutex> lk(d->deferred_mutex);
    if (!d->deferred.empty() && !d->killing_deferred) continue;  // queued while we were killing: again
    // From now on handles dropped elsewhere release directly (and leak what can no longer run). The owner's
    // plain count joins the atomic one before anyone else can see the domain ended.
    d->refs.fetch_add(d->owner_refs, std::memory_order_relaxed);
    d->owner_refs = 0;
    d->alive.store(false, std::memory_order_release);
    break;
  }
  greenlet_impl* main = d->main;
  // d->current holds no reference. If it is not main (the thread ends inside a greenlet) and orphaned, it can
  // never run again: it is left as it is, like one whose thread is gone.
  d->current = nullptr;
  d->main = nullptr;
  if (main != nullptr) release(main);
  release_domain(d);
}

greenlet_impl* new_greenlet(greenlet::run_function&& run, greenlet_impl* parent, stack_options&& stack) {
  greenlet_domain* d = current_domain();
  if (parent != nullptr && parent->domain != d) {
    throw greenlet_error("a greenlet's parent must belong to the same thread or task");
  }
  auto* g = new greenlet_impl(std::move(run));
  g->domain = d;
  g->parent = parent != nullptr ? parent : d->current;
  if (d->alive.load(std::memory_order_relaxed)) [[likely]] {  // d is the current domain: the live owner's counts
    ++d->owner_refs;
    ++g->parent->owner_refs;
  } else {
    acquire_domain(d);
    acquire(g->parent);
  }
  g->stack_size = stack.size;
  if (!stack.name.empty()) g->label.name = std::move(stack.name);  // empty: the overflow message says "greenlet"
  g->running_label = &g->label;
  return g;
}

}  // namespace

void end_domain(greenlet_domain** slot) noexcept {
  if (*slot == nullptr) return;
  greenlet_domain** previous = exchange_domain_slot(slot);
  teardown_domain(*slot);
  *slot = nullptr;
  exchange_domain_slot(previous);
}

}  // namespace detail

// ---- the public handle ---------------------------------------------------------------------------------------

greenlet::greenlet() : impl_(detail::new_greenlet(nullptr, nullptr, {})) {}

greenlet::greenlet(run_function&& run, detail::greenlet_impl* parent, stack_options&& stack)
    : impl_(detail::new_greenlet(std::move(run), parent, std::move(stack))) {}

greenlet::greenlet(detail::greenlet_impl* impl) noexcept : impl_(impl) { detail::acquire(impl_); }

greenlet::greenlet(const greenlet& other) noexcept : impl_(other.impl_) {
  if (impl_ != nullptr) detail::acquire(impl_);
}

greenlet::greenlet(greenlet&& other) noexcept : impl_(std::exchange(other.impl_, nullptr)) {}

greenlet& greenlet::operator=(const greenlet& other) noexcept {
  if (impl_ != other.impl_) {
    greenlet copy(other);
    std::swap(impl_, copy.impl_);
  }
  return *this;
}

greenlet& greenlet::operator=(greenlet&& other) noexcept {
  if (this != &other) {
    detail::greenlet_impl* old = std::exchange(impl_, std::exchange(other.impl_, nullptr));
    if (old != nullptr) detail::release(old);
  }
  return *this;
}

greenlet::~greenlet() {
  if (impl_ != nullptr) detail::release(impl_);
}

greenlet greenlet::current() { return greenlet(detail::current_domain()->current); }

greenlet getcurrent() { return greenlet::current(); }

#if !TENDRIL_ASM_SWITCH  // else defined in lib/switch_x86_64.S over tendril_switch_begin/end
value greenlet::switch_value(value v) {
  if (impl_ == nullptr) [[unlikely]]
    throw greenlet_error("switch_() on a moved-from greenlet handle");
  std::exception_ptr none;
  return detail::switch_to(impl_, v, none, trace_event::switch_);
}
#endif

value greenlet::throw_() { return throw_(std::make_exception_ptr(greenlet_exit{})); }

value greenlet::throw_(std::exception_ptr e) {
  if (impl_ == nullptr) throw greenlet_error("throw_() on a moved-from greenlet handle");
  if (!e) throw greenlet_error("throw_() needs an exception");
  detail::greenlet_domain* d = detail::current_domain();
  if (impl_->domain != d) throw greenlet_error("cannot throw into a greenlet of another thread or task");
  if (impl_->dead && detail::is_greenlet_exit(e)) {
    return value::of(greenlet_exit{});  // killing a dead greenlet: nothing to do
  }
  value none;
  return detail::switch_to(impl_, none, e, trace_event::throw_);
}

std::optional<greenlet> greenlet::parent() const {
  if (impl_ == nullptr || impl_->parent == nullptr) return std::nullopt;
  return greenlet(impl_->parent);
}

void greenlet::set_parent(const greenlet& p) {
  if (impl_ == nullptr || p.impl_ == nullptr) throw greenlet_error("set_parent() on a moved-from greenlet handle");
  if (impl_->is_main) throw greenlet_error("cannot set the parent of a main greenlet");
  if (p.impl_->domain != impl_->domain) {
    throw greenlet_error("a greenlet's parent must belong to the same thread or task");
  }
  for (detail::greenlet_impl* a = p.impl_; a != nullptr; a = a->parent) {
    if (a == impl_) throw greenlet_error("cyclic parent chain");
  }
  detail::acquire(p.impl_);
  detail::greenlet_impl* old = std::exchange(impl_->parent, p.impl_);
  detail::release(old);
}

bool greenlet::started() const noexcept { return impl_ != nullptr && impl_->started; }
bool greenlet::dead() const noexcept { return impl_ != nullptr && impl_->dead; }
bool greenlet::active() const noexcept { return started() && !dead(); }
bool greenlet::is_main() const noexcept { return impl_ != nullptr && impl_->is_main; }

tracer settrace(tracer t) {
  tendril_tl_switch.has_tracer = static_cast<bool>(t);
  return std::exchange(detail::tl_tracer, std::move(t));
}
tracer gettrace() { return detail::tl_tracer; }

}  // namespace tendril
