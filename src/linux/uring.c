/* The io_uring backend (liburing). First choice on Linux.
 *
 * Every op staged in a phase goes to the kernel with the next io_uring_enter, which also
 * waits for completions (one system call per submit-and-wait). The ring is sized to a full
 * batch (queue_depth SQEs) and the CQ to twice that; the kernel keeps overflowed CQEs
 * (IORING_FEAT_NODROP) and liburing flushes them when we peek. The context's eventfd has a
 * read always armed in the ring, so the thread pool and afs_ctx_wake() can end a wait. */
#include "internal.h"
#include "uring_ms.h"
#include "uring_reg.h"

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#ifndef RWF_DSYNC
#define RWF_DSYNC 0x00000002 /* Linux 4.7; older C library headers lack it */
#endif

/* user_data values that are not ops (ops are at least 8-byte aligned pointers). */
#define TAG_IGNORE 1u /* cancel requests: their own result does not matter */
#define TAG_WAKER  2u /* the eventfd read */
#define TAG_MSG    3u /* a wake-up from another ring (afs__uring_msg) */
#define TAG_READY  4u /* the poll of the readiness engine's epoll fd */
#define TAG_CANCEL_FD 5u /* a socket's cancel-everything (fd << 8 | 5), see uring_cancel_file */

struct uring {
    struct io_uring ring;
    uint64_t        waker_buf;
    bool            waker_armed;
    bool            has_read, has_write, has_cancel; /* probed once */
    bool            has_sock;    /* CONNECT, ACCEPT, RECV, SEND, SHUTDOWN (Linux 5.11) */
    bool            ready_armed; /* a POLL_ADD on the readiness engine's fd is in the ring */
    bool            meta_probed; /* the metadata opcodes, probed on first use */
    uint16_t        meta_ops;    /* bit (code - AFS__OPENAT) set: the kernel has the opcode */
    bool            stor_probed; /* the storage opcodes, probed on first use */
    uint8_t         stor_ops;    /* bit (code - AFS__FALLOCATE) set: the kernel has it */
    bool            cur_pos;     /* offset -1 reads and writes at the file's position (5.6):
                                    how pipes and sockets are read */
    bool            has_msg;     /* IORING_OP_MSG_RING (5.18) */
    bool            has_splice;  /* IORING_OP_SPLICE (5.7): afs_queue_sendfile */
    struct upipe   *pipes;       /* sendfile's pipes not in use, for the next op */
    unsigned        npipes, pipes_cap;
    unsigned        pipes_held;  /* pipes the sendfile ops hold now */
    unsigned        pipes_peak;  /* the most they held at once since the window began */
    int64_t         pipes_until; /* the window's end: then the spares are trimmed */
    struct afs_list splicing;    /* sendfile ops holding a pipe, or reading and sending
                                    (their SPLICE_NODE) */
    unsigned        direct_staged; /* direct reads/writes among the SQEs not yet submitted */
    struct afs__ureg reg;          /* registrations, io-wq cap, offload rule: uring_reg.c */
    struct afs__ums  ums;          /* multishot accepts and receives: uring_ms.c */
};

/* The ring's statx result lives in the op until reaped; then meta_done converts it. */
_Static_assert(sizeof(struct statx) <= sizeof(((struct afs__op *)0)->be),
               "struct statx must fit in the op's backend words");

static struct uring *U(struct afs_ctx *ctx)
{
    return ctx->be_state;
}

/* afs_queue_sendfile: each piece is a splice of the source file -> a pipe, staged alone;
 * at its completion the pipe -> socket splice is made on this thread without waiting
 * (splice_out), and a piece the socket refused or did not take whole waits for room (a
 * poll) before the next try. A pipe serves one op at a time (the bytes of two ops would mix
 * in it); the op holds it from its first piece to its completion (sendfile_end, however
 * the op ended), then gives it back to the context's free list, or closes it when bytes were
 * left in it (an error, a cancel).
 * A source the splices refuse (known from the start: see sendfile_by_rw; else a file
 * splice's -EINVAL, from that round on: see splice_cqe) is read and sent instead, in rounds
 * of the same shape: a read of the source into the op's buffer linked to a send from it
 * (src/unix/sock.c's pieces), or a send alone of what the buffer still holds; no pipe. A
 * read and send round's two completions may come in either order: the round is judged once
 * both came. */
struct upipe {
    int      rfd, wfd;
    uint32_t cap; /* bytes it holds at most (F_GETPIPE_SZ) */
};

struct usplice {
    int      rfd, wfd;
    uint32_t cap;
    uint32_t inpipe;  /* bytes spliced into the pipe and not yet out of it */
    int32_t  r1, r2;  /* this round's results: the file splice's (or the read's); the poll's
                         for room (or the send's) */
    uint8_t  held;    /* the op holds a pipe */
    uint8_t  pending; /* completions of this round still to come */
    uint8_t  fill;    /* this round has a file -> pipe splice (read and send: a read) */
    uint8_t  rw;      /* read and send, no splices: held then says the op is on `splicing` */
};
/* The core zeroes four words of a sendfile op at setup. While the op holds a pipe (or reads
 * and sends) it is on the ring's `splicing` list by a node in the next two words, so that a
 * socket being closed can cancel its sendfiles (a splice blocked on a peer that reads
 * nothing ends only so). */
_Static_assert(sizeof(struct usplice) <= 4 * sizeof(uint64_t), "usplice must fit in 4 words");
#define SPLICE_NODE(op) ((struct afs_list_node *)(void *)(afs__op(op)->be + 4))
_Static_assert(4 * sizeof(uint64_t) + sizeof(struct afs_list_node) <=
                   sizeof(((struct afs__op *)0)->be),
               "the splicing node must fit in the backend words");

/* user_data of a round's file -> pipe splice: the op's address with its low bit set (ops are
 * 8-byte aligned, so it never looks like a TAG_*). */
#define SPLICE_FILL_BIT 1u

static unsigned pow2_at_least(unsigned v)
{
    unsigned p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

static const char *setup_hint(int err)
{
    static _Thread_local char hint[96];
    switch (-err) {
    case EPERM: {
        /* kernel.io_uring_disabled: 1 = only CAP_SYS_ADMIN or io_uring_group, 2 = nobody. */
        FILE *fp = fopen("/proc/sys/kernel/io_uring_disabled", "r");
        int v = 0;
        if (fp) {
            if (fscanf(fp, "%d", &v) != 1)
                v = 0;
            fclose(fp);
        }
        if (v)
            snprintf(hint, sizeof hint, "kernel.io_uring_disabled=%d", v);
        else
            snprintf(hint, sizeof hint, "blocked by seccomp? containers' default profile does");
        return hint;
    }
    case ENOSYS: return "kernel without io_uring (before Linux 5.1, or CONFIG_IO_URING=n)";
    case ENOMEM: return "locked-memory limit too low for the ring (ulimit -l)";
    case EINVAL: return "kernel too old for the ring parameters";
    default: return NULL;
    }
}

/* The two kernel entry points go through afs__sys, so tests can make them fail. */
static int ring_setup(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
    if (afs__sys.uring_setup)
        return afs__sys.uring_setup(entries, ring, p);
    return io_uring_queue_init_params(entries, ring, p);
}

int afs__uring_enter_real(struct io_uring *ring, unsigned wait_nr, struct __kernel_timespec *ts)
{
    if (wait_nr == 0)
        return io_uring_submit(ring);
    if (!ts)
        return io_uring_submit_and_wait(ring, wait_nr);
    struct io_uring_cqe *cqe;
    return io_uring_submit_and_wait_timeout(ring, &cqe, wait_nr, ts, NULL);
}

/* Every enter goes through the offload rule (uring_reg.c), which sees the direct ops
 * staged since the last one. */
static int ring_enter(struct afs_ctx *ctx, unsigned wait_nr, struct __kernel_timespec *ts)
{
    struct uring *u = U(ctx);
    unsigned direct = u->direct_staged;
    u->direct_staged = 0;
    return afs__ureg_submit(&u->reg, ctx, &u->ring, direct, wait_nr, ts);
}

static int uring_init(struct afs_ctx *ctx, char *why, size_t why_len)
{
    struct uring *u = afs__sys.calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    unsigned entries = pow2_at_least(AFS_MIN(ctx->cfg.queue_depth, 4096u));
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    /* SUBMIT_ALL (5.18): a bad SQE does not stop the rest of the batch.
     * COOP_TASKRUN (5.19): no IPI to the submitting thread for each completion. */
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
    p.cq_entries = entries * 2;
    int err = -EINVAL;
    struct afs__ring_hint hint = afs__ring_hint;
    afs__ring_hint = (struct afs__ring_hint){.attach_fd = -1};
    if (hint.single_issuer || hint.attach_fd >= 0) {
        /* A runtime's ring (afs__ring_hint): only this thread submits and reaps, so the
         * kernel runs completion work when it waits, not at each completion (SINGLE_ISSUER
         * 6.0, DEFER_TASKRUN 6.1; TASKRUN_FLAG tells liburing when to collect it); the
         * rings share the first one's I/O workers (ATTACH_WQ). Older kernels: without. */
        struct io_uring_params hp = p;
        if (hint.single_issuer)
            hp.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                        IORING_SETUP_TASKRUN_FLAG;
        if (hint.attach_fd >= 0) {
            hp.flags |= IORING_SETUP_ATTACH_WQ;
            hp.wq_fd = (unsigned)hint.attach_fd;
        }
        err = ring_setup(entries, &u->ring, &hp);
        if (err == 0)
            p = hp;
    }
    if (err == -EINVAL)
        err = ring_setup(entries, &u->ring, &p);
    if (err == -EINVAL) {
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = entries * 2;
        err = ring_setup(entries, &u->ring, &p);
    }
    if (err < 0) {
        afs__why(why, why_len, "io_uring_setup", err, setup_hint(err));
        free(u);
        return err;
    }
    if (!(p.features & IORING_FEAT_NODROP)) {
        /* Before 5.5 an overflowing CQ drops completions: unacceptable. */
        io_uring_queue_exit(&u->ring);
        free(u);
        afs__why(why, why_len, "io_uring_setup", -ENOTSUP,
                 "kernel lacks IORING_FEAT_NODROP (Linux 5.5)");
        return -ENOTSUP;
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&u->ring);
    if (probe) {
        u->has_read = io_uring_opcode_supported(probe, IORING_OP_READ);
        u->has_write = io_uring_opcode_supported(probe, IORING_OP_WRITE);
        u->has_cancel = io_uring_opcode_supported(probe, IORING_OP_ASYNC_CANCEL);
        u->has_msg = io_uring_opcode_supported(probe, IORING_OP_MSG_RING);
        u->has_splice = io_uring_opcode_supported(probe, IORING_OP_SPLICE);
        u->has_sock = io_uring_opcode_supported(probe, IORING_OP_CONNECT) &&
                      io_uring_opcode_supported(probe, IORING_OP_ACCEPT) &&
                      io_uring_opcode_supported(probe, IORING_OP_RECV) &&
                      io_uring_opcode_supported(probe, IORING_OP_SEND) &&
                      io_uring_opcode_supported(probe, IORING_OP_SHUTDOWN) &&
                      !afs__uring_no_sock;
        io_uring_free_probe(probe);
    }
    u->cur_pos = p.features & IORING_FEAT_RW_CUR_POS;
    afs__ureg_init(&u->reg, &u->ring, ctx);
    afs__ums_init(&u->ums, ctx);
    ctx->be_state = u;
    return 0;
}

static void uring_fini(struct afs_ctx *ctx)
{
    struct uring *u = U(ctx);
    for (unsigned i = 0; i < u->npipes; i++) {
        close(u->pipes[i].rfd);
        close(u->pipes[i].wfd);
    }
    free(u->pipes);
    afs__ums_fini(&u->ums, &u->ring);
    io_uring_queue_exit(&u->ring);
    afs__ureg_fini(&u->reg);
    free(u);
    ctx->be_state = NULL;
}

static void splice_cqe(struct afs_ctx *ctx, struct afs_op *op, int res, bool fill);
static void uring_cancel(struct afs_ctx *ctx, struct afs_op *op);

/* Reports every CQE there is. */
static void reap(struct afs_ctx *ctx)
{
    struct uring *u = U(ctx);
    struct io_uring_cqe *cqes[64];
    unsigned n;
    while ((n = io_uring_peek_batch_cqe(&u->ring, cqes, 64)) > 0) {
        for (unsigned i = 0; i < n; i++) {
            uint64_t ud = cqes[i]->user_data;
            int res = cqes[i]->res;
            unsigned fl = cqes[i]->flags;
            if (ud == TAG_WAKER) {
                u->waker_armed = false;
                /* The read consumed the count; new signals must write again. */
                __atomic_store_n(&ctx->waker.armed, 0, __ATOMIC_RELEASE);
            } else if (ud == TAG_READY) {
                u->ready_armed = false; /* the core runs the engine after this enter */
            } else if ((ud & 0xff) == TAG_CANCEL_FD) {
                /* Cancelling by fd is Linux 5.19: before, shutting the socket down ends
                 * its receives (end of stream) and sends (EPIPE) all the same. */
                if (res == -EINVAL)
                    shutdown((int)(ud >> 8), SHUT_RDWR);
            } else if (ud == LIBURING_UDATA_TIMEOUT) {
                /* liburing's own */
            } else if ((ud & 7) >= AFS__UMS_TAG_RECV) {
                afs__ums_cqe(ctx, &u->ums, ud, res, fl);
            } else if (ud > TAG_MSG) {
                struct afs_op *op = (struct afs_op *)(uintptr_t)(ud & ~(uint64_t)7);
                if (afs__op(op)->code == AFS__SENDFILE) {
                    splice_cqe(ctx, op, res, ud & SPLICE_FILL_BIT);
                    continue;
                }
                /* sock first: be[0] is written only for the ops of sockets */
                if (afs__op(op)->file->sock && afs__op(op)->be[0] == AFS__UMS_PLAIN)
                    afs__ums_plain_done(&u->ums, op);
                struct afs__op *o = afs__op(op);
                if (res == -ECANCELED && !(o->flags & (AFS__OP_CANCEL | AFS__OP_CHAINED)) &&
                    !o->file->seq && !o->file->sock) {
                    /* Cancelled unasked: the kernel could not start an io-wq worker for it
                     * (the process may make no more threads, or a signal cut the start
                     * short). The retry goes to the pool, which runs it on this thread
                     * when it cannot start one either. A chain's members cancelled after
                     * one failed are results. */
                    o->flags |= AFS__OP_POOL;
                    res = -EAGAIN;
                }
                afs__op_transferred(ctx, op, res);
            }
        }
        io_uring_cq_advance(&u->ring, n);
    }
    afs__ums_serve(ctx, &u->ums); /* ops parked on what the multishots delivered */
}

/* Hands the SQ to the kernel and retries what is transient: a full CQ makes the kernel
 * refuse new work with -EBUSY (pre-NODROP semantics kept for overflow), so reap and retry. */
static int flush(struct afs_ctx *ctx)
{
    for (;;) {
        int r = ring_enter(ctx, 0, NULL);
        if (r >= 0)
            return r;
        if (r == -EINTR || r == -EAGAIN)
            continue;
        if (r == -EBUSY) {
            reap(ctx);
            continue;
        }
        return r;
    }
}

static struct io_uring_sqe *get_sqe(struct afs_ctx *ctx)
{
    struct uring *u = U(ctx);
    struct io_uring_sqe *sqe;
    while (!(sqe = io_uring_get_sqe(&u->ring))) {
        /* SQ full: flush it and go on; the caller never sees it. */
        ctx->stats.kernel_submits++;
        int err = flush(ctx);
        if (err < 0)
            return NULL;
    }
    return sqe;
}

/* The io_uring opcode of a metadata op; IORING_OP_LAST where there is none (syncfs). */
static int meta_opcode(uint8_t code)
{
    switch (code) {
    case AFS__OPENAT: return IORING_OP_OPENAT;     /* Linux 5.6 */
    case AFS__STATX: return IORING_OP_STATX;       /* 5.6 */
    case AFS__CLOSE: return IORING_OP_CLOSE;       /* 5.6 */
    case AFS__RENAMEAT: return IORING_OP_RENAMEAT; /* 5.11 */
    case AFS__UNLINKAT: return IORING_OP_UNLINKAT; /* 5.11 */
    case AFS__MKDIRAT: return IORING_OP_MKDIRAT;   /* 5.15 */
    case AFS__FSYNC_FD: return IORING_OP_FSYNC;    /* 5.1 */
    default: return IORING_OP_LAST;
    }
}

/* Whether the ring runs this metadata op; the rest goes to the thread pool. Probed here, not
 * at setup, so that contexts that never use metadata ops pay nothing for it. */
static bool meta_supported(struct uring *u, uint8_t code)
{
    if (!u->meta_probed) {
        u->meta_probed = true;
        struct io_uring_probe *probe = io_uring_get_probe_ring(&u->ring);
        if (probe) {
            for (uint8_t c = AFS__OPENAT; c <= AFS__FSYNC_FD; c++) {
                int opc = meta_opcode(c);
                if (opc != IORING_OP_LAST && io_uring_opcode_supported(probe, opc))
                    u->meta_ops |= (uint16_t)(1u << (c - AFS__OPENAT));
            }
            io_uring_free_probe(probe);
        }
    }
    return u->meta_ops & (1u << (code - AFS__OPENAT));
}

/* IORING_OP_FTRUNCATE is Linux 6.9; liburing's headers before 2.6 lack it (an enum, so no
 * #ifdef can tell): its number, which the kernel's ABI fixes. Used only when probed. */
#define URING_OP_FTRUNCATE 55

/* The io_uring opcode of a storage op. */
static int stor_opcode(uint8_t code)
{
    switch (code) {
    case AFS__FALLOCATE: return IORING_OP_FALLOCATE;         /* Linux 5.6 */
    case AFS__FTRUNCATE: return URING_OP_FTRUNCATE;          /* 6.9 */
    case AFS__FADVISE: return IORING_OP_FADVISE;             /* 5.6 */
    default: return IORING_OP_SYNC_FILE_RANGE;               /* 5.2 */
    }
}

/* Whether the ring runs this storage op (probed on first use, as the metadata opcodes). */
static bool stor_supported(struct uring *u, const struct afs__op *o)
{
    if (!u->stor_probed) {
        u->stor_probed = true;
        struct io_uring_probe *probe = io_uring_get_probe_ring(&u->ring);
        if (probe) {
            for (uint8_t c = AFS__FALLOCATE; c <= AFS__SYNC_RANGE; c++)
                if (io_uring_opcode_supported(probe, stor_opcode(c)))
                    u->stor_ops |= (uint8_t)(1u << (c - AFS__FALLOCATE));
            io_uring_free_probe(probe);
        }
    }
    /* fadvise and sync_file_range take a 32-bit length in the SQE. */
    if ((o->code == AFS__FADVISE || o->code == AFS__SYNC_RANGE) && o->total > UINT32_MAX)
        return false;
    return u->stor_ops & (1u << (o->code - AFS__FALLOCATE));
}

static void prep_stor(struct io_uring_sqe *sqe, int fd, const struct afs__op *o)
{
    static const int adv[] = {POSIX_FADV_NORMAL, POSIX_FADV_SEQUENTIAL, POSIX_FADV_RANDOM,
                              POSIX_FADV_NOREUSE, POSIX_FADV_WILLNEED, POSIX_FADV_DONTNEED};
    switch (o->code) {
    case AFS__FALLOCATE: {
        int mode = 0;
        if (o->arg & (AFS_FALLOC_KEEP_SIZE | AFS_FALLOC_PUNCH_HOLE))
            mode |= FALLOC_FL_KEEP_SIZE;
        if (o->arg & AFS_FALLOC_PUNCH_HOLE)
            mode |= FALLOC_FL_PUNCH_HOLE;
        if (o->arg & AFS_FALLOC_ZERO_RANGE)
            mode |= FALLOC_FL_ZERO_RANGE;
        io_uring_prep_fallocate(sqe, fd, mode, (off_t)o->off, (off_t)o->total);
        break;
    }
    case AFS__FTRUNCATE:
        io_uring_prep_rw(URING_OP_FTRUNCATE, sqe, fd, NULL, 0, o->off);
        break;
    case AFS__FADVISE:
        io_uring_prep_fadvise(sqe, fd, o->off, (off_t)o->total, adv[o->arg]);
        break;
    default: {
        unsigned fl = 0;
        if (o->arg & AFS_SYNC_RANGE_WAIT_BEFORE)
            fl |= SYNC_FILE_RANGE_WAIT_BEFORE;
        if (o->arg & AFS_SYNC_RANGE_WRITE)
            fl |= SYNC_FILE_RANGE_WRITE;
        if (o->arg & AFS_SYNC_RANGE_WAIT_AFTER)
            fl |= SYNC_FILE_RANGE_WAIT_AFTER;
        io_uring_prep_sync_file_range(sqe, fd, (unsigned)o->total, o->off, (int)fl);
        break;
    }
    }
}

/* Whether a sendfile reads and sends from the start: no splice opcode, or a source the
 * kernel refuses to splice from there (a direct I/O file from an offset or for a length not
 * aligned to it). */
static bool sendfile_by_rw(const struct uring *u, const struct afs__op *o)
{
    unsigned a = o->sock.src->dio_align;
    return !u->has_splice || (a && (o->off % a || o->total % a));
}

static bool uring_accepts(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    if (o->code == AFS__SENDFILE) {
        /* Read and send needs IORING_OP_READ (5.6; the socket opcodes, 5.11, come with
         * it): else a pool thread's blocking sendfile(2). */
        return !sendfile_by_rw(U(ctx), o) || U(ctx)->has_read;
    }
    if (afs__is_sock(o) || (o->file->sock && !afs__is_ctl(o)))
        return true; /* only when uring_sock() said yes: the core sends them here */
    if (o->file->seq && o->code != AFS__FSYNC)
        return U(ctx)->cur_pos; /* its span's offset is AFS__OFF_SEQ, i.e. -1 */
    if (o->code > AFS__FSYNC && o->code <= AFS__SYNC_RANGE)
        return stor_supported(U(ctx), o);
    return !afs__is_meta(o) || meta_supported(U(ctx), o->code);
}

static void prep_meta(struct io_uring_sqe *sqe, struct afs__op *o)
{
    const struct afs__meta *m = &o->meta;
    const char *path = o->u.buf;
    int dfd = afs__sys_dirfd(m->dirfd);
    switch (o->code) {
    case AFS__OPENAT:
        io_uring_prep_openat(sqe, dfd, path, afs__sys_open_flags(m->flags), m->perm);
        break;
    case AFS__STATX:
        io_uring_prep_statx(sqe, dfd, path, afs__sys_at_flags(m->flags), STATX_BASIC_STATS,
                            (struct statx *)(void *)o->be);
        break;
    case AFS__CLOSE: io_uring_prep_close(sqe, m->dirfd); break;
    case AFS__MKDIRAT: io_uring_prep_mkdirat(sqe, dfd, path, m->perm); break;
    case AFS__RENAMEAT:
        io_uring_prep_renameat(sqe, dfd, path, afs__sys_dirfd(m->dirfd2), m->path2,
                               (m->flags & AFS_RENAME_NOREPLACE) ? RENAME_NOREPLACE : 0);
        break;
    case AFS__UNLINKAT:
        io_uring_prep_unlinkat(sqe, dfd, path, afs__sys_at_flags(m->flags));
        break;
    case AFS__FSYNC_FD:
        io_uring_prep_fsync(sqe, m->dirfd,
                            (m->flags & AFS_FSYNC_DATA) ? IORING_FSYNC_DATASYNC : 0);
        break;
    }
}

static void uring_meta_done(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    if (o->code == AFS__STATX)
        afs__sys_from_statx(o->be, o->meta.st);
}

struct io_uring_sqe *afs__uring_sqe(struct afs_ctx *ctx)
{
    return get_sqe(ctx);
}

/* A socket op, or a read or write of a socket: RECV and SEND (a write with MSG_NOSIGNAL,
 * never a SIGPIPE). */
static void prep_sock(struct io_uring_sqe *sqe, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    int fd = o->file->fd;
    struct afs__span s;
    switch (o->code) {
    case AFS__CONNECT:
        io_uring_prep_connect(sqe, fd, o->u.buf, (socklen_t)o->len);
        break;
    case AFS__ACCEPT:
        io_uring_prep_accept(sqe, fd, o->u.buf, o->sock.addrlen, o->sock.how);
        break;
    case AFS__SHUTDOWN:
        io_uring_prep_shutdown(sqe, fd, o->sock.how);
        break;
    case AFS__RECV:
    case AFS__READ:
        afs__op_span(op, &s);
        io_uring_prep_recv(sqe, fd, s.buf, s.len, o->code == AFS__RECV ? o->sock.msg_flags : 0);
        break;
    default: /* AFS__SEND, AFS__WRITE */
        afs__op_span(op, &s);
        io_uring_prep_send(sqe, fd, s.buf, s.len,
                           o->code == AFS__SEND ? o->sock.msg_flags
                                                : afs__sys_msg_flags(true, 0));
        break;
    }
}

/* ------------------------------------------------------------------------------------------
 * sendfile: splices through a pipe (see struct usplice)
 * ---------------------------------------------------------------------------------------- */

#define PIPE_WANT (1u << 20) /* F_SETPIPE_SZ: a 1 MiB file in one round */
#define PIPES_KEPT 256u
/* Spare pipes are kept for as many ops as held pipes at once within the last window; the
 * rest are closed when a window ends (pipes_trim), so a burst of connections does not leave
 * its pipes (two descriptors and up to 1 MiB of kernel memory each) open for ever. */
#define PIPES_WINDOW_NS 1000000000

static struct usplice *SP(struct afs_op *op)
{
    return (struct usplice *)(void *)afs__op(op)->be;
}

/* Gives op a pipe: a kept one, or a new one as large as the system lets it be. */
static int pipe_get(struct uring *u, struct afs_op *op)
{
    struct usplice *sp = SP(op);
    if (u->npipes) {
        struct upipe p = u->pipes[--u->npipes];
        sp->rfd = p.rfd;
        sp->wfd = p.wfd;
        sp->cap = p.cap;
    } else {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) < 0)
            return -errno;
        /* An unprivileged process may be refused a large pipe (fs.pipe-max-size, or its
         * pipe-user-pages-soft share used up): a smaller one, or the default 64 KiB. */
        for (unsigned want = PIPE_WANT; want >= 128u * 1024; want /= 4)
            if (fcntl(fds[1], F_SETPIPE_SZ, (int)want) >= 0)
                break;
        int cap = fcntl(fds[1], F_GETPIPE_SZ);
        sp->rfd = fds[0];
        sp->wfd = fds[1];
        sp->cap = cap > 0 ? (uint32_t)cap : 65536u;
    }
    sp->held = 1;
    sp->inpipe = 0;
    afs_list_push_back(&u->splicing, SPLICE_NODE(op));
    if (++u->pipes_held > u->pipes_peak)
        u->pipes_peak = u->pipes_held;
    return 0;
}

/* Takes op's pipe back: kept when empty, closed when bytes were left in it. */
static void pipe_put(struct uring *u, struct afs_op *op)
{
    struct usplice *sp = SP(op);
    if (!sp->held)
        return;
    sp->held = 0;
    afs_list_remove(&u->splicing, SPLICE_NODE(op));
    u->pipes_held--;
    if (sp->inpipe == 0 && u->npipes < PIPES_KEPT) {
        if (u->npipes == u->pipes_cap) {
            unsigned cap = u->pipes_cap ? u->pipes_cap * 2 : 8;
            struct upipe *p = realloc(u->pipes, cap * sizeof *p);
            if (p) {
                u->pipes = p;
                u->pipes_cap = cap;
            }
        }
        if (u->npipes < u->pipes_cap) {
            u->pipes[u->npipes++] = (struct upipe){sp->rfd, sp->wfd, sp->cap};
            return;
        }
    }
    close(sp->rfd);
    close(sp->wfd);
    sp->inpipe = 0;
}

/* Once a window has ended: closes the spare pipes beyond those that ops held at once in it
 * and are not holding now, and starts the next window. Called as the context enters the
 * kernel, its ops set up (no pipe_get() on the way): a burst's pipes are gone within two
 * windows after it, and kept while bursts of the same size come at least once a window. */
static void pipes_trim(struct uring *u)
{
    if (!afs__now_reached(u->pipes_until))
        return;
    unsigned keep = u->pipes_peak - u->pipes_held; /* the peak counts those held now */
    while (u->npipes > keep) {
        struct upipe *p = &u->pipes[--u->npipes];
        close(p->rfd);
        close(p->wfd);
    }
    u->pipes_peak = u->pipes_held;
    u->pipes_until = afs__now_ns() + PIPES_WINDOW_NS;
}

/* Stages op's next round: the file -> pipe splice alone (its completion tries the socket at
 * once: splice_cqe), or, when the pipe still holds bytes the socket refused or took only in
 * part, a poll for the socket's room. */
static int prep_splice(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    struct usplice *sp = SP(op);
    if (!sp->held) {
        int err = pipe_get(U(ctx), op);
        if (err < 0)
            return err;
    }
    struct io_uring_sqe *sqe = get_sqe(ctx);
    if (!sqe)
        return -EIO;
    sp->r1 = sp->r2 = 0;
    sp->pending = 1;
    if (sp->inpipe == 0) {
        sp->fill = 1;
        io_uring_prep_splice(sqe, (int)o->sock.src->fd, (int64_t)(o->off + o->done), sp->wfd,
                             -1, (unsigned)AFS_MIN(o->total - o->done, (size_t)sp->cap), 0);
        io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)op | SPLICE_FILL_BIT);
        return 0;
    }
    /* The pipe -> socket half waits for room in the ring, then runs here, without waiting
     * (splice_out): a splice to a socket always runs in an io-wq worker, which it holds
     * until the whole piece is in the socket, so that a server's slow peers held as many
     * workers as they were, switching among them. */
    sp->fill = 0;
    io_uring_prep_poll_add(sqe, (int)o->file->fd, POLLOUT);
    io_uring_sqe_set_data(sqe, op);
    return 0;
}

/* The pipe -> socket half of op's round, once the socket had room (poll_res: the poll's
 * mask, or its error; POLLOUT for a try without a poll): the bytes moved, -EAGAIN when the room went meanwhile (the next
 * round waits again), or an error (the peer's: -EPIPE, -ECONNRESET). */
static int splice_out(struct afs_op *op, int poll_res)
{
    struct afs__op *o = afs__op(op);
    struct usplice *sp = SP(op);
    if (poll_res <= 0)
        return poll_res < 0 ? poll_res : -EAGAIN;
    bool more = o->total - o->done > sp->inpipe;
    ssize_t n = afs__sys_splice_to_sock(sp->rfd, (int)o->file->fd, sp->inpipe, more);
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

/* Stages op's next round by read and send: a read of the source into the op's buffer when
 * it is empty, linked to the send of what it will give (a ring too small for both makes
 * the read alone, then the send); else a send of what the
 * buffer holds (a short send's rest, or a short read's bytes). Sends go with MSG_NOSIGNAL.
 * The op is on `splicing` from its first round, so that a socket being closed cancels it
 * (its read is not on the socket's descriptor). */
static int prep_rw(struct afs_ctx *ctx, struct afs_op *op)
{
    struct uring *u = U(ctx);
    struct afs__op *o = afs__op(op);
    struct usplice *sp = SP(op);
    struct afs__sock *k = &o->sock;
    uint64_t at = 0;
    size_t len = 0;
    bool fill = k->head == k->tail;
    if (fill) {
        int err = afs__sendfile_span(op, &at, &len);
        if (err < 0)
            return err;
    }
    bool solo = *u->ring.sq.kring_entries < 3;
    if (fill && !solo && io_uring_sq_space_left(&u->ring) < 3) {
        ctx->stats.kernel_submits++;
        if (flush(ctx) < 0)
            return -EIO;
    }
    struct io_uring_sqe *sqe = get_sqe(ctx);
    if (!sqe)
        return -EIO;
    if (!sp->held) {
        sp->held = 1;
        afs_list_push_back(&u->splicing, SPLICE_NODE(op));
    }
    sp->fill = fill;
    sp->r1 = sp->r2 = 0;
    sp->pending = 1;
    size_t skip = 0;
    if (fill) {
        io_uring_prep_read(sqe, (int)k->src->fd, k->bounce, (unsigned)len, at);
        io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)op | SPLICE_FILL_BIT);
        if (solo) {
            sp->r2 = -ECANCELED; /* read by rw_round as the link broken after the read */
            return 0;
        }
        sqe->flags |= IOSQE_IO_LINK; /* a short read breaks it */
        sp->pending = 2;
        skip = (size_t)(o->off + o->done - at);
        sqe = io_uring_get_sqe(&u->ring); /* room made above */
    }
    /* What the read gives when it is whole (as afs__sendfile_filled counts it). */
    size_t n = fill ? AFS_MIN(len - skip, o->total - o->done) : (size_t)(k->tail - k->head);
    io_uring_prep_send(sqe, (int)o->file->fd, k->bounce + (fill ? skip : k->head), n,
                       afs__sys_msg_flags(true, 0));
    io_uring_sqe_set_data(sqe, op);
    return 0;
}

/* A read and send round's outcome (both completions came), to the core as one transfer:
 * the bytes sent, -EAGAIN to go on (a short read's bytes are in the buffer: the next round
 * sends them), 0 at the source's end, or an error (the read's, the send's, a cancel's). The
 * core queues the op's next round, or finishes it (a cancel, a deadline: between two rounds
 * the buffer is not in the kernel's hands). */
static void rw_round(struct afs_ctx *ctx, struct afs_op *op)
{
    struct usplice *sp = SP(op);
    bool cancel = afs__op(op)->flags & AFS__OP_CANCEL;
    /* A read's error or the source's end is the outcome (the send went with the link). */
    ssize_t report = sp->fill ? afs__sendfile_filled(op, sp->r1) : 1;
    if (report > 0) {
        if (sp->r2 > 0)
            afs__sendfile_sent(op, (size_t)(report = sp->r2));
        else if (sp->r2 == -ECANCELED && sp->fill && !cancel)
            report = -EAGAIN; /* a short read broke the link (or the read went alone) */
        else
            report = sp->r2 == 0 ? -EIO : sp->r2; /* a send of bytes that moved none */
    }
    afs__op_transferred(ctx, op, report);
}

/* One completion of a sendfile round; once every one came, the round's outcome goes to the
 * core as one transfer: the bytes that reached the socket, 0 at the source's end, -EAGAIN to
 * go on (the pipe holds bytes the socket refused or took in part: the next round waits for
 * its room), or an error. A file splice's bytes go to the socket at once, without a poll
 * first: a socket may take them while poll() calls it full (a Unix socket under a quarter
 * of its buffer is "writable", one under all of it takes a send), and a peer that waits
 * for them before it reads would wait for ever. Read and send rounds are judged by
 * rw_round. */
static void splice_cqe(struct afs_ctx *ctx, struct afs_op *op, int res, bool fill)
{
    struct afs__op *o = afs__op(op);
    struct usplice *sp = SP(op);
    if (fill)
        sp->r1 = res;
    else
        sp->r2 = res;
    if (--sp->pending) {
        /* A cancel that came while the send waited for its link found nothing to cancel:
         * the read is done now, so the other one is queued (or running). */
        if (fill && (o->flags & AFS__OP_CANCEL) && io_uring_sq_space_left(&U(ctx)->ring))
            uring_cancel(ctx, op); /* never a flush from inside reap() */
        return;
    }
    if (sp->rw) {
        rw_round(ctx, op);
        return;
    }
    bool cancel = o->flags & AFS__OP_CANCEL;
    ssize_t report;
    if (sp->fill && sp->r1 <= 0) {
        /* The source's end, or the file's error (the pipe was empty). */
        report = cancel ? -ECANCELED : sp->r1;
        if (report == -EINVAL && U(ctx)->has_read) {
            /* The source refuses splices (a file without splice_read: most of /proc, some
             * FUSE and network file systems): every byte counted so far reached the
             * socket, so the rest of the op reads and sends (the arguments were checked
             * before: this -EINVAL is the source's). */
            pipe_put(U(ctx), op);
            sp->rw = 1;
            report = -EAGAIN;
        }
    } else {
        if (sp->fill)
            sp->inpipe += (uint32_t)sp->r1;
        report = cancel ? -ECANCELED : splice_out(op, sp->fill ? POLLOUT : sp->r2);
        if (report > 0)
            sp->inpipe -= (uint32_t)AFS_MIN((size_t)report, (size_t)sp->inpipe);
        else if (report == 0)
            report = -EIO; /* a socket splice that moved nothing */
    }
    afs__op_transferred(ctx, op, report); /* the pipe goes back in uring_sendfile_end */
}

static void uring_sendfile_end(struct afs_ctx *ctx, struct afs_op *op)
{
    struct usplice *sp = SP(op);
    if (!sp->rw) {
        pipe_put(U(ctx), op);
    } else if (sp->held) {
        sp->held = 0;
        afs_list_remove(&U(ctx)->splicing, SPLICE_NODE(op));
    }
}

static int uring_prep(struct afs_ctx *ctx, struct afs_op *op)
{
    struct uring *u = U(ctx);
    struct afs__op *o = afs__op(op);
    if (o->code == AFS__SENDFILE) {
        struct usplice *sp = SP(op);
        if (!sp->rw && !sp->held && sendfile_by_rw(u, o))
            sp->rw = 1;
        if (sp->rw)
            return prep_rw(ctx, op);
        int err = prep_splice(ctx, op);
        if ((err == -EMFILE || err == -ENFILE) && !sp->held && u->has_read) {
            /* No descriptor left for a pipe: this op reads and sends instead, as the
             * sendfile(2) of the other backends needs none. */
            sp->rw = 1;
            return prep_rw(ctx, op);
        }
        return err;
    }
    if (afs__is_sock(o) || (o->file->sock && !afs__is_ctl(o))) {
        if (afs__ums_prep(ctx, &u->ums, &u->ring, op))
            return 0; /* parked on its socket's multishot */
        struct io_uring_sqe *sqe = get_sqe(ctx);
        if (!sqe)
            return -EIO;
        prep_sock(sqe, op);
        io_uring_sqe_set_data(sqe, op);
        return 0;
    }
    struct io_uring_sqe *sqe = get_sqe(ctx);
    if (!sqe)
        return -EIO;
    if (afs__is_meta(o)) {
        prep_meta(sqe, o);
        if (o->xflags & AFS__X_LINKED)
            sqe->flags |= IOSQE_IO_LINK;
        io_uring_sqe_set_data(sqe, op);
        return 0;
    }
    /* A registered file is named by its slot (uring_reg.c). */
    int fd = o->file->reg_slot ? (int)o->file->reg_slot - 1 : o->file->fd;
    struct afs__span s;
    afs__op_span(op, &s);
    bool write = o->code == AFS__WRITE || o->code == AFS__WRITEV;
    if (o->code == AFS__FSYNC) {
        io_uring_prep_fsync(sqe, fd, (o->fsync_flags & AFS_FSYNC_DATA) ? IORING_FSYNC_DATASYNC : 0);
    } else if (afs__is_ctl(o)) {
        prep_stor(sqe, fd, o);
    } else if (s.buf && (write ? u->has_write : u->has_read)) {
        int bi = afs__ureg_buf_index(&u->reg, s.buf, s.len);
        if (bi >= 0) {
            /* In a registered buffer: READ_FIXED/WRITE_FIXED (5.1) skip pinning its pages. */
            if (write)
                io_uring_prep_write_fixed(sqe, fd, s.buf, (unsigned)s.len, s.off, bi);
            else
                io_uring_prep_read_fixed(sqe, fd, s.buf, (unsigned)s.len, s.off, bi);
            ctx->stats.fixed_buffer_ops++;
        } else if (write) {
            io_uring_prep_write(sqe, fd, s.buf, (unsigned)s.len, s.off);
        } else {
            io_uring_prep_read(sqe, fd, s.buf, (unsigned)s.len, s.off);
        }
    } else {
        /* READ/WRITE are Linux 5.6; before that a one-element iovec kept in the op. */
        const struct iovec *iov = s.iov;
        int cnt = s.iovcnt;
        if (s.buf) {
            struct iovec *one = (struct iovec *)(void *)o->be;
            one->iov_base = s.buf;
            one->iov_len = s.len;
            iov = one;
            cnt = 1;
        }
        if (write)
            io_uring_prep_writev(sqe, fd, iov, (unsigned)cnt, s.off);
        else
            io_uring_prep_readv(sqe, fd, iov, (unsigned)cnt, s.off);
    }
    if (o->file->reg_slot) {
        sqe->flags |= IOSQE_FIXED_FILE;
        ctx->stats.fixed_file_ops++;
    }
    if (o->xflags & AFS__X_LINKED)
        sqe->flags |= IOSQE_IO_LINK;
    if (o->xflags & AFS__X_DSYNC)
        sqe->rw_flags = RWF_DSYNC; /* Linux 4.7: durable when it completes (FUA where the
                                      device has it) */
    if (!afs__is_ctl(o) && (o->file->flags & AFS_DIRECT))
        u->direct_staged++;
    /* A pipe's write tried inline would raise SIGPIPE in this thread when the reader has
     * gone (the kernel signals the writing task); the kernel's workers block signals. */
    if (write && o->file->seq)
        sqe->flags |= IOSQE_ASYNC;
    io_uring_sqe_set_data(sqe, op);
    return 0;
}

/* A chain goes into the ring as consecutive SQEs linked with IOSQE_IO_LINK: the kernel runs
 * them in order, and cancels the rest when one fails or moves less than asked (the core
 * resumes a short transfer and then runs the rest itself). The SQEs must not be split over
 * two submissions, so room is made for all of them first. */
static bool uring_link(struct afs_ctx *ctx, struct afs_op *head, unsigned n)
{
    struct uring *u = U(ctx);
    /* A sendfile is two SQEs of its own, linked: it does not join a chain's link. */
    struct afs_op *m = head;
    for (unsigned i = 0; i < n && m; i++, m = afs__op(m)->chain_next)
        if (afs__op(m)->code == AFS__SENDFILE)
            return false;
    if (n > *u->ring.sq.kring_entries - 1) /* one entry for the waker's read */
        return false;
    if (io_uring_sq_space_left(&u->ring) < n + 1) {
        ctx->stats.kernel_submits++;
        if (flush(ctx) < 0)
            return false;
    }
    return io_uring_sq_space_left(&u->ring) >= n + 1;
}

/* Whether a failure of op cancels the SQEs linked after it. The kernel fails the link for
 * reads, writes, opens and closes (and at an SQE it cannot start, a bad fd); fsync,
 * fallocate, ftruncate, sync_file_range, statx, mkdirat, renameat and unlinkat report their
 * error and let the next member run (seen on 6.18: a failed fsync linked to a write, and
 * the write ran). A chain is linked only as far as such a member. */
static bool uring_link_cuts(const struct afs_op *op)
{
    switch (afs__op((struct afs_op *)op)->code) {
    case AFS__READ:
    case AFS__WRITE:
    case AFS__READV:
    case AFS__WRITEV:
    case AFS__OPENAT:
    case AFS__CLOSE: return true;
    default: return false;
    }
}

/* A slice of a large phase (AFS__SUBMIT_SLICE): submitted, not reaped, nothing waited for.
 * The CQ holds twice the queue depth, so its completions wait there for the next enter.
 * Not flush(): that reaps when the kernel refuses with -EBUSY, and a task in its CPU phase
 * may be the caller; a refusal here just leaves the slice to the phase's enter. */
static int uring_flush(struct afs_ctx *ctx)
{
    if (io_uring_sq_ready(&U(ctx)->ring) == 0)
        return 0;
    ctx->stats.kernel_submits++;
    int r;
    while ((r = ring_enter(ctx, 0, NULL)) == -EINTR)
        ;
    if (r < 0)
        return r;
    /* What the kernel left (an SQE error stops a batch before 5.18's SUBMIT_ALL) stays
     * staged for the next enter. */
    return io_uring_sq_ready(&U(ctx)->ring) == 0 ? 0 : -EAGAIN;
}

static int uring_enter(struct afs_ctx *ctx, bool wait, int64_t timeout_ns)
{
    struct uring *u = U(ctx);
    if (!u->waker_armed) {
        struct io_uring_sqe *sqe = get_sqe(ctx);
        if (sqe) {
            io_uring_prep_read(sqe, (int)ctx->waker.fd, &u->waker_buf, sizeof u->waker_buf,
                               (uint64_t)-1);
            io_uring_sqe_set_data64(sqe, TAG_WAKER);
            u->waker_armed = true;
        }
    }
    int rfd = u->ready_armed ? -1 : afs__ready_fd(ctx);
    if (rfd >= 0) {
        /* Sockets parked in the readiness engine (kernels without the socket opcodes). */
        struct io_uring_sqe *sqe = get_sqe(ctx);
        if (sqe) {
            io_uring_prep_poll_add(sqe, rfd, POLLIN);
            io_uring_sqe_set_data64(sqe, TAG_READY);
            u->ready_armed = true;
        }
    }
    if (afs__ums_pending(&u->ums))
        wait = false; /* parked ops complete from what their sockets hold: no kernel wait */
    bool have_sqes = io_uring_sq_ready(&u->ring) > 0;
    int r = 0;
    if (ctx->ready)
        timeout_ns = afs__ready_timeout(ctx, timeout_ns); /* a connect to retry */
    if (u->npipes) {
        pipes_trim(u);
        /* A context that waits long (an idle server) wakes up to close its spares. */
        if (wait && u->npipes) {
            int64_t left = AFS_MAX(u->pipes_until - afs__now_ns(), (int64_t)1000000);
            if (timeout_ns < 0 || timeout_ns > left)
                timeout_ns = left;
        }
    }
    if (wait && io_uring_cq_ready(&u->ring) == 0) {
        /* One system call: a submission if it carries SQEs, else a wait (never both). */
        if (have_sqes)
            ctx->stats.kernel_submits++;
        else
            ctx->stats.kernel_waits++;
        if (timeout_ns < 0) {
            r = ring_enter(ctx, 1, NULL);
        } else {
            struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000,
                                           .tv_nsec = timeout_ns % 1000000000};
            r = ring_enter(ctx, 1, &ts);
        }
        /* Timeouts, signals and a full CQ just end this wait; the caller loops. */
        if (r == -ETIME || r == -EINTR || r == -EAGAIN || r == -EBUSY)
            r = 0;
    } else if (have_sqes) {
        ctx->stats.kernel_submits++;
        r = flush(ctx);
    }
    reap(ctx);
    return r < 0 ? r : 0;
}

_Thread_local struct afs__ring_hint afs__ring_hint = {.attach_fd = -1};

int afs__uring_fd(struct afs_ctx *ctx)
{
    return U(ctx)->ring.ring_fd;
}

/* A wake-up as a completion on `to`'s ring, staged on from's: it goes with from's next
 * submission, with the rest of its batch (or at once with what is staged when `now`), and
 * makes no completion on from (IOSQE_CQE_SKIP_SUCCESS, 5.17). The receiver's reap ignores
 * TAG_MSG. */
bool afs__uring_msg(struct afs_ctx *from, struct afs_ctx *to, bool now)
{
    struct uring *u = U(from);
    if (!u->has_msg)
        return false;
    struct io_uring_sqe *sqe = get_sqe(from);
    if (!sqe)
        return false;
    io_uring_prep_msg_ring(sqe, U(to)->ring.ring_fd, 0, TAG_MSG, 0);
    io_uring_sqe_set_data64(sqe, TAG_IGNORE);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    if (now) {
        /* Submit only (no reaping here: the caller may be a task in its CPU phase); what a
         * refusal leaves staged goes with the next submission. */
        from->stats.kernel_submits++;
        (void)ring_enter(from, 0, NULL);
    }
    return true;
}

static void uring_cancel(struct afs_ctx *ctx, struct afs_op *op)
{
    struct uring *u = U(ctx);
    if (afs__ums_cancel(ctx, &u->ums, op))
        return; /* it was parked: completed now */
    if (!u->has_cancel)
        return; /* before 5.5: the op just runs to completion */
    struct io_uring_sqe *sqe = get_sqe(ctx);
    if (!sqe)
        return;
    io_uring_prep_cancel(sqe, op, 0);
    io_uring_sqe_set_data64(sqe, TAG_IGNORE);
    /* The round's file splice or read too, while it runs (a splice always alone; a read
     * linked to its send, whose link it then cancels, or alone on a small ring). */
    bool fill_runs = afs__op(op)->code == AFS__SENDFILE && SP(op)->fill &&
                     (!SP(op)->rw || SP(op)->pending == 2 || *u->ring.sq.kring_entries < 3);
    if (fill_runs && (sqe = get_sqe(ctx))) {
        io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op | SPLICE_FILL_BIT, 0);
        io_uring_sqe_set_data64(sqe, TAG_IGNORE);
    }
}

/* Registration: uring_reg.c does the work; these only find the ring. */
static int uring_reg_buffers(struct afs_ctx *ctx, const struct iovec *iov, unsigned nr,
                             char *why, size_t why_len)
{
    return afs__ureg_buffers(&U(ctx)->reg, &U(ctx)->ring, iov, nr, why, why_len);
}

static void uring_unreg_buffers(struct afs_ctx *ctx)
{
    afs__ureg_unbuffers(&U(ctx)->reg, &U(ctx)->ring);
}

static int uring_reg_files(struct afs_ctx *ctx, unsigned slots, char *why, size_t why_len)
{
    return afs__ureg_files(&U(ctx)->reg, &U(ctx)->ring, ctx, slots, why, why_len);
}

static void uring_unreg_files(struct afs_ctx *ctx)
{
    afs__ureg_unfiles(&U(ctx)->reg, &U(ctx)->ring, ctx);
}

static int uring_open(struct afs_ctx *ctx, struct afs_file *f)
{
    afs__ureg_file_open(&U(ctx)->reg, &U(ctx)->ring, f);
    return 0;
}

static void uring_close(struct afs_ctx *ctx, struct afs_file *f)
{
    struct uring *u = U(ctx);
    /* An armed multishot holds the socket open in the kernel: wait for it to end. */
    while (f->be_sock && afs__ums_close(ctx, &u->ums, f)) {
        ctx->stats.kernel_submits++;
        (void)ring_enter(ctx, 1, NULL); /* errors: transient, or the ring is gone */
        reap(ctx);
    }
    afs__ureg_file_close(&u->reg, &u->ring, f);
}

static void uring_offload(const struct afs_ctx *ctx, struct afs_offload *out)
{
    afs__ureg_offload_info(&((const struct uring *)ctx->be_state)->reg, out);
}

static bool uring_sock(struct afs_ctx *ctx)
{
    return U(ctx)->has_sock;
}

static void uring_cancel_file(struct afs_ctx *ctx, struct afs_file *f)
{
    /* Its sendfiles: their socket splices may wait for a link, out of the fd's reach (and a
     * read and send's read is of the source's). */
    for (struct afs_list_node *n = U(ctx)->splicing.first; n; n = n->next) {
        size_t at = offsetof(struct afs_op, private_) + offsetof(struct afs__op, be) +
                    4 * sizeof(uint64_t); /* SPLICE_NODE's place in the op */
        struct afs_op *op = (struct afs_op *)(void *)((char *)n - at);
        if (afs__op(op)->file == f && !(afs__op(op)->flags & AFS__OP_CANCEL)) {
            afs__op(op)->flags |= AFS__OP_CANCEL;
            uring_cancel(ctx, op);
        }
    }
    afs__ums_cancel_file(ctx, &U(ctx)->ums, f);
    struct io_uring_sqe *sqe = get_sqe(ctx);
    if (!sqe)
        return;
    int fd = f->fd;
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, (uint64_t)(unsigned)fd << 8 | TAG_CANCEL_FD);
}

static void uring_sock_info(const struct afs_ctx *ctx, struct afs_sock_info *out)
{
    afs__ums_info(&((const struct uring *)ctx->be_state)->ums, out);
}

bool afs__uring_no_sock;

const struct afs__backend afs__backend_uring = {
    .name = "io_uring",
    .batches_reads = true,
    .id = AFS_BACKEND_IO_URING,
    .init = uring_init,
    .fini = uring_fini,
    .accepts = uring_accepts,
    .prep = uring_prep,
    .enter = uring_enter,
    .flush = uring_flush,
    .cancel = uring_cancel,
    .meta_done = uring_meta_done,
    .link = uring_link,
    .link_cuts = uring_link_cuts,
    .open = uring_open,
    .close = uring_close,
    .reg_buffers = uring_reg_buffers,
    .unreg_buffers = uring_unreg_buffers,
    .reg_files = uring_reg_files,
    .unreg_files = uring_unreg_files,
    .offload = uring_offload,
    .sock = uring_sock,
    .cancel_file = uring_cancel_file,
    .sendfile_end = uring_sendfile_end,
    .sock_info = uring_sock_info,
};
