/* Storage-engine ops: fallocate and ftruncate (queued and blocking), their bad input, and
 * their faults, on every backend. */
#include "../common.h"

#include "platform.h"

#ifndef _WIN32
#endif

static struct afs_file *s_file(const char *name, int flags)
{
    struct afs_file *f = NULL;
    int err = afs_open(t_ctx, t_path(name), flags, 0644, AFS_MODE_SYNC, &f);
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    return f;
}

/* A file of `len` pattern bytes, open read-write. */
static struct afs_file *s_pattern(const char *name, size_t len)
{
    t_make_file(t_path(name), len);
    return s_file(name, AFS_RDWR);
}

static void s_expect_pattern(struct afs_file *f, uint64_t off, size_t len)
{
    static char back[1 << 18];
    cr_assert(len <= sizeof back);
    cr_assert_eq(afs_pread(f, back, len, off), (ssize_t)len);
    cr_assert(t_check(back, len, off), "data at %llu changed", (unsigned long long)off);
}

static void s_expect_zeros(struct afs_file *f, uint64_t off, size_t len)
{
    static char back[1 << 18];
    cr_assert(len <= sizeof back);
    cr_assert_eq(afs_pread(f, back, len, off), (ssize_t)len);
    for (size_t i = 0; i < len; i++)
        cr_assert_eq(back[i], 0, "byte %llu is not zero", (unsigned long long)(off + i));
}

static int s_done;
static void s_cb(struct afs_op *op)
{
    s_done++;
    *(ssize_t *)op->data = op->result;
}

/* Runs one queued op to its callback and returns its result. */
static ssize_t s_wait(void)
{
    while (s_done == 0)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, -1), 0);
    cr_assert_eq(s_done, 1, "callback ran %d times", s_done);
    s_done = 0;
    return 0;
}

T_IO(ftruncate_shrinks_and_grows)
{
    t_new_ctx();
    struct afs_file *f = s_pattern("f", 100000);
    cr_assert_eq(afs_ftruncate(f, 30000), 0);
    cr_assert_eq(afs_file_size(f), 30000);
    s_expect_pattern(f, 0, 30000);
    static char back[4096];
    cr_assert_eq(afs_pread(f, back, sizeof back, 30000), 0, "data past the new end");
    cr_assert_eq(afs_ftruncate(f, 70000), 0);
    cr_assert_eq(afs_file_size(f), 70000);
    s_expect_pattern(f, 0, 30000);
    s_expect_zeros(f, 30000, 40000);
    cr_assert_eq(afs_ftruncate(f, 0), 0);
    cr_assert_eq(afs_file_size(f), 0);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(queue_ftruncate_reports_through_the_callback)
{
    t_new_ctx();
    struct afs_file *f = s_pattern("f", 50000);
    struct afs_op op;
    ssize_t res = 1;
    cr_assert_eq(afs_queue_ftruncate(&op, f, 12345, s_cb, &res), 0);
    cr_assert_eq(afs_queue_ftruncate(&op, f, 1, s_cb, &res), -EBUSY, "op in use");
    s_wait();
    cr_assert_eq(res, 0, "%s", afs_strerror((int)res));
    cr_assert_eq(afs_file_size(f), 12345);
    s_expect_pattern(f, 0, 12345);
    struct afs_stats st;
    afs_ctx_stats(t_ctx, &st);
    cr_assert_geq(st.ops, 1);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(fallocate_extends_and_keeps_size)
{
    t_new_ctx();
    struct afs_file *f = s_pattern("f", 10000);
    /* Mode 0: allocated and the file grows; the old data stays, the new part is zeros. */
    cr_assert_eq(afs_fallocate(f, 0, 5000, 60000), 0);
    cr_assert_eq(afs_file_size(f), 65000);
    s_expect_pattern(f, 0, 10000);
    s_expect_zeros(f, 10000, 55000);
    /* KEEP_SIZE: allocated past the end, the size does not move. */
    int err = afs_fallocate(f, AFS_FALLOC_KEEP_SIZE, 0, 1 << 20);
#ifdef _WIN32
    if (err == -ENOTSUP) /* wine has no allocation control; Windows has */
        err = 0;
#endif
    cr_assert_eq(err, 0, "%s", afs_strerror(err));
    cr_assert_eq(afs_file_size(f), 65000);
    /* A range inside the file changes nothing. */
    cr_assert_eq(afs_fallocate(f, 0, 0, 4096), 0);
    cr_assert_eq(afs_file_size(f), 65000);
    s_expect_pattern(f, 0, 10000);
#ifndef _WIN32
    struct stat st;
    cr_assert_eq(fstat((int)afs_file_fd(f), &st), 0);
    cr_assert_geq((int64_t)st.st_blocks * 512, 1 << 20, "KEEP_SIZE allocated %lld bytes",
                  (long long)st.st_blocks * 512);
#endif
    cr_assert_eq(afs_close(f), 0);
}

/* Punch hole and zero range either do what they say, or the file system lacks them: then a
 * clear -EOPNOTSUPP and the file as it was. */
T_IO(fallocate_punch_hole_and_zero_range)
{
    t_new_ctx();
    struct afs_file *f = s_pattern("f", 200000);
    int err = afs_fallocate(f, AFS_FALLOC_PUNCH_HOLE, 40960, 65536);
    if (err == -EOPNOTSUPP || err == -ENOTSUP) {
        s_expect_pattern(f, 0, 200000);
    } else {
        cr_assert_eq(err, 0, "punch hole: %s", afs_strerror(err));
        cr_assert_eq(afs_file_size(f), 200000, "a hole keeps the size");
        s_expect_pattern(f, 0, 40960);
        s_expect_zeros(f, 40960, 65536);
        s_expect_pattern(f, 40960 + 65536, 200000 - 40960 - 65536);
    }
    /* A hole past the end does not extend the file. */
    err = afs_fallocate(f, AFS_FALLOC_PUNCH_HOLE | AFS_FALLOC_KEEP_SIZE, 190000, 50000);
    cr_assert(err == 0 || err == -EOPNOTSUPP || err == -ENOTSUP, "%s", afs_strerror(err));
    cr_assert_eq(afs_file_size(f), 200000);

    err = afs_fallocate(f, AFS_FALLOC_ZERO_RANGE, 150000, 100000);
    if (err == -EOPNOTSUPP || err == -ENOTSUP) {
        cr_assert_eq(afs_file_size(f), 200000);
    } else {
        cr_assert_eq(err, 0, "zero range: %s", afs_strerror(err));
        cr_assert_eq(afs_file_size(f), 250000, "zero range extends without KEEP_SIZE");
        s_expect_pattern(f, 0, 40960);
        s_expect_zeros(f, 150000, 100000);
        cr_assert_eq(afs_fallocate(f, AFS_FALLOC_ZERO_RANGE | AFS_FALLOC_KEEP_SIZE, 0, 300000),
                     0);
        cr_assert_eq(afs_file_size(f), 250000);
        s_expect_zeros(f, 0, 250000);
    }
    cr_assert_eq(afs_close(f), 0);
}

T_IO(queue_fallocate_reports_through_the_callback)
{
    t_new_ctx();
    struct afs_file *f = s_file("f", AFS_RDWR | AFS_CREAT);
    struct afs_op a, b;
    ssize_t ra = 1, rb = 1;
    cr_assert_eq(afs_queue_fallocate(&a, f, 0, 0, 8192, s_cb, &ra), 0);
    cr_assert_eq(afs_queue_fallocate(&b, f, AFS_FALLOC_KEEP_SIZE, 8192, 8192, s_cb, &rb), 0);
    while (s_done < 2)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, -1), 0);
    s_done = 0;
    cr_assert_eq(ra, 0, "%s", afs_strerror((int)ra));
#ifdef _WIN32
    if (rb == -ENOTSUP) /* wine has no allocation control; Windows has */
        rb = 0;
#endif
    cr_assert_eq(rb, 0, "%s", afs_strerror((int)rb));
    cr_assert_eq(afs_file_size(f), 8192);
    cr_assert_eq(afs_close(f), 0);
}

/* Bad input: a clear error at once, no callback, nothing changed. */
T_IO(storage_ops_bad_input)
{
    t_new_ctx();
    struct afs_file *f = s_pattern("f", 5000);
    struct afs_op op;
    ssize_t res = 7;
    const uint64_t big = (uint64_t)INT64_MAX;
    cr_assert_eq(afs_fallocate(f, 0, 0, 0), -EINVAL, "len 0");
    cr_assert_eq(afs_fallocate(f, 0x100, 0, 10), -EINVAL, "unknown mode bit");
    cr_assert_eq(afs_fallocate(f, -1, 0, 10), -EINVAL, "negative mode");
    cr_assert_eq(afs_fallocate(f, AFS_FALLOC_PUNCH_HOLE | AFS_FALLOC_ZERO_RANGE, 0, 10),
                 -EINVAL, "hole and zero range together");
    cr_assert_eq(afs_fallocate(f, 0, big + 1, 10), -EINVAL, "negative offset");
    cr_assert_eq(afs_fallocate(f, 0, 0, big + 1), -EINVAL, "negative length");
    cr_assert_eq(afs_fallocate(f, 0, UINT64_MAX, UINT64_MAX), -EINVAL);
    cr_assert_eq(afs_fallocate(f, 0, big - 5, 10), -EFBIG, "off + len overflows");
    cr_assert_eq(afs_ftruncate(f, big + 1), -EINVAL, "negative size");
    cr_assert_eq(afs_ftruncate(f, UINT64_MAX), -EINVAL);
    cr_assert_eq(afs_queue_fallocate(&op, f, 0, 0, 0, s_cb, &res), -EINVAL);
    cr_assert_eq(afs_queue_fallocate(NULL, f, 0, 0, 10, s_cb, &res), -EINVAL);
    cr_assert_eq(afs_queue_fallocate(&op, f, 0, 0, 10, NULL, &res), -EINVAL);
    cr_assert_eq(afs_queue_ftruncate(&op, f, big + 1, s_cb, &res), -EINVAL);
    cr_assert_eq(afs_queue_ftruncate(NULL, f, 1, s_cb, &res), -EINVAL);
    cr_assert_eq(afs_ctx_wait(t_ctx, 0, 0), 0, "a refused op has no callback");
    cr_assert_eq(s_done, 0);
    cr_assert_eq(res, 7);
    cr_assert_eq(afs_file_size(f), 5000);
    s_expect_pattern(f, 0, 5000);
    cr_assert_eq(afs_close(f), 0);

    /* A file opened read-only: -EBADF, as a write would be. */
    f = s_file("f", AFS_RDONLY);
    cr_assert_eq(afs_ftruncate(f, 10), -EBADF);
    cr_assert_eq(afs_fallocate(f, 0, 0, 100000), -EBADF);
    cr_assert_eq(afs_queue_ftruncate(&op, f, 10, s_cb, &res), -EBADF);
    cr_assert_eq(afs_file_size(f), 5000);
    cr_assert_eq(afs_close(f), 0);
}

/* Past the file system's limit: a clear -EFBIG (ext4, xfs: the size limit is checked before
 * anything is allocated), or done where the limit is higher (tmpfs); only 4 KiB either way.
 * (A real -ENOSPC would fill the disk first: ext4 allocates what it can before it fails; the
 * fault tests below inject it.) */
T_IO(storage_ops_past_the_size_limit)
{
    t_new_ctx();
    struct afs_file *f = s_pattern("f", 3000);
    t_sparse(f);
    const uint64_t limit_off = (uint64_t)INT64_MAX - 4096;
    int err = afs_fallocate(f, AFS_FALLOC_KEEP_SIZE, limit_off, 4096);
    cr_assert(err == 0 || err == -EFBIG || err == -EINVAL || err == -ENOTSUP, "%s",
              afs_strerror(err));
    cr_assert_eq(afs_file_size(f), 3000);
    err = afs_ftruncate(f, limit_off);
#ifdef _WIN32
    if (err == -ENOMEM || err == -ENOSPC) /* wine's answer, and NTFS's for a file not sparse */
        err = -EFBIG;
#endif
    cr_assert(err == 0 || err == -EFBIG || err == -EINVAL, "%s", afs_strerror(err));
    cr_assert_eq(afs_file_size(f), err == 0 ? (int64_t)limit_off : 3000);
    s_expect_pattern(f, 0, 3000);
    cr_assert_eq(afs_close(f), 0);
}

#ifndef _WIN32
T_IO(storage_ops_on_a_pipe)
{
    t_new_ctx();
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct afs_file *f = NULL;
    cr_assert_eq(afs_file_from_fd(t_ctx, p[1], AFS_WRONLY, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_fallocate(f, 0, 0, 10), -ESPIPE);
    cr_assert_eq(afs_ftruncate(f, 0), -EINVAL);
    cr_assert_eq(afs_close(f), 0);
    close(p[0]);
}
#endif

/* Growing or shrinking the file makes the library forget the size it knew: a short read at
 * the old end is then confirmed, not taken as the end of the file. */
static struct afs__syscalls s_saved;
static int s_short_at; /* the next pread of more than this returns this many bytes */
static ssize_t s_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    if (s_short_at > 0 && off == 0 && len > (size_t)s_short_at) {
        len = (size_t)s_short_at;
        s_short_at = 0;
    }
    return s_saved.pread(fd, buf, len, off);
}

static void s_fault_setup(void)
{
    t_setup();
    s_saved = afs__sys;
    afs__sys.pread = s_pread;
}

static void s_fault_teardown(void)
{
    afs__sys = s_saved;
    t_teardown();
}

static void s_need_pool_transfers(void)
{
    const char *b = afs_ctx_backend(t_ctx);
    if (strcmp(b, "threads") && strcmp(b, "sync"))
        cr_skip_test("transfers on %s are made by the kernel, not through afs__sys", b);
}

Test(io, size_changing_ops_forget_the_known_size, .init = s_fault_setup,
     .fini = s_fault_teardown, .timeout = 30)
{
    t_new_ctx();
    s_need_pool_transfers();
    struct afs_file *f = s_pattern("f", 8192); /* the open learns the size 8192 */
    cr_assert_eq(afs_ftruncate(f, 20000), 0);
    static char back[20000];
    s_short_at = 8192;
    cr_assert_eq(afs_pread(f, back, sizeof back, 0), 20000, "stopped at the old size");
    cr_assert_eq(afs_close(f), 0);

    f = s_pattern("g", 8192);
    cr_assert_eq(afs_fallocate(f, AFS_FALLOC_ZERO_RANGE, 8192, 8192), 0);
    s_short_at = 8192;
    cr_assert_eq(afs_pread(f, back, 16384, 0), 16384, "stopped at the old size");
    cr_assert_eq(afs_close(f), 0);
}

/* Faults of the storage system calls (the pool and the sync backend make them through
 * afs__sys): the error reaches the caller unchanged, transient ones never do. */
static int s_falloc_calls, s_falloc_fail_from, s_falloc_err;
static int s_fallocate(afs__fd_t fd, int mode, uint64_t off, uint64_t len)
{
    if (++s_falloc_calls >= s_falloc_fail_from && s_falloc_fail_from > 0) {
        int e = s_falloc_err;
        if (e == -EINTR || e == -EAGAIN)
            s_falloc_fail_from = 0; /* once */
        return e;
    }
    return s_saved.fallocate(fd, mode, off, len);
}

static int s_ftruncate(afs__fd_t fd, uint64_t size)
{
    if (++s_falloc_calls >= s_falloc_fail_from && s_falloc_fail_from > 0) {
        int e = s_falloc_err;
        if (e == -EINTR || e == -EAGAIN)
            s_falloc_fail_from = 0;
        return e;
    }
    return s_saved.ftruncate(fd, size);
}

static void s_inject(int err)
{
    afs__sys.fallocate = s_fallocate;
    afs__sys.ftruncate = s_ftruncate;
    s_falloc_calls = 0;
    s_falloc_fail_from = 1;
    s_falloc_err = err;
}

Test(io, storage_op_faults_reach_the_caller, .init = s_fault_setup, .fini = s_fault_teardown,
     .timeout = 30)
{
    t_new_ctx();
    s_need_pool_transfers();
    struct afs_file *f = s_pattern("f", 4000);
    s_inject(-ENOSPC);
    cr_assert_eq(afs_fallocate(f, 0, 0, 1 << 20), -ENOSPC);
    cr_assert_eq(afs_ftruncate(f, 1 << 20), -ENOSPC);
    struct afs_op op;
    ssize_t res = 1;
    cr_assert_eq(afs_queue_fallocate(&op, f, 0, 0, 100, s_cb, &res), 0);
    s_wait();
    cr_assert_eq(res, -ENOSPC);
    s_inject(-EOPNOTSUPP);
    cr_assert_eq(afs_fallocate(f, AFS_FALLOC_PUNCH_HOLE, 0, 100), -EOPNOTSUPP);
    /* Transient: retried inside, never seen. */
    s_inject(-EINTR);
    cr_assert_eq(afs_fallocate(f, 0, 0, 8192), 0);
    cr_assert_eq(s_falloc_calls, 2);
    s_inject(-EAGAIN);
    cr_assert_eq(afs_ftruncate(f, 4000), 0);
    cr_assert_eq(s_falloc_calls, 2);
    afs__sys = s_saved;
    afs__sys.pread = s_pread;
    cr_assert_eq(afs_file_size(f), 4000);
    s_expect_pattern(f, 0, 4000);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(fadvise_and_sync_file_range)
{
    t_new_ctx();
    struct afs_file *f = s_pattern("f", 100000);
    int err = afs_fadvise(f, 0, 0, AFS_FADV_SEQUENTIAL);
#ifdef _WIN32
    cr_assert_eq(err, -ENOTSUP, "Windows takes no advice on an open handle");
#else
    cr_assert_eq(err, 0, "%s", afs_strerror(err));
    for (int adv = AFS_FADV_NORMAL; adv <= AFS_FADV_DONTNEED; adv++)
        cr_assert_eq(afs_fadvise(f, 4096, 8192, adv), 0, "advice %d", adv);
#endif
    cr_assert_eq(afs_fadvise(f, 0, 0, 6), -EINVAL, "unknown advice");
    cr_assert_eq(afs_fadvise(f, 0, 0, -1), -EINVAL);
    cr_assert_eq(afs_fadvise(f, (uint64_t)INT64_MAX + 1, 0, 0), -EINVAL);
    static char buf[8192];
    t_fill(buf, sizeof buf, 0);
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    cr_assert_eq(afs_sync_file_range(f, 0, 0,
                                     AFS_SYNC_RANGE_WAIT_BEFORE | AFS_SYNC_RANGE_WRITE |
                                         AFS_SYNC_RANGE_WAIT_AFTER),
                 0);
    cr_assert_eq(afs_sync_file_range(f, 0, 4096, AFS_SYNC_RANGE_WRITE), 0);
    cr_assert_eq(afs_sync_file_range(f, 0, 4096, 0), 0);
    cr_assert_eq(afs_sync_file_range(f, 0, 4096, 8), -EINVAL, "unknown flag");
    cr_assert_eq(afs_sync_file_range(f, 0, (uint64_t)INT64_MAX + 1, 2), -EINVAL);
    struct afs_op a, b;
    ssize_t ra = 1, rb = 1;
    cr_assert_eq(afs_queue_fadvise(&a, f, 0, 100000, AFS_FADV_WILLNEED, s_cb, &ra), 0);
    cr_assert_eq(afs_queue_sync_file_range(&b, f, 0, 8192, AFS_SYNC_RANGE_WRITE, s_cb, &rb), 0);
    while (s_done < 2)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, -1), 0);
    s_done = 0;
#ifndef _WIN32
    cr_assert_eq(ra, 0, "%s", afs_strerror((int)ra));
#endif
    cr_assert_eq(rb, 0, "%s", afs_strerror((int)rb));
    s_expect_pattern(f, 0, 100000);
    cr_assert_eq(afs_close(f), 0);

    /* Read-only files take hints and writeback requests: nothing is written through them. */
    f = s_file("f", AFS_RDONLY);
    cr_assert_eq(afs_sync_file_range(f, 0, 0, AFS_SYNC_RANGE_WRITE), 0);
    cr_assert_eq(afs_close(f), 0);
}

/* On io_uring the storage ops go into the ring (no thread pool) where the kernel has their
 * opcodes; the rest go to the pool. */
T_IO(uring_runs_storage_ops_in_the_ring)
{
    t_new_ctx();
    if (strcmp(afs_ctx_backend(t_ctx), "io_uring"))
        cr_skip_test("backend under test is %s, not io_uring", afs_ctx_backend(t_ctx));
    struct afs_file *f = s_pattern("f", 50000);
    struct afs_stats a, b;
    afs_ctx_stats(t_ctx, &a);
    cr_assert_eq(afs_fallocate(f, AFS_FALLOC_KEEP_SIZE, 0, 65536), 0);
    cr_assert_eq(afs_fadvise(f, 0, 0, AFS_FADV_WILLNEED), 0);
    cr_assert_eq(afs_sync_file_range(f, 0, 0, AFS_SYNC_RANGE_WRITE), 0);
    afs_ctx_stats(t_ctx, &b);
    cr_assert_eq(b.pool_ops, a.pool_ops, "fallocate, fadvise, sync_file_range: Linux 5.6");
    afs_ctx_stats(t_ctx, &a);
    cr_assert_eq(afs_ftruncate(f, 40000), 0);
    afs_ctx_stats(t_ctx, &b);
    /* IORING_OP_FTRUNCATE: Linux 6.9. */
    unsigned maj = 0, min = 0;
    FILE *fp = fopen("/proc/sys/kernel/osrelease", "r");
    if (fp) {
        if (fscanf(fp, "%u.%u", &maj, &min) != 2)
            maj = 0;
        fclose(fp);
    }
    if (maj > 6 || (maj == 6 && min >= 9))
        cr_assert_eq(b.pool_ops, a.pool_ops, "ftruncate in the ring on Linux %u.%u", maj, min);
    cr_assert_eq(afs_file_size(f), 40000);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(dsync_writes)
{
    t_new_ctx();
    struct afs_file *f = s_file("f", AFS_RDWR | AFS_CREAT);
    static char buf[3][20000];
    for (int i = 0; i < 3; i++)
        t_fill(buf[i], sizeof buf[i], (uint64_t)i * 20000);
    cr_assert_eq(afs_pwrite_flags(f, buf[0], 20000, 0, AFS_WRITE_DSYNC), 20000);
    struct iovec iov[2] = {{buf[1], 10000}, {buf[1] + 10000, 10000}};
    cr_assert_eq(afs_pwritev_flags(f, iov, 2, 20000, AFS_WRITE_DSYNC), 20000);
    struct afs_op a, b;
    ssize_t ra = 1, rb = 1;
    cr_assert_eq(afs_queue_write_flags(&a, f, buf[2], 20000, 40000, AFS_WRITE_DSYNC, s_cb, &ra),
                 0);
    cr_assert_eq(afs_queue_writev_flags(&b, f, iov, 1, 20000, 0, s_cb, &rb), 0);
    while (s_done < 2)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, -1), 0);
    s_done = 0;
    cr_assert_eq(ra, 20000, "%s", afs_strerror((int)ra));
    cr_assert_eq(rb, 10000, "%s", afs_strerror((int)rb));
    s_expect_pattern(f, 0, 60000);
    /* Small writes run inline: the flag holds there too. */
    cr_assert_eq(afs_pwrite_flags(f, buf[0], 100, 0, AFS_WRITE_DSYNC), 100);
    cr_assert_eq(afs_pwrite_flags(f, buf[0], 0, 0, AFS_WRITE_DSYNC), 0);
    /* Unknown flags: refused, nothing written. */
    cr_assert_eq(afs_pwrite_flags(f, buf[1], 100, 0, 0x2), -EINVAL);
    cr_assert_eq(afs_pwritev_flags(f, iov, 1, 0, 0x80), -EINVAL);
    cr_assert_eq(afs_queue_write_flags(&a, f, buf[1], 100, 0, ~0u, s_cb, &ra), -EINVAL);
    cr_assert_eq(afs_queue_writev_flags(&a, f, iov, 1, 0, 0x4, s_cb, &ra), -EINVAL);
    s_expect_pattern(f, 0, 60000);
    cr_assert_eq(afs_close(f), 0);

    /* The open flag. */
    cr_assert_eq(afs_open(t_ctx, t_path("d"), AFS_RDWR | AFS_CREAT | AFS_DSYNC, 0644,
                          AFS_MODE_SYNC, &f),
                 0);
#ifndef _WIN32
    int fl = fcntl((int)afs_file_fd(f), F_GETFL);
    cr_assert((fl & O_DSYNC) == O_DSYNC, "O_DSYNC not set: 0x%x", fl);
#endif
    cr_assert_eq(afs_pwrite(f, buf[0], 20000, 0), 20000);
    s_expect_pattern(f, 0, 20000);
    cr_assert_eq(afs_close(f), 0);
#ifndef _WIN32
    int fd = afs_openat(t_ctx, AFS_AT_FDCWD, t_path("d"), AFS_WRONLY | AFS_DSYNC, 0);
    cr_assert_geq(fd, 0, "%s", afs_strerror(fd));
    fl = fcntl(fd, F_GETFL);
    cr_assert((fl & O_DSYNC) == O_DSYNC, "afs_openat: O_DSYNC not set: 0x%x", fl);
    cr_assert_eq(afs_close_fd(t_ctx, fd), 0);
#endif
}

/* Where the library makes the write itself, AFS_WRITE_DSYNC is a data sync after it, and a
 * failed sync fails the write. */
static int s_fsyncs, s_fsync_err;
static int s_fsync(afs__fd_t fd, bool datasync)
{
    s_fsyncs++;
    if (s_fsync_err)
        return s_fsync_err;
    cr_assert(datasync, "a data sync is enough");
    return s_saved.fsync(fd, datasync);
}

Test(io, dsync_write_syncs_where_the_library_writes, .init = s_fault_setup,
     .fini = s_fault_teardown, .timeout = 30)
{
    t_new_ctx();
    s_need_pool_transfers();
    afs__sys.fsync = s_fsync;
    struct afs_file *f = s_file("f", AFS_RDWR | AFS_CREAT);
    static char buf[20000];
    t_fill(buf, sizeof buf, 0);
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    cr_assert_eq(s_fsyncs, 0);
    cr_assert_eq(afs_pwrite_flags(f, buf, sizeof buf, 0, AFS_WRITE_DSYNC), (ssize_t)sizeof buf);
    cr_assert_eq(s_fsyncs, 1);
    cr_assert_eq(afs_pwrite_flags(f, buf, 10, 0, AFS_WRITE_DSYNC), 10, "inline");
    cr_assert_eq(s_fsyncs, 2);
    s_fsync_err = -EIO;
    cr_assert_eq(afs_pwrite_flags(f, buf, sizeof buf, 0, AFS_WRITE_DSYNC), -EIO);
    s_fsync_err = 0;
    cr_assert_eq(afs_close(f), 0);
}

/* O_DIRECT: io_uring and libaio pass RWF_DSYNC with the write itself. */
T_IO(dsync_direct_writes)
{
    t_new_ctx();
    struct afs_file *f = NULL;
    int err = afs_open(t_ctx, t_path("f"), AFS_RDWR | AFS_CREAT | AFS_DIRECT, 0644,
                       AFS_MODE_SYNC, &f);
    if (err == -EINVAL)
        cr_skip_test("no O_DIRECT on this file system");
    cr_assert_eq(err, 0, "%s", afs_strerror(err));
    char *buf = afs_buf_alloc(t_ctx, 65536);
    cr_assert_not_null(buf);
    t_fill(buf, 65536, 0);
    cr_assert_eq(afs_pwrite_flags(f, buf, 65536, 0, AFS_WRITE_DSYNC), 65536);
    struct afs_op op;
    ssize_t res = 1;
    cr_assert_eq(afs_queue_write_flags(&op, f, buf, 4096, 65536, AFS_WRITE_DSYNC, s_cb, &res), 0);
    s_wait();
    cr_assert_eq(res, 4096, "%s", afs_strerror((int)res));
    memset(buf, 0, 65536);
    cr_assert_eq(afs_pread(f, buf, 65536, 0), 65536);
    cr_assert(t_check(buf, 65536, 0));
    afs_buf_free(t_ctx, buf, 65536);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(directory_fsync)
{
    t_new_ctx();
    t_make_file(t_path("f"), 100);
    cr_assert_eq(afs_fsync_dir(t_ctx, t_dir), 0);
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("missing")), -ENOENT);
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("f")), -ENOTDIR);
    cr_assert_eq(afs_fsync_dir(t_ctx, NULL), -EINVAL);
    int dfd = afs_openat(t_ctx, AFS_AT_FDCWD, t_dir, AFS_RDONLY | AFS_DIRECTORY, 0);
    cr_assert_geq(dfd, 0, "%s", afs_strerror(dfd));
    cr_assert_eq(afs_fsync_fd(t_ctx, dfd, 0), 0);
    cr_assert_eq(afs_fsync_fd(t_ctx, dfd, AFS_FSYNC_DATA), 0);
    cr_assert_eq(afs_fsync_fd(t_ctx, dfd, 0x10), -EINVAL);
    cr_assert_eq(afs_fsync_fd(t_ctx, -1, 0), -EBADF);
    struct afs_op op;
    ssize_t res = 1;
    cr_assert_eq(afs_queue_fsync_fd(&op, t_ctx, dfd, 0, s_cb, &res), 0);
    s_wait();
    cr_assert_eq(res, 0, "%s", afs_strerror((int)res));
    /* The classic: write a new file, sync it, rename it into place, sync the directory,
     * as one chain. */
    struct afs_file *f = s_file("tmp", AFS_RDWR | AFS_CREAT);
    static char buf[4096];
    t_fill(buf, sizeof buf, 0);
    struct afs_op m[4];
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_write(&m[0], f, buf, sizeof buf, 0, NULL, NULL), 0);
    cr_assert_eq(afs_queue_fsync(&m[1], f, 0, NULL, NULL), 0);
    cr_assert_eq(afs_queue_renameat(&m[2], t_ctx, dfd, "tmp", dfd, "final", 0, NULL, NULL), 0);
    cr_assert_eq(afs_queue_fsync_fd(&m[3], t_ctx, dfd, 0, NULL, NULL), 0);
    cr_assert_eq(afs_chain_end(t_ctx, AFS_CHAIN_WAIT), 0);
    struct stat st;
    cr_assert_eq(stat(t_path("final"), &st), 0);
    cr_assert_eq(st.st_size, 4096);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_close_fd(t_ctx, dfd), 0);
}

T_IO(dio_align_is_reported)
{
    t_new_ctx();
    struct afs_file *f = s_pattern("f", 100);
    struct afs_dio_align al;
    int err = afs_file_dio_align(f, &al);
    if (err == -ENOTSUP) {
        /* Only where the file system refuses direct I/O (statx said so under qemu 7 where
         * it was not true). */
        struct afs_file *g = NULL;
        int direct = afs_open(t_ctx, t_path("f"), AFS_RDWR | AFS_DIRECT, 0, AFS_MODE_SYNC, &g);
        if (direct == 0)
            afs_close(g);
        cr_assert_neq(direct, 0, "-ENOTSUP, but the file opens with AFS_DIRECT");
        afs_close(f);
        cr_skip_test("no O_DIRECT on this file system");
    }
    cr_assert_eq(err, 0, "%s", afs_strerror(err));
    cr_assert(al.mem >= 1 && (al.mem & (al.mem - 1)) == 0, "mem %u", al.mem);
    cr_assert(al.offset >= 1 && (al.offset & (al.offset - 1)) == 0, "offset %u", al.offset);
    cr_assert_eq(afs_file_dio_align(f, NULL), -EINVAL);
    cr_assert_eq(afs_close(f), 0);
    /* What it says works: a direct read of `offset` bytes into a buffer so aligned. */
    f = NULL;
    err = afs_open(t_ctx, t_path("f"), AFS_RDWR | AFS_DIRECT, 0, AFS_MODE_SYNC, &f);
    if (err == -EINVAL)
        cr_skip_test("no O_DIRECT on this file system");
    cr_assert_eq(err, 0);
    size_t n = al.offset > al.mem ? al.offset : al.mem;
    char *buf = afs_buf_alloc(t_ctx, n);
    t_fill(buf, n, 0);
    cr_assert_eq(afs_pwrite(f, buf, n, 0), (ssize_t)n);
    cr_assert_eq(afs_pread(f, buf, n, 0), (ssize_t)n);
    cr_assert(t_check(buf, n, 0));
    afs_buf_free(t_ctx, buf, n);
    cr_assert_eq(afs_close(f), 0);
#ifndef _WIN32
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(afs_file_from_fd(t_ctx, p[0], AFS_RDONLY, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_file_dio_align(f, &al), -ESPIPE);
    cr_assert_eq(afs_close(f), 0);
    close(p[1]);
#endif
}
