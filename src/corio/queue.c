/* A FIFO queue of values between the tasks of one scheduler (asyncigo's Queue), bounded or
 * not. A put hands its value straight to the longest-waiting getter, so a getter that was
 * cancelled (it left the list of getters when its wait ended) never swallows a value; a get
 * from a full queue takes the longest-waiting putter's value in at once, so a put that comes
 * meanwhile cannot take its place, and the woken putter never touches the queue again. */
#include "corio_int.h"

#include <stdlib.h>
#include <string.h>

/* A waiting getter, on its own stack. */
struct getter {
    struct afs_list_node node;
    struct corio_task   *task;
    struct corio_queue  *q;
    void                *value;
    bool                 got;
};

/* A putter waiting for room, on its own stack. */
struct putter {
    struct afs_list_node node;
    struct corio_task   *task;
    struct corio_queue  *q;
    void                *value;
    bool                 added;
};

struct qpriv {
    struct afs_list getters;
    struct afs_list putters;
};
_Static_assert(sizeof(struct qpriv) <= sizeof(((struct corio_queue *)0)->private_),
               "the queue's private part must fit");

static struct qpriv *qp(struct corio_queue *q)
{
    return (struct qpriv *)(void *)q->private_;
}

void corio_queue_init(struct corio_queue *q, size_t cap)
{
    AFS_CHECK(q != NULL, "queue is NULL");
    memset(q, 0, sizeof *q);
    q->cap = cap;
}

void corio_queue_destroy(struct corio_queue *q)
{
    AFS_CHECK(q != NULL, "queue is NULL");
    AFS_CHECK(afs_list_empty(&qp(q)->getters) && afs_list_empty(&qp(q)->putters),
              "tasks are waiting on the queue");
    free(q->ring);
    q->ring = NULL;
    q->ring_cap = q->len = q->head = 0;
}

size_t corio_queue_len(const struct corio_queue *q)
{
    AFS_CHECK(q != NULL, "queue is NULL");
    return q->len;
}

static int grow(struct corio_queue *q)
{
    size_t ncap = q->ring_cap ? q->ring_cap * 2 : 16;
    if (q->cap && ncap > q->cap)
        ncap = q->cap;
    void **r = afs__sys.malloc(ncap * sizeof *r);
    if (!r)
        return -ENOMEM;
    for (size_t i = 0; i < q->len; i++)
        r[i] = q->ring[(q->head + i) % q->ring_cap];
    free(q->ring);
    q->ring = r;
    q->ring_cap = ncap;
    q->head = 0;
    return 0;
}

int corio_queue_try_put(struct corio_queue *q, void *value)
{
    AFS_CHECK(q != NULL, "queue is NULL");
    if (q->closed)
        return -EPIPE;
    struct afs_list_node *n = afs_list_pop_front(&qp(q)->getters);
    if (n) {
        /* Only live getters are on the list: a cancelled one took itself off. */
        struct getter *g = AFS_LIST_ITEM(n, struct getter, node);
        g->value = value;
        g->got = true;
        corio__wake_check(g->task);
        corio__ready(g->task, 0);
        return 0;
    }
    if (q->cap && q->len >= q->cap)
        return -EAGAIN;
    if (q->len == q->ring_cap) {
        int err = grow(q);
        if (err < 0)
            return err;
    }
    q->ring[(q->head + q->len) % q->ring_cap] = value;
    q->len++;
    return 0;
}

static void putter_cancel(struct corio_task *t, struct corio__wait *w, int err)
{
    struct putter *p = w->what;
    afs_list_remove(&qp(p->q)->putters, &p->node);
    corio__ready(t, err);
}

int corio_queue_put(struct corio_task *t, struct corio_queue *q, void *value)
{
    corio__check_running(t, "corio_queue_put");
    int err = corio__interrupted(t);
    if (err)
        return err;
    err = corio_queue_try_put(q, value);
    if (err != -EAGAIN)
        return err;
    struct putter p = {.task = t, .q = q, .value = value};
    afs_list_push_back(&qp(q)->putters, &p.node);
    struct corio__wait w = {.cancel = putter_cancel, .what = &p, .until = INT64_MAX};
    err = corio__suspend(t, &w);
    if (err)
        return err;
    return p.added ? 0 : -EPIPE; /* not added: woken by corio_queue_close() */
}

int corio_queue_try_get(struct corio_queue *q, void **value)
{
    AFS_CHECK(q != NULL && value != NULL, "NULL argument");
    if (q->len == 0)
        return q->closed ? -EPIPE : -EAGAIN;
    *value = q->ring[q->head];
    q->head = (q->head + 1) % q->ring_cap;
    q->len--;
    /* Putters wait only while the queue is full: the place just freed is the first one's. */
    struct afs_list_node *n = afs_list_pop_front(&qp(q)->putters);
    if (n) {
        struct putter *p = AFS_LIST_ITEM(n, struct putter, node);
        q->ring[(q->head + q->len) % q->ring_cap] = p->value;
        q->len++;
        p->added = true;
        corio__wake_check(p->task);
        corio__ready(p->task, 0);
    }
    return 0;
}

static void getter_cancel(struct corio_task *t, struct corio__wait *w, int err)
{
    struct getter *g = w->what;
    afs_list_remove(&qp(g->q)->getters, &g->node);
    corio__ready(t, err);
}

int corio_queue_get(struct corio_task *t, struct corio_queue *q, void **value)
{
    corio__check_running(t, "corio_queue_get");
    AFS_CHECK(q != NULL && value != NULL, "NULL argument");
    int err = corio__interrupted(t);
    if (err)
        return err;
    err = corio_queue_try_get(q, value);
    if (err != -EAGAIN)
        return err;
    struct getter g = {.task = t, .q = q};
    afs_list_push_back(&qp(q)->getters, &g.node);
    struct corio__wait w = {.cancel = getter_cancel, .what = &g, .until = INT64_MAX};
    err = corio__suspend(t, &w);
    if (err)
        return err;
    if (!g.got)
        return -EPIPE; /* woken by corio_queue_close() */
    *value = g.value;
    return 0;
}

void corio_queue_close(struct corio_queue *q)
{
    AFS_CHECK(q != NULL, "queue is NULL");
    q->closed = 1;
    struct afs_list_node *n;
    while ((n = afs_list_pop_front(&qp(q)->getters))) {
        struct corio_task *g = AFS_LIST_ITEM(n, struct getter, node)->task;
        corio__wake_check(g);
        corio__ready(g, 0);
    }
    while ((n = afs_list_pop_front(&qp(q)->putters))) {
        struct corio_task *p = AFS_LIST_ITEM(n, struct putter, node)->task;
        corio__wake_check(p);
        corio__ready(p, 0);
    }
}
