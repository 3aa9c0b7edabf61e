/* Blocking functions on real threads (asyncigo's Go): each scheduler has a small pool of
 * threads, started on first use and joined when the scheduler is freed. A job's result comes
 * back as an external future, through the scheduler's inbox, so the waiting task suspends
 * like any other and the scheduler's thread never blocks.
 *
 * A job may be abandoned by its waiter (the network code's name resolution under a deadline):
 * then the thread that runs it frees it when the function returns, and nothing reaches the
 * scheduler. */
#include "corio_int.h"

#include <stdlib.h>
#include <string.h>

#define POOL_MAX 32

struct corio__blocking {
    afs__mutex      mu;
    afs__cond       cv;
    struct afs_list jobs;     /* waiting for a thread */
    struct afs_list running;  /* on a thread */
    unsigned        queued;   /* on jobs */
    unsigned        threads, idle;
    bool            stop;
    afs__thread     tid[POOL_MAX];
};

/* The job's private words: its place on the pool's list, and what the thread needs. */
struct job_priv {
    struct afs_list_node node;
    void (*on_abandoned)(struct corio_blocking *b); /* frees an abandoned job */
    atomic_int           stop;                      /* corio_blocking_stop_requested() */
    unsigned char        state;                     /* under the pool's lock */
};
enum { JOB_QUEUED = 1, JOB_RUNNING, JOB_FINISHED, JOB_ABANDONED };

_Static_assert(sizeof(struct job_priv) <= sizeof(((struct corio_blocking *)0)->private_),
               "a job's private part must fit");

static struct job_priv *priv(struct corio_blocking *b)
{
    return (struct job_priv *)(void *)b->private_;
}

static _Thread_local struct corio_blocking *running_job;

int corio_blocking_stop_requested(void)
{
    struct corio_blocking *b = running_job;
    return b ? atomic_load_explicit(&priv(b)->stop, memory_order_relaxed) : 0;
}

static void pool_thread(void *arg)
{
    struct corio__blocking *p = arg;
    afs__mutex_lock(&p->mu);
    for (;;) {
        struct afs_list_node *n = afs_list_pop_front(&p->jobs);
        p->queued -= n != NULL;
        if (!n) {
            if (p->stop)
                break;
            p->idle++;
            afs__cond_wait(&p->cv, &p->mu);
            p->idle--;
            continue;
        }
        struct job_priv *jp = AFS_LIST_ITEM(n, struct job_priv, node);
        struct corio_blocking *b =
            (struct corio_blocking *)(void *)((char *)jp - offsetof(struct corio_blocking,
                                                                     private_));
        jp->state = JOB_RUNNING;
        afs_list_push_back(&p->running, &jp->node);
        afs__mutex_unlock(&p->mu);
        running_job = b;
        int res = b->fn(b->arg);
        running_job = NULL;
        afs__mutex_lock(&p->mu);
        afs_list_remove(&p->running, &jp->node);
        if (jp->state == JOB_ABANDONED) {
            afs__mutex_unlock(&p->mu);
            b->result = res;
            jp->on_abandoned(b);
            afs__mutex_lock(&p->mu);
            continue;
        }
        jp->state = JOB_FINISHED;
        b->result = res;
        /* Under mu, so that corio_go finds the job on a list or its completion in the
         * inbox, never between the two. From here the waiter may free b once the future is
         * delivered. */
        corio_future_complete(&b->done, res, NULL);
    }
    afs__mutex_unlock(&p->mu);
}

static int pool_get(struct corio_sched *s, struct corio__blocking **out)
{
    if (!s->blocking) {
        struct corio__blocking *p = afs__sys.calloc(1, sizeof *p);
        if (!p)
            return -ENOMEM;
        afs__mutex_init(&p->mu);
        afs__cond_init(&p->cv);
        s->blocking = p;
    }
    *out = s->blocking;
    return 0;
}

void corio__blocking_free(struct corio_sched *s)
{
    struct corio__blocking *p = s->blocking;
    if (!p)
        return;
    afs__mutex_lock(&p->mu);
    p->stop = true;
    afs__cond_broadcast(&p->cv);
    afs__mutex_unlock(&p->mu);
    /* Abandoned jobs still running finish first (their functions cannot be interrupted). */
    for (unsigned i = 0; i < p->threads; i++)
        afs__thread_join(p->tid[i]);
    afs__cond_destroy(&p->cv);
    afs__mutex_destroy(&p->mu);
    free(p);
    s->blocking = NULL;
}

/* Is b a job whose result s has not taken yet: queued, running, or its completion still in
 * s's inbox? Found by address (b's own bytes may be anything: a job needs no initialising).
 * Called under p->mu, which a pool thread holds until the completion is posted. */
static bool in_flight(struct corio_sched *s, struct corio__blocking *p,
                      const struct corio_blocking *b)
{
    const struct afs_list *lists[] = {&p->jobs, &p->running};
    for (size_t i = 0; i < 2; i++)
        for (const struct afs_list_node *n = lists[i]->first; n; n = n->next)
            if (n == &((const struct job_priv *)(const void *)b->private_)->node)
                return true;
    return corio__inbox_holds(s, (const struct corio__msg *)(const void *)b->done.msg.private_);
}

int corio_go(struct corio_task *t, struct corio_blocking *b, corio_blocking_fn *fn, void *arg)
{
    corio__check_running(t, "corio_go");
    AFS_CHECK(b != NULL && fn != NULL, "NULL argument");
    struct corio_sched *s = t->sched;
    struct corio__blocking *p;
    int err = pool_get(s, &p);
    if (err == 0) {
        afs__mutex_lock(&p->mu);
        bool busy = in_flight(s, p, b);
        afs__mutex_unlock(&p->mu);
        if (busy)
            afs__panic("corio_go", "the job is still queued or running, or its result not "
                                   "taken yet (wait for it first)");
    }
    memset(b, 0, sizeof *b);
    corio_future_init_external(&b->done, s);
    b->fn = fn;
    b->arg = arg;
    atomic_init(&priv(b)->stop, 0);
    if (err < 0) {
        corio_future_complete(&b->done, err, NULL);
        return err;
    }
    struct job_priv *jp = priv(b);
    afs__mutex_lock(&p->mu);
    jp->state = JOB_QUEUED;
    afs_list_push_back(&p->jobs, &jp->node);
    p->queued++;
    /* A thread per job up to the cap; beyond it jobs wait for a free thread, in order. An
     * idle thread signalled for an earlier job may not have taken it yet: each job waiting
     * needs its own idle thread, or one more. */
    if (p->idle < p->queued && p->threads < POOL_MAX && !p->stop) {
        err = afs__thread_start(&p->tid[p->threads], pool_thread, p);
        if (err == 0)
            p->threads++;
        else if (p->threads == 0) {
            afs_list_remove(&p->jobs, &jp->node);
            p->queued--;
            afs__mutex_unlock(&p->mu);
            corio_future_complete(&b->done, err, NULL);
            return err;
        }
    } else {
        afs__cond_signal(&p->cv);
    }
    afs__mutex_unlock(&p->mu);
    t->sched->stats.ios++;
    return 0;
}

/* Tells the job's function to stop (corio_blocking_stop_requested) and takes it off the
 * queue if no thread started it: true when it was taken off. */
static bool job_stop(struct corio_sched *s, struct corio_blocking *b)
{
    struct corio__blocking *p = s->blocking;
    atomic_store_explicit(&priv(b)->stop, 1, memory_order_relaxed);
    bool removed = false;
    afs__mutex_lock(&p->mu);
    if (priv(b)->state == JOB_QUEUED) {
        afs_list_remove(&p->jobs, &priv(b)->node);
        p->queued--;
        priv(b)->state = JOB_FINISHED;
        removed = true;
    }
    afs__mutex_unlock(&p->mu);
    return removed;
}

int corio_blocking_wait(struct corio_task *t, struct corio_blocking *b)
{
    corio__check_running(t, "corio_blocking_wait");
    AFS_CHECK(b != NULL, "job is NULL");
    int res = corio_future_await(t, &b->done, NULL);
    if (corio_future_done(&b->done))
        return res;
    /* Interrupted: the function may still use arg, so wait for it (shielded), asking it to
     * stop; a job no thread took yet never runs. */
    if (job_stop(t->sched, b))
        corio_future_complete(&b->done, res, NULL);
    corio_future_await_shielded(t, &b->done, NULL);
    return res;
}

int corio_run_blocking(struct corio_task *t, corio_blocking_fn *fn, void *arg)
{
    struct corio_blocking b;
    int err = corio_go(t, &b, fn, arg);
    if (err < 0)
        return err;
    return corio_blocking_wait(t, &b);
}

void corio__blocking_abandon(struct corio_task *t, struct corio_blocking *b,
                            void (*release)(struct corio_blocking *b))
{
    struct corio__blocking *p = t->sched->blocking;
    atomic_store_explicit(&priv(b)->stop, 1, memory_order_relaxed);
    afs__mutex_lock(&p->mu);
    unsigned char st = priv(b)->state;
    if (st == JOB_QUEUED) {
        afs_list_remove(&p->jobs, &priv(b)->node);
        p->queued--;
        priv(b)->state = JOB_FINISHED;
    } else if (st == JOB_RUNNING) {
        priv(b)->on_abandoned = release;
        priv(b)->state = JOB_ABANDONED;
    }
    afs__mutex_unlock(&p->mu);
    if (st == JOB_RUNNING)
        return; /* the thread frees it */
    if (st == JOB_QUEUED) {
        release(b);
        return;
    }
    /* Finished: its completion may be on its way through the inbox; take it, then free. */
    corio_future_await_shielded(t, &b->done, NULL);
    release(b);
}
