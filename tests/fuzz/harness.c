/* The differential fuzzer: entry point, state, flights, checks (see harness.h). */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/stat.h>
#endif

struct fz_state fz;

static char tmpdir[2048];
static char trace_buf[1 << 16];
static size_t trace_len;
static bool trace_live;

/* ------------------------------------------------------------------------------------------
 * Input, trace, failure
 * ---------------------------------------------------------------------------------------- */

uint8_t fz_u8(struct fz_in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

uint16_t fz_u16(struct fz_in *in)
{
    uint16_t lo = fz_u8(in);
    return (uint16_t)(lo | (uint16_t)fz_u8(in) << 8);
}

void fz_trace(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = sizeof line - 1;
    if (trace_live)
        fprintf(stderr, "fz: %s\n", line);
    if (trace_len + (size_t)n + 2 < sizeof trace_buf) {
        memcpy(trace_buf + trace_len, line, (size_t)n);
        trace_len += (size_t)n;
        trace_buf[trace_len++] = '\n';
        trace_buf[trace_len] = 0;
    }
}

const char *fz_err(ssize_t r)
{
    static char bufs[4][48];
    static int k;
    char *b = bufs[k++ & 3];
    if (r < 0) {
        const char *name = NULL;
        switch (-r) {
        case EINVAL: name = "EINVAL"; break;
        case EBADF: name = "EBADF"; break;
        case EBUSY: name = "EBUSY"; break;
        case ENOENT: name = "ENOENT"; break;
        case EEXIST: name = "EEXIST"; break;
        case ECANCELED: name = "ECANCELED"; break;
        case EALREADY: name = "EALREADY"; break;
        case EIO: name = "EIO"; break;
        case EFBIG: name = "EFBIG"; break;
        case EDEADLK: name = "EDEADLK"; break;
        case ETIMEDOUT: name = "ETIMEDOUT"; break;
        }
        if (name)
            snprintf(b, 48, "-%s", name);
        else
            snprintf(b, 48, "-errno %zd", -r);
    } else {
        snprintf(b, 48, "%zd", r);
    }
    return b;
}

bool fz_skip_fsync(void)
{
    return FZ_EXCLUDE_URING_FSYNC_SPAN && fz.backend && !strcmp(fz.backend, "io_uring");
}

bool fz_skip_cancel(void)
{
    return FZ_EXCLUDE_PAIO_CANCEL && fz.backend && !strcmp(fz.backend, "posix-aio");
}

static void rm_tmpdir(void)
{
    if (!tmpdir[0])
        return;
    DIR *d = opendir(tmpdir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char p[8192];
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(tmpdir);
    tmpdir[0] = 0;
}

_Noreturn void fz_fail(const char *fmt, ...)
{
    char m[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    fprintf(stderr,
            "\n==== asyncfs fuzz: MISMATCH on backend %s, operation #%d ====\n%s\n"
            "---- operations of this input (expected values come from the model) ----\n%s"
            "---- end ----\n",
            fz.backend ? fz.backend : "?", fz.opno, m, trace_buf);
    rm_tmpdir();
    abort();
}

/* ------------------------------------------------------------------------------------------
 * Data and decoding helpers
 * ---------------------------------------------------------------------------------------- */

void fz_fill(unsigned char *buf, size_t len, uint8_t seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)((seed * 31u + i * 13u + (i >> 9) + 1u) | ((i & 7) == 3));
}

static uint64_t direct_align(void)
{
    return fz.dio_align > FZ_PAGE ? fz.dio_align : FZ_PAGE;
}

uint64_t fz_pick_off(struct fz_in *in, int path)
{
    uint8_t b = fz_u8(in);
    uint64_t d = fz_u16(in);
    uint64_t size = fz.model[path].size;
    switch (b & 15) {
    case 0: return d % 8192;
    case 1: return d;
    case 2:
    case 13: return size + d % 16384 >= 8192 ? size + d % 16384 - 8192 : 0;
    case 3: return FZ_PAGE * (d % 32);
    case 4: return ((uint64_t)4 << 30) - 8192 + d % 16384; /* straddles 4 GiB */
    case 5: return ((uint64_t)4 << 30) + d;
    case 6: return ((uint64_t)12 << 30) + d;
    case 7: return ((uint64_t)1 << 40) + d;
    case 8: return (uint64_t)INT64_MAX - d % 256;
    case 9: return (uint64_t)INT64_MAX + 1 + d;
    case 10: return UINT64_MAX - d;
    case 11: return d % 512;
    case 12: return 512 * (d % 64);
    case 14: return size;
    default: return d % 256;
    }
}

size_t fz_pick_len(struct fz_in *in)
{
    uint8_t c = fz_u8(in);
    size_t d = fz_u16(in);
    switch (c & 7) {
    case 0: return 0;
    case 1: return 1 + d % 64;
    case 2: return 1 + d % 4096;
    case 3: return FZ_PAGE;
    case 4: return FZ_PAGE * (1 + d % 4);
    case 5: return d % 16384;
    case 6: return 1 + d % FZ_MAX_IO;
    default: return 512 * (1 + d % 16);
    }
}

void fz_direct_adjust(bool misalign, uint64_t *off, size_t *len)
{
    uint64_t a = direct_align();
    *off -= *off % a;
    *len -= *len % a;
    if (misalign)
        *off += 1; /* never a multiple of any block size */
}

static bool aligned(uint64_t v, unsigned a)
{
    return a == 0 || v % a == 0;
}

int fz_refusal(const struct fz_handle *h, bool write, uintptr_t buf, size_t len,
               const struct iovec *iov, int iovcnt, uint64_t off)
{
    int mask = 0;
    unsigned a = h->direct ? fz.dio_align : 0;
    size_t total = len;
    /* O_DIRECT's alignment binds only what moves bytes: a zero-length op, or an empty
     * iovec, asks nothing of it (as the system calls). */
    if (iov) {
        total = 0;
        for (int i = 0; i < iovcnt; i++) {
            if (iov[i].iov_len &&
                (!aligned((uintptr_t)iov[i].iov_base, a) || !aligned(iov[i].iov_len, a)))
                mask |= 1;
            total += iov[i].iov_len;
        }
    } else if (len && (!aligned(buf, a) || !aligned(len, a))) {
        mask |= 1;
    }
    if (off > (uint64_t)INT64_MAX || total > (uint64_t)INT64_MAX - off ||
        (total && !aligned(off, a)))
        mask |= 1;
    if (write ? !h->wr : !h->rd)
        mask |= 2;
    return mask;
}

bool fz_write_unpredictable(const struct fz_handle *h, uint64_t off, size_t len)
{
    if (h->append || len == 0 || off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
        return false;
    return off + len > FZ_WRITE_LIMIT;
}

int fz_make_iov(struct fz_in *in, struct iovec *iov, unsigned char *buf, size_t total,
                bool direct, size_t *span)
{
    uint64_t a = direct_align();
    int n = 1 + fz_u8(in) % FZ_IOVS;
    size_t at = 0, left = total;
    for (int i = 0; i < n; i++) {
        size_t piece = i == n - 1 ? left : left * fz_u8(in) / 256;
        size_t gap = fz_u8(in) % 3 == 0 ? 0 : 1 + fz_u8(in) % 64;
        if (direct) {
            piece -= piece % a;
            gap = gap ? a : 0;
        }
        if (i == n - 1)
            piece = left;
        if (i > 0) {
            memset(buf + at, 0xC5, gap);
            at += gap;
        }
        iov[i].iov_base = buf + at;
        iov[i].iov_len = piece;
        at += piece;
        left -= piece;
    }
    *span = at;
    return n;
}

void fz_iov_gather(const struct iovec *iov, int n, unsigned char *out)
{
    for (int i = 0; i < n; i++) {
        memcpy(out, iov[i].iov_base, iov[i].iov_len);
        out += iov[i].iov_len;
    }
}

void fz_iov_check_gaps(const struct iovec *iov, int n, unsigned char *buf, size_t span)
{
    unsigned char *at = buf;
    for (int i = 0; i <= n; i++) {
        unsigned char *end = i < n ? (unsigned char *)iov[i].iov_base : buf + span;
        for (; at < end; at++)
            if (*at != 0xC5)
                fz_fail("a read wrote between its iovecs (offset %zu of the buffer)",
                        (size_t)(at - buf));
        if (i < n)
            at = end + iov[i].iov_len;
    }
}

/* ------------------------------------------------------------------------------------------
 * Flights
 * ---------------------------------------------------------------------------------------- */

struct fz_flight *fz_flight_new(const struct fz_flight *req)
{
    for (int i = 0; i < FZ_FLIGHTS; i++) {
        if (fz.fl[i].kind == FL_FREE) {
            fz.fl[i] = *req;
            return &fz.fl[i];
        }
    }
    fz_fail("harness: flight table full");
}

void fz_flight_free(struct fz_flight *f)
{
    free(f->old);
    free(f->new_);
    memset(f, 0, sizeof *f);
}

void fz_req_read(struct fz_flight *r, int path, uint64_t off, size_t len)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    r->lo = off;
    r->hi = len > UINT64_MAX - off ? UINT64_MAX : off + len;
}

void fz_req_write(struct fz_flight *r, int path, uint64_t off, size_t len, bool append)
{
    uint64_t size = fz.model[path].size;
    memset(r, 0, sizeof *r);
    r->path = path;
    r->write = true;
    r->old_size = size;
    r->wlen = len;
    if (len == 0) {
        r->write = false;
        return;
    }
    if (append) {
        /* Lands at the size the file has when it runs: depends on every size change. */
        r->woff = size;
        r->lo = size;
        r->hi = UINT64_MAX;
        r->extends = r->sizedep = true;
        return;
    }
    r->woff = off;
    r->hi = off + len;
    /* A write past the end also changes what reads of the old end return (the hole). */
    r->extends = off + len > size;
    r->lo = r->extends && size < off ? size : off;
}

void fz_req_size(struct fz_flight *r, int path)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    r->sizedep = true;
}

void fz_req_all(struct fz_flight *r, int path)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    r->lo = 0;
    r->hi = UINT64_MAX;
    r->write = r->extends = r->sizedep = true;
}

void fz_req_keep_old(struct fz_flight *r, const void *newdata)
{
    if (!r->wlen)
        return;
    r->old = malloc(r->wlen);
    r->new_ = malloc(r->wlen);
    if (!r->old || !r->new_)
        fz_fail("harness: out of memory");
    fz_model_peek(&fz.model[r->path], r->woff, r->old, r->wlen);
    memcpy(r->new_, newdata, r->wlen);
}

static bool conflict(const struct fz_flight *a, const struct fz_flight *b)
{
    if (a->path != b->path)
        return false;
    if (a->kind == FL_RESYNC || b->kind == FL_RESYNC)
        return true;
    if ((a->sizedep && b->extends) || (b->sizedep && a->extends))
        return true;
    return (a->write || b->write) && a->lo < b->hi && b->lo < a->hi;
}

static struct fz_flight *find_conflict(const struct fz_flight *req)
{
    for (int i = 0; i < FZ_FLIGHTS; i++)
        if (fz.fl[i].kind != FL_FREE && conflict(&fz.fl[i], req))
            return &fz.fl[i];
    return NULL;
}

static bool path_busy(int path)
{
    for (int i = 0; i < FZ_FLIGHTS; i++)
        if (fz.fl[i].kind != FL_FREE && fz.fl[i].kind != FL_RESYNC && fz.fl[i].path == path)
            return true;
    return false;
}

unsigned fz_slots_busy(void)
{
    unsigned n = 0;
    for (int i = 0; i < FZ_SLOTS; i++)
        n += fz.slot[i].busy;
    return n;
}

void fz_ctx_wait(unsigned min_complete, int64_t timeout_ns)
{
    unsigned before = fz.callbacks, busy = fz_slots_busy(), pos = 0;
    for (int i = 0; i < FZ_HANDLES; i++)
        pos += fz.h[i].f && fz.h[i].pending;
    if (timeout_ns < 0 && min_complete > 0 && busy == 0)
        timeout_ns = 0; /* nothing of ours outstanding (a position op may be done already):
                           it could wait for a wake forever */
    int r = afs_ctx_wait(fz.ctx, min_complete, timeout_ns);
    unsigned ours = fz.callbacks - before;
    if (r < 0)
        fz_fail("afs_ctx_wait(%u, %" PRId64 ") = %s", min_complete, timeout_ns, fz_err(r));
    /* Streams run ops of their own (read-ahead, write-behind): no upper bound then. */
    bool streams = false;
    for (int i = 0; i < FZ_STREAMS; i++)
        streams |= fz.st[i].s != NULL;
    if ((unsigned)r < ours || (!streams && (unsigned)r > ours + pos))
        fz_fail("afs_ctx_wait(%u, %" PRId64 ") = %d, but %u op callbacks ran (and %u position "
                "ops were in flight)", min_complete, timeout_ns, r, ours, pos);
    if (timeout_ns < 0 && (unsigned)r < (min_complete < busy ? min_complete : busy))
        fz_fail("afs_ctx_wait(%u, no timeout) = %d with %u ops outstanding", min_complete, r,
                busy);
}

/* Waits (main sequence) for one flight of any kind but resync to end. */
static void wait_flight(struct fz_flight *c)
{
    if (c->kind == FL_OP) {
        fz_ctx_wait(1, -1);
    } else if (c->kind == FL_POS) {
        int h = c->owner;
        ssize_t res = 0;
        int r = afs_last_op_wait(fz.h[h].f, &res);
        if (r != 1)
            fz_fail("afs_last_op_wait(h%d) = %d", h, r);
        fz_retire(h, res);
    } else {
        fz_fail("harness: a task's flight is left outside the tasks");
    }
}

static void quiet_path(int path)
{
    for (;;) {
        struct fz_flight *c = NULL;
        for (int i = 0; i < FZ_FLIGHTS && !c; i++)
            if (fz.fl[i].kind != FL_FREE && fz.fl[i].kind != FL_RESYNC && fz.fl[i].path == path)
                c = &fz.fl[i];
        if (!c)
            return;
        wait_flight(c);
    }
}

bool fz_settle(const struct fz_flight *req, int keep_stream)
{
    /* Streams first: flushing drives the context, and callbacks may turn a cancelled
     * write into a resync entry. */
    fz_flush_streams(req->path, keep_stream);
    struct fz_flight *c;
    bool waited = false;
    while ((c = find_conflict(req))) {
        waited = true;
        if (c->kind == FL_RESYNC) {
            quiet_path(c->path);
            fz_resync(c->path);
        } else {
            wait_flight(c);
        }
    }
    return waited;
}

bool fz_settle_task(struct corio_task *t, const struct fz_flight *req)
{
    struct fz_flight *c;
    bool waited = false;
    while ((c = find_conflict(req))) {
        waited = true;
        if (c->kind == FL_RESYNC && !path_busy(c->path))
            fz_resync(c->path);
        else
            corio_yield(t);
    }
    return waited;
}

void fz_retire(int hi, ssize_t res)
{
    struct fz_handle *h = &fz.h[hi];
    if (!h->pending)
        fz_fail("harness: retiring h%d with nothing pending", hi);
    h->pending = false;
    struct fz_flight *fl = h->pend_fl;
    h->pend_fl = NULL;
    fz_trace("  h%d position op done: %s (model %s)", hi, fz_err(res), fz_err(h->pend_res));
    if (res != h->pend_res)
        fz_fail("h%d: the position %s completed with %s, the model says %s", hi,
                h->pend_write ? "write" : "read", fz_err(res), fz_err(h->pend_res));
    if (!h->pend_write && res > 0 && memcmp(h->buf, h->expect, (size_t)res) != 0) {
        size_t i = 0;
        while (h->buf[i] == h->expect[i])
            i++;
        fz_fail("h%d: the position read returned wrong data at byte %zu: 0x%02x, the model "
                "says 0x%02x", hi, i, h->buf[i], h->expect[i]);
    }
    h->pos = h->pend_pos;
    h->last_res = res;
    if (fl)
        fz_flight_free(fl);
}

void fz_retire_all(void)
{
    for (int i = 0; i < FZ_HANDLES; i++) {
        if (fz.h[i].f && fz.h[i].pending) {
            ssize_t res = 0;
            int r = afs_last_op_wait(fz.h[i].f, &res);
            if (r != 1)
                fz_fail("afs_last_op_wait(h%d) = %d", i, r);
            fz_retire(i, res);
        }
    }
}

void fz_quiesce(void)
{
    fz_retire_all();
    while (fz_slots_busy())
        fz_ctx_wait(1, -1);
    for (int p = 0; p < FZ_PATHS; p++)
        fz_resync(p);
    fz_flush_streams(-1, -1);
}

/* ------------------------------------------------------------------------------------------
 * Resync after cancelled writes, file checks
 * ---------------------------------------------------------------------------------------- */

void fz_resync(int path)
{
    bool any = false;
    uint64_t low = UINT64_MAX;
    for (int i = 0; i < FZ_FLIGHTS; i++) {
        if (fz.fl[i].kind == FL_RESYNC && fz.fl[i].path == path) {
            any = true;
            if (fz.fl[i].old_size < low)
                low = fz.fl[i].old_size;
        }
    }
    if (!any)
        return;
    struct fz_model *m = &fz.model[path];
    int fd = open(fz.path[path], O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        fz_fail("resync: cannot open %s: %s", fz.path[path], strerror(errno));
    uint64_t real = (uint64_t)st.st_size;
    if (real > m->size || real < low)
        fz_fail("after a cancelled write the file size is %" PRIu64 ", outside [%" PRIu64
                ", %" PRIu64 "] (before it .. with it in full)", real, low, m->size);
    fz_trace("  resync p%d: size %" PRIu64 " (model %" PRIu64 ")", path, real, m->size);
    fz_model_truncate(m, real);
    for (int i = 0; i < FZ_FLIGHTS; i++) {
        struct fz_flight *f = &fz.fl[i];
        if (f->kind != FL_RESYNC || f->path != path)
            continue;
        size_t n = f->woff >= real ? 0
                   : (f->wlen < real - f->woff ? f->wlen : (size_t)(real - f->woff));
        unsigned char *got = malloc(n ? n : 1);
        if (!got)
            fz_fail("harness: out of memory");
        size_t done = 0;
        while (done < n) {
            ssize_t r = pread(fd, got + done, n - done, (off_t)(f->woff + done));
            if (r <= 0)
                fz_fail("resync: pread: %s", r < 0 ? strerror(errno) : "EOF");
            done += (size_t)r;
        }
        for (size_t k = 0; k < n; k++)
            if (got[k] != f->old[k] && got[k] != f->new_[k])
                fz_fail("after a cancelled write, byte %" PRIu64 " is 0x%02x: neither the old "
                        "0x%02x nor the new 0x%02x", f->woff + k, got[k], f->old[k], f->new_[k]);
        if (n)
            fz_model_write(m, f->woff, got, n);
        free(got);
        fz_flight_free(f);
    }
    close(fd);
}

void fz_check_files(const char *when)
{
    for (int p = 0; p < FZ_PATHS; p++) {
        int fd = open(fz.path[p], O_RDONLY | O_CLOEXEC);
        bool exists = fd >= 0;
        if (exists != fz.model[p].exists)
            fz_fail("%s: file p%d %s, the model says it %s", when, p,
                    exists ? "exists" : "does not exist", exists ? "does not" : "does");
        if (!exists)
            continue;
        const char *d = fz_model_compare(&fz.model[p], fd);
        close(fd);
        if (d)
            fz_fail("%s: file p%d: %s", when, p, d);
    }
}

/* ------------------------------------------------------------------------------------------
 * Setup and the entry point
 * ---------------------------------------------------------------------------------------- */

static unsigned probe_dio_align(int fd)
{
#if defined(__linux__) && defined(STATX_DIOALIGN) && defined(SYS_statx)
    /* The rule the library applies (STATX_DIOALIGN, Linux 6.1), else 512. */
    struct statx stx;
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
        unsigned a = stx.stx_dio_offset_align;
        if (stx.stx_dio_mem_align > a)
            a = stx.stx_dio_mem_align;
        return a;
    }
#endif
    (void)fd;
    return 512;
}

static void setup_once(void)
{
    if (tmpdir[0])
        return;
    trace_live = getenv("FZ_TRACE") != NULL;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/asyncfs-fuzz-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "asyncfs fuzz: mkdtemp %s: %s\n", tmpdir, strerror(errno));
        exit(1);
    }
    atexit(rm_tmpdir);
    for (int p = 0; p < FZ_PATHS; p++)
        snprintf(fz.path[p], sizeof fz.path[p], "%s/f%d", tmpdir, p);

    /* Does the directory take O_DIRECT? (tmpfs before Linux 6.6 does not.) */
    char probe[8192];
    snprintf(probe, sizeof probe, "%s/probe", tmpdir);
#ifdef O_DIRECT
    int fd = open(probe, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
#else
    int fd = -1; /* macOS: F_NOCACHE has no alignment rules; not modelled */
#endif
    if (fd >= 0 && !getenv("FZ_NO_DIRECT")) {
        fz.dio_ok = true;
        fz.dio_align = probe_dio_align(fd);
        if (fz.dio_align > FZ_PAGE * 4)
            fz.dio_ok = false;
    }
    if (fd >= 0)
        close(fd);
    unlink(probe);

    size_t n = FZ_BUF;
    unsigned char **bufs[] = {&fz.scratch, &fz.scratch_expect};
    for (size_t i = 0; i < 2; i++)
        if (posix_memalign((void **)bufs[i], 4 * FZ_PAGE, n))
            abort();
    for (int i = 0; i < FZ_HANDLES; i++)
        if (posix_memalign((void **)&fz.h[i].buf, 4 * FZ_PAGE, n) ||
            posix_memalign((void **)&fz.h[i].expect, 4 * FZ_PAGE, n))
            abort();
    for (int i = 0; i < FZ_SLOTS; i++)
        if (posix_memalign((void **)&fz.slot[i].buf, 4 * FZ_PAGE, n) ||
            posix_memalign((void **)&fz.slot[i].expect_buf, 4 * FZ_PAGE, n))
            abort();

    /* The backend the environment asks for must exist here: say so once, clearly. */
    struct afs_ctx *ctx;
    int err = afs_ctx_new(&ctx, NULL);
    if (err < 0) {
        const char *want = getenv("ASYNCFS_BACKEND");
        fprintf(stderr, "asyncfs fuzz: backend %s is not available here: %s\n",
                want ? want : "(auto)", afs_strerror(err));
        exit(77);
    }
    static char name[32];
    snprintf(name, sizeof name, "%s", afs_ctx_backend(ctx));
    fz.backend = name;
    afs_ctx_free(ctx);
    fprintf(stderr, "asyncfs fuzz: backend %s, directory %s, O_DIRECT %s (align %u)\n",
            fz.backend, tmpdir, fz.dio_ok ? "yes" : "no", fz.dio_align);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setup_once();
    return 0;
}

static void reset_state(void)
{
    for (int i = 0; i < FZ_HANDLES; i++) {
        unsigned char *b = fz.h[i].buf, *e = fz.h[i].expect;
        memset(&fz.h[i], 0, sizeof fz.h[i]);
        fz.h[i].buf = b;
        fz.h[i].expect = e;
    }
    for (int i = 0; i < FZ_SLOTS; i++) {
        unsigned char *b = fz.slot[i].buf, *e = fz.slot[i].expect_buf;
        memset(&fz.slot[i], 0, sizeof fz.slot[i]);
        fz.slot[i].buf = b;
        fz.slot[i].expect_buf = e;
    }
    memset(fz.st, 0, sizeof fz.st);
    for (int i = 0; i < FZ_FLIGHTS; i++)
        if (fz.fl[i].kind != FL_FREE)
            fz_flight_free(&fz.fl[i]);
    for (int p = 0; p < FZ_PATHS; p++) {
        fz_model_reset(&fz.model[p]);
        fz.model[p].exists = false;
        unlink(fz.path[p]);
    }
    fz.callbacks = 0;
    fz.in_tasks = false;
    fz.opno = 0;
    trace_len = 0;
    trace_buf[0] = 0;
}

/* Header bits 0x20 and 0x40: registered buffers and a registered-file table for the run.
 * Only speed may change: every result is checked against the model as always. The ranges
 * cover part of each buffer (the first half of the handles', all but the first page of the
 * slots'), so ops inside, outside and across a range's ends all happen; the table has fewer
 * slots than there are handles. */
static void register_some(uint8_t cfgb)
{
    if (cfgb & 0x20) {
        struct iovec iov[1 + FZ_HANDLES + FZ_SLOTS];
        unsigned n = 0;
        iov[n++] = (struct iovec){fz.scratch, FZ_BUF};
        for (int i = 0; i < FZ_HANDLES; i++)
            iov[n++] = (struct iovec){fz.h[i].buf, FZ_BUF / 2};
        for (int i = 0; i < FZ_SLOTS; i++)
            iov[n++] = (struct iovec){fz.slot[i].buf + FZ_PAGE, FZ_BUF - FZ_PAGE};
        int r = afs_ctx_register_buffers(fz.ctx, iov, n);
        if (r < 0)
            fz_fail("afs_ctx_register_buffers: %s", fz_err(r));
        fz_trace("registered buffers: %d", r);
    }
    if (cfgb & 0x40) {
        int r = afs_ctx_register_files(fz.ctx, FZ_HANDLES / 2);
        if (r < 0)
            fz_fail("afs_ctx_register_files: %s", fz_err(r));
        fz_trace("registered files: %d", r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    reset_state();
    struct fz_in in = {data, size};

    /* Header: the context's configuration and how the input ends. */
    static const unsigned depths[] = {1024, 1, 2, 4};
    static const unsigned thresholds[] = {4096, 0, 512, 65536};
    uint8_t cfgb = fz_u8(&in);
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.queue_depth = depths[cfgb & 3];
    cfg.sync_threshold = thresholds[(cfgb >> 2) & 3];
    bool close_all = !(cfgb & 0x10);
    fz.sync_threshold = (unsigned)cfg.sync_threshold;
    int err = afs_ctx_new(&fz.ctx, &cfg);
    if (err < 0)
        fz_fail("afs_ctx_new: %s", fz_err(err));
    fz_trace("ctx: backend %s, queue_depth %u, sync_threshold %u", fz.backend,
             cfg.queue_depth, fz.sync_threshold);
    if (cfgb & 0x60)
        register_some(cfgb);

    while (in.n > 0 && fz.opno < FZ_MAX_OPS) {
        fz.opno++;
        uint8_t code = fz_u8(&in);
        unsigned op = code % 32u;
        if (op < 12) {
            fz_op_file((uint8_t)op, &in);
        } else if (op < 20) {
            fz_op_queue((uint8_t)op, &in);
        } else if (op < 28) {
            fz_op_stream((uint8_t)op, &in);
        } else if (op < 30) {
            fz_op_tasks(&in);
        } else if (op == 31 && code >= 0xDF) {
            fz_op_pipe(&in); /* codes 0xDF and 0xFF: a session on a pipe, FIFO or socket */
        } else if (op == 30) {
            fz_trace("#%d check files", fz.opno);
            fz_quiesce();
            fz_check_files("check");
        } else {
            fz_op_file((uint8_t)(code % 12u), &in);
        }
    }

    /* Teardown: everything completes, then the files must match the model. */
    fz_trace("end (%s)", close_all ? "close everything" : "afs_ctx_free closes the files");
    for (int i = 0; i < FZ_STREAMS; i++)
        if (fz.st[i].s)
            fz_close_stream(i);
    fz_quiesce();
    if (close_all)
        for (int i = 0; i < FZ_HANDLES; i++)
            if (fz.h[i].f)
                fz_close_handle(i);
    afs_ctx_free(fz.ctx);
    fz.ctx = NULL;
    for (int i = 0; i < FZ_SLOTS; i++)
        if (fz.slot[i].busy)
            fz_fail("slot %d: afs_ctx_free returned before its callback ran", i);
    fz_check_files("end");
    reset_state();
    return 0;
}
