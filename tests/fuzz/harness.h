/* The differential fuzzer's shared state. One input is a program of operations on at most
 * FZ_PATHS files through asyncfs (handles, ops, streams, corio tasks); every result, every
 * position and the final bytes are checked against a model (model.h).
 *
 * Concurrency and the model. Ops in flight on one file run in any order, so the model alone
 * cannot say what a read returns while a write to the same bytes is in flight. The harness
 * therefore keeps a table of "flights" (ops issued and not yet seen complete) with the bytes
 * each one depends on or changes, and before issuing an op it waits for every flight the op
 * conflicts with. With that rule an op's outcome is fixed when it is issued: the model is
 * updated then, and the op's expected result computed then. Ops that do not conflict stay in
 * flight together, which is what exercises the backends. A request is built again after
 * every wait: the model may have changed meanwhile (another task's write, a resync).
 *
 * Cancellation. A cancelled op ends with its full result or -ECANCELED. For a read nothing
 * changes. A write that ended with -ECANCELED may have been applied in part, in full or not
 * at all, so the model cannot know its bytes: the flight stays in the table as a "resync"
 * entry that conflicts with everything on its file. The next op on that file waits until the
 * file is quiet, then the harness reads back the written range and the size, checks that
 * every byte is either the old or the new value and that the size lies between what it was
 * and what the full write would give, and adopts what the file holds into the model. */
#ifndef FZ_HARNESS_H
#define FZ_HARNESS_H

#include "asyncfs.h"
#include "corio.h"
#include "model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Switches for library bugs found by fuzzing: while a bug is open its flag is set to 1 and
 * the fuzzer stays away from it; once fixed it goes back to 0. The inputs in crashes/ that
 * showed them are replayed by every `make test` either way. All three are fixed:
 *  - afs_cancel() on an op whose callback ran read op->file, which afs_close() may have
 *    freed since (heap-use-after-free instead of -EALREADY).
 *  - io_uring: preparing an fsync computed the data span of an op without a buffer,
 *    NULL + 0 (undefined; UBSan pointer-overflow).
 *  - posix-aio (glibc): after a cancelled read, another op queued on the same descriptor
 *    could stay EINPROGRESS for ever (glibc's aio_cancel; the backend no longer calls it
 *    there). */
#ifndef FZ_EXCLUDE_CANCEL_AFTER_CLOSE
#define FZ_EXCLUDE_CANCEL_AFTER_CLOSE 0
#endif
#ifndef FZ_EXCLUDE_URING_FSYNC_SPAN
#define FZ_EXCLUDE_URING_FSYNC_SPAN 0
#endif
#ifndef FZ_EXCLUDE_PAIO_CANCEL
#define FZ_EXCLUDE_PAIO_CANCEL 0
#endif

#define FZ_PATHS    2
#define FZ_HANDLES  4
#define FZ_SLOTS    8  /* op API ops */
#define FZ_STREAMS  2
#define FZ_TASKS    4
#define FZ_TASK_OPS 8
#define FZ_MAX_OPS  64 /* top-level operations per input */
#define FZ_FLIGHTS  64
#define FZ_MAX_IO   (64u * 1024) /* bytes per op at most */
#define FZ_IOVS     8
#define FZ_BUF      (FZ_MAX_IO + FZ_IOVS * FZ_PAGE + FZ_PAGE) /* room for iovec gaps */
/* Writes ending past this are not issued: where the file system's limit lies differs
 * (ext4 16 TiB, tmpfs 8 EiB), so the result would not be known. Reads go anywhere. */
#define FZ_WRITE_LIMIT ((uint64_t)1 << 41)

/* Input bytes; reading past the end gives zeros. */
struct fz_in {
    const uint8_t *p;
    size_t         n;
};
uint8_t  fz_u8(struct fz_in *in);
uint16_t fz_u16(struct fz_in *in);

enum fz_flight_kind { FL_FREE = 0, FL_OP, FL_POS, FL_CALL, FL_RESYNC };

struct fz_flight {
    int      kind, path;
    int      owner;       /* FL_OP: slot; FL_POS: handle */
    uint64_t lo, hi;      /* bytes depended on or changed; lo == hi: none */
    bool     write, extends, sizedep;
    /* Writes: where the data goes, what was there and the size before (resync). */
    uint64_t       woff, old_size;
    size_t         wlen;
    unsigned char *old, *new_;
};

struct fz_handle {
    struct afs_file *f; /* NULL: slot unused */
    int              path, flags;
    enum afs_mode    mode;
    bool             rd, wr, append, direct;
    int64_t          pos;
    ssize_t          last_res;
    /* The position op in flight (async mode), until afs_last_op reports it. */
    bool              pending, pend_write;
    ssize_t           pend_res;     /* its expected result */
    int64_t           pend_pos;     /* the position after it */
    struct fz_flight *pend_fl;
    unsigned char    *buf, *expect; /* FZ_BUF each */
};

struct fz_slot {
    struct afs_op     op;
    bool              busy;      /* queued; callback not run yet */
    bool              cancelled; /* afs_cancel returned 0 */
    bool              closed;    /* its file was closed after its callback ran */
    int               handle, code;
    ssize_t           expect;
    struct fz_flight *fl;
    struct iovec      iov[FZ_IOVS];
    int               iovcnt;
    unsigned char    *buf, *expect_buf;
};

struct fz_stream {
    struct afs_stream *s; /* NULL: unused */
    int                path;
    bool               rd, wr, append, dirty;
    bool               eof, pos_at_end;
    int                err;
    int64_t            pos;
};

struct fz_state {
    struct afs_ctx  *ctx;
    const char      *backend;
    struct fz_model  model[FZ_PATHS];
    char             path[FZ_PATHS][4096];
    struct fz_handle h[FZ_HANDLES];
    struct fz_slot   slot[FZ_SLOTS];
    struct fz_stream st[FZ_STREAMS];
    struct fz_flight fl[FZ_FLIGHTS];
    unsigned         callbacks;      /* op API callbacks seen */
    unsigned         sync_threshold;
    bool             in_tasks;       /* a corio scheduler runs */
    bool             dio_ok;         /* the temporary directory takes O_DIRECT */
    unsigned         dio_align;
    unsigned char   *scratch, *scratch_expect; /* blocking calls of the main sequence */
    int              opno;
};

extern struct fz_state fz;

/* Failure: prints the message, the operations so far and the backend, removes the
 * temporary directory and aborts. */
_Noreturn void fz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Appends a line to the operation trace (printed on failure; to stderr with FZ_TRACE=1). */
void fz_trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *fz_err(ssize_t r);
/* FZ_EXCLUDE_URING_FSYNC_SPAN: fsync is skipped on io_uring. */
bool fz_skip_fsync(void);
/* FZ_EXCLUDE_PAIO_CANCEL: afs_cancel and corio_cancel are skipped on posix-aio. */
bool fz_skip_cancel(void); /* "-EINVAL", "4096"... (rotating static buffers) */

/* Test data: a pattern of `seed` that is never all zeros, so holes show. */
void fz_fill(unsigned char *buf, size_t len, uint8_t seed);

/* Flights. */
struct fz_flight *fz_flight_new(const struct fz_flight *req);
void              fz_flight_free(struct fz_flight *f);
void fz_req_read(struct fz_flight *r, int path, uint64_t off, size_t len);
void fz_req_write(struct fz_flight *r, int path, uint64_t off, size_t len, bool append);
void fz_req_size(struct fz_flight *r, int path); /* depends on the size only */
void fz_req_all(struct fz_flight *r, int path);  /* the whole file (truncate, streams) */
/* Records the old bytes of a write about to be applied to the model at req->woff. */
void fz_req_keep_old(struct fz_flight *r, const void *newdata);
/* Waits (main sequence) until nothing in flight conflicts with req; flushes the streams
 * on its file except `keep` (-1: all). */
bool fz_settle(const struct fz_flight *req, int keep_stream); /* true: it had to wait */
/* The same from inside corio task t (yields instead of driving the context). */
bool fz_settle_task(struct corio_task *t, const struct fz_flight *req);
/* Completes every position op in flight (main sequence). */
void fz_retire_all(void);
void fz_retire(int h, ssize_t res);
/* Waits for everything on every file, resyncs, flushes streams. */
void fz_quiesce(void);
/* Waits with afs_ctx_wait and checks the count it returns. */
void fz_ctx_wait(unsigned min_complete, int64_t timeout_ns);
unsigned fz_slots_busy(void);
void fz_resync(int path);
void fz_check_files(const char *when);
void fz_flush_streams(int path, int keep);

/* Operation groups. */
void fz_op_file(uint8_t code, struct fz_in *in);   /* handles, position API, blocking */
void fz_op_queue(uint8_t code, struct fz_in *in);  /* op API */
void fz_op_stream(uint8_t code, struct fz_in *in); /* streams */
void fz_op_tasks(struct fz_in *in);                /* corio */
void fz_op_pipe(struct fz_in *in);                 /* pipes, FIFOs, socketpairs */
void fz_close_handle(int h);

/* Shared by the main sequence (t NULL) and corio tasks. `cancelled` (may be NULL) points to
 * the task's flag: while it is set, -ECANCELED is an allowed result. */
enum { FZ_PREAD, FZ_PWRITE, FZ_PREADV, FZ_PWRITEV };
void fz_blocking(struct corio_task *t, const bool *cancelled, int hi, int kind, uint64_t off,
                 size_t len, uint8_t seed, bool misalign, struct fz_in *iovin,
                 unsigned char *buf, unsigned char *expect);
void fz_pos_io(struct corio_task *t, const bool *cancelled, int hi, bool write, size_t len,
               uint8_t seed, bool misalign);
void fz_seek(struct corio_task *t, int hi, int whence, int64_t off);
void fz_fsync(const bool *cancelled, int hi, uint8_t b);
void fz_close_stream(int s);

/* Shared decoding of an offset and a length. */
uint64_t fz_pick_off(struct fz_in *in, int path);
size_t   fz_pick_len(struct fz_in *in);
/* Adjusts off/len for a direct handle: aligned unless `misalign`. */
void fz_direct_adjust(bool misalign, uint64_t *off, size_t *len);

/* Predicts the refusal of an op before anything runs: 0, or the errno value expected. */
int fz_refusal(const struct fz_handle *h, bool write, uintptr_t buf, size_t len,
               const struct iovec *iov, int iovcnt, uint64_t off);
/* Writes that cannot be predicted (past FZ_WRITE_LIMIT) are skipped. */
bool fz_write_unpredictable(const struct fz_handle *h, uint64_t off, size_t len);

/* Builds iovecs over buf for total bytes: up to FZ_IOVS pieces, some empty, separated by
 * gaps (filled with a canary). Returns the count; *span = bytes of buf the iovecs cover. */
int  fz_make_iov(struct fz_in *in, struct iovec *iov, unsigned char *buf, size_t total,
                 bool direct, size_t *span);
void fz_iov_gather(const struct iovec *iov, int n, unsigned char *out);
void fz_iov_check_gaps(const struct iovec *iov, int n, unsigned char *buf, size_t span);

#endif
