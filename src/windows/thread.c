/* Windows threads, clock and CPU count behind platform.h: SRW locks, condition variables,
 * _beginthreadex (so the C runtime's per-thread state is set up), QueryPerformanceCounter. */
#include "internal.h"

#include <process.h>
#include <stdlib.h>

void afs__mutex_init(afs__mutex *m) { InitializeSRWLock(m); }
void afs__mutex_destroy(afs__mutex *m) { (void)m; /* SRW locks hold no resources */ }
void afs__mutex_lock(afs__mutex *m) { AcquireSRWLockExclusive(m); }
void afs__mutex_unlock(afs__mutex *m) { ReleaseSRWLockExclusive(m); }
void afs__cond_init(afs__cond *c) { InitializeConditionVariable(c); }
void afs__cond_destroy(afs__cond *c) { (void)c; }
void afs__cond_signal(afs__cond *c) { WakeConditionVariable(c); }
void afs__cond_broadcast(afs__cond *c) { WakeAllConditionVariable(c); }

void afs__cond_wait(afs__cond *c, afs__mutex *m)
{
    AFS_CHECK(SleepConditionVariableSRW(c, m, INFINITE, 0), "SleepConditionVariableSRW failed");
}

bool afs__cond_timedwait(afs__cond *c, afs__mutex *m, int64_t ns)
{
    /* Milliseconds, rounded up: a wait is never shorter than asked. */
    int64_t ms = ns <= 0 ? 0 : (ns + 999999) / 1000000;
    if (SleepConditionVariableSRW(c, m, ms >= INFINITE ? INFINITE - 1 : (DWORD)ms, 0))
        return true;
    AFS_CHECK(GetLastError() == ERROR_TIMEOUT, "SleepConditionVariableSRW failed");
    return false;
}

struct start {
    void (*fn)(void *);
    void *arg;
};

static unsigned __stdcall trampoline(void *arg)
{
    struct start s = *(struct start *)arg;
    free(arg);
    s.fn(s.arg);
    return 0;
}

int afs__thread_start(afs__thread *t, void (*fn)(void *), void *arg)
{
    struct start *s = malloc(sizeof *s);
    if (!s)
        return -ENOMEM;
    s->fn = fn;
    s->arg = arg;
    /* Workers only call ReadFile/WriteFile: reserve a small stack, as on POSIX. */
    uintptr_t h = _beginthreadex(NULL, 256 * 1024, trampoline, s,
                                 STACK_SIZE_PARAM_IS_A_RESERVATION, NULL);
    if (h == 0) {
        int err = errno == EAGAIN ? -EAGAIN : -ENOMEM;
        free(s);
        return err;
    }
    *t = (HANDLE)h;
    return 0;
}

void afs__thread_join(afs__thread t)
{
    AFS_CHECK(WaitForSingleObject(t, INFINITE) == WAIT_OBJECT_0, "WaitForSingleObject failed");
    CloseHandle(t);
}

unsigned afs__cpu_count(void)
{
    DWORD n = GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
    if (n == 0) {
        SYSTEM_INFO si;
        GetSystemInfo(&si);
        n = si.dwNumberOfProcessors;
    }
    return n > 0 ? (unsigned)n : 1;
}

unsigned afs__cpu_usable(void)
{
    DWORD_PTR proc = 0, sys = 0;
    if (GetProcessAffinityMask(GetCurrentProcess(), &proc, &sys) && proc) {
        unsigned n = 0;
        for (; proc; proc &= proc - 1)
            n++;
        return n;
    }
    return afs__cpu_count();
}

int afs__thread_pin(unsigned nth)
{
    DWORD_PTR proc = 0, sys = 0;
    if (!GetProcessAffinityMask(GetCurrentProcess(), &proc, &sys) || !proc)
        return -EINVAL;
    unsigned n = afs__cpu_usable();
    unsigned want = nth % n;
    for (unsigned bit = 0; bit < sizeof proc * 8; bit++) {
        DWORD_PTR m = (DWORD_PTR)1 << bit;
        if ((proc & m) && want-- == 0)
            return SetThreadAffinityMask(GetCurrentThread(), m) ? 0 : -EINVAL;
    }
    return -EINVAL;
}

int64_t afs__now_ns(void)
{
    static LARGE_INTEGER freq; /* constant since boot; a racy first store writes the same */
    if (freq.QuadPart == 0)
        QueryPerformanceFrequency(&freq);
    LARGE_INTEGER c;
    QueryPerformanceCounter(&c);
    /* Split so that counter * 1e9 cannot overflow. */
    int64_t f = freq.QuadPart;
    return (c.QuadPart / f) * 1000000000 + (c.QuadPart % f) * 1000000000 / f;
}

bool afs__now_reached(int64_t t)
{
    return afs__now_ns() >= t; /* no coarse clock on the performance counter's scale */
}
