/* Issue 3: the libaio backend's routing (O_DIRECT ops to the kernel, the rest to the thread
 * pool) and the AUTO fallback ladder.
 *
 * Three groups, each skipped where it does not apply:
 *  - libaio_*: run when the context lands on libaio (ASYNCFS_BACKEND=libaio, or AUTO where
 *    io_uring is blocked).
 *  - blocked_*: run only with AFS_EXPECT_NO_URING=1, which ctest sets when it runs this
 *    binary under tests/helpers/noring (a seccomp filter that refuses io_uring with EPERM,
 *    as Docker's default profile does).
 *  - aio_max_nr_*: run only with AFS_LADDER_HOG=1 (ctest runs them alone and serially):
 *    they use up the machine-wide fs.aio-max-nr for a moment. */
#include "../common.h"
#include "../helpers/syscount.h"

#include <criterion/logging.h>
#include <linux/aio_abi.h>
#include <linux/io_uring.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

#define T_LADDER(name, ...)                                                                   \
    Test(ladder, name, .init = t_setup, .fini = t_teardown, .timeout = 30, ##__VA_ARGS__)

struct done {
    int calls;
};

static void count_cb(struct afs_op *op)
{
    ((struct done *)op->data)->calls++;
}

static void wait_for(struct afs_ctx *c, struct done *d, int n)
{
    while (d->calls < n) {
        int r = afs_ctx_wait(c, 1, 10LL * 1000 * 1000 * 1000);
        cr_assert_geq(r, 0, "afs_ctx_wait: %s", afs_strerror(r));
    }
}

static bool env_is(const char *name, const char *value)
{
    const char *v = getenv(name);
    return v && strcmp(v, value) == 0;
}

/* A context that must be on libaio, else the test is skipped. */
static struct afs_ctx *libaio_ctx(const struct afs_config *cfg)
{
    t_ctx = t_ctx_cfg(cfg);
    if (strcmp(afs_ctx_backend(t_ctx), "libaio") != 0)
        cr_skip_test("backend under test is %s, not libaio", afs_ctx_backend(t_ctx));
    return t_ctx;
}

static struct afs_file *open_file(struct afs_ctx *c, const char *name, int flags)
{
    struct afs_file *f = NULL;
    int err = afs_open(c, t_path(name), flags, 0644, AFS_MODE_ASYNC, &f);
    if (err == -EINVAL && (flags & AFS_DIRECT))
        cr_skip_test("the file system under %s refuses O_DIRECT", t_dir);
    cr_assert_eq(err, 0, "afs_open %s: %s", name, afs_strerror(err));
    return f;
}

/* Linux AIO fsync (IOCB_CMD_FSYNC) is 4.18; before, the backend sends fsync to the pool. */
static bool kernel_has_aio_fsync(void)
{
    struct utsname u;
    int maj = 0, min = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &maj, &min) != 2)
        return false;
    return maj > 4 || (maj == 4 && min >= 18);
}

/* ------------------------------------------------------------------------------------------
 * libaio: routing
 * ---------------------------------------------------------------------------------------- */

enum { N = 64, BS = 4096 };

T_LADDER(libaio_direct_ops_go_to_the_kernel_in_one_submit)
{
    struct afs_ctx *c = libaio_ctx(NULL);
    t_make_file(t_path("d"), (size_t)N * BS);
    struct afs_file *f = open_file(c, "d", AFS_RDWR | AFS_DIRECT);
    char *bufs = afs_buf_alloc(c, (size_t)N * BS);
    cr_assert_not_null(bufs);
    static struct afs_op ops[N];
    struct done d = {0};
    struct afs_stats a, b;
    for (int i = 0; i < N; i++) {
        int k = (i * 37) % N; /* scattered offsets */
        cr_assert_eq(afs_queue_read(&ops[i], f, bufs + (size_t)i * BS, BS, (uint64_t)k * BS,
                                    count_cb, &d), 0);
    }
    sc_install();
    struct sc_counts ka = sc_get();
    afs_ctx_stats(c, &a);
    cr_assert_eq(afs_ctx_submit(c), N);
    afs_ctx_stats(c, &b);
    struct sc_counts kb = sc_get();
    sc_uninstall();
    /* Counted at the system call, not by the library's own counter. */
    cr_assert_eq(kb.io_submits - ka.io_submits, 1, "%lu io_submit calls for %d ops",
                 kb.io_submits - ka.io_submits, N);
    cr_assert_eq(b.kernel_submits - a.kernel_submits, 1);
    wait_for(c, &d, N);
    afs_ctx_stats(c, &b);
    cr_assert_eq(b.pool_ops, a.pool_ops, "%llu direct reads went to the pool",
                 (unsigned long long)(b.pool_ops - a.pool_ops));
    for (int i = 0; i < N; i++) {
        int k = (i * 37) % N;
        cr_assert_eq(ops[i].result, BS, "op %d: %zd", i, ops[i].result);
        cr_assert(t_check(bufs + (size_t)i * BS, BS, (uint64_t)k * BS), "op %d: wrong data", i);
    }
    afs_buf_free(c, bufs, (size_t)N * BS);
    cr_assert_eq(afs_close(f), 0);
}

T_LADDER(libaio_direct_writev_readv_fsync_stay_off_the_pool)
{
    struct afs_ctx *c = libaio_ctx(NULL);
    struct afs_file *f = open_file(c, "d", AFS_RDWR | AFS_CREAT | AFS_DIRECT);
    size_t n = 16 * BS;
    char *w = afs_buf_alloc(c, n), *r = afs_buf_alloc(c, n);
    t_fill(w, n, 0);
    struct afs_stats a, b;
    afs_ctx_stats(c, &a);
    /* Unequal iovecs, aligned each. */
    struct iovec wv[3] = {{w, BS}, {w + BS, 7 * BS}, {w + 8 * BS, 8 * BS}};
    struct iovec rv[2] = {{r, 5 * BS}, {r + 5 * BS, 11 * BS}};
    struct afs_op op = {0}, s1 = {0}, s2 = {0};
    struct done d = {0};
    cr_assert_eq(afs_queue_writev(&op, f, wv, 3, 0, count_cb, &d), 0);
    wait_for(c, &d, 1);
    cr_assert_eq(op.result, (ssize_t)n);
    cr_assert_eq(afs_queue_readv(&op, f, rv, 2, 0, count_cb, &d), 0);
    wait_for(c, &d, 2);
    cr_assert_eq(op.result, (ssize_t)n);
    cr_assert(t_check(r, n, 0));
    /* Blocking calls on a direct file take the same path. */
    cr_assert_eq(afs_pwrite(f, w, 2 * BS, n), 2 * BS);
    cr_assert_eq(afs_pread(f, r, 2 * BS, n), 2 * BS);
    cr_assert(t_check(r, 2 * BS, 0));
    afs_ctx_stats(c, &b);
    cr_assert_eq(b.pool_ops, a.pool_ops, "direct transfers went to the pool");
    cr_assert_geq(b.kernel_submits - a.kernel_submits, 4);

    cr_assert_eq(afs_queue_fsync(&s1, f, 0, count_cb, &d), 0);
    cr_assert_eq(afs_queue_fsync(&s2, f, AFS_FSYNC_DATA, count_cb, &d), 0);
    wait_for(c, &d, 4);
    cr_assert_eq(s1.result, 0, "fsync: %s", afs_strerror((int)s1.result));
    cr_assert_eq(s2.result, 0, "fdatasync: %s", afs_strerror((int)s2.result));
    afs_ctx_stats(c, &a);
    if (kernel_has_aio_fsync())
        cr_assert_eq(a.pool_ops, b.pool_ops, "fsync on a direct file went to the pool");
    afs_buf_free(c, w, n);
    afs_buf_free(c, r, n);
    cr_assert_eq(afs_close(f), 0);
}

T_LADDER(libaio_buffered_ops_go_to_the_pool)
{
    struct afs_ctx *c = libaio_ctx(NULL);
    t_make_file(t_path("b"), (size_t)N * BS);
    struct afs_file *f = open_file(c, "b", AFS_RDONLY);
    static struct afs_op ops[N];
    static char bufs[N][BS];
    struct done d = {0};
    struct afs_stats a, b;
    sc_install();
    struct sc_counts ka = sc_get();
    afs_ctx_stats(c, &a);
    for (int i = 0; i < N; i++)
        cr_assert_eq(afs_queue_read(&ops[i], f, bufs[i], BS, (uint64_t)i * BS, count_cb, &d), 0);
    cr_assert_eq(afs_ctx_submit(c), N);
    wait_for(c, &d, N);
    afs_ctx_stats(c, &b);
    cr_assert_eq(b.pool_ops - a.pool_ops, N, "%llu of %d buffered reads on the pool",
                 (unsigned long long)(b.pool_ops - a.pool_ops), N);
    cr_assert_eq(b.kernel_submits, a.kernel_submits, "buffered reads went to io_submit");
    struct sc_counts kb = sc_get();
    sc_uninstall();
    cr_assert_eq(kb.io_submits, ka.io_submits, "buffered reads went to io_submit");
    cr_assert_geq(kb.transfers - ka.transfers, N, "the pool's preads were not all counted");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(ops[i].result, BS);
        cr_assert(t_check(bufs[i], BS, (uint64_t)i * BS));
    }
    cr_assert_eq(afs_close(f), 0);
}

/* One batch, two destinations; one afs_ctx_wait sees both kinds of completion (the pool's
 * and the kernel's both signal the context's eventfd). */
T_LADDER(libaio_mixed_batch_splits_between_kernel_and_pool)
{
    struct afs_ctx *c = libaio_ctx(NULL);
    t_make_file(t_path("d"), (size_t)N * BS);
    t_make_file(t_path("b"), (size_t)N * BS);
    struct afs_file *fd = open_file(c, "d", AFS_RDONLY | AFS_DIRECT);
    struct afs_file *fb = open_file(c, "b", AFS_RDONLY);
    char *bufs = afs_buf_alloc(c, (size_t)N * BS);
    static struct afs_op ops[N];
    struct done d = {0};
    struct afs_stats a, b;
    sc_install();
    struct sc_counts ka = sc_get();
    afs_ctx_stats(c, &a);
    for (int i = 0; i < N; i++)
        cr_assert_eq(afs_queue_read(&ops[i], i % 2 ? fb : fd, bufs + (size_t)i * BS, BS,
                                    (uint64_t)i * BS, count_cb, &d), 0);
    cr_assert_eq(afs_ctx_submit(c), N);
    afs_ctx_stats(c, &b);
    struct sc_counts kb = sc_get();
    sc_uninstall();
    cr_assert_eq(kb.io_submits - ka.io_submits, 1, "%lu io_submit calls",
                 kb.io_submits - ka.io_submits);
    cr_assert_eq(b.kernel_submits - a.kernel_submits, 1);
    cr_assert_eq(b.pool_ops - a.pool_ops, N / 2);
    wait_for(c, &d, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(ops[i].result, BS, "op %d: %zd", i, ops[i].result);
        cr_assert(t_check(bufs + (size_t)i * BS, BS, (uint64_t)i * BS), "op %d", i);
    }
    afs_buf_free(c, bufs, (size_t)N * BS);
    cr_assert_eq(afs_close(fd), 0);
    cr_assert_eq(afs_close(fb), 0);
}

/* A direct read past the end of a file whose size is not a block multiple is short, then 0. */
T_LADDER(libaio_direct_read_short_at_eof)
{
    struct afs_ctx *c = libaio_ctx(NULL);
    t_make_file(t_path("d"), 10000);
    struct afs_file *f = open_file(c, "d", AFS_RDONLY | AFS_DIRECT);
    char *buf = afs_buf_alloc(c, 4 * BS);
    struct afs_op a = {0}, b = {0};
    struct done d = {0};
    cr_assert_eq(afs_queue_read(&a, f, buf, 4 * BS, 0, count_cb, &d), 0);
    wait_for(c, &d, 1);
    cr_assert_eq(a.result, 10000, "got %zd", a.result);
    cr_assert(t_check(buf, 10000, 0));
    cr_assert_eq(afs_queue_read(&b, f, buf, BS, 4 * BS, count_cb, &d), 0);
    wait_for(c, &d, 2);
    cr_assert_eq(b.result, 0);
    afs_buf_free(c, buf, 4 * BS);
    cr_assert_eq(afs_close(f), 0);
}

T_LADDER(libaio_direct_cancel_gets_ecanceled_or_the_result)
{
    struct afs_ctx *c = libaio_ctx(NULL);
    enum { M = 32, MB = 65536 };
    t_make_file(t_path("d"), (size_t)M * MB);
    struct afs_file *f = open_file(c, "d", AFS_RDONLY | AFS_DIRECT);
    char *bufs = afs_buf_alloc(c, (size_t)M * MB);
    static struct afs_op ops[M];
    struct done d = {0};
    for (int i = 0; i < M; i++)
        cr_assert_eq(afs_queue_read(&ops[i], f, bufs + (size_t)i * MB, MB, (uint64_t)i * MB,
                                    count_cb, &d), 0);
    cr_assert_eq(afs_ctx_submit(c), M);
    for (int i = 0; i < M; i++) {
        int r = afs_cancel(&ops[i]);
        cr_assert(r == 0 || r == -EALREADY, "afs_cancel: %d", r);
    }
    wait_for(c, &d, M);
    cr_assert_eq(afs_ctx_wait(c, 0, 0), 0);
    cr_assert_eq(d.calls, M, "every callback ran exactly once");
    for (int i = 0; i < M; i++) {
        cr_assert(ops[i].result == -ECANCELED || ops[i].result == MB, "op %d: %zd", i,
                  ops[i].result);
        if (ops[i].result == MB)
            cr_assert(t_check(bufs + (size_t)i * MB, MB, (uint64_t)i * MB));
    }
    afs_buf_free(c, bufs, (size_t)M * MB);
    cr_assert_eq(afs_close(f), 0);
}

/* More direct ops than queue_depth: the rest wait in the library's queue. */
T_LADDER(libaio_direct_small_queue_depth)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.queue_depth = 3;
    struct afs_ctx *c = libaio_ctx(&cfg);
    enum { M = 100 };
    struct afs_file *f = open_file(c, "d", AFS_RDWR | AFS_CREAT | AFS_DIRECT);
    char *w = afs_buf_alloc(c, (size_t)M * BS), *r = afs_buf_alloc(c, (size_t)M * BS);
    t_fill(w, (size_t)M * BS, 0);
    static struct afs_op ops[M];
    struct done d = {0};
    for (int i = 0; i < M; i++)
        cr_assert_eq(afs_queue_write(&ops[i], f, w + (size_t)i * BS, BS, (uint64_t)i * BS,
                                     count_cb, &d), 0);
    cr_assert_eq(afs_ctx_submit(c), 3);
    wait_for(c, &d, M);
    for (int i = 0; i < M; i++)
        cr_assert_eq(ops[i].result, BS);
    cr_assert_eq(afs_pread(f, r, (size_t)M * BS, 0), (ssize_t)M * BS);
    cr_assert(t_check(r, (size_t)M * BS, 0));
    afs_buf_free(c, w, (size_t)M * BS);
    afs_buf_free(c, r, (size_t)M * BS);
    cr_assert_eq(afs_close(f), 0);
}

/* A direct op in flight and a wake from another thread: the wait ends for either. */
static void *wake_later(void *arg)
{
    usleep(20000);
    afs_ctx_wake(arg);
    return NULL;
}

T_LADDER(libaio_wake_ends_a_wait_with_nothing_in_flight)
{
    struct afs_ctx *c = libaio_ctx(NULL);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, wake_later, c), 0);
    cr_assert_eq(afs_ctx_wait(c, 1, 5LL * 1000 * 1000 * 1000), 0);
    pthread_join(th, NULL);
    /* The eventfd is left clean: a poll does not block and a short wait times out. */
    cr_assert_eq(afs_ctx_wait(c, 1, 0), 0);
    cr_assert_eq(afs_ctx_wait(c, 1, 10 * 1000 * 1000), 0);
}

/* ------------------------------------------------------------------------------------------
 * The ladder
 * ---------------------------------------------------------------------------------------- */

/* How AUTO and a forced io_uring name io_uring's failure: the kernel's refusal, or its
 * absence from this build (ASYNCFS_URING=OFF, or liburing missing at build time). */
#ifdef AFS_HAVE_URING
#define URING_WHY "io_uring_setup"
#else
#define URING_WHY "io_uring: not built"
#endif

static long raw_io_uring_setup(void)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    long fd = syscall(__NR_io_uring_setup, 2, &p);
    if (fd < 0)
        return -errno;
    close((int)fd);
    return 0;
}

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#endif
#endif
#ifndef UNDER_VALGRIND
#define UNDER_VALGRIND() 0
#endif

static void direct_and_buffered_io_work(struct afs_ctx *c);

/* Under Valgrind, AUTO passes io_uring over (Memcheck cannot follow it) and says so; a
 * backend asked for by name is still given. Run by the valgrind_ladder entry. */
T_LADDER(auto_passes_io_uring_over_under_valgrind)
{
    if (!UNDER_VALGRIND())
        cr_skip_test("runs only under Valgrind");
    unsetenv("ASYNCFS_BACKEND");
    struct afs_ctx *c = t_ctx = t_ctx_cfg(NULL);
    cr_assert_str_neq(afs_ctx_backend(c), "io_uring");
    const char *why = afs_ctx_fallback_reason(c);
#ifdef AFS_HAVE_URING
    cr_assert(why && strstr(why, "io_uring: not used under Valgrind"), "reason: %s",
              why ? why : "(null)");
#else
    cr_assert(why && strstr(why, URING_WHY), "reason: %s", why ? why : "(null)");
#endif
    direct_and_buffered_io_work(c);
}

/* Where the kernel lets us make a ring, AUTO takes io_uring and reports no reason (in a
 * build without io_uring, the next rung, and the reason says io_uring was not built). */
T_LADDER(auto_takes_io_uring_when_the_kernel_allows)
{
    if (getenv("ASYNCFS_BACKEND"))
        cr_skip_test("ASYNCFS_BACKEND is set: not AUTO");
    if (UNDER_VALGRIND())
        cr_skip_test("under Valgrind AUTO passes io_uring over");
    long err = raw_io_uring_setup();
    if (err < 0)
        cr_skip_test("io_uring_setup fails here: %s", afs_strerror((int)err));
    struct afs_ctx *c = t_ctx = t_ctx_cfg(NULL);
#ifdef AFS_HAVE_URING
    cr_assert_str_eq(afs_ctx_backend(c), "io_uring");
    cr_assert_null(afs_ctx_fallback_reason(c));
#else
    cr_assert_str_neq(afs_ctx_backend(c), "io_uring");
    const char *why = afs_ctx_fallback_reason(c);
    cr_assert(why && strstr(why, URING_WHY), "reason: %s", why ? why : "(null)");
#endif
}

static void need_blocked_uring(void)
{
    if (!env_is("AFS_EXPECT_NO_URING", "1"))
        cr_skip_test("needs io_uring blocked: run under tests/helpers/noring with "
                     "AFS_EXPECT_NO_URING=1");
    /* ctest clears it; a developer running this by hand may not have. */
    unsetenv("ASYNCFS_BACKEND");
}

T_LADDER(blocked_io_uring_setup_is_eperm)
{
    need_blocked_uring();
    cr_assert_eq(raw_io_uring_setup(), -EPERM, "the seccomp filter is not in place");
}

static void direct_and_buffered_io_work(struct afs_ctx *c)
{
    /* Buffered, through the op API and the position API. */
    struct afs_file *f = NULL;
    cr_assert_eq(afs_create(c, t_path("b"), AFS_MODE_SYNC, &f), 0);
    static char w[65536], r[65536];
    t_fill(w, sizeof w, 0);
    cr_assert_eq(afs_write(f, w, sizeof w), (ssize_t)sizeof w);
    cr_assert_eq(afs_pread(f, r, sizeof r, 0), (ssize_t)sizeof r);
    cr_assert(t_check(r, sizeof r, 0));
    cr_assert_eq(afs_fsync(f, 0), 0);
    cr_assert_eq(afs_close(f), 0);
    /* Direct, where the file system allows it. */
    int err = afs_open(c, t_path("d"), AFS_RDWR | AFS_CREAT | AFS_DIRECT, 0644, AFS_MODE_SYNC,
                       &f);
    if (err == -EINVAL)
        return;
    cr_assert_eq(err, 0, "afs_open direct: %s", afs_strerror(err));
    char *dw = afs_buf_alloc(c, 1 << 20), *dr = afs_buf_alloc(c, 1 << 20);
    t_fill(dw, 1 << 20, 0);
    cr_assert_eq(afs_pwrite(f, dw, 1 << 20, 0), 1 << 20);
    cr_assert_eq(afs_pread(f, dr, 1 << 20, 0), 1 << 20);
    cr_assert(t_check(dr, 1 << 20, 0));
    cr_assert_eq(afs_fsync(f, AFS_FSYNC_DATA), 0);
    afs_buf_free(c, dw, 1 << 20);
    afs_buf_free(c, dr, 1 << 20);
    cr_assert_eq(afs_close(f), 0);
}

T_LADDER(blocked_auto_falls_back_and_says_why)
{
    need_blocked_uring();
    struct afs_ctx *c = NULL;
    int err = afs_ctx_new(&c, NULL);
    cr_assert_eq(err, 0, "afs_ctx_new under the filter: %s", afs_strerror(err));
    t_ctx = c;
    const char *be = afs_ctx_backend(c);
    cr_assert(strcmp(be, "libaio") == 0 || strcmp(be, "threads") == 0, "landed on %s", be);
    const char *why = afs_ctx_fallback_reason(c);
    cr_assert_not_null(why, "no fallback reason");
    cr_assert_not_null(strstr(why, URING_WHY), "reason: %s", why);
#ifdef AFS_HAVE_URING
    cr_assert_not_null(strstr(why, "EPERM"), "reason: %s", why);
    FILE *fp = fopen("/proc/sys/kernel/io_uring_disabled", "r");
    int disabled = 0;
    if (fp) {
        if (fscanf(fp, "%d", &disabled) != 1)
            disabled = 0;
        fclose(fp);
    }
    if (disabled) {
        char want[64];
        snprintf(want, sizeof want, "kernel.io_uring_disabled=%d", disabled);
        cr_assert_not_null(strstr(why, want), "reason: %s", why);
    } else {
        cr_assert_not_null(strstr(why, "seccomp"), "reason: %s", why);
    }
#endif
    cr_log_info("AUTO landed on %s: %s", be, why);
    direct_and_buffered_io_work(c);
}

T_LADDER(blocked_forced_io_uring_is_enotsup)
{
    need_blocked_uring();
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.backend = AFS_BACKEND_IO_URING;
    struct afs_ctx *c = (struct afs_ctx *)&cfg; /* must be cleared on failure */
    cr_assert_eq(afs_ctx_new(&c, &cfg), -ENOTSUP, "never a silent substitute");
    cr_assert_null(c);
    /* The reason is not lost with the context that was never made. */
    const char *why = afs_last_ctx_error();
#ifdef AFS_HAVE_URING
#define FORCED_WHY "io_uring_setup: EPERM"
#else
#define FORCED_WHY URING_WHY
#endif
    cr_assert(why && strstr(why, "backend io_uring: " FORCED_WHY), "reason: %s",
              why ? why : "(null)");
    /* The same through the environment, with or without AFS_CTX_NO_FALLBACK. */
    setenv("ASYNCFS_BACKEND", "io_uring", 1);
    cr_assert_eq(afs_ctx_new(&c, NULL), -ENOTSUP);
    cr_assert_null(c);
    why = afs_last_ctx_error();
    cr_assert(why && strstr(why, "ASYNCFS_BACKEND=io_uring: " FORCED_WHY),
              "reason: %s", why ? why : "(null)");
    afs_config_default(&cfg);
    cfg.flags = AFS_CTX_NO_FALLBACK;
    cr_assert_eq(afs_ctx_new(&c, &cfg), -ENOTSUP);
    cr_assert_null(c);
}

T_LADDER(blocked_no_fallback_returns_the_io_uring_error)
{
    need_blocked_uring();
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.flags = AFS_CTX_NO_FALLBACK;
    struct afs_ctx *c = NULL;
#ifdef AFS_HAVE_URING
    cr_assert_eq(afs_ctx_new(&c, &cfg), -EPERM);
    cr_assert_null(c);
#else
    /* Not built is not a failure of the first rung: the first built one is taken. */
    cr_assert_eq(afs_ctx_new(&c, &cfg), 0);
    t_ctx = c;
    cr_assert_str_neq(afs_ctx_backend(c), "io_uring");
#endif
}

T_LADDER(blocked_forced_libaio_and_threads_work_and_are_not_fallbacks)
{
    need_blocked_uring();
    static const enum afs_backend want[] = {AFS_BACKEND_LIBAIO, AFS_BACKEND_THREADS};
    static const char *const names[] = {"libaio", "threads"};
    for (int i = 0; i < 2; i++) {
        struct afs_config cfg;
        afs_config_default(&cfg);
        cfg.backend = want[i];
        struct afs_ctx *c = NULL;
        int err = afs_ctx_new(&c, &cfg);
#ifndef AFS_HAVE_LIBAIO
        if (want[i] == AFS_BACKEND_LIBAIO) {
            /* Left out of this build: -ENOTSUP, and the reason says so. */
            const char *why = afs_last_ctx_error();
            cr_assert_eq(err, -ENOTSUP, "libaio: %s", afs_strerror(err));
            cr_assert(why && strstr(why, "libaio: not built"), "reason: %s",
                      why ? why : "(null)");
            continue;
        }
#endif
        cr_assert_eq(err, 0, "%s: %s", names[i], afs_strerror(err));
        cr_assert_str_eq(afs_ctx_backend(c), names[i]);
        cr_assert_null(afs_ctx_fallback_reason(c), "asked for by name: not a fallback");
        direct_and_buffered_io_work(c);
        afs_ctx_free(c);
    }
}

/* ------------------------------------------------------------------------------------------
 * fs.aio-max-nr exhausted: libaio degrades, then the ladder goes on to threads.
 * ---------------------------------------------------------------------------------------- */

static unsigned long sysctl_ul(const char *path)
{
    unsigned long v = 0;
    FILE *fp = fopen(path, "r");
    cr_assert_not_null(fp, "%s: %s", path, strerror(errno));
    cr_assert_eq(fscanf(fp, "%lu", &v), 1);
    fclose(fp);
    return v;
}

static unsigned long aio_free(void)
{
    unsigned long max = sysctl_ul("/proc/sys/fs/aio-max-nr");
    unsigned long nr = sysctl_ul("/proc/sys/fs/aio-nr");
    return max > nr ? max - nr : 0;
}

/* Takes AIO contexts (never freed: they go with the test process) until exactly `leave`
 * events remain under fs.aio-max-nr. Skips when that cannot be arranged. */
static void hog_all_but(unsigned long leave)
{
    if (!env_is("AFS_LADDER_HOG", "1"))
        cr_skip_test("uses up fs.aio-max-nr: set AFS_LADDER_HOG=1 and run alone");
    unsigned long left = aio_free();
    if (left > (1ul << 21))
        cr_skip_test("fs.aio-max-nr leaves %lu events: too many to use up cheaply", left);
    for (int tries = 0; tries < 64 && (left = aio_free()) > leave; tries++) {
        unsigned long want = left - leave;
        if (want > (1ul << 20))
            want = 1ul << 20;
        aio_context_t a = 0;
        if (syscall(__NR_io_setup, (unsigned)want, &a) != 0)
            cr_assert_eq(errno, EAGAIN, "io_setup(%lu): %s", want, strerror(errno));
    }
    left = aio_free();
    if (left != leave)
        cr_skip_test("could not leave exactly %lu AIO events free (have %lu)", leave, left);
}

/* Writes m blocks to a new O_DIRECT file as m queued ops, checks every result and the data
 * read back; *delta gets what the context's statistics moved meanwhile. */
static void direct_writes(struct afs_ctx *c, int m, struct afs_stats *delta)
{
    struct afs_file *f = open_file(c, "d", AFS_RDWR | AFS_CREAT | AFS_DIRECT);
    char *w = afs_buf_alloc(c, (size_t)m * BS), *r = afs_buf_alloc(c, (size_t)m * BS);
    cr_assert(w && r);
    t_fill(w, (size_t)m * BS, 0);
    struct afs_op *ops = calloc((size_t)m, sizeof *ops);
    cr_assert_not_null(ops);
    struct done d = {0};
    struct afs_stats a, b;
    afs_ctx_stats(c, &a);
    for (int i = 0; i < m; i++)
        cr_assert_eq(afs_queue_write(&ops[i], f, w + (size_t)i * BS, BS, (uint64_t)i * BS,
                                     count_cb, &d), 0);
    wait_for(c, &d, m);
    afs_ctx_stats(c, &b);
    delta->kernel_submits = b.kernel_submits - a.kernel_submits;
    delta->pool_ops = b.pool_ops - a.pool_ops;
    for (int i = 0; i < m; i++)
        cr_assert_eq(ops[i].result, BS, "op %d: %zd", i, ops[i].result);
    cr_assert_eq(afs_pread(f, r, (size_t)m * BS, 0), (ssize_t)m * BS);
    cr_assert(t_check(r, (size_t)m * BS, 0));
    free(ops);
    afs_buf_free(c, w, (size_t)m * BS);
    afs_buf_free(c, r, (size_t)m * BS);
    cr_assert_eq(afs_close(f), 0);
}

T_LADDER(aio_max_nr_nearly_used_up_degrades_libaio)
{
    hog_all_but(100);
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.backend = AFS_BACKEND_LIBAIO;
    struct afs_ctx *c = NULL;
    int err = afs_ctx_new(&c, &cfg);
    cr_assert_eq(err, 0, "libaio with 100 events left: %s", afs_strerror(err));
    t_ctx = c;
    cr_assert_str_eq(afs_ctx_backend(c), "libaio");
    cr_assert_eq(aio_free(), 100, "the kernel context waits for the first direct op");
    /* More direct ops than the degraded kernel context holds: submitted in several rounds. */
    struct afs_stats moved = {0};
    direct_writes(c, 256, &moved);
    cr_assert_lt(aio_free(), 100, "the context took some of what was left");
    cr_assert_null(afs_ctx_fallback_reason(c));
    cr_assert_gt(moved.kernel_submits, 1);
    cr_assert_eq(moved.pool_ops, 0);
}

/* Room when the context was made, none left at its first direct op: the direct ops run on
 * the thread pool, right, and the reason says why. */
T_LADDER(aio_max_nr_used_up_after_creation_direct_io_goes_to_the_pool)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.backend = AFS_BACKEND_LIBAIO;
    struct afs_ctx *c = NULL;
    if (env_is("AFS_LADDER_HOG", "1")) {
        int err = afs_ctx_new(&c, &cfg);
        cr_assert_eq(err, 0, "libaio: %s", afs_strerror(err));
        t_ctx = c;
    }
    hog_all_but(8);
    cr_assert_null(afs_ctx_fallback_reason(c));
    struct afs_stats moved = {0};
    direct_writes(c, 32, &moved);
    cr_assert_eq(moved.pool_ops, 32);
    const char *why = afs_ctx_fallback_reason(c);
    cr_assert(why && strstr(why, "io_setup: ") && strstr(why, "fs.aio-max-nr") &&
                  strstr(why, "direct I/O runs on the thread pool"),
              "reason: %s", why ? why : "(null)");
}

T_LADDER(aio_max_nr_used_up_forced_libaio_is_enotsup_auto_gets_threads)
{
    hog_all_but(8);
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.backend = AFS_BACKEND_LIBAIO;
    struct afs_ctx *c = NULL;
    cr_assert_eq(afs_ctx_new(&c, &cfg), -ENOTSUP);
    cr_assert_null(c);
    if (!env_is("AFS_EXPECT_NO_URING", "1"))
        return; /* AUTO would take io_uring */
    unsetenv("ASYNCFS_BACKEND");
    afs_config_default(&cfg);
    cr_assert_eq(afs_ctx_new(&c, &cfg), 0);
    t_ctx = c;
    cr_assert_str_eq(afs_ctx_backend(c), "threads");
    const char *why = afs_ctx_fallback_reason(c);
    cr_assert(why && strstr(why, URING_WHY), "reason: %s", why ? why : "(null)");
    direct_and_buffered_io_work(c);
}
