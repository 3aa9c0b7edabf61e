/* Durable appends of 128-byte records (bench/run_sqlite.sh runs it beside the SQLite bench):
 *
 *   bench_log DIR SECONDS [TASKS]
 * prints CSV lines op,mode,tasks,appends,seconds,appends_per_s for
 *   group:  TASKS corio tasks appending through corio_log (one write + one fdatasync per batch)
 *   fdatasync: one thread, pwrite + fdatasync per record
 *   o_dsync: one thread, pwrite on an O_DSYNC file per record
 * each on its own file in DIR (same file system), for about SECONDS each. */
#define _GNU_SOURCE
#include <asyncfs.h>
#include <corio.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

#define RECLEN 128

static double seconds;
static double deadline;
static long appends;
static int ntasks;
static struct corio_log *log_;
static int failed;

static void appender(struct corio_task *t, void *arg)
{
    char rec[RECLEN];
    memset(rec, 'r', sizeof rec);
    while (now_s() < deadline) {
        if (corio_log_append(t, log_, rec, sizeof rec, NULL) < 0) {
            failed = 1;
            return;
        }
        appends++;
    }
}

struct root_arg {
    struct afs_file *f;
    struct corio_log_stats st;
};

static void root(struct corio_task *t, void *arg)
{
    struct root_arg *ra = arg;
    if (corio_log_open(t, ra->f, 0, &log_) < 0) {
        failed = 1;
        return;
    }
    struct corio_task **kids = calloc((size_t)ntasks, sizeof *kids);
    for (int i = 0; i < ntasks; i++)
        corio_spawn(t, appender, NULL, &kids[i]);
    for (int i = 0; i < ntasks; i++)
        while (!corio_task_done(kids[i]))
            corio_sleep(t, 1000000);
    free(kids);
    corio_log_stats(log_, &ra->st);
    if (corio_log_close(t, log_) < 0)
        failed = 1;
}

static void report(const char *mode, int tasks, long n, double dt)
{
    printf("append,%s,%d,%ld,%.3f,%.0f\n", mode, tasks, n, dt, (double)n / dt);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_log DIR SECONDS [TASKS]\n");
        return 2;
    }
    const char *dir = argv[1];
    seconds = atof(argv[2]);
    ntasks = argc > 3 ? atoi(argv[3]) : 64;
    char path[4096];

    /* Group commit. */
    snprintf(path, sizeof path, "%s/group.log", dir);
    struct afs_ctx *ctx;
    struct corio_sched *s;
    struct corio_config cfg;
    if (afs_ctx_new(&ctx, NULL) < 0)
        return 1;
    corio_config_default(&cfg);
    cfg.ctx = ctx;
    if (corio_sched_new(&s, &cfg) < 0)
        return 1;
    struct root_arg ra = {0};
    if (afs_open(ctx, path, AFS_RDWR | AFS_CREAT | AFS_TRUNC, 0644, AFS_MODE_SYNC, &ra.f) < 0)
        return 1;
    double t0 = now_s();
    deadline = t0 + seconds;
    if (corio_sched_run(s, root, &ra) < 0 || failed) {
        fprintf(stderr, "bench_log: group commit failed\n");
        return 1;
    }
    double dt = now_s() - t0;
    report("group", ntasks, appends, dt);
    fprintf(stderr, "group: %s, %llu batches, %.1f records per fdatasync\n",
            afs_ctx_backend(ctx), (unsigned long long)ra.st.batches,
            (double)ra.st.appends / (double)(ra.st.batches ? ra.st.batches : 1));
    afs_close(ra.f);
    corio_sched_free(s);
    afs_ctx_free(ctx);
    unlink(path);

    /* One fdatasync per append. */
    char rec[RECLEN];
    memset(rec, 'r', sizeof rec);
    snprintf(path, sizeof path, "%s/fdatasync.log", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    long n = 0;
    t0 = now_s();
    for (off_t off = 0; now_s() < t0 + seconds; off += RECLEN, n++) {
        if (pwrite(fd, rec, RECLEN, off) != RECLEN || fdatasync(fd) < 0)
            return 1;
    }
    report("fdatasync", 1, n, now_s() - t0);
    close(fd);
    unlink(path);

    /* O_DSYNC appends. */
    snprintf(path, sizeof path, "%s/dsync.log", dir);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DSYNC, 0644);
    n = 0;
    t0 = now_s();
    for (off_t off = 0; now_s() < t0 + seconds; off += RECLEN, n++) {
        if (pwrite(fd, rec, RECLEN, off) != RECLEN)
            return 1;
    }
    report("o_dsync", 1, n, now_s() - t0);
    close(fd);
    unlink(path);
    return 0;
}
