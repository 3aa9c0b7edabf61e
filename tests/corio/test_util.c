/* Blocking functions on threads (corio_go / corio_run_blocking), queues, and the iterator
 * helpers on generators. Run once per backend through ASYNCFS_BACKEND (corio_net binary). */
#include "../common.h"

#include <corio.h>
#include <poll.h>
#include <stdatomic.h>

#define MS (1000LL * 1000)

static struct corio_sched *u_sched;

static void u_teardown(void)
{
    if (u_sched)
        corio_sched_free(u_sched);
    u_sched = NULL;
    t_teardown();
}

#define T_U(suite, name) Test(suite, name, .init = t_setup, .fini = u_teardown, .timeout = 60)

static int urun(corio_fn *fn, void *arg)
{
    t_ctx = t_ctx_cfg(NULL);
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    int err = corio_sched_new(&u_sched, &cfg);
    cr_assert_eq(err, 0, "corio_sched_new: %s", afs_strerror(err));
    return corio_sched_run(u_sched, fn, arg);
}

/* =========================================================================================
 * corio_run_blocking
 * ======================================================================================= */

struct blk {
    atomic_int  flag;
    atomic_int  stopped, returned;
    pthread_t   caller, runner;
    int         res;
};

/* Waits (on its thread) for a flag that only another task of the scheduler sets: it ends
 * only if the scheduler kept running tasks while fn blocked. */
static int wait_flag(void *arg)
{
    struct blk *b = arg;
    b->runner = pthread_self();
    while (!atomic_load(&b->flag))
        usleep(1000);
    return 42;
}

static void set_flag(struct corio_task *t, void *arg)
{
    corio_sleep(t, 5 * MS);
    atomic_store(&((struct blk *)arg)->flag, 1);
}

static void blocking_root(struct corio_task *t, void *arg)
{
    struct blk *b = arg;
    b->caller = pthread_self();
    cr_assert_eq(corio_spawn(t, set_flag, b, NULL), 0);
    b->res = corio_run_blocking(t, wait_flag, b);
}

T_U(blocking, runs_on_a_thread_while_tasks_go_on)
{
    struct blk b = {0};
    cr_assert_eq(urun(blocking_root, &b), 0);
    cr_assert_eq(b.res, 42);
    cr_assert(!pthread_equal(b.caller, b.runner), "fn ran on the scheduler's thread");
}

static int until_stopped(void *arg)
{
    struct blk *b = arg;
    atomic_store(&b->flag, 1); /* started */
    while (!corio_blocking_stop_requested())
        usleep(1000);
    atomic_store(&b->stopped, 1);
    usleep(20000); /* the waiter must still wait for this */
    atomic_store(&b->returned, 1);
    return 7;
}

static void blocked_child(struct corio_task *t, void *arg)
{
    struct blk *b = arg;
    b->res = corio_run_blocking(t, until_stopped, b);
    /* fn has returned: arg is never used after the wait. */
    b->caller = pthread_self();
    cr_assert_eq(atomic_load(&b->returned), 1);
}

/* Interrupts the child once fn runs on its thread: a cancel, or a deadline (deadline != 0). */
static void interrupt_root(struct corio_task *t, void *arg, int deadline)
{
    struct blk *b = arg;
    struct corio_task *c;
    cr_assert_eq(corio_spawn(t, blocked_child, b, &c), 0);
    while (!atomic_load(&b->flag))
        corio_sleep(t, 1 * MS);
    if (deadline)
        corio_set_deadline(c, corio_now() + 1 * MS);
    else
        corio_cancel(c);
}

static void cancel_root(struct corio_task *t, void *arg)
{
    interrupt_root(t, arg, 0);
}

T_U(blocking, cancel_asks_fn_to_stop_and_waits_for_it)
{
    struct blk b = {0};
    cr_assert_eq(urun(cancel_root, &b), 0);
    cr_assert_eq(b.res, -ECANCELED);
    cr_assert_eq(atomic_load(&b.stopped), 1);
}

static void deadline_root(struct corio_task *t, void *arg)
{
    interrupt_root(t, arg, 1);
}

T_U(blocking, deadline_gives_etimedout)
{
    struct blk b = {0};
    cr_assert_eq(urun(deadline_root, &b), 0);
    cr_assert_eq(b.res, -ETIMEDOUT);
    cr_assert_eq(atomic_load(&b.stopped), 1);
}

/* Every pool thread busy: a job behind them waits its turn, and one whose waiter is
 * cancelled before a thread took it never runs. */
enum { POOL = 32 };

struct queued_case {
    atomic_int release, running, late_ran;
    int        late_res;
};

static int hold(void *arg)
{
    struct queued_case *q = arg;
    atomic_fetch_add(&q->running, 1);
    while (!atomic_load(&q->release))
        usleep(1000);
    return 0;
}

static int late(void *arg)
{
    atomic_store(&((struct queued_case *)arg)->late_ran, 1);
    return 0;
}

static void late_child(struct corio_task *t, void *arg)
{
    struct queued_case *q = arg;
    q->late_res = corio_run_blocking(t, late, q);
}

static void queued_root(struct corio_task *t, void *arg)
{
    struct queued_case *q = arg;
    static struct corio_blocking b[POOL];
    for (int i = 0; i < POOL; i++)
        cr_assert_eq(corio_go(t, &b[i], hold, q), 0);
    while (atomic_load(&q->running) < POOL)
        corio_sleep(t, 1 * MS);
    struct corio_task *c;
    cr_assert_eq(corio_spawn(t, late_child, q, &c), 0);
    corio_cancel(c);
    corio_wait(t);
    atomic_store(&q->release, 1);
    for (int i = 0; i < POOL; i++)
        cr_assert_eq(corio_blocking_wait(t, &b[i]), 0);
}

T_U(blocking, a_job_cancelled_before_it_started_never_runs)
{
    struct queued_case q = {0};
    cr_assert_eq(urun(queued_root, &q), 0);
    cr_assert_eq(q.late_res, -ECANCELED);
    corio_sched_free(u_sched); /* joins the pool's threads */
    u_sched = NULL;
    cr_assert_eq(atomic_load(&q.late_ran), 0);
}

static int ident(void *arg)
{
    return (int)(intptr_t)arg;
}

static void many_root(struct corio_task *t, void *arg)
{
    (void)arg;
    enum { N = 100 };
    static struct corio_blocking b[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(corio_go(t, &b[i], ident, (void *)(intptr_t)i), 0);
    for (int i = N - 1; i >= 0; i--)
        cr_assert_eq(corio_blocking_wait(t, &b[i]), i);
}

T_U(blocking, more_jobs_than_threads)
{
    cr_assert_eq(urun(many_root, NULL), 0);
}

/* Two jobs started together while one pool thread is idle: each gets a thread of its own
 * (below the cap), so a job may wait for another one's work. Job A waits for a byte that
 * job B writes; sharing A's thread, B would run only after A gave up. */
static int pair_fds[2];

static int wait_byte(void *arg)
{
    (void)arg;
    struct pollfd p = {.fd = pair_fds[0], .events = POLLIN};
    if (poll(&p, 1, 5000) <= 0)
        return -ETIMEDOUT;
    char c;
    return (int)read(pair_fds[0], &c, 1);
}

static int write_byte(void *arg)
{
    (void)arg;
    return (int)write(pair_fds[1], "x", 1);
}

static int no_op(void *arg)
{
    (void)arg;
    return 0;
}

static void pair_root(struct corio_task *t, void *arg)
{
    int64_t *took = arg;
    cr_assert_eq(corio_run_blocking(t, no_op, NULL), 0); /* one thread, idle after */
    corio_sleep(t, 20 * MS);
    struct corio_blocking a, b;
    int64_t t0 = corio_now();
    cr_assert_eq(corio_go(t, &a, wait_byte, NULL), 0);
    cr_assert_eq(corio_go(t, &b, write_byte, NULL), 0);
    cr_assert_eq(corio_blocking_wait(t, &a), 1, "the job waiting for the byte");
    cr_assert_eq(corio_blocking_wait(t, &b), 1);
    *took = corio_now() - t0;
}

T_U(blocking, two_jobs_started_together_run_on_two_threads)
{
    cr_assert_eq(pipe(pair_fds), 0);
    int64_t took = 0;
    cr_assert_eq(urun(pair_root, &took), 0);
    close(pair_fds[0]);
    close(pair_fds[1]);
    cr_assert_lt(took, 4000 * MS, "took %lld ms", (long long)(took / MS));
}

/* =========================================================================================
 * Queues
 * ======================================================================================= */

struct qtest {
    struct corio_queue q;
    int                got[8];
    int                rc[8];
    int                n;
};

static void getter(struct corio_task *t, void *arg)
{
    struct qtest *qt = arg;
    int i = qt->n++;
    void *v = NULL;
    qt->rc[i] = corio_queue_get(t, &qt->q, &v);
    qt->got[i] = (int)(intptr_t)v;
}

static void skip_root(struct corio_task *t, void *arg)
{
    struct qtest *qt = arg;
    struct corio_task *a, *b;
    cr_assert_eq(corio_spawn(t, getter, qt, &a), 0); /* getter 0 waits */
    cr_assert_eq(corio_spawn(t, getter, qt, &b), 0); /* getter 1 waits */
    corio_cancel(a);
    corio_yield(t);
    cr_assert_eq(corio_queue_put(t, &qt->q, (void *)(intptr_t)5), 0);
    corio_wait(t);
    cr_assert_eq(corio_queue_len(&qt->q), 0);
}

T_U(queue, put_skips_cancelled_getters)
{
    struct qtest qt = {0};
    corio_queue_init(&qt.q, 0);
    cr_assert_eq(urun(skip_root, &qt), 0);
    cr_assert_eq(qt.rc[0], -ECANCELED);
    cr_assert_eq(qt.rc[1], 0);
    cr_assert_eq(qt.got[1], 5, "the value went to the cancelled getter");
    corio_queue_destroy(&qt.q);
}

/* Putters waiting on a full queue keep their order: a get takes the first one's value in at
 * once, so a put that comes before the woken putter runs finds the queue full, not its
 * place. The woken putter does not touch the queue again: it may be freed meanwhile. */
struct wait_put {
    struct corio_queue *q;
    int                 v, rc;
};

static void waiting_putter(struct corio_task *t, void *arg)
{
    struct wait_put *w = arg;
    w->rc = corio_queue_put(t, w->q, (void *)(intptr_t)w->v);
}

static void putter_order_root(struct corio_task *t, void *arg)
{
    (void)arg;
    struct corio_queue *q = malloc(sizeof *q);
    cr_assert_not_null(q);
    corio_queue_init(q, 1);
    cr_assert_eq(corio_queue_try_put(q, (void *)(intptr_t)100), 0);
    struct wait_put p1 = {q, 1, 99}, p2 = {q, 2, 99};
    cr_assert_eq(corio_spawn(t, waiting_putter, &p1, NULL), 0);
    cr_assert_eq(corio_spawn(t, waiting_putter, &p2, NULL), 0);
    corio_yield(t); /* both wait, p1 first */
    void *v;
    cr_assert_eq(corio_queue_try_get(q, &v), 0);
    cr_assert_eq((int)(intptr_t)v, 100);
    cr_assert_eq(corio_queue_try_put(q, (void *)(intptr_t)9), -EAGAIN, "a put took p1's place");
    cr_assert_eq(corio_queue_try_get(q, &v), 0);
    cr_assert_eq((int)(intptr_t)v, 1, "p1 waited first");
    cr_assert_eq(corio_queue_try_get(q, &v), 0);
    cr_assert_eq((int)(intptr_t)v, 2);
    cr_assert_eq(corio_queue_len(q), 0);
    /* Both putters were woken and have not run yet: the queue goes now. */
    corio_queue_destroy(q);
    free(q);
    corio_wait(t);
    cr_assert_eq(p1.rc, 0);
    cr_assert_eq(p2.rc, 0);
}

T_U(queue, waiting_putters_keep_their_order_and_leave_the_queue_when_woken)
{
    cr_assert_eq(urun(putter_order_root, NULL), 0);
}

static void producer(struct corio_task *t, void *arg)
{
    struct qtest *qt = arg;
    for (int i = 1; i <= 100; i++)
        cr_assert_eq(corio_queue_put(t, &qt->q, (void *)(intptr_t)i), 0);
    corio_queue_close(&qt->q);
}

static void fifo_root(struct corio_task *t, void *arg)
{
    struct qtest *qt = arg;
    cr_assert_eq(corio_spawn(t, producer, qt, NULL), 0);
    /* Bounded at 3: the producer is waiting with the queue full. */
    cr_assert_eq(corio_queue_len(&qt->q), 3);
    cr_assert_eq(corio_queue_try_put(&qt->q, NULL), -EAGAIN);
    void *v;
    for (int i = 1; i <= 100; i++) {
        cr_assert_eq(corio_queue_get(t, &qt->q, &v), 0);
        cr_assert_eq((int)(intptr_t)v, i, "out of order");
        cr_assert_leq(corio_queue_len(&qt->q), 3);
    }
    cr_assert_eq(corio_queue_get(t, &qt->q, &v), -EPIPE);
    cr_assert_eq(corio_queue_try_put(&qt->q, NULL), -EPIPE);
}

T_U(queue, bounded_fifo_and_close)
{
    struct qtest qt = {0};
    corio_queue_init(&qt.q, 3);
    cr_assert_eq(urun(fifo_root, &qt), 0);
    corio_queue_destroy(&qt.q);
}

static void unbounded_root(struct corio_task *t, void *arg)
{
    struct qtest *qt = arg;
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(corio_queue_put(t, &qt->q, (void *)(intptr_t)i), 0);
    void *v;
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(corio_queue_try_get(&qt->q, &v), 0);
        cr_assert_eq((int)(intptr_t)v, i);
    }
    cr_assert_eq(corio_queue_try_get(&qt->q, &v), -EAGAIN);
}

T_U(queue, unbounded_grows)
{
    struct qtest qt = {0};
    corio_queue_init(&qt.q, 0);
    cr_assert_eq(urun(unbounded_root, &qt), 0);
    corio_queue_destroy(&qt.q);
}

static void put_deadline_root(struct corio_task *t, void *arg)
{
    struct qtest *qt = arg;
    cr_assert_eq(corio_queue_put(t, &qt->q, NULL), 0);
    corio_set_deadline(t, corio_now() + 2 * MS);
    cr_assert_eq(corio_queue_put(t, &qt->q, NULL), -ETIMEDOUT);
    cr_assert_eq(corio_queue_len(&qt->q), 1);
    void *v;
    corio_set_deadline(t, 0);
    cr_assert_eq(corio_queue_get(t, &qt->q, &v), 0);
    corio_set_deadline(t, corio_now() + 2 * MS);
    cr_assert_eq(corio_queue_get(t, &qt->q, &v), -ETIMEDOUT);
}

T_U(queue, deadlines)
{
    struct qtest qt = {0};
    corio_queue_init(&qt.q, 1);
    cr_assert_eq(urun(put_deadline_root, &qt), 0);
    corio_queue_destroy(&qt.q);
}

/* =========================================================================================
 * Iterator helpers
 * ======================================================================================= */

struct range {
    int from, to;
    int closed_early;
};

static int range_fn(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct range *r = arg;
    for (int i = r->from; i < r->to; i++) {
        /* Each value lives on this stack and changes after the consumer's next call. */
        int v = i;
        if (corio_gen_yield(t, g, &v) < 0) {
            r->closed_early = 1;
            return -ECANCELED;
        }
        corio_gen_flush(t, g);
        v = -1;
    }
    return 0;
}

static void *twice(void *value, void *user)
{
    (void)user;
    return (void *)(intptr_t)(*(int *)value * 2);
}

static int keep_mult3(void *value, void *user)
{
    (void)user;
    return (intptr_t)value % 3 == 0;
}

struct iter_out {
    int vals[64];
    int n, res;
};

static void collect(struct corio_task *t, struct corio_gen *g, struct iter_out *o, int deref)
{
    void *v;
    while ((o->res = corio_gen_next(t, g, &v)) == 1) {
        cr_assert_lt(o->n, 64);
        o->vals[o->n++] = deref ? *(int *)v : (int)(intptr_t)v;
    }
}

/* A producer slower than the consumer's deadline: next times out, the producer goes on (the
 * consumer's deadline does not reach it), and the next call after the deadline is cleared
 * gets the values, in order. */
static int slow_fn(struct corio_task *t, struct corio_gen *g, void *arg)
{
    (void)arg;
    for (intptr_t i = 0; i < 3; i++) {
        int err = corio_sleep(t, 30 * MS);
        if (err == 0)
            err = corio_gen_yield(t, g, (void *)i);
        if (err)
            return err;
    }
    return 0;
}

static void gen_deadline_root(struct corio_task *t, void *arg)
{
    struct iter_out *o = arg;
    struct corio_gen g;
    void *v;
    cr_assert_eq(corio_gen_start(t, &g, slow_fn, NULL), 0);
    corio_set_deadline(t, corio_now() + 5 * MS);
    cr_assert_eq(corio_gen_next(t, &g, &v), -ETIMEDOUT);
    corio_sleep(t, 0); /* past the deadline: still -ETIMEDOUT, the producer sleeps on */
    corio_set_deadline(t, INT64_MAX);
    collect(t, &g, o, 0);
}

T_U(iter, consumer_deadline_leaves_the_generator_usable)
{
    struct iter_out o = {0};
    cr_assert_eq(urun(gen_deadline_root, &o), 0);
    cr_assert_eq(o.res, 0, "the iteration ended with %d", o.res);
    cr_assert_eq(o.n, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(o.vals[i], i);
}

/* A cancelled task gets -ECANCELED from small file ops too (those under sync_threshold run
 * inline, without suspending, in a task that may go on). */
static void small_cancel_root(struct corio_task *t, void *arg)
{
    (void)arg;
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("small"), AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_SYNC,
                          &f),
                 0);
    char buf[16] = "0123456789";
    cr_assert_eq(afs_pwrite(f, buf, 10, 0), 10);
    cr_assert_eq(afs_pread(f, buf, 10, 0), 10);
    corio_cancel(t);
    cr_assert_eq(afs_pread(f, buf, 10, 0), -ECANCELED);
    cr_assert_eq(afs_pwrite(f, "x", 1, 0), -ECANCELED);
    cr_assert_eq(afs_read(f, buf, 10), -ECANCELED);
    cr_assert_eq(afs_close(f), 0);
}

T_U(iter, cancelled_task_small_ops_are_cancelled)
{
    cr_assert_eq(urun(small_cancel_root, NULL), 0);
    int fd = open(t_path("small"), O_RDONLY);
    char buf[16] = {0};
    cr_assert_eq(read(fd, buf, sizeof buf), 10);
    close(fd);
    cr_assert_str_eq(buf, "0123456789", "the cancelled write went through: %s", buf);
}

static void map_filter_root(struct corio_task *t, void *arg)
{
    struct iter_out *o = arg;
    struct range r = {0, 20, 0};
    struct corio_gen src, mapped, filtered;
    cr_assert_eq(corio_gen_start(t, &src, range_fn, &r), 0);
    cr_assert_eq(corio_gen_map(t, &mapped, &src, twice, NULL), 0);
    cr_assert_eq(corio_gen_filter(t, &filtered, &mapped, keep_mult3, NULL), 0);
    collect(t, &filtered, o, 0);
}

T_U(iter, map_then_filter_goes_past_rejected_values)
{
    struct iter_out o = {0};
    cr_assert_eq(urun(map_filter_root, &o), 0);
    cr_assert_eq(o.res, 0);
    /* 2*i for i in 0..19 that are multiples of 3: 0 6 12 18 24 30 36. */
    int want[] = {0, 6, 12, 18, 24, 30, 36};
    cr_assert_eq(o.n, 7);
    for (int i = 0; i < 7; i++)
        cr_assert_eq(o.vals[i], want[i]);
}

static void chain_take_root(struct corio_task *t, void *arg)
{
    struct iter_out *o = arg;
    struct range r1 = {0, 3, 0}, r2 = {10, 13, 0}, r3 = {20, 100, 0};
    struct corio_gen a, b, c, chained, taken;
    cr_assert_eq(corio_gen_start(t, &a, range_fn, &r1), 0);
    cr_assert_eq(corio_gen_start(t, &b, range_fn, &r2), 0);
    cr_assert_eq(corio_gen_start(t, &c, range_fn, &r3), 0);
    struct corio_gen *ins[] = {&a, &b, &c};
    cr_assert_eq(corio_gen_chain(t, &chained, ins, 3), 0);
    cr_assert_eq(corio_gen_take(t, &taken, &chained, 8), 0);
    collect(t, &taken, o, 1);
    /* take closed the chain, which closed the third range early. */
    cr_assert_eq(r3.closed_early, 1);
}

T_U(iter, chain_and_take)
{
    struct iter_out o = {0};
    cr_assert_eq(urun(chain_take_root, &o), 0);
    cr_assert_eq(o.res, 0);
    int want[] = {0, 1, 2, 10, 11, 12, 20, 21};
    cr_assert_eq(o.n, 8);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(o.vals[i], want[i], "value %d: %d", i, o.vals[i]);
}

static void zip_enum_root(struct corio_task *t, void *arg)
{
    struct iter_out *o = arg;
    struct range r1 = {0, 5, 0}, r2 = {100, 1000, 0};
    struct corio_gen a, b, zipped, numbered;
    cr_assert_eq(corio_gen_start(t, &a, range_fn, &r1), 0);
    cr_assert_eq(corio_gen_start(t, &b, range_fn, &r2), 0);
    cr_assert_eq(corio_gen_zip(t, &zipped, &a, &b), 0);
    cr_assert_eq(corio_gen_enumerate(t, &numbered, &zipped, 1), 0);
    void *v;
    while ((o->res = corio_gen_next(t, &numbered, &v)) == 1) {
        struct corio_indexed *e = v;
        struct corio_pair *p = e->value;
        o->vals[o->n++] = (int)e->index * 10000 + *(int *)p->b * 10 + *(int *)p->a;
    }
    cr_assert_eq(r2.closed_early, 1);
}

T_U(iter, zip_stops_at_the_shorter_and_enumerate_counts)
{
    struct iter_out o = {0};
    cr_assert_eq(urun(zip_enum_root, &o), 0);
    cr_assert_eq(o.res, 0);
    cr_assert_eq(o.n, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(o.vals[i], (i + 1) * 10000 + (100 + i) * 10 + i, "%d", o.vals[i]);
}

static int failing_fn(struct corio_task *t, struct corio_gen *g, void *arg)
{
    (void)arg;
    int v = 1;
    if (corio_gen_yield(t, g, &v) < 0)
        return -ECANCELED;
    return -EIO;
}

static void error_root(struct corio_task *t, void *arg)
{
    struct iter_out *o = arg;
    struct corio_gen src, mapped;
    cr_assert_eq(corio_gen_start(t, &src, failing_fn, NULL), 0);
    cr_assert_eq(corio_gen_map(t, &mapped, &src, twice, NULL), 0);
    collect(t, &mapped, o, 0);
}

T_U(iter, an_input_error_ends_the_output_with_it)
{
    struct iter_out o = {0};
    cr_assert_eq(urun(error_root, &o), 0);
    cr_assert_eq(o.n, 1);
    cr_assert_eq(o.res, -EIO);
}

static void close_early_root(struct corio_task *t, void *arg)
{
    struct range *r = arg;
    struct corio_gen src, mapped;
    cr_assert_eq(corio_gen_start(t, &src, range_fn, r), 0);
    cr_assert_eq(corio_gen_map(t, &mapped, &src, twice, NULL), 0);
    void *v;
    cr_assert_eq(corio_gen_next(t, &mapped, &v), 1);
    corio_gen_close(t, &mapped);
}

T_U(iter, closing_the_output_closes_the_input)
{
    struct range r = {0, 1000, 0};
    cr_assert_eq(urun(close_early_root, &r), 0);
    cr_assert_eq(r.closed_early, 1);
}

/* =========================================================================================
 * corio_run: a scheduler made, run and freed in one call
 * ======================================================================================= */

static void run_child(struct corio_task *t, void *arg)
{
    corio_sleep(t, 1 * MS);
    ++*(int *)arg;
}

static void run_root(struct corio_task *t, void *arg)
{
    for (int i = 0; i < 3; i++)
        cr_assert_eq(corio_spawn(t, run_child, arg, NULL), 0);
}

static void run_stuck(struct corio_task *t, void *arg)
{
    corio_future_await(t, arg, NULL);
}

T_U(util, corio_run_runs_the_root_and_its_children_to_the_end)
{
    int n = 0;
    cr_assert_eq(corio_run(run_root, &n), 0);
    cr_assert_eq(n, 3, "every child ran before corio_run returned");
}

T_U(util, corio_run_reports_a_deadlock)
{
    static struct corio_future f = CORIO_FUTURE_INIT;
    cr_assert_eq(corio_run(run_stuck, &f), -EDEADLK);
}
