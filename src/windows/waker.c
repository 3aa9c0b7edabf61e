/* The waker on Windows: an auto-reset event, which the threads and sync backends wait on.
 * When the iocp backend attaches its completion port, a signal also posts a wake packet
 * there, so that the backend's one GetQueuedCompletionStatusEx waits for both. */
#include "internal.h"

int afs__waker_open(afs__waker *w)
{
    HANDLE ev = CreateEventW(NULL, FALSE, FALSE, NULL);
    if (!ev)
        return afs__win_errno(GetLastError());
    w->fd = (intptr_t)ev;
    w->wfd = 0;
    w->armed = 0;
    return 0;
}

void afs__waker_close(afs__waker *w)
{
    CloseHandle((HANDLE)w->fd);
    w->fd = 0;
    w->wfd = 0;
}

void afs__waker_set_port(afs__waker *w, HANDLE port)
{
    InterlockedExchangePointer((void *volatile *)&w->wfd, port);
}

void afs__waker_signal(afs__waker *w)
{
    /* One signal per wait is enough: skip it while one is still pending. */
    if (InterlockedExchange((volatile LONG *)&w->armed, 1))
        return;
    HANDLE port = InterlockedCompareExchangePointer((void *volatile *)&w->wfd, NULL, NULL);
    if (port)
        PostQueuedCompletionStatus(port, 0, AFS__WAKE_KEY, NULL);
    SetEvent((HANDLE)w->fd);
}

void afs__waker_drain(afs__waker *w)
{
    /* Consume first, then clear `armed`. The other order loses wakes for good: a signal
     * landing between the two would be consumed while `armed` stays 1, so every later
     * signal would be skipped. This way a signal in between is skipped but not lost: its
     * sender queued its work before signalling, and the owner looks for work after this. */
    WaitForSingleObject((HANDLE)w->fd, 0);
    InterlockedExchange((volatile LONG *)&w->armed, 0);
}

int afs__waker_wait(afs__waker *w, int64_t timeout_ns)
{
    DWORD ms = INFINITE;
    if (timeout_ns >= 0) {
        int64_t v = (timeout_ns + 999999) / 1000000;
        ms = v >= (int64_t)INFINITE ? INFINITE - 1 : (DWORD)v;
    }
    /* The event is auto-reset: a successful wait consumed the signal; put it back so that
     * afs__waker_drain() (which the caller runs next) sees the same state as on POSIX. */
    if (WaitForSingleObject((HANDLE)w->fd, ms) != WAIT_OBJECT_0)
        return 0;
    SetEvent((HANDLE)w->fd);
    return 1;
}
