/* The switch.h interface on Windows, with Win32 fibers (CORIO__SWITCH_FIBER in switch.h).
 *
 * Windows saves everything a context needs in SwitchToFiber: the callee-saved registers
 * (xmm6-15 included), the TIB's stack fields and exception list, and, because every fiber is
 * created with FIBER_FLAG_FLOAT_SWITCH, the x87 control word and MXCSR. It also gives every
 * fiber a stack with guard pages. What corio adds here: the thread's own fiber (converted at
 * the thread's first switch and remembered per thread), the start routine, and the stack
 * overflow report.
 *
 * Ownership: a fiber belongs to the corio__stack it was created for (stack_win.c), never to
 * the regs. The scheduler ends a task by switching away from it for good and the next context
 * to run puts its stack back, so DeleteFiber is never called on the running fiber. */
#include "stack.h"
#include "switch.h"

#include <errno.h>
#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#if !CORIO__SWITCH_FIBER
#error "switch_fiber.c is the Windows context switch"
#endif

/* Stack the overflow handler has left once the guard page is hit: for the report and for
 * abort()'s SIGABRT handlers. It comes out of the reserve, so it is added to the stack size. */
#define CORIO__GUARANTEE ((ULONG)32 * 1024)
/* Committed at creation; the rest of the reserve is committed as the guard page moves down. */
#define CORIO__COMMIT ((SIZE_T)16 * 1024)

static _Thread_local void                *thread_fiber; /* the thread's own, once converted */
/* The corio fiber running on this thread (NULL: the thread's own fiber), for the overflow
 * handler. Each context sets it when it starts or resumes. */
static _Thread_local struct corio__fiber *running;

/* GetCurrentFiber() reads gs:[0x20]; GCC 12 takes the inlined __readgsqword for an access
 * to a zero-length array (-Warray-bounds, an error under ASYNCFS_WERROR). */
static void *current_fiber(void)
{
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#endif
    return GetCurrentFiber();
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

static void fatal(const char *what)
{
    DWORD n;
    char msg[200];
    int len = snprintf(msg, sizeof msg, "corio: %s (Windows error %lu)\n", what,
                       (unsigned long)GetLastError());
    if (len > 0)
        WriteFile(GetStdHandle(STD_ERROR_HANDLE), msg, (DWORD)len, &n, NULL);
    abort();
}

/* Windows commits a fiber's stack on demand, moving a guard page down, and raises
 * EXCEPTION_STACK_OVERFLOW when that guard reaches the guaranteed area at the bottom. Wine 8
 * commits the whole stack at once and keeps a single guard page just above the last, so the
 * exception is raised with less than a page left and its dispatch dies of a second overflow.
 * When the page just above the guaranteed area is committed and not a guard page already,
 * making it one restores the Windows behaviour: the guard then moves into the guaranteed area
 * and the exception comes with CORIO__GUARANTEE bytes left. */
static void guard_committed_stack(void)
{
    MEMORY_BASIC_INFORMATION here, at;
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    if (VirtualQuery(&here, &here, sizeof here) == 0)
        return;
    uintptr_t page = (uintptr_t)here.AllocationBase + si.dwPageSize + CORIO__GUARANTEE;
    /* Only well below the frames of this start routine (a tiny stack has no room for it). */
    if (page + 64 * 1024 >= (uintptr_t)&here ||
        VirtualQuery((void *)page, &at, sizeof at) == 0)
        return;
    if (at.State == MEM_COMMIT && !(at.Protect & (PAGE_GUARD | PAGE_NOACCESS))) {
        DWORD old;
        VirtualProtect((void *)page, si.dwPageSize, PAGE_READWRITE | PAGE_GUARD, &old);
    }
}

/* The caller's FP control state, and setting it with no exception flags raised. */
static void fp_save(struct corio__fiber *f)
{
#if defined(__x86_64__)
    __asm__ volatile("fnstcw %0" : "=m"(f->x87cw));
    __asm__ volatile("stmxcsr %0" : "=m"(f->mxcsr));
#else
    fegetenv(&f->fenv);
#endif
}

static void fp_restore(const struct corio__fiber *f)
{
#if defined(__x86_64__)
    unsigned mxcsr = f->mxcsr & ~0x3fu; /* the six exception flags */
    __asm__ volatile("fnclex");
    __asm__ volatile("fldcw %0" : : "m"(f->x87cw));
    __asm__ volatile("ldmxcsr %0" : : "m"(mxcsr));
#else
    fesetenv(&f->fenv);
    feclearexcept(FE_ALL_EXCEPT);
#endif
}

static void WINAPI fiber_start(void *param)
{
    /* Once per fiber: SetThreadStackGuarantee is per fiber on Windows (saved with the fiber's
     * TIB fields); per thread under wine, where corio__fiber_thread_init has set it already.
     * Failure only costs the report. */
    ULONG g = CORIO__GUARANTEE;
    SetThreadStackGuarantee(&g);
    guard_committed_stack();
    struct corio__fiber *volatile f = param;
    /* corio__switch comes back here when a parked fiber is bound to a new entry. */
    __builtin_setjmp(f->top);
    running = f;
    f->restart = 0;
    /* The FP control state of corio__regs_init's caller, with no exception flags raised, as
     * a new thread starts with its creator's. */
    fp_restore(f);
    f->started = 1;
    f->entry(f->arg);
    fatal("a coroutine's entry function returned");
}

int corio__fiber_create(struct corio__fiber *f, size_t stack_size)
{
    f->stack_size = stack_size;
    f->entry = NULL;
    f->arg = NULL;
    f->started = 0;
    f->restart = 0;
    f->handle = CreateFiberEx(CORIO__COMMIT, stack_size + CORIO__GUARANTEE,
                              FIBER_FLAG_FLOAT_SWITCH, fiber_start, f);
    return f->handle != NULL ? 0 : -ENOMEM;
}

void corio__fiber_delete(struct corio__fiber *f)
{
    if (f->handle == NULL)
        return;
    /* DeleteFiber on the running fiber ends the thread. */
    if (f == running)
        fatal("deleting the running fiber");
    DeleteFiber(f->handle);
    f->handle = NULL;
    f->started = 0;
}

void corio__regs_init(struct corio__regs *r, void *lo, size_t size, corio__entry_fn *entry,
                      void *arg)
{
    struct corio__fiber *f = lo;
    (void)size;
    if (f->handle == NULL && corio__fiber_create(f, f->stack_size) < 0)
        fatal("CreateFiberEx failed");
    if (f == running)
        fatal("corio__regs_init: the fiber is running");
    /* A fiber that ran an entry is parked in its last switch: restart it there. */
    f->restart = f->started;
    f->entry = entry;
    f->arg = arg;
    fp_save(f);
    r->fiber = f->handle;
    r->rec = f;
}

/* The record of the fiber a switch enters (NULL: a thread's own fiber). Read by that fiber
 * right after it resumes, before anything else runs on this thread. */
static _Thread_local struct corio__fiber *entering;

void corio__switch(struct corio__regs *from, struct corio__regs *to)
{
    if (from == to || to->fiber == NULL)
        fatal("corio__switch: bad target");
    if (from->rec == NULL && thread_fiber == NULL) {
        /* The thread's first switch. A thread the application made a fiber stays one. */
        if (IsThreadAFiber())
            thread_fiber = current_fiber();
        else if (!(thread_fiber = ConvertThreadToFiberEx(NULL, FIBER_FLAG_FLOAT_SWITCH)))
            fatal("ConvertThreadToFiberEx failed");
    }
    from->fiber = current_fiber();
    entering = to->rec;
#if defined(__x86_64__)
    /* FIBER_FLAG_FLOAT_SWITCH keeps each fiber's FP control state on Windows; wine keeps only
     * MXCSR. Kept here on this fiber's stack, for both. */
    unsigned short x87cw;
    unsigned       mxcsr;
    __asm__ volatile("fnstcw %0" : "=m"(x87cw));
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
#endif
    SwitchToFiber(to->fiber);
    /* Resumed. `from` may be gone by now (the task this fiber ran has ended and the fiber was
     * bound to a new one): only `entering` says who this is. */
    struct corio__fiber *me = entering;
    running = me;
    if (me != NULL && me->restart)
        __builtin_longjmp(me->top, 1);
#if defined(__x86_64__)
    __asm__ volatile("fldcw %0" : : "m"(x87cw));
    __asm__ volatile("ldmxcsr %0" : : "m"(mxcsr));
#endif
}

/* ------------------------------------------------------------------------------------------
 * Overflow reporting
 * ---------------------------------------------------------------------------------------- */

/* Runs on the overflowed fiber, in the guaranteed stack: formats by hand, no stdio. */
static LONG CALLBACK overflow_handler(EXCEPTION_POINTERS *e)
{
    struct corio__fiber *f = running;
    if (e->ExceptionRecord->ExceptionCode != EXCEPTION_STACK_OVERFLOW || f == NULL)
        return EXCEPTION_CONTINUE_SEARCH; /* not ours: the thread's own stack, or no fault */
    static const char head[] = "corio: task stack overflow (stack size ";
    static const char tail[] = " bytes); raise corio_config.stack_size\n";
    char msg[160], digits[24];
    size_t size = f->stack_size, nd = 0, len = sizeof head - 1;
    do {
        digits[nd++] = (char)('0' + size % 10);
        size /= 10;
    } while (size != 0);
    memcpy(msg, head, len);
    while (nd > 0)
        msg[len++] = digits[--nd];
    memcpy(msg + len, tail, sizeof tail - 1);
    len += sizeof tail - 1;
    DWORD n;
    WriteFile(GetStdHandle(STD_ERROR_HANDLE), msg, (DWORD)len, &n, NULL);
    abort();
}

static BOOL CALLBACK install_handler(INIT_ONCE *once, void *param, void **ctx)
{
    (void)once, (void)param, (void)ctx;
    /* First in the chain: a debugger's or the C runtime's handlers see other exceptions. */
    return AddVectoredExceptionHandler(1, overflow_handler) != NULL;
}

int corio__fiber_thread_init(void)
{
    static INIT_ONCE once = INIT_ONCE_STATIC_INIT;
    static _Thread_local int ready;
    if (ready)
        return 0;
    if (!InitOnceExecuteOnce(&once, install_handler, NULL, NULL))
        return -ENOMEM;
    /* Wine keeps the guarantee per thread, not per fiber: set it for the thread too. */
    ULONG g = CORIO__GUARANTEE;
    SetThreadStackGuarantee(&g);
    ready = 1;
    return 0;
}
