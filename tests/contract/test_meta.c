/* Metadata ops: openat, statx, close, mkdirat, renameat, unlinkat, syncfs; through the op API
 * (the backend under test: io_uring opcodes, libaio/posix-aio/threads through the pool, sync
 * inline), through the blocking calls inside and outside a "task", and files made from fds.
 * On Windows the descriptors are HANDLE values and the calls go through ntdll
 * (src/windows/sys.c); the Windows-only cases are at the end. */
#include "../common.h"
#include "../helpers/syscount.h"

#include <dirent.h>

#define T_META(name, ...)                                                                     \
    Test(meta, name, .init = t_setup, .fini = t_teardown, .timeout = 30, ##__VA_ARGS__)

struct done {
    int     calls;
    ssize_t last;
};

static void count_cb(struct afs_op *op)
{
    struct done *d = op->data;
    d->calls++;
    d->last = op->result;
}

/* The few descriptor checks the tests make, per platform. On Windows the library's
 * descriptors are HANDLE values (docs/WINDOWS.md). */
struct t_ref {
    uint64_t ino, dev;
    int64_t  size, mtime_sec, mtime_nsec;
};

#ifdef _WIN32
static HANDLE t_h(int fd)
{
    return (HANDLE)(intptr_t)fd;
}

static bool t_fd_open(int fd)
{
    DWORD fl;
    return GetHandleInformation(t_h(fd), &fl) != 0;
}

static bool t_fd_cloexec(int fd)
{
    DWORD fl;
    return GetHandleInformation(t_h(fd), &fl) && !(fl & HANDLE_FLAG_INHERIT);
}

static void t_fd_close(int fd)
{
    CloseHandle(t_h(fd));
}

/* The handle is overlapped (as the library opens them): WriteFile at offset 0, waited for. */
static ssize_t t_fd_write(int fd, const void *buf, size_t len)
{
    OVERLAPPED ov;
    memset(&ov, 0, sizeof ov);
    ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
    DWORD n = 0;
    BOOL ok = WriteFile(t_h(fd), buf, (DWORD)len, NULL, &ov);
    if (ok || GetLastError() == ERROR_IO_PENDING)
        ok = GetOverlappedResult(t_h(fd), &ov, &n, TRUE);
    CloseHandle(ov.hEvent);
    return ok ? (ssize_t)n : -1;
}

/* What kernel32 says about path, for comparison with afs_statx. */
static int t_ref_stat(const char *path, struct t_ref *r)
{
    HANDLE h = CreateFileA(path, FILE_READ_ATTRIBUTES, FILE_SHARE_READ | FILE_SHARE_WRITE |
                           FILE_SHARE_DELETE, NULL, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS,
                           NULL);
    if (h == INVALID_HANDLE_VALUE)
        return -1;
    BY_HANDLE_FILE_INFORMATION bh;
    BOOL ok = GetFileInformationByHandle(h, &bh);
    CloseHandle(h);
    if (!ok)
        return -1;
    r->ino = (uint64_t)bh.nFileIndexHigh << 32 | bh.nFileIndexLow;
    r->dev = bh.dwVolumeSerialNumber;
    r->size = (int64_t)((uint64_t)bh.nFileSizeHigh << 32 | bh.nFileSizeLow);
    int64_t t = (int64_t)((uint64_t)bh.ftLastWriteTime.dwHighDateTime << 32 |
                          bh.ftLastWriteTime.dwLowDateTime) - 116444736000000000LL;
    r->mtime_sec = t / 10000000;
    r->mtime_nsec = t % 10000000 * 100;
    return 0;
}

static bool t_exists(const char *path)
{
    return GetFileAttributesA(path) != INVALID_FILE_ATTRIBUTES;
}
#else
static bool t_fd_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

static bool t_fd_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    return fl != -1 && (fl & FD_CLOEXEC);
}

static void t_fd_close(int fd)
{
    close(fd);
}

static ssize_t t_fd_write(int fd, const void *buf, size_t len)
{
    return write(fd, buf, len);
}

static int t_ref_stat(const char *path, struct t_ref *r)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -1;
    r->ino = (uint64_t)st.st_ino;
    r->dev = (uint64_t)st.st_dev;
    r->size = (int64_t)st.st_size;
    r->mtime_sec = (int64_t)st.st_mtim.tv_sec;
    r->mtime_nsec = (int64_t)st.st_mtim.tv_nsec;
    return 0;
}

static bool t_exists(const char *path)
{
    return access(path, F_OK) == 0;
}
#endif

static void wait_for(struct done *d, int n)
{
    while (d->calls < n) {
        int r = afs_ctx_wait(t_ctx, 1, 10LL * 1000 * 1000 * 1000);
        cr_assert_geq(r, 0, "afs_ctx_wait: %s", afs_strerror(r));
    }
}

#ifdef __linux__
#include <sys/syscall.h>
#endif
#ifndef _WIN32
#include <sys/utsname.h>
#endif

/* A directory fd on the test directory, made with the blocking call (inline here). */
static int t_dirfd(void)
{
    int fd = afs_openat(t_ctx, AFS_AT_FDCWD, t_dir, AFS_RDONLY | AFS_DIRECTORY, 0);
    cr_assert_geq(fd, 0, "afs_openat(%s): %s", t_dir, afs_strerror(fd));
    return fd;
}

static bool on_uring(void)
{
    return strcmp(afs_ctx_backend(t_ctx), "io_uring") == 0;
}

/* io_uring openat/statx/close are Linux 5.6, renameat/unlinkat 5.11, mkdirat 5.15. */
static bool kernel_at_least(int major, int minor)
{
#ifdef _WIN32
    (void)major, (void)minor;
    return false;
#else
    struct utsname u;
    int a = 0, b = 0;
    if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &a, &b) != 2)
        return false;
    return a > major || (a == major && b >= minor);
#endif
}

static ssize_t run_op(struct afs_op *op, struct done *d)
{
    int before = d->calls;
    wait_for(d, before + 1);
    return op->result;
}

T_META(openat_creates_and_the_fd_becomes_a_file)
{
    t_new_ctx();
    int dfd = t_dirfd();
    struct afs_op op;
    struct done d = {0};
    memset(&op, 0, sizeof op);
    cr_assert_eq(afs_queue_openat(&op, t_ctx, dfd, "new", AFS_RDWR | AFS_CREAT | AFS_EXCL,
                                  0600, count_cb, &d), 0);
    cr_assert_eq(d.calls, 0, "the callback runs from afs_ctx_wait, not the queueing call");
    ssize_t fd = run_op(&op, &d);
    cr_assert_geq(fd, 0, "openat: %s", afs_strerror((int)fd));
    cr_assert_eq(d.calls, 1);
    cr_assert(t_fd_cloexec((int)fd), "new fds are close-on-exec");

    struct afs_file *f;
    cr_assert_eq(afs_file_from_fd(t_ctx, (int)fd, AFS_RDWR, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_file_fd(f), fd);
    static char buf[20000], back[20000];
    t_fill(buf, sizeof buf, 0);
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    cr_assert_eq(afs_pread(f, back, sizeof back, 0), (ssize_t)sizeof back);
    cr_assert(t_check(back, sizeof back, 0));
    cr_assert_eq(afs_close(f), 0);
    cr_assert(!t_fd_open((int)fd), "afs_close closed the adopted fd");

    /* What stat(2) says, through statx: size, type, permissions, inode. */
    struct afs_stat st;
    memset(&st, 0xff, sizeof st);
    cr_assert_eq(afs_queue_statx(&op, t_ctx, dfd, "new", 0, &st, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), 0);
    struct t_ref ref = {0};
    cr_assert_eq(t_ref_stat(t_path("new"), &ref), 0);
    cr_assert_eq(st.size, (int64_t)sizeof buf);
    cr_assert_eq(ref.size, (int64_t)sizeof buf);
    cr_assert(S_ISREG(st.mode));
#ifdef _WIN32
    cr_assert_eq(st.mode & 0777, 0666, "no read-only attribute: writable");
#else
    struct stat pst;
    cr_assert_eq(stat(t_path("new"), &pst), 0);
    cr_assert_eq(st.mode & 07777, pst.st_mode & 07777);
    cr_assert_eq(st.mode & 0077, 0, "0600 was asked for: never wider");
    cr_assert_eq(st.uid, (uint32_t)pst.st_uid);
#endif
    cr_assert_eq(st.ino, ref.ino);
    cr_assert_eq(st.dev, ref.dev);
    cr_assert_eq(st.nlink, 1u);
    cr_assert_eq(st.mtime.sec, ref.mtime_sec);
    cr_assert_eq(st.mtime.nsec, ref.mtime_nsec);
    cr_assert_geq(st.blocks * 512, (uint64_t)sizeof buf - 4096);

    /* AFS_AT_EMPTY_PATH: the dirfd itself, as fstat. */
    cr_assert_eq(afs_queue_statx(&op, t_ctx, dfd, "", AFS_AT_EMPTY_PATH, &st, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), 0);
    cr_assert(S_ISDIR(st.mode));
    cr_assert_eq(t_ref_stat(t_dir, &ref), 0);
    cr_assert_eq(st.ino, ref.ino);
    t_fd_close(dfd);
}

T_META(errors_come_back_as_negative_errno)
{
    t_new_ctx();
    int dfd = t_dirfd();
    t_make_file(t_path("file"), 10);
    bool have_link = t_symlink("file", t_path("link")) == 0;
#ifndef _WIN32
    cr_assert(have_link);
#endif
    struct afs_op op;
    struct done d = {0};
    struct afs_stat st;
    memset(&op, 0, sizeof op);

    cr_assert_eq(afs_queue_openat(&op, t_ctx, dfd, "missing", AFS_RDONLY, 0, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), -ENOENT);
    cr_assert_eq(afs_queue_openat(&op, t_ctx, dfd, "file", AFS_WRONLY | AFS_CREAT | AFS_EXCL,
                                  0644, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), -EEXIST);
    if (have_link) {
        cr_assert_eq(afs_queue_openat(&op, t_ctx, dfd, "link", AFS_RDONLY | AFS_NOFOLLOW, 0,
                                      count_cb, &d), 0);
        cr_assert_eq(run_op(&op, &d), -ELOOP);
    } else {
        cr_log_info("no symbolic links here (wine): see meta/nofollow_on_a_junction");
    }
    cr_assert_eq(afs_queue_openat(&op, t_ctx, dfd, "file", AFS_RDONLY | AFS_DIRECTORY, 0,
                                  count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), -ENOTDIR);
    cr_assert_eq(afs_queue_statx(&op, t_ctx, dfd, "missing", 0, &st, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), -ENOENT);
    /* A symlink: followed, or not with AFS_AT_SYMLINK_NOFOLLOW. */
    if (have_link) {
        cr_assert_eq(afs_queue_statx(&op, t_ctx, dfd, "link", 0, &st, count_cb, &d), 0);
        cr_assert_eq(run_op(&op, &d), 0);
        cr_assert(S_ISREG(st.mode));
        cr_assert_eq(st.size, 10);
        cr_assert_eq(afs_queue_statx(&op, t_ctx, dfd, "link", AFS_AT_SYMLINK_NOFOLLOW, &st,
                                     count_cb, &d), 0);
        cr_assert_eq(run_op(&op, &d), 0);
        cr_assert_eq(st.mode & 0170000, 0120000, "a symbolic link (S_IFLNK)");
    }
    int calls = d.calls;

    /* Refused when queued: nothing runs, no callback. */
    cr_assert_eq(afs_queue_openat(&op, t_ctx, dfd, "x", 0, 0, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_openat(&op, t_ctx, dfd, "x", AFS_RDONLY | AFS_WRONLY, 0, count_cb,
                                  &d), -EINVAL);
    cr_assert_eq(afs_queue_openat(&op, t_ctx, dfd, "x", AFS_RDONLY | 0x10000, 0, count_cb, &d),
                 -EINVAL);
    cr_assert_eq(afs_queue_openat(&op, t_ctx, dfd, "x", AFS_RDONLY | AFS_CREAT, 010000,
                                  count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_openat(&op, t_ctx, dfd, NULL, AFS_RDONLY, 0, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_openat(&op, t_ctx, dfd, "x", AFS_RDONLY, 0, NULL, &d), -EINVAL);
    cr_assert_eq(afs_queue_openat(NULL, t_ctx, dfd, "x", AFS_RDONLY, 0, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_openat(&op, t_ctx, -5, "x", AFS_RDONLY, 0, count_cb, &d), -EBADF);
    cr_assert_eq(afs_queue_statx(&op, t_ctx, dfd, "file", 0, NULL, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_statx(&op, t_ctx, dfd, "file", 0x100, &st, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_close_fd(&op, t_ctx, -1, count_cb, &d), -EBADF);
    cr_assert_eq(afs_queue_syncfs(&op, t_ctx, -1, count_cb, &d), -EBADF);
    cr_assert_eq(afs_queue_mkdirat(&op, t_ctx, dfd, "d", 077777, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_queue_renameat(&op, t_ctx, dfd, "file", dfd, NULL, 0, count_cb, &d),
                 -EINVAL);
    cr_assert_eq(afs_queue_renameat(&op, t_ctx, dfd, "file", -7, "x", 0, count_cb, &d), -EBADF);
    cr_assert_eq(afs_queue_renameat(&op, t_ctx, dfd, "file", dfd, "x", 0x8, count_cb, &d),
                 -EINVAL);
    cr_assert_eq(afs_queue_unlinkat(&op, t_ctx, dfd, "file", 0x1, count_cb, &d), -EINVAL);
    cr_assert_eq(afs_ctx_wait(t_ctx, 0, 0), 0);
    cr_assert_eq(d.calls, calls, "a refused op has no callback");
    cr_assert(!t_exists(t_path("x")), "nothing was created");

    /* An op in use is refused too. */
    cr_assert_eq(afs_queue_statx(&op, t_ctx, dfd, "file", 0, &st, count_cb, &d), 0);
    cr_assert_eq(afs_queue_statx(&op, t_ctx, dfd, "file", 0, &st, count_cb, &d), -EBUSY);
    cr_assert_eq(run_op(&op, &d), 0);
    /* An absolute path ignores dirfd, an invalid one included (as the system calls do). */
    cr_assert_eq(afs_statx(t_ctx, -5, t_path("file"), 0, &st), 0);
    int fd = afs_openat(t_ctx, -5, t_path("file"), AFS_RDONLY, 0);
    cr_assert_geq(fd, 0, "afs_openat: %s", afs_strerror(fd));
    t_fd_close(fd);
    cr_assert_eq(afs_queue_renameat(&op, t_ctx, dfd, "file", -7, t_path("file2"), 0, count_cb,
                                    &d), 0);
    cr_assert_eq(run_op(&op, &d), 0);
    cr_assert(t_exists(t_path("file2")));
    t_fd_close(dfd);
}

/* A name followed by ".." (or ending in "/.") must be a directory, as POSIX resolves the
 * path through it: -ENOTDIR for a file, -ENOENT for a name that is not there, on every call
 * that takes a path (Windows, which drops "x\.." as text, included). */
T_META(dot_dot_after_a_file_is_enotdir)
{
    t_new_ctx();
    int dfd = t_dirfd();
    t_make_file(t_path("f"), 10);
    cr_assert_eq(afs_mkdirat(t_ctx, dfd, "sub", 0755), 0);
    struct afs_stat st;
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("f/..")), -ENOTDIR);
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("f/.")), -ENOTDIR);
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("f/../sub")), -ENOTDIR);
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("missing/..")), -ENOENT);
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("sub/..")), 0);
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("sub/../sub/.")), 0);
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("sub/./../sub/")), 0);
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("f/../f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), -ENOTDIR);
    cr_assert_eq(afs_open(t_ctx, t_path("sub/../f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_statx(t_ctx, AFS_AT_FDCWD, t_path("f/.."), 0, &st), -ENOTDIR);

    cr_assert_eq(afs_openat(t_ctx, dfd, "f/..", AFS_RDONLY | AFS_DIRECTORY, 0), -ENOTDIR);
    cr_assert_eq(afs_openat(t_ctx, dfd, "f/../f", AFS_RDONLY, 0), -ENOTDIR);
    cr_assert_eq(afs_openat(t_ctx, dfd, "sub/../f/../f", AFS_RDONLY, 0), -ENOTDIR);
    cr_assert_eq(afs_openat(t_ctx, dfd, "missing/../f", AFS_RDONLY, 0), -ENOENT);
    cr_assert_eq(afs_openat(t_ctx, dfd, "f/../new", AFS_RDWR | AFS_CREAT, 0644), -ENOTDIR);
    int fd = afs_openat(t_ctx, dfd, "sub/../f", AFS_RDONLY, 0);
    cr_assert_geq(fd, 0, "%s", afs_strerror(fd));
    t_fd_close(fd);
    cr_assert_eq(afs_statx(t_ctx, dfd, "f/..", 0, &st), -ENOTDIR);
    cr_assert_eq(afs_statx(t_ctx, dfd, "f/.", 0, &st), -ENOTDIR);
    cr_assert_eq(afs_statx(t_ctx, dfd, "f/../f", AFS_AT_SYMLINK_NOFOLLOW, &st), -ENOTDIR);
    cr_assert_eq(afs_statx(t_ctx, dfd, "sub/..", 0, &st), 0);
    cr_assert(S_ISDIR(st.mode));
    cr_assert_eq(afs_mkdirat(t_ctx, dfd, "f/../d", 0755), -ENOTDIR);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "f/../f", dfd, "g", 0), -ENOTDIR);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "f", dfd, "f/../g", 0), -ENOTDIR);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "f/..", dfd, "g", 0), -ENOTDIR);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "sub", dfd, "f/..", 0), -ENOTDIR);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "f/../f", 0), -ENOTDIR);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "f/..", 0), -ENOTDIR);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "f/..", AFS_AT_REMOVEDIR), -ENOTDIR);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "missing/..", AFS_AT_REMOVEDIR), -ENOENT);
    cr_assert(!t_exists(t_path("d")) && !t_exists(t_path("g")) && !t_exists(t_path("new")),
              "a name was made");
    cr_assert(t_exists(t_path("f")), "f is gone");
    /* Through a directory they work. */
    cr_assert_eq(afs_renameat(t_ctx, dfd, "sub/../f", dfd, "sub/../g", 0), 0);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "sub/../g", 0), 0);
    cr_assert_eq(afs_mkdirat(t_ctx, dfd, "sub/../d", 0755), 0);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "sub/../d", AFS_AT_REMOVEDIR), 0);
    t_fd_close(dfd);
}

T_META(mkdir_rename_unlink)
{
    t_new_ctx();
    int dfd = t_dirfd();
    struct afs_op op;
    struct done d = {0};
    struct afs_stat st;
    memset(&op, 0, sizeof op);

    cr_assert_eq(afs_queue_mkdirat(&op, t_ctx, dfd, "sub", 0700, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), 0);
    cr_assert_eq(afs_queue_mkdirat(&op, t_ctx, dfd, "sub", 0700, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), -EEXIST);
    cr_assert_eq(afs_statx(t_ctx, dfd, "sub", 0, &st), 0);
    cr_assert(S_ISDIR(st.mode));
#ifndef _WIN32
    cr_assert_eq(st.mode & 0077, 0);
#endif

    /* Rename into the new directory, across two directory fds. */
    t_make_file(t_path("a"), 100);
    t_make_file(t_path("b"), 200);
    int sub = afs_openat(t_ctx, dfd, "sub", AFS_RDONLY | AFS_DIRECTORY | AFS_NOFOLLOW, 0);
    cr_assert_geq(sub, 0);
    cr_assert_eq(afs_queue_renameat(&op, t_ctx, dfd, "a", sub, "a2", 0, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), 0);
    cr_assert(!t_exists(t_path("a")));
    cr_assert_eq(afs_statx(t_ctx, sub, "a2", 0, &st), 0);
    cr_assert_eq(st.size, 100);

    /* NOREPLACE keeps what is there; a plain rename replaces it. */
    t_make_file(t_path("sub/b2"), 300);
    cr_assert_eq(afs_queue_renameat(&op, t_ctx, dfd, "b", sub, "b2", AFS_RENAME_NOREPLACE,
                                    count_cb, &d), 0);
    ssize_t r = run_op(&op, &d);
    if (r == -EINVAL) {
#ifdef __linux__
        /* Documented only where the file system refuses renameat2's RENAME_NOREPLACE: ask
         * it directly. */
        t_make_file(t_path("nr1"), 1);
        long k = syscall(SYS_renameat2, AT_FDCWD, t_path("nr1"), AT_FDCWD, t_path("nr2"), 1u);
        cr_assert(k < 0 && errno == EINVAL,
                  "the file system has RENAME_NOREPLACE, but the library said -EINVAL");
#endif
        cr_log_info("no RENAME_NOREPLACE on this file system or OS");
    } else {
        cr_assert_eq(r, -EEXIST);
        cr_assert_eq(afs_statx(t_ctx, sub, "b2", 0, &st), 0);
        cr_assert_eq(st.size, 300, "NOREPLACE kept the existing file");
        cr_assert_eq(afs_queue_renameat(&op, t_ctx, dfd, "b", sub, "b3", AFS_RENAME_NOREPLACE,
                                        count_cb, &d), 0);
        cr_assert_eq(run_op(&op, &d), 0, "NOREPLACE onto a free name");
        cr_assert_eq(afs_renameat(t_ctx, sub, "b3", dfd, "b", 0), 0);
    }
    cr_assert_eq(afs_queue_renameat(&op, t_ctx, dfd, "b", sub, "b2", 0, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), 0);
    cr_assert_eq(afs_statx(t_ctx, sub, "b2", 0, &st), 0);
    cr_assert_eq(st.size, 200, "replaced");
    cr_assert_eq(afs_queue_renameat(&op, t_ctx, dfd, "missing", dfd, "x", 0, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), -ENOENT);

    /* unlink: a file; a directory only with AFS_AT_REMOVEDIR, and only when empty. */
    cr_assert_eq(afs_queue_unlinkat(&op, t_ctx, dfd, "sub", AFS_AT_REMOVEDIR, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), -ENOTEMPTY);
    cr_assert_eq(afs_queue_unlinkat(&op, t_ctx, sub, "a2", 0, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), 0);
    cr_assert_eq(afs_queue_unlinkat(&op, t_ctx, sub, "b2", 0, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), 0);
    cr_assert_eq(afs_queue_unlinkat(&op, t_ctx, sub, "b2", 0, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), -ENOENT);
    /* Closed before the directory goes: where deletes lack POSIX semantics (wine, Windows
     * before 10 1709, FAT) a removed name stays until the last handle of it is closed. */
    t_fd_close(sub);
    cr_assert_eq(afs_queue_unlinkat(&op, t_ctx, dfd, "sub", 0, count_cb, &d), 0);
    r = run_op(&op, &d);
    cr_assert(r == -EISDIR || r == -EPERM, "unlink of a directory: %zd", r);
    cr_assert_eq(afs_queue_unlinkat(&op, t_ctx, dfd, "sub", AFS_AT_REMOVEDIR, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), 0);
    cr_assert(!t_exists(t_path("sub")));
    t_fd_close(dfd);
}

T_META(close_and_syncfs)
{
    t_new_ctx();
    int dfd = t_dirfd();
    struct afs_op op;
    struct done d = {0};
    memset(&op, 0, sizeof op);
    int fd = afs_openat(t_ctx, dfd, "f", AFS_WRONLY | AFS_CREAT, 0644);
    cr_assert_geq(fd, 0);
    cr_assert_eq(t_fd_write(fd, "data", 4), 4);
    cr_assert_eq(afs_queue_syncfs(&op, t_ctx, fd, count_cb, &d), 0);
#if defined(__linux__)
    cr_assert_eq(run_op(&op, &d), 0);
#elif defined(_WIN32)
    /* A volume flush needs administrator rights, and wine has none. */
    ssize_t sr = run_op(&op, &d);
    cr_assert(sr == 0 || sr == -ENOTSUP, "syncfs: %zd", sr);
#else
    cr_assert_eq(run_op(&op, &d), -ENOTSUP);
#endif
    cr_assert_eq(afs_queue_close_fd(&op, t_ctx, fd, count_cb, &d), 0);
    cr_assert_eq(run_op(&op, &d), 0);
    cr_assert(!t_fd_open(fd), "closed");

    /* A close cannot be cancelled: it runs, and the fd is gone. */
    fd = afs_openat(t_ctx, dfd, "f", AFS_RDONLY, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(afs_queue_close_fd(&op, t_ctx, fd, count_cb, &d), 0);
    cr_assert_eq(afs_cancel(&op), 0);
    cr_assert_eq(run_op(&op, &d), 0);
    cr_assert(!t_fd_open(fd), "closed although cancelled");
    cr_assert_eq(afs_close_fd(t_ctx, dfd), 0);
    cr_assert(!t_fd_open(dfd));
}

/* A queued openat that is cancelled before it ran reports -ECANCELED, once, and makes
 * nothing. */
T_META(cancel_a_queued_open)
{
    t_new_ctx();
    int dfd = t_dirfd();
    struct afs_op op;
    struct done d = {0};
    memset(&op, 0, sizeof op);
    cr_assert_eq(afs_queue_openat(&op, t_ctx, dfd, "never", AFS_WRONLY | AFS_CREAT, 0644,
                                  count_cb, &d), 0);
    cr_assert_eq(afs_cancel(&op), 0);
    wait_for(&d, 1);
    cr_assert_eq(d.last, -ECANCELED);
    cr_assert_eq(afs_ctx_wait(t_ctx, 0, 0), 0);
    cr_assert_eq(d.calls, 1);
    cr_assert(!t_exists(t_path("never")));
    cr_assert_eq(afs_cancel(&op), -EALREADY, "its callback ran");
    t_fd_close(dfd);
}

/* A phase's worth of opens, stats and closes goes to the backend together: on io_uring in one
 * submission, with no thread-pool op where the kernel has the opcodes. */
T_META(a_batch_of_metadata_ops)
{
    t_new_ctx();
    enum { N = 64 };
    int dfd = t_dirfd();
    static char names[N][16];
    static struct afs_op ops[N];
    static struct afs_stat st[N];
    struct done d = {0};
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "f%d", i);
        t_make_file(t_path(names[i]), (size_t)i * 100);
    }
    struct afs_stats s0, s1;
    afs_ctx_stats(t_ctx, &s0);
    sc_install();
    struct sc_counts k0 = sc_get();
    for (int i = 0; i < N; i++)
        cr_assert_eq(afs_queue_statx(&ops[i], t_ctx, dfd, names[i], 0, &st[i], count_cb, &d), 0);
    cr_assert_eq(afs_ctx_submit(t_ctx), N);
    struct sc_counts k1 = sc_get();
    wait_for(&d, N);
    sc_uninstall();
    afs_ctx_stats(t_ctx, &s1);
    cr_assert_eq(s1.ops - s0.ops, (uint64_t)N);
    cr_assert_eq(s1.completions - s0.completions, (uint64_t)N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(ops[i].result, 0, "statx %d: %s", i, afs_strerror((int)ops[i].result));
        cr_assert_eq(st[i].size, (int64_t)i * 100);
    }
    bool ring = on_uring() && kernel_at_least(5, 6);
    if (ring) {
        cr_assert_eq(k1.uring_submits - k0.uring_submits, 1u, "%lu io_uring_enter calls",
                     k1.uring_submits - k0.uring_submits);
        cr_assert_eq(s1.pool_ops, s0.pool_ops, "statx ran on the ring");
    }

    /* Open them all, then close them all, a batch each. */
    afs_ctx_stats(t_ctx, &s0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(afs_queue_openat(&ops[i], t_ctx, dfd, names[i], AFS_RDONLY, 0, count_cb,
                                      &d), 0);
    wait_for(&d, 2 * N);
    int fds[N];
    for (int i = 0; i < N; i++) {
        cr_assert_geq(ops[i].result, 0);
        fds[i] = (int)ops[i].result;
        cr_assert_eq(afs_queue_close_fd(&ops[i], t_ctx, fds[i], count_cb, &d), 0);
    }
    wait_for(&d, 3 * N);
    afs_ctx_stats(t_ctx, &s1);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(ops[i].result, 0);
        cr_assert(!t_fd_open(fds[i]), "fd %d closed", fds[i]);
    }
    if (ring)
        cr_assert_eq(s1.pool_ops, s0.pool_ops, "openat and close ran on the ring");
    if (!strcmp(afs_ctx_backend(t_ctx), "threads") || !strcmp(afs_ctx_backend(t_ctx), "libaio"))
        cr_assert_eq(s1.pool_ops - s0.pool_ops, 2u * N, "the pool made the calls");
    t_fd_close(dfd);
}

/* A stand-in for a scheduler: the waiter's "coroutine" is always current, and suspending
 * drives the context until the op's callback resumed it. */
struct fake_sched {
    struct afs_waiter w;
    int               suspends, resumed;
};

static void *fake_current(struct afs_waiter *w)
{
    return w;
}

static int fake_suspend(struct afs_waiter *w, void *co, struct afs_op *op)
{
    struct fake_sched *s = (struct fake_sched *)w;
    s->suspends++;
    s->resumed = 0;
    while (!s->resumed) {
        int r = afs_ctx_wait(w->ctx, 1, -1);
        cr_assert_geq(r, 0);
    }
    return 0;
}

static void fake_resume(struct afs_waiter *w, void *co, struct afs_op *op)
{
    ((struct fake_sched *)w)->resumed = 1;
}

T_META(blocking_calls_suspend_in_a_task_and_run_inline_outside)
{
    t_new_ctx();
    int dfd = t_dirfd();
    struct afs_stats s0, s1;
    struct afs_stat st;

    /* Outside a task: the plain system call, inline, no op queued. */
    afs_ctx_stats(t_ctx, &s0);
    int fd = afs_openat(t_ctx, dfd, "a", AFS_RDWR | AFS_CREAT | AFS_EXCL, 0644);
    cr_assert_geq(fd, 0);
    cr_assert_eq(afs_statx(t_ctx, dfd, "a", 0, &st), 0);
    cr_assert_eq(afs_close_fd(t_ctx, fd), 0);
    afs_ctx_stats(t_ctx, &s1);
    cr_assert_eq(s1.ops, s0.ops);
    cr_assert_eq(s1.inline_ops - s0.inline_ops, 3u);

    /* In a task of this context: each call is an op through the backend, and the task
     * suspends while it runs. */
    struct fake_sched fs = {{t_ctx, fake_current, fake_suspend, fake_resume, NULL, NULL}, 0, 0};
    struct afs_waiter *prev = afs_waiter_set(&fs.w);
    afs_ctx_stats(t_ctx, &s0);
    fd = afs_openat(t_ctx, dfd, "b", AFS_RDWR | AFS_CREAT | AFS_EXCL, 0640);
    int e1 = afs_openat(t_ctx, dfd, "b", AFS_RDWR | AFS_CREAT | AFS_EXCL, 0640);
    int e2 = afs_statx(t_ctx, dfd, "b", 0, &st);
    int e3 = afs_mkdirat(t_ctx, dfd, "d", 0755);
    int e4 = afs_renameat(t_ctx, dfd, "b", dfd, "d/b", 0);
    int e5 = afs_unlinkat(t_ctx, dfd, "a", 0);
    struct afs_file *f = NULL;
    int e6 = afs_file_from_fd(t_ctx, fd, AFS_RDWR, AFS_MODE_SYNC, &f);
    int e7 = f ? afs_close(f) : -1; /* the close itself goes through the backend too */
    int e8 = afs_syncfs(t_ctx, dfd);
    afs_waiter_set(prev);
    afs_ctx_stats(t_ctx, &s1);
    cr_assert_geq(fd, 0);
    cr_assert_eq(e1, -EEXIST);
    cr_assert_eq(e2, 0);
    cr_assert(S_ISREG(st.mode));
    cr_assert_eq(e3, 0);
    cr_assert_eq(e4, 0);
    cr_assert_eq(e5, 0);
    cr_assert_eq(e6, 0);
    cr_assert_eq(e7, 0);
#if defined(__linux__)
    cr_assert_eq(e8, 0);
#elif defined(_WIN32)
    cr_assert(e8 == 0 || e8 == -ENOTSUP, "syncfs: %d", e8);
#else
    cr_assert_eq(e8, -ENOTSUP);
#endif
    cr_assert_eq(fs.suspends, 8); /* every call above but afs_file_from_fd */
    cr_assert_eq(s1.ops - s0.ops, 8u);
    cr_assert_eq(s1.inline_ops, s0.inline_ops);
    cr_assert(t_exists(t_path("d/b")));
    cr_assert(!t_exists(t_path("a")));
    cr_assert(!t_fd_open(fd), "afs_close in a task closed the fd");
    t_fd_close(dfd);
}

/* A waiter that lends its coroutine an op (afs_waiter.op_slot): the reads and writes of a
 * file suspend on it, the other blocking calls on ops of their own. */
struct slot_sched {
    struct fake_sched fs;
    struct afs_op     op;
    struct afs_op    *seen[4];
    int               slots;
    bool              lend;
};

static struct afs_op *slot_op(struct afs_waiter *w, void *co)
{
    struct slot_sched *s = (struct slot_sched *)w;
    cr_assert_eq(co, (void *)w);
    s->slots++;
    return s->lend ? &s->op : NULL;
}

static int slot_suspend(struct afs_waiter *w, void *co, struct afs_op *op)
{
    struct slot_sched *s = (struct slot_sched *)w;
    if (s->fs.suspends < 4)
        s->seen[s->fs.suspends] = op;
    return fake_suspend(w, co, op);
}

T_META(blocking_reads_and_writes_in_a_task_use_the_op_its_waiter_lends)
{
    t_new_ctx();
    struct afs_file *f = NULL;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_ASYNC, &f),
                 0);
    static char buf[200000], back[200000]; /* above the sync threshold: never inline */
    t_fill(buf, sizeof buf, 5);
    struct slot_sched ss = {
        .fs = {{t_ctx, fake_current, slot_suspend, fake_resume, slot_op}, 0, 0}, .lend = true};
    struct afs_waiter *prev = afs_waiter_set(&ss.fs.w);
    ssize_t w1 = afs_pwrite(f, buf, sizeof buf, 5);
    ssize_t r1 = afs_pread(f, back, sizeof back, 5);
    int e1 = afs_fsync(f, 0);
    ss.lend = false; /* no op lent: the call's own */
    static char tail[200000]; /* large too: a small read may be served inline */
    ssize_t r2 = afs_pread(f, tail, sizeof tail, 100005);
    afs_waiter_set(prev);
    cr_assert_eq(w1, (ssize_t)sizeof buf);
    cr_assert_eq(r1, (ssize_t)sizeof back);
    cr_assert(t_check(back, sizeof back, 5));
    cr_assert_eq(e1, 0);
    cr_assert_eq(r2, 100000);
    cr_assert(t_check(tail, 100000, 100005));
    cr_assert_eq(ss.slots, 3, "asked by every read and write");
    cr_assert_eq(ss.fs.suspends, 4);
    cr_assert_eq(ss.seen[0], &ss.op, "the write ran on the lent op");
    cr_assert_eq(ss.seen[1], &ss.op, "the read ran on the lent op");
    cr_assert_neq(ss.seen[2], &ss.op, "fsync: an op of its own");
    cr_assert_neq(ss.seen[3], &ss.op, "nothing lent: an op of its own");
    cr_assert_eq(ss.op.result, (ssize_t)sizeof back);
    cr_assert_eq(afs_close(f), 0);
}

T_META(file_from_fd_checks_its_arguments)
{
    t_new_ctx();
    t_make_file(t_path("f"), 5000);
    struct afs_file *f = (struct afs_file *)1;
    cr_assert_eq(afs_file_from_fd(t_ctx, -1, AFS_RDONLY, AFS_MODE_SYNC, &f), -EBADF);
    cr_assert_null(f);
    int fd = afs_openat(t_ctx, AFS_AT_FDCWD, t_path("f"), AFS_RDONLY | AFS_NONBLOCK, 0);
    cr_assert_geq(fd, 0);
#ifndef _WIN32
    cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
#endif
    cr_assert_eq(afs_file_from_fd(t_ctx, fd, 0, AFS_MODE_SYNC, &f), -EINVAL);
    cr_assert_eq(afs_file_from_fd(t_ctx, fd, AFS_RDONLY | AFS_DIRECTORY, AFS_MODE_SYNC, &f),
                 -EINVAL);
    cr_assert_eq(afs_file_from_fd(t_ctx, fd, AFS_RDONLY, (enum afs_mode)7, &f), -EINVAL);
    cr_assert_eq(afs_file_from_fd(t_ctx, fd, AFS_RDONLY, AFS_MODE_SYNC, NULL), -EINVAL);
    cr_assert(t_fd_open(fd), "a refused fd stays open, the caller's");

    cr_assert_eq(afs_file_from_fd(t_ctx, fd, AFS_RDONLY | AFS_NONBLOCK, AFS_MODE_ASYNC, &f), 0);
#ifndef _WIN32
    cr_assert_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0, "O_NONBLOCK cleared");
#endif
    cr_assert_eq(afs_file_size(f), 5000);
    static char buf[5000];
    cr_assert_eq(afs_read(f, buf, sizeof buf), 0);
    ssize_t res;
    cr_assert_eq(afs_last_op_wait(f, &res), 1);
    cr_assert_eq(res, 5000);
    cr_assert(t_check(buf, sizeof buf, 0));
    cr_assert_eq(afs_pwrite(f, buf, 10, 0), -EBADF, "opened read-only");
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_file_from_fd(t_ctx, fd, AFS_RDONLY, AFS_MODE_SYNC, &f), -EBADF,
                 "a closed fd");
}


/* afs_openat_file: afs_open relative to a directory fd, with the fstat it makes handed out. */
T_META(openat_file_opens_relative_to_a_directory_and_hands_out_its_stat)
{
    t_new_ctx();
    t_make_file(t_path("f"), 5000);
    int dfd = t_dirfd();
    struct afs_file *f = NULL;
    struct afs_stat st;
    memset(&st, 0xff, sizeof st);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "f", AFS_RDONLY, 0, AFS_MODE_SYNC, &st, &f), 0);
    struct t_ref ref = {0};
    cr_assert_eq(t_ref_stat(t_path("f"), &ref), 0);
    cr_assert(S_ISREG(st.mode));
    cr_assert_eq(st.size, 5000);
    cr_assert_eq(st.ino, ref.ino);
    cr_assert_eq(st.dev, ref.dev);
    cr_assert_eq(st.mtime.sec, ref.mtime_sec);
    cr_assert_eq(afs_file_open_size(f), 5000);
    static char buf[6000];
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), 5000);
    cr_assert(t_check(buf, 5000, 0));
    cr_assert_eq(afs_pwrite(f, buf, 10, 0), -EBADF, "opened read-only");
    cr_assert_eq(afs_close(f), 0);

    /* No st wanted; the current directory with an absolute path. */
    cr_assert_eq(afs_openat_file(t_ctx, AFS_AT_FDCWD, t_path("f"), AFS_RDONLY, 0,
                                 AFS_MODE_ASYNC, NULL, &f), 0);
    cr_assert_eq(afs_read(f, buf, 100), 0);
    ssize_t res;
    cr_assert_eq(afs_last_op_wait(f, &res), 1);
    cr_assert_eq(res, 100);
    cr_assert(t_check(buf, 100, 0));
    cr_assert_eq(afs_close(f), 0);

    /* A new file (AFS_CREAT | AFS_EXCL, known empty without an fstat): written, read back,
     * its size right; again: -EEXIST. With st: what the new file is. */
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "new", AFS_RDWR | AFS_CREAT | AFS_EXCL, 0600,
                                 AFS_MODE_SYNC, NULL, &f), 0);
    cr_assert_eq(afs_file_open_size(f), 0);
    static char big[20000], back[20000];
    t_fill(big, sizeof big, 7);
    cr_assert_eq(afs_pwrite(f, big, sizeof big, 0), (ssize_t)sizeof big);
    cr_assert_eq(afs_pread(f, back, sizeof back, 0), (ssize_t)sizeof back);
    cr_assert(t_check(back, sizeof back, 7));
    cr_assert_eq(afs_file_size(f), (int64_t)sizeof big);
    cr_assert_eq(afs_close(f), 0);
    f = (struct afs_file *)1;
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "new", AFS_RDWR | AFS_CREAT | AFS_EXCL, 0600,
                                 AFS_MODE_SYNC, NULL, &f), -EEXIST);
    cr_assert_null(f);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "new2", AFS_WRONLY | AFS_CREAT | AFS_EXCL, 0640,
                                 AFS_MODE_SYNC, &st, &f), 0);
    cr_assert(S_ISREG(st.mode));
    cr_assert_eq(st.size, 0);
    cr_assert_eq(afs_close(f), 0);

    /* AFS_TRUNC on the existing one: empty, as the fstat says. */
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "new", AFS_RDWR | AFS_TRUNC, 0, AFS_MODE_SYNC,
                                 &st, &f), 0);
    cr_assert_eq(st.size, 0);
    cr_assert_eq(afs_file_open_size(f), 0);
    cr_assert_eq(afs_close(f), 0);
    t_fd_close(dfd);
}

T_META(openat_file_refuses_what_afs_open_refuses)
{
    t_new_ctx();
    t_make_file(t_path("f"), 100);
    int dfd = t_dirfd();
    struct afs_file *f = (struct afs_file *)1;
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "f", 0, 0, AFS_MODE_SYNC, NULL, &f), -EINVAL);
    cr_assert_null(f);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "f", AFS_RDONLY | AFS_DIRECTORY, 0,
                                 AFS_MODE_SYNC, NULL, &f), -EINVAL);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "f", AFS_RDONLY, 0, (enum afs_mode)7, NULL, &f),
                 -EINVAL);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "f", AFS_WRONLY | AFS_CREAT, 010000,
                                 AFS_MODE_SYNC, NULL, &f), -EINVAL);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "f", AFS_RDONLY, 0, AFS_MODE_SYNC, NULL, NULL),
                 -EINVAL);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, NULL, AFS_RDONLY, 0, AFS_MODE_SYNC, NULL, &f),
                 -EINVAL);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "missing", AFS_RDONLY, 0, AFS_MODE_SYNC, NULL,
                                 &f), -ENOENT);
    cr_assert_eq(afs_mkdirat(t_ctx, dfd, "d", 0755), 0);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "d", AFS_RDONLY, 0, AFS_MODE_SYNC, NULL, &f),
                 -EISDIR);
    cr_assert_null(f);
#ifndef _WIN32
    cr_assert_eq(symlink("f", t_path("link")), 0);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "link", AFS_RDONLY | AFS_NOFOLLOW, 0,
                                 AFS_MODE_SYNC, NULL, &f), -ELOOP);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "link", AFS_RDONLY, 0, AFS_MODE_SYNC, NULL, &f),
                 0);
    cr_assert_eq(afs_close(f), 0);
#endif
    t_fd_close(dfd);
}

#ifndef _WIN32
/* AFS_NONBLOCK: a FIFO without a writer opens at once; a regular file keeps O_NONBLOCK until
 * its first op or afs_file_fd() (as afs_open), and its reads still wait for the data. */
T_META(openat_file_nonblock_opens_a_fifo_at_once_and_settles_a_file_late)
{
    t_new_ctx();
    t_make_file(t_path("f"), 3000);
    cr_assert_eq(mkfifo(t_path("fifo"), 0600), 0);
    int dfd = t_dirfd();
    struct afs_file *f;
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "fifo", AFS_RDONLY | AFS_NONBLOCK, 0,
                                 AFS_MODE_SYNC, NULL, &f), 0);
    cr_assert_eq(afs_file_open_size(f), -1);
    cr_assert_eq(afs_close(f), 0);

    struct afs_stat st;
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "f", AFS_RDONLY | AFS_NONBLOCK, 0, AFS_MODE_SYNC,
                                 &st, &f), 0);
    cr_assert_eq(st.size, 3000);
    /* The descriptor the open made, before any op: O_NONBLOCK still on (found by its inode
     * and asked by number, not through afs_file_fd, which would take the flag off). */
    int n = 0;
    struct stat b;
    cr_assert_eq(stat(t_path("f"), &b), 0);
    for (int fd = 3; fd < 1024 && !n; fd++) {
        struct stat a;
        if (fstat(fd, &a) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            n = fd;
            cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK, "O_NONBLOCK kept until the first op");
        }
    }
    cr_assert_gt(n, 0, "the file's descriptor found");
    static char buf[3000];
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), 3000);
    cr_assert(t_check(buf, sizeof buf, 0));
    int fd = (int)afs_file_fd(f);
    cr_assert_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0, "O_NONBLOCK off after the first op");
    cr_assert_eq(afs_close(f), 0);
    t_fd_close(dfd);
}
#endif

/* In a task the open joins the batch (one op, the task suspends once); outside, inline. */
T_META(openat_file_in_a_task_is_one_op)
{
    t_new_ctx();
    t_make_file(t_path("f"), 100);
    int dfd = t_dirfd();
    struct afs_stats s0, s1;
    struct afs_file *f = NULL;
    afs_ctx_stats(t_ctx, &s0);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "f", AFS_RDONLY, 0, AFS_MODE_SYNC, NULL, &f), 0);
    afs_ctx_stats(t_ctx, &s1);
    cr_assert_eq(s1.ops, s0.ops);
    cr_assert_eq(afs_close(f), 0);

    struct fake_sched fs = {{t_ctx, fake_current, fake_suspend, fake_resume, NULL, NULL}, 0, 0};
    struct afs_waiter *prev = afs_waiter_set(&fs.w);
    afs_ctx_stats(t_ctx, &s0);
    struct afs_stat st;
    int e1 = afs_openat_file(t_ctx, dfd, "f", AFS_RDONLY, 0, AFS_MODE_SYNC, &st, &f);
    struct afs_file *g = NULL;
    int e2 = afs_openat_file(t_ctx, dfd, "g", AFS_RDWR | AFS_CREAT | AFS_EXCL, 0644,
                             AFS_MODE_SYNC, NULL, &g);
    afs_waiter_set(prev);
    afs_ctx_stats(t_ctx, &s1);
    cr_assert_eq(e1, 0);
    cr_assert_eq(st.size, 100);
    cr_assert_eq(e2, 0);
    cr_assert_eq(fs.suspends, 2);
    cr_assert_eq(s1.ops - s0.ops, 2u);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_close(g), 0);
    t_fd_close(dfd);
}

/* ------------------------------------------------------------------------------------------
 * Names Windows makes hard: long paths, non-ASCII names, read-only files, replacing renames,
 * reparse points. The checks hold on POSIX too, where they run as well.
 * ---------------------------------------------------------------------------------------- */

/* A path of more than 260 characters (MAX_PATH), made, used and removed through the calls
 * with absolute paths and relative to directory fds, without any "\\?\" from the caller. */
T_META(long_paths_over_260_characters)
{
    t_new_ctx();
    enum { DEPTH = 4, COMP = 100 };
    static char path[DEPTH + 1][2048];
    char comp[COMP + 1];
    memset(comp, 'd', COMP);
    comp[COMP] = 0;
    snprintf(path[0], sizeof path[0], "%s", t_dir);
    for (int i = 1; i <= DEPTH; i++) {
        comp[0] = (char)('0' + i);
        size_t n = strlen(path[i - 1]);
        cr_assert(n + 1 + COMP < sizeof path[i]);
        memcpy(path[i], path[i - 1], n);
        path[i][n] = '/';
        memcpy(path[i] + n + 1, comp, COMP + 1);
        cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, path[i], 0755), 0, "mkdir level %d", i);
    }
    static char file[2300];
    int k = snprintf(file, sizeof file, "%s/%s", path[DEPTH], "file-at-the-bottom");
    cr_assert(k > 0 && (size_t)k < sizeof file);
    cr_assert_gt(strlen(file), 400u);
    int fd = afs_openat(t_ctx, AFS_AT_FDCWD, file, AFS_RDWR | AFS_CREAT | AFS_EXCL, 0644);
    cr_assert_geq(fd, 0, "openat of %zu characters: %s", strlen(file), afs_strerror(fd));
    struct afs_file *f;
    cr_assert_eq(afs_file_from_fd(t_ctx, fd, AFS_RDWR, AFS_MODE_SYNC, &f), 0);
    static char buf[5000], back[5000];
    t_fill(buf, sizeof buf, 7);
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    cr_assert_eq(afs_close(f), 0);
#ifdef _WIN32
    /* What the system itself finds there, through its own long-path syntax. */
    static wchar_t w[2400];
    cr_assert_gt(MultiByteToWideChar(CP_UTF8, 0, file, -1, w + 4, 2300), 0);
    memcpy(w, L"\\\\?\\", 4 * sizeof *w);
    for (wchar_t *p = w + 4; *p; p++)
        if (*p == L'/')
            *p = L'\\';
    WIN32_FILE_ATTRIBUTE_DATA ad;
    cr_assert(GetFileAttributesExW(w, GetFileExInfoStandard, &ad), "error %lu", GetLastError());
    cr_assert_eq(ad.nFileSizeLow, (DWORD)sizeof buf);
#endif
    struct afs_stat st;
    cr_assert_eq(afs_statx(t_ctx, AFS_AT_FDCWD, file, 0, &st), 0);
    cr_assert_eq(st.size, (int64_t)sizeof buf);
    /* afs_open() takes it as well. */
    cr_assert_eq(afs_open(t_ctx, file, AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_pread(f, back, sizeof back, 0), (ssize_t)sizeof back);
    cr_assert(t_check(back, sizeof back, 7));
    cr_assert_eq(afs_close(f), 0);

    /* Relative to a directory fd deep down, and with ".." climbing out of it. */
    int dfd = afs_openat(t_ctx, AFS_AT_FDCWD, path[DEPTH], AFS_RDONLY | AFS_DIRECTORY, 0);
    cr_assert_geq(dfd, 0);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "file-at-the-bottom", dfd, "renamed", 0), 0);
    fd = afs_openat(t_ctx, dfd, "renamed", AFS_RDONLY, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(afs_file_from_fd(t_ctx, fd, AFS_RDONLY, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_pread(f, back, sizeof back, 0), (ssize_t)sizeof back);
    cr_assert(t_check(back, sizeof back, 7));
    cr_assert_eq(afs_close(f), 0);
    /* ".." from the top one, to the bottom (wine's GetFinalPathNameByHandleW cannot give a
     * directory's path over MAX_PATH, so ".." is taken from a short one). */
    int top = afs_openat(t_ctx, AFS_AT_FDCWD, path[1], AFS_RDONLY | AFS_DIRECTORY, 0);
    cr_assert_geq(top, 0);
    k = snprintf(file, sizeof file, "..%s/./renamed", path[DEPTH] + strlen(path[0]));
    cr_assert(k > 0 && (size_t)k < sizeof file);
    int r = afs_statx(t_ctx, top, file, 0, &st);
    cr_assert_eq(r, 0, "%s: %s", file, afs_strerror(r));
    cr_assert_eq(st.size, (int64_t)sizeof buf);
    cr_assert_eq(afs_close_fd(t_ctx, top), 0);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "renamed", 0), 0);
    cr_assert_eq(afs_statx(t_ctx, dfd, "renamed", 0, &st), -ENOENT);
    cr_assert_eq(afs_close_fd(t_ctx, dfd), 0);
    for (int i = DEPTH; i >= 1; i--)
        cr_assert_eq(afs_unlinkat(t_ctx, AFS_AT_FDCWD, path[i], AFS_AT_REMOVEDIR), 0, "rmdir %d",
                     i);
    cr_assert_eq(afs_statx(t_ctx, AFS_AT_FDCWD, path[1], 0, &st), -ENOENT);
}

/* Whether dir holds an entry whose name is exactly these UTF-8 bytes, as the system lists it
 * (FindFirstFileW's UTF-16 turned back into UTF-8 on Windows). */
static bool t_listed(const char *dir, const char *name)
{
    bool found = false;
#ifdef _WIN32
    wchar_t pat[MAX_PATH + 8];
    char back[1024];
    int n = MultiByteToWideChar(CP_UTF8, 0, dir, -1, pat, MAX_PATH);
    cr_assert_gt(n, 0);
    wcscat(pat, L"\\*");
    WIN32_FIND_DATAW fd;
    HANDLE h = FindFirstFileW(pat, &fd);
    cr_assert(h != INVALID_HANDLE_VALUE);
    do {
        if (WideCharToMultiByte(CP_UTF8, 0, fd.cFileName, -1, back, sizeof back, NULL, NULL) > 0 &&
            !strcmp(back, name))
            found = true;
    } while (FindNextFileW(h, &fd));
    FindClose(h);
#else
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strcmp(e->d_name, name))
            found = true;
    closedir(d);
#endif
    return found;
}

T_META(non_ascii_names_round_trip)
{
    t_new_ctx();
    /* Latin, CJK and a character outside the BMP (a UTF-16 surrogate pair). */
    const char *a = "\xc3\xbc" "n" "\xc3\xaf" "c" "\xc3\xb8" "d" "\xc3\xa9"
                    "-\xe5\x90\x8d\xe5\x89\x8d-\xf0\x9f\x98\x80";
    const char *b = "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82-\xce\xb1\xce\xb2\xce\xb3";
    int dfd = t_dirfd();
    int fd = afs_openat(t_ctx, dfd, a, AFS_WRONLY | AFS_CREAT | AFS_EXCL, 0644);
    cr_assert_geq(fd, 0, "%s", afs_strerror(fd));
    cr_assert_eq(afs_close_fd(t_ctx, fd), 0);
    cr_assert(t_listed(t_dir, a), "the name the system lists is the one given");
    cr_assert_eq(afs_mkdirat(t_ctx, dfd, b, 0755), 0);
    cr_assert(t_listed(t_dir, b));
    static char moved[256];
    int k = snprintf(moved, sizeof moved, "%s/%s", b, a);
    cr_assert(k > 0 && (size_t)k < sizeof moved);
    cr_assert_eq(afs_renameat(t_ctx, dfd, a, dfd, moved, 0), 0);
    cr_assert(!t_listed(t_dir, a));
    struct afs_stat st;
    cr_assert_eq(afs_statx(t_ctx, dfd, moved, 0, &st), 0);
    cr_assert(S_ISREG(st.mode));
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, moved, 0), 0);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, b, AFS_AT_REMOVEDIR), 0);
    cr_assert(!t_listed(t_dir, b));
#ifdef _WIN32
    /* Windows names are UTF-16: bytes that are not UTF-8 name nothing. */
    cr_assert_eq(afs_openat(t_ctx, dfd, "bad-\xff\xfe", AFS_WRONLY | AFS_CREAT, 0644), -EINVAL);
    cr_assert_eq(afs_mkdirat(t_ctx, dfd, "bad-\xc3", 0755), -EINVAL);
#endif
    t_fd_close(dfd);
}

T_META(a_read_only_file_is_removed)
{
    t_new_ctx();
    int dfd = t_dirfd();
    int fd = afs_openat(t_ctx, dfd, "ro", AFS_WRONLY | AFS_CREAT | AFS_EXCL, 0444);
    cr_assert_geq(fd, 0);
    cr_assert_eq(t_fd_write(fd, "data", 4), 4, "the creating fd writes");
    cr_assert_eq(afs_close_fd(t_ctx, fd), 0);
    struct afs_stat st;
    cr_assert_eq(afs_statx(t_ctx, dfd, "ro", 0, &st), 0);
    cr_assert_eq(st.mode & 0222, 0, "read-only");
    cr_assert_eq(st.size, 4);
#ifdef _WIN32
    cr_assert(GetFileAttributesA(t_path("ro")) & FILE_ATTRIBUTE_READONLY);
#endif
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "ro", 0), 0);
    cr_assert(!t_exists(t_path("ro")));
    cr_assert_eq(afs_statx(t_ctx, dfd, "ro", 0, &st), -ENOENT);
    t_fd_close(dfd);
}

T_META(rename_replaces_an_existing_file)
{
    t_new_ctx();
    int dfd = t_dirfd();
    t_make_file(t_path("new"), 1000);
    t_make_file(t_path("old"), 3000);
    struct t_ref before = {0}, after = {0};
    cr_assert_eq(t_ref_stat(t_path("new"), &before), 0);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "new", dfd, "old", 0), 0);
    cr_assert(!t_exists(t_path("new")));
    cr_assert_eq(t_ref_stat(t_path("old"), &after), 0);
    cr_assert_eq(after.size, 1000);
    cr_assert_eq(after.ino, before.ino, "the same file under the old name");

    /* Over a read-only file, as rename(2) does (the directory decides, not the file). */
    int fd = afs_openat(t_ctx, dfd, "locked", AFS_WRONLY | AFS_CREAT | AFS_EXCL, 0444);
    cr_assert_geq(fd, 0);
    cr_assert_eq(afs_close_fd(t_ctx, fd), 0);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "old", dfd, "locked", 0), 0);
    struct afs_stat st;
    cr_assert_eq(afs_statx(t_ctx, dfd, "locked", 0, &st), 0);
    cr_assert_eq(st.size, 1000);
    cr_assert_eq(st.ino, before.ino);
    cr_assert(st.mode & 0200, "the file moved keeps its own attributes");

    /* NOREPLACE keeps it; the name that stays is untouched. */
    t_make_file(t_path("other"), 10);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "other", dfd, "locked", AFS_RENAME_NOREPLACE), -EEXIST);
    cr_assert_eq(afs_statx(t_ctx, dfd, "locked", 0, &st), 0);
    cr_assert_eq(st.size, 1000);
    t_fd_close(dfd);
}

#ifdef _WIN32
/* A junction (IO_REPARSE_TAG_MOUNT_POINT, made without privileges) to a directory holding
 * "f": followed by default, the junction itself with AFS_NOFOLLOW (-ELOOP) and
 * AFS_AT_SYMLINK_NOFOLLOW (S_IFLNK), removed as a name without touching its target. 0 when
 * the system makes no junctions: wine 8 answers FSCTL_SET_REPARSE_POINT with
 * ERROR_NOT_SUPPORTED (and makes no symbolic links either). */
static int t_junction(const char *link, const char *target)
{
    if (!CreateDirectoryA(link, NULL))
        return -1;
    HANDLE h = CreateFileA(link, GENERIC_WRITE, 0, NULL, OPEN_EXISTING,
                           FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT, NULL);
    cr_assert(h != INVALID_HANDLE_VALUE);
    wchar_t full[MAX_PATH], sub[MAX_PATH + 8];
    cr_assert_gt(MultiByteToWideChar(CP_UTF8, 0, target, -1, sub, MAX_PATH), 0);
    cr_assert_gt(GetFullPathNameW(sub, MAX_PATH, full, NULL), 0);
    swprintf(sub, MAX_PATH + 8, L"\\??\\%ls", full);
    static union {
        struct {
            DWORD   tag;
            WORD    len, reserved, sub_off, sub_len, print_off, print_len;
            wchar_t buf[2 * MAX_PATH];
        } r;
        char bytes[4096];
    } rp;
    memset(&rp, 0, sizeof rp);
    WORD sl = (WORD)(wcslen(sub) * sizeof(wchar_t));
    rp.r.tag = IO_REPARSE_TAG_MOUNT_POINT;
    rp.r.sub_len = sl;
    rp.r.print_off = (WORD)(sl + sizeof(wchar_t));
    memcpy(rp.r.buf, sub, sl);
    rp.r.len = (WORD)(8 + sl + 2 * sizeof(wchar_t));
    DWORD n;
    BOOL ok = DeviceIoControl(h, FSCTL_SET_REPARSE_POINT, &rp, rp.r.len + 8u, NULL, 0, &n, NULL);
    DWORD e = GetLastError();
    CloseHandle(h);
    if (ok)
        return 1;
    RemoveDirectoryA(link);
    cr_assert(e == ERROR_NOT_SUPPORTED || e == ERROR_INVALID_FUNCTION,
              "FSCTL_SET_REPARSE_POINT: error %lu", e);
    return 0;
}

T_META(nofollow_on_a_junction)
{
    t_new_ctx();
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("target"), 0755), 0);
    t_make_file(t_path("target/f"), 10);
    int dfd = t_dirfd();
    struct afs_stat st;
    int made = t_junction(t_path("j"), t_path("target"));
    if (!made) {
        /* Without one, AFS_NOFOLLOW and AFS_AT_SYMLINK_NOFOLLOW still open and stat the
         * plain names. */
        cr_log_info("no junctions here (wine): the reparse-point cases ran not");
        int fd = afs_openat(t_ctx, dfd, "target", AFS_RDONLY | AFS_DIRECTORY | AFS_NOFOLLOW, 0);
        cr_assert_geq(fd, 0);
        cr_assert_eq(afs_close_fd(t_ctx, fd), 0);
        cr_assert_eq(afs_statx(t_ctx, dfd, "target", AFS_AT_SYMLINK_NOFOLLOW, &st), 0);
        cr_assert(S_ISDIR(st.mode));
        t_fd_close(dfd);
        return;
    }
    cr_assert_eq(afs_statx(t_ctx, dfd, "j/f", 0, &st), 0, "followed inside a path");
    cr_assert_eq(st.size, 10);
    cr_assert_eq(afs_statx(t_ctx, dfd, "j", 0, &st), 0);
    cr_assert(S_ISDIR(st.mode), "followed");
    cr_assert_eq(afs_statx(t_ctx, dfd, "j", AFS_AT_SYMLINK_NOFOLLOW, &st), 0);
    cr_assert_eq(st.mode & 0170000, 0120000, "the junction itself");
    cr_assert_eq(afs_openat(t_ctx, dfd, "j", AFS_RDONLY | AFS_DIRECTORY | AFS_NOFOLLOW, 0),
                 -ELOOP);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "j", AFS_AT_REMOVEDIR), -ENOTDIR);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "j", 0), 0, "a link goes as a name");
    cr_assert(!t_exists(t_path("j")));
    cr_assert(t_exists(t_path("target/f")), "its target stays");
    t_fd_close(dfd);
}
#endif

/* What POSIX refuses and Windows (which resolves "." and ".." as text) would do: remove or
 * rename a directory through "." or "..". The network's error texts (MinGW's C library has
 * none of them). A new append-only file the caller makes read-only, truncated on creation
 * (the creating handle writes, as open(2)'s does). An fsync of a file opened read-only. */
T_META(dot_names_texts_and_read_only_files_as_posix)
{
    t_ctx = t_ctx_cfg(NULL);
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("d"), 0755), 0);
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("d/x"), 0755), 0);
    int dfd = afs_openat(t_ctx, AFS_AT_FDCWD, t_path("d"), AFS_RDONLY | AFS_DIRECTORY, 0);
    cr_assert_geq(dfd, 0);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, ".", AFS_AT_REMOVEDIR), -EINVAL);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "x/..", AFS_AT_REMOVEDIR), -ENOTEMPTY);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, ".", 0), -EISDIR);
    cr_assert_eq(afs_renameat(t_ctx, dfd, ".", dfd, "y", 0), -EBUSY);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "x", dfd, ".", 0), -EBUSY);
    cr_assert(t_exists(t_path("d/x")), "the directory is still there");
    cr_assert_eq(afs_close_fd(t_ctx, dfd), 0);

    /* The C library's own text where it has one (glibc's and musl's differ), else POSIX's. */
    static const int net[] = {ECONNREFUSED, ECONNRESET, ECONNABORTED, ENOTCONN, ENETUNREACH,
                              EHOSTUNREACH, EADDRINUSE, EADDRNOTAVAIL, ENOTSOCK, EMSGSIZE,
                              EINPROGRESS, ENOBUFS};
    for (size_t i = 0; i < sizeof net / sizeof net[0]; i++) {
        const char *text = afs_strerror(-net[i]);
        cr_assert(*text && strncmp(text, "Unknown error", 13) != 0, "%d: %s", net[i], text);
    }
    cr_assert_str_eq(afs_strerror(-ECONNREFUSED), "Connection refused");

    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("ro"), AFS_WRONLY | AFS_CREAT | AFS_TRUNC | AFS_APPEND,
                          0444, AFS_MODE_SYNC, &f),
                 0);
    cr_assert_eq(afs_write(f, "abc", 3), 3);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_open(t_ctx, t_path("ro"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    char got[4] = {0};
    cr_assert_eq(afs_pread(f, got, 3, 0), 3);
    cr_assert_str_eq(got, "abc");
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_open(t_ctx, t_path("d/x/w"), AFS_WRONLY | AFS_CREAT, 0644, AFS_MODE_SYNC,
                          &f),
                 0);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_open(t_ctx, t_path("d/x/w"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_fsync(f, 0), 0, "fsync of a file opened read-only");
    cr_assert_eq(afs_close(f), 0);
}

#ifdef _WIN32
/* A device name (NUL, CON.txt: Windows's devices whatever the extension) opens the device,
 * as CreateFileW does; a Winsock socket is not adopted as a file (docs/SOCKETS.md). */
T_META(windows_device_names_and_sockets)
{
    t_ctx = t_ctx_cfg(NULL);
    struct afs_file *f;
    int err = afs_open(t_ctx, "NUL", AFS_WRONLY, 0, AFS_MODE_SYNC, &f);
    cr_assert_eq(err, 0, "NUL: %s", afs_strerror(err));
    cr_assert_eq(afs_write(f, "gone", 4), 4);
    cr_assert_eq(afs_close(f), 0);
    WSADATA wd;
    cr_assert_eq(WSAStartup(MAKEWORD(2, 2), &wd), 0);
    SOCKET s = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_neq(s, INVALID_SOCKET);
    cr_assert_eq(afs_file_from_fd(t_ctx, (int)(intptr_t)s, AFS_RDWR, AFS_MODE_SYNC, &f), -ENOTSUP);
    closesocket(s);
    WSACleanup();
}
#endif
