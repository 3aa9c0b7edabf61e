/* Group commit (corio_log_*): offsets and order, many tasks per write and fdatasync, records
 * reported durable only after their sync, ENOSPC and EIO injected through the system-call
 * table (the log fails for good: fsyncgate), cancellation of a waiting appender. Run once per
 * backend; the fault tests need a backend whose transfers go through afs__sys. */
#include "../common.h"

#include "platform.h"
#include <corio.h>
#include <signal.h>
#include <sys/resource.h>

static struct corio_sched *l_sched;
static struct afs__syscalls saved;
static int faults_on;

/* Faults: the nth write call (1-based) and all after it fail with w_err; the nth fdatasync
 * alone fails with s_err. */
static int w_nth, w_err, w_calls, s_nth, s_err, s_calls;

static ssize_t f_pwrite(afs__fd_t fd, const void *buf, size_t len, uint64_t off)
{
    if (++w_calls >= w_nth && w_nth)
        return w_err;
    return saved.pwrite(fd, buf, len, off);
}

static int f_fsync(afs__fd_t fd, bool datasync)
{
    if (++s_calls == s_nth)
        return s_err; /* once: a retry would succeed */
    return saved.fsync(fd, datasync);
}

static void l_setup(void)
{
    t_setup();
    saved = afs__sys;
    w_nth = w_err = w_calls = s_nth = s_err = s_calls = 0;
}

static void l_teardown(void)
{
    if (l_sched)
        corio_sched_free(l_sched);
    l_sched = NULL;
    if (faults_on)
        afs__sys = saved; /* after the scheduler's context finished its ops */
    t_teardown();
}

#define T_LOG(name, ...)                                                                      \
    Test(corio_log, name, .init = l_setup, .fini = l_teardown, .timeout = 60, ##__VA_ARGS__)

static struct corio_sched *new_sched(void)
{
    t_ctx = t_new_ctx();
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    cr_assert_eq(corio_sched_new(&l_sched, &cfg), 0);
    return l_sched;
}

static void want_faults(void)
{
    const char *b = afs_ctx_backend(t_ctx);
    if (strcmp(b, "threads") && strcmp(b, "sync"))
        cr_skip_test("transfers on %s are made by the kernel, not through afs__sys", b);
    faults_on = 1;
    afs__sys.pwrite = f_pwrite;
    afs__sys.fsync = f_fsync;
}

#define NTASKS 64
#define RECLEN 128

struct run {
    const char      *path;
    struct afs_file *f;
    struct corio_log *log;
    int              rounds;      /* appends per task */
    int              res[NTASKS][8];
    uint64_t         off[NTASKS][8];
    uint64_t         durable_seen[NTASKS][8]; /* corio_log_durable() right after the append */
    int              close_res;
    struct corio_log_stats stats;
    int              cancel_one;  /* task 0 is cancelled while it waits */
    struct corio_task *victim;
};

static void fill_rec(char *rec, int task, int round)
{
    memset(rec, 'a' + (task + round) % 26, RECLEN);
    snprintf(rec, RECLEN, "task %d round %d", task, round);
}

struct task_arg {
    struct run *run;
    int         id;
};

static void appender(struct corio_task *t, void *p)
{
    struct task_arg *a = p;
    struct run *run = a->run;
    char rec[RECLEN];
    for (int k = 0; k < run->rounds; k++) {
        fill_rec(rec, a->id, k);
        run->res[a->id][k] = corio_log_append(t, run->log, rec, sizeof rec, &run->off[a->id][k]);
        run->durable_seen[a->id][k] = corio_log_durable(run->log);
    }
}

static void canceller(struct corio_task *t, void *p)
{
    struct run *run = p;
    corio_cancel(run->victim); /* runs after every appender suspended: the victim waits */
}

static void root(struct corio_task *t, void *p)
{
    struct run *run = p;
    cr_assert_eq(afs_open(corio_sched_ctx(corio_task_sched(t)), run->path,
                          AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_SYNC, &run->f), 0);
    cr_assert_eq(corio_log_open(t, run->f, 0, &run->log), 0);
    static struct task_arg args[NTASKS];
    for (int i = 0; i < NTASKS; i++) {
        args[i] = (struct task_arg){run, i};
        struct corio_task **child = i == 0 && run->cancel_one ? &run->victim : NULL;
        cr_assert_eq(corio_spawn(t, appender, &args[i], child), 0);
    }
    if (run->cancel_one)
        cr_assert_eq(corio_spawn(t, canceller, run, NULL), 0);
    /* Wait for the appenders, not for the flusher (also a child of this task). */
    for (int done = 0; !done;) {
        corio_yield(t);
        done = 1;
        for (int i = 0; i < NTASKS; i++)
            for (int k = 0; k < run->rounds; k++)
                if (run->res[i][k] == 1)
                    done = 0;
    }
    corio_log_stats(run->log, &run->stats);
    run->close_res = corio_log_close(t, run->log);
    cr_assert_eq(afs_close(run->f), 0);
}

static void run_log(struct run *run)
{
    for (int i = 0; i < NTASKS; i++)
        for (int k = 0; k < run->rounds; k++)
            run->res[i][k] = 1; /* not returned yet */
    cr_assert_eq(corio_sched_run(l_sched, root, run), 0);
}

static char *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp);
    static char buf[NTASKS * 8 * RECLEN + 1];
    *len = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    return buf;
}

T_LOG(every_record_lands_at_its_offset_once)
{
    new_sched();
    static struct run run;
    memset(&run, 0, sizeof run);
    run.path = t_path("log");
    run.rounds = 4;
    run_log(&run);
    cr_assert_eq(run.close_res, 0);
    size_t len;
    char *data = read_all(run.path, &len);
    cr_assert_eq(len, (size_t)NTASKS * 4 * RECLEN);
    static unsigned char seen[NTASKS * 4];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < NTASKS; i++) {
        uint64_t prev = 0;
        for (int k = 0; k < 4; k++) {
            cr_assert_eq(run.res[i][k], 0);
            uint64_t off = run.off[i][k];
            cr_assert_eq(off % RECLEN, 0);
            cr_assert_lt(off, len);
            cr_assert(!seen[off / RECLEN]++, "offset %llu given twice", (unsigned long long)off);
            /* A task's records are in its order, and durable when it resumed. */
            if (k)
                cr_assert_gt(off, prev);
            prev = off;
            cr_assert_geq(run.durable_seen[i][k], off + RECLEN);
            char rec[RECLEN];
            fill_rec(rec, i, k);
            cr_assert(!memcmp(data + off, rec, RECLEN), "record of task %d round %d", i, k);
        }
    }
    /* Group commit: many appends per write and fdatasync. */
    cr_assert_eq(run.stats.appends, NTASKS * 4);
    cr_assert_leq(run.stats.batches * 8, run.stats.appends, "%llu batches",
                  (unsigned long long)run.stats.batches);
    cr_assert_eq(run.stats.bytes, len);
}

T_LOG(records_of_one_phase_keep_their_order)
{
    /* Tasks spawned in order append in order within the first phase: offsets follow the
     * spawn order. */
    new_sched();
    static struct run run;
    memset(&run, 0, sizeof run);
    run.path = t_path("log");
    run.rounds = 1;
    run_log(&run);
    for (int i = 1; i < NTASKS; i++)
        cr_assert_eq(run.off[i][0], run.off[i - 1][0] + RECLEN);
    cr_assert_eq(run.stats.batches, 1);
}

T_LOG(enospc_fails_the_batch_and_the_log)
{
    new_sched();
    want_faults();
    /* The second batch's write fails. */
    w_nth = 2;
    w_err = -ENOSPC;
    static struct run run;
    memset(&run, 0, sizeof run);
    run.path = t_path("log");
    run.rounds = 3;
    run_log(&run);
    cr_assert_eq(run.close_res, -ENOSPC);
    /* The first batch (round 0 of every task, one phase) is durable; everything after it
     * failed with ENOSPC: the failed batch and the one that waited behind it. */
    int ok = 0, failed = 0;
    for (int i = 0; i < NTASKS; i++) {
        cr_assert_eq(run.res[i][0], 0);
        for (int k = 1; k < 3; k++) {
            cr_assert(run.res[i][k] == 0 || run.res[i][k] == -ENOSPC);
            run.res[i][k] ? failed++ : ok++;
            if (run.res[i][k] == -ENOSPC)
                cr_assert_eq(run.res[i][2], -ENOSPC, "an append after a failure succeeded");
        }
    }
    cr_assert_eq(ok, 0);
    cr_assert_eq(failed, NTASKS * 2);
    cr_assert_eq(w_calls, 2, "nothing is written after the failure");
    cr_assert_eq(s_calls, 1);
    struct stat st;
    cr_assert_eq(stat(run.path, &st), 0);
    cr_assert_eq(st.st_size, NTASKS * RECLEN);
    /* The counters say what was written and made durable: the first batch. */
    cr_assert_eq(run.stats.batches, 1);
    cr_assert_eq(run.stats.bytes, NTASKS * RECLEN);
}

/* A batch whose write the file size limit cuts short: the batch fails with -EFBIG, and the
 * stats count the bytes it did write (every backend: the kernel cuts it). */
static void fsize_root(struct corio_task *t, void *p)
{
    struct run *run = p;
    cr_assert_eq(afs_open(corio_sched_ctx(corio_task_sched(t)), run->path,
                          AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_SYNC, &run->f), 0);
    cr_assert_eq(corio_log_open(t, run->f, 0, &run->log), 0);
    static char rec[4096];
    memset(rec, 'r', sizeof rec);
    uint64_t off;
    cr_assert_eq(corio_log_append(t, run->log, rec, sizeof rec, &off), 0);
    int r = corio_log_append(t, run->log, rec, sizeof rec, &off);
    cr_assert_eq(r, -EFBIG, "the append past the limit: %s", afs_strerror(r));
    corio_log_stats(run->log, &run->stats);
    run->close_res = corio_log_close(t, run->log);
    cr_assert_eq(afs_close(run->f), 0);
}

T_LOG(a_batch_cut_short_counts_the_bytes_it_wrote)
{
    new_sched();
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {6000, 6000};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    static struct run run;
    memset(&run, 0, sizeof run);
    run.path = t_path("log");
    cr_assert_eq(corio_sched_run(l_sched, fsize_root, &run), 0);
    cr_assert_eq(run.close_res, -EFBIG);
    struct stat st;
    cr_assert_eq(stat(run.path, &st), 0);
    cr_assert_eq(st.st_size, 6000);
    cr_assert_eq(run.stats.batches, 1, "only the first batch was made durable");
    cr_assert_eq(run.stats.bytes, 6000, "bytes %llu", (unsigned long long)run.stats.bytes);
}

T_LOG(a_failed_fdatasync_poisons_the_log)
{
    new_sched();
    want_faults();
    /* The second fdatasync reports EIO once; a later one would succeed, but must not be
     * taken as covering the lost batch. */
    s_nth = 2;
    s_err = -EIO;
    static struct run run;
    memset(&run, 0, sizeof run);
    run.path = t_path("log");
    run.rounds = 3;
    run_log(&run);
    cr_assert_eq(run.close_res, -EIO);
    uint64_t durable_max = 0;
    for (int i = 0; i < NTASKS; i++) {
        cr_assert_eq(run.res[i][0], 0);
        cr_assert_eq(run.res[i][1], -EIO);
        cr_assert_eq(run.res[i][2], -EIO);
        if (run.durable_seen[i][2] > durable_max)
            durable_max = run.durable_seen[i][2];
    }
    cr_assert_eq(durable_max, NTASKS * RECLEN, "durable moved past the failed batch");
    cr_assert_eq(s_calls, 2, "an fdatasync was retried after the failure");
    cr_assert_eq(run.stats.batches, 1, "the batch whose fdatasync failed is not durable");
    cr_assert_eq(run.stats.bytes, 2 * NTASKS * RECLEN, "its write went through");
}

T_LOG(a_cancelled_waiter_returns_ecanceled_and_its_record_may_land)
{
    new_sched();
    static struct run run;
    memset(&run, 0, sizeof run);
    run.path = t_path("log");
    run.rounds = 2;
    run.cancel_one = 1;
    run_log(&run);
    cr_assert_eq(run.close_res, 0);
    /* Task 0 waited in its first append when it was cancelled: -ECANCELED with its offset;
     * its second append is refused at once (not appended). */
    cr_assert_eq(run.res[0][0], -ECANCELED);
    cr_assert_eq(run.res[0][1], -ECANCELED);
    size_t len;
    char *data = read_all(run.path, &len);
    cr_assert_eq(len, (size_t)(NTASKS * 2 - 1) * RECLEN);
    /* Its record was in the batch and became durable anyway (documented). */
    char rec[RECLEN];
    fill_rec(rec, 0, 0);
    cr_assert(!memcmp(data + run.off[0][0], rec, RECLEN));
    for (int i = 1; i < NTASKS; i++)
        cr_assert_eq(run.res[i][0] | run.res[i][1], 0);
}

static void empty_root(struct corio_task *t, void *p)
{
    struct run *run = p;
    cr_assert_eq(afs_open(corio_sched_ctx(corio_task_sched(t)), run->path,
                          AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_SYNC, &run->f), 0);
    cr_assert_eq(corio_log_open(t, run->f, 100, &run->log), 0);
    uint64_t off = 0;
    cr_assert_eq(corio_log_append(t, run->log, NULL, 0, &off), 0); /* a sync point */
    cr_assert_eq(off, 100);
    cr_assert_eq(corio_log_append(t, run->log, NULL, 5, &off), -EINVAL);
    cr_assert_eq(corio_log_append(t, run->log, "abc", 3, &off), 0);
    cr_assert_eq(off, 100);
    cr_assert_eq(corio_log_durable(run->log), 103);
    run->close_res = corio_log_close(t, run->log);
    cr_assert_eq(afs_close(run->f), 0);
}

T_LOG(start_offset_sync_points_and_bad_input)
{
    new_sched();
    static struct run run;
    memset(&run, 0, sizeof run);
    run.path = t_path("log");
    cr_assert_eq(corio_sched_run(l_sched, empty_root, &run), 0);
    cr_assert_eq(run.close_res, 0);
    struct stat st;
    cr_assert_eq(stat(run.path, &st), 0);
    cr_assert_eq(st.st_size, 103);
}
