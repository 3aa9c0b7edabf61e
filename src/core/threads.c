/* The portable thread pool, and the "threads" backend that sends every op to it.
 * Bounded: at most max_threads workers, started only when work is waiting and no worker is
 * idle. Workers run whole ops (afs__op_run_sync) and hand them back to the owner thread
 * through a locked list and the context's waker; callbacks never run on a worker. */
#include "internal.h"

#include <stdlib.h>

enum { POOL_TODO = 1, POOL_RUNNING, POOL_FINISHED };

struct afs__pool {
    struct afs_ctx  *ctx;
    afs__mutex       mu;
    afs__cond        cv;
    struct afs__list todo;     /* under mu */
    struct afs__list finished; /* under mu */
    unsigned         max, nthreads, idle;
    bool             stop;
    afs__thread      threads[];
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
    struct afs__pool *p = arg;
#ifndef _WIN32
    afs__sys_block_sigpipe(); /* its pipe writes are -EPIPE, never a signal */
#endif
    afs__mutex_lock(&p->mu);
    for (;;) {
        while (!p->todo.len && !p->stop) {
            p->idle++;
            afs__cond_wait(&p->cv, &p->mu);
            p->idle--;
        }
        if (!p->todo.len)
            break;
        struct afs_op *op = afs__list_pop(&p->todo);
        *pool_state(op) = POOL_RUNNING;
        afs__mutex_unlock(&p->mu);

        ssize_t res = afs__op_run_sync(op);

        afs__mutex_lock(&p->mu);
        op->result = res;
        *pool_state(op) = POOL_FINISHED;
        afs__list_push(&p->finished, op);
        afs__waker_signal(&p->ctx->waker);
    }
    afs__mutex_unlock(&p->mu);
}

int afs__pool_new(struct afs_ctx *ctx, unsigned max_threads, struct afs__pool **out)
{
    if (max_threads == 0)
        max_threads = 1;
    struct afs__pool *p = afs__sys.calloc(1, sizeof *p + max_threads * sizeof p->threads[0]);
    if (!p)
        return -ENOMEM;
    p->ctx = ctx;
    p->max = max_threads;
    afs__mutex_init(&p->mu);
    afs__cond_init(&p->cv);
    *out = p;
    return 0;
}

void afs__pool_free(struct afs__pool *p)
{
    afs__mutex_lock(&p->mu);
    AFS_CHECK(!p->todo.len && !p->finished.len, "thread pool freed with ops in flight");
    p->stop = true;
    afs__cond_broadcast(&p->cv);
    afs__mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        afs__thread_join(p->threads[i]);
    afs__cond_destroy(&p->cv);
    afs__mutex_destroy(&p->mu);
    free(p);
}

void afs__pool_submit(struct afs__pool *p, struct afs_op *op)
{
    int err = 0;
    *pool_cancelled(op) = 0;
    afs__mutex_lock(&p->mu);
    *pool_state(op) = POOL_TODO;
    afs__list_push(&p->todo, op);
    /* Start a worker when there is more work than idle workers to take it. A failed start
     * is not an error while at least one worker runs: the queue just drains slower. */
    if (p->todo.len > p->idle && p->nthreads < p->max) {
        err = afs__thread_start(&p->threads[p->nthreads], worker, p);
        if (err == 0)
            p->nthreads++;
    }
    afs__cond_signal(&p->cv);
    bool stuck = p->nthreads == 0;
    if (stuck)
        afs__list_remove(&p->todo, op);
    afs__mutex_unlock(&p->mu);
    if (stuck)
        afs__op_finished(p->ctx, op, err < 0 ? err : -EAGAIN);
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
         * did: the buffer is settled before the callback and never written after it. Meta
         * ops keep their result (an fd that was opened must reach the caller). */
        struct afs__op *o = afs__op(op);
        bool cancelled = *pool_cancelled(op) && !afs__is_meta(o);
        afs__op_finished(p->ctx, op, cancelled ? -ECANCELED : op->result);
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
