/* The corio seed's quick start in C: ten tasks make four requests each; the dispatcher sees
 * them in four batches of ten. Prints "10 IO requests batched" four times. */
#include <corio.h>

#include <stdio.h>

static void dispatch(void *user, struct corio_batch *b)
{
    printf("%zu IO requests batched\n", corio_batch_len(b));
    for (size_t i = 0; i < corio_batch_len(b); i++)
        corio_batch_respond(b, i, (void *)(uintptr_t)i);
}

static void worker(struct corio_task *t, void *arg)
{
    char req[32];
    int i = (int)(intptr_t)arg;
    snprintf(req, sizeof req, "create %d", i);
    corio_io(t, req);
    snprintf(req, sizeof req, "read %d", i);
    corio_io(t, req);
    snprintf(req, sizeof req, "update %d", i);
    corio_io(t, req);
    snprintf(req, sizeof req, "delete %d", i);
    corio_io(t, req);
}

static void prog(struct corio_task *t, void *arg)
{
    for (intptr_t i = 0; i < 10; i++)
        corio_spawn(t, worker, (void *)i, NULL);
}

int main(void)
{
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.dispatch = dispatch;
    struct corio_sched *s;
    int err = corio_sched_new(&s, &cfg);
    if (err < 0) {
        fprintf(stderr, "corio_sched_new: %s\n", afs_strerror(err));
        return 1;
    }
    err = corio_sched_run(s, prog, NULL);
    corio_sched_free(s);
    return err < 0;
}
