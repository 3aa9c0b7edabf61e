/* bench_stream: checksum a file with stdio fread and with afs_fread, doing CPU work on each
 * chunk, to show that the stream's read-ahead overlaps I/O and computation.
 *
 * Reports, each on a cold cache (page cache dropped before each run):
 *   io_stdio   fread alone, no work          io_afs    afs_fread alone, no work
 *   cpu        the work alone, on a cached buffer
 *   stdio      fread + work                  afs       afs_fread + work
 * and ratio = afs / max(I/O alone, CPU alone), where I/O alone is the faster of io_stdio and
 * io_afs. The target is <= 1.1: the stream takes about max(I/O, CPU), stdio their sum.
 * "in reads" is the time spent inside fread/afs_fread (waiting and copying); "cached" is the
 * share of the file in the page cache when the run starts and when it ends: a cold afs run
 * that ends with less than 100% read that much through its automatic O_DIRECT reads (the
 * stream goes direct only while the consumer is the bottleneck: expected for "afs", not for
 * "io_afs", which does no work and waits for the disk).
 *
 * The five runs are made -t times (default 3), forward then backward, and the fastest of
 * each counts. Order matters on some virtual machines: memory that the guest freed (the
 * dropped cache) is handed back to the host after a moment, and the first touch of such a
 * page costs a host fault, so a run's speed depends on how long ago the cache was dropped.
 *
 * Cold cache: as root, `sync; echo 3 > /proc/sys/vm/drop_caches`; otherwise
 * fdatasync + posix_fadvise(DONTNEED) on the file (drops its clean pages, no root needed).
 * mincore() tells how much of the file was still cached when each run started. -w measures
 * the warm case instead: the file is read once first and never dropped.
 *
 * Each round also gives the pair ratios stdio time / afs time (reads alone, and with the
 * work), and their medians over the rounds are printed beside the fastest: a pair ran
 * back to back, so its ratio holds when the machine's speed drifts between rounds.
 *
 * Usage: bench_stream [-f FILE] [-s MiB] [-r ROUNDS] [-c CHUNK_KiB] [-R READ_KiB] [-n CHUNKS]
 *                     [-B BYTES] [-t TIMES] [-K KiB] [-o OPENS] [-L BYTES] [-S N] [-p PHASES]
 *                     [-x] [-d | -b] [-w] [-k]
 *   -f FILE     the file (default /var/tmp/bench_stream.dat); made if missing or too small
 *   -s MiB      file size (default 1024)
 *   -r ROUNDS   hash rounds per byte, the CPU work (default 1)
 *   -c KiB      the stream's chunk size, and the read size unless -R (default 1024)
 *   -R KiB      read size of both paths (each fread / afs_fread call)
 *   -B BYTES    read size in bytes instead (records: a program reading a few bytes a call);
 *               reads under 4 KiB are not timed one by one ("in reads" is then 0: the
 *               clock would cost more than the read)
 *   -x          the work is a CRC-32 (slicing by 8, about 2 GB/s a core) instead of FNV
 *   -n CHUNKS   the stream's reads in flight (default 4)
 *   -t TIMES    repeats, the fastest counts (default 3)
 *   -K KiB      file size in KiB instead (small files; with -o)
 *   -o OPENS    each run opens the file, reads it through and closes it OPENS times (default
 *               1): the per-file costs of a program that reads many small files
 *   -L BYTES    each open reads only the first BYTES of the file (a program that reads
 *               headers), in reads of -R
 *   -S N        random access instead: each open makes N seeks (fseek / afs_fseek, SEEK_SET),
 *               each followed by one read of -R; the offsets are multiples of -R drawn from
 *               a fixed-seed PRNG, the same for both paths and every run
 *   -p PHASES   run only these, a comma-separated list of io_stdio, io_afs, cpu, stdio, afs
 *               (default all; for profilers and system-call counts of one loop)
 *   -d          afs path with AFS_STREAM_DIRECT (O_DIRECT for every chunk)
 *   -b          afs path with AFS_STREAM_BUFFERED (never O_DIRECT)
 *   -w          warm: the file stays in the page cache
 *   -k          keep the file (default: delete it if this run made it)
 * ASYNCFS_BACKEND picks the backend as usual. */
#define _GNU_SOURCE
#include <asyncfs.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static size_t   chunk = 1 << 20;
static size_t   rsize;  /* read size; 0: chunk */
static int      timed;  /* each read timed ("in reads"): reads of a page or more */
static unsigned rounds = 1;
static int      crc;    /* -x */
static unsigned opens = 1; /* -o: each run opens, reads through and closes the file this often */
static uint64_t head;       /* -L: each open reads only this many bytes (0: all) */
static unsigned seeks;      /* -S: each open seeks and reads this many times (0: in order) */
static uint64_t *seek_off;  /* -S: the offsets, the same for every run */
static uint32_t crc_tab[8][256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

/* CRC-32 (zlib's crc32() without the final xor), 8 bytes a step. */
static uint32_t crc32_8(uint32_t c, const unsigned char *p, size_t n)
{
    for (; n >= 8; p += 8, n -= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= c;
        c = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^ crc_tab[5][(lo >> 16) & 0xff] ^
            crc_tab[4][lo >> 24] ^ crc_tab[3][hi & 0xff] ^ crc_tab[2][(hi >> 8) & 0xff] ^
            crc_tab[1][(hi >> 16) & 0xff] ^ crc_tab[0][hi >> 24];
    }
    while (n--)
        c = crc_tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The CPU work: `rounds` FNV-1a steps per byte, a dependent chain the CPU cannot skip. */
static uint64_t work(uint64_t h, const unsigned char *p, size_t n)
{
    if (crc)
        return crc32_8((uint32_t)h, p, n);
    for (size_t i = 0; i < n; i++)
        for (unsigned r = 0; r < rounds; r++)
            h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static const char *drop_method = "none";
static int         warm; /* -w: leave the file cached */

static void drop_cache(const char *path)
{
    if (warm)
        return;
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (f && fputs("3\n", f) >= 0 && fclose(f) == 0) {
        drop_method = "drop_caches";
        return;
    }
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        fdatasync(fd);
        if (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
            drop_method = "fadvise(DONTNEED)";
        close(fd);
    }
}

/* Percent of the file's pages in the page cache. */
static double cached_pct(const char *path)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -1;
    long pg = sysconf(_SC_PAGESIZE);
    size_t pages = ((size_t)st.st_size + (size_t)pg - 1) / (size_t)pg, in = 0;
    unsigned char *v = malloc(pages);
    if (v && mincore(m, (size_t)st.st_size, v) == 0)
        for (size_t i = 0; i < pages; i++)
            in += v[i] & 1;
    free(v);
    munmap(m, (size_t)st.st_size);
    return 100.0 * (double)in / (double)pages;
}

static int make_file(const char *path, uint64_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -errno;
    unsigned char *buf = malloc(1 << 20);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (uint64_t off = 0; off < size; off += 1 << 20) {
        for (size_t i = 0; i < (1 << 20); i += 8) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            memcpy(buf + i, &x, 8);
        }
        size_t n = size - off < (1 << 20) ? (size_t)(size - off) : (1 << 20);
        if (write(fd, buf, n) != (ssize_t)n) {
            free(buf);
            close(fd);
            return -EIO;
        }
    }
    free(buf);
    fsync(fd);
    close(fd);
    return 0;
}

struct result {
    double   secs;
    uint64_t sum;
    uint64_t bytes;
    double   cached; /* percent cached at the start */
    double   cached_end; /* and at the end */
    double   wait;   /* seconds inside the read calls */
    double   cpu;    /* CPU seconds of the process (user + system, all its threads) */
};

/* The process's CPU time: on a loaded machine wall time says mostly how often the run got
 * a CPU; CPU time says what the loop cost (pool threads and io_uring workers included). */
static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static struct result run_stdio(const char *path, int do_work)
{
    struct result r = {0};
    drop_cache(path);
    r.cached = cached_pct(path);
    unsigned char *buf = malloc(rsize);
    double t = now(), c0 = cpu_now();
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned o = 0; o < opens; o++) {
        FILE *f = fopen(path, "rb");
        if (!f) {
            perror(path);
            exit(1);
        }
        for (unsigned i = 0; i < seeks; i++) {
            double t0 = timed ? now() : 0;
            size_t n = 0;
            if (fseeko(f, (off_t)seek_off[i], SEEK_SET) == 0)
                n = fread(buf, 1, rsize, f);
            r.wait += timed ? now() - t0 : 0;
            if (n != rsize) {
                fprintf(stderr, "fseek + fread at %llu: %zu bytes\n",
                        (unsigned long long)seek_off[i], n);
                exit(1);
            }
            r.bytes += n;
            if (do_work)
                h = work(h, buf, n);
        }
        size_t n;
        for (uint64_t got = 0; !seeks && (!head || got < head); got += n) {
            double t0 = timed ? now() : 0;
            n = fread(buf, 1, head && head - got < rsize ? (size_t)(head - got) : rsize, f);
            r.wait += timed ? now() - t0 : 0;
            if (n == 0)
                break;
            r.bytes += n;
            if (do_work)
                h = work(h, buf, n);
        }
        if (ferror(f)) {
            fprintf(stderr, "fread failed\n");
            exit(1);
        }
        fclose(f);
    }
    r.secs = now() - t;
    r.cpu = cpu_now() - c0;
    r.sum = h;
    r.cached_end = cached_pct(path);
    free(buf);
    return r;
}

static struct result run_afs(struct afs_ctx *ctx, const char *path, int do_work, unsigned depth,
                             unsigned flags)
{
    struct result r = {0};
    drop_cache(path);
    r.cached = cached_pct(path);
    unsigned char *buf = malloc(rsize);
    double t = now(), c0 = cpu_now();
    struct afs_stream_options o;
    afs_stream_options_default(&o);
    o.chunk_size = chunk;
    o.chunks = depth;
    o.flags = flags;
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned k = 0; k < opens; k++) {
        struct afs_stream *s;
        int err = afs_fopen_opts(ctx, path, "rb", &o, &s);
        if (err < 0) {
            fprintf(stderr, "afs_fopen %s: %s\n", path, afs_strerror(err));
            exit(1);
        }
        for (unsigned i = 0; i < seeks; i++) {
            double t0 = timed ? now() : 0;
            size_t n = 0;
            if (afs_fseek(s, (int64_t)seek_off[i], SEEK_SET) == 0)
                n = afs_fread(buf, 1, rsize, s);
            r.wait += timed ? now() - t0 : 0;
            if (n != rsize) {
                fprintf(stderr, "afs_fseek + afs_fread at %llu: %zu bytes\n",
                        (unsigned long long)seek_off[i], n);
                exit(1);
            }
            r.bytes += n;
            if (do_work)
                h = work(h, buf, n);
        }
        size_t n;
        for (uint64_t got = 0; !seeks && (!head || got < head); got += n) {
            double t0 = timed ? now() : 0;
            n = afs_fread(buf, 1, head && head - got < rsize ? (size_t)(head - got) : rsize, s);
            r.wait += timed ? now() - t0 : 0;
            if (n == 0)
                break;
            r.bytes += n;
            if (do_work)
                h = work(h, buf, n);
        }
        if (afs_ferror(s)) {
            fprintf(stderr, "afs_fread: %s\n", afs_strerror(afs_ferror(s)));
            exit(1);
        }
        afs_fclose(s);
    }
    r.secs = now() - t;
    r.cpu = cpu_now() - c0;
    r.sum = h;
    r.cached_end = cached_pct(path);
    free(buf);
    return r;
}

static struct result run_cpu(uint64_t size)
{
    struct result r = {0};
    unsigned char *buf = malloc(chunk);
    uint64_t x = 12345;
    for (size_t i = 0; i < chunk; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    uint64_t h = 0xcbf29ce484222325ull;
    double t = now();
    for (uint64_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
        h = work(h, buf, n);
    }
    r.secs = now() - t;
    r.sum = h;
    r.bytes = size;
    r.cached = r.cached_end = -1; /* no file */
    return r;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, const struct result *r)
{
    char cached[64] = "no file";
    if (r->cached >= 0)
        snprintf(cached, sizeof cached, "%5.1f%% -> %5.1f%%", r->cached, r->cached_end);
    printf("%-9s %8.3f s %8.1f MiB/s  cpu %6.3f s  in reads %6.3f s  cached %-17s  sum %016llx\n",
           name, r->secs, (double)r->bytes / r->secs / 1048576.0, r->cpu, r->wait, cached,
           (unsigned long long)r->sum);
}

int main(int argc, char **argv)
{
    const char *path = "/var/tmp/bench_stream.dat";
    uint64_t kib = 1024 * 1024;
    unsigned depth = 4;
    unsigned times = 3;
    unsigned flags = 0;
    unsigned phases = 0x1f; /* bit i: names[i] runs */
    int keep = 0, opt;
    static const char *const names[5] = {"io_stdio", "io_afs", "cpu", "stdio", "afs"};
    while ((opt = getopt(argc, argv, "f:s:K:o:L:S:r:c:R:B:n:t:p:xdbkwh")) != -1) {
        switch (opt) {
        case 'f': path = optarg; break;
        case 's': kib = strtoull(optarg, NULL, 0) * 1024; break;
        case 'K': kib = strtoull(optarg, NULL, 0); break;
        case 'o': opens = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'L': head = strtoull(optarg, NULL, 0); break;
        case 'S': seeks = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'r': rounds = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'c': chunk = (size_t)strtoull(optarg, NULL, 0) * 1024; break;
        case 'R': rsize = (size_t)strtoull(optarg, NULL, 0) * 1024; break;
        case 'B': rsize = (size_t)strtoull(optarg, NULL, 0); break;
        case 'x': crc = 1; break;
        case 'n': depth = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'd': flags = AFS_STREAM_DIRECT; break;
        case 'b': flags = AFS_STREAM_BUFFERED; break;
        case 'k': keep = 1; break;
        case 'w': warm = 1; break;
        case 't': times = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'p':
            phases = 0;
            for (char *tok = strtok(optarg, ","); tok; tok = strtok(NULL, ",")) {
                int i = 0;
                while (i < 5 && strcmp(tok, names[i]) != 0)
                    i++;
                if (i == 5) {
                    fprintf(stderr, "unknown phase %s\n", tok);
                    return 2;
                }
                phases |= 1u << i;
            }
            break;
        default:
            fprintf(stderr, "usage: %s [-f FILE] [-s MiB] [-r ROUNDS] [-c CHUNK_KiB] "
                            "[-R READ_KiB | -B READ_BYTES] [-n CHUNKS] [-t TIMES] [-K KiB] [-o OPENS] [-L BYTES] "
                            "[-S N] [-p PHASES] [-x] [-d | -b] [-w] [-k]\n", argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (!kib || !chunk || !rounds || !times || !phases || !opens) {
        fprintf(stderr, "size, chunk, rounds and times must be > 0\n");
        return 2;
    }
    if (!rsize)
        rsize = chunk;
    timed = rsize >= 4096;
    crc_init();
    uint64_t size = kib << 10;
    struct stat st;
    int made = 0;
    if (stat(path, &st) != 0 || (uint64_t)st.st_size < size) {
        printf("making %s (%llu KiB)...\n", path, (unsigned long long)kib);
        int err = make_file(path, size);
        if (err < 0) {
            fprintf(stderr, "%s: %s\n", path, strerror(-err));
            return 1;
        }
        made = 1;
    } else {
        size = (uint64_t)st.st_size;
    }
    if (seeks) {
        /* Multiples of the read size (as a program reading records does), from a fixed
         * seed: every run, and both paths, read the same places in the same order. */
        uint64_t slots = size / rsize, x = 0x2545F4914F6CDD1Dull;
        if (!slots) {
            fprintf(stderr, "-S: the file is smaller than one read\n");
            return 2;
        }
        seek_off = malloc(seeks * sizeof *seek_off);
        for (unsigned i = 0; i < seeks; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            seek_off[i] = (x % slots) * rsize;
        }
    }
    struct afs_ctx *ctx;
    int err = afs_ctx_new(&ctx, NULL);
    if (err < 0) {
        fprintf(stderr, "afs_ctx_new: %s\n", afs_strerror(err));
        return 1;
    }
    printf("file %s, %.3f MiB, read %u times a run%s; chunk %zu KiB; reads of %zu bytes; %u in "
           "flight; %s; backend %s%s\n", path, (double)size / 1048576.0, opens,
           seeks ? " (random: -S seeks, one read each)" : "", chunk / 1024, rsize, depth,
           crc ? "CRC-32" : rounds == 1 ? "1 hash round/byte" : "hash rounds/byte",
           afs_ctx_backend(ctx),
           flags == AFS_STREAM_DIRECT     ? "; afs path O_DIRECT"
           : flags == AFS_STREAM_BUFFERED ? "; afs path never O_DIRECT"
                                          : "");

    if (warm) {
        /* Brings the whole file into the cache, whatever -o and -L say. */
        unsigned o = opens, sk = seeks;
        uint64_t l = head;
        opens = 1, head = 0, seeks = 0;
        run_stdio(path, 0);
        opens = o, head = l, seeks = sk;
    }
    /* The five measurements, `times` times, forward then backward: each phase meets each
     * position, so that effects of what ran before (memory the host has not backed since
     * the last cache drop, on some virtual machines) even out. The fastest run counts. */
    struct result best[5];
    memset(best, 0, sizeof best);
    double *pair[2], *cpair[2]; /* per round: stdio / afs, reads alone and with the work;
                                   wall time and CPU time */
    unsigned npair[2] = {0, 0};
    for (int w = 0; w < 2; w++) {
        pair[w] = calloc(times, sizeof(double));
        cpair[w] = calloc(times, sizeof(double));
    }
    int differ = 0, have_sum = 0;
    uint64_t sum = 0; /* of the runs with work: all must agree */
    for (unsigned t = 0; t < times; t++) {
        double secs[5] = {0}, cpus[5] = {0};
        for (int k = 0; k < 5; k++) {
            int i = t % 2 ? 4 - k : k;
            if (!(phases & (1u << i)))
                continue;
            struct result r;
            switch (i) {
            case 0: r = run_stdio(path, 0); break;
            case 1: r = run_afs(ctx, path, 0, depth, flags); break;
            case 2: r = run_cpu((seeks ? (uint64_t)seeks * rsize : size) * opens); break;
            case 3: r = run_stdio(path, 1); break;
            default: r = run_afs(ctx, path, 1, depth, flags); break;
            }
            report(names[i], &r);
            /* -w: a run that found part of the file dropped (memory pressure, or another
             * program dropping the caches) is not a warm run and does not count. */
            if (warm && r.cached >= 0 && (r.cached < 100.0 || r.cached_end < 100.0)) {
                printf("  (not all cached: not counted)\n");
                continue;
            }
            secs[i] = r.secs;
            cpus[i] = r.cpu;
            if (best[i].secs == 0 || r.secs < best[i].secs)
                best[i] = r;
            if (i >= 3) {
                differ |= have_sum && r.sum != sum;
                sum = r.sum, have_sum = 1;
            }
        }
        for (int w = 0; w < 2; w++)
            if (secs[3 * w] > 0 && secs[3 * w + 1] > 0) {
                cpair[w][npair[w]] = cpus[3 * w + 1] > 0 ? cpus[3 * w] / cpus[3 * w + 1] : 0;
                pair[w][npair[w]++] = secs[3 * w] / secs[3 * w + 1];
            }
    }
    if (times > 1) {
        printf("fastest of %u:\n", times);
        for (int i = 0; i < 5; i++)
            if (phases & (1u << i))
                report(names[i], &best[i]);
    }
    printf("cache dropped with: %s\n", warm ? "none (-w: cached)" : drop_method);
    printf("checksums %s\n", differ ? "DIFFER" : "match");
    if ((phases & 0x1f) == 0x1f) {
        double io = best[0].secs < best[1].secs ? best[0].secs : best[1].secs;
        double cpu = best[2].secs, top = io > cpu ? io : cpu;
        printf("max(I/O alone %.3f, CPU alone %.3f) = %.3f s; sum %.3f s\n", io, cpu, top,
               io + cpu);
        printf("ratio stdio/max = %.3f   afs/max = %.3f   (target <= 1.1)\n",
               best[3].secs / top, best[4].secs / top);
    }
    static const char *const what[2] = {"reads alone", "with work"};
    for (int w = 0; w < 2; w++) {
        if ((phases & (3u << 3 * w)) != 3u << 3 * w || !npair[w])
            continue; /* bits 0,1 and 3,4: the pair of this kind */
        unsigned n = npair[w];
        qsort(pair[w], n, sizeof(double), cmp_double);
        printf("speed afs vs stdio, %s: fastest %.3fx; pairs (%u of %u): median %.3fx, min "
               "%.3fx, max %.3fx (stdio time / afs time)\n", what[w],
               best[3 * w].secs / best[3 * w + 1].secs, n, times, pair[w][n / 2], pair[w][0],
               pair[w][n - 1]);
        qsort(cpair[w], n, sizeof(double), cmp_double);
        printf("CPU time afs vs stdio, %s: pairs median %.3fx, min %.3fx, max %.3fx (stdio CPU "
               "/ afs CPU)\n", what[w], cpair[w][n / 2], cpair[w][0], cpair[w][n - 1]);
    }
    for (int w = 0; w < 2; w++) {
        free(pair[w]);
        free(cpair[w]);
    }
    afs_ctx_free(ctx);
    free(seek_off);
    if (made && !keep)
        unlink(path);
    return differ;
}
