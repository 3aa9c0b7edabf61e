/* corio internals: the scheduler (sched.c: run loop, spawn, switching; sched_setup.c), queue
 * waits, the asyncfs waiter and the remote inbox (wait.c), timers (timer.c), cancellation and
 * deadlines (cancel.c), the dispatcher (dispatch.c), and the primitives on top (sync.c,
 * future.c, gen.c, job.c), which reach the scheduler only through wait records. */
#ifndef CORIO_INT_H
#define CORIO_INT_H

#include "corio.h"
#include "core/internal.h"
#include "stack.h"
#include "switch.h"

#include <stdbool.h>

enum corio__state {
    CORIO__READY = 1, /* in the run queue */
    CORIO__RUNNING,
    CORIO__SUSPENDED, /* waiting for something (t->w) */
    CORIO__ZOMBIE,    /* its function returned; children still live */
    CORIO__DONE
};

/* ------------------------------------------------------------------------------------------
 * Queues of tasks, and the private words of the public structs
 * ---------------------------------------------------------------------------------------- */

/* A queue of tasks (through corio_task.q_node). A task is on at most one. */
struct corio__waitq {
    struct afs_list list;
    size_t          len;
};

/* struct corio_private (corio.h) holds a waitq, a plain list or a message in place. */
_Static_assert(sizeof(struct corio__waitq) <= sizeof(struct corio_private) &&
                   _Alignof(struct corio__waitq) <= _Alignof(struct corio_private),
               "a waitq must fit in struct corio_private");

static inline struct corio__waitq *corio__wq(struct corio_private *p)
{
    return (struct corio__waitq *)(void *)p->private_;
}

static inline struct afs_list *corio__list(struct corio_private *p)
{
    return (struct afs_list *)(void *)p->private_;
}

/* ------------------------------------------------------------------------------------------
 * The wait record: what a suspended task waits for
 * ---------------------------------------------------------------------------------------- */

struct corio__wait;
/* Ends the wait of t early with err (-ECANCELED or -ETIMEDOUT), supplied by whatever t waits
 * on: it takes t off what it waits on and calls corio__ready(t, err), or starts an end that
 * readies t later (a file op cancelled in the kernel), or does nothing (it cannot be ended:
 * a request the dispatcher owns). */
typedef void corio__cancel_fn(struct corio_task *t, struct corio__wait *w, int err);

/* On the stack of the blocking call while the task is suspended (libdill's clause). */
struct corio__wait {
    corio__cancel_fn *cancel;   /* NULL: cancellation and deadlines do not end this wait */
    void             *what;     /* what it waits for: a queue, an op, a request... */
    int64_t           until;    /* a wake-up time (sleep): the wait ends with 0 then */
    bool              outside;  /* the kernel or another thread may end it: no -EDEADLK */
    bool              timed_out; /* set by cancel: the deadline ended it, not a cancel */
    int               err;      /* how it ended: corio__ready()'s err */
};

/* A wait record for a wait that only `what` ends (no cancel, no wake-up time). */
#define CORIO__WAIT_FOR(w) {.cancel = NULL, .what = (w), .until = INT64_MAX}

/* ------------------------------------------------------------------------------------------
 * Tasks
 * ---------------------------------------------------------------------------------------- */

#define CORIO__LINE AFS__LINE

/* Laid out for the scheduler's hot path: what every switch, suspension, wake-up and
 * cancellation check reads (the first lines, with the saved registers) comes first, so a task
 * that runs once per phase among thousands costs few cache lines; the rest (its tree, links,
 * hooks, stack) only at spawn, finish and cancel. Allocated on a cache line (task_alloc).
 * A completion that makes it ready (corio__ready) touches the first line only. */
struct corio_task {
    struct corio_sched  *sched;
    struct corio__wait  *w;            /* while suspended: what it waits for */
    /* The queue the task is on: the run queue, the yield queue or a wait queue. */
    struct afs_list_node q_node;
    struct corio__waitq *q_on;
    size_t               heap_idx;     /* 1-based position in the timer heap, 0 = none */
    int64_t              deadline;     /* its own; INT64_MAX = none */
    /* corio_shield_begin() depth. While non-zero, cancellations and deadlines of this task
     * and of its ancestors do not reach it or its descendants (their own ones still do). */
    unsigned             shield;
    uint8_t              state;        /* enum corio__state */
    bool                 cancelled;    /* this task itself (ancestors are checked too) */
    bool                 inh_cancelled;
    bool                 keep;         /* a handle was given out: free with the parent */
    bool                 own_deadline; /* a generator's producer: its ancestors' deadlines do
                                          not reach it (their cancellation does) */
    bool                 inh_cancel_fact; /* a remote ancestor is cancelled, behind a shield
                                             or not: what corio_cancelled() reports */
    struct corio_task   *parent;
    /* A task started by another scheduler's corio_spawn_on() (rt.c): no local parent; its
     * parent's cancellation and deadline arrive as inh_cancelled / inh_deadline. */
    int64_t              inh_deadline; /* INT64_MAX = none */

    struct corio__regs  regs;

    /* Timer: a wake-up or a deadline during a wait (timer.c). */
    int64_t timer_at;

    struct afs_list      children;     /* live children, and done ones kept as handles */
    struct afs_list_node sib;          /* on the parent's children, or the free list */
    unsigned             live_children;
    uint32_t             id;           /* index among its parent's children, for paths */
    uint32_t             nspawned;
    corio_fn            *fn;
    void                *arg;
    struct corio__link  *link;
    struct afs_list      links;            /* its own children on other schedulers (rt.c) */

    /* Called once when the task is done (its function returned and its children are done),
     * by the code that set it: error groups keep their members with it. */
    void               (*on_done)(struct corio_task *t);
    void                *hook_data;
    struct afs_list_node hook_node;

    struct corio__stack stack;
    void               *asan_fake; /* ASan fake stack while switched out */
    void               *mem;       /* what task_alloc allocated (t is aligned inside it);
                                      NULL: carved from a region (task_carve) */

    /* The op of the task's blocking reads and writes (afs_waiter.op_slot), last: not
     * cleared when the task is made. Off the stack, a completion touches the op's two
     * lines and the task's first, all in the task's memory, and the frames of the blocking
     * call shrink by the op's size. */
    _Alignas(CORIO__LINE) struct afs_op op;
};

/* The head of a region of task structs in large pages (sched.c), on its first line. */
struct corio__task_chunk {
    struct corio__task_chunk *next;
    void                     *map;
    size_t                    map_size;
};

/* Queues of tasks: a task is on at most one (q_on). */
static inline void corio__waitq_push(struct corio__waitq *q, struct corio_task *t)
{
    AFS_CHECK(t->q_on == NULL, "task is already queued");
    afs_list_push_back(&q->list, &t->q_node);
    q->len++;
    t->q_on = q;
}

static inline void corio__waitq_remove(struct corio__waitq *q, struct corio_task *t)
{
    AFS_CHECK(t->q_on == q, "task is not on this queue");
    afs_list_remove(&q->list, &t->q_node);
    t->q_on = NULL;
    q->len--;
}

static inline struct corio_task *corio__waitq_pop(struct corio__waitq *q)
{
    struct afs_list_node *n = q->list.first;
    if (!n)
        return NULL;
    struct corio_task *t = AFS_LIST_ITEM(n, struct corio_task, q_node);
    corio__waitq_remove(q, t);
    return t;
}

static inline void corio__waitq_push_front(struct corio__waitq *q, struct corio_task *t)
{
    AFS_CHECK(t->q_on == NULL, "task is already queued");
    afs_list_push_front(&q->list, &t->q_node);
    q->len++;
    t->q_on = q;
}

/* ------------------------------------------------------------------------------------------
 * The remote inbox: everything that reaches the scheduler from other threads
 * ---------------------------------------------------------------------------------------- */

struct corio__msg {
    struct afs_list_node node;
    void               (*deliver)(struct corio__msg *m); /* on the scheduler's thread */
};
_Static_assert(sizeof(struct corio__msg) <= sizeof(struct corio_private),
               "a message must fit in struct corio_private");

struct corio__inbox {
    afs__mutex      mu;
    atomic_bool     has;    /* msgs or spawns not empty; set under mu */
    struct afs_list msgs;
    struct afs_list spawns; /* corio_spawn_on() requests not yet started (rt.c) */
    atomic_size_t   nspawns;
    atomic_uint     waking; /* posters between their post and the end of their wake-up:
                               corio_sched_free waits for them (corio__inbox_post) */
};

/* corio_sched_free: waits until no poster is still waking s. */
void corio__inbox_wait_posters(struct corio_sched *s);
/* Any thread: queues m for the resume phase of s and wakes s. m must stay valid until it is
 * delivered. */
void corio__inbox_post(struct corio_sched *s, struct corio__msg *m);
/* Any thread: sets *flag under the inbox's lock; false when it was already set (a one-time
 * claim, such as completing an external future). */
bool corio__inbox_claim(struct corio_sched *s, unsigned char *flag);
/* Any thread: whether m waits in s's inbox (posted, not yet delivered). */
bool corio__inbox_holds(struct corio_sched *s, const struct corio__msg *m);
/* The scheduler's thread: delivers every message, in the order posted, then starts the
 * spawns that came. */
void corio__inbox_deliver(struct corio_sched *s);
/* Any thread: pushes the node of a spawn request onto s's spawn queue (stealable when
 * `back` is false: taken from the back) and wakes s. */
void corio__inbox_post_spawn(struct corio_sched *s, struct afs_list_node *n);
/* A scheduler's thread: wakes s (asleep in its wait) with nothing posted. */
void corio__sched_wake(struct corio_sched *s);

/* Between a sequentially consistent store and a load of another atomic that must not pass
 * it (the two sides of "I sleep / I post: one of us sees the other"): C11 needs nothing more,
 * but under qemu's user mode on x86 (aarch64's STLR then LDAR) both sides were seen to miss
 * each other, a scheduler asleep with a message waiting. A full fence keeps the order
 * everywhere; it is on the way to sleep or to a cross-thread hand-off, never on a task's
 * hot path. */
static inline void corio__store_load_fence(void)
{
    /* Not under ThreadSanitizer, which models no fences (gcc refuses them under it): it
     * checks the C11 order, which the sequentially consistent accesses around this give. */
#if !CORIO__TSAN
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

static inline bool corio__inbox_pending(struct corio__inbox *in)
{
    return atomic_load_explicit(&in->has, memory_order_relaxed);
}

/* ------------------------------------------------------------------------------------------
 * Timers (timer.c): a min-heap of tasks on timer_at
 * ---------------------------------------------------------------------------------------- */

struct corio__timers {
    struct corio_task **heap;
    size_t              len, cap;
};

void    corio__timer_add(struct corio__timers *tm, struct corio_task *t, int64_t at);
void    corio__timer_remove_slow(struct corio__timers *tm, struct corio_task *t);
/* The first task whose time is <= now, taken off the heap; NULL when none. */
struct corio_task *corio__timer_due(struct corio__timers *tm, int64_t now);
void    corio__timers_free(struct corio__timers *tm);

/* The earliest time, INT64_MAX when there is none. */
static inline int64_t corio__timer_next(const struct corio__timers *tm)
{
    return tm->len ? tm->heap[0]->timer_at : INT64_MAX;
}

/* Takes t's timer off the heap, if it has one (every wake-up asks: inline). */
static inline void corio__timer_remove(struct corio__timers *tm, struct corio_task *t)
{
    if (t->heap_idx)
        corio__timer_remove_slow(tm, t);
}

/* ------------------------------------------------------------------------------------------
 * The generic dispatcher (dispatch.c)
 * ---------------------------------------------------------------------------------------- */

struct corio__dispatcher {
    struct afs_list pending;     /* queued in this CPU phase, in order */
    struct afs_list retried;     /* answered with retry: before pending at the next dispatch */
    size_t          inflight;    /* dispatched and unanswered */
    struct corio_batch *batches; /* answered from other threads: kept until the run ends */
};

/* The I/O phase: everything pending, up to io_limit, to the dispatcher in one call. */
void corio__dispatch(struct corio_sched *s);
/* Frees the batches kept for threads still returning from their answers: when no request
 * is in flight, or `all`. */
void corio__dispatch_free_batches(struct corio_sched *s, bool all);

static inline bool corio__dispatch_busy(const struct corio__dispatcher *d)
{
    return d->pending.first || d->retried.first || d->inflight;
}

/* ------------------------------------------------------------------------------------------
 * The scheduler
 * ---------------------------------------------------------------------------------------- */

struct corio_sched {
    struct corio_config  cfg;
    struct afs_ctx      *ctx;
    bool                 own_ctx;
    bool                 running;
    struct afs_waiter    waiter;
    struct corio__regs   main_regs;
    void                *main_fake;
    const void          *main_lo;
    size_t               main_size;
    struct corio__stack_pool stacks;

    struct corio_task   *current;
    struct corio_task   *zombie;   /* finished, its stack to be freed by whoever runs next */
    struct corio_task   *root;
    struct corio__waitq  ready;    /* this CPU phase */
    struct corio__waitq  yielded;  /* the next one */
    size_t               live;     /* tasks not done */
    size_t               outside_waits; /* suspended in waits with `outside` set */
    struct afs_list      free_tasks;
    size_t               tasks_made;   /* task structs allocated (task_alloc) */
    struct corio__task_chunk *chunks;  /* regions in large pages tasks are carved from */
    char                *chunk_at, *chunk_end; /* the free part of the newest one */

    struct corio__timers     timers;
    struct corio__dispatcher disp;
    struct corio__inbox      inbox;

    /* Singleflight calls (sync.c), and how to free those left by an abandoned run. */
    struct afs_list      flights;
    void               (*flights_free)(struct corio_sched *s);

    /* Threads for corio_go() (blocking.c), started on first use. */
    struct corio__blocking *blocking;

    uintptr_t            magic;   /* CORIO__SCHED_MAGIC ^ address while alive, AFS__DEAD once
                                     freed (out of the hot lines, and past the words an
                                     allocator writes into freed memory) */

    struct corio_stats   stats;

    /* A scheduler of a runtime (rt.c); NULL for one made by corio_sched_new(). */
    struct corio_rt     *rt;
    unsigned             index;
    size_t               links;        /* remote children of this scheduler's tasks */
    bool                 wakes_staged; /* wake-ups staged as ring messages: submit them */
    struct afs_list      remote_roots; /* tasks started here for other schedulers */
    struct corio_rt_stats rts;   /* written by its own thread */
    _Alignas(64) atomic_size_t load;   /* live tasks + queued spawns, read by others */
    atomic_bool          awake;        /* in its loop and not about to sleep: it looks at its
                                          inbox before it does, so a post needs no wake-up */
    atomic_int           cpu;          /* the CPU it last ran on (corio__rt_awake), or -1 */
    /* corio__rt_spin's back-off: [0] idle, [1] while ends of remote children are due */
    unsigned             spin_misses[2], spin_skip[2];
};

#define CORIO__SCHED_MAGIC ((uintptr_t)0x64686353u)

/* Every public call that takes a scheduler, after its own NULL rule: a freed scheduler (or
 * memory that never was one) aborts naming `call` (sched_setup.c). */
void corio__sched_check(const struct corio_sched *s, const char *call);
/* The largest buffer of a buffered stream (corio_stream_new and the calls that make one). */
#define CORIO__STREAM_MAX_BUF ((size_t)1 << 30)

/* Whether corio_sched_new takes cfg (corio_rt_new asks it for its schedulers' settings). */
bool corio__config_ok(const struct corio_config *cfg);

/* The runtime (rt.c), as the scheduler sees it. */
/* A spawn request taken from a spawn queue, started on s (the resume phase). */
void corio__rt_start(struct corio_sched *s, struct afs_list_node *n);
/* s is about to block with nothing in flight: polls its inbox for a short while first (a
 * reply often comes within microseconds; a blocking wait and its wake-up cost more). True
 * when something came. */
bool corio__rt_spin(struct corio_sched *s);
/* s's thread runs (a phase ended, a wait returned, a poll goes on): it notes its CPU. */
void corio__rt_awake(struct corio_sched *s);
/* s is about to block: takes queued spawns of busier schedulers; true when it started some. */
bool corio__rt_steal(struct corio_sched *s);
/* A spawn is the first queued on s, which is awake (or spawns are left there after a
 * steal): wakes one sleeping scheduler to take them (one at a time: the next may be woken
 * once a woken one is back from its wait). */
void corio__rt_wake_thief(struct corio_sched *s);
/* s is back from a blocking wait (a woken thief is no longer on its way). */
void corio__rt_woke(struct corio_sched *s);
/* Spawns are queued on another scheduler of s's runtime (s, about to sleep, takes them). */
bool corio__rt_queued_elsewhere(const struct corio_sched *s);
/* Deadlocks across a runtime's schedulers: s is about to sleep with nothing of its own that
 * could wake a task; true when the runtime is deadlocked (found now, or by another
 * scheduler), false when it was counted stuck (corio__rt_unstuck() when it wakes). */
bool corio__rt_stuck(struct corio_sched *s);
void corio__rt_unstuck(struct corio_sched *s);
bool corio__rt_deadlocked(const struct corio_sched *s);
/* A scheduler's loop failed (its context's wait returned an error that is no transient
 * condition): the whole run ends with err, every scheduler at its next phase. */
void corio__rt_fail(struct corio_sched *s, int err);
int  corio__rt_failed(const struct corio_sched *s); /* 0, or the first failure's error */
void corio__rt_report_deadlock(const struct corio_sched *s);
/* After a deadlock: frees the tasks s started for other schedulers and their trees (as
 * corio__abandon), and drops the links of an abandoned task t to its remote children. */
void corio__rt_abandon(struct corio_sched *s);
void corio__rt_links_drop(struct corio_task *t);
/* t, started by corio__rt_start(), is done: its parent's scheduler learns it. */
void corio__rt_root_done(struct corio_task *t);
/* t (its scheduler's thread) was cancelled / its effective deadline changed: its children on
 * other schedulers learn it. passed: a deadline they had that passed before this change
 * still ends their waits it reached (false: the change came first, cancel.c's rearm_tree). */
void corio__rt_links_cancel(struct corio_task *t);
void corio__rt_links_deadline(struct corio_task *t, bool passed);
/* t or an ancestor is cancelled, behind a shield: its children on other schedulers learn
 * the plain fact only (corio_cancelled()), not a cancellation that reaches them. */
void corio__rt_links_cancel_fact(struct corio_task *t);
/* The parent on another scheduler of t, a task started by corio__rt_start() (NULL for
 * others). It and its ancestors outlive t; their ids and parents do not change. */
const struct corio_task *corio__rt_remote_parent(const struct corio_task *t);
/* The runtime wants its schedulers to stop once their tasks are done. */
bool corio__rt_stopping(const struct corio_sched *s);
/* A child of p (local or remote) is done: readies p when it waited for its children, and
 * finishes p when it only waited for them (sched.c). */
void corio__child_gone(struct corio_task *p);
/* sched.c: the run loop (root NULL: a runtime's other scheduler, until the runtime stops);
 * a task made ready to run fn(t, arg) with no parent; freeing a done task. */
int  corio__sched_loop(struct corio_sched *s, struct corio_task *root);
struct corio_task *corio__task_new(struct corio_sched *s, corio_fn *fn, void *arg);
void corio__task_free(struct corio_task *t);
/* Unmaps the regions task structs were carved from (corio_sched_free, tasks all done). */
void corio__task_chunks_free(struct corio_sched *s);
/* The effective deadline and cancellation of t, shields included (cancel.c). */
int64_t corio__effective_deadline(const struct corio_task *t);
bool    corio__cancel_reaches(const struct corio_task *t);
/* The same, and t's deadline in *deadline (INT64_MAX: none). */
bool    corio__cancel_reaches_at(const struct corio_task *t, int64_t *deadline);
/* Ends the waits of t and its descendants that a cancellation / deadline now reaches. */
void    corio__cancel_tree(struct corio_task *t);
/* Passes the plain fact of a cancellation (corio_cancelled(), not an interruption) to the
 * children on other schedulers of t and of all its descendants (cancel.c). */
void    corio__cancel_fact_tree(struct corio_task *t);
/* Re-arms the timers of t's waiting descendants (and t) for a changed deadline; passed:
 * those already due for a deadline fire first (cancel.c). */
void    corio__rearm_tree(struct corio_task *t, bool passed);

/* The scheduler running on the calling thread, or NULL. */
struct corio_sched *corio__thread_sched(void);
/* t's function has returned with children still running: a future of theirs
 * (corio_spawn_future, corio_spawn_on) that lay in t's frames (below top, an address in the
 * frame that called t's function) is gone with them, and is not completed (its memory may
 * be another frame's, or another task's stack, by then). Called where the function returns:
 * by task_entry, and by the wrappers that run a task's function and then wait for its
 * children (fut_entry, rt_entry, gen_entry, a job task's callbacks), before that wait puts
 * its frames there. */
void corio__detach_frame_futures(struct corio_task *t, const char *top);
void corio__rt_links_detach(struct corio_task *t, const char *lo, const char *hi);
void corio__check_running(struct corio_task *t, const char *where);

/* Suspends the running task t on the record w until corio__ready(t, err); returns err.
 * Arms a timer for w->until and, when w->cancel is set, for t's deadline. */
int  corio__suspend(struct corio_task *t, struct corio__wait *w);
/* As corio__suspend, with t's effective deadline already known (corio__interrupted_at). */
int  corio__suspend_by(struct corio_task *t, struct corio__wait *w, int64_t deadline);
/* Makes the suspended task t runnable; its wait ends with err. */
void corio__ready(struct corio_task *t, int err);
/* corio__ready(t, 0) for a task suspended on a wait with `outside` set, without reading its
 * wait record (on the task's stack, and out of the caches when a completion comes among
 * thousands): its err stays the 0 that corio__suspend_by put there. */
void corio__ready_outside(struct corio_task *t);

/* The cancel of a queue wait: t off its queue, ready with err. */
void corio__waitq_cancel(struct corio_task *t, struct corio__wait *w, int err);
/* Suspends the running task t on q until corio__wake() (returns 0) or an interruption
 * (cancel/deadline: returns -ECANCELED or -ETIMEDOUT, t off the queue). */
int  corio__wait_on(struct corio_task *t, struct corio__waitq *q);
/* As corio__wait_on, but only corio__wake() ends it (structured waits for members). */
void corio__wait_on_hard(struct corio_task *t, struct corio__waitq *q);
/* Makes a task waiting on a queue runnable (it is taken off the queue) with result err. */
void corio__wake(struct corio_task *t, int err);
/* Aborts unless t may be woken from this thread: t's scheduler's own, or any while that
 * scheduler does not run. */
void corio__wake_check(const struct corio_task *t);
/* Whether this thread may not touch t's scheduler: another scheduler's thread, or a thread
 * that runs none while t's scheduler runs (wait.c). */
bool corio__off_thread(const struct corio_task *t);
void corio__wake_all(struct corio__waitq *q);

/* Cancellation and deadlines (cancel.c). */
/* 0, or -ECANCELED / -ETIMEDOUT when a blocking call must fail at once. */
int     corio__interrupted(struct corio_task *t);
/* The same, with *deadline set to t's effective deadline (INT64_MAX: none). */
int     corio__interrupted_at(const struct corio_task *t, int64_t *deadline);
/* When t's timer must fire for its wait w: min(w->until, deadline if w->cancel). */
int64_t corio__wait_timer(const struct corio_task *t, const struct corio__wait *w);
/* The resume phase: due wake-ups and deadlines. */
void    corio__fire_timers(struct corio_sched *s);

/* The asyncfs waiter: blocking file calls in a task suspend the task (wait.c). */
void corio__waiter_init(struct corio_sched *s);

/* After a deadlock (sched_setup.c): the report, and freeing t and its descendants without
 * unwinding their stacks. */
void corio__report_deadlock(struct corio_sched *s);
void corio__abandon(struct corio_sched *s, struct corio_task *t);

/* Blocking jobs (blocking.c): joins the scheduler's threads (at corio_sched_free). */
void corio__blocking_free(struct corio_sched *s);
/* The waiter of b gives up on it: b's function is asked to stop, and release(b) runs once
 * nothing uses b any more (now, or on the pool thread when the function returns). */
void corio__blocking_abandon(struct corio_task *t, struct corio_blocking *b,
                             void (*release)(struct corio_blocking *b));

#endif
