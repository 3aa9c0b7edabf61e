/* Pipes, FIFOs and socketpairs: files without offsets, read and written at the descriptor's
 * position. One operation is a whole session on a fresh channel: the input chooses its kind,
 * the reader (a stream, or afs_read in sync or async mode through afs_file_from_fd), the
 * writer (plain write() or afs_write) and a sequence of writes, reads, refused positional
 * calls and the writer's close. The model is two counters: the bytes written and the bytes
 * read; byte k of the channel is pat(k), so a lost, repeated or reordered byte shows.
 * The session never blocks: at most PIPE_ROOM bytes are unread (less than any pipe or socket
 * buffer holds), and a read asks for at most what is there until the writer has closed.
 * On a socketpair the reader and the writer may use the socket calls instead: afs_recv (plain,
 * MSG_WAITALL or MSG_PEEK) and afs_send, blocking or as queued ops (afs_queue_recv,
 * afs_queue_send), or afs_sendfile / afs_queue_sendfile of the bytes written to a file first
 * (at an offset the input picks, sometimes asked for past the file's end: a short count).
 * A plain receive may give fewer bytes than are there, never none while some are;
 * MSG_WAITALL gives all it asked for, short only at the end; a peek takes nothing. */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define PIPE_ROOM 32768u

enum { CH_PIPE, CH_SOCKET, CH_FIFO };
static const char *kinds[] = {"pipe", "socketpair", "fifo"};

struct chan {
    int                kind;
    int                wfd;   /* the writer's fd, -1 once closed */
    struct afs_file   *wf;    /* or the writer as a file of the context */
    struct afs_file   *rf;    /* the reader: a file... */
    struct afs_stream *rs;    /* ...or a stream */
    bool               async; /* rf's mode */
    bool               sockops; /* a socketpair read with afs_recv and written with afs_send */
    bool               queued;  /* ...as queued ops (afs_queue_recv, afs_queue_send) */
    uint8_t            rflags;  /* the next receive: 0 plain, 1 MSG_WAITALL, 2 MSG_PEEK */
    uint64_t           written, consumed;
    bool               wclosed;
    uint8_t            seed;
};

static void never_cb(struct afs_op *op)
{
    (void)op;
    fz_fail("a refused op's callback ran");
}

static unsigned char pat(uint64_t k, uint8_t seed)
{
    return (unsigned char)((k * 131u) ^ (k >> 9) ^ seed);
}

struct sock_done {
    bool    done;
    ssize_t res;
};

static void sock_cb(struct afs_op *op)
{
    struct sock_done *d = op->data;
    d->done = true;
    d->res = op->result;
}

/* A queued receive or send, waited for with the context's own wait. */
static ssize_t sock_queued(struct chan *c, bool send, void *buf, size_t n, int flags)
{
    struct afs_op op;
    struct sock_done d = {0};
    memset(&op, 0, sizeof op);
    int r = send ? afs_queue_send(&op, c->wf, buf, n, flags, sock_cb, &d)
                 : afs_queue_recv(&op, c->rf, buf, n, flags, sock_cb, &d);
    if (r != 0)
        return r;
    while (!d.done) {
        int w = afs_ctx_wait(fz.ctx, 1, -1);
        if (w < 0)
            fz_fail("afs_ctx_wait for a queued %s = %s", send ? "send" : "recv", fz_err(w));
    }
    return d.res;
}

/* The n bytes of buf sent through a file: written there at an offset from v, then sent with
 * afs_sendfile (or queued), sometimes asking for more than the file has. */
static void chan_sendfile(struct chan *c, const unsigned char *buf, size_t n, uint16_t v)
{
    char path[4200];
    snprintf(path, sizeof path, "%s.sf", fz.path[0]);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    uint64_t off = v % 8192u;
    if (fd < 0 || pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
        fz_fail("harness: writing %s: %s", path, strerror(errno));
    close(fd);
    struct afs_file *f;
    int e = afs_open(fz.ctx, path, AFS_RDONLY, 0, AFS_MODE_SYNC, &f);
    if (e != 0)
        fz_fail("afs_open of the sendfile source: %s", fz_err(e));
    size_t ask = (v & 0x8000) ? n + 1 + v % 100u : n;
    ssize_t r;
    if (c->queued) {
        struct afs_op op;
        struct sock_done d = {0};
        memset(&op, 0, sizeof op);
        r = afs_queue_sendfile(&op, c->wf, f, off, ask, sock_cb, &d);
        while (r == 0 && !d.done) {
            int w = afs_ctx_wait(fz.ctx, 1, -1);
            if (w < 0)
                fz_fail("afs_ctx_wait for a queued sendfile = %s", fz_err(w));
        }
        if (r == 0)
            r = d.res;
    } else {
        r = afs_sendfile(c->wf, f, off, ask);
    }
    fz_trace("  afs_%ssendfile(writer, off %" PRIu64 ", %zu) = %s", c->queued ? "queue_" : "",
             off, ask, fz_err(r));
    if (r != (ssize_t)n)
        fz_fail("afs_sendfile of %zu bytes (%zu asked) on a socketpair: %s", n, ask,
                fz_err(r));
    afs_close(f);
    unlink(path);
}

static void chan_write(struct chan *c, size_t n, bool sendfile, uint16_t v)
{
    unsigned char *buf = fz.scratch;
    for (size_t i = 0; i < n; i++)
        buf[i] = pat(c->written + i, c->seed);
    if (c->wf && c->sockops && sendfile) {
        chan_sendfile(c, buf, n, v);
    } else if (c->wf && c->sockops) {
        ssize_t r = c->queued ? sock_queued(c, true, buf, n, 0) : afs_send(c->wf, buf, n, 0);
        fz_trace("  afs_%ssend(writer, %zu) = %s", c->queued ? "queue_" : "", n, fz_err(r));
        if (r != (ssize_t)n)
            fz_fail("afs_send on a socketpair: %s, expected %zu", fz_err(r), n);
    } else if (c->wf) {
        ssize_t r = afs_write(c->wf, buf, n);
        fz_trace("  afs_write(writer, %zu) = %s", n, fz_err(r));
        if (r != (ssize_t)n)
            fz_fail("afs_write on a %s: %s, expected %zu", kinds[c->kind], fz_err(r), n);
    } else {
        for (size_t w = 0; w < n;) {
            ssize_t r = write(c->wfd, buf + w, n - w);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                fz_fail("harness: write to the %s: %s", kinds[c->kind], strerror(errno));
            w += (size_t)r;
        }
        fz_trace("  write(writer, %zu)", n);
    }
    c->written += n;
}

static void chan_close_writer(struct chan *c)
{
    if (c->wclosed)
        return;
    if (c->wf) {
        int r = afs_close(c->wf);
        fz_trace("  afs_close(writer) = %s", fz_err(r));
        if (r != 0)
            fz_fail("afs_close of a %s's writer: %s", kinds[c->kind], fz_err(r));
        c->wf = NULL;
    } else {
        close(c->wfd);
        fz_trace("  close(writer)");
    }
    c->wfd = -1;
    c->wclosed = true;
}

/* Reads n bytes; expects min(n, what is there), and the end of file when that is short. */
static void chan_read(struct chan *c, size_t n)
{
    uint64_t avail = c->written - c->consumed;
    size_t want = n < avail ? n : (size_t)avail;
    unsigned char *buf = fz.scratch;
    memset(buf, 0, n);
    ssize_t got;
    if (c->sockops) {
        static const int fl[] = {0, MSG_WAITALL, MSG_PEEK};
        int flags = fl[c->rflags % 3];
        got = c->queued ? sock_queued(c, false, buf, n, flags) : afs_recv(c->rf, buf, n, flags);
        fz_trace("  afs_%srecv(%zu, %s) = %s", c->queued ? "queue_" : "", n,
                 flags == MSG_WAITALL ? "MSG_WAITALL" : flags == MSG_PEEK ? "MSG_PEEK" : "0",
                 fz_err(got));
        /* Fewer than there are is a normal receive, unless MSG_WAITALL; none only at the end. */
        if (flags != MSG_WAITALL && got > 0 && got < (ssize_t)want)
            want = (size_t)got;
        if (flags == MSG_PEEK && got > 0) {
            for (size_t i = 0; i < (size_t)got; i++)
                if (buf[i] != pat(c->consumed + i, c->seed))
                    fz_fail("peeked byte %" PRIu64 " of a socketpair is 0x%02x, not 0x%02x",
                            c->consumed + i, buf[i], pat(c->consumed + i, c->seed));
            c->rflags = 0;
            chan_read(c, (size_t)got); /* the same bytes, taken this time */
            return;
        }
    } else if (c->rs) {
        got = (ssize_t)afs_fread(buf, 1, n, c->rs);
        fz_trace("  afs_fread(%zu) = %zd", n, got);
        if (got == (ssize_t)want && want < n &&
            (!afs_feof(c->rs) || afs_ferror(c->rs) != 0))
            fz_fail("a short afs_fread on a %s: feof %d, ferror %s", kinds[c->kind],
                    afs_feof(c->rs), fz_err(afs_ferror(c->rs)));
    } else {
        got = afs_read(c->rf, buf, n);
        if (c->async && got == 0) {
            ssize_t res;
            int done = afs_last_op_wait(c->rf, &res);
            if (done != 1)
                fz_fail("afs_last_op_wait on a %s = %d", kinds[c->kind], done);
            got = res;
        }
        fz_trace("  afs_read(%zu)%s = %s", n, c->async ? " async" : "", fz_err(got));
    }
    if (got != (ssize_t)want)
        fz_fail("reading %zu bytes of a %s with %" PRIu64 " there (writer %s) gave %s",
                n, kinds[c->kind], avail, c->wclosed ? "closed" : "open", fz_err(got));
    for (size_t i = 0; i < want; i++)
        if (buf[i] != pat(c->consumed + i, c->seed))
            fz_fail("byte %" PRIu64 " of the %s is 0x%02x, the writer sent 0x%02x",
                    c->consumed + i, kinds[c->kind], buf[i], pat(c->consumed + i, c->seed));
    c->consumed += want;
    if (!c->rs && !c->async && !c->sockops) {
        int64_t pos = afs_tell(c->rf);
        if (pos != (int64_t)c->consumed)
            fz_fail("afs_tell on a %s = %" PRId64 ", %" PRIu64 " bytes were read",
                    kinds[c->kind], pos, c->consumed);
    }
}

/* The calls that need offsets: -ESPIPE, and nothing is consumed. */
static void chan_refusals(struct chan *c, uint8_t b)
{
    if (c->rs) {
        int r = afs_fseek(c->rs, b % 3, SEEK_SET);
        int64_t t = afs_ftell(c->rs);
        fz_trace("  afs_fseek = %s, afs_ftell = %s", fz_err(r), fz_err(t));
        if (r != -ESPIPE || t != -ESPIPE)
            fz_fail("afs_fseek/afs_ftell on a %s stream: %s/%s, expected -ESPIPE",
                    kinds[c->kind], fz_err(r), fz_err(t));
        return;
    }
    struct afs_op op;
    memset(&op, 0, sizeof op);
    if (c->sockops) {
        /* Socket calls refuse bad flags and buffers before anything moves. */
        ssize_t e1 = afs_recv(c->rf, fz.scratch, 1 + b % 64, MSG_DONTWAIT);
        ssize_t e2 = afs_recv(c->rf, NULL, 1 + b % 64, 0);
        fz_trace("  afs_recv(MSG_DONTWAIT) = %s, afs_recv(NULL) = %s", fz_err(e1), fz_err(e2));
        if (e1 != -EINVAL || e2 != -EINVAL)
            fz_fail("bad receives on a socketpair: %s %s, expected -EINVAL", fz_err(e1),
                    fz_err(e2));
    }
    ssize_t r1 = afs_pread(c->rf, fz.scratch, 1 + b % 64, b);
    int r2 = afs_queue_read(&op, c->rf, fz.scratch, 16, 0, never_cb, NULL);
    int64_t r3 = afs_seek(c->rf, 0, SEEK_SET);
    fz_trace("  afs_pread = %s, afs_queue_read = %s, afs_seek = %s", fz_err(r1), fz_err(r2),
             fz_err(r3));
    if (r1 != -ESPIPE || r2 != -ESPIPE || r3 != -ESPIPE)
        fz_fail("positional calls on a %s: %s %s %s, expected -ESPIPE", kinds[c->kind],
                fz_err(r1), fz_err(r2), fz_err(r3));
}

void fz_op_pipe(struct fz_in *in)
{
    uint8_t b = fz_u8(in);
    struct chan c;
    memset(&c, 0, sizeof c);
    c.kind = b % 3;
    bool stream = (b >> 2) & 1 && c.kind != CH_SOCKET; /* no path opens a socket */
    c.async = (b >> 3) & 1;
    bool afs_writer = (b >> 4) & 1;
    c.seed = fz_u8(in);
    c.sockops = (b >> 5) & 1 && c.kind == CH_SOCKET && !stream;
    c.queued = c.async; /* the reader's mode picks blocking or queued socket calls */
    fz_trace("#%d %s, reader %s, writer %s", fz.opno, kinds[c.kind],
             stream        ? "stream"
             : c.sockops   ? (c.queued ? "afs_queue_recv" : "afs_recv")
             : c.async     ? "afs_read async"
                           : "afs_read sync",
             afs_writer ? (c.sockops ? (c.queued ? "afs_queue_send" : "afs_send") : "afs_write")
                        : "write()");

    int rfd = -1, wfd = -1, sv[2];
    char fifo[4200];
    if (c.kind == CH_PIPE) {
        if (pipe2(sv, O_CLOEXEC) != 0)
            fz_fail("harness: pipe2: %s", strerror(errno));
        rfd = sv[0], wfd = sv[1];
    } else if (c.kind == CH_SOCKET) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            fz_fail("harness: socketpair: %s", strerror(errno));
        rfd = sv[0], wfd = sv[1];
    } else {
        snprintf(fifo, sizeof fifo, "%s.fifo", fz.path[0]);
        unlink(fifo);
        if (mkfifo(fifo, 0600) != 0)
            fz_fail("harness: mkfifo: %s", strerror(errno));
        /* Reader first, without waiting; then the writer does not wait either. */
        rfd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        wfd = rfd < 0 ? -1 : open(fifo, O_WRONLY | O_CLOEXEC);
        if (rfd < 0 || wfd < 0)
            fz_fail("harness: opening the fifo: %s", strerror(errno));
    }
    c.wfd = wfd;
    int acc = c.kind == CH_SOCKET ? AFS_RDWR : AFS_RDONLY;
    if (stream) {
        char path[64];
        snprintf(path, sizeof path, "/dev/fd/%d", rfd);
        int r = afs_fopen(fz.ctx, c.kind == CH_FIFO ? fifo : path, "r", &c.rs);
        if (r != 0)
            fz_fail("afs_fopen of a %s: %s", kinds[c.kind], fz_err(r));
        close(rfd);
    } else {
        int r = afs_file_from_fd(fz.ctx, rfd, acc, c.async ? AFS_MODE_ASYNC : AFS_MODE_SYNC,
                                 &c.rf);
        if (r != 0)
            fz_fail("afs_file_from_fd of a %s: %s", kinds[c.kind], fz_err(r));
    }
    if (afs_writer) {
        int r = afs_file_from_fd(fz.ctx, wfd, c.kind == CH_SOCKET ? AFS_RDWR : AFS_WRONLY,
                                 AFS_MODE_SYNC, &c.wf);
        if (r != 0)
            fz_fail("afs_file_from_fd of a %s's writer: %s", kinds[c.kind], fz_err(r));
    }

    unsigned steps = fz_u8(in) % 24 + 1;
    for (unsigned i = 0; i < steps && in->n > 0; i++) {
        uint8_t s = fz_u8(in);
        uint16_t v = fz_u16(in);
        uint64_t avail = c.written - c.consumed;
        switch (s % 6) {
        case 0:
        case 1: {
            size_t room = PIPE_ROOM - (size_t)avail;
            if (c.wclosed || room == 0)
                break;
            size_t lim = room < FZ_MAX_IO ? room : FZ_MAX_IO;
            size_t n = (s & 0x80) ? 1u + v % 16u : 1u + v % lim;
            chan_write(&c, n < room ? n : room, s & 0x40, v); /* small writes too */
            break;
        }
        case 2:
        case 3: {
            size_t lim = c.wclosed ? (size_t)avail + 64 : (size_t)avail;
            if (lim == 0)
                break;
            if (lim > FZ_MAX_IO)
                lim = FZ_MAX_IO;
            c.rflags = (uint8_t)((s >> 4) & 3);
            chan_read(&c, (s & 0x80) ? 1u + v % (lim < 16 ? lim : 16u) : 1u + v % lim);
            c.rflags = 0;
            break;
        }
        case 4: chan_refusals(&c, (uint8_t)v); break;
        default:
            if (s & 0x40)
                chan_close_writer(&c);
            break;
        }
    }

    /* The end: the writer goes, the rest arrives in order, then the end of file. */
    chan_close_writer(&c);
    while (c.written > c.consumed) {
        uint64_t avail = c.written - c.consumed;
        chan_read(&c, avail + 1 < FZ_MAX_IO ? (size_t)avail + 1 : FZ_MAX_IO);
    }
    chan_read(&c, 1);
    int r = c.rs ? afs_fclose(c.rs) : afs_close(c.rf);
    fz_trace("  close(reader) = %s", fz_err(r));
    if (r != 0)
        fz_fail("closing the reader of a %s: %s", kinds[c.kind], fz_err(r));
    if (c.kind == CH_FIFO)
        unlink(fifo);
}
