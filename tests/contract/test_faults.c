/* Fault injection through the system call table (afs__sys, SQLite's aSyscall idea): the
 * transfers that the core runs itself (threads and sync backends, and the inline path of
 * every backend) get EINTR, EAGAIN, short transfers, EIO and ENOSPC on the Nth call. The
 * caller must see the documented result, every callback must run exactly once, and the
 * context must stay usable. */
#include "../common.h"

#include "platform.h"

static struct afs__syscalls saved;

struct plan {
    int     nth;     /* fail the nth call (1-based) of the kind below; 0 = never */
    ssize_t result;  /* what the failing call returns: -errno, or a short count */
    int     calls;
    int     repeat;  /* keep failing for this many more calls */
};
static struct plan rp, wp, fp; /* reads, writes, fsyncs */

static ssize_t fault(struct plan *p, ssize_t len)
{
    p->calls++;
    if (p->nth && p->calls >= p->nth && p->calls <= p->nth + p->repeat) {
        if (p->result >= 0) /* a short transfer of result bytes, at most what was asked */
            return p->result < len ? p->result : len;
        return p->result;
    }
    return -1000; /* no fault: run the real call */
}

static ssize_t f_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    ssize_t r = fault(&rp, (ssize_t)len);
    if (r == -1000)
        return saved.pread(fd, buf, len, off);
    return r >= 0 ? saved.pread(fd, buf, (size_t)r, off) : r; /* short: really read r */
}

static ssize_t f_pwrite(afs__fd_t fd, const void *buf, size_t len, uint64_t off)
{
    ssize_t r = fault(&wp, (ssize_t)len);
    if (r == -1000)
        return saved.pwrite(fd, buf, len, off);
    return r > 0 ? saved.pwrite(fd, buf, (size_t)r, off) : r; /* short: really write r */
}

static int f_fsync(afs__fd_t fd, bool datasync)
{
    ssize_t r = fault(&fp, 0);
    return r == -1000 ? saved.fsync(fd, datasync) : (int)r;
}

static void f_setup(void)
{
    t_setup();
    saved = afs__sys;
    afs__sys.pread = f_pread;
    afs__sys.pwrite = f_pwrite;
    afs__sys.fsync = f_fsync;
    memset(&rp, 0, sizeof rp);
    memset(&wp, 0, sizeof wp);
    memset(&fp, 0, sizeof fp);
}

static void f_teardown(void)
{
    afs__sys = saved;
    t_teardown();
}

#define T_FAULT(name) Test(faults, name, .init = f_setup, .fini = f_teardown, .timeout = 30)

/* The core runs the transfers itself only on these backends (elsewhere the kernel does). */
static struct afs_ctx *fault_ctx(size_t threshold)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.sync_threshold = threshold;
    t_ctx = t_ctx_cfg(&cfg);
    const char *b = afs_ctx_backend(t_ctx);
    if (strcmp(b, "threads") && strcmp(b, "sync"))
        cr_skip_test("transfers on %s are made by the kernel, not through afs__sys", b);
    return t_ctx;
}

static struct afs_file *fault_file(size_t len)
{
    t_make_file(t_path("f"), len);
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDWR, 0, AFS_MODE_SYNC, &f), 0);
    return f;
}

T_FAULT(eintr_and_eagain_are_retried_inside)
{
    fault_ctx(0);
    struct afs_file *f = fault_file(65536);
    static char buf[65536];
    rp = (struct plan){.nth = 1, .result = -EINTR, .repeat = 2};
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    cr_assert(t_check(buf, sizeof buf, 0));
    rp = (struct plan){.nth = 1, .result = -EAGAIN, .repeat = 3};
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    wp = (struct plan){.nth = 1, .result = -EINTR};
    cr_assert_eq(afs_pwrite(f, buf, 4096, 0), 4096);
    fp = (struct plan){.nth = 1, .result = -EINTR};
    cr_assert_eq(afs_fsync(f, 0), 0);
    cr_assert_eq(afs_close(f), 0);
}

T_FAULT(short_transfers_are_completed)
{
    fault_ctx(0);
    struct afs_file *f = fault_file(65536);
    static char buf[65536];
    /* Every read returns at most 1000 bytes: the op still reads all 64 KiB, in order. */
    rp = (struct plan){.nth = 1, .result = 1000, .repeat = 1000};
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    cr_assert(t_check(buf, sizeof buf, 0));
    cr_assert_geq(rp.calls, 66);
    /* Writes too: a write completes in full or fails. */
    t_fill(buf, sizeof buf, 100000);
    wp = (struct plan){.nth = 1, .result = 777, .repeat = 1000};
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 100000), (ssize_t)sizeof buf);
    rp.nth = 0;
    static char back[65536];
    cr_assert_eq(afs_pread(f, back, sizeof back, 100000), (ssize_t)sizeof back);
    cr_assert(t_check(back, sizeof back, 100000));
    cr_assert_eq(afs_close(f), 0);
}

T_FAULT(a_write_that_moves_nothing_fails_instead_of_spinning)
{
    fault_ctx(0);
    struct afs_file *f = fault_file(4096);
    static char buf[8192];
    wp = (struct plan){.nth = 1, .result = 0, .repeat = 1000000};
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 0), -EIO);
    cr_assert_eq(afs_close(f), 0);
}

T_FAULT(eio_and_enospc_are_reported_and_not_sticky)
{
    fault_ctx(0);
    struct afs_file *f = fault_file(65536);
    static char buf[65536];
    /* The position API: the failed op leaves the position; the next one works. */
    cr_assert_eq(afs_seek(f, 4096, SEEK_SET), 4096);
    rp = (struct plan){.nth = 1, .result = -EIO};
    cr_assert_eq(afs_read(f, buf, 8192), -EIO);
    cr_assert_eq(afs_tell(f), 4096);
    cr_assert_eq(afs_read(f, buf, 8192), 8192);
    cr_assert(t_check(buf, 8192, 4096));
    cr_assert_eq(afs_tell(f), 4096 + 8192);
    /* A write refused with ENOSPC: reported, and the file keeps its data. */
    static char other[65536];
    memset(other, 0x5a, sizeof other);
    wp = (struct plan){.nth = 1, .result = -ENOSPC};
    cr_assert_eq(afs_pwrite(f, other, sizeof other, 0), -ENOSPC);
    rp.nth = 0;
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    cr_assert(t_check(buf, sizeof buf, 0), "a write that failed at once changed nothing");
    fp = (struct plan){.nth = 1, .result = -EIO};
    cr_assert_eq(afs_fsync(f, AFS_FSYNC_DATA), -EIO);
    cr_assert_eq(afs_fsync(f, AFS_FSYNC_DATA), 0, "not sticky");
    cr_assert_eq(afs_close(f), 0);
}

struct tally {
    int     calls[64];
    ssize_t res[64];
};
static struct tally tally;
static struct afs_op ops[64];

static void tally_cb(struct afs_op *op)
{
    int i = (int)(op - ops);
    tally.calls[i]++;
    tally.res[i] = op->result;
}

T_FAULT(every_callback_runs_once_under_faults)
{
    fault_ctx(4096);
    struct afs_file *f = fault_file(64 * 4096);
    static char bufs[64][4096];
    memset(&tally, 0, sizeof tally);
    /* Among 64 reads in flight: EINTR, EAGAIN, short reads and EIO on various calls. */
    rp = (struct plan){.nth = 5, .result = -EIO, .repeat = 0};
    for (int i = 0; i < 64; i++)
        cr_assert_eq(afs_queue_read(&ops[i], f, bufs[i], 4096, (uint64_t)i * 4096, tally_cb, NULL), 0);
    int done = 0;
    while (done < 64) {
        int r = afs_ctx_wait(t_ctx, 1, -1);
        cr_assert_geq(r, 0);
        done += r;
    }
    cr_assert_eq(done, 64);
    int eio = 0;
    for (int i = 0; i < 64; i++) {
        cr_assert_eq(tally.calls[i], 1, "op %d: callback ran %d times", i, tally.calls[i]);
        if (tally.res[i] == -EIO)
            eio++;
        else
            cr_assert(tally.res[i] == 4096 && t_check(bufs[i], 4096, (uint64_t)i * 4096));
    }
    cr_assert_eq(eio, 1, "exactly the faulted read failed");
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, 0), 0, "nothing delivered twice");
    /* The context stays usable. */
    rp.nth = 0;
    cr_assert_eq(afs_pread(f, bufs[0], 4096, 0), 4096);
    cr_assert_eq(afs_close(f), 0);
}

#if defined(__linux__) && defined(AFS_HAVE_LIBAIO)
#include <libaio.h>

/* A kernel before 4.18 (no AIO fsync) and before 4.13 (no per-request flags), played by
 * io_submit refusing such an iocb at the head of a batch with EINVAL. */
static int old_kernel_submit(io_context_t aio, long nr, struct iocb **iocbs)
{
    long ok = 0;
    while (ok < nr && iocbs[ok]->aio_rw_flags == 0 &&
           iocbs[ok]->aio_lio_opcode != IO_CMD_FSYNC && iocbs[ok]->aio_lio_opcode != IO_CMD_FDSYNC)
        ok++;
    return ok == 0 ? -EINVAL : io_submit(aio, ok, iocbs);
}

/* libaio: what an older kernel refuses goes to the pool, and an iocb refused for good fails
 * alone; neither leaves a wait sleeping on an event that never comes. */
T_FAULT(libaio_requests_the_kernel_refuses_complete_without_a_hang)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.backend = AFS_BACKEND_LIBAIO;
    t_ctx = t_ctx_cfg(&cfg);
    struct afs_file *f;
    int err = afs_open(t_ctx, t_path("d"), AFS_RDWR | AFS_CREAT | AFS_DIRECT, 0644,
                       AFS_MODE_SYNC, &f);
    if (err == -EINVAL)
        cr_skip_test("the file system under %s refuses O_DIRECT", t_dir);
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    char *buf = afs_buf_alloc(t_ctx, 4096);
    cr_assert_not_null(buf);
    memset(buf, 'd', 4096);
    cr_assert_eq(afs_pwrite(f, buf, 4096, 0), 4096);
    if (strcmp(afs_ctx_backend(t_ctx), "libaio") != 0)
        cr_skip_test("no libaio context here (%s)", afs_ctx_backend(t_ctx));
    /* An idle wait takes what the write's completion left in the eventfd. */
    (void)afs_ctx_wait(t_ctx, 1, 10 * 1000 * 1000);
    afs__sys.laio_submit = old_kernel_submit;
    cr_assert_eq(afs_fsync(f, 0), 0);
    cr_assert_eq(afs_pwrite_flags(f, buf, 4096, 4096, AFS_WRITE_DSYNC), 4096);
    cr_assert_eq(afs_pread(f, buf, 4096, 0), 4096); /* the kernel still takes plain reads */
    afs__sys.laio_submit = saved.laio_submit;
    (void)afs_ctx_wait(t_ctx, 1, 10 * 1000 * 1000);
    /* An iocb refused for good: a descriptor closed behind the library's back. */
    cr_assert_eq(close((int)afs_file_fd(f)), 0);
    cr_assert_eq(afs_pread(f, buf, 4096, 0), -EBADF);
    afs_buf_free(t_ctx, buf, 4096);
    afs_close(f);
}
#endif
