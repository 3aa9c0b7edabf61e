/* Coroutine stacks: mmap'd, with a PROT_NONE guard below, cached per pool (libdill style).
 * Not installed.
 *
 * Layout of one stack (stacks grow down):
 *
 *     map                    lo                                lo + size == map + map_size
 *     | guard (PROT_NONE)    | usable stack (read/write)       |
 *
 * Stacks are carved side by side from chunks, each one mmap of many stacks (the first chunks
 * small, then larger as the pool hands out more), so that a burst of new tasks costs one
 * mmap per chunk instead of one per task, and the pool's end one munmap per run of adjacent
 * cached stacks. A stack's [map, map + map_size) is still its own to unmap.
 * Memory is reserved lazily (MAP_NORESERVE): a task pays only for the pages it touches, and
 * the top page of a new stack, which the first switch into it writes, is populated with the
 * stack (MADV_POPULATE_WRITE) rather than faulted in.
 *
 * Overflow detection: every guard range is recorded in a process-wide registry. Once
 * corio__stack_thread_init() has run on a thread, a SIGSEGV (or SIGBUS) on that thread whose
 * fault address lies in a guard prints
 *     corio: task stack overflow (stack size N bytes); raise corio_config.stack_size
 * to stderr and aborts (SIGABRT). Any other SIGSEGV/SIGBUS goes to the handler that was
 * installed before ours or, if there was none, is re-raised with the default action.
 * A frame larger than the guard can jump over it; the guard is max(16 KiB, one page), and
 * -fstack-clash-protection (on by default in most distributions) makes the compiler probe
 * large frames page by page so they hit it.
 *
 * Windows (src/corio/stack_win.c): the stacks are the fibers' own, allocated by CreateFiberEx
 * with Windows' guard pages. A corio__stack owns one fiber: map and lo both point to its
 * struct corio__fiber (switch.h), size is the usable size, map_size and slot mean nothing.
 * corio__stack_get creates the fiber, corio__stack_put deletes it. Overflow is Windows'
 * EXCEPTION_STACK_OVERFLOW, reported by a vectored handler with the same message, then
 * abort(). */
#ifndef CORIO_STACK_H
#define CORIO_STACK_H

#include <stdbool.h>
#include <stddef.h>

/* 1 where the kernel may have guard markers (MADV_GUARD_INSTALL, Linux 6.13), tried before
 * mprotect for the guards (whether they work is probed at run time): the one system switch
 * of src/corio/stack.c. */
#if defined(__linux__)
#define CORIO__GUARD_MARKERS 1
#else
#define CORIO__GUARD_MARKERS 0
#endif

struct corio__stack {
    void  *map;      /* the whole mapping, guard included; NULL when empty */
    size_t map_size;
    void  *lo;       /* usable [lo, lo + size), guard below lo */
    size_t size;
    size_t slot;     /* private to stack.c: index in the guard registry */
    unsigned vg_id;  /* private to stack.c: its Valgrind stack id (0 when not registered) */
};

/* A pool belongs to one scheduler and is used from one thread at a time (no locking). */
struct corio__stack_pool {
    size_t               stack_size;  /* usable bytes per stack, page multiple, >= 16 KiB */
    size_t               guard_size;  /* bytes of PROT_NONE below each stack */
    size_t               max_cached;  /* free stacks kept mapped for reuse, at least */
    struct corio__stack *cache;       /* free stacks, LIFO (warmest first) */
    size_t               cache_len;
    size_t               cache_cap;   /* grows by doubling up to corio__stack_cache_limit */
    size_t               n_out;       /* stacks handed out and not yet put back */
    size_t               peak_out;    /* the most stacks out at once so far */
    size_t               n_mapped;    /* stacks made (statistics) */
    char                *chunk_at;    /* the newest chunk's part not handed out yet */
    char                *chunk_end;
    bool                 chunk_ready; /* its guards are in, its stacks' tops populated */
};

/* How many free stacks p keeps: max_cached, or as many as were ever out at once when that is
 * more. The cache grows with the number of tasks alive, so stacks are mapped once per
 * scheduler, not again (and unmapped, with the TLB shootdowns of munmap) at every burst of
 * tasks beyond max_cached; the memory they touched stays with the pool until fini. */
static inline size_t corio__stack_cache_limit(const struct corio__stack_pool *p)
{
    return p->peak_out > p->max_cached ? p->peak_out : p->max_cached;
}

/* Large pages for task structs: a region of CORIO__HUGE bytes aligned to its size, advised
 * to be backed by one transparent huge page where the system has them (Linux). Returns its
 * start and sets *map / *map_size for corio__huge_unmap, or NULL (no memory, or no such
 * pages: Windows; the caller allocates otherwise). */
#define CORIO__HUGE ((size_t)2 << 20)
void *corio__huge_map(void **map, size_t *map_size);
void  corio__huge_unmap(void *map, size_t map_size);

/* Initialises p for stacks of stack_size usable bytes (rounded up to the page size, at least
 * 16 KiB), keeping at least max_cached free stacks mapped (corio__stack_cache_limit).
 * Allocates nothing yet.
 * Returns 0 or -EINVAL (size overflow). */
int corio__stack_pool_init(struct corio__stack_pool *p, size_t stack_size, size_t max_cached);

/* Unmaps the cached stacks and what no stack was carved from yet, adjacent ranges in one
 * munmap. Stacks still out (n_out) are left alone: put them back, before or after fini (after
 * fini, corio__stack_put unmaps instead of caching). */
void corio__stack_pool_fini(struct corio__stack_pool *p);

/* Gives a stack of p->stack_size usable bytes: the most recently cached one, or a new one
 * (from the newest chunk, or a new chunk). Its contents are unspecified (not zeroed on reuse). Returns 0 or -ENOMEM. */
int corio__stack_get(struct corio__stack_pool *p, struct corio__stack *out);

/* Returns a stack that no context will run on again: cached if fewer than
 * corio__stack_cache_limit(p) are cached, else unmapped. *s is cleared. */
void corio__stack_put(struct corio__stack_pool *p, struct corio__stack *s);

/* POSIX: installs (once per process) the SIGSEGV/SIGBUS handler and (once per thread) an
 * alternate signal stack for the calling thread, so that a stack overflow can be reported at
 * all: the handler cannot run on the overflowed stack. A thread that already has an alternate
 * signal stack keeps it; the stack allocated here is released when the thread exits.
 * Windows: installs (once per process) the vectored exception handler and sets the thread's
 * stack guarantee. Idempotent; the scheduler calls it on its thread before running tasks.
 * Returns 0 or -errno. */
int corio__stack_thread_init(void);

#endif /* CORIO_STACK_H */
