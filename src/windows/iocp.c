/* The iocp backend: OVERLAPPED ReadFile/WriteFile and one I/O completion port per context.
 *
 * Files are associated with the port when they are opened on the context, with
 * FILE_SKIP_COMPLETION_PORT_ON_SUCCESS: an op that the system finishes inside ReadFile
 * (cached data, often) queues no packet and is reported at the next enter, like one that
 * fails at once. The others come back through GetQueuedCompletionStatusEx, up to 64 per
 * call. The context's waker posts a packet with AFS__WAKE_KEY to the same port, so the one
 * wait also ends for the thread pool and afs_ctx_wake(). The OVERLAPPED lives in the op's
 * backend words: nothing is allocated per op.
 *
 * Sockets are src/windows/sock.c's: their ops' packets come to the same port with
 * AFS__SOCK_KEY and are handed over from here.
 *
 * fsync (FlushFileBuffers has no overlapped form) and readv/writev (ReadFileScatter wants
 * page-sized unbuffered segments) go to the core's thread pool. So do all transfers of a
 * file whose handle cannot join the port: one opened without FILE_FLAG_OVERLAPPED
 * (afs_file_from_fd() of a CreateFileW handle without it, of CreatePipe's ends, of NUL), on
 * which each transfer is a blocking call (sys.c), as on the threads backend. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define KEY_FILE ((ULONG_PTR)1)
#define BATCH    64

struct iocp {
    HANDLE           port;
    struct afs__list ready; /* finished inside ReadFile/WriteFile: reported at enter */
};

/* An op's state, in its backend words. */
struct iocp_op {
    OVERLAPPED ov;
    ssize_t    res;     /* for ops on `ready` */
    bool       pending; /* a completion packet will come */
};
_Static_assert(sizeof(struct iocp_op) <= sizeof(((struct afs__op *)0)->be),
               "the OVERLAPPED must fit in the op's backend words");

static struct iocp *I(struct afs_ctx *ctx)
{
    return ctx->be_state;
}

static struct iocp_op *io(struct afs_op *op)
{
    return (struct iocp_op *)(void *)afs__op(op)->be;
}

/* The op that owns an OVERLAPPED from a completion packet. */
static struct afs_op *op_of(OVERLAPPED *ov)
{
    char *be = (char *)ov - offsetof(struct iocp_op, ov);
    char *words = be - offsetof(struct afs__op, be);
    return (struct afs_op *)(void *)(words - offsetof(struct afs_op, private_));
}

static int iocp_init(struct afs_ctx *ctx, char *why, size_t why_len)
{
    struct iocp *c = afs__sys.calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    /* One thread (the context's owner) dequeues. */
    c->port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1);
    if (!c->port) {
        int err = afs__win_errno(GetLastError());
        afs__why(why, why_len, "CreateIoCompletionPort", err, NULL);
        free(c);
        return err;
    }
    ctx->be_state = c;
    afs__waker_set_port(&ctx->waker, c->port);
    return 0;
}

static void iocp_fini(struct afs_ctx *ctx)
{
    struct iocp *c = I(ctx);
    afs__waker_set_port(&ctx->waker, NULL);
    CloseHandle(c->port); /* wake packets still queued go with it */
    free(c);
    ctx->be_state = NULL;
}

HANDLE afs__iocp_port(struct afs_ctx *ctx)
{
    return ctx->be == &afs__backend_iocp ? I(ctx)->port : NULL;
}

static int iocp_open(struct afs_ctx *ctx, struct afs_file *f)
{
    if (f->sock)
        return 0; /* src/windows/sock.c associates it, with its own key, at its first op */
    /* A handle opened for synchronous I/O (no FILE_FLAG_OVERLAPPED) cannot join a port, nor
     * can one that joined another port already: ERROR_INVALID_PARAMETER. Such a file is
     * left off the port and its transfers go to the pool, which runs them with sys.c's
     * calls; those give the port no packet (their event has its low bit set) whatever port
     * the handle is on. */
    DWORD err = 0;
    if (!CreateIoCompletionPort(f->fd, I(ctx)->port, KEY_FILE, 0))
        err = GetLastError();
    /* Without skip-on-success an op finished inside ReadFile would be reported twice (the
     * return value and a packet) and we could not tell which ops get a packet. The
     * synchronous calls of sys.c wait on their own event, so the handle's is not needed. */
    else if (!SetFileCompletionNotificationModes(f->fd, FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
                                                            FILE_SKIP_SET_EVENT_ON_HANDLE))
        err = GetLastError();
    if (err == ERROR_INVALID_PARAMETER) {
        f->be_pool = true;
        return 0;
    }
    return err ? afs__win_errno(err) : 0;
}

static bool iocp_accepts(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    if (o->xflags & AFS__X_DSYNC)
        return false; /* AFS_WRITE_DSYNC: the pool writes, then flushes */
    if (o->code != AFS__READ && o->code != AFS__WRITE)
        return false;
    return !o->file->be_pool;
}

static ssize_t result(struct afs_op *op, DWORD err, DWORD bytes)
{
    if (err == 0)
        return (ssize_t)bytes;
    /* End of file for a read (afs__win_read_eof); a write keeps -EPIPE. */
    if (afs__win_read_eof(err) && afs__op(op)->code == AFS__READ)
        return 0;
    if (afs__op(op)->code == AFS__WRITE || afs__op(op)->code == AFS__WRITEV) {
        struct afs__span sp; /* the transfer that failed (an iovec's piece: its end is
                                past the limit too, or the one before it failed) */
        afs__op_span(op, &sp);
        if (sp.off != AFS__OFF_SEQ)
            return afs__win_size_errno(afs__win_errno(err), sp.off + sp.len);
    }
    return afs__win_errno(err);
}

static int iocp_prep(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    struct iocp_op *s = io(op);
    struct afs__span sp;
    afs__op_span(op, &sp); /* one buffer, at most AFS__CHUNK_MAX (1 GiB) < 4 GiB - 1 */
    HANDLE h = o->file->fd;
    /* A pipe or character device has no offsets (AFS__OFF_SEQ): offset 0 for a read, which
     * they ignore; ReadFile refuses 0xFFFFFFFF:FFFFFFFF (NUL: ERROR_INVALID_PARAMETER), which
     * means "end of file" to WriteFile. */
    uint64_t off = sp.off == AFS__OFF_SEQ && o->code == AFS__READ ? 0 : sp.off;
    memset(s, 0, sizeof *s);
    s->ov.Offset = (DWORD)off;
    s->ov.OffsetHigh = (DWORD)(off >> 32);
    ctx->stats.kernel_submits++;
    BOOL ok = o->code == AFS__WRITE ? WriteFile(h, sp.buf, (DWORD)sp.len, NULL, &s->ov)
                                    : ReadFile(h, sp.buf, (DWORD)sp.len, NULL, &s->ov);
    DWORD err = ok ? 0 : GetLastError();
    if (err == ERROR_IO_PENDING) {
        s->pending = true;
        return 0;
    }
    /* Finished already (no packet comes, see iocp_open), or refused. */
    DWORD bytes = 0;
    if (ok && !GetOverlappedResult(h, &s->ov, &bytes, FALSE))
        err = GetLastError();
    s->res = result(op, err, bytes);
    afs__list_push(&I(ctx)->ready, op);
    return 0;
}

static int iocp_enter(struct afs_ctx *ctx, bool wait, int64_t timeout_ns)
{
    struct iocp *c = I(ctx);
    bool reported = c->ready.len > 0;
    struct afs_op *op;
    while ((op = afs__list_pop(&c->ready)))
        afs__op_transferred(ctx, op, io(op)->res);

    DWORD ms = 0;
    if (wait && !reported) {
        ctx->stats.kernel_waits++;
        if (timeout_ns < 0) {
            ms = INFINITE;
        } else {
            int64_t v = (timeout_ns + 999999) / 1000000;
            ms = v >= (int64_t)INFINITE ? INFINITE - 1 : (DWORD)v;
        }
    }
    for (;;) {
        OVERLAPPED_ENTRY e[BATCH];
        ULONG n = 0;
        if (!GetQueuedCompletionStatusEx(c->port, e, BATCH, &n, afs__win_sock_wait_ms(ctx, ms),
                                         FALSE)) {
            DWORD err = GetLastError();
            return err == WAIT_TIMEOUT ? 0 : afs__win_errno(err);
        }
        for (ULONG i = 0; i < n; i++) {
            if (e[i].lpCompletionKey == AFS__WAKE_KEY) {
                afs__waker_drain(&ctx->waker);
                continue;
            }
            if (e[i].lpCompletionKey == AFS__SOCK_KEY) {
                afs__win_sock_packet(ctx, &e[i]);
                continue;
            }
            op = op_of(e[i].lpOverlapped);
            struct iocp_op *s = io(op);
            s->pending = false;
            DWORD err = 0, bytes = e[i].dwNumberOfBytesTransferred;
            if (s->ov.Internal != 0 &&
                !GetOverlappedResult(afs__op(op)->file->fd, &s->ov, &bytes, FALSE))
                err = GetLastError(); /* the NTSTATUS as a Windows error */
            afs__op_transferred(ctx, op, result(op, err, bytes));
        }
        if (n < BATCH)
            return 0;
        ms = 0; /* a full batch: take what else is there, without waiting */
    }
}

static void iocp_cancel(struct afs_ctx *ctx, struct afs_op *op)
{
    /* The packet still comes, with ERROR_OPERATION_ABORTED (-ECANCELED) or the result;
     * ERROR_NOT_FOUND means it is on its way already. An op on `ready` is finished. */
    struct iocp_op *s = io(op);
    if (s->pending)
        CancelIoEx(afs__op(op)->file->fd, &s->ov);
}

/* A pipe or device opened read-only being closed (afs_close): its reads handed to the system
 * may wait for ever. Every overlapped op of the handle is cancelled; their packets still
 * come through the port. */
static void iocp_cancel_file(struct afs_ctx *ctx, struct afs_file *f)
{
    (void)ctx;
    if (!f->be_pool)
        CancelIoEx(f->fd, NULL);
}

const struct afs__backend afs__backend_iocp = {
    .name = "iocp",
    .id = AFS_BACKEND_IOCP,
    .init = iocp_init,
    .fini = iocp_fini,
    .accepts = iocp_accepts,
    .prep = iocp_prep,
    .enter = iocp_enter,
    .cancel = iocp_cancel,
    .cancel_file = iocp_cancel_file,
    .open = iocp_open,
};

