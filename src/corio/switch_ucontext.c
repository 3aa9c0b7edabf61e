/* Coroutine context switch for targets without an assembly switch: getcontext, makecontext and
 * swapcontext (POSIX.1-2001, removed in 2008 but still in glibc, musl (libucontext), the BSDs
 * and macOS). About 20-50x slower than the assembly switches because swapcontext saves and
 * restores the signal mask with a system call. See switch.h for the contract.
 *
 * CMake builds this file only when no .S applies; the guard below makes it empty if it is
 * built by mistake next to one of them (no duplicate corio__switch). */
#include "switch.h"

#if CORIO__SWITCH_UCONTEXT

#include <stdint.h>
#include <stdlib.h>
#include <ucontext.h>

/* makecontext passes only int arguments, so the pointer to the context travels in two halves.
 * On targets with 32-bit pointers the high half is zero. */
static void corio__uc_trampoline(unsigned int lo_half, unsigned int hi_half)
{
    uintptr_t p = (uintptr_t)lo_half;
#if UINTPTR_MAX > 0xffffffffu
    p |= (uintptr_t)hi_half << 32;
#else
    (void)hi_half;
#endif
    struct corio__regs *r = (struct corio__regs *)p;
    r->entry(r->arg);
    abort(); /* entry returned: a scheduler bug (uc_link is NULL, which would exit the thread) */
}

void corio__regs_init(struct corio__regs *r, void *lo, size_t size, corio__entry_fn *entry,
                      void *arg)
{
    /* getcontext fills in the signal mask and, where the libc saves it, the FP environment,
     * so the new context inherits both from the caller. It cannot fail on a valid pointer. */
    if (getcontext(&r->uc) != 0)
        abort();
    r->uc.uc_stack.ss_sp = lo;
    r->uc.uc_stack.ss_size = size;
    r->uc.uc_stack.ss_flags = 0;
    r->uc.uc_link = NULL;
    r->entry = entry;
    r->arg = arg;
    uintptr_t p = (uintptr_t)r;
#if UINTPTR_MAX > 0xffffffffu
    unsigned int hi_half = (unsigned int)(p >> 32);
#else
    unsigned int hi_half = 0;
#endif
    makecontext(&r->uc, (void (*)(void))corio__uc_trampoline, 2, (unsigned int)p, hi_half);
}

void corio__switch(struct corio__regs *from, struct corio__regs *to)
{
    /* Fails only for an invalid context: a caller bug that must not be ignored. */
    if (swapcontext(&from->uc, &to->uc) != 0)
        abort();
}

#else

/* ISO C forbids an empty translation unit. */
typedef int corio__switch_ucontext_unused;

#endif
