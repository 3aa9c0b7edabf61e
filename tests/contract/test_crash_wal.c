/* The crash simulator on a small write-ahead log written here as an engine author would:
 * records appended in groups (the group's writes in flight together), then one fdatasync,
 * after which the group is reported durable. Across 1,000 simulated power cuts at seeded
 * points, with every unsynced write kept, dropped or torn (sometimes into garbage), recovery
 * finds every record reported durable, intact and in order. The same log with the classic
 * bug (the fsync queued beside the writes instead of after them) is caught. */
#pragma GCC diagnostic ignored "-Wunused-function" /* common.h helpers it has no use for */
#include "../common.h"

#include <asyncfs_crash.h>
#include <corio.h>

#include "../crash/crash_common.h"

#define T_WAL(name) Test(crash_wal, name, .init = c_setup, .fini = t_teardown, .timeout = 300)

/* Record: magic, payload length, sequence number, payload, checksum of all before it. */
#define MAGIC 0x314c4157u /* "WAL1" */
#define HDR 16
#define MAXPAY 1500
#define RECORDS 48

static size_t pay_len(uint64_t seq)
{
    return 1 + (size_t)(mix(seq * 3 + 1) % MAXPAY);
}

static unsigned char pay_byte(uint64_t seq, size_t i)
{
    return (unsigned char)(mix(seq ^ ((uint64_t)i << 20)) >> 7);
}

static uint32_t sum32(const unsigned char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static size_t encode(unsigned char *out, uint64_t seq)
{
    uint32_t m = MAGIC, len = (uint32_t)pay_len(seq);
    memcpy(out, &m, 4);
    memcpy(out + 4, &len, 4);
    memcpy(out + 8, &seq, 8);
    for (size_t i = 0; i < len; i++)
        out[HDR + i] = pay_byte(seq, i);
    uint32_t s = sum32(out, HDR + len);
    memcpy(out + HDR + len, &s, 4);
    return HDR + len + 4;
}

struct wal_result {
    uint64_t durable; /* records reported durable */
    uint64_t written; /* records whose write completed */
};

static void done_cb(struct afs_op *op)
{
    (*(int *)op->data)--;
}

/* Appends RECORDS records in groups of 1 to 4; `bug`: the group's fsync is queued with its
 * writes, before they completed. Stops at the first error (the power cut). */
static void wal_run(struct afs_ctx *ctx, const char *path, uint64_t seed, bool bug,
                    struct wal_result *res)
{
    memset(res, 0, sizeof *res);
    struct afs_file *f;
    if (afs_open(ctx, path, AFS_RDWR | AFS_CREAT | AFS_TRUNC, 0644, AFS_MODE_SYNC, &f) < 0)
        return;
    static unsigned char bufs[4][HDR + MAXPAY + 4];
    struct afs_op ops[5];
    memset(ops, 0, sizeof ops); /* stack memory may hold an op of an earlier call */
    uint64_t end = 0, seq = 0;
    while (seq < RECORDS) {
        int n = 1 + (int)(mix(seed ^ (seq << 8)) % 4);
        if (seq + (uint64_t)n > RECORDS)
            n = (int)(RECORDS - seq);
        int pending = 0;
        bool ok = true;
        for (int i = 0; i < n; i++) {
            size_t len = encode(bufs[i], seq + (uint64_t)i);
            if (afs_queue_write(&ops[i], f, bufs[i], len, end, done_cb, &pending) < 0)
                ok = false;
            else
                pending++;
            end += len;
        }
        if (bug && afs_queue_fsync(&ops[4], f, AFS_FSYNC_DATA, done_cb, &pending) == 0)
            pending++;
        while (pending > 0)
            if (afs_ctx_wait(ctx, 1, -1) < 0)
                break;
        for (int i = 0; i < n; i++)
            ok &= ops[i].result >= 0;
        if (!ok)
            break;
        res->written = seq + (uint64_t)n;
        if (bug ? ops[4].result < 0 : afs_fsync(f, AFS_FSYNC_DATA) < 0)
            break;
        seq += (uint64_t)n;
        res->durable = seq;
    }
    afs_close(f);
}

/* Recovery as the engine would do it: scan from the start, stop at the first record that
 * is not whole (checksum) or not the next in sequence. Returns the records found; aborts the
 * test when one differs from what was written. */
static uint64_t wal_recover_from(struct afs_ctx *ctx, const char *path, uint64_t first)
{
    struct afs_file *f;
    cr_assert_eq(afs_open(ctx, path, AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    int64_t size = afs_file_size(f);
    cr_assert(size >= 0 && size < (1 << 30), "log size %lld", (long long)size);
    if (size < 0 || size >= (1 << 30))
        return 0;
    unsigned char *p = malloc((size_t)size + 1);
    cr_assert_not_null(p);
    cr_assert_eq(afs_pread(f, p, (size_t)size, 0), size);
    afs_close(f);
    uint64_t seq = first;
    size_t at = 0;
    for (;;) {
        uint32_t m, len, s;
        uint64_t q;
        if (at + HDR > (size_t)size)
            break;
        memcpy(&m, p + at, 4);
        memcpy(&len, p + at + 4, 4);
        memcpy(&q, p + at + 8, 8);
        if (m != MAGIC || len == 0 || len > MAXPAY || at + HDR + len + 4 > (size_t)size)
            break;
        memcpy(&s, p + at + HDR + len, 4);
        if (s != sum32(p + at, HDR + len) || q != seq)
            break;
        cr_assert_eq(len, pay_len(seq));
        for (size_t i = 0; i < len; i++)
            cr_assert_eq(p[at + HDR + i], pay_byte(seq, i), "record %llu differs",
                         (unsigned long long)seq);
        at += HDR + len + 4;
        seq++;
    }
    free(p);
    return seq - first;
}

static uint64_t wal_recover(struct afs_ctx *ctx, const char *path)
{
    return wal_recover_from(ctx, path, 0);
}

/* One crash: a run cut at a seeded op, the reboot, the recovery, all on t_ctx (the reboot
 * leaves it a plain context, ready for the next crash: no backend set up a thousand times).
 * Returns the records lost that had been reported durable (0 for a correct log). */
static uint64_t one_crash(uint64_t seed, bool bug, struct afs_crash_report *rep,
                          struct wal_result *wr, uint64_t *found)
{
    if (!t_ctx)
        t_new_ctx();
    struct afs_ctx *ctx = t_ctx;
    struct afs_crash_options o;
    afs_crash_options_default(&o);
    o.seed = seed;
    o.cut_op_max = 2 * RECORDS; /* about the ops a whole run makes */
    o.flags = (seed & 1) ? AFS_CRASH_GARBAGE : 0;
    cr_assert_eq(afs_crash_enable(ctx, &o), 0);
    wal_run(ctx, t_path("wal"), seed, bug, wr);
    cr_assert_eq(afs_crash_reboot(ctx, rep), 0);
    *found = wal_recover(ctx, t_path("wal"));
    return *found >= wr->durable ? 0 : wr->durable - *found;
}

T_WAL(no_durable_record_is_lost_across_1000_crashes)
{
    unsigned n = runs();
    struct afs_crash_report total = {0};
    uint64_t cut = 0, partial = 0;
    for (unsigned i = 0; i < n; i++) {
        struct afs_crash_report rep;
        struct wal_result wr;
        uint64_t found;
        uint64_t seed = seed0() + i;
        uint64_t lost = one_crash(seed, false, &rep, &wr, &found);
        cr_assert_eq(lost, 0,
                     "seed %llu: %llu records reported durable, %llu recovered (cut at op %llu)",
                     (unsigned long long)seed, (unsigned long long)wr.durable, (unsigned long long)found,
                     (unsigned long long)rep.cut_op);
        cut += rep.cut_op > 0;
        partial += found > wr.durable && found < wr.written;
        total.kept += rep.kept;
        total.dropped += rep.dropped;
        total.torn += rep.torn;
    }
    /* The crashes were real ones: cuts in the middle, every kind of decision made. */
    cr_assert_gt(cut, n / 2);
    cr_assert_gt(total.kept, 0);
    cr_assert_gt(total.dropped, 0);
    cr_assert_gt(total.torn, 0);
    cr_log_info("%u crashes: %llu kept, %llu dropped, %llu torn writes; %llu recoveries found "
                "more than was durable",
                n, (unsigned long long)total.kept, (unsigned long long)total.dropped,
                (unsigned long long)total.torn, (unsigned long long)partial);
}

T_WAL(a_log_that_syncs_beside_its_writes_is_caught)
{
    unsigned n = runs();
    uint64_t caught = 0;
    for (unsigned i = 0; i < n && !caught; i++) {
        struct afs_crash_report rep;
        struct wal_result wr;
        uint64_t found;
        caught += one_crash(seed0() + i, true, &rep, &wr, &found) > 0;
    }
    cr_assert_gt(caught, 0, "the buggy log lost nothing it reported durable in %u crashes", n);
}

/* The same promise from corio tasks: 16 tasks, each appending to its own log with afs_pwrite
 * and afs_fsync, so that each phase's writes and syncs go to the kernel together. */
#define TASKS 16
#define TASK_RECORDS 12

struct task_log {
    char     path[PATH_MAX];
    uint64_t first;   /* its records' sequence numbers start here */
    uint64_t durable; /* records reported durable */
};

static void log_task(struct corio_task *t, void *arg)
{
    struct task_log *l = arg;
    struct afs_file *f;
    if (afs_create(corio_sched_ctx(corio_task_sched(t)), l->path, AFS_MODE_SYNC, &f) < 0)
        return;
    unsigned char buf[HDR + MAXPAY + 4];
    uint64_t end = 0;
    for (uint64_t i = 0; i < TASK_RECORDS; i++) {
        size_t len = encode(buf, l->first + i);
        if (afs_pwrite(f, buf, len, end) != (ssize_t)len || afs_fsync(f, AFS_FSYNC_DATA) < 0)
            break;
        end += len;
        l->durable = i + 1;
    }
    afs_close(f);
}

static struct task_log logs[TASKS];

static void spawn_logs(struct corio_task *t, void *arg)
{
    (void)arg;
    for (int i = 0; i < TASKS; i++)
        cr_assert_eq(corio_spawn(t, log_task, &logs[i], NULL), 0);
    corio_wait(t);
}

T_WAL(corio_tasks_lose_no_durable_record_across_200_crashes)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.sync_threshold = 0; /* every write joins the phase's batch */
    t_ctx = t_ctx_cfg(&cfg);
#ifdef _WIN32
    unsigned n = runs() / 25; /* 16 files per crash: seconds each under wine */
#else
    unsigned n = runs() / 5;
#endif
    uint64_t cut = 0, decided = 0;
    for (unsigned k = 0; k < n; k++) {
        struct afs_crash_options o;
        afs_crash_options_default(&o);
        o.seed = seed0() + 4000 + k;
        o.cut_op_max = TASKS * (2 * TASK_RECORDS + 2);
        cr_assert_eq(afs_crash_enable(t_ctx, &o), 0);
        for (int i = 0; i < TASKS; i++) {
            snprintf(logs[i].path, sizeof logs[i].path, "%s", t_path("log"));
            snprintf(logs[i].path + strlen(logs[i].path), 16, "%d", i);
            logs[i].first = (uint64_t)i * 1000;
            logs[i].durable = 0;
        }
        struct corio_config cc;
        corio_config_default(&cc);
        cc.ctx = t_ctx;
        struct corio_sched *s;
        cr_assert_eq(corio_sched_new(&s, &cc), 0);
        cr_assert_eq(corio_sched_run(s, spawn_logs, NULL), 0);
        corio_sched_free(s);
        struct afs_crash_report rep;
        cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
        cut += rep.cut_op > 0;
        decided += rep.kept + rep.dropped + rep.torn;
        for (int i = 0; i < TASKS; i++) {
            uint64_t found = wal_recover_from(t_ctx, logs[i].path, logs[i].first);
            cr_assert_geq(found, logs[i].durable, "seed %llu, task %d: %llu durable, %llu found",
                          (unsigned long long)o.seed, i, (unsigned long long)logs[i].durable,
                          (unsigned long long)found);
        }
    }
    cr_assert_gt(cut, n / 2);
    cr_assert_gt(decided, 0);
}

/* After the cut, afs_close in a task still closes the descriptor (its batched close was
 * failed by the cut before it reached the kernel, and the descriptor leaked). */
struct close_case {
    intptr_t fd;
    int      close_err;
};

static void close_after_cut(struct corio_task *t, void *arg)
{
    (void)t;
    struct close_case *c = arg;
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDWR | AFS_CREAT, 0600, AFS_MODE_SYNC, &f), 0);
    c->fd = afs_file_fd(f);
    cr_assert_eq(afs_crash_cut(t_ctx), 0);
    c->close_err = afs_close(f);
}

T_WAL(close_in_a_task_after_the_cut_closes_the_descriptor)
{
    t_new_ctx();
    struct afs_crash_options o;
    afs_crash_options_default(&o);
    cr_assert_eq(afs_crash_enable(t_ctx, &o), 0);
    struct corio_config cc;
    corio_config_default(&cc);
    cc.ctx = t_ctx;
    struct corio_sched *s;
    cr_assert_eq(corio_sched_new(&s, &cc), 0);
    struct close_case c = {-1, 0};
    cr_assert_eq(corio_sched_run(s, close_after_cut, &c), 0);
    corio_sched_free(s);
    cr_assert_eq(c.close_err, -EIO);
#ifdef _WIN32
    DWORD hflags;
    cr_assert(!GetHandleInformation((HANDLE)c.fd, &hflags), "the handle is still open");
#else
    errno = 0;
    cr_assert_eq(fcntl((int)c.fd, F_GETFD), -1, "the descriptor is still open");
    cr_assert_eq(errno, EBADF);
#endif
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
}
