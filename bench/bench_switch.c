/* Context switch cost: a round trip (two switches) between two coroutines with corio__switch,
 * and the same with swapcontext, in the same run. Prints ns per round trip for each, the
 * ratio, and a one-line JSON summary. The best of several runs is kept to reduce noise.
 *
 * Usage: bench_switch [round_trips (default 10000000)] [runs (default 5)]
 * Build (x86-64; use switch_aarch64.S on AArch64):
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Isrc bench/bench_switch.c src/corio/stack.c \
 *      src/corio/switch_x86_64.S -lpthread -o bench_switch */
#include "corio/stack.h"
#include "corio/switch.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ucontext.h>

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_switch: %s failed\n", what);
    exit(1);
}

/* ------------------------------------------------------------------------------------------
 * corio__switch: main starts A; A times n round trips A -> B -> A; A switches back to main.
 * ---------------------------------------------------------------------------------------- */

static struct corio__regs c_main, c_a, c_b;
static struct corio__stack c_stack_a, c_stack_b;
static long c_n;
static int64_t c_elapsed;

static void c_switch(struct corio__regs *from, struct corio__regs *to, const void *to_lo,
                     size_t to_size)
{
    void *fake;
    corio__asan_start_switch(&fake, to_lo, to_size);
    corio__switch(from, to);
    corio__asan_finish_switch(fake, NULL, NULL);
}

static void c_b_entry(void *arg)
{
    (void)arg;
    corio__asan_finish_switch(NULL, NULL, NULL);
    for (;;)
        c_switch(&c_b, &c_a, c_stack_a.lo, c_stack_a.size);
}

static void c_a_entry(void *arg)
{
    const void *main_lo;
    size_t main_size;
    (void)arg;
    corio__asan_finish_switch(NULL, &main_lo, &main_size);
    /* One switch to start B, outside the timing. */
    c_switch(&c_a, &c_b, c_stack_b.lo, c_stack_b.size);
    int64_t t0 = now_ns();
    for (long i = 0; i < c_n; i++)
        c_switch(&c_a, &c_b, c_stack_b.lo, c_stack_b.size);
    c_elapsed = now_ns() - t0;
    corio__asan_start_switch(NULL, main_lo, main_size);
    corio__switch(&c_a, &c_main);
    abort();
}

static double bench_corio(struct corio__stack_pool *pool, long n)
{
    if (corio__stack_get(pool, &c_stack_a) != 0 || corio__stack_get(pool, &c_stack_b) != 0)
        die("corio__stack_get");
    c_n = n;
    corio__regs_init(&c_a, c_stack_a.lo, c_stack_a.size, c_a_entry, NULL);
    corio__regs_init(&c_b, c_stack_b.lo, c_stack_b.size, c_b_entry, NULL);
    c_switch(&c_main, &c_a, c_stack_a.lo, c_stack_a.size);
    /* A and B are abandoned mid-loop; their stacks are just recycled. */
    corio__stack_put(pool, &c_stack_a);
    corio__stack_put(pool, &c_stack_b);
    return (double)c_elapsed / (double)n;
}

/* ------------------------------------------------------------------------------------------
 * swapcontext: the same shape.
 * ---------------------------------------------------------------------------------------- */

static ucontext_t u_main, u_a, u_b;
static long u_n;
static int64_t u_elapsed;

static void u_b_entry(void)
{
    for (;;)
        swapcontext(&u_b, &u_a);
}

static void u_a_entry(void)
{
    swapcontext(&u_a, &u_b);
    int64_t t0 = now_ns();
    for (long i = 0; i < u_n; i++)
        swapcontext(&u_a, &u_b);
    u_elapsed = now_ns() - t0;
    setcontext(&u_main);
    abort();
}

static double bench_ucontext(struct corio__stack_pool *pool, long n)
{
    struct corio__stack sa, sb;
    if (corio__stack_get(pool, &sa) != 0 || corio__stack_get(pool, &sb) != 0)
        die("corio__stack_get");
    u_n = n;
    if (getcontext(&u_a) != 0 || getcontext(&u_b) != 0)
        die("getcontext");
    u_a.uc_stack.ss_sp = sa.lo;
    u_a.uc_stack.ss_size = sa.size;
    u_a.uc_link = NULL;
    u_b.uc_stack.ss_sp = sb.lo;
    u_b.uc_stack.ss_size = sb.size;
    u_b.uc_link = NULL;
    makecontext(&u_a, u_a_entry, 0);
    makecontext(&u_b, u_b_entry, 0);
    if (swapcontext(&u_main, &u_a) != 0)
        die("swapcontext");
    corio__stack_put(pool, &sa);
    corio__stack_put(pool, &sb);
    return (double)u_elapsed / (double)n;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (n <= 0 || runs <= 0) {
        fprintf(stderr, "usage: bench_switch [round_trips] [runs]\n");
        return 2;
    }
    struct corio__stack_pool pool;
    if (corio__stack_pool_init(&pool, 64 * 1024, 4) != 0)
        die("corio__stack_pool_init");

    /* Warm-up (page faults on the stacks, frequency scaling), then alternate the two so that
     * both see the same machine state. */
    bench_corio(&pool, n / 10 + 1);
    bench_ucontext(&pool, n / 100 + 1);
    double best_c = 1e30, best_u = 1e30;
    for (int r = 0; r < runs; r++) {
        double c = bench_corio(&pool, n);
        double u = bench_ucontext(&pool, n);
        if (c < best_c)
            best_c = c;
        if (u < best_u)
            best_u = u;
    }
    corio__stack_pool_fini(&pool);

    double ratio = best_u / best_c;
    printf("corio__switch: %ld round trips, best of %d: %.2f ns/round trip\n", n, runs, best_c);
    printf("swapcontext:   %ld round trips, best of %d: %.2f ns/round trip\n", n, runs, best_u);
    printf("ratio: corio__switch is %.1fx faster than swapcontext (target >= 20x: %s)\n",
           ratio, ratio >= 20.0 ? "met" : "NOT met");
    printf("{\"bench\":\"switch\",\"round_trips\":%ld,\"runs\":%d,\"corio_ns\":%.2f,"
           "\"swapcontext_ns\":%.2f,\"ratio\":%.1f}\n",
           n, runs, best_c, best_u, ratio);
    return 0;
}
