/* bench_records: a program's records through stdio and through an asyncfs stream, as a
 * user replacing fread/fwrite runs them: writes of RECORD bytes to a file or to stdout (a
 * pipe when run as `bench_records ... - | cat >/dev/null`), reads of RECORD bytes from a
 * file or stdin (`cat FILE | bench_records ... -`). Unbuffered, one call a record: `raw`
 * (read(2)/write(2)) against `task` (afs_read/afs_write in a corio task, the descriptor
 * adopted as it is).
 *
 * Usage: bench_records stdio|afs|raw|task write|read RECORD_BYTES MIB PATH
 *   PATH   the file, or - for stdout (write) / stdin (read)
 * Prints to stderr: path kind, bytes, seconds (the whole loop, the close included) and a
 * checksum of what was read. bench/run_records.sh alternates the two sides. */
#define _GNU_SOURCE
#include <asyncfs.h>
#include <corio.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_records stdio|afs|raw|task write|read RECORD_BYTES MIB PATH|-\n");
    return 2;
}

/* One call a record on fd: read(2)/write(2), or afs_read/afs_write in a corio task. */
struct calls {
    int            fd, wr, task;
    unsigned char *buf;
    size_t         rec;
    uint64_t       total, bytes, sum;
    int            err;
};

static void calls_loop(struct calls *c, struct afs_file *f)
{
    for (;;) {
        if (c->wr && c->bytes >= c->total)
            return;
        ssize_t n = c->wr ? (f ? afs_write(f, c->buf, c->rec) : write(c->fd, c->buf, c->rec))
                          : (f ? afs_read(f, c->buf, c->rec) : read(c->fd, c->buf, c->rec));
        if (n <= 0) {
            c->err = n < 0 ? (f ? (int)n : -1) : 0;
            return;
        }
        if (!c->wr)
            c->sum += c->buf[0] + c->buf[n - 1];
        c->bytes += (uint64_t)n;
    }
}

static void calls_task(struct corio_task *t, void *arg)
{
    struct calls *c = arg;
    struct afs_file *f;
    c->err = afs_file_from_fd(corio_sched_ctx(corio_task_sched(t)), c->fd,
                              c->wr ? AFS_WRONLY : AFS_RDONLY, AFS_MODE_SYNC, &f);
    if (c->err)
        return;
    calls_loop(c, f);
    afs_close(f);
}

int main(int argc, char **argv)
{
    if (argc != 6)
        return usage();
    int afs = strcmp(argv[1], "afs") == 0, wr = strcmp(argv[2], "write") == 0;
    int raw = strcmp(argv[1], "raw") == 0, task = strcmp(argv[1], "task") == 0;
    size_t rec = strtoull(argv[3], NULL, 0);
    uint64_t total = strtoull(argv[4], NULL, 0) << 20;
    const char *path = argv[5];
    int std = strcmp(path, "-") == 0;
    if ((!afs && !raw && !task && strcmp(argv[1], "stdio")) || (!wr && strcmp(argv[2], "read")) ||
        !rec)
        return usage();
    unsigned char *buf = malloc(rec);
    if (!buf)
        return 1;
    for (size_t i = 0; i < rec; i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    uint64_t bytes = 0, sum = 0;
    double t0 = now();
    if (raw || task) {
        struct calls c = {.fd = std ? (wr ? 1 : 0)
                                    : open(path, wr ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY, 0644),
                          .wr = wr, .task = task, .buf = buf, .rec = rec, .total = total};
        if (c.fd < 0) {
            perror(path);
            return 1;
        }
        int err = task ? corio_run(calls_task, &c) : (calls_loop(&c, NULL), 0);
        if (err || c.err) {
            fprintf(stderr, "%s: %s\n", path, err || c.err != -1 ? afs_strerror(err ? err : c.err)
                                                                 : "read/write failed");
            return 1;
        }
        if (!std && !task)
            close(c.fd);
        bytes = c.bytes;
        sum = c.sum;
    } else if (afs) {
        struct afs_ctx *ctx;
        int err = afs_ctx_new(&ctx, NULL);
        struct afs_stream *s = NULL;
        if (!err)
            err = afs_fopen(ctx, std ? (wr ? "/dev/stdout" : "/dev/stdin") : path,
                            wr ? "w" : "r", &s);
        if (err) {
            fprintf(stderr, "%s: %s\n", path, afs_strerror(err));
            return 1;
        }
        if (wr) {
            for (; bytes < total; bytes += rec)
                if (afs_fwrite(buf, 1, rec, s) != rec)
                    break;
        } else {
            size_t n;
            while ((n = afs_fread(buf, 1, rec, s)) > 0) {
                sum += buf[0] + buf[n - 1];
                bytes += n;
            }
        }
        err = afs_ferror(s);
        int cerr = afs_fclose(s);
        if (err || cerr) {
            fprintf(stderr, "%s: %s\n", path, afs_strerror(err ? err : cerr));
            return 1;
        }
        afs_ctx_free(ctx);
    } else {
        FILE *f = std ? (wr ? stdout : stdin) : fopen(path, wr ? "w" : "r");
        if (!f) {
            perror(path);
            return 1;
        }
        if (wr) {
            for (; bytes < total; bytes += rec)
                if (fwrite(buf, 1, rec, f) != rec)
                    break;
        } else {
            size_t n;
            while ((n = fread(buf, 1, rec, f)) > 0) {
                sum += buf[0] + buf[n - 1];
                bytes += n;
            }
        }
        if (ferror(f) | fclose(f)) {
            perror(path);
            return 1;
        }
    }
    fprintf(stderr, "%s %s %s %zu-byte records: %llu bytes, %.3f s, sum %llu\n", argv[1],
            argv[2], std ? "pipe" : "file", rec, (unsigned long long)bytes, now() - t0,
            (unsigned long long)sum);
    free(buf);
    return 0;
}
