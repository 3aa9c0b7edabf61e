/* A rule that chooses between two ways of doing the same work by measuring both while the
 * program runs: io_uring's issue of direct I/O (inline or by the kernel's workers,
 * src/linux/uring_reg.c) and small reads in corio tasks (served at once or through the
 * batch, src/core/file.c). src/core/tune.c; docs/ARCHITECTURE.md tells the rule.
 *
 * Time is cut into windows; a window runs one way (0 or 1), and those of a sampling round
 * (one window of each way, back to back) are scored by what the context delivered in them:
 * units of work done per second of wall time, and CPU time per unit. The caller counts the
 * events that may close a window (afs__tune_count) and says what "done" and "CPU" are. */
#ifndef AFS_TUNE_H
#define AFS_TUNE_H

#include <stdbool.h>
#include <stdint.h>

/* Sampling rounds whose paired ratios are kept. */
#define AFS__TUNE_ROUNDS 5u

struct afs__tune {
    int64_t  window_ns;   /* a window's length at least */
    bool     choice;      /* the way chosen now (false: 0, true: 1) */
    bool     win_way;     /* the open window's way */
    bool     win_scored;  /* it belongs to a sampling round */
    bool     win_timed;   /* it opened at a clock reading (all but the first) */
    bool     round_half;  /* it is the first of its round: the other way comes next */
    unsigned rounds;      /* sampling rounds done */
    unsigned gap, left;   /* windows run by choice between two rounds, and those left */
    unsigned samples;     /* windows scored */
    unsigned scored[2];   /* of them, each way's */
    uint64_t win_events;  /* events counted in the open window */
    uint64_t win_check;   /* the clock is read when win_events reaches this */
    uint64_t win_done;    /* the work done when it opened */
    int64_t  win_start;   /* the monotonic clock then */
    int64_t  win_cpu;     /* the CPU clock then; -1: none */
    uint64_t rate[2];     /* work per second, each way (averages; 0: not measured) */
    uint64_t cpu_ns[2];   /* CPU time per unit of work, the same */
    uint64_t round_rate[2]; /* the open round's window rates (0: not scored yet) */
    uint64_t round_cpu[2];  /* and CPU times per unit (0: not measured) */
    /* The last rounds' way-1 / way-0 ratios, 1024 = equal: [0] rates, [1] CPU times. */
    uint32_t ratios[2][AFS__TUNE_ROUNDS];
    unsigned nratios[2];
};

/* What the window clock needs from the caller: the work done so far (a counter that only
 * grows) and a CPU clock in ns (-1 where there is none; then rates alone decide, and a tie
 * keeps way 0). Both are called at each window's end. */
struct afs__tune_src {
    uint64_t (*done)(const void *arg);
    int64_t  (*cpu)(void);
    const void *arg;
};

/* Starts with way 0 (the first window runs it unscored: it pays for first touches). Windows
 * last at least window_ns of the monotonic clock: long enough that one holds thousands of
 * events, short enough that the way not chosen costs little while it is sampled. */
void afs__tune_init(struct afs__tune *t, int64_t window_ns);

/* Looks at the clock: closes the open window when it has lasted long enough (scored when it
 * belongs to a round) and opens the next one. */
void afs__tune_check(struct afs__tune *t, const struct afs__tune_src *src);

/* Counts n events of the open window (ops issued, reads made) and, every so many, looks at
 * the clock (afs__tune_check). Returns the way the caller should take now. */
static inline bool afs__tune_count(struct afs__tune *t, unsigned n,
                                   const struct afs__tune_src *src)
{
    t->win_events += n;
    if (t->win_events >= t->win_check)
        afs__tune_check(t, src);
    return t->win_way;
}

#endif
