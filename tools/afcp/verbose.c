/* afcp: -v in cp's order, for both front ends. cp copies the tree depth first, a directory
 * before its entries, and prints each entry's lines as it goes: "'SRC' -> 'DST'" when it
 * starts the copy, "removed 'DST'" where it removes a destination (before the line, or
 * after it where -f removes one it could not open), and its errors after the line (on
 * stderr, stdout flushed first). afcp copies the entries of a tree on every scheduler at
 * once, and they end in any order. So the walker numbers each entry when it meets it, in
 * the order cp would copy it (afcp_vnum); whoever copies the entry, on any thread, hands in
 * its lines when cp would print them (afcp_vline, afcp_vremoved) and says when it is done
 * with it (afcp_vend). The task copying an entry says which one it is (afcp_vtask), so that
 * its messages (afcp_err, afcp_note) go with the entry's lines (afcp_vmessage). What the
 * lowest entry not yet done hands in goes out at once; what a later entry hands in is kept,
 * in a ring indexed by its number, until every entry before it is done. So stdout and
 * stderr show cp's lines and messages in cp's order, one file (2>&1) too. A file copied
 * slowly holds back what comes after it, as it would hold back cp: the walker waits
 * (afcp_vbehind) once VBEHIND_MAX entries are numbered and not yet done, so what is kept
 * stays bounded. Without -v nothing is numbered and messages go out at once. */
#ifndef _WIN32
#define _GNU_SOURCE
#endif
#include "afcp.h"

#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <pthread.h>
#endif

enum { VRING_MIN = 1024, VBEHIND_MAX = 1 << 16 };

/* What an entry handed in while an earlier one was not done: chunks of text, each a stream
 * byte ('o' stdout, 'e' stderr), the text and its NUL, one after the other. */
struct vheld {
    char  *buf;
    size_t len;
    int    done;
};

/* The tasks copying an entry, and which (linear probing; a NULL task is a free slot). */
struct vtask {
    struct corio_task *t;
    uint64_t           n;
};

/* Everything is done under the lock; what is printed leaves under it, in order, whichever
 * thread ends an entry. The Windows front end runs its tasks on one thread; its pool
 * threads print nothing. */
#ifdef _WIN32
static SRWLOCK vlock = SRWLOCK_INIT;
static void vlock_take(void) { AcquireSRWLockExclusive(&vlock); }
static void vlock_give(void) { ReleaseSRWLockExclusive(&vlock); }
#else
static pthread_mutex_t vlock = PTHREAD_MUTEX_INITIALIZER;
static void vlock_take(void) { pthread_mutex_lock(&vlock); }
static void vlock_give(void) { pthread_mutex_unlock(&vlock); }
#endif
static struct vheld *vring;     /* vcap slots (a power of two), number n at n & (vcap - 1) */
static size_t        vcap;
static uint64_t      vnext = 1; /* the next number to give out */
static uint64_t      vout = 1;  /* the lowest number not yet done */
static struct vtask *vtasks;    /* vtasks_cap slots (a power of two), at most half used */
static size_t        vtasks_cap, vtasks_len;

static void *vrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) {
        fputs("afcp: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

/* Room for the numbers vout..vnext (the lock held). */
static void vgrow(void)
{
    size_t cap = vcap ? 2 * vcap : VRING_MIN;
    struct vheld *ring = vrealloc(NULL, cap * sizeof *ring);
    memset(ring, 0, cap * sizeof *ring);
    for (uint64_t n = vout; n < vnext; n++)
        ring[n & (cap - 1)] = vring[n & (vcap - 1)];
    free(vring);
    vring = ring;
    vcap = cap;
}

/* One chunk on its stream, whole, the progress bar's line (stderr) cleared first; stdout is
 * flushed before stderr is written, as gnulib's error() does for cp. */
static void vprint(char stream, const char *text)
{
    afcp_lock_stream(stderr);
    afcp_lock_stream(stdout);
    afcp_progress_clear();
    if (stream == 'o') {
        fputs(text, stdout);
    } else {
        fflush(stdout);
        fputs(text, stderr);
    }
    afcp_unlock_stream(stdout);
    afcp_unlock_stream(stderr);
}

static void vprint_held(struct vheld *h)
{
    for (size_t at = 0; at < h->len; at += strlen(h->buf + at + 1) + 2)
        vprint(h->buf[at], h->buf + at + 1);
    free(h->buf);
    h->buf = NULL;
    h->len = 0;
}

/* A chunk for entry n (the lock held): out now when n is the lowest entry not done (or not
 * numbered, or done and printed already), else kept with n's others. */
static void vput_locked(uint64_t n, char stream, const char *text)
{
    if (!n || n <= vout || n >= vnext) {
        vprint(stream, text);
        return;
    }
    struct vheld *h = &vring[n & (vcap - 1)];
    size_t len = strlen(text);
    h->buf = vrealloc(h->buf, h->len + len + 2);
    h->buf[h->len] = stream;
    memcpy(h->buf + h->len + 1, text, len + 1);
    h->len += len + 2;
}

static void vput(uint64_t n, char stream, const char *text)
{
    vlock_take();
    vput_locked(n, stream, text);
    vlock_give();
}

uint64_t afcp_vnum(void)
{
    if (!afcp.o.verbose)
        return 0;
    vlock_take();
    if (vnext - vout + 1 > vcap)
        vgrow();
    uint64_t n = vnext++;
    vring[n & (vcap - 1)] = (struct vheld){NULL, 0, 0};
    vlock_give();
    return n;
}

void afcp_vline(uint64_t n, const char *spath, const char *dpath)
{
    if (!afcp.o.verbose)
        return;
    /* afcp_q's results live for a few calls on this thread: both fit. */
    const char *s = afcp_q(spath), *d = afcp_q(dpath);
    size_t a = strlen(s), b = strlen(d);
    char *line = afcp_xmalloc(a + b + 6);
    memcpy(line, s, a);
    memcpy(line + a, " -> ", 4);
    memcpy(line + a + 4, d, b);
    memcpy(line + a + 4 + b, "\n", 2);
    vput(n, 'o', line);
    free(line);
}

void afcp_vremoved(uint64_t n, const char *dpath)
{
    if (!afcp.o.verbose)
        return;
    const char *d = afcp_q(dpath);
    size_t b = strlen(d);
    char *line = afcp_xmalloc(b + 10);
    memcpy(line, "removed ", 8);
    memcpy(line + 8, d, b);
    memcpy(line + 8 + b, "\n", 2);
    vput(n, 'o', line);
    free(line);
}

void afcp_vend(uint64_t n)
{
    if (!afcp.o.verbose || !n)
        return;
    vlock_take();
    if (n != vout) { /* an earlier entry is still being copied: what it prints goes first */
        vring[n & (vcap - 1)].done = 1;
        vlock_give();
        return;
    }
    /* The entries after it that were kept: out in order, up to one not done yet, whose
     * chunks from now on go out as they come. */
    for (vout++; vout < vnext; vout++) {
        struct vheld *h = &vring[vout & (vcap - 1)];
        vprint_held(h);
        if (!h->done)
            break;
        h->done = 0;
    }
    vlock_give();
}

int afcp_vbehind(void)
{
    if (!afcp.o.verbose)
        return 0;
    vlock_take();
    int behind = vnext - vout > VBEHIND_MAX;
    vlock_give();
    return behind;
}

/* The slot of task t in vtasks, or the free one where it would go (the lock held). */
static size_t vtask_slot(const struct corio_task *t)
{
    size_t mask = vtasks_cap - 1;
    size_t i = (size_t)(((uint64_t)(uintptr_t)t >> 4) * 0x9E3779B97F4A7C15ull >> 32) & mask;
    while (vtasks[i].t && vtasks[i].t != t)
        i = (i + 1) & mask;
    return i;
}

uint64_t afcp_vtask(struct corio_task *t, uint64_t n)
{
    if (!afcp.o.verbose || !t)
        return 0;
    vlock_take();
    if (2 * (vtasks_len + 1) > vtasks_cap) {
        struct vtask *old = vtasks;
        size_t cap = vtasks_cap;
        vtasks_cap = cap ? 2 * cap : 256;
        vtasks = vrealloc(NULL, vtasks_cap * sizeof *vtasks);
        memset(vtasks, 0, vtasks_cap * sizeof *vtasks);
        for (size_t i = 0; i < cap; i++)
            if (old[i].t)
                vtasks[vtask_slot(old[i].t)] = old[i];
        free(old);
    }
    size_t i = vtask_slot(t);
    uint64_t prev = vtasks[i].t ? vtasks[i].n : 0;
    if (n) {
        vtasks_len += !vtasks[i].t;
        vtasks[i] = (struct vtask){t, n};
    } else if (vtasks[i].t) {
        /* Removed: the entries after it that probing passed it for move back (linear
         * probing's deletion without tombstones). */
        vtasks[i].t = NULL;
        vtasks_len--;
        size_t mask = vtasks_cap - 1;
        for (size_t j = (i + 1) & mask; vtasks[j].t; j = (j + 1) & mask) {
            struct vtask e = vtasks[j];
            vtasks[j].t = NULL;
            vtasks[vtask_slot(e.t)] = e;
        }
    }
    vlock_give();
    return prev;
}

int afcp_vmessage(const char *text)
{
    if (!afcp.o.verbose)
        return 0;
    struct corio_task *t = corio_current();
    if (!t)
        return 0;
    vlock_take();
    uint64_t n = 0;
    if (vtasks_len) {
        size_t i = vtask_slot(t);
        n = vtasks[i].t ? vtasks[i].n : 0;
    }
    if (n)
        vput_locked(n, 'e', text);
    vlock_give();
    return n != 0;
}
