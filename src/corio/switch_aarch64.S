/* Coroutine context switch for AArch64, AAPCS64 (Linux, BSD, macOS). See switch.h.
 *
 * Saved per context: x19-x28, the frame pointer x29, the link register x30 (the resume
 * address), sp, d8-d15 (AAPCS64 makes only the low 64 bits of v8-v15 callee-saved) and FPCR
 * (rounding mode, flush-to-zero, default NaN, trap enables), which is therefore per coroutine.
 * The offsets match struct corio__regs, checked by _Static_assert in switch.h.
 *
 * Writing FPCR can be slow (on some cores it synchronises the pipeline), so it is written only
 * when the two contexts differ, which in practice is never.
 *
 * Not marked for BTI/PAC (no GNU property note): the indirect branches here (blr to entry,
 * ret to a resume address saved by another bl) are ordinary, and pointer authentication of
 * return addresses happens in the C callers' own frames. */
#if defined(__aarch64__) && !defined(_WIN32) && !defined(CORIO_FORCE_UCONTEXT)

#define R_X19  0
#define R_X21  16
#define R_X23  32
#define R_X25  48
#define R_X27  64
#define R_FP   80
#define R_SP   96
#define R_D8   112
#define R_D10  128
#define R_D12  144
#define R_D14  160

#if defined(__APPLE__)
#define SYM(name) _##name
#define FUNC_BEGIN(name) .private_extern SYM(name) %% .globl SYM(name) %% .p2align 4 %% SYM(name):
#define LOCAL_BEGIN(name) .p2align 4 %% SYM(name):
#define FUNC_END(name)
#else
#define SYM(name) name
#define FUNC_BEGIN(name) .globl name; .hidden name; .type name, %function; .p2align 4; name:
#define LOCAL_BEGIN(name) .type name, %function; .p2align 4; name:
#define FUNC_END(name) .size name, . - name
#endif

    .text

/* void corio__switch(struct corio__regs *from (x0), struct corio__regs *to (x1)) */
FUNC_BEGIN(corio__switch)
    .cfi_startproc
    stp     x19, x20, [x0, #R_X19]
    stp     x21, x22, [x0, #R_X21]
    stp     x23, x24, [x0, #R_X23]
    stp     x25, x26, [x0, #R_X25]
    stp     x27, x28, [x0, #R_X27]
    stp     x29, x30, [x0, #R_FP]       /* x30: from resumes at our return address */
    mov     x9, sp
    mrs     x10, fpcr
    stp     x9, x10, [x0, #R_SP]
    stp     d8, d9, [x0, #R_D8]
    stp     d10, d11, [x0, #R_D10]
    stp     d12, d13, [x0, #R_D12]
    stp     d14, d15, [x0, #R_D14]

    ldp     x19, x20, [x1, #R_X19]
    ldp     x21, x22, [x1, #R_X21]
    ldp     x23, x24, [x1, #R_X23]
    ldp     x25, x26, [x1, #R_X25]
    ldp     x27, x28, [x1, #R_X27]
    ldp     x29, x30, [x1, #R_FP]
    ldp     x9, x11, [x1, #R_SP]
    mov     sp, x9
    ldp     d8, d9, [x1, #R_D8]
    ldp     d10, d11, [x1, #R_D10]
    ldp     d12, d13, [x1, #R_D12]
    ldp     d14, d15, [x1, #R_D14]
    cmp     x10, x11
    b.eq    1f
    msr     fpcr, x11
1:  ret
    .cfi_endproc
FUNC_END(corio__switch)

/* First code run by a fresh context: x19 = arg, x20 = entry, sp % 16 == 0, x29 == 0. entry's
 * frame record is then {0, here}, which ends frame-pointer walks; the return address is
 * undefined in the CFI, which ends DWARF unwinds (gdb, libgcc). */
LOCAL_BEGIN(corio__trampoline)
    .cfi_startproc
    .cfi_undefined x30
    mov     x0, x19
    blr     x20
    brk     #0                          /* entry returned: a scheduler bug, trap at once */
    .cfi_endproc
FUNC_END(corio__trampoline)

/* void corio__regs_init(struct corio__regs *r (x0), void *lo (x1), size_t size (x2),
 *                       corio__entry_fn *entry (x3), void *arg (x4)) */
FUNC_BEGIN(corio__regs_init)
    .cfi_startproc
    add     x9, x1, x2
    and     x9, x9, #~15
    stp     xzr, xzr, [x9, #-16]!       /* a zero frame record above the outermost frame */
    stp     x4, x3, [x0, #R_X19]        /* x19 = arg, x20 = entry */
    stp     xzr, xzr, [x0, #R_X21]
    stp     xzr, xzr, [x0, #R_X23]
    stp     xzr, xzr, [x0, #R_X25]
    stp     xzr, xzr, [x0, #R_X27]
    adr     x10, SYM(corio__trampoline)
    stp     xzr, x10, [x0, #R_FP]       /* x29 = 0, x30 = trampoline */
    mrs     x10, fpcr                   /* the new context inherits the current FP control */
    stp     x9, x10, [x0, #R_SP]
    stp     xzr, xzr, [x0, #R_D8]
    stp     xzr, xzr, [x0, #R_D10]
    stp     xzr, xzr, [x0, #R_D12]
    stp     xzr, xzr, [x0, #R_D14]
    ret
    .cfi_endproc
FUNC_END(corio__regs_init)

#endif

#if defined(__ELF__)
    .section .note.GNU-stack, "", %progbits
#endif
