/* Generic batched I/O: corio_io() queues a request and suspends the task on it; the I/O
 * phase hands every pending request to the dispatcher in one call; answers come back from
 * any thread through the remote inbox. */
#include "corio_int.h"

#include <stdlib.h>

struct corio__req {
    struct corio_task *task;
    void              *input, *output;
    struct corio__msg  msg;     /* on pending or retried, then in the inbox with its answer */
    struct afs_list   *on;      /* pending or retried; NULL while the dispatcher has it */
    atomic_bool        answered;
    bool               retry;
};

struct corio_batch {
    struct corio_sched *sched;
    struct corio_batch *next;  /* all batches of the run, freed when it ends */
    size_t              n;
    atomic_size_t       left;  /* unanswered */
    struct corio__req  *reqs[];
};

#define REQ(n) AFS_LIST_ITEM(n, struct corio__req, msg.node)

static void queue_req(struct afs_list *l, struct corio__req *r)
{
    afs_list_push_back(l, &r->msg.node);
    r->on = l;
}

/* Not yet dispatched: take it back. A request the dispatcher has is waited for (it owns
 * the request until it answers). */
static void req_cancel(struct corio_task *t, struct corio__wait *w, int err)
{
    struct corio__req *r = w->what;
    if (!r->on)
        return;
    afs_list_remove(r->on, &r->msg.node);
    r->on = NULL;
    r->output = NULL;
    corio__ready(t, err);
}

void *corio_io(struct corio_task *t, void *input)
{
    corio__check_running(t, "corio_io");
    struct corio_sched *s = t->sched;
    AFS_CHECK(s->cfg.dispatch != NULL, "corio_io needs a dispatcher in corio_config");
    if (corio__interrupted(t))
        return NULL;
    struct corio__req req = {.task = t, .input = input};
    queue_req(&s->disp.pending, &req);
    s->stats.ios++;
    struct corio__wait w = {.cancel = req_cancel, .what = &req, .until = INT64_MAX,
                            .outside = true};
    corio__suspend(t, &w);
    return req.output;
}

size_t corio_batch_len(const struct corio_batch *b)
{
    AFS_CHECK(b != NULL, "batch is NULL");
    return b->n;
}

void *corio_batch_input(const struct corio_batch *b, size_t i)
{
    AFS_CHECK(b != NULL, "batch is NULL");
    AFS_CHECK(i < b->n, "index out of range");
    return b->reqs[i]->input;
}

/* The resume phase, in the order the answers came: an answer makes its task ready; a retry
 * goes back before the pending requests, for the next dispatch. */
static void req_deliver(struct corio__msg *m)
{
    struct corio__req *r = AFS_LIST_ITEM(m, struct corio__req, msg);
    struct corio_sched *s = r->task->sched;
    s->disp.inflight--;
    if (r->retry)
        queue_req(&s->disp.retried, r);
    else
        corio__ready(r->task, 0);
}

static void batch_answer(struct corio_batch *b, size_t i, void *output, bool retry)
{
    AFS_CHECK(i < b->n, "index out of range");
    struct corio_sched *s = b->sched;
    struct corio__req *r = b->reqs[i];
    if (atomic_exchange_explicit(&r->answered, true, memory_order_relaxed))
        afs__panic("corio_batch", "request answered twice");
    r->output = output;
    r->retry = retry;
    r->msg.deliver = req_deliver;
    /* From here the dispatch may free b (all answered during its call); r lives until its
     * message is delivered. */
    atomic_fetch_sub_explicit(&b->left, 1, memory_order_acq_rel);
    corio__inbox_post(s, &r->msg);
}

void corio_batch_respond(struct corio_batch *b, size_t i, void *output)
{
    batch_answer(b, i, output, false);
}

void corio_batch_retry(struct corio_batch *b, size_t i)
{
    batch_answer(b, i, NULL, true);
}

void corio__dispatch(struct corio_sched *s)
{
    struct corio__dispatcher *d = &s->disp;
    for (struct afs_list_node *n = d->retried.first; n; n = n->next)
        REQ(n)->on = &d->pending;
    afs_list_splice(&d->pending, &d->retried, true);
    if (!d->pending.first || d->inflight >= s->cfg.io_limit)
        return;
    size_t n = 0;
    for (struct afs_list_node *p = d->pending.first; p && d->inflight + n < s->cfg.io_limit;
         p = p->next)
        n++;
    struct corio_batch *b = afs__sys.malloc(sizeof *b + n * sizeof b->reqs[0]);
    AFS_CHECK(b != NULL, "out of memory for a batch");
    b->sched = s;
    b->n = n;
    atomic_init(&b->left, n);
    for (size_t i = 0; i < n; i++) {
        struct corio__req *r = REQ(afs_list_pop_front(&d->pending));
        r->on = NULL;
        atomic_store_explicit(&r->answered, false, memory_order_relaxed);
        b->reqs[i] = r;
    }
    d->inflight += n;
    s->cfg.dispatch(s->cfg.dispatch_user, b);
    /* The natural answering loop reads the batch once more after its last answer, so it
     * cannot free itself. Answered during the call: free now. Otherwise another thread may
     * still be in such a loop: keep it until the run ends. */
    if (atomic_load_explicit(&b->left, memory_order_acquire) == 0) {
        free(b);
    } else {
        b->next = d->batches;
        d->batches = b;
    }
}

void corio__dispatch_free_batches(struct corio_sched *s, bool all)
{
    struct corio__dispatcher *d = &s->disp;
    if (d->inflight && !all)
        return;
    while (d->batches) {
        struct corio_batch *b = d->batches;
        d->batches = b->next;
        free(b);
    }
}
