/* Group commit (corio.h, "Group commit"): appenders copy their records into the open batch
 * and wait on its future; one flusher task per log takes the open batch, writes it with one
 * afs_pwrite and makes it durable with one afs_fsync(AFS_FSYNC_DATA), then completes the
 * future with the result. While that is in flight the next batch fills. A batch is freed (to
 * the log's spare list) by the last of its flusher and waiters to let go of it, since waiters
 * read the result after the flusher moved on. */
#include "corio_int.h"

#include <stdlib.h>
#include <string.h>

struct log_batch {
    struct corio_future done;
    char               *buf;
    size_t              len, cap;
    uint64_t            start;
    unsigned            refs;   /* waiters still to read the result, + 1 for the flusher */
    unsigned            records;
    struct log_batch   *next;   /* on the spare list */
};

#define LOG_MAGIC ((uintptr_t)0x676f4c63u)

struct corio_log {
    struct afs_file     *f;
    struct corio_sched  *sched;
    uintptr_t            magic;      /* LOG_MAGIC ^ address while open, AFS__DEAD after (not in
                                        the first 16 bytes, which free() writes) */
    struct log_batch    *open;       /* filling */
    struct log_batch    *spare;
    uint64_t             end;        /* where the next record goes */
    uint64_t             durable;
    int                  err;
    bool                 closing, idle;
    struct corio_future  kick;       /* completed to wake an idle flusher */
    struct corio_future  stopped;    /* completed by the flusher when it returns */
    struct corio_log_stats stats;
};

static struct log_batch *batch_get(struct corio_log *log, uint64_t start)
{
    struct log_batch *b = log->spare;
    if (b) {
        log->spare = b->next;
    } else {
        b = afs__sys.calloc(1, sizeof *b);
        if (!b)
            return NULL;
    }
    corio_future_init(&b->done);
    b->len = 0;
    b->start = start;
    b->refs = 1;
    b->records = 0;
    b->next = NULL;
    return b;
}

static void batch_put(struct corio_log *log, struct log_batch *b)
{
    if (--b->refs > 0)
        return;
    if (log) {
        b->next = log->spare;
        log->spare = b;
    } else {
        free(b->buf);
        free(b);
    }
}

/* One linked chain, one submission: the batch's write, then fdatasync, which runs only
 * when the write succeeded in full (else it is -ECANCELED, never run). Returns 0 or the
 * first failure, and in *written the bytes the write moved. */
static int write_and_sync(struct corio_log *log, struct log_batch *b, size_t *written)
{
    struct afs_ctx *ctx = log->f->ctx;
    struct afs_op w, s;
    *written = 0;
    int r = afs_chain_begin(ctx);
    if (r < 0)
        return r;
    if (b->len)
        r = afs_queue_write(&w, log->f, b->buf, b->len, b->start, NULL, NULL);
    if (r == 0)
        r = afs_queue_fsync(&s, log->f, AFS_FSYNC_DATA, NULL, NULL);
    if (r < 0) {
        (void)afs_chain_end(ctx, AFS_CHAIN_CANCEL | AFS_CHAIN_WAIT);
        return r;
    }
    r = afs_chain_end(ctx, AFS_CHAIN_WAIT);
    /* A write that failed part way reports the error: what it moved is in its count. */
    if (b->len)
        *written = w.result > 0 ? (size_t)w.result : afs__op(&w)->done;
    return r;
}

static void flusher(struct corio_task *t, void *arg)
{
    struct corio_log *log = arg;
    /* The log's I/O must not end half-way because the opener was cancelled: a cancelled
     * fdatasync would fail a batch that the kernel may well have made durable. */
    corio_shield_begin(t);
    for (;;) {
        while (log->open->records == 0 && !log->closing) {
            /* Idle: the next append (or close) completes the kick. */
            corio_future_init(&log->kick);
            log->idle = true;
            corio_future_await(t, &log->kick, NULL);
            log->idle = false;
        }
        if (log->open->records == 0)
            break; /* closing, nothing left */
        struct log_batch *b = log->open;
        struct log_batch *next = batch_get(log, b->start + b->len);
        int r = log->err;
        if (!next && !r)
            r = log->err = -ENOMEM; /* no batch to fill next: this one fails, and the log */
        if (r == 0) {
            log->open = next;
            size_t written;
            r = write_and_sync(log, b, &written);
            log->stats.batches += r == 0;
            log->stats.bytes += written;
            if (r < 0)
                log->err = r; /* failed for good: no later sync may stand for this one */
            else
                log->durable = b->start + b->len;
        } else if (next) {
            log->open = next; /* failed before: the records waiting here fail too */
        } else {
            log->open = NULL; /* appends stop at log->err and never reach it */
        }
        corio_future_complete(&b->done, r, NULL);
        batch_put(log, b);
        if (!log->open)
            break;
    }
    corio_shield_end(t);
    corio_future_complete(&log->stopped, 0, NULL);
}

int corio_log_open(struct corio_task *t, struct afs_file *f, uint64_t start,
                   struct corio_log **out)
{
    if (!t || !f || !out || start > (uint64_t)INT64_MAX)
        return -EINVAL;
    struct corio_log *log = afs__sys.calloc(1, sizeof *log);
    if (!log)
        return -ENOMEM;
    log->magic = LOG_MAGIC ^ (uintptr_t)log;
    log->f = f;
    log->sched = corio_task_sched(t);
    log->end = log->durable = start;
    corio_future_init(&log->kick);
    corio_future_init(&log->stopped);
    log->open = batch_get(log, start);
    if (!log->open) {
        free(log);
        return -ENOMEM;
    }
    int r = corio_spawn(t, flusher, log, NULL);
    if (r < 0) {
        batch_put(NULL, log->open);
        free(log);
        return r;
    }
    *out = log;
    return 0;
}

/* The getters take no task: the log must be open (it may be closing). */
static const struct corio_log *log_peek(const struct corio_log *log, const char *what)
{
    if (!log)
        afs__panic(what, "log is NULL");
    afs__magic_check(AFS__MAGIC_OF(log, struct corio_log), LOG_MAGIC, log, what,
                     "log was closed (used after corio_log_close, or closed twice)",
                     "not an open log (closed, or never made)");
    return log;
}

/* A log used after its close (or never made) aborts with the library's message, as a file
 * does (asyncfs.h: the mark stays until the memory is reused). */
static void log_check(struct corio_task *t, struct corio_log *log, const char *what)
{
    if (!t)
        afs__panic(what, "NULL task");
    log_peek(log, what);
    if (log->closing)
        afs__panic(what, "the log is closing");
    if (corio_task_sched(t) != log->sched)
        afs__panic(what, "a log is used by tasks of its scheduler only");
}

int corio_log_append(struct corio_task *t, struct corio_log *log, const void *rec, size_t len,
                     uint64_t *off)
{
    log_check(t, log, __func__);
    if (!rec && len > 0)
        return -EINVAL;
    if (log->err)
        return log->err;
    int r = corio__interrupted(t);
    if (r < 0)
        return r;
    if (len > (uint64_t)INT64_MAX - log->end)
        return -EINVAL;
    struct log_batch *b = log->open;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        char *nb = afs__sys.realloc(b->buf, cap);
        if (!nb)
            return -ENOMEM;
        b->buf = nb;
        b->cap = cap;
    }
    if (len)
        memcpy(b->buf + b->len, rec, len);
    uint64_t at = log->end;
    b->len += len;
    b->records++;
    b->refs++;
    log->end += len;
    log->stats.appends++;
    if (off)
        *off = at;
    if (log->idle && !corio_future_done(&log->kick))
        corio_future_complete(&log->kick, 0, NULL);
    r = corio_future_await(t, &b->done, NULL);
    batch_put(log, b);
    return r;
}

int corio_log_close(struct corio_task *t, struct corio_log *log)
{
    log_check(t, log, __func__);
    log->closing = true;
    if (log->idle && !corio_future_done(&log->kick))
        corio_future_complete(&log->kick, 0, NULL);
    corio_future_await_shielded(t, &log->stopped, NULL);
    int err = log->err;
    if (log->open)
        batch_put(NULL, log->open);
    while (log->spare) {
        struct log_batch *b = log->spare;
        log->spare = b->next;
        free(b->buf);
        free(b);
    }
    *(volatile uintptr_t *)&log->magic = AFS__DEAD; /* kept until the memory is reused */
    free(log);
    return err;
}

int corio_log_error(const struct corio_log *log)
{
    return log_peek(log, __func__)->err;
}

uint64_t corio_log_durable(const struct corio_log *log)
{
    return log_peek(log, __func__)->durable;
}

void corio_log_stats(const struct corio_log *log, struct corio_log_stats *out)
{
    AFS_CHECK(out != NULL, "NULL argument");
    *out = log_peek(log, __func__)->stats;
}
