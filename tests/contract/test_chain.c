/* Ordered chains (afs_chain_begin/afs_chain_end): order, the result of every member when
 * one fails, one submission on io_uring, on every backend. */
#include "../common.h"

#include "internal.h" /* AFS__SUBMIT_SLICE */
#include "platform.h"
#if !defined(_WIN32) && defined(AFS_HAVE_URING)
#include "../helpers/syscount.h"
#endif
#ifndef _WIN32
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>
#endif

static int c_order[16], c_n;
static void c_cb(struct afs_op *op)
{
    c_order[c_n++] = (int)(intptr_t)op->data;
}

static void c_wait_all(int n)
{
    while (c_n < n)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, -1), 0);
    cr_assert_eq(c_n, n);
}

static struct afs_file *c_open(const char *name, int flags)
{
    struct afs_file *f = NULL;
    int err = afs_open(t_ctx, t_path(name), flags, 0644, AFS_MODE_SYNC, &f);
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    return f;
}

static char c_buf[4][16384];

T_IO(chain_runs_in_order)
{
    t_new_ctx();
    struct afs_file *f = c_open("f", AFS_RDWR | AFS_CREAT);
    for (int i = 0; i < 4; i++)
        t_fill(c_buf[i], sizeof c_buf[i], (uint64_t)i * 16384);
    struct afs_op op[6];
    c_n = 0;
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_chain_begin(t_ctx), -EBUSY);
    cr_assert_eq(afs_queue_write(&op[0], f, c_buf[0], 16384, 0, c_cb, (void *)0), 0);
    cr_assert_eq(afs_queue_write(&op[1], f, c_buf[1], 16384, 16384, c_cb, (void *)1), 0);
    cr_assert_eq(afs_queue_fsync(&op[2], f, AFS_FSYNC_DATA, c_cb, (void *)2), 0);
    cr_assert_eq(afs_queue_ftruncate(&op[3], f, 40000, c_cb, (void *)3), 0);
    /* The commit record overwrites part of what the first write put there: only in order
     * is the result right. */
    cr_assert_eq(afs_queue_write(&op[4], f, c_buf[3], 8192, 8192, c_cb, (void *)4), 0);
    cr_assert_eq(afs_queue_fsync(&op[5], f, 0, c_cb, (void *)5), 0);
    cr_assert_eq(afs_chain_end(t_ctx, 0), 6);
    c_wait_all(6);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(c_order[i], i, "callback %d ran %dth", c_order[i], i);
        cr_assert_geq(op[i].result, 0, "member %d: %s", i, afs_strerror((int)op[i].result));
    }
    cr_assert_eq(op[0].result, 16384);
    cr_assert_eq(afs_file_size(f), 40000);
    static char back[16384];
    cr_assert_eq(afs_pread(f, back, 8192, 0), 8192);
    cr_assert(t_check(back, 8192, 0));
    cr_assert_eq(afs_pread(f, back, 8192, 8192), 8192);
    cr_assert(memcmp(back, c_buf[3], 8192) == 0, "the commit record was overwritten");
    cr_assert_eq(afs_pread(f, back, 16384, 16384), 16384);
    cr_assert(t_check(back, 16384, 16384));
    cr_assert_eq(afs_chain_end(t_ctx, 0), -EINVAL, "no chain open");
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_chain_end(t_ctx, 0), 0, "an empty chain");
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_chain_end(t_ctx, 0x10), -EINVAL, "unknown flag");
    cr_assert_eq(afs_chain_end(t_ctx, 0), 0);
    cr_assert_eq(afs_close(f), 0);
}

/* The blocking form: members without callbacks, results in the ops. */
T_IO(chain_wait_returns_the_first_failure)
{
    t_new_ctx();
    struct afs_file *f = c_open("f", AFS_RDWR | AFS_CREAT);
    t_fill(c_buf[0], 16384, 0);
    struct afs_op op[3];
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_write(&op[0], f, c_buf[0], 16384, 0, NULL, NULL), 0);
    cr_assert_eq(afs_queue_fsync(&op[1], f, AFS_FSYNC_DATA, NULL, NULL), 0);
    cr_assert_eq(afs_queue_fallocate(&op[2], f, AFS_FALLOC_KEEP_SIZE, 0, 65536, NULL, NULL), 0);
    int err = afs_chain_end(t_ctx, AFS_CHAIN_WAIT);
#ifdef _WIN32
    if (err == -ENOTSUP && op[2].result == -ENOTSUP) /* wine: no allocation control */
        err = 0;
#endif
    cr_assert_eq(err, 0, "%s", afs_strerror(err));
    cr_assert_eq(op[0].result, 16384);
    cr_assert_eq(op[1].result, 0);
    cr_assert_eq(afs_ctx_wait(t_ctx, 0, 0), 0, "every callback ran already");
    /* Cancelled as a whole: nothing runs. */
    t_fill(c_buf[1], 16384, 777);
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_write(&op[0], f, c_buf[1], 16384, 0, NULL, NULL), 0);
    cr_assert_eq(afs_queue_fsync(&op[1], f, 0, NULL, NULL), 0);
    cr_assert_eq(afs_chain_end(t_ctx, AFS_CHAIN_CANCEL | AFS_CHAIN_WAIT), -ECANCELED);
    cr_assert_eq(op[0].result, -ECANCELED);
    cr_assert_eq(op[1].result, -ECANCELED);
    static char back[16384];
    cr_assert_eq(afs_pread(f, back, 16384, 0), 16384);
    cr_assert(t_check(back, 16384, 0), "a cancelled chain wrote");
    /* A member cancelled before its turn: the ones before it run, it and the rest do not. */
    c_n = 0;
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_fsync(&op[0], f, 0, c_cb, (void *)0), 0);
    cr_assert_eq(afs_queue_write(&op[1], f, c_buf[1], 16384, 0, c_cb, (void *)1), 0);
    cr_assert_eq(afs_queue_fsync(&op[2], f, 0, c_cb, (void *)2), 0);
    cr_assert_eq(afs_cancel(&op[1]), 0);
    cr_assert_eq(afs_chain_end(t_ctx, 0), 3);
    c_wait_all(3);
    cr_assert_eq(op[0].result, 0);
    cr_assert_eq(op[1].result, -ECANCELED);
    cr_assert_eq(op[2].result, -ECANCELED);
    cr_assert_eq(afs_pread(f, back, 16384, 0), 16384);
    cr_assert(t_check(back, 16384, 0), "a cancelled member wrote");
    cr_assert_eq(afs_close(f), 0);
}

/* A member's callback may reuse its op at once (or free it): the chain's wait still returns
 * the first failure, kept as the member finished, not read back from the ops. */
static struct afs_file *reuse_f;
static int reuse_done;
static void reuse_cb(struct afs_op *op)
{
    if (op->data)
        cr_assert_eq(afs_queue_fsync(op, reuse_f, 0, reuse_cb, NULL), 0);
    else
        reuse_done = 1;
}

T_IO(chain_wait_returns_the_first_failure_when_its_op_is_reused)
{
    t_new_ctx();
    reuse_f = c_open("f", AFS_RDWR | AFS_CREAT);
    struct afs_op op[3];
    struct afs_stat st;
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_statx(&op[0], t_ctx, AFS_AT_FDCWD, t_path("missing"), 0, &st,
                                 reuse_cb, (void *)1), 0);
    cr_assert_eq(afs_queue_fsync(&op[1], reuse_f, 0, c_cb, (void *)1), 0);
    cr_assert_eq(afs_queue_fsync(&op[2], reuse_f, 0, c_cb, (void *)2), 0);
    c_n = 0;
    reuse_done = 0;
    cr_assert_eq(afs_chain_end(t_ctx, AFS_CHAIN_WAIT), -ENOENT);
    cr_assert_eq(op[1].result, -ECANCELED);
    while (!reuse_done)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, -1), 0, "the reused op completes");
    cr_assert_eq(op[0].result, 0, "the reused op is an fsync now");
    cr_assert_eq(afs_close(reuse_f), 0);
}

/* A short transfer inside a chain (a read that ends at the end of the file) is a
 * result, not a failure: the rest runs. On io_uring it breaks the kernel's link, and the
 * library runs the rest itself. */
T_IO(chain_goes_on_after_a_short_read)
{
    t_new_ctx();
    t_make_file(t_path("f"), 5000);
    struct afs_file *f = c_open("f", AFS_RDWR);
    static char back[8192];
    t_fill(c_buf[0], 4096, 5000);
    struct afs_op op[4];
    c_n = 0;
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_read(&op[0], f, back, sizeof back, 0, c_cb, (void *)0), 0);
    cr_assert_eq(afs_queue_write(&op[1], f, c_buf[0], 4096, 5000, c_cb, (void *)1), 0);
    cr_assert_eq(afs_queue_fsync(&op[2], f, 0, c_cb, (void *)2), 0);
    cr_assert_eq(afs_queue_read(&op[3], f, back, sizeof back, 1000, c_cb, (void *)3), 0);
    cr_assert_eq(afs_chain_end(t_ctx, 0), 4);
    c_wait_all(4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(c_order[i], i);
    cr_assert_eq(op[0].result, 5000);
    cr_assert_eq(op[1].result, 4096, "%s", afs_strerror((int)op[1].result));
    cr_assert_eq(op[2].result, 0, "%s", afs_strerror((int)op[2].result));
    cr_assert_eq(op[3].result, 8096, "%s", afs_strerror((int)op[3].result));
    cr_assert(t_check(back, 8096, 1000));
    cr_assert_eq(afs_close(f), 0);
}

#ifndef _WIN32
/* A member over what one system call moves (MAX_RW_COUNT, 4 KiB under 2 GiB): the kernel
 * moves that much and reports it as the whole, so a link to the next member would not break
 * there and the next member would run before the rest of this one. The member is written in
 * full first (the next one, a byte inside its tail, lands over it), then the rest runs;
 * AFS_CHAIN_WAIT returns after every callback, in order. The 2 GiB come from an untouched
 * mapping (no memory) and stay in the page cache only briefly (no sync: the file is
 * removed). 2 GiB through the page cache takes 30 s on a loaded 2-core machine with a
 * sanitizer: the test has 300. */
Test(io, chain_member_over_2_gib_runs_whole_before_the_next, .init = t_setup,
     .fini = t_teardown, .timeout = 300)
{
    t_new_ctx();
    uint64_t want = ((uint64_t)1 << 31) + 8192;
    struct statvfs vfs;
    if (want > (uint64_t)SSIZE_MAX)
        cr_skip_test("a transfer of 2 GiB is over SSIZE_MAX here");
    if (statvfs(t_dir, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < 2 * want)
        cr_skip_test("under 4 GiB free in %s", t_dir);
    size_t big = (size_t)want;
    void *zeros = mmap(NULL, big, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (zeros == MAP_FAILED)
        cr_skip_test("no 2 GiB of address space");
    struct afs_file *f = c_open("big", AFS_RDWR | AFS_CREAT);
    struct afs_op op[3];
    c_n = 0;
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_write(&op[0], f, zeros, big, 0, c_cb, (void *)0), 0);
    cr_assert_eq(afs_queue_write(&op[1], f, "x", 1, big - 1, c_cb, (void *)1), 0);
    cr_assert_eq(afs_queue_write(&op[2], f, "y", 1, 0, c_cb, (void *)2), 0);
    cr_assert_eq(afs_chain_end(t_ctx, AFS_CHAIN_WAIT), 0);
    cr_assert_eq(c_n, 3, "AFS_CHAIN_WAIT returned after %d callbacks", c_n);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(c_order[i], i, "callback %d ran %dth", c_order[i], i);
    cr_assert_eq(op[0].result, (ssize_t)big);
    cr_assert_eq(op[1].result, 1);
    cr_assert_eq(op[2].result, 1, "%s", afs_strerror((int)op[2].result));
    char c = 0;
    cr_assert_eq(afs_pread(f, &c, 1, big - 1), 1);
    cr_assert_eq(c, 'x', "the second member ran before the end of the first");
    cr_assert_eq(afs_pread(f, &c, 1, 0), 1);
    cr_assert_eq(c, 'y');
    cr_assert_eq(afs_close(f), 0);
    munmap(zeros, big);
    unlink(t_path("big"));
}

/* A chain whose first write fails: the fsync does not run and does not report success, the
 * commit record is not written. The file is opened read-only underneath a file the library
 * believes writable, so the kernel itself refuses the write (-EBADF) on every backend. */
T_IO(chain_first_write_fails)
{
    t_new_ctx();
    t_make_file(t_path("f"), 20000);
    int fd = open(t_path("f"), O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    struct afs_file *f = NULL;
    cr_assert_eq(afs_file_from_fd(t_ctx, fd, AFS_RDWR, AFS_MODE_SYNC, &f), 0);
    struct afs_op op[3];
    t_fill(c_buf[0], 16384, 99);
    c_n = 0;
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_write(&op[0], f, c_buf[0], 16384, 0, c_cb, (void *)0), 0);
    cr_assert_eq(afs_queue_fsync(&op[1], f, AFS_FSYNC_DATA, c_cb, (void *)1), 0);
    cr_assert_eq(afs_queue_write(&op[2], f, c_buf[0], 100, 16384, c_cb, (void *)2), 0);
    cr_assert_eq(afs_chain_end(t_ctx, 0), 3);
    c_wait_all(3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(c_order[i], i, "callbacks out of order");
    cr_assert_eq(op[0].result, -EBADF, "%s", afs_strerror((int)op[0].result));
    cr_assert_eq(op[1].result, -ECANCELED, "the fsync ran: %s", afs_strerror((int)op[1].result));
    cr_assert_eq(op[2].result, -ECANCELED, "the commit record: %s",
                 afs_strerror((int)op[2].result));
    static char back[20000];
    cr_assert_eq(pread(fd, back, sizeof back, 0), 20000);
    cr_assert(t_check(back, sizeof back, 0));
    cr_assert_eq(afs_close(f), 0);
}

/* Waiting while a chain is being built cannot end: it aborts with a message. */
static void c_wait_in_chain(void *arg)
{
    struct afs_ctx *ctx = arg;
    afs_chain_begin(ctx);
    afs_ctx_wait(ctx, 0, 0);
}

T_IO(waiting_with_a_chain_open_aborts)
{
    t_new_ctx();
    t_expect_abort(c_wait_in_chain, t_ctx, "a chain is open");
}
#endif

/* Faults where the library makes the calls (threads, sync): a failed fsync in the middle
 * fails the commit record after it, and a failed first write keeps the fsync from running. */
static struct afs__syscalls c_saved;
static int c_fsyncs, c_fail_write;
static int c_fsync(afs__fd_t fd, bool datasync)
{
    c_fsyncs++;
    return -EIO;
}

static ssize_t c_pwrite(afs__fd_t fd, const void *buf, size_t len, uint64_t off)
{
    if (c_fail_write) {
        c_fail_write = 0;
        return -ENOSPC;
    }
    return c_saved.pwrite(fd, buf, len, off);
}

static void c_setup(void)
{
    t_setup();
    c_saved = afs__sys;
    afs__sys.fsync = c_fsync;
    afs__sys.pwrite = c_pwrite;
}

static void c_teardown(void)
{
    afs__sys = c_saved;
    t_teardown();
}

Test(io, chain_faults_stop_the_rest, .init = c_setup, .fini = c_teardown, .timeout = 30)
{
    t_new_ctx();
    const char *b = afs_ctx_backend(t_ctx);
    if (strcmp(b, "threads") && strcmp(b, "sync"))
        cr_skip_test("transfers on %s are made by the kernel, not through afs__sys", b);
    struct afs_file *f = c_open("f", AFS_RDWR | AFS_CREAT);
    struct afs_op op[3];
    t_fill(c_buf[0], 16384, 0);
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_write(&op[0], f, c_buf[0], 16384, 0, NULL, NULL), 0);
    cr_assert_eq(afs_queue_fsync(&op[1], f, 0, NULL, NULL), 0);
    cr_assert_eq(afs_queue_write(&op[2], f, c_buf[0], 100, 16384, NULL, NULL), 0);
    cr_assert_eq(afs_chain_end(t_ctx, AFS_CHAIN_WAIT), -EIO);
    cr_assert_eq(op[0].result, 16384);
    cr_assert_eq(op[1].result, -EIO);
    cr_assert_eq(op[2].result, -ECANCELED);
    cr_assert_eq(afs_file_size(f), 16384, "the commit record was written");
    /* ENOSPC on the first write: no fsync at all. */
    c_fsyncs = 0;
    c_fail_write = 1;
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_write(&op[0], f, c_buf[0], 16384, 16384, NULL, NULL), 0);
    cr_assert_eq(afs_queue_fsync(&op[1], f, 0, NULL, NULL), 0);
    cr_assert_eq(afs_chain_end(t_ctx, AFS_CHAIN_WAIT), -ENOSPC);
    cr_assert_eq(op[1].result, -ECANCELED);
    cr_assert_eq(c_fsyncs, 0, "the fsync ran after a failed write");
    cr_assert_eq(afs_close(f), 0);
}

#if !defined(_WIN32) && defined(AFS_HAVE_URING)
/* io_uring: the whole chain in one submission (one io_uring_enter that hands over SQEs),
 * nothing through the thread pool. */
T_IO(uring_chain_is_one_submission)
{
    t_new_ctx();
    if (strcmp(afs_ctx_backend(t_ctx), "io_uring"))
        cr_skip_test("backend under test is %s, not io_uring", afs_ctx_backend(t_ctx));
    struct afs_file *f = c_open("f", AFS_RDWR | AFS_CREAT);
    t_fill(c_buf[0], 16384, 0);
    struct afs_op op[4];
    /* Warm up: the ring's waker read and the storage opcode probe. */
    cr_assert_eq(afs_ftruncate(f, 0), 0);
    sc_install();
    struct afs_stats sa, sb;
    afs_ctx_stats(t_ctx, &sa);
    struct sc_counts a = sc_get();
    /* Writes, then the fsync: one linked submission. */
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_write(&op[0], f, c_buf[0], 16384, 0, NULL, NULL), 0);
    cr_assert_eq(afs_queue_write(&op[1], f, c_buf[0], 512, 16384, NULL, NULL), 0);
    cr_assert_eq(afs_queue_fsync(&op[2], f, AFS_FSYNC_DATA, NULL, NULL), 0);
    cr_assert_eq(afs_chain_end(t_ctx, 0), 3);
    cr_assert_eq(afs_ctx_submit(t_ctx), 3);
    struct sc_counts b = sc_get();
    for (int got = 0; got < 3;) {
        int r = afs_ctx_wait(t_ctx, 1, -1);
        cr_assert_geq(r, 0);
        got += r;
    }
    afs_ctx_stats(t_ctx, &sb);
    cr_assert_eq(b.uring_submits - a.uring_submits, 1, "%lu submissions",
                 b.uring_submits - a.uring_submits);
    cr_assert_eq(sb.pool_ops, sa.pool_ops, "a member went to the thread pool");
    for (int i = 0; i < 3; i++)
        cr_assert_geq(op[i].result, 0, "member %d: %s", i, afs_strerror((int)op[i].result));
    /* Write, fsync, commit record: the kernel would run the record after a failed fsync, so
     * the link ends at the fsync and the record goes once it succeeded: two submissions. */
    a = sc_get();
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_write(&op[0], f, c_buf[0], 4096, 0, NULL, NULL), 0);
    cr_assert_eq(afs_queue_fsync(&op[1], f, AFS_FSYNC_DATA, NULL, NULL), 0);
    cr_assert_eq(afs_queue_write(&op[2], f, c_buf[0], 512, 16384 + 512, NULL, NULL), 0);
    cr_assert_eq(afs_queue_fsync(&op[3], f, AFS_FSYNC_DATA, NULL, NULL), 0);
    cr_assert_eq(afs_chain_end(t_ctx, AFS_CHAIN_WAIT), 0);
    b = sc_get();
    sc_uninstall();
    cr_assert_eq(b.uring_submits - a.uring_submits, 2, "%lu submissions",
                 b.uring_submits - a.uring_submits);
    for (int i = 0; i < 4; i++)
        cr_assert_geq(op[i].result, 0, "member %d: %s", i, afs_strerror((int)op[i].result));
    cr_assert_eq(afs_file_size(f), 16384 + 1024);
    cr_assert_eq(afs_close(f), 0);
}

/* A member whose failure the kernel does not treat as a broken link (an fsync, a storage op,
 * a metadata op): the members after it still complete -ECANCELED without running, on every
 * backend. */
T_IO(chain_stops_after_a_failed_fsync_or_storage_op)
{
    t_new_ctx();
    struct afs_file *f = c_open("f", AFS_RDWR | AFS_CREAT);
#ifdef _WIN32
    int bad_fd = -1; /* no pipes as fds there: fsync of an invalid handle */
#else
    int p[2];
    cr_assert_eq(pipe(p), 0);
    int bad_fd = p[0]; /* fsync of a pipe: -EINVAL */
#endif
    t_fill(c_buf[0], 4096, 0);
    for (int k = 0; k < 4; k++) {
        cr_assert_eq(afs_ftruncate(f, 0), 0);
        struct afs_op op[3];
        struct afs_stat st;
        cr_assert_eq(afs_chain_begin(t_ctx), 0);
        cr_assert_eq(afs_queue_write(&op[0], f, c_buf[0], 4096, 0, NULL, NULL), 0);
        int q = 0;
        switch (k) {
        case 0: q = afs_queue_fsync_fd(&op[1], t_ctx, bad_fd, 0, NULL, NULL); break;
        case 1:
            q = afs_queue_fallocate(&op[1], f, 0, 0, (uint64_t)1 << 62, NULL, NULL);
            break;
        case 2: q = afs_queue_ftruncate(&op[1], f, INT64_MAX, NULL, NULL); break;
        case 3:
            q = afs_queue_statx(&op[1], t_ctx, AFS_AT_FDCWD, t_path("missing"), 0, &st, NULL,
                                NULL);
            break;
        }
        cr_assert_eq(q, 0, "case %d: queued: %s", k, afs_strerror(q));
        cr_assert_eq(afs_queue_write(&op[2], f, "COMMIT", 6, 4096, NULL, NULL), 0);
        int err = afs_chain_end(t_ctx, AFS_CHAIN_WAIT);
        cr_assert_eq(op[0].result, 4096);
        cr_assert_lt(op[1].result, 0, "case %d: the member did not fail", k);
        cr_assert_eq(err, (int)op[1].result);
        cr_assert_eq(op[2].result, -ECANCELED, "case %d: the record ran after a failure: %zd", k,
                     op[2].result);
        cr_assert_eq(afs_file_size(f), 4096, "case %d: the record was written", k);
    }
#ifndef _WIN32
    close(p[0]);
    close(p[1]);
#endif
    cr_assert_eq(afs_close(f), 0);
}

/* io_uring: a batch larger than AFS__SUBMIT_SLICE goes to the kernel in slices as it is
 * staged, every op's result right, and a chain that crosses a slice's end is not split: its
 * failing first member still cancels the rest. */
#define SLICED_READS (2 * AFS__SUBMIT_SLICE + 300)
static unsigned sliced_done;
static void sliced_cb(struct afs_op *op)
{
    (void)op;
    sliced_done++;
}

T_IO(uring_large_batch_goes_in_slices_chains_whole)
{
    struct afs_config cfg = {.queue_depth = 4096};
    t_ctx = t_ctx_cfg(&cfg);
    if (strcmp(afs_ctx_backend(t_ctx), "io_uring"))
        cr_skip_test("backend under test is %s, not io_uring", afs_ctx_backend(t_ctx));
    t_make_file(t_path("f"), (size_t)SLICED_READS * 4096);
    struct afs_file *f = c_open("f", AFS_RDONLY);
    t_make_file(t_path("ro"), 20000);
    int fd = open(t_path("ro"), O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    struct afs_file *ro = NULL;
    cr_assert_eq(afs_file_from_fd(t_ctx, fd, AFS_RDWR, AFS_MODE_SYNC, &ro), 0);
    static struct afs_op ops[SLICED_READS], chain[3];
    static char bufs[SLICED_READS][4096];
    cr_assert_eq(afs_pread(f, bufs[0], 4096, 0), 4096); /* warm up: the waker's read */
    const unsigned before_chain = AFS__SUBMIT_SLICE - 2;
    sliced_done = 0;
    sc_install();
    struct afs_stats sa, sb;
    afs_ctx_stats(t_ctx, &sa);
    struct sc_counts a = sc_get();
    for (unsigned i = 0; i < SLICED_READS; i++) {
        if (i == before_chain) {
            /* Staged as the slice fills: it must go to the kernel in one piece. */
            t_fill(c_buf[0], 16384, 7);
            cr_assert_eq(afs_chain_begin(t_ctx), 0);
            cr_assert_eq(afs_queue_write(&chain[0], ro, c_buf[0], 4096, 0, sliced_cb, NULL), 0);
            cr_assert_eq(afs_queue_fsync(&chain[1], ro, AFS_FSYNC_DATA, sliced_cb, NULL), 0);
            cr_assert_eq(afs_queue_write(&chain[2], ro, c_buf[0], 100, 4096, sliced_cb, NULL), 0);
            cr_assert_eq(afs_chain_end(t_ctx, 0), 3);
        }
        unsigned k = (i * 37) % SLICED_READS; /* scattered offsets */
        int err = afs_queue_read(&ops[i], f, bufs[i], 4096, (uint64_t)k * 4096, sliced_cb,
                                 NULL);
        cr_assert_eq(err, 0, "read %u: %s", i, afs_strerror(err));
    }
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    struct sc_counts b = sc_get();
    while (sliced_done < SLICED_READS + 3)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, -1), 0);
    cr_assert_eq(sliced_done, SLICED_READS + 3);
    afs_ctx_stats(t_ctx, &sb);
    sc_uninstall();
    /* Slices of AFS__SUBMIT_SLICE staged ops, then afs_ctx_submit() with the rest. */
    unsigned long want = (SLICED_READS + 3) / AFS__SUBMIT_SLICE + 1;
    cr_assert_eq(b.uring_submits - a.uring_submits, want, "%lu submissions for %u ops, not %lu",
                 b.uring_submits - a.uring_submits, SLICED_READS + 3, want);
    cr_assert_eq(sb.kernel_submits - sa.kernel_submits, want);
    cr_assert_eq(sb.pool_ops, sa.pool_ops, "an op went to the thread pool");
    for (unsigned i = 0; i < SLICED_READS; i++) {
        unsigned k = (i * 37) % SLICED_READS;
        cr_assert_eq(ops[i].result, 4096, "read %u: %zd", i, ops[i].result);
        cr_assert(t_check(bufs[i], 4096, (uint64_t)k * 4096), "read %u: wrong data", i);
    }
    cr_assert_eq(chain[0].result, -EBADF, "%s", afs_strerror((int)chain[0].result));
    cr_assert_eq(chain[1].result, -ECANCELED, "the fsync ran: %s",
                 afs_strerror((int)chain[1].result));
    cr_assert_eq(chain[2].result, -ECANCELED, "the last write: %s",
                 afs_strerror((int)chain[2].result));
    static char back[20000];
    cr_assert_eq(pread(fd, back, sizeof back, 0), 20000);
    cr_assert(t_check(back, sizeof back, 0), "the read-only file changed");
    cr_assert_eq(afs_close(ro), 0);
    cr_assert_eq(afs_close(f), 0);
}
#endif
