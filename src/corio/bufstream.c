/* Buffered streams over any descriptor (asyncigo's AsyncStream): a read buffer with
 * read_line / read_until / read_exact / read_all and the line and chunk generators, and
 * writes serialised per stream.
 *
 * A read takes what one transfer gives: on a socket one afs_recv, on a pipe, FIFO or tty a
 * read that completes with the first bytes that arrive, each joining the phase's batch like
 * any file op; on a file with offsets a positional read at the stream's own offset. Writes
 * go straight from the caller's buffer (nothing is copied), one writer at a time: a slow
 * reader makes writers wait instead of the stream growing. */
#include "corio_int.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_BUF   (8 * 1024)
#define DEFAULT_LIMIT (64 * 1024)

struct corio_stream {
    struct afs_file   *f;
    char              *buf;     /* [start, end) is buffered; one spare byte for a nul */
    uintptr_t          magic;   /* STREAM_MAGIC ^ address while open, AFS__DEAD after close
                                   (past the words an allocator writes into freed memory) */
    size_t             cap, start, end;
    size_t             scanned; /* [start, scanned) has no delimiter (read_until) */
    int                scan_delim;
    uint64_t           roff, woff; /* files with offsets: where reads / writes go */
    ssize_t            rerr; /* an error met after a read returned bytes: the next read's */
    bool               eof;
    bool               seq;
    struct corio_mutex rmu, wmu;
};

#define STREAM_MAGIC ((uintptr_t)0x63727353u)

/* A stream used after its close (or never made) aborts with the library's message. */
static const struct corio_stream *stream_check(const struct corio_stream *s, const char *call)
{
    if (!s)
        afs__panic(call, "stream is NULL");
    afs__magic_check(AFS__MAGIC_OF(s, struct corio_stream), STREAM_MAGIC, s, call,
                     "stream was closed (used after corio_stream_close, or closed twice)",
                     "not an open stream (closed, or never made)");
    return s;
}

int corio_stream_new(struct afs_file *f, size_t buf_size, struct corio_stream **out)
{
    AFS_CHECK(out != NULL, "out is NULL");
    afs__file_check(f, __func__);
    *out = NULL;
    if (buf_size == 0)
        buf_size = DEFAULT_BUF;
    if (buf_size > CORIO__STREAM_MAX_BUF)
        return -EINVAL;
    struct corio_stream *s = afs__zalloc(sizeof *s);
    if (!s)
        return -ENOMEM;
    s->buf = afs__sys.malloc(buf_size + 1);
    if (!s->buf) {
        free(s);
        return -ENOMEM;
    }
    s->cap = buf_size + 1;
    s->f = f;
    s->seq = f->seq;
    s->scan_delim = -1;
    s->magic = STREAM_MAGIC ^ (uintptr_t)s;
    *out = s;
    return 0;
}

struct afs_file *corio_stream_file(const struct corio_stream *s)
{
    stream_check(s, __func__);
    return s->f;
}

size_t corio_stream_buffered(const struct corio_stream *s)
{
    stream_check(s, __func__);
    return s->end - s->start;
}

int corio_stream_close(struct corio_stream *s)
{
    stream_check(s, __func__);
    AFS_CHECK(s->rmu.owner == NULL && s->wmu.owner == NULL,
              "the stream is in use by a task");
    int err = afs_close(s->f);
    free(s->buf);
    *(volatile uintptr_t *)&s->magic = AFS__DEAD; /* kept until the memory is reused */
    free(s);
    return err;
}

/* ------------------------------------------------------------------------------------------
 * Raw transfers
 * ---------------------------------------------------------------------------------------- */

static void seq_cb(struct afs_op *op)
{
    afs__op_wait_done(op->data, op);
}

/* One transfer of a file without offsets; a read completes with the first bytes that come. */
static ssize_t seq_io(struct afs_file *f, bool write, void *buf, size_t len)
{
    struct afs_op op;
    struct afs__op_waiting ow = {.pending = true};
    int err = afs__queue_seq(&op, f, write, buf, len, true, seq_cb, &ow);
    if (err < 0)
        return err;
    err = afs__op_wait(f->ctx, &op, &ow);
    /* Bytes a cancelled transfer moved are reported: they have left the pipe. */
    if (op.result > 0)
        return op.result;
    return err < 0 ? err : op.result;
}

static ssize_t raw_read(struct corio_stream *s, void *buf, size_t len)
{
    ssize_t n = s->rerr;
    if (n < 0) {
        s->rerr = 0; /* a socket reports a reset once: it was kept for this read */
        return n;
    }
    if (s->eof)
        return 0; /* the end is sticky, for reads straight into the caller's buffer too */
    if (s->f->sock) {
        n = afs_recv(s->f, buf, len, 0);
    } else if (s->seq) {
        n = seq_io(s->f, false, buf, len);
    } else {
        n = afs_pread(s->f, buf, len, s->roff);
        if (n > 0)
            s->roff += (uint64_t)n;
    }
    if (n == 0)
        s->eof = true;
    return n;
}

static ssize_t raw_write(struct corio_stream *s, const void *buf, size_t len)
{
    if (s->f->sock)
        return afs_send(s->f, buf, len, 0);
    if (s->seq)
        return seq_io(s->f, true, (void *)buf, len);
    ssize_t n = afs_pwrite(s->f, buf, len, s->woff);
    if (n > 0)
        s->woff += (uint64_t)n;
    return n;
}

/* Makes room for `want` more bytes after end (keeping the spare byte), growing the buffer up
 * to hold `need` buffered bytes. */
static int room(struct corio_stream *s, size_t need)
{
    if (s->start > 0 && (s->start == s->end || s->cap - 1 - s->end < s->cap / 4)) {
        memmove(s->buf, s->buf + s->start, s->end - s->start);
        s->scanned = s->scanned > s->start ? s->scanned - s->start : 0;
        s->end -= s->start;
        s->start = 0;
    }
    if (need + 1 > s->cap && s->end + 1 >= s->cap) {
        size_t c = s->cap - 1;
        while (c < need)
            c *= 2;
        char *p = afs__sys.realloc(s->buf, c + 1);
        if (!p)
            return -ENOMEM;
        s->buf = p;
        s->cap = c + 1;
    }
    return 0;
}

/* One read into the buffer, at most `max` bytes: the bytes read, 0 at the end, -errno. */
static ssize_t fill(struct corio_stream *s, size_t need, size_t max)
{
    if (s->eof)
        return 0;
    int err = room(s, need);
    if (err < 0)
        return err;
    size_t len = s->cap - 1 - s->end;
    if (len > max)
        len = max;
    if (len == 0)
        return -EMSGSIZE;
    ssize_t n = raw_read(s, s->buf + s->end, len);
    if (n > 0)
        s->end += (size_t)n;
    return n;
}

/* ------------------------------------------------------------------------------------------
 * Reads
 * ---------------------------------------------------------------------------------------- */

static int lock_read(struct corio_task *t, struct corio_stream *s, const char *call)
{
    stream_check(s, call);
    return corio_mutex_lock(t, &s->rmu);
}

ssize_t corio_stream_read(struct corio_task *t, struct corio_stream *s, void *buf, size_t len)
{
    int err = lock_read(t, s, __func__);
    if (err)
        return err;
    AFS_CHECK(buf != NULL || len == 0, "buf is NULL");
    ssize_t n = 0;
    if (len > 0) {
        if (s->start == s->end) {
            /* Nothing buffered: a large read goes straight to the caller's buffer. */
            if (len >= s->cap - 1) {
                n = raw_read(s, buf, len);
                goto out;
            }
            if ((n = fill(s, 0, SIZE_MAX)) <= 0)
                goto out;
        }
        n = (ssize_t)AFS_MIN(len, s->end - s->start);
        memcpy(buf, s->buf + s->start, (size_t)n);
        s->start += (size_t)n;
    }
out:
    corio_mutex_unlock(&s->rmu);
    return n;
}

ssize_t corio_stream_read_exact(struct corio_task *t, struct corio_stream *s, void *buf,
                                size_t len)
{
    int err = lock_read(t, s, __func__);
    if (err)
        return err;
    AFS_CHECK(buf != NULL || len == 0, "buf is NULL");
    size_t got = 0;
    ssize_t n = 0;
    while (got < len) {
        if (s->start < s->end) {
            size_t k = AFS_MIN(len - got, s->end - s->start);
            memcpy((char *)buf + got, s->buf + s->start, k);
            s->start += k;
            got += k;
            continue;
        }
        if (len - got >= s->cap - 1) {
            n = raw_read(s, (char *)buf + got, len - got);
            if (n > 0)
                got += (size_t)n;
        } else {
            n = fill(s, 0, SIZE_MAX);
        }
        if (n <= 0)
            break;
    }
    corio_mutex_unlock(&s->rmu);
    /* What came before an error stays with the caller: report it first, the error at the
     * next read. Not the task's own cancellation or deadline: that is no fact of the
     * stream, and the next read (maybe another task's) need not meet it. */
    if (got > 0 && n < 0 && !(corio__interrupted(t) && (n == -ECANCELED || n == -ETIMEDOUT)))
        s->rerr = n;
    return got > 0 || n >= 0 ? (ssize_t)got : n;
}

/* The line at the head of the buffer, up to and including delim: its length, 0 when none is
 * complete. Remembers how far it looked, so a long line is scanned once. */
static size_t find(struct corio_stream *s, int delim, size_t limit)
{
    if (s->scan_delim != delim || s->scanned < s->start)
        s->scanned = s->start;
    s->scan_delim = delim;
    size_t stop = s->end;
    if (stop - s->start > limit)
        stop = s->start + limit;
    if (s->scanned >= stop)
        return 0;
    const char *p = memchr(s->buf + s->scanned, delim, stop - s->scanned);
    if (!p) {
        s->scanned = stop;
        return 0;
    }
    return (size_t)(p - (s->buf + s->start)) + 1;
}

/* read_until with the read lock held: a line of at most limit bytes, its delim counted
 * unless delim_free (the lines generator's limit is on the line without its '\n'). */
static ssize_t until_locked(struct corio_stream *s, int delim, size_t limit, bool delim_free,
                            const char **line)
{
    for (;;) {
        size_t len = find(s, delim, limit + delim_free);
        if (len) {
            *line = s->buf + s->start;
            s->start += len;
            return (ssize_t)len;
        }
        size_t have = s->end - s->start;
        if (have > limit)
            return -EMSGSIZE; /* the bytes stay buffered */
        /* At limit bytes, one more tells a last line of limit bytes (the end follows) from
         * a longer one (or, delim_free, from one whose delim comes next). */
        ssize_t n = fill(s, limit + 1, have < limit ? limit - have : 1);
        if (n < 0)
            return n;
        if (n == 0) {
            if (have == 0)
                return 0;
            /* The last line has no delimiter. */
            *line = s->buf + s->start;
            s->start += have;
            return (ssize_t)have;
        }
    }
}

static ssize_t read_until(struct corio_task *t, struct corio_stream *s, int delim,
                          size_t limit, bool delim_free, const char **line)
{
    int err = lock_read(t, s, "corio_stream_read_until");
    if (err)
        return err;
    ssize_t n = until_locked(s, delim, limit, delim_free, line);
    corio_mutex_unlock(&s->rmu);
    return n;
}

ssize_t corio_stream_read_until(struct corio_task *t, struct corio_stream *s, int delim,
                                size_t limit, const char **line)
{
    AFS_CHECK(line != NULL, "line is NULL");
    if (delim < 0 || delim > 255 || limit > ((size_t)1 << 30))
        return -EINVAL;
    return read_until(t, s, delim, limit ? limit : DEFAULT_LIMIT, false, line);
}

ssize_t corio_stream_read_line(struct corio_task *t, struct corio_stream *s, size_t limit,
                               const char **line)
{
    return corio_stream_read_until(t, s, '\n', limit, line);
}

ssize_t corio_stream_read_all(struct corio_task *t, struct corio_stream *s, size_t limit,
                              char **out)
{
    AFS_CHECK(out != NULL, "out is NULL");
    *out = NULL;
    if (limit == 0)
        limit = SIZE_MAX - 1;
    int err = lock_read(t, s, __func__);
    if (err)
        return err;
    ssize_t n;
    for (;;) {
        size_t have = s->end - s->start;
        if (have > limit) {
            n = -EMSGSIZE;
            break;
        }
        n = fill(s, have + (s->cap - 1) / 2 + 1, SIZE_MAX);
        if (n < 0)
            break;
        if (n == 0) {
            char *p = afs__sys.malloc(have + 1);
            if (!p) {
                n = -ENOMEM;
                break;
            }
            memcpy(p, s->buf + s->start, have);
            p[have] = '\0';
            s->start = s->end;
            *out = p;
            n = (ssize_t)have;
            break;
        }
    }
    corio_mutex_unlock(&s->rmu);
    return n;
}

/* ------------------------------------------------------------------------------------------
 * Writes
 * ---------------------------------------------------------------------------------------- */

int corio_stream_write(struct corio_task *t, struct corio_stream *s, const void *buf,
                       size_t len)
{
    stream_check(s, __func__);
    AFS_CHECK(buf != NULL || len == 0, "buf is NULL");
    /* One writer at a time, in the order they came: chunks never interleave. */
    int err = corio_mutex_lock(t, &s->wmu);
    if (err)
        return err;
    /* A send or write cut short (a cancel, a deadline, a full disk) goes on with the rest:
     * the next call reports why it stopped. */
    ssize_t n = 0;
    for (size_t done = 0; done < len; done += (size_t)n) {
        n = raw_write(s, (const char *)buf + done, len - done);
        if (n <= 0) {
            n = n < 0 ? n : -EIO;
            break;
        }
    }
    corio_mutex_unlock(&s->wmu);
    return n < 0 ? (int)n : 0;
}

/* ------------------------------------------------------------------------------------------
 * Generators
 * ---------------------------------------------------------------------------------------- */

struct sgen_args {
    struct corio_stream *s;
    size_t               size;
};

static int lines_fn(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct sgen_args a = *(struct sgen_args *)arg;
    struct corio_line out = {0};
    int r;
    for (;;) {
        const char *p;
        ssize_t n = read_until(t, a.s, '\n', a.size, true, &p);
        if (n <= 0) {
            r = (int)n;
            break;
        }
        /* The line's bytes are consumed: its '\n' (or the spare byte) may hold the nul. */
        size_t len = (size_t)n;
        if (p[len - 1] == '\n')
            len--;
        ((char *)p)[len] = '\0';
        out = (struct corio_line){.data = p, .len = len, .lineno = out.lineno + 1};
        unsigned long taken = g->taken;
        if ((r = corio_gen_yield(t, g, &out)) < 0) {
            if (g->taken == taken) {
                /* Not taken: the line goes back to the stream (nothing read it since, the
                 * stream being the generator's), its '\n' restored. */
                if ((size_t)n > len)
                    ((char *)p)[len] = '\n';
                a.s->start -= (size_t)n;
            }
            break;
        }
        /* The line lives in the stream's buffer, which the next read may move. */
        corio_gen_flush(t, g);
    }
    return r;
}

int corio_stream_lines(struct corio_task *t, struct corio_gen *g, struct corio_stream *s,
                       size_t limit)
{
    stream_check(s, __func__);
    if (limit > ((size_t)1 << 30))
        return -EINVAL;
    struct sgen_args a = {s, limit ? limit : DEFAULT_LIMIT};
    return corio_gen_start(t, g, lines_fn, &a);
}

/* Puts len bytes back at the head of the read buffer (they came before what it holds). */
static int unread(struct corio_task *t, struct corio_stream *s, const char *p, size_t len)
{
    int err = lock_read(t, s, "corio_stream_chunks");
    if (err)
        return err;
    size_t have = s->end - s->start;
    if (have + len + 1 > s->cap) {
        char *nb = afs__sys.realloc(s->buf, have + len + 1);
        if (!nb) {
            corio_mutex_unlock(&s->rmu);
            return -ENOMEM;
        }
        s->buf = nb;
        s->cap = have + len + 1;
    }
    memmove(s->buf + len, s->buf + s->start, have);
    memcpy(s->buf, p, len);
    s->start = 0;
    s->end = have + len;
    s->scanned = 0;
    corio_mutex_unlock(&s->rmu);
    return 0;
}

static int chunks_fn(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct sgen_args a = *(struct sgen_args *)arg;
    /* Two buffers: the next chunk is read while the consumer holds the current one. */
    char *buf[2] = {afs__sys.malloc(a.size), afs__sys.malloc(a.size)};
    struct corio_chunk ch[2];
    uint64_t off = 0;
    int r = 0, k = 0;
    if (!buf[0] || !buf[1])
        r = -ENOMEM;
    while (r == 0) {
        ssize_t n = corio_stream_read(t, a.s, buf[k], a.size);
        if (n <= 0) {
            r = (int)n;
            break;
        }
        ch[k] = (struct corio_chunk){.data = buf[k], .len = (size_t)n, .off = off};
        off += (uint64_t)n;
        unsigned long taken = g->taken;
        r = corio_gen_yield(t, g, &ch[k]);
        if (r < 0 && g->taken == taken) {
            /* Closed (or interrupted) with this chunk read ahead and not taken: it goes
             * back to the stream, where the next read finds it. */
            corio_shield_begin(t);
            if (unread(t, a.s, buf[k], (size_t)n) < 0)
                r = -ENOMEM;
            corio_shield_end(t);
        }
        k ^= 1;
    }
    corio_gen_flush(t, g);
    free(buf[0]);
    free(buf[1]);
    return r;
}

int corio_stream_chunks(struct corio_task *t, struct corio_gen *g, struct corio_stream *s,
                        size_t chunk_size)
{
    stream_check(s, __func__);
    if (chunk_size > ((size_t)1 << 30))
        return -EINVAL;
    struct sgen_args a = {s, chunk_size ? chunk_size : DEFAULT_BUF};
    return corio_gen_start(t, g, chunks_fn, &a);
}
