/* Channels: a bounded ring of fixed-size values under one mutex per channel, with queues of
 * waiting senders and receivers. A waiter is a record on the waiting task's stack; whoever
 * satisfies it (a receiver for a sender, a sender for a receiver, a close) takes it off its
 * queue under the mutex, does the copy, and wakes the task after unlocking: directly on the
 * task's own scheduler thread, through that scheduler's inbox from anywhere else. A waiter
 * taken off its queue belongs to its waker: a cancellation that comes later finds it gone
 * and lets the wake-up (and its result) win. Such a cancellation still takes the channel's
 * mutex, and may come after the user freed the channel (nobody waits on it any more): the
 * channel counts the waiters handed a wake-up through an inbox that have not run since, and
 * a free while some have leaves the memory to the last of them. */
#include "corio_int.h"

#include <stdlib.h>
#include <string.h>

struct chan_waiter {
    struct corio_task   *task;
    struct corio_chan   *chan;
    struct afs_list     *q;      /* the queue it is on: senders or receivers */
    void                *elem;   /* send: the value; receive: where it goes */
    int                  result; /* set by the waker */
    bool                 queued; /* on senders / receivers (under the channel's mutex) */
    bool                 handed; /* taken by another thread: its wake-up goes by the inbox */
    struct afs_list_node node;
    struct corio__msg    msg;    /* the wake-up from another thread */
};

struct corio_chan {
    afs__mutex      mu;
    size_t          cap, esize, head, len;
    uintptr_t       magic;  /* CHAN_MAGIC ^ address while alive, AFS__DEAD once freed (past
                               the words an allocator writes into freed memory) */
    bool            closed;
    /* Waiters woken through an inbox that have not run since (raised under mu), and
     * CHAN_FREED once the user freed the channel: the last of them frees it then. */
    _Atomic(uint64_t) handed;
    struct afs_list senders, receivers;
    unsigned char   buf[];
};

#define WAITER(n) AFS_LIST_ITEM(n, struct chan_waiter, node)

#define CHAN_MAGIC ((uintptr_t)0x6e616843u)
#define CHAN_FREED ((uint64_t)1 << 63)

_Static_assert(offsetof(struct corio_chan, magic) >= 32, "magic clear of malloc's words");

/* A channel used after its free (or never made) aborts with the library's message; one
 * compare on the way in. c is not NULL (each call keeps its own NULL rule). */
static inline void chan_check(const struct corio_chan *c, const char *call)
{
    afs__magic_check(AFS__MAGIC_OF(c, struct corio_chan), CHAN_MAGIC, c, call,
                     "channel was freed (used after corio_chan_free, or freed twice)",
                     "not a channel (freed, or never made)");
}

int corio_chan_new(struct corio_chan **out, size_t capacity, size_t elem_size)
{
    AFS_CHECK(out != NULL, "out is NULL");
    *out = NULL;
    /* The values take at most 2^40 bytes, and at most half the address space (32-bit). */
    uint64_t max_bytes = (uint64_t)1 << 40;
    if ((uint64_t)SIZE_MAX / 2 - sizeof(struct corio_chan) < max_bytes)
        max_bytes = (uint64_t)SIZE_MAX / 2 - sizeof(struct corio_chan);
    if (elem_size == 0 || elem_size > ((size_t)1 << 30) || capacity > max_bytes / elem_size)
        return -EINVAL;
    struct corio_chan *c = afs__sys.calloc(1, sizeof *c + capacity * elem_size);
    if (!c)
        return -ENOMEM;
    afs__mutex_init(&c->mu);
    c->cap = capacity;
    c->esize = elem_size;
    c->magic = CHAN_MAGIC ^ (uintptr_t)c;
    *out = c;
    return 0;
}

void corio_chan_free(struct corio_chan *c)
{
    if (!c)
        return;
    chan_check(c, __func__);
    AFS_CHECK(!c->senders.first && !c->receivers.first, "freeing a channel tasks wait on");
    *(volatile uintptr_t *)&c->magic = AFS__DEAD; /* kept until the memory is reused */
    if (atomic_fetch_or(&c->handed, CHAN_FREED) == 0) {
        afs__mutex_destroy(&c->mu);
        free(c);
    }
}

/* A waiter handed a wake-up through an inbox has run: the channel may go. */
static void handed_done(struct corio_chan *c)
{
    if (atomic_fetch_sub(&c->handed, 1) == (CHAN_FREED | 1)) {
        afs__mutex_destroy(&c->mu);
        free(c);
    }
}

static void wake_deliver(struct corio__msg *m)
{
    struct chan_waiter *w = AFS_LIST_ITEM(m, struct chan_waiter, msg);
    corio__ready(w->task, 0);
}

/* w is off its queue and its result set; the channel is unlocked. */
static void wake(struct chan_waiter *w)
{
    if (!w->handed) {
        corio__ready(w->task, 0);
        return;
    }
    w->msg.deliver = wake_deliver;
    corio__inbox_post(w->task->sched, &w->msg);
}

/* Under the mutex. */
static struct chan_waiter *take(struct corio_chan *c, struct afs_list *q)
{
    struct afs_list_node *n = afs_list_pop_front(q);
    if (!n)
        return NULL;
    struct chan_waiter *w = WAITER(n);
    w->queued = false;
    w->handed = corio__thread_sched() != w->task->sched;
    if (w->handed)
        atomic_fetch_add_explicit(&c->handed, 1, memory_order_relaxed);
    return w;
}

static void ring_push(struct corio_chan *c, const void *elem)
{
    size_t i = (c->head + c->len) % c->cap;
    memcpy(c->buf + i * c->esize, elem, c->esize);
    c->len++;
}

static void ring_pop(struct corio_chan *c, void *elem)
{
    memcpy(elem, c->buf + c->head * c->esize, c->esize);
    c->head = (c->head + 1) % c->cap;
    c->len--;
}

/* Under the mutex: 0 (sent; *woken is a receiver to wake, or NULL), -EPIPE, or -EAGAIN. */
static int send_locked(struct corio_chan *c, const void *elem, struct chan_waiter **woken)
{
    *woken = NULL;
    if (c->closed)
        return -EPIPE;
    struct chan_waiter *r = take(c, &c->receivers);
    if (r) {
        memcpy(r->elem, elem, c->esize);
        r->result = 0;
        *woken = r;
        return 0;
    }
    if (c->len < c->cap) {
        ring_push(c, elem);
        return 0;
    }
    return -EAGAIN;
}

/* Under the mutex: 0 (received; *woken is a sender to wake, or NULL), -EPIPE, or -EAGAIN. */
static int recv_locked(struct corio_chan *c, void *elem, struct chan_waiter **woken)
{
    *woken = NULL;
    if (c->len) {
        ring_pop(c, elem);
        struct chan_waiter *s = take(c, &c->senders);
        if (s) {
            ring_push(c, s->elem); /* its place in the ring just freed */
            s->result = 0;
            *woken = s;
        }
        return 0;
    }
    struct chan_waiter *s = take(c, &c->senders);
    if (s) {
        memcpy(elem, s->elem, c->esize); /* capacity 0: straight from the sender */
        s->result = 0;
        *woken = s;
        return 0;
    }
    return c->closed ? -EPIPE : -EAGAIN;
}

static void chan_cancel(struct corio_task *t, struct corio__wait *wr, int err)
{
    struct chan_waiter *w = wr->what;
    struct corio_chan *c = w->chan;
    afs__mutex_lock(&c->mu);
    bool mine = w->queued;
    if (mine) {
        afs_list_remove(w->q, &w->node);
        w->queued = false;
    }
    afs__mutex_unlock(&c->mu);
    if (mine)
        corio__ready(t, err);
}

/* Suspends t on q (the mutex is held, and released here). */
static int wait_on(struct corio_task *t, struct corio_chan *c, struct afs_list *q, void *elem)
{
    struct chan_waiter w = {.task = t, .chan = c, .q = q, .elem = elem, .queued = true};
    afs_list_push_back(q, &w.node);
    afs__mutex_unlock(&c->mu);
    struct corio__wait wr = {.cancel = chan_cancel, .what = &w, .until = INT64_MAX,
                             .outside = true};
    int err = corio__suspend(t, &wr);
    if (w.handed)
        handed_done(c);
    return err ? err : w.result;
}

int corio_chan_send(struct corio_task *t, struct corio_chan *c, const void *elem)
{
    corio__check_running(t, "corio_chan_send");
    AFS_CHECK(c != NULL && elem != NULL, "NULL argument");
    chan_check(c, __func__);
    int err = corio__interrupted(t);
    if (err)
        return err;
    struct chan_waiter *woken;
    afs__mutex_lock(&c->mu);
    err = send_locked(c, elem, &woken);
    if (err != -EAGAIN) {
        afs__mutex_unlock(&c->mu);
        if (woken)
            wake(woken);
        return err;
    }
    return wait_on(t, c, &c->senders, (void *)(uintptr_t)elem);
}

int corio_chan_recv(struct corio_task *t, struct corio_chan *c, void *elem)
{
    corio__check_running(t, "corio_chan_recv");
    AFS_CHECK(c != NULL && elem != NULL, "NULL argument");
    chan_check(c, __func__);
    int err = corio__interrupted(t);
    if (err)
        return err;
    struct chan_waiter *woken;
    afs__mutex_lock(&c->mu);
    err = recv_locked(c, elem, &woken);
    if (err != -EAGAIN) {
        afs__mutex_unlock(&c->mu);
        if (woken)
            wake(woken);
        return err;
    }
    return wait_on(t, c, &c->receivers, elem);
}

int corio_chan_try_send(struct corio_chan *c, const void *elem)
{
    AFS_CHECK(c != NULL && elem != NULL, "NULL argument");
    chan_check(c, __func__);
    struct chan_waiter *woken;
    afs__mutex_lock(&c->mu);
    int err = send_locked(c, elem, &woken);
    afs__mutex_unlock(&c->mu);
    if (woken)
        wake(woken);
    return err;
}

int corio_chan_try_recv(struct corio_chan *c, void *elem)
{
    AFS_CHECK(c != NULL && elem != NULL, "NULL argument");
    chan_check(c, __func__);
    struct chan_waiter *woken;
    afs__mutex_lock(&c->mu);
    int err = recv_locked(c, elem, &woken);
    afs__mutex_unlock(&c->mu);
    if (woken)
        wake(woken);
    return err;
}

void corio_chan_close(struct corio_chan *c)
{
    AFS_CHECK(c != NULL, "channel is NULL");
    chan_check(c, __func__);
    afs__mutex_lock(&c->mu);
    c->closed = true;
    /* Receivers wait only while the channel is empty: none of them will get a value. */
    struct afs_list gone = {0};
    struct chan_waiter *w;
    while ((w = take(c, &c->senders)) || (w = take(c, &c->receivers))) {
        w->result = -EPIPE;
        afs_list_push_back(&gone, &w->node);
    }
    afs__mutex_unlock(&c->mu);
    struct afs_list_node *n;
    while ((n = afs_list_pop_front(&gone)))
        wake(WAITER(n));
}

size_t corio_chan_len(struct corio_chan *c)
{
    AFS_CHECK(c != NULL, "channel is NULL");
    chan_check(c, __func__);
    afs__mutex_lock(&c->mu);
    size_t n = c->len;
    afs__mutex_unlock(&c->mu);
    return n;
}
