/* io_uring: registered buffers and files, the cap on the kernel's I/O workers, and the rule
 * that decides whether batches of direct I/O are issued inline or by those workers.
 *
 * Registration failures are never errors for the caller: the reason is kept and ops run as
 * plain ones (see asyncfs.h). The file table is registered sparse and updated slot by slot
 * (IORING_REGISTER_FILES_UPDATE), which does not quiesce the ring on any kernel that has
 * sparse tables (5.5 and later): ops in flight keep the file they were given. */
#include "uring_reg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An op's user_data is its address (8-byte aligned on 64-bit targets; an op this misses is
 * only not offloaded); uring.c's tags (a cancel, the waker, a ring message, the readiness
 * poll, a socket cancel's fd << 8 | 5) and liburing's timeout all have a low bit set. */
#define URING_NOT_OP(ud) (((ud) & 7u) != 0)

/* The offload rule is tune.h's (docs/ARCHITECTURE.md): way 0 issues inline, way 1 marks
 * the direct ops IOSQE_ASYNC; its events are the direct ops issued, its work the context's
 * completions (every op's), its CPU clock the process's (the kernel's workers are threads of
 * the process, so their time counts). */
static uint64_t completions(const void *ctx)
{
    return ((const struct afs_ctx *)ctx)->stats.completions;
}

static int64_t proc_cpu(void)
{
    return afs__sys.proc_cpu_now ? afs__sys.proc_cpu_now() : -1;
}

void afs__ureg_init(struct afs__ureg *r, struct io_uring *ring, const struct afs_ctx *ctx)
{
    memset(r, 0, sizeof *r);
    r->tune.mode = (ctx->cfg.flags & AFS_CTX_INLINE_DIRECT)    ? URING_OFFLOAD_NEVER
                   : (ctx->cfg.flags & AFS_CTX_OFFLOAD_DIRECT) ? URING_OFFLOAD_ALWAYS
                                                               : URING_OFFLOAD_AUTO;
    afs__tune_init(&r->tune.rule, 50 * 1000 * 1000); /* a device's pace varies more */
    unsigned cap = ctx->cfg.io_workers;
    if (cap == AFS_IO_WORKERS_KERNEL)
        return;
    if (cap == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cap = n < 2 ? 2u : (unsigned)n;
    }
    /* io-wq's bounded workers (file I/O the kernel punted after trying it); the unbounded
     * ones (0: unchanged) serve what is queued before its file is looked up, which is
     * every IOSQE_ASYNC SQE (the offload rule's direct I/O, pipe writes) and sockets. The
     * cap is the thread's (io-wq is per task), Linux 5.15; before that the call fails and
     * the kernel's own limit stays. */
    unsigned vals[2] = {cap, 0};
    if (io_uring_register_iowq_max_workers(ring, vals) == 0)
        r->tune.io_workers = cap;
}

void afs__ureg_fini(struct afs__ureg *r)
{
    /* The ring's exit drops the kernel's side. */
    free(r->ranges);
    free(r->free_slots);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------------------------------
 * Buffers
 * ---------------------------------------------------------------------------------------- */

static int range_cmp(const void *a, const void *b)
{
    const struct afs__ureg_range *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static const char *buffers_hint(int err)
{
    switch (-err) {
    case ENOMEM: return "locked-memory limit too low to pin them: RLIMIT_MEMLOCK, ulimit -l";
    case EFAULT: return "memory the kernel cannot pin (file-backed or unmapped?)";
    case EOPNOTSUPP: return "memory the kernel cannot pin (file-backed?)";
    case EBUSY: return "buffers already registered on the ring";
    case EINVAL: return "refused by the kernel (too many or too large for it?)";
    default: return NULL;
    }
}

int afs__ureg_buffers(struct afs__ureg *r, struct io_uring *ring, const struct iovec *iov,
                      unsigned nr, char *why, size_t why_len)
{
    struct afs__ureg_range *g = afs__sys.calloc(nr, sizeof *g);
    if (!g) {
        afs__why(why, why_len, "io_uring registered buffers", -ENOMEM, "the library's table");
        return 0;
    }
    int err = io_uring_register_buffers(ring, iov, nr);
    if (err < 0) {
        free(g);
        afs__why(why, why_len, "io_uring_register_buffers", err, buffers_hint(err));
        return 0;
    }
    for (unsigned i = 0; i < nr; i++) {
        g[i].start = (uintptr_t)iov[i].iov_base;
        g[i].end = g[i].start + iov[i].iov_len;
        g[i].index = i;
    }
    qsort(g, nr, sizeof *g, range_cmp);
    r->ranges = g;
    r->nranges = nr;
    return 1;
}

/* Ops staged in the SQ but not yet submitted name a registered buffer's index or a file's
 * slot, which the kernel looks up only when it takes the SQE: before the table goes (or is
 * made again, its indexes and slots then naming other buffers and files), those SQEs are
 * rewritten to name the buffer's address and the file's descriptor, as a plain op does. */
static void unfix_staged(struct io_uring *ring, bool bufs, bool files)
{
    struct io_uring_sq *sq = &ring->sq;
    for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
        struct io_uring_sqe *sqe = &sq->sqes[i & *sq->kring_mask];
        if (URING_NOT_OP(sqe->user_data))
            continue;
        if (bufs && (sqe->opcode == IORING_OP_READ_FIXED || sqe->opcode == IORING_OP_WRITE_FIXED)) {
            /* Made fixed only where the plain READ/WRITE exists (uring.c's prep). */
            sqe->opcode = sqe->opcode == IORING_OP_READ_FIXED ? IORING_OP_READ : IORING_OP_WRITE;
            sqe->buf_index = 0;
        }
        if (files && (sqe->flags & IOSQE_FIXED_FILE)) {
            sqe->flags &= (uint8_t)~IOSQE_FIXED_FILE;
            sqe->fd = afs__op((struct afs_op *)(uintptr_t)sqe->user_data)->file->fd;
        }
    }
}

void afs__ureg_unbuffers(struct afs__ureg *r, struct io_uring *ring)
{
    if (!r->ranges)
        return;
    unfix_staged(ring, true, false);
    /* Ops in flight hold the kernel's reference to the pages they use (5.13+: the buffers
     * are freed when the last one completes; before that the call waits for them). */
    (void)io_uring_unregister_buffers(ring);
    free(r->ranges);
    r->ranges = NULL;
    r->nranges = 0;
}

/* ------------------------------------------------------------------------------------------
 * Files
 * ---------------------------------------------------------------------------------------- */

int afs__ureg_files(struct afs__ureg *r, struct io_uring *ring, struct afs_ctx *ctx,
                    unsigned slots, char *why, size_t why_len)
{
    unsigned *free_slots = afs__sys.calloc(slots, sizeof *free_slots);
    int *fds = afs__sys.calloc(slots, sizeof *fds);
    if (!free_slots || !fds) {
        free(free_slots);
        free(fds);
        afs__why(why, why_len, "io_uring registered files", -ENOMEM, "the library's table");
        return 0;
    }
    /* A sparse table: every slot -1 (Linux 5.5), filled in as files open. liburing's
     * io_uring_register_files raises RLIMIT_NOFILE's soft limit when that is what refuses. */
    for (unsigned i = 0; i < slots; i++) {
        fds[i] = -1;
        free_slots[i] = slots - 1 - i; /* slot 0 is handed out first */
    }
    int err = io_uring_register_files(ring, fds, slots);
    free(fds);
    if (err < 0) {
        free(free_slots);
        afs__why(why, why_len, "io_uring_register_files", err,
                 err == -EMFILE   ? "more slots than the descriptor limit, RLIMIT_NOFILE"
                 : err == -EINVAL ? "kernel without sparse file tables (before 5.5)?"
                                  : NULL);
        return 0;
    }
    r->free_slots = free_slots;
    r->nfree = r->nslots = slots;
    for (struct afs_list_node *n = ctx->files.first; n; n = n->next)
        afs__ureg_file_open(r, ring, AFS_LIST_ITEM(n, struct afs_file, node));
    return 1;
}

void afs__ureg_unfiles(struct afs__ureg *r, struct io_uring *ring, struct afs_ctx *ctx)
{
    if (!r->free_slots)
        return;
    unfix_staged(ring, false, true);
    (void)io_uring_unregister_files(ring);
    for (struct afs_list_node *n = ctx->files.first; n; n = n->next)
        AFS_LIST_ITEM(n, struct afs_file, node)->reg_slot = 0;
    free(r->free_slots);
    r->free_slots = NULL;
    r->nfree = r->nslots = 0;
}

void afs__ureg_file_open(struct afs__ureg *r, struct io_uring *ring, struct afs_file *f)
{
    if (!r->free_slots || r->nfree == 0 || !(f->flags & AFS_DIRECT) || f->seq || f->reg_slot)
        return;
    unsigned slot = r->free_slots[r->nfree - 1];
    int fd = (int)f->fd;
    /* Fails only when the kernel is out of memory: the file then uses its descriptor. */
    if (io_uring_register_files_update(ring, slot, &fd, 1) != 1)
        return;
    r->nfree--;
    f->reg_slot = slot + 1;
}

void afs__ureg_file_close(struct afs__ureg *r, struct io_uring *ring, struct afs_file *f)
{
    if (!f->reg_slot)
        return;
    unsigned slot = f->reg_slot - 1;
    int none = -1;
    f->reg_slot = 0;
    /* Should the kernel refuse, the slot keeps the old file until the table goes: never
     * hand it out again. */
    if (io_uring_register_files_update(ring, slot, &none, 1) == 1 && r->free_slots)
        r->free_slots[r->nfree++] = slot;
}

/* ------------------------------------------------------------------------------------------
 * Offloading direct I/O
 * ---------------------------------------------------------------------------------------- */

static bool is_data_opcode(uint8_t opcode)
{
    return opcode == IORING_OP_READ || opcode == IORING_OP_WRITE ||
           opcode == IORING_OP_READV || opcode == IORING_OP_WRITEV ||
           opcode == IORING_OP_READ_FIXED || opcode == IORING_OP_WRITE_FIXED;
}

/* Marks the direct reads and writes in the SQ (not yet submitted) IOSQE_ASYNC. */
static unsigned mark_async(struct io_uring *ring)
{
    struct io_uring_sq *sq = &ring->sq;
    unsigned n = 0;
    for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
        struct io_uring_sqe *sqe = &sq->sqes[i & *sq->kring_mask];
        if (!is_data_opcode(sqe->opcode) || URING_NOT_OP(sqe->user_data))
            continue;
        const struct afs__op *o = afs__op((struct afs_op *)(uintptr_t)sqe->user_data);
        if (o->file->flags & AFS_DIRECT) {
            sqe->flags |= IOSQE_ASYNC;
            n++;
        }
    }
    return n;
}

static int enter(struct io_uring *ring, unsigned wait_nr, struct __kernel_timespec *ts)
{
    if (afs__sys.uring_enter)
        return afs__sys.uring_enter(ring, wait_nr, ts);
    return afs__uring_enter_real(ring, wait_nr, ts);
}

int afs__ureg_submit(struct afs__ureg *r, struct afs_ctx *ctx, struct io_uring *ring,
                     unsigned direct, unsigned wait_nr, struct __kernel_timespec *ts)
{
    struct afs__ureg_tune *t = &r->tune;
    if (direct == 0 || t->mode == URING_OFFLOAD_NEVER)
        return enter(ring, wait_nr, ts);
    if (t->mode == URING_OFFLOAD_AUTO) {
        const struct afs__tune_src src = {completions, proc_cpu, ctx};
        if (!afs__tune_count(&t->rule, direct, &src))
            return enter(ring, wait_nr, ts);
    }
    ctx->stats.offloaded_ops += mark_async(ring);
    return enter(ring, wait_nr, ts);
}

void afs__ureg_offload_info(const struct afs__ureg *r, struct afs_offload *out)
{
    const struct afs__ureg_tune *t = &r->tune;
    out->offloading = t->mode == URING_OFFLOAD_ALWAYS ||
                      (t->mode == URING_OFFLOAD_AUTO && t->rule.choice);
    out->samples = t->rule.samples;
    out->inline_rate = t->rule.rate[0];
    out->offload_rate = t->rule.rate[1];
    out->inline_cpu_ns = t->rule.cpu_ns[0];
    out->offload_cpu_ns = t->rule.cpu_ns[1];
    out->io_workers = t->io_workers;
}
