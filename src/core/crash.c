/* The crash simulator (include/asyncfs_crash.h): a layer under the ops of one context. Writes
 * go through to the files; beside them each file keeps its durable image (its contents as
 * of its last sync) and the changes made since, in completion order. A sync folds the
 * changes it covers into the image; the reboot replays the image plus the changes that
 * "reached the disk" and writes the result over the part of the file they touched.
 * Everything here runs on the context's thread: ops are seen when they start (queued or run
 * inline) and when they complete (before their callback), never from a pool worker. */
#include "internal.h"
#include "asyncfs_crash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum rec_kind {
    REC_WRITE = 1, /* off, len, data */
    REC_SIZE,      /* the file's size set to off (a truncation) */
    REC_FALLOC,    /* fallocate of [off, off + len) with mode `mode` (AFS_FALLOC_*) */
    REC_SYNC,      /* an fsync of cf in flight; covers changes stamped up to snap */
    REC_SYNCFS,    /* a syncfs in flight: every file */
    REC_DIRSYNC,   /* an fsync of a file the simulator does not track (a directory) */
    REC_NAME       /* strict mode: a name op in flight (nrec) */
};

/* Strict mode (AFS_CRASH_STRICT_DIRS): a name op that succeeded, undone at the reboot unless
 * a sync of its directory (both, for a rename) completed after it. Directories are held open
 * so that the undo finds them whatever happened to their paths. */
enum nrec_kind { N_CREATE = 1, N_MKDIR, N_RENAME, N_UNLINK, N_RMDIR };

struct nrec {
    struct nrec *next;
    uint8_t      kind;
    bool         synced, synced2; /* its directory (rename: the new name's) was synced */
    int          dfd, dfd2;       /* the directories of the name (and of the new name) */
    char        *base, *base2;    /* the names in them */
    char        *stash;           /* a hard link keeping the file an unlink removed or a rename
                                     replaced, in dfd (unlink) or dfd2 (rename) */
    unsigned     mode;            /* rmdir: the directory's permissions */
    uint64_t     stamp;
};

/* One change or sync. Changes wait on the in-flight list until their op completes, then on
 * their file's list in completion order until a sync folds them or the reboot replays them. */
struct rec {
    struct rec             *next;
    struct afs__crash_file *cf;
    struct afs_op          *op;    /* while in flight */
    uint64_t                seq;   /* the op's number: its decision comes from seed and seq */
    uint64_t                stamp; /* completion order (changes), or what a sync covers */
    uint64_t                off, len;
    unsigned char          *data;
    struct nrec            *name;   /* REC_NAME */
    uint8_t                 kind;
    uint8_t                 mode;   /* REC_FALLOC */
    bool                    failed; /* the op failed: taken as never written */
    bool                    durable; /* a write durable when it completed (AFS_WRITE_DSYNC,
                                        an AFS_DSYNC file), or a change a sync made durable
                                        after an unsure one: in the image and always kept */
    bool                    unsure; /* covered by a sync that failed: volatile for good (the
                                       kernel may have dropped it and marked its pages clean,
                                       so no later sync writes it) */
};

/* A file's contents in memory, as one buffer. */
struct img {
    unsigned char *buf;
    uint64_t       cap;
    uint64_t       size;
};

struct afs__crash_file {
    struct afs__crash_file *next;
    afs__fd_t               fd;       /* the simulator's own read-write descriptor */
    bool                    dup;      /* fd shares the user's open file (no reopen possible) */
    bool                    loaded;   /* img holds the durable contents */
    struct img              img;
    uint64_t                cur_size; /* the size once every change queued so far has run:
                                         where an AFS_APPEND write lands */
    struct rec             *head, *tail; /* completed changes not yet synced */
    unsigned                users;    /* open afs_files pointing here */
};

struct afs__crash {
    struct afs_crash_options opt;
    uint64_t                 ops;    /* ops started */
    uint64_t                 cut_at; /* the op number of the cut, 0 for none */
    uint64_t                 cut_op; /* the op the cut failed, 0 when it came otherwise */
    bool                     cut;
    uint64_t                 stamp;  /* changes completed */
    struct rec              *inflight;
    struct afs__crash_file  *files;
    struct nrec             *names, *names_tail; /* strict mode, completion order */
    uint64_t                 stashes;            /* stash names made */
};

/* ------------------------------------------------------------------------------------------
 * Randomness: a pure function of the seed and the op (splitmix64), so that the outcome does
 * not depend on timing or on the backend.
 * ---------------------------------------------------------------------------------------- */

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t rnd(const struct afs__crash *c, uint64_t a, uint64_t b)
{
    return mix(mix(mix(c->opt.seed) ^ a) ^ b);
}

/* ------------------------------------------------------------------------------------------
 * Images
 * ---------------------------------------------------------------------------------------- */

static int img_reserve(struct img *m, uint64_t n)
{
    if (n <= m->cap)
        return 0;
    if (n > (uint64_t)SIZE_MAX / 2)
        return -EFBIG;
    uint64_t cap = m->cap ? m->cap : 4096;
    while (cap < n)
        cap *= 2;
    unsigned char *p = afs__sys.realloc(m->buf, (size_t)cap);
    if (!p)
        return -ENOMEM;
    m->buf = p;
    m->cap = cap;
    return 0;
}

/* Sets the size; bytes that come into the file read as zeros. */
static int img_resize(struct img *m, uint64_t n)
{
    if (n > m->size) {
        int err = img_reserve(m, n);
        if (err < 0)
            return err;
        memset(m->buf + m->size, 0, (size_t)(n - m->size));
    }
    m->size = n;
    return 0;
}

static int img_write(struct img *m, uint64_t off, const void *p, uint64_t len)
{
    if (len == 0)
        return 0; /* an empty image has no buffer: memcpy must not see NULL */
    if (off + len > m->size) {
        int err = img_resize(m, off + len);
        if (err < 0)
            return err;
    }
    memcpy(m->buf + off, p, (size_t)len);
    return 0;
}

/* fallocate: mode 0 and ZERO_RANGE move the end past the range (unless KEEP_SIZE); PUNCH_HOLE
 * and ZERO_RANGE make the range (inside the file) read as zeros. */
static int img_falloc(struct img *m, const struct rec *r)
{
    uint64_t end = r->off + r->len;
    if (!(r->mode & (AFS_FALLOC_KEEP_SIZE | AFS_FALLOC_PUNCH_HOLE)) && end > m->size) {
        int err = img_resize(m, end);
        if (err < 0)
            return err;
    }
    if ((r->mode & (AFS_FALLOC_PUNCH_HOLE | AFS_FALLOC_ZERO_RANGE)) && r->off < m->size)
        memset(m->buf + r->off, 0, (size_t)(AFS_MIN(end, m->size) - r->off));
    return 0;
}

/* Applies a change in full. */
static int img_apply(struct img *m, const struct rec *r)
{
    if (r->kind == REC_SIZE)
        return img_resize(m, r->off);
    if (r->kind == REC_FALLOC)
        return img_falloc(m, r);
    return img_write(m, r->off, r->data, r->len);
}

static int read_all(afs__fd_t fd, struct img *m)
{
    int64_t size = afs__sys_size(fd);
    if (size < 0)
        return (int)size;
    int err = img_reserve(m, (uint64_t)size);
    if (err < 0)
        return err;
    uint64_t got = 0;
    while (got < (uint64_t)size) {
        ssize_t r = afs__sys.pread(fd, m->buf + got, (size_t)((uint64_t)size - got), got);
        if (r == -EINTR || r == -EAGAIN)
            continue;
        if (r < 0)
            return (int)r;
        if (r == 0)
            break; /* shrunk meanwhile: what is there is the file */
        got += (uint64_t)r;
    }
    m->size = got;
    return 0;
}

static int set_size(afs__fd_t fd, uint64_t size)
{
    int err;
    do
        err = afs__sys.ftruncate(fd, size);
    while (err == -EINTR || err == -EAGAIN);
    return err;
}

static int write_all(afs__fd_t fd, const unsigned char *p, uint64_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t r = afs__sys.pwrite(fd, p, (size_t)AFS_MIN(len, AFS__CHUNK_MAX), off);
        if (r == -EINTR || r == -EAGAIN)
            continue;
        if (r <= 0)
            return r < 0 ? (int)r : -EIO;
        p += r;
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Files
 * ---------------------------------------------------------------------------------------- */

static void nrec_free(struct nrec *n, bool unstash)
{
    if (!n)
        return;
    if (n->stash && unstash)
        (void)afs__sys_unlinkat(n->kind == N_RENAME ? n->dfd2 : n->dfd, n->stash, 0);
    if (n->dfd >= 0)
        afs__sys_close_fd(n->dfd);
    if (n->dfd2 >= 0)
        afs__sys_close_fd(n->dfd2);
    free(n->base);
    free(n->base2);
    free(n->stash);
    free(n);
}

static void rec_free(struct rec *r)
{
    nrec_free(r->name, true);
    free(r->data);
    free(r);
}

static void cf_free(struct afs__crash_file *cf)
{
    for (struct rec *r = cf->head, *n; r; r = n) {
        n = r->next;
        rec_free(r);
    }
    afs__sys_close(cf->fd);
    free(cf->img.buf);
    free(cf);
}

/* The durable image, read at the file's first change: what was there before crash mode, or
 * before the first write, counts as durable. */
static int cf_load(struct afs__crash_file *cf)
{
    if (cf->loaded)
        return 0;
    int err = read_all(cf->fd, &cf->img);
    if (err < 0)
        return err;
    cf->loaded = true;
    cf->cur_size = cf->img.size;
    return 0;
}

int afs__crash_attach(struct afs_ctx *ctx, struct afs_file *f, const char *path, bool trunc)
{
    struct afs__crash *c = ctx->crash;
    if (c->cut)
        return -EIO;
    int acc = f->flags & (AFS_RDONLY | AFS_WRONLY | AFS_RDWR);
    if (f->seq || (acc == AFS_RDONLY && !trunc))
        return 0; /* nothing written through it, or not storage */
    struct afs__crash_file *cf = c->files;
    /* The same file opened twice shares one record. A file's other descriptor is never
     * opened and closed here to find out: closing it would drop the process's POSIX locks on
     * the file (SQLite's, say). */
    while (cf && !afs__sys_same_file(cf->fd, f->fd))
        cf = cf->next;
    if (!cf) {
        cf = afs__sys.calloc(1, sizeof *cf);
        if (!cf)
            return -ENOMEM;
        int err = afs__sys_crash_reopen(f->fd, path, &cf->fd, &cf->dup);
        if (err < 0) {
            free(cf);
            return err;
        }
        cf->next = c->files;
        c->files = cf;
    }
    if (trunc) {
        /* O_TRUNC, done here so that it can be undone: a size change like any other. */
        int err = cf_load(cf);
        struct rec *r = err < 0 ? NULL : afs__sys.calloc(1, sizeof *r);
        if (err == 0 && !r)
            err = -ENOMEM;
        if (err == 0 && (err = set_size(f->fd, 0)) < 0)
            free(r);
        if (err < 0)
            return err;
        r->kind = REC_SIZE;
        r->cf = cf;
        r->seq = c->ops | (1ull << 63); /* not the number of an op: its own decision */
        r->stamp = ++c->stamp;
        if (cf->tail)
            cf->tail->next = r;
        else
            cf->head = r;
        cf->tail = r;
        cf->cur_size = 0;
    }
    cf->users++;
    f->crash = cf;
    return 0;
}

void afs__crash_detach(struct afs_file *f)
{
    if (f->crash)
        f->crash->users--;
    f->crash = NULL;
}

int afs__crash_gate(const struct afs_ctx *ctx)
{
    return ctx->crash && ctx->crash->cut ? -EIO : 0;
}

/* ------------------------------------------------------------------------------------------
 * Strict mode: names
 * ---------------------------------------------------------------------------------------- */

static char *str_dup(const char *s, size_t n)
{
    char *p = afs__sys.malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* Opens the directory that holds path (relative to dirfd) and gives its last component. */
static int parent(int dirfd, const char *path, int *dfd, char **base)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/')
        b--;
    if (n == b || (n - b == 1 && path[b] == '.') ||
        (n - b == 2 && path[b] == '.' && path[b + 1] == '.'))
        return -EINVAL; /* "/", ".", "..": not a name in a directory */
    char *dir = b ? str_dup(path, b) : str_dup(".", 1);
    char *name = str_dup(path + b, n - b);
    int fd = dir && name ? afs__sys_openat(dirfd, dir, AFS_RDONLY | AFS_DIRECTORY, 0) : -ENOMEM;
    free(dir);
    if (fd < 0) {
        free(name);
        return fd;
    }
    *dfd = fd;
    *base = name;
    return 0;
}

/* Keeps the file at dfd/name alive under a new name in the same directory. */
static int stash(struct afs__crash *c, int dfd, const char *name, char **out)
{
    char buf[64];
    snprintf(buf, sizeof buf, ".afs-crash-%llx-%llu", (unsigned long long)(uintptr_t)c,
             (unsigned long long)++c->stashes);
    int err = afs__sys_crash_link(dfd, name, buf);
    if (err < 0)
        return err;
    if (!(*out = str_dup(buf, strlen(buf)))) {
        (void)afs__sys_unlinkat(dfd, buf, 0);
        return -ENOMEM;
    }
    return 0;
}

#define MODE_DIR(m) (((m) & 0170000u) == 0040000u)

/* Before a name op runs: what it takes to undo it, or NULL when it needs no undo or cannot
 * have one (the op then runs unmodelled: a name it could not undo stays). */
static struct nrec *name_begin(struct afs__crash *c, enum afs__code code, int dirfd,
                               const char *path, int dirfd2, const char *path2, int flags)
{
    if (!(c->opt.flags & AFS_CRASH_STRICT_DIRS) || !path)
        return NULL;
    enum nrec_kind kind;
    switch (code) {
    case AFS__OPENAT:
        if (!(flags & AFS_CREAT))
            return NULL;
        kind = N_CREATE;
        break;
    case AFS__MKDIRAT: kind = N_MKDIR; break;
    case AFS__RENAMEAT:
        if (!path2)
            return NULL;
        kind = N_RENAME;
        break;
    case AFS__UNLINKAT: kind = (flags & AFS_AT_REMOVEDIR) ? N_RMDIR : N_UNLINK; break;
    default: return NULL;
    }
    struct nrec *n = afs__sys.calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->kind = (uint8_t)kind;
    n->dfd = n->dfd2 = -1;
    struct afs_stat st;
    bool ok = parent(dirfd, path, &n->dfd, &n->base) == 0;
    bool exists = ok && afs__sys_statx(n->dfd, n->base, AFS_AT_SYMLINK_NOFOLLOW, &st) == 0;
    switch (kind) {
    case N_CREATE:
    case N_MKDIR: ok = ok && !exists; break; /* an existing name is not created */
    case N_UNLINK: ok = exists && stash(c, n->dfd, n->base, &n->stash) == 0; break;
    case N_RMDIR:
        ok = exists;
        n->mode = st.mode & 07777u;
        break;
    case N_RENAME:
        ok = exists && parent(dirfd2, path2, &n->dfd2, &n->base2) == 0;
        /* The file a rename replaces comes back with its undo. */
        if (ok && afs__sys_statx(n->dfd2, n->base2, AFS_AT_SYMLINK_NOFOLLOW, &st) == 0)
            ok = !MODE_DIR(st.mode) && stash(c, n->dfd2, n->base2, &n->stash) == 0;
        break;
    }
    if (!ok) {
        nrec_free(n, true);
        return NULL;
    }
    return n;
}

/* After it: a name op that succeeded waits for a sync of its directory. */
static void name_end(struct afs__crash *c, struct nrec *n, bool ok)
{
    if (!n)
        return;
    if (!ok) {
        nrec_free(n, true);
        return;
    }
    n->stamp = ++c->stamp;
    if (c->names_tail)
        c->names_tail->next = n;
    else
        c->names = n;
    c->names_tail = n;
}

/* A sync of directory `dir` (all: of everything) succeeded: the name ops completed by snap
 * in it are durable. */
static void names_synced(struct afs__crash *c, afs__fd_t dir, uint64_t snap, bool all)
{
    for (struct nrec *n = c->names; n && n->stamp <= snap; n = n->next) {
        if (all || afs__sys_same_file((afs__fd_t)(intptr_t)n->dfd, dir))
            n->synced = true;
        if (n->dfd2 >= 0 && (all || afs__sys_same_file((afs__fd_t)(intptr_t)n->dfd2, dir)))
            n->synced2 = true;
    }
}

void *afs__crash_open_begin(struct afs_ctx *ctx, const char *path, int flags)
{
    return name_begin(ctx->crash, AFS__OPENAT, AFS_AT_FDCWD, path, 0, NULL, flags);
}

void afs__crash_open_end(struct afs_ctx *ctx, void *token, bool ok)
{
    name_end(ctx->crash, token, ok);
}

static void drop_stash(struct nrec *n)
{
    free(n->stash);
    n->stash = NULL;
}

/* The reboot, strict mode: every name op not made durable is undone, the latest first. */
static void names_undo(struct afs__crash *c, struct afs_crash_report *rep)
{
    size_t count = 0;
    for (struct nrec *n = c->names; n; n = n->next)
        count++;
    struct nrec **v = count ? afs__sys.malloc(count * sizeof *v) : NULL;
    size_t i = 0;
    for (struct nrec *n = c->names; n && v; n = n->next)
        v[i++] = n;
    while (v && i-- > 0) {
        struct nrec *n = v[i];
        if (n->synced && (n->kind != N_RENAME || n->synced2))
            continue;
        int err = 0;
        switch (n->kind) {
        case N_CREATE: err = afs__sys_unlinkat(n->dfd, n->base, 0); break;
        case N_MKDIR:
            err = afs__sys_unlinkat(n->dfd, n->base, AFS_AT_REMOVEDIR);
            /* Names made durable inside it go with it: its own name never was. */
            if (err == -ENOTEMPTY || err == -EEXIST)
                err = afs__sys_rmtree_at(n->dfd, n->base);
            break;
        case N_RMDIR: err = afs__sys_mkdirat(n->dfd, n->base, n->mode); break;
        case N_UNLINK:
            err = afs__sys_renameat(n->dfd, n->stash, n->dfd, n->base, 0);
            if (err == 0)
                drop_stash(n); /* it is the name again */
            break;
        case N_RENAME:
            err = afs__sys_renameat(n->dfd2, n->base2, n->dfd, n->base, 0);
            if (err == 0 && n->stash &&
                (err = afs__sys_renameat(n->dfd2, n->stash, n->dfd2, n->base2, 0)) == 0)
                drop_stash(n);
            break;
        }
        rep->names_undone += err == 0;
    }
    free(v);
    for (struct nrec *n = c->names, *next; n; n = next) {
        next = n->next;
        nrec_free(n, true);
    }
    c->names = c->names_tail = NULL;
}

/* ------------------------------------------------------------------------------------------
 * Ops: start and completion
 * ---------------------------------------------------------------------------------------- */

/* Ops on files and paths; the others (pipes, sockets) are not storage. */
static bool counted(const struct afs__op *o)
{
    return !o->file->seq;
}

static int rec_new(struct afs__crash *c, struct afs_op *op, enum rec_kind kind,
                   struct afs__crash_file *cf, struct rec **out)
{
    struct rec *r = afs__sys.calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->kind = (uint8_t)kind;
    r->cf = cf;
    r->op = op;
    r->seq = c->ops;
    r->next = c->inflight;
    c->inflight = r;
    *out = r;
    return 0;
}

/* A write starts: its data is copied now (the caller's buffer is the library's until the
 * callback, so it holds what the kernel will write). */
static int start_write(struct afs__crash *c, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    struct afs__crash_file *cf = o->file->crash;
    if (!cf || o->total == 0)
        return 0;
    int err = cf_load(cf);
    if (err < 0)
        return err;
    unsigned char *data = afs__sys.malloc(o->total);
    if (!data)
        return -ENOMEM;
    if (o->code == AFS__WRITE) {
        memcpy(data, o->u.buf, o->total);
    } else {
        size_t at = 0;
        for (size_t i = 0; i < o->len; i++) {
            if (o->u.iov[i].iov_len) /* an empty iovec may have a NULL base */
                memcpy(data + at, o->u.iov[i].iov_base, o->u.iov[i].iov_len);
            at += o->u.iov[i].iov_len;
        }
    }
    struct rec *r;
    if ((err = rec_new(c, op, REC_WRITE, cf, &r)) < 0) {
        free(data);
        return err;
    }
    r->off = (o->file->flags & AFS_APPEND) ? cf->cur_size : o->off;
    r->len = o->total;
    r->data = data;
    if (r->off + r->len > cf->cur_size)
        cf->cur_size = r->off + r->len;
    return 0;
}

/* A truncation or fallocate starts: a change of the size and of zeros, no data to copy. */
static int start_size(struct afs__crash *c, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    struct afs__crash_file *cf = o->file->crash;
    if (!cf)
        return 0;
    int err = cf_load(cf);
    struct rec *r;
    if (err < 0 || (err = rec_new(c, op, o->code == AFS__FTRUNCATE ? REC_SIZE : REC_FALLOC, cf,
                                  &r)) < 0)
        return err;
    r->off = o->off;
    r->len = o->total;
    r->mode = o->arg;
    if (r->kind == REC_SIZE)
        cf->cur_size = r->off;
    else if (!(r->mode & (AFS_FALLOC_KEEP_SIZE | AFS_FALLOC_PUNCH_HOLE)))
        cf->cur_size = AFS_MAX(cf->cur_size, r->off + r->len);
    return 0;
}

/* The tracked file that fd is a descriptor of, whichever descriptor it is: fsync(2) syncs
 * the file, not the descriptor (a read-only one, or another open of it, included). */
static struct afs__crash_file *cf_of_fd(struct afs__crash *c, afs__fd_t fd)
{
    struct afs__crash_file *cf = c->files;
    while (cf && !afs__sys_same_file(cf->fd, fd))
        cf = cf->next;
    return cf;
}

int afs__crash_start(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__crash *c = ctx->crash;
    struct afs__op *o = afs__op(op);
    if (!counted(o))
        return 0;
    if (c->cut)
        return -EIO;
    if (c->cut_at && c->ops + 1 >= c->cut_at) {
        c->cut = true;
        c->cut_op = c->ops + 1;
        return -EIO;
    }
    c->ops++;
    struct rec *r;
    switch (o->code) {
    case AFS__WRITE:
    case AFS__WRITEV:
        return start_write(c, op);
    case AFS__FTRUNCATE:
    case AFS__FALLOCATE:
        return start_size(c, op);
    case AFS__FSYNC: {
        struct afs__crash_file *cf = o->file->crash ? o->file->crash : cf_of_fd(c, o->file->fd);
        if (!cf && !(c->opt.flags & AFS_CRASH_STRICT_DIRS))
            return 0;
        if (rec_new(c, op, cf ? REC_SYNC : REC_DIRSYNC, cf, &r) < 0)
            return -ENOMEM;
        r->stamp = c->stamp; /* the changes completed so far */
        return 0;
    }
    case AFS__OPENAT:
    case AFS__MKDIRAT:
    case AFS__RENAMEAT:
    case AFS__UNLINKAT: {
        const struct afs__meta *m = &o->meta;
        struct nrec *n = name_begin(c, o->code, m->dirfd, o->u.buf, m->dirfd2, m->path2,
                                    m->flags);
        if (n && rec_new(c, op, REC_NAME, NULL, &r) < 0) {
            nrec_free(n, true);
            return -ENOMEM;
        }
        if (n)
            r->name = n;
        return 0;
    }
    case AFS__FSYNC_FD: {
        /* fsync(2) of a descriptor: the file it belongs to, or a directory's names. */
        struct afs__crash_file *cf = cf_of_fd(c, (afs__fd_t)(intptr_t)o->meta.dirfd);
        if (!cf && !(c->opt.flags & AFS_CRASH_STRICT_DIRS))
            return 0;
        if (rec_new(c, op, cf ? REC_SYNC : REC_DIRSYNC, cf, &r) < 0)
            return -ENOMEM;
        r->stamp = c->stamp;
        return 0;
    }
    case AFS__SYNCFS:
        if (rec_new(c, op, REC_SYNCFS, NULL, &r) < 0)
            return -ENOMEM;
        r->stamp = c->stamp;
        return 0;
    default:
        return 0;
    }
}

/* A sync succeeded: the changes of cf completed by `snap` are durable. Up to the first unsure
 * change they join the image and leave the list; an unsure one stays volatile, and the
 * changes after it join the image but stay on the list as durable ones, so that the reboot
 * replays them above it. */
static void commit(struct afs__crash_file *cf, uint64_t snap)
{
    while (cf->head && cf->head->stamp <= snap && !cf->head->unsure) {
        struct rec *r = cf->head;
        cf->head = r->next;
        if (!cf->head)
            cf->tail = NULL;
        /* An image that cannot grow (out of memory) keeps the change pending instead:
         * the reboot then may drop what the program was told is durable, but never
         * invents data. */
        if (!r->failed && img_apply(&cf->img, r) < 0) {
            r->next = cf->head;
            cf->head = r;
            if (!cf->tail)
                cf->tail = r;
            return;
        }
        rec_free(r);
    }
    for (struct rec *r = cf->head; r && r->stamp <= snap; r = r->next)
        if (!r->unsure && !r->failed && !r->durable)
            r->durable = img_apply(&cf->img, r) == 0;
}

/* A sync failed: the changes of cf it covered may be lost for good (fsyncgate). */
static void unsure(struct afs__crash_file *cf, uint64_t snap)
{
    for (struct rec *r = cf->head; r && r->stamp <= snap; r = r->next)
        if (!r->durable)
            r->unsure = true;
}

/* A change failed: the file's end is where the kernel left it, not where the change would
 * have put it (size, as the file says now), and the next AFS_APPEND write lands there. Taken
 * once no other change of its size is in flight (one would move the end again). */
static void relearn_size(struct afs__crash *c, struct afs__crash_file *cf, int64_t size)
{
    for (struct rec *q = c->inflight; q; q = q->next)
        if (q->cf == cf && (q->kind == REC_WRITE || q->kind == REC_SIZE || q->kind == REC_FALLOC))
            return;
    if (size >= 0)
        cf->cur_size = (uint64_t)size;
}

/* A write that failed part way (-ENOSPC, -EFBIG) may have written a prefix, and the file
 * holds it (asyncfs.h): the change is what the region holds now, up to the file's end, read
 * back; nothing when the file ends before it. */
static void keep_what_a_failed_write_left(struct rec *r, int64_t size)
{
    if (size <= 0 || (uint64_t)size <= r->off)
        return;
    uint64_t end = AFS_MIN(r->off + r->len, (uint64_t)size), got = 0;
    while (r->off + got < end) {
        ssize_t n = afs__sys.pread(r->cf->fd, r->data + got, (size_t)(end - r->off - got),
                                   r->off + got);
        if (n == -EINTR || n == -EAGAIN)
            continue;
        if (n <= 0)
            break;
        got += (uint64_t)n;
    }
    if (got == 0)
        return;
    r->len = got;
    r->failed = false;
}

void afs__crash_done(struct afs_ctx *ctx, struct afs_op *op, ssize_t *res)
{
    struct afs__crash *c = ctx->crash;
    struct afs__op *o = afs__op(op);
    if (!counted(o))
        return;
    struct rec **p = &c->inflight;
    while (*p && (*p)->op != op)
        p = &(*p)->next;
    struct rec *r = *p;
    if (r) {
        *p = r->next;
        r->next = NULL;
        r->op = NULL;
        switch (r->kind) {
        case REC_WRITE:
        case REC_SIZE:
        case REC_FALLOC:
            r->stamp = ++c->stamp;
            r->failed = *res < 0;
            if (r->failed) {
                int64_t size = afs__sys_size(r->cf->fd); /* where the kernel left the end */
                relearn_size(c, r->cf, size);
                if (r->kind == REC_WRITE)
                    keep_what_a_failed_write_left(r, size);
            }
            if (r->cf->tail)
                r->cf->tail->next = r;
            else
                r->cf->head = r;
            r->cf->tail = r;
            /* A write durable when it completes: in the image now, and kept at the reboot
             * (it stays on the list so that older changes replayed below it stay below). */
            if (r->kind == REC_WRITE && *res >= 0 && !c->cut &&
                ((o->xflags & AFS__X_DSYNC) || (o->file->flags & AFS_DSYNC)))
                r->durable = img_apply(&r->cf->img, r) == 0;
            r = NULL;
            break;
        case REC_SYNC:
            if (*res == 0 && !c->cut)
                commit(r->cf, r->stamp);
            else if (*res < 0 && !c->cut)
                unsure(r->cf, r->stamp);
            break;
        case REC_SYNCFS:
            if (*res == 0 && !c->cut) {
                for (struct afs__crash_file *cf = c->files; cf; cf = cf->next)
                    commit(cf, r->stamp);
                names_synced(c, AFS__FD_NONE, r->stamp, true);
            } else if (*res < 0 && !c->cut) {
                for (struct afs__crash_file *cf = c->files; cf; cf = cf->next)
                    unsure(cf, r->stamp);
            }
            break;
        case REC_DIRSYNC:
            if (*res == 0 && !c->cut)
                names_synced(c,
                             o->code == AFS__FSYNC_FD ? (afs__fd_t)(intptr_t)o->meta.dirfd
                                                      : o->file->fd,
                             r->stamp, false);
            break;
        case REC_NAME:
            name_end(c, r->name, *res >= 0);
            r->name = NULL;
            break;
        }
        if (r)
            rec_free(r);
    }
    if (c->cut && *res != -EIO) {
        /* A new descriptor would be lost behind the error: close it. */
        if (o->code == AFS__OPENAT && *res >= 0)
            afs__sys_close_fd((int)*res);
        *res = -EIO;
    }
}

/* ------------------------------------------------------------------------------------------
 * The public calls
 * ---------------------------------------------------------------------------------------- */

void afs_crash_options_default(struct afs_crash_options *o)
{
    AFS_CHECK(o != NULL, "options are NULL");
    memset(o, 0, sizeof *o);
    o->sector_size = 512;
}

int afs_crash_enable(struct afs_ctx *ctx, const struct afs_crash_options *opts)
{
    afs__ctx_check(ctx, __func__);
    if (!opts)
        return -EINVAL;
    unsigned s = opts->sector_size ? opts->sector_size : 512;
    if ((s & (s - 1)) || s > (1u << 20) || opts->policy > AFS_CRASH_TEAR ||
        (opts->flags & ~(AFS_CRASH_GARBAGE | AFS_CRASH_STRICT_DIRS)))
        return -EINVAL;
    if ((opts->flags & AFS_CRASH_STRICT_DIRS) && !afs__sys_meta_supported())
        return -ENOTSUP;
    if (ctx->crash)
        return -EALREADY;
    if (ctx->files.first || afs__ctx_pending(ctx))
        return -EBUSY;
    struct afs__crash *c = afs__sys.calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->opt = *opts;
    c->opt.sector_size = s;
    c->cut_at = opts->cut_at_op;
    if (!c->cut_at && opts->cut_op_max)
        c->cut_at = 1 + rnd(c, 0, 0) % opts->cut_op_max;
    ctx->crash = c;
    return 0;
}

int afs_crash_cut(struct afs_ctx *ctx)
{
    afs__ctx_check(ctx, __func__);
    if (!ctx->crash)
        return -EINVAL;
    ctx->crash->cut = true;
    return 0;
}

int afs_crash_happened(const struct afs_ctx *ctx)
{
    afs__ctx_check(ctx, __func__);
    if (!ctx->crash)
        return -EINVAL;
    return ctx->crash->cut;
}

uint64_t afs_crash_ops(const struct afs_ctx *ctx)
{
    afs__ctx_check(ctx, __func__);
    return ctx->crash ? ctx->crash->ops : 0;
}

enum decision { KEEP, DROP, TEAR };

static enum decision decide(const struct afs__crash *c, const struct rec *r)
{
    switch (c->opt.policy) {
    case AFS_CRASH_DROP: return DROP;
    case AFS_CRASH_KEEP: return KEEP;
    case AFS_CRASH_TEAR: return TEAR;
    default: return (enum decision)(rnd(c, 1, r->seq) % 3);
    }
}

/* A torn write: whole sectors land or not (or hold garbage). Of two sectors or more at least
 * one lands and one does not. */
static int apply_torn(const struct afs__crash *c, struct img *m, const struct rec *r)
{
    uint64_t s = c->opt.sector_size;
    uint64_t first = r->off / s, last = (r->off + r->len - 1) / s;
    uint64_t lands = 0, n = last - first + 1;
    for (uint64_t k = first; k <= last; k++)
        lands += rnd(c, r->seq, k) & 1;
    for (uint64_t k = first; k <= last; k++) {
        bool land = rnd(c, r->seq, k) & 1;
        if (n > 1 && k == last && (lands == 0 || lands == n))
            land = !land; /* all or none would be a keep or a drop */
        uint64_t a = AFS_MIN(AFS_MAX(r->off, k * s), r->off + r->len);
        uint64_t b = AFS_MIN((k + 1) * s, r->off + r->len);
        int err = 0;
        if (land) {
            err = img_write(m, a, r->data + (a - r->off), b - a);
        } else if (c->opt.flags & AFS_CRASH_GARBAGE) {
            unsigned char junk[512];
            for (uint64_t at = a; at < b && !err; at += sizeof junk) {
                uint64_t len = AFS_MIN(b - at, sizeof junk);
                for (size_t i = 0; i < len; i += 8) {
                    uint64_t v = rnd(c, r->seq ^ 0x6a756e6bull, at + i);
                    memcpy(junk + i, &v, AFS_MIN(8, len - i));
                }
                err = img_write(m, at, junk, len);
            }
        }
        if (err < 0)
            return err;
    }
    return 0;
}

/* What the disk holds for cf after the cut: its durable image, plus the changes that reached
 * the disk, in the order they completed. Rewrites the part of the file they touched. */
static int replay(struct afs__crash *c, struct afs__crash_file *cf, struct afs_crash_report *rep)
{
    if (!cf->head)
        return 0;
    struct img m = {0};
    int err = img_write(&m, 0, cf->img.buf, cf->img.size);
    if (err == 0 && cf->img.size == 0)
        err = img_resize(&m, 0);
    uint64_t lo = UINT64_MAX;
    for (struct rec *r = cf->head; r && err == 0; r = r->next) {
        lo = AFS_MIN(lo, r->kind == REC_SIZE ? AFS_MIN(r->off, cf->img.size)
                         : r->kind == REC_FALLOC ? AFS_MIN(r->off, cf->img.size)
                                                 : r->off);
        if (r->failed)
            continue;
        enum decision d = r->durable ? KEEP : decide(c, r);
        if (d == TEAR && r->kind != REC_WRITE)
            d = (rnd(c, r->seq, 2) & 1) ? KEEP : DROP;
        if (d == TEAR && r->len <= 1)
            d = (rnd(c, r->seq, 3) & 1) ? KEEP : DROP;
        rep->kept += d == KEEP;
        rep->dropped += d == DROP;
        rep->torn += d == TEAR;
        if (d == KEEP)
            err = img_apply(&m, r);
        else if (d == TEAR)
            err = apply_torn(c, &m, r);
    }
    rep->files++;
    if (err == 0)
        err = set_size(cf->fd, m.size);
    if (err == 0 && lo < m.size)
        err = write_all(cf->fd, m.buf + lo, m.size - lo, lo);
    free(m.buf);
    return err;
}

int afs_crash_reboot(struct afs_ctx *ctx, struct afs_crash_report *report)
{
    afs__ctx_check(ctx, __func__);
    AFS_CHECK(ctx->crash != NULL, "ctx is not in crash mode (afs_crash_enable)");
    AFS_CHECK(!ctx->in_callback, "called from a callback");
    struct afs__crash *c = ctx->crash;
    c->cut = true;
    afs__ctx_close_all(ctx, __func__); /* a stream's buffer is lost: its flush fails (-EIO) */
    struct afs_crash_report rep = {.cut_op = c->cut_op, .ops = c->ops};
    names_undo(c, &rep);
    int err = 0;
    for (struct afs__crash_file *cf = c->files, *n; cf; cf = n) {
        n = cf->next;
        if (cf->dup)
            afs__sys_crash_plain(cf->fd);
        int e = replay(c, cf, &rep);
        if (e < 0 && err == 0)
            err = e;
        cf_free(cf);
    }
    c->files = NULL;
    afs__crash_free(ctx);
    if (report)
        *report = rep;
    return err;
}

void afs__crash_free(struct afs_ctx *ctx)
{
    struct afs__crash *c = ctx->crash;
    if (!c)
        return;
    for (struct rec *r = c->inflight, *n; r; r = n) {
        n = r->next;
        rec_free(r);
    }
    for (struct afs__crash_file *cf = c->files, *n; cf; cf = n) {
        n = cf->next;
        cf_free(cf);
    }
    for (struct nrec *n = c->names, *next; n; n = next) {
        next = n->next;
        nrec_free(n, true);
    }
    free(c);
    ctx->crash = NULL;
}
