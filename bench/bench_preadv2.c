/* What a read that never waits costs against a plain one: a warm file read from start to end
 * in requests of one size, by pread() and by preadv2() (with RWF_NOWAIT, or with no flags
 * given -0), the two alternated pass by pass on fresh descriptors. Prints the median, least
 * and greatest of pread's time over preadv2's, pair by pair (under 1: preadv2 is slower).
 *
 *   bench_preadv2 FILE [KiB per read (64)] [pairs (41)] [-0]
 *
 * The file's pages should be cached (read it once first). Linux only. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { PAIRS_MAX = 1001 };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One pass over the file; how 0: pread, 1: preadv2. Returns seconds, or -1. */
static double pass(const char *path, char *buf, size_t rs, int how, int flags)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    double t = now();
    off_t off = 0;
    for (;;) {
        ssize_t n;
        if (how == 0) {
            n = pread(fd, buf, rs, off);
        } else {
            struct iovec v = {buf, rs};
            n = preadv2(fd, &v, 1, off, flags);
        }
        if (n < 0) {
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        off += n;
    }
    t = now() - t;
    close(fd);
    return t;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_preadv2 FILE [KiB per read (64)] [pairs (41)] [-0]\n");
        return 2;
    }
    size_t rs = (argc > 2 ? strtoull(argv[2], NULL, 0) : 64) * 1024;
    int pairs = argc > 3 ? atoi(argv[3]) : 41;
    int flags = argc > 4 && !strcmp(argv[4], "-0") ? 0 : RWF_NOWAIT;
    if (rs == 0 || pairs < 1 || pairs > PAIRS_MAX) {
        fprintf(stderr, "bench_preadv2: bad size or pairs\n");
        return 2;
    }
    char *buf = aligned_alloc(4096, (rs + 4095) & ~(size_t)4095);
    static double q[PAIRS_MAX];
    for (int p = 0; p < pairs; p++) {
        double t[2];
        for (int k = 0; k < 2; k++) {
            int how = (p & 1) ? 1 - k : k; /* the order turns each pair */
            if ((t[how] = pass(argv[1], buf, rs, how, flags)) < 0) {
                perror(argv[1]);
                return 1;
            }
        }
        q[p] = t[0] / t[1];
    }
    qsort(q, (size_t)pairs, sizeof q[0], cmp);
    printf("reads of %zu KiB, preadv2 flags %s, %d pairs: pread time / preadv2 time median "
           "%.3f (least %.3f, greatest %.3f)\n", rs / 1024, flags ? "RWF_NOWAIT" : "0", pairs,
           q[pairs / 2], q[0], q[pairs - 1]);
    free(buf);
    return 0;
}
