/* Sockets: files made by socket(), accept() and socketpair(), and their ops (connect, accept,
 * recv, send, shutdown, sendfile) queued and waited for like file ops. Where the backend runs
 * socket ops itself (io_uring: afs__backend.sock) they go to it with blocking descriptors;
 * elsewhere the readiness engine (src/unix/ready.c) runs them on non-blocking ones. */
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef _WIN32
#include <sys/socket.h>
#endif /* Windows: SHUT_* from asyncfs.h */

bool afs__sock_ready(const struct afs_ctx *ctx)
{
    return !(ctx->be->sock && ctx->be->sock((struct afs_ctx *)ctx));
}

/* What a socket op is to do, as struct afs__op_args for data ops. */
struct sock_args {
    enum afs__code code;
    void          *buf;     /* recv, send: len bytes; connect, accept: the address */
    size_t         len;     /* connect: the address's length */
    int            flags;   /* recv, send: the caller's MSG_* */
    void          *addrlen; /* accept: socklen_t *, or NULL */
    int            how;     /* shutdown: SHUT_*; accept: the accept4 flags */
    struct afs_file *src;   /* sendfile: the source file, read from off */
    uint64_t       off;
    afs_cb        *cb;
    void          *data;
};

/* Validates a socket op and fills its private part (0 or -errno: nothing touched on error). */
static int sock_setup(struct afs_op *op, struct afs_file *f, const struct sock_args *a)
{
    if (!afs__sys_sock_supported())
        return -ENOTSUP;
    if (!op || !a->cb)
        return -EINVAL;
    struct afs__op *o = afs__op(op);
    if (afs__op_busy(f->ctx, op))
        return -EBUSY;
    if (!f->sock)
        return -ENOTSOCK;
    int acc = f->flags & (AFS_RDONLY | AFS_WRONLY | AFS_RDWR);
    bool send = a->code == AFS__SEND;
    switch (a->code) {
    case AFS__RECV:
    case AFS__SEND:
        if ((!a->buf && a->len) || a->len > (size_t)SSIZE_MAX)
            return -EINVAL;
        if (!afs__sys_msg_flags_ok(send, a->flags))
            return -EINVAL;
        if (!send && (a->flags & MSG_PEEK) && afs__sys_msg_waitall(a->flags))
            return -EINVAL; /* a peek of len bytes that are not all there yet */
        if (acc == (send ? AFS_RDONLY : AFS_WRONLY))
            return -EBADF;
        break;
    case AFS__CONNECT:
        if (!a->buf || a->len == 0 || a->len > sizeof(struct sockaddr_storage))
            return -EINVAL;
        break;
    case AFS__ACCEPT:
        if ((a->buf == NULL) != (a->addrlen == NULL))
            return -EINVAL;
        break;
    case AFS__SHUTDOWN:
        if (a->how != SHUT_RD && a->how != SHUT_WR && a->how != SHUT_RDWR)
            return -EINVAL;
        break;
    case AFS__SENDFILE: {
        if (!afs__sys_sendfile_supported())
            return -ENOTSUP;
        if (!a->src || a->len > (size_t)SSIZE_MAX || a->off > (uint64_t)INT64_MAX ||
            a->len > (uint64_t)INT64_MAX - a->off)
            return -EINVAL;
        if (a->src->seq)
            return -ESPIPE; /* a pipe, socket or tty: no offset to read at */
        if ((a->src->flags & (AFS_RDONLY | AFS_WRONLY | AFS_RDWR)) == AFS_WRONLY ||
            acc == AFS_RDONLY)
            return -EBADF;
        int err = afs__file_settle(a->src); /* its splices must not see O_NONBLOCK */
        if (err < 0)
            return err;
        break;
    }
    default:
        return -EINVAL;
    }
    afs__op_clear(o, true);
    o->magic = afs__op_magic_idle(op);
    o->file = f;
    o->cb = a->cb;
    o->u.buf = a->buf;
    o->off = AFS__OFF_SEQ;
    o->len = a->len;
    o->code = (uint8_t)a->code;
    if (a->code == AFS__RECV || a->code == AFS__SEND) {
        o->total = a->len;
        o->sock.msg_flags = afs__sys_msg_flags(send, a->flags);
        /* A receive completes with what arrived, unless MSG_WAITALL asks for all of it (the
         * core keeps receiving, on every backend, as for a read); on a socket of messages,
         * one message, as recv(2) does there. */
        if (!send && (!afs__sys_msg_waitall(a->flags) || f->dgram))
            o->flags |= AFS__OP_PARTIAL;
    }
    if (a->code == AFS__SENDFILE) {
        o->off = a->off;
        o->total = a->len;
        o->sock.src = a->src;
        /* The backend's per-op state (io_uring: the pipe and the splices under way) starts
         * from zero. */
        for (int i = 0; i < 4; i++)
            o->be[i] = 0;
    }
    o->sock.addrlen = a->addrlen;
    o->sock.how = a->how;
    op->data = a->data;
    op->result = 0;
    return 0;
}

void afs__sendfile_drop(struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    if (o->code != AFS__SENDFILE || !o->sock.bounce)
        return;
    afs__aligned_free(o->sock.bounce, AFS__BOUNCE_MAX);
    o->sock.bounce = NULL;
    o->sock.head = o->sock.tail = 0;
}

static int sock_queue(struct afs_op *op, struct afs_file *f, const struct sock_args *a)
{
    int err = sock_setup(op, f, a);
    if (err == 0)
        afs__op_enqueue(op);
    return err;
}

/* Whether a blocking call on ctx would suspend a task (else it blocks this thread). */
static bool in_task(struct afs_ctx *ctx)
{
    struct afs_waiter *w = afs_waiter_get();
    return w && w->ctx == ctx && !ctx->in_callback && w->current(w);
}

/* Runs one blocking socket op (a's cb and data are set here). */
static ssize_t sock_blocking(struct afs_file *f, struct sock_args a)
{
    struct afs_op op;
    struct afs__op_waiting ow = {0};
    afs__op(&op)->magic = 0; /* a fresh op */
    a.cb = afs__blocking_cb;
    a.data = &ow;
    int err = sock_setup(&op, f, &a);
    if (err < 0)
        return err;
    if ((a.code == AFS__RECV || a.code == AFS__SEND || a.code == AFS__SENDFILE) && a.len == 0 &&
        !(a.code == AFS__SEND && f->dgram))
        return 0; /* zero-length: nothing to run, no callback (an empty datagram is sent) */
    /* A shutdown never waits: outside a task it is made here; in one it joins the batch. */
    bool now = a.code == AFS__SHUTDOWN && !in_task(f->ctx);
    ssize_t r = afs__blocking_run(&op, &ow, now);
    if (now && r == 0 && f->ctx->ready)
        afs__ready_shut(f->ctx, f, a.how);
    return r;
}

/* ------------------------------------------------------------------------------------------
 * Files
 * ---------------------------------------------------------------------------------------- */

/* Whether a socket(2) type (with SOCK_NONBLOCK, SOCK_CLOEXEC...) is a byte stream. */
static bool stream_type(int type)
{
    return afs__sys_sock_type(type) == SOCK_STREAM;
}

int afs__sock_attach(struct afs_ctx *ctx, struct afs_file *f)
{
    return afs__sys_sock_adopt((int)(intptr_t)f->fd, afs__sock_ready(ctx));
}

/* A file around a socket the library just made as ctx wants it; on error fd is closed. */
static int sock_file(struct afs_ctx *ctx, int fd, bool dgram, struct afs_file **out)
{
    struct afs_file *f = afs__zalloc(sizeof *f);
    if (!f) {
        afs__sys_sock_close((afs__fd_t)(intptr_t)fd);
        return -ENOMEM;
    }
    f->fd = (afs__fd_t)(intptr_t)fd;
    struct afs__fd_info info = {.seq = true, .sock = true, .made = true, .size = -1,
                                .dgram = dgram};
    int err = afs__file_attach(ctx, f, AFS_RDWR, AFS_MODE_SYNC, &info);
    if (err < 0) {
        afs__sys_sock_close((afs__fd_t)(intptr_t)fd);
        free(f);
        return err;
    }
    *out = f;
    return 0;
}

int afs_socket(struct afs_ctx *ctx, int domain, int type, int protocol, struct afs_file **out)
{
    afs__ctx_check(ctx, __func__);
    if (!afs__sys_sock_supported())
        return -ENOTSUP;
    if (!out)
        return -EINVAL;
    *out = NULL;
    int fd;
    int err = afs__sys_socket(domain, type, protocol, afs__sock_ready(ctx), &fd);
    if (err < 0)
        return err;
    return sock_file(ctx, fd, !stream_type(type), out);
}

int afs_socketpair(struct afs_ctx *ctx, int domain, int type, int protocol,
                   struct afs_file *out[2])
{
    afs__ctx_check(ctx, __func__);
    if (!afs__sys_sock_supported())
        return -ENOTSUP;
    if (!out)
        return -EINVAL;
    out[0] = out[1] = NULL;
    int fds[2];
    int err = afs__sys_socketpair(domain, type, protocol, afs__sock_ready(ctx), fds);
    if (err < 0)
        return err;
    if ((err = sock_file(ctx, fds[0], !stream_type(type), &out[0])) < 0) {
        afs__sys_sock_close((afs__fd_t)(intptr_t)fds[1]);
        return err;
    }
    if ((err = sock_file(ctx, fds[1], !stream_type(type), &out[1])) < 0) {
        afs_close(out[0]);
        out[0] = NULL;
        return err;
    }
    return 0;
}

void afs__seq_closing(struct afs_ctx *ctx, struct afs_file *f)
{
    /* Queued ops first: they would be handed over and wait during the drain. */
    struct afs_list_node *n = ctx->queued.l.first;
    while (n && f->inflight) {
        struct afs_list_node *next = n->next;
        struct afs__op *o = AFS_LIST_ITEM(n, struct afs__op, node);
        if (o->file == f)
            afs_cancel((struct afs_op *)(void *)((char *)o - offsetof(struct afs_op, private_)));
        n = next;
    }
    if (f->polled && ctx->ready)
        afs__ready_forget(ctx, f); /* parked ops, and the engine's watch of the descriptor */
    else if (f->inflight && ctx->be->cancel_file)
        ctx->be->cancel_file(ctx, f); /* ops the kernel holds (io_uring) */
}

void afs_ctx_sock_info(const struct afs_ctx *ctx, struct afs_sock_info *out)
{
    afs__ctx_check(ctx, __func__);
    AFS_CHECK(out != NULL, "out is NULL");
    memset(out, 0, sizeof *out);
    if (ctx->be->sock_info && !afs__sock_ready(ctx)) {
        ctx->be->sock_info(ctx, out);
        return;
    }
    static _Thread_local char why[96];
    snprintf(why, sizeof why, "%s: readiness engine, no multishot ops", ctx->be->name);
    out->why = why;
}

/* ------------------------------------------------------------------------------------------
 * The ops
 * ---------------------------------------------------------------------------------------- */

int afs_queue_connect(struct afs_op *op, struct afs_file *s, const struct sockaddr *addr,
                      socklen_t addrlen, afs_cb *cb, void *data)
{
    afs__file_check(s, __func__);
    return sock_queue(op, s, &(struct sock_args){.code = AFS__CONNECT, .buf = (void *)addr,
                                                 .len = (size_t)addrlen, .cb = cb,
                                                 .data = data});
}

int afs_queue_accept(struct afs_op *op, struct afs_file *s, struct sockaddr *addr,
                     socklen_t *addrlen, afs_cb *cb, void *data)
{
    afs__file_check(s, __func__);
    /* The caller's descriptor: blocking, as afs_file_from_fd() expects it. */
    return sock_queue(op, s, &(struct sock_args){.code = AFS__ACCEPT, .buf = addr,
                                                 .addrlen = addrlen,
                                                 .how = afs__sys_accept_flags(false), .cb = cb,
                                                 .data = data});
}

int afs_queue_recv(struct afs_op *op, struct afs_file *s, void *buf, size_t len, int flags,
                   afs_cb *cb, void *data)
{
    afs__file_check(s, __func__);
    return sock_queue(op, s, &(struct sock_args){.code = AFS__RECV, .buf = buf, .len = len,
                                                 .flags = flags, .cb = cb, .data = data});
}

int afs_queue_send(struct afs_op *op, struct afs_file *s, const void *buf, size_t len, int flags,
                   afs_cb *cb, void *data)
{
    afs__file_check(s, __func__);
    return sock_queue(op, s, &(struct sock_args){.code = AFS__SEND, .buf = (void *)buf,
                                                 .len = len, .flags = flags, .cb = cb,
                                                 .data = data});
}

int afs_queue_shutdown(struct afs_op *op, struct afs_file *s, int how, afs_cb *cb, void *data)
{
    afs__file_check(s, __func__);
    return sock_queue(op, s, &(struct sock_args){.code = AFS__SHUTDOWN, .how = how, .cb = cb,
                                                 .data = data});
}

int afs_queue_sendfile(struct afs_op *op, struct afs_file *s, struct afs_file *src,
                       uint64_t off, size_t len, afs_cb *cb, void *data)
{
    afs__file_check(s, __func__);
    if (src)
        afs__file_check(src, __func__);
    return sock_queue(op, s, &(struct sock_args){.code = AFS__SENDFILE, .src = src, .off = off,
                                                 .len = len, .cb = cb, .data = data});
}

ssize_t afs_sendfile(struct afs_file *s, struct afs_file *src, uint64_t off, size_t len)
{
    afs__file_check(s, __func__);
    if (src)
        afs__file_check(src, __func__);
    return sock_blocking(s, (struct sock_args){.code = AFS__SENDFILE, .src = src, .off = off,
                                               .len = len});
}

int afs_connect(struct afs_file *s, const struct sockaddr *addr, socklen_t addrlen)
{
    afs__file_check(s, __func__);
    return (int)sock_blocking(s, (struct sock_args){.code = AFS__CONNECT, .buf = (void *)addr,
                                                    .len = (size_t)addrlen});
}

int afs_accept(struct afs_file *s, struct sockaddr *addr, socklen_t *addrlen,
               struct afs_file **out)
{
    afs__file_check(s, __func__);
    if (!out)
        return -EINVAL;
    *out = NULL;
    /* The new descriptor is made as s's context wants it (non-blocking for the engine). */
    ssize_t fd = sock_blocking(s, (struct sock_args){.code = AFS__ACCEPT, .buf = addr,
                                                     .addrlen = addrlen,
                                                     .how = afs__sys_accept_flags(
                                                         afs__sock_ready(s->ctx))});
    if (fd < 0)
        return (int)fd;
    return sock_file(s->ctx, (int)fd, s->dgram, out); /* a seqpacket listener's kind */
}

ssize_t afs_recv(struct afs_file *s, void *buf, size_t len, int flags)
{
    afs__file_check(s, __func__);
    return sock_blocking(s, (struct sock_args){.code = AFS__RECV, .buf = buf, .len = len,
                                               .flags = flags});
}

ssize_t afs_send(struct afs_file *s, const void *buf, size_t len, int flags)
{
    afs__file_check(s, __func__);
    return sock_blocking(s, (struct sock_args){.code = AFS__SEND, .buf = (void *)buf,
                                               .len = len, .flags = flags});
}

int afs_shutdown(struct afs_file *s, int how)
{
    afs__file_check(s, __func__);
    return (int)sock_blocking(s, (struct sock_args){.code = AFS__SHUTDOWN, .how = how});
}
