// lib/greenlet_domain.hpp — how the scheduler gives each task its own main greenlet.
//
// A *domain* is the set of greenlets that share one main greenlet: a thread's, or a task's. The greenlet code
// finds the current domain through a per-thread slot pointer; the scheduler points that slot at the running
// task's storage on every task switch. The greenlet layer knows nothing of tasks: it only sees a slot.
#pragma once

namespace tendril::detail {

struct greenlet_domain;

// Points the calling thread at `slot` (where the running task keeps its domain pointer, created lazily on the
// first greenlet call). Returns the previous slot. nullptr restores the thread's own slot.
greenlet_domain** exchange_domain_slot(greenlet_domain** slot) noexcept;

// Called when the owner of the domain in `*slot` ends (a task finished): kills greenlets dropped elsewhere and
// still queued here, then releases the main greenlet. Greenlets still referenced can never run again.
void end_domain(greenlet_domain** slot) noexcept;

}  // namespace tendril::detail
