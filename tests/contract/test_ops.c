/* 3.3 Ops: many in flight, positional, batched; callbacks, cancel, fsync, queue depth. */
#include "../common.h"
#include "../helpers/syscount.h"

#include "internal.h" /* afs__queue_seq */

#include <sys/stat.h>

struct done {
    int     calls;
    ssize_t last;
    int     in_queue_call;
};

static void count_cb(struct afs_op *op)
{
    struct done *d = op->data;
    cr_assert_eq(d->in_queue_call, 0, "callback ran inside the queueing call");
    d->calls++;
    d->last = op->result;
}

static struct afs_file *t_file(const char *name, int flags)
{
    struct afs_file *f = NULL;
    int err = afs_open(t_ctx, t_path(name), flags, 0644, AFS_MODE_ASYNC, &f);
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    return f;
}

static void wait_for(struct done *d, int n)
{
    while (d->calls < n) {
        int r = afs_ctx_wait(t_ctx, 1, 10LL * 1000 * 1000 * 1000);
        cr_assert_geq(r, 0, "afs_ctx_wait: %s", afs_strerror(r));
    }
}

T_IO(many_ops_in_flight_on_one_file)
{
    t_new_ctx();
    enum { N = 512, BS = 4096 };
    t_make_file(t_path("f"), (size_t)N * BS);
    struct afs_file *f = t_file("f", AFS_RDONLY);
    static struct afs_op ops[N];
    static char bufs[N][BS];
    struct done d = {0};
    d.in_queue_call = 1;
    for (int i = 0; i < N; i++) {
        int k = (i * 7919) % N; /* scattered offsets */
        cr_assert_eq(afs_queue_read(&ops[i], f, bufs[i], BS, (uint64_t)k * BS, count_cb, &d), 0);
    }
    d.in_queue_call = 0;
    cr_assert_eq(d.calls, 0);
    int sub = afs_ctx_submit(t_ctx);
    cr_assert_eq(sub, N, "submitted %d", sub);
    wait_for(&d, N);
    for (int i = 0; i < N; i++) {
        int k = (i * 7919) % N;
        cr_assert_eq(ops[i].result, BS);
        cr_assert(t_check(bufs[i], BS, (uint64_t)k * BS), "op %d has the wrong data", i);
    }
    cr_assert_eq(afs_close(f), 0);
}

/* Ops that ran are counted as system calls of the backend (kernel_submits + kernel_waits,
 * or pool_ops for the thread pool's); the sync backend counts one per op. */
T_IO(stats_count_the_system_calls_of_ops)
{
    t_new_ctx();
    enum { N = 64, BS = 4096 };
    t_make_file(t_path("f"), (size_t)N * BS);
    struct afs_file *f = t_file("f", AFS_RDONLY);
    static struct afs_op ops[N];
    static char bufs[N][BS];
    struct done d = {0};
    struct afs_stats a, b;
    afs_ctx_stats(t_ctx, &a);
    for (int i = 0; i < N; i++)
        cr_assert_eq(afs_queue_read(&ops[i], f, bufs[i], BS, (uint64_t)i * BS, count_cb, &d), 0);
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    wait_for(&d, N);
    afs_ctx_stats(t_ctx, &b);
    uint64_t calls = (b.kernel_submits - a.kernel_submits) + (b.kernel_waits - a.kernel_waits) +
                     (b.pool_ops - a.pool_ops);
    cr_assert_geq(calls, 1, "%d reads ran without a system call counted", N);
    if (strcmp(afs_ctx_backend(t_ctx), "sync") == 0)
        cr_assert_eq(b.kernel_submits - a.kernel_submits, N);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(callbacks_run_only_from_wait)
{
    t_new_ctx();
    t_make_file(t_path("f"), 4096);
    struct afs_file *f = t_file("f", AFS_RDONLY);
    static char buf[4096];
    struct afs_op op = {0};
    struct done d = {0};
    cr_assert_eq(afs_queue_read(&op, f, buf, 4096, 0, count_cb, &d), 0);
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    usleep(50000);
    cr_assert_eq(d.calls, 0, "no callback outside afs_ctx_wait");
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, -1), 1);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(d.last, 4096);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 0), 0, "poll with nothing outstanding");
    cr_assert_eq(afs_close(f), 0);
}

T_IO(short_read_only_at_eof)
{
    t_new_ctx();
    t_make_file(t_path("f"), 10000);
    struct afs_file *f = t_file("f", AFS_RDONLY);
    static char buf[16384];
    struct afs_op a = {0}, b = {0}, c = {0};
    struct done d = {0};
    cr_assert_eq(afs_queue_read(&a, f, buf, sizeof buf, 0, count_cb, &d), 0);
    wait_for(&d, 1);
    cr_assert_eq(a.result, 10000);
    cr_assert(t_check(buf, 10000, 0));
    cr_assert_eq(afs_queue_read(&b, f, buf, sizeof buf, 10000, count_cb, &d), 0);
    cr_assert_eq(afs_queue_read(&c, f, buf, sizeof buf, 1 << 30, count_cb, &d), 0);
    wait_for(&d, 3);
    cr_assert_eq(b.result, 0);
    cr_assert_eq(c.result, 0);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(readv_writev)
{
    t_new_ctx();
    struct afs_file *f = t_file("f", AFS_RDWR | AFS_CREAT);
    static char a[1000], b[3000], c[96];
    t_fill(a, sizeof a, 0);
    t_fill(b, sizeof b, 1000);
    t_fill(c, sizeof c, 4000);
    struct iovec w[3] = {{a, sizeof a}, {b, sizeof b}, {c, sizeof c}};
    struct afs_op op = {0};
    struct done d = {0};
    cr_assert_eq(afs_queue_writev(&op, f, w, 3, 0, count_cb, &d), 0);
    wait_for(&d, 1);
    cr_assert_eq(op.result, 4096);
    static char x[10], y[5000];
    struct iovec r[2] = {{x, sizeof x}, {y, sizeof y}};
    cr_assert_eq(afs_queue_readv(&op, f, r, 2, 0, count_cb, &d), 0);
    wait_for(&d, 2);
    cr_assert_eq(op.result, 4096, "short at EOF: %zd", op.result);
    cr_assert(t_check(x, sizeof x, 0));
    cr_assert(t_check(y, 4086, 10));
    cr_assert_eq(afs_preadv(f, r, 2, 4000), 96);
    cr_assert_eq(afs_queue_readv(&op, f, NULL, 0, 0, count_cb, &d), 0, "zero iovecs");
    wait_for(&d, 3);
    cr_assert_eq(op.result, 0);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(fsync_and_fdatasync)
{
    t_new_ctx();
    struct afs_file *f = t_file("f", AFS_RDWR | AFS_CREAT);
    cr_assert_eq(afs_pwrite(f, "data", 4, 0), 4);
    struct afs_op a = {0}, b = {0};
    struct done d = {0};
    cr_assert_eq(afs_queue_fsync(&a, f, 0, count_cb, &d), 0);
    cr_assert_eq(afs_queue_fsync(&b, f, AFS_FSYNC_DATA, count_cb, &d), 0);
    wait_for(&d, 2);
    cr_assert_eq(a.result, 0);
    cr_assert_eq(b.result, 0);
    cr_assert_eq(afs_queue_fsync(&a, f, 0x80, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_fsync(f, 0), 0);
    cr_assert_eq(afs_fsync(f, AFS_FSYNC_DATA), 0);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(bad_input_is_refused_and_changes_nothing)
{
    t_new_ctx();
    t_make_file(t_path("f"), 4096);
    struct afs_file *f = t_file("f", AFS_RDONLY);
    static char buf[4096];
    struct afs_op op = {0};
    struct done d = {0};
    cr_assert_eq(afs_queue_read(NULL, f, buf, 10, 0, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_read(&op, f, NULL, 10, 0, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_read(&op, f, buf, 10, 0, NULL, &d), -EINVAL);
    cr_assert_eq(afs_queue_read(&op, f, buf, (size_t)SSIZE_MAX + 1, 0, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_read(&op, f, buf, 10, (uint64_t)INT64_MAX, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_read(&op, f, buf, 10, UINT64_MAX, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_write(&op, f, buf, 10, 0, count_cb, &d), -EBADF);
    struct iovec iov[2] = {{buf, 10}, {NULL, 5}};
    cr_assert_eq(afs_queue_readv(&op, f, iov, -1, 0, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_readv(&op, f, iov, AFS_IOV_MAX + 1, 0, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_readv(&op, f, iov, 2, 0, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_readv(&op, f, NULL, 1, 0, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_pread(f, buf, 10, UINT64_MAX), -EINVAL);
    cr_assert_eq(afs_ctx_submit(t_ctx), 0, "nothing was queued");
    cr_assert_eq(afs_ctx_wait(t_ctx, 0, 0), 0);
    cr_assert_eq(d.calls, 0);
    /* Queueing an op twice before its callback: -EBUSY, the first one unharmed. */
    cr_assert_eq(afs_queue_read(&op, f, buf, 10, 0, count_cb, &d), 0);
    cr_assert_eq(afs_queue_read(&op, f, buf, 10, 0, count_cb, &d), -EBUSY);
    wait_for(&d, 1);
    cr_assert_eq(op.result, 10);
    cr_assert_eq(afs_queue_read(&op, f, buf, 10, 0, count_cb, &d), 0, "reusable after");
    wait_for(&d, 2);
    /* Nor on another context: the op belongs to the first until its callback. */
    struct afs_ctx *other = t_ctx_cfg(NULL);
    struct afs_file *g;
    cr_assert_eq(afs_open(other, t_path("f"), AFS_RDONLY, 0, AFS_MODE_ASYNC, &g), 0);
    cr_assert_eq(afs_queue_read(&op, f, buf, 10, 0, count_cb, &d), 0);
    cr_assert_eq(afs_queue_read(&op, g, buf, 10, 0, count_cb, &d), -EBUSY);
    wait_for(&d, 3);
    cr_assert_eq(afs_ctx_wait(other, 0, 0), 0);
    cr_assert_eq(d.calls, 3, "the callback ran %d times", d.calls);
    cr_assert_eq(afs_close(g), 0);
    afs_ctx_free(other);
    cr_assert_eq(afs_close(f), 0);
    struct stat st;
    cr_assert_eq(stat(t_path("f"), &st), 0);
    cr_assert_eq(st.st_size, 4096);
}

/* Memory that once held a queued op of another context (freed since) is what uninitialised
 * stack memory may hold: queueing an op there is no -EBUSY. */
T_IO(stale_op_of_a_freed_context_is_not_busy)
{
    t_make_file(t_path("f"), 4096);
    static char buf[4096];
    static struct afs_op op; /* one address for both contexts */
    struct afs_op snapshot;
    struct done d = {0};
    struct afs_ctx *a = t_ctx_cfg(NULL);
    struct afs_file *f;
    cr_assert_eq(afs_open(a, t_path("f"), AFS_RDONLY, 0, AFS_MODE_ASYNC, &f), 0);
    cr_assert_eq(afs_queue_read(&op, f, buf, 10, 0, count_cb, &d), 0);
    memcpy(&snapshot, &op, sizeof op); /* queued, not yet called back */
    cr_assert_eq(afs_ctx_wait(a, 1, -1), 1);
    cr_assert_eq(afs_close(f), 0);
    afs_ctx_free(a);
    memcpy(&op, &snapshot, sizeof op); /* what the memory may still hold */
    t_new_ctx();
    f = t_file("f", AFS_RDONLY);
    cr_assert_eq(afs_queue_read(&op, f, buf, 10, 0, count_cb, &d), 0);
    wait_for(&d, 2);
    cr_assert_eq(op.result, 10);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(zero_length_op_callback_runs_from_wait)
{
    t_new_ctx();
    struct afs_file *f = t_file("f", AFS_RDWR | AFS_CREAT);
    struct afs_op op = {0};
    struct done d = {0};
    d.in_queue_call = 1;
    cr_assert_eq(afs_queue_write(&op, f, NULL, 0, 0, count_cb, &d), 0);
    d.in_queue_call = 0;
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, -1), 1);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(d.last, 0);
    cr_assert_eq(afs_close(f), 0);
}

/* An op needs no initialising, and its memory is the caller's again once the callback ran:
 * reused in part since (a stack frame that held a finished op, written over by other
 * frames but for one word), it is a fresh op to the next queue call, never -EBUSY. Each
 * word is left as the finished op had it in turn, the rest overwritten. */
T_IO(memory_of_a_finished_op_reused_in_part_is_a_fresh_op)
{
    t_new_ctx();
    t_make_file(t_path("f"), 4096);
    struct afs_file *f = t_file("f", AFS_RDONLY);
    static char buf[4096];
    struct done d = {0};
    enum { WORDS = sizeof(struct afs_op) / sizeof(uint64_t) };
    for (int keep = 0; keep < WORDS; keep++) {
        union {
            struct afs_op op;
            uint64_t      w[WORDS];
        } u;
        memset(&u, 0, sizeof u);
        cr_assert_eq(afs_queue_read(&u.op, f, buf, sizeof buf, 0, count_cb, &d), 0);
        wait_for(&d, 2 * keep + 1);
        cr_assert_eq(u.op.result, 4096);
        uint64_t kept = u.w[keep];
        memset(&u, 0xff, sizeof u);
        u.w[keep] = kept;
        int r = afs_queue_read(&u.op, f, buf, sizeof buf, 0, count_cb, &d);
        cr_assert_eq(r, 0, "word %d kept: %s", keep, strerror(-r));
        wait_for(&d, 2 * keep + 2);
        cr_assert_eq(u.op.result, 4096);
    }
    cr_assert_eq(afs_close(f), 0);
}

T_IO(cancel_before_submit_and_after_completion)
{
    t_new_ctx();
    t_make_file(t_path("f"), 4096);
    struct afs_file *f = t_file("f", AFS_RDONLY);
    static char buf[4096];
    struct afs_op op = {0}, never = {0};
    struct done d = {0};
    cr_assert_eq(afs_cancel(&never), -EINVAL, "never queued");
    cr_assert_eq(afs_cancel(NULL), -EINVAL);
    cr_assert_eq(afs_queue_read(&op, f, buf, 4096, 0, count_cb, &d), 0);
    cr_assert_eq(afs_cancel(&op), 0);
    wait_for(&d, 1);
    cr_assert_eq(op.result, -ECANCELED);
    cr_assert_eq(afs_cancel(&op), -EALREADY, "callback already ran");
    /* Done but its callback pending: too late. */
    cr_assert_eq(afs_queue_read(&op, f, buf, 0, 0, count_cb, &d), 0);
    cr_assert_eq(afs_cancel(&op), -EALREADY);
    wait_for(&d, 2);
    cr_assert_eq(op.result, 0);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(cancel_in_flight_gets_ecanceled_or_the_result)
{
    t_new_ctx();
    enum { N = 64, BS = 65536 };
    t_make_file(t_path("f"), (size_t)N * BS);
    struct afs_file *f = t_file("f", AFS_RDONLY);
    static struct afs_op ops[N];
    static char bufs[N][BS];
    struct done d = {0};
    for (int i = 0; i < N; i++)
        cr_assert_eq(afs_queue_read(&ops[i], f, bufs[i], BS, (uint64_t)i * BS, count_cb, &d), 0);
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    for (int i = 0; i < N; i++) {
        int r = afs_cancel(&ops[i]);
        cr_assert(r == 0 || r == -EALREADY, "afs_cancel: %d", r);
    }
    wait_for(&d, N);
    for (int i = 0; i < N; i++) {
        cr_assert(ops[i].result == -ECANCELED || ops[i].result == BS, "op %d: %zd", i,
                  ops[i].result);
        if (ops[i].result == BS)
            cr_assert(t_check(bufs[i], BS, (uint64_t)i * BS));
    }
    cr_assert_eq(d.calls, N, "every callback ran exactly once");
    cr_assert_eq(afs_close(f), 0);
}

/* A read that can only end by cancellation: a FIFO with no writer data. Only io_uring can
 * take back a read that waits for a pipe (a pool thread sits in read()), so this runs there. */
T_IO(cancel_a_blocked_read)
{
    t_new_ctx();
    if (strcmp(afs_ctx_backend(t_ctx), "io_uring") != 0)
        cr_skip_test("needs a backend that reads FIFOs (io_uring), have %s",
                     afs_ctx_backend(t_ctx));
    cr_assert_eq(mkfifo(t_path("fifo"), 0600), 0);
    struct afs_file *f = t_file("fifo", AFS_RDWR);
    static char buf[64];
    struct afs_op op = {0};
    struct done d = {0};
    /* A FIFO has no offsets: the op API refuses it, the core's sequential read does not. */
    cr_assert_eq(afs_queue_read(&op, f, buf, sizeof buf, 0, count_cb, &d), -ESPIPE);
    cr_assert_eq(afs__queue_seq(&op, f, false, buf, sizeof buf, false, count_cb, &d), 0);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 50 * 1000 * 1000), 0, "blocked, times out");
    cr_assert_eq(afs_cancel(&op), 0);
    wait_for(&d, 1);
    cr_assert_eq(op.result, -ECANCELED, "got %zd", op.result);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(queue_depth_limits_ops_in_flight_but_not_queueing)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.queue_depth = 3;
    t_ctx = t_ctx_cfg(&cfg);
    enum { N = 100 };
    t_make_file(t_path("f"), N * 512);
    struct afs_file *f = t_file("f", AFS_RDONLY);
    static struct afs_op ops[N];
    static char bufs[N][512];
    struct done d = {0};
    for (int i = 0; i < N; i++)
        cr_assert_eq(afs_queue_read(&ops[i], f, bufs[i], 512, (uint64_t)i * 512, count_cb, &d), 0);
    /* The sync backend finishes each op as it is handed over, so it never has more than
     * one in flight and takes them all; the others stop at queue_depth. */
    int want = strcmp(afs_ctx_backend(t_ctx), "sync") ? 3 : N;
    cr_assert_eq(afs_ctx_submit(t_ctx), want, "at most queue_depth handed over");
    wait_for(&d, N);
    for (int i = 0; i < N; i++)
        cr_assert(t_check(bufs[i], 512, (uint64_t)i * 512));
    cr_assert_eq(afs_close(f), 0);
}

static struct afs_op chain_op;
static char chain_buf[4096];
static int chain_left;
static void chain_cb(struct afs_op *op)
{
    cr_assert_eq(op->result, 4096);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 0), -EDEADLK, "no waiting inside a callback");
    /* A blocking call inside a callback runs inline instead of deadlocking. */
    char x[16];
    cr_assert_eq(afs_pread(op->data, x, sizeof x, 0), 16);
    if (--chain_left > 0)
        cr_assert_eq(afs_queue_read(&chain_op, op->data, chain_buf, 4096, 0, chain_cb, op->data), 0);
}

T_IO(callbacks_can_queue_more)
{
    t_new_ctx();
    t_make_file(t_path("f"), 4096);
    struct afs_file *f = t_file("f", AFS_RDONLY);
    chain_left = 10;
    cr_assert_eq(afs_queue_read(&chain_op, f, chain_buf, 4096, 0, chain_cb, f), 0);
    while (chain_left > 0)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, -1), 0);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(close_waits_for_the_files_ops)
{
    t_new_ctx();
    struct afs_file *f = t_file("f", AFS_RDWR | AFS_CREAT);
    enum { N = 32, BS = 65536 };
    static struct afs_op ops[N];
    static char bufs[N][BS];
    struct done d = {0};
    for (int i = 0; i < N; i++) {
        t_fill(bufs[i], BS, (uint64_t)i * BS);
        cr_assert_eq(afs_queue_write(&ops[i], f, bufs[i], BS, (uint64_t)i * BS, count_cb, &d), 0);
    }
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(d.calls, N);
    int fd = open(t_path("f"), O_RDONLY);
    static char back[N * BS];
    cr_assert_eq(read(fd, back, sizeof back), (ssize_t)sizeof back);
    cr_assert(t_check(back, sizeof back, 0));
    close(fd);
}

/* libaio's kernel context's events (libaio.c); weak: not every build has the backend. */
#if defined(__GNUC__) && !defined(_WIN32)
__attribute__((weak)) unsigned afs__laio_cap(struct afs_ctx *ctx);
#endif

/* io_uring: one io_uring_enter for a whole batch, whatever its size. libaio: one io_submit,
 * on an O_DIRECT file (buffered files go to the thread pool, see ladder/libaio_*), unless
 * its kernel context was made smaller than the batch (fs.aio-max-nr is machine-wide: other
 * programs' contexts, or tests running beside this one, may leave it no room). */
T_IO(one_kernel_submit_per_batch)
{
    t_new_ctx();
    enum { N = 64 };
    t_make_file(t_path("f"), N * 4096);
    bool laio = !strcmp(afs_ctx_backend(t_ctx), "libaio");
    struct afs_file *f = NULL;
    int err = afs_open(t_ctx, t_path("f"), AFS_RDONLY | (laio ? AFS_DIRECT : 0), 0644,
                       AFS_MODE_ASYNC, &f);
    if (err == -EINVAL && laio)
        cr_skip_test("the file system under %s refuses O_DIRECT", t_dir);
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    static struct afs_op ops[N];
    static _Alignas(4096) char bufs[N][4096];
    struct done d = {0};
    struct afs_stats a, b;
    for (int i = 0; i < N; i++)
        cr_assert_eq(afs_queue_read(&ops[i], f, bufs[i], 4096, (uint64_t)i * 4096, count_cb, &d), 0);
    sc_install();
    struct sc_counts ka = sc_get();
    afs_ctx_stats(t_ctx, &a);
    cr_assert_eq(afs_ctx_submit(t_ctx), N);
    afs_ctx_stats(t_ctx, &b);
    struct sc_counts kb = sc_get();
    /* Counted at the system call (io_uring_enter, io_submit), not by the library. */
    bool small = false;
#if defined(__GNUC__) && !defined(_WIN32)
    if (laio && afs__laio_cap && afs__laio_cap(t_ctx) < N) {
        small = true;
        cr_log_info("libaio context of %u events (fs.aio-max-nr): submits not counted",
                    afs__laio_cap(t_ctx));
    }
#endif
    if (!small &&
        (!strcmp(afs_ctx_backend(t_ctx), "io_uring") || !strcmp(afs_ctx_backend(t_ctx), "libaio")))
        cr_assert_eq(sc_submits(ka, kb), 1, "%lu system calls", sc_submits(ka, kb));
    cr_assert_eq(b.ops - a.ops, 0);
    wait_for(&d, N);
    /* The table is restored once no pool thread can be reading it. */
    sc_uninstall();
    cr_assert_eq(afs_close(f), 0);
}
