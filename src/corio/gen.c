/* Generators (async iterators) and the file helpers on top: chunks and lines with
 * read-ahead.
 *
 * The hand-over is a one-slot rendezvous: the producer puts a value in the slot and waits on
 * producer_q until the consumer took it; the consumer waits on consumer_q for a value or the
 * end. Taking a value wakes the producer, which computes (reads) the next value while the
 * consumer works on the current one. */
#include "corio_int.h"

#include <stdlib.h>
#include <string.h>

/* Read once, at the producer's first instruction, from the consumer's stack (the consumer
 * stays suspended in corio_spawn until the producer first suspends). */
struct gen_boot {
    struct corio_gen *g;
    corio_gen_fn     *fn;
    void             *arg;
};

static void gen_entry(struct corio_task *t, void *arg)
{
    struct gen_boot b = *(struct gen_boot *)arg;
    struct corio_gen *g = b.g;
    g->producer = t;
    t->own_deadline = true; /* the consumer's deadline bounds its wait, not the producer */
    char top; /* above every frame of b.fn */
    int res = b.fn(t, g, b.arg);
    corio__detach_frame_futures(t, &top); /* its futures went with them */
    corio_wait(t);
    g->producer = NULL;
    g->result = res < 0 ? res : 0;
    g->has_value = 0;
    g->ended = 1;
    corio__wake_all(corio__wq(&g->consumer_q));
    /* The last touch of g: a closing consumer may free it now. */
    corio__wake_all(corio__wq(&g->end_q));
}

int corio_gen_start(struct corio_task *t, struct corio_gen *g, corio_gen_fn *fn, void *arg)
{
    corio__check_running(t, "corio_gen_start");
    AFS_CHECK(g != NULL && fn != NULL, "NULL argument");
    memset(g, 0, sizeof *g);
    struct gen_boot b = {g, fn, arg};
    int err = corio_spawn(t, gen_entry, &b, NULL);
    if (err < 0) {
        g->ended = 1;
        g->result = err;
    }
    return err;
}

int corio_gen_yield(struct corio_task *t, struct corio_gen *g, void *value)
{
    corio__check_running(t, "corio_gen_yield");
    AFS_CHECK(g != NULL && g->producer == t, "not this generator's producer");
    if (g->closed)
        return -ECANCELED;
    int err = corio__interrupted(t);
    if (err)
        return err;
    g->value = value;
    g->has_value = 1;
    corio__wake_all(corio__wq(&g->consumer_q));
    while (g->has_value && !g->closed) {
        if ((err = corio__wait_on(t, corio__wq(&g->producer_q))) != 0) {
            g->has_value = 0; /* take it back: the producer is about to leave */
            return err;
        }
    }
    return g->closed ? -ECANCELED : 0;
}

int corio_gen_next(struct corio_task *t, struct corio_gen *g, void **value)
{
    corio__check_running(t, "corio_gen_next");
    AFS_CHECK(g != NULL && value != NULL, "NULL argument");
    AFS_CHECK(g->producer != t, "the producer asks its own generator (it would wait for itself)");
    /* A new call: the consumer is done with the previous value (corio_gen_flush). */
    g->nexts++;
    corio__wake_all(corio__wq(&g->producer_q));
    for (;;) {
        int err = corio__interrupted(t);
        if (err)
            return err;
        if (g->has_value) {
            *value = g->value;
            g->has_value = 0;
            g->taken = g->nexts;
            corio__wake_all(corio__wq(&g->producer_q));
            return 1;
        }
        if (g->closed)
            return 0; /* the consumer stopped: the producer's -ECANCELED is no error */
        if (g->ended)
            return g->result;
        if ((err = corio__wait_on(t, corio__wq(&g->consumer_q))) != 0)
            return err;
    }
}

void corio_gen_flush(struct corio_task *t, struct corio_gen *g)
{
    corio__check_running(t, "corio_gen_flush");
    AFS_CHECK(g != NULL && g->producer == t, "not this generator's producer");
    while (g->nexts == g->taken && g->taken && !g->closed)
        corio__wait_on_hard(t, corio__wq(&g->producer_q));
}

int corio_gen_next_filter(struct corio_task *t, struct corio_gen *g,
                          int (*keep)(void *value, void *user), void *user, void **value)
{
    AFS_CHECK(keep != NULL, "keep is NULL");
    int r;
    /* Rejected values are skipped, the iteration goes on: a filter, not a take-while. */
    while ((r = corio_gen_next(t, g, value)) == 1 && !keep(*value, user))
        ;
    return r;
}

void corio_gen_close(struct corio_task *t, struct corio_gen *g)
{
    corio__check_running(t, "corio_gen_close");
    AFS_CHECK(g != NULL, "generator is NULL");
    g->closed = 1;
    g->has_value = 0;
    if (g->ended)
        return;
    if (g->producer)
        corio_cancel(g->producer);
    corio__wake_all(corio__wq(&g->producer_q));
    /* The producer may use buffers of ours until it is done: wait even when cancelled. */
    while (!g->ended)
        corio__wait_on_hard(t, corio__wq(&g->end_q));
}

/* ------------------------------------------------------------------------------------------
 * File chunks and lines
 * ---------------------------------------------------------------------------------------- */

struct file_args {
    struct afs_file *f;
    uint64_t         off;
    size_t           size;
};

/* Two buffers: the consumer holds one chunk while the next is read into the other. When the
 * consumer takes chunk k (its next call), it is done with chunk k-1, whose buffer the read
 * after the yield reuses. */
static int chunks_fn(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct file_args a = *(struct file_args *)arg;
    struct afs_ctx *ctx = afs_file_ctx(a.f);
    char *buf[2] = {afs_buf_alloc(ctx, a.size), afs_buf_alloc(ctx, a.size)};
    struct corio_chunk ch[2];
    int res = 0, k = 0;
    uint64_t off = a.off;
    if (!buf[0] || !buf[1])
        res = -ENOMEM;
    while (res == 0) {
        /* No file has bytes at INT64_MAX or past it: a read there would be refused. */
        size_t want = (uint64_t)INT64_MAX - off < a.size ? (size_t)(INT64_MAX - off) : a.size;
        if (want == 0)
            break;
        ssize_t n = afs_pread(a.f, buf[k], want, off);
        if (n <= 0) {
            res = (int)n;
            break;
        }
        ch[k] = (struct corio_chunk){.data = buf[k], .len = (size_t)n, .off = off};
        off += (uint64_t)n;
        res = corio_gen_yield(t, g, &ch[k]);
        k ^= 1;
    }
    corio_gen_flush(t, g); /* the consumer may still hold the last chunk */
    for (int i = 0; i < 2; i++)
        if (buf[i])
            afs_buf_free(ctx, buf[i], a.size);
    return res;
}

int corio_gen_file_chunks(struct corio_task *t, struct corio_gen *g, struct afs_file *f,
                          uint64_t off, size_t chunk_size)
{
    AFS_CHECK(f != NULL, "file is NULL");
    if (chunk_size == 0)
        chunk_size = 64 * 1024;
    if (chunk_size > ((size_t)1 << 30) || off > INT64_MAX)
        return -EINVAL;
    struct file_args a = {f, off, chunk_size};
    /* The producer copies `a` before it first suspends, i.e. before this returns. */
    return corio_gen_start(t, g, chunks_fn, &a);
}

static int reserve(char **line, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    char *p = afs__sys.realloc(*line, c);
    if (!p)
        return -ENOMEM;
    *line = p;
    *cap = c;
    return 0;
}

static int lines_fn(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct file_args a = *(struct file_args *)arg;
    struct corio_gen chunks;
    int r = corio_gen_file_chunks(t, &chunks, a.f, 0, a.size);
    if (r < 0)
        return r;
    char *line = NULL;
    size_t len = 0, cap = 0;
    struct corio_line out = {0};
    void *v;
    while ((r = corio_gen_next(t, &chunks, &v)) == 1) {
        const struct corio_chunk *c = v;
        const char *p = c->data, *end = c->data + c->len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t n = (size_t)((nl ? nl : end) - p);
            if ((r = reserve(&line, &cap, len + n + 1)) < 0)
                goto out;
            memcpy(line + len, p, n);
            len += n;
            p += n;
            if (!nl)
                break; /* the line goes on in the next chunk */
            p++;
            line[len] = '\0';
            out = (struct corio_line){.data = line, .len = len, .lineno = out.lineno + 1};
            if ((r = corio_gen_yield(t, g, &out)) < 0)
                goto out;
            corio_gen_flush(t, g); /* the line is the consumer's until it asks again */
            len = 0;
        }
    }
    if (r == 0 && len > 0) {
        /* A last line without '\n'. */
        line[len] = '\0';
        out = (struct corio_line){.data = line, .len = len, .lineno = out.lineno + 1};
        r = corio_gen_yield(t, g, &out);
    }
out:
    corio_gen_close(t, &chunks);
    corio_gen_flush(t, g); /* the consumer may still hold the last line */
    free(line);
    return r < 0 ? r : 0;
}

int corio_gen_file_lines(struct corio_task *t, struct corio_gen *g, struct afs_file *f,
                         size_t chunk_size)
{
    AFS_CHECK(f != NULL, "file is NULL");
    if (chunk_size == 0)
        chunk_size = 64 * 1024;
    if (chunk_size > ((size_t)1 << 30))
        return -EINVAL;
    struct file_args a = {f, 0, chunk_size};
    return corio_gen_start(t, g, lines_fn, &a);
}
