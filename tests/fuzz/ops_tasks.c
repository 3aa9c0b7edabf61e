/* corio: several tasks in one scheduler run, each running its own sub-sequence of blocking
 * calls, position ops and fsyncs, with yields, sleeps and cancellation of siblings. A task
 * uses the position API only on the handles assigned to it (h % ntasks == its index): two
 * tasks on one position would race by design. Positional calls may go to any handle. */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct task_op {
    uint8_t  kind, b, seed;
    uint64_t off;
    size_t   len;
    uint8_t  raw[3 * FZ_IOVS + 1]; /* input for the iovec layout */
};

struct fz_task {
    int                idx, n;
    struct task_op     ops[FZ_TASK_OPS];
    struct corio_task *t;
    bool               cancelled, finished;
    unsigned char     *buf, *expect;
};

static struct fz_task tasks[FZ_TASKS];
static int ntasks;

static int own_handle(int idx, uint8_t b)
{
    int count = 0, cand[FZ_HANDLES];
    for (int h = 0; h < FZ_HANDLES; h++)
        if (h % ntasks == idx)
            cand[count++] = h;
    return cand[b % count];
}

static void run_op(struct fz_task *k, struct task_op *op)
{
    struct corio_task *t = k->t;
    int any = op->b % FZ_HANDLES, own = own_handle(k->idx, op->b);
    bool misalign = op->b & 0x80;
    switch (op->kind) {
    case 0:
    case 1:
    case 2:
    case 3: {
        struct fz_in iv = {op->raw, sizeof op->raw};
        fz_blocking(t, &k->cancelled, any, op->kind, op->off, op->len, op->seed, misalign, &iv,
                    k->buf, k->expect);
        break;
    }
    case 4:
    case 5: fz_pos_io(t, &k->cancelled, own, op->kind == 5, op->len, op->seed, misalign); break;
    case 6: {
        static const int whences[] = {SEEK_SET, SEEK_CUR, SEEK_END};
        int64_t off = (int64_t)(op->off % 16384) - ((op->b & 0x40) ? 8192 : 0);
        fz_seek(t, own, whences[op->seed % 3], off);
        break;
    }
    case 7: fz_fsync(&k->cancelled, any, op->seed); break;
    case 8:
        if (op->seed & 1) {
            int64_t ns = (int64_t)(op->seed >> 1) * 1000;
            int r = corio_sleep(t, ns);
            fz_trace("#%d task %d corio_sleep(%lld ns) = %s", fz.opno, k->idx, (long long)ns,
                     fz_err(r));
            if (r != 0 && !(r == -ECANCELED && k->cancelled))
                fz_fail("task %d: corio_sleep = %s", k->idx, fz_err(r));
        } else {
            fz_trace("#%d task %d corio_yield", fz.opno, k->idx);
            corio_yield(t);
        }
        break;
    default: {
        struct fz_task *v = &tasks[op->seed % ntasks];
        fz_trace("#%d task %d corio_cancel(task %d)%s", fz.opno, k->idx, v->idx,
                 v->finished || !v->t ? " (done or not started: skipped)" : "");
        if (v->t && !v->finished && !fz_skip_cancel()) { /* itself too: its next calls may end -ECANCELED */
            v->cancelled = true;
            corio_cancel(v->t);
        }
        break;
    }
    }
}

static void task_main(struct corio_task *t, void *arg)
{
    struct fz_task *k = arg;
    k->t = t;
    for (int i = 0; i < k->n; i++)
        run_op(k, &k->ops[i]);
    k->finished = true;
}

static void root_main(struct corio_task *t, void *arg)
{
    (void)arg;
    for (int i = 0; i < ntasks; i++) {
        int r = corio_spawn(t, task_main, &tasks[i], NULL);
        if (r < 0)
            fz_fail("corio_spawn = %s", fz_err(r));
    }
    corio_wait(t);
}

void fz_op_tasks(struct fz_in *in)
{
    static bool bufs;
    if (!bufs) {
        for (int i = 0; i < FZ_TASKS; i++)
            if (posix_memalign((void **)&tasks[i].buf, 4 * FZ_PAGE, FZ_BUF) ||
                posix_memalign((void **)&tasks[i].expect, 4 * FZ_PAGE, FZ_BUF))
                abort();
        bufs = true;
    }
    ntasks = 2 + fz_u8(in) % (FZ_TASKS - 1);
    for (int i = 0; i < ntasks; i++) {
        struct fz_task *k = &tasks[i];
        k->idx = i;
        k->t = NULL;
        k->cancelled = k->finished = false;
        k->n = 1 + fz_u8(in) % FZ_TASK_OPS;
        for (int j = 0; j < k->n; j++) {
            struct task_op *op = &k->ops[j];
            op->kind = fz_u8(in) % 10;
            op->b = fz_u8(in);
            op->seed = fz_u8(in);
            if (op->kind <= 5) {
                op->off = fz_pick_off(in, 0);
                op->len = fz_pick_len(in);
            } else {
                op->off = fz_u16(in);
                op->len = 0;
            }
            memset(op->raw, 0, sizeof op->raw);
            if (op->kind == 2 || op->kind == 3)
                for (size_t r = 0; r < sizeof op->raw; r++)
                    op->raw[r] = fz_u8(in);
        }
    }
    fz_trace("#%d corio: %d tasks", fz.opno, ntasks);
    /* Position ops of the main sequence end first (a task's handle must be idle) and streams
     * are flushed (tasks do not flush them). */
    fz_retire_all();
    fz_flush_streams(-1, -1);

    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = fz.ctx;
    cfg.stack_size = 512 * 1024;
    struct corio_sched *s;
    int r = corio_sched_new(&s, &cfg);
    if (r < 0)
        fz_fail("corio_sched_new = %s", fz_err(r));
    fz.in_tasks = true;
    r = corio_sched_run(s, root_main, NULL);
    fz.in_tasks = false;
    corio_sched_free(s);
    if (r != 0)
        fz_fail("corio_sched_run = %s", fz_err(r));
    for (int i = 0; i < ntasks; i++)
        if (!tasks[i].finished)
            fz_fail("task %d did not finish", i);
    for (int i = 0; i < FZ_FLIGHTS; i++)
        if (fz.fl[i].kind == FL_CALL)
            fz_fail("harness: a task's call is still in flight after the run");
}
