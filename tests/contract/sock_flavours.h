/* The socket tests' set-ups and flavours, shared by test_sockets.c and test_sendfile.c:
 * s_setup (SIGPIPE's default action, so that one the library lets through kills the test;
 * Winsock started on Windows), an op callback's log (cb_log, log_cb, wait_cb), a task run
 * on a scheduler of a given context (s_run_on), and T_FLAVOURS(suite, name, ...), a test run
 * as is, with the
 * readiness engine's poll() flavour (suite_poll), with its kqueue flavour (suite_kqueue; on
 * Linux over tests/helpers/kqueue_shim.c) and on io_uring through the engine (suite_engine,
 * as on a kernel without the socket opcodes). On Windows one flavour: every
 * backend runs socket ops as overlapped calls on a port. Include after ../common.h and
 * internal.h. */
#ifndef AFS_TEST_SOCK_FLAVOURS_H
#define AFS_TEST_SOCK_FLAVOURS_H

#include <corio.h>
#ifndef _WIN32
#include <signal.h>
#endif
#ifdef __linux__
#include "../helpers/kqueue_shim.h"
#endif

static void s_setup(void)
{
    t_setup();
#ifdef _WIN32
    /* The tests make plain sockets of their own too. */
    WSADATA d;
    cr_assert_eq(WSAStartup(MAKEWORD(2, 2), &d), 0);
#else
    /* The default action: a SIGPIPE the library let through would kill the test. */
    signal(SIGPIPE, SIG_DFL);
#endif
}

/* An op's callback count and last result (op->data is a struct cb_log). */
struct cb_log {
    int     calls;
    ssize_t result;
};

static inline void log_cb(struct afs_op *op)
{
    struct cb_log *lg = op->data;
    lg->calls++;
    lg->result = op->result;
}

/* Runs ctx until lg has its callback (a guard of 30 s against a hang, not a bound). */
static inline void wait_cb(struct afs_ctx *ctx, struct cb_log *lg)
{
    for (int i = 0; i < 300 && lg->calls == 0; i++)
        cr_assert_geq(afs_ctx_wait(ctx, 1, 100LL * 1000 * 1000), 0);
    cr_assert_eq(lg->calls, 1);
}

/* Runs fn(arg) as the root task of a scheduler on ctx, to its end. */
static inline void s_run_on(struct afs_ctx *ctx, corio_fn *fn, void *arg)
{
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = ctx;
    struct corio_sched *sched;
    cr_assert_eq(corio_sched_new(&sched, &cfg), 0);
    cr_assert_eq(corio_sched_run(sched, fn, arg), 0);
    corio_sched_free(sched);
}

#ifdef _WIN32
#define T_FLAVOURS(suite, name, timeout_s)                                                    \
    Test(suite, name, .init = s_setup, .fini = t_teardown, .timeout = timeout_s)
#else
/* io_uring's own socket ops off: its sockets go through the readiness engine. */
#ifdef AFS_HAVE_URING
#define NO_URING_SOCK() (afs__uring_no_sock = true)
#else
#define NO_URING_SOCK() ((void)0)
#endif

/* The readiness engine with poll(), on every backend (io_uring too). */
static inline void s_setup_poll(void)
{
    s_setup();
    afs__ready_poll_only = true;
    NO_URING_SOCK();
}

/* The readiness engine with kqueue, on every backend (io_uring polls the kqueue): the
 * system's on FreeBSD and macOS, a stand-in over epoll on Linux. */
static inline void s_setup_kqueue(void)
{
    s_setup();
    NO_URING_SOCK();
#ifdef __linux__
    afs__sys.kq_open = kqueue_shim_open;
    afs__sys.kq_event = kqueue_shim_event;
#endif
}

/* io_uring through the readiness engine (epoll, polled from the ring). */
static inline void s_setup_engine(void)
{
    s_setup();
    NO_URING_SOCK();
    const char *b = getenv("ASYNCFS_BACKEND");
    if (!b || strcmp(b, "io_uring") != 0)
        cr_skip_test("backend under test is %s, not io_uring", b ? b : "auto");
}

#define T_FLAVOURS(suite, name, timeout_s)                                                    \
    static void name##_body(void);                                                            \
    Test(suite, name, .init = s_setup, .fini = t_teardown, .timeout = timeout_s)              \
    {                                                                                         \
        name##_body();                                                                        \
    }                                                                                         \
    Test(suite##_poll, name, .init = s_setup_poll, .fini = t_teardown, .timeout = timeout_s)  \
    {                                                                                         \
        name##_body();                                                                        \
    }                                                                                         \
    Test(suite##_kqueue, name, .init = s_setup_kqueue, .fini = t_teardown,                    \
         .timeout = timeout_s)                                                                \
    {                                                                                         \
        name##_body();                                                                        \
    }                                                                                         \
    Test(suite##_engine, name, .init = s_setup_engine, .fini = t_teardown,                    \
         .timeout = timeout_s)                                                                \
    {                                                                                         \
        name##_body();                                                                        \
    }                                                                                         \
    static void name##_body(void)
#endif

#endif
