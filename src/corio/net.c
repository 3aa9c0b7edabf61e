/* Pipes and sockets for corio tasks: corio_pipe(), and (net_dial.c) dialing, listening and
 * accepting. */
#include "corio_int.h"

#ifndef _WIN32
#include <fcntl.h>
#include <unistd.h>
#endif

int corio_pipe(struct corio_task *t, struct corio_stream **r, struct corio_stream **w)
{
    corio__check_running(t, "corio_pipe");
    AFS_CHECK(r != NULL && w != NULL, "NULL argument");
    *r = *w = NULL;
    struct afs_ctx *ctx = corio_sched_ctx(t->sched);
    struct afs_file *fr = NULL, *fw = NULL;
#ifdef _WIN32
    /* No pipes as files there (afs_file_from_fd): a connected socket pair instead. */
    struct afs_file *p[2];
    int err = afs_socketpair(ctx, AF_UNIX, SOCK_STREAM, 0, p);
    if (err < 0)
        return err;
    fr = p[0];
    fw = p[1];
#else
    int fds[2];
#if defined(__linux__) || defined(__FreeBSD__)
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
#else
    if (pipe(fds) < 0)
        return -errno;
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
#endif
    /* AFS_NONBLOCK: the pipe is ours; where the context waits on readiness, a read or
     * write that must wait parks there, where cancellation and deadlines reach it. */
    int err = afs_file_from_fd(ctx, fds[0], AFS_RDONLY | AFS_NONBLOCK, AFS_MODE_SYNC, &fr);
    if (err < 0) {
        close(fds[0]);
        close(fds[1]);
        return err;
    }
    err = afs_file_from_fd(ctx, fds[1], AFS_WRONLY | AFS_NONBLOCK, AFS_MODE_SYNC, &fw);
    if (err < 0) {
        close(fds[1]);
        afs_close(fr);
        return err;
    }
#endif
    if ((err = corio_stream_new(fr, 0, r)) < 0 || (err = corio_stream_new(fw, 0, w)) < 0) {
        if (*r)
            corio_stream_close(*r);
        else
            afs_close(fr);
        afs_close(fw);
        *r = NULL;
        return err;
    }
    return 0;
}
