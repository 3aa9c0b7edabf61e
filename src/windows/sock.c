/* Sockets on Windows: not yet. Every socket call of asyncfs.h returns -ENOTSUP here
 * (afs__sys_sock_supported() says so before anything else is called); the readiness engine
 * does not exist, and the backends' blocking wait is the waker's. */
#include "internal.h"

bool afs__sys_sock_supported(void)
{
    return false;
}

int afs__sys_socket(int domain, int type, int protocol, bool nonblock, int *fd)
{
    (void)domain, (void)type, (void)protocol, (void)nonblock, (void)fd;
    return -ENOTSUP;
}

int afs__sys_socketpair(int domain, int type, int protocol, bool nonblock, int fds[2])
{
    (void)domain, (void)type, (void)protocol, (void)nonblock, (void)fds;
    return -ENOTSUP;
}

int afs__sys_sock_adopt(int fd, bool nonblock)
{
    (void)fd, (void)nonblock;
    return -ENOTSUP;
}

ssize_t afs__sys_sock_try(struct afs_op *op, bool *in)
{
    (void)op, (void)in;
    return -ENOTSUP;
}

void afs__sys_sock_poll(int fd, bool in)
{
    (void)fd, (void)in;
}

bool afs__sys_msg_flags_ok(bool send, int flags)
{
    (void)send, (void)flags;
    return false;
}

int afs__sys_accept_flags(bool nonblock)
{
    (void)nonblock;
    return 0;
}

int afs__sys_msg_flags(bool send, int flags)
{
    (void)send;
    return flags;
}

bool afs__sys_msg_waitall(int flags)
{
    (void)flags;
    return false;
}

void afs__ready_submit(struct afs_ctx *ctx, struct afs_op *op)
{
    afs__op_finished(ctx, op, -ENOTSUP);
}

void afs__ready_cancel(struct afs_ctx *ctx, struct afs_op *op)
{
    (void)ctx, (void)op;
}

void afs__ready_forget(struct afs_ctx *ctx, struct afs_file *f)
{
    (void)ctx, (void)f;
}

void afs__ready_reap(struct afs_ctx *ctx)
{
    (void)ctx;
}

bool afs__ready_parked(const struct afs_ctx *ctx)
{
    (void)ctx;
    return false;
}

int afs__ready_fd(struct afs_ctx *ctx)
{
    (void)ctx;
    return -1;
}

void afs__ready_free(struct afs_ctx *ctx)
{
    (void)ctx;
}

int afs__ctx_block(struct afs_ctx *ctx, int64_t timeout_ns)
{
    return afs__waker_wait(&ctx->waker, timeout_ns) ? AFS__WOKE_WAKER : 0;
}
