/* Pipes and sockets for corio tasks on POSIX systems: corio_pipe(), and (net_dial.c) dialing,
 * listening and accepting. Windows has net_none.c. */
#include "corio_int.h"

#include <fcntl.h>
#include <unistd.h>

int corio_pipe(struct corio_task *t, struct corio_stream **r, struct corio_stream **w)
{
    corio__check_running(t, "corio_pipe");
    AFS_CHECK(r != NULL && w != NULL, "NULL argument");
    *r = *w = NULL;
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
    struct afs_ctx *ctx = corio_sched_ctx(t->sched);
    struct afs_file *fr = NULL, *fw = NULL;
    int err = afs_file_from_fd(ctx, fds[0], AFS_RDONLY, AFS_MODE_SYNC, &fr);
    if (err < 0) {
        close(fds[0]);
        close(fds[1]);
        return err;
    }
    err = afs_file_from_fd(ctx, fds[1], AFS_WRONLY, AFS_MODE_SYNC, &fw);
    if (err < 0) {
        close(fds[1]);
        afs_close(fr);
        return err;
    }
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
