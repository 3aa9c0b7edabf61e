/* Streams: afs_fopen/fread/fwrite/fseek/ftell/fflush/fclose against a stdio model.
 *
 * A stream buffers: its writes reach the file later, and its read-ahead holds bytes read
 * earlier. The model applies a stream's writes when afs_fwrite returns, which is what the
 * stream itself shows (its reads see its own writes). For every other user of the file the
 * harness flushes the stream first (afs_fflush: writes done, read-ahead dropped), and before
 * a stream call it waits for every op in flight on the file. */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void fz_flush_streams(int path, int keep)
{
    for (int i = 0; i < FZ_STREAMS; i++) {
        struct fz_stream *st = &fz.st[i];
        if (!st->s || i == keep || !st->dirty || (path >= 0 && st->path != path))
            continue;
        int r = afs_fflush(st->s);
        fz_trace("  afs_fflush(s%d) = %s", i, fz_err(r));
        if (r != 0)
            fz_fail("afs_fflush(s%d) = %s, expected 0", i, fz_err(r));
        st->dirty = false;
    }
}

/* Waits for every op on the stream's file and flushes the other streams on it. */
static void settle_stream(int si)
{
    struct fz_flight req;
    do
        fz_req_all(&req, fz.st[si].path);
    while (fz_settle(&req, si));
    fz.st[si].dirty = true;
}

void fz_close_stream(int si)
{
    struct fz_stream *st = &fz.st[si];
    fz_trace("#%d afs_fclose(s%d)", fz.opno, si);
    settle_stream(si);
    int r = afs_fclose(st->s);
    st->s = NULL;
    if (r != st->err)
        fz_fail("afs_fclose(s%d) = %s, the model says %s", si, fz_err(r), fz_err(st->err));
}

static void op_fopen(struct fz_in *in)
{
    static const char *modes[] = {"r", "w", "a", "r+", "w+", "a+", "wx", "w+x", "rb", "ab+",
                                  "rx", "q"};
    uint8_t b = fz_u8(in), mb = fz_u8(in), ob = fz_u8(in);
    int si = b % FZ_STREAMS, path = (b >> 4) % FZ_PATHS;
    const char *mode = modes[mb % 12];
    if (fz.st[si].s)
        fz_close_stream(si);
    struct afs_stream_options o;
    afs_stream_options_default(&o);
    static const size_t chunk[] = {4096, 8192, 5000 /* rounded up to 8192 */, 16384};
    o.chunk_size = chunk[ob & 3];
    o.chunks = 1 + ((ob >> 2) & 3);
    bool direct = (ob & 0x10) && fz.dio_ok;
    if (direct)
        o.flags = AFS_STREAM_DIRECT;
    bool rd = mode[0] == 'r' || strchr(mode, '+'), wr = mode[0] != 'r' || strchr(mode, '+');
    bool x = strchr(mode, 'x') != NULL, bad = mb % 12 >= 10;
    struct fz_model *m = &fz.model[path];
    int exp = 0;
    if (bad || (direct && wr))
        exp = -EINVAL;
    else if (mode[0] == 'r' && !m->exists)
        exp = -ENOENT;
    else if (x && m->exists)
        exp = -EEXIST;
    fz_trace("#%d afs_fopen(s%d, p%d, \"%s\", chunk %zu x%u%s)", fz.opno, si, path, mode,
             o.chunk_size, o.chunks, direct ? ", direct" : "");
    fz.st[si].path = path;
    if (exp == 0)
        settle_stream(si);
    struct afs_stream *s = NULL;
    int r = afs_fopen_opts(fz.ctx, fz.path[path], mode, &o, &s);
    if (r != exp)
        fz_fail("afs_fopen(p%d, \"%s\") = %s, the model says %s", path, mode, fz_err(r),
                fz_err(exp));
    if (r < 0)
        return;
    if (!m->exists) {
        m->exists = true;
        fz_model_reset(m);
    } else if (mode[0] == 'w') {
        fz_model_truncate(m, 0);
    }
    struct fz_stream *st = &fz.st[si];
    memset(st, 0, sizeof *st);
    st->s = s;
    st->path = path;
    st->rd = rd;
    st->wr = wr;
    st->append = mode[0] == 'a';
    st->pos = st->append && !rd ? (int64_t)m->size : 0; /* "a" at the end, "a+" at 0 */
}

static void sizes(struct fz_in *in, size_t *size, size_t *nmemb)
{
    static const size_t sz[] = {1, 1, 2, 3, 7, 16, 512, 4096};
    uint8_t b = fz_u8(in);
    uint16_t d = fz_u16(in);
    *size = sz[b & 7];
    *nmemb = (b & 0x80) ? 0 : 1 + d % (FZ_MAX_IO / *size);
}

static void op_fread(int si, struct fz_in *in)
{
    size_t size, nmemb;
    sizes(in, &size, &nmemb);
    struct fz_stream *st = &fz.st[si];
    fz_trace("#%d afs_fread(s%d, %zu x %zu)", fz.opno, si, size, nmemb);
    if (!st->s)
        return;
    settle_stream(si);
    struct fz_model *m = &fz.model[st->path];
    size_t want = size * nmemb, got = 0, exp = 0;
    if (nmemb && !st->err && !st->eof) {
        if (!st->rd) {
            st->err = -EBADF;
        } else {
            if (st->pos_at_end) {
                st->pos = (int64_t)m->size;
                st->pos_at_end = false;
            }
            got = fz_model_read(m, (uint64_t)st->pos, fz.scratch_expect, want);
            st->pos += (int64_t)got;
            st->eof = got < want;
            exp = got / size;
        }
    }
    size_t r = afs_fread(fz.scratch, size, nmemb, st->s);
    fz_trace("  = %zu (model %zu)", r, exp);
    if (r != exp)
        fz_fail("afs_fread(s%d, %zu x %zu) = %zu, the model says %zu", si, size, nmemb, r, exp);
    if (memcmp(fz.scratch, fz.scratch_expect, got) != 0) {
        size_t i = 0;
        while (fz.scratch[i] == fz.scratch_expect[i])
            i++;
        fz_fail("afs_fread(s%d) returned wrong data at byte %zu: 0x%02x, the model says 0x%02x",
                si, i, fz.scratch[i], fz.scratch_expect[i]);
    }
}

static void op_fwrite(int si, struct fz_in *in)
{
    size_t size, nmemb;
    sizes(in, &size, &nmemb);
    uint8_t seed = fz_u8(in);
    struct fz_stream *st = &fz.st[si];
    fz_trace("#%d afs_fwrite(s%d, %zu x %zu)", fz.opno, si, size, nmemb);
    if (!st->s)
        return;
    size_t want = size * nmemb, exp = 0;
    if (!st->append && st->wr && (uint64_t)st->pos + want > FZ_WRITE_LIMIT) {
        fz_trace("  skipped: past the write limit");
        return;
    }
    settle_stream(si);
    struct fz_model *m = &fz.model[st->path];
    fz_fill(fz.scratch, want, seed);
    if (nmemb && !st->err) {
        if (!st->wr) {
            st->err = -EBADF;
        } else {
            fz_model_write(m, st->append ? m->size : (uint64_t)st->pos, fz.scratch, want);
            st->pos += (int64_t)want;
            if (st->append && want)
                st->pos_at_end = true;
            exp = nmemb;
        }
    }
    size_t r = afs_fwrite(fz.scratch, size, nmemb, st->s);
    fz_trace("  = %zu (model %zu)", r, exp);
    if (r != exp)
        fz_fail("afs_fwrite(s%d, %zu x %zu) = %zu, the model says %zu", si, size, nmemb, r,
                exp);
}

static void op_fseek(int si, struct fz_in *in)
{
    uint8_t w = fz_u8(in);
    struct fz_stream *st = &fz.st[si];
    uint64_t o = fz_pick_off(in, st->s ? st->path : 0) % ((uint64_t)1 << 40);
    int64_t off = (w & 0x40) ? -(int64_t)o : (int64_t)o;
    static const int whences[] = {SEEK_SET, SEEK_CUR, SEEK_END, SEEK_SET, 9};
    int whence = whences[w % 5];
    fz_trace("#%d afs_fseek(s%d, %" PRId64 ", %d)", fz.opno, si, off, whence);
    if (!st->s)
        return;
    settle_stream(si);
    struct fz_model *m = &fz.model[st->path];
    int exp = 0;
    int64_t base = 0;
    if (whence == SEEK_CUR || whence == SEEK_END) {
        if (st->pos_at_end) {
            st->pos = (int64_t)m->size;
            st->pos_at_end = false;
        }
        base = whence == SEEK_END ? (int64_t)m->size : st->pos;
    } else if (whence != SEEK_SET) {
        exp = -EINVAL;
    }
    if (exp == 0 && base + off < 0)
        exp = -EINVAL;
    int r = afs_fseek(st->s, off, whence);
    if (r != exp)
        fz_fail("afs_fseek(s%d, %" PRId64 ", %d) = %s, the model says %s", si, off, whence,
                fz_err(r), fz_err(exp));
    if (r == 0) {
        st->pos = base + off;
        st->pos_at_end = false;
        st->eof = false;
    }
}

void fz_op_stream(uint8_t code, struct fz_in *in)
{
    if (code == 20) {
        op_fopen(in);
        return;
    }
    uint8_t b = fz_u8(in);
    int si = b % FZ_STREAMS;
    struct fz_stream *st = &fz.st[si];
    switch (code) {
    case 21: op_fread(si, in); break;
    case 22: op_fwrite(si, in); break;
    case 23: op_fseek(si, in); break;
    case 24: {
        fz_trace("#%d afs_ftell(s%d)", fz.opno, si);
        if (!st->s)
            break;
        settle_stream(si);
        if (st->pos_at_end) {
            st->pos = (int64_t)fz.model[st->path].size;
            st->pos_at_end = false;
        }
        int64_t r = afs_ftell(st->s);
        if (r != st->pos)
            fz_fail("afs_ftell(s%d) = %s, the model says %" PRId64, si, fz_err(r), st->pos);
        break;
    }
    case 25: {
        fz_trace("#%d afs_fflush(s%d)", fz.opno, si);
        if (!st->s)
            break;
        settle_stream(si);
        int r = afs_fflush(st->s);
        if (r != 0)
            fz_fail("afs_fflush(s%d) = %s, expected 0", si, fz_err(r));
        st->dirty = false;
        break;
    }
    case 26:
        if (st->s)
            fz_close_stream(si);
        break;
    default: {
        fz_trace("#%d afs_feof/afs_ferror(s%d)%s", fz.opno, si, (b & 0x80) ? ", afs_clearerr" : "");
        if (!st->s)
            break;
        int eof = afs_feof(st->s), err = afs_ferror(st->s);
        if (!!eof != st->eof || err != st->err)
            fz_fail("s%d: afs_feof %d, afs_ferror %s; the model says %d, %s", si, eof,
                    fz_err(err), st->eof, fz_err(st->err));
        if (b & 0x80) {
            afs_clearerr(st->s);
            st->eof = false;
            st->err = 0;
        }
        break;
    }
    }
}
