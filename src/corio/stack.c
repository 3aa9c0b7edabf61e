/* Coroutine stacks with guard pages, a per-pool cache, and the overflow reporter. See stack.h.
 *
 * The guard registry is what lets the SIGSEGV handler tell a stack overflow from any other
 * fault, for stacks of every pool on every thread. The handler may only read it with atomic
 * loads (async-signal-safe, lock-free); writers serialise on a mutex. Slots live in chunks
 * that are never freed, so a reader never follows a dangling pointer; a freed slot has
 * start == 0 and is reused by the next registration. */
#include "stack.h"
#include "switch.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <sys/uio.h>
#endif

#if CORIO__ASAN
#include <sanitizer/asan_interface.h>
#define CORIO__UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define CORIO__UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Valgrind, where its headers were found at build time: each stack registered as one, so
 * that Memcheck follows the switches between them (no-ops when not under Valgrind). */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define CORIO__VG_REGISTER(lo, hi) VALGRIND_STACK_REGISTER((lo), (hi))
#define CORIO__VG_DEREGISTER(id)   VALGRIND_STACK_DEREGISTER(id)
#define CORIO__VG_RUNNING()        RUNNING_ON_VALGRIND
#endif
#endif
#ifndef CORIO__VG_REGISTER
#define CORIO__VG_REGISTER(lo, hi) ((void)(lo), (void)(hi), 0u)
#define CORIO__VG_DEREGISTER(id)   ((void)(id))
#define CORIO__VG_RUNNING()        0
#endif

#if CORIO__TSAN
/* TSan fibers of the stacks handed out on this thread (see switch.h), in an open-addressing
 * table keyed by the stack's lo. Per thread, so a lookup takes no lock: a lock taken at every
 * switch would order all threads' switches and hide their real races from TSan. */
struct tsan_slot {
    const void *lo; /* NULL: free */
    void       *fiber;
};
static _Thread_local struct tsan_slot *tsan_slots;
static _Thread_local size_t            tsan_cap, tsan_len;
static _Thread_local void             *tsan_thread_fiber;

static size_t tsan_home(const void *lo)
{
    uint64_t h = ((uint64_t)(uintptr_t)lo >> 12) * 0x9e3779b97f4a7c15ull;
    return (size_t)(h ^ (h >> 32)) & (tsan_cap - 1);
}

static struct tsan_slot *tsan_find(const void *lo)
{
    if (tsan_cap == 0)
        return NULL;
    for (size_t i = tsan_home(lo);; i = (i + 1) & (tsan_cap - 1)) {
        if (tsan_slots[i].lo == lo)
            return &tsan_slots[i];
        if (tsan_slots[i].lo == NULL)
            return NULL;
    }
}

static void tsan_insert(const void *lo, void *fiber)
{
    if ((tsan_len + 1) * 2 > tsan_cap) {
        struct tsan_slot *old = tsan_slots;
        size_t old_cap = tsan_cap;
        tsan_cap = old_cap ? old_cap * 2 : 256;
        tsan_slots = calloc(tsan_cap, sizeof *tsan_slots);
        if (!tsan_slots)
            abort(); /* a TSan build only */
        tsan_len = 0;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].lo)
                tsan_insert(old[i].lo, old[i].fiber);
        free(old);
    }
    size_t i = tsan_home(lo);
    while (tsan_slots[i].lo)
        i = (i + 1) & (tsan_cap - 1);
    tsan_slots[i].lo = lo;
    tsan_slots[i].fiber = fiber;
    tsan_len++;
}

/* Linear probing: removing shifts back the entries that would no longer be found. */
static void tsan_remove(struct tsan_slot *e)
{
    size_t i = (size_t)(e - tsan_slots);
    tsan_slots[i].lo = NULL;
    tsan_len--;
    for (size_t j = (i + 1) & (tsan_cap - 1); tsan_slots[j].lo; j = (j + 1) & (tsan_cap - 1)) {
        size_t h = tsan_home(tsan_slots[j].lo);
        /* j's entry may move to the hole at i unless its home lies cyclically in (i, j]. */
        if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
            tsan_slots[i] = tsan_slots[j];
            tsan_slots[j].lo = NULL;
            i = j;
        }
    }
}

void *corio__tsan_fiber_of(const void *lo)
{
    struct tsan_slot *e = lo ? tsan_find(lo) : NULL;
    if (!e)
        return tsan_thread_fiber ? tsan_thread_fiber : __tsan_get_current_fiber();
    if (!tsan_thread_fiber)
        tsan_thread_fiber = __tsan_get_current_fiber();
    return e->fiber;
}

static void tsan_stack_got(const struct corio__stack *s)
{
    tsan_insert(s->lo, __tsan_create_fiber(0));
}

static void tsan_stack_put(const struct corio__stack *s)
{
    struct tsan_slot *e = tsan_find(s->lo);
    if (e) {
        __tsan_destroy_fiber(e->fiber);
        tsan_remove(e);
    }
}
#else
#define tsan_stack_got(s) ((void)(s))
#define tsan_stack_put(s) ((void)(s))
#endif

#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif
#ifndef MAP_STACK
#define MAP_STACK 0
#endif
#if !defined(MAP_ANONYMOUS) && defined(MAP_ANON)
#define MAP_ANONYMOUS MAP_ANON
#endif

#define CORIO__MIN_STACK    ((size_t)16 * 1024)
#define CORIO__MIN_GUARD    ((size_t)16 * 1024)
#define CORIO__ALTSTACK     ((size_t)64 * 1024)
#define CORIO__NO_SLOT      SIZE_MAX

static size_t corio__page_size(void)
{
    static _Atomic size_t cached;
    size_t n = atomic_load_explicit(&cached, memory_order_relaxed);
    if (n == 0) {
        long v = sysconf(_SC_PAGESIZE);
        n = v > 0 ? (size_t)v : 4096;
        atomic_store_explicit(&cached, n, memory_order_relaxed);
    }
    return n;
}

/* ------------------------------------------------------------------------------------------
 * Guard registry
 * ---------------------------------------------------------------------------------------- */

#define REG_CHUNK_LEN 4096u
#define REG_CHUNKS    1024u /* up to 4M live stacks are recognised; more still work, unnamed */

struct reg_entry {
    _Atomic uintptr_t start;      /* guard [start, end); 0 = free slot */
    _Atomic uintptr_t end;
    _Atomic size_t    stack_size; /* usable size, for the message */
};

static struct {
    pthread_mutex_t            lock;
    _Atomic(struct reg_entry *) chunks[REG_CHUNKS];
    _Atomic size_t             high;      /* slots [0, high) have been used; the handler scans
                                             only these */
    size_t                    *free_slots; /* under lock; capacity >= high, so a push never
                                              fails */
    size_t                     free_len;
    size_t                     free_cap;
} reg = { .lock = PTHREAD_MUTEX_INITIALIZER };

#if !defined(_WIN32)
/* fork(): the child must find the registry's lock free, whatever another thread of the
 * parent was doing with it. */
static void reg_fork_prepare(void) { pthread_mutex_lock(&reg.lock); }
static void reg_fork_release(void) { pthread_mutex_unlock(&reg.lock); }
static pthread_once_t reg_fork_once = PTHREAD_ONCE_INIT;
static void reg_fork_register(void)
{
    (void)pthread_atfork(reg_fork_prepare, reg_fork_release, reg_fork_release);
}
#endif

static size_t reg_add(uintptr_t start, uintptr_t end, size_t stack_size)
{
    size_t slot = CORIO__NO_SLOT;
#if !defined(_WIN32)
    pthread_once(&reg_fork_once, reg_fork_register);
#endif
    pthread_mutex_lock(&reg.lock);
    if (reg.free_len > 0) {
        slot = reg.free_slots[--reg.free_len];
    } else {
        size_t high = atomic_load_explicit(&reg.high, memory_order_relaxed);
        if (high >= (size_t)REG_CHUNK_LEN * REG_CHUNKS)
            goto out;
        if (high >= reg.free_cap) {
            size_t cap = reg.free_cap ? reg.free_cap * 2 : 256;
            size_t *f = realloc(reg.free_slots, cap * sizeof(*f));
            if (f == NULL)
                goto out;
            reg.free_slots = f;
            reg.free_cap = cap;
        }
        size_t c = high / REG_CHUNK_LEN;
        if (atomic_load_explicit(&reg.chunks[c], memory_order_relaxed) == NULL) {
            struct reg_entry *chunk = calloc(REG_CHUNK_LEN, sizeof(*chunk));
            if (chunk == NULL)
                goto out;
            atomic_store_explicit(&reg.chunks[c], chunk, memory_order_release);
        }
        slot = high;
        atomic_store_explicit(&reg.high, high + 1, memory_order_release);
    }
    struct reg_entry *e = &atomic_load_explicit(&reg.chunks[slot / REG_CHUNK_LEN],
                                                memory_order_relaxed)[slot % REG_CHUNK_LEN];
    atomic_store_explicit(&e->end, end, memory_order_relaxed);
    atomic_store_explicit(&e->stack_size, stack_size, memory_order_relaxed);
    /* Published last: a reader that sees start sees the rest. */
    atomic_store_explicit(&e->start, start, memory_order_release);
out:
    pthread_mutex_unlock(&reg.lock);
    return slot;
}

static void reg_remove(size_t slot)
{
    if (slot == CORIO__NO_SLOT)
        return;
    pthread_mutex_lock(&reg.lock);
    struct reg_entry *e = &atomic_load_explicit(&reg.chunks[slot / REG_CHUNK_LEN],
                                                memory_order_relaxed)[slot % REG_CHUNK_LEN];
    atomic_store_explicit(&e->start, 0, memory_order_release);
    reg.free_slots[reg.free_len++] = slot;
    pthread_mutex_unlock(&reg.lock);
}

/* Async-signal-safe: atomic loads only. Returns the stack size whose guard holds addr, or 0.
 * The stack that overflowed is in use by the faulting thread, so its entry cannot change
 * under us; entries of other threads may, and are re-checked after reading. */
static size_t reg_lookup(uintptr_t addr)
{
    size_t high = atomic_load_explicit(&reg.high, memory_order_acquire);
    for (size_t c = 0; c * REG_CHUNK_LEN < high; c++) {
        struct reg_entry *chunk = atomic_load_explicit(&reg.chunks[c], memory_order_acquire);
        if (chunk == NULL)
            continue;
        for (size_t i = 0; i < REG_CHUNK_LEN && c * REG_CHUNK_LEN + i < high; i++) {
            uintptr_t start = atomic_load_explicit(&chunk[i].start, memory_order_acquire);
            if (start == 0 || addr < start)
                continue;
            uintptr_t end = atomic_load_explicit(&chunk[i].end, memory_order_relaxed);
            size_t size = atomic_load_explicit(&chunk[i].stack_size, memory_order_relaxed);
            if (addr < end &&
                atomic_load_explicit(&chunk[i].start, memory_order_acquire) == start)
                return size;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Pools
 * ---------------------------------------------------------------------------------------- */

int corio__stack_pool_init(struct corio__stack_pool *p, size_t stack_size, size_t max_cached)
{
    size_t page = corio__page_size();
    memset(p, 0, sizeof(*p));
    if (stack_size < CORIO__MIN_STACK)
        stack_size = CORIO__MIN_STACK;
    if (stack_size > SIZE_MAX / 2)
        return -EINVAL;
    p->stack_size = (stack_size + page - 1) & ~(page - 1);
    p->guard_size = (CORIO__MIN_GUARD + page - 1) & ~(page - 1);
    p->max_cached = max_cached;
    return 0;
}

void *corio__huge_map(void **map, size_t *map_size)
{
#if defined(MADV_HUGEPAGE)
    /* Twice the size, so that an aligned region fits whatever address the kernel picks. */
    size_t len = 2 * CORIO__HUGE;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    char *r = (char *)(((uintptr_t)m + CORIO__HUGE - 1) & ~(uintptr_t)(CORIO__HUGE - 1));
    (void)madvise(r, CORIO__HUGE, MADV_HUGEPAGE); /* advice: small pages work all the same */
    *map = m;
    *map_size = len;
    return r;
#else
    (void)map;
    (void)map_size;
    return NULL;
#endif
}

void corio__huge_unmap(void *map, size_t map_size)
{
    munmap(map, map_size);
}

/* Forgets s everywhere but in the page tables: its registry slot, Valgrind's stack and ASan's
 * shadow (cleared before the range can be reused by an unrelated mapping). */
static void stack_forget(struct corio__stack *s)
{
    reg_remove(s->slot);
    CORIO__VG_DEREGISTER(s->vg_id);
    CORIO__UNPOISON(s->lo, s->size);
}

static void stack_unmap(struct corio__stack *s)
{
    stack_forget(s);
    munmap(s->map, s->map_size);
    memset(s, 0, sizeof(*s));
}

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct corio__stack *)a)->map;
    uintptr_t y = (uintptr_t)((const struct corio__stack *)b)->map;
    return (x > y) - (x < y);
}

void corio__stack_pool_fini(struct corio__stack_pool *p)
{
    /* Stacks carved side by side lie side by side in the cache once sorted: one munmap (and
     * one TLB shootdown) per run of them, not one per stack. */
    if (p->cache_len > 1) /* an empty cache has no array (NULL: not qsort's to take) */
        qsort(p->cache, p->cache_len, sizeof *p->cache, by_address);
    char *run = NULL, *run_end = NULL;
    for (size_t i = 0; i < p->cache_len; i++) {
        struct corio__stack *s = &p->cache[i];
        stack_forget(s);
        if ((char *)s->map != run_end) {
            if (run)
                munmap(run, (size_t)(run_end - run));
            run = s->map;
        }
        run_end = (char *)s->map + s->map_size;
    }
    if (run && run_end == p->chunk_at) { /* the chunk's rest follows the last run */
        run_end = p->chunk_end;
        p->chunk_at = p->chunk_end;
    }
    if (run)
        munmap(run, (size_t)(run_end - run));
    if (p->chunk_at != p->chunk_end)
        munmap(p->chunk_at, (size_t)(p->chunk_end - p->chunk_at));
    p->chunk_at = p->chunk_end = NULL;
    free(p->cache);
    p->cache = NULL;
    p->cache_len = 0;
    p->cache_cap = 0;
    p->max_cached = 0; /* a late put unmaps */
    p->peak_out = 0;
}

#if CORIO__GUARD_MARKERS
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
/* Whether MADV_GUARD_INSTALL really guards: some environments accept the advice and do
 * nothing (qemu-user does). Probed once: copying from a guarded page into a pipe must fail
 * with EFAULT. */
static bool guard_markers_work(void)
{
    static int state; /* 0: not probed, 1: works, -1: does not */
    int st = __atomic_load_n(&state, __ATOMIC_RELAXED);
    if (st)
        return st > 0;
    st = -1;
    size_t page = corio__page_size();
    void *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int fds[2];
    if (p != MAP_FAILED) {
        if (madvise(p, page, MADV_GUARD_INSTALL) == 0 && pipe(fds) == 0) {
            if (write(fds[1], p, 1) < 0 && errno == EFAULT)
                st = 1;
            close(fds[0]);
            close(fds[1]);
        }
        munmap(p, page);
    }
    __atomic_store_n(&state, st, __ATOMIC_RELAXED);
    return st > 0;
}
#endif

/* Makes [lo, lo + len) a guard region. MADV_GUARD_INSTALL (Linux 6.13) puts guard markers in
 * the page tables without splitting the mapping: a guarded stack then costs one entry of the
 * process's memory map instead of two, so vm.max_map_count (65530 by default) no longer caps
 * live tasks at ~32k, and adjacent stacks merge into one mapping. Elsewhere, mprotect. */
static int guard(void *lo, size_t len)
{
#if CORIO__GUARD_MARKERS
    if (guard_markers_work() && madvise(lo, len, MADV_GUARD_INSTALL) == 0)
        return 0;
#endif
    return mprotect(lo, len, PROT_NONE);
}

/* Bytes of stacks one chunk holds at most: address space only (MAP_NORESERVE), so the cap
 * is for 32-bit processes and for the memory map's readability. */
#define CHUNK_MAX ((size_t)(sizeof(void *) >= 8 ? 16 : 4) << 20)

/* MAP_NORESERVE keeps large virtual stacks from counting against overcommit; MAP_STACK is a
 * hint (transparent huge pages are not used for it). */
static void *chunk_map(size_t len)
{
    return mmap(NULL, len, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
}

/* Maps the next chunk: as many stacks as the pool has made so far (1, 1, 2, 4...: a
 * scheduler with a few tasks reserves little), at most CHUNK_MAX bytes of them, at least
 * one. Mapped read/write; each stack's guard is put in when it is carved. The previous chunk
 * has no room left: chunks are whole stacks, carved in order. */
#if defined(__linux__)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#endif

/* Gives the advice to [at + i * stride + off, ... + len) for i < n in as few system calls as
 * the kernel allows: process_madvise on the process itself takes any advice and a vector of
 * ranges since Linux 6.13 (PIDFD_SELF, 6.15; a kernel without either refuses, and the caller
 * gives the advice range by range). Returns true when every range took it. */
static bool advise_all(char *at, size_t n, size_t stride, size_t off, size_t len, int advice)
{
#if CORIO__GUARD_MARKERS && defined(SYS_process_madvise)
    static int state; /* 0: not tried, 1: works, -1: does not */
    if (__atomic_load_n(&state, __ATOMIC_RELAXED) < 0 || CORIO__VG_RUNNING())
        return false; /* Valgrind would warn of a system call it does not know */
    struct iovec v[64];
    while (n > 0) {
        size_t k = n < 64 ? n : 64;
        for (size_t i = 0; i < k; i++)
            v[i] = (struct iovec){at + i * stride + off, len};
        long r = syscall(SYS_process_madvise, -10001 /* PIDFD_SELF */, v, k, advice, 0);
        if (r != (long)(k * len)) {
            if (r < 0 && (errno == EBADF || errno == EINVAL || errno == ENOSYS))
                __atomic_store_n(&state, -1, __ATOMIC_RELAXED);
            return false;
        }
        __atomic_store_n(&state, 1, __ATOMIC_RELAXED);
        at += k * stride;
        n -= k;
    }
    return true;
#else
    (void)at, (void)n, (void)stride, (void)off, (void)len, (void)advice;
    return false;
#endif
}

/* Maps the next chunk: as many stacks as the pool has made so far (1, 1, 2, 4...: a
 * scheduler with a few tasks reserves little), at most CHUNK_MAX bytes of them, at least
 * one. The previous chunk has no room left: chunks are whole stacks, carved in order.
 * Where the kernel takes advice for many ranges at once, the chunk's guards go in now and its
 * stacks' top pages are populated now (at most one page for each stack made so far that no
 * task may ever use); elsewhere each stack gets both when it is carved. */
static int chunk_new(struct corio__stack_pool *p)
{
    size_t stride = p->guard_size + p->stack_size;
    size_t n = CHUNK_MAX / stride < p->n_mapped ? CHUNK_MAX / stride : p->n_mapped;
    n = n ? n : 1;
    char *map = chunk_map(n * stride);
    if (map == MAP_FAILED && n > 1) /* no room for many: one may still fit */
        map = chunk_map((n = 1) * stride);
    if (map == MAP_FAILED)
        return -ENOMEM;
    p->chunk_at = map;
    p->chunk_end = map + n * stride;
    p->chunk_ready = false;
#if CORIO__GUARD_MARKERS
    size_t page = corio__page_size();
    p->chunk_ready = n > 1 && guard_markers_work() &&
                     advise_all(map, n, stride, 0, p->guard_size, MADV_GUARD_INSTALL) &&
                     advise_all(map, n, stride, stride - page, page, MADV_POPULATE_WRITE);
#endif
    return 0;
}

/* Populates the page below top (a new stack's top page, which the first switch into it
 * writes) where the kernel can (Linux 5.14): one system call instead of a page fault, which
 * costs several times more where faults trap to a hypervisor. Elsewhere, or when it refuses,
 * the first write faults the page in. */
static void populate_top(char *top)
{
#if defined(MADV_POPULATE_WRITE)
    size_t page = corio__page_size();
    (void)madvise(top - page, page, MADV_POPULATE_WRITE);
#else
    (void)top;
#endif
}

int corio__stack_get(struct corio__stack_pool *p, struct corio__stack *out)
{
    if (p->cache_len > 0) {
        *out = p->cache[--p->cache_len];
        CORIO__UNPOISON(out->lo, out->size);
        if (++p->n_out > p->peak_out)
            p->peak_out = p->n_out;
        tsan_stack_got(out);
        return 0;
    }
    size_t map_size = p->guard_size + p->stack_size;
    if ((size_t)(p->chunk_end - p->chunk_at) < map_size && chunk_new(p) != 0)
        return -ENOMEM;
    char *map = p->chunk_at;
    if (!p->chunk_ready && guard(map, p->guard_size) != 0)
        return -ENOMEM;
    p->chunk_at += map_size;
    if (!p->chunk_ready)
        populate_top(map + map_size);
    out->map = map;
    out->map_size = map_size;
    out->lo = (char *)map + p->guard_size;
    out->size = p->stack_size;
    /* When the registry is full the stack still works; an overflow is then reported as a
     * plain SIGSEGV instead of by name. */
    out->slot = reg_add((uintptr_t)map, (uintptr_t)out->lo, p->stack_size);
    out->vg_id = CORIO__VG_REGISTER(out->lo, (char *)out->lo + out->size);
    p->n_mapped++;
    if (++p->n_out > p->peak_out)
        p->peak_out = p->n_out;
    tsan_stack_got(out);
    return 0;
}

void corio__stack_put(struct corio__stack_pool *p, struct corio__stack *s)
{
    if (s->map == NULL)
        return;
    tsan_stack_put(s);
    if (p->n_out > 0)
        p->n_out--;
    /* A coroutine that ended by switching away never returned from its frames, so their ASan
     * redzones are still poisoned. */
    CORIO__UNPOISON(s->lo, s->size);
    size_t limit = corio__stack_cache_limit(p);
    if (p->cache_len == p->cache_cap && p->cache_cap < limit) {
        size_t cap = p->cache_cap ? p->cache_cap * 2 : 16;
        if (cap > limit)
            cap = limit;
        struct corio__stack *c = realloc(p->cache, cap * sizeof(*c));
        if (c != NULL) {
            p->cache = c;
            p->cache_cap = cap;
        }
    }
    if (p->cache_len < p->cache_cap && s->size == p->stack_size) {
        p->cache[p->cache_len++] = *s;
        memset(s, 0, sizeof(*s));
    } else {
        stack_unmap(s);
    }
}

/* ------------------------------------------------------------------------------------------
 * Overflow reporting
 * ---------------------------------------------------------------------------------------- */

static struct sigaction old_segv, old_bus;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static int handler_err;
static pthread_key_t altstack_key;
static _Thread_local int thread_ready;

static void write_all(const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void corio__fault_handler(int sig, siginfo_t *si, void *uctx)
{
    int saved_errno = errno;
    /* si_code > 0: raised by the kernel for a fault, so si_addr is meaningful. */
    size_t stack_size = si->si_code > 0 ? reg_lookup((uintptr_t)si->si_addr) : 0;
    if (stack_size != 0) {
        /* Formatting by hand: snprintf is not async-signal-safe. */
        char msg[160];
        static const char head[] = "corio: task stack overflow (stack size ";
        static const char tail[] = " bytes); raise corio_config.stack_size\n";
        char digits[24];
        size_t nd = 0, len = 0;
        do {
            digits[nd++] = (char)('0' + stack_size % 10);
            stack_size /= 10;
        } while (stack_size != 0);
        memcpy(msg, head, sizeof(head) - 1);
        len = sizeof(head) - 1;
        while (nd > 0)
            msg[len++] = digits[--nd];
        memcpy(msg + len, tail, sizeof(tail) - 1);
        len += sizeof(tail) - 1;
        write_all(msg, len);
        abort();
    }

    /* Not ours: chain to whoever was there before (e.g. a sanitizer's reporter). */
    const struct sigaction *old = sig == SIGBUS ? &old_bus : &old_segv;
    if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction != NULL) {
        old->sa_sigaction(sig, si, uctx);
    } else if (!(old->sa_flags & SA_SIGINFO) && old->sa_handler != SIG_DFL &&
               old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
    } else {
        /* Default action: a kernel fault re-executes the instruction on return and dies
         * there (core dump with the real context); a sent signal has to be raised again. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(sig, &dfl, NULL);
        if (si->si_code <= 0)
            raise(sig);
    }
    errno = saved_errno;
}

static size_t altstack_size(void)
{
    size_t page = corio__page_size();
    size_t size = CORIO__ALTSTACK;
    /* SIGSTKSZ is sysconf(_SC_SIGSTKSZ) in glibc >= 2.34: large with AVX-512/AMX state. */
    if ((size_t)SIGSTKSZ > size)
        size = ((size_t)SIGSTKSZ + page - 1) & ~(page - 1);
    return size;
}

static void altstack_release(void *map)
{
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE) &&
        (char *)cur.ss_sp == (char *)map + corio__page_size()) {
        stack_t off;
        memset(&off, 0, sizeof(off));
        off.ss_flags = SS_DISABLE;
        sigaltstack(&off, NULL);
    }
    munmap(map, corio__page_size() + altstack_size());
}

static void install_handler(void)
{
    int err = pthread_key_create(&altstack_key, altstack_release);
    if (err != 0) {
        handler_err = -err;
        return;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = corio__fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &old_segv) != 0 || sigaction(SIGBUS, &sa, &old_bus) != 0)
        handler_err = -errno;
}

int corio__stack_thread_init(void)
{
#if CORIO__TSAN
    /* Called on the thread's own stack, before any switch (see switch.h). */
    if (!tsan_thread_fiber)
        tsan_thread_fiber = __tsan_get_current_fiber();
#endif
    if (thread_ready)
        return 0;
    pthread_once(&handler_once, install_handler);
    if (handler_err != 0)
        return handler_err;

    stack_t cur;
    if (sigaltstack(NULL, &cur) != 0)
        return -errno;
    if (cur.ss_flags & SS_DISABLE) {
        size_t page = corio__page_size();
        size_t size = altstack_size();
        /* A guard page below the alternate stack too, so a fault in the handler cannot
         * scribble over neighbouring memory. */
        void *map = mmap(NULL, page + size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (map == MAP_FAILED)
            return -ENOMEM;
        if (mprotect(map, page, PROT_NONE) != 0) {
            munmap(map, page + size);
            return -ENOMEM;
        }
        stack_t ss;
        memset(&ss, 0, sizeof(ss));
        ss.ss_sp = (char *)map + page;
        ss.ss_size = size;
        if (sigaltstack(&ss, NULL) != 0) {
            int err = -errno;
            munmap(map, page + size);
            return err;
        }
        pthread_setspecific(altstack_key, map); /* released at thread exit */
    }
    thread_ready = 1;
    return 0;
}
