/* asyncigo's README "asynchronous iterators" example in C: a generator that dials a line
 * server, reads it line by line and yields the length of each line in code points (after
 * trimming the white space around it); the consumer prints the lengths. The example starts
 * its own line server on a free loopback port (asyncigo's reads from localhost:6172) serving
 * the four Japanese lines of asyncigo's tests. Prints:
 *   6
 *   12
 *   18
 *   30
 */
#include "line_server.h"

#include <stdint.h>

struct dial_args {
    const char *host, *port;
};

/* Code points of UTF-8 text: every byte that does not continue a sequence starts one. */
static size_t code_points(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* asyncigo.AsyncIter(func(yield func(int) error) error { ... }) */
static int line_lengths(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct dial_args *a = arg;
    struct corio_stream *stream;
    int err = corio_dial_stream(t, a->host, a->port, 0, &stream);
    if (err < 0)
        return err;
    for (;;) {
        const char *line;
        ssize_t n = corio_stream_read_line(t, stream, 0, &line);
        if (n <= 0) { /* 0: io.EOF */
            err = (int)n;
            break;
        }
        size_t b = 0, e = (size_t)n;
        while (b < e && is_space(line[b]))
            b++;
        while (e > b && is_space(line[e - 1]))
            e--;
        if ((err = corio_gen_yield(t, g, (void *)(uintptr_t)code_points(line + b, e - b))) < 0)
            break;
    }
    corio_stream_close(stream);
    return err;
}

static void main_task(struct corio_task *t, void *arg)
{
    int *rc = arg;
    static struct line_server server = {.text = line_server_japanese, .conns = 1};
    if (line_server_start(t, &server) < 0) {
        *rc = 1;
        return;
    }
    struct dial_args a = {"localhost", server.port};
    struct corio_gen it;
    corio_gen_start(t, &it, line_lengths, &a);
    void *len;
    int r;
    while ((r = corio_gen_next(t, &it, &len)) == 1)
        printf("%zu\n", (size_t)(uintptr_t)len);
    corio_gen_close(t, &it);
    if (r < 0) {
        fprintf(stderr, "error: %s (%s)\n", afs_strerror(r),
                corio_net_error() ? corio_net_error() : "");
        *rc = 1;
    }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc = 0;
    int err = corio_run(main_task, &rc);
    if (err < 0) {
        fprintf(stderr, "corio_run: %s\n", afs_strerror(err));
        return 1;
    }
    return rc;
}
