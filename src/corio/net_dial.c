/* Dialing, listening and accepting for corio tasks: names are resolved on the scheduler's
 * pool threads (getaddrinfo blocks), then every socket call is an asyncfs socket op that
 * joins the phase's batch. Windows: the same through Winsock (ws2tcpip's getaddrinfo). */
#include "corio_int.h"

/* ------------------------------------------------------------------------------------------
 * Name resolution on the scheduler's pool threads
 * ---------------------------------------------------------------------------------------- */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
typedef SOCKET net_fd;
/* The last Winsock error as -errno; Winsock needs starting before getaddrinfo. */
#define net_errno() afs__win_errno((DWORD)WSAGetLastError())
#else
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
typedef int net_fd;
#define net_errno() (-errno)
#endif
#define NET_FD(f) ((net_fd)afs_file_fd(f))

static _Thread_local char net_error[256];

const char *corio_net_error(void)
{
    return net_error[0] ? net_error : NULL;
}

/* Sets the message "host:port: what" ("[host]:port" for an IPv6 literal, "*" for any). */
static void net_fail(const char *host, const char *port, const char *what)
{
    const char *h = host && *host ? host : "*";
    const char *colon = strchr(h, ':');
    bool v6 = colon && strchr(colon + 1, ':') && h[0] != '['; /* "a:b" is no IPv6 literal */
    snprintf(net_error, sizeof net_error, "%s%s%s:%s: %s", v6 ? "[" : "", h, v6 ? "]" : "",
             port, what);
}

/* A resolution job on the heap: a waiter that gives up (deadline, cancel) leaves it to the
 * pool thread, which frees it when getaddrinfo returns. */
struct resolve_job {
    struct corio_blocking b;
    struct addrinfo      *res;
    int                   gai;
    int                   gai_errno;
    int                   passive;
    bool                  numeric; /* only numbers asked: no name service, never waits */
    char                 *host; /* NULL: any address (listen) */
    char                 *port;
};

static int resolve_fn(void *arg)
{
    struct resolve_job *j = arg;
    struct addrinfo hints = {0};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int passive = j->passive ? AI_PASSIVE : 0;
#ifdef _WIN32
    int err = afs__win_sock_init();
    if (err < 0) {
        j->gai = EAI_FAIL;
        j->gai_errno = -err;
        return 0;
    }
#endif
    /* Any address (a listener on no host) and numeric addresses as they are: AI_ADDRCONFIG
     * counts no loopback address, so it would drop :: and refuse "::1" where ::1 is IPv6's
     * only address. Names with it: no AAAA answers for a family the host cannot reach. */
    int (*gai)(const char *, const char *, const struct addrinfo *, struct addrinfo **) =
        afs__sys.getaddrinfo ? afs__sys.getaddrinfo : getaddrinfo;
    hints.ai_flags = passive | (j->host ? AI_NUMERICHOST : 0) |
                     (j->numeric ? AI_NUMERICSERV : 0);
    errno = 0;
    j->gai = gai(j->host, j->port, &hints, &j->res);
    if (j->host && j->gai == EAI_NONAME && !j->numeric) {
        hints.ai_flags = passive | AI_ADDRCONFIG;
        errno = 0;
        j->gai = gai(j->host, j->port, &hints, &j->res);
    }
    j->gai_errno = errno;
    return 0;
}

static void resolve_free_res(struct resolve_job *j)
{
    if (j->res && afs__sys.freeaddrinfo)
        afs__sys.freeaddrinfo(j->res);
    else if (j->res)
        freeaddrinfo(j->res);
    j->res = NULL;
}

static void resolve_release(struct corio_blocking *b)
{
    struct resolve_job *j = (struct resolve_job *)(void *)b;
    resolve_free_res(j);
    free(j->host);
    free(j->port);
    free(j);
}

static int gai_errno(int gai, int sys_errno)
{
    switch (gai) {
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
        return -ENOENT;
    case EAI_AGAIN:
        return -EAGAIN;
    case EAI_SERVICE:
    case EAI_SOCKTYPE:
    case EAI_BADFLAGS:
        return -EINVAL;
    case EAI_MEMORY:
        return -ENOMEM;
#ifdef EAI_SYSTEM
    case EAI_SYSTEM:
        return sys_errno > 0 ? -sys_errno : -EIO;
#endif
    default:
        return -EIO;
    }
}

/* Resolves host:port into *out (the caller frees it with resolve_release), under t's
 * cancellation and deadline. */
static int resolve(struct corio_task *t, const char *host, const char *port, int passive,
                   struct resolve_job **out)
{
    /* A number is a port: getaddrinfo would take 99999 modulo 65536 without a word. */
    /* (getaddrinfo takes leading blanks and a '+' too: " 70000" is port 4464 there) */
    const char *num = port + strspn(port, " \t\n\v\f\r");
    num += *num == '+';
    const char *digits = num + strspn(num, "0");
    if (*num && num[strspn(num, "0123456789")] == '\0' &&
        (strlen(digits) > 5 || atol(digits) > 65535)) {
        net_fail(host, port, "port out of range");
        return -EINVAL;
    }
    struct resolve_job *j = afs__sys.calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    j->passive = passive;
    if (host) {
        /* "[::1]", as in a URL, is the address ::1. */
        size_t hl = strlen(host);
        bool bracketed = hl > 2 && host[0] == '[' && host[hl - 1] == ']';
        if ((j->host = afs__sys.malloc(hl + 1)) != NULL) {
            memcpy(j->host, host + bracketed, hl - 2 * bracketed);
            j->host[hl - 2 * bracketed] = '\0';
        }
    }
    j->port = strdup(port);
    if ((host && !j->host) || !j->port) {
        resolve_release(&j->b);
        return -ENOMEM;
    }
    /* Numbers (an address or none, and a port) resolve here: getaddrinfo asks no service
     * for them. Anything else, or a failure, goes to a pool thread. */
    j->numeric = true;
    resolve_fn(j);
    if (j->gai == 0) {
        *out = j;
        return 0;
    }
    j->numeric = false;
    j->gai = j->gai_errno = 0;
    resolve_free_res(j);
    int err = corio_go(t, &j->b, resolve_fn, j);
    if (err < 0) {
        resolve_release(&j->b);
        return err;
    }
    err = corio_future_await(t, &j->b.done, NULL);
    if (!corio_future_done(&j->b.done)) {
        /* Interrupted: getaddrinfo cannot be; the job frees itself when it returns. */
        corio__blocking_abandon(t, &j->b, resolve_release);
        char what[64];
        snprintf(what, sizeof what, "%s while resolving", afs_strerror(err));
        net_fail(host, port, what);
        return err;
    }
    if (err < 0 || j->gai != 0) {
        if (err >= 0) {
            err = gai_errno(j->gai, j->gai_errno);
            net_fail(host, port,
#ifdef EAI_SYSTEM
                     j->gai == EAI_SYSTEM ? afs_strerror(err) :
#endif
                                          gai_strerror(j->gai));
        }
        resolve_release(&j->b);
        return err;
    }
    *out = j;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Dial: a connect to every address at once, the first that succeeds wins
 * ---------------------------------------------------------------------------------------- */

#define DIAL_MAX 16

struct dial;
struct attempt {
    struct dial        *d;
    struct corio_task  *task; /* while it runs */
    const struct addrinfo *ai;
    int                 err;
};

struct dial {
    struct attempt      a[DIAL_MAX];
    unsigned            live;
    struct afs_file    *winner;
    struct corio__waitq wq;
};

static void attempt_fn(struct corio_task *t, void *arg)
{
    struct attempt *a = arg;
    struct dial *d = a->d;
    a->task = t;
    struct afs_file *s = NULL;
    int err = afs_socket(corio_sched_ctx(t->sched), a->ai->ai_family, a->ai->ai_socktype,
                         a->ai->ai_protocol, &s);
    if (err == 0)
        err = afs_connect(s, a->ai->ai_addr, (socklen_t)a->ai->ai_addrlen);
    if (err == 0 && !d->winner) {
        d->winner = s;
    } else if (s) {
        afs_close(s);
        if (err == 0)
            err = -ECANCELED; /* another address was faster */
    }
    a->err = err;
    a->task = NULL;
    d->live--;
    corio__wake_all(&d->wq);
}

static void set_nodelay(struct afs_file *f)
{
    int one = 1;
    /* Small replies go out at once (no Nagle wait behind a delayed ACK); not TCP: ignored. */
    (void)setsockopt(NET_FD(f), IPPROTO_TCP, TCP_NODELAY, (void *)&one, sizeof one);
}

int corio_dial(struct corio_task *t, const char *host, const char *port, struct afs_file **out)
{
    corio__check_running(t, "corio_dial");
    AFS_CHECK(out != NULL, "out is NULL");
    *out = NULL;
    net_error[0] = '\0';
    if (!host || !port || !*host || !*port) {
        net_fail(host, port ? port : "", "empty host or port");
        return -EINVAL;
    }
    struct resolve_job *j;
    int err = resolve(t, host, port, 0, &j);
    if (err < 0)
        return err;
    struct dial *d = afs__sys.calloc(1, sizeof *d);
    if (!d) {
        resolve_release(&j->b);
        return -ENOMEM;
    }
    unsigned n = 0;
    for (const struct addrinfo *ai = j->res; ai && n < DIAL_MAX; ai = ai->ai_next) {
        struct attempt *a = &d->a[n++];
        a->d = d;
        a->ai = ai;
        a->err = 1; /* not started */
    }
    /* Every attempt starts in this CPU phase: their connects share one submission. */
    for (unsigned i = 0; i < n; i++) {
        d->live++;
        if ((err = corio_spawn(t, attempt_fn, &d->a[i], NULL)) < 0) {
            d->live--;
            d->a[i].err = err;
            break;
        }
    }
    err = 0;
    while (!d->winner && d->live)
        if ((err = corio__wait_on(t, &d->wq)) != 0)
            break;
    /* The losers (or all of them, interrupted) stop; their buffers are in d: wait for them. */
    for (unsigned i = 0; i < n; i++)
        if (d->a[i].task)
            corio_cancel(d->a[i].task);
    while (d->live)
        corio__wait_on_hard(t, &d->wq);
    if (d->winner && err == 0) {
        set_nodelay(d->winner);
        *out = d->winner;
    } else {
        if (d->winner)
            afs_close(d->winner);
        if (err == 0) {
            /* Every address failed: the first one's error, as the resolver ordered them. */
            err = -ECONNREFUSED;
            for (unsigned i = 0; i < n; i++)
                if (d->a[i].err < 0) {
                    err = d->a[i].err;
                    break;
                }
        }
        net_fail(host, port, afs_strerror(err));
    }
    free(d);
    resolve_release(&j->b);
    return *out ? 0 : err;
}

int corio_dial_stream(struct corio_task *t, const char *host, const char *port,
                      size_t buf_size, struct corio_stream **out)
{
    AFS_CHECK(out != NULL, "out is NULL");
    *out = NULL;
    if (buf_size > CORIO__STREAM_MAX_BUF)
        return -EINVAL; /* before connecting, not after */
    struct afs_file *f;
    int err = corio_dial(t, host, port, &f);
    if (err < 0)
        return err;
    if ((err = corio_stream_new(f, buf_size, out)) < 0)
        afs_close(f);
    return err;
}

/* ------------------------------------------------------------------------------------------
 * Listen and accept
 * ---------------------------------------------------------------------------------------- */

/* A socket bound to ai and listening: 0 and *out, or -errno. dual: an IPv6 wildcard that
 * takes IPv4 connections too. */
static int listen_on(struct corio_task *t, const struct addrinfo *ai, bool dual, int backlog,
                     struct afs_file **out)
{
    struct afs_file *s;
    int err = afs_socket(corio_sched_ctx(t->sched), ai->ai_family, ai->ai_socktype,
                         ai->ai_protocol, &s);
    if (err < 0)
        return err;
    net_fd fd = NET_FD(s);
    int one = 1, zero = 0;
#ifndef _WIN32 /* Windows: SO_REUSEADDR would let another socket take the port too */
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, (void *)&one, sizeof one);
#endif
    (void)one;
    if (dual && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, (void *)&zero, sizeof zero) < 0) {
        afs_close(s); /* IPv6 only here: the IPv4 wildcard serves everyone instead */
        return -EAFNOSUPPORT;
    }
    if (bind(fd, ai->ai_addr, (socklen_t)ai->ai_addrlen) < 0 ||
        listen(fd, backlog ? backlog : SOMAXCONN) < 0) {
        err = net_errno();
        afs_close(s);
        return err;
    }
    *out = s;
    return 0;
}

int corio_listen(struct corio_task *t, const char *host, const char *port, int backlog,
                 struct afs_file **out)
{
    corio__check_running(t, "corio_listen");
    AFS_CHECK(out != NULL, "out is NULL");
    *out = NULL;
    net_error[0] = '\0';
    if (!port || !*port || backlog < 0) {
        net_fail(host, port ? port : "", backlog < 0 ? "negative backlog" : "empty port");
        return -EINVAL;
    }
    bool any = !(host && *host);
    struct resolve_job *j;
    int err = resolve(t, any ? NULL : host, port, 1, &j);
    if (err < 0)
        return err;
    /* The first address that binds, in the resolver's order; for any address, an IPv6
     * wildcard that takes IPv4 too first where the system has IPv6 (the resolver lists
     * 0.0.0.0 first, which would leave ::1 unserved), the IPv4 one after. */
    int first = 0;
    for (int pass = any ? 0 : 1; pass < 2 && !*out; pass++) {
        for (const struct addrinfo *ai = j->res; ai && !*out; ai = ai->ai_next) {
            bool v6 = ai->ai_family == AF_INET6;
            if (any && v6 != (pass == 0))
                continue;
            int e = listen_on(t, ai, any && v6, backlog, out);
            /* The error to report: the first, but not a family the system lacks. */
            if (e < 0 && (first == 0 || first == -EAFNOSUPPORT))
                first = e;
        }
    }
    err = *out ? 0 : first ? first : -EADDRNOTAVAIL;
    if (err < 0)
        net_fail(host, port, afs_strerror(err));
    resolve_release(&j->b);
    return err;
}

int corio_accept(struct corio_task *t, struct afs_file *l, size_t buf_size,
                 struct corio_stream **out)
{
    corio__check_running(t, "corio_accept");
    AFS_CHECK(out != NULL, "out is NULL");
    *out = NULL;
    if (buf_size > CORIO__STREAM_MAX_BUF)
        return -EINVAL; /* before waiting for a connection, not after */
    struct afs_file *f;
    int err = afs_accept(l, NULL, NULL, &f);
    if (err < 0)
        return err;
    set_nodelay(f);
    if ((err = corio_stream_new(f, buf_size, out)) < 0)
        afs_close(f);
    return err;
}

int corio_net_port(struct afs_file *s)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(NET_FD(s), (struct sockaddr *)&ss, &len) < 0)
        return net_errno();
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -EAFNOSUPPORT;
}
