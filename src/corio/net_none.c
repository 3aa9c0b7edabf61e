/* Windows: corio's pipes and sockets are not there yet (afs_file_from_fd is -ENOTSUP). */
#include "corio_int.h"

int corio_pipe(struct corio_task *t, struct corio_stream **r, struct corio_stream **w)
{
    corio__check_running(t, "corio_pipe");
    AFS_CHECK(r != NULL && w != NULL, "NULL argument");
    *r = *w = NULL;
    return -ENOTSUP;
}

int corio_dial(struct corio_task *t, const char *host, const char *port, struct afs_file **out)
{
    (void)host, (void)port;
    corio__check_running(t, "corio_dial");
    *out = NULL;
    return -ENOTSUP;
}

int corio_dial_stream(struct corio_task *t, const char *host, const char *port,
                      size_t buf_size, struct corio_stream **out)
{
    (void)host, (void)port, (void)buf_size;
    corio__check_running(t, "corio_dial_stream");
    *out = NULL;
    return -ENOTSUP;
}

int corio_listen(struct corio_task *t, const char *host, const char *port, int backlog,
                 struct afs_file **out)
{
    (void)host, (void)port, (void)backlog;
    corio__check_running(t, "corio_listen");
    *out = NULL;
    return -ENOTSUP;
}

int corio_accept(struct corio_task *t, struct afs_file *l, size_t buf_size,
                 struct corio_stream **out)
{
    (void)l, (void)buf_size;
    corio__check_running(t, "corio_accept");
    *out = NULL;
    return -ENOTSUP;
}

int corio_net_port(struct afs_file *s)
{
    (void)s;
    return -ENOTSUP;
}

const char *corio_net_error(void)
{
    return NULL;
}
