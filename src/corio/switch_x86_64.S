/* Coroutine context switch for x86-64, System V ABI (Linux, BSD, macOS). See switch.h.
 *
 * Saved per context: rsp, rbp, rbx, r12-r15, the resume address, MXCSR and the x87 control
 * word: exactly the state the System V ABI requires a callee to preserve ("the control bits of
 * the MXCSR register and the x87 control word are callee-saved"). xmm registers are all
 * caller-saved, so the compiler has already spilled whatever is live across the call.
 * The offsets match struct corio__regs, checked by _Static_assert in switch.h.
 *
 * Not marked for CET (no endbr64, no GNU property note): a stack switch is incompatible with
 * the shadow stack, and leaving the property out keeps the linker from enabling it. */
#if defined(__x86_64__) && !defined(_WIN32) && !defined(CORIO_FORCE_UCONTEXT)

#define R_RSP   0
#define R_RBP   8
#define R_RBX   16
#define R_R12   24
#define R_R13   32
#define R_R14   40
#define R_R15   48
#define R_RIP   56
#define R_MXCSR 64
#define R_FPUCW 68

#if defined(__APPLE__)
#define SYM(name) _##name
#define FUNC_BEGIN(name) .private_extern SYM(name); .globl SYM(name); .p2align 4; SYM(name):
#define LOCAL_BEGIN(name) .p2align 4; SYM(name):
#define FUNC_END(name)
#else
#define SYM(name) name
#define FUNC_BEGIN(name) .globl name; .hidden name; .type name, @function; .p2align 4; name:
#define LOCAL_BEGIN(name) .type name, @function; .p2align 4; name:
#define FUNC_END(name) .size name, . - name
#endif

    .text

/* void corio__switch(struct corio__regs *from (rdi), struct corio__regs *to (rsi)) */
FUNC_BEGIN(corio__switch)
    .cfi_startproc
    stmxcsr R_MXCSR(%rdi)           /* first: their stores then complete under the rest */
    fnstcw  R_FPUCW(%rdi)
    movq    (%rsp), %rax            /* our return address becomes from's resume address */
    leaq    8(%rsp), %rcx           /* and rsp as it will be after that return */
    movq    %rcx, R_RSP(%rdi)
    movq    %rbp, R_RBP(%rdi)
    movq    %rbx, R_RBX(%rdi)
    movq    %r12, R_R12(%rdi)
    movq    %r13, R_R13(%rdi)
    movq    %r14, R_R14(%rdi)
    movq    %r15, R_R15(%rdi)
    movq    %rax, R_RIP(%rdi)

    movq    R_RSP(%rsi), %rsp
    movq    R_RBP(%rsi), %rbp
    movq    R_RBX(%rsi), %rbx
    movq    R_R12(%rsi), %r12
    movq    R_R13(%rsi), %r13
    movq    R_R14(%rsi), %r14
    movq    R_R15(%rsi), %r15
    ldmxcsr R_MXCSR(%rsi)
    fldcw   R_FPUCW(%rsi)
    /* Resume with a return, not an indirect jump: the call into this function pushed an
     * entry on the CPU's return-address predictor and a ret consumes it. A jump would leave
     * it behind, and every return the resumed task makes afterwards would be mispredicted.
     * Tasks usually switch from the same call site, so this ret is predicted too. */
    pushq   R_RIP(%rsi)
    ret
    .cfi_endproc
FUNC_END(corio__switch)

/* First code run by a fresh context: r12 = arg, r13 = entry, rsp % 16 == 0, rbp == 0. The
 * call leaves rsp % 16 == 8 in entry, as after any call. The return address is undefined in
 * the CFI, so unwinders (gdb, libunwind, _Unwind_Backtrace) stop at this frame. */
LOCAL_BEGIN(corio__trampoline)
    .cfi_startproc
    .cfi_undefined rip
    movq    %r12, %rdi
    callq   *%r13
    ud2                             /* entry returned: a scheduler bug, trap at once */
    .cfi_endproc
FUNC_END(corio__trampoline)

/* void corio__regs_init(struct corio__regs *r (rdi), void *lo (rsi), size_t size (rdx),
 *                       corio__entry_fn *entry (rcx), void *arg (r8)) */
FUNC_BEGIN(corio__regs_init)
    .cfi_startproc
    leaq    (%rsi,%rdx), %rax
    andq    $-16, %rax
    subq    $16, %rax               /* a zero "return address" and "saved rbp" above the */
    movq    $0, (%rax)              /* outermost frame, for naive frame-pointer walkers */
    movq    $0, 8(%rax)
    movq    %rax, R_RSP(%rdi)
    movq    $0, R_RBP(%rdi)
    movq    $0, R_RBX(%rdi)
    movq    %r8, R_R12(%rdi)
    movq    %rcx, R_R13(%rdi)
    movq    $0, R_R14(%rdi)
    movq    $0, R_R15(%rdi)
    leaq    SYM(corio__trampoline)(%rip), %rax
    movq    %rax, R_RIP(%rdi)
    stmxcsr R_MXCSR(%rdi)           /* the new context inherits the current FP control */
    fnstcw  R_FPUCW(%rdi)
    movw    $0, R_FPUCW+2(%rdi)
    ret
    .cfi_endproc
FUNC_END(corio__regs_init)

#endif

#if defined(__ELF__)
    .section .note.GNU-stack, "", @progbits
#endif
