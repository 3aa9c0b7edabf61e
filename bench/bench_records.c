/* bench_records: a program's records through stdio and through an asyncfs stream, as a
 * user replacing fread/fwrite runs them: writes of RECORD bytes to a file or to stdout (a
 * pipe when run as `bench_records ... - | cat >/dev/null`), reads of RECORD bytes from a
 * file or stdin (`cat FILE | bench_records ... -`).
 *
 * Usage: bench_records stdio|afs write|read RECORD_BYTES MIB PATH
 *   PATH   the file, or - for stdout (write) / stdin (read)
 * Prints to stderr: path kind, bytes, seconds (the whole loop, the close included) and a
 * checksum of what was read. bench/run_records.sh alternates the two sides. */
#define _GNU_SOURCE
#include <asyncfs.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_records stdio|afs write|read RECORD_BYTES MIB PATH|-\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc != 6)
        return usage();
    int afs = strcmp(argv[1], "afs") == 0, wr = strcmp(argv[2], "write") == 0;
    size_t rec = strtoull(argv[3], NULL, 0);
    uint64_t total = strtoull(argv[4], NULL, 0) << 20;
    const char *path = argv[5];
    int std = strcmp(path, "-") == 0;
    if ((!afs && strcmp(argv[1], "stdio")) || (!wr && strcmp(argv[2], "read")) || !rec)
        return usage();
    unsigned char *buf = malloc(rec);
    if (!buf)
        return 1;
    for (size_t i = 0; i < rec; i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    uint64_t bytes = 0, sum = 0;
    double t0 = now();
    if (afs) {
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
