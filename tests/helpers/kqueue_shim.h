/* A stand-in for kqueue() and kevent() on Linux, over epoll, so that the readiness engine's
 * kqueue flavour (src/unix/ready.c) runs in the tests where the system has no kqueue. It does
 * what that flavour asks of the real calls and no more:
 * - EVFILT_READ and EVFILT_WRITE on descriptors, with EV_ADD (EV_CLEAR: edge-triggered, else
 *   level-triggered; both filters of one descriptor take the same mode) and EV_DELETE; a
 *   filter's udata comes back with its events; adding reports the state at once, as
 *   kqueue does;
 * - EV_EOF on a read event when the peer has shut its side, or on either on a hang-up or an
 *   error;
 * - a change that fails makes kevent() return -1 with errno set (no EV_RECEIPT);
 * - nevents of at least 2 (one descriptor may give a read and a write event).
 * The descriptor kqueue_shim_open() returns is the epoll descriptor: close() ends it, and
 * poll() or io_uring can wait on it, as on a kqueue. */
#ifndef AFS_TEST_KQUEUE_SHIM_H
#define AFS_TEST_KQUEUE_SHIM_H

#include "../../src/unix/kq.h" /* struct kevent and the EV_* and EVFILT_* values */

int kqueue_shim_open(void);
int kqueue_shim_event(int kq, const struct kevent *changes, int nchanges, struct kevent *events,
                      int nevents, const struct timespec *timeout);

#endif
