/* Cooperative synchronisation: mutex, wait group, error group, singleflight.
 *
 * No permits are counted anywhere: ownership is handed over explicitly (the mutex names its
 * owner, a waiter woken by unlock already owns the lock), so nothing can leak across reuses,
 * which is how the seed's semaphore broke reused mutexes and wait groups. */
#include "corio_int.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * Mutex: FIFO hand-off
 * ---------------------------------------------------------------------------------------- */

int corio_mutex_lock(struct corio_task *t, struct corio_mutex *m)
{
    corio__check_running(t, "corio_mutex_lock");
    AFS_CHECK(m != NULL, "mutex is NULL");
    AFS_CHECK(m->owner != t, "the task already holds this mutex");
    int err = corio__interrupted(t);
    if (err)
        return err;
    if (!m->owner) {
        m->owner = t;
        return 0;
    }
    if (m->owner->sched != t->sched)
        afs__panic("corio_mutex_lock", "the mutex is held by a task of another scheduler (a "
                                       "mutex serves one scheduler's tasks)");
    err = corio__wait_on(t, corio__wq(&m->waiters));
    /* Woken by unlock: it made us the owner. Interrupted: we are off the queue and the
     * lock was never ours, so nothing needs undoing. */
    if (err == 0)
        AFS_CHECK(m->owner == t, "mutex hand-off went to another task");
    return err;
}

void corio_mutex_unlock(struct corio_mutex *m)
{
    AFS_CHECK(m != NULL, "mutex is NULL");
    struct corio_task *cur = corio_current();
    if (!m->owner || m->owner != cur) /* also outside any task, or on another thread */
        afs__panic("corio_mutex_unlock", "unlocking a mutex the running task does not hold");
    struct corio_task *next = corio__waitq_pop(corio__wq(&m->waiters));
    m->owner = next;
    if (next)
        corio__wake(next, 0);
}

size_t corio_mutex_waiters(const struct corio_mutex *m)
{
    AFS_CHECK(m != NULL, "mutex is NULL");
    return corio__wq((struct corio_private *)&m->waiters)->len;
}

/* ------------------------------------------------------------------------------------------
 * Wait group
 * ---------------------------------------------------------------------------------------- */

void corio_wg_add(struct corio_wg *wg, int delta)
{
    AFS_CHECK(wg != NULL, "wait group is NULL");
    if (wg->count + delta < 0)
        afs__panic("corio_wg_add", "negative wait group counter");
    wg->count += delta;
    if (wg->count == 0)
        corio__wake_all(corio__wq(&wg->waiters));
}

void corio_wg_done(struct corio_wg *wg)
{
    corio_wg_add(wg, -1);
}

int corio_wg_wait(struct corio_task *t, struct corio_wg *wg)
{
    corio__check_running(t, "corio_wg_wait");
    AFS_CHECK(wg != NULL, "wait group is NULL");
    int err = corio__interrupted(t);
    if (err || wg->count == 0)
        return err;
    return corio__wait_on(t, corio__wq(&wg->waiters));
}

/* ------------------------------------------------------------------------------------------
 * Error group
 * ---------------------------------------------------------------------------------------- */

void corio_group_init(struct corio_group *g, struct corio_task *t)
{
    AFS_CHECK(g != NULL && t != NULL, "NULL argument");
    memset(g, 0, sizeof *g);
    g->task = t;
}

#define MEMBER(n) AFS_LIST_ITEM(n, struct corio_task, hook_node)

/* A member is done (the scheduler's on-done hook): off the group; the last one wakes the
 * group's waiter. */
static void member_done(struct corio_task *t)
{
    struct corio_group *g = t->hook_data;
    afs_list_remove(corio__list(&g->members), &t->hook_node);
    t->hook_data = NULL;
    if (--g->live == 0)
        corio__wake_all(corio__wq(&g->waiters));
}

/* How a member learns its group: read once, at its first instruction, from the parent's
 * stack (the parent stays suspended in corio_spawn until the member first suspends). */
struct group_boot {
    struct corio_group *g;
    int (*fn)(struct corio_task *, void *);
    void *arg;
};

static void member_entry(struct corio_task *t, void *arg)
{
    struct group_boot boot = *(struct group_boot *)arg;
    struct corio_group *g = boot.g;
    t->hook_data = g;
    t->on_done = member_done;
    afs_list_push_front(corio__list(&g->members), &t->hook_node);
    int res = boot.fn(t, boot.arg);
    if (res != 0 && g->err == 0) {
        g->err = res;
        /* The first error cancels the other members. */
        for (struct afs_list_node *n = corio__list(&g->members)->first; n; n = n->next)
            if (MEMBER(n) != t)
                corio_cancel(MEMBER(n));
    }
}

int corio_group_go(struct corio_group *g, int (*fn)(struct corio_task *, void *), void *arg)
{
    AFS_CHECK(g != NULL && fn != NULL && g->task != NULL, "group not initialised");
    /* The group's task, or a task under it (a member adding members): the new member is
     * the caller's child. */
    struct corio_task *cur = corio_current();
    const struct corio_task *a = cur;
    while (a && a != g->task)
        a = a->parent;
    if (!a)
        afs__panic("corio_group_go", "not called by the group's task or a task under it");
    corio__check_running(cur, "corio_group_go");
    if (g->err)
        return -ECANCELED;
    struct group_boot boot = {g, fn, arg};
    g->live++;
    int err = corio_spawn(cur, member_entry, &boot, NULL);
    if (err < 0)
        g->live--;
    return err;
}

int corio_group_wait(struct corio_group *g)
{
    AFS_CHECK(g != NULL && g->task != NULL, "group not initialised");
    struct corio_task *t = g->task;
    corio__check_running(t, "corio_group_wait");
    /* Members are children: structured concurrency says we wait for all of them, even when
     * the waiting task itself is cancelled (the members are cancelled with it). */
    while (g->live > 0)
        corio__wait_on_hard(t, corio__wq(&g->waiters));
    return g->err;
}

/* ------------------------------------------------------------------------------------------
 * Singleflight
 * ---------------------------------------------------------------------------------------- */

struct corio__flight {
    struct afs_list_node  node; /* on the scheduler's flights while it runs */
    void                 *key;
    size_t                key_len;
    struct corio__waitq   waiters;
    size_t                refs; /* the leader and the waiters still to read the result */
    int                   res;
    void                 *out;
};

#define FLIGHT(n) AFS_LIST_ITEM(n, struct corio__flight, node)

/* Flights left by an abandoned run (a deadlock), when the scheduler is freed. */
static void flights_free(struct corio_sched *s)
{
    struct afs_list_node *n;
    while ((n = afs_list_pop_front(&s->flights))) {
        free(FLIGHT(n)->key);
        free(FLIGHT(n));
    }
}

static void flight_unref(struct corio__flight *f)
{
    if (--f->refs == 0) {
        free(f->key);
        free(f);
    }
}

int corio_do(struct corio_task *t, const void *key, size_t key_len,
             int (*fn)(struct corio_task *, void *arg, void **out), void *arg, void **out,
             int *shared)
{
    corio__check_running(t, "corio_do");
    AFS_CHECK(fn != NULL && (key || !key_len), "bad argument");
    struct corio_sched *s = t->sched;
    int err = corio__interrupted(t);
    if (err)
        return err;
    struct corio__flight *f = NULL;
    for (struct afs_list_node *n = s->flights.first; n && !f; n = n->next) {
        struct corio__flight *c = FLIGHT(n);
        if (c->key_len == key_len && (key_len == 0 || memcmp(c->key, key, key_len) == 0))
            f = c;
    }
    if (f) {
        /* Someone runs it already: wait for its result. */
        f->refs++;
        err = corio__wait_on(t, &f->waiters);
        if (err) {
            flight_unref(f);
            return err;
        }
        if (out)
            *out = f->out;
        if (shared)
            *shared = 1;
        int res = f->res;
        flight_unref(f);
        return res;
    }
    f = afs__zalloc(sizeof *f);
    void *kcopy = afs__sys.malloc(key_len ? key_len : 1);
    if (!f || !kcopy) {
        free(f);
        free(kcopy);
        return -ENOMEM;
    }
    if (key_len)
        memcpy(kcopy, key, key_len);
    f->key = kcopy;
    f->key_len = key_len;
    f->refs = 1;
    afs_list_push_front(&s->flights, &f->node);
    s->flights_free = flights_free;

    void *o = NULL;
    int res = fn(t, arg, &o);

    /* Unlink first: callers from now on start a new flight. */
    afs_list_remove(&s->flights, &f->node);
    f->res = res;
    f->out = o;
    bool many = f->waiters.len > 0;
    corio__wake_all(&f->waiters);
    if (out)
        *out = o;
    if (shared)
        *shared = many;
    flight_unref(f);
    return res;
}
