/* CORIO_SCHED_ANY on a runtime of 2 schedulers, two shapes:
 *   cpu     scheduler 1 holds 100 parked tasks (its count is the higher) and sleeps; a task
 *           on scheduler 0 spawns 16 CPU-bound children (a fixed loop each) and awaits them:
 *           wall milliseconds, and how many ran on each scheduler (2 CPUs: half the time
 *           when they spread)
 *   burst   a task spawns children that return at once, 1,000 at a time, and awaits them:
 *           nanoseconds a spawn (the cost of placing work where another scheduler sleeps)
 * Usage: bench_any [--rounds R] [--csv]   (R rounds of both, alternated) */
#include <corio.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct corio_chan *park;

static int parked(struct corio_task *t, void *arg)
{
    (void)arg;
    int v;
    return corio_chan_recv(t, park, &v) == -EPIPE ? 0 : -1;
}

static int spin(struct corio_task *t, void *arg)
{
    (void)arg;
    volatile uint64_t x = 0;
    for (uint64_t i = 0; i < 40000000; i++)
        x += i;
    return corio_sched_index(corio_task_sched(t));
}

static int trivial(struct corio_task *t, void *arg)
{
    (void)arg;
    return corio_sched_index(corio_task_sched(t));
}

struct result {
    double value;
    int    per[2];
};

static void cpu_root(struct corio_task *t, void *arg)
{
    struct result *r = arg;
    for (int i = 0; i < 100; i++)
        corio_spawn_on(t, 1, parked, NULL, NULL);
    corio_sleep(t, 20 * 1000 * 1000); /* scheduler 1 asleep */
    int64_t t0 = corio_now();
    struct corio_future f[16];
    for (int i = 0; i < 16; i++)
        corio_spawn_on(t, CORIO_SCHED_ANY, spin, NULL, &f[i]);
    for (int i = 0; i < 16; i++) {
        int w = corio_future_await(t, &f[i], NULL);
        if (w >= 0 && w < 2)
            r->per[w]++;
    }
    r->value = (double)(corio_now() - t0) / 1e6;
    corio_chan_close(park);
}

static void burst_root(struct corio_task *t, void *arg)
{
    struct result *r = arg;
    static struct corio_future f[1000];
    int64_t t0 = corio_now();
    for (int wave = 0; wave < 100; wave++) {
        for (int i = 0; i < 1000; i++)
            corio_spawn_on(t, CORIO_SCHED_ANY, trivial, NULL, &f[i]);
        for (int i = 0; i < 1000; i++) {
            int w = corio_future_await(t, &f[i], NULL);
            if (w >= 0 && w < 2)
                r->per[w]++;
        }
    }
    r->value = (double)(corio_now() - t0) / 1e5;
}

static int run(corio_fn *fn, struct result *r)
{
    struct corio_rt_config c;
    corio_rt_config_default(&c);
    c.schedulers = 2;
    struct corio_rt *rt;
    int err = corio_rt_new(&rt, &c);
    if (err == 0 && (err = corio_chan_new(&park, 1, sizeof(int))) == 0) {
        memset(r, 0, sizeof *r);
        err = corio_rt_run(rt, fn, r);
        corio_chan_free(park);
    }
    if (err == 0)
        corio_rt_free(rt);
    return err;
}

int main(int argc, char **argv)
{
    int rounds = 3, csv = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--csv"))
            csv = 1;
        else {
            fprintf(stderr, "usage: %s [--rounds R] [--csv]\n", argv[0]);
            return 2;
        }
    }
    if (csv)
        printf("test,round,value,unit,on_0,on_1\n");
    for (int k = 0; k < rounds; k++) {
        struct result r;
        if (run(cpu_root, &r) != 0)
            return 1;
        printf(csv ? "cpu,%d,%.1f,ms,%d,%d\n" : "cpu    round %d: %.1f ms (on 0: %d, on 1: %d)\n",
               k + 1, r.value, r.per[0], r.per[1]);
        if (run(burst_root, &r) != 0)
            return 1;
        printf(csv ? "burst,%d,%.1f,ns,%d,%d\n"
                   : "burst  round %d: %.1f ns a spawn (on 0: %d, on 1: %d)\n",
               k + 1, r.value, r.per[0], r.per[1]);
    }
    return 0;
}
