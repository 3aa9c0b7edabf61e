/* Small reads in corio tasks (include/asyncfs.h, "Inside a corio task"): under the sync
 * threshold a read the page cache holds is served at once on the scheduler's thread, and one
 * it does not hold joins the phase's batch instead of blocking that thread. The read that
 * never waits goes through the system call table (afs__sys.pread_nowait), so the tests below
 * choose its answer: a hit, a miss, a short read, a refusal. */
#include "../common.h"

#include "internal.h" /* afs__sys */

#include <corio.h>

enum { N = 16, LEN = 4096 };

static ssize_t (*real_nowait)(afs__fd_t fd, void *buf, size_t len, uint64_t off);
static int nowait_calls;
static int answer; /* what the fake read says: 0 all, 1 -EAGAIN, 2 half, 3 -EOPNOTSUPP */

/* The whole read, made with the table's plain pread (so it works on every platform). */
static ssize_t fake_nowait(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    nowait_calls++;
    if (answer == 1)
        return -EAGAIN;
    if (answer == 3)
        return -EOPNOTSUPP;
    /* 2: a short read, as where only part of the range is cached. */
    return afs__sys.pread(fd, buf, answer == 2 ? len / 2 : len, off);
}

struct reader {
    struct afs_file *f;
    int              i;
    ssize_t          res;
    char             buf[LEN];
};

static struct reader rs[N];
static int nreaders;

static void read_task(struct corio_task *t, void *arg)
{
    (void)t;
    struct reader *r = arg;
    memset(r->buf, 0, sizeof r->buf);
    r->res = afs_pread(r->f, r->buf, LEN, (uint64_t)r->i * LEN);
}

static void root(struct corio_task *t, void *arg)
{
    (void)arg;
    for (int i = 0; i < nreaders; i++)
        cr_assert_eq(corio_spawn(t, read_task, &rs[i], NULL), 0);
}

#ifdef __linux__
/* Writes the file to the disk and drops its pages from the page cache. */
static void drop_pages(const char *path)
{
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0);
    cr_assert_eq(fsync(fd), 0);
    cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    close(fd);
}
#endif

/* Runs fn as the root task of a new scheduler on t_ctx; returns 0 or corio_sched_run's
 * error, the context's counters across the run in *d (ops, inline_ops) and the scheduler's
 * I/O count in *ios (NULL: not wanted). */
static int sched_run(void (*fn)(struct corio_task *, void *), struct afs_stats *d,
                     uint64_t *ios)
{
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    struct corio_sched *s;
    cr_assert_eq(corio_sched_new(&s, &cfg), 0);
    struct afs_stats a, b;
    afs_ctx_stats(t_ctx, &a);
    int rc = corio_sched_run(s, fn, NULL);
    afs_ctx_stats(t_ctx, &b);
    struct corio_stats st;
    corio_sched_stats(s, &st);
    if (ios)
        *ios = st.ios;
    corio_sched_free(s);
    d->ops = b.ops - a.ops;
    d->inline_ops = b.inline_ops - a.inline_ops;
    return rc;
}

/* n tasks each read 4 KiB of a pattern file (default sync threshold) on one scheduler, the
 * file's pages dropped from the cache first when `drop`; returns the context's counters
 * across the run in *d and the scheduler's I/O count in *ios. */
static void run_readers(int n, bool drop, struct afs_stats *d, uint64_t *ios)
{
    t_ctx = t_ctx_cfg(NULL);
    t_make_file(t_path("f"), (size_t)N * LEN);
#ifdef __linux__
    if (drop)
        drop_pages(t_path("f"));
#else
    (void)drop;
#endif
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
#ifdef __linux__
    /* No read-ahead on the library's descriptor: a miss brings in its own page only, so the
     * kernel cannot have read the other readers' pages before they look. */
    if (drop)
        cr_assert_eq(posix_fadvise((int)afs_file_fd(f), 0, 0, POSIX_FADV_RANDOM), 0);
#endif
    nreaders = n;
    for (int i = 0; i < n; i++) {
        rs[i].f = f;
        rs[i].i = i;
        rs[i].res = -1;
    }
    cr_assert_eq(sched_run(root, d, ios), 0);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(rs[i].res, LEN, "reader %d: %zd", i, rs[i].res);
        cr_assert(t_check(rs[i].buf, LEN, (uint64_t)i * LEN), "reader %d: wrong bytes", i);
    }
    cr_assert_eq(afs_close(f), 0);
}

static void fake_on(int how)
{
    real_nowait = afs__sys.pread_nowait;
    afs__sys.pread_nowait = fake_nowait;
    answer = how;
    nowait_calls = 0;
}

static void fake_off(void)
{
    afs__sys.pread_nowait = real_nowait;
}

#define T_CACHED(name) Test(cached, name, .init = t_setup, .fini = t_teardown, .timeout = 60)

T_CACHED(a_read_the_cache_holds_is_served_without_suspending)
{
    fake_on(0);
    struct afs_stats d;
    uint64_t ios;
    run_readers(N, false, &d, &ios);
    fake_off();
    cr_assert_eq(nowait_calls, N);
    cr_assert_eq(d.inline_ops, N, "every read served at once (%llu)",
                 (unsigned long long)d.inline_ops);
    cr_assert_eq(d.ops, 0, "no op queued");
    cr_assert_eq(ios, 0, "no task suspended for I/O");
}

T_CACHED(a_miss_joins_the_batch_instead_of_blocking_the_thread)
{
    fake_on(1);
    struct afs_stats d;
    uint64_t ios;
    run_readers(N, false, &d, &ios);
    fake_off();
    cr_assert_eq(nowait_calls, 1, "after a miss the file's next reads do not ask (%d did)",
                 nowait_calls);
    cr_assert_eq(d.inline_ops, 0, "no read ran inline after a miss (%llu did)",
                 (unsigned long long)d.inline_ops);
    cr_assert_eq(d.ops, N, "every read went to the backend");
    cr_assert_eq(ios, N);
}

/* Whether a file keeps asking is decided by what its answers cost (include/asyncfs.h): the
 * fake read below says miss or hit by a pattern of the read's index, and advances a fake
 * clock by what each answer is made to cost. */
static int64_t fake_clock;
static int64_t hit_ns, miss_ns;
static int64_t slow_hit_ns; /* nonzero: what a hit at an odd index costs instead */
static int     read_no;
static int     miss_until;  /* reads before this index miss */
static int     miss_every;  /* then one in this many misses (0: none) */
static int64_t (*real_now)(void);

static int64_t fake_now(void)
{
    return fake_clock;
}

static ssize_t timed_nowait(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    nowait_calls++;
    if (read_no < miss_until || (miss_every && read_no % miss_every == 0)) {
        fake_clock += miss_ns;
        return -EAGAIN;
    }
    fake_clock += slow_hit_ns && read_no % 2 ? slow_hit_ns : hit_ns;
    return afs__sys.pread(fd, buf, len, off);
}

enum { SEQ_READS = 3000, SEQ_TAIL = 1000 };

struct seq_result {
    int      asked_tail;  /* reads that asked among the last SEQ_TAIL */
    int      asked_cold;  /* among the first miss_until */
    uint64_t inline_tail; /* served at once among the last SEQ_TAIL */
    uint64_t ops;         /* reads that went to the backend */
};
static struct seq_result seq;
static struct afs_file  *seq_f;

static void seq_task(struct corio_task *t, void *arg)
{
    (void)t;
    (void)arg;
    char buf[LEN];
    struct afs_stats a, b, z;
    afs_ctx_stats(t_ctx, &z);
    int asked = 0;
    for (read_no = 0; read_no < SEQ_READS; read_no++) {
        if (read_no == miss_until)
            seq.asked_cold = nowait_calls;
        if (read_no == SEQ_READS - SEQ_TAIL) {
            asked = nowait_calls;
            afs_ctx_stats(t_ctx, &a);
        }
        uint64_t off = (uint64_t)(read_no % N) * LEN;
        cr_assert_eq(afs_pread(seq_f, buf, LEN, off), LEN);
        cr_assert(t_check(buf, LEN, off), "read %d: wrong bytes", read_no);
    }
    afs_ctx_stats(t_ctx, &b);
    seq.asked_tail = nowait_calls - asked;
    seq.inline_tail = b.inline_ops - a.inline_ops;
    seq.ops = b.ops - z.ops;
}

/* SEQ_READS reads of 4 KiB in one task, the fake answers and clock on. */
static void run_seq(int64_t hit, int64_t miss, int until, int every)
{
    t_ctx = t_ctx_cfg(NULL);
    t_make_file(t_path("f"), (size_t)N * LEN);
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &seq_f), 0);
    real_nowait = afs__sys.pread_nowait;
    real_now = afs__sys.now;
    afs__sys.pread_nowait = timed_nowait;
    afs__sys.now = fake_now;
    nowait_calls = 0;
    hit_ns = hit;
    miss_ns = miss;
    miss_until = until;
    miss_every = every;
    memset(&seq, 0, sizeof seq);
    read_no = 0;
    struct afs_stats d;
    int rc = sched_run(seq_task, &d, NULL);
    afs__sys.pread_nowait = real_nowait;
    afs__sys.now = real_now;
    cr_assert_eq(rc, 0);
    cr_assert_eq(afs_close(seq_f), 0);
}

T_CACHED(a_cold_file_asks_once_in_a_while_and_reads_inline_again_once_cached)
{
    run_seq(1000, 20000, 1000, 0); /* the first 1,000 reads miss, then every one hits */
    cr_assert(seq.asked_cold >= 2 && seq.asked_cold <= 1000 / 16,
              "while cold, a few reads ask (%d of 1000)", seq.asked_cold);
    cr_assert_eq(seq.inline_tail, SEQ_TAIL, "once cached, every read at once again (%llu)",
                 (unsigned long long)seq.inline_tail);
    cr_assert_eq(seq.asked_tail, SEQ_TAIL);
    cr_assert(seq.ops >= 1000 - 1000 / 16, "the cold reads went to the backend (%llu)",
              (unsigned long long)seq.ops);
}

T_CACHED(a_file_whose_misses_cost_what_its_hits_do_keeps_asking)
{
    run_seq(1000, 1000, 0, 3); /* one read in 3 misses; a miss costs a hit's time */
    cr_assert_eq(seq.asked_tail, SEQ_TAIL, "every read asks (%d of %d)", seq.asked_tail,
                 SEQ_TAIL);
    uint64_t hits = 0;
    for (int i = SEQ_READS - SEQ_TAIL; i < SEQ_READS; i++)
        hits += i % 3 != 0;
    cr_assert_eq(seq.inline_tail, hits, "the hits at once (%llu of %llu)",
                 (unsigned long long)seq.inline_tail, (unsigned long long)hits);
}

T_CACHED(a_file_whose_misses_cost_far_more_than_its_hits_stops_asking)
{
    run_seq(1000, 20000, 0, 3); /* the same answers, a miss 20 times dearer */
    cr_assert(seq.asked_tail <= SEQ_TAIL / 16, "most reads go to the batch without asking "
              "(%d of %d asked)", seq.asked_tail, SEQ_TAIL);
}

/* Where misses' device reads end in interrupts, a hit that happens to take them looks dear:
 * a hit's cost is its lowest recent time, so every other hit 30 times slower does not make
 * asking look worth it (their average would: 15.5 us a hit against 5 us a miss). */
T_CACHED(hits_slowed_by_others_interrupts_do_not_make_asking_look_cheap)
{
    slow_hit_ns = 30000;
    run_seq(1000, 5000, 0, 3);
    slow_hit_ns = 0;
    cr_assert(seq.asked_tail <= SEQ_TAIL / 16, "most reads go to the batch without asking "
              "(%d of %d asked)", seq.asked_tail, SEQ_TAIL);
}

T_CACHED(a_short_answer_is_read_whole_through_the_batch)
{
    fake_on(2);
    struct afs_stats d;
    uint64_t ios;
    run_readers(N, false, &d, &ios);
    fake_off();
    cr_assert_eq(d.inline_ops, 0);
    cr_assert_eq(d.ops, N);
}

T_CACHED(a_file_that_refuses_runs_its_reads_inline_and_is_not_asked_again)
{
    fake_on(3);
    struct afs_stats d;
    uint64_t ios;
    run_readers(N, false, &d, &ios);
    fake_off();
    cr_assert_eq(nowait_calls, 1, "asked once per file, then remembered (%d)", nowait_calls);
    cr_assert_eq(d.inline_ops, N, "inline as before (%llu)", (unsigned long long)d.inline_ops);
    cr_assert_eq(d.ops, 0);
}

T_CACHED(outside_a_task_a_small_read_is_a_plain_inline_read)
{
    fake_on(1);
    t_ctx = t_ctx_cfg(NULL);
    t_make_file(t_path("f"), LEN);
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    char buf[LEN];
    cr_assert_eq(afs_pread(f, buf, LEN, 0), LEN);
    cr_assert(t_check(buf, LEN, 0));
    fake_off();
    cr_assert_eq(nowait_calls, 0, "no task to suspend: nothing to gain from asking");
    cr_assert_eq(afs_close(f), 0);
}

/* Offsets past INT64_MAX are refused before the read that never waits is tried: with -1 the
 * system's preadv2() would read at the descriptor's position instead. */
static ssize_t bad_res[3];
static struct afs_file *bad_f;

static void bad_offsets_task(struct corio_task *t, void *arg)
{
    (void)t;
    (void)arg;
    char buf[LEN];
    bad_res[0] = afs_pread(bad_f, buf, 1, UINT64_MAX);
    bad_res[1] = afs_pread(bad_f, buf, 10, (uint64_t)INT64_MAX - 5);
    bad_res[2] = afs_pread(bad_f, buf, LEN, 0);
    cr_assert(bad_res[2] != LEN || t_check(buf, LEN, 0), "wrong bytes");
}

T_CACHED(a_read_in_a_task_at_an_offset_past_the_limit_is_refused)
{
    t_ctx = t_ctx_cfg(NULL);
    t_make_file(t_path("f"), LEN);
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &bad_f), 0);
    char head[8];
    cr_assert_eq(afs_pread(bad_f, head, sizeof head, 0), (ssize_t)sizeof head, "pages cached");
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    struct corio_sched *s;
    cr_assert_eq(corio_sched_new(&s, &cfg), 0);
    cr_assert_eq(corio_sched_run(s, bad_offsets_task, NULL), 0);
    corio_sched_free(s);
    cr_assert_eq(bad_res[0], -EINVAL, "offset UINT64_MAX: %zd", bad_res[0]);
    cr_assert_eq(bad_res[1], -EINVAL, "offset + len past INT64_MAX: %zd", bad_res[1]);
    cr_assert_eq(bad_res[2], LEN, "a good read after them: %zd", bad_res[2]);
    cr_assert_eq(afs_close(bad_f), 0);
}

#ifdef __linux__
/* The real call: pages dropped from the page cache (POSIX_FADV_DONTNEED on a clean file) are
 * a miss, and such reads go through the batch (some may be served at once if the kernel's
 * read-ahead for an earlier miss brought their page in first). */
T_CACHED(a_page_dropped_from_the_cache_is_read_through_the_batch)
{
    cr_assert_not_null(afs__sys.pread_nowait, "Linux has preadv2(RWF_NOWAIT)");
    t_make_file(t_path("probe"), LEN);
    drop_pages(t_path("probe"));
    int fd = open(t_path("probe"), O_RDONLY);
    cr_assert(fd >= 0);
    char probe[LEN];
    ssize_t r = afs__sys.pread_nowait(fd, probe, LEN, 0);
    close(fd);
    if (r == -EOPNOTSUPP)
        cr_skip_test("this file system cannot read without waiting (RWF_NOWAIT)");
    if (r == LEN)
        cr_skip_test("this file system keeps its pages (POSIX_FADV_DONTNEED dropped none)");
    /* A device that answers at once (a virtual disk served from the host's cache) may have
     * brought a page in before its read looks, even without read-ahead: then every read is
     * a hit. Such a run is taken again, and after 5 the test says so and skips (seen once,
     * under the sanitizers, on the sync backend). */
    struct afs_stats d;
    uint64_t ios;
    for (int tries = 0; tries < 5; tries++) {
        if (tries) {
            afs_ctx_free(t_ctx);
            t_ctx = NULL;
        }
        run_readers(N, true, &d, &ios);
        cr_assert_eq(d.ops + d.inline_ops, N);
        if (d.ops >= 1)
            break;
    }
    if (d.ops == 0)
        cr_skip_test("every read found its page cached in 5 tries (the device answered first)");
}
#endif

/* The context's rule for small cached reads in tasks (asyncfs.h, AFS_CTX_INLINE_SMALL): on
 * io_uring it measures serving them inline against sending them through the batch, so a
 * busy scheduler runs both ways; elsewhere, and with the flag, every cached read is served
 * inline and the rule reports nothing. 32 tasks read a cached file for 300 ms. */
static struct afs_file *busy_f;
static int64_t          busy_until;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void busy_reader(struct corio_task *t, void *arg)
{
    (void)t;
    uint64_t i = (uint64_t)(uintptr_t)arg;
    char buf[LEN];
    while (mono_ns() < busy_until) {
        uint64_t off = (i++ % N) * LEN;
        cr_assert_eq(afs_pread(busy_f, buf, LEN, off), LEN);
        cr_assert(t_check(buf, LEN, off), "wrong bytes at %llu", (unsigned long long)off);
    }
}

static void busy_root(struct corio_task *t, void *arg)
{
    (void)arg;
    for (uintptr_t i = 0; i < 32; i++)
        cr_assert_eq(corio_spawn(t, busy_reader, (void *)i, NULL), 0);
}

static void run_busy(unsigned flags, struct afs_stats *d, struct afs_read_rule *rule)
{
    struct afs_config cfg;
    afs_config_default(&cfg); /* AUTO: the backend ASYNCFS_BACKEND names */
    cfg.flags |= flags;
    t_ctx = t_ctx_cfg(&cfg);
    t_make_file(t_path("f"), (size_t)N * LEN);
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &busy_f), 0);
    char head[LEN];
    cr_assert_eq(afs_pread(busy_f, head, LEN, 0), LEN); /* the pages are cached */
    busy_until = mono_ns() + 300 * 1000 * 1000;
    cr_assert_eq(sched_run(busy_root, d, NULL), 0);
    afs_ctx_read_rule(t_ctx, rule);
    cr_assert_eq(afs_close(busy_f), 0);
}

T_CACHED(a_busy_scheduler_measures_both_ways_of_serving_cached_reads)
{
    struct afs_stats d;
    struct afs_read_rule rule;
    run_busy(0, &d, &rule);
    if (strcmp(afs_ctx_backend(t_ctx), "io_uring") != 0 || !afs__sys.pread_nowait) {
        cr_assert_eq(rule.samples, 0, "no rule on %s", afs_ctx_backend(t_ctx));
        cr_assert_eq(rule.batching, 0);
        cr_assert_eq(d.ops, 0, "every cached read inline (%llu went to the backend)",
                     (unsigned long long)d.ops);
        return;
    }
    cr_assert(rule.samples >= 2, "windows scored: %u", rule.samples);
    cr_assert(rule.inline_rate > 0 && rule.batch_rate > 0, "both ways measured (%llu, %llu)",
              (unsigned long long)rule.inline_rate, (unsigned long long)rule.batch_rate);
    cr_assert(d.ops > 0 && d.inline_ops > 0, "both ways ran (%llu through the batch, %llu inline)",
              (unsigned long long)d.ops, (unsigned long long)d.inline_ops);
}

T_CACHED(with_inline_small_every_cached_read_is_served_inline)
{
    struct afs_stats d;
    struct afs_read_rule rule;
    run_busy(AFS_CTX_INLINE_SMALL, &d, &rule);
    cr_assert_eq(rule.samples, 0);
    cr_assert_eq(rule.batching, 0);
    cr_assert_eq(d.ops, 0, "%llu reads went to the backend", (unsigned long long)d.ops);
    cr_assert(d.inline_ops > 0);
}
