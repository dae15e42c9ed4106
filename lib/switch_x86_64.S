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
// and jumps to it, so the indirect-branch predictor, not the return-stack buffer, predicts the landing. The
// greenlet logic stays in C++, in two calls that return normally: tendril_switch_begin (checks, the message to
// the receiver, the context to resume) before the jump and tendril_switch_end (the received value or exception)
// after it, both in lib/greenlet.cpp. Every call inside is matched by its return on the same stack, so none of
// them is mispredicted either.
//
// Register use: the callee-saved %rbx and %r12 hold where the result is built and the switching greenlet across
// the jump; jump_fcontext saves and restores them per context, so after landing they are the receiver's own.
// The CFI below lets C++ exceptions (a greenlet_error from begin, an exception thrown into the greenlet from end,
// Boost's forced_unwind at the jump) unwind through this frame into the caller.
//
// Like jump_fcontext, this leaves a frame without `ret`, which CET shadow stacks forbid. The file therefore
// carries no GNU property note claiming shadow-stack support, so the loader never enables shadow stacks for a
// process that links tendril (as with any object lacking the note).
#if defined(__x86_64__) && defined(__ELF__)

    .text
    .p2align 4
    .globl  _ZN7tendril8greenlet12switch_valueENS_5valueE
    .type   _ZN7tendril8greenlet12switch_valueENS_5valueE, @function
    .hidden tendril_switch_begin
    .hidden tendril_switch_end

// value greenlet::switch_value(value v): %rdi = where to build the returned value, %rsi = this (the handle, whose
// only member is its greenlet_impl*), %rdx = &v (the caller's temporary, alive until this call returns).
_ZN7tendril8greenlet12switch_valueENS_5valueE:
    .cfi_startproc
    pushq   %rbx
    .cfi_def_cfa_offset 16
    .cfi_offset %rbx, -16
    pushq   %r12
    .cfi_def_cfa_offset 24
    .cfi_offset %r12, -24
    subq    $8, %rsp                    // 16-byte alignment for the calls
    .cfi_def_cfa_offset 32
    movq    %rdi, %rbx
    call    tendril_switch_begin        // -> %rax: the context to resume (null: no switch, result built), %rdx: self
    testq   %rax, %rax
    jz      1f
    movq    %rdx, %r12
    movq    %rax, %rdi
    xorl    %esi, %esi
    call    *jump_fcontext@GOTPCREL(%rip)  // returns when switched back to: %rax = the context we came from
    movq    %rbx, %rdi
    movq    %r12, %rsi
    movq    %rax, %rdx
    call    tendril_switch_end          // builds the result at %rbx, or throws
1:
    movq    %rbx, %rax
    addq    $8, %rsp
    .cfi_def_cfa_offset 24
    popq    %r12
    .cfi_def_cfa_offset 16
    popq    %rbx
    .cfi_def_cfa_offset 8
    popq    %rcx                        // the return address: left by an indirect jump, not by `ret`
    jmp     *%rcx
    .cfi_endproc
    .size   _ZN7tendril8greenlet12switch_valueENS_5valueE, .-_ZN7tendril8greenlet12switch_valueENS_5valueE

#endif

    .section .note.GNU-stack, "", @progbits
