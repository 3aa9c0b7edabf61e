/* Files: open and close, the position API and the blocking positional calls. */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define AFS__OPEN_FLAGS                                                                        \
    (AFS_RDONLY | AFS_WRONLY | AFS_RDWR | AFS_CREAT | AFS_TRUNC | AFS_EXCL | AFS_APPEND |      \
     AFS_NOFOLLOW | AFS_DIRECT | AFS_DSYNC)

_Static_assert(offsetof(struct afs_file, magic) >= 32, "magic clear of malloc's words");

/* Every public call on a file starts here: NULL, a closed file and memory that is not a file
 * abort with the call's name (the one rule of the header), in release builds too. */
struct afs_file *afs__file_check_any(struct afs_file *f, const char *call)
{
    if (!f)
        afs__panic(call, "file is NULL");
    afs__magic_check(AFS__MAGIC_OF(f, struct afs_file), AFS__FILE_MAGIC, f, call,
                     "file was closed (used after afs_close, or closed twice)",
                     "not an open file (closed, or never opened)");
    return f;
}

struct afs_file *afs__file_check(struct afs_file *f, const char *call)
{
    afs__file_check_any(f, call);
    AFS__OWNER_CHECK(f->ctx, call, "file's context");
    return f;
}

#define file_check(f, call) afs__file_check((f), (call))

/* Fills in a file around its open descriptor, lets the backend see it and links it into
 * ctx's list. `info`: what fstat said about it, or NULL to ask. On error nothing is linked
 * and the descriptor is left to the caller. */
int afs__file_attach(struct afs_ctx *ctx, struct afs_file *f, int flags, enum afs_mode mode,
                     const struct afs__fd_info *info)
{
    struct afs__fd_info asked;
    if (!info) {
        int err = afs__sys_fd_info(f->fd, &asked);
        if (err < 0)
            return err;
        info = &asked;
    }
    f->seq = info->seq;
    f->sock = info->sock;
    f->dgram = info->dgram;
    atomic_init(&f->seq_err, 0);
    /* Where sockets wait on readiness, pipes and FIFOs do too: a read that waits for a
     * writer then parks in the engine, where a cancel or a deadline reaches it, instead of
     * holding a pool thread (or the only thread) in read(2) until data comes. */
    f->polled = f->sock || (info->fifo && info->own && afs__sock_ready(ctx));
    atomic_init(&f->size_hint, info->size);
    f->open_size = info->size;
    f->ctx = ctx;
    f->flags = flags;
    f->mode = mode;
    f->dio_align = (flags & AFS_DIRECT) ? afs__sys_dio_align(f->fd) : 0;
    int err = f->sock && !info->made ? afs__sock_attach(ctx, f) : 0;
    if (err == 0 && f->polled && !f->sock)
        err = afs__sys_set_nonblock((int)(intptr_t)f->fd, true);
    if (err == 0 && ctx->be->open)
        err = ctx->be->open(ctx, f);
    if (err < 0)
        return err;
    f->magic = AFS__FILE_MAGIC ^ (uintptr_t)f;
    afs_list_push_front(&ctx->files, &f->node);
    return 0;
}

static int open_batched(struct afs_ctx *ctx, const char *path, int flags, unsigned perm,
                        afs__fd_t *out, struct afs__fd_info *info);

/* afs_open()'s and afs_openat_file()'s checks of their arguments; *out cleared. */
static int open_args(const char *path, int flags, unsigned perm, enum afs_mode mode,
                     struct afs_file **out)
{
    if (!path || !out)
        return -EINVAL;
    *out = NULL;
    if (afs__open_flags_bad(flags, AFS__OPEN_FLAGS | AFS_NONBLOCK))
        return -EINVAL;
    if (mode != AFS_MODE_SYNC && mode != AFS_MODE_ASYNC)
        return -EINVAL;
    return perm > 07777 ? -EINVAL : 0;
}

/* Makes f, whose fd the library just opened with flags, a file of ctx. AFS_NONBLOCK is for
 * the open only (a FIFO without its other end, a device): the file is then used as any other
 * (io_uring would answer -EAGAIN to reads of a non-blocking one); a FIFO is made
 * non-blocking again where it waits in the readiness engine. A regular file keeps the flag
 * until an op is set up on it (afs__file_settle): a file opened only for a look at its size,
 * or read from the page cache inside a task (the cached reads never set up an op), is
 * spared the system call. On failure the caller closes the fd and frees f. */
static int open_attach(struct afs_ctx *ctx, struct afs_file *f, int flags, enum afs_mode mode,
                       struct afs__fd_info *info)
{
    info->own = true;
    bool nb_open = (flags & AFS_NONBLOCK) && info->size >= 0;
    int err;
    if ((flags & AFS_NONBLOCK) && !nb_open && (err = afs__sys_opened_blocking(f->fd, flags)) < 0)
        return err;
    atomic_init(&f->nb_open, nb_open ? AFS__NB_OPEN : AFS__NB_SETTLED);
    return afs__file_attach(ctx, f, flags & ~AFS_NONBLOCK, mode, info);
}

int afs_open(struct afs_ctx *ctx, const char *path, int flags, unsigned perm,
             enum afs_mode mode, struct afs_file **out)
{
    afs__ctx_check(ctx, __func__);
    int err = open_args(path, flags, perm, mode, out);
    if (err == 0 && ctx->crash)
        err = afs__crash_gate(ctx);
    if (err < 0)
        return err;
    /* Crash mode truncates after the open, where the simulator can take note of it. */
    bool crash_trunc = ctx->crash && (flags & AFS_TRUNC);
    if (crash_trunc)
        flags &= ~AFS_TRUNC;

    struct afs_file *f = afs__zalloc(sizeof *f);
    if (!f)
        return -ENOMEM;
    struct afs__fd_info info;
    err = open_batched(ctx, path, flags, perm, &f->fd, &info);
    if (err == -ENOTSUP) {
        void *token = ctx->crash ? afs__crash_open_begin(ctx, path, flags) : NULL;
        err = afs__sys_open(path, flags, perm, &f->fd, &info);
        if (ctx->crash)
            afs__crash_open_end(ctx, token, err == 0);
    }
    if (err < 0) {
        free(f);
        return err;
    }
    if ((err = open_attach(ctx, f, flags, mode, &info)) < 0) {
        afs__sys_close(f->fd);
        free(f);
        return err;
    }
    if (ctx->crash && (err = afs__crash_attach(ctx, f, path, crash_trunc)) < 0) {
        afs_close(f);
        return err;
    }
    if (crash_trunc) {
        atomic_store_explicit(&f->size_hint, 0, memory_order_relaxed);
        f->open_size = 0;
    }
    *out = f;
    return 0;
}

int afs_openat_file(struct afs_ctx *ctx, int dirfd, const char *path, int flags,
                    unsigned perm, enum afs_mode mode, struct afs_stat *st,
                    struct afs_file **out)
{
    afs__ctx_check(ctx, __func__);
    int err = open_args(path, flags, perm, mode, out);
    if (err < 0)
        return err;
    if (ctx->crash) {
        /* The crash simulator follows files by path: afs_open's, relative to the current
         * directory only. */
        if (dirfd != AFS_AT_FDCWD)
            return -ENOTSUP;
        err = afs_open(ctx, path, flags, perm, mode, out);
        if (err == 0 && st && (err = afs__sys_statx((int)(intptr_t)(*out)->fd, "",
                                                    AFS_AT_EMPTY_PATH, st)) < 0) {
            afs_close(*out);
            *out = NULL;
        }
        return err;
    }
    int fd = afs_openat(ctx, dirfd, path, flags, perm);
    if (fd < 0)
        return fd;
    /* What kind of file it is, from one fstat, as afs_open() learns it; a file this open
     * created (AFS_CREAT with AFS_EXCL) is a new, empty regular file, known without one. */
    struct afs__fd_info info = {.size = 0};
    if ((flags & (AFS_CREAT | AFS_EXCL)) != (AFS_CREAT | AFS_EXCL) || st) {
        err = afs__sys_fd_info_st((afs__fd_t)(intptr_t)fd, &info, st);
        if (err == 0 && info.dir)
            err = -EISDIR;
    }
    struct afs_file *f = err == 0 ? afs__zalloc(sizeof *f) : NULL;
    if (err == 0 && !f)
        err = -ENOMEM;
    if (err < 0) {
        afs__sys_close_fd(fd);
        return err;
    }
    f->fd = (afs__fd_t)(intptr_t)fd;
    if ((err = open_attach(ctx, f, flags, mode, &info)) < 0) {
        afs__sys_close(f->fd);
        free(f);
        return err;
    }
    *out = f;
    return 0;
}

int afs_create(struct afs_ctx *ctx, const char *path, enum afs_mode mode, struct afs_file **out)
{
    afs__ctx_check(ctx, __func__);
    return afs_open(ctx, path, AFS_RDWR | AFS_CREAT | AFS_TRUNC, 0666, mode, out);
}

static int close_batched(struct afs_ctx *ctx, int fd);

/* The end of a file's life in its context: off its list, and the handle dead. */
static void file_free(struct afs_ctx *ctx, struct afs_file *f)
{
    afs_list_remove(&ctx->files, &f->node);
    memset(f, 0, sizeof *f);
    /* A second close or a late call aborts with a message. volatile: a store right before
     * free() is otherwise dropped as dead by the compiler. */
    *(volatile uintptr_t *)&f->magic = AFS__DEAD;
    free(f);
}

/* The first half of a close, shared by afs_close() and afs__file_release(): every op of f
 * done (a pipe's or socket's cancelled first: they might wait for ever), and the backend's
 * hold on the descriptor dropped. `call`: the caller's name, for the misuse messages. */
static struct afs_ctx *file_leave(struct afs_file *f, const char *call)
{
    file_check(f, call);
    if (f->of_stream)
        afs__panic(call, "the file is a stream's (afs_stream_file): afs_fclose closes it");
    struct afs_ctx *ctx = f->ctx;
    if (ctx->in_callback && f->inflight != 0)
        afs__panic(call, "closing a file with ops in flight from a callback would deadlock");
    if (afs__close_cancels(f))
        afs__seq_closing(ctx, f);
    afs__ctx_drain(ctx, f, call);
    if (ctx->be->close)
        ctx->be->close(ctx, f);
    return ctx;
}

int afs_close(struct afs_file *f)
{
    struct afs_ctx *ctx = file_leave(f, __func__);
    /* In a task the close joins the batch: closing a file with dirty pages can take a
     * while in some file systems, and every other task would wait for it. */
    int err = -ENOTSUP;
#ifdef _WIN32
    if (!f->sock) /* a socket is no handle for CloseHandle: Winsock closes it, here */
#endif
        /* Not in crash mode: after the cut its ops fail before they reach the kernel, and
         * the descriptor must close all the same. */
        if (!ctx->crash)
            err = close_batched(ctx, (int)(intptr_t)f->fd);
    if (err == -ENOTSUP)
        err = f->sock ? afs__sys_sock_close(f->fd) : afs__sys_close(f->fd);
    if (ctx->crash) {
        afs__crash_detach(f);
        if (afs__crash_gate(ctx) < 0)
            err = -EIO; /* closed all the same */
    }
    file_free(ctx, f);
    return err;
}

intptr_t afs__file_release(struct afs_file *f)
{
    struct afs_ctx *ctx = file_leave(f, __func__);
    if (ctx->crash)
        afs__crash_detach(f);
    intptr_t fd = (intptr_t)f->fd;
    file_free(ctx, f);
    return fd;
}

struct afs_ctx *afs_file_ctx(const struct afs_file *f)
{
    file_check((struct afs_file *)f, __func__);
    return f->ctx;
}

intptr_t afs_file_fd(const struct afs_file *f)
{
    afs__file_check_any((struct afs_file *)f, __func__);
    /* The caller may use the descriptor as it likes: it gets it as documented, blocking, or
     * the error that kept it from being so. (Files are never defined const: the cast only
     * drops the getter's promise.) */
    int err = afs__file_settle((struct afs_file *)f);
    return err < 0 ? err : (intptr_t)f->fd;
}

int afs__file_settle_slow(struct afs_file *f)
{
    int s = AFS__NB_OPEN;
    if (atomic_compare_exchange_strong_explicit(&f->nb_open, &s, AFS__NB_SETTLING,
                                                memory_order_acquire, memory_order_acquire)) {
        /* Only this thread sets the flags: two F_SETFLs racing could undo one the owner of
         * the descriptor made in between (it has it from afs_file_fd() at once). A failure
         * stays: the descriptor still has O_NONBLOCK, which io_uring would answer with
         * -EAGAIN, so the file's ops fail with the error instead. */
        int err = afs__sys_opened_blocking(f->fd, f->flags);
        atomic_store_explicit(&f->nb_open, err < 0 ? err : AFS__NB_SETTLED,
                              memory_order_release);
        return err;
    }
    /* Another thread makes the fcntl: its op or the descriptor it hands out must not see
     * the flag, so wait for it (one system call; it never suspends in between). */
    while (s == AFS__NB_SETTLING) {
        afs__cpu_relax();
        s = atomic_load_explicit(&f->nb_open, memory_order_acquire);
    }
    return s < 0 ? s : 0;
}

int64_t afs_file_open_size(const struct afs_file *f)
{
    afs__file_check_any((struct afs_file *)f, __func__);
    return f->open_size;
}

int64_t afs_file_size(struct afs_file *f)
{
    file_check(f, __func__);
    if (f->seq)
        return 0; /* a pipe, socket or character device (Windows has no size to ask) */
    int64_t size = afs__sys_size(f->fd);
    if (size >= 0 && f->inflight == 0)
        atomic_store_explicit(&f->size_hint, size, memory_order_relaxed);
    return size;
}

/* ------------------------------------------------------------------------------------------
 * Blocking: queue an op, then suspend the task (a waiter for this context is installed) or
 * drive the context until the op's callback ran.
 * ---------------------------------------------------------------------------------------- */

void afs__blocking_cb(struct afs_op *op)
{
    afs__op_wait_done(op->data, op);
}
#define blocking_cb afs__blocking_cb

/* Waits for an op queued with blocking_cb. The op lives on the caller's stack frame: the
 * caller never runs in a callback here, so the wait returns only once its callback ran. */
static ssize_t wait_blocking(struct afs_ctx *ctx, struct afs_op *op,
                             struct afs__op_waiting *ow)
{
    ow->pending = true;
    afs__op_enqueue(op);
    int err = afs__op_wait_inl(ctx, op, ow);
    return err < 0 ? err : op->result;
}

/* In a callback the context cannot be driven; the call runs inline instead. */
static ssize_t run_inline(struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    struct afs_ctx *ctx = o->file->ctx;
    ctx->stats.inline_ops++;
    ssize_t res;
    if (ctx->crash && (res = afs__crash_start(ctx, op)) < 0) {
        afs__op_set_idle(o, op);
        return res;
    }
    res = afs__op_run_sync(op);
    afs__op_count_eof(ctx, op);
    afs__op_set_idle(o, op);
    if (ctx->crash)
        afs__crash_done(ctx, op, &res);
    return res;
}

static inline ssize_t blocking_run(struct afs_op *op, struct afs__op_waiting *ow,
                                   bool inline_ok)
{
    struct afs__op *o = afs__op(op);
    struct afs_ctx *ctx = o->file->ctx;
    if (inline_ok || ctx->in_callback)
        return run_inline(op); /* the hot path of small cached I/O: nothing more to clear */
    /* The backend's words are not cleared: every backend fills what it uses when it takes
     * the op, as for ops of the op API, which need no initialising (256 bytes of stack
     * less to write per op). */
    return wait_blocking(ctx, op, ow);
}

ssize_t afs__blocking_run(struct afs_op *op, struct afs__op_waiting *ow, bool inline_ok)
{
    return blocking_run(op, ow, inline_ok);
}

static void *meta_task(struct afs_ctx *ctx);

/* A small read in a task: served from the page cache without waiting when all of it is
 * there (READ_HIT, *res set), else it joins the batch like a larger one (READ_MISS; the
 * kernel has started to read the pages meanwhile), so that a miss suspends only the task
 * instead of blocking the scheduler's thread. A short read may be the end of the file or
 * pages partly cached, and an error may be transient: the batch makes the whole read and
 * answers for it. READ_INLINE: not tried (outside a task, where the system cannot tell, in
 * crash mode: the simulator sees every read), the read runs inline as before. */
enum { READ_INLINE, READ_MISS, READ_HIT };

/* Asking is cheap when the answer is a hit and dear when it is a miss: a system call, and
 * the kernel's read-ahead then sends the read to the device at once and alone, outside the
 * plug of the batch's submission (a device notification for each miss, which a virtual
 * machine pays with an exit). So each file measures its miss rate and what a hit and a miss
 * cost its reads that never wait, and asks only while the misses' cost stays under what the
 * hits save (taken as a hit's own cost: about what suspending and a trip through the batch
 * add). Otherwise its small reads join the batch at once, and a sample of them still asks,
 * so the file learns when its data is cached again: one in PROBE_EVERY while the samples
 * miss, twice as many after each sample that hits (a cache warming up is seen within a few
 * hundred reads). A probe is timed while a cost is unknown, when it is a sample, and one in
 * PROBE_TIME_EVERY otherwise. A miss's cost is the average of its times, a hit's its lowest
 * recent time: a hit that took longer was mostly serving the interrupts of earlier misses'
 * device reads, a cost of the misses that their own times do not show. */
enum { PROBE_EVERY = 32, PROBE_TIME_EVERY = 16, PROBE_FULL = 1024 };

static void probe_learn(struct afs__probe *p, bool hit, int64_t ns)
{
    int target = hit ? 0 : PROBE_FULL;
    p->misses = (uint16_t)(p->misses + (target - (int)p->misses) / 32);
    if (ns >= 0) {
        uint32_t v = ns <= 0 ? 1 : ns > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
        if (!hit)
            p->miss_ns = p->miss_ns ? p->miss_ns - p->miss_ns / 8 + v / 8 : v;
        else if (!p->hit_ns || v < p->hit_ns)
            p->hit_ns = v;
        else
            p->hit_ns += (v - p->hit_ns) / 64;
    }
    bool was_off = p->off;
    if (p->hit_ns && p->miss_ns)
        p->off = (uint64_t)p->misses * p->miss_ns > (uint64_t)(PROBE_FULL - p->misses) * p->hit_ns;
    else
        p->off = !hit; /* a cost still unknown: follow the last answer */
    if (!was_off)
        p->gap = PROBE_EVERY;
    else if (hit)
        p->gap = p->gap > 1 ? p->gap / 2 : 1;
    else
        p->gap = p->gap < PROBE_EVERY ? p->gap * 2 : PROBE_EVERY;
}

/* The context's rule for such reads (asyncfs.h, AFS_CTX_INLINE_SMALL; tune.h): its events
 * are the small reads that reach it, its work the context's completed ops and inline reads,
 * its CPU clock the thread's (the context's one thread does both ways' work). */
static uint64_t work_done(const void *arg)
{
    const struct afs_ctx *ctx = arg;
    return ctx->stats.completions + ctx->stats.inline_ops;
}

static int64_t thread_cpu(void)
{
    return afs__sys.cpu_now ? afs__sys.cpu_now() : -1;
}

static int read_cached(struct afs_file *f, void *buf, size_t len, uint64_t off, ssize_t *res)
{
    struct afs_ctx *ctx = f->ctx;
    /* An offset past INT64_MAX is refused by afs__op_setup() on the inline way; the system
     * must not see it (preadv2 reads at the file's position for an offset of -1). So is a
     * file whose O_NONBLOCK could not be cleared (afs__file_settle), as every op on it. */
    if (!afs__sys.pread_nowait || f->seq || f->no_nowait || ctx->crash || !buf || len == 0 ||
        len > (size_t)SSIZE_MAX || off > (uint64_t)INT64_MAX - len ||
        atomic_load_explicit(&f->nb_open, memory_order_relaxed) < 0 || !meta_task(ctx))
        return READ_INLINE;
    if (ctx->read_rule_on) {
        const struct afs__tune_src src = {work_done, thread_cpu, ctx};
        if (afs__tune_count(&ctx->read_rule, 1, &src))
            return READ_MISS; /* this window's way: through the batch, cached or not */
    }
    struct afs__probe *p = &f->probe;
    if (p->off && ++p->tick < p->gap)
        return READ_MISS;
    p->tick = 0;
    bool timed = p->off || !p->hit_ns || !p->miss_ns || ++p->timed >= PROBE_TIME_EVERY;
    int64_t t0 = timed ? afs__sys.now() : 0;
    ssize_t r = afs__sys.pread_nowait(f->fd, buf, len, off);
    int64_t ns = timed ? afs__sys.now() - t0 : -1;
    if (timed)
        p->timed = 0;
    if (r == (ssize_t)len) {
        probe_learn(p, true, ns);
        ctx->stats.inline_ops++;
        *res = r;
        return READ_HIT;
    }
    if (r == -EOPNOTSUPP) {
        f->no_nowait = true;
        return READ_INLINE;
    }
    if (r == -EAGAIN || (r > 0 && r < (ssize_t)len))
        probe_learn(p, false, ns);
    return READ_MISS;
}

/* Runs a blocking op set up (err: afs__op_setup's result) with blocking_cb and `ow`. */
static ssize_t blocking_go(struct afs_op *op, struct afs__op_waiting *ow, int err,
                           bool inline_ok)
{
    struct afs__op *o = afs__op(op);
    if (err < 0)
        return err;
    if (o->total == 0 && !afs__is_ctl(o))
        return 0; /* zero-length: nothing to run, no callback */
    return blocking_run(op, ow, inline_ok);
}

/* Runs one blocking op (a's cb and data are set here). `inline_ok`: small enough for the
 * sync threshold. */
static ssize_t blocking_op(struct afs_file *f, struct afs__op_args *a, bool inline_ok)
{
    struct afs_op op;
    struct afs__op_waiting ow = {0};
    afs__op(&op)->magic = 0; /* a fresh op (not busy); afs__op_setup fills what it uses */
    a->cb = blocking_cb;
    a->data = &ow;
    return blocking_go(&op, &ow, afs__op_setup(&op, f, a), inline_ok);
}

/* blocking_op of a read or write, with no block of arguments to write and read back: the
 * reads of thousands of tasks each bring every line they touch on their stacks back from
 * memory. The op is on a line of its own: from its setup to its callback it touches its
 * first two (struct afs__op). Not inlined: its frame holds a whole op, which the calls in
 * a coroutine with an op of its own (slot_rw) do not put on their stack. */
static AFS__NOINLINE ssize_t stack_rw(struct afs_file *f, bool write, void *buf, size_t len,
                                     uint64_t off, bool inline_ok)
{
    _Alignas(AFS__LINE) struct afs_op op;
    struct afs__op_waiting ow = {0};
    afs__op(&op)->magic = 0;
    return blocking_go(&op, &ow, afs__op_setup_rw(&op, f, write, buf, len, off, blocking_cb, &ow),
                       inline_ok);
}

/* The callback of an op lent by the waiter (afs_waiter.op_slot): its data is the
 * coroutine, and the waiter is the thread's. Nothing on the coroutine's stack is touched. */
static void slot_cb(struct afs_op *op)
{
    struct afs_waiter *w = afs_waiter_get();
    AFS_CHECK(w && w->ctx == afs__op(op)->file->ctx,
              "the waiter of a suspended read or write was removed before its op completed");
    w->resume(w, op->data, op);
}

/* A read or write in coroutine co on the op its waiter w lends it: queued, then co suspends
 * until the op's callback resumed it. */
static ssize_t slot_rw(struct afs_file *f, struct afs_waiter *w, void *co, struct afs_op *op,
                       bool write, void *buf, size_t len, uint64_t off)
{
    struct afs__op *o = afs__op(op);
    o->magic = 0; /* idle: the last call that used it returned after its callback */
    int err = afs__op_setup_rw(op, f, write, buf, len, off, slot_cb, co);
    if (err < 0)
        return err;
    if (o->total == 0)
        return 0; /* zero-length: nothing to run, no callback */
    afs__op_enqueue(op);
    err = w->suspend(w, co, op);
    AFS_CHECK(o->state == AFS__IDLE, "waiter resumed a task before its op completed");
    return err < 0 ? err : op->result;
}

/* A blocking read or write: on the op of the running coroutine when its waiter lends one,
 * else on one on the stack (stack_rw). */
static ssize_t blocking_rw(struct afs_file *f, bool write, void *buf, size_t len, uint64_t off,
                           bool inline_ok)
{
    struct afs_ctx *ctx = f->ctx;
    struct afs_waiter *w;
    if (f->seq)
        return -ESPIPE; /* positional, whatever the offset (UINT64_MAX is no position) */
    if (!inline_ok && !ctx->in_callback && (w = afs_waiter_get()) && w->ctx == ctx &&
        w->op_slot) {
        void *co = w->current(w);
        struct afs_op *op = co ? w->op_slot(w, co) : NULL;
        if (op)
            return slot_rw(f, w, co, op, write, buf, len, off);
    }
    return stack_rw(f, write, buf, len, off, inline_ok);
}

/* Whether the coroutine running on this thread may not make calls any more (its waiter's
 * check: a cancelled task's op must not run inline, unseen by its waiter). */
static bool co_stopped(const struct afs_ctx *ctx)
{
    struct afs_waiter *w;
    if (ctx->in_callback || !(w = afs_waiter_get()) || !w->check)
        return false;
    void *co = w->current(w);
    return co && w->check(w, co) != 0;
}

/* Small buffered ops run inline (include/asyncfs.h: "Inside a corio task"); direct I/O always goes
 * to the device asynchronously. */
static bool small(const struct afs_file *f, size_t len)
{
    /* A pipe's, socket's or tty's transfer may wait for the other end: never inline. */
    return len <= f->ctx->cfg.sync_threshold && !(f->flags & AFS_DIRECT) && !f->seq &&
           !co_stopped(f->ctx);
}

/* A read's way: true when the page cache served it (*res), else *inline_ok for
 * blocking_op (small, and not a miss that joins the batch instead). */
static bool read_small(struct afs_file *f, void *buf, size_t len, uint64_t off, ssize_t *res,
                       bool *inline_ok)
{
    *inline_ok = small(f, len);
    if (!*inline_ok)
        return false;
    int c = read_cached(f, buf, len, off, res);
    *inline_ok = c == READ_INLINE;
    return c == READ_HIT;
}

ssize_t afs_pread(struct afs_file *f, void *buf, size_t len, uint64_t off)
{
    file_check(f, __func__);
    ssize_t res;
    bool inline_ok;
    if (read_small(f, buf, len, off, &res, &inline_ok))
        return res;
    return blocking_rw(f, false, buf, len, off, inline_ok);
}

ssize_t afs_pwrite(struct afs_file *f, const void *buf, size_t len, uint64_t off)
{
    file_check(f, __func__);
    return blocking_rw(f, true, (void *)buf, len, off, small(f, len));
}

ssize_t afs_preadv(struct afs_file *f, const struct iovec *iov, int iovcnt, uint64_t off)
{
    file_check(f, __func__);
    return blocking_op(f, &(struct afs__op_args){.code = AFS__READV, .iov = iov, .iovcnt = iovcnt,
                                                .off = off},
                       false);
}

ssize_t afs_pwritev(struct afs_file *f, const struct iovec *iov, int iovcnt, uint64_t off)
{
    file_check(f, __func__);
    return blocking_op(f, &(struct afs__op_args){.code = AFS__WRITEV, .iov = iov, .iovcnt = iovcnt,
                                                .off = off},
                       false);
}

ssize_t afs_pwrite_flags(struct afs_file *f, const void *buf, size_t len, uint64_t off,
                         unsigned flags)
{
    file_check(f, __func__);
    if (flags & ~AFS_WRITE_DSYNC)
        return -EINVAL;
    if (f->seq)
        return -ESPIPE;
    return blocking_op(f, &(struct afs__op_args){.code = AFS__WRITE, .buf = (void *)buf, .len = len,
                                                .off = off, .xflags = afs__write_xflags(flags)},
                       small(f, len));
}

ssize_t afs_pwritev_flags(struct afs_file *f, const struct iovec *iov, int iovcnt, uint64_t off,
                          unsigned flags)
{
    file_check(f, __func__);
    if (flags & ~AFS_WRITE_DSYNC)
        return -EINVAL;
    return blocking_op(f, &(struct afs__op_args){.code = AFS__WRITEV, .iov = iov, .iovcnt = iovcnt,
                                                .off = off, .xflags = afs__write_xflags(flags)},
                       false);
}

int afs_fsync(struct afs_file *f, unsigned flags)
{
    file_check(f, __func__);
    return (int)blocking_op(f, &(struct afs__op_args){.code = AFS__FSYNC,
                                                     .fsync_flags = flags}, false);
}

int afs_fallocate(struct afs_file *f, int mode, uint64_t off, uint64_t len)
{
    file_check(f, __func__);
    if (mode < 0)
        return -EINVAL;
    return (int)blocking_op(f, &(struct afs__op_args){.code = AFS__FALLOCATE, .off = off,
                                                     .range = len, .arg = (unsigned)mode},
                            false);
}

int afs_ftruncate(struct afs_file *f, uint64_t size)
{
    file_check(f, __func__);
    return (int)blocking_op(f, &(struct afs__op_args){.code = AFS__FTRUNCATE, .off = size}, false);
}

int afs_fadvise(struct afs_file *f, uint64_t off, uint64_t len, int advice)
{
    file_check(f, __func__);
    if (advice < 0)
        return -EINVAL;
    return (int)blocking_op(f, &(struct afs__op_args){.code = AFS__FADVISE, .off = off,
                                                     .range = len, .arg = (unsigned)advice},
                            false);
}

int afs_sync_file_range(struct afs_file *f, uint64_t off, uint64_t len, unsigned flags)
{
    file_check(f, __func__);
    return (int)blocking_op(f, &(struct afs__op_args){.code = AFS__SYNC_RANGE, .off = off,
                                                     .range = len, .arg = flags},
                            false);
}

/* ------------------------------------------------------------------------------------------
 * Metadata: the blocking calls, and files made from fds.
 * ---------------------------------------------------------------------------------------- */

/* The coroutine a blocking call on ctx would suspend, or NULL (then the call is made on this
 * thread). */
static void *meta_task(struct afs_ctx *ctx)
{
    struct afs_waiter *w = afs_waiter_get();
    if (!w || w->ctx != ctx || ctx->in_callback)
        return NULL;
    return w->current(w);
}

/* Runs one blocking metadata op (a's cb and data are set here). */
static int blocking_meta(struct afs_ctx *ctx, struct afs__meta_args a)
{
    struct afs_op op;
    struct afs__op_waiting ow = {0};
    memset(&op, 0, sizeof op);
    a.cb = blocking_cb;
    a.data = &ow;
    int err = afs__meta_setup(&op, ctx, &a);
    if (err < 0)
        return err;
    if (!meta_task(ctx))
        return (int)run_inline(&op);
    return (int)wait_blocking(ctx, &op, &ow);
}

/* A close in a task goes through the batch; elsewhere -ENOTSUP tells the caller to close
 * inline (also where metadata ops do not exist). */
static int close_batched(struct afs_ctx *ctx, int fd)
{
    if (!afs__sys_meta_supported() || !meta_task(ctx))
        return -ENOTSUP;
    return blocking_meta(ctx, (struct afs__meta_args){.code = AFS__CLOSE, .dirfd = fd});
}

/* afs_open() in a task: the open joins the batch as afs_openat() would. Elsewhere -ENOTSUP
 * tells the caller to open inline (also where metadata ops do not exist). */
static int open_batched(struct afs_ctx *ctx, const char *path, int flags, unsigned perm,
                        afs__fd_t *out, struct afs__fd_info *info)
{
    if (!afs__sys_meta_supported() || !meta_task(ctx))
        return -ENOTSUP;
    int fd = blocking_meta(ctx, (struct afs__meta_args){.code = AFS__OPENAT, .dirfd = AFS_AT_FDCWD,
                                                        .path = path, .flags = flags,
                                                        .perm = perm});
    if (fd < 0)
        return fd;
    /* One fstat of the open fd (no disk), as afs__sys_open makes: what kind of file it is and
     * its size. A directory opens read-only without complaint; afs_open() promises -EISDIR
     * (with any write access the kernel has refused it already). */
    int err = afs__sys_fd_info((afs__fd_t)(intptr_t)fd, info);
    if (err == 0 && info->dir)
        err = -EISDIR;
    if (err < 0) {
        afs__sys_close_fd(fd);
        return err;
    }
    *out = (afs__fd_t)(intptr_t)fd;
    return 0;
}

int afs_openat(struct afs_ctx *ctx, int dirfd, const char *path, int flags, unsigned perm)
{
    afs__ctx_check(ctx, __func__);
    return blocking_meta(ctx, (struct afs__meta_args){.code = AFS__OPENAT, .dirfd = dirfd,
                                                      .path = path, .flags = flags, .perm = perm});
}

int afs_statx(struct afs_ctx *ctx, int dirfd, const char *path, int flags, struct afs_stat *st)
{
    afs__ctx_check(ctx, __func__);
    return blocking_meta(ctx, (struct afs__meta_args){.code = AFS__STATX, .dirfd = dirfd,
                                                      .path = path, .flags = flags, .st = st});
}

int afs_close_fd(struct afs_ctx *ctx, int fd)
{
    afs__ctx_check(ctx, __func__);
    return blocking_meta(ctx, (struct afs__meta_args){.code = AFS__CLOSE, .dirfd = fd});
}

int afs_mkdirat(struct afs_ctx *ctx, int dirfd, const char *path, unsigned perm)
{
    afs__ctx_check(ctx, __func__);
    return blocking_meta(ctx, (struct afs__meta_args){.code = AFS__MKDIRAT, .dirfd = dirfd,
                                                      .path = path, .perm = perm});
}

int afs_renameat(struct afs_ctx *ctx, int olddirfd, const char *oldpath, int newdirfd,
                 const char *newpath, int flags)
{
    afs__ctx_check(ctx, __func__);
    return blocking_meta(ctx, (struct afs__meta_args){.code = AFS__RENAMEAT, .dirfd = olddirfd,
                                                      .path = oldpath, .dirfd2 = newdirfd,
                                                      .path2 = newpath, .flags = flags});
}

int afs_unlinkat(struct afs_ctx *ctx, int dirfd, const char *path, int flags)
{
    afs__ctx_check(ctx, __func__);
    return blocking_meta(ctx, (struct afs__meta_args){.code = AFS__UNLINKAT, .dirfd = dirfd,
                                                      .path = path, .flags = flags});
}

int afs_fsync_fd(struct afs_ctx *ctx, int fd, unsigned flags)
{
    afs__ctx_check(ctx, __func__);
    return blocking_meta(ctx, (struct afs__meta_args){.code = AFS__FSYNC_FD, .dirfd = fd,
                                                      .flags = (int)flags});
}

int afs_fsync_dir(struct afs_ctx *ctx, const char *path)
{
    afs__ctx_check(ctx, __func__);
    if (!path)
        return -EINVAL;
    if (!afs__sys_meta_supported())
        return afs__sys_fsync_dir(path);
    int fd = afs_openat(ctx, AFS_AT_FDCWD, path, AFS_RDONLY | AFS_DIRECTORY, 0);
    if (fd < 0)
        return fd;
    int err = afs_fsync_fd(ctx, fd, 0);
    int cerr = afs_close_fd(ctx, fd);
    return err < 0 ? err : cerr;
}

int afs_file_dio_align(struct afs_file *f, struct afs_dio_align *out)
{
    file_check(f, __func__);
    if (!out)
        return -EINVAL;
    if (f->seq)
        return -ESPIPE;
    return afs__sys_dio_info(f->fd, out);
}

int afs_syncfs(struct afs_ctx *ctx, int fd)
{
    afs__ctx_check(ctx, __func__);
    return blocking_meta(ctx, (struct afs__meta_args){.code = AFS__SYNCFS, .dirfd = fd});
}

int afs_file_from_fd(struct afs_ctx *ctx, int fd, int flags, enum afs_mode mode,
                     struct afs_file **out)
{
    afs__ctx_check(ctx, __func__);
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (afs__open_flags_bad(flags, AFS__OPEN_FLAGS | AFS_NONBLOCK))
        return -EINVAL;
    if (mode != AFS_MODE_SYNC && mode != AFS_MODE_ASYNC)
        return -EINVAL;
    if (!afs__sys_meta_supported())
        return -ENOTSUP;
    if (fd < 0)
        return -EBADF;
    int err = ctx->crash ? afs__crash_gate(ctx) : 0;
    if (err < 0)
        return err;
    struct afs__fd_info info;
    if ((err = afs__sys_fd_info((afs__fd_t)(intptr_t)fd, &info)) < 0)
        return err;
    info.own = (flags & AFS_NONBLOCK) != 0; /* a pipe or FIFO may be made non-blocking */
    /* The descriptor is made blocking, unless it is a pipe or FIFO the readiness engine
     * will wait on (afs__file_attach makes it non-blocking): its description may be another
     * file's too, whose reads, tried without waiting, would block in the moment between. */
    if (!(info.fifo && info.own && afs__sock_ready(ctx)) && (err = afs__sys_fd_adopt(fd)) < 0)
        return err;
    struct afs_file *f = afs__zalloc(sizeof *f);
    if (!f)
        return -ENOMEM;
    f->fd = (afs__fd_t)(intptr_t)fd;
    if ((err = afs__file_attach(ctx, f, flags & ~AFS_NONBLOCK, mode, &info)) < 0) {
        free(f); /* the fd stays the caller's */
        return err;
    }
    if (ctx->crash && (err = afs__crash_attach(ctx, f, NULL, false)) < 0) {
        afs_list_remove(&ctx->files, &f->node);
        free(f); /* the fd stays the caller's */
        return err;
    }
    *out = f;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * The position API
 * ---------------------------------------------------------------------------------------- */

/* The position after a successful transfer of `res` bytes. With AFS_APPEND the data went to
 * the end of the file, whatever the position said. */
static void pos_advance(struct afs_file *f, bool write, ssize_t res)
{
    if (res <= 0)
        return;
    if (write && (f->flags & AFS_APPEND) && !f->seq) {
        int64_t size = afs__sys_size(f->fd);
        if (size >= 0) {
            f->pos = size;
            return;
        }
    }
    f->pos += res;
}

static void pos_cb(struct afs_op *op)
{
    struct afs_file *f = op->data;
    f->last_res = op->result;
    pos_advance(f, afs__op(op)->code == AFS__WRITE, op->result);
    afs__op_wait_done(&f->pos_wait, op);
}

/* A small read or write of a pipe or FIFO in a task, tried first on this thread without
 * waiting for the other end (preadv2 / pwritev2 with RWF_NOWAIT at the descriptor's
 * position): what the pipe holds or takes at once moves as a plain read(2) or write(2)
 * would move it, without the trip through the batch (on io_uring, a pipe's write op goes to
 * the kernel's workers for SIGPIPE's sake). Returns the bytes moved (0 <= n <= len) with
 * *over set when the call is over (all of it moved, the end of the pipe, an error: then the
 * error, -EPIPE...), or 0 with *over clear when an op must move the rest. Not tried for
 * sockets (afs_send and afs_recv have their own way), ttys and other devices that cannot
 * tell (no_nowait), a cancelled task (its call fails as an op would), crash mode. */
static ssize_t seq_nowait(struct afs_file *f, bool write, void *buf, size_t len, bool *over)
{
    *over = false;
    bool have = write ? afs__sys.pwrite_nowait != NULL : afs__sys.pread_nowait != NULL;
    if (!have || !f->seq || f->sock || f->no_nowait || f->ctx->crash || !buf || len == 0 ||
        len > f->ctx->cfg.sync_threshold || !meta_task(f->ctx) || co_stopped(f->ctx))
        return 0;
    ssize_t r = write ? afs__sys.pwrite_nowait(f->fd, buf, len, AFS__OFF_SEQ)
                      : afs__sys.pread_nowait(f->fd, buf, len, AFS__OFF_SEQ);
    if (r == -EAGAIN || r == -EINTR)
        return 0;
    if (r == -EOPNOTSUPP) {
        f->no_nowait = true;
        return 0;
    }
    f->ctx->stats.inline_ops++;
    *over = r < 0 || r == (ssize_t)len || (!write && r == 0);
    return r;
}

static ssize_t pos_io(struct afs_file *f, bool write, void *buf, size_t len)
{
    file_check(f, write ? "afs_write" : "afs_read");
    if (f->pos_wait.pending)
        return -EBUSY;
    /* A file without offsets reads and writes at its descriptor's position instead. */
    uint64_t off = f->seq ? AFS__OFF_SEQ : (uint64_t)f->pos;
    if (f->mode == AFS_MODE_SYNC) {
        ssize_t res;
        bool inline_ok = small(f, len), over;
        ssize_t moved = seq_nowait(f, write, buf, len, &over);
        if (over)
            res = moved;
        else if (write || !read_small(f, buf, len, off, &res, &inline_ok)) {
            res = blocking_op(f,
                              &(struct afs__op_args){.code = write ? AFS__WRITE : AFS__READ,
                                                    .buf = (char *)buf + moved,
                                                    .len = len - (size_t)moved, .off = off},
                              inline_ok);
            /* The op's error after bytes moved: the bytes, as a short read(2) gives them. */
            if (moved > 0)
                res = res < 0 ? moved : moved + res;
        }
        if (res == -EINVAL || res == -EBADF || res == -EBUSY) {
            /* Refused before anything ran: not an op, so not "the last op" either. */
            return res;
        }
        f->last_res = res;
        pos_advance(f, write, res);
        return res;
    }
    int err = f->seq ? afs__queue_seq(&f->pos_op, f, write, buf, len, false, pos_cb, f)
              : write ? afs_queue_write(&f->pos_op, f, buf, len, off, pos_cb, f)
                      : afs_queue_read(&f->pos_op, f, buf, len, off, pos_cb, f);
    if (err < 0)
        return err;
    f->pos_wait.pending = true;
    err = afs_ctx_submit(f->ctx);
    /* A failed submit leaves the op queued; it goes at the next wait. Not the caller's
     * problem unless it persists, and then the op itself reports it. */
    (void)err;
    return 0;
}

ssize_t afs_read(struct afs_file *f, void *buf, size_t len)
{
    return pos_io(f, false, buf, len);
}

ssize_t afs_write(struct afs_file *f, const void *buf, size_t len)
{
    return pos_io(f, true, (void *)buf, len);
}

int64_t afs_seek(struct afs_file *f, int64_t off, int whence)
{
    file_check(f, __func__);
    if (f->pos_wait.pending)
        return -EBUSY;
    if (f->seq)
        return -ESPIPE;
    int64_t base;
    switch (whence) {
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = f->pos; break;
    case SEEK_END:
        base = afs__sys_size(f->fd);
        if (base < 0)
            return base;
        break;
    default: return -EINVAL;
    }
    if ((off > 0 && base > INT64_MAX - off) || base + off < 0)
        return -EINVAL;
    f->pos = base + off;
    return f->pos;
}

int64_t afs_tell(struct afs_file *f)
{
    file_check(f, __func__);
    if (f->pos_wait.pending)
        return -EBUSY;
    return f->pos;
}

int afs_last_op(struct afs_file *f, ssize_t *res)
{
    file_check(f, __func__);
    if (f->pos_wait.pending && !f->ctx->in_callback)
        afs_ctx_wait(f->ctx, 0, 0);
    if (f->pos_wait.pending)
        return 0;
    if (res)
        *res = f->last_res;
    return 1;
}

int afs_last_op_wait(struct afs_file *f, ssize_t *res)
{
    file_check(f, __func__);
    /* A task's deadline or cancellation cancels the op: done all the same, its result says
     * so (-ECANCELED). */
    if (afs__op_wait(f->ctx, &f->pos_op, &f->pos_wait) == -EDEADLK)
        return -EDEADLK;
    if (res)
        *res = f->last_res;
    return 1;
}
