/* The readiness engine: socket ops of contexts whose backend has no socket ops of its own
 * (threads, sync, libaio, posix-aio; io_uring on kernels without the opcodes), and the reads
 * and writes of the pipes and FIFOs made non-blocking for it (afs_file.polled).
 *
 * An op is tried at once on the owner thread, on the non-blocking socket. When it would wait
 * (EAGAIN), it is parked on its file, in order, per direction (receive side: recv, read,
 * accept; send side: send, write, connect); an op that comes while others of its direction
 * are parked queues behind them without trying. The engine watches the parked sockets in
 * the wait the context makes anyway, and when one is ready the owner thread runs the
 * parked ops of that side in order until one would wait again.
 *
 * Linux: one epoll instance per context. A socket is registered once, edge-triggered, for
 * both directions, at its first park, and stays registered until it closes; the context's
 * waker is in the same epoll set (level-triggered), so that the backends' one blocking wait
 * is a single epoll_wait. Edge-triggered is enough because an op is parked only after the
 * kernel said EAGAIN, and the kernel signals the next change after that; a registration also
 * reports the state at the time it is made.
 * FreeBSD and macOS: one kqueue per context, the same way: a socket's EVFILT_READ and
 * EVFILT_WRITE are added once with EV_CLEAR (edge-triggered, and reported at once when the
 * socket is ready as it is added), the waker level-triggered, one kevent() waits for all
 * (src/unix/kq.h; the tests run this flavour on Linux over a stand-in, afs__sys.kq_open).
 * Elsewhere, and when tests ask (afs__ready_poll_only): poll() over the waker and the
 * sockets with parked ops, built at each wait.
 * A connect the kernel refuses with EAGAIN (Linux: the AF_UNIX listener's backlog is full)
 * has no readiness to wait for: the connecting socket is writable all along, and nothing
 * signals when the listener accepts. Such sockets wait on a timer instead (r->retry) and the
 * connect is tried again, 1 ms later, then backing off to 50 ms, until it goes through or is
 * cancelled (a deadline does that).
 * io_uring does not wait here: it polls the epoll (or kqueue) descriptor with an
 * IORING_OP_POLL_ADD of its own while ops are parked, and the waker stays out of the set. */
#include "internal.h"
#include "kq.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/epoll.h>
#define HAVE_EPOLL 1
#endif

#define NEV 64
#define RETRY_MIN_NS 1000000LL
#define RETRY_MAX_NS 50000000LL

bool afs__ready_poll_only;

struct ev {
    struct afs_file *f; /* NULL once forgotten */
    bool             in, out;
};

enum { M_POLL, M_EPOLL, M_KQUEUE };

struct afs__ready {
    uint8_t          mode;       /* M_*: with M_EPOLL and M_KQUEUE a socket stays registered */
    bool             with_waker; /* the engine's wait is the context's (not io_uring's) */
    int              kfd;        /* the epoll or kqueue descriptor, or -1 */
    unsigned         parked;     /* ops parked on all sockets */
    struct afs_list  files;      /* poll(): files with parked ops */
    struct afs_list  retry;      /* files whose connect waits for the timer */
    int64_t          retry_at;   /* when they are tried again */
    int64_t          retry_ns;   /* the backoff */
    struct ev        ev[NEV];    /* what the last wait found, for reap */
    int              nev;
    bool             collected;  /* ev holds everything the kernel had: no poll in reap */
    struct pollfd   *pfd;        /* poll(): the array and its files, built at each wait */
    struct afs_file **pf;
    size_t           cap;
};

static int side(const struct afs__op *o)
{
    switch (o->code) {
    case AFS__RECV:
    case AFS__READ:
    case AFS__ACCEPT: return 0;
    default: return 1;
    }
}

static struct afs_op *op_of(struct afs_list_node *n)
{
    struct afs__op *o = AFS_LIST_ITEM(n, struct afs__op, node);
    return (struct afs_op *)(void *)((char *)o - offsetof(struct afs_op, private_));
}

static struct afs__ready *engine(struct afs_ctx *ctx)
{
    if (ctx->ready)
        return ctx->ready;
    struct afs__ready *r = afs__sys.calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kfd = -1;
    /* Backends with socket ops of their own (io_uring) poll the engine instead. */
    r->with_waker = ctx->be->sock == NULL;
    /* io_uring polls the kernel's set: the poll() flavour is for the waiting backends. Where
     * a set cannot be made, poll(): slower, never wrong. */
    if (!afs__ready_poll_only || !r->with_waker) {
        if (afs__sys.kq_open && (r->kfd = afs__sys.kq_open()) >= 0) {
            struct kevent k;
            EV_SET(&k, (uintptr_t)ctx->waker.fd, EVFILT_READ, EV_ADD, 0, 0, NULL);
            if (r->with_waker && afs__sys.kq_event(r->kfd, &k, 1, NULL, 0, NULL) < 0) {
                close(r->kfd);
                r->kfd = -1;
            }
            r->mode = r->kfd >= 0 ? M_KQUEUE : M_POLL;
        }
#ifdef HAVE_EPOLL
        if (r->kfd < 0 && (r->kfd = epoll_create1(EPOLL_CLOEXEC)) >= 0) {
            struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
            if (r->with_waker && epoll_ctl(r->kfd, EPOLL_CTL_ADD, (int)ctx->waker.fd, &e) < 0) {
                close(r->kfd);
                r->kfd = -1;
            }
            r->mode = r->kfd >= 0 ? M_EPOLL : M_POLL;
        }
#endif
    }
    ctx->ready = r;
    return r;
}

void afs__ready_free(struct afs_ctx *ctx)
{
    struct afs__ready *r = ctx->ready;
    if (!r)
        return;
    AFS_CHECK(r->parked == 0, "readiness engine freed with ops parked");
    if (r->kfd >= 0)
        close(r->kfd);
    free(r->pfd);
    free(r->pf);
    free(r);
    ctx->ready = NULL;
}

bool afs__ready_parked(const struct afs_ctx *ctx)
{
    return ctx->ready && ctx->ready->parked;
}

int afs__ready_fd(struct afs_ctx *ctx)
{
    struct afs__ready *r = ctx->ready;
    return r && r->mode != M_POLL && r->parked ? r->kfd : -1;
}

/* Takes f's filters out of the kqueue, each on its own (one that is not there fails alone). */
static void kq_delete(struct afs__ready *r, struct afs_file *f)
{
    struct kevent k;
    EV_SET(&k, (uintptr_t)f->fd, EVFILT_READ, EV_DELETE, 0, 0, NULL);
    afs__sys.kq_event(r->kfd, &k, 1, NULL, 0, NULL);
    EV_SET(&k, (uintptr_t)f->fd, EVFILT_WRITE, EV_DELETE, 0, 0, NULL);
    afs__sys.kq_event(r->kfd, &k, 1, NULL, 0, NULL);
}

/* Starts watching f (its first park). 0 or -errno. */
static int watch(struct afs__ready *r, struct afs_file *f)
{
    if (f->rdy.watched)
        return 0;
    if (r->mode == M_KQUEUE) {
        struct kevent k[2];
        EV_SET(&k[0], (uintptr_t)f->fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, f);
        EV_SET(&k[1], (uintptr_t)f->fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, f);
        if (afs__sys.kq_event(r->kfd, k, 2, NULL, 0, NULL) < 0) {
            int err = -errno;
            kq_delete(r, f); /* the read filter may be in */
            return err;
        }
        f->rdy.watched = true;
        return 0;
    }
#ifdef HAVE_EPOLL
    if (r->mode == M_EPOLL) {
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                .data.ptr = f};
        if (epoll_ctl(r->kfd, EPOLL_CTL_ADD, (int)f->fd, &e) < 0)
            return -errno;
        f->rdy.watched = true;
        return 0;
    }
#endif
    afs_list_push_back(&r->files, &f->rdy.node);
    f->rdy.watched = true;
    return 0;
}

/* Stops watching f: at close with epoll or kqueue (a dup()ed descriptor would keep the
 * registration, and its events, alive after the file is freed), when nothing is parked any
 * more with poll(). */
static void unwatch(struct afs__ready *r, struct afs_file *f)
{
    if (!f->rdy.watched)
        return;
    if (r->mode == M_KQUEUE) {
        kq_delete(r, f);
        f->rdy.watched = false;
        return;
    }
#ifdef HAVE_EPOLL
    if (r->mode == M_EPOLL) {
        struct epoll_event e = {0};
        epoll_ctl(r->kfd, EPOLL_CTL_DEL, (int)f->fd, &e);
        f->rdy.watched = false;
        return;
    }
#endif
    afs_list_remove(&r->files, &f->rdy.node);
    f->rdy.watched = false;
}

/* Puts f on the retry timer when its send side is headed by a connect that the kernel
 * refused with EAGAIN (no EINPROGRESS: no writable edge will come), takes it off otherwise. */
static void sync_retry(struct afs__ready *r, struct afs_file *f)
{
    struct afs_list_node *n = f->rdy.q[1].l.first;
    const struct afs__op *o = n ? AFS_LIST_ITEM(n, struct afs__op, node) : NULL;
    bool want = o && o->code == AFS__CONNECT && o->sock.stage == 0;
    if (want == f->rdy.retrying)
        return;
    f->rdy.retrying = want;
    if (!want) {
        afs_list_remove(&r->retry, &f->rdy.retry_node);
        return;
    }
    if (afs_list_empty(&r->retry)) {
        r->retry_ns = RETRY_MIN_NS;
        r->retry_at = afs__now_ns() + r->retry_ns;
    }
    afs_list_push_back(&r->retry, &f->rdy.retry_node);
}

static void park(struct afs_ctx *ctx, struct afs_op *op, int dir)
{
    struct afs__ready *r = ctx->ready;
    struct afs_file *f = afs__op(op)->file;
    int err = watch(r, f);
    if (err < 0) {
        afs__op_finished(ctx, op, err);
        return;
    }
    afs__list_push(&f->rdy.q[dir], op);
    r->parked++;
    if (dir == 1)
        sync_retry(r, f);
}

/* Runs op until it finishes (true) or would wait (false). */
static bool attempt(struct afs_ctx *ctx, struct afs_op *op)
{
    for (;;) {
        bool in;
        ssize_t res = afs__sys_sock_try(op, &in);
        if (res == -EAGAIN)
            return false;
        if (!afs__op_step(ctx, op, res))
            return true;
        ctx->stats.resubmits++; /* a short send, or a transient error: go on */
    }
}

static void serve(struct afs_ctx *ctx, struct afs_file *f, int dir);

void afs__ready_submit(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    o->flags |= AFS__OP_READY;
    if (!engine(ctx)) {
        afs__op_finished(ctx, op, -ENOMEM);
        return;
    }
    int dir = side(o);
    if (o->code == AFS__SHUTDOWN) {
        struct afs_file *f = o->file;
        int how = o->sock.how;
        if (!attempt(ctx, op)) /* a shutdown never waits */
            park(ctx, op, dir);
        afs__ready_shut(ctx, f, how);
        return;
    }
    if (o->file->rdy.q[dir].len) {
        park(ctx, op, dir); /* behind the ops already waiting: keep their order */
        return;
    }
    if (!attempt(ctx, op))
        park(ctx, op, dir);
}

void afs__ready_shut(struct afs_ctx *ctx, struct afs_file *f, int how)
{
    if (how != SHUT_RD && f->rdy.q[1].len)
        serve(ctx, f, 1);
}

/* Runs the parked ops of one side of f in order until one would wait. */
static void serve(struct afs_ctx *ctx, struct afs_file *f, int dir)
{
    struct afs__ready *r = ctx->ready;
    struct afs_op *op;
    while ((op = afs__list_pop(&f->rdy.q[dir]))) {
        r->parked--;
        if (!attempt(ctx, op)) {
            afs__list_push_front(&f->rdy.q[dir], op);
            r->parked++;
            break;
        }
    }
    if (dir == 1)
        sync_retry(r, f);
    if (r->mode == M_POLL && !f->rdy.q[0].len && !f->rdy.q[1].len)
        unwatch(r, f);
}

static void cancel_parked(struct afs_ctx *ctx, struct afs_op *op, int dir)
{
    struct afs__op *o = afs__op(op);
    afs__list_remove(&o->file->rdy.q[dir], op);
    ctx->ready->parked--;
    if (dir == 1)
        sync_retry(ctx->ready, o->file);
    /* A send that moved part of its buffer reports it: those bytes have left. */
    afs__op_finished(ctx, op, o->done ? (ssize_t)o->done : -ECANCELED);
}

void afs__ready_cancel(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    struct afs_file *f = o->file;
    cancel_parked(ctx, op, side(o));
    if (ctx->ready->mode == M_POLL && !f->rdy.q[0].len && !f->rdy.q[1].len)
        unwatch(ctx->ready, f);
}

void afs__ready_forget(struct afs_ctx *ctx, struct afs_file *f)
{
    struct afs__ready *r = ctx->ready;
    for (int dir = 0; dir < 2; dir++) {
        struct afs_list_node *n;
        while ((n = f->rdy.q[dir].l.first))
            cancel_parked(ctx, op_of(n), dir);
    }
    unwatch(r, f);
    for (int i = 0; i < r->nev; i++)
        if (r->ev[i].f == f)
            r->ev[i].f = NULL;
}

/* ------------------------------------------------------------------------------------------
 * Waiting
 * ---------------------------------------------------------------------------------------- */

static int timeout_ms(int64_t ns)
{
    if (ns < 0)
        return -1;
    if (ns > (int64_t)INT32_MAX * 1000000)
        return INT32_MAX;
    return (int)((ns + 999999) / 1000000);
}

/* Asks the kernel what is ready, waiting up to timeout_ns (0: not at all); fills r->ev.
 * Returns AFS__WOKE_* bits. */
static int collect(struct afs_ctx *ctx, int64_t timeout_ns)
{
    struct afs__ready *r = ctx->ready;
    int woke = 0, n;
    r->nev = 0;
    if (r->mode == M_KQUEUE) {
        struct kevent e[NEV];
        struct timespec ts = {(time_t)(timeout_ns / 1000000000), (long)(timeout_ns % 1000000000)};
        do
            n = afs__sys.kq_event(r->kfd, NULL, 0, e, NEV, timeout_ns < 0 ? NULL : &ts);
        while (n < 0 && errno == EINTR && timeout_ns < 0);
        for (int i = 0; i < n; i++) {
            if (!e[i].udata) {
                woke |= AFS__WOKE_WAKER;
                continue;
            }
            /* The end of the stream or an error (EV_EOF) is readiness of its filter's side:
             * the op's call reports it. */
            bool bad = e[i].flags & EV_ERROR;
            r->ev[r->nev++] = (struct ev){.f = e[i].udata,
                                          .in = bad || e[i].filter == EVFILT_READ,
                                          .out = bad || e[i].filter == EVFILT_WRITE};
        }
        r->collected = n < NEV;
        return woke | (r->nev ? AFS__WOKE_SOCK : 0);
    }
#ifdef HAVE_EPOLL
    if (r->mode == M_EPOLL) {
        struct epoll_event e[NEV];
        do
            n = epoll_wait(r->kfd, e, NEV, timeout_ms(timeout_ns));
        while (n < 0 && errno == EINTR && timeout_ns < 0);
        for (int i = 0; i < n; i++) {
            if (!e[i].data.ptr) {
                woke |= AFS__WOKE_WAKER;
                continue;
            }
            uint32_t ev = e[i].events;
            bool bad = ev & (EPOLLERR | EPOLLHUP);
            r->ev[r->nev++] = (struct ev){.f = e[i].data.ptr,
                                          .in = bad || (ev & (EPOLLIN | EPOLLRDHUP)),
                                          .out = bad || (ev & EPOLLOUT)};
        }
        r->collected = n < NEV; /* a full array may have left some behind */
        return woke | (r->nev ? AFS__WOKE_SOCK : 0);
    }
#endif
    /* poll(): the waker first, then every file with parked ops. */
    size_t need = r->parked + 1;
    if (need > r->cap) {
        size_t cap = need * 2;
        struct pollfd *p = realloc(r->pfd, cap * sizeof *p);
        if (p)
            r->pfd = p;
        struct afs_file **pf = realloc(r->pf, cap * sizeof *pf);
        if (pf)
            r->pf = pf;
        if (!p || !pf)
            return afs__waker_wait(&ctx->waker, timeout_ns) ? AFS__WOKE_WAKER : 0;
        r->cap = cap;
    }
    size_t k = 0;
    if (r->with_waker) {
        r->pfd[k] = (struct pollfd){.fd = (int)ctx->waker.fd, .events = POLLIN};
        r->pf[k++] = NULL;
    }
    for (struct afs_list_node *x = r->files.first; x; x = x->next) {
        struct afs_file *f = AFS_LIST_ITEM(x, struct afs_file, rdy.node);
        /* A connect on the retry timer: the socket is writable (and hung up) all along. */
        short want = (short)((f->rdy.q[0].len ? POLLIN : 0) |
                             (f->rdy.q[1].len && !f->rdy.retrying ? POLLOUT : 0));
        if (!want)
            continue;
        r->pfd[k] = (struct pollfd){.fd = (int)f->fd, .events = want};
        r->pf[k++] = f;
    }
    do
        n = poll(r->pfd, (nfds_t)k, timeout_ms(timeout_ns));
    while (n < 0 && errno == EINTR && timeout_ns < 0);
    for (size_t i = 0; i < k && n > 0; i++) {
        short rev = r->pfd[i].revents;
        if (!rev)
            continue;
        if (!r->pf[i]) {
            woke |= AFS__WOKE_WAKER;
            continue;
        }
        if (r->nev == NEV)
            break;
        bool bad = rev & (POLLERR | POLLHUP | POLLNVAL);
        r->ev[r->nev++] = (struct ev){.f = r->pf[i], .in = bad || (rev & POLLIN),
                                      .out = bad || (rev & POLLOUT)};
    }
    r->collected = r->nev < NEV;
    return woke | (r->nev ? AFS__WOKE_SOCK : 0);
}

/* Nanoseconds until the retry timer is due (0: now), or -1 when nothing waits on it. */
static int64_t retry_in(const struct afs__ready *r)
{
    if (!r || afs_list_empty(&r->retry))
        return -1;
    int64_t d = r->retry_at - afs__now_ns();
    return d > 0 ? d : 0;
}

int64_t afs__ready_timeout(struct afs_ctx *ctx, int64_t timeout_ns)
{
    int64_t d = retry_in(ctx->ready);
    return d >= 0 && (timeout_ns < 0 || d < timeout_ns) ? d : timeout_ns;
}

int afs__ctx_block(struct afs_ctx *ctx, int64_t timeout_ns)
{
    struct afs__ready *r = ctx->ready;
    if (!r || !r->parked || !r->with_waker)
        return afs__waker_wait(&ctx->waker, timeout_ns) ? AFS__WOKE_WAKER : 0;
    int woke = collect(ctx, afs__ready_timeout(ctx, timeout_ns));
    /* A connect due for its retry is a socket to serve, for a caller that loops on this. */
    return woke | (retry_in(r) == 0 ? AFS__WOKE_SOCK : 0);
}

/* Runs the parked ops of the sockets in r->ev, and forgets them. */
static void serve_collected(struct afs_ctx *ctx)
{
    struct afs__ready *r = ctx->ready;
    for (int i = 0; i < r->nev; i++) {
        struct ev e = r->ev[i];
        if (!e.f)
            continue;
        if (e.in && e.f->rdy.q[0].len)
            serve(ctx, e.f, 0);
        if (e.out && e.f->rdy.q[1].len && !e.f->rdy.retrying)
            serve(ctx, e.f, 1);
    }
    r->nev = 0;
}

void afs__ready_reap(struct afs_ctx *ctx)
{
    struct afs__ready *r = ctx->ready;
    /* What the wait found is served before the kernel is asked for more: with epoll or
     * kqueue an edge-triggered event is handed out once, and one dropped here never comes
     * back. */
    bool more = !r->collected;
    serve_collected(ctx);
    if (more && r->parked) {
        int woke = collect(ctx, 0);
        /* The waker's signal belongs to the backend's wait: the engine only saw it. An
         * eventfd's count or a pipe's bytes stay until that wait drains them. */
        (void)woke;
        serve_collected(ctx);
        /* Still a full array: the rest stays in the kernel's ready list, and the next wait
         * returns at once with it. */
    }
    r->collected = false;
    if (retry_in(r) == 0) {
        int64_t backoff = AFS_MIN(r->retry_ns * 2, RETRY_MAX_NS);
        struct afs_list due = r->retry;
        r->retry = (struct afs_list){0};
        struct afs_list_node *n;
        while ((n = afs_list_pop_front(&due))) {
            struct afs_file *f = AFS_LIST_ITEM(n, struct afs_file, rdy.retry_node);
            f->rdy.retrying = false;
            serve(ctx, f, 1); /* back on r->retry if it is refused again */
        }
        if (!afs_list_empty(&r->retry)) {
            r->retry_ns = backoff;
            r->retry_at = afs__now_ns() + backoff;
        }
    }
}
