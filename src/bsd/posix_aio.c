/* The POSIX AIO backend: aio_read/aio_write/aio_fsync. Native on FreeBSD and macOS; built on
 * Linux too (glibc's AIO) to test the POSIX path, but there it is used only when asked for.
 *
 * Submission. prep stages an op (its struct aiocb lives in the op's backend words, so nothing
 * is allocated per op); enter hands the staged ops to the OS with lio_listio(LIO_NOWAIT) in
 * lists of at most listio_max, and keeps at most proc_max of ours in flight (the per-process
 * AIO limit: FreeBSD vfs.aio.max_aio_queue_per_proc, macOS kern.aioprocmax, 16 by default
 * there). aio_fsync has no list opcode everywhere, so fsync goes alone. When a list fails
 * (EAGAIN: the OS queue is full; EIO: some entries failed) each aiocb is settled by its own
 * status: queued ones stay, finished ones are reported, refused ones are sent again alone
 * (aio_read() gives a definite answer) once completions have made room. The caller never
 * sees EAGAIN.
 *
 * readv/writev go to the core's thread pool (accepts() says no): POSIX AIO has no vectored
 * op, and one aiocb per iovec would need several aiocbs per op (the op has room for one) or
 * one round trip per iovec; the pool does the whole op in one preadv.
 *
 * Completion. FreeBSD: every aiocb posts an EVFILT_AIO kevent to our kqueue (SIGEV_KEVENT),
 * and the same kqueue watches the waker's fd, so one kevent() waits for both, exactly.
 * Elsewhere (macOS, glibc): aio_suspend() over the ops in flight, then aio_error() and
 * aio_return() for each. aio_suspend cannot watch an fd, so a wait with AIO in flight is cut
 * into slices (1 ms, doubling to 10 ms while nothing happens) and the waker is polled between
 * them: AIO completions are seen at once, a wake or a thread-pool completion within one slice;
 * the cost is at most ~1000 cheap system calls a second and only while AIO is in flight (with
 * none in flight the wait is on the waker alone, exact and idle). SIGEV_THREAD notification
 * would be exact on glibc, but costs a thread per completion there, loses the wake when that
 * thread cannot be created, may run after the context is freed, and does not exist for AIO
 * on macOS, the platform this path is for.
 *
 * Cancellation: aio_cancel(), then the op stays in flight until the OS gives its final status
 * (ECANCELED or the result), so its buffer is never handed back while the OS may write to it.
 */
#include "internal.h"

#include <aio.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__FreeBSD__)
#define PAIO_KQUEUE 1
#include <sys/event.h>
#endif
#if defined(__FreeBSD__) || defined(__APPLE__)
#include <sys/sysctl.h>
#include <sys/types.h>
#endif

#define SLICE_MIN_NS  1000000LL  /* first aio_suspend slice */
#define SLICE_MAX_NS  10000000LL /* longest slice: the worst wake latency with AIO in flight */
#define RETRY_NS      1000000LL  /* the OS refused everything and nothing of ours is in flight */
#define SUSPEND_MAX   256        /* aiocbs per aio_suspend: glibc keeps ~40 bytes each on the
                                    stack, and completions are reaped over the whole set */

enum { PAIO_PEND = 1, PAIO_LIVE };

/* What an op keeps in its backend words. */
struct paio_op {
    struct aiocb cb;
    uint8_t      where; /* PAIO_PEND: staged or refused, not with the OS; PAIO_LIVE: the OS has it */
    uint8_t      alone; /* submit with aio_read/aio_write/aio_fsync, not in a list */
};

_Static_assert(sizeof(struct paio_op) <= sizeof(((struct afs__op *)0)->be),
               "struct aiocb must fit in the op's backend words");
_Static_assert(_Alignof(struct paio_op) <= _Alignof(uint64_t), "backend words too weakly aligned");

struct paio {
    struct aiocb    tmpl;       /* the fields every aiocb starts with */
    unsigned        cap;        /* queue_depth: staged + in flight never exceed it */
    unsigned        listio_max; /* aiocbs per lio_listio */
    unsigned        proc_max;   /* ours in flight at most */
    unsigned        reported;   /* completions reported, to tell enter that something happened */
    struct afs_op **pend;       /* staged or refused, in order */
    unsigned        npend;
    struct aiocb  **batch;      /* listio_max */
    unsigned        nlive;      /* with the OS */
#ifdef PAIO_KQUEUE
    int kq;
#else
    struct afs_op      **live;  /* with the OS, in submission order (oldest first) */
    const struct aiocb **list;  /* aio_suspend's argument */
#endif
};

static struct paio *P(struct afs_ctx *ctx)
{
    return ctx->be_state;
}

static struct paio_op *PO(struct afs_op *op)
{
    return (struct paio_op *)(void *)afs__op(op)->be;
}

static unsigned umin(unsigned a, unsigned b)
{
    return a < b ? a : b;
}

/* The per-process AIO limit, UINT_MAX where there is none (glibc). */
static unsigned proc_limit(void)
{
#if defined(__FreeBSD__) || defined(__APPLE__)
#if defined(__APPLE__)
    const char *name = "kern.aioprocmax";
    unsigned fallback = 16;
#else
    const char *name = "vfs.aio.max_aio_queue_per_proc";
    unsigned fallback = 256;
#endif
    int v = 0;
    size_t len = sizeof v;
    if (sysctlbyname(name, &v, &len, NULL, 0) == 0 && v > 0)
        return (unsigned)v;
    return fallback;
#else
    return UINT_MAX;
#endif
}

/* ------------------------------------------------------------------------------------------
 * Setup
 * ---------------------------------------------------------------------------------------- */

static void paio_fini(struct afs_ctx *ctx)
{
    struct paio *p = P(ctx);
    if (!p)
        return;
    AFS_CHECK(p->npend == 0 && p->nlive == 0, "posix-aio freed with ops in flight");
#ifdef PAIO_KQUEUE
    if (p->kq >= 0)
        close(p->kq);
#else
    free(p->live);
    free(p->list);
#endif
    free(p->pend);
    free(p->batch);
    free(p);
    ctx->be_state = NULL;
}

static int paio_init(struct afs_ctx *ctx, char *why, size_t why_len)
{
    struct paio *p = afs__sys.calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    ctx->be_state = p;
    p->cap = ctx->cfg.queue_depth;
    p->proc_max = umin(proc_limit(), p->cap);
    long lm = sysconf(_SC_AIO_LISTIO_MAX);
#ifdef __GLIBC__
    unsigned lm_fallback = 64; /* glibc has no limit: 64 bounds our list array */
#else
    unsigned lm_fallback = 16;
#endif
    p->listio_max = lm > 0 ? (unsigned)AFS_MIN(lm, (long)INT_MAX) : lm_fallback;
    p->listio_max = umin(p->listio_max, p->proc_max);
    if (p->listio_max == 0)
        p->listio_max = 1;
    p->pend = afs__sys.calloc(p->cap, sizeof *p->pend);
    p->batch = afs__sys.calloc(p->listio_max, sizeof *p->batch);
    bool ok = p->pend && p->batch;
#ifdef PAIO_KQUEUE
    p->kq = -1;
    if (ok) {
        p->kq = kqueue();
        struct kevent kev;
        /* The waker's fd in the same kqueue: one kevent() waits for AIO and wakes. */
        EV_SET(&kev, (uintptr_t)ctx->waker.fd, EVFILT_READ, EV_ADD, 0, 0, NULL);
        if (p->kq < 0 || fcntl(p->kq, F_SETFD, FD_CLOEXEC) < 0 ||
            kevent(p->kq, &kev, 1, NULL, 0, NULL) < 0) {
            int err = -errno;
            afs__why(why, why_len, "kqueue", err, NULL);
            paio_fini(ctx);
            return err;
        }
    }
    p->tmpl.aio_sigevent.sigev_notify = SIGEV_KEVENT;
    p->tmpl.aio_sigevent.sigev_notify_kqueue = p->kq;
    /* An aiocb the kernel never looked at (a list refused as a whole) then reads as
     * "refused, EAGAIN" in aio_error(), as one refused by aio_aqueue() does. */
    p->tmpl._aiocb_private.status = -1;
    p->tmpl._aiocb_private.error = EAGAIN;
#else
    p->live = afs__sys.calloc(p->cap, sizeof *p->live);
    p->list = afs__sys.calloc(umin(p->cap, SUSPEND_MAX), sizeof *p->list);
    ok = ok && p->live && p->list;
    p->tmpl.aio_sigevent.sigev_notify = SIGEV_NONE;
#if defined(__GLIBC__)
    /* glibc writes an aiocb's status only when it queues it; a list entry it could not queue
     * (out of memory) would show a stale status. Start every aiocb as "not queued". */
    p->tmpl.__error_code = EAGAIN;
#endif
#endif
    if (!ok) {
        paio_fini(ctx);
        return -ENOMEM;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Staging and submission
 * ---------------------------------------------------------------------------------------- */

static bool paio_accepts(struct afs_ctx *ctx, struct afs_op *op)
{
    /* No offsets (pipe, socket, tty, a /proc file that takes no pwrite): the BSDs refuse AIO
     * on them, and glibc's would pread() a file whose reads do take offsets at 0 every time
     * (it reads at the position only after ESPIPE). A wait for the other end would also hold
     * one of queue_depth slots the core does not count these ops against. */
    if (afs__op(op)->file->seq)
        return false;
    if (afs__op(op)->xflags & AFS__X_DSYNC)
        return false; /* AFS_WRITE_DSYNC: the pool writes, then syncs */
    switch (afs__op(op)->code) {
    case AFS__READ:
    case AFS__WRITE:
        return true;
    case AFS__FSYNC:
#if defined(__APPLE__)
        return false; /* aio_fsync is a plain fsync there; the pool uses F_FULLFSYNC */
#else
        return true;
#endif
    default:
        return false; /* readv/writev (see the top of the file) and the metadata ops, which
                         POSIX AIO does not have: the pool runs them */
    }
}

static int paio_prep(struct afs_ctx *ctx, struct afs_op *op)
{
    struct paio *p = P(ctx);
    struct afs__op *o = afs__op(op);
    struct paio_op *po = PO(op);
    AFS_CHECK(p->npend < p->cap, "more ops staged than queue_depth");
    /* A whole-struct copy, not memset: the previous request on this aiocb has finished, but
     * glibc's helper thread may still read its sigevent, which must not flicker. */
    po->cb = p->tmpl;
    po->cb.aio_fildes = o->file->fd;
    po->alone = o->code == AFS__FSYNC;
    if (o->code == AFS__FSYNC) {
        po->cb.aio_lio_opcode = LIO_NOP;
    } else {
        struct afs__span s;
        afs__op_span(op, &s);
        AFS_CHECK(s.buf != NULL, "vectored op on posix-aio");
        po->cb.aio_buf = s.buf;
        po->cb.aio_nbytes = s.len;
        po->cb.aio_offset = (off_t)s.off;
        po->cb.aio_lio_opcode = o->code == AFS__WRITE ? LIO_WRITE : LIO_READ;
    }
#ifdef PAIO_KQUEUE
    po->cb.aio_sigevent.sigev_value.sival_ptr = op; /* comes back as the kevent's udata */
#endif
    po->where = PAIO_PEND;
    p->pend[p->npend++] = op;
    return 0;
}

/* Reports one kernel transfer to the core. */
static void complete(struct afs_ctx *ctx, struct afs_op *op, ssize_t res)
{
    P(ctx)->reported++;
    struct afs__op *o = afs__op(op);
    if ((o->flags & AFS__OP_CANCEL) && res >= 0 && o->code != AFS__FSYNC)
        res = -ECANCELED; /* cancelled with the OS, which ran it to its end (glibc's aio_cancel
                             is not called; elsewhere it may not stop it): as the pool's */
    if (res == -EOPNOTSUPP || res == -ENOTSUP || res == -ENOSYS) {
        /* No AIO for this file here (FreeBSD refuses "unsafe" AIO, e.g. on NFS): the core
         * retries a transient result, and the pool flag sends the retry to its threads. */
        afs__op(op)->flags |= AFS__OP_POOL;
        res = -EAGAIN;
    }
    afs__op_transferred(ctx, op, res);
}

static void go_live(struct paio *p, struct afs_op *op)
{
    PO(op)->where = PAIO_LIVE;
#ifndef PAIO_KQUEUE
    p->live[p->nlive] = op;
#endif
    p->nlive++;
}

/* Submits one aiocb by itself: 0 queued, or -errno and it was not. */
static int submit_alone(struct afs_ctx *ctx, struct afs_op *op)
{
    struct aiocb *cb = &PO(op)->cb;
    struct afs__op *o = afs__op(op);
    int r;
    ctx->stats.kernel_submits++;
    switch (o->code) {
    case AFS__READ:
        r = aio_read(cb);
        break;
    case AFS__WRITE:
        r = aio_write(cb);
        break;
    default:
#ifdef O_DSYNC
        if (o->fsync_flags & AFS_FSYNC_DATA) {
            r = aio_fsync(O_DSYNC, cb);
            if (r == 0 || errno != EINVAL)
                break;
            /* O_DSYNC: FreeBSD 13; before that the full sync does at least as much. */
            ctx->stats.kernel_submits++;
        }
#endif
        r = aio_fsync(O_SYNC, cb);
        break;
    }
    return r == 0 ? 0 : -errno;
}

/* After lio_listio() failed: what became of one of its aiocbs? POSIX says each one is queued
 * (EINPROGRESS), refused for want of resources (EAGAIN), or finished with its status.
 * Returns true when the op must be sent again. */
static bool settle(struct afs_ctx *ctx, struct afs_op *op)
{
    struct aiocb *cb = &PO(op)->cb;
    int e = aio_error(cb);
    if (e == EINPROGRESS) {
        go_live(P(ctx), op);
        return false;
    }
    if (e < 0)
        e = errno; /* the OS does not know the aiocb (macOS): it was never queued */
    /* Frees what the OS keeps for a finished request (macOS, FreeBSD: also its kevent). */
    ssize_t r = aio_return(cb);
    if (e == EAGAIN || e == EINVAL) {
        /* Refused, or unknown to the OS: sending it alone gives a definite answer (a request
         * that did run and failed with EINVAL fails again the same way, having done nothing). */
        PO(op)->alone = 1;
        return true;
    }
    complete(ctx, op, r >= 0 ? r : -(e > 0 ? e : EIO));
    return false;
}

/* Hands staged ops to the OS, as many as it takes; the rest wait for completions. */
static void flush(struct afs_ctx *ctx)
{
    struct paio *p = P(ctx);
    unsigned r = 0, w = 0;
    bool stop = false; /* the OS is full: keep the rest, in order, for the next round */
    while (r < p->npend) {
        struct afs_op *op = p->pend[r];
        unsigned room = p->proc_max > p->nlive ? p->proc_max - p->nlive : 0;
        if (stop || room == 0) {
            p->pend[w++] = p->pend[r++];
            continue;
        }
        if (PO(op)->alone) {
            r++;
            int err = submit_alone(ctx, op);
            if (err == 0) {
                go_live(p, op);
            } else if (err == -EAGAIN && p->nlive == 0) {
                /* Refused with nothing in flight, whose end would make room: the OS cannot
                 * take requests now (glibc could not start its thread). The retry goes to
                 * the pool (which runs it on this thread when it cannot start one either),
                 * rather than to the OS again for ever. */
                afs__op(op)->flags |= AFS__OP_POOL;
                complete(ctx, op, -EAGAIN);
            } else if (err == -EAGAIN) {
                p->pend[w++] = op;
                stop = true;
            } else {
                complete(ctx, op, err);
            }
            continue;
        }
        unsigned n = 0;
        while (r + n < p->npend && n < p->listio_max && n < room && !PO(p->pend[r + n])->alone) {
            p->batch[n] = &PO(p->pend[r + n])->cb;
            n++;
        }
        ctx->stats.kernel_submits++;
        int lr = afs__sys.paio_listio ? afs__sys.paio_listio(LIO_NOWAIT, p->batch, (int)n, NULL)
                                      : lio_listio(LIO_NOWAIT, p->batch, (int)n, NULL);
        if (lr == 0) {
            for (unsigned i = 0; i < n; i++)
                go_live(p, p->pend[r + i]);
        } else {
            /* w <= r + i: the slot written is never one still to be read. */
            for (unsigned i = 0; i < n; i++) {
                struct afs_op *x = p->pend[r + i];
                if (settle(ctx, x))
                    p->pend[w++] = x;
            }
            stop = true;
        }
        r += n;
    }
    p->npend = w;
}

/* ------------------------------------------------------------------------------------------
 * Completion
 * ---------------------------------------------------------------------------------------- */

#ifdef PAIO_KQUEUE

/* Reports what the kqueue holds, waiting up to ns for it (0: poll, < 0: no limit). */
static void collect(struct afs_ctx *ctx, int64_t ns, int64_t *slice, bool *woken)
{
    struct paio *p = P(ctx);
    struct kevent ev[64];
    struct timespec ts, *tsp = NULL;
    if (ns != 0 && afs__ready_parked(ctx)) {
        /* Sockets parked in the readiness engine (poll() here) are not in our kqueue: with no
         * AIO in flight the engine's wait (waker and sockets) is the whole wait; with some,
         * the kevent wait is cut into slices and the sockets are polled between them. */
        if (p->nlive == 0) {
            ctx->stats.kernel_waits++;
            int woke = afs__ctx_block(ctx, ns);
            if (woke & AFS__WOKE_WAKER)
                afs__waker_drain(&ctx->waker);
            *woken |= woke != 0;
            return;
        }
        if (afs__ctx_block(ctx, 0)) {
            *woken = true; /* the waker, if it was one, is drained by its kevent below */
            ns = 0;
        } else if (ns < 0 || ns > *slice) {
            ns = *slice;
            *slice = *slice * 2 > SLICE_MAX_NS ? SLICE_MAX_NS : *slice * 2;
        }
    }
    if (ns >= 0) {
        ts.tv_sec = (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        tsp = &ts;
    }
    ctx->stats.kernel_waits += ns != 0;
    int n = kevent(p->kq, NULL, 0, ev, 64, tsp);
    for (int i = 0; i < n; i++) {
        if (ev[i].filter == EVFILT_READ) {
            afs__waker_drain(&ctx->waker);
            *woken = true;
        } else if (ev[i].filter == EVFILT_AIO) {
            struct afs_op *op = ev[i].udata;
            struct aiocb *cb = (struct aiocb *)ev[i].ident;
            int e = aio_error(cb);
            ssize_t r = aio_return(cb); /* frees the job and its knote */
            p->nlive--;
            complete(ctx, op, r >= 0 ? r : -(e > 0 ? e : EIO));
        }
    }
    /* kevent() errors (EINTR) just end this wait; the core loops. */
}

#else

/* Waits up to ns for the waker or a socket of the readiness engine (the core runs those);
 * drains the waker. Returns whether either came. */
static bool block(struct afs_ctx *ctx, int64_t ns)
{
    int woke = afs__ctx_block(ctx, ns);
    if (woke & AFS__WOKE_WAKER)
        afs__waker_drain(&ctx->waker);
    return woke != 0;
}

/* Reports every op of ours the OS has finished. */
static void reap(struct afs_ctx *ctx)
{
    struct paio *p = P(ctx);
    unsigned w = 0, n = p->nlive;
    for (unsigned i = 0; i < n; i++) {
        struct afs_op *op = p->live[i];
        struct aiocb *cb = &PO(op)->cb;
        int e = aio_error(cb);
        if (e == EINPROGRESS) {
            p->live[w++] = op; /* compacting keeps the oldest first, for aio_suspend */
            continue;
        }
        if (e < 0)
            e = errno;
        ssize_t r = aio_return(cb);
        p->nlive--;
        complete(ctx, op, r >= 0 ? r : -(e > 0 ? e : EIO));
    }
    AFS_CHECK(p->nlive == w, "posix-aio in-flight list out of step");
}

/* Waits up to ns (0: poll, < 0: no limit) for an op of ours to finish or for the waker, then
 * reports what finished. See the top of the file for the slices. */
static void collect(struct afs_ctx *ctx, int64_t ns, int64_t *slice, bool *woken)
{
    struct paio *p = P(ctx);
    if (ns != 0 && p->nlive == 0) {
        ctx->stats.kernel_waits++;
        if (block(ctx, ns))
            *woken = true;
    } else if (ns != 0) {
        if (block(ctx, 0)) {
            *woken = true;
            reap(ctx);
            return;
        }
        int64_t t = *slice;
        if (ns > 0 && ns < t)
            t = ns;
        unsigned k = umin(p->nlive, SUSPEND_MAX); /* the oldest: the first to finish */
        for (unsigned i = 0; i < k; i++)
            p->list[i] = &PO(p->live[i])->cb;
        struct timespec ts = {.tv_sec = (time_t)(t / 1000000000), .tv_nsec = (long)(t % 1000000000)};
        ctx->stats.kernel_waits++;
        if (aio_suspend(p->list, (int)k, &ts) == 0) {
            *slice = SLICE_MIN_NS;
        } else if (errno == EAGAIN) { /* the slice passed */
            *slice = *slice * 2 > SLICE_MAX_NS ? SLICE_MAX_NS : *slice * 2;
        } else if (errno != EINTR) {
            /* Should not happen; sleep the slice rather than spin. */
            if (block(ctx, t))
                *woken = true;
        }
    }
    reap(ctx);
}

#endif

static int paio_enter(struct afs_ctx *ctx, bool wait, int64_t timeout_ns)
{
    struct paio *p = P(ctx);
    int64_t now = afs__now_ns();
    int64_t deadline = timeout_ns < 0 ? -1
                       : timeout_ns > INT64_MAX - now ? INT64_MAX /* no overflow: no limit */
                                                      : now + timeout_ns;
    int64_t slice = SLICE_MIN_NS;
    unsigned before = p->reported;
    for (;;) {
        flush(ctx);
        bool woken = false;
        collect(ctx, 0, &slice, &woken);
        if (!wait || woken || p->reported != before)
            return 0;
        int64_t left = -1;
        if (deadline >= 0 && (left = deadline - afs__now_ns()) <= 0)
            return 0;
        if (p->nlive == 0 && p->npend > 0 && (left < 0 || left > RETRY_NS))
            left = RETRY_NS; /* the OS refused them all: try again soon */
        collect(ctx, left, &slice, &woken);
        if (woken || p->reported != before)
            return 0;
    }
}

static void paio_cancel(struct afs_ctx *ctx, struct afs_op *op)
{
    struct paio *p = P(ctx);
    struct paio_op *po = PO(op);
    if (po->where == PAIO_PEND) {
        /* Not with the OS yet: done at once. */
        for (unsigned i = 0; i < p->npend; i++) {
            if (p->pend[i] == op) {
                memmove(&p->pend[i], &p->pend[i + 1], (p->npend - i - 1) * sizeof *p->pend);
                p->npend--;
                complete(ctx, op, -ECANCELED);
                return;
            }
        }
        return;
    }
#if defined(__GLIBC__)
    /* glibc's aio_cancel can unlink a queued request together with the requests queued behind
     * it on the same descriptor, which then never complete (found by the fuzzer: read A and
     * read B on one fd, cancel A, B stays EINPROGRESS for ever). A cancelled op may end with
     * its full result, so on glibc an op already with the OS is left to finish. */
#else
    /* AIO_CANCELED, AIO_NOTCANCELED or AIO_ALLDONE: in every case the op stays in flight until
     * aio_error() stops saying EINPROGRESS (a cancelled one then says ECANCELED). */
    (void)aio_cancel(po->cb.aio_fildes, &po->cb);
#endif
}

const struct afs__backend afs__backend_posix_aio = {
    .name = "posix-aio",
    .id = AFS_BACKEND_POSIX_AIO,
    .init = paio_init,
    .fini = paio_fini,
    .accepts = paio_accepts,
    .prep = paio_prep,
    .enter = paio_enter,
    .cancel = paio_cancel,
};
