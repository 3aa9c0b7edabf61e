/* asyncigo's README example of chained iterators in C: the lines of two line servers, one
 * after the other, through corio_gen_chain() (asyncigo's Chain over DialLines(...)). Each
 * input generator dials its server and yields its lines; the example starts both servers on
 * free loopback ports (asyncigo's are localhost:6172 and localhost:6173). Prints:
 *   got line: Lorem ipsum dolor sit amet.
 *   got line: Donec non velit consequat.
 *   got line: Donec interdum in nulla ac scelerisque.
 *   got line: Duis commodo, neque ac luctus eleifend.
 *   got line: Fusce lacinia id quam ac porttitor.
 *   got line: 生麦生米生卵
 *   got line: すもももももももものうち
 *   got line: 東京特許許可局長今日急遽休暇許可却下
 *   got line: 斜め77度の並びで泣く泣く嘶くナナハン7台難なく並べて長眺め
 */
#include "line_server.h"

struct dial_args {
    const char *host, *port;
};

/* asyncigo's loop.DialLines(ctx, "tcp", address): yields struct corio_line * (the line's
 * text, its '\n' removed). */
static int dial_lines(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct dial_args *a = arg;
    struct corio_stream *stream;
    int err = corio_dial_stream(t, a->host, a->port, 0, &stream);
    if (err < 0)
        return err;
    struct corio_gen lines;
    if ((err = corio_stream_lines(t, &lines, stream, 0)) == 0) {
        void *line;
        while ((err = corio_gen_next(t, &lines, &line)) == 1) {
            if ((err = corio_gen_yield(t, g, line)) < 0)
                break;
            /* The line stays valid until our consumer's next call: only then move on. */
            corio_gen_flush(t, g);
        }
        corio_gen_close(t, &lines);
    }
    corio_stream_close(stream);
    return err;
}

static void main_task(struct corio_task *t, void *arg)
{
    int *rc = arg;
    static struct line_server s1 = {.text = line_server_lorem, .conns = 1};
    static struct line_server s2 = {.text = line_server_japanese, .conns = 1};
    if (line_server_start(t, &s1) < 0 || line_server_start(t, &s2) < 0) {
        *rc = 1;
        return;
    }
    struct dial_args a1 = {"localhost", s1.port}, a2 = {"localhost", s2.port};
    struct corio_gen g1, g2, chained;
    corio_gen_start(t, &g1, dial_lines, &a1);
    corio_gen_start(t, &g2, dial_lines, &a2);
    struct corio_gen *ins[] = {&g1, &g2};
    corio_gen_chain(t, &chained, ins, 2);
    void *v;
    int r;
    while ((r = corio_gen_next(t, &chained, &v)) == 1)
        printf("got line: %s\n", ((struct corio_line *)v)->data);
    corio_gen_close(t, &chained); /* it closes g1 and g2 */
    if (r < 0) {
        fprintf(stderr, "error: %s\n", afs_strerror(r));
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
