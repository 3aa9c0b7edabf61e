/* The asyncfs waiter: a blocking file call in a task (afs_pread...) suspends the task on a
 * wait record naming its op; the op's completion resumes it, and cancellation or a deadline
 * cancels the op in the kernel (the task resumes from the op's callback, once the kernel is
 * done with its buffer). */
#include "corio_int.h"

static void *waiter_current(struct afs_waiter *aw)
{
    struct corio_sched *s = (struct corio_sched *)((char *)aw - offsetof(struct corio_sched, waiter));
    return s->current;
}

static void file_cancel(struct corio_task *t, struct corio__wait *w, int err)
{
    (void)t;
    w->timed_out = err == -ETIMEDOUT;
    afs_cancel(w->what);
}

static int waiter_suspend(struct afs_waiter *aw, void *co, struct afs_op *op)
{
    (void)aw;
    struct corio_task *t = co;
    t->sched->stats.ios++;
    int err = corio__interrupted(t);
    if (err) {
        /* Still queued: cancelling takes it back; its callback comes with the next wait. */
        afs_cancel(op);
    }
    struct corio__wait w = {.cancel = file_cancel, .what = op, .until = INT64_MAX,
                            .outside = true};
    corio__suspend(t, &w);
    if (op->result == -ECANCELED && (w.timed_out || err == -ETIMEDOUT))
        return -ETIMEDOUT;
    return 0;
}

static void waiter_resume(struct afs_waiter *aw, void *co, struct afs_op *op)
{
    (void)aw;
    struct corio_task *t = co;
    AFS_CHECK(t->w && t->w->what == op, "resume for an op the task is not on");
    corio__ready(t, 0);
}

void corio__waiter_init(struct corio_sched *s)
{
    s->waiter.ctx = s->ctx;
    s->waiter.current = waiter_current;
    s->waiter.suspend = waiter_suspend;
    s->waiter.resume = waiter_resume;
}
