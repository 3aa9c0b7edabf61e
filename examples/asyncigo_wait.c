/* asyncigo's README "waiting for several tasks" example in C: a future and two tasks, awaited
 * together with wait-all. Prints:
 *   results: test 20 25.5
 *   error: oops
 * Go's errors.New("oops") becomes an application error code (negative, like errno values);
 * a task's int result is its return value, other results are written through its argument
 * (asyncigo's WriteResultTo). */
#include <corio.h>

#include <stdio.h>

#define SECOND (1000LL * 1000 * 1000)
#define ERR_OOPS (-100000) /* an application error, outside errno's range */

static const char *errstr(int err)
{
    return err == 0 ? "<nil>" : err == ERR_OOPS ? "oops" : afs_strerror(err);
}

static int task1(struct corio_task *t, void *arg)
{
    corio_sleep(t, SECOND);
    corio_future_complete(arg, 0, "test"); /* fut1.SetResult("test", nil) */
    return 20;
}

static int task2(struct corio_task *t, void *arg)
{
    corio_sleep(t, SECOND);
    *(double *)arg = 25.5;
    return ERR_OOPS;
}

static void main_task(struct corio_task *t, void *arg)
{
    struct corio_future fut1 = CORIO_FUTURE_INIT, f1, f2;
    double result3 = 0;
    corio_spawn_future(t, task1, &fut1, &f1, NULL);
    corio_spawn_future(t, task2, &result3, &f2, NULL);

    struct corio_future *all[] = {&fut1, &f1, &f2};
    int err = corio_future_wait(t, CORIO_WAIT_ALL, all, 3, NULL);

    void *result1;
    corio_future_result(&fut1, &result1);
    int result2 = corio_future_result(&f1, NULL);
    printf("results: %s %d %g\n", (const char *)result1, result2, result3);
    printf("error: %s\n", errstr(err));
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int err = corio_run(main_task, NULL);
    if (err < 0)
        fprintf(stderr, "corio_run: %s\n", afs_strerror(err));
    return err < 0;
}
