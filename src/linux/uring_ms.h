/* The io_uring backend's multishot socket ops: one multishot accept per listener, and one
 * multishot receive per stream socket into a ring of buffers the context provides to the
 * kernel (IORING_REGISTER_PBUF_RING). The core's ops stay one-shot: an accept or receive op
 * is parked on its socket and completed from what the multishot delivered (the new
 * descriptor; the bytes, copied from the ring's buffer into the op's). Whatever the kernel
 * refuses falls back to the plain one-shot ops, never to an error.
 * src/linux/uring_ms.c; used by src/linux/uring.c only. */
#ifndef AFS_URING_MS_H
#define AFS_URING_MS_H

#include "internal.h"

#include <liburing.h>

/* user_data of the multishot requests: the socket's state | tag (states are 8-aligned, ops
 * too, and uring.c's own tags are small numbers or end in 5). */
#define AFS__UMS_TAG_RECV   6u
#define AFS__UMS_TAG_ACCEPT 7u

/* afs__op.be[0] of a socket op on io_uring: parked on its socket's multishot (be[1] is the
 * socket's state), or made as a plain receive of a socket that has a state. */
#define AFS__UMS_PARKED 0x756d7350u
#define AFS__UMS_PLAIN  0x756d732du

struct afs__ums {
    bool      plain;          /* AFS_CTX_PLAIN_SOCKETS: never multishot */
    bool      ring_tried;     /* the buffer ring was asked for (at the first receive) */
    bool      no_recv;        /* no buffer ring, or the kernel refused a multishot receive */
    bool      no_accept;      /* the kernel refused a multishot accept */
    bool      recv_worked;    /* a multishot receive delivered once: an EINVAL is the socket's */
    bool      accept_worked;
    bool      serving;        /* in afs__ums_serve (no nesting through a flush's reap) */
    struct io_uring_buf_ring *br;
    char     *mem;            /* entries buffers of size bytes */
    size_t    br_bytes, mem_bytes;
    unsigned  entries, size;
    unsigned  held;           /* buffers the kernel filled that are not back in the ring */
    uint16_t *next;           /* per buffer: the next one a socket holds, in order */
    uint32_t *off, *len;      /* per buffer: bytes taken, bytes it holds */
    struct afs_list ready;    /* sockets with something for their parked ops */
    struct afs_list socks;    /* every socket state (freed at close, or at fini) */
    char      why[128];       /* why receives or accepts are plain, "" when they are not */
    uint64_t  ring_recvs, accepts, arms, exhausted, plain_recvs, ring_cqes, switches;
};

/* Setup (nothing is allocated until a socket needs it) and teardown (before the ring's). */
void afs__ums_init(struct afs__ums *ms, const struct afs_ctx *ctx);
void afs__ums_fini(struct afs__ums *ms, struct io_uring *ring);

/* A socket op about to be staged: 1 when it was parked on its socket's multishot (nothing
 * for the caller to stage), 0 when the caller makes it a plain op. */
int  afs__ums_prep(struct afs_ctx *ctx, struct afs__ums *ms, struct io_uring *ring,
                   struct afs_op *op);
/* A completion of a multishot request (user_data tagged above) or of a plain receive made
 * for a socket with a state (AFS__UMS_PLAIN). */
void afs__ums_cqe(struct afs_ctx *ctx, struct afs__ums *ms, uint64_t ud, int res,
                  unsigned flags);
void afs__ums_plain_done(struct afs__ums *ms, struct afs_op *op);
/* Completes the parked ops that can be (after a reap, and for ops parked on data already
 * there), re-arms and stops multishots. */
void afs__ums_serve(struct afs_ctx *ctx, struct afs__ums *ms);
/* Parked ops can complete without the kernel: the enter must not wait. */
static inline bool afs__ums_pending(const struct afs__ums *ms)
{
    return ms->ready.first != NULL;
}
/* afs_cancel of a parked op: completes it (true), or false when it is not parked. */
bool afs__ums_cancel(struct afs_ctx *ctx, struct afs__ums *ms, struct afs_op *op);
/* A socket is being closed: its parked ops complete with -ECANCELED. */
void afs__ums_cancel_file(struct afs_ctx *ctx, struct afs__ums *ms, struct afs_file *f);
/* The socket's ops are done and its descriptor is about to close: drops what it holds
 * (buffers back to the ring, accepted descriptors closed) and cancels its multishots.
 * Returns true while one is still armed: the caller waits for completions and calls again
 * (the kernel holds the socket open until its multishot ended). */
bool afs__ums_close(struct afs_ctx *ctx, struct afs__ums *ms, struct afs_file *f);
void afs__ums_info(const struct afs__ums *ms, struct afs_sock_info *out);

/* uring.c: an SQE, flushing a full SQ (NULL only when the ring fails). */
struct io_uring_sqe *afs__uring_sqe(struct afs_ctx *ctx);

#endif
