/* Allocation failures, through the system call table (afs__sys.malloc/calloc/realloc): the
 * Nth heap allocation of the library fails, for every N a scenario reaches. The call that
 * needed it must return -ENOMEM (or an op must complete with -ENOMEM), nothing may crash or
 * leak (make test-sanitize runs this under LeakSanitizer), and what exists must stay usable:
 * the same calls succeed once allocations work again. */
#include "../common.h"

#include "platform.h"

#include <corio.h>
#include <stdatomic.h>

static struct afs__syscalls saved;
static atomic_int alloc_calls; /* allocations since arm() */
static int        alloc_fail;  /* fail the alloc_fail-th one (1-based); 0 = none */
static atomic_int alloc_failed;

static bool should_fail(void)
{
    int n = atomic_fetch_add(&alloc_calls, 1) + 1;
    if (alloc_fail && n == alloc_fail) {
        atomic_fetch_add(&alloc_failed, 1);
        return true;
    }
    return false;
}

static void *f_malloc(size_t n)
{
    return should_fail() ? NULL : saved.malloc(n);
}

static void *f_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : saved.calloc(n, size);
}

static void *f_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : saved.realloc(p, n);
}

static void arm(int nth)
{
    atomic_store(&alloc_calls, 0);
    atomic_store(&alloc_failed, 0);
    alloc_fail = nth;
}

static void disarm(void)
{
    alloc_fail = 0;
}

static void a_setup(void)
{
    t_setup();
    saved = afs__sys;
    afs__sys.malloc = f_malloc;
    afs__sys.calloc = f_calloc;
    afs__sys.realloc = f_realloc;
    disarm();
}

static void a_teardown(void)
{
    afs__sys = saved;
    t_teardown();
}

#define T_ALLOC(name) Test(alloc_faults, name, .init = a_setup, .fini = a_teardown, .timeout = 120)

static void expect_enomem(int err, const char *what)
{
    const char *why = afs_last_ctx_error();
    cr_assert_eq(err, -ENOMEM, "%s: %s with an allocation failing, not -ENOMEM (%s)", what,
                 afs_strerror(err), why ? why : "");
    cr_assert_eq(atomic_load(&alloc_failed), 1, "%s: -ENOMEM without a failed allocation",
                 what);
}

/* ---- Contexts, files, streams, ops on the pool ---- */

struct count {
    int calls, enomem, full;
};

static void count_cb(struct afs_op *op)
{
    struct count *c = op->data;
    c->calls++;
    if (op->result == -ENOMEM)
        c->enomem++;
    else if (op->result == 4096)
        c->full++;
}

/* One pass of the scenario with the nth allocation failing. Returns false once the pass ran
 * without reaching the nth allocation (every N has been tried). */
static bool files_pass(int nth)
{
    const char *path = t_path("data");
    arm(nth);
    struct afs_ctx *ctx = NULL;
    int err = afs_ctx_new(&ctx, NULL);
    /* On every backend, AUTO or named by ASYNCFS_BACKEND: out of memory is -ENOMEM, never
     * -ENOTSUP (ctest runs this suite only on backends this machine has). */
    if (err) {
        expect_enomem(err, "afs_ctx_new");
        cr_assert_null(ctx);
        disarm();
        return true;
    }

    struct afs_file *f = NULL;
    err = afs_open(ctx, path, AFS_RDONLY, 0, AFS_MODE_SYNC, &f);
    if (err) {
        expect_enomem(err, "afs_open");
        disarm();
        cr_assert_eq(afs_open(ctx, path, AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0,
                     "the context works after the failure");
    }

    /* Buffered reads through the op API: on most backends they need the thread pool,
     * created (allocated) on first use. */
    static struct afs_op ops[16];
    static char bufs[16][4096];
    struct count c = {0};
    for (int i = 0; i < 16; i++)
        cr_assert_eq(afs_queue_read(&ops[i], f, bufs[i], 4096, (uint64_t)i * 4096, count_cb, &c),
                     0);
    while (c.calls < 16)
        cr_assert_geq(afs_ctx_wait(ctx, 16 - c.calls, -1), 0);
    cr_assert_eq(c.enomem + c.full, 16, "each read is complete or -ENOMEM");
    for (int i = 0; i < 16; i++)
        if (ops[i].result == 4096)
            cr_assert(t_check(bufs[i], 4096, (uint64_t)i * 4096));
    if (c.enomem)
        cr_assert_eq(atomic_load(&alloc_failed), 1);

    struct afs_stream *s = NULL;
    err = afs_fopen(ctx, path, "r", &s);
    if (err) {
        expect_enomem(err, "afs_fopen");
        disarm();
        cr_assert_eq(afs_fopen(ctx, path, "r", &s), 0, "streams work after the failure");
    }
    char buf[4096];
    size_t n = afs_fread(buf, 1, sizeof buf, s);
    if (n != sizeof buf) {
        /* Read-ahead whose op could not start reports -ENOMEM; the stream recovers. */
        cr_assert_eq(afs_ferror(s), -ENOMEM, "afs_fread: %zu bytes, error %d", n, afs_ferror(s));
        disarm();
        afs_clearerr(s);
        cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), sizeof buf);
    }
    cr_assert(t_check(buf, sizeof buf, 0));
    cr_assert_eq(afs_fclose(s), 0);
    cr_assert_eq(afs_close(f), 0);
    afs_ctx_free(ctx);
    disarm();
    return atomic_load(&alloc_failed) > 0; /* the nth allocation was reached */
}

T_ALLOC(every_allocation_of_files_streams_and_ops_may_fail)
{
    t_make_file(t_path("data"), 256 * 1024);
    int n = 1;
    while (files_pass(n))
        cr_assert_lt(++n, 1000, "the scenario should need fewer allocations");
    cr_log_info("%d allocations failed one at a time", n - 1);
}

/* ---- The scheduler: creation, spawns, file reads in tasks ---- */

struct run {
    struct afs_file *f;
    int spawned, enomem_spawns, reads_ok;
};

static void reader(struct corio_task *t, void *arg)
{
    struct run *r = arg;
    char buf[4096];
    ssize_t n = afs_pread(r->f, buf, sizeof buf, 8192);
    if (n == (ssize_t)sizeof buf && t_check(buf, sizeof buf, 8192))
        r->reads_ok++;
}

static void spawner(struct corio_task *t, void *arg)
{
    struct run *r = arg;
    for (int i = 0; i < 20; i++) {
        int err = corio_spawn(t, reader, r, NULL);
        if (err == 0)
            r->spawned++;
        else if (err == -ENOMEM)
            r->enomem_spawns++;
        else
            cr_assert_fail("corio_spawn: %s", afs_strerror(err));
    }
}

static bool sched_pass(int nth, struct afs_ctx *ctx, struct afs_file *f)
{
    arm(nth);
    bool reached;
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = ctx;
    struct corio_sched *s = NULL;
    int err = corio_sched_new(&s, &cfg);
    if (err) {
        expect_enomem(err, "corio_sched_new");
        disarm();
        return true;
    }
    struct run r = {.f = f};
    err = corio_sched_run(s, spawner, &r);
    if (err) {
        expect_enomem(err, "corio_sched_run");
    } else {
        cr_assert_eq(r.spawned + r.enomem_spawns, 20);
        cr_assert_eq(r.reads_ok, r.spawned, "every task that was spawned read its block");
    }
    /* The scheduler stays usable. */
    reached = atomic_load(&alloc_failed) > 0;
    disarm();
    struct run again = {.f = f};
    cr_assert_eq(corio_sched_run(s, spawner, &again), 0);
    cr_assert_eq(again.reads_ok, 20);
    corio_sched_free(s);
    return reached;
}

T_ALLOC(every_allocation_of_the_scheduler_may_fail)
{
    t_make_file(t_path("data"), 64 * 1024);
    struct afs_ctx *ctx = NULL;
    int err = afs_ctx_new(&ctx, NULL);
    cr_assert_eq(err, 0, "afs_ctx_new: %s (%s)", afs_strerror(err),
                 afs_last_ctx_error() ? afs_last_ctx_error() : "");
    struct afs_file *f = NULL;
    cr_assert_eq(afs_open(ctx, t_path("data"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    int n = 1;
    while (sched_pass(n, ctx, f))
        cr_assert_lt(++n, 1000, "the scenario should need fewer allocations");
    cr_assert_eq(afs_close(f), 0);
    afs_ctx_free(ctx);
}
