/* The corio scheduler: the run loop (CPU / I/O / resume phases), spawning, suspending and
 * switching. What a suspended task waits for is its wait record (corio_int.h); timers,
 * cancellation, the dispatcher and the remote inbox live in their own files. */
#include "corio_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TASK(node, field) AFS_LIST_ITEM(node, struct corio_task, field)

static _Thread_local struct corio_sched *tls_sched AFS__TLS_HOT;

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

_Static_assert(sizeof(struct corio_task) % CORIO__LINE == 0, "task structs carved side by side");
_Static_assert(offsetof(struct corio_task, keep) < CORIO__LINE,
               "what corio__ready touches must be on the task's first line");

static inline void make_ready(struct corio_sched *s, struct corio_task *t)
{
    t->state = CORIO__READY;
    t->w = NULL;
    corio__timer_remove(&s->timers, t);
    corio__waitq_push(&s->ready, t);
}

void corio__ready(struct corio_task *t, int err)
{
    if (t->state != CORIO__SUSPENDED)
        afs__panic("corio", "resuming a task that is not suspended");
    struct corio_sched *s = t->sched;
    if (t->w) {
        t->w->err = err;
        if (t->w->outside)
            s->outside_waits--;
    }
    make_ready(s, t);
}

void corio__ready_outside(struct corio_task *t)
{
    if (t->state != CORIO__SUSPENDED || !t->w)
        afs__panic("corio", "resuming a task that is not suspended");
    struct corio_sched *s = t->sched;
    s->outside_waits--;
    make_ready(s, t);
}

static void reap_zombie_slow(struct corio_sched *s);

/* A finished task cannot free the stack it runs on: whoever runs next does. */
static inline void reap_zombie(struct corio_sched *s)
{
    if (s->zombie)
        reap_zombie_slow(s);
}

/* Bytes above a suspended task's stack pointer that are prefetched before it runs: the
 * frames a blocking call returns through, up to the task's own function, in most tasks. */
#define PREFETCH_STACK 1024
/* Tasks ready from which their lines are prefetched: with fewer, they are still in the
 * core's cache from their last turn (about 1 KiB each), and a prefetch only costs. */
#define PREFETCH_READY 256

/* With thousands of tasks alive, each runs once per phase and finds its lines (saved
 * registers, the frames above its stack pointer) gone from the caches since its last turn.
 * While one task runs, lines of the tasks after it are fetched: of the struct of the third
 * one on (its first line, which taking the one before it off the run queue writes, and its
 * saved stack pointer; one turn ahead was not soon enough), and of the stack of the next
 * one on, above its saved stack pointer. A prefetch never faults: lines above the top of a
 * shallow stack cost nothing but the look-up. */
static inline void prefetch_ahead(struct corio_sched *s)
{
    struct afs_list_node *n = s->ready.list.first;
    if (s->ready.len < PREFETCH_READY)
        return;
    struct afs_list_node *m = n->next ? n->next->next : NULL;
    if (m) {
        afs__prefetch(m); /* q_node, on the first line */
        const char *r = (const char *)&TASK(m, q_node)->regs;
        for (size_t i = 0; i < sizeof(struct corio__regs); i += CORIO__LINE)
            afs__prefetch(r + i);
    }
    const char *sp = corio__regs_sp(&TASK(n, q_node)->regs);
    if (sp)
        for (size_t i = 0; i < PREFETCH_STACK; i += CORIO__LINE)
            afs__prefetch(sp + i);
}

/* Leaves the running task `from` (suspended, or finished when `dying`): switches straight to
 * the next ready task, or to the scheduler when there is none (the end of the CPU phase).
 * Going task to task halves the switches of a phase. */
static inline void leave(struct corio_task *from, bool dying)
{
    struct corio_sched *s = from->sched;
    struct corio_task *next = corio__waitq_pop(&s->ready);
    prefetch_ahead(s);
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

/* cancelled: a cancellation reaches t already (it came while t was ready, between two waits
 * of one call): the wait ends at once through its own cancel, as if it came now. */
static int suspend_at(struct corio_task *t, struct corio__wait *w, int64_t deadline,
                      bool cancelled)
{
    struct corio_sched *s = t->sched;
    t->state = CORIO__SUSPENDED;
    t->w = w;
    w->err = 0;
    if (w->outside)
        s->outside_waits++;
    int64_t at = w->cancel && deadline < w->until ? deadline : w->until;
    if (at != INT64_MAX)
        corio__timer_add(&s->timers, t, at);
    if (cancelled) {
        /* The record's cancel takes t off what it waits on and makes it ready: t runs on. */
        w->cancel(t, w, -ECANCELED);
        if (t->state == CORIO__READY) {
            corio__waitq_remove(&s->ready, t);
            t->state = CORIO__RUNNING;
            return w->err;
        }
    }
    switch_out(t);
    return w->err;
}

int corio__suspend_by(struct corio_task *t, struct corio__wait *w, int64_t deadline)
{
    return suspend_at(t, w, deadline, false); /* the caller asked corio__interrupted_at() */
}

int corio__suspend(struct corio_task *t, struct corio__wait *w)
{
    int64_t deadline = INT64_MAX;
    bool cancelled = w->cancel && corio__cancel_reaches_at(t, &deadline);
    return suspend_at(t, w, deadline, cancelled);
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
    /* The thread too: another scheduler's task naming t (running there) must not switch
     * into t's scheduler from here. */
    if (!t || !t->sched || t->sched->current != t || tls_sched != t->sched)
        afs__panic(where, "not called by the running task it names");
}

void corio_log(struct corio_task *t, const char *fmt, ...)
{
    AFS_CHECK(t != NULL, "task is NULL");
    if (!(t->sched->cfg.flags & CORIO_TRACE))
        return;
    /* The path from the root: ids of each ancestor, across schedulers (a task started for
     * another scheduler's corio_spawn_on goes on from its parent there). */
    uint32_t ids[64];
    int n = 0, cut = 0;
    for (const struct corio_task *a = t, *up;; a = up) {
        if (!(up = a->parent ? a->parent : corio__rt_remote_parent(a)))
            break;
        if (n == 64) { /* the 64 ids nearest t, after "..." */
            cut = 1;
            break;
        }
        ids[n++] = a->id;
    }
    char line[1024];
    int len = snprintf(line, sizeof line, cut ? "[..." : "[0");
    while (n-- > 0 && len < (int)sizeof line)
        len += snprintf(line + len, sizeof line - (size_t)len, "/%u", ids[n]);
    if (len < (int)sizeof line && t->sched->rt) /* which scheduler's thread prints */
        len += snprintf(line + len, sizeof line - (size_t)len, "@%u", t->sched->index);
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
 * Spawning, running, finishing
 * ---------------------------------------------------------------------------------------- */

static void task_entry(void *arg);

/* Task structs allocated one by one up to this many; the next ones are carved from
 * regions in large pages (corio__huge_map). Each phase visits every task that ran, three
 * times (completion, callback, run queue): beyond a few hundred tasks in small pages, each
 * visit would miss the TLB, while 2,700 tasks fill one large page. */
#define TASKS_SMALL 256

/* A new task struct from the newest region, or from a new one; NULL when there is none. */
static struct corio_task *task_carve(struct corio_sched *s)
{
    if ((size_t)(s->chunk_end - s->chunk_at) < sizeof(struct corio_task)) {
        void *map;
        size_t map_size;
        char *r = corio__huge_map(&map, &map_size);
        if (!r)
            return NULL;
        struct corio__task_chunk *c = (struct corio__task_chunk *)(void *)r;
        *c = (struct corio__task_chunk){.next = s->chunks, .map = map, .map_size = map_size};
        s->chunks = c;
        s->chunk_at = r + CORIO__LINE;
        s->chunk_end = r + CORIO__HUGE;
    }
    struct corio_task *t = (struct corio_task *)(void *)s->chunk_at;
    s->chunk_at += sizeof *t; /* a multiple of the line: the next one is aligned too */
    return t;
}

void corio__task_chunks_free(struct corio_sched *s)
{
    struct corio__task_chunk *c = s->chunks;
    while (c) {
        struct corio__task_chunk *next = c->next;
        corio__huge_unmap(c->map, c->map_size);
        c = next;
    }
    s->chunks = NULL;
    s->chunk_at = s->chunk_end = NULL;
}

static struct corio_task *task_alloc(struct corio_sched *s)
{
    struct afs_list_node *n = afs_list_pop_front(&s->free_tasks);
    struct corio_task *t;
    void *mem = NULL;
    if (n) {
        t = TASK(n, sib);
        mem = t->mem;
    } else if (s->tasks_made < TASKS_SMALL || !(t = task_carve(s))) {
        /* On a cache line of its own: the hot fields in as few lines as they fill. */
        if (!(mem = afs__sys.malloc(sizeof *t + CORIO__LINE - 1)))
            return NULL;
        t = (struct corio_task *)(((uintptr_t)mem + CORIO__LINE - 1) & ~(uintptr_t)(CORIO__LINE - 1));
    }
    if (!n)
        s->tasks_made++;
    memset(t, 0, offsetof(struct corio_task, op)); /* the op: set up by each call */
    t->mem = mem;
    if (corio__stack_get(&s->stacks, &t->stack) < 0) {
        afs_list_push_front(&s->free_tasks, &t->sib);
        return NULL;
    }
    t->sched = s;
    t->deadline = INT64_MAX;
    t->inh_deadline = INT64_MAX;
    corio__regs_init(&t->regs, t->stack.lo, t->stack.size, task_entry, t);
    s->stats.tasks++;
    s->live++;
    if (s->rt)
        atomic_fetch_add_explicit(&s->load, 1, memory_order_relaxed);
    return t;
}

static void task_free(struct corio_task *t)
{
    struct corio_sched *s = t->sched;
    /* Done children kept as handles go with their parent, and theirs with them: a list of
     * those still to free, not recursion on the finishing task's stack (a chain of kept
     * children may be thousands deep). */
    struct afs_list todo = {0};
    afs_list_push_back(&todo, &t->sib);
    struct afs_list_node *n;
    while ((n = afs_list_pop_front(&todo))) {
        afs_list_splice(&todo, &TASK(n, sib)->children, false);
        afs_list_push_front(&s->free_tasks, n);
    }
}

/* A child of p is gone: true when p was only waiting for its children (a zombie) and is
 * now done too. */
static bool child_gone(struct corio_task *p)
{
    p->live_children--;
    if (p->live_children > 0)
        return false;
    if (p->state == CORIO__SUSPENDED && p->w && p->w->what == &p->children)
        corio__ready(p, 0);
    return p->state == CORIO__ZOMBIE;
}

/* t's function has returned and its children are done. */
static void finish(struct corio_task *t)
{
    struct corio_sched *s = t->sched;
    for (;;) {
        t->state = CORIO__DONE;
        s->live--;
        if (s->rt)
            atomic_fetch_sub_explicit(&s->load, 1, memory_order_relaxed);
        void (*on_done)(struct corio_task *) = t->on_done;
        t->on_done = NULL;
        if (on_done)
            on_done(t);
        struct corio_task *p = t->parent;
        if (!p) {
            if (t->link)
                corio__rt_root_done(t); /* started for another scheduler: frees t */
            return; /* the root: freed by corio_sched_run */
        }
        if (!t->keep) {
            afs_list_remove(&p->children, &t->sib);
            task_free(t);
        }
        if (!child_gone(p))
            return;
        t = p; /* the parent was only waiting for its children */
    }
}

void corio__child_gone(struct corio_task *p)
{
    if (child_gone(p))
        finish(p);
}

void corio__task_free(struct corio_task *t)
{
    task_free(t);
}

struct corio_task *corio__task_new(struct corio_sched *s, corio_fn *fn, void *arg)
{
    struct corio_task *t = task_alloc(s);
    if (!t)
        return NULL;
    t->fn = fn;
    t->arg = arg;
    t->state = CORIO__READY;
    corio__waitq_push(&s->ready, t);
    return t;
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
    char top; /* above every frame of t->fn */
    t->fn(t, t->arg);
    corio__detach_frame_futures(t, &top);
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
    afs_list_push_front(&parent->children, &t->sib);
    parent->live_children++;
    if (child)
        *child = t;
    /* Depth-first: the child runs now; the parent goes on right after it suspends. */
    t->state = CORIO__READY;
    parent->state = CORIO__READY;
    corio__waitq_push_front(&s->ready, parent);
    corio__waitq_push_front(&s->ready, t);
    switch_out(parent);
    return 0;
}

void corio_wait(struct corio_task *t)
{
    corio__check_running(t, "corio_wait");
    if (t->live_children == 0)
        return;
    struct corio__wait w = CORIO__WAIT_FOR(&t->children); /* finish() ends it */
    corio__suspend(t, &w);
}

/* True when a phase boundary now would do nothing: no I/O queued or in flight, no answers
 * or due timers to collect, no wake-ups of other schedulers staged in the ring (they go out
 * only with a submission: a scheduler whose tasks only yield would keep them forever). A
 * yield can then stay in this CPU phase. */
static bool quiet(struct corio_sched *s)
{
    if (s->wakes_staged || afs__ctx_pending(s->ctx) || corio__dispatch_busy(&s->disp) ||
        corio__inbox_pending(&s->inbox))
        return false;
    return s->timers.len == 0 || corio__timer_next(&s->timers) > corio_now();
}

void corio_yield(struct corio_task *t)
{
    corio__check_running(t, "corio_yield");
    struct corio_sched *s = t->sched;
    if (s->ready.list.first && quiet(s)) {
        t->state = CORIO__READY;
        corio__waitq_push(&s->ready, t);
        switch_out(t);
        return;
    }
    corio__waitq_push(&s->yielded, t);
    struct corio__wait w = CORIO__WAIT_FOR(&s->yielded); /* the resume phase ends it */
    corio__suspend(t, &w);
}

static void sleep_cancel(struct corio_task *t, struct corio__wait *w, int err)
{
    (void)w;
    corio__ready(t, err);
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
    struct corio__wait w = {.cancel = sleep_cancel,
                            .until = ns > INT64_MAX - now ? INT64_MAX : now + ns};
    return corio__suspend(t, &w);
}

/* ------------------------------------------------------------------------------------------
 * The run
 * ---------------------------------------------------------------------------------------- */

/* Could anything still wake a suspended task? A wait the kernel or another thread may end,
 * an op of the context, or a timer. */
static bool can_progress(struct corio_sched *s)
{
    /* A runtime's other schedulers serve their inbox until the runtime stops: messages may
     * still come for their tasks (a cancellation, say). */
    return s->outside_waits || afs__ctx_pending(s->ctx) || s->timers.len || s->links ||
           (s->rt && s->index != 0);
}

/* The loop: CPU, I/O and resume phases until root is done (root NULL: a runtime's other
 * scheduler, until its runtime stops and its tasks are done). Returns 0 or -EDEADLK / the
 * wait's error. */
int corio__sched_loop(struct corio_sched *s, struct corio_task *root)
{
    struct corio_sched *prev_sched = tls_sched;
    tls_sched = s;
    /* A runtime's context is this thread's while the loop runs: another thread's calls on
     * it, its files or its streams abort (they would race with this loop). */
    const struct afs_ctx *prev_bound = s->rt ? afs__ctx_bind(s->ctx) : NULL;
    struct afs_waiter *prev_waiter = afs_waiter_set(&s->waiter);
    struct afs_stats before, after;
    int rc = 0;
    /* Awake: it looks at its inbox before it sleeps, so a post needs no wake-up. */
    atomic_store_explicit(&s->awake, true, memory_order_seq_cst);

    for (;;) {
        /* CPU phase: every ready task, until it suspends. Wake-ups made meanwhile are
         * queued behind and run in this phase too; yields wait for the next one. */
        struct corio_task *t;
        while ((t = corio__waitq_pop(&s->ready)))
            run(s, t); /* tasks hand over to each other; back here when none is ready */
        if (root ? root->state == CORIO__DONE
                 : s->live == 0 && corio__rt_stopping(s) && !corio__inbox_pending(&s->inbox))
            break;
        s->stats.phases++;
        if (s->rt) {
            corio__rt_awake(s); /* it may have moved: polls on its old CPU yield to it */
            if ((rc = corio__rt_failed(s)) < 0)
                break; /* another scheduler's loop failed: the run ends */
        }

        /* I/O phase: generic requests to the dispatcher in one call; file ops go to the
         * kernel with the wait below, in one submission. */
        corio__dispatch(s);
        bool busy = s->yielded.len > 0;
        int64_t timeout = 0;
        if (!busy) {
            /* About to wait: work queued elsewhere comes first. */
            if (s->rt && corio__rt_steal(s))
                continue;
            if (!can_progress(s)) {
                corio__report_deadlock(s);
                rc = -EDEADLK;
                break;
            }
            timeout = -1;
            int64_t next = corio__timer_next(&s->timers);
            if (next != INT64_MAX) {
                int64_t now = corio_now(); /* next may be any past time, INT64_MIN too */
                timeout = next <= now ? 0 : next - now;
            }
        }
        /* Nothing in flight here: a runtime's scheduler polls its inbox a little first. */
        bool came = false;
        if (!busy && timeout != 0 && s->rt && !afs__ctx_pending(s->ctx)) {
            if (s->wakes_staged) { /* they go first: the answer may depend on them */
                s->wakes_staged = false;
                (void)afs_ctx_wait(s->ctx, 0, 0);
            }
            came = corio__rt_spin(s);
        }
        /* About to sleep: from here on posters wake it (corio__inbox_post). Whatever came
         * before they saw that is looked at now (both sides sequentially consistent); the
         * wait above may also have consumed the wake-up of a message still in the inbox, or
         * of the runtime's stop: a blocking wait now would sleep on it. */
        bool sleeps = !came && timeout != 0;
        if (sleeps) {
            s->rts.sleeps++;
            atomic_store_explicit(&s->awake, false, memory_order_seq_cst);
            corio__store_load_fence();
            if (atomic_load_explicit(&s->inbox.has, memory_order_seq_cst) ||
                (!root && s->live == 0 && corio__rt_stopping(s)) ||
                (s->rt && corio__rt_queued_elsewhere(s))) /* taken in the next round */
                timeout = 0;
        }
        /* A runtime's scheduler that sleeps with nothing of its own that could wake a task
         * (no op in its context, no timer, no outside wait) counts as stuck until it wakes;
         * the last to be counted, with no message pending anywhere, finds the deadlock. */
        bool stuck = sleeps && timeout < 0 && s->rt && !s->outside_waits &&
                     !afs__ctx_pending(s->ctx);
        if (stuck && corio__rt_stuck(s)) {
            atomic_store_explicit(&s->awake, true, memory_order_seq_cst);
            corio__rt_report_deadlock(s);
            rc = -EDEADLK;
            break;
        }
        /* Only yields to go on with and nothing in the context: no need to ask the kernel
         * (unless wake-ups for other schedulers wait in the ring). */
        if (!came && (!busy || afs__ctx_pending(s->ctx) || s->wakes_staged)) {
            s->wakes_staged = false;
            afs_ctx_stats(s->ctx, &before);
            int n = afs_ctx_wait(s->ctx, busy ? 0 : 1, timeout);
            if (sleeps) {
                atomic_store_explicit(&s->awake, true, memory_order_seq_cst);
                if (s->rt) {
                    if (stuck)
                        corio__rt_unstuck(s);
                    if (corio__rt_deadlocked(s)) { /* found by another scheduler */
                        corio__rt_report_deadlock(s);
                        rc = -EDEADLK;
                        break;
                    }
                    corio__rt_awake(s);
                    corio__rt_woke(s);
                }
            }
            afs_ctx_stats(s->ctx, &after);
            s->stats.submits += after.kernel_submits - before.kernel_submits;
            if (n < 0 && n != -EINTR && n != -EAGAIN) {
                if (s->rt)
                    corio__rt_fail(s, n);
                rc = n;
                break;
            }
        }

        /* Resume phase: completions made tasks ready in completion order (their callbacks
         * ran in the wait); then what other threads sent, timers, and the tasks that
         * yielded. */
        corio__inbox_deliver(s);
        corio__fire_timers(s);
        while ((t = corio__waitq_pop(&s->yielded)))
            corio__ready(t, 0);
    }
    atomic_store_explicit(&s->awake, false, memory_order_seq_cst);
    /* Wake-ups staged by the last phase go out now. */
    if (s->wakes_staged) {
        s->wakes_staged = false;
        (void)afs_ctx_wait(s->ctx, 0, 0);
    }
    afs_waiter_set(prev_waiter);
    if (s->rt)
        afs__ctx_unbind(s->ctx, prev_bound);
    tls_sched = prev_sched;
    return rc;
}

int corio_sched_run(struct corio_sched *s, corio_fn *fn, void *arg)
{
    AFS_CHECK(s != NULL && fn != NULL, "NULL argument");
    corio__sched_check(s, __func__);
    AFS_CHECK(!s->running && corio_current() == NULL, "corio_sched_run is not reentrant");
    int err = corio__stack_thread_init();
    if (err < 0)
        return err;
    /* The last run's batches were kept for threads still returning from their answers. */
    corio__dispatch_free_batches(s, false);
    struct corio_task *root = task_alloc(s);
    if (!root)
        return -ENOMEM;
    root->fn = fn;
    root->arg = arg;
    root->state = CORIO__READY;
    corio__waitq_push(&s->ready, root);
    s->root = root;
    s->running = true;
    int rc = corio__sched_loop(s, root);
    if (rc < 0) {
        corio__abandon(s, root);
        s->live = 0;
        s->outside_waits = 0;
    } else {
        task_free(root);
    }
    s->root = NULL;
    s->running = false;
    return rc;
}
