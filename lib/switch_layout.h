/* lib/switch_layout.h — the byte offsets lib/switch_x86_64.S reads, shared with lib/greenlet.cpp.
 *
 * The assembly switch's fast path reads a few fields of greenlet_impl, greenlet_domain and the per-thread switch
 * state by offset. lib/greenlet.cpp static_asserts each offset here against the C++ layout, so a change to
 * either side that the other does not follow fails to compile. Plain C preprocessor: the .S file includes it. */
#ifndef TENDRIL_SWITCH_LAYOUT_H
#define TENDRIL_SWITCH_LAYOUT_H

/* greenlet_impl */
#define TENDRIL_GREENLET_CTX 0            /* continuation: the suspended context (fcontext_t), null while running */
#define TENDRIL_GREENLET_DOMAIN 8         /* greenlet_domain* */
#define TENDRIL_GREENLET_LABEL 16         /* const stack_label* running_label */
#define TENDRIL_GREENLET_EH 24            /* exception_state: caught_exceptions (8 bytes), uncaught count (4) */
#define TENDRIL_GREENLET_STARTED_DEAD 40  /* bool started, then bool dead: the word 0x0001 is "started, alive" */
#define TENDRIL_GREENLET_ORPHANED 42      /* bool orphaned */

/* greenlet_domain */
#define TENDRIL_DOMAIN_CURRENT 0       /* greenlet_impl* current */
#define TENDRIL_DOMAIN_HAS_DEFERRED 8  /* std::atomic<bool>: greenlets dropped on other threads wait to be killed */

/* switch_tls (the thread-local tendril_tl_switch): the switch_message first, then */
#define TENDRIL_MESSAGE_FROM 0   /* greenlet_impl* */
#define TENDRIL_MESSAGE_VALUE 8  /* value*: a value is one pointer, null when empty */
#define TENDRIL_MESSAGE_ERROR 16 /* std::exception_ptr*: null when the sender throws nothing in */
#define TENDRIL_MESSAGE_EVENT 24 /* trace_event, 4 bytes */
#define TENDRIL_TLS_EH 32         /* exception_state*: the thread's C++ exception record, set before any switch */
#define TENDRIL_TLS_HAS_TRACER 40 /* bool: a tracer is set */

#endif
