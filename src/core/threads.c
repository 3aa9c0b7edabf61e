/* The portable thread pool, and the "threads" backend that sends every op to it.
 * Up to `base` workers start as ops wait and no worker is idle. Past that (up to `max`) the
 * pool grows only while workers block: a watcher thread, started the first time ops wait
 * behind `base` busy workers, looks every POOL_BLOCKED_NS while they wait and starts one
 * worker for each worker that has been in its op that long, so ops that block (a device read
 * that misses the cache, a FIFO, a lock) do not hold back the ones queued behind them, while
 * ops that return at once never make more than `base` threads. A worker beyond `base` that
 * finds nothing to do for afs__pool_idle_ns ends. Workers run whole ops (afs__op_run_sync)
 * and hand them back to the owner thread through a locked list and the context's waker;
 * callbacks never run on a worker. */
#include "internal.h"

#include <stdlib.h>

enum { POOL_TODO = 1, POOL_RUNNING, POOL_FINISHED };

/* A worker this long in one op counts as blocked. */
#define POOL_BLOCKED_NS 100000

int64_t afs__pool_idle_ns = 5000000000; /* 5 s */

enum { SLOT_FREE, SLOT_LIVE, SLOT_ENDED, SLOT_JOINING };

struct pool_slot {
    struct afs__pool *pool;
    afs__thread       th;
    int64_t           since; /* under mu: when its op started, 0 while it has none */
    bool              made_up; /* under mu: a worker was started for it in this op */
    int               state; /* under mu: SLOT_* */
};

struct afs__pool {
    struct afs_ctx  *ctx;
    afs__mutex       mu;
    afs__cond        cv;       /* workers wait for ops */
    afs__cond        watch_cv; /* the watcher waits for ops behind blocked workers */
    struct afs__list todo;     /* under mu */
    struct afs__list finished; /* under mu */
    unsigned         base, max, nthreads, idle, ended;
    bool             stop;
    bool             watching;       /* the watcher thread was started */
    bool             watcher_asleep; /* it waits without a time limit */
    afs__thread      watcher;
    struct pool_slot slots[];
};

/* Pool ops do not use the backend words; the first one says where the op is, the second
 * whether afs_cancel() asked for it while a worker ran it (owner thread only). */
static uint64_t *pool_state(struct afs_op *op)
{
    return &afs__op(op)->be[0];
}

static uint64_t *pool_cancelled(struct afs_op *op)
{
    return &afs__op(op)->be[1];
}

static void worker(void *arg)
{
    struct pool_slot *me = arg;
    struct afs__pool *p = me->pool;
#ifndef _WIN32
    afs__sys_block_sigpipe(); /* its pipe writes are -EPIPE, never a signal */
#endif
    afs__mutex_lock(&p->mu);
    p->idle--; /* counted idle from its start, so that no second thread starts for its op */
    for (;;) {
        while (!p->todo.len && !p->stop) {
            bool extra = p->nthreads > p->base, woken = true;
            p->idle++;
            if (extra)
                woken = afs__cond_timedwait(&p->cv, &p->mu, afs__pool_idle_ns);
            else
                afs__cond_wait(&p->cv, &p->mu);
            p->idle--;
            if (!woken && !p->todo.len && p->nthreads > p->base)
                goto end; /* idle too long, and not needed for the base size */
        }
        if (!p->todo.len)
            break;
        struct afs_op *op = afs__list_pop(&p->todo);
        *pool_state(op) = POOL_RUNNING;
        me->since = afs__now_ns();
        afs__mutex_unlock(&p->mu);

        ssize_t res = afs__op_run_sync(op);

        afs__mutex_lock(&p->mu);
        me->since = 0;
        me->made_up = false;
        op->result = res;
        *pool_state(op) = POOL_FINISHED;
        afs__list_push(&p->finished, op);
        afs__waker_signal(&p->ctx->waker);
    }
end:
    me->state = SLOT_ENDED;
    p->nthreads--;
    p->ended++;
    afs__cond_signal(&p->watch_cv); /* the watcher joins it */
    afs__mutex_unlock(&p->mu);
}

/* Under mu: starts a worker in a free slot. 0 or -errno. */
static int start_worker(struct afs__pool *p)
{
    unsigned i = 0;
    while (i < p->max && p->slots[i].state != SLOT_FREE)
        i++;
    if (i == p->max)
        return -EAGAIN; /* the free slots hold ended workers the watcher has not joined yet */
    struct pool_slot *sl = &p->slots[i];
    sl->pool = p;
    sl->since = 0;
    sl->made_up = false;
    sl->state = SLOT_LIVE;
    int err = afs__thread_start(&sl->th, worker, sl);
    if (err < 0) {
        sl->state = SLOT_FREE;
        return err;
    }
    p->nthreads++;
    p->idle++;
    return 0;
}

/* Under mu (released while joining): joins the workers that ended. */
static void join_ended(struct afs__pool *p)
{
    for (unsigned i = 0; p->ended && i < p->max; i++) {
        struct pool_slot *sl = &p->slots[i];
        if (sl->state != SLOT_ENDED)
            continue;
        sl->state = SLOT_JOINING;
        p->ended--;
        afs__mutex_unlock(&p->mu);
        afs__thread_join(sl->th);
        afs__mutex_lock(&p->mu);
        sl->state = SLOT_FREE;
    }
}

/* Under mu: one worker more for each worker blocked in its op, for the ops that wait. A
 * blocked worker is made up for once per op, not again at each look while it stays blocked. */
static void grow(struct afs__pool *p)
{
    if (p->todo.len <= p->idle)
        return;
    unsigned want = p->todo.len - p->idle;
    int64_t now = afs__now_ns();
    for (unsigned i = 0; i < p->max && want && p->nthreads < p->max; i++) {
        struct pool_slot *sl = &p->slots[i];
        if (sl->state != SLOT_LIVE || !sl->since || sl->made_up ||
            now - sl->since < POOL_BLOCKED_NS)
            continue;
        if (start_worker(p) < 0)
            break;
        sl->made_up = true;
        want--;
        afs__cond_signal(&p->cv);
    }
}

static void watcher(void *arg)
{
    struct afs__pool *p = arg;
    afs__mutex_lock(&p->mu);
    while (!p->stop) {
        join_ended(p);
        if (p->stop)
            break;
        if (p->todo.len > p->idle && p->nthreads < p->max) {
            (void)afs__cond_timedwait(&p->watch_cv, &p->mu, POOL_BLOCKED_NS);
            if (!p->stop)
                grow(p);
        } else {
            p->watcher_asleep = true;
            afs__cond_wait(&p->watch_cv, &p->mu);
            p->watcher_asleep = false;
        }
    }
    afs__mutex_unlock(&p->mu);
}

int afs__pool_new(struct afs_ctx *ctx, unsigned base, unsigned max, struct afs__pool **out)
{
    if (base == 0)
        base = 1;
    if (max < base)
        max = base;
    struct afs__pool *p = afs__sys.calloc(1, sizeof *p + max * sizeof p->slots[0]);
    if (!p)
        return -ENOMEM;
    p->ctx = ctx;
    p->base = base;
    p->max = max;
    afs__mutex_init(&p->mu);
    afs__cond_init(&p->cv);
    afs__cond_init(&p->watch_cv);
    *out = p;
    return 0;
}

void afs__pool_free(struct afs__pool *p)
{
    afs__mutex_lock(&p->mu);
    AFS_CHECK(!p->todo.len && !p->finished.len, "thread pool freed with ops in flight");
    p->stop = true;
    afs__cond_broadcast(&p->cv);
    afs__cond_signal(&p->watch_cv);
    afs__mutex_unlock(&p->mu);
    if (p->watching)
        afs__thread_join(p->watcher);
    /* With the watcher gone and stop set no worker starts or is joined elsewhere: every slot
     * not free holds a thread to join. Its state is read under mu (a worker ending now
     * writes it there). */
    for (unsigned i = 0; i < p->max; i++) {
        afs__mutex_lock(&p->mu);
        bool live = p->slots[i].state != SLOT_FREE;
        afs__mutex_unlock(&p->mu);
        if (live)
            afs__thread_join(p->slots[i].th);
    }
    afs__cond_destroy(&p->watch_cv);
    afs__cond_destroy(&p->cv);
    afs__mutex_destroy(&p->mu);
    free(p);
}

unsigned afs__pool_threads(struct afs__pool *p)
{
    afs__mutex_lock(&p->mu);
    unsigned n = p->nthreads;
    afs__mutex_unlock(&p->mu);
    return n;
}

void afs__pool_submit(struct afs__pool *p, struct afs_op *op)
{
    *pool_cancelled(op) = 0;
    afs__mutex_lock(&p->mu);
    *pool_state(op) = POOL_TODO;
    afs__list_push(&p->todo, op);
    /* Start a worker when there is more work than idle workers to take it. A failed start
     * is not an error while at least one worker runs: the queue just drains slower. Past
     * the base size the watcher decides, from how long the workers have been blocked. */
    if (p->todo.len > p->idle) {
        if (p->nthreads < p->base) {
            (void)start_worker(p); /* none started and none running: see below */
        } else if (p->nthreads < p->max) {
            if (!p->watching)
                p->watching = afs__thread_start(&p->watcher, watcher, p) == 0;
            else if (p->watcher_asleep)
                afs__cond_signal(&p->watch_cv);
        }
    }
    afs__cond_signal(&p->cv);
    bool stuck = p->nthreads == 0;
    if (stuck) {
        afs__list_remove(&p->todo, op);
        *pool_state(op) = POOL_FINISHED;
    }
    afs__mutex_unlock(&p->mu);
    /* No worker, and none could be started (the process may make no more threads, or has no
     * memory for one): the op runs here, on the caller's thread, as the sync backend runs
     * it, rather than fail with the transient error of the thread's start. */
    if (stuck)
        afs__op_finished(p->ctx, op, afs__op_run_sync(op));
}

bool afs__pool_cancel(struct afs__pool *p, struct afs_op *op)
{
    bool removed = false;
    afs__mutex_lock(&p->mu);
    if (*pool_state(op) == POOL_TODO) {
        afs__list_remove(&p->todo, op);
        removed = true;
    }
    afs__mutex_unlock(&p->mu);
    if (!removed)
        *pool_cancelled(op) = 1;
    return removed;
}

void afs__pool_reap(struct afs__pool *p)
{
    struct afs__list got = {0};
    afs__mutex_lock(&p->mu);
    afs__list_append(&got, &p->finished);
    afs__mutex_unlock(&p->mu);
    struct afs_op *op;
    while ((op = afs__list_pop(&got))) {
        /* A worker cannot be stopped in the middle of a system call. An op cancelled while
         * it ran completes with -ECANCELED once the worker has returned, whatever the call
         * did: the buffer is settled before the callback and never written after it. Some
         * results stand all the same: a meta op's and an accepted socket (an fd that was
         * opened must reach the caller), a connect or shutdown that was made (as
         * afs__op_step() keeps them: a second connect would fail), an op that moves no
         * data (an ftruncate that ran must not read as one that did not), and the bytes a
         * transfer of a file without offsets moved (they have left the pipe, as
         * afs__op_step() reports them too). */
        struct afs__op *o = afs__op(op);
        ssize_t res = op->result;
        if (*pool_cancelled(op)) {
            bool keep = afs__is_meta(o) || afs__is_ctl(o) ||
                        (res >= 0 && (o->code == AFS__ACCEPT || o->code == AFS__CONNECT ||
                                      o->code == AFS__SHUTDOWN)) ||
                        (res > 0 && o->file && o->file->seq);
            if (!keep)
                res = -ECANCELED;
        }
        afs__op_finished(p->ctx, op, res);
    }
}

/* ------------------------------------------------------------------------------------------
 * The "threads" backend: every op goes to the pool; waiting is waiting on the waker.
 * ---------------------------------------------------------------------------------------- */

static int threads_init(struct afs_ctx *ctx, char *why, size_t why_len)
{
    return 0;
}

static void threads_fini(struct afs_ctx *ctx)
{
}

static bool threads_accepts(struct afs_ctx *ctx, struct afs_op *op)
{
    return false;
}

static int threads_prep(struct afs_ctx *ctx, struct afs_op *op)
{
    return -ENOTSUP; /* never called: accepts() sends everything to the pool */
}

const struct afs__backend afs__backend_threads = {
    .name = "threads",
    .id = AFS_BACKEND_THREADS,
    .init = threads_init,
    .fini = threads_fini,
    .accepts = threads_accepts,
    .prep = threads_prep,
    .enter = afs__enter_waker,
    .cancel = NULL,
};
