/* The corio scheduler: tasks, the CPU / I/O / resume phases, timers, cancellation and
 * deadlines, the asyncfs waiter, and generic batched I/O. */
#include "corio_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local struct corio_sched *tls_sched;

/* ------------------------------------------------------------------------------------------
 * Queues (intrusive, a task is on at most one)
 * ---------------------------------------------------------------------------------------- */

void corio__waitq_push(struct corio__waitq *q, struct corio_task *t)
{
    AFS_CHECK(t->q_on == NULL, "task is already queued");
    t->q_next = NULL;
    t->q_prev = q->tail;
    if (q->tail)
        q->tail->q_next = t;
    else
        q->head = t;
    q->tail = t;
    q->len++;
    t->q_on = q;
}

void corio__waitq_remove(struct corio__waitq *q, struct corio_task *t)
{
    AFS_CHECK(t->q_on == q, "task is not on this queue");
    if (t->q_prev)
        t->q_prev->q_next = t->q_next;
    else
        q->head = t->q_next;
    if (t->q_next)
        t->q_next->q_prev = t->q_prev;
    else
        q->tail = t->q_prev;
    t->q_next = t->q_prev = NULL;
    t->q_on = NULL;
    q->len--;
}

static void waitq_push_front(struct corio__waitq *q, struct corio_task *t)
{
    AFS_CHECK(t->q_on == NULL, "task is already queued");
    t->q_prev = NULL;
    t->q_next = q->head;
    if (q->head)
        q->head->q_prev = t;
    else
        q->tail = t;
    q->head = t;
    q->len++;
    t->q_on = q;
}

struct corio_task *corio__waitq_pop(struct corio__waitq *q)
{
    struct corio_task *t = q->head;
    if (t)
        corio__waitq_remove(q, t);
    return t;
}

/* ------------------------------------------------------------------------------------------
 * Timers: a binary min-heap on timer_at
 * ---------------------------------------------------------------------------------------- */

static void heap_set(struct corio_sched *s, size_t i, struct corio_task *t)
{
    s->heap[i] = t;
    t->heap_idx = i + 1;
}

static void heap_up(struct corio_sched *s, size_t i)
{
    struct corio_task *t = s->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (s->heap[p]->timer_at <= t->timer_at)
            break;
        heap_set(s, i, s->heap[p]);
        i = p;
    }
    heap_set(s, i, t);
}

static void heap_down(struct corio_sched *s, size_t i)
{
    struct corio_task *t = s->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->heap_len)
            break;
        if (c + 1 < s->heap_len && s->heap[c + 1]->timer_at < s->heap[c]->timer_at)
            c++;
        if (s->heap[c]->timer_at >= t->timer_at)
            break;
        heap_set(s, i, s->heap[c]);
        i = c;
    }
    heap_set(s, i, t);
}

static void timer_remove(struct corio_sched *s, struct corio_task *t)
{
    if (!t->heap_idx)
        return;
    size_t i = t->heap_idx - 1;
    t->heap_idx = 0;
    struct corio_task *last = s->heap[--s->heap_len];
    if (i == s->heap_len)
        return;
    s->heap[i] = last;
    last->heap_idx = i + 1;
    heap_up(s, i);
    heap_down(s, last->heap_idx - 1);
}

static void timer_add(struct corio_sched *s, struct corio_task *t, int64_t at)
{
    timer_remove(s, t);
    if (s->heap_len == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
        struct corio_task **h = afs__sys.realloc(s->heap, cap * sizeof *h);
        AFS_CHECK(h != NULL, "out of memory for timers");
        s->heap = h;
        s->heap_cap = cap;
    }
    t->timer_at = at;
    s->heap[s->heap_len] = t;
    t->heap_idx = ++s->heap_len;
    heap_up(s, s->heap_len - 1);
}

/* ------------------------------------------------------------------------------------------
 * Task state
 * ---------------------------------------------------------------------------------------- */

int64_t corio_now(void)
{
    return afs__now_ns();
}

struct corio_task *corio_current(void)
{
    return tls_sched ? tls_sched->current : NULL;
}

struct corio_sched *corio__thread_sched(void)
{
    return tls_sched;
}

struct corio_sched *corio_task_sched(struct corio_task *t)
{
    AFS_CHECK(t != NULL, "task is NULL");
    return t->sched;
}

int corio_task_done(const struct corio_task *t)
{
    AFS_CHECK(t != NULL, "task is NULL");
    return t->state == CORIO__DONE;
}

void corio__check_running(struct corio_task *t, const char *where)
{
    if (!t || !t->sched || t->sched->current != t)
        afs__panic(where, "not called by the running task it names");
}

int corio_cancelled(const struct corio_task *t)
{
    for (; t; t = t->parent)
        if (t->cancelled)
            return 1;
    return 0;
}

/* Shields: walking up from t, a task with a shield stops the walk. Its own and its
 * ancestors' cancellations and deadlines do not count for t; those of the tasks below it
 * (t included, when t is not the shielded one) still do. */
static int64_t effective_deadline(const struct corio_task *t)
{
    int64_t d = INT64_MAX;
    for (; t && !t->shield; t = t->parent)
        if (t->deadline < d)
            d = t->deadline;
    return d;
}

static bool cancel_reaches(const struct corio_task *t)
{
    for (; t && !t->shield; t = t->parent)
        if (t->cancelled)
            return true;
    return false;
}

int corio__interrupted(struct corio_task *t)
{
    if (cancel_reaches(t))
        return -ECANCELED;
    int64_t d = effective_deadline(t);
    if (d != INT64_MAX && corio_now() >= d)
        return -ETIMEDOUT;
    return 0;
}

static void make_ready(struct corio_task *t)
{
    if (t->state != CORIO__SUSPENDED)
        afs__panic("corio", "resuming a task that is not suspended");
    t->state = CORIO__READY;
    t->wait = CORIO__W_NONE;
    corio__waitq_push(&t->sched->ready, t);
}

static void reap_zombie_slow(struct corio_sched *s);

/* A finished task cannot free the stack it runs on: whoever runs next does. */
static inline void reap_zombie(struct corio_sched *s)
{
    if (s->zombie)
        reap_zombie_slow(s);
}

/* Leaves the running task `from` (suspended, or finished when `dying`): switches straight to
 * the next ready task, or to the scheduler when there is none (the end of the CPU phase).
 * Going task to task halves the switches of a phase. */
static inline void leave(struct corio_task *from, bool dying)
{
    struct corio_sched *s = from->sched;
    struct corio_task *next = corio__waitq_pop(&s->ready);
    void **fake = dying ? NULL : &from->asan_fake;
    if (next) {
        next->state = CORIO__RUNNING;
        s->current = next;
        s->stats.switches++;
        corio__asan_start_switch(fake, next->stack.lo, next->stack.size);
        corio__switch(&from->regs, &next->regs);
    } else {
        s->current = NULL;
        corio__asan_start_switch(fake, s->main_lo, s->main_size);
        corio__switch(&from->regs, &s->main_regs);
    }
}

/* Suspends the running task t; returns when t runs again. */
static void switch_out(struct corio_task *t)
{
    leave(t, false);
    corio__asan_finish_switch(t->asan_fake, NULL, NULL);
    reap_zombie(t->sched);
}

/* Suspends the running task with a wait kind set; the deadline (if any) arms a timer. */
static void suspend(struct corio_task *t, uint8_t wait, int64_t until)
{
    struct corio_sched *s = t->sched;
    t->state = CORIO__SUSPENDED;
    t->wait = wait;
    t->timed_out = false;
    int64_t at = effective_deadline(t);
    if (until < at)
        at = until;
    if (at != INT64_MAX)
        timer_add(s, t, at);
    switch_out(t);
    timer_remove(s, t);
}

int corio__wait_on(struct corio_task *t, struct corio__waitq *q)
{
    corio__waitq_push(q, t);
    t->wake_err = 0;
    suspend(t, CORIO__W_QUEUE, INT64_MAX);
    return t->wake_err;
}

void corio__wait_on_hard(struct corio_task *t, struct corio__waitq *q)
{
    corio__waitq_push(q, t);
    t->state = CORIO__SUSPENDED;
    t->wait = CORIO__W_HARDQ;
    switch_out(t);
}

void corio__wake(struct corio_task *t, int err)
{
    if (t->q_on)
        corio__waitq_remove(t->q_on, t);
    t->wake_err = err;
    make_ready(t);
}

/* Ends t's current wait early because of cancellation or its deadline, where that is safe:
 * a file op is cancelled in the kernel and the task resumes from its callback; a generic
 * request already with the dispatcher is waited for (the dispatcher owns it). */
static void interrupt(struct corio_task *t, int err)
{
    if (t->state != CORIO__SUSPENDED)
        return;
    /* Shields: ask again whether a cancellation or deadline reaches t (a timer armed before
     * a shield began, or a cancel of a shielded ancestor, does not). */
    if (!(err = corio__interrupted(t)))
        return;
    switch (t->wait) {
    case CORIO__W_FILE:
        t->timed_out = err == -ETIMEDOUT;
        afs_cancel(t->op);
        break;
    case CORIO__W_SLEEP:
        t->wake_err = err;
        make_ready(t);
        break;
    case CORIO__W_QUEUE:
        corio__wake(t, err);
        break;
    case CORIO__W_IO: {
        /* Not yet dispatched: take it back. */
        struct corio_sched *s = t->sched;
        struct corio__req **pp = &s->pending, *prev = NULL;
        for (; *pp; prev = *pp, pp = &(*pp)->next) {
            if (*pp == t->req) {
                *pp = t->req->next;
                if (s->pending_tail == t->req)
                    s->pending_tail = prev;
                t->req->output = NULL;
                t->wake_err = err;
                make_ready(t);
                break;
            }
        }
        break;
    }
    default:
        break; /* yield and corio_wait end by themselves (children are cancelled too) */
    }
}

static void cancel_tree(struct corio_task *t)
{
    interrupt(t, -ECANCELED);
    if (t->shield)
        return; /* nothing below a shield is reached by a cancellation from above it */
    for (struct corio_task *c = t->children; c; c = c->sib_next)
        if (c->state != CORIO__DONE)
            cancel_tree(c);
}

void corio_cancel(struct corio_task *t)
{
    AFS_CHECK(t != NULL, "task is NULL");
    if (t->state == CORIO__DONE)
        return;
    t->cancelled = true;
    cancel_tree(t);
}

/* A deadline set on tasks already suspended: re-arm their timers. */
static void rearm_tree(struct corio_task *t)
{
    if (t->state == CORIO__SUSPENDED && t->wait != CORIO__W_HARDQ && t->wait != CORIO__W_NONE) {
        int64_t at = effective_deadline(t);
        if (t->wait == CORIO__W_SLEEP && t->until < at)
            at = t->until;
        if (at != INT64_MAX)
            timer_add(t->sched, t, at);
        else
            timer_remove(t->sched, t);
    }
    for (struct corio_task *c = t->children; c; c = c->sib_next)
        if (c->state != CORIO__DONE)
            rearm_tree(c);
}

void corio_set_deadline(struct corio_task *t, int64_t deadline_ns)
{
    AFS_CHECK(t != NULL, "task is NULL");
    t->deadline = deadline_ns > 0 ? deadline_ns : INT64_MAX;
    if (t->state != CORIO__DONE)
        rearm_tree(t);
}

void corio_shield_begin(struct corio_task *t)
{
    corio__check_running(t, "corio_shield_begin");
    t->shield++;
}

void corio_shield_end(struct corio_task *t)
{
    corio__check_running(t, "corio_shield_end");
    AFS_CHECK(t->shield > 0, "corio_shield_end without corio_shield_begin");
    if (--t->shield)
        return;
    /* The shield is gone: a deadline or cancellation that came meanwhile now reaches t (its
     * next blocking call fails at once) and the descendants already waiting. */
    for (struct corio_task *c = t->children; c; c = c->sib_next)
        if (c->state != CORIO__DONE) {
            rearm_tree(c);
            if (corio__interrupted(c))
                cancel_tree(c);
        }
}

static void fire_timers(struct corio_sched *s)
{
    int64_t now = corio_now();
    while (s->heap_len && s->heap[0]->timer_at <= now) {
        struct corio_task *t = s->heap[0];
        timer_remove(s, t);
        if (t->wait == CORIO__W_SLEEP && t->until <= now) {
            t->wake_err = 0;
            make_ready(t);
        } else {
            interrupt(t, -ETIMEDOUT);
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * Spawning, running, finishing
 * ---------------------------------------------------------------------------------------- */

static void task_entry(void *arg);

static struct corio_task *task_alloc(struct corio_sched *s)
{
    struct corio_task *t = s->free_tasks;
    if (t)
        s->free_tasks = t->sib_next;
    else if (!(t = afs__sys.malloc(sizeof *t)))
        return NULL;
    memset(t, 0, sizeof *t);
    if (corio__stack_get(&s->stacks, &t->stack) < 0) {
        t->sib_next = s->free_tasks;
        s->free_tasks = t;
        return NULL;
    }
    t->sched = s;
    t->deadline = INT64_MAX;
    corio__regs_init(&t->regs, t->stack.lo, t->stack.size, task_entry, t);
    s->stats.tasks++;
    s->live++;
    return t;
}

static void task_free(struct corio_task *t)
{
    struct corio_sched *s = t->sched;
    /* Done children kept as handles go with their parent. */
    struct corio_task *c = t->children;
    while (c) {
        struct corio_task *next = c->sib_next;
        task_free(c);
        c = next;
    }
    t->sib_next = s->free_tasks;
    s->free_tasks = t;
}

static void unlink_child(struct corio_task *t)
{
    struct corio_task *p = t->parent;
    if (t->sib_prev)
        t->sib_prev->sib_next = t->sib_next;
    else
        p->children = t->sib_next;
    if (t->sib_next)
        t->sib_next->sib_prev = t->sib_prev;
    t->sib_next = t->sib_prev = NULL;
}

/* t's function has returned and its children are done. */
static void finish(struct corio_task *t)
{
    struct corio_sched *s = t->sched;
    for (;;) {
        t->state = CORIO__DONE;
        s->live--;
        if (t->group)
            corio__group_member_done(t);
        struct corio_task *p = t->parent;
        if (!p)
            return; /* the root: freed by corio_sched_run */
        p->live_children--;
        if (!t->keep) {
            unlink_child(t);
            task_free(t);
        }
        if (p->live_children > 0)
            return;
        if (p->state == CORIO__SUSPENDED && p->wait == CORIO__W_CHILDREN)
            make_ready(p);
        if (p->state != CORIO__ZOMBIE)
            return;
        t = p; /* the parent was only waiting for its children */
    }
}

static void reap_zombie_slow(struct corio_sched *s)
{
    struct corio_task *t = s->zombie;
    s->zombie = NULL;
    corio__stack_put(&s->stacks, &t->stack);
    memset(&t->stack, 0, sizeof t->stack);
    if (t->live_children == 0)
        finish(t);
}

static void task_entry(void *arg)
{
    struct corio_task *t = arg;
    struct corio_sched *s = t->sched;
    corio__asan_finish_switch(NULL, NULL, NULL);
    reap_zombie(s);
    t->fn(t, t->arg);
    t->state = CORIO__ZOMBIE;
    s->zombie = t;
    leave(t, true);
    afs__panic("corio", "a finished task was resumed");
}

/* Runs t, and the tasks it hands over to, until the run queue is empty. */
static void run(struct corio_sched *s, struct corio_task *t)
{
    t->state = CORIO__RUNNING;
    s->current = t;
    s->stats.switches++;
    corio__asan_start_switch(&s->main_fake, t->stack.lo, t->stack.size);
    corio__switch(&s->main_regs, &t->regs);
    corio__asan_finish_switch(s->main_fake, NULL, NULL);
    s->current = NULL;
    reap_zombie(s);
}

int corio_spawn(struct corio_task *parent, corio_fn *fn, void *arg, struct corio_task **child)
{
    corio__check_running(parent, "corio_spawn");
    AFS_CHECK(fn != NULL, "fn is NULL");
    struct corio_sched *s = parent->sched;
    struct corio_task *t = task_alloc(s);
    if (!t) {
        if (child)
            *child = NULL;
        return -ENOMEM;
    }
    t->fn = fn;
    t->arg = arg;
    t->parent = parent;
    t->id = parent->nspawned++;
    t->keep = child != NULL;
    t->sib_next = parent->children;
    if (parent->children)
        parent->children->sib_prev = t;
    parent->children = t;
    parent->live_children++;
    if (child)
        *child = t;
    /* Depth-first: the child runs now; the parent goes on right after it suspends. */
    t->state = CORIO__READY;
    parent->state = CORIO__READY;
    waitq_push_front(&s->ready, parent);
    waitq_push_front(&s->ready, t);
    switch_out(parent);
    return 0;
}

void corio_wait(struct corio_task *t)
{
    corio__check_running(t, "corio_wait");
    if (t->live_children == 0)
        return;
    t->state = CORIO__SUSPENDED;
    t->wait = CORIO__W_CHILDREN;
    switch_out(t);
}

/* True when a phase boundary now would do nothing: no I/O queued or in flight, no answers
 * or due timers to collect. A yield can then stay in this CPU phase. */
static bool quiet(struct corio_sched *s)
{
    const struct afs_ctx *ctx = s->ctx;
    if (ctx->queued.len || ctx->inflight || ctx->done.len || s->file_waits || s->pending ||
        s->io_inflight || atomic_load_explicit(&s->has_answers, memory_order_relaxed))
        return false;
    return s->heap_len == 0 || s->heap[0]->timer_at > corio_now();
}

void corio_yield(struct corio_task *t)
{
    corio__check_running(t, "corio_yield");
    struct corio_sched *s = t->sched;
    if (s->ready.head && quiet(s)) {
        t->state = CORIO__READY;
        corio__waitq_push(&s->ready, t);
        switch_out(t);
        return;
    }
    t->state = CORIO__SUSPENDED;
    t->wait = CORIO__W_YIELD;
    corio__waitq_push(&s->yielded, t);
    switch_out(t);
}

int corio_sleep(struct corio_task *t, int64_t ns)
{
    corio__check_running(t, "corio_sleep");
    int err = corio__interrupted(t);
    if (err)
        return err;
    if (ns <= 0)
        return 0;
    int64_t now = corio_now();
    t->until = ns > INT64_MAX - now ? INT64_MAX : now + ns;
    t->wake_err = 0;
    suspend(t, CORIO__W_SLEEP, t->until);
    return t->wake_err;
}

void corio_log(struct corio_task *t, const char *fmt, ...)
{
    AFS_CHECK(t != NULL, "task is NULL");
    if (!(t->sched->cfg.flags & CORIO_TRACE))
        return;
    /* The path from the root: ids of each ancestor. */
    uint32_t ids[64];
    int n = 0;
    for (struct corio_task *a = t; a->parent && n < 64; a = a->parent)
        ids[n++] = a->id;
    char line[1024];
    int len = snprintf(line, sizeof line, "[0");
    while (n-- > 0 && len < (int)sizeof line)
        len += snprintf(line + len, sizeof line - (size_t)len, "/%u", ids[n]);
    if (len < (int)sizeof line)
        len += snprintf(line + len, sizeof line - (size_t)len, "] ");
    va_list ap;
    va_start(ap, fmt);
    if (len < (int)sizeof line)
        vsnprintf(line + len, sizeof line - (size_t)len, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}

/* ------------------------------------------------------------------------------------------
 * The asyncfs waiter: blocking file calls in a task suspend the task.
 * ---------------------------------------------------------------------------------------- */

static void *waiter_current(struct afs_waiter *w)
{
    struct corio_sched *s = (struct corio_sched *)((char *)w - offsetof(struct corio_sched, waiter));
    return s->current;
}

static int waiter_suspend(struct afs_waiter *w, void *co, struct afs_op *op)
{
    struct corio_task *t = co;
    struct corio_sched *s = t->sched;
    s->stats.ios++;
    int err = corio__interrupted(t);
    if (err) {
        /* Still queued: cancelling takes it back; its callback comes with the next wait. */
        afs_cancel(op);
    }
    t->op = op;
    s->file_waits++;
    suspend(t, CORIO__W_FILE, INT64_MAX);
    s->file_waits--;
    t->op = NULL;
    if (op->result == -ECANCELED && (t->timed_out || err == -ETIMEDOUT))
        return -ETIMEDOUT;
    return 0;
}

static void waiter_resume(struct afs_waiter *w, void *co, struct afs_op *op)
{
    struct corio_task *t = co;
    AFS_CHECK(t->wait == CORIO__W_FILE && t->op == op, "resume for an op the task is not on");
    make_ready(t);
}

/* ------------------------------------------------------------------------------------------
 * Generic batched I/O
 * ---------------------------------------------------------------------------------------- */

void *corio_io(struct corio_task *t, void *input)
{
    corio__check_running(t, "corio_io");
    struct corio_sched *s = t->sched;
    AFS_CHECK(s->cfg.dispatch != NULL, "corio_io needs a dispatcher in corio_config");
    if (corio__interrupted(t))
        return NULL;
    struct corio__req req = {.task = t, .input = input};
    if (s->pending_tail)
        s->pending_tail->next = &req;
    else
        s->pending = &req;
    s->pending_tail = &req;
    t->req = &req;
    s->stats.ios++;
    suspend(t, CORIO__W_IO, INT64_MAX);
    t->req = NULL;
    return req.output;
}

size_t corio_batch_len(const struct corio_batch *b)
{
    return b->n;
}

void *corio_batch_input(const struct corio_batch *b, size_t i)
{
    AFS_CHECK(i < b->n, "index out of range");
    return b->reqs[i]->input;
}

static void batch_answer(struct corio_batch *b, size_t i, void *output, bool retry)
{
    AFS_CHECK(i < b->n, "index out of range");
    struct corio_sched *s = b->sched;
    afs__mutex_lock(&s->mu);
    struct corio__req *r = b->reqs[i];
    if (r->answered) {
        afs__mutex_unlock(&s->mu);
        afs__panic("corio_batch", "request answered twice");
    }
    r->answered = true;
    r->output = output;
    r->next = NULL;
    struct corio__req **head = retry ? &s->retried : &s->answered;
    struct corio__req **tail = retry ? &s->retried_tail : &s->answered_tail;
    if (*tail)
        (*tail)->next = r;
    else
        *head = r;
    *tail = r;
    --b->left;
    atomic_store_explicit(&s->has_answers, true, memory_order_release);
    afs__mutex_unlock(&s->mu);
    afs_ctx_wake(s->ctx);
}

void corio_batch_respond(struct corio_batch *b, size_t i, void *output)
{
    batch_answer(b, i, output, false);
}

void corio_batch_retry(struct corio_batch *b, size_t i)
{
    batch_answer(b, i, NULL, true);
}

/* The I/O phase for generic requests: everything pending, up to io_limit, in one call. */
static void dispatch(struct corio_sched *s)
{
    if (!s->pending || s->io_inflight >= s->cfg.io_limit)
        return;
    size_t n = 0;
    for (struct corio__req *r = s->pending; r && s->io_inflight + n < s->cfg.io_limit; r = r->next)
        n++;
    struct corio_batch *b = afs__sys.malloc(sizeof *b + n * sizeof b->reqs[0]);
    AFS_CHECK(b != NULL, "out of memory for a batch");
    b->sched = s;
    b->n = b->left = n;
    for (size_t i = 0; i < n; i++) {
        struct corio__req *r = s->pending;
        s->pending = r->next;
        r->next = NULL;
        r->answered = false;
        b->reqs[i] = r;
    }
    if (!s->pending)
        s->pending_tail = NULL;
    s->io_inflight += n;
    s->cfg.dispatch(s->cfg.dispatch_user, b);
    /* The natural answering loop reads the batch once more after its last answer, so it
     * cannot free itself. Answered during the call: free now. Otherwise another thread may
     * still be in such a loop: keep it until the run ends. */
    afs__mutex_lock(&s->mu);
    bool all = b->left == 0;
    afs__mutex_unlock(&s->mu);
    if (all) {
        free(b);
    } else {
        b->next = s->batches;
        s->batches = b;
    }
}

static void free_batches(struct corio_sched *s)
{
    while (s->batches) {
        struct corio_batch *b = s->batches;
        s->batches = b->next;
        free(b);
    }
}

/* The resume phase for generic requests: answers in the order they came; retries go back
 * to the front of the pending list, for the next dispatch. */
static void collect_answers(struct corio_sched *s)
{
    if (!atomic_exchange_explicit(&s->has_answers, false, memory_order_acquire))
        return;
    afs__mutex_lock(&s->mu);
    struct corio__req *ans = s->answered, *ret = s->retried, *ret_tail = s->retried_tail;
    struct corio_future *futs = s->fut_done;
    s->answered = s->answered_tail = NULL;
    s->retried = s->retried_tail = NULL;
    s->fut_done = s->fut_done_tail = NULL;
    afs__mutex_unlock(&s->mu);
    while (ans) {
        struct corio__req *next = ans->next;
        s->io_inflight--;
        make_ready(ans->task);
        ans = next;
    }
    if (ret) {
        for (struct corio__req *r = ret; r; r = r->next)
            s->io_inflight--;
        ret_tail->next = s->pending;
        s->pending = ret;
        if (!s->pending_tail)
            s->pending_tail = ret_tail;
    }
    if (futs)
        corio__futures_deliver(futs);
}

/* ------------------------------------------------------------------------------------------
 * The scheduler
 * ---------------------------------------------------------------------------------------- */

void corio_config_default(struct corio_config *cfg)
{
    AFS_CHECK(cfg != NULL, "cfg is NULL");
    memset(cfg, 0, sizeof *cfg);
    cfg->stack_size = 256 * 1024;
    cfg->io_limit = 128;
}

int corio_sched_new(struct corio_sched **out, const struct corio_config *cfg)
{
    AFS_CHECK(out != NULL, "out is NULL");
    *out = NULL;
    struct corio_config def;
    if (!cfg) {
        corio_config_default(&def);
        cfg = &def;
    }
    if (cfg->io_limit == 0 || (cfg->flags & ~CORIO_TRACE) || cfg->stack_size > ((size_t)1 << 30))
        return -EINVAL;
    struct corio_sched *s = afs__sys.calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    if (s->cfg.stack_size == 0)
        s->cfg.stack_size = 256 * 1024;
    int err = corio__stack_pool_init(&s->stacks, s->cfg.stack_size, 1024);
    if (err < 0) {
        free(s);
        return err;
    }
    s->ctx = cfg->ctx;
    if (!s->ctx) {
        err = afs_ctx_new(&s->ctx, NULL);
        if (err < 0) {
            corio__stack_pool_fini(&s->stacks);
            free(s);
            return err;
        }
        s->own_ctx = true;
    }
    afs__mutex_init(&s->mu);
    atomic_init(&s->has_answers, false);
    s->waiter.ctx = s->ctx;
    s->waiter.current = waiter_current;
    s->waiter.suspend = waiter_suspend;
    s->waiter.resume = waiter_resume;
    *out = s;
    return 0;
}

void corio_sched_free(struct corio_sched *s)
{
    if (!s)
        return;
    AFS_CHECK(!s->running, "freeing a running scheduler");
    while (s->free_tasks) {
        struct corio_task *t = s->free_tasks;
        s->free_tasks = t->sib_next;
        free(t);
    }
    free(s->heap);
    free_batches(s);
    corio__flights_free(s);
    corio__stack_pool_fini(&s->stacks);
    afs__mutex_destroy(&s->mu);
    if (s->own_ctx)
        afs_ctx_free(s->ctx);
    free(s);
}

void corio_sched_stats(const struct corio_sched *s, struct corio_stats *out)
{
    AFS_CHECK(s != NULL && out != NULL, "NULL argument");
    *out = s->stats;
}

struct afs_ctx *corio_sched_ctx(const struct corio_sched *s)
{
    AFS_CHECK(s != NULL, "scheduler is NULL");
    return s->ctx;
}

/* Could anything still wake a suspended task? */
static bool can_progress(struct corio_sched *s)
{
    struct afs_stats st;
    afs_ctx_stats(s->ctx, &st);
    /* ext_waits: a task awaits a future that another thread may complete (future.c). */
    return s->file_waits || st.ops != st.completions || s->heap_len || s->pending ||
           s->io_inflight || s->ext_waits;
}

static void report_deadlock(struct corio_sched *s)
{
    fprintf(stderr, "corio: deadlock: %zu task(s) suspended with nothing that could wake them "
                    "(no file op, timer or generic request in flight)\n", s->live);
}

/* Frees every task after a deadlock: their stacks are dropped without unwinding. */
static void abandon(struct corio_sched *s, struct corio_task *t)
{
    struct corio_task *c = t->children;
    while (c) {
        struct corio_task *next = c->sib_next;
        abandon(s, c);
        c = next;
    }
    t->children = NULL;
    if (t->q_on)
        corio__waitq_remove(t->q_on, t);
    timer_remove(s, t);
    if (t->stack.map)
        corio__stack_put(&s->stacks, &t->stack);
    memset(&t->stack, 0, sizeof t->stack);
    if (t != s->root) {
        t->sib_next = s->free_tasks;
        s->free_tasks = t;
    }
}

int corio_sched_run(struct corio_sched *s, corio_fn *fn, void *arg)
{
    AFS_CHECK(s != NULL && fn != NULL, "NULL argument");
    AFS_CHECK(!s->running && corio_current() == NULL, "corio_sched_run is not reentrant");
    int err = corio__stack_thread_init();
    if (err < 0)
        return err;
    /* The last run's batches were kept for threads still returning from their answers. */
    if (!s->io_inflight)
        free_batches(s);
    struct corio_task *root = task_alloc(s);
    if (!root)
        return -ENOMEM;
    root->fn = fn;
    root->arg = arg;
    root->state = CORIO__READY;
    corio__waitq_push(&s->ready, root);
    s->root = root;
    s->running = true;
    struct corio_sched *prev_sched = tls_sched;
    tls_sched = s;
    struct afs_waiter *prev_waiter = afs_waiter_set(&s->waiter);
    struct afs_stats before, after;
    int rc = 0;

    for (;;) {
        /* CPU phase: every ready task, until it suspends. Wake-ups made meanwhile are
         * queued behind and run in this phase too; yields wait for the next one. */
        struct corio_task *t;
        while ((t = corio__waitq_pop(&s->ready)))
            run(s, t); /* tasks hand over to each other; back here when none is ready */
        if (root->state == CORIO__DONE)
            break;
        s->stats.phases++;

        /* I/O phase: generic requests to the dispatcher in one call; file ops go to the
         * kernel with the wait below, in one submission. */
        dispatch(s);
        bool busy = s->yielded.len > 0;
        int64_t timeout = 0;
        if (!busy) {
            if (!can_progress(s)) {
                report_deadlock(s);
                rc = -EDEADLK;
                break;
            }
            timeout = -1;
            if (s->heap_len) {
                timeout = s->heap[0]->timer_at - corio_now();
                if (timeout < 0)
                    timeout = 0;
            }
        }
        afs_ctx_stats(s->ctx, &before);
        /* Only yields to go on with and nothing in the context: no need to ask the kernel. */
        if (!busy || before.ops != before.completions || s->file_waits) {
            int n = afs_ctx_wait(s->ctx, busy ? 0 : 1, timeout);
            afs_ctx_stats(s->ctx, &after);
            s->stats.submits += after.kernel_submits - before.kernel_submits;
            if (n < 0 && n != -EINTR && n != -EAGAIN) {
                rc = n;
                break;
            }
        }

        /* Resume phase: completions made tasks ready in completion order (their callbacks
         * ran in the wait); then answers, timers, and the tasks that yielded. */
        collect_answers(s);
        if (s->heap_len)
            fire_timers(s);
        while ((t = corio__waitq_pop(&s->yielded)))
            make_ready(t);
    }

    afs_waiter_set(prev_waiter);
    tls_sched = prev_sched;
    if (rc < 0)
        abandon(s, root);
    else
        task_free(root);
    if (rc < 0) {
        root->sib_next = s->free_tasks;
        s->free_tasks = root;
        s->live = 0;
        s->file_waits = 0;
        s->ext_waits = 0;
    }
    s->root = NULL;
    s->running = false;
    return rc;
}
