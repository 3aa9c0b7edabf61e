/* Counts the system calls the library makes, independently of the counters it keeps about
 * itself (afs_stats): every entry of the system-call table (afs__sys) that reaches the kernel
 * is wrapped by a counter and passes the call on. Used by the tests that claim "one
 * submission" and by the benchmarks that report system calls per I/O.
 *
 * Counted: io_uring_enter (every call, and those that hand SQEs to the kernel), io_submit,
 * lio_listio, and the transfers the thread pool and the inline path make (pread, pwrite,
 * preadv, pwritev, fsync), from any thread. Not counted: waits that are not io_uring_enter
 * (poll on the eventfd, io_getevents, aio_suspend, kevent) and metadata calls.
 *
 * Usage: sc_install() after the context exists (or before; the table is global), read
 * sc_get() before and after, sc_uninstall() at the end. Needs src/core on the include path
 * and the library linked statically, and the library's AFS_DEFS (which backends it has). */
#ifndef AFS_TEST_SYSCOUNT_H
#define AFS_TEST_SYSCOUNT_H

#include "platform.h"

#include <stdatomic.h>
#include <string.h>

/* AFS_HAVE_URING, AFS_HAVE_LIBAIO, AFS_HAVE_POSIX_AIO: the backends the library was built
 * with (CMake's AFS_DEFS, given to the programs that include this header). */
#ifdef AFS_HAVE_URING
#include <liburing.h>
#define SC_URING 1
#endif
#ifdef AFS_HAVE_LIBAIO
/* libaio.h's prototype, without its header: it clashes with <linux/aio_abi.h>, which some
 * tests include. */
int io_submit(struct io_context *ctx, long nr, struct iocb *ios[]);
#define SC_LAIO 1
#endif
#ifdef AFS_HAVE_POSIX_AIO
#include <aio.h>
#define SC_PAIO 1
#endif

struct sc_counts {
    unsigned long uring_enters;  /* io_uring_enter calls, waits included */
    unsigned long uring_submits; /* io_uring_enter calls that handed SQEs to the kernel */
    unsigned long io_submits;    /* io_submit calls (libaio) */
    unsigned long listios;       /* lio_listio calls (posix-aio) */
    unsigned long transfers;     /* pread, pwrite, preadv, pwritev, fsync (pool and inline) */
};

static atomic_ulong sc_n[5];
static struct afs__syscalls sc_saved;
static int sc_on;

static inline ssize_t sc_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    atomic_fetch_add(&sc_n[4], 1);
    return sc_saved.pread(fd, buf, len, off);
}

static inline ssize_t sc_pwrite(afs__fd_t fd, const void *buf, size_t len, uint64_t off)
{
    atomic_fetch_add(&sc_n[4], 1);
    return sc_saved.pwrite(fd, buf, len, off);
}

static inline ssize_t sc_preadv(afs__fd_t fd, const struct iovec *iov, int n, uint64_t off)
{
    atomic_fetch_add(&sc_n[4], 1);
    return sc_saved.preadv(fd, iov, n, off);
}

static inline ssize_t sc_pwritev(afs__fd_t fd, const struct iovec *iov, int n, uint64_t off)
{
    atomic_fetch_add(&sc_n[4], 1);
    return sc_saved.pwritev(fd, iov, n, off);
}

static inline int sc_fsync(afs__fd_t fd, bool datasync)
{
    atomic_fetch_add(&sc_n[4], 1);
    return sc_saved.fsync(fd, datasync);
}

#ifdef SC_URING
static inline int sc_uring_enter(struct io_uring *ring, unsigned wait_nr,
                                 struct __kernel_timespec *ts)
{
    /* liburing enters the kernel only with SQEs to hand over or completions to wait for
     * (no SQPOLL here); a call with neither is no system call. */
    bool submits = io_uring_sq_ready(ring) > 0;
    if (submits || wait_nr)
        atomic_fetch_add(&sc_n[0], 1);
    if (submits)
        atomic_fetch_add(&sc_n[1], 1);
    if (sc_saved.uring_enter)
        return sc_saved.uring_enter(ring, wait_nr, ts);
    return afs__uring_enter_real(ring, wait_nr, ts);
}
#endif

#ifdef SC_LAIO
static inline int sc_laio_submit(struct io_context *aio, long nr, struct iocb **iocbs)
{
    atomic_fetch_add(&sc_n[2], 1);
    return sc_saved.laio_submit ? sc_saved.laio_submit(aio, nr, iocbs)
                                : io_submit(aio, nr, iocbs);
}
#endif

#ifdef SC_PAIO
static inline int sc_listio(int mode, struct aiocb *const list[], int n, struct sigevent *sev)
{
    atomic_fetch_add(&sc_n[3], 1);
    return sc_saved.paio_listio ? sc_saved.paio_listio(mode, list, n, sev)
                                : lio_listio(mode, list, n, sev);
}
#endif

/* Wraps the current table (faults a test installed first stay under the counters). */
static inline void sc_install(void)
{
    if (sc_on++)
        return;
    sc_saved = afs__sys;
    afs__sys.pread = sc_pread;
    afs__sys.pwrite = sc_pwrite;
    afs__sys.preadv = sc_preadv;
    afs__sys.pwritev = sc_pwritev;
    afs__sys.fsync = sc_fsync;
#ifdef SC_URING
    afs__sys.uring_enter = sc_uring_enter;
#endif
#ifdef SC_LAIO
    afs__sys.laio_submit = sc_laio_submit;
#endif
#ifdef SC_PAIO
    afs__sys.paio_listio = sc_listio;
#endif
}

static inline void sc_uninstall(void)
{
    if (sc_on && !--sc_on)
        afs__sys = sc_saved;
}

static inline struct sc_counts sc_get(void)
{
    return (struct sc_counts){atomic_load(&sc_n[0]), atomic_load(&sc_n[1]),
                              atomic_load(&sc_n[2]), atomic_load(&sc_n[3]),
                              atomic_load(&sc_n[4])};
}

/* Calls that hand work to the kernel between two readings: submitting io_uring_enters,
 * io_submits and lio_listios. */
static inline unsigned long sc_submits(struct sc_counts a, struct sc_counts b)
{
    return (b.uring_submits - a.uring_submits) + (b.io_submits - a.io_submits) +
           (b.listios - a.listios);
}

#endif
