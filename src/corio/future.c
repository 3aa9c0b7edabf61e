/* Futures: completed once by any code (external ones from any thread), awaited by any number
 * of tasks; wait-all / wait-first / wait-first-error; task results.
 *
 * A waiting task puts one place (struct corio__fwaiter, on its own stack) on each future it
 * waits for, and suspends on a wait queue of its own. A completion wakes the task through
 * that queue, so one wake-up ends a wait on many futures, and cancellation and deadlines end
 * it as any queue wait (corio__wait_on). The task unlinks its places when it resumes; a
 * completion detaches all places of its future first and copies its result into them, so a
 * future may be freed as soon as it is done, before its awaiters ran again. */
#include "corio_int.h"

#include <stdlib.h>
#include <string.h>

struct corio__fwaiter {
    struct corio_task    *task;
    struct corio__waitq  *wq;     /* the task's own queue for this wait */
    struct afs_list_node  node;   /* on the future's waiters */
    bool                  linked;
    bool                  delivered; /* the future completed while linked: its result here */
    int                   result;
    void                 *value;
};

/* Whether the future of place w is done, and its result: from the place once delivered there
 * (the future itself may be gone by then), else from the future. */
static bool place_done(const struct corio_future *f, const struct corio__fwaiter *w)
{
    return w->delivered || f->done;
}

static int place_result(const struct corio_future *f, const struct corio__fwaiter *w,
                        void **value)
{
    if (value)
        *value = w->delivered ? w->value : f->value;
    return w->delivered ? w->result : f->result;
}

#define PLACE(n) AFS_LIST_ITEM(n, struct corio__fwaiter, node)

static void place_unlink(struct corio_future *f, struct corio__fwaiter *w)
{
    if (!w->linked)
        return;
    afs_list_remove(corio__list(&f->waiters), &w->node);
    w->linked = false;
}

/* On the scheduler's thread: f's result is now visible; wake every waiting task. */
static void deliver(struct corio_future *f)
{
    f->done = 1;
    struct afs_list_node *n;
    while ((n = afs_list_pop_front(corio__list(&f->waiters)))) {
        struct corio__fwaiter *w = PLACE(n);
        w->linked = false;
        w->delivered = true;
        w->result = f->result;
        w->value = f->value;
        /* Still on its queue: not yet woken by another future of the same wait. */
        if (w->task->q_on == w->wq)
            corio__wake(w->task, 0);
    }
}

/* An external future completed by another thread, in the resume phase (the inbox). */
static void deliver_msg(struct corio__msg *m)
{
    deliver((struct corio_future *)(void *)((char *)m - offsetof(struct corio_future, msg)));
}

void corio_future_init(struct corio_future *f)
{
    AFS_CHECK(f != NULL, "future is NULL");
    memset(f, 0, sizeof *f);
}

void corio_future_init_external(struct corio_future *f, struct corio_sched *s)
{
    AFS_CHECK(f != NULL && s != NULL, "NULL argument");
    corio__sched_check(s, __func__);
    memset(f, 0, sizeof *f);
    f->sched = s;
    f->external = 1;
}

int corio_future_complete(struct corio_future *f, int result, void *value)
{
    AFS_CHECK(f != NULL, "future is NULL");
    if (!f->external) {
        /* Tasks are waiting, so their scheduler runs: only its own thread may do this. */
        AFS_CHECK(afs_list_empty(corio__list(&f->waiters)) || corio__thread_sched() == f->sched,
                  "a local future completed from another thread (use an external one)");
        if (f->done)
            return -EALREADY;
        f->result = result;
        f->value = value;
        deliver(f);
        return 0;
    }
    struct corio_sched *s = f->sched;
    if (!corio__inbox_claim(s, &f->completed))
        return -EALREADY;
    f->result = result;
    f->value = value;
    if (corio__thread_sched() == s) {
        deliver(f); /* on the scheduler's own thread: no hand-over needed */
        return 0;
    }
    /* Another thread: the resume phase delivers it; once posted, f may already be delivered
     * and freed. */
    struct corio__msg *m = (struct corio__msg *)(void *)f->msg.private_;
    m->deliver = deliver_msg;
    corio__inbox_post(s, m);
    return 0;
}

int corio_future_done(const struct corio_future *f)
{
    AFS_CHECK(f != NULL, "future is NULL");
    return f->done;
}

int corio_future_result(const struct corio_future *f, void **value)
{
    AFS_CHECK(f != NULL, "future is NULL");
    if (!f->done)
        return -EAGAIN;
    if (value)
        *value = f->value;
    return f->result;
}

static void bind_sched(struct corio_task *t, struct corio_future *f)
{
    if (!f->sched)
        f->sched = t->sched;
    AFS_CHECK(f->sched == t->sched, "a future is awaited by tasks of another scheduler");
}

/* Suspends t until one of the n futures not done completes, or an interruption. places[]
 * keeps what earlier rounds delivered (zeroed by the caller before the first). */
static int wait_places(struct corio_task *t, struct corio_future *const *futs, size_t n,
                       struct corio__fwaiter *places)
{
    struct corio__waitq wq = {0};
    /* Another thread may complete an external future: an `outside` wait, so the scheduler
     * waits for it rather than report a deadlock. */
    struct corio__wait w = {.cancel = corio__waitq_cancel, .what = &wq, .until = INT64_MAX};
    for (size_t i = 0; i < n; i++) {
        places[i].task = t;
        places[i].wq = &wq;
        places[i].linked = false;
        if (place_done(futs[i], &places[i]))
            continue;
        bind_sched(t, futs[i]);
        afs_list_push_front(corio__list(&futs[i]->waiters), &places[i].node);
        places[i].linked = true;
        w.outside |= futs[i]->external;
    }
    corio__waitq_push(&wq, t);
    int err = corio__suspend(t, &w);
    for (size_t i = 0; i < n; i++)
        place_unlink(futs[i], &places[i]);
    return err;
}

int corio_future_await(struct corio_task *t, struct corio_future *f, void **value)
{
    corio__check_running(t, "corio_future_await");
    AFS_CHECK(f != NULL, "future is NULL");
    /* Interrupted: fail at once, even when f is done. Once woken by f, its result counts
     * even if a cancellation came meanwhile (the wake-up came first). */
    int err = corio__interrupted(t);
    if (err)
        return err;
    struct corio__fwaiter place = {0};
    while (!place_done(f, &place)) {
        if ((err = wait_places(t, &f, 1, &place)) != 0)
            return err;
    }
    return place_result(f, &place, value);
}

int corio_future_await_shielded(struct corio_task *t, struct corio_future *f, void **value)
{
    corio__check_running(t, "corio_future_await_shielded");
    corio_shield_begin(t);
    int res = corio_future_await(t, f, value);
    corio_shield_end(t);
    return res;
}

int corio_future_wait(struct corio_task *t, enum corio_wait_mode mode,
                      struct corio_future *const *futs, size_t n, size_t *index)
{
    corio__check_running(t, "corio_future_wait");
    AFS_CHECK(mode <= CORIO_WAIT_FIRST_ERROR && (futs || n == 0), "bad argument");
    size_t idx_dummy;
    if (!index)
        index = &idx_dummy;
    *index = n;
    if (n == 0)
        return 0; /* nothing to wait for (asyncigo's Wait hangs here) */
    struct corio__fwaiter small[16], *places = NULL;
    int res = corio__interrupted(t);
    if (res)
        return res;
    for (;;) {
        int err;
        size_t ndone = 0, first_err = n;
        for (size_t i = 0; i < n; i++) {
            AFS_CHECK(futs[i] != NULL, "future is NULL");
            /* Once waited for, a future's result is read from its place. */
            static const struct corio__fwaiter none;
            const struct corio__fwaiter *w = places ? &places[i] : &none;
            if (!place_done(futs[i], w))
                continue;
            ndone++;
            int r = place_result(futs[i], w, NULL);
            if (mode == CORIO_WAIT_FIRST || (mode == CORIO_WAIT_FIRST_ERROR && r < 0)) {
                *index = i;
                res = r;
                goto out;
            }
            if (r < 0 && first_err == n) {
                first_err = i;
                res = r;
            }
        }
        if (ndone == n) {
            /* All done: FIRST_ERROR saw no error; ALL reports the first, in array order. */
            *index = first_err;
            res = first_err < n ? res : 0;
            break;
        }
        if (!places) {
            places = n <= 16 ? small : afs__sys.malloc(n * sizeof *places);
            if (!places) {
                res = -ENOMEM;
                break;
            }
            memset(places, 0, n * sizeof *places);
        }
        if ((err = wait_places(t, futs, n, places)) != 0) {
            res = err;
            break;
        }
    }
out:
    if (places != small)
        free(places);
    return res;
}

/* ------------------------------------------------------------------------------------------
 * Task results
 * ---------------------------------------------------------------------------------------- */

/* Read once, at the child's first instruction, from the parent's stack (the parent stays
 * suspended in corio_spawn until the child first suspends). */
struct fut_boot {
    corio_task_fn       *fn;
    void                *arg;
    struct corio_future *fut;
};

/* The child's t->arg holds its future from here on (the boot block is gone once the parent
 * resumes): corio__detach_frame_futures() clears it when the future was in the frame of a
 * parent whose function returned. */
static void fut_entry(struct corio_task *t, void *arg)
{
    struct fut_boot b = *(struct fut_boot *)arg;
    t->arg = b.fut;
    char top; /* above every frame of b.fn */
    int res = b.fn(t, b.arg);
    corio__detach_frame_futures(t, &top); /* its futures went with them */
    corio_wait(t); /* done means its children are done too */
    if (t->arg)
        corio_future_complete(t->arg, res, NULL);
}

void corio__detach_frame_futures(struct corio_task *t, const char *top)
{
    if (!t->live_children && !t->links.first)
        return;
    /* t's frames lie below top, within its stack's size (on Windows t->stack names a fiber,
     * not its memory). */
    const char *lo = top - t->stack.size;
    for (struct afs_list_node *n = t->children.first; n; n = n->next) {
        struct corio_task *c = AFS_LIST_ITEM(n, struct corio_task, sib);
        const char *p = c->arg;
        if (c->state != CORIO__DONE && c->fn == fut_entry && p >= lo && p < top)
            c->arg = NULL;
    }
    corio__rt_links_detach(t, lo, top);
}

int corio_spawn_future(struct corio_task *parent, corio_task_fn *fn, void *arg,
                       struct corio_future *fut, struct corio_task **child)
{
    corio__check_running(parent, "corio_spawn_future");
    AFS_CHECK(fn != NULL && fut != NULL, "NULL argument");
    corio_future_init(fut);
    fut->sched = parent->sched;
    struct fut_boot b = {fn, arg, fut};
    int err = corio_spawn(parent, fut_entry, &b, child);
    if (err < 0)
        corio_future_complete(fut, err, NULL);
    return err;
}
