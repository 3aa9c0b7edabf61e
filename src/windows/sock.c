/* Sockets on Windows: overlapped Winsock calls (WSARecv, WSASend, AcceptEx, ConnectEx,
 * TransmitFile) whose completion packets come through an I/O completion port.
 *
 * No Windows backend runs socket ops itself (none has afs__backend.sock): the core hands
 * every socket op, and every read or write of a socket, to afs__ready_submit() here, as it
 * hands them to the readiness engine on POSIX. The port is the iocp backend's own (its one
 * GetQueuedCompletionStatusEx dequeues the packets of files, wake-ups and sockets together
 * and passes the sockets' to afs__win_sock_packet); for the threads and sync backends the
 * engine makes a port of its own at the first socket op and attaches the context's waker to
 * it, so that their blocking wait (afs__ctx_block) is one GetQueuedCompletionStatusEx too.
 * No thread is blocked in a socket call, and none is started per socket.
 *
 * A socket is associated with the port at its first op (key AFS__SOCK_KEY), without
 * FILE_SKIP_COMPLETION_PORT_ON_SUCCESS: every call that does not fail at once gets a
 * packet. Ops are kept in order per direction on their file (receive side: recv, read,
 * accept; send side: send, write, connect): only the first of each direction is in the
 * kernel, the next one is posted when it finished, so that a receive that must go on
 * (MSG_WAITALL) is never overtaken. afs_cancel() of the posted op is CancelIoEx, and the op
 * completes when its packet came (ERROR_OPERATION_ABORTED: -ECANCELED), never before: the
 * buffer is not written after the callback. The others are taken off their queue at once.
 * A CancelIoEx that finds nothing (ERROR_NOT_FOUND) before the op's packet came is asked
 * again every RECANCEL_MS, the context's waits bounded meanwhile, until it finds the op or
 * the packet comes: on Windows the packet is on its way then, but wine also says so while
 * it runs a step of the op in the process (a TransmitFile or WSASend that found the socket
 * writable), and the op then goes on waiting, uncancelled, for a peer that may never read.
 *
 * A sendfile is TransmitFile on the send side, one piece at a time: the file offset in the
 * OVERLAPPED, the byte count clamped to the source's size at that moment (TransmitFile
 * would otherwise be asked past the end, which Windows does not define), so that a piece
 * of 0 bytes is the end of the source. The core resumes a short piece, and it is cancelled
 * like a WSASend (CancelIoEx of the socket's op).
 *
 * Sockets are made with WSA_FLAG_OVERLAPPED and not inheritable; socketpair() is emulated
 * with a TCP connection over loopback (Windows has no socketpair). The blocking calls that
 * run inline (from a callback, a shutdown outside a task) use the plain blocking calls. */
#include "internal.h"

#include <limits.h>
#include <mswsock.h>
#include <stdlib.h>
#include <string.h>

#define NENT 64
/* How often a cancel that found nothing is asked again (see above). */
#define RECANCEL_MS 10
/* What AcceptEx writes per address: the address and 16 bytes of its own. */
#define ACC_ADDR ((DWORD)(sizeof(struct sockaddr_storage) + 16))

/* ------------------------------------------------------------------------------------------
 * Winsock, once per process
 * ---------------------------------------------------------------------------------------- */

static INIT_ONCE                 wsa_once = INIT_ONCE_STATIC_INIT;
static int                       wsa_err;
static LPFN_ACCEPTEX             p_acceptex;
static LPFN_CONNECTEX            p_connectex;
static LPFN_GETACCEPTEXSOCKADDRS p_addrs;
static LPFN_TRANSMITFILE         p_transmit; /* NULL: afs_sendfile says -ENOTSUP */

static int wsa_errno(void)
{
    return afs__win_errno((DWORD)WSAGetLastError());
}

static bool ext(SOCKET s, GUID g, void *fn, size_t size)
{
    DWORD n = 0;
    return WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &g, sizeof g, fn, (DWORD)size, &n,
                    NULL, NULL) == 0;
}

static BOOL CALLBACK wsa_init(INIT_ONCE *once, void *param, void **ctx)
{
    (void)once, (void)param, (void)ctx;
    WSADATA d;
    int e = WSAStartup(MAKEWORD(2, 2), &d);
    if (e != 0) {
        wsa_err = afs__win_errno((DWORD)e);
        return TRUE;
    }
    /* The extension functions of the system's TCP provider (the same for IPv4 and IPv6). */
    SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (s == INVALID_SOCKET) {
        wsa_err = wsa_errno();
        return TRUE;
    }
    if (!ext(s, (GUID)WSAID_ACCEPTEX, &p_acceptex, sizeof p_acceptex) ||
        !ext(s, (GUID)WSAID_CONNECTEX, &p_connectex, sizeof p_connectex) ||
        !ext(s, (GUID)WSAID_GETACCEPTEXSOCKADDRS, &p_addrs, sizeof p_addrs))
        wsa_err = wsa_errno();
    else if (!ext(s, (GUID)WSAID_TRANSMITFILE, &p_transmit, sizeof p_transmit))
        p_transmit = NULL; /* sockets work without it */
    closesocket(s);
    if (!wsa_err && (!p_acceptex || !p_connectex || !p_addrs))
        wsa_err = -ENOTSUP;
    return TRUE;
}

static int wsa(void)
{
    InitOnceExecuteOnce(&wsa_once, wsa_init, NULL, NULL);
    return wsa_err;
}

int afs__win_sock_init(void)
{
    return wsa();
}

bool afs__sys_sock_supported(void)
{
    return true;
}

bool afs__sys_sendfile_supported(void)
{
    /* Without Winsock every socket call fails first with its own error. */
    return wsa() < 0 || p_transmit != NULL;
}

static SOCKET sock_of(const struct afs_file *f)
{
    return (SOCKET)(uintptr_t)f->fd;
}

/* The next piece of a sendfile: where it starts in the source and how many bytes it sends,
 * no more than the source has there. 1: a piece; 0: the source has ended; or -errno. */
static int sendfile_piece(struct afs_op *op, uint64_t *off, DWORD *len)
{
    struct afs__op *o = afs__op(op);
    struct afs__span sp;
    afs__op_span(op, &sp); /* at most AFS__CHUNK_MAX: below TransmitFile's 2 GiB - 2 */
    LARGE_INTEGER size;
    if (!GetFileSizeEx(o->sock.src->fd, &size))
        return afs__win_errno(GetLastError());
    if (size.QuadPart <= 0 || sp.off >= (uint64_t)size.QuadPart || sp.len == 0)
        return 0; /* a count of 0 would send the whole file */
    *off = sp.off;
    *len = (DWORD)AFS_MIN((uint64_t)sp.len, (uint64_t)size.QuadPart - sp.off);
    return 1;
}

/* What a failed TransmitFile says when the peer has gone: Windows reports a connection it
 * aborted after the peer's reset as WSAECONNABORTED, which a send caller knows as a reset. */
static ssize_t sendfile_err(ssize_t err)
{
    return err == -ECONNABORTED ? -ECONNRESET : err;
}

/* A socket as the library makes them: overlapped, not inherited by child processes. */
static SOCKET new_socket(int domain, int type, int protocol, int *err)
{
    SOCKET s = WSASocketW(domain, type, protocol, NULL, 0,
                          WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (s == INVALID_SOCKET && WSAGetLastError() == WSAEINVAL) {
        /* Before Windows 7 SP1 the flag is unknown. */
        s = WSASocketW(domain, type, protocol, NULL, 0, WSA_FLAG_OVERLAPPED);
        if (s != INVALID_SOCKET)
            SetHandleInformation((HANDLE)s, HANDLE_FLAG_INHERIT, 0);
    }
    if (s == INVALID_SOCKET) {
        *err = wsa_errno();
        return INVALID_SOCKET;
    }
    /* The library's descriptors are ints (afs_queue_accept's result, afs_file_fd): socket
     * handles are small, as every handle value is. */
    if ((uintptr_t)s > (uintptr_t)INT_MAX) {
        closesocket(s);
        *err = -EMFILE;
        return INVALID_SOCKET;
    }
    return s;
}

int afs__sys_socket(int domain, int type, int protocol, bool nonblock, int *fd)
{
    (void)nonblock; /* overlapped calls never block: the socket stays in blocking mode */
    int err = wsa();
    if (err < 0)
        return err;
    SOCKET s = new_socket(domain, type, protocol, &err);
    if (s == INVALID_SOCKET)
        return err;
    *fd = (int)s;
    return 0;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
}

/* Windows has no socketpair(): a TCP connection over loopback (IPv6 when AF_INET6 is asked,
 * else IPv4), through a listener that lives for the call. The accepted end is checked to be
 * the one this call connected (another process could connect to the listener meanwhile). */
int afs__sys_socketpair(int domain, int type, int protocol, bool nonblock, int fds[2])
{
    (void)nonblock;
    if (domain != AF_UNIX && domain != AF_INET && domain != AF_INET6)
        return -EAFNOSUPPORT;
    if (type != SOCK_STREAM)
        return -EOPNOTSUPP;
    if (protocol != 0 && protocol != IPPROTO_TCP)
        return -EPROTONOSUPPORT;
    int err = wsa();
    if (err < 0)
        return err;
    int fam = domain == AF_INET6 ? AF_INET6 : AF_INET;
    struct sockaddr_storage la;
    memset(&la, 0, sizeof la);
    int llen;
    if (fam == AF_INET) {
        struct sockaddr_in *a = (void *)&la;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        llen = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (void *)&la;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        llen = sizeof *a;
    }
    SOCKET l = new_socket(fam, SOCK_STREAM, IPPROTO_TCP, &err);
    if (l == INVALID_SOCKET)
        return err;
    SOCKET c = INVALID_SOCKET, a = INVALID_SOCKET;
    if (bind(l, (struct sockaddr *)&la, llen) != 0 || listen(l, 4) != 0 ||
        getsockname(l, (struct sockaddr *)&la, &llen) != 0) {
        err = wsa_errno();
        goto fail;
    }
    c = new_socket(fam, SOCK_STREAM, IPPROTO_TCP, &err);
    if (c == INVALID_SOCKET)
        goto fail;
    struct sockaddr_storage ca;
    int clen = sizeof ca;
    if (connect(c, (struct sockaddr *)&la, llen) != 0 ||
        getsockname(c, (struct sockaddr *)&ca, &clen) != 0) {
        err = wsa_errno();
        goto fail;
    }
    for (int tries = 0; tries < 16; tries++) {
        struct sockaddr_storage pa;
        int plen = sizeof pa;
        a = accept(l, (struct sockaddr *)&pa, &plen);
        if (a == INVALID_SOCKET) {
            err = wsa_errno();
            goto fail;
        }
        if (same_addr(&pa, &ca))
            break;
        closesocket(a); /* not ours */
        a = INVALID_SOCKET;
    }
    if (a == INVALID_SOCKET) {
        err = -ECONNABORTED;
        goto fail;
    }
    closesocket(l);
    SetHandleInformation((HANDLE)a, HANDLE_FLAG_INHERIT, 0);
    /* A socketpair has no Nagle delay: neither has this one. */
    BOOL one = TRUE;
    setsockopt(a, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof one);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof one);
    fds[0] = (int)c;
    fds[1] = (int)a;
    return 0;
fail:
    if (a != INVALID_SOCKET)
        closesocket(a);
    if (c != INVALID_SOCKET)
        closesocket(c);
    closesocket(l);
    return err;
}

int afs__sys_sock_adopt(int fd, bool nonblock)
{
    (void)fd, (void)nonblock;
    return 0; /* nothing to change: overlapped calls need no mode */
}

int afs__sys_set_nonblock(int fd, bool nonblock)
{
    (void)fd, (void)nonblock;
    return -ENOTSUP; /* never asked: Windows pipes are not polled */
}

int afs__sys_sock_close(afs__fd_t fd)
{
    return closesocket((SOCKET)(uintptr_t)fd) == 0 ? 0 : wsa_errno();
}

bool afs__sys_msg_flags_ok(bool send, int flags)
{
    int ok = send ? (MSG_OOB | MSG_DONTROUTE) : (MSG_PEEK | MSG_WAITALL | MSG_OOB);
    return (flags & ~ok) == 0;
}

int afs__sys_accept_flags(bool nonblock)
{
    (void)nonblock;
    return 0;
}

int afs__sys_msg_flags(bool send, int flags)
{
    return send ? flags : flags & ~MSG_WAITALL;
}

bool afs__sys_msg_waitall(int flags)
{
    return (flags & MSG_WAITALL) != 0;
}

int afs__sys_sock_type(int type)
{
    return type; /* Winsock has no flags beside the type */
}

/* ------------------------------------------------------------------------------------------
 * The inline path: plain blocking calls (never -EAGAIN)
 * ---------------------------------------------------------------------------------------- */

ssize_t afs__sys_sock_try(struct afs_op *op, bool *in)
{
    struct afs__op *o = afs__op(op);
    SOCKET s = sock_of(o->file);
    int r;
    switch (o->code) {
    case AFS__READ:
    case AFS__RECV: {
        struct afs__span sp;
        afs__op_span(op, &sp);
        *in = true;
        r = recv(s, sp.buf, (int)AFS_MIN(sp.len, (size_t)INT_MAX),
                 o->code == AFS__RECV ? o->sock.msg_flags : 0);
        return r == SOCKET_ERROR ? wsa_errno() : r;
    }
    case AFS__WRITE:
    case AFS__SEND: {
        struct afs__span sp;
        afs__op_span(op, &sp);
        *in = false;
        r = send(s, sp.buf, (int)AFS_MIN(sp.len, (size_t)INT_MAX),
                 o->code == AFS__SEND ? o->sock.msg_flags : 0);
        return r == SOCKET_ERROR ? wsa_errno() : r;
    }
    case AFS__ACCEPT: {
        *in = true;
        SOCKET a = accept(s, o->u.buf, o->sock.addrlen);
        if (a == INVALID_SOCKET) {
            int err = wsa_errno();
            return err == -ECONNRESET ? -ECONNABORTED : err;
        }
        SetHandleInformation((HANDLE)a, HANDLE_FLAG_INHERIT, 0);
        if ((uintptr_t)a > (uintptr_t)INT_MAX) {
            closesocket(a);
            return -EMFILE;
        }
        return (ssize_t)a;
    }
    case AFS__CONNECT:
        *in = false;
        return connect(s, o->u.buf, (int)o->len) == 0 ? 0 : wsa_errno();
    case AFS__SHUTDOWN:
        *in = false;
        return shutdown(s, o->sock.how) == 0 ? 0 : wsa_errno();
    case AFS__SENDFILE: {
        /* One piece, waited for on an event of its own: the event's low bit set, the
         * socket's port gets no packet for it. */
        *in = false;
        uint64_t off = 0;
        DWORD len = 0, n = 0, fl = 0;
        int piece = sendfile_piece(op, &off, &len);
        if (piece <= 0)
            return piece;
        HANDLE ev = CreateEventW(NULL, TRUE, FALSE, NULL);
        if (!ev)
            return afs__win_errno(GetLastError());
        OVERLAPPED ov;
        memset(&ov, 0, sizeof ov);
        ov.Offset = (DWORD)off;
        ov.OffsetHigh = (DWORD)(off >> 32);
        ov.hEvent = (HANDLE)((uintptr_t)ev | 1);
        ssize_t res = 0;
        if (!p_transmit(s, o->sock.src->fd, len, 0, &ov, NULL, 0) &&
            WSAGetLastError() != WSA_IO_PENDING)
            res = wsa_errno();
        else if (WaitForSingleObject(ev, INFINITE) != WAIT_OBJECT_0 ||
                 !WSAGetOverlappedResult(s, &ov, &n, FALSE, &fl))
            res = wsa_errno();
        CloseHandle(ev);
        return res < 0 ? sendfile_err(res) : (ssize_t)n;
    }
    default:
        return -EINVAL;
    }
}

void afs__sys_sock_poll(int fd, bool in)
{
    WSAPOLLFD p = {.fd = (SOCKET)(uintptr_t)fd, .events = in ? POLLRDNORM : POLLWRNORM};
    WSAPoll(&p, 1, -1);
}

/* ------------------------------------------------------------------------------------------
 * The engine
 * ---------------------------------------------------------------------------------------- */

struct afs__ready {
    HANDLE           port;
    bool             own;    /* the engine's port (threads, sync), else the iocp backend's */
    bool             woke;   /* a wake packet was taken outside the context's wait */
    unsigned         posted; /* ops whose packet is still to come */
    OVERLAPPED_ENTRY e[NENT]; /* what the last wait took, for afs__ready_reap */
    ULONG            ne;
    struct afs_op  **rc;     /* posted ops whose CancelIoEx found nothing: asked again */
    unsigned         nrc, caprc;
};

/* An op's state, in its backend words. */
struct wop {
    OVERLAPPED ov;
    SOCKET     acc;    /* accept: the socket AcceptEx accepts into */
    char      *abuf;   /* accept: where AcceptEx writes the two addresses */
    WSABUF     wb;
    DWORD      flags;
    bool       posted; /* a completion packet will come */
    bool       recancel; /* on the engine's rc list */
    bool       shut;     /* posted send overtaken by a shutdown: its abort is -EPIPE */
};
_Static_assert(sizeof(struct wop) <= sizeof(((struct afs__op *)0)->be),
               "a socket op's state must fit in the op's backend words");

static struct wop *W(struct afs_op *op)
{
    return (struct wop *)(void *)afs__op(op)->be;
}

static struct afs_op *op_of_ov(OVERLAPPED *ov)
{
    char *be = (char *)ov - offsetof(struct wop, ov);
    char *words = be - offsetof(struct afs__op, be);
    return (struct afs_op *)(void *)(words - offsetof(struct afs_op, private_));
}

static int side(const struct afs__op *o)
{
    switch (o->code) {
    case AFS__RECV:
    case AFS__READ:
    case AFS__ACCEPT: return 0;
    default: return 1;
    }
}

static struct afs__ready *engine(struct afs_ctx *ctx, int *err)
{
    if (ctx->ready)
        return ctx->ready;
    struct afs__ready *r = afs__sys.calloc(1, sizeof *r);
    if (!r) {
        *err = -ENOMEM;
        return NULL;
    }
    r->port = afs__iocp_port(ctx);
    if (!r->port) {
        r->port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1);
        if (!r->port) {
            *err = afs__win_errno(GetLastError());
            free(r);
            return NULL;
        }
        r->own = true;
        /* From now on the context's blocking wait is on the port: wakes must come there.
         * A signal given before this posted no packet; one spare wake-up covers it. */
        afs__waker_set_port(&ctx->waker, r->port);
        PostQueuedCompletionStatus(r->port, 0, AFS__WAKE_KEY, NULL);
    }
    ctx->ready = r;
    return r;
}

void afs__ready_free(struct afs_ctx *ctx)
{
    struct afs__ready *r = ctx->ready;
    if (!r)
        return;
    AFS_CHECK(r->posted == 0, "socket engine freed with ops in the kernel");
    if (r->own) {
        afs__waker_set_port(&ctx->waker, NULL);
        CloseHandle(r->port);
    }
    free(r->rc);
    free(r);
    ctx->ready = NULL;
}

bool afs__ready_parked(const struct afs_ctx *ctx)
{
    (void)ctx;
    return false; /* nothing to poll: the packets come to the wait by themselves */
}

int afs__ready_fd(struct afs_ctx *ctx)
{
    (void)ctx;
    return -1;
}

/* ConnectEx wants a bound socket: the wildcard address of addr's family, unless bound. */
static int bind_any(SOCKET s, int family)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (getsockname(s, (struct sockaddr *)&ss, &len) == 0)
        return 0;
    memset(&ss, 0, sizeof ss);
    ss.ss_family = (ADDRESS_FAMILY)family;
    len = family == AF_INET6 ? (int)sizeof(struct sockaddr_in6) : (int)sizeof(struct sockaddr_in);
    return bind(s, (struct sockaddr *)&ss, len) == 0 ? 0 : wsa_errno();
}

/* Starts op's current step in the kernel. true: its packet will come; false: finished or
 * failed at once, its result in *res. */
static bool post(struct afs_op *op, ssize_t *res)
{
    struct afs__op *o = afs__op(op);
    struct wop *w = W(op);
    SOCKET s = sock_of(o->file);
    memset(&w->ov, 0, sizeof w->ov);
    int rc;
    switch (o->code) {
    case AFS__READ:
    case AFS__RECV: {
        struct afs__span sp;
        afs__op_span(op, &sp);
        w->wb.buf = sp.buf;
        w->wb.len = (ULONG)sp.len; /* at most AFS__CHUNK_MAX */
        w->flags = o->code == AFS__RECV ? (DWORD)o->sock.msg_flags : 0;
        rc = WSARecv(s, &w->wb, 1, NULL, &w->flags, &w->ov, NULL);
        break;
    }
    case AFS__WRITE:
    case AFS__SEND: {
        struct afs__span sp;
        afs__op_span(op, &sp);
        w->wb.buf = sp.buf;
        w->wb.len = (ULONG)sp.len;
        w->flags = o->code == AFS__SEND ? (DWORD)o->sock.msg_flags : 0;
        rc = WSASend(s, &w->wb, 1, NULL, w->flags, &w->ov, NULL);
        break;
    }
    case AFS__ACCEPT: {
        WSAPROTOCOL_INFOW pi;
        int pl = sizeof pi;
        if (getsockopt(s, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&pi, &pl) != 0) {
            *res = wsa_errno();
            return false;
        }
        int err = 0;
        w->acc = new_socket(pi.iAddressFamily, pi.iSocketType, pi.iProtocol, &err);
        if (w->acc == INVALID_SOCKET) {
            *res = err;
            return false;
        }
        w->abuf = malloc(2 * ACC_ADDR);
        if (!w->abuf) {
            closesocket(w->acc);
            *res = -ENOMEM;
            return false;
        }
        DWORD n = 0;
        rc = p_acceptex(s, w->acc, w->abuf, 0, ACC_ADDR, ACC_ADDR, &n, &w->ov) ? 0
                                                                               : SOCKET_ERROR;
        if (rc == SOCKET_ERROR && WSAGetLastError() != WSA_IO_PENDING) {
            *res = wsa_errno();
            closesocket(w->acc);
            free(w->abuf);
            w->abuf = NULL;
            if (*res == -ECONNRESET)
                *res = -ECONNABORTED; /* reset before it was accepted: the next one */
            return false;
        }
        break;
    }
    case AFS__CONNECT: {
        const struct sockaddr *sa = o->u.buf;
        int type = 0, tl = sizeof type;
        if (getsockopt(s, SOL_SOCKET, SO_TYPE, (char *)&type, &tl) != 0) {
            *res = wsa_errno();
            return false;
        }
        if (type != SOCK_STREAM) {
            /* A datagram socket's connect only sets its peer: it never waits. */
            *res = connect(s, sa, (int)o->len) == 0 ? 0 : wsa_errno();
            return false;
        }
        int err = bind_any(s, sa->sa_family);
        if (err < 0) {
            *res = err;
            return false;
        }
        rc = p_connectex(s, sa, (int)o->len, NULL, 0, NULL, &w->ov) ? 0 : SOCKET_ERROR;
        break;
    }
    case AFS__SHUTDOWN:
        *res = shutdown(s, o->sock.how) == 0 ? 0 : wsa_errno();
        return false;
    case AFS__SENDFILE: {
        uint64_t off = 0;
        DWORD len = 0;
        int piece = sendfile_piece(op, &off, &len);
        if (piece <= 0) {
            *res = piece;
            return false;
        }
        w->ov.Offset = (DWORD)off;
        w->ov.OffsetHigh = (DWORD)(off >> 32);
        rc = p_transmit(s, o->sock.src->fd, len, 0, &w->ov, NULL, 0) ? 0 : SOCKET_ERROR;
        break;
    }
    default:
        *res = -EINVAL;
        return false;
    }
    if (rc == SOCKET_ERROR && WSAGetLastError() != WSA_IO_PENDING) {
        *res = o->code == AFS__SENDFILE ? sendfile_err(wsa_errno()) : wsa_errno();
        return false;
    }
    w->posted = true;
    return true;
}

/* The result of a posted step whose packet came. */
static ssize_t result(struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    struct wop *w = W(op);
    SOCKET s = sock_of(o->file);
    DWORD bytes = 0, flags = 0;
    ssize_t res = 0;
    if (!WSAGetOverlappedResult(s, &w->ov, &bytes, FALSE, &flags))
        res = wsa_errno();
    switch (o->code) {
    case AFS__ACCEPT:
        if (res == 0 && setsockopt(w->acc, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT,
                                   (const char *)&s, sizeof s) != 0)
            res = wsa_errno();
        if (res == 0 && o->u.buf) {
            struct sockaddr *loc, *rem;
            int ll = 0, rl = 0;
            p_addrs(w->abuf, 0, ACC_ADDR, ACC_ADDR, &loc, &ll, &rem, &rl);
            socklen_t *al = o->sock.addrlen;
            memcpy(o->u.buf, rem, (size_t)AFS_MIN(*al, rl));
            *al = rl;
        }
        free(w->abuf);
        w->abuf = NULL;
        if (res < 0) {
            closesocket(w->acc);
            /* The connection was reset before it was accepted (wine says so with
             * WSAENOTCONN from SO_UPDATE_ACCEPT_CONTEXT): the next one. */
            return res == -ECONNRESET || res == -ENOTCONN ? -ECONNABORTED : res;
        }
        return (ssize_t)w->acc;
    case AFS__CONNECT:
        if (res == 0 && setsockopt(s, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0) != 0)
            res = wsa_errno();
        return res;
    case AFS__SENDFILE:
        /* A piece cancelled part way: what the system says left counts (the core then
         * ends the op with the bytes sent, as for a socket's send). */
        if (res == -ECANCELED && bytes > 0)
            return (ssize_t)bytes;
        return res < 0 ? sendfile_err(res) : (ssize_t)bytes;
    default:
        return res < 0 ? res : (ssize_t)bytes;
    }
}

/* Associates f's socket with the engine's port, once. */
static int watch(struct afs__ready *r, struct afs_file *f)
{
    if (f->rdy.watched)
        return 0;
    if (!CreateIoCompletionPort(f->fd, r->port, AFS__SOCK_KEY, 0))
        return afs__win_errno(GetLastError());
    f->rdy.watched = true;
    return 0;
}

/* Posts the first op of one side of f, and goes on with the next ones while they finish at
 * once; stops at one whose packet is to come. */
static struct afs_op *first(struct afs_file *f, int dir)
{
    struct afs_list_node *n = f->rdy.q[dir].l.first;
    if (!n)
        return NULL;
    struct afs__op *o = AFS_LIST_ITEM(n, struct afs__op, node);
    return (struct afs_op *)(void *)((char *)o - offsetof(struct afs_op, private_));
}

static void run(struct afs_ctx *ctx, struct afs_file *f, int dir)
{
    struct afs__ready *r = ctx->ready;
    struct afs_op *op;
    while ((op = first(f, dir))) {
        if (W(op)->posted)
            return;
        ssize_t res;
        if (post(op, &res)) {
            r->posted++;
            ctx->stats.kernel_submits++;
            return;
        }
        afs__list_remove(&f->rdy.q[dir], op);
        if (afs__op_step(ctx, op, res)) {
            ctx->stats.resubmits++;
            afs__list_push_front(&f->rdy.q[dir], op);
        }
    }
}

void afs__ready_submit(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    o->flags |= AFS__OP_READY;
    memset(W(op), 0, sizeof *W(op));
    W(op)->acc = INVALID_SOCKET;
    int err = wsa();
    struct afs__ready *r = err < 0 ? NULL : engine(ctx, &err);
    if (r)
        err = watch(r, o->file);
    if (err < 0) {
        afs__op_finished(ctx, op, err);
        return;
    }
    if (o->code == AFS__SHUTDOWN) {
        /* Never waits, and goes before what is queued (as shutdown(2) would). */
        struct afs_file *f = o->file;
        int how = o->sock.how;
        ssize_t res;
        post(op, &res);
        afs__op_finished(ctx, op, res);
        if (res == 0)
            afs__ready_shut(ctx, f, how);
        return;
    }
    int dir = side(o);
    afs__list_push(&o->file->rdy.q[dir], op);
    if (o->file->rdy.q[dir].len == 1)
        run(ctx, o->file, dir);
}

/* ------------------------------------------------------------------------------------------
 * Cancels asked again (see the top of the file)
 * ---------------------------------------------------------------------------------------- */

static void recancel_add(struct afs__ready *r, struct afs_op *op)
{
    if (W(op)->recancel)
        return;
    if (r->nrc == r->caprc) {
        unsigned cap = r->caprc ? 2 * r->caprc : 8;
        struct afs_op **rc = realloc(r->rc, cap * sizeof *rc);
        if (!rc)
            return; /* not asked again: as without the list */
        r->rc = rc;
        r->caprc = cap;
    }
    r->rc[r->nrc++] = op;
    W(op)->recancel = true;
}

static void recancel_drop(struct afs__ready *r, unsigned i)
{
    W(r->rc[i])->recancel = false;
    r->rc[i] = r->rc[--r->nrc];
}

/* The op's packet came: it is no longer asked. */
static void recancel_done(struct afs__ready *r, struct afs_op *op)
{
    for (unsigned i = 0; W(op)->recancel && i < r->nrc; i++)
        if (r->rc[i] == op)
            recancel_drop(r, i);
}

static void recancel_retry(struct afs__ready *r)
{
    for (unsigned i = 0; i < r->nrc;) {
        struct afs_op *op = r->rc[i];
        if (CancelIoEx(afs__op(op)->file->fd, &W(op)->ov) || GetLastError() != ERROR_NOT_FOUND)
            recancel_drop(r, i); /* found (its packet comes), or not to be found again */
        else
            i++;
    }
}

DWORD afs__win_sock_wait_ms(struct afs_ctx *ctx, DWORD ms)
{
    struct afs__ready *r = ctx->ready;
    return r && r->nrc && ms > RECANCEL_MS ? RECANCEL_MS : ms;
}

void afs__win_sock_packet(struct afs_ctx *ctx, OVERLAPPED_ENTRY *e)
{
    struct afs_op *op = op_of_ov(e->lpOverlapped);
    struct afs__op *o = afs__op(op);
    struct afs_file *f = o->file;
    recancel_done(ctx->ready, op);
    W(op)->posted = false;
    ctx->ready->posted--;
    ssize_t res = result(op);
    if (W(op)->shut && res == -ECANCELED && !(o->flags & AFS__OP_CANCEL))
        res = -EPIPE;
    int dir = side(o);
    afs__list_remove(&f->rdy.q[dir], op);
    if (afs__op_step(ctx, op, res)) {
        ctx->stats.resubmits++;
        afs__list_push_front(&f->rdy.q[dir], op);
    }
    run(ctx, f, dir);
}

static void cancel_one(struct afs_ctx *ctx, struct afs_op *op)
{
    struct afs__op *o = afs__op(op);
    o->flags |= AFS__OP_CANCEL; /* a transient result after this ends the op */
    if (W(op)->posted) {
        /* The packet still comes: ERROR_OPERATION_ABORTED (-ECANCELED), or the result when
         * the op finished first. The op completes then, not before. */
        if (!CancelIoEx(o->file->fd, &W(op)->ov) && GetLastError() == ERROR_NOT_FOUND)
            recancel_add(ctx->ready, op);
        return;
    }
    afs__list_remove(&o->file->rdy.q[side(o)], op);
    afs__op_finished(ctx, op, o->done ? (ssize_t)o->done : -ECANCELED);
}

void afs__ready_cancel(struct afs_ctx *ctx, struct afs_op *op)
{
    cancel_one(ctx, op);
}

/* Winsock lets a send posted before shutdown(SD_SEND) go on waiting for room: the shutdown
 * overtakes it (asyncfs.h), its abort reported as -EPIPE. The sends queued behind it fail
 * with WSAESHUTDOWN (-EPIPE) as they are posted. */
void afs__ready_shut(struct afs_ctx *ctx, struct afs_file *f, int how)
{
    struct afs_list_node *n = f->rdy.q[1].l.first;
    if (how == SHUT_RD || !n)
        return;
    struct afs__op *o = AFS_LIST_ITEM(n, struct afs__op, node);
    struct afs_op *op = (struct afs_op *)(void *)((char *)o - offsetof(struct afs_op, private_));
    if (!W(op)->posted || o->code == AFS__CONNECT)
        return;
    W(op)->shut = true;
    if (!CancelIoEx(f->fd, &W(op)->ov) && GetLastError() == ERROR_NOT_FOUND)
        recancel_add(ctx->ready, op);
}

void afs__ready_forget(struct afs_ctx *ctx, struct afs_file *f)
{
    for (int dir = 0; dir < 2; dir++) {
        struct afs_list_node *n = f->rdy.q[dir].l.first;
        while (n) {
            struct afs_list_node *next = n->next;
            struct afs__op *o = AFS_LIST_ITEM(n, struct afs__op, node);
            cancel_one(ctx, (struct afs_op *)(void *)((char *)o -
                                                      offsetof(struct afs_op, private_)));
            n = next;
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * Waiting (threads and sync: the engine's port; iocp waits in its own enter)
 * ---------------------------------------------------------------------------------------- */

/* Takes what the port has, waiting up to ms; sorts wake packets out. Returns AFS__WOKE_*. */
static int collect(struct afs__ready *r, DWORD ms)
{
    int woke = 0;
    ULONG n = 0, base = r->ne;
    if (base < NENT &&
        GetQueuedCompletionStatusEx(r->port, r->e + base, NENT - base, &n, ms, FALSE)) {
        for (ULONG i = 0; i < n; i++) {
            OVERLAPPED_ENTRY *e = &r->e[base + i];
            if (e->lpCompletionKey == AFS__WAKE_KEY)
                woke = AFS__WOKE_WAKER;
            else
                r->e[r->ne++] = *e;
        }
    }
    return woke | (r->ne ? AFS__WOKE_SOCK : 0);
}

int afs__ctx_block(struct afs_ctx *ctx, int64_t timeout_ns)
{
    struct afs__ready *r = ctx->ready;
    if (!r || !r->own)
        return afs__waker_wait(&ctx->waker, timeout_ns) ? AFS__WOKE_WAKER : 0;
    if (r->woke) {
        r->woke = false;
        return AFS__WOKE_WAKER;
    }
    DWORD ms = INFINITE;
    if (timeout_ns >= 0) {
        int64_t v = (timeout_ns + 999999) / 1000000;
        ms = v >= (int64_t)INFINITE ? INFINITE - 1 : (DWORD)v;
    }
    return collect(r, afs__win_sock_wait_ms(ctx, ms));
}

void afs__ready_reap(struct afs_ctx *ctx)
{
    struct afs__ready *r = ctx->ready;
    /* The iocp backend's enter handed the packets over already. */
    for (;;) {
        if (!r->own)
            break;
        if (r->posted && r->ne < NENT && (collect(r, 0) & AFS__WOKE_WAKER))
            r->woke = true; /* the context's next wait returns at once for it */
        if (!r->ne)
            break;
        ULONG n = r->ne;
        OVERLAPPED_ENTRY e[NENT];
        memcpy(e, r->e, n * sizeof e[0]);
        r->ne = 0;
        for (ULONG i = 0; i < n; i++)
            afs__win_sock_packet(ctx, &e[i]);
    }
    if (r->nrc)
        recancel_retry(r);
}
