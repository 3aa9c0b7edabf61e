/* The waker on Linux: an eventfd, which io_uring can read and libaio can signal. */
#include "internal.h"

#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

int afs__waker_open(afs__waker *w)
{
    int fd = eventfd(0, EFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    w->fd = w->wfd = fd;
    w->armed = 0;
    return 0;
}

void afs__waker_close(afs__waker *w)
{
    close((int)w->fd);
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
    /* EAGAIN means the counter is already huge: the owner will wake anyway. */
}

void afs__waker_drain(afs__waker *w)
{
    /* Consume, then clear `armed`. The other order loses wake-ups: a signal landing between
     * the two would be consumed while `armed` stays set, and later signals would skip their
     * write. This way a signal racing with us is either read here or writes again; what it
     * announced (pool completions, a wake request) is looked at after the drain. */
    uint64_t v;
    ssize_t r;
    do
        r = read((int)w->fd, &v, sizeof v);
    while (r < 0 && errno == EINTR);
    __atomic_store_n(&w->armed, 0, __ATOMIC_RELEASE);
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
