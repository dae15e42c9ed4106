// lib/greenlet_domain.hpp — how the scheduler gives each task its own main greenlet.
//
// A *domain* is the set of greenlets that share one main greenlet: a thread's, or a task's. The greenlet code
// finds the current domain through a per-thread slot pointer; the scheduler points that slot at the running
// task's storage on every task switch. The greenlet layer knows nothing of tasks: it only sees a slot.
#pragma once

namespace tendril::detail {

struct greenlet_domain;

// The calling thread's own domain, and the slot the greenlet code reads now (null until first used: then the
// thread's own). Plain __thread with the initial-exec model: exchange_domain_slot() runs on every task switch,
// and a C++ thread_local declared extern would be read through a wrapper call.
#define TENDRIL_DOMAIN_TLS __attribute__((tls_model("initial-exec")))
extern __thread greenlet_domain* tl_thread_domain TENDRIL_DOMAIN_TLS;
extern __thread greenlet_domain** tl_domain_slot TENDRIL_DOMAIN_TLS;

// Points the calling thread at `slot` (where the running task keeps its domain pointer, created lazily on the
// first greenlet call). Returns the previous slot. nullptr restores the thread's own slot.
inline greenlet_domain** exchange_domain_slot(greenlet_domain** slot) noexcept {
  greenlet_domain** previous = tl_domain_slot;
  tl_domain_slot = slot != nullptr ? slot : &tl_thread_domain;
  return previous;
}

// Called when the owner of the domain in `*slot` ends (a task finished): kills greenlets dropped elsewhere and
// still queued here, then releases the main greenlet. Greenlets still referenced can never run again.
void end_domain(greenlet_domain** slot) noexcept;

}  // namespace tendril::detail
