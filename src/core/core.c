/* Contexts, backend selection, buffers, errors and the op lists. */
#include "internal.h"

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn void afs__panic(const char *where, const char *msg)
{
    fprintf(stderr, "asyncfs: %s: %s\n", where, msg);
    fflush(stderr);
    abort();
}

#define AFS_STR_(x) #x
#define AFS_STR(x) AFS_STR_(x)

const char *afs_version(void)
{
    return AFS_STR(ASYNCFS_VERSION_MAJOR) "." AFS_STR(ASYNCFS_VERSION_MINOR) "."
        AFS_STR(ASYNCFS_VERSION_PATCH);
}

/* ------------------------------------------------------------------------------------------
 * Lists
 * ---------------------------------------------------------------------------------------- */

void afs__list_push(struct afs__list *l, struct afs_op *op)
{
    afs_list_push_back(&l->l, &afs__op(op)->node);
    l->len++;
}

void afs__list_push_front(struct afs__list *l, struct afs_op *op)
{
    afs_list_push_front(&l->l, &afs__op(op)->node);
    l->len++;
}

void afs__list_remove(struct afs__list *l, struct afs_op *op)
{
    afs_list_remove(&l->l, &afs__op(op)->node);
    l->len--;
}

struct afs_op *afs__list_pop(struct afs__list *l)
{
    struct afs_list_node *n = afs_list_pop_front(&l->l);
    if (!n)
        return NULL;
    l->len--;
    return afs__op_of_node(n);
}

void afs__list_append(struct afs__list *dst, struct afs__list *src)
{
    afs_list_splice(&dst->l, &src->l, false);
    dst->len += src->len;
    src->len = 0;
}

size_t afs__ctx_pending(const struct afs_ctx *ctx)
{
    return ctx->queued.len + ctx->inflight + ctx->done.len;
}

/* ------------------------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------------------------- */

/* POSIX's texts for the errno values the library returns, for C libraries whose strerror()
 * has none for them (Windows' CRT knows ECANCELED, ENOTSUP, ETIMEDOUT... only as numbers). */
static const char *posix_text(int err)
{
    switch (err) {
    case ECANCELED: return "Operation canceled";
    case ENOTSUP: return "Operation not supported";
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP: return "Operation not supported";
#endif
    case EALREADY: return "Operation already in progress";
    case ETIMEDOUT: return "Connection timed out";
    case EDEADLK: return "Resource deadlock avoided";
    case EOVERFLOW: return "Value too large for defined data type";
    case ELOOP: return "Too many levels of symbolic links";
    /* The network's (MinGW's C library knows none of them). */
    case ECONNREFUSED: return "Connection refused";
    case ECONNRESET: return "Connection reset by peer";
    case ECONNABORTED: return "Software caused connection abort";
    case ENOTCONN: return "Transport endpoint is not connected";
    case EISCONN: return "Transport endpoint is already connected";
    case ENETUNREACH: return "Network is unreachable";
    case EHOSTUNREACH: return "No route to host";
    case ENETDOWN: return "Network is down";
    case ENETRESET: return "Network dropped connection on reset";
    case EADDRINUSE: return "Address already in use";
    case EADDRNOTAVAIL: return "Cannot assign requested address";
    case ENOTSOCK: return "Socket operation on non-socket";
    case EAFNOSUPPORT: return "Address family not supported by protocol";
    case EPROTONOSUPPORT: return "Protocol not supported";
    case EPROTOTYPE: return "Protocol wrong type for socket";
    case ENOPROTOOPT: return "Protocol not available";
    case ENOBUFS: return "No buffer space available";
    case EMSGSIZE: return "Message too long";
    case EINPROGRESS: return "Operation now in progress";
    case EDESTADDRREQ: return "Destination address required";
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK: return "Resource temporarily unavailable";
#endif
    default: return NULL;
    }
}

const char *afs_strerror(int err)
{
    if (err == 0)
        return "Success";
    /* The system's own text for every errno value: a kernel EBUSY reads as any other program
     * would show it. What the library means by a code is documented on the call that returns
     * it. strerror() is not thread-safe in general; glibc's is for known values. Copy into a
     * per-thread buffer so the pointer stays valid for this thread. */
    static _Thread_local char buf[128];
    if (err == INT_MIN) { /* no errno value, and -INT_MIN overflows */
        snprintf(buf, sizeof buf, "Unknown error %d", err);
        return buf;
    }
    if (err < 0)
        err = -err;
    const char *s = strerror(err);
    const char *posix = posix_text(err);
    if (posix && (!s || !*s || strncmp(s, "Unknown error", 13) == 0))
        s = posix;
    snprintf(buf, sizeof buf, "%s", s ? s : "Unknown error");
    return buf;
}

const char *afs__errno_name(int err)
{
    if (err < 0 && err != INT_MIN)
        err = -err;
    switch (err) {
#define E(x) case x: return #x;
        E(EPERM) E(ENOENT) E(EINTR) E(EIO) E(EBADF) E(EAGAIN) E(ENOMEM) E(EACCES)
        E(EBUSY) E(EEXIST) E(EINVAL) E(ENFILE) E(EMFILE) E(ENOSPC) E(ENOSYS)
        E(ENOTSUP) E(ECANCELED) E(EFAULT) E(EROFS) E(EFBIG)
        E(ELOOP) E(EISDIR) E(ENOTDIR) E(ETIMEDOUT) E(EDEADLK)
#undef E
    default: return "E?";
    }
}

void afs__why(char *why, size_t len, const char *call, int err, const char *hint)
{
    if (hint && *hint)
        snprintf(why, len, "%s: %s (%s)", call, afs__errno_name(err), hint);
    else
        snprintf(why, len, "%s: %s", call, afs__errno_name(err));
}

/* ------------------------------------------------------------------------------------------
 * Configuration and backend choice
 * ---------------------------------------------------------------------------------------- */

void afs_config_default(struct afs_config *cfg)
{
    AFS_CHECK(cfg != NULL, "cfg is NULL");
    memset(cfg, 0, sizeof *cfg);
    cfg->queue_depth = 1024;
    cfg->sync_threshold = 4096;
    cfg->backend = AFS_BACKEND_AUTO;
}

static const struct afs__backend *const backends[] = {
#ifdef AFS_HAVE_URING
    &afs__backend_uring,
#endif
#ifdef AFS_HAVE_LIBAIO
    &afs__backend_libaio,
#endif
#ifdef AFS_HAVE_POSIX_AIO
    &afs__backend_posix_aio,
#endif
#ifdef AFS_HAVE_IOCP
    &afs__backend_iocp,
#endif
    &afs__backend_threads,
    &afs__backend_sync,
};
#define NBACKENDS (sizeof backends / sizeof backends[0])

/* The AUTO ladder, best first. posix-aio is part of it only where it is the native choice
 * (BSD, macOS); on Linux it is built for testing and used when asked for. */
static const enum afs_backend ladder[] = {
    AFS_BACKEND_IO_URING,
    AFS_BACKEND_LIBAIO,
#ifdef AFS_HAVE_POSIX_AIO_NATIVE
    AFS_BACKEND_POSIX_AIO,
#endif
    AFS_BACKEND_IOCP,
    AFS_BACKEND_THREADS,
};

static const char *const backend_names[] = {
    [AFS_BACKEND_AUTO] = "auto",           [AFS_BACKEND_IO_URING] = "io_uring",
    [AFS_BACKEND_LIBAIO] = "libaio",       [AFS_BACKEND_POSIX_AIO] = "posix-aio",
    [AFS_BACKEND_IOCP] = "iocp",           [AFS_BACKEND_THREADS] = "threads",
    [AFS_BACKEND_SYNC] = "sync",
};

static const struct afs__backend *backend_by_id(enum afs_backend id)
{
    for (size_t i = 0; i < NBACKENDS; i++)
        if (backends[i]->id == id)
            return backends[i];
    return NULL;
}

/* Names accepted in ASYNCFS_BACKEND: the ones afs_ctx_backend() reports, any case, with '-'
 * and '_' interchangeable. Returns -1 for an unknown name. */
static int backend_from_name(const char *s)
{
    for (size_t id = 0; id < sizeof backend_names / sizeof backend_names[0]; id++) {
        const char *n = backend_names[id];
        size_t i = 0;
        for (; n[i] && s[i]; i++) {
            char a = (char)tolower((unsigned char)s[i]), b = n[i];
            if (a == '_')
                a = '-';
            if (b == '_')
                b = '-';
            if (a != b)
                break;
        }
        if (!n[i] && !s[i])
            return (int)id;
    }
    return -1;
}

/* A rung of the ladder left out of this build (CMakeLists.txt: AFS_<name>_LEFT_OUT is 1 when
 * its library was missing, 2 when it was switched off): AUTO names it in its reason. */
static const char *left_out_why(enum afs_backend id)
{
#ifdef AFS_URING_LEFT_OUT
    if (id == AFS_BACKEND_IO_URING)
        return AFS_URING_LEFT_OUT == 1 ? "io_uring: not built (liburing missing at build time)"
                                       : "io_uring: not built (ASYNCFS_URING=OFF)";
#endif
#ifdef AFS_LIBAIO_LEFT_OUT
    if (id == AFS_BACKEND_LIBAIO)
        return AFS_LIBAIO_LEFT_OUT == 1 ? "libaio: not built (libaio missing at build time)"
                                        : "libaio: not built (ASYNCFS_LIBAIO=OFF)";
#endif
    (void)id;
    return NULL;
}

/* Adds one rung's reason to AUTO's: "io_uring_setup: ...; io_setup: ..." */
void afs__add_why(struct afs_ctx *ctx, const char *why)
{
    size_t n = strlen(ctx->why);
    snprintf(ctx->why + n, sizeof ctx->why - n, "%s%s", n ? "; " : "", why);
}

static bool unavailable(int err)
{
    return err == -ENOSYS || err == -EPERM || err == -EACCES || err == -EINVAL ||
           err == -ENOMEM || err == -ENOTSUP || err == -EOPNOTSUPP || err == -EAGAIN;
}

/* *heap (may be NULL) is set when the init failed without a reason: a heap allocation that
 * failed (-ENOMEM), as opposed to a kernel refusal, which names its call. */
static int backend_init(struct afs_ctx *ctx, const struct afs__backend *be, char *why,
                        size_t why_len, bool *heap)
{
    ctx->be = be;
    ctx->be_state = NULL;
    why[0] = '\0';
    int err = be->init(ctx, why, why_len);
    if (heap)
        *heap = err == -ENOMEM && !why[0];
    if (err < 0) {
        ctx->be = NULL;
        if (!why[0])
            afs__why(why, why_len, be->name, err, NULL);
    }
    return err;
}

/* Why the last afs_ctx_new() of this thread failed, "" after a success. */
static _Thread_local char tls_ctx_error[sizeof ((struct afs_ctx *)0)->why + 64];

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int ctx_error(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_ctx_error, sizeof tls_ctx_error, fmt, ap);
    va_end(ap);
    return err;
}

const char *afs_last_ctx_error(void)
{
    return tls_ctx_error[0] ? tls_ctx_error : NULL;
}

static int choose_backend(struct afs_ctx *ctx)
{
    enum afs_backend want = ctx->cfg.backend;
    /* Who asked for a backend by name, for the messages: "ASYNCFS_BACKEND=x" or "backend x". */
    char src[64];
    snprintf(src, sizeof src, "backend %s", backend_names[want]);
    if (want == AFS_BACKEND_AUTO) {
        const char *env = getenv("ASYNCFS_BACKEND");
        if (env && *env) {
            int id = backend_from_name(env);
            snprintf(src, sizeof src, "ASYNCFS_BACKEND=%.40s", env);
            if (id < 0)
                return ctx_error(-EINVAL, "%s: unknown backend (io_uring, libaio, posix-aio, "
                                          "iocp, threads, sync or auto)", src);
            want = (enum afs_backend)id;
        }
    }
    char why[sizeof ctx->why];
    if (want != AFS_BACKEND_AUTO) {
        /* Asked for by name: that backend or -ENOTSUP, never a silent substitute. */
        const struct afs__backend *be = backend_by_id(want);
        if (!be) {
            const char *lo = left_out_why(want);
            if (lo)
                snprintf(ctx->why, sizeof ctx->why, "%s", lo);
            else
                snprintf(ctx->why, sizeof ctx->why, "%s: not built on this platform",
                         backend_names[want]);
            return ctx_error(-ENOTSUP, "%s: %s", src, ctx->why);
        }
        bool heap = false;
        int err = backend_init(ctx, be, why, sizeof why, &heap);
        if (err < 0) {
            snprintf(ctx->why, sizeof ctx->why, "%s", why);
            /* Out of memory is the caller's condition, not the backend's absence. */
            return ctx_error(unavailable(err) && !heap ? -ENOTSUP : err, "%s: %s", src, why);
        }
        return 0;
    }
    int first_err = 0;
    for (size_t i = 0; i < sizeof ladder / sizeof ladder[0]; i++) {
        const struct afs__backend *be = backend_by_id(ladder[i]);
        if (!be) {
            const char *left_out = left_out_why(ladder[i]);
            if (left_out)
                afs__add_why(ctx, left_out);
            continue;
        }
#ifdef AFS__VALGRIND
        if (ladder[i] == AFS_BACKEND_IO_URING && RUNNING_ON_VALGRIND) {
            /* Valgrind sees neither what the kernel writes through the rings nor that
             * io_uring_enter may block (a wake from another thread never comes). */
            afs__add_why(ctx, "io_uring: not used under Valgrind, which cannot follow it "
                         "(ASYNCFS_BACKEND=io_uring forces it)");
            continue;
        }
#endif
        int err = backend_init(ctx, be, why, sizeof why, NULL);
        if (err == 0)
            return 0;
        if (!first_err)
            first_err = err;
        /* Each rung that failed says why, in order. */
        afs__add_why(ctx, why);
        if (!unavailable(err) || (ctx->cfg.flags & AFS_CTX_NO_FALLBACK))
            return ctx_error(err, "%s: %s", ctx->cfg.flags & AFS_CTX_NO_FALLBACK
                                                ? "AFS_CTX_NO_FALLBACK" : "auto", ctx->why);
    }
    return ctx_error(first_err ? first_err : -ENOTSUP, "auto: %s",
                     ctx->why[0] ? ctx->why : "no backend available");
}

/* The tags of the contexts alive (afs__ctx_tag_alive): few, and asked only when an op's
 * magic names a context other than the one it is queued on. */
static afs__mutex live_mu = AFS__MUTEX_INITIALIZER;
static uintptr_t *live_tags;
static size_t     live_n, live_cap;

#if !defined(_WIN32)
/* fork(): the child must find live_mu free, whatever another thread of the parent was doing
 * (making or freeing a context); the parent's tags it inherits name nothing it will use. */
static void live_fork_prepare(void) { afs__mutex_lock(&live_mu); }
static void live_fork_release(void) { afs__mutex_unlock(&live_mu); }
static pthread_once_t live_fork_once = PTHREAD_ONCE_INIT;
static void live_fork_register(void)
{
    (void)pthread_atfork(live_fork_prepare, live_fork_release, live_fork_release);
}
#endif

static bool live_add(uintptr_t tag)
{
#if !defined(_WIN32)
    pthread_once(&live_fork_once, live_fork_register);
#endif
    afs__mutex_lock(&live_mu);
    if (live_n == live_cap) {
        size_t cap = live_cap ? live_cap * 2 : 16;
        uintptr_t *p = afs__sys.realloc(live_tags, cap * sizeof *p);
        if (!p) {
            afs__mutex_unlock(&live_mu);
            return false;
        }
        live_tags = p;
        live_cap = cap;
    }
    live_tags[live_n++] = tag;
    afs__mutex_unlock(&live_mu);
    return true;
}

static void live_remove(uintptr_t tag)
{
    afs__mutex_lock(&live_mu);
    for (size_t i = 0; i < live_n; i++)
        if (live_tags[i] == tag) {
            live_tags[i] = live_tags[--live_n];
            break;
        }
    if (live_n == 0) {
        free(live_tags); /* nothing left for a leak checker to report */
        live_tags = NULL;
        live_cap = 0;
    }
    afs__mutex_unlock(&live_mu);
}

bool afs__ctx_tag_alive(uintptr_t tag)
{
    bool alive = false;
    afs__mutex_lock(&live_mu);
    for (size_t i = 0; i < live_n && !alive; i++)
        alive = live_tags[i] == tag;
    afs__mutex_unlock(&live_mu);
    return alive;
}

int afs__config_check(const struct afs_config *cfg)
{
    if (cfg->queue_depth == 0 || cfg->queue_depth > AFS_MAX_QUEUE_DEPTH)
        return ctx_error(-EINVAL, "afs_config: queue_depth is 0 or above "
                                  "AFS_MAX_QUEUE_DEPTH");
    if ((cfg->alloc == NULL) != (cfg->release == NULL))
        return ctx_error(-EINVAL, "afs_config: alloc and release go together");
    if (cfg->flags & ~(AFS_CTX_NO_FALLBACK | AFS_CTX_INLINE_DIRECT | AFS_CTX_OFFLOAD_DIRECT |
                       AFS_CTX_PLAIN_SOCKETS | AFS_CTX_INLINE_SMALL))
        return ctx_error(-EINVAL, "afs_config: unknown flags");
    if ((cfg->flags & AFS_CTX_INLINE_DIRECT) && (cfg->flags & AFS_CTX_OFFLOAD_DIRECT))
        return ctx_error(-EINVAL, "afs_config: AFS_CTX_INLINE_DIRECT and "
                                  "AFS_CTX_OFFLOAD_DIRECT together");
    if ((unsigned)cfg->backend > AFS_BACKEND_SYNC)
        return ctx_error(-EINVAL, "afs_config: unknown backend");
    return 0;
}

int afs_ctx_new(struct afs_ctx **out, const struct afs_config *cfg)
{
    AFS_CHECK(out != NULL, "out is NULL");
    *out = NULL;
    tls_ctx_error[0] = '\0';
    struct afs_config def;
    if (!cfg) {
        afs_config_default(&def);
        cfg = &def;
    }
    int bad = afs__config_check(cfg);
    if (bad < 0)
        return bad;

    struct afs_ctx *ctx = afs__sys.calloc(1, sizeof *ctx);
    if (!ctx)
        return ctx_error(-ENOMEM, "out of memory");
    ctx->cfg = *cfg;
    ctx->magic = AFS__CTX_MAGIC ^ (uintptr_t)ctx;
    static atomic_uint ctx_numbers;
    do /* never 0 (an idle op's): numbers wrap in the upper half on 32-bit systems */
        ctx->op_tag = (uintptr_t)(atomic_fetch_add(&ctx_numbers, 1) + 1)
                      << (sizeof(uintptr_t) * 4);
    while (ctx->op_tag == 0);
    if (!live_add(ctx->op_tag)) {
        free(ctx);
        return ctx_error(-ENOMEM, "out of memory");
    }
    atomic_init(&ctx->wake_requested, false);
    int err = afs__waker_open(&ctx->waker);
    if (err < 0) {
        live_remove(ctx->op_tag);
        free(ctx);
        return ctx_error(err, "the context's waker: %s", afs__errno_name(err));
    }
    err = choose_backend(ctx);
    if (err < 0) {
        afs__waker_close(&ctx->waker);
        live_remove(ctx->op_tag);
        free(ctx);
        return err;
    }
    /* A backend that was asked for is not a fallback; only AUTO reports a reason. */
    if (ctx->why[0] && ctx->be->id == ladder[0])
        ctx->why[0] = '\0';
    afs__tune_init(&ctx->read_rule, AFS__READ_RULE_WINDOW_NS);
    ctx->read_rule_on = ctx->be->batches_reads && !(cfg->flags & AFS_CTX_INLINE_SMALL) &&
                        cfg->sync_threshold > 0;
    *out = ctx;
    return 0;
}

_Static_assert(offsetof(struct afs_ctx, magic) >= 32, "magic clear of malloc's words");

/* Every public call on a context starts here: NULL, a freed context and memory that is not
 * one abort with the call's name, in release builds too. */
void afs__ctx_check_any(const struct afs_ctx *ctx, const char *call)
{
    if (!ctx)
        afs__panic(call, "ctx is NULL");
    afs__magic_check(AFS__MAGIC_OF(ctx, struct afs_ctx), AFS__CTX_MAGIC, ctx, call,
                     "context was freed (used after afs_ctx_free, or freed twice)",
                     "not a context (freed, or never made by afs_ctx_new)");
}

void afs__ctx_check(const struct afs_ctx *ctx, const char *call)
{
    afs__ctx_check_any(ctx, call);
    AFS__OWNER_CHECK(ctx, call, "context");
}

_Thread_local const struct afs_ctx *afs__bound_ctx AFS__TLS_HOT;

const struct afs_ctx *afs__ctx_bind(struct afs_ctx *ctx)
{
    const struct afs_ctx *prev = afs__bound_ctx;
    ctx->bound = true;
    afs__streams_bound(ctx);
    afs__bound_ctx = ctx;
    return prev;
}

void afs__ctx_unbind(struct afs_ctx *ctx, const struct afs_ctx *prev)
{
    ctx->bound = false;
    afs__streams_bound(ctx);
    afs__bound_ctx = prev;
}

void afs__ctx_thread_panic(const char *call, const char *what)
{
    char msg[200];
    snprintf(msg, sizeof msg,
             "the %s belongs to another scheduler of a runtime (use it from a task of the "
             "scheduler whose context it is on)", what);
    afs__panic(call, msg);
}

void afs__ctx_close_all(struct afs_ctx *ctx, const char *call)
{
    afs__streams_close(ctx); /* as exit() flushes stdio's: what was written is written */
    /* Ops waiting on a socket or pipe might wait for ever (as afs_close() says). */
    for (struct afs_list_node *n = ctx->files.first; n; n = n->next) {
        struct afs_file *f = AFS_LIST_ITEM(n, struct afs_file, node);
        if (afs__close_cancels(f))
            afs__seq_closing(ctx, f);
    }
    afs__ctx_drain(ctx, NULL, call);
    while (ctx->files.first)
        afs_close(AFS_LIST_ITEM(ctx->files.first, struct afs_file, node));
}

void afs_ctx_free(struct afs_ctx *ctx)
{
    afs__ctx_check_any(ctx, __func__);
    AFS_CHECK(!ctx->in_callback, "called from a callback");
    afs__ctx_close_all(ctx, __func__);
    afs__stream_spare_free(ctx);
    afs__crash_free(ctx);
    if (ctx->pool)
        afs__pool_free(ctx->pool);
    ctx->be->fini(ctx);
    afs__ready_free(ctx);
    afs__waker_close(&ctx->waker);
    live_remove(ctx->op_tag);
    /* volatile: a store right before free() is otherwise dropped as dead. */
    *(volatile uintptr_t *)&ctx->magic = AFS__DEAD;
    free(ctx);
}

const char *afs_ctx_backend(const struct afs_ctx *ctx)
{
    afs__ctx_check_any(ctx, __func__);
    return ctx->be->name;
}

const char *afs_ctx_fallback_reason(const struct afs_ctx *ctx)
{
    afs__ctx_check_any(ctx, __func__);
    return ctx->why[0] ? ctx->why : NULL;
}

void afs_ctx_stats(const struct afs_ctx *ctx, struct afs_stats *out)
{
    afs__ctx_check(ctx, __func__);
    AFS_CHECK(out != NULL, "out is NULL");
    *out = ctx->stats;
    afs__streams_stats(ctx, out);
}

int afs_ctx_wake(struct afs_ctx *ctx)
{
    afs__ctx_check_any(ctx, __func__);
    atomic_store_explicit(&ctx->wake_requested, true, memory_order_release);
    afs__waker_signal(&ctx->waker);
    return 0;
}

void afs__ctx_ring_hint(struct afs_ctx *share, bool single_issuer)
{
#ifdef AFS_HAVE_URING
    afs__ring_hint.attach_fd =
        share && share->be == &afs__backend_uring ? afs__uring_fd(share) : -1;
    afs__ring_hint.single_issuer = single_issuer;
#else
    (void)share;
    (void)single_issuer;
#endif
}

bool afs__ctx_wake_from(struct afs_ctx *to, struct afs_ctx *from, bool now)
{
    AFS_CHECK(to != NULL, "ctx is NULL");
    atomic_store_explicit(&to->wake_requested, true, memory_order_release);
#ifdef AFS_HAVE_URING
    if (from && from != to && from->be == &afs__backend_uring &&
        to->be == &afs__backend_uring && afs__uring_msg(from, to, now))
        return true;
#else
    (void)from;
    (void)now;
#endif
    afs__waker_signal(&to->waker);
    return false;
}

/* ------------------------------------------------------------------------------------------
 * Buffers
 * ---------------------------------------------------------------------------------------- */

#define AFS__BUF_ALIGN 4096

void *afs_buf_alloc(struct afs_ctx *ctx, size_t size)
{
    afs__ctx_check_any(ctx, __func__);
    if (size == 0)
        size = 1;
    if (ctx->cfg.alloc) {
        void *p = ctx->cfg.alloc(size, ctx->cfg.alloc_user);
        /* A user allocator that breaks the alignment promise would make direct I/O fail
         * later in a confusing way; refuse its buffer now. */
        if (p && ((uintptr_t)p % AFS__BUF_ALIGN) != 0) {
            ctx->cfg.release(p, size, ctx->cfg.alloc_user);
            return NULL;
        }
        return p;
    }
    return afs__aligned_alloc(size, AFS__BUF_ALIGN);
}

void afs_buf_free(struct afs_ctx *ctx, void *buf, size_t size)
{
    afs__ctx_check_any(ctx, __func__);
    if (!buf)
        return;
    if (size == 0)
        size = 1;
    if (ctx->cfg.release)
        ctx->cfg.release(buf, size, ctx->cfg.alloc_user);
    else
        afs__aligned_free(buf, size);
}

/* ------------------------------------------------------------------------------------------
 * The per-thread waiter
 * ---------------------------------------------------------------------------------------- */

static _Thread_local struct afs_waiter *tls_waiter;

struct afs_waiter *afs_waiter_set(struct afs_waiter *w)
{
    struct afs_waiter *old = tls_waiter;
    tls_waiter = w;
    return old;
}

struct afs_waiter *afs_waiter_get(void)
{
    return tls_waiter;
}
