/* afcp: -v in cp's order. cp prints "'SRC' -> 'DST'" for each entry as it copies the tree,
 * depth first, a directory before its entries; afcp copies the entries of a tree on every
 * scheduler at once, and they end in any order. So the walker numbers each entry when it
 * meets it, in the order cp would copy it (afcp_vnum), and whoever ends the entry, on any
 * thread, hands in its line (or none) under that number (afcp_vdone). A line is printed
 * once every entry numbered before it is done; the lines that wait are kept here, in a ring
 * indexed by their number. A file copied slowly holds back the lines after it, as it would
 * hold back cp: the walker waits (afcp_vbehind) once VBEHIND_MAX entries are numbered and
 * not yet printed, so what is kept stays bounded. Without -v nothing is numbered. */
#define _GNU_SOURCE
#include "afcp.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { VRING_MIN = 1024, VBEHIND_MAX = 1 << 16 };

struct vheld {
    char *paths; /* "SRC\0DST" to print, or NULL: nothing */
    int   done;
};

static pthread_mutex_t vlock = PTHREAD_MUTEX_INITIALIZER;
static struct vheld   *vring;     /* vcap slots (a power of two), number n at n & (vcap - 1) */
static size_t          vcap;
static uint64_t        vnext = 1; /* the next number to give out */
static uint64_t        vout = 1;  /* the lowest number not yet printed */

/* Room for the numbers vout..vnext (the lock held). */
static void vgrow(void)
{
    size_t cap = vcap ? 2 * vcap : VRING_MIN;
    struct vheld *ring = calloc(cap, sizeof *ring);
    if (!ring) {
        fputs("afcp: out of memory\n", stderr);
        exit(1);
    }
    for (uint64_t n = vout; n < vnext; n++)
        ring[n & (cap - 1)] = vring[n & (vcap - 1)];
    free(vring);
    vring = ring;
    vcap = cap;
}

uint64_t afcp_vnum(void)
{
    if (!afcp.o.verbose)
        return 0;
    pthread_mutex_lock(&vlock);
    if (vnext - vout + 1 > vcap)
        vgrow();
    uint64_t n = vnext++;
    vring[n & (vcap - 1)] = (struct vheld){NULL, 0};
    pthread_mutex_unlock(&vlock);
    return n;
}

void afcp_vdone(uint64_t n, const char *spath, const char *dpath)
{
    if (!afcp.o.verbose)
        return;
    if (!n) { /* not numbered: printed as it comes */
        if (spath)
            afcp_verbose("'%s' -> '%s'", spath, dpath);
        return;
    }
    pthread_mutex_lock(&vlock);
    if (n != vout) { /* an earlier entry is still being copied: kept until it is done */
        char *paths = NULL;
        if (spath) {
            size_t a = strlen(spath) + 1, b = strlen(dpath) + 1;
            paths = afcp_xmalloc(a + b);
            memcpy(paths, spath, a);
            memcpy(paths + a, dpath, b);
        }
        vring[n & (vcap - 1)] = (struct vheld){paths, 1};
        pthread_mutex_unlock(&vlock);
        return;
    }
    /* Printed under the lock: the lines leave in their order, whichever thread ends them. */
    if (spath)
        afcp_verbose("'%s' -> '%s'", spath, dpath);
    for (vout++; vout < vnext && vring[vout & (vcap - 1)].done; vout++) {
        struct vheld *h = &vring[vout & (vcap - 1)];
        if (h->paths)
            afcp_verbose("'%s' -> '%s'", h->paths, h->paths + strlen(h->paths) + 1);
        free(h->paths);
        *h = (struct vheld){NULL, 0};
    }
    pthread_mutex_unlock(&vlock);
}

int afcp_vbehind(void)
{
    if (!afcp.o.verbose)
        return 0;
    pthread_mutex_lock(&vlock);
    int behind = vnext - vout > VBEHIND_MAX;
    pthread_mutex_unlock(&vlock);
    return behind;
}
