/* afcp: copying one regular file, as a corio task.
 *
 * Every per-file system call goes through asyncfs's phase batches: the source and the
 * destination are opened with afs_openat() relative to the directory fds the walker opened
 * with O_NOFOLLOW, the source is checked with afs_statx() on the fd it opened, the data moves
 * with afs_pread()/afs_pwrite(), the files are closed with afs_close() and the temporary is
 * renamed with afs_renameat(). Inside a task each of these suspends only the task: with 64
 * files in flight, one phase hands the kernel dozens of opens, stats, reads, writes and
 * renames at once (io_uring: one io_uring_enter; the kernel runs the path walks on its own
 * workers, on the other CPUs, while this thread goes on). So:
 *  - destination: O_CREAT|O_EXCL|O_NOFOLLOW on ".afcp.XXXXXX" in the destination directory
 *    fd creates a new inode in exactly that directory, or fails; no symlink is followed (O_EXCL
 *    refuses one at the last component, the directory fd pins every component above). The mode
 *    given to open() is the source's & 0777 (the umask applies); it is never widened later,
 *    except by -p to the source's own mode. The file appears under its real name only via
 *    renameat() on the same directory fd, after its data is on disk (see below). Where the
 *    temporary cannot be created or renamed over an existing regular file for EACCES or
 *    EPERM (a directory the user may not write; a sticky one, the file another user's), the
 *    file is written in place as --inplace writes it (open_dest, write_over): cp needs only
 *    the file to be writable, and so does afcp.
 *  - source: openat(sfd, name, O_NOFOLLOW|O_NONBLOCK) (O_NONBLOCK: a FIFO swapped in after
 *    the walk cannot block us), statx that fd and refuse anything but a regular file: the
 *    check and the data are the same inode.
 * --direct re-opens the source or the new destination with O_DIRECT through
 * /proc/self/fd/<fd> (the same inode, no path walk); without /proc it stays buffered.
 *
 * Data. A file up to chunk_size is one read and one write. A larger one is cut into chunks
 * taken in order by up to chunk_workers tasks (the file task and its children), each with its
 * own buffer: that keeps several reads and writes of one file in flight, and every task's
 * afs_pread/afs_pwrite joins the scheduler's phase batch (one io_uring_enter for all of
 * them). copy_file_range (see do_copy_range) is used for large files on one file system.
 *
 * Durability before the rename, in groups. A file must not appear under its real name before
 * its data is on disk (after a crash the name would exist with holes or no data). One
 * fdatasync per file does that but costs a journal commit per file: for 10,000 small files
 * it made afcp slower than cp. So a finished file closes its descriptors, gives back its
 * slot (the next files start) and joins the next commit group. One syncfs round (one syncfs()
 * per file system of the group, on asyncfs's thread pool: the other files go on copying) is
 * in flight at a time; the files finishing meanwhile form the next group (see
 * commit_groups). Only once its group's round is done does a file rename its temporary into
 * place.
 * A failure (or a signal: see "Temporaries and signals" below) before the rename removes the
 * temporaries: a name never points at a file that is not complete and synced. Large files
 * (>= GROUP_FSYNC_MIN) keep their own fdatasync through asyncfs, in the phase batch. */
#define _GNU_SOURCE
#include "afcp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { DIO_ALIGN = 4096, GROUP_FS_MAX = 8, TEMPS_WAITING = 4096 };
#define GROUP_FSYNC_MIN (8u << 20)

/* A commit group: finished files waiting for the same syncfs round. */
struct group {
    struct corio_future done;   /* result: 0 or the first syncfs error */
    unsigned            left;   /* members still waiting on `done` */
    int                 fds[GROUP_FS_MAX]; /* one directory fd per file system (dup'ed) */
    dev_t               devs[GROUP_FS_MAX];
    unsigned            nfs;
};

/* Each scheduler has its own groups (afcp_me->cur_group: the one filling, the files waiting
 * for the next syncfs round; committing: a task of it is running syncfs rounds). */

/* Group commit as databases do it: one syncfs round in flight at a time, and the files that
 * finish while it runs form the next group, committed as soon as it is done. The group size
 * follows the disk's latency by itself: a slow sync gathers more files, and the disk writes
 * back continuously while the copy goes on. Runs in the member task that found no round in
 * flight; afs_syncfs() runs on asyncfs's thread pool, so only this task waits for it. */
static void commit_groups(void)
{
    struct afcp_sched *me = afcp_me;
    if (me->committing)
        return;
    me->committing = 1;
    while (me->cur_group) {
        struct group *g = me->cur_group;
        me->cur_group = NULL;
        int err = 0;
        for (unsigned i = 0; i < g->nfs; i++) {
            int r = afs_syncfs(AFCP_CTX, g->fds[i]);
            if (r < 0 && !err)
                err = r;
            close(g->fds[i]);
        }
        corio_future_complete(&g->done, err, NULL);
    }
    me->committing = 0;
}

static void slot_release(void)
{
    afcp_me->copying--;
    afcp_add(&afcp.files_busy, -1);
    if (afcp_me->files_debt) { /* descriptors ran out: one slot fewer (afcp_fd_wait) */
        afcp_me->files_debt--;
        afcp_me->files_cap--;
        return;
    }
    afcp_sem_release(&afcp_me->files);
}

/* Joins the next group with the destination directory dd, releases the file slot (the next
 * file starts), and waits until the group's data is on disk. Returns 0 or the syncfs error. */
static int group_wait(struct corio_task *t, struct afcp_dir *dd)
{
    slot_release();
    struct afcp_sched *me = afcp_me;
    if (!me->cur_group) {
        me->cur_group = calloc(1, sizeof *me->cur_group);
        if (!me->cur_group)
            return -ENOMEM;
        corio_future_init(&me->cur_group->done);
    }
    struct group *g = me->cur_group;
    unsigned i = 0;
    while (i < g->nfs && g->devs[i] != dd->ddev)
        i++;
    if (i == g->nfs) {
        int fd = i < GROUP_FS_MAX ? dup(dd->dfd) : -1;
        if (fd < 0) /* a group spanning too many file systems: sync this one alone */
            return afs_syncfs(AFCP_CTX, dd->dfd);
        g->fds[g->nfs] = fd;
        g->devs[g->nfs++] = dd->ddev;
    }
    g->left++;
    commit_groups();
    int r = corio_future_await_shielded(t, &g->done, NULL);
    if (--g->left == 0)
        free(g);
    return r;
}

struct fcopy {
    struct afcp_file_job *job;
    struct afs_file      *in, *out;
    uint64_t              size;
    int                   err;      /* first error, negative */
    int                   err_side; /* 0 read, 1 write, 2 reported already, 3 copy_file_range */
    int                   direct_in, direct_out;
    int                   unsized;    /* the size says nothing: read until EOF (see below) */
    int                   stream;     /* not seekable (FIFO, device): plain read(2) */
    int                   seek_holes; /* the source has holes: copy only its data extents */
    int                   zero_holes; /* blocks of zeros become holes: --sparse=always, or
                                         auto on a source with holes (cp's make_holes) */
    int                   own_name;   /* written under its final name (see own_name) */
    int                   inplace;    /* written into the existing file: --inplace, or where
                                         no temporary may replace it (see open_dest) */
    uint64_t              copied;
    int                   end_seen;   /* the last span's read found the end at the size */
};

static uint64_t round_up(uint64_t v)
{
    return (v + DIO_ALIGN - 1) & ~(uint64_t)(DIO_ALIGN - 1);
}

static void fail(struct fcopy *c, int err, int side)
{
    if (!c->err) {
        c->err = err;
        c->err_side = side;
    }
}

/* Writes len bytes of buf at off. zero_holes (--sparse=always, or auto on a sparse source):
 * whole blocks of zeros are skipped (the final ftruncate gives the file its size). O_DIRECT
 * writes whole blocks; the padding past the end is cut by that ftruncate too. */
static int write_out(struct fcopy *c, char *buf, uint64_t off, size_t len)
{
    static const char zero[DIO_ALIGN];
    size_t pos = 0;
    while (pos < len) {
        size_t run = len - pos;
        if (c->zero_holes) {
            size_t blk = run < DIO_ALIGN ? run : DIO_ALIGN;
            if (!memcmp(buf + pos, zero, blk)) {
                pos += blk; /* a hole */
                continue;
            }
            for (run = blk; pos + run < len; run += blk) {
                blk = len - pos - run < DIO_ALIGN ? len - pos - run : DIO_ALIGN;
                if (!memcmp(buf + pos + run, zero, blk))
                    break;
            }
        }
        size_t wlen = c->direct_out ? (size_t)round_up(run) : run;
        if (wlen > run)
            memset(buf + pos + run, 0, wlen - run);
        ssize_t n = afs_pwrite(c->out, buf + pos, wlen, off + pos);
        if (n < 0)
            return (int)n;
        pos += run;
    }
    return 0;
}

/* Reads [off, off + len) into buf and writes it. A read shorter than the size we saw means
 * the file shrank while we copied: an error, never a silently shorter copy. The file's last
 * span, where buf has room for a byte more, is read with that byte: a read that stops at
 * the size found the end there (what cp's last read, of nothing, finds), so no fstat after
 * the copy need ask whether the file grew; one that gets the byte says it did. */
static int copy_span(struct fcopy *c, char *buf, uint64_t off, size_t len, size_t room)
{
    size_t rlen = c->direct_in ? (size_t)round_up(len) : len;
    int last = !c->direct_in && room > 0 && off + len == c->size;
    ssize_t n = afs_pread(c->in, buf, rlen + (last ? 1 : 0), off);
    int err = n < 0 ? (int)n : (size_t)n < len ? -ENODATA : 0;
    if (err < 0) {
        fail(c, err, 0);
        return -1;
    }
    if (last && (size_t)n == len)
        c->end_seen = 1;
    if ((err = write_out(c, buf, off, len)) < 0) {
        fail(c, err, 1);
        return -1;
    }
    return 0;
}

/* The next data extent of the source at or after pos: [*data, *hole), or 0 when only holes
 * are left. A file system without SEEK_DATA has one extent: all of it. */
static int next_extent(struct fcopy *c, uint64_t pos, uint64_t end, uint64_t *data,
                       uint64_t *hole)
{
    int fd = (int)afs_file_fd(c->in);
    off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
    if (d < 0 && errno == ENXIO)
        return 0; /* holes to the end (or the file shrank: see the check in file_task) */
    if (d < 0)
        d = (off_t)pos;
    off_t h = lseek(fd, d, SEEK_HOLE);
    if (h < 0 || (uint64_t)h > end)
        h = (off_t)end;
    *data = (uint64_t)d;
    *hole = (uint64_t)h;
    return (uint64_t)d < end;
}

/* One chunk. A source with holes: only its data extents inside the chunk are read and
 * written (aligned out to whole blocks under O_DIRECT), the holes stay holes. */
static void copy_chunk(struct fcopy *c, void *buf, uint64_t off, size_t len)
{
    if (c->seek_holes) {
        uint64_t pos = off, end = off + len, d, h;
        while (pos < end && next_extent(c, pos, end, &d, &h)) {
            if (c->direct_in || c->direct_out) {
                d &= ~(uint64_t)(DIO_ALIGN - 1);
                h = round_up(h) < end ? round_up(h) : end;
            }
            if (copy_span(c, (char *)buf + (d - off), d, (size_t)(h - d), 0) < 0)
                return;
            pos = h;
        }
    } else if (copy_span(c, buf, off, len, afcp.o.chunk_size - len) < 0) {
        return;
    }
    afcp_add(&afcp.bytes_done, (int64_t)(len));
    c->copied += len;
}

/* A source whose size says nothing (0 on /proc, a page on sysfs, a FIFO or a device given on
 * the command line): read until EOF, as cp does, one buffer at a time. A stream (FIFO,
 * character device) is read with read(2) on this thread: asyncfs reads at offsets only. */
/* Tests only (AFCP_TEST_GROW=N): N bytes appended to each source once its size is first
 * seen (the batch path: right after the open; the cached path: after its first read), as a
 * writer would while the copy runs. */
static long grow_hook;

static void grow_source(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
        return;
    for (long i = 0; i < grow_hook; i++)
        if (write(fd, "+", 1) != 1)
            break;
    close(fd);
}

static void copy_unsized(struct corio_task *t, struct fcopy *c, uint64_t off)
{
    afcp_sem_acquire(t, &afcp_me->bufs);
    char *buf = afcp_buf_get();
    if (!buf)
        fail(c, -ENOMEM, 0);
    while (buf && !c->err) {
        ssize_t n;
        if (c->stream) {
            n = read((int)afs_file_fd(c->in), buf, afcp.o.chunk_size);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                n = -errno;
        } else {
            n = afs_pread(c->in, buf, afcp.o.chunk_size, off);
        }
        if (n < 0) {
            fail(c, (int)n, 0);
            break;
        }
        if (n == 0)
            break;
        int err = write_out(c, buf, off, (size_t)n);
        if (err < 0) {
            fail(c, err, 1);
            break;
        }
        off += (uint64_t)n;
        afcp_add(&afcp.bytes_total, (int64_t)((uint64_t)n));
        afcp_add(&afcp.bytes_done, (int64_t)((uint64_t)n));
        c->copied += (uint64_t)n;
        if (c->stream)
            corio_yield(t); /* read(2) ran on this thread: let the others go on */
    }
    if (buf)
        afcp_buf_put(buf);
    afcp_sem_release(&afcp_me->bufs);
    c->size = off;
}

static void chunk_copy(void *c, void *buf, uint64_t off, size_t len)
{
    copy_chunk(c, buf, off, len);
}

/* copy_file_range: the kernel copies page cache to page cache (or shares extents on XFS and
 * btrfs) with no user-space copy. It is a blocking system call and asyncfs has no thread pool
 * for arbitrary calls, so it runs here on the scheduler's thread: while one call runs, no
 * other task runs and the progress bar freezes. Calls are capped at 8 MiB and the task
 * yields between them, so the other files' batches and the bar still move between calls.
 * That trade-off is why it is used only for files of at least cfr_min_size (default
 * 64 MiB) on the same file system, never with --direct, and only when --no-copy-range is
 * not given. Returns 0 when done, 1 when the kernel refused it before copying anything
 * (the caller then falls back to read/write), or a negative errno. */
static int do_copy_range(struct corio_task *t, struct fcopy *c)
{
    int ifd = (int)afs_file_fd(c->in), ofd = (int)afs_file_fd(c->out);
    uint64_t pos = 0, d = 0, h = c->size;
    int any = 0;
    while (pos < c->size) {
        /* A source with holes: its data extents only (copy_file_range writes the zeros of
         * a hole out on most file systems). */
        if (c->seek_holes && !next_extent(c, pos, c->size, &d, &h))
            break;
        loff_t off = (loff_t)(c->seek_holes ? d : pos);
        uint64_t end = c->seek_holes ? h : c->size;
        afcp_add(&afcp.bytes_done, (int64_t)((uint64_t)off - pos)); /* the hole before it */
        c->copied += (uint64_t)off - pos;
        while ((uint64_t)off < end) {
            uint64_t left = end - (uint64_t)off;
            size_t len = left < (8u << 20) ? (size_t)left : (8u << 20);
            loff_t ooff = off;
            ssize_t n = copy_file_range(ifd, &off, ofd, &ooff, len, 0);
            if (n < 0) {
                int e = errno;
                if (e == EINTR)
                    continue;
                if (!any && (e == EXDEV || e == EINVAL || e == ENOSYS || e == EOPNOTSUPP ||
                             e == EBADF)) {
                    afcp_add(&afcp.bytes_done, -(int64_t)(c->copied));
                    c->copied = 0;
                    return 1;
                }
                return -e;
            }
            if (n == 0) {
                fail(c, -ENODATA, 0); /* the source shrank */
                return 0;
            }
            any = 1;
            afcp_add(&afcp.bytes_done, (int64_t)((uint64_t)n));
            c->copied += (uint64_t)n;
            corio_yield(t);
        }
        pos = end;
    }
    afcp_add(&afcp.bytes_done, (int64_t)(c->size - pos)); /* the hole at the end */
    c->copied += c->size - pos;
    return 0;
}

/* --direct: the same inode again with O_DIRECT, through /proc/self/fd (no path walk, so
 * nothing can be swapped in). 0 and *out, or -errno (-EINVAL: the file system refuses it). */
static int reopen_direct(int fd, int flags, struct afs_file **out)
{
    if (!afcp.have_proc)
        return -ENOTSUP;
    char path[40];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return afs_open(AFCP_CTX, path, flags | AFS_DIRECT, 0, AFS_MODE_SYNC, out);
}

/* procfs, sysfs and their kind: sizes there are not the contents'. */
static int pseudo_fs(int fd)
{
    struct statfs sfs;
    if (fstatfs(fd, &sfs) < 0)
        return 0;
    switch ((unsigned long)sfs.f_type) {
    case PROC_SUPER_MAGIC: case SYSFS_MAGIC: case DEBUGFS_MAGIC: case TRACEFS_MAGIC:
    case SECURITYFS_MAGIC: case CGROUP_SUPER_MAGIC: case CGROUP2_SUPER_MAGIC:
        return 1;
    default:
        return 0;
    }
}

/* The source's descriptor: the file's (asked only when needed: it takes O_NONBLOCK off), or
 * the plain one of a FIFO or device. */
static int source_fd(struct afs_file *in, int fd)
{
    return in ? (int)afs_file_fd(in) : fd;
}

/* Opens the source. 0: open; 1: not, reported; -errno: the open failed, not reported (j->st
 * has what stat finds there): cp opens the source after it looked at the destination and
 * printed its -v line, so the caller does those first. */
static int open_source(struct afcp_file_job *j, struct fcopy *c)
{
    /* A FIFO or device named on the command line is opened as cp opens it (a FIFO waits
     * for its writer); O_NONBLOCK otherwise: one swapped in after the walk cannot block. */
    mode_t type = j->st.st_mode & S_IFMT;
    int flags = AFS_RDONLY | (type == S_IFREG ? AFS_NONBLOCK : 0) |
                (j->follow ? 0 : AFS_NOFOLLOW);
    struct afs_stat ast;
    struct afs_file *in = NULL;
    int fd = -1, err;
    if (type == S_IFIFO || type == S_IFCHR) {
        /* A plain blocking open on this thread: io_uring opens with O_NONBLOCK first, and a
         * FIFO opened so reads EOF before its writer comes. */
        fd = openat(j->sd->sfd, j->sname, O_RDONLY | O_CLOEXEC | (j->follow ? 0 : O_NOFOLLOW));
        err = fd < 0 ? -errno : afs_statx(AFCP_CTX, fd, "", AFS_AT_EMPTY_PATH, &ast);
    } else {
        /* The open and the file in one: its fstat is the look at what was opened. */
        err = afs_openat_file(AFCP_CTX, j->sd->sfd, j->sname, flags, 0, AFS_MODE_SYNC, &ast,
                              &in);
    }
    if (err < 0 && fd < 0 && err != -EISDIR) {
        /* cp looks at the source (lstat) before it opens it: where that fails too (a
         * directory that may be read but not searched, an entry gone since readdir) it says
         * so. A regular file found by readdir was not looked at yet. */
        struct stat st;
        int e = afcp_stat(j->sd->sfd, j->sname, j->follow ? 0 : AFS_AT_SYMLINK_NOFOLLOW, &st);
        if (e < 0) {
            afcp_err(e, "cannot stat '%s'", j->spath);
            return 1;
        }
        j->st = st;
        return err;
    }
    if (err < 0 || (ast.mode & S_IFMT) != type) { /* -EISDIR: a directory swapped in */
        afcp_note("cannot copy '%s': changed during the copy (no longer a regular file)",
                  j->spath);
        afcp_fail();
        if (in)
            afs_close(in);
        if (fd >= 0)
            afs_close_fd(AFCP_CTX, fd);
        return 1;
    }
    struct stat st;
    afcp_stat_from(&st, &ast);
    afcp_add(&afcp.bytes_total, (int64_t)st.st_size - (int64_t)j->st.st_size); /* walk-time size */
    j->st = st; /* the size and mode of what we actually read */
    if (j->read_before.id.ino && j->read_before.id.ino == st.st_ino &&
        j->read_before.id.dev == st.st_dev)
        j->st.st_atim = j->read_before.atim; /* as before afcp_copy_inline's read (-p) */
    c->size = (uint64_t)st.st_size;
    /* Sizes that say nothing: 0 (/proc, and an empty file costs one read more), not a
     * regular file, or a pseudo file system's (sysfs reports a page, whatever it holds).
     * Those are read until EOF. */
    c->stream = type != S_IFREG && type != S_IFBLK;
    c->unsized = type != S_IFREG || c->size == 0 ||
                 (st.st_blocks == 0 && pseudo_fs(source_fd(in, fd)));
    if (c->unsized) {
        afcp_add(&afcp.bytes_total, -(int64_t)c->size); /* counted as read */
        c->size = 0;
        j->st.st_size = 0;
    }
    /* Fewer blocks than bytes: it has holes (or compressed or inline data); its data
     * extents are found with SEEK_DATA/SEEK_HOLE and only they are copied. */
    c->seek_holes = !c->unsized && afcp.o.sparse != AFCP_SPARSE_NEVER &&
                    (uint64_t)st.st_blocks * 512 < c->size;
    /* As cp: --sparse=always makes holes of every block of zeros; auto only in a source
     * that has holes itself (a file with none is copied as it is, on the fast path). */
    c->zero_holes = afcp.o.sparse == AFCP_SPARSE_ALWAYS ||
                    (afcp.o.sparse == AFCP_SPARSE_AUTO && c->seek_holes);
    if (afcp.o.direct && !c->unsized &&
        reopen_direct(source_fd(in, fd), AFS_RDONLY, &c->in) == 0) {
        c->direct_in = 1;
        if (in)
            afs_close(in);
        else
            afs_close_fd(AFCP_CTX, fd);
        return 0;
    }
    if (in) { /* buffered (or O_DIRECT refused) */
        c->in = in;
        return 0;
    }
    /* A FIFO or device: the fd itself. */
    err = afs_file_from_fd(AFCP_CTX, fd, flags, AFS_MODE_SYNC, &c->in);
    if (err < 0) {
        afs_close_fd(AFCP_CTX, fd);
        return err;
    }
    return 0;
}

/* A directory this run made (writable by its owner only until its entries are done, so
 * nobody else can add a name to it; 0700 when -p or -a set attributes at the end) gets its
 * files under their own names, with no temporary and no rename: a rename costs about as
 * much CPU as the create and write of a small file. Until a file is complete its
 * name is in the table of temporaries, so an error or a signal removes it just the same:
 * once afcp has exited no name shows a partial copy. Not with --fsync, whose promise is
 * that a name appears only once its data is on disk. */
static int own_name(const struct afcp_dir *dd)
{
    return dd->created && !afcp.o.fsync && !afcp.o.inplace;
}

/* Opens the destination: a fresh temporary name (or, --inplace, the name itself; or in a
 * directory this run made, the name itself: own_name). A temporary replacing a file (old)
 * stays 0600 until it gets the old file's attributes. A regular file that exists (reg) is
 * written into, as --inplace and cp write it, when no temporary can be made next to it
 * (EACCES, EPERM: a directory the user may not write): cp needs only the file to be
 * writable. */
static int open_dest(struct corio_task *t, struct afcp_file_job *j, struct fcopy *c, char *tmp,
                     int tslot, int old, int reg)
{
    unsigned perm = old ? 0600 : afcp_new_mode((int)afs_file_fd(c->in), j->st.st_mode);
    int base = AFS_WRONLY | AFS_NOFOLLOW, err;
    if (c->inplace) {
        perm = afcp_new_mode((int)afs_file_fd(c->in), j->st.st_mode);
        /* cp semantics: an existing file is truncated and keeps its inode and mode. */
        err = afcp_open_file(j->dd->dfd, j->dname, base | (j->exists ? AFS_TRUNC
                                                             : AFS_CREAT | AFS_EXCL),
                          perm, &c->out);
        if (err < 0 && j->exists && afcp.o.force) {
            /* -f: remove what we could not open (read-only file, symlink) and create anew,
             * saying so as cp does. */
            int r = afs_unlinkat(AFCP_CTX, j->dd->dfd, j->dname, 0);
            if (r < 0 && r != -ENOENT) {
                afcp_err(r, "cannot remove '%s'", j->dpath);
                return -1;
            }
            afcp_vremoved(j->vn, j->dpath);
            err = afcp_open_file(j->dd->dfd, j->dname, base | AFS_CREAT | AFS_EXCL, perm, &c->out);
        }
        strcpy(tmp, "");
    } else if (own_name(j->dd)) {
        afcp_temp_set(t, tslot, j->dd->dfd, j->dname); /* removed on a signal until done */
        err = afcp_open_file(j->dd->dfd, j->dname, base | AFS_CREAT | AFS_EXCL, perm, &c->out);
        afcp_test_hook_open();
        afcp_temp_created(tslot, err == 0);
        c->own_name = 1;
        strcpy(tmp, "");
    } else {
        for (int tries = 0;; tries++) {
            afcp_tmpname(tmp);
            /* Registered before the open is queued: see "Temporaries and signals". */
            afcp_temp_set(t, tslot, j->dd->dfd, tmp);
            err = afcp_open_file(j->dd->dfd, tmp, base | AFS_CREAT | AFS_EXCL, perm, &c->out);
            afcp_test_hook_open();
            afcp_temp_created(tslot, err == 0);
            if (err != -EEXIST || tries > 100)
                break;
        }
        if ((err == -EACCES || err == -EPERM) && reg) {
            c->inplace = 1;
            return open_dest(t, j, c, tmp, tslot, 0, 0);
        }
    }
    if (err < 0) {
        afcp_err(err, "cannot create regular file '%s'", j->dpath);
        return -1;
    }
    if (j->dd->plain && !old && !(c->inplace && j->exists))
        afcp_plain_mode((int)afs_file_fd(c->out), perm & ~afcp.umask, j->dpath);
    /* --direct: the new inode again with O_DIRECT; a file system that refuses it keeps the
     * buffered handle (a fallback per file, not an error). */
    struct afs_file *d;
    if (afcp.o.direct && !c->unsized &&
        reopen_direct((int)afs_file_fd(c->out), AFS_WRONLY, &d) == 0) {
        afs_close(c->out);
        c->out = d;
        c->direct_out = 1;
    }
    return 0;
}

/* --preserve, in cp's order: times, owner and group (afcp_own: when they cannot be kept,
 * setuid/setgid bits go, as cp drops them), extended attributes, mode and ACL. Times that
 * cannot be set (another user's file written into) end it there, as they end cp's. On the
 * open fd, after the last write. */
static void preserve(struct afcp_file_job *j, int ifd, int fd)
{
    int p = afcp.o.preserve;
    struct timespec ts[2] = {j->st.st_atim, j->st.st_mtim};
    if ((p & AFCP_P_TIMES) && futimens(fd, ts) < 0) {
        afcp_err(errno, "preserving times for '%s'", j->dpath);
        return;
    }
    int owner_kept = (p & AFCP_P_OWNER) && afcp_own(fd, -1, NULL, &j->st, 1, j->dpath);
    /* After the owner: a chown clears security.capability (as cp orders them). */
    if (p & AFCP_P_XATTR)
        afcp_xattr_copy(ifd, fd, j->dpath);
    mode_t mode = afcp_kept_mode(j->st.st_mode, owner_kept);
    if (!(p & AFCP_P_MODE))
        ;
    else if (fchmod(fd, mode) < 0)
        afcp_err(errno, "preserving permissions for '%s'", j->dpath);
    else
        afcp_acl_copy(ifd, fd, 0, mode, j->dpath);
}

/* ------------------------------------------------------------------------------------------
 * Hard links (--preserve=links, -a, -d): the first name of a source inode with more than one
 * link is copied (a file, a symlink, a FIFO or a device: cp links them all); every later
 * name of it within the copy becomes a hard link to that copy. Following symlinks (-L, and
 * cp's default without -r; -H for the operands) every file is recorded, as cp records it:
 * a file and a symlink to it, both copied, become one inode. A later name found while the
 * first copy is still in flight (on this scheduler or another) waits for it, looking again
 * every millisecond (names of one inode are few; a future could not be awaited across
 * schedulers). When the first copy failed, the later name is copied on its own (as cp
 * does).
 * ---------------------------------------------------------------------------------------- */
struct link_ent {
    dev_t               dev;
    ino_t               ino;
    char               *dpath;  /* the first copy's name, as written on the command line */
    int                 state;  /* 0: in flight, 1: in place, -1: failed (atomic) */
    struct link_ent    *next;
};
enum { LINK_BUCKETS = 4096 };
static struct link_ent *links[LINK_BUCKETS];
static int              links_lock; /* the table is shared by the schedulers: a spin lock
                                       around a lookup (and an insert), nothing longer */

static void links_acquire(void)
{
    while (__atomic_exchange_n(&links_lock, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&links_lock, __ATOMIC_RELAXED))
            ;
}

static void links_release(void)
{
    __atomic_store_n(&links_lock, 0, __ATOMIC_RELEASE);
}

/* Under links_lock. */
static struct link_ent **link_slot(dev_t dev, ino_t ino)
{
    uint64_t h = ((uint64_t)ino * 0x9E3779B97F4A7C15ull) ^ (uint64_t)dev;
    struct link_ent **p = &links[(h >> 20) % LINK_BUCKETS];
    while (*p && ((*p)->dev != dev || (*p)->ino != ino))
        p = &(*p)->next;
    return p;
}

int afcp_links_track(const struct stat *st, int operand)
{
    if (!(afcp.o.preserve & AFCP_P_LINKS) || S_ISDIR(st->st_mode))
        return 0;
    int deref_always = afcp.o.deref == 'L' || (!afcp.o.deref && !afcp.o.recursive);
    return st->st_nlink > 1 || deref_always || (afcp.o.deref == 'H' && operand);
}

/* The entry of st's inode, made (*first = 1, dpath its copy) when there is none. Not first:
 * waits for the first copy and returns its entry; when that copy failed, this name becomes
 * the first (cp forgets a failed copy: the inode's other names still share one). */
static struct link_ent *link_claim(struct corio_task *t, const struct stat *st, const char *dpath,
                                   int *first)
{
    for (;;) {
        links_acquire();
        struct link_ent **slot = link_slot(st->st_dev, st->st_ino), *le = *slot;
        *first = !le;
        if (!le) {
            le = afcp_xmalloc(sizeof *le);
            *le = (struct link_ent){.dev = st->st_dev, .ino = st->st_ino,
                                    .dpath = afcp_xstrdup(dpath)};
            *slot = le;
        } else if (__atomic_load_n(&le->state, __ATOMIC_ACQUIRE) == -1) {
            /* The first copy failed: this name becomes the first. */
            free(le->dpath);
            le->dpath = afcp_xstrdup(dpath);
            __atomic_store_n(&le->state, 0, __ATOMIC_RELEASE);
            *first = 1;
        }
        links_release();
        if (*first)
            return le;
        while (__atomic_load_n(&le->state, __ATOMIC_ACQUIRE) == 0)
            corio_sleep(t, 1000000);
        if (__atomic_load_n(&le->state, __ATOMIC_ACQUIRE) == 1)
            return le;
    }
}

void afcp_link_done(struct link_ent *le, int ok)
{
    __atomic_store_n(&le->state, ok ? 1 : -1, __ATOMIC_RELEASE);
}

/* Whether dname in dfd is already a name of le's copy (a copy made before, links and all). */
static int linked_already(int dfd, const char *dname, const struct link_ent *le)
{
    struct stat a, b;
    return fstatat(dfd, dname, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
           fstatat(AT_FDCWD, le->dpath, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
           a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* dname in dd becomes a hard link to le's copy (an existing name replaced atomically; -v's
 * "removed" line as cp's). 0 or -1 (reported). */
static int make_link(struct corio_task *t, struct afcp_dir *dd, const char *dname,
                     const char *dpath, uint64_t vn, const struct link_ent *le)
{
    int dfd = dd->dfd, err = 0;
    if (linkat(AT_FDCWD, le->dpath, dfd, dname, 0) == 0)
        return 0;
    err = -errno;
    /* A link there already: nothing to do (a rename between two names of one file does
     * nothing and would leave the temporary behind). */
    if (err == -EEXIST && linked_already(dfd, dname, le))
        return 0;
    if (err == -EEXIST && !afcp.o.noclobber) {
        char tmp[16];
        int tslot = afcp_temp_get(t);
        for (int tries = 0;; tries++) {
            afcp_tmpname(tmp);
            afcp_temp_set(t, tslot, dfd, tmp);
            int r = linkat(AT_FDCWD, le->dpath, dfd, tmp, 0);
            err = r == 0 ? 0 : -errno;
            afcp_temp_created(tslot, r == 0);
            if (err != -EEXIST || tries > 100)
                break;
        }
        if (err == 0) {
            afcp_temp_hold(t);
            err = afcp_install(dfd, tmp, dname);
            /* Gone when the rename replaced dname; still there when it failed, or when dname
             * became a name of the same file meanwhile (the rename then does nothing). */
            if (err != 0 || linked_already(dfd, tmp, le))
                unlinkat(dfd, tmp, 0);
            if (err == 0)
                afcp_vremoved(vn, dpath);
        }
        afcp_temp_put(tslot);
        if (err == 1)
            return 0; /* -n: something appeared meanwhile; it stays */
    }
    if (err < 0) {
        afcp_err(err, "cannot create hard link '%s' to '%s'", dpath, le->dpath);
        return -1;
    }
    return 0;
}

int afcp_link_earlier(struct corio_task *t, struct afcp_dir *dd, const char *dname,
                      const char *dpath, uint64_t vn, const struct stat *st, int operand,
                      struct link_ent **first)
{
    *first = NULL;
    if (!afcp_links_track(st, operand))
        return 0;
    int is_first;
    struct link_ent *le = link_claim(t, st, dpath, &is_first);
    if (is_first)
        *first = le;
    if (is_first || !le)
        return 0;
    return make_link(t, dd, dname, dpath, vn, le) == 0 ? 1 : -1;
}

int afcp_link_kept(struct corio_task *t, struct afcp_dir *dd, const char *dname,
                   const char *dpath, uint64_t vn, const struct stat *st, int operand)
{
    struct link_ent *le;
    int r = afcp_link_earlier(t, dd, dname, dpath, vn, st, operand, &le);
    if (le)
        afcp_link_done(le, 1);
    return r < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------
 * Reflinks (--reflink=auto, the default, and always): FICLONE shares the source's extents
 * (btrfs, XFS, bcachefs...). A pair of file systems that refused it once is not asked again
 * with auto (cp asks for every file). 0: cloned, 1: not cloned (copy the data), -1: failed
 * and reported (always).
 * ---------------------------------------------------------------------------------------- */
/* The pairs refused are afcp_me's (no_clone: one table per scheduler). */
static int clone_fd(int ifd, int ofd, dev_t from, dev_t to, const char *spath,
                    const char *dpath)
{
    if (afcp.o.reflink == AFCP_REFLINK_AUTO) {
        if (from != to)
            return 1; /* a clone never crosses file systems */
        for (unsigned i = 0; i < afcp_me->no_clone_n; i++)
            if (afcp_me->no_clone[i].from == from && afcp_me->no_clone[i].to == to)
                return 1;
    }
    if (ioctl(ofd, FICLONE, ifd) == 0)
        return 0;
    int e = errno;
    if (afcp.o.reflink == AFCP_REFLINK_ALWAYS) {
        afcp_err(e, "failed to clone '%s' from '%s'", dpath, spath);
        return -1;
    }
    if ((e == EOPNOTSUPP || e == ENOTTY || e == EXDEV || e == EINVAL || e == ENOSYS) &&
        afcp_me->no_clone_n < sizeof afcp_me->no_clone / sizeof afcp_me->no_clone[0]) {
        afcp_me->no_clone[afcp_me->no_clone_n].from = from;
        afcp_me->no_clone[afcp_me->no_clone_n++].to = to;
    }
    return 1;
}

static int try_clone(struct fcopy *c)
{
    struct afcp_file_job *j = c->job;
    /* --reflink=always asks for a clone of every file, an empty one too (cp's fails where
     * the file system cannot clone, as for any other). */
    if (afcp.o.reflink == AFCP_REFLINK_NEVER || c->direct_in || c->direct_out ||
        (c->unsized && afcp.o.reflink != AFCP_REFLINK_ALWAYS))
        return 1;
    int r = clone_fd((int)afs_file_fd(c->in), (int)afs_file_fd(c->out), j->st.st_dev,
                     j->dd->ddev, j->spath, j->dpath);
    if (r == 0) {
        afcp_add(&afcp.bytes_done, (int64_t)(c->size));
        c->copied += c->size;
    }
    return r;
}

static void report(struct fcopy *c)
{
    struct afcp_file_job *j = c->job;
    if (c->err_side == 2)
        ; /* reported where it happened */
    else if (c->err == -ENODATA && c->err_side == 0)
        afcp_note("error reading '%s': file shrank during the copy", j->spath);
    else if (c->err && c->err_side == 3) /* cp's words when its copy_file_range fails */
        afcp_err(-c->err, "error copying '%s' to '%s'", j->spath, j->dpath);
    else if (c->err)
        afcp_err(-c->err, c->err_side ? "error writing '%s'" : "error reading '%s'",
                 c->err_side ? j->dpath : j->spath);
    if (c->err)
        afcp_fail();
}

/* A device or FIFO at the destination is written into, as cp does, never replaced: opened
 * (not created, not truncated) and written from its start, in order, with write(2) (a FIFO
 * or a terminal has no offsets, and asyncfs files are regular files or block devices). It
 * gets no attributes (-p) and no temporary. When the peer of a FIFO is slow, the write
 * blocks the whole copy, as it would block cp. 0 when copied, -1 when reported. */
static int copy_to_special(struct corio_task *t, struct fcopy *c, const struct afcp_old *old)
{
    struct afcp_file_job *j = c->job;
    int fd = afs_openat(AFCP_CTX, j->dd->dfd, j->dname, AFS_WRONLY | AFS_NOFOLLOW, 0);
    if (fd == -ENXIO && S_ISFIFO(old->st.st_mode)) {
        /* io_uring tries the open with O_NONBLOCK first, and a FIFO without a reader then
         * answers ENXIO instead of waiting: wait for the reader here, as cp would. */
        fd = openat(j->dd->dfd, j->dname, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            fd = -errno;
    }
    if (fd < 0) {
        afcp_err(fd, "cannot open '%s' for writing", j->dpath);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_dev != old->st.st_dev || st.st_ino != old->st.st_ino) {
        afcp_note("cannot copy to '%s': changed during the copy", j->dpath);
        afcp_fail();
        close(fd);
        return -1;
    }
    afcp_sem_acquire(t, &afcp_me->bufs);
    void *buf = afcp_buf_get();
    if (!buf)
        fail(c, -ENOMEM, 0);
    /* A source whose size says nothing (a FIFO, /proc) is read until its end. */
    for (uint64_t off = 0; buf && !c->err && (c->unsized || off < c->size);) {
        size_t len;
        if (c->unsized) {
            ssize_t n = c->stream ? read((int)afs_file_fd(c->in), buf, afcp.o.chunk_size)
                                  : afs_pread(c->in, buf, afcp.o.chunk_size, off);
            if (n < 0 && c->stream && errno == EINTR)
                continue;
            if (n < 0) {
                fail(c, c->stream ? -errno : (int)n, 0);
                break;
            }
            if (n == 0)
                break;
            len = (size_t)n;
            afcp_add(&afcp.bytes_total, (int64_t)len);
        } else {
            uint64_t left = c->size - off;
            len = left < afcp.o.chunk_size ? (size_t)left : afcp.o.chunk_size;
            ssize_t n = afs_pread(c->in, buf, c->direct_in ? (size_t)round_up(len) : len, off);
            if (n < 0 || (size_t)n < len) {
                fail(c, n < 0 ? (int)n : -ENODATA, 0);
                break;
            }
        }
        for (size_t done = 0; done < len;) {
            ssize_t w = write(fd, (char *)buf + done, len - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                fail(c, -errno, 1);
                break;
            }
            done += (size_t)w;
        }
        off += len;
        afcp_add(&afcp.bytes_done, (int64_t)(len));
        c->copied += len;
    }
    if (buf)
        afcp_buf_put(buf);
    afcp_sem_release(&afcp_me->bufs);
    if (close(fd) < 0 && !c->err)
        fail(c, -errno, 1);
    report(c);
    return c->err ? -1 : 0;
}

static int write_all(int fd, const char *buf, size_t len, off_t off);

/* The rename of a complete temporary over an existing regular file was refused (a sticky
 * directory and another user's file): its data goes into that file instead, truncated and
 * written, as cp writes it (which needs only the file to be writable), with what -p takes
 * from the source (the temporary has it). Plain system calls: a rare path. Then the
 * temporary goes. 0 or -errno (reported by the caller; the file may be partial then, as
 * cp's would be); *not_opened: the file could not be opened for writing. */
static int write_over(struct afcp_file_job *j, const char *tmp, const struct stat *old,
                      int *not_opened)
{
    int dfd = j->dd->dfd, err = 0;
    int in = openat(dfd, tmp, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    /* Not truncated before it is known to be the file looked at (the directory is another
     * user's to change: a FIFO swapped in must not block us, nor another file be cut). */
    int out = in < 0 ? -1
                     : openat(dfd, j->dname, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st, ost;
    *not_opened = in >= 0 && out < 0;
    if (in < 0 || out < 0 || fstat(in, &st) < 0 || fstat(out, &ost) < 0) {
        err = -errno;
        goto done;
    }
    if (!S_ISREG(ost.st_mode) || ost.st_dev != old->st_dev || ost.st_ino != old->st_ino) {
        err = -EEXIST; /* replaced since it was looked at: left alone */
        goto done;
    }
    if (fcntl(out, F_SETFL, 0) < 0 || ftruncate(out, 0) < 0) {
        err = -errno;
        goto done;
    }
    enum { OVER_BUF = 256u << 10 };
    char *b = afcp_xmalloc(OVER_BUF);
    for (off_t off = 0; off < st.st_size;) {
        ssize_t n = pread(in, b, OVER_BUF, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? -errno : -ENODATA;
            break;
        }
        if ((err = write_all(out, b, (size_t)n, off)) < 0)
            break;
        off += n;
    }
    free(b);
    if (!err && (afcp.o.preserve & (AFCP_P_ATTRS | AFCP_P_XATTR)))
        preserve(j, in, out);
    if (!err && afcp.o.fsync && fdatasync(out) < 0)
        err = -errno;
done:
    if (out >= 0 && close(out) < 0 && !err)
        err = -errno;
    if (in >= 0)
        close(in);
    if (!err)
        unlinkat(dfd, tmp, 0);
    return err;
}

static void file_task(struct corio_task *t, void *arg)
{
    struct afcp_file_job *j = arg;
    struct fcopy c = {.job = j};
    char tmp[16] = "";
    int ok = 0, slot_held = 1, tslot = -1;
    struct link_ent *le = NULL; /* --preserve=links: this inode's first copy */
    uint64_t walk_size = (uint64_t)j->st.st_size; /* counted in bytes_total by the walker */
    uint64_t prev_vn = afcp_vtask(t, j->vn); /* what it reports goes with its lines */
    unsigned fd_tries = 0;
    int opened;
    do
        opened = open_source(j, &c);
    while (opened < 0 && afcp_fd_wait(opened, 1, &fd_tries));
    if (opened != 0) {
        /* cp looks at the destination (and prints its -v line) before it opens the source,
         * and reports what it finds there first. */
        if (opened < 0 && afcp_check_dest(j->dd, j->dname, j->sd, j->sname, j->spath,
                                          j->dpath, &j->st, AFCP_DEST_FILE, j->follow, j->vn,
                                          &j->exists) == 0)
            afcp_err(opened, "cannot open '%s' for reading", j->spath);
        afcp_add(&afcp.bytes_total, -(int64_t)walk_size);
        goto out;
    }
    if (grow_hook > 0 && !c.unsized)
        grow_source(j->spath);
    /* What is at the destination name (afcp_check_dest prints -v's line). */
    int there = afcp_check_dest(j->dd, j->dname, j->sd, j->sname, j->spath, j->dpath, &j->st,
                                AFCP_DEST_FILE, j->follow, j->vn, &j->exists);
    if (there != 0) {
        afcp_add(&afcp.bytes_total, -(int64_t)(c.size));
        afs_close(c.in);
        if (there == 2 && S_ISREG(j->st.st_mode))
            afcp_link_kept(t, j->dd, j->dname, j->dpath, j->vn, &j->st, j->operand);
        goto out;
    }
    /* What is there: a file whose attributes the copy takes over, or a device or FIFO to
     * write into (never replaced). */
    /* Another name of an inode this copy already has (or is making): a hard link to it. */
    /* (Empty files too: cp keeps their links.) */
    int linked = !S_ISREG(j->st.st_mode) ? 0
                                         : afcp_link_earlier(t, j->dd, j->dname, j->dpath, j->vn,
                                                             &j->st, j->operand, &le);
    if (linked != 0) {
        afs_close(c.in);
        afcp_add(&afcp.bytes_total, -(int64_t)(c.size));
        ok = linked > 0;
        goto out;
    }
    struct afcp_old old = {0};
    int have_old = 0, f_removes = 0;
    if (j->exists) {
        int r = afcp_old_get(j->dd, j->dname, &old), stop = 1;
        int kind = old.st.st_mode & S_IFMT;
        if (r == -ENOENT) {
            j->exists = 0;
            stop = 0;
        } else if (r < 0) {
            afcp_err(r, "cannot stat '%s'", j->dpath);
        } else if (kind == S_IFCHR || kind == S_IFBLK || kind == S_IFIFO) {
            if (copy_to_special(t, &c, &old) == 0)
                ok = 1;
        } else if (kind == S_IFSOCK && !afcp.o.force) {
            /* cp's open of a socket fails so; with -f it removes it and makes a file. */
            afcp_err(ENXIO, "cannot create regular file '%s'", j->dpath);
        } else {
            /* The copy takes over the old file's attributes when cp would have written
             * into it: when the user may write it (with -f cp removes one it cannot
             * open, says so, and makes a new file, with the source's mode; so it does
             * with a socket, and with a symlink to what it may not write). */
            int writable = kind != S_IFSOCK &&
                           faccessat(j->dd->dfd, j->dname, W_OK, AT_EACCESS) == 0;
            have_old = kind == S_IFREG && !afcp.o.inplace && (!afcp.o.force || writable);
            f_removes = afcp.o.force && !afcp.o.inplace && !writable;
            stop = 0;
        }
        if (stop) {
            if (!ok) {
                afcp_add(&afcp.bytes_done, -(int64_t)(c.copied));
                afcp_add(&afcp.bytes_total, -(int64_t)(c.size));
            }
            afcp_old_free(&old);
            afs_close(c.in);
            goto out;
        }
    }
    c.inplace = afcp.o.inplace;
    if (!c.inplace)
        tslot = afcp_temp_get(t); /* so that a signal can remove the temporary */
    if (open_dest(t, j, &c, tmp, tslot, have_old,
                  j->exists && S_ISREG(old.st.st_mode)) < 0) {
        afcp_old_free(&old);
        afcp_add(&afcp.bytes_total, -(int64_t)(c.size));
        afs_close(c.in);
        goto out;
    }

    int done = 0;
    if (c.size > 0 || afcp.o.reflink == AFCP_REFLINK_ALWAYS) {
        int r = try_clone(&c);
        if (r < 0) {
            c.err = -1;
            c.err_side = 2; /* reported */
            afcp_fail();
        }
        done = r <= 0;
    }
    if (done) {
    } else if (c.unsized) {
        copy_unsized(t, &c, 0);
        done = 1;
    } else if (c.size > 0 && afcp.o.copy_range && !afcp.o.direct && !c.zero_holes &&
               c.size >= afcp.o.cfr_min_size &&
               j->st.st_dev == j->dd->ddev) {
        int r = do_copy_range(t, &c);
        if (r < 0)
            fail(&c, r, 3);
        done = r <= 0;
    }
    if (!done && c.size > 0) {
        struct afcp_chunks k = {.size = c.size, .c = &c, .copy = chunk_copy, .err = &c.err,
                                .err_side = &c.err_side};
        afcp_chunks_run(t, &k);
    }
    int ofd = (int)afs_file_fd(c.out);
    struct stat now;
    /* The source's size now, once, unless the last read found the end at the size. Grown
     * while we copied it: the rest up to its end, as cp reads to the end (not under O_DIRECT,
     * whose reads would need aligned offsets). Shrunk: SEEK_DATA took the missing end for a
     * hole (the plain reads fail by themselves). */
    if (!c.err && !c.unsized && !c.end_seen && fstat((int)afs_file_fd(c.in), &now) == 0) {
        if ((uint64_t)now.st_size > c.size && !c.direct_in && !c.direct_out)
            copy_unsized(t, &c, c.size);
        else if ((uint64_t)now.st_size < c.size && c.seek_holes)
            fail(&c, -ENODATA, 0);
    }
    /* The size: holes at the end were never written, O_DIRECT padded the last block. */
    if (!c.err && (c.seek_holes || c.direct_out || c.zero_holes) &&
        ftruncate(ofd, (off_t)c.size) < 0)
        fail(&c, -errno, 1);
    int grouped = !c.err && afcp.o.fsync && !c.inplace && c.size < GROUP_FSYNC_MIN;
    if (!c.err && afcp.o.fsync && !afcp.o.inplace && !grouped) {
        int r = afs_fsync(c.out, AFS_FSYNC_DATA);
        if (r < 0)
            fail(&c, r, 1);
    }
    /* An overwritten file keeps its owner, group, mode and ACL (cp writes into it), but for
     * what --preserve asks to take from the source (set over it by preserve()). */
    if (!c.err && have_old && !c.inplace &&
        (afcp.o.preserve & (AFCP_P_OWNER | AFCP_P_MODE)) != (AFCP_P_OWNER | AFCP_P_MODE))
        afcp_old_apply(ofd, &old, j->dpath);
    if (!c.err && (afcp.o.preserve & (AFCP_P_ATTRS | AFCP_P_XATTR)))
        preserve(j, (int)afs_file_fd(c.in), ofd);
    struct stat old_st = old.st;
    afcp_old_free(&old);
    int r = afs_close(c.out);
    if (r < 0)
        fail(&c, r, 1);
    afs_close(c.in);
    if (grouped && !c.err) {
        slot_held = 0;
        if ((r = group_wait(t, j->dd)) < 0)
            fail(&c, r, 1);
    }
    report(&c);
    if (c.err) {
        /* No partial file is left under a name that looks complete, but a file that was
         * there and was written in place (--inplace, or no temporary could replace it)
         * stays, as cp leaves it: its name, links and mode are the user's. */
        if (!c.inplace || !j->exists)
            afs_unlinkat(AFCP_CTX, j->dd->dfd, c.inplace || c.own_name ? j->dname : tmp, 0);
        afcp_fail();
        afcp_add(&afcp.bytes_done, -(int64_t)c.copied); /* the bar counts what was copied for good */
        afcp_add(&afcp.bytes_total, -(int64_t)(c.size));
        goto out;
    }
    if (!c.inplace && !c.own_name) {
        afcp_temp_hold(t); /* a signal came: the temporary is gone, the process goes */
        r = afcp_install(j->dd->dfd, tmp, j->dname);
        int not_opened = 0, renamed = r == 0;
        if ((r == -EACCES || r == -EPERM) && j->exists && S_ISREG(old_st.st_mode)) {
            int refused = r; /* a sticky directory, another's file */
            r = write_over(j, tmp, &old_st, &not_opened);
            if (not_opened && afcp.o.force) /* cp -f removes what it cannot open: refused */
                r = refused;
        }
        if (r < 0 && not_opened && afcp.o.force) {
            afcp_err(-r, "cannot remove '%s'", j->dpath);
            afs_unlinkat(AFCP_CTX, j->dd->dfd, tmp, 0);
            goto out;
        }
        if (r < 0) {
            afcp_err(-r, "cannot create regular file '%s'", j->dpath);
            afs_unlinkat(AFCP_CTX, j->dd->dfd, tmp, 0);
            goto out;
        }
        if (r == 1)
            goto out; /* -n: something appeared meanwhile; it stays */
        if (renamed && f_removes) /* replaced, where cp removed it and said so */
            afcp_vremoved(j->vn, j->dpath);
    }
    ok = 1;
out:
    if (le) {
        afcp_link_done(le, ok);
    }
    afcp_vend(j->vn);
    afcp_vtask(t, prev_vn);
    if (tslot >= 0)
        afcp_temp_put(tslot); /* renamed or removed by now */
    afcp_add(&afcp.files_done, 1);
    afcp_dir_put(j->sd);
    if (j->dd != j->sd)
        afcp_dir_put(j->dd);
    free(j->sname);
    free(j->dname);
    free(j->spath);
    free(j->dpath);
    free(j);
    if (slot_held)
        slot_release();
}

/* ------------------------------------------------------------------------------------------
 * Cached trees: one file at a time with plain system calls, in the walker.
 *
 * On a tree in the page cache every system call of a copy is a short memory copy, and the
 * batches above only add the cost of a task and of a trip through the ring for each (the
 * kernel's workers run the opens, creates and renames of a batch). So while the tree answers
 * from the cache, the walker copies each small regular file itself, as cp does: open,
 * fstat, read, create the temporary, write, close, rename. Whether the tree answers from the
 * cache is measured on every such file, not assumed: the first read is a preadv2 with
 * RWF_NOWAIT, which returns EAGAIN instead of waiting for the disk (where a file system
 * refuses RWF_NOWAIT, a plain read is timed instead; wall-clock times are the weaker signal
 * on a busy machine, so they are not used otherwise). A miss hands the file to a file
 * task, turns afcp_me->inline_io off, and the next files go through the batches; one file in
 * probe_gap is then tried inline again (the gap doubles after each miss, up to 4096 files,
 * and comes back to 8 on a hit), so a copy that reaches a cached part of a cold tree, or a
 * warm tree whose first files were cold, changes path by itself. On a cold tree the probe's
 * open waits for the disk in the walker (the reads in flight go on meanwhile): one file in
 * thousands once the gap has grown.
 * Files that need more than the plain path (a destination that exists, holes, hard links
 * with --preserve=links, --fsync, --inplace, --direct, --sparse=always, --reflink=always)
 * go to a file task whatever the mode.
 * ---------------------------------------------------------------------------------------- */
enum { INLINE_BUF = 256u << 10, INLINE_MAX = 4u << 20, PROBE_MIN = 8, PROBE_MAX = 4096 };
#define INLINE_SLOW_NS 200000 /* without RWF_NOWAIT: a read this long waited for the disk */

/* Each scheduler measures for itself (afcp_me: inline_io, probe_gap, probe_left,
 * nowait_broken, inline_buf). */
static int inline_never;  /* AFCP_TEST_PATH=batch */
static int inline_always; /* AFCP_TEST_PATH=inline */
static int inline_giveup; /* AFCP_TEST_PATH=giveup */

/* Tests only: AFCP_TEST_PATH=batch sends every file through the file tasks, whatever the
 * measurement says, so that the tests run both paths on their (cached) fixtures;
 * AFCP_TEST_PATH=inline takes every read as a cache hit (plain reads, never timed), so that
 * instruction counts (valgrind) see the cached path whatever the cache holds;
 * AFCP_TEST_PATH=giveup reads each file's first block inline, then takes it for a miss (as a
 * read that waited for the disk) and gives the file to a file task. */
void afcp_test_path(const char *path)
{
    if (path && !strcmp(path, "giveup"))
        inline_giveup = 1;
    if (path && !strcmp(path, "batch"))
        inline_never = 1;
    if (path && !strcmp(path, "inline"))
        inline_always = 1;
}

/* A scheduler's state before its first task (the main thread, before the run). */
void afcp_sched_init(struct afcp_sched *s, int index)
{
    unsigned n = afcp.nsched;
    unsigned jobs = (afcp.o.jobs + n - 1) / n;
    unsigned bufs = 2 * afcp.o.chunk_workers;
    s->index = index;
    afcp_sem_init(&s->files, (long)jobs);
    s->files_cap = jobs;
    afcp_sem_init(&s->bufs, jobs > bufs ? jobs : bufs);
    s->inline_io = !inline_never; /* until a read says otherwise */
    s->probe_gap = PROBE_MIN;
}

/* At the end, on s's own thread (its context is still there): its buffers go. */
void afcp_sched_free(struct afcp_sched *s)
{
    while (s->buf_free) {
        void *b = s->buf_free;
        s->buf_free = *(void **)b;
        afs_buf_free(s->ctx, b, afcp.o.chunk_size);
    }
    free(s->inline_buf);
    s->inline_buf = NULL;
}

static void inline_miss(void)
{
    struct afcp_sched *me = afcp_me;
    me->inline_io = 0;
    me->probe_left = me->probe_gap;
    if (me->probe_gap < PROBE_MAX)
        me->probe_gap *= 2;
}

static void inline_hit(void)
{
    afcp_me->inline_io = 1;
    afcp_me->probe_gap = PROBE_MIN;
}

/* A read that must not wait for the disk: bytes, or -EAGAIN when the data is not cached. */
static ssize_t read_cached(int fd, void *buf, size_t len, off_t off)
{
    if (inline_always) {
        ssize_t n = pread(fd, buf, len, off);
        return n < 0 ? -errno : n;
    }
    if (!afcp_me->nowait_broken) {
        struct iovec iov = {buf, len};
#if defined(__GLIBC__)
        ssize_t n = preadv2(fd, &iov, 1, off, RWF_NOWAIT);
#else /* C libraries without preadv2 (musl before 1.2.5): the offset as two longs, low first */
        ssize_t n = syscall(SYS_preadv2, fd, &iov, 1, (unsigned long)off,
                            (unsigned long)(((uint64_t)off >> 16) >> 16), RWF_NOWAIT);
#endif
        if (n >= 0 || errno == EAGAIN)
            return n >= 0 ? n : -EAGAIN;
        if (errno != EOPNOTSUPP && errno != EINVAL && errno != ENOSYS)
            return -errno;
        afcp_me->nowait_broken = 1;
    }
    int64_t t0 = corio_now();
    ssize_t n = pread(fd, buf, len, off);
    if (n < 0)
        return -errno;
    return corio_now() - t0 > INLINE_SLOW_NS ? -EAGAIN : n;
}

static int write_all(int fd, const char *buf, size_t len, off_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, buf, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        buf += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

int afcp_copy_inline(struct corio_task *t, struct afcp_dir *sd, const char *sname,
                       struct afcp_dir *dd, const char *dname, const char *spath,
                       const char *dpath, int follow, int operand, uint64_t vn,
                       struct afcp_atime *before)
{
    const struct afcp_opts *o = &afcp.o;
    if (o->inplace || o->direct || o->fsync || o->sparse == AFCP_SPARSE_ALWAYS ||
        o->reflink == AFCP_REFLINK_ALWAYS)
        return 1;
    struct afcp_sched *me = afcp_me;
    if (inline_never || (!me->inline_io && me->probe_left && --me->probe_left))
        return 1;
    if (!me->inline_buf)
        me->inline_buf = afcp_xmalloc(INLINE_BUF);
    char *inline_buf = me->inline_buf;
    int fd = openat(sd->sfd, sname, O_RDONLY | O_NONBLOCK | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    if (fd < 0)
        return 1; /* the file task reports it */
    struct stat st;
    int give = fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > INLINE_MAX ||
               (uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size ||
               afcp_links_track(&st, operand);
    if (give) {
        close(fd);
        return 1;
    }
    if (!dd->created) {
        struct stat dst;
        if (fstatat(dd->dfd, dname, &dst, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT) {
            close(fd);
            return 1; /* something is there: the file task decides what happens to it */
        }
    }
    /* A read may change the atime (relatime): the file task that takes the file if it is
     * given up below keeps the one from before, as -p must. */
    *before = (struct afcp_atime){{st.st_dev, st.st_ino}, st.st_atim};
    /* The first block of data, or (empty by its size) proof that there is none: a size of
     * 0 says nothing on /proc and the like, which the file task reads until EOF. */
    size_t first = st.st_size < INLINE_BUF ? (size_t)st.st_size : INLINE_BUF;
    /* A byte more where the buffer has room: a file that grew since the fstat goes to the
     * file task, which reads to the end. */
    size_t ask = first < INLINE_BUF ? first + 1 : first;
    ssize_t n = read_cached(fd, inline_buf, ask, 0);
    if (inline_giveup && n >= 0)
        n = -EAGAIN;
    if (n == -EAGAIN || (first && n >= 0 && (size_t)n != first) || (!first && n != 0)) {
        close(fd);
        if (n == -EAGAIN)
            inline_miss();
        return 1;
    }
    if (n < 0) {
        close(fd);
        return 1; /* the file task reports it */
    }
    inline_hit();

    struct afcp_file_job job = {.sd = sd, .dd = dd, .spath = (char *)spath,
                                .dpath = (char *)dpath, .st = st};
    afcp_add(&afcp.files_total, 1);
    afcp_add(&afcp.bytes_total, (int64_t)((uint64_t)st.st_size));
    char tmpbuf[16];
    const int own = own_name(dd);
    const char *tmp = own ? dname : tmpbuf;
    int tslot = afcp_temp_get(t), ofd = -1, err = 0, side = 1;
    afcp_vline(vn, spath, dpath); /* nothing is there: cp's line comes before its open */
    unsigned perm = afcp_new_mode(fd, st.st_mode), fd_tries = 0;
    for (int tries = 0;; tries++) {
        if (!own)
            afcp_tmpname(tmpbuf);
        afcp_temp_set(t, tslot, dd->dfd, tmp);
        ofd = openat(dd->dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, perm);
        err = ofd < 0 ? -errno : 0;
        afcp_test_hook_open();
        afcp_temp_created(tslot, ofd >= 0);
        if (afcp_fd_wait(err, 0, &fd_tries))
            continue;
        if (own || err != -EEXIST || tries > 100)
            break;
    }
    if (err < 0) {
        afcp_err(err, "cannot create regular file '%s'", dpath);
        goto fail_tmp;
    }
    if (dd->plain)
        afcp_plain_mode(ofd, perm & ~afcp.umask, dpath);
    uint64_t off = 0, size = (uint64_t)st.st_size;
    int cloned = 0;
    if (size && o->reflink == AFCP_REFLINK_AUTO &&
        clone_fd(fd, ofd, st.st_dev, dd->ddev, spath, dpath) == 0) {
        off = size;
        cloned = 1;
        afcp_add(&afcp.bytes_done, (int64_t)(size));
    }
    if (grow_hook > 0 && size > INLINE_BUF)
        grow_source(spath);
    int grew = 0;
    while (!err && off < size) {
        if (off) { /* the rest of a file larger than the buffer */
            size_t len = size - off < INLINE_BUF ? (size_t)(size - off) : INLINE_BUF;
            /* The last piece asks a byte more where the buffer has room: a file that grew
             * meanwhile is read on to its end below. */
            int last = off + len == size && len < INLINE_BUF;
            n = read_cached(fd, inline_buf, len + last, (off_t)off);
            if (last && n == (ssize_t)len + 1) {
                grew = 1;
                n = (ssize_t)len;
            }
            if (n == -EAGAIN || (n >= 0 && (size_t)n < len)) {
                /* Not (all) in the cache: the rest of this file with plain reads, the next
                 * files through the batches. */
                inline_miss();
                for (size_t got = n < 0 ? 0 : (size_t)n;; got += (size_t)n) {
                    n = got < len ? pread(fd, inline_buf + got, len - got, (off_t)(off + got))
                                  : 0;
                    if (n < 0 && errno == EINTR)
                        continue;
                    if (n <= 0) {
                        n = n < 0 ? -errno : (ssize_t)got;
                        break;
                    }
                }
            }
            if (n >= 0 && (size_t)n < len)
                n = -ENODATA; /* shrank */
            if (n < 0) {
                err = (int)n;
                side = 0;
                break;
            }
        }
        err = write_all(ofd, inline_buf, (size_t)n, (off_t)off);
        off += (uint64_t)n;
        afcp_add(&afcp.bytes_done, (int64_t)((uint64_t)n));
    }
    /* A last piece that filled the buffer had no room for the byte more: one read at the
     * end says whether the file grew. */
    if (!err && !cloned && size && size % INLINE_BUF == 0)
        grew = 1;
    while (!err && grew) { /* to the end it has now, as cp reads */
        n = pread(fd, inline_buf, INLINE_BUF, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? -errno : 0;
            side = 0;
            break;
        }
        err = write_all(ofd, inline_buf, (size_t)n, (off_t)off);
        off += (uint64_t)n;
        afcp_add(&afcp.bytes_total, (int64_t)((uint64_t)n));
        afcp_add(&afcp.bytes_done, (int64_t)((uint64_t)n));
    }
    if (!err && (o->preserve & (AFCP_P_ATTRS | AFCP_P_XATTR)))
        preserve(&job, fd, ofd);
    if (close(ofd) < 0 && !err)
        err = -errno;
    if (err < 0) {
        if (err == -ENODATA && side == 0)
            afcp_note("error reading '%s': file shrank during the copy", spath);
        else
            afcp_err(err, side ? "error writing '%s'" : "error reading '%s'",
                     side ? dpath : spath);
        afcp_fail();
        unlinkat(dd->dfd, tmp, 0);
        afcp_add(&afcp.bytes_done, -(int64_t)(off));
        goto fail_tmp;
    }
    afcp_temp_hold(t); /* a signal came: the temporary is gone, the process goes */
    err = own ? 0 : afcp_install(dd->dfd, tmp, dname);
    if (err < 0) {
        afcp_err(err, "cannot create regular file '%s'", dpath);
        unlinkat(dd->dfd, tmp, 0);
    }
fail_tmp:
    afcp_vend(vn);
    afcp_temp_put(tslot);
    close(fd);
    afcp_add(&afcp.files_done, 1);
    /* The walker does not suspend on this path: now and then let the file tasks still in
     * flight and the progress bar run. */
    if (++me->since_yield % 64 == 0 && (me->copying || afcp.progress))
        corio_yield(t);
    return 0;
}

void afcp_spawn_file(struct corio_task *t, struct afcp_file_job *job)
{
    afcp_add(&afcp.files_total, 1);
    afcp_add(&afcp.bytes_total, (int64_t)((uint64_t)job->st.st_size));
    afcp_sem_acquire(t, &afcp_me->files);
    afcp_me->copying++;
    afcp_add(&afcp.files_busy, 1);
    afcp_dir_get(job->sd);
    if (job->dd != job->sd)
        afcp_dir_get(job->dd);
    if (corio_spawn(t, file_task, job, NULL) < 0)
        file_task(t, job); /* no stack left: copy it in the walker itself */
}

/* ------------------------------------------------------------------------------------------
 * Temporaries and signals. Every temporary that may exist is in `temps`, a table allocated
 * once (never moved, so a signal handler on any thread may read it), cut into one range of
 * slots per scheduler (only its thread takes and gives back its slots). A name is
 * registered (CREATING) before the call that creates it is made or queued: an open in
 * flight in the kernel (an io_uring or thread-pool worker) may create the file at any
 * moment until its task sees the result, which then marks the slot EXISTS (or FREE when the
 * create failed).
 * On SIGINT, SIGTERM, SIGHUP or SIGPIPE (-v into a pipe whose reader left: `afcp -rv | head`;
 * the library's own pipe writes never raise it) the handler (on whatever thread the kernel
 * picks) removes
 * every registered name with unlinkat() (async-signal-safe; ENOENT when the create has not
 * happened yet) and dies of the signal as it would have, unless a create is still in
 * flight: then it only marks the process as dying and returns. From then on no task starts
 * a create or a rename (they park), and the task that sees the last create in flight come
 * back, on any scheduler, removes every name again and raises the signal. A task marks its
 * slot CREATING before it looks at `dying`, and the handler sets `dying` before it looks at
 * the slots (both sequentially consistent): so either the task sees the signal and creates
 * nothing, or the handler sees the create coming. A half-written or unsynced copy never
 * stays behind, not even under a temporary name, whichever schedulers are busy. A
 * scheduler's range has room for its files in flight plus TEMPS_WAITING files waiting for
 * their syncfs round; a task waits for a slot (afcp_temp_get) when it is full. A signal
 * ignored when afcp started (nohup, a background job) stays ignored.
 * ---------------------------------------------------------------------------------------- */
enum { TEMP_FREE, TEMP_CREATING, TEMP_EXISTS };

struct temp {
    volatile sig_atomic_t state; /* TEMP_*: the handler reads it */
    int                   dfd;
    char                  name[NAME_MAX + 1]; /* a temporary, or a file under its own name */
    int                   taken; /* the slot belongs to a task (its scheduler's thread only) */
};

static struct temp          *temps;
static unsigned              ntemps;
static volatile sig_atomic_t dying; /* the signal being handled, once one came */
/* Test hook: AFCP_TEST_SIGNAL=SIG:N raises SIG when the N-th destination open returns, in
 * its task, before the task looks at the result (see tests/afcp/test_afcp_fix.sh). */
static int      hook_sig;
static unsigned hook_at, hook_count;

/* Removes every registered name; returns how many creates may still be in flight. Runs in
 * the handler (any thread) or on a scheduler's thread once dying. */
static unsigned unlink_temps(void)
{
    unsigned creating = 0;
    for (unsigned i = 0; i < ntemps; i++) {
        int st = __atomic_load_n(&temps[i].state, __ATOMIC_SEQ_CST);
        if (st != TEMP_FREE)
            unlinkat(temps[i].dfd, temps[i].name, 0);
        creating += st == TEMP_CREATING;
    }
    return creating;
}

static void die(int sig)
{
    signal(sig, SIG_DFL);
    raise(sig);
}

static void on_signal(int sig)
{
    afcp_signalled = 1;
    __atomic_store_n(&dying, sig, __ATOMIC_SEQ_CST);
    if (unlink_temps() == 0)
        die(sig);
}

/* Once dying: a create in flight has come back (on a scheduler's thread, signals blocked
 * there so that the handler does not run in the middle); the last one raises the signal. */
static void dying_check(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int sig = __atomic_load_n(&dying, __ATOMIC_SEQ_CST);
    if (unlink_temps() == 0) {
        signal(sig, SIG_DFL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        raise(sig);
        /* Another thread may hold the signal blocked just now: the default action still
         * ends the process once it is delivered. */
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void afcp_signals_init(void)
{
    unsigned per = (afcp.o.jobs + afcp.nsched - 1) / afcp.nsched + TEMPS_WAITING;
    ntemps = per * afcp.nsched;
    temps = calloc(ntemps, sizeof *temps);
    if (!temps) {
        fputs("afcp: out of memory\n", stderr);
        exit(1);
    }
    for (unsigned i = 0; i < afcp.nsched; i++) {
        struct afcp_sched *s = &afcp.scheds[i];
        s->temp_base = i * per;
        s->temp_n = per;
        afcp_sem_init(&s->temps, (long)per);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART; /* the handler may return (see above) */
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGHUP);
    sigaddset(&sa.sa_mask, SIGPIPE);
    /* A file-size limit (ulimit -f): the write that passes it fails with EFBIG, reported for
     * that file as any write error, where SIGXFSZ would end the copy and leave temporaries
     * (and a write in the kernel's workers gets EFBIG without the signal anyway). */
    signal(SIGXFSZ, SIG_IGN);
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        /* A signal ignored by whoever started us (nohup, a background job) stays ignored. */
        struct sigaction old;
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN)
            sigaction(sigs[i], &sa, NULL);
    }
    const char *grow = getenv("AFCP_TEST_GROW");
    if (grow)
        grow_hook = strtol(grow, NULL, 10);
    const char *hook = getenv("AFCP_TEST_SIGNAL");
    if (hook) {
        static const char *const names[] = {"INT", "TERM", "HUP", "PIPE"};
        for (unsigned i = 0; i < 4; i++) {
            size_t n = strlen(names[i]);
            if (!strncmp(hook, names[i], n) && hook[n] == ':') {
                hook_sig = sigs[i];
                hook_at = (unsigned)strtoul(hook + n + 1, NULL, 10);
            }
        }
    }
}

void afcp_test_hook_open(void)
{
    if (hook_sig && __atomic_add_fetch(&hook_count, 1, __ATOMIC_RELAXED) == hook_at)
        raise(hook_sig);
}

/* Parks t for good: the process is dying (the future is external, so a scheduler whose
 * tasks all park here waits for the end instead of reporting a deadlock). */
static void park(struct corio_task *t)
{
    struct afcp_sched *me = afcp_me;
    if (!me->never_ready) {
        corio_future_init_external(&me->never, corio_task_sched(t));
        me->never_ready = 1;
    }
    corio_future_await_shielded(t, &me->never, NULL); /* until the process dies */
}

void afcp_temp_hold(struct corio_task *t)
{
    if (__atomic_load_n(&dying, __ATOMIC_SEQ_CST))
        park(t);
}

int afcp_temp_get(struct corio_task *t)
{
    struct afcp_sched *me = afcp_me;
    afcp_sem_acquire(t, &me->temps);
    while (temps[me->temp_base + me->temp_next].taken) /* the semaphore promises a free slot */
        me->temp_next = (me->temp_next + 1) % me->temp_n;
    temps[me->temp_base + me->temp_next].taken = 1;
    return (int)(me->temp_base + me->temp_next);
}

void afcp_temp_set(struct corio_task *t, int i, int dfd, const char *name)
{
    afcp_temp_hold(t); /* no new create once dying */
    temps[i].dfd = dfd;
    size_t n = strlen(name);
    if (n >= sizeof temps[i].name)
        n = sizeof temps[i].name - 1;
    memcpy(temps[i].name, name, n);
    temps[i].name[n] = 0;
    __atomic_store_n(&temps[i].state, TEMP_CREATING, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&dying, __ATOMIC_SEQ_CST)) {
        /* The signal came in between (on another thread): nothing is created. The handler
         * may have counted this slot as a create in flight; it is not one any more. */
        afcp_temp_created(i, 0);
        park(t);
    }
}

void afcp_temp_created(int i, int created)
{
    __atomic_store_n(&temps[i].state, created ? TEMP_EXISTS : TEMP_FREE, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&dying, __ATOMIC_SEQ_CST))
        dying_check();
}

void afcp_temp_put(int i)
{
    __atomic_store_n(&temps[i].state, TEMP_FREE, __ATOMIC_SEQ_CST);
    temps[i].taken = 0;
    afcp_sem_release(&afcp_me->temps);
}
