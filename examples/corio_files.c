/* N corio tasks read one file in parallel, each its own slice, with plain sequential code:
 * every phase's reads reach the kernel in one submission.
 * Usage: corio_files FILE [tasks]   Prints the bytes read, a checksum, and the batching. */
#include <corio.h>

#include <stdio.h>
#include <stdlib.h>

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
    for (uint64_t pos = s->off; pos < s->off + s->len;) {
        size_t want = s->off + s->len - pos < CHUNK ? (size_t)(s->off + s->len - pos) : CHUNK;
        ssize_t n = afs_pread(s->f, buf, want, pos); /* suspends this task only */
        if (n <= 0) {
            s->err = (int)n;
            break;
        }
        for (ssize_t i = 0; i < n; i++)
            s->sum = s->sum * 31 + buf[i];
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
    for (int i = 0; i < j->n; i++)
        corio_spawn(t, reader, &j->slices[i], NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: corio_files FILE [tasks]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 16;
    if (n < 1)
        n = 1;
    struct corio_sched *s;
    int err = corio_sched_new(&s, NULL);
    if (err < 0) {
        fprintf(stderr, "corio_sched_new: %s\n", afs_strerror(err));
        return 1;
    }
    struct afs_ctx *ctx = corio_sched_ctx(s); /* open files on the scheduler's context */
    struct afs_file *f;
    if ((err = afs_open(ctx, argv[1], AFS_RDONLY, 0, AFS_MODE_SYNC, &f)) < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], afs_strerror(err));
        return 1;
    }
    uint64_t size = (uint64_t)afs_file_size(f);
    struct job j = {calloc((size_t)n, sizeof(struct slice)), n};
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
        sum ^= j.slices[i].sum;
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
    return err < 0 || bytes != size;
}
