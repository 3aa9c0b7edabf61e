/* The example servers' accept loop (echo_server.c, file_server.c): listens on host:port,
 * prints "listening on H:PORT" once ready, and runs fn(t, stream, user) in a task of its own
 * for each connection, `conns` of them (< 0: until killed). Out of descriptors (EMFILE,
 * ENFILE, ENOMEM) it waits 10 ms for some to close; another accept error ends the loop. */
#ifndef EXAMPLES_SERVE_H
#define EXAMPLES_SERVE_H

#include <corio.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* Serves one connection; the stream is fn's to close. */
typedef void serve_fn(struct corio_task *t, struct corio_stream *c, void *user);

struct serve_conn {
    serve_fn            *fn;
    struct corio_stream *c;
    void                *user;
};

static void serve_task(struct corio_task *t, void *arg)
{
    struct serve_conn k = *(struct serve_conn *)arg; /* the acceptor's copy changes with the
                                                        next connection */
    k.fn(t, k.c, k.user);
}

/* name: the program's, for its messages. Exits with 1 when it cannot listen. */
static void serve(struct corio_task *t, const char *name, const char *host, const char *port,
                  long conns, serve_fn *fn, void *user)
{
    struct afs_file *l;
    int err = corio_listen(t, host, port, 4096, &l);
    if (err < 0) {
        fprintf(stderr, "%s: %s\n", name, corio_net_error());
        exit(1);
    }
    printf("listening on %s:%d\n", host, corio_net_port(l));
    fflush(stdout);
    for (long n = 0; conns < 0 || n < conns; n++) {
        struct serve_conn k = {.fn = fn, .user = user};
        if ((err = corio_accept(t, l, 0, &k.c)) < 0) {
            if (err == -EMFILE || err == -ENFILE || err == -ENOMEM) {
                corio_sleep(t, 10 * 1000 * 1000); /* out of descriptors: let some close */
                n--;
                continue;
            }
            fprintf(stderr, "%s: accept: %s\n", name, afs_strerror(err));
            break;
        }
        if (corio_spawn(t, serve_task, &k, NULL) < 0)
            corio_stream_close(k.c);
    }
    afs_close(l);
}

#endif
