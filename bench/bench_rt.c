/* Runtimes (corio_rt), in the same run:
 *   roundtrip    a task on scheduler 0 spawns a task on scheduler 1 and awaits its result,
 *                one at a time (corio_spawn_on + corio_future_await)
 *   condvar      the same hand-off between two plain threads with a mutex and a condition
 *                variable (request, then answer): the baseline
 *   pipelined    64 spawns on scheduler 1 in flight, then await them all: messages per second
 *   reads-N      random 4 KiB reads of a cached file from T tasks per scheduler, every read
 *                joining its scheduler's batch (sync_threshold 0), on N = 1 and 2 schedulers:
 *                IOPS and CPU microseconds per I/O (getrusage, whole process)
 * Usage: bench_rt [--file PATH] [--tasks T] [--ios N] [--trips N] [--csv]
 * Without --file a 64 MiB file is made in $TMPDIR (or /var/tmp), read once to warm it, and
 * removed. --csv prints "test,schedulers,tasks,value,unit,cpu_us_per_op" rows. */
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
    double secs, cpu;
};

static void trips_root(struct corio_task *t, void *arg)
{
    struct trip_result *r = arg;
    struct corio_future f;
    /* Warm-up: the other scheduler's thread and stacks. */
    for (int i = 0; i < 100; i++) {
        corio_spawn_on(t, 1, echo, (void *)(intptr_t)i, &f);
        corio_future_await(t, &f, NULL);
    }
    double c0 = cpu_s(), t0 = now_s();
    for (long i = 0; i < trips; i++) {
        corio_spawn_on(t, 1, echo, (void *)(intptr_t)i, &f);
        if (corio_future_await(t, &f, NULL) != (int)i) {
            fprintf(stderr, "wrong answer\n");
            exit(1);
        }
    }
    r->secs = now_s() - t0;
    r->cpu = cpu_s() - c0;
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
    double c0 = cpu_s(), t0 = now_s();
    pthread_mutex_lock(&p.mu);
    for (long i = 1; i <= trips; i++) {
        p.req = i;
        pthread_cond_broadcast(&p.cv);
        while (p.ans != i)
            pthread_cond_wait(&p.cv, &p.mu);
    }
    p.stop = 1;
    pthread_cond_broadcast(&p.cv);
    pthread_mutex_unlock(&p.mu);
    r->secs = now_s() - t0;
    r->cpu = cpu_s() - c0;
    pthread_join(th, NULL);
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
        else if (!strcmp(argv[i], "--csv"))
            csv = 1;
        else {
            fprintf(stderr, "usage: %s [--file PATH] [--tasks T] [--ios N] [--trips N] [--csv]\n",
                    argv[0]);
            return 2;
        }
    }
    if (tasks < 1)
        tasks = 1;
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
    struct corio_rt *rt = make_rt(2, 4096);
    struct trip_result rtr, cvr, pr;
    corio_rt_run(rt, trips_root, &rtr);
    if (!csv) /* what each round trip cost each scheduler (the 100 warm-up trips included) */
        for (unsigned i = 0; i < 2; i++) {
            struct corio_rt_stats rs;
            struct corio_stats ss;
            corio_rt_stats(rt, i, &rs, &ss);
            double k = 1.0 / (double)(trips + 100);
            printf("roundtrip: scheduler %u per trip: %.2f phases, %.2f kernel submits, "
                   "%.2f messages in, %.2f ring wake-ups and %.2f waker wake-ups sent\n",
                   i, ss.phases * k, ss.submits * k, rs.messages * k, rs.wakes_ring * k,
                   rs.wakes_waker * k);
        }
    condvar(&cvr);
    corio_rt_run(rt, pipelined_root, &pr);
    corio_rt_free(rt);
    row("roundtrip", 2, 1, rtr.secs / trips * 1e9, "ns", rtr.cpu / trips * 1e6);
    row("condvar", 2, 1, cvr.secs / trips * 1e9, "ns", cvr.cpu / trips * 1e6);
    row("pipelined", 2, 64, trips * 4 / pr.secs, "msgs/s", pr.cpu / (trips * 4) * 1e6);
    if (!csv)
        printf("roundtrip vs condvar: %.2fx faster\n", cvr.secs / rtr.secs);
    reads(1);
    reads(2);
    if (tmp[0])
        unlink(tmp);
    return 0;
}
