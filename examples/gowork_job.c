/* go-work's connect / read / write job in C: a one-shot "connect" task opens the connection
 * (here a file standing in for a socket) and the read and write tasks start only once it
 * succeeded. write sends three messages, read receives them and finishes the job; every task
 * has a finalizer, run once each in reverse order of init, whatever happens. The two talk
 * ping / pong through futures, as go-work's tasks do through channels. The reader has
 * an idle timeout: silent for longer than 2 s, it fails the job with -ETIMEDOUT. The job as a
 * whole times out after 5 s.
 * Usage: gowork_job [PATH]   (default: ./gowork_job.conn; made new, a path that exists is
 *                             refused, and removed at the end). Exits 1 when the job fails.
 * Prints:
 *   connect: connected
 *   write: sent "message 0"
 *   read: got "message 0"
 *   write: sent "message 1"
 *   read: got "message 1"
 *   write: sent "message 2"
 *   read: got "message 2"
 *   write: finalize
 *   read: finalize
 *   connect: finalize (closing)
 *   job: done, result 0 (Success) */
#include <corio.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MSG_LEN 10 /* "message N" and a newline */
#define NMSG    3

struct conn {
    const char      *path;
    int              result; /* the job's: 0 or -errno */
    struct afs_file *f;
    int              sent, received;
    uint64_t         rpos;
    struct corio_future ping[NMSG], pong[NMSG]; /* zeroed: CORIO_FUTURE_INIT */
};

static int connect_init(struct corio_task *t, struct corio_job_task *jt)
{
    return 0;
}

static int connect_run(struct corio_task *t, struct corio_job_task *jt)
{
    struct conn *c = jt->arg;
    /* A new file (AFS_EXCL), since the finalizer removes it: never someone's own file. */
    int err = afs_open(corio_sched_ctx(corio_task_sched(t)), c->path,
                       AFS_RDWR | AFS_CREAT | AFS_EXCL, 0600, AFS_MODE_SYNC, &c->f);
    if (err < 0)
        return err; /* fails the job: read and write never start */
    printf("connect: connected\n");
    return CORIO_JOB_DONE;
}

static int connect_fin(struct corio_task *t, struct corio_job_task *jt)
{
    struct conn *c = jt->arg;
    printf("connect: finalize%s\n", c->f ? " (closing)" : "");
    if (c->f) {
        afs_close(c->f);
        remove(c->path);
    }
    return 0;
}

static int write_run(struct corio_task *t, struct corio_job_task *jt)
{
    struct conn *c = jt->arg;
    char msg[MSG_LEN + 1];
    snprintf(msg, sizeof msg, "message %d\n", c->sent);
    ssize_t n = afs_pwrite(c->f, msg, MSG_LEN, (uint64_t)c->sent * MSG_LEN);
    if (n < 0)
        return (int)n;
    printf("write: sent \"%.*s\"\n", MSG_LEN - 1, msg);
    /* go-work's ping / pong: tell the reader, wait until it took the message. */
    corio_future_complete(&c->ping[c->sent], 0, NULL);
    int err = corio_future_await(t, &c->pong[c->sent], NULL);
    if (err < 0)
        return err;
    return ++c->sent < NMSG ? CORIO_JOB_TICK : CORIO_JOB_DONE;
}

static int write_fin(struct corio_task *t, struct corio_job_task *jt)
{
    printf("write: finalize\n");
    return 0;
}

static int read_run(struct corio_task *t, struct corio_job_task *jt)
{
    struct conn *c = jt->arg;
    char msg[MSG_LEN];
    /* Under the idle timeout: a writer silent for 2 s fails the job here. */
    int err = corio_future_await(t, &c->ping[c->received], NULL);
    if (err < 0)
        return err;
    ssize_t n = afs_pread(c->f, msg, MSG_LEN, c->rpos);
    if (n < 0)
        return (int)n;
    if (n < MSG_LEN)
        return -EPROTO;
    printf("read: got \"%.*s\"\n", MSG_LEN - 1, msg);
    c->rpos += MSG_LEN;
    corio_future_complete(&c->pong[c->received], 0, NULL);
    return ++c->received < NMSG ? CORIO_JOB_TICK : CORIO_JOB_FINISH;
}

static int read_fin(struct corio_task *t, struct corio_job_task *jt)
{
    printf("read: finalize\n");
    return 0;
}

static void main_task(struct corio_task *t, void *arg)
{
    struct conn *c = arg;
    struct corio_job job;
    struct corio_job_task connect = {.name = "connect", .init = connect_init,
                                     .run = connect_run, .finalize = connect_fin, .arg = c};
    struct corio_job_task reader = {.name = "read", .run = read_run, .finalize = read_fin,
                                    .arg = c, .idle_timeout_ns = 2000LL * 1000 * 1000};
    struct corio_job_task writer = {.name = "write", .run = write_run, .finalize = write_fin,
                                    .arg = c};
    corio_job_init(&job);
    corio_job_add_oneshot(&job, &connect);
    corio_job_add(&job, &reader);
    corio_job_add(&job, &writer);
    corio_job_set_timeout(&job, 5000LL * 1000 * 1000);
    corio_job_start(t, &job);
    int res = corio_future_await(t, &job.done, NULL); /* go-work's <-job.Run() */
    c->result = res;
    struct corio_job_task *who;
    corio_job_error(&job, &who);
    if (res < 0)
        printf("job: failed in %s: %d (%s)\n", who ? who->name : "the job", res,
               afs_strerror(res));
    else
        printf("job: done, result %d (%s)\n", res, afs_strerror(res));
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct conn c = {.path = argc > 1 ? argv[1] : "gowork_job.conn"};
    int err = corio_run(main_task, &c);
    if (err < 0)
        fprintf(stderr, "corio_run: %s\n", afs_strerror(err));
    return err < 0 || c.result < 0;
}
