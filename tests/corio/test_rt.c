/* Runtimes: N schedulers on N threads. Cross-scheduler spawns and futures, structured
 * concurrency, cancellation and deadlines across schedulers, channels (closed with waiters),
 * a future completed twice, a scheduler held by user code, stealing. 16 schedulers on
 * whatever cores the machine has. Run once per backend through ASYNCFS_BACKEND (linked into
 * the corio_sched binary), and under TSan (mk/tsan.mk). */
#include "../common.h"

#include <corio.h>
#include <stdatomic.h>

#define MS (1000LL * 1000)

#define T_RT(name, ...) Test(rt, name, .init = t_setup, .fini = t_teardown, .timeout = 120, \
                             ##__VA_ARGS__)

static struct corio_rt *rt_make(unsigned n)
{
    struct corio_rt_config cfg;
    corio_rt_config_default(&cfg);
    cfg.schedulers = n;
    cfg.sched.stack_size = 64 * 1024;
    struct corio_rt *rt;
    int err = corio_rt_new(&rt, &cfg);
    cr_assert_eq(err, 0, "corio_rt_new: %s", afs_strerror(err));
    cr_assert_eq(corio_rt_schedulers(rt), n);
    return rt;
}

static struct corio_rt *rt_running; /* the runtime a test's root runs on */

static int where(struct corio_task *t)
{
    return corio_sched_index(corio_task_sched(t));
}

/* ------------------------------------------------------------------------------------------
 * Spawns and futures
 * ---------------------------------------------------------------------------------------- */

struct leaf_arg {
    int       n;          /* schedulers */
    int       want_sched; /* -1: any */
    int       value;
    atomic_int *ran;
};

static int leaf(struct corio_task *t, void *arg)
{
    struct leaf_arg *a = arg;
    if (a->want_sched >= 0 && where(t) != a->want_sched)
        return -EXDEV;
    corio_yield(t);
    atomic_fetch_add(a->ran, 1);
    return a->value * 2;
}

/* A middle task spawns a leaf on the next scheduler and returns its result plus one. */
static int middle(struct corio_task *t, void *arg)
{
    struct leaf_arg *a = arg;
    if (where(t) != a->want_sched)
        return -EXDEV;
    struct leaf_arg la = {.n = a->n, .want_sched = (a->want_sched + 1) % a->n,
                          .value = a->value, .ran = a->ran};
    struct corio_future f;
    int err = corio_spawn_on(t, la.want_sched, leaf, &la, &f);
    if (err)
        return err;
    int r = corio_future_await(t, &f, NULL);
    return r < 0 ? r : r + 1;
}

#define NSPAWN 128

struct fut_state {
    int        n;
    atomic_int ran;
    int        bad;
};

static void root_futures(struct corio_task *t, void *arg)
{
    struct fut_state *st = arg;
    static struct leaf_arg a[NSPAWN];
    static struct corio_future f[NSPAWN];
    for (int i = 0; i < NSPAWN; i++) {
        a[i] = (struct leaf_arg){.n = st->n, .want_sched = i % st->n, .value = i,
                                 .ran = &st->ran};
        int err = corio_spawn_on(t, a[i].want_sched, middle, &a[i], &f[i]);
        cr_assert_eq(err, 0, "corio_spawn_on: %s", afs_strerror(err));
    }
    for (int i = 0; i < NSPAWN; i++) {
        int r = corio_future_await(t, &f[i], NULL);
        if (r != 2 * i + 1)
            st->bad++;
    }
}

T_RT(futures_on_16_schedulers)
{
    struct corio_rt *rt = rt_make(16);
    struct fut_state st = {.n = 16};
    int rc = corio_rt_run(rt, root_futures, &st);
    cr_assert_eq(rc, 0, "corio_rt_run: %s", afs_strerror(rc));
    cr_assert_eq(st.bad, 0, "%d wrong results", st.bad);
    cr_assert_eq(atomic_load(&st.ran), NSPAWN);
    uint64_t in = 0, out = 0, ring = 0;
    for (unsigned i = 0; i < 16; i++) {
        struct corio_rt_stats s;
        cr_assert_eq(corio_rt_stats(rt, i, &s, NULL), 0);
        in += s.spawns_in;
        out += s.spawns_out;
        ring += s.wakes_ring;
    }
    /* Every middle and leaf not on its spawner's scheduler went as a message. */
    cr_assert_eq(in, out);
    cr_assert_geq(in, NSPAWN, "spawns_in %llu", (unsigned long long)in);
    const char *be = getenv("ASYNCFS_BACKEND");
    if (be && strcmp(be, "io_uring") == 0)
        cr_assert_gt(ring, 0, "no wake-up went as a ring message on io_uring");
    struct corio_rt_stats s;
    cr_assert_eq(corio_rt_stats(rt, 16, &s, NULL), -EINVAL);
    corio_rt_free(rt);
}

/* A scheduler running its tasks looks at its inbox before it sleeps: posts to it while it
 * is busy send no wake-up (no ring message, no waker write). */
struct busy_state {
    atomic_int started, release;
    atomic_int ran;
};

static int busy_task(struct corio_task *t, void *arg)
{
    (void)t;
    struct busy_state *st = arg;
    atomic_store(&st->started, 1);
    while (!atomic_load(&st->release)) /* holds its scheduler's thread, never suspends */
        ;
    return 0;
}

static int count_task(struct corio_task *t, void *arg)
{
    (void)t;
    atomic_fetch_add(&((struct busy_state *)arg)->ran, 1);
    return 0;
}

static uint64_t wakes_sent(struct corio_task *t)
{
    struct corio_rt_stats s;
    (void)t;
    /* The calling scheduler's own counters, from its thread. */
    cr_assert_eq(corio_rt_stats(rt_running, 0, &s, NULL), 0);
    return s.wakes_ring + s.wakes_waker;
}

static void root_awake(struct corio_task *t, void *arg)
{
    struct busy_state *st = arg;
    cr_assert_eq(corio_spawn_on(t, 1, busy_task, st, NULL), 0);
    while (!atomic_load(&st->started))
        corio_yield(t);
    uint64_t before = wakes_sent(t);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(corio_spawn_on(t, 1, count_task, st, NULL), 0);
    corio_yield(t); /* a phase boundary: staged wake-ups would go out here */
    uint64_t after = wakes_sent(t);
    atomic_store(&st->release, 1);
    corio_wait(t);
    cr_assert_eq(atomic_load(&st->ran), 8);
    cr_assert_eq(after, before, "%llu wake-up(s) sent to a scheduler that was running a task",
                 (unsigned long long)(after - before));
}

T_RT(no_wake_up_for_a_running_scheduler)
{
    struct corio_rt *rt = rt_make(2);
    rt_running = rt;
    struct busy_state st = {0};
    int rc = corio_rt_run(rt, root_awake, &st);
    rt_running = NULL;
    cr_assert_eq(rc, 0, "corio_rt_run: %s", afs_strerror(rc));
    corio_rt_free(rt);
}

/* A message posted in the middle of a long CPU phase wakes a sleeping scheduler at once: the
 * poster keeps computing (never suspends) until the message has been acted on there. A
 * wake-up held back until the poster's phase ends would never come; the poster gives up
 * after 10 s so that the test fails instead of hanging. */
enum { MID_SPAWN, MID_FUTURE, MID_CHAN };

struct mid_state {
    int                 kind;
    atomic_int          seen;
    struct corio_future ext;
    struct corio_chan  *ch;
};

static int mid_mark(struct corio_task *t, void *arg)
{
    (void)t;
    atomic_store(&((struct mid_state *)arg)->seen, 1);
    return 0;
}

/* On the sleeping scheduler: waits for the future or the value, then says so. */
static void mid_waiter(struct corio_task *t, void *arg)
{
    struct mid_state *st = arg;
    int v = 0;
    int r = st->kind == MID_FUTURE ? corio_future_await(t, &st->ext, NULL)
                                   : corio_chan_recv(t, st->ch, &v);
    if (r >= 0)
        atomic_store(&st->seen, 1);
}

static int mid_post_and_compute(struct corio_task *t, struct mid_state *st)
{
    int v = 7, r;
    corio_sleep(t, 50 * MS); /* the other scheduler has nothing to do: it blocks */
    if (st->kind == MID_SPAWN)
        r = corio_spawn_on(t, 1, mid_mark, st, NULL);
    else if (st->kind == MID_FUTURE)
        r = corio_future_complete(&st->ext, 1, NULL);
    else
        r = corio_chan_send(t, st->ch, &v); /* the receiver waits: no suspension */
    if (r < 0)
        return r;
    int64_t until = corio_now() + 10000 * MS;
    while (!atomic_load(&st->seen) && corio_now() < until)
        ;
    return atomic_load(&st->seen) ? 0 : -ETIMEDOUT;
}

static int mid_poster(struct corio_task *t, void *arg)
{
    return mid_post_and_compute(t, arg);
}

static void root_mid_phase(struct corio_task *t, void *arg)
{
    struct mid_state *st = arg;
    if (st->kind == MID_SPAWN) { /* scheduler 0 posts to scheduler 1 */
        cr_assert_eq(mid_post_and_compute(t, st), 0, "the spawn waited for the phase's end");
        corio_wait(t);
        return;
    }
    /* Scheduler 1 posts to scheduler 0, where a task waits. */
    corio_future_init_external(&st->ext, corio_task_sched(t));
    cr_assert_eq(corio_spawn(t, mid_waiter, st, NULL), 0);
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, 1, mid_poster, st, &f), 0);
    cr_assert_eq(corio_future_await(t, &f, NULL), 0, "the %s waited for the phase's end",
                 st->kind == MID_FUTURE ? "future's completion" : "channel's value");
    corio_wait(t);
}

static void mid_phase_run(int kind)
{
    struct corio_rt *rt = rt_make(2);
    struct mid_state st = {.kind = kind};
    cr_assert_eq(corio_chan_new(&st.ch, 1, sizeof(int)), 0);
    cr_assert_eq(corio_rt_run(rt, root_mid_phase, &st), 0);
    cr_assert_eq(atomic_load(&st.seen), 1);
    corio_chan_free(st.ch);
    corio_rt_free(rt);
}

T_RT(spawn_mid_phase_wakes_a_sleeping_scheduler)
{
    mid_phase_run(MID_SPAWN);
}

T_RT(future_completed_mid_phase_wakes_a_sleeping_scheduler)
{
    mid_phase_run(MID_FUTURE);
}

T_RT(chan_send_mid_phase_wakes_a_sleeping_scheduler)
{
    mid_phase_run(MID_CHAN);
}

/* The same runtime runs twice. */
T_RT(runs_twice)
{
    struct corio_rt *rt = rt_make(3);
    for (int k = 0; k < 2; k++) {
        struct fut_state st = {.n = 3};
        cr_assert_eq(corio_rt_run(rt, root_futures, &st), 0);
        cr_assert_eq(st.bad, 0);
    }
    corio_rt_free(rt);
}

static void root_bad_index(struct corio_task *t, void *arg)
{
    (void)arg;
    atomic_int ran = 0;
    struct leaf_arg a = {.want_sched = -1, .ran = &ran};
    cr_assert_eq(corio_spawn_on(t, 4, leaf, &a, NULL), -EINVAL);
    cr_assert_eq(corio_spawn_on(t, -2, leaf, &a, NULL), -EINVAL);
    cr_assert_eq(corio_spawn_on(t, 3, leaf, &a, NULL), 0); /* no future: result dropped */
    corio_wait(t);
    cr_assert_eq(atomic_load(&ran), 1);
}

T_RT(bad_index)
{
    struct corio_rt *rt = rt_make(4);
    cr_assert_eq(corio_rt_run(rt, root_bad_index, NULL), 0);
    corio_rt_free(rt);
    struct corio_rt_config cfg;
    corio_rt_config_default(&cfg);
    cfg.sched.ctx = (struct afs_ctx *)&cfg; /* contexts are the runtime's own */
    cr_assert_eq(corio_rt_new(&rt, &cfg), -EINVAL);
    corio_rt_config_default(&cfg);
    cfg.flags = 0x100;
    cr_assert_eq(corio_rt_new(&rt, &cfg), -EINVAL);
    /* The schedulers' and their contexts' settings are checked here too, not first by
     * corio_rt_run (as corio_sched_new and afs_ctx_new check them). */
    corio_rt_config_default(&cfg);
    cfg.sched.flags = 0x100;
    cr_assert_eq(corio_rt_new(&rt, &cfg), -EINVAL);
    corio_rt_config_default(&cfg);
    cfg.sched.io_limit = 0;
    cr_assert_eq(corio_rt_new(&rt, &cfg), -EINVAL);
    corio_rt_config_default(&cfg);
    cfg.ctx.queue_depth = 0;
    cr_assert_eq(corio_rt_new(&rt, &cfg), -EINVAL);
    cr_assert(strstr(afs_last_ctx_error(), "queue_depth"), "%s", afs_last_ctx_error());
}

/* ------------------------------------------------------------------------------------------
 * Structured concurrency across schedulers
 * ---------------------------------------------------------------------------------------- */

struct tree_state {
    atomic_int done;
};

static int slow_leaf(struct corio_task *t, void *arg)
{
    struct tree_state *st = arg;
    corio_sleep(t, 20 * MS);
    atomic_fetch_add(&st->done, 1);
    return 0;
}

/* Spawns leaves on every other scheduler and returns at once, without waiting. */
static int spawner(struct corio_task *t, void *arg)
{
    for (int i = 0; i < 16; i++)
        if (i != where(t))
            corio_spawn_on(t, i, slow_leaf, arg, NULL);
    return 7;
}

static void root_structured(struct corio_task *t, void *arg)
{
    struct tree_state *st = arg;
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, 5, spawner, st, &f), 0);
    /* spawner returned at once, but is done only when its 15 leaves are. */
    cr_assert_eq(corio_future_await(t, &f, NULL), 7);
    cr_assert_eq(atomic_load(&st->done), 15);
    /* corio_wait covers children on other schedulers. */
    for (int i = 0; i < 16; i++)
        corio_spawn_on(t, i, slow_leaf, st, NULL);
    corio_wait(t);
    cr_assert_eq(atomic_load(&st->done), 31);
    /* And a root that returns without waiting is done only after them. */
    for (int i = 1; i < 16; i++)
        corio_spawn_on(t, i, slow_leaf, st, NULL);
}

T_RT(parent_waits_for_children_elsewhere)
{
    struct corio_rt *rt = rt_make(16);
    struct tree_state st = {0};
    cr_assert_eq(corio_rt_run(rt, root_structured, &st), 0);
    cr_assert_eq(atomic_load(&st.done), 46);
    corio_rt_free(rt);
}

/* ------------------------------------------------------------------------------------------
 * Cancellation and deadlines across schedulers
 * ---------------------------------------------------------------------------------------- */

/* Sleeps for longer than the test's timeout at depth 0; above, spawns one level down three
 * schedulers further and returns what it returns (it is the grandchild that the cancellation
 * or deadline has to reach). */
static int nested_sleeper(struct corio_task *t, void *arg)
{
    intptr_t depth = (intptr_t)arg;
    if (depth == 0)
        return corio_sleep(t, 600000 * MS);
    struct corio_future f;
    int err = corio_spawn_on(t, (where(t) + 3) % 16, nested_sleeper, (void *)(depth - 1), &f);
    if (err)
        return err;
    corio_wait(t); /* a wait that cancellation does not end: the children's results count */
    return corio_future_result(&f, NULL);
}

struct mid_arg {
    int64_t deadline_before; /* set on itself before spawning, 0: none */
    int     expect;
};

/* Spawns eight two-level sleepers on schedulers 1..8; returns how many ended with expect. */
static int mid(struct corio_task *t, void *arg)
{
    struct mid_arg *m = arg;
    if (m->deadline_before)
        corio_set_deadline(t, corio_now() + m->deadline_before);
    struct corio_future f[8];
    for (int i = 0; i < 8; i++)
        cr_assert_eq(corio_spawn_on(t, 1 + i, nested_sleeper, (void *)(intptr_t)2, &f[i]), 0);
    corio_wait(t);
    int n = 0;
    for (int i = 0; i < 8; i++)
        n += corio_future_result(&f[i], NULL) == m->expect;
    return n;
}

static void root_cancel(struct corio_task *t, void *arg)
{
    (void)arg;
    /* Cancel: after the sleepers started. */
    struct mid_arg a = {.expect = -ECANCELED};
    struct corio_future f;
    struct corio_task *m;
    cr_assert_eq(corio_spawn_future(t, mid, &a, &f, &m), 0);
    corio_sleep(t, 50 * MS);
    corio_cancel(m);
    cr_assert_eq(corio_future_await(t, &f, NULL), 8);
    /* Cancel at once, before they could start anywhere. */
    cr_assert_eq(corio_spawn_future(t, mid, &a, &f, &m), 0);
    corio_cancel(m);
    cr_assert_eq(corio_future_await(t, &f, NULL), 8);
    /* A deadline set after the spawns. */
    struct mid_arg d = {.expect = -ETIMEDOUT};
    cr_assert_eq(corio_spawn_future(t, mid, &d, &f, &m), 0);
    corio_set_deadline(m, corio_now() + 100 * MS);
    cr_assert_eq(corio_future_await(t, &f, NULL), 8);
    /* A deadline the children start under. */
    struct mid_arg d2 = {.deadline_before = 100 * MS, .expect = -ETIMEDOUT};
    cr_assert_eq(corio_spawn_future(t, mid, &d2, &f, &m), 0);
    cr_assert_eq(corio_future_await(t, &f, NULL), 8);
}

T_RT(cancel_and_deadline_reach_other_schedulers)
{
    struct corio_rt *rt = rt_make(16);
    cr_assert_eq(corio_rt_run(rt, root_cancel, NULL), 0);
    corio_rt_free(rt);
}

/* ------------------------------------------------------------------------------------------
 * Channels
 * ---------------------------------------------------------------------------------------- */

#define PER_PRODUCER 2000

struct chan_state {
    struct corio_chan *c;
    atomic_llong       sum;
    atomic_int         got;
};

static int producer(struct corio_task *t, void *arg)
{
    struct chan_state *st = arg;
    for (long long i = 1; i <= PER_PRODUCER; i++) {
        long long v = i + 1000000LL * where(t);
        int err = corio_chan_send(t, st->c, &v);
        if (err)
            return err;
    }
    return 0;
}

static int consumer(struct corio_task *t, void *arg)
{
    struct chan_state *st = arg;
    long long v;
    int err;
    while ((err = corio_chan_recv(t, st->c, &v)) == 0) {
        atomic_fetch_add(&st->sum, v);
        atomic_fetch_add(&st->got, 1);
    }
    return err == -EPIPE ? 0 : err;
}

static void root_chan(struct corio_task *t, void *arg)
{
    struct chan_state *st = arg;
    struct corio_future prod[8], cons[8];
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(corio_spawn_on(t, 8 + i, consumer, st, &cons[i]), 0);
        cr_assert_eq(corio_spawn_on(t, i, producer, st, &prod[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        cr_assert_eq(corio_future_await(t, &prod[i], NULL), 0);
    corio_chan_close(st->c);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(corio_future_await(t, &cons[i], NULL), 0);
}

static void chan_run(size_t capacity)
{
    struct corio_rt *rt = rt_make(16);
    struct chan_state st = {0};
    cr_assert_eq(corio_chan_new(&st.c, capacity, sizeof(long long)), 0);
    cr_assert_eq(corio_rt_run(rt, root_chan, &st), 0);
    long long want = 0;
    for (int p = 0; p < 8; p++)
        want += (long long)PER_PRODUCER * (PER_PRODUCER + 1) / 2 + 1000000LL * p * PER_PRODUCER;
    cr_assert_eq(atomic_load(&st.got), 8 * PER_PRODUCER);
    cr_assert_eq(atomic_load(&st.sum), want);
    corio_chan_free(st.c);
    corio_rt_free(rt);
}

T_RT(chan_between_16_schedulers) { chan_run(4); }
T_RT(chan_rendezvous) { chan_run(0); }

struct close_state {
    struct corio_chan *full, *empty;
    atomic_int         waiting;
};

static int blocked_send(struct corio_task *t, void *arg)
{
    struct close_state *st = arg;
    int v = where(t);
    atomic_fetch_add(&st->waiting, 1);
    return corio_chan_send(t, st->full, &v);
}

static int blocked_recv(struct corio_task *t, void *arg)
{
    struct close_state *st = arg;
    int v;
    atomic_fetch_add(&st->waiting, 1);
    return corio_chan_recv(t, st->empty, &v);
}

static void root_close(struct corio_task *t, void *arg)
{
    struct close_state *st = arg;
    int v = 42;
    cr_assert_eq(corio_chan_try_send(st->full, &v), 0);
    cr_assert_eq(corio_chan_try_send(st->full, &v), -EAGAIN);
    cr_assert_eq(corio_chan_try_recv(st->empty, &v), -EAGAIN);
    struct corio_future s[6], r[6];
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(corio_spawn_on(t, 1 + i, blocked_send, st, &s[i]), 0);
        cr_assert_eq(corio_spawn_on(t, 1 + i, blocked_recv, st, &r[i]), 0);
    }
    while (atomic_load(&st->waiting) < 12)
        corio_sleep(t, 1 * MS);
    corio_sleep(t, 20 * MS); /* let them reach their waits (the result is the same if not) */
    corio_chan_close(st->full);
    corio_chan_close(st->empty);
    corio_chan_close(st->empty); /* idempotent */
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(corio_future_await(t, &s[i], NULL), -EPIPE);
        cr_assert_eq(corio_future_await(t, &r[i], NULL), -EPIPE);
    }
    /* What was sent before the close is still received; then -EPIPE. */
    cr_assert_eq(corio_chan_recv(t, st->full, &v), 0);
    cr_assert_eq(v, 42);
    cr_assert_eq(corio_chan_recv(t, st->full, &v), -EPIPE);
    cr_assert_eq(corio_chan_send(t, st->full, &v), -EPIPE);
    cr_assert_eq(corio_chan_try_send(st->full, &v), -EPIPE);
}

T_RT(chan_closed_with_waiters_epipe)
{
    struct corio_rt *rt = rt_make(8);
    struct close_state st = {0};
    cr_assert_eq(corio_chan_new(&st.full, 1, sizeof(int)), 0);
    cr_assert_eq(corio_chan_new(&st.empty, 1, sizeof(int)), 0);
    cr_assert_eq(corio_rt_run(rt, root_close, &st), 0);
    corio_chan_free(st.full);
    corio_chan_free(st.empty);
    corio_rt_free(rt);
    struct corio_chan *c;
    cr_assert_eq(corio_chan_new(&c, 4, 0), -EINVAL);
    cr_assert_eq(corio_chan_new(&c, SIZE_MAX / 2, 8), -EINVAL);
    cr_assert_eq(corio_chan_new(&c, 0, ((size_t)1 << 30) + 1), -EINVAL); /* over 1 GiB */
}

/* A channel freed as soon as nobody waits on it, while a receiver on another scheduler has
 * been handed a value but has not run since, and its deadline passes meanwhile: the
 * deadline's cancellation must not reach into the freed channel. Many channels, one
 * deadline, sends at offsets around it, so that some deadlines fire between a hand-off and
 * its wake-up (ASan's build sees the use after free; others may crash in the lock). */
#define FREED_CHANS 1000

struct freed_state {
    struct corio_chan *ch[FREED_CHANS];
    int64_t            deadline, offset;
    atomic_int         waiting, received, timed_out;
};
static struct freed_state *freed_st; /* the receivers' */

static int freed_recv(struct corio_task *t, void *arg)
{
    struct freed_state *st = freed_st;
    int i = (int)(intptr_t)arg, v;
    /* One that starts late (a slow build) still gets to wait in the channel: a receive
     * ended by a deadline already passed takes no lock, and nothing would then order its
     * look at the channel before the root's free (ThreadSanitizer said so). */
    int64_t soonest = corio_now() + 20 * MS;
    corio_set_deadline(t, st->deadline > soonest ? st->deadline : soonest);
    atomic_fetch_add(&st->waiting, 1);
    int rc = corio_chan_recv(t, st->ch[i], &v);
    if (rc == 0 && v == i)
        atomic_fetch_add(&st->received, 1);
    else if (rc == -ETIMEDOUT)
        atomic_fetch_add(&st->timed_out, 1);
    return 0;
}

static int freed_recv_all(struct corio_task *t, void *arg)
{
    (void)arg;
    for (int i = 0; i < FREED_CHANS; i++)
        cr_assert_eq(corio_spawn_on(t, 1, freed_recv, (void *)(intptr_t)i, NULL), 0);
    return 0;
}

static void root_freed(struct corio_task *t, void *arg)
{
    struct freed_state *st = arg;
    struct corio_future f;
    st->deadline = corio_now() + 100 * MS;
    cr_assert_eq(corio_spawn_on(t, 1, freed_recv_all, NULL, &f), 0);
    while (atomic_load(&st->waiting) < FREED_CHANS)
        corio_sleep(t, 1 * MS);
    if (corio_now() < st->deadline - 2 * MS)
        corio_sleep(t, st->deadline - corio_now() - 1 * MS);
    while (corio_now() < st->deadline + st->offset)
        ; /* computes: the sends come at this offset from the deadline */
    for (int i = 0; i < FREED_CHANS; i++) {
        int v = i;
        corio_chan_try_send(st->ch[i], &v); /* to its receiver, or into the ring */
        corio_chan_free(st->ch[i]);         /* nobody waits on it now */
    }
    cr_assert_eq(corio_future_await(t, &f, NULL), 0);
}

T_RT(chan_freed_while_a_receiver_it_woke_has_not_run)
{
    struct corio_rt *rt = rt_make(2);
    static struct freed_state st;
    freed_st = &st;
    for (int round = 0; round < 20; round++) {
        st.offset = (round % 20) * 50 * 1000; /* 0 to 950 us past the deadline */
        atomic_store(&st.waiting, 0);
        atomic_store(&st.received, 0);
        atomic_store(&st.timed_out, 0);
        for (int i = 0; i < FREED_CHANS; i++)
            cr_assert_eq(corio_chan_new(&st.ch[i], 1, sizeof(int)), 0);
        cr_assert_eq(corio_rt_run(rt, root_freed, &st), 0);
        cr_assert_eq(atomic_load(&st.received) + atomic_load(&st.timed_out), FREED_CHANS,
                     "every receiver got its value or its deadline");
    }
    corio_rt_free(rt);
}

/* A cancelled receiver leaves the channel consistent: the next value goes to the next one. */
static int recv_one(struct corio_task *t, void *arg)
{
    struct close_state *st = arg;
    int v = -1;
    int err = corio_chan_recv(t, st->empty, &v);
    return err ? err : v;
}

static void root_chan_cancel(struct corio_task *t, void *arg)
{
    struct close_state *st = arg;
    struct corio_future a, b;
    struct corio_task *ta;
    cr_assert_eq(corio_spawn_future(t, recv_one, st, &a, &ta), 0);
    cr_assert_eq(corio_spawn_on(t, 2, recv_one, st, &b), 0);
    corio_sleep(t, 20 * MS);
    corio_cancel(ta);
    cr_assert_eq(corio_future_await(t, &a, NULL), -ECANCELED);
    int v = 5;
    cr_assert_eq(corio_chan_send(t, st->empty, &v), 0);
    cr_assert_eq(corio_future_await(t, &b, NULL), 5);
}

T_RT(chan_cancelled_receiver)
{
    struct corio_rt *rt = rt_make(3);
    struct close_state st = {0};
    cr_assert_eq(corio_chan_new(&st.empty, 0, sizeof(int)), 0);
    cr_assert_eq(corio_rt_run(rt, root_chan_cancel, &st), 0);
    corio_chan_free(st.empty);
    corio_rt_free(rt);
}

/* ------------------------------------------------------------------------------------------
 * A future completed twice
 * ---------------------------------------------------------------------------------------- */

struct twice_state {
    struct corio_future f;
    int                 second;
};

static int complete_first(struct corio_task *t, void *arg)
{
    (void)t;
    struct twice_state *st = arg;
    return corio_future_complete(&st->f, 11, st);
}

static int complete_again(struct corio_task *t, void *arg)
{
    (void)t;
    struct twice_state *st = arg;
    st->second = corio_future_complete(&st->f, 22, NULL);
    return 0;
}

static void root_twice(struct corio_task *t, void *arg)
{
    struct twice_state *st = arg;
    corio_future_init_external(&st->f, corio_task_sched(t));
    struct corio_future a, b;
    cr_assert_eq(corio_spawn_on(t, 3, complete_first, st, &a), 0);
    void *v = NULL;
    cr_assert_eq(corio_future_await(t, &st->f, &v), 11);
    cr_assert_eq(v, st);
    cr_assert_eq(corio_future_await(t, &a, NULL), 0);
    cr_assert_eq(corio_spawn_on(t, 5, complete_again, st, &b), 0);
    cr_assert_eq(corio_future_await(t, &b, NULL), 0);
    cr_assert_eq(st->second, -EALREADY);
    cr_assert_eq(corio_future_result(&st->f, &v), 11); /* the first completion stays */
    /* A spawn's own future refuses a second completion too. */
    cr_assert_eq(corio_future_complete(&a, 99, NULL), -EALREADY);
    cr_assert_eq(corio_future_result(&a, NULL), 0);
}

T_RT(remote_future_completed_twice_refused)
{
    struct corio_rt *rt = rt_make(6);
    struct twice_state st = {0};
    cr_assert_eq(corio_rt_run(rt, root_twice, &st), 0);
    corio_rt_free(rt);
}

/* ------------------------------------------------------------------------------------------
 * A scheduler held by user code; stealing
 * ---------------------------------------------------------------------------------------- */

struct hold_state {
    atomic_int  release, holding, any_done, late;
    struct corio_chan *park;
};

/* Holds its scheduler's thread (no suspension) until released. */
static int hold(struct corio_task *t, void *arg)
{
    (void)t;
    struct hold_state *st = arg;
    atomic_store(&st->holding, 1);
    while (!atomic_load(&st->release))
        ;
    return 1;
}

static int parked(struct corio_task *t, void *arg)
{
    struct hold_state *st = arg;
    int v;
    return corio_chan_recv(t, st->park, &v) == -EPIPE ? 0 : -EPROTO;
}

static int any_work(struct corio_task *t, void *arg)
{
    struct hold_state *st = arg;
    corio_yield(t);
    atomic_fetch_add(&st->any_done, 1);
    return where(t);
}

static void root_hold(struct corio_task *t, void *arg)
{
    struct hold_state *st = arg;
    struct corio_future h, pinned;
    cr_assert_eq(corio_spawn_on(t, 1, hold, st, &h), 0);
    while (!atomic_load(&st->holding))
        corio_sleep(t, 1 * MS);
    /* Load the others with parked tasks so that CORIO_SCHED_ANY picks the held one first. */
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(corio_spawn_on(t, 0, parked, st, NULL), 0);
        cr_assert_eq(corio_spawn_on(t, 2, parked, st, NULL), 0);
    }
    corio_sleep(t, 20 * MS);
    /* Round trips with scheduler 2 go on while 1 is held. */
    for (int i = 0; i < 50; i++) {
        struct corio_future f;
        atomic_int ran = 0;
        struct leaf_arg a = {.want_sched = 2, .value = i, .ran = &ran};
        cr_assert_eq(corio_spawn_on(t, 2, leaf, &a, &f), 0);
        cr_assert_eq(corio_future_await(t, &f, NULL), 2 * i);
    }
    /* A spawn pinned to the held scheduler waits for it. */
    atomic_int pran = 0;
    struct leaf_arg pa = {.want_sched = 1, .value = 3, .ran = &pran};
    cr_assert_eq(corio_spawn_on(t, 1, leaf, &pa, &pinned), 0);
    /* CORIO_SCHED_ANY spawns queued for the held one are taken by the idle ones. */
    struct corio_future any[16];
    for (int i = 0; i < 16; i++)
        cr_assert_eq(corio_spawn_on(t, CORIO_SCHED_ANY, any_work, st, &any[i]), 0);
    for (int i = 0; i < 16; i++) {
        int r = corio_future_await(t, &any[i], NULL);
        cr_assert(r == 0 || r == 2, "ran on scheduler %d, held by user code", r);
    }
    cr_assert_eq(atomic_load(&pran), 0, "the held scheduler ran a task");
    cr_assert_eq(corio_future_done(&pinned), 0);
    atomic_store(&st->release, 1);
    cr_assert_eq(corio_future_await(t, &h, NULL), 1);
    cr_assert_eq(corio_future_await(t, &pinned, NULL), 6);
    corio_chan_close(st->park);
}

T_RT(scheduler_held_by_user_code)
{
    struct corio_rt *rt = rt_make(3);
    struct hold_state st = {0};
    cr_assert_eq(corio_chan_new(&st.park, 1, sizeof(int)), 0);
    cr_assert_eq(corio_rt_run(rt, root_hold, &st), 0);
    cr_assert_eq(atomic_load(&st.any_done), 16);
    uint64_t steals = 0;
    for (unsigned i = 0; i < 3; i++) {
        struct corio_rt_stats s;
        corio_rt_stats(rt, i, &s, NULL);
        steals += s.steals;
    }
    cr_assert_gt(steals, 0, "nothing was stolen from the held scheduler");
    corio_chan_free(st.park);
    corio_rt_free(rt);
}

/* Balance: spawns queued on a scheduler held by user code while the poster's scheduler is
 * held too: only a third one, asleep in a long timer wait, can take them, and it is woken for
 * them rather than at its timer. Scheduler 0 (the root) and 1 compute until the spawn runs. */
static int thief_sleeper(struct corio_task *t, void *arg)
{
    struct hold_state *st = arg;
    int v;
    corio_set_deadline(t, corio_now() + 20000 * MS);
    int r = corio_chan_recv(t, st->park, &v); /* closed at the end (-EPIPE) */
    if (r == -ETIMEDOUT && !atomic_load(&st->release)) {
        /* Woken by its timer: nobody took the spawn before. */
        atomic_store(&st->late, 1);
        atomic_store(&st->release, 1);
    }
    return 0;
}

static int thief_work(struct corio_task *t, void *arg)
{
    struct hold_state *st = arg;
    atomic_store(&st->release, 1);
    return where(t);
}

static void root_thief(struct corio_task *t, void *arg)
{
    struct hold_state *st = arg;
    struct corio_future w;
    /* Loads: 0 has the root and one sleeper, 2 has two, 1 the task that holds it. */
    cr_assert_eq(corio_spawn_on(t, 0, thief_sleeper, st, NULL), 0);
    cr_assert_eq(corio_spawn_on(t, 2, thief_sleeper, st, NULL), 0);
    cr_assert_eq(corio_spawn_on(t, 2, thief_sleeper, st, NULL), 0);
    cr_assert_eq(corio_spawn_on(t, 1, hold, st, NULL), 0);
    while (!atomic_load(&st->holding))
        corio_sleep(t, 1 * MS);
    corio_sleep(t, 50 * MS); /* scheduler 2 asleep in its timer wait */
    cr_assert_eq(corio_spawn_on(t, CORIO_SCHED_ANY, thief_work, st, &w), 0);
    while (!atomic_load(&st->release)) /* holds scheduler 0: it cannot take it itself */
        ;
    cr_assert_eq(corio_future_await(t, &w, NULL), 2, "the spawn ran elsewhere than on 2");
    corio_chan_close(st->park);
}

T_RT(a_sleeping_scheduler_takes_spawns_queued_on_a_held_one)
{
    struct corio_rt *rt = rt_make(3);
    struct hold_state st = {0};
    cr_assert_eq(corio_chan_new(&st.park, 1, sizeof(int)), 0);
    cr_assert_eq(corio_rt_run(rt, root_thief, &st), 0);
    corio_chan_free(st.park);
    cr_assert_eq(atomic_load(&st.late), 0, "the spawn waited for the sleeper's timer");
    struct corio_rt_stats s;
    corio_rt_stats(rt, 0, &s, NULL);
    cr_assert_geq(s.thief_wakes, 1);
    corio_rt_free(rt);
}

/* Balance: scheduler 1 holds 8 suspended tasks (its count is higher) and sleeps; two
 * CPU-bound CORIO_SCHED_ANY children of a task on scheduler 0 must still run at the same time
 * on both (each computes until the other runs too). Placed on scheduler 0 and run at once,
 * the first would compute alone until its time limit. */
struct idle_state {
    atomic_int running, failed;
    int        want; /* children computing at once */
    int64_t    patience; /* how long a child computes waiting for the others */
    int64_t    busy; /* root_idle: how long scheduler 1 computes around the spawns */
    struct corio_chan *park;
};

static int idle_parked(struct corio_task *t, void *arg)
{
    struct idle_state *st = arg;
    int v;
    return corio_chan_recv(t, st->park, &v) == -EPIPE ? 0 : -EPROTO;
}

static int idle_cpu(struct corio_task *t, void *arg)
{
    struct idle_state *st = arg;
    atomic_fetch_add(&st->running, 1);
    int64_t give_up = corio_now() + (st->patience ? st->patience : 10000 * MS);
    while (atomic_load(&st->running) < st->want)
        if (corio_now() > give_up) {
            atomic_store(&st->failed, 1);
            break;
        }
    return where(t);
}

/* Scheduler 1 gets 8 parked tasks and sleeps; with st->busy, a task of it then computes
 * (holding its thread, so it is awake at the spawns) from before the spawns until well after
 * them. Then two CPU-bound children are spawned with CORIO_SCHED_ANY. */
static int busy_for(struct corio_task *t, void *arg)
{
    struct idle_state *st = arg;
    int64_t until = corio_now() + st->busy;
    while (corio_now() < until)
        ;
    return where(t);
}

static void root_idle(struct corio_task *t, void *arg)
{
    struct idle_state *st = arg;
    for (int i = 0; i < 8; i++)
        cr_assert_eq(corio_spawn_on(t, 1, idle_parked, st, NULL), 0);
    corio_sleep(t, 50 * MS); /* scheduler 1: its tasks parked, asleep */
    struct corio_future busy, f[2];
    if (st->busy) {
        cr_assert_eq(corio_spawn_on(t, 1, busy_for, st, &busy), 0);
        corio_sleep(t, 20 * MS); /* scheduler 1 awake, computing */
    }
    for (int i = 0; i < 2; i++)
        cr_assert_eq(corio_spawn_on(t, CORIO_SCHED_ANY, idle_cpu, st, &f[i]), 0);
    int a = corio_future_await(t, &f[0], NULL), b = corio_future_await(t, &f[1], NULL);
    if (st->busy)
        cr_assert_eq(corio_future_await(t, &busy, NULL), 1);
    cr_assert(a >= 0 && b >= 0 && a != b, "ran on %d and %d", a, b);
    corio_chan_close(st->park);
}

static void run_idle(int64_t busy)
{
    struct corio_rt *rt = rt_make(2);
    struct idle_state st = {.want = 2, .patience = 3000 * MS, .busy = busy};
    cr_assert_eq(corio_chan_new(&st.park, 1, sizeof(int)), 0);
    cr_assert_eq(corio_rt_run(rt, root_idle, &st), 0);
    cr_assert_eq(atomic_load(&st.failed), 0, "the children did not run at the same time");
    corio_chan_free(st.park);
    corio_rt_free(rt);
}

T_RT(any_spawns_reach_a_sleeping_scheduler_with_more_tasks)
{
    run_idle(0);
}

/* The same while scheduler 1 is awake at the spawns: the children, placed on scheduler 0 by
 * the counts, must not start there at once: scheduler 1 takes one as it runs out of work,
 * and the two compute at the same time. */
T_RT(any_spawns_reach_a_scheduler_awake_at_the_spawn)
{
    run_idle(200 * MS);
}

/* The same with three schedulers: 1 and 2 each hold parked tasks and sleep; a task on 0
 * spawns two CPU-bound children and computes its own share without suspending. One woken
 * scheduler takes one child; the other child must reach the third, woken in turn. */
static void root_three(struct corio_task *t, void *arg)
{
    struct idle_state *st = arg;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(corio_spawn_on(t, 1, idle_parked, st, NULL), 0);
        cr_assert_eq(corio_spawn_on(t, 2, idle_parked, st, NULL), 0);
    }
    corio_sleep(t, 50 * MS);
    struct corio_future f[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(corio_spawn_on(t, CORIO_SCHED_ANY, idle_cpu, st, &f[i]), 0);
    (void)idle_cpu(t, st); /* holds scheduler 0 */
    int a = corio_future_await(t, &f[0], NULL), b = corio_future_await(t, &f[1], NULL);
    cr_assert(a > 0 && b > 0 && a != b, "ran on %d and %d", a, b);
    corio_chan_close(st->park);
}

T_RT(any_spawns_reach_every_sleeping_scheduler)
{
    struct corio_rt *rt = rt_make(3);
    struct idle_state st = {.want = 3};
    cr_assert_eq(corio_chan_new(&st.park, 1, sizeof(int)), 0);
    cr_assert_eq(corio_rt_run(rt, root_three, &st), 0);
    cr_assert_eq(atomic_load(&st.failed), 0, "the three did not run at the same time");
    corio_chan_free(st.park);
    corio_rt_free(rt);
}

/* Balance: a burst of CORIO_SCHED_ANY spawns from one task spreads over the schedulers. */
static int busy_work(struct corio_task *t, void *arg)
{
    (void)arg;
    volatile unsigned x = 0;
    for (unsigned i = 0; i < 200000; i++)
        x += i;
    (void)x;
    corio_yield(t);
    return where(t);
}

static void root_spread(struct corio_task *t, void *arg)
{
    int *per = arg;
    enum { N = 400 };
    static struct corio_future f[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(corio_spawn_on(t, CORIO_SCHED_ANY, busy_work, NULL, &f[i]), 0);
    for (int i = 0; i < N; i++) {
        int r = corio_future_await(t, &f[i], NULL);
        cr_assert(r >= 0 && r < 4);
        per[r]++;
    }
}

T_RT(any_spreads_over_schedulers)
{
    struct corio_rt *rt = rt_make(4);
    int per[4] = {0};
    cr_assert_eq(corio_rt_run(rt, root_spread, per), 0);
    /* How it spreads depends on which threads the machine runs when (a thread that gets no
     * CPU has its queued spawns taken by the others): no scheduler keeps most of it. */
    int most = 0, used = 0;
    for (int i = 0; i < 4; i++) {
        most = per[i] > most ? per[i] : most;
        used += per[i] > 0;
    }
    cr_assert(most <= 300 && used >= 3, "ran per scheduler: %d %d %d %d", per[0], per[1],
              per[2], per[3]);
    corio_rt_free(rt);
}

/* Balance: CORIO_SCHED_ANY counts the tasks alive on each scheduler, not only the spawns
 * queued for it. Scheduler 0 holds 32 long-running tasks (they compute and yield, never
 * done until released): new spawns go to scheduler 1, though nothing is queued anywhere. */
struct alive_state {
    atomic_int release;
};

static void long_runner(struct corio_task *t, void *arg)
{
    struct alive_state *st = arg;
    while (!atomic_load(&st->release))
        corio_yield(t);
}

static int where_ran(struct corio_task *t, void *arg)
{
    (void)arg;
    return where(t);
}

static void root_alive(struct corio_task *t, void *arg)
{
    struct alive_state *st = arg;
    for (int i = 0; i < 32; i++)
        cr_assert_eq(corio_spawn(t, long_runner, st, NULL), 0);
    struct corio_future f[16];
    for (int i = 0; i < 16; i++)
        cr_assert_eq(corio_spawn_on(t, CORIO_SCHED_ANY, where_ran, NULL, &f[i]), 0);
    int on_busy = 0;
    for (int i = 0; i < 16; i++)
        on_busy += corio_future_await(t, &f[i], NULL) == 0;
    atomic_store(&st->release, 1);
    corio_wait(t);
    cr_assert_eq(on_busy, 0, "%d of 16 spawns went to the scheduler with 32 tasks alive",
                 on_busy);
}

T_RT(any_avoids_the_scheduler_with_tasks_alive)
{
    struct corio_rt *rt = rt_make(2);
    struct alive_state st = {0};
    cr_assert_eq(corio_rt_run(rt, root_alive, &st), 0);
    corio_rt_free(rt);
}

/* Files: each task opens and reads on its own scheduler's context; the batches work on every
 * scheduler (io_uring: rings with SINGLE_ISSUER / DEFER_TASKRUN driven by their threads). */
static int read_file(struct corio_task *t, void *arg)
{
    const char *path = arg;
    struct afs_file *f;
    int err = afs_open(corio_sched_ctx(corio_task_sched(t)), path, AFS_RDONLY, 0,
                       AFS_MODE_SYNC, &f);
    if (err)
        return err;
    char buf[8192];
    int ok = 0;
    for (int k = 0; k < 8; k++) {
        uint64_t off = (uint64_t)((where(t) * 7 + k * 13) % 120) * 8192;
        ssize_t n = afs_pread(f, buf, sizeof buf, off);
        if (n != (ssize_t)sizeof buf || !t_check(buf, sizeof buf, off))
            ok = -EIO;
        corio_yield(t); /* a busy scheduler still reaps its completions */
    }
    afs_close(f);
    return ok;
}

static void root_files(struct corio_task *t, void *arg)
{
    struct corio_future f[64];
    for (int i = 0; i < 64; i++)
        cr_assert_eq(corio_spawn_on(t, i % 16, read_file, arg, &f[i]), 0);
    for (int i = 0; i < 64; i++)
        cr_assert_eq(corio_future_await(t, &f[i], NULL), 0);
}

T_RT(file_reads_on_every_scheduler)
{
    const char *path = t_path("data");
    t_make_file(path, 128 * 8192);
    struct corio_rt *rt = rt_make(16);
    cr_assert_eq(corio_rt_run(rt, root_files, (void *)path), 0);
    corio_rt_free(rt);
}

/* ------------------------------------------------------------------------------------------
 * Found by use: a wake-up after the scheduler ended, shields over timers and remote
 * children, a task named from another scheduler's thread, a future in a returned frame
 * ---------------------------------------------------------------------------------------- */

/* A plain thread completes the external future a one-scheduler run awaits, while a ticker
 * keeps the scheduler waking on timers (so it may see the message before the wake-up): the
 * run ends and corio_run frees the scheduler and its context. The thread must be done with
 * them by then (ASan: heap-use-after-free in the wake-up, before). 3,000 runs. */
static struct corio_future ext_fut;
static atomic_int ext_ready;

static void ext_ticker(struct corio_task *t, void *a)
{
    (void)a;
    while (corio_sleep(t, 20 * 1000) == 0)
        ;
}

static void ext_root(struct corio_task *t, void *a)
{
    (void)a;
    struct corio_task *tk;
    cr_assert_eq(corio_spawn(t, ext_ticker, NULL, &tk), 0);
    corio_future_init_external(&ext_fut, corio_task_sched(t));
    atomic_store(&ext_ready, 1);
    cr_assert_eq(corio_future_await(t, &ext_fut, NULL), 1);
    corio_cancel(tk);
}

static void *ext_poster(void *a)
{
    uint32_t x = (uint32_t)(uintptr_t)a * 2654435761u;
    while (!atomic_load(&ext_ready))
        ;
    for (volatile uint32_t spin = x % 100000; spin > 0; spin--) /* 0-100 us or so */
        ;
    corio_future_complete(&ext_fut, 1, NULL);
    return NULL;
}

T_RT(a_thread_completing_a_future_as_the_run_ends_touches_nothing_freed)
{
    for (int k = 0; k < 3000; k++) {
        atomic_store(&ext_ready, 0);
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, ext_poster, (void *)(uintptr_t)(k + 1)), 0);
        cr_assert_eq(corio_run(ext_root, NULL), 0);
        pthread_join(th, NULL);
    }
}

/* A child sleeps 300 ms under a parent whose deadline (100 ms: the child must start its
 * sleep before it, even under valgrind) armed the child's timer, and the parent waits for
 * it shielded: at the deadline the timer fires, reaches nobody (the shield), and the sleep
 * must still end at 300 ms (it never ended: "deadlock"). */
static int sleeper(struct corio_task *t, void *a)
{
    (void)a;
    int64_t t0 = corio_now();
    int r = corio_sleep(t, 300 * MS);
    cr_assert(corio_now() - t0 >= 300 * MS, "the sleep ended after %lld ms with %d",
              (long long)((corio_now() - t0) / MS), r);
    return r;
}

static void shield_timer_root(struct corio_task *t, void *a)
{
    (void)a;
    corio_set_deadline(t, corio_now() + 100 * MS);
    struct corio_future f;
    cr_assert_eq(corio_spawn_future(t, sleeper, NULL, &f, NULL), 0);
    cr_assert_eq(corio_future_await_shielded(t, &f, NULL), 0);
}

T_RT(a_deadline_timer_under_a_shield_keeps_the_sleep_going)
{
    cr_assert_eq(corio_run(shield_timer_root, NULL), 0);
    struct corio_rt *rt = rt_make(2);
    cr_assert_eq(corio_rt_run(rt, shield_timer_root, NULL), 0);
    corio_rt_free(rt);
}

/* A shield covers children on other schedulers too: the local and the remote child of a
 * shielded parent, blocked in a channel receive, get the values sent after the parent's
 * deadline (the remote child had -ETIMEDOUT). */
struct shield_remote {
    struct corio_chan *ch;
    int                local_res, remote_res;
};

static int shield_recv(struct corio_task *t, void *a)
{
    struct shield_remote *c = a;
    int v;
    return corio_chan_recv(t, c->ch, &v);
}

static void shield_remote_root(struct corio_task *t, void *a)
{
    struct shield_remote *c = a;
    /* Room for both values: a send never waits for a child that is gone. The deadline
     * leaves time for the spawns under valgrind. */
    cr_assert_eq(corio_chan_new(&c->ch, 2, sizeof(int)), 0);
    corio_set_deadline(t, corio_now() + 300 * MS);
    struct corio_future fl, fr;
    cr_assert_eq(corio_spawn_future(t, shield_recv, c, &fl, NULL), 0);
    cr_assert_eq(corio_spawn_on(t, 1, shield_recv, c, &fr), 0);
    corio_shield_begin(t);
    corio_sleep(t, 500 * MS);
    int v = 7;
    cr_assert_eq(corio_chan_send(t, c->ch, &v), 0);
    cr_assert_eq(corio_chan_send(t, c->ch, &v), 0);
    c->local_res = corio_future_await(t, &fl, NULL);
    c->remote_res = corio_future_await(t, &fr, NULL);
    corio_shield_end(t);
    corio_set_deadline(t, INT64_MAX);
    corio_chan_free(c->ch);
}

T_RT(a_shield_covers_children_on_other_schedulers)
{
    struct corio_rt *rt = rt_make(2);
    struct shield_remote c = {0};
    cr_assert_eq(corio_rt_run(rt, shield_remote_root, &c), 0);
    corio_rt_free(rt);
    cr_assert_eq(c.local_res, 0, "local child: %d", c.local_res);
    cr_assert_eq(c.remote_res, 0, "remote child: %d", c.remote_res);
}

/* A task of scheduler 1 naming the root, which runs on scheduler 0, in a blocking call:
 * the library's abort, not a switch into scheduler 0's tasks from the wrong thread. */
static struct corio_task *wrong_root;
static atomic_int wrong_stop;

static int wrong_child(struct corio_task *t, void *a)
{
    (void)t, (void)a;
    corio_sleep(wrong_root, MS); /* wrong_root is not this thread's task */
    return 0;
}

static void wrong_root_fn(struct corio_task *t, void *a)
{
    (void)a;
    wrong_root = t;
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, 1, wrong_child, NULL, &f), 0);
    while (!atomic_load(&wrong_stop)) /* running, on scheduler 0 */
        ;
}

/* ------------------------------------------------------------------------------------------
 * Deadlocks that span schedulers
 * ---------------------------------------------------------------------------------------- */

struct dl_state {
    atomic_int started; /* tasks that began to wait forever */
    atomic_int ended;   /* tasks that returned */
};

/* Awaits a future of its own that nobody completes. */
static int dl_stuck(struct corio_task *t, void *arg)
{
    struct dl_state *st = arg;
    atomic_fetch_add(&st->started, 1);
    struct corio_future never;
    corio_future_init(&never);
    corio_future_await(t, &never, NULL);
    atomic_fetch_add(&st->ended, 1);
    return 0;
}

/* Returns after a while: the deadlock is there only once it has. */
static int dl_sleeper(struct corio_task *t, void *arg)
{
    struct dl_state *st = arg;
    corio_sleep(t, 30 * MS);
    atomic_fetch_add(&st->ended, 1);
    return 0;
}

/* Spawns dl_stuck on the next scheduler (of 4) and awaits it. */
static int dl_middle(struct corio_task *t, void *arg)
{
    struct corio_future f;
    int err = corio_spawn_on(t, (where(t) + 1) % 4, dl_stuck, arg, &f);
    return err ? err : corio_future_await(t, &f, NULL);
}

static void root_deadlock(struct corio_task *t, void *arg)
{
    struct dl_state *st = arg;
    struct corio_future f[2];
    cr_assert_eq(corio_spawn_on(t, 1, dl_sleeper, st, NULL), 0);
    cr_assert_eq(corio_spawn_on(t, CORIO_SCHED_ANY, dl_sleeper, st, NULL), 0);
    cr_assert_eq(corio_spawn_on(t, 2, dl_middle, st, &f[0]), 0);
    cr_assert_eq(corio_spawn_on(t, CORIO_SCHED_ANY, dl_stuck, st, &f[1]), 0);
    corio_future_await(t, &f[0], NULL);
    atomic_fetch_add(&st->ended, 100); /* never */
}

static void root_sleepers(struct corio_task *t, void *arg)
{
    for (int i = 0; i < 4; i++)
        cr_assert_eq(corio_spawn_on(t, i, dl_sleeper, arg, NULL), 0);
}

T_RT(a_deadlock_across_schedulers_is_reported)
{
    struct corio_rt *rt = rt_make(4);
    struct dl_state st = {0};
    cr_assert_eq(corio_rt_run(rt, root_deadlock, &st), -EDEADLK);
    cr_assert_eq(atomic_load(&st.started), 2);
    cr_assert_eq(atomic_load(&st.ended), 2, "the sleepers ended, nothing else did");
    /* The runtime runs again after one. */
    struct dl_state again = {0};
    cr_assert_eq(corio_rt_run(rt, root_sleepers, &again), 0);
    cr_assert_eq(atomic_load(&again.ended), 4);
    corio_rt_free(rt);
}

/* A child stuck the same way but under its parent's deadline: the timer can end its wait,
 * so it is no deadlock; the run ends when the deadline passes. And on a runtime of one
 * scheduler, a deadlock is found as on any other. */
static void root_deadline(struct corio_task *t, void *arg)
{
    struct corio_future f;
    corio_set_deadline(t, corio_now() + 50 * MS);
    cr_assert_eq(corio_spawn_on(t, 1, dl_stuck, arg, &f), 0);
    int r = corio_future_await(t, &f, NULL);
    cr_assert(r == -ETIMEDOUT || r == 0, "%d", r); /* its own wait's deadline, or the child's end */
}

static void root_alone(struct corio_task *t, void *arg)
{
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, 0, dl_stuck, arg, &f), 0);
    corio_future_await(t, &f, NULL);
}

T_RT(a_wait_a_deadline_ends_is_no_deadlock)
{
    struct corio_rt *rt = rt_make(2);
    struct dl_state st = {0};
    cr_assert_eq(corio_rt_run(rt, root_deadline, &st), 0);
    cr_assert_eq(atomic_load(&st.started), 1);
    cr_assert_eq(atomic_load(&st.ended), 1, "the stuck child's wait ended at the deadline");
    corio_rt_free(rt);
    rt = rt_make(1);
    struct dl_state one = {0};
    cr_assert_eq(corio_rt_run(rt, root_alone, &one), -EDEADLK);
    cr_assert_eq(atomic_load(&one.started), 1);
    corio_rt_free(rt);
}

/* A chain of children each on another scheduler, each awaiting the next: while one runs,
 * every other scheduler sleeps with nothing but a message that could wake it, and a message
 * is always on its way. Never a deadlock. */
static int relay(struct corio_task *t, void *arg)
{
    intptr_t depth = (intptr_t)arg;
    if (depth == 0)
        return 1;
    unsigned n = corio_rt_schedulers(rt_running);
    struct corio_future f;
    int err = corio_spawn_on(t, (int)((unsigned)where(t) + 1) % (int)n, relay,
                             (void *)(depth - 1), &f);
    if (err)
        return err;
    int r = corio_future_await(t, &f, NULL);
    return r < 0 ? r : r + 1;
}

static void root_relay(struct corio_task *t, void *arg)
{
    (void)arg;
    for (int i = 0; i < 40; i++) {
        struct corio_future f;
        cr_assert_eq(corio_spawn_on(t, i & 1 ? CORIO_SCHED_ANY : 1, relay, (void *)(intptr_t)6,
                                    &f), 0);
        cr_assert_eq(corio_future_await(t, &f, NULL), 7);
    }
}

T_RT(messages_on_their_way_are_no_deadlock)
{
    unsigned sizes[] = {2, 3, 4, 16};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        struct corio_rt *rt = rt_make(sizes[k]);
        rt_running = rt;
        for (int run = 0; run < 5; run++)
            cr_assert_eq(corio_rt_run(rt, root_relay, NULL), 0, "%u schedulers", sizes[k]);
        rt_running = NULL;
        corio_rt_free(rt);
    }
}

/* No temporary directory: an abort skips its removal. */
Test(rt, a_task_named_from_another_schedulers_thread_aborts, .signal = SIGABRT, .timeout = 120)
{
    struct corio_rt *rt = rt_make(2);
    corio_rt_run(rt, wrong_root_fn, NULL);
}

#ifndef _WIN32
/* A child process whose stderr goes to the pipe p (p[0] the parent's end), SIGABRT at its
 * default: fork()'s return. */
static pid_t fork_stderr_to(int p[2])
{
    cr_assert_eq(pipe(p), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        signal(SIGABRT, SIG_DFL);
    }
    return pid;
}

/* A runtime of two schedulers in such a child (no Criterion there: it exits 3 without). */
static struct corio_rt *child_rt(void)
{
    struct corio_rt_config cfg;
    corio_rt_config_default(&cfg);
    cfg.schedulers = 2;
    struct corio_rt *rt;
    if (corio_rt_new(&rt, &cfg) != 0)
        _exit(3);
    return rt;
}

/* The parent's side of a child process that should abort: what the child wrote to fd (its
 * stderr) until it ended, into out; returns its wait status. */
static int child_output(pid_t pid, int fd, char *out, size_t size)
{
    ssize_t n, len = 0;
    while ((n = read(fd, out + len, size - 1 - (size_t)len)) > 0)
        len += n;
    out[len > 0 ? len : 0] = '\0';
    close(fd);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return st;
}

/* A file, a context, a stream and an op of scheduler 0 used by a task of scheduler 1: the
 * library's abort, naming the call (they would race with scheduler 0's loop), each in a child
 * process whose stderr is read. what: 0 a file's pread, 1 the context's submit, 2 a stream's
 * read, 3 the cancel of a receive waiting on a socket. */
static struct afs_file   *foreign_file;
static struct afs_stream *foreign_stream;
static struct afs_ctx    *foreign_ctx;
static struct afs_op      foreign_op;

static int foreign_use(struct corio_task *t, void *a)
{
    (void)t;
    char buf[8];
    switch (*(int *)a) {
    case 0:
        return (int)afs_pread(foreign_file, buf, sizeof buf, 0);
    case 1:
        return afs_ctx_submit(foreign_ctx);
    case 2:
        return (int)afs_fread(buf, 1, sizeof buf, foreign_stream);
    default:
        return afs_cancel(&foreign_op);
    }
}

static void foreign_op_done(struct afs_op *op)
{
    (void)op;
}

static void foreign_root(struct corio_task *t, void *a)
{
    struct afs_ctx *ctx = foreign_ctx = corio_sched_ctx(corio_task_sched(t));
    cr_assert_eq(afs_create(ctx, t_path("foreign"), AFS_MODE_SYNC, &foreign_file), 0);
    cr_assert_eq(afs_pwrite(foreign_file, "12345678", 8, 0), 8);
    cr_assert_eq(afs_fopen(ctx, t_path("foreign"), "rb", &foreign_stream), 0);
    static char sock_buf[8];
    struct afs_file *ends[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, ends), 0);
    cr_assert_eq(afs_queue_recv(&foreign_op, ends[0], sock_buf, sizeof sock_buf, 0,
                                foreign_op_done, NULL), 0);
    cr_assert_geq(afs_ctx_submit(ctx), 0);
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, 1, foreign_use, a, &f), 0);
    (void)corio_future_await(t, &f, NULL);
}

T_RT(a_file_context_or_stream_of_another_scheduler_is_refused_with_the_librarys_message)
{
    static const char *const want[] = {
        "asyncfs: afs_pread: the file's context belongs to another scheduler of a runtime",
        "asyncfs: afs_ctx_submit: the context belongs to another scheduler of a runtime",
        "asyncfs: afs_fread: the stream's context belongs to another scheduler of a runtime",
        "asyncfs: afs_cancel: the op's context belongs to another scheduler of a runtime"};
    for (int what = 0; what < 4; what++) {
        int p[2];
        pid_t pid = fork_stderr_to(p);
        if (pid == 0) {
            corio_rt_run(child_rt(), foreign_root, &what);
            _exit(0); /* not refused: the parent reports it */
        }
        close(p[1]);
        char out[4096];
        int st = child_output(pid, p[0], out, sizeof out);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "case %d: status %#x: %s", what,
                  st, out);
        cr_assert_not_null(strstr(out, want[what]), "case %d: %s", what, out);
    }
}
#endif

/* A future in a task's frame given to a child on another scheduler (corio_spawn_on), the
 * task cancelled while it awaits it, so it returns first: the child's end must not write
 * into the frame (gone; its stack taken by the next task, which keeps 0x5a there). */
static int late_child(struct corio_task *t, void *a)
{
    (void)a;
    corio_shield_begin(t);
    corio_sleep(t, 20 * MS);
    corio_shield_end(t);
    return 42;
}

static void frame_task(struct corio_task *t, void *a)
{
    struct corio_future fut; /* in this frame */
    cr_assert_eq(corio_spawn_on(t, *(int *)a, late_child, NULL, &fut), 0);
    cr_assert_eq(corio_future_await(t, &fut, NULL), -ECANCELED);
}

static void frame_filler(struct corio_task *t, void *a)
{
    volatile unsigned char buf[8192];
    memset((unsigned char *)buf, 0x5a, sizeof buf);
    corio_sleep(t, 60 * MS);
    for (size_t i = 0; i < sizeof buf; i++)
        if (buf[i] != 0x5a)
            *(int *)a = 1;
}

static void frame_root(struct corio_task *t, void *a)
{
    int *where = a, corrupted = 0;
    struct corio_task *ft;
    cr_assert_eq(corio_spawn(t, frame_task, where, &ft), 0);
    corio_cancel(ft);
    corio_yield(t);
    cr_assert_eq(corio_spawn(t, frame_filler, &corrupted, NULL), 0);
    corio_wait(t);
    cr_assert_eq(corrupted, 0, "the child's end wrote into a returned frame");
}

T_RT(a_future_in_a_returned_frame_is_not_completed)
{
    struct corio_rt *rt = rt_make(2);
    for (int where = 0; where < 2; where++) /* the child here (a local future) or remote */
        cr_assert_eq(corio_rt_run(rt, frame_root, &where), 0);
    corio_rt_free(rt);
}

/* The same where the task's function is run by the library's own wrapper, which then waits
 * for the task's children: a task spawned with a future (corio_spawn_future here, through
 * corio_spawn_on on another scheduler) whose function returns, cancelled, before the future
 * in its frame of its own (shielded) child is completed. The child's end must not write
 * there: the wrapper's wait for that child has its frames there now (before, the test
 * crashed). where: the scheduler of the grandchild. */
static int frame_fn(struct corio_task *t, void *a)
{
    struct corio_future fut; /* in this frame */
    if (corio_spawn_on(t, *(int *)a, late_child, NULL, &fut) != 0)
        return -EIO;
    return corio_future_await(t, &fut, NULL);
}

static void frame_far(struct corio_task *t, void *a)
{
    struct corio_future f;
    int other = 1 - where(t);
    if (corio_spawn_on(t, other, frame_fn, a, &f) == 0)
        (void)corio_future_await(t, &f, NULL);
}

static void frame_wrapped_root(struct corio_task *t, void *a)
{
    struct corio_future f;
    struct corio_task *here, *there; /* (near and far are macros on Windows) */
    cr_assert_eq(corio_spawn_future(t, frame_fn, a, &f, &here), 0);
    cr_assert_eq(corio_spawn(t, frame_far, a, &there), 0);
    corio_cancel(here);
    corio_cancel(there);
    corio_wait(t);
    cr_assert_eq(corio_future_result(&f, NULL), -ECANCELED);
}

T_RT(a_future_in_the_returned_frame_of_a_wrapped_task_function_is_not_completed)
{
    struct corio_rt *rt = rt_make(2);
    for (int round = 0; round < 3; round++)
        for (int where = 0; where < 2; where++)
            cr_assert_eq(corio_rt_run(rt, frame_wrapped_root, &where), 0);
    corio_rt_free(rt);
}

/* The shield reaches a grandchild on another scheduler too (started by a local child): its
 * sleep outlasts the root's deadline (it had -ETIMEDOUT at the deadline). */
static int gc_sleep(struct corio_task *t, void *a)
{
    (void)a;
    return corio_sleep(t, 400 * MS);
}

static int gc_child(struct corio_task *t, void *a)
{
    (void)a;
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, 1, gc_sleep, NULL, &f), 0);
    return corio_future_await(t, &f, NULL);
}

static void gc_root(struct corio_task *t, void *a)
{
    int *res = a;
    corio_set_deadline(t, corio_now() + 150 * MS);
    struct corio_future f;
    cr_assert_eq(corio_spawn_future(t, gc_child, NULL, &f, NULL), 0);
    corio_shield_begin(t);
    *res = corio_future_await(t, &f, NULL);
    corio_shield_end(t);
    corio_set_deadline(t, INT64_MAX);
}

T_RT(a_shield_covers_a_grandchild_on_another_scheduler)
{
    struct corio_rt *rt = rt_make(2);
    int res = 1;
    cr_assert_eq(corio_rt_run(rt, gc_root, &res), 0);
    corio_rt_free(rt);
    cr_assert_eq(res, 0, "the grandchild's sleep: %d", res);
}

/* Behind a shield a cancellation from above reaches no wait, but corio_cancelled() keeps
 * reporting the plain fact, on other schedulers as locally: the shielded parent's remote
 * child and that child's own remote child (a third scheduler) see it and sleep on; so does
 * a remote child spawned by a parent already cancelled and shielded. */
struct fact {
    struct corio_task *p;
    int                seen[3], err[3]; /* child, grandchild, late child */
};

static int fact_watch(struct corio_task *t, struct fact *c, int who)
{
    for (int i = 0; i < 200 && !c->seen[who]; i++) {
        int err = corio_sleep(t, 5 * MS);
        if (err)
            c->err[who] = err;
        c->seen[who] = corio_cancelled(t) != 0;
    }
    return 0;
}

static int fact_grandchild(struct corio_task *t, void *a)
{
    return fact_watch(t, a, 1);
}

static int fact_late(struct corio_task *t, void *a)
{
    return fact_watch(t, a, 2);
}

static int fact_child(struct corio_task *t, void *a)
{
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, 2, fact_grandchild, a, &f), 0);
    fact_watch(t, a, 0);
    return corio_future_await(t, &f, NULL);
}

static int fact_parent(struct corio_task *t, void *a)
{
    struct fact *c = a;
    c->p = t;
    corio_shield_begin(t);
    struct corio_future f, g;
    cr_assert_eq(corio_spawn_on(t, 1, fact_child, a, &f), 0);
    int r = corio_future_await(t, &f, NULL);
    cr_assert(corio_cancelled(t));
    cr_assert_eq(corio_spawn_on(t, 2, fact_late, a, &g), 0); /* cancelled before its start */
    cr_assert_eq(corio_future_await(t, &g, NULL), 0);
    corio_shield_end(t);
    return r;
}

static void fact_root(struct corio_task *t, void *a)
{
    struct fact *c = a;
    struct corio_future f;
    cr_assert_eq(corio_spawn_future(t, fact_parent, a, &f, NULL), 0);
    cr_assert_eq(corio_sleep(t, 30 * MS), 0);
    corio_cancel(c->p);
    cr_assert_eq(corio_future_await(t, &f, NULL), 0);
}

T_RT(corio_cancelled_reports_the_fact_behind_a_shield_on_other_schedulers)
{
    struct corio_rt *rt = rt_make(3);
    struct fact c = {0};
    cr_assert_eq(corio_rt_run(rt, fact_root, &c), 0);
    corio_rt_free(rt);
    const char *who[] = {"remote child", "its remote child", "child spawned after"};
    for (int i = 0; i < 3; i++) {
        cr_assert(c.seen[i], "%s: corio_cancelled() said 0", who[i]);
        cr_assert_eq(c.err[i], 0, "%s: its sleep was cut: %d", who[i], c.err[i]);
    }
}

/* CORIO_TRACE on a runtime: the path goes on across schedulers, and ends with the index of
 * the scheduler that prints. */
static int traced_remote(struct corio_task *t, void *a)
{
    (void)a;
    corio_log(t, "remote");
    return 0;
}

static void traced_rt_root(struct corio_task *t, void *a)
{
    (void)a;
    corio_log(t, "root");
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, 1, traced_remote, NULL, &f), 0);
    cr_assert_eq(corio_future_await(t, &f, NULL), 0);
    cr_assert_eq(corio_spawn_on(t, 1, traced_remote, NULL, &f), 0);
    cr_assert_eq(corio_future_await(t, &f, NULL), 0);
}

T_RT(trace_paths_go_on_across_schedulers)
{
    struct corio_rt_config cfg;
    corio_rt_config_default(&cfg);
    cfg.schedulers = 2;
    cfg.sched.flags = CORIO_TRACE;
    struct corio_rt *rt;
    cr_assert_eq(corio_rt_new(&rt, &cfg), 0);
    char path[2048];
    snprintf(path, sizeof path, "%s/trace.txt", t_dir);
    cr_assert_not_null(freopen(path, "w", stderr));
    cr_assert_eq(corio_rt_run(rt, traced_rt_root, NULL), 0);
    corio_rt_free(rt);
    fflush(stderr);
    FILE *f = fopen(path, "r");
    char text[256] = {0};
    cr_assert_gt(fread(text, 1, sizeof text - 1, f), 0);
    fclose(f);
    cr_assert_str_eq(text, "[0@0] root\n[0/0@1] remote\n[0/1@1] remote\n");
}

/* A deadline lifted after it passed, while the child it reached on another scheduler
 * waits on a scheduler held by a computing task: that scheduler learns of the lift before it
 * fires its own timer for the deadline, and the child's sleep still ends with -ETIMEDOUT
 * (before, the lift took the timer back: the sleep went on for its whole 30 s). */
struct lifted {
    atomic_int lifted, held;
    int        res, spawned; /* checked on the test's thread: Criterion's asserts are not for
                                other threads */
};

static void lifted_hog(struct corio_task *t, void *a)
{
    struct lifted *c = a;
    corio_yield(t); /* the sleeper is asleep first */
    atomic_store(&c->held, 1);
    int64_t until = corio_now() + 20000 * MS;
    while (!atomic_load(&c->lifted) && corio_now() < until)
        ; /* holds the scheduler until the root lifted its deadline */
}

static int lifted_sleep(struct corio_task *t, void *a)
{
    struct lifted *c = a;
    c->spawned = corio_spawn(t, lifted_hog, c, NULL);
    c->res = corio_sleep(t, 30000 * MS);
    return c->res;
}

static void lifted_root(struct corio_task *t, void *a)
{
    struct lifted *c = a;
    /* Long enough for the child to start under it however slow the machine (a sanitizer):
     * a child that starts after the lift starts without it. */
    corio_set_deadline(t, corio_now() + 300 * MS);
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, 1, lifted_sleep, c, &f), 0);
    cr_assert_eq(corio_future_await(t, &f, NULL), -ETIMEDOUT); /* the root's own wait */
    corio_set_deadline(t, INT64_MAX);
    atomic_store(&c->lifted, 1);
    corio_wait(t);
}

/* Runs root on 2 schedulers: the remote child's sleep ended by the deadline, soon. */
static void run_lifted(corio_fn *root)
{
    struct corio_rt *rt = rt_make(2);
    struct lifted c = {.res = 1};
    int64_t t0 = corio_now();
    cr_assert_eq(corio_rt_run(rt, root, &c), 0);
    corio_rt_free(rt);
    cr_assert_eq(c.spawned, 0);
    cr_assert_eq(c.res, -ETIMEDOUT, "the remote child's sleep: %d", c.res);
    cr_assert_lt(corio_now() - t0, 15000 * MS);
}

T_RT(a_deadline_lifted_after_it_passed_still_ends_the_remote_waits_it_reached)
{
    run_lifted(lifted_root);
}

/* The same when the child's scheduler was held for the whole deadline: set, passed and
 * lifted while it could not look, its two control messages one (the lift). The child's
 * sleep still ends with -ETIMEDOUT (before, the child never learnt of the deadline: its
 * sleep went on for its whole 30 s). */
static void unseen_root(struct corio_task *t, void *a)
{
    struct lifted *c = a;
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, 1, lifted_sleep, c, &f), 0);
    int64_t until = corio_now() + 20000 * MS;
    while (!atomic_load(&c->held) && corio_now() < until)
        (void)corio_sleep(t, 1 * MS);
    corio_set_deadline(t, corio_now() + 20 * MS);
    cr_assert_eq(corio_sleep(t, 1000 * MS), -ETIMEDOUT); /* the root's own wait */
    corio_set_deadline(t, INT64_MAX);
    atomic_store(&c->lifted, 1);
    (void)corio_future_await(t, &f, NULL);
}

T_RT(a_deadline_set_passed_and_lifted_while_the_childs_scheduler_was_held_still_ends_its_wait)
{
    run_lifted(unseen_root);
}

/* A random soak across schedulers, bounded (about a second; seconds under Valgrind): trees
 * of spawns on random schedulers (by index or CORIO_SCHED_ANY) whose sums come back through
 * futures, with files written and read back on each task's own scheduler's context; a
 * channel between producers and consumers spread over the schedulers, closed when the
 * producers are done; and a deadline that passes while a subtree sleeps on every scheduler
 * and is lifted at once by the task it woke: every sum right, every value received once,
 * every sleep ended by the deadline. */
struct soak_node {
    int      depth;
    unsigned seed;
};

static unsigned soak_n; /* schedulers of the runtime in use */
static atomic_int soak_files, soak_timed_out, soak_asleep;

/* Checks in tasks of other schedulers' threads: Criterion's asserts are for the test's own
 * thread, so a failure is counted, its first message kept, and both asserted at the end. */
static atomic_int soak_bad;
static char       soak_msg[256];
#define SOAK_CHECK(cond, ...)                                                                  \
    do {                                                                                       \
        if (!(cond) && atomic_fetch_add(&soak_bad, 1) == 0)                                    \
            snprintf(soak_msg, sizeof soak_msg, __VA_ARGS__);                                  \
    } while (0)

static unsigned soak_rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) & 0x7fff;
}

static int soak_node(struct corio_task *t, void *arg)
{
    const struct soak_node *n = arg;
    unsigned s = n->seed;
    int sum = 1;
    if (soak_rnd(&s) % 2) {
        struct afs_ctx *ctx = corio_sched_ctx(corio_task_sched(t));
        char path[1100], buf[1500], back[1500];
        int no = atomic_fetch_add(&soak_files, 1);
        snprintf(path, sizeof path, "%s/soak%d", t_dir, no);
        size_t len = 1 + soak_rnd(&s) % sizeof buf;
        uint64_t off = soak_rnd(&s) % 3 * 4096;
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)(i * 31 + n->seed);
        struct afs_file *f;
        if (afs_create(ctx, path, AFS_MODE_ASYNC, &f) != 0) {
            SOAK_CHECK(0, "afs_create of file %d failed", no);
            return -EIO;
        }
        SOAK_CHECK(afs_pwrite(f, buf, len, off) == (ssize_t)len, "afs_pwrite of file %d", no);
        corio_yield(t);
        SOAK_CHECK(afs_pread(f, back, len, off) == (ssize_t)len, "afs_pread of file %d", no);
        SOAK_CHECK(memcmp(buf, back, len) == 0, "file %d: the bytes read back differ", no);
        SOAK_CHECK(afs_close(f) == 0, "afs_close of file %d", no);
        SOAK_CHECK(afs_unlinkat(ctx, AFS_AT_FDCWD, path, 0) == 0, "afs_unlinkat of file %d", no);
    }
    if (n->depth > 0) {
        int k = 1 + (int)(soak_rnd(&s) % 4);
        struct soak_node kids[4];
        struct corio_future fut[4];
        for (int i = 0; i < k; i++) {
            kids[i].depth = n->depth - 1 - (int)(soak_rnd(&s) % 2);
            kids[i].seed = soak_rnd(&s) * 7919u + (unsigned)i;
            int to = (int)(soak_rnd(&s) % (soak_n + 1)) - 1; /* -1: CORIO_SCHED_ANY */
            int r = corio_spawn_on(t, to, soak_node, &kids[i], &fut[i]);
            SOAK_CHECK(r == 0, "corio_spawn_on: %d", r);
            if (soak_rnd(&s) % 3 == 0)
                corio_yield(t);
        }
        for (int i = 0; i < k; i++) {
            int r = corio_future_await(t, &fut[i], NULL);
            SOAK_CHECK(r > 0, "a child's sum: %d", r);
            sum += r;
        }
    }
    return sum;
}

/* What soak_node returns, computed without running it. */
static int soak_expect(struct soak_node n)
{
    unsigned s = n.seed;
    int sum = 1;
    if (soak_rnd(&s) % 2) {
        soak_rnd(&s);
        soak_rnd(&s);
    }
    if (n.depth > 0) {
        int k = 1 + (int)(soak_rnd(&s) % 4);
        for (int i = 0; i < k; i++) {
            struct soak_node c = {n.depth - 1 - (int)(soak_rnd(&s) % 2), 0};
            c.seed = soak_rnd(&s) * 7919u + (unsigned)i;
            soak_rnd(&s);
            soak_rnd(&s);
            sum += soak_expect(c);
        }
    }
    return sum;
}

struct soak_chan {
    struct corio_chan *c;
    int                id, n;
    atomic_llong      *sum;
};

static int soak_producer(struct corio_task *t, void *arg)
{
    struct soak_chan *a = arg;
    for (int i = 0; i < a->n; i++) {
        long long v = (long long)a->id * 1000000 + i;
        int r = corio_chan_send(t, a->c, &v);
        SOAK_CHECK(r == 0, "corio_chan_send: %d", r);
    }
    return 0;
}

static int soak_consumer(struct corio_task *t, void *arg)
{
    struct soak_chan *a = arg;
    long long v;
    int got = 0, r;
    while ((r = corio_chan_recv(t, a->c, &v)) == 0) {
        atomic_fetch_add(a->sum, v);
        got++;
    }
    SOAK_CHECK(r == -EPIPE, "corio_chan_recv: %d", r);
    return got;
}

static int soak_sleep(struct corio_task *t, void *arg)
{
    (void)arg;
    atomic_fetch_add(&soak_asleep, 1); /* its scheduler runs nothing else before the sleep */
    int r = corio_sleep(t, 30000 * MS);
    if (r == -ETIMEDOUT)
        atomic_fetch_add(&soak_timed_out, 1);
    return r;
}

static int soak_sleepers(struct corio_task *t, void *arg)
{
    (void)arg;
    struct corio_future f[8];
    for (int i = 0; i < 8; i++)
        SOAK_CHECK(corio_spawn_on(t, i % (int)soak_n, soak_sleep, NULL, &f[i]) == 0, "spawn");
    for (int i = 0; i < 8; i++)
        corio_future_await(t, &f[i], NULL);
    return 0;
}

static void soak_root(struct corio_task *t, void *arg)
{
    unsigned seed = *(unsigned *)arg;
    /* Trees. */
    struct soak_node n = {5, seed};
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, CORIO_SCHED_ANY, soak_node, &n, &f), 0);
    cr_assert_eq(corio_future_await(t, &f, NULL), soak_expect(n));
    /* A channel. */
    enum { P = 5, C = 4, N = 300 };
    struct corio_chan *c;
    cr_assert_eq(corio_chan_new(&c, seed % 4, sizeof(long long)), 0);
    atomic_llong sum = 0;
    struct soak_chan pa[P], ca[C];
    struct corio_future pf[P], cf[C];
    for (int i = 0; i < C; i++) {
        ca[i] = (struct soak_chan){c, i, 0, &sum};
        cr_assert_eq(corio_spawn_on(t, (int)((i + seed) % soak_n), soak_consumer, &ca[i], &cf[i]), 0);
    }
    for (int i = 0; i < P; i++) {
        pa[i] = (struct soak_chan){c, i, N, &sum};
        cr_assert_eq(corio_spawn_on(t, (int)((3 * i + seed) % soak_n), soak_producer, &pa[i], &pf[i]), 0);
    }
    for (int i = 0; i < P; i++)
        cr_assert_eq(corio_future_await(t, &pf[i], NULL), 0);
    corio_chan_close(c);
    int got = 0;
    for (int i = 0; i < C; i++)
        got += corio_future_await(t, &cf[i], NULL);
    long long want = 0;
    for (int i = 0; i < P; i++)
        want += (long long)i * 1000000 * N + (long long)N * (N - 1) / 2;
    cr_assert_eq(got, P * N);
    cr_assert_eq(atomic_load(&sum), want);
    corio_chan_free(c);
    /* A deadline lifted by the task it woke, set once every sleeper sleeps (a child that
     * starts after the lift starts without it), with time for it to reach them. */
    atomic_store(&soak_timed_out, 0);
    atomic_store(&soak_asleep, 0);
    int64_t t0 = corio_now();
    cr_assert_eq(corio_spawn_on(t, (int)(seed % soak_n), soak_sleepers, NULL, &f), 0);
    while (atomic_load(&soak_asleep) < 8 && corio_now() - t0 < 20000 * MS)
        corio_sleep(t, 1 * MS);
    cr_assert_eq(atomic_load(&soak_asleep), 8);
    corio_set_deadline(t, corio_now() + 200 * MS);
    cr_assert_eq(corio_future_await(t, &f, NULL), -ETIMEDOUT);
    corio_set_deadline(t, INT64_MAX);
    corio_wait(t);
    cr_assert_eq(atomic_load(&soak_timed_out), 8, "sleeps the deadline ended: %d of 8",
                 atomic_load(&soak_timed_out));
    cr_assert_lt(corio_now() - t0, 25000 * MS);
}

T_RT(a_random_soak_of_trees_channels_and_deadlines_across_schedulers)
{
    for (unsigned round = 0; round < 4; round++) {
        soak_n = round % 2 ? 4 : 2;
        struct corio_rt *rt = rt_make(soak_n);
        unsigned seed = round * 2654435761u + 17;
        cr_assert_eq(corio_rt_run(rt, soak_root, &seed), 0);
        corio_rt_free(rt);
        cr_assert_eq(atomic_load(&soak_bad), 0, "round %u: %d failed checks, the first: %s",
                     round, atomic_load(&soak_bad), soak_msg);
    }
}

#ifndef _WIN32
/* Two files adopted (AFS_NONBLOCK) from dups of one pipe's read end, on two schedulers:
 * adopting one made the shared description blocking for a moment, and the other's read,
 * tried without waiting in the readiness engine, blocked its scheduler's thread in read(2),
 * where its deadline could not end it. Each of its reads ends at its 10 ms deadline. A
 * plain thread writes a byte after 3 s, which ends such a read. */
static int share_pipe[2], share_fd;
static atomic_int share_stop, share_root_done;

static void *share_late_writer(void *arg)
{
    (void)arg;
    usleep(3000 * 1000);
    cr_assert_eq(write(share_pipe[1], "x", 1), 1);
    return NULL;
}

/* The reader's descriptor is made before the run, and closed once the root no longer makes
 * and closes its own: a number reused across threads unordered is a race to ThreadSanitizer. */
static int share_reader(struct corio_task *t, void *arg)
{
    (void)arg;
    struct afs_file *f;
    int err = afs_file_from_fd(corio_sched_ctx(corio_task_sched(t)), share_fd,
                               AFS_RDONLY | AFS_NONBLOCK, AFS_MODE_SYNC, &f);
    cr_assert_eq(err, 0);
    int64_t worst = 0;
    for (int i = 0; i < 100; i++) {
        int64_t t0 = corio_now();
        corio_set_deadline(t, t0 + 10 * MS);
        char c;
        ssize_t n = afs_read(f, &c, 1);
        int64_t took = corio_now() - t0;
        worst = took > worst ? took : worst;
        cr_assert_eq(n, -ETIMEDOUT, "read %d: %zd after %lld ms", i, n, (long long)(took / MS));
    }
    corio_set_deadline(t, 0);
    atomic_store(&share_stop, 1);
    while (!atomic_load(&share_root_done))
        corio_sleep(t, 1 * MS);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_lt(worst, 1000 * MS, "a read held its thread %lld ms", (long long)(worst / MS));
    return 0;
}

static void share_root(struct corio_task *t, void *arg)
{
    (void)arg;
    struct corio_future fut;
    cr_assert_eq(corio_spawn_on(t, 1, share_reader, NULL, &fut), 0);
    while (!atomic_load(&share_stop)) { /* another adopter of the same pipe */
        struct afs_file *g;
        if (afs_file_from_fd(corio_sched_ctx(corio_task_sched(t)), dup(share_pipe[0]),
                             AFS_RDONLY | AFS_NONBLOCK, AFS_MODE_SYNC, &g) == 0)
            afs_close(g);
        corio_yield(t);
    }
    atomic_store(&share_root_done, 1);
    cr_assert_eq(corio_future_await(t, &fut, NULL), 0);
}

T_RT(adopting_a_dup_of_a_pipe_does_not_block_another_file_s_reads_of_it)
{
    cr_assert_eq(pipe(share_pipe), 0);
    cr_assert_geq(share_fd = dup(share_pipe[0]), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, share_late_writer, NULL), 0);
    struct corio_rt *rt = rt_make(2);
    cr_assert_eq(corio_rt_run(rt, share_root, NULL), 0);
    corio_rt_free(rt);
    pthread_join(th, NULL);
    close(share_pipe[0]);
    close(share_pipe[1]);
}

/* Two threads calling corio_rt_run on one runtime at once: the second is told, with the
 * library's message, however their starts interleave (before, it could crash, hang or run
 * both). Each round in a child process, whose stderr is read. */
static struct corio_rt *twice_rt;
static pthread_barrier_t twice_bar;

static void twice_root(struct corio_task *t, void *a)
{
    (void)a;
    corio_sleep(t, 2000 * MS); /* the other thread's call comes meanwhile, however slow */
}

static void *twice_thread(void *a)
{
    (void)a;
    pthread_barrier_wait(&twice_bar);
    corio_rt_run(twice_rt, twice_root, NULL);
    return NULL;
}

Test(rt, two_threads_running_one_runtime_are_told, .timeout = 300)
{
    for (int round = 0; round < 20; round++) {
        int p[2];
        pid_t pid = fork_stderr_to(p);
        if (pid == 0) {
            twice_rt = child_rt();
            pthread_barrier_init(&twice_bar, NULL, 2);
            pthread_t th;
            pthread_create(&th, NULL, twice_thread, NULL);
            twice_thread(NULL);
            pthread_join(th, NULL);
            _exit(0); /* both ran: the parent reports it */
        }
        close(p[1]);
        char out[4096];
        int st = child_output(pid, p[0], out, sizeof out);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "round %d: status %#x: %s", round,
                  st, out);
        cr_assert_not_null(strstr(out, "asyncfs: corio_rt_run: corio_rt_run is not reentrant"),
                           "round %d: %s", round, out);
    }
}
#endif

/* ------------------------------------------------------------------------------------------
 * A scheduler whose loop fails
 * ---------------------------------------------------------------------------------------- */

#if defined(__linux__) && defined(AFS_HAVE_URING)
#include "internal.h" /* afs__sys */
#include <pthread.h>

/* Waits of the ring on the armed thread fail for good (-EBADFD: no transient condition). */
static atomic_int  fail_armed;
static pthread_t   fail_thread;
static const char *fail_backend; /* the victim's scheduler's */

static int failing_enter(struct io_uring *ring, unsigned wait_nr, struct __kernel_timespec *ts)
{
    if (wait_nr > 0 && atomic_load(&fail_armed) && pthread_equal(pthread_self(), fail_thread))
        return -EBADFD;
    return afs__uring_enter_real(ring, wait_nr, ts);
}

static int victim(struct corio_task *t, void *arg)
{
    (void)arg;
    fail_backend = afs_ctx_backend(corio_sched_ctx(corio_task_sched(t)));
    fail_thread = pthread_self();
    atomic_store(&fail_armed, 1);
    corio_sleep(t, 20 * MS); /* the scheduler's wait fails */
    return 7;
}

static void failing_root(struct corio_task *t, void *arg)
{
    int *got = arg;
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, 1, victim, NULL, &f), 0);
    *got = corio_future_await(t, &f, NULL);
}

/* Scheduler 1's wait fails for good while scheduler 0 waits for its task's result: the run
 * ends with that error on every scheduler instead of waiting for ever. */
T_RT(a_scheduler_whose_wait_fails_ends_the_run_with_its_error)
{
    struct corio_rt *rt = rt_make(2);
    struct afs__syscalls saved = afs__sys;
    afs__sys.uring_enter = failing_enter;
    int got = 12345;
    atomic_store(&fail_armed, 0);
    int rc = corio_rt_run(rt, failing_root, &got);
    atomic_store(&fail_armed, 0);
    afs__sys = saved;
    corio_rt_free(rt);
    if (strcmp(fail_backend, "io_uring") != 0) {
        cr_assert_eq(rc, 0); /* no ring: the task ran */
        cr_assert_eq(got, 7);
        return;
    }
    cr_assert_eq(rc, -EBADFD, "corio_rt_run: %s", afs_strerror(rc));
}
#endif
