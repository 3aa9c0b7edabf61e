/* The group-commit log (corio_log_*, include/corio.h) under the crash simulator: 32 tasks
 * append framed records to one log, each resuming when its record is durable. Across 1,000
 * power cuts at seeded points, with the unsynced writes kept, dropped or torn (sometimes into
 * garbage), every record the log reported durable is found intact when the log is read back
 * from the start. */
#include "../common.h"

#include <asyncfs_crash.h>
#include <corio.h>

#include "crash_common.h"

#define TASKS 32
#define PER_TASK 6
#define MAGIC 0x47524f55u /* "GROU" */
#define HDR 16            /* magic, length, task, number */
#define MAXPAY 400

static uint32_t sum32(const unsigned char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static size_t pay_len(uint32_t task, uint32_t k)
{
    return 1 + (size_t)(mix(((uint64_t)task << 32) | k) % MAXPAY);
}

static unsigned char pay_byte(uint32_t task, uint32_t k, size_t i)
{
    return (unsigned char)(mix(((uint64_t)task << 40) ^ ((uint64_t)k << 20) ^ i) >> 11);
}

static size_t encode(unsigned char *out, uint32_t task, uint32_t k)
{
    uint32_t m = MAGIC, len = (uint32_t)pay_len(task, k);
    memcpy(out, &m, 4);
    memcpy(out + 4, &len, 4);
    memcpy(out + 8, &task, 4);
    memcpy(out + 12, &k, 4);
    for (size_t i = 0; i < len; i++)
        out[HDR + i] = pay_byte(task, k, i);
    uint32_t s = sum32(out, HDR + len);
    memcpy(out + HDR + len, &s, 4);
    return HDR + len + 4;
}

struct run {
    const char       *path;
    struct corio_log *log;
    int               durable[TASKS]; /* records of each task reported durable */
};

struct appender {
    struct run *r;
    uint32_t    task;
};

static void appender(struct corio_task *t, void *arg)
{
    struct appender *a = arg;
    unsigned char buf[HDR + MAXPAY + 4];
    for (uint32_t k = 0; k < PER_TASK; k++) {
        size_t len = encode(buf, a->task, k);
        if (corio_log_append(t, a->r->log, buf, len, NULL) != 0)
            return;
        a->r->durable[a->task] = (int)k + 1;
    }
}

static void workload(struct corio_task *t, void *arg)
{
    struct run *r = arg;
    struct afs_file *f;
    if (afs_create(corio_sched_ctx(corio_task_sched(t)), r->path, AFS_MODE_SYNC, &f) < 0)
        return;
    if (corio_log_open(t, f, 0, &r->log) == 0) {
        static struct appender a[TASKS];
        struct corio_task *kids[TASKS];
        for (uint32_t i = 0; i < TASKS; i++) {
            a[i] = (struct appender){.r = r, .task = i};
            cr_assert_eq(corio_spawn(t, appender, &a[i], &kids[i]), 0);
        }
        for (int i = 0; i < TASKS; i++)
            while (!corio_task_done(kids[i]))
                corio_yield(t);
        corio_log_close(t, r->log);
    }
    afs_close(f);
}

/* Reads the log back from the start, as the engine's recovery would, and checks that each
 * task's durable records are there. Returns the records found. */
static unsigned recover(struct afs_ctx *ctx, const struct run *r, uint64_t seed)
{
    struct afs_file *f;
    cr_assert_eq(afs_open(ctx, r->path, AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    int64_t size = afs_file_size(f);
    cr_assert(size >= 0 && size < (1 << 28));
    unsigned char *p = malloc((size_t)size + 1);
    cr_assert_not_null(p);
    cr_assert_eq(afs_pread(f, p, (size_t)size, 0), size);
    afs_close(f);
    int found[TASKS] = {0};
    unsigned n = 0;
    size_t at = 0;
    while (at + HDR <= (size_t)size) {
        uint32_t m, len, task, k, s;
        memcpy(&m, p + at, 4);
        memcpy(&len, p + at + 4, 4);
        memcpy(&task, p + at + 8, 4);
        memcpy(&k, p + at + 12, 4);
        if (m != MAGIC || len == 0 || len > MAXPAY || task >= TASKS ||
            at + HDR + len + 4 > (size_t)size)
            break;
        memcpy(&s, p + at + HDR + len, 4);
        if (s != sum32(p + at, HDR + len))
            break;
        /* A task appends one record at a time: its records come in order. */
        cr_assert_eq(k, (uint32_t)found[task], "seed %llu: task %u record %u out of order",
                     (unsigned long long)seed, task, k);
        found[task]++;
        n++;
        at += HDR + len + 4;
    }
    free(p);
    for (int i = 0; i < TASKS; i++)
        cr_assert_geq(found[i], r->durable[i],
                      "seed %llu: task %d had %d records reported durable, %d recovered",
                      (unsigned long long)seed, i, r->durable[i], found[i]);
    return n;
}

Test(crash_group, no_durable_record_is_lost_across_1000_crashes, .init = c_setup,
     .fini = t_teardown, .timeout = 600)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.sync_threshold = 0;
    t_ctx = t_ctx_cfg(&cfg);
    unsigned n = runs();
    uint64_t cuts = 0, decided = 0, durable = 0;
    for (unsigned k = 0; k < n; k++) {
        uint64_t seed = seed0() + k;
        struct afs_crash_options o;
        afs_crash_options_default(&o);
        o.seed = seed;
        o.cut_op_max = 16; /* about the ops of a whole run (afs_crash_ops() without a cut):
                              one write and one fdatasync per batch */
        o.flags = (seed & 1) ? AFS_CRASH_GARBAGE : 0;
        cr_assert_eq(afs_crash_enable(t_ctx, &o), 0);
        struct run r = {.path = t_path("log")};
        struct corio_config cc;
        corio_config_default(&cc);
        cc.ctx = t_ctx;
        struct corio_sched *s;
        cr_assert_eq(corio_sched_new(&s, &cc), 0);
        cr_assert_eq(corio_sched_run(s, workload, &r), 0);
        corio_sched_free(s);
        struct afs_crash_report rep;
        cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
        cuts += rep.cut_op > 0;
        decided += rep.kept + rep.dropped + rep.torn;
        recover(t_ctx, &r, seed);
        for (int i = 0; i < TASKS; i++)
            durable += (uint64_t)r.durable[i];
    }
    cr_assert_gt(cuts, n / 2, "the cuts came in the middle of the runs");
    cr_assert_gt(decided, 0);
    cr_assert_gt(durable, 0);
}
