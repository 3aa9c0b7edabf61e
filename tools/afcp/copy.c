/* afcp: copying one regular file, as a corio task.
 *
 * Opening, and why through /proc/self/fd. asyncfs's afs_open() takes a path, not a directory
 * fd plus a name. afcp still resolves every name relative to the directory fds the walker
 * opened with O_NOFOLLOW, by handing afs_open() "/proc/self/fd/<dirfd>/<name>": the kernel
 * jumps to the very directory that fd refers to (the magic link is not a path walk), then
 * looks up <name> in it. So:
 *  - destination: O_CREAT|O_EXCL|O_NOFOLLOW on "/proc/self/fd/<dfd>/.afcp.XXXXXX" creates a
 *    new inode in exactly that directory, or fails; no symlink is followed (O_EXCL refuses
 *    one at the last component, the directory fd pins every component above). The mode
 *    given to open() is the source's & 0777 (the umask applies); it is never widened later,
 *    except by -p to the source's own mode. The file appears under its real name only via
 *    renameat() on the same directory fd, after the data is written and fdatasync'ed.
 *  - source: openat(sfd, name, O_NOFOLLOW|O_NONBLOCK) first (O_NONBLOCK: a FIFO swapped in
 *    after the walk cannot block us), fstat() that fd and refuse anything but a regular
 *    file, then afs_open("/proc/self/fd/<fd>") re-opens that same inode: no window between
 *    the check and the open.
 * Without /proc (a chroot, some containers) afcp falls back to plain paths with AFS_EXCL and
 * AFS_NOFOLLOW: the last component is still safe, but a directory above it that is swapped
 * for a symlink during the copy could redirect the write (the classic TOCTOU); afcp then
 * checks the source it opened against the inode it checked and refuses a mismatch.
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
 * slot (the next files start) and joins the current commit group; when no file task is left
 * copying data, or the group reaches GROUP_MAX files, the task that noticed calls syncfs()
 * once per file system of the group, and only then does every member rename its temporary
 * into place. syncfs is a blocking call on the scheduler's thread (asyncfs has no async
 * syncfs): every task waits while it runs, which is what a group commit means anyway. Large
 * files (>= GROUP_FSYNC_MIN) keep their own fdatasync through asyncfs, in the phase batch. */
#define _GNU_SOURCE
#include "afcp.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { DIO_ALIGN = 4096, GROUP_MAX = 1024 };
#define GROUP_FSYNC_MIN (8u << 20)

struct group {
    struct corio_future done;   /* result: 0 or the first syncfs error */
    unsigned            members, left;
    int                 fds[8]; /* one directory fd per file system (dup'ed) */
    dev_t               devs[8];
    unsigned            nfs;
};

static struct group *cur_group;
static unsigned      copying; /* file tasks holding a slot */

static void group_commit(void)
{
    struct group *g = cur_group;
    cur_group = NULL;
    int err = 0;
    for (unsigned i = 0; i < g->nfs; i++) {
        if (syncfs(g->fds[i]) < 0 && !err)
            err = -errno;
        close(g->fds[i]);
    }
    corio_future_complete(&g->done, err, NULL);
}

/* Gives the slot back; commits the group when nothing else is copying. */
static void slot_release(void)
{
    copying--;
    afcp_sem_release(&afcp.files);
    if (cur_group && (copying == 0 || cur_group->members >= GROUP_MAX))
        group_commit();
}

/* Joins the current group with the destination directory dd, releases the slot, waits until
 * the group's data is on disk. Returns 0 or the syncfs error. */
static int group_wait(struct corio_task *t, struct afcp_dir *dd)
{
    if (!cur_group) {
        cur_group = calloc(1, sizeof *cur_group);
        if (!cur_group) {
            slot_release();
            return -ENOMEM;
        }
        corio_future_init(&cur_group->done);
    }
    struct group *g = cur_group;
    unsigned i = 0;
    while (i < g->nfs && g->devs[i] != dd->ddev)
        i++;
    if (i == g->nfs) {
        int fd = i < 8 ? dup(dd->dfd) : -1;
        if (fd < 0) {
            group_commit(); /* too many file systems in one group: commit this one first */
            return group_wait(t, dd);
        }
        g->fds[g->nfs] = fd;
        g->devs[g->nfs++] = dd->ddev;
    }
    g->members++;
    g->left++;
    slot_release();
    int r = corio_future_await_shielded(t, &g->done, NULL);
    if (--g->left == 0)
        free(g);
    return r;
}

struct fcopy {
    struct afcp_file_job *job;
    struct afs_file      *in, *out;
    uint64_t              size, next_chunk, nchunks;
    int                   err;      /* first error, negative */
    int                   err_side; /* 0 read, 1 write */
    int                   direct_in, direct_out;
    uint64_t              copied;
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

/* One chunk: read it, write it. A read shorter than the size we saw means the file shrank
 * while we copied: an error, never a silently shorter copy. */
static void copy_chunk(struct fcopy *c, void *buf, uint64_t off, size_t len)
{
    size_t rlen = c->direct_in ? (size_t)round_up(len) : len;
    ssize_t n = afs_pread(c->in, buf, rlen, off);
    if (n < 0)
        return fail(c, (int)n, 0);
    if ((size_t)n < len)
        return fail(c, -ENODATA, 0);
    /* O_DIRECT writes whole blocks; the padding past the end is cut by ftruncate later. */
    size_t wlen = c->direct_out ? (size_t)round_up(len) : len;
    if (wlen > len)
        memset((char *)buf + len, 0, wlen - len);
    n = afs_pwrite(c->out, buf, wlen, off);
    if (n < 0)
        return fail(c, (int)n, 1);
    afcp.bytes_done += len;
    c->copied += len;
}

static void chunk_loop(struct corio_task *t, struct fcopy *c)
{
    afcp_sem_acquire(t, &afcp.bufs);
    void *buf = afcp_buf_get();
    if (!buf) {
        fail(c, -ENOMEM, 0);
    } else {
        while (!c->err && c->next_chunk < c->nchunks) {
            uint64_t off = c->next_chunk++ * afcp.o.chunk_size;
            uint64_t left = c->size - off;
            copy_chunk(c, buf, off, left < afcp.o.chunk_size ? (size_t)left : afcp.o.chunk_size);
        }
        afcp_buf_put(buf);
    }
    afcp_sem_release(&afcp.bufs);
}

static void chunk_worker(struct corio_task *t, void *arg)
{
    chunk_loop(t, arg);
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
    loff_t off = 0;
    while ((uint64_t)off < c->size) {
        uint64_t left = c->size - (uint64_t)off;
        size_t len = left < (8u << 20) ? (size_t)left : (8u << 20);
        loff_t ooff = off;
        ssize_t n = copy_file_range(ifd, &off, ofd, &ooff, len, 0);
        if (n < 0) {
            int e = errno;
            if (e == EINTR)
                continue;
            if (off == 0 && (e == EXDEV || e == EINVAL || e == ENOSYS || e == EOPNOTSUPP ||
                             e == EBADF))
                return 1;
            return -e;
        }
        if (n == 0)
            return -ENODATA; /* the source shrank */
        afcp.bytes_done += (uint64_t)n;
        c->copied += (uint64_t)n;
        corio_yield(t);
    }
    return 0;
}

static int open_in_dir(struct afcp_dir *d, const char *name, int flags, unsigned perm,
                       struct afs_file **out)
{
    char buf[64], *path = buf;
    if (afcp.have_proc && strlen(name) < sizeof buf - 32)
        snprintf(buf, sizeof buf, "/proc/self/fd/%d/%s", d->dfd, name);
    else if (afcp.have_proc) {
        path = afcp_xmalloc(strlen(name) + 32);
        sprintf(path, "/proc/self/fd/%d/%s", d->dfd, name);
    } else {
        path = afcp_join(d->dpath, name);
    }
    int err = afs_open(afcp.ctx, path, flags, perm, AFS_MODE_SYNC, out);
    if (path != buf)
        free(path);
    return err;
}

static int open_source(struct afcp_file_job *j, struct fcopy *c)
{
    int fd = openat(j->sd->sfd, j->sname,
                    O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | (j->follow ? 0 : O_NOFOLLOW));
    if (fd < 0) {
        afcp_err(errno, "cannot open '%s' for reading", j->spath);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        afcp_note("cannot copy '%s': changed during the copy (no longer a regular file)",
                  j->spath);
        afcp.status = 1;
        close(fd);
        return -1;
    }
    afcp.bytes_total += (uint64_t)st.st_size - (uint64_t)j->st.st_size; /* walk-time size */
    j->st = st; /* the size and mode of what we actually read */
    c->size = (uint64_t)st.st_size;
    int err = -ENOENT;
    char path[40];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    for (int direct = afcp.o.direct; direct >= 0; direct--) {
        int flags = AFS_RDONLY | (direct ? AFS_DIRECT : 0);
        if (afcp.have_proc) {
            err = afs_open(afcp.ctx, path, flags, 0, AFS_MODE_SYNC, &c->in);
        } else {
            char *p = afcp_join(j->sd->spath, j->sname);
            err = afs_open(afcp.ctx, p, flags | (j->follow ? 0 : AFS_NOFOLLOW), 0,
                           AFS_MODE_SYNC, &c->in);
            free(p);
            struct stat st2;
            if (err == 0 && (fstat((int)afs_file_fd(c->in), &st2) < 0 ||
                             st2.st_ino != st.st_ino || st2.st_dev != st.st_dev)) {
                afs_close(c->in);
                err = -ESTALE;
            }
        }
        c->direct_in = direct;
        if (err != -EINVAL || !direct)
            break; /* EINVAL with O_DIRECT: this file system refuses it; go buffered */
    }
    close(fd);
    if (err < 0) {
        afcp_err(-err, "cannot open '%s' for reading", j->spath);
        return -1;
    }
    return 0;
}

/* Opens the destination: a fresh temporary name (or, --inplace, the name itself). */
static int open_dest(struct afcp_file_job *j, struct fcopy *c, char *tmp)
{
    unsigned perm = j->st.st_mode & 0777;
    int base = AFS_WRONLY | AFS_NOFOLLOW, err;
    if (afcp.o.inplace) {
        /* cp semantics: an existing file is truncated and keeps its inode and mode. */
        err = open_in_dir(j->dd, j->dname, base | (j->exists ? AFS_TRUNC
                                                             : AFS_CREAT | AFS_EXCL),
                          perm, &c->out);
        if (err < 0 && j->exists && afcp.o.force) {
            /* -f: remove what we could not open (read-only file, symlink) and create anew. */
            if (unlinkat(j->dd->dfd, j->dname, 0) < 0 && errno != ENOENT) {
                afcp_err(errno, "cannot remove '%s'", j->dpath);
                return -1;
            }
            err = open_in_dir(j->dd, j->dname, base | AFS_CREAT | AFS_EXCL, perm, &c->out);
        }
        strcpy(tmp, "");
    } else {
        for (int tries = 0;; tries++) {
            afcp_tmpname(tmp);
            err = open_in_dir(j->dd, tmp, base | AFS_CREAT | AFS_EXCL, perm, &c->out);
            if (err != -EEXIST || tries > 100)
                break;
        }
    }
    if (err < 0) {
        afcp_err(-err, "cannot create regular file '%s'", j->dpath);
        return -1;
    }
    /* --direct: re-open the new inode with O_DIRECT through /proc; a file system that
     * refuses it keeps the buffered handle (a fallback per file, not an error). */
    if (afcp.o.direct && afcp.have_proc) {
        char path[40];
        struct afs_file *d;
        snprintf(path, sizeof path, "/proc/self/fd/%d", (int)afs_file_fd(c->out));
        if (afs_open(afcp.ctx, path, AFS_WRONLY | AFS_DIRECT, 0, AFS_MODE_SYNC, &d) == 0) {
            afs_close(c->out);
            c->out = d;
            c->direct_out = 1;
        }
    }
    return 0;
}

/* -p: owner (root only; otherwise setuid/setgid bits go, as cp does when it cannot keep the
 * owner), mode, times. On the open fd, after the last write. */
static void preserve(struct afcp_file_job *j, int fd)
{
    mode_t mode = j->st.st_mode & 07777;
    int owner_kept = 0;
    if (afcp.is_root)
        owner_kept = fchown(fd, j->st.st_uid, j->st.st_gid) == 0;
    else if (j->st.st_uid == geteuid())
        owner_kept = fchown(fd, (uid_t)-1, j->st.st_gid) == 0;
    if (!owner_kept)
        mode &= 01777;
    if (fchmod(fd, mode) < 0)
        afcp_err(errno, "preserving permissions for '%s'", j->dpath);
    struct timespec ts[2] = {j->st.st_atim, j->st.st_mtim};
    if (futimens(fd, ts) < 0)
        afcp_err(errno, "preserving times for '%s'", j->dpath);
}

static void file_task(struct corio_task *t, void *arg)
{
    struct afcp_file_job *j = arg;
    struct fcopy c = {.job = j};
    char tmp[16] = "";
    int ok = 0, slot_held = 1;
    if (open_source(j, &c) < 0) {
        afcp.bytes_total -= (uint64_t)j->st.st_size;
        goto out;
    }
    if (open_dest(j, &c, tmp) < 0) {
        afcp.bytes_total -= c.size;
        afs_close(c.in);
        goto out;
    }

    int done = 0;
    if (c.size > 0 && afcp.o.copy_range && !afcp.o.direct && c.size >= afcp.o.cfr_min_size &&
        j->st.st_dev == j->dd->ddev) {
        int r = do_copy_range(t, &c);
        if (r < 0)
            fail(&c, r, 1);
        done = r <= 0;
    }
    if (!done && c.size > 0) {
        c.nchunks = (c.size + afcp.o.chunk_size - 1) / afcp.o.chunk_size;
        unsigned helpers = c.nchunks < afcp.o.chunk_workers ? (unsigned)c.nchunks
                                                            : afcp.o.chunk_workers;
        for (unsigned i = 1; i < helpers; i++)
            if (corio_spawn(t, chunk_worker, &c, NULL) < 0)
                break;
        chunk_loop(t, &c);
        corio_wait(t); /* the helpers use c, on this frame */
    }
    int ofd = (int)afs_file_fd(c.out);
    if (!c.err && c.direct_out && (c.size % DIO_ALIGN) && ftruncate(ofd, (off_t)c.size) < 0)
        fail(&c, -errno, 1);
    int grouped = !c.err && afcp.o.fsync && !afcp.o.inplace && c.size < GROUP_FSYNC_MIN;
    if (!c.err && afcp.o.fsync && !afcp.o.inplace && !grouped) {
        int r = afs_fsync(c.out, AFS_FSYNC_DATA);
        if (r < 0)
            fail(&c, r, 1);
    }
    if (!c.err && afcp.o.preserve)
        preserve(j, ofd);
    int r = afs_close(c.out);
    if (r < 0)
        fail(&c, r, 1);
    afs_close(c.in);
    if (grouped && !c.err) {
        slot_held = 0;
        if ((r = group_wait(t, j->dd)) < 0)
            fail(&c, r, 1);
    }
    if (c.err == -ENODATA && c.err_side == 0)
        afcp_note("error reading '%s': file shrank during the copy", j->spath);
    else if (c.err)
        afcp_err(-c.err, c.err_side ? "error writing '%s'" : "error reading '%s'",
                 c.err_side ? j->dpath : j->spath);
    if (c.err) {
        /* No partial file is left under a name that looks complete. */
        unlinkat(j->dd->dfd, afcp.o.inplace ? j->dname : tmp, 0);
        afcp.status = 1;
        afcp.bytes_done -= c.copied; /* the bar counts what was copied for good */
        afcp.bytes_total -= c.size;
        goto out;
    }
    if (!afcp.o.inplace) {
        r = afcp_install(j->dd->dfd, tmp, j->dname);
        if (r < 0) {
            afcp_err(-r, "cannot create regular file '%s'", j->dpath);
            unlinkat(j->dd->dfd, tmp, 0);
            goto out;
        }
        if (r == 1)
            goto out; /* -n: something appeared meanwhile; it stays */
    }
    ok = 1;
    if (afcp.o.verbose)
        afcp_verbose("'%s' -> '%s'", j->spath, j->dpath);
out:
    (void)ok;
    afcp.files_done++;
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

void afcp_spawn_file(struct corio_task *t, struct afcp_file_job *job)
{
    afcp_sem_acquire(t, &afcp.files);
    copying++;
    afcp_dir_get(job->sd);
    if (job->dd != job->sd)
        afcp_dir_get(job->dd);
    if (corio_spawn(t, file_task, job, NULL) < 0)
        file_task(t, job); /* no stack left: copy it in the walker itself */
}
