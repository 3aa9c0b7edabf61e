/* Socket system calls behind internal.h (Linux, FreeBSD, macOS): creating and adopting
 * sockets the way the library wants them (close-on-exec, blocking or not, never SIGPIPE), and
 * one attempt at a socket op, for the readiness engine and the inline path. */
#include "internal.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || \
    defined(__DragonFly__)
#define HAVE_ACCEPT4 1 /* and SOCK_CLOEXEC / SOCK_NONBLOCK in socket()'s type */
#endif
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: SO_NOSIGPIPE on the socket instead */
#endif
#ifndef MSG_MORE
#define MSG_MORE 0
#endif
#ifndef MSG_EOR
#define MSG_EOR 0
#endif

bool afs__sys_sock_supported(void)
{
    return true;
}

#ifdef __linux__
#define HAVE_SENDFILE 1 /* FreeBSD's and macOS's sendfile(2) differ: not wired up */
#endif

bool afs__sendfile_rw;

bool afs__sys_sendfile_supported(void)
{
    return true; /* sendfile(2) where HAVE_SENDFILE, else the source read and sent */
}

int afs__sys_sock_close(afs__fd_t fd)
{
    return afs__sys_close(fd);
}

/* What a socket of the library needs beyond its creation flags. */
static int sock_setup(int fd, bool nonblock, bool flags_done)
{
#if defined(SO_NOSIGPIPE)
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one) < 0)
        return -errno;
#endif
    if (flags_done)
        return 0;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -errno;
    return afs__sys_set_nonblock(fd, nonblock);
}

/* The type bits the caller may not choose (the library does). */
int afs__sys_sock_type(int type)
{
#ifdef SOCK_NONBLOCK
    type &= ~SOCK_NONBLOCK;
#endif
#ifdef SOCK_CLOEXEC
    type &= ~SOCK_CLOEXEC;
#endif
    return type;
}

int afs__sys_socket(int domain, int type, int protocol, bool nonblock, int *out)
{
    type = afs__sys_sock_type(type);
#ifdef HAVE_ACCEPT4
    int fd = socket(domain, type | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), protocol);
    bool done = true;
#else
    /* No SOCK_CLOEXEC (macOS): a fork+exec racing between these calls may inherit it. */
    int fd = socket(domain, type, protocol);
    bool done = false;
#endif
    if (fd < 0)
        return -errno;
    int err = sock_setup(fd, nonblock, done);
    if (err < 0) {
        close(fd);
        return err;
    }
    *out = fd;
    return 0;
}

int afs__sys_socketpair(int domain, int type, int protocol, bool nonblock, int fds[2])
{
    type = afs__sys_sock_type(type);
#ifdef HAVE_ACCEPT4
    int r = socketpair(domain, type | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), protocol,
                       fds);
    bool done = true;
#else
    int r = socketpair(domain, type, protocol, fds);
    bool done = false;
#endif
    if (r < 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        int err = sock_setup(fds[i], nonblock, done);
        if (err < 0) {
            close(fds[0]);
            close(fds[1]);
            return err;
        }
    }
    return 0;
}

int afs__sys_set_nonblock(int fd, bool nonblock)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    int want = nonblock ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
    return want == fl || fcntl(fd, F_SETFL, want) == 0 ? 0 : -errno;
}

int afs__sys_sock_adopt(int fd, bool nonblock)
{
    return sock_setup(fd, nonblock, false);
}

int afs__sys_accept_flags(bool nonblock)
{
#ifdef HAVE_ACCEPT4
    return SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0);
#else
    return nonblock ? 1 : 0; /* no accept4: sock_setup() after accept() */
#endif
}

bool afs__sys_msg_flags_ok(bool send, int flags)
{
    int ok = send ? (MSG_MORE | MSG_OOB | MSG_DONTROUTE | MSG_EOR | MSG_NOSIGNAL)
                  : (MSG_PEEK | MSG_WAITALL | MSG_OOB);
    return (flags & ~ok) == 0;
}

int afs__sys_msg_flags(bool send, int flags)
{
    return send ? flags | MSG_NOSIGNAL : flags & ~MSG_WAITALL;
}

bool afs__sys_msg_waitall(int flags)
{
    return (flags & MSG_WAITALL) != 0;
}

/* A sendfile without sendfile(2): the source is read into the op's buffer, a piece at a
 * time, and the piece is sent, resumed where a send stopped (the buffer keeps what is not
 * sent yet: a piece is read once). The buffer is sized for the op (the bytes it sends, up to
 * AFS__BOUNCE_MAX); a source opened for direct I/O is read at its alignment, from before
 * the op's offset when it is not aligned. The readiness engine and the inline path make the
 * calls below (sendfile_rw), io_uring makes them SQEs of the op (src/linux/uring.c). */
int afs__sendfile_span(struct afs_op *op, uint64_t *at, size_t *len)
{
    struct afs__op *o = afs__op(op);
    struct afs__sock *k = &o->sock;
    size_t align = k->src->dio_align ? k->src->dio_align : 1;
    if (align > AFS__BOUNCE_MAX / 4)
        return -EINVAL; /* no device asks that much: its buffer would pass 1 MiB (see
                           afs__aligned_free) */
    /* The buffer's size is the op's: the same at every piece. */
    size_t first = o->total + (size_t)(o->off % align);
    size_t cap = first >= AFS__BOUNCE_MAX ? AFS__BOUNCE_MAX
                                          : (first + align - 1) / align * align;
    if (!k->bounce && !(k->bounce = afs__aligned_alloc(cap, align < 64 ? 64 : align)))
        return -ENOMEM;
    uint64_t from = o->off + o->done;
    size_t skip = (size_t)(from % align), rest = o->total - o->done;
    *at = from - skip;
    *len = rest >= cap ? cap : AFS_MIN((rest + skip + align - 1) / align * align, cap);
    return 0;
}

ssize_t afs__sendfile_filled(struct afs_op *op, ssize_t n)
{
    struct afs__op *o = afs__op(op);
    struct afs__sock *k = &o->sock;
    size_t align = k->src->dio_align ? k->src->dio_align : 1;
    size_t skip = (size_t)((o->off + o->done) % align);
    if (n < 0)
        return n;
    if ((size_t)n <= skip)
        return 0; /* the source ended */
    k->head = (uint32_t)skip;
    k->tail = (uint32_t)(skip + AFS_MIN((size_t)n - skip, o->total - o->done));
    return k->tail - k->head;
}

void afs__sendfile_sent(struct afs_op *op, size_t n)
{
    struct afs__sock *k = &afs__op(op)->sock;
    k->head += (uint32_t)n;
    if (k->head == k->tail)
        k->head = k->tail = 0;
}

/* One send per call, as sendfile(2) would be: its byte count, 0 at the source's end, or
 * -errno (the read's or the send's). */
static ssize_t sendfile_rw(struct afs_op *op, int fd)
{
    struct afs__sock *k = &afs__op(op)->sock;
    if (k->head == k->tail) {
        uint64_t at = 0;
        size_t want = 0;
        int err = afs__sendfile_span(op, &at, &want);
        if (err < 0)
            return err;
        ssize_t n;
        do
            n = afs__sys.pread(k->src->fd, k->bounce, want, at);
        while (n == -EINTR);
        if ((n = afs__sendfile_filled(op, n)) <= 0)
            return n;
    }
    for (;;) {
        ssize_t r = send(fd, k->bounce + k->head, k->tail - k->head, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        afs__sendfile_sent(op, (size_t)r);
        return r;
    }
}

/* accept() as the op asks: the new descriptor close-on-exec, non-blocking when asked. */
static int sys_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
#ifdef HAVE_ACCEPT4
    int nfd = accept4(fd, addr, addrlen, flags);
    if (nfd < 0)
        return -errno;
    return nfd;
#else
    int nfd = accept(fd, addr, addrlen);
    if (nfd < 0)
        return -errno;
    int err = sock_setup(nfd, flags != 0, false);
    if (err < 0) {
        close(nfd);
        return err;
    }
    return nfd;
#endif
}

ssize_t afs__sys_sock_try(struct afs_op *op, bool *in)
{
    struct afs__op *o = afs__op(op);
    int fd = (int)o->file->fd;
    ssize_t r;
    for (;;) {
        switch (o->code) {
        case AFS__READ:
        case AFS__RECV: {
            struct afs__span s;
            afs__op_span(op, &s);
            *in = true;
            if (!o->file->sock) { /* a pipe or FIFO, non-blocking */
                r = afs__sys.pread(fd, s.buf, s.len, AFS__OFF_SEQ);
                if (r == -EINTR)
                    continue;
                return r == -EWOULDBLOCK ? -EAGAIN : r;
            }
            r = recv(fd, s.buf, s.len, o->code == AFS__RECV ? o->sock.msg_flags : 0);
            break;
        }
        case AFS__WRITE:
        case AFS__SEND: {
            struct afs__span s;
            afs__op_span(op, &s);
            *in = false;
            if (!o->file->sock) { /* a write() that takes back its SIGPIPE: -EPIPE */
                r = afs__sys.pwrite(fd, s.buf, s.len, AFS__OFF_SEQ);
                if (r == -EINTR)
                    continue;
                return r == -EWOULDBLOCK ? -EAGAIN : r;
            }
            r = send(fd, s.buf, s.len,
                     o->code == AFS__SEND ? o->sock.msg_flags : MSG_NOSIGNAL);
            break;
        }
        case AFS__ACCEPT:
            *in = true;
            r = sys_accept(fd, o->u.buf, o->sock.addrlen, o->sock.how);
            /* The peer reset the connection before it was accepted: take the next one. */
            if (r == -ECONNABORTED || r == -EPROTO || r == -EINTR)
                continue;
            return r == -EWOULDBLOCK ? -EAGAIN : r;
        case AFS__CONNECT:
            *in = false;
            if (o->sock.stage == 0) {
                r = connect(fd, o->u.buf, (socklen_t)o->len);
                if (r == 0)
                    return 0;
                if (errno == EINPROGRESS || errno == EINTR) {
                    /* Under way: its outcome is SO_ERROR once the socket is writable. */
                    o->sock.stage = 1;
                    return -EAGAIN;
                }
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
            } else {
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
                    return -errno;
                if (soerr == EINPROGRESS || soerr == EALREADY)
                    return -EAGAIN;
                if (soerr == 0) {
                    /* Writable without an error may still be "in progress" on some systems.
                     * A second connect tells (EALREADY while under way) and, on Linux, also
                     * marks the socket connected: without it the user's next afs_connect
                     * would get 0 from the kernel instead of -EISCONN. */
                    if (connect(fd, o->u.buf, (socklen_t)o->len) == 0 || errno == EISCONN)
                        return 0;
                    if (errno == EALREADY || errno == EINPROGRESS || errno == EINTR)
                        return -EAGAIN;
                    return -errno;
                }
                return -soerr;
            }
        case AFS__SHUTDOWN:
            *in = false;
            return shutdown(fd, o->sock.how) < 0 ? -errno : 0;
        case AFS__SENDFILE: {
            *in = false;
#ifdef HAVE_SENDFILE
            if (!afs__sendfile_rw && !o->sock.stage) {
                /* No MSG_NOSIGNAL here: afs__sys_sendfile takes a SIGPIPE back. */
                struct afs__span s;
                afs__op_span(op, &s);
                r = afs__sys.sendfile(fd, (int)o->sock.src->fd, s.off, s.len);
                if (r == -EINTR)
                    continue;
                /* A source the kernel cannot splice from there (direct I/O from an offset
                 * or to an end that is not aligned; a file without splice support; an
                 * offset at or past the largest its file system has, EOVERFLOW, which a
                 * read still reads from or finds the end at: 2 GiB for /proc): the rest of
                 * the op reads and sends, as io_uring's splices do. */
                if (r != -EINVAL && r != -ENOSYS && r != -EOVERFLOW)
                    return r == -EWOULDBLOCK ? -EAGAIN : r;
                o->sock.stage = 1;
            }
#endif
            return sendfile_rw(op, fd);
        }
        default:
            return -EINVAL;
        }
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

void afs__sys_sock_poll(int fd, bool in)
{
    struct pollfd p = {.fd = fd, .events = in ? POLLIN : POLLOUT};
    while (poll(&p, 1, -1) < 0 && errno == EINTR)
        ;
}
