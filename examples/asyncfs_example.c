/* The asyncfs seed's README example in C: a context with a custom allocator and releaser,
 * an async-mode file, a write and a read polled with afs_last_op().
 * Usage: asyncfs_example [path]   (default: a new file in $TMPDIR or /tmp)
 * The file is made new (a path that exists is refused, never overwritten) and removed at
 * the end, also when a step fails. */
#include <asyncfs.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A one-slot pool, standing in for Go's sync.Pool. */
struct pool {
    void  *slot;
    size_t size;
};

static void *allocator(size_t size, void *user)
{
    struct pool *p = user;
    if (p->slot && p->size == size) {
        void *b = p->slot;
        p->slot = NULL;
        return b;
    }
    return aligned_alloc(4096, (size + 4095) / 4096 * 4096);
}

static void releaser(void *buf, size_t size, void *user)
{
    struct pool *p = user;
    memset(buf, 0, size);
    if (!p->slot) {
        p->slot = buf;
        p->size = size;
    } else {
        free(buf);
    }
}

/* The file this run made, removed on the way out whatever happens. */
static const char *made;

static void die(const char *what, int err)
{
    fprintf(stderr, "%s: %s\n", what, afs_strerror(err));
    if (made)
        remove(made);
    exit(1);
}

int main(int argc, char **argv)
{
    char path[4096];
    if (argc > 1) {
        snprintf(path, sizeof path, "%s", argv[1]);
    } else {
        const char *tmp = getenv("TMPDIR");
        /* One name per process: two runs never share a file. */
        snprintf(path, sizeof path, "%s/test_asyncfs.%ld", tmp ? tmp : "/tmp", (long)getpid());
    }

    struct pool pool = {0};
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.queue_depth = 1024;      /* asynchronous operations in flight at most */
    cfg.sync_threshold = 4096;   /* sync-mode ops up to this size run inline */
    cfg.alloc = allocator;       /* optional: buffers for I/O */
    cfg.release = releaser;
    cfg.alloc_user = &pool;

    struct afs_ctx *ctx;
    int err = afs_ctx_new(&ctx, &cfg);
    if (err < 0)
        die("afs_ctx_new", err);

    /* afs_create() would truncate whatever is at path, and the file is removed at the end:
     * AFS_EXCL makes it a new file (never through a symlink planted in a shared /tmp). */
    struct afs_file *f;
    err = afs_open(ctx, path, AFS_RDWR | AFS_CREAT | AFS_EXCL, 0600,
                   AFS_MODE_ASYNC, &f);
    if (err < 0)
        die(path, err);
    made = path;

    /* Buffers are aligned for direct I/O. */
    char *buf = afs_buf_alloc(ctx, 4096);
    if (!buf)
        die("afs_buf_alloc", -ENOMEM);
    memset(buf, 'a', 4096);

    /* Async mode: the call queues the write and returns 0 at once. */
    err = (int)afs_write(f, buf, 4096);
    if (err < 0)
        die("afs_write", err);
    ssize_t n;
    while (afs_last_op(f, &n) == 0) {
        /* do something else ... */
    }
    if (n < 0)
        die("write", (int)n);
    printf("%zd bytes has been written\n", n);

    /* Let's read it back. */
    afs_seek(f, 0, SEEK_SET);
    char *out = afs_buf_alloc(ctx, 4096);
    if (!out)
        die("afs_buf_alloc", -ENOMEM);
    err = (int)afs_read(f, out, 4096);
    if (err < 0)
        die("afs_read", err);
    while (afs_last_op(f, &n) == 0) {
        /* do something else ... */
    }
    if (n < 0)
        die("read", (int)n);
    printf("%zd bytes has been read\n", n);
    /* out has been filled */
    int same = n == 4096 && memcmp(buf, out, 4096) == 0;
    if (!same)
        fprintf(stderr, "%s: the data read back differs from what was written\n", path);

    afs_buf_free(ctx, out, 4096);
    afs_buf_free(ctx, buf, 4096);
    afs_close(f);
    remove(path);
    afs_ctx_free(ctx);
    free(pool.slot);
    return same ? 0 : 1;
}
