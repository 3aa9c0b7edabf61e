/* afcp on Windows: main (the command line as UTF-8), options, messages, the plan for the
 * operands and the root task. win_walk.c walks and copies, win_fs.c holds paths, the
 * metadata calls and Ctrl+C; progress.c and quote.c are shared with the POSIX afcp.
 * docs/afcp-windows.md says what afcp does on Windows and what it refuses. */
#include "win_afcp.h"

#include <errno.h>
#include <getopt.h>
#include <io.h>
#include <shellapi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct afcp_app afcp;
/* One scheduler on the main thread: every task of Windows afcp runs there (the directory
 * listings on its pool threads touch none of this). */
static struct afcp_sched    sched_state;
static struct corio_sched  *sched;
struct afcp_sched *afcp_me;

/* ------------------------------------------------------------------------------------------
 * Messages (the formats of afcp.c: %s, %d, and '%s' for a quoted file name)
 * ---------------------------------------------------------------------------------------- */
static void vformat(FILE *f, const char *fmt, va_list ap)
{
    for (const char *p = fmt; *p; p++) {
        if (!strncmp(p, "'%s'", 4)) {
            fputs(afcp_q(va_arg(ap, const char *)), f);
            p += 3;
        } else if (p[0] == '%' && p[1] == 's') {
            fputs(va_arg(ap, const char *), f);
            p++;
        } else if (p[0] == '%' && p[1] == 'd') {
            fprintf(f, "%d", va_arg(ap, int));
            p++;
        } else if (p[0] == '%') {
            fprintf(stderr, "afcp: bad message format \"%s\"\n", fmt);
            abort();
        } else {
            fputc(*p, f);
        }
    }
}

void afcp_err(int err, const char *fmt, ...)
{
    afcp_progress_clear();
    va_list ap;
    va_start(ap, fmt);
    fputs("afcp: ", stderr);
    vformat(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, ": %s\n", afs_strerror(err > 0 ? -err : err));
    afcp.status = 1;
}

void afcp_note(const char *fmt, ...)
{
    afcp_progress_clear();
    va_list ap;
    va_start(ap, fmt);
    fputs("afcp: ", stderr);
    vformat(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void afcp_verbose(const char *fmt, ...)
{
    afcp_progress_clear();
    va_list ap;
    va_start(ap, fmt);
    vformat(stdout, fmt, ap);
    va_end(ap);
    putchar('\n');
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
 * The plan: cp's rules for SRC DST and SRC... DIR
 * ---------------------------------------------------------------------------------------- */
struct plan {
    char **srcs;
    int    nsrc;
    char  *dst, *dst_full;
    int    dst_is_dir;
};

/* The last component of a full path ("" for the root of a drive or share). */
static const char *base_of(const char *full)
{
    const char *b = strrchr(full, '\\');
    b = b ? b + 1 : full;
    return strchr(b, ':') ? "" : b; /* "\\?\C:\" ends in "" after the '\' anyway */
}

static void copy_operand(struct corio_task *t, const char *src, const struct plan *p)
{
    int err = 0;
    char *sfull = wafcp_full(src, &err);
    if (!sfull) {
        afcp_err(err, "cannot stat '%s'", src);
        return;
    }
    if (!p->dst_is_dir) {
        wafcp_copy_operand(t, sfull, src, p->dst_full, p->dst);
    } else if (!*base_of(sfull)) {
        afcp_note("cannot copy '%s': name a directory under it, not the root", src);
        afcp.status = 1;
    } else {
        char *dfull = wafcp_join(p->dst_full, base_of(sfull));
        char *dshow = wafcp_join(p->dst, base_of(sfull));
        wafcp_copy_operand(t, sfull, src, dfull, dshow);
        free(dfull);
        free(dshow);
    }
    free(sfull);
}

struct work {
    const struct plan *plan;
    struct corio_wg   *wg;
};

static void work_task(struct corio_task *t, void *arg)
{
    struct work *w = arg;
    for (int i = 0; i < w->plan->nsrc; i++)
        copy_operand(t, w->plan->srcs[i], w->plan);
    afcp.walking = 0;
    corio_wait(t);
    corio_wg_done(w->wg);
}

static void root_task(struct corio_task *t, void *arg)
{
    struct corio_task *bar = NULL;
    if (afcp.progress)
        corio_spawn(t, afcp_progress_task, NULL, &bar);
    struct corio_wg wg = CORIO_WG_INIT;
    corio_wg_add(&wg, 1);
    struct work w = {arg, &wg};
    if (corio_spawn(t, work_task, &w, NULL) < 0) {
        afcp_err(ENOMEM, "cannot start");
        return;
    }
    corio_wg_wait(t, &wg);
    if (bar && !corio_task_done(bar))
        corio_cancel(bar);
}

/* ------------------------------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------------------------- */
static void usage(FILE *f)
{
    fputs("Usage: afcp [OPTION]... SRC DST\n"
          "  or:  afcp [OPTION]... SRC... DIRECTORY\n"
          "Copy SRC to DST, or several SRC into DIRECTORY, with many files and chunks in\n"
          "flight (asyncfs + corio). Windows build.\n\n"
          "  -r, -R, --recursive  copy directories recursively (symbolic links and junctions\n"
          "                       inside them are reported and not copied)\n"
          "  -p                   same as --preserve=mode,timestamps\n"
          "      --preserve[=LIST]  keep the attributes in LIST: mode (the attributes:\n"
          "                       read-only, hidden, system, archive, also on directories\n"
          "                       that exist already), timestamps (creation, access and\n"
          "                       write times), all (both)\n"
          "      --no-preserve=LIST  do not keep the attributes in LIST\n"
          "  -a, --archive        same as -r --preserve=all\n"
          "  -u, --update         copy only when SRC is newer than DST or DST is missing\n"
          "  -n, --no-clobber     do not overwrite an existing file\n"
          "  -f, --force          replace a read-only destination file\n"
          "  -v, --verbose        print each copy as 'SRC' -> 'DST'\n"
          "  -q, --quiet          no progress bar\n"
          "      --fsync          rename each copy into place only once it is on disk\n"
          "      --no-fsync       do not wait for the disk (the default, as cp)\n"
          "  -j, --jobs=N         files in flight (default 64)\n"
          "      --chunk-size=N   bytes per read/write of a large file (default 1M)\n"
          "      --chunk-jobs=N   reads/writes in flight per large file (default 8)\n"
          "      --help           display this help and exit\n"
          "      --version        output version information and exit\n\n"
          "Names are Unicode; paths may be longer than 260 characters.\n"
          "A file keeps its attributes (read-only, hidden, system, archive) as cp keeps a\n"
          "mode; with -p it keeps its times too.\n\n"
          "Safety: each file is written under a temporary name (.afcp.XXXXXX) next to its\n"
          "destination, given its attributes and renamed into place once complete. On an\n"
          "error, Ctrl+C, Ctrl+Break or when the console closes, every temporary is\n"
          "removed: once afcp has ended, no name shows a partial copy.\n\n"
          "Exit status: 0 when everything was copied, 1 when anything failed (afcp goes on\n"
          "with the other files and reports each failure).\n",
          f);
}

static uint64_t parse_size(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    default: break;
    }
    if (errno || *end || v == 0) {
        fprintf(stderr, "afcp: invalid %s: %s\n", what, afcp_q(s));
        exit(1);
    }
    return v;
}

static int refuse(const char *what)
{
    fprintf(stderr, "afcp: %s is not supported on Windows\n", what);
    fputs("Try 'afcp --help' for more information.\n", stderr);
    return 1;
}

/* --preserve LIST: the words Windows can keep. 0, or 1 (reported). */
static int parse_preserve(const char *list, const char *opt, int *bits)
{
    char *copy = afcp_xstrdup(list);
    *bits = 0;
    int ret = 0;
    for (char *w = strtok(copy, ","); w && !ret; w = strtok(NULL, ",")) {
        if (!strcmp(w, "mode"))
            *bits |= AFCP_P_MODE;
        else if (!strcmp(w, "timestamps"))
            *bits |= AFCP_P_TIMES;
        else if (!strcmp(w, "all"))
            *bits |= AFCP_P_MODE | AFCP_P_TIMES;
        else if (!strcmp(w, "ownership") || !strcmp(w, "links") || !strcmp(w, "xattr") ||
                 !strcmp(w, "context")) {
            char what[64];
            snprintf(what, sizeof what, "%s=%s", opt, w);
            ret = refuse(what);
        } else {
            fprintf(stderr, "afcp: invalid argument %s for '%s'\n", afcp_q(w), opt);
            fputs("Valid arguments are:\n  - 'mode'\n  - 'timestamps'\n  - 'all'\n"
                  "Try 'afcp --help' for more information.\n", stderr);
            ret = 1;
        }
    }
    free(copy);
    return ret;
}

enum { OPT_FSYNC = 256, OPT_NOFSYNC, OPT_CHUNK, OPT_CHUNKJOBS, OPT_HELP, OPT_VERSION,
       OPT_PRESERVE, OPT_NOPRESERVE, OPT_REFUSED };

static UINT console_cp;

static void restore_console(void)
{
    fflush(stdout);
    fflush(stderr);
    SetConsoleOutputCP(console_cp);
}

/* The options and the copy, argv in UTF-8. */
static int afcp_main(int argc, char **argv)
{
    struct afcp_opts *o = &afcp.o;
    *o = (struct afcp_opts){.jobs = 64, .chunk_workers = 8, .chunk_size = 1u << 20};
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
        /* The POSIX afcp's options that cannot work here: refused by name. */
        {"reflink", optional_argument, 0, OPT_REFUSED},
        {"direct", no_argument, 0, OPT_REFUSED}, {"inplace", no_argument, 0, OPT_REFUSED},
        {"sparse", required_argument, 0, OPT_REFUSED},
        {"no-copy-range", no_argument, 0, OPT_REFUSED},
        {"copy-range-min", required_argument, 0, OPT_REFUSED},
        {"dereference", no_argument, 0, OPT_REFUSED},
        {"no-dereference", no_argument, 0, OPT_REFUSED},
        {"one-file-system", no_argument, 0, OPT_REFUSED},
        {"threads", required_argument, 0, OPT_REFUSED}, /* one scheduler here */
        {0, 0, 0, 0}};
    int c, li, bits;
    while ((c = getopt_long(argc, argv, "rRpanfvqj:uLHPdx", longs, &li)) != -1) {
        switch (c) {
        case 'r': case 'R': o->recursive = 1; break;
        case 'p': o->preserve |= AFCP_P_MODE | AFCP_P_TIMES; break;
        case 'a': o->recursive = 1; o->preserve |= AFCP_P_MODE | AFCP_P_TIMES; break;
        case 'u': o->update = 1; break;
        case OPT_PRESERVE:
            if (!optarg)
                bits = AFCP_P_MODE | AFCP_P_TIMES;
            else if (parse_preserve(optarg, "--preserve", &bits))
                return 1;
            o->preserve |= bits;
            break;
        case OPT_NOPRESERVE:
            if (parse_preserve(optarg, "--no-preserve", &bits))
                return 1;
            o->preserve &= ~bits;
            break;
        case 'n': o->noclobber = 1; o->force = 0; break;
        case 'f': o->force = 1; o->noclobber = 0; break;
        case 'v': o->verbose = 1; break;
        case 'q': o->quiet = 1; break;
        case 'j': o->jobs = (unsigned)parse_size(optarg, "job count"); break;
        case OPT_FSYNC: o->fsync = 1; break;
        case OPT_NOFSYNC: o->fsync = 0; break;
        case OPT_CHUNK: o->chunk_size = (size_t)parse_size(optarg, "chunk size"); break;
        case OPT_CHUNKJOBS:
            o->chunk_workers = (unsigned)parse_size(optarg, "chunk job count");
            break;
        case OPT_HELP: usage(stdout); return 0;
        case OPT_VERSION:
            printf("afcp %s (asyncfs %d.%d.%d, Windows)\n", AFCP_VERSION,
                   ASYNCFS_VERSION_MAJOR, ASYNCFS_VERSION_MINOR, ASYNCFS_VERSION_PATCH);
            return 0;
        case OPT_REFUSED: {
            char what[64];
            snprintf(what, sizeof what, "option '--%s'", longs[li].name);
            return refuse(what);
        }
        case 'L': case 'H': case 'P': case 'd': case 'x': {
            char what[32];
            snprintf(what, sizeof what, "option '-%c'", c);
            return refuse(what);
        }
        default:
            fputs("Try 'afcp --help' for more information.\n", stderr);
            return 1;
        }
    }
    if (o->chunk_size % 4096) {
        fputs("afcp: --chunk-size must be a multiple of 4096\n", stderr);
        return 1;
    }
    int nops = argc - optind;
    if (nops < 2) {
        if (nops == 0)
            fputs("afcp: missing file operand\n", stderr);
        else
            fprintf(stderr, "afcp: missing destination file operand after %s\n",
                    afcp_q(argv[optind]));
        fputs("Try 'afcp --help' for more information.\n", stderr);
        return 1;
    }
    struct plan plan = {argv + optind, nops - 1, argv[argc - 1], NULL, 0};
    int err = 0;
    if (!(plan.dst_full = wafcp_full(plan.dst, &err))) {
        fprintf(stderr, "afcp: cannot stat %s: %s\n", afcp_q(plan.dst), afs_strerror(err));
        return 1;
    }
    wchar_t *wd = wafcp_wide(plan.dst_full);
    DWORD da = wd ? GetFileAttributesW(wd) : INVALID_FILE_ATTRIBUTES;
    free(wd);
    plan.dst_is_dir = da != INVALID_FILE_ATTRIBUTES && (da & FILE_ATTRIBUTE_DIRECTORY);
    if (nops > 2 && !plan.dst_is_dir) {
        fprintf(stderr, "afcp: target %s is not a directory\n", afcp_q(plan.dst));
        return 1;
    }

    /* A progress bar needs a console that takes VT sequences (Windows 10 and later). */
    HANDLE herr = GetStdHandle(STD_ERROR_HANDLE);
    DWORD mode;
    afcp.progress = !o->quiet && _isatty(2) && GetConsoleMode(herr, &mode) &&
                    SetConsoleMode(herr, mode | ENABLE_VIRTUAL_TERMINAL_PROCESSING);
    wafcp_temps_init(o->jobs);
    afcp.walking = 1;
    afcp_me = &sched_state;
    afcp_sem_init(&afcp_me->files, o->jobs);
    afcp_sem_init(&afcp_me->bufs, o->jobs > 2 * o->chunk_workers ? o->jobs
                                                                 : 2 * o->chunk_workers);

    struct afs_config acfg;
    afs_config_default(&acfg);
    if ((err = afs_ctx_new(&afcp_me->ctx, &acfg)) < 0) {
        fprintf(stderr, "afcp: cannot create an I/O context: %s\n", afs_strerror(err));
        return 1;
    }
    struct corio_config ccfg;
    corio_config_default(&ccfg);
    ccfg.ctx = afcp_me->ctx;
    ccfg.stack_size = 256u << 10; /* the walker keeps its directories on the heap */
    if ((err = corio_sched_new(&sched, &ccfg)) < 0) {
        fprintf(stderr, "afcp: cannot create the scheduler: %s\n", afs_strerror(err));
        return 1;
    }
    afcp.t_start = corio_now();
    err = corio_sched_run(sched, root_task, &plan);
    if (wafcp_ending())
        Sleep(INFINITE); /* the console handler removes the temporaries and ends us */
    if (err < 0) {
        fprintf(stderr, "afcp: scheduler: %s\n", afs_strerror(err));
        afcp.status = 1;
    }
    afcp_progress_final();
    corio_sched_free(sched);
    while (afcp_me->buf_free) {
        void *b = afcp_me->buf_free;
        afcp_me->buf_free = *(void **)b;
        afs_buf_free(afcp_me->ctx, b, o->chunk_size);
    }
    afs_ctx_free(afcp_me->ctx);
    free(plan.dst_full);
    if (ferror(stdout) || fflush(stdout) != 0) {
        fputs("afcp: write error\n", stderr);
        afcp.status = 1;
    }
    return afcp.status;
}

/* The command line as UTF-8: the C runtime's argv is in the ANSI code page, which cannot
 * hold every name. */
int main(void)
{
    int argc;
    wchar_t **wargv = CommandLineToArgvW(GetCommandLineW(), &argc);
    if (!wargv) {
        fputs("afcp: cannot read the command line\n", stderr);
        return 1;
    }
    char **argv = afcp_xmalloc(((size_t)argc + 1) * sizeof *argv);
    for (int i = 0; i < argc; i++) {
        argv[i] = wafcp_utf8(wargv[i]);
        if (!argv[i]) {
            fprintf(stderr, "afcp: argument %d is not valid UTF-16\n", i);
            return 1;
        }
    }
    argv[argc] = NULL;
    LocalFree(wargv);
    /* Names are printed as UTF-8: a console shows them as such (restored at exit). */
    console_cp = GetConsoleOutputCP();
    if (console_cp && console_cp != CP_UTF8 && SetConsoleOutputCP(CP_UTF8))
        atexit(restore_console);
    int r = afcp_main(argc, argv);
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    free(argv);
    return r;
}
