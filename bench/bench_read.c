/* Random 4 KiB reads of one file, several ways, in the same run:
 *   pread     a plain pread() loop (the baseline)
 *   corio     N corio tasks calling afs_pread (default sync threshold: small cached reads
 *             run inline)
 *   corio-batch  the same with sync_threshold = 0 (every read joins the phase's batch)
 *   queue     the op API, N ops in flight, refilled from callbacks
 * Usage: bench_read FILE [--direct] [--tasks N[,N...]] [--ios N] [--bs N] [--shared-buf]
 *                        [--buf-arena] [--idle N] [--qd N] [--rounds R] [--engine E] [--json]
 * A list of task counts runs the chosen engines at each count, R rounds in turn (the curve of
 * IOPS against the number of tasks, in one run). --shared-buf: every task of corio and corio-
 * batch, and every op of queue, reads into one buffer, which takes the cache misses of N
 * buffers out of the figure. --buf-arena: the corio tasks' own buffers side by side in one
 * arena of transparent huge pages, faulted in before the timed part. --qd N: the contexts'
 * queue_depth (default 1,024). --idle N: N more corio tasks stay alive, blocked, until the
 * readers are done (tasks alive that do not run: the scheduler's cost should not grow with
 * them). The corio tasks' offset streams are independent (splitmix64 seeds); pread and
 * queue read one stream.
 * Prints a table (or JSON lines): IOPS, ratio to pread, CPU us per I/O, syscalls per I/O
 * (kernel submits + waits counted by asyncfs; pread is 1 by construction), and system calls
 * per I/O counted independently at the system-call table (tests/helpers/syscount.h):
 * io_uring_enter, io_submit, lio_listio and the pread/pwrite calls of the thread pool and
 * of the inline path. Waits that are not io_uring_enter (poll, io_getevents, futex) are not
 * in that count. Then the user-space part of the CPU per I/O (not for pread). Last, for the
 * corio engines, the steady IOPS: the reads completed between the moment every task has
 * completed its first read and the moment the first task is done, over that time. It leaves
 * out what starting the tasks costs (spawns, new stacks' first touches) and the ramp-down,
 * so it is the scheduler's cost per I/O with every task alive; IOPS is the whole run. */
#define _GNU_SOURCE
#include <asyncfs.h>
#include <corio.h>

#include "syscount.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

static const char *path;
static int direct, tasks = 32, json, shared_buf;
static int buf_arena; /* --buf-arena: the tasks' own buffers side by side in one huge-page arena */
static int idle; /* --idle N: tasks alive beside the readers, blocked until they finish */
static struct corio_wg readers_wg = CORIO_WG_INIT, idle_wg = CORIO_WG_INIT;
static unsigned qd; /* --qd: the context's queue_depth (0: the default) */
static long ios = 200000;
static size_t bs = 4096;
static uint64_t nblocks;

/* xorshift: the same offsets for every engine. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* splitmix64: the corio tasks' seeds. Seeding task i with the generator's i-th output would
 * make the tasks' streams shifted copies of one another (xorshift's next value from x is the
 * one after x): with N tasks, a third of the reads then fetched a page read N reads before,
 * still in the cache at 64 tasks and not at 4,096, which flattered the small counts. */
static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

struct result {
    const char *name;
    double      iops, cpu_us, syscalls, counted;
    double      usr_us; /* the user-space part of cpu_us (0 for pread: not measured) */
    double      steady; /* corio: the steady IOPS (see the top); 0 elsewhere */
};

/* The corio readers' steady window: reset by run_corio, written by the tasks of its one
 * scheduler thread. */
static struct {
    long   reads, started, reads_in, reads_out;
    double t_in, t_out;
    int    out;
} win;

static double counted_per_io(struct sc_counts a, struct sc_counts b, long n)
{
    return (double)(b.uring_enters - a.uring_enters + b.io_submits - a.io_submits +
                    b.listios - a.listios + b.transfers - a.transfers) / (double)n;
}

static void report(struct result *r, double base)
{
    if (json)
        printf("{\"engine\":\"%s\",\"bs\":%zu,\"tasks\":%d,\"idle\":%d,\"direct\":%d,\"iops\":%.0f,"
               "\"ratio\":%.3f,\"cpu_us_per_io\":%.2f,\"syscalls_per_io\":%.3f,"
               "\"counted_syscalls_per_io\":%.3f,\"usr_us_per_io\":%.2f,\"steady_iops\":%.0f}\n",
               r->name, bs, tasks, idle, direct, r->iops, r->iops / base, r->cpu_us, r->syscalls,
               r->counted, r->usr_us, r->steady);
    else
        printf("%-12s %6d %12.0f %8.2fx %10.2f %10.3f %10.3f %8.2f %12.0f\n", r->name, tasks,
               r->iops, r->iops / base, r->cpu_us, r->syscalls, r->counted, r->usr_us, r->steady);
}

static void die(const char *what, int err)
{
    fprintf(stderr, "bench_read: %s: %s\n", what, afs_strerror(err));
    exit(1);
}

/* ---- pread ---- */
static struct result run_pread(void)
{
    int fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
    if (fd < 0)
        die(path, -errno);
    void *buf;
    if (posix_memalign(&buf, 4096, bs))
        die("memalign", -ENOMEM);
    uint64_t seed = 88172645463325252ULL;
    double t0 = now_s(), c0 = cpu_s();
    for (long i = 0; i < ios; i++) {
        off_t off = (off_t)(rnd(&seed) % nblocks * bs);
        if (pread(fd, buf, bs, off) != (ssize_t)bs)
            die("pread", -errno);
    }
    double t = now_s() - t0, c = cpu_s() - c0;
    close(fd);
    free(buf);
    return (struct result){"pread", ios / t, c * 1e6 / ios, 1.0, 1.0, 0, 0};
}

/* --buf-arena: len bytes (a multiple of 2 MiB) aligned to 2 MiB, with transparent huge pages
 * asked for, touched once so that the timed part does not fault them in. */
static char *arena_alloc(size_t len)
{
    size_t huge = (size_t)2 << 20;
    char *m = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        die("mmap", -errno);
    char *p = (char *)(((uintptr_t)m + huge - 1) & ~(uintptr_t)(huge - 1));
    if (p > m)
        munmap(m, (size_t)(p - m));
    munmap(p + len, (size_t)(m + huge - p));
#ifdef MADV_HUGEPAGE
    madvise(p, len, MADV_HUGEPAGE);
#endif
    memset(p, 0, len);
    return p;
}

/* ---- corio ---- */
struct co_arg {
    struct afs_file *f;
    long             n;
    uint64_t         seed;
    char            *buf; /* --shared-buf: the one buffer; NULL: the task's own */
};

static void co_reader(struct corio_task *t, void *arg)
{
    struct co_arg *a = arg;
    struct afs_ctx *ctx = afs_file_ctx(a->f);
    char *buf = a->buf ? a->buf : afs_buf_alloc(ctx, bs);
    for (long i = 0; i < a->n; i++) {
        uint64_t off = rnd(&a->seed) % nblocks * bs;
        ssize_t r = afs_pread(a->f, buf, bs, off);
        if (r != (ssize_t)bs)
            die("afs_pread", (int)r);
        win.reads++;
        if (i == 0 && ++win.started == tasks) {
            win.t_in = now_s();
            win.reads_in = win.reads;
        }
    }
    if (!win.out) {
        win.out = 1;
        win.t_out = now_s();
        win.reads_out = win.reads;
    }
    if (!a->buf)
        afs_buf_free(ctx, buf, bs);
    corio_wg_done(&readers_wg);
}

static void co_idle(struct corio_task *t, void *arg)
{
    (void)arg;
    corio_wg_wait(t, &idle_wg);
}

static void co_root(struct corio_task *t, void *arg)
{
    struct co_arg *a = arg;
    corio_wg_add(&idle_wg, 1);
    for (int i = 0; i < idle; i++)
        if (corio_spawn(t, co_idle, NULL, NULL))
            die("corio_spawn", -ENOMEM);
    corio_wg_add(&readers_wg, tasks);
    for (int i = 0; i < tasks; i++)
        corio_spawn(t, co_reader, &a[i], NULL);
    corio_wg_wait(t, &readers_wg);
    corio_wg_done(&idle_wg);
}

static struct result run_corio(const char *name, size_t threshold)
{
    struct afs_config acfg;
    afs_config_default(&acfg);
    acfg.sync_threshold = threshold;
    if (qd)
        acfg.queue_depth = qd;
    struct afs_ctx *ctx;
    int err = afs_ctx_new(&ctx, &acfg);
    if (err)
        die("afs_ctx_new", err);
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = ctx;
    cfg.stack_size = 64 * 1024;
    struct corio_sched *s;
    if ((err = corio_sched_new(&s, &cfg)))
        die("corio_sched_new", err);
    struct afs_file *f;
    if ((err = afs_open(ctx, path, AFS_RDONLY | (direct ? AFS_DIRECT : 0), 0, AFS_MODE_SYNC, &f)))
        die(path, err);
    struct co_arg *a = calloc((size_t)tasks, sizeof *a);
    char *shared = shared_buf ? afs_buf_alloc(ctx, bs) : NULL;
    size_t arena_len = 0;
    char *arena = NULL;
    if (buf_arena && !shared_buf) {
        arena_len = ((size_t)tasks * bs + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
        arena = arena_alloc(arena_len);
    }
    for (int i = 0; i < tasks; i++) {
        a[i].f = f;
        a[i].n = ios / tasks;
        a[i].seed = splitmix64(88172645463325252ULL + (uint64_t)i) | 1;
        a[i].buf = arena ? arena + (size_t)i * bs : shared;
    }
    struct afs_stats s0, s1;
    afs_ctx_stats(ctx, &s0);
    memset(&win, 0, sizeof win);
    struct sc_counts k0 = sc_get();
    double t0 = now_s(), c0 = cpu_s(), u0 = usr_s();
    if ((err = corio_sched_run(s, co_root, a)))
        die("corio_sched_run", err);
    double t = now_s() - t0, c = cpu_s() - c0, u = usr_s() - u0;
    struct sc_counts k1 = sc_get();
    afs_ctx_stats(ctx, &s1);
    long n = ios / tasks * tasks;
    double sys = (double)(s1.kernel_submits - s0.kernel_submits + s1.kernel_waits -
                          s0.kernel_waits + s1.inline_ops - s0.inline_ops) / n;
    free(a);
    if (shared)
        afs_buf_free(ctx, shared, bs);
    if (arena)
        munmap(arena, arena_len);
    afs_close(f);
    corio_sched_free(s);
    afs_ctx_free(ctx);
    double steady = win.t_out > win.t_in && win.reads_out > win.reads_in
                        ? (double)(win.reads_out - win.reads_in) / (win.t_out - win.t_in)
                        : 0;
    return (struct result){name, n / t, c * 1e6 / n, sys, counted_per_io(k0, k1, n),
                           u * 1e6 / n, steady};
}

/* ---- the op API ---- */
struct q_state {
    struct afs_file *f;
    long             left, done;
    uint64_t         seed;
};
struct q_op {
    struct afs_op   op;
    struct q_state *st;
    char           *buf;
};

static void q_cb(struct afs_op *op)
{
    struct q_op *q = (struct q_op *)op;
    struct q_state *st = q->st;
    if (op->result != (ssize_t)bs)
        die("read", (int)op->result);
    st->done++;
    if (st->left > 0) {
        st->left--;
        afs_queue_read(&q->op, st->f, q->buf, bs, rnd(&st->seed) % nblocks * bs, q_cb, NULL);
    }
}

static struct result run_queue(void)
{
    struct afs_config acfg;
    afs_config_default(&acfg);
    if (qd)
        acfg.queue_depth = qd;
    struct afs_ctx *ctx;
    int err = afs_ctx_new(&ctx, &acfg);
    if (err)
        die("afs_ctx_new", err);
    struct afs_file *f;
    if ((err = afs_open(ctx, path, AFS_RDONLY | (direct ? AFS_DIRECT : 0), 0, AFS_MODE_SYNC, &f)))
        die(path, err);
    struct q_state st = {f, ios, 0, 88172645463325252ULL};
    struct q_op *qs = calloc((size_t)tasks, sizeof *qs);
    char *shared = shared_buf ? afs_buf_alloc(ctx, bs) : NULL;
    struct afs_stats s0, s1;
    afs_ctx_stats(ctx, &s0);
    struct sc_counts k0 = sc_get();
    double t0 = now_s(), c0 = cpu_s(), u0 = usr_s();
    for (int i = 0; i < tasks && st.left > 0; i++) {
        qs[i].st = &st;
        qs[i].buf = shared ? shared : afs_buf_alloc(ctx, bs);
        st.left--;
        afs_queue_read(&qs[i].op, f, qs[i].buf, bs, rnd(&st.seed) % nblocks * bs, q_cb, NULL);
    }
    while (st.done < ios)
        if ((err = afs_ctx_wait(ctx, 1, -1)) < 0)
            die("afs_ctx_wait", err);
    double t = now_s() - t0, c = cpu_s() - c0, u = usr_s() - u0;
    struct sc_counts k1 = sc_get();
    afs_ctx_stats(ctx, &s1);
    double sys = (double)(s1.kernel_submits - s0.kernel_submits + s1.kernel_waits -
                          s0.kernel_waits) / ios;
    for (int i = 0; i < tasks && !shared; i++)
        afs_buf_free(ctx, qs[i].buf, bs);
    if (shared)
        afs_buf_free(ctx, shared, bs);
    free(qs);
    afs_close(f);
    afs_ctx_free(ctx);
    return (struct result){"queue", ios / t, c * 1e6 / ios, sys, counted_per_io(k0, k1, ios),
                           u * 1e6 / ios, 0};
}

int main(int argc, char **argv)
{
    const char *only = NULL, *list = "32";
    int rounds = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--direct"))
            direct = 1;
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--tasks") && i + 1 < argc)
            tasks = atoi(list = argv[++i]);
        else if (!strcmp(argv[i], "--qd") && i + 1 < argc)
            qd = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--idle") && i + 1 < argc)
            idle = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--buf-arena"))
            buf_arena = 1;
        else if (!strcmp(argv[i], "--shared-buf"))
            shared_buf = 1;
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ios") && i + 1 < argc)
            ios = atol(argv[++i]);
        else if (!strcmp(argv[i], "--bs") && i + 1 < argc)
            bs = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--engine") && i + 1 < argc)
            only = argv[++i];
        else if (argv[i][0] != '-')
            path = argv[i];
        else {
            fprintf(stderr, "usage: bench_read FILE [--direct] [--tasks N[,N...]] [--ios N] "
                            "[--bs N] [--shared-buf] [--buf-arena] [--idle N] [--qd N] "
                            "[--rounds R] "
                            "[--engine pread|corio|corio-batch|queue] [--json]\n");
            return 2;
        }
    }
    if (!path || tasks < 1 || ios < tasks || bs == 0 || rounds < 1 || idle < 0) {
        fprintf(stderr, "bench_read: need a FILE, tasks >= 1, ios >= tasks, bs > 0, idle >= 0\n");
        return 2;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die(path, -errno);
    nblocks = (uint64_t)lseek(fd, 0, SEEK_END) / bs;
    close(fd);
    if (nblocks == 0)
        die(path, -EINVAL);
    if (!json)
        printf("%-12s %6s %12s %9s %10s %10s %10s %8s %12s   (%s, %zu B random reads%s%s)\n",
               "engine", "tasks", "IOPS", "vs pread", "CPU us/IO", "syscalls/IO", "counted/IO",
               "user us", "steady IOPS", path, bs,
               direct ? ", O_DIRECT" : "", shared_buf ? ", one shared buffer" : "");
    sc_install();
    struct result base = run_pread();
    if (!only || !strcmp(only, "pread"))
        report(&base, base.iops);
    struct result r;
    for (int round = 0; round < rounds; round++) {
        for (const char *p = list; p;) {
            tasks = atoi(p);
            p = strchr(p, ',');
            if (p)
                p++;
            if (tasks < 1 || ios < tasks) {
                fprintf(stderr, "bench_read: need tasks >= 1, ios >= tasks\n");
                return 2;
            }
            if (!only || !strcmp(only, "corio")) {
                r = run_corio("corio", 4096);
                report(&r, base.iops);
            }
            if (!only || !strcmp(only, "corio-batch")) {
                r = run_corio("corio-batch", 0);
                report(&r, base.iops);
            }
            if (!only || !strcmp(only, "queue")) {
                r = run_queue();
                report(&r, base.iops);
            }
        }
    }
    return 0;
}
