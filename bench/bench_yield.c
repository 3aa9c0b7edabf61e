/* corio_yield between two tasks (through the whole scheduler: phases, run queue) against a
 * swapcontext() round trip, in the same run. A yield round trip = each of the two tasks
 * yields once. Usage: bench_yield [round_trips]. */
#define _GNU_SOURCE
#include <corio.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ucontext.h>

#include "clock.h"

static long n = 2000000;

static void yielder(struct corio_task *t, void *arg)
{
    for (long i = 0; i < n; i++)
        corio_yield(t);
}

static void root(struct corio_task *t, void *arg)
{
    corio_spawn(t, yielder, NULL, NULL);
    corio_spawn(t, yielder, NULL, NULL);
}

static ucontext_t uc_main, uc_co;
static void uc_fn(void)
{
    for (;;)
        swapcontext(&uc_co, &uc_main);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        n = atol(argv[1]);
    struct afs_config acfg;
    afs_config_default(&acfg);
    acfg.backend = AFS_BACKEND_SYNC; /* no I/O here: measure the scheduler alone */
    struct afs_ctx *ctx;
    if (afs_ctx_new(&ctx, &acfg))
        return 1;
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = ctx;
    struct corio_sched *s;
    if (corio_sched_new(&s, &cfg))
        return 1;
    double best_y = 1e9, best_u = 1e9;
    for (int run = 0; run < 3; run++) {
        double t0 = now_s();
        corio_sched_run(s, root, NULL);
        double y = (now_s() - t0) / n * 1e9;
        if (y < best_y)
            best_y = y;
    }
    static char stack[64 * 1024];
    getcontext(&uc_co);
    uc_co.uc_stack.ss_sp = stack;
    uc_co.uc_stack.ss_size = sizeof stack;
    uc_co.uc_link = NULL;
    makecontext(&uc_co, uc_fn, 0);
    for (int run = 0; run < 3; run++) {
        double t0 = now_s();
        for (long i = 0; i < n; i++)
            swapcontext(&uc_main, &uc_co);
        double u = (now_s() - t0) / n * 1e9;
        if (u < best_u)
            best_u = u;
    }
    printf("corio_yield round trip (2 tasks): %8.1f ns\n", best_y);
    printf("swapcontext round trip:           %8.1f ns\n", best_u);
    printf("ratio: %.1fx (target >= 20x)\n", best_u / best_y);
    printf("{\"bench\":\"yield\",\"round_trips\":%ld,\"corio_ns\":%.1f,\"swapcontext_ns\":%.1f,"
           "\"ratio\":%.1f}\n", n, best_y, best_u, best_u / best_y);
    corio_sched_free(s);
    afs_ctx_free(ctx);
    return 0;
}
