/* The sparse file model of the fuzzer (see model.h). */
#define _GNU_SOURCE
#include "model.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void *xalloc(size_t n)
{
    void *p = calloc(1, n);
    if (!p) {
        fprintf(stderr, "asyncfs fuzz: out of memory\n");
        abort();
    }
    return p;
}

/* Index of the first page with idx >= want. */
static size_t lower(const struct fz_model *m, uint64_t want)
{
    size_t lo = 0, hi = m->npages;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->pages[mid].idx < want)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static const unsigned char *page_get(const struct fz_model *m, uint64_t idx)
{
    size_t i = lower(m, idx);
    return i < m->npages && m->pages[i].idx == idx ? m->pages[i].data : NULL;
}

static unsigned char *page_make(struct fz_model *m, uint64_t idx)
{
    size_t i = lower(m, idx);
    if (i < m->npages && m->pages[i].idx == idx)
        return m->pages[i].data;
    if (m->npages == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 64;
        struct fz_page *p = realloc(m->pages, cap * sizeof *p);
        if (!p) {
            fprintf(stderr, "asyncfs fuzz: out of memory\n");
            abort();
        }
        m->pages = p;
        m->cap = cap;
    }
    memmove(m->pages + i + 1, m->pages + i, (m->npages - i) * sizeof *m->pages);
    m->pages[i].idx = idx;
    m->pages[i].data = xalloc(FZ_PAGE);
    m->npages++;
    return m->pages[i].data;
}

void fz_model_reset(struct fz_model *m)
{
    for (size_t i = 0; i < m->npages; i++)
        free(m->pages[i].data);
    free(m->pages);
    m->pages = NULL;
    m->npages = m->cap = 0;
    m->size = 0;
}

void fz_model_write(struct fz_model *m, uint64_t off, const void *buf, size_t len)
{
    const unsigned char *src = buf;
    while (len > 0) {
        uint64_t idx = off / FZ_PAGE;
        size_t in = (size_t)(off % FZ_PAGE);
        size_t n = FZ_PAGE - in < len ? FZ_PAGE - in : len;
        memcpy(page_make(m, idx) + in, src, n);
        src += n;
        off += n;
        len -= n;
    }
    if (off > m->size)
        m->size = off;
}

void fz_model_peek(const struct fz_model *m, uint64_t off, void *buf, size_t len)
{
    unsigned char *dst = buf;
    while (len > 0) {
        uint64_t idx = off / FZ_PAGE;
        size_t in = (size_t)(off % FZ_PAGE);
        size_t n = FZ_PAGE - in < len ? FZ_PAGE - in : len;
        const unsigned char *p = page_get(m, idx);
        if (p)
            memcpy(dst, p + in, n);
        else
            memset(dst, 0, n);
        dst += n;
        off += n;
        len -= n;
    }
}

size_t fz_model_read(const struct fz_model *m, uint64_t off, void *buf, size_t len)
{
    if (off >= m->size)
        return 0;
    if (len > m->size - off)
        len = (size_t)(m->size - off);
    fz_model_peek(m, off, buf, len);
    return len;
}

void fz_model_truncate(struct fz_model *m, uint64_t size)
{
    if (size < m->size) {
        uint64_t first = (size + FZ_PAGE - 1) / FZ_PAGE;
        size_t i = lower(m, first), keep = i;
        for (; i < m->npages; i++)
            free(m->pages[i].data);
        m->npages = keep;
        if (size % FZ_PAGE) {
            size_t k = lower(m, size / FZ_PAGE);
            if (k < m->npages && m->pages[k].idx == size / FZ_PAGE)
                memset(m->pages[k].data + size % FZ_PAGE, 0, FZ_PAGE - size % FZ_PAGE);
        }
    }
    m->size = size;
}

static char msg[512];

/* Reads [off, off+len) of the file in full (pread may be short on a signal). */
static int read_full(int fd, unsigned char *buf, size_t len, uint64_t off)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, buf + got, len - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static const char *diff_page(const unsigned char *want, const unsigned char *got, size_t n,
                             uint64_t base)
{
    for (size_t i = 0; i < n; i++) {
        if (want[i] != got[i]) {
            snprintf(msg, sizeof msg,
                     "file byte at %" PRIu64 " is 0x%02x, the model says 0x%02x",
                     base + i, got[i], want[i]);
            return msg;
        }
    }
    return NULL;
}

/* Data regions past this many bytes are not read (a file system without holes reports
 * the whole file as data; reading 4 GiB of zeros would stall the fuzzer). */
#define SCAN_BUDGET ((uint64_t)64 << 20)

const char *fz_model_compare(const struct fz_model *m, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(msg, sizeof msg, "fstat: %s", strerror(errno));
        return msg;
    }
    if ((uint64_t)st.st_size != m->size) {
        snprintf(msg, sizeof msg, "file size is %" PRIu64 ", the model says %" PRIu64,
                 (uint64_t)st.st_size, m->size);
        return msg;
    }
    static unsigned char got[FZ_PAGE], zero[FZ_PAGE];
    const char *d;
    for (size_t i = 0; i < m->npages; i++) {
        uint64_t base = m->pages[i].idx * FZ_PAGE;
        if (base >= m->size)
            break;
        size_t n = m->size - base < FZ_PAGE ? (size_t)(m->size - base) : FZ_PAGE;
        if (read_full(fd, got, n, base) < 0) {
            snprintf(msg, sizeof msg, "cannot read the file at %" PRIu64, base);
            return msg;
        }
        if ((d = diff_page(m->pages[i].data, got, n, base)))
            return d;
    }
    /* Everywhere else the file must read as zeros: visit what the file system calls data. */
#ifdef SEEK_DATA
    uint64_t budget = SCAN_BUDGET;
    off_t pos = 0;
    while ((uint64_t)pos < m->size && budget > 0) {
        off_t data = lseek(fd, pos, SEEK_DATA);
        if (data < 0)
            break; /* ENXIO: no more data */
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0)
            hole = (off_t)m->size;
        for (uint64_t p = (uint64_t)data / FZ_PAGE * FZ_PAGE; p < (uint64_t)hole && budget > 0;
             p += FZ_PAGE) {
            if (page_get(m, p / FZ_PAGE))
                continue;
            size_t n = m->size - p < FZ_PAGE ? (size_t)(m->size - p) : FZ_PAGE;
            if (read_full(fd, got, n, p) < 0) {
                snprintf(msg, sizeof msg, "cannot read the file at %" PRIu64, p);
                return msg;
            }
            if ((d = diff_page(zero, got, n, p)))
                return d;
            budget -= budget < FZ_PAGE ? budget : FZ_PAGE;
        }
        pos = hole;
    }
#else
    (void)zero;
#endif
    return NULL;
}
