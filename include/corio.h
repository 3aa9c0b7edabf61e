/*
 * corio: a stackful coroutine scheduler on top of asyncfs that turns every CPU phase's file
 * requests into one kernel submission.
 *
 * The model (one scheduler per thread):
 *  1. CPU phase: every ready task runs until it suspends (file I/O, corio_io, a lock, a
 *     wait, a sleep, a yield) or ends. corio_spawn() runs the child at once, depth-first,
 *     until it first suspends, so a loop that spawns N readers queues N reads in one phase.
 *  2. I/O phase: every file op queued in the CPU phase goes to the kernel in one submission
 *     (one io_uring_enter on io_uring), and every generic request goes to the dispatcher in
 *     one call.
 *  3. Resume phase: completions are reaped; each completed task becomes ready, first come
 *     first served. Woken tasks (mutex hand-off, wait-group release) are queued, never run
 *     nested. Then the next CPU phase.
 *
 * Inside a task, afs_pread/afs_pwrite/afs_preadv/afs_pwritev/afs_fsync, sync-mode
 * afs_read/afs_write over the sync threshold and afs_last_op_wait suspend the task only,
 * for files opened on the scheduler's context (corio_sched_ctx()).
 *
 * Conventions: as in asyncfs.h (negative errno values). Calls that take a `struct
 * corio_task *t` must be made by that task while it runs; anything else (resuming a task
 * that is not suspended, unlocking a mutex the task does not hold, a negative wait-group
 * counter) is a bug and aborts with a message, in release builds too.
 */
#ifndef CORIO_H
#define CORIO_H

#include "asyncfs.h"

#ifdef __cplusplus
extern "C" {
#endif

struct corio_sched;
struct corio_task;
struct corio_batch;

typedef void corio_fn(struct corio_task *t, void *arg);
typedef void corio_dispatch_fn(void *user, struct corio_batch *b);

#define CORIO_TRACE 0x1u /* corio_log() prints, prefixed with the task's path ("0/3/1") */

struct corio_config {
    struct afs_ctx    *ctx;        /* NULL: the scheduler creates its own with defaults */
    size_t             stack_size; /* per task; default 256 KiB virtual, guard page below */
    unsigned           io_limit;   /* generic requests in flight at most; default 128 */
    corio_dispatch_fn *dispatch;   /* generic batched I/O (corio_io); may be NULL */
    void              *dispatch_user;
    unsigned           flags;      /* CORIO_TRACE */
};

AFS_API void corio_config_default(struct corio_config *cfg);

/* Creates a scheduler for the calling thread. Returns 0, -EINVAL (bad config), -ENOMEM,
 * or the error of creating its context. A context passed in cfg stays the caller's. */
AFS_API int  corio_sched_new(struct corio_sched **out, const struct corio_config *cfg);
AFS_API void corio_sched_free(struct corio_sched *s);

/* Runs fn(root, arg) as the root task until every task is done: 0. -EDEADLK when tasks
 * remain suspended with nothing that could ever wake them (no file op, timer or generic
 * request in flight): they are reported on stderr and abandoned (their stacks freed without
 * unwinding), never a hang. Not reentrant: call it from outside any task. */
AFS_API int  corio_sched_run(struct corio_sched *s, corio_fn *fn, void *arg);

struct corio_stats {
    uint64_t phases;   /* CPU/I-O phase cycles */
    uint64_t submits;  /* kernel submissions made by the I/O phases */
    uint64_t ios;      /* file ops and generic requests issued by tasks */
    uint64_t switches; /* switches into tasks */
    uint64_t tasks;    /* tasks spawned */
};
AFS_API void corio_sched_stats(const struct corio_sched *s, struct corio_stats *out);

/* The context whose files' ops join the phase batches. */
AFS_API struct afs_ctx *corio_sched_ctx(const struct corio_sched *s);

/* ------------------------------------------------------------------------------------------
 * Tasks
 * ---------------------------------------------------------------------------------------- */

/* Spawns a child of `parent` (the running task) and runs it at once until it first
 * suspends; then `parent` goes on. With `child` non-NULL, *child stays valid until
 * `parent` is done (corio_task_done() tells whether it finished); otherwise the task is
 * freed as soon as it is done. A cancelled parent's children start cancelled.
 * Returns 0, or -ENOMEM (no stack: each live task's stack is a mapping plus a guard page,
 * two entries of the process's memory map, so Linux's default vm.max_map_count of 65530
 * allows about 32k live tasks). */
AFS_API int corio_spawn(struct corio_task *parent, corio_fn *fn, void *arg,
                        struct corio_task **child);

/* Suspends t until every child of t is done (including grandchildren: a child is done
 * only when its own children are). Returns at once when t has none. */
AFS_API void corio_wait(struct corio_task *t);

/* Lets every other ready task run: t goes on in the next CPU phase. */
AFS_API void corio_yield(struct corio_task *t);

/* Suspends t for ns nanoseconds (a timer in the scheduler's wait, not a thread). Returns 0,
 * -ECANCELED if t is cancelled, -ETIMEDOUT if its deadline passes first. */
AFS_API int  corio_sleep(struct corio_task *t, int64_t ns);

/* The running task, or NULL outside a task (polyglot code asks this). */
AFS_API struct corio_task  *corio_current(void);
AFS_API struct corio_sched *corio_task_sched(struct corio_task *t);
AFS_API int                 corio_task_done(const struct corio_task *t);

/* Monotonic time in nanoseconds; deadlines are absolute values of this clock. */
AFS_API int64_t corio_now(void);

/* Prints "[path] message" to stderr when the scheduler has CORIO_TRACE. */
AFS_API void corio_log(struct corio_task *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ------------------------------------------------------------------------------------------
 * Cancellation and deadlines
 * ---------------------------------------------------------------------------------------- */

/* Cancels t and all its descendants (also those spawned later). Their file ops in flight
 * are cancelled in the kernel; each blocking call (file I/O, sleep, lock, wait...) then
 * returns -ECANCELED, at once for later calls. A task resumes only after the kernel is done
 * with its buffer. May be called from any task of the scheduler. */
AFS_API void corio_cancel(struct corio_task *t);
/* Non-zero once t or an ancestor is cancelled. */
AFS_API int  corio_cancelled(const struct corio_task *t);

/* Past deadline_ns (absolute, corio_now()), t's blocking calls fail with -ETIMEDOUT and its
 * ops in flight are cancelled. Applies to t's descendants too. INT64_MAX (or 0) clears it. */
AFS_API void corio_set_deadline(struct corio_task *t, int64_t deadline_ns);

/* ------------------------------------------------------------------------------------------
 * Synchronisation. All are plain structs you embed; all stay correct across any number of
 * reuses. Blocking calls abort if t is not the running task.
 * ---------------------------------------------------------------------------------------- */

struct corio__waitq {
    struct corio_task *head, *tail;
    size_t             len;
};

struct corio_mutex {
    struct corio_task  *owner;
    struct corio__waitq waiters;
};
#define CORIO_MUTEX_INIT {0}

/* Locks m, FIFO: unlock hands the lock to the longest waiter. Returns 0, or -ECANCELED /
 * -ETIMEDOUT when t is cancelled or past its deadline while waiting (the lock is then not
 * held, and the queue stays consistent). */
AFS_API int    corio_mutex_lock(struct corio_task *t, struct corio_mutex *m);
/* Unlocks m; aborts if the running task does not hold it. */
AFS_API void   corio_mutex_unlock(struct corio_mutex *m);
AFS_API size_t corio_mutex_waiters(const struct corio_mutex *m);

struct corio_wg {
    long                count;
    struct corio__waitq waiters;
};
#define CORIO_WG_INIT {0}

AFS_API void corio_wg_add(struct corio_wg *wg, int delta); /* a negative counter aborts */
AFS_API void corio_wg_done(struct corio_wg *wg);
/* Suspends t until the counter is 0: 0, or -ECANCELED / -ETIMEDOUT. */
AFS_API int  corio_wg_wait(struct corio_task *t, struct corio_wg *wg);

/* An error group: members are children of the group's task; the first non-zero result
 * cancels the other members. */
struct corio_group {
    struct corio_task  *task;
    int                 err;
    unsigned            live;
    struct corio_task  *members; /* list of live members, for cancellation */
    struct corio__waitq waiters;
};
AFS_API void corio_group_init(struct corio_group *g, struct corio_task *t);
/* Spawns fn(member, arg) as a member (it runs at once until it first suspends).
 * Returns 0, -ECANCELED when the group already failed, or -ENOMEM. */
AFS_API int  corio_group_go(struct corio_group *g, int (*fn)(struct corio_task *, void *),
                            void *arg);
/* Waits for every member: the first non-zero result in completion order, or 0. */
AFS_API int  corio_group_wait(struct corio_group *g);

/* Singleflight: concurrent callers with the same key share one execution of fn, run by the
 * first caller. Returns fn's result and its *out; *shared = 1 when the result went to more
 * than one caller. shared may be NULL. */
AFS_API int corio_do(struct corio_task *t, const void *key, size_t key_len,
                     int (*fn)(struct corio_task *, void *arg, void **out), void *arg,
                     void **out, int *shared);

/* ------------------------------------------------------------------------------------------
 * Generic batched I/O (the dispatcher). corio_io() queues `input` and suspends t; in the
 * I/O phase the dispatcher gets every request of the CPU phase in one call, in the order the
 * tasks suspended, at most io_limit in flight. The dispatcher answers each request exactly
 * once, with corio_batch_respond() or corio_batch_retry(), at once or later, from any thread.
 * The batch stays valid while any of its requests is unanswered, and after that for as long
 * as the dispatch call that received it runs; a batch answered from other threads stays
 * valid until corio_sched_run() returns.
 * ---------------------------------------------------------------------------------------- */

/* Returns the output the dispatcher gave, or NULL if t was cancelled or timed out before the
 * request was dispatched (corio_cancelled() tells). Aborts when the scheduler has no
 * dispatcher. */
AFS_API void  *corio_io(struct corio_task *t, void *input);
AFS_API size_t corio_batch_len(const struct corio_batch *b);
AFS_API void  *corio_batch_input(const struct corio_batch *b, size_t i);
/* Thread-safe. Answering a request twice aborts. */
AFS_API void   corio_batch_respond(struct corio_batch *b, size_t i, void *output);
/* Thread-safe: request i goes to the dispatcher again in the next I/O phase. */
AFS_API void   corio_batch_retry(struct corio_batch *b, size_t i);

#ifdef __cplusplus
}
#endif
#endif /* CORIO_H */
