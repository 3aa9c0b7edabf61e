/* The two-way rule (src/core/tune.h) that chooses how io_uring issues direct I/O and how
 * small cached reads in tasks are served: driven here with a fake monotonic clock, a fake
 * CPU clock and a count of work, each event costing what the way it ran in is made to
 * cost, so that every verdict is known in advance. */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>

#include "internal.h" /* afs__sys, struct afs__tune */

static int64_t  clock_ns, cpu_ns;
static uint64_t work;
static int64_t (*real_now)(void);

static int64_t fake_now(void)
{
    return clock_ns;
}

static uint64_t fake_done(const void *arg)
{
    (void)arg;
    return work;
}

static int64_t fake_cpu(void)
{
    return cpu_ns;
}

static int64_t no_cpu(void)
{
    return -1;
}

static void tune_setup(void)
{
    real_now = afs__sys.now;
    afs__sys.now = fake_now;
    clock_ns = 1000000000;
    cpu_ns = 0;
    work = 0;
}

static void tune_teardown(void)
{
    afs__sys.now = real_now;
}

#define T_TUNE(name) Test(tune, name, .init = tune_setup, .fini = tune_teardown, .timeout = 60)

enum { WINDOW = 10 * 1000 * 1000 }; /* 10 ms, the small-read rule's */

/* n events, each of which costs wall[way] ns of the clock and cpu[way] ns of CPU time;
 * returns how many ran in way 1. */
static long run(struct afs__tune *t, long n, const int64_t wall[2], const int64_t cpu[2],
                bool with_cpu)
{
    const struct afs__tune_src src = {fake_done, with_cpu ? fake_cpu : no_cpu, NULL};
    long in1 = 0;
    for (long i = 0; i < n; i++) {
        bool w = afs__tune_count(t, 1, &src);
        clock_ns += wall[w];
        cpu_ns += cpu[w];
        work++;
        in1 += w;
    }
    return in1;
}

T_TUNE(the_way_that_does_more_is_chosen_and_the_other_only_sampled)
{
    struct afs__tune t;
    afs__tune_init(&t, WINDOW);
    cr_assert_eq(t.choice, false, "way 0 until measured");
    const int64_t wall[2] = {2000, 1000}, cpu[2] = {2000, 1000};
    run(&t, 200000, wall, cpu, true); /* past the first window and the rounds that warm up */
    cr_assert_eq(t.choice, true, "way 1 does twice the work a second");
    long in1 = run(&t, 2000000, wall, cpu, true);
    cr_assert(in1 >= 2000000 * 9 / 10, "way 0 only sampled (%ld of 2M in way 1)", in1);
    cr_assert(t.samples >= 8, "%u windows scored", t.samples);
    cr_assert(t.rate[1] > t.rate[0] * 3 / 2, "rates %llu and %llu",
              (unsigned long long)t.rate[0], (unsigned long long)t.rate[1]);
}

T_TUNE(the_way_that_does_less_is_left_after_its_samples)
{
    struct afs__tune t;
    afs__tune_init(&t, WINDOW);
    const int64_t wall[2] = {1000, 2000}, cpu[2] = {1000, 2000};
    run(&t, 200000, wall, cpu, true);
    cr_assert_eq(t.choice, false);
    long in1 = run(&t, 2000000, wall, cpu, true);
    cr_assert(in1 <= 2000000 / 10, "way 1 only sampled (%ld of 2M)", in1);
    cr_assert(in1 > 0, "but sampled");
}

T_TUNE(rates_within_an_eighth_are_decided_by_cpu_time)
{
    struct afs__tune t;
    afs__tune_init(&t, WINDOW);
    const int64_t wall[2] = {1000, 1050}, cpu[2] = {1000, 500};
    run(&t, 400000, wall, cpu, true);
    cr_assert_eq(t.choice, true, "as fast within the margin, half the CPU: way 1");

    afs__tune_init(&t, WINDOW);
    run(&t, 400000, wall, cpu, false);
    cr_assert_eq(t.choice, false, "without a CPU clock a tie keeps way 0");
}

T_TUNE(a_change_of_load_is_followed)
{
    struct afs__tune t;
    afs__tune_init(&t, WINDOW);
    const int64_t fast1[2] = {2000, 1000}, fast0[2] = {1000, 2000};
    run(&t, 3000000, fast1, fast1, true);
    cr_assert_eq(t.choice, true);
    /* The gap between sampling rounds has grown to its widest (64 windows); the change is
     * seen within a few rounds of it. */
    run(&t, 6000000, fast0, fast0, true);
    cr_assert_eq(t.choice, false, "way 0 does more now");
}
