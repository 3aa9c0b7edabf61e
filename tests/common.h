/* Helpers shared by the Criterion suites: a fresh temporary directory per test, a context
 * on the backend named by ASYNCFS_BACKEND (ctest runs each suite once per backend), and
 * skips with the reason when this machine lacks something. */
#ifndef AFS_TEST_COMMON_H
#define AFS_TEST_COMMON_H

#define _GNU_SOURCE
#include <asyncfs.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char t_dir[1024];
static struct afs_ctx *t_ctx;

static int t_rm(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void t_setup(void)
{
    const char *base = getenv("AFS_TEST_TMPDIR");
    if (!base)
        base = getenv("TMPDIR");
    if (!base)
        base = "/var/tmp"; /* on disk (O_DIRECT works there), unlike a tmpfs /tmp */
    snprintf(t_dir, sizeof t_dir, "%s/afs-test-XXXXXX", base);
    cr_assert_not_null(mkdtemp(t_dir), "mkdtemp(%s): %s", t_dir, strerror(errno));
    t_ctx = NULL;
}

static void t_teardown(void)
{
    if (t_ctx)
        afs_ctx_free(t_ctx);
    t_ctx = NULL;
    if (t_dir[0])
        nftw(t_dir, t_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *t_path(const char *name)
{
    static char buf[4][PATH_MAX];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", t_dir, name);
    return buf[i];
}

/* A context on the backend under test; skips the test when it is not available here. */
static struct afs_ctx *t_ctx_cfg(const struct afs_config *cfg)
{
    struct afs_ctx *c = NULL;
    int err = afs_ctx_new(&c, cfg);
    if (err == -ENOTSUP)
        cr_skip_test("backend %s not available here", getenv("ASYNCFS_BACKEND"));
    cr_assert_eq(err, 0, "afs_ctx_new: %s", afs_strerror(err));
    return c;
}

static struct afs_ctx *t_new_ctx(void)
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

#define T_IO(name, ...) Test(io, name, .init = t_setup, .fini = t_teardown, .timeout = 30, ##__VA_ARGS__)

#endif
