/* What a task can ask about itself and others: its scheduler, whether it is done, its log. */
#include "corio_int.h"

#include <stdarg.h>
#include <stdio.h>

struct corio_sched *corio_task_sched(struct corio_task *t)
{
    AFS_CHECK(t != NULL, "task is NULL");
    return t->sched;
}

int corio_task_done(const struct corio_task *t)
{
    AFS_CHECK(t != NULL, "task is NULL");
    return t->state == CORIO__DONE;
}

void corio__check_running(struct corio_task *t, const char *where)
{
    if (!t || !t->sched || t->sched->current != t)
        afs__panic(where, "not called by the running task it names");
}

void corio_log(struct corio_task *t, const char *fmt, ...)
{
    AFS_CHECK(t != NULL, "task is NULL");
    if (!(t->sched->cfg.flags & CORIO_TRACE))
        return;
    /* The path from the root: ids of each ancestor. */
    uint32_t ids[64];
    int n = 0;
    for (struct corio_task *a = t; a->parent && n < 64; a = a->parent)
        ids[n++] = a->id;
    char line[1024];
    int len = snprintf(line, sizeof line, "[0");
    while (n-- > 0 && len < (int)sizeof line)
        len += snprintf(line + len, sizeof line - (size_t)len, "/%u", ids[n]);
    if (len < (int)sizeof line)
        len += snprintf(line + len, sizeof line - (size_t)len, "] ");
    va_list ap;
    va_start(ap, fmt);
    if (len < (int)sizeof line)
        vsnprintf(line + len, sizeof line - (size_t)len, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}
