// lib/switch_x86_64.S — tendril::greenlet::switch_value(value) on x86-64: the greenlet switch's entry and exit.
//
// Why assembly: the CPU predicts every `ret` from its return-stack buffer. Boost.Context's jump_fcontext is
// entered by a call and left by an indirect jump, so after landing on the other stack the buffer holds the
// sender's return addresses, and the first `ret` out of a C++ switch function goes to the receiver's caller while
// the buffer predicts the sender's: one mispredicted return per switch, about 3.5x the whole cost of a raw
// Boost.Context switch on this hardware (bench/switch.cpp). Raw Boost.Context code escapes it only by inlining the
// jump into user code, which a library whose headers cannot include Boost cannot do.
//
// This entry point leaves to its caller the way jump_fcontext leaves to its target: it pops its return address
// and jumps to it, so the indirect-branch predictor, not the return-stack buffer, predicts the landing.
//
// Why all of the common case is here: with the greenlet logic in two C++ calls around a call to jump_fcontext
// (tendril 0.3), a round trip took ~310 instructions against raw Boost.Context's 67, and 2.2-2.8x its time.
// This file now does the common switch itself (a started, live greenlet of the current thread or task, with a
// plain value, no exception, no tracer): the checks, the message to the receiver, the jump and the landing, in
// about 100 instructions per switch. Every other case calls the C++ functions tendril_switch_begin() and
// tendril_switch_end() in lib/greenlet.cpp, which handle every case (they are prepare_landing() and receive(),
// the logic of the C++ switch); the fast paths here make the checks and changes those make for the common case,
// and bail out to them before changing anything. The
// fields they read are at the offsets in lib/switch_layout.h, which lib/greenlet.cpp static_asserts.
//
// The jump itself is jump_fcontext's, inline, with one difference: the floating-point control state (MXCSR's
// control bits and the x87 control word, which Boost.Context keeps per context like Python's greenlet) is
// saved on every switch but reloaded only when the receiver's differs, which it rarely does; ldmxcsr and fldcw
// cost about as much as the rest of a raw jump. A context suspended here is a jump_fcontext frame, so Boost
// resumes it (jump_fcontext, ontop_fcontext for unwinding), and contexts Boost suspended are resumed here.
//
// The CFI below lets C++ exceptions (a greenlet_error from begin, an exception thrown into the greenlet from
// end, Boost's forced_unwind at the landing) unwind through this frame into the caller. No callee-saved register
// is changed while a call can throw, so the CFI only tracks the frame's size.
//
// Like jump_fcontext, this leaves a frame without `ret`, which CET shadow stacks forbid. The file therefore
// carries no GNU property note claiming shadow-stack support, so the loader never enables shadow stacks for a
// process that links tendril (as with any object lacking the note).
#if defined(__x86_64__) && defined(__ELF__)

#include "switch_layout.h"

    .text
    .p2align 4
    .globl  _ZN7tendril8greenlet12switch_valueENS_5valueE
    .type   _ZN7tendril8greenlet12switch_valueENS_5valueE, @function
    .hidden tendril_switch_begin
    .hidden tendril_switch_end
    .hidden tendril_tl_switch

// value greenlet::switch_value(value v): %rdi = where to build the returned value, %rsi = this (the handle, whose
// only member is its greenlet_impl*), %rdx = &v (the caller's temporary, alive until this call returns).
//
// Stack, from the caller's return address down: three words of locals (where the result goes, the switching
// greenlet, padding), then while suspended the 0x48-byte frame of Boost.Context's jump_fcontext (x86_64 SysV ELF,
// Boost 1.81): +0x00 MXCSR (4 bytes) and x87 control word (2), +0x08 unused, +0x10 r12, r13, r14, r15, rbx,
// +0x38 rbp, +0x40 where to resume. The address of that frame is the suspended context (a fcontext_t), so
// jump_fcontext and ontop_fcontext resume it as one of their own, and this code resumes theirs.
_ZN7tendril8greenlet12switch_valueENS_5valueE:
    .cfi_startproc
    subq    $0x18, %rsp                 // the locals; 16-byte aligned for the calls
    .cfi_def_cfa_offset 0x20
    movq    %rdi, (%rsp)

    // The common case of tendril_switch_begin(), for a started, live target of the current domain other than the
    // running greenlet, with no greenlets queued to be killed: every check comes before any change, and any
    // other case goes to the C++ function, which checks everything again.
    movq    (%rsi), %r9                 // the target greenlet_impl*
    testq   %r9, %r9
    jz      .Lbegin_in_cxx
    movq    _ZN7tendril6detail14tl_domain_slotE@gottpoff(%rip), %rax
    movq    %fs:(%rax), %rax
    testq   %rax, %rax
    jz      .Lbegin_in_cxx
    // The current domain: null before the thread's first greenlet call, and then it is not the target's (a
    // greenlet always has a domain), so comparing first is the null check too.
    movq    (%rax), %r10
    cmpq    %r10, TENDRIL_GREENLET_DOMAIN(%r9)
    jne     .Lbegin_in_cxx
    cmpb    $0, TENDRIL_DOMAIN_HAS_DEFERRED(%r10)
    jne     .Lbegin_in_cxx
    movq    TENDRIL_DOMAIN_CURRENT(%r10), %r11  // self
    cmpq    %r11, %r9
    je      .Lbegin_in_cxx
    cmpw    $0x0001, TENDRIL_GREENLET_STARTED_DEAD(%r9)
    jne     .Lbegin_in_cxx
    // self->eh = the thread's C++ exception record (its address is set before the thread's first domain exists)
    movq    tendril_tl_switch@gottpoff(%rip), %r8
    movq    %fs:TENDRIL_TLS_EH(%r8), %rax
    movq    (%rax), %rcx
    movq    %rcx, TENDRIL_GREENLET_EH(%r11)
    movl    8(%rax), %ecx
    movl    %ecx, TENDRIL_GREENLET_EH+8(%r11)
    // the message: from self, the value at %rdx, no exception, a switch event
    movq    %r11, %fs:TENDRIL_MESSAGE_FROM(%r8)
    movq    %rdx, %fs:TENDRIL_MESSAGE_VALUE(%r8)
    movq    $0, %fs:TENDRIL_MESSAGE_ERROR(%r8)
    movl    $0, %fs:TENDRIL_MESSAGE_EVENT(%r8)
    // the target becomes current, with its stack's label
    movq    %r9, TENDRIL_DOMAIN_CURRENT(%r10)
    movq    TENDRIL_GREENLET_LABEL(%r9), %rcx
    movq    _ZN7tendril6detail16tl_current_labelE@gottpoff(%rip), %rax
    movq    %rcx, %fs:(%rax)
    // take its context
    movq    TENDRIL_GREENLET_CTX(%r9), %rax
    movq    $0, TENDRIL_GREENLET_CTX(%r9)
    movq    %r11, 8(%rsp)
.Lsuspend:

    // Suspend: jump_fcontext's frame, resuming at .Lresumed.
    subq    $0x48, %rsp
    .cfi_remember_state
    .cfi_def_cfa_offset 0x68
    stmxcsr (%rsp)
    fnstcw  4(%rsp)
    movq    %r12, 0x10(%rsp)
    movq    %r13, 0x18(%rsp)
    movq    %r14, 0x20(%rsp)
    movq    %r15, 0x28(%rsp)
    movq    %rbx, 0x30(%rsp)
    movq    %rbp, 0x38(%rsp)
    leaq    .Lresumed(%rip), %rcx
    movq    %rcx, 0x40(%rsp)
    // The floating-point control state is reloaded only when it differs, as it rarely does: ldmxcsr and fldcw
    // cost more than the rest of the jump (bench/switch.cpp). MXCSR's status flags (bits 0-5) are not compared:
    // the ABI does not preserve them across calls, and a switch is a call to each side.
    movl    (%rsp), %ecx
    xorl    (%rax), %ecx
    andl    $0xffc0, %ecx
    movzwl  4(%rsp), %edx
    movzwl  4(%rax), %r8d
    xorl    %r8d, %edx
    orl     %edx, %ecx
    movq    %rsp, %rdi                  // this context, for the receiver
    movq    %rax, %rsp                  // now on the receiver's stack; this frame is at %rdi
    .cfi_def_cfa %rdi, 0x68
    jnz     .Lfpu
.Lresume:
    movq    0x10(%rsp), %r12
    movq    0x18(%rsp), %r13
    movq    0x20(%rsp), %r14
    movq    0x28(%rsp), %r15
    movq    0x30(%rsp), %rbx
    movq    0x38(%rsp), %rbp
    movq    0x40(%rsp), %r8
    leaq    0x48(%rsp), %rsp
    // As jump_fcontext leaves: %rax and %rdi = the context we came from, %rdx and %rsi = the data (none).
    movq    %rdi, %rax
    xorl    %esi, %esi
    xorl    %edx, %edx
    jmp     *%r8
.Lfpu:
    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    jmp     .Lresume

    // From here on the CFI describes this frame at %rsp again. ontop_fcontext calls its function with .Lresumed
    // as the return address, so the unwinder looks up the byte before it: the nop keeps that byte under this CFI.
    .cfi_restore_state
    nop
    // Resumed, by this code, jump_fcontext or ontop_fcontext: %rsp is back at the locals, the callee-saved
    // registers are the caller's again, %rax = the context we came from (null if it finished).
    .p2align 4
.Lresumed:
    // The common case of tendril_switch_end(): no exception thrown in, no tracer, a sender that is not orphaned.
    movq    8(%rsp), %r11               // self
    movq    tendril_tl_switch@gottpoff(%rip), %rcx
    cmpq    $0, %fs:TENDRIL_MESSAGE_ERROR(%rcx)
    jne     .Lend_in_cxx
    movq    %fs:TENDRIL_MESSAGE_FROM(%rcx), %r8
    cmpb    $0, TENDRIL_GREENLET_ORPHANED(%r8)
    jne     .Lend_in_cxx
    cmpb    $0, %fs:TENDRIL_TLS_HAS_TRACER(%rcx)
    jne     .Lend_in_cxx
    movq    %fs:TENDRIL_TLS_EH(%rcx), %rdx
    // the thread's C++ exception record = self->eh
    movq    TENDRIL_GREENLET_EH(%r11), %rsi
    movq    %rsi, (%rdx)
    movl    TENDRIL_GREENLET_EH+8(%r11), %esi
    movl    %esi, 8(%rdx)
    // the sender's context, unless it finished
    testq   %rax, %rax
    jz      1f
    movq    %rax, TENDRIL_GREENLET_CTX(%r8)
1:  // the result: the sender's value, moved (a value is one owning pointer)
    movq    %fs:TENDRIL_MESSAGE_VALUE(%rcx), %rdx
    movq    (%rdx), %rsi
    movq    $0, (%rdx)
    movq    (%rsp), %rdi
    movq    %rsi, (%rdi)
.Lreturn:
    movq    (%rsp), %rax
    addq    $0x18, %rsp
    .cfi_def_cfa_offset 8
    popq    %rcx                        // the return address: left by an indirect jump, not by `ret`
    jmp     *%rcx

    // The C++ paths, out of the fast paths' way.
    .cfi_def_cfa_offset 0x20
.Lbegin_in_cxx:
    call    tendril_switch_begin        // -> %rax: the context to resume (null: no switch, result built), %rdx: self
    testq   %rax, %rax
    jz      .Lreturn
    movq    %rdx, 8(%rsp)
    jmp     .Lsuspend
.Lend_in_cxx:
    movq    (%rsp), %rdi
    movq    %r11, %rsi
    movq    %rax, %rdx
    call    tendril_switch_end          // builds the result at (%rsp), or throws
    jmp     .Lreturn
    .cfi_endproc
    .size   _ZN7tendril8greenlet12switch_valueENS_5valueE, .-_ZN7tendril8greenlet12switch_valueENS_5valueE

#endif

    .section .note.GNU-stack, "", @progbits
