/* 3.4 Blocking positional calls, large sparse files and O_DIRECT rules. */
#include "../common.h"

static struct afs_file *t_file(const char *name, int flags, enum afs_mode mode)
{
    struct afs_file *f = NULL;
    int err = afs_open(t_ctx, t_path(name), flags, 0644, mode, &f);
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    return f;
}

T_IO(pread_pwrite_do_not_move_the_position)
{
    t_new_ctx();
    struct afs_file *f = t_file("f", AFS_RDWR | AFS_CREAT, AFS_MODE_SYNC);
    static char buf[200000], back[200000];
    t_fill(buf, sizeof buf, 777);
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 777), (ssize_t)sizeof buf);
    cr_assert_eq(afs_tell(f), 0);
    cr_assert_eq(afs_pread(f, back, sizeof back, 777), (ssize_t)sizeof back);
    cr_assert(t_check(back, sizeof back, 777));
    cr_assert_eq(afs_pread(f, back, sizeof back, 777 + 100000), 100000, "short at EOF");
    cr_assert_eq(afs_pread(f, back, sizeof back, 1 << 30), 0);
    cr_assert_eq(afs_pread(f, NULL, 0, 0), 0);
    cr_assert_eq(afs_pwrite(f, NULL, 0, 5), 0);
    cr_assert_eq(afs_file_size(f), 777 + 200000);
    cr_assert_eq(afs_close(f), 0);
}

/* Offsets past 4 GiB and sparse files: no 32-bit truncation anywhere. */
T_IO(large_sparse_file)
{
    t_new_ctx();
    struct afs_file *f = t_file("big", AFS_RDWR | AFS_CREAT, AFS_MODE_ASYNC);
    t_sparse(f);
    const uint64_t off = (5ULL << 30) + 12345;
    static char buf[8192], back[8192];
    t_fill(buf, sizeof buf, off);
    ssize_t w = afs_pwrite(f, buf, sizeof buf, off);
    if (w == -EFBIG || w == -ENOSPC)
        cr_skip_test("file system refuses a 5 GiB sparse file: %s", afs_strerror((int)w));
    cr_assert_eq(w, (ssize_t)sizeof buf);
    cr_assert_eq(afs_file_size(f), (int64_t)(off + sizeof buf));
    cr_assert_eq(afs_pread(f, back, sizeof back, off), (ssize_t)sizeof back);
    cr_assert(t_check(back, sizeof back, off));
    /* A hole reads as zeros. */
    cr_assert_eq(afs_pread(f, back, 4096, 3ULL << 30), 4096);
    for (int i = 0; i < 4096; i++)
        cr_assert_eq(back[i], 0);
    /* The position API past 4 GiB. */
    cr_assert_eq(afs_seek(f, (int64_t)off, SEEK_SET), (int64_t)off);
    cr_assert_eq(afs_read(f, back, sizeof back), 0);
    ssize_t res;
    cr_assert_eq(afs_last_op_wait(f, &res), 1);
    cr_assert_eq(res, (ssize_t)sizeof back);
    cr_assert_eq(afs_tell(f), (int64_t)(off + sizeof back));
    cr_assert_eq(afs_close(f), 0);
}

static struct afs_file *open_direct(const char *name)
{
    struct afs_file *f = NULL;
    int err = afs_open(t_ctx, t_path(name), AFS_RDWR | AFS_CREAT | AFS_DIRECT, 0644,
                       AFS_MODE_SYNC, &f);
    if (err == -EINVAL)
        cr_skip_test("the file system under %s refuses O_DIRECT", t_dir);
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    return f;
}

T_IO(direct_io_aligned_works)
{
    t_new_ctx();
    struct afs_file *f = open_direct("d");
    size_t n = 1 << 20;
    char *buf = afs_buf_alloc(t_ctx, n), *back = afs_buf_alloc(t_ctx, n);
    t_fill(buf, n, 0);
    cr_assert_eq(afs_pwrite(f, buf, n, 0), (ssize_t)n);
    cr_assert_eq(afs_pread(f, back, n, 0), (ssize_t)n);
    cr_assert(t_check(back, n, 0));
    /* Through the op API and the position API too. */
    cr_assert_eq(afs_write(f, buf, 4096), 4096);
    cr_assert_eq(afs_tell(f), 4096);
    afs_buf_free(t_ctx, buf, n);
    afs_buf_free(t_ctx, back, n);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(direct_io_misaligned_is_einval_and_harmless)
{
    t_new_ctx();
    struct afs_file *f = open_direct("d");
    char *buf = afs_buf_alloc(t_ctx, 16384);
    t_fill(buf, 16384, 0);
    cr_assert_eq(afs_pwrite(f, buf, 8192, 0), 8192);
    cr_assert_eq(afs_pwrite(f, buf + 1, 4096, 0), -EINVAL, "misaligned buffer");
    cr_assert_eq(afs_pwrite(f, buf, 4000, 0), -EINVAL, "misaligned length");
    cr_assert_eq(afs_pwrite(f, buf, 4096, 100), -EINVAL, "misaligned offset");
    cr_assert_eq(afs_pread(f, buf + 8, 4096, 0), -EINVAL);
    cr_assert_eq(afs_seek(f, 7, SEEK_SET), 7);
    cr_assert_eq(afs_write(f, buf, 4096), -EINVAL, "misaligned position");
    cr_assert_eq(afs_tell(f), 7, "position unchanged");
    struct iovec iov[2] = {{buf, 4096}, {buf + 4096 + 512 + 1, 512}};
    cr_assert_eq(afs_pwritev(f, iov, 2, 0), -EINVAL);
    /* Nothing to move asks nothing of the alignment, as with pread(2)/pwrite(2): 0. */
    cr_assert_eq(afs_pwrite(f, buf + 1, 0, 0), 0, "zero bytes from a misaligned buffer");
    cr_assert_eq(afs_pread(f, buf + 1, 0, 100), 0, "zero bytes at a misaligned offset");
    struct iovec empty[2] = {{buf + 3, 0}, {buf, 4096}};
    cr_assert_eq(afs_preadv(f, empty, 2, 0), 4096, "an empty misaligned iovec");
    cr_assert_eq(afs_file_size(f), 8192, "file untouched");
    char *back = afs_buf_alloc(t_ctx, 8192);
    cr_assert_eq(afs_pread(f, back, 8192, 0), 8192);
    cr_assert(t_check(back, 8192, 0));
    afs_buf_free(t_ctx, buf, 16384);
    afs_buf_free(t_ctx, back, 8192);
    cr_assert_eq(afs_close(f), 0);
}

T_IO(blocking_calls_interleave_with_queued_ops)
{
    t_new_ctx();
    t_make_file(t_path("f"), 1 << 20);
    struct afs_file *f = t_file("f", AFS_RDONLY, AFS_MODE_ASYNC);
    static char a[65536], b[65536];
    struct afs_op op = {0};
    static int calls;
    void note(struct afs_op * o);
    cr_assert_eq(afs_queue_read(&op, f, a, sizeof a, 65536, note, &calls), 0);
    /* The blocking call drives the context, so the queued op may finish meanwhile;
     * its callback then runs from the blocking call's wait (the same thread). */
    cr_assert_eq(afs_pread(f, b, sizeof b, 0), (ssize_t)sizeof b);
    cr_assert(t_check(b, sizeof b, 0));
    while (!calls)
        afs_ctx_wait(t_ctx, 1, -1);
    cr_assert(t_check(a, sizeof a, 65536));
    cr_assert_eq(afs_close(f), 0);
}

void note(struct afs_op *o)
{
    (*(int *)o->data)++;
}

#ifdef __linux__
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* No thread can be started (RLIMIT_NPROC, for a user other than root: root ignores it): the
 * backend's threads (io_uring's workers, the pool of threads and libaio, glibc's AIO thread)
 * cannot come, and every op still completes, run on the context's thread instead. Checked
 * in a child, whose exit status says which step failed. */
static int no_threads_child(void)
{
    const char *path = t_path("nproc");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return 2;
    if (geteuid() == 0) {
        if (fchown(fd, 65534, 65534) < 0 || chmod(t_dir, 0711) < 0 ||
            setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
            return 3;
    }
    close(fd);
    struct rlimit rl = {0, 0};
    if (setrlimit(RLIMIT_NPROC, &rl) < 0)
        return 4;
    struct afs_ctx *ctx;
    if (afs_ctx_new(&ctx, NULL) < 0)
        return 5;
    struct afs_file *f;
    if (afs_open(ctx, path, AFS_RDWR, 0, AFS_MODE_SYNC, &f) < 0)
        return 6;
    static char buf[1 << 20], back[1 << 20];
    t_fill(buf, sizeof buf, 3);
    ssize_t w = afs_pwrite(f, buf, sizeof buf, 0);
    if (w != (ssize_t)sizeof buf) {
        fprintf(stderr, "no_threads_child: afs_pwrite: %zd\n", w);
        return 7;
    }
    if (afs_fsync(f, 0) < 0)
        return 8;
    if (afs_pread(f, back, sizeof back, 0) != (ssize_t)sizeof back ||
        !t_check(back, sizeof back, 3))
        return 9;
    if (afs_close(f) < 0)
        return 10;
    afs_ctx_free(ctx);
    return 0;
}

T_IO(ops_complete_where_no_thread_can_start)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        _exit(no_threads_child());
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "the child died of signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert_eq(WEXITSTATUS(st), 0, "step %d failed (5: context, 6: open, 7: write, 8: fsync, "
                 "9: read)", WEXITSTATUS(st));
}
#endif
