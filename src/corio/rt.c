/* Runtimes: N schedulers on N threads, and the work that crosses between them.
 *
 * A task never moves. corio_spawn_on() to another scheduler allocates a link, which is the
 * whole relation between the parent (on its scheduler) and the child (on the other):
 *  - the spawn request, a message in the target's inbox (by index) or on its spawn queue
 *    (CORIO_SCHED_ANY: other schedulers may steal it until it starts);
 *  - the child's end, a message back to the parent's inbox: it completes the future and
 *    counts the child out of the parent's live children (structured concurrency);
 *  - the parent's cancellation and deadline, in atomics of the link, with a control message
 *    to the child's scheduler once the child started (before that, the start reads them).
 * Each message is embedded in the link, which is freed by the last of its holders (the
 * parent's side until the end is delivered, the child's side until it posted the end, each
 * control message until delivered).
 *
 * Load: every scheduler of a runtime keeps a relaxed counter of its live tasks plus the
 * spawns queued for it. CORIO_SCHED_ANY picks the smallest of them (all up to four
 * schedulers, else the caller's and two at random), and a scheduler about to block takes half
 * of the queued CORIO_SCHED_ANY spawns of the other scheduler with the most. The first spawn
 * queued on a running scheduler (one that may be held by a task) wakes one sleeping scheduler
 * to take it. Nothing on these paths takes a lock that all schedulers share: each inbox has
 * its own. */
#include "corio_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct corio__link {
    atomic_int           refs;
    corio_task_fn       *fn;
    void                *arg;
    int                  result;     /* the child's, read by the parent's side after the end */
    uint32_t             id;         /* the child's number among its parent's (corio_log) */
    /* The parent's side (its scheduler's thread). */
    struct corio_future *fut;
    struct corio_task   *parent;
    struct corio_sched  *psched;
    struct afs_list_node pnode;      /* on parent->links */
    /* The child's side. */
    _Atomic(struct corio_sched *) csched; /* where it runs, once started */
    struct corio_task   *task;       /* while it runs (its scheduler's thread) */
    struct afs_list_node cnode;      /* on its scheduler's remote_roots while it runs */
    /* What the parent passes on: set on the parent's thread, read by the child's. */
    atomic_bool          cancel;
    atomic_bool          cancel_fact; /* an ancestor is cancelled, behind a shield or not */
    _Atomic int64_t      deadline;
    _Atomic int64_t      passed_at;  /* the earliest deadline replaced after it passed (by the
                                        parent's clock) since the child last looked, or
                                        INT64_MAX */
    atomic_bool          ctl_posted; /* the control message is in the child's inbox */
    struct corio__msg    spawn, ctl, done;
};

struct rt_slot {
    struct corio_rt *rt;
    unsigned         index;
};

struct corio_rt {
    struct corio_rt_config cfg;
    unsigned               n;
    uintptr_t              magic;   /* RT_MAGIC ^ address while alive, AFS__DEAD once freed
                                       (past the words an allocator writes into freed memory) */
    bool                   running;
    bool                   spin;    /* no more schedulers than CPUs: idle ones poll first */
    atomic_bool            in_run;  /* inside corio_rt_run(), from its first step */
    atomic_bool            stop;
    atomic_bool            thief;   /* a scheduler was woken to steal and has not looked yet */
    _Atomic uint64_t       stuck;   /* schedulers asleep with nothing that could wake a task
                                       (low 32 bits), and how often one woke (high 32) */
    atomic_bool            deadlock; /* every one of them, and no message pending: found */
    atomic_int             failed;   /* 0, or the error a scheduler's loop failed with */
    struct corio_sched   **scheds;
    afs__thread           *threads;
    struct rt_slot        *slots;
    /* Start and end of a run: schedulers made, and schedulers out of their loops. */
    afs__mutex             mu;
    afs__cond              cv;
    unsigned               made, exited;
    int                    err;
    /* The counters of the last run, kept when the schedulers are freed. */
    struct corio_rt_stats *stats;
    struct corio_stats    *sstats;
};

#define RT_MAGIC ((uintptr_t)0x74526f63u)

_Static_assert(offsetof(struct corio_rt, magic) >= 32, "magic clear of malloc's words");

/* A runtime used after its free (or never made) aborts with the library's message. */
static void rt_check(const struct corio_rt *rt, const char *call)
{
    afs__magic_check(AFS__MAGIC_OF(rt, struct corio_rt), RT_MAGIC, rt, call,
                     "runtime was freed (used after corio_rt_free, or freed twice)",
                     "not a runtime (freed, or never made)");
}

static void link_unref(struct corio__link *l)
{
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1)
        free(l);
}

#define LINK(p, field) AFS_LIST_ITEM(p, struct corio__link, field)

/* ------------------------------------------------------------------------------------------
 * Configuration
 * ---------------------------------------------------------------------------------------- */

void corio_rt_config_default(struct corio_rt_config *cfg)
{
    AFS_CHECK(cfg != NULL, "cfg is NULL");
    memset(cfg, 0, sizeof *cfg);
    corio_config_default(&cfg->sched);
    afs_config_default(&cfg->ctx);
}

int corio_rt_new(struct corio_rt **out, const struct corio_rt_config *cfg)
{
    AFS_CHECK(out != NULL, "out is NULL");
    *out = NULL;
    struct corio_rt_config def;
    if (!cfg) {
        corio_rt_config_default(&def);
        cfg = &def;
    }
    if (cfg->sched.ctx || (cfg->flags & ~CORIO_RT_PIN) || cfg->schedulers > 4096 ||
        !corio__config_ok(&cfg->sched))
        return -EINVAL;
    int bad = afs__config_check(&cfg->ctx); /* what each scheduler's context would refuse */
    if (bad < 0)
        return bad;
    unsigned n = cfg->schedulers ? cfg->schedulers : afs__cpu_usable();
    struct corio_rt *rt = afs__sys.calloc(1, sizeof *rt);
    if (!rt)
        return -ENOMEM;
    rt->magic = RT_MAGIC ^ (uintptr_t)rt; /* corio_rt_free() below checks it */
    rt->cfg = *cfg;
    rt->n = n;
    rt->spin = n > 1 && n <= afs__cpu_usable();
    rt->scheds = afs__sys.calloc(n, sizeof *rt->scheds);
    rt->threads = afs__sys.calloc(n, sizeof *rt->threads);
    rt->slots = afs__sys.calloc(n, sizeof *rt->slots);
    rt->stats = afs__sys.calloc(n, sizeof *rt->stats);
    rt->sstats = afs__sys.calloc(n, sizeof *rt->sstats);
    if (!rt->scheds || !rt->threads || !rt->slots || !rt->stats || !rt->sstats) {
        corio_rt_free(rt);
        return -ENOMEM;
    }
    afs__mutex_init(&rt->mu);
    afs__cond_init(&rt->cv);
    atomic_init(&rt->stop, false);
    *out = rt;
    return 0;
}

void corio_rt_free(struct corio_rt *rt)
{
    if (!rt)
        return;
    rt_check(rt, __func__);
    AFS_CHECK(!rt->running && !atomic_load(&rt->in_run), "freeing a running runtime");
    if (rt->scheds && rt->threads && rt->slots && rt->stats && rt->sstats) {
        afs__cond_destroy(&rt->cv);
        afs__mutex_destroy(&rt->mu);
    }
    free(rt->scheds);
    free(rt->threads);
    free(rt->slots);
    free(rt->stats);
    free(rt->sstats);
    *(volatile uintptr_t *)&rt->magic = AFS__DEAD; /* kept until the memory is reused */
    free(rt);
}

unsigned corio_rt_schedulers(const struct corio_rt *rt)
{
    AFS_CHECK(rt != NULL, "runtime is NULL");
    rt_check(rt, __func__);
    return rt->n;
}

int corio_sched_index(const struct corio_sched *s)
{
    AFS_CHECK(s != NULL, "scheduler is NULL");
    corio__sched_check(s, __func__);
    return s->rt ? (int)s->index : -1;
}

int corio_rt_stats(const struct corio_rt *rt, unsigned i, struct corio_rt_stats *out,
                   struct corio_stats *sched)
{
    AFS_CHECK(rt != NULL && out != NULL, "NULL argument");
    rt_check(rt, __func__);
    if (i >= rt->n)
        return -EINVAL;
    struct corio_sched *s = rt->running ? rt->scheds[i] : NULL;
    if (s) {
        AFS_CHECK(corio__thread_sched() == s, "another scheduler's, while it runs");
        *out = s->rts;
        if (sched)
            *sched = s->stats;
        return 0;
    }
    *out = rt->stats[i];
    if (sched)
        *sched = rt->sstats[i];
    return 0;
}

const struct corio_task *corio__rt_remote_parent(const struct corio_task *t)
{
    return t->link ? t->link->parent : NULL;
}

bool corio__rt_stopping(const struct corio_sched *s)
{
    return atomic_load_explicit(&s->rt->stop, memory_order_acquire);
}

/* ------------------------------------------------------------------------------------------
 * The child's side
 * ---------------------------------------------------------------------------------------- */

static void rt_entry(struct corio_task *t, void *arg)
{
    struct corio__link *l = arg;
    char top; /* above every frame of l->fn */
    int r = l->fn(t, l->arg);
    corio__detach_frame_futures(t, &top); /* its futures went with them */
    corio_wait(t); /* done means its children are done too */
    l->result = r;
}

static void done_deliver(struct corio__msg *m);

static void post_done(struct corio__link *l)
{
    l->done.deliver = done_deliver;
    corio__inbox_post(l->psched, &l->done);
    link_unref(l);
}

/* Notes on l that deadline d passed and went (the earliest such counts). */
static void lower_passed(struct corio__link *l, int64_t d)
{
    int64_t p = atomic_load_explicit(&l->passed_at, memory_order_seq_cst);
    while (d < p && !atomic_compare_exchange_weak_explicit(&l->passed_at, &p, d,
                                                           memory_order_seq_cst,
                                                           memory_order_seq_cst))
        ;
}

/* Takes from l the passed deadline noted there if it is earlier than d, the deadline l has
 * now (what was replaced to make d), and returns it; INT64_MAX for none. One not earlier is
 * left for the message of the change that replaces it: corio__rt_links_deadline() notes it
 * before it stores the new deadline, so a child may see it before the new one. */
static int64_t take_passed(struct corio__link *l, int64_t d)
{
    int64_t p = atomic_load_explicit(&l->passed_at, memory_order_seq_cst);
    while (p < d && !atomic_compare_exchange_weak_explicit(&l->passed_at, &p, INT64_MAX,
                                                           memory_order_seq_cst,
                                                           memory_order_seq_cst))
        ;
    return p < d ? p : INT64_MAX;
}

/* Starts the request on s (its thread). queued_here: it was counted in s's load. */
static void start(struct corio_sched *s, struct corio__link *l, bool queued_here)
{
    struct corio_task *t = corio__task_new(s, rt_entry, l);
    if (queued_here)
        atomic_fetch_sub_explicit(&s->load, 1, memory_order_relaxed);
    if (!t) {
        l->result = -ENOMEM;
        post_done(l);
        return;
    }
    t->link = l;
    t->id = l->id;
    l->task = t;
    afs_list_push_back(&s->remote_roots, &l->cnode);
    /* Either the parent sees csched and posts its control message, or this sees what it
     * stored (both sequentially consistent). */
    atomic_store_explicit(&l->csched, s, memory_order_seq_cst);
    corio__store_load_fence();
    t->inh_cancelled = atomic_load_explicit(&l->cancel, memory_order_seq_cst);
    t->inh_cancel_fact = atomic_load_explicit(&l->cancel_fact, memory_order_seq_cst);
    t->inh_deadline = atomic_load_explicit(&l->deadline, memory_order_seq_cst);
    /* A deadline that passed and went before this start reached no wait of the child (the
     * one just read may be going now: its change's message takes it). */
    (void)take_passed(l, t->inh_deadline);
    s->rts.spawns_in++;
}

void corio__rt_start(struct corio_sched *s, struct afs_list_node *n)
{
    start(s, LINK(n, spawn.node), true);
}

static void spawn_deliver(struct corio__msg *m)
{
    struct corio__link *l = LINK(m, spawn);
    start(corio__thread_sched(), l, true);
}

void corio__rt_root_done(struct corio_task *t)
{
    struct corio__link *l = t->link;
    afs_list_remove(&t->sched->remote_roots, &l->cnode);
    l->task = NULL;
    t->link = NULL;
    corio__task_free(t);
    post_done(l);
}

/* What reaches the parent (its cancellation, its deadline) reaches the child, on the
 * child's scheduler's thread. A deadline moved or lifted after it passed (by the parent's
 * clock) still ends the waits it reached here, though this scheduler may not have fired
 * their timers yet, as it did the parent's local ones, or not even learnt of that deadline
 * (its message and the lift's are one when this thread was busy for both): the passed one
 * is applied first. One moved before it passed does not, though its message came after
 * (unless the timers here fired first). */
static void apply_ctl(struct corio__link *l)
{
    struct corio_task *t = l->task;
    if (t) {
        int64_t d = atomic_load_explicit(&l->deadline, memory_order_seq_cst);
        int64_t passed = take_passed(l, d);
        if (passed < t->inh_deadline) {
            t->inh_deadline = passed;
            corio__rearm_tree(t, true); /* timers at the passed deadline: due now */
        }
        if (d != t->inh_deadline) {
            t->inh_deadline = d;
            corio__rearm_tree(t, passed != INT64_MAX);
        }
        if (atomic_load_explicit(&l->cancel, memory_order_seq_cst) && !t->inh_cancelled) {
            t->inh_cancelled = t->inh_cancel_fact = true;
            corio__cancel_tree(t);
        } else if (atomic_load_explicit(&l->cancel_fact, memory_order_seq_cst) &&
                   !t->inh_cancel_fact) {
            t->inh_cancel_fact = true;
            corio__cancel_fact_tree(t);
        }
    }
}

static void ctl_deliver(struct corio__msg *m)
{
    struct corio__link *l = LINK(m, ctl);
    atomic_store_explicit(&l->ctl_posted, false, memory_order_seq_cst);
    corio__store_load_fence();
    apply_ctl(l);
    link_unref(l);
}

/* ------------------------------------------------------------------------------------------
 * The parent's side
 * ---------------------------------------------------------------------------------------- */

static void done_deliver(struct corio__msg *m)
{
    struct corio__link *l = LINK(m, done);
    struct corio_task *p = l->parent;
    afs_list_remove(&p->links, &l->pnode);
    p->sched->links--;
    if (l->fut)
        (void)corio_future_complete(l->fut, l->result, NULL);
    link_unref(l);
    corio__child_gone(p);
}

static void post_ctl(struct corio__link *l)
{
    struct corio_sched *cs = atomic_load_explicit(&l->csched, memory_order_seq_cst);
    if (cs && cs == corio__thread_sched()) {
        apply_ctl(l); /* a CORIO_SCHED_ANY child started here: at once, as for a local one */
        return;
    }
    if (!cs || atomic_exchange_explicit(&l->ctl_posted, true, memory_order_seq_cst))
        return; /* not started (the start reads it), or a message is on its way */
    atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
    l->ctl.deliver = ctl_deliver;
    corio__inbox_post(cs, &l->ctl);
}

void corio__rt_links_cancel(struct corio_task *t)
{
    for (struct afs_list_node *n = t->links.first; n; n = n->next) {
        struct corio__link *l = LINK(n, pnode);
        atomic_store_explicit(&l->cancel_fact, true, memory_order_seq_cst);
        if (atomic_exchange_explicit(&l->cancel, true, memory_order_seq_cst))
            continue;
        post_ctl(l);
    }
}

void corio__rt_links_cancel_fact(struct corio_task *t)
{
    for (struct afs_list_node *n = t->links.first; n; n = n->next) {
        struct corio__link *l = LINK(n, pnode);
        if (!atomic_exchange_explicit(&l->cancel_fact, true, memory_order_seq_cst))
            post_ctl(l);
    }
}

void corio__rt_links_detach(struct corio_task *t, const char *lo, const char *hi)
{
    for (struct afs_list_node *n = t->links.first; n; n = n->next) {
        struct corio__link *l = LINK(n, pnode);
        if ((const char *)l->fut >= lo && (const char *)l->fut < hi)
            l->fut = NULL; /* read on this thread only (done_deliver) */
    }
}

void corio__rt_links_deadline(struct corio_task *t, bool passed)
{
    int64_t d = corio__effective_deadline(t);
    for (struct afs_list_node *n = t->links.first; n; n = n->next) {
        struct corio__link *l = LINK(n, pnode);
        /* Only this thread stores it. A passed deadline is noted before the new one is
         * stored: a child that starts meanwhile and reads the new one knows it never waited
         * under the old one. */
        int64_t old = atomic_load_explicit(&l->deadline, memory_order_seq_cst);
        if (old == d)
            continue;
        if (passed && old < d && afs__now_reached(old))
            lower_passed(l, old);
        atomic_store_explicit(&l->deadline, d, memory_order_seq_cst);
        post_ctl(l);
    }
}

static _Thread_local uint32_t tls_rng;

static unsigned rng_below(unsigned n)
{
    uint32_t x = tls_rng ? tls_rng : (uint32_t)(uintptr_t)&tls_rng | 1u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    tls_rng = x;
    return x % n;
}

static size_t load_of(struct corio_sched *s)
{
    return atomic_load_explicit(&s->load, memory_order_relaxed);
}

/* The least loaded scheduler; `me` on ties (no message needed). */
static struct corio_sched *pick(struct corio_rt *rt, struct corio_sched *me)
{
    struct corio_sched *best = me;
    size_t best_load = load_of(me);
    if (rt->n <= 4) {
        for (unsigned i = 0; i < rt->n; i++) {
            size_t l = load_of(rt->scheds[i]);
            if (l < best_load) {
                best = rt->scheds[i];
                best_load = l;
            }
        }
        return best;
    }
    for (int k = 0; k < 2; k++) {
        struct corio_sched *o = rt->scheds[rng_below(rt->n)];
        size_t l = load_of(o);
        if (l < best_load) {
            best = o;
            best_load = l;
        }
    }
    return best;
}

/* What a child spawned here without a future runs: fn, result dropped. Read once, at the
 * child's first instruction, from the parent's stack. */
struct drop_boot {
    corio_task_fn *fn;
    void          *arg;
};

static void drop_entry(struct corio_task *t, void *arg)
{
    struct drop_boot b = *(struct drop_boot *)arg;
    (void)b.fn(t, b.arg);
}

int corio_spawn_on(struct corio_task *parent, int sched, corio_task_fn *fn, void *arg,
                   struct corio_future *fut)
{
    corio__check_running(parent, "corio_spawn_on");
    AFS_CHECK(fn != NULL, "fn is NULL");
    struct corio_sched *s = parent->sched;
    struct corio_rt *rt = s->rt;
    struct corio_sched *target;
    if (sched == CORIO_SCHED_ANY)
        target = rt ? pick(rt, s) : s;
    else if (sched < 0 || (unsigned)sched >= (rt ? rt->n : 1u))
        return -EINVAL;
    else
        target = rt ? rt->scheds[sched] : s;
    /* CORIO_SCHED_ANY placed here on a runtime of several: queued here, stealable (it
     * starts in this scheduler's next resume phase unless another takes it first: a sleeper
     * is woken for it, and one about to block looks for it), not run at once where it would
     * keep another idle. Whether another sleeps right now says too little: one awake at this
     * instant may block the next, and a child started here could no longer move to it. */
    if (target == s && !(sched == CORIO_SCHED_ANY && rt && rt->n > 1)) {
        if (fut)
            return corio_spawn_future(parent, fn, arg, fut, NULL);
        struct drop_boot b = {fn, arg};
        return corio_spawn(parent, drop_entry, &b, NULL);
    }
    if (fut) {
        corio_future_init(fut);
        fut->sched = s;
    }
    struct corio__link *l = afs__sys.calloc(1, sizeof *l);
    if (!l) {
        if (fut)
            corio_future_complete(fut, -ENOMEM, NULL);
        return -ENOMEM;
    }
    atomic_init(&l->refs, 2); /* the parent's side and the child's */
    l->fn = fn;
    l->arg = arg;
    l->fut = fut;
    l->parent = parent;
    l->id = parent->nspawned++;
    l->psched = s;
    atomic_init(&l->csched, NULL);
    /* Children start under what reaches their parent (shields included). */
    atomic_init(&l->cancel, corio__cancel_reaches(parent));
    atomic_init(&l->cancel_fact, corio_cancelled(parent) != 0);
    atomic_init(&l->deadline, corio__effective_deadline(parent));
    atomic_init(&l->passed_at, INT64_MAX); /* a child that has not started waits under none */
    atomic_init(&l->ctl_posted, false);
    afs_list_push_back(&parent->links, &l->pnode);
    parent->live_children++;
    s->links++;
    s->rts.spawns_out++;
    atomic_fetch_add_explicit(&target->load, 1, memory_order_relaxed);
    if (sched == CORIO_SCHED_ANY) {
        corio__inbox_post_spawn(target, &l->spawn.node);
    } else {
        l->spawn.deliver = spawn_deliver;
        corio__inbox_post(target, &l->spawn);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Stealing
 * ---------------------------------------------------------------------------------------- */

void corio__rt_woke(struct corio_sched *s)
{
    struct corio_rt *rt = s->rt;
    if (atomic_load_explicit(&rt->thief, memory_order_relaxed))
        atomic_store_explicit(&rt->thief, false, memory_order_relaxed);
}

bool corio__rt_steal(struct corio_sched *s)
{
    struct corio_rt *rt = s->rt;
    corio__rt_woke(s);
    struct corio_sched *victim = NULL;
    size_t most = 0;
    for (unsigned i = 0; i < rt->n; i++) {
        struct corio_sched *o = rt->scheds[i];
        size_t k = o == s ? 0 : atomic_load_explicit(&o->inbox.nspawns, memory_order_relaxed);
        if (k > most) {
            most = k;
            victim = o;
        }
    }
    if (!victim)
        return false;
    /* Half, from the back: the victim starts the front ones in its next resume phase. */
    struct afs_list got = {0};
    size_t k = 0;
    afs__mutex_lock(&victim->inbox.mu);
    size_t have = atomic_load_explicit(&victim->inbox.nspawns, memory_order_relaxed);
    size_t want = (have + 1) / 2;
    while (k < want && victim->inbox.spawns.last) {
        struct afs_list_node *n = victim->inbox.spawns.last;
        afs_list_remove(&victim->inbox.spawns, n);
        afs_list_push_front(&got, n);
        k++;
    }
    atomic_store_explicit(&victim->inbox.nspawns, have - k, memory_order_relaxed);
    afs__mutex_unlock(&victim->inbox.mu);
    if (k == 0)
        return false;
    atomic_fetch_sub_explicit(&victim->load, k, memory_order_relaxed);
    s->rts.steals += k;
    if (have > k) /* the rest still waits there: another sleeper may take half of it */
        corio__rt_wake_thief(victim);
    struct afs_list_node *n;
    while ((n = afs_list_pop_front(&got)))
        start(s, LINK(n, spawn.node), false);
    return true;
}

void corio__rt_wake_thief(struct corio_sched *s)
{
    struct corio_rt *rt = s->rt;
    struct corio_sched *me = corio__thread_sched();
    if (rt->n < 3 && me && me->rt == rt && me != s) /* the poster and s: none left to wake */
        return;
    bool no = false;
    if (!atomic_compare_exchange_strong_explicit(&rt->thief, &no, true, memory_order_relaxed,
                                                 memory_order_relaxed))
        return;
    unsigned from = rng_below(rt->n);
    for (unsigned k = 0; k < rt->n; k++) {
        struct corio_sched *o = rt->scheds[(from + k) % rt->n];
        if (o == s || o == me || atomic_load_explicit(&o->awake, memory_order_seq_cst))
            continue;
        corio__sched_wake(o);
        if (me && me->rt == rt)
            me->rts.thief_wakes++;
        return;
    }
    atomic_store_explicit(&rt->thief, false, memory_order_relaxed);
}

/* ------------------------------------------------------------------------------------------
 * Deadlocks across schedulers
 *
 * A scheduler about to sleep with nothing of its own that could wake a task (no op in its
 * context, no timer, no wait that another thread may end) is counted stuck until it wakes.
 * Only a message can wake it then, and messages come from schedulers that run: when the last
 * one is counted and no inbox holds a message or a queued spawn, nothing ever will. Each
 * poster sets the receiver's `has` before it counts itself (sequentially consistent on both
 * sides), so the last one counted sees every message posted before, unless its receiver
 * woke meanwhile (and took it): a receiver leaves the count when it wakes, before it takes
 * its messages, and adds one to the count of wake-ups beside it, so the last one counted
 * declares the deadlock only when both are as it left them after looking at every inbox.
 * A scheduler that woke counts itself again before it sleeps, and looks again if last.
 * ---------------------------------------------------------------------------------------- */

#define STUCK_WOKE ((uint64_t)1 << 32)

bool corio__rt_stuck(struct corio_sched *s)
{
    struct corio_rt *rt = s->rt;
    if (atomic_load_explicit(&rt->deadlock, memory_order_seq_cst))
        return true;
    uint64_t v = atomic_fetch_add_explicit(&rt->stuck, 1, memory_order_seq_cst) + 1;
    if ((uint32_t)v < rt->n || atomic_load_explicit(&rt->stop, memory_order_seq_cst))
        return false;
    for (unsigned i = 0; i < rt->n; i++)
        if (atomic_load_explicit(&rt->scheds[i]->inbox.has, memory_order_seq_cst))
            return false;
    if (atomic_load_explicit(&rt->stuck, memory_order_seq_cst) != v)
        return false; /* one woke meanwhile: it looks again when it sleeps again */
    if (!atomic_exchange_explicit(&rt->deadlock, true, memory_order_seq_cst))
        for (unsigned i = 0; i < rt->n; i++)
            if (rt->scheds[i] != s)
                afs_ctx_wake(rt->scheds[i]->ctx);
    return true;
}

void corio__rt_unstuck(struct corio_sched *s)
{
    atomic_fetch_add_explicit(&s->rt->stuck, STUCK_WOKE - 1, memory_order_seq_cst);
}

bool corio__rt_deadlocked(const struct corio_sched *s)
{
    return atomic_load_explicit(&s->rt->deadlock, memory_order_seq_cst);
}

void corio__rt_fail(struct corio_sched *s, int err)
{
    struct corio_rt *rt = s->rt;
    int none = 0;
    if (!atomic_compare_exchange_strong(&rt->failed, &none, err))
        return;
    fprintf(stderr, "corio: scheduler %u: waiting on its context failed (%s): the run ends\n",
            s->index, afs_strerror(err));
    for (unsigned i = 0; i < rt->n; i++)
        if (rt->scheds[i] && rt->scheds[i] != s)
            afs_ctx_wake(rt->scheds[i]->ctx);
}

int corio__rt_failed(const struct corio_sched *s)
{
    return atomic_load_explicit(&s->rt->failed, memory_order_acquire);
}

void corio__rt_report_deadlock(const struct corio_sched *s)
{
    if (s->live)
        fprintf(stderr, "corio: deadlock: %zu task(s) suspended on scheduler %u, and none of "
                        "the runtime's %u schedulers has anything that could wake a task (no "
                        "file op, timer, generic request or outside wait in flight, no message "
                        "on its way)\n", s->live, s->index, s->rt->n);
}

void corio__rt_links_drop(struct corio_task *t)
{
    struct afs_list_node *n;
    while ((n = afs_list_pop_front(&t->links))) {
        t->sched->links--;
        link_unref(LINK(n, pnode));
    }
}

void corio__rt_abandon(struct corio_sched *s)
{
    struct afs_list_node *n;
    while ((n = afs_list_pop_front(&s->remote_roots))) {
        struct corio__link *l = LINK(n, cnode);
        struct corio_task *t = l->task;
        l->task = NULL;
        t->link = NULL;
        corio__abandon(s, t);
        link_unref(l);
    }
    s->live = 0;
    s->outside_waits = 0;
}

bool corio__rt_queued_elsewhere(const struct corio_sched *s)
{
    struct corio_rt *rt = s->rt;
    for (unsigned i = 0; i < rt->n; i++) {
        struct corio_sched *o = rt->scheds[i];
        if (o != s && atomic_load_explicit(&o->inbox.nspawns, memory_order_seq_cst))
            return true;
    }
    return false;
}

/* How long an idle scheduler polls its inbox before it blocks: a round trip to another
 * scheduler that is awake takes a few microseconds, a blocking wait and its wake-up (a
 * system call on each side and a thread switch) more. */
#define SPIN_NS 20000

/* The CPU the calling thread runs on, -1 where the OS does not say. */
#if defined(_WIN32)
static int cur_cpu(void)
{
    return (int)GetCurrentProcessorNumber();
}

static void yield_cpu(void)
{
    SwitchToThread();
}
#else
#include <sched.h>
static int cur_cpu(void)
{
#if defined(__linux__)
    return sched_getcpu(); /* glibc 2.35+: read from rseq, no system call */
#else
    return -1;
#endif
}

static void yield_cpu(void)
{
    sched_yield();
}
#endif

void corio__rt_awake(struct corio_sched *s)
{
    int cpu = cur_cpu();
    /* Polls of other schedulers read it: written only when it changed. */
    if (atomic_load_explicit(&s->cpu, memory_order_relaxed) != cpu)
        atomic_store_explicit(&s->cpu, cpu, memory_order_relaxed);
}

/* Another scheduler of s's runtime is awake (runnable) on this CPU, where s runs: it waits
 * for the CPU that s's poll holds. */
static bool cpu_shared(struct corio_sched *s, int cpu)
{
    if (cpu < 0)
        return false;
    struct corio_rt *rt = s->rt;
    for (unsigned i = 0; i < rt->n; i++) {
        struct corio_sched *o = rt->scheds[i];
        if (o != s && atomic_load_explicit(&o->cpu, memory_order_relaxed) == cpu &&
            atomic_load_explicit(&o->awake, memory_order_relaxed))
            return true;
    }
    return false;
}

bool corio__rt_spin(struct corio_sched *s)
{
    if (!s->rt->spin)
        return false;
    /* Polls that find nothing cost CPU for nothing (and, on a machine with more runnable
     * threads than CPUs, delay the very thread that would answer): after each miss in a row
     * the next idle waits skip the poll, 1, 3, 7 ... 63 of them. A scheduler whose tasks
     * wait for children on other schedulers expects their ends: it keeps a back-off of its
     * own for those waits, so misses while it had nothing to expect do not stop it. */
    unsigned k = s->links > 0;
    if (s->spin_skip[k]) {
        s->spin_skip[k]--;
        return false;
    }
    struct corio__inbox *in = &s->inbox;
    int64_t until = corio_now() + SPIN_NS;
    bool got = false;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(&in->has, memory_order_relaxed)) {
            got = true;
            break;
        }
        if ((i & 63) == 0) {
            if (i && corio_now() >= until)
                break;
            corio__rt_awake(s);
            if (cpu_shared(s, atomic_load_explicit(&s->cpu, memory_order_relaxed)))
                yield_cpu();
        }
        afs__cpu_relax();
    }
    s->rts.polls++;
    if (got) {
        s->rts.polls_hit++;
        s->spin_misses[k] = 0;
    } else {
        if (s->spin_misses[k] < 6)
            s->spin_misses[k]++;
        s->spin_skip[k] = (1u << s->spin_misses[k]) - 1;
    }
    return got;
}

/* ------------------------------------------------------------------------------------------
 * Running
 * ---------------------------------------------------------------------------------------- */

/* Scheduler i's context and scheduler, made on its own thread (io_uring: SINGLE_ISSUER binds
 * the ring to the thread that makes it). */
static int make_sched(struct corio_rt *rt, unsigned i, struct corio_sched **out)
{
    afs__ctx_ring_hint(i ? rt->scheds[0]->ctx : NULL, true);
    struct afs_ctx *ctx;
    int err = afs_ctx_new(&ctx, &rt->cfg.ctx);
    afs__ctx_ring_hint(NULL, false); /* unused when the backend is not io_uring */
    if (err < 0)
        return err;
    struct corio_config c = rt->cfg.sched;
    c.ctx = ctx;
    struct corio_sched *s;
    err = corio_sched_new(&s, &c);
    if (err < 0) {
        afs_ctx_free(ctx);
        return err;
    }
    s->own_ctx = true;
    s->rt = rt;
    s->index = i;
    atomic_init(&s->load, 0);
    atomic_init(&s->cpu, -1);
    *out = s;
    return 0;
}

/* Every scheduler is out of its loop: none looks at another's inbox any more. */
static void exit_barrier(struct corio_rt *rt, struct corio_sched *s)
{
    rt->stats[s->index] = s->rts;
    rt->sstats[s->index] = s->stats;
    afs__mutex_lock(&rt->mu);
    rt->exited++;
    afs__cond_broadcast(&rt->cv);
    while (rt->exited < rt->made)
        afs__cond_wait(&rt->cv, &rt->mu);
    afs__mutex_unlock(&rt->mu);
}

static void worker_main(void *arg)
{
    struct rt_slot *slot = arg;
    struct corio_rt *rt = slot->rt;
    if (rt->cfg.flags & CORIO_RT_PIN)
        (void)afs__thread_pin(slot->index); /* a hint: where it fails the thread floats */
    struct corio_sched *s = NULL;
    int err = corio__stack_thread_init();
    if (err == 0)
        err = make_sched(rt, slot->index, &s);
    afs__mutex_lock(&rt->mu);
    if (err < 0 && rt->err == 0)
        rt->err = err;
    if (s) {
        rt->scheds[slot->index] = s;
        rt->made++;
    }
    afs__cond_broadcast(&rt->cv);
    /* Until every scheduler exists (or the run is called off). */
    while (!atomic_load_explicit(&rt->stop, memory_order_acquire) && rt->err == 0 &&
           !rt->running)
        afs__cond_wait(&rt->cv, &rt->mu);
    bool go = s && rt->err == 0 && !atomic_load_explicit(&rt->stop, memory_order_acquire);
    afs__mutex_unlock(&rt->mu);
    if (!s)
        return;
    if (go) {
        s->running = true;
        if (corio__sched_loop(s, NULL) < 0) /* a deadlock, or the run failed */
            corio__rt_abandon(s);
        s->running = false;
    }
    exit_barrier(rt, s);
    corio_sched_free(s);
}

static int rt_run(struct corio_rt *rt, corio_fn *fn, void *arg);

int corio_rt_run(struct corio_rt *rt, corio_fn *fn, void *arg)
{
    AFS_CHECK(rt != NULL && fn != NULL, "NULL argument");
    rt_check(rt, __func__);
    AFS_CHECK(corio_current() == NULL, "corio_rt_run is not reentrant");
    /* Taken at once: a second thread's run (or a free) meanwhile is told, not raced. */
    AFS_CHECK(!atomic_exchange(&rt->in_run, true),
              "corio_rt_run is not reentrant (the runtime runs on another thread)");
    int rc = rt_run(rt, fn, arg);
    atomic_store(&rt->in_run, false);
    return rc;
}

static int rt_run(struct corio_rt *rt, corio_fn *fn, void *arg)
{
    memset(rt->scheds, 0, rt->n * sizeof *rt->scheds);
    memset(rt->stats, 0, rt->n * sizeof *rt->stats);
    memset(rt->sstats, 0, rt->n * sizeof *rt->sstats);
    atomic_store(&rt->stop, false);
    atomic_store(&rt->stuck, 0);
    atomic_store(&rt->deadlock, false);
    atomic_store(&rt->failed, 0);
    rt->made = rt->exited = 0;
    rt->err = 0;
    int err = corio__stack_thread_init();
    if (err < 0)
        return err;
    struct corio_sched *s0;
    if ((err = make_sched(rt, 0, &s0)) < 0)
        return err;
    rt->scheds[0] = s0;
    rt->made = 1;
    /* The other schedulers make their contexts on their own threads. */
    unsigned started = 1;
    for (unsigned i = 1; i < rt->n; i++) {
        rt->slots[i] = (struct rt_slot){rt, i};
        if ((err = afs__thread_start(&rt->threads[i], worker_main, &rt->slots[i])) < 0)
            break;
        started++;
    }
    afs__mutex_lock(&rt->mu);
    if (err < 0)
        rt->err = err;
    /* Each started thread reports: made, or its error. */
    while (rt->made < started && rt->err == 0)
        afs__cond_wait(&rt->cv, &rt->mu);
    err = rt->err;
    if (err < 0) {
        atomic_store(&rt->stop, true);
    } else {
        rt->running = true;
    }
    afs__cond_broadcast(&rt->cv);
    afs__mutex_unlock(&rt->mu);

    int rc = err;
    if (err == 0) {
        rc = corio_sched_run(s0, fn, arg);
        if (rc < 0)
            corio__rt_abandon(s0); /* the tasks it started for others' (root's: above) */
        /* Every task is done: the other schedulers stop once their inboxes are empty. */
        atomic_store_explicit(&rt->stop, true, memory_order_release);
        for (unsigned i = 1; i < rt->n; i++)
            afs_ctx_wake(rt->scheds[i]->ctx);
    }
    exit_barrier(rt, s0);
    for (unsigned i = 1; i < started; i++)
        afs__thread_join(rt->threads[i]);
    rt->running = false;
    corio_sched_free(s0);
    memset(rt->scheds, 0, rt->n * sizeof *rt->scheds);
    return rc;
}
