/* The waker on Unix. On Linux an eventfd, which io_uring can read and libaio can signal; on
 * the BSDs and macOS a non-blocking pipe, whose read end poll() waits on and the posix-aio
 * backend watches in its kqueue (EVFILT_READ; EVFILT_USER would save an fd, but OpenBSD
 * lacked it for years). Only opening and closing differ: a signal writes 8 bytes either way
 * (one eventfd count, or 8 bytes of a pipe, atomic below PIPE_BUF), and a drain reads until
 * nothing is left. AFS_HAVE_EVENTFD=0 builds the pipe on Linux too, for the tests. */
#include "internal.h"

#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#ifndef AFS_HAVE_EVENTFD
#if defined(__linux__)
#define AFS_HAVE_EVENTFD 1
#else
#define AFS_HAVE_EVENTFD 0
#endif
#endif

#if AFS_HAVE_EVENTFD
#include <sys/eventfd.h>

static int waker_fds(int p[2])
{
    /* Blocking: io_uring's read of it must wait, not fail with EAGAIN. A drain only reads
     * after the fd was seen readable, and one read takes the whole count. */
    p[0] = p[1] = eventfd(0, EFD_CLOEXEC);
    return p[0] < 0 ? -errno : 0;
}
#else
static int waker_fds(int p[2])
{
#if defined(__APPLE__)
    /* No pipe2() on macOS: a fork+exec racing between these calls may inherit the fds. */
    if (pipe(p) < 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        if (fcntl(p[i], F_SETFD, FD_CLOEXEC) < 0 ||
            fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK) < 0) {
            int err = -errno;
            close(p[0]);
            close(p[1]);
            return err;
        }
    }
    return 0;
#else
    return pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0 ? -errno : 0;
#endif
}
#endif

int afs__waker_open(afs__waker *w)
{
    int p[2];
    int err = waker_fds(p);
    if (err < 0)
        return err;
    w->fd = p[0];
    w->wfd = p[1];
    w->armed = 0;
    return 0;
}

void afs__waker_close(afs__waker *w)
{
    close((int)w->fd);
    if (w->wfd != w->fd)
        close((int)w->wfd);
    w->fd = w->wfd = -1;
}

void afs__waker_signal(afs__waker *w)
{
    /* One write per wait is enough: skip it while a signal is still pending. */
    if (__atomic_exchange_n(&w->armed, 1, __ATOMIC_ACQ_REL))
        return;
    uint64_t one = 1;
    ssize_t r;
    do
        r = write((int)w->wfd, &one, sizeof one);
    while (r < 0 && errno == EINTR);
    /* EAGAIN: the counter or the pipe is full of earlier signals; the owner wakes anyway. */
}

void afs__waker_drain(afs__waker *w)
{
    /* Consume, then clear `armed`. The other order loses wake-ups: a signal landing between
     * the two would be consumed while `armed` stays set, and later signals would skip their
     * write. This way a signal racing with us is either read here or writes again; what it
     * announced (pool completions, a wake request) is looked at after the drain.
     * An eventfd read returns 8 bytes and empties it; a pipe is read until it is empty. */
    char buf[64];
    ssize_t r;
    do
        r = read((int)w->fd, buf, sizeof buf);
    while (r == (ssize_t)sizeof buf || (r < 0 && errno == EINTR));
    __atomic_store_n(&w->armed, 0, __ATOMIC_RELEASE);
}

/* The monotonic clock (this file is also built alone, for its tests). */
static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Milliseconds (rounded up) in ns nanoseconds, at most INT32_MAX. */
static int ms_of(int64_t ns)
{
    if (ns <= 0)
        return 0;
    return ns > (int64_t)INT32_MAX * 1000000 ? INT32_MAX : (int)((ns + 999999) / 1000000);
}

int afs__waker_wait(afs__waker *w, int64_t timeout_ns)
{
    struct pollfd p = {.fd = (int)w->fd, .events = POLLIN};
    /* A signal ends poll early: the wait goes on for what is left of the timeout, not for
     * the whole of it again (signals more frequent than the timeout would make it endless).
     * The clock is read only for a wait with a timeout to keep. */
    int64_t end = 0;
    if (timeout_ns > 0) {
        int64_t start = now_ns();
        end = timeout_ns > INT64_MAX - start ? INT64_MAX : start + timeout_ns;
    }
    int ms = timeout_ns < 0 ? -1 : ms_of(timeout_ns);
    int r;
    while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR)
        if (timeout_ns > 0)
            ms = ms_of(end - now_ns());
    return r > 0;
}
