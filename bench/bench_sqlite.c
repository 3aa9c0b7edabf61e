/* SQLite through the asyncfs VFS against SQLite's unix VFS (bench/run_sqlite.sh drives it).
 *
 *   bench_sqlite setup   DB ROWS            a table t(k INTEGER PRIMARY KEY, v BLOB(200))
 *   bench_sqlite insert  DB ROWS VFS        ROWS inserts in transactions of 1,000, one conn
 *   bench_sqlite lookups DB ROWS MODE CONNS LOOKUPS [THRESHOLD]
 *   bench_sqlite scan    DB ROWS MODE CONNS
 *   bench_sqlite alternate DB ROWS MODE_A MODE_B CONNS LOOKUPS ROUNDS [cold]
 * MODE: corio (CONNS connections in CONNS tasks of one scheduler, asyncfs VFS; THRESHOLD is
 * the context's sync_threshold, default the library's: a page read the page cache holds is
 * served at once and a miss joins the phase's batch; 0 batches every page read; the
 * context's io_workers is CONNS),
 * threads (CONNS connections in CONNS threads, unix VFS), single (CONNS connections one after
 * the other on one thread, unix VFS), rt (CONNS tasks spread over the schedulers of a corio
 * runtime, environment SCHEDULERS, default one per CPU, PIN=1 pins each to its CPU;
 * asyncfs VFS; RT_ENDS=1 prints when the first and the last connection of each scheduler
 * ended). Each connection does
 * LOOKUPS random point lookups.
 * Prints one CSV line: op,mode,conns,ops,seconds,ops_per_s,cpu_s (cpu_s: the process's user and
 * system time during the run).
 * alternate: the lookups of MODE_A and MODE_B in turn in this one process, ROUNDS times each
 * (A B B A, then again), so that a machine whose speed drifts (other work beside) weighs on
 * both alike; "cold" drops the page cache before each run (root). One CSV line per run, then
 * on stderr the median of the rounds' A/B ratios of lookups per second and of CPU time per
 * lookup. */
#define _GNU_SOURCE
#include <asyncfs.h>
#include <asyncfs_sqlite.h>
#include <corio.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

static void die(sqlite3 *db, const char *what)
{
    fprintf(stderr, "bench_sqlite: %s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
    exit(1);
}

static sqlite3 *open_db(const char *path, const char *vfs)
{
    sqlite3 *db;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) != SQLITE_OK)
        die(db, "open");
    sqlite3_busy_timeout(db, 60000);
    return db;
}

static void exec(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        die(db, sql);
}

static long rows;
static const char *db_path;
static int nlookups;
static uint64_t checksum_total;

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* LOOKUPS point lookups of one connection; returns a checksum of what it read. */
static uint64_t do_lookups(sqlite3 *db, int id)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT length(v), k FROM t WHERE k = ?", -1, &st, NULL))
        die(db, "prepare");
    uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 1), sum = 0;
    for (int i = 0; i < nlookups; i++) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)(xorshift(&seed) % (uint64_t)rows));
        if (sqlite3_step(st) != SQLITE_ROW)
            die(db, "lookup");
        sum += (uint64_t)sqlite3_column_int64(st, 0) + (uint64_t)sqlite3_column_int64(st, 1);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return sum;
}

static uint64_t do_scan(sqlite3 *db)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT sum(length(v)) FROM t", -1, &st, NULL))
        die(db, "prepare");
    if (sqlite3_step(st) != SQLITE_ROW)
        die(db, "scan");
    uint64_t v = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int scan_mode;

static uint64_t conn_work(const char *vfs, int id)
{
    sqlite3 *db = open_db(db_path, vfs);
    uint64_t s = scan_mode ? do_scan(db) : do_lookups(db, id);
    sqlite3_close(db);
    return s;
}

static void task_fn(struct corio_task *t, void *arg)
{
    checksum_total += conn_work("asyncfs", (int)(intptr_t)arg);
}

static int nconns;

static void root_fn(struct corio_task *t, void *arg)
{
    for (int i = 0; i < nconns; i++)
        if (corio_spawn(t, task_fn, (void *)(intptr_t)i, NULL) < 0)
            die(NULL, "spawn");
    corio_wait(t);
}

static pthread_mutex_t sum_mu = PTHREAD_MUTEX_INITIALIZER;

/* Seconds the threads spent on a CPU and runnable but waiting for one (the kernel's
 * schedstat, Linux): what separates waiting for the CPU from waiting for the disk. */
static double sched_run, sched_wait;

static void schedstat_add(const char *path)
{
    FILE *fp = fopen(path, "r");
    unsigned long long run, wait;
    if (!fp)
        return;
    if (fscanf(fp, "%llu %llu", &run, &wait) == 2) {
        sched_run += (double)run / 1e9;
        sched_wait += (double)wait / 1e9;
    }
    fclose(fp);
}

/* Every thread of the process alive now. */
static void schedstat_all(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    char path[300];
    if (!d)
        return;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", e->d_name);
            schedstat_add(path);
        }
    closedir(d);
}

/* rt: connections spread over the runtime's schedulers (corio_spawn_on). */
#define RT_ENDS_MAX 1024
static double rt_end[RT_ENDS_MAX]; /* when each connection's lookups ended (RT_ENDS) */

static int rt_task_fn(struct corio_task *t, void *arg)
{
    uint64_t s = conn_work("asyncfs", (int)(intptr_t)arg);
    if ((intptr_t)arg < RT_ENDS_MAX)
        rt_end[(intptr_t)arg] = now_s();
    pthread_mutex_lock(&sum_mu);
    checksum_total += s;
    pthread_mutex_unlock(&sum_mu);
    return 0;
}

static unsigned rt_n;

static void rt_root_fn(struct corio_task *t, void *arg)
{
    for (int i = 0; i < nconns; i++)
        if (corio_spawn_on(t, (int)((unsigned)i % rt_n), rt_task_fn, (void *)(intptr_t)i,
                           NULL) < 0)
            die(NULL, "spawn_on");
    corio_wait(t);
}

static void *thread_fn(void *arg)
{
    uint64_t s = conn_work("unix", (int)(intptr_t)arg);
    pthread_mutex_lock(&sum_mu);
    schedstat_add("/proc/thread-self/schedstat");
    checksum_total += s;
    pthread_mutex_unlock(&sum_mu);
    return NULL;
}

static double run_mode(const char *mode, long threshold)
{
    schedstat_all(); /* the threads' counts start from here */
    sched_run = -sched_run;
    sched_wait = -sched_wait;
    double t0 = now_s();
    if (!strcmp(mode, "corio")) {
        struct afs_config acfg;
        afs_config_default(&acfg);
        if (threshold >= 0)
            acfg.sync_threshold = (size_t)threshold;
        /* Where a page read that misses the cache is handed to io-wq, as many workers as
         * connections, as the threads mode has threads (on 6.18 it made no difference). */
        acfg.io_workers = (unsigned)nconns;
        if (getenv("IO_WORKERS")) /* "kernel": no cap */
            acfg.io_workers = !strcmp(getenv("IO_WORKERS"), "kernel")
                                  ? AFS_IO_WORKERS_KERNEL
                                  : (unsigned)atoi(getenv("IO_WORKERS"));
        struct afs_ctx *ctx;
        if (afs_ctx_new(&ctx, &acfg) < 0)
            die(NULL, "afs_ctx_new");
        struct corio_config cfg;
        corio_config_default(&cfg);
        cfg.ctx = ctx;
        struct corio_sched *s;
        if (corio_sched_new(&s, &cfg) < 0)
            die(NULL, "corio_sched_new");
        t0 = now_s();
        if (corio_sched_run(s, root_fn, NULL) < 0)
            die(NULL, "corio_sched_run");
        double dt = now_s() - t0;
        schedstat_all();
        struct corio_stats st;
        corio_sched_stats(s, &st);
        fprintf(stderr, "corio: %s, %llu ios in %llu submits\n", afs_ctx_backend(ctx),
                (unsigned long long)st.ios, (unsigned long long)st.submits);
        corio_sched_free(s);
        afs_ctx_free(ctx);
        return dt;
    }
    if (!strcmp(mode, "rt")) {
        struct corio_rt_config cfg;
        corio_rt_config_default(&cfg);
        const char *n = getenv("SCHEDULERS");
        cfg.schedulers = n ? (unsigned)atoi(n) : 0;
        if (getenv("PIN") && atoi(getenv("PIN"))) /* one scheduler per CPU, pinned */
            cfg.flags |= CORIO_RT_PIN;
        if (threshold >= 0)
            cfg.ctx.sync_threshold = (size_t)threshold;
        cfg.ctx.io_workers = (unsigned)nconns;
        struct corio_rt *rt;
        if (corio_rt_new(&rt, &cfg) < 0)
            die(NULL, "corio_rt_new");
        rt_n = corio_rt_schedulers(rt);
        t0 = now_s();
        if (corio_rt_run(rt, rt_root_fn, NULL) < 0)
            die(NULL, "corio_rt_run");
        double dt = now_s() - t0;
        schedstat_all();
        fprintf(stderr, "rt: %u schedulers\n", rt_n);
        if (getenv("RT_ENDS")) /* how evenly the schedulers' shares of the work ended */
            for (unsigned k = 0; k < rt_n; k++) {
                double lo = 1e30, hi = 0;
                for (int i = (int)k; i < nconns && i < RT_ENDS_MAX; i += (int)rt_n) {
                    lo = rt_end[i] - t0 < lo ? rt_end[i] - t0 : lo;
                    hi = rt_end[i] - t0 > hi ? rt_end[i] - t0 : hi;
                }
                fprintf(stderr, "rt: scheduler %u's connections end %.3f-%.3f s\n", k, lo, hi);
            }
        corio_rt_free(rt);
        return dt;
    }
    if (!strcmp(mode, "threads")) {
        pthread_t *th = calloc((size_t)nconns, sizeof *th);
        for (int i = 0; i < nconns; i++)
            pthread_create(&th[i], NULL, thread_fn, (void *)(intptr_t)i);
        for (int i = 0; i < nconns; i++)
            pthread_join(th[i], NULL);
        free(th);
        double dt = now_s() - t0;
        schedstat_all();
        return dt;
    }
    if (!strcmp(mode, "single")) {
        for (int i = 0; i < nconns; i++)
            checksum_total += conn_work("unix", i);
        double dt = now_s() - t0;
        schedstat_all();
        return dt;
    }
    die(NULL, "unknown mode");
    return 0;
}

/* The page cache emptied (root): written data first, then every clean page. */
static void drop_caches(void)
{
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd < 0 || write(fd, "3\n", 2) != 2) {
        perror("bench_sqlite: /proc/sys/vm/drop_caches");
        exit(1);
    }
    close(fd);
}

static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int alternate(const char *ma, const char *mb, int rounds, int cold)
{
    double *speed = calloc((size_t)rounds, sizeof *speed);
    double *cpu = calloc((size_t)rounds, sizeof *cpu);
    long ops = (long)nconns * nlookups;
    for (int r = 0; r < rounds; r++) {
        double ops_s[2], cpu_l[2];
        for (int k = 0; k < 2; k++) {
            int b = (r % 2) ^ k; /* A B, then B A */
            const char *m = b ? mb : ma;
            if (cold)
                drop_caches();
            else if (r == 0 && k == 0)
                run_mode(m, -1); /* a first run not counted: the data into the page cache */
            double c0 = cpu_s();
            double dt = run_mode(m, -1);
            double c = cpu_s() - c0;
            ops_s[b] = (double)ops / dt;
            cpu_l[b] = c / (double)ops;
            printf("lookups,%s,%d,%ld,%.4f,%.0f,%.3f\n", m, nconns, ops, dt, ops_s[b], c);
            fflush(stdout);
        }
        speed[r] = ops_s[0] / ops_s[1];
        cpu[r] = cpu_l[0] / cpu_l[1];
    }
    fprintf(stderr, "alternate %s/%s, %d rounds%s: lookups/s %.3fx, CPU per lookup %.3fx "
                    "(medians)\n",
            ma, mb, rounds, cold ? ", cold" : "", median(speed, rounds), median(cpu, rounds));
    free(speed);
    free(cpu);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: see bench/bench_sqlite.c\n");
        return 2;
    }
    const char *op = argv[1];
    db_path = argv[2];
    rows = atol(argv[3]);
    if (afs_sqlite_vfs_register(NULL, 0) < 0)
        die(NULL, "afs_sqlite_vfs_register");
    if (!strcmp(op, "setup")) {
        sqlite3 *db = open_db(db_path, "unix");
        exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v)");
        exec(db, "BEGIN");
        char sql[160];
        snprintf(sql, sizeof sql,
                 "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < %ld)"
                 " INSERT INTO t SELECT i, randomblob(200) FROM c",
                 rows - 1);
        exec(db, sql);
        exec(db, "COMMIT; PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE");
        sqlite3_close(db);
        return 0;
    }
    if (!strcmp(op, "insert") && argc >= 5) {
        const char *vfs = argv[4];
        sqlite3 *db = open_db(db_path, vfs);
        exec(db, "CREATE TABLE IF NOT EXISTS ins(k INTEGER PRIMARY KEY, v)");
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "INSERT INTO ins(v) VALUES(randomblob(200))", -1, &st, NULL))
            die(db, "prepare");
        double t0 = now_s(), c0 = cpu_s();
        for (long i = 0; i < rows; i++) {
            if (i % 1000 == 0)
                exec(db, i ? "COMMIT; BEGIN" : "BEGIN");
            if (sqlite3_step(st) != SQLITE_DONE)
                die(db, "insert");
            sqlite3_reset(st);
        }
        exec(db, "COMMIT");
        double dt = now_s() - t0, cpu = cpu_s() - c0;
        sqlite3_finalize(st);
        exec(db, "DROP TABLE ins");
        sqlite3_close(db);
        printf("insert,%s,1,%ld,%.4f,%.0f,%.3f\n", vfs, rows, dt, (double)rows / dt, cpu);
        return 0;
    }
    if ((!strcmp(op, "lookups") && argc >= 7) || (!strcmp(op, "scan") && argc >= 6)) {
        const char *mode = argv[4];
        nconns = atoi(argv[5]);
        scan_mode = !strcmp(op, "scan");
        nlookups = scan_mode ? 0 : atoi(argv[6]);
        long threshold = argc >= 8 ? atol(argv[7]) : -1;
        double c0 = cpu_s();
        double dt = run_mode(mode, threshold);
        double cpu = cpu_s() - c0;
        long ops = scan_mode ? (long)nconns * rows : (long)nconns * nlookups;
        printf("%s,%s,%d,%ld,%.4f,%.0f,%.3f\n", op, mode, nconns, ops, dt, (double)ops / dt, cpu);
        fprintf(stderr, "checksum %llu\n", (unsigned long long)checksum_total);
        fprintf(stderr, "sched: %.3f s on a CPU, %.3f s runnable waiting for one\n", sched_run,
                sched_wait);
        return 0;
    }
    if (!strcmp(op, "alternate") && argc >= 9) {
        nconns = atoi(argv[6]);
        nlookups = atoi(argv[7]);
        return alternate(argv[4], argv[5], atoi(argv[8]), argc >= 10 && !strcmp(argv[9], "cold"));
    }
    fprintf(stderr, "usage: see bench/bench_sqlite.c\n");
    return 2;
}
