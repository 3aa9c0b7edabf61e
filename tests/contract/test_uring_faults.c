/* io_uring faults: what the kernel side of the ring can do to the backend, made to happen on
 * purpose. The backend's two kernel entry points go through the system call table
 * (afs__sys.uring_setup, afs__sys.uring_enter), so these tests can make ring setup fail, make
 * io_uring_enter fail with EINTR, EAGAIN or EBUSY, and rewrite the results in the CQ ring
 * (short transfers, EAGAIN, EINTR) before the backend reaps them. Some faults need no help:
 * a tiny queue fills the SQ, a burst of cancellations overflows the CQ, and a pipe gives
 * real short reads.
 *
 * Every test runs only where the context under test lands on io_uring (ASYNCFS_BACKEND=io_uring,
 * or AUTO where the kernel allows it) and is skipped elsewhere. Throughout: every callback runs
 * exactly once, with the documented result, and the data is right. */
#include "../common.h"

#include "internal.h" /* afs__sys, afs__errno_name */

#if __has_include(<liburing.h>)
#include <criterion/logging.h>
#include <dirent.h>
#include <liburing.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

static struct afs__syscalls saved;

static void u_setup(void)
{
    t_setup();
    saved = afs__sys;
}

static void u_teardown(void)
{
    afs__sys = saved;
    t_teardown();
}

#define T_URING(name) Test(uring_faults, name, .init = u_setup, .fini = u_teardown, .timeout = 60)

/* The context the run under test gives (ASYNCFS_BACKEND or AUTO); skips unless io_uring. */
static struct afs_ctx *uring_ctx(unsigned queue_depth)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.queue_depth = queue_depth;
    cfg.sync_threshold = 0; /* every op goes through the ring */
    t_ctx = t_ctx_cfg(&cfg);
    if (strcmp(afs_ctx_backend(t_ctx), "io_uring") != 0)
        cr_skip_test("backend under test is %s, not io_uring", afs_ctx_backend(t_ctx));
    return t_ctx;
}

static void free_ctx(void)
{
    afs_ctx_free(t_ctx);
    t_ctx = NULL;
}

static int fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d, "/proc/self/fd: %s", strerror(errno));
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------------------------------
 * The enter hook: counts calls, fails some before they reach the kernel, rewrites some CQEs
 * after, and notes when the kernel had to keep CQEs on its overflow list.
 * ---------------------------------------------------------------------------------------- */

static struct inject {
    /* io_uring_enter: fail every nth call (0 = never) before it reaches the kernel. */
    unsigned eintr_every, eagain_every, ebusy_every;
    unsigned calls, failed, full_flushes, waits;
    /* CQEs of ops in [ops, ops + nops): every nth becomes short, -EAGAIN or -EINTR. */
    struct afs_op *ops;
    size_t         nops;
    unsigned       short_every, cqe_eagain_every, cqe_eintr_every;
    unsigned       cqes, shortened, cqe_errors;
    unsigned       next; /* CQ index up to which CQEs have been looked at */
    /* The kernel's CQ overflow: enters after which IORING_SQ_CQ_OVERFLOW was set. */
    unsigned overflowed, dropped;
} inj;

static bool every(unsigned n, unsigned k)
{
    return n && k % n == 0;
}

static void rewrite_cqes(struct io_uring *ring)
{
    unsigned head = *ring->cq.khead;
    unsigned tail = io_uring_smp_load_acquire(ring->cq.ktail);
    if ((int)(inj.next - head) < 0)
        inj.next = head; /* reaped before this hook saw them */
    for (; inj.next != tail; inj.next++) {
        struct io_uring_cqe *cqe = &ring->cq.cqes[inj.next & ring->cq.ring_mask];
        struct afs_op *op = (struct afs_op *)(uintptr_t)cqe->user_data;
        if (!inj.ops || op < inj.ops || op >= inj.ops + inj.nops)
            continue; /* the waker's read, cancel requests, ops of no interest */
        unsigned k = ++inj.cqes;
        /* Each rewrite is safe to act on: the core runs the rest of a short transfer again,
         * and a repeated positional read or write moves the same bytes. */
        if (every(inj.short_every, k) && cqe->res > 1) {
            cqe->res /= 2;
            inj.shortened++;
        } else if (every(inj.cqe_eagain_every, k) && cqe->res >= 0) {
            cqe->res = -EAGAIN;
            inj.cqe_errors++;
        } else if (every(inj.cqe_eintr_every, k) && cqe->res >= 0) {
            cqe->res = -EINTR;
            inj.cqe_errors++;
        }
    }
}

static int hook_enter(struct io_uring *ring, unsigned wait_nr, struct __kernel_timespec *ts)
{
    unsigned k = ++inj.calls;
    if (wait_nr)
        inj.waits++;
    else if (io_uring_sq_space_left(ring) == 0)
        inj.full_flushes++; /* the backend found no free SQE and flushes the SQ */
    int fail = every(inj.eintr_every, k) ? -EINTR :
               every(inj.eagain_every, k) ? -EAGAIN :
               every(inj.ebusy_every, k) ? -EBUSY : 0;
    if (fail) {
        inj.failed++;
        return fail; /* as if interrupted before the kernel took anything */
    }
    int r = afs__uring_enter_real(ring, wait_nr, ts);
    if (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_CQ_OVERFLOW)
        inj.overflowed++;
    inj.dropped = *ring->cq.koverflow; /* CQEs the kernel lost: must stay 0 (NODROP) */
    rewrite_cqes(ring);
    return r;
}

static void hook(void)
{
    memset(&inj, 0, sizeof inj);
    afs__sys.uring_enter = hook_enter;
}

/* ------------------------------------------------------------------------------------------
 * Ops and their callbacks
 * ---------------------------------------------------------------------------------------- */

enum { NOPS = 512, BS = 4096 };

static struct afs_op ops[NOPS];
static int           calls[NOPS];
static ssize_t       results[NOPS];
static int           completed;

static void count_cb(struct afs_op *op)
{
    int i = (int)(op - ops);
    calls[i]++;
    results[i] = op->result;
    completed++;
}

static void reset_ops(void)
{
    memset(calls, 0, sizeof calls);
    memset(results, 0, sizeof results);
    completed = 0;
}

static void wait_all(int n)
{
    int64_t give_up = afs__now_ns() + 20LL * 1000 * 1000 * 1000;
    while (completed < n) {
        int r = afs_ctx_wait(t_ctx, 1, 1000LL * 1000 * 1000);
        cr_assert_geq(r, 0, "afs_ctx_wait: %s", afs_strerror(r));
        cr_assert_lt(afs__now_ns(), give_up, "stuck at %d of %d completions", completed, n);
    }
    cr_assert_eq(completed, n);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 0), 0, "nothing completes twice");
    for (int i = 0; i < n; i++)
        cr_assert_eq(calls[i], 1, "op %d: callback ran %d times", i, calls[i]);
    struct afs_stats st;
    afs_ctx_stats(t_ctx, &st);
    cr_assert_eq(st.ops, st.completions);
}

static struct afs_file *open_path(const char *path, int flags)
{
    struct afs_file *f = NULL;
    int err = afs_open(t_ctx, path, flags, 0644, AFS_MODE_ASYNC, &f);
    cr_assert_eq(err, 0, "afs_open %s: %s", path, afs_strerror(err));
    return f;
}

/* A mixed batch of n ops, queued at once: reads of a pattern file at scattered offsets, and
 * writes of pattern blocks to a second file (each its own block). Waits for all and checks
 * every result and every byte. */
static void mixed_batch(int n, uint64_t seed)
{
    enum { FILE_BLOCKS = 64 };
    static char bufs[NOPS][BS];
    t_make_file(t_path("r"), FILE_BLOCKS * BS);
    struct afs_file *r = open_path(t_path("r"), AFS_RDONLY);
    struct afs_file *w = open_path(t_path("w"), AFS_RDWR | AFS_CREAT | AFS_TRUNC);
    reset_ops();
    uint64_t offs[NOPS];
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        int err;
        if (i % 4 == 3) {
            offs[i] = (uint64_t)i * BS; /* writes: block i of w */
            t_fill(bufs[i], BS, offs[i]);
            err = afs_queue_write(&ops[i], w, bufs[i], BS, offs[i], count_cb, NULL);
        } else {
            /* Reads: any offset, some across the end of the file (short at EOF). */
            offs[i] = (seed >> 33) % (FILE_BLOCKS * BS);
            err = afs_queue_read(&ops[i], r, bufs[i], BS, offs[i], count_cb, NULL);
        }
        cr_assert_eq(err, 0, "queue op %d: %s", i, afs_strerror(err));
    }
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    wait_all(n);
    for (int i = 0; i < n; i++) {
        size_t want = BS;
        if (i % 4 != 3 && offs[i] + BS > FILE_BLOCKS * BS)
            want = FILE_BLOCKS * BS - offs[i];
        cr_assert_eq(results[i], (ssize_t)want, "op %d: %zd, expected %zu", i, results[i], want);
        if (i % 4 != 3)
            cr_assert(t_check(bufs[i], want, offs[i]), "op %d read wrong data", i);
    }
    static char back[BS];
    for (int i = 3; i < n; i += 4) {
        cr_assert_eq(afs_pread(w, back, BS, (uint64_t)i * BS), BS);
        cr_assert(t_check(back, BS, (uint64_t)i * BS), "block %d written wrong", i);
    }
    cr_assert_eq(afs_close(r), 0);
    cr_assert_eq(afs_close(w), 0);
}

/* Reads that stay in flight in the kernel until the test writes into their pipe. */
static struct afs_file *fifo(const char *name)
{
    const char *p = t_path(name);
    unlink(p);
    cr_assert_eq(mkfifo(p, 0600), 0, "mkfifo: %s", strerror(errno));
    /* O_RDWR on a FIFO never blocks on Linux, and the test can write through the same fd. */
    return open_path(p, AFS_RDWR);
}

/* ------------------------------------------------------------------------------------------
 * SQ full
 * ---------------------------------------------------------------------------------------- */

/* queue_depth 1, 2 and 3 give rings of 1, 2 and 4 SQEs. Hundreds of ops go through them a
 * few at a time; cancellations and wakes need SQEs too, so the SQ fills and is flushed. */
T_URING(sq_full_with_tiny_queue_depths)
{
    for (unsigned qd = 1; qd <= 3; qd++) {
        uring_ctx(qd);
        hook();
        mixed_batch(400, qd);
        cr_assert_geq(inj.calls, 400 / qd / 2, "qd %u: only %u enters for 400 ops", qd, inj.calls);

        /* SQ pressure: qd reads held in the kernel, each cancelled twice, plus a wake. */
        static char bufs[3][BS];
        unsigned flushes_before = inj.full_flushes;
        for (int round = 0; round < 50; round++) {
            struct afs_file *p[3];
            reset_ops();
            for (unsigned i = 0; i < qd; i++) {
                char name[16];
                snprintf(name, sizeof name, "p%u", i);
                p[i] = fifo(name);
                cr_assert_eq(afs__queue_seq(&ops[i], p[i], false, bufs[i], BS, false, count_cb, NULL), 0);
            }
            cr_assert_geq(afs_ctx_submit(t_ctx), 0);
            for (unsigned i = 0; i < qd; i++) {
                cr_assert_eq(afs_cancel(&ops[i]), 0);
                cr_assert_eq(afs_cancel(&ops[i]), 0);
            }
            cr_assert_eq(afs_ctx_wake(t_ctx), 0);
            wait_all((int)qd);
            for (unsigned i = 0; i < qd; i++) {
                cr_assert_eq(results[i], -ECANCELED, "qd %u round %d op %u: %zd", qd, round, i,
                             results[i]);
                cr_assert_eq(afs_close(p[i]), 0);
            }
        }
        cr_assert_gt(inj.full_flushes, flushes_before, "qd %u: the SQ never filled", qd);
        cr_log_info("qd %u: %u enters, %u with a full SQ", qd, inj.calls, inj.full_flushes);
        /* Still usable after all that. */
        mixed_batch(64, 99);
        free_ctx();
    }
}

/* ------------------------------------------------------------------------------------------
 * CQ overflow
 * ---------------------------------------------------------------------------------------- */

/* The CQ is twice the SQ and the core keeps at most queue_depth ops in flight, so ops alone
 * never fill it; cancel requests post CQEs of their own, though. qd 4 gives 4 SQEs and 8
 * CQEs: 4 reads held in the kernel, each cancelled 3 times, make 16 CQEs before the backend
 * reaps, so the kernel keeps 8 on its overflow list (NODROP) and hands them over later. */
T_URING(cq_overflow_loses_and_duplicates_nothing)
{
    uring_ctx(4);
    hook();
    enum { ROUNDS = 40, Q = 4 };
    static char bufs[Q][BS];
    long full = 0, cancelled = 0;
    for (int round = 0; round < ROUNDS; round++) {
        struct afs_file *p[Q];
        reset_ops();
        for (int i = 0; i < Q; i++) {
            char name[16];
            snprintf(name, sizeof name, "q%d", i);
            p[i] = fifo(name);
            memset(bufs[i], 0, BS);
            cr_assert_eq(afs__queue_seq(&ops[i], p[i], false, bufs[i], BS, false, count_cb, NULL), 0);
        }
        cr_assert_geq(afs_ctx_submit(t_ctx), 0);
        /* Data for two of them, racing the cancellations: either result is right. */
        static char data[BS];
        for (int i = 0; i < 2; i++) {
            t_fill(data, BS, (uint64_t)(round * Q + i) * BS);
            cr_assert_eq(write((int)afs_file_fd(p[i]), data, BS), BS);
        }
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < Q; i++)
                cr_assert_eq(afs_cancel(&ops[i]), 0);
        wait_all(Q);
        for (int i = 0; i < Q; i++) {
            if (i < 2 && results[i] == BS) {
                cr_assert(t_check(bufs[i], BS, (uint64_t)(round * Q + i) * BS),
                          "round %d op %d: wrong data", round, i);
                full++;
            } else {
                cr_assert_eq(results[i], -ECANCELED, "round %d op %d: %zd", round, i,
                             results[i]);
                cancelled++;
            }
            cr_assert_eq(afs_close(p[i]), 0);
        }
    }
    cr_assert_gt(inj.overflowed, 0, "the CQ never overflowed: the test proves nothing");
    cr_assert_eq(inj.dropped, 0, "the kernel dropped %u CQEs", inj.dropped);
    cr_assert_eq(full + cancelled, ROUNDS * Q);
    cr_log_info("CQ overflow after %u of %u enters; %ld reads done, %ld cancelled",
                inj.overflowed, inj.calls, full, cancelled);
    /* The context stays usable. */
    mixed_batch(200, 7);
}

/* ------------------------------------------------------------------------------------------
 * Faults of io_uring_enter and in CQEs
 * ---------------------------------------------------------------------------------------- */

T_URING(enter_eintr_eagain_ebusy_are_retried_inside)
{
    uring_ctx(8);
    hook();
    inj.eintr_every = 3;
    inj.eagain_every = 5;
    inj.ebusy_every = 7;
    mixed_batch(400, 1);
    cr_assert_gt(inj.failed, 20, "only %u enters failed", inj.failed);
    /* Blocking calls and the position API see none of it either. */
    struct afs_file *f = NULL;
    cr_assert_eq(afs_open(t_ctx, t_path("r"), AFS_RDWR, 0, AFS_MODE_SYNC, &f), 0);
    static char buf[65536];
    cr_assert_eq(afs_pread(f, buf, 65536, 0), 65536);
    cr_assert(t_check(buf, 65536, 0));
    cr_assert_eq(afs_pwrite(f, buf, 65536, 0), 65536);
    cr_assert_eq(afs_fsync(f, AFS_FSYNC_DATA), 0);
    cr_assert_eq(afs_read(f, buf, 4096), 4096);
    cr_assert_eq(afs_tell(f), 4096);
    cr_assert_eq(afs_close(f), 0);
    cr_log_info("%u of %u enters failed with EINTR/EAGAIN/EBUSY", inj.failed, inj.calls);
}

T_URING(short_and_transient_cqes_are_completed)
{
    uring_ctx(16);
    hook();
    inj.ops = ops;
    inj.nops = NOPS;
    inj.short_every = 2;
    inj.cqe_eagain_every = 5;
    inj.cqe_eintr_every = 7;
    struct afs_stats before;
    afs_ctx_stats(t_ctx, &before);
    mixed_batch(NOPS, 3);
    struct afs_stats after;
    afs_ctx_stats(t_ctx, &after);
    cr_assert_gt(inj.shortened, 100);
    cr_assert_gt(inj.cqe_errors, 50);
    cr_assert_geq(after.resubmits - before.resubmits, inj.shortened + inj.cqe_errors,
                  "every rewritten CQE was resubmitted");
    cr_log_info("%u CQEs: %u made short, %u made EAGAIN/EINTR; %llu resubmits", inj.cqes,
                inj.shortened, inj.cqe_errors,
                (unsigned long long)(after.resubmits - before.resubmits));

    /* Every CQE of one big read short: it still reads all 1 MiB, at the right places. */
    t_make_file(t_path("big"), 1 << 20);
    struct afs_file *f = open_path(t_path("big"), AFS_RDONLY);
    char *buf = afs_buf_alloc(t_ctx, 1 << 20);
    reset_ops();
    inj.short_every = 1;
    inj.cqe_eagain_every = inj.cqe_eintr_every = 0;
    unsigned shortened = inj.shortened;
    cr_assert_eq(afs_queue_read(&ops[0], f, buf, 1 << 20, 0, count_cb, NULL), 0);
    wait_all(1);
    cr_assert_eq(results[0], 1 << 20);
    cr_assert(t_check(buf, 1 << 20, 0));
    cr_assert_geq(inj.shortened - shortened, 19, "halving 1 MiB takes 20 steps");
    afs_buf_free(t_ctx, buf, 1 << 20);
    cr_assert_eq(afs_close(f), 0);
}

/* A pipe hands a read what has arrived: real short CQEs from the kernel. The writer puts
 * the next piece in only once the pipe is empty, so no read can get more than one piece. */
struct dribble {
    int fd;
    int pieces;
};

static void *dribble_writer(void *arg)
{
    struct dribble *d = arg;
    static char data[65536];
    t_fill(data, sizeof data, 0);
    size_t piece = sizeof data / (size_t)d->pieces;
    for (int i = 0; i < d->pieces; i++) {
        int queued = 0;
        for (int spins = 0; ioctl(d->fd, FIONREAD, &queued) == 0 && queued > 0; spins++) {
            if (spins > 100000)
                return (void *)1; /* 10 s without a read */
            usleep(100);
        }
        if (write(d->fd, data + (size_t)i * piece, piece) != (ssize_t)piece)
            return (void *)1;
    }
    return NULL;
}

T_URING(short_reads_from_the_kernel_are_completed)
{
    uring_ctx(8);
    struct afs_file *p = fifo("dribble");
    static char buf[65536];
    reset_ops();
    struct afs_stats before;
    afs_ctx_stats(t_ctx, &before);
    cr_assert_eq(afs__queue_seq(&ops[0], p, false, buf, sizeof buf, false, count_cb, NULL), 0);
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    struct dribble d = {(int)afs_file_fd(p), 16};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, dribble_writer, &d), 0);
    wait_all(1);
    void *ret;
    pthread_join(th, &ret);
    cr_assert_null(ret);
    cr_assert_eq(results[0], (ssize_t)sizeof buf);
    cr_assert(t_check(buf, sizeof buf, 0));
    struct afs_stats after;
    afs_ctx_stats(t_ctx, &after);
    cr_assert_geq(after.resubmits - before.resubmits, (uint64_t)d.pieces - 1,
                  "each piece but the last came in a short read");
    cr_assert_eq(afs_close(p), 0);
}

/* ------------------------------------------------------------------------------------------
 * Ring setup that fails
 * ---------------------------------------------------------------------------------------- */

static struct {
    int      err;     /* what setup returns */
    unsigned calls;
    bool     einval_new_flags_only; /* -EINVAL only when asked for SUBMIT_ALL/COOP_TASKRUN */
    bool     hide_nodrop;           /* real setup, then IORING_FEAT_NODROP cleared */
} setup_plan;

static int hook_setup(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
    setup_plan.calls++;
    if (setup_plan.einval_new_flags_only) {
        if (p->flags & (IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN))
            return -EINVAL; /* as a kernel before 5.18 does */
        return io_uring_queue_init_params(entries, ring, p);
    }
    if (setup_plan.hide_nodrop) {
        int r = io_uring_queue_init_params(entries, ring, p);
        if (r == 0)
            p->features &= ~(unsigned)IORING_FEAT_NODROP; /* as before Linux 5.5 */
        return r;
    }
    return setup_plan.err;
}

/* io_uring must be what this run tests; the tests below then take AUTO themselves. */
static void need_uring_run(void)
{
    t_new_ctx();
    if (strcmp(afs_ctx_backend(t_ctx), "io_uring") != 0)
        cr_skip_test("backend under test is %s, not io_uring", afs_ctx_backend(t_ctx));
    free_ctx();
    unsetenv("ASYNCFS_BACKEND");
    memset(&setup_plan, 0, sizeof setup_plan);
    afs__sys.uring_setup = hook_setup;
}

static void small_io_works(struct afs_ctx *c)
{
    struct afs_file *f = NULL;
    cr_assert_eq(afs_create(c, t_path("io"), AFS_MODE_SYNC, &f), 0);
    static char w[65536], r[65536];
    t_fill(w, sizeof w, 0);
    cr_assert_eq(afs_pwrite(f, w, sizeof w, 0), (ssize_t)sizeof w);
    cr_assert_eq(afs_pread(f, r, sizeof r, 0), (ssize_t)sizeof r);
    cr_assert(t_check(r, sizeof r, 0));
    cr_assert_eq(afs_close(f), 0);
}

/* What AUTO, a forced io_uring and AFS_CTX_NO_FALLBACK make of a setup that fails with err;
 * `reason` is what the fallback reason must say. */
static void check_setup_failure(int err, const char *reason)
{
    int fds = fd_count();
    struct afs_config cfg;

    /* AUTO falls back and says why. */
    afs_config_default(&cfg);
    struct afs_ctx *c = NULL;
    cr_assert_eq(afs_ctx_new(&c, &cfg), 0);
    cr_assert_str_neq(afs_ctx_backend(c), "io_uring");
    const char *why = afs_ctx_fallback_reason(c);
    cr_assert_not_null(why, "no fallback reason");
    cr_assert_not_null(strstr(why, reason), "reason \"%s\" lacks \"%s\"", why, reason);
    small_io_works(c);
    cr_log_info("%s: AUTO landed on %s: %s", afs__errno_name(err), afs_ctx_backend(c), why);
    afs_ctx_free(c);

    /* io_uring by name: -ENOTSUP, never a substitute; through the environment as well. */
    afs_config_default(&cfg);
    cfg.backend = AFS_BACKEND_IO_URING;
    c = (struct afs_ctx *)&cfg;
    cr_assert_eq(afs_ctx_new(&c, &cfg), -ENOTSUP);
    cr_assert_null(c);
    setenv("ASYNCFS_BACKEND", "io_uring", 1);
    cr_assert_eq(afs_ctx_new(&c, NULL), -ENOTSUP);
    cr_assert_null(c);
    unsetenv("ASYNCFS_BACKEND");

    /* No fallback: the first error itself. */
    afs_config_default(&cfg);
    cfg.flags = AFS_CTX_NO_FALLBACK;
    c = (struct afs_ctx *)&cfg;
    int r = afs_ctx_new(&c, &cfg);
    cr_assert_eq(r, err, "NO_FALLBACK gave %s, not %s", afs__errno_name(r), afs__errno_name(err));
    cr_assert_null(c);

    cr_assert_eq(fd_count(), fds, "a failed setup left descriptors open");
}

T_URING(setup_eperm_enomem_enosys_einval_fall_back)
{
    need_uring_run();
    static const struct {
        int         err;
        const char *reason;
    } cases[] = {
        {-EPERM, "io_uring_setup: EPERM"},
        {-ENOMEM, "io_uring_setup: ENOMEM (locked-memory limit"},
        {-ENOSYS, "io_uring_setup: ENOSYS (kernel without io_uring"},
        {-EINVAL, "io_uring_setup: EINVAL"},
        {-EACCES, "io_uring_setup: EACCES"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setup_plan.err = cases[i].err;
        setup_plan.calls = 0;
        check_setup_failure(cases[i].err, cases[i].reason);
        /* EINVAL is tried again without the newer flags, so it is asked twice per context. */
        cr_assert_eq(setup_plan.calls, cases[i].err == -EINVAL ? 8u : 4u);
    }
}

T_URING(setup_without_nodrop_is_refused_and_the_ring_closed)
{
    need_uring_run();
    setup_plan.hide_nodrop = true;
    check_setup_failure(-ENOTSUP, "IORING_FEAT_NODROP");
}

T_URING(setup_retries_without_newer_flags_on_einval)
{
    need_uring_run();
    setup_plan.einval_new_flags_only = true;
    struct afs_ctx *c = NULL;
    cr_assert_eq(afs_ctx_new(&c, NULL), 0);
    t_ctx = c;
    cr_assert_str_eq(afs_ctx_backend(c), "io_uring", "an old kernel's ring is still a ring");
    cr_assert_null(afs_ctx_fallback_reason(c));
    cr_assert_eq(setup_plan.calls, 2);
    small_io_works(c);
    /* The old-kernel ring through the fault paths too. */
    hook();
    inj.eintr_every = 4;
    inj.ops = ops;
    inj.nops = NOPS;
    inj.short_every = 3;
    mixed_batch(200, 5);
}

#endif /* liburing */

/* ------------------------------------------------------------------------------------------
 * Direct I/O offload: AFS_DIRECT reads/writes are issued inline or marked IOSQE_ASYNC (the
 * kernel's workers issue them) as a run-time rule chooses from windows of each regime,
 * scored by completions per second and CPU time per completion; buffered I/O stays inline.
 * AFS_CTX_INLINE_DIRECT and AFS_CTX_OFFLOAD_DIRECT force either regime. The rule runs on
 * fake clocks (wall and process CPU) that the enter hook moves by what each submitted read
 * would cost in its regime (clock_enter), so each regime's rates are known exactly.
 * ---------------------------------------------------------------------------------------- */

static unsigned seen_async, seen_data; /* data SQEs submitted, and those marked IOSQE_ASYNC */
static int64_t  fake_ns, fake_cpu;    /* the clocks afs__sys.now and .proc_cpu_now read */
/* What a read submitted inline ([0]) or offloaded ([1]) adds to the wall clock (the time the
 * device and the thread take to deliver it, at the rate the regime sustains) and to the
 * process's CPU time. */
static int64_t  wall_cost[2], cpu_cost[2];

static int count_enter(struct io_uring *ring, unsigned wait_nr, struct __kernel_timespec *ts)
{
    struct io_uring_sq *sq = &ring->sq;
    for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
        const struct io_uring_sqe *sqe = &sq->sqes[i & *sq->kring_mask];
        /* user_data 1 and 2 are the backend's own (cancels, the waker's eventfd read). */
        if ((sqe->opcode == IORING_OP_READ || sqe->opcode == IORING_OP_READV) &&
            sqe->user_data > 2) {
            seen_data++;
            seen_async += (sqe->flags & IOSQE_ASYNC) != 0;
        }
    }
    return afs__uring_enter_real(ring, wait_nr, ts);
}

static int64_t fake_now(void)
{
    return fake_ns;
}

static int64_t fake_cpu_now(void)
{
    return fake_cpu;
}

/* Each read submitted moves the fake clocks by its regime's costs; a wait costs nothing. */
static int clock_enter(struct io_uring *ring, unsigned wait_nr, struct __kernel_timespec *ts)
{
    struct io_uring_sq *sq = &ring->sq;
    for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
        const struct io_uring_sqe *sqe = &sq->sqes[i & *sq->kring_mask];
        if (sqe->opcode == IORING_OP_READ && sqe->user_data > 2) {
            int k = (sqe->flags & IOSQE_ASYNC) != 0;
            fake_ns += wall_cost[k];
            fake_cpu += cpu_cost[k];
        }
    }
    return count_enter(ring, wait_nr, ts);
}

/* Reads n blocks of the file at once (one batch) and checks them; returns how many of the
 * submitted reads were marked for the workers. */
static unsigned batch_of_reads(struct afs_file *f, int n)
{
    static char *bufs[64];
    reset_ops();
    seen_async = seen_data = 0;
    for (int i = 0; i < n; i++) {
        if (!bufs[i])
            bufs[i] = afs_buf_alloc(t_ctx, BS);
        cr_assert_eq(afs_queue_read(&ops[i], f, bufs[i], BS, (uint64_t)i * BS, count_cb, NULL), 0);
    }
    wait_all(n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(results[i], BS);
        cr_assert(t_check(bufs[i], BS, (uint64_t)i * BS), "read %d: wrong bytes", i);
    }
    cr_assert_eq(seen_data, (unsigned)n, "every read went through the ring");
    for (int i = 0; i < 64; i++) {
        if (bufs[i])
            afs_buf_free(t_ctx, bufs[i], BS);
        bufs[i] = NULL;
    }
    return seen_async;
}

/* A context (flags) and a file of 64 blocks on it (file_flags), opened for reading. */
static struct afs_file *offload_file(unsigned ctx_flags, int file_flags)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.sync_threshold = 0;
    cfg.flags = ctx_flags;
    t_ctx = t_ctx_cfg(&cfg);
    if (strcmp(afs_ctx_backend(t_ctx), "io_uring") != 0)
        cr_skip_test("backend under test is %s, not io_uring", afs_ctx_backend(t_ctx));
    t_make_file(t_path("d"), 64 * BS);
    struct afs_file *f = NULL;
    int err = afs_open(t_ctx, t_path("d"), AFS_RDONLY | file_flags, 0, AFS_MODE_ASYNC, &f);
    if (err == -EINVAL && (file_flags & AFS_DIRECT))
        cr_skip_test("no O_DIRECT on this file system");
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    return f;
}

static unsigned direct_offload_run(unsigned ctx_flags, int file_flags, int n)
{
    struct afs_file *f = offload_file(ctx_flags, file_flags);
    unsigned marked = batch_of_reads(f, n);
    cr_assert_eq(afs_close(f), 0);
    free_ctx();
    return marked;
}

T_URING(forced_regimes_mark_every_direct_read_or_none)
{
    afs__sys.uring_enter = count_enter;
    cr_assert_eq(direct_offload_run(AFS_CTX_OFFLOAD_DIRECT, AFS_DIRECT, 32), 32,
                 "AFS_CTX_OFFLOAD_DIRECT: 32 direct reads, all marked");
    cr_assert_eq(direct_offload_run(AFS_CTX_OFFLOAD_DIRECT, AFS_DIRECT, 4), 4,
                 "AFS_CTX_OFFLOAD_DIRECT: a small batch too");
    cr_assert_eq(direct_offload_run(AFS_CTX_OFFLOAD_DIRECT, 0, 32), 0,
                 "buffered reads stay inline");
    cr_assert_eq(direct_offload_run(0, AFS_DIRECT, 4), 0,
                 "by default the rule starts inline (its first window, unscored)");
    cr_assert_eq(direct_offload_run(AFS_CTX_INLINE_DIRECT, AFS_DIRECT, 32), 0,
                 "AFS_CTX_INLINE_DIRECT keeps every batch inline");
}

/* The regimes' costs (us per read: wall inline, CPU inline, wall offloaded, CPU offloaded). */
static void set_costs(int64_t wall_in, int64_t cpu_in, int64_t wall_off, int64_t cpu_off)
{
    wall_cost[0] = wall_in * 1000;
    cpu_cost[0] = cpu_in * 1000;
    wall_cost[1] = wall_off * 1000;
    cpu_cost[1] = cpu_off * 1000;
}

/* A context with the fake clocks and a direct file of 64 blocks on it. */
static struct afs_file *rule_file(void)
{
    afs__sys.uring_enter = clock_enter;
    afs__sys.now = fake_now;
    afs__sys.proc_cpu_now = fake_cpu_now;
    return offload_file(0, AFS_DIRECT);
}

/* Batches of 16 direct reads until the rule has scored `samples` windows in all (at most
 * 2,000 batches); *out is the rule's state then. */
static void run_until(struct afs_file *f, unsigned samples, struct afs_offload *out)
{
    afs_ctx_offload(t_ctx, out);
    for (int i = 0; i < 2000 && out->samples < samples; i++) {
        batch_of_reads(f, 16);
        afs_ctx_offload(t_ctx, out);
    }
    cr_assert_geq(out->samples, samples, "windows scored: %u", out->samples);
}

/* The context's choice after the first three sampling rounds (6 windows), checked against
 * the batches that follow it: every direct read marked, or none. */
static int first_choice(struct afs_file *f, struct afs_offload *o)
{
    run_until(f, 6, o);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(batch_of_reads(f, 16), o->offloading ? 16u : 0u,
                     "batch %d after the choice (%s)", i, o->offloading ? "offload" : "inline");
    return o->offloading;
}

/* A virtualised disk (this is what a 2-vCPU guest's virtio disk measured): inline issue
 * sustains 7k reads/s at 70 us of CPU each, offloaded 25k/s at 25 us. */
T_URING(slow_inline_issue_is_measured_and_offloaded)
{
    struct afs_offload o;
    set_costs(140, 70, 40, 25);
    struct afs_file *f = rule_file();
    cr_assert_eq(first_choice(f, &o), 1, "inline %" PRIu64 "/s, offloaded %" PRIu64 "/s",
                 o.inline_rate, o.offload_rate);
    cr_assert_eq(o.inline_rate, 1000000000 / 140000, "inline %" PRIu64 "/s", o.inline_rate);
    cr_assert_eq(o.offload_rate, 1000000000 / 40000, "offloaded %" PRIu64 "/s", o.offload_rate);
    cr_assert_eq(o.inline_cpu_ns, 70000, "inline %" PRIu64 " ns CPU", o.inline_cpu_ns);
    cr_assert_eq(o.offload_cpu_ns, 25000, "offloaded %" PRIu64 " ns CPU", o.offload_cpu_ns);
    cr_assert_eq(afs_close(f), 0);
    free_ctx();
}

/* A window during which the context had no direct I/O to do for seconds says nothing about
 * the regimes: it is not scored (else its rate, a thousandth of the real one, would decide). */
T_URING(an_idle_window_is_not_scored)
{
    struct afs_offload o;
    set_costs(140, 70, 40, 25);
    struct afs_file *f = rule_file();
    run_until(f, 1, &o); /* the first round's inline window is scored; its offloaded one runs */
    for (int i = 0; i < 3; i++)
        batch_of_reads(f, 16);
    fake_ns += 10 * 1000000000LL; /* idle for 10 s */
    cr_assert_eq(first_choice(f, &o), 1);
    cr_assert_eq(o.offload_rate, 1000000000 / 40000, "offloaded %" PRIu64 "/s", o.offload_rate);
    cr_assert_eq(o.inline_rate, 1000000000 / 140000, "inline %" PRIu64 "/s", o.inline_rate);
    cr_assert_eq(afs_close(f), 0);
    free_ctx();
}

/* A context with these costs (as set_costs) chooses `offload` after the first rounds. */
static void expect_choice(int64_t wall_in, int64_t cpu_in, int64_t wall_off, int64_t cpu_off,
                          int offload)
{
    struct afs_offload o;
    set_costs(wall_in, cpu_in, wall_off, cpu_off);
    struct afs_file *f = rule_file();
    cr_assert_eq(first_choice(f, &o), offload,
                 "inline %" PRIu64 "/s at %" PRIu64 " ns, offloaded %" PRIu64 "/s at %" PRIu64
                 " ns", o.inline_rate, o.inline_cpu_ns, o.offload_rate, o.offload_cpu_ns);
    cr_assert_eq(afs_close(f), 0);
    free_ctx();
}

/* Offloading delivers 2x the completions at 3x the CPU per op: the rate decides (a rule
 * that looked at the CPU, or at the submitting thread's time alone, would stay inline);
 * and the other way round. */
T_URING(more_completions_win_over_less_cpu)
{
    expect_choice(100, 10, 50, 30, 1);
    expect_choice(50, 30, 100, 10, 0);
}

/* Rates within 1/8 of each other: the regime with less CPU per completion. NVMe-like: the
 * workers only add CPU; then the converse, where handing off is the cheaper. */
T_URING(close_rates_choose_the_cheaper_regime)
{
    expect_choice(100, 30, 95, 45, 0);
    expect_choice(95, 45, 100, 30, 1);
}

/* Once chosen, offloading applies to every direct submission, small ones too; the other
 * regime is sampled again later, and a change of costs is followed both ways. */
T_URING(the_choice_follows_a_change_in_cost)
{
    struct afs_offload o;
    set_costs(140, 70, 40, 25);
    struct afs_file *f = rule_file();
    cr_assert_eq(first_choice(f, &o), 1);
    cr_assert_eq(batch_of_reads(f, 4), 4, "a batch of 4 is offloaded too");
    cr_assert_eq(batch_of_reads(f, 1), 1, "and a single read");
    /* The device got fast for inline issue: later rounds see it. */
    set_costs(20, 5, 40, 25);
    unsigned before = o.samples;
    run_until(f, before + 2, &o);
    for (int r = 0; r < 4 && o.offloading; r++)
        run_until(f, o.samples + 2, &o);
    cr_assert_eq(o.offloading, 0, "inline %" PRIu64 "/s, offloaded %" PRIu64 "/s",
                 o.inline_rate, o.offload_rate);
    cr_assert_eq(batch_of_reads(f, 16), 0, "the next batch is issued inline");
    /* And back. */
    set_costs(140, 70, 40, 25);
    for (int r = 0; r < 5 && !o.offloading; r++)
        run_until(f, o.samples + 2, &o);
    cr_assert_eq(o.offloading, 1, "inline %" PRIu64 "/s, offloaded %" PRIu64 "/s",
                 o.inline_rate, o.offload_rate);
    cr_assert_eq(afs_close(f), 0);
    free_ctx();
}

/* A context with the costs `base` (as set_costs) chooses `choice`; one round at the costs
 * `noisy` (*noise: the rule's state right after it) changes nothing, nor does the round that
 * follows at base costs again: batches go on as chosen. */
static void one_noisy_round(const int64_t base[4], const int64_t noisy[4], int choice,
                            struct afs_offload *noise)
{
    struct afs_offload o;
    set_costs(base[0], base[1], base[2], base[3]);
    struct afs_file *f = rule_file();
    cr_assert_eq(first_choice(f, &o), choice);
    set_costs(noisy[0], noisy[1], noisy[2], noisy[3]);
    run_until(f, o.samples + 2, &o);
    *noise = o;
    set_costs(base[0], base[1], base[2], base[3]);
    cr_assert_eq(o.offloading, choice, "one round changed the choice");
    run_until(f, o.samples + 2, &o);
    cr_assert_eq(o.offloading, choice, "inline %" PRIu64 "/s at %" PRIu64 " ns, offloaded %"
                 PRIu64 "/s at %" PRIu64 " ns", o.inline_rate, o.inline_cpu_ns,
                 o.offload_rate, o.offload_cpu_ns);
    cr_assert_eq(batch_of_reads(f, 16), choice ? 16u : 0u, "the next batch");
    cr_assert_eq(afs_close(f), 0);
    free_ctx();
}

/* One round against the choice (a burst of noise on a shared machine) does not change it.
 * Inline reads sustain 7k/s, offloaded 25k/s; for one round inline issue measures 100k/s,
 * enough to put inline's average above 9/8 of the offloaded rate. */
T_URING(one_round_against_the_choice_does_not_change_it)
{
    struct afs_offload o;
    one_noisy_round((const int64_t[4]){140, 70, 40, 25}, (const int64_t[4]){10, 70, 40, 25}, 1,
                    &o);
    cr_assert_gt(o.inline_rate * 8, o.offload_rate * 9, "the round favoured inline: %" PRIu64
                 "/s against %" PRIu64 "/s", o.inline_rate, o.offload_rate);
}

/* Rates within 1/8: the CPU decides, and one round whose inline window measured seven
 * times its CPU per op (another process's burst on the clock) does not turn the choice. */
T_URING(one_round_of_cpu_noise_does_not_change_the_choice)
{
    struct afs_offload o;
    one_noisy_round((const int64_t[4]){100, 30, 95, 45}, (const int64_t[4]){100, 200, 95, 45},
                    0, &o);
    cr_assert_gt(o.inline_cpu_ns, o.offload_cpu_ns, "the round made inline look costlier: %"
                 PRIu64 " ns against %" PRIu64 " ns", o.inline_cpu_ns, o.offload_cpu_ns);
}

/* Between rounds the chosen regime runs alone for a while, and the other one comes back:
 * over a long run the wrong regime's share stays small but is not zero. */
T_URING(the_other_regime_is_sampled_now_and_then)
{
    struct afs_offload o;
    set_costs(140, 70, 40, 25);
    struct afs_file *f = rule_file();
    cr_assert_eq(first_choice(f, &o), 1);
    unsigned inline_reads = 0, reads = 0;
    for (int i = 0; i < 600; i++) {
        inline_reads += 16 - batch_of_reads(f, 16);
        reads += 16;
    }
    afs_ctx_offload(t_ctx, &o);
    cr_assert_gt(o.samples, 6, "rounds after the first three: %u windows", o.samples);
    cr_assert_gt(inline_reads, 0, "inline issue was sampled again");
    cr_assert_lt(inline_reads * 10, reads, "%u of %u reads inline", inline_reads, reads);
    cr_assert_eq(o.offloading, 1);
    cr_assert_eq(afs_close(f), 0);
    free_ctx();
}
