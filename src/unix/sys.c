/* POSIX system calls behind platform.h (Linux, FreeBSD, macOS). Each returns >= 0 or
 * -errno; the ones in the afs__sys table can be replaced by tests to inject faults. */
#include "internal.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/stat.h>
#include <sys/syscall.h>
#endif

static ssize_t sys_pread(int fd, void *buf, size_t len, uint64_t off)
{
    ssize_t r = pread(fd, buf, len, (off_t)off);
    return r < 0 ? -errno : r;
}

static ssize_t sys_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
    ssize_t r = pwrite(fd, buf, len, (off_t)off);
    return r < 0 ? -errno : r;
}

static ssize_t sys_preadv(int fd, const struct iovec *iov, int iovcnt, uint64_t off)
{
    ssize_t r = preadv(fd, iov, iovcnt, (off_t)off);
    return r < 0 ? -errno : r;
}

static ssize_t sys_pwritev(int fd, const struct iovec *iov, int iovcnt, uint64_t off)
{
    ssize_t r = pwritev(fd, iov, iovcnt, (off_t)off);
    return r < 0 ? -errno : r;
}

static int sys_fsync(int fd, bool datasync)
{
#if defined(__APPLE__)
    /* fsync on macOS does not reach the platter; F_FULLFSYNC does. */
    (void)datasync;
    int r = fcntl(fd, F_FULLFSYNC);
    if (r < 0 && (errno == ENOTTY || errno == ENOTSUP || errno == EINVAL))
        r = fsync(fd);
#else
    int r = datasync ? fdatasync(fd) : fsync(fd);
#endif
    return r < 0 ? -errno : 0;
}

struct afs__syscalls afs__sys = {
    .pread = sys_pread,
    .pwrite = sys_pwrite,
    .preadv = sys_preadv,
    .pwritev = sys_pwritev,
    .fsync = sys_fsync,
};

int afs__sys_open(const char *path, int afs_flags, unsigned perm, afs__fd_t *out)
{
    int flags = O_CLOEXEC;
    switch (afs_flags & (AFS_RDONLY | AFS_WRONLY | AFS_RDWR)) {
    case AFS_RDONLY: flags |= O_RDONLY; break;
    case AFS_WRONLY: flags |= O_WRONLY; break;
    default: flags |= O_RDWR; break;
    }
    if (afs_flags & AFS_CREAT)
        flags |= O_CREAT;
    if (afs_flags & AFS_TRUNC)
        flags |= O_TRUNC;
    if (afs_flags & AFS_EXCL)
        flags |= O_EXCL;
    if (afs_flags & AFS_APPEND)
        flags |= O_APPEND;
    if (afs_flags & AFS_NOFOLLOW)
        flags |= O_NOFOLLOW;
#ifdef O_DIRECT
    if (afs_flags & AFS_DIRECT)
        flags |= O_DIRECT;
#endif
    int fd;
    do
        fd = open(path, flags, (mode_t)perm);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return -EISDIR;
    }
#if defined(__APPLE__)
    if ((afs_flags & AFS_DIRECT) && fcntl(fd, F_NOCACHE, 1) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
#endif
    *out = fd;
    return 0;
}

int afs__sys_close(afs__fd_t fd)
{
    /* POSIX leaves the fd state unspecified after EINTR; on Linux and the BSDs it is closed,
     * so retrying would close someone else's fd. */
    int r = close(fd);
    if (r < 0 && errno != EINTR)
        return -errno;
    return 0;
}

int64_t afs__sys_size(afs__fd_t fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    return (int64_t)st.st_size;
}

unsigned afs__sys_dio_align(afs__fd_t fd)
{
#if defined(__linux__) && defined(STATX_DIOALIGN) && defined(SYS_statx)
    /* STATX_DIOALIGN: Linux 6.1. */
    struct statx stx;
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
        unsigned a = stx.stx_dio_offset_align;
        if (stx.stx_dio_mem_align > a)
            a = stx.stx_dio_mem_align;
        return a;
    }
#endif
#if defined(__APPLE__)
    (void)fd;
    return 0; /* F_NOCACHE has no alignment rules */
#else
    (void)fd;
    return 512;
#endif
}

void *afs__aligned_alloc(size_t size, size_t align)
{
    /* Large buffers straight from mmap: page aligned, returned to the OS on free. */
    if (size >= ((size_t)1 << 20)) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    void *p = NULL;
    if (posix_memalign(&p, align, size) != 0)
        return NULL;
    return p;
}

void afs__aligned_free(void *p, size_t size)
{
    if (size >= ((size_t)1 << 20))
        munmap(p, size);
    else
        free(p);
}
