/* Streams: stdio-like buffered files with read-ahead and write-behind (afs_fopen...), built
 * on the op API. docs/STREAMS.md describes the design: the buffers and their states, when
 * read-ahead goes through a second, O_DIRECT file, and the rule that decides it. Waiting for
 * a chunk is afs__op_wait(); a buffer is reused only once its op's callback ran. */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <unistd.h>
#endif

#define STREAM_CHUNK_DEFAULT ((size_t)1 << 20)
#define STREAM_DEPTH_DEFAULT 4u
#define STREAM_DEPTH_MAX     64u
#define STREAM_ALIGN         ((size_t)4096)
#define STREAM_DIRECT_MIN    16u /* chunks: smaller files are read through the page cache */
#define STREAM_WINDOW_MIN    8u  /* chunks: the shortest window of the direct-read rule */
#define STREAM_CACHED_WIN    16u /* chunks at least: a window of the cached-data rule
                                    (docs/STREAMS.md) */
#define STREAM_EXPLORE       16u  /* cached windows until the mode not chosen is timed again; the
                                     gap doubles each time, up to 16 times this */
#define STREAM_CALLER_MIN    ((size_t)64 << 10) /* cached: freads this big bypass the chunks */
#define STREAM_PIPE_PIECE    ((size_t)16 << 10) /* a pipe written on the caller's thread: bytes
                                                   per write at most (pipe_inline()) */
#define STREAM_SPARE_BYTES   ((size_t)8 << 20) /* chunk buffers a context keeps, at most */
#define STREAM_NOWAIT_SPAN   ((size_t)4 << 20) /* trusted windows: bytes of plain reads between two
                                                  that never wait (see inline_read()) */
#define STREAM_TIME_BYTES    ((size_t)1 << 20) /* cached: inline reads timed, one per this
                                                      many bytes (inline_read()) */
#define STREAM_FILL_MIN      ((size_t)64 << 10) /* cached: a stream's first chunk fill, and
                                                   the first after a seek */
#define STREAM_NAME_INLINE   96u /* bytes of a path kept in the stream itself (df_name) */

/* Who copies cached data out of the page cache (docs/STREAMS.md). */
enum cached_mode {
    CM_INLINE = 0, /* the consumer's thread, into the caller's buffer where it can */
    CM_POOL        /* a pool thread, into the read-ahead chunks, while the consumer computes */
};

enum chunk_state {
    CH_FREE = 0,
    CH_READING, /* read op in flight, wanted */
    CH_READY,   /* read done (result set), data valid when result >= 0 */
    CH_FILL,    /* being filled by afs_fwrite */
    CH_WRITING, /* write op in flight */
    CH_DROPPED  /* read op in flight, no longer wanted: free when its callback runs */
};

enum stream_dir { DIR_NONE = 0, DIR_READ, DIR_WRITE };

struct chunk {
    struct afs_op      op;
    struct afs_stream *s;
    char              *buf;
    int64_t            off;    /* file offset of buf[0] */
    size_t             len;    /* READY: bytes read; FILL/WRITING: bytes to write */
    size_t             lo;     /* READY, cached (part): buf holds [lo, len) only, lo a page
                                  boundary: a reader that entered the chunk there (a seek) */
    ssize_t            result; /* the op's result, once done */
    uint64_t           seq;    /* queueing order: the oldest is waited for first */
    uint8_t            state;  /* enum chunk_state */
    bool               direct; /* read through the stream's O_DIRECT file */
    bool               pool;   /* read by a pool thread (cached data, CM_POOL) */
    bool               part;   /* READY, cached: filled up to len only, the rest of the chunk
                                  is read when the reader gets there (fill_more()) */
    struct afs__op_waiting wait; /* .pending: from queueing until chunk_cb ran */
};

struct afs_stream {
    struct afs_ctx  *ctx;
    struct afs_list_node node; /* on ctx->streams */
    struct afs_file *f;
    /* What a cached read needs of f and ctx, kept here: on a machine whose every system
     * call empties the TLB, each page a read touches after its call costs a page walk, and
     * f's and ctx's are two more than stdio's read touches. */
    afs__fd_t        fd;          /* f's */
    bool             plain_pread; /* afs__sys.pread was the default at the open or at the
                                     current window's start */
    bool             crash;       /* ctx is in crash mode (fixed while a file is open) */
    bool             bound;       /* ctx->bound, kept by afs__streams_bound() */
    uint64_t         inline_ops;  /* reads made on this thread, not yet in ctx->stats */
    struct afs_file *df;      /* the file again with O_DIRECT, for cold reads; or NULL */
    char            *df_path; /* the path, while df may still be opened: at the first window
                                 found not all cached (open_direct()); df_name or the heap */
    bool             df_refused; /* a direct read failed with -EINVAL: df is not used */
    bool             go_direct;  /* queue read-ahead on df (docs/STREAMS.md) */
    unsigned         slow;       /* windows in a row where the consumer waited */
    unsigned         win_n;      /* chunks entered in order in this window */
    int64_t          win_start;  /* when the window started, ns */
    int64_t          win_wait;   /* ns waited for chunks in it */
    uint64_t         direct_reads; /* chunks queued on df */
    /* The cached-data rule (docs/STREAMS.md): windows of consumed bytes, timed per mode. */
    bool             cached;     /* the current window is all in the page cache */
    uint32_t         cw_seen[3]; /* windows found all cached, not all cached, kernel silent */
    uint8_t          cmode;      /* enum cached_mode of the current window */
    bool             cached_ok;  /* the rule applies (buffered reads of a file with offsets) */
    unsigned         pool_max;   /* CM_POOL reads in flight at most; 0: no CM_POOL here;
                                    UINT_MAX: not known yet (see cached_mode()) */
    bool             cw_timed;   /* the current window counts (not the stream's first two) */
    bool             cw_first;   /* the current window is the stream's first, short one */
    bool             cw_lead;    /* the current window is the first read's pages, not asked
                                    about; the first window comes after it */
    bool             cw_free;    /* the last CM_INLINE window had a CPU to itself and work
                                  * outside its reads to overlap them with */
    unsigned         cwins;      /* cached windows timed */
    unsigned         cw_next, cw_gap; /* when the mode not chosen is timed again, and the gap */
    int64_t          cw_end;     /* the window closes when pos reaches this; -1: none open,
                                    -2: none yet, -3: a seek's comes next */
    int64_t          cw_pos, cw_start, cw_cpu; /* where and when (ns, thread CPU ns) it opened */
    int64_t          cw_read;    /* ns of this window spent in inline_read() (sampled) */
    size_t           cw_skip;    /* bytes of inline reads not timed since the last timed one */
    uint64_t         cw_cost[2]; /* ns per MiB consumed, per enum cached_mode; 0: not timed */
    bool             cw_nowait;  /* the current window was not asked about: its inline reads
                                    are checked for data not cached (inline_read()), and one
                                    that finds some ends it (cw_miss) */
    size_t           cw_plain;   /* bytes read by plain reads since the last checked one */
    bool             cw_miss;    /* an inline read found data not cached, or the file may have
                                    changed: the next window is asked about */
    bool             nowait_refused; /* the file cannot be read without waiting */
    uint32_t         cw_trusted; /* windows not asked about (the last one was all cached) */
    bool             cw_seek;    /* the current window is a seek's (cached_window()): read as
                                    stdio reads, untimed, the kernel not asked */
    bool             cw_keep;    /* in a seek's window: the window before the seeks was all
                                    cached, so the next one may go unasked as it might have */
    uint64_t         inline_reads, pool_reads; /* for tests: cached reads of each kind */
    size_t           grow;       /* bytes the next inline fill of a cached chunk reads at least:
                                    STREAM_FILL_MIN, doubling up to cs */
    bool             fill_first; /* the next fill is the first since the open or a seek */
    bool             no_chunks;  /* no chunk is CH_READING or CH_READY: the cached path into
                                    the caller's buffer need not look for one */
    size_t           cs;      /* chunk size */
    uintptr_t        magic;   /* AFS__STREAM_MAGIC ^ address while open, AFS__DEAD after; not
                                 in the first 32 bytes: free() keeps its lists there */
    /* A small read that the chunk the last afs_fread() ended in holds whole is a copy and
     * nothing else, as a getc from stdio's buffer: read_c holds [pos, read_end) (never its
     * last byte, nor past the window's end, so that the chunk's end and the window's close
     * take the full path; a pipe's chunk: what the last read left of it). read_end is 0 (no
     * such read) after any call but afs_fread(), and from the start of afs_fread()'s full
     * path until its end. */
    int64_t          read_end;
    struct chunk    *read_c;
    /* A write that fits in the fill buffer with room to spare is a copy and nothing else:
     * wr_room bytes may be copied there (fewer than its room, so that filling it takes the
     * full path). 0 once the buffer is queued, and from the start of afs_fwrite()'s full
     * path until its end. */
    size_t           wr_room;
    int64_t          pos;     /* the stream's position, buffered data included */
    unsigned         depth;   /* ops in flight at most */
    unsigned         nbuf;    /* chunks made so far: chunk_get() makes them as they are
                                 needed (a small file needs one, or none) */
    unsigned         nmax;    /* chunks at most: depth + 1 */
    unsigned         ra;      /* chunks read ahead of the reader now, 0..depth */
    bool             can_read, can_write, append;
    bool             pipe;    /* the file has no offsets (pipe, FIFO, socket, tty): see
                                 fread_pipe(); writes go one at a time */
    struct chunk    *pipe_cur; /* pipe: the chunk being read or consumed, or NULL */
    uint8_t          dir;     /* enum stream_dir: the direction buffered now */
    bool             eof;     /* the end-of-file indicator (sticky until seek/clearerr) */
    int64_t          end_seen; /* in this afs_fread call, a read that stopped here found the
                                  end of the file there (pread_full()): the call's next read
                                  here returns 0 without a system call; -1: none. Not kept
                                  past the call, which sees the end only as stdio does (a
                                  file that grows between two calls reads on) */
    bool             pos_at_end; /* append: data was written, pos is the file's end */
    int64_t          werr_off;   /* where the first failed write stopped (what it wrote
                                    before its error included); INT64_MAX: none */
    int64_t          seek_ok;    /* positions up to this one are known to be good ones for
                                    the file (seek_allowed()) */
    int64_t          cur_off; /* offset of the chunk the reader is in, -1 for none */
    int64_t          eof_off; /* no read-ahead at or past this offset (a hint, not EOF) */
    int              err;     /* first error, cleared by afs_clearerr */
    int              werr;    /* first write error, cleared by afs_clearerr */
    uint64_t         seq;
    struct chunk    *fill;    /* the buffer afs_fwrite fills, or NULL */
    char             df_name[STREAM_NAME_INLINE]; /* df_path when it fits: no malloc and
                                                     free for each big file opened */
    struct chunk     ch0;     /* the first chunk made (a small file's only one) */
    struct chunk    *ch[];   /* nmax places, nbuf made: ch0, then allocated ones */
};

_Static_assert(offsetof(struct afs_stream, magic) >= 32, "magic clear of malloc's words");

/* Every public call on a stream starts here (the header's one rule for handles). */
static struct afs_stream *stream_check(const struct afs_stream *s, const char *call)
{
    if (!s)
        afs__panic(call, "stream is NULL");
    afs__magic_check(AFS__MAGIC_OF(s, struct afs_stream), AFS__STREAM_MAGIC, s, call,
                     "stream was closed (used after afs_fclose, or closed twice)",
                     "not an open stream (closed, or never opened)");
    AFS__OWNER_CHECK_BOUND(s->bound, s->ctx, call, "stream's context");
    return (struct afs_stream *)s;
}

/* The calls that may write or wait for the stream's ops: none while a chain is open on its
 * context (asyncfs.h, "Chains"). Reads check where they queue (afs_ctx_submit names it). */
static void chain_check(const struct afs_stream *s, const char *call)
{
    if (s->ctx->chain_open)
        afs__panic(call, "a chain is open on the stream's context: afs_chain_end() first");
}

void afs_stream_options_default(struct afs_stream_options *o)
{
    AFS_CHECK(o != NULL, "options is NULL");
    memset(o, 0, sizeof *o);
    o->chunk_size = STREAM_CHUNK_DEFAULT;
    o->chunks = STREAM_DEPTH_DEFAULT;
    o->perm = 0666;
}

static void set_err(struct afs_stream *s, int err)
{
    if (err < 0 && !s->err)
        s->err = err;
}

static bool in_flight(const struct chunk *c)
{
    return c->state == CH_READING || c->state == CH_WRITING || c->state == CH_DROPPED;
}

/* A write-behind of c failed with err: the stream keeps the error, and where the data
 * stopped (what the write moved before its error included). Append mode and pipes have no
 * such offset: their data stops at the end of what the file took. */
static void write_failed(struct afs_stream *s, struct chunk *c, ssize_t err)
{
    set_err(s, (int)err);
    if (!s->werr)
        s->werr = (int)err;
    int64_t stop = c->off + (int64_t)afs__op(&c->op)->done;
    if (!s->pipe && !s->append && stop < s->werr_off)
        s->werr_off = stop;
}

/* Whether a write of the stream already failed, its callback not run yet: the sync backend
 * runs a write as it is queued, and a completion reaped while waiting for another op waits
 * for its callback in the context's list. Such a failure is recorded now (the callback
 * records nothing new), so that no more data is queued after it. Only looks at the ops'
 * states, on the owner thread: no waiting, no system call. */
static bool writes_failed(struct afs_stream *s)
{
    for (unsigned i = 0; i < s->nbuf; i++) {
        struct chunk *c = s->ch[i];
        if (c->state == CH_WRITING && afs__op(&c->op)->state == AFS__DONE && c->op.result < 0)
            write_failed(s, c, c->op.result);
    }
    return s->werr != 0;
}

/* Why op was cancelled: a corio deadline (-ETIMEDOUT, as the waiter returns it) or not. */
static int cut_err(struct afs_op *op)
{
    return afs__op(op)->timed_out ? -ETIMEDOUT : -ECANCELED;
}

static void chunk_cb(struct afs_op *op)
{
    struct chunk *c = op->data;
    struct afs_stream *s = c->s;
    c->result = op->result;
    switch (c->state) {
    case CH_READING:
        c->state = CH_READY;
        c->len = op->result > 0 ? (size_t)op->result : 0;
        break;
    case CH_WRITING:
        /* Write-behind errors surface at the next afs_fwrite, afs_fflush or afs_fclose. A
         * pipe's write cut short (cancelled after it moved some bytes: its count, not
         * -ECANCELED) lost the rest of the chunk: that is a failure too. */
        if (op->result < 0)
            write_failed(s, c, op->result == -ECANCELED ? cut_err(op) : op->result);
        else if (s->pipe && (size_t)op->result < c->len)
            write_failed(s, c, cut_err(op));
        c->state = CH_FREE;
        break;
    default:
        c->state = CH_FREE;
        break;
    }
    afs__op_wait_done(&c->wait, op);
}

/* Blocks (or suspends the task) until c's op callback ran. Returns 0, or the waiter's error
 * (e.g. -ETIMEDOUT when a deadline cancelled the op); the chunk is settled either way,
 * except for -EDEADLK from inside a callback, where nothing can be waited for. */
static int chunk_wait(struct afs_stream *s, struct chunk *c)
{
    return afs__op_wait(s->ctx, &c->op, &c->wait);
}

static char *buf_get(struct afs_stream *s);

/* Makes the stream's next chunk, with its buffer: a stream makes them when it first needs
 * them, as stdio allocates its buffer at the first read or write, so that opening a small
 * file and reading it costs one chunk (or none: see afs_fread), not depth + 1. NULL when
 * out of memory. */
static struct chunk *chunk_new(struct afs_stream *s)
{
    struct chunk *c = s->nbuf ? afs__zalloc(sizeof *c) : &s->ch0;
    if (!c)
        return NULL;
    c->s = s;
    c->buf = buf_get(s);
    if (!c->buf) {
        if (c != &s->ch0)
            free(c);
        return NULL;
    }
    s->ch[s->nbuf++] = c;
    return c;
}

/* A free buffer (a new one while fewer than nmax were made); with may_wait, waits for the
 * oldest op in flight when none is free. *err: -ENOMEM when none could be made and none is
 * in flight. */
static struct chunk *chunk_get(struct afs_stream *s, bool may_wait, int *err)
{
    *err = 0;
    for (;;) {
        struct chunk *oldest = NULL;
        for (unsigned i = 0; i < s->nbuf; i++) {
            struct chunk *c = s->ch[i];
            if (c->state == CH_FREE)
                return c;
            if (in_flight(c) && (!oldest || c->seq < oldest->seq))
                oldest = c;
        }
        if (s->nbuf < s->nmax) {
            struct chunk *c = chunk_new(s);
            if (c)
                return c;
            if (!oldest)
                *err = -ENOMEM;
        }
        if (!may_wait || !oldest)
            return NULL;
        int e = chunk_wait(s, oldest);
        if (e < 0 && !*err)
            *err = e;
        if (e == -EDEADLK)
            return NULL;
    }
}

/* ------------------------------------------------------------------------------------------
 * Reading
 * ---------------------------------------------------------------------------------------- */

static struct chunk *find_chunk(struct afs_stream *s, int64_t off)
{
    for (unsigned i = 0; i < s->nbuf; i++) {
        struct chunk *c = s->ch[i];
        if ((c->state == CH_READING || c->state == CH_READY) && c->off == off)
            return c;
    }
    return NULL;
}

/* For tests (not part of the API): the page-cache probe, replaceable so that a test of the
 * cached-data rule's choices does not hang on what the kernel keeps in its cache meanwhile. */
int (*afs__stream_cache_probe)(afs__fd_t fd, int64_t off, int64_t len, uint64_t *cached,
                               bool *dirty);
int (*afs__stream_cache_probe)(afs__fd_t fd, int64_t off, int64_t len, uint64_t *cached,
                               bool *dirty) = afs__sys_cache_state;

/* How many bytes of [off, off + len) of f are in the page cache, and whether any of them is
 * dirty or under writeback. False where the kernel cannot tell (cachestat: Linux 6.5). */
static bool cache_state(struct afs_file *f, int64_t off, int64_t len, uint64_t *cached,
                        bool *dirty)
{
    return afs__stream_cache_probe(f->fd, off, len, cached, dirty) == 0;
}

/* Mostly not cached and nothing dirty: a direct read costs the same I/O and saves a copy. */
static bool cold_range(struct afs_file *f, int64_t off, int64_t len)
{
    uint64_t cached;
    bool dirty;
    return cache_state(f, off, len, &cached, &dirty) && !dirty && cached * 2 < (uint64_t)len;
}

/* The cached path into the caller's buffer: drops the chunks the reader has passed (their
 * data is behind it) and tells whether no chunk holds or awaits data any more, so that the
 * next big cached reads look for none (s->no_chunks, cleared when a chunk is used again). */
static bool chunks_idle(struct afs_stream *s)
{
    bool idle = true;
    for (unsigned i = 0; i < s->nbuf; i++) {
        struct chunk *c = s->ch[i];
        if (c->state == CH_READY && c->off + (int64_t)s->cs <= s->pos)
            c->state = CH_FREE;
        idle &= c->state != CH_READING && c->state != CH_READY;
    }
    return idle;
}

static void open_direct(struct afs_stream *s);

static int queue_read(struct afs_stream *s, struct chunk *c, int64_t off)
{
    c->off = off;
    c->len = c->lo = 0;
    c->result = 0;
    c->seq = ++s->seq;
    c->state = CH_READING;
    s->no_chunks = false;
    /* Only sequential reading goes direct (read-ahead is what makes it pay), and only while
     * the consumer is behind the reads (docs/STREAMS.md). */
    c->direct = s->df && !s->df_refused && s->go_direct && s->ra && off < s->eof_off &&
                !s->cached && cold_range(s->f, off, AFS_MIN((int64_t)s->cs, s->eof_off - off));
    c->pool = s->cached && s->cmode == CM_POOL;
    c->part = false;
    int err = afs__op_setup(&c->op, c->direct ? s->df : s->f,
                            &(struct afs__op_args){.code = AFS__READ, .buf = c->buf,
                                                   .len = s->cs, .off = (uint64_t)off,
                                                   .cb = chunk_cb, .data = c});
    if (err < 0) {
        c->state = CH_FREE;
        return err;
    }
    if (c->pool)
        afs__op(&c->op)->flags |= AFS__OP_POOL; /* the copy overlaps the consumer */
    afs__op_enqueue(&c->op);
    c->wait.pending = true;
    if (c->direct)
        s->direct_reads++;
    if (c->pool)
        s->pool_reads++;
    return err;
}

/* The reader entered the next chunk in order: closes a window of the direct-read rule
 * (docs/STREAMS.md) when it is full. Chunks of a window found all cached are read on the
 * reader's thread, with nothing to wait for: they say nothing of whether the reader keeps
 * up with the disk, and a window of the rule spans none of them (counted as windows where
 * the reader did not wait, they sent a reader that had been seen waiting back to direct
 * reads after a cached stretch). */
static void note_arrival(struct afs_stream *s)
{
    if (!s->df || s->df_refused)
        return; /* no choice to make */
    if (s->cached) {
        s->win_n = 0;
        return;
    }
    int64_t now = afs__sys.now();
    unsigned window = 2 * s->depth > STREAM_WINDOW_MIN ? 2 * s->depth : STREAM_WINDOW_MIN;
    if (s->win_n == window) {
        if (2 * s->win_wait < now - s->win_start)
            s->go_direct = true, s->slow = 0;
        else if (++s->slow >= 2)
            s->go_direct = false;
        s->win_n = 0;
    }
    if (s->win_n++ == 0) {
        s->win_start = now;
        s->win_wait = 0;
    }
}

/* For tests (not part of the API): how many chunks s has queued for direct reads. */
uint64_t afs__stream_direct_reads(const struct afs_stream *s);
uint64_t afs__stream_direct_reads(const struct afs_stream *s)
{
    return s->direct_reads;
}

/* For tests: the cached reads s made on the consumer's thread and on pool threads. */
void afs__stream_cached_reads(const struct afs_stream *s, uint64_t *inline_n, uint64_t *pool_n);
void afs__stream_cached_reads(const struct afs_stream *s, uint64_t *inline_n, uint64_t *pool_n)
{
    *inline_n = s->inline_reads;
    *pool_n = s->pool_reads;
}

/* For tests: the windows s asked the kernel about: found all cached, not all, no answer. */
void afs__stream_windows(const struct afs_stream *s, uint32_t seen[3]);
void afs__stream_windows(const struct afs_stream *s, uint32_t seen[3])
{
    memcpy(seen, s->cw_seen, sizeof s->cw_seen);
}

/* For tests: the windows s took as cached without asking (their reads never waited). */
uint32_t afs__stream_trusted_windows(const struct afs_stream *s);
uint32_t afs__stream_trusted_windows(const struct afs_stream *s)
{
    return s->cw_trusted;
}

#ifndef _WIN32
/* afs__sys_pread() in the caller: a stream whose table had the default when its window
 * opened (every one but a test's) spares each read the pages of the table and of the
 * wrapper. */
static inline ssize_t pread_plain(int fd, void *buf, size_t len, uint64_t off)
{
    ssize_t r = pread(fd, buf, len, (off_t)off);
    return r < 0 ? -errno : r;
}
#endif

/* pread() of s's file on this thread until len bytes, the end of the file or an error, with
 * the blocking path's rules (EINTR retried, a short read at the size afs_open saw taken as
 * the end, afs_ctx_stats counted through s->inline_ops) but no op: a cached read of 64 KiB
 * costs what fread's read(2) costs, and the op's setup and run (some 350 instructions and a
 * dozen cache lines, after a copy that evicted them) stay out of it. A read that got all it
 * asked for touches s and nothing else of the library's data. With *nowait the reads never
 * wait for the device (afs__sys.pread_nowait): at the first that would, *nowait is cleared
 * and the bytes read so far are returned, or -EAGAIN for none; where the file cannot tell
 * (-EOPNOTSUPP), s->nowait_refused is set too and the reads go on as pread(). *ended is set
 * when the read found the end of the file where it stopped. Returns the bytes read or
 * -errno. */
AFS__HOT_PATH static ssize_t pread_full(struct afs_stream *s, char *buf, size_t len, int64_t off,
                                        bool *nowait, bool *ended)
{
    size_t done = 0;
    s->inline_ops++;
    while (done < len) {
        size_t n = AFS_MIN(len - done, AFS__CHUNK_MAX);
        uint64_t at = (uint64_t)off + done;
        ssize_t r = *nowait        ? afs__sys.pread_nowait(s->fd, buf + done, n, at)
#ifndef _WIN32
                    : s->plain_pread ? pread_plain(s->fd, buf + done, n, at)
#endif
                                     : afs__sys.pread(s->fd, buf + done, n, at);
        if (r == (ssize_t)n && done + n == len)
            return (ssize_t)len; /* all of it: nothing else to look at */
        if (*nowait && r == -EAGAIN) {
            *nowait = false;
            if (!done)
                return -EAGAIN;
            break;
        }
        if (*nowait && r == -EOPNOTSUPP) {
            s->nowait_refused = true;
            *nowait = false;
            continue;
        }
        if (r == -EINTR || r == -EAGAIN)
            continue;
        if (r < 0)
            return r;
        if (r == 0) {
            s->ctx->stats.eof_checks += done > 0;
            *ended = true;
            break;
        }
        done += (size_t)r;
        int64_t h = atomic_load_explicit(&s->f->size_hint, memory_order_relaxed);
        if (done < len && h >= 0 && off + (int64_t)done == h) {
            s->ctx->stats.eof_skips++;
            *ended = true;
            break;
        }
    }
    return (ssize_t)done;
}

/* A read of cached data on this thread, now. Returns the bytes read or -errno. In a timed
 * CM_INLINE window the time spent in these reads is measured on a sample: one read per
 * STREAM_TIME_BYTES read (or each read of at least that), weighted by the bytes it stands
 * for, so that 64 KiB reads pay half a clock read each instead of two. */
AFS__HOT_PATH static ssize_t inline_read(struct afs_stream *s, void *buf, size_t len,
                                         int64_t off)
{
    ssize_t r;
    if (off == s->end_seen)
        return 0;
    s->inline_reads++;
    bool timed = s->cmode == CM_INLINE && s->cw_timed && s->cw_skip + len >= STREAM_TIME_BYTES;
    int64_t t0 = timed ? afs__sys.now() : 0;
    if (!s->crash) {
        /* A read that never waits costs more than a plain one (preadv2(RWF_NOWAIT) against
         * pread: some 200 ns a call on Linux 6.18, 2-3% of a cached 64 KiB read), so a
         * window not asked about checks its window's first read and then one read per
         * STREAM_NOWAIT_SPAN bytes. A page not cached in between is waited for by a plain
         * read, as stdio's read waits for it; the kernel's read-ahead that it starts is
         * still under way at the next checked read, which ends the window there. A seek's
         * window that never waits (in a task) checks every read: nothing says its data are
         * cached, and a wait there would stop the task's thread. */
        bool check = s->cw_nowait && (s->cw_plain >= STREAM_NOWAIT_SPAN || s->cw_seek);
        bool nowait = check, ended = false;
        r = pread_full(s, buf, len, off, &nowait, &ended);
        if (ended)
            s->end_seen = off + r;
        if (s->cw_nowait && !check)
            s->cw_plain += len;
        else if (check && nowait)
            s->cw_plain = 0;
        if (check && !nowait) {
            /* Not all cached after all (or the file cannot tell): the window ends at the
             * reader's position, not timed, and the next one is asked about at once: a
             * read that stopped short (or -EAGAIN for no bytes) is taken on from there as
             * the answer says, ahead of the reader where it is not cached. */
            s->cw_nowait = false;
            s->cw_miss = true;
            s->cw_timed = timed = false;
            s->cw_end = s->pos;
        }
    } else {
        /* Crash mode: the op path, which the simulator sees. */
        struct afs_op op;
        struct afs__op_waiting ow = {0};
        afs__op(&op)->magic = 0;
        int err = afs__op_setup(&op, s->f,
                                &(struct afs__op_args){.code = AFS__READ, .buf = buf, .len = len,
                                                       .off = (uint64_t)off,
                                                       .cb = afs__blocking_cb, .data = &ow});
        if (err < 0)
            return err;
        r = afs__blocking_run(&op, &ow, true);
    }
    if (timed) {
        uint64_t dt = (uint64_t)AFS_MAX(afs__sys.now() - t0, 0);
        s->cw_read += (int64_t)(dt + dt * s->cw_skip / len);
        s->cw_skip = 0;
    } else if (s->cmode == CM_INLINE && s->cw_timed) {
        s->cw_skip += len;
    }
    return r;
}

/* Cached data on the consumer's thread (CM_INLINE, and small requests): reads chunk c on from
 * its len, at least past `in` + `want` (the reader's offset in it, and what it asks for) and
 * s->grow bytes, up to the chunk's end. A reader of a few bytes so copies 64 KiB, not a
 * whole chunk (stdio reads one buffer of 4 KiB); one that goes on reads twice as much each
 * time, up to whole chunks. A short read is the end of the file. 0 or -errno. */
AFS__NOINLINE static int fill_more(struct afs_stream *s, struct chunk *c, size_t in,
                                   size_t want)
{
    size_t grow = s->grow;
    if (s->fill_first) {
        /* The first fill of a file with more than s->grow bytes left reads what is asked, in
         * pages, as stdio reads one buffer: a program that reads a header of a big file
         * copies 4 KiB, not 64. Smaller files are read whole, their end seen at once. */
        s->fill_first = false;
        if (s->eof_off - (c->off + (int64_t)c->len) > (int64_t)grow)
            grow = STREAM_ALIGN;
    }
    size_t end = AFS_MAX(c->len + grow, in + AFS_MIN(want, s->cs - in));
    end = AFS_MIN((end + STREAM_ALIGN - 1) & ~(STREAM_ALIGN - 1), s->cs);
    if (grow == s->grow)
        s->grow = AFS_MIN(2 * s->grow, s->cs);
    bool nowait = s->cw_nowait;
    ssize_t r = inline_read(s, c->buf + c->len, end - c->len, c->off + (int64_t)c->len);
    if (r < 0)
        return (int)r;
    /* A read cut short where the data is not cached is no end of the file. */
    c->part = (c->len + (size_t)r == end && end < s->cs) || (nowait && !s->cw_nowait);
    c->len += (size_t)r;
    return 0;
}

/* Reads chunk c on from its end to the chunk's size, on this thread with a plain read (at
 * the end of the file: it returns at once, or what another writer appended, most likely
 * cached). The bytes read or -errno. */
AFS__NOINLINE static ssize_t read_on(struct afs_stream *s, struct chunk *c)
{
    /* An O_DIRECT file reads whole pages: from the page the chunk's data ends in. */
    size_t from = (s->f->flags & AFS_DIRECT) ? c->len & ~(STREAM_ALIGN - 1) : c->len;
    size_t len = s->cs - from;
    int64_t off = c->off + (int64_t)from;
    if (s->crash)
        return inline_read(s, c->buf + from, len, off); /* the op path, as there */
    bool nowait = false, ended = false;
    ssize_t r = pread_full(s, c->buf + from, len, off, &nowait, &ended);
    return r < 0 ? r : AFS_MAX(r - (ssize_t)(c->len - from), 0);
}

static int64_t thread_cpu(void)
{
    return afs__sys.cpu_now ? afs__sys.cpu_now() : -1;
}

/* The mode of the next cached window: CM_INLINE until it was timed, then the cheaper one;
 * the other one is timed again now and then (every STREAM_EXPLORE windows, then less and
 * less often). CM_POOL is tried only where it may pay: another CPU is allowed, and the last
 * CM_INLINE window's thread was not kept waiting for a CPU (one that is has no idle core to
 * hand work to). */
static uint8_t cached_mode(struct afs_stream *s)
{
    uint64_t *cost = s->cw_cost;
    if (!cost[CM_INLINE])
        return CM_INLINE;
    /* A pool thread copies while the consumer computes only where another CPU may run it;
     * the sync backend has no threads to use. Asked here, not at open: a stream that never
     * gets this far (a small file) makes no system call for it. */
    if (s->pool_max == UINT_MAX)
        s->pool_max = s->ctx->be->id == AFS_BACKEND_SYNC ? 0 : afs__cpu_usable() - 1;
    if (!s->pool_max)
        return CM_INLINE;
    if (!cost[CM_POOL])
        return s->cw_free ? CM_POOL : CM_INLINE;
    uint8_t best = cost[CM_POOL] < cost[CM_INLINE] ? CM_POOL : CM_INLINE;
    if (s->cwins < s->cw_next)
        return best;
    s->cw_gap = AFS_MIN(2 * s->cw_gap, 16 * STREAM_EXPLORE);
    s->cw_next = s->cwins + s->cw_gap;
    return best == CM_POOL || s->cw_free ? (uint8_t)!best : best;
}

/* Whether the caller runs in a task of a waiter for s's context (afs__op_wait() would
 * suspend only that task). */
static bool in_task(const struct afs_stream *s)
{
    struct afs_waiter *w = afs_waiter_get();
    return w && w->ctx == s->ctx && !s->ctx->in_callback && w->current(w);
}

/* The cached-data rule (docs/STREAMS.md): a window closes when the consumer has moved
 * through it in order; its time per byte is what its mode cost, the consumer's own work
 * included. The next window asks the kernel whether it is all cached, and takes a mode.
 * `ask`: the bytes the read that opens it asks for. */
AFS__NOINLINE static void cached_window(struct afs_stream *s, size_t ask)
{
#ifndef _WIN32
    s->plain_pread = afs__sys.pread == afs__sys_pread; /* a test's table is seen here */
#endif
    if (s->cw_end == -3 && s->cached_ok) {
        /* After a seek out of the buffers: the reader's pages are read on this thread now,
         * cached or not, as stdio reads them (lseek and one read), up to the end of the
         * chunk there at least; no clock, no probe. Random reads never time a window (it
         * closes only when read through in order), so the clocks of one (two, and the
         * thread's CPU time: a system call) and the probe would be all they paid for, more
         * than the read. A reader that goes on in order meets the next window at the chunk's
         * end, asked about, or not where the windows before the seeks were all cached. */
        if (!s->cw_seek)
            s->cw_keep = s->cached && s->cw_timed && !s->cw_miss;
        s->cw_seek = true;
        s->cached = true;
        s->cw_timed = false;
        /* In a task, a read that waits for the device would stop every task of the thread:
         * there the reads never wait, and one that would ends the window (inline_read()):
         * the next is asked about, and data not cached come as a chunk the task waits for. */
        s->cw_nowait = afs__sys.pread_nowait && !s->nowait_refused && !s->crash &&
                       in_task(s);
        s->cmode = CM_INLINE;
        int64_t cs = (int64_t)s->cs, coff = s->pos - (int64_t)((uint64_t)s->pos % s->cs);
        int64_t end = s->pos + (int64_t)AFS_MIN(ask, s->cs); /* its pages */
        end = (end + (int64_t)STREAM_ALIGN - 1) & ~((int64_t)STREAM_ALIGN - 1);
        s->cw_end = s->pos > INT64_MAX - 2 * cs ? INT64_MAX : AFS_MAX(end, coff + cs);
        return;
    }
    bool closes = s->cw_end >= 0 && s->cw_timed && s->cached && s->pos > s->cw_pos;
    bool first = s->cw_end == -2, second = s->cw_first;
    /* The clock only where a window is timed (not the first ones: see below). */
    int64_t now = closes || (!first && !second && !s->cw_lead) ? afs__sys.now() : 0, cpu = -1;
    if (closes) {
        uint64_t dt = now > s->cw_start ? (uint64_t)(now - s->cw_start) : 0;
        uint64_t per = AFS_MAX((dt << 20) / (uint64_t)(s->pos - s->cw_pos), 1);
        uint64_t *c = &s->cw_cost[s->cmode];
        *c = *c ? (*c + per) / 2 : per;
        s->cwins++;
        /* Thread CPU time under 80% of the wall time: other threads had this CPU. A
         * consumer that spends less than a third of its time outside the reads has nothing
         * to hide a pool thread's copy behind: it would wait for it and copy once more. */
        if (s->cmode == CM_INLINE) {
            if (s->cw_cpu >= 0)
                cpu = thread_cpu();
            s->cw_free = (cpu < 0 || 10 * (cpu - s->cw_cpu) >= 8 * (int64_t)dt) &&
                         3 * ((int64_t)dt - s->cw_read) >= (int64_t)dt;
        }
    }
    /* The stream's first window is one chunk: a program that reads only the start of a big
     * file has the cache asked about that much (the probe's cost grows with its range).
     * Before it, a first read of less than STREAM_CALLER_MIN, or one that (with the first
     * fill of a chunk) takes the whole rest of the file, asks nothing: its pages are read
     * on this thread now, cached or not, as stdio reads them (fill_more() reads just those
     * pages of a bigger file, all of a smaller one), and that window spans them. The second
     * window ends where the 16 chunks of a whole one would have (the windows after it fall
     * where they did: cold reads of a big file took another, slower mix of direct and
     * inline reads with windows one chunk later). None of these is timed: they pay for
     * first touches (the caller's buffer faulted in, the pool's threads started). */
    bool was_seek = s->cw_seek;
    s->cw_seek = false;
    bool lead = s->cw_end == -2 && s->cached_ok;
    if (lead) {
        size_t pages = (AFS_MIN(ask, s->cs) + STREAM_ALIGN - 1) & ~(STREAM_ALIGN - 1);
        int64_t rest = s->eof_off > s->pos ? s->eof_off - s->pos : 0;
        if (rest <= (int64_t)AFS_MAX(pages, s->grow))
            s->cw_lead = false, first = true; /* all of it: no window after this one */
        else if (ask < STREAM_CALLER_MIN)
            s->cw_lead = true, first = false; /* the first window comes next */
        else
            lead = false;
        if (lead) {
            s->cached = true;
            s->cw_timed = false;
            s->cw_first = first;
            s->cmode = CM_INLINE;
            s->cw_pos = s->pos;
            s->cw_cpu = -1;
            s->cw_read = 0;
            s->cw_skip = 0;
            int64_t span = (int64_t)AFS_MAX(pages, STREAM_ALIGN);
            s->cw_end = s->pos + (first ? AFS_MAX(span, rest) : span);
            return;
        }
    }
    first |= s->cw_lead;
    s->cw_lead = false;
    s->cw_timed = !first && !second;
    s->cw_first = first;
    int64_t win = (int64_t)AFS_MAX(STREAM_CACHED_WIN, 2 * s->depth) * (int64_t)s->cs;
    if (first)
        win = (int64_t)s->cs;
    else if (second && s->pos > s->cw_pos && s->pos - s->cw_pos < win)
        win -= s->pos - s->cw_pos;
    int64_t len = s->eof_off > s->pos ? AFS_MIN(win, s->eof_off - s->pos) : 0;
    uint64_t cached;
    bool dirty;
    /* The mode does not depend on what the probe says (a window not all cached is read
     * ahead whatever the mode). */
    s->cmode = cached_mode(s);
    /* After a window found all cached, an inline window is not asked about: its reads never
     * wait for the device, and the first that would ends it (inline_read()). The probe costs
     * 0.4 to 5 us per 16 MiB where the file is in big folios, 15 to 30 where it is in small
     * ones: about 0.6% of copying them (docs/STREAMS.md). */
    bool trust = (was_seek ? s->cw_keep : s->cached && s->cw_timed) && !s->cw_miss &&
                 s->cmode == CM_INLINE && afs__sys.pread_nowait && !s->nowait_refused &&
                 !s->crash;
    s->cw_miss = false;
    s->cw_nowait = false;
    if (!s->cached_ok) {
        s->cached = false;
    } else if (len > 0 && trust) {
        s->cw_nowait = true;
        s->cw_plain = STREAM_NOWAIT_SPAN; /* the first read is checked */
        s->cw_trusted++;
    } else if (len > 0 && cache_state(s->f, s->pos, len, &cached, &dirty)) {
        s->cached = cached >= (uint64_t)len;
        s->cw_seen[!s->cached]++;
        if (!s->cached && s->df_path)
            open_direct(s);
    } else if (len > 0) {
        s->cached = false; /* the kernel cannot tell */
        s->cw_seen[2]++;
    }
    s->cw_pos = s->pos;
    s->cw_start = now;
    /* The thread's CPU time (a system call) only where the window may choose the pool. */
    s->cw_cpu = s->cw_timed && s->cached && s->cmode == CM_INLINE && s->pool_max
                    ? (cpu >= 0 ? cpu : thread_cpu())
                    : -1;
    s->cw_read = 0;
    s->cw_skip = 0;
    s->cw_end = s->pos > INT64_MAX - win ? INT64_MAX : s->pos + win;
}

static void drop_chunk(struct chunk *c)
{
    if (c->state == CH_READY) {
        c->state = CH_FREE;
    } else if (c->state == CH_READING) {
        /* The callback still comes (-ECANCELED or the data); the buffer is the library's
         * until then. */
        c->state = CH_DROPPED;
        afs_cancel(&c->op);
    }
}

static void drop_reads(struct afs_stream *s)
{
    for (unsigned i = 0; i < s->nbuf; i++)
        drop_chunk(s->ch[i]);
    s->cur_off = -1;
}

/* Keeps chunks [cur, cur + ra] and queues the missing ones from cur + first chunks on,
 * without waiting for buffers; cached data in CM_INLINE mode is not read ahead, in CM_POOL
 * mode by at most pool_max reads at a time. Returns how many reads were queued. */
static int read_ahead_from(struct afs_stream *s, int64_t cur, unsigned first)
{
    int64_t cs = (int64_t)s->cs;
    int64_t last = cur + (int64_t)s->ra * cs;
    for (unsigned i = 0; i < s->nbuf; i++) {
        struct chunk *c = s->ch[i];
        if ((c->state == CH_READING || c->state == CH_READY) && (c->off < cur || c->off > last))
            drop_chunk(c);
    }
    if (s->cached && s->cmode == CM_INLINE)
        return 0;
    unsigned busy = 0;
    if (s->cached)
        for (unsigned i = 0; i < s->nbuf; i++)
            busy += s->ch[i]->state == CH_READING;
    int n = 0;
    for (unsigned k = first; k <= s->ra; k++) {
        if (s->cached && busy >= s->pool_max)
            break;
        if (cur > INT64_MAX - (int64_t)(k + 1) * cs)
            break;
        int64_t off = cur + (int64_t)k * cs;
        if (off >= s->eof_off)
            break;
        if (find_chunk(s, off))
            continue;
        int err;
        struct chunk *c = chunk_get(s, false, &err);
        if (!c || queue_read(s, c, off) < 0)
            break; /* errors, if they persist, reach the reader when it gets there */
        n++;
        busy++;
    }
    return n;
}

static int read_ahead(struct afs_stream *s, int64_t cur)
{
    return read_ahead_from(s, cur, 1);
}

static int flush_writes(struct afs_stream *s);

/* Switches a stream last used for writing (or not yet used) to reading. */
AFS__NOINLINE static int to_read(struct afs_stream *s)
{
    if (s->dir == DIR_WRITE) {
        int err = flush_writes(s);
        if (err < 0)
            return err;
        /* The writes moved the end: read-ahead stops at the new one. */
        int64_t size = s->pipe ? INT64_MAX : afs_file_size(s->f);
        if (size < 0)
            return (int)size;
        s->eof_off = size;
        if (!s->pipe)
            s->seek_ok = AFS_MAX(s->seek_ok, size);
        if (s->pos_at_end)
            s->pos = size;
        s->pos_at_end = false;
    }
    s->dir = DIR_READ;
    s->cur_off = -1;
    if (s->cw_end != -2) {
        /* The file may have changed: ask the cache again (a stream's first window stays the
         * untimed one, and a seek's window comes first where a seek asked for it). */
        if (s->cw_end != -3)
            s->cw_end = -1;
        s->cw_miss = true;
    }
    return 0;
}

/* Reading a file without offsets. The data arrive once, in order, and what a read took
 * from the pipe is the stream's to hand out: one read at a time, into a chunk, completing
 * with whatever the pipe holds (AFS__OP_PARTIAL), so that a reader of a few bytes is not
 * kept waiting for a whole chunk; the request is filled by as many reads as it takes, or
 * until the end of the stream. No read-ahead: a read in flight on a pipe that nobody writes
 * could not be taken back at close on every backend (a pool thread blocked in read()).
 * A chunk that got data is never dropped, even when waiting for it failed. */
AFS__NOINLINE static size_t fread_pipe(struct afs_stream *s, char *out, size_t want)
{
    size_t got = 0;
    while (got < want) {
        struct chunk *c = s->pipe_cur;
        if (!c) {
            int err;
            c = chunk_get(s, true, &err);
            if (!c) {
                set_err(s, err ? err : -ENOBUFS);
                break;
            }
            c->off = s->pos;
            c->len = 0;
            c->result = 0;
            c->seq = ++s->seq;
            c->state = CH_READING;
            err = afs__queue_seq(&c->op, s->f, false, c->buf, s->cs, true, chunk_cb, c);
            if (err < 0) {
                c->state = CH_FREE;
                set_err(s, err);
                break;
            }
            c->wait.pending = true;
            s->pipe_cur = c;
            afs_ctx_submit(s->ctx);
        }
        int err = chunk_wait(s, c);
        if (err < 0) {
            set_err(s, err); /* c stays pipe_cur: its data, if any, come next time */
            if (err != -EDEADLK && c->state == CH_READY && c->result < 0) {
                c->state = CH_FREE; /* none: after afs_clearerr a new read */
                s->pipe_cur = NULL;
            }
            break;
        }
        if (c->result <= 0) {
            if (c->result < 0)
                set_err(s, (int)c->result); /* after afs_clearerr the read is tried again */
            else
                s->eof = true;
            c->state = CH_FREE;
            s->pipe_cur = NULL;
            break;
        }
        size_t in = (size_t)(s->pos - c->off);
        size_t n = AFS_MIN(c->len - in, want - got);
        memcpy(out + got, c->buf + in, n);
        got += n;
        s->pos += (int64_t)n;
        if (in + n == c->len) {
            c->state = CH_FREE;
            s->pipe_cur = NULL;
        }
    }
    if (s->pipe_cur && got == want && !s->err) {
        s->read_c = s->pipe_cur; /* what it holds past pos: see afs_fread() */
        s->read_end = s->pipe_cur->off + (int64_t)s->pipe_cur->len;
    }
    return got;
}

AFS__HOT_PATH size_t afs_fread(void *ptr, size_t size, size_t nmemb, struct afs_stream *s)
{
    stream_check(s, __func__);
    if (size == 0 || nmemb == 0)
        return 0;
    /* The division only where the product may overflow (a cached read costs some 100
     * instructions besides its system call: this one is 20 to 90 cycles). */
    if (((size | nmemb) >> (sizeof(size_t) * 4) && nmemb > SIZE_MAX / size) || !ptr) {
        set_err(s, -EINVAL);
        return 0;
    }
    const size_t want = size * nmemb;
    int64_t room = s->read_end - s->pos;
    if (room > 0 && (uint64_t)room > want) {
        memcpy(ptr, s->read_c->buf + (s->pos - s->read_c->off), want);
        s->pos += (int64_t)want;
        return nmemb;
    }
    s->read_end = 0;
    if (s->err || s->eof)
        return 0;
    if (!s->can_read) {
        set_err(s, -EBADF);
        return 0;
    }
    if (s->dir != DIR_READ) {
        int err = to_read(s);
        if (err < 0) {
            set_err(s, err);
            return 0;
        }
    }
    if (s->pipe)
        return fread_pipe(s, ptr, want) / size;
    s->end_seen = -1;
    const size_t cs = s->cs;
    char *out = ptr;
    struct chunk *last = NULL; /* the chunk the request ended in, if it holds more */
    size_t got = 0;
    bool reread = false; /* the end of a chunk read before this call was read again */
    while (got < want) {
        last = NULL;
        if (s->pos >= s->cw_end)
            cached_window(s, want - got);
        /* A big request takes what a chunk holds at pos, and the rest straight; so does one
         * for the whole rest of the file while no chunk holds data (a small file read
         * whole: one read, one copy, and no chunk made). */
        bool whole_rest = s->no_chunks && s->eof_off - s->pos <= (int64_t)(want - got);
        /* So does the read after a seek that asks for a page or more, as stdio reads a
         * request of its buffer's size or more (the reads after it in order fill a chunk). */
        bool seek_read = s->cw_seek && s->fill_first && want - got >= STREAM_ALIGN;
        bool to_caller = s->cached && (want >= STREAM_CALLER_MIN || whole_rest || seek_read);
        bool straight = to_caller && s->no_chunks; /* no chunk to look for (nor its offset) */
        int64_t coff = straight ? -1 : s->pos - (int64_t)((uint64_t)s->pos % cs);
        struct chunk *c = straight ? NULL : find_chunk(s, coff);
        if (c && to_caller && c->state == CH_READY && c->part &&
            s->pos - c->off >= (int64_t)c->len) {
            /* A cached chunk filled as far as the reader went, and a big request: the rest
             * goes straight into the caller's buffer too (as stdio reads past its drained
             * buffer), not through the chunk. */
            c->state = CH_FREE;
            c = NULL;
        }
        if (c && !s->cached && c->state == CH_READY && c->part &&
            s->pos - c->off >= (int64_t)c->len) {
            /* A chunk filled on this thread as far as the reader went (the first read's
             * pages, or the end of a cached window), and the window after them is not all
             * cached: the rest is read as any chunk is (ahead of the reader, direct where
             * that pays), not on this thread. */
            c->state = CH_FREE;
            c = NULL;
        }
        if (!c && to_caller) {
            if (!s->no_chunks)
                s->no_chunks = chunks_idle(s);
            /* Cached, and a big request: straight into the caller's buffer, one copy, as
             * stdio does; in CM_POOL mode the chunks after it are read meanwhile. */
            ssize_t r = inline_read(s, out + got, want - got, s->pos);
            if (r == -EAGAIN && s->cw_miss)
                continue; /* not cached: the next window is asked about */
            if (r <= 0) {
                if (r < 0)
                    set_err(s, (int)r);
                else
                    s->eof = true;
                break;
            }
            got += (size_t)r;
            s->pos += (int64_t)r;
            s->cur_off = -1;
            s->fill_first &= !seek_read;
            if (got < want || s->cmode != CM_POOL)
                continue;
            coff = s->pos - (int64_t)((uint64_t)s->pos % cs);
            if (read_ahead_from(s, coff, 0))
                afs_ctx_submit(s->ctx);
            continue;
        }
        if (coff != s->cur_off || !c) {
            /* Entering a chunk: crossing into the next one in order widens the window. */
            if (s->cur_off >= 0 && coff == s->cur_off + (int64_t)cs) {
                s->ra = s->ra ? AFS_MIN(2 * s->ra, s->depth) : 1;
                note_arrival(s);
            } else {
                s->win_n = 0; /* random access: the window starts again */
            }
            s->cur_off = coff;
            int queued = 0, err;
            if (!c) {
                c = chunk_get(s, true, &err);
                if (c && s->cached) {
                    /* Cached: the consumer needs it now, nothing to overlap. */
                    c->off = coff;
                    c->seq = ++s->seq;
                    c->direct = c->pool = false;
                    c->result = 0;
                    /* From the reader's page: a reader that seeked into the middle of the
                     * chunk reads what stdio reads there, not the chunk's start. */
                    c->len = c->lo = (size_t)(s->pos - coff) & ~(STREAM_ALIGN - 1);
                    c->part = true; /* filled below, as far as the reader needs */
                    c->state = CH_READY;
                    s->no_chunks = false;
                } else if (!c || (err = queue_read(s, c, coff)) < 0) {
                    set_err(s, err ? err : -ENOBUFS);
                    break;
                } else {
                    queued = 1;
                }
            }
            queued += read_ahead(s, coff);
            if (queued)
                afs_ctx_submit(s->ctx); /* start now, while the caller computes */
        }
        if (c->state == CH_READING) {
            int64_t t0 = s->df ? afs__sys.now() : 0;
            int err = chunk_wait(s, c);
            if (s->df)
                s->win_wait += afs__sys.now() - t0;
            if (err < 0) {
                set_err(s, err);
                if (c->state == CH_READY)
                    c->state = CH_FREE;
                break;
            }
            /* A pool thread was copying it: it takes the next one now. */
            if (c->pool && s->cached && s->cmode == CM_POOL && read_ahead(s, coff))
                afs_ctx_submit(s->ctx);
        }
        if (c->result == -EINVAL && c->direct) {
            /* The file system refused the direct read: this chunk and the next ones are
             * read buffered. */
            s->df_refused = true;
            c->state = CH_FREE;
            continue;
        }
        if (c->result < 0) {
            set_err(s, (int)c->result);
            c->state = CH_FREE; /* after afs_clearerr the read is tried again */
            break;
        }
        size_t in = (size_t)(s->pos - c->off);
        if (in < c->lo || (s->cw_seek && c->part && in > c->len)) {
            /* Before what a cached chunk holds (a seek back inside it), or past it after a
             * seek: filled again from the reader's page, not across the gap. */
            c->len = c->lo = in & ~(STREAM_ALIGN - 1);
            c->part = true;
        }
        if (c->part && in >= c->len) {
            int err = fill_more(s, c, in, want - got);
            if (err == -EAGAIN && s->cw_miss)
                continue; /* as above; the chunk, not filled, is dropped if not cached */
            if (err < 0) {
                set_err(s, err); /* the chunk stays: after afs_clearerr it is read again */
                break;
            }
            if (c->part && in >= c->len)
                continue; /* a fill cut short by a miss before the reader (after a seek
                             inside the chunk): the next window is asked about, as above */
        }
        if (c->part)
            ; /* more of the chunk to come: says nothing of the end */
        else if (c->len < cs)
            s->eof_off = AFS_MIN(s->eof_off, c->off + (int64_t)c->len);
        else if (c->off + (int64_t)cs > s->eof_off)
            s->eof_off = INT64_MAX; /* the file grew past the hint */
        if (in >= c->len) {
            /* A short chunk whose end no read of this call found (read by an earlier call,
             * or ahead) is no end yet: the file may have grown since. The chunk is read on
             * from there once (read_on()), as stdio reads again at the end of its buffer. */
            if (!reread && c->off + (int64_t)c->len != s->end_seen) {
                reread = true;
                ssize_t r = read_on(s, c);
                if (r < 0) {
                    set_err(s, (int)r);
                    break;
                }
                if (r > 0) {
                    c->len += (size_t)r;
                    /* The file grew after the chunks past c were read ahead: they may
                     * hold the old end (short or empty). Read them again. */
                    for (unsigned i = 0; i < s->nbuf; i++) {
                        struct chunk *d = s->ch[i];
                        if (d->off > c->off && (d->state == CH_READING ||
                                                (d->state == CH_READY && d->len < cs)))
                            drop_chunk(d);
                    }
                    continue;
                }
            }
            /* End of file. Drop the short chunk, and the read-ahead past it (short or
             * empty reads too), so that a read after afs_clearerr sees what was appended
             * meanwhile. */
            s->eof = true;
            drop_reads(s);
            break;
        }
        size_t n = AFS_MIN(c->len - in, want - got);
        memcpy(out + got, c->buf + in, n);
        got += n;
        s->pos += (int64_t)n;
        if (in + n == cs)
            c->state = CH_FREE; /* consumed: the buffer goes to the read-ahead */
        else
            last = c;
    }
    if (last && got == want && !s->err && !s->eof && s->cw_end > s->pos) {
        s->read_c = last;
        s->read_end = AFS_MIN(last->off + (int64_t)last->len, s->cw_end);
    }
    return got / size;
}

/* ------------------------------------------------------------------------------------------
 * Writing
 * ---------------------------------------------------------------------------------------- */

static bool overlap(const struct chunk *a, const struct chunk *b)
{
    return a->off < b->off + (int64_t)b->len && b->off < a->off + (int64_t)a->len;
}

/* A pipe (FIFO, tty) written outside a corio task is written on the caller's thread, as
 * stdio writes it: blocking writes, big requests straight from the caller's buffer. The
 * pipe's own buffer lets the writer run ahead of its reader; an op per chunk paid a round
 * trip through the backend for each (on io_uring a short write per pipe's worth of room,
 * each resubmitted). The writes are of STREAM_PIPE_PIECE bytes at most: the kernel wakes a
 * reader waiting on an empty pipe when a write ends, so that the reader copies one piece
 * out while the writer copies the next in (bench/README.md: a 64 KiB write to an empty
 * pipe is read only when it has all gone in). Not on Windows (a pipe's writes stay ops
 * there), not for sockets (their sends are ops), never in a task: its thread runs the
 * other tasks. */
static bool pipe_inline(const struct afs_stream *s)
{
#ifdef _WIN32
    (void)s;
    return false;
#else
    return s->pipe && !s->f->sock && !in_task(s);
#endif
}

/* Writes len bytes to the pipe on this thread, in pieces, after the writes still in flight
 * as ops (a descriptor left non-blocking sends some that way). Returns the bytes written:
 * all of them, or fewer with *err set (-EAGAIN where the descriptor is non-blocking and the
 * pipe is full: the rest goes as an op, which waits for room; -EPIPE, never a SIGPIPE;
 * other errors). */
static size_t pipe_put(struct afs_stream *s, const char *buf, size_t len, int *err)
{
    size_t done = 0;
    *err = 0;
    for (unsigned i = 0; i < s->nbuf; i++) {
        if (s->ch[i]->state != CH_WRITING)
            continue;
        int e = chunk_wait(s, s->ch[i]); /* as write_fill() waits */
        if (e < 0)
            set_err(s, e);
        if (e == -EDEADLK) {
            *err = e;
            return 0;
        }
    }
    while (done < len) {
        size_t n = AFS_MIN(len - done, STREAM_PIPE_PIECE);
        ssize_t r = afs__sys.pwrite(s->f->fd, buf + done, n, AFS__OFF_SEQ);
        if (r == -EINTR)
            continue;
        if (r <= 0) {
            *err = r < 0 ? (int)r : -EIO;
            break;
        }
        done += (size_t)r;
    }
    return done;
}

/* An error of a write made on the caller's thread: reported as a write-behind one is. */
static void pipe_err(struct afs_stream *s, int err)
{
    set_err(s, err);
    if (!s->werr)
        s->werr = err;
}

/* A fill buffer's data dropped after a write error (data buffered after the failure,
 * which stdio's failing fwrite would not have taken): the data stops at its start at the
 * latest, wherever the failed write was (before a seek, it may lie past it). */
static void fill_lost(struct afs_stream *s, struct chunk *c)
{
    if (c->len && !s->pipe && !s->append && c->off < s->werr_off)
        s->werr_off = c->off;
    c->state = CH_FREE;
}

/* Forgets what the fill buffer holds, after a write error. */
static void drop_fill(struct afs_stream *s)
{
    if (s->fill) {
        fill_lost(s, s->fill);
        s->fill = NULL;
    }
    s->wr_room = 0;
}

/* Queues the fill buffer's data. Ops on one file run in any order, so a write waits for the
 * writes in flight that it overlaps (all of them in append mode, where every write lands at
 * the end). Once a write of the stream is known to have failed (before, or in, those
 * waits) the data is dropped instead: it would land past the failure's hole. Returns 0 then
 * (the error is the stream's: afs_ferror, afs_fflush, afs_fclose). */
static int write_fill(struct afs_stream *s)
{
    struct chunk *c = s->fill;
    s->wr_room = 0;
    if (!c)
        return 0;
    if (c->len == 0 || writes_failed(s)) {
        drop_fill(s);
        return 0;
    }
    s->fill = NULL;
    for (unsigned i = 0; i < s->nbuf; i++) {
        struct chunk *d = s->ch[i];
        if (d->state == CH_WRITING && (s->append || s->pipe || overlap(c, d))) {
            int err = chunk_wait(s, d);
            if (err < 0) {
                set_err(s, err);
                if (err == -EDEADLK) {
                    c->state = CH_FREE;
                    return err;
                }
            }
        }
    }
    if (s->werr) {
        fill_lost(s, c); /* a write waited for above failed */
        return 0;
    }
    if (pipe_inline(s)) {
        int err;
        size_t n = pipe_put(s, c->buf, c->len, &err);
        if (err != -EAGAIN) {
            c->state = CH_FREE;
            if (err < 0)
                pipe_err(s, err);
            return err;
        }
        memmove(c->buf, c->buf + n, c->len - n); /* the rest as an op, which waits for room */
        c->len -= n;
    }
    c->seq = ++s->seq;
    c->result = 0;
    c->state = CH_WRITING;
    int err = s->pipe ? afs__queue_seq(&c->op, s->f, true, c->buf, c->len, false, chunk_cb,
                                       c)
                     : afs_queue_write(&c->op, s->f, c->buf, c->len, (uint64_t)c->off,
                                       chunk_cb, c);
    if (err < 0) {
        c->state = CH_FREE;
        set_err(s, err);
        if (!s->werr)
            s->werr = err;
        return err;
    }
    c->wait.pending = true;
    afs_ctx_submit(s->ctx);
    return 0;
}

/* Waits for every write in flight (their callbacks ran after). Returns 0 or the first
 * waiter error (-EDEADLK from a callback: then it stops, nothing could be waited for). */
static int wait_writes(struct afs_stream *s)
{
    int ret = 0;
    for (unsigned i = 0; i < s->nbuf; i++) {
        if (s->ch[i]->state == CH_WRITING) {
            int err = chunk_wait(s, s->ch[i]);
            if (err < 0) {
                set_err(s, err);
                if (!ret)
                    ret = err;
                if (err == -EDEADLK)
                    break;
            }
        }
    }
    return ret;
}

/* After a write-behind failed: the writes still in flight settle (werr_off is then where
 * the data stopped), and what was buffered since (which stdio would not have taken, its
 * fwrite failing) is dropped, not written after the failure's hole. Nothing to do without
 * a write error, or from a callback (nothing can be waited for there). Waiting, it is
 * one of the calls a chain open on the context forbids. */
static void settle_failed_writes(struct afs_stream *s, const char *call)
{
    if (s->dir != DIR_WRITE || !writes_failed(s) || s->ctx->in_callback)
        return;
    chain_check(s, call);
    drop_fill(s);
    (void)wait_writes(s);
}

/* Waits for every write, then queues the fill buffer and waits for it, unless one of the
 * writes waited for failed: what was buffered after a failure is dropped (the failure may
 * be seen only here, its write still in flight when the data was buffered). The fill goes
 * after the others, not beside them: a flush waits for all of them anyway. Returns the
 * first write error. */
static int flush_writes(struct afs_stream *s)
{
    int ret = 0;
    if (s->fill && s->fill->len)
        ret = wait_writes(s);
    if (ret != -EDEADLK) {
        int err = write_fill(s); /* drops the data after a failure */
        int werr = wait_writes(s);
        if (!ret)
            ret = err ? err : werr;
    }
    return s->werr ? s->werr : ret;
}

size_t afs_fwrite(const void *ptr, size_t size, size_t nmemb, struct afs_stream *s)
{
    stream_check(s, __func__);
    s->read_end = 0;
    if (size == 0 || nmemb == 0)
        return 0;
    if (((size | nmemb) >> (sizeof(size_t) * 4) && nmemb > SIZE_MAX / size) || !ptr) {
        set_err(s, -EINVAL);
        return 0;
    }
    size_t want = size * nmemb;
    if (want < s->wr_room && !s->err) {
        struct chunk *c = s->fill;
        memcpy(c->buf + c->len, ptr, want);
        c->len += want;
        s->wr_room -= want;
        if (!s->pipe)
            s->pos += (int64_t)want;
        return nmemb;
    }
    s->wr_room = 0;
    chain_check(s, __func__);
    if (s->err || (s->dir == DIR_WRITE && writes_failed(s)))
        return 0; /* a write that failed and was not seen yet counts too: nothing more */
    if (!s->can_write) {
        set_err(s, -EBADF);
        return 0;
    }
    if (s->dir != DIR_WRITE) {
        /* Read-ahead no longer applies: it would miss what is written now. On a pipe or
         * socket the two directions are apart, and what was read stays to be consumed. */
        if (!s->pipe)
            drop_reads(s);
        s->dir = DIR_WRITE;
    }
    /* A file's offsets end at INT64_MAX: what would go past it is not taken. */
    bool too_big = !s->pipe && (uint64_t)(INT64_MAX - s->pos) < want;
    if (too_big)
        want = (size_t)(INT64_MAX - s->pos);
    const char *in = ptr;
    size_t done = 0;
    bool inline_pipe = s->pipe && pipe_inline(s);
    const size_t piece = inline_pipe ? AFS_MIN(s->cs, STREAM_PIPE_PIECE) : s->cs;
    size_t cap = 0;
    while (done < want) {
        struct chunk *c = s->fill;
        if (inline_pipe && (!c || c->len == 0) && want - done >= piece) {
            /* Nothing buffered, and a piece or more: straight from the caller's buffer. */
            int err;
            done += pipe_put(s, in + done, want - done, &err);
            if (err == -EAGAIN)
                inline_pipe = false; /* buffered: the chunk's op waits for room */
            else if (err < 0)
                pipe_err(s, err);
            if (s->err || done == want)
                break;
            continue;
        }
        if (!c) {
            int err;
            c = chunk_get(s, true, &err);
            if (!c) {
                set_err(s, err ? err : -ENOBUFS);
                break;
            }
            if (s->err)
                break; /* a write waited for failed: take no more (c stays free) */
            c->state = CH_FILL;
            c->off = s->pos;
            c->len = 0;
            s->fill = c;
        }
        /* Chunks end on chunk boundaries, so full ones are aligned writes. */
        cap = s->append || s->pipe ? piece : s->cs - (size_t)((uint64_t)c->off % s->cs);
        size_t n = AFS_MIN(cap - c->len, want - done);
        memcpy(c->buf + c->len, in + done, n);
        c->len += n;
        done += n;
        if (!s->pipe)
            s->pos += (int64_t)n; /* a pipe's pos counts what was read (fread_pipe()) */
        if (c->len == cap)
            write_fill(s); /* not written if a write is known to have failed */
        if (s->err)
            break; /* a write failed (maybe an earlier one): stop taking data */
    }
    if (s->append && done && !s->pipe)
        s->pos_at_end = true; /* wherever pos was, the data goes to the end */
    if (too_big)
        set_err(s, -EFBIG);
    if (s->fill && !s->err)
        s->wr_room = cap - s->fill->len;
    return done / size;
}

/* ------------------------------------------------------------------------------------------
 * Position, flush, errors
 * ---------------------------------------------------------------------------------------- */

int afs_fflush(struct afs_stream *s)
{
    stream_check(s, __func__);
    chain_check(s, __func__);
    s->read_end = 0;
    if (s->dir == DIR_WRITE)
        return flush_writes(s);
    if (s->dir == DIR_READ && !s->pipe) {
        /* As glibc on a seekable file: drop what was read but not consumed. */
        drop_reads(s);
        s->dir = DIR_NONE;
    }
    return s->werr;
}

/* Whether the file takes pos as a position: stdio's fseeko asks lseek, which refuses what
 * lies past the file system's largest offset (-EINVAL; ext4: 16 TiB - 4 KiB), and every
 * read or write there would fail. Positions up to the largest one known to be good (the
 * size the stream saw, positions lseek took before) are taken without asking; past it,
 * lseek on the stream's descriptor answers. It is asked about twice the position first, so
 * that a writer that seeks past the end again and again (a sparse file) asks a few times in
 * all, not once a seek; only where that is refused is the position itself asked about. The
 * library moves a file's data at offsets, never at the descriptor's position, so moving it
 * changes nothing (as fseeko moves it too). Windows takes any position that is not
 * negative: nothing to ask. */
static int seek_allowed(struct afs_stream *s, int64_t pos)
{
    if (pos <= s->seek_ok)
        return 0;
#ifndef _WIN32
    if ((int64_t)(off_t)pos != pos)
        return -EOVERFLOW; /* a 32-bit off_t: fseeko's answer too */
    int64_t ahead = pos <= INT64_MAX / 2 ? 2 * pos : pos;
    if ((int64_t)(off_t)ahead == ahead && lseek(s->f->fd, (off_t)ahead, SEEK_SET) >= 0) {
        s->seek_ok = ahead;
        return 0;
    }
    if (lseek(s->f->fd, (off_t)pos, SEEK_SET) < 0)
        return -errno;
#endif
    s->seek_ok = pos;
    return 0;
}

int afs_fseek(struct afs_stream *s, int64_t off, int whence)
{
    stream_check(s, __func__);
    chain_check(s, __func__);
    s->read_end = 0;
    if (s->pipe)
        return -ESPIPE;
    settle_failed_writes(s, __func__);
    int64_t base;
    switch (whence) {
    case SEEK_SET: base = 0; break;
    case SEEK_CUR:
    case SEEK_END: {
        bool end = whence == SEEK_END || s->pos_at_end;
        int64_t size = 0;
        if (end && s->dir == DIR_WRITE) {
            /* The end moves with the writes in flight. */
            int err = flush_writes(s);
            if (err < 0)
                return err;
        }
        if (end && (size = afs_file_size(s->f)) < 0)
            return (int)size;
        s->seek_ok = AFS_MAX(s->seek_ok, size); /* the file holds that much */
        if (s->pos_at_end) {
            s->pos = size;
            s->pos_at_end = false;
        }
        base = whence == SEEK_END ? size : AFS_MIN(s->pos, s->werr_off); /* as afs_ftell */
        break;
    }
    default: return -EINVAL;
    }
    if ((off > 0 && base > INT64_MAX - off) || base + off < 0)
        return -EINVAL;
    int64_t pos = base + off;
    int err = seek_allowed(s, pos);
    if (err < 0)
        return err; /* nothing changed, as after the checks above */
    bool out = false;
    if (s->dir == DIR_WRITE) {
        err = s->werr ? 0 : write_fill(s); /* after a failure: settled above */
        if (err < 0)
            return err;
    } else if (s->dir == DIR_READ) {
        int64_t coff = pos - (int64_t)((uint64_t)pos % s->cs);
        if (!find_chunk(s, coff)) {
            /* Out of the window: random access, no read-ahead until it is sequential, and
             * small fills of cached chunks again. */
            drop_reads(s);
            s->ra = 0;
            s->grow = AFS_MIN(STREAM_FILL_MIN, s->cs);
            s->fill_first = true;
            out = true;
        } else if (s->cw_seek || s->cw_lead) {
            /* Into a chunk that a random read (or the first read) filled in part: read as
             * after any seek. */
            s->grow = AFS_MIN(STREAM_FILL_MIN, s->cs);
            s->fill_first = true;
        }
    } else if (s->cw_end == -2 && pos != s->pos) {
        /* Before the first read: a fresh stream is taken as reading in order from where it
         * stands (read-ahead of depth chunks, the first window's rules); a seek elsewhere is
         * random access as any other, or a cold 64 KiB read there took 5 chunks. */
        s->ra = 0;
        out = true;
    }
    s->pos = pos;
    s->pos_at_end = false;
    s->eof = false;
    s->werr_off = INT64_MAX; /* the caller chose where to go on */
    /* Not in order: no window to time. Out of the buffers, or from a seek's window (or the
     * first read's), the next read opens a seek's window (cached_window()). */
    if (out)
        s->cw_end = -3;
    else if (s->cw_end != -2)
        s->cw_end = s->cw_seek || s->cw_lead ? -3 : -1;
    return 0;
}

int64_t afs_ftell(struct afs_stream *s)
{
    stream_check(s, __func__);
    chain_check(s, __func__);
    if (s->pipe)
        return -ESPIPE;
    settle_failed_writes(s, __func__);
    if (s->werr_off < s->pos)
        return s->werr_off; /* as stdio's: the data went up to where a write failed */
    if (s->pos_at_end) {
        /* The writes settle; after a write error the data stopped at the end of what the
         * file took: its size, as for any write error ("a" and "a+" included). */
        int err = flush_writes(s);
        if (err < 0 && (err != s->werr || s->ctx->in_callback))
            return err;
        int64_t size = afs_file_size(s->f);
        if (size < 0)
            return size;
        s->pos = size;
        s->pos_at_end = false;
    }
    return s->pos;
}

int afs_feof(const struct afs_stream *s)
{
    stream_check(s, __func__);
    return s->eof;
}

int afs_ferror(const struct afs_stream *s)
{
    stream_check(s, __func__);
    return s->err;
}

void afs_clearerr(struct afs_stream *s)
{
    stream_check(s, __func__);
    settle_failed_writes(s, __func__);
    if (s->werr_off < s->pos)
        s->pos = s->werr_off; /* goes on where the data stopped, as stdio's */
    s->werr_off = INT64_MAX;
    s->read_end = 0;
    s->err = 0;
    s->werr = 0;
    s->eof = false;
    s->eof_off = INT64_MAX;
}

struct afs_file *afs_stream_file(struct afs_stream *s)
{
    stream_check(s, __func__);
    return s->f;
}

/* ------------------------------------------------------------------------------------------
 * Open and close
 * ---------------------------------------------------------------------------------------- */

/* "r", "w", "a", with "+" (read and write), "b" (ignored) and "x" (with "w": O_EXCL). */
static int parse_mode(const char *m, int *flags, bool *rd, bool *wr, bool *app)
{
    int acc;
    switch (m[0]) {
    case 'r': acc = AFS_RDONLY, *flags = 0; break;
    case 'w': acc = AFS_WRONLY, *flags = AFS_CREAT | AFS_TRUNC; break;
    case 'a': acc = AFS_WRONLY, *flags = AFS_CREAT | AFS_APPEND; break;
    default: return -EINVAL;
    }
    bool plus = false, b = false, x = false;
    for (const char *p = m + 1; *p; p++) {
        if (*p == '+' && !plus)
            plus = true;
        else if (*p == 'b' && !b)
            b = true;
        else if (*p == 'x' && !x && m[0] == 'w')
            x = true;
        else if (*p != 'e' && *p != 'm') /* glibc's: close-on-exec (always), mmap (a hint) */
            return -EINVAL;
    }
    if (plus)
        acc = AFS_RDWR;
    *flags |= acc | (x ? AFS_EXCL : 0);
    *rd = acc != AFS_WRONLY;
    *wr = acc != AFS_RDONLY;
    *app = m[0] == 'a';
    return 0;
}

/* Whether a second, O_DIRECT file may pay for a read-only stream (docs/STREAMS.md): a file
 * of at least STREAM_DIRECT_MIN chunks (and at least the size of its buffers), on a backend
 * that reads ahead (not sync). Smaller files are left to the page cache, which serves them
 * again when they are read again. */
static bool direct_may_pay(const struct afs_stream *s, int64_t size)
{
    int64_t min = (int64_t)(s->nmax > STREAM_DIRECT_MIN ? s->nmax : STREAM_DIRECT_MIN);
    return s->ctx->be->id != AFS_BACKEND_SYNC && size >= min * (int64_t)s->cs;
}

/* Forgets the path kept for open_direct(), freeing it where it did not fit in df_name. */
static void df_path_drop(struct afs_stream *s)
{
    if (s->df_path != s->df_name)
        free(s->df_path);
    s->df_path = NULL;
}

/* Opens the O_DIRECT file of s (s->df) once a window was found not all cached, where
 * O_DIRECT is allowed with the stream's chunks and buffers; then or on failure the path is
 * forgotten (one try per stream). */
static void open_direct(struct afs_stream *s)
{
    struct afs_file *df;
    int err = afs_open(s->ctx, s->df_path, AFS_RDONLY | AFS_DIRECT, 0, AFS_MODE_SYNC, &df);
    df_path_drop(s);
    if (err < 0)
        return; /* e.g. -EINVAL: no O_DIRECT here */
    /* The path may name another file by now; the buffers are 4096-byte aligned. */
    if (!afs__sys_same_file(s->f->fd, df->fd) || df->dio_align > 4096 ||
        (df->dio_align && s->cs % df->dio_align)) {
        afs_close(df);
        return;
    }
    s->df = df;
}

/* Chunk buffers come from the context's spares (those of streams closed before, already
 * faulted in) when they have the stream's size, else from afs_buf_alloc; at close they go
 * back to the spares, up to AFS__SPARE_MAX buffers and STREAM_SPARE_BYTES. A program that
 * reads file after file so maps, faults in and unmaps no memory per stream. */
static char *buf_get(struct afs_stream *s)
{
    struct afs_ctx *ctx = s->ctx;
    if (ctx->spare_n && ctx->spare_size == s->cs)
        return ctx->spare[--ctx->spare_n];
    return afs_buf_alloc(ctx, s->cs);
}

static void buf_put(struct afs_stream *s, char *buf)
{
    struct afs_ctx *ctx = s->ctx;
    if (ctx->spare_n && ctx->spare_size != s->cs)
        afs__stream_spare_free(ctx); /* the newest size is the one kept */
    if (ctx->spare_n < AFS__SPARE_MAX && (ctx->spare_n + 1) * s->cs <= STREAM_SPARE_BYTES) {
        ctx->spare_size = s->cs;
        ctx->spare[ctx->spare_n++] = buf;
    } else {
        afs_buf_free(ctx, buf, s->cs);
    }
}

void afs__stream_spare_free(struct afs_ctx *ctx)
{
    while (ctx->spare_n)
        afs_buf_free(ctx, ctx->spare[--ctx->spare_n], ctx->spare_size);
}

static void stream_free(struct afs_stream *s)
{
    df_path_drop(s);
    for (unsigned i = s->nbuf; i-- > 0;) { /* the first buffer is taken first next time */
        buf_put(s, s->ch[i]->buf);
        if (s->ch[i] != &s->ch0)
            free(s->ch[i]);
    }
    free(s);
}

int afs_fopen_opts(struct afs_ctx *ctx, const char *path, const char *mode,
                   const struct afs_stream_options *opts, struct afs_stream **out)
{
    afs__ctx_check(ctx, __func__);
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!path || !mode)
        return -EINVAL;
    struct afs_stream_options o;
    afs_stream_options_default(&o);
    if (opts) {
        if ((opts->flags & ~(unsigned)(AFS_STREAM_DIRECT | AFS_STREAM_BUFFERED)) ||
            ((opts->flags & AFS_STREAM_DIRECT) && (opts->flags & AFS_STREAM_BUFFERED)))
            return -EINVAL;
        if (opts->chunks > STREAM_DEPTH_MAX || opts->chunk_size > AFS__CHUNK_MAX ||
            opts->perm > 07777)
            return -EINVAL;
        o.chunk_size = opts->chunk_size ? opts->chunk_size : o.chunk_size;
        o.chunks = opts->chunks ? opts->chunks : o.chunks;
        o.perm = opts->perm ? opts->perm : o.perm;
        o.flags = opts->flags;
    }
    o.chunk_size = (o.chunk_size + STREAM_ALIGN - 1) & ~(STREAM_ALIGN - 1);
    int flags;
    bool rd, wr, app;
    if (parse_mode(mode, &flags, &rd, &wr, &app) < 0)
        return -EINVAL;
    if ((o.flags & AFS_STREAM_DIRECT) && wr)
        return -EINVAL; /* direct streams read only: a partial last write is not aligned */
    if (o.flags & AFS_STREAM_DIRECT)
        flags |= AFS_DIRECT;

    unsigned nmax = o.chunks + 1;
    struct afs_stream *s = afs__zalloc(sizeof(struct afs_stream) + nmax * sizeof(struct chunk *));
    if (!s)
        return -ENOMEM;
    s->ctx = ctx;
    s->cs = o.chunk_size;
    s->depth = o.chunks;
    s->nmax = nmax; /* the chunks are made when needed (chunk_get()) */
    int err = afs_open(ctx, path, flags, o.perm, AFS_MODE_SYNC, &s->f);
    if (err < 0) {
        stream_free(s);
        return err;
    }
    if (s->f->dio_align && s->cs % s->f->dio_align) {
        afs_close(s->f);
        stream_free(s);
        return -EINVAL;
    }
    s->fd = s->f->fd;
#ifndef _WIN32
    s->plain_pread = afs__sys.pread == afs__sys_pread;
#endif
    s->crash = ctx->crash != NULL;
    s->bound = ctx->bound;
    s->can_read = rd;
    s->can_write = wr;
    s->append = app;
    s->pipe = s->f->seq;
    s->ra = s->depth; /* a fresh stream is assumed sequential */
    s->cur_off = -1;
    s->eof_off = INT64_MAX;
    s->werr_off = INT64_MAX;
    s->cw_end = -2; /* -2: no window yet; -1: none open; -3: a seek's comes next */
    s->no_chunks = true;
    s->cw_gap = s->cw_next = STREAM_EXPLORE;
    s->cached_ok = !s->pipe && !(flags & AFS_DIRECT);
    s->pool_max = UINT_MAX; /* asked when a cached window could use the pool */
    s->grow = AFS_MIN(STREAM_FILL_MIN, s->cs);
    s->fill_first = true;
    /* The size afs_open's fstat saw, where it is known: no second fstat. */
    int64_t size = 0;
    if ((rd || app) && !s->pipe) {
        size = atomic_load_explicit(&s->f->size_hint, memory_order_relaxed);
        if (size < 0)
            size = afs_file_size(s->f);
    }
    if (size < 0) {
        afs_close(s->f);
        stream_free(s);
        return (int)size;
    }
    if (rd && !s->pipe)
        s->eof_off = size; /* read-ahead stops at the end known now */
    if (app && !rd)
        s->pos = size; /* as glibc: "a" starts at the end, "a+" at 0 for reading */
    s->seek_ok = size; /* any position inside the file is one the file system takes */
    if (rd && !wr && !s->pipe && !(o.flags & (AFS_STREAM_DIRECT | AFS_STREAM_BUFFERED)) &&
        direct_may_pay(s, size)) {
        /* The O_DIRECT file is opened at the first window found not all in the page cache
         * (cached_window()): a stream over cached data, or one that reads a header, asks
         * nothing about the rest of the file. Without the memory for the path: no df. */
        size_t n = strlen(path) + 1;
        s->df_path = n <= sizeof s->df_name ? s->df_name : afs__sys.malloc(n);
        if (s->df_path)
            memcpy(s->df_path, path, n);
        s->go_direct = true; /* until the consumer is seen waiting: see the top */
    }
    s->magic = AFS__STREAM_MAGIC ^ (uintptr_t)s;
    s->f->of_stream = true;
    afs_list_push_back(&ctx->streams, &s->node);
    *out = s;
    return 0;
}

void afs__streams_bound(struct afs_ctx *ctx)
{
    for (struct afs_list_node *n = ctx->streams.first; n; n = n->next)
        AFS_LIST_ITEM(n, struct afs_stream, node)->bound = ctx->bound;
}

void afs__streams_stats(const struct afs_ctx *ctx, struct afs_stats *out)
{
    for (const struct afs_list_node *n = ctx->streams.first; n; n = n->next)
        out->inline_ops += AFS_LIST_ITEM(n, const struct afs_stream, node)->inline_ops;
}

void afs__streams_close(struct afs_ctx *ctx)
{
    while (ctx->streams.first)
        afs_fclose(AFS_LIST_ITEM(ctx->streams.first, struct afs_stream, node));
}

int afs_fopen(struct afs_ctx *ctx, const char *path, const char *mode, struct afs_stream **out)
{
    afs__ctx_check(ctx, __func__);
    return afs_fopen_opts(ctx, path, mode, NULL, out);
}

int afs_fclose(struct afs_stream *s)
{
    stream_check(s, __func__);
    chain_check(s, __func__);
    bool busy = s->fill && s->fill->len;
    for (unsigned i = 0; i < s->nbuf; i++)
        busy |= in_flight(s->ch[i]);
    AFS_CHECK(!s->ctx->in_callback || !busy,
              "closing a stream with I/O pending from a callback would deadlock");
    if (s->dir == DIR_WRITE) {
        /* The writes in flight first: after a failure (seen now, maybe) what was buffered
         * since is dropped, not written past its hole (write_fill()). */
        if (s->fill && s->fill->len)
            (void)wait_writes(s);
        write_fill(s);
    }
    for (unsigned i = 0; i < s->nbuf; i++)
        drop_chunk(s->ch[i]);
    /* The buffers are the library's until every callback ran, errors or not. */
    for (unsigned i = 0; i < s->nbuf; i++)
        chunk_wait(s, s->ch[i]);
    int err = s->err;
    afs_list_remove(&s->ctx->streams, &s->node);
    s->ctx->stats.inline_ops += s->inline_ops;
    if (s->df)
        afs_close(s->df);
    s->f->of_stream = false;
    int cerr = afs_close(s->f);
    *(volatile uintptr_t *)&s->magic = AFS__DEAD; /* kept: see afs_close() */
    stream_free(s);
    return err ? err : cerr;
}
