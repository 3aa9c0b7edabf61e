/* The remote inbox: the one way into a scheduler from other threads (dispatcher answers,
 * external futures). A message waits under the inbox's lock until the resume phase delivers
 * it on the scheduler's thread. */
#include "corio_int.h"

void corio__inbox_post(struct corio_sched *s, struct corio__msg *m)
{
    struct corio__inbox *in = &s->inbox;
    afs__mutex_lock(&in->mu);
    afs_list_push_back(&in->msgs, &m->node);
    atomic_store_explicit(&in->has, true, memory_order_release);
    afs__mutex_unlock(&in->mu);
    /* m may be delivered and gone from here on: only s is touched. */
    afs_ctx_wake(s->ctx);
}

bool corio__inbox_claim(struct corio_sched *s, unsigned char *flag)
{
    afs__mutex_lock(&s->inbox.mu);
    bool first = !*flag;
    *flag = 1;
    afs__mutex_unlock(&s->inbox.mu);
    return first;
}

void corio__inbox_deliver(struct corio_sched *s)
{
    struct corio__inbox *in = &s->inbox;
    if (!atomic_exchange_explicit(&in->has, false, memory_order_acquire))
        return;
    afs__mutex_lock(&in->mu);
    struct afs_list got = in->msgs;
    in->msgs.first = in->msgs.last = NULL;
    afs__mutex_unlock(&in->mu);
    struct afs_list_node *n;
    while ((n = afs_list_pop_front(&got))) {
        struct corio__msg *m = AFS_LIST_ITEM(n, struct corio__msg, node);
        m->deliver(m);
    }
}
