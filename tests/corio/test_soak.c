/* Load and soak, bounded and self-stopping: many tasks and ops over a small ring,
 * cancellations racing completions, many files opened and closed, and a full "disk"
 * (RLIMIT_FSIZE) in the middle of writes. Nothing lost, every error reported.
 *
 * Suite soak: about a second each, in every run of the suite.
 * Suite soak_large: the same at full scale (100,000 tasks alive at once, 1,000,000 ops, twice),
 * run only with AFS_SOAK_LARGE=1: ctest's soak_large_io_uring and soak_large_threads. */
#include "../common.h"

#include <corio.h>
#include <dirent.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>

static struct corio_sched *k_sched;

static void k_setup(void)
{
    t_setup();
}

static void k_teardown(void)
{
    if (k_sched)
        corio_sched_free(k_sched);
    k_sched = NULL;
    t_teardown();
}

#define T_SOAK(name) Test(soak, name, .init = k_setup, .fini = k_teardown, .timeout = 120)

static void soak_sched(unsigned queue_depth)
{
    struct afs_config acfg;
    afs_config_default(&acfg);
    acfg.queue_depth = queue_depth;
    acfg.sync_threshold = 0; /* every op goes through the backend */
    t_ctx = t_ctx_cfg(&acfg);
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    cfg.stack_size = 32 * 1024;
    cr_assert_eq(corio_sched_new(&k_sched, &cfg), 0);
}

/* ---- 20,000 tasks x 10 reads over a ring of 16: 200,000 ops, all accounted for. ---- */

enum { NT = 20000, NOPS = 10, BS = 512, BLOCKS = 256 };

struct load {
    struct afs_file *f;
    long             ok, bad;
};

static void reader(struct corio_task *t, void *arg)
{
    struct load *l = arg;
    char buf[BS];
    uint64_t seed = (uint64_t)(uintptr_t)t | 1;
    for (int i = 0; i < NOPS; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t off = (seed >> 33) % BLOCKS * BS;
        if (afs_pread(l->f, buf, BS, off) == BS && t_check(buf, BS, off))
            l->ok++;
        else
            l->bad++;
    }
}

static void load_root(struct corio_task *t, void *arg)
{
    for (int i = 0; i < NT; i++)
        cr_assert_eq(corio_spawn(t, reader, arg, NULL), 0);
}

T_SOAK(two_hundred_thousand_ops_over_a_small_ring)
{
    soak_sched(16);
    t_make_file(t_path("f"), BLOCKS * BS);
    struct load l = {0};
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &l.f), 0);
    cr_assert_eq(corio_sched_run(k_sched, load_root, &l), 0);
    cr_assert_eq(l.bad, 0);
    cr_assert_eq(l.ok, (long)NT * NOPS);
    struct afs_stats st;
    afs_ctx_stats(t_ctx, &st);
    cr_assert_eq(st.ops, st.completions, "every op completed exactly once");
    cr_assert_eq(afs_close(l.f), 0);
}

/* ---- Cancellations racing completions. ---- */

enum { NC = 2000 };

struct race {
    struct afs_file   *f;
    struct corio_task *tasks[NC];
    long               full, cancelled, other;
};

static void racer(struct corio_task *t, void *arg)
{
    struct race *r = arg;
    static _Thread_local char buf[65536];
    ssize_t n = afs_pread(r->f, buf, sizeof buf, 0);
    if (n == (ssize_t)sizeof buf)
        r->full++;
    else if (n == -ECANCELED)
        r->cancelled++;
    else
        r->other++;
}

static void canceller(struct corio_task *t, void *arg)
{
    struct race *r = arg;
    uint64_t seed = 12345;
    for (int i = 0; i < NC; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        corio_cancel(r->tasks[(seed >> 33) % NC]);
        if (i % 50 == 0)
            corio_yield(t); /* let completions and cancellations interleave */
    }
}

static void race_root(struct corio_task *t, void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < NC; i++)
        cr_assert_eq(corio_spawn(t, racer, r, &r->tasks[i]), 0);
    corio_spawn(t, canceller, r, NULL);
}

T_SOAK(cancellations_racing_completions)
{
    soak_sched(32);
    t_make_file(t_path("f"), 65536);
    static struct race r;
    memset(&r, 0, sizeof r);
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &r.f), 0);
    cr_assert_eq(corio_sched_run(k_sched, race_root, &r), 0);
    cr_assert_eq(r.other, 0, "%ld reads ended neither in full nor cancelled", r.other);
    cr_assert_eq(r.full + r.cancelled, NC);
    struct afs_stats st;
    afs_ctx_stats(t_ctx, &st);
    cr_assert_eq(st.ops, st.completions);
    cr_assert_eq(afs_close(r.f), 0);
}

/* ---- Many files opened and closed. ---- */

static void open_close(struct corio_task *t, void *arg)
{
    long *n = arg;
    char name[64] = {0}; /* 8 bytes of it are written: all of them defined */
    snprintf(name, sizeof name, "g%ld", *n % 64);
    for (int i = 0; i < 50; i++) {
        struct afs_file *f;
        char path[PATH_MAX]; /* on this stack: the open suspends, other tasks use t_path() */
        snprintf(path, sizeof path, "%s", t_path(name));
        cr_assert_eq(afs_open(t_ctx, path, AFS_RDWR | AFS_CREAT, 0600, AFS_MODE_SYNC, &f), 0);
        cr_assert_eq(afs_pwrite(f, name, 8, (uint64_t)i * 8), 8);
        cr_assert_eq(afs_close(f), 0);
        (*n)++;
    }
}

static void files_root(struct corio_task *t, void *arg)
{
    for (int i = 0; i < 100; i++)
        corio_spawn(t, open_close, arg, NULL);
}

T_SOAK(many_files_opened_and_closed)
{
    soak_sched(64);
    long n = 0;
    cr_assert_eq(corio_sched_run(k_sched, files_root, &n), 0);
    cr_assert_eq(n, 5000);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    /* No descriptor leaked: a fresh open still gets a low number. */
    int fd = open(t_path("g0"), O_RDONLY);
    cr_assert_lt(fd, 64);
    close(fd);
}

/* ---- A full "disk" mid-write: writes past the limit fail, earlier data stays. ---- */

struct fill {
    struct afs_file *f;
    long             ok, efbig, other;
    unsigned         next; /* spreads the tasks over the file */
};

static void filler(struct corio_task *t, void *arg)
{
    struct fill *w = arg;
    enum { LEN = 65536 };
    /* Each task its own buffer: the library owns it while the write is in flight. */
    char *buf = malloc(LEN);
    cr_assert_not_null(buf);
    w->next++;
    for (int i = 0; i < 8; i++) {
        uint64_t off = ((uint64_t)w->next * 8 + (uint64_t)i) * LEN % (8 << 20);
        t_fill(buf, LEN, off);
        ssize_t r = afs_pwrite(w->f, buf, LEN, off);
        if (r == LEN)
            w->ok++;
        else if (r == -EFBIG)
            w->efbig++;
        else
            w->other++;
    }
    free(buf);
}

static void fill_root(struct corio_task *t, void *arg)
{
    for (int i = 0; i < 64; i++)
        corio_spawn(t, filler, arg, NULL);
}

T_SOAK(full_disk_mid_write)
{
    soak_sched(32);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {4 << 20, 4 << 20}; /* the "disk" holds 4 MiB of this 8 MiB pattern */
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    struct fill w = {0};
    cr_assert_eq(afs_open(t_ctx, t_path("big"), AFS_RDWR | AFS_CREAT, 0600, AFS_MODE_SYNC, &w.f), 0);
    cr_assert_eq(corio_sched_run(k_sched, fill_root, &w), 0);
    cr_assert_eq(w.other, 0);
    cr_assert_gt(w.efbig, 0, "some writes hit the limit");
    cr_assert_gt(w.ok, 0);
    /* What was reported written is there. */
    static char back[65536];
    for (uint64_t off = 0; off < (4 << 20); off += sizeof back) {
        ssize_t n = afs_pread(w.f, back, sizeof back, off);
        if (n == (ssize_t)sizeof back && back[0] | back[1])
            cr_assert(t_check(back, sizeof back, off), "block at %llu", (unsigned long long)off);
    }
    cr_assert_eq(afs_close(w.f), 0);
}

/* ==========================================================================================
 * soak_large: the full scale, bounded (well under two minutes per backend) and self-stopping.
 * ======================================================================================== */

#define T_LARGE(name) Test(soak_large, name, .init = k_setup, .fini = k_teardown, .timeout = 300)

static void need_large(void)
{
    if (!getenv("AFS_SOAK_LARGE"))
        cr_skip_test("the full-scale soak runs as ctest soak_large_<backend> (AFS_SOAK_LARGE=1)");
}

static void large_sched(unsigned queue_depth)
{
    struct afs_config acfg;
    afs_config_default(&acfg);
    acfg.queue_depth = queue_depth;
    acfg.sync_threshold = 0; /* every op goes through the backend */
    t_ctx = t_ctx_cfg(&acfg);
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    cfg.stack_size = 16 * 1024; /* the smallest: 100,000 of them stay alive at once */
    cr_assert_eq(corio_sched_new(&k_sched, &cfg), 0);
}

static int fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static long proc_number(const char *path)
{
    FILE *fp = fopen(path, "r");
    long v = -1;
    if (fp) {
        if (fscanf(fp, "%ld", &v) != 1)
            v = -1;
        fclose(fp);
    }
    return v;
}

static long map_count(void)
{
    FILE *fp = fopen("/proc/self/maps", "r");
    cr_assert_not_null(fp);
    long n = 0;
    int c;
    while ((c = getc(fp)) != EOF)
        n += c == '\n';
    fclose(fp);
    return n;
}

/* Whether task stacks cost one memory-map entry (guard markers, MADV_GUARD_INSTALL: Linux
 * 6.13) or two (a PROT_NONE guard splits the mapping). Probed as src/corio/stack.c does. */
static bool guard_markers_work(void)
{
    long page = sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bool ok = false;
    int fds[2];
    if (p != MAP_FAILED) {
        if (madvise(p, (size_t)page, 102 /* MADV_GUARD_INSTALL */) == 0 && pipe(fds) == 0) {
            ok = write(fds[1], p, 1) < 0 && errno == EFAULT;
            close(fds[0]);
            close(fds[1]);
        }
        munmap(p, (size_t)page);
    }
    return ok;
}

/* How many tasks may be alive at once: all of them where stacks cost one map entry; else as
 * many as vm.max_map_count leaves room for at two entries each. AFS_SOAK_WAVE=n forces n. */
static int live_task_budget(int want, const char **why)
{
    const char *env = getenv("AFS_SOAK_WAVE");
    if (env && atoi(env) > 0) {
        *why = "AFS_SOAK_WAVE";
        return atoi(env) < want ? atoi(env) : want;
    }
    if (guard_markers_work()) {
        *why = "guard markers: one map entry per stack";
        return want;
    }
    long max = proc_number("/proc/sys/vm/max_map_count");
    long room = max > 0 ? (max - map_count() - 2000) / 2 : want;
    *why = "vm.max_map_count: two map entries per stack";
    if (room < 1000)
        room = 1000;
    return room < want ? (int)room : want;
}

static long rss_kib(void)
{
    FILE *fp = fopen("/proc/self/statm", "r");
    cr_assert_not_null(fp);
    long size = 0, res = 0;
    cr_assert_eq(fscanf(fp, "%ld %ld", &size, &res), 2);
    fclose(fp);
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static long peak_rss_kib(void)
{
    FILE *fp = fopen("/proc/self/status", "r");
    cr_assert_not_null(fp);
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, "VmHWM: %ld", &v) == 1)
            break;
    fclose(fp);
    return v;
}

static long heap_kib(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    struct mallinfo2 mi = mallinfo2();
    return (long)((mi.uordblks + mi.hblkhd) / 1024);
#else
    return 0;
#endif
}

/* ---- 100,000 tasks, 1,000,000 ops over a ring of 64, every byte checked. ---- */

enum { BIG_TASKS = 100000, BIG_READS = 8, BIG_BS = 512, BIG_BLOCKS = 4096 };

struct big {
    struct afs_file *r, *w;  /* a pattern file to read; one block per task to write */
    int              wave;   /* tasks spawned before the root waits for them */
    int              next;   /* ids handed out */
    int              live, peak, waves;
    long             reads_ok, writes_ok, readbacks_ok, bad;
};

static void big_task(struct corio_task *t, void *arg)
{
    struct big *b = arg;
    int id = b->next++;
    if (++b->live > b->peak)
        b->peak = b->live;
    char buf[BIG_BS];
    uint64_t seed = (uint64_t)id * 0x9e3779b97f4a7c15ull | 1;
    for (int i = 0; i < BIG_READS; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t off = (seed >> 33) % BIG_BLOCKS * BIG_BS;
        if (afs_pread(b->r, buf, BIG_BS, off) == BIG_BS && t_check(buf, BIG_BS, off))
            b->reads_ok++;
        else
            b->bad++;
    }
    uint64_t mine = (uint64_t)id * BIG_BS;
    t_fill(buf, BIG_BS, mine);
    if (afs_pwrite(b->w, buf, BIG_BS, mine) == BIG_BS)
        b->writes_ok++;
    else
        b->bad++;
    memset(buf, 0, sizeof buf);
    if (afs_pread(b->w, buf, BIG_BS, mine) == BIG_BS && t_check(buf, BIG_BS, mine))
        b->readbacks_ok++;
    else
        b->bad++;
    b->live--;
}

static void big_root(struct corio_task *t, void *arg)
{
    struct big *b = arg;
    for (int spawned = 0; spawned < BIG_TASKS;) {
        int n = BIG_TASKS - spawned < b->wave ? BIG_TASKS - spawned : b->wave;
        for (int i = 0; i < n; i++)
            cr_assert_eq(corio_spawn(t, big_task, b, NULL), 0, "spawn %d", spawned + i);
        spawned += n;
        b->waves++;
        corio_wait(t); /* a wave at a time, when stacks cannot all be mapped at once */
    }
}

T_LARGE(hundred_thousand_tasks_a_million_ops)
{
    need_large();
    large_sched(64);
    const char *why;
    int wave = live_task_budget(BIG_TASKS, &why);
    int fds = fd_count();
    t_make_file(t_path("r"), BIG_BLOCKS * BIG_BS);
    struct big b = {.wave = wave};
    cr_assert_eq(afs_open(t_ctx, t_path("r"), AFS_RDONLY, 0, AFS_MODE_SYNC, &b.r), 0);
    cr_assert_eq(afs_open(t_ctx, t_path("w"), AFS_RDWR | AFS_CREAT, 0600, AFS_MODE_SYNC, &b.w),
                 0);
    long rss[2], heap[2];
    for (int round = 0; round < 2; round++) {
        struct afs_stats before, after;
        afs_ctx_stats(t_ctx, &before);
        int64_t t0 = corio_now();
        b.next = b.peak = b.waves = 0;
        b.reads_ok = b.writes_ok = b.readbacks_ok = b.bad = 0;
        cr_assert_eq(corio_sched_run(k_sched, big_root, &b), 0);
        double secs = (double)(corio_now() - t0) / 1e9;
        afs_ctx_stats(t_ctx, &after);
        cr_assert_eq(b.next, BIG_TASKS);
        cr_assert_eq(b.live, 0);
        cr_assert_eq(b.bad, 0, "%ld ops failed or read wrong data", b.bad);
        cr_assert_eq(b.reads_ok, (long)BIG_TASKS * BIG_READS);
        cr_assert_eq(b.writes_ok, BIG_TASKS);
        cr_assert_eq(b.readbacks_ok, BIG_TASKS);
        uint64_t ops = after.ops - before.ops;
        cr_assert_eq(ops, (uint64_t)BIG_TASKS * (BIG_READS + 2), "one op per call");
        cr_assert_eq(after.completions - before.completions, ops, "every op completed once");
        cr_assert_eq(after.ops, after.completions);
        rss[round] = rss_kib();
        heap[round] = heap_kib();
        cr_log_info("%s round %d: %d tasks (at most %d alive at once, %d wave(s); %s), "
                    "%llu ops in %.2f s (%.0f ops/s), %llu submits, %llu resubmits; "
                    "RSS %ld MiB after (peak %ld MiB), heap %ld MiB",
                    afs_ctx_backend(t_ctx), round + 1, BIG_TASKS, b.peak, b.waves, why,
                    (unsigned long long)ops, secs, (double)ops / secs,
                    (unsigned long long)(after.kernel_submits - before.kernel_submits),
                    (unsigned long long)(after.resubmits - before.resubmits), rss[round] / 1024,
                    peak_rss_kib() / 1024, heap[round] / 1024);
    }
    cr_assert_eq(b.peak, wave, "the tasks of a wave are alive together");
    /* Round 2 reuses what round 1 pooled (tasks, stacks): nothing grows per op or per task.
     * (Under ASan, mallinfo2 says 0 and LeakSanitizer checks the heap instead.) */
    if (heap[0] > 0)
        cr_assert_leq(heap[1], heap[0] + 1024, "heap grew from %ld to %ld KiB", heap[0],
                      heap[1]);
    cr_assert_leq(rss[1], rss[0] + rss[0] / 10 + 16384, "RSS grew from %ld to %ld KiB", rss[0],
                  rss[1]);
    cr_assert_eq(afs_close(b.r), 0);
    cr_assert_eq(afs_close(b.w), 0);
    cr_assert_eq(fd_count(), fds, "descriptors leaked");
}

/* ---- 50,000 tasks' reads against 4 cancellers and their own deadlines. ---- */

enum { RC_TASKS = 50000, RC_OPS = 4, RC_CANCELLERS = 4, RC_BS = 4096, RC_BLOCKS = 256 };

struct rc {
    struct afs_file    *f;
    struct corio_task **tasks;
    int                 next;
    long                full, cancelled, timedout, other, cancels;
};

static void rc_racer(struct corio_task *t, void *arg)
{
    struct rc *r = arg;
    int id = r->next++;
    if (id % 5 == 0) /* some tasks also run out of time, now or a little later */
        corio_set_deadline(t, corio_now() + (int64_t)(id % 3) * 50000);
    char buf[RC_BS];
    for (int i = 0; i < RC_OPS; i++) {
        uint64_t off = (uint64_t)((id * 7 + i * 13) % RC_BLOCKS) * RC_BS;
        ssize_t n = afs_pread(r->f, buf, RC_BS, off);
        if (n == RC_BS && t_check(buf, RC_BS, off))
            r->full++;
        else if (n == -ECANCELED)
            r->cancelled++;
        else if (n == -ETIMEDOUT)
            r->timedout++;
        else
            r->other++;
    }
}

static void rc_canceller(struct corio_task *t, void *arg)
{
    struct rc *r = arg;
    uint64_t seed = (uint64_t)(uintptr_t)t;
    for (int i = 0; i < RC_TASKS / 2 / RC_CANCELLERS; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        corio_cancel(r->tasks[(seed >> 33) % RC_TASKS]);
        r->cancels++;
        if (i % 64 == 0)
            corio_yield(t); /* let I/O phases run: ops queued, in flight and done get hit */
    }
}

static void rc_root(struct corio_task *t, void *arg)
{
    struct rc *r = arg;
    for (int i = 0; i < RC_TASKS; i++)
        cr_assert_eq(corio_spawn(t, rc_racer, r, &r->tasks[i]), 0);
    for (int i = 0; i < RC_CANCELLERS; i++)
        cr_assert_eq(corio_spawn(t, rc_canceller, r, NULL), 0);
}

T_LARGE(cancellations_and_deadlines_racing_completions)
{
    need_large();
    large_sched(64);
    t_make_file(t_path("f"), RC_BLOCKS * RC_BS);
    struct rc r = {0};
    r.tasks = calloc(RC_TASKS, sizeof *r.tasks);
    cr_assert_not_null(r.tasks);
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &r.f), 0);
    int64_t t0 = corio_now();
    cr_assert_eq(corio_sched_run(k_sched, rc_root, &r), 0);
    double secs = (double)(corio_now() - t0) / 1e9;
    cr_assert_eq(r.other, 0, "%ld reads ended neither in full nor cancelled/timed out", r.other);
    cr_assert_eq(r.full + r.cancelled + r.timedout, (long)RC_TASKS * RC_OPS);
    cr_assert_gt(r.cancelled, 0);
    cr_assert_gt(r.full, 0);
    struct afs_stats st;
    afs_ctx_stats(t_ctx, &st);
    cr_assert_eq(st.ops, st.completions, "every op completed exactly once");
    cr_log_info("%s: %d tasks, %ld cancels: %ld reads full, %ld cancelled, %ld timed out; "
                "%llu ops reached the context; %.2f s",
                afs_ctx_backend(t_ctx), RC_TASKS, r.cancels, r.full, r.cancelled, r.timedout,
                (unsigned long long)st.ops, secs);
    cr_assert_eq(afs_close(r.f), 0);
    free(r.tasks);
}

/* ---- 50,000 opens and closes, up to 2,000 files open at once. ---- */

enum { OC_TASKS = 2000, OC_ROUNDS = 25, OC_NAMES = 512 };

struct oc {
    int  next;
    long cycles, bad;
};

static void oc_task(struct corio_task *t, void *arg)
{
    struct oc *o = arg;
    int id = o->next++;
    for (int i = 0; i < OC_ROUNDS; i++) {
        char name[32];
        snprintf(name, sizeof name, "o%d", (id * 31 + i) % OC_NAMES);
        struct afs_file *f;
        char path[PATH_MAX]; /* on this stack: the open suspends, other tasks use t_path() */
        snprintf(path, sizeof path, "%s", t_path(name));
        if (afs_open(t_ctx, path, AFS_RDWR | AFS_CREAT, 0600, AFS_MODE_SYNC, &f) != 0) {
            o->bad++;
            continue;
        }
        /* Each task its own 64 bytes of the file: written, read back, checked. */
        uint64_t off = (uint64_t)(id % 256) * 64;
        char w[64], r[64];
        t_fill(w, sizeof w, off);
        if (afs_pwrite(f, w, sizeof w, off) != (ssize_t)sizeof w ||
            afs_pread(f, r, sizeof r, off) != (ssize_t)sizeof r || memcmp(w, r, sizeof w))
            o->bad++;
        if (afs_close(f) != 0)
            o->bad++;
        o->cycles++;
    }
}

static void oc_root(struct corio_task *t, void *arg)
{
    for (int i = 0; i < OC_TASKS; i++)
        cr_assert_eq(corio_spawn(t, oc_task, arg, NULL), 0);
}

T_LARGE(fifty_thousand_opens_and_closes)
{
    need_large();
    large_sched(64);
    /* The usual soft limit (1,024) is too low: raise it, as far as the hard limit allows
     * (this process only; only root could raise the hard one). */
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < OC_TASKS + 256)
        cr_skip_test("hard RLIMIT_NOFILE %llu is below %d", (unsigned long long)rl.rlim_max,
                     OC_TASKS + 256);
    if (rl.rlim_cur < OC_TASKS + 256) {
        rl.rlim_cur = rl.rlim_max;
        cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0, "setrlimit: %s", strerror(errno));
    }
    int fds = fd_count();
    struct oc o = {0};
    int64_t t0 = corio_now();
    cr_assert_eq(corio_sched_run(k_sched, oc_root, &o), 0);
    double secs = (double)(corio_now() - t0) / 1e9;
    cr_assert_eq(o.bad, 0);
    cr_assert_eq(o.cycles, (long)OC_TASKS * OC_ROUNDS);
    cr_assert_eq(fd_count(), fds, "descriptors leaked");
    cr_log_info("%s: %ld opens and closes, %.2f s", afs_ctx_backend(t_ctx), o.cycles, secs);
}

/* ---- A full "disk" (RLIMIT_FSIZE 32 MiB) under 256 writers: exact results, data kept. ---- */

enum { FD_TASKS = 256, FD_WRITES = 32, FD_LEN = 65536 };
#define FD_LIMIT ((uint64_t)32 << 20)
#define FD_SPAN  ((uint64_t)64 << 20)

struct fdisk {
    struct afs_file *f;
    int              next;
    long             ok, efbig, straddled, wrong;
    unsigned char    written[FD_LIMIT / FD_LEN];
};

static void fd_writer(struct corio_task *t, void *arg)
{
    struct fdisk *d = arg;
    int id = d->next++;
    char *buf = malloc(FD_LEN); /* the library owns it while the write is in flight */
    cr_assert_not_null(buf);
    for (int i = 0; i < FD_WRITES; i++) {
        uint64_t off;
        if (i % 8 == 7) {
            off = FD_LIMIT - FD_LEN / 2; /* half fits: written up to the limit, then EFBIG */
        } else {
            uint64_t block = ((uint64_t)id * FD_WRITES + (uint64_t)i) * 7919 % (FD_SPAN / FD_LEN);
            off = block * FD_LEN;
        }
        t_fill(buf, FD_LEN, off);
        ssize_t r = afs_pwrite(d->f, buf, FD_LEN, off);
        if (off + FD_LEN <= FD_LIMIT && r == FD_LEN) {
            d->ok++;
            d->written[off / FD_LEN] = 1;
        } else if (off + FD_LEN > FD_LIMIT && r == -EFBIG) {
            if (off < FD_LIMIT)
                d->straddled++;
            else
                d->efbig++;
        } else {
            d->wrong++;
        }
    }
    free(buf);
}

static void fd_root(struct corio_task *t, void *arg)
{
    for (int i = 0; i < FD_TASKS; i++)
        cr_assert_eq(corio_spawn(t, fd_writer, arg, NULL), 0);
}

T_LARGE(full_disk_under_many_writers)
{
    need_large();
    large_sched(32);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {FD_LIMIT, FD_LIMIT};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    static struct fdisk d;
    memset(&d, 0, sizeof d);
    cr_assert_eq(afs_open(t_ctx, t_path("big"), AFS_RDWR | AFS_CREAT, 0600, AFS_MODE_SYNC, &d.f),
                 0);
    int64_t t0 = corio_now();
    cr_assert_eq(corio_sched_run(k_sched, fd_root, &d), 0);
    double secs = (double)(corio_now() - t0) / 1e9;
    cr_assert_eq(d.wrong, 0, "%ld writes got a result other than in full below the limit, "
                             "EFBIG past it", d.wrong);
    cr_assert_eq(d.ok + d.efbig + d.straddled, (long)FD_TASKS * FD_WRITES);
    cr_assert_gt(d.efbig, 0);
    cr_assert_gt(d.straddled, 0);
    /* Every block reported written holds its data; the half-written one up to the limit. */
    char *back = malloc(FD_LEN);
    cr_assert_not_null(back);
    long checked = 0;
    for (uint64_t b = 0; b < FD_LIMIT / FD_LEN; b++) {
        if (!d.written[b])
            continue;
        cr_assert_eq(afs_pread(d.f, back, FD_LEN, b * FD_LEN), FD_LEN);
        cr_assert(t_check(back, FD_LEN, b * FD_LEN), "block %llu", (unsigned long long)b);
        checked++;
    }
    cr_assert_eq(afs_pread(d.f, back, FD_LEN / 2, FD_LIMIT - FD_LEN / 2), FD_LEN / 2);
    cr_assert(t_check(back, FD_LEN / 2, FD_LIMIT - FD_LEN / 2));
    cr_assert_eq(afs_pread(d.f, back, FD_LEN, FD_LIMIT), 0, "nothing past the limit");
    free(back);
    /* The limit lifted, the same context writes there. */
    rl.rlim_cur = rl.rlim_max = RLIM_INFINITY;
    if (setrlimit(RLIMIT_FSIZE, &rl) == 0) {
        char w[4096];
        t_fill(w, sizeof w, FD_LIMIT);
        cr_assert_eq(afs_pwrite(d.f, w, sizeof w, FD_LIMIT), (ssize_t)sizeof w);
    }
    cr_log_info("%s: %ld writes in full, %ld EFBIG, %ld cut at the limit (EFBIG); %ld blocks "
                "checked; %.2f s",
                afs_ctx_backend(t_ctx), d.ok, d.efbig, d.straddled, checked, secs);
    cr_assert_eq(afs_close(d.f), 0);
}
