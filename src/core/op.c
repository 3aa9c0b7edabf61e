/* Ops: validation, queueing, submission, completion (short transfers and transient errors),
 * waiting and cancellation. Backends only stage ops and report raw transfers; every rule
 * about results lives here, once. */
#include "internal.h"

#include <limits.h>
#include <string.h>

static bool op_live(struct afs_op *op)
{
    uintptr_t m;
    AFS__OP_MAGIC_READ(afs__op(op), m);
    return ((m ^ AFS__MAGIC ^ (uintptr_t)op) & AFS__MAGIC_LOW) == 0;
}

static bool is_read(const struct afs__op *o)
{
    return o->code == AFS__READ || o->code == AFS__READV || o->code == AFS__RECV;
}

/* Ops that move no data: a zero length means nothing for them. */
static bool no_data(const struct afs__op *o)
{
    return afs__is_ctl(o) || afs__is_meta(o) || o->code == AFS__CONNECT ||
           o->code == AFS__ACCEPT || o->code == AFS__SHUTDOWN;
}

/* Whether a transfer of zero bytes is still made: a send on a socket of messages sends an
 * empty one. */
static bool empty_counts(const struct afs__op *o)
{
    return o->code == AFS__SEND && o->file->dgram;
}

/* The error kept for the next transfer of o's file (afs_file.seq_err), taken: 0 if none or
 * o is no transfer. */
static int take_seq_err(struct afs__op *o)
{
    if (!o->file || no_data(o) || !atomic_load_explicit(&o->file->seq_err, memory_order_relaxed))
        return 0;
    return atomic_exchange_explicit(&o->file->seq_err, 0, memory_order_relaxed);
}

/* An error after part of a read on a file without offsets (a receive of MSG_WAITALL, a read
 * of a pipe that gathers): the bytes in the caller's buffer are the result, and the error is
 * the next transfer's, as the kernel reports a socket's error to the call after a partial
 * one. A write's error stands: a send returns len or an error (the bytes that left before
 * it cannot be told to the peer's application anyway). */
static ssize_t partial_or(struct afs__op *o, ssize_t err)
{
    if (!o->file->seq || o->done == 0 || !is_read(o))
        return err;
    atomic_store_explicit(&o->file->seq_err, (int)err, memory_order_relaxed);
    return (ssize_t)o->done;
}

/* ------------------------------------------------------------------------------------------
 * Validation and queueing
 * ---------------------------------------------------------------------------------------- */

static bool aligned(uint64_t v, unsigned a)
{
    return a == 0 || (v & (a - 1)) == 0;
}

#define FALLOC_MODES (AFS_FALLOC_KEEP_SIZE | AFS_FALLOC_PUNCH_HOLE | AFS_FALLOC_ZERO_RANGE)
#define SYNC_RANGE_FLAGS                                                                       \
    (AFS_SYNC_RANGE_WAIT_BEFORE | AFS_SYNC_RANGE_WRITE | AFS_SYNC_RANGE_WAIT_AFTER)

/* The arguments of a storage op (fallocate, ftruncate, fadvise, sync_file_range). */
static int stor_check(const struct afs_file *f, const struct afs__op_args *a)
{
    unsigned m = a->arg;
    switch (a->code) {
    case AFS__FALLOCATE:
        if ((m & ~FALLOC_MODES) ||
            (m & (AFS_FALLOC_PUNCH_HOLE | AFS_FALLOC_ZERO_RANGE)) ==
                (AFS_FALLOC_PUNCH_HOLE | AFS_FALLOC_ZERO_RANGE))
            return -EINVAL;
        if (a->range == 0 || a->off > (uint64_t)INT64_MAX || a->range > (uint64_t)INT64_MAX)
            return -EINVAL;
        if (a->range > (uint64_t)INT64_MAX - a->off)
            return -EFBIG;
        break;
    case AFS__FTRUNCATE:
        if (a->off > (uint64_t)INT64_MAX)
            return -EINVAL;
        if (f->seq)
            return -EINVAL; /* as ftruncate(2) on a pipe or socket */
        break;
    case AFS__FADVISE:
    case AFS__SYNC_RANGE:
        if (a->code == AFS__FADVISE ? m > AFS_FADV_DONTNEED : (m & ~SYNC_RANGE_FLAGS) != 0)
            return -EINVAL;
        if (a->off > (uint64_t)INT64_MAX || a->range > (uint64_t)INT64_MAX)
            return -EINVAL;
        if (f->seq)
            return -ESPIPE;
        return 0; /* read-only files too: nothing is written */
    default:
        return -EINVAL;
    }
    if (f->seq)
        return -ESPIPE;
    if ((f->flags & (AFS_RDONLY | AFS_WRONLY | AFS_RDWR)) == AFS_RDONLY)
        return -EBADF;
    return 0;
}

/* The callback of a chain member queued without one: its result stays in op->result. */
static void chain_noop(struct afs_op *op)
{
    (void)op;
}

/* The checks every data op shares once its own arguments are checked (`total`: the bytes
 * it moves, `al`: the file's O_DIRECT alignment or 0), then the filling of its private part. */
static inline int setup_finish(struct afs_op *op, struct afs_file *f, enum afs__code code,
                               const void *ptr, size_t len, size_t total, uint64_t off,
                               unsigned al, const struct afs__op_args *a, afs_cb *cb,
                               void *data)
{
    bool ctl = code >= AFS__FSYNC && code <= AFS__SYNC_RANGE;
    int err = afs__file_settle(f);
    if (err < 0)
        return err;
    if (!ctl && f->seq) {
        /* A pipe, socket or tty has no offsets: only afs__queue_seq() and the position
         * calls move data on it, one buffer at a time (the vectored calls are positional). */
        if (off != AFS__OFF_SEQ || code == AFS__READV || code == AFS__WRITEV)
            return -ESPIPE;
    } else if (!ctl) {
        if (off > (uint64_t)INT64_MAX || total > (uint64_t)INT64_MAX - off)
            return -EINVAL;
        if (total && !aligned(off, al)) /* nothing to move: O_DIRECT asks nothing, as read(2) */
            return -EINVAL;
    }
    int acc = f->flags & (AFS_RDONLY | AFS_WRONLY | AFS_RDWR);
    if ((code == AFS__READ || code == AFS__READV) && acc == AFS_WRONLY)
        return -EBADF;
    if ((code == AFS__WRITE || code == AFS__WRITEV) && acc == AFS_RDONLY)
        return -EBADF;

    if ((code == AFS__WRITE || code == AFS__WRITEV) && !f->seq) {
        /* A write that may move the end makes the known size unknown, before it runs. */
        int64_t h = atomic_load_explicit(&f->size_hint, memory_order_relaxed);
        if (h >= 0 && ((f->flags & AFS_APPEND) || off + total > (uint64_t)h))
            atomic_store_explicit(&f->size_hint, -1, memory_order_relaxed);
    }
    unsigned arg = a ? a->arg : 0;
    if (code == AFS__FTRUNCATE ||
        (code == AFS__FALLOCATE && !(arg & (AFS_FALLOC_KEEP_SIZE | AFS_FALLOC_PUNCH_HOLE))))
        atomic_store_explicit(&f->size_hint, -1, memory_order_relaxed); /* the size moves */

    struct afs__op *o = afs__op(op);
    afs__op_clear(o, f->seq);
    o->magic = afs__op_magic_idle(op);
    o->file = f;
    o->cb = cb ? cb : chain_noop;
    o->u.buf = (void *)ptr; /* or the iovecs: the union's members are both pointers */
    o->off = off;
    o->len = len;
    o->total = total;
    o->code = (uint8_t)code;
    if (code == AFS__READ && f->dgram)
        o->flags |= AFS__OP_PARTIAL; /* a socket of messages: one a read, as read(2) */
    if (a) {
        o->fsync_flags = (uint8_t)a->fsync_flags;
        o->arg = (uint8_t)arg;
        o->xflags = (uint8_t)a->xflags;
    }
    op->data = data;
    op->result = 0;
    return 0;
}

static int setup_start(struct afs_op *op, struct afs_file *f, afs_cb *cb)
{
    if (!op || !f || (!cb && !f->ctx->chain_open))
        return -EINVAL;
    if (afs__op_busy(f->ctx, op))
        return -EBUSY;
    return 0;
}

static bool rw_bad(const void *buf, size_t len, unsigned al)
{
    return (!buf && len) || len > (size_t)SSIZE_MAX ||
           (len && (!aligned((uintptr_t)buf, al) || !aligned(len, al)));
}

int afs__op_setup_rw(struct afs_op *op, struct afs_file *f, bool write, void *buf, size_t len,
                     uint64_t off, afs_cb *cb, void *data)
{
    int err = setup_start(op, f, cb);
    if (err < 0)
        return err;
    unsigned al = (f->flags & AFS_DIRECT) ? f->dio_align : 0;
    if (rw_bad(buf, len, al))
        return -EINVAL;
    return setup_finish(op, f, write ? AFS__WRITE : AFS__READ, buf, len, len, off, al, NULL, cb,
                        data);
}

/* Checks everything about a new op and fills its private part; does not queue it. */
int afs__op_setup(struct afs_op *op, struct afs_file *f, const struct afs__op_args *a)
{
    enum afs__code code = a->code;
    size_t len = a->len;
    const struct iovec *iov = a->iov;
    int iovcnt = a->iovcnt;
    uint64_t off = a->off;
    int err = setup_start(op, f, a->cb);
    if (err < 0)
        return err;
    size_t total = 0;
    unsigned al = (f->flags & AFS_DIRECT) ? f->dio_align : 0;
    const void *ptr = a->buf;
    switch (code) {
    case AFS__READ:
    case AFS__WRITE:
        if (rw_bad(a->buf, len, al))
            return -EINVAL;
        total = len;
        break;
    case AFS__READV:
    case AFS__WRITEV:
        if (iovcnt < 0 || iovcnt > AFS_IOV_MAX || (!iov && iovcnt))
            return -EINVAL;
        for (int i = 0; i < iovcnt; i++) {
            if ((!iov[i].iov_base && iov[i].iov_len) || iov[i].iov_len > (size_t)SSIZE_MAX - total)
                return -EINVAL;
            if (iov[i].iov_len &&
                (!aligned((uintptr_t)iov[i].iov_base, al) || !aligned(iov[i].iov_len, al)))
                return -EINVAL; /* an empty one moves nothing: not looked at, as by the kernel */
            total += iov[i].iov_len;
        }
        len = (size_t)iovcnt;
        ptr = iov;
        break;
    case AFS__FSYNC:
        if (a->fsync_flags & ~AFS_FSYNC_DATA)
            return -EINVAL;
        off = 0;
        break;
    case AFS__FALLOCATE:
    case AFS__FTRUNCATE:
    case AFS__FADVISE:
    case AFS__SYNC_RANGE: {
        err = stor_check(f, a);
        if (err < 0)
            return err;
        total = code == AFS__FTRUNCATE ? 0 : a->range;
        break;
    }
    default:
        return -EINVAL; /* metadata ops are set up by afs__meta_setup() */
    }
    return setup_finish(op, f, code, ptr, len, total, off, al, a, a->cb, a->data);
}

/* An op counted on its file starts: to the queue, or done at once. */
static void op_start(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    if (ctx->crash) {
        int err = afs__crash_start(ctx, op);
        if (err < 0) {
            afs__op_finished(ctx, op, err); /* never runs: the power is cut */
            return;
        }
    }
    int err = take_seq_err(o);
    if (err) {
        afs__op_finished(ctx, op, err);
        return;
    }
    if (o->total == 0 && !no_data(o) && !empty_counts(o)) {
        /* Zero-length: done at once, but the callback still runs from afs_ctx_wait(). */
        afs__op_finished(ctx, op, 0);
        return;
    }
    o->state = AFS__QUEUED;
    afs__list_push(&ctx->queued, op);
}

void afs__op_enqueue(struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    struct afs_ctx *ctx = o->file->ctx;
    o->magic = afs__op_magic(ctx, op); /* busy until its callback starts */
    o->file->inflight++;
    ctx->stats.ops++;
    op_start(ctx, op);
}

/* Between afs_chain_begin() and afs_chain_end() a queued op becomes the chain's last
 * member: counted now, started when the one before it finished well. */
static void enqueue_or_chain(struct afs_ctx *ctx, struct afs_op *op)
{
    if (!ctx->chain_open) {
        afs__op_enqueue(op);
        return;
    }
    struct afs__op *o = afs__op(op);
    o->magic = afs__op_magic(ctx, op);
    o->file->inflight++;
    ctx->stats.ops++;
    o->state = AFS__HELD;
    o->flags |= AFS__OP_CHAINED;
    o->chain_next = NULL;
    if (ctx->chain_tail)
        afs__op(ctx->chain_tail)->chain_next = op;
    else
        ctx->chain_head = op;
    ctx->chain_tail = op;
    ctx->chain_len++;
}

static int queue(struct afs_op *op, struct afs_file *f, const struct afs__op_args *a)
{
    if (f && f->seq && a->code < AFS__FSYNC)
        return -ESPIPE; /* positional: the file has no offsets */
    int err = afs__op_setup(op, f, a);
    if (err == 0)
        enqueue_or_chain(f->ctx, op);
    return err;
}

int afs__queue_seq(struct afs_op *op, struct afs_file *f, bool write, void *buf, size_t len,
                   bool partial, afs_cb *cb, void *data)
{
    AFS_CHECK(f != NULL && f->seq, "sequential op on a file with offsets");
    int err = afs__op_setup(op, f,
                            &(struct afs__op_args){.code = write ? AFS__WRITE : AFS__READ,
                                                   .buf = buf, .len = len, .off = AFS__OFF_SEQ,
                                                   .cb = cb, .data = data});
    if (err < 0)
        return err;
    if (partial && !write)
        afs__op(op)->flags |= AFS__OP_PARTIAL;
    afs__op_enqueue(op);
    return 0;
}

int afs_queue_read(struct afs_op *op, struct afs_file *f, void *buf, size_t len, uint64_t off,
                   afs_cb *cb, void *data)
{
    afs__file_check(f, __func__);
    return queue(op, f,
                 &(struct afs__op_args){.code = AFS__READ, .buf = buf, .len = len, .off = off,
                                        .cb = cb, .data = data});
}

int afs_queue_write(struct afs_op *op, struct afs_file *f, const void *buf, size_t len,
                    uint64_t off, afs_cb *cb, void *data)
{
    afs__file_check(f, __func__);
    return queue(op, f,
                 &(struct afs__op_args){.code = AFS__WRITE, .buf = (void *)buf, .len = len,
                                        .off = off, .cb = cb, .data = data});
}

int afs_queue_readv(struct afs_op *op, struct afs_file *f, const struct iovec *iov, int iovcnt,
                    uint64_t off, afs_cb *cb, void *data)
{
    afs__file_check(f, __func__);
    return queue(op, f,
                 &(struct afs__op_args){.code = AFS__READV, .iov = iov, .iovcnt = iovcnt,
                                        .off = off, .cb = cb, .data = data});
}

int afs_queue_writev(struct afs_op *op, struct afs_file *f, const struct iovec *iov,
                     int iovcnt, uint64_t off, afs_cb *cb, void *data)
{
    afs__file_check(f, __func__);
    return queue(op, f,
                 &(struct afs__op_args){.code = AFS__WRITEV, .iov = iov, .iovcnt = iovcnt,
                                        .off = off, .cb = cb, .data = data});
}

int afs_queue_write_flags(struct afs_op *op, struct afs_file *f, const void *buf, size_t len,
                          uint64_t off, unsigned flags, afs_cb *cb, void *data)
{
    afs__file_check(f, __func__);
    if (flags & ~AFS_WRITE_DSYNC)
        return -EINVAL;
    return queue(op, f,
                 &(struct afs__op_args){.code = AFS__WRITE, .buf = (void *)buf, .len = len,
                                        .off = off, .xflags = afs__write_xflags(flags),
                                        .cb = cb, .data = data});
}

int afs_queue_writev_flags(struct afs_op *op, struct afs_file *f, const struct iovec *iov,
                           int iovcnt, uint64_t off, unsigned flags, afs_cb *cb, void *data)
{
    afs__file_check(f, __func__);
    if (flags & ~AFS_WRITE_DSYNC)
        return -EINVAL;
    return queue(op, f,
                 &(struct afs__op_args){.code = AFS__WRITEV, .iov = iov, .iovcnt = iovcnt,
                                        .off = off, .xflags = afs__write_xflags(flags),
                                        .cb = cb, .data = data});
}

int afs_queue_fsync(struct afs_op *op, struct afs_file *f, unsigned flags, afs_cb *cb,
                    void *data)
{
    afs__file_check(f, __func__);
    return queue(op, f,
                 &(struct afs__op_args){.code = AFS__FSYNC, .fsync_flags = flags, .cb = cb,
                                        .data = data});
}

int afs_queue_fallocate(struct afs_op *op, struct afs_file *f, int mode, uint64_t off,
                        uint64_t len, afs_cb *cb, void *data)
{
    afs__file_check(f, __func__);
    if (mode < 0)
        return -EINVAL;
    return queue(op, f,
                 &(struct afs__op_args){.code = AFS__FALLOCATE, .off = off, .range = len,
                                        .arg = (unsigned)mode, .cb = cb, .data = data});
}

int afs_queue_ftruncate(struct afs_op *op, struct afs_file *f, uint64_t size, afs_cb *cb,
                        void *data)
{
    afs__file_check(f, __func__);
    return queue(op, f,
                 &(struct afs__op_args){.code = AFS__FTRUNCATE, .off = size, .cb = cb,
                                        .data = data});
}

int afs_queue_fadvise(struct afs_op *op, struct afs_file *f, uint64_t off, uint64_t len,
                      int advice, afs_cb *cb, void *data)
{
    afs__file_check(f, __func__);
    if (advice < 0)
        return -EINVAL;
    return queue(op, f,
                 &(struct afs__op_args){.code = AFS__FADVISE, .off = off, .range = len,
                                        .arg = (unsigned)advice, .cb = cb, .data = data});
}

int afs_queue_sync_file_range(struct afs_op *op, struct afs_file *f, uint64_t off,
                              uint64_t len, unsigned flags, afs_cb *cb, void *data)
{
    afs__file_check(f, __func__);
    return queue(op, f,
                 &(struct afs__op_args){.code = AFS__SYNC_RANGE, .off = off, .range = len,
                                        .arg = flags, .cb = cb, .data = data});
}

/* ------------------------------------------------------------------------------------------
 * Metadata ops: no file and no data. They are counted on the context's pseudo-file so that
 * the core's bookkeeping (inflight counts, cancellation, callbacks) is the same as for I/O.
 * ---------------------------------------------------------------------------------------- */

static bool valid_dirfd(int fd)
{
    return fd >= 0 || fd == AFS_AT_FDCWD;
}

/* Whether path names its file without a directory: then any dirfd is ignored, as by the
 * system calls (an invalid one included). */
static bool path_absolute(const char *path)
{
    if (!path)
        return false;
#ifdef _WIN32
    return path[0] == '/' || path[0] == '\\' || (path[0] && path[1] == ':');
#else
    return path[0] == '/';
#endif
}

#define META_OPEN_FLAGS                                                                        \
    (AFS_RDONLY | AFS_WRONLY | AFS_RDWR | AFS_CREAT | AFS_TRUNC | AFS_EXCL | AFS_APPEND |      \
     AFS_NOFOLLOW | AFS_DIRECT | AFS_DIRECTORY | AFS_NONBLOCK | AFS_DSYNC)

/* 0, or -errno for arguments the system call would refuse anyway (or misread). */
static int meta_check(const struct afs__meta_args *a)
{
    int dirfd = a->dirfd, flags = a->flags;
    const char *path = a->path;
    unsigned perm = a->perm;
    switch (a->code) {
    case AFS__OPENAT:
        if (afs__open_flags_bad(flags, META_OPEN_FLAGS) || perm > 07777)
            return -EINVAL;
        break;
    case AFS__STATX:
        if (!a->st || (flags & ~(AFS_AT_SYMLINK_NOFOLLOW | AFS_AT_EMPTY_PATH)))
            return -EINVAL;
        break;
    case AFS__MKDIRAT:
        if (perm > 07777)
            return -EINVAL;
        break;
    case AFS__RENAMEAT:
        if (!a->path2 || (flags & ~AFS_RENAME_NOREPLACE))
            return -EINVAL;
        if (!valid_dirfd(a->dirfd2) && !path_absolute(a->path2))
            return -EBADF;
        break;
    case AFS__UNLINKAT:
        if (flags & ~AFS_AT_REMOVEDIR)
            return -EINVAL;
        break;
    case AFS__FSYNC_FD:
        if (flags & ~(int)AFS_FSYNC_DATA)
            return -EINVAL;
        return dirfd >= 0 ? 0 : -EBADF;
    case AFS__CLOSE:
    case AFS__SYNCFS:
        return dirfd >= 0 ? 0 : -EBADF; /* no path: dirfd is the fd */
    default:
        return -EINVAL;
    }
    if (!path)
        return -EINVAL;
    return valid_dirfd(dirfd) || path_absolute(path) ? 0 : -EBADF;
}

int afs__meta_setup(struct afs_op *op, struct afs_ctx *ctx, const struct afs__meta_args *a)
{
    afs__ctx_check(ctx, __func__);
    if (!op || (!a->cb && !ctx->chain_open))
        return -EINVAL;
    if (afs__op_busy(ctx, op))
        return -EBUSY;
    if (!afs__sys_meta_supported())
        return -ENOTSUP; /* no directory fds here (Windows) */
    int err = meta_check(a);
    if (err < 0)
        return err;
    if (!ctx->meta.ctx) {
        ctx->meta.ctx = ctx;
        ctx->meta.fd = AFS__FD_NONE;
    }
    struct afs__op *o = afs__op(op);
    afs__op_clear(o, true);
    o->magic = afs__op_magic_idle(op);
    o->file = &ctx->meta;
    o->cb = a->cb ? a->cb : chain_noop;
    o->u.buf = (void *)a->path;
    o->code = (uint8_t)a->code;
    o->meta.path2 = a->path2;
    o->meta.st = a->st;
    o->meta.dirfd = a->dirfd;
    o->meta.dirfd2 = a->dirfd2;
    o->meta.flags = a->flags;
    o->meta.perm = a->perm;
    op->data = a->data;
    op->result = 0;
    return 0;
}

static int queue_meta(struct afs_op *op, struct afs_ctx *ctx, const struct afs__meta_args *a)
{
    int err = afs__meta_setup(op, ctx, a);
    if (err == 0)
        enqueue_or_chain(ctx, op);
    return err;
}

int afs_queue_openat(struct afs_op *op, struct afs_ctx *ctx, int dirfd, const char *path,
                     int flags, unsigned perm, afs_cb *cb, void *data)
{
    afs__ctx_check(ctx, __func__);
    return queue_meta(op, ctx, &(struct afs__meta_args){.code = AFS__OPENAT, .dirfd = dirfd,
                                                        .path = path, .flags = flags, .perm = perm,
                                                        .cb = cb, .data = data});
}

int afs_queue_statx(struct afs_op *op, struct afs_ctx *ctx, int dirfd, const char *path,
                    int flags, struct afs_stat *st, afs_cb *cb, void *data)
{
    afs__ctx_check(ctx, __func__);
    return queue_meta(op, ctx, &(struct afs__meta_args){.code = AFS__STATX, .dirfd = dirfd,
                                                        .path = path, .flags = flags, .st = st,
                                                        .cb = cb, .data = data});
}

int afs_queue_close_fd(struct afs_op *op, struct afs_ctx *ctx, int fd, afs_cb *cb, void *data)
{
    afs__ctx_check(ctx, __func__);
    return queue_meta(op, ctx, &(struct afs__meta_args){.code = AFS__CLOSE, .dirfd = fd, .cb = cb,
                                                        .data = data});
}

int afs_queue_mkdirat(struct afs_op *op, struct afs_ctx *ctx, int dirfd, const char *path,
                      unsigned perm, afs_cb *cb, void *data)
{
    afs__ctx_check(ctx, __func__);
    return queue_meta(op, ctx, &(struct afs__meta_args){.code = AFS__MKDIRAT, .dirfd = dirfd,
                                                        .path = path, .perm = perm, .cb = cb,
                                                        .data = data});
}

int afs_queue_renameat(struct afs_op *op, struct afs_ctx *ctx, int olddirfd,
                       const char *oldpath, int newdirfd, const char *newpath, int flags,
                       afs_cb *cb, void *data)
{
    afs__ctx_check(ctx, __func__);
    return queue_meta(op, ctx, &(struct afs__meta_args){.code = AFS__RENAMEAT, .dirfd = olddirfd,
                                                        .path = oldpath, .dirfd2 = newdirfd,
                                                        .path2 = newpath, .flags = flags, .cb = cb,
                                                        .data = data});
}

int afs_queue_unlinkat(struct afs_op *op, struct afs_ctx *ctx, int dirfd, const char *path,
                       int flags, afs_cb *cb, void *data)
{
    afs__ctx_check(ctx, __func__);
    return queue_meta(op, ctx, &(struct afs__meta_args){.code = AFS__UNLINKAT, .dirfd = dirfd,
                                                        .path = path, .flags = flags, .cb = cb,
                                                        .data = data});
}

int afs_queue_fsync_fd(struct afs_op *op, struct afs_ctx *ctx, int fd, unsigned flags,
                       afs_cb *cb, void *data)
{
    afs__ctx_check(ctx, __func__);
    return queue_meta(op, ctx, &(struct afs__meta_args){.code = AFS__FSYNC_FD, .dirfd = fd,
                                                        .flags = (int)flags, .cb = cb,
                                                        .data = data});
}

int afs_queue_syncfs(struct afs_op *op, struct afs_ctx *ctx, int fd, afs_cb *cb, void *data)
{
    afs__ctx_check(ctx, __func__);
    return queue_meta(op, ctx, &(struct afs__meta_args){.code = AFS__SYNCFS, .dirfd = fd, .cb = cb,
                                                        .data = data});
}

/* One metadata system call with blocking semantics, for the pool, the sync backend and the
 * inline path. EINTR means "not done" for all of them but close, where the fd is gone. */
static ssize_t run_meta(struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    const struct afs__meta *m = &o->meta;
    const char *path = o->u.buf;
    int r;
    if (o->code == AFS__CLOSE)
        return afs__sys_close_fd(m->dirfd);
    do {
        switch (o->code) {
        case AFS__OPENAT: r = afs__sys_openat(m->dirfd, path, m->flags, m->perm); break;
        case AFS__STATX: r = afs__sys_statx(m->dirfd, path, m->flags, m->st); break;
        case AFS__MKDIRAT: r = afs__sys_mkdirat(m->dirfd, path, m->perm); break;
        case AFS__RENAMEAT:
            r = afs__sys_renameat(m->dirfd, path, m->dirfd2, m->path2, m->flags);
            break;
        case AFS__UNLINKAT: r = afs__sys_unlinkat(m->dirfd, path, m->flags); break;
        case AFS__SYNCFS: r = afs__sys_syncfs(m->dirfd); break;
        case AFS__FSYNC_FD: r = afs__sys_fsync_fd(m->dirfd, m->flags & AFS_FSYNC_DATA); break;
        default: r = -EINVAL; break;
        }
    } while (r == -EINTR);
    return r;
}

/* ------------------------------------------------------------------------------------------
 * Spans, transfers, completion
 * ---------------------------------------------------------------------------------------- */

void afs__op_span(struct afs_op *op, struct afs__span *s)
{
    struct afs__op *o = afs__op(op);
    size_t rest = o->total - o->done;
    memset(s, 0, sizeof *s);
    s->off = o->off == AFS__OFF_SEQ ? AFS__OFF_SEQ : o->off + o->done;
    if (afs__is_ctl(o))
        return; /* no data: u.buf is NULL, and NULL + 0 is undefined */
    if (o->code == AFS__SENDFILE) {
        s->len = AFS_MIN(rest, AFS__CHUNK_MAX); /* from the source file at s->off */
        return;
    }
    if (o->code == AFS__READ || o->code == AFS__WRITE || o->code == AFS__RECV ||
        o->code == AFS__SEND) {
        s->buf = (char *)o->u.buf + o->done;
        s->len = AFS_MIN(rest, AFS__CHUNK_MAX);
        return;
    }
    /* Skip the iovecs already transferred. A partly done iovec is finished on its own as a
     * plain buffer: the caller's array is never modified. */
    size_t skip = o->done;
    int i = 0;
    while (i < (int)o->len && skip >= o->u.iov[i].iov_len) {
        skip -= o->u.iov[i].iov_len;
        i++;
    }
    if (skip > 0) {
        s->buf = (char *)o->u.iov[i].iov_base + skip;
        s->len = AFS_MIN(o->u.iov[i].iov_len - skip, AFS__CHUNK_MAX);
        return;
    }
    s->iov = o->u.iov + i;
    s->iovcnt = (int)o->len - i;
    s->len = rest;
}

void afs__op_count_eof(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    ctx->stats.eof_checks += (o->eof & AFS__OP_EOF_CHECK) != 0;
    ctx->stats.eof_skips += (o->eof & AFS__OP_EOF_SKIP) != 0;
    o->eof = 0;
}

/* A read that stopped short at `end` (its offset plus the bytes so far) has reached the end
 * of the file when that is the size the library knows: no second read needed to confirm.
 * Only a transfer the kernel cut short says so: one that moved its whole piece (the library
 * moves 1 GiB at a time) may go on past a size known before the file grew. */
static bool at_known_end(const struct afs__op *o)
{
    if (o->file->seq)
        return false;
    int64_t h = atomic_load_explicit(&o->file->size_hint, memory_order_relaxed);
    return h >= 0 && o->off + o->done == (uint64_t)h;
}

/* Whether a read the kernel cut short ended at the end of the file: the end the library
 * knows, or, on an O_DIRECT file, any place off the alignment (the kernel moves whole
 * blocks but at the end; the rest could not be asked for there, and would be refused with
 * -EINVAL once the file grew). */
static bool at_end(const struct afs__op *o)
{
    const struct afs_file *f = o->file;
    return at_known_end(o) ||
           ((f->flags & AFS_DIRECT) && !aligned(o->off + o->done, f->dio_align ? f->dio_align : 512));
}

/* Whether the res bytes just added to op's done were less than the piece they were asked
 * for (the kernel stopped the transfer, rather than the library's piece size). */
static bool cut_short(struct afs_op *op, size_t res)
{
    struct afs__op *o = afs__op(op);
    struct afs__span s;
    o->done -= res;
    afs__op_span(op, &s);
    o->done += res;
    return res < s.len;
}

/* An op of a socket, pipe, FIFO or tty may wait on its peer for as long as the peer likes (an
 * idle connection's receive): such ops do not count against queue_depth, so that a thousand
 * idle connections do not hold back every accept, open and read behind them. The file of
 * an op never changes, so the same test counts it out again. */
static inline bool waits_on_peer(const struct afs__op *o)
{
    return o->file->sock || o->file->seq;
}

static inline void inflight_add(struct afs_ctx *ctx, const struct afs__op *o)
{
    ctx->inflight++;
    if (waits_on_peer(o))
        ctx->peer_inflight++;
}

static inline void inflight_sub(struct afs_ctx *ctx, const struct afs__op *o)
{
    ctx->inflight--;
    if (waits_on_peer(o))
        ctx->peer_inflight--;
}

/* Ops in flight that count against queue_depth. */
static inline unsigned bounded_inflight(const struct afs_ctx *ctx)
{
    return ctx->inflight - ctx->peer_inflight;
}

static void chain_step(struct afs_ctx *ctx, struct afs_op *op, ssize_t res);
static void chain_note_failure(struct afs_op *op, ssize_t res);

void afs__op_finished(struct afs_ctx *ctx, struct afs_op *op, ssize_t res)
{
    struct afs__op *o = afs__op(op);
    afs__op_count_eof(ctx, op);
    if (o->code == AFS__SENDFILE) {
        afs__sendfile_drop(op);
        if (ctx->be->sendfile_end)
            ctx->be->sendfile_end(ctx, op);
    }
    if (o->state == AFS__INFLIGHT)
        inflight_sub(ctx, o);
    o->state = AFS__DONE;
    o->xflags &= (uint8_t)~(AFS__X_LINKED | AFS__X_ABSORB | AFS__X_GO);
    op->result = res;
    afs__list_push(&ctx->done, op);
    if (o->chain_next)
        chain_step(ctx, op, res);
}

/* A chain member finished with res: start the next one, or fail the rest of the chain with
 * -ECANCELED, in order (their callbacks run after this one's). Members the kernel holds
 * linked to this one go on, or are cancelled, by the kernel itself. */
static void chain_step(struct afs_ctx *ctx, struct afs_op *op, ssize_t res)
{
    struct afs_op *next = afs__op(op)->chain_next;
    struct afs__op *n = afs__op(next);
    if (ctx->crash) { /* the simulator learns of it first: a sync after it covers it */
        afs__crash_done(ctx, op, &op->result);
        res = op->result;
    }
    if (res < 0)
        chain_note_failure(op, res);
    if (n->xflags & AFS__X_ABSORB) {
        /* Its kernel completion (-ECANCELED: the link broke on a transfer the core resumed)
         * is still to come: it starts then, or that completion is its result. */
        if (res >= 0)
            n->xflags |= AFS__X_GO;
        else
            n->xflags &= (uint8_t)~AFS__X_ABSORB;
        return;
    }
    if (n->state != AFS__HELD)
        return; /* linked in the kernel */
    if (res < 0 || (n->flags & AFS__OP_CANCEL))
        afs__op_finished(ctx, next, -ECANCELED);
    else
        op_start(ctx, next);
}

/* Whether the kernel failed the link after a linked op with this result: an error, or a
 * read or write that moved less than its span. */
static bool link_broke(struct afs_op *op, ssize_t res)
{
    struct afs__op *o = afs__op(op);
    if (res < 0)
        return true;
    if (afs__is_ctl(o) || afs__is_meta(o))
        return false;
    struct afs__span s;
    afs__op_span(op, &s);
    return (size_t)res != s.len;
}

/* The n bytes a read just brought, after the o->done before them, marked defined for
 * Memcheck, which does not see what the kernel writes through io_uring's rings (a no-op
 * unless the program runs under Valgrind; nothing where its headers were not found). */
static void mark_filled(const struct afs__op *o, size_t n)
{
#ifdef AFS__VALGRIND
    if (o->code != AFS__READV) {
        AFS__DEFINED((char *)o->u.buf + o->done, n);
        return;
    }
    size_t skip = o->done;
    for (size_t i = 0; i < o->len && n > 0; i++) {
        size_t l = o->u.iov[i].iov_len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        size_t k = AFS_MIN(l - skip, n);
        AFS__DEFINED((char *)o->u.iov[i].iov_base + skip, k);
        n -= k;
        skip = 0;
    }
#else
    (void)o;
    (void)n;
#endif
}

/* What an op ended by afs_cancel() reports: -ECANCELED, or on a file without offsets the
 * bytes it moved before (they have left it: better short than lost). */
static inline ssize_t cancelled_result(const struct afs__op *o)
{
    return o->file->seq && o->done ? (ssize_t)o->done : -ECANCELED;
}

bool afs__op_step(struct afs_ctx *ctx, struct afs_op *op, ssize_t res)
{
    struct afs__op *o = afs__op(op);
    bool cancel = o->flags & AFS__OP_CANCEL;
    if (afs__is_meta(o)) {
        if (o->code == AFS__CLOSE && res == -EINTR)
            res = 0; /* the fd is closed all the same (Linux, BSD); never close it twice */
        if (o->code != AFS__CLOSE && (res == -EINTR || res == -EAGAIN)) {
            if (!cancel)
                return true;
            afs__op_finished(ctx, op, -ECANCELED);
            return false;
        }
        /* A result, even after afs_cancel(): an fd that was opened must reach the caller. */
        if (res >= 0 && ctx->be->meta_done)
            ctx->be->meta_done(ctx, op);
        afs__op_finished(ctx, op, res);
        return false;
    }
    if (o->code == AFS__CONNECT || o->code == AFS__SHUTDOWN) {
        /* Not repeatable: a second connect() would report EALREADY or EISCONN. A connect
         * the kernel was waiting in (io_uring's worker, for a full AF_UNIX backlog) ends
         * with EINTR when it is cancelled. */
        if (cancel && (res == -EINTR || res == -EAGAIN))
            res = -ECANCELED;
        afs__op_finished(ctx, op, res);
        return false;
    }
    if (o->code == AFS__ACCEPT) {
        /* A connection reset before it was accepted is skipped; an accepted fd reaches the
         * caller even after afs_cancel(), so that it is closed. */
        if (res == -EINTR || res == -EAGAIN || res == -ECONNABORTED) {
            if (!cancel)
                return true;
            res = -ECANCELED;
        }
        afs__op_finished(ctx, op, res);
        return false;
    }
    if (res == -EINTR || res == -EAGAIN) {
        /* Transient: run the same span again (the caller never sees it). */
        if (!cancel)
            return true;
        afs__op_finished(ctx, op, cancelled_result(o));
        return false;
    }
    if (res < 0) {
        /* A pipe or socket op cancelled after part of it moved: those bytes are gone. */
        afs__op_finished(ctx, op, res == -ECANCELED ? cancelled_result(o) : partial_or(o, res));
        return false;
    }
    if (afs__is_ctl(o)) {
        afs__op_finished(ctx, op, 0);
        return false;
    }
    if (res == 0) {
        /* End of file for a read (and for a sendfile: its source ended); a write that moves
         * nothing would loop forever. */
        if (is_read(o) && o->done > 0)
            o->eof |= AFS__OP_EOF_CHECK;
        bool eof = is_read(o) || o->code == AFS__SENDFILE;
        afs__op_finished(ctx, op, eof ? (ssize_t)o->done : o->total == 0 ? 0 : -EIO);
        return false;
    }
    if (is_read(o))
        mark_filled(o, (size_t)res);
    o->done += (size_t)res;
    if (o->done >= o->total || (o->flags & AFS__OP_PARTIAL)) {
        afs__op_finished(ctx, op, (ssize_t)o->done);
    } else if (is_read(o) && cut_short(op, (size_t)res) && at_end(o)) {
        o->eof |= AFS__OP_EOF_SKIP;
        afs__op_finished(ctx, op, (ssize_t)o->done);
    } else if (cancel) {
        afs__op_finished(ctx, op, cancelled_result(o));
    } else {
        return true; /* short transfer: the rest goes in the next submission */
    }
    return false;
}

void afs__op_transferred(struct afs_ctx *ctx, struct afs_op *op, ssize_t res)
{
    struct afs__op *o = afs__op(op);
    if (o->xflags & AFS__X_ABSORB) {
        o->xflags &= (uint8_t)~AFS__X_ABSORB;
        if (res == -ECANCELED) {
            /* Not a result: the member before it is being resumed by the core. */
            bool go = o->xflags & AFS__X_GO;
            o->xflags &= (uint8_t)~AFS__X_GO;
            inflight_sub(ctx, o);
            o->state = AFS__HELD;
            if (go && (o->flags & AFS__OP_CANCEL))
                afs__op_finished(ctx, op, -ECANCELED);
            else if (go)
                op_start(ctx, op);
            return;
        }
        o->xflags &= (uint8_t)~AFS__X_GO;
    }
    if ((o->xflags & AFS__X_LINKED) && link_broke(op, res)) {
        /* The kernel cancels the members linked after this one. Unless this op fails for
         * good, the core goes on with it and those cancellations are not results: the
         * members then run one at a time, once their completion came. */
        for (struct afs_op *m = o->chain_next; m; m = afs__op(m)->chain_next) {
            struct afs__op *mo = afs__op(m);
            mo->xflags |= AFS__X_ABSORB;
            if (!(mo->xflags & AFS__X_LINKED))
                break;
            mo->xflags &= (uint8_t)~AFS__X_LINKED;
        }
    }
    o->xflags &= (uint8_t)~AFS__X_LINKED;
    inflight_sub(ctx, o);
    o->state = AFS__IDLE;
    if (afs__op_step(ctx, op, res)) {
        o->state = AFS__QUEUED;
        ctx->stats.resubmits++;
        afs__list_push_front(&ctx->queued, op);
    }
}

/* A socket op (or a read or write of a socket) with blocking semantics on this thread, for
 * the inline path: the descriptor may be non-blocking (the readiness engine's), so a step
 * that would wait polls for it. */
static ssize_t run_sock(struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    for (;;) {
        bool in;
        ssize_t res = afs__sys_sock_try(op, &in);
        if (res == -EAGAIN) {
            afs__sys_sock_poll((int)(intptr_t)o->file->fd, in);
            continue;
        }
        if (o->code == AFS__CONNECT || o->code == AFS__SHUTDOWN)
            return res;
        if (o->code == AFS__ACCEPT) {
            if (res == -ECONNABORTED)
                continue;
            return res;
        }
        if (res < 0)
            return partial_or(o, res);
        if (res == 0)
            return is_read(o) || o->code == AFS__SENDFILE ? (ssize_t)o->done
                   : o->total == 0                        ? 0
                                                          : -EIO;
        o->done += (size_t)res;
        if (o->done >= o->total || (o->flags & AFS__OP_PARTIAL))
            return (ssize_t)o->done;
    }
}

ssize_t afs__op_run_sync(struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    if (afs__is_meta(o))
        return run_meta(op);
    int kept = take_seq_err(o);
    if (kept)
        return kept;
    if (afs__is_sock(o) || (o->file->polled && !afs__is_ctl(o))) {
        ssize_t res = run_sock(op);
        afs__sendfile_drop(op); /* a sendfile's buffer, at once (inline: no callback) */
        return res;
    }
    afs__fd_t fd = o->file->fd;
    if (afs__is_ctl(o)) {
        int err;
        do {
            switch (o->code) {
            case AFS__FALLOCATE: err = afs__sys.fallocate(fd, o->arg, o->off, o->total); break;
            case AFS__FTRUNCATE: err = afs__sys.ftruncate(fd, o->off); break;
            case AFS__FADVISE: err = afs__sys_fadvise(fd, o->off, o->total, o->arg); break;
            case AFS__SYNC_RANGE: err = afs__sys_sync_range(fd, o->off, o->total, o->arg); break;
            default: err = afs__sys.fsync(fd, o->fsync_flags & AFS_FSYNC_DATA); break;
            }
        } while (err == -EINTR || err == -EAGAIN);
        return err;
    }
    while (o->done < o->total) {
        struct afs__span s;
        afs__op_span(op, &s);
        ssize_t res;
        bool w = !is_read(o);
        if (s.buf)
            res = w ? afs__sys.pwrite(fd, s.buf, s.len, s.off)
                    : afs__sys.pread(fd, s.buf, s.len, s.off);
        else
            res = w ? afs__sys.pwritev(fd, s.iov, s.iovcnt, s.off)
                    : afs__sys.preadv(fd, s.iov, s.iovcnt, s.off);
        if (res == -EINTR || res == -EAGAIN)
            continue;
        if (res < 0)
            return partial_or(o, res);
        if (res == 0) {
            if (!w && o->done > 0)
                o->eof |= AFS__OP_EOF_CHECK;
            return w ? -EIO : (ssize_t)o->done;
        }
        o->done += (size_t)res;
        if (w && o->done >= o->total && (o->xflags & AFS__X_DSYNC)) {
            /* AFS_WRITE_DSYNC without RWF_DSYNC: the data sync after the write. */
            int err;
            do
                err = afs__sys.fsync(fd, true);
            while (err == -EINTR || err == -EAGAIN);
            if (err < 0)
                return err;
        }
        if (w || o->done >= o->total)
            continue;
        if (o->flags & AFS__OP_PARTIAL)
            break;
        if ((size_t)res < s.len && at_end(o)) {
            o->eof |= AFS__OP_EOF_SKIP;
            break;
        }
    }
    return (ssize_t)o->done;
}

/* ------------------------------------------------------------------------------------------
 * Submission and waiting
 * ---------------------------------------------------------------------------------------- */

static void pool_submit(struct afs_ctx *ctx, struct afs_op *op)
{
    if (!ctx->pool) {
        /* io_workers set: that many at most (ops that block on a device want as many threads
         * as they have ops in flight); else twice the CPUs, 4 to 32, and on POSIX more, up
         * to AFS_POOL_MAX_THREADS, while workers are blocked in their ops. Windows keeps the
         * base size: its file transfers go through the completion port, and the pool's
         * metadata and socket calls under wine take long enough to look blocked. */
        unsigned n = ctx->cfg.io_workers == AFS_IO_WORKERS_KERNEL ? 256u : ctx->cfg.io_workers;
        unsigned max = n;
        if (n == 0) {
            n = afs__cpu_count() * 2;
            n = n < 4 ? 4 : n > 32 ? 32 : n;
#ifndef _WIN32
            max = AFS_POOL_MAX_THREADS;
#else
            max = n;
#endif
        }
        int err = afs__pool_new(ctx, AFS_MIN(n, ctx->cfg.queue_depth),
                                AFS_MIN(max, ctx->cfg.queue_depth), &ctx->pool);
        if (err < 0) {
            afs__op_finished(ctx, op, err);
            return;
        }
    }
    afs__op(op)->flags |= AFS__OP_POOL;
    ctx->stats.pool_ops++;
    afs__pool_submit(ctx->pool, op);
}

static bool link_cuts(const struct afs_ctx *ctx, const struct afs_op *op)
{
    return !ctx->be->link_cuts || ctx->be->link_cuts(op);
}

/* The most one read or write system call moves on Linux (MAX_RW_COUNT: INT_MAX rounded down
 * to a page, here to the largest page, 64 KiB). */
#define KERNEL_RW_MAX ((size_t)INT_MAX & ~(size_t)0xffff)

/* Whether what is left of op goes to the kernel as one transfer. The core cuts a buffer at
 * AFS__CHUNK_MAX and the kernel cuts a transfer at KERNEL_RW_MAX, reporting what it moved as
 * if it were the whole: the link after a member that takes several steps would go on after
 * its first one, and the next member would run before the rest of it. */
static bool one_step(struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    if (afs__is_ctl(o) || afs__is_meta(o))
        return true;
    struct afs__span s;
    afs__op_span(op, &s);
    return s.len == o->total - o->done && s.len <= KERNEL_RW_MAX;
}

/* A chain whose head is about to be staged: when the backend links (io_uring) and takes
 * every member up to the first whose failure the kernel would not cut the link at, or that
 * takes more than one transfer (or the end), those are staged now, linked, in one
 * submission (the rest starts after the last of them: chain_step); else 0 and the members
 * run one after another. Returns the members staged after the head. */
static unsigned stage_linked(struct afs_ctx *ctx, struct afs_op *head)
{
    if (!ctx->be->link || ctx->crash || !link_cuts(ctx, head) || !one_step(head))
        return 0;
    unsigned n = 1;
    for (struct afs_op *m = afs__op(head)->chain_next; m; m = afs__op(m)->chain_next) {
        struct afs__op *mo = afs__op(m);
        if (mo->state != AFS__HELD || (mo->flags & (AFS__OP_POOL | AFS__OP_CANCEL)) ||
            (mo->total == 0 && !afs__is_ctl(mo) && !afs__is_meta(mo)) ||
            (ctx->be->accepts && !ctx->be->accepts(ctx, m)))
            return 0;
        n++;
        if (!link_cuts(ctx, m) || !one_step(m))
            break; /* linked last: the members after it start once it is done */
    }
    if (bounded_inflight(ctx) + n - 1 > ctx->cfg.queue_depth || !ctx->be->link(ctx, head, n))
        return 0;
    struct afs_op *m = head;
    for (unsigned i = 1; i < n; i++, m = afs__op(m)->chain_next)
        afs__op(m)->xflags |= AFS__X_LINKED;
    return n - 1;
}

/* Hands queued ops to the backend (staged) or the pool, up to queue_depth in flight. */
static int submit_queued(struct afs_ctx *ctx)
{
    int n = 0;
    while (ctx->queued.len && bounded_inflight(ctx) < ctx->cfg.queue_depth) {
        struct afs_op *op = afs__list_pop(&ctx->queued);
        struct afs__op *o = afs__op(op);
        o->state = AFS__INFLIGHT;
        inflight_add(ctx, o);
        n++;
        if (o->file->polled && !afs__is_ctl(o) && afs__sock_ready(ctx)) {
            afs__ready_submit(ctx, op); /* tried now; parked if it would wait */
            continue;
        }
        if ((o->flags & AFS__OP_POOL) || (ctx->be->accepts && !ctx->be->accepts(ctx, op))) {
            pool_submit(ctx, op);
            continue;
        }
        unsigned linked = o->chain_next ? stage_linked(ctx, op) : 0;
        int err = ctx->be->prep(ctx, op);
        AFS_CHECK(err == 0 || !linked, "a linked chain member could not be staged");
        if (err < 0)
            afs__op_finished(ctx, op, err);
        else
            ctx->staged++;
        for (struct afs_op *m = o->chain_next; linked; m = afs__op(m)->chain_next, linked--) {
            afs__op(m)->state = AFS__INFLIGHT;
            inflight_add(ctx, afs__op(m));
            n++;
            AFS_CHECK(ctx->be->prep(ctx, m) == 0, "a linked chain member could not be staged");
            ctx->staged++;
        }
        /* A slice of a large batch (between ops: a linked chain is staged whole above). */
        if (ctx->staged >= AFS__SUBMIT_SLICE && ctx->be->flush && ctx->be->flush(ctx) == 0)
            ctx->staged = 0;
    }
    return n;
}

void afs__ctx_stage(struct afs_ctx *ctx)
{
    if (!ctx->chain_open && !ctx->in_callback)
        (void)submit_queued(ctx);
}

int afs_ctx_submit(struct afs_ctx *ctx)
{
    afs__ctx_check(ctx, __func__);
    AFS_CHECK(!ctx->chain_open, "a chain is open: afs_chain_end() first");
    int n = submit_queued(ctx);
    if (ctx->staged) {
        int err = ctx->be->enter(ctx, false, 0);
        ctx->staged = 0;
        if (err < 0)
            return err;
    }
    return n;
}

static int run_callbacks(struct afs_ctx *ctx)
{
    int n = 0;
    struct afs_op *op;
    bool nested = ctx->in_callback;
    while ((op = afs__list_pop(&ctx->done))) {
        struct afs__op *o = afs__op(op);
        /* With thousands of ops done at once, their lines are gone from the caches since
         * they were queued, and a callback takes less time than fetching one: fetched ahead,
         * the first line of the op three places on (taking an op off the list writes to the
         * first line of the one after it) and what the data of the op two places on points to
         * (a blocking call's record). Their own first lines came with the turns before. */
        struct afs_list_node *nx = ctx->done.l.first;
        nx = nx ? nx->next : NULL;
        if (nx) {
            if (nx->next)
                afs__prefetch(nx->next);
            afs__prefetch(afs__op_of_node(nx)->data);
        }
        afs__op_set_idle(o, op);
        o->file->inflight--;
        ctx->stats.completions++;
        if (ctx->crash)
            afs__crash_done(ctx, op, &op->result);
        ctx->in_callback = true;
        o->cb(op);
        ctx->in_callback = nested;
        n++;
    }
    return n;
}

int afs_ctx_wait(struct afs_ctx *ctx, unsigned min_complete, int64_t timeout_ns)
{
    afs__ctx_check(ctx, __func__);
    AFS_CHECK(!ctx->chain_open, "a chain is open: afs_chain_end() first");
    if (ctx->in_callback)
        return -EDEADLK;
    int64_t deadline = timeout_ns;
    if (timeout_ns > 0) {
        int64_t now = afs__now_ns();
        /* Past what the clock can name: no limit. */
        deadline = timeout_ns > INT64_MAX - now ? -1 : now + timeout_ns;
    }
    unsigned ran = 0;
    int err = 0;
    bool woken = false;
    for (;;) {
        submit_queued(ctx);
        int64_t left = deadline;
        if (deadline > 0) {
            left = deadline - afs__now_ns();
            if (left <= 0)
                left = 0;
        }
        bool outstanding = ctx->queued.len || ctx->inflight;
        bool block = left != 0 && ran < min_complete && ctx->done.len == 0 &&
                     (outstanding || ran == 0);
        err = ctx->be->enter(ctx, block, left);
        ctx->staged = 0;
        if (ctx->pool)
            afs__pool_reap(ctx->pool);
        if (ctx->ready)
            afs__ready_reap(ctx);
        if (atomic_exchange_explicit(&ctx->wake_requested, false, memory_order_acquire))
            woken = true;
        ran += (unsigned)run_callbacks(ctx);
        if (err < 0 || ran >= min_complete || woken || left == 0)
            break;
        if (!ctx->queued.len && !ctx->inflight && ran > 0)
            break; /* min_complete is more than could ever complete */
    }
    if (err < 0 && ran == 0)
        return err;
    return (int)(ran > INT_MAX ? INT_MAX : ran);
}

int afs__op_wait(struct afs_ctx *ctx, struct afs_op *op, struct afs__op_waiting *ow)
{
    return afs__op_wait_inl(ctx, op, ow);
}

void afs__op_wait_done(struct afs__op_waiting *ow, struct afs_op *op)
{
    ow->pending = false;
    struct afs_waiter *w = ow->w;
    if (w) {
        ow->w = NULL;
        w->resume(w, ow->co, op);
    }
}

int afs__ctx_drain(struct afs_ctx *ctx, struct afs_file *f, const char *call)
{
    for (;;) {
        bool busy = f ? f->inflight > 0
                      : (ctx->queued.len || ctx->inflight || ctx->done.len);
        if (!busy)
            return 0;
        if (ctx->chain_open) /* its ops are held until it ends: this would wait for ever */
            afs__panic(call, "a chain is open: afs_chain_end() first");
        int err = afs_ctx_wait(ctx, 1, -1);
        if (err < 0 && err != -EINTR && err != -EAGAIN)
            return err;
    }
}

int afs__enter_waker(struct afs_ctx *ctx, bool wait, int64_t timeout_ns)
{
    ctx->stats.kernel_waits += wait;
    if (wait && (afs__ctx_block(ctx, timeout_ns) & AFS__WOKE_WAKER))
        afs__waker_drain(&ctx->waker);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Cancellation
 * ---------------------------------------------------------------------------------------- */

int afs_cancel(struct afs_op *op)
{
    if (!op || !op_live(op))
        return -EINVAL; /* never queued: not an op the library knows */
    struct afs__op *o = afs__op(op);
    /* Its callback has run: finished, nothing to cancel (and the file may have been closed
     * and freed since, so it is not looked at). */
    if (o->state == AFS__IDLE)
        return -EALREADY;
    struct afs_ctx *ctx = o->file->ctx;
    AFS__OWNER_CHECK(ctx, __func__, "op's context");
    /* A close runs to its end: a cancelled one would leave the caller unsure whether the fd
     * is still open (and it may be reused at once by another open). */
    if (o->code == AFS__CLOSE && (o->state == AFS__QUEUED || o->state == AFS__INFLIGHT))
        return 0;
    switch (o->state) {
    case AFS__QUEUED:
        /* Also a socket or pipe op waiting for its next piece, after part of it moved. */
        afs__list_remove(&ctx->queued, op);
        afs__op_finished(ctx, op, cancelled_result(o));
        return 0;
    case AFS__HELD:
        /* A chain member not started: it fails with -ECANCELED when its turn comes (or
         * at once in a chain still being built), and the rest of the chain with it. */
        o->flags |= AFS__OP_CANCEL;
        return 0;
    case AFS__INFLIGHT:
        /* A pool worker may be running the op: the pool keeps the request in its own word,
         * never in the op's flags the worker reads. */
        if (o->flags & AFS__OP_POOL) {
            if (afs__pool_cancel(ctx->pool, op))
                afs__op_finished(ctx, op, cancelled_result(o));
            return 0;
        }
        if (o->flags & AFS__OP_READY) {
            afs__ready_cancel(ctx, op); /* parked: nothing runs it meanwhile */
            return 0;
        }
        o->flags |= AFS__OP_CANCEL;
        if (ctx->be->cancel)
            ctx->be->cancel(ctx, op);
        return 0;
    default: /* AFS__DONE: finished, its callback is pending */
        return -EALREADY;
    }
}

/* ------------------------------------------------------------------------------------------
 * Chains
 * ---------------------------------------------------------------------------------------- */

int afs_chain_begin(struct afs_ctx *ctx)
{
    afs__ctx_check(ctx, __func__);
    if (ctx->chain_open)
        return -EBUSY;
    ctx->chain_open = true;
    ctx->chain_head = ctx->chain_tail = NULL;
    ctx->chain_len = 0;
    return 0;
}

/* What afs_chain_end(AFS_CHAIN_WAIT) waits on: the last member's callback. */
struct chain_wait {
    struct chain_wait     *next;
    struct afs_op         *last;
    afs_cb                *cb;  /* the last member's own */
    int                    err; /* the first member's failure, as it finished: the members'
                                   callbacks may reuse or free them before the wait returns */
    struct afs__op_waiting ow;
};
static _Thread_local struct chain_wait *chain_waits;

/* A member of a chain failed with res (before its callback, and before those of the members
 * after it, which it cancels): the chain's waiter, if any, keeps the first failure. */
static void chain_note_failure(struct afs_op *op, ssize_t res)
{
    if (!chain_waits)
        return;
    struct afs_op *last = op;
    while (afs__op(last)->chain_next)
        last = afs__op(last)->chain_next;
    for (struct chain_wait *w = chain_waits; w; w = w->next) {
        if (w->last == last) {
            if (!w->err)
                w->err = (int)res;
            return;
        }
    }
}

static void chain_wait_cb(struct afs_op *op)
{
    struct chain_wait **p = &chain_waits;
    while (*p && (*p)->last != op)
        p = &(*p)->next;
    AFS_CHECK(*p != NULL, "chain wait lost");
    struct chain_wait *w = *p;
    *p = w->next;
    if (!w->err && op->result < 0)
        w->err = (int)op->result;
    w->cb(op);
    afs__op_wait_done(&w->ow, op);
}

int afs_chain_end(struct afs_ctx *ctx, unsigned flags)
{
    afs__ctx_check(ctx, __func__);
    if (!ctx->chain_open || (flags & ~(AFS_CHAIN_WAIT | AFS_CHAIN_CANCEL)))
        return -EINVAL;
    ctx->chain_open = false;
    struct afs_op *head = ctx->chain_head, *last = ctx->chain_tail;
    unsigned n = ctx->chain_len;
    ctx->chain_head = ctx->chain_tail = NULL;
    ctx->chain_len = 0;
    if (!head)
        return 0;
    struct afs__op *ho = afs__op(head);
    bool wait = flags & AFS_CHAIN_WAIT;
    int ret = (int)n;
    if (wait && ctx->in_callback) {
        flags |= AFS_CHAIN_CANCEL; /* nothing can be waited for in a callback */
        wait = false;
        ret = -EDEADLK;
    }
    if (flags & AFS_CHAIN_CANCEL)
        ho->flags |= AFS__OP_CANCEL;
    struct chain_wait w = {0};
    if (wait) {
        w.last = last;
        w.cb = afs__op(last)->cb;
        w.ow.pending = true;
        w.next = chain_waits;
        chain_waits = &w;
        afs__op(last)->cb = chain_wait_cb;
    }
    if (ho->flags & AFS__OP_CANCEL)
        afs__op_finished(ctx, head, -ECANCELED);
    else
        op_start(ctx, head);
    if (!wait)
        return ret;
    int err = afs__op_wait(ctx, last, &w.ow);
    /* The first failure, in order: the members before it succeeded, those after it are
     * -ECANCELED. */
    if (w.err)
        return w.err;
    return err < 0 ? err : 0;
}
