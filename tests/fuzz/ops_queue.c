/* The op API (3.3): many ops in flight at explicit offsets, submit, wait, cancel. */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *names[] = {"read", "write", "readv", "writev", "fsync"};

static void slot_cb(struct afs_op *op)
{
    struct fz_slot *s = op->data;
    int si = (int)(s - fz.slot);
    if (!s->busy)
        fz_fail("slot %d: a callback ran for an op that is not in flight (twice?)", si);
    s->busy = false;
    fz.callbacks++;
    ssize_t r = op->result;
    fz_trace("  slot %d %s done: %s (model %s%s)", si, names[s->code], fz_err(r),
             fz_err(s->expect), s->cancelled ? ", cancelled" : "");
    struct fz_flight *fl = s->fl;
    s->fl = NULL;
    if (r == -ECANCELED && s->cancelled) {
        if (fl && fl->write) {
            fl->kind = FL_RESYNC; /* applied in part, in full or not at all */
            return;
        }
    } else if (r != s->expect) {
        fz_fail("slot %d: queued %s completed with %s, the model says %s", si, names[s->code],
                fz_err(r), fz_err(s->expect));
    } else if (s->code == 0 || s->code == 2) {
        size_t at = 0;
        for (int i = 0; i < s->iovcnt && at < (size_t)r; i++) {
            size_t n = s->iov[i].iov_len < (size_t)r - at ? s->iov[i].iov_len : (size_t)r - at;
            const unsigned char *got = s->iov[i].iov_base;
            for (size_t k = 0; k < n; k++)
                if (got[k] != s->expect_buf[at + k])
                    fz_fail("slot %d: queued %s returned wrong data at byte %zu: 0x%02x, the "
                            "model says 0x%02x", si, names[s->code], at + k, got[k],
                            s->expect_buf[at + k]);
            at += n;
        }
    }
    if (fl)
        fz_flight_free(fl);
}

static int queue(struct fz_slot *s, struct afs_file *f, int code, void *buf, size_t len,
                 uint64_t off, unsigned flags)
{
    switch (code) {
    case 0: return afs_queue_read(&s->op, f, buf, len, off, slot_cb, s);
    case 1: return afs_queue_write(&s->op, f, buf, len, off, slot_cb, s);
    case 2: return afs_queue_readv(&s->op, f, s->iov, s->iovcnt, off, slot_cb, s);
    case 3: return afs_queue_writev(&s->op, f, s->iov, s->iovcnt, off, slot_cb, s);
    default: return afs_queue_fsync(&s->op, f, flags, slot_cb, s);
    }
}

static void op_queue(int code, struct fz_in *in)
{
    uint8_t b = fz_u8(in);
    int si = b % FZ_SLOTS, hi = (b >> 3) % FZ_HANDLES;
    bool misalign = b & 0x80;
    struct fz_slot *s = &fz.slot[si];
    struct fz_handle *h = &fz.h[hi];
    uint64_t off = 0;
    size_t len = 0;
    uint8_t seed = 0;
    unsigned flags = 0;
    if (code == 4) {
        uint8_t fb = fz_u8(in);
        flags = (fb & 2) ? 0x80u : (fb & 1) ? AFS_FSYNC_DATA : 0;
    } else {
        off = fz_pick_off(in, h->path);
        len = fz_pick_len(in);
        seed = fz_u8(in);
        if (h->direct)
            fz_direct_adjust(misalign, &off, &len);
    }
    fz_trace("#%d queue %s slot %d (h%d, len %zu, off %" PRIu64 ")", fz.opno, names[code], si,
             hi, len, off);
    if (!h->f || (code == 4 && fz_skip_fsync()))
        return;
    int r;
    if (s->busy) {
        /* The op is the library's: only its fields are checked, its buffer is not touched. */
        r = queue(s, h->f, code, fz.scratch, len, off, flags);
        if (r != -EBUSY)
            fz_fail("queueing slot %d while it is in flight = %s, expected -EBUSY", si,
                    fz_err(r));
        return;
    }
    bool write = code == 1 || code == 3, vec = code == 2 || code == 3;
    size_t span = len;
    if (vec) {
        s->iovcnt = fz_make_iov(in, s->iov, s->buf, len, h->direct, &span);
    } else {
        s->iov[0].iov_base = s->buf;
        s->iov[0].iov_len = len;
        s->iovcnt = 1;
    }
    if (write) {
        fz_fill(s->expect_buf, len, seed);
        size_t at = 0;
        for (int i = 0; i < s->iovcnt; i++) {
            memcpy(s->iov[i].iov_base, s->expect_buf + at, s->iov[i].iov_len);
            at += s->iov[i].iov_len;
        }
    }
    ssize_t exp = 0;
    struct fz_flight req;
    if (code == 4) {
        if (flags & 0x80u) {
            r = queue(s, h->f, code, NULL, 0, 0, flags);
            if (r != -EINVAL)
                fz_fail("afs_queue_fsync(0x80) = %s, expected -EINVAL", fz_err(r));
            return;
        }
        memset(&req, 0, sizeof req);
    } else {
        int mask = fz_refusal(h, write, (uintptr_t)s->buf, len, vec ? s->iov : NULL,
                              s->iovcnt, off);
        if (mask) {
            r = queue(s, h->f, code, s->buf, len, off, flags);
            if (!((r == -EINVAL && (mask & 1)) || (r == -EBADF && (mask & 2))))
                fz_fail("afs_queue_%s(h%d, len %zu, off %" PRIu64 ") = %s, the model says it "
                        "is refused", names[code], hi, len, off, fz_err(r));
            return;
        }
        if (write && fz_write_unpredictable(h, off, len)) {
            fz_trace("  skipped: past the write limit");
            return;
        }
        struct fz_model *m = &fz.model[h->path];
        do {
            if (write)
                fz_req_write(&req, h->path, off, len, h->append);
            else
                fz_req_read(&req, h->path, off, len);
        } while (fz_settle(&req, -1));
        if (write) {
            exp = (ssize_t)len;
            fz_req_keep_old(&req, s->expect_buf);
            fz_model_write(m, req.woff, s->expect_buf, len);
        } else {
            exp = (ssize_t)fz_model_read(m, off, s->expect_buf, len);
        }
    }
    s->fl = NULL;
    if (len) {
        req.kind = FL_OP;
        req.owner = si;
        s->fl = fz_flight_new(&req);
    } else {
        free(req.old);
        free(req.new_);
    }
    s->busy = true;
    s->cancelled = false;
    s->closed = false;
    s->code = code;
    s->handle = hi;
    s->expect = exp;
    r = queue(s, h->f, code, s->buf, len, off, flags);
    if (r != 0)
        fz_fail("afs_queue_%s(h%d, len %zu, off %" PRIu64 ") = %s, expected 0", names[code], hi,
                len, off, fz_err(r));
}

void fz_op_queue(uint8_t code, struct fz_in *in)
{
    switch (code) {
    case 12:
    case 13:
    case 14:
    case 15:
    case 16: op_queue(code - 12, in); break;
    case 17: {
        fz_trace("#%d afs_ctx_submit", fz.opno);
        int r = afs_ctx_submit(fz.ctx);
        if (r < 0)
            fz_fail("afs_ctx_submit = %s", fz_err(r));
        break;
    }
    case 18: {
        uint8_t b = fz_u8(in);
        static const int64_t timeouts[] = {0, 1000000, -1, -1};
        fz_trace("#%d afs_ctx_wait(%u, %" PRId64 ")", fz.opno, b & 3u, timeouts[(b >> 2) & 3]);
        fz_ctx_wait(b & 3u, timeouts[(b >> 2) & 3]);
        break;
    }
    default: {
        int si = fz_u8(in) % FZ_SLOTS;
        struct fz_slot *s = &fz.slot[si];
        if (fz_skip_cancel()) {
            fz_trace("#%d afs_cancel(slot %d): skipped on posix-aio (known bug)", fz.opno, si);
            break;
        }
        if (FZ_EXCLUDE_CANCEL_AFTER_CLOSE && s->closed) {
            fz_trace("#%d afs_cancel(slot %d): skipped (its file is closed: known bug)", fz.opno,
                     si);
            break;
        }
        int r = afs_cancel(&s->op);
        fz_trace("#%d afs_cancel(slot %d) = %s%s", fz.opno, si, fz_err(r),
                 s->busy ? "" : " (not in flight)");
        if (s->busy) {
            if (r != 0 && r != -EALREADY)
                fz_fail("afs_cancel(slot %d) in flight = %s, expected 0 or -EALREADY", si,
                        fz_err(r));
            if (r == 0)
                s->cancelled = true;
        } else if (r != -EALREADY && r != -EINVAL) {
            /* -EALREADY: its callback ran; -EINVAL: the slot's op was never queued. */
            fz_fail("afs_cancel(slot %d) not in flight = %s, expected -EALREADY or -EINVAL", si,
                    fz_err(r));
        }
        break;
    }
    }
}
