/* Inside corio tasks, afs_open/afs_create/afs_fopen suspend only the task and their opens join
 * the phase's batch: N tasks opening N files in one phase cost one io_uring_enter, with every
 * open in it as an IORING_OP_OPENAT and none made on the scheduler's thread. The enters are
 * watched through the system call table (afs__sys.uring_enter). */
#include "../common.h"

#include "internal.h" /* afs__sys */

#include <corio.h>
#include <liburing.h>

enum { N = 32 };

static unsigned enters_with_open, openats, max_in_one;

static int count_enter(struct io_uring *ring, unsigned wait_nr, struct __kernel_timespec *ts)
{
    struct io_uring_sq *sq = &ring->sq;
    unsigned here = 0;
    for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++)
        here += sq->sqes[i & *sq->kring_mask].opcode == IORING_OP_OPENAT;
    openats += here;
    enters_with_open += here > 0;
    if (here > max_in_one)
        max_in_one = here;
    return afs__uring_enter_real(ring, wait_nr, ts);
}

struct opener {
    char               path[PATH_MAX];
    int                how; /* 0 afs_open, 1 afs_create, 2 afs_fopen */
    int                err;
    struct afs_file   *f;
    struct afs_stream *s;
};

static struct opener op_args[N];

static void open_task(struct corio_task *t, void *arg)
{
    (void)t;
    struct opener *o = arg;
    struct afs_ctx *ctx = corio_sched_ctx(corio_task_sched(t));
    switch (o->how) {
    case 0: o->err = afs_open(ctx, o->path, AFS_RDONLY, 0, AFS_MODE_SYNC, &o->f); break;
    case 1: o->err = afs_create(ctx, o->path, AFS_MODE_SYNC, &o->f); break;
    default: o->err = afs_fopen(ctx, o->path, "r", &o->s); break;
    }
}

static void root(struct corio_task *t, void *arg)
{
    (void)arg;
    for (int i = 0; i < N; i++)
        cr_assert_eq(corio_spawn(t, open_task, &op_args[i], NULL), 0);
}

static bool kernel_has_openat(void)
{
    struct io_uring_probe *p = io_uring_get_probe();
    bool ok = p && io_uring_opcode_supported(p, IORING_OP_OPENAT);
    if (p)
        io_uring_free_probe(p);
    return ok;
}

/* Opens N files from N tasks the way `how` says; checks the one batch. */
static void one_phase_of_opens(int how)
{
    t_ctx = t_ctx_cfg(NULL);
    if (strcmp(afs_ctx_backend(t_ctx), "io_uring") != 0)
        cr_skip_test("backend under test is %s, not io_uring", afs_ctx_backend(t_ctx));
    if (!kernel_has_openat())
        cr_skip_test("no IORING_OP_OPENAT (Linux < 5.6)");
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "f%d", i);
        snprintf(op_args[i].path, sizeof op_args[i].path, "%s", t_path(name));
        op_args[i].how = how;
        op_args[i].f = NULL;
        op_args[i].s = NULL;
        op_args[i].err = 1;
        if (how != 1)
            t_make_file(op_args[i].path, 1000 + (size_t)i);
    }
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    struct corio_sched *sched = NULL;
    cr_assert_eq(corio_sched_new(&sched, &cfg), 0);
    struct afs_stats a, b;
    afs_ctx_stats(t_ctx, &a);
    enters_with_open = openats = max_in_one = 0;
    afs__sys.uring_enter = count_enter;
    cr_assert_eq(corio_sched_run(sched, root, NULL), 0);
    afs__sys.uring_enter = NULL;
    afs_ctx_stats(t_ctx, &b);
    for (int i = 0; i < N; i++)
        cr_assert_eq(op_args[i].err, 0, "open %d: %s", i, afs_strerror(op_args[i].err));
    cr_assert_eq(openats, (unsigned)N, "every open went through the ring (%u of %d)", openats, N);
    cr_assert_eq(enters_with_open, 1u, "%d opens in one phase: %u submissions", N,
                 enters_with_open);
    cr_assert_eq(b.inline_ops, a.inline_ops, "no open ran on the scheduler's thread");
    for (int i = 0; i < N; i++) {
        if (op_args[i].s) {
            char buf[2048];
            cr_assert_eq(afs_fread(buf, 1, sizeof buf, op_args[i].s), 1000 + (size_t)i);
            cr_assert(t_check(buf, 1000 + (size_t)i, 0));
            cr_assert_eq(afs_fclose(op_args[i].s), 0);
        } else {
            cr_assert_eq(afs_file_size(op_args[i].f), how == 1 ? 0 : 1000 + i);
            cr_assert_eq(afs_close(op_args[i].f), 0);
        }
    }
    corio_sched_free(sched);
}

#define T_OPEN(name) Test(open_batch, name, .init = t_setup, .fini = t_teardown, .timeout = 60)

T_OPEN(afs_open_in_tasks_is_one_submission)
{
    one_phase_of_opens(0);
}

T_OPEN(afs_create_in_tasks_is_one_submission)
{
    one_phase_of_opens(1);
}

T_OPEN(afs_fopen_in_tasks_is_one_submission)
{
    one_phase_of_opens(2);
}

/* Outside a task nothing changes: a plain open on this thread, no ring op. */
T_OPEN(afs_open_outside_a_task_is_inline)
{
    t_ctx = t_ctx_cfg(NULL);
    if (strcmp(afs_ctx_backend(t_ctx), "io_uring") != 0)
        cr_skip_test("backend under test is %s, not io_uring", afs_ctx_backend(t_ctx));
    t_make_file(t_path("f"), 10);
    struct afs_stats a, b;
    afs_ctx_stats(t_ctx, &a);
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    afs_ctx_stats(t_ctx, &b);
    cr_assert_eq(b.ops, a.ops, "no op was queued for the open");
    cr_assert_eq(afs_close(f), 0);
}

/* A directory opened read-only in a task is refused as it is outside one. */
static void open_dir_task(struct corio_task *t, void *arg)
{
    struct opener *o = arg;
    o->err = afs_open(corio_sched_ctx(corio_task_sched(t)), o->path, AFS_RDONLY, 0,
                      AFS_MODE_SYNC, &o->f);
}

T_OPEN(afs_open_of_a_directory_in_a_task_is_eisdir)
{
    t_ctx = t_ctx_cfg(NULL);
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    struct corio_sched *sched = NULL;
    cr_assert_eq(corio_sched_new(&sched, &cfg), 0);
    struct opener *o = &op_args[0];
    snprintf(o->path, sizeof o->path, "%s", t_dir);
    o->f = NULL;
    cr_assert_eq(corio_sched_run(sched, open_dir_task, o), 0);
    cr_assert_eq(o->err, -EISDIR);
    cr_assert_null(o->f);
    corio_sched_free(sched);
}
