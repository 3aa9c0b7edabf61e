/* afcp on Windows: main (the command line as UTF-8), --help and the plan for the operands.
 * win_walk.c walks and copies, win_fs.c holds paths, the metadata calls and Ctrl+C;
 * common.c (options, messages, the root task, the chunk loop), progress.c and quote.c are
 * shared with the POSIX afcp.
 * docs/afcp-windows.md says what afcp does on Windows and what it refuses. */
#include "win_afcp.h"

#include <errno.h>
#include <getopt.h>
#include <io.h>
#include <shellapi.h>
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

/* Copies one operand, -v's number vn (ended when it is done). */
static void copy_operand(struct corio_task *t, const char *src, const struct plan *p,
                         uint64_t vn)
{
    int err = 0;
    char *sfull = wafcp_full(src, &err);
    if (!sfull) {
        afcp_err(err, "cannot stat '%s'", src);
        afcp_vend(vn);
        return;
    }
    if (!p->dst_is_dir) {
        wafcp_copy_operand(t, sfull, src, p->dst_full, p->dst, vn);
    } else if (!*base_of(sfull)) {
        afcp_note("cannot copy '%s': name a directory under it, not the root", src);
        afcp_fail();
        afcp_vend(vn);
    } else {
        char *dfull = wafcp_join(p->dst_full, base_of(sfull));
        char *dshow = wafcp_join(p->dst, base_of(sfull));
        wafcp_copy_operand(t, sfull, src, dfull, dshow, vn);
        free(dfull);
        free(dshow);
    }
    free(sfull);
}

/* The walker's work: one operand after another, each an entry of its own for -v (what is
 * reported about it goes after the lines of the operands before). */
static void walk_operands(struct corio_task *t, void *arg)
{
    const struct plan *p = arg;
    for (int i = 0; i < p->nsrc; i++) {
        uint64_t vn = afcp_vnum();
        afcp_vtask(t, vn);
        copy_operand(t, p->srcs[i], p, vn);
    }
    afcp_vtask(t, 0);
}

static void root_task(struct corio_task *t, void *arg)
{
    afcp_root(t, walk_operands, arg);
}

/* ------------------------------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------------------------- */
static void usage(FILE *f)
{
    fputs("Usage: afcp [OPTION]... SRC DST\n"
          "  or:  afcp [OPTION]... SRC... DIRECTORY\n"
          "  or:  afcp [OPTION]... -t DIRECTORY SRC...\n"
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
          "  -t, --target-directory=DIR  copy every SRC into DIR\n"
          "  -T, --no-target-directory  DST is the name of the copy, even when it is a\n"
          "                       directory (SRC's contents are copied into it)\n"
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
    int r = afcp_options(argc, argv, usage);
    if (r >= 0)
        return r;
    const struct afcp_opts *o = &afcp.o;
    int nops = argc - optind;
    struct plan plan = {argv + optind, nops - 1, argv[argc - 1], NULL, 0};
    if (o->target_dir) {
        plan.nsrc = nops;
        plan.dst = (char *)o->target_dir;
    }
    int err = 0;
    if (!(plan.dst_full = wafcp_full(plan.dst, &err))) {
        fprintf(stderr, "afcp: cannot stat %s: %s\n", afcp_q(plan.dst), afs_strerror(err));
        return 1;
    }
    wchar_t *wd = wafcp_wide(plan.dst_full);
    DWORD da = wd ? GetFileAttributesW(wd) : INVALID_FILE_ATTRIBUTES;
    free(wd);
    plan.dst_is_dir = !o->no_target_dir && da != INVALID_FILE_ATTRIBUTES &&
                      (da & FILE_ATTRIBUTE_DIRECTORY);
    if (o->target_dir && !plan.dst_is_dir) {
        fprintf(stderr, "afcp: target directory %s: %s\n", afcp_q(plan.dst),
                afs_strerror(da == INVALID_FILE_ATTRIBUTES ? -ENOENT : -ENOTDIR));
        return 1;
    }
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
