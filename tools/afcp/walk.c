/* afcp: directories, symlinks and special files. The walker is one task per command-line
 * operand; it reads each directory, sorts the entries by inode number (on a cold cache that
 * turns the inode and data reads into mostly ascending disk order) and hands regular files to
 * file tasks, at most `jobs` in flight. A regular file (d_type DT_REG) goes to its task
 * without being looked at here: the task stats what it opened, and 64 tasks' stats and opens
 * share the phase batches. Other entries (and file systems without d_type) are stat'ed by the
 * walker with afs_statx(); directories are opened and made with afs_openat()/afs_mkdirat().
 * Symlinks, special files and readdir itself are plain system calls (rare, or with no
 * asynchronous form).
 *
 * Every name is resolved relative to a directory fd opened with O_NOFOLLOW|O_DIRECTORY, so a
 * directory swapped for a symlink during the copy is not followed on either side. */
#define _GNU_SOURCE
#include "afcp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

/* A getdents64 record as the kernel writes it (C libraries differ in how they name it: musl
 * has no struct dirent64 of its own and no getdents64 without _LARGEFILE64_SOURCE). */
struct kdirent64 {
    uint64_t       d_ino;
    int64_t        d_off;
    unsigned short d_reclen;
    unsigned char  d_type;
    char           d_name[];
};
#define AFCP_RENAME_NOREPLACE 1u /* <linux/fs.h>; renameat2 is not in every C library */

void afcp_dir_get(struct afcp_dir *d)
{
    __atomic_fetch_add(&d->refs, 1, __ATOMIC_RELAXED);
}

/* The final mode of a directory afcp made, without --preserve=mode: the source's bits (or
 * cp's defaults) less the umask; mkdir keeps the sticky bit, as cp's does. */
static mode_t made_dir_mode(int sfd, mode_t st_mode)
{
    return (afcp_new_mode(sfd, st_mode) & ~afcp.umask) | (st_mode & S_ISVTX);
}

/* The bits of a new directory's mode (new_mode: what it is to have, the umask still to
 * apply) that cp leaves out when it makes it under a default ACL (copy.c's
 * omitted_permissions): write for group and others (all their bits when the owner is to be
 * set). It adds back only those the umask would not remove (dir_finish). */
static mode_t inherit_omitted(mode_t new_mode)
{
    return new_mode & (afcp.o.preserve & AFCP_P_OWNER ? (mode_t)(S_IRWXG | S_IRWXO)
                                                       : (mode_t)(S_IWGRP | S_IWOTH));
}

/* A finished directory's attributes, in cp's order: times, owner, extended attributes, mode.
 * Times that cannot be set (another user's directory copied into) end it there, as they end
 * cp's. */
static void dir_attrs(struct afcp_dir *d)
{
    int p = afcp.o.preserve;
    struct timespec ts[2] = {d->st.st_atim, d->st.st_mtim};
    if ((p & AFCP_P_TIMES) && futimens(d->dfd, ts) < 0) {
        afcp_err(errno, "preserving times for '%s'", d->dpath);
        return;
    }
    int owner_kept = (p & AFCP_P_OWNER) && afcp_own(d->dfd, -1, NULL, &d->st, 1, d->dpath);
    if (p & AFCP_P_XATTR) /* after the owner, as for files */
        afcp_xattr_copy(d->sfd, d->dfd, d->dpath);
    /* A set-group-ID bit the directory has (its own, or from a set-group-ID parent)
     * stays: new entries keep taking its group, as after cp. */
    mode_t sgid = d->dmode & S_ISGID;
    mode_t mode = afcp_kept_mode(d->st.st_mode, owner_kept) | sgid;
    if (p & AFCP_P_MODE) {
        if (fchmod(d->dfd, mode) < 0)
            afcp_err(errno, "preserving permissions for '%s'", d->dpath);
        else
            afcp_acl_copy(d->sfd, d->dfd, 1, mode, d->dpath);
    } else if (d->created && !d->inherit &&
               fchmod(d->dfd, made_dir_mode(d->sfd, d->st.st_mode) | sgid) < 0) {
        afcp_err(errno, "setting permissions for '%s'", d->dpath);
    } else if (d->created && d->inherit && afcp.o.default_mode) {
        /* --no-preserve=mode: no access ACL from the default one, cp's defaults less the
         * umask (cp's set_acl after its mkdir). */
        afcp_plain_mode(d->dfd, made_dir_mode(-1, d->st.st_mode) | sgid, d->dpath);
    } else if (d->created && d->inherit) {
        /* Made under a default ACL without the bits cp omits: those the umask would
         * keep come back (as cp's chmod after its mkdir). */
        mode_t add = inherit_omitted(afcp_new_mode(d->sfd, d->st.st_mode)) & ~afcp.umask;
        if ((add & ~d->dmode) && fchmod(d->dfd, (d->dmode & 07777) | add) < 0)
            afcp_err(errno, "setting permissions for '%s'", d->dpath);
    }
}

/* The last reference: the directory's entries are all copied, so its final mode and (with
 * -p) owner and times can be set; a directory we created was writable by its owner only
 * until now (0700 with -p or -a: see filling_mode), so nobody else could add entries to it
 * while we filled it. */
static void dir_finish(struct afcp_dir *d)
{
    /* What it reports goes after its entries' lines, as cp's (-v: its end's number). */
    struct corio_task *t = corio_current();
    uint64_t prev = afcp_vtask(t, d->end_vn);
    if (d->finalize && d->dfd >= 0)
        dir_attrs(d);
    /* --fsync: every entry renamed into this directory (and every directory made in it) is
     * in place now; the directory itself makes them durable. Its own entry in its parent is
     * synced when the parent finishes, which holds a reference until then. */
    if (afcp.o.fsync && !afcp.o.inplace && d->dfd >= 0 && fsync(d->dfd) < 0)
        afcp_err(errno, "error syncing '%s'", *d->dpath ? d->dpath : ".");
    afcp_vtask(t, prev);
    afcp_vend(d->end_vn);
    if (d->sfd >= 0)
        close(d->sfd);
    if (d->dfd >= 0)
        close(d->dfd);
}

void afcp_dir_put(struct afcp_dir *d)
{
    /* A loop, not recursion: the last file of a deep tree may end a thousand directories. */
    while (d && __atomic_sub_fetch(&d->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        dir_finish(d);
        struct afcp_dir *p = d->parent;
        free(d->spath);
        free(d->dpath);
        free(d);
        d = p;
    }
}

/* The metadata calls of the walker and the file tasks: plain system calls while the tree
 * answers from the cache (afcp_me->inline_io, measured in copy.c), asyncfs's batched ops
 * otherwise. flags: AFS_AT_* (stat), AFS_RENAME_* (rename). 0 or -errno. */
int afcp_stat(int dirfd, const char *name, int flags, struct stat *out)
{
    if (afcp_me->inline_io) {
        int f = (flags & AFS_AT_SYMLINK_NOFOLLOW ? AT_SYMLINK_NOFOLLOW : 0) |
                (flags & AFS_AT_EMPTY_PATH ? AT_EMPTY_PATH : 0);
        return fstatat(dirfd, name, out, f) == 0 ? 0 : -errno;
    }
    struct afs_stat ast;
    int err = afs_statx(AFCP_CTX, dirfd, name, flags, &ast);
    if (err == 0)
        afcp_stat_from(out, &ast);
    return err;
}

static int open_dir(int dirfd, const char *name, int nofollow)
{
    unsigned tries = 0;
    int fd;
    do {
        if (afcp_me->inline_io) {
            fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC |
                                         (nofollow ? O_NOFOLLOW : 0));
            fd = fd >= 0 ? fd : -errno;
        } else {
            fd = afs_openat(AFCP_CTX, dirfd, name,
                            AFS_RDONLY | AFS_DIRECTORY | (nofollow ? AFS_NOFOLLOW : 0), 0);
        }
    } while (afcp_fd_wait(fd, 0, &tries));
    return fd;
}

static int make_dir(int dirfd, const char *name, mode_t mode)
{
    if (afcp_me->inline_io)
        return mkdirat(dirfd, name, mode) == 0 ? 0 : -errno;
    return afs_mkdirat(AFCP_CTX, dirfd, name, mode);
}

int afcp_unlink(int dirfd, const char *name)
{
    if (afcp_me->inline_io)
        return unlinkat(dirfd, name, 0) == 0 ? 0 : -errno;
    return afs_unlinkat(AFCP_CTX, dirfd, name, 0);
}

static int rename_in(int dfd, const char *from, const char *to, unsigned flags)
{
    if (afcp_me->inline_io)
        return syscall(SYS_renameat2, dfd, from, dfd, to,
                       flags & AFS_RENAME_NOREPLACE ? AFCP_RENAME_NOREPLACE : 0u) == 0 ? 0 : -errno;
    return afs_renameat(AFCP_CTX, dfd, from, dfd, to, flags);
}

/* Moves tmp over name. rename() replaces a symlink at `name` itself and never follows it.
 * With -n, RENAME_NOREPLACE keeps an existing name (it may have appeared since we checked);
 * file systems without it get link()+unlink(), which fails with EEXIST just the same. */
int afcp_install(int dfd, const char *tmp, const char *name)
{
    if (!afcp.o.noclobber)
        return rename_in(dfd, tmp, name, 0);
    int err = rename_in(dfd, tmp, name, AFS_RENAME_NOREPLACE);
    if (err == 0)
        return 0;
    if (err == -EINVAL || err == -ENOSYS || err == -ENOTSUP) {
        if (linkat(dfd, tmp, dfd, name, 0) == 0) {
            afcp_unlink(dfd, tmp);
            return 0;
        }
        err = -errno;
    }
    if (err == -EEXIST) {
        afcp_unlink(dfd, tmp);
        return 1;
    }
    return err;
}

#define SAME_INODE(a, b) ((a).st_dev == (b).st_dev && (a).st_ino == (b).st_ino)

/* Whether copying the source over dst (the destination's lstat) would destroy the source, as
 * cp's same_file_ok() decides for cp's options. sst is what is copied: the symlink itself
 * when it is copied as one (sd and sname name it). 1: "are the same file", 0: no, 2: two
 * names of one symlink (cp leaves them, silently). */
static int same_file(struct afcp_dir *dd, const char *dname, struct afcp_dir *sd,
                     const char *sname, const struct stat *sst, const struct stat *dst,
                     int kind)
{
    int slnk = S_ISLNK(sst->st_mode), dlnk = S_ISLNK(dst->st_mode);
    struct stat a, b;
    if (slnk && dlnk) { /* a link replaces a link: lost only when it is the same entry */
        if (!SAME_INODE(*sst, *dst))
            return 0;
        int same_entry = !strcmp(sname, dname) && fstat(sd->sfd, &a) == 0 &&
                         fstat(dd->dfd, &b) == 0 && SAME_INODE(a, b);
        return same_entry ? 1 : 2;
    }
    if (!slnk && !dlnk)
        return SAME_INODE(*sst, *dst);
    /* A link copied as a link over the file it points to would leave a link to itself, the
     * file's data gone. */
    if (slnk)
        return afcp_stat(sd->sfd, sname, 0, &a) == 0 && SAME_INODE(a, *dst);
    /* A link at the destination to the source: a file would be written through it onto
     * itself; anything else replaces the link, which cp refuses unless it follows links. */
    int deref_never = afcp.o.deref == 'P' || (!afcp.o.deref && afcp.o.recursive);
    if (kind != AFCP_DEST_FILE && !deref_never)
        return 0;
    return afcp_stat(dd->dfd, dname, 0, &b) == 0 && SAME_INODE(*sst, b);
}

/* What cp's open of the destination finds before it copies a regular file (after its -v
 * line): a dangling symlink, a symlink afcp does not write through, a file the user may not
 * write. 0: go on, -1: reported. */
static int open_checks(struct afcp_dir *dd, const char *dname, const char *dpath,
                       const struct stat *dst)
{
    /* A regular file is never written through a symlink at the destination (cp would):
     * without -f that is an error; with -f the link itself is replaced. A dangling one is
     * refused with cp's words, -f or not, as cp refuses it. */
    if (S_ISLNK(dst->st_mode)) {
        struct stat target;
        if (afcp_stat(dd->dfd, dname, 0, &target) == -ENOENT) {
            afcp_note("not writing through dangling symlink '%s'", dpath);
            afcp_fail();
            return -1;
        }
        if (!afcp.o.force) {
            afcp_note("not writing through symlink '%s' (use -f to replace it)", dpath);
            afcp_fail();
            return -1;
        }
    }
    /* A file the user may not write is not replaced either (cp's open would fail; -f
     * removes it first, as cp -f does). Root may write any. */
    if (S_ISREG(dst->st_mode) && !afcp.o.force &&
        faccessat(dd->dfd, dname, W_OK, AT_EACCESS) < 0 && errno == EACCES) {
        afcp_err(EACCES, "cannot create regular file '%s'", dpath);
        return -1;
    }
    return 0;
}

/* ls's letters for mode, cp's in its -i question: "rw-r--r--" (no file type). */
static void mode_letters(mode_t m, char out[10])
{
    static const char rwx[] = "rwxrwxrwx";
    for (int i = 0; i < 9; i++)
        out[i] = m & (0400u >> i) ? rwx[i] : '-';
    if (m & S_ISUID)
        out[2] = m & 0100 ? 's' : 'S';
    if (m & S_ISGID)
        out[5] = m & 0010 ? 's' : 'S';
    if (m & S_ISVTX)
        out[8] = m & 0001 ? 't' : 'T';
    out[9] = '\0';
}

/* -i: cp's question before the destination dst (not a directory) is replaced, on stderr;
 * the answer is a line of stdin, yes when it starts with 'y' or 'Y' (no line: no). One
 * scheduler runs with -i, whose thread waits here: one question at a time. */
static int overwrite_ok(struct afcp_dir *dd, const char *dname, const char *dpath,
                        const struct stat *dst)
{
    afcp_lock_stream(stderr);
    fflush(stdout); /* -v's lines so far, first */
    if (S_ISLNK(dst->st_mode) || afcp.is_root ||
        faccessat(dd->dfd, dname, W_OK, AT_EACCESS) == 0) {
        fprintf(stderr, "afcp: overwrite %s? ", afcp_q(dpath));
    } else {
        char letters[10];
        mode_letters(dst->st_mode, letters);
        fprintf(stderr,
                afcp.o.force ? "afcp: replace %s, overriding mode %04lo (%s)? "
                             : "afcp: unwritable %s (mode %04lo, %s); try anyway? ",
                afcp_q(dpath), (unsigned long)(dst->st_mode & 07777), letters);
    }
    fflush(stderr);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        line[0] = '\0';
    int yes = line[0] == 'y' || line[0] == 'Y';
    size_t n = strlen(line);
    while (n && line[n - 1] != '\n' && fgets(line, sizeof line, stdin)) /* the rest of it */
        n = strlen(line);
    afcp_unlock_stream(stderr);
    return yes;
}

int afcp_check_dest(struct afcp_dir *dd, const char *dname, struct afcp_dir *sd,
                    const char *sname, const char *spath, const char *dpath,
                    const struct stat *sst, int kind, int follow, uint64_t vn, int *exists)
{
    struct stat dst;
    *exists = 0;
    int err = dd->created ? -ENOENT : afcp_stat(dd->dfd, dname, AFS_AT_SYMLINK_NOFOLLOW, &dst);
    if (err < 0) {
        if (err != -ENOENT) {
            afcp_err(err, "cannot stat '%s'", dpath);
            return -1;
        }
        if (kind != AFCP_DEST_DIR) /* a directory's line comes once it is made */
            afcp_vline(vn, spath, dpath);
        return 0;
    }
    *exists = 1;
    int src_is_dir = kind == AFCP_DEST_DIR, both_dirs = S_ISDIR(dst.st_mode) && src_is_dir;
    /* -n: an existing destination stays, silently, even when it is the source itself: cp
     * looks no further. */
    if (afcp.o.noclobber) {
        if (src_is_dir && !S_ISDIR(dst.st_mode)) { /* cp -n refuses this too */
            afcp_note("cannot overwrite non-directory '%s' with directory '%s'", dpath, spath);
            afcp_fail();
            return -1;
        }
        return both_dirs ? 0 : 1;
    }
    int same = same_file(dd, dname, sd, sname, sst, &dst, kind);
    if (same == 1) {
        afcp_note("'%s' and '%s' are the same file", spath, dpath);
        afcp_fail();
        return -1;
    }
    if (same == 2)
        return 1;
    if (both_dirs)
        return 0;
    /* -u: a destination as new as the source (or newer) stays, silently, as with cp: before
     * what kind of file it is counts (a newer directory in a file's way is no error), and
     * for a file copied as one by what a symlink there leads to (cp's stat follows it; a
     * dangling one is left to open_checks, as cp leaves it to its open). */
    if (afcp.o.update && !src_is_dir) {
        struct stat upd = dst;
        int looked = !S_ISLNK(dst.st_mode) || kind != AFCP_DEST_FILE ||
                     afcp_stat(dd->dfd, dname, 0, &upd) == 0;
        if (looked && afcp_not_older(&upd, sst))
            return 2;
    }
    if (src_is_dir) {
        afcp_note("cannot overwrite non-directory '%s' with directory '%s'", dpath, spath);
        afcp_fail();
        return -1;
    }
    /* -i: the destination stays when the answer is not yes (cp asks here: after -u and a
     * directory's refusal of a non-directory, before a file's refusal of a directory and
     * what a special file allows). */
    if (afcp.o.interactive && !overwrite_ok(dd, dname, dpath, &dst))
        return 1;
    if (S_ISDIR(dst.st_mode)) {
        afcp_note("cannot overwrite directory '%s' with non-directory", dpath);
        afcp_fail();
        return -1;
    }
    /* A device, FIFO or socket is never removed to make room for a copy (a regular file is
     * written into it: see copy.c), unless the copy is the same node: a FIFO over a FIFO, a
     * device over the same device (a second -a run over the first's copy). */
    int same_node = (dst.st_mode & S_IFMT) == (sst->st_mode & S_IFMT) &&
                    (S_ISFIFO(dst.st_mode) || S_ISSOCK(dst.st_mode) ||
                     ((S_ISCHR(dst.st_mode) || S_ISBLK(dst.st_mode)) &&
                      dst.st_rdev == sst->st_rdev));
    int plain = S_ISREG(dst.st_mode) || S_ISLNK(dst.st_mode);
    if (kind == AFCP_DEST_OTHER && !plain && !same_node) {
        afcp_note("cannot overwrite special file '%s'", dpath);
        afcp_fail();
        return -1;
    }
    /* cp removes the destination before it copies, and says so, where it would not write
     * into it: a source it does not follow that is not a regular file (a symlink copied as
     * one, a FIFO, a device), or with --preserve=links a file with other names, which must
     * keep their data. So does afcp (what afcp replaces anyway, but cp's messages, and a
     * refusal to remove, come from the removal). */
    if ((plain || same_node) &&
        ((!follow && !S_ISREG(sst->st_mode)) ||
         ((afcp.o.preserve & AFCP_P_LINKS) && dst.st_nlink > 1))) {
        err = afcp_unlink(dd->dfd, dname);
        if (err < 0 && err != -ENOENT) {
            afcp_err(err, "cannot remove '%s'", dpath);
            return -1;
        }
        *exists = 0;
        afcp_vremoved(vn, dpath);
        afcp_vline(vn, spath, dpath);
        return 0;
    }
    afcp_vline(vn, spath, dpath);
    return kind == AFCP_DEST_FILE ? open_checks(dd, dname, dpath, &dst) : 0;
}

/* The destination directories of this run (made, or written into), as a set (open
 * addressing, linear probing; a zero slot is free: no directory has inode 0): every
 * directory read is looked up, so a list would cost the square of the number of
 * directories. Only the walker touches it. */
static size_t dest_slot(dev_t dev, ino_t ino)
{
    uint64_t h = ((uint64_t)ino ^ ((uint64_t)dev << 32 | (uint64_t)dev >> 32)) *
                 0x9E3779B97F4A7C15ull;
    size_t mask = afcp.dests_cap - 1, i = (size_t)(h >> 32) & mask;
    while ((afcp.dests[i].ino || afcp.dests[i].dev) &&
           (afcp.dests[i].ino != ino || afcp.dests[i].dev != dev))
        i = (i + 1) & mask;
    return i;
}

static int is_dest(dev_t dev, ino_t ino)
{
    if (!afcp.dests_len || (!ino && !dev))
        return 0;
    size_t i = dest_slot(dev, ino);
    return afcp.dests[i].ino == ino && afcp.dests[i].dev == dev;
}

static void remember_dest(dev_t dev, ino_t ino)
{
    if (!ino && !dev)
        return; /* unknown (the stat failed) */
    if (2 * (afcp.dests_len + 1) > afcp.dests_cap) { /* at most half full */
        struct afcp_devino *old = afcp.dests;
        size_t n = afcp.dests_cap;
        afcp.dests_cap = n ? 2 * n : 64;
        afcp.dests = calloc(afcp.dests_cap, sizeof *afcp.dests);
        if (!afcp.dests) {
            perror("afcp");
            exit(1);
        }
        for (size_t i = 0; i < n; i++)
            if (old[i].ino || old[i].dev)
                afcp.dests[dest_slot(old[i].dev, old[i].ino)] = old[i];
        free(old);
    }
    size_t i = dest_slot(dev, ino);
    if (afcp.dests[i].ino != ino || afcp.dests[i].dev != dev) {
        afcp.dests[i] = (struct afcp_devino){dev, ino};
        afcp.dests_len++;
    }
}

/* cp's record of directories (the entries its copy_internal makes in its src_to_dest table
 * for them): each operand that is a directory, and the first directory each operand made,
 * each with the name of its copy. A directory met again (through a symlink under -L, or a
 * bind mount) is judged by it as cp judges it (seen_check). A few entries per operand: a
 * list. Only the walker touches it. */
struct seen_dir {
    struct afcp_devino id;     /* the directory */
    struct afcp_devino parent; /* lstat of the directory its copy's name is in */
    char              *dname;  /* the last component of that name */
    char              *dpath;  /* the name, for messages */
};
static struct seen_dir *seen;
static size_t           seen_len, seen_cap;
static int              made_one; /* the operand being copied made a directory already */

static const struct seen_dir *seen_find(const struct stat *st)
{
    for (size_t i = 0; i < seen_len; i++)
        if (seen[i].id.dev == st->st_dev && seen[i].id.ino == st->st_ino)
            return &seen[i];
    return NULL;
}

static void seen_add(dev_t dev, ino_t ino, const struct afcp_dir *in, const char *dname,
                     const char *dpath)
{
    if (seen_len == seen_cap) {
        seen_cap = seen_cap ? 2 * seen_cap : 8;
        seen = realloc(seen, seen_cap * sizeof *seen);
        if (!seen) {
            perror("afcp");
            exit(1);
        }
    }
    seen[seen_len++] = (struct seen_dir){{dev, ino}, in->dname_id, afcp_xstrdup(dname),
                                         afcp_xstrdup(dpath)};
}

/* cp's same_name: the names' last components are equal, and lstat finds one file (the
 * directory, or the symlink it was reached through) for the names of the directories they
 * are in. */
static int same_name(const char *name, struct afcp_devino in, const struct seen_dir *e)
{
    return !strcmp(name, e->dname) && in.dev == e->parent.dev && in.ino == e->parent.ino;
}

/* ------------------------------------------------------------------------------------------
 * Sources this run writes. cp copies one entry after the other: a source it reaches in the
 * destination (a symlink into it under -L, a destination inside the source) holds every
 * entry copied before, complete. afcp copies many at once, so before the walker reads such
 * a source it waits until the copies in flight are done.
 * ---------------------------------------------------------------------------------------- */
static void drain(struct corio_task *t);

void afcp_settle(struct corio_task *t)
{
    drain(t);      /* the batches and their file tasks */
    corio_wait(t); /* the file tasks the walker started itself */
}

/* Whether name in the directory fd dir (followed when follow) may be something this run is
 * writing: missing (not made yet, maybe), a destination directory, or in one. The directory
 * a file is in comes from its path as /proc/self/fd shows it: the kernel resolved every
 * symlink on the way, chains included. */
static int in_dest(int dir, const char *name, int follow)
{
    struct stat st;
    if (fstatat(dir, name, &st, follow ? 0 : AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT;
    if (S_ISDIR(st.st_mode))
        return is_dest(st.st_dev, st.st_ino);
    if (!afcp.dests_len)
        return 0; /* nothing written yet */
    if (!afcp.have_proc)
        return 1; /* no way to tell: the safe side */
    int fd = openat(dir, name, O_PATH | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    if (fd < 0)
        return errno == ENOENT;
    char link[40], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    close(fd);
    if (n <= 0 || path[0] != '/')
        return 1; /* unknown: the safe side */
    path[n] = 0;
    char *slash = strrchr(path, '/');
    if (slash == path)
        slash++; /* at the root: the directory is "/" */
    *slash = 0;
    return stat(path, &st) < 0 || is_dest(st.st_dev, st.st_ino);
}

int afcp_maybe_ours(const char *path, int follow)
{
    return in_dest(AT_FDCWD, path, follow);
}

/* -p on a symlink: its owner and group (both or neither, as cp: no group alone) and times;
 * a failure is reported with cp's words and the destination's name (dpath). */
static void link_attrs(struct afcp_dir *sd, const char *sname, struct afcp_dir *dd,
                       const char *name, const struct stat *st, const char *dpath)
{
    if (afcp.o.preserve & (AFCP_P_ATTRS | AFCP_P_XATTR)) {
        struct timespec ts[2] = {st->st_atim, st->st_mtim};
        if (afcp.o.preserve & AFCP_P_OWNER)
            afcp_own(-1, dd->dfd, name, st, 0, dpath);
        if (afcp.o.preserve & AFCP_P_XATTR) /* the link's own (trusted.*, security.*) */
            afcp_xattr_copy_at(sd->sfd, sname, dd->dfd, name, dpath);
        if ((afcp.o.preserve & AFCP_P_TIMES) &&
            utimensat(dd->dfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
            afcp_err(errno, "preserving times for '%s'", dpath);
    }
}

/* A symlink is copied as a symlink: created under a temporary name and renamed into place, so
 * an existing entry is replaced atomically and never followed. In a directory this run made
 * (writable by its owner only until its entries are done: nothing is there but what afcp
 * put) it is created under its own name: a symlink is complete the moment it exists.
 * 0, or -1 (reported). */
static int make_symlink(struct corio_task *t, struct afcp_dir *sd, const char *sname,
                        struct afcp_dir *dd, const char *dname, const struct stat *st,
                        const char *spath, const char *dpath)
{
    size_t cap = st->st_size > 0 ? (size_t)st->st_size + 1 : 256;
    char *target = afcp_xmalloc(cap);
    ssize_t n = readlinkat(sd->sfd, sname, target, cap);
    if (n < 0 || (size_t)n >= cap) {
        afcp_err(n < 0 ? errno : ENAMETOOLONG, "cannot read symbolic link '%s'", spath);
        free(target);
        return -1;
    }
    target[n] = 0;
    if (dd->created) {
        int r = symlinkat(target, dd->dfd, dname);
        if (r < 0)
            afcp_err(errno, "cannot create symbolic link '%s'", dpath);
        else
            link_attrs(sd, sname, dd, dname, st, dpath);
        free(target);
        return r < 0 ? -1 : 0;
    }
    char tmp[16];
    int err;
    int tslot = afcp_temp_get(t); /* so that a signal can remove the temporary */
    for (int tries = 0;; tries++) {
        afcp_tmpname(tmp);
        afcp_temp_set(t, tslot, dd->dfd, tmp); /* before it exists: see copy.c */
        int r = symlinkat(target, dd->dfd, tmp), e = errno;
        afcp_temp_created(tslot, r == 0);
        errno = e;
        if (r == 0)
            break;
        if (errno != EEXIST || tries > 100) {
            afcp_err(errno, "cannot create symbolic link '%s'", dpath);
            afcp_temp_put(tslot);
            free(target);
            return -1;
        }
    }
    link_attrs(sd, sname, dd, tmp, st, dpath);
    afcp_temp_hold(t); /* a signal came: the temporary is gone, the process goes */
    if ((err = afcp_install(dd->dfd, tmp, dname)) < 0) {
        afcp_err(-err, "cannot create symbolic link '%s'", dpath);
        unlinkat(dd->dfd, tmp, 0);
    }
    afcp_temp_put(tslot); /* renamed or removed by now */
    free(target);
    return err < 0 ? -1 : 0;
}

/* A symlink met in the source (or a hard link to the copy of another of its inode's names).
 * -v: number vn (its lines come from afcp_check_dest, before the link is read, as cp reads
 * it after its line). */
static void copy_symlink(struct corio_task *t, struct afcp_dir *sd, const char *sname,
                         struct afcp_dir *dd, const char *dname, const struct stat *st,
                         int operand, const char *spath, const char *dpath, uint64_t vn)
{
    int exists;
    struct link_ent *le;
    int r = afcp_check_dest(dd, dname, sd, sname, spath, dpath, st, AFCP_DEST_OTHER, 0, vn,
                            &exists);
    if (r == 2)
        afcp_link_kept(t, dd, dname, dpath, vn, st, operand);
    if (r != 0 || afcp_link_earlier(t, dd, dname, dpath, vn, st, operand, &le) != 0)
        return;
    int ok = make_symlink(t, sd, sname, dd, dname, st, spath, dpath) == 0;
    if (le)
        afcp_link_done(le, ok);
}

/* A FIFO, socket or device node, made as cp makes it: with the source's set-user-ID,
 * set-group-ID and sticky bits, and without group and other permissions while its owner is
 * still to be set. Then, in cp's order, its times (which end it when they cannot be set, as
 * for cp), owner and group, extended attributes and mode. cp sets the permission bits as an
 * ACL sets them, and the special bits (chmod) only where they are the source's to keep: a
 * node whose owner could not be given keeps what the kernel left of them (a chown clears
 * set-user-ID, and set-group-ID with group execute), a node made without --preserve=mode
 * keeps those it was made with. follow: reached through a symlink (-L, -H): cp removes
 * nothing in its way then, and its mknod fails. -v: number vn (afcp_check_dest). */
static void make_special(struct afcp_dir *sd, const char *sname, struct afcp_dir *dd,
                         const char *dname, const struct stat *st, int exists,
                         const char *dpath, struct link_ent *le);

static void copy_special(struct corio_task *t, struct afcp_dir *sd, const char *sname,
                         struct afcp_dir *dd, const char *dname, const struct stat *st,
                         int follow, int operand, const char *spath, const char *dpath,
                         uint64_t vn)
{
    int exists;
    struct link_ent *le;
    int r = afcp_check_dest(dd, dname, sd, sname, spath, dpath, st, AFCP_DEST_OTHER, follow,
                            vn, &exists);
    if (r == 2)
        afcp_link_kept(t, dd, dname, dpath, vn, st, operand);
    if (r != 0 || afcp_link_earlier(t, dd, dname, dpath, vn, st, operand, &le) != 0)
        return;
    make_special(sd, sname, dd, dname, st, exists, dpath, le);
}

/* The node itself, then its attributes; le: its inode's first copy, told whether the node
 * was made. */
static void make_special(struct afcp_dir *sd, const char *sname, struct afcp_dir *dd,
                         const char *dname, const struct stat *st, int exists,
                         const char *dpath, struct link_ent *le)
{
    int p = afcp.o.preserve;
    mode_t omitted = p & AFCP_P_OWNER ? st->st_mode & (S_IRWXG | S_IRWXO) : 0;
    int made = !exists && mknodat(dd->dfd, dname, st->st_mode & (S_IFMT | 07777) & ~omitted,
                                  st->st_rdev) == 0;
    int e = errno;
    if (le)
        afcp_link_done(le, made);
    if (!made) {
        afcp_err(exists ? EEXIST : e, S_ISFIFO(st->st_mode) ? "cannot create fifo '%s'"
                                      : "cannot create special file '%s'", dpath);
        return;
    }
    struct timespec ts[2] = {st->st_atim, st->st_mtim};
    if ((p & AFCP_P_TIMES) && utimensat(dd->dfd, dname, ts, AT_SYMLINK_NOFOLLOW) < 0) {
        afcp_err(errno, "preserving times for '%s'", dpath);
        return;
    }
    int owner = (p & AFCP_P_OWNER) && afcp_own(-1, dd->dfd, dname, st, 1, dpath);
    if (p & AFCP_P_XATTR)
        afcp_xattr_copy_at(sd->sfd, sname, dd->dfd, dname, dpath);
    if (!(p & AFCP_P_MODE) && !afcp.o.default_mode && !(omitted & ~afcp.umask))
        return; /* as it was made */
    struct stat now;
    if (fstatat(dd->dfd, dname, &now, AT_SYMLINK_NOFOLLOW) < 0)
        now.st_mode = st->st_mode & 07777 & ~omitted & ~afcp.umask;
    mode_t special = now.st_mode & (S_ISUID | S_ISGID | S_ISVTX);
    if (p & AFCP_P_MODE) {
        mode_t mode = (p & AFCP_P_OWNER) && !owner ? special | (st->st_mode & 0777)
                                                   : st->st_mode & 07777;
        if (fchmodat(dd->dfd, dname, mode, 0) < 0)
            afcp_err(errno, "preserving permissions for '%s'", dpath);
        else
            afcp_acl_copy_at(sd->sfd, sname, dd->dfd, dname, dpath); /* as for files */
    } else if (afcp.o.default_mode) {
        /* Under a default ACL: its access ACL goes first (cp's set_acl). */
        if (dd->plain && !exists && afcp_acl_copy_at(-1, NULL, dd->dfd, dname, dpath) < 0)
            return;
        if (fchmodat(dd->dfd, dname, special | (afcp_new_mode(-1, st->st_mode) & ~afcp.umask),
                     0) < 0)
            afcp_err(errno, "setting permissions for '%s'", dpath);
    } else if ((omitted & ~afcp.umask & ~now.st_mode) &&
               fchmodat(dd->dfd, dname, (now.st_mode & 07777) | (omitted & ~afcp.umask), 0) < 0) {
        afcp_err(errno, "preserving permissions for '%s'", dpath);
    }
}

struct ent {
    ino_t         ino;
    char         *name;
    unsigned char type; /* d_type: DT_REG, DT_DIR..., DT_UNKNOWN */
};

static int ent_cmp(const void *a, const void *b)
{
    const struct ent *x = a, *y = b;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* The directory's entries, sorted by inode number; 0. A read error is reported and the
 * entries read so far are kept. */
static int read_entries(struct afcp_dir *d, struct ent **out, size_t *count)
{
    /* getdents64 straight on the directory's own fd (opened here, read once, at offset 0):
     * no dup, fdopendir and closedir (five system calls per directory, which count on a
     * tree of small directories). Only the walker's task reads directories. */
    static char *buf;
    enum { DENTS_BUF = 32u << 10 };
    if (!buf)
        buf = afcp_xmalloc(DENTS_BUF);
    struct ent *ents = NULL;
    size_t n = 0, cap = 0;
    ssize_t got;
    while ((got = syscall(SYS_getdents64, d->sfd, buf, DENTS_BUF)) > 0) {
        for (ssize_t pos = 0; pos < got;) {
            struct kdirent64 *e = (struct kdirent64 *)(buf + pos);
            pos += e->d_reclen;
            if (e->d_name[0] == '.' &&
                (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                ents = realloc(ents, cap * sizeof *ents);
                if (!ents) {
                    perror("afcp");
                    exit(1);
                }
            }
            ents[n++] = (struct ent){e->d_ino, afcp_xstrdup(e->d_name), e->d_type};
        }
    }
    if (got < 0)
        afcp_err(errno, "cannot read directory '%s'", d->spath);
    if (n > 1)
        qsort(ents, n, sizeof *ents, ent_cmp);
    *out = ents;
    *count = n;
    return 0;
}

/* The mode a directory afcp makes has while its entries are copied (the final one comes
 * once they are done): writable by its owner only, so that nobody else can add entries (its
 * files go in under their own names); 0700 when -p or -a give it its owner, ACL or extended
 * attributes at the end (until then nobody else may look), as cp does. A copy interrupted
 * leaves it so: readable as the source's mode allows, unless attributes were to follow. */
static mode_t filling_mode(int sfd, const struct stat *st)
{
    if (afcp.o.preserve & (AFCP_P_OWNER | AFCP_P_MODE | AFCP_P_XATTR))
        return 0700;
    return (afcp_new_mode(sfd, st->st_mode) & ~afcp.umask & ~(mode_t)(S_IWGRP | S_IWOTH)) |
           S_IRWXU;
}

/* A source directory that cannot be opened (no read or search permission) is still made at
 * the destination, empty, with the attributes it would have had, as cp makes it: cp makes
 * the directory (-v: its line, number vn) before it finds it cannot read the source (err),
 * and sets the attributes after. */
static void make_unread_dir(struct afcp_dir *dd, const char *dname, const struct stat *st,
                            const char *spath, const char *dpath, uint64_t vn, int err)
{
    int p = afcp.o.preserve, r = make_dir(dd->dfd, dname, 0700);
    if (r < 0) {
        afcp_err(r, "cannot create directory '%s'", dpath);
        return;
    }
    afcp_vline(vn, spath, dpath);
    afcp_err(err, "cannot access '%s'", spath);
    int owner = (p & AFCP_P_OWNER) && afcp_own(-1, dd->dfd, dname, st, 1, dpath);
    mode_t mode = p & AFCP_P_MODE ? afcp_kept_mode(st->st_mode, owner)
                                  : made_dir_mode(-1, st->st_mode);
    struct timespec ts[2] = {st->st_atim, st->st_mtim};
    if ((p & AFCP_P_TIMES) && utimensat(dd->dfd, dname, ts, AT_SYMLINK_NOFOLLOW) < 0)
        afcp_err(errno, "preserving times for '%s'", dpath);
    if (fchmodat(dd->dfd, dname, mode, 0) < 0)
        afcp_err(errno, "setting permissions for '%s'", dpath);
}

/* The command-line operand being copied, as written, and the name of its copy (the
 * walker's: afcp_copy_entry): where a directory would go into itself, cp names them. */
static const char *op_src, *op_dst;
/* The operand went into itself: as cp, nothing after that entry is copied, in its
 * directory or in any above it (copy_dir); the directories made are finished. */
static int into_self;

/* A directory cp has met before (seen_dir): as cp's copy_internal judges it. The source
 * reached by its own name again (the copy went into the source): "into itself", and the
 * operand's copy stops. The copy's name already made: the operand was named twice. Reached
 * by another name through a symlink followed (-L; -H for an operand): copied again, as cp
 * copies it (a link into the destination copies the copy made so far, level after level,
 * until the names reach PATH_MAX). Any other way (a bind mount): refused, as cp refuses a
 * hard link to a directory. 0: go on, -1: not copied (reported), 1: not copied, silently
 * but for the warning (the operand's first copy is this one). */
static int seen_check(const struct seen_dir *e, struct afcp_dir *sd, const char *sname,
                      struct afcp_dir *dd, const char *dname, const char *dpath, int operand)
{
    if (same_name(sname, sd->sname_id, e)) {
        afcp_into_itself(op_src, op_dst);
        into_self = 1;
        return -1;
    }
    if (same_name(dname, dd->dname_id, e)) {
        afcp_note("warning: source directory '%s' specified more than once", op_src);
        return 1;
    }
    if (afcp.o.deref == 'L' || (operand && afcp.o.deref == 'H'))
        return 0;
    afcp_note("will not create hard link '%s' to directory '%s'", dpath, e->dpath);
    afcp_fail();
    return -1;
}

/* Opens (and, when missing, makes) the destination directory for the source directory sname
 * of sd, in cp's order: what is at the destination, a directory met before, a symlink to an
 * ancestor, then the copy made (-v: its line, number vn, as cp prints it: once it is made).
 * Returns the new afcp_dir (one reference, the caller's) or NULL (reported). follow: sname
 * was followed (a symlink under -L; an operand under -H or written with a trailing slash).
 * operand: sname is the command-line operand. */
static struct afcp_dir *open_dest_dir(struct afcp_dir *sd, const char *sname,
                                      struct afcp_dir *dd, const char *dname,
                                      const struct stat *st, const char *spath,
                                      const char *dpath, int follow, int operand, uint64_t vn)
{
    int exists = 0;
    if (afcp_check_dest(dd, dname, sd, sname, spath, dpath, st, AFCP_DEST_DIR, follow, vn,
                        &exists) != 0)
        return NULL;
    const struct seen_dir *e = seen_find(st);
    if (e && seen_check(e, sd, sname, dd, dname, dpath, operand) != 0)
        return NULL;
    if (!e && operand) /* cp records each operand directory with the name of its copy */
        seen_add(st->st_dev, st->st_ino, dd, dname, dpath);
    /* -L: a link to an ancestor. Only directories being copied count (both fds): the one
     * holding an operand is not copied ("src/." under -H or -L is no cycle). */
    for (struct afcp_dir *a = sd; follow && a; a = a->parent)
        if (a->sfd >= 0 && a->dfd >= 0 && SAME_INODE(a->st, *st)) {
            afcp_note("cannot copy cyclic symbolic link '%s'", spath);
            afcp_fail();
            return NULL;
        }
    /* What lstat says of the source's name (cp's same_name looks at names, not at what
     * they lead to): the symlink, when one was followed. */
    struct afcp_devino sname_id = {st->st_dev, st->st_ino};
    struct stat lst;
    if (follow && fstatat(sd->sfd, sname, &lst, AT_SYMLINK_NOFOLLOW) == 0)
        sname_id = (struct afcp_devino){lst.st_dev, lst.st_ino};
    int sfd = open_dir(sd->sfd, sname, !follow);
    if (sfd < 0) {
        if (sfd == -EACCES && !exists)
            make_unread_dir(dd, dname, st, spath, dpath, vn, sfd);
        else
            afcp_err(sfd, "cannot access '%s'", spath);
        return NULL;
    }
    int created = 0, inherit = 0;
    if (!exists) {
        /* Under a default ACL the directory is made with the mode it is to have, less the
         * bits cp omits (inherit_omitted), which the ACL (not the umask) cuts, and keeps what
         * that gives, as cp's directory does; dir_finish adds back what cp adds back. */
        inherit = !(afcp.o.preserve & AFCP_P_MODE) && afcp_has_default_acl(dd->dfd);
        mode_t inherit_mode = afcp_new_mode(sfd, st->st_mode);
        inherit_mode = (inherit_mode & ~inherit_omitted(inherit_mode)) | (st->st_mode & S_ISVTX);
        int err = make_dir(dd->dfd, dname, inherit ? inherit_mode : filling_mode(sfd, st));
        if (err < 0 && err != -EEXIST) {
            afcp_err(err, "cannot create directory '%s'", dpath);
            close(sfd);
            return NULL;
        }
        created = err == 0;
        if (created)
            afcp_vline(vn, spath, dpath);
    }
    int dfd = open_dir(dd->dfd, dname, 1);
    if (dfd < 0) {
        if (dfd == -ENOTDIR || dfd == -ELOOP)
            afcp_note("cannot overwrite non-directory '%s' with directory '%s'", dpath, spath);
        else
            afcp_err(dfd, "cannot open directory '%s'", dpath);
        afcp_fail();
        close(sfd);
        return NULL;
    }
    struct stat dst;
    if (afcp_stat(dfd, "", AFS_AT_EMPTY_PATH, &dst) < 0)
        memset(&dst, 0, sizeof dst);
    remember_dest(dst.st_dev, dst.st_ino);
    if (created && !made_one) { /* cp records the first directory each operand makes */
        made_one = 1;
        seen_add(dst.st_dev, dst.st_ino, dd, dname, dpath);
    }

    struct afcp_dir *d = afcp_xmalloc(sizeof *d);
    *d = (struct afcp_dir){.sfd = sfd, .dfd = dfd, .spath = afcp_xstrdup(spath),
                           .dpath = afcp_xstrdup(dpath), .st = *st, .refs = 1,
                           .created = created, .inherit = inherit && created,
                           .plain = afcp_dir_plain(dfd),
                           .dmode = dst.st_mode, .rootdev = sd->rootdev,
                           .sname_id = sname_id, .dname_id = {dst.st_dev, dst.st_ino},
                           .finalize = created || (afcp.o.preserve & (AFCP_P_ATTRS | AFCP_P_XATTR)),
                           .ddev = dst.st_dev,
                           .parent = dd};
    afcp_dir_get(dd);
    return d;
}

/* open_dest_dir, and the end of the directory's number vn for -v: its line (when it was
 * made) comes before any of its entries'. */
static struct afcp_dir *enter_dir(struct afcp_dir *sd, const char *sname, struct afcp_dir *dd,
                                  const char *dname, const struct stat *st, const char *spath,
                                  const char *dpath, int follow, int operand, uint64_t vn)
{
    struct afcp_dir *d = open_dest_dir(sd, sname, dd, dname, st, spath, dpath, follow,
                                       operand, vn);
    afcp_vend(vn);
    return d;
}

void afcp_cannot_create(const char *src, const char *dst, const struct stat *st, int err,
                        uint64_t vn)
{
    int special = !S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode) &&
                  afcp.o.recursive; /* without -r its contents are copied, to a file */
    if (!S_ISDIR(st->st_mode))
        afcp_vline(vn, src, dst);
    afcp_err(err, S_ISDIR(st->st_mode)    ? "cannot create directory '%s'"
                  : S_ISLNK(st->st_mode)  ? "cannot create symbolic link '%s'"
                  : special && S_ISFIFO(st->st_mode) ? "cannot create fifo '%s'"
                  : special               ? "cannot create special file '%s'"
                                          : "cannot create regular file '%s'",
             dst);
}

/* cp stops where a name reaches PATH_MAX: a source's path as it names it (from the current
 * directory), found by its stat; a copy's path below the target directory (cp names the
 * copies relative to it: op_dst_skip), found by its stat, or in a directory cp made (where
 * it looks at nothing) by the create that fails. So does afcp, although every name is
 * opened relative to its directory. */
static size_t op_dst_skip;
static int dst_too_long(const char *dpath)
{
    return strlen(dpath) - op_dst_skip >= PATH_MAX;
}

static void copy_entry(struct corio_task *t, struct afcp_dir *sd, const char *sname,
                       struct afcp_dir *dd, const char *dname, const struct stat *st,
                       int follow, int operand, char *spath, char *dpath, uint64_t vn);

/* One entry (name, d_type) of the directory cur, copied to the same name in cur's
 * destination (-v: number vn). A directory is entered only by the walker (walker set: the
 * new afcp_dir is returned, the caller walks it); anywhere else it would be an entry that
 * changed from a symlink into a directory since readdir, and is reported. */
static struct afcp_dir *copy_listed(struct corio_task *t, struct afcp_dir *cur, const char *name,
                                    unsigned char type, int walker, uint64_t vn)
{
    struct afcp_dir *d = NULL;
    char *sp = afcp_join(cur->spath, name), *dp = afcp_join(cur->dpath, name);
    struct stat est;
    int err = 0;
    /* -L: a symlink (or what may be one) may lead into the destination, to a file this run is
     * writing or to a directory it writes into; the walker (the only one to see these
     * entries under -L) lets the copies in flight end first, as cp would have ended them. */
    if (walker && afcp.o.deref == 'L' && type != DT_REG && type != DT_DIR &&
        in_dest(cur->sfd, name, 1))
        afcp_settle(t);
    if (strlen(sp) >= PATH_MAX) {
        afcp_err(ENAMETOOLONG, "cannot stat '%s'", sp);
        err = 1;
    } else if (type == DT_REG) {
        /* The file task stats what it opens; the size comes then. */
        memset(&est, 0, sizeof est);
        est.st_mode = S_IFREG;
    } else if ((err = afcp_stat(cur->sfd, name,
                                afcp.o.deref == 'L' ? 0 : AFS_AT_SYMLINK_NOFOLLOW, &est)) < 0) {
        afcp_err(err, "cannot stat '%s'", sp);
    }
    if (!err && dst_too_long(dp)) {
        if (cur->created)
            afcp_cannot_create(sp, dp, &est, ENAMETOOLONG, vn);
        else
            afcp_err(ENAMETOOLONG, "cannot stat '%s'", dp);
        err = 1;
    }
    if (err) {
        afcp_vend(vn);
    } else if (S_ISDIR(est.st_mode) && walker) {
        d = enter_dir(cur, name, cur, name, &est, sp, dp, afcp.o.deref == 'L', 0, vn);
    } else if (S_ISDIR(est.st_mode)) {
        afcp_note("cannot copy '%s': changed during the copy", sp);
        afcp_fail();
        afcp_vend(vn);
    } else {
        copy_entry(t, cur, name, cur, name, &est, afcp.o.deref == 'L', 0, sp, dp, vn);
        sp = dp = NULL; /* copy_entry's now */
    }
    free(sp);
    free(dp);
    return d;
}

/* ------------------------------------------------------------------------------------------
 * Batches: the walker (scheduler 0) sends the regular files and symlinks it finds, BATCH_MAX
 * entries at a time (from one directory or several), to another scheduler with fewer than
 * PIPE batches not yet started through (afcp_sched.queued; corio_spawn_on by index:
 * CORIO_SCHED_ANY places by the tasks each scheduler has, suspended ones included, which
 * says little about how far a scheduler is behind with its batches), or else to the
 * walker's own scheduler.
 * A scheduler whose thread gets no CPU keeps its count high and gets no more until it
 * catches up.
 * So a flat directory of 100,000 files spreads over the schedulers as well as a tree of
 * small directories does. Each entry holds a reference to its directory. At most
 * 4 batches per scheduler (16 in all) are still being started: the walker waits until one
 * has handed every entry to a file task (or copied it) before it sends the next, so it
 * never runs far ahead of the copy (open directories, memory), while the files of started
 * batches go on (the file slots bound them; waiting for whole batches, stragglers
 * included, would drain the pipeline of a cold copy). Directories, and entries whose type needs a stat to know
 * (d_type unknown, symlinks under -L, devices and FIFOs), stay with the walker.
 * ---------------------------------------------------------------------------------------- */
enum { BATCH_MAX = 32, FLIGHT_MAX = 16, YIELD_EVERY = 8, PIPE = 2 };

struct batch {
    struct corio_future done;    /* the batch task and its file tasks are done */
    struct corio_future started; /* every entry handed over (external: any scheduler) */
    struct batch       *next;    /* in the list of started batches */
    struct afcp_sched  *to;      /* the scheduler it was sent to */
    unsigned            n;
    struct {
        struct afcp_dir *d;
        char            *name;
        unsigned char    type;
        uint64_t         vn; /* -v: its number */
    } e[BATCH_MAX];
};

static struct batch *filling;            /* the walker's: the batch being filled */
static struct batch *flight[FLIGHT_MAX]; /* sent, not yet started */
static unsigned      nflight;
static struct batch *started_head, *started_tail; /* started, not yet freed (FIFO) */

static int batchable(unsigned char type)
{
    return type == DT_REG || (type == DT_LNK && afcp.o.deref != 'L');
}

static int batch_task(struct corio_task *t, void *arg)
{
    struct batch *b = arg;
    afcp_enter(t);
    /* On the walker's own scheduler a batch starts at once: let the walker send the next
     * ones first (the others' queues fill), then copy. */
    if (afcp_me->index == 0)
        corio_yield(t);
    for (unsigned i = 0; i < b->n; i++) {
        /* A scheduler sends what it posted to other threads (the wake-ups of the walker's
         * batches, the ends of batches) when its CPU phase ends: a yield now and then ends
         * it, so that a plain copy of cached files does not hold them back for long. */
        if (i && i % YIELD_EVERY == 0)
            corio_yield(t);
        afcp_vtask(t, b->e[i].vn); /* what copy_listed reports goes with the entry */
        copy_listed(t, b->e[i].d, b->e[i].name, b->e[i].type, 0, b->e[i].vn);
        afcp_vtask(t, 0);
        afcp_dir_put(b->e[i].d);
        free(b->e[i].name);
    }
    afcp_me->entries += b->n;
    __atomic_fetch_sub(&b->to->queued, 1, __ATOMIC_RELAXED);
    corio_future_complete(&b->started, 0, NULL);
    return 0;
}

/* Frees the started batches that are done, oldest first (they end about in order). */
static void sweep(void)
{
    while (started_head && corio_future_done(&started_head->done)) {
        struct batch *b = started_head;
        started_head = b->next;
        if (!started_head)
            started_tail = NULL;
        free(b);
    }
}

/* Waits until one batch in flight has started all its entries. */
static void reap(struct corio_task *t)
{
    struct corio_future *futs[FLIGHT_MAX];
    for (unsigned i = 0; i < nflight; i++)
        futs[i] = &flight[i]->started;
    size_t i = 0;
    if (corio_future_wait(t, CORIO_WAIT_FIRST, futs, nflight, &i) < 0 || i >= nflight) {
        i = 0; /* cannot happen (nobody cancels the walker): wait for the oldest */
        corio_future_await_shielded(t, futs[0], NULL);
    }
    struct batch *b = flight[i];
    flight[i] = flight[--nflight];
    b->next = NULL;
    if (started_tail)
        started_tail->next = b;
    else
        started_head = b;
    started_tail = b;
    sweep();
}

static void send_batch(struct corio_task *t)
{
    struct batch *b = filling;
    if (!b)
        return;
    filling = NULL;
    unsigned cap = 4 * afcp.nsched < FLIGHT_MAX ? 4 * afcp.nsched : FLIGHT_MAX;
    while (nflight >= cap)
        reap(t);
    flight[nflight++] = b;
    corio_future_init_external(&b->started, corio_task_sched(t));
    /* The other schedulers first: the walker's own scheduler only runs its batches while the
     * walker waits, so by the time the walker looks again its batches are always through and
     * its count is 0; the counts of the others are what tells whether they keep up. Each
     * other scheduler is kept at up to PIPE batches (one copying, the next waiting, so it
     * never idles while the walker's thread is busy copying); beyond that, and when every
     * other one is as far behind (a thread that gets no CPU), the walker's scheduler takes
     * the batch. */
    static unsigned rotor; /* ties go round */
    unsigned self = (unsigned)afcp_me->index, best = self, best_q = PIPE;
    for (unsigned k = 0; k < afcp.nsched; k++) {
        unsigned i = (rotor + k) % afcp.nsched;
        unsigned q = __atomic_load_n(&afcp.scheds[i].queued, __ATOMIC_RELAXED);
        if (i != self && q < best_q) {
            best = i;
            best_q = q;
        }
    }
    rotor++;
    b->to = &afcp.scheds[best];
    __atomic_fetch_add(&b->to->queued, 1, __ATOMIC_RELAXED);
    if (corio_spawn_on(t, (int)best, batch_task, b, &b->done) < 0) {
        b->to = afcp_me; /* no memory for a task: copy them here (done is completed) */
        __atomic_fetch_sub(&afcp.scheds[best].queued, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&afcp_me->queued, 1, __ATOMIC_RELAXED);
        batch_task(t, b);
    }
}

static void dispatch(struct corio_task *t, struct afcp_dir *d, char *name, unsigned char type,
                     uint64_t vn)
{
    if (!filling) {
        filling = afcp_xmalloc(sizeof *filling);
        filling->n = 0;
    }
    afcp_dir_get(d);
    filling->e[filling->n].d = d;
    filling->e[filling->n].name = name;
    filling->e[filling->n].vn = vn;
    filling->e[filling->n++].type = type;
    if (filling->n == BATCH_MAX)
        send_batch(t);
}

/* Sends the batch being filled and waits until every batch and its file tasks are done. */
static void drain(struct corio_task *t)
{
    send_batch(t);
    while (nflight)
        reap(t);
    while (started_head) {
        corio_future_await_shielded(t, &started_head->done, NULL);
        sweep();
    }
}

void afcp_walk_end(struct corio_task *t)
{
    drain(t);
    for (size_t i = 0; i < seen_len; i++) {
        free(seen[i].dname);
        free(seen[i].dpath);
    }
    free(seen);
    seen = NULL;
    seen_len = seen_cap = 0;
}

/* One directory being walked: its entries and the next one to copy. */
struct frame {
    struct afcp_dir *d;
    struct ent      *ents;
    size_t           n, next;
    int              serial; /* a directory this run writes into: one entry at a time */
};

/* Copies the operand directory sname of sd to dname in dd, depth first, in the same order a
 * recursion would, but with the directories being walked on a heap array: the depth of the
 * tree costs no task stack (a task's stack is fixed; the file tasks share its size). */
static void copy_dir(struct corio_task *t, struct afcp_dir *sd, const char *sname,
                     struct afcp_dir *dd, const char *dname, const struct stat *st,
                     const char *spath, const char *dpath, int follow, uint64_t vn)
{
    struct frame *stack = NULL;
    size_t depth = 0, cap = 0;
    into_self = 0;
    struct afcp_dir *d = enter_dir(sd, sname, dd, dname, st, spath, dpath, follow, 1, vn);
    if (d)
        d->rootdev = st->st_dev; /* the operand's file system (-x) */
    while (d || depth) {
        if (d) { /* entered a directory: push it */
            struct ent *ents = NULL;
            size_t n = 0;
            /* -x: a directory on another file system (a mount point) is made, empty, as
             * cp makes it; nothing under it is copied. */
            int skip = afcp.o.one_fs && d->st.st_dev != d->rootdev;
            /* A directory this run writes into, read as a source (-L through a symlink into
             * the destination): as cp finds it, every entry copied before complete. Its
             * entries are copied one after the other, as cp copies them: what they make
             * has inode numbers in cp's order, the order they are read in when the copy
             * is read again, one level down. */
            int serial = !skip && is_dest(d->st.st_dev, d->st.st_ino);
            if (serial)
                afcp_settle(t);
            if (!skip && read_entries(d, &ents, &n) < 0) {
                afcp_dir_put(d);
            } else {
                if (depth == cap) {
                    cap = cap ? cap * 2 : 16;
                    stack = realloc(stack, cap * sizeof *stack);
                    if (!stack) {
                        perror("afcp");
                        exit(1);
                    }
                }
                stack[depth++] = (struct frame){d, ents, n, 0, serial};
            }
            d = NULL;
            continue;
        }
        struct frame *f = &stack[depth - 1];
        if (into_self)
            while (f->next < f->n)
                free(f->ents[f->next++].name); /* not copied, as cp stops there */
        if (f->next == f->n) { /* done with it: pop */
            free(f->ents);
            f->d->end_vn = afcp_vnum(); /* its end comes after its entries (dir_finish) */
            afcp_dir_put(f->d);
            depth--;
            continue;
        }
        struct ent *e = &f->ents[f->next++];
        if (f->serial)
            afcp_settle(t);
        if (afcp_vbehind()) {
            /* -v: many lines wait for an entry still being copied (the batch being filled
             * may hold it): no more entries until they are out. */
            send_batch(t);
            while (afcp_vbehind())
                corio_sleep(t, 1000000);
        }
        uint64_t evn = afcp_vnum();
        if (batchable(e->type)) {
            dispatch(t, f->d, e->name, e->type, evn); /* the batch owns the name now */
            continue;
        }
        /* What the walker reports goes with this entry until the next (the directory it
         * enters: what reading it finds comes after its line, before its entries'). */
        afcp_vtask(t, evn);
        d = copy_listed(t, f->d, e->name, e->type, 1, evn);
        free(e->name);
    }
    free(stack);
}

/* afcp_copy_entry with the two paths already joined (owns them), -v's number vn. */
static void copy_entry(struct corio_task *t, struct afcp_dir *sd, const char *sname,
                       struct afcp_dir *dd, const char *dname, const struct stat *st,
                       int follow, int operand, char *spath, char *dpath, uint64_t vn)
{
    /* Without -r, a FIFO or device named on the command line is read until EOF into a
     * regular file, as cp does; with -r it is recreated (copy_special). */
    int contents = !afcp.o.recursive && !S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode);
    if (S_ISREG(st->st_mode) || contents) {
        /* A cached file is copied here and now (nothing to allocate); the others go to a
         * file task, which checks the destination (afcp_check_dest) once it knows the
         * source. */
        struct afcp_atime before = {0};
        if (S_ISREG(st->st_mode) &&
            afcp_copy_inline(t, sd, sname, dd, dname, spath, dpath, follow, operand, vn,
                             &before) == 0) {
            free(spath);
            free(dpath);
            return;
        }
        struct afcp_file_job *job = afcp_xmalloc(sizeof *job);
        *job = (struct afcp_file_job){.sd = sd, .dd = dd, .sname = afcp_xstrdup(sname),
                                      .dname = afcp_xstrdup(dname), .spath = spath,
                                      .dpath = dpath, .st = *st, .follow = follow,
                                      .operand = operand, .vn = vn,
                                      .read_before = before};
        afcp_spawn_file(t, job); /* owns the strings now */
        return;
    }
    if (S_ISDIR(st->st_mode) && afcp.o.recursive) {
        copy_dir(t, sd, sname, dd, dname, st, spath, dpath, follow, vn); /* ends vn */
        free(spath);
        free(dpath);
        return;
    }
    if (S_ISDIR(st->st_mode)) {
        afcp_note("-r not specified; omitting directory '%s'", spath);
        afcp_fail();
    } else if (S_ISLNK(st->st_mode)) {
        copy_symlink(t, sd, sname, dd, dname, st, operand, spath, dpath, vn);
    } else {
        copy_special(t, sd, sname, dd, dname, st, follow, operand, spath, dpath, vn);
    }
    afcp_vend(vn);
    free(spath);
    free(dpath);
}

void afcp_copy_entry(struct corio_task *t, struct afcp_dir *sd, const char *sname,
                     struct afcp_dir *dd, const char *dname, const struct stat *st,
                     int follow, const char *src_arg, const char *dst_arg, int in_dir,
                     uint64_t vn)
{
    op_src = src_arg;
    op_dst = dst_arg;
    op_dst_skip = in_dir ? strlen(dst_arg) - strlen(dname) : 0;
    made_one = 0; /* cp records the first directory each operand makes */
    remember_dest(dd->st.st_dev, dd->st.st_ino);
    /* The operand's own names are the ones written (cp's: 'dir/' -> 'copy/' keep their
     * slashes); its entries' are joined to them. */
    copy_entry(t, sd, sname, dd, dname, st, follow, 1, afcp_xstrdup(src_arg),
               afcp_xstrdup(dst_arg), vn);
    op_src = op_dst = NULL;
}
