/* The waker on the BSDs and macOS: a non-blocking pipe. The read end is an ordinary fd, so
 * poll() waits on it and the posix-aio backend can watch it in its kqueue (EVFILT_READ).
 * kqueue EVFILT_USER would save one fd, but a pipe is the same everywhere (OpenBSD lacked
 * EVFILT_USER for years) and this file also builds and runs on Linux for testing. */
#include "internal.h"

#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <unistd.h>

static int pipe_cloexec_nonblock(int p[2])
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

int afs__waker_open(afs__waker *w)
{
    int p[2];
    int err = pipe_cloexec_nonblock(p);
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
    close((int)w->wfd);
    w->fd = w->wfd = -1;
}

void afs__waker_signal(afs__waker *w)
{
    /* One byte per wait is enough: skip it while a signal is still pending. */
    if (__atomic_exchange_n(&w->armed, 1, __ATOMIC_ACQ_REL))
        return;
    char one = 1;
    ssize_t r;
    do
        r = write((int)w->wfd, &one, 1);
    while (r < 0 && errno == EINTR);
    /* EAGAIN: the pipe is full of earlier signals, so the owner wakes anyway. */
}

void afs__waker_drain(afs__waker *w)
{
    /* Clear `armed` before reading, so a signal racing with us writes again. */
    __atomic_store_n(&w->armed, 0, __ATOMIC_RELEASE);
    char buf[64];
    ssize_t r;
    do
        r = read((int)w->fd, buf, sizeof buf);
    while (r == (ssize_t)sizeof buf || (r < 0 && errno == EINTR));
}

int afs__waker_wait(afs__waker *w, int64_t timeout_ns)
{
    struct pollfd p = {.fd = (int)w->fd, .events = POLLIN};
    int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
    if (timeout_ns > (int64_t)INT32_MAX * 1000000)
        ms = INT32_MAX;
    int r;
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r > 0;
}
