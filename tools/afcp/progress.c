/* afcp: the task semaphore, the chunk buffer pool and the progress bar. */
#define _GNU_SOURCE
#include "afcp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------
 * Semaphore: corio has mutexes and wait groups but no counting semaphore. A waiter parks on a
 * future in its own frame; release hands the token straight to the oldest waiter, so a
 * newcomer cannot overtake it (FIFO, no starvation of the walker).
 * ---------------------------------------------------------------------------------------- */
struct afcp_sem_waiter {
    struct corio_future     fut;
    struct afcp_sem_waiter *next;
};

void afcp_sem_init(struct afcp_sem *s, long tokens)
{
    s->avail = tokens;
    s->head = s->tail = NULL;
}

void afcp_sem_acquire(struct corio_task *t, struct afcp_sem *s)
{
    if (s->avail > 0 && !s->head) {
        s->avail--;
        return;
    }
    struct afcp_sem_waiter w = {.next = NULL};
    corio_future_init(&w.fut);
    if (s->tail)
        s->tail->next = &w;
    else
        s->head = &w;
    s->tail = &w;
    /* Shielded: nobody cancels afcp's tasks, and a waiter must not leave the queue while
     * its node is linked in. */
    corio_future_await_shielded(t, &w.fut, NULL);
}

void afcp_sem_release(struct afcp_sem *s)
{
    struct afcp_sem_waiter *w = s->head;
    if (!w) {
        s->avail++;
        return;
    }
    s->head = w->next;
    if (!s->head)
        s->tail = NULL;
    corio_future_complete(&w->fut, 0, NULL);
}

/* ------------------------------------------------------------------------------------------
 * Chunk buffers: aligned for O_DIRECT, reused through a free list (the bufs semaphore bounds
 * how many exist, so memory stays at jobs x chunk_size at most).
 * ---------------------------------------------------------------------------------------- */
void *afcp_buf_get(void)
{
    void *b = AFCP_LOCAL(buf_free);
    if (b) {
        AFCP_LOCAL(buf_free) = *(void **)b;
        return b;
    }
    return afs_buf_alloc(AFCP_CTX, afcp.o.chunk_size);
}

void afcp_buf_put(void *buf)
{
    *(void **)buf = AFCP_LOCAL(buf_free);
    AFCP_LOCAL(buf_free) = buf;
}

/* ------------------------------------------------------------------------------------------
 * Progress bar on stderr (a TTY): bytes done / total, percentage, rate, ETA. Totals grow while
 * the walker is still discovering files; the ETA is shown once the walk is complete.
 * ---------------------------------------------------------------------------------------- */
static void human(char *out, size_t n, double v)
{
    static const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(out, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

static void draw(void)
{
    double el = (double)(corio_now() - afcp.t_start) / 1e9;
    uint64_t bytes_done = afcp_get(&afcp.bytes_done), bytes_total = afcp_get(&afcp.bytes_total);
    double rate = el > 0 ? (double)bytes_done / el : 0;
    char done[32], total[32], rs[32], eta[32] = "";
    human(done, sizeof done, (double)bytes_done);
    human(total, sizeof total, (double)bytes_total);
    human(rs, sizeof rs, rate);
    double frac = bytes_total ? (double)bytes_done / (double)bytes_total : 1.0;
    if (frac > 1)
        frac = 1;
    if (afcp.walking)
        snprintf(eta, sizeof eta, "scanning");
    else if (rate > 0) {
        long s = (long)((double)(bytes_total - bytes_done) / rate + 0.5);
        snprintf(eta, sizeof eta, "ETA %ld:%02ld", s / 60, s % 60);
    }
    enum { WIDTH = 24 };
    char bar[WIDTH + 1];
    int fill = (int)(frac * WIDTH);
    for (int i = 0; i < WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = 0;
    afcp_lock_stream(stderr);
    fprintf(stderr, "\r\033[K%s / %s [%s] %3d%%  %s/s  %llu/%llu files  %s", done, total, bar,
            (int)(frac * 100), rs, (unsigned long long)afcp_get(&afcp.files_done),
            (unsigned long long)afcp_get(&afcp.files_total), eta);
    fflush(stderr);
    afcp.bar_shown = 1;
    afcp_unlock_stream(stderr);
}

void afcp_progress_clear(void)
{
    if (afcp.bar_shown) {
        fputs("\r\033[K", stderr);
        afcp.bar_shown = 0;
    }
}

/* Runs until cancelled by the root task once the copy is over; at most ~10 redraws/s. */
void afcp_progress_task(struct corio_task *t, void *arg)
{
    (void)arg;
    /* A short first delay: copies that end within it print nothing. */
    if (corio_sleep(t, 300 * 1000000LL) < 0)
        return;
    for (;;) {
        draw();
        if (corio_sleep(t, 100 * 1000000LL) < 0)
            return;
    }
}

void afcp_progress_final(void)
{
    if (afcp.bar_shown) {
        draw();
        fputc('\n', stderr);
        afcp.bar_shown = 0;
    }
}
