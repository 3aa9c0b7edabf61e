/* Buffered corio streams over pipes and socketpairs (corio_stream_*, corio_pipe): lines with
 * a limit, delimiters, exact reads, read-all, the line and chunk generators, serialised
 * writers, half-close, a slow reader. The peers are plain threads with blocking calls, so the
 * tests run on every backend (the sync one too, where a read blocks the scheduler's thread). */
#include "../common.h"

#include <corio.h>
#include <stdatomic.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#define MS (1000LL * 1000)

static struct corio_sched *b_sched;

static void b_teardown(void)
{
    if (b_sched)
        corio_sched_free(b_sched);
    b_sched = NULL;
    t_teardown();
}

#define T_B(name) Test(bufstream, name, .init = t_setup, .fini = b_teardown, .timeout = 60)

static void bnew(void)
{
    t_ctx = t_ctx_cfg(NULL);
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    int err = corio_sched_new(&b_sched, &cfg);
    cr_assert_eq(err, 0, "corio_sched_new: %s", afs_strerror(err));
}

/* A peer thread: writes `data` (len bytes) in pieces of `piece` bytes with a pause between
 * them, then shuts down its writing side (or closes, with close_after). */
struct peer {
    int         fd;
    const char *data;
    size_t      len, piece;
    int         pause_us;
    int         close_after; /* 1: close(fd); 0: shutdown(SHUT_WR) and keep fd */
    pthread_t   th;
};

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    for (size_t off = 0; off < p->len;) {
        size_t n = p->len - off < p->piece ? p->len - off : p->piece;
        ssize_t w = write(p->fd, p->data + off, n);
        if (w <= 0)
            break;
        off += (size_t)w;
        if (p->pause_us)
            usleep((useconds_t)p->pause_us);
    }
    if (p->close_after)
        close(p->fd);
    else
        shutdown(p->fd, SHUT_WR);
    return NULL;
}

static void peer_start(struct peer *p)
{
    cr_assert_eq(pthread_create(&p->th, NULL, peer_main, p), 0);
}

/* A stream over one end of a socketpair; the other end goes to *peer_fd. */
static struct corio_stream *sock_stream(int *peer_fd, size_t buf_size)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct afs_file *f;
    cr_assert_eq(afs_file_from_fd(t_ctx, sv[0], AFS_RDWR, AFS_MODE_SYNC, &f), 0);
    struct corio_stream *s;
    cr_assert_eq(corio_stream_new(f, buf_size, &s), 0);
    *peer_fd = sv[1];
    return s;
}

/* ---------------------------------------------------------------------------------------- */

struct lines_case {
    struct peer p;
    struct corio_stream *s;
    int                  n;
    char                 got[16][64];
};

static void read_lines_root(struct corio_task *t, void *arg)
{
    struct lines_case *c = arg;
    const char *line;
    ssize_t n;
    while ((n = corio_stream_read_line(t, c->s, 0, &line)) > 0) {
        cr_assert_lt(n, 64);
        memcpy(c->got[c->n], line, (size_t)n);
        c->got[c->n++][n] = '\0';
    }
    cr_assert_eq(n, 0, "read_line: %s", afs_strerror((int)n));
}

T_B(read_line_across_pieces_keeps_the_newline)
{
    bnew();
    static const char text[] = "alpha\nbeta\n\ngamma without newline";
    struct lines_case c = {0};
    c.s = sock_stream(&c.p.fd, 4);
    c.p.data = text;
    c.p.len = strlen(text);
    c.p.piece = 3;
    c.p.pause_us = 200;
    c.p.close_after = 1;
    peer_start(&c.p);
    cr_assert_eq(corio_sched_run(b_sched, read_lines_root, &c), 0);
    pthread_join(c.p.th, NULL);
    cr_assert_eq(c.n, 4);
    cr_assert_str_eq(c.got[0], "alpha\n");
    cr_assert_str_eq(c.got[1], "beta\n");
    cr_assert_str_eq(c.got[2], "\n");
    cr_assert_str_eq(c.got[3], "gamma without newline");
    cr_assert_eq(corio_stream_close(c.s), 0);
}

struct limit_case {
    struct peer          p;
    struct corio_stream *s;
    ssize_t              r1, r2, r3;
    char                 rest[256];
    size_t               rest_len;
};

static void limit_root(struct corio_task *t, void *arg)
{
    struct limit_case *c = arg;
    const char *line;
    c->r1 = corio_stream_read_line(t, c->s, 16, &line);
    cr_assert_eq(c->r1, 6);
    cr_assert(memcmp(line, "short\n", 6) == 0);
    /* 40 bytes without a newline: refused at 16, nothing consumed. */
    c->r2 = corio_stream_read_line(t, c->s, 16, &line);
    cr_assert_geq(corio_stream_buffered(c->s), 16);
    /* A larger limit finds the newline: the whole line, none of it lost. */
    c->r3 = corio_stream_read_line(t, c->s, 100, &line);
    if (c->r3 > 0)
        memcpy(c->rest, line, (size_t)c->r3);
    /* And the bytes after it. */
    ssize_t n;
    char buf[64];
    while ((n = corio_stream_read(t, c->s, buf, sizeof buf)) > 0) {
        memcpy(c->rest + c->rest_len + (size_t)c->r3, buf, (size_t)n);
        c->rest_len += (size_t)n;
    }
}

T_B(read_line_limit_is_emsgsize_and_loses_nothing)
{
    bnew();
    char text[128];
    snprintf(text, sizeof text, "short\n%s\ntail", "0123456789012345678901234567890123456789");
    struct limit_case c = {0};
    c.s = sock_stream(&c.p.fd, 0);
    c.p.data = text;
    c.p.len = strlen(text);
    c.p.piece = 7;
    c.p.pause_us = 300;
    c.p.close_after = 1;
    peer_start(&c.p);
    cr_assert_eq(corio_sched_run(b_sched, limit_root, &c), 0);
    pthread_join(c.p.th, NULL);
    cr_assert_eq(c.r2, -EMSGSIZE);
    cr_assert_eq(c.r3, 41);
    cr_assert(memcmp(c.rest, "0123456789012345678901234567890123456789\ntail", 45) == 0);
    cr_assert_eq(c.rest_len, 4);
    cr_assert_eq(corio_stream_close(c.s), 0);
}

struct misc_case {
    struct peer          p;
    struct corio_stream *s;
};

static void until_exact_all_root(struct corio_task *t, void *arg)
{
    struct misc_case *c = arg;
    const char *field;
    cr_assert_eq(corio_stream_read_until(t, c->s, ';', 0, &field), 4);
    cr_assert(memcmp(field, "abc;", 4) == 0);
    char buf[10];
    cr_assert_eq(corio_stream_read_exact(t, c->s, buf, 10), 10);
    cr_assert(memcmp(buf, "0123456789", 10) == 0);
    char *all;
    ssize_t n = corio_stream_read_all(t, c->s, 0, &all);
    cr_assert_eq(n, 100000 - 14, "read_all: %zd", n);
    for (ssize_t i = 0; i < n; i++)
        cr_assert_eq(all[i], (char)('a' + (i + 14) % 26));
    cr_assert_eq(all[n], '\0');
    free(all);
    /* At the end: every read gives 0. */
    cr_assert_eq(corio_stream_read_exact(t, c->s, buf, 10), 0);
    cr_assert_eq(corio_stream_read_until(t, c->s, ';', 0, &field), 0);
}

T_B(read_until_exact_and_all)
{
    bnew();
    enum { LEN = 100000 };
    char *text = malloc(LEN);
    memcpy(text, "abc;0123456789", 14);
    for (size_t i = 14; i < LEN; i++)
        text[i] = (char)('a' + i % 26);
    struct misc_case c = {0};
    c.s = sock_stream(&c.p.fd, 0);
    c.p.data = text;
    c.p.len = LEN;
    c.p.piece = 3000;
    c.p.close_after = 1;
    peer_start(&c.p);
    cr_assert_eq(corio_sched_run(b_sched, until_exact_all_root, &c), 0);
    pthread_join(c.p.th, NULL);
    cr_assert_eq(corio_stream_close(c.s), 0);
    free(text);
}

static void read_all_limit_root(struct corio_task *t, void *arg)
{
    struct misc_case *c = arg;
    char *all;
    cr_assert_eq(corio_stream_read_all(t, c->s, 1000, &all), -EMSGSIZE);
    cr_assert_null(all);
    cr_assert_gt(corio_stream_buffered(c->s), 1000);
}

T_B(read_all_limit)
{
    bnew();
    static char text[5000];
    memset(text, 'x', sizeof text);
    struct misc_case c = {0};
    c.s = sock_stream(&c.p.fd, 0);
    c.p.data = text;
    c.p.len = sizeof text;
    c.p.piece = sizeof text;
    c.p.close_after = 1;
    peer_start(&c.p);
    cr_assert_eq(corio_sched_run(b_sched, read_all_limit_root, &c), 0);
    pthread_join(c.p.th, NULL);
    cr_assert_eq(corio_stream_close(c.s), 0);
}

struct gen_case {
    struct peer          p;
    struct corio_stream *s;
    char                 lines[8][32];
    int                  n, res;
    size_t               total;
};

static void lines_gen_root(struct corio_task *t, void *arg)
{
    struct gen_case *c = arg;
    struct corio_gen g;
    cr_assert_eq(corio_stream_lines(t, &g, c->s, 0), 0);
    void *v;
    while ((c->res = corio_gen_next(t, &g, &v)) == 1) {
        struct corio_line *l = v;
        cr_assert_eq(strlen(l->data), l->len);
        cr_assert_eq(l->lineno, (uint64_t)c->n + 1);
        snprintf(c->lines[c->n++], 32, "%s", l->data);
    }
}

T_B(lines_generator)
{
    bnew();
    static const char text[] = "one\r\ntwo\n\nthree";
    struct gen_case c = {0};
    c.s = sock_stream(&c.p.fd, 0);
    c.p.data = text;
    c.p.len = strlen(text);
    c.p.piece = 2;
    c.p.close_after = 1;
    peer_start(&c.p);
    cr_assert_eq(corio_sched_run(b_sched, lines_gen_root, &c), 0);
    pthread_join(c.p.th, NULL);
    cr_assert_eq(c.res, 0);
    cr_assert_eq(c.n, 4);
    cr_assert_str_eq(c.lines[0], "one\r");
    cr_assert_str_eq(c.lines[1], "two");
    cr_assert_str_eq(c.lines[2], "");
    cr_assert_str_eq(c.lines[3], "three");
    cr_assert_eq(corio_stream_close(c.s), 0);
}

static void lines_limit_root(struct corio_task *t, void *arg)
{
    struct gen_case *c = arg;
    struct corio_gen g;
    cr_assert_eq(corio_stream_lines(t, &g, c->s, 8), 0);
    void *v;
    while ((c->res = corio_gen_next(t, &g, &v)) == 1)
        c->n++;
}

T_B(lines_generator_limit)
{
    bnew();
    static const char text[] = "ok\nthis line is too long\n";
    struct gen_case c = {0};
    c.s = sock_stream(&c.p.fd, 0);
    c.p.data = text;
    c.p.len = strlen(text);
    c.p.piece = sizeof text;
    c.p.close_after = 1;
    peer_start(&c.p);
    cr_assert_eq(corio_sched_run(b_sched, lines_limit_root, &c), 0);
    pthread_join(c.p.th, NULL);
    cr_assert_eq(c.n, 1);
    cr_assert_eq(c.res, -EMSGSIZE);
    cr_assert_eq(corio_stream_close(c.s), 0);
}

static void chunks_root(struct corio_task *t, void *arg)
{
    struct gen_case *c = arg;
    struct corio_gen g;
    cr_assert_eq(corio_stream_chunks(t, &g, c->s, 1000), 0);
    void *v;
    while ((c->res = corio_gen_next(t, &g, &v)) == 1) {
        struct corio_chunk *ch = v;
        cr_assert(ch->len >= 1 && ch->len <= 1000);
        cr_assert_eq(ch->off, c->total);
        for (size_t i = 0; i < ch->len; i++)
            cr_assert_eq(ch->data[i], c->p.data[ch->off + i]);
        c->total += ch->len;
    }
}

T_B(chunks_generator)
{
    bnew();
    enum { LEN = 50000 };
    char *text = malloc(LEN);
    t_fill(text, LEN, 0);
    struct gen_case c = {0};
    c.s = sock_stream(&c.p.fd, 0);
    c.p.data = text;
    c.p.len = LEN;
    c.p.piece = 777;
    c.p.close_after = 1;
    peer_start(&c.p);
    cr_assert_eq(corio_sched_run(b_sched, chunks_root, &c), 0);
    pthread_join(c.p.th, NULL);
    cr_assert_eq(c.res, 0);
    cr_assert_eq(c.total, LEN);
    cr_assert_eq(corio_stream_close(c.s), 0);
    free(text);
}

/* ---------------------------------------------------------------------------------------- */

/* Writers: several tasks write large chunks of their own byte at once; a reader thread checks
 * that each chunk arrives whole, never interleaved with another's. */
enum { W_TASKS = 4, W_CHUNK = 256 * 1024, W_ROUNDS = 4 };

struct wr_case {
    struct corio_stream *s;
    int                  peer;
    char                *chunk[W_TASKS];
    int                  res[W_TASKS];
    int                  bad;
    size_t               total;
    pthread_t            th;
};

static void *wr_reader(void *arg)
{
    struct wr_case *c = arg;
    static char buf[65536];
    size_t run = 0;
    char cur = 0;
    ssize_t n;
    while ((n = read(c->peer, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (run == 0)
                cur = buf[i];
            else if (buf[i] != cur)
                c->bad = 1;
            if (++run == W_CHUNK)
                run = 0;
        }
        c->total += (size_t)n;
    }
    return NULL;
}

struct wr_arg {
    struct wr_case *c;
    int             i;
};

static void writer(struct corio_task *t, void *arg)
{
    struct wr_arg *a = arg;
    for (int r = 0; r < W_ROUNDS && a->c->res[a->i] == 0; r++)
        a->c->res[a->i] = corio_stream_write(t, a->c->s, a->c->chunk[a->i], W_CHUNK);
}

static void writers_root(struct corio_task *t, void *arg)
{
    struct wr_case *c = arg;
    static struct wr_arg a[W_TASKS];
    for (int i = 0; i < W_TASKS; i++) {
        a[i] = (struct wr_arg){c, i};
        cr_assert_eq(corio_spawn(t, writer, &a[i], NULL), 0);
    }
    corio_wait(t);
    shutdown((int)afs_file_fd(corio_stream_file(c->s)), SHUT_WR);
}

T_B(writes_never_interleave)
{
    bnew();
    struct wr_case c = {0};
    c.s = sock_stream(&c.peer, 0);
    for (int i = 0; i < W_TASKS; i++) {
        c.chunk[i] = malloc(W_CHUNK);
        memset(c.chunk[i], 'A' + i, W_CHUNK);
    }
    cr_assert_eq(pthread_create(&c.th, NULL, wr_reader, &c), 0);
    cr_assert_eq(corio_sched_run(b_sched, writers_root, &c), 0);
    pthread_join(c.th, NULL);
    for (int i = 0; i < W_TASKS; i++) {
        cr_assert_eq(c.res[i], 0, "write: %s", afs_strerror(c.res[i]));
        free(c.chunk[i]);
    }
    cr_assert_eq(c.total, (size_t)W_TASKS * W_ROUNDS * W_CHUNK);
    cr_assert_eq(c.bad, 0, "chunks of two writers interleaved");
    close(c.peer);
    cr_assert_eq(corio_stream_close(c.s), 0);
}

/* ---------------------------------------------------------------------------------------- */

struct half_case {
    struct peer          p;
    struct corio_stream *s;
    char                 reply[64];
};

static void half_root(struct corio_task *t, void *arg)
{
    struct half_case *c = arg;
    const char *line;
    /* The peer wrote one line and shut down its side: the line, then the end... */
    cr_assert_eq(corio_stream_read_line(t, c->s, 0, &line), 5);
    cr_assert_eq(corio_stream_read_line(t, c->s, 0, &line), 0);
    cr_assert_eq(corio_stream_read_line(t, c->s, 0, &line), 0);
    /* ...and our side still writes. */
    cr_assert_eq(corio_stream_write(t, c->s, "back\n", 5), 0);
}

T_B(half_close_reads_the_end_and_still_writes)
{
    bnew();
    struct half_case c = {0};
    c.s = sock_stream(&c.p.fd, 0);
    c.p.data = "ping\n";
    c.p.len = 5;
    c.p.piece = 5;
    c.p.close_after = 0; /* shutdown(SHUT_WR) */
    peer_start(&c.p);
    cr_assert_eq(corio_sched_run(b_sched, half_root, &c), 0);
    pthread_join(c.p.th, NULL);
    cr_assert_eq(read(c.p.fd, c.reply, sizeof c.reply), 5);
    cr_assert_str_eq(c.reply, "back\n");
    close(c.p.fd);
    cr_assert_eq(corio_stream_close(c.s), 0);
}

struct reset_case {
    struct corio_stream *s;
    int                  peer;
    ssize_t              rd;
    int                  wr;
};

static void reset_root(struct corio_task *t, void *arg)
{
    struct reset_case *c = arg;
    const char *line;
    cr_assert_eq(corio_stream_read_line(t, c->s, 0, &line), 6);
    /* The peer closed with data unread: writes fail with -EPIPE or -ECONNRESET, no signal. */
    static char big[1 << 20];
    for (int i = 0; i < 8 && c->wr == 0; i++)
        c->wr = corio_stream_write(t, c->s, big, sizeof big);
}

T_B(peer_gone_is_epipe_not_a_signal)
{
    bnew();
    struct reset_case c = {0};
    c.s = sock_stream(&c.peer, 0);
    cr_assert_eq(write(c.peer, "hello\n", 6), 6);
    close(c.peer);
    cr_assert_eq(corio_sched_run(b_sched, reset_root, &c), 0);
    cr_assert(c.wr == -EPIPE || c.wr == -ECONNRESET, "write: %s", afs_strerror(c.wr));
    cr_assert_eq(corio_stream_close(c.s), 0);
}

/* ---------------------------------------------------------------------------------------- */

/* A slow reader: the writer's calls wait for the kernel to take the data, so what the writer
 * got through while the reader slept is bounded by the socket buffers. */
struct slow_case {
    struct corio_stream *s;
    int                  peer;
    atomic_size_t        written;
    size_t               at_wake, limit;
    pthread_t            th;
    int                  res;
};

static void *slow_reader(void *arg)
{
    struct slow_case *c = arg;
    usleep(300 * 1000);
    c->at_wake = atomic_load(&c->written);
    static char buf[65536];
    while (read(c->peer, buf, sizeof buf) > 0)
        ;
    return NULL;
}

static void slow_root(struct corio_task *t, void *arg)
{
    struct slow_case *c = arg;
    enum { PIECE = 64 * 1024 };
    char *piece = calloc(1, PIECE);
    for (size_t i = 0; i < 32 * 1024 * 1024 / PIECE && c->res == 0; i++) {
        c->res = corio_stream_write(t, c->s, piece, PIECE);
        atomic_fetch_add(&c->written, PIECE);
    }
    free(piece);
    shutdown((int)afs_file_fd(corio_stream_file(c->s)), SHUT_WR);
}

T_B(slow_reader_makes_writes_wait)
{
    bnew();
    struct slow_case c = {0};
    c.s = sock_stream(&c.peer, 0);
    int snd = 0, rcv = 0;
    socklen_t sl = sizeof snd;
    getsockopt((int)afs_file_fd(corio_stream_file(c.s)), SOL_SOCKET, SO_SNDBUF, &snd, &sl);
    sl = sizeof rcv;
    getsockopt(c.peer, SOL_SOCKET, SO_RCVBUF, &rcv, &sl);
    cr_assert_eq(pthread_create(&c.th, NULL, slow_reader, &c), 0);
    cr_assert_eq(corio_sched_run(b_sched, slow_root, &c), 0);
    pthread_join(c.th, NULL);
    cr_assert_eq(c.res, 0);
    cr_assert_eq(atomic_load(&c.written), 32u * 1024 * 1024);
    /* The kernel's buffers and the write in progress, nowhere near the 32 MiB. */
    size_t bound = (size_t)snd + (size_t)rcv + 2 * 64 * 1024;
    cr_assert_leq(c.at_wake, bound, "%zu bytes went through a reader that slept (bound %zu)",
                  c.at_wake, bound);
    close(c.peer);
    cr_assert_eq(corio_stream_close(c.s), 0);
}

/* ---------------------------------------------------------------------------------------- */

struct pipe_case {
    char got[64];
    int  res;
};

static void pipe_writer(struct corio_task *t, void *arg)
{
    struct corio_stream *w = arg;
    cr_assert_eq(corio_stream_write(t, w, "through ", 8), 0);
    corio_sleep(t, 2 * MS);
    cr_assert_eq(corio_stream_write(t, w, "the pipe\n", 9), 0);
    cr_assert_eq(corio_stream_close(w), 0);
}

static void pipe_root(struct corio_task *t, void *arg)
{
    struct pipe_case *c = arg;
    struct corio_stream *r, *w;
    c->res = corio_pipe(t, &r, &w);
    if (c->res == -ENOTSUP)
        return;
    cr_assert_eq(c->res, 0);
    cr_assert_eq(corio_spawn(t, pipe_writer, w, NULL), 0);
    char *all;
    ssize_t n = corio_stream_read_all(t, r, 0, &all);
    cr_assert_eq(n, 17);
    memcpy(c->got, all, 18);
    free(all);
    cr_assert_eq(corio_stream_close(r), 0);
}

T_B(pipe_between_tasks)
{
    bnew();
    struct pipe_case c = {0};
    cr_assert_eq(corio_sched_run(b_sched, pipe_root, &c), 0);
    cr_assert_str_eq(c.got, "through the pipe\n");
}

/* A read on an idle pipe ends at its task's deadline, or at a cancel, and only the task
 * waits (a ticker task runs meanwhile), on every backend: the pool backends must not hold a
 * thread (or the only thread) in read(2). The stream stays usable after the timeout. */
struct idle_case {
    struct corio_stream *r, *w;
    struct corio_task   *reader;
    int                  ticks, stop, res, res2;
    int64_t              took;
};

static void ticker(struct corio_task *t, void *arg)
{
    struct idle_case *c = arg;
    while (!c->stop && corio_sleep(t, 5 * MS) == 0)
        c->ticks++;
}

static void idle_reader(struct corio_task *t, void *arg)
{
    struct idle_case *c = arg;
    char buf[64];
    int64_t t0 = corio_now();
    c->res = (int)corio_stream_read(t, c->r, buf, sizeof buf);
    c->took = corio_now() - t0;
}

static void idle_root(struct corio_task *t, void *arg)
{
    struct idle_case *c = arg;
    cr_assert_eq(corio_pipe(t, &c->r, &c->w), 0);
    cr_assert_eq(corio_spawn(t, ticker, c, NULL), 0);
    /* a deadline */
    corio_set_deadline(t, corio_now() + 60 * MS);
    idle_reader(t, c);
    corio_set_deadline(t, INT64_MAX);
    cr_assert_eq(c->res, -ETIMEDOUT, "read under a deadline: %d", c->res);
    cr_assert(c->took >= 50 * MS, "ended after %lld ns", (long long)c->took);
    cr_assert(c->ticks >= 2, "the ticker ran %d times while the read waited", c->ticks);
    /* the stream goes on: data written now is read */
    cr_assert_eq(corio_stream_write(t, c->w, "late\n", 5), 0);
    const char *line;
    cr_assert_eq(corio_stream_read_line(t, c->r, 0, &line), 5);
    cr_assert(memcmp(line, "late\n", 5) == 0);
    /* a cancel */
    cr_assert_eq(corio_spawn(t, idle_reader, c, &c->reader), 0);
    corio_sleep(t, 20 * MS);
    corio_cancel(c->reader);
    corio_wait(t); /* the reader; the ticker is told to stop below */
    c->res2 = c->res;
    c->stop = 1;
    cr_assert_eq(corio_stream_close(c->w), 0);
    cr_assert_eq(corio_stream_close(c->r), 0);
}

T_B(idle_pipe_read_ends_at_deadline_or_cancel)
{
    bnew();
    struct idle_case c = {0};
    cr_assert_eq(corio_sched_run(b_sched, idle_root, &c), 0);
    cr_assert_eq(c.res2, -ECANCELED, "cancelled read: %d", c.res2);
}

/* A small read of a FIFO inside a task (under sync_threshold, which runs inline on a regular
 * file) waits as an op: the ticker runs, the deadline ends it. */
static void fifo_root(struct corio_task *t, void *arg)
{
    struct idle_case *c = arg;
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("fifo"), AFS_RDWR, 0, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(corio_spawn(t, ticker, c, NULL), 0);
    char buf[10];
    corio_set_deadline(t, corio_now() + 60 * MS);
    c->res = (int)afs_read(f, buf, sizeof buf);
    corio_set_deadline(t, INT64_MAX);
    c->stop = 1;
    cr_assert_eq(c->res, -ETIMEDOUT, "small FIFO read under a deadline: %d", c->res);
    cr_assert(c->ticks >= 2, "the ticker ran %d times while the read waited", c->ticks);
    /* and data that comes is read */
    cr_assert_eq(afs_write(f, "0123456789", 10), 10);
    cr_assert_eq(afs_read(f, buf, sizeof buf), 10);
    cr_assert(memcmp(buf, "0123456789", 10) == 0);
    cr_assert_eq(afs_close(f), 0);
}

T_B(small_fifo_read_in_a_task_waits_as_an_op)
{
    bnew();
    cr_assert_eq(mkfifo(t_path("fifo"), 0600), 0);
    struct idle_case c = {0};
    cr_assert_eq(corio_sched_run(b_sched, fifo_root, &c), 0);
}

/* Small afs_write and afs_read calls on a pipe in a task move what the pipe takes or holds
 * at once on the task's thread (Linux: RWF_NOWAIT), on a pipe adopted blocking (whose ops
 * hold a pool thread elsewhere) as on one the library made; the rest goes as an op: a
 * writer of 64-byte records and a reader of 100-byte ones move 256 KiB, four times the pipe,
 * in order; a reader gone is -EPIPE, not the death of the process by SIGPIPE; a cancelled
 * task moves nothing. */
struct rwpipe_case {
    struct afs_file *r, *w;
    size_t           total;
    int              bad_at; /* -1, or the offset of the first wrong byte */
};

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 7 + i / 251);
}

static void rwpipe_writer(struct corio_task *t, void *arg)
{
    struct rwpipe_case *c = arg;
    unsigned char rec[64];
    for (size_t off = 0; off < c->total; off += sizeof rec) {
        for (size_t i = 0; i < sizeof rec; i++)
            rec[i] = pattern(off + i);
        ssize_t n = afs_write(c->w, rec, sizeof rec);
        cr_assert_eq(n, (ssize_t)sizeof rec, "write at %zu: %zd", off, n);
    }
    (void)t;
}

static void rwpipe_root(struct corio_task *t, void *arg)
{
    struct rwpipe_case *c = arg;
    struct afs_stats before, after;
    unsigned char buf[100];
    /* A pipe with room and with data: nothing goes through the batch on Linux. */
    afs_ctx_stats(t_ctx, &before);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(afs_write(c->w, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 64),
                     64);
    for (int i = 0; i < 32; i++) {
        cr_assert_eq(afs_read(c->r, buf, 100), 100);
        cr_assert(memcmp(buf, "0123456789abcdef" + (i * 100) % 16, 16 - (i * 100) % 16) == 0);
    }
    afs_ctx_stats(t_ctx, &after);
#ifdef __linux__
    cr_assert_eq(after.kernel_submits + after.pool_ops, before.kernel_submits + before.pool_ops,
                 "small pipe transfers with the pipe ready went through the batch");
    cr_assert_eq(after.inline_ops - before.inline_ops, 82);
#endif
    /* 256 KiB through a 64 KiB pipe: both sides wait for the other by turns. */
    c->total = 256 * 1024;
    cr_assert_eq(corio_spawn(t, rwpipe_writer, c, NULL), 0);
    for (size_t off = 0; off < c->total;) {
        size_t want = c->total - off < sizeof buf ? c->total - off : sizeof buf;
        ssize_t n = afs_read(c->r, buf, want);
        cr_assert_eq(n, (ssize_t)want, "read at %zu: %zd", off, n);
        for (size_t i = 0; i < want && c->bad_at < 0; i++)
            if (buf[i] != pattern(off + i))
                c->bad_at = (int)(off + i);
        off += want;
    }
    corio_wait(t);
    cr_assert_eq(c->bad_at, -1, "byte %d out of order", c->bad_at);
    /* A cancelled task writes nothing; then the reader goes: -EPIPE, and no signal. */
    corio_cancel(t);
    cr_assert_eq(afs_write(c->w, "x", 1), -ECANCELED);
}

static void rwpipe_epipe(struct corio_task *t, void *arg)
{
    struct rwpipe_case *c = arg;
    (void)t;
    cr_assert_eq(afs_write(c->w, "gone", 4), -EPIPE);
}

T_B(small_pipe_transfers_in_a_task_move_at_once)
{
    signal(SIGPIPE, SIG_DFL);
    for (int adopted = 0; adopted < 2; adopted++) {
        bnew();
        struct rwpipe_case c = {.bad_at = -1};
        int p[2];
        cr_assert_eq(pipe(p), 0);
        int flags = adopted ? 0 : AFS_NONBLOCK; /* blocking as adopted, or made non-blocking */
        cr_assert_eq(afs_file_from_fd(t_ctx, p[0], AFS_RDONLY | flags, AFS_MODE_SYNC, &c.r), 0);
        cr_assert_eq(afs_file_from_fd(t_ctx, p[1], AFS_WRONLY | flags, AFS_MODE_SYNC, &c.w), 0);
        cr_assert_eq(corio_sched_run(b_sched, rwpipe_root, &c), 0);
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        cr_assert_eq(poll(&pf, 1, 0), 0, "the cancelled task wrote");
        cr_assert_eq(afs_close(c.r), 0);
        cr_assert_eq(corio_sched_run(b_sched, rwpipe_epipe, &c), 0);
        cr_assert_eq(afs_close(c.w), 0);
        corio_sched_free(b_sched);
        b_sched = NULL;
        afs_ctx_free(t_ctx);
        t_ctx = NULL;
    }
}

/* A stream over a regular file reads it from 0 and writes at its own offset. */
static void file_root(struct corio_task *t, void *arg)
{
    (void)arg;
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("lines"), AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_SYNC,
                          &f),
                 0);
    struct corio_stream *s;
    cr_assert_eq(corio_stream_new(f, 16, &s), 0);
    cr_assert_eq(corio_stream_write(t, s, "first line\nsecond line\n", 23), 0);
    const char *line;
    cr_assert_eq(corio_stream_read_line(t, s, 0, &line), 11);
    cr_assert(memcmp(line, "first line\n", 11) == 0);
    cr_assert_eq(corio_stream_read_line(t, s, 0, &line), 12);
    cr_assert_eq(corio_stream_read_line(t, s, 0, &line), 0);
    cr_assert_eq(corio_stream_close(s), 0);
}

T_B(over_a_regular_file)
{
    bnew();
    cr_assert_eq(corio_sched_run(b_sched, file_root, NULL), 0);
}

/* A delimiter search remembers how far it looked; reads that consume past that point and a
 * compaction of the buffer must not leave it pointing at nothing (the next search for the
 * same byte then missed it). */
static void rescan_root(struct corio_task *t, void *arg)
{
    (void)arg;
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("rescan"), AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_SYNC,
                          &f),
                 0);
    static const char text[] = "0123456789abcdefghijKLMNOxtail";
    cr_assert_eq(afs_pwrite(f, text, sizeof text - 1, 0), (ssize_t)sizeof text - 1);
    struct corio_stream *s;
    cr_assert_eq(corio_stream_new(f, 16, &s), 0);
    char buf[16];
    const char *p;
    cr_assert_eq(corio_stream_read(t, s, buf, 1), 1);
    cr_assert_eq(corio_stream_read_until(t, s, 'x', 2, &p), -EMSGSIZE);
    cr_assert_eq(corio_stream_read(t, s, buf, 14), 14);
    cr_assert_eq(corio_stream_read(t, s, buf, 10), 1);
    cr_assert_eq(corio_stream_read(t, s, buf, 5), 5);
    cr_assert(memcmp(buf, "ghijK", 5) == 0);
    ssize_t n = corio_stream_read_until(t, s, 'x', 100, &p);
    cr_assert_eq(n, 5, "read_until: %zd", n);
    cr_assert(memcmp(p, "LMNOx", 5) == 0);
    cr_assert_eq(corio_stream_close(s), 0);
}

T_B(delimiter_search_survives_compaction)
{
    bnew();
    cr_assert_eq(corio_sched_run(b_sched, rescan_root, NULL), 0);
}

/* ---------------------------------------------------------------------------------------- */

/* A write that a deadline stops part way reports the deadline, not "all written". */
struct stopped_case {
    struct corio_stream *s;
    int                  res;
};

static void stopped_root(struct corio_task *t, void *arg)
{
    struct stopped_case *c = arg;
    static char big[8 << 20];
    corio_set_deadline(t, corio_now() + 50 * MS); /* nobody reads the peer meanwhile */
    c->res = corio_stream_write(t, c->s, big, sizeof big);
    corio_set_deadline(t, 0);
}

T_B(write_stopped_by_a_deadline_reports_it)
{
    bnew();
    struct stopped_case c = {0};
    int peer;
    c.s = sock_stream(&peer, 0);
    cr_assert_eq(corio_sched_run(b_sched, stopped_root, &c), 0);
    cr_assert_eq(c.res, -ETIMEDOUT, "write: %s", afs_strerror(c.res));
    close(peer);
    cr_assert_eq(corio_stream_close(c.s), 0);
}

/* A peer that resets after sending a few bytes: read_exact returns the bytes, and the next
 * read the reset (the kernel reports it once). */
struct exact_reset_case {
    struct corio_stream *s;
    ssize_t              n1, n2;
};

static void exact_reset_root(struct corio_task *t, void *arg)
{
    struct exact_reset_case *c = arg;
    char b[10];
    c->n1 = corio_stream_read_exact(t, c->s, b, sizeof b);
    c->n2 = corio_stream_read_exact(t, c->s, b, sizeof b);
}

T_B(read_exact_keeps_a_reset_for_the_next_read)
{
    bnew();
    struct exact_reset_case c = {0};
    int peer;
    c.s = sock_stream(&peer, 0);
    /* Bytes left unread in the peer's socket make its close a reset (AF_UNIX as TCP). */
    cr_assert_eq(write((int)afs_file_fd(corio_stream_file(c.s)), "x", 1), 1);
    cr_assert_eq(write(peer, "abc", 3), 3);
    close(peer);
    cr_assert_eq(corio_sched_run(b_sched, exact_reset_root, &c), 0);
    cr_assert_eq(c.n1, 3);
    cr_assert_eq(c.n2, -ECONNRESET, "second read_exact: %zd", c.n2);
    cr_assert_eq(corio_stream_close(c.s), 0);
}

/* A read_exact cut short by its task's deadline reports the bytes it had; the deadline is
 * the task's, not the stream's: another task's read after it gets the data that came. */
struct exact_deadline_case {
    struct corio_stream *s;
    int                  peer;
    ssize_t              n1, n2;
    char                 line[16];
};

static void exact_deadline_other(struct corio_task *t, void *arg)
{
    struct exact_deadline_case *c = arg;
    const char *l;
    c->n2 = corio_stream_read_line(t, c->s, 0, &l);
    if (c->n2 > 0 && c->n2 < (ssize_t)sizeof c->line)
        memcpy(c->line, l, (size_t)c->n2);
}

static void exact_deadline_root(struct corio_task *t, void *arg)
{
    struct exact_deadline_case *c = arg;
    char b[10];
    cr_assert_eq(write(c->peer, "abc", 3), 3);
    corio_set_deadline(t, corio_now() + 30 * MS);
    c->n1 = corio_stream_read_exact(t, c->s, b, sizeof b);
    corio_set_deadline(t, INT64_MAX);
    cr_assert_eq(write(c->peer, "defghijklm\n", 11), 11);
    cr_assert_eq(corio_spawn(t, exact_deadline_other, c, NULL), 0);
    corio_wait(t);
}

T_B(read_exact_cut_by_a_deadline_leaves_no_error_behind)
{
    bnew();
    struct exact_deadline_case c = {0};
    c.s = sock_stream(&c.peer, 0);
    cr_assert_eq(corio_sched_run(b_sched, exact_deadline_root, &c), 0);
    cr_assert_eq(c.n1, 3);
    cr_assert_eq(c.n2, 11, "the next task's read_line: %zd", c.n2);
    cr_assert_str_eq(c.line, "defghijklm\n");
    close(c.peer);
    cr_assert_eq(corio_stream_close(c.s), 0);
}

/* The limit of read_until counts the delimiter; a last line without one may be limit bytes
 * long. The lines generator's limit is on the line without its '\n'. */
struct limit_edge_case {
    struct corio_stream *s;
    int                  peer;
    ssize_t              r[4];
    int                  gen_n, gen_res;
};

static void limit_edge_root(struct corio_task *t, void *arg)
{
    struct limit_edge_case *c = arg;
    const char *l;
    c->r[0] = corio_stream_read_line(t, c->s, 3, &l); /* "ab\n": 3 */
    c->r[1] = corio_stream_read_line(t, c->s, 3, &l); /* "abc\n": too long */
    c->r[2] = corio_stream_read_line(t, c->s, 4, &l); /* the same: 4 */
    c->r[3] = corio_stream_read_line(t, c->s, 3, &l); /* "xyz" at the end: 3 */
}

static void lines_edge_root(struct corio_task *t, void *arg)
{
    struct limit_edge_case *c = arg;
    struct corio_gen g;
    cr_assert_eq(corio_stream_lines(t, &g, c->s, 10), 0);
    void *v;
    while ((c->gen_res = corio_gen_next(t, &g, &v)) == 1) {
        struct corio_line *line = v;
        cr_assert_eq(line->len, 10);
        c->gen_n++;
    }
}

T_B(line_limits_at_their_edge)
{
    bnew();
    struct limit_edge_case c = {0};
    c.s = sock_stream(&c.peer, 0);
    cr_assert_eq(write(c.peer, "ab\nabc\nxyz", 10), 10);
    shutdown(c.peer, SHUT_WR);
    cr_assert_eq(corio_sched_run(b_sched, limit_edge_root, &c), 0);
    cr_assert_eq(c.r[0], 3);
    cr_assert_eq(c.r[1], -EMSGSIZE);
    cr_assert_eq(c.r[2], 4);
    cr_assert_eq(c.r[3], 3, "a last line of limit bytes: %zd", c.r[3]);
    close(c.peer);
    cr_assert_eq(corio_stream_close(c.s), 0);

    c = (struct limit_edge_case){0};
    c.s = sock_stream(&c.peer, 0);
    cr_assert_eq(write(c.peer, "0123456789\n0123456789", 21), 21);
    shutdown(c.peer, SHUT_WR);
    cr_assert_eq(corio_sched_run(b_sched, lines_edge_root, &c), 0);
    cr_assert_eq(c.gen_res, 0, "lines: %s", afs_strerror(c.gen_res));
    cr_assert_eq(c.gen_n, 2);
    close(c.peer);
    cr_assert_eq(corio_stream_close(c.s), 0);
}

/* The chunk generator reads the next chunk while the consumer holds one; closing it then
 * gives that chunk back to the stream. */
struct chunk_close_case {
    struct corio_stream *s;
    int                  peer;
    char                 first[8], rest[16];
    ssize_t              rest_len;
};

/* After a generator's close: the peer writes `more` and ends; everything the stream then
 * holds, read to its end, goes to c->rest. */
static void read_rest_after(struct corio_task *t, struct chunk_close_case *c, const char *more)
{
    cr_assert_eq(write(c->peer, more, strlen(more)), (ssize_t)strlen(more));
    shutdown(c->peer, SHUT_WR);
    char *all;
    c->rest_len = corio_stream_read_all(t, c->s, 0, &all);
    if (c->rest_len > 0 && c->rest_len < (ssize_t)sizeof c->rest)
        memcpy(c->rest, all, (size_t)c->rest_len);
    free(all);
}

static void chunk_close_root(struct corio_task *t, void *arg)
{
    struct chunk_close_case *c = arg;
    struct corio_gen g;
    cr_assert_eq(write(c->peer, "AAA", 3), 3);
    cr_assert_eq(corio_stream_chunks(t, &g, c->s, 0), 0);
    void *v;
    cr_assert_eq(corio_gen_next(t, &g, &v), 1);
    struct corio_chunk *ch = v;
    cr_assert_eq(ch->len, 3);
    memcpy(c->first, ch->data, 3);
    cr_assert_eq(write(c->peer, "BBB", 3), 3);
    /* Let the producer read BBB ahead: until the socket holds nothing. */
    int fd = (int)afs_file_fd(corio_stream_file(c->s)), pending = 1;
    for (int i = 0; i < 5000 && pending; i++) {
        corio_sleep(t, MS);
        cr_assert_eq(ioctl(fd, FIONREAD, &pending), 0);
    }
    cr_assert_eq(pending, 0);
    corio_gen_close(t, &g);
    read_rest_after(t, c, "CC");
}

T_B(closing_the_chunk_generator_loses_nothing)
{
    bnew();
    struct chunk_close_case c = {0};
    c.s = sock_stream(&c.peer, 0);
    cr_assert_eq(corio_sched_run(b_sched, chunk_close_root, &c), 0);
    cr_assert_str_eq(c.first, "AAA");
    cr_assert_eq(c.rest_len, 5, "read after the close: %zd", c.rest_len);
    cr_assert_str_eq(c.rest, "BBBCC");
    close(c.peer);
    cr_assert_eq(corio_stream_close(c.s), 0);
}

/* A consumer whose wait for the next line ended at its deadline, then closed the line
 * generator: the line the generator read meanwhile goes back to the stream, as the chunk
 * generator's read-ahead does. */
static void line_close_root(struct corio_task *t, void *arg)
{
    struct chunk_close_case *c = arg;
    struct corio_gen g;
    cr_assert_eq(corio_stream_lines(t, &g, c->s, 0), 0);
    void *v;
    corio_set_deadline(t, corio_now() + 10 * MS);
    cr_assert_eq(corio_gen_next(t, &g, &v), -ETIMEDOUT);
    corio_set_deadline(t, 0);
    cr_assert_eq(write(c->peer, "L1\nL2\n", 6), 6);
    /* Until the generator took L1 from the stream's buffer and waits to hand it over. */
    for (int i = 0; i < 5000 && corio_stream_buffered(c->s) != 3; i++)
        corio_sleep(t, MS);
    cr_assert_eq(corio_stream_buffered(c->s), 3);
    corio_gen_close(t, &g);
    read_rest_after(t, c, "L3\n");
}

T_B(closing_the_line_generator_loses_nothing)
{
    bnew();
    struct chunk_close_case c = {0};
    c.s = sock_stream(&c.peer, 0);
    cr_assert_eq(corio_sched_run(b_sched, line_close_root, &c), 0);
    cr_assert_eq(c.rest_len, 9, "read after the close: %zd", c.rest_len);
    cr_assert_str_eq(c.rest, "L1\nL2\nL3\n");
    close(c.peer);
    cr_assert_eq(corio_stream_close(c.s), 0);
}

/* End of file is sticky for every read: one larger than the buffer (read straight into the
 * caller's memory) too, after the file grew. */
static void sticky_eof_root(struct corio_task *t, void *arg)
{
    (void)arg;
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("grows"), AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_SYNC,
                          &f),
                 0);
    cr_assert_eq(afs_pwrite(f, "abc\n", 4, 0), 4);
    struct corio_stream *s;
    cr_assert_eq(corio_stream_new(f, 16, &s), 0);
    const char *p;
    cr_assert_eq(corio_stream_read_line(t, s, 0, &p), 4);
    cr_assert_eq(corio_stream_read_line(t, s, 0, &p), 0);
    static const char more[] = "written after the end was seen, more than a buffer";
    cr_assert_eq(afs_pwrite(f, more, sizeof more - 1, 4), (ssize_t)sizeof more - 1);
    char buf[64], small[4];
    cr_assert_eq(corio_stream_read(t, s, small, sizeof small), 0);
    ssize_t n = corio_stream_read(t, s, buf, sizeof buf);
    cr_assert_eq(n, 0, "a large read after the end: %zd", n);
    cr_assert_eq(corio_stream_read_exact(t, s, buf, 40), 0);
    cr_assert_eq(corio_stream_close(s), 0);
}

T_B(end_of_file_is_sticky_for_large_reads_too)
{
    bnew();
    cr_assert_eq(corio_sched_run(b_sched, sticky_eof_root, NULL), 0);
}
