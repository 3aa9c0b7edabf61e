/* The Linux AIO backend (libaio). The second rung of the AUTO ladder on Linux: it serves where
 * io_uring is blocked (seccomp, kernel.io_uring_disabled, old kernels).
 *
 * Linux AIO is asynchronous only for O_DIRECT files: on a buffered file io_submit() does the
 * whole transfer (page cache misses included) inside the system call. So accepts() takes only
 * ops on AFS_DIRECT files and the core runs the rest on its thread pool, in the same context.
 *
 * Ops are staged in prep() and the whole phase goes to the kernel with one io_submit() in
 * enter(). Every iocb carries the context's eventfd (IOCB_FLAG_RESFD), which the thread pool
 * and afs_ctx_wake() signal too: a blocking wait is one poll() on it, whatever finishes
 * first. Completions are then reaped with non-blocking io_getevents() in batches (libaio
 * answers those from the user-mapped ring, without a system call, when it is empty). */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#ifndef RWF_DSYNC
#define RWF_DSYNC 0x00000002 /* Linux 4.7; older C library headers lack it */
#endif
#include <time.h>

/* The iocb lives in the op's backend words: nothing is allocated per op. */
_Static_assert(sizeof(struct iocb) <= sizeof(((struct afs__op *)0)->be),
               "struct iocb must fit in the op's backend words");
_Static_assert(_Alignof(struct iocb) <= _Alignof(uint64_t), "backend words too loosely aligned");

#define LAIO_MIN_EVENTS 16u /* the smallest kernel context worth having over the thread pool */
#define LAIO_BATCH      64  /* events reaped per io_getevents() */

struct laio {
    io_context_t  aio;      /* NULL until the first direct op (setup()) */
    bool          no_aio;   /* setup() failed: direct ops go to the pool too */
    unsigned      cap;      /* events the kernel context was made for: iocbs it may hold */
    unsigned      busy;     /* iocbs the kernel holds (submitted, not reaped) */
    unsigned      nstaged;  /* iocbs in staged[], not yet submitted */
    bool          no_fsync; /* IOCB_CMD_FSYNC refused (before Linux 4.18): fsync to the pool */
    bool          no_rw_flags; /* aio_rw_flags refused (before Linux 4.13): DSYNC writes to
                                  the pool */
    struct iocb **staged;   /* queue_depth entries: the core never has more in flight */
};

static struct laio *L(struct afs_ctx *ctx)
{
    return ctx->be_state;
}

/* For tests: the events of ctx's kernel context (fewer than queue_depth where fs.aio-max-nr
 * had no room for more), 0 before it is made. ctx must be a libaio context. */
unsigned afs__laio_cap(struct afs_ctx *ctx);
unsigned afs__laio_cap(struct afs_ctx *ctx)
{
    return L(ctx) && L(ctx)->aio ? L(ctx)->cap : 0;
}

static struct iocb *op_iocb(struct afs_op *op)
{
    return (struct iocb *)(void *)afs__op(op)->be;
}

/* A sysctl's number, 0 when it cannot be read. Plain read(2) into a buffer here: stdio
 * allocates its buffer, and without one (memory short) reads a byte at a time, which
 * fscanf took for the whole number ("6" of 65536). */
static unsigned long read_sysctl(const char *path)
{
    char buf[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n;
    do
        n = read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end;
    unsigned long v = strtoul(buf, &end, 10);
    return end != buf && (*end == '\n' || *end == '\0') ? v : 0;
}

static const char *setup_hint(int err)
{
    static _Thread_local char hint[128];
    switch (-err) {
    case EAGAIN:
        /* aio-nr counts the events of every AIO context on the machine against aio-max-nr. */
        snprintf(hint, sizeof hint,
                 "fs.aio-max-nr exhausted: %lu of %lu events in use; raise fs.aio-max-nr",
                 read_sysctl("/proc/sys/fs/aio-nr"), read_sysctl("/proc/sys/fs/aio-max-nr"));
        return hint;
    case ENOSYS: return "kernel built without Linux AIO (CONFIG_AIO=n)";
    case EPERM: return "blocked by seccomp?";
    default: return NULL;
    }
}

/* The kernel context is made when the first direct op comes, not with the afs context:
 * io_destroy() waits for two RCU grace periods (30-40 ms here), and so does a process's exit
 * for the contexts it leaves, which a program that never reads or writes O_DIRECT (a copy of
 * cached files, a short command; buffered ops run on the pool) should not pay.
 * EAGAIN: the machine-wide fs.aio-max-nr is nearly used up. A smaller context still beats
 * the thread pool for direct I/O; below LAIO_MIN_EVENTS give up. */
static int setup(struct afs_ctx *ctx, char *why, size_t why_len)
{
    struct laio *l = L(ctx);
    unsigned nr = ctx->cfg.queue_depth;
    int err;
    for (;;) {
        l->aio = NULL; /* io_setup() wants a zeroed context */
        err = io_setup((int)nr, &l->aio);
        if (err != -EAGAIN || nr <= LAIO_MIN_EVENTS)
            break;
        nr = nr / 2 < LAIO_MIN_EVENTS ? LAIO_MIN_EVENTS : nr / 2;
    }
    if (err < 0) {
        l->aio = NULL;
        afs__why(why, why_len, "io_setup", err, setup_hint(err));
        return err;
    }
    l->cap = nr;
    return 0;
}

/* Whether Linux AIO is there, without making a context (see setup()): io_setup() with no
 * events is refused with EINVAL by a kernel that has it, ENOSYS without, EPERM under a
 * seccomp filter; and fs.aio-max-nr must leave room for the smallest context. */
static int probe(char *why, size_t why_len)
{
    io_context_t none = NULL;
    int err = io_setup(0, &none);
    if (err == 0) /* never seen: a kernel that took it */
        io_destroy(none);
    else if (err != -EINVAL) {
        afs__why(why, why_len, "io_setup", err, setup_hint(err));
        return err;
    }
    unsigned long max = read_sysctl("/proc/sys/fs/aio-max-nr");
    unsigned long nr = read_sysctl("/proc/sys/fs/aio-nr");
    if (max > 0 && (nr >= max || max - nr < LAIO_MIN_EVENTS)) {
        afs__why(why, why_len, "io_setup", -EAGAIN, setup_hint(-EAGAIN));
        return -EAGAIN;
    }
    return 0;
}

static int laio_init(struct afs_ctx *ctx, char *why, size_t why_len)
{
    int err = probe(why, why_len);
    if (err < 0)
        return err;
    struct laio *l = afs__sys.calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->staged = afs__sys.calloc(ctx->cfg.queue_depth, sizeof *l->staged);
    if (!l->staged) {
        free(l);
        return -ENOMEM;
    }
    ctx->be_state = l;
    return 0;
}

static void laio_fini(struct afs_ctx *ctx)
{
    struct laio *l = L(ctx);
    if (l->aio)
        io_destroy(l->aio);
    free(l->staged);
    free(l);
    ctx->be_state = NULL;
}

/* Reports completions: at least min_nr of them (blocking until they come), then whatever
 * else is ready, LAIO_BATCH per call. The caller makes sure min_nr <= busy. */
static int reap(struct afs_ctx *ctx, long min_nr)
{
    struct laio *l = L(ctx);
    struct io_event ev[LAIO_BATCH];
    long total = 0;
    while (l->busy > 0) {
        long want = min_nr > total ? min_nr - total : 0;
        struct timespec zero = {0, 0};
        ctx->stats.kernel_waits += want > 0;
        int r = io_getevents(l->aio, want, LAIO_BATCH, ev, want > 0 ? NULL : &zero);
        if (r == -EINTR)
            continue;
        if (r < 0)
            return r;
        for (int i = 0; i < r; i++) {
            l->busy--;
            /* res is the raw result, bytes or -errno, in an unsigned long. */
            afs__op_transferred(ctx, ev[i].data, (ssize_t)(long)ev[i].res);
        }
        total += r;
        if (r < LAIO_BATCH && total >= min_nr)
            break;
    }
    return (int)total;
}

/* Gives the iocbs staged[from..] back to the core, which queues them again at the front (in
 * their order) for the next submission. */
static void give_back(struct afs_ctx *ctx, unsigned from)
{
    struct laio *l = L(ctx);
    for (unsigned i = l->nstaged; i-- > from;)
        afs__op_transferred(ctx, l->staged[i]->data, -EAGAIN);
}

/* Hands every staged iocb to the kernel: one io_submit() for the whole batch unless the
 * kernel takes only part of it. Transient failures stay inside. Returns true when ops were
 * settled without the kernel: given back to the core (no room, and nothing of ours to wait
 * for; or a kind of request this kernel refuses, for the pool), or failed here. No
 * completion will signal those: the caller must not sleep for them. */
static bool flush(struct afs_ctx *ctx)
{
    struct laio *l = L(ctx);
    unsigned pos = 0;
    bool gave_back = false, settled = false;
    while (pos < l->nstaged) {
        unsigned n = l->nstaged - pos;
        if (l->busy >= l->cap) {
            /* A context degraded below queue_depth is full: make room. */
            if (reap(ctx, 1) < 0)
                break;
            continue;
        }
        if (n > l->cap - l->busy)
            n = l->cap - l->busy;
        ctx->stats.kernel_submits++;
        int r = afs__sys.laio_submit ? afs__sys.laio_submit(l->aio, (long)n, l->staged + pos)
                                     : io_submit(l->aio, (long)n, l->staged + pos);
        if (r > 0) {
            /* A partial submission goes on from the first iocb not taken. */
            l->busy += (unsigned)r;
            pos += (unsigned)r;
            continue;
        }
        if (r == 0 || r == -EAGAIN || r == -EINTR) {
            /* The kernel is short of requests or memory: wait for one of ours to finish. */
            if (l->busy > 0) {
                if (reap(ctx, 1) < 0)
                    break;
                continue;
            }
            /* Nothing of ours to wait for: back off a little and let the core retry, so a
             * wait's timeout still holds. */
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
            give_back(ctx, pos);
            gave_back = true;
            break;
        }
        /* The first iocb was refused (the kernel takes none after a bad one): it fails
         * alone, the rest goes on. */
        struct iocb *cb = l->staged[pos++];
        if (r == -EINVAL &&
            (cb->aio_lio_opcode == IO_CMD_FSYNC || cb->aio_lio_opcode == IO_CMD_FDSYNC)) {
            /* AIO fsync is Linux 4.18: before that, the thread pool does it. The op goes back
             * to the core, and accepts() now sends it to the pool. */
            l->no_fsync = true;
            r = -EAGAIN;
        } else if (r == -EINVAL && cb->aio_rw_flags) {
            /* Per-request flags (RWF_DSYNC) are Linux 4.13: before that, the pool writes
             * these, with pwritev2 or a write and an fdatasync. */
            l->no_rw_flags = true;
            r = -EAGAIN;
        }
        afs__op_transferred(ctx, cb->data, r);
        settled = true;
    }
    if (pos < l->nstaged && !gave_back) {
        /* Reaping failed (the context is broken): the rest cannot be submitted. */
        for (unsigned i = pos; i < l->nstaged; i++)
            afs__op_transferred(ctx, l->staged[i]->data, -EIO);
        settled = true;
    }
    l->nstaged = 0;
    return gave_back || settled;
}

static bool laio_accepts(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    if (afs__is_meta(o) || (o->code > AFS__FSYNC && o->code <= AFS__SYNC_RANGE))
        return false; /* Linux AIO has no open, stat, rename, fallocate...: the pool makes
                         the call */
    if (!(o->file->flags & AFS_DIRECT) || o->file->seq)
        return false; /* buffered: io_submit() would do the I/O inside the system call; a
                         pipe or socket has no offsets for an iocb: read()/write() there */
    struct laio *l = L(ctx);
    if ((o->code == AFS__FSYNC && l->no_fsync) || ((o->xflags & AFS__X_DSYNC) && l->no_rw_flags))
        return false;
    if (!l->aio && !l->no_aio) {
        char why[160];
        if (setup(ctx, why, sizeof why) < 0) {
            /* Taken since the probe (fs.aio-max-nr) or refused: the pool does direct I/O
             * too, and the context's fallback reason says why. */
            l->no_aio = true;
            afs__add_why(ctx, why);
            afs__add_why(ctx, "direct I/O runs on the thread pool");
        }
    }
    return l->aio != NULL;
}

static int laio_prep(struct afs_ctx *ctx, struct afs_op *op)
{
    struct laio *l = L(ctx);
    struct afs__op *o = afs__op(op);
    struct iocb *cb = op_iocb(op);
    int fd = o->file->fd;
    AFS_CHECK(l->nstaged < ctx->cfg.queue_depth, "more ops staged than queue_depth");
    if (o->code == AFS__FSYNC) {
        if (o->fsync_flags & AFS_FSYNC_DATA)
            io_prep_fdsync(cb, fd);
        else
            io_prep_fsync(cb, fd);
    } else {
        struct afs__span s;
        afs__op_span(op, &s);
        bool write = o->code == AFS__WRITE || o->code == AFS__WRITEV;
        if (s.buf && write)
            io_prep_pwrite(cb, fd, s.buf, s.len, (long long)s.off);
        else if (s.buf)
            io_prep_pread(cb, fd, s.buf, s.len, (long long)s.off);
        else if (write)
            io_prep_pwritev(cb, fd, s.iov, s.iovcnt, (long long)s.off);
        else
            io_prep_preadv(cb, fd, s.iov, s.iovcnt, (long long)s.off);
        if (o->xflags & AFS__X_DSYNC)
            cb->aio_rw_flags = RWF_DSYNC; /* Linux 4.13 */
    }
    /* After io_prep_*(), which clear the iocb. */
    io_set_eventfd(cb, (int)ctx->waker.fd);
    cb->data = op;
    l->staged[l->nstaged++] = cb;
    return 0;
}

static int laio_enter(struct afs_ctx *ctx, bool wait, int64_t timeout_ns)
{
    struct laio *l = L(ctx);
    bool settled = l->nstaged ? flush(ctx) : false;
    int r = reap(ctx, 0);
    if (r < 0)
        return r;
    /* Ops settled without the kernel have callbacks to run, or are the core's again (it
     * resubmits them at once): do not sleep. */
    if (!wait || r > 0 || settled)
        return 0;
    /* The kernel adds one to the eventfd per completed iocb, the pool and afs_ctx_wake()
     * through afs__waker_signal(). The waker's armed flag only spares the latter redundant
     * writes: a kernel write leaves it alone, and the drain reads the count to zero whoever
     * wrote it. A count left over from events reaped earlier without waiting only makes
     * this poll return at once, and the core loops. */
    ctx->stats.kernel_waits++;
    /* Sockets of the readiness engine are watched in the same wait (the core runs them). */
    if (afs__ctx_block(ctx, timeout_ns) & AFS__WOKE_WAKER) {
        afs__waker_drain(&ctx->waker);
        r = reap(ctx, 0);
    }
    return r < 0 ? r : 0;
}

static void laio_cancel(struct afs_ctx *ctx, struct afs_op *op)
{
    struct laio *l = L(ctx);
    struct io_event ev;
    /* File I/O cannot be cancelled in Linux AIO (only some drivers' can): this is EINVAL
     * and the op completes as usual. Since Linux 4.x a successful cancel is -EINPROGRESS and
     * its event comes through the ring; before, 0 with the event in `ev` instead. */
    int r = io_cancel(l->aio, op_iocb(op), &ev);
    if (r == 0) {
        l->busy--;
        afs__op_transferred(ctx, op, -ECANCELED);
    }
}

const struct afs__backend afs__backend_libaio = {
    .name = "libaio",
    .id = AFS_BACKEND_LIBAIO,
    .init = laio_init,
    .fini = laio_fini,
    .accepts = laio_accepts,
    .prep = laio_prep,
    .enter = laio_enter,
    .cancel = laio_cancel,
};
