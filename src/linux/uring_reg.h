/* The io_uring backend's registrations (fixed buffers, a sparse table of fixed files), its
 * cap on the kernel's I/O workers and its rule for offloading direct I/O (IOSQE_ASYNC).
 * src/linux/uring_reg.c; used by src/linux/uring.c only. */
#ifndef AFS_URING_REG_H
#define AFS_URING_REG_H

#include "internal.h"

#include <liburing.h>

/* One registered buffer: [start, end), the kernel's buffer index. Sorted by start. */
struct afs__ureg_range {
    uintptr_t start, end;
    unsigned  index;
};

/* The offload rule (see afs__ureg_submit and uring_reg.c): the two-way rule of tune.h, way 1
 * offloading, counting direct ops issued and scoring the context's completions. */
struct afs__ureg_tune {
    uint8_t          mode;       /* URING_OFFLOAD_AUTO, _NEVER, _ALWAYS */
    struct afs__tune rule;       /* AUTO's */
    unsigned         io_workers; /* the cap set on io-wq's bounded workers; 0: none */
};

struct afs__ureg {
    struct afs__ureg_range *ranges; /* NULL: no registered buffers */
    unsigned                nranges;
    unsigned               *free_slots; /* NULL: no file table; else a stack of free slots */
    unsigned                nfree, nslots;
    struct afs__ureg_tune   tune;
};

enum { URING_OFFLOAD_AUTO, URING_OFFLOAD_NEVER, URING_OFFLOAD_ALWAYS };

/* Setup (the offload mode, the io-wq cap from ctx->cfg) and teardown (before the ring's). */
void afs__ureg_init(struct afs__ureg *r, struct io_uring *ring, const struct afs_ctx *ctx);
void afs__ureg_fini(struct afs__ureg *r);

/* Buffers and files; the return values are those of struct afs__backend's hooks. */
int  afs__ureg_buffers(struct afs__ureg *r, struct io_uring *ring, const struct iovec *iov,
                       unsigned nr, char *why, size_t why_len);
void afs__ureg_unbuffers(struct afs__ureg *r, struct io_uring *ring);
int  afs__ureg_files(struct afs__ureg *r, struct io_uring *ring, struct afs_ctx *ctx,
                     unsigned slots, char *why, size_t why_len);
void afs__ureg_unfiles(struct afs__ureg *r, struct io_uring *ring, struct afs_ctx *ctx);
/* f was opened (gets a slot if it is AFS_DIRECT and one is free) / is about to be closed. */
void afs__ureg_file_open(struct afs__ureg *r, struct io_uring *ring, struct afs_file *f);
void afs__ureg_file_close(struct afs__ureg *r, struct io_uring *ring, struct afs_file *f);

/* The registered buffer holding [buf, buf + len) whole, or -1. */
static inline int afs__ureg_buf_index(const struct afs__ureg *r, const void *buf, size_t len)
{
    if (!r->ranges)
        return -1;
    uintptr_t b = (uintptr_t)buf;
    /* The last range starting at or below b. */
    unsigned lo = 0, hi = r->nranges;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (r->ranges[mid].start <= b)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return -1;
    const struct afs__ureg_range *g = &r->ranges[lo - 1];
    return (b + len >= b && b + len <= g->end) ? (int)g->index : -1;
}

/* Submits what the SQ holds (wait_nr 0) or submits and waits, as afs__uring_enter_real,
 * through afs__sys.uring_enter; marks the direct reads and writes among the SQEs (direct:
 * how many there are) IOSQE_ASYNC when the offload rule says so, and closes the rule's
 * window when its time is up. */
int afs__ureg_submit(struct afs__ureg *r, struct afs_ctx *ctx, struct io_uring *ring,
                     unsigned direct, unsigned wait_nr, struct __kernel_timespec *ts);

void afs__ureg_offload_info(const struct afs__ureg *r, struct afs_offload *out);

#endif
