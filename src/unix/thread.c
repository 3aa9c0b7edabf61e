/* POSIX threads, clock and CPU count behind platform.h. */
#include "internal.h"

#ifdef __linux__
#include <sched.h>
#endif
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PCHECK(call) AFS_CHECK((call) == 0, #call " failed")

void afs__mutex_init(afs__mutex *m) { PCHECK(pthread_mutex_init(m, NULL)); }
void afs__mutex_destroy(afs__mutex *m) { PCHECK(pthread_mutex_destroy(m)); }
void afs__mutex_lock(afs__mutex *m) { PCHECK(pthread_mutex_lock(m)); }
void afs__mutex_unlock(afs__mutex *m) { PCHECK(pthread_mutex_unlock(m)); }
void afs__cond_init(afs__cond *c)
{
#ifdef __APPLE__
    PCHECK(pthread_cond_init(c, NULL)); /* timed waits are relative there */
#else
    /* Timed waits on the monotonic clock: a change of the wall clock does not move them. */
    pthread_condattr_t a;
    PCHECK(pthread_condattr_init(&a));
    PCHECK(pthread_condattr_setclock(&a, CLOCK_MONOTONIC));
    PCHECK(pthread_cond_init(c, &a));
    pthread_condattr_destroy(&a);
#endif
}
void afs__cond_destroy(afs__cond *c) { PCHECK(pthread_cond_destroy(c)); }
void afs__cond_signal(afs__cond *c) { PCHECK(pthread_cond_signal(c)); }
void afs__cond_broadcast(afs__cond *c) { PCHECK(pthread_cond_broadcast(c)); }
void afs__cond_wait(afs__cond *c, afs__mutex *m) { PCHECK(pthread_cond_wait(c, m)); }

bool afs__cond_timedwait(afs__cond *c, afs__mutex *m, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    int err;
#ifdef __APPLE__
    struct timespec rel = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    err = pthread_cond_timedwait_relative_np(c, m, &rel);
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t nsec = ts.tv_nsec + ns % 1000000000;
    ts.tv_sec += (time_t)(ns / 1000000000 + nsec / 1000000000);
    ts.tv_nsec = (long)(nsec % 1000000000);
    err = pthread_cond_timedwait(c, m, &ts);
#endif
    AFS_CHECK(err == 0 || err == ETIMEDOUT, "pthread_cond_timedwait failed");
    return err == 0;
}

struct start {
    void (*fn)(void *);
    void *arg;
};

static void *trampoline(void *arg)
{
    struct start s = *(struct start *)arg;
    free(arg);
    s.fn(s.arg);
    return NULL;
}

int afs__thread_start(afs__thread *t, void (*fn)(void *), void *arg)
{
    struct start *s = afs__sys.malloc(sizeof *s);
    if (!s)
        return -ENOMEM;
    s->fn = fn;
    s->arg = arg;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* Workers only call pread/pwrite: a small stack keeps a full pool cheap. */
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int err = pthread_create(t, &attr, trampoline, s);
    pthread_attr_destroy(&attr);
    if (err) {
        free(s);
        return -err;
    }
    return 0;
}

void afs__thread_join(afs__thread t)
{
    PCHECK(pthread_join(t, NULL));
}

unsigned afs__cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

#ifdef __linux__
unsigned afs__cpu_usable(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return (unsigned)n;
    }
    return afs__cpu_count();
}

int afs__thread_pin(unsigned nth)
{
    cpu_set_t set, one;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -errno;
    int n = CPU_COUNT(&set);
    if (n <= 0)
        return -EINVAL;
    unsigned want = nth % (unsigned)n;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set))
            continue;
        if (want-- == 0) {
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            return -pthread_setaffinity_np(pthread_self(), sizeof one, &one);
        }
    }
    return -EINVAL;
}
#else
unsigned afs__cpu_usable(void)
{
    return afs__cpu_count();
}

int afs__thread_pin(unsigned nth)
{
    (void)nth;
    return -ENOTSUP; /* macOS and the BSDs differ here; pinning is a hint */
}
#endif

int64_t afs__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool afs__now_reached(int64_t t)
{
#ifdef CLOCK_MONOTONIC_COARSE
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0) {
        int64_t coarse = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        if (coarse >= t)
            return true; /* the precise clock is at least as far */
        if (t - coarse > AFS__COARSE_MARGIN_NS)
            return false;
    }
#endif
    return afs__now_ns() >= t;
}

static int64_t cpu_clock_ns(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return -1;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t afs__thread_cpu_ns(void)
{
    return cpu_clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

int64_t afs__proc_cpu_ns(void)
{
    return cpu_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
}
