/* afs_sendfile / afs_queue_sendfile on the backend under test: a file sent byte for byte to a
 * socketpair and to a TCP peer (several pipe pieces, offsets, lengths past the end of the
 * file), a peer that goes away mid-transfer (-EPIPE / -ECONNRESET, the process alive with
 * SIGPIPE's default action), afs_cancel and a corio deadline of a sendfile to a peer that
 * does not read, and the argument errors; on Linux the same of a source that refuses
 * splices and sendfile(2) (read and send from there on). The sendfile_poll suite runs the
 * readiness engine with poll(), sendfile_engine runs io_uring contexts through the engine
 * (sendfile(2) instead of splices), sendfile_rw and sendfile_rw_kqueue read the source and
 * send it (as FreeBSD and macOS always do). Windows runs the same tests on each backend
 * (TransmitFile on the context's completion port), but for the descriptor count and SIGPIPE
 * (none there). */
#include "../common.h"

#include "internal.h" /* afs__uring_no_sock, afs__ready_poll_only */
#include "sock_flavours.h"

#include <corio.h>
#if defined(__linux__) && defined(AFS_HAVE_URING)
#include <liburing.h> /* the fault injection's SQEs */
#endif

#ifdef _WIN32
typedef SOCKET t_sock_t;
#else
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
typedef int t_sock_t;
#ifdef __linux__
#include <sys/sendfile.h>
#endif
#endif

#ifdef _WIN32
#define T_SF(name) T_FLAVOURS(sendfile, name, 120)
#else
/* The readiness engine reading the source and sending it instead of calling sendfile(2), as
 * on FreeBSD and macOS, on every backend (io_uring through the engine): with its own
 * flavour (epoll on Linux), and with the kqueue flavour. */
static inline void s_setup_rw(void)
{
    s_setup();
    NO_URING_SOCK();
    afs__sendfile_rw = true;
}

static inline void s_setup_rw_kqueue(void)
{
    s_setup_kqueue();
    afs__sendfile_rw = true;
}

/* A test run as is, with the engine's poll() and kqueue flavours, on io_uring through the
 * engine, and by read and send (sendfile_rw, sendfile_rw_kqueue). */
#define T_SF(name)                                                                            \
    static void name##_body(void);                                                            \
    Test(sendfile_rw, name, .init = s_setup_rw, .fini = t_teardown, .timeout = 120)           \
    {                                                                                         \
        name##_body();                                                                        \
    }                                                                                         \
    Test(sendfile_rw_kqueue, name, .init = s_setup_rw_kqueue, .fini = t_teardown,             \
         .timeout = 120)                                                                      \
    {                                                                                         \
        name##_body();                                                                        \
    }                                                                                         \
    T_FLAVOURS(sendfile, name, 120)
#endif

/* More than one 1 MiB pipe piece, and a last piece that is not a multiple of a page. */
#define FSIZE ((size_t)(2 << 20) + 12345)

static struct afs_file *open_src(struct afs_ctx *ctx, size_t size)
{
    t_make_file(t_path("src"), size);
    struct afs_file *f;
    int err = afs_open(ctx, t_path("src"), AFS_RDONLY, 0, AFS_MODE_ASYNC, &f);
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    return f;
}

/* The file src of `size` bytes opened for direct I/O (the test skips where the file system
 * refuses it). */
static struct afs_file *open_direct(struct afs_ctx *ctx, size_t size)
{
    t_make_file(t_path("src"), size);
    struct afs_file *f;
    int err = afs_open(ctx, t_path("src"), AFS_RDONLY | AFS_DIRECT, 0, AFS_MODE_ASYNC, &f);
    if (err == -EINVAL)
        cr_skip_test("the file system under %s refuses O_DIRECT", t_dir);
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    return f;
}

/* A connected pair over loopback TCP. */
static void tcp_pair(struct afs_ctx *ctx, struct afs_file **c, struct afs_file **s)
{
    struct afs_file *l;
    cr_assert_eq(afs_socket(ctx, AF_INET, SOCK_STREAM, 0, &l), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t_sock_t fd = (t_sock_t)afs_file_fd(l);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(fd, 8), 0);
    socklen_t len = sizeof sa;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    cr_assert_eq(afs_socket(ctx, AF_INET, SOCK_STREAM, 0, c), 0);
    cr_assert_eq(afs_connect(*c, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(afs_accept(l, NULL, NULL, s), 0);
    cr_assert_eq(afs_close(l), 0);
}

/* Queues a sendfile of [off, off + len) of f on a while b receives with blocking calls (they
 * drive the context); checks the op's result is `expect` and the bytes are the pattern's
 * (t_check) from pat on. Then a's sending side is shut: b must see the end of the stream
 * with nothing more. */
static void send_check_pat(struct afs_ctx *ctx, struct afs_file *a, struct afs_file *b,
                           struct afs_file *f, uint64_t off, uint64_t pat, size_t len,
                           size_t expect)
{
    struct afs_op op;
    memset(&op, 0, sizeof op); /* stack memory an earlier op's magic survived in */
    struct cb_log lg = {0};
    int err = afs_queue_sendfile(&op, a, f, off, len, log_cb, &lg);
    cr_assert_eq(err, 0, "afs_queue_sendfile [%llu, +%zu): %s", (unsigned long long)off, len,
                 afs_strerror(err));
    static char buf[65536];
    size_t got = 0;
    while (got < expect) {
        ssize_t r = afs_recv(b, buf, sizeof buf, 0);
        cr_assert(r > 0, "afs_recv after %zu of %zu bytes: %zd", got, expect, r);
        cr_assert_leq(got + (size_t)r, expect, "more bytes than the file has there");
        cr_assert(t_check(buf, (size_t)r, pat + got), "bytes %zu.. are not the file's", got);
        got += (size_t)r;
    }
    wait_cb(ctx, &lg);
    cr_assert_eq(lg.result, (ssize_t)expect, "sendfile [%llu, +%zu): %zd (%s)",
                 (unsigned long long)off, len, lg.result,
                 lg.result < 0 ? afs_strerror((int)lg.result) : "bytes");
    cr_assert_eq(afs_shutdown(a, SHUT_WR), 0);
    cr_assert_eq(afs_recv(b, buf, sizeof buf, 0), 0, "bytes after the file's");
}

/* send_check_pat() of a file made by t_make_file() (the pattern from its offset 0). */
static void send_check(struct afs_ctx *ctx, struct afs_file *a, struct afs_file *b,
                       struct afs_file *f, uint64_t off, size_t len, size_t expect)
{
    send_check_pat(ctx, a, b, f, off, off, len, expect);
}

/* send_check() on a fresh socketpair, closed after. */
static void pair_check(struct afs_ctx *ctx, struct afs_file *f, uint64_t off, size_t len,
                       size_t expect)
{
    struct afs_file *p[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    send_check(ctx, p[0], p[1], f, off, len, expect);
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(p[1]), 0);
}

T_SF(socketpair_byte_exact)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_src(ctx, FSIZE);
    pair_check(ctx, f, 0, FSIZE, FSIZE);
    cr_assert_eq(afs_close(f), 0);
}

#ifndef _WIN32
/* No descriptor left (RLIMIT_NOFILE reached): the io_uring backend gets no pipe for its
 * splices and reads and sends instead, as the others' sendfile(2) needs none; every byte
 * arrives. */
T_SF(no_descriptor_left_for_a_pipe)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_src(ctx, FSIZE);
    struct afs_file *p[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    struct rlimit old, lim;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    int next = dup(0); /* the lowest free descriptor: the limit makes it the last */
    cr_assert_geq(next, 0);
    close(next);
    lim = old;
    lim.rlim_cur = (rlim_t)next;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
    cr_assert_lt(dup(0), 0, "a descriptor was still free");
    send_check(ctx, p[0], p[1], f, 0, FSIZE, FSIZE);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    cr_assert_eq(afs_close(f), 0);
}
#endif

#ifdef __linux__
/* Fault injection: from the nth on (counted from 1 over the test), every splice of a regular
 * file to a pipe that io_uring is given (an SQE with a splice flag no kernel knows: the
 * kernel's -EINVAL at its start) and every sendfile(2)
 * from one (the readiness engine's, through afs__sys) are refused as the kernel refuses a
 * source without splice. */
static struct afs__syscalls ns_saved;
static int                  ns_from, ns_seen;

static bool ns_refuse(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ++ns_seen >= ns_from;
}

#ifdef AFS_HAVE_URING
static int ns_enter(struct io_uring *ring, unsigned wait_nr, struct __kernel_timespec *ts)
{
    struct io_uring_sq *sq = &ring->sq;
    for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
        struct io_uring_sqe *sqe = &sq->sqes[i & *sq->kring_mask];
        if (sqe->opcode == IORING_OP_SPLICE && !(sqe->splice_flags & SPLICE_F_FD_IN_FIXED) &&
            ns_refuse(sqe->splice_fd_in))
            sqe->splice_flags |= 1u << 30;
    }
    return ns_saved.uring_enter ? ns_saved.uring_enter(ring, wait_nr, ts)
                                : afs__uring_enter_real(ring, wait_nr, ts);
}
#endif

static ssize_t ns_sendfile(int out_fd, int in_fd, uint64_t off, size_t len)
{
    return ns_refuse(in_fd) ? -EINVAL : ns_saved.sendfile(out_fd, in_fd, off, len);
}

static void ns_install(int from)
{
    ns_saved = afs__sys;
    ns_from = from;
    ns_seen = 0;
#ifdef AFS_HAVE_URING
    afs__sys.uring_enter = ns_enter;
#endif
    afs__sys.sendfile = ns_sendfile;
}

/* Whether the refusals reached the library (not by read and send from the start). */
static void ns_uninstall(void)
{
    afs__sys = ns_saved;
    cr_assert(afs__sendfile_rw || ns_seen >= ns_from, "%d refusals asked for, %d made",
              ns_from, ns_seen);
}
#endif

#ifndef _WIN32
/* Closes the pair and the file, frees the test's own context. */
static void free_all(struct afs_ctx *ctx, struct afs_file *p[2], struct afs_file *f)
{
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    cr_assert_eq(afs_close(f), 0);
    afs_ctx_free(ctx);
    t_ctx = NULL;
}
#endif

/* Contexts with queue_depth 1 and 2: on io_uring the ring is then too small for a read
 * linked to its send and the waker's read, and they go in turn; every byte arrives. (The
 * pieces fit in the socket's buffer: with one op in flight the receive waits for the
 * sendfile.) */
#ifndef _WIN32 /* a ring's size is io_uring's; a loopback TCP pair's buffer may be smaller */
T_SF(small_queue_depths)
{
    for (unsigned qd = 1; qd <= 2; qd++) {
        struct afs_config cfg;
        afs_config_default(&cfg);
        cfg.queue_depth = qd;
        struct afs_ctx *ctx = t_ctx = t_ctx_cfg(&cfg);
        struct afs_file *f = open_src(ctx, FSIZE);
        struct afs_file *p[2];
        cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
        send_check(ctx, p[0], p[1], f, 0, 100000, 100000);
        send_check(ctx, p[1], p[0], f, 4097, 100000, 100000);
        /* Read and send (where the file system has direct I/O): the read and the send in
         * turn, as the splices. */
        struct afs_file *d;
        if (afs_open(ctx, t_path("src"), AFS_RDONLY | AFS_DIRECT, 0, AFS_MODE_ASYNC, &d) == 0) {
            pair_check(ctx, d, 1, 100000, 100000);
            cr_assert_eq(afs_close(d), 0);
        }
#ifdef __linux__
        /* A source that refuses splices (the fault injection above): the refused file
         * splice alone, then the reads and sends in turn. */
        ns_install(1);
        pair_check(ctx, f, 0, 100000, 100000);
        pair_check(ctx, f, 4097, 100000, 100000);
        ns_uninstall();
#endif
        free_all(ctx, p, f);
    }
}
#endif

#ifndef _WIN32
/* A socket that still takes bytes while poll() calls it full (a Unix socket's buffer counts
 * each small message's overhead: POLLOUT only while under a quarter of it is used, a send
 * until all of it is), its peer reading nothing yet: a sendfile of a few bytes completes as
 * a send would, on rings of every size, and the bytes arrive after the ones before. */
T_SF(socket_taking_bytes_poll_calls_full)
{
    for (unsigned qd = 1; qd <= 64; qd *= 8) {
        struct afs_config cfg;
        afs_config_default(&cfg);
        cfg.queue_depth = qd;
        struct afs_ctx *ctx = t_ctx = t_ctx_cfg(&cfg);
        struct afs_file *f = open_src(ctx, 4096);
        struct afs_file *p[2];
        cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
        t_sock_t fd = (t_sock_t)afs_file_fd(p[0]);
        size_t before = 0;
        for (;;) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            cr_assert_geq(poll(&pf, 1, 0), 0);
            if (!(pf.revents & POLLOUT))
                break;
            ssize_t r = send(fd, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
            if ((r < 0 && errno == EAGAIN) || before > 100000)
                cr_skip_test("this system's poll() calls a socket full only when it is");
            cr_assert_eq(r, 1, "send: %s", strerror(errno));
            before++;
        }
        struct afs_op op;
        memset(&op, 0, sizeof op);
        struct cb_log lg = {0};
        cr_assert_eq(afs_queue_sendfile(&op, p[0], f, 100, 4, log_cb, &lg), 0);
        for (int i = 0; i < 100 && !lg.calls; i++)
            cr_assert_geq(afs_ctx_wait(ctx, 1, 20LL * 1000 * 1000), 0);
        if (!lg.calls) {
            cr_assert_eq(afs_cancel(&op), 0);
            wait_cb(ctx, &lg);
            cr_assert_fail("queue_depth %u: a sendfile of 4 bytes waited 2 s on a socket that "
                           "takes them (%zu bytes before it), then gave %zd",
                           qd, before, lg.result);
        }
        cr_assert_eq(lg.result, 4, "queue_depth %u: %zd", qd, lg.result);
        char buf[4];
        for (size_t i = 0; i < before; i++) {
            cr_assert_eq(recv((t_sock_t)afs_file_fd(p[1]), buf, 1, MSG_DONTWAIT), 1);
            cr_assert_eq(buf[0], 'x');
        }
        cr_assert_eq(recv((t_sock_t)afs_file_fd(p[1]), buf, 4, MSG_WAITALL), 4);
        cr_assert(t_check(buf, 4, 100), "the file's bytes 100..103 are not what arrived");
        free_all(ctx, p, f);
    }
}
#endif

/* Offsets inside a page, lengths past the end (the rest of the file), offsets at and past
 * the end (0), over TCP; each on a fresh connection. */
T_SF(tcp_offsets_and_lengths_past_eof)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_src(ctx, FSIZE);
    struct {
        uint64_t off;
        size_t   len, expect;
    } cases[] = {
        {0, FSIZE, FSIZE},
        {4095, 100000, 100000},
        {1, (size_t)(1 << 20), (size_t)(1 << 20)},
        {FSIZE - 10, 1000, 10},
        {12345, (size_t)64 << 20, FSIZE - 12345},
        {FSIZE, 4096, 0},
        {(uint64_t)FSIZE + 4096, 4096, 0},
#ifdef __linux__
        /* Past the largest offset of most file systems (ext4: 16 TiB), where sendfile(2)
         * says EOVERFLOW and a read or a splice finds the end. */
        {(uint64_t)1 << 62, 4096, 0},
#endif
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct afs_file *c, *s;
        tcp_pair(ctx, &c, &s);
        send_check(ctx, s, c, f, cases[i].off, cases[i].len, cases[i].expect);
        cr_assert_eq(afs_close(c), 0);
        cr_assert_eq(afs_close(s), 0);
    }
    cr_assert_eq(afs_close(f), 0);
}

/* The blocking form, twice in a row on one connection (the context's pipe is reused), with
 * a plain send between: the stream is the three in order. Outside a task the receiver is a
 * plain thread. */
struct reader {
    t_sock_t fd;
    size_t want, got;
    int    bad;
};

static void *reader_fn(void *arg)
{
    struct reader *r = arg;
    static char buf[65536];
    uint64_t at = 0;
    while (r->got < r->want) {
        ssize_t n = recv(r->fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        /* 5 bytes "hello" after the first 100000 file bytes, then the file from 0 again. */
        for (ssize_t i = 0; i < n; i++, at++) {
            unsigned char c = (unsigned char)buf[i];
            if (at < 100000)
                r->bad |= !t_check(&c, 1, at);
            else if (at < 100005)
                r->bad |= c != (unsigned char)"hello"[at - 100000];
            else
                r->bad |= !t_check(&c, 1, at - 100005);
        }
        r->got += (size_t)n;
    }
    return NULL;
}

T_SF(blocking_calls_in_order)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_src(ctx, FSIZE);
    struct afs_file *p[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    struct reader r = {.fd = (t_sock_t)afs_file_fd(p[1]), .want = 100000 + 5 + FSIZE};
#ifndef _WIN32 /* Windows sockets stay in blocking mode */
    /* The reader's descriptor may be the engine's non-blocking one: make it wait. */
    int fl = fcntl(r.fd, F_GETFL);
    cr_assert_eq(fcntl(r.fd, F_SETFL, fl & ~O_NONBLOCK), 0);
#endif
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, reader_fn, &r), 0);
    cr_assert_eq(afs_sendfile(p[0], f, 0, 100000), 100000);
    cr_assert_eq(afs_send(p[0], "hello", 5, 0), 5);
    cr_assert_eq(afs_sendfile(p[0], f, 0, FSIZE), (ssize_t)FSIZE);
    cr_assert_eq(afs_sendfile(p[0], f, 0, 0), 0);
    pthread_join(th, NULL);
    cr_assert_eq(r.got, r.want);
    cr_assert_eq(r.bad, 0, "the stream is not file, hello, file");
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    cr_assert_eq(afs_close(f), 0);
}

#ifdef _WIN32
/* Wine's emulation, not Windows: a few behaviours differ (see where this is asked). */
static bool t_under_wine(void)
{
    HMODULE nt = GetModuleHandleA("ntdll.dll");
    return nt && GetProcAddress(nt, "wine_get_version") != NULL;
}
#endif

/* From an op's callback the blocking form runs inline (the context cannot be driven there):
 * the bytes still come in order after what the op sent. */
struct inline_sf {
    struct afs_file *s, *f;
    ssize_t          r;
    int              calls;
};

static void send_then_sendfile(struct afs_op *op)
{
    struct inline_sf *x = op->data;
    x->calls++;
    x->r = op->result < 0 ? op->result : afs_sendfile(x->s, x->f, 10, 50000);
}

T_SF(from_a_callback)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_src(ctx, FSIZE);
    struct afs_file *p[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    struct inline_sf x = {.s = p[0], .f = f};
    struct afs_op op;
    memset(&op, 0, sizeof op); /* stack memory an earlier op's magic survived in */
    cr_assert_eq(afs_queue_send(&op, p[0], "abc", 3, 0, send_then_sendfile, &x), 0);
    for (int i = 0; i < 300 && x.calls == 0; i++) /* a guard against a hang, not a bound */
        cr_assert_geq(afs_ctx_wait(ctx, 1, 100LL * 1000 * 1000), 0);
    cr_assert_eq(x.calls, 1);
    cr_assert_eq(x.r, 50000, "sendfile from a callback: %zd", x.r);
    static char buf[65536];
    size_t got = 0;
    while (got < 3 + 50000) {
        ssize_t r = afs_recv(p[1], buf, sizeof buf, 0);
        cr_assert(r > 0, "afs_recv after %zu bytes: %zd", got, r);
        for (ssize_t i = 0; i < r; i++, got++) {
            unsigned char c = (unsigned char)buf[i];
            if (got < 3)
                cr_assert_eq(c, (unsigned char)"abc"[got]);
            else
                cr_assert(t_check(&c, 1, 10 + got - 3), "byte %zu is not the file's", got);
        }
    }
    cr_assert_eq(got, (size_t)3 + 50000);
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    cr_assert_eq(afs_close(f), 0);
}

/* A peer that has gone: -EPIPE or -ECONNRESET, never a SIGPIPE (its default action, set in
 * the set-up, would kill the test). A socketpair whose other end is closed before. */
T_SF(peer_gone)
{
#ifdef _WIN32
    /* Wine 8: the TransmitFile waits for room once its first send filled the buffer, and
     * the reset that comes then never wakes it (a WSASend there gets WSAECONNRESET). */
    if (t_under_wine())
        cr_skip_test("wine: a TransmitFile to a peer that closed before never ends");
#endif
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_src(ctx, FSIZE);
    struct afs_file *p[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    ssize_t r = afs_sendfile(p[0], f, 0, FSIZE);
    cr_assert(r == -EPIPE || r == -ECONNRESET, "sendfile to a closed peer: %zd (%s)", r,
              r < 0 ? afs_strerror((int)r) : "bytes");
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(f), 0);
}

/* A TCP peer that closes with unread data (a reset) during a transfer larger than the
 * buffers: -EPIPE or -ECONNRESET, never a SIGPIPE. */
T_SF(peer_reset_during_the_transfer)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_src(ctx, FSIZE);
    ssize_t r;
    struct afs_file *c, *s;
    tcp_pair(ctx, &c, &s);
    struct afs_op op;
    memset(&op, 0, sizeof op); /* stack memory an earlier op's magic survived in */
    struct cb_log lg = {0};
    cr_assert_eq(afs_queue_sendfile(&op, s, f, 0, FSIZE, log_cb, &lg), 0);
    char buf[1000];
    cr_assert_gt(afs_recv(c, buf, sizeof buf, 0), 0);
    cr_assert_eq(afs_close(c), 0); /* unread data: the kernel resets the connection */
    wait_cb(ctx, &lg);
    /* The buffers may have taken all of it before the reset came: then the next one fails. */
    bool later = lg.result == (ssize_t)FSIZE;
    r = later ? afs_sendfile(s, f, 0, FSIZE) : lg.result;
    if (r == (ssize_t)FSIZE)
        r = afs_sendfile(s, f, 0, FSIZE);
    bool gone = r == -EPIPE || r == -ECONNRESET;
#ifdef _WIN32
    /* Wine: a send on a connection whose reset it has seen says WSAENOTCONN (Windows:
     * WSAECONNRESET). */
    gone = gone || (later && r == -ENOTCONN && t_under_wine());
#endif
    cr_assert(gone, "sendfile to a reset peer: %zd (%s)", r,
              r < 0 ? afs_strerror((int)r) : "bytes");
    cr_assert_eq(afs_close(s), 0);
    cr_assert_eq(afs_close(f), 0);
}

/* afs_cancel of a sendfile of [off, off + len) of f stuck on a peer (p[1]) that does not
 * read: the callback comes with -ECANCELED or the bytes that left (fewer than asked), its
 * result. */
static ssize_t cancel_stuck(struct afs_ctx *ctx, struct afs_file *p[2], struct afs_file *f,
                            uint64_t off, size_t len)
{
    struct afs_op op;
    memset(&op, 0, sizeof op); /* stack memory an earlier op's magic survived in */
    struct cb_log lg = {0};
    cr_assert_eq(afs_queue_sendfile(&op, p[0], f, off, len, log_cb, &lg), 0);
    cr_assert_eq(afs_queue_sendfile(&op, p[0], f, off, len, log_cb, &lg), -EBUSY);
    for (int i = 0; i < 5; i++)
        cr_assert_geq(afs_ctx_wait(ctx, 1, 20LL * 1000 * 1000), 0);
    cr_assert_eq(lg.calls, 0, "%zu bytes went to a peer that reads nothing", len);
    cr_assert_eq(afs_cancel(&op), 0);
    wait_cb(ctx, &lg);
    cr_assert(lg.result == -ECANCELED || (lg.result > 0 && lg.result < (ssize_t)len),
              "cancelled sendfile: %zd (%s)", lg.result,
              lg.result < 0 ? afs_strerror((int)lg.result) : "bytes");
    return lg.result;
}

#ifndef _WIN32
/* The bytes still waiting in the socket b (without waiting), checked against the file's
 * from off on. */
static size_t drain(struct afs_file *b, uint64_t off)
{
    static char buf[65536];
    size_t got = 0;
    for (;;) {
        ssize_t r = recv((t_sock_t)afs_file_fd(b), buf, sizeof buf, MSG_DONTWAIT);
        if (r <= 0)
            return got;
        cr_assert(t_check(buf, (size_t)r, off + got), "bytes %zu.. are not the file's", got);
        got += (size_t)r;
    }
}

#endif

/* cancel_stuck() from the file (or, direct, from offset 1 of it opened for direct I/O: read
 * and send); the peer then holds exactly the bytes reported, the file's, and no more once
 * the context ran on (nothing sent after the op completed; not checked on Windows);
 * afs_close of the socket does not hang. */
static void cancel_body(bool direct)
{
    struct afs_ctx *ctx = t_new_ctx();
    size_t size = (size_t)16 << 20;
    struct afs_file *f = direct ? open_direct(ctx, size) : open_src(ctx, size);
    struct afs_file *p[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    uint64_t off = direct ? 1 : 0;
    ssize_t r = cancel_stuck(ctx, p, f, off, size - off);
#ifndef _WIN32
    size_t sent = r > 0 ? (size_t)r : 0;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 3; i++)
            cr_assert_geq(afs_ctx_wait(ctx, 0, 10LL * 1000 * 1000), 0);
        size_t got = drain(p[1], off + (round ? sent : 0));
        cr_assert_eq(got, round ? 0 : sent, "the peer got %zu bytes, the op reported %zu%s",
                     got, sent, round ? " (bytes sent after the op completed)" : "");
    }
#else
    (void)r;
#endif
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    cr_assert_eq(afs_close(f), 0);
}

T_SF(cancel_when_the_peer_does_not_read)
{
    cancel_body(false);
}

static int count_fds(void)
{
#ifdef _WIN32
    return 0; /* the process's handles: the system keeps some of its own a while */
#else
    int n = 0;
    for (int fd = 0; fd < 4096; fd++)
        n += fcntl(fd, F_GETFD) >= 0;
    return n;
#endif
}

/* Sendfiles of f cancelled at every stage, and sockets closed under them: no descriptor
 * stays behind (a pipe left holding bytes is closed; at most one empty one is kept). On
 * Windows the stages only (no count). */
static void cancel_at_every_stage(struct afs_ctx *ctx, struct afs_file *f, size_t size)
{
    int before = count_fds();
    for (int i = 0; i < 60; i++) {
        struct afs_file *p[2];
        cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
        struct afs_op op;
        memset(&op, 0, sizeof op); /* stack memory an earlier op's magic survived in */
        struct cb_log lg = {0};
        cr_assert_eq(afs_queue_sendfile(&op, p[0], f, (uint64_t)i, size, log_cb, &lg), 0);
        for (int k = 0; k < i % 4; k++)
            cr_assert_geq(afs_ctx_wait(ctx, 0, (i % 3) * 1000000LL), 0);
        if (i % 5 == 4) {
            cr_assert_eq(afs_close(p[0]), 0); /* cancels it, and waits */
            cr_assert_eq(lg.calls, 1);
        } else {
            cr_assert_eq(afs_cancel(&op), 0);
            wait_cb(ctx, &lg);
            cr_assert_eq(afs_close(p[0]), 0);
        }
        cr_assert_eq(lg.calls, 1);
        cr_assert(lg.result == -ECANCELED || lg.result == -EPIPE || lg.result == -ECONNRESET ||
                      (lg.result >= 0 && lg.result < (ssize_t)size),
                  "round %d: %zd", i, lg.result);
        cr_assert_eq(afs_close(p[1]), 0);
    }
    int after = count_fds();
    cr_assert_leq(after, before + 2, "%d descriptors before, %d after", before, after);
}

T_SF(no_descriptor_leak)
{
    struct afs_ctx *ctx = t_new_ctx();
    size_t size = (size_t)4 << 20;
    struct afs_file *f = open_src(ctx, size);
    cancel_at_every_stage(ctx, f, size);
    cr_assert_eq(afs_close(f), 0);
}

#ifndef _WIN32
/* A burst of sendfiles in flight at once (io_uring: a pipe each), twice: the second reuses
 * the first one's pipes. Then the context waits, idle: the spare pipes are closed during that
 * one wait (within two seconds), and the descriptors are back to their count before the
 * bursts. */
Test(sendfile, spare_pipes_close_after_a_burst, .init = s_setup, .fini = t_teardown,
     .timeout = 120)
{
    struct afs_ctx *ctx = t_new_ctx();
    size_t size = (size_t)64 << 10; /* the socket's buffer takes it: nobody has to read */
    struct afs_file *f = open_src(ctx, size);
    enum { CONNS = 32 };
    static struct afs_file *p[CONNS][2];
    static struct afs_op op[CONNS];
    static struct cb_log lg[CONNS];
    /* What the context makes once, at its first socket op (the readiness engine's). */
    char c;
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p[0]), 0);
    cr_assert_eq(afs_send(p[0][0], "x", 1, 0), 1);
    cr_assert_eq(afs_recv(p[0][1], &c, 1, 0), 1);
    cr_assert_eq(afs_close(p[0][0]), 0);
    cr_assert_eq(afs_close(p[0][1]), 0);
    int before = count_fds(), peak = 0;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < CONNS; i++) {
            cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p[i]), 0);
            memset(&op[i], 0, sizeof op[i]);
            lg[i] = (struct cb_log){0};
            cr_assert_eq(afs_queue_sendfile(&op[i], p[i][0], f, 0, size, log_cb, &lg[i]), 0);
        }
        for (int i = 0; i < CONNS; i++) {
            wait_cb(ctx, &lg[i]);
            cr_assert_eq(lg[i].result, (ssize_t)size, "sendfile %d: %zd", i, lg[i].result);
        }
        int n = count_fds();
        if (round == 0)
            peak = n;
        else
            cr_assert_leq(n, peak, "the second burst made pipes: %d descriptors, %d after "
                          "the first", n, peak);
        for (int i = 0; i < CONNS; i++) {
            cr_assert_eq(afs_close(p[i][0]), 0);
            cr_assert_eq(afs_close(p[i][1]), 0);
        }
    }
    cr_assert_geq(afs_ctx_wait(ctx, 1, 3500LL * 1000 * 1000), 0);
    int after = count_fds();
    cr_assert_leq(after, before, "%d descriptors before the bursts, %d after an idle wait "
                  "(%d during)", before, after, peak);
    cr_assert_eq(afs_close(f), 0);
}
#endif

struct stuck {
    struct afs_file *s, *f;
    uint64_t         off;
    size_t           size;
    ssize_t          r;
};

static void stuck_task(struct corio_task *t, void *arg)
{
    struct stuck *st = arg;
    corio_set_deadline(t, corio_now() + 100 * 1000000LL);
    st->r = afs_sendfile(st->s, st->f, st->off, st->size);
}

/* A corio deadline reaches a sendfile in a task to a peer that does not read (from the file,
 * or, direct, from offset 4095 of it opened for direct I/O: read and send): -ETIMEDOUT, or
 * the bytes that left, those the peer holds (not checked on Windows). */
static void deadline_body(bool direct)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct stuck st = {.off = direct ? 4095 : 0, .size = (size_t)16 << 20};
    st.f = direct ? open_direct(ctx, st.size + 4095) : open_src(ctx, st.size);
    struct afs_file *p[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    st.s = p[0];
    s_run_on(ctx, stuck_task, &st);
    cr_assert(st.r == -ETIMEDOUT || (st.r > 0 && st.r < (ssize_t)st.size),
              "sendfile under a deadline: %zd (%s)", st.r,
              st.r < 0 ? afs_strerror((int)st.r) : "bytes");
#ifndef _WIN32
    cr_assert_eq(drain(p[1], st.off), st.r > 0 ? (size_t)st.r : 0);
#endif
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    cr_assert_eq(afs_close(st.f), 0);
}

T_SF(deadline_in_a_task)
{
    deadline_body(false);
}

#ifndef _WIN32 /* TransmitFile from an unbuffered handle: not covered yet */
/* A source opened for direct I/O, aligned, and from offsets and to ends that are not
 * (sendfile(2) and splices refuse those): the bytes are the file's (the pieces read and
 * sent, read at the file's alignment). */
T_SF(direct_source_unaligned)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_direct(ctx, FSIZE);
    pair_check(ctx, f, 4096, (size_t)1 << 20, (size_t)1 << 20); /* aligned (spliced) */
    pair_check(ctx, f, 1, 300000, 300000);
    pair_check(ctx, f, FSIZE - 5000, 4097, 4097);
    pair_check(ctx, f, 8192, FSIZE, FSIZE - 8192);
    cr_assert_eq(afs_close(f), 0);
}

static uint64_t pool_ops(struct afs_ctx *ctx)
{
    struct afs_stats st;
    afs_ctx_stats(ctx, &st);
    return st.pool_ops;
}

/* An unaligned direct I/O source is read and sent by the context itself: on io_uring each
 * step an SQE of the op, elsewhere the readiness engine's; no pool thread ever runs it. */
T_SF(direct_source_unaligned_no_pool_thread)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_direct(ctx, FSIZE);
    struct afs_file *p[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    uint64_t before = pool_ops(ctx);
    send_check(ctx, p[0], p[1], f, 3, FSIZE, FSIZE - 3);
    cr_assert_eq(pool_ops(ctx), before, "%llu ops went to the thread pool",
                 (unsigned long long)(pool_ops(ctx) - before));
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    cr_assert_eq(afs_close(f), 0);
}

/* cancel_body() by read and send from an unaligned direct I/O source. */
T_SF(direct_source_unaligned_cancel)
{
    cancel_body(true);
}

/* cancel_at_every_stage() by read and send, from unaligned offsets of a direct I/O source
 * (offset 0: spliced): a cancel that comes while a round's read or send is in the kernel's
 * hands, or between two rounds, completes the op once (its callback once, its result
 * -ECANCELED or the bytes sent), after the round's completions came. */
T_SF(direct_source_unaligned_cancel_at_every_stage)
{
    struct afs_ctx *ctx = t_new_ctx();
    size_t size = (size_t)4 << 20;
    struct afs_file *f = open_direct(ctx, size + 64);
    cancel_at_every_stage(ctx, f, size);
    cr_assert_eq(afs_close(f), 0);
}

/* A corio deadline reaches a read and send of an unaligned direct I/O source to a peer that
 * does not read: -ETIMEDOUT, or the bytes that left. */
T_SF(direct_source_unaligned_deadline)
{
    deadline_body(true);
}

/* A peer that closes, before and during a sendfile of f (of `size` bytes) from offset 5:
 * -EPIPE or -ECONNRESET, never a SIGPIPE. */
static void peer_gone_from(struct afs_ctx *ctx, struct afs_file *f, size_t size)
{
    struct afs_file *p[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    ssize_t r = afs_sendfile(p[0], f, 5, size - 5);
    cr_assert(r == -EPIPE || r == -ECONNRESET, "sendfile to a closed peer: %zd (%s)", r,
              r < 0 ? afs_strerror((int)r) : "bytes");
    cr_assert_eq(afs_close(p[0]), 0);
    struct afs_file *c, *s;
    tcp_pair(ctx, &c, &s);
    struct afs_op op;
    memset(&op, 0, sizeof op); /* stack memory an earlier op's magic survived in */
    struct cb_log lg = {0};
    cr_assert_eq(afs_queue_sendfile(&op, s, f, 5, size - 5, log_cb, &lg), 0);
    char buf[1000];
    cr_assert_gt(afs_recv(c, buf, sizeof buf, 0), 0);
    cr_assert_eq(afs_close(c), 0); /* unread data: the kernel resets the connection */
    wait_cb(ctx, &lg);
    cr_assert(lg.result == -EPIPE || lg.result == -ECONNRESET,
              "sendfile to a reset peer: %zd (%s)", lg.result,
              lg.result < 0 ? afs_strerror((int)lg.result) : "bytes");
    cr_assert_eq(afs_close(s), 0);
}

/* peer_gone_from() by read and send, from an unaligned direct I/O source. */
T_SF(direct_source_unaligned_peer_gone)
{
    struct afs_ctx *ctx = t_new_ctx();
    size_t size = (size_t)16 << 20;
    struct afs_file *f = open_direct(ctx, size);
    peer_gone_from(ctx, f, size);
    cr_assert_eq(afs_close(f), 0);
}

#ifdef __linux__
/* A source the kernel will not splice from (a file without splice_read: most of /proc, some
 * FUSE and network file systems): splice(2) and sendfile(2) say EINVAL, and the op reads
 * and sends instead, on every backend. A real one where the kernel has it (the process's
 * own memory through /proc/self/mem), else the refusal made by the fault injection
 * (ns_install). */

/* len bytes of memory mapped below 2 GiB, or NULL: /proc's files have offsets up to
 * 2 GiB - 1 for sendfile(2) (beyond: EOVERFLOW), and /proc/self/mem's offsets are
 * addresses. */
static char *map_low(size_t len)
{
    const uintptr_t step = (uintptr_t)1 << 28;
    for (uintptr_t at = step; at + len < (uintptr_t)1 << 31; at += step) {
        void *m = mmap((void *)at, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (m == (void *)at)
            return m;
        if (m != MAP_FAILED)
            munmap(m, len); /* a kernel that took the address as a hint */
    }
    return NULL;
}

/* Whether the kernel refuses to splice from /proc/self/mem at buf (splice(2) says EINVAL, and
 * sendfile(2) too when asked) and reads buf's bytes there. */
static bool mem_refuses_splice(const char *buf, size_t len, bool and_sendfile)
{
    int fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    static char got[4096];
    off_t at = (off_t)(uintptr_t)buf;
    bool ok = pread(fd, got, sizeof got, at) == (ssize_t)sizeof got &&
              memcmp(got, buf, sizeof got) == 0 &&
              pread(fd, got, 1, at + (off_t)len - 1) == 1 && got[0] == buf[len - 1];
    int pfd[2], sv[2];
    if (ok && pipe(pfd) == 0) {
        loff_t from = at;
        ok = splice(fd, &from, pfd[1], NULL, 4096, SPLICE_F_NONBLOCK) < 0 && errno == EINVAL;
        close(pfd[0]);
        close(pfd[1]);
    } else {
        ok = false;
    }
    if (!and_sendfile) {
        /* no more */
    } else if (ok && socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0) {
        off_t from = at;
        ok = sendfile(sv[0], fd, &from, 4096) < 0 && errno == EINVAL;
        close(sv[0]);
        close(sv[1]);
    } else {
        ok = false;
    }
    close(fd);
    return ok;
}

/* The bytes of a source that refuses splices, from its start and from an odd offset, in
 * many pieces; all of them, nothing more, read and sent by the context itself (no pool
 * thread). */
T_SF(source_refuses_splice)
{
    struct afs_ctx *ctx = t_new_ctx();
    size_t size = (size_t)3 << 20 | 777; /* more than one 1 MiB pipe, many buffers */
    char *mem = map_low(size);
    struct afs_file *f;
    uint64_t base = 0; /* the source's offset of the pattern's byte 0 */
    if (mem)
        t_fill(mem, size, 0);
    if (mem && mem_refuses_splice(mem, size, true)) {
        int err = afs_open(ctx, "/proc/self/mem", AFS_RDONLY, 0, AFS_MODE_ASYNC, &f);
        cr_assert_eq(err, 0, "afs_open /proc/self/mem: %s", afs_strerror(err));
        base = (uint64_t)(uintptr_t)mem;
    } else {
        f = open_src(ctx, size);
        ns_install(1);
    }
    struct afs_file *p[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    uint64_t before = pool_ops(ctx);
    send_check_pat(ctx, p[0], p[1], f, base, 0, size, size);
    cr_assert_eq(pool_ops(ctx), before, "%llu ops went to the thread pool",
                 (unsigned long long)(pool_ops(ctx) - before));
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    struct afs_file *c, *s;
    tcp_pair(ctx, &c, &s);
    send_check_pat(ctx, s, c, f, base + 4097, 4097, size - 4100, size - 4100);
    cr_assert_eq(afs_close(c), 0);
    cr_assert_eq(afs_close(s), 0);
    if (!base)
        ns_uninstall();
    /* /proc/self/mem from an address past 2 GiB (where a 64-bit system maps memory by
     * default): sendfile(2) says EOVERFLOW there (past /proc's largest offset), the splice
     * EINVAL, and a read reads. */
    size_t hsize = 300000;
    char *hi = mmap(NULL, hsize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(hi, MAP_FAILED);
    t_fill(hi, hsize, 0);
    if (base && (uintptr_t)hi >= (uintptr_t)1 << 31 && mem_refuses_splice(hi, hsize, false)) {
        cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
        send_check_pat(ctx, p[0], p[1], f, (uint64_t)(uintptr_t)hi + 3, 3, hsize - 3,
                       hsize - 3);
        cr_assert_eq(afs_close(p[0]), 0);
        cr_assert_eq(afs_close(p[1]), 0);
    }
    munmap(hi, hsize);
    cr_assert_eq(afs_close(f), 0);
    if (mem)
        munmap(mem, size);
}

/* A source that splices at first and refuses later (the fault injection, from the second
 * splice or sendfile(2) on): the op goes on by read and send from where the splices left
 * it; every byte once, in order. Bad arguments are still refused before anything moves. */
T_SF(source_refuses_splice_at_a_later_piece)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_src(ctx, FSIZE);
    ns_install(2);
    pair_check(ctx, f, 0, FSIZE, FSIZE);
    pair_check(ctx, f, 5, FSIZE, FSIZE - 5);
    struct afs_file *p[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    cr_assert_eq(afs_sendfile(p[0], f, (uint64_t)INT64_MAX - 5, 10), -EINVAL);
    cr_assert_eq(afs_sendfile(p[0], f, (uint64_t)INT64_MAX + 1, 10), -EINVAL);
    cr_assert_eq(afs_sendfile(p[0], p[1], 0, 10), -ESPIPE);
    cr_assert_eq(afs_sendfile(f, f, 0, 10), -ENOTSOCK);
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    ns_uninstall();
    cr_assert_eq(afs_close(f), 0);
}

/* cancel_body(), deadline_body(), cancel_at_every_stage() (closing the socket cancels the
 * op too) and peer_gone_from() with a source that refuses every splice (the fault
 * injection): the same outcomes as a source that splices, and the peer holds exactly the
 * bytes reported. */
T_SF(source_refuses_splice_cancel)
{
    ns_install(1);
    cancel_body(false);
    ns_uninstall();
}

T_SF(source_refuses_splice_deadline)
{
    ns_install(1);
    deadline_body(false);
    ns_uninstall();
}

T_SF(source_refuses_splice_cancel_at_every_stage)
{
    struct afs_ctx *ctx = t_new_ctx();
    size_t size = (size_t)4 << 20;
    struct afs_file *f = open_src(ctx, size + 64);
    ns_install(1);
    cancel_at_every_stage(ctx, f, size);
    ns_uninstall();
    cr_assert_eq(afs_close(f), 0);
}

T_SF(source_refuses_splice_peer_gone)
{
    struct afs_ctx *ctx = t_new_ctx();
    size_t size = (size_t)16 << 20;
    struct afs_file *f = open_src(ctx, size);
    ns_install(1);
    peer_gone_from(ctx, f, size);
    ns_uninstall();
    cr_assert_eq(afs_close(f), 0);
}
#endif

/* Neither the source's position nor the socket's moves (the source's is its descriptor's:
 * a plain read of it after the transfer starts where it was put). */
T_SF(positions_untouched)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_src(ctx, FSIZE);
    int fd = (int)afs_file_fd(f);
    cr_assert_eq(lseek(fd, 777, SEEK_SET), 777);
    pair_check(ctx, f, 100, 500000, 500000);
    cr_assert_eq(lseek(fd, 0, SEEK_CUR), 777, "the source's position moved");
    cr_assert_eq(afs_close(f), 0);
}

/* Read and send only: the source is read through the library's table of system calls, in
 * pieces of at most AFS__BOUNCE_MAX bytes (the memory an op holds is bounded), each piece
 * once; a read error of the source is the sendfile's result. */
static struct afs__syscalls rw_saved;
static int                  rw_calls, rw_fail_at;
static size_t               rw_max, rw_bytes;

static ssize_t rw_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    if (++rw_calls == rw_fail_at)
        return -EIO;
    rw_max = AFS_MAX(rw_max, len);
    ssize_t r = rw_saved.pread(fd, buf, len, off);
    rw_bytes += r > 0 ? (size_t)r : 0;
    return r;
}

static void rw_spy_setup(void)
{
    s_setup_rw();
    rw_saved = afs__sys;
    afs__sys.pread = rw_pread;
}

static void rw_spy_teardown(void)
{
    afs__sys = rw_saved;
    t_teardown();
}

Test(sendfile_rw, reads_in_bounded_pieces, .init = rw_spy_setup, .fini = rw_spy_teardown,
     .timeout = 120)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_src(ctx, FSIZE);
    pair_check(ctx, f, 3, FSIZE, FSIZE - 3);
    size_t pieces = (FSIZE - 3 + AFS__BOUNCE_MAX - 1) / AFS__BOUNCE_MAX;
    cr_assert_leq(rw_max, AFS__BOUNCE_MAX, "a read of %zu bytes", rw_max);
    /* Each piece read once (and one read that finds the end, at most). */
    cr_assert_geq(rw_calls, (int)pieces);
    cr_assert_leq(rw_calls, (int)pieces + 1, "%d reads for %zu pieces", rw_calls, pieces);
    cr_assert_eq(rw_bytes, FSIZE - 3);
    /* A small one: a buffer of its size, one read. */
    rw_calls = 0;
    rw_max = 0;
    pair_check(ctx, f, 10, 4000, 4000);
    cr_assert_eq(rw_calls, 1);
    cr_assert_eq(rw_max, 4000);
    cr_assert_eq(afs_close(f), 0);
}

Test(sendfile_rw, read_error_of_the_source, .init = rw_spy_setup, .fini = rw_spy_teardown,
     .timeout = 120)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_src(ctx, FSIZE);
    struct afs_file *p[2];
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    /* The first read fails: nothing sent. */
    rw_fail_at = 1;
    cr_assert_eq(afs_sendfile(p[0], f, 0, FSIZE), -EIO);
    /* The third: two pieces left first (the op's result is the error all the same). */
    rw_calls = 0;
    rw_fail_at = 3;
    struct afs_op op;
    memset(&op, 0, sizeof op); /* stack memory an earlier op's magic survived in */
    struct cb_log lg = {0};
    cr_assert_eq(afs_queue_sendfile(&op, p[0], f, 0, FSIZE, log_cb, &lg), 0);
    static char buf[65536];
    size_t got = 0;
    while (got < 2 * AFS__BOUNCE_MAX) {
        ssize_t r = afs_recv(p[1], buf, sizeof buf, 0);
        cr_assert(r > 0, "afs_recv after %zu bytes: %zd", got, r);
        cr_assert(t_check(buf, (size_t)r, got), "bytes %zu.. are not the file's", got);
        got += (size_t)r;
    }
    wait_cb(ctx, &lg);
    cr_assert_eq(lg.result, -EIO, "sendfile with a failing read: %zd", lg.result);
    cr_assert_eq(got, 2 * AFS__BOUNCE_MAX);
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    cr_assert_eq(afs_close(f), 0);
}
#endif

/* Bad arguments: clear errors, nothing queued (no callback ever runs). */
T_SF(argument_errors)
{
    struct afs_ctx *ctx = t_new_ctx();
    struct afs_file *f = open_src(ctx, 4096);
    struct afs_file *p[2], *wo;
    cr_assert_eq(afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p), 0);
    cr_assert_eq(afs_open(ctx, t_path("wo"), AFS_WRONLY | AFS_CREAT, 0644, AFS_MODE_SYNC, &wo),
                 0);
    struct afs_op op;
    memset(&op, 0, sizeof op); /* stack memory an earlier op's magic survived in */
    afs_cb *never = (afs_cb *)abort;
    cr_assert_eq(afs_sendfile(f, f, 0, 10), -ENOTSOCK);       /* to a regular file */
    cr_assert_eq(afs_sendfile(p[0], p[1], 0, 10), -ESPIPE);   /* from a socket */
    cr_assert_eq(afs_sendfile(p[0], NULL, 0, 10), -EINVAL);
    cr_assert_eq(afs_sendfile(p[0], wo, 0, 10), -EBADF);      /* from a write-only file */
    cr_assert_eq(afs_sendfile(p[0], f, 0, (size_t)SSIZE_MAX + 1), -EINVAL);
    cr_assert_eq(afs_sendfile(p[0], f, (uint64_t)INT64_MAX + 1, 10), -EINVAL);
    cr_assert_eq(afs_sendfile(p[0], f, (uint64_t)INT64_MAX - 5, 10), -EINVAL);
    cr_assert_eq(afs_queue_sendfile(&op, f, f, 0, 10, never, NULL), -ENOTSOCK);
    cr_assert_eq(afs_queue_sendfile(&op, p[0], f, 0, 10, NULL, NULL), -EINVAL);
    cr_assert_eq(afs_queue_sendfile(NULL, p[0], f, 0, 10, never, NULL), -EINVAL);
    cr_assert_eq(afs_queue_sendfile(&op, p[0], p[1], 0, 10, never, NULL), -ESPIPE);
    for (int i = 0; i < 3; i++)
        cr_assert_geq(afs_ctx_wait(ctx, 0, 0), 0);
    /* The socket is untouched: a plain exchange still works. */
    char got[4];
    cr_assert_eq(afs_send(p[0], "abc", 3, 0), 3);
    cr_assert_eq(afs_recv(p[1], got, sizeof got, 0), 3);
    cr_assert_eq(afs_close(wo), 0);
    cr_assert_eq(afs_close(p[0]), 0);
    cr_assert_eq(afs_close(p[1]), 0);
    cr_assert_eq(afs_close(f), 0);
}
