/* A line-echo server on corio: one scheduler thread, one task per connection. Each task reads
 * a line (at most 64 KiB) and writes it back; with --raw it echoes bytes as they come instead
 * (what the echo benchmark measures, the same as its libuv and epoll servers). Every receive
 * and send of a CPU phase goes to the kernel in one submission.
 *
 *   echo_server [--raw] [--plain] [--stats] [--host H] [--port P] [--conns N]
 *               [--timeout SECONDS]
 *
 * --plain makes the accepts and receives one-shot ops (AFS_CTX_PLAIN_SOCKETS: on io_uring no
 * multishot and no buffer ring; the benchmark compares the two). --stats prints the context's
 * socket counters (afs_ctx_sock_info) to stderr every second.
 * Prints "listening on H:PORT" once ready; --port 0 (the default) picks a free port. --conns
 * N stops after N connections were served (tests); otherwise it runs until killed. A client
 * that goes away (-EPIPE, -ECONNRESET) only ends its own task. --timeout closes a
 * connection that sends nothing, or takes nothing back, for that long (default 0: never, as
 * the benchmark's libuv and epoll servers). */
#include "serve.h"

#include <corio.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct opts {
    const char     *host, *port;
    int             raw, plain, stats;
    long            conns;
    struct afs_ctx *ctx;
};

static void stats_task(struct corio_task *t, void *arg)
{
    struct opts *o = arg;
    while (corio_sleep(t, 1000000000LL) == 0) {
        struct afs_sock_info i;
        afs_ctx_sock_info(o->ctx, &i);
        fprintf(stderr,
                "sockets: %llu ring receives from %llu ring completions, %llu one-shot "
                "receives, %llu switches to one-shot, %llu arms, %llu exhausted\n",
                (unsigned long long)i.ring_recvs, (unsigned long long)i.ring_cqes,
                (unsigned long long)i.plain_recvs, (unsigned long long)i.oneshot_switches,
                (unsigned long long)i.arms, (unsigned long long)i.exhausted);
    }
}

static int64_t timeout_ns; /* 0: none */

/* Gives t's next read or write timeout_ns from now. */
static void arm(struct corio_task *t)
{
    if (timeout_ns)
        corio_set_deadline(t, corio_now() + timeout_ns);
}

static void serve_raw(struct corio_task *t, struct corio_stream *c)
{
    char buf[16 * 1024];
    ssize_t n;
    for (arm(t); (n = corio_stream_read(t, c, buf, sizeof buf)) > 0; arm(t)) {
        arm(t);
        if (corio_stream_write(t, c, buf, (size_t)n) < 0)
            break;
    }
}

static void serve_lines(struct corio_task *t, struct corio_stream *c)
{
    const char *line;
    ssize_t n;
    for (arm(t); (n = corio_stream_read_line(t, c, 64 * 1024, &line)) > 0; arm(t)) {
        arm(t);
        if (corio_stream_write(t, c, line, (size_t)n) < 0)
            return;
    }
    if (n == -EMSGSIZE) {
        static const char msg[] = "error: line longer than 64 KiB\n";
        corio_stream_write(t, c, msg, sizeof msg - 1);
    }
}

static void conn_task(struct corio_task *t, struct corio_stream *c, void *user)
{
    if (((struct opts *)user)->raw)
        serve_raw(t, c);
    else
        serve_lines(t, c);
    corio_stream_close(c);
}

static void main_task(struct corio_task *t, void *arg)
{
    struct opts *o = arg;
    if (o->stats && corio_spawn(t, stats_task, o, NULL) < 0)
        fprintf(stderr, "echo_server: no task for --stats\n");
    serve(t, "echo_server", o->host, o->port, o->conns, conn_task, o);
}

int main(int argc, char **argv)
{
    struct opts o = {"127.0.0.1", "0", 0, 0, 0, -1, NULL};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--raw"))
            o.raw = 1;
        else if (!strcmp(argv[i], "--plain"))
            o.plain = 1;
        else if (!strcmp(argv[i], "--stats"))
            o.stats = 1;
        else if (!strcmp(argv[i], "--host") && i + 1 < argc)
            o.host = argv[++i];
        else if (!strcmp(argv[i], "--port") && i + 1 < argc)
            o.port = argv[++i];
        else if (!strcmp(argv[i], "--conns") && i + 1 < argc)
            o.conns = atol(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc && atof(argv[i + 1]) >= 0 &&
                 atof(argv[i + 1]) < 1e9)
            timeout_ns = (int64_t)(atof(argv[++i]) * 1e9);
        else {
            fprintf(stderr, "usage: echo_server [--raw] [--plain] [--stats] [--host H] "
                            "[--port P] [--conns N] [--timeout SECONDS]\n");
            return 2;
        }
    }
    /* The scheduler's own context, with AFS_CTX_PLAIN_SOCKETS for --plain. */
    struct afs_config acfg;
    afs_config_default(&acfg);
    if (o.plain)
        acfg.flags |= AFS_CTX_PLAIN_SOCKETS;
    struct afs_ctx *ctx;
    int err = afs_ctx_new(&ctx, &acfg);
    if (err < 0) {
        fprintf(stderr, "afs_ctx_new: %s\n", afs_strerror(err));
        return 1;
    }
    o.ctx = ctx;
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = ctx;
    struct corio_sched *s;
    err = corio_sched_new(&s, &cfg);
    if (err < 0) {
        fprintf(stderr, "corio_sched_new: %s\n", afs_strerror(err));
        afs_ctx_free(ctx);
        return 1;
    }
    err = corio_sched_run(s, main_task, &o);
    corio_sched_free(s);
    afs_ctx_free(ctx);
    if (err < 0) {
        fprintf(stderr, "corio_sched_run: %s\n", afs_strerror(err));
        return 1;
    }
    return 0;
}
