/* Helpers shared by the Criterion suites: a fresh temporary directory per test, a context
 * on the backend named by ASYNCFS_BACKEND (ctest runs each suite once per backend, through
 * tests/helpers/suite.sh, which accepts only the skip reasons tests/helpers/skips.allow lists). */
#ifndef AFS_TEST_COMMON_H
#define AFS_TEST_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <asyncfs.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#ifndef _WIN32
#include <ftw.h>
#endif
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef _WIN32
/* Windows (MinGW-w64: its C runtime has open/read/usleep, winpthreads has pthreads and
 * clock_gettime): the few POSIX calls the suites use that it lacks, for the tests only. */
#include <direct.h>
#include <io.h>
#include <windows.h>
#include <winioctl.h>

static inline int setenv(const char *name, const char *value, int overwrite)
{
    (void)overwrite;
    return _putenv_s(name, value) ? -1 : 0;
}

static inline ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    if (_lseeki64(fd, off, SEEK_SET) < 0)
        return -1;
    return _write(fd, buf, (unsigned)len);
}

static inline char *mkdtemp(char *tmpl)
{
    size_t n = strlen(tmpl);
    if (n < 6 || strcmp(tmpl + n - 6, "XXXXXX") != 0) {
        errno = EINVAL;
        return NULL;
    }
    for (unsigned tries = 0; tries < 1000; tries++) {
        unsigned v = (unsigned)GetTickCount() * 2654435761u + GetCurrentProcessId() * 40503u +
                     tries * 7919u;
        for (int i = 0; i < 6; i++, v /= 36)
            tmpl[n - 6 + i] = "abcdefghijklmnopqrstuvwxyz0123456789"[v % 36];
        if (_mkdir(tmpl) == 0)
            return tmpl;
        if (errno != EEXIST)
            return NULL;
    }
    return NULL;
}

static inline int mkfifo(const char *path, int mode)
{
    (void)path, (void)mode;
    errno = ENOSYS; /* no named pipes in the file system */
    return -1;
}

/* Creating a symbolic link needs a privilege (or developer mode) on Windows, and wine 8's
 * CreateSymbolicLink says yes but makes nothing: -1 unless a reparse point is there. */
static inline int t_symlink(const char *target, const char *link)
{
    if (!CreateSymbolicLinkA(link, target, 0x2 /* ALLOW_UNPRIVILEGED_CREATE */))
        return -1;
    DWORD a = GetFileAttributesA(link);
    return a != INVALID_FILE_ATTRIBUTES && (a & FILE_ATTRIBUTE_REPARSE_POINT) ? 0 : -1;
}

/* NTFS zero-fills the gap before a write past the end unless the file is sparse. */
static inline void t_sparse(struct afs_file *f)
{
    DWORD n;
    DeviceIoControl((HANDLE)afs_file_fd(f), FSCTL_SET_SPARSE, NULL, 0, NULL, 0, &n, NULL);
}

static void t_rmtree(const char *dir)
{
    char pat[MAX_PATH + 8], p[MAX_PATH + 8];
    snprintf(pat, sizeof pat, "%s\\*", dir);
    WIN32_FIND_DATAA fd;
    HANDLE h = FindFirstFileA(pat, &fd);
    if (h != INVALID_HANDLE_VALUE) {
        do {
            if (!strcmp(fd.cFileName, ".") || !strcmp(fd.cFileName, ".."))
                continue;
            snprintf(p, sizeof p, "%s\\%s", dir, fd.cFileName);
            if ((fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) &&
                !(fd.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT))
                t_rmtree(p);
            else if (fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)
                RemoveDirectoryA(p);
            else {
                SetFileAttributesA(p, FILE_ATTRIBUTE_NORMAL); /* read-only files too */
                DeleteFileA(p);
            }
        } while (FindNextFileA(h, &fd));
        FindClose(h);
    }
    RemoveDirectoryA(dir);
}
#else
static inline int t_symlink(const char *target, const char *link)
{
    return symlink(target, link);
}

static inline void t_sparse(struct afs_file *f)
{
    (void)f; /* POSIX files are sparse by default */
}

static int t_rm(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}
#endif

static char t_dir[1024];
static struct afs_ctx *t_ctx;

static void t_rmdir(void)
{
#ifdef _WIN32
    if (t_dir[0])
        t_rmtree(t_dir);
#else
    if (t_dir[0])
        nftw(t_dir, t_rm, 16, FTW_DEPTH | FTW_PHYS);
#endif
    t_dir[0] = '\0';
}

static void t_setup(void)
{
    const char *base = getenv("AFS_TEST_TMPDIR");
#ifdef _WIN32
    _fmode = _O_BINARY; /* the reference reads and writes are byte for byte */
    if (!base)
        base = getenv("TEMP");
    if (!base)
        base = getenv("TMP");
    if (!base)
        base = ".";
#else
    if (!base)
        base = getenv("TMPDIR");
    if (!base)
        base = "/var/tmp"; /* on disk (O_DIRECT works there), unlike a tmpfs /tmp */
#endif
    snprintf(t_dir, sizeof t_dir, "%s/afs-test-XXXXXX", base);
    cr_assert_not_null(mkdtemp(t_dir), "mkdtemp(%s): %s", t_dir, strerror(errno));
    t_ctx = NULL;
    /* A skipped test does not reach .fini; each test runs in its own process, so the
     * directory also goes when that process exits. */
    static int registered;
    if (!registered++)
        atexit(t_rmdir);
}

static void t_teardown(void)
{
    if (t_ctx)
        afs_ctx_free(t_ctx);
    t_ctx = NULL;
    t_rmdir();
}

static const char *t_path(const char *name)
{
    static char buf[4][PATH_MAX];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", t_dir, name);
    return buf[i];
}

/* A context on the backend under test. ctest runs a suite only on the backends this build
 * has and this machine should offer, so a backend that cannot be created fails the test
 * (a skip would let a missing backend pass); the message says why. */
static struct afs_ctx *t_ctx_cfg(const struct afs_config *cfg)
{
    struct afs_ctx *c = NULL;
    int err = afs_ctx_new(&c, cfg);
    if (err == -ENOTSUP)
        cr_assert_fail("backend %s not available here (afs_ctx_new: %s); blocked on purpose? "
                       "see tests/helpers/suite.sh",
                       getenv("ASYNCFS_BACKEND") ? getenv("ASYNCFS_BACKEND") : "(auto)",
                       afs_strerror(err));
    cr_assert_eq(err, 0, "afs_ctx_new: %s", afs_strerror(err));
    return c;
}

static inline struct afs_ctx *t_new_ctx(void)
{
    t_ctx = t_ctx_cfg(NULL);
    return t_ctx;
}

/* Fills buf with a pattern that depends on the file offset, to catch misplaced data. */
static void t_fill(void *buf, size_t len, uint64_t off)
{
    unsigned char *p = buf;
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(((off + i) * 2654435761u) >> 13);
}

static int t_check(const void *buf, size_t len, uint64_t off)
{
    const unsigned char *p = buf;
    for (size_t i = 0; i < len; i++)
        if (p[i] != (unsigned char)(((off + i) * 2654435761u) >> 13))
            return 0;
    return 1;
}

/* Writes `len` pattern bytes with plain POSIX calls, as the reference. */
static void t_make_file(const char *path, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    char buf[65536];
    for (size_t off = 0; off < len; off += sizeof buf) {
        size_t n = len - off < sizeof buf ? len - off : sizeof buf;
        t_fill(buf, n, off);
        cr_assert_eq(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
    }
    close(fd);
}

#ifndef _WIN32
#include <signal.h>
#include <sys/wait.h>
/* Runs fn(arg) in a child process and checks that it is killed by SIGABRT after writing
 * `msg` to stderr: a misuse abort is checked for which check fired, not only for the signal. */
static inline void t_expect_abort(void (*fn)(void *), void *arg, const char *msg)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        fn(arg);
        _exit(0); /* did not abort */
    }
    close(p[1]);
    static char out[8192];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof out - 1 && (r = read(p[0], out + n, sizeof out - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(p[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "no SIGABRT (status 0x%x); stderr: %s",
              st, out);
    cr_assert_not_null(strstr(out, msg), "stderr lacks \"%s\": %s", msg, out);
}
#endif

#define T_IO(name, ...) Test(io, name, .init = t_setup, .fini = t_teardown, .timeout = 30, ##__VA_ARGS__)

#endif
