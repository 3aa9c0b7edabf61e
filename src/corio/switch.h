/* The coroutine context switch: the only code in corio that knows a CPU's calling convention.
 * Not installed. One implementation per ABI, chosen by CMake (libaco style):
 *   src/corio/switch_x86_64.S    x86-64 System V (Linux, BSD, macOS)
 *   src/corio/switch_aarch64.S   AArch64 AAPCS64 (Linux, BSD, macOS)
 *   src/corio/switch_ucontext.c  any other POSIX target (getcontext/makecontext/swapcontext)
 *   src/corio/switch_fiber.c     Windows (Win32 fibers; stacks in src/corio/stack_win.c)
 * Defining CORIO_FORCE_UCONTEXT for the whole build selects the ucontext fallback on x86-64 and
 * AArch64 too (the .S files then assemble to nothing); the tests use it to cover that path.
 *
 * The switch saves only what the ABI says a callee must preserve, plus the floating-point
 * control registers (x87 control word and MXCSR, FPCR), which are therefore per coroutine: a
 * task that changes its rounding mode does not change it for the others. Nothing touches the
 * signal mask, which is why this is ~20-50x cheaper than swapcontext(). On Windows the
 * fibers are created with FIBER_FLAG_FLOAT_SWITCH, so SwitchToFiber does the same there.
 *
 * Thread rules: a coroutine may be resumed only on the thread that runs its scheduler; these
 * functions do no locking. */
#ifndef CORIO_SWITCH_H
#define CORIO_SWITCH_H

#include <stddef.h>
#include <stdint.h>

#if !defined(CORIO_FORCE_UCONTEXT) && defined(__x86_64__) && !defined(_WIN32)
#define CORIO__SWITCH_X86_64 1
#elif !defined(CORIO_FORCE_UCONTEXT) && defined(__aarch64__) && !defined(_WIN32)
#define CORIO__SWITCH_AARCH64 1
#elif defined(_WIN32)
#define CORIO__SWITCH_FIBER 1
#else
#define CORIO__SWITCH_UCONTEXT 1
#include <ucontext.h>
#endif
/* Exactly one of the four is 1; the others are 0 (usable in #if under -Wundef). */
#ifndef CORIO__SWITCH_X86_64
#define CORIO__SWITCH_X86_64 0
#endif
#ifndef CORIO__SWITCH_AARCH64
#define CORIO__SWITCH_AARCH64 0
#endif
#ifndef CORIO__SWITCH_FIBER
#define CORIO__SWITCH_FIBER 0
#endif
#ifndef CORIO__SWITCH_UCONTEXT
#define CORIO__SWITCH_UCONTEXT 0
#endif

/* An entry function runs on a fresh stack and must never return: at its end the scheduler
 * switches away for good (there is no frame to return to; returning executes a trap). */
typedef void corio__entry_fn(void *arg);

#if CORIO__SWITCH_X86_64
/* Everything lives in the struct, nothing is pushed on the suspended stack, so a fresh context
 * is just a filled-in struct. The offsets are hard-coded in switch_x86_64.S. */
struct corio__regs {
    void    *rsp;    /* stack pointer after the return of corio__switch */
    void    *rbp;
    void    *rbx;
    void    *r12;    /* fresh context: arg */
    void    *r13;    /* fresh context: entry */
    void    *r14;
    void    *r15;
    void    *rip;    /* where corio__switch resumes this context */
    uint32_t mxcsr;  /* SSE control/status (rounding, exception masks, FTZ/DAZ) */
    uint16_t fpucw;  /* x87 control word */
    uint16_t pad_;
};
_Static_assert(offsetof(struct corio__regs, rsp) == 0, "switch_x86_64.S offsets");
_Static_assert(offsetof(struct corio__regs, rbp) == 8, "switch_x86_64.S offsets");
_Static_assert(offsetof(struct corio__regs, rbx) == 16, "switch_x86_64.S offsets");
_Static_assert(offsetof(struct corio__regs, r12) == 24, "switch_x86_64.S offsets");
_Static_assert(offsetof(struct corio__regs, r13) == 32, "switch_x86_64.S offsets");
_Static_assert(offsetof(struct corio__regs, r14) == 40, "switch_x86_64.S offsets");
_Static_assert(offsetof(struct corio__regs, r15) == 48, "switch_x86_64.S offsets");
_Static_assert(offsetof(struct corio__regs, rip) == 56, "switch_x86_64.S offsets");
_Static_assert(offsetof(struct corio__regs, mxcsr) == 64, "switch_x86_64.S offsets");
_Static_assert(offsetof(struct corio__regs, fpucw) == 68, "switch_x86_64.S offsets");
_Static_assert(sizeof(struct corio__regs) == 72, "switch_x86_64.S offsets");

#elif CORIO__SWITCH_AARCH64
/* Offsets hard-coded in switch_aarch64.S; pairs are adjacent for ldp/stp. */
struct corio__regs {
    uint64_t x19_x28[10]; /* fresh context: x19 = arg, x20 = entry */
    uint64_t fp;          /* x29 */
    uint64_t lr;          /* x30: where corio__switch resumes this context */
    uint64_t sp;
    uint64_t fpcr;        /* rounding mode, FZ, DN, trap enables */
    uint64_t d8_d15[8];   /* low 64 bits of v8-v15, the only callee-saved FP state */
};
_Static_assert(offsetof(struct corio__regs, x19_x28) == 0, "switch_aarch64.S offsets");
_Static_assert(offsetof(struct corio__regs, fp) == 80, "switch_aarch64.S offsets");
_Static_assert(offsetof(struct corio__regs, lr) == 88, "switch_aarch64.S offsets");
_Static_assert(offsetof(struct corio__regs, sp) == 96, "switch_aarch64.S offsets");
_Static_assert(offsetof(struct corio__regs, fpcr) == 104, "switch_aarch64.S offsets");
_Static_assert(offsetof(struct corio__regs, d8_d15) == 112, "switch_aarch64.S offsets");
_Static_assert(sizeof(struct corio__regs) == 176, "switch_aarch64.S offsets");

#elif CORIO__SWITCH_UCONTEXT
struct corio__regs {
    ucontext_t       uc;
    corio__entry_fn *entry; /* for the makecontext trampoline */
    void            *arg;
};

#else /* CORIO__SWITCH_FIBER: src/corio/switch_fiber.c (Windows fibers) owns this layout. */
#include <fenv.h>

/* Windows: a coroutine is a fiber, and Windows allocates its stack (with its own guard pages)
 * in CreateFiberEx. The fiber belongs to the corio__stack it was created for: stack_win.c
 * creates it in corio__stack_get (so running out of memory is an error there, not here) and
 * deletes it in corio__stack_put, which the scheduler calls only once no one runs on it.
 * A corio__stack's map and lo both point to this record; corio__regs_init(r, lo, ...) binds
 * r to it. A fiber is reused: a task that has ended is parked inside its last corio__switch,
 * and when its record is bound to a new entry function that switch, resumed, jumps back to the
 * top of the fiber's start routine (a __builtin_longjmp on the fiber's own stack), which calls
 * the new entry. */
struct corio__fiber {
    void                *handle;     /* CreateFiberEx's; NULL when none is made yet */
    size_t               stack_size; /* usable bytes asked for, for the overflow message */
    corio__entry_fn     *entry;      /* set by corio__regs_init */
    void                *arg;
    /* FP control state of corio__regs_init's caller: x87 control word and MXCSR on x86-64
     * (fenv.h's calls cost tens of microseconds under wine), fenv_t elsewhere */
#if defined(__x86_64__)
    unsigned short       x87cw;
    unsigned             mxcsr;
#else
    fenv_t               fenv;
#endif
    int                  started;    /* entry has been called at least once */
    int                  restart;    /* bound to a new entry while parked: restart on resume */
    void                *top[5];     /* __builtin_setjmp buffer at the start routine's top */
};

struct corio__regs {
    void                *fiber; /* the fiber handle to resume; a thread's own fiber (from
                                   ConvertThreadToFiberEx) is stored at its first switch */
    struct corio__fiber *rec;   /* NULL for a thread's own fiber */
};

/* For stack_win.c: creates f->handle with a stack of stack_size usable bytes (0 or -ENOMEM),
 * and deletes it (never the running fiber: aborts). */
int  corio__fiber_create(struct corio__fiber *f, size_t stack_size);
void corio__fiber_delete(struct corio__fiber *f);
/* The overflow reporter and the thread's stack guarantee (corio__stack_thread_init). */
int  corio__fiber_thread_init(void);
#endif

/* Prepares r so that the first corio__switch() into it runs entry(arg) on the stack
 * [lo, lo + size), with the stack pointer aligned as after a call (x86-64: rsp % 16 == 8 at
 * entry; AArch64: sp % 16 == 0) and a zero frame pointer and return address above entry's
 * frame, so debuggers and backtrace() stop there. The new context starts with the calling
 * thread's current floating-point control state (rounding mode, exception masks), as a new
 * thread does. lo and size need no particular alignment; the top is rounded down to 16.
 * r is not used until the first switch into it; it may be re-initialised once the coroutine
 * it described will never run again.
 * Windows (fibers): lo is the struct corio__fiber of a stack from corio__stack_get and size is
 * not used (the fiber's stack has the pool's size); re-initialising r for a fiber that has
 * already run replaces that fiber with a new one. */
void corio__regs_init(struct corio__regs *r, void *lo, size_t size, corio__entry_fn *entry,
                      void *arg);

/* The stack pointer a suspended context resumes with, NULL where the switch keeps it out of
 * reach (ucontext, fibers): the scheduler prefetches the lines above it before the switch. */
static inline const void *corio__regs_sp(const struct corio__regs *r)
{
#if CORIO__SWITCH_X86_64
    return r->rsp;
#elif CORIO__SWITCH_AARCH64
    return (const void *)(uintptr_t)r->sp;
#else
    (void)r;
    return NULL;
#endif
}

/* Saves the callee-saved registers and FP control state of the running context into from and
 * resumes to (fresh from corio__regs_init, or suspended in an earlier corio__switch). Returns
 * when something switches back to from. from and to must differ; to must not be running. */
void corio__switch(struct corio__regs *from, struct corio__regs *to);

/* ------------------------------------------------------------------------------------------
 * AddressSanitizer fiber annotations
 *
 * ASan keeps one "current stack" per thread; unless it is told about every switch it reports
 * false stack-buffer-overflows or misses real ones, and its fake stacks (use-after-return
 * detection) leak. The scheduler must bracket every corio__switch as follows. Let "sched" be
 * the thread's original stack (whose bounds the scheduler learns at the first switch, see 2).
 *
 * 1. Every switch from a context that stays alive (a suspending task, or the scheduler):
 *
 *        void *fake;
 *        corio__asan_start_switch(&fake, to_lo, to_size);   (bounds of the stack of "to")
 *        corio__switch(&from->regs, &to->regs);
 *        corio__asan_finish_switch(fake, NULL, NULL);       (back on "from" again)
 *
 *    fake must be a local of the suspending function (or per-context storage), because
 *    several contexts are suspended at once. When "to" is the scheduler, to_lo/to_size are
 *    the scheduler stack's bounds recorded in 2.
 *
 * 2. The first thing the entry function of a fresh coroutine does, before any other code that
 *    could touch the stack in an instrumented way (i.e. at the top of the entry function):
 *
 *        const void *prev_lo; size_t prev_size;
 *        corio__asan_finish_switch(NULL, &prev_lo, &prev_size);
 *
 *    prev_lo/prev_size are the bounds of the stack that was just left. When that was the
 *    scheduler's own stack (the thread stack), store them: they are the to_lo/to_size for
 *    every later switch back to the scheduler. (Also fine: record them once in the first
 *    task of the scheduler; the thread stack does not move.)
 *
 * 3. The final switch away from a dying coroutine (it will never be resumed; its stack goes
 *    back to the pool) passes NULL, which tells ASan to destroy the fiber's fake stack:
 *
 *        corio__asan_start_switch(NULL, to_lo, to_size);
 *        corio__switch(&dying->regs, &to->regs);            (never returns)
 *
 *    The context that is resumed runs its own finish (step 1's third line, or step 2).
 *
 * corio__stack_get/put unpoison the whole stack under ASan, because a coroutine that never
 * returns leaves its frames' redzones poisoned in the shadow memory.
 *
 * Without ASan both helpers compile to nothing.
 * ---------------------------------------------------------------------------------------- */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORIO__ASAN 1
#endif
#endif
#if !defined(CORIO__ASAN) && defined(__SANITIZE_ADDRESS__)
#define CORIO__ASAN 1
#endif
#ifndef CORIO__ASAN
#define CORIO__ASAN 0
#endif

#if CORIO__ASAN
#include <sanitizer/common_interface_defs.h>
#endif

/* ------------------------------------------------------------------------------------------
 * ThreadSanitizer fiber annotations
 *
 * TSan keeps a shadow call stack and a vector clock per thread. Unless it is told about every
 * switch it pushes the frames of all tasks on the thread's one shadow stack, which then shows
 * the wrong frames in reports and overflows (a task that ends by switching away never pops its
 * frames; a few tens of thousands of tasks crash the run). So each coroutine stack has a TSan
 * fiber: stack.c creates it in corio__stack_get and destroys it in
 * corio__stack_put (which the scheduler calls only once the task has switched away for good),
 * and corio__asan_start_switch, which already brackets every corio__switch, also switches TSan
 * to the fiber of the stack at to_lo, or to the thread's own fiber when to_lo is not a pool
 * stack (the scheduler's stack, to_lo NULL). The scheduler needs nothing beyond the ASan
 * protocol above. A switch orders the two fibers (flags 0), as it really does: tasks of one
 * scheduler take turns and never race; tasks of different threads still can.
 *
 * The fibers are kept per thread, since a task lives and dies on its scheduler's thread. The
 * thread's own fiber is recorded by corio__stack_thread_init, or at the first switch into a
 * pool stack, which always comes from the thread's own stack.
 *
 * Without TSan this compiles to nothing.
 * ---------------------------------------------------------------------------------------- */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CORIO__TSAN 1
#endif
#endif
#if !defined(CORIO__TSAN) && defined(__SANITIZE_THREAD__)
#define CORIO__TSAN 1
#endif
#ifndef CORIO__TSAN
#define CORIO__TSAN 0
#endif

#if CORIO__TSAN
#include <sanitizer/tsan_interface.h>
/* stack.c: the fiber of the pool stack starting at lo, else the calling thread's own. */
void *corio__tsan_fiber_of(const void *lo);
#endif

static inline void corio__asan_start_switch(void **fake_stack_save, const void *to_lo,
                                            size_t to_size)
{
#if CORIO__ASAN
    __sanitizer_start_switch_fiber(fake_stack_save, to_lo, to_size);
#else
    (void)fake_stack_save;
    (void)to_lo;
    (void)to_size;
#endif
#if CORIO__TSAN
    /* Last thing before the switch: TSan must not see an access of "from" after this. */
    __tsan_switch_to_fiber(corio__tsan_fiber_of(to_lo), 0);
#endif
}

static inline void corio__asan_finish_switch(void *fake_stack_save, const void **from_lo,
                                             size_t *from_size)
{
#if CORIO__ASAN
    __sanitizer_finish_switch_fiber(fake_stack_save, from_lo, from_size);
#else
    (void)fake_stack_save;
    (void)from_lo;
    (void)from_size;
#endif
}

#endif /* CORIO_SWITCH_H */
