/* Coroutine stacks on Windows: the stack.h interface over fibers (see switch.h,
 * CORIO__SWITCH_FIBER). Windows allocates each fiber's stack, guard pages included, in
 * CreateFiberEx; a corio__stack here is a record (struct corio__fiber) that owns one fiber.
 * corio__stack_get creates the fiber, corio__stack_put caches the record with its fiber (up
 * to max_cached), and the next corio__regs_init on it restarts the parked fiber with a new
 * entry function (switch_fiber.c): a spawn from the cache creates nothing. */
#include "stack.h"
#include "switch.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#define CORIO__MIN_STACK ((size_t)16 * 1024)

static size_t corio__page_size(void)
{
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    return si.dwPageSize ? si.dwPageSize : 4096;
}

void *corio__huge_map(void **map, size_t *map_size)
{
    (void)map;
    (void)map_size;
    return NULL;
}

void corio__huge_unmap(void *map, size_t map_size)
{
    (void)map;
    (void)map_size;
}

int corio__stack_pool_init(struct corio__stack_pool *p, size_t stack_size, size_t max_cached)
{
    size_t page = corio__page_size();
    memset(p, 0, sizeof(*p));
    if (stack_size < CORIO__MIN_STACK)
        stack_size = CORIO__MIN_STACK;
    if (stack_size > SIZE_MAX / 2)
        return -EINVAL;
    p->stack_size = (stack_size + page - 1) & ~(page - 1);
    p->guard_size = page; /* Windows' own PAGE_GUARD page below the committed part */
    p->max_cached = max_cached;
    return 0;
}

void corio__stack_pool_fini(struct corio__stack_pool *p)
{
    for (size_t i = 0; i < p->cache_len; i++) {
        corio__fiber_delete(p->cache[i].map);
        free(p->cache[i].map);
    }
    free(p->cache);
    p->cache = NULL;
    p->cache_len = 0;
    p->cache_cap = 0;
    p->max_cached = 0; /* a late put frees instead of caching */
    p->peak_out = 0;
}

int corio__stack_get(struct corio__stack_pool *p, struct corio__stack *out)
{
    struct corio__fiber *f;
    if (p->cache_len > 0) {
        f = p->cache[--p->cache_len].map; /* its fiber is parked, ready to restart */
    } else {
        if (!(f = calloc(1, sizeof(*f))))
            return -ENOMEM;
        if (corio__fiber_create(f, p->stack_size) < 0) {
            free(f);
            return -ENOMEM;
        }
        p->n_mapped++;
    }
    memset(out, 0, sizeof(*out));
    out->map = f;
    out->map_size = sizeof(*f);
    out->lo = f; /* what corio__regs_init takes */
    out->size = p->stack_size;
    if (++p->n_out > p->peak_out)
        p->peak_out = p->n_out;
    return 0;
}

void corio__stack_put(struct corio__stack_pool *p, struct corio__stack *s)
{
    struct corio__fiber *f = s->map;
    if (f == NULL)
        return;
    if (p->n_out > 0)
        p->n_out--;
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
    if (p->cache_len < p->cache_cap) {
        p->cache[p->cache_len++] = *s;
    } else {
        corio__fiber_delete(f);
        free(f);
    }
    memset(s, 0, sizeof(*s));
}

int corio__stack_thread_init(void)
{
    return corio__fiber_thread_init();
}
