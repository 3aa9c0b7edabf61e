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

/* The rest keep an AIO read in flight as long as they like: a read of a regular file into
 * a page that is not there yet, registered with userfaultfd (Linux). The OS's AIO thread
 * then waits inside pread() until the test supplies the page, and the read ends with the
 * file's bytes. (Files without offsets do not go to POSIX AIO: see posix_aio.c.) */
#if defined(__linux__) && __has_include(<linux/userfaultfd.h>)
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

struct held {
    int               uffd;
    char             *page;
    size_t            len;
    struct afs_file  *f;
};

static struct held held_read_buffer(void)
{
    struct held h = {.len = (size_t)sysconf(_SC_PAGESIZE)};
    h.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (h.uffd < 0)
        cr_skip_test("no userfaultfd here: %s", strerror(errno));
    struct uffdio_api api = {.api = UFFD_API};
    cr_assert_eq(ioctl(h.uffd, UFFDIO_API, &api), 0, "UFFDIO_API: %s", strerror(errno));
    h.page = mmap(NULL, h.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(h.page, MAP_FAILED);
    struct uffdio_register reg = {.range = {(uintptr_t)h.page, h.len},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    cr_assert_eq(ioctl(h.uffd, UFFDIO_REGISTER, &reg), 0, "UFFDIO_REGISTER: %s",
                 strerror(errno));
    t_make_file(t_path("held"), h.len);
    h.f = open_file("held", AFS_RDONLY);
    return h;
}

/* Supplies the page: the read waiting in it goes on. */
static void release_held(struct held *h)
{
    static char zero[65536];
    struct uffdio_copy cp = {.dst = (uintptr_t)h->page, .src = (uintptr_t)zero, .len = h->len};
    cr_assert(h->len <= sizeof zero);
    cr_assert_eq(ioctl(h->uffd, UFFDIO_COPY, &cp), 0, "UFFDIO_COPY: %s", strerror(errno));
}

static void held_free(struct held *h)
{
    cr_assert_eq(afs_close(h->f), 0);
    close(h->uffd);
    munmap(h->page, h->len);
}

/* Queues the read of the held page and waits until it is with the OS, blocked. */
static void queue_held(struct held *h, struct afs_op *op, struct tally *t)
{
    cr_assert_eq(afs_queue_read(op, h->f, h->page, h->len, 0, tally_cb, t), 0);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 20 * 1000 * 1000), 0, "blocked: times out");
    cr_assert_eq(t->calls, 0, "the held read completed: %zd", t->last);
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
    struct held h = held_read_buffer();
    struct afs_op op = {0};
    struct tally t = {0};
    queue_held(&h, &op, &t);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, wake_later, t_ctx), 0);
    int64_t t0 = now_ms();
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 5LL * 1000 * 1000 * 1000), 0, "woken, nothing done");
    int64_t took = now_ms() - t0;
    pthread_join(th, NULL);
    /* A hang guard: without the wake, the wait lasts its whole 5 s. */
    cr_assert_lt(took, 4000, "the wake took %lld ms", (long long)took);
    cr_assert_eq(t.calls, 0);
    release_held(&h);
    while (t.calls < 1)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, 5LL * 1000 * 1000 * 1000), 0);
    cr_assert_eq(op.result, (ssize_t)h.len);
    cr_assert(t_check(h.page, h.len, 0));
    held_free(&h);
}

/* readv runs on the thread pool; its completion must end a wait while AIO is in flight. */
T_IO(paio_pool_completion_ends_a_wait_with_aio_in_flight)
{
    need_posix_aio();
    struct held h = held_read_buffer();
    t_make_file(t_path("f"), 4096);
    struct afs_file *f = open_file("f", AFS_RDONLY);
    static char a[100], b[200];
    struct afs_op rd = {0}, rv = {0};
    struct tally t = {0}, tv = {0};
    queue_held(&h, &rd, &t);
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
    release_held(&h);
    while (t.calls < 1)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, 5LL * 1000 * 1000 * 1000), 0);
    cr_assert_eq(rd.result, (ssize_t)h.len);
    cr_assert_eq(afs_close(f), 0);
    held_free(&h);
}

/* An op with the OS when it is cancelled: glibc cannot cancel a read that is running (the
 * backend does not ask it to), so the op stays in flight (its buffer the OS's) until the
 * read really ends, and only then completes: with -ECANCELED, as a pool worker's would,
 * although the read ran to its end. */
T_IO(paio_cancel_waits_for_the_os)
{
    need_posix_aio();
    struct held h = held_read_buffer();
    struct afs_op op = {0};
    struct tally t = {0};
    queue_held(&h, &op, &t);
    cr_assert_eq(afs_cancel(&op), 0);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 100 * 1000 * 1000), 0,
                 "not reported while the OS may still write into the buffer");
    cr_assert_eq(t.calls, 0);
    release_held(&h);
    while (t.calls < 1)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, 5LL * 1000 * 1000 * 1000), 0);
    cr_assert_eq(op.result, -ECANCELED, "got %zd", op.result);
    held_free(&h);
}

/* A file without offsets whose reads do take one (a /proc file that takes no pwrite, opened
 * for writing too) is read at its position, once: not at 0 again and again. */
T_IO(paio_a_proc_file_without_pwrite_is_read_once)
{
    need_posix_aio();
    struct afs_file *f = NULL;
    cr_assert_eq(afs_open(t_ctx, "/proc/self/comm", AFS_RDWR, 0, AFS_MODE_SYNC, &f), 0);
    char buf[4];
    ssize_t n, total = 0;
    for (int i = 0; i < 64 && (n = afs_read(f, buf, sizeof buf)) > 0; i++)
        total += n;
    cr_assert_eq(n, 0, "no end of file after %zd bytes", total);
    cr_assert(total > 0 && total <= 16, "read %zd bytes of a name of at most 16", total);
    cr_assert_eq(afs_close(f), 0);
}

/* More reads waiting on pipes than queue_depth: they do not take the OS's AIO slots. */
T_IO(paio_more_waiting_pipe_reads_than_the_queue_depth)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.queue_depth = 2;
    t_ctx = t_ctx_cfg(&cfg);
    if (strcmp(afs_ctx_backend(t_ctx), "posix-aio") != 0)
        cr_skip_test("backend under test is %s, not posix-aio", afs_ctx_backend(t_ctx));
    enum { N = 6 };
    int p[N][2];
    struct afs_file *f[N];
    struct afs_op op[N];
    struct tally t[N];
    static char buf[N][4];
    memset(op, 0, sizeof op);
    memset(t, 0, sizeof t);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(pipe(p[i]), 0);
        cr_assert_eq(afs_file_from_fd(t_ctx, p[i][0], AFS_RDONLY, AFS_MODE_SYNC, &f[i]), 0);
        cr_assert_eq(afs__queue_seq(&op[i], f[i], false, buf[i], 4, false, tally_cb, &t[i]),
                     0);
    }
    (void)afs_ctx_wait(t_ctx, 0, 0);
    t_make_file(t_path("f"), 4096);
    struct afs_file *rf = open_file("f", AFS_RDONLY);
    static char rbuf[4096];
    struct afs_op rop = {0};
    struct tally rt = {0};
    cr_assert_eq(afs_queue_read(&rop, rf, rbuf, sizeof rbuf, 0, tally_cb, &rt), 0);
    while (rt.calls < 1)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, 5LL * 1000 * 1000 * 1000), 0);
    cr_assert_eq(rop.result, 4096, "a file read beside them: %zd", rop.result);
    for (int i = 0; i < N; i++)
        cr_assert_eq(write(p[i][1], "abcd", 4), 4);
    for (int i = 0; i < N; i++) {
        while (t[i].calls < 1)
            cr_assert_geq(afs_ctx_wait(t_ctx, 1, 5LL * 1000 * 1000 * 1000), 0);
        cr_assert_eq(op[i].result, 4);
        cr_assert_eq(memcmp(buf[i], "abcd", 4), 0);
        cr_assert_eq(afs_close(f[i]), 0);
        close(p[i][1]);
    }
    cr_assert_eq(afs_close(rf), 0);
}
#endif
