/* Windows: corio's pipes and sockets are not there yet (afs_file_from_fd is -ENOTSUP). */
#include "corio_int.h"

int corio_pipe(struct corio_task *t, struct corio_stream **r, struct corio_stream **w)
{
    corio__check_running(t, "corio_pipe");
    AFS_CHECK(r != NULL && w != NULL, "NULL argument");
    *r = *w = NULL;
    return -ENOTSUP;
}
