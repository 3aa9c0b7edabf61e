/* afbench: a fio-like benchmark for asyncfs and corio, with the baselines beside them.
 *
 * One job: `iodepth` I/Os of `bs` bytes in flight on one file, sequential or random, through
 * one engine:
 *   corio      iodepth corio tasks, each calling afs_pread/afs_pwrite (sync_threshold 0 by
 *              default, so every I/O joins its phase's batch)
 *   queue      the op API: iodepth ops in flight, each refilled from its own callback
 *   pread      a plain pread/pwrite loop (iodepth ignored): the synchronous baseline
 *   threads    iodepth POSIX threads, each in a pread/pwrite loop
 *   uring-raw  liburing directly, no library in between: the baseline for asyncfs's overhead
 *
 * Measured the same way for every engine: wall time from the first submission to the last
 * completion, per-I/O latency (submission to completion) in a preallocated log-linear
 * histogram, CPU time from getrusage (all threads), and system calls per I/O (asyncfs's own
 * counters for corio and queue, io_uring_enter calls counted here for uring-raw, 1 for the
 * synchronous engines; clock_gettime goes through the vDSO and is not a system call). For
 * corio and queue, counted_syscalls_per_io is counted independently at the library's
 * system-call table (tests/helpers/syscount.h): io_uring_enter, io_submit, lio_listio and the
 * pool's and inline path's transfers, not the waits on other calls (io_getevents, poll).
 *
 * Exit codes: 0 done, 1 an I/O or setup error, 2 bad command line, 3 the engine is not
 * available here (not built, or the kernel refuses io_uring).
 */
#define _GNU_SOURCE
#include <asyncfs.h>
#include <corio.h>

#include "syscount.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/fs.h> /* BLKGETSIZE64 */
#endif
#ifdef AFB_HAVE_URING
#include <liburing.h>
#endif

#define EXIT_USAGE 2
#define EXIT_UNAVAILABLE 3
#define MAX_IODEPTH 4096u
#define SEED 0x9e3779b97f4a7c15ull

enum rw { RW_READ, RW_WRITE, RW_RANDREAD, RW_RANDWRITE };
static const char *const rw_names[] = {"read", "write", "randread", "randwrite"};

enum engine { ENG_CORIO, ENG_QUEUE, ENG_PREAD, ENG_THREADS, ENG_URING_RAW };
static const char *const engine_names[] = {"corio", "queue", "pread", "threads", "uring-raw"};

enum offload { OFF_AUTO, OFF_ALWAYS, OFF_NEVER };
static const char *const offload_names[] = {"auto", "always", "never"};

enum fmt { FMT_NORMAL, FMT_JSON, FMT_CSV };
static const char *const fmt_names[] = {"normal", "json", "csv"};

struct opts {
    enum rw     rw;
    enum engine engine;
    enum fmt    fmt;
    uint64_t    bs, size, threshold;
    unsigned    iodepth;
    int         direct, size_set;
    double      runtime_s; /* 0: no limit */
    const char *filename;
    /* corio and queue: how asyncfs's io_uring backend is driven (ignored elsewhere). */
    enum offload offload;
    int          fixedbufs, regfiles;
    unsigned     io_workers; /* 0: the library's default */
    unsigned     threads;    /* corio: schedulers of a runtime, iodepth tasks each */
};

/* ---------------------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------------------- */

/* The file prepare_file() created, removed when the run fails: a failed run leaves nothing. */
static const char *created_path;

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    if (created_path)
        unlink(created_path);
    va_start(ap, fmt);
    fputs("afbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void cpu_times(double *user_s, double *sys_s)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru); /* every thread of the process, io_uring's io-wq included */
    *user_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys_s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* splitmix64: seeds; xorshift64*: offsets. Fixed seeds, so every run (and every engine that
 * runs on one thread) reads the same offsets in the same order of submission. */
static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t xorshift64s(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* ---------------------------------------------------------------------------------------
 * Latency histogram: log-linear (HdrHistogram-like), in nanoseconds. Values below 64 have a
 * bucket each; above, each power of two is split into 64 buckets, so a bucket is at most
 * 1/64 (1.6%) of its value wide. Fixed size: recording never allocates.
 * ------------------------------------------------------------------------------------- */

#define H_SUB_BITS 6
#define H_SUB (1u << H_SUB_BITS)
#define H_MAX_LOG2 40 /* 2^40 ns, 18 minutes: larger values land in the last bucket */
#define H_BUCKETS ((H_MAX_LOG2 - H_SUB_BITS + 1) * H_SUB + H_SUB)

struct hist {
    uint64_t count, sum_ns, min_ns, max_ns;
    uint64_t b[H_BUCKETS];
};

static unsigned h_index(uint64_t v)
{
    if (v < H_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    if (msb > H_MAX_LOG2)
        return H_BUCKETS - 1;
    unsigned shift = msb - H_SUB_BITS;
    return (shift + 1) * H_SUB + (unsigned)(v >> shift) - H_SUB;
}

/* The middle of bucket i. */
static double h_value(unsigned i)
{
    if (i < H_SUB)
        return i;
    unsigned shift = i / H_SUB - 1;
    uint64_t lo = (uint64_t)(i % H_SUB + H_SUB) << shift;
    return (double)lo + (double)((uint64_t)1 << shift) / 2.0 - 0.5;
}

static inline void h_add(struct hist *h, uint64_t v)
{
    h->count++;
    h->sum_ns += v;
    if (v < h->min_ns)
        h->min_ns = v;
    if (v > h->max_ns)
        h->max_ns = v;
    h->b[h_index(v)]++;
}

static void h_init(struct hist *h)
{
    memset(h, 0, sizeof *h);
    h->min_ns = UINT64_MAX;
}

static void h_merge(struct hist *into, const struct hist *h)
{
    into->count += h->count;
    into->sum_ns += h->sum_ns;
    if (h->min_ns < into->min_ns)
        into->min_ns = h->min_ns;
    if (h->max_ns > into->max_ns)
        into->max_ns = h->max_ns;
    for (unsigned i = 0; i < H_BUCKETS; i++)
        into->b[i] += h->b[i];
}

/* The value below which a fraction q of the samples lie, in microseconds. */
static double h_quantile_us(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            double v = h_value(i);
            /* The bucket's middle can lie outside the samples seen; clamp to them. */
            if (v > (double)h->max_ns)
                v = (double)h->max_ns;
            if (v < (double)h->min_ns)
                v = (double)h->min_ns;
            return v / 1000.0;
        }
    }
    return (double)h->max_ns / 1000.0;
}

/* ---------------------------------------------------------------------------------------
 * The job: which I/O comes next, and when to stop. Shared by all workers of an engine; the
 * counter is atomic for the threads engine (uncontended elsewhere).
 * ------------------------------------------------------------------------------------- */

struct job {
    const struct opts *o;
    int                fd;       /* pread, threads, uring-raw */
    struct afs_file   *file;     /* corio, queue */
    int                seq, write;
    uint64_t           nblocks;  /* offsets are in [0, nblocks) * bs */
    unsigned           bits;     /* the smallest power of two >= nblocks, as a bit count */
    uint64_t           budget;   /* I/Os to issue at most (UINT64_MAX: until the deadline) */
    uint64_t           deadline; /* now_ns() value; 0: none */
    atomic_uint_fast64_t issued;
    atomic_int         err;      /* the first error (negative errno), stops everyone */
    uint64_t           syscalls; /* counted by the engine, or derived from asyncfs's stats */
    const char        *backend;
    /* corio and queue: the registrations' effect and the offload rule's state. */
    uint64_t           fixed_buffer_ops, fixed_file_ops, offloaded_ops;
    struct afs_offload off;
    const char        *bufs_why, *files_why;
};

/* What one worker (a thread, or all tasks/ops of a single-threaded engine) owns. */
struct worker {
    struct job *job;
    uint64_t    rng;
    struct hist h;
};

/* The block of a random job's n-th I/O. Each pass over the file (nblocks I/Os) is a
 * permutation of its blocks, another one each pass: every block once per pass, as fio's
 * random map gives. The permutation is a bijection of the bits-bit numbers (three rounds of
 * a multiply by an odd constant, an xor-shift and the pass's key, each one-to-one), walked
 * again while it lands at nblocks or above (cycle walking: then a bijection of [0, nblocks),
 * under two steps on average). */
static inline uint64_t shuffle(const struct job *j, uint64_t n)
{
    uint64_t x = n % j->nblocks;
    if (j->bits == 0)
        return 0;
    uint64_t mask = j->bits >= 64 ? ~0ull : (1ull << j->bits) - 1;
    uint64_t key = splitmix64(SEED ^ (n / j->nblocks));
    unsigned s = (j->bits + 1) / 2;
    do {
        for (int r = 0; r < 3; r++) {
            x = (x * 0x9e3779b97f4a7c15ull) & mask;
            x ^= x >> s;
            x = (x + (key >> (r * 16))) & mask;
        }
    } while (x >= j->nblocks);
    return x;
}

/* Claims the next I/O: 1 and its offset, or 0 when the job is over (budget spent, deadline
 * passed, or an error). `now` is the caller's latest clock reading. */
static inline int claim(struct worker *w, uint64_t now, uint64_t *off)
{
    struct job *j = w->job;
    if ((j->deadline && now >= j->deadline) ||
        atomic_load_explicit(&j->err, memory_order_relaxed))
        return 0;
    uint64_t n = atomic_fetch_add_explicit(&j->issued, 1, memory_order_relaxed);
    if (n >= j->budget)
        return 0;
    uint64_t blk = j->seq ? n % j->nblocks : shuffle(j, n);
    *off = blk * j->o->bs;
    return 1;
}

/* Records a completion: 1 when it transferred the whole block, else 0 and the job stops. */
static inline int complete(struct worker *w, ssize_t res, uint64_t lat_ns)
{
    if (res == (ssize_t)w->job->o->bs) {
        h_add(&w->h, lat_ns);
        return 1;
    }
    int expected = 0;
    atomic_compare_exchange_strong(&w->job->err, &expected, res < 0 ? (int)res : -EIO);
    return 0;
}

static void worker_init(struct worker *w, struct job *j, unsigned id)
{
    w->job = j;
    w->rng = splitmix64(SEED + id) | 1;
    h_init(&w->h);
}

/* An aligned buffer filled with a pattern (what writes write; reads overwrite it). */
static void *pattern_buf(uint64_t bs, unsigned id)
{
    void *p;
    if (posix_memalign(&p, 4096, (size_t)bs))
        die(1, "out of memory for a %" PRIu64 "-byte buffer", bs);
    uint64_t s = splitmix64(id + 1);
    for (uint64_t i = 0; i < bs; i += 8) {
        uint64_t v = xorshift64s(&s);
        memcpy((char *)p + i, &v, bs - i < 8 ? (size_t)(bs - i) : 8); /* a bs not a multiple
                                                                          of 8: its tail too */
    }
    return p;
}

/* ---------------------------------------------------------------------------------------
 * Engine: pread (one thread, one I/O at a time)
 * ------------------------------------------------------------------------------------- */

static void run_pread(struct job *j, struct worker *w, void *buf)
{
    const uint64_t bs = j->o->bs;
    uint64_t t = now_ns(), off;
    while (claim(w, t, &off)) {
        ssize_t r = j->write ? pwrite(j->fd, buf, bs, (off_t)off) : pread(j->fd, buf, bs, (off_t)off);
        if (r < 0)
            r = -errno;
        uint64_t t1 = now_ns();
        if (!complete(w, r, t1 - t))
            break;
        t = t1;
        j->syscalls++;
    }
    free(buf);
}

/* ---------------------------------------------------------------------------------------
 * Engine: threads (iodepth threads, each one I/O at a time)
 * ------------------------------------------------------------------------------------- */

struct thr {
    pthread_t          tid;
    struct worker      w;
    pthread_barrier_t *ready, *start;
};

static void *thr_main(void *arg)
{
    struct thr *th = arg;
    struct job *j = th->w.job;
    const uint64_t bs = j->o->bs;
    void *buf = pattern_buf(bs, (unsigned)(th->w.rng & 0xffff));
    pthread_barrier_wait(th->ready); /* set up: the clock starts after this */
    pthread_barrier_wait(th->start);
    uint64_t t = now_ns(), off;
    while (claim(&th->w, t, &off)) {
        ssize_t r = j->write ? pwrite(j->fd, buf, bs, (off_t)off) : pread(j->fd, buf, bs, (off_t)off);
        if (r < 0)
            r = -errno;
        uint64_t t1 = now_ns();
        if (!complete(&th->w, r, t1 - t))
            break;
        t = t1;
    }
    free(buf);
    return NULL;
}

/* The threads are created and fill their buffers before the clock starts (the ready
 * barrier); the start barrier releases them together. */
struct thr_set {
    struct thr       *t;
    pthread_barrier_t ready, start;
};

static void threads_create(struct job *j, struct thr_set *ts)
{
    unsigned n = j->o->iodepth;
    ts->t = calloc(n, sizeof *ts->t);
    if (!ts->t)
        die(1, "out of memory for %u threads", n);
    pthread_barrier_init(&ts->ready, NULL, n + 1);
    pthread_barrier_init(&ts->start, NULL, n + 1);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (unsigned i = 0; i < n; i++) {
        worker_init(&ts->t[i].w, j, i);
        ts->t[i].ready = &ts->ready;
        ts->t[i].start = &ts->start;
        int e = pthread_create(&ts->t[i].tid, &attr, thr_main, &ts->t[i]);
        if (e)
            die(1, "pthread_create (thread %u of %u): %s", i + 1, n, strerror(e));
    }
    pthread_attr_destroy(&attr);
    pthread_barrier_wait(&ts->ready);
}

static void run_threads(struct job *j, struct thr_set *ts, struct worker *total)
{
    pthread_barrier_wait(&ts->start);
    for (unsigned i = 0; i < j->o->iodepth; i++) {
        pthread_join(ts->t[i].tid, NULL);
        h_merge(&total->h, &ts->t[i].w.h);
    }
    j->syscalls = total->h.count; /* one pread/pwrite per I/O */
    pthread_barrier_destroy(&ts->ready);
    pthread_barrier_destroy(&ts->start);
    free(ts->t);
}

/* ---------------------------------------------------------------------------------------
 * Engine: uring-raw (liburing, iodepth in flight, one io_uring_enter per batch)
 * ------------------------------------------------------------------------------------- */

#ifdef AFB_HAVE_URING
struct uring_slot {
    void    *buf;
    uint64_t t0;
};

static void uring_prep(struct io_uring *ring, struct job *j, struct uring_slot *s, uint64_t off)
{
    /* At most iodepth SQEs are unsubmitted at once and the SQ has at least iodepth entries. */
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe)
        die(1, "uring-raw: submission queue full (a bug in afbench)");
    if (j->write)
        io_uring_prep_write(sqe, j->fd, s->buf, (unsigned)j->o->bs, off);
    else
        io_uring_prep_read(sqe, j->fd, s->buf, (unsigned)j->o->bs, off);
    io_uring_sqe_set_data(sqe, s);
}

/* Before the clock: the slots and their buffers. */
static struct uring_slot *uring_prepare(struct job *j)
{
    unsigned n = j->o->iodepth;
    struct uring_slot *slots = calloc(n, sizeof *slots);
    if (!slots)
        die(1, "out of memory");
    for (unsigned i = 0; i < n; i++)
        slots[i].buf = pattern_buf(j->o->bs, i);
    return slots;
}

static void run_uring(struct job *j, struct worker *w, struct io_uring *ring,
                      struct uring_slot *slots)
{
    unsigned n = j->o->iodepth, inflight = 0;
    uint64_t t = now_ns(), off;
    for (unsigned i = 0; i < n && claim(w, t, &off); i++) {
        slots[i].t0 = t;
        uring_prep(ring, j, &slots[i], off);
        inflight++;
    }
    while (inflight > 0) {
        /* With wait_nr 1 liburing always enters the kernel: one system call per loop. */
        int r = io_uring_submit_and_wait(ring, 1);
        j->syscalls++;
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY)
            die(1, "io_uring_submit_and_wait: %s", strerror(-r));
        unsigned head, seen = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(ring, head, cqe) {
            seen++;
            inflight--;
            struct uring_slot *s = io_uring_cqe_get_data(cqe);
            uint64_t t1 = now_ns();
            if (!complete(w, cqe->res, t1 - s->t0))
                continue;
            if (claim(w, t1, &off)) {
                s->t0 = t1;
                uring_prep(ring, j, s, off);
                inflight++;
            }
        }
        io_uring_cq_advance(ring, seen);
    }
    for (unsigned i = 0; i < n; i++)
        free(slots[i].buf);
    free(slots);
}
#endif

/* ---------------------------------------------------------------------------------------
 * Engine: queue (the op API, iodepth ops refilled from their callbacks)
 * ------------------------------------------------------------------------------------- */

struct q_op {
    struct afs_op  op;
    struct worker *w;
    void          *buf;
    uint64_t       t0;
    unsigned      *inflight;
};

static int q_issue(struct q_op *q, uint64_t t, uint64_t off);

static void q_cb(struct afs_op *op)
{
    struct q_op *q = (struct q_op *)op;
    uint64_t t1 = now_ns(), off;
    --*q->inflight;
    if (complete(q->w, op->result, t1 - q->t0) && claim(q->w, t1, &off))
        q_issue(q, t1, off);
}

static int q_issue(struct q_op *q, uint64_t t, uint64_t off)
{
    struct job *j = q->w->job;
    q->t0 = t;
    int e = j->write ? afs_queue_write(&q->op, j->file, q->buf, j->o->bs, off, q_cb, NULL)
                     : afs_queue_read(&q->op, j->file, q->buf, j->o->bs, off, q_cb, NULL);
    if (e < 0) {
        int expected = 0;
        atomic_compare_exchange_strong(&j->err, &expected, e);
        return e;
    }
    ++*q->inflight;
    return 0;
}

/* --fixedbufs: the I/O buffers become the context's registered buffers (one range each). */
static void register_bufs(struct job *j, struct afs_ctx *ctx, void *const *bufs, unsigned n)
{
    struct iovec *iov = calloc(n, sizeof *iov);
    if (!iov)
        die(1, "out of memory");
    for (unsigned i = 0; i < n; i++)
        iov[i] = (struct iovec){bufs[i], (size_t)j->o->bs};
    int e = afs_ctx_register_buffers(ctx, iov, n);
    free(iov);
    if (e < 0)
        die(1, "afs_ctx_register_buffers: %s", afs_strerror(e));
    struct afs_registration info;
    afs_ctx_registration(ctx, &info);
    if (info.buffers_why)
        fprintf(stderr, "afbench: --fixedbufs: plain buffers: %s\n", info.buffers_why);
}

/* Before the clock: the ops, their buffers and their registration. */
static struct q_op *queue_prepare(struct job *j, struct worker *w, struct afs_ctx *ctx)
{
    unsigned n = j->o->iodepth;
    struct q_op *qs = calloc(n, sizeof *qs);
    if (!qs)
        die(1, "out of memory");
    for (unsigned i = 0; i < n; i++) {
        qs[i].w = w;
        qs[i].buf = pattern_buf(j->o->bs, i);
    }
    if (j->o->fixedbufs) {
        void **bufs = malloc(n * sizeof *bufs);
        if (!bufs)
            die(1, "out of memory");
        for (unsigned i = 0; i < n; i++)
            bufs[i] = qs[i].buf;
        register_bufs(j, ctx, bufs, n);
        free(bufs);
    }
    return qs;
}

static void run_queue(struct job *j, struct worker *w, struct afs_ctx *ctx, struct q_op *qs)
{
    unsigned n = j->o->iodepth, inflight = 0;
    for (unsigned i = 0; i < n; i++)
        qs[i].inflight = &inflight;
    uint64_t t = now_ns(), off;
    for (unsigned i = 0; i < n && claim(w, t, &off); i++)
        if (q_issue(&qs[i], t, off) < 0)
            break;
    while (inflight > 0) {
        int r = afs_ctx_wait(ctx, 1, -1);
        if (r < 0)
            die(1, "afs_ctx_wait: %s", afs_strerror(r));
    }
    for (unsigned i = 0; i < n; i++)
        free(qs[i].buf);
    free(qs);
}

/* ---------------------------------------------------------------------------------------
 * Engine: corio (iodepth tasks calling the blocking positional calls)
 * ------------------------------------------------------------------------------------- */

struct co_task {
    struct worker   *w; /* shared: all tasks run on this thread */
    void            *buf;
    struct afs_file *file; /* NULL: the job's */
};

struct co_root_arg {
    struct co_task *tasks;
    unsigned        n;
};

static void co_io(struct corio_task *t, void *arg)
{
    struct co_task *ct = arg;
    struct job *j = ct->w->job;
    const uint64_t bs = j->o->bs;
    uint64_t t0 = now_ns(), off;
    while (claim(ct->w, t0, &off)) {
        struct afs_file *f = ct->file ? ct->file : j->file;
        ssize_t r = j->write ? afs_pwrite(f, ct->buf, bs, off) : afs_pread(f, ct->buf, bs, off);
        uint64_t t1 = now_ns();
        if (!complete(ct->w, r, t1 - t0))
            break;
        t0 = t1;
    }
}

static void co_root(struct corio_task *t, void *arg)
{
    struct co_root_arg *a = arg;
    /* Each spawn runs the task until its first I/O suspends it: the first phase queues
     * iodepth I/Os, and they reach the kernel together. */
    for (unsigned i = 0; i < a->n; i++) {
        int e = corio_spawn(t, co_io, &a->tasks[i], NULL);
        if (e)
            die(1, "corio_spawn (task %u of %u): %s", i + 1, a->n, afs_strerror(e));
    }
}

/* --threads=N: the corio engine on a runtime of N schedulers (one thread and one context
 * each), each opening the file on its own context and running iodepth tasks: N x iodepth
 * I/Os in flight, as with fio's numjobs, but sharing one job's I/Os. The schedulers'
 * threads start inside the timed run. */
struct rt_part {
    const struct opts *o;
    struct job        *j;
    struct worker      w;
    struct afs_stats   s0, s1;
};

static int rt_part_run(struct corio_task *t, void *arg)
{
    struct rt_part *p = arg;
    struct job *j = p->j;
    struct afs_ctx *ctx = corio_sched_ctx(corio_task_sched(t));
    int flags = (j->write ? AFS_WRONLY : AFS_RDONLY) | (p->o->direct ? AFS_DIRECT : 0);
    struct afs_file *f;
    int e = afs_open(ctx, p->o->filename, flags, 0, AFS_MODE_SYNC, &f);
    if (e) {
        int expected = 0;
        atomic_compare_exchange_strong(&j->err, &expected, e);
        return e;
    }
    if (corio_sched_index(corio_task_sched(t)) == 0)
        j->backend = afs_ctx_backend(ctx);
    afs_ctx_stats(ctx, &p->s0);
    unsigned n = p->o->iodepth;
    struct co_task *co = calloc(n, sizeof *co);
    if (!co)
        die(1, "out of memory");
    for (unsigned i = 0; i < n; i++) {
        co[i] = (struct co_task){&p->w, pattern_buf(p->o->bs, i), f};
        if ((e = corio_spawn(t, co_io, &co[i], NULL)))
            die(1, "corio_spawn: %s", afs_strerror(e));
    }
    corio_wait(t);
    afs_ctx_stats(ctx, &p->s1);
    if (corio_sched_index(corio_task_sched(t)) == 0)
        afs_ctx_offload(ctx, &j->off); /* the first scheduler's rule speaks for all */
    for (unsigned i = 0; i < n; i++)
        free(co[i].buf);
    free(co);
    afs_close(f);
    return 0;
}

static void rt_root(struct corio_task *t, void *arg)
{
    struct rt_part *parts = arg;
    for (unsigned i = 0; i < parts[0].o->threads; i++)
        if (corio_spawn_on(t, (int)i, rt_part_run, &parts[i], NULL))
            die(1, "corio_spawn_on: out of memory");
    corio_wait(t);
}

static void run_corio_rt(const struct opts *o, struct job *j, struct worker *w)
{
    struct corio_rt_config cfg;
    corio_rt_config_default(&cfg);
    cfg.schedulers = o->threads;
    cfg.sched.stack_size = 64 * 1024;
    cfg.ctx.sync_threshold = (size_t)o->threshold;
    if (o->iodepth > cfg.ctx.queue_depth)
        cfg.ctx.queue_depth = o->iodepth;
    cfg.ctx.flags |= o->offload == OFF_ALWAYS  ? AFS_CTX_OFFLOAD_DIRECT
                     : o->offload == OFF_NEVER ? AFS_CTX_INLINE_DIRECT
                                               : 0;
    cfg.ctx.io_workers = o->io_workers;
    struct corio_rt *rt;
    int e = corio_rt_new(&rt, &cfg);
    if (e)
        die(1, "corio_rt_new: %s", afs_strerror(e));
    struct rt_part *parts = calloc(o->threads, sizeof *parts);
    if (!parts)
        die(1, "out of memory");
    for (unsigned i = 0; i < o->threads; i++) {
        parts[i].o = o;
        parts[i].j = j;
        worker_init(&parts[i].w, j, i + 1);
    }
    if ((e = corio_rt_run(rt, rt_root, parts))) {
        /* The schedulers make their contexts on their own threads, where the library keeps
         * its reason; the variable that chose the backend is the likely one. */
        const char *env = getenv("ASYNCFS_BACKEND");
        if (env && *env)
            die(e == -ENOTSUP ? EXIT_UNAVAILABLE : 1, "corio_rt_run: %s (ASYNCFS_BACKEND=%s)",
                afs_strerror(e), env);
        die(e == -ENOTSUP ? EXIT_UNAVAILABLE : 1, "corio_rt_run: %s", afs_strerror(e));
    }
    for (unsigned i = 0; i < o->threads; i++) {
        h_merge(&w->h, &parts[i].w.h);
        const struct afs_stats *a = &parts[i].s0, *b = &parts[i].s1;
        j->syscalls += (b->kernel_submits - a->kernel_submits) +
                       (b->kernel_waits - a->kernel_waits) + (b->inline_ops - a->inline_ops) +
                       (b->pool_ops - a->pool_ops);
        j->offloaded_ops += b->offloaded_ops - a->offloaded_ops;
    }
    free(parts);
    corio_rt_free(rt);
}

/* ---------------------------------------------------------------------------------------
 * The file: opened, created or extended, sized
 * ------------------------------------------------------------------------------------- */

static int64_t fd_size(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
#ifdef BLKGETSIZE64
    if (S_ISBLK(st.st_mode)) {
        uint64_t n;
        if (ioctl(fd, BLKGETSIZE64, &n) < 0)
            return -errno;
        return (int64_t)n;
    }
#endif
    return st.st_size;
}

static void human_bytes(char *out, size_t n, double v)
{
    static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    unsigned i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(out, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

/* Makes sure the file exists and, for reads, holds at least o->size bytes of data (written
 * here, and said so on stderr: the first run pays for the layout). Writes need no data; the
 * file is created when missing. Returns the file's size. */
static uint64_t prepare_file(struct opts *o, int write)
{
    struct stat st;
    int created = 0;
    if (stat(o->filename, &st) < 0) {
        if (errno != ENOENT) /* ENOTDIR, ELOOP, EACCES...: st says nothing */
            die(1, "%s: %s", o->filename, strerror(errno));
        created = 1;
    }
    if (created && !o->size_set)
        die(EXIT_USAGE, "%s does not exist: give --size to create it", o->filename);
    /* A FIFO would block the engine's open (or never hold data to read), a character device
     * cannot be read back or synced, a directory has no data: none is a file to measure. */
    if (!created && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        die(EXIT_USAGE, "%s is %s, not a regular file or block device", o->filename,
            S_ISDIR(st.st_mode)    ? "a directory"
            : S_ISFIFO(st.st_mode) ? "a FIFO"
            : S_ISCHR(st.st_mode)  ? "a character device"
                                   : "a special file");
    int fd = open(o->filename, O_RDWR | O_CLOEXEC | (created ? O_CREAT | O_EXCL : 0), 0644);
    int read_only = 0;
    if (fd < 0 && (errno == EACCES || errno == EROFS || errno == EPERM || errno == ETXTBSY) &&
        !write && !created) { /* not writable here (mode, read-only mount, immutable) */
        fd = open(o->filename, O_RDONLY | O_CLOEXEC);
        read_only = fd >= 0;
    }
    if (fd < 0)
        die(1, "%s: %s", o->filename, strerror(errno));
    if (created)
        created_path = o->filename;
    int64_t have = fd_size(fd);
    if (have < 0)
        die(1, "%s: %s", o->filename, strerror((int)-have));
    if (!o->size_set) {
        if (have == 0)
            die(EXIT_USAGE, "%s is empty: give --size", o->filename);
        o->size = (uint64_t)have;
    }
    if (created)
        fprintf(stderr, "afbench: %s: created\n", o->filename);
    fstat(fd, &st);
    if (S_ISBLK(st.st_mode) && (uint64_t)have < o->size) /* reads and writes alike */
        die(1, "%s: the device holds %" PRId64 " bytes, fewer than --size", o->filename, have);
    if (!write && (uint64_t)have < o->size) {
        if (read_only)
            die(1, "%s: Permission denied: the file is read-only here and holds %" PRId64
                " bytes, fewer than --size to read", o->filename, have);
        char a[32], b[32];
        human_bytes(a, sizeof a, (double)have);
        human_bytes(b, sizeof b, (double)o->size);
        fprintf(stderr, "afbench: %s: writing data up to --size for reads (%s -> %s)\n",
                o->filename, a, b);
        const size_t chunk = 1 << 20;
        void *buf = pattern_buf(chunk, 7);
        for (uint64_t off = (uint64_t)have; off < o->size;) {
            size_t n = o->size - off < chunk ? (size_t)(o->size - off) : chunk;
            ssize_t r = pwrite(fd, buf, n, (off_t)off);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                die(1, "%s: writing the data to read: %s", o->filename,
                    r < 0 ? strerror(errno) : "no progress");
            off += (uint64_t)r;
        }
        free(buf);
        if (fsync(fd) < 0)
            die(1, "%s: fsync: %s", o->filename, strerror(errno));
        have = (int64_t)o->size;
    }
    close(fd);
    return (uint64_t)have;
}

/* ---------------------------------------------------------------------------------------
 * Command line
 * ------------------------------------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out,
"usage: afbench --filename=PATH [options]\n"
"  --engine=corio|queue|pread|threads|uring-raw   (default corio)\n"
"  --rw=read|write|randread|randwrite             (default randread)\n"
"  --bs=SIZE          block size, k/m/g suffixes, powers of 1024 (default 4k)\n"
"  --iodepth=N        I/Os in flight, 1..%u (default 1; pread ignores it)\n"
"  --size=SIZE        bytes of the file to use (default: the file's size; a last partial\n"
"                     block is left out). Sequential jobs stop after SIZE bytes; random\n"
"                     jobs without --runtime do SIZE/bs I/Os, each block once, in an order\n"
"                     that changes at each pass over the file (as fio's random map)\n"
"  --runtime=SECONDS  time limit (s, ms, m suffixes); random jobs run this long (fio's\n"
"                     time_based), sequential ones stop earlier once SIZE is done.\n"
"                     0: no limit (default)\n"
"  --direct=0|1       O_DIRECT (default 0)\n"
"  --threshold=SIZE   corio: afs_config.sync_threshold (default 0: every I/O batched)\n"
"  corio and queue on io_uring:\n"
"  --offload=auto|always|never  direct I/O issued by the kernel's workers (IOSQE_ASYNC):\n"
"                     as measured at run time (default), always, or never (issued inline)\n"
"  --fixedbufs        register the I/O buffers (afs_ctx_register_buffers: READ_FIXED...)\n"
"  --registerfiles    register the file (afs_ctx_register_files; needs --direct=1)\n"
"  --io-workers=N     cap the kernel's I/O workers (afs_config.io_workers; 0 = default)\n"
"  --threads=N        corio: N schedulers on N threads (a corio runtime), each with its own\n"
"                     context, file handle and iodepth tasks (default 1); they share the\n"
"                     job's I/Os (fio's numjobs gives each job its own SIZE)\n"
"  --filename=PATH    the file; for reads it is created or extended to SIZE (said on stderr)\n"
"  --output-format=normal|json|csv\n"
"Exit codes: 0 done, 1 I/O or setup error, 2 bad command line, 3 engine not available.\n",
            MAX_IODEPTH);
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s || *s == '-' || *s == '+')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* "4096", "4k", "4K", "4kb", "4KiB", "1m", "1g", "1t": powers of 1024 in every form (fio's
 * default, kb_base=1024, takes "KiB" as 1000 and "k" as 1024). */
static int parse_size(const char *s, uint64_t *out)
{
    if (!*s || *s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    unsigned shift = 0;
    if (*end) {
        switch (*end | 0x20) {
        case 'k': shift = 10; break;
        case 'm': shift = 20; break;
        case 'g': shift = 30; break;
        case 't': shift = 40; break;
        case 'b': shift = 0; break;
        default: return -1;
        }
        end++;
        if (shift && (!strcasecmp(end, "b") || !strcasecmp(end, "ib")))
            end += strlen(end);
        if (*end)
            return -1;
    }
    if (shift && v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0))
        return -1;
    if (!strcmp(end, "ms"))
        v /= 1000;
    else if (!strcmp(end, "m"))
        v *= 60;
    else if (!strcmp(end, "h"))
        v *= 3600;
    else if (*end && strcmp(end, "s"))
        return -1;
    /* Checked in seconds, after the unit: the deadline is a 64-bit count of nanoseconds. */
    if (!(v <= 1e7))
        return -1;
    *out = v;
    return 0;
}

static int pick(const char *v, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i]))
            return i;
    return -1;
}

static void bad(const char *opt, const char *val, const char *want)
{
    die(EXIT_USAGE, "--%s: '%s' is not %s (see --help)", opt, val, want);
}

/* Whether name (after '-' for '_') is an option that takes a value. */
static bool known_option(const char *name)
{
    static const char *const names[] = {
        "rw", "readwrite", "engine", "ioengine", "output-format", "bs", "size", "threshold",
        "iodepth", "runtime", "direct", "offload", "threads", "io-workers", "filename"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i]))
            return true;
    return false;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.rw = RW_RANDREAD, .engine = ENG_CORIO, .bs = 4096, .iodepth = 1,
                       .threads = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2))
            die(EXIT_USAGE, "unexpected argument '%s' (options are --name=value; see --help)",
                a);
        char name[32];
        const char *eq = strchr(a + 2, '='), *val;
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (len >= sizeof name)
            die(EXIT_USAGE, "unknown option '%s' (see --help)", a);
        memcpy(name, a + 2, len);
        name[len] = 0;
        for (char *p = name; *p; p++) /* fio spells some options with '_' */
            if (*p == '_')
                *p = '-';
        if (eq)
            val = eq + 1;
        else if (!strcmp(name, "fixedbufs") || !strcmp(name, "registerfiles"))
            val = "1"; /* fio's spelling: a bare switch */
        else if (!known_option(name))
            die(EXIT_USAGE, "unknown option '%s' (see --help)", a);
        else if (i + 1 < argc)
            val = argv[++i];
        else
            die(EXIT_USAGE, "option '--%s' needs a value (see --help)", name);
        uint64_t u;
        int k;
        if (!strcmp(name, "rw") || !strcmp(name, "readwrite")) {
            if ((k = pick(val, rw_names, 4)) < 0)
                bad(name, val, "one of read, write, randread, randwrite");
            o->rw = (enum rw)k;
        } else if (!strcmp(name, "engine") || !strcmp(name, "ioengine")) {
            if ((k = pick(val, engine_names, 5)) < 0)
                bad(name, val, "one of corio, queue, pread, threads, uring-raw");
            o->engine = (enum engine)k;
        } else if (!strcmp(name, "output-format")) {
            if ((k = pick(val, fmt_names, 3)) < 0)
                bad(name, val, "one of normal, json, csv");
            o->fmt = (enum fmt)k;
        } else if (!strcmp(name, "bs")) {
            if (parse_size(val, &o->bs) || o->bs == 0 || o->bs > (1u << 30))
                bad(name, val, "a block size between 1 and 1g (e.g. 4k, 1m)");
        } else if (!strcmp(name, "size")) {
            if (parse_size(val, &o->size) || o->size == 0 || o->size > INT64_MAX)
                bad(name, val, "a size (e.g. 4m, 1g)");
            o->size_set = 1;
        } else if (!strcmp(name, "threshold")) {
            if (parse_size(val, &o->threshold))
                bad(name, val, "a size (e.g. 0, 4k)");
        } else if (!strcmp(name, "iodepth")) {
            if (parse_u64(val, &u) || u < 1 || u > MAX_IODEPTH)
                bad(name, val, "a queue depth from 1 to 4096");
            o->iodepth = (unsigned)u;
        } else if (!strcmp(name, "runtime")) {
            if (parse_seconds(val, &o->runtime_s))
                bad(name, val, "a number of seconds up to 10000000 (e.g. 3, 500ms, 2m)");
        } else if (!strcmp(name, "direct")) {
            if (strcmp(val, "0") && strcmp(val, "1"))
                bad(name, val, "0 or 1");
            o->direct = val[0] == '1';
        } else if (!strcmp(name, "offload")) {
            if ((k = pick(val, offload_names, 3)) < 0)
                bad(name, val, "one of auto, always, never");
            o->offload = (enum offload)k;
        } else if (!strcmp(name, "fixedbufs") || !strcmp(name, "registerfiles")) {
            if (strcmp(val, "0") && strcmp(val, "1"))
                bad(name, val, "0 or 1");
            *(name[0] == 'f' ? &o->fixedbufs : &o->regfiles) = val[0] == '1';
        } else if (!strcmp(name, "threads")) {
            if (parse_u64(val, &u) || u < 1 || u > 4096)
                bad(name, val, "a number of schedulers from 1 to 4096");
            o->threads = (unsigned)u;
        } else if (!strcmp(name, "io-workers")) {
            if (parse_u64(val, &u) || u > 65536)
                bad(name, val, "a number of workers (0 = default)");
            o->io_workers = (unsigned)u;
        } else if (!strcmp(name, "filename")) {
            if (!*val)
                bad(name, val, "a path");
            o->filename = val;
        } else {
            die(EXIT_USAGE, "unknown option '%s' (see --help)", a);
        }
    }
    if (!o->filename)
        die(EXIT_USAGE, "--filename=PATH is required (see --help)");
    if (o->direct && o->bs % 512)
        die(EXIT_USAGE, "--bs=%" PRIu64 " with --direct=1: O_DIRECT needs a multiple of the "
            "device's block size (512 or 4096)", o->bs);
    if (o->size_set && o->size < o->bs)
        die(EXIT_USAGE, "--size (%" PRIu64 ") is smaller than --bs (%" PRIu64 ")", o->size,
            o->bs);
    if (o->engine == ENG_URING_RAW && o->bs > UINT_MAX)
        die(EXIT_USAGE, "--bs: uring-raw takes blocks below 4g");
    /* Every I/O in flight has its own buffer, filled before the run: refuse what cannot fit
     * in memory before allocating any, rather than meet the OOM killer halfway. */
    uint64_t nbufs = o->engine == ENG_PREAD ? 1 : (uint64_t)o->iodepth * o->threads;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0 && o->bs > (uint64_t)pages * (uint64_t)page / nbufs) {
        char need[32], have[32];
        human_bytes(need, sizeof need, (double)o->bs * (double)nbufs);
        human_bytes(have, sizeof have, (double)pages * (double)page);
        die(EXIT_USAGE, "--bs=%" PRIu64 " x --iodepth=%u%s needs %s of buffers, more than the "
            "%s of memory here", o->bs, o->iodepth, o->threads > 1 ? " x --threads" : "",
            need, have);
    }
}

/* ---------------------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------------------- */

struct result {
    uint64_t ios;
    double   runtime_s, iops, bw, cpu_us_per_io, user_s, sys_s, syscalls_per_io;
    double   counted_per_io; /* -1: the engine does not go through the library */
    double   p50, p90, p99, p999, mean_us, min_us, max_us;
};

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void print_result(const struct opts *o, const struct job *j, const struct result *r)
{
    const char *eng = engine_names[o->engine], *rw = rw_names[o->rw];
    if (o->fmt == FMT_JSON) {
        printf("{\"engine\":\"%s\",\"rw\":\"%s\",\"bs\":%" PRIu64 ",\"iodepth\":%u,"
               "\"direct\":%d,\"size\":%" PRIu64 ",\"filename\":",
               eng, rw, o->bs, o->engine == ENG_PREAD ? 1 : o->iodepth, o->direct, o->size);
        json_string(o->filename);
        printf(",\"backend\":\"%s\",\"threads\":%u", j->backend, o->threads);
        if (o->engine == ENG_CORIO)
            printf(",\"sync_threshold\":%" PRIu64, o->threshold);
        if (o->engine == ENG_CORIO || o->engine == ENG_QUEUE)
            printf(",\"offload\":\"%s\",\"fixedbufs\":%d,\"registerfiles\":%d,"
                   "\"io_workers\":%u,\"fixed_buffer_ops\":%" PRIu64 ",\"fixed_file_ops\":%"
                   PRIu64 ",\"offloaded_ops\":%" PRIu64 ",\"offloading\":%d,"
                   "\"offload_samples\":%u,\"inline_rate\":%" PRIu64 ",\"offload_rate\":%"
                   PRIu64 ",\"inline_cpu_ns\":%" PRIu64 ",\"offload_cpu_ns\":%" PRIu64
                   ",\"io_workers_cap\":%u",
                   offload_names[o->offload], o->fixedbufs, o->regfiles, o->io_workers,
                   j->fixed_buffer_ops, j->fixed_file_ops, j->offloaded_ops, j->off.offloading,
                   j->off.samples, j->off.inline_rate, j->off.offload_rate,
                   j->off.inline_cpu_ns, j->off.offload_cpu_ns, j->off.io_workers);
        printf(",\"ios\":%" PRIu64 ",\"runtime_s\":%.6f,\"iops\":%.1f,\"bw_bytes_per_s\":%.0f,"
               "\"latency_us\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"p99.9\":%.2f,"
               "\"mean\":%.2f,\"min\":%.2f,\"max\":%.2f},"
               "\"cpu_us_per_io\":%.3f,\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,"
               "\"syscalls_per_io\":%.4f",
               r->ios, r->runtime_s, r->iops, r->bw, r->p50, r->p90, r->p99, r->p999,
               r->mean_us, r->min_us, r->max_us, r->cpu_us_per_io, r->user_s, r->sys_s,
               r->syscalls_per_io);
        if (r->counted_per_io >= 0)
            printf(",\"counted_syscalls_per_io\":%.4f", r->counted_per_io);
        printf("}\n");
    } else if (o->fmt == FMT_CSV) {
        printf("engine,rw,bs,iodepth,direct,backend,ios,runtime_s,iops,bw_bytes_per_s,"
               "lat_p50_us,lat_p90_us,lat_p99_us,lat_p999_us,lat_mean_us,lat_max_us,"
               "cpu_us_per_io,syscalls_per_io,counted_syscalls_per_io,threads\n");
        printf("%s,%s,%" PRIu64 ",%u,%d,%s,%" PRIu64 ",%.6f,%.1f,%.0f,%.2f,%.2f,%.2f,%.2f,"
               "%.2f,%.2f,%.3f,%.4f,",
               eng, rw, o->bs, o->engine == ENG_PREAD ? 1 : o->iodepth, o->direct, j->backend,
               r->ios, r->runtime_s, r->iops, r->bw, r->p50, r->p90, r->p99, r->p999,
               r->mean_us, r->max_us, r->cpu_us_per_io, r->syscalls_per_io);
        if (r->counted_per_io >= 0)
            printf("%.4f", r->counted_per_io);
        printf(",%u\n", o->threads);
    } else {
        char bw[32], sz[32];
        human_bytes(bw, sizeof bw, r->bw);
        human_bytes(sz, sizeof sz, (double)o->size);
        printf("afbench: %s, %s, bs=%" PRIu64 ", iodepth=%u%s%s, %s, %s (%s)\n", eng, rw, o->bs,
               o->iodepth, o->engine == ENG_PREAD ? " (ignored)" : "",
               o->threads > 1 ? " per scheduler, threads>1" : "",
               o->direct ? "O_DIRECT" : "buffered", o->filename, sz);
        if (o->engine == ENG_CORIO || o->engine == ENG_QUEUE) {
            printf("  asyncfs backend %s%s\n", j->backend,
                   o->engine == ENG_CORIO ? (o->threshold ? ", sync_threshold set" : ", "
                                                           "sync_threshold 0")
                                          : "");
            printf("  offload=%s: chose %s; %" PRIu64 " offloaded, %" PRIu64
                   " fixed-buffer and %" PRIu64 " fixed-file ops; io-wq cap %u\n",
                   offload_names[o->offload], j->off.offloading ? "offloading" : "inline",
                   j->offloaded_ops, j->fixed_buffer_ops, j->fixed_file_ops, j->off.io_workers);
            if (j->off.samples)
                printf("  measured over %u windows%s: inline %" PRIu64 " ops/s at %.2f us "
                       "CPU/op, offloaded %" PRIu64 " ops/s at %.2f us CPU/op\n", j->off.samples,
                       o->threads > 1 ? " (first scheduler)" : "",
                       j->off.inline_rate, j->off.inline_cpu_ns / 1000.0, j->off.offload_rate,
                       j->off.offload_cpu_ns / 1000.0);
        }
        printf("  %" PRIu64 " I/Os in %.3f s: %.0f IOPS, %s/s\n", r->ios, r->runtime_s, r->iops,
               bw);
        printf("  latency (us): p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  (mean %.1f, max "
               "%.1f)\n", r->p50, r->p90, r->p99, r->p999, r->mean_us, r->max_us);
        printf("  CPU %.2f us/IO (user %.2f s, sys %.2f s), %.3f syscalls/IO",
               r->cpu_us_per_io, r->user_s, r->sys_s, r->syscalls_per_io);
        if (r->counted_per_io >= 0)
            printf(" (%.3f counted at the system-call table)", r->counted_per_io);
        printf("\n");
    }
}

/* ---------------------------------------------------------------------------------------
 * main: set up the engine (untimed), run it (timed), report
 * ------------------------------------------------------------------------------------- */

static void asyncfs_setup(const struct opts *o, struct job *j, struct afs_ctx **ctx)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.sync_threshold = o->engine == ENG_CORIO ? (size_t)o->threshold : cfg.sync_threshold;
    if (o->iodepth > cfg.queue_depth)
        cfg.queue_depth = o->iodepth;
    cfg.flags |= o->offload == OFF_ALWAYS  ? AFS_CTX_OFFLOAD_DIRECT
                 : o->offload == OFF_NEVER ? AFS_CTX_INLINE_DIRECT
                                           : 0;
    cfg.io_workers = o->io_workers;
    int e = afs_ctx_new(ctx, &cfg);
    if (e)
        die(e == -ENOTSUP ? EXIT_UNAVAILABLE : 1, "afs_ctx_new: %s%s%s", afs_strerror(e),
            afs_last_ctx_error() ? ": " : "", afs_last_ctx_error() ? afs_last_ctx_error() : "");
    j->backend = afs_ctx_backend(*ctx);
    const char *why = afs_ctx_fallback_reason(*ctx);
    if (why)
        fprintf(stderr, "afbench: asyncfs fell back to %s: %s\n", j->backend, why);
    int flags = (j->write ? AFS_WRONLY : AFS_RDONLY) | (o->direct ? AFS_DIRECT : 0);
    if ((e = afs_open(*ctx, o->filename, flags, 0, AFS_MODE_SYNC, &j->file)))
        die(1, "%s: %s%s", o->filename, afs_strerror(e),
            e == -EINVAL && o->direct ? " (does the file system support O_DIRECT?)" : "");
    if (o->regfiles) {
        if (!o->direct)
            fprintf(stderr, "afbench: --registerfiles: only AFS_DIRECT files get a slot\n");
        if ((e = afs_ctx_register_files(*ctx, 1)) < 0)
            die(1, "afs_ctx_register_files: %s", afs_strerror(e));
        struct afs_registration info;
        afs_ctx_registration(*ctx, &info);
        if (info.files_why)
            fprintf(stderr, "afbench: --registerfiles: plain descriptors: %s\n",
                    info.files_why);
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    parse_args(argc, argv, &o);
    struct job j = {.o = &o, .fd = -1, .backend = "none"};
    j.seq = o.rw == RW_READ || o.rw == RW_WRITE;
    j.write = o.rw == RW_WRITE || o.rw == RW_RANDWRITE;
    prepare_file(&o, j.write);
    j.nblocks = o.size / o.bs;
    if (j.nblocks == 0)
        die(EXIT_USAGE, "%s: %s (%" PRIu64 " bytes) holds no block of --bs=%" PRIu64,
            o.filename, o.size_set ? "--size" : "the file", o.size, o.bs);
    while (j.bits < 64 && (1ull << j.bits) < j.nblocks)
        j.bits++;
    /* A sequential job covers --size once; a random one does as many I/Os (each block once),
     * unless a --runtime is given: then it runs for that long (fio's time_based). */
    j.budget = (!j.seq && o.runtime_s > 0) ? UINT64_MAX : j.nblocks;

    struct worker w;
    worker_init(&w, &j, 0);
    struct afs_ctx *ctx = NULL;
    struct corio_sched *sched = NULL;
    struct co_task *co = NULL;
    struct thr_set ts;
    struct q_op *qs = NULL;  /* queue: its ops, made before the clock */
    void *pread_buf = NULL;  /* pread: its buffer, made before the clock */
#ifdef AFB_HAVE_URING
    struct io_uring ring;
    struct uring_slot *slots = NULL; /* uring-raw: its slots, made before the clock */
#endif

    int rt_mode = o.threads > 1;
    if (rt_mode && (o.engine != ENG_CORIO || o.fixedbufs || o.regfiles))
        die(EXIT_USAGE, "--threads needs --engine=corio (without --fixedbufs/--registerfiles)");
    if (rt_mode) {
        /* run_corio_rt: each scheduler makes its context and opens the file. */
    } else if (o.engine == ENG_CORIO || o.engine == ENG_QUEUE) {
        asyncfs_setup(&o, &j, &ctx);
    } else {
        int flags = (j.write ? O_WRONLY : O_RDONLY) | O_CLOEXEC | (o.direct ? O_DIRECT : 0);
        j.fd = open(o.filename, flags);
        if (j.fd < 0)
            die(1, "%s: %s%s", o.filename, strerror(errno),
                errno == EINVAL && o.direct ? " (does the file system support O_DIRECT?)" : "");
        j.backend = o.engine == ENG_URING_RAW ? "io_uring" : "sync";
    }
    if (o.engine == ENG_CORIO && !rt_mode) {
        struct corio_config cfg;
        corio_config_default(&cfg);
        cfg.ctx = ctx;
        cfg.stack_size = 64 * 1024;
        int e = corio_sched_new(&sched, &cfg);
        if (e)
            die(1, "corio_sched_new: %s", afs_strerror(e));
        co = calloc(o.iodepth, sizeof *co);
        if (!co)
            die(1, "out of memory");
        for (unsigned i = 0; i < o.iodepth; i++)
            co[i] = (struct co_task){&w, pattern_buf(o.bs, i), NULL};
        if (o.fixedbufs) {
            void **bufs = malloc(o.iodepth * sizeof *bufs);
            if (!bufs)
                die(1, "out of memory");
            for (unsigned i = 0; i < o.iodepth; i++)
                bufs[i] = co[i].buf;
            register_bufs(&j, ctx, bufs, o.iodepth);
            free(bufs);
        }
    } else if (o.engine == ENG_THREADS) {
        threads_create(&j, &ts);
    } else if (o.engine == ENG_QUEUE) {
        qs = queue_prepare(&j, &w, ctx);
    } else if (o.engine == ENG_PREAD) {
        pread_buf = pattern_buf(o.bs, 0);
    } else if (o.engine == ENG_URING_RAW) {
#ifdef AFB_HAVE_URING
        slots = uring_prepare(&j);
        int e = io_uring_queue_init(o.iodepth, &ring, 0);
        if (e < 0)
            die(e == -EPERM || e == -ENOSYS ? EXIT_UNAVAILABLE : 1,
                "uring-raw: io_uring_queue_init(%u): %s%s", o.iodepth, strerror(-e),
                e == -EPERM ? " (io_uring blocked, by seccomp or kernel.io_uring_disabled?)"
                            : "");
#else
        die(EXIT_UNAVAILABLE, "uring-raw: not available (afbench was built without liburing)");
#endif
    }

    struct afs_stats s0 = {0}, s1 = {0};
    struct sc_counts c0 = {0}, c1 = {0};
    if (ctx) {
        afs_ctx_stats(ctx, &s0);
        sc_install();
        c0 = sc_get();
    }
    double u0, k0, u1, k1;
    cpu_times(&u0, &k0);
    uint64_t t0 = now_ns();
    j.deadline = o.runtime_s > 0 ? t0 + (uint64_t)(o.runtime_s * 1e9) : 0;

    switch (o.engine) {
    case ENG_PREAD:
        run_pread(&j, &w, pread_buf);
        break;
    case ENG_THREADS:
        run_threads(&j, &ts, &w);
        break;
    case ENG_QUEUE:
        run_queue(&j, &w, ctx, qs);
        break;
    case ENG_CORIO: {
        if (rt_mode) {
            run_corio_rt(&o, &j, &w);
            break;
        }
        struct co_root_arg ra = {co, o.iodepth};
        int e = corio_sched_run(sched, co_root, &ra);
        if (e)
            die(1, "corio_sched_run: %s", afs_strerror(e));
        break;
    }
    case ENG_URING_RAW:
#ifdef AFB_HAVE_URING
        run_uring(&j, &w, &ring, slots);
#endif
        break;
    }

    uint64_t t1 = now_ns();
    cpu_times(&u1, &k1);
    if (ctx) {
        afs_ctx_stats(ctx, &s1);
        c1 = sc_get();
        sc_uninstall();
        /* A pool thread's transfer is a system call too (the threads backend, and buffered
         * files on libaio): without it the pool's backends would look almost free. */
        j.syscalls = (s1.kernel_submits - s0.kernel_submits) + (s1.kernel_waits - s0.kernel_waits) +
                     (s1.inline_ops - s0.inline_ops) + (s1.pool_ops - s0.pool_ops);
        j.fixed_buffer_ops = s1.fixed_buffer_ops - s0.fixed_buffer_ops;
        j.fixed_file_ops = s1.fixed_file_ops - s0.fixed_file_ops;
        j.offloaded_ops = s1.offloaded_ops - s0.offloaded_ops;
        afs_ctx_offload(ctx, &j.off);
    }
    int err = atomic_load(&j.err);
    if (err)
        die(1, "%s: %s failed after %" PRIu64 " I/Os: %s", o.filename,
            j.write ? "write" : "read", w.h.count,
            err == -EIO && !j.write ? "short transfer or I/O error" : strerror(-err));
    if (w.h.count == 0)
        die(1, "no I/O completed (is --runtime too short?)");

    struct result r = {.ios = w.h.count};
    r.runtime_s = (double)(t1 - t0) / 1e9;
    r.iops = (double)r.ios / r.runtime_s;
    r.bw = r.iops * (double)o.bs;
    r.user_s = u1 - u0;
    r.sys_s = k1 - k0;
    r.cpu_us_per_io = (r.user_s + r.sys_s) * 1e6 / (double)r.ios;
    r.syscalls_per_io = (double)j.syscalls / (double)r.ios;
    r.counted_per_io = ctx ? (double)(c1.uring_enters - c0.uring_enters + c1.io_submits -
                                      c0.io_submits + c1.listios - c0.listios +
                                      c1.transfers - c0.transfers) / (double)r.ios
                           : -1;
    r.p50 = h_quantile_us(&w.h, 0.50);
    r.p90 = h_quantile_us(&w.h, 0.90);
    r.p99 = h_quantile_us(&w.h, 0.99);
    r.p999 = h_quantile_us(&w.h, 0.999);
    r.mean_us = (double)w.h.sum_ns / (double)w.h.count / 1000.0;
    r.min_us = (double)w.h.min_ns / 1000.0;
    r.max_us = (double)w.h.max_ns / 1000.0;
    created_path = NULL; /* the run succeeded: a file made for it stays for the next one */
    print_result(&o, &j, &r);
    /* The figures are the program's output: one that did not reach it is an error. */
    if (fflush(stdout) || ferror(stdout))
        die(1, "writing the results to standard output: %s",
            errno ? strerror(errno) : "write error");

    if (co) {
        for (unsigned i = 0; i < o.iodepth; i++)
            free(co[i].buf);
        free(co);
    }
    if (sched)
        corio_sched_free(sched);
    if (j.file)
        afs_close(j.file);
    if (ctx)
        afs_ctx_free(ctx);
#ifdef AFB_HAVE_URING
    if (o.engine == ENG_URING_RAW)
        io_uring_queue_exit(&ring);
#endif
    if (j.fd >= 0)
        close(j.fd);
    return 0;
}
