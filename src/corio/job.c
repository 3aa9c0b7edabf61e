/* Jobs (go-work's pattern): tasks with init / run / finalize, an optional one-shot task
 * first, the first failure cancels the job, job and idle timeouts, finalizers always run.
 *
 * Unlike go-work, nothing here takes a lock (one scheduler, one thread), finalizers run one
 * after another in reverse order of init, once each, in the job's runner task under a
 * shield, and a failing finalizer is recorded without stopping the others. */
#include "corio_int.h"

#include <string.h>

void corio_job_init(struct corio_job *j)
{
    AFS_CHECK(j != NULL, "job is NULL");
    memset(j, 0, sizeof *j);
    corio_future_init(&j->done);
}

static void task_prepare(struct corio_job *j, struct corio_job_task *jt, const char *where)
{
    if (!jt || !jt->run)
        afs__panic(where, "a job task needs a run callback");
    if (j->started)
        afs__panic(where, "the job already started");
    /* Added twice, its next would close a loop: the run would never end. */
    bool added = jt == j->oneshot;
    for (const struct corio_job_task *o = j->tasks; o && !added; o = o->next)
        added = o == jt;
    if (added)
        afs__panic(where, "the task is in the job already");
    jt->job = j;
    jt->result = jt->fin_result = 0;
    jt->inited = jt->finalized = jt->finished = 0;
    jt->task = NULL;
    jt->next = jt->init_prev = NULL;
}

void corio_job_add(struct corio_job *j, struct corio_job_task *jt)
{
    AFS_CHECK(j != NULL, "job is NULL");
    task_prepare(j, jt, "corio_job_add");
    if (j->tasks_tail)
        j->tasks_tail->next = jt;
    else
        j->tasks = jt;
    j->tasks_tail = jt;
}

void corio_job_add_oneshot(struct corio_job *j, struct corio_job_task *jt)
{
    AFS_CHECK(j != NULL, "job is NULL");
    AFS_CHECK(j->oneshot == NULL, "a job has at most one one-shot task");
    task_prepare(j, jt, "corio_job_add_oneshot");
    j->oneshot = jt;
}

void corio_job_set_timeout(struct corio_job *j, int64_t timeout_ns)
{
    AFS_CHECK(j != NULL && !j->started, "set the timeout before the job starts");
    j->timeout_ns = timeout_ns > 0 ? timeout_ns : 0;
}

int corio_job_error(const struct corio_job *j, struct corio_job_task **who)
{
    AFS_CHECK(j != NULL, "job is NULL");
    if (who)
        *who = j->failed;
    return j->err;
}

/* The first failure wins; cancelling the runner cancels every job task (its children). */
static void job_fail(struct corio_job *j, struct corio_job_task *jt, int err)
{
    if (j->err || j->finishing || j->ended)
        return;
    j->err = err;
    j->failed = jt;
    if (j->runner)
        corio_cancel(j->runner);
}

void corio_job_cancel(struct corio_job *j, int err)
{
    AFS_CHECK(j != NULL, "job is NULL");
    job_fail(j, NULL, err < 0 ? err : -ECANCELED);
}

void corio_job_progress(struct corio_job_task *jt)
{
    AFS_CHECK(jt != NULL, "job task is NULL");
    if (jt->idle_timeout_ns > 0 && jt->task) {
        int64_t now = corio_now();
        jt->idle_deadline = jt->idle_timeout_ns > INT64_MAX - now ? INT64_MAX
                                                                   : now + jt->idle_timeout_ns;
        /* The task's own deadline: its blocking calls fail with -ETIMEDOUT past it. */
        corio_set_deadline(jt->task, jt->idle_deadline);
    }
}

static void jtask_entry(struct corio_task *t, void *arg)
{
    struct corio_job_task *jt = arg;
    struct corio_job *j = jt->job;
    jt->task = t;
    /* In the init order before init runs: a failed init is finalized too. */
    jt->inited = 1;
    jt->init_prev = j->inited;
    j->inited = jt;
    corio_job_progress(jt);
    /* Futures a callback left in its frames go with them (corio__detach_frame_futures):
     * the next callback, or the wait below, has its frames there. */
    char top;
    int r = jt->init ? jt->init(t, jt) : 0;
    corio__detach_frame_futures(t, &top);
    if (r > 0)
        r = 0;
    while (r == 0) {
        if ((r = corio__interrupted(t)) != 0)
            break;
        r = jt->run(t, jt);
        corio__detach_frame_futures(t, &top);
        if (r == CORIO_JOB_TICK)
            corio_job_progress(jt);
        if (r != CORIO_JOB_TICK && r != CORIO_JOB_IDLE)
            break;
        corio_yield(t); /* cooperative: a recurrent run must let the others run */
        r = 0;
    }
    jt->finished = 1;
    if (r == CORIO_JOB_FINISH && !j->err && !j->finishing) {
        /* The job is finished: stop the others; their -ECANCELED is not a failure. */
        j->finishing = 1;
        corio_cancel(j->runner);
    } else if (r < 0) {
        jt->result = r;
        /* The runner's own interruption (the job's timeout, a cancel or deadline of the task
         * that started it) is the job's failure, not this task's. */
        job_fail(j, corio__interrupted(j->runner) == r ? NULL : jt, r);
    }
    corio_wait(t);
    jt->task = NULL;
}

static void runner_entry(struct corio_task *t, void *arg)
{
    struct corio_job *j = arg;
    j->runner = t;
    if (j->timeout_ns) {
        int64_t now = corio_now();
        j->deadline = j->timeout_ns > INT64_MAX - now ? INT64_MAX : now + j->timeout_ns;
        corio_set_deadline(t, j->deadline);
    }
    /* Cancelled before it started, or started past its deadline: no task runs. */
    int stop = corio__interrupted(t);
    if (stop)
        job_fail(j, NULL, stop);
    if (j->oneshot && !j->err) {
        int err = corio_spawn(t, jtask_entry, j->oneshot, NULL);
        if (err < 0)
            job_fail(j, j->oneshot, err);
        corio_wait(t); /* the others start only after it succeeded */
    }
    for (struct corio_job_task *jt = j->tasks; jt && !j->err && !j->finishing; jt = jt->next) {
        int err = corio__interrupted(t);
        if (err) {
            job_fail(j, NULL, err); /* the job itself: timeout or cancelled */
            break;
        }
        if ((err = corio_spawn(t, jtask_entry, jt, NULL)) < 0)
            job_fail(j, jt, err);
    }
    corio_wait(t);
    /* The tasks ended; if the job timed out or was cancelled meanwhile and no task reported
     * it (a run may take its -ETIMEDOUT and return CORIO_JOB_DONE), the job fails now. */
    if ((stop = corio__interrupted(t)) != 0)
        job_fail(j, NULL, stop);

    /* Finalizers: once each, newest init first, shielded so that clean-up can block. */
    corio_shield_begin(t);
    for (struct corio_job_task *jt = j->inited; jt; jt = jt->init_prev) {
        if (jt->finalize) {
            jt->fin_result = jt->finalize(t, jt);
            if (jt->fin_result < 0 && !j->fin_err)
                j->fin_err = jt->fin_result;
        }
        jt->finalized = 1;
    }
    corio_shield_end(t);
    j->ended = 1;
    corio__wake_all(corio__wq(&j->end_q));
    corio_future_complete(&j->done, j->err, j);
}

int corio_job_start(struct corio_task *t, struct corio_job *j)
{
    corio__check_running(t, "corio_job_start");
    AFS_CHECK(j != NULL && !j->started, "the job already started");
    j->started = 1;
    int err = corio_spawn(t, runner_entry, j, NULL);
    if (err < 0) {
        j->err = err;
        j->ended = 1;
        corio_future_complete(&j->done, err, j);
    }
    return err;
}

int corio_job_run(struct corio_task *t, struct corio_job *j)
{
    int err = corio_job_start(t, j);
    if (err < 0)
        return err;
    /* The job's structs live in our frame: wait for its end even when cancelled. */
    while (!j->ended)
        corio__wait_on_hard(t, corio__wq(&j->end_q));
    return j->err;
}
