/* Multishot accepts and receives on io_uring (see uring_ms.h).
 *
 * A listener gets one multishot accept (Linux 5.19) when an accept without an address is
 * parked on it; every connection it delivers completes a parked accept, or waits in the
 * listener's small stash for the next one. A stream socket gets one multishot receive
 * (Linux 6.0) into the context's buffer ring (5.19) when a receive is parked on it; each
 * completion names the ring buffer the kernel filled, which the socket holds, in order,
 * until parked receives have copied it out, and which then goes back to the ring at once.
 * So neither re-arms per connection or per message, and an idle socket holds no ring buffer.
 * A socket whose receives keep finding bytes waiting makes one-shot receives instead, and
 * tries its multishot again now and then (judge()).
 *
 * The kernel ends a multishot by a completion without IORING_CQE_F_MORE: the end of the
 * stream (0), an error (kept for the next op), -ENOBUFS (the ring is empty: the socket
 * re-arms once buffers came back, its ops meanwhile made as plain receives), -ECANCELED
 * (ours: a socket holding too much that nobody reads, a full stash, a close). A parked op
 * that is cancelled completes at once; its buffer is only ever written while it is
 * parked, before its callback. */
#include "uring_ms.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define BGID       0x6166 /* the buffer group of the context's ring */
#define NO_BUF     0xffffu
#define HELD_CAP   16u    /* buffers a socket holds with no receive parked before its
                             multishot is stopped (the kernel's socket buffer then holds
                             the rest, as it would without one) */
#define STASH_CAP  16u    /* connections a listener holds accepted with no accept parked */
#define RULE_WIN   16u    /* receives a multishot socket is judged over */
#define RULE_FOUND 12u    /* ... of which this many found bytes waiting: one-shot receives */
#define GAP_GROWTH 32u    /* the gap between trials grows up to this times the first one */

unsigned afs__uring_pbuf_entries = 1024; /* tests shrink it to empty the ring */
unsigned afs__uring_pbuf_size = 4096;
int      afs__uring_pbuf_err;            /* tests: the registration's result instead */
unsigned afs__uring_oneshot_gap = 256;   /* one-shot receives before a trial (see judge) */

struct ums_sock {
    struct afs_file     *f;      /* NULL once closed, while a multishot is still armed */
    int                  fd;
    uint8_t              kind;   /* 0 unknown, 1 stream (ring receives), 2 other (plain) */
    bool                 recv_armed, recv_stop, acc_armed, acc_stop, eof, on_ready;
    int                  err, acc_err, acc_flags;
    unsigned             plain;  /* plain receives in flight: no multishot meanwhile */
    bool                 oneshot;  /* receives are one-shot: they kept finding bytes waiting */
    bool                 trial;    /* back on its multishot after one-shot receives */
    uint8_t              win_n, win_found; /* this window's parked receives; found bytes */
    unsigned             probe_in, probe_gap; /* one-shot receives to the next trial; its gap */
    uint16_t             head, tail; /* the buffers it holds (NO_BUF: none), via ms->next */
    unsigned             nheld;
    struct afs__list     rq, aq; /* parked receives, accepts */
    int                 *fds;    /* accepted, not yet taken: [fd0, fd0 + nfds) of cap */
    unsigned             fd0, nfds, cap;
    struct afs_list_node ready_node, node;
};

/* Whether an EINVAL of a multishot op can be the kernel's refusal: the socket was fit for the
 * op (connected for a receive, listening for an accept), so the op itself was refused. */
static bool connected(int fd)
{
    struct sockaddr_storage a;
    socklen_t len = sizeof a;
    return getpeername(fd, (struct sockaddr *)&a, &len) == 0;
}

static bool listening(int fd)
{
    int on = 0;
    socklen_t len = sizeof on;
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
}

static struct ums_sock *sock_of(struct afs_list_node *n, size_t off)
{
    return (struct ums_sock *)(void *)((char *)n - off);
}

void afs__ums_init(struct afs__ums *ms, const struct afs_ctx *ctx)
{
    memset(ms, 0, sizeof *ms);
    ms->plain = ctx->cfg.flags & AFS_CTX_PLAIN_SOCKETS;
    if (ms->plain)
        snprintf(ms->why, sizeof ms->why, "AFS_CTX_PLAIN_SOCKETS");
}

static void ring_free(struct afs__ums *ms)
{
    if (ms->br)
        munmap(ms->br, ms->br_bytes);
    if (ms->mem)
        munmap(ms->mem, ms->mem_bytes);
    free(ms->next);
    free(ms->off);
    free(ms->len);
    ms->br = NULL;
    ms->mem = NULL;
    ms->next = NULL;
    ms->off = ms->len = NULL;
}

static void release(struct afs__ums *ms, uint16_t bid)
{
    io_uring_buf_ring_add(ms->br, ms->mem + (size_t)bid * ms->size, ms->size, bid,
                          io_uring_buf_ring_mask(ms->entries), 0);
    io_uring_buf_ring_advance(ms->br, 1);
    ms->held--;
}

/* The ring, made at the first receive that could use it. A refusal (a kernel before 5.19,
 * memory) leaves receives plain, with the reason. */
static bool ring_ready(struct afs__ums *ms, struct io_uring *ring)
{
    if (ms->ring_tried)
        return !ms->no_recv;
    ms->ring_tried = true;
    unsigned n = afs__uring_pbuf_entries;
    ms->entries = n;
    ms->size = afs__uring_pbuf_size;
    long page = sysconf(_SC_PAGESIZE);
    ms->br_bytes = ((n * sizeof(struct io_uring_buf) + (size_t)page - 1) / (size_t)page) *
                   (size_t)page;
    ms->mem_bytes = (size_t)n * ms->size;
    int err = 0;
    void *br = mmap(NULL, ms->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                    -1, 0);
    void *mem = mmap(NULL, ms->mem_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ms->br = br == MAP_FAILED ? NULL : br;
    ms->mem = mem == MAP_FAILED ? NULL : mem;
    ms->next = afs__sys.calloc(n, sizeof *ms->next);
    ms->off = afs__sys.calloc(n, sizeof *ms->off);
    ms->len = afs__sys.calloc(n, sizeof *ms->len);
    if (!ms->br || !ms->mem || !ms->next || !ms->off || !ms->len || (n & (n - 1)) || n > 32768)
        err = -ENOMEM;
    if (err == 0) {
        struct io_uring_buf_reg reg;
        memset(&reg, 0, sizeof reg);
        reg.ring_addr = (uint64_t)(uintptr_t)ms->br;
        reg.ring_entries = n;
        reg.bgid = BGID;
        err = afs__uring_pbuf_err ? afs__uring_pbuf_err
                                  : io_uring_register_buf_ring(ring, &reg, 0);
    }
    if (err < 0) {
        afs__why(ms->why, sizeof ms->why, "io_uring_register_buf_ring", err,
                 err == -EINVAL ? "a kernel before Linux 5.19" : NULL);
        ring_free(ms);
        ms->no_recv = true;
        return false;
    }
    io_uring_buf_ring_init(ms->br);
    ms->held = n;
    for (unsigned i = 0; i < n; i++)
        release(ms, (uint16_t)i);
    return true;
}

/* Fewer than a quarter of the buffers are in the ring: a socket whose multishot the kernel
 * stopped waits for them to come back before it re-arms. */
static bool ring_short(const struct afs__ums *ms)
{
    return ms->entries - ms->held < ms->entries / 4;
}

static struct ums_sock *state(struct afs__ums *ms, struct afs_file *f)
{
    struct ums_sock *s = f->be_sock;
    if (s)
        return s;
    s = afs__sys.calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->f = f;
    s->fd = (int)f->fd;
    s->head = s->tail = NO_BUF;
    afs_list_push_back(&ms->socks, &s->node);
    f->be_sock = s;
    return s;
}

static void make_ready(struct afs__ums *ms, struct ums_sock *s)
{
    if (!s->on_ready) {
        s->on_ready = true;
        afs_list_push_back(&ms->ready, &s->ready_node);
    }
}

static void park(struct afs__list *q, struct afs_op *op, struct ums_sock *s)
{
    afs__op(op)->be[0] = AFS__UMS_PARKED;
    afs__op(op)->be[1] = (uint64_t)(uintptr_t)s;
    afs__list_push(q, op);
}

static struct afs_op *unpark(struct afs__list *q, struct afs_op *op)
{
    afs__list_remove(q, op);
    afs__op(op)->be[0] = 0;
    return op;
}

/* The first op parked on q, taken off it (q is not empty). */
static struct afs_op *pop_parked(struct afs__list *q)
{
    struct afs_op *op = afs__list_pop(q);
    afs__op(op)->be[0] = 0;
    return op;
}

/* The first op parked on q, left there (q is not empty). */
static struct afs_op *first(struct afs__list *q)
{
    struct afs__op *o = AFS_LIST_ITEM(q->l.first, struct afs__op, node);
    return (struct afs_op *)(void *)((char *)o - offsetof(struct afs_op, private_));
}

/* An async cancel of one of s's multishots (its own completion is ignored). */
static void stop(struct afs_ctx *ctx, struct ums_sock *s, unsigned tag)
{
    struct io_uring_sqe *sqe = afs__uring_sqe(ctx);
    if (!sqe)
        return;
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)s | tag, 0);
    io_uring_sqe_set_data64(sqe, 1 /* uring.c's TAG_IGNORE */);
    if (tag == AFS__UMS_TAG_RECV)
        s->recv_stop = true;
    else
        s->acc_stop = true;
}

static bool arm(struct afs_ctx *ctx, struct afs__ums *ms, struct ums_sock *s, unsigned tag)
{
    struct io_uring_sqe *sqe = afs__uring_sqe(ctx);
    if (!sqe)
        return false;
    if (tag == AFS__UMS_TAG_RECV) {
        io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BGID;
        s->recv_armed = true;
    } else {
        io_uring_prep_multishot_accept(sqe, s->fd, NULL, NULL, s->acc_flags);
        s->acc_armed = true;
    }
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)s | tag);
    ms->arms++;
    return true;
}

static int sock_type(int fd)
{
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        return -1;
    return type;
}

/* The rule between the multishot and one-shot receives, per socket. A multishot receive
 * pays a completion and a copy for what arrives whether or not a receive waits for it (and
 * its armed poll fires at every segment); a one-shot receive made when bytes are waiting in
 * the socket completes inside its submission with one copy, and pays for waiting (a poll
 * armed and fired) only when nothing is there. So a socket whose parked receives keep
 * finding bytes the multishot took ahead of them (RULE_FOUND of RULE_WIN) stops its
 * multishot and makes one-shot receives; after probe_in of those (256 at first) it tries
 * its multishot again for a window (a peer that now makes it wait keeps it armed), the gap
 * doubling each time the trial sends it back, up to GAP_GROWTH times. Every byte the
 * multishot took is served before the first one-shot receive, which is made only once the
 * multishot ended. */
static void judge(struct afs_ctx *ctx, struct afs__ums *ms, struct ums_sock *s, bool found)
{
    if (s->oneshot)
        return; /* its multishot is ending: receives park until it did */
    s->win_found = (uint8_t)(s->win_found + found);
    if (++s->win_n < RULE_WIN)
        return;
    bool go = s->win_found >= RULE_FOUND;
    s->win_n = s->win_found = 0;
    if (go) {
        unsigned gap0 = AFS_MAX(afs__uring_oneshot_gap, 1u);
        s->probe_gap = s->trial ? AFS_MIN(2 * s->probe_gap, GAP_GROWTH * gap0) : gap0;
        s->probe_in = s->probe_gap;
        s->oneshot = true;
        ms->switches++;
        if (s->recv_armed && !s->recv_stop)
            stop(ctx, s, AFS__UMS_TAG_RECV);
    }
    s->trial = false;
}

int afs__ums_prep(struct afs_ctx *ctx, struct afs__ums *ms, struct io_uring *ring,
                  struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    o->be[0] = 0;
    if (ms->plain || o->chain_next || (o->xflags & AFS__X_LINKED) ||
        (o->flags & AFS__OP_CANCEL))
        return 0;
    if (o->code == AFS__ACCEPT) {
        if (ms->no_accept)
            return 0;
        /* One address buffer cannot serve every connection: an accept that wants the
         * address is plain, unless the listener's multishot is armed or holds connections
         * (it would take them first): then it is parked too, its address from getpeername. */
        struct ums_sock *s = o->u.buf ? o->file->be_sock : state(ms, o->file);
        if (!s || (s->acc_armed && s->acc_flags != o->sock.how))
            return 0;
        if (o->u.buf && !s->acc_armed && !s->nfds)
            return 0;
        park(&s->aq, op, s);
        if (s->nfds || s->acc_err)
            make_ready(ms, s);
        else if (!s->acc_armed) {
            s->acc_flags = o->sock.how;
            if (!arm(ctx, ms, s, AFS__UMS_TAG_ACCEPT)) {
                unpark(&s->aq, op);
                return 0;
            }
        }
        return 1;
    }
    if (o->code != AFS__RECV && o->code != AFS__READ)
        return 0;
    /* MSG_OOB: out of band, beside the stream. A MSG_PEEK must see what the socket's
     * multishot took from it already: it is parked like any receive and copies without
     * taking. */
    if (o->code == AFS__RECV && (o->sock.msg_flags & ~MSG_PEEK))
        return 0;
    struct afs__span sp;
    afs__op_span(op, &sp);
    if (!sp.buf || ms->no_recv || !ring_ready(ms, ring))
        return 0;
    struct ums_sock *s = state(ms, o->file);
    if (!s)
        return 0;
    if (!s->kind)
        s->kind = sock_type(s->fd) == SOCK_STREAM ? 1 : 2; /* datagrams keep their bounds */
    if (s->kind != 1)
        return 0;
    bool have = s->nheld || s->eof || s->err;
    /* Nothing held and no multishot: a plain receive keeps the byte order. */
    bool idle = !have && !s->recv_armed;
    if (idle && s->oneshot && !s->plain && s->probe_in == 0) {
        s->oneshot = false; /* a trial of the multishot: judged like any window */
        s->trial = true;
    }
    bool short_ring = idle && ring_short(ms);
    /* A receive that would park counts in its socket's window (a peek takes nothing); when
     * that window makes the socket one-shot and nothing is held, it is the first one-shot
     * receive. */
    if (!s->plain && !short_ring && (o->code == AFS__READ || !(o->sock.msg_flags & MSG_PEEK)))
        judge(ctx, ms, s, s->nheld > 0);
    if (s->plain || (idle && s->oneshot) || short_ring) {
        if (s->oneshot && s->probe_in)
            s->probe_in--;
        o->be[0] = AFS__UMS_PLAIN;
        s->plain++;
        ms->plain_recvs++;
        return 0;
    }
    park(&s->rq, op, s);
    if (have)
        make_ready(ms, s);
    else if (!s->recv_armed && !arm(ctx, ms, s, AFS__UMS_TAG_RECV)) {
        unpark(&s->rq, op);
        return 0;
    }
    return 1;
}

void afs__ums_plain_done(struct afs__ums *ms, struct afs_op *op)
{
    struct ums_sock *s = afs__op(op)->file->be_sock;
    afs__op(op)->be[0] = 0;
    if (s && s->plain) {
        s->plain--;
        if (!s->plain && s->rq.len)
            make_ready(ms, s); /* receives parked behind it may arm now */
    }
}

static void hold(struct afs__ums *ms, struct ums_sock *s, uint16_t bid, uint32_t len)
{
    ms->off[bid] = 0;
    ms->len[bid] = len;
    ms->next[bid] = NO_BUF;
    if (s->tail == NO_BUF)
        s->head = bid;
    else
        ms->next[s->tail] = bid;
    s->tail = bid;
    s->nheld++;
}

void afs__ums_cqe(struct afs_ctx *ctx, struct afs__ums *ms, uint64_t ud, int res,
                  unsigned flags)
{
    (void)ctx;
    struct ums_sock *s = (struct ums_sock *)(uintptr_t)(ud & ~(uint64_t)7);
    bool more = flags & IORING_CQE_F_MORE;
    if ((ud & 7) == AFS__UMS_TAG_RECV) {
        if (flags & IORING_CQE_F_BUFFER) {
            uint16_t bid = (uint16_t)(flags >> IORING_CQE_BUFFER_SHIFT);
            ms->held++;
            if (res > 0 && s->f) {
                ms->ring_cqes++;
                hold(ms, s, bid, (uint32_t)res);
                ms->recv_worked = true;
            } else {
                release(ms, bid); /* nothing in it, or its socket is closed */
            }
        }
        if (!more) {
            s->recv_armed = s->recv_stop = false;
            if (res == 0)
                s->eof = true;
            else if (res == -ENOBUFS)
                ms->exhausted++;
            else if (res == -EINVAL && !ms->recv_worked && s->f && connected(s->fd)) {
                /* Linux 5.19 has the ring but not the multishot receive (a socket that is
                 * not connected answers EINVAL too: the caller's error, not the kernel's). */
                ms->no_recv = true;
                afs__why(ms->why, sizeof ms->why, "multishot recv", res,
                         "a kernel before Linux 6.0");
            } else if (res < 0 && res != -ECANCELED)
                s->err = res;
        }
    } else {
        if (res >= 0) {
            if (s->f && (s->nfds + s->fd0 < s->cap || s->fd0)) {
                if (s->fd0 + s->nfds == s->cap) {
                    memmove(s->fds, s->fds + s->fd0, s->nfds * sizeof *s->fds);
                    s->fd0 = 0;
                }
                s->fds[s->fd0 + s->nfds++] = res;
            } else if (s->f) {
                unsigned cap = s->cap ? s->cap * 2 : STASH_CAP;
                int *p = realloc(s->fds, cap * sizeof *p);
                if (p) {
                    s->fds = p;
                    s->cap = cap;
                    s->fds[s->fd0 + s->nfds++] = res;
                } else {
                    close(res); /* no memory: the peer sees the connection end */
                }
            } else {
                close(res); /* the listener was closed meanwhile */
            }
            ms->accepts++;
            ms->accept_worked = true;
        }
        if (!more) {
            s->acc_armed = s->acc_stop = false;
            if (res == -EINVAL && !ms->accept_worked && s->f && listening(s->fd)) {
                /* (a socket that does not listen answers EINVAL too) */
                ms->no_accept = true;
                afs__why(ms->why, sizeof ms->why, "multishot accept", res,
                         "a kernel before Linux 5.19");
            } else if (res < 0 && res != -ECANCELED && res != -ECONNABORTED &&
                       res != -EAGAIN && res != -EINTR) {
                s->acc_err = res;
            }
        }
    }
    if (s->f)
        make_ready(ms, s);
}

/* Copies what s holds into op's buffer, giving emptied buffers back (a MSG_PEEK takes
 * nothing): the bytes copied. */
static size_t copy_out(struct afs__ums *ms, struct ums_sock *s, struct afs_op *op)
{
    struct afs__span sp;
    afs__op_span(op, &sp);
    size_t n = 0;
    if (afs__op(op)->code == AFS__RECV && (afs__op(op)->sock.msg_flags & MSG_PEEK)) {
        for (uint16_t b = s->head; b != NO_BUF && n < sp.len; b = ms->next[b]) {
            size_t k = AFS_MIN((size_t)(ms->len[b] - ms->off[b]), sp.len - n);
            memcpy((char *)sp.buf + n, ms->mem + (size_t)b * ms->size + ms->off[b], k);
            n += k;
        }
        return n;
    }
    while (s->head != NO_BUF && n < sp.len) {
        uint16_t b = s->head;
        size_t k = AFS_MIN((size_t)(ms->len[b] - ms->off[b]), sp.len - n);
        memcpy((char *)sp.buf + n, ms->mem + (size_t)b * ms->size + ms->off[b], k);
        ms->off[b] += (uint32_t)k;
        n += k;
        if (ms->off[b] == ms->len[b]) {
            s->head = ms->next[b];
            if (s->head == NO_BUF)
                s->tail = NO_BUF;
            s->nheld--;
            release(ms, b);
        }
    }
    return n;
}

/* After serving one side of s: ops still parked with the multishot ended re-arm it, or when
 * `plain` go back to the core as a transient result, which stages them again as plain ops
 * (afs__ums_prep); with nothing parked and `full` (too much held for no one) it is stopped. */
static void rearm(struct afs_ctx *ctx, struct afs__ums *ms, struct ums_sock *s, unsigned tag,
                  bool plain, bool full)
{
    bool recv = tag == AFS__UMS_TAG_RECV;
    struct afs__list *q = recv ? &s->rq : &s->aq;
    bool armed = recv ? s->recv_armed : s->acc_armed;
    if (q->len && !armed) {
        if (plain)
            while (q->len)
                afs__op_transferred(ctx, pop_parked(q), -EAGAIN);
        else
            arm(ctx, ms, s, tag);
    } else if (armed && !q->len && full && !(recv ? s->recv_stop : s->acc_stop)) {
        stop(ctx, s, tag);
    }
}

static void serve_recv(struct afs_ctx *ctx, struct afs__ums *ms, struct ums_sock *s)
{
    while (s->rq.len) {
        struct afs_op *op = first(&s->rq);
        ssize_t res;
        if (s->head != NO_BUF) {
            res = (ssize_t)copy_out(ms, s, op);
            ms->ring_recvs++;
        } else if (s->err) {
            res = s->err;
            s->err = 0;
        } else if (s->eof) {
            res = 0;
        } else {
            break;
        }
        afs__op_transferred(ctx, pop_parked(&s->rq), res);
    }
    if (s->oneshot && s->recv_armed && !s->recv_stop)
        stop(ctx, s, AFS__UMS_TAG_RECV); /* an SQE that was not there at the switch */
    if (!s->plain || !s->rq.len) /* no multishot beside a plain receive */
        rearm(ctx, ms, s, AFS__UMS_TAG_RECV, ms->no_recv || ring_short(ms) || s->oneshot,
              s->nheld >= HELD_CAP);
}

static void serve_accept(struct afs_ctx *ctx, struct afs__ums *ms, struct ums_sock *s)
{
    while (s->aq.len) {
        ssize_t res;
        if (s->nfds) {
            res = s->fds[s->fd0++];
            if (--s->nfds == 0)
                s->fd0 = 0;
        } else if (s->acc_err) {
            res = s->acc_err;
            s->acc_err = 0;
        } else {
            break;
        }
        struct afs_op *op = pop_parked(&s->aq);
        struct afs__op *o = afs__op(op);
        socklen_t *len = o->sock.addrlen;
        if (res >= 0 && o->u.buf && len && getpeername((int)res, o->u.buf, len) < 0)
            *len = 0; /* the peer is gone already: the connection says so */
        afs__op_transferred(ctx, op, res);
    }
    rearm(ctx, ms, s, AFS__UMS_TAG_ACCEPT, ms->no_accept, s->nfds >= STASH_CAP);
}

void afs__ums_serve(struct afs_ctx *ctx, struct afs__ums *ms)
{
    if (ms->serving)
        return;
    ms->serving = true;
    struct afs_list_node *n;
    while ((n = ms->ready.first)) {
        struct ums_sock *s = sock_of(n, offsetof(struct ums_sock, ready_node));
        afs_list_remove(&ms->ready, n);
        s->on_ready = false;
        if (!s->f)
            continue;
        serve_recv(ctx, ms, s);
        serve_accept(ctx, ms, s);
    }
    ms->serving = false;
}

bool afs__ums_cancel(struct afs_ctx *ctx, struct afs__ums *ms, struct afs_op *op)
{
    (void)ms;
    struct afs__op *o = afs__op(op);
    if (o->be[0] != AFS__UMS_PARKED)
        return false;
    struct ums_sock *s = (struct ums_sock *)(uintptr_t)o->be[1];
    afs__op_transferred(ctx, unpark(o->code == AFS__ACCEPT ? &s->aq : &s->rq, op),
                        -ECANCELED);
    return true;
}

void afs__ums_cancel_file(struct afs_ctx *ctx, struct afs__ums *ms, struct afs_file *f)
{
    (void)ms;
    struct ums_sock *s = f->be_sock;
    if (!s)
        return;
    struct afs__list *qs[2] = {&s->rq, &s->aq};
    for (int i = 0; i < 2; i++)
        while (qs[i]->len)
            afs__op_transferred(ctx, pop_parked(qs[i]), -ECANCELED);
}

static void sock_free(struct afs__ums *ms, struct ums_sock *s)
{
    if (s->on_ready)
        afs_list_remove(&ms->ready, &s->ready_node);
    afs_list_remove(&ms->socks, &s->node);
    free(s->fds);
    free(s);
}

bool afs__ums_close(struct afs_ctx *ctx, struct afs__ums *ms, struct afs_file *f)
{
    struct ums_sock *s = f->be_sock;
    if (!s)
        return false;
    if (s->f) {
        s->f = NULL;
        for (unsigned i = 0; i < s->nfds; i++)
            close(s->fds[s->fd0 + i]); /* accepted for no one */
        s->nfds = 0;
        while (s->head != NO_BUF) {
            uint16_t b = s->head;
            s->head = ms->next[b];
            release(ms, b);
        }
        s->tail = NO_BUF;
        s->nheld = 0;
    }
    if (s->recv_armed && !s->recv_stop)
        stop(ctx, s, AFS__UMS_TAG_RECV);
    if (s->acc_armed && !s->acc_stop)
        stop(ctx, s, AFS__UMS_TAG_ACCEPT);
    if ((s->recv_armed && s->recv_stop) || (s->acc_armed && s->acc_stop))
        return true;
    /* Not armed, or no SQE for the cancel (a failed ring): the state is dropped at fini. */
    f->be_sock = NULL;
    if (!s->recv_armed && !s->acc_armed)
        sock_free(ms, s);
    return false;
}

void afs__ums_fini(struct afs__ums *ms, struct io_uring *ring)
{
    while (ms->socks.first)
        sock_free(ms, sock_of(ms->socks.first, offsetof(struct ums_sock, node)));
    if (ms->br) {
        io_uring_unregister_buf_ring(ring, BGID);
        ring_free(ms);
    }
}

void afs__ums_info(const struct afs__ums *ms, struct afs_sock_info *out)
{
    out->multishot_accept = !ms->plain && !ms->no_accept;
    out->multishot_recv = !ms->plain && !ms->no_recv;
    out->ring_buffers = ms->br ? ms->entries : 0;
    out->ring_buffer_size = ms->br ? ms->size : 0;
    out->ring_held = ms->br ? ms->held : 0;
    out->ring_recvs = ms->ring_recvs;
    out->multishot_accepts = ms->accepts;
    out->arms = ms->arms;
    out->exhausted = ms->exhausted;
    out->plain_recvs = ms->plain_recvs;
    out->ring_cqes = ms->ring_cqes;
    out->oneshot_switches = ms->switches;
    out->why = ms->why[0] ? ms->why : NULL;
}
