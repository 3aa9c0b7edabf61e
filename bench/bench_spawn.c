/* Spawn + finish of many short tasks (their stacks reused), then many tasks alive at once:
 * the time to spawn each (a new stack each, until it suspends), memory per idle task, and
 * the time corio_sched_free() takes to unmap them all.
 * Usage: bench_spawn [short_tasks=1000000] [alive=100000]
 * Where guard pages are PROT_NONE pages (Linux before 6.13, the BSDs), a process needs about
 * two memory maps per live task: Linux's vm.max_map_count (65530 by default) caps a process
 * at ~32k live tasks. The second figure reports how many it reached and what stopped it. */
#define _GNU_SOURCE
#include <corio.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _WIN32
#include <windows.h>
#include <psapi.h>
#else
#include <unistd.h>
#endif

static long n_short = 1000000, n_alive = 100000;

static double now_s(void)
{
#ifdef _WIN32
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart / (double)f.QuadPart;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
#endif
}

static long rss_kib(void)
{
#ifdef _WIN32
    PROCESS_MEMORY_COUNTERS pmc;
    if (!GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof pmc))
        return 0;
    return (long)(pmc.WorkingSetSize / 1024);
#else
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
#endif
}

static void nothing(struct corio_task *t, void *arg)
{
}

static void spawner(struct corio_task *t, void *arg)
{
    for (long i = 0; i < n_short; i++)
        if (corio_spawn(t, nothing, NULL, NULL) < 0)
            abort();
}

struct alive {
    struct corio_wg wg;
    long            spawned, rss_before, rss_peak;
    int             err;
};

static void idle(struct corio_task *t, void *arg)
{
    struct alive *a = arg;
    corio_wg_wait(t, &a->wg); /* suspended until the root lets everyone go */
}

static void many(struct corio_task *t, void *arg)
{
    struct alive *a = arg;
    corio_wg_add(&a->wg, 1);
    a->rss_before = rss_kib();
    for (a->spawned = 0; a->spawned < n_alive; a->spawned++) {
        int err = corio_spawn(t, idle, a, NULL);
        if (err < 0) {
            a->err = err;
            break;
        }
    }
    a->rss_peak = rss_kib();
    corio_wg_done(&a->wg);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        n_short = atol(argv[1]);
    if (argc > 2)
        n_alive = atol(argv[2]);
    struct afs_config acfg;
    afs_config_default(&acfg);
    acfg.backend = AFS_BACKEND_SYNC;
    struct afs_ctx *ctx;
    if (afs_ctx_new(&ctx, &acfg))
        return 1;
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = ctx;
    struct corio_sched *s;
    if (corio_sched_new(&s, &cfg))
        return 1;

    double t0 = now_s();
    corio_sched_run(s, spawner, NULL);
    double per = (now_s() - t0) / n_short * 1e9;
    printf("spawn + finish of %ld short tasks: %.0f ns per task\n", n_short, per);

    struct alive a = {.wg = CORIO_WG_INIT};
    t0 = now_s();
    corio_sched_run(s, many, &a);
    double new_per = a.spawned ? (now_s() - t0) / a.spawned * 1e9 : 0.0;
    long map_count = 0;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f) {
        if (fscanf(f, "%ld", &map_count) != 1)
            map_count = 0;
        fclose(f);
    }
    printf("%ld tasks alive at once: %.0f bytes of memory (RSS) per idle task, "
           "256 KiB virtual stack each%s%s\n",
           a.spawned, a.spawned ? (a.rss_peak - a.rss_before) * 1024.0 / a.spawned : 0.0,
           a.err ? "; stopped by: " : "", a.err ? afs_strerror(a.err) : "");
    if (a.err)
        printf("(vm.max_map_count is %ld: each live task may need two maps)\n", map_count);
    t0 = now_s();
    corio_sched_free(s);
    double free_ms = (now_s() - t0) * 1e3;
    printf("their spawns: %.0f ns per task (a new stack each, run until it suspends, and "
           "its end); corio_sched_free: %.1f ms\n",
           new_per, free_ms);
    printf("{\"bench\":\"spawn\",\"spawn_ns\":%.0f,\"alive\":%ld,\"bytes_per_idle_task\":%.0f,"
           "\"new_task_ns\":%.0f,\"free_ms\":%.1f}\n",
           per, a.spawned, a.spawned ? (a.rss_peak - a.rss_before) * 1024.0 / a.spawned : 0.0,
           new_per, free_ms);
    afs_ctx_free(ctx);
    return 0;
}
