/* asyncigo's README "Task cancellation" example in C: a task awaits ten futures in turn; the
 * main task completes them one per loop turn and cancels the task before the sixth. Prints:
 *   0: (0, <nil>)
 *   ...
 *   4: (4, <nil>)
 *   5: (0, context canceled)
 *   ...
 *   9: (0, context canceled)
 *   task result: (0, context canceled)
 * Go's context.Canceled is -ECANCELED here; a result >= 0 prints as the value with <nil>.
 * The last line ends with a newline here; the Go program's Printf leaves it off. */
#include <corio.h>

#include <errno.h>
#include <stdio.h>

static struct corio_future futs[10];

static void print_result(const char *prefix, int res)
{
    if (res >= 0)
        printf("%s(%d, <nil>)", prefix, res);
    else
        printf("%s(0, %s)", prefix,
               res == -ECANCELED ? "context canceled" : afs_strerror(res));
}

static int task(struct corio_task *t, void *arg)
{
    int last = 0;
    for (int i = 0; i < 10; i++) {
        int result = corio_future_await(t, &futs[i], NULL);
        char prefix[16];
        snprintf(prefix, sizeof prefix, "%d: ", i);
        print_result(prefix, result);
        printf("\n");
        if (result < 0)
            last = result;
    }
    return last; /* a cancelled task reports -ECANCELED */
}

static void main_task(struct corio_task *t, void *arg)
{
    struct corio_future done;
    struct corio_task *child;
    for (int i = 0; i < 10; i++)
        corio_future_init(&futs[i]);
    corio_spawn_future(t, task, NULL, &done, &child);
    for (int i = 0; i < 10; i++) {
        if (i == 5)
            corio_cancel(child);
        corio_yield(t);
        corio_future_complete(&futs[i], i, NULL);
    }
    print_result("task result: ", corio_future_await(t, &done, NULL));
    printf("\n");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int err = corio_run(main_task, NULL);
    if (err < 0)
        fprintf(stderr, "corio_run: %s\n", afs_strerror(err));
    return err < 0;
}
