/* Wait queues: the queues tasks wait on in the primitives (mutex, wait group, group,
 * singleflight, generators, jobs, futures); a queue wait is a wait record whose cancel takes
 * the task off its queue. */
#include "corio_int.h"

void corio__waitq_cancel(struct corio_task *t, struct corio__wait *w, int err)
{
    (void)w;
    corio__wake(t, err);
}

int corio__wait_on(struct corio_task *t, struct corio__waitq *q)
{
    corio__waitq_push(q, t);
    struct corio__wait w = {.cancel = corio__waitq_cancel, .what = q, .until = INT64_MAX};
    return corio__suspend(t, &w);
}

void corio__wait_on_hard(struct corio_task *t, struct corio__waitq *q)
{
    corio__waitq_push(q, t);
    struct corio__wait w = CORIO__WAIT_FOR(q);
    corio__suspend(t, &w);
}

void corio__wake(struct corio_task *t, int err)
{
    if (t->q_on)
        corio__waitq_remove(t->q_on, t);
    corio__ready(t, err);
}

void corio__wake_all(struct corio__waitq *q)
{
    struct corio_task *t;
    while ((t = corio__waitq_pop(q)))
        corio__ready(t, 0);
}

