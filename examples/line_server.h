/* A line server for the asyncigo examples: a task that listens on a free loopback port and
 * sends its text to each connection it accepts, `conns` of them, then stops (the README's
 * examples read from servers on localhost:6172 and localhost:6173; these pick free ports so
 * that the examples run anywhere). */
#ifndef LINE_SERVER_H
#define LINE_SERVER_H

#include <corio.h>

#include <stdio.h>
#include <string.h>

struct line_server {
    const char      *text;
    int              conns;
    struct afs_file *listener;
    char             port[16];
};

static void line_server_task(struct corio_task *t, void *arg)
{
    struct line_server *ls = arg;
    for (int i = 0; i < ls->conns; i++) {
        struct corio_stream *c;
        int err = corio_accept(t, ls->listener, 0, &c);
        if (err < 0) {
            fprintf(stderr, "accept: %s\n", afs_strerror(err));
            break;
        }
        if ((err = corio_stream_write(t, c, ls->text, strlen(ls->text))) < 0)
            fprintf(stderr, "write: %s\n", afs_strerror(err));
        corio_stream_close(c);
    }
    afs_close(ls->listener);
}

/* Listens on 127.0.0.1, a free port (ls->port), and starts the serving task. */
static int line_server_start(struct corio_task *t, struct line_server *ls)
{
    int err = corio_listen(t, "127.0.0.1", "0", 16, &ls->listener);
    if (err < 0) {
        fprintf(stderr, "listen: %s\n", corio_net_error());
        return err;
    }
    snprintf(ls->port, sizeof ls->port, "%d", corio_net_port(ls->listener));
    return corio_spawn(t, line_server_task, ls, NULL);
}

/* The texts of asyncigo's tests/stream_example1.txt and stream_example2.txt. */
static const char line_server_lorem[] = "Lorem ipsum dolor sit amet.\n"
                                        "Donec non velit consequat.\n"
                                        "Donec interdum in nulla ac scelerisque.\n"
                                        "Duis commodo, neque ac luctus eleifend.\n"
                                        "Fusce lacinia id quam ac porttitor.\n";
static const char line_server_japanese[] = "生麦生米生卵\n"
                                           "すもももももももものうち\n"
                                           "東京特許許可局長今日急遽休暇許可却下\n"
                                           "斜め77度の並びで泣く泣く嘶くナナハン7台難なく並べて長眺め\n";

#endif
