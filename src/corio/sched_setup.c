/* Creating and freeing a scheduler, its configuration and statistics, and what is left of a
 * run that ended in a deadlock. */
#include "corio_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void corio_config_default(struct corio_config *cfg)
{
    AFS_CHECK(cfg != NULL, "cfg is NULL");
    memset(cfg, 0, sizeof *cfg);
    cfg->stack_size = 256 * 1024;
    cfg->io_limit = 128;
}

bool corio__config_ok(const struct corio_config *cfg)
{
    return cfg->io_limit != 0 && !(cfg->flags & ~CORIO_TRACE) &&
           cfg->stack_size <= ((size_t)1 << 30);
}

int corio_sched_new(struct corio_sched **out, const struct corio_config *cfg)
{
    AFS_CHECK(out != NULL, "out is NULL");
    *out = NULL;
    struct corio_config def;
    if (!cfg) {
        corio_config_default(&def);
        cfg = &def;
    }
    if (!corio__config_ok(cfg))
        return -EINVAL;
    struct corio_sched *s = afs__sys.calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    if (s->cfg.stack_size == 0)
        s->cfg.stack_size = 256 * 1024;
    int err = corio__stack_pool_init(&s->stacks, s->cfg.stack_size, 1024);
    if (err < 0) {
        free(s);
        return err;
    }
    s->ctx = cfg->ctx;
    if (!s->ctx) {
        err = afs_ctx_new(&s->ctx, NULL);
        if (err < 0) {
            corio__stack_pool_fini(&s->stacks);
            free(s);
            return err;
        }
        s->own_ctx = true;
    }
    afs__mutex_init(&s->inbox.mu);
    atomic_init(&s->inbox.has, false);
    atomic_init(&s->inbox.waking, 0);
    atomic_init(&s->awake, false);
    corio__waiter_init(s);
    s->magic = CORIO__SCHED_MAGIC ^ (uintptr_t)s;
    *out = s;
    return 0;
}

_Static_assert(offsetof(struct corio_sched, magic) >= 32, "magic clear of malloc's words");

void corio__sched_check(const struct corio_sched *s, const char *call)
{
    afs__magic_check(AFS__MAGIC_OF(s, struct corio_sched), CORIO__SCHED_MAGIC, s, call,
                     "scheduler was freed (used after corio_sched_free, or freed twice)",
                     "not a scheduler (freed, or never made)");
}

void corio_sched_free(struct corio_sched *s)
{
    if (!s)
        return;
    corio__sched_check(s, __func__);
    AFS_CHECK(!s->running, "freeing a running scheduler");
    struct afs_list_node *n;
    while ((n = afs_list_pop_front(&s->free_tasks)))
        free(AFS_LIST_ITEM(n, struct corio_task, sib)->mem); /* NULL: carved */
    corio__task_chunks_free(s);
    corio__blocking_free(s);
    corio__timers_free(&s->timers);
    corio__dispatch_free_batches(s, true);
    if (s->flights_free)
        s->flights_free(s);
    corio__stack_pool_fini(&s->stacks);
    corio__inbox_wait_posters(s); /* the one whose message let s end may still wake it */
    afs__mutex_destroy(&s->inbox.mu);
    if (s->own_ctx)
        afs_ctx_free(s->ctx);
    *(volatile uintptr_t *)&s->magic = AFS__DEAD; /* kept until the memory is reused */
    free(s);
}

void corio_sched_stats(const struct corio_sched *s, struct corio_stats *out)
{
    AFS_CHECK(s != NULL && out != NULL, "NULL argument");
    corio__sched_check(s, __func__);
    *out = s->stats;
    out->stacks = s->stacks.n_mapped;
}

int corio_run(corio_fn *fn, void *arg)
{
    struct corio_sched *s;
    int err = corio_sched_new(&s, NULL);
    if (err < 0)
        return err;
    err = corio_sched_run(s, fn, arg);
    corio_sched_free(s);
    return err;
}

struct afs_ctx *corio_sched_ctx(const struct corio_sched *s)
{
    AFS_CHECK(s != NULL, "scheduler is NULL");
    corio__sched_check(s, __func__);
    return s->ctx;
}

void corio__report_deadlock(struct corio_sched *s)
{
    fprintf(stderr, "corio: deadlock: %zu task(s) suspended with nothing that could wake them "
                    "(no file op, timer or generic request in flight)\n", s->live);
}

/* Frees every task after a deadlock: their stacks are dropped without unwinding. */
void corio__abandon(struct corio_sched *s, struct corio_task *top)
{
    struct afs_list todo = {0}; /* t's tree, a task at a time (no recursion) */
    afs_list_push_back(&todo, &top->sib);
    struct afs_list_node *n;
    while ((n = afs_list_pop_front(&todo))) {
        struct corio_task *t = AFS_LIST_ITEM(n, struct corio_task, sib);
        afs_list_splice(&todo, &t->children, false);
        if (t->links.first)
            corio__rt_links_drop(t);
        if (t->q_on)
            corio__waitq_remove(t->q_on, t);
        corio__timer_remove(&s->timers, t);
        if (t->stack.map)
            corio__stack_put(&s->stacks, &t->stack);
        memset(&t->stack, 0, sizeof t->stack);
        afs_list_push_front(&s->free_tasks, &t->sib);
    }
}
