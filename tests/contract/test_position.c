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
