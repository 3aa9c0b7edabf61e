/* afcp: what the POSIX afcp (afcp.c, walk.c, copy.c) and the Windows front end (win_*.c)
 * share: messages, the options (one table: the options Windows cannot honour are refused
 * there by name), the root task, temporary names, the create-and-wrap of a file and the
 * chunk loop of a large file. */
#ifndef _WIN32
#define _GNU_SOURCE
#endif
#include "afcp.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <time.h>
#include <unistd.h>
#endif

/* ------------------------------------------------------------------------------------------
 * Messages and small helpers
 * ---------------------------------------------------------------------------------------- */
/* A message being formatted. */
struct mbuf {
    char  *p;
    size_t len, cap;
};

static void mput(struct mbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        b->cap = 2 * (b->len + n + 1);
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            fputs("afcp: out of memory\n", stderr);
            exit(1);
        }
    }
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

/* The message formats use %s and %d only; '%s' is a file name and is printed quoted
 * (afcp_q), the way cp prints names: a name can never act on the terminal. */
static void vformat(struct mbuf *b, const char *fmt, va_list ap)
{
    char c[2] = {0, 0}, num[24];
    for (const char *p = fmt; *p; p++) {
        if (!strncmp(p, "'%s'", 4)) {
            mput(b, afcp_q(va_arg(ap, const char *)));
            p += 3;
        } else if (p[0] == '%' && p[1] == 's') {
            mput(b, va_arg(ap, const char *));
            p++;
        } else if (p[0] == '%' && p[1] == 'd') {
            snprintf(num, sizeof num, "%d", va_arg(ap, int));
            mput(b, num);
            p++;
        } else if (p[0] == '%') {
            fprintf(stderr, "afcp: bad message format \"%s\"\n", fmt);
            abort();
        } else {
            c[0] = *p;
            mput(b, c);
        }
    }
}

volatile sig_atomic_t afcp_signalled;

/* "afcp: MESSAGE", then ": ERROR TEXT" when err is not 0, on a line of its own: with -v,
 * after the lines of the entry it is about (afcp_vmessage). */
static void vmessage(int err, const char *fmt, va_list ap)
{
    if (afcp_signalled)
        return;
    struct mbuf b = {0};
    mput(&b, "afcp: ");
    vformat(&b, fmt, ap);
    if (err) {
        mput(&b, ": ");
        mput(&b, afs_strerror(err > 0 ? -err : err));
    }
    mput(&b, "\n");
    if (!afcp_vmessage(b.p)) {
        afcp_lock_stream(stderr);
        afcp_progress_clear();
        /* -v's lines printed so far go out first, as gnulib's error() flushes them for cp:
         * a line and its error stay in that order in one file (2>&1). */
        fflush(stdout);
        fputs(b.p, stderr);
        afcp_unlock_stream(stderr);
    }
    free(b.p);
}

void afcp_err(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(err, fmt, ap);
    va_end(ap);
    afcp_fail();
}

void afcp_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(0, fmt, ap);
    va_end(ap);
}

void afcp_into_itself(const char *src, const char *dst)
{
    afcp_note("cannot copy a directory, '%s', into itself, '%s'", src, dst);
    afcp_fail();
}

/* As gnulib's file_name_concat, which cp uses: the slashes that end dir's last component
 * become one ("a//" + "b": "a/b"); a dir of slashes only is kept as it is ("/b", "//b"). */
char *afcp_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), end = a, b = strlen(name);
    while (end && dir[end - 1] == '/')
        end--;
    int sep = end != 0; /* "" and "/" need none */
    if (end)
        a = end;
    char *p = afcp_xmalloc(a + b + 2);
    memcpy(p, dir, a);
    if (sep)
        p[a++] = '/';
    memcpy(p + a, name, b + 1);
    return p;
}

void *afcp_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("afcp: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

char *afcp_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(afcp_xmalloc(n), s, n);
}

/* ------------------------------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------------------------- */
static uint64_t parse_size(const char *s, const char *what)
{
    char *end;
    errno = 0;
    const char *p = s;
    while (isspace((unsigned char)*p))
        p++;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    /* strtoull takes "-1" as the largest value: a sign is refused as cp refuses it */
    if (v > (ULLONG_MAX >> shift) || (v << shift) > (unsigned long long)INT64_MAX)
        errno = ERANGE;
    v <<= shift;
    /* The argument as coreutils quotes one in such messages (quote(): afcp_lq). */
    if (errno || *end || v == 0 || *p == '-' || *p == '+') {
        fprintf(stderr, "afcp: invalid %s: %s\n", what, afcp_lq(s));
        exit(1);
    }
    return v;
}

/* A count (jobs, threads): as parse_size, at most UINT_MAX. */
static unsigned parse_count(const char *s, const char *what)
{
    uint64_t v = parse_size(s, what);
    if (v > UINT_MAX) {
        fprintf(stderr, "afcp: invalid %s: %s\n", what, afcp_lq(s));
        exit(1);
    }
    return (unsigned)v;
}

#ifdef _WIN32
/* What Windows keeps: the attributes (as a mode) and the times. */
#define PRESERVE_HERE (AFCP_P_MODE | AFCP_P_TIMES)
#else
#define PRESERVE_HERE (AFCP_P_ATTRS | AFCP_P_LINKS | AFCP_P_XATTR)
#endif

/* After --help or --version: 0, or 1 when stdout could not take it (a full disk, a closed
 * pipe), with cp's "write error". */
static int stdout_done(void)
{
    int bad = ferror(stdout), err = bad ? errno : 0; /* the failed write's, when it failed */
    errno = 0;
    if (fclose(stdout) != 0) {
        bad = 1;
        err = errno ? errno : err;
    }
    if (!bad)
        return 0;
    if (err)
        fprintf(stderr, "afcp: write error: %s\n", strerror(err));
    else
        fputs("afcp: write error\n", stderr);
    return 1;
}

/* An option this build cannot honour: 1 (reported). */
static int refuse(const char *what)
{
    fprintf(stderr, "afcp: %s is not supported on Windows\n", what);
    fputs("Try 'afcp --help' for more information.\n", stderr);
    return 1;
}

/* A word an option takes (--preserve's, --sparse's...) and what it stands for. */
struct word {
    const char *name;
    int         value;
};

/* cp's argmatch: the word named in full, or by the start of one word only (or of several
 * that stand for the same): its index; -1 when none starts so, -2 when several do (cp's
 * "ambiguous argument": "" starts every word). */
static int argmatch(const char *arg, const struct word *words)
{
    size_t len = strlen(arg);
    int match = -1, ambiguous = 0;
    for (int i = 0; words[i].name; i++) {
        if (strncmp(words[i].name, arg, len))
            continue;
        if (strlen(words[i].name) == len)
            return i;
        if (match < 0)
            match = i;
        else if (words[i].value != words[match].value)
            ambiguous = 1;
    }
    return ambiguous ? -2 : match;
}

/* cp's complaint (argmatch_die's) about arg given to opt (problem: argmatch's answer), with
 * the words it takes, those listed() keeps (all when NULL); words standing for the same go
 * on one line, as cp lists them. */
static void bad_word(const char *arg, const char *opt, int problem, const struct word *words,
                     int (*listed)(int value))
{
    fprintf(stderr, "afcp: %s argument %s for %s\nValid arguments are:",
            problem == -2 ? "ambiguous" : "invalid", afcp_lq(arg), afcp_lq(opt));
    int last = -1;
    for (int i = 0; words[i].name; i++) {
        if (listed && !listed(words[i].value))
            continue;
        if (last >= 0 && words[i].value == words[last].value)
            fprintf(stderr, ", %s", afcp_lq(words[i].name));
        else
            fprintf(stderr, "\n  - %s", afcp_lq(words[i].name));
        last = i;
    }
    fputs("\nTry 'afcp --help' for more information.\n", stderr);
}

/* Whether this build keeps what a --preserve word names (-1: "context", accepted and
 * ignored on POSIX, as by a cp without SELinux). */
static int kept_here(int b)
{
    if (b == -1)
        return PRESERVE_HERE != (AFCP_P_MODE | AFCP_P_TIMES);
    return b == (AFCP_P_ATTRS | AFCP_P_LINKS | AFCP_P_XATTR) || (b & PRESERVE_HERE) == b;
}

/* cp's --preserve list: "mode,ownership,timestamps,links,context,xattr,all", each word
 * named in full or by its start, as cp takes them. 0 and *bits, or 1 (reported) for a word
 * cp would not take, or one this build cannot keep. */
static int parse_preserve(const char *list, const char *opt, int *bits, int *xattr)
{
    static const struct word words[] = {
        {"mode", AFCP_P_MODE}, {"timestamps", AFCP_P_TIMES}, {"ownership", AFCP_P_OWNER},
        {"links", AFCP_P_LINKS}, {"context", -1}, {"xattr", AFCP_P_XATTR},
        {"all", AFCP_P_ATTRS | AFCP_P_LINKS | AFCP_P_XATTR}, {NULL, 0}};
    char *copy = afcp_xstrdup(list), *w = copy;
    int ret = 0;
    *bits = 0;
    while (w && !ret) {
        char *comma = strchr(w, ',');
        if (comma)
            *comma = 0;
        int i = argmatch(w, words);
        int b = i >= 0 ? words[i].value : 0;
        if (i < 0) {
            bad_word(w, opt, i, words, kept_here);
            ret = 1;
        } else if (!kept_here(b)) {
            char what[64];
            snprintf(what, sizeof what, "%s=%s", opt, w);
            ret = refuse(what);
        } else {
            *bits |= b == -1 ? 0 : b & PRESERVE_HERE;
            if (xattr && b == AFCP_P_XATTR)
                *xattr = 1;
        }
        w = comma ? comma + 1 : NULL;
    }
    free(copy);
    return ret;
}

enum { OPT_DIRECT = 256, OPT_INPLACE, OPT_FSYNC, OPT_NOFSYNC, OPT_NOCFR, OPT_CHUNK, OPT_CHUNKJOBS,
       OPT_CFRMIN, OPT_SPARSE, OPT_HELP, OPT_VERSION, OPT_PRESERVE, OPT_NOPRESERVE, OPT_REFLINK,
       OPT_THREADS, OPT_REFUSED };

#ifdef _WIN32
#define POSIX_ONLY(val) OPT_REFUSED
#else
#define POSIX_ONLY(val) (val)
#endif

/* One of the WHEN words of --reflink/--sparse (or its start): its value, or -1 (reported,
 * with the words in cp's order). */
static int parse_when(const char *arg, const char *opt, const struct word *words)
{
    int i = argmatch(arg, words);
    if (i >= 0)
        return words[i].value;
    bad_word(arg, opt, i, words, NULL);
    return -1;
}

int afcp_options(int argc, char **argv, void (*usage)(FILE *))
{
    struct afcp_opts *o = &afcp.o;
    *o = (struct afcp_opts){.copy_range = 1, .reflink = AFCP_REFLINK_AUTO, .jobs = 64,
                            .chunk_workers = 8, .chunk_size = 1u << 20,
                            .cfr_min_size = 64u << 20};
    static const struct option longs[] = {
        {"recursive", no_argument, 0, 'r'},   {"preserve", optional_argument, 0, OPT_PRESERVE},
        {"no-preserve", required_argument, 0, OPT_NOPRESERVE},
        {"update", no_argument, 0, 'u'},      {"archive", no_argument, 0, 'a'},
        {"no-clobber", no_argument, 0, 'n'},  {"force", no_argument, 0, 'f'},
        {"verbose", no_argument, 0, 'v'},     {"quiet", no_argument, 0, 'q'},
        {"jobs", required_argument, 0, 'j'},  {"fsync", no_argument, 0, OPT_FSYNC},
        {"no-fsync", no_argument, 0, OPT_NOFSYNC},
        {"chunk-size", required_argument, 0, OPT_CHUNK},
        {"chunk-jobs", required_argument, 0, OPT_CHUNKJOBS},
        {"help", no_argument, 0, OPT_HELP},   {"version", no_argument, 0, OPT_VERSION},
        {"target-directory", required_argument, 0, 't'},
        {"interactive", no_argument, 0, POSIX_ONLY('i')},
        {"no-target-directory", no_argument, 0, 'T'},
        /* What only the POSIX afcp can do: refused by name on Windows. */
        {"reflink", optional_argument, 0, POSIX_ONLY(OPT_REFLINK)},
        {"one-file-system", no_argument, 0, POSIX_ONLY('x')},
        {"dereference", no_argument, 0, POSIX_ONLY('L')},
        {"no-dereference", no_argument, 0, POSIX_ONLY('P')},
        {"direct", no_argument, 0, POSIX_ONLY(OPT_DIRECT)},
        {"inplace", no_argument, 0, POSIX_ONLY(OPT_INPLACE)},
        {"no-copy-range", no_argument, 0, POSIX_ONLY(OPT_NOCFR)},
        {"copy-range-min", required_argument, 0, POSIX_ONLY(OPT_CFRMIN)},
        {"sparse", required_argument, 0, POSIX_ONLY(OPT_SPARSE)},
        {"threads", required_argument, 0, POSIX_ONLY(OPT_THREADS)}, /* one scheduler there */
        {0, 0, 0, 0}};
    static const struct word reflink_when[] = {{"auto", AFCP_REFLINK_AUTO},
                                               {"always", AFCP_REFLINK_ALWAYS},
                                               {"never", AFCP_REFLINK_NEVER}, {NULL, 0}};
    static const struct word sparse_when[] = {{"never", AFCP_SPARSE_NEVER},
                                              {"auto", AFCP_SPARSE_AUTO},
                                              {"always", AFCP_SPARSE_ALWAYS}, {NULL, 0}};
    int c, li = 0, bits;
    while ((c = getopt_long(argc, argv, "rRpadnfvqj:LHPuxt:Ti", longs, &li)) != -1) {
#ifdef _WIN32
        if (c == 'L' || c == 'H' || c == 'P' || c == 'd' || c == 'x' || c == 'i') {
            char what[32];
            snprintf(what, sizeof what, "option '-%c'", c);
            return refuse(what);
        }
#endif
        switch (c) {
        case 'r': case 'R': o->recursive = 1; break;
        case 'p': o->preserve |= AFCP_P_ATTRS & PRESERVE_HERE; break;
        case 'a':
            o->recursive = 1;
            o->deref = 'P';
            o->preserve |= PRESERVE_HERE;
            break;
        case 'd': o->deref = 'P'; o->preserve |= AFCP_P_LINKS; break;
        case 'u': o->update = 1; break;
        case 'x': o->one_fs = 1; break;
        case OPT_PRESERVE:
            if (!optarg)
                bits = AFCP_P_ATTRS & PRESERVE_HERE;
            else if (parse_preserve(optarg, "--preserve", &bits, &o->xattr_required))
                return 1;
            o->preserve |= bits;
            if (bits & AFCP_P_MODE)
                o->default_mode = 0;
            break;
        case OPT_NOPRESERVE:
            if (parse_preserve(optarg, "--no-preserve", &bits, NULL))
                return 1;
            o->preserve &= ~bits;
            if (bits & AFCP_P_MODE)
                o->default_mode = 1;
            if (bits & AFCP_P_XATTR)
                o->xattr_required = 0;
            break;
        case OPT_REFLINK: {
            int w = optarg ? parse_when(optarg, "--reflink", reflink_when) : AFCP_REFLINK_ALWAYS;
            if (w < 0)
                return 1;
            o->reflink = w;
            break;
        }
        /* The last of -i, -n wins; -f does not undo either (as in cp). */
        case 'n': o->noclobber = 1; o->interactive = 0; break;
        case 'i': o->interactive = 1; o->noclobber = 0; break;
        case 'f': o->force = 1; break;
        case 'v': o->verbose = 1; break;
        case 't':
            if (o->target_dir) {
                fputs("afcp: multiple target directories specified\n", stderr);
                return 1;
            }
            o->target_dir = optarg;
            break;
        case 'T': o->no_target_dir = 1; break;
        case 'L': case 'H': case 'P': o->deref = c; break;
        case 'q': o->quiet = 1; break;
        case 'j': o->jobs = parse_count(optarg, "job count"); break;
        case OPT_DIRECT: o->direct = 1; break;
        case OPT_INPLACE: o->inplace = 1; break;
        case OPT_FSYNC: o->fsync = 1; break;
        case OPT_NOFSYNC: o->fsync = 0; break;
        case OPT_NOCFR: o->copy_range = 0; break;
        case OPT_CHUNK: o->chunk_size = (size_t)parse_size(optarg, "chunk size"); break;
        case OPT_CHUNKJOBS: o->chunk_workers = parse_count(optarg, "chunk job count"); break;
        case OPT_THREADS: o->threads = parse_count(optarg, "thread count"); break;
        case OPT_CFRMIN: o->cfr_min_size = parse_size(optarg, "size"); break;
        case OPT_SPARSE: {
            int w = parse_when(optarg, "--sparse", sparse_when);
            if (w < 0)
                return 1;
            o->sparse = w;
            break;
        }
        case OPT_HELP: usage(stdout); return stdout_done();
        case OPT_VERSION:
#ifdef _WIN32
            printf("afcp %s (asyncfs %d.%d.%d, Windows)\n", AFCP_VERSION,
                   ASYNCFS_VERSION_MAJOR, ASYNCFS_VERSION_MINOR, ASYNCFS_VERSION_PATCH);
#else
            printf("afcp %s (asyncfs %d.%d.%d)\n", AFCP_VERSION, ASYNCFS_VERSION_MAJOR,
                   ASYNCFS_VERSION_MINOR, ASYNCFS_VERSION_PATCH);
#endif
            return stdout_done();
        case OPT_REFUSED: {
            char what[64];
            snprintf(what, sizeof what, "option '--%s'", longs[li].name);
            return refuse(what);
        }
        default:
            fputs("Try 'afcp --help' for more information.\n", stderr);
            return 1;
        }
    }
    if (o->reflink == AFCP_REFLINK_ALWAYS && o->sparse != AFCP_SPARSE_AUTO) {
        fputs("afcp: --reflink can be used only with --sparse=auto\n", stderr);
        fputs("Try 'afcp --help' for more information.\n", stderr);
        return 1;
    }
    if (o->chunk_size % 4096) {
        fputs("afcp: --chunk-size must be a multiple of 4096\n", stderr);
        return 1;
    }
    int nops = argc - optind;
    if (o->target_dir && o->no_target_dir) {
        fputs("afcp: cannot combine --target-directory (-t) and --no-target-directory (-T)\n",
              stderr);
        return 1;
    }
    if (o->no_target_dir && nops > 2) {
        fprintf(stderr, "afcp: extra operand %s\n", afcp_q(argv[optind + 2]));
        fputs("Try 'afcp --help' for more information.\n", stderr);
        return 1;
    }
    if (nops < (o->target_dir ? 1 : 2)) {
        if (nops == 0)
            fputs("afcp: missing file operand\n", stderr);
        else
            fprintf(stderr, "afcp: missing destination file operand after %s\n",
                    afcp_q(argv[optind]));
        fputs("Try 'afcp --help' for more information.\n", stderr);
        return 1;
    }
    return -1;
}

/* ------------------------------------------------------------------------------------------
 * The root task: the progress bar beside the walker, which copies the operands
 * ---------------------------------------------------------------------------------------- */
struct work {
    void (*walk)(struct corio_task *, void *);
    void             *plan;
    struct corio_wg  *wg;
};

/* The walker: the operands one after another; file tasks (and batches, on every scheduler)
 * are its children. */
static void work_task(struct corio_task *t, void *arg)
{
    struct work *w = arg;
    w->walk(t, w->plan);
    afcp.walking = 0;
    corio_wait(t);
    corio_wg_done(w->wg);
}

void afcp_root(struct corio_task *t, void (*walk)(struct corio_task *, void *), void *plan)
{
    struct corio_task *bar = NULL;
    if (afcp.progress)
        corio_spawn(t, afcp_progress_task, NULL, &bar);
    struct corio_wg wg = CORIO_WG_INIT;
    corio_wg_add(&wg, 1);
    struct work w = {walk, plan, &wg};
    if (corio_spawn(t, work_task, &w, NULL) < 0) {
        afcp_err(ENOMEM, "cannot start");
        return;
    }
    corio_wg_wait(t, &wg);
    if (bar && !corio_task_done(bar))
        corio_cancel(bar);
}

/* ------------------------------------------------------------------------------------------
 * Files
 * ---------------------------------------------------------------------------------------- */
void afcp_tmpname(char *tmp)
{
#ifdef _WIN32
    static const char set[] = "abcdefghijklmnopqrstuvwxyz0123456789"; /* case-insensitive */
#else
    static const char set[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
#endif
    uint64_t state = afcp_me->name_state;
    if (!state) {
#ifdef _WIN32
        LARGE_INTEGER now;
        QueryPerformanceCounter(&now);
        state = ((uint64_t)now.QuadPart << 20) ^ ((uint64_t)GetCurrentProcessId() << 40);
#else
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
#endif
        state ^= (uint64_t)afcp_me->index * 0x9E3779B97F4A7C15ull; /* one sequence per thread */
        state |= 1;
    }
    memcpy(tmp, ".afcp.", 6);
    for (int i = 0; i < 6; i++) {
        state ^= state << 13; /* xorshift64: names need to be unlikely, not secret */
        state ^= state >> 7;
        state ^= state << 17;
        tmp[6 + i] = set[state % (sizeof set - 1)];
    }
    tmp[12] = 0;
    afcp_me->name_state = state;
}

int afcp_fd_wait(int err, int holds_slot, unsigned *tries)
{
    struct corio_task *t = corio_current();
    if ((err != -EMFILE && err != -ENFILE) || !t || *tries >= 100 ||
        afcp_get(&afcp.files_busy) <= (uint64_t)(holds_slot != 0))
        return 0;
    if ((*tries)++ == 0 && afcp_me->files_cap > afcp_me->files_debt + 1)
        afcp_me->files_debt++;
    corio_sleep(t, 1000 * 1000);
    return 1;
}

int afcp_open_file(int dirfd, const char *name, int flags, unsigned perm, struct afs_file **out)
{
    unsigned tries = 0;
    int err;
    do
        err = afs_openat_file(AFCP_CTX, dirfd, name, flags, perm, AFS_MODE_SYNC, NULL, out);
    while (afcp_fd_wait(err, 1, &tries));
    return err;
}

static void chunk_loop(struct corio_task *t, struct afcp_chunks *k)
{
    afcp_sem_acquire(t, &afcp_me->bufs);
    void *buf = afcp_buf_get();
    if (!buf) {
        if (!*k->err) {
            *k->err = -ENOMEM;
            *k->err_side = 0;
        }
    } else {
        while (!*k->err && k->next < k->n) {
            uint64_t off = k->next++ * afcp.o.chunk_size, left = k->size - off;
            k->copy(k->c, buf, off, left < afcp.o.chunk_size ? (size_t)left : afcp.o.chunk_size);
        }
        afcp_buf_put(buf);
    }
    afcp_sem_release(&afcp_me->bufs);
}

static void chunk_worker(struct corio_task *t, void *arg)
{
    chunk_loop(t, arg);
}

void afcp_chunks_run(struct corio_task *t, struct afcp_chunks *k)
{
    k->next = 0;
    k->n = (k->size + afcp.o.chunk_size - 1) / afcp.o.chunk_size;
    unsigned helpers = k->n < afcp.o.chunk_workers ? (unsigned)k->n : afcp.o.chunk_workers;
    for (unsigned i = 1; i < helpers; i++)
        if (corio_spawn(t, chunk_worker, k, NULL) < 0)
            break;
    chunk_loop(t, k);
    corio_wait(t); /* the helpers use k, on this frame */
}
