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

/* The rule (docs/ARCHITECTURE.md). Windows last WINDOW_NS of the monotonic clock and at
 * least WINDOW_MIN_OPS direct ops; the clock is read once per CHECK_OPS direct ops. The
 * context's first window is issued inline and not scored (it pays for first touches). Then
 * WARMUP_ROUNDS sampling rounds, each an inline and an offloaded window back to back (the
 * order alternating from round to round, so a load that rises or falls does not favour
 * one); after that GAP_MIN windows by choice between two rounds, twice as many after each
 * round whose own comparison agrees with the choice (up to GAP_MAX), half as many after one
 * that does not (the evidence is looked at again sooner), GAP_MIN after a change.
 * A window's score is what the context delivered: completions per second of wall time and
 * the process's CPU time per completion (the kernel's workers are threads of the process,
 * so their time counts). Each regime keeps the mean of its first AVG_DEPTH scores, then a
 * running average that weighs the newest 1/AVG_DEPTH: single windows on a shared machine
 * vary several-fold (a 20 ms window of one regime measured 7k and the next 73k reads/s).
 * Which regime delivers more, and which costs less CPU per completion, are decided on the
 * medians of the last ROUNDS_KEPT rounds' paired ratios (offloaded over inline, the two
 * windows of one round side by side): one window several-fold off moves a running average
 * past the margin for rounds, a median not at all. The averages are what is reported. */
#define WINDOW_NS      (50 * 1000 * 1000)
/* A window that took longer than this (the context had no direct I/O to do for a while, or
 * a device slower than 64 ops a second) is not scored: it starts again, same regime. */
#define WINDOW_MAX_NS  ((int64_t)1000 * 1000 * 1000)
#define WINDOW_MIN_OPS 64u
#define CHECK_OPS      32u
#define WARMUP_ROUNDS  3u
#define GAP_MIN        4u
#define GAP_MAX        64u
#define AVG_DEPTH      4u
#define ROUNDS_KEPT    AFS__UREG_ROUNDS
#define RATIO_ONE      1024u /* a paired ratio of 1 */
/* Completions per second decide when one regime delivers more than 9/8 of the other's;
 * nearer than that, the regime with less CPU time per completion is chosen. */
#define RATE_MARGIN_NUM 9u
#define RATE_MARGIN_DEN 8u

void afs__ureg_init(struct afs__ureg *r, struct io_uring *ring, const struct afs_ctx *ctx)
{
    memset(r, 0, sizeof *r);
    r->tune.mode = (ctx->cfg.flags & AFS_CTX_INLINE_DIRECT)    ? URING_OFFLOAD_NEVER
                   : (ctx->cfg.flags & AFS_CTX_OFFLOAD_DIRECT) ? URING_OFFLOAD_ALWAYS
                                                               : URING_OFFLOAD_AUTO;
    r->tune.gap = GAP_MIN;
    r->tune.win_check = CHECK_OPS;
    unsigned cap = ctx->cfg.io_workers;
    if (cap == AFS_IO_WORKERS_KERNEL)
        return;
    if (cap == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cap = n < 2 ? 2u : (unsigned)n;
    }
    /* io-wq's bounded workers (file I/O); the unbounded ones (0: unchanged) serve sockets
     * and pipes. The cap is the thread's (io-wq is per task), Linux 5.15; before that the
     * call fails and the kernel's own limit stays. */
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

void afs__ureg_unbuffers(struct afs__ureg *r, struct io_uring *ring)
{
    if (!r->ranges)
        return;
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

/* The n-th score (from 1) into an average (above). */
static void average(uint64_t *avg, uint64_t sample, unsigned n)
{
    int64_t w = AFS_MIN(n, AVG_DEPTH);
    int64_t a = (int64_t)*avg + ((int64_t)sample - (int64_t)*avg) / w;
    *avg = a > 0 ? (uint64_t)a : 1; /* 0 means "not measured" */
}

/* 1: offloading delivers more than RATE_MARGIN of inline's rate; -1: the converse; 0:
 * nearer than that. `ratio` is offloaded over inline, in RATIO_ONE units. */
static int rate_verdict(uint64_t ratio)
{
    if (ratio * RATE_MARGIN_DEN > (uint64_t)RATIO_ONE * RATE_MARGIN_NUM)
        return 1;
    if ((uint64_t)RATIO_ONE * RATE_MARGIN_DEN > ratio * RATE_MARGIN_NUM)
        return -1;
    return 0;
}

static uint64_t median(const uint32_t *ratios, unsigned n)
{
    uint32_t v[ROUNDS_KEPT] = {0};
    memcpy(v, ratios, n * sizeof v[0]);
    for (unsigned i = 1; i < n; i++) /* insertion sort: five at most */
        for (unsigned j = i; j > 0 && v[j - 1] > v[j]; j--) {
            uint32_t x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    return n % 2 ? v[n / 2] : ((uint64_t)v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Keeps the last ROUNDS_KEPT ratios, the newest last. */
static void keep(uint32_t *ratios, unsigned *n, uint32_t r)
{
    if (*n == ROUNDS_KEPT)
        memmove(ratios, ratios + 1, (ROUNDS_KEPT - 1) * sizeof ratios[0]);
    else
        (*n)++;
    ratios[*n - 1] = r;
}

/* a / b in RATIO_ONE units (b > 0). */
static uint32_t ratio_of(uint64_t a, uint64_t b)
{
    uint64_t r = a > UINT64_MAX / RATIO_ONE ? UINT64_MAX : a * RATIO_ONE / b;
    return r > UINT32_MAX ? UINT32_MAX : (uint32_t)r;
}

/* The regime that delivers more, or as much for less CPU. */
static bool prefer_offload(const struct afs__ureg_tune *t)
{
    if (t->nratios[0] == 0)
        return t->offloading;
    int v = rate_verdict(median(t->ratios[0], t->nratios[0]));
    if (v)
        return v > 0;
    /* Without a CPU clock: inline, which starts no threads. */
    return t->nratios[1] && median(t->ratios[1], t->nratios[1]) < RATIO_ONE;
}

static void score(struct afs__ureg_tune *t, const struct afs_ctx *ctx, int64_t now, int64_t cpu)
{
    uint64_t done = ctx->stats.completions - t->win_done;
    int64_t dt = now - t->win_start;
    if (done == 0 || dt <= 0)
        return; /* nothing delivered (the ops of a stalled device): no score */
    int k = t->win_offload;
    unsigned n = ++t->scored[k];
    done = AFS_MIN(done, UINT64_MAX / 1000000000u);
    uint64_t rate = done * 1000000000u / (uint64_t)dt;
    average(&t->rate[k], rate, n);
    t->round_rate[k] = rate ? rate : 1;
    if (cpu >= 0 && t->win_cpu >= 0 && cpu >= t->win_cpu) {
        uint64_t per = (uint64_t)(cpu - t->win_cpu) / done;
        average(&t->cpu_ns[k], per, n);
        t->round_cpu[k] = per ? per : 1;
    }
    t->samples++;
}

/* The window that just closed is over: scores it if it was a sample, chooses when it ended
 * a round, and sets the next window's regime. */
static void next_window(struct afs__ureg_tune *t, const struct afs_ctx *ctx, int64_t now,
                        int64_t cpu)
{
    if (t->win_scored)
        score(t, ctx, now, cpu);
    if (t->win_scored && !t->round_half) {
        /* A round is over: choose, and set the gap to the next one. */
        int against = 0; /* this round alone says the other regime */
        if (t->round_rate[0] && t->round_rate[1]) {
            uint32_t r = ratio_of(t->round_rate[1], t->round_rate[0]);
            keep(t->ratios[0], &t->nratios[0], r);
            int v = rate_verdict(r);
            against = v && (v > 0) != t->offloading;
        }
        if (t->round_cpu[0] && t->round_cpu[1])
            keep(t->ratios[1], &t->nratios[1], ratio_of(t->round_cpu[1], t->round_cpu[0]));
        t->round_rate[0] = t->round_rate[1] = t->round_cpu[0] = t->round_cpu[1] = 0;
        bool pick = prefer_offload(t);
        if (++t->rounds > WARMUP_ROUNDS)
            t->gap = pick != t->offloading ? GAP_MIN
                     : against              ? AFS_MAX(t->gap / 2, GAP_MIN)
                                            : AFS_MIN(2 * t->gap, GAP_MAX);
        t->left = t->rounds < WARMUP_ROUNDS ? 0 : t->gap;
        t->offloading = pick;
    }
    if (t->round_half) {
        t->win_offload = !t->win_offload;
        t->round_half = false;
    } else if (t->left > 0) {
        t->left--;
        t->win_offload = t->offloading;
        t->win_scored = false;
    } else {
        t->win_offload = (t->rounds & 1) != 0;
        t->win_scored = t->round_half = true;
    }
}

/* Closes the open window when its time is up and opens the next one. */
static void window_check(struct afs__ureg_tune *t, const struct afs_ctx *ctx)
{
    t->win_check = t->win_ops + CHECK_OPS;
    int64_t now = afs__sys.now();
    if (t->win_timed && (now - t->win_start < WINDOW_NS || t->win_ops < WINDOW_MIN_OPS))
        return;
    int64_t cpu = afs__sys.proc_cpu_now ? afs__sys.proc_cpu_now() : -1;
    if (!t->win_timed || now - t->win_start <= WINDOW_MAX_NS)
        next_window(t, ctx, now, cpu);
    t->win_timed = true;
    t->win_ops = 0;
    t->win_check = CHECK_OPS;
    t->win_done = ctx->stats.completions;
    t->win_start = now;
    t->win_cpu = cpu;
}

int afs__ureg_submit(struct afs__ureg *r, struct afs_ctx *ctx, struct io_uring *ring,
                     unsigned direct, unsigned wait_nr, struct __kernel_timespec *ts)
{
    struct afs__ureg_tune *t = &r->tune;
    if (direct == 0 || t->mode == URING_OFFLOAD_NEVER)
        return enter(ring, wait_nr, ts);
    if (t->mode == URING_OFFLOAD_AUTO) {
        t->win_ops += direct;
        if (t->win_ops >= t->win_check)
            window_check(t, ctx);
        if (!t->win_offload)
            return enter(ring, wait_nr, ts);
    }
    ctx->stats.offloaded_ops += mark_async(ring);
    return enter(ring, wait_nr, ts);
}

void afs__ureg_offload_info(const struct afs__ureg *r, struct afs_offload *out)
{
    const struct afs__ureg_tune *t = &r->tune;
    out->offloading = t->mode == URING_OFFLOAD_ALWAYS ||
                      (t->mode == URING_OFFLOAD_AUTO && t->offloading);
    out->samples = t->samples;
    out->inline_rate = t->rate[0];
    out->offload_rate = t->rate[1];
    out->inline_cpu_ns = t->cpu_ns[0];
    out->offload_cpu_ns = t->cpu_ns[1];
    out->io_workers = t->io_workers;
}
