/* The readiness engine's kqueue flavour (src/unix/ready.c): the system's declarations on
 * FreeBSD and macOS; elsewhere a copy of the few FreeBSD declarations the engine uses, so
 * that the flavour is built on every POSIX system and run by the tests on Linux, over a
 * stand-in for kqueue() and kevent() that the tests install (afs__sys.kq_open/kq_event). */
#ifndef AFS_KQ_H
#define AFS_KQ_H

#if defined(__FreeBSD__) || defined(__APPLE__)
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#define AFS_HAVE_KQUEUE 1
#else
#include <stdint.h>
#include <time.h>

struct kevent {
    uintptr_t      ident;  /* the descriptor */
    short          filter; /* EVFILT_* */
    unsigned short flags;  /* EV_* */
    unsigned int   fflags;
    int64_t        data;   /* EV_ERROR: the errno of a change */
    void          *udata;
};

#define EVFILT_READ  (-1)
#define EVFILT_WRITE (-2)
#define EV_ADD       0x0001
#define EV_DELETE    0x0002
#define EV_CLEAR     0x0020 /* edge-triggered: the state is reset once reported */
#define EV_ERROR     0x4000
#define EV_EOF       0x8000

#define EV_SET(kevp, a, b, c, d, e, f)                                                         \
    (*(kevp) = (struct kevent){.ident = (a), .filter = (b), .flags = (c), .fflags = (d),      \
                               .data = (e), .udata = (f)})
#endif

#endif
