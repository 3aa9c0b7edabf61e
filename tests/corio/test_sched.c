/* The corio scheduler: the seed's cases, reuse, deadlock, determinism, cross-thread answers,
 * cancellation, deadlines, and batching (one kernel submission per phase). Run once per
 * backend through ASYNCFS_BACKEND, like the contract suite. */
#include "../common.h"

#include <corio.h>
#include <fenv.h>
#include <signal.h>

static struct corio_sched *t_sched;

static void s_setup(void)
{
    t_setup();
}

static void s_teardown(void)
{
    if (t_sched)
        corio_sched_free(t_sched);
    t_sched = NULL;
    t_teardown();
}

#define T_CO(name, ...) Test(corio, name, .init = s_setup, .fini = s_teardown, .timeout = 60, ##__VA_ARGS__)

/* A scheduler on a context of the backend under test. */
static struct corio_sched *new_sched(corio_dispatch_fn *d, void *user, unsigned io_limit,
                                     size_t sync_threshold)
{
    struct afs_config acfg;
    afs_config_default(&acfg);
    acfg.sync_threshold = sync_threshold;
    t_ctx = t_ctx_cfg(&acfg);
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    cfg.dispatch = d;
    cfg.dispatch_user = user;
    if (io_limit)
        cfg.io_limit = io_limit;
    int err = corio_sched_new(&t_sched, &cfg);
    cr_assert_eq(err, 0, "corio_sched_new: %s", afs_strerror(err));
    return t_sched;
}

/* ---- The seed's quick start: 10 tasks x 4 requests, batched 10 at a time. ---- */

static int batches[64], nbatches;

static void answer_all(void *user, struct corio_batch *b)
{
    batches[nbatches++] = (int)corio_batch_len(b);
    for (size_t i = 0; i < corio_batch_len(b); i++)
        corio_batch_respond(b, i, corio_batch_input(b, i));
}

static void quick_child(struct corio_task *t, void *arg)
{
    for (int k = 0; k < 4; k++)
        cr_assert_eq(corio_io(t, arg), arg);
}

static void quick_root(struct corio_task *t, void *arg)
{
    static int ids[10];
    for (int i = 0; i < 10; i++)
        cr_assert_eq(corio_spawn(t, quick_child, &ids[i], NULL), 0);
}

T_CO(quickstart_batches_ten_requests_four_times)
{
    new_sched(answer_all, NULL, 0, 4096);
    nbatches = 0;
    cr_assert_eq(corio_sched_run(t_sched, quick_root, NULL), 0);
    cr_assert_eq(nbatches, 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(batches[i], 10, "batch %d had %d", i, batches[i]);
    struct corio_stats st;
    corio_sched_stats(t_sched, &st);
    cr_assert_eq(st.tasks, 11);
    cr_assert_eq(st.ios, 40);
}

/* ---- Finished tasks' stacks serve later spawns (on Windows: the fibers restart). ---- */

static int reuse_sum;

static void reuse_child(struct corio_task *t, void *arg)
{
    volatile char scratch[8192]; /* touch the stack well below the entry frame */
    int i = *(int *)arg;
    for (size_t k = 0; k < sizeof scratch; k += 512)
        scratch[k] = (char)i;
    double x = (double)i;
    corio_yield(t);
    cr_assert_eq(scratch[4096], (char)i);
    reuse_sum += (int)(x * 0.5 * 2.0);
}

static void reuse_root(struct corio_task *t, void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(corio_spawn(t, reuse_child, &i, NULL), 0);
        corio_wait(t);
    }
}

T_CO(finished_tasks_stacks_are_reused)
{
    new_sched(answer_all, NULL, 0, 4096);
    reuse_sum = 0;
    cr_assert_eq(corio_sched_run(t_sched, reuse_root, NULL), 0);
    cr_assert_eq(reuse_sum, 999 * 1000 / 2);
    struct corio_stats st;
    corio_sched_stats(t_sched, &st);
    cr_assert_eq(st.tasks, 1001);
    cr_assert_leq(st.stacks, 4, "%llu stacks made for 1001 tasks, two alive at a time",
                  (unsigned long long)st.stacks);
}

/* ---- The stack cache grows with the tasks alive: a second burst of 1,536 tasks maps no
 * stack (the first one's are cached, not unmapped beyond a fixed count). ---- */

#define BURST 1536

static void burst_child(struct corio_task *t, void *arg)
{
    (void)arg;
    corio_yield(t); /* all BURST alive at once */
}

static void burst_root(struct corio_task *t, void *arg)
{
    uint64_t *mapped = arg;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < BURST; i++)
            cr_assert_eq(corio_spawn(t, burst_child, NULL, NULL), 0);
        corio_wait(t);
        struct corio_stats st;
        corio_sched_stats(t_sched, &st);
        mapped[round] = st.stacks;
    }
}

/* Slow under ThreadSanitizer (each stack is a TSan fiber): a longer limit than T_CO's. */
Test(corio, stack_cache_grows_with_the_tasks_alive, .init = s_setup, .fini = s_teardown,
     .timeout = 300)
{
    new_sched(answer_all, NULL, 0, 4096);
    uint64_t mapped[2] = {0, 0};
    cr_assert_eq(corio_sched_run(t_sched, burst_root, mapped), 0);
    cr_assert_geq(mapped[0], BURST, "%llu stacks for %d tasks alive at once",
                  (unsigned long long)mapped[0], BURST);
    cr_assert_eq(mapped[1], mapped[0], "the second burst of %d tasks made %llu new stacks",
                 BURST, (unsigned long long)(mapped[1] - mapped[0]));
}

/* ---- A task starts with its spawner's FP rounding mode, on a reused stack too. ---- */

static int fp_checks;

static void fp_child(struct corio_task *t, void *arg)
{
    (void)arg;
    cr_assert_eq(fegetround(), FE_UPWARD, "a task starts with its spawner's rounding mode");
    fesetround(FE_TOWARDZERO);
    corio_yield(t);
    cr_assert_eq(fegetround(), FE_TOWARDZERO, "a task keeps its own rounding mode");
    fp_checks++;
}

static void fp_root(struct corio_task *t, void *arg)
{
    (void)arg;
    fesetround(FE_UPWARD);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(corio_spawn(t, fp_child, NULL, NULL), 0);
        cr_assert_eq(fegetround(), FE_UPWARD, "the spawner keeps its rounding mode");
        corio_wait(t);
    }
    fesetround(FE_TONEAREST);
}

T_CO(tasks_start_with_the_spawners_rounding_mode)
{
    new_sched(answer_all, NULL, 0, 4096);
    fp_checks = 0;
    cr_assert_eq(corio_sched_run(t_sched, fp_root, NULL), 0);
    fesetround(FE_TONEAREST);
    cr_assert_eq(fp_checks, 3);
}

/* ---- 100 tasks x 4 requests, every third request retried once. ---- */

static int seen, retried;
static void retry_every_third(void *user, struct corio_batch *b)
{
    for (size_t i = 0; i < corio_batch_len(b); i++) {
        int *in = corio_batch_input(b, i);
        if (++seen % 3 == 0 && *in >= 0) {
            retried++;
            corio_batch_retry(b, i);
        } else {
            corio_batch_respond(b, i, in);
        }
    }
}

static void four_ios(struct corio_task *t, void *arg)
{
    int v = 0;
    for (int k = 0; k < 4; k++)
        cr_assert_eq(corio_io(t, &v), &v);
    (*(int *)arg)++;
}

static void hundred_root(struct corio_task *t, void *arg)
{
    for (int i = 0; i < 100; i++)
        cr_assert_eq(corio_spawn(t, four_ios, arg, NULL), 0);
}

T_CO(hundred_tasks_with_retries)
{
    new_sched(retry_every_third, NULL, 0, 4096);
    int finished = 0;
    seen = retried = 0;
    cr_assert_eq(corio_sched_run(t_sched, hundred_root, &finished), 0);
    cr_assert_eq(finished, 100);
    cr_assert_gt(retried, 100);
    cr_assert_eq(seen, 400 + retried, "every retry was dispatched again");
}

/* ---- io_limit is enforced by the scheduler. ---- */

static struct corio_batch *held[256];
static int nheld, max_inflight, inflight;
static void hold(void *user, struct corio_batch *b)
{
    inflight += (int)corio_batch_len(b);
    if (inflight > max_inflight)
        max_inflight = inflight;
    held[nheld++] = b;
}

static void release_later(struct corio_task *t, void *arg)
{
    /* Answer held batches one phase at a time, from a task. */
    while (nheld > 0 || *(int *)arg < 20) {
        corio_sleep(t, 1000000);
        while (nheld > 0) {
            struct corio_batch *b = held[--nheld];
            size_t n = corio_batch_len(b);
            inflight -= (int)n;
            for (size_t i = 0; i < n; i++)
                corio_batch_respond(b, i, NULL);
        }
    }
}

static void one_io(struct corio_task *t, void *arg)
{
    corio_io(t, NULL);
    (*(int *)arg)++;
}

static void limit_root(struct corio_task *t, void *arg)
{
    for (int i = 0; i < 20; i++)
        corio_spawn(t, one_io, arg, NULL);
    corio_spawn(t, release_later, arg, NULL);
}

T_CO(io_limit_caps_requests_in_flight)
{
    new_sched(hold, NULL, 5, 4096);
    int done = 0;
    nheld = max_inflight = inflight = 0;
    cr_assert_eq(corio_sched_run(t_sched, limit_root, &done), 0);
    cr_assert_eq(done, 20);
    cr_assert_eq(max_inflight, 5);
}

/* ---- Answers from another thread wake the scheduler. ---- */

static void *answer_later(void *arg)
{
    struct corio_batch *b = arg;
    usleep(20000);
    /* Reads the batch after the last answer: valid until the next run or the free. */
    for (size_t i = 0; i < corio_batch_len(b); i++)
        corio_batch_respond(b, i, (void *)(uintptr_t)(i + 1));
    return NULL;
}

static pthread_t answerers[16];
static int nanswerers;
static void threaded(void *user, struct corio_batch *b)
{
    cr_assert_eq(pthread_create(&answerers[nanswerers++], NULL, answer_later, b), 0);
}

static void threaded_root(struct corio_task *t, void *arg)
{
    for (int i = 0; i < 8; i++)
        corio_spawn(t, one_io, arg, NULL);
}

T_CO(cross_thread_answers)
{
    new_sched(threaded, NULL, 0, 4096);
    int done = 0;
    nanswerers = 0;
    cr_assert_eq(corio_sched_run(t_sched, threaded_root, &done), 0);
    cr_assert_eq(done, 8);
    cr_assert_eq(nanswerers, 1, "one batch");
    for (int i = 0; i < nanswerers; i++)
        pthread_join(answerers[i], NULL);
}

/* ---- Mutex: I/O inside the critical section, FIFO, reused many times. ---- */

struct crit {
    struct corio_mutex m;
    struct afs_file   *f;
    int                inside, entries, order[64], norder;
};

static void critical(struct corio_task *t, void *arg)
{
    struct crit *c = arg;
    for (int round = 0; round < 50; round++) {
        cr_assert_eq(corio_mutex_lock(t, &c->m), 0);
        cr_assert_eq(c->inside, 0, "two tasks in the critical section");
        c->inside = 1;
        char buf[8192];
        cr_assert_eq(afs_pread(c->f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
        c->entries++;
        c->inside = 0;
        corio_mutex_unlock(&c->m);
    }
}

static void crit_root(struct corio_task *t, void *arg)
{
    for (int i = 0; i < 10; i++)
        corio_spawn(t, critical, arg, NULL);
}

T_CO(mutex_with_io_in_the_critical_section_reused)
{
    new_sched(NULL, NULL, 0, 0);
    t_make_file(t_path("f"), 8192);
    struct crit c = {.m = CORIO_MUTEX_INIT};
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &c.f), 0);
    cr_assert_eq(corio_sched_run(t_sched, crit_root, &c), 0);
    cr_assert_eq(c.entries, 500);
    cr_assert_null(c.m.owner);
    cr_assert_eq(corio_mutex_waiters(&c.m), 0);
    cr_assert_eq(afs_close(c.f), 0);
}

static void fifo_waiter(struct corio_task *t, void *arg)
{
    struct crit *c = arg;
    int me = c->norder + 100;
    corio_mutex_lock(t, &c->m);
    c->order[c->norder++] = me;
    corio_mutex_unlock(&c->m);
}

static void fifo_root(struct corio_task *t, void *arg)
{
    struct crit *c = arg;
    corio_mutex_lock(t, &c->m);
    for (int i = 0; i < 5; i++) {
        c->norder = i; /* each waiter reads its rank as it starts */
        corio_spawn(t, fifo_waiter, c, NULL);
    }
    c->norder = 0;
    cr_assert_eq(corio_mutex_waiters(&c->m), 5);
    corio_mutex_unlock(&c->m);
    corio_wait(t);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(c->order[i], 100 + i, "FIFO hand-off");
}

T_CO(mutex_is_fifo)
{
    new_sched(NULL, NULL, 0, 4096);
    struct crit c = {.m = CORIO_MUTEX_INIT};
    cr_assert_eq(corio_sched_run(t_sched, fifo_root, &c), 0);
}

Test(corio, unlock_by_a_non_owner_aborts, .signal = SIGABRT, .timeout = 10)
{
    struct corio_mutex m = CORIO_MUTEX_INIT;
    corio_mutex_unlock(&m);
}

/* ---- Wait group: 99 children, reused for 20 rounds. ---- */

static void wg_child(struct corio_task *t, void *arg)
{
    corio_yield(t);
    corio_wg_done(arg);
}

static void wg_root(struct corio_task *t, void *arg)
{
    struct corio_wg wg = CORIO_WG_INIT;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 99; i++) {
            corio_wg_add(&wg, 1);
            corio_spawn(t, wg_child, &wg, NULL);
        }
        cr_assert_eq(wg.count, 99);
        cr_assert_eq(corio_wg_wait(t, &wg), 0);
        cr_assert_eq(wg.count, 0);
        (*(int *)arg)++;
    }
    cr_assert_eq(corio_wg_wait(t, &wg), 0, "zero counter: returns at once");
}

T_CO(wait_group_99_children_reused)
{
    new_sched(NULL, NULL, 0, 4096);
    int rounds = 0;
    cr_assert_eq(corio_sched_run(t_sched, wg_root, &rounds), 0);
    cr_assert_eq(rounds, 20);
}

Test(corio, negative_wait_group_aborts, .signal = SIGABRT, .timeout = 10)
{
    struct corio_wg wg = CORIO_WG_INIT;
    corio_wg_done(&wg);
}

/* ---- Singleflight: 100 callers, one execution. ---- */

static int executions;
static int expensive(struct corio_task *t, void *arg, void **out)
{
    executions++;
    corio_io(t, arg); /* suspends, so the others pile up */
    *out = arg;
    return 42;
}

static int null_key_fn(struct corio_task *t, void *arg, void **out)
{
    (void)t;
    *out = arg;
    return 5;
}

static int shared_count;
static void caller(struct corio_task *t, void *arg)
{
    void *out = NULL;
    int shared = 0;
    cr_assert_eq(corio_do(t, "key", 3, expensive, arg, &out, &shared), 42);
    cr_assert_eq(out, arg);
    shared_count += shared;
}

static void flight_root(struct corio_task *t, void *arg)
{
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 100; i++)
            corio_spawn(t, caller, arg, NULL);
        corio_wait(t);
    }
}

T_CO(singleflight_hundred_callers)
{
    new_sched(answer_all, NULL, 0, 4096);
    static int token;
    executions = shared_count = 0;
    cr_assert_eq(corio_sched_run(t_sched, flight_root, &token), 0);
    cr_assert_eq(executions, 3, "one execution per round");
    cr_assert_eq(shared_count, 300);
}

/* ---- Error groups, nested; the first error cancels the others. ---- */

static int slow_member(struct corio_task *t, void *arg)
{
    int err = corio_sleep(t, 10LL * 1000 * 1000 * 1000);
    cr_assert_eq(err, -ECANCELED, "cancelled by the failing member");
    return err;
}

static int failing_member(struct corio_task *t, void *arg)
{
    corio_sleep(t, 1000000);
    return -EIO;
}

static int inner_group(struct corio_task *t, void *arg)
{
    struct corio_group g;
    corio_group_init(&g, t);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(corio_group_go(&g, slow_member, NULL), 0);
    return corio_group_wait(&g);
}

static void group_root(struct corio_task *t, void *arg)
{
    struct corio_group g;
    corio_group_init(&g, t);
    cr_assert_eq(corio_group_go(&g, inner_group, NULL), 0);
    cr_assert_eq(corio_group_go(&g, slow_member, NULL), 0);
    cr_assert_eq(corio_group_go(&g, failing_member, NULL), 0);
    int64_t t0 = corio_now();
    cr_assert_eq(corio_group_wait(&g), -EIO);
    cr_assert_lt(corio_now() - t0, 2LL * 1000 * 1000 * 1000, "cancellation is prompt");
    cr_assert_eq(corio_group_go(&g, slow_member, NULL), -ECANCELED, "the group failed");
    /* Reuse after init. */
    corio_group_init(&g, t);
    cr_assert_eq(corio_group_wait(&g), 0, "empty group");
}

/* A member adds members (Go's errgroup lets g.Go run inside a member): the group waits for
 * them, and a failing one cancels the rest. */
static struct corio_group adding_g;

static int adding_member(struct corio_task *t, void *arg)
{
    (void)arg;
    cr_assert_eq(corio_group_go(&adding_g, slow_member, NULL), 0);
    cr_assert_eq(corio_group_go(&adding_g, failing_member, NULL), 0);
    return 0;
}

static void adding_root(struct corio_task *t, void *arg)
{
    corio_group_init(&adding_g, t);
    cr_assert_eq(corio_group_go(&adding_g, adding_member, NULL), 0);
    int64_t t0 = corio_now();
    cr_assert_eq(corio_group_wait(&adding_g), -EIO);
    cr_assert_lt(corio_now() - t0, 2LL * 1000 * 1000 * 1000, "cancellation is prompt");
    /* corio_do with no key (NULL, length 0) is one more key. */
    void *out;
    cr_assert_eq(corio_do(t, NULL, 0, null_key_fn, arg, &out, NULL), 5, "a NULL key of length 0");
}

/* Callers of one NULL key of length 0 share one run, as any key's callers do. */
static int null_key_slow(struct corio_task *t, void *arg, void **out)
{
    corio_sleep(t, 1000 * 1000); /* 1 ms: the second caller comes while it runs */
    *out = arg;
    return 6;
}

static void null_key_caller(struct corio_task *t, void *arg)
{
    void *out = NULL;
    int shared = 0;
    cr_assert_eq(corio_do(t, NULL, 0, null_key_slow, arg, &out, &shared), 6);
    cr_assert_eq(out, arg);
    *(int *)arg += shared;
}

static void null_key_root(struct corio_task *t, void *arg)
{
    cr_assert_eq(corio_spawn(t, null_key_caller, arg, NULL), 0);
    cr_assert_eq(corio_spawn(t, null_key_caller, arg, NULL), 0);
    corio_wait(t);
}

T_CO(callers_of_a_null_key_share_one_run)
{
    new_sched(NULL, NULL, 0, 4096);
    int shared = 0;
    cr_assert_eq(corio_sched_run(t_sched, null_key_root, &shared), 0);
    cr_assert_eq(shared, 2, "both callers got the one run's result");
}

T_CO(a_member_adds_members)
{
    new_sched(NULL, NULL, 0, 4096);
    cr_assert_eq(corio_sched_run(t_sched, adding_root, NULL), 0);
}

/* A task that is not under the group's task may not add to it. */
static void outsider(struct corio_task *t, void *arg)
{
    (void)t;
    corio_group_go(arg, slow_member, NULL);
}

static void sleeper_task(struct corio_task *t, void *arg)
{
    (void)arg;
    corio_sleep(t, 1000000);
}

static void outsider_root(struct corio_task *t, void *arg)
{
    static struct corio_group g;
    struct corio_task *owner;
    cr_assert_eq(corio_spawn(t, sleeper_task, NULL, &owner), 0);
    corio_group_init(&g, owner); /* a sibling's group */
    corio_spawn(t, outsider, &g, NULL);
}

T_CO(group_go_from_outside_the_group_aborts, .signal = SIGABRT)
{
    new_sched(NULL, NULL, 0, 4096);
    corio_sched_run(t_sched, outsider_root, NULL);
}

T_CO(nested_groups_first_error_cancels_the_rest)
{
    new_sched(NULL, NULL, 0, 4096);
    cr_assert_eq(corio_sched_run(t_sched, group_root, NULL), 0);
}

/* ---- Deadlock is reported, not a hang. ---- */

static void stuck(struct corio_task *t, void *arg)
{
    corio_wg_wait(t, arg);
}

static void stuck_root(struct corio_task *t, void *arg)
{
    static struct corio_wg wg = CORIO_WG_INIT;
    corio_wg_add(&wg, 1);
    corio_spawn(t, stuck, &wg, NULL);
}

static void deadlock_mutex(struct corio_task *t, void *arg)
{
    struct corio_mutex *m = arg;
    corio_mutex_lock(t, &m[0]);
    corio_yield(t);
    corio_mutex_lock(t, &m[1]);
}

static void deadlock_mutex2(struct corio_task *t, void *arg)
{
    struct corio_mutex *m = arg;
    corio_mutex_lock(t, &m[1]);
    corio_yield(t);
    corio_mutex_lock(t, &m[0]);
}

static void abba_root(struct corio_task *t, void *arg)
{
    corio_spawn(t, deadlock_mutex, arg, NULL);
    corio_spawn(t, deadlock_mutex2, arg, NULL);
}

T_CO(deadlock_is_edeadlk_and_the_scheduler_is_reusable)
{
    new_sched(NULL, NULL, 0, 4096);
    struct corio_mutex m[2] = {CORIO_MUTEX_INIT, CORIO_MUTEX_INIT};
    cr_assert_eq(corio_sched_run(t_sched, abba_root, m), -EDEADLK);
    cr_assert_eq(corio_sched_run(t_sched, stuck_root, NULL), -EDEADLK, "a wait group never done");
    int rounds = 0;
    cr_assert_eq(corio_sched_run(t_sched, wg_root, &rounds), 0, "usable afterwards");
    cr_assert_eq(rounds, 20);
}

/* ---- Determinism: two runs, the same interleaving (sync backend, fixed dispatcher). ---- */

static char trace[4096];
static int ntrace;
static void tracer(struct corio_task *t, void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int k = 0; k < 3; k++) {
        trace[ntrace++] = (char)('a' + id);
        if (id % 2)
            corio_io(t, NULL);
        else
            corio_yield(t);
    }
}

static void trace_root(struct corio_task *t, void *arg)
{
    for (intptr_t i = 0; i < 8; i++)
        corio_spawn(t, tracer, (void *)i, NULL);
}

T_CO(deterministic_interleaving)
{
    new_sched(answer_all, NULL, 0, 4096);
    char first[4096];
    ntrace = 0;
    cr_assert_eq(corio_sched_run(t_sched, trace_root, NULL), 0);
    memcpy(first, trace, (size_t)ntrace);
    int n = ntrace;
    ntrace = 0;
    cr_assert_eq(corio_sched_run(t_sched, trace_root, NULL), 0);
    cr_assert_eq(ntrace, n);
    cr_assert_eq(memcmp(first, trace, (size_t)n), 0, "%.*s vs %.*s", n, first, n, trace);
}

/* ---- Structured concurrency. ---- */

static void grandchild(struct corio_task *t, void *arg)
{
    corio_sleep(t, 5000000);
    (*(int *)arg)++;
}

static void child_returns_early(struct corio_task *t, void *arg)
{
    corio_spawn(t, grandchild, arg, NULL);
    /* Returns at once; it is done only when the grandchild is. */
}

static void structured_root(struct corio_task *t, void *arg)
{
    struct corio_task *c;
    cr_assert_eq(corio_spawn(t, child_returns_early, arg, &c), 0);
    cr_assert_eq(corio_task_done(c), 0);
    corio_wait(t);
    cr_assert_eq(*(int *)arg, 1, "wait covers grandchildren");
    cr_assert_eq(corio_task_done(c), 1);
    cr_assert_eq(corio_current(), t);
}

T_CO(a_task_is_done_only_when_its_children_are)
{
    new_sched(NULL, NULL, 0, 4096);
    int n = 0;
    cr_assert_null(corio_current());
    cr_assert_eq(corio_sched_run(t_sched, structured_root, &n), 0);
    cr_assert_eq(n, 1);
}

/* ---- File I/O in tasks: one kernel submission for a phase's reads. ---- */

struct reader {
    struct afs_file *f;
    int              i;
    ssize_t          res;
    char             buf[4096];
};

/* A scheduler whose reads all join the batch (threshold 0), and file "f" of `size` bytes
 * opened on its context. */
static struct afs_file *batch_file(size_t size)
{
    new_sched(NULL, NULL, 0, 0);
    t_make_file(t_path("f"), size);
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    return f;
}

static void read_one(struct corio_task *t, void *arg)
{
    struct reader *r = arg;
    cr_assert_eq(afs_pread(r->f, r->buf, 4096, (uint64_t)r->i * 4096), 4096);
    cr_assert(t_check(r->buf, 4096, (uint64_t)r->i * 4096));
}

static void readers_root(struct corio_task *t, void *arg)
{
    struct reader *rs = arg;
    struct afs_stats a, b;
    afs_ctx_stats(corio_sched_ctx(corio_task_sched(t)), &a);
    for (int i = 0; i < 64; i++)
        corio_spawn(t, read_one, &rs[i], NULL);
    corio_wait(t);
    afs_ctx_stats(corio_sched_ctx(corio_task_sched(t)), &b);
    const char *be = afs_ctx_backend(corio_sched_ctx(corio_task_sched(t)));
    if (!strcmp(be, "io_uring"))
        cr_assert_eq(b.kernel_submits - a.kernel_submits, 1, "64 reads, %llu submissions",
                     (unsigned long long)(b.kernel_submits - a.kernel_submits));
    cr_assert_eq(b.ops - a.ops, 64);
}

T_CO(sixty_four_readers_one_submission)
{
    static struct reader rs[64];
    struct afs_file *f = batch_file(64 * 4096);
    for (int i = 0; i < 64; i++) {
        rs[i].f = f;
        rs[i].i = i;
    }
    cr_assert_eq(corio_sched_run(t_sched, readers_root, rs), 0);
    struct corio_stats st;
    corio_sched_stats(t_sched, &st);
    cr_assert_eq(st.ios, 64);
    cr_assert_eq(afs_close(f), 0);
}

/* Registration calls made while a phase's reads wait in the ring, staged and not yet
 * submitted (a phase of 256 ops or more stages them as the tasks queue them): a staged read
 * named a buffer index or a file slot that the unregister took away (-EFAULT, -EBADF) or that
 * registering again gave to another file (that file's bytes). Each read gets its own file's
 * bytes. */
enum { REREG_N = 300 };
static struct afs_file *rereg_a, *rereg_b;
static char *rereg_buf;
static ssize_t rereg_res[REREG_N];

static void rereg_reader(struct corio_task *t, void *arg)
{
    (void)t;
    intptr_t i = (intptr_t)arg;
    rereg_res[i] = afs_pread(rereg_a, rereg_buf + i * 4096, 4096, (uint64_t)i * 4096);
}

static void rereg_root(struct corio_task *t, void *arg)
{
    (void)arg;
    struct afs_ctx *ctx = corio_sched_ctx(corio_task_sched(t));
    for (intptr_t i = 0; i < REREG_N; i++)
        corio_spawn(t, rereg_reader, (void *)i, NULL);
    /* The same CPU phase: the table goes and comes back, b opened last so it gets slot 0. */
    cr_assert_eq(afs_ctx_unregister_buffers(ctx), 0);
    cr_assert_eq(afs_ctx_unregister_files(ctx), 0);
    cr_assert_geq(afs_ctx_register_files(ctx, 8), 0);
    corio_wait(t);
}

T_CO(registration_changed_while_a_phase_s_reads_are_staged_keeps_each_read_s_file)
{
    new_sched(NULL, NULL, 0, 0);
    const size_t size = (size_t)REREG_N * 4096;
    t_make_file(t_path("a"), size);
    int fd = open(t_path("b"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0);
    char *other = malloc(size);
    t_fill(other, size, 1ull << 40);
    cr_assert_eq(pwrite(fd, other, size, 0), (ssize_t)size);
    free(other);
    close(fd);
    rereg_buf = afs_buf_alloc(t_ctx, size);
    cr_assert_not_null(rereg_buf);
    struct iovec iov = {rereg_buf, size};
    cr_assert_geq(afs_ctx_register_buffers(t_ctx, &iov, 1), 0);
    cr_assert_geq(afs_ctx_register_files(t_ctx, 8), 0);
    int err = afs_open(t_ctx, t_path("a"), AFS_RDONLY | AFS_DIRECT, 0, AFS_MODE_SYNC, &rereg_a);
    if (err == -EINVAL)
        cr_skip_test("no O_DIRECT on this file system");
    cr_assert_eq(err, 0);
    cr_assert_eq(afs_open(t_ctx, t_path("b"), AFS_RDONLY | AFS_DIRECT, 0, AFS_MODE_SYNC,
                          &rereg_b), 0);
    cr_assert_eq(corio_sched_run(t_sched, rereg_root, NULL), 0);
    for (int i = 0; i < REREG_N; i++) {
        cr_assert_eq(rereg_res[i], 4096, "read %d: %s", i,
                     rereg_res[i] < 0 ? afs_strerror((int)rereg_res[i]) : "short");
        cr_assert(t_check(rereg_buf + (size_t)i * 4096, 4096, (uint64_t)i * 4096),
                  "read %d of a has other bytes (b's?)", i);
    }
    cr_assert_eq(afs_close(rereg_a), 0);
    cr_assert_eq(afs_close(rereg_b), 0);
    afs_buf_free(t_ctx, rereg_buf, size);
}

/* A CPU phase runs every ready task: 200 readers spawned in one loop queue their first reads
 * in one phase, and when all 200 are ready together their second reads go in one submission
 * too. */
#define MANY_READERS 200

static void read_twice(struct corio_task *t, void *arg)
{
    struct reader *r = arg;
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(afs_pread(r->f, r->buf, 4096, (uint64_t)r->i * 4096), 4096);
        cr_assert(t_check(r->buf, 4096, (uint64_t)r->i * 4096));
    }
}

static void many_readers_root(struct corio_task *t, void *arg)
{
    struct reader *rs = arg;
    struct afs_ctx *ctx = corio_sched_ctx(corio_task_sched(t));
    struct afs_stats a, b;
    afs_ctx_stats(ctx, &a);
    for (int i = 0; i < MANY_READERS; i++)
        corio_spawn(t, read_twice, &rs[i], NULL);
    afs_ctx_stats(ctx, &b);
    cr_assert_eq(b.ops - a.ops, MANY_READERS, "every first read queued in the spawning phase");
    corio_wait(t);
    afs_ctx_stats(ctx, &b);
    if (!strcmp(afs_ctx_backend(ctx), "io_uring"))
        cr_assert_eq(b.kernel_submits - a.kernel_submits, 1 + 1,
                     "one submission for the first reads, one for the second: %llu",
                     (unsigned long long)(b.kernel_submits - a.kernel_submits));
    cr_assert_eq(b.ops - a.ops, 2 * MANY_READERS);
}

T_CO(cpu_phase_runs_every_ready_task)
{
    static struct reader rs[MANY_READERS];
    struct afs_file *f = batch_file(MANY_READERS * 4096);
    for (int i = 0; i < MANY_READERS; i++) {
        rs[i].f = f;
        rs[i].i = i;
    }
    cr_assert_eq(corio_sched_run(t_sched, many_readers_root, rs), 0);
    struct corio_stats st;
    corio_sched_stats(t_sched, &st);
    cr_assert_eq(st.ios, 2 * MANY_READERS);
    cr_assert_eq(afs_close(f), 0);
}

/* Thousands of tasks alive at once: past the first few hundred their structs are carved
 * side by side from regions of large pages, more than one region here; every task's
 * state (its read's op among it) is its own, in a first run and in a second one that
 * reuses the structs. */
#define HORDE 6000

struct small_reader {
    struct afs_file *f;
    int              i;
    char             buf[512];
};

static void read_small_twice(struct corio_task *t, void *arg)
{
    (void)t;
    struct small_reader *r = arg;
    for (int k = 0; k < 2; k++) {
        uint64_t off = (uint64_t)((r->i + k * 7) % HORDE) * 512;
        cr_assert_eq(afs_pread(r->f, r->buf, sizeof r->buf, off), (ssize_t)sizeof r->buf);
        cr_assert(t_check(r->buf, sizeof r->buf, off));
    }
}

static void horde_root(struct corio_task *t, void *arg)
{
    struct small_reader *rs = arg;
    for (int i = 0; i < HORDE; i++)
        cr_assert_eq(corio_spawn(t, read_small_twice, &rs[i], NULL), 0);
    corio_wait(t);
}

T_CO(thousands_of_tasks_each_read_into_their_own_state)
{
    static struct small_reader rs[HORDE];
    struct afs_file *f = batch_file(HORDE * 512);
    for (int i = 0; i < HORDE; i++) {
        rs[i].f = f;
        rs[i].i = i;
    }
    for (int run = 0; run < 2; run++)
        cr_assert_eq(corio_sched_run(t_sched, horde_root, rs), 0);
    struct corio_stats st;
    corio_sched_stats(t_sched, &st);
    cr_assert_eq(st.ios, 2 * 2 * HORDE);
    cr_assert_eq(afs_close(f), 0);
}

static void small_inline(struct corio_task *t, void *arg)
{
    struct reader *r = arg;
    struct afs_stats a, b;
    afs_ctx_stats(afs_file_ctx(r->f), &a);
    cr_assert_eq(afs_pread(r->f, r->buf, 4096, 0), 4096);
    afs_ctx_stats(afs_file_ctx(r->f), &b);
    cr_assert_eq(b.inline_ops - a.inline_ops, 1, "at the threshold: inline, no suspension");
    struct corio_stats st;
    corio_sched_stats(corio_task_sched(t), &st);
    cr_assert_eq(st.ios, 0);
}

T_CO(small_reads_run_inline_in_a_task)
{
    new_sched(NULL, NULL, 0, 4096);
    t_make_file(t_path("f"), 4096);
    static struct reader r;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &r.f), 0);
    cr_assert_eq(corio_sched_run(t_sched, small_inline, &r), 0);
    cr_assert_eq(afs_close(r.f), 0);
}

/* ---- Sleep, cancellation and deadlines. ---- */

static void sleeper(struct corio_task *t, void *arg)
{
    *(int *)arg = corio_sleep(t, 30LL * 1000 * 1000 * 1000);
}

static void cancel_root(struct corio_task *t, void *arg)
{
    int *res = arg;
    struct corio_task *c;
    corio_spawn(t, sleeper, &res[0], &c);
    corio_sleep(t, 10 * 1000 * 1000);
    int64_t t0 = corio_now();
    corio_cancel(c);
    corio_wait(t);
    res[1] = (int)((corio_now() - t0) / 1000000);
    cr_assert(corio_cancelled(c));
    /* Deadline on a sleep. */
    corio_set_deadline(t, corio_now() + 20 * 1000 * 1000);
    cr_assert_eq(corio_sleep(t, 30LL * 1000 * 1000 * 1000), -ETIMEDOUT);
    cr_assert_eq(corio_sleep(t, 1000), -ETIMEDOUT, "at once after the deadline");
    corio_set_deadline(t, 0);
    cr_assert_eq(corio_sleep(t, 1000), 0, "cleared");
    /* Only 0 and INT64_MAX clear: a negative deadline is long past. */
    corio_set_deadline(t, -1);
    cr_assert_eq(corio_sleep(t, 1000), -ETIMEDOUT, "a deadline of -1");
    corio_set_deadline(t, INT64_MIN);
    cr_assert_eq(corio_sleep(t, 1000), -ETIMEDOUT, "a deadline of INT64_MIN");
    corio_set_deadline(t, INT64_MAX);
    cr_assert_eq(corio_sleep(t, 1000), 0, "cleared");
    /* The same on a task already asleep: its timer is due at once, the earliest time there
     * is included (the scheduler's wait must not overflow computing it). */
    int64_t passed[] = {-1, INT64_MIN};
    for (int i = 0; i < 2; i++) {
        int r = 1;
        corio_spawn(t, sleeper, &r, &c);
        corio_set_deadline(c, passed[i]);
        corio_wait(t);
        cr_assert_eq(r, -ETIMEDOUT, "a sleeping task's deadline of %lld", (long long)passed[i]);
    }
}

T_CO(cancel_and_deadline_end_sleeps_promptly)
{
    new_sched(NULL, NULL, 0, 4096);
    int res[2] = {1, -1};
    int64_t t0 = corio_now();
    cr_assert_eq(corio_sched_run(t_sched, cancel_root, res), 0);
    cr_assert_eq(res[0], -ECANCELED);
    cr_assert_lt(res[1], 5000, "cancel took %d ms: the 30 s sleep was not interrupted", res[1]);
    cr_assert_lt(corio_now() - t0, 5LL * 1000 * 1000 * 1000);
}

/* corio_cancel of a done task sets nothing; corio_cancelled() still follows its ancestors. */
static void quick(struct corio_task *t, void *arg)
{
    (void)t;
    (void)arg;
}

static void done_cancel_root(struct corio_task *t, void *arg)
{
    (void)arg;
    struct corio_task *c;
    cr_assert_eq(corio_spawn(t, quick, NULL, &c), 0);
    corio_wait(t);
    cr_assert(corio_task_done(c));
    corio_cancel(c);
    cr_assert_eq(corio_cancelled(c), 0, "a done task cancelled");
    corio_cancel(t);
    cr_assert_neq(corio_cancelled(c), 0, "its parent is cancelled");
}

T_CO(cancelling_a_done_task_sets_nothing_but_its_parent_s_cancel_shows)
{
    new_sched(NULL, NULL, 0, 4096);
    cr_assert_eq(corio_sched_run(t_sched, done_cancel_root, NULL), 0);
}

/* A sleep whose deadline passed before its own end returns -ETIMEDOUT even when the
 * scheduler fires the timer only after both passed (another task held the thread). */
static void late_sleeper(struct corio_task *t, void *arg)
{
    corio_set_deadline(t, corio_now() + 1000 * 1000);
    *(int *)arg = corio_sleep(t, 5 * 1000 * 1000);
}

static void thread_holder(struct corio_task *t, void *arg)
{
    (void)t;
    (void)arg;
    int64_t end = corio_now() + 30 * 1000 * 1000;
    while (corio_now() < end)
        ;
}

static void late_timer_root(struct corio_task *t, void *arg)
{
    corio_spawn(t, late_sleeper, arg, NULL);
    corio_spawn(t, thread_holder, NULL, NULL);
}

T_CO(a_sleep_whose_deadline_came_first_times_out_when_its_timer_fires_late)
{
    new_sched(NULL, NULL, 0, 4096);
    int res = 1;
    cr_assert_eq(corio_sched_run(t_sched, late_timer_root, &res), 0);
    cr_assert_eq(res, -ETIMEDOUT, "the sleep returned %d", res);
}

/* A cancellation or a deadline reaches a chain of nested tasks thousands of levels deep
 * without growing the caller's stack per level (a 16 KiB stack held some 600 levels). */
enum { DEEP_LEVELS = 3000 };
static int deep_ended;

static void deep_level(struct corio_task *t, void *arg)
{
    intptr_t d = (intptr_t)arg;
    if (d < DEEP_LEVELS)
        cr_assert_eq(corio_spawn(t, deep_level, (void *)(d + 1), NULL), 0);
    if (corio_sleep(t, 60LL * 1000 * 1000 * 1000) != 0)
        deep_ended++;
}

static void deep_root(struct corio_task *t, void *arg)
{
    struct corio_task *top;
    cr_assert_eq(corio_spawn(t, deep_level, (void *)(intptr_t)1, &top), 0);
    if (*(int *)arg)
        corio_set_deadline(top, -1);
    else
        corio_cancel(top);
    corio_wait(t);
}

/* t_sched on a new context, with the smallest stacks (16 KiB). */
static void small_stack_sched(void)
{
    struct afs_config acfg;
    afs_config_default(&acfg);
    t_ctx = t_ctx_cfg(&acfg);
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    cfg.stack_size = 16 * 1024;
    cr_assert_eq(corio_sched_new(&t_sched, &cfg), 0);
}

T_CO(cancel_and_deadlines_reach_a_chain_of_tasks_thousands_deep)
{
    for (int deadline = 0; deadline < 2; deadline++) {
        small_stack_sched();
        deep_ended = 0;
        cr_assert_eq(corio_sched_run(t_sched, deep_root, &deadline), 0);
        cr_assert_eq(deep_ended, DEEP_LEVELS, "%s ended %d of %d sleeps",
                     deadline ? "the deadline" : "the cancel", deep_ended, DEEP_LEVELS);
        corio_sched_free(t_sched);
        t_sched = NULL;
        afs_ctx_free(t_ctx);
        t_ctx = NULL;
    }
}

/* A chain of tasks thousands deep, each keeping its child's handle: the chain is freed with
 * its top, whose stack did not hold a frame per level (16 KiB stacks held some 300). */
static void kept_level(struct corio_task *t, void *arg)
{
    intptr_t d = (intptr_t)arg;
    struct corio_task *child;
    if (d < DEEP_LEVELS)
        cr_assert_eq(corio_spawn(t, kept_level, (void *)(d + 1), &child), 0);
    corio_wait(t);
    deep_ended++;
}

static void kept_root(struct corio_task *t, void *arg)
{
    (void)arg;
    cr_assert_eq(corio_spawn(t, kept_level, (void *)(intptr_t)1, NULL), 0);
}

T_CO(a_chain_of_kept_children_thousands_deep_is_freed_with_its_top)
{
    small_stack_sched();
    for (int round = 0; round < 2; round++) { /* the second reuses the freed tasks */
        deep_ended = 0;
        cr_assert_eq(corio_sched_run(t_sched, kept_root, NULL), 0);
        cr_assert_eq(deep_ended, DEEP_LEVELS);
    }
}

/* A cancellation that comes while the task is ready (woken, not yet run again) inside a call
 * that waits more than once: the call's next wait ends at once with -ECANCELED. A put that
 * waited on a full queue waits once: the get that woke it took its value in, and the put
 * returns 0 whatever came after. */
struct recancel {
    struct corio_future f1, f2;
    struct corio_queue  q;
    int                 wait_rc, put_rc;
};

static void recancel_waiter(struct corio_task *t, void *arg)
{
    struct recancel *r = arg;
    struct corio_future *fs[2] = {&r->f1, &r->f2};
    r->wait_rc = corio_future_wait(t, CORIO_WAIT_ALL, fs, 2, NULL);
}

static void recancel_putter(struct corio_task *t, void *arg)
{
    struct recancel *r = arg;
    r->put_rc = corio_queue_put(t, &r->q, (void *)2); /* the queue is full: it waits */
}

static void recancel_root(struct corio_task *t, void *arg)
{
    struct recancel *r = arg;
    corio_future_init(&r->f1);
    corio_future_init(&r->f2);
    corio_queue_init(&r->q, 1);
    cr_assert_eq(corio_queue_try_put(&r->q, (void *)1), 0);
    struct corio_task *w, *p;
    corio_spawn(t, recancel_waiter, r, &w);
    corio_spawn(t, recancel_putter, r, &p);
    /* Both woken, then cancelled before they run: one future of two done, a place in the
     * queue freed and taken by the waiting put's value. */
    corio_future_complete(&r->f1, 0, NULL);
    void *v;
    cr_assert_eq(corio_queue_try_get(&r->q, &v), 0);
    cr_assert_eq(corio_queue_try_put(&r->q, (void *)3), -EAGAIN);
    corio_cancel(w);
    corio_cancel(p);
    int64_t t0 = corio_now();
    corio_wait(t); /* -EDEADLK for the run if they wait on: nothing else would end them */
    cr_assert_lt(corio_now() - t0, 1000 * 1000 * 1000LL);
    cr_assert_eq(corio_queue_try_get(&r->q, &v), 0);
    cr_assert_eq((intptr_t)v, 2, "the put woken before its cancel added its value");
    corio_queue_destroy(&r->q);
}

T_CO(a_cancel_while_ready_ends_the_next_wait_of_the_same_call)
{
    new_sched(NULL, NULL, 0, 4096);
    struct recancel r = {.wait_rc = 1, .put_rc = 1};
    cr_assert_eq(corio_sched_run(t_sched, recancel_root, &r), 0);
    cr_assert_eq(r.wait_rc, -ECANCELED);
    cr_assert_eq(r.put_rc, 0);
}

/* A deadline that passed while its task computed, then lifted before the scheduler fired
 * the timers: the child's sleep it reached ends with -ETIMEDOUT all the same, as when the
 * scheduler fired first (before, the lift took the timer back and the sleep went on). */
static void lifted_root(struct corio_task *t, void *arg)
{
    int *res = arg;
    int64_t t0 = corio_now();
    corio_set_deadline(t, t0 + 5 * 1000 * 1000);
    corio_spawn(t, sleeper, &res[0], NULL);
    while (corio_now() < t0 + 20 * 1000 * 1000)
        ; /* computes past the deadline without suspending */
    corio_set_deadline(t, INT64_MAX);
    corio_wait(t);
    res[1] = (int)((corio_now() - t0) / 1000000);
}

T_CO(a_deadline_lifted_after_it_passed_still_ends_the_waits_it_reached)
{
    new_sched(NULL, NULL, 0, 0);
    int res[2] = {1, -1};
    cr_assert_eq(corio_sched_run(t_sched, lifted_root, res), 0);
    cr_assert_eq(res[0], -ETIMEDOUT, "the child's sleep: %d", res[0]);
    cr_assert_lt(res[1], 5000, "%d ms", res[1]);
}

static void fifo_reader(struct corio_task *t, void *arg)
{
    struct reader *r = arg;
    r->res = afs_read(r->f, r->buf, 64); /* a FIFO: no offsets */
}

static void cancel_read_root(struct corio_task *t, void *arg)
{
    struct reader *r = arg;
    struct corio_task *c;
    corio_spawn(t, fifo_reader, &r[0], &c);
    corio_sleep(t, 20 * 1000 * 1000);
    corio_cancel(c);
    corio_wait(t);
    cr_assert_eq(r[0].res, -ECANCELED);
    /* A deadline on a blocked read: -ETIMEDOUT. */
    struct corio_task *d;
    corio_spawn(t, fifo_reader, &r[1], &d);
    corio_set_deadline(d, corio_now() + 20 * 1000 * 1000);
    corio_wait(t);
    cr_assert_eq(r[1].res, -ETIMEDOUT);
}

T_CO(cancel_and_deadline_end_a_blocked_read)
{
    new_sched(NULL, NULL, 0, 0);
    if (strcmp(afs_ctx_backend(t_ctx), "io_uring") != 0)
        cr_skip_test("needs a backend that reads FIFOs (io_uring), have %s",
                     afs_ctx_backend(t_ctx));
    cr_assert_eq(mkfifo(t_path("fifo"), 0600), 0);
    static struct reader r[2];
    cr_assert_eq(afs_open(t_ctx, t_path("fifo"), AFS_RDWR, 0, AFS_MODE_SYNC, &r[0].f), 0);
    r[1].f = r[0].f;
    cr_assert_eq(corio_sched_run(t_sched, cancel_read_root, r), 0);
    cr_assert_eq(afs_close(r[0].f), 0);
}

/* ---- A stack overflow dies on the guard page with a message. ---- */

static int deep(int n)
{
    volatile char pad[1024];
    pad[0] = (char)n;
    return n > 0 ? deep(n + 1) + pad[0] : 0;
}

static void overflow(struct corio_task *t, void *arg)
{
    deep(1);
}

Test(corio, stack_overflow_dies_on_the_guard_page, .signal = SIGABRT, .timeout = 20)
{
    struct corio_sched *s;
    cr_assert_eq(corio_sched_new(&s, NULL), 0);
    corio_sched_run(s, overflow, NULL);
}

/* ---- Polyglot position API: afs_last_op_wait suspends the task, not the thread. ---- */

struct pos_arg {
    struct afs_file *f;
    int              other_ran;
};

static void other(struct corio_task *t, void *arg)
{
    ((struct pos_arg *)arg)->other_ran++;
}

static void pos_task(struct corio_task *t, void *arg)
{
    struct pos_arg *a = arg;
    static char buf[65536];
    cr_assert_eq(afs_read(a->f, buf, sizeof buf), 0, "async mode: queued");
    corio_spawn(t, other, a, NULL);
    ssize_t res;
    cr_assert_eq(afs_last_op_wait(a->f, &res), 1);
    cr_assert_eq(res, (ssize_t)sizeof buf);
    cr_assert(t_check(buf, sizeof buf, 0));
    cr_assert_eq(afs_tell(a->f), (int64_t)sizeof buf);
    cr_assert_eq(a->other_ran, 1);
    struct corio_stats st;
    corio_sched_stats(corio_task_sched(t), &st);
    cr_assert_geq(st.ios, 1, "the wait suspended the task");
}

T_CO(last_op_wait_suspends_the_task)
{
    new_sched(NULL, NULL, 0, 4096);
    t_make_file(t_path("f"), 65536);
    struct pos_arg a = {0};
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_ASYNC, &a.f), 0);
    cr_assert_eq(corio_sched_run(t_sched, pos_task, &a), 0);
    cr_assert_eq(afs_close(a.f), 0);
}

/* ---- Tracing: corio_log prefixes the task's path. ---- */

static void traced_child(struct corio_task *t, void *arg)
{
    corio_log(t, "child %d", 7);
}

static void traced_none(struct corio_task *t, void *arg)
{
    (void)t;
    (void)arg;
}

/* Logs `levels` (arg) tasks down. */
static void traced_deep(struct corio_task *t, void *arg)
{
    intptr_t levels = (intptr_t)arg;
    if (levels == 0)
        corio_log(t, "deep");
    else
        corio_spawn(t, traced_deep, (void *)(levels - 1), NULL);
}

static void traced_third(struct corio_task *t, void *arg)
{
    corio_spawn(t, traced_none, NULL, NULL);
    corio_spawn(t, traced_deep, (void *)(intptr_t)0, NULL); /* [0/2/1] */
}

static void traced_root(struct corio_task *t, void *arg)
{
    corio_log(t, "root");
    corio_spawn(t, traced_child, NULL, NULL);
    corio_spawn(t, traced_child, NULL, NULL);
    corio_spawn(t, traced_third, NULL, NULL);
    corio_spawn(t, traced_deep, (void *)(intptr_t)69, NULL); /* 70 levels under the root */
}

T_CO(trace_prefixes_the_task_path)
{
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.flags = CORIO_TRACE;
    cr_assert_eq(corio_sched_new(&t_sched, &cfg), 0);
    char path[2048];
    snprintf(path, sizeof path, "%s/trace.txt", t_dir);
    cr_assert_not_null(freopen(path, "w", stderr));
    cr_assert_eq(corio_sched_run(t_sched, traced_root, NULL), 0);
    fflush(stderr);
    FILE *f = fopen(path, "r");
    char text[1024] = {0};
    cr_assert_gt(fread(text, 1, sizeof text - 1, f), 0);
    fclose(f);
    /* Children are numbered from 0; deeper than 64, "..." and the 64 ids nearest the task. */
    char want[1024];
    int n = snprintf(want, sizeof want,
                     "[0] root\n[0/0] child 7\n[0/1] child 7\n[0/2/1] deep\n[...");
    for (int i = 0; i < 64; i++)
        n += snprintf(want + n, sizeof want - (size_t)n, "/0");
    snprintf(want + n, sizeof want - (size_t)n, "] deep\n");
    cr_assert_str_eq(text, want);
}
