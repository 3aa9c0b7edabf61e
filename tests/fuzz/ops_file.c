/* Handles: open and close, the position API (3.1) and the blocking positional calls (3.4),
 * in the main sequence and (through the shared functions) in corio tasks. */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static bool settle_any(struct corio_task *t, const struct fz_flight *req)
{
    return t ? fz_settle_task(t, req) : fz_settle(req, -1);
}

static void check_refused(int mask, ssize_t r, const char *what)
{
    if ((r == -EINVAL && (mask & 1)) || (r == -EBADF && (mask & 2)))
        return;
    fz_fail("%s = %s, the model says it is refused with %s", what, fz_err(r),
            mask == 3 ? "-EINVAL or -EBADF" : mask == 1 ? "-EINVAL" : "-EBADF");
}

static bool may_cancel(const bool *cancelled, ssize_t r)
{
    return r == -ECANCELED && cancelled && *cancelled;
}

static void check_data(const char *what, const unsigned char *got, const unsigned char *want,
                       size_t n)
{
    if (memcmp(got, want, n) == 0)
        return;
    size_t i = 0;
    while (got[i] == want[i])
        i++;
    fz_fail("%s returned wrong data at byte %zu of %zu: 0x%02x, the model says 0x%02x", what,
            i, n, got[i], want[i]);
}

static void check_iov_data(const char *what, const struct iovec *iov, int n,
                           const unsigned char *want, size_t len)
{
    size_t at = 0;
    for (int i = 0; i < n && at < len; i++) {
        size_t k = iov[i].iov_len < len - at ? iov[i].iov_len : len - at;
        check_data(what, iov[i].iov_base, want + at, k);
        at += k;
    }
}

/* Kills a task's flight or turns it into a resync entry after a cancelled write. */
static void end_flight(struct fz_flight *fl, ssize_t r)
{
    if (!fl)
        return;
    if (r == -ECANCELED && fl->write) {
        fl->kind = FL_RESYNC;
        return;
    }
    fz_flight_free(fl);
}

void fz_blocking(struct corio_task *t, const bool *cancelled, int hi, int kind, uint64_t off,
                 size_t len, uint8_t seed, bool misalign, struct fz_in *iovin,
                 unsigned char *buf, unsigned char *expect)
{
    static const char *names[] = {"afs_pread", "afs_pwrite", "afs_preadv", "afs_pwritev"};
    struct fz_handle *h = &fz.h[hi];
    bool write = kind == FZ_PWRITE || kind == FZ_PWRITEV, vec = kind >= FZ_PREADV;
    if (h->direct)
        fz_direct_adjust(misalign, &off, &len);
    fz_trace("#%d%s %s(h%d, len %zu, off %" PRIu64 ")", fz.opno, t ? " task" : "", names[kind],
             hi, len, off);
    if (!h->f)
        return;
    struct iovec iov[FZ_IOVS];
    int iovcnt = 0;
    size_t span = len;
    if (vec)
        iovcnt = fz_make_iov(iovin, iov, buf, len, h->direct, &span);
    if (write) {
        fz_fill(expect, len, seed);
        if (vec) {
            size_t at = 0;
            for (int i = 0; i < iovcnt; i++) {
                memcpy(iov[i].iov_base, expect + at, iov[i].iov_len);
                at += iov[i].iov_len;
            }
        } else {
            memcpy(buf, expect, len);
        }
    }
    int mask = fz_refusal(h, write, (uintptr_t)buf, len, vec ? iov : NULL, iovcnt, off);
    ssize_t r;
    if (mask) {
        switch (kind) {
        case FZ_PREAD: r = afs_pread(h->f, buf, len, off); break;
        case FZ_PWRITE: r = afs_pwrite(h->f, buf, len, off); break;
        case FZ_PREADV: r = afs_preadv(h->f, iov, iovcnt, off); break;
        default: r = afs_pwritev(h->f, iov, iovcnt, off); break;
        }
        check_refused(mask, r, names[kind]);
        return;
    }
    if (write && fz_write_unpredictable(h, off, len)) {
        fz_trace("  skipped: past the write limit");
        return;
    }
    struct fz_model *m = &fz.model[h->path];
    struct fz_flight req;
    do {
        if (write)
            fz_req_write(&req, h->path, off, len, h->append);
        else
            fz_req_read(&req, h->path, off, len);
    } while (settle_any(t, &req));
    ssize_t exp;
    if (write) {
        exp = (ssize_t)len;
        if (cancelled)
            fz_req_keep_old(&req, expect);
        fz_model_write(m, req.woff, expect, len);
    } else {
        exp = (ssize_t)fz_model_read(m, off, expect, len);
    }
    struct fz_flight *fl = NULL;
    if (len) {
        req.kind = FL_CALL;
        fl = fz_flight_new(&req);
    }
    switch (kind) {
    case FZ_PREAD: r = afs_pread(h->f, buf, len, off); break;
    case FZ_PWRITE: r = afs_pwrite(h->f, buf, len, off); break;
    case FZ_PREADV: r = afs_preadv(h->f, iov, iovcnt, off); break;
    default: r = afs_pwritev(h->f, iov, iovcnt, off); break;
    }
    fz_trace("  %s(h%d) = %s (model %s)", names[kind], hi, fz_err(r), fz_err(exp));
    if (r == exp) {
        if (!write && vec) {
            check_iov_data(names[kind], iov, iovcnt, expect, (size_t)r);
            fz_iov_check_gaps(iov, iovcnt, buf, span);
        } else if (!write) {
            check_data(names[kind], buf, expect, (size_t)r);
        }
    } else if (!may_cancel(cancelled, r)) {
        fz_fail("%s(h%d, len %zu, off %" PRIu64 ") = %s, the model says %s", names[kind], hi,
                len, off, fz_err(r), fz_err(exp));
    }
    end_flight(fl, r);
}

static void poll_pending(int hi)
{
    struct fz_handle *h = &fz.h[hi];
    if (!h->pending)
        return;
    ssize_t res = 0;
    int r = afs_last_op(h->f, &res);
    if (r == 1)
        fz_retire(hi, res);
    else if (r != 0)
        fz_fail("afs_last_op(h%d) = %d", hi, r);
}

void fz_pos_io(struct corio_task *t, const bool *cancelled, int hi, bool write, size_t len,
               uint8_t seed, bool misalign)
{
    struct fz_handle *h = &fz.h[hi];
    const char *name = write ? "afs_write" : "afs_read";
    if (h->direct) {
        len -= len % (fz.dio_align > FZ_PAGE ? fz.dio_align : FZ_PAGE);
        if (misalign)
            len |= 1;
    }
    fz_trace("#%d%s %s(h%d, len %zu) at %" PRId64 "%s", fz.opno, t ? " task" : "", name, hi,
             len, h->pos, h->mode == AFS_MODE_ASYNC ? " async" : "");
    if (!h->f)
        return;
    ssize_t r;
    if (!t)
        poll_pending(hi);
    if (h->pending) {
        r = write ? afs_write(h->f, fz.scratch, len) : afs_read(h->f, fz.scratch, len);
        if (r != -EBUSY)
            fz_fail("%s(h%d) with an op pending = %s, expected -EBUSY", name, hi, fz_err(r));
        return;
    }
    if (write)
        fz_fill(h->buf, len, seed);
    int mask = fz_refusal(h, write, (uintptr_t)h->buf, len, NULL, 0, (uint64_t)h->pos);
    if (mask) {
        r = write ? afs_write(h->f, h->buf, len) : afs_read(h->f, h->buf, len);
        check_refused(mask, r, name);
        return;
    }
    if (write && fz_write_unpredictable(h, (uint64_t)h->pos, len)) {
        fz_trace("  skipped: past the write limit");
        return;
    }
    struct fz_model *m = &fz.model[h->path];
    struct fz_flight req;
    do {
        if (write)
            fz_req_write(&req, h->path, (uint64_t)h->pos, len, h->append);
        else
            fz_req_read(&req, h->path, (uint64_t)h->pos, len);
    } while (settle_any(t, &req));
    ssize_t exp;
    int64_t newpos;
    if (write) {
        exp = (ssize_t)len;
        newpos = len ? (int64_t)(req.woff + len) : h->pos;
        if (cancelled)
            fz_req_keep_old(&req, h->buf);
        fz_model_write(m, req.woff, h->buf, len);
    } else {
        exp = (ssize_t)fz_model_read(m, (uint64_t)h->pos, h->expect, len);
        newpos = h->pos + exp;
    }
    struct fz_flight *fl = NULL;
    if (len) {
        req.kind = t || h->mode == AFS_MODE_SYNC ? FL_CALL : FL_POS;
        req.owner = hi;
        fl = fz_flight_new(&req);
    }
    r = write ? afs_write(h->f, h->buf, len) : afs_read(h->f, h->buf, len);
    if (h->mode == AFS_MODE_ASYNC) {
        if (r != 0)
            fz_fail("%s(h%d) async = %s, expected 0 (queued)", name, hi, fz_err(r));
        if (!t) {
            h->pending = true;
            h->pend_write = write;
            h->pend_res = exp;
            h->pend_pos = newpos;
            h->pend_fl = fl;
            return;
        }
        int w = afs_last_op_wait(h->f, &r);
        if (w != 1)
            fz_fail("afs_last_op_wait(h%d) = %d", hi, w);
    }
    fz_trace("  %s(h%d) = %s (model %s)", name, hi, fz_err(r), fz_err(exp));
    if (r == exp) {
        if (!write)
            check_data(name, h->buf, h->expect, (size_t)r);
        h->pos = newpos;
    } else if (!may_cancel(cancelled, r)) {
        fz_fail("%s(h%d, len %zu) = %s, the model says %s", name, hi, len, fz_err(r),
                fz_err(exp));
    }
    h->last_res = r;
    end_flight(fl, r);
}

void fz_seek(struct corio_task *t, int hi, int whence, int64_t off)
{
    struct fz_handle *h = &fz.h[hi];
    fz_trace("#%d%s afs_seek(h%d, %" PRId64 ", %d)", fz.opno, t ? " task" : "", hi, off, whence);
    if (!h->f)
        return;
    if (!t)
        poll_pending(hi);
    int64_t r;
    if (h->pending) {
        if ((r = afs_seek(h->f, off, whence)) != -EBUSY)
            fz_fail("afs_seek(h%d) with an op pending = %s", hi, fz_err(r));
        if ((r = afs_tell(h->f)) != -EBUSY)
            fz_fail("afs_tell(h%d) with an op pending = %s", hi, fz_err(r));
        return;
    }
    struct fz_flight req;
    if (whence == SEEK_END) {
        do
            fz_req_size(&req, h->path);
        while (settle_any(t, &req));
    }
    int64_t base = 0;
    bool bad = false;
    switch (whence) {
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = h->pos; break;
    case SEEK_END: base = (int64_t)fz.model[h->path].size; break;
    default: bad = true;
    }
    if (!bad && ((off > 0 && base > INT64_MAX - off) || base + off < 0))
        bad = true;
    r = afs_seek(h->f, off, whence);
    if (bad ? r != -EINVAL : r != base + off)
        fz_fail("afs_seek(h%d, %" PRId64 ", %d) = %s, the model says %s", hi, off, whence,
                fz_err(r), bad ? "-EINVAL" : fz_err(base + off));
    if (!bad)
        h->pos = r;
    if ((r = afs_tell(h->f)) != h->pos)
        fz_fail("afs_tell(h%d) = %s, the model says %" PRId64, hi, fz_err(r), h->pos);
}

void fz_fsync(const bool *cancelled, int hi, uint8_t b)
{
    struct fz_handle *h = &fz.h[hi];
    unsigned flags = (b & 2) ? 0x80u : (b & 1) ? AFS_FSYNC_DATA : 0;
    fz_trace("#%d afs_fsync(h%d, 0x%x)", fz.opno, hi, flags);
    if (!h->f || fz_skip_fsync())
        return;
    int r = afs_fsync(h->f, flags);
    int exp = flags & 0x80u ? -EINVAL : 0;
    if (r != exp && !may_cancel(cancelled, r))
        fz_fail("afs_fsync(h%d, 0x%x) = %s, expected %s", hi, flags, fz_err(r), fz_err(exp));
}

void fz_close_handle(int hi)
{
    struct fz_handle *h = &fz.h[hi];
    fz_trace("#%d afs_close(h%d)", fz.opno, hi);
    if (h->pending) {
        ssize_t res = 0;
        int r = afs_last_op_wait(h->f, &res);
        if (r != 1)
            fz_fail("afs_last_op_wait(h%d) = %d", hi, r);
        fz_retire(hi, res);
    }
    int r = afs_close(h->f);
    h->f = NULL;
    if (r != 0)
        fz_fail("afs_close(h%d) = %s", hi, fz_err(r));
    for (int i = 0; i < FZ_SLOTS; i++) {
        if (fz.slot[i].busy && fz.slot[i].handle == hi)
            fz_fail("afs_close(h%d) returned before the callback of slot %d ran", hi, i);
        if (fz.slot[i].handle == hi)
            fz.slot[i].closed = true;
    }
}

static void op_open(struct fz_in *in)
{
    uint8_t hb = fz_u8(in), fb = fz_u8(in), mb = fz_u8(in);
    int hi = hb % FZ_HANDLES, path = (hb >> 4) % FZ_PATHS;
    struct fz_handle *h = &fz.h[hi];
    if (h->f)
        fz_close_handle(hi);
    static const int acc_of[] = {AFS_RDONLY, AFS_WRONLY, AFS_RDWR, AFS_RDWR};
    int acc = acc_of[fb & 3];
    int flags = acc;
    if (fb & 4)
        flags |= AFS_CREAT;
    if ((fb & 8) && acc != AFS_RDONLY) /* O_TRUNC with O_RDONLY is unspecified */
        flags |= AFS_TRUNC;
    if ((fb & 16) && (flags & AFS_CREAT))
        flags |= AFS_EXCL;
    if (fb & 32)
        flags |= AFS_APPEND;
    if ((fb & 64) && fz.dio_ok && !(flags & AFS_APPEND)) /* appends to any size: unaligned */
        flags |= AFS_DIRECT;
    enum afs_mode mode = (mb & 1) ? AFS_MODE_ASYNC : AFS_MODE_SYNC;
    bool invalid = false;
    if (fb & 128) {
        invalid = true;
        switch (mb % 4) {
        case 0: flags &= ~acc; break;                      /* no access mode */
        case 1: flags |= AFS_RDONLY | AFS_WRONLY; break;   /* two */
        case 2: flags |= 0x4000; break;                    /* an unknown bit */
        default: mode = (enum afs_mode)3; break;           /* no such mode */
        }
    }
    struct fz_model *m = &fz.model[path];
    int exp = 0;
    if (invalid)
        exp = -EINVAL;
    else if (!m->exists && !(flags & AFS_CREAT))
        exp = -ENOENT;
    else if (m->exists && (flags & AFS_CREAT) && (flags & AFS_EXCL))
        exp = -EEXIST;
    fz_trace("#%d afs_open(h%d, p%d, 0x%x, %s)", fz.opno, hi, path, (unsigned)flags,
             mode == AFS_MODE_ASYNC ? "async" : mode == AFS_MODE_SYNC ? "sync" : "bad");
    if (exp == 0 && (flags & AFS_TRUNC) && m->exists) {
        struct fz_flight req;
        do
            fz_req_all(&req, path);
        while (fz_settle(&req, -1));
    }
    struct afs_file *f = NULL;
    int r = afs_open(fz.ctx, fz.path[path], flags, 0644, mode, &f);
    if (r != exp)
        fz_fail("afs_open(p%d, 0x%x) = %s, the model says %s", path, (unsigned)flags, fz_err(r),
                fz_err(exp));
    if (r < 0)
        return;
    if (!m->exists) {
        m->exists = true;
        fz_model_reset(m);
    } else if (flags & AFS_TRUNC) {
        fz_model_truncate(m, 0);
    }
    h->f = f;
    h->path = path;
    h->flags = flags;
    h->mode = mode;
    h->rd = acc != AFS_WRONLY;
    h->wr = acc != AFS_RDONLY;
    h->append = flags & AFS_APPEND;
    h->direct = flags & AFS_DIRECT;
    h->pos = 0;
    h->last_res = 0;
    h->pending = false;
}

static void op_last(struct fz_in *in, bool wait)
{
    int hi = fz_u8(in) % FZ_HANDLES;
    struct fz_handle *h = &fz.h[hi];
    fz_trace("#%d afs_last_op%s(h%d)", fz.opno, wait ? "_wait" : "", hi);
    if (!h->f)
        return;
    ssize_t res = -12345;
    int r = wait ? afs_last_op_wait(h->f, &res) : afs_last_op(h->f, &res);
    if (h->pending) {
        if (r == 1)
            fz_retire(hi, res);
        else if (r != 0 || wait)
            fz_fail("afs_last_op%s(h%d) = %d with an op pending", wait ? "_wait" : "", hi, r);
        return;
    }
    if (r != 1 || res != h->last_res)
        fz_fail("afs_last_op%s(h%d) = %d, res %s; the model says 1, res %s",
                wait ? "_wait" : "", hi, r, fz_err(res), fz_err(h->last_res));
}

/* The storage ops that change a file: ftruncate and fallocate (allocate, punch a hole,
 * zero a range), checked against the model. */
static void op_storage(int hi, int kind, struct fz_in *in)
{
    struct fz_handle *h = &fz.h[hi];
    uint64_t off = fz_pick_off(in, h->path);
    size_t len = fz_pick_len(in);
    static const int modes[] = {0, AFS_FALLOC_PUNCH_HOLE,
                                AFS_FALLOC_ZERO_RANGE | AFS_FALLOC_KEEP_SIZE};
    int mode = kind > 0 ? modes[kind - 1] : 0;
    fz_trace("#%d %s(h%d, 0x%x, %" PRIu64 ", %zu)", fz.opno,
             kind ? "afs_fallocate" : "afs_ftruncate", hi, (unsigned)mode, off, len);
    if (!h->f || h->pending)
        return;
    struct fz_flight req;
    do
        fz_req_all(&req, h->path);
    while (fz_settle(&req, -1));
    struct fz_model *m = &fz.model[h->path];
    int exp = 0;
    if ((kind && len == 0) || off > (uint64_t)INT64_MAX)
        exp = -EINVAL;
    else if (kind && len > (uint64_t)INT64_MAX - off)
        exp = -EFBIG;
    else if (!h->wr)
        exp = -EBADF;
    int r = kind ? afs_fallocate(h->f, mode, off, len) : afs_ftruncate(h->f, off);
    if (kind && r == -EOPNOTSUPP && exp == 0 && mode)
        return; /* the file system lacks the mode: nothing changed */
    if (r == -EFBIG && exp == 0 && off + len > ((uint64_t)1 << 40))
        return; /* past the file system's size limit (ext4: 16 TiB): nothing changed */
    if (r != exp)
        fz_fail("%s(h%d, 0x%x, %" PRIu64 ", %zu) = %s, the model says %s",
                kind ? "afs_fallocate" : "afs_ftruncate", hi, (unsigned)mode, off, len,
                fz_err(r), fz_err(exp));
    if (r < 0)
        return;
    if (!kind) {
        fz_model_truncate(m, off);
    } else if (mode == 0) {
        if (off + len > m->size)
            fz_model_truncate(m, off + len);
    } else {
        static const unsigned char zeros[FZ_PAGE];
        uint64_t end = off + len < m->size ? off + len : m->size;
        for (uint64_t at = off; at < end;) {
            size_t n = end - at < FZ_PAGE ? (size_t)(end - at) : FZ_PAGE;
            fz_model_write(m, at, zeros, n);
            at += n;
        }
    }
}

void fz_op_file(uint8_t code, struct fz_in *in)
{
    switch (code) {
    case 0: op_open(in); break;
    case 1: {
        int hi = fz_u8(in) % FZ_HANDLES;
        if (fz.h[hi].f)
            fz_close_handle(hi);
        break;
    }
    case 2:
    case 3: {
        uint8_t b = fz_u8(in);
        size_t len = fz_pick_len(in);
        fz_pos_io(NULL, NULL, b % FZ_HANDLES, code == 3, len, fz_u8(in), b & 0x80);
        break;
    }
    case 4:
    case 5: {
        uint8_t b = fz_u8(in), w = fz_u8(in);
        int hi = b % FZ_HANDLES;
        uint64_t o = fz_pick_off(in, fz.h[hi].path);
        int64_t off = (int64_t)(o & (uint64_t)INT64_MAX);
        if (w & 0x40)
            off = -off;
        if ((w & 0x60) == 0x60)
            off = INT64_MIN;
        static const int whences[] = {SEEK_SET, SEEK_CUR, SEEK_END, SEEK_CUR, 7};
        if (code == 5) { /* small relative moves, the common case */
            off = (int64_t)(o % 8192) - ((w & 0x40) ? 4096 : 0);
        }
        fz_seek(NULL, hi, whences[w % 5], off);
        break;
    }
    case 6:
    case 7: op_last(in, code == 7); break;
    case 8:
    case 9: {
        uint8_t b = fz_u8(in);
        int hi = b % FZ_HANDLES;
        uint64_t off = fz_pick_off(in, fz.h[hi].path);
        size_t len = fz_pick_len(in);
        int kind = (code == 9 ? FZ_PREADV : FZ_PREAD) + ((b & 0x10) ? 1 : 0);
        fz_blocking(NULL, NULL, hi, kind, off, len, fz_u8(in), b & 0x20, in, fz.scratch,
                    fz.scratch_expect);
        break;
    }
    case 10: {
        uint8_t b = fz_u8(in);
        fz_fsync(NULL, b % FZ_HANDLES, (uint8_t)(b >> 4));
        break;
    }
    default: {
        uint8_t b = fz_u8(in);
        int hi = b % FZ_HANDLES;
        struct fz_handle *h = &fz.h[hi];
        if ((b >> 5) >= 4) {
            op_storage(hi, (b >> 5) - 4, in);
            break;
        }
        fz_trace("#%d afs_file_size(h%d)", fz.opno, hi);
        if (!h->f)
            break;
        struct fz_flight req;
        do
            fz_req_size(&req, h->path);
        while (fz_settle(&req, -1));
        int64_t r = afs_file_size(h->f);
        if (r != (int64_t)fz.model[h->path].size)
            fz_fail("afs_file_size(h%d) = %s, the model says %" PRIu64, hi, fz_err(r),
                    fz.model[h->path].size);
        break;
    }
    }
}
