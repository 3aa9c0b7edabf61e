/* Load and soak, bounded and self-stopping (a few seconds each): many tasks and ops over a
 * small ring, cancellations racing completions, many files opened and closed, and a full
 * "disk" (RLIMIT_FSIZE) in the middle of writes. Nothing lost, every error reported. */
#include "../common.h"

#include <corio.h>
#include <signal.h>
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
    afs_close(l.f);
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
    afs_close(r.f);
}

/* ---- Many files opened and closed. ---- */

static void open_close(struct corio_task *t, void *arg)
{
    long *n = arg;
    char name[64];
    snprintf(name, sizeof name, "g%ld", *n % 64);
    for (int i = 0; i < 50; i++) {
        struct afs_file *f;
        cr_assert_eq(afs_open(t_ctx, t_path(name), AFS_RDWR | AFS_CREAT, 0600, AFS_MODE_SYNC, &f), 0);
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
    afs_close(w.f);
}
