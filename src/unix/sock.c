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

bool afs__sys_sendfile_supported(void)
{
#ifdef __linux__
    return true;
#else
    return false; /* FreeBSD's and macOS's sendfile(2) differ: not wired up */
#endif
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
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    int want = nonblock ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
    if (want != fl && fcntl(fd, F_SETFL, want) < 0)
        return -errno;
    return 0;
}

/* The type bits the caller may not choose (the library does). */
static int plain_type(int type)
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
    type = plain_type(type);
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
    type = plain_type(type);
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
            r = recv(fd, s.buf, s.len, o->code == AFS__RECV ? o->sock.msg_flags : 0);
            break;
        }
        case AFS__WRITE:
        case AFS__SEND: {
            struct afs__span s;
            afs__op_span(op, &s);
            *in = false;
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
                    /* Writable without an error may still be "in progress" on some systems:
                     * a connected socket has a peer. */
                    struct sockaddr_storage ss;
                    socklen_t l = sizeof ss;
                    if (getpeername(fd, (struct sockaddr *)&ss, &l) < 0 && errno == ENOTCONN)
                        return -EAGAIN;
                }
                return -soerr;
            }
        case AFS__SHUTDOWN:
            *in = false;
            return shutdown(fd, o->sock.how) < 0 ? -errno : 0;
        case AFS__SENDFILE: {
            /* No MSG_NOSIGNAL here: afs__sys_sendfile takes a SIGPIPE back. */
            struct afs__span s;
            afs__op_span(op, &s);
            *in = false;
            r = afs__sys_sendfile(fd, (int)o->sock.src->fd, s.off, s.len);
            if (r == -EINTR)
                continue;
            return r == -EWOULDBLOCK ? -EAGAIN : r;
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
