/* POSIX system calls behind platform.h (Linux, FreeBSD, macOS). Each returns >= 0 or
 * -errno; the ones in the afs__sys table can be replaced by tests to inject faults. */
#include "internal.h"
#include "kq.h" /* AFS_HAVE_KQUEUE: kqueue() and kevent() */

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#ifdef __linux__
#include <linux/falloc.h> /* FALLOC_FL_*: musl's fcntl.h has only the first two */
#include <linux/fs.h>     /* BLKSSZGET */
#include <sys/sendfile.h>
#endif
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/magic.h> /* PROC_SUPER_MAGIC... */
#include <linux/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h> /* fstatfs */
#include <sys/sysmacros.h>
#if !defined(__NR_cachestat) && (defined(__x86_64__) || defined(__i386__) ||                 \
                                 defined(__aarch64__) || defined(__arm__) || defined(__riscv))
#define __NR_cachestat 451 /* Linux 6.5; older headers lack it */
#endif
#endif

ssize_t afs__sys_pread(int fd, void *buf, size_t len, uint64_t off)
{
    ssize_t r = off == AFS__OFF_SEQ ? read(fd, buf, len) : pread(fd, buf, len, (off_t)off);
    return r < 0 ? -errno : r;
}

#if defined(__linux__) && defined(RWF_NOWAIT)
/* preadv2 or pwritev2 of one buffer with RWF_NOWAIT (off -1: at the descriptor's position).
 * Returns the bytes or -errno; -EOPNOTSUPP where the kernel refuses the flag or the call
 * (-EINVAL, -ENOSYS: Linux 4.6 for the calls, 4.14 for buffered reads), as do file systems
 * that cannot tell. */
static ssize_t rw_nowait(bool write, int fd, void *buf, size_t len, int64_t off)
{
    struct iovec v = {buf, len};
#if defined(__GLIBC__) || !defined(SYS_preadv2)
    ssize_t r = write ? pwritev2(fd, &v, 1, (off_t)off, RWF_NOWAIT)
                      : preadv2(fd, &v, 1, (off_t)off, RWF_NOWAIT);
#else
    /* C libraries without them (musl before 1.2.5): the system calls, whose offset comes as
     * two longs, low then high (the kernel ignores the high one on 64-bit targets). */
    ssize_t r = syscall(write ? SYS_pwritev2 : SYS_preadv2, fd, &v, 1, (unsigned long)off,
                        (unsigned long)(((uint64_t)off >> 16) >> 16), RWF_NOWAIT);
#endif
    if (r >= 0)
        return r;
    return errno == ENOSYS || errno == EINVAL ? -EOPNOTSUPP : -errno;
}

static ssize_t sys_pread_nowait(int fd, void *buf, size_t len, uint64_t off)
{
    return rw_nowait(false, fd, buf, len, (int64_t)off);
}
#define SYS_PREAD_NOWAIT sys_pread_nowait
#else
#define SYS_PREAD_NOWAIT NULL
#endif

/* Set on the library's own threads (the pool's), which keep SIGPIPE blocked for good. */
static _Thread_local bool sigpipe_blocked;

void afs__sys_block_sigpipe(void)
{
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpipe_blocked = pthread_sigmask(SIG_BLOCK, &pipe_set, NULL) == 0;
}

/* Takes back the SIGPIPE a write that failed with EPIPE raised on this thread (blocked). The
 * kernel sends it to the writing thread, and a thread's own pending signals are taken before
 * the process's. */
static void take_sigpipe(const sigset_t *pipe_set)
{
    struct timespec zero = {0, 0};
    while (sigtimedwait(pipe_set, NULL, &zero) < 0 && errno == EINTR)
        ;
}

/* Whether SIGPIPE is pending at all: on this thread or on the process (sigpending() tells
 * them together). */
static bool sigpipe_pending_any(void)
{
    sigset_t pend;
    return sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE);
}

/* Whether SIGPIPE is pending on this thread itself, not on the process: 1, 0, or -1 where
 * the system does not tell. Linux: the SigPnd line of the thread's /proc status (ShdPnd is
 * the process's), a few microseconds; asked only when sigpending() has one. Read in small
 * pieces: the caller may be on a small task stack, and a line (Groups) may be long. */
static int thread_sigpipe_pending(void)
{
#ifdef __linux__
    int fd = open("/proc/thread-self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) { /* before Linux 3.17 */
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%ld/status", (long)syscall(SYS_gettid));
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0)
        return -1;
    static const char key[] = "SigPnd:";
    char buf[256];
    size_t have = 0;
    bool skip = false; /* in the rest of a line longer than buf */
    int found = -1;
    while (found < 0) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = 0;
        char *line = buf, *nl;
        while (found < 0 && (nl = memchr(line, '\n', have - (size_t)(line - buf)))) {
            if (!skip && strncmp(line, key, sizeof key - 1) == 0)
                found = (strtoull(line + sizeof key - 1, NULL, 16) >> (SIGPIPE - 1)) & 1;
            skip = false;
            line = nl + 1;
        }
        have -= (size_t)(line - buf);
        if (have == sizeof buf - 1) { /* no end of line in a full buffer */
            skip = skip || strncmp(buf, key, sizeof key - 1) != 0;
            if (!skip) /* SigPnd's hex digits fit: never so long */
                break;
            have = 0;
        } else {
            memmove(buf, line, have);
        }
    }
    close(fd);
    return found;
#else
    return -1;
#endif
}

/* A write at the descriptor's position (a pipe, FIFO or tty; sockets are sent to with
 * MSG_NOSIGNAL elsewhere) or a sendfile (no MSG_NOSIGNAL there): a reader that has gone must
 * be -EPIPE, not the death of the process by SIGPIPE. On a pool thread the signal is blocked
 * already: only an EPIPE costs a call, to take its signal back. On the caller's thread it is
 * blocked around the write (two calls), and the one the write raised is taken back, never
 * one that was pending for the thread before (standard signals do not queue: the write's
 * would be the same one, so none is taken then), nor one sent to the process (kill) that
 * waits, pending, for a thread that does not block it. As libpq does (pq_block_sigpipe), a
 * pending one is looked for only where the caller's mask blocked SIGPIPE already (else it
 * would have been delivered); only then is the thread's own pending set read. A pool
 * thread's own pending set holds none before a write: its SIGPIPEs are its writes',
 * taken back each time. */
struct sigpipe_hold {
    sigset_t set, old;
    bool     was_blocked;
    int8_t   before; /* SIGPIPE pending on the thread before the write: 1, 0, -1 unknown */
};

static void sigpipe_hold(struct sigpipe_hold *h)
{
    sigemptyset(&h->set);
    sigaddset(&h->set, SIGPIPE);
    h->was_blocked = true;
    h->before = 0;
    if (sigpipe_blocked)
        return;
    pthread_sigmask(SIG_BLOCK, &h->set, &h->old);
    h->was_blocked = sigismember(&h->old, SIGPIPE);
    /* One pending for the process only is not the thread's: the write's is then taken, as
     * it is dequeued first. */
    if (h->was_blocked && sigpipe_pending_any())
        h->before = (int8_t)thread_sigpipe_pending();
}

/* err: the write's errno, or 0; cut: it moved fewer bytes than asked. An EPIPE always
 * raised the signal on this thread. A blocking write to a pipe whose reader goes while the
 * writer waits for room raises it too and still returns what it had moved; a short write
 * to a full non-blocking pipe, or one a handled signal cut, raises none: after a short
 * write the signal is taken back only when this thread has one pending, which is the
 * write's. A socket reset by its peer (-ECONNRESET; -EPIPE only from the next call) raises
 * none on Linux, and is treated as a short write, in case a system does. Where the thread's
 * own pending set cannot be read, any pending SIGPIPE is taken after those. */
static void sigpipe_release(struct sigpipe_hold *h, int err, bool cut)
{
    bool take = false;
    if (h->before == 0) {
        if (err == EPIPE)
            take = true;
        else if ((err == ECONNRESET || (cut && !err)) && sigpipe_pending_any())
            take = thread_sigpipe_pending() != 0;
    }
    if (take)
        take_sigpipe(&h->set);
    if (!h->was_blocked)
        pthread_sigmask(SIG_SETMASK, &h->old, NULL);
}

static ssize_t seq_write(int fd, const void *buf, size_t len, const struct iovec *iov,
                         int iovcnt)
{
    struct sigpipe_hold h;
    sigpipe_hold(&h);
    ssize_t r = iov ? writev(fd, iov, iovcnt) : write(fd, buf, len);
    int err = r < 0 ? errno : 0;
    if (iov) {
        len = 0;
        for (int i = 0; i < iovcnt; i++)
            len += iov[i].iov_len;
    }
    sigpipe_release(&h, err, r >= 0 && (size_t)r < len);
    return r < 0 ? -err : r;
}

ssize_t afs__sys_sendfile(int out_fd, int in_fd, uint64_t off, size_t len)
{
#ifdef __linux__
    off_t o = (off_t)off;
    struct sigpipe_hold h;
    sigpipe_hold(&h);
    ssize_t r = sendfile(out_fd, in_fd, &o, len);
    int err = r < 0 ? errno : 0;
    sigpipe_release(&h, err, r >= 0 && (size_t)r < len);
    return r < 0 ? -err : r;
#else
    (void)out_fd, (void)in_fd, (void)off, (void)len;
    return -ENOTSUP;
#endif
}

ssize_t afs__sys_splice_to_sock(int rfd, int sock, size_t len, bool more)
{
#ifdef __linux__
    /* The socket is made non-blocking for the call only (the socket side of a splice asks
     * the file's flag, SPLICE_F_NONBLOCK only the pipe's), so that the descriptor stays as
     * its owner made it. */
    int fl = fcntl(sock, F_GETFL);
    if (fl < 0)
        return -errno;
    if (!(fl & O_NONBLOCK) && fcntl(sock, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    struct sigpipe_hold h;
    sigpipe_hold(&h);
    ssize_t r = splice(rfd, NULL, sock, NULL, len,
                       SPLICE_F_NONBLOCK | (more ? SPLICE_F_MORE : 0));
    int err = r < 0 ? errno : 0;
    sigpipe_release(&h, err, r >= 0 && (size_t)r < len); /* a reset in the middle of it */
    if (!(fl & O_NONBLOCK))
        (void)fcntl(sock, F_SETFL, fl);
    return r < 0 ? -(err == EWOULDBLOCK ? EAGAIN : err) : r;
#else
    (void)rfd, (void)sock, (void)len, (void)more;
    return -ENOTSUP;
#endif
}

static ssize_t sys_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
    if (off == AFS__OFF_SEQ)
        return seq_write(fd, buf, len, NULL, 0);
    ssize_t r = pwrite(fd, buf, len, (off_t)off);
    return r < 0 ? -errno : r;
}

#if defined(__linux__) && defined(RWF_NOWAIT)
static ssize_t sys_pwrite_nowait(int fd, const void *buf, size_t len, uint64_t off)
{
    if (off != AFS__OFF_SEQ)
        return -EOPNOTSUPP; /* not wanted: RWF_NOWAIT means other things for a file */
    struct sigpipe_hold h;
    sigpipe_hold(&h);
    ssize_t r = rw_nowait(true, fd, (void *)buf, len, -1);
    sigpipe_release(&h, r == -EPIPE ? EPIPE : 0, false); /* it never waited for room */
    return r;
}
#define SYS_PWRITE_NOWAIT sys_pwrite_nowait
#else
#define SYS_PWRITE_NOWAIT NULL
#endif

static ssize_t sys_preadv(int fd, const struct iovec *iov, int iovcnt, uint64_t off)
{
    ssize_t r = off == AFS__OFF_SEQ ? readv(fd, iov, iovcnt)
                                    : preadv(fd, iov, iovcnt, (off_t)off);
    return r < 0 ? -errno : r;
}

static ssize_t sys_pwritev(int fd, const struct iovec *iov, int iovcnt, uint64_t off)
{
    if (off == AFS__OFF_SEQ)
        return seq_write(fd, NULL, 0, iov, iovcnt);
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

static int sys_fallocate(int fd, int afs_mode, uint64_t off, uint64_t len)
{
#if defined(__linux__)
    int mode = 0;
    if (afs_mode & (AFS_FALLOC_KEEP_SIZE | AFS_FALLOC_PUNCH_HOLE))
        mode |= FALLOC_FL_KEEP_SIZE;
    if (afs_mode & AFS_FALLOC_PUNCH_HOLE)
        mode |= FALLOC_FL_PUNCH_HOLE;
    if (afs_mode & AFS_FALLOC_ZERO_RANGE)
        mode |= FALLOC_FL_ZERO_RANGE;
    return fallocate(fd, mode, (off_t)off, (off_t)len) < 0 ? -errno : 0;
#elif defined(__FreeBSD__)
    if (afs_mode != 0)
        return -ENOTSUP;
    int r = posix_fallocate(fd, (off_t)off, (off_t)len); /* the error, not -1 and errno */
    return r == EINVAL ? -ENOTSUP : -r; /* EINVAL: the file system cannot (ZFS) */
#elif defined(__APPLE__)
    /* F_PREALLOCATE allocates past the physical end of the file and never moves its size:
     * that is KEEP_SIZE, and mode 0 then extends the size. A range inside the file is left
     * as it is (the call cannot fill holes). Not built or run on macOS here. */
    if (afs_mode & ~AFS_FALLOC_KEEP_SIZE)
        return -ENOTSUP;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    uint64_t end = off + len, size = (uint64_t)st.st_size;
    if (end > size) {
        fstore_t fs = {.fst_flags = F_ALLOCATECONTIG | F_ALLOCATEALL,
                       .fst_posmode = F_PEOFPOSMODE,
                       .fst_offset = 0,
                       .fst_length = (off_t)(end - size)};
        if (fcntl(fd, F_PREALLOCATE, &fs) < 0) {
            fs.fst_flags = F_ALLOCATEALL; /* no contiguous run: any blocks */
            if (fcntl(fd, F_PREALLOCATE, &fs) < 0)
                return errno == EINVAL || errno == ENOTTY ? -ENOTSUP : -errno;
        }
        if (!(afs_mode & AFS_FALLOC_KEEP_SIZE) && ftruncate(fd, (off_t)end) < 0)
            return -errno;
    }
    return 0;
#else
    (void)fd, (void)afs_mode, (void)off, (void)len;
    return -ENOTSUP;
#endif
}

static int sys_ftruncate(int fd, uint64_t size)
{
    return ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
}

static int sys_close(int fd)
{
    /* POSIX leaves the fd state unspecified after EINTR; on Linux and the BSDs it is closed,
     * so retrying would close someone else's fd. */
    int r = close(fd);
    if (r < 0 && errno != EINTR)
        return -errno;
    return 0;
}

struct afs__syscalls afs__sys = {
    .pread = afs__sys_pread,
    .pread_nowait = SYS_PREAD_NOWAIT,
    .pwrite = sys_pwrite,
    .pwrite_nowait = SYS_PWRITE_NOWAIT,
    .preadv = sys_preadv,
    .pwritev = sys_pwritev,
    .fsync = sys_fsync,
    .fallocate = sys_fallocate,
    .ftruncate = sys_ftruncate,
    .close = sys_close,
    .malloc = malloc,
    .calloc = calloc,
    .realloc = realloc,
    .now = afs__now_ns,
    .cpu_now = afs__thread_cpu_ns,
    .proc_cpu_now = afs__proc_cpu_ns,
#ifdef __linux__
    /* NULL: src/linux/uring.c makes the liburing calls itself (this file does not link it). */
    .uring_setup = NULL,
    .uring_enter = NULL,
    .laio_submit = NULL,
    .sendfile = afs__sys_sendfile,
#endif
    .paio_listio = NULL, /* NULL: src/bsd/posix_aio.c calls lio_listio() itself */
#ifdef AFS_HAVE_KQUEUE
    .kq_open = kqueue,
    .kq_event = kevent,
#endif
};

static void fd_info(int fd, const struct stat *st, struct afs__fd_info *info)
{
    /* A regular file whose driver has no offsets (nonseekable_open: trace_pipe), or takes
     * no pwrite (/proc's seq_file files: stdio writes them with write(2)), is read and
     * written at the descriptor's position, as a pipe. Such files show a size of 0 and live
     * on the kernel's own file systems (proc, sysfs, tracefs, debugfs), the only ones asked:
     * by lseek, and on proc by a write of nothing (refused there before a driver sees it
     * when pwrite is not allowed; seq_file's write handlers ignore an empty one). */
    bool noseek = false;
#ifdef __linux__
    struct statfs fs;
    if (S_ISREG(st->st_mode) && st->st_size == 0 && major(st->st_dev) == 0 &&
        fstatfs(fd, &fs) == 0 &&
        (fs.f_type == PROC_SUPER_MAGIC || fs.f_type == TRACEFS_MAGIC ||
         fs.f_type == DEBUGFS_MAGIC || fs.f_type == SYSFS_MAGIC)) {
        int acc = fcntl(fd, F_GETFL) & O_ACCMODE;
        noseek = (lseek(fd, 0, SEEK_CUR) < 0 && errno == ESPIPE) ||
                 (fs.f_type == PROC_SUPER_MAGIC && (acc == O_WRONLY || acc == O_RDWR) &&
                  pwrite(fd, "", 0, 0) < 0 && errno == ESPIPE);
    }
#endif
    info->seq = S_ISFIFO(st->st_mode) || S_ISSOCK(st->st_mode) || S_ISCHR(st->st_mode) ||
                noseek;
    info->sock = S_ISSOCK(st->st_mode);
    int type = SOCK_STREAM;
    socklen_t tl = sizeof type;
    info->dgram = info->sock && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 &&
                  type != SOCK_STREAM;
    info->fifo = S_ISFIFO(st->st_mode);
    info->own = false;
    info->made = false;
    info->size = S_ISREG(st->st_mode) && !noseek ? (int64_t)st->st_size : -1;
    info->dir = S_ISDIR(st->st_mode);
}

static struct afs_timespec ts_of(int64_t sec, long nsec)
{
    struct afs_timespec t = {sec, nsec};
    return t;
}

static void stat_to_afs(const struct stat *s, struct afs_stat *sx)
{
    memset(sx, 0, sizeof *sx);
    sx->dev = (uint64_t)s->st_dev;
    sx->ino = (uint64_t)s->st_ino;
    sx->rdev = (uint64_t)s->st_rdev;
    sx->size = (int64_t)s->st_size;
    sx->blocks = (uint64_t)s->st_blocks;
    sx->mode = (uint32_t)s->st_mode;
    sx->nlink = (uint32_t)s->st_nlink;
    sx->uid = (uint32_t)s->st_uid;
    sx->gid = (uint32_t)s->st_gid;
    sx->blksize = (uint32_t)s->st_blksize;
#if defined(__APPLE__)
    sx->atime = ts_of(s->st_atimespec.tv_sec, s->st_atimespec.tv_nsec);
    sx->mtime = ts_of(s->st_mtimespec.tv_sec, s->st_mtimespec.tv_nsec);
    sx->ctime = ts_of(s->st_ctimespec.tv_sec, s->st_ctimespec.tv_nsec);
#else
    sx->atime = ts_of(s->st_atim.tv_sec, s->st_atim.tv_nsec);
    sx->mtime = ts_of(s->st_mtim.tv_sec, s->st_mtim.tv_nsec);
    sx->ctime = ts_of(s->st_ctim.tv_sec, s->st_ctim.tv_nsec);
#endif
}

int afs__sys_fd_info(afs__fd_t fd, struct afs__fd_info *info)
{
    return afs__sys_fd_info_st(fd, info, NULL);
}

int afs__sys_fd_info_st(afs__fd_t fd, struct afs__fd_info *info, struct afs_stat *st)
{
    struct stat s;
    if (fstat(fd, &s) < 0)
        return -errno;
    fd_info(fd, &s, info);
    if (st)
        stat_to_afs(&s, st);
    return 0;
}

int afs__sys_open(const char *path, int afs_flags, unsigned perm, afs__fd_t *out,
                  struct afs__fd_info *info)
{
    int flags = afs__sys_open_flags(afs_flags);
    int fd;
    do
        fd = open(path, flags, (mode_t)perm);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    struct stat st;
    bool known = fstat(fd, &st) == 0;
    if (known && S_ISDIR(st.st_mode)) {
        close(fd);
        return -EISDIR;
    }
    if (info && !known) {
        int err = -errno;
        close(fd);
        return err;
    }
    if (info)
        fd_info(fd, &st, info);
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
    return afs__sys.close(fd);
}

int64_t afs__sys_size(afs__fd_t fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISBLK(st.st_mode)) { /* st_size is 0: the device says its size */
#if defined(__linux__)
        uint64_t bytes;
        if (ioctl(fd, BLKGETSIZE64, &bytes) < 0)
            return -errno;
        return bytes > INT64_MAX ? INT64_MAX : (int64_t)bytes;
#else
        off_t end = lseek(fd, 0, SEEK_END); /* moves the descriptor's position: unused here */
        return end < 0 ? -errno : (int64_t)end;
#endif
    }
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

/* ------------------------------------------------------------------------------------------
 * Storage hints
 * ---------------------------------------------------------------------------------------- */

int afs__sys_fadvise(int fd, uint64_t off, uint64_t len, int advice)
{
#if defined(POSIX_FADV_NORMAL) && !defined(__APPLE__)
    static const int adv[] = {POSIX_FADV_NORMAL, POSIX_FADV_SEQUENTIAL, POSIX_FADV_RANDOM,
                              POSIX_FADV_NOREUSE, POSIX_FADV_WILLNEED, POSIX_FADV_DONTNEED};
    return -posix_fadvise(fd, (off_t)off, (off_t)len, adv[advice]); /* the error itself */
#elif defined(__APPLE__)
    if (advice != AFS_FADV_WILLNEED)
        return 0; /* macOS reads ahead and caches as it sees fit: nothing to tell it */
    struct radvisory ra = {.ra_offset = (off_t)off,
                           .ra_count = len > INT32_MAX || len == 0 ? INT32_MAX : (int)len};
    return fcntl(fd, F_RDADVISE, &ra) < 0 ? -errno : 0;
#else
    (void)fd, (void)off, (void)len, (void)advice;
    return -ENOTSUP;
#endif
}

int afs__sys_sync_range(int fd, uint64_t off, uint64_t len, unsigned flags)
{
#if defined(__linux__)
    unsigned fl = 0;
    if (flags & AFS_SYNC_RANGE_WAIT_BEFORE)
        fl |= SYNC_FILE_RANGE_WAIT_BEFORE;
    if (flags & AFS_SYNC_RANGE_WRITE)
        fl |= SYNC_FILE_RANGE_WRITE;
    if (flags & AFS_SYNC_RANGE_WAIT_AFTER)
        fl |= SYNC_FILE_RANGE_WAIT_AFTER;
    return sync_file_range(fd, (off_t)off, (off_t)len, fl) < 0 ? -errno : 0;
#else
    (void)off, (void)len;
    if (!flags)
        return 0;
    return afs__sys.fsync(fd, true); /* stronger: the whole file's data, durably */
#endif
}

/* ------------------------------------------------------------------------------------------
 * The page-cache probe of streams
 * ---------------------------------------------------------------------------------------- */

int afs__sys_cache_state(int fd, int64_t off, int64_t len, uint64_t *cached, bool *dirty)
{
#if defined(__linux__) && defined(__NR_cachestat)
    struct {
        uint64_t off, len;
    } range = {(uint64_t)off, (uint64_t)len};
    struct {
        uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
    } cs;
#ifdef AFS__VALGRIND
    if (RUNNING_ON_VALGRIND)
        return -ENOTSUP; /* Valgrind 3.19 does not know it: what it answers, less its warning */
#endif
    if (len <= 0 || syscall(__NR_cachestat, fd, &range, &cs, 0) != 0)
        return -ENOTSUP;
    *cached = cs.nr_cache * (uint64_t)sysconf(_SC_PAGESIZE);
    *dirty = cs.nr_dirty || cs.nr_writeback;
    return 0;
#else
    (void)fd, (void)off, (void)len, (void)cached, (void)dirty;
    return -ENOTSUP;
#endif
}

bool afs__sys_same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

static int reopen_rdwr(const char *path, int fd, int *out)
{
    int r;
    do
        r = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    if (!afs__sys_same_file(r, fd)) { /* renamed or replaced since: not the same file */
        close(r);
        return -ENOENT;
    }
    *out = r;
    return 0;
}

int afs__sys_crash_reopen(int fd, const char *path, int *out, bool *dup)
{
    *dup = false;
    if (path && reopen_rdwr(path, fd, out) == 0)
        return 0;
#ifdef __linux__
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    if (reopen_rdwr(proc, fd, out) == 0)
        return 0;
#endif
    /* A file created without write permission (its creator may write it), or no /proc. */
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        return -errno;
    *dup = true;
    *out = d;
    return 0;
}

void afs__sys_crash_plain(int fd)
{
    int fl = fcntl(fd, F_GETFL);
#ifdef O_DIRECT
    fl &= ~O_DIRECT;
#endif
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_APPEND);
}

int afs__sys_crash_link(int dfd, const char *from, const char *to)
{
    return linkat(dfd, from, dfd, to, 0) < 0 ? -errno : 0;
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

/* ------------------------------------------------------------------------------------------
 * Metadata system calls (the op API's openat, statx...), run by the thread pool, the sync
 * backend and the blocking calls outside tasks; io_uring uses the translations below.
 * ---------------------------------------------------------------------------------------- */

bool afs__sys_meta_supported(void)
{
    return true;
}

int afs__sys_dirfd(int dirfd)
{
    return dirfd == AFS_AT_FDCWD ? AT_FDCWD : dirfd;
}

int afs__sys_open_flags(int afs_flags)
{
    /* Never a controlling terminal: a library must not acquire one behind its caller. */
    int flags = O_CLOEXEC | O_NOCTTY;
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
    if (afs_flags & AFS_DIRECTORY)
        flags |= O_DIRECTORY;
    if (afs_flags & AFS_NONBLOCK)
        flags |= O_NONBLOCK;
#ifdef O_DIRECT
    if (afs_flags & AFS_DIRECT)
        flags |= O_DIRECT;
#endif
    if (afs_flags & AFS_DSYNC)
        flags |= O_DSYNC;
    return flags;
}

int afs__sys_at_flags(int afs_at_flags)
{
    int flags = 0;
    if (afs_at_flags & AFS_AT_SYMLINK_NOFOLLOW)
        flags |= AT_SYMLINK_NOFOLLOW;
#ifdef AT_EMPTY_PATH
    if (afs_at_flags & AFS_AT_EMPTY_PATH)
        flags |= AT_EMPTY_PATH;
#endif
    if (afs_at_flags & AFS_AT_REMOVEDIR)
        flags |= AT_REMOVEDIR;
    return flags;
}

int afs__sys_openat(int dirfd, const char *path, int afs_flags, unsigned perm)
{
    int fd = openat(afs__sys_dirfd(dirfd), path, afs__sys_open_flags(afs_flags), (mode_t)perm);
    if (fd < 0)
        return -errno;
#if defined(__APPLE__)
    if ((afs_flags & AFS_DIRECT) && fcntl(fd, F_NOCACHE, 1) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
#endif
    return fd;
}

#if defined(__linux__) && defined(STATX_BASIC_STATS) && defined(SYS_statx)
void afs__sys_from_statx(const void *raw, struct afs_stat *st)
{
    const struct statx *x = raw;
    memset(st, 0, sizeof *st);
    st->dev = (uint64_t)makedev(x->stx_dev_major, x->stx_dev_minor);
    st->ino = x->stx_ino;
    st->rdev = (uint64_t)makedev(x->stx_rdev_major, x->stx_rdev_minor);
    st->size = (int64_t)x->stx_size;
    st->blocks = x->stx_blocks;
    st->mode = x->stx_mode;
    st->nlink = x->stx_nlink;
    st->uid = x->stx_uid;
    st->gid = x->stx_gid;
    st->blksize = x->stx_blksize;
    st->atime = ts_of(x->stx_atime.tv_sec, (long)x->stx_atime.tv_nsec);
    st->mtime = ts_of(x->stx_mtime.tv_sec, (long)x->stx_mtime.tv_nsec);
    st->ctime = ts_of(x->stx_ctime.tv_sec, (long)x->stx_ctime.tv_nsec);
}

int afs__sys_statx(int dirfd, const char *path, int afs_at_flags, struct afs_stat *st)
{
    struct statx x;
    if (syscall(SYS_statx, afs__sys_dirfd(dirfd), path, afs__sys_at_flags(afs_at_flags),
                STATX_BASIC_STATS, &x) < 0)
        return -errno;
    afs__sys_from_statx(&x, st);
    return 0;
}
#else
void afs__sys_from_statx(const void *raw, struct afs_stat *st)
{
    (void)raw;
    memset(st, 0, sizeof *st); /* only io_uring (Linux) has a struct statx to convert */
}

int afs__sys_statx(int dirfd, const char *path, int afs_at_flags, struct afs_stat *sx)
{
    struct stat s;
    int r;
    if ((afs_at_flags & AFS_AT_EMPTY_PATH) && path[0] == 0)
        r = fstat(afs__sys_dirfd(dirfd), &s); /* no AT_EMPTY_PATH before FreeBSD 13 */
    else
        r = fstatat(afs__sys_dirfd(dirfd), path, &s,
                    afs__sys_at_flags(afs_at_flags & AFS_AT_SYMLINK_NOFOLLOW));
    if (r < 0)
        return -errno;
    stat_to_afs(&s, sx);
    return 0;
}
#endif

int afs__sys_mkdirat(int dirfd, const char *path, unsigned perm)
{
    return mkdirat(afs__sys_dirfd(dirfd), path, (mode_t)perm) < 0 ? -errno : 0;
}

int afs__sys_renameat(int dirfd, const char *path, int dirfd2, const char *path2, int afs_flags)
{
    int r;
    if (afs_flags & AFS_RENAME_NOREPLACE) {
#if defined(__linux__) && defined(SYS_renameat2)
        /* RENAME_NOREPLACE = 1; through syscall() so that glibc before 2.28 builds too. */
        r = (int)syscall(SYS_renameat2, afs__sys_dirfd(dirfd), path, afs__sys_dirfd(dirfd2),
                         path2, 1u);
#else
        return -EINVAL; /* no atomic "rename unless it exists" here */
#endif
    } else {
        r = renameat(afs__sys_dirfd(dirfd), path, afs__sys_dirfd(dirfd2), path2);
    }
    return r < 0 ? -errno : 0;
}

int afs__sys_unlinkat(int dirfd, const char *path, int afs_at_flags)
{
    return unlinkat(afs__sys_dirfd(dirfd), path, afs__sys_at_flags(afs_at_flags)) < 0 ? -errno
                                                                                      : 0;
}

/* A directory and everything under it (symlinks removed, never followed). */
int afs__sys_rmtree_at(int dirfd, const char *path)
{
    int dfd = openat(afs__sys_dirfd(dirfd), path,
                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    DIR *d = fdopendir(dfd);
    if (!d) {
        int err = -errno;
        close(dfd);
        return err;
    }
    int err = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        int r = unlinkat(dfd, e->d_name, 0) < 0 ? -errno : 0;
        if (r == -EISDIR || r == -EPERM) /* a directory (EPERM: POSIX's unlink of one) */
            r = afs__sys_rmtree_at(dfd, e->d_name);
        if (r < 0 && err == 0)
            err = r;
    }
    closedir(d);
    if (err == 0 && unlinkat(afs__sys_dirfd(dirfd), path, AT_REMOVEDIR) < 0)
        err = -errno;
    return err;
}

int afs__sys_syncfs(int fd)
{
#if defined(__linux__) && defined(SYS_syncfs)
    return syscall(SYS_syncfs, fd) < 0 ? -errno : 0;
#else
    (void)fd;
    return -ENOTSUP;
#endif
}

int afs__sys_fsync_fd(int fd, bool datasync)
{
    return afs__sys.fsync(fd, datasync);
}

int afs__sys_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int err;
    do
        err = afs__sys.fsync(fd, false);
    while (err == -EINTR);
    close(fd);
    return err;
}

#if defined(__linux__) && defined(STATX_DIOALIGN) && defined(SYS_statx)
/* Whether the file system refuses O_DIRECT for fd's file: fd has it, or a new open of the
 * regular file with it (through /proc) fails with EINVAL. 0 when it takes it or cannot tell. */
static int dio_refused(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    struct stat st;
    if ((fl >= 0 && (fl & O_DIRECT)) || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return 0;
    char path[32];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int g = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (g >= 0) {
        close(g);
        return 0;
    }
    return errno == EINVAL;
}
#endif

int afs__sys_dio_info(int fd, struct afs_dio_align *out)
{
    memset(out, 0, sizeof *out);
#if defined(__linux__) && defined(STATX_DIOALIGN) && defined(SYS_statx)
    /* STATX_DIOALIGN: Linux 6.1. An offset alignment of 0 means no direct I/O here, unless
     * an O_DIRECT open of the file says otherwise: user-mode emulators (qemu 7) set the mask
     * and leave the values 0. Then the guess below stands. */
    struct statx stx;
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && (stx.stx_dio_offset_align || dio_refused(fd))) {
        if (!stx.stx_dio_offset_align)
            return -ENOTSUP;
        out->mem = stx.stx_dio_mem_align;
        out->offset = stx.stx_dio_offset_align;
        out->exact = 1;
        return 0;
    }
#endif
#if defined(__APPLE__)
    out->mem = out->offset = 1; /* F_NOCACHE has no alignment rules */
    out->exact = 1;
    return 0;
#else
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
#if defined(__linux__) && defined(BLKSSZGET)
    int ss = 0;
    if (S_ISBLK(st.st_mode) && ioctl(fd, BLKSSZGET, &ss) == 0 && ss > 0) {
        out->mem = out->offset = (uint32_t)ss; /* the device's logical sector */
        out->exact = 1;
        return 0;
    }
#endif
    /* Unknown: the file system's block size (a multiple of any sector size), else 4096. */
    uint32_t a = st.st_blksize >= 512 && st.st_blksize <= 65536 &&
                         (st.st_blksize & (st.st_blksize - 1)) == 0
                     ? (uint32_t)st.st_blksize
                     : 4096;
    out->mem = out->offset = a;
    return 0;
#endif
}

int afs__sys_close_fd(int fd)
{
    return afs__sys_close(fd);
}

int afs__sys_fd_adopt(int fd)
{
    return afs__sys_set_nonblock(fd, false);
}

int afs__sys_opened_blocking(afs__fd_t fd, int afs_flags)
{
    /* F_SETFL takes the status flags (O_APPEND, O_DIRECT...) and ignores the others: those
     * of the open, less O_NONBLOCK, without asking F_GETFL first. */
    return fcntl(fd, F_SETFL, afs__sys_open_flags(afs_flags & ~AFS_NONBLOCK)) == 0 ? 0 : -errno;
}
