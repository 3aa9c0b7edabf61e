/* The posix-aio backend (src/bsd/posix_aio.c): lists longer than the OS takes at once, wakes
 * and thread-pool completions ending a wait while AIO is in flight, cancellation that waits
 * for the OS. Each test skips unless the backend under test is posix-aio. */
#include "../common.h"

#include "internal.h" /* afs__queue_seq: a FIFO has no offsets */
#include "../helpers/syscount.h"

#include <stdatomic.h>
#include <sys/stat.h>

static void need_posix_aio(void)
{
    t_new_ctx();
    if (strcmp(afs_ctx_backend(t_ctx), "posix-aio") != 0)
        cr_skip_test("backend under test is %s, not posix-aio", afs_ctx_backend(t_ctx));
}

struct tally {
    int     calls;
    ssize_t last;
};

static void tally_cb(struct afs_op *op)
{
    struct tally *t = op->data;
    t->calls++;
    t->last = op->result;
}

static struct afs_file *open_file(const char *name, int flags)
{
    struct afs_file *f = NULL;
    int err = afs_open(t_ctx, t_path(name), flags, 0644, AFS_MODE_ASYNC, &f);
    cr_assert_eq(err, 0, "afs_open %s: %s", name, afs_strerror(err));
    return f;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* More ops than one lio_listio takes (glibc: 64 per list here, macOS 16, FreeBSD 256). */
T_IO(paio_batch_longer_than_a_list)
{
    need_posix_aio();
    enum { N = 300, BS = 8192 };
    t_make_file(t_path("f"), (size_t)N * BS);
    struct afs_file *f = open_file("f", AFS_RDONLY);
    static struct afs_op ops[N];
    static char bufs[N][BS];
    struct tally t = {0};
    struct afs_stats a, b;
    for (int i = 0; i < N; i++) {
        int k = (i * 7) % N;
        cr_assert_eq(afs_queue_read(&ops[i], f, bufs[i], BS, (uint64_t)k * BS, tally_cb, &t), 0);
    }
    afs_ctx_stats(t_ctx, &a);
    /* lio_listio calls counted through the system-call table, not by the library. */
    sc_install();
    struct sc_counts sa = sc_get();
    cr_assert_eq(afs_ctx_submit(t_ctx), N);
    struct sc_counts sb = sc_get();
    cr_assert_geq(sb.listios - sa.listios, 2, "one list cannot take %d", N);
    while (t.calls < N)
        cr_assert_geq(afs_ctx_wait(t_ctx, N - t.calls, 10LL * 1000 * 1000 * 1000), 0);
    sc_uninstall(); /* nothing in flight reads the table any more */
    for (int i = 0; i < N; i++) {
        int k = (i * 7) % N;
        cr_assert_eq(ops[i].result, BS, "op %d: %zd", i, ops[i].result);
        cr_assert(t_check(bufs[i], BS, (uint64_t)k * BS), "op %d has the wrong data", i);
    }
    afs_ctx_stats(t_ctx, &b);
    cr_assert_eq(b.pool_ops - a.pool_ops, 0, "plain reads stay on AIO");
    cr_assert_eq(afs_close(f), 0);
}

/* A queue depth below the list size, and writes then fsync through aio_fsync. */
T_IO(paio_small_queue_depth_writes_and_fsync)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.queue_depth = 5;
    t_ctx = t_ctx_cfg(&cfg);
    if (strcmp(afs_ctx_backend(t_ctx), "posix-aio") != 0)
        cr_skip_test("backend under test is %s, not posix-aio", afs_ctx_backend(t_ctx));
    enum { N = 40, BS = 4096 };
    struct afs_file *f = open_file("f", AFS_RDWR | AFS_CREAT);
    static struct afs_op ops[N];
    static char bufs[N][BS];
    struct tally t = {0};
    for (int i = 0; i < N; i++) {
        t_fill(bufs[i], BS, (uint64_t)i * BS);
        cr_assert_eq(afs_queue_write(&ops[i], f, bufs[i], BS, (uint64_t)i * BS, tally_cb, &t), 0);
    }
    while (t.calls < N)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, 10LL * 1000 * 1000 * 1000), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(ops[i].result, BS);
    struct afs_op s = {0};
    cr_assert_eq(afs_queue_fsync(&s, f, AFS_FSYNC_DATA, tally_cb, &t), 0);
    while (t.calls < N + 1)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, -1), 0);
    cr_assert_eq(s.result, 0);
    int fd = open(t_path("f"), O_RDONLY);
    static char back[N * BS];
    cr_assert_eq(read(fd, back, sizeof back), (ssize_t)sizeof back);
    cr_assert(t_check(back, sizeof back, 0));
    close(fd);
    cr_assert_eq(afs_close(f), 0);
}

/* The rest keep an AIO read in flight as long as they like: a read on a FIFO with no data
 * (fed later with exactly the bytes asked for, or the core resubmits the rest of a short read),
 * queued as the position API and streams queue them (a FIFO has no offsets).
 * glibc's AIO falls back to read() for pipes (its pread() gives ESPIPE); the BSDs refuse AIO
 * on FIFOs, so these run where glibc does the AIO. */
static struct afs_file *blocked_fifo(void)
{
#ifndef __GLIBC__
    cr_skip_test("needs AIO on a FIFO (glibc)");
#endif
    cr_assert_eq(mkfifo(t_path("fifo"), 0600), 0);
    /* Adopted without AFS_NONBLOCK: the FIFO stays blocking and its reads go to the OS's
     * AIO (one afs_open() made would wait in the readiness engine instead). */
    int fd = open(t_path("fifo"), O_RDWR | O_CLOEXEC);
    cr_assert(fd >= 0, "open fifo: %s", strerror(errno));
    struct afs_file *f;
    cr_assert_eq(afs_file_from_fd(t_ctx, fd, AFS_RDWR, AFS_MODE_SYNC, &f), 0);
    return f;
}

static void feed_fifo(const char *s)
{
    int fd = open(t_path("fifo"), O_WRONLY | O_NONBLOCK);
    cr_assert(fd >= 0, "open fifo: %s", strerror(errno));
    cr_assert_eq(write(fd, s, strlen(s)), (ssize_t)strlen(s));
    close(fd);
}

static void *wake_later(void *arg)
{
    usleep(50 * 1000);
    afs_ctx_wake(arg);
    return NULL;
}

T_IO(paio_wake_from_another_thread_ends_a_wait_with_aio_in_flight)
{
    need_posix_aio();
    struct afs_file *f = blocked_fifo();
    static char buf[5]; /* exactly what is fed: a short read would be resubmitted */
    struct afs_op op = {0};
    struct tally t = {0};
    cr_assert_eq(afs__queue_seq(&op, f, false, buf, sizeof buf, false, tally_cb, &t), 0);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 20 * 1000 * 1000), 0, "blocked: times out");
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, wake_later, t_ctx), 0);
    int64_t t0 = now_ms();
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 5LL * 1000 * 1000 * 1000), 0, "woken, nothing done");
    int64_t took = now_ms() - t0;
    pthread_join(th, NULL);
    /* A hang guard: without the wake, the wait lasts its whole 5 s. */
    cr_assert_lt(took, 4000, "the wake took %lld ms", (long long)took);
    cr_assert_eq(t.calls, 0);
    feed_fifo("hello");
    while (t.calls < 1)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, 5LL * 1000 * 1000 * 1000), 0);
    cr_assert_eq(op.result, 5);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    cr_assert_eq(afs_close(f), 0);
}

/* readv runs on the thread pool; its completion must end a wait while AIO is in flight. */
T_IO(paio_pool_completion_ends_a_wait_with_aio_in_flight)
{
    need_posix_aio();
    struct afs_file *fifo = blocked_fifo();
    t_make_file(t_path("f"), 4096);
    struct afs_file *f = open_file("f", AFS_RDONLY);
    static char buf[1], a[100], b[200];
    struct afs_op rd = {0}, rv = {0};
    struct tally t = {0}, tv = {0};
    cr_assert_eq(afs__queue_seq(&rd, fifo, false, buf, sizeof buf, false, tally_cb, &t), 0);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 20 * 1000 * 1000), 0, "blocked: times out");
    struct afs_stats s0, s1;
    afs_ctx_stats(t_ctx, &s0);
    struct iovec iov[2] = {{a, sizeof a}, {b, sizeof b}};
    cr_assert_eq(afs_queue_readv(&rv, f, iov, 2, 0, tally_cb, &tv), 0);
    int64_t t0 = now_ms();
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 5LL * 1000 * 1000 * 1000), 1);
    cr_assert_lt(now_ms() - t0, 4000, "ended by the completion, not the 5 s limit");
    afs_ctx_stats(t_ctx, &s1);
    cr_assert_eq(s1.pool_ops - s0.pool_ops, 1, "readv goes to the pool");
    cr_assert_eq(tv.calls, 1);
    cr_assert_eq(rv.result, 300);
    cr_assert(t_check(a, sizeof a, 0) && t_check(b, sizeof b, 100));
    cr_assert_eq(t.calls, 0);
    feed_fifo("x");
    while (t.calls < 1)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, 5LL * 1000 * 1000 * 1000), 0);
    cr_assert_eq(rd.result, 1);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_close(fifo), 0);
}

/* glibc cannot cancel a read that is running: the op must stay in flight (its buffer the
 * OS's) until the read really ends, and only then complete. */
T_IO(paio_cancel_waits_for_the_os)
{
    need_posix_aio();
    struct afs_file *f = blocked_fifo();
    static char buf[64];
    struct afs_op op = {0};
    struct tally t = {0};
    cr_assert_eq(afs__queue_seq(&op, f, false, buf, sizeof buf, false, tally_cb, &t), 0);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 50 * 1000 * 1000), 0, "blocked: times out");
    cr_assert_eq(afs_cancel(&op), 0);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 100 * 1000 * 1000), 0,
                 "not reported while the OS may still write into the buffer");
    cr_assert_eq(t.calls, 0);
    feed_fifo("abc");
    while (t.calls < 1)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, 5LL * 1000 * 1000 * 1000), 0);
    cr_assert(op.result == -ECANCELED || op.result == 3, "got %zd", op.result);
    cr_assert_eq(afs_close(f), 0);
}
