/* The SQLite VFS on asyncfs (include/asyncfs_sqlite.h). The locking and shared-memory code
 * follows SQLite's os_unix.c (its inode table, lock protocol and -shm layout), so that this
 * VFS and the unix VFS exclude each other between processes. */
#include "asyncfs_sqlite.h"
#include "corio.h"
#include "internal.h" /* afs__file_release */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define VFS_MAX_PATH   4096
#define VFS_SECTOR     4096
#define VFS_FILE_PERMS 0644

/* The lock bytes (os_unix.c and the file format: the page at 1 GiB is never used). */
#define PENDING_BYTE  0x40000000
#define RESERVED_BYTE (PENDING_BYTE + 1)
#define SHARED_FIRST  (PENDING_BYTE + 2)
#define SHARED_SIZE   510
/* The -shm file's lock bytes: 120..127 for the eight WAL locks, 128 the "DMS" byte. */
#define SHM_BASE ((22 + SQLITE_SHM_NLOCK) * 4)
#define SHM_DMS  (SHM_BASE + SQLITE_SHM_NLOCK)

/* One mutex for the inode records and the shared-memory nodes. It is never held across a call
 * that may suspend a corio task (another task of the same thread would then block on it). */
static pthread_mutex_t vfs_mutex = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------------------------------
 * Per-thread contexts for files opened outside a corio task.
 * ---------------------------------------------------------------------------------------- */

struct vfs_tctx {
    struct afs_ctx *ctx;
    unsigned        files;  /* open files on ctx */
    int             exited; /* the thread has ended: free ctx with the last file */
};

static pthread_key_t  tctx_key;
static pthread_once_t tctx_once = PTHREAD_ONCE_INIT;

static void tctx_free(struct vfs_tctx *tc)
{
    afs_ctx_free(tc->ctx);
    free(tc);
}

static void tctx_thread_exit(void *p)
{
    struct vfs_tctx *tc = p;
    pthread_mutex_lock(&vfs_mutex);
    tc->exited = 1;
    int last = tc->files == 0;
    pthread_mutex_unlock(&vfs_mutex);
    if (last)
        tctx_free(tc);
}

static struct vfs_inode *inodes;

/* fork(): the child has none of the parent's POSIX locks and none of its pool threads, so it
 * starts with no inode records and no per-thread context (the parent's are left alone:
 * freeing them would wait for threads the child does not have). Connections do not cross a
 * fork (SQLite's rule); new ones in the child work. */
static void fork_prepare(void)
{
    pthread_mutex_lock(&vfs_mutex);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&vfs_mutex);
}

static void fork_child(void)
{
    pthread_mutex_init(&vfs_mutex, NULL);
    inodes = NULL;
    pthread_setspecific(tctx_key, NULL);
}

static void tctx_key_make(void)
{
    (void)pthread_key_create(&tctx_key, tctx_thread_exit);
    (void)pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* The context to open a file on: the running task's scheduler's (unless thread_only), or
 * this thread's own (*tcp set, its file count taken). Returns NULL when no context could be
 * made. */
static struct afs_ctx *ctx_for_open(struct vfs_tctx **tcp, int *err, bool thread_only)
{
    *tcp = NULL;
    struct afs_waiter *w = afs_waiter_get();
    if (!thread_only && w && w->ctx && w->current(w))
        return w->ctx;
    pthread_once(&tctx_once, tctx_key_make);
    struct vfs_tctx *tc = pthread_getspecific(tctx_key);
    if (!tc) {
        tc = calloc(1, sizeof *tc);
        if (!tc) {
            *err = -ENOMEM;
            return NULL;
        }
        int r = afs_ctx_new(&tc->ctx, NULL);
        if (r < 0 || pthread_setspecific(tctx_key, tc) != 0) {
            if (r >= 0)
                afs_ctx_free(tc->ctx);
            free(tc);
            *err = r < 0 ? r : -ENOMEM;
            return NULL;
        }
    }
    pthread_mutex_lock(&vfs_mutex);
    tc->files++;
    pthread_mutex_unlock(&vfs_mutex);
    *tcp = tc;
    return tc->ctx;
}

/* Under vfs_mutex: drops a file's count; 1 when tc must be freed (after unlocking). */
static int tctx_drop_locked(struct vfs_tctx *tc)
{
    return tc && --tc->files == 0 && tc->exited;
}

static void tctx_release(struct vfs_tctx *tc)
{
    if (!tc)
        return;
    pthread_mutex_lock(&vfs_mutex);
    int last = tctx_drop_locked(tc);
    pthread_mutex_unlock(&vfs_mutex);
    if (last)
        tctx_free(tc);
}

/* Closes f on this thread without suspending the running task: a database file's close must
 * happen under vfs_mutex (a task that ran meanwhile could take a lock the close would drop). */
static int close_now(struct afs_file *f)
{
    struct afs_waiter *w = afs_waiter_set(NULL);
    int r = afs_close(f);
    afs_waiter_set(w);
    return r;
}

/* ------------------------------------------------------------------------------------------
 * Inode records: the process's locks on one file, shared by all its connections.
 * ---------------------------------------------------------------------------------------- */

struct vfs_shm;

struct vfs_pending_close {
    intptr_t                  fd; /* released from its file (afs__file_release): a plain
                                     close, from whichever thread drops the last lock */
    int                       flags; /* SQLITE_OPEN_READONLY or _READWRITE, as opened */
    struct vfs_pending_close *next;
};

struct vfs_inode {
    dev_t                     dev;
    ino_t                     ino;
    int                       refs;
    int                       shared;   /* connections holding SHARED or more */
    int                       locks;    /* connections holding any lock */
    unsigned char             lock;     /* the strongest lock of the process */
    struct vfs_pending_close *pending;  /* descriptors to close when locks reaches 0 */
    struct vfs_shm           *shm;
    struct vfs_inode         *next;
};

struct vfs_file {
    sqlite3_file      base;
    struct afs_file  *f;
    int               fd;          /* f's descriptor, for the lock calls */
    struct vfs_tctx  *tc;
    struct vfs_inode *inode;       /* main databases only */
    struct vfs_shm_conn *shm;
    unsigned char     lock;        /* NO_LOCK .. EXCLUSIVE_LOCK */
    unsigned char     dirsync;     /* fsync the directory at the next xSync (new journal) */
    unsigned char     persist_wal, psow;
    unsigned char     readonly_shm; /* "readonly_shm=1" in the database's URI */
    unsigned char     chardev;     /* a character device: plain pread/pwrite (see vfs_open) */
    int               open_flags;  /* SQLITE_OPEN_* */
    int               last_errno;
    char             *path;        /* the name SQLite gave (NULL for temporary files) */
    const char       *vfs_name;    /* the name the VFS was registered under */
};

/* The errno of the VFS's last failure on this thread, for xGetLastError (SQLite asks right
 * after the failing call, on the same thread): asyncfs returns its errors and leaves errno
 * alone, and inside a task the failing call ran elsewhere. */
static _Thread_local int vfs_errno;

static void set_errno(struct vfs_file *p, int err)
{
    if (p)
        p->last_errno = err;
    vfs_errno = err;
}

static int fd_of(struct vfs_file *p)
{
    return p->fd;
}

/* Gives a file the VFS opened for writing the mode it was meant to have, the umask aside (a
 * journal of a 0600 database is 0600 whatever the umask, as with the unix VFS; only an empty
 * file's mode is changed) and, when the process is root, the owner of `owner` (NULL: none),
 * so that the database's owner can still open it. Failures are left to the next open. */
static void file_take_owner(int fd, mode_t mode, const struct stat *owner)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return;
    if (mode && st.st_size == 0 && (st.st_mode & 0777) != mode)
        (void)fchmod(fd, mode);
    if (owner && geteuid() == 0 && (st.st_uid != owner->st_uid || st.st_gid != owner->st_gid) &&
        fchown(fd, owner->st_uid, owner->st_gid) != 0) {
        /* the owner may still open it through the group or others' bits */
    }
}

/* The mode of a file the VFS creates, 0 for the default, as the unix VFS decides it: a
 * journal or WAL gets its database's mode and owner (*has_owner; a private database stays
 * private through them), a temporary file 0600, a database opened by a URI with "modeof=F"
 * the mode of F. When the file to copy from cannot be read, the default; but a "modeof=" file
 * that cannot be read fails the open, as with the unix VFS (*err: the errno). */
static mode_t create_mode(const char *name, int flags, struct stat *owner, int *has_owner,
                          int *err)
{
    int type = flags & 0x0FFFFF00;
    const char *from = NULL;
    *has_owner = 0;
    if (!name || (flags & SQLITE_OPEN_DELETEONCLOSE))
        return 0600;
    if (type == SQLITE_OPEN_MAIN_JOURNAL || type == SQLITE_OPEN_WAL)
        from = sqlite3_filename_database(name);
    else if (type == SQLITE_OPEN_MAIN_DB && (flags & SQLITE_OPEN_URI))
        from = sqlite3_uri_parameter(name, "modeof");
    if (!from)
        return 0;
    if (stat(from, owner) < 0) {
        if (type == SQLITE_OPEN_MAIN_DB)
            *err = errno;
        return 0;
    }
    *has_owner = type == SQLITE_OPEN_MAIN_JOURNAL || type == SQLITE_OPEN_WAL;
    return owner->st_mode & 0777;
}

static int set_lock(int fd, short type, off_t start, off_t len)
{
    struct flock l;
    memset(&l, 0, sizeof l);
    l.l_type = type;
    l.l_whence = SEEK_SET;
    l.l_start = start;
    l.l_len = len;
    int r;
    do
        r = fcntl(fd, F_SETLK, &l);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

/* A failed F_SETLK: busy when another process holds the lock, else an I/O error. */
static int lock_error(int err, int ioerr)
{
    switch (-err) {
    case EACCES:
    case EAGAIN:
    case ETIMEDOUT:
    case EBUSY:
    case EINTR:
    case ENOLCK:
        return SQLITE_BUSY;
    case EPERM:
        return SQLITE_PERM;
    default:
        return ioerr;
    }
}

static struct vfs_inode *inode_find(int fd, int *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        *err = errno;
        return NULL;
    }
    for (struct vfs_inode *i = inodes; i; i = i->next) {
        if (i->dev == st.st_dev && i->ino == st.st_ino) {
            i->refs++;
            return i;
        }
    }
    struct vfs_inode *i = calloc(1, sizeof *i);
    if (!i) {
        *err = ENOMEM;
        return NULL;
    }
    i->dev = st.st_dev;
    i->ino = st.st_ino;
    i->refs = 1;
    i->next = inodes;
    inodes = i;
    return i;
}

/* Under vfs_mutex. */
static void inode_release(struct vfs_inode *in)
{
    if (--in->refs > 0)
        return;
    for (struct vfs_inode **pp = &inodes; *pp; pp = &(*pp)->next) {
        if (*pp == in) {
            *pp = in->next;
            break;
        }
    }
    free(in);
}

/* Under vfs_mutex: closes the descriptors whose close waited for the locks to go. */
static void inode_close_pending(struct vfs_inode *in)
{
    struct vfs_pending_close *pc = in->pending;
    in->pending = NULL;
    while (pc) {
        struct vfs_pending_close *next = pc->next;
        (void)close((int)pc->fd);
        free(pc);
        pc = next;
    }
}

/* A descriptor of path's inode whose close waits for the locks (flags: its access), taken
 * for a new connection as the unix VFS does (findReusableFd): else a process whose one
 * connection keeps a lock (WAL mode) while others open and close would keep a descriptor per
 * close. -1 when there is none; else *inp is the inode, with a reference taken. */
static intptr_t inode_take_pending(const char *path, int flags, struct vfs_inode **inp)
{
    struct stat st;
    intptr_t fd = -1;
    *inp = NULL;
    if (stat(path, &st) < 0)
        return -1;
    flags &= SQLITE_OPEN_READONLY | SQLITE_OPEN_READWRITE;
    pthread_mutex_lock(&vfs_mutex);
    struct vfs_inode *in = inodes;
    while (in && (in->dev != st.st_dev || in->ino != st.st_ino))
        in = in->next;
    struct vfs_pending_close **pp = in ? &in->pending : NULL;
    while (pp && *pp && (*pp)->flags != flags)
        pp = &(*pp)->next;
    if (pp && *pp) {
        struct vfs_pending_close *pc = *pp;
        *pp = pc->next;
        fd = pc->fd;
        free(pc);
        in->refs++;
        *inp = in;
    }
    pthread_mutex_unlock(&vfs_mutex);
    return fd;
}

/* Gives back a descriptor inode_take_pending() took and could not use. */
static void inode_put_pending(struct vfs_inode *in, intptr_t fd, int flags)
{
    pthread_mutex_lock(&vfs_mutex);
    struct vfs_pending_close *pc = in->locks > 0 ? malloc(sizeof *pc) : NULL;
    if (pc) {
        pc->fd = fd;
        pc->flags = flags & (SQLITE_OPEN_READONLY | SQLITE_OPEN_READWRITE);
        pc->next = in->pending;
        in->pending = pc;
    } else {
        (void)close((int)fd); /* no lock of the process left to lose */
    }
    inode_release(in);
    pthread_mutex_unlock(&vfs_mutex);
}

/* ------------------------------------------------------------------------------------------
 * I/O methods
 * ---------------------------------------------------------------------------------------- */

static int vfs_shm_unmap(sqlite3_file *id, int delete_flag);

static int vfs_close(sqlite3_file *id)
{
    struct vfs_file *p = (struct vfs_file *)id;
    int rc = SQLITE_OK;
    if (p->shm)
        vfs_shm_unmap(id, 0);
    if (!p->f)
        goto out;
    if (p->inode) {
        /* SQLite unlocks before it closes; a lock left here is released the same way. */
        if (p->lock != SQLITE_LOCK_NONE)
            id->pMethods->xUnlock(id, SQLITE_LOCK_NONE);
        pthread_mutex_lock(&vfs_mutex);
        struct vfs_inode *in = p->inode;
        struct vfs_pending_close *pc = NULL;
        int free_tc = 0;
        if (in->locks > 0)
            pc = malloc(sizeof *pc);
        if (pc) {
            /* Another connection of this process holds a lock on the file: closing this
             * descriptor now would drop it. The file leaves its context now, on this thread
             * (the context's, where the close of whichever connection drops the last lock
             * may run on another scheduler's or thread's), and the descriptor waits. */
            struct afs_waiter *w = afs_waiter_set(NULL);
            pc->fd = afs__file_release(p->f);
            afs_waiter_set(w);
            pc->flags = p->open_flags & (SQLITE_OPEN_READONLY | SQLITE_OPEN_READWRITE);
            pc->next = in->pending;
            in->pending = pc;
            free_tc = tctx_drop_locked(p->tc);
        } else {
            if (close_now(p->f) < 0)
                rc = SQLITE_IOERR_CLOSE;
            free_tc = tctx_drop_locked(p->tc);
        }
        inode_release(in);
        pthread_mutex_unlock(&vfs_mutex);
        if (free_tc)
            tctx_free(p->tc);
    } else {
        if (afs_close(p->f) < 0)
            rc = SQLITE_IOERR_CLOSE;
        tctx_release(p->tc);
    }
out:
    free(p->path);
    p->f = NULL;
    p->path = NULL;
    return rc;
}

/* pread or pwrite of a character device, -errno on failure. */
static ssize_t dev_rw(struct vfs_file *p, void *buf, int amt, sqlite3_int64 off, bool write)
{
    ssize_t r;
    do
        r = write ? pwrite(p->fd, buf, (size_t)amt, (off_t)off)
                  : pread(p->fd, buf, (size_t)amt, (off_t)off);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static int vfs_read(sqlite3_file *id, void *buf, int amt, sqlite3_int64 off)
{
    struct vfs_file *p = (struct vfs_file *)id;
    ssize_t r = p->chardev ? dev_rw(p, buf, amt, off, false)
                           : afs_pread(p->f, buf, (size_t)amt, (uint64_t)off);
    if (r == amt)
        return SQLITE_OK;
    if (r < 0) {
        set_errno(p, (int)-r);
        return SQLITE_IOERR_READ;
    }
    /* SQLite relies on the rest of the buffer being zeroed on a short read. */
    memset((char *)buf + r, 0, (size_t)(amt - r));
    set_errno(p, 0);
    return SQLITE_IOERR_SHORT_READ;
}

static int vfs_write(sqlite3_file *id, const void *buf, int amt, sqlite3_int64 off)
{
    struct vfs_file *p = (struct vfs_file *)id;
    ssize_t r = p->chardev ? dev_rw(p, (void *)buf, amt, off, true)
                           : afs_pwrite(p->f, buf, (size_t)amt, (uint64_t)off);
    if (r == amt)
        return SQLITE_OK;
    set_errno(p, r < 0 ? (int)-r : ENOSPC);
    return p->last_errno == ENOSPC || p->last_errno == EDQUOT ? SQLITE_FULL : SQLITE_IOERR_WRITE;
}

static int vfs_truncate(sqlite3_file *id, sqlite3_int64 size)
{
    struct vfs_file *p = (struct vfs_file *)id;
    int r = afs_ftruncate(p->f, (uint64_t)size);
    if (r < 0) {
        set_errno(p, -r);
        return SQLITE_IOERR_TRUNCATE;
    }
    return SQLITE_OK;
}

/* The directory of a new journal or WAL, made durable once (the unix VFS does the same), so
 * that the file's name survives a crash along with its contents. */
/* fsync of the directory that holds path: through ctx when there is one (inside a task only
 * the task waits, and the crash simulator sees the sync), else plain calls. */
static int sync_dir(struct afs_ctx *ctx, const char *path, struct vfs_file *p)
{
    char dir[VFS_MAX_PATH];
    size_t n = strlen(path);
    if (n >= sizeof dir)
        return SQLITE_OK;
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    int r;
    if (ctx) {
        r = afs_fsync_dir(ctx, dir);
    } else {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        r = fd < 0 ? -errno : fsync(fd) < 0 ? -errno : 0;
        if (fd >= 0)
            close(fd);
    }
    /* As the unix VFS: a directory that cannot be opened (out of descriptors too), or that
     * its file system cannot sync (EINVAL), is no error; a sync that failed is. */
    if (r == -ENOENT || r == -EACCES || r == -ENOTDIR || r == -EINVAL || r == -EPERM ||
        r == -EMFILE || r == -ENFILE || r == -ENOMEM || r == -ELOOP || r == -ENAMETOOLONG)
        r = 0;
    if (r < 0) {
        set_errno(p, -r);
        return SQLITE_IOERR_DIR_FSYNC;
    }
    return SQLITE_OK;
}

static int vfs_sync(sqlite3_file *id, int flags)
{
    struct vfs_file *p = (struct vfs_file *)id;
    int r = afs_fsync(p->f, (flags & SQLITE_SYNC_DATAONLY) ? AFS_FSYNC_DATA : 0);
    if (r < 0) {
        set_errno(p, -r);
        return SQLITE_IOERR_FSYNC;
    }
    if (p->dirsync) {
        p->dirsync = 0;
        return sync_dir(afs_file_ctx(p->f), p->path, p);
    }
    return SQLITE_OK;
}

static int vfs_file_size(sqlite3_file *id, sqlite3_int64 *size)
{
    struct vfs_file *p = (struct vfs_file *)id;
    int64_t n = afs_file_size(p->f);
    if (n < 0) {
        set_errno(p, (int)-n);
        return SQLITE_IOERR_FSTAT;
    }
    *size = n;
    return SQLITE_OK;
}

/* os_unix.c's unixLock(): the transitions SHARED, RESERVED, (PENDING), EXCLUSIVE. */
static int vfs_lock(sqlite3_file *id, int want)
{
    struct vfs_file *p = (struct vfs_file *)id;
    if (p->lock >= want)
        return SQLITE_OK;
    int rc = SQLITE_OK, fd = fd_of(p), r;
    pthread_mutex_lock(&vfs_mutex);
    struct vfs_inode *in = p->inode;
    if (p->lock != in->lock && (in->lock >= SQLITE_LOCK_PENDING || want > SQLITE_LOCK_SHARED)) {
        rc = SQLITE_BUSY; /* another connection of this process holds a stronger lock */
        goto end;
    }
    if (want == SQLITE_LOCK_SHARED &&
        (in->lock == SQLITE_LOCK_SHARED || in->lock == SQLITE_LOCK_RESERVED)) {
        /* The process already holds a shared lock: count this connection in. */
        p->lock = SQLITE_LOCK_SHARED;
        in->shared++;
        in->locks++;
        goto end;
    }
    /* A PENDING lock first, so that no new reader gets in while a writer waits. */
    if (want == SQLITE_LOCK_SHARED ||
        (want == SQLITE_LOCK_EXCLUSIVE && p->lock == SQLITE_LOCK_RESERVED)) {
        r = set_lock(fd, want == SQLITE_LOCK_SHARED ? F_RDLCK : F_WRLCK, PENDING_BYTE, 1);
        if (r < 0) {
            rc = lock_error(r, SQLITE_IOERR_LOCK);
            if (rc != SQLITE_BUSY)
                set_errno(p, -r);
            goto end;
        }
        if (want == SQLITE_LOCK_EXCLUSIVE) {
            p->lock = SQLITE_LOCK_PENDING;
            in->lock = SQLITE_LOCK_PENDING;
        }
    }
    if (want == SQLITE_LOCK_SHARED) {
        r = set_lock(fd, F_RDLCK, SHARED_FIRST, SHARED_SIZE);
        int r2 = set_lock(fd, F_UNLCK, PENDING_BYTE, 1);
        if (r < 0) {
            rc = lock_error(r, SQLITE_IOERR_LOCK);
            if (rc != SQLITE_BUSY)
                set_errno(p, -r);
            goto end;
        }
        if (r2 < 0) {
            set_errno(p, -r2);
            rc = SQLITE_IOERR_UNLOCK;
            goto end;
        }
        p->lock = SQLITE_LOCK_SHARED;
        in->locks++;
        in->shared = 1;
    } else if (want == SQLITE_LOCK_EXCLUSIVE && in->shared > 1) {
        rc = SQLITE_BUSY; /* other connections of this process still read */
    } else {
        r = want == SQLITE_LOCK_RESERVED ? set_lock(fd, F_WRLCK, RESERVED_BYTE, 1)
                                         : set_lock(fd, F_WRLCK, SHARED_FIRST, SHARED_SIZE);
        if (r < 0) {
            rc = lock_error(r, SQLITE_IOERR_LOCK);
            if (rc != SQLITE_BUSY)
                set_errno(p, -r);
        }
    }
    if (rc == SQLITE_OK) {
        p->lock = (unsigned char)want;
        in->lock = (unsigned char)want;
    } else if (want == SQLITE_LOCK_EXCLUSIVE && p->lock == SQLITE_LOCK_PENDING) {
        in->lock = SQLITE_LOCK_PENDING;
    }
end:
    pthread_mutex_unlock(&vfs_mutex);
    return rc;
}

/* os_unix.c's posixUnlock(): down to SHARED or NONE. */
static int vfs_unlock(sqlite3_file *id, int want)
{
    struct vfs_file *p = (struct vfs_file *)id;
    if (p->lock <= want)
        return SQLITE_OK;
    int rc = SQLITE_OK, fd = fd_of(p), r;
    pthread_mutex_lock(&vfs_mutex);
    struct vfs_inode *in = p->inode;
    if (p->lock > SQLITE_LOCK_SHARED) {
        if (want == SQLITE_LOCK_SHARED) {
            r = set_lock(fd, F_RDLCK, SHARED_FIRST, SHARED_SIZE);
            if (r < 0) {
                set_errno(p, -r);
                rc = SQLITE_IOERR_RDLOCK;
                goto end;
            }
        }
        r = set_lock(fd, F_UNLCK, PENDING_BYTE, 2); /* PENDING and RESERVED */
        if (r < 0) {
            set_errno(p, -r);
            rc = SQLITE_IOERR_UNLOCK;
            goto end;
        }
        in->lock = SQLITE_LOCK_SHARED;
    }
    if (want == SQLITE_LOCK_NONE) {
        if (--in->shared == 0) {
            r = set_lock(fd, F_UNLCK, 0, 0);
            if (r < 0) {
                set_errno(p, -r);
                rc = SQLITE_IOERR_UNLOCK;
                p->lock = SQLITE_LOCK_NONE;
            }
            in->lock = SQLITE_LOCK_NONE;
        }
        if (--in->locks == 0)
            inode_close_pending(in);
    }
end:
    if (rc == SQLITE_OK)
        p->lock = (unsigned char)want;
    pthread_mutex_unlock(&vfs_mutex);
    return rc;
}

/* Who else holds byte `at` of fd: F_UNLCK (nobody), F_RDLCK or F_WRLCK; -errno. */
static int lock_holder(int fd, off_t at)
{
    struct flock l;
    memset(&l, 0, sizeof l);
    l.l_whence = SEEK_SET;
    l.l_start = at;
    l.l_len = 1;
    l.l_type = F_WRLCK;
    return fcntl(fd, F_GETLK, &l) < 0 ? -errno : l.l_type;
}

static int vfs_check_reserved(sqlite3_file *id, int *out)
{
    struct vfs_file *p = (struct vfs_file *)id;
    int rc = SQLITE_OK, reserved = 0;
    pthread_mutex_lock(&vfs_mutex);
    if (p->inode->lock > SQLITE_LOCK_SHARED)
        reserved = 1;
    if (!reserved) {
        int holder = lock_holder(fd_of(p), RESERVED_BYTE);
        if (holder < 0) {
            set_errno(p, -holder);
            rc = SQLITE_IOERR_CHECKRESERVEDLOCK;
        } else if (holder != F_UNLCK) {
            reserved = 1;
        }
    }
    pthread_mutex_unlock(&vfs_mutex);
    *out = reserved;
    return rc;
}

static void flag_control(unsigned char *flag, int *arg)
{
    if (*arg < 0)
        *arg = *flag;
    else
        *flag = *arg != 0;
}

static int vfs_file_control(sqlite3_file *id, int op, void *arg)
{
    struct vfs_file *p = (struct vfs_file *)id;
    switch (op) {
    case SQLITE_FCNTL_LOCKSTATE:
        *(int *)arg = p->lock;
        return SQLITE_OK;
    case SQLITE_FCNTL_LAST_ERRNO:
        *(int *)arg = p->last_errno;
        return SQLITE_OK;
    case SQLITE_FCNTL_PERSIST_WAL:
        flag_control(&p->persist_wal, arg);
        return SQLITE_OK;
    case SQLITE_FCNTL_POWERSAFE_OVERWRITE:
        flag_control(&p->psow, arg);
        return SQLITE_OK;
    case SQLITE_FCNTL_VFSNAME:
        *(char **)arg = sqlite3_mprintf("%s", p->vfs_name);
        return SQLITE_OK;
    case SQLITE_FCNTL_HAS_MOVED: {
        struct stat a, b;
        *(int *)arg = p->path && (fstat(fd_of(p), &a) < 0 || stat(p->path, &b) < 0 ||
                                  a.st_ino != b.st_ino || a.st_dev != b.st_dev);
        return SQLITE_OK;
    }
    default:
        return SQLITE_NOTFOUND;
    }
}

static int vfs_sector_size(sqlite3_file *id)
{
    return VFS_SECTOR;
}

static int vfs_device_characteristics(sqlite3_file *id)
{
    struct vfs_file *p = (struct vfs_file *)id;
    return p->psow ? SQLITE_IOCAP_POWERSAFE_OVERWRITE : 0;
}

/* ------------------------------------------------------------------------------------------
 * Shared memory for WAL mode (os_unix.c's unixShmNode / unixShm).
 * ---------------------------------------------------------------------------------------- */

struct vfs_shm {
    int              fd;
    unsigned char    readonly;  /* opened read-only: the file or its file system refuses writes */
    unsigned char    unlocked;  /* read-only and no connection had it: DMS not yet held */
    int              nregion;
    int              region_size;
    char           **regions;
    int              refs;
    int              lock[SQLITE_SHM_NLOCK]; /* readers holding it, -1 = one writer */
    struct vfs_inode *inode;
};

struct vfs_shm_conn {
    struct vfs_shm *node;
    uint16_t        shared_mask, excl_mask;
};

static int shm_system_lock(struct vfs_shm *s, short type, int ofst, int n)
{
    int r = set_lock(s->fd, type, ofst, n);
    return r < 0 ? SQLITE_BUSY : SQLITE_OK;
}

/* Takes the -shm file's DMS byte (shared) for this process, as os_unix.c does. The first
 * connection of any process (nobody holds the byte) resets the wal-index: its content may be
 * from a crashed writer. A read-only file cannot be reset: SQLITE_READONLY_CANTINIT then,
 * and SQLite reads the WAL without a wal-index (the next map tries the byte again). */
static int shm_lock_dms(struct vfs_shm *s)
{
    int rc = SQLITE_OK, holder = lock_holder(s->fd, SHM_DMS);
    if (holder < 0) {
        rc = SQLITE_IOERR_LOCK;
    } else if (holder == F_UNLCK) {
        if (s->readonly) {
            s->unlocked = 1;
            return SQLITE_READONLY_CANTINIT;
        }
        rc = shm_system_lock(s, F_WRLCK, SHM_DMS, 1);
        if (rc == SQLITE_OK && ftruncate(s->fd, 3) < 0)
            rc = SQLITE_IOERR_SHMOPEN;
    } else if (holder == F_WRLCK) {
        rc = SQLITE_BUSY;
    }
    if (rc == SQLITE_OK)
        rc = shm_system_lock(s, F_RDLCK, SHM_DMS, 1);
    if (rc == SQLITE_OK)
        s->unlocked = 0;
    return rc;
}

/* Under vfs_mutex: opens (or joins) the inode's -shm file, with its database's mode and, for
 * root, its owner (os_unix.c's rule: the owner must still be able to open it). Where it may
 * not be written (a read-only file system, a file of another user, "readonly_shm=1"), it is
 * opened read-only and SQLite keeps to reading. SQLITE_OK or SQLITE_READONLY_CANTINIT
 * (shm_lock_dms) leave the node joined. */
static int shm_node_open(struct vfs_file *p)
{
    struct vfs_inode *in = p->inode;
    if (in->shm) {
        in->shm->refs++;
        return SQLITE_OK;
    }
    if (!p->path)
        return SQLITE_IOERR_SHMOPEN;
    char name[VFS_MAX_PATH + 8];
    if ((size_t)snprintf(name, sizeof name, "%s-shm", p->path) >= sizeof name)
        return SQLITE_CANTOPEN;
    struct stat db;
    if (fstat(p->fd, &db) < 0) {
        set_errno(p, errno);
        return SQLITE_IOERR_FSTAT;
    }
    struct vfs_shm *s = calloc(1, sizeof *s);
    if (!s)
        return SQLITE_NOMEM;
    mode_t mode = db.st_mode & 0777;
    s->fd = -1;
    if (!p->readonly_shm)
        s->fd = open(name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode);
    if (s->fd < 0) {
        s->fd = open(name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        s->readonly = 1;
    }
    if (s->fd < 0) {
        set_errno(p, errno);
        free(s);
        return SQLITE_CANTOPEN;
    }
    if (!s->readonly)
        file_take_owner(s->fd, mode, &db);
    int rc = shm_lock_dms(s);
    if (rc != SQLITE_OK && rc != SQLITE_READONLY_CANTINIT) {
        close(s->fd);
        free(s);
        return rc;
    }
    s->refs = 1;
    s->inode = in;
    in->shm = s;
    return rc;
}

/* Regions mapped at once: a mapping starts at a multiple of the page size, which may be
 * larger than a region (64 KiB pages on aarch64 and ppc64 kernels); os_unix.c's
 * unixShmRegionPerMap(). */
static int shm_regions_per_map(int size)
{
    long page = sysconf(_SC_PAGESIZE);
    return size > 0 && page > size ? (int)(page / size) : 1; /* 0: nothing mapped yet */
}

/* Under vfs_mutex. */
static void shm_node_release(struct vfs_shm *s, int delete_flag, const char *db_path)
{
    if (--s->refs > 0)
        return;
    int per_map = shm_regions_per_map(s->region_size);
    for (int i = 0; i < s->nregion; i += per_map)
        munmap(s->regions[i], (size_t)s->region_size * per_map);
    free(s->regions);
    if (delete_flag && db_path) {
        char name[VFS_MAX_PATH + 8];
        if ((size_t)snprintf(name, sizeof name, "%s-shm", db_path) < sizeof name)
            unlink(name);
    }
    close(s->fd);
    s->inode->shm = NULL;
    free(s);
}

static int vfs_shm_map(sqlite3_file *id, int region, int size, int extend, void volatile **pp)
{
    struct vfs_file *p = (struct vfs_file *)id;
    int rc = SQLITE_OK;
    *pp = NULL;
    pthread_mutex_lock(&vfs_mutex);
    if (!p->shm) {
        struct vfs_shm_conn *c = calloc(1, sizeof *c);
        if (!c) {
            rc = SQLITE_NOMEM;
            goto end;
        }
        rc = shm_node_open(p);
        if (rc != SQLITE_OK && rc != SQLITE_READONLY_CANTINIT) {
            free(c);
            goto end;
        }
        c->node = p->inode->shm;
        p->shm = c;
        if (rc != SQLITE_OK)
            goto end;
    }
    struct vfs_shm *s = p->shm->node;
    if (s->unlocked && (rc = shm_lock_dms(s)) != SQLITE_OK)
        goto end;
    if (s->nregion > 0 && s->region_size != size) {
        rc = SQLITE_IOERR_SHMSIZE;
        goto end;
    }
    s->region_size = size;
    int per_map = shm_regions_per_map(size);
    int want = (region + per_map) / per_map * per_map; /* whole mappings */
    if (s->nregion < want) {
        struct stat st;
        if (fstat(s->fd, &st) < 0) {
            rc = SQLITE_IOERR_SHMSIZE;
            goto end;
        }
        off_t need = (off_t)want * size;
        if (st.st_size < need) {
            if (!extend)
                goto end; /* *pp stays NULL: the region does not exist yet */
            /* Write a byte into each new page rather than ftruncate, so that a full disk is
             * an error here and not a SIGBUS when the mapping is touched. */
            for (off_t o = st.st_size / 4096 * 4096 + 4095; o < need; o += 4096) {
                if (o < st.st_size)
                    continue;
                ssize_t w;
                do
                    w = pwrite(s->fd, "", 1, o);
                while (w < 0 && errno == EINTR);
                if (w != 1) {
                    set_errno(p, w < 0 ? errno : ENOSPC);
                    rc = SQLITE_IOERR_SHMSIZE;
                    goto end;
                }
            }
        }
        char **regions = realloc(s->regions, (size_t)want * sizeof *regions);
        if (!regions) {
            rc = SQLITE_IOERR_NOMEM;
            goto end;
        }
        s->regions = regions;
        while (s->nregion < want) {
            void *m = mmap(NULL, (size_t)size * per_map,
                           s->readonly ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, s->fd,
                           (off_t)s->nregion * size);
            if (m == MAP_FAILED) {
                set_errno(p, errno);
                rc = SQLITE_IOERR_SHMMAP;
                goto end;
            }
            for (int i = 0; i < per_map; i++)
                s->regions[s->nregion + i] = (char *)m + (size_t)size * i;
            s->nregion += per_map;
        }
    }
    *pp = s->regions[region];
end:
    /* A read-only -shm: SQLite then reads only, and takes no write lock. */
    if (rc == SQLITE_OK && p->shm && p->shm->node->readonly)
        rc = SQLITE_READONLY;
    pthread_mutex_unlock(&vfs_mutex);
    return rc;
}

static int vfs_shm_lock(sqlite3_file *id, int ofst, int n, int flags)
{
    struct vfs_file *p = (struct vfs_file *)id;
    struct vfs_shm_conn *c = p->shm;
    if (!c || ofst < 0 || n < 1 || ofst + n > SQLITE_SHM_NLOCK)
        return SQLITE_IOERR_SHMLOCK;
    struct vfs_shm *s = c->node;
    uint16_t mask = (uint16_t)((1u << (ofst + n)) - (1u << ofst));
    int rc = SQLITE_OK;
    pthread_mutex_lock(&vfs_mutex);
    if (flags & SQLITE_SHM_UNLOCK) {
        if ((c->excl_mask | c->shared_mask) & mask) {
            int unlock = 1;
            if ((flags & SQLITE_SHM_SHARED) && s->lock[ofst] > 1) {
                unlock = 0; /* other connections of this process still read */
                s->lock[ofst]--;
                c->shared_mask &= (uint16_t)~mask;
            }
            if (unlock) {
                rc = shm_system_lock(s, F_UNLCK, ofst + SHM_BASE, n);
                if (rc == SQLITE_OK) {
                    memset(&s->lock[ofst], 0, (size_t)n * sizeof s->lock[0]);
                    c->shared_mask &= (uint16_t)~mask;
                    c->excl_mask &= (uint16_t)~mask;
                }
            }
        }
    } else if (flags & SQLITE_SHM_SHARED) {
        if (!(c->shared_mask & mask)) {
            if (s->lock[ofst] < 0)
                rc = SQLITE_BUSY;
            else if (s->lock[ofst] == 0)
                rc = shm_system_lock(s, F_RDLCK, ofst + SHM_BASE, n);
            if (rc == SQLITE_OK) {
                c->shared_mask |= mask;
                s->lock[ofst]++;
            }
        }
    } else {
        for (int i = ofst; i < ofst + n; i++) {
            if (!(c->excl_mask & (1u << i)) && s->lock[i]) {
                rc = SQLITE_BUSY;
                break;
            }
        }
        if (rc == SQLITE_OK) {
            rc = shm_system_lock(s, F_WRLCK, ofst + SHM_BASE, n);
            if (rc == SQLITE_OK) {
                c->excl_mask |= mask;
                for (int i = ofst; i < ofst + n; i++)
                    s->lock[i] = -1;
            }
        }
    }
    pthread_mutex_unlock(&vfs_mutex);
    return rc;
}

#if defined(__SANITIZE_THREAD__)
#define VFS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VFS_TSAN 1
#endif
#endif

static void vfs_shm_barrier(sqlite3_file *id)
{
    (void)id;
    /* The mutex below is a full barrier on its own; the fence is for
     * readers of the mapping that take no lock. ThreadSanitizer does not
     * model fences, and the mutex is what it understands. */
#ifndef VFS_TSAN
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
    pthread_mutex_lock(&vfs_mutex);
    pthread_mutex_unlock(&vfs_mutex);
}

static int vfs_shm_unmap(sqlite3_file *id, int delete_flag)
{
    struct vfs_file *p = (struct vfs_file *)id;
    struct vfs_shm_conn *c = p->shm;
    if (!c)
        return SQLITE_OK;
    pthread_mutex_lock(&vfs_mutex);
    struct vfs_shm *s = c->node;
    /* Locks this connection still holds go with it. */
    for (int i = 0; i < SQLITE_SHM_NLOCK; i++) {
        uint16_t bit = (uint16_t)(1u << i);
        if (c->excl_mask & bit) {
            shm_system_lock(s, F_UNLCK, i + SHM_BASE, 1);
            s->lock[i] = 0;
        } else if (c->shared_mask & bit) {
            if (--s->lock[i] == 0)
                shm_system_lock(s, F_UNLCK, i + SHM_BASE, 1);
        }
    }
    p->shm = NULL;
    free(c);
    shm_node_release(s, delete_flag, p->path);
    pthread_mutex_unlock(&vfs_mutex);
    return SQLITE_OK;
}

static const sqlite3_io_methods vfs_db_methods = {
    .iVersion = 2,
    .xClose = vfs_close,
    .xRead = vfs_read,
    .xWrite = vfs_write,
    .xTruncate = vfs_truncate,
    .xSync = vfs_sync,
    .xFileSize = vfs_file_size,
    .xLock = vfs_lock,
    .xUnlock = vfs_unlock,
    .xCheckReservedLock = vfs_check_reserved,
    .xFileControl = vfs_file_control,
    .xSectorSize = vfs_sector_size,
    .xDeviceCharacteristics = vfs_device_characteristics,
    .xShmMap = vfs_shm_map,
    .xShmLock = vfs_shm_lock,
    .xShmBarrier = vfs_shm_barrier,
    .xShmUnmap = vfs_shm_unmap,
};

/* Journals, WAL files and temporary files: never locked (SQLite locks only the database). */
static int vfs_nolock(sqlite3_file *id, int lock)
{
    return SQLITE_OK;
}

static int vfs_nolock_check(sqlite3_file *id, int *out)
{
    *out = 0;
    return SQLITE_OK;
}

static const sqlite3_io_methods vfs_plain_methods = {
    .iVersion = 1,
    .xClose = vfs_close,
    .xRead = vfs_read,
    .xWrite = vfs_write,
    .xTruncate = vfs_truncate,
    .xSync = vfs_sync,
    .xFileSize = vfs_file_size,
    .xLock = vfs_nolock,
    .xUnlock = vfs_nolock,
    .xCheckReservedLock = vfs_nolock_check,
    .xFileControl = vfs_file_control,
    .xSectorSize = vfs_sector_size,
    .xDeviceCharacteristics = vfs_device_characteristics,
};

/* ------------------------------------------------------------------------------------------
 * The VFS
 * ---------------------------------------------------------------------------------------- */

static sqlite3_vfs *unix_vfs(void)
{
    static sqlite3_vfs *u;
    if (!u)
        u = sqlite3_vfs_find("unix");
    return u;
}

/* The unix VFS's order: sqlite3_temp_directory (PRAGMA temp_store_directory) first. */
static const char *temp_dir(void)
{
    const char *cands[] = {sqlite3_temp_directory, getenv("SQLITE_TMPDIR"), getenv("TMPDIR"),
                           "/var/tmp", "/usr/tmp", "/tmp", "."};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        struct stat st;
        if (cands[i] && stat(cands[i], &st) == 0 && S_ISDIR(st.st_mode) &&
            access(cands[i], W_OK | X_OK) == 0)
            return cands[i];
    }
    return ".";
}

/* A journal or WAL is its database's: it takes the database's context when the database was
 * opened outside any task on this thread (the thread's context), so a WAL first opened inside
 * a task does not end up on the scheduler's context, freed with it while the connection
 * lives on. NULL: ctx_for_open() decides. */
static struct afs_ctx *ctx_of_database(const char *name, int type, struct vfs_tctx **tcp)
{
    *tcp = NULL;
#if SQLITE_VERSION_NUMBER >= 3032000
    if (type != SQLITE_OPEN_MAIN_JOURNAL && type != SQLITE_OPEN_WAL)
        return NULL;
    sqlite3_file *db = sqlite3_database_file_object(name);
    if (!db || db->pMethods != &vfs_db_methods)
        return NULL;
    struct vfs_file *m = (struct vfs_file *)db;
    if (!m->tc || pthread_getspecific(tctx_key) != m->tc) /* not this thread's context */
        return NULL;
    pthread_mutex_lock(&vfs_mutex);
    m->tc->files++;
    pthread_mutex_unlock(&vfs_mutex);
    *tcp = m->tc;
    return m->tc->ctx;
#else
    (void)name;
    (void)type;
    return NULL;
#endif
}

/* A temporary file's name: SQLite's prefix and 64 random bits, in temp_dir(). */
static void temp_name(char *buf, size_t len)
{
    uint64_t rnd;
    sqlite3_randomness(sizeof rnd, &rnd);
    snprintf(buf, len, "%s/etilqs_%016llx", temp_dir(), (unsigned long long)rnd);
}

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *id, int flags,
                    int *out_flags)
{
    struct vfs_file *p = (struct vfs_file *)id;
    memset(p, 0, sizeof *p);
    p->vfs_name = vfs->zName;
    /* As the unix VFS: SQLite's random numbers (temporary names, WAL salts, randomblob())
     * reseeded in a child process, which otherwise repeats its parent's sequence. Not in
     * the fork handler: the generator's mutex may be held by another thread there. */
    static atomic_int seeded_pid;
    int pid = (int)getpid();
    if (atomic_load_explicit(&seeded_pid, memory_order_relaxed) != pid) {
        atomic_store_explicit(&seeded_pid, pid, memory_order_relaxed);
        sqlite3_randomness(0, NULL);
    }
    int type = flags & 0x0FFFFF00;
    int is_delete = flags & SQLITE_OPEN_DELETEONCLOSE;
    int is_rw = flags & SQLITE_OPEN_READWRITE;
    char tmp[VFS_MAX_PATH];
    const char *path = name;
    if (!path) {
        temp_name(tmp, sizeof tmp);
        path = tmp;
        is_delete = 1;
    }
    int aflags = is_rw ? AFS_RDWR : AFS_RDONLY;
    if (flags & SQLITE_OPEN_CREATE)
        aflags |= AFS_CREAT;
    if (flags & SQLITE_OPEN_EXCLUSIVE)
        aflags |= AFS_EXCL;
    if (!name)
        aflags |= AFS_CREAT | AFS_EXCL;

    int err = 0;
    struct vfs_tctx *tc;
    struct afs_ctx *ctx = name ? ctx_of_database(name, type, &tc) : NULL;
    /* A temporary database and its journals live as long as the connection, which may
     * outlive the scheduler of the task that first needed them: never on its context. */
    bool temp = !name || type == SQLITE_OPEN_TEMP_DB || type == SQLITE_OPEN_TEMP_JOURNAL ||
                type == SQLITE_OPEN_SUBJOURNAL || type == SQLITE_OPEN_TRANSIENT_DB;
    if (!ctx)
        ctx = ctx_for_open(&tc, &err, temp);
    if (!ctx)
        return err == -ENOMEM ? SQLITE_NOMEM : SQLITE_CANTOPEN;
    /* Before the open: a descriptor taken from a closed connection must not be closed on
     * a failure here (that would drop the process's locks). */
    if (name && !is_delete) {
        p->path = strdup(name);
        if (!p->path) {
            tctx_release(tc);
            return SQLITE_NOMEM;
        }
    }
    struct afs_file *f = NULL;
    struct vfs_inode *reused = NULL;
    if (type == SQLITE_OPEN_MAIN_DB && name) {
        intptr_t fd = inode_take_pending(path, flags, &reused);
        if (fd >= 0 && afs_file_from_fd(ctx, (int)fd, is_rw ? AFS_RDWR : AFS_RDONLY,
                                        AFS_MODE_SYNC, &f) < 0) {
            inode_put_pending(reused, fd, flags);
            reused = NULL;
        }
    }
    struct stat owner;
    int has_owner = 0;
    mode_t mode = reused ? 0 : create_mode(name, flags, &owner, &has_owner, &err);
    if (err) {
        tctx_release(tc);
        free(p->path);
        p->path = NULL;
        set_errno(p, err);
        return SQLITE_IOERR_FSTAT;
    }
    int r = reused ? 0 : afs_open(ctx, path, aflags, mode ? mode : VFS_FILE_PERMS,
                                  AFS_MODE_SYNC, &f);
    for (int tries = 1; r == -EEXIST && !name && tries < 10; tries++) { /* as unixGetTempname */
        temp_name(tmp, sizeof tmp);
        r = afs_open(ctx, path, aflags, mode ? mode : VFS_FILE_PERMS, AFS_MODE_SYNC, &f);
    }
    bool new_journal = (flags & SQLITE_OPEN_CREATE) &&
                       (type == SQLITE_OPEN_MAIN_JOURNAL || type == SQLITE_OPEN_WAL ||
                        type == SQLITE_OPEN_SUPER_JOURNAL);
    if (r == -EACCES && new_journal && access(path, F_OK) != 0) {
        /* As the unix VFS: a journal that cannot be made in its directory. */
        tctx_release(tc);
        free(p->path);
        p->path = NULL;
        set_errno(p, EACCES);
        return SQLITE_READONLY_DIRECTORY;
    }
    if (r < 0 && is_rw && r != -EISDIR) {
        /* As the unix VFS: a database we may not write is opened read-only. */
        int ro = (aflags & ~(AFS_RDWR | AFS_CREAT | AFS_EXCL)) | AFS_RDONLY;
        if (afs_open(ctx, path, ro, 0, AFS_MODE_SYNC, &f) == 0) {
            r = 0;
            flags = (flags & ~(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) |
                    SQLITE_OPEN_READONLY;
        }
    }
    if (r < 0) {
        tctx_release(tc);
        free(p->path);
        p->path = NULL;
        set_errno(p, -r);
        return SQLITE_CANTOPEN;
    }
    if (is_delete)
        (void)unlink(path);
    p->f = f;
    p->fd = (int)afs_file_fd(f);
    /* asyncfs gives a character device no offsets (afs_pread: -ESPIPE); the unix VFS reads
     * and writes it with pread/pwrite, which /dev/null takes: an empty database. */
    struct stat dev;
    if (afs_file_open_size(f) < 0 && fstat(p->fd, &dev) == 0 && S_ISCHR(dev.st_mode))
        p->chardev = 1;
    p->tc = tc;
    p->open_flags = flags;
    /* The unix VFS's default, SQLITE_POWERSAFE_OVERWRITE, unless the URI says otherwise. */
    p->psow = (unsigned char)sqlite3_uri_boolean((flags & SQLITE_OPEN_URI) ? name : NULL,
                                                 "psow", 1);
    if ((flags & SQLITE_OPEN_READWRITE) && (mode || has_owner))
        file_take_owner(p->fd, mode, has_owner ? &owner : NULL);
    if (type == SQLITE_OPEN_MAIN_DB && name)
        p->readonly_shm = (unsigned char)sqlite3_uri_boolean(name, "readonly_shm", 0);
    if (type == SQLITE_OPEN_MAIN_DB) {
        p->inode = reused;
        if (!p->inode) {
            pthread_mutex_lock(&vfs_mutex);
            p->inode = inode_find(p->fd, &err);
            pthread_mutex_unlock(&vfs_mutex);
        }
        if (!p->inode) {
            afs_close(f);
            tctx_release(tc);
            free(p->path);
            p->f = NULL;
            p->path = NULL;
            set_errno(p, err);
            return err == ENOMEM ? SQLITE_NOMEM : SQLITE_CANTOPEN;
        }
        p->base.pMethods = &vfs_db_methods;
    } else {
        /* A new journal's or WAL's name must be durable with its contents. */
        if (new_journal && p->path)
            p->dirsync = 1;
        p->base.pMethods = &vfs_plain_methods;
    }
    if (out_flags)
        *out_flags = flags;
    return SQLITE_OK;
}

static int vfs_delete(sqlite3_vfs *vfs, const char *name, int dirsync)
{
    struct afs_waiter *w = afs_waiter_get();
    struct afs_ctx *ctx = w && w->ctx && w->current(w) ? w->ctx : NULL;
    int r;
    if (ctx)
        r = afs_unlinkat(ctx, AFS_AT_FDCWD, name, 0);
    else
        r = unlink(name) < 0 ? -errno : 0;
    if (r == -ENOENT)
        return SQLITE_IOERR_DELETE_NOENT;
    if (r < 0) {
        set_errno(NULL, -r);
        return SQLITE_IOERR_DELETE;
    }
    return dirsync ? sync_dir(ctx, name, NULL) : SQLITE_OK;
}

static int vfs_access(sqlite3_vfs *vfs, const char *name, int what, int *out)
{
    struct stat st;
    if (what == SQLITE_ACCESS_EXISTS)
        *out = stat(name, &st) == 0 && (!S_ISREG(st.st_mode) || st.st_size > 0);
    else
        *out = access(name, W_OK | R_OK) == 0;
    return SQLITE_OK;
}

/* The unix VFS's: symlinks resolved (a database reached by two paths has one journal, WAL
 * and -shm), SQLITE_OK_SYMLINK when there were any (SQLITE_OPEN_NOFOLLOW then refuses). */
static int vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    sqlite3_vfs *u = unix_vfs();
    if (u && u->xFullPathname) {
        int rc = u->xFullPathname(u, name, n, out);
        if (rc != SQLITE_OK && rc != SQLITE_OK_SYMLINK)
            set_errno(NULL, errno);
        return rc;
    }
    if (name[0] == '/') {
        if ((int)strlen(name) >= n)
            return SQLITE_CANTOPEN;
        strcpy(out, name);
        return SQLITE_OK;
    }
    char cwd[VFS_MAX_PATH];
    if (!getcwd(cwd, sizeof cwd))
        return SQLITE_CANTOPEN;
    if (snprintf(out, (size_t)n, "%s/%s", cwd, name) >= n)
        return SQLITE_CANTOPEN;
    return SQLITE_OK;
}

static void *vfs_dlopen(sqlite3_vfs *vfs, const char *name)
{
    return unix_vfs()->xDlOpen(unix_vfs(), name);
}

static void vfs_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
    unix_vfs()->xDlError(unix_vfs(), n, msg);
}

static void (*vfs_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
    return unix_vfs()->xDlSym(unix_vfs(), h, sym);
}

static void vfs_dlclose(sqlite3_vfs *vfs, void *h)
{
    unix_vfs()->xDlClose(unix_vfs(), h);
}

static int vfs_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    return unix_vfs()->xRandomness(unix_vfs(), n, out);
}

/* Inside a corio task only the task sleeps: the other connections' tasks go on (the one
 * holding the lock among them). */
static int vfs_sleep(sqlite3_vfs *vfs, int us)
{
    struct corio_task *t = corio_current();
    if (t) {
        corio_sleep(t, (int64_t)us * 1000);
        return us;
    }
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
    return us;
}

static int vfs_current_time(sqlite3_vfs *vfs, double *out)
{
    return unix_vfs()->xCurrentTime(unix_vfs(), out);
}

static int vfs_get_last_error(sqlite3_vfs *vfs, int n, char *msg)
{
    return vfs_errno;
}

static int vfs_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    return unix_vfs()->xCurrentTimeInt64(unix_vfs(), out);
}

static const sqlite3_vfs vfs_template = {
    .iVersion = 2,
    .szOsFile = sizeof(struct vfs_file),
    .mxPathname = VFS_MAX_PATH - 1,
    .zName = "asyncfs",
    .xOpen = vfs_open,
    .xDelete = vfs_delete,
    .xAccess = vfs_access,
    .xFullPathname = vfs_full_pathname,
    .xDlOpen = vfs_dlopen,
    .xDlError = vfs_dlerror,
    .xDlSym = vfs_dlsym,
    .xDlClose = vfs_dlclose,
    .xRandomness = vfs_randomness,
    .xSleep = vfs_sleep,
    .xCurrentTime = vfs_current_time,
    .xGetLastError = vfs_get_last_error,
    .xCurrentTimeInt64 = vfs_current_time_int64,
};

struct vfs_named {
    sqlite3_vfs       vfs;
    char              name[64];
    struct vfs_named *next;
};

static struct vfs_named *registered;

int afs_sqlite_vfs_register(const char *name, int make_default)
{
    if (!name)
        name = "asyncfs";
    if (strlen(name) >= sizeof registered->name)
        return -EINVAL;
    pthread_once(&tctx_once, tctx_key_make);
    if (sqlite3_initialize() != SQLITE_OK || !unix_vfs())
        return -EIO;
    pthread_mutex_lock(&vfs_mutex);
    struct vfs_named *v = registered;
    while (v && strcmp(v->name, name) != 0)
        v = v->next;
    if (!v) {
        v = calloc(1, sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&vfs_mutex);
            return -ENOMEM;
        }
        v->vfs = vfs_template;
        strcpy(v->name, name);
        v->vfs.zName = v->name;
        v->next = registered;
        registered = v; /* kept for the life of the process, as SQLite holds it */
    }
    pthread_mutex_unlock(&vfs_mutex);
    /* Registering again would move it after the default, which it may be. */
    if (!make_default && sqlite3_vfs_find(name) == &v->vfs)
        return 0;
    return sqlite3_vfs_register(&v->vfs, make_default != 0) == SQLITE_OK ? 0 : -EIO;
}
