/* N corio tasks read one file in parallel, each its own slice, with plain sequential code:
 * every phase's reads reach the kernel in one submission.
 * Usage: corio_files FILE [tasks]   Prints the bytes read, a checksum, and the batching.
 * The checksum, the sum over the file of (offset + 1) x byte modulo 2^64, is the same
 * whatever the task count. */
#include <corio.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_TASKS 100000

struct slice {
    struct afs_file *f;
    uint64_t         off, len;
    uint64_t         sum, bytes;
    int              err;
};

static void reader(struct corio_task *t, void *arg)
{
    struct slice *s = arg;
    enum { CHUNK = 64 * 1024 };
    unsigned char *buf = afs_buf_alloc(afs_file_ctx(s->f), CHUNK);
    if (!buf) {
        s->err = -ENOMEM;
        return;
    }
    for (uint64_t pos = s->off; pos < s->off + s->len;) {
        size_t want = s->off + s->len - pos < CHUNK ? (size_t)(s->off + s->len - pos) : CHUNK;
        ssize_t n = afs_pread(s->f, buf, want, pos); /* suspends this task only */
        if (n <= 0) {
            s->err = n < 0 ? (int)n : -ENODATA; /* 0: the file ended before its size */
            break;
        }
        for (ssize_t i = 0; i < n; i++)
            s->sum += (pos + (uint64_t)i + 1) * buf[i];
        s->bytes += (uint64_t)n;
        pos += (uint64_t)n;
    }
    afs_buf_free(afs_file_ctx(s->f), buf, CHUNK);
}

struct job {
    struct slice *slices;
    int           n;
};

static void root(struct corio_task *t, void *arg)
{
    struct job *j = arg;
    for (int i = 0; i < j->n; i++) {
        int err = corio_spawn(t, reader, &j->slices[i], NULL);
        if (err < 0)
            j->slices[i].err = err; /* no memory for its stack: that slice is not read */
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: corio_files FILE [tasks]\n");
        return 2;
    }
    int n = 16;
    if (argc > 2) {
        char *end;
        errno = 0;
        long v = strtol(argv[2], &end, 10);
        if (errno || end == argv[2] || *end || v < 1 || v > MAX_TASKS) {
            fprintf(stderr, "corio_files: tasks: '%s' is not a number from 1 to %d\n", argv[2],
                    MAX_TASKS);
            return 2;
        }
        n = (int)v;
    }
    /* Slices are read at offsets: a pipe or FIFO has none (and opening a FIFO would wait for
     * a writer), a directory no data. */
    struct stat sb;
    if (stat(argv[1], &sb) < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    if (!S_ISREG(sb.st_mode) && !S_ISBLK(sb.st_mode)) {
        fprintf(stderr, "%s: not a regular file or block device\n", argv[1]);
        return 1;
    }
    struct corio_sched *s;
    int err = corio_sched_new(&s, NULL);
    if (err < 0) {
        const char *why = afs_last_ctx_error();
        fprintf(stderr, "corio_sched_new: %s%s%s\n", afs_strerror(err), why ? ": " : "",
                why ? why : "");
        return 1;
    }
    struct afs_ctx *ctx = corio_sched_ctx(s); /* open files on the scheduler's context */
    struct afs_file *f;
    if ((err = afs_open(ctx, argv[1], AFS_RDONLY, 0, AFS_MODE_SYNC, &f)) < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], afs_strerror(err));
        corio_sched_free(s);
        return 1;
    }
    int64_t fsize = afs_file_size(f);
    struct job j = {calloc((size_t)n, sizeof(struct slice)), n};
    if (fsize < 0 || !j.slices) {
        fprintf(stderr, "%s: %s\n", argv[1], fsize < 0 ? afs_strerror((int)fsize)
                                                       : "out of memory for the tasks");
        free(j.slices);
        afs_close(f);
        corio_sched_free(s);
        return 1;
    }
    uint64_t size = (uint64_t)fsize;
    for (int i = 0; i < n; i++) {
        j.slices[i].f = f;
        j.slices[i].off = size / (uint64_t)n * (uint64_t)i;
        j.slices[i].len = i == n - 1 ? size - j.slices[i].off : size / (uint64_t)n;
    }
    err = corio_sched_run(s, root, &j);
    uint64_t bytes = 0, sum = 0;
    for (int i = 0; i < n; i++) {
        if (j.slices[i].err)
            fprintf(stderr, "task %d: %s\n", i, afs_strerror(j.slices[i].err));
        bytes += j.slices[i].bytes;
        sum += j.slices[i].sum;
    }
    struct corio_stats st;
    corio_sched_stats(s, &st);
    printf("%d tasks read %llu bytes (checksum %016llx) on %s: %llu reads in %llu phases, "
           "%llu kernel submissions\n", n, (unsigned long long)bytes, (unsigned long long)sum,
           afs_ctx_backend(ctx), (unsigned long long)st.ios, (unsigned long long)st.phases,
           (unsigned long long)st.submits);
    free(j.slices);
    afs_close(f);
    corio_sched_free(s);
    if (fflush(stdout) || ferror(stdout)) {
        fprintf(stderr, "corio_files: standard output: %s\n", strerror(errno));
        return 1;
    }
    return err < 0 || bytes != size;
}
