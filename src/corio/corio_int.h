/* corio internals shared by the scheduler (sched.c) and the primitives (sync.c). */
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
    CORIO__SUSPENDED, /* waiting for something (t->wait) */
    CORIO__ZOMBIE,    /* its function returned; children still live */
    CORIO__DONE
};

enum corio__wait {
    CORIO__W_NONE = 0,
    CORIO__W_FILE,     /* an asyncfs op (t->op) */
    CORIO__W_IO,       /* a generic request */
    CORIO__W_SLEEP,
    CORIO__W_YIELD,
    CORIO__W_CHILDREN, /* corio_wait */
    CORIO__W_QUEUE,    /* a wait queue: mutex, wait group, singleflight */
    CORIO__W_HARDQ     /* a wait queue that cancellation and deadlines do not end */
};

struct corio__req; /* a generic request, in the task */

struct corio_task {
    struct corio_sched *sched;
    struct corio_task  *parent;
    struct corio_task  *children;          /* live children, and done ones kept as handles */
    struct corio_task  *sib_next, *sib_prev;
    unsigned            live_children;
    corio_fn           *fn;
    void               *arg;
    uint32_t            id;                /* index among its parent's children, for paths */
    uint32_t            nspawned;
    uint8_t             state;             /* enum corio__state */
    uint8_t             wait;              /* enum corio__wait */
    bool                keep;              /* a handle was given out: free with the parent */
    bool                cancelled;         /* this task itself (ancestors are checked too) */
    bool                timed_out;         /* its deadline fired during the current wait */
    int                 wake_err;          /* why a queue wait ended: 0, -ECANCELED... */
    int64_t             deadline;          /* its own; INT64_MAX = none */
    /* corio_shield_begin() depth. While non-zero, cancellations and deadlines of this task
     * and of its ancestors do not reach it or its descendants (their own ones still do). */
    unsigned            shield;

    /* The queue the task is on: the run queue, the yield queue or a wait queue. */
    struct corio_task   *q_next, *q_prev;
    struct corio__waitq *q_on;

    /* Timer: sleeping until `until`, or a deadline during a wait. */
    int64_t timer_at;
    int64_t until;
    size_t  heap_idx; /* 1-based position in the timer heap, 0 = none */

    struct afs_op     *op;  /* CORIO__W_FILE */
    struct corio__req *req; /* CORIO__W_IO */

    /* Error group membership. */
    struct corio_group *group;
    struct corio_task  *g_next, *g_prev;
    int (*gfn)(struct corio_task *, void *);
    void *garg;

    struct corio__regs  regs;
    struct corio__stack stack;
    void               *asan_fake; /* ASan fake stack while switched out */
};

struct corio__req {
    struct corio_task *task;
    void              *input, *output;
    struct corio__req *next;
    bool               answered;
};

struct corio_batch {
    struct corio_sched *sched;
    struct corio_batch *next;    /* all batches of the run, freed when it ends */
    size_t              n, left; /* left: unanswered, under sched->mu */
    struct corio__req  *reqs[];
};

struct corio__flight; /* singleflight calls, sync.c */

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
    size_t               file_waits; /* tasks suspended in file ops */
    struct corio_task   *free_tasks;

    struct corio_task  **heap;     /* timers, min-heap on timer_at */
    size_t               heap_len, heap_cap;

    /* Generic requests. */
    struct corio__req   *pending, *pending_tail; /* queued in this CPU phase, in order */
    size_t               io_inflight;            /* dispatched and unanswered */
    afs__mutex           mu;                     /* guards answered/retried and batches */
    atomic_bool          has_answers;            /* set with answered/retried, under mu */
    struct corio__req   *answered, *answered_tail;
    struct corio__req   *retried, *retried_tail;

    struct corio__flight *flights;
    struct corio_batch   *batches; /* answered from other threads: kept until the run ends */

    /* Futures (future.c). External futures completed by other threads wait here, under mu,
     * until the resume phase delivers them (has_answers is set with them). */
    struct corio_future  *fut_done, *fut_done_tail;
    size_t                ext_waits; /* tasks awaiting an external future: could progress */

    struct corio_stats   stats;
};

/* The scheduler's primitives for sync.c. */
void corio__check_running(struct corio_task *t, const char *where);
/* Suspends the running task t on wait queue q until corio__wake() (returns 0) or an
 * interruption (cancel/deadline: returns -ECANCELED or -ETIMEDOUT, t off the queue). */
int  corio__wait_on(struct corio_task *t, struct corio__waitq *q);
/* As corio__wait_on, but only corio__wake() ends it (structured waits for members). */
void corio__wait_on_hard(struct corio_task *t, struct corio__waitq *q);
/* Makes a task waiting on a queue runnable (it is taken off the queue) with result err. */
void corio__wake(struct corio_task *t, int err);
/* 0, or -ECANCELED / -ETIMEDOUT when a blocking call must fail at once. */
int  corio__interrupted(struct corio_task *t);
void corio__waitq_push(struct corio__waitq *q, struct corio_task *t);
struct corio_task *corio__waitq_pop(struct corio__waitq *q);
void corio__waitq_remove(struct corio__waitq *q, struct corio_task *t);
/* Group bookkeeping when a member is done (sync.c). */
void corio__group_member_done(struct corio_task *t);
void corio__flights_free(struct corio_sched *s);
/* The scheduler running on the calling thread, or NULL. */
struct corio_sched *corio__thread_sched(void);
/* Delivers external futures completed by other threads (future.c), on the scheduler's
 * thread in the resume phase; `list` is linked through next_done. */
void corio__futures_deliver(struct corio_future *list);

#endif
