/* Cancellation, deadlines and shields. They reach a suspended task through its wait record:
 * the record's cancel (supplied by what the task waits on) ends the wait. */
#include "corio_int.h"

#define CHILD(n) AFS_LIST_ITEM(n, struct corio_task, sib)

int corio_cancelled(const struct corio_task *t)
{
    for (; t; t = t->parent)
        if (t->cancelled || t->inh_cancelled || t->inh_cancel_fact)
            return 1;
    return 0;
}

/* Shields: walking up from t, a task with a shield stops the walk. Its own and its
 * ancestors' cancellations and deadlines do not count for t; those of the tasks below it
 * (t included, when t is not the shielded one) still do. */
/* A task started for another scheduler has no local parent: what its remote parent passed
 * on (inh_*) stands for the ancestors beyond. */
/* The one walk up from t: whether a cancellation reaches it, and its deadline in *deadline
 * (INT64_MAX: none). */
static bool walk_up(const struct corio_task *t, int64_t *deadline)
{
    int64_t d = INT64_MAX;
    bool cancelled = false, timed = true;
    for (; t && !t->shield; t = t->parent) {
        cancelled |= t->cancelled || t->inh_cancelled;
        if (timed && t->deadline < d)
            d = t->deadline;
        if (timed && t->inh_deadline < d)
            d = t->inh_deadline;
        timed &= !t->own_deadline;
    }
    *deadline = d;
    return cancelled;
}

int64_t corio__effective_deadline(const struct corio_task *t)
{
    int64_t d;
    walk_up(t, &d);
    return d;
}

bool corio__cancel_reaches(const struct corio_task *t)
{
    int64_t d;
    return walk_up(t, &d);
}

bool corio__cancel_reaches_at(const struct corio_task *t, int64_t *deadline)
{
    return walk_up(t, deadline);
}

/* Cancellations and deadlines change t's scheduler's timers and run queue: only its own
 * thread may make them, or any thread while it does not run. */
static void owner_check(const struct corio_task *t, const char *call)
{
    if (corio__off_thread(t))
        afs__panic(call, "called from another scheduler's thread (a task of another "
                         "scheduler is cancelled through the runtime: its parent, or a "
                         "future or channel it waits on)");
}

#define effective_deadline corio__effective_deadline
#define cancel_reaches     corio__cancel_reaches

int corio__interrupted_at(const struct corio_task *t, int64_t *deadline)
{
    if (walk_up(t, deadline)) /* one walk for both: a task's every file op asks */
        return -ECANCELED;
    if (*deadline != INT64_MAX && afs__now_reached(*deadline))
        return -ETIMEDOUT;
    return 0;
}

int corio__interrupted(struct corio_task *t)
{
    int64_t d;
    return corio__interrupted_at(t, &d);
}

int64_t corio__wait_timer(const struct corio_task *t, const struct corio__wait *w)
{
    int64_t at = w->cancel ? effective_deadline(t) : INT64_MAX;
    return w->until < at ? w->until : at;
}

/* Ends t's current wait early because of cancellation or its deadline, through the record.
 * Shields: ask again whether a cancellation or deadline reaches t (a timer armed before a
 * shield began, or a cancel of a shielded ancestor, does not). */
static void interrupt(struct corio_task *t)
{
    if (t->state != CORIO__SUSPENDED || !t->w || !t->w->cancel)
        return;
    int err = corio__interrupted(t);
    if (err)
        t->w->cancel(t, t->w, err);
}

/* Below a shield a cancellation from above reaches nothing; the tasks there on other
 * schedulers still learn the plain fact, for corio_cancelled() (the local ones find it by
 * walking up). */
/* The task after c in a pre-order walk of top's tree (live tasks only), without recursion:
 * the walks run on the calling task's stack, and a tree may be thousands of levels deep.
 * descend: c's own children are visited. */
static struct corio_task *tree_next(struct corio_task *c, const struct corio_task *top,
                                    bool descend)
{
    if (descend)
        for (struct afs_list_node *n = c->children.first; n; n = n->next)
            if (CHILD(n)->state != CORIO__DONE)
                return CHILD(n);
    for (; c != top; c = c->parent)
        for (struct afs_list_node *n = c->sib.next; n; n = n->next)
            if (CHILD(n)->state != CORIO__DONE)
                return CHILD(n);
    return NULL;
}

static void fact_tree(struct corio_task *top)
{
    for (struct corio_task *c = top; c; c = tree_next(c, top, true))
        if (c->links.first)
            corio__rt_links_cancel_fact(c);
}

static void cancel_tree(struct corio_task *top)
{
    for (struct corio_task *c = top; c;) {
        interrupt(c);
        if (c->shield)
            fact_tree(c); /* nothing below a shield is reached by a cancellation from above it */
        else if (c->links.first)
            corio__rt_links_cancel(c);
        c = tree_next(c, top, !c->shield);
    }
}

void corio__cancel_tree(struct corio_task *t)
{
    cancel_tree(t);
}

void corio__cancel_fact_tree(struct corio_task *t)
{
    fact_tree(t);
}

void corio_cancel(struct corio_task *t)
{
    AFS_CHECK(t != NULL, "task is NULL");
    owner_check(t, "corio_cancel");
    if (t->state == CORIO__DONE)
        return;
    t->cancelled = true;
    cancel_tree(t);
}

/* A timer armed for a deadline that is due now: the deadline passed before the change that
 * would take it back (a new deadline, a shield begun, a parent's on another scheduler moved
 * after it passed). It ends the wait here, as corio__fire_timers() would have, so that
 * whether the scheduler got to fire it first does not decide. A sleep's own end is left to
 * the timers (a wake-up, not an error). */
static bool fire_due(struct corio_task *t)
{
    if (!t->heap_idx || t->timer_at >= t->w->until || !afs__now_reached(t->timer_at))
        return false;
    corio__timer_remove(&t->sched->timers, t);
    t->w->cancel(t, t->w, -ETIMEDOUT);
    return true;
}

/* A deadline set on tasks already suspended: re-arm their timers. passed: timers already
 * due fire first (false only for a remote parent's change made before its old deadline
 * passed, whose message came after it: rt.c's apply_ctl). */
static void rearm_tree(struct corio_task *top, bool passed)
{
    for (struct corio_task *t = top; t; t = tree_next(t, top, true)) {
        if (t->state == CORIO__SUSPENDED && t->w && t->w->cancel && !(passed && fire_due(t))) {
            int64_t at = corio__wait_timer(t, t->w);
            if (at != INT64_MAX)
                corio__timer_add(&t->sched->timers, t, at);
            else
                corio__timer_remove(&t->sched->timers, t);
        }
        if (t->links.first)
            corio__rt_links_deadline(t, passed);
    }
}

void corio__rearm_tree(struct corio_task *t, bool passed)
{
    rearm_tree(t, passed);
}

void corio_set_deadline(struct corio_task *t, int64_t deadline_ns)
{
    AFS_CHECK(t != NULL, "task is NULL");
    owner_check(t, "corio_set_deadline");
    t->deadline = deadline_ns == 0 ? INT64_MAX : deadline_ns; /* a negative one has passed */
    if (t->state != CORIO__DONE)
        rearm_tree(t, true);
}

void corio_shield_begin(struct corio_task *t)
{
    corio__check_running(t, "corio_shield_begin");
    t->shield++;
    if (t->shield > 1)
        return;
    /* The descendants' timers armed for a deadline from above t, and the deadlines passed
     * on to children on other schedulers (t's and its descendants'), are taken back
     * (corio_shield_end passes on the ones that hold again). */
    for (struct afs_list_node *n = t->children.first; n; n = n->next)
        if (CHILD(n)->state != CORIO__DONE)
            rearm_tree(CHILD(n), true);
    if (t->links.first)
        corio__rt_links_deadline(t, true);
}

void corio_shield_end(struct corio_task *t)
{
    corio__check_running(t, "corio_shield_end");
    AFS_CHECK(t->shield > 0, "corio_shield_end without corio_shield_begin");
    if (--t->shield)
        return;
    /* The shield is gone: a deadline or cancellation that came meanwhile now reaches t (its
     * next blocking call fails at once) and the descendants already waiting. */
    for (struct afs_list_node *n = t->children.first; n; n = n->next) {
        struct corio_task *c = CHILD(n);
        if (c->state != CORIO__DONE) {
            rearm_tree(c, true);
            if (corio__interrupted(c))
                cancel_tree(c);
        }
    }
    if (t->links.first) {
        corio__rt_links_deadline(t, true);
        if (cancel_reaches(t))
            corio__rt_links_cancel(t);
    }
}

void corio__fire_timers(struct corio_sched *s)
{
    int64_t now = corio_now();
    struct corio_task *t;
    while ((t = corio__timer_due(&s->timers, now))) {
        if (t->state == CORIO__SUSPENDED && t->w && t->w->until <= now) {
            /* A wake-up (sleep), unless its deadline came first and the timer fired late. */
            int64_t d = t->w->cancel ? effective_deadline(t) : INT64_MAX;
            corio__ready(t, d < t->w->until ? -ETIMEDOUT : 0);
            continue;
        }
        interrupt(t);
        /* Not reached (a shield began above t since the timer was armed): the wait goes on,
         * and so does its own timer (a sleep's end). */
        if (t->state == CORIO__SUSPENDED && t->w && !corio__interrupted(t)) {
            int64_t at = corio__wait_timer(t, t->w);
            if (at != INT64_MAX && at > now)
                corio__timer_add(&s->timers, t, at);
        }
    }
}
