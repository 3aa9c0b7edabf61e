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
    AFS_CHECK(m->owner != t, "corio_mutex_lock: the task already holds this mutex");
    int err = corio__interrupted(t);
    if (err)
        return err;
    if (!m->owner) {
        m->owner = t;
        return 0;
    }
    err = corio__wait_on(t, &m->waiters);
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
    if (!m->owner || (cur && m->owner != cur))
        afs__panic("corio_mutex_unlock", "unlocking a mutex the running task does not hold");
    struct corio_task *next = corio__waitq_pop(&m->waiters);
    m->owner = next;
    if (next)
        corio__wake(next, 0);
}

size_t corio_mutex_waiters(const struct corio_mutex *m)
{
    AFS_CHECK(m != NULL, "mutex is NULL");
    return m->waiters.len;
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
    if (wg->count == 0) {
        struct corio_task *t;
        while ((t = corio__waitq_pop(&wg->waiters)))
            corio__wake(t, 0);
    }
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
    return corio__wait_on(t, &wg->waiters);
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

static void member_entry(struct corio_task *t, void *unused)
{
    struct corio_group *g = t->group;
    int res = t->gfn(t, t->garg);
    if (res != 0 && g->err == 0) {
        g->err = res;
        /* The first error cancels the other members. */
        for (struct corio_task *m = g->members; m; m = m->g_next)
            if (m != t)
                corio_cancel(m);
    }
}

/* How a member learns its group: read once, at its first instruction, from the parent's
 * stack (the parent stays suspended in corio_spawn until the member first suspends). */
struct group_boot {
    struct corio_group *g;
    int (*fn)(struct corio_task *, void *);
    void *arg;
};

static void boot_entry(struct corio_task *t, void *arg)
{
    struct group_boot *boot = arg;
    struct corio_group *g = boot->g;
    t->group = g;
    t->gfn = boot->fn;
    t->garg = boot->arg;
    t->g_next = g->members;
    if (g->members)
        g->members->g_prev = t;
    g->members = t;
    member_entry(t, NULL);
}

int corio_group_go(struct corio_group *g, int (*fn)(struct corio_task *, void *), void *arg)
{
    AFS_CHECK(g != NULL && fn != NULL && g->task != NULL, "group not initialised");
    corio__check_running(g->task, "corio_group_go");
    if (g->err)
        return -ECANCELED;
    struct group_boot boot = {g, fn, arg};
    g->live++;
    int err = corio_spawn(g->task, boot_entry, &boot, NULL);
    if (err < 0)
        g->live--;
    return err;
}

void corio__group_member_done(struct corio_task *t)
{
    struct corio_group *g = t->group;
    if (t->g_prev)
        t->g_prev->g_next = t->g_next;
    else
        g->members = t->g_next;
    if (t->g_next)
        t->g_next->g_prev = t->g_prev;
    t->group = NULL;
    if (--g->live == 0) {
        struct corio_task *w;
        while ((w = corio__waitq_pop(&g->waiters)))
            corio__wake(w, 0);
    }
}

int corio_group_wait(struct corio_group *g)
{
    AFS_CHECK(g != NULL && g->task != NULL, "group not initialised");
    struct corio_task *t = g->task;
    corio__check_running(t, "corio_group_wait");
    /* Members are children: structured concurrency says we wait for all of them, even when
     * the waiting task itself is cancelled (the members are cancelled with it). */
    while (g->live > 0)
        corio__wait_on_hard(t, &g->waiters);
    return g->err;
}

/* ------------------------------------------------------------------------------------------
 * Singleflight
 * ---------------------------------------------------------------------------------------- */

struct corio__flight {
    struct corio__flight *next;
    void                 *key;
    size_t                key_len;
    struct corio__waitq   waiters;
    size_t                refs; /* the leader and the waiters still to read the result */
    int                   res;
    void                 *out;
};

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
    struct corio__flight **pp = &s->flights;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->key_len == key_len && memcmp((*pp)->key, key, key_len) == 0)
            break;
    struct corio__flight *f = *pp;
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
    f = afs__sys.calloc(1, sizeof *f);
    void *kcopy = afs__sys.malloc(key_len ? key_len : 1);
    if (!f || !kcopy) {
        free(f);
        free(kcopy);
        return -ENOMEM;
    }
    memcpy(kcopy, key, key_len);
    f->key = kcopy;
    f->key_len = key_len;
    f->refs = 1;
    f->next = s->flights;
    s->flights = f;

    void *o = NULL;
    int res = fn(t, arg, &o);

    /* Unlink first: callers from now on start a new flight. */
    for (pp = &s->flights; *pp != f; pp = &(*pp)->next)
        ;
    *pp = f->next;
    f->res = res;
    f->out = o;
    bool many = f->waiters.len > 0;
    struct corio_task *w;
    while ((w = corio__waitq_pop(&f->waiters)))
        corio__wake(w, 0);
    if (out)
        *out = o;
    if (shared)
        *shared = many;
    flight_unref(f);
    return res;
}

void corio__flights_free(struct corio_sched *s)
{
    while (s->flights) {
        struct corio__flight *f = s->flights;
        s->flights = f->next;
        free(f->key);
        free(f);
    }
}
