/* Descriptors without offsets: pipes, FIFOs and socketpairs through streams, the position
 * API and afs_file_from_fd, on the backend under test. A writer thread trickles data with
 * random sizes and pauses; the reader must get every byte once, in order (the pattern of
 * t_fill depends on the byte's place in the stream, so a lost, repeated or reordered piece
 * shows where it happened). The positional calls refuse such files with -ESPIPE.
 * Also here: the end-of-file rule for short reads of regular files (no second read when the
 * read ended at the size known from fstat), counted through the system call table. */
#include "../common.h"

#include "internal.h" /* afs__sys, afs__sock_ready */

#include <corio.h>

#include <stdatomic.h>
#include <sys/socket.h>
#ifdef __linux__
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#endif

#define TRICKLE_BYTES ((size_t)6000000)

struct trickle {
    int      fd;       /* write end; -1: open `path` for writing first */
    const char *path;
    size_t   total;
    unsigned seed;
    int      err;      /* errno of a failed write, 0 */
};

/* Writes `total` pattern bytes in pieces of 1 byte to ~96 KiB, pausing now and then, and
 * closes the descriptor (the reader's end of file). */
static void *trickle_main(void *arg)
{
    struct trickle *t = arg;
    if (t->fd < 0 && (t->fd = open(t->path, O_WRONLY)) < 0) {
        t->err = errno;
        return NULL;
    }
    static _Thread_local char buf[98304];
    size_t off = 0;
    while (off < t->total) {
        size_t n = (size_t)rand_r(&t->seed) % sizeof buf + 1;
        if (rand_r(&t->seed) % 8 == 0)
            n = (size_t)rand_r(&t->seed) % 64 + 1;
        if (n > t->total - off)
            n = t->total - off;
        t_fill(buf, n, off);
        for (size_t w = 0; w < n;) {
            ssize_t r = write(t->fd, buf + w, n - w);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                t->err = errno;
                close(t->fd);
                return NULL;
            }
            w += (size_t)r;
        }
        off += n;
        if (rand_r(&t->seed) % 4 == 0)
            usleep((useconds_t)(rand_r(&t->seed) % 2000));
    }
    close(t->fd);
    return NULL;
}

static pthread_t trickle_start(struct trickle *t, int fd, const char *path, size_t total,
                               unsigned seed)
{
    t->fd = fd;
    t->path = path;
    t->total = total;
    t->seed = seed;
    t->err = 0;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, trickle_main, t), 0);
    return th;
}

static void trickle_join(pthread_t th, struct trickle *t)
{
    pthread_join(th, NULL);
    cr_assert_eq(t->err, 0, "writer: %s", strerror(t->err));
}

/* Reads s until end of file with requests of random sizes; checks every byte. */
static void read_stream_all(struct afs_stream *s, size_t total, unsigned seed)
{
    size_t cap = (size_t)3 << 20;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    size_t got = 0;
    for (;;) {
        size_t want = (size_t)rand_r(&seed) % 4 == 0 ? (size_t)rand_r(&seed) % 16 + 1
                                                      : (size_t)rand_r(&seed) % cap + 1;
        size_t n = afs_fread(buf, 1, want, s);
        cr_assert(n <= want);
        cr_assert(t_check(buf, n, got), "bytes %zu..%zu are not the writer's", got, got + n);
        got += n;
        if (n < want) {
            /* Short only at the end: a pipe's short reads are the stream's business. */
            cr_assert_eq(afs_ferror(s), 0, "afs_ferror: %s", afs_strerror(afs_ferror(s)));
            cr_assert(afs_feof(s), "a short afs_fread without EOF or error");
            break;
        }
    }
    cr_assert_eq(got, total, "read %zu of %zu bytes", got, total);
    cr_assert_eq(afs_fread(buf, 1, 1, s), 0); /* EOF is sticky */
    free(buf);
}

/* Reads f with afs_read until it returns 0; a read is short only at the end. */
static void read_pos_all(struct afs_file *f, size_t total, unsigned seed, bool async)
{
    static const size_t sizes[] = {1, 100, 4096, 4097, 65536, 1 << 20, 3 << 20};
    char *buf = malloc((size_t)3 << 20);
    cr_assert_not_null(buf);
    size_t got = 0;
    for (;;) {
        size_t want = sizes[(size_t)rand_r(&seed) % (sizeof sizes / sizeof sizes[0])];
        ssize_t r = afs_read(f, buf, want);
        if (async) {
            cr_assert_eq(r, 0, "afs_read (async): %s", afs_strerror((int)r));
            cr_assert_eq(afs_last_op_wait(f, &r), 1);
        }
        cr_assert(r >= 0, "afs_read: %s", afs_strerror((int)r));
        cr_assert(t_check(buf, (size_t)r, got), "bytes %zu..%zu are not the writer's", got,
                  got + (size_t)r);
        got += (size_t)r;
        if (r == 0)
            break;
        cr_assert(r == (ssize_t)want || got == total,
                  "afs_read gave %zd of %zu bytes before the end", r, want);
    }
    cr_assert_eq(got, total, "read %zu of %zu bytes", got, total);
    cr_assert_eq(afs_tell(f), (int64_t)total);
    free(buf);
}

#define T_PIPE(name) Test(pipes, name, .init = t_setup, .fini = t_teardown, .timeout = 120)

T_PIPE(stream_reads_a_pipe)
{
    struct afs_ctx *ctx = t_new_ctx();
    int p[2];
    cr_assert_eq(pipe(p), 0);
    char path[64];
    snprintf(path, sizeof path, "/dev/fd/%d", p[0]);
    struct afs_stream *s;
    int err = afs_fopen(ctx, path, "r", &s);
    cr_assert_eq(err, 0, "afs_fopen(%s): %s", path, afs_strerror(err));
    close(p[0]); /* the stream has its own descriptor of the pipe */
    struct trickle t;
    pthread_t th = trickle_start(&t, p[1], NULL, TRICKLE_BYTES, 1);
    read_stream_all(s, TRICKLE_BYTES, 2);
    trickle_join(th, &t);
    cr_assert_eq(afs_fseek(s, 0, SEEK_SET), -ESPIPE);
    cr_assert_eq(afs_ftell(s), -ESPIPE);
    cr_assert_eq(afs_fclose(s), 0);
}

T_PIPE(stream_reads_a_fifo)
{
    struct afs_ctx *ctx = t_new_ctx();
    const char *fifo = t_path("fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo: %s", strerror(errno));
    struct trickle t;
    pthread_t th = trickle_start(&t, -1, fifo, TRICKLE_BYTES, 3);
    struct afs_stream *s;
    int err = afs_fopen(ctx, fifo, "r", &s);
    cr_assert_eq(err, 0, "afs_fopen: %s", afs_strerror(err));
    read_stream_all(s, TRICKLE_BYTES, 4);
    trickle_join(th, &t);
    cr_assert_eq(afs_fclose(s), 0);
}

/* A reader of a few bytes gets them when they arrive, not when a whole chunk has, and
 * closing the stream while the writer is still there (idle) does not wait for it. */
T_PIPE(stream_hands_out_what_arrived)
{
    struct afs_ctx *ctx = t_new_ctx();
    int p[2];
    cr_assert_eq(pipe(p), 0);
    char path[64];
    snprintf(path, sizeof path, "/dev/fd/%d", p[0]);
    struct afs_stream *s;
    cr_assert_eq(afs_fopen(ctx, path, "r", &s), 0);
    char buf[64];
    t_fill(buf, 10, 0);
    cr_assert_eq(write(p[1], buf, 10), 10);
    memset(buf, 0, sizeof buf);
    cr_assert_eq(afs_fread(buf, 1, 4, s), 4);
    cr_assert_eq(afs_fread(buf + 4, 1, 6, s), 6);
    cr_assert(t_check(buf, 10, 0));
    cr_assert_eq(afs_fclose(s), 0);
    close(p[0]);
    close(p[1]);
}

/* A stream that reads and writes one FIFO ("r+", as Linux and the BSDs allow): writes
 * between two reads take nothing from what the first read left to hand out. */
T_PIPE(stream_writes_between_reads_of_a_fifo_lose_nothing)
{
    struct afs_ctx *ctx = t_new_ctx();
    const char *fifo = t_path("fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo: %s", strerror(errno));
    struct afs_stream *s;
    int err = afs_fopen(ctx, fifo, "r+", &s);
    cr_assert_eq(err, 0, "afs_fopen: %s", afs_strerror(err));
    char buf[16] = {0};
    cr_assert_eq(afs_fwrite("hello", 1, 5, s), 5);
    cr_assert_eq(afs_fflush(s), 0);
    cr_assert_eq(afs_fread(buf, 1, 2, s), 2);
    cr_assert_eq(memcmp(buf, "he", 2), 0);
    cr_assert_eq(afs_fwrite("XY", 1, 2, s), 2);
    cr_assert_eq(afs_fflush(s), 0);
    cr_assert_eq(afs_fread(buf, 1, 3, s), 3);
    cr_assert_eq(memcmp(buf, "llo", 3), 0, "got \"%.3s\" after a write", buf);
    cr_assert_eq(afs_fread(buf, 1, 2, s), 2);
    cr_assert_eq(memcmp(buf, "XY", 2), 0);
    cr_assert_eq(afs_fclose(s), 0);
}

T_PIPE(afs_read_sync_reads_a_pipe)
{
    struct afs_ctx *ctx = t_new_ctx();
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct afs_file *f;
    int err = afs_file_from_fd(ctx, p[0], AFS_RDONLY, AFS_MODE_SYNC, &f);
    cr_assert_eq(err, 0, "afs_file_from_fd: %s", afs_strerror(err));
    struct trickle t;
    pthread_t th = trickle_start(&t, p[1], NULL, TRICKLE_BYTES, 5);
    read_pos_all(f, TRICKLE_BYTES, 6, false);
    trickle_join(th, &t);
    cr_assert_eq(afs_close(f), 0);
}

T_PIPE(afs_read_async_reads_a_fifo)
{
    struct afs_ctx *ctx = t_new_ctx();
    const char *fifo = t_path("fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo: %s", strerror(errno));
    struct trickle t;
    pthread_t th = trickle_start(&t, -1, fifo, TRICKLE_BYTES, 7);
    struct afs_file *f;
    int err = afs_open(ctx, fifo, AFS_RDONLY, 0, AFS_MODE_ASYNC, &f);
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    read_pos_all(f, TRICKLE_BYTES, 8, true);
    trickle_join(th, &t);
    cr_assert_eq(afs_close(f), 0);
}

T_PIPE(afs_read_reads_a_socketpair)
{
    struct afs_ctx *ctx = t_new_ctx();
    for (int async = 0; async < 2; async++) {
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        struct afs_file *f;
        int err = afs_file_from_fd(ctx, sv[0], AFS_RDWR, async ? AFS_MODE_ASYNC : AFS_MODE_SYNC,
                                   &f);
        cr_assert_eq(err, 0, "afs_file_from_fd: %s", afs_strerror(err));
        struct trickle t;
        pthread_t th = trickle_start(&t, sv[1], NULL, TRICKLE_BYTES / 2, 9 + (unsigned)async);
        read_pos_all(f, TRICKLE_BYTES / 2, 11, async);
        trickle_join(th, &t);
        cr_assert_eq(afs_close(f), 0);
    }
}

/* The reading side of the write tests: plain read() until EOF, checking every byte. */
struct drain {
    int         fd;
    const char *path;
    size_t      got;
    bool        ok;
    int         err;
};

static void *drain_main(void *arg)
{
    struct drain *d = arg;
    if (d->fd < 0 && (d->fd = open(d->path, O_RDONLY)) < 0) {
        d->err = errno;
        return NULL;
    }
    static _Thread_local char buf[100000];
    d->ok = true;
    for (;;) {
        ssize_t r = read(d->fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            d->err = errno;
            break;
        }
        if (r == 0)
            break;
        if (!t_check(buf, (size_t)r, d->got))
            d->ok = false;
        d->got += (size_t)r;
        if (d->got % 7 == 0)
            usleep(500); /* a slow reader now and then: the pipe fills up */
    }
    close(d->fd);
    return NULL;
}

/* Writes total pattern bytes in pieces of random size through write_fn. */
static void write_pieces(size_t total, unsigned seed, void *w,
                         void (*write_fn)(void *w, const char *buf, size_t n))
{
    char *buf = malloc((size_t)2 << 20);
    cr_assert_not_null(buf);
    size_t off = 0;
    while (off < total) {
        size_t n = rand_r(&seed) % 3 == 0 ? (size_t)rand_r(&seed) % 100 + 1
                                          : (size_t)rand_r(&seed) % ((size_t)2 << 20) + 1;
        if (n > total - off)
            n = total - off;
        t_fill(buf, n, off);
        write_fn(w, buf, n);
        off += n;
    }
    free(buf);
}

static void stream_write_fn(void *w, const char *buf, size_t n)
{
    struct afs_stream *s = w;
    cr_assert_eq(afs_fwrite(buf, 1, n, s), n, "afs_fwrite: %s", afs_strerror(afs_ferror(s)));
}

static void file_write_fn(void *w, const char *buf, size_t n)
{
    struct afs_file *f = w;
    ssize_t r = afs_write(f, buf, n);
    if (f && r == 0 && n > 0) { /* async: wait for it */
        int done = afs_last_op_wait(f, &r);
        cr_assert_eq(done, 1);
    }
    cr_assert_eq(r, (ssize_t)n, "afs_write: %s", afs_strerror((int)r));
}

T_PIPE(stream_writes_a_fifo)
{
    struct afs_ctx *ctx = t_new_ctx();
    const char *fifo = t_path("fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo: %s", strerror(errno));
    struct drain d = {-1, fifo, 0, false, 0};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, drain_main, &d), 0);
    struct afs_stream *s;
    int err = afs_fopen(ctx, fifo, "w", &s);
    cr_assert_eq(err, 0, "afs_fopen: %s", afs_strerror(err));
    write_pieces(TRICKLE_BYTES, 12, s, stream_write_fn);
    cr_assert_eq(afs_fclose(s), 0);
    pthread_join(th, NULL);
    cr_assert_eq(d.err, 0, "reader: %s", strerror(d.err));
    cr_assert_eq(d.got, TRICKLE_BYTES);
    cr_assert(d.ok, "the reader got bytes out of order");
}

T_PIPE(afs_write_writes_a_pipe)
{
    struct afs_ctx *ctx = t_new_ctx();
    for (int async = 0; async < 2; async++) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct drain d = {p[0], NULL, 0, false, 0};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, drain_main, &d), 0);
        struct afs_file *f;
        cr_assert_eq(afs_file_from_fd(ctx, p[1], AFS_WRONLY,
                                      async ? AFS_MODE_ASYNC : AFS_MODE_SYNC, &f), 0);
        write_pieces(TRICKLE_BYTES / 2, 13 + (unsigned)async, f, file_write_fn);
        cr_assert_eq(afs_close(f), 0);
        pthread_join(th, NULL);
        cr_assert_eq(d.err, 0, "reader: %s", strerror(d.err));
        cr_assert_eq(d.got, TRICKLE_BYTES / 2);
        cr_assert(d.ok, "the reader got bytes out of order");
    }
}

/* The positional calls need offsets: -ESPIPE, and nothing is consumed from the pipe. */
T_PIPE(positional_calls_refuse_a_pipe)
{
    struct afs_ctx *ctx = t_new_ctx();
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct afs_file *f, *w;
    cr_assert_eq(afs_file_from_fd(ctx, p[0], AFS_RDONLY, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_file_from_fd(ctx, p[1], AFS_WRONLY, AFS_MODE_SYNC, &w), 0);
    char buf[16];
    t_fill(buf, sizeof buf, 0);
    cr_assert_eq(afs_pwrite(w, buf, 8, 0), -ESPIPE);
    cr_assert_eq(afs_write(w, buf, 8), 8);
    cr_assert_eq(afs_pread(f, buf, 4, 0), -ESPIPE);
    cr_assert_eq(afs_pread(f, buf, 4, 100), -ESPIPE);
    struct iovec iov = {buf, 4};
    cr_assert_eq(afs_preadv(f, &iov, 1, 0), -ESPIPE);
    struct afs_op op;
    memset(&op, 0, sizeof op);
    cr_assert_eq(afs_queue_read(&op, f, buf, 4, 0, (afs_cb *)abort, NULL), -ESPIPE);
    cr_assert_eq(afs_queue_write(&op, w, buf, 4, 0, (afs_cb *)abort, NULL), -ESPIPE);
    cr_assert_eq(afs_seek(f, 0, SEEK_SET), -ESPIPE);
    memset(buf, 0, sizeof buf);
    cr_assert_eq(afs_read(f, buf, 8), 8);
    cr_assert(t_check(buf, 8, 0), "a refused call consumed data");
    cr_assert_eq(afs_close(w), 0);
    cr_assert_eq(afs_read(f, buf, 8), 0); /* the writer is gone: end of file */
    cr_assert_eq(afs_close(f), 0);
}

/* ------------------------------------------------------------------------------------------
 * Short reads of regular files: one read, not two, when the size is known.
 * ---------------------------------------------------------------------------------------- */

static struct afs__syscalls saved_sys;
static int preads;

static ssize_t count_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    preads++;
    return saved_sys.pread(fd, buf, len, off);
}

static void count_setup(void)
{
    t_setup();
    saved_sys = afs__sys;
    afs__sys.pread = count_pread;
    preads = 0;
}

static void count_teardown(void)
{
    afs__sys = saved_sys;
    t_teardown();
}

#define T_EOF(name) Test(eof, name, .init = count_setup, .fini = count_teardown, .timeout = 30)

T_EOF(short_read_at_known_size_is_one_read)
{
    struct afs_ctx *ctx = t_new_ctx();
    const char *p = t_path("small");
    t_make_file(p, 3920);
    struct afs_file *f;
    cr_assert_eq(afs_open(ctx, p, AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    char buf[4096];
    preads = 0;
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), 3920); /* inline: sync_threshold */
    cr_assert(t_check(buf, 3920, 0));
    cr_assert_eq(preads, 1, "%d reads for a file of known size", preads);
    struct afs_stats st;
    afs_ctx_stats(ctx, &st);
    cr_assert_eq(st.eof_skips, 1);
    cr_assert_eq(st.eof_checks, 0);
    cr_assert_eq(afs_close(f), 0);
}

/* The same through the backend: sync_threshold 0 sends even small reads there. */
T_EOF(short_read_at_known_size_through_backend)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.sync_threshold = 0;
    struct afs_ctx *ctx = t_ctx = t_ctx_cfg(&cfg);
    const char *p = t_path("small");
    t_make_file(p, 3920);
    struct afs_file *f;
    cr_assert_eq(afs_open(ctx, p, AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    char buf[4096];
    preads = 0;
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 100), 3820);
    cr_assert(t_check(buf, 3820, 100));
    struct afs_stats st;
    afs_ctx_stats(ctx, &st);
    cr_assert_eq(st.eof_skips, 1);
    cr_assert_eq(st.eof_checks, 0);
    /* The thread pool and the sync backend make their reads through the table. */
    const char *b = afs_ctx_backend(ctx);
    if (!strcmp(b, "threads") || !strcmp(b, "sync") || !strcmp(b, "libaio"))
        cr_assert_eq(preads, 1, "%d reads on %s", preads, b);
    cr_assert_eq(afs_close(f), 0);
}

/* The size learned at open is a hint: a file that shrank or grew since reads as it is. */
T_EOF(changed_size_is_confirmed)
{
    struct afs_ctx *ctx = t_new_ctx();
    const char *p = t_path("small");
    t_make_file(p, 3920);
    struct afs_file *f;
    cr_assert_eq(afs_open(ctx, p, AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(truncate(p, 2000), 0);
    char buf[4096];
    preads = 0;
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), 2000);
    cr_assert_eq(preads, 2, "a short read before the known size must be confirmed");
    struct afs_stats st;
    afs_ctx_stats(ctx, &st);
    cr_assert_eq(st.eof_checks, 1);
    cr_assert_eq(st.eof_skips, 0);
    t_make_file(p, 6000);
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), 4096);
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 4096), 6000 - 4096);
    cr_assert(t_check(buf, 6000 - 4096, 4096));
    cr_assert_eq(afs_close(f), 0);
}

/* A write through the library that may move the end makes the size unknown again. */
T_EOF(own_write_forgets_the_size)
{
    struct afs_ctx *ctx = t_new_ctx();
    const char *p = t_path("small");
    t_make_file(p, 3920);
    struct afs_file *f;
    cr_assert_eq(afs_open(ctx, p, AFS_RDWR, 0, AFS_MODE_SYNC, &f), 0);
    char buf[4096];
    t_fill(buf, 100, 3920);
    cr_assert_eq(afs_pwrite(f, buf, 100, 3920), 100);
    preads = 0;
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), 4020);
    cr_assert(t_check(buf, 4020, 0));
    cr_assert_eq(preads, 2);
    cr_assert_eq(afs_file_size(f), 4020); /* learned again */
    preads = 0;
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), 4020);
    cr_assert_eq(preads, 1);
    cr_assert_eq(afs_close(f), 0);
}

#ifndef _WIN32
#ifdef __linux__
#include <dirent.h>
#include <sys/syscall.h>

/* SIGPIPE bits in one line of /proc/self/task/TID/status ("SigBlk:\t0000000000001000"). */
static int status_has_sigpipe(const char *tid, const char *field)
{
    char path[128], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%s/status", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int has = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            has = (strtoull(line + n + 1, NULL, 16) >> (SIGPIPE - 1)) & 1;
    fclose(f);
    return has;
}
#endif

/* The threads of this process that block SIGPIPE. */
static int sigpipe_blockers(void)
{
    int n = 0;
#ifdef __linux__
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n += status_has_sigpipe(e->d_name, "SigBlk") == 1;
    closedir(d);
#endif
    return n;
}

/* Writes to a pipe whose reader has gone, many through the backend (a pool thread on the
 * threads backend): -EPIPE each, the process lives (SIGPIPE has its default action), no
 * SIGPIPE is left pending anywhere, and the caller's signal mask is as it was. The pool's
 * threads keep SIGPIPE blocked for good (their writes need no mask calls); only they do. */
T_PIPE(pipe_writes_to_a_gone_reader_leave_no_sigpipe)
{
    signal(SIGPIPE, SIG_DFL);
    int blockers = sigpipe_blockers();
    (void)blockers;
    t_new_ctx();
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    close(fds[0]);
    struct afs_file *w;
    cr_assert_eq(afs_file_from_fd(t_ctx, fds[1], AFS_WRONLY, AFS_MODE_SYNC, &w), 0);
    static char big[256 << 10];
    for (int i = 0; i < 50; i++)
        cr_assert_eq(afs_write(w, big, sizeof big), -EPIPE);
    cr_assert_eq(afs_write(w, big, 100), -EPIPE); /* small: inline */
    cr_assert_eq(afs_close(w), 0);
    /* A stream, written on this thread (outside a task): a big write straight from the
     * caller's buffer fails at once, as fwrite does; a small one at the flush. */
    cr_assert_eq(pipe(fds), 0);
    close(fds[0]);
    char path[64];
    snprintf(path, sizeof path, "/dev/fd/%d", fds[1]);
    struct afs_stream *s;
    cr_assert_eq(afs_fopen(t_ctx, path, "w", &s), 0);
    cr_assert_eq(afs_fwrite(big, 1, sizeof big, s), 0);
    cr_assert_eq(afs_ferror(s), -EPIPE);
    cr_assert_eq(afs_fflush(s), -EPIPE);
    cr_assert_eq(afs_fclose(s), -EPIPE);
    cr_assert_eq(afs_fopen(t_ctx, path, "w", &s), 0);
    cr_assert_eq(afs_fwrite(big, 1, 100, s), 100);
    cr_assert_eq(afs_fflush(s), -EPIPE);
    cr_assert_eq(afs_fclose(s), -EPIPE);
    close(fds[1]);

    sigset_t cur, pend;
    cr_assert_eq(pthread_sigmask(SIG_BLOCK, NULL, &cur), 0);
    cr_assert(!sigismember(&cur, SIGPIPE), "the caller's mask changed");
    cr_assert_eq(sigpending(&pend), 0);
    cr_assert(!sigismember(&pend, SIGPIPE));
#ifdef __linux__
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return;
    char self[32];
    snprintf(self, sizeof self, "%ld", (long)syscall(SYS_gettid));
    int threads = strcmp(afs_ctx_backend(t_ctx), "threads") == 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        /* The threads the library starts; io_uring's kernel workers and glibc's aio
         * threads, which write for the other backends, keep theirs to themselves. */
        if (threads || strcmp(e->d_name, self) == 0)
            cr_assert_neq(status_has_sigpipe(e->d_name, "SigPnd"), 1, "SIGPIPE pending on %s",
                          e->d_name);
        cr_assert_neq(status_has_sigpipe(e->d_name, "ShdPnd"), 1, "SIGPIPE pending");
    }
    closedir(d);
    if (threads)
        cr_assert_gt(sigpipe_blockers(), blockers,
                     "the pool's threads that wrote do not keep SIGPIPE blocked");
#endif
}
#endif

#ifndef _WIN32
/* afs_open with AFS_NONBLOCK: a FIFO without a writer opens at once (a plain open waits for
 * one), and the file is then used as any other: the flag is gone from the descriptor, and
 * the FIFO's data arrives once a writer comes. */
T_PIPE(open_nonblock_does_not_wait_for_a_fifo_writer)
{
    t_new_ctx();
    cr_assert_eq(mkfifo(t_path("fifo"), 0600), 0);
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("fifo"), AFS_RDONLY | AFS_NONBLOCK, 0, AFS_MODE_SYNC,
                          &f),
                 0);
    int w = open(t_path("fifo"), O_WRONLY | O_NONBLOCK); /* a reader is there: no wait */
    cr_assert_geq(w, 0, "open for writing: %s", strerror(errno));
    cr_assert_eq(write(w, "hi", 2), 2);
    char buf[8];
    cr_assert_eq(afs_read(f, buf, 2), 2); /* a read is short only at the end */
    cr_assert(memcmp(buf, "hi", 2) == 0);
    close(w);
    cr_assert_eq(afs_close(f), 0);
    /* A regular file: the descriptor is left blocking (io_uring would answer -EAGAIN). */
    t_make_file(t_path("reg"), 8192);
    cr_assert_eq(afs_open(t_ctx, t_path("reg"), AFS_RDONLY | AFS_NONBLOCK, 0, AFS_MODE_SYNC, &f),
                 0);
    cr_assert_eq(fcntl((int)afs_file_fd(f), F_GETFL) & O_NONBLOCK, 0);
    static char data[8192];
    cr_assert_eq(afs_pread(f, data, sizeof data, 0), (ssize_t)sizeof data);
    cr_assert(t_check(data, sizeof data, 0));
    cr_assert_eq(afs_close(f), 0);
}
#endif

#ifndef _WIN32
/* A regular file opened with AFS_NONBLOCK whose descriptor was never handed out keeps the
 * flag (no system call) until an op is queued on it: ops of data not in the page cache then
 * wait for the disk as on any file (io_uring may answer -EAGAIN to a non-blocking one), and
 * so does a sendfile from it. */
T_PIPE(open_nonblock_regular_file_keeps_the_flag_until_an_op)
{
    t_new_ctx();
    size_t len = 1 << 20;
    t_make_file(t_path("reg"), len);
    int fd = open(t_path("reg"), O_RDONLY);
    cr_assert_geq(fd, 0);
    char *data = malloc(len);
    cr_assert(data);
    for (int round = 0; round < 2; round++) {
        cr_assert_eq(fdatasync(fd), 0);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); /* out of the page cache */
        struct afs_file *f;
        cr_assert_eq(afs_open(t_ctx, t_path("reg"), AFS_RDONLY | AFS_NONBLOCK, 0,
                              AFS_MODE_SYNC, &f),
                     0);
        cr_assert_neq(fcntl(f->fd, F_GETFL) & O_NONBLOCK, 0, "the flag left at the open");
        if (round == 0) {
            memset(data, 0, len);
            cr_assert_eq(afs_pread(f, data, len, 0), (ssize_t)len);
            cr_assert(t_check(data, len, 0));
        } else if (afs__sys_sendfile_supported()) {
            int sv[2];
            cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
            struct afs_file *s;
            cr_assert_eq(afs_file_from_fd(t_ctx, sv[0], AFS_RDWR, AFS_MODE_SYNC, &s), 0);
            ssize_t n = afs_sendfile(s, f, 0, 4096);
            cr_assert_eq(n, 4096, "sendfile: %zd (%s)", n, n < 0 ? strerror((int)-n) : "");
            cr_assert_eq(read(sv[1], data, 4096), 4096);
            cr_assert(t_check(data, 4096, 0));
            cr_assert_eq(afs_close(s), 0);
            close(sv[1]);
        }
        if (round == 0 || afs__sys_sendfile_supported())
            cr_assert_eq(fcntl(f->fd, F_GETFL) & O_NONBLOCK, 0, "the flag kept past an op");
        cr_assert_eq(fcntl((int)afs_file_fd(f), F_GETFL) & O_NONBLOCK, 0);
        cr_assert_eq(afs_close(f), 0);
    }
    free(data);
    close(fd);
}

/* afs_file_open_size: the size the open saw, kept while the file changes; -1 for what is
 * not a regular file. */
T_PIPE(open_size_is_the_size_the_open_saw)
{
    t_new_ctx();
    t_make_file(t_path("reg"), 5000);
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("reg"), AFS_RDWR, 0, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_file_open_size(f), 5000);
    cr_assert_eq(afs_pwrite(f, "x", 1, 9999), 1);
    cr_assert_eq(afs_file_open_size(f), 5000);
    cr_assert_eq(afs_file_size(f), 10000);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_open(t_ctx, t_path("reg"), AFS_RDWR | AFS_TRUNC, 0, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_file_open_size(f), 0);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(mkfifo(t_path("fifo"), 0600), 0);
    cr_assert_eq(afs_open(t_ctx, t_path("fifo"), AFS_RDONLY | AFS_NONBLOCK, 0, AFS_MODE_SYNC,
                          &f),
                 0);
    cr_assert_eq(afs_file_open_size(f), -1);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_open(t_ctx, "/dev/null", AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_file_open_size(f), -1);
    cr_assert_eq(afs_close(f), 0);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(afs_file_from_fd(t_ctx, sv[0], AFS_RDWR, AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_file_open_size(f), -1);
    cr_assert_eq(afs_close(f), 0);
    close(sv[1]);
}
#endif

#ifdef __linux__
static void settle_noop_cb(struct afs_op *op)
{
    (void)op;
}

struct task_read {
    struct afs_file *f;
    ssize_t          r;
};

static void task_read_main(struct corio_task *t, void *arg)
{
    (void)t;
    struct task_read *tr = arg;
    static char buf[4096];
    tr->r = afs_pread(tr->f, buf, sizeof buf, 0);
}

/* The O_NONBLOCK an AFS_NONBLOCK open left on a regular file cannot be taken off (an O_PATH
 * descriptor put in its place refuses F_SETFL with EBADF): afs_file_fd() says so instead of
 * handing out the descriptor, the file's ops fail with the error rather than run with the
 * flag, and the fcntl is not tried again. */
T_PIPE(open_nonblock_flag_that_cannot_be_cleared_fails_fd_and_ops)
{
    t_new_ctx();
    t_make_file(t_path("reg"), 8192);
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("reg"), AFS_RDONLY | AFS_NONBLOCK, 0, AFS_MODE_SYNC,
                          &f),
                 0);
    int fd = (int)f->fd;
    int p = open(t_path("reg"), O_PATH | O_CLOEXEC);
    cr_assert_geq(p, 0);
    cr_assert_eq(dup2(p, fd), fd);
    close(p);
    cr_assert_eq(afs_file_fd(f), -EBADF);
    static char buf[8192];
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), -EBADF);
    struct afs_op op;
    cr_assert_eq(afs_queue_read(&op, f, buf, sizeof buf, 0, settle_noop_cb, NULL), -EBADF);
    /* A descriptor that would take the fcntl, back in its place: not looked at again. */
    int r = open(t_path("reg"), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    cr_assert_geq(r, 0);
    cr_assert_eq(dup2(r, fd), fd);
    close(r);
    cr_assert_eq(afs_file_fd(f), -EBADF);
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), -EBADF);
    /* In a task too, where a read of cached pages sets up no op. */
    struct task_read tr = {f, 0};
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    struct corio_sched *sched;
    cr_assert_eq(corio_sched_new(&sched, &cfg), 0);
    cr_assert_eq(corio_sched_run(sched, task_read_main, &tr), 0);
    corio_sched_free(sched);
    cr_assert_eq(tr.r, -EBADF, "a read in a task: %zd", tr.r);
    cr_assert_neq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0, "the fcntl was made again");
    cr_assert_eq(afs_close(f), 0);
}

struct settle_race {
    struct afs_file  *f;
    pthread_barrier_t *go;
    intptr_t          fd;
    int               fl; /* F_GETFL right after afs_file_fd() returned */
};

static void *settle_race_main(void *arg)
{
    struct settle_race *r = arg;
    pthread_barrier_wait(r->go);
    r->fd = afs_file_fd(r->f);
    r->fl = r->fd >= 0 ? fcntl((int)r->fd, F_GETFL) : -1;
    return NULL;
}

/* The O_NONBLOCK an AFS_NONBLOCK open left on a regular file is taken off by one thread:
 * threads asking for the descriptor at once all get it without the flag (none goes on
 * before the fcntl was made), and one that comes late, having seen the flag before another
 * took it off (the slow path called again), makes no second F_SETFL, which would undo a
 * change the descriptor's owner made in between. */
T_PIPE(open_nonblock_flag_is_cleared_once_across_threads)
{
    t_new_ctx();
    t_make_file(t_path("reg"), 8192);
    enum { THREADS = 4, ROUNDS = 100 };
    for (int round = 0; round < ROUNDS; round++) {
        struct afs_file *f;
        cr_assert_eq(afs_open(t_ctx, t_path("reg"), AFS_RDONLY | AFS_NONBLOCK, 0,
                              AFS_MODE_SYNC, &f),
                     0);
        pthread_barrier_t go;
        cr_assert_eq(pthread_barrier_init(&go, NULL, THREADS), 0);
        struct settle_race r[THREADS];
        pthread_t th[THREADS];
        for (int i = 0; i < THREADS; i++) {
            r[i] = (struct settle_race){.f = f, .go = &go};
            cr_assert_eq(pthread_create(&th[i], NULL, settle_race_main, &r[i]), 0);
        }
        for (int i = 0; i < THREADS; i++) {
            pthread_join(th[i], NULL);
            cr_assert_eq(r[i].fd, (intptr_t)f->fd);
            cr_assert_eq(r[i].fl & O_NONBLOCK, 0, "round %d: a caller got the descriptor "
                         "before the flag was off", round);
        }
        pthread_barrier_destroy(&go);
        cr_assert_eq(afs_close(f), 0);
    }
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("reg"), AFS_RDONLY | AFS_NONBLOCK, 0, AFS_MODE_SYNC,
                          &f),
                 0);
    int fd = (int)afs_file_fd(f);
    cr_assert_geq(fd, 0);
    int fl = fcntl(fd, F_GETFL);
    cr_assert_eq(fl & O_NONBLOCK, 0);
    cr_assert_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0); /* the owner's own choice */
    cr_assert_eq(afs__file_settle_slow(f), 0);
    cr_assert_neq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0, "a late settle set the flags again");
    cr_assert_eq(afs_close(f), 0);
}
#endif

#ifdef __linux__
#include <sys/ioctl.h>

/* The reader of a blocking pipe goes while a stream's write waits for room, part of it
 * moved: the kernel raises SIGPIPE and returns the bytes moved. The reader lets the pipe
 * fill, frees one page (the write waiting moves that much and waits again), waits for the
 * pipe to be full again, and closes. */
struct gone_reader {
    int fd;
};

static int pipe_held(int fd)
{
    int n = 0;
    return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

static void *reader_goes_midway(void *arg)
{
    struct gone_reader *g = arg;
    int cap = fcntl(g->fd, F_GETPIPE_SZ);
    while (pipe_held(g->fd) < cap)
        usleep(1000);
    static char page[4096];
    ssize_t r = read(g->fd, page, sizeof page);
    (void)r;
    while (pipe_held(g->fd) < cap)
        usleep(1000);
    usleep(20000);
    close(g->fd);
    return NULL;
}

T_PIPE(a_stream_whose_reader_goes_midway_through_a_write_gets_epipe)
{
    signal(SIGPIPE, SIG_DFL);
    t_new_ctx();
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    char path[64];
    snprintf(path, sizeof path, "/dev/fd/%d", fds[1]);
    struct afs_stream *s;
    cr_assert_eq(afs_fopen(t_ctx, path, "w", &s), 0);
    close(fds[1]);
    struct gone_reader g = {fds[0]};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, reader_goes_midway, &g), 0);
    static char big[1 << 20];
    size_t n = afs_fwrite(big, 1, sizeof big, s);
    cr_assert(n > 0 && n < sizeof big, "wrote %zu", n);
    cr_assert_eq(afs_ferror(s), -EPIPE);
    cr_assert_eq(afs_fclose(s), -EPIPE);
    pthread_join(th, NULL);
    sigset_t pend;
    cr_assert_eq(sigpending(&pend), 0);
    cr_assert(!sigismember(&pend, SIGPIPE), "a SIGPIPE is left pending");
}
#endif

/* SIGPIPE pending on this thread (SigPnd) and on the process (ShdPnd), as "tp" bits. */
static int sigpipe_where(void)
{
    char self[32];
    snprintf(self, sizeof self, "%ld", (long)syscall(SYS_gettid));
    return (status_has_sigpipe(self, "SigPnd") == 1 ? 2 : 0) |
           (status_has_sigpipe(self, "ShdPnd") == 1 ? 1 : 0);
}

/* A TCP connection over loopback whose peer has reset it: the next write or sendfile gets
 * -ECONNRESET (and raises no SIGPIPE). Returns the socket. */
static int reset_connection(void)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(l, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(l, 1), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)&a, &al), 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    int s = accept(l, NULL, NULL);
    cr_assert_geq(s, 0);
    close(l);
    struct linger lg = {1, 0}; /* close sends a reset */
    cr_assert_eq(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(c);
    struct pollfd p = {s, POLLIN, 0};
    cr_assert_eq(poll(&p, 1, 5000), 1);
    cr_assert(p.revents & (POLLERR | POLLHUP), "no reset seen");
    return s;
}

/* With SIGPIPE blocked, one already pending (raised on this thread, or sent to the process,
 * which every thread blocks it in) stays pending across writes to a pipe whose reader has
 * gone (-EPIPE), made on this thread (a stream outside a task; the system call table's
 * write), and the write's own is taken back: afterwards SIGPIPE is pending exactly where it
 * was before. So after short writes that raised none (a full non-blocking pipe) and a
 * sendfile to a reset connection. */
T_PIPE(sigpipe_pending_before_a_write_stays_and_the_writes_is_taken_back)
{
    signal(SIGPIPE, SIG_DFL);
    t_new_ctx();
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    cr_assert_eq(pthread_sigmask(SIG_BLOCK, &pipe_set, &old), 0);
    cr_assert_eq(sigpipe_where(), 0);
    static char big[256 << 10];
    int file = open(t_path("src"), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    cr_assert_geq(file, 0);
    cr_assert_eq(pwrite(file, big, 4096, 0), 4096);
    for (int to_process = 0; to_process < 2; to_process++) {
        if (to_process)
            cr_assert_eq(kill(getpid(), SIGPIPE), 0);
        else
            cr_assert_eq(pthread_kill(pthread_self(), SIGPIPE), 0);
        int where = to_process ? 1 : 2;
        cr_assert_eq(sigpipe_where(), where);

        int fds[2];
        cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
        close(fds[0]);
        cr_assert_eq(afs__sys.pwrite(fds[1], big, 100, AFS__OFF_SEQ), -EPIPE);
        cr_assert_eq(sigpipe_where(), where, "after a write (%s)", to_process ? "process" : "thread");
        char path[64];
        snprintf(path, sizeof path, "/dev/fd/%d", fds[1]);
        struct afs_stream *s;
        cr_assert_eq(afs_fopen(t_ctx, path, "w", &s), 0);
        close(fds[1]);
        cr_assert_eq(afs_fwrite(big, 1, 100, s), 100);
        cr_assert_eq(afs_fflush(s), -EPIPE);
        cr_assert_eq(afs_fclose(s), -EPIPE);
        cr_assert_eq(sigpipe_where(), where, "after a stream's write");

        cr_assert_eq(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
        ssize_t n = afs__sys.pwrite(fds[1], big, sizeof big, AFS__OFF_SEQ);
        cr_assert(n > 0 && n < (ssize_t)sizeof big, "%zd", n);
        cr_assert_eq(sigpipe_where(), where, "after a short write");
        close(fds[0]);
        close(fds[1]);

        int sock = reset_connection();
        cr_assert_eq(afs__sys_sendfile(sock, file, 0, 4096), -ECONNRESET);
        cr_assert_eq(sigpipe_where(), where, "after a sendfile to a reset connection");
        cr_assert_eq(afs__sys_sendfile(sock, file, 0, 4096), -EPIPE);
        cr_assert_eq(sigpipe_where(), where, "after a sendfile to a closed connection");
        close(sock);

        struct timespec zero = {0, 0};
        cr_assert_eq(sigtimedwait(&pipe_set, NULL, &zero), SIGPIPE);
        cr_assert_eq(sigtimedwait(&pipe_set, NULL, &zero), -1, "a second SIGPIPE was pending");
    }
    close(file);
    cr_assert_eq(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
}

/* A thread that keeps SIGPIPE blocked for good (as the pool's do) writes while a SIGPIPE sent
 * to the process is pending (every thread blocks it): a short write to a full non-blocking
 * pipe and a sendfile to a reset connection raise none, and take none; an EPIPE takes back
 * only its own. */
struct pool_writer {
    int     pipe_w, pipe_r, sock, file;
    ssize_t cut, reset, epipe;
};

static void *pool_writer_main(void *arg)
{
    struct pool_writer *p = arg;
    static char big[256 << 10];
    afs__sys_block_sigpipe();
    p->cut = afs__sys.pwrite(p->pipe_w, big, sizeof big, AFS__OFF_SEQ);
    p->reset = afs__sys_sendfile(p->sock, p->file, 0, 4096);
    close(p->pipe_r);
    p->epipe = afs__sys.pwrite(p->pipe_w, big, 100, AFS__OFF_SEQ);
    return NULL;
}

T_PIPE(sigpipe_sent_to_the_process_is_not_taken_by_a_pool_threads_write)
{
    signal(SIGPIPE, SIG_DFL);
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    cr_assert_eq(pthread_sigmask(SIG_BLOCK, &pipe_set, &old), 0);
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    struct pool_writer p = {.pipe_w = fds[1], .pipe_r = fds[0], .sock = reset_connection()};
    p.file = open(t_path("src"), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    cr_assert_geq(p.file, 0);
    static char page[4096];
    cr_assert_eq(pwrite(p.file, page, sizeof page, 0), (ssize_t)sizeof page);
    cr_assert_eq(kill(getpid(), SIGPIPE), 0);
    cr_assert_eq(sigpipe_where(), 1);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, pool_writer_main, &p), 0);
    pthread_join(th, NULL);
    cr_assert(p.cut > 0 && p.cut < (ssize_t)(256 << 10), "%zd", p.cut);
    cr_assert_eq(p.reset, -ECONNRESET);
    cr_assert_eq(p.epipe, -EPIPE);
    cr_assert_eq(sigpipe_where(), 1, "the process's SIGPIPE was taken");
    struct timespec zero = {0, 0};
    cr_assert_eq(sigtimedwait(&pipe_set, NULL, &zero), SIGPIPE);
    cr_assert_eq(sigtimedwait(&pipe_set, NULL, &zero), -1, "a second SIGPIPE was pending");
    close(fds[1]);
    close(p.sock);
    close(p.file);
    cr_assert_eq(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
}

/* A SIGPIPE sent to the process while a write on this thread (SIGPIPE not blocked by the
 * caller) holds it blocked, waiting for room in a pipe, every other thread blocking it: a
 * handled signal then cuts the write short. The write raised no SIGPIPE, so it takes none:
 * the process's reaches its handler once the write gave the mask back. */
static volatile sig_atomic_t sigpipe_caught;

static void count_sigpipe(int sig)
{
    (void)sig;
    sigpipe_caught++;
}

static void ignore_usr1(int sig)
{
    (void)sig;
}

struct cut_write {
    int       rfd;
    pthread_t writer;
};

static void *cut_write_main(void *arg)
{
    struct cut_write *c = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int cap = fcntl(c->rfd, F_GETPIPE_SZ);
    while (pipe_held(c->rfd) < cap)
        usleep(1000);
    usleep(20000); /* the write waits for room */
    kill(getpid(), SIGPIPE);
    pthread_kill(c->writer, SIGUSR1);
    return NULL;
}

T_PIPE(sigpipe_sent_to_the_process_during_a_write_is_delivered)
{
    struct sigaction sa = {.sa_handler = count_sigpipe};
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGPIPE, &sa, NULL), 0);
    sa.sa_handler = ignore_usr1; /* no SA_RESTART: the write returns what it moved */
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigaddset(&set, SIGUSR1);
    cr_assert_eq(pthread_sigmask(SIG_UNBLOCK, &set, NULL), 0);
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    struct cut_write c = {fds[0], pthread_self()};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, cut_write_main, &c), 0);
    static char big[256 << 10];
    ssize_t n = afs__sys.pwrite(fds[1], big, sizeof big, AFS__OFF_SEQ);
    pthread_join(th, NULL);
    cr_assert(n > 0 && n < (ssize_t)sizeof big, "%zd", n);
    cr_assert_eq(sigpipe_caught, 1, "the process's SIGPIPE was taken by the write");
    close(fds[0]);
    close(fds[1]);
}

static atomic_int seq_writes, seq_big, seq_from_caller;
static struct afs__syscalls seq_saved;
static const unsigned char *seq_lo, *seq_hi; /* the caller's buffer */

static ssize_t seq_pwrite(afs__fd_t fd, const void *buf, size_t len, uint64_t off)
{
    if (off == AFS__OFF_SEQ) {
        atomic_fetch_add(&seq_writes, 1);
        if (len > 16 * 1024)
            atomic_fetch_add(&seq_big, 1);
        if ((const unsigned char *)buf >= seq_lo && (const unsigned char *)buf < seq_hi)
            atomic_fetch_add(&seq_from_caller, 1);
    }
    return seq_saved.pwrite(fd, buf, len, off);
}

/* Outside a task a stream writes a pipe on the caller's thread, in 16 KiB writes (so that
 * the reader starts on the first while the writer makes the next): small writes gathered
 * into such pieces (not 1 MiB ops), a big one straight from the caller's buffer; every byte
 * arrives once, in order. */
T_PIPE(stream_writes_a_pipe_in_pieces_on_the_callers_thread)
{
    t_new_ctx();
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct drain d = {.fd = p[0]};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, drain_main, &d), 0);
    char path[64];
    snprintf(path, sizeof path, "/dev/fd/%d", p[1]);
    struct afs_stream *s;
    cr_assert_eq(afs_fopen(t_ctx, path, "w", &s), 0);
    close(p[1]);
    /* Where the context waits on readiness, the pipe the stream opened is non-blocking
     * (its ops park in the engine): the pieces then follow the pipe's room, and only the
     * bytes are checked here (the next test is about that case). */
    int fd = (int)afs_file_fd(afs_stream_file(s));
    bool blocking = !(fcntl(fd, F_GETFL) & O_NONBLOCK);
    cr_assert_eq(!blocking, afs__sock_ready(t_ctx));
    static unsigned char buf[1 << 20];
    seq_lo = buf;
    seq_hi = buf + sizeof buf;
    seq_saved = afs__sys;
    afs__sys.pwrite = seq_pwrite;
    size_t off = 0;
    for (; off < 1 << 20; off += 100) {
        t_fill(buf, 100, off);
        cr_assert_eq(afs_fwrite(buf, 1, 100, s), 100);
    }
    int small = atomic_load(&seq_writes);
    cr_assert(!blocking || atomic_load(&seq_from_caller) == 0, "small writes are gathered");
    t_fill(buf, sizeof buf, off);
    cr_assert_eq(afs_fwrite(buf, 1, sizeof buf, s), sizeof buf);
    int big = atomic_load(&seq_writes) - small;
    off += sizeof buf;
    cr_assert_eq(afs_fclose(s), 0);
    afs__sys = seq_saved;
    pthread_join(th, NULL);
    cr_assert_eq(d.got, off);
    cr_assert(d.ok, "bytes lost, repeated or out of order");
    if (!blocking)
        return;
    /* 10,486 writes of 100 bytes: 64 pieces, 24 bytes left gathered. */
    cr_assert_eq(small, (1 << 20) / (16 * 1024), "%d writes for 1 MiB in 100-byte pieces", small);
    cr_assert_eq(atomic_load(&seq_big), 0, "a write of more than 16 KiB");
    /* The big one: the gathered 24 bytes and 16,360 of it, then 1 MiB - 16,360 bytes from
     * the caller's buffer in 64 writes. */
    cr_assert_eq(big, 65, "%d writes for the 1 MiB one", big);
    cr_assert_eq(atomic_load(&seq_from_caller), 64);
}

/* A stream on a pipe whose descriptor was made non-blocking: what the pipe has no room for
 * goes as an op that waits for room, and writes after it wait for it: a slow reader gets
 * every byte once, in order. */
T_PIPE(stream_writes_a_non_blocking_pipe_in_order)
{
    t_new_ctx();
    int p[2];
    cr_assert_eq(pipe(p), 0);
    char path[64];
    snprintf(path, sizeof path, "/dev/fd/%d", p[1]);
    struct afs_stream *s;
    cr_assert_eq(afs_fopen(t_ctx, path, "w", &s), 0);
    close(p[1]);
    int fd = (int)afs_file_fd(afs_stream_file(s));
    cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    struct drain d = {.fd = p[0]};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, drain_main, &d), 0);
    static unsigned char buf[300 * 1024];
    size_t off = 0;
    for (int i = 0; i < 40; i++) {
        size_t n = i % 3 == 0 ? sizeof buf : (size_t)(1 + i * 97);
        t_fill(buf, n, off);
        cr_assert_eq(afs_fwrite(buf, 1, n, s), n, "write %d", i);
        off += n;
    }
    cr_assert_eq(afs_fclose(s), 0);
    pthread_join(th, NULL);
    cr_assert_eq(d.err, 0);
    cr_assert_eq(d.got, off);
    cr_assert(d.ok, "bytes lost, repeated or out of order");
}

/* Regular files the kernel reads or writes only at the descriptor's position: /proc's
 * seq_file files, which seek and pread but take no pwrite (stdio writes them with write(2)),
 * and files whose driver refuses every offset (nonseekable_open: tracefs's trace_pipe, as
 * root), which are read as a pipe is. */
T_PIPE(stream_writes_a_proc_file_that_takes_no_pwrite)
{
#ifdef __linux__
    const char *path = "/proc/self/timerslack_ns";
    if (access(path, W_OK) != 0)
        cr_skip_test("%s not writable here", path);
    t_ctx = t_ctx_cfg(NULL);
    for (int round = 0; round < 2; round++) {
        const char *want = round ? "70001" : "60001";
        struct afs_stream *s;
        cr_assert_eq(afs_fopen(t_ctx, path, "w", &s), 0);
        cr_assert_eq(afs_fwrite(want, 1, 5, s), 5);
        int err = afs_fclose(s);
        cr_assert_eq(err, 0, "afs_fclose: %s", afs_strerror(err));
        char got[32] = {0};
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f);
        cr_assert_not_null(fgets(got, sizeof got, f));
        fclose(f);
        cr_assert_eq(atol(got), atol(want), "timerslack_ns is %s after writing %s", got, want);
    }
#else
    cr_skip_test("Linux only");
#endif
}

/* trace_pipe has one reader at a time (Linux 6.6: a second open is -EBUSY), and a reader
 * takes the lines another one waits for: the suites that run side by side (the native ones,
 * both Arm suites under qemu) take turns through an flock on trace_marker, held from the
 * first open of trace_pipe to the last close. */
T_PIPE(stream_reads_a_file_without_offsets)
{
#ifdef __linux__
    const char *path = "/sys/kernel/tracing/trace_pipe";
    int mk = open("/sys/kernel/tracing/trace_marker", O_WRONLY | O_CLOEXEC);
    if (mk < 0)
        cr_skip_test("trace_marker: %s", strerror(errno));
    cr_assert_eq(flock(mk, LOCK_EX), 0, "flock of trace_marker: %s", strerror(errno));
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        close(mk);
        cr_skip_test("%s: %s", path, strerror(e));
    }
    close(fd);
    t_ctx = t_ctx_cfg(NULL);
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, path, AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    char mark[64];
    snprintf(mark, sizeof mark, "afs-test-%d", (int)getpid());
    cr_assert_eq(write(mk, mark, strlen(mark)), (ssize_t)strlen(mark));
    char buf[4096];
    ssize_t n = afs_read(f, buf, 1); /* waits for the line that is there */
    cr_assert_eq(n, 1, "afs_read of trace_pipe: %s", afs_strerror((int)n));
    cr_assert_eq(afs_pread(f, buf, 1, 0), -ESPIPE);
    cr_assert_eq(afs_close(f), 0);
    close(mk); /* the next suite's turn */
#else
    cr_skip_test("Linux only");
#endif
}

/* A read of a FIFO whose writer never writes is cancelled by afs_close and by afs_ctx_free,
 * which return at once instead of waiting for data that never comes (io_uring held it in the
 * kernel). The writer: a descriptor of the test's, opened read-write so that no open waits. */
T_PIPE(close_and_ctx_free_end_a_read_nobody_answers)
{
    const char *fifo = t_path("fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo: %s", strerror(errno));
    int writer = open(fifo, O_RDWR | O_CLOEXEC);
    cr_assert_geq(writer, 0, "open: %s", strerror(errno));
    for (int by_free = 0; by_free < 2; by_free++) {
        struct afs_ctx *ctx = t_ctx_cfg(NULL);
        struct afs_file *f;
        int err = afs_open(ctx, fifo, AFS_RDONLY, 0, AFS_MODE_ASYNC, &f);
        cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
        char b[16];
        cr_assert_eq(afs_read(f, b, sizeof b), 0); /* queued: the result comes later */
        cr_assert_geq(afs_ctx_submit(ctx), 0);
        cr_assert_geq(afs_ctx_wait(ctx, 0, 0), 0);
        if (by_free) {
            afs_ctx_free(ctx); /* closes f */
        } else {
            cr_assert_eq(afs_close(f), 0);
            afs_ctx_free(ctx);
        }
    }
    close(writer);
}

/* A write to a pipe whose reader is slow is waited for by afs_close: what was written reaches
 * the reader whole. */
struct slow_reader {
    int    fd;
    size_t got;
};

static void *slow_read(void *arg)
{
    struct slow_reader *r = arg;
    usleep(200 * 1000);
    char buf[65536];
    ssize_t n;
    while ((n = read(r->fd, buf, sizeof buf)) > 0)
        r->got += (size_t)n;
    return NULL;
}

T_PIPE(close_waits_for_a_write_a_slow_reader_takes)
{
    struct afs_ctx *ctx = t_new_ctx();
    enum { LEN = 1 << 20 };
    char *data = malloc(LEN);
    memset(data, 'w', LEN);
    /* Blocking (a pool thread or the kernel's worker writes) and non-blocking (the readiness
     * engine parks the write where the backend has one). */
    for (int nb = 0; nb < 2; nb++) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct afs_file *f;
        cr_assert_eq(afs_file_from_fd(ctx, p[1], AFS_WRONLY | (nb ? AFS_NONBLOCK : 0),
                                      AFS_MODE_ASYNC, &f), 0);
        struct slow_reader r = {p[0], 0};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, slow_read, &r), 0);
        cr_assert_eq(afs_write(f, data, LEN), 0); /* queued: the result comes later */
        cr_assert_geq(afs_ctx_wait(ctx, 0, 0), 0);
        usleep(50 * 1000); /* the pipe is full by now, the write waits for the reader */
        cr_assert_geq(afs_ctx_wait(ctx, 0, 0), 0);
        cr_assert_eq(afs_close(f), 0);
        pthread_join(th, NULL);
        close(p[0]);
        cr_assert_eq(r.got, LEN, "%s: the reader got %zu of %d bytes", nb ? "non-blocking" :
                     "blocking", r.got, LEN);
    }
    free(data);
}

#ifndef _WIN32
/* A deadline in a corio task that ends a stream's wait on a FIFO: the error is -ETIMEDOUT;
 * a read cut short leaves nothing behind (after afs_clearerr the next read gets the data,
 * not the old op's -ECANCELED), and a write cut short after the pipe took part of a chunk
 * is reported (the rest of the chunk never went: never a silent loss). */
struct fifo_peer {
    const char *path;
    size_t      got;
};

static void *fifo_late_writer(void *arg)
{
    struct fifo_peer *p = arg;
    sigset_t pipe_set; /* a reader gone early is the test's failure, not a SIGPIPE */
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
    int fd = open(p->path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    usleep(200 * 1000);
    (void)!write(fd, "0123456789", 10);
    close(fd);
    return NULL;
}

static void *fifo_late_reader(void *arg)
{
    struct fifo_peer *p = arg;
    int fd = open(p->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    usleep(200 * 1000);
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        p->got += (size_t)n;
    close(fd);
    return NULL;
}

struct deadline_io {
    struct afs_ctx *ctx;
    const char     *path;
    int             first_err, second_err; /* reader: afs_ferror after each read */
    size_t          second;                /* reader: bytes of the read after afs_clearerr */
    char            data[16];
    int             reported;              /* writer: afs_fflush under the deadline */
    size_t          taken;                 /* writer: what afs_fwrite took */
};

static void deadline_reader(struct corio_task *t, void *arg)
{
    struct deadline_io *d = arg;
    struct afs_stream *s;
    if (afs_fopen(d->ctx, d->path, "r", &s) < 0)
        return; /* (asserts here would leave the task's stack) */
    corio_set_deadline(t, corio_now() + 20 * 1000 * 1000);
    d->first_err = afs_fread(d->data, 1, 10, s) == 0 ? afs_ferror(s) : 1;
    corio_set_deadline(t, INT64_MAX);
    afs_clearerr(s);
    d->second = afs_fread(d->data, 1, 10, s);
    d->second_err = afs_ferror(s);
    afs_fclose(s);
}

static void deadline_writer(struct corio_task *t, void *arg)
{
    struct deadline_io *d = arg;
    struct afs_stream *s;
    d->reported = 1;
    if (afs_fopen(d->ctx, d->path, "w", &s) < 0)
        return;
    static char data[1 << 20];
    memset(data, 'd', sizeof data);
    corio_set_deadline(t, corio_now() + 100 * 1000 * 1000);
    d->taken = afs_fwrite(data, 1, sizeof data, s);
    d->reported = afs_fflush(s);
    corio_set_deadline(t, INT64_MAX);
    afs_clearerr(s);
    afs_fclose(s);
}

static void deadline_run(struct afs_ctx *ctx, corio_fn *fn, struct deadline_io *d)
{
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = ctx;
    struct corio_sched *sched;
    cr_assert_eq(corio_sched_new(&sched, &cfg), 0);
    cr_assert_eq(corio_sched_run(sched, fn, d), 0);
    corio_sched_free(sched);
}

T_PIPE(stream_on_a_fifo_in_a_task_past_a_deadline)
{
    struct afs_ctx *ctx = t_new_ctx();
    cr_assert_eq(mkfifo(t_path("dl_in"), 0600), 0);
    cr_assert_eq(mkfifo(t_path("dl_out"), 0600), 0);
    struct fifo_peer w = {t_path("dl_in"), 0}, r = {t_path("dl_out"), 0};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, fifo_late_writer, &w), 0);
    struct deadline_io d = {.ctx = ctx, .path = w.path};
    deadline_run(ctx, deadline_reader, &d);
    pthread_join(th, NULL);
    cr_assert_eq(d.first_err, -ETIMEDOUT, "the read past the deadline: %d", d.first_err);
    cr_assert_eq(d.second_err, 0, "the read after afs_clearerr: %s",
                 afs_strerror(d.second_err));
    cr_assert_eq(d.second, 10);
    cr_assert_eq(memcmp(d.data, "0123456789", 10), 0);

    cr_assert_eq(pthread_create(&th, NULL, fifo_late_reader, &r), 0);
    d = (struct deadline_io){.ctx = ctx, .path = r.path};
    deadline_run(ctx, deadline_writer, &d);
    pthread_join(th, NULL);
    /* The sync backend writes as it queues: the deadline finds nothing in flight. */
    cr_assert(d.reported == 0 || d.reported == -ETIMEDOUT, "afs_fflush: %d", d.reported);
    cr_assert(d.taken == sizeof(char[1 << 20]) || d.reported < 0);
    cr_assert(r.got == sizeof(char[1 << 20]) || d.reported == -ETIMEDOUT,
              "the reader got %zu bytes, and the stream said nothing", r.got);
}
#endif
