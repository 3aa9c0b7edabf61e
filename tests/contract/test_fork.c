/* fork() while another thread of the process is inside the library: the child makes its own
 * context (asyncfs.h: "a context does not cross it; the child makes its own"). */
#define _GNU_SOURCE
#include <asyncfs.h>
#include <criterion/criterion.h>

#include "platform.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static struct afs__syscalls f_saved;
static _Thread_local bool f_is_holder;
static atomic_int f_in_hook, f_release;

/* The holder's first growth of the table of live contexts, made under its lock, waits here
 * until the test lets it go. */
static void *f_hold_realloc(void *p, size_t n)
{
    if (f_is_holder && p == NULL) {
        atomic_store(&f_in_hook, 1);
        while (!atomic_load(&f_release))
            usleep(1000);
    }
    return f_saved.realloc(p, n);
}

static void *f_holder(void *arg)
{
    (void)arg;
    f_is_holder = true;
    struct afs_ctx *ctx;
    if (afs_ctx_new(&ctx, NULL) == 0)
        afs_ctx_free(ctx);
    return NULL;
}

/* Lets the holder go a moment after the fork began (a fork that waits for the lock waits
 * that long). */
static void *f_releaser(void *arg)
{
    (void)arg;
    usleep(300 * 1000);
    atomic_store(&f_release, 1);
    return NULL;
}

static int f_child(void)
{
    alarm(10); /* a child stuck on a lock the fork copied dies of SIGALRM */
    struct afs_ctx *ctx;
    int err = afs_ctx_new(&ctx, NULL);
    if (err < 0) {
        fprintf(stderr, "child: afs_ctx_new: %s\n", afs_strerror(err));
        return 2;
    }
    afs_ctx_free(ctx);
    return 0;
}

/* No context is alive in this test's process, so the holder's afs_ctx_new grows the table. */
Test(fork, a_child_forked_while_another_thread_makes_a_context_makes_its_own, .timeout = 60)
{
    f_saved = afs__sys;
    afs__sys.realloc = f_hold_realloc;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, f_holder, NULL), 0);
    for (int i = 0; i < 5000 && !atomic_load(&f_in_hook); i++)
        usleep(1000);
    bool reached = atomic_load(&f_in_hook);
    pthread_t rel;
    cr_assert_eq(pthread_create(&rel, NULL, f_releaser, NULL), 0);
    pid_t pid = -1;
    if (reached) {
        fflush(NULL);
        pid = fork();
        if (pid == 0)
            _exit(f_child());
    }
    pthread_join(rel, NULL);
    pthread_join(th, NULL);
    afs__sys = f_saved;
    cr_assert(reached, "the holder's afs_ctx_new never grew the table of live contexts");
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "the child died of %s (hung on a lock the fork copied)",
              WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "?");
    cr_assert_eq(WEXITSTATUS(st), 0);
}
