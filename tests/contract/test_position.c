/* 3.1 The position API, sync and async modes, and the sync threshold. */
#include "../common.h"

#include <signal.h>
#ifndef _WIN32
#include <sys/resource.h>
#endif

static struct afs_file *t_open(const char *name, int flags, enum afs_mode mode)
{
    struct afs_file *f = NULL;
    int err = afs_open(t_ctx, t_path(name), flags, 0644, mode, &f);
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    return f;
}

/* The seed's documented polling loop, which spun forever when the op failed. */
static ssize_t poll_last_op(struct afs_file *f)
{
    ssize_t res = 12345;
    for (long i = 0;; i++) {
        int r = afs_last_op(f, &res);
        cr_assert(r == 0 || r == 1, "afs_last_op: %d", r);
        if (r == 1)
            return res;
        cr_assert_lt(i, 100000000L, "afs_last_op never reported the op done");
    }
}

T_IO(sync_write_seek_read)
{
    t_new_ctx();
    struct afs_file *f = t_open("f", AFS_RDWR | AFS_CREAT, AFS_MODE_SYNC);
    char buf[10000], back[10000];
    t_fill(buf, sizeof buf, 0);
    cr_assert_eq(afs_write(f, buf, 3000), 3000);
    cr_assert_eq(afs_tell(f), 3000);
    cr_assert_eq(afs_write(f, buf + 3000, 7000), 7000); /* over the threshold */
    cr_assert_eq(afs_tell(f), 10000);
    cr_assert_eq(afs_seek(f, 0, SEEK_SET), 0);
    cr_assert_eq(afs_read(f, back, sizeof back), 10000);
    cr_assert(t_check(back, sizeof back, 0));
    cr_assert_eq(afs_read(f, back, sizeof back), 0, "EOF");
    cr_assert_eq(afs_tell(f), 10000);
    cr_assert_eq(afs_seek(f, -100, SEEK_END), 9900);
    cr_assert_eq(afs_read(f, back, 1000), 100, "short only at EOF, position moves by it");
    cr_assert_eq(afs_tell(f), 10000);
    cr_assert_eq(afs_seek(f, -5000, SEEK_CUR), 5000);
    ssize_t res;
    cr_assert_eq(afs_last_op(f, &res), 1);
    cr_assert_eq(res, 100, "sync mode reports the last op");
    cr_assert_eq(afs_close(f), 0);
}

T_IO(seek_errors_leave_the_position)
{
    t_new_ctx();
    struct afs_file *f = t_open("f", AFS_RDWR | AFS_CREAT, AFS_MODE_SYNC);
    cr_assert_eq(afs_seek(f, 42, SEEK_SET), 42);
    cr_assert_eq(afs_seek(f, -1, SEEK_SET), -EINVAL);
    cr_assert_eq(afs_seek(f, -43, SEEK_CUR), -EINVAL);
    cr_assert_eq(afs_seek(f, INT64_MAX, SEEK_CUR), -EINVAL);
    cr_assert_eq(afs_seek(f, 0, 99), -EINVAL);
    cr_assert_eq(afs_tell(f), 42);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(sync_threshold_chooses_inline_or_backend)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.sync_threshold = 8192;
    t_ctx = t_ctx_cfg(&cfg);
    struct afs_file *f = t_open("f", AFS_RDWR | AFS_CREAT, AFS_MODE_SYNC);
    static char buf[65536];
    struct afs_stats a, b;
    afs_ctx_stats(t_ctx, &a);
    cr_assert_eq(afs_write(f, buf, 8192), 8192);
    afs_ctx_stats(t_ctx, &b);
    cr_assert_eq(b.inline_ops - a.inline_ops, 1, "at the threshold: inline");
    cr_assert_eq(b.ops - a.ops, 0);
    cr_assert_eq(afs_write(f, buf, 8193), 8193);
    afs_ctx_stats(t_ctx, &a);
    cr_assert_eq(a.inline_ops - b.inline_ops, 0, "over the threshold: the backend");
    cr_assert_eq(a.ops - b.ops, 1);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(async_write_then_read_with_the_polling_loop)
{
    t_new_ctx();
    struct afs_file *f = t_open("f", AFS_RDWR | AFS_CREAT | AFS_TRUNC, AFS_MODE_ASYNC);
    ssize_t res = 7;
    cr_assert_eq(afs_last_op(f, &res), 1, "nothing submitted yet");
    cr_assert_eq(res, 0);
    char *buf = afs_buf_alloc(t_ctx, 4096), *out = afs_buf_alloc(t_ctx, 4096);
    t_fill(buf, 4096, 0);
    cr_assert_eq(afs_write(f, buf, 4096), 0, "async: 0 at once");
    cr_assert_eq(poll_last_op(f), 4096);
    cr_assert_eq(afs_last_op(f, &res), 1, "repeatable");
    cr_assert_eq(res, 4096);
    cr_assert_eq(afs_tell(f), 4096);
    cr_assert_eq(afs_seek(f, 0, SEEK_SET), 0);
    cr_assert_eq(afs_read(f, out, 4096), 0);
    cr_assert_eq(afs_last_op_wait(f, &res), 1);
    cr_assert_eq(res, 4096);
    cr_assert(t_check(out, 4096, 0));
    cr_assert_eq(afs_read(f, out, 4096), 0);
    cr_assert_eq(poll_last_op(f), 0, "EOF is a 0-byte read");
    cr_assert_eq(afs_tell(f), 4096);
    afs_buf_free(t_ctx, buf, 4096);
    afs_buf_free(t_ctx, out, 4096);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(second_op_while_pending_is_ebusy)
{
    t_new_ctx();
    struct afs_file *f = t_open("f", AFS_RDWR | AFS_CREAT, AFS_MODE_ASYNC);
    static char buf[1 << 20];
    cr_assert_eq(afs_write(f, buf, sizeof buf), 0);
    /* The sync backend finishes at submission, but the callback still waits for a poll. */
    cr_assert_eq(afs_write(f, buf, 10), -EBUSY);
    cr_assert_eq(afs_read(f, buf, 10), -EBUSY);
    cr_assert_eq(afs_seek(f, 0, SEEK_SET), -EBUSY);
    cr_assert_eq(afs_tell(f), -EBUSY);
    ssize_t res;
    cr_assert_eq(afs_last_op_wait(f, &res), 1);
    cr_assert_eq(res, sizeof buf);
    cr_assert_eq(afs_tell(f), sizeof buf);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(zero_length_ops_complete_at_once)
{
    t_new_ctx();
    struct afs_file *s = t_open("s", AFS_RDWR | AFS_CREAT, AFS_MODE_SYNC);
    struct afs_file *a = t_open("a", AFS_RDWR | AFS_CREAT, AFS_MODE_ASYNC);
    cr_assert_eq(afs_read(s, NULL, 0), 0);
    cr_assert_eq(afs_write(s, NULL, 0), 0);
    cr_assert_eq(afs_write(a, "", 0), 0);
    cr_assert_eq(poll_last_op(a), 0);
    cr_assert_eq(afs_read(a, NULL, 0), 0);
    cr_assert_eq(poll_last_op(a), 0);
    cr_assert_eq(afs_tell(a), 0);
    cr_assert_eq(afs_close(s), 0);
    cr_assert_eq(afs_close(a), 0);
}

/* Errors from the kernel: the position stays, and the next op runs normally. */
T_IO(errors_are_not_sticky_and_keep_the_position)
{
    t_new_ctx();
#ifdef _WIN32
    /* No RLIMIT_FSIZE: a write far past the largest file the file system allows fails
     * instead (NTFS: 16 TiB; ext4 under wine too), with an error that depends on it. */
    const int64_t bad = (int64_t)1 << 62;
#else
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {1 << 20, 1 << 20};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    const int64_t bad = 2 << 20;
#endif
    enum afs_mode modes[] = {AFS_MODE_SYNC, AFS_MODE_ASYNC};
    for (int m = 0; m < 2; m++) {
        struct afs_file *f = t_open(m ? "a" : "s", AFS_RDWR | AFS_CREAT, modes[m]);
        static char buf[8192];
        t_fill(buf, sizeof buf, 0);
        cr_assert_eq(afs_seek(f, bad, SEEK_SET), bad);
        ssize_t r = afs_write(f, buf, sizeof buf);
        if (modes[m] == AFS_MODE_ASYNC) {
            cr_assert_eq(r, 0);
            r = poll_last_op(f);
        }
#ifdef _WIN32
        cr_assert_lt(r, 0, "got %zd", r);
        const ssize_t want = r;
#else
        const ssize_t want = -EFBIG;
#endif
        cr_assert_eq(r, want, "got %zd", r);
        ssize_t res;
        cr_assert_eq(afs_last_op(f, &res), 1);
        cr_assert_eq(res, want);
        cr_assert_eq(afs_tell(f), bad, "a failed op does not move the position");
        cr_assert_eq(afs_seek(f, 0, SEEK_SET), 0);
        r = afs_write(f, buf, sizeof buf);
        if (modes[m] == AFS_MODE_ASYNC)
            r = r ? r : poll_last_op(f);
        cr_assert_eq(r, (ssize_t)sizeof buf, "the next op runs normally");
        cr_assert_eq(afs_tell(f), sizeof buf);
        cr_assert_eq(afs_close(f), 0);
    }
}

/* The seed kept an EOF flag that survived later writes. */
T_IO(eof_does_not_survive_a_later_write)
{
    t_new_ctx();
    struct afs_file *f = t_open("f", AFS_RDWR | AFS_CREAT, AFS_MODE_ASYNC);
    char buf[100];
    cr_assert_eq(afs_read(f, buf, sizeof buf), 0);
    cr_assert_eq(poll_last_op(f), 0);
    cr_assert_eq(afs_pwrite(f, "hello", 5, 0), 5);
    cr_assert_eq(afs_read(f, buf, sizeof buf), 0);
    cr_assert_eq(poll_last_op(f), 5);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(access_mode_is_checked)
{
    t_new_ctx();
    t_make_file(t_path("f"), 100);
    struct afs_file *r = t_open("f", AFS_RDONLY, AFS_MODE_ASYNC);
    struct afs_file *w = t_open("f", AFS_WRONLY, AFS_MODE_SYNC);
    char buf[100];
    cr_assert_eq(afs_write(r, buf, 10), -EBADF);
    cr_assert_eq(afs_read(w, buf, 10), -EBADF);
    cr_assert_eq(afs_tell(r), 0);
    ssize_t res = 1;
    cr_assert_eq(afs_last_op(r, &res), 1);
    cr_assert_eq(res, 0, "a refused call is not an op");
    cr_assert_eq(afs_close(r), 0);
    cr_assert_eq(afs_close(w), 0);
}

T_IO(append_mode_writes_at_the_end)
{
    t_new_ctx();
    t_make_file(t_path("f"), 1000);
    struct afs_file *f = t_open("f", AFS_WRONLY | AFS_APPEND, AFS_MODE_SYNC);
    cr_assert_eq(afs_write(f, "abc", 3), 3);
    cr_assert_eq(afs_tell(f), 1003);
    cr_assert_eq(afs_file_size(f), 1003);
    cr_assert_eq(afs_close(f), 0);
}

#ifdef __linux__
#include <linux/loop.h>
#include <sys/ioctl.h>

/* Attaches `backing` to a free loop device; its path in dev. -errno where this machine
 * gives none (no /dev/loop-control, not root, an emulator without the ioctls). */
static int t_loop_attach(const char *backing, char *dev, size_t len)
{
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return -errno;
    int bfd = open(backing, O_RDWR | O_CLOEXEC), err = 0;
    for (int tries = 0; bfd >= 0 && tries < 20; tries++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) {
            err = -errno;
            break;
        }
        snprintf(dev, len, "/dev/loop%d", n);
        int lfd = open(dev, O_RDWR | O_CLOEXEC);
        if (lfd < 0) {
            err = -errno;
            break;
        }
        int r = ioctl(lfd, LOOP_SET_FD, bfd);
        err = r < 0 ? -errno : 0;
        close(lfd);
        if (err != -EBUSY) /* taken by another process in between: ask again */
            break;
    }
    if (bfd < 0)
        err = -errno;
    else
        close(bfd);
    close(ctl);
    return err;
}

static void t_loop_detach(const char *dev)
{
    int lfd = open(dev, O_RDWR | O_CLOEXEC);
    if (lfd >= 0) {
        ioctl(lfd, LOOP_CLR_FD, 0);
        close(lfd);
    }
}

/* A block device's st_size is 0: its size, SEEK_END and a stream's end come from the device. */
T_IO(a_block_device_has_its_size)
{
    t_new_ctx();
    enum { SIZE = 1 << 20 };
    t_make_file(t_path("backing"), SIZE);
    char dev[64];
    int err = t_loop_attach(t_path("backing"), dev, sizeof dev);
    if (err < 0)
        cr_skip_test("no loop device here: %s", afs_strerror(err));
    struct afs_file *f = NULL;
    err = afs_open(t_ctx, dev, AFS_RDONLY, 0, AFS_MODE_SYNC, &f);
    if (err == 0) {
        int64_t size = afs_file_size(f), end = afs_seek(f, -4096, SEEK_END);
        static char buf[8192], sbuf[8192];
        ssize_t n = afs_read(f, buf, sizeof buf);
        afs_close(f);
        struct afs_stream *s = NULL;
        err = afs_fopen(t_ctx, dev, "r", &s);
        int se = err ? err : afs_fseek(s, -100, SEEK_END);
        int64_t tell = err ? err : afs_ftell(s);
        size_t got = err ? 0 : afs_fread(sbuf, 1, sizeof sbuf, s);
        if (s)
            afs_fclose(s);
        t_loop_detach(dev);
        cr_assert_eq(size, SIZE, "afs_file_size %lld", (long long)size);
        cr_assert_eq(end, SIZE - 4096, "afs_seek(SEEK_END) %lld", (long long)end);
        cr_assert_eq(n, 4096);
        cr_assert(t_check(buf, 4096, SIZE - 4096));
        cr_assert_eq(err, 0, "afs_fopen: %s", afs_strerror(err));
        cr_assert_eq(se, 0, "afs_fseek(SEEK_END): %s", afs_strerror(se));
        cr_assert_eq(tell, SIZE - 100);
        cr_assert_eq(got, 100);
        cr_assert(t_check(sbuf, 100, SIZE - 100));
    } else {
        t_loop_detach(dev);
        cr_assert_fail("afs_open(%s): %s", dev, afs_strerror(err));
    }
}
#endif
