/* How tasks wait and are woken, besides the run loop: queue waits (what the primitives wait
 * on), file ops inside tasks (the asyncfs waiter), and the remote inbox (everything that
 * reaches the scheduler from other threads). Each wait is a wait record whose cancel is
 * supplied here. */
#include "corio_int.h"

/* ------------------------------------------------------------------------------------------
 * Queue waits: the cancel takes the task off its queue
 * ---------------------------------------------------------------------------------------- */

void corio__waitq_cancel(struct corio_task *t, struct corio__wait *w, int err)
{
    (void)w;
    corio__wake(t, err);
}

int corio__wait_on(struct corio_task *t, struct corio__waitq *q)
{
    corio__waitq_push(q, t);
    struct corio__wait w = {.cancel = corio__waitq_cancel, .what = q, .until = INT64_MAX};
    return corio__suspend(t, &w);
}

void corio__wait_on_hard(struct corio_task *t, struct corio__waitq *q)
{
    corio__waitq_push(q, t);
    struct corio__wait w = CORIO__WAIT_FOR(q);
    corio__suspend(t, &w);
}

/* The primitives of one scheduler (mutex, wait group, queue, generator, job, singleflight)
 * wake their tasks on its thread only: a task of another scheduler, or a wake-up from a
 * thread that runs no scheduler while t's runs, would race with that scheduler's queues. */
bool corio__off_thread(const struct corio_task *t)
{
    const struct corio_sched *cur = corio__thread_sched();
    return cur != t->sched && (cur || t->sched->running);
}

void corio__wake_check(const struct corio_task *t)
{
    if (corio__off_thread(t))
        afs__panic("corio", "a task of one scheduler is woken from another thread (a mutex, "
                            "wait group, queue, generator or job serves one scheduler's "
                            "tasks; between schedulers use channels or futures)");
}

void corio__wake(struct corio_task *t, int err)
{
    corio__wake_check(t);
    if (t->q_on)
        corio__waitq_remove(t->q_on, t);
    corio__ready(t, err);
}

void corio__wake_all(struct corio__waitq *q)
{
    struct corio_task *t;
    while ((t = corio__waitq_pop(q))) {
        corio__wake_check(t);
        corio__ready(t, 0);
    }
}

/* ------------------------------------------------------------------------------------------
 * The asyncfs waiter: a blocking file call in a task (afs_pread...) suspends the task on a
 * wait record naming its op; the op's completion resumes it, and cancellation or a deadline
 * cancels the op in the kernel (the task resumes from the op's callback, once the kernel is
 * done with its buffer)
 * ---------------------------------------------------------------------------------------- */

static void *waiter_current(struct afs_waiter *aw)
{
    struct corio_sched *s =
        (struct corio_sched *)(void *)((char *)aw - offsetof(struct corio_sched, waiter));
    return s->current;
}

static void file_cancel(struct corio_task *t, struct corio__wait *w, int err)
{
    (void)t;
    w->timed_out = err == -ETIMEDOUT;
    afs__op(w->what)->timed_out = w->timed_out;
    afs_cancel(w->what);
}

/* Ops queued in this CPU phase from which a suspending task hands them to the backend
 * (afs__ctx_stage): the submission at the end of a phase of thousands of tasks would read
 * each op back from memory, while the last few hundred tasks' lines are still in the core's
 * caches. With fewer ops queued the submission finds them there, and an op cancelled in the
 * phase that queued it is still taken back before the kernel sees it. */
#define STAGE_MIN 256

static int waiter_suspend(struct afs_waiter *aw, void *co, struct afs_op *op)
{
    (void)aw;
    struct corio_task *t = co;
    t->sched->stats.ios++;
    int64_t deadline;
    int err = corio__interrupted_at(t, &deadline);
    if (err) {
        /* Still queued: cancelling takes it back; its callback comes with the next wait. */
        afs__op(op)->timed_out = err == -ETIMEDOUT;
        afs_cancel(op);
    } else if (t->sched->ctx->queued.len >= STAGE_MIN) {
        afs__ctx_stage(t->sched->ctx);
    }
    struct corio__wait w = {.cancel = file_cancel, .what = op, .until = INT64_MAX,
                            .outside = true};
    corio__suspend_by(t, &w, deadline);
    if (op->result == -ECANCELED && (w.timed_out || err == -ETIMEDOUT))
        return -ETIMEDOUT;
    return 0;
}

static void waiter_resume(struct afs_waiter *aw, void *co, struct afs_op *op)
{
    (void)aw;
    (void)op; /* not compared with t->w->what: that would bring the record's line back */
    corio__ready_outside(co);
}

static int waiter_check(struct afs_waiter *aw, void *co)
{
    (void)aw;
    int64_t deadline;
    return corio__interrupted_at(co, &deadline);
}

static struct afs_op *waiter_op_slot(struct afs_waiter *aw, void *co)
{
    (void)aw;
    return &((struct corio_task *)co)->op;
}

void corio__waiter_init(struct corio_sched *s)
{
    s->waiter.ctx = s->ctx;
    s->waiter.current = waiter_current;
    s->waiter.suspend = waiter_suspend;
    s->waiter.resume = waiter_resume;
    s->waiter.op_slot = waiter_op_slot;
    s->waiter.check = waiter_check;
}

/* ------------------------------------------------------------------------------------------
 * The remote inbox: the one way in from other threads (dispatcher answers, external
 * futures). A message waits under the inbox's lock until the resume phase delivers it on the
 * scheduler's thread
 * ---------------------------------------------------------------------------------------- */

/* Wakes s after a post that made its inbox non-empty (a post to a non-empty inbox needs
 * none: s has not drained it yet, and the wake-up that made it non-empty is pending or was
 * followed by a drain; nor does a post to a scheduler that is awake: running its phases or
 * polling its inbox, it looks at `has` before it sleeps, see corio__sched_loop). From a
 * running scheduler the wake-up is a message on its own ring where it can
 * (afs__ctx_wake_from). It goes at once when tasks may still run in this CPU phase (the
 * poster is a task, or tasks are ready): a long phase must not hold back a sleeping
 * scheduler's work. Only a post at the end of a phase (from the loop, nothing ready) waits
 * for the submission that ends it, and shares its system call. */
static void inbox_wake(struct corio_sched *s, bool urgent)
{
    struct corio_sched *me = corio__thread_sched();
    if (me && me->running && me != s) {
        bool now = urgent || me->current || me->ready.list.first;
        if (afs__ctx_wake_from(s->ctx, me->ctx, now)) {
            me->wakes_staged = true;
            me->rts.wakes_ring++;
        } else {
            me->rts.wakes_waker++;
        }
        return;
    }
    afs_ctx_wake(s->ctx);
}

/* Under the lock the message goes in; the wake-up, if s sleeps, comes after the unlock.
 * Once the lock is released the message may be delivered, and what it delivers may let the
 * run end and the scheduler be freed (corio_run): a poster that made the inbox non-empty,
 * and so may have to wake s, is counted in `waking` (under the lock) until it is done with
 * s, and corio_sched_free waits for the count to fall to 0. */
static void inbox_post(struct corio_sched *s, struct afs_list *q, struct afs_list_node *n,
                       bool spawn)
{
    struct corio__inbox *in = &s->inbox;
    size_t queued = 1;
    afs__mutex_lock(&in->mu);
    afs_list_push_back(q, n);
    if (spawn) /* sequentially consistent: a scheduler about to sleep looks (sched.c) */
        queued = atomic_fetch_add_explicit(&in->nspawns, 1, memory_order_seq_cst);
    bool was = atomic_exchange_explicit(&in->has, true, memory_order_seq_cst);
    if (!was)
        atomic_fetch_add_explicit(&in->waking, 1, memory_order_relaxed);
    afs__mutex_unlock(&in->mu);
    bool awake = true;
    if (!was) {
        awake = atomic_load_explicit(&s->awake, memory_order_seq_cst);
        if (!awake)
            inbox_wake(s, false);
        atomic_fetch_sub_explicit(&in->waking, 1, memory_order_release); /* s no more */
    } else if (queued == 0) {
        awake = atomic_load_explicit(&s->awake, memory_order_seq_cst);
    }
    /* The first spawn queued on a scheduler that is awake, and so was not woken: should a
     * task hold its thread, the spawn would wait there while others sleep. (A post is made by
     * a task of the same run, so s outlives it.) */
    if (queued == 0 && awake && s->rt)
        corio__rt_wake_thief(s);
}

void corio__sched_wake(struct corio_sched *s)
{
    atomic_fetch_add_explicit(&s->inbox.waking, 1, memory_order_relaxed);
    inbox_wake(s, true); /* the caller may be about to run work that holds its thread */
    atomic_fetch_sub_explicit(&s->inbox.waking, 1, memory_order_release);
}

void corio__inbox_post(struct corio_sched *s, struct corio__msg *m)
{
    inbox_post(s, &s->inbox.msgs, &m->node, false);
}

void corio__inbox_post_spawn(struct corio_sched *s, struct afs_list_node *n)
{
    inbox_post(s, &s->inbox.spawns, n, true);
}

void corio__inbox_wait_posters(struct corio_sched *s)
{
    /* A poster counted itself under the lock: after it, every one that will is counted. */
    afs__mutex_lock(&s->inbox.mu);
    afs__mutex_unlock(&s->inbox.mu);
    while (atomic_load_explicit(&s->inbox.waking, memory_order_acquire))
        afs__cpu_relax();
}

bool corio__inbox_holds(struct corio_sched *s, const struct corio__msg *m)
{
    bool found = false;
    /* A post made before the caller's synchronisation with the poster has set `has`. */
    if (!atomic_load_explicit(&s->inbox.has, memory_order_acquire))
        return false;
    afs__mutex_lock(&s->inbox.mu);
    for (const struct afs_list_node *n = s->inbox.msgs.first; n && !found; n = n->next)
        found = n == &m->node;
    afs__mutex_unlock(&s->inbox.mu);
    return found;
}

bool corio__inbox_claim(struct corio_sched *s, unsigned char *flag)
{
    afs__mutex_lock(&s->inbox.mu);
    bool first = !*flag;
    *flag = 1;
    afs__mutex_unlock(&s->inbox.mu);
    return first;
}

void corio__inbox_deliver(struct corio_sched *s)
{
    struct corio__inbox *in = &s->inbox;
    if (!atomic_exchange_explicit(&in->has, false, memory_order_acq_rel))
        return;
    afs__mutex_lock(&in->mu);
    struct afs_list got = in->msgs, spawns = in->spawns;
    in->msgs.first = in->msgs.last = NULL;
    in->spawns.first = in->spawns.last = NULL;
    size_t queued = atomic_load_explicit(&in->nspawns, memory_order_relaxed), keep = 0;
    if (queued > 1 && s->rt && corio_rt_schedulers(s->rt) > 1) {
        /* Half of the queued spawns start now, from the front; the back half stays queued,
         * stealable, for the next resume phase: a task started here can no more move, and
         * the first ones may hold this thread for long (a woken scheduler takes the rest). */
        keep = queued / 2;
        for (size_t i = 0; i < keep; i++) {
            struct afs_list_node *b = spawns.last;
            afs_list_remove(&spawns, b);
            afs_list_push_front(&in->spawns, b);
        }
        atomic_store_explicit(&in->has, true, memory_order_seq_cst);
    }
    atomic_store_explicit(&in->nspawns, keep, memory_order_seq_cst);
    afs__mutex_unlock(&in->mu);
    struct afs_list_node *n;
    while ((n = afs_list_pop_front(&got))) {
        struct corio__msg *m = AFS_LIST_ITEM(n, struct corio__msg, node);
        s->rts.messages++;
        m->deliver(m);
    }
    while ((n = afs_list_pop_front(&spawns)))
        corio__rt_start(s, n);
}
