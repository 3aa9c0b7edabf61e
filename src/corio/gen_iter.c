/* Iterator helpers on generators: map, filter, chain, zip, enumerate, take. Each is a
 * producer that pulls from its input generators and yields to its own consumer. Before it
 * pulls the next input value it waits until its consumer is done with the last value it
 * passed on (corio_gen_flush): a passed-on value often is the input's, which the input's
 * producer may reuse once asked for the next one. The inputs' producers still read ahead. */
#include "corio_int.h"

#include <stdlib.h>
#include <string.h>

struct iter_args {
    struct corio_gen        *in, *in2;
    struct corio_gen *const *ins;
    size_t                   n;
    corio_map_fn            *map;
    int                    (*keep)(void *value, void *user);
    void                    *user;
};

/* The consumer is done with what was passed on: the inputs may move on. */
static void release_last(struct corio_task *t, struct corio_gen *g)
{
    corio_gen_flush(t, g);
}

static int map_fn(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct iter_args a = *(struct iter_args *)arg;
    void *v;
    int r;
    while ((r = corio_gen_next(t, a.in, &v)) == 1) {
        void *out = a.map ? a.map(v, a.user) : v;
        if (a.keep && !a.keep(out, a.user))
            continue; /* a filter skips and goes on (not a take-while) */
        if ((r = corio_gen_yield(t, g, out)) < 0)
            break;
        release_last(t, g);
    }
    if (r == 1 || r < 0)
        corio_gen_close(t, a.in);
    return r < 0 ? r : 0;
}

static int start(struct corio_task *t, struct corio_gen *out, corio_gen_fn *fn,
                 struct iter_args *a)
{
    /* The producer copies *a before it first suspends, i.e. before this returns. */
    return corio_gen_start(t, out, fn, a);
}

int corio_gen_map(struct corio_task *t, struct corio_gen *out, struct corio_gen *in,
                  corio_map_fn *fn, void *user)
{
    AFS_CHECK(in != NULL && fn != NULL, "NULL argument");
    struct iter_args a = {.in = in, .map = fn, .user = user};
    return start(t, out, map_fn, &a);
}

int corio_gen_filter(struct corio_task *t, struct corio_gen *out, struct corio_gen *in,
                     int (*keep)(void *value, void *user), void *user)
{
    AFS_CHECK(in != NULL && keep != NULL, "NULL argument");
    struct iter_args a = {.in = in, .keep = keep, .user = user};
    return start(t, out, map_fn, &a);
}

static int chain_fn(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct iter_args a = *(struct iter_args *)arg;
    int r = 0;
    size_t i = 0;
    for (; i < a.n; i++) {
        void *v;
        while ((r = corio_gen_next(t, a.ins[i], &v)) == 1) {
            if ((r = corio_gen_yield(t, g, v)) < 0)
                break;
            release_last(t, g);
        }
        if (r != 0)
            break;
    }
    /* The one that stopped us (an error, or our consumer closed) and the ones not reached. */
    for (size_t j = i; j < a.n; j++)
        corio_gen_close(t, a.ins[j]);
    return r < 0 ? r : 0;
}

int corio_gen_chain(struct corio_task *t, struct corio_gen *out, struct corio_gen *const *ins,
                    size_t n)
{
    AFS_CHECK(ins != NULL || n == 0, "NULL argument");
    struct iter_args a = {.ins = ins, .n = n};
    return start(t, out, chain_fn, &a);
}

static int zip_fn(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct iter_args a = *(struct iter_args *)arg;
    struct corio_pair p;
    int r;
    for (;;) {
        if ((r = corio_gen_next(t, a.in, &p.a)) != 1)
            break;
        if ((r = corio_gen_next(t, a.in2, &p.b)) != 1)
            break;
        if ((r = corio_gen_yield(t, g, &p)) < 0)
            break;
        release_last(t, g);
    }
    corio_gen_close(t, a.in);
    corio_gen_close(t, a.in2);
    return r < 0 ? r : 0;
}

int corio_gen_zip(struct corio_task *t, struct corio_gen *out, struct corio_gen *a,
                  struct corio_gen *b)
{
    AFS_CHECK(a != NULL && b != NULL, "NULL argument");
    struct iter_args ia = {.in = a, .in2 = b};
    return start(t, out, zip_fn, &ia);
}

static int enumerate_fn(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct iter_args a = *(struct iter_args *)arg;
    struct corio_indexed e = {.index = a.n};
    int r;
    while ((r = corio_gen_next(t, a.in, &e.value)) == 1) {
        if ((r = corio_gen_yield(t, g, &e)) < 0)
            break;
        release_last(t, g);
        e.index++;
    }
    if (r != 0)
        corio_gen_close(t, a.in);
    return r < 0 ? r : 0;
}

int corio_gen_enumerate(struct corio_task *t, struct corio_gen *out, struct corio_gen *in,
                        size_t start_index)
{
    AFS_CHECK(in != NULL, "NULL argument");
    struct iter_args a = {.in = in, .n = start_index};
    return start(t, out, enumerate_fn, &a);
}

static int take_fn(struct corio_task *t, struct corio_gen *g, void *arg)
{
    struct iter_args a = *(struct iter_args *)arg;
    int r = 1;
    void *v;
    for (size_t i = 0; i < a.n; i++) {
        if ((r = corio_gen_next(t, a.in, &v)) != 1)
            break;
        if ((r = corio_gen_yield(t, g, v)) < 0)
            break;
        release_last(t, g);
        r = 1;
    }
    if (r != 0)
        corio_gen_close(t, a.in); /* stopped early: the input may have more */
    return r < 0 ? r : 0;
}

int corio_gen_take(struct corio_task *t, struct corio_gen *out, struct corio_gen *in,
                   size_t n)
{
    AFS_CHECK(in != NULL, "NULL argument");
    struct iter_args a = {.in = in, .n = n};
    return start(t, out, take_fn, &a);
}
