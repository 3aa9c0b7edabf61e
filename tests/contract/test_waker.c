/* The waker (src/unix/waker.c, src/windows/waker.c): signals sent from other threads while the
 * owner drains are never lost. Threads count what they announce, then signal; the owner waits,
 * drains, and reads the count. A lost wake-up leaves announced work with nothing to wake the
 * owner: its wait runs into the (generous) limit, and the test fails. On Linux this file is
 * built twice, against the eventfd and against the pipe (AFS_HAVE_EVENTFD=0) the BSDs use. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sigaction, pthread_kill, usleep, clock_gettime (also as part of contract) */
#endif
#include <criterion/criterion.h>

#include "internal.h" /* the waker */

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#ifndef _WIN32
#include <signal.h>
#include <time.h>
#include <unistd.h>
#endif

enum { SIGNALLERS = 3, SIGNALS = 100000 };

static afs__waker w;
static atomic_ullong sent;

static void *signaller(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    for (unsigned i = 0; i < SIGNALS; i++) {
        atomic_fetch_add(&sent, 1);
        afs__waker_signal(&w);
        if ((i + id) % 64 == 0)
            sched_yield(); /* vary where the signals land against the owner's drain */
    }
    return NULL;
}

Test(waker, no_wake_up_is_lost_while_the_owner_drains, .timeout = 120)
{
    cr_assert_eq(afs__waker_open(&w), 0);
    atomic_store(&sent, 0);
    pthread_t th[SIGNALLERS];
    for (unsigned i = 0; i < SIGNALLERS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, signaller, (void *)(uintptr_t)i), 0);
    unsigned long long seen = 0, total = (unsigned long long)SIGNALLERS * SIGNALS;
    unsigned long long rounds = 0;
    while (seen < total) {
        /* 10 s: only a lost wake-up waits that long with work announced. */
        int woke = afs__waker_wait(&w, 10LL * 1000 * 1000 * 1000);
        unsigned long long now = atomic_load(&sent);
        if (!woke && now != seen) /* announced at the very end of the wait: its write follows */
            woke = afs__waker_wait(&w, 1000LL * 1000 * 1000);
        cr_assert(woke || now == seen,
                  "lost wake-up: %llu signals announced, %llu seen, after %llu rounds", now,
                  seen, rounds);
        afs__waker_drain(&w);
        seen = atomic_load(&sent); /* what the signals announced is read after the drain */
        rounds++;
    }
    for (unsigned i = 0; i < SIGNALLERS; i++)
        pthread_join(th[i], NULL);
    /* The last signal may have announced itself before the owner's last drain and written
     * after it: one more drain, now that every signaller has returned, empties the waker
     * (drained only when readable: an empty eventfd's read would block). */
    if (afs__waker_wait(&w, 0))
        afs__waker_drain(&w);
    /* Quiet now: nothing pending, and a new signal still wakes the owner. */
    cr_assert_eq(afs__waker_wait(&w, 0), 0, "a drained waker is not readable");
    afs__waker_signal(&w);
    cr_assert_eq(afs__waker_wait(&w, 10LL * 1000 * 1000 * 1000), 1);
    afs__waker_drain(&w);
    cr_assert_eq(afs__waker_wait(&w, 0), 0);
    afs__waker_close(&w);
}

#ifndef _WIN32
/* Signals (a handler without SA_RESTART) every 5 ms while the owner waits 200 ms: the wait
 * still ends at its timeout, not later by the whole timeout again after each signal. */
static atomic_int storm_on;

static void storm_handler(int sig)
{
    (void)sig;
}

static void *storm(void *arg)
{
    pthread_t owner = *(pthread_t *)arg;
    while (atomic_load(&storm_on)) {
        pthread_kill(owner, SIGUSR1);
        usleep(5000);
    }
    return NULL;
}

Test(waker, a_wait_ends_at_its_timeout_while_signals_arrive, .timeout = 20)
{
    struct sigaction sa = {.sa_handler = storm_handler}, old;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, &old), 0);
    cr_assert_eq(afs__waker_open(&w), 0);
    pthread_t self = pthread_self(), th;
    atomic_store(&storm_on, 1);
    cr_assert_eq(pthread_create(&th, NULL, storm, &self), 0);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int woke = afs__waker_wait(&w, 200LL * 1000 * 1000);
    clock_gettime(CLOCK_MONOTONIC, &b);
    atomic_store(&storm_on, 0);
    pthread_join(th, NULL);
    sigaction(SIGUSR1, &old, NULL);
    afs__waker_close(&w);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    cr_assert_eq(woke, 0);
    cr_assert(ms >= 199 && ms < 5000, "a 200 ms wait took %.1f ms", ms);
}
#endif
