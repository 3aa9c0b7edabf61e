/*
 * corio: a stackful coroutine scheduler on top of asyncfs that turns every CPU phase's file
 * requests into one kernel submission.
 *
 * The model (one scheduler per thread):
 *  1. CPU phase: every ready task runs until it suspends (file I/O, corio_io, a lock, a
 *     wait, a sleep, a yield) or ends. corio_spawn() runs the child at once, depth-first,
 *     until it first suspends, so a loop that spawns N readers queues N reads in one phase.
 *  2. I/O phase: every file op queued in the CPU phase goes to the kernel in one submission
 *     (one io_uring_enter on io_uring; a phase of more than 512 ops hands them over in
 *     slices of 512 as they are queued), and every generic request goes to the dispatcher
 *     in one call.
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

/* corio_log() prints, prefixed with the task's path ("[0/2/1]": the root's third child's
 * second child, children numbered from 0 in the order their parent spawned them; deeper
 * than 64 levels, the last 64 after "...": "[.../2/1]"); on a runtime the path goes on
 * across schedulers and ends with the index of the scheduler whose thread prints
 * ("[0/2/1@2]"). */
#define CORIO_TRACE 0x1u

struct corio_config {
    struct afs_ctx    *ctx;        /* NULL: the scheduler creates its own with defaults */
    size_t             stack_size; /* per task; default (and 0) 256 KiB virtual, a 16 KiB
                                      guard below; at most 1 GiB */
    unsigned           io_limit;   /* generic requests in flight at most, >= 1; default 128 */
    corio_dispatch_fn *dispatch;   /* generic batched I/O (corio_io); may be NULL */
    void              *dispatch_user;
    unsigned           flags;      /* CORIO_TRACE */
};

AFS_API void corio_config_default(struct corio_config *cfg);

/* Creates a scheduler for the calling thread. Returns 0, -EINVAL (bad config), -ENOMEM,
 * or the error of creating its context. A context passed in cfg stays the caller's. */
AFS_API int  corio_sched_new(struct corio_sched **out, const struct corio_config *cfg);
/* Frees s; not while it runs. NULL is ignored. Using s after this, or freeing it twice,
 * aborts (asyncfs.h's rule for handles). */
AFS_API void corio_sched_free(struct corio_sched *s);

/* Runs fn(root, arg) as the root task until every task is done: 0. -EDEADLK when tasks
 * remain suspended with nothing that could ever wake them (no file op, timer or generic
 * request in flight): they are reported on stderr and abandoned (their stacks freed without
 * unwinding). Waits that another thread may end are not counted as stuck, and go on
 * waiting: an external future, a channel (any thread may send, receive or close). Not
 * reentrant: call it from outside any task. */
AFS_API int  corio_sched_run(struct corio_sched *s, corio_fn *fn, void *arg);

/* A program's main in one call: creates a scheduler with the default configuration on the
 * calling thread, runs fn(root, arg) with corio_sched_run(), and frees the scheduler. Returns
 * corio_sched_run()'s result, or corio_sched_new()'s error (nothing ran then). Call it from
 * outside any task. */
AFS_API int  corio_run(corio_fn *fn, void *arg);

struct corio_stats {
    uint64_t phases;   /* CPU/I-O phase cycles */
    uint64_t submits;  /* kernel submissions made by the I/O phases */
    uint64_t ios;      /* file ops and generic requests issued by tasks */
    uint64_t switches; /* switches into tasks */
    uint64_t tasks;    /* tasks spawned */
    uint64_t stacks;   /* task stacks made (Windows: fibers created); a spawn served from the
                          scheduler's cache of finished tasks' stacks makes none */
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
 * Returns 0, or -ENOMEM (no stack). Each stack has a 16 KiB guard below it: on Linux 6.13 and
 * later page-table markers (MADV_GUARD_INSTALL) and stacks share mappings; on older kernels
 * PROT_NONE pages, two entries of the process's memory map per task, so the default
 * vm.max_map_count (65530) allows about 32k live tasks there. A task's own record (about
 * 0.8 KiB) is reused after it is done; past a scheduler's first 256, the records come from
 * 2 MiB regions advised to be transparent huge pages (Linux), kept until
 * corio_sched_free(). */
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

/* Prints "[path] message" to stderr, as one line of at most 1,023 bytes (the message cut
 * there), when the scheduler has CORIO_TRACE. */
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
 * returns -ECANCELED, at once for later calls (and for a call's later waits: a cancellation
 * that comes while t is woken but not yet running ends the next wait of the same call). A
 * task resumes only after the kernel is done with its buffer. May be called from any task
 * of t's scheduler, or from any thread while that scheduler does not run; from another
 * scheduler's thread it aborts (a task elsewhere is reached through its parent: structured
 * concurrency carries cancellations and deadlines across schedulers). A task that is done
 * is left as it is: corio_cancel() of it sets nothing (corio_cancelled() stays 0 for it,
 * until an ancestor is cancelled, as below). */
AFS_API void corio_cancel(struct corio_task *t);
/* Non-zero once t or an ancestor is cancelled. */
AFS_API int  corio_cancelled(const struct corio_task *t);

/* Past deadline_ns (absolute, corio_now()), t's blocking calls fail with -ETIMEDOUT and its
 * ops in flight are cancelled. Applies to t's descendants too, except a generator's
 * producer (see corio_gen_start). INT64_MAX (or 0) clears it; a negative one has passed
 * (corio_now() is never negative). A deadline that has passed
 * when it is moved or cleared (or when a shield begins above a wait) has ended the waits
 * it reached, on every scheduler, whether or not the scheduler had fired its timer yet;
 * the new value applies from then on. The thread rule of corio_cancel(). */
AFS_API void corio_set_deadline(struct corio_task *t, int64_t deadline_ns);

/* ------------------------------------------------------------------------------------------
 * Synchronisation. All are plain structs you embed; all stay correct across any number of
 * reuses. Blocking calls abort if t is not the running task. Each serves the tasks of one
 * scheduler, on its thread (between a runtime's schedulers: channels and futures): a lock
 * that finds the mutex held by another scheduler's task, and a wake-up of another
 * scheduler's task (an unlock, a corio_wg_add() that reaches 0, a put or get) abort.
 * ---------------------------------------------------------------------------------------- */

/* Three words of the library's own inside the structs below (a queue of waiting tasks, a
 * list, a message from another thread). Private: zero-initialised it is empty; nothing
 * outside the library reads or writes it. */
struct corio_private {
    void *private_[3];
};

struct corio_mutex {
    struct corio_task   *owner;
    struct corio_private waiters;
};
#define CORIO_MUTEX_INIT {0}

/* Locks m, FIFO: unlock hands the lock to the longest waiter. Returns 0, or -ECANCELED /
 * -ETIMEDOUT when t is cancelled or past its deadline while waiting (the lock is then not
 * held, and the queue stays consistent). */
AFS_API int    corio_mutex_lock(struct corio_task *t, struct corio_mutex *m);
/* Unlocks m; aborts if the running task does not hold it (also where no task runs: outside
 * the scheduler, a pool thread). */
AFS_API void   corio_mutex_unlock(struct corio_mutex *m);
AFS_API size_t corio_mutex_waiters(const struct corio_mutex *m);

struct corio_wg {
    long                 count;
    struct corio_private waiters;
};
#define CORIO_WG_INIT {0}

AFS_API void corio_wg_add(struct corio_wg *wg, int delta); /* a negative counter aborts */
AFS_API void corio_wg_done(struct corio_wg *wg);
/* Suspends t until the counter is 0: 0, or -ECANCELED / -ETIMEDOUT. */
AFS_API int  corio_wg_wait(struct corio_task *t, struct corio_wg *wg);

/* An error group: members are children of the group's task; the first non-zero result
 * cancels the other members. The group is caller-owned: its members write to it until they
 * end, so it must stay valid until corio_group_wait() returned (a group in a task's frame is
 * waited for before that task returns). */
struct corio_group {
    struct corio_task   *task;
    int                  err;
    unsigned             live;
    struct corio_private members; /* live members, for cancellation */
    struct corio_private waiters;
};
AFS_API void corio_group_init(struct corio_group *g, struct corio_task *t);
/* Spawns fn(member, arg) as a member (it runs at once until it first suspends). Called by
 * the group's task or by a task under it (a member adding members, as Go's errgroup
 * allows: the new member is then the caller's child, so the caller ends after it); from
 * any other task it aborts. Returns 0, -ECANCELED when the group already failed, or
 * -ENOMEM. */
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
 * valid until the next corio_sched_run() on the scheduler or corio_sched_free(), so a thread
 * may still read it (e.g. corio_batch_len() in its loop) after its last answer.
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

/* ------------------------------------------------------------------------------------------
 * Shielding. A shielded section is not interrupted by cancellations or deadlines: between
 * corio_shield_begin(t) and the matching corio_shield_end(t), t's blocking calls do not fail
 * with -ECANCELED / -ETIMEDOUT because of a corio_cancel() or corio_set_deadline() of t or of
 * its ancestors, and its file ops are not cancelled for them. The same holds for the tasks t
 * spawns meanwhile (and any other descendant): a cancellation from above the shield does not
 * reach them, while cancelling or giving a deadline to a descendant itself still works.
 * Sections nest (a depth count). When the outermost section ends, a cancellation or a passed
 * deadline that came meanwhile takes effect: t's next blocking call fails at once, and
 * descendants still waiting are interrupted. corio_cancelled() keeps reporting the plain fact.
 * Use it for clean-up that must finish (finalizers, flushing a file, releasing a remote lease);
 * a shielded wait that never ends keeps the task forever. Both abort when t is not running.
 * ---------------------------------------------------------------------------------------- */
AFS_API void corio_shield_begin(struct corio_task *t);
AFS_API void corio_shield_end(struct corio_task *t);

/* ------------------------------------------------------------------------------------------
 * Futures. A future is completed once, with an int result and a void * value, and awaited by
 * any number of tasks of one scheduler. Convention: a result >= 0 is a success (a count, a
 * task's return value), a negative errno is a failure; wait-all and wait-first-error use
 * that. The struct is caller-owned and embeddable; its fields are private.
 *
 * Threads. A future made with CORIO_FUTURE_INIT / corio_future_init() is "local": only code
 * on its scheduler's thread completes it (tasks, the dispatcher, callbacks run by the
 * scheduler). A future made with corio_future_init_external() may be completed from any
 * thread: the completion is taken under the scheduler's lock and the scheduler is woken
 * (afs_ctx_wake), as corio_batch_respond() does; awaiting tasks see it in the next resume
 * phase. An external future must stay valid until corio_future_done() reports it done on the
 * scheduler's thread (or the scheduler is freed). Any future may be freed once done, even
 * before the tasks it woke ran again: they hold its result and value. Its scheduler must outlive every call of
 * corio_future_complete() on it: a completion after corio_sched_free() (or the end of
 * corio_rt_run()) touches freed memory, which the library cannot detect. Work that may end
 * after its awaiter gave up belongs in corio_go(), which keeps what it needs.
 *
 * Deadlock detection: corio_sched_run() reports -EDEADLK when no task can be woken. A task
 * awaiting an external future that is not done counts as "could be woken" (another thread
 * may complete it), so such a wait never ends as -EDEADLK, it waits; a task awaiting a local
 * future that nobody on the scheduler can complete any more is reported as deadlocked.
 * ---------------------------------------------------------------------------------------- */

struct corio_future {
    struct corio_sched    *sched;      /* of its awaiters (external: given at init) */
    struct corio_private   waiters;    /* the awaiting tasks' places */
    struct corio_private   msg;        /* external: its completion, to the scheduler */
    void                  *value;
    int                    result;
    unsigned char          external;
    unsigned char          completed;  /* external: under the scheduler's lock */
    unsigned char          done;       /* visible to awaiters (scheduler's thread) */
};
#define CORIO_FUTURE_INIT {0}

AFS_API void corio_future_init(struct corio_future *f);
/* A future that any thread may complete, for the tasks of scheduler s. */
AFS_API void corio_future_init_external(struct corio_future *f, struct corio_sched *s);

/* Completes f with result and value and wakes every task awaiting it (they run in this CPU
 * phase, or the next resume phase for a completion from another thread). Returns 0, or
 * -EALREADY when f was already completed (the first completion stays). External futures:
 * any thread; local futures: the scheduler's thread only. */
AFS_API int  corio_future_complete(struct corio_future *f, int result, void *value);

/* 1 when f is done (and its result visible to this thread's tasks), else 0. Scheduler's
 * thread. */
AFS_API int  corio_future_done(const struct corio_future *f);
/* f's result, and its value in *value (value may be NULL); -EAGAIN while not done. */
AFS_API int  corio_future_result(const struct corio_future *f, void **value);

/* Suspends t until f is done: returns f's result and stores its value in *value (value may
 * be NULL). Returns -ECANCELED / -ETIMEDOUT (*value untouched) when t is cancelled or past
 * its deadline: at once when it already is at the call (even if f is done), or when that
 * comes before f's completion woke t (a completion that woke t first wins). f is not
 * affected (a future has no owner to cancel) and may still be awaited. */
AFS_API int  corio_future_await(struct corio_task *t, struct corio_future *f, void **value);
/* As corio_future_await() inside a shield: neither cancellation nor deadlines end the wait
 * (asyncigo's fut.Shield().Await()); a pending cancellation takes effect right after. */
AFS_API int  corio_future_await_shielded(struct corio_task *t, struct corio_future *f,
                                         void **value);

enum corio_wait_mode {
    CORIO_WAIT_ALL = 0,    /* every future done: 0, or the first negative result (array order) */
    CORIO_WAIT_FIRST,      /* the first done: its result, *index its position */
    CORIO_WAIT_FIRST_ERROR /* the first with a negative result (its result, *index), or all
                              done without error: 0, *index = n */
};
/* Waits for futs[0..n) in `mode`, under t's deadline and cancellation (-ETIMEDOUT,
 * -ECANCELED, as for corio_future_await(); *index = n then). With n == 0 it returns 0 at
 * once with *index = 0 (asyncigo's Wait hangs). index may be NULL. Futures already done
 * count at once, lowest index first. Returns -ENOMEM when n > 16 and no memory is left for
 * the waiting places. */
AFS_API int  corio_future_wait(struct corio_task *t, enum corio_wait_mode mode,
                               struct corio_future *const *futs, size_t n, size_t *index);

/* Task results. A task function that returns an int (>= 0 success, negative errno failure). */
typedef int corio_task_fn(struct corio_task *t, void *arg);

/* Spawns fn(child, arg) as a child of `parent` (as corio_spawn(), it runs at once until it
 * first suspends) and completes `fut` with fn's return value (value NULL) once the child is
 * done: its function returned and its own children are done. fut is initialised here (local,
 * caller-owned) and must stay valid until then; one in the frame of a parent whose function
 * returns first (a cancelled await, say) is left alone: it is gone with that frame, and the
 * child's end completes nothing (here and for corio_spawn_on). child may be NULL (as for
 * corio_spawn).
 * Returns 0 or -ENOMEM (fut is then completed with -ENOMEM). A cancelled child typically
 * returns -ECANCELED from its blocking calls, which then is its result. */
AFS_API int  corio_spawn_future(struct corio_task *parent, corio_task_fn *fn, void *arg,
                                struct corio_future *fut, struct corio_task **child);

/* ------------------------------------------------------------------------------------------
 * Generators (async iterators). A producer task yields values one at a time to the consumer
 * task that started it. corio_gen_next() hands the consumer the next value; the producer,
 * woken by that, goes on computing the next one in the background while the consumer works
 * on the current one (that is how the file helpers read ahead). A yielded value stays the
 * producer's and is valid until the consumer's next corio_gen_next() or corio_gen_close():
 * a producer that releases it when it returns calls corio_gen_flush() first.
 *
 * Early exit: the consumer stops with corio_gen_close() (the producer is cancelled: its
 * yield and blocking calls return -ECANCELED; close returns once the producer task is done,
 * so buffers in the consumer's frame are safe to release). The producer stops by returning:
 * next then returns 0 (end) or the producer's negative return (error). The consumer calls
 * corio_gen_close() before g goes, whatever corio_gen_next() returned (once the producer
 * ended it returns at once): a -ECANCELED or -ETIMEDOUT may be the consumer's own
 * interruption with the producer still running and using g (and a producer left in its
 * yield keeps the consumer's task from ending). The generator is caller-owned and must stay
 * valid until corio_gen_close() returned.
 * ---------------------------------------------------------------------------------------- */

struct corio_gen;
/* The producer: yields with corio_gen_yield(); returns 0 at the end or a negative errno. */
typedef int corio_gen_fn(struct corio_task *t, struct corio_gen *g, void *arg);

struct corio_gen {
    struct corio_task  *producer;  /* while it runs */
    void               *value;
    int                 result;    /* the producer's return, once ended */
    unsigned char       has_value, ended, closed;
    unsigned long       nexts, taken; /* next calls; the count when the last value went */
    struct corio_private consumer_q, producer_q, end_q;
};

/* Starts fn(producer, g, arg) as a child of t (the consumer), at once until it first
 * suspends. Returns 0 or -ENOMEM. The consumer's cancellation reaches the producer (and its
 * children); the consumer's deadline does not: it bounds the consumer's wait in
 * corio_gen_next(), after which the producer goes on and the generator stays usable. To
 * bound the producer's own work, fn sets a deadline on its task. */
AFS_API int  corio_gen_start(struct corio_task *t, struct corio_gen *g, corio_gen_fn *fn,
                             void *arg);
/* Called by the producer t: hands value over and returns once the consumer took it: 0, or
 * -ECANCELED when the consumer closed the generator (or the producer was cancelled),
 * -ETIMEDOUT past the producer's deadline. The producer should then return. */
AFS_API int  corio_gen_yield(struct corio_task *t, struct corio_gen *g, void *value);
/* Called by the producer t before it releases what its yielded values point to (before it
 * returns, typically): waits until the consumer is done with the last value it took, i.e.
 * until its next corio_gen_next() or corio_gen_close(). Cancellation does not end this wait
 * (the consumer may still read the value while it unwinds). */
AFS_API void corio_gen_flush(struct corio_task *t, struct corio_gen *g);
/* Called by the consumer t: 1 and the next value in *value; 0 when the producer ended; the
 * producer's negative return; or -ECANCELED / -ETIMEDOUT when t is cancelled or past its
 * deadline while waiting (the generator stays usable; close it or call next again). Called
 * by the producer itself it aborts. */
AFS_API int  corio_gen_next(struct corio_task *t, struct corio_gen *g, void **value);
/* As corio_gen_next(), skipping values for which keep(value, user) returns 0: a filter, not
 * a take-while (asyncigo's Filter stops at the first rejected value). */
AFS_API int  corio_gen_next_filter(struct corio_task *t, struct corio_gen *g,
                                   int (*keep)(void *value, void *user), void *user,
                                   void **value);
/* Called by the consumer t: cancels the producer if it still runs and waits until its task is
 * done (a wait that cancellation does not end). Idempotent. */
AFS_API void corio_gen_close(struct corio_task *t, struct corio_gen *g);

/* Iterator helpers (asyncigo's Map, Filter, Chain, Zip, Enumerate and a Take). Each starts
 * `out` as a generator (as corio_gen_start, as a child of t, the consumer of out) whose
 * producer pulls from the input generators, which it takes over: it closes them when it ends
 * or when out is closed, so the consumer closes only out. The inputs must have been started
 * by t (or by a task that stays alive while out runs) and have no other consumer. A value
 * passed on stays valid until the consumer's next corio_gen_next() / corio_gen_close() on
 * out: the helper pulls the next input value only then (the inputs' producers still read
 * ahead). An input's error ends out with that error. Each returns 0, or -ENOMEM (out did not
 * start and the inputs stay the caller's to close). */
typedef void *corio_map_fn(void *value, void *user);
/* Yields fn(value, user) for each value of in. */
AFS_API int corio_gen_map(struct corio_task *t, struct corio_gen *out, struct corio_gen *in,
                          corio_map_fn *fn, void *user);
/* Yields the values of in for which keep(value, user) is non-zero, skipping the others (the
 * iteration goes on after a rejected value). */
AFS_API int corio_gen_filter(struct corio_task *t, struct corio_gen *out, struct corio_gen *in,
                             int (*keep)(void *value, void *user), void *user);
/* Yields every value of ins[0], then of ins[1]... The array (not copied) stays valid until
 * out ended or was closed. */
AFS_API int corio_gen_chain(struct corio_task *t, struct corio_gen *out,
                            struct corio_gen *const *ins, size_t n);
/* Yields struct corio_pair * with a value of a and one of b, until either ends (the other is
 * then closed; an error of either ends out with it). */
struct corio_pair {
    void *a, *b;
};
AFS_API int corio_gen_zip(struct corio_task *t, struct corio_gen *out, struct corio_gen *a,
                          struct corio_gen *b);
/* Yields struct corio_indexed * for each value of in, counting from start_index. */
struct corio_indexed {
    size_t index;
    void  *value;
};
AFS_API int corio_gen_enumerate(struct corio_task *t, struct corio_gen *out,
                                struct corio_gen *in, size_t start_index);
/* Yields the first n values of in, then closes in. */
AFS_API int corio_gen_take(struct corio_task *t, struct corio_gen *out, struct corio_gen *in,
                           size_t n);

/* File helpers. Both read with afs_pread() from a producer task (the file should be opened on
 * the scheduler's context to join its batches) and read the next chunk while the consumer
 * works on the current one. The chunk / line and its bytes are valid until the next
 * corio_gen_next() / corio_gen_close(). Errors of afs_pread() end the iteration with that
 * error. The file stays the caller's and must stay open until the generator ended or was
 * closed. */
struct corio_chunk {
    const char *data;
    size_t      len;   /* 1..chunk_size; a short chunk only at the end of the file */
    uint64_t    off;
};
/* Yields struct corio_chunk * for [off, end of file) in chunks of chunk_size bytes (0:
 * 64 KiB); none, and the end, for an off at or past the end. Returns 0, -EINVAL (chunk_size
 * above 1 GiB, off above INT64_MAX), or -ENOMEM. */
AFS_API int corio_gen_file_chunks(struct corio_task *t, struct corio_gen *g,
                                  struct afs_file *f, uint64_t off, size_t chunk_size);
struct corio_line {
    const char *data;  /* nul-terminated, without the '\n' */
    size_t      len;
    uint64_t    lineno; /* 1-based */
};
/* Yields struct corio_line * for each line of the file: split at '\n' (a "\r" before it is
 * kept); empty lines are yielded; a last line without '\n' is yielded; lines may be longer
 * than chunk_size (0: 64 KiB), they are assembled in a growing buffer. Returns 0, -EINVAL
 * or -ENOMEM. */
AFS_API int corio_gen_file_lines(struct corio_task *t, struct corio_gen *g,
                                 struct afs_file *f, size_t chunk_size);

/* ------------------------------------------------------------------------------------------
 * Blocking functions on threads (asyncigo's Go). corio_go() runs fn(arg) on one of the
 * scheduler's pool threads (started on first use, at most 32; more jobs wait for a free
 * thread, in order; the threads are joined by corio_sched_free()) and completes b->done, an
 * external future, with fn's return value (>= 0 success, negative errno failure, by the
 * futures' convention). Use it for calls that block and have no asynchronous form: name
 * resolution, a library's blocking API, heavy computation off the scheduler's thread.
 *
 * Cancellation: a thread cannot be interrupted, so a cancelled or timed-out wait asks fn to
 * stop (corio_blocking_stop_requested() turns non-zero on fn's thread; fn may poll it and
 * return early) and then waits, shielded, until fn has returned: fn and arg are never used
 * after the wait returns, so both may live on the task's stack. A job no thread started yet
 * never runs. The wait then returns -ECANCELED / -ETIMEDOUT, whatever fn returned.
 * ---------------------------------------------------------------------------------------- */
typedef int corio_blocking_fn(void *arg);

struct corio_blocking {
    struct corio_future done;   /* completed with fn's result */
    corio_blocking_fn  *fn;
    void               *arg;
    int                 result; /* fn's return, once done */
    void               *private_[5];
};

/* Starts fn(arg) on a pool thread for task t. b is caller-owned, needs no initialising, and
 * must stay valid until corio_blocking_wait() returned (or b->done is done); a b whose job is
 * still queued or running, or whose result has not reached b->done yet, given again aborts. Returns 0, or -ENOMEM / the error of starting
 * a thread when there is none (b->done is then completed with it). */
AFS_API int corio_go(struct corio_task *t, struct corio_blocking *b, corio_blocking_fn *fn,
                     void *arg);
/* Waits for b: fn's result, or -ECANCELED / -ETIMEDOUT (after fn returned, see above). */
AFS_API int corio_blocking_wait(struct corio_task *t, struct corio_blocking *b);
/* corio_go() and corio_blocking_wait() in one: fn's result, -ECANCELED / -ETIMEDOUT, or
 * -ENOMEM. */
AFS_API int corio_run_blocking(struct corio_task *t, corio_blocking_fn *fn, void *arg);
/* On a pool thread inside fn: non-zero once the task waiting for it was cancelled or passed
 * its deadline. Elsewhere 0. */
AFS_API int corio_blocking_stop_requested(void);

/* ------------------------------------------------------------------------------------------
 * Queues (asyncigo's Queue): a FIFO of void * values between the tasks of one scheduler,
 * bounded (cap > 0: puts wait while it holds cap values) or not (cap 0: it grows). A put
 * hands its value to the getter that waited longest; a getter that was cancelled or timed out
 * has left the line and is skipped, so no value is ever lost to it. Likewise a get from a full
 * queue takes in the value of the putter that waited longest (its put returns 0), so waiting
 * putters keep their order and a later put cannot take their place. Not thread-safe: use it
 * from the scheduler's thread (tasks, or code the scheduler runs); a put or get that would
 * wake a task of another scheduler aborts (between schedulers: a channel).
 * ---------------------------------------------------------------------------------------- */
struct corio_queue {
    void        **ring;     /* private */
    size_t        cap, ring_cap, head, len;
    unsigned char closed;
    void         *private_[5];
};

/* Prepares an empty queue holding at most cap values (0: no bound). Allocates nothing. */
AFS_API void   corio_queue_init(struct corio_queue *q, size_t cap);
/* Frees its memory (values in it are dropped). Aborts while a task waits on it. */
AFS_API void   corio_queue_destroy(struct corio_queue *q);
/* Values in the queue (not counting those handed straight to a getter). */
AFS_API size_t corio_queue_len(const struct corio_queue *q);
/* Adds value, waiting while a bounded queue is full: 0, -EPIPE after corio_queue_close(),
 * -ENOMEM (an unbounded queue could not grow), -ECANCELED / -ETIMEDOUT (not added). */
AFS_API int    corio_queue_put(struct corio_task *t, struct corio_queue *q, void *value);
/* Adds value without waiting (callable outside tasks): 0, -EAGAIN when a bounded queue is
 * full, -EPIPE after close, -ENOMEM. */
AFS_API int    corio_queue_try_put(struct corio_queue *q, void *value);
/* Takes the oldest value into *value, waiting while the queue is empty: 0, -EPIPE when the
 * queue is closed and empty, -ECANCELED / -ETIMEDOUT (nothing taken). */
AFS_API int    corio_queue_get(struct corio_task *t, struct corio_queue *q, void **value);
/* Takes the oldest value without waiting: 0, -EAGAIN when empty, -EPIPE when closed and
 * empty. */
AFS_API int    corio_queue_try_get(struct corio_queue *q, void **value);
/* No more puts (-EPIPE); getters take what is left, then get -EPIPE. Waiting getters and
 * putters are woken. */
AFS_API void   corio_queue_close(struct corio_queue *q);

/* ------------------------------------------------------------------------------------------
 * Buffered streams over any descriptor (asyncigo's AsyncStream): a socket, pipe, FIFO, tty
 * or a file, as a struct afs_file of the scheduler's context (corio_sched_ctx()).
 *
 * Reads go through the stream's buffer: each read takes what one transfer gives (on a pipe,
 * socket or tty the bytes that have arrived, joining the phase's batch as any file op does;
 * on a file with offsets a positional read at the stream's own read offset, from 0), so a
 * task waits only for data it needs. The line and delimiter calls hand out a pointer into
 * that buffer, valid until the next read call on the stream. Errors are not sticky; bytes
 * that arrived before an error, a cancellation or a deadline stay buffered (nothing is lost).
 * End of file is sticky: once a read saw it, reads give what is buffered, then 0.
 *
 * Writes go straight from the caller's buffer (nothing is copied or buffered), one writer at
 * a time in the order the tasks came, so concurrent writers' chunks never interleave; a
 * write returns once every byte was handed to the kernel, so a slow reader makes writers
 * wait and memory stays bounded. On a file with offsets writes go at the stream's write
 * offset, from 0.
 *
 * All calls are made by tasks of the file's scheduler; reads from several tasks are
 * serialised too. A peer that went away is -EPIPE or -ECONNRESET, never a signal.
 * ---------------------------------------------------------------------------------------- */
struct corio_stream;

/* Makes a stream over f, which it takes over (corio_stream_close closes it). buf_size is the
 * read buffer's starting size (0: 8 KiB); a line longer than it grows the buffer up to the
 * line limit. Returns 0, -EINVAL (buf_size above 1 GiB), -ENOMEM (f stays the caller's).
 * Needs no task. */
AFS_API int corio_stream_new(struct afs_file *f, size_t buf_size, struct corio_stream **out);
/* Closes the file (afs_close: inside a task the close joins the batch) and frees the stream:
 * 0 or the close error. Aborts while a task is inside a call on the stream. A stream used
 * after its close (a second close too) aborts with the library's message, as a file does. */
AFS_API int corio_stream_close(struct corio_stream *s);
/* The stream's file (for afs_shutdown on a socket, say). It stays the stream's. */
AFS_API struct afs_file *corio_stream_file(const struct corio_stream *s);
/* Bytes read from the file and not yet handed out. */
AFS_API size_t corio_stream_buffered(const struct corio_stream *s);

/* Up to len bytes: what is buffered, or else what one transfer gives (waiting until some
 * bytes come). Returns the bytes copied (>= 1 when len > 0), 0 at the end, or -errno. */
AFS_API ssize_t corio_stream_read(struct corio_task *t, struct corio_stream *s, void *buf,
                                  size_t len);
/* Exactly len bytes, fewer only at the end (the count, as fread) or on an error: the bytes
 * copied before an error are reported first (the error comes at the next call; not the
 * task's own -ECANCELED / -ETIMEDOUT, which the next call meets only if it still holds, so a
 * short count from a cancelled task or one past its deadline is no end of the stream: ask
 * corio_cancelled() or the deadline); -errno when none were. */
AFS_API ssize_t corio_stream_read_exact(struct corio_task *t, struct corio_stream *s,
                                        void *buf, size_t len);
/* The next line up to and including the byte delim (0..255): *line points to it in the
 * stream's buffer (not nul-terminated; valid until the next read call on s), and the return
 * value is its length, at most limit (0: 64 KiB; at most 1 GiB), delim included. A last line
 * without delim at the end (of at most limit bytes) is returned as it is; 0 at the end with
 * nothing left. -EMSGSIZE when the line is longer (no delim among the first limit bytes and
 * more follow): the bytes stay buffered, so corio_stream_read() can still take them.
 * -EINVAL for a bad delim or limit; read errors as -errno. */
AFS_API ssize_t corio_stream_read_until(struct corio_task *t, struct corio_stream *s,
                                        int delim, size_t limit, const char **line);
/* corio_stream_read_until(t, s, '\n', limit, line): the line includes its '\n'. */
AFS_API ssize_t corio_stream_read_line(struct corio_task *t, struct corio_stream *s,
                                       size_t limit, const char **line);
/* Reads to the end: *out is a malloc'd, nul-terminated copy of everything (the caller frees
 * it) and the return value its length. -EMSGSIZE when more than limit bytes (0: no limit)
 * came (they stay buffered), -ENOMEM, or a read error (*out NULL). */
AFS_API ssize_t corio_stream_read_all(struct corio_task *t, struct corio_stream *s,
                                      size_t limit, char **out);
/* Writes all len bytes (see above): 0, or -errno (-EPIPE / -ECONNRESET when the peer left;
 * -ECANCELED / -ETIMEDOUT: part of the data may have been written). buf is the caller's
 * again when it returns. */
AFS_API int     corio_stream_write(struct corio_task *t, struct corio_stream *s,
                                   const void *buf, size_t len);
/* Generators over the stream (started as children of t; see the generators above). The
 * stream must not be read otherwise until they ended or were closed.
 * Lines: yields struct corio_line * for each line, split at '\n' (removed; the data is
 * nul-terminated, a "\r" before it is kept), a last line without '\n' included; a line of
 * more than limit bytes (0: 64 KiB; its '\n' not counted) ends the iteration with -EMSGSIZE
 * (the line stays buffered). Chunks: yields struct corio_chunk * with what each transfer
 * brought, at most chunk_size bytes (0: 8 KiB), off counting from the generator's start.
 * The next chunk is read while the consumer holds the current one; a line once the consumer
 * asked for it (it may come after that wait ended at a deadline). A line or chunk read and
 * not taken goes back to the stream when the generator is closed, so the next read of the
 * stream finds it. Both return 0, -EINVAL or -ENOMEM. */
AFS_API int corio_stream_lines(struct corio_task *t, struct corio_gen *g,
                               struct corio_stream *s, size_t limit);
AFS_API int corio_stream_chunks(struct corio_task *t, struct corio_gen *g,
                                struct corio_stream *s, size_t chunk_size);

/* A pipe as two streams on t's scheduler: *r reads what *w writes (asyncigo's Pipe). Close
 * both with corio_stream_close(); closing *w ends *r's reads at 0 once drained. Reads and
 * writes that wait for the other end are ended by cancellation and deadlines on every
 * backend (the pipe is non-blocking where the context waits on readiness: see asyncfs.h,
 * "Files without offsets"). Windows has no pipes as asyncfs files: there the two ends are a connected socket pair (TCP over
 * loopback, as afs_socketpair makes it), so a write after the reader closed *r may still
 * succeed once, its bytes lost (TCP learns of the close from that write's reset), and the
 * next one fails (-ECONNRESET); on POSIX systems the first such write is -EPIPE. Returns 0, -EMFILE / -ENFILE, -ENOMEM, or (Windows)
 * afs_socketpair's error. */
AFS_API int corio_pipe(struct corio_task *t, struct corio_stream **r, struct corio_stream **w);

/* ------------------------------------------------------------------------------------------
 * The network: dial, listen, accept. Sockets are asyncfs files of the scheduler's context
 * (afs_socket and friends): every connect, accept, receive and send of a CPU phase joins the
 * phase's one submission with the file ops, and cancellation and deadlines reach them as
 * they reach file ops. Host names are resolved with getaddrinfo on the scheduler's pool
 * threads (corio_go), so the scheduler never blocks; numeric addresses resolve at once.
 * TCP sockets made here have TCP_NODELAY (small replies are not held back). Windows: the
 * same through Winsock (the listening socket has no SO_REUSEADDR there: on Windows that
 * would let another socket bind the same port).
 *
 * Errors: the negative errno of the failing step. A name that does not exist is -ENOENT (the
 * resolver's EAI_NONAME / EAI_NODATA), a name server that cannot answer now -EAGAIN
 * (EAI_AGAIN), a bad port or service -EINVAL, another resolver failure -EIO; corio_net_error()
 * then has the resolver's own message. A refused or unreachable peer is -ECONNREFUSED,
 * -ENETUNREACH or -EHOSTUNREACH; past the task's deadline -ETIMEDOUT, cancelled -ECANCELED
 * (also while resolving: the lookup cannot be stopped and finishes on its thread, its result
 * dropped, but the call returns at once).
 * ---------------------------------------------------------------------------------------- */

/* Connects to host:port (a name or a numeric address, an IPv6 one bare or in brackets as
 * "[::1]"; port a number or a service name):
 * resolves it, then connects to every address it got at once (at most 16), keeps the first
 * connection that succeeds and cancels and closes the others, all under t's deadline and
 * cancellation. Returns 0 and *out (a connected socket of the scheduler's context, the
 * caller's to afs_close), -EINVAL (empty host or port), or the errors above; when every
 * address failed, the error of the first address (in the resolver's order). */
AFS_API int corio_dial(struct corio_task *t, const char *host, const char *port,
                       struct afs_file **out);
/* corio_dial() and corio_stream_new(f, buf_size) in one (asyncigo's Dial); -EINVAL for
 * buf_size above 1 GiB comes before any connection is made. */
AFS_API int corio_dial_stream(struct corio_task *t, const char *host, const char *port,
                              size_t buf_size, struct corio_stream **out);
/* A listening TCP socket bound to host:port (host NULL or "": every address, IPv4 and IPv6,
 * through one IPv6 socket that takes IPv4 too where the system has IPv6, else the IPv4
 * wildcard; port "0": a free port the system picks, see corio_net_port()), with SO_REUSEADDR,
 * listening with `backlog` (0: SOMAXCONN). For a host, the first resolved address that binds
 * is used. Returns 0 and *out, -EINVAL, or the errors above (-EADDRINUSE, -EACCES...). */
AFS_API int corio_listen(struct corio_task *t, const char *host, const char *port,
                         int backlog, struct afs_file **out);
/* Waits for a connection on listener l (afs_accept) and returns it as a stream with a read
 * buffer of buf_size (0: 8 KiB): 0 and *out, or -EINVAL (buf_size above 1 GiB, refused
 * before waiting), afs_accept's error, -ECANCELED, -ETIMEDOUT, -ENOMEM. On io_uring the listener's accepts come from one multishot accept and the
 * stream's reads from the connection's multishot receive (see "Sockets" in asyncfs.h). */
AFS_API int corio_accept(struct corio_task *t, struct afs_file *l, size_t buf_size,
                         struct corio_stream **out);
/* The local port of a bound socket (e.g. after corio_listen() with port "0"), or -errno. */
AFS_API int corio_net_port(struct afs_file *s);
/* The message of the calling thread's last failed corio_dial() / corio_listen() (the
 * resolver's text for a name that did not resolve, "host:port: <reason>", an IPv6 address in
 * brackets), or NULL after one
 * that succeeded. Read it before the task suspends again (other tasks of the thread may
 * dial meanwhile); valid until then. */
AFS_API const char *corio_net_error(void);

/* ------------------------------------------------------------------------------------------
 * Jobs (go-work's pattern). A job runs a set of tasks; each has an init, a run and a
 * finalize callback. An optional one-shot task runs first (init, then run until it is
 * done); the other tasks start only after it succeeded. Each task then runs init once and
 * run in a loop: run returns CORIO_JOB_TICK (progress, call again), CORIO_JOB_IDLE (no
 * progress, call again after letting others run), CORIO_JOB_DONE (this task is finished),
 * CORIO_JOB_FINISH (the whole job is finished: the other tasks are cancelled, the job
 * succeeds) or a negative errno: the job fails (another positive value counts as
 * CORIO_JOB_DONE). The first failure (an init or run error, an
 * idle timeout, the job timeout, or corio_job_cancel() with an error) cancels every task of
 * the job and is recorded: corio_job_error() tells which task and why. Each task runs as its
 * own corio task (a child of the job's runner, itself a child of the task that starts the
 * job), so a blocking run() blocks only that task.
 *
 * Finalizers: once every task stopped, the finalize callback of each task whose init was
 * called (also a failed one) runs once, in reverse order of the init calls, in the job's
 * runner task, inside a shield (cancellation and timeouts do not interrupt clean-up). A
 * finalizer's negative return is recorded in its task's fin_result and does not stop the
 * others. No lock is held while callbacks run. Then the job's done future is completed with
 * the job's result (0 or the first failure).
 *
 * All structs are caller-owned and must stay valid until the job is done. A job runs once.
 * ---------------------------------------------------------------------------------------- */

enum { CORIO_JOB_DONE = 0, CORIO_JOB_TICK = 1, CORIO_JOB_IDLE = 2, CORIO_JOB_FINISH = 3 };

struct corio_job;
struct corio_job_task;
/* init and run: the return values above (init: 0 or a negative errno). finalize: 0 or a
 * negative errno (recorded). t is the corio task running the callback. */
typedef int corio_job_fn(struct corio_task *t, struct corio_job_task *jt);

struct corio_job_task {
    /* Set by the caller (zero what is not used); init and finalize may be NULL. */
    const char   *name;
    corio_job_fn *init, *run, *finalize;
    void         *arg;
    int64_t       idle_timeout_ns; /* > 0: run must report progress within it, or -ETIMEDOUT */

    /* Set by the job. */
    struct corio_job      *job;
    int                    result;     /* 0, or the error that stopped this task */
    int                    fin_result; /* the finalizer's return */
    unsigned char          inited, finalized, finished;
    /* Private. */
    struct corio_task     *task;
    struct corio_job_task *next, *init_prev; /* added tasks; init order, newest first */
    int64_t                idle_deadline;
};

struct corio_job {
    /* Set by the job; read them after the job is done. */
    struct corio_future    done;   /* completed with the job's result */
    int                    err;    /* the first failure, 0 if none */
    struct corio_job_task *failed; /* the task that failed; NULL: the job's timeout,
                                      corio_job_cancel, or a cancel or deadline that reached
                                      the job from the task that started it */
    int                    fin_err;/* the first finalizer failure, 0 if none */
    /* Private. */
    struct corio_job_task *oneshot, *tasks, *tasks_tail, *inited;
    struct corio_task     *runner;
    int64_t                timeout_ns, deadline;
    unsigned char          started, finishing, ended;
    struct corio_private   end_q;
};

/* Prepares an empty job (no timeout). */
AFS_API void corio_job_init(struct corio_job *j);
/* Adds a task / the one-shot task (at most one) before the job starts; a task added twice
 * (to this job) aborts. */
AFS_API void corio_job_add(struct corio_job *j, struct corio_job_task *jt);
AFS_API void corio_job_add_oneshot(struct corio_job *j, struct corio_job_task *jt);
/* The job fails with -ETIMEDOUT (failed = NULL) when it has not ended timeout_ns after it
 * started, even where its tasks took their -ETIMEDOUT and returned CORIO_JOB_DONE; 0 clears
 * it. Before the job starts. */
AFS_API void corio_job_set_timeout(struct corio_job *j, int64_t timeout_ns);
/* Starts the job's runner as a child of t; it runs at once until it first suspends. Returns
 * 0 or -ENOMEM. Await j->done (corio_future_await) or use corio_job_run(). */
AFS_API int  corio_job_start(struct corio_task *t, struct corio_job *j);
/* Starts the job and waits until it is done (finalizers included; a wait that cancellation
 * does not end, since the job's structs live in the caller's frame: cancelling t cancels the
 * job and this returns once it ended). Returns the job's result. */
AFS_API int  corio_job_run(struct corio_task *t, struct corio_job *j);
/* Fails the job with err (< 0; default -ECANCELED when 0), recorded with failed = NULL,
 * unless it already failed or finished; before corio_job_start(), no task of it runs (not
 * even the one-shot's init). Scheduler's thread: any task, or code run by it. */
AFS_API void corio_job_cancel(struct corio_job *j, int err);
/* Reports progress of the job task jt (from its callbacks): resets its idle timeout. */
AFS_API void corio_job_progress(struct corio_job_task *jt);
/* The job's error and, in *who, the task that failed (NULL: as for j->failed). */
AFS_API int  corio_job_error(const struct corio_job *j, struct corio_job_task **who);

/* ------------------------------------------------------------------------------------------
 * Runtimes: N schedulers on N threads, one context each, with messages between them.
 *
 * corio_rt_run() runs a root task on scheduler 0 (the calling thread) and N - 1 schedulers on
 * threads of their own. Tasks never move: a task stays on the scheduler it started on, and
 * what crosses threads is work (corio_spawn_on), results (futures) and values (channels).
 * Each scheduler has one inbox through which everything from other threads arrives, drained
 * in its resume phase; a scheduler that posts wakes the receiver with a message on its own
 * ring (io_uring IORING_OP_MSG_RING, sent with its next submission) where both run io_uring
 * and the kernel has the opcode, else through the receiver's context waker
 * (afs_ctx_wake()). On io_uring each scheduler's ring is created by its own thread with
 * SINGLE_ISSUER and DEFER_TASKRUN, attached to scheduler 0's kernel workers (ATTACH_WQ),
 * where the kernel has them (Linux 6.1; older kernels: plain rings).
 *
 * Balance: corio_spawn_on(CORIO_SCHED_ANY) picks the least loaded scheduler by a relaxed
 * per-scheduler counter (its live tasks plus spawns queued for it: all of them up to four
 * schedulers, else the caller's and two picked at random), and a scheduler about to block
 * takes half of the not-yet-started CORIO_SCHED_ANY spawns of the busiest other one. No lock
 * is shared by all schedulers: each inbox has its own.
 *
 * Structured concurrency holds across schedulers: a task is done only when its children on
 * other schedulers are done too (corio_wait() waits for them), cancelling a task cancels them,
 * and its deadline applies to them (all as messages: they take effect at the receiver's next
 * resume phase).
 *
 * A scheduler whose thread is held by user code (a task that computes or blocks the thread
 * without suspending) runs nothing else meanwhile: its ready tasks, its inbox and the spawns
 * sent to it by index wait; the other schedulers keep running, and its queued
 * CORIO_SCHED_ANY spawns are taken by them (one waiting for a timer or I/O is woken for
 * them: docs/RUNTIME.md, "Balance"). A deadlock that spans schedulers ends the run with
 * -EDEADLK (corio_rt_run): when every scheduler sleeps with nothing that could wake one of
 * its tasks (no op, timer, or wait that another thread may end) and no message is on its
 * way, each reports its suspended tasks on stderr and frees them without unwinding their
 * stacks. Waits that another thread may end (channels, external futures, corio_go jobs)
 * count as able to end: a deadlock through them is not found (the run waits, as threads
 * would): use deadlines. A child spawned with CORIO_SCHED_ANY on a runtime of several
 * schedulers counts as one on another scheduler there, wherever it ran.
 *
 * Files: a file belongs to the context it was opened on. Open files in a task on that task's
 * scheduler's context (corio_sched_ctx(corio_task_sched(t))); a file of another scheduler's
 * context must not be used (asyncfs.h: a context belongs to one thread), pass the path or the
 * work (corio_spawn_on to the file's scheduler) instead. While a runtime runs, a call on one
 * of its schedulers' contexts, or on a file or stream of one, from any other thread (another
 * scheduler's, a corio_go() job's, any) aborts with the library's message, as a closed handle
 * does: it would race with that scheduler. The calls documented for any thread are the
 * exceptions (afs_ctx_wake, afs_file_fd, afs_file_open_size, afs_buf_alloc, afs_buf_free),
 * with afs_ctx_backend() and afs_ctx_fallback_reason().
 * ---------------------------------------------------------------------------------------- */

struct corio_rt;
struct corio_chan;

/* Pins scheduler i >= 1 to the i-th CPU the process may use (a hint: where the OS refuses,
 * the thread floats). Scheduler 0 runs on the calling thread, which is left as it is. */
#define CORIO_RT_PIN 0x1u

struct corio_rt_config {
    unsigned            schedulers; /* 0: one per CPU the process may use (sched_getaffinity) */
    unsigned            flags;      /* CORIO_RT_PIN */
    struct corio_config sched;      /* each scheduler's; sched.ctx must be NULL */
    struct afs_config   ctx;        /* each scheduler's context's */
};

/* Defaults: one scheduler per usable CPU, corio_config_default(), afs_config_default(). */
AFS_API void corio_rt_config_default(struct corio_rt_config *cfg);

/* Makes a runtime (no thread starts before corio_rt_run()). Returns 0, -EINVAL (bad
 * config, sched.ctx set, more than 4096 schedulers) or -ENOMEM. cfg may be NULL. */
AFS_API int  corio_rt_new(struct corio_rt **out, const struct corio_rt_config *cfg);
/* Frees rt; not while it runs. NULL is ignored. Using rt after this, or freeing it twice,
 * aborts (asyncfs.h's rule for handles). */
AFS_API void corio_rt_free(struct corio_rt *rt);

/* Starts the schedulers (each makes its context on its own thread), runs fn(root, arg) on
 * scheduler 0 on the calling thread until root and every task it spawned anywhere are done,
 * then stops and joins the threads and frees the schedulers and contexts. Returns 0; the
 * error of making a context or a thread (nothing runs then); or -EDEADLK when no task of
 * any scheduler can be woken any more (as corio_sched_run() for one scheduler; see
 * "Runtimes" above for what counts), every scheduler's tasks abandoned. A scheduler whose
 * wait on its context fails for good (a broken ring: no transient condition) ends the run
 * the same way, with that error, reported on stderr. The runtime can run again after it.
 * Not reentrant; one run at a time per rt. */
AFS_API int  corio_rt_run(struct corio_rt *rt, corio_fn *fn, void *arg);

/* The number of schedulers. */
AFS_API unsigned corio_rt_schedulers(const struct corio_rt *rt);
/* The index of s in its runtime (0 .. n-1), or -1 for a scheduler made by corio_sched_new(). */
AFS_API int      corio_sched_index(const struct corio_sched *s);

struct corio_rt_stats {
    uint64_t spawns_in;   /* tasks started here from a spawn queue or a spawn message
                             (another scheduler's corio_spawn_on(), or a CORIO_SCHED_ANY
                             spawn queued here: every one on a runtime of several) */
    uint64_t spawns_out;  /* corio_spawn_on() requests sent as messages or queued spawns */
    uint64_t steals;      /* queued spawns this scheduler took from others */
    uint64_t messages;    /* messages from other threads delivered here */
    uint64_t wakes_ring;  /* wake-ups this scheduler sent as io_uring ring messages */
    uint64_t wakes_waker; /* wake-ups this scheduler sent through a context's waker */
    uint64_t polls;       /* times it polled its inbox before blocking (idle, see RUNTIME.md) */
    uint64_t polls_hit;   /* polls that found a message */
    uint64_t sleeps;      /* times it blocked with no time limit or a timer's */
    uint64_t thief_wakes; /* sleeping schedulers it woke to take spawns queued on a busy one */
};
/* Scheduler i's counters (and its struct corio_stats in *sched, may be NULL) of the last or
 * current run: after corio_rt_run() returned, or from i's own thread while it runs. Returns 0
 * or -EINVAL (i out of range). */
AFS_API int  corio_rt_stats(const struct corio_rt *rt, unsigned i, struct corio_rt_stats *out,
                            struct corio_stats *sched);

#define CORIO_SCHED_ANY (-1)

/* Spawns fn(child, arg) on scheduler `sched` of the runtime (an index, or CORIO_SCHED_ANY:
 * the least loaded) as a child of `parent` (the running task), and completes `fut` with
 * fn's return value once the child and its own children are done. fut (may be NULL: the
 * result is dropped) is initialised here as a future of parent's scheduler (caller-owned, to
 * be awaited by its tasks) and must stay valid until then; a second completion of it returns
 * -EALREADY (corio_future_complete) and changes nothing. On parent's own scheduler the child
 * runs at once as with corio_spawn_future(); elsewhere it starts in that scheduler's next
 * resume phase (the call returns at once), already cancelled when parent is, under
 * parent's effective deadline. CORIO_SCHED_ANY placed on parent's own scheduler of a
 * runtime of several is queued there as for another, never run at once: a sleeping
 * scheduler is woken to take it, one that runs out of work takes it, else it starts here in
 * the next resume phase (docs/RUNTIME.md, "Balance"); to run a child here at once, spawn it
 * by this scheduler's index or with corio_spawn(). Returns 0, -EINVAL (sched out of range,
 * or parent's scheduler is not a runtime's and sched is not CORIO_SCHED_ANY or 0), or
 * -ENOMEM (fut is then completed with it). */
AFS_API int  corio_spawn_on(struct corio_task *parent, int sched, corio_task_fn *fn, void *arg,
                            struct corio_future *fut);

/* ------------------------------------------------------------------------------------------
 * Channels: bounded queues of fixed-size values between tasks of any schedulers (and plain
 * threads with the try forms). Values are copied in and out; FIFO; blocking only the task.
 * ---------------------------------------------------------------------------------------- */

/* Makes a channel holding up to `capacity` values of elem_size bytes each (capacity 0: a
 * send waits for a receiver, a rendezvous). Returns 0, -EINVAL (elem_size 0 or over 1 GiB,
 * or capacity * elem_size over 1 TiB, or over half the address space) or -ENOMEM. */
AFS_API int  corio_chan_new(struct corio_chan **out, size_t capacity, size_t elem_size);
/* Frees c: no task may wait on it (aborts otherwise). A task that a send, receive or close
 * has already served may not have run since (it is on another scheduler): c is then freed
 * when the last such task has. NULL is ignored. Using c after this, or freeing it twice,
 * aborts (asyncfs.h's rule for handles). */
AFS_API void corio_chan_free(struct corio_chan *c);

/* Copies *elem into c, suspending t while c is full (or, capacity 0, until a receiver takes
 * it); a wait on a channel is never reported as a deadlock (another thread may end it: give
 * it a deadline if nothing may). Returns 0; -EPIPE when c is closed (also when it closes while t waits: the value was
 * not sent); -ECANCELED / -ETIMEDOUT when t is cancelled or past its deadline (not sent).
 * A send that handed the value over before an interruption returns 0. */
AFS_API int  corio_chan_send(struct corio_task *t, struct corio_chan *c, const void *elem);
/* Takes the oldest value into *elem, suspending t while c is empty. Returns 0; -EPIPE when c
 * is closed and empty (values sent before the close are still received); -ECANCELED /
 * -ETIMEDOUT (nothing taken). */
AFS_API int  corio_chan_recv(struct corio_task *t, struct corio_chan *c, void *elem);
/* Without waiting, from any thread: 0, -EAGAIN (full / empty), or -EPIPE (closed / closed and
 * empty). */
AFS_API int  corio_chan_try_send(struct corio_chan *c, const void *elem);
AFS_API int  corio_chan_try_recv(struct corio_chan *c, void *elem);
/* Closes c, from any thread: waiting senders and, once it is empty, waiting receivers return
 * -EPIPE. Idempotent. */
AFS_API void corio_chan_close(struct corio_chan *c);
/* Values in c now (a snapshot). */
AFS_API size_t corio_chan_len(struct corio_chan *c);

/* ------------------------------------------------------------------------------------------
 * Group commit: a durable append-only log. Many tasks append records; the records appended
 * while the previous batch was being made durable (at first: those of one CPU phase) become
 * one write and one fdatasync, and each appender resumes only when its record is durable,
 * with the offset it got. The log adds no framing: a record is the caller's bytes, placed
 * right after the previous one (add lengths and checksums yourself to read it back).
 *
 * The log's work is done by a flusher task, a child of the task that opens it: open and
 * close it from the same scheduler, and close it before that task has to end (an unclosed
 * log keeps its opener's task from finishing: corio_sched_run() then reports -EDEADLK). The
 * file is the caller's: open it on the scheduler's context (corio_sched_ctx()) so the write
 * and the fdatasync join the phase batches, keep it open until corio_log_close() returned,
 * and close it yourself. Records are copied at append: the caller's buffer is free when
 * corio_log_append() returns. Memory: the log holds the records of the batch being written
 * and of the next one (buffers are kept for reuse until close).
 *
 * Failures (the fsyncgate rule). A failed write (-ENOSPC, -EIO...) or fdatasync (-EIO...)
 * fails every record of that batch with that error, and the log is failed from then on:
 * every record already waiting and every later append returns the same error, nothing more
 * is written or synced, and a later fdatasync is never taken as covering the lost data (the
 * kernel may have dropped the dirty pages when it reported the error). A record is reported
 * durable only when the fdatasync of its batch returned 0. corio_log_durable() gives the end
 * of the last durable record; bytes after it (a failed batch may have written some) are not
 * part of the log. To go on after a failure: close the log, truncate the file there (or
 * check the records past it), reopen.
 *
 * Cancellation and deadlines. A task cancelled (or past its deadline) before its append gets
 * -ECANCELED (-ETIMEDOUT) and its record is not appended. One cancelled while it waits gets
 * -ECANCELED (-ETIMEDOUT) at once, with *off set: its record stays in the batch and may still
 * become durable (or fail with the batch); the caller cannot tell which from the return
 * value, only by reading the log back (or from corio_log_durable() reaching *off + len).
 * The flusher itself is shielded: cancelling the opener does not cancel the log's I/O.
 * ---------------------------------------------------------------------------------------- */

struct corio_log;

struct corio_log_stats {
    uint64_t appends; /* records appended (accepted into a batch) */
    uint64_t batches; /* batches made durable: a write (none for sync points alone), then
                         one fdatasync */
    uint64_t bytes;   /* bytes written, a failed batch's as far as its write went */
};

/* Opens a log on f whose first record goes at offset `start` (typically the file's size).
 * t becomes the parent of the log's flusher task. Returns 0 and *out, -EINVAL (NULL
 * argument, start above INT64_MAX), or -ENOMEM. */
AFS_API int  corio_log_open(struct corio_task *t, struct afs_file *f, uint64_t start,
                            struct corio_log **out);
/* Appends len bytes of rec (len 0: a pure sync point, which waits until every record
 * appended before it is durable) and suspends t until the record is durable. Stores the
 * record's offset in *off (off may be NULL) and returns 0; or the batch's or the failed
 * log's negative errno (see above: -ENOSPC, -EIO...), -ECANCELED / -ETIMEDOUT, -EINVAL (rec
 * NULL with len > 0, or the log would pass INT64_MAX bytes), -ENOMEM. Aborts after
 * corio_log_close() or from a task of another scheduler. */
AFS_API int  corio_log_append(struct corio_task *t, struct corio_log *log, const void *rec,
                              size_t len, uint64_t *off);
/* Waits until every appended record is durable or failed, stops the flusher and frees the
 * log (f stays open, the caller's). Returns 0 or the log's error. A wait that cancellation
 * does not end. */
AFS_API int  corio_log_close(struct corio_task *t, struct corio_log *log);
/* The getters below are for the log's scheduler's thread (its tasks, or code the scheduler
 * runs) while the log is open; a log used after corio_log_close() aborts. */
/* The log's error (0 while it has none). */
AFS_API int  corio_log_error(const struct corio_log *log);
/* The offset just past the last record reported durable (start while none is). */
AFS_API uint64_t corio_log_durable(const struct corio_log *log);
/* Copies the log's counters to *out. */
AFS_API void corio_log_stats(const struct corio_log *log, struct corio_log_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* CORIO_H */
