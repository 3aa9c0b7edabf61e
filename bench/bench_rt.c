/* Runtimes (corio_rt), in the same run:
 *   roundtrip    a task on scheduler 0 spawns a task on scheduler 1 and awaits its result,
 *                one at a time (corio_spawn_on + corio_future_await)
 *   condvar      the same hand-off between two plain threads with a mutex and a condition
 *                variable (request, then answer): the baseline
 *                Both are timed trip by trip, R rounds alternated (roundtrip, condvar, ...):
 *                median and p99 of each round, wake-ups sent per trip (ring messages and
 *                waker writes of both schedulers), and the ratio of the medians per pair.
 *   pipelined    64 spawns on scheduler 1 in flight, then await them all: messages per second
 *   reads-N      random 4 KiB reads of a cached file from T tasks per scheduler, every read
 *                joining its scheduler's batch (sync_threshold 0), on N = 1 and 2 schedulers:
 *                IOPS and CPU microseconds per I/O (getrusage, whole process)
 * Usage: bench_rt [--file PATH] [--tasks T] [--ios N] [--trips N] [--rounds R] [--trips-only]
 *                 [--pin] [--csv]
 * --pin: runtimes with CORIO_RT_PIN, and the round trips' two sides on two CPUs (the calling
 * thread on the first, scheduler 1 and the condition variable's server on the second).
 * Without --file a 64 MiB file is made in $TMPDIR (or /var/tmp), read once to warm it, and
 * removed. --csv prints "test,schedulers,tasks,value,unit,cpu_us_per_op" rows (one per round
 * for the round trips: roundtrip-p50, roundtrip-p99, roundtrip-wakes, condvar-p50,
 * condvar-p99, then the means "roundtrip" and "condvar" over all rounds). */
#define _GNU_SOURCE
#include <asyncfs.h>
#include <corio.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

static const char *path;
static int tasks = 64, csv;
static long ios = 400000, trips = 20000;
static int rounds = 5, trips_only, pin;
static uint64_t nblocks;

static void row(const char *test, int scheds, int t, double value, const char *unit,
                double cpu_us)
{
    if (csv)
        printf("%s,%d,%d,%.1f,%s,%.3f\n", test, scheds, t, value, unit, cpu_us);
    else
        printf("%-12s %3d sched %5d tasks %14.1f %-6s %8.3f us CPU/op\n", test, scheds, t, value,
               unit, cpu_us);
    fflush(stdout);
}

static struct corio_rt *make_rt(unsigned n, size_t sync_threshold)
{
    struct corio_rt_config cfg;
    corio_rt_config_default(&cfg);
    cfg.schedulers = n;
    cfg.sched.stack_size = 64 * 1024;
    cfg.ctx.sync_threshold = sync_threshold;
    cfg.ctx.queue_depth = 4096;
    if (pin)
        cfg.flags |= CORIO_RT_PIN;
    struct corio_rt *rt;
    int err = corio_rt_new(&rt, &cfg);
    if (err) {
        fprintf(stderr, "corio_rt_new: %s\n", afs_strerror(err));
        exit(1);
    }
    return rt;
}

/* ------------------------------------------------------------------------------------------
 * Round trips
 * ---------------------------------------------------------------------------------------- */

static int echo(struct corio_task *t, void *arg)
{
    (void)t;
    return (int)(intptr_t)arg;
}

struct trip_result {
    double   secs, cpu;
    int64_t *ns; /* per trip (round trips and the condition variable) */
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void pin_self(unsigned nth);
static void unpin_self(void);

static void trips_root(struct corio_task *t, void *arg)
{
    struct trip_result *r = arg;
    struct corio_future f;
    pin_self(0);
    /* Warm-up: the other scheduler's thread and stacks. */
    for (int i = 0; i < 100; i++) {
        corio_spawn_on(t, 1, echo, (void *)(intptr_t)i, &f);
        corio_future_await(t, &f, NULL);
    }
    double c0 = cpu_s(), t0 = now_s();
    int64_t prev = now_ns();
    for (long i = 0; i < trips; i++) {
        corio_spawn_on(t, 1, echo, (void *)(intptr_t)i, &f);
        if (corio_future_await(t, &f, NULL) != (int)i) {
            fprintf(stderr, "wrong answer\n");
            exit(1);
        }
        int64_t now = now_ns();
        r->ns[i] = now - prev;
        prev = now;
    }
    r->secs = now_s() - t0;
    r->cpu = cpu_s() - c0;
    unpin_self();
}

static void pipelined_root(struct corio_task *t, void *arg)
{
    struct trip_result *r = arg;
    enum { K = 64 };
    struct corio_future f[K];
    double c0 = cpu_s(), t0 = now_s();
    for (long done = 0; done < trips * 4; done += K) {
        for (int i = 0; i < K; i++)
            corio_spawn_on(t, 1, echo, (void *)(intptr_t)i, &f[i]);
        for (int i = 0; i < K; i++)
            corio_future_await(t, &f[i], NULL);
    }
    r->secs = now_s() - t0;
    r->cpu = cpu_s() - c0;
}

struct cv_pair {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    long            req, ans; /* sequence numbers */
    int             stop;
};

static void *cv_server(void *arg)
{
    struct cv_pair *p = arg;
    pin_self(1);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->req == p->ans && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop)
            break;
        p->ans = p->req;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void condvar(struct trip_result *r)
{
    struct cv_pair p = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, cv_server, &p);
    pin_self(0);
    pthread_mutex_lock(&p.mu);
    for (long i = 1; i <= 100; i++) { /* warm-up, as for the runtime */
        p.req = i;
        pthread_cond_broadcast(&p.cv);
        while (p.ans != i)
            pthread_cond_wait(&p.cv, &p.mu);
    }
    double c0 = cpu_s(), t0 = now_s();
    int64_t prev = now_ns();
    for (long i = 101; i <= 100 + trips; i++) {
        p.req = i;
        pthread_cond_broadcast(&p.cv);
        while (p.ans != i)
            pthread_cond_wait(&p.cv, &p.mu);
        int64_t now = now_ns();
        r->ns[i - 101] = now - prev;
        prev = now;
    }
    p.stop = 1;
    pthread_cond_broadcast(&p.cv);
    pthread_mutex_unlock(&p.mu);
    r->secs = now_s() - t0;
    r->cpu = cpu_s() - c0;
    pthread_join(th, NULL);
    unpin_self();
}

/* --pin: the calling thread (scheduler 0, the condition variable's client) on the first CPU
 * the process may use, the other side (scheduler 1, the server) on the second; the calling
 * thread gets all of them back after each run (the runtime's threads start with its mask). */
static cpu_set_t all_cpus;

static void unpin_self(void)
{
    if (pin)
        pthread_setaffinity_np(pthread_self(), sizeof all_cpus, &all_cpus);
}

static void pin_self(unsigned nth)
{
    cpu_set_t one;
    if (!pin)
        return;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &all_cpus) && nth-- == 0) {
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            pthread_setaffinity_np(pthread_self(), sizeof one, &one);
            return;
        }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of the per-trip times (sorts them). */
static double quantile(int64_t *ns, double q)
{
    qsort(ns, (size_t)trips, sizeof *ns, cmp_i64);
    long k = (long)(q * (double)(trips - 1) + 0.5);
    return (double)ns[k];
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* R rounds, the runtime and the condition variable in turn. */
static void round_trips(void)
{
    struct corio_rt *rt = make_rt(2, 4096);
    struct trip_result rtr = {.ns = calloc((size_t)trips, sizeof(int64_t))};
    struct trip_result cvr = {.ns = calloc((size_t)trips, sizeof(int64_t))};
    double *ratio = calloc((size_t)rounds, sizeof *ratio);
    double rt_secs = 0, rt_cpu = 0, cv_secs = 0, cv_cpu = 0;
    if (!rtr.ns || !cvr.ns || !ratio) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (int k = 0; k < rounds; k++) {
        corio_rt_run(rt, trips_root, &rtr);
        uint64_t wakes = 0, polls = 0, hits = 0, sleeps = 0;
        for (unsigned i = 0; i < 2; i++) {
            struct corio_rt_stats rs;
            corio_rt_stats(rt, i, &rs, NULL);
            wakes += rs.wakes_ring + rs.wakes_waker;
            polls += rs.polls;
            hits += rs.polls_hit;
            sleeps += rs.sleeps;
        }
        condvar(&cvr);
        double n = (double)(trips + 100); /* the warm-up trips are in the counters */
        double r50 = quantile(rtr.ns, 0.5), r99 = quantile(rtr.ns, 0.99);
        double c50 = quantile(cvr.ns, 0.5), c99 = quantile(cvr.ns, 0.99);
        ratio[k] = c50 / r50;
        rt_secs += rtr.secs;
        rt_cpu += rtr.cpu;
        cv_secs += cvr.secs;
        cv_cpu += cvr.cpu;
        if (csv) {
            row("roundtrip-p50", 2, 1, r50, "ns", rtr.cpu / (double)trips * 1e6);
            row("roundtrip-p99", 2, 1, r99, "ns", rtr.cpu / (double)trips * 1e6);
            row("roundtrip-wakes", 2, 1, (double)wakes / n, "wakes",
                rtr.cpu / (double)trips * 1e6);
            row("condvar-p50", 2, 1, c50, "ns", cvr.cpu / (double)trips * 1e6);
            row("condvar-p99", 2, 1, c99, "ns", cvr.cpu / (double)trips * 1e6);
        } else {
            printf("round %d: roundtrip p50 %.0f ns p99 %.0f ns mean %.0f ns (per trip: %.2f "
                   "wake-ups, %.2f polls, %.2f hits, %.2f sleeps; %.2f us CPU) | condvar p50 "
                   "%.0f ns p99 %.0f ns mean %.0f ns (%.2f us CPU) | p50 ratio %.2fx\n",
                   k + 1, r50, r99, rtr.secs / (double)trips * 1e9, (double)wakes / n,
                   (double)polls / n, (double)hits / n, (double)sleeps / n,
                   rtr.cpu / (double)trips * 1e6, c50, c99, cvr.secs / (double)trips * 1e9,
                   cvr.cpu / (double)trips * 1e6, ratio[k]);
        }
        fflush(stdout);
    }
    double tn = (double)trips * rounds;
    row("roundtrip", 2, 1, rt_secs / tn * 1e9, "ns", rt_cpu / tn * 1e6);
    row("condvar", 2, 1, cv_secs / tn * 1e9, "ns", cv_cpu / tn * 1e6);
    qsort(ratio, (size_t)rounds, sizeof *ratio, cmp_dbl);
    if (!csv)
        printf("roundtrip vs condvar, p50 per round: %.2fx to %.2fx, median %.2fx\n", ratio[0],
               ratio[rounds - 1], ratio[rounds / 2]);
    free(ratio);
    free(rtr.ns);
    free(cvr.ns);
    corio_rt_free(rt);
}

/* ------------------------------------------------------------------------------------------
 * Cached reads on N schedulers
 * ---------------------------------------------------------------------------------------- */

struct reader {
    struct afs_file *f;
    uint64_t         seed;
    long             n;
    atomic_long     *errors;
};

static void read_task(struct corio_task *t, void *arg)
{
    (void)t;
    struct reader *r = arg;
    char buf[4096] __attribute__((aligned(64)));
    for (long i = 0; i < r->n; i++) {
        r->seed ^= r->seed << 13;
        r->seed ^= r->seed >> 7;
        r->seed ^= r->seed << 17;
        uint64_t off = (r->seed % nblocks) * 4096;
        if (afs_pread(r->f, buf, sizeof buf, off) != (ssize_t)sizeof buf)
            atomic_fetch_add(r->errors, 1);
    }
}

struct reads_job {
    long        per_sched;
    atomic_long errors;
};

static int sched_reads(struct corio_task *t, void *arg)
{
    struct reads_job *j = arg;
    struct afs_file *f;
    int err = afs_open(corio_sched_ctx(corio_task_sched(t)), path, AFS_RDONLY, 0, AFS_MODE_SYNC,
                       &f);
    if (err)
        return err;
    struct reader *rs = calloc((size_t)tasks, sizeof *rs);
    for (int i = 0; i < tasks; i++) {
        rs[i] = (struct reader){.f = f, .seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1) +
                                                (uint64_t)corio_sched_index(corio_task_sched(t)),
                                .n = j->per_sched / tasks, .errors = &j->errors};
        corio_spawn(t, read_task, &rs[i], NULL);
    }
    corio_wait(t);
    free(rs);
    afs_close(f);
    return 0;
}

struct reads_root_arg {
    struct reads_job *job;
    unsigned          n;
};

static void reads_root(struct corio_task *t, void *arg)
{
    struct reads_root_arg *a = arg;
    for (unsigned i = 0; i < a->n; i++)
        corio_spawn_on(t, (int)i, sched_reads, a->job, NULL);
    corio_wait(t);
}

static void reads(unsigned n)
{
    struct corio_rt *rt = make_rt(n, 0);
    struct reads_job job = {.per_sched = ios / n};
    atomic_init(&job.errors, 0);
    struct reads_root_arg a = {&job, n};
    double c0 = cpu_s(), t0 = now_s();
    int rc = corio_rt_run(rt, reads_root, &a);
    double secs = now_s() - t0, cpu = cpu_s() - c0;
    if (rc || atomic_load(&job.errors)) {
        fprintf(stderr, "reads: %s, %ld errors\n", afs_strerror(rc), atomic_load(&job.errors));
        exit(1);
    }
    long done = job.per_sched / tasks * tasks * (long)n;
    char name[32];
    snprintf(name, sizeof name, "reads-%u", n);
    row(name, (int)n, tasks, done / secs, "IOPS", cpu / done * 1e6);
    corio_rt_free(rt);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--file") && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "--tasks") && i + 1 < argc)
            tasks = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ios") && i + 1 < argc)
            ios = atol(argv[++i]);
        else if (!strcmp(argv[i], "--trips") && i + 1 < argc)
            trips = atol(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pin"))
            pin = 1;
        else if (!strcmp(argv[i], "--trips-only"))
            trips_only = 1;
        else if (!strcmp(argv[i], "--csv"))
            csv = 1;
        else {
            fprintf(stderr, "usage: %s [--file PATH] [--tasks T] [--ios N] [--trips N] [--rounds R] "
                            "[--trips-only] [--pin] [--csv]\n",
                    argv[0]);
            return 2;
        }
    }
    if (tasks < 1)
        tasks = 1;
    if (pin && sched_getaffinity(0, sizeof all_cpus, &all_cpus) != 0)
        pin = 0;
    if (rounds < 1)
        rounds = 1;
    if (trips < 1)
        trips = 1;
    if (trips_only) {
        if (csv)
            printf("test,schedulers,tasks,value,unit,cpu_us_per_op\n");
        round_trips();
        return 0;
    }
    char tmp[512] = "";
    if (!path) {
        const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
        snprintf(tmp, sizeof tmp, "%s/bench_rt-XXXXXX", dir);
        int fd = mkstemp(tmp);
        if (fd < 0) {
            perror("mkstemp");
            return 1;
        }
        static char block[1 << 20];
        for (size_t i = 0; i < sizeof block; i++)
            block[i] = (char)(i * 131);
        for (int i = 0; i < 64; i++)
            if (write(fd, block, sizeof block) != (ssize_t)sizeof block) {
                perror("write");
                return 1;
            }
        close(fd);
        path = tmp;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    nblocks = (uint64_t)size / 4096;
    static char warm[1 << 20];
    for (off_t o = 0; o < size; o += (off_t)sizeof warm)
        if (pread(fd, warm, sizeof warm, o) < 0)
            break;
    close(fd);
    if (nblocks == 0) {
        fprintf(stderr, "%s: too small\n", path);
        return 1;
    }

    if (csv)
        printf("test,schedulers,tasks,value,unit,cpu_us_per_op\n");
    round_trips();
    struct corio_rt *rt = make_rt(2, 4096);
    struct trip_result pr;
    corio_rt_run(rt, pipelined_root, &pr);
    corio_rt_free(rt);
    row("pipelined", 2, 64, trips * 4 / pr.secs, "msgs/s", pr.cpu / (trips * 4) * 1e6);
    reads(1);
    reads(2);
    if (tmp[0])
        unlink(tmp);
    return 0;
}
