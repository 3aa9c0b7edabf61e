/* asyncigo's README "Tasks" example in C: a task runs in parallel with the main task; the
 * main task then awaits its result. Prints:
 *   in main task: 0
 *   in subtask: 0
 *   in main task: 1
 *   in subtask: 1
 *   in main task: 2
 *   in subtask: 2
 *   task result: 42
 * corio runs a spawned task at once until it first suspends, where asyncigo starts it on the
 * loop's next turn: the subtask yields first to keep asyncigo's order. */
#include <corio.h>

#include <stdio.h>

#define SECOND (1000LL * 1000 * 1000)

static int subtask(struct corio_task *t, void *arg)
{
    corio_yield(t);
    for (int i = 0; i < 3; i++) {
        printf("in subtask: %d\n", i);
        corio_sleep(t, SECOND);
    }
    return 42;
}

static void main_task(struct corio_task *t, void *arg)
{
    struct corio_future task;
    corio_spawn_future(t, subtask, NULL, &task, NULL);
    for (int j = 0; j < 3; j++) {
        printf("in main task: %d\n", j);
        corio_sleep(t, SECOND);
    }
    int result = corio_future_await(t, &task, NULL);
    printf("task result: %d\n", result);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int err = corio_run(main_task, NULL);
    if (err < 0)
        fprintf(stderr, "corio_run: %s\n", afs_strerror(err));
    return err < 0;
}
