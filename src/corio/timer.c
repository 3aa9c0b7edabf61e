/* Timers: a binary min-heap of tasks on timer_at (wake-ups and deadlines during waits). */
#include "corio_int.h"

#include <stdlib.h>

static void heap_set(struct corio__timers *tm, size_t i, struct corio_task *t)
{
    tm->heap[i] = t;
    t->heap_idx = i + 1;
}

static void heap_up(struct corio__timers *tm, size_t i)
{
    struct corio_task *t = tm->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (tm->heap[p]->timer_at <= t->timer_at)
            break;
        heap_set(tm, i, tm->heap[p]);
        i = p;
    }
    heap_set(tm, i, t);
}

static void heap_down(struct corio__timers *tm, size_t i)
{
    struct corio_task *t = tm->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= tm->len)
            break;
        if (c + 1 < tm->len && tm->heap[c + 1]->timer_at < tm->heap[c]->timer_at)
            c++;
        if (tm->heap[c]->timer_at >= t->timer_at)
            break;
        heap_set(tm, i, tm->heap[c]);
        i = c;
    }
    heap_set(tm, i, t);
}

void corio__timer_remove_slow(struct corio__timers *tm, struct corio_task *t)
{
    size_t i = t->heap_idx - 1;
    t->heap_idx = 0;
    struct corio_task *last = tm->heap[--tm->len];
    if (i == tm->len)
        return;
    tm->heap[i] = last;
    last->heap_idx = i + 1;
    heap_up(tm, i);
    heap_down(tm, last->heap_idx - 1);
}

void corio__timer_add(struct corio__timers *tm, struct corio_task *t, int64_t at)
{
    corio__timer_remove(tm, t);
    if (tm->len == tm->cap) {
        size_t cap = tm->cap ? tm->cap * 2 : 64;
        struct corio_task **h = afs__sys.realloc(tm->heap, cap * sizeof *h);
        AFS_CHECK(h != NULL, "out of memory for timers");
        tm->heap = h;
        tm->cap = cap;
    }
    t->timer_at = at;
    tm->heap[tm->len] = t;
    t->heap_idx = ++tm->len;
    heap_up(tm, tm->len - 1);
}

struct corio_task *corio__timer_due(struct corio__timers *tm, int64_t now)
{
    if (!tm->len || tm->heap[0]->timer_at > now)
        return NULL;
    struct corio_task *t = tm->heap[0];
    corio__timer_remove(tm, t);
    return t;
}

void corio__timers_free(struct corio__timers *tm)
{
    free(tm->heap);
    tm->heap = NULL;
    tm->len = tm->cap = 0;
}
