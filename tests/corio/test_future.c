/* Shielding, futures and task results, wait modes, generators and the file iterators, jobs,
 * and the cancellation / deadline rules on every blocking call. Run once per backend through
 * ASYNCFS_BACKEND, like test_sched.c (linked into the same corio_sched binary). */
#include "../common.h"

#include <corio.h>
#include <signal.h>
#include <stdatomic.h>

#define MS (1000LL * 1000)

static struct corio_sched *f_sched;

static void f_setup(void)
{
    t_setup();
}

static void f_teardown(void)
{
    if (f_sched)
        corio_sched_free(f_sched);
    f_sched = NULL;
    t_teardown();
}

#define T_F(name, ...)                                                                         \
    Test(corio_future, name, .init = f_setup, .fini = f_teardown, .timeout = 60, ##__VA_ARGS__)

static struct corio_sched *fnew(corio_dispatch_fn *d, unsigned io_limit)
{
    struct afs_config acfg;
    afs_config_default(&acfg);
    acfg.sync_threshold = 0; /* every file op joins the batch and suspends its task */
    t_ctx = t_ctx_cfg(&acfg);
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    cfg.dispatch = d;
    if (io_limit)
        cfg.io_limit = io_limit;
    int err = corio_sched_new(&f_sched, &cfg);
    cr_assert_eq(err, 0, "corio_sched_new: %s", afs_strerror(err));
    return f_sched;
}

static int frun(corio_fn *fn, void *arg)
{
    if (!f_sched)
        fnew(NULL, 0);
    return corio_sched_run(f_sched, fn, arg);
}

static int64_t ms_since(int64_t t0)
{
    return (corio_now() - t0) / MS;
}

static int is_uring(void)
{
    return strcmp(afs_ctx_backend(t_ctx), "io_uring") == 0;
}

/* =========================================================================================
 * Shielding
 * ======================================================================================= */

struct shield_probe {
    int r_in, r_nested, r_after, r_child;
    int64_t after_ms;
};

static void shield_grandchild(struct corio_task *t, void *arg)
{
    ((struct shield_probe *)arg)->r_child = corio_sleep(t, 15 * MS);
}

static void shielded(struct corio_task *t, void *arg)
{
    struct shield_probe *p = arg;
    corio_shield_begin(t);
    corio_spawn(t, shield_grandchild, p, NULL); /* spawned inside: below the shield */
    p->r_in = corio_sleep(t, 60 * MS);          /* cancelled at 10 ms: not interrupted */
    corio_shield_begin(t);
    corio_shield_end(t);
    p->r_nested = corio_sleep(t, 1 * MS); /* still inside the outer section */
    corio_shield_end(t);
    int64_t t0 = corio_now();
    p->r_after = corio_sleep(t, 10000 * MS); /* the pending cancellation now applies */
    p->after_ms = ms_since(t0);
}

static void shield_root(struct corio_task *t, void *arg)
{
    struct corio_task *c;
    corio_spawn(t, shielded, arg, &c);
    corio_sleep(t, 10 * MS);
    corio_cancel(c);
    corio_wait(t);
    cr_assert(corio_cancelled(c), "the plain fact is still reported");
}

T_F(shield_section_is_not_interrupted_and_cancel_applies_after)
{
    struct shield_probe p = {1, 1, 1, 1, -1};
    cr_assert_eq(frun(shield_root, &p), 0);
    cr_assert_eq(p.r_in, 0);
    cr_assert_eq(p.r_nested, 0, "nested sections: still shielded");
    cr_assert_eq(p.r_child, 0, "a descendant spawned inside the shield is shielded too");
    cr_assert_eq(p.r_after, -ECANCELED);
    cr_assert_lt(p.after_ms, 5000, "interrupted, not the whole 10 s sleep");
}

static void shield_deadline(struct corio_task *t, void *arg)
{
    int *r = arg;
    corio_set_deadline(t, corio_now() + 10 * MS);
    corio_shield_begin(t);
    r[0] = corio_sleep(t, 30 * MS);
    corio_shield_end(t);
    r[1] = corio_sleep(t, 10000 * MS);
}

T_F(shield_section_ignores_deadlines_until_it_ends)
{
    int r[2] = {1, 1};
    int64_t t0 = corio_now();
    cr_assert_eq(frun(shield_deadline, r), 0);
    cr_assert_eq(r[0], 0);
    cr_assert_eq(r[1], -ETIMEDOUT);
    cr_assert_lt(ms_since(t0), 5000, "a hang guard: the 10 s sleep was cut");
}

/* A descendant still waiting when the shield ends is interrupted then. */
static void waiting_grandchild(struct corio_task *t, void *arg)
{
    ((int *)arg)[0] = corio_sleep(t, 10000 * MS);
}

static void shield_ends_early(struct corio_task *t, void *arg)
{
    corio_shield_begin(t);
    corio_spawn(t, waiting_grandchild, arg, NULL);
    corio_sleep(t, 20 * MS);
    corio_shield_end(t);
}

static void shield_end_root(struct corio_task *t, void *arg)
{
    struct corio_task *c;
    corio_spawn(t, shield_ends_early, arg, &c);
    corio_sleep(t, 5 * MS);
    corio_cancel(c);
}

T_F(shield_end_interrupts_waiting_descendants)
{
    int r[1] = {1};
    int64_t t0 = corio_now();
    cr_assert_eq(frun(shield_end_root, r), 0);
    cr_assert_eq(r[0], -ECANCELED);
    cr_assert_lt(ms_since(t0), 5000, "a hang guard: the 10 s sleep was cut");
}

static void shield_end_unbalanced(struct corio_task *t, void *arg)
{
    corio_shield_end(t);
}

Test(corio_future, shield_end_without_begin_aborts, .signal = SIGABRT, .timeout = 10)
{
    struct corio_sched *s;
    cr_assert_eq(corio_sched_new(&s, NULL), 0);
    corio_sched_run(s, shield_end_unbalanced, NULL);
}

/* A mutex unlocked where no task runs (here: after the scheduler returned, its holder
 * gone) aborts, as an unlock by a task that does not hold it does. */
static struct corio_mutex held_mu;

static void lock_and_leave(struct corio_task *t, void *arg)
{
    (void)arg;
    cr_assert_eq(corio_mutex_lock(t, &held_mu), 0);
}

Test(corio_future, mutex_unlock_outside_a_task_aborts, .signal = SIGABRT, .timeout = 10)
{
    struct corio_sched *s;
    cr_assert_eq(corio_sched_new(&s, NULL), 0);
    cr_assert_eq(corio_sched_run(s, lock_and_leave, NULL), 0);
    corio_mutex_unlock(&held_mu);
}

/* =========================================================================================
 * Futures
 * ======================================================================================= */

struct fut_case {
    struct corio_future f;
    int                 res[4];
    void               *val[4];
};

static void awaiter(struct corio_task *t, void *arg)
{
    struct fut_case *c = arg;
    static int n;
    int i = n++;
    c->res[i] = corio_future_await(t, &c->f, &c->val[i]);
}

static void fut_root(struct corio_task *t, void *arg)
{
    struct fut_case *c = arg;
    for (int i = 0; i < 3; i++)
        corio_spawn(t, awaiter, c, NULL);
    cr_assert_eq(corio_future_done(&c->f), 0);
    cr_assert_eq(corio_future_result(&c->f, NULL), -EAGAIN);
    corio_sleep(t, 5 * MS);
    static int payload = 7;
    cr_assert_eq(corio_future_complete(&c->f, 42, &payload), 0);
    cr_assert_eq(corio_future_complete(&c->f, 1, NULL), -EALREADY, "completed once");
    corio_wait(t);
    void *v;
    cr_assert_eq(corio_future_await(t, &c->f, &v), 42, "a done future returns at once");
    cr_assert_eq(v, &payload);
    cr_assert_eq(corio_future_result(&c->f, &v), 42);
}

T_F(future_wakes_every_awaiter_with_the_value_once)
{
    static struct fut_case c;
    cr_assert_eq(frun(fut_root, &c), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(c.res[i], 42);
        cr_assert_not_null(c.val[i]);
        cr_assert_eq(*(int *)c.val[i], 7);
    }
}

static void fut_await_interrupted(struct corio_task *t, void *arg)
{
    struct fut_case *c = arg;
    c->res[0] = corio_future_await(t, &c->f, NULL);
}

static void fut_interrupt_root(struct corio_task *t, void *arg)
{
    struct fut_case *c = arg;
    struct corio_task *a;
    corio_spawn(t, fut_await_interrupted, c, &a);
    corio_cancel(a);
    corio_wait(t); /* the future is not complete: only the cancellation ends the await */
    cr_assert_eq(c->res[0], -ECANCELED);
    /* Deadline. */
    corio_set_deadline(t, corio_now() + 20 * MS);
    cr_assert_eq(corio_future_await(t, &c->f, NULL), -ETIMEDOUT);
    corio_set_deadline(t, 0);
    /* Still usable afterwards. */
    corio_future_complete(&c->f, 5, NULL);
    cr_assert_eq(corio_future_await(t, &c->f, NULL), 5);
}

T_F(future_await_ends_with_cancel_and_deadline)
{
    static struct fut_case c;
    cr_assert_eq(frun(fut_interrupt_root, &c), 0);
}

/* Shielded await: the cancellation does not end it; it applies right after. */
static void shielded_awaiter(struct corio_task *t, void *arg)
{
    struct fut_case *c = arg;
    c->res[0] = corio_future_await_shielded(t, &c->f, &c->val[0]);
    c->res[1] = corio_sleep(t, 10000 * MS);
}

static void shielded_await_root(struct corio_task *t, void *arg)
{
    struct fut_case *c = arg;
    struct corio_task *a;
    corio_spawn(t, shielded_awaiter, c, &a);
    corio_cancel(a);
    corio_sleep(t, 10 * MS);
    corio_future_complete(&c->f, 9, c);
}

T_F(shielded_await_is_not_cancelled)
{
    static struct fut_case c;
    cr_assert_eq(frun(shielded_await_root, &c), 0);
    cr_assert_eq(c.res[0], 9);
    cr_assert_eq(c.val[0], &c);
    cr_assert_eq(c.res[1], -ECANCELED);
}

/* A local future nobody completes: a deadlock, reported. */
static void await_forever(struct corio_task *t, void *arg)
{
    corio_future_await(t, arg, NULL);
}

T_F(awaiting_a_local_future_nobody_completes_is_a_deadlock)
{
    static struct corio_future f = CORIO_FUTURE_INIT;
    cr_assert_eq(frun(await_forever, &f), -EDEADLK);
}

/* External futures: completed from other threads; the scheduler waits, no -EDEADLK. */
struct ext_case {
    struct corio_future f[8];
    pthread_t           th[8];
    int                 res[8];
};

static void *complete_later(void *arg)
{
    struct corio_future *f = arg;
    usleep(20 * 1000);
    if (corio_future_complete(f, 100, f) != 0)
        abort(); /* not cr_assert: another thread */
    return NULL;
}

static void ext_awaiter(struct corio_task *t, void *arg)
{
    struct corio_future *f = arg;
    void *v;
    int r = corio_future_await(t, f, &v);
    cr_assert_eq(r, 100);
    cr_assert_eq(v, f);
}

static void ext_root(struct corio_task *t, void *arg)
{
    struct ext_case *c = arg;
    for (int i = 0; i < 8; i++) {
        corio_future_init_external(&c->f[i], corio_task_sched(t));
        corio_spawn(t, ext_awaiter, &c->f[i], NULL);
    }
    for (int i = 0; i < 8; i++)
        pthread_create(&c->th[i], NULL, complete_later, &c->f[i]);
    corio_wait(t);
    /* Wait-first over external futures. */
    struct corio_future g[2];
    pthread_t th;
    corio_future_init_external(&g[0], corio_task_sched(t));
    corio_future_init_external(&g[1], corio_task_sched(t));
    pthread_create(&th, NULL, complete_later, &g[1]);
    struct corio_future *gs[2] = {&g[0], &g[1]};
    size_t idx = 9;
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_FIRST, gs, 2, &idx), 100);
    cr_assert_eq(idx, 1);
    pthread_join(th, NULL);
    /* Completed on the scheduler's own thread: at once. */
    cr_assert_eq(corio_future_complete(&g[0], 3, NULL), 0);
    cr_assert_eq(corio_future_done(&g[0]), 1);
    cr_assert_eq(corio_future_complete(&g[0], 4, NULL), -EALREADY);
}

/* A producer whose function returns, cancelled by the consumer's close, before the future in
 * its frame of its own (shielded) child is completed: the child's end must not write there,
 * where the generator's wait for that child has its frames now (before, this crashed). */
static int late_value(struct corio_task *t, void *a)
{
    (void)a;
    corio_shield_begin(t);
    corio_sleep(t, 20 * MS);
    corio_shield_end(t);
    return 42;
}

static int gen_with_child(struct corio_task *t, struct corio_gen *g, void *a)
{
    (void)a;
    struct corio_future fut; /* in this frame */
    if (corio_spawn_future(t, late_value, NULL, &fut, NULL) != 0)
        return -EIO;
    static int one = 1;
    int r = corio_gen_yield(t, g, &one);
    if (r < 0)
        return r; /* closed: returns before its child is done */
    return corio_future_await(t, &fut, NULL) < 0 ? -EIO : 0;
}

static void gen_child_root(struct corio_task *t, void *a)
{
    (void)a;
    struct corio_gen g;
    cr_assert_eq(corio_gen_start(t, &g, gen_with_child, NULL), 0);
    void *v;
    cr_assert_eq(corio_gen_next(t, &g, &v), 1);
    corio_gen_close(t, &g);
    cr_assert_eq(g.result, -ECANCELED);
}

T_F(a_future_in_a_producers_returned_frame_is_not_completed)
{
    cr_assert_eq(frun(gen_child_root, NULL), 0);
}

T_F(external_futures_completed_from_other_threads)
{
    static struct ext_case c;
    cr_assert_eq(frun(ext_root, &c), 0);
    for (int i = 0; i < 8; i++)
        pthread_join(c.th[i], NULL);
}

/* Racing completions from several threads: exactly one wins. */
static atomic_int winners;
static void *race_complete(void *arg)
{
    if (corio_future_complete(arg, 1, NULL) == 0)
        atomic_fetch_add(&winners, 1);
    return NULL;
}

static void race_root(struct corio_task *t, void *arg)
{
    for (int round = 0; round < 50; round++) {
        struct corio_future f;
        corio_future_init_external(&f, corio_task_sched(t));
        pthread_t th[4];
        for (int i = 0; i < 4; i++)
            pthread_create(&th[i], NULL, race_complete, &f);
        cr_assert_eq(corio_future_await(t, &f, NULL), 1);
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        /* f leaves scope only once done on this thread: delivered, nothing refers to it. */
    }
}

T_F(external_future_completed_by_racing_threads_once)
{
    atomic_store(&winners, 0);
    cr_assert_eq(frun(race_root, NULL), 0);
    cr_assert_eq(atomic_load(&winners), 50);
}

/* Task results. */
static int grandchild_slow(struct corio_task *t, void *arg)
{
    corio_sleep(t, 20 * MS);
    (*(int *)arg)++;
    return 0;
}

static int answer_task(struct corio_task *t, void *arg)
{
    static struct corio_future gf;
    corio_spawn_future(t, grandchild_slow, arg, &gf, NULL);
    return 42; /* returns at once; done only after the grandchild */
}

static int failing_task(struct corio_task *t, void *arg)
{
    int err = corio_sleep(t, 5 * MS);
    return err ? err : -EIO;
}

static void results_root(struct corio_task *t, void *arg)
{
    int *gc = arg;
    struct corio_future a, b;
    struct corio_task *ta;
    cr_assert_eq(corio_spawn_future(t, answer_task, gc, &a, &ta), 0);
    cr_assert_eq(corio_spawn_future(t, failing_task, NULL, &b, NULL), 0);
    cr_assert_eq(corio_future_await(t, &a, NULL), 42);
    cr_assert_eq(*gc, 1, "a task's future completes when its children are done");
    cr_assert_eq(corio_future_await(t, &b, NULL), -EIO);
    /* A cancelled child's result. */
    struct corio_future c;
    struct corio_task *tc;
    corio_spawn_future(t, failing_task, NULL, &c, &tc);
    corio_cancel(tc);
    cr_assert_eq(corio_future_await(t, &c, NULL), -ECANCELED);
}

T_F(task_results_through_futures)
{
    int gc = 0;
    cr_assert_eq(frun(results_root, &gc), 0);
}

/* Wait modes. */
struct sleep_then_arg {
    int                  ms, res;
    struct corio_future *gate; /* when set: awaits it instead of sleeping */
};

static int sleep_then(struct corio_task *t, void *arg)
{
    struct sleep_then_arg a = *(struct sleep_then_arg *)arg; /* read before suspending */
    int err = a.gate ? corio_future_await(t, a.gate, NULL) : corio_sleep(t, a.ms * MS);
    return err ? err : a.res;
}

#define SLEEP_THEN(ms, res) (&(struct sleep_then_arg){(ms), (res), NULL})
/* Ends when the test completes the gate: "slower than every other" by events, not by time. */
#define GATED(gate, res) (&(struct sleep_then_arg){0, (res), (gate)})

static void waits_root(struct corio_task *t, void *arg)
{
    struct corio_future f[20];
    struct corio_future *fs[20];
    for (int i = 0; i < 20; i++)
        fs[i] = &f[i];
    size_t idx = 99;
    struct corio_future gate[4];
    for (int i = 0; i < 4; i++)
        corio_future_init(&gate[i]);

    /* Zero inputs: at once, in every mode (nothing could end a wait: it would deadlock). */
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_ALL, NULL, 0, &idx), 0);
    cr_assert_eq(idx, 0);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_FIRST, NULL, 0, &idx), 0);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_FIRST_ERROR, NULL, 0, NULL), 0);

    /* All: waits for every one; the first error in array order. */
    corio_spawn_future(t, sleep_then, SLEEP_THEN(30, 1), &f[0], NULL);
    corio_spawn_future(t, sleep_then, SLEEP_THEN(20, -EIO), &f[1], NULL);
    corio_spawn_future(t, sleep_then, SLEEP_THEN(10, -EPIPE), &f[2], NULL);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_ALL, fs, 3, &idx), -EIO);
    cr_assert_eq(idx, 1);
    for (int i = 0; i < 3; i++)
        cr_assert(corio_future_done(&f[i]));
    corio_spawn_future(t, sleep_then, SLEEP_THEN(5, 1), &f[0], NULL);
    corio_spawn_future(t, sleep_then, SLEEP_THEN(1, 2), &f[1], NULL);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_ALL, fs, 2, &idx), 0);
    cr_assert_eq(idx, 2);

    /* First: the first to complete; the others wait for a gate opened afterwards. */
    corio_spawn_future(t, sleep_then, GATED(&gate[0], 1), &f[0], NULL);
    corio_spawn_future(t, sleep_then, SLEEP_THEN(5, 2), &f[1], NULL);
    corio_spawn_future(t, sleep_then, GATED(&gate[0], 3), &f[2], NULL);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_FIRST, fs, 3, &idx), 2);
    cr_assert_eq(idx, 1);
    cr_assert_eq(corio_future_done(&f[0]), 0, "the others go on");
    corio_future_complete(&gate[0], 0, NULL);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_ALL, fs, 3, NULL), 0);

    /* First error: returns at the first failure, before the slow one (which could not end
     * before its gate opens: waiting for it would deadlock). */
    corio_spawn_future(t, sleep_then, GATED(&gate[1], 1), &f[0], NULL);
    corio_spawn_future(t, sleep_then, SLEEP_THEN(10, -ENOSPC), &f[1], NULL);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_FIRST_ERROR, fs, 2, &idx), -ENOSPC);
    cr_assert_eq(idx, 1);
    cr_assert_eq(corio_future_done(&f[0]), 0);
    corio_future_complete(&gate[1], 0, NULL);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_ALL, fs, 1, NULL), 0);
    cr_assert_eq(corio_future_result(&f[0], NULL), 1);
    /* ... and 0 with index n when none fails. */
    corio_spawn_future(t, sleep_then, SLEEP_THEN(3, 1), &f[0], NULL);
    corio_spawn_future(t, sleep_then, SLEEP_THEN(6, 2), &f[1], NULL);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_FIRST_ERROR, fs, 2, &idx), 0);
    cr_assert_eq(idx, 2);

    /* More than 16 futures (the allocated waiting places). */
    for (int i = 0; i < 20; i++)
        corio_spawn_future(t, sleep_then, i == 19 ? SLEEP_THEN(1, i) : GATED(&gate[2], i),
                           &f[i], NULL);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_FIRST, fs, 20, &idx), 19);
    cr_assert_eq(idx, 19);
    corio_future_complete(&gate[2], 0, NULL);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_ALL, fs, 20, &idx), 0);

    /* A deadline on a wait: -ETIMEDOUT, index n (the children cannot end before it). */
    corio_spawn_future(t, sleep_then, GATED(&gate[3], 1), &f[0], NULL);
    corio_spawn_future(t, sleep_then, GATED(&gate[3], 2), &f[1], NULL);
    corio_set_deadline(t, corio_now() + 20 * MS);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_FIRST, fs, 2, &idx), -ETIMEDOUT);
    cr_assert_eq(idx, 2);
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_ALL, fs, 2, &idx), -ETIMEDOUT);
    corio_set_deadline(t, 0);
    /* The children inherited the deadline: they time out too. */
    cr_assert_eq(corio_future_wait(t, CORIO_WAIT_ALL, fs, 2, &idx), -ETIMEDOUT);
    cr_assert_eq(idx, 0);
}

T_F(wait_all_first_and_first_error)
{
    cr_assert_eq(frun(waits_root, NULL), 0);
}

/* =========================================================================================
 * Cancellation racing with completion; locks under cancellation; deadlines everywhere.
 * ======================================================================================= */

struct race_reader {
    struct afs_file *f;
    ssize_t          res;
    int              intact;
};

static void race_read(struct corio_task *t, void *arg)
{
    struct race_reader *r = arg;
    char buf[16384];
    memset(buf, 0x5a, sizeof buf);
    r->res = afs_pread(r->f, buf, sizeof buf, 4096);
    if (r->res == (ssize_t)sizeof buf) {
        r->intact = t_check(buf, sizeof buf, 4096);
        return;
    }
    /* Cancelled: the kernel is done with buf. Mark it and check that nothing writes it
     * any more while we go through a few more phases. */
    memset(buf, 0xa5, sizeof buf);
    for (int i = 0; i < 3; i++)
        corio_yield(t);
    corio_sleep(t, 1 * MS);
    r->intact = 1;
    for (size_t i = 0; i < sizeof buf; i++)
        if ((unsigned char)buf[i] != 0xa5)
            r->intact = 0;
}

static void race_root2(struct corio_task *t, void *arg)
{
    struct race_reader *rs = arg;
    int data = 0, cancelled = 0;
    for (int round = 0; round < 200; round++) {
        struct race_reader *r = &rs[round];
        struct corio_task *c;
        corio_spawn(t, race_read, r, &c);
        /* Cancel at different points: still queued, in flight, or just completed. */
        for (int k = 0; k < round % 4; k++)
            corio_yield(t);
        corio_cancel(c);
        corio_wait(t);
        cr_assert(r->res == 16384 || r->res == -ECANCELED, "round %d: %zd", round, r->res);
        cr_assert(r->intact, "round %d: buffer written after the task resumed", round);
        if (r->res == 16384)
            data++;
        else
            cancelled++;
    }
    cr_assert_gt(cancelled, 0);
    if (getenv("CORIO_TEST_VERBOSE"))
        fprintf(stderr, "race: %d read, %d cancelled\n", data, cancelled);
}

T_F(cancel_racing_with_a_read_completion)
{
    fnew(NULL, 0);
    t_make_file(t_path("f"), 65536);
    static struct race_reader rs[200];
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    for (int i = 0; i < 200; i++)
        rs[i].f = f;
    cr_assert_eq(frun(race_root2, rs), 0);
    cr_assert_eq(afs_close(f), 0);
}

struct lock_case {
    struct corio_mutex m;
    int                order[8], n;
    int                res[8];
    int                inside;
};

static void lock_holder(struct corio_task *t, void *arg)
{
    struct lock_case *c = arg;
    cr_assert_eq(corio_mutex_lock(t, &c->m), 0);
    c->inside++;
    /* Cancelled while holding it: the sleep fails, the unlock still hands it over. */
    c->res[0] = corio_sleep(t, 10000 * MS);
    c->inside--;
    corio_mutex_unlock(&c->m);
}

static void lock_waiter(struct corio_task *t, void *arg)
{
    struct lock_case *c = arg;
    int me = ++c->n;
    int r = corio_mutex_lock(t, &c->m);
    c->res[me] = r;
    if (r == 0) {
        cr_assert_eq(c->m.owner, t);
        cr_assert_eq(c->inside, 0, "two tasks inside");
        c->inside++;
        c->order[me] = 1;
        corio_sleep(t, 1 * MS);
        c->inside--;
        corio_mutex_unlock(&c->m);
    }
}

static void lock_root(struct corio_task *t, void *arg)
{
    struct lock_case *c = arg;
    struct corio_task *h, *w[4];
    corio_spawn(t, lock_holder, c, &h);
    for (int i = 0; i < 4; i++)
        corio_spawn(t, lock_waiter, c, &w[i]);
    cr_assert_eq(corio_mutex_waiters(&c->m), 4);
    corio_cancel(w[1]); /* a waiter: off the queue, never gets the lock */
    corio_set_deadline(w[2], corio_now() + 5 * MS); /* a waiter with a deadline */
    corio_sleep(t, 20 * MS);
    cr_assert_eq(corio_mutex_waiters(&c->m), 2);
    corio_cancel(h); /* the holder */
    corio_wait(t);
    cr_assert_null(c->m.owner);
    cr_assert_eq(corio_mutex_waiters(&c->m), 0);
    /* Reusable afterwards. */
    cr_assert_eq(corio_mutex_lock(t, &c->m), 0);
    corio_mutex_unlock(&c->m);
}

T_F(cancel_a_mutex_holder_and_waiters_keeps_the_lock_consistent)
{
    static struct lock_case c;
    cr_assert_eq(frun(lock_root, &c), 0);
    cr_assert_eq(c.res[0], -ECANCELED);
    cr_assert_eq(c.res[1], 0);
    cr_assert_eq(c.res[2], -ECANCELED);
    cr_assert_eq(c.res[3], -ETIMEDOUT);
    cr_assert_eq(c.res[4], 0);
    cr_assert_eq(c.order[1] + c.order[4], 2);
    cr_assert_eq(c.order[2] + c.order[3], 0);
}

/* Deadlines on every blocking call. */
static struct corio_batch *held_batch;
static void hold_dispatch(void *user, struct corio_batch *b)
{
    held_batch = b; /* answered later by a task */
}

static int io_res;
static void io_blocked(struct corio_task *t, void *arg)
{
    io_res = corio_io(t, arg) == arg ? 1 : -1;
}

static void io_timed(struct corio_task *t, void *arg)
{
    corio_set_deadline(t, corio_now() + 10 * MS);
    void *out = corio_io(t, arg); /* answered only once this task has ended */
    cr_assert_null(out, "timed out before dispatch");
    cr_assert_eq(corio_cancelled(t), 0);
}

/* Holds the leader of corio_do and the mutex below until the test opens it. */
static struct corio_future dl_gate;

static int flight_fn(struct corio_task *t, void *arg, void **out)
{
    corio_future_await(t, &dl_gate, NULL);
    *out = arg;
    return 7;
}

static void do_leader(struct corio_task *t, void *arg)
{
    void *out;
    cr_assert_eq(corio_do(t, "k", 1, flight_fn, arg, &out, NULL), 7);
}

static int gen_slow(struct corio_task *t, struct corio_gen *g, void *arg)
{
    int r = corio_sleep(t, 10000 * MS);
    return r;
}

static void hold_m(struct corio_task *t, void *arg)
{
    cr_assert_eq(corio_mutex_lock(t, arg), 0);
    corio_future_await(t, &dl_gate, NULL);
    corio_mutex_unlock(arg);
}

struct fifo_box {
    struct afs_file *fifo;
};

static void deadlines_root(struct corio_task *t, void *arg)
{
    struct fifo_box *box = arg;
    int64_t t0;
#define UNDER_DEADLINE(expr)                                                                   \
    do {                                                                                       \
        corio_set_deadline(t, corio_now() + 10 * MS);                                          \
        t0 = corio_now();                                                                      \
        cr_assert_eq((expr), -ETIMEDOUT, #expr);                                               \
        cr_assert_lt(ms_since(t0), 5000, #expr); /* a hang guard: nothing else ends it */      \
        corio_set_deadline(t, 0);                                                              \
    } while (0)

    UNDER_DEADLINE(corio_sleep(t, 10000 * MS));

    corio_future_init(&dl_gate);
    struct corio_mutex m = CORIO_MUTEX_INIT;
    corio_spawn(t, hold_m, &m, NULL); /* holds m until dl_gate opens */
    corio_yield(t);
    UNDER_DEADLINE(corio_mutex_lock(t, &m));
    cr_assert_eq(corio_mutex_waiters(&m), 0, "the timed-out waiter left the queue");
    corio_future_complete(&dl_gate, 0, NULL);
    corio_wait(t);
    cr_assert_null(m.owner);

    struct corio_wg wg = CORIO_WG_INIT;
    corio_wg_add(&wg, 1);
    UNDER_DEADLINE(corio_wg_wait(t, &wg));
    corio_wg_done(&wg);

    struct corio_future f = CORIO_FUTURE_INIT;
    UNDER_DEADLINE(corio_future_await(t, &f, NULL));

    struct corio_gen g;
    corio_gen_start(t, &g, gen_slow, NULL);
    void *v;
    UNDER_DEADLINE(corio_gen_next(t, &g, &v));
    corio_gen_close(t, &g);

    /* corio_do: a waiter behind a slow leader. */
    static int token;
    corio_future_init(&dl_gate);
    corio_spawn(t, do_leader, &token, NULL);
    corio_yield(t); /* the leader is in flight_fn, held by dl_gate */
    UNDER_DEADLINE(corio_do(t, "k", 1, flight_fn, &token, &v, NULL));
    corio_future_complete(&dl_gate, 0, NULL);
    corio_wait(t);

    /* corio_io before dispatch: io_limit 1 and a request the dispatcher holds. */
    static int in1, in2;
    corio_spawn(t, io_blocked, &in1, NULL);
    corio_yield(t); /* the first request is dispatched and held */
    cr_assert_not_null(held_batch);
    struct corio_task *timed;
    corio_spawn(t, io_timed, &in2, &timed);
    while (!corio_task_done(timed)) /* its deadline, not the answer, ends its wait */
        corio_sleep(t, 1 * MS);
    corio_batch_respond(held_batch, 0, &in1);
    corio_wait(t);
    cr_assert_eq(io_res, 1);

    /* A file read on a FIFO that never gets data (io_uring only). */
    if (box->fifo) {
        char buf[64];
        corio_set_deadline(t, corio_now() + 10 * MS);
        t0 = corio_now();
        cr_assert_eq(afs_read(box->fifo, buf, sizeof buf), -ETIMEDOUT); /* no offsets */
        cr_assert_lt(ms_since(t0), 5000); /* a hang guard: no data ever comes */
        corio_set_deadline(t, 0);
    }
#undef UNDER_DEADLINE
}

T_F(deadlines_on_every_blocking_call)
{
    fnew(hold_dispatch, 1);
    struct fifo_box box = {0};
    if (is_uring()) {
        cr_assert_eq(mkfifo(t_path("fifo"), 0600), 0);
        cr_assert_eq(afs_open(t_ctx, t_path("fifo"), AFS_RDWR, 0, AFS_MODE_SYNC, &box.fifo), 0);
    }
    cr_assert_eq(frun(deadlines_root, &box), 0);
    if (box.fifo)
        cr_assert_eq(afs_close(box.fifo), 0);
}

/* =========================================================================================
 * Generators
 * ======================================================================================= */

struct gen_probe {
    int produced, last_yield, cleaned;
    int stop_after;  /* producer returns after this many values (0: 10) */
    int fail;        /* producer returns this after its values */
};

static int count_up(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct gen_probe *p = arg;
    int n = p->stop_after ? p->stop_after : 10;
    static intptr_t vals[64];
    for (int i = 0; i < n; i++) {
        vals[i] = i + 1;
        p->produced++;
        if ((p->last_yield = corio_gen_yield(t, g, &vals[i])) < 0)
            break;
    }
    p->cleaned = 1;
    return p->last_yield < 0 ? p->last_yield : p->fail;
}

static int is_even(void *v, void *user)
{
    return *(intptr_t *)v % 2 == 0;
}

static void gen_root(struct corio_task *t, void *arg)
{
    struct corio_gen g;
    void *v;
    intptr_t sum = 0;
    /* All values, then 0. */
    struct gen_probe p = {0};
    cr_assert_eq(corio_gen_start(t, &g, count_up, &p), 0);
    int r;
    while ((r = corio_gen_next(t, &g, &v)) == 1)
        sum += *(intptr_t *)v;
    cr_assert_eq(r, 0);
    cr_assert_eq(sum, 55);
    cr_assert_eq(corio_gen_next(t, &g, &v), 0, "stays ended");
    corio_gen_close(t, &g);

    /* The producer's error ends the iteration. */
    struct gen_probe pe = {.stop_after = 3, .fail = -EIO};
    corio_gen_start(t, &g, count_up, &pe);
    int n = 0;
    while ((r = corio_gen_next(t, &g, &v)) == 1)
        n++;
    cr_assert_eq(n, 3);
    cr_assert_eq(r, -EIO);

    /* Producer stops early: the consumer sees the end. */
    struct gen_probe ps = {.stop_after = 2};
    corio_gen_start(t, &g, count_up, &ps);
    n = 0;
    while (corio_gen_next(t, &g, &v) == 1)
        n++;
    cr_assert_eq(n, 2);

    /* Consumer exits early: the producer's yield fails, it cleans up, close waits for it. */
    struct gen_probe pc = {0};
    corio_gen_start(t, &g, count_up, &pc);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(corio_gen_next(t, &g, &v), 1);
    corio_gen_close(t, &g);
    cr_assert_eq(pc.cleaned, 1, "close returns after the producer ended");
    cr_assert_eq(pc.last_yield, -ECANCELED);
    cr_assert_leq(pc.produced, 4, "one at a time: at most one value ahead");
    cr_assert_eq(corio_gen_next(t, &g, &v), 0);
    corio_gen_close(t, &g); /* idempotent */

    /* Filter filters: every even value, not a take-while that stops at 1. */
    struct gen_probe pf = {0};
    corio_gen_start(t, &g, count_up, &pf);
    intptr_t got[10];
    n = 0;
    while (corio_gen_next_filter(t, &g, is_even, NULL, &v) == 1)
        got[n++] = *(intptr_t *)v;
    cr_assert_eq(n, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(got[i], 2 * (i + 1));
}

T_F(generators_hand_values_over_with_early_exit_on_both_sides)
{
    cr_assert_eq(frun(gen_root, NULL), 0);
}

static void gen_consumer(struct corio_task *t, void *arg)
{
    struct corio_gen g;
    void *v;
    corio_gen_start(t, &g, gen_slow, NULL);
    *(int *)arg = corio_gen_next(t, &g, &v);
    corio_gen_close(t, &g);
}

static void gen_cancel_root(struct corio_task *t, void *arg)
{
    struct corio_task *c;
    corio_spawn(t, gen_consumer, arg, &c);
    corio_sleep(t, 5 * MS);
    int64_t t0 = corio_now();
    corio_cancel(c); /* the consumer and its producer */
    corio_wait(t);
    cr_assert_lt(ms_since(t0), 5000, "interrupted, not the producer's whole 10 s sleep");
}

T_F(cancelling_the_consumer_ends_the_generator)
{
    int r = 1;
    cr_assert_eq(frun(gen_cancel_root, &r), 0);
    cr_assert_eq(r, -ECANCELED);
}

/* File chunks and lines. */
struct file_case {
    struct afs_file *f;
    size_t           chunk;
};

static void chunks_root(struct corio_task *t, void *arg)
{
    struct file_case *fc = arg;
    struct corio_gen g;
    cr_assert_eq(corio_gen_file_chunks(t, &g, fc->f, 0, 4096), 0);
    void *v;
    size_t lens[8];
    int n = 0;
    uint64_t off = 0;
    struct afs_stats a, b;
    while (corio_gen_next(t, &g, &v) == 1) {
        const struct corio_chunk *c = v;
        cr_assert_eq(c->off, off);
        cr_assert(t_check(c->data, c->len, c->off));
        lens[n++] = c->len;
        off += c->len;
        /* Read-ahead: while we work on this chunk, the next read is issued. */
        afs_ctx_stats(t_ctx, &a);
        corio_sleep(t, 2 * MS);
        afs_ctx_stats(t_ctx, &b);
        cr_assert_geq(b.ops - a.ops, 1, "chunk %d: no read-ahead", n);
        cr_assert(t_check(c->data, c->len, c->off), "the current chunk stays intact");
    }
    cr_assert_eq(n, 3);
    cr_assert_eq(lens[0], 4096);
    cr_assert_eq(lens[1], 4096);
    cr_assert_eq(lens[2], 10000 - 8192);
    /* From an offset, and closed early. */
    cr_assert_eq(corio_gen_file_chunks(t, &g, fc->f, 5000, 1000), 0);
    cr_assert_eq(corio_gen_next(t, &g, &v), 1);
    cr_assert_eq(((struct corio_chunk *)v)->off, 5000);
    cr_assert(t_check(((struct corio_chunk *)v)->data, 1000, 5000));
    corio_gen_close(t, &g);
    /* From the end or past it, up to the largest offset: no chunk, and the end; past the
     * largest offset: refused at the start. */
    uint64_t past[] = {10000, 20000, (uint64_t)INT64_MAX - 10, (uint64_t)INT64_MAX};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(corio_gen_file_chunks(t, &g, fc->f, past[i], 4096), 0);
        cr_assert_eq(corio_gen_next(t, &g, &v), 0, "from %llu", (unsigned long long)past[i]);
        corio_gen_close(t, &g);
    }
    cr_assert_eq(corio_gen_file_chunks(t, &g, fc->f, (uint64_t)INT64_MAX + 1, 4096), -EINVAL);
    cr_assert_eq(corio_gen_file_chunks(t, &g, fc->f, UINT64_MAX, 4096), -EINVAL);
}

T_F(file_chunks_with_read_ahead)
{
    fnew(NULL, 0);
    t_make_file(t_path("f"), 10000);
    struct file_case fc = {0};
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &fc.f), 0);
    cr_assert_eq(frun(chunks_root, &fc), 0);
    cr_assert_eq(afs_close(fc.f), 0);
}

static char long_line[10001];

static void lines_root(struct corio_task *t, void *arg)
{
    struct file_case *fc = arg;
    struct corio_gen g;
    cr_assert_eq(corio_gen_file_lines(t, &g, fc->f, fc->chunk), 0);
    const char *want[] = {"alpha", "", "", "beta\r", long_line, "gamma", "last"};
    void *v;
    int n = 0, r;
    while ((r = corio_gen_next(t, &g, &v)) == 1) {
        const struct corio_line *l = v;
        cr_assert_lt(n, 7);
        cr_assert_eq(l->len, strlen(want[n]), "line %d: %zu", n, l->len);
        cr_assert_str_eq(l->data, want[n]);
        cr_assert_eq(l->lineno, (uint64_t)n + 1);
        corio_sleep(t, 1 * MS); /* the line stays as it is while it is held */
        cr_assert_eq(l->len, strlen(want[n]), "line %d changed while held", n);
        cr_assert_str_eq(l->data, want[n]);
        cr_assert_eq(l->lineno, (uint64_t)n + 1);
        n++;
    }
    cr_assert_eq(r, 0);
    cr_assert_eq(n, 7);
    /* Early exit in the middle. */
    cr_assert_eq(corio_gen_file_lines(t, &g, fc->f, fc->chunk), 0);
    cr_assert_eq(corio_gen_next(t, &g, &v), 1);
    corio_gen_close(t, &g);
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

T_F(file_lines_with_empty_long_and_unterminated_lines)
{
    fnew(NULL, 0);
    memset(long_line, 'x', 10000);
    static char text[20000];
    int len = snprintf(text, sizeof text, "alpha\n\n\nbeta\r\n%s\ngamma\nlast", long_line);
    write_file(t_path("lines"), text, (size_t)len);
    size_t chunks[] = {7, 64, 0};
    for (int i = 0; i < 3; i++) {
        struct file_case fc = {.chunk = chunks[i]};
        cr_assert_eq(afs_open(t_ctx, t_path("lines"), AFS_RDONLY, 0, AFS_MODE_SYNC, &fc.f), 0);
        cr_assert_eq(corio_sched_run(f_sched, lines_root, &fc), 0);
        cr_assert_eq(afs_close(fc.f), 0);
    }
}

static void count_lines(struct corio_task *t, void *arg)
{
    struct file_case *fc = arg;
    struct corio_gen g;
    corio_gen_file_lines(t, &g, fc->f, 16);
    void *v;
    int n = 0;
    while (corio_gen_next(t, &g, &v) == 1)
        n++;
    fc->chunk = (size_t)n;
}

T_F(file_lines_empty_file_and_final_newline)
{
    fnew(NULL, 0);
    write_file(t_path("empty"), "", 0);
    write_file(t_path("nl"), "a\nb\n", 4);
    struct file_case fc = {0};
    cr_assert_eq(afs_open(t_ctx, t_path("empty"), AFS_RDONLY, 0, AFS_MODE_SYNC, &fc.f), 0);
    cr_assert_eq(corio_sched_run(f_sched, count_lines, &fc), 0);
    cr_assert_eq(fc.chunk, 0);
    cr_assert_eq(afs_close(fc.f), 0);
    cr_assert_eq(afs_open(t_ctx, t_path("nl"), AFS_RDONLY, 0, AFS_MODE_SYNC, &fc.f), 0);
    cr_assert_eq(corio_sched_run(f_sched, count_lines, &fc), 0);
    cr_assert_eq(fc.chunk, 2, "no empty line after the final newline");
    cr_assert_eq(afs_close(fc.f), 0);
}

/* =========================================================================================
 * Jobs
 * ======================================================================================= */

struct jlog {
    char events[256];
    int  connected;
    int  fin_count[8];
    int  runs_done; /* tasks whose run reached its end */
};

static void jlog(struct jlog *l, const char *what, const char *name)
{
    size_t n = strlen(l->events);
    snprintf(l->events + n, sizeof l->events - n, "%s%s:%s", n ? " " : "", what, name);
}

struct jarg {
    struct jlog *log;
    int          id;
    int          runs;       /* run calls before DONE (0: once) */
    int          run_fail;   /* run's result at the end instead of DONE */
    int          init_fail;
    int          fin_fail;
    int64_t      sleep_ms;   /* each run sleeps this long */
    int          progress;   /* call corio_job_progress every 5 ms while sleeping; the run
                              * lasts sleep_ms by the clock however long each sleep takes */
    int          finish;     /* return CORIO_JOB_FINISH */
    int          after;      /* first waits, reporting progress, until this many ended */
    int          deaf;       /* its sleep's error is ignored: the run goes on to DONE */
};

static int j_init(struct corio_task *t, struct corio_job_task *jt)
{
    struct jarg *a = jt->arg;
    jlog(a->log, "init", jt->name);
    return a->init_fail;
}

static int j_run(struct corio_task *t, struct corio_job_task *jt)
{
    struct jarg *a = jt->arg;
    while (a->log->runs_done < a->after) {
        int r = corio_sleep(t, 1 * MS);
        if (r)
            return r;
        corio_job_progress(jt);
    }
    if (a->sleep_ms) {
        if (a->progress) {
            for (int64_t t0 = corio_now(); ms_since(t0) < a->sleep_ms;) {
                int r = corio_sleep(t, 5 * MS);
                if (r)
                    return r;
                corio_job_progress(jt);
            }
        } else {
            int r = corio_sleep(t, a->sleep_ms * MS);
            if (r && !a->deaf)
                return r;
        }
    }
    if (!strcmp(jt->name, "connect"))
        a->log->connected = 1;
    if (a->runs-- > 1)
        return CORIO_JOB_TICK;
    a->log->runs_done++;
    if (a->finish)
        return CORIO_JOB_FINISH;
    return a->run_fail ? a->run_fail : CORIO_JOB_DONE;
}

static int j_fin(struct corio_task *t, struct corio_job_task *jt)
{
    struct jarg *a = jt->arg;
    jlog(a->log, "fin", jt->name);
    a->log->fin_count[a->id]++;
    /* Clean-up can block even when the job was cancelled or timed out. */
    cr_assert_eq(corio_sleep(t, 1 * MS), 0);
    return a->fin_fail;
}

static int j_init_needs_connection(struct corio_task *t, struct corio_job_task *jt)
{
    struct jarg *a = jt->arg;
    cr_assert_eq(a->log->connected, 1, "%s started before the one-shot succeeded", jt->name);
    return j_init(t, jt);
}

struct job_case {
    struct corio_job      j;
    struct corio_job_task jt[4];
    struct jarg           a[4];
    struct jlog           log;
    int                   res;
    int64_t               ms;
};

static void job_case_init(struct job_case *c, int ntasks, int oneshot)
{
    memset(c, 0, sizeof *c);
    corio_job_init(&c->j);
    static const char *names[] = {"connect", "read", "write", "extra"};
    for (int i = 0; i < ntasks; i++) {
        c->a[i].log = &c->log;
        c->a[i].id = i;
        c->jt[i].name = names[i];
        c->jt[i].init = (oneshot && i > 0) ? j_init_needs_connection : j_init;
        c->jt[i].run = j_run;
        c->jt[i].finalize = j_fin;
        c->jt[i].arg = &c->a[i];
    }
}

static void job_case_add(struct job_case *c, int ntasks, int oneshot)
{
    for (int i = 0; i < ntasks; i++) {
        if (oneshot && i == 0)
            corio_job_add_oneshot(&c->j, &c->jt[0]);
        else
            corio_job_add(&c->j, &c->jt[i]);
    }
}

static void job_root(struct corio_task *t, void *arg)
{
    struct job_case *c = arg;
    int64_t t0 = corio_now();
    c->res = corio_job_run(t, &c->j);
    c->ms = ms_since(t0);
    cr_assert(corio_future_done(&c->j.done));
    cr_assert_eq(corio_future_await(t, &c->j.done, NULL), c->res);
}

T_F(job_oneshot_first_then_the_others_finalizers_in_reverse_once)
{
    static struct job_case c;
    job_case_init(&c, 3, 1);
    c.a[0].sleep_ms = 10; /* connecting takes a while */
    c.a[1].runs = 3;      /* read ticks three times */
    c.a[2].runs = 2;
    job_case_add(&c, 3, 1);
    cr_assert_eq(frun(job_root, &c), 0);
    cr_assert_eq(c.res, 0);
    cr_assert_str_eq(c.log.events,
                     "init:connect init:read init:write fin:write fin:read fin:connect");
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(c.log.fin_count[i], 1);
        cr_assert(c.jt[i].finalized);
        cr_assert_eq(c.jt[i].result, 0);
    }
    struct corio_job_task *who = &c.jt[0];
    cr_assert_eq(corio_job_error(&c.j, &who), 0);
    cr_assert_null(who);
}

/* A job task's run callback that returns before the future in its frame of its own
 * (shielded) child is completed: the child's end must not write there, where the job task's
 * wait for that child has its frames now (before, this crashed). */
static int job_run_with_child(struct corio_task *t, struct corio_job_task *jt)
{
    (void)jt;
    struct corio_future fut; /* in this frame */
    if (corio_spawn_future(t, late_value, NULL, &fut, NULL) != 0)
        return -EIO;
    return CORIO_JOB_DONE; /* without awaiting it */
}

static void job_child_root(struct corio_task *t, void *arg)
{
    struct corio_job_task *jt = arg;
    struct corio_job j;
    corio_job_init(&j);
    corio_job_add(&j, jt);
    cr_assert_eq(corio_job_run(t, &j), 0);
}

T_F(a_future_in_a_job_callbacks_returned_frame_is_not_completed)
{
    static struct corio_job_task jt;
    memset(&jt, 0, sizeof jt);
    jt.name = "spawner";
    jt.run = job_run_with_child;
    cr_assert_eq(frun(job_child_root, &jt), 0);
    cr_assert_eq(jt.result, 0);
}

T_F(job_first_failure_cancels_and_is_recorded)
{
    static struct job_case c;
    job_case_init(&c, 3, 0);
    c.a[0].sleep_ms = 10000;
    c.a[1].sleep_ms = 10;
    c.a[1].run_fail = -EPIPE;
    c.a[2].sleep_ms = 10000;
    c.a[2].fin_fail = -EIO; /* a failing finalizer does not stop the others */
    job_case_add(&c, 3, 0);
    cr_assert_eq(frun(job_root, &c), 0);
    cr_assert_eq(c.res, -EPIPE);
    struct corio_job_task *who;
    cr_assert_eq(corio_job_error(&c.j, &who), -EPIPE);
    cr_assert_eq(who, &c.jt[1]);
    cr_assert_eq(c.jt[0].result, -ECANCELED);
    cr_assert_eq(c.jt[2].result, -ECANCELED);
    cr_assert_lt(c.ms, 5000, "the others were cancelled, not waited for (10 s)");
    cr_assert_str_eq(c.log.events,
                     "init:connect init:read init:write fin:write fin:read fin:connect");
    cr_assert_eq(c.j.fin_err, -EIO);
    cr_assert_eq(c.jt[2].fin_result, -EIO);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(c.log.fin_count[i], 1);
}

T_F(job_failed_oneshot_starts_nothing_else)
{
    static struct job_case c;
    job_case_init(&c, 3, 1);
    c.a[0].run_fail = -ECONNREFUSED;
    job_case_add(&c, 3, 1);
    cr_assert_eq(frun(job_root, &c), 0);
    cr_assert_eq(c.res, -ECONNREFUSED);
    cr_assert_eq(c.j.failed, &c.jt[0]);
    cr_assert_str_eq(c.log.events, "init:connect fin:connect");
    cr_assert(!c.jt[1].inited && !c.jt[1].finalized);
}

T_F(job_failed_init_is_finalized_too)
{
    static struct job_case c;
    job_case_init(&c, 2, 0);
    c.a[1].init_fail = -EACCES;
    c.a[0].sleep_ms = 10000;
    job_case_add(&c, 2, 0);
    cr_assert_eq(frun(job_root, &c), 0);
    cr_assert_eq(c.res, -EACCES);
    cr_assert_eq(c.j.failed, &c.jt[1]);
    cr_assert_str_eq(c.log.events, "init:connect init:read fin:read fin:connect");
}

T_F(job_timeout)
{
    static struct job_case c;
    job_case_init(&c, 2, 0);
    c.a[0].sleep_ms = 10000;
    c.a[1].sleep_ms = 10000;
    job_case_add(&c, 2, 0);
    corio_job_set_timeout(&c.j, 30 * MS);
    cr_assert_eq(frun(job_root, &c), 0);
    cr_assert_eq(c.res, -ETIMEDOUT);
    cr_assert_null(c.j.failed, "the job's timeout, not a task's");
    cr_assert_lt(c.ms, 5000, "the tasks' 10 s sleeps were cut");
    cr_assert_eq(c.log.fin_count[0] + c.log.fin_count[1], 2, "finalizers ran after the timeout");
}

/* A task that takes its -ETIMEDOUT and returns CORIO_JOB_DONE: the job still timed out. */
T_F(job_timeout_holds_when_the_tasks_ignore_it)
{
    static struct job_case c;
    job_case_init(&c, 1, 0);
    c.a[0].sleep_ms = 10000;
    c.a[0].deaf = 1;
    job_case_add(&c, 1, 0);
    corio_job_set_timeout(&c.j, 20 * MS);
    cr_assert_eq(frun(job_root, &c), 0);
    cr_assert_eq(c.res, -ETIMEDOUT);
    struct corio_job_task *who = &c.jt[0];
    cr_assert_eq(corio_job_error(&c.j, &who), -ETIMEDOUT);
    cr_assert_null(who, "the job's timeout, not a task's");
    cr_assert_eq(c.jt[0].result, 0, "the task itself ended with DONE");
    cr_assert_lt(c.ms, 5000, "the 10 s sleep was cut");
}

/* Cancelled before it starts: no task runs, not even the one-shot's init. */
static void job_cancel_first_root(struct corio_task *t, void *arg)
{
    struct job_case *c = arg;
    corio_job_cancel(&c->j, -EIO);
    c->res = corio_job_run(t, &c->j);
}

T_F(job_cancelled_before_it_starts_runs_nothing)
{
    static struct job_case c;
    job_case_init(&c, 3, 1);
    job_case_add(&c, 3, 1);
    cr_assert_eq(frun(job_cancel_first_root, &c), 0);
    cr_assert_eq(c.res, -EIO);
    cr_assert_str_eq(c.log.events, "", "callbacks ran: %s", c.log.events);
    cr_assert_null(c.j.failed);
}

T_F(job_idle_timeout)
{
    static struct job_case c;
    job_case_init(&c, 3, 0);
    /* Reports progress every 5 ms while it works 1.5 s by the clock: survives a 1 s idle
     * timeout, however slow each 5 ms sleep is (wine, qemu, a loaded machine). */
    c.a[0].sleep_ms = 1500;
    c.a[0].progress = 1;
    c.jt[0].idle_timeout_ns = 1000 * MS;
    /* Ticks (progress) every 10 ms, 10 times: survives. */
    c.a[1].sleep_ms = 10;
    c.a[1].runs = 10;
    c.jt[1].idle_timeout_ns = 1000 * MS;
    /* Reports progress until the other two ended, then is silent for 10 s: fails after its
     * 1 s idle timeout, which a silent 10 s cannot survive. */
    c.a[2].after = 2;
    c.a[2].sleep_ms = 10000;
    c.jt[2].idle_timeout_ns = 1000 * MS;
    job_case_add(&c, 3, 0);
    cr_assert_eq(frun(job_root, &c), 0);
    cr_assert_eq(c.res, -ETIMEDOUT);
    cr_assert_eq(c.j.failed, &c.jt[2]);
    cr_assert_eq(c.jt[0].result, 0);
    cr_assert_eq(c.jt[1].result, 0);
    /* The silent task's 10 s sleep was cut: had it ended, the task would have succeeded.
     * The time is only a hang guard. */
    cr_assert_eq(c.jt[2].result, -ETIMEDOUT);
    cr_assert_lt(c.ms, 60000);
}

static void job_cancel_root(struct corio_task *t, void *arg)
{
    struct job_case *c = arg;
    cr_assert_eq(corio_job_start(t, &c->j), 0);
    corio_sleep(t, 10 * MS);
    corio_job_cancel(&c->j, -ECONNABORTED);
    void *v;
    c->res = corio_future_await(t, &c->j.done, &v);
    cr_assert_eq(v, &c->j);
}

T_F(job_explicit_cancel_with_an_error)
{
    static struct job_case c;
    job_case_init(&c, 2, 0);
    c.a[0].sleep_ms = 10000;
    c.a[1].sleep_ms = 10000;
    job_case_add(&c, 2, 0);
    cr_assert_eq(frun(job_cancel_root, &c), 0);
    cr_assert_eq(c.res, -ECONNABORTED);
    cr_assert_null(c.j.failed);
    cr_assert_str_eq(c.log.events, "init:connect init:read fin:read fin:connect");
}

static void job_outer_cancel(struct corio_task *t, void *arg)
{
    struct job_case *c = arg;
    struct corio_task *r;
    corio_spawn(t, job_root, c, &r);
    corio_sleep(t, 10 * MS);
    corio_cancel(r); /* the task running the job: the job is cancelled, finalizers run */
}

T_F(job_cancelled_from_outside_runs_finalizers)
{
    static struct job_case c;
    job_case_init(&c, 2, 0);
    c.a[0].sleep_ms = 10000;
    c.a[1].sleep_ms = 10000;
    job_case_add(&c, 2, 0);
    cr_assert_eq(frun(job_outer_cancel, &c), 0);
    cr_assert_eq(c.res, -ECANCELED);
    cr_assert_null(c.j.failed, "the cancel came from outside the job, not from a task");
    cr_assert_eq(c.log.fin_count[0] + c.log.fin_count[1], 2);
}

T_F(job_finish_ends_the_job_successfully)
{
    static struct job_case c;
    job_case_init(&c, 2, 0);
    c.a[0].sleep_ms = 10000;
    c.a[1].sleep_ms = 5;
    c.a[1].finish = 1;
    job_case_add(&c, 2, 0);
    cr_assert_eq(frun(job_root, &c), 0);
    cr_assert_eq(c.res, 0);
    cr_assert_eq(c.log.fin_count[0] + c.log.fin_count[1], 2);
    cr_assert_lt(c.ms, 5000, "the other task's 10 s sleep was cut");
}

/* A shielded file read is not cancelled: cancelled right after it was queued (which always
 * takes an unshielded read back, see cancel_racing_with_a_read_completion), it gets its
 * data. */
struct shield_read {
    struct afs_file *f;
    ssize_t          res;
    int              ok;
};

static void shielded_reader(struct corio_task *t, void *arg)
{
    struct shield_read *r = arg;
    char buf[8192];
    corio_shield_begin(t);
    r->res = afs_pread(r->f, buf, sizeof buf, 0);
    corio_shield_end(t);
    r->ok = r->res == (ssize_t)sizeof buf && t_check(buf, sizeof buf, 0);
    cr_assert_eq(afs_pread(r->f, buf, sizeof buf, 0), -ECANCELED, "cancelled after it");
}

static void shield_read_root(struct corio_task *t, void *arg)
{
    struct shield_read *r = arg;
    for (int i = 0; i < 20; i++) {
        struct corio_task *c;
        r->res = 1;
        r->ok = 0;
        corio_spawn(t, shielded_reader, r, &c);
        corio_cancel(c); /* the read is queued, not yet submitted */
        corio_wait(t);
        cr_assert_eq(r->res, 8192, "round %d: %zd", i, r->res);
        cr_assert(r->ok);
    }
}

T_F(shielded_file_read_is_not_cancelled)
{
    fnew(NULL, 0);
    t_make_file(t_path("f"), 8192);
    static struct shield_read r;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &r.f), 0);
    cr_assert_eq(frun(shield_read_root, &r), 0);
    cr_assert_eq(afs_close(r.f), 0);
}

/* A future may be freed once it is done, before the tasks it woke ran again: they have its
 * result already. Freed here with its bytes scribbled over, as a reused allocation's. */
struct freed_case {
    struct corio_future *f, *g;
    int                  await_rc, wait_rc;
    void                *value;
    size_t               index;
};

static void freed_awaiter(struct corio_task *t, void *arg)
{
    struct freed_case *c = arg;
    c->await_rc = corio_future_await(t, c->f, &c->value);
}

static void freed_waiter(struct corio_task *t, void *arg)
{
    struct freed_case *c = arg;
    struct corio_future *fs[2] = {c->f, c->g};
    c->wait_rc = corio_future_wait(t, CORIO_WAIT_ALL, fs, 2, &c->index);
}

/* Through a volatile pointer: a plain memset right before free() is dropped as dead. */
static void *(*volatile scribble)(void *, int, size_t) = memset;

static void scribble_free(struct corio_future *f)
{
    scribble(f, 0xa5, sizeof *f);
    free(f);
}

static void freed_root(struct corio_task *t, void *arg)
{
    struct freed_case *c = arg;
    c->f = malloc(sizeof *c->f);
    c->g = malloc(sizeof *c->g);
    cr_assert(c->f && c->g);
    corio_future_init(c->f);
    corio_future_init(c->g);
    cr_assert_eq(corio_spawn(t, freed_awaiter, c, NULL), 0);
    cr_assert_eq(corio_spawn(t, freed_waiter, c, NULL), 0);
    cr_assert_eq(corio_future_complete(c->g, -EIO, NULL), 0);
    corio_yield(t); /* the waiter saw g done and waits for f */
    cr_assert_eq(corio_future_complete(c->f, 7, (void *)c), 0);
    cr_assert(corio_future_done(c->f));
    scribble_free(c->f);
    scribble_free(c->g);
    corio_wait(t);
}

T_F(a_future_freed_once_done_leaves_its_result_with_the_tasks_it_woke)
{
    struct freed_case c = {.await_rc = 1, .wait_rc = 1};
    cr_assert_eq(frun(freed_root, &c), 0);
    cr_assert_eq(c.await_rc, 7);
    cr_assert_eq(c.value, &c);
    cr_assert_eq(c.wait_rc, -EIO, "wait-all: the first error in array order");
    cr_assert_eq(c.index, 1);
}
