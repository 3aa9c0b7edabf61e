/*
 * asyncfs: asynchronous file I/O with one portable API over io_uring, Linux AIO,
 * POSIX AIO, Windows I/O completion ports, a thread pool and a synchronous backend.
 *
 * Conventions, for every function below unless it says otherwise:
 *  - Success is a value >= 0; failure is a negative errno value (-EINVAL, -EBADF...).
 *    afs_strerror() turns either into a message. There is no "-1 and errno". An errno value
 *    keeps its usual meaning; where the library returns one for a situation of its own
 *    (-EBUSY for a second position op on a file, say) the call's comment says so.
 *  - A context belongs to one thread at a time: the calls that take a context, a file
 *    of it or an op queued on it are made from that thread. afs_ctx_wake() is the one
 *    exception and may be called from anywhere.
 *  - Handles are checked on every call. A NULL context, file or stream, a file or stream
 *    used after its afs_close()/afs_fclose() (a second close included), or a pointer that
 *    never was one, aborts the process with "asyncfs: <call>: <what>" on stderr, in release
 *    builds too: there is no error value to return for a handle that is not one. Closing
 *    NULL is no exception (unlike free(NULL)). A closed handle's memory keeps a poisoned
 *    mark until the allocator hands it out again; once reused (for a new file, say) the
 *    stale pointer cannot be told from the new handle, which AddressSanitizer builds catch.
 *  - Bad input (bad flags, a length that overflows, a misaligned O_DIRECT buffer) is
 *    refused with -EINVAL and changes nothing: no file, position or memory is touched.
 *  - Transient kernel conditions (a full submission queue, EINTR, EAGAIN, completion
 *    queue overflow, short transfers) are handled inside and never reach the caller.
 */
#ifndef ASYNCFS_H
#define ASYNCFS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h> /* SEEK_SET, SEEK_CUR, SEEK_END */

#ifdef _WIN32
#include <basetsd.h>
#if defined(_MSC_VER) && !defined(_SSIZE_T_DEFINED)
typedef SSIZE_T ssize_t;
#define _SSIZE_T_DEFINED
#endif
#if !defined(_MSC_VER)
#include <sys/types.h>
#endif
/* Windows has no struct iovec; this one has the POSIX member names. */
struct iovec {
    void  *iov_base;
    size_t iov_len;
};
#else
#include <sys/types.h>
#include <sys/uio.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#if defined(ASYNCFS_BUILDING)
#define AFS_API __declspec(dllexport)
#elif defined(ASYNCFS_SHARED)
#define AFS_API __declspec(dllimport)
#else
#define AFS_API
#endif
#elif defined(__GNUC__)
#define AFS_API __attribute__((visibility("default")))
#else
#define AFS_API
#endif

#define ASYNCFS_VERSION_MAJOR 0
#define ASYNCFS_VERSION_MINOR 1
#define ASYNCFS_VERSION_PATCH 0

struct afs_ctx;
struct afs_file;

/* ------------------------------------------------------------------------------------------
 * Contexts
 * ---------------------------------------------------------------------------------------- */

enum afs_backend {
    AFS_BACKEND_AUTO = 0,
    AFS_BACKEND_IO_URING,
    AFS_BACKEND_LIBAIO,
    AFS_BACKEND_POSIX_AIO,
    AFS_BACKEND_IOCP,
    AFS_BACKEND_THREADS,
    AFS_BACKEND_SYNC
};

/* The allocator returns `size` bytes aligned to at least 4096 bytes (direct I/O needs it),
 * or NULL. The releaser gets back exactly what the allocator gave, with the same size. */
typedef void *afs_alloc_fn(size_t size, void *user);
typedef void  afs_release_fn(void *buf, size_t size, void *user);

struct afs_config {
    unsigned         queue_depth;    /* ops in flight at most (more wait in the library's
                                        queue); default 1024, at most AFS_MAX_QUEUE_DEPTH */
    size_t           sync_threshold; /* sync-mode ops of at most this many bytes run inline
                                        with pread/pwrite; default 4096 */
    enum afs_backend backend;        /* default AUTO; with AUTO the environment variable
                                        ASYNCFS_BACKEND=name chooses */
    afs_alloc_fn    *alloc;          /* optional; NULL = built-in aligned allocator */
    afs_release_fn  *release;        /* required when alloc is set */
    void            *alloc_user;
    unsigned         flags;          /* AFS_CTX_* switches; 0 = sensible defaults */
};

#define AFS_MAX_QUEUE_DEPTH 32768u

/* Context flags. */
#define AFS_CTX_NO_FALLBACK 0x1u /* AUTO: take the first choice or fail, never fall back */
/* io_uring: a submission that carries AFS_DIRECT reads and writes, 8 or more or 512 KiB or
 * more, hands them to the kernel's I/O workers (IOSQE_ASYNC), which issue them to the device
 * in parallel instead of one after another in the submitting thread (and pin the buffers'
 * pages there, off a thread that may be computing); on the 2-vCPU virtio machine of the
 * benchmarks this takes 32 random 4 KiB direct reads from 0.86x to 0.96-0.98x of fio's IOPS, at
 * about 1 us more CPU per I/O. Smaller batches are issued inline (lower latency). This flag
 * issues every batch inline. */
#define AFS_CTX_INLINE_DIRECT 0x2u

/* Fills *cfg with the defaults above. */
AFS_API void afs_config_default(struct afs_config *cfg);

/* Creates a context. cfg may be NULL (defaults). With backend AUTO the environment variable
 * ASYNCFS_BACKEND (io_uring, libaio, posix-aio, iocp, threads, sync) picks the backend as
 * if it had been set in cfg; otherwise the best one available is used, falling back when
 * the first choice is blocked (see afs_ctx_fallback_reason()).
 * Returns 0 and *out, -EINVAL for a bad config (queue_depth 0 or too large, alloc without
 * release, unknown flags or backend name), -ENOTSUP when a backend that was asked for by name
 * is not available here (never silently replaced), -ENOMEM, or the setup error.
 * On failure afs_last_ctx_error() says why. */
AFS_API int afs_ctx_new(struct afs_ctx **out, const struct afs_config *cfg);

/* Why the last afs_ctx_new() of the calling thread failed, naming what was asked for and
 * what refused it: "ASYNCFS_BACKEND=bogus: unknown backend (...)",
 * "ASYNCFS_BACKEND=io_uring: io_uring_setup: EPERM (blocked by seccomp?)",
 * "afs_config: queue_depth is 0 or above AFS_MAX_QUEUE_DEPTH". NULL when that call succeeded
 * or none was made. Needs no context; the text stays valid until this thread's next
 * afs_ctx_new(). */
AFS_API const char *afs_last_ctx_error(void);

/* Waits for every op queued or in flight on ctx (their callbacks run), then frees ctx.
 * Files still open on ctx are closed. Must not be called from a callback. */
AFS_API void afs_ctx_free(struct afs_ctx *ctx);

/* The backend in use: "io_uring", "libaio", "posix-aio", "iocp", "threads" or "sync". */
AFS_API const char *afs_ctx_backend(const struct afs_ctx *ctx);

/* Why AUTO did not get its first choice, in words a person can act on
 * (e.g. "io_uring_setup: EPERM (blocked by seccomp?)"), or NULL when it did. */
AFS_API const char *afs_ctx_fallback_reason(const struct afs_ctx *ctx);

/* The message for a negative errno value (or a positive one): the system's own text, as
 * strerror() gives it ("Device or resource busy" for EBUSY), with POSIX's text where the C
 * library has none. 0 is "Success". Never NULL; the text stays valid on this thread until
 * its next call. */
AFS_API const char *afs_strerror(int err);

/* Counters since the context was made, for tests and benchmarks. */
struct afs_stats {
    uint64_t ops;         /* ops queued (read, write, readv, writev, fsync, and the
                             metadata ops: openat, statx, close...) */
    uint64_t completions; /* callbacks run */
    uint64_t kernel_submits; /* system calls that handed ops to the kernel (io_uring_enter
                                with submissions, also when it waits too; io_submit,
                                lio_listio...) */
    uint64_t kernel_waits;   /* system calls that only waited for completions; the two are
                                disjoint, so their sum is the backend's system calls */
    uint64_t resubmits;   /* short transfers and transient errors retried inside */
    uint64_t inline_ops;  /* sync-mode ops run inline under the sync threshold */
    uint64_t pool_ops;    /* ops run by the thread pool (also on other backends) */
};
AFS_API void afs_ctx_stats(const struct afs_ctx *ctx, struct afs_stats *out);

/* Makes the context's current or next afs_ctx_wait() return early, even with fewer
 * completions than it asked for. Thread-safe and async-signal-unsafe; any thread may call it.
 * Returns 0 or -errno. */
AFS_API int afs_ctx_wake(struct afs_ctx *ctx);

/* ------------------------------------------------------------------------------------------
 * Buffers: aligned for direct I/O on every platform (to at least 4096 bytes).
 * ---------------------------------------------------------------------------------------- */

/* Returns a buffer of `size` bytes (size 0 gives a valid, minimal buffer) from the context's
 * allocator, or NULL when memory is short. Free it with afs_buf_free() and the same size. */
AFS_API void *afs_buf_alloc(struct afs_ctx *ctx, size_t size);
AFS_API void  afs_buf_free(struct afs_ctx *ctx, void *buf, size_t size);

/* ------------------------------------------------------------------------------------------
 * Files
 * ---------------------------------------------------------------------------------------- */

/* Portable open flags (the library's own bits). Exactly one of RDONLY, WRONLY, RDWR. */
#define AFS_RDONLY   0x0001
#define AFS_WRONLY   0x0002
#define AFS_RDWR     0x0004
#define AFS_CREAT    0x0008
#define AFS_TRUNC    0x0010
#define AFS_EXCL     0x0020
#define AFS_APPEND   0x0040 /* every write goes to the end of the file, whatever its offset */
#define AFS_NOFOLLOW 0x0080
#define AFS_DIRECT   0x0100 /* O_DIRECT / FILE_FLAG_NO_BUFFERING / F_NOCACHE: buffers,
                               lengths and offsets must be multiples of the device's logical
                               block size (512 or 4096); other ops fail with -EINVAL */

enum afs_mode { AFS_MODE_SYNC = 1, AFS_MODE_ASYNC = 2 };

/* Files are regular files and block devices: their reads are short only at end of file. On
 * a pipe or FIFO a read likewise completes only when its buffer is full or at end of file.
 *
 * Opens `path` (UTF-8) with AFS_* flags; `perm` is used with AFS_CREAT (and the umask).
 * `mode` chooses how afs_read()/afs_write() behave (3.1 below); the op API and the
 * positional calls work the same in both modes. The file is opened close-on-exec.
 * Inside a corio task of ctx's scheduler the open suspends only the task and joins the
 * phase's batch (an openat in the one io_uring submission; a pool job elsewhere; inline on
 * the sync backend and on Windows); anywhere else it is a plain open on this thread. As with
 * every blocking call, path must stay unchanged until the call returns: in a task the other
 * tasks run meanwhile, so it must not be a buffer they share.
 * Returns 0 and *out, -EINVAL for bad flags or mode, or the open error (-ENOENT, -EACCES,
 * -EEXIST, -ELOOP for AFS_NOFOLLOW on a symlink, -EINVAL for AFS_DIRECT where the file
 * system refuses it...). */
AFS_API int afs_open(struct afs_ctx *ctx, const char *path, int flags, unsigned perm,
                     enum afs_mode mode, struct afs_file **out);

/* afs_open(ctx, path, AFS_RDWR | AFS_CREAT | AFS_TRUNC, 0666, mode, out). */
AFS_API int afs_create(struct afs_ctx *ctx, const char *path, enum afs_mode mode,
                       struct afs_file **out);

/* Waits for the file's ops in flight (their callbacks run), closes it and frees f, even
 * when closing reports an error; f must not be used again (a second close aborts). Returns 0
 * or the close error (-EIO: earlier writes may be lost). Must not be called from one of the
 * file's own callbacks. Inside a corio task of the file's context the close itself joins the
 * phase's batch too (see afs_queue_close_fd()); elsewhere it is a plain close on this
 * thread. */
AFS_API int afs_close(struct afs_file *f);

/* The file's context, and its OS descriptor (an fd on POSIX, a HANDLE on Windows). */
AFS_API struct afs_ctx *afs_file_ctx(const struct afs_file *f);
AFS_API intptr_t        afs_file_fd(const struct afs_file *f);

/* The file's size in bytes, or -errno. */
AFS_API int64_t afs_file_size(struct afs_file *f);

/* ------------------------------------------------------------------------------------------
 * 3.1 The position API: one op in flight per file, at the file's own position.
 *
 * Sync mode: read/write block and return the bytes transferred (0 = end of file on a
 * read) or -errno. An op of at most sync_threshold bytes is a plain pread/pwrite on this
 * thread; a larger one goes through the backend and the call waits (inside a corio task
 * only the task waits).
 * Async mode: read/write queue the op at the position, hand it to the kernel, and return
 * 0. A second op while one is pending returns -EBUSY. afs_last_op() tells when it is done.
 *
 * The position moves by the bytes transferred when an op completes, never on error, and
 * errors do not stick: the next op runs normally. A write completes in full or fails; a
 * read is short only at end of file. Zero-length ops complete at once with 0.
 * The buffer belongs to the library until the op is done.
 * ---------------------------------------------------------------------------------------- */
AFS_API ssize_t afs_read(struct afs_file *f, void *buf, size_t len);
AFS_API ssize_t afs_write(struct afs_file *f, const void *buf, size_t len);

/* SEEK_SET, SEEK_CUR or SEEK_END. Returns the new position, -EINVAL for a bad whence or a
 * position that would be negative or overflow, -EBUSY while an op is pending. */
AFS_API int64_t afs_seek(struct afs_file *f, int64_t off, int whence);

/* The position, or -EBUSY while an op is pending. */
AFS_API int64_t afs_tell(struct afs_file *f);

/* Returns 0 while the file's op is pending (and makes progress on the context, running
 * any callbacks that are ready), 1 when it is done, with *res = bytes transferred (0 = end
 * of file on a read) or -errno. Repeatable: asking twice gives the same answer. 1 with
 * *res = 0 when nothing was ever submitted. In sync mode it reports the last op. res may
 * be NULL. */
AFS_API int afs_last_op(struct afs_file *f, ssize_t *res);

/* As afs_last_op(), but blocks until the op is done (inside a corio task: suspends the task)
 * and returns 1, or -errno if waiting itself failed. */
AFS_API int afs_last_op_wait(struct afs_file *f, ssize_t *res);

/* ------------------------------------------------------------------------------------------
 * 3.3 Ops: many in flight, positional, batched.
 * ---------------------------------------------------------------------------------------- */

struct afs_op;
typedef void afs_cb(struct afs_op *op);

/* An op is owned by the caller (embed it, put it on a stack that outlives it) and may be
 * reused once its callback has started. Between queueing and the start of its callback the
 * op, its buffer and its iovec array belong to the library: do not touch, move or free them.
 * `data` is yours; `result` is the bytes transferred (a read is short only at end of file;
 * a write completes in full) or -errno, valid in the callback. */
struct afs_op {
    void   *data;
    ssize_t result;
    union {
        uint64_t words[48];
        void    *align_ptr;
        double   align_dbl;
    } private_; /* the library's; do not touch */
};

#define AFS_FSYNC_DATA 0x1u /* fdatasync: skip metadata not needed to read the data back */

/* Queue an op on f's context. The op goes to the kernel at the next afs_ctx_submit() or
 * afs_ctx_wait() (or at once, when a blocking call or the position API submits). At most
 * queue_depth ops are in flight; the rest wait in the library's queue, in order.
 * `cb` (required) runs exactly once, from afs_ctx_wait() on the context's thread, never
 * from inside the queueing call. Ops on one file run concurrently: their order is not kept.
 * Returns 0, or -EINVAL (NULL op/buf/cb, len or off that overflow, more than
 * AFS_IOV_MAX iovecs, an AFS_DIRECT op that is not aligned), -EBADF (a read on a file
 * opened write-only or the reverse), -EBUSY (op is still queued or in flight: its callback has
 * not started). A zero-length op completes with 0. */
AFS_API int afs_queue_read(struct afs_op *op, struct afs_file *f, void *buf, size_t len,
                           uint64_t off, afs_cb *cb, void *data);
AFS_API int afs_queue_write(struct afs_op *op, struct afs_file *f, const void *buf,
                            size_t len, uint64_t off, afs_cb *cb, void *data);
AFS_API int afs_queue_readv(struct afs_op *op, struct afs_file *f, const struct iovec *iov,
                            int iovcnt, uint64_t off, afs_cb *cb, void *data);
AFS_API int afs_queue_writev(struct afs_op *op, struct afs_file *f, const struct iovec *iov,
                             int iovcnt, uint64_t off, afs_cb *cb, void *data);
/* Flushes the file's data (and metadata, unless AFS_FSYNC_DATA) to stable storage. It does
 * not wait for other ops in flight: queue it after their callbacks ran. */
AFS_API int afs_queue_fsync(struct afs_op *op, struct afs_file *f, unsigned flags,
                            afs_cb *cb, void *data);

#define AFS_IOV_MAX 1024

/* Hands every queued op to the kernel in one system call where the backend allows.
 * Returns the number of ops handed over (0 when none were queued) or -errno. */
AFS_API int afs_ctx_submit(struct afs_ctx *ctx);

/* Submits, then waits until min_complete callbacks have run (at most as many as there are
 * ops outstanding), the timeout passes, or afs_ctx_wake() is called; runs the callbacks of
 * every completed op, in completion order, on this thread. With nothing outstanding and
 * min_complete > 0 it waits for a wake or the timeout (a thread waiting for work).
 * timeout_ns < 0 means no limit, 0 means poll. Returns the number of callbacks run
 * (0 on timeout or wake) or -errno; -EDEADLK when called from a callback. */
AFS_API int afs_ctx_wait(struct afs_ctx *ctx, unsigned min_complete, int64_t timeout_ns);

/* Asks for op to be cancelled. Returns:
 *    0          the op was queued or in flight: its callback still runs exactly once, with
 *               -ECANCELED or, if the op finished first, its result (a close always runs to
 *               its end and reports its result); the buffer stays the library's until then.
 *   -EALREADY   the op has finished: its callback is pending (it runs with the op's result)
 *               or has already run. Nothing changes.
 *   -EINVAL     op is NULL or was never queued. */
AFS_API int afs_cancel(struct afs_op *op);

/* ------------------------------------------------------------------------------------------
 * Inside a corio task: what joins the batch and what runs inline.
 *
 * A blocking call made in a task of the scheduler that batches on the file's context either
 * suspends the task while its op joins the phase's one submission (one io_uring_enter for
 * every task of the phase), or runs inline on the scheduler's thread without suspending:
 *  - Joins the batch: afs_open, afs_create and the open of afs_fopen; afs_close and
 *    afs_fclose's close; afs_openat and the other metadata calls; afs_fsync; afs_preadv and
 *    afs_pwritev; afs_last_op_wait; a stream's chunk reads and writes; and afs_pread,
 *    afs_pwrite and sync-mode afs_read/afs_write of more than sync_threshold bytes, or of any
 *    size on an AFS_DIRECT file.
 *  - Runs inline: afs_pread, afs_pwrite and sync-mode afs_read/afs_write of at most
 *    sync_threshold bytes (default 4096) on a buffered file. Such an op is mostly a copy to
 *    or from the page cache, cheaper than suspending and a trip through the batch, so a 1 KiB
 *    read returns at once and the task does not suspend (on a cache miss it blocks the
 *    thread for that read). sync_threshold = 0 batches every op. Also inline: afs_file_size
 *    and afs_seek(SEEK_END) (an fstat), the queueing calls (they never wait), and every call
 *    made from an op's callback.
 *  - Blocks the thread: a call on a file of another context (there is no batch to join).
 * ---------------------------------------------------------------------------------------- */

/* ------------------------------------------------------------------------------------------
 * 3.4 Blocking positional calls. Outside a corio task they block the thread; inside a task
 * they suspend the task only and the op joins the scheduler's batch. Return bytes (a read is
 * short only at end of file) or -errno. They do not use or move the file's position.
 * On a buffered (not AFS_DIRECT) file, a read or write of at most sync_threshold bytes runs
 * inline with pread/pwrite, as in sync mode: for small cached I/O that is cheapest, and a
 * task does not suspend. Set sync_threshold to 0 to batch everything.
 * ---------------------------------------------------------------------------------------- */
AFS_API ssize_t afs_pread(struct afs_file *f, void *buf, size_t len, uint64_t off);
AFS_API ssize_t afs_pwrite(struct afs_file *f, const void *buf, size_t len, uint64_t off);
AFS_API ssize_t afs_preadv(struct afs_file *f, const struct iovec *iov, int iovcnt,
                           uint64_t off);
AFS_API ssize_t afs_pwritev(struct afs_file *f, const struct iovec *iov, int iovcnt,
                            uint64_t off);
AFS_API int     afs_fsync(struct afs_file *f, unsigned flags);

/* ------------------------------------------------------------------------------------------
 * Metadata ops: open, stat, close, mkdir, rename, unlink and syncfs, relative to a directory
 * fd like the *at() system calls, queued and batched like reads and writes.
 *
 * Where they run: on io_uring each op goes into the phase's one submission when the kernel
 * has its opcode (probed on first use: openat, statx, close since Linux 5.6; renameat and
 * unlinkat 5.11; mkdirat 5.15); otherwise, and on the libaio, posix-aio and threads backends,
 * the context's thread pool makes the system call; the sync backend makes it inline. syncfs
 * always goes to the pool (io_uring has no opcode for it). Either way the context's thread
 * never blocks in the file system.
 * Windows has no directory fds: every call of this section returns -ENOTSUP there (use
 * afs_open(), which takes a path).
 *
 * Descriptors are POSIX fds (int). dirfd is an open directory or AFS_AT_FDCWD; an absolute
 * path ignores it. New fds are close-on-exec and never become a controlling terminal.
 * Results (op->result, or the return value of the blocking calls) are those of the system
 * call, failures as a negative errno: the new fd for openat, 0 for the others. EINTR and
 * EAGAIN are retried inside. A path, and the struct afs_stat of a statx, belong to the
 * library from queueing until the callback starts: nothing is copied.
 * Queueing returns 0, -EINVAL (NULL op, cb or path, unknown flags, perm above 07777),
 * -EBADF (a negative fd or dirfd other than AFS_AT_FDCWD), -EBUSY (the op is in use) or
 * -ENOTSUP (Windows). The ops count in afs_stats like the others.
 * afs_cancel() works as for I/O, except on a close: a close always runs to its end (after a
 * cancelled close nobody could tell whether the fd is still open), and an openat that
 * finished reports its fd even when it was cancelled, so that it can be closed.
 * ---------------------------------------------------------------------------------------- */
#define AFS_AT_FDCWD (-100) /* dirfd: the current directory */

/* More open flags, for afs_openat() (afs_open() refuses them). */
#define AFS_DIRECTORY 0x0200 /* O_DIRECTORY: -ENOTDIR unless path is a directory */
#define AFS_NONBLOCK  0x0400 /* O_NONBLOCK: opening a FIFO or device does not wait. It stays
                                set on the fd; afs_file_from_fd() clears it */

/* afs_queue_statx()/afs_statx() flags. */
#define AFS_AT_SYMLINK_NOFOLLOW 0x1 /* a symlink itself, not its target */
#define AFS_AT_EMPTY_PATH       0x2 /* path "" stats dirfd itself, which may be any fd (fstat) */
/* afs_queue_unlinkat()/afs_unlinkat() flag. */
#define AFS_AT_REMOVEDIR        0x4 /* remove an empty directory (rmdir) */
/* afs_queue_renameat()/afs_renameat() flag. */
#define AFS_RENAME_NOREPLACE    0x1 /* -EEXIST if newpath exists (renameat2); -EINVAL where
                                       the file system or OS cannot promise it */

struct afs_timespec {
    int64_t sec;
    int64_t nsec;
};

/* What afs_statx() reports, the fields of struct stat under portable types. */
struct afs_stat {
    uint64_t dev;     /* the file system's device, equal to stat()'s st_dev */
    uint64_t ino;
    uint64_t rdev;    /* a device file's device (st_rdev) */
    int64_t  size;    /* bytes */
    uint64_t blocks;  /* 512-byte blocks allocated */
    uint32_t mode;    /* file type and permissions, as st_mode (S_ISREG() etc. work on it) */
    uint32_t nlink;
    uint32_t uid, gid;
    uint32_t blksize; /* preferred I/O size */
    struct afs_timespec atime, mtime, ctime;
};

/* Opens path relative to dirfd; op->result is the new fd or -errno (-ENOENT, -EEXIST,
 * -ELOOP with AFS_NOFOLLOW on a symlink, -ENOTDIR...). flags are AFS_* (exactly one of
 * RDONLY, WRONLY, RDWR), perm is used with AFS_CREAT (and the umask). A directory may be
 * opened (AFS_RDONLY, best with AFS_DIRECTORY) to serve as a dirfd. The fd is the caller's:
 * close it with afs_close_fd() or close(), or hand it to afs_file_from_fd(). */
AFS_API int afs_queue_openat(struct afs_op *op, struct afs_ctx *ctx, int dirfd,
                             const char *path, int flags, unsigned perm, afs_cb *cb,
                             void *data);
/* Fills *st for path relative to dirfd (AFS_AT_* flags); op->result is 0 or -errno. */
AFS_API int afs_queue_statx(struct afs_op *op, struct afs_ctx *ctx, int dirfd,
                            const char *path, int flags, struct afs_stat *st, afs_cb *cb,
                            void *data);
/* Closes fd; op->result is 0 or -errno (-EIO: earlier writes may be lost). fd is closed
 * whatever the result, and is not the caller's any more once queued. */
AFS_API int afs_queue_close_fd(struct afs_op *op, struct afs_ctx *ctx, int fd, afs_cb *cb,
                               void *data);
/* Creates a directory with permissions perm (and the umask). */
AFS_API int afs_queue_mkdirat(struct afs_op *op, struct afs_ctx *ctx, int dirfd,
                              const char *path, unsigned perm, afs_cb *cb, void *data);
/* Renames oldpath (relative to olddirfd) to newpath (relative to newdirfd), replacing what
 * is there unless AFS_RENAME_NOREPLACE. A symlink at either name is renamed or replaced, not
 * followed. */
AFS_API int afs_queue_renameat(struct afs_op *op, struct afs_ctx *ctx, int olddirfd,
                               const char *oldpath, int newdirfd, const char *newpath,
                               int flags, afs_cb *cb, void *data);
/* Removes a name (AFS_AT_REMOVEDIR: an empty directory). */
AFS_API int afs_queue_unlinkat(struct afs_op *op, struct afs_ctx *ctx, int dirfd,
                               const char *path, int flags, afs_cb *cb, void *data);
/* Writes the dirty data and metadata of the whole file system holding fd to stable storage
 * (syncfs(2)): one journal commit for many files. Linux only: elsewhere the result is
 * -ENOTSUP. */
AFS_API int afs_queue_syncfs(struct afs_op *op, struct afs_ctx *ctx, int fd, afs_cb *cb,
                             void *data);

/* The same as blocking calls, returning what op->result would be (or the queueing error).
 * Inside a corio task whose scheduler batches on ctx they suspend only the task, and the op
 * joins the phase's submission (as afs_pread does). Anywhere else (a plain thread, a task of
 * another context, a callback) they make the system call directly on the calling thread:
 * with nothing to batch with, that is cheapest. The blocking calls never see -ECANCELED from
 * a close: it always runs. */
AFS_API int afs_openat(struct afs_ctx *ctx, int dirfd, const char *path, int flags,
                       unsigned perm);
AFS_API int afs_statx(struct afs_ctx *ctx, int dirfd, const char *path, int flags,
                      struct afs_stat *st);
AFS_API int afs_close_fd(struct afs_ctx *ctx, int fd);
AFS_API int afs_mkdirat(struct afs_ctx *ctx, int dirfd, const char *path, unsigned perm);
AFS_API int afs_renameat(struct afs_ctx *ctx, int olddirfd, const char *oldpath,
                         int newdirfd, const char *newpath, int flags);
AFS_API int afs_unlinkat(struct afs_ctx *ctx, int dirfd, const char *path, int flags);
AFS_API int afs_syncfs(struct afs_ctx *ctx, int fd);

/* Makes a file of ctx from an open fd (from afs_openat(), say), as afs_open() would have.
 * flags are the AFS_* flags it was opened with: the access mode (exactly one of RDONLY,
 * WRONLY, RDWR) says which ops are allowed, AFS_DIRECT brings the alignment rules,
 * AFS_APPEND the append semantics of the position API; AFS_NONBLOCK is cleared from the fd
 * (io_uring would answer EAGAIN instead of waiting for the disk); the others are ignored but
 * for AFS_DIRECTORY, refused. The fd should be a regular file or a block device. On success
 * the file owns fd: afs_close() closes it; on failure fd stays the caller's. Returns 0 and
 * *out, -EINVAL (bad flags or mode), -EBADF (fd is not open), -ENOMEM, or -ENOTSUP on
 * Windows. */
AFS_API int afs_file_from_fd(struct afs_ctx *ctx, int fd, int flags, enum afs_mode mode,
                             struct afs_file **out);

/* ------------------------------------------------------------------------------------------
 * Integration: the per-thread waiter. A scheduler (corio is one) installs a waiter on its
 * thread so that blocking calls made on `ctx`'s files suspend the running coroutine
 * instead of the thread. Blocking calls on files of other contexts block the thread.
 * ---------------------------------------------------------------------------------------- */
struct afs_waiter {
    struct afs_ctx *ctx;
    /* The coroutine running on this thread, or NULL (then calls block the thread). */
    void *(*current)(struct afs_waiter *w);
    /* Called by a blocking call after it queued `op` on ctx, from inside coroutine `co`;
     * returns once resume(w, co, op) was called (the scheduler runs other work meanwhile).
     * Returns 0 to let the call return op->result, or a negative errno to return instead
     * (e.g. -ETIMEDOUT after a deadline cancelled the op). It must not return before op's
     * callback ran: the op and its buffer live on the coroutine's stack. */
    int (*suspend)(struct afs_waiter *w, void *co, struct afs_op *op);
    /* Called from op's callback, on the context's thread: make `co` runnable. */
    void (*resume)(struct afs_waiter *w, void *co, struct afs_op *op);
};

/* Installs w for the calling thread (NULL removes it); returns the previous one. */
AFS_API struct afs_waiter *afs_waiter_set(struct afs_waiter *w);
AFS_API struct afs_waiter *afs_waiter_get(void);

/* ------------------------------------------------------------------------------------------
 * Streams: fread/fwrite for stdio users, with asynchronous read-ahead and write-behind.
 *
 * A stream reads and writes a file through chunk-sized buffers (default 1 MiB). Reading in
 * order, up to `chunks` (default 4) reads of the next chunks are in flight while the caller
 * works on the current one; a seek out of that window cancels them and read-ahead starts
 * again (1, 2, 4... chunks) once reading is sequential again. Writing, full chunks are
 * queued and afs_fwrite goes on filling the next buffer, with at most `chunks` writes in
 * flight. So a program that reads and computes takes about max(I/O, CPU), not their sum.
 *
 * Semantics follow stdio, with errors as negative errno values:
 *  - afs_fread/afs_fwrite return the number of whole items transferred, as fread/fwrite.
 *    Fewer than nmemb means end of file (afs_feof) or an error (afs_ferror). A partial item
 *    at the end of the file is consumed (the position moves past it) but not counted.
 *  - The error indicator keeps the first error (-EIO, -EFBIG, -ENOSPC...; -EINVAL for
 *    size * nmemb overflowing or a NULL buffer, -EBADF for a read on a "w"/"a" stream or a
 *    write on an "r" one). While it is set afs_fread/afs_fwrite transfer nothing and return
 *    0; afs_clearerr clears it. The end-of-file indicator is sticky too (as glibc >= 2.28):
 *    afs_fread returns 0 until afs_fseek or afs_clearerr, after which it reads again and
 *    sees data appended meanwhile.
 *  - A write error of write-behind surfaces later: at a following afs_fwrite (short count),
 *    afs_fflush or afs_fclose. It is never lost: afs_fflush returns it until afs_clearerr,
 *    and afs_fclose returns the first error the stream kept.
 *  - "+" modes may switch between reading and writing without an afs_fflush/afs_fseek in
 *    between (stdio requires one; here it is done for you): reads always see the stream's
 *    own earlier writes, and read-ahead is dropped when writing starts.
 *  - Append ("a", "a+"): every write lands at the end of the file, in order (one write in
 *    flight at a time). "a" starts at the end, "a+" at 0 for reading. afs_ftell after
 *    writes in append mode waits for them and returns the file's size.
 *
 * Threads and tasks: a stream belongs to its context's thread, and to one caller at a time.
 * Where a call waits for I/O, outside a corio task it drives the context (afs_ctx_wait);
 * inside a task of the scheduler that owns the context it suspends only the task (the
 * afs_waiter hook). A stream must not be used from an op's callback when that would have to
 * wait (afs_fread/afs_fwrite record -EDEADLK; afs_fclose aborts).
 * Buffers: the stream allocates (chunks + 1) * chunk_size bytes with afs_buf_alloc at open
 * and frees them at close; nothing is allocated per call.
 *
 * Automatic direct reads (Linux 6.5+, which tells what is cached: cachestat): an "r" stream
 * on a file of at least 16 chunks that is not wholly cached at open holds a second
 * descriptor of the file, opened with O_DIRECT, and reads a read-ahead chunk through it
 * when that chunk is mostly not cached and has no dirty pages, and the consumer is the
 * bottleneck: a stream starts direct, and goes buffered after two windows of 2 * chunks
 * chunks (at least 8) in which afs_fread spent more than half of the time waiting for
 * chunks, direct again after a window with less. Such a chunk is not copied through
 * the page cache, which saves the consuming thread a copy, and is not left in the page
 * cache either. A consumer that waits for chunks is read buffered, where the kernel's own
 * read-ahead drives the disk harder. Data stay coherent: the kernel writes a dirty range
 * back before a direct read of it, and cached chunks are read from the cache. Where
 * O_DIRECT is refused the stream reads buffered. Outside a corio task an afs_fread that
 * reaches a chunk still in flight polls the context first, so other ops' callbacks may run
 * in it even when it need not wait. AFS_STREAM_BUFFERED turns all of this off.
 * ---------------------------------------------------------------------------------------- */
struct afs_stream;

#define AFS_STREAM_DIRECT 0x1u /* read with AFS_DIRECT (O_DIRECT): no page cache. Only for
                                  "r" streams; chunk_size must suit the device's alignment */
#define AFS_STREAM_BUFFERED 0x2u /* never read with O_DIRECT (no automatic direct reads, no
                                    second descriptor); -EINVAL with AFS_STREAM_DIRECT */

struct afs_stream_options {
    size_t   chunk_size; /* bytes per buffer and per op; 0 = 1 MiB. Rounded up to a multiple
                            of 4096; at most 1 GiB */
    unsigned chunks;     /* reads ahead / writes behind in flight at most; 0 = 4; at most 64 */
    unsigned perm;       /* permissions of a file the stream creates (and the umask);
                            default 0666 */
    unsigned flags;      /* AFS_STREAM_* */
};

/* Fills *o with the defaults above. */
AFS_API void afs_stream_options_default(struct afs_stream_options *o);

/* Opens `path` (UTF-8) as a stream on ctx. `mode` is as fopen's: "r" (read; the file must
 * exist), "w" (write; created or truncated), "a" (append; created), each optionally with
 * "+" (read and write: "r+" keeps the file, "w+" truncates it, "a+" appends), "b"
 * (ignored) and, for "w", "x" (fail with -EEXIST if the file exists).
 * Returns 0 and *out, -EINVAL for a bad mode or options (AFS_STREAM_DIRECT on a mode that
 * writes, or with AFS_STREAM_BUFFERED), -ENOMEM, or the open error (-ENOENT, -EACCES...).
 * opts may be NULL (defaults). Inside a corio task the open joins the phase's batch, as
 * afs_open() does. */
AFS_API int afs_fopen(struct afs_ctx *ctx, const char *path, const char *mode,
                      struct afs_stream **out);
AFS_API int afs_fopen_opts(struct afs_ctx *ctx, const char *path, const char *mode,
                           const struct afs_stream_options *opts, struct afs_stream **out);

/* Reads up to nmemb items of `size` bytes into ptr at the stream's position and moves it.
 * Returns the whole items read (see above for EOF, errors and partial items). Waits only
 * for the chunk it needs; the next ones are already on their way. */
AFS_API size_t afs_fread(void *ptr, size_t size, size_t nmemb, struct afs_stream *s);

/* Copies nmemb items of `size` bytes from ptr into the stream at its position and moves
 * it; full chunks are written in the background. Returns the items taken, fewer on error.
 * ptr is the caller's again when the call returns. */
AFS_API size_t afs_fwrite(const void *ptr, size_t size, size_t nmemb, struct afs_stream *s);

/* Moves the position (SEEK_SET, SEEK_CUR, SEEK_END) and clears the end-of-file indicator.
 * Buffered write data is queued first; read-ahead the new position does not need is
 * cancelled. Seeking past the end is allowed: a write there leaves a hole.
 * Returns 0, -EINVAL for a bad whence or a negative or overflowing position (nothing
 * changes), or a write error met while flushing for SEEK_END. */
AFS_API int afs_fseek(struct afs_stream *s, int64_t off, int whence);

/* The position (buffered data included), or -errno. */
AFS_API int64_t afs_ftell(struct afs_stream *s);

/* Writing: queues buffered data and waits until every write is done. Reading: drops
 * read-ahead, so the next read sees the file as it is now. Returns 0 or the first write
 * error of the stream (kept until afs_clearerr). Data is written to the file, not synced
 * to the device: afs_fsync(afs_stream_file(s), 0) after this does that. */
AFS_API int afs_fflush(struct afs_stream *s);

/* Flushes, waits for every op of the stream (cancelled read-ahead too), closes the file and
 * frees s and its buffers, whatever happens; s must not be used again (a second close
 * aborts). Returns 0, the first error the stream kept
 * (read or write, not cleared by afs_clearerr), or the close error. */
AFS_API int afs_fclose(struct afs_stream *s);

/* Non-zero when a read met the end of the file (until afs_fseek or afs_clearerr). */
AFS_API int afs_feof(const struct afs_stream *s);

/* 0, or the first error the stream met (a negative errno) until afs_clearerr. */
AFS_API int afs_ferror(const struct afs_stream *s);

/* Clears the error and end-of-file indicators. */
AFS_API void afs_clearerr(struct afs_stream *s);

/* The stream's file (e.g. for afs_fsync after afs_fflush). It stays the stream's: do not
 * close it, and do not move data through it while the stream has I/O in flight. */
AFS_API struct afs_file *afs_stream_file(struct afs_stream *s);

#ifdef __cplusplus
}
#endif
#endif /* ASYNCFS_H */
