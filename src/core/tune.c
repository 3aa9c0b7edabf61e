/* The two-way rule of tune.h.
 *
 * Windows last window_ns of the monotonic clock and at least WINDOW_MIN_EVENTS events; the
 * clock is read once per CHECK_EVENTS events. The first window runs way 0 and is not scored
 * (it pays for first touches). Then WARMUP_ROUNDS sampling rounds, each a window of way 0
 * and one of way 1 back to back (the order alternating from round to round, so a load that
 * rises or falls does not favour one); after that GAP_MIN windows by choice between two
 * rounds, twice as many after each round whose own comparison agrees with the choice (up to
 * GAP_MAX), half as many after one that does not (the evidence is looked at again sooner),
 * GAP_MIN after a change.
 * A window's score is what was delivered: work per second of wall time and CPU time per
 * unit of work. Each way keeps the mean of its first AVG_DEPTH scores, then a running
 * average that weighs the newest 1/AVG_DEPTH: single windows on a shared machine vary
 * several-fold (a 20 ms window of one way measured 7k and the next 73k reads/s). Which way
 * delivers more, and which costs less CPU per unit, are decided on the medians of the last
 * ROUNDS_KEPT rounds' paired ratios (way 1 over way 0, the two windows of one round side by
 * side): one window several-fold off moves a running average past the margin for rounds, a
 * median not at all. The averages are what is reported. */
#include "tune.h"

#include "internal.h" /* afs__sys, AFS_MIN, AFS_MAX */

#include <string.h>

/* A window that took longer than this (nothing to count for a while, or a device slower
 * than 64 events a second) is not scored: it starts again, same way. */
#define WINDOW_MAX_NS     ((int64_t)1000 * 1000 * 1000)
#define WINDOW_MIN_EVENTS 64u
#define CHECK_EVENTS      32u
#define WARMUP_ROUNDS     3u
#define GAP_MIN           4u
#define GAP_MAX           64u
#define AVG_DEPTH         4u
#define ROUNDS_KEPT       AFS__TUNE_ROUNDS
#define RATIO_ONE         1024u /* a paired ratio of 1 */
/* Work per second decides when one way delivers more than 9/8 of the other's; nearer than
 * that, the way with less CPU time per unit is chosen. */
#define RATE_MARGIN_NUM 9u
#define RATE_MARGIN_DEN 8u

void afs__tune_init(struct afs__tune *t, int64_t window_ns)
{
    memset(t, 0, sizeof *t);
    t->window_ns = window_ns;
    t->gap = GAP_MIN;
    t->win_check = CHECK_EVENTS;
}

/* The n-th score (from 1) into an average (above). */
static void average(uint64_t *avg, uint64_t sample, unsigned n)
{
    int64_t w = AFS_MIN(n, AVG_DEPTH);
    int64_t a = (int64_t)*avg + ((int64_t)sample - (int64_t)*avg) / w;
    *avg = a > 0 ? (uint64_t)a : 1; /* 0 means "not measured" */
}

/* 1: way 1 delivers more than RATE_MARGIN of way 0's rate; -1: the converse; 0: nearer than
 * that. `ratio` is way 1 over way 0, in RATIO_ONE units. */
static int rate_verdict(uint64_t ratio)
{
    if (ratio * RATE_MARGIN_DEN > (uint64_t)RATIO_ONE * RATE_MARGIN_NUM)
        return 1;
    if ((uint64_t)RATIO_ONE * RATE_MARGIN_DEN > ratio * RATE_MARGIN_NUM)
        return -1;
    return 0;
}

static uint64_t median(const uint32_t *ratios, unsigned n)
{
    uint32_t v[ROUNDS_KEPT] = {0};
    memcpy(v, ratios, n * sizeof v[0]);
    for (unsigned i = 1; i < n; i++) /* insertion sort: five at most */
        for (unsigned j = i; j > 0 && v[j - 1] > v[j]; j--) {
            uint32_t x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    return n % 2 ? v[n / 2] : ((uint64_t)v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Keeps the last ROUNDS_KEPT ratios, the newest last. */
static void keep(uint32_t *ratios, unsigned *n, uint32_t r)
{
    if (*n == ROUNDS_KEPT)
        memmove(ratios, ratios + 1, (ROUNDS_KEPT - 1) * sizeof ratios[0]);
    else
        (*n)++;
    ratios[*n - 1] = r;
}

/* a / b in RATIO_ONE units (b > 0). */
static uint32_t ratio_of(uint64_t a, uint64_t b)
{
    uint64_t r = a > UINT64_MAX / RATIO_ONE ? UINT64_MAX : a * RATIO_ONE / b;
    return r > UINT32_MAX ? UINT32_MAX : (uint32_t)r;
}

/* The way that delivers more, or as much for less CPU. */
static bool prefer(const struct afs__tune *t)
{
    if (t->nratios[0] == 0)
        return t->choice;
    int v = rate_verdict(median(t->ratios[0], t->nratios[0]));
    if (v)
        return v > 0;
    /* Without a CPU clock: way 0. */
    return t->nratios[1] && median(t->ratios[1], t->nratios[1]) < RATIO_ONE;
}

static void score(struct afs__tune *t, uint64_t done_now, int64_t now, int64_t cpu)
{
    uint64_t done = done_now - t->win_done;
    int64_t dt = now - t->win_start;
    if (done == 0 || dt <= 0)
        return; /* nothing delivered (a stalled device): no score */
    int k = t->win_way;
    unsigned n = ++t->scored[k];
    done = AFS_MIN(done, UINT64_MAX / 1000000000u);
    uint64_t rate = done * 1000000000u / (uint64_t)dt;
    average(&t->rate[k], rate, n);
    t->round_rate[k] = rate ? rate : 1;
    if (cpu >= 0 && t->win_cpu >= 0 && cpu >= t->win_cpu) {
        uint64_t per = (uint64_t)(cpu - t->win_cpu) / done;
        average(&t->cpu_ns[k], per, n);
        t->round_cpu[k] = per ? per : 1;
    }
    t->samples++;
}

/* The window that just closed is over: scores it if it was a sample, chooses when it ended
 * a round, and sets the next window's way. */
static void next_window(struct afs__tune *t, uint64_t done, int64_t now, int64_t cpu)
{
    if (t->win_scored)
        score(t, done, now, cpu);
    if (t->win_scored && !t->round_half) {
        /* A round is over: choose, and set the gap to the next one. */
        int against = 0; /* this round alone says the other way */
        if (t->round_rate[0] && t->round_rate[1]) {
            uint32_t r = ratio_of(t->round_rate[1], t->round_rate[0]);
            keep(t->ratios[0], &t->nratios[0], r);
            int v = rate_verdict(r);
            against = v && (v > 0) != t->choice;
        }
        if (t->round_cpu[0] && t->round_cpu[1])
            keep(t->ratios[1], &t->nratios[1], ratio_of(t->round_cpu[1], t->round_cpu[0]));
        t->round_rate[0] = t->round_rate[1] = t->round_cpu[0] = t->round_cpu[1] = 0;
        bool pick = prefer(t);
        if (++t->rounds > WARMUP_ROUNDS)
            t->gap = pick != t->choice ? GAP_MIN
                     : against         ? AFS_MAX(t->gap / 2, GAP_MIN)
                                       : AFS_MIN(2 * t->gap, GAP_MAX);
        t->left = t->rounds < WARMUP_ROUNDS ? 0 : t->gap;
        t->choice = pick;
    }
    if (t->round_half) {
        t->win_way = !t->win_way;
        t->round_half = false;
    } else if (t->left > 0) {
        t->left--;
        t->win_way = t->choice;
        t->win_scored = false;
    } else {
        t->win_way = (t->rounds & 1) != 0;
        t->win_scored = t->round_half = true;
    }
}

void afs__tune_check(struct afs__tune *t, const struct afs__tune_src *src)
{
    t->win_check = t->win_events + CHECK_EVENTS;
    int64_t now = afs__sys.now();
    if (t->win_timed && (now - t->win_start < t->window_ns || t->win_events < WINDOW_MIN_EVENTS))
        return;
    int64_t cpu = src->cpu();
    uint64_t done = src->done(src->arg);
    if (!t->win_timed || now - t->win_start <= WINDOW_MAX_NS)
        next_window(t, done, now, cpu);
    t->win_timed = true;
    t->win_events = 0;
    t->win_check = CHECK_EVENTS;
    t->win_done = done;
    t->win_start = now;
    t->win_cpu = cpu;
}
