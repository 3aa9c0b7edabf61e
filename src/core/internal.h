/* Internals shared by the core and the backends. Not installed. */
#ifndef AFS_INTERNAL_H
#define AFS_INTERNAL_H

#include "asyncfs.h"
#include "list.h"
#include "platform.h"
#include "tune.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Programmer errors that cannot be reported: abort with a message, in release builds too. */
#define AFS_CHECK(cond, msg)                                                                  \
    do {                                                                                      \
        if (!(cond))                                                                          \
            afs__panic(__func__, msg);                                                        \
    } while (0)
_Noreturn void afs__panic(const char *where, const char *msg);

#define AFS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define AFS_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ------------------------------------------------------------------------------------------
 * Ops
 * ---------------------------------------------------------------------------------------- */

enum afs__code {
    AFS__READ = 1, AFS__WRITE, AFS__READV, AFS__WRITEV, AFS__FSYNC,
    /* Storage ops on a file that move no data (afs_queue_fallocate...): from AFS__FSYNC to
     * AFS__SYNC_RANGE; their arguments are off, total (a length) and arg. */
    AFS__FALLOCATE, AFS__FTRUNCATE, AFS__FADVISE, AFS__SYNC_RANGE,
    /* Metadata ops (afs_queue_openat...): no file, no data; counted on ctx->meta. */
    AFS__OPENAT, AFS__STATX, AFS__CLOSE, AFS__MKDIRAT, AFS__RENAMEAT, AFS__UNLINKAT,
    AFS__SYNCFS, AFS__FSYNC_FD,
    /* Socket ops (src/core/sock.c): on a socket file, no offsets; their arguments are in
     * afs__op.sock. A number range of their own, apart from the metadata ops. */
    AFS__CONNECT = 48, AFS__ACCEPT, AFS__RECV, AFS__SEND, AFS__SHUTDOWN,
    /* afs_queue_sendfile: from afs__sock.src at off + done to the socket, total bytes. */
    AFS__SENDFILE
};

enum afs__state {
    AFS__IDLE = 0, /* never queued, or its callback has started */
    AFS__QUEUED,   /* in ctx->queued, not yet handed to a backend */
    AFS__INFLIGHT, /* owned by the backend or the thread pool */
    AFS__DONE,     /* in ctx->done, callback pending */
    AFS__HELD      /* a chain member waiting for the one before it (on no list) */
};

#define AFS__OP_POOL      0x01u /* runs on the thread pool, not on the backend */
#define AFS__OP_CANCEL    0x02u /* afs_cancel() was called while in flight */
#define AFS__OP_BLOCKING  0x04u /* queued by a blocking call (afs_pread...) */
#define AFS__OP_PARTIAL   0x08u /* a read that completes with the first bytes it gets (a
                                   stream's chunk on a pipe), not only when full or at EOF */
#define AFS__OP_EOF_CHECK 0x10u /* a read made only to confirm the end of file (it gave 0) */
#define AFS__OP_EOF_SKIP  0x20u /* a short read taken as the end of file without one: it
                                   ended at the size the library knew (afs_file.size_hint) */
#define AFS__OP_READY     0x40u /* a socket op run by the readiness engine (src/unix/ready.c) */
#define AFS__OP_CHAINED   0x80u /* a member of a chain (afs_chain_begin .. afs_chain_end) */

/* Bytes the backends may keep in an op (iocb, aiocb, OVERLAPPED, io_uring's struct statx
 * of 256 bytes...). */
#define AFS__BACKEND_WORDS 32

/* The arguments of a metadata op; its path is in u.buf. Paths and the stat buffer are the
 * caller's until the callback starts: nothing is copied. */
struct afs__meta {
    const char      *path2;  /* renameat: the new name */
    struct afs_stat *st;     /* statx: where the result goes */
    int              dirfd;  /* AFS_AT_FDCWD or a directory fd; the fd for close/syncfs */
    int              dirfd2; /* renameat: the new name's directory */
    int              flags;  /* AFS_* open flags, AFS_AT_* or AFS_RENAME_* */
    unsigned         perm;
};

/* The arguments of a socket op; its buffer or address is in u.buf, its length in len. */
struct afs__sock {
    union {
        void *addrlen;  /* accept: socklen_t *, or NULL */
        char *bounce;   /* sendfile by read and send: the op's buffer, or NULL (freed by
                           afs__sendfile_drop) */
    };
    struct afs_file *src; /* sendfile: the file the bytes come from (at afs__op.off) */
    union {
        struct {
            int msg_flags; /* recv, send: MSG_* for the kernel (MSG_NOSIGNAL included) */
            int how;       /* shutdown: SHUT_*; accept: the accept4 flags (SOCK_CLOEXEC...) */
        };
        struct {
            /* sendfile by read and send: bounce[head, tail) is read and not yet sent, the
             * source's bytes from afs__op.off + afs__op.done on. */
            uint32_t head, tail;
        };
    };
    uint8_t  stage;     /* connect in the readiness engine: 1 once connect() said EINPROGRESS;
                           sendfile: 1 once sendfile(2) refused the source (read and send) */
};

#define AFS__LINE 64 /* bytes in a cache line */

/* Keeps a function out of its callers (its frame off their stacks). */
#if defined(__GNUC__)
#define AFS__NOINLINE __attribute__((noinline))
#else
#define AFS__NOINLINE
#endif

/* The functions of a path that runs once per system call, side by side in one hot section:
 * where every kernel entry empties the TLB (page-table isolation without PCIDs), each page
 * of code the path runs after its call costs a page walk. */
#if defined(__GNUC__) && defined(__ELF__)
#define AFS__HOT_PATH __attribute__((hot))
#else
#define AFS__HOT_PATH
#endif

/* A thread-local variable read on hot paths (corio_current() in each blocking call of a
 * task): the initial-exec model, a fixed offset from the thread pointer instead of a call to
 * __tls_get_addr from the shared library (which programs link, rather than load later by
 * dlopen into a process short of static TLS space). */
#if defined(__GNUC__) && defined(__ELF__)
#define AFS__TLS_HOT __attribute__((tls_model("initial-exec")))
#else
#define AFS__TLS_HOT
#endif

/* Valgrind's client requests where its headers were found at build time (no-ops when the
 * program does not run under Valgrind, a few instructions): an op's magic is read from memory
 * the caller may never have written, by design (afs_queue_read: "an op needs no
 * initialising"); AFS__DEFINED tells Memcheck that such a read is meant. */
#if defined(__has_include) && !defined(_WIN32)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define AFS__DEFINED(p, n) ((void)VALGRIND_MAKE_MEM_DEFINED((p), (n)))
#define AFS__VALGRIND 1
#endif
#endif
#ifndef AFS__DEFINED
#define AFS__DEFINED(p, n) ((void)(p), (void)(n))
#endif

/* An op's magic, read as a value even where the memory was never written (see above). */
#define AFS__OP_MAGIC_READ(o, out)                                                            \
    do {                                                                                      \
        (out) = (o)->magic;                                                                   \
        AFS__DEFINED(&(out), sizeof(out));                                                    \
    } while (0)

/* One line into the caches; never faults. An asm statement, not __builtin_prefetch: a
 * compiler may drop a loop whose body is only that builtin (it has no effect the language
 * sees). */
static inline void afs__prefetch(const void *p)
{
#if defined(__GNUC__) && defined(__x86_64__)
    __asm__ volatile("prefetcht0 (%0)" : : "r"(p));
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__ volatile("prfm pldl1keep, [%0]" : : "r"(p));
#else
    (void)p;
#endif
}

struct afs__op {
    uintptr_t        magic;       /* AFS__MAGIC ^ address once queued: tells a live op from
                                     uninitialised memory */
    struct afs_list_node node;    /* the one list the op is on (queued, done, pool) */
    struct afs_file *file;
    afs_cb          *cb;
    /* With the public words, the fields so far are the op's first cache line when the op is
     * aligned to one: all that running its callback touches. */
    uint8_t  code;   /* enum afs__code */
    uint8_t  state;  /* enum afs__state */
    uint8_t  flags;  /* AFS__OP_*; not written while a pool worker runs the op */
    uint8_t  fsync_flags;
    uint8_t  eof;    /* AFS__OP_EOF_*: written by whoever runs the transfer (a pool worker) */
    uint8_t  arg;    /* storage ops: AFS_FALLOC_* mode, AFS_FADV_* advice, AFS_SYNC_RANGE_* */
    uint8_t  xflags; /* AFS__X_*: per-op options and the op's place in a chain */
    uint8_t  timed_out; /* cancelled for a corio deadline (its waiter says so before
                           afs_cancel): what a callback reports instead of -ECANCELED */
    union {
        void               *buf;
        const struct iovec *iov;
    } u;
    uint64_t off;    /* where the op starts */
    size_t   len;    /* bytes, or iovcnt for readv/writev */
    size_t   total;  /* bytes asked for */
    size_t   done;   /* bytes transferred so far */
    struct afs_op *chain_next; /* the chain member after this one, or NULL */
    /* The backend's words come before the arguments of socket and metadata ops: what a read
     * or write of a file touches from its setup to its callback (the public words, the fields
     * above and be[0]) is the op's first two lines. */
    uint64_t be[AFS__BACKEND_WORDS];
    union {
        struct afs__meta meta;
        struct afs__sock sock;
    };
};

_Static_assert(sizeof(struct afs__op) <= sizeof(((struct afs_op *)0)->private_),
               "struct afs__op must fit in struct afs_op");

static inline struct afs__op *afs__op(struct afs_op *op)
{
    return (struct afs__op *)(void *)op->private_.words;
}

/* The op whose afs__op.node n is. */
static inline struct afs_op *afs__op_of_node(struct afs_list_node *n)
{
    struct afs__op *o = AFS_LIST_ITEM(n, struct afs__op, node);
    return (struct afs_op *)(void *)((char *)o - offsetof(struct afs_op, private_));
}

_Static_assert(sizeof(void *) != 8 || offsetof(struct afs_op, private_) +
                                              offsetof(struct afs__op, u) == AFS__LINE,
               "an op's first line holds what running its callback touches");

/* Clears a new op's private part but the backend's words: the fields before them, and the
 * arguments of socket and metadata ops when `args` (a read or write of a file with offsets
 * never looks at them, and leaving them spares a line of writes per op). */
static inline void afs__op_clear(struct afs__op *o, bool args)
{
    memset(o, 0, offsetof(struct afs__op, be));
    if (args)
        memset(&o->meta, 0, sizeof *o - offsetof(struct afs__op, meta));
}

static inline bool afs__is_meta(const struct afs__op *o)
{
    return o->code >= AFS__OPENAT && o->code < AFS__CONNECT;
}

static inline bool afs__is_sock(const struct afs__op *o)
{
    return o->code >= AFS__CONNECT;
}

/* Ops of a file that move no data: fsync and the storage ops. */
static inline bool afs__is_ctl(const struct afs__op *o)
{
    return o->code >= AFS__FSYNC && o->code <= AFS__SYNC_RANGE;
}

/* afs__op.xflags */
#define AFS__X_DSYNC 0x01u /* a write durable when it completes (AFS_WRITE_DSYNC) */

#define AFS__X_LINKED 0x02u /* io_uring: staged with IOSQE_IO_LINK to chain_next */
#define AFS__X_ABSORB 0x04u /* the kernel will complete it with -ECANCELED because the link
                               before it broke on a short or transient transfer the core
                               resumes: that completion is no result */
#define AFS__X_GO     0x08u /* with X_ABSORB: the member before it finished well, start it
                               once that completion came */

static inline unsigned afs__write_xflags(unsigned afs_write_flags)
{
    return (afs_write_flags & AFS_WRITE_DSYNC) ? AFS__X_DSYNC : 0;
}

/* The most bytes one read or write system call / SQE is given; longer ops are split. */
#define AFS__MAGIC ((uintptr_t)0x61667330u)

#define AFS__CHUNK_MAX ((size_t)1 << 30)

/* Files and streams carry a magic too, checked on every public call, so a handle used after
 * its close (or never opened) aborts with the library's message instead of touching memory
 * that is someone else's by now. AFS__DEAD is written at close; the memory keeps it until the
 * allocator hands it out again (then only ASan or similar can tell). */
#define AFS__FILE_MAGIC   ((uintptr_t)0x61667346u)
#define AFS__STREAM_MAGIC ((uintptr_t)0x61667353u)
#define AFS__CTX_MAGIC    ((uintptr_t)0x61667343u)
#define AFS__DEAD         ((uintptr_t)0xdeadf11eu)

/* Aborts `call` with the library's message unless `word`, a handle's magic, says a live
 * object of the kind `magic` at obj: `dead` for one closed or freed (AFS__DEAD), `alien`
 * for memory that never was one. Every handle check of the library is this compare. */
/* A handle's magic word read as bytes, not through a member access: memory that is no handle
 * (what the check exists to catch) need not have the handle type's alignment. */
static inline uintptr_t afs__magic_at(const void *obj, size_t off)
{
    uintptr_t w;
    memcpy(&w, (const char *)obj + off, sizeof w);
    return w;
}
#define AFS__MAGIC_OF(p, type) afs__magic_at((p), offsetof(type, magic))

/* Open flags the library refuses: bits outside `allowed`, not exactly one access mode, or a
 * truncation of a file opened read-only (POSIX leaves O_RDONLY | O_TRUNC undefined; Linux
 * truncates). */
static inline bool afs__open_flags_bad(int flags, int allowed)
{
    int acc = flags & (AFS_RDONLY | AFS_WRONLY | AFS_RDWR);
    return (flags & ~allowed) || !(acc == AFS_RDONLY || acc == AFS_WRONLY || acc == AFS_RDWR) ||
           (acc == AFS_RDONLY && (flags & AFS_TRUNC));
}

static inline void afs__magic_check(uintptr_t word, uintptr_t magic, const void *obj,
                                    const char *call, const char *dead, const char *alien)
{
    if (word != (magic ^ (uintptr_t)obj))
        afs__panic(call, word == AFS__DEAD ? dead : alien);
}

/* The checks: abort naming `call` unless f / s is open, or ctx alive, and, for a context
 * bound to a thread (a runtime scheduler's), unless the caller is that thread. The _any
 * forms leave the thread out, for the calls documented for any thread. */
struct afs_file   *afs__file_check(struct afs_file *f, const char *call);
struct afs_file   *afs__file_check_any(struct afs_file *f, const char *call);
/* afs_close() but for the descriptor, which is returned, open, and is the caller's to close
 * (from any thread): the file leaves its context on the context's own thread. The SQLite
 * VFS keeps a database's descriptor open past its connection's close while another
 * connection holds the process's POSIX locks on it. */
intptr_t           afs__file_release(struct afs_file *f);
void               afs__ctx_check(const struct afs_ctx *ctx, const char *call);
void               afs__ctx_check_any(const struct afs_ctx *ctx, const char *call);

/* A runtime's scheduler binds its context to its thread while it runs: the calls on the
 * context, its files and its streams from any other thread then abort (docs/RUNTIME.md,
 * "Files"), where they would race with the scheduler. afs__ctx_bind() returns the thread's
 * binding before, which afs__ctx_unbind() restores. Contexts made by afs_ctx_new() are
 * never bound (one thread at a time, the header's rule). */
extern _Thread_local const struct afs_ctx *afs__bound_ctx AFS__TLS_HOT;
const struct afs_ctx *afs__ctx_bind(struct afs_ctx *ctx);
void                  afs__ctx_unbind(struct afs_ctx *ctx, const struct afs_ctx *prev);
void                  afs__ctx_thread_panic(const char *call, const char *what);
/* bound: ctx->bound, or a copy kept where ctx's own page is not otherwise touched (a
 * stream's, afs__streams_bound()). */
#define AFS__OWNER_CHECK_BOUND(bound, ctx, call, what)                                     \
    do {                                                                                   \
        if ((bound) && (ctx) != afs__bound_ctx)                                            \
            afs__ctx_thread_panic((call), (what));                                         \
    } while (0)
#define AFS__OWNER_CHECK(ctx, call, what) AFS__OWNER_CHECK_BOUND((ctx)->bound, ctx, call, what)

/* The part of an op still to transfer, as one buffer (read/write, or readv/writev whose
 * current iovec was partly done) or as an iovec array. */
struct afs__span {
    void               *buf;   /* non-NULL: one buffer of len bytes */
    size_t              len;
    const struct iovec *iov;   /* else: iovcnt iovecs */
    int                 iovcnt;
    uint64_t            off;
};
void afs__op_span(struct afs_op *op, struct afs__span *s);

/* A backend reports the result of one kernel transfer of op (its current span). The core
 * decides: retry (transient), continue (short transfer), or complete. Owner thread only. */
void afs__op_transferred(struct afs_ctx *ctx, struct afs_op *op, ssize_t res);
/* The same rules for an op still in flight that its runner retries itself (the readiness
 * engine): returns true when op needs another transfer (transient result, short transfer),
 * false when it was finished (afs__op_finished). */
bool afs__op_step(struct afs_ctx *ctx, struct afs_op *op, ssize_t res);

/* What a data op is to do, given with designated initialisers; the fields a kind of op does
 * not use stay 0 / NULL. */
struct afs__op_args {
    enum afs__code      code;        /* AFS__READ ... AFS__SYNC_RANGE */
    void               *buf;         /* read, write: len bytes */
    size_t              len;
    const struct iovec *iov;         /* readv, writev: iovcnt iovecs */
    int                 iovcnt;
    uint64_t            off;         /* AFS__OFF_SEQ on a file without offsets */
    unsigned            fsync_flags; /* fsync: AFS_FSYNC_* */
    uint64_t            range;       /* fallocate, fadvise, sync_file_range: the length (off is
                                        where it starts; ftruncate: off is the new size) */
    unsigned            arg;         /* their AFS_FALLOC_* mode, AFS_FADV_* advice or
                                        AFS_SYNC_RANGE_* flags */
    unsigned            xflags;      /* AFS__X_* */
    afs_cb             *cb;
    void               *data;
};

/* Validates an op and fills its private part (0 or -errno: nothing is touched on error);
 * afs__op_enqueue() then hands it to the context. The afs_queue_* calls are the two in a row;
 * the blocking calls run small ops inline between them instead. */
int  afs__op_setup(struct afs_op *op, struct afs_file *f, const struct afs__op_args *a);
/* afs__op_setup of a read (or write) with no options, its arguments in registers. */
int  afs__op_setup_rw(struct afs_op *op, struct afs_file *f, bool write, void *buf, size_t len,
                      uint64_t off, afs_cb *cb, void *data);
void afs__op_enqueue(struct afs_op *op);

/* Queues a read or write of a file without offsets (f->seq) at the descriptor's position.
 * Only one such op per direction may be in flight on a file: the kernel keeps no order
 * between them. `partial`: a read completes with the first bytes that arrive. */
int afs__queue_seq(struct afs_op *op, struct afs_file *f, bool write, void *buf, size_t len,
                   bool partial, afs_cb *cb, void *data);

/* Counts an op's end-of-file confirmations and skips (AFS__OP_EOF_*) in ctx->stats; for
 * ops that finish without afs__op_finished() (the inline path). Owner thread. */
void afs__op_count_eof(struct afs_ctx *ctx, struct afs_op *op);

/* Runs the whole op with blocking system calls on this thread; returns its final result.
 * Used by the thread pool, the sync backend and the inline path. */
ssize_t afs__op_run_sync(struct afs_op *op);

/* What a metadata op is to do, as struct afs__op_args. */
struct afs__meta_args {
    enum afs__code   code;   /* AFS__OPENAT ... AFS__SYNCFS */
    int              dirfd;  /* CLOSE and SYNCFS: the fd itself, no path */
    const char      *path;
    int              dirfd2; /* RENAMEAT: the new name */
    const char      *path2;
    int              flags;  /* AFS_* open flags, AFS_AT_*, AFS_RENAME_* */
    unsigned         perm;   /* OPENAT with AFS_CREAT, MKDIRAT */
    struct afs_stat *st;     /* STATX */
    afs_cb          *cb;
    void            *data;
};

/* Metadata ops: validates and fills op (as afs__op_setup; nothing is touched on error). The
 * op is counted on the context's pseudo-file ctx->meta. */
int afs__meta_setup(struct afs_op *op, struct afs_ctx *ctx, const struct afs__meta_args *a);

/* The metadata system calls, each once (the caller retries EINTR where that is safe); >= 0
 * or -errno. src/unix/sys.c, src/windows/sys.c (descriptors are HANDLE values there).
 * afs__sys_meta_supported() says whether they exist here at all. */
bool afs__sys_meta_supported(void);
int  afs__sys_openat(int dirfd, const char *path, int afs_flags, unsigned perm);
int  afs__sys_statx(int dirfd, const char *path, int afs_at_flags, struct afs_stat *st);
int  afs__sys_mkdirat(int dirfd, const char *path, unsigned perm);
int  afs__sys_renameat(int dirfd, const char *path, int dirfd2, const char *path2,
                       int afs_flags);
int  afs__sys_unlinkat(int dirfd, const char *path, int afs_at_flags);
int  afs__sys_rmtree_at(int dirfd, const char *path); /* -ENOTSUP on Windows */
int  afs__sys_syncfs(int fd);
int  afs__sys_fsync_fd(int fd, bool datasync); /* fsync of any fd (a directory's) */
/* afs_fsync_dir() where afs__sys_meta_supported() is false: open, flush, close. */
int  afs__sys_fsync_dir(const char *path);
/* afs_file_dio_align(): what the system says about direct I/O on fd. */
int  afs__sys_dio_info(afs__fd_t fd, struct afs_dio_align *out);
int  afs__sys_close_fd(int fd);
/* afs_file_from_fd(): checks that fd is open and clears O_NONBLOCK on it. */
int  afs__sys_fd_adopt(int fd);
/* afs_open() with AFS_NONBLOCK: the status flags of the open without O_NONBLOCK, in one
 * call (POSIX; nothing to do on Windows). */
int  afs__sys_opened_blocking(afs__fd_t fd, int afs_flags);
/* Linux: a struct statx (as the kernel filled it) into *st. */
void afs__sys_from_statx(const void *stx, struct afs_stat *st);
/* Translations for backends that pass them to the kernel themselves (io_uring). */
int  afs__sys_open_flags(int afs_flags);  /* O_* | O_CLOEXEC | O_NOCTTY */
int  afs__sys_at_flags(int afs_at_flags); /* AT_* */
int  afs__sys_dirfd(int dirfd);           /* AFS_AT_FDCWD -> AT_FDCWD */

/* ------------------------------------------------------------------------------------------
 * Op lists: list.h with a count
 * ---------------------------------------------------------------------------------------- */

struct afs__list {
    struct afs_list l;
    size_t          len;
};

void           afs__list_push(struct afs__list *l, struct afs_op *op);
void           afs__list_push_front(struct afs__list *l, struct afs_op *op);
struct afs_op *afs__list_pop(struct afs__list *l);
void           afs__list_remove(struct afs__list *l, struct afs_op *op);
void           afs__list_append(struct afs__list *dst, struct afs__list *src); /* empties src */

/* ------------------------------------------------------------------------------------------
 * Backends: one const table each (SQLite VFS style).
 * ---------------------------------------------------------------------------------------- */

/* A phase that stages thousands of ops hands them to the kernel in slices of this many (the
 * backend's flush), as they are staged, instead of all in the enter that ends the phase, so
 * that the kernel finishes each slice's requests (their state, the SQEs, the completions)
 * while they are likely still in the CPU's caches: at the end of one submission of 4,096
 * cached reads the first ones had been evicted by the data the rest copied, and 4,096 tasks
 * read 5-14% faster in slices (bench/README.md, eleventh round). Phases of fewer ops (the
 * usual ones) keep their one system call. */
#ifndef AFS__SUBMIT_SLICE
#define AFS__SUBMIT_SLICE 512u
#endif

#define AFS__READ_RULE_WINDOW_NS (10 * 1000 * 1000)

struct afs__backend {
    const char      *name;
    enum afs_backend id;
    /* Buffered reads staged in a phase reach the kernel in the phase's one system call,
     * which does the cached ones itself (io_uring): small cached reads in tasks may then be
     * cheaper through the batch than inline, which the context measures (file.c). */
    bool             batches_reads;
    /* Sets up ctx->be. On failure returns -errno and writes why into `why`.
     * -ENOSYS, -EPERM, -EACCES, -EINVAL, -ENOMEM and -ENOTSUP mean "not available here". */
    int  (*init)(struct afs_ctx *ctx, char *why, size_t why_len);
    void (*fini)(struct afs_ctx *ctx);
    /* Whether the backend runs this op itself (else the core gives it to the thread pool).
     * NULL: every op. */
    bool (*accepts)(struct afs_ctx *ctx, struct afs_op *op);
    /* Stage the op's current span for the next enter. Must not fail for transient reasons
     * (a full queue is flushed inside); returns 0 or -errno for the op. */
    int  (*prep)(struct afs_ctx *ctx, struct afs_op *op);
    /* One kernel call where possible: hand over what was staged, then wait until at least
     * one completion, a wake, or the timeout when `wait` is set (timeout_ns < 0: no limit).
     * Reports each completion with afs__op_transferred(). Returns >= 0 or -errno. */
    int  (*enter)(struct afs_ctx *ctx, bool wait, int64_t timeout_ns);
    /* Optional: hand what is staged to the kernel now, without waiting and without reporting
     * completions (the caller may be a task in its CPU phase: they are reported by the next
     * enter). Returns 0, or -errno when the kernel took nothing now (it goes with the next
     * enter). The core calls it every AFS__SUBMIT_SLICE staged ops. NULL: only enter submits. */
    int  (*flush)(struct afs_ctx *ctx);
    /* Ask the kernel to cancel an op in flight (best effort; the completion still comes). */
    void (*cancel)(struct afs_ctx *ctx, struct afs_op *op);
    /* Optional: f was just opened on ctx (iocp associates it with its completion port).
     * Returns 0, or -errno to fail the open. */
    int  (*open)(struct afs_ctx *ctx, struct afs_file *f);
    /* Optional: a metadata op the backend ran succeeded; turn the kernel's answer into the
     * caller's (io_uring's struct statx into struct afs_stat). */
    void (*meta_done)(struct afs_ctx *ctx, struct afs_op *op);
    /* Optional: whether the n ops of a chain from head (head, its chain_next...) can be
     * staged as one linked unit (io_uring: IOSQE_IO_LINK, set by prep on ops marked
     * AFS__X_LINKED); when it says yes, room for n entries is made and the core preps them
     * in a row, where prep must not fail. NULL: chains run one member at a time. */
    bool (*link)(struct afs_ctx *ctx, struct afs_op *head, unsigned n);
    /* Optional, with link: whether the kernel cancels what is linked after op when op fails.
     * A chain is linked up to and including its first member that does not cut (nothing is
     * linked after it); the rest starts once it succeeded. NULL: every op cuts. */
    bool (*link_cuts)(const struct afs_op *op);
    /* Optional, registration (src/core/reg.c checked the arguments). reg_buffers and
     * reg_files return 1 when the kernel took them, or 0 with the reason in `why` when ops
     * go on as plain ones. unreg_* drop what is registered. close: f's ops are all done and
     * its descriptor is about to be closed. */
    int  (*reg_buffers)(struct afs_ctx *ctx, const struct iovec *iov, unsigned nr, char *why,
                        size_t why_len);
    void (*unreg_buffers)(struct afs_ctx *ctx);
    int  (*reg_files)(struct afs_ctx *ctx, unsigned slots, char *why, size_t why_len);
    void (*unreg_files)(struct afs_ctx *ctx);
    void (*close)(struct afs_ctx *ctx, struct afs_file *f);
    /* Optional: afs_ctx_offload() (*out is zeroed before). */
    void (*offload)(const struct afs_ctx *ctx, struct afs_offload *out);
    /* Optional: whether the backend runs socket ops (and the reads and writes of socket
     * files) itself, with blocking descriptors; decided once at init. NULL or false: the
     * readiness engine runs them, on non-blocking descriptors. */
    bool (*sock)(struct afs_ctx *ctx);
    /* Optional: ask the kernel to cancel every op of f in flight (a socket being closed, or
     * on iocp a pipe opened read-only); their completions still come. */
    void (*cancel_file)(struct afs_ctx *ctx, struct afs_file *f);
    /* Optional: a sendfile op of ctx is finished for good, however it ended (even queued,
     * never staged: its backend words are then as the core zeroed them). io_uring takes its
     * pipe back. */
    void (*sendfile_end)(struct afs_ctx *ctx, struct afs_op *op);
    /* Optional: afs_ctx_sock_info() (*out is zeroed before). NULL: no multishot ops. */
    void (*sock_info)(const struct afs_ctx *ctx, struct afs_sock_info *out);
};

extern const struct afs__backend afs__backend_uring;
extern const struct afs__backend afs__backend_libaio;
extern const struct afs__backend afs__backend_posix_aio;
extern const struct afs__backend afs__backend_iocp;
extern const struct afs__backend afs__backend_threads;
extern const struct afs__backend afs__backend_sync;

/* Tests: io_uring contexts made from now on leave socket ops to the readiness engine, as on
 * a kernel without the opcodes; the engine uses poll() instead of epoll. */
extern bool afs__uring_no_sock;
extern bool afs__ready_poll_only;
/* Tests: sendfiles started from now on read the source and send it (as on FreeBSD and macOS)
 * instead of calling sendfile(2) (POSIX systems; no effect on Windows). */
extern bool afs__sendfile_rw;
/* Tests: the io_uring buffer ring of contexts made from now on (entries, a power of two, and
 * bytes each), and a result to take instead of its registration's (0: register). */
extern unsigned afs__uring_pbuf_entries, afs__uring_pbuf_size;
extern int      afs__uring_pbuf_err;
/* Tests: the one-shot receives a socket makes before it tries its multishot receive again,
 * at its first switch (256; doubled at each switch back, up to 32 times this). */
extern unsigned afs__uring_oneshot_gap;

/* ------------------------------------------------------------------------------------------
 * The thread pool (src/core/threads.c): threads started lazily, up to `base` as ops wait,
 * past it up to `max` only while workers are blocked in their ops.
 * ---------------------------------------------------------------------------------------- */

struct afs__pool;
int  afs__pool_new(struct afs_ctx *ctx, unsigned base, unsigned max, struct afs__pool **out);
/* The pool's live workers (tests). */
unsigned afs__pool_threads(struct afs__pool *p);
/* How long a worker beyond the base size waits for an op before it ends (tests shorten it). */
extern int64_t afs__pool_idle_ns;
void afs__pool_free(struct afs__pool *p);                 /* no op may be in flight */
void afs__pool_submit(struct afs__pool *p, struct afs_op *op);
bool afs__pool_cancel(struct afs__pool *p, struct afs_op *op); /* true: removed unstarted */
/* Moves finished ops to the owner: calls afs__op_finished() for each. Owner thread. */
void afs__pool_reap(struct afs__pool *p);

/* ------------------------------------------------------------------------------------------
 * Sockets (src/core/sock.c) and the readiness engine (src/unix/ready.c): socket ops of
 * contexts whose backend does not run them (afs__backend.sock) are tried at once on the
 * owner thread; one that would wait is parked on its file until the kernel says the socket
 * is ready, watched in the same wait the context makes (epoll, or poll()).
 * ---------------------------------------------------------------------------------------- */

/* Ops parked on one socket, per direction (0: receive side, 1: send side), in order. */
struct afs__ready_fd {
    struct afs__list q[2];
    bool             watched;  /* registered with the engine's kernel object */
    bool             retrying; /* a connect refused with EAGAIN heads q[1]: on r->retry */
    struct afs_list_node node; /* poll(): on the engine's list while it has parked ops */
    struct afs_list_node retry_node;
};

struct afs__ready;
/* Whether ctx's socket ops go to the readiness engine (its sockets are non-blocking). */
bool afs__sock_ready(const struct afs_ctx *ctx);
/* Runs op (owner thread, op in flight) at once, parking it when it would wait. */
void afs__ready_submit(struct afs_ctx *ctx, struct afs_op *op);
/* After a shutdown of f (SHUT_*): its sends waiting for room are tried again, as a shutdown
 * of the sending side ends them with -EPIPE (an AF_UNIX socket signals no readiness for it). */
void afs__ready_shut(struct afs_ctx *ctx, struct afs_file *f, int how);
/* Completes a parked op with -ECANCELED (or the bytes a send moved). */
void afs__ready_cancel(struct afs_ctx *ctx, struct afs_op *op);
/* Cancels every op parked on f and stops watching f (before its descriptor closes). */
void afs__ready_forget(struct afs_ctx *ctx, struct afs_file *f);
/* Runs the transfers of the sockets found ready, without blocking. Owner thread. */
void afs__ready_reap(struct afs_ctx *ctx);
/* Whether ops are parked (a backend whose wait the engine cannot join polls it then). */
bool afs__ready_parked(const struct afs_ctx *ctx);
/* The engine's descriptor while ops are parked (io_uring polls it), else -1. */
int  afs__ready_fd(struct afs_ctx *ctx);
/* timeout_ns (< 0: no limit) cut to when the engine retries a connect the kernel refused
 * with EAGAIN (a full AF_UNIX backlog), for a backend that waits outside afs__ctx_block(). */
int64_t afs__ready_timeout(struct afs_ctx *ctx, int64_t timeout_ns);
void afs__ready_free(struct afs_ctx *ctx);

/* The blocking wait of the backends with no kernel queue of their own (threads, sync, and
 * libaio's and posix-aio's idle waits): on the waker and, while ops are parked, on the
 * engine's sockets, up to timeout_ns (< 0: no limit). Returns AFS__WOKE_* bits: WAKER when
 * the waker was signalled (the caller drains it), SOCK when sockets are ready. */
#define AFS__WOKE_WAKER 1
#define AFS__WOKE_SOCK  2
int  afs__ctx_block(struct afs_ctx *ctx, int64_t timeout_ns);

/* The socket system calls (src/unix/sock.c, src/windows/sock.c). */
bool    afs__sys_sock_supported(void);
/* Closes a socket of the library (close(); Windows: closesocket). 0 or -errno. */
int     afs__sys_sock_close(afs__fd_t fd);
/* A new socket (or pair), close-on-exec, non-blocking when `nonblock`, no SIGPIPE. */
int     afs__sys_socket(int domain, int type, int protocol, bool nonblock, int *fd);
int     afs__sys_socketpair(int domain, int type, int protocol, bool nonblock, int fds[2]);
/* Makes an adopted socket fit the context: O_NONBLOCK as asked, no SIGPIPE (macOS). */
int     afs__sys_sock_adopt(int fd, bool nonblock);
/* Sets or clears O_NONBLOCK on fd (a pipe or FIFO for the readiness engine). 0 or -errno. */
int     afs__sys_set_nonblock(int fd, bool nonblock);
/* One attempt at op's current step: its result, or -EAGAIN when it would wait (then *in
 * says which side to wait for: true receive, false send). EINTR is retried inside. */
ssize_t afs__sys_sock_try(struct afs_op *op, bool *in);
/* Waits (blocking the thread) until fd is ready for one side; for the inline path. */
void    afs__sys_sock_poll(int fd, bool in);
/* Whether afs_queue_sendfile() can run here (POSIX: sendfile(2) on Linux, else the source
 * read into a buffer and sent, in the readiness engine and the inline path; io_uring splices
 * on its own; Windows: TransmitFile). */
bool    afs__sys_sendfile_supported(void);
/* A sendfile by read and send reads at most this many bytes of the source at a time, into a
 * buffer of the op's own (op->sock.bounce) that afs__sendfile_drop() frees. */
#define AFS__BOUNCE_MAX ((size_t)128 << 10)
/* Frees a sendfile op's buffer, if it has one (any thread; once the op is finished). */
void    afs__sendfile_drop(struct afs_op *op);
/* Sendfile by read and send, a piece at a time (POSIX, src/unix/sock.c): the next read of
 * the source into the op's buffer, allocated at the first (*at and *len aligned for a direct
 * I/O source; 0, -ENOMEM or -EINVAL), only while the buffer is empty (head == tail); the
 * read's result n taken (what to send: bytes, 0 at the source's end, or n's -errno); n bytes
 * of the buffer sent. */
int     afs__sendfile_span(struct afs_op *op, uint64_t *at, size_t *len);
ssize_t afs__sendfile_filled(struct afs_op *op, ssize_t n);
void    afs__sendfile_sent(struct afs_op *op, size_t n);
/* The MSG_* flags the library accepts from callers, per direction. */
bool    afs__sys_msg_flags_ok(bool send, int flags);
/* The accept4 flags for a new descriptor (close-on-exec, non-blocking as asked). */
int     afs__sys_accept_flags(bool nonblock);
/* The kernel's flags for a send: the caller's plus MSG_NOSIGNAL. MSG_WAITALL is taken out of
 * a receive's (the core loops instead, on every backend). */
int     afs__sys_msg_flags(bool send, int flags);
bool    afs__sys_msg_waitall(int flags);
/* A socket(2) type without the flags beside it (SOCK_NONBLOCK, SOCK_CLOEXEC). */
int     afs__sys_sock_type(int type);

/* ------------------------------------------------------------------------------------------
 * Contexts and files
 * ---------------------------------------------------------------------------------------- */

/* One party waiting for an op of this thread's context: `pending` is set when the op is
 * queued and cleared by afs__op_wait_done() from its callback; `w` and `co` name the task
 * suspended on it, if any. */
struct afs__op_waiting {
    bool               pending;
    struct afs_waiter *w;
    void              *co;
};

/* What a file's small reads in a task learned of its page cache (file.c, read_cached): the
 * share of reads that never wait that missed (of 1024, a moving average; 0 at open), what
 * a hit and a miss cost them (ns, moving averages; 0 until measured), whether such reads
 * now join the batch without asking (`off`), the reads between two that ask while off
 * (`gap`), and the reads since the last that asked (`tick`) and since the last timed
 * (`timed`). */
struct afs__probe {
    uint16_t misses;
    bool     off;
    uint8_t  tick;
    uint8_t  gap;
    uint8_t  timed;
    uint32_t hit_ns;
    uint32_t miss_ns;
};

struct afs_file {
    struct afs_ctx  *ctx;
    struct afs_list_node node;  /* on ctx->files */
    afs__fd_t        fd;
    int              flags;     /* AFS_* */
    enum afs_mode    mode;
    unsigned         dio_align; /* 0: no alignment rules */
    unsigned         inflight;  /* ops queued or in flight on this file */
    bool             seq;       /* no offsets (pipe, FIFO, socket, character device): reads
                                   and writes at the descriptor's position, one at a time */
    bool             sock;      /* a socket (seq too): socket ops, MSG_NOSIGNAL sends */
    bool             dgram;     /* a socket of messages (datagram, seqpacket): MSG_WAITALL
                                   takes one, an empty send is one */
    _Atomic int      seq_err;   /* an error that came after part of a read on a file
                                   without offsets (that op returned its count): the next
                                   transfer's result, as the kernel keeps a socket's; set
                                   where the op ran (a pool worker, for some files) */
    bool             polled;    /* its transfers go through the readiness engine where the
                                   context has one: a socket, or a pipe or FIFO made
                                   non-blocking for it (afs__file_attach) */
    bool             no_nowait; /* reads that never wait are refused here (afs__sys) */
    struct afs__probe probe;    /* whether small reads in a task ask the cache first */
    struct afs__ready_fd rdy;   /* the readiness engine's state for this socket */
    /* The file's size as last learned (fstat at open, afs_file_size()), -1 when unknown or
     * when a write of this file may have moved it. A short read that ends exactly there is
     * the end of file without a second read to confirm it. Read by pool threads. */
    _Atomic int64_t  size_hint;
    int64_t          open_size; /* the size the fstat of the open gave, -1 when not a
                                   regular file (afs_file_open_size) */
    struct afs__crash_file *crash; /* crash mode: what the simulator keeps of the file */
    uintptr_t        magic;     /* AFS__FILE_MAGIC ^ address while open, AFS__DEAD after close.
                                   Not in the first 32 bytes: free() keeps its lists there */
    unsigned         reg_slot;  /* io_uring: its registered-file slot + 1; 0 = none */
    bool             of_stream; /* a stream's own file: afs_fclose closes it, afs_close aborts */
    bool             be_pool;   /* the backend cannot take its transfers, the pool serves them
                                   (iocp: a handle that cannot join the port) */
    void            *be_sock;   /* io_uring: the socket's multishot state (uring_ms.c) */
    /* AFS__NB_*: opened with AFS_NONBLOCK, a regular file whose descriptor still has the
     * flag (reads and writes of the page cache ignore it), cleared only before the first op
     * set up on the file or afs_file_fd() (afs__file_settle), by one thread. */
    atomic_int       nb_open;

    /* The position API. */
    int64_t       pos;
    struct afs_op pos_op;
    ssize_t       last_res;
    struct afs__op_waiting pos_wait; /* .pending: pos_op queued, its callback not run */
};

/* struct afs_file's nb_open: the descriptor is as the file's flags say (the only state of
 * most files); O_NONBLOCK is still on it; one thread is taking it off. A negative value is
 * the -errno of the fcntl that failed to: kept, as the flag is. */
#define AFS__NB_SETTLED  0
#define AFS__NB_OPEN     1
#define AFS__NB_SETTLING 2

/* Clears the O_NONBLOCK that f's AFS_NONBLOCK open left on a regular file, once: the first
 * caller makes the fcntl, callers meanwhile wait for its outcome, later ones get it without
 * a system call. 0, or the fcntl's -errno (every later call too). Any thread. */
int afs__file_settle_slow(struct afs_file *f);
static inline int afs__file_settle(struct afs_file *f)
{
    /* Relaxed: SETTLED is final, stored (release) only once the fcntl has returned; a thread
     * that reads an older value takes the slow path, which reads it again (acquire). */
    return atomic_load_explicit(&f->nb_open, memory_order_relaxed) == AFS__NB_SETTLED
               ? 0
               : afs__file_settle_slow(f);
}

#define AFS__SPARE_MAX 8 /* stream chunk buffers a context keeps from closed streams */

struct afs_ctx {
    const struct afs__backend *be;
    void                      *be_state;
    struct afs_config          cfg;
    char                       why[256]; /* fallback reason, "" when none */
    uintptr_t                  magic;    /* AFS__CTX_MAGIC ^ address while alive, AFS__DEAD
                                            once freed (past the words an allocator writes) */
    bool                       bound;    /* a runtime scheduler's, bound to its thread while
                                            it runs (afs__ctx_bind) */

    struct afs__list queued;     /* queued, not handed over (includes resubmits, at front) */
    struct afs__list done;       /* completed, callback pending */
    unsigned         inflight;   /* handed to the backend or the pool */
    unsigned         peer_inflight; /* of those, ops of sockets and files without offsets:
                                       they wait on a peer and do not count against
                                       queue_depth (afs__op_waits_on_peer) */
    unsigned         staged;     /* prepped on the backend since its last enter or flush */
    bool             in_callback;
    /* afs_chain_begin() .. afs_chain_end(): the ops queued meanwhile, in order. */
    bool             chain_open;
    struct afs_op   *chain_head, *chain_tail;
    unsigned         chain_len;

    struct afs__pool *pool;      /* created on first use */
    struct afs__ready *ready;    /* the readiness engine, created on first use */
    afs__waker        waker;     /* signalled by the pool and by afs_ctx_wake() */
    atomic_bool       wake_requested;

    /* Small cached reads in tasks: inline (way 0) or through the batch (way 1), measured
     * (tune.h; file.c, read_cached), where read_rule_on, in windows of
     * AFS__READ_RULE_WINDOW_NS (cached reads come by the hundred thousand a second). */
    struct afs__tune  read_rule;
    bool              read_rule_on;
    struct afs_list   files;     /* open files, for afs_ctx_free() */
    struct afs_list   streams;   /* open streams (struct afs_stream), for afs_ctx_free() */
    struct afs_stats  stats;
    struct afs_file   meta;      /* the pseudo-file metadata ops are counted on: no fd, not in
                                    `files`; meta.ctx is set on first use */
    /* afs_ctx_register_buffers/files (src/core/reg.c): what the caller asked for, and why the
     * kernel does not have it ("" when it does, or nothing was asked). */
    unsigned          reg_bufs_asked, reg_bufs, reg_slots_asked, reg_slots;
    char              reg_bufs_why[160], reg_files_why[160];
    struct afs__crash *crash;    /* crash mode (afs_crash_enable), else NULL */
    uintptr_t         op_tag;    /* this context's number, in the upper half: in its ops' magic */
    /* Chunk buffers of closed streams, kept for the next afs_fopen (src/stream/stream.c):
     * all of spare_size bytes, already faulted in. */
    void             *spare[AFS__SPARE_MAX];
    unsigned          spare_n;
    size_t            spare_size;
};

/* Frees the spare stream buffers of ctx (afs_ctx_free; src/stream/stream.c). */
void afs__stream_spare_free(struct afs_ctx *ctx);
/* afs_fclose() of every stream still open on ctx (their writes are written), for
 * afs_ctx_free(). */
void afs__streams_close(struct afs_ctx *ctx);
/* A stream keeps its context's binding (afs__ctx_bind) and counts its own inline reads:
 * these keep those up to date, and add the counts to afs_ctx_stats()'s. */
void afs__streams_bound(struct afs_ctx *ctx);
void afs__streams_stats(const struct afs_ctx *ctx, struct afs_stats *out);

/* A busy op's magic: AFS__MAGIC ^ its address ^ its context's tag. The lower half says the
 * memory was an op once (afs_cancel); all of it, that it is queued on this context now: memory
 * left by an op of a context since freed (uninitialised stack) is not taken for a live op. */
#define AFS__MAGIC_LOW (((uintptr_t)1 << (sizeof(uintptr_t) * 4)) - 1)
static inline uintptr_t afs__op_magic(const struct afs_ctx *ctx, const struct afs_op *op)
{
    return AFS__MAGIC ^ (uintptr_t)op ^ ctx->op_tag;
}

/* The magic of an op not in the library's hands (set up, or its callback started): of no
 * context (tags start at 1). Only an op between afs__op_enqueue() (or a chain's hold) and its
 * callback carries its context's, so memory an op leaves, even partly overwritten since, is
 * never taken for a busy op; afs_cancel() still knows it for an op (-EALREADY). */
static inline uintptr_t afs__op_magic_idle(const struct afs_op *op)
{
    return AFS__MAGIC ^ (uintptr_t)op;
}

static inline void afs__op_set_idle(struct afs__op *o, const struct afs_op *op)
{
    o->state = AFS__IDLE;
    o->magic = afs__op_magic_idle(op);
}

/* Whether the context with this op_tag is alive (src/core/core.c). Any thread. */
bool afs__ctx_tag_alive(uintptr_t tag);
/* 0, or -EINVAL with afs_last_ctx_error()'s reason: what afs_ctx_new refuses in a config. */
int afs__config_check(const struct afs_config *cfg);

/* Queued and not yet called back, on ctx or another context alive: queueing op again is
 * -EBUSY. A busy op's magic differs from the idle one by its context's tag; memory an op of
 * a freed context left names a context that is gone, and is a fresh op. */
static inline bool afs__op_busy(const struct afs_ctx *ctx, struct afs_op *op)
{
    uintptr_t m;
    AFS__OP_MAGIC_READ(afs__op(op), m);
    uintptr_t tag = m ^ afs__op_magic_idle(op);
    uintptr_t low = ((uintptr_t)1 << (sizeof(uintptr_t) * 4)) - 1;
    if (tag == 0 || (tag & low) != 0 || afs__op(op)->state == AFS__IDLE)
        return false;
    return tag == ctx->op_tag || afs__ctx_tag_alive(tag);
}


/* Called by the core and the pool when an op is finished for good: moves it to ctx->done. */
void afs__op_finished(struct afs_ctx *ctx, struct afs_op *op, ssize_t res);

/* Ops of ctx not finished with: queued, in flight, or done with their callback still to run.
 * 0 means a wait on ctx now would reap nothing (the scheduler asks this; the layout of
 * struct afs_ctx stays the core's). */
size_t afs__ctx_pending(const struct afs_ctx *ctx);

/* Waits until ow->pending (struct afs__op_waiting, above) is false: suspends the calling task
 * through the thread's waiter when one is installed for ctx and a coroutine runs, else drives ctx
 * (errors of a wait itself are transient or repeat at the next one: the op's own result is what
 * counts). Returns 0, the waiter's error (e.g. -ETIMEDOUT when a deadline cancelled the op) with
 * the op done all the same, or -EDEADLK from inside a callback, where nothing can be waited for. */
int  afs__op_wait(struct afs_ctx *ctx, struct afs_op *op, struct afs__op_waiting *ow);
/* afs__op_wait inlined, for the blocking calls' hot path: one frame less on the task's stack
 * between the call and the waiter. */
static inline int afs__op_wait_inl(struct afs_ctx *ctx, struct afs_op *op,
                                   struct afs__op_waiting *ow)
{
    int ret = 0;
    while (ow->pending) {
        if (ctx->in_callback)
            return -EDEADLK;
        struct afs_waiter *w = afs_waiter_get();
        void *co = (w && w->ctx == ctx) ? w->current(w) : NULL;
        if (co) {
            ow->w = w;
            ow->co = co;
            int err = w->suspend(w, co, op);
            AFS_CHECK(!ow->pending, "waiter resumed a task before its op completed");
            if (err < 0 && !ret)
                ret = err;
        } else {
            (void)afs_ctx_wait(ctx, 1, -1);
        }
    }
    return ret;
}

/* Hands ctx's queued ops to the backend now, as the next afs_ctx_wait() does first, without
 * entering the kernel: a waiter calls it as a task suspends, while its op's lines are still
 * in the caches (the wait would read them back, with thousands of tasks, from memory). */
void afs__ctx_stage(struct afs_ctx *ctx);
/* From op's callback: clears ow->pending and resumes the task suspended on it, if any. */
void afs__op_wait_done(struct afs__op_waiting *ow, struct afs_op *op);

/* Fills in a file around its open descriptor f->fd (flags, mode, what fstat said in `info`,
 * or NULL to ask), lets the backend see it and links it into ctx's list (src/core/file.c).
 * On error nothing is linked and the descriptor is left to the caller. */
int  afs__file_attach(struct afs_ctx *ctx, struct afs_file *f, int flags, enum afs_mode mode,
                      const struct afs__fd_info *info);
/* Sockets: makes an attached socket fit ctx (non-blocking for the readiness engine); and,
 * before a file without offsets (socket, pipe, FIFO, tty) closes, cancels its ops still
 * waiting for the other end, which might never come (src/core/sock.c). */
int  afs__sock_attach(struct afs_ctx *ctx, struct afs_file *f);
void afs__seq_closing(struct afs_ctx *ctx, struct afs_file *f);

/* Whether closing f cancels its waiting ops first: a socket's (as documented for sockets), and
 * those of a pipe, FIFO or tty opened read-only, which can only be reads waiting for the other
 * end. A writable one's ops are waited for: a write's data must reach the reader. */
static inline bool afs__close_cancels(const struct afs_file *f)
{
    return f->sock || (f->seq && !(f->flags & (AFS_WRONLY | AFS_RDWR)));
}

/* The blocking calls: an op set up with afs__blocking_cb and an afs__op_waiting as its data
 * runs inline (inline_ok, or from a callback) or is queued and waited for. Returns its
 * result, or the waiter's error (-ETIMEDOUT...). */
void    afs__blocking_cb(struct afs_op *op);
ssize_t afs__blocking_run(struct afs_op *op, struct afs__op_waiting *ow, bool inline_ok);

/* Blocks until every op of f (or of the whole context when f is NULL) is done and its
 * callback ran; aborts naming `call` while a chain is open. */
int afs__ctx_drain(struct afs_ctx *ctx, struct afs_file *f, const char *call);
/* Closes the context's streams (flushing them), cancels the ops of its sockets and pipes
 * that might wait for ever, waits for every op, then closes every file: afs_ctx_free()'s
 * first step, and the crash simulator's reboot. */
void afs__ctx_close_all(struct afs_ctx *ctx, const char *call);

/* Blocking wait on the waker only, for backends with no kernel queue of their own. */
int afs__enter_waker(struct afs_ctx *ctx, bool wait, int64_t timeout_ns);

/* The crash simulator (src/core/crash.c), called only when ctx->crash is set. An op starts
 * (queued or run inline): counts it; -EIO once the power is cut (the op must not run) or
 * -ENOMEM, else 0. An op completed, before its callback (or after its inline run): records
 * it, and after the cut turns *res into -EIO. */
int  afs__crash_start(struct afs_ctx *ctx, struct afs_op *op);
void afs__crash_done(struct afs_ctx *ctx, struct afs_op *op, ssize_t *res);
/* A file was opened on a context in crash mode: the simulator takes note (a truncating open
 * is made here, as an undoable change, when trunc is set). 0 or -errno. path may be NULL. */
int  afs__crash_attach(struct afs_ctx *ctx, struct afs_file *f, const char *path, bool trunc);
void afs__crash_detach(struct afs_file *f);
/* afs_open's own open (outside a task) in crash mode: a token for the name it may create
 * (strict mode), given back with the result. */
void *afs__crash_open_begin(struct afs_ctx *ctx, const char *path, int flags);
void  afs__crash_open_end(struct afs_ctx *ctx, void *token, bool ok);
/* -EIO once the power is cut on ctx, else 0. */
int  afs__crash_gate(const struct afs_ctx *ctx);
void afs__crash_free(struct afs_ctx *ctx);

/* io_uring set-up for the contexts of a corio runtime (src/linux/uring.c): the next io_uring
 * context made on this thread attaches to the ring attach_fd's kernel workers (>= 0) and,
 * with single_issuer, is driven by this thread only. Consumed (reset) by that set-up. */
struct afs__ring_hint {
    int  attach_fd;
    bool single_issuer;
};
extern _Thread_local struct afs__ring_hint afs__ring_hint;
int  afs__uring_fd(struct afs_ctx *ctx);                       /* an io_uring context's */
bool afs__uring_msg(struct afs_ctx *from, struct afs_ctx *to, bool now); /* false: not sent */

/* The runtime's side of the above, on every platform: sets the hint where io_uring is built
 * (share: a context whose ring's workers to share, or NULL). */
void afs__ctx_ring_hint(struct afs_ctx *share, bool single_issuer);
/* Wakes `to` as afs_ctx_wake() does; from (the caller's own context, or NULL) may carry the
 * wake-up as a message instead of a write to to's waker (both on io_uring with
 * IORING_OP_MSG_RING): then true, and the message goes at once with whatever from has staged
 * when `now` (one submission, nothing reaped), else with from's next submission
 * (afs_ctx_wait), which must then come. */
bool afs__ctx_wake_from(struct afs_ctx *to, struct afs_ctx *from, bool now);

/* Formats "call: ENAME (hint)" into why. */
void afs__why(char *why, size_t len, const char *call, int err, const char *hint);
/* Appends one reason to the context's fallback reason ("a; b"), cut at its size. */
void afs__add_why(struct afs_ctx *ctx, const char *why);

/* The symbolic name of an errno value ("EPERM"), or "E?" */
const char *afs__errno_name(int err);

#endif
