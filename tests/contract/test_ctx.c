/* Contexts, configuration, backend choice, buffers, open/close and errors. */
#include "../common.h"

#include "internal.h" /* the pool's threads */

#include <signal.h>

T_IO(config_defaults)
{
    struct afs_config cfg;
    memset(&cfg, 0xab, sizeof cfg);
    afs_config_default(&cfg);
    cr_assert_eq(cfg.queue_depth, 1024);
    cr_assert_eq(cfg.sync_threshold, 4096);
    cr_assert_eq(cfg.backend, AFS_BACKEND_AUTO);
    cr_assert_null(cfg.alloc);
    cr_assert_eq(cfg.flags, 0);
}

T_IO(ctx_reports_the_backend_asked_for)
{
    struct afs_ctx *c = t_new_ctx();
    const char *want = getenv("ASYNCFS_BACKEND");
    if (want)
        cr_assert_str_eq(afs_ctx_backend(c), want);
    /* What was asked for by name is never a fallback. */
    if (want)
        cr_assert_null(afs_ctx_fallback_reason(c));
}

static void my_release(void *buf, size_t size, void *user);

T_IO(bad_config_is_einval)
{
    struct afs_ctx *c = NULL;
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.queue_depth = 0;
    cr_assert_eq(afs_ctx_new(&c, &cfg), -EINVAL);
    cfg.queue_depth = AFS_MAX_QUEUE_DEPTH + 1;
    cr_assert_eq(afs_ctx_new(&c, &cfg), -EINVAL);
    afs_config_default(&cfg);
    cfg.flags = 0x8000;
    cr_assert_eq(afs_ctx_new(&c, &cfg), -EINVAL);
    afs_config_default(&cfg);
    cfg.release = my_release;
    cr_assert_eq(afs_ctx_new(&c, &cfg), -EINVAL);
    cr_assert_null(c);
}

/* The seed silently switched backend for a queue size that is not a power of two. */
T_IO(odd_queue_depth_keeps_the_backend)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.queue_depth = 1000;
    struct afs_ctx *a = t_ctx_cfg(&cfg);
    cfg.queue_depth = 1024;
    struct afs_ctx *b = t_ctx_cfg(&cfg);
    cr_assert_str_eq(afs_ctx_backend(a), afs_ctx_backend(b));
    afs_ctx_free(a);
    afs_ctx_free(b);
}

T_IO(unknown_backend_name_is_einval)
{
    setenv("ASYNCFS_BACKEND", "no-such-backend", 1);
    struct afs_ctx *c = NULL;
    cr_assert_eq(afs_ctx_new(&c, NULL), -EINVAL);
}

T_IO(backend_of_another_platform_is_enotsup)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
#ifdef _WIN32
    cfg.backend = AFS_BACKEND_IO_URING;
#else
    cfg.backend = AFS_BACKEND_IOCP;
#endif
    struct afs_ctx *c = NULL;
    cr_assert_eq(afs_ctx_new(&c, &cfg), -ENOTSUP);
    cr_assert_null(c);
}

T_IO(buffers_are_aligned)
{
    struct afs_ctx *c = t_new_ctx();
    size_t sizes[] = {0, 1, 512, 4096, 12345, 1 << 20, (1 << 20) + 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *b = afs_buf_alloc(c, sizes[i]);
        cr_assert_not_null(b);
        cr_assert_eq((uintptr_t)b % 4096, 0);
        memset(b, 0x5a, sizes[i]);
        afs_buf_free(c, b, sizes[i]);
    }
}

static int allocs, releases;
static void *my_alloc(size_t size, void *user)
{
    cr_assert_eq(user, &allocs);
    allocs++;
#ifdef _WIN32
    return _aligned_malloc(size, 4096);
#else
    void *p = NULL;
    return posix_memalign(&p, 4096, size) ? NULL : p;
#endif
}
static void my_release(void *buf, size_t size, void *user)
{
    releases++;
#ifdef _WIN32
    _aligned_free(buf);
#else
    free(buf);
#endif
}
/* Misaligned on purpose, always: 8 bytes past a 4 KiB boundary (malloc(size + 16) + 8 was
 * aligned whenever malloc happened to return 8 bytes short of one, as it did on armhf). */
static void *bad_alloc(size_t size, void *user)
{
    allocs++;
#ifdef _WIN32
    char *p = _aligned_malloc(size + 16, 4096);
#else
    void *v = NULL;
    char *p = posix_memalign(&v, 4096, size + 16) ? NULL : v;
#endif
    return p ? p + 8 : NULL;
}
static void bad_release(void *buf, size_t size, void *user)
{
    releases++;
#ifdef _WIN32
    _aligned_free((char *)buf - 8);
#else
    free((char *)buf - 8);
#endif
}

T_IO(custom_allocator_and_releaser)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.alloc = my_alloc;
    cfg.release = my_release;
    cfg.alloc_user = &allocs;
    struct afs_ctx *c = t_ctx_cfg(&cfg);
    void *b = afs_buf_alloc(c, 8192);
    cr_assert_not_null(b);
    afs_buf_free(c, b, 8192);
    cr_assert_eq(allocs, 1);
    cr_assert_eq(releases, 1);
    afs_ctx_free(c);
}

T_IO(misaligned_allocator_is_refused)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.alloc = bad_alloc;
    cfg.release = bad_release;
    struct afs_ctx *c = t_ctx_cfg(&cfg);
    cr_assert_null(afs_buf_alloc(c, 4096));
    cr_assert_eq(allocs, 1);
    cr_assert_eq(releases, 1, "the refused buffer is given back, not leaked");
    afs_ctx_free(c);
}

T_IO(open_errors)
{
    struct afs_ctx *c = t_new_ctx();
    struct afs_file *f = NULL;
    cr_assert_eq(afs_open(c, t_path("x"), 0, 0, AFS_MODE_SYNC, &f), -EINVAL, "no access mode");
    cr_assert_eq(afs_open(c, t_path("x"), AFS_RDONLY | AFS_WRONLY, 0, AFS_MODE_SYNC, &f), -EINVAL);
    cr_assert_eq(afs_open(c, t_path("x"), AFS_RDWR | 0x10000, 0, AFS_MODE_SYNC, &f), -EINVAL);
    cr_assert_eq(afs_open(c, t_path("x"), AFS_RDWR, 0, (enum afs_mode)7, &f), -EINVAL);
    cr_assert_eq(afs_open(c, NULL, AFS_RDWR, 0, AFS_MODE_SYNC, &f), -EINVAL);
    /* A read-only truncation (undefined in POSIX, a truncation on Linux) leaves the file be. */
    t_make_file(t_path("full"), 4096);
    cr_assert_eq(afs_open(c, t_path("full"), AFS_RDONLY | AFS_TRUNC, 0, AFS_MODE_SYNC, &f),
                 -EINVAL);
    cr_assert_eq(afs_openat(c, AFS_AT_FDCWD, t_path("full"), AFS_RDONLY | AFS_TRUNC, 0),
                 -EINVAL);
    struct stat full;
    cr_assert_eq(stat(t_path("full"), &full), 0);
    cr_assert_eq(full.st_size, 4096);
    cr_assert_eq(afs_open(c, t_path("missing"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), -ENOENT);
    cr_assert_null(f);
    cr_assert_eq(afs_open(c, t_path("new"), AFS_RDWR | AFS_CREAT | AFS_EXCL, 0600, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_open(c, t_path("new"), AFS_RDWR | AFS_CREAT | AFS_EXCL, 0600, AFS_MODE_SYNC, &f), -EEXIST);
    struct stat st;
    cr_assert_eq(stat(t_path("new"), &st), 0);
#ifndef _WIN32 /* Windows has no permission bits: a mode with write bits is just not read-only */
    cr_assert_eq(st.st_mode & 0777, 0600 & ~umask(022));
#endif
    int sl = t_symlink(t_path("new"), t_path("link"));
#ifdef _WIN32
    if (sl != 0)
        cr_log_warn("cannot make a symbolic link here (a privilege on Windows, a stub in "
                    "wine): AFS_NOFOLLOW unchecked");
    else
#else
    cr_assert_eq(sl, 0);
#endif
        cr_assert_eq(afs_open(c, t_path("link"), AFS_RDONLY | AFS_NOFOLLOW, 0, AFS_MODE_SYNC, &f), -ELOOP);
    cr_assert_eq(afs_open(c, t_dir, AFS_RDONLY, 0, AFS_MODE_SYNC, &f), -EISDIR);
    cr_assert_eq(afs_open(c, t_dir, AFS_RDWR, 0, AFS_MODE_SYNC, &f), -EISDIR);
}

T_IO(create_truncates)
{
    struct afs_ctx *c = t_new_ctx();
    t_make_file(t_path("f"), 10000);
    struct afs_file *f;
    cr_assert_eq(afs_create(c, t_path("f"), AFS_MODE_ASYNC, &f), 0);
    cr_assert_eq(afs_file_size(f), 0);
    cr_assert_geq(afs_file_fd(f), 0);
    cr_assert_eq(afs_file_ctx(f), c);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(strerror_says_something)
{
    int errs[] = {0, EINVAL, EBADF, ENOENT, ECANCELED, ENOTSUP, EBUSY, EIO, 12345};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        cr_assert_not_null(afs_strerror(-errs[i]));
        cr_assert_gt(strlen(afs_strerror(-errs[i])), 0);
        cr_assert_str_eq(afs_strerror(-errs[i]), afs_strerror(errs[i]));
    }
    cr_assert_str_eq(afs_strerror(-EINVAL), strerror(EINVAL));
}

Test(io, null_context_aborts_with_a_message, .signal = SIGABRT, .timeout = 10)
{
    afs_ctx_wait(NULL, 1, 0);
}

T_IO(ctx_free_completes_ops_in_flight)
{
    struct afs_ctx *c = t_ctx_cfg(NULL);
    struct afs_file *f;
    cr_assert_eq(afs_create(c, t_path("f"), AFS_MODE_ASYNC, &f), 0);
    static char buf[64][4096];
    static struct afs_op ops[64];
    static int ran;
    ran = 0;
    for (int i = 0; i < 64; i++) {
        t_fill(buf[i], 4096, (uint64_t)i * 4096);
        void cb(struct afs_op * op);
        cr_assert_eq(afs_queue_write(&ops[i], f, buf[i], 4096, (uint64_t)i * 4096, cb, &ran), 0);
    }
    afs_ctx_free(c); /* also closes f */
    cr_assert_eq(ran, 64);
    int fd = open(t_path("f"), O_RDONLY);
    static char back[64 * 4096];
    cr_assert_eq(read(fd, back, sizeof back), (ssize_t)sizeof back);
    cr_assert(t_check(back, sizeof back, 0));
    close(fd);
}

void cb(struct afs_op *op)
{
    cr_assert_eq(op->result, 4096);
    (*(int *)op->data)++;
}

T_IO(wake_from_another_thread_ends_a_wait)
{
    struct afs_ctx *c = t_new_ctx();
    /* Nothing outstanding, no limit: only a wake can end this wait. */
    pthread_t th;
    void *waker(void *arg);
    cr_assert_eq(pthread_create(&th, NULL, waker, c), 0);
    cr_assert_eq(afs_ctx_wait(c, 1, -1), 0);
    pthread_join(th, NULL);
    /* A timeout past what the clock can name is no limit (not a sum that overflows). */
    cr_assert_eq(pthread_create(&th, NULL, waker, c), 0);
    cr_assert_eq(afs_ctx_wait(c, 1, INT64_MAX), 0);
    pthread_join(th, NULL);
    cr_assert_eq(pthread_create(&th, NULL, waker, c), 0);
    cr_assert_eq(afs_ctx_wait(c, 1, INT64_MAX - 1000), 0);
    pthread_join(th, NULL);
    /* A timeout with nothing outstanding returns 0, not before the timeout: 1.2 s, so that
     * the check reads whole seconds and a coarse timer (Windows: 15.6 ms ticks) cannot
     * fail it. */
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    cr_assert_eq(afs_ctx_wait(c, 1, 1200LL * 1000 * 1000), 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    cr_assert_geq(s, 1.0, "returned after %.3f s", s);
}

void *waker(void *arg)
{
    usleep(20000);
    afs_ctx_wake(arg);
    return NULL;
}

/* The thread pool runs as many ops at once as io_workers asks: ops that block (here opens of
 * FIFOs that wait for a writer) do not hold back the ones queued behind them. POSIX only:
 * Windows has no FIFOs to block an open. */
#ifndef _WIN32
static void fifo_opened(struct afs_op *op)
{
    *(int *)op->data = 1;
}

static int64_t pool_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

enum { FIFOS = 32 };
static struct afs_op fifo_ops[FIFOS];
static char fifo_paths[FIFOS][PATH_MAX]; /* the ops' paths: they must stay until the ops ran */
static int fifo_done[FIFOS], fifo_wfd[FIFOS];

/* Queues opens of n new FIFOs on c, which wait for a writer, and gives only the last one a
 * writer: returns whether its open completed (within 20 s) while the n - 1 before it still
 * waited, in *threads the pool's threads then. Then lets every open complete and checks them. */
static bool last_fifo_opens_while_others_block(struct afs_ctx *c, int n, unsigned *threads)
{
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "fifo%d", i);
        snprintf(fifo_paths[i], sizeof fifo_paths[i], "%s", t_path(name));
        cr_assert_eq(mkfifo(fifo_paths[i], 0600), 0, "mkfifo: %s", strerror(errno));
        fifo_done[i] = 0;
        cr_assert_eq(afs_queue_openat(&fifo_ops[i], c, AFS_AT_FDCWD, fifo_paths[i], AFS_RDONLY,
                                      0, fifo_opened, &fifo_done[i]),
                     0);
    }
    cr_assert_eq(afs_ctx_submit(c), n);
    fifo_wfd[n - 1] = open(fifo_paths[n - 1], O_RDWR);
    cr_assert(fifo_wfd[n - 1] >= 0);
    int64_t end = pool_now_ns() + 20 * 1000000000ll;
    while (!fifo_done[n - 1] && pool_now_ns() < end)
        cr_assert(afs_ctx_wait(c, 1, 100000000) >= 0);
    bool last_done = fifo_done[n - 1];
    *threads = afs__pool_threads(c->pool);
    for (int i = 0; i < n - 1; i++)
        fifo_wfd[i] = open(fifo_paths[i], O_RDWR);
    for (int i = 0; i < n; i++) {
        while (!fifo_done[i])
            cr_assert(afs_ctx_wait(c, 1, -1) >= 0);
        cr_assert(fifo_ops[i].result >= 0, "open: %s",
                  afs_strerror((int)fifo_ops[i].result));
        close((int)fifo_ops[i].result);
        close(fifo_wfd[i]);
    }
    return last_done;
}

T_IO(pool_runs_io_workers_ops_at_once)
{
    enum { N = 8 };
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.io_workers = N;
    struct afs_ctx *c = t_ctx = t_ctx_cfg(&cfg);
    if (strcmp(afs_ctx_backend(c), "threads") != 0)
        cr_skip_test("backend under test is %s, not threads",
                     afs_ctx_backend(c));
    unsigned threads;
    cr_assert(last_fifo_opens_while_others_block(c, N, &threads),
              "the op queued last did not run while %d others blocked", N - 1);
    cr_assert_eq(threads, (unsigned)N, "io_workers is a hard cap");
}

/* With the default io_workers the pool starts twice the CPUs (4 to 32) and then grows while
 * its workers block: 32 FIFO opens that wait for a writer all run at once (on 2 CPUs the
 * base size is 4), and the threads beyond the base end once idle. */
T_IO(pool_grows_while_its_workers_block)
{
    struct afs_ctx *c = t_ctx = t_ctx_cfg(NULL);
    if (strcmp(afs_ctx_backend(c), "threads") != 0)
        cr_skip_test("backend under test is %s, not threads", afs_ctx_backend(c));
    afs__pool_idle_ns = 50 * 1000000ll; /* the extra threads end sooner than in use */
    unsigned most;
    cr_assert(last_fifo_opens_while_others_block(c, FIFOS, &most),
              "the op queued last did not run while %d others blocked", FIFOS - 1);
    cr_assert_geq(most, (unsigned)FIFOS, "%u threads for %d blocked ops", most, FIFOS);
    unsigned base = afs__cpu_count() * 2;
    base = base < 4 ? 4 : base > 32 ? 32 : base;
    int64_t end = pool_now_ns() + 20 * 1000000000ll;
    while (afs__pool_threads(c->pool) > base && pool_now_ns() < end)
        usleep(10000);
    cr_assert_eq(afs__pool_threads(c->pool), base, "idle threads beyond the base ended");
}
#endif
