// lib/greenlet.cpp — greenlets: switching, parents, kill-on-last-handle, tracing.
#include "tendril/greenlet.hpp"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <vector>

#include "context_switch.hpp"
#include "exception_state.hpp"
#include "greenlet_domain.hpp"
#include "stack_pool.hpp"

namespace tendril {

const char* greenlet_exit::what() const noexcept { return "greenlet_exit"; }

namespace detail {

// What a switch delivers: values, or an exception to raise.
struct payload {
  value v;
  std::exception_ptr e;
};

struct greenlet_domain {
  std::atomic<long> refs{1};
  greenlet_impl* main = nullptr;
  greenlet_impl* current = nullptr;
  std::atomic<bool> alive{true};
  std::atomic<bool> has_deferred{false};
  bool killing_deferred = false;
  std::mutex deferred_mutex;
  std::vector<greenlet_impl*> deferred;  // dropped on another thread: kill here
};

class greenlet_impl {
 public:
  std::atomic<long> refs{1};
  greenlet_domain* domain = nullptr;  // counted reference
  greenlet_impl* parent = nullptr;    // counted reference; null only for a main greenlet
  greenlet::run_function run;
  continuation ctx;  // the suspended context, when started and not running
  payload incoming;
  trace_event incoming_event = trace_event::switch_;
  greenlet_impl* origin = nullptr;  // who switched here last, for the tracer
  bool started = false;
  bool dead = false;
  bool is_main = false;
  bool leaked = false;
  std::size_t stack_size = 0;
  stack_label label;
  const stack_label* running_label = nullptr;  // &label, or for a main greenlet the thread's or task's stack
  exception_state eh;
};

namespace {

// The per-thread state touched on every switch uses the initial-exec TLS model: a plain %fs-relative access
// instead of a __tls_get_addr call per access (~9 per switch otherwise; bench/switch.cpp measured -18%
// instructions). Users link libtendril rather than dlopen it; even dlopen'ed, these few bytes fit in glibc's
// surplus static TLS (stack_pool.cpp already relies on the same model).
#define TENDRIL_FAST_TLS __attribute__((tls_model("initial-exec")))
thread_local greenlet_domain* tl_thread_domain TENDRIL_FAST_TLS = nullptr;
thread_local greenlet_domain** tl_domain_slot TENDRIL_FAST_TLS = nullptr;
thread_local tracer tl_tracer TENDRIL_FAST_TLS;
thread_local bool tl_has_tracer TENDRIL_FAST_TLS = false;  // tl_tracer is set (checked on every switch)
// Handed from the switching side to the landing side of a context switch.
thread_local greenlet_impl* tl_switch_from TENDRIL_FAST_TLS = nullptr;
thread_local greenlet_impl* tl_release_after_switch TENDRIL_FAST_TLS = nullptr;
// The C++ runtime's exception record of this thread: its address is fixed for the thread's lifetime, so it is
// looked up once (each abi::__cxa_get_globals() call is a PLT call plus a __tls_get_addr inside libstdc++).
thread_local exception_state* tl_exception_state TENDRIL_FAST_TLS = nullptr;

exception_state& thread_exception_state() noexcept {
  exception_state* e = tl_exception_state;
  if (e == nullptr) tl_exception_state = e = &current_exception_state();
  return *e;
}

void acquire(greenlet_impl* g) noexcept { g->refs.fetch_add(1, std::memory_order_relaxed); }
void release(greenlet_impl* g) noexcept;

void acquire_domain(greenlet_domain* d) noexcept { d->refs.fetch_add(1, std::memory_order_relaxed); }
void release_domain(greenlet_domain* d) noexcept {
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
  auto* d = new greenlet_domain;
  auto* m = new greenlet_impl;
  m->refs.store(2);  // domain->main and domain->current
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
greenlet_domain* current_domain() {
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

void destroy(greenlet_impl* g) noexcept {
  greenlet_impl* parent = g->parent;
  greenlet_domain* d = g->domain;
  delete g;
  if (parent != nullptr) release(parent);
  if (d != nullptr) release_domain(d);
}

// ---- switching -----------------------------------------------------------------------------------------------

// Follows the rules for dead and unstarted targets until it finds the greenlet that really receives `p`.
greenlet_impl* resolve(greenlet_impl* target, payload& p) {
  for (;;) {
    if (target->dead) {
      target = target->parent;  // a main greenlet never dies, so the chain ends
      continue;
    }
    if (!target->started && !target->run && !p.e) {
      // Python raises in the caller; here the unstarted, run-less greenlet dies and the error goes to its
      // parent chain like any exception escaping it.
      p.e = std::make_exception_ptr(greenlet_error("cannot switch to a greenlet that has no run function"));
    }
    if (!target->started && p.e) {
      // An unstarted greenlet that receives an exception dies without running; greenlet_exit becomes a value.
      target->started = true;
      target->dead = true;
      target->run = nullptr;
      if (is_greenlet_exit(p.e)) p = payload{value::of(greenlet_exit{}), nullptr};
      target = target->parent;
      continue;
    }
    return target;
  }
}

continuation run_greenlet(void* arg, continuation&& caller);

// Makes `target` the current greenlet and hands it `p`; returns its continuation (created if unstarted).
continuation prepare_landing(greenlet_domain* d, greenlet_impl* self, greenlet_impl* target, payload&& p,
                             trace_event event) {
  target->incoming = std::move(p);
  target->incoming_event = event;
  target->origin = self;
  acquire(target);
  d->current = target;
  tl_release_after_switch = self;  // the reference `current` held
  tl_switch_from = self;
  set_current_stack_label(target->running_label);
  if (!target->started) {
    target->started = true;
    return continuation::create(target->stack_size, &run_greenlet, target, &target->label);
  }
  return std::move(target->ctx);
}

// Runs on the landing side of every switch: stores the context we came from, restores our own state, calls
// the tracer, and returns what was delivered.
payload arrive(greenlet_impl* self, continuation&& back) {
  greenlet_impl* from = tl_switch_from;
  if (back) from->ctx = std::move(back);
  set_current_stack_label(self->running_label);
  payload in = std::move(self->incoming);
  if (tl_has_tracer) {
    try {
      tracer t = tl_tracer;
      t(self->incoming_event, greenlet(self->origin), greenlet(self));
    } catch (...) {
      tl_tracer = nullptr;
      tl_has_tracer = false;
      in = payload{value(), std::current_exception()};
    }
  }
  if (greenlet_impl* r = tl_release_after_switch) {
    tl_release_after_switch = nullptr;
    release(r);
  }
  return in;
}

value transfer(greenlet_domain* d, greenlet_impl* self, greenlet_impl* target, payload&& p, trace_event event) {
  continuation next = prepare_landing(d, self, target, std::move(p), event);
  exception_state& eh = thread_exception_state();
  self->eh = eh;
  continuation back = std::move(next).resume();
  thread_exception_state() = self->eh;  // looked up again: never assume which thread resumes us
  payload in = arrive(self, std::move(back));
  if (in.e) std::rethrow_exception(in.e);
  return std::move(in.v);
}

continuation run_greenlet(void* arg, continuation&& caller) {
  auto* self = static_cast<greenlet_impl*>(arg);
  thread_exception_state() = exception_state{};
  payload out;
  try {
    payload in = arrive(self, std::move(caller));
    if (in.e) std::rethrow_exception(in.e);  // a throwing tracer
    greenlet::run_function fn = std::move(self->run);
    out.v = fn(std::move(in.v));
  } catch (const greenlet_exit& e) {
    out.v = value::of(e);
  } catch (...) {
    if (is_forced_unwind()) throw;
    out.e = std::current_exception();
  }
  self->dead = true;
  greenlet_domain* d = self->domain;
  trace_event event = out.e ? trace_event::throw_ : trace_event::switch_;
  greenlet_impl* target = resolve(self->parent, out);
  return prepare_landing(d, self, target, std::move(out), event);
}

value switch_to(greenlet_impl* target, payload&& p, trace_event event) {
  greenlet_domain* d = current_domain();
  if (target->domain != d) {
    throw greenlet_error("cannot switch to a greenlet of another thread or task");
  }
  greenlet_impl* self = d->current;
  target = resolve(target, p);
  if (target == self) {
    if (p.e) std::rethrow_exception(p.e);
    return std::move(p.v);
  }
  return transfer(d, self, target, std::move(p), event);
}

// ---- killing -------------------------------------------------------------------------------------------------

// The last handle to a started, unfinished greenlet of the current domain went away: throw greenlet_exit into
// it with its parent set to the current greenlet, so its destructors run.
void kill_unreferenced(greenlet_domain* d, greenlet_impl* g) noexcept {
  g->refs.store(1);
  greenlet_impl* saved_parent = g->parent;
  greenlet_impl* cur = d->current;
  acquire(cur);
  g->parent = cur;
  try {
    switch_to(g, payload{value(), std::make_exception_ptr(greenlet_exit{})}, trace_event::throw_);
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
    if (g->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    g->refs.store(1);
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
    for (greenlet_impl* g : batch) kill_unreferenced(d, g);
  }
  d->killing_deferred = false;
}

void release(greenlet_impl* g) noexcept {
  if (g->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  if (g->started && !g->dead && !g->is_main && !g->leaked) {
    greenlet_domain* here = tl_domain_slot != nullptr ? *tl_domain_slot : tl_thread_domain;
    greenlet_domain* owner = g->domain;
    if (here == owner) {
      kill_unreferenced(owner, g);
      return;
    }
    if (owner->alive.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> lk(owner->deferred_mutex);
      // Re-check under the lock: end_domain() marks the domain dead under it.
      if (owner->alive.load(std::memory_order_acquire)) {
        g->refs.store(1);
        owner->deferred.push_back(g);
        owner->has_deferred.store(true, std::memory_order_release);
        return;
      }
    }
    // Its thread or task has ended: it can never run again, and unwinding it here would run its code on the
    // wrong thread. Leak its stack.
    std::move(g->ctx).leak();
  }
  if (g->leaked) return;
  destroy(g);
}

void teardown_domain(greenlet_domain* d) noexcept {
  process_deferred(d);
  {
    std::lock_guard<std::mutex> lk(d->deferred_mutex);
    d->alive.store(false, std::memory_order_release);
  }
  greenlet_impl* cur = d->current;
  greenlet_impl* main = d->main;
  d->current = nullptr;
  d->main = nullptr;
  if (cur != nullptr) release(cur);
  if (main != nullptr) release(main);
  release_domain(d);
}

greenlet_impl* new_greenlet(greenlet::run_function run, greenlet_impl* parent, stack_options stack) {
  greenlet_domain* d = current_domain();
  if (parent != nullptr && parent->domain != d) {
    throw greenlet_error("a greenlet's parent must belong to the same thread or task");
  }
  auto* g = new greenlet_impl;
  g->domain = d;
  acquire_domain(d);
  g->parent = parent != nullptr ? parent : d->current;
  acquire(g->parent);
  g->run = std::move(run);
  g->stack_size = stack.size;
  g->label.name = stack.name.empty() ? "greenlet" : std::move(stack.name);
  g->running_label = &g->label;
  return g;
}

}  // namespace

greenlet_domain** exchange_domain_slot(greenlet_domain** slot) noexcept {
  greenlet_domain** previous = tl_domain_slot;
  tl_domain_slot = slot != nullptr ? slot : &tl_thread_domain;
  return previous;
}

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

greenlet::greenlet(run_function run, detail::greenlet_impl* parent, stack_options stack)
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

value greenlet::switch_value(value v) {
  if (impl_ == nullptr) throw greenlet_error("switch_() on a moved-from greenlet handle");
  return detail::switch_to(impl_, detail::payload{std::move(v), nullptr}, trace_event::switch_);
}

value greenlet::throw_() { return throw_(std::make_exception_ptr(greenlet_exit{})); }

value greenlet::throw_(std::exception_ptr e) {
  if (impl_ == nullptr) throw greenlet_error("throw_() on a moved-from greenlet handle");
  if (!e) throw greenlet_error("throw_() needs an exception");
  detail::greenlet_domain* d = detail::current_domain();
  if (impl_->domain != d) throw greenlet_error("cannot throw into a greenlet of another thread or task");
  if (impl_->dead && detail::is_greenlet_exit(e)) {
    return value::of(greenlet_exit{});  // killing a dead greenlet: nothing to do
  }
  return detail::switch_to(impl_, detail::payload{value(), std::move(e)}, trace_event::throw_);
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
  detail::tl_has_tracer = static_cast<bool>(t);
  return std::exchange(detail::tl_tracer, std::move(t));
}
tracer gettrace() { return detail::tl_tracer; }

}  // namespace tendril
