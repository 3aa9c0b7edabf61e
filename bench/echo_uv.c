/* The echo benchmark's libuv server: the canonical libuv echo (uv_read_start, each read's
 * buffer handed to uv_write and freed in its callback), one loop on one thread. glibc's
 * malloc is told to keep the memory it frees (M_TRIM_THRESHOLD): otherwise freeing the
 * 64 KiB read buffers shrinks the heap with brk and the next reads fault its pages in again,
 * about one fault and a third of a brk per request, which on a machine with dear page faults
 * made the allocator, not libuv, the figure.
 *   echo_uv [PORT]   prints "listening on 127.0.0.1:PORT" (0: a free port) */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <uv.h>

static uv_loop_t *loop;

struct wreq {
    uv_write_t req;
    uv_buf_t   buf;
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    b->base = malloc(64 * 1024);
    b->len = 64 * 1024;
}

static void on_close(uv_handle_t *h)
{
    free(h);
}

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    if (status < 0 && !uv_is_closing((uv_handle_t *)req->handle))
        uv_close((uv_handle_t *)req->handle, on_close);
    free(w->buf.base);
    free(w);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    if (n > 0) {
        struct wreq *w = malloc(sizeof *w);
        w->buf = uv_buf_init(b->base, (unsigned)n);
        uv_write(&w->req, s, &w->buf, 1, on_write);
        return;
    }
    free(b->base);
    if (n < 0 && !uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, on_close);
}

static void on_conn(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    uv_tcp_t *c = malloc(sizeof *c);
    uv_tcp_init(loop, c);
    if (uv_accept(server, (uv_stream_t *)c) == 0) {
        uv_tcp_nodelay(c, 1);
        uv_read_start((uv_stream_t *)c, on_alloc, on_read);
    } else {
        uv_close((uv_handle_t *)c, on_close);
    }
}

int main(int argc, char **argv)
{
    /* A client that goes away mid-write is an error for that connection, not a signal that
     * ends the server (libuv leaves SIGPIPE to the program). */
    signal(SIGPIPE, SIG_IGN);
#ifdef __GLIBC__
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
    loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", argc > 1 ? atoi(argv[1]) : 0, &a);
    int err = uv_tcp_bind(&server, (const struct sockaddr *)&a, 0);
    if (!err)
        err = uv_listen((uv_stream_t *)&server, 4096, on_conn);
    if (err) {
        fprintf(stderr, "echo_uv: %s\n", uv_strerror(err));
        return 1;
    }
    int len = sizeof a;
    uv_tcp_getsockname(&server, (struct sockaddr *)&a, &len);
    printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    return uv_run(loop, UV_RUN_DEFAULT);
}
