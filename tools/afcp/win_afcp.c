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

static int is_sep(char c)
{
    return c == '\\' || c == '/';
}

/* How a path as written ends, which its full path (GetFullPathNameW) no longer shows: in a
 * separator ("d\", "d/"), in "\." ("d\."), or in a name. */
enum { END_NAME, END_SEP, END_DOT };
static int end_of(const char *path)
{
    size_t n = strlen(path);
    if (n > 1 && is_sep(path[n - 1]))
        return END_SEP;
    if (n > 1 && path[n - 1] == '.' && is_sep(path[n - 2]))
        return END_DOT;
    return END_NAME;
}

/* The name of the copy of src (full path sfull) in the target directory: "." (the target
 * itself) when src as written ends in "." or "..", as cp copies "a/." and "a/.." into
 * "dir/.", not next to it; "" for a root, which has no name. */
static const char *copy_name(const char *src, const char *sfull)
{
    size_t n = strlen(src);
    while (n > 1 && is_sep(src[n - 1]))
        n--;
    size_t b = n;
    while (b > 0 && !is_sep(src[b - 1]) && src[b - 1] != ':')
        b--;
    if ((n - b == 1 && src[b] == '.') || (n - b == 2 && src[b] == '.' && src[b + 1] == '.'))
        return ".";
    return base_of(sfull);
}

/* cp's words when the copy of src (st) cannot be made at dst (an error, or -v's line and an
 * error for a file, as afcp.c says it). */
static void cannot_create(const char *src, const char *dst, const struct afs_stat *st,
                          int err, uint64_t vn)
{
    if (!S_ISDIR(st->mode))
        afcp_vline(vn, src, dst);
    afcp_err(err, S_ISDIR(st->mode) ? "cannot create directory '%s'"
                                    : "cannot create regular file '%s'", dst);
}

/* Copies one operand (st: what its stat found), -v's number vn (ended when it is done). */
static void copy_operand(struct corio_task *t, const char *src, const struct afs_stat *st,
                         const struct plan *p, uint64_t vn)
{
    int err = 0;
    char *sfull = wafcp_full(src, &err), *dfull = NULL, *dshow = NULL;
    if (!sfull) {
        afcp_err(err, "cannot stat '%s'", src);
        goto out;
    }
    if (!p->dst_is_dir) {
        int end = end_of(p->dst);
        if (end != END_NAME) {
            /* "DST\" and "DST\." name a directory: never a file to create or overwrite (the
             * full path has lost the separator). */
            struct afs_stat dst;
            int derr = wafcp_stat(p->dst, 0, &dst);
            if (derr == -ENOTDIR) {
                afcp_err(ENOTDIR, "cannot stat '%s'", p->dst);
                goto out;
            }
            if (end == END_DOT && derr == -ENOENT) {
                cannot_create(src, p->dst, st, ENOENT, vn); /* "new\." is in "new" */
                goto out;
            }
            if (!S_ISDIR(st->mode)) {
                cannot_create(src, p->dst, st, ENOTDIR, vn);
                goto out;
            }
        }
        dfull = afcp_xstrdup(p->dst_full);
        dshow = afcp_xstrdup(p->dst);
    } else {
        const char *name = copy_name(src, sfull);
        if (!*name) {
            afcp_note("cannot copy '%s': name a directory under it, not the root", src);
            afcp_fail();
            goto out;
        }
        dfull = strcmp(name, ".") ? wafcp_join(p->dst_full, name) : afcp_xstrdup(p->dst_full);
        dshow = wafcp_join(p->dst, name);
    }
    wafcp_copy_operand(t, sfull, src, st, dfull, dshow, vn);
    vn = 0; /* ended */
out:
    afcp_vend(vn);
    free(sfull);
    free(dfull);
    free(dshow);
}

/* Whether the operand src (err, st: what its stat found) may be something this run is
 * writing: missing (not made yet, maybe), a destination directory, or a file in one. */
static int maybe_ours(const char *src, int err, const struct afs_stat *st)
{
    if (err < 0)
        return err == -ENOENT;
    if (S_ISDIR(st->mode))
        return wafcp_is_dest(st);
    if (!wafcp_dests_known())
        return 0;
    char *full = wafcp_full(src, &err);
    struct afs_stat dir;
    int r = full && wafcp_up(full) && wafcp_stat(full, 0, &dir) == 0 && wafcp_is_dest(&dir);
    free(full);
    return r;
}

/* What operand_ok keeps of the operands before. */
struct seen {
    int      known; /* its stat found it */
    int      dir;
    uint64_t dev, ino;
    wchar_t *name;  /* the name of its copy (copy_name) */
};

/* Several operands into a directory: whether operand i (st: its stat) may go, as cp (and
 * afcp.c) decide. The same source named twice is copied once (a warning). Two directories of
 * one name are merged (*merges). A file whose name an earlier operand has (*later) waits for
 * the copies in flight, and is then judged by what is there (later_ok). Names compare as
 * NTFS compares them, without case. */
static int operand_ok(const struct plan *p, int i, const struct afs_stat *st,
                      struct seen *seen, int *merges, int *later)
{
    const char *src = p->srcs[i];
    int err = 0;
    char *sfull = wafcp_full(src, &err);
    *merges = *later = 0;
    if (!sfull)
        return 1; /* copy_operand reports it */
    const char *name = copy_name(src, sfull);
    seen[i] = (struct seen){1, S_ISDIR(st->mode), st->dev, st->ino, wafcp_wide(name)};
    int ok = 1;
    for (int j = 0; j < i && ok && seen[i].name; j++) {
        if (!seen[j].known || !seen[j].name ||
            CompareStringOrdinal(seen[j].name, -1, seen[i].name, -1, TRUE) != CSTR_EQUAL)
            continue;
        if (seen[j].dev == seen[i].dev && seen[j].ino == seen[i].ino) {
            afcp_note("warning: source %s '%s' specified more than once",
                      seen[i].dir ? "directory" : "file", src);
            ok = 0;
        } else if (!seen[i].dir || !seen[j].dir) {
            *later = 1;
        } else {
            *merges = 1; /* two directories of one name: the later one's files win */
        }
    }
    free(sfull);
    return ok;
}

/* The full path of the copy of operand src in the target directory, and in *show (when not
 * NULL) that path as the user wrote it; malloc'd, NULL when src has no full path or no name
 * (a root: copy_operand reports it). */
static char *dest_in_dir(const struct plan *p, const char *src, char **show)
{
    int err = 0;
    char *sfull = wafcp_full(src, &err), *dfull = NULL;
    const char *name = sfull ? copy_name(src, sfull) : "";
    if (*name) {
        dfull = strcmp(name, ".") ? wafcp_join(p->dst_full, name) : afcp_xstrdup(p->dst_full);
        if (show)
            *show = wafcp_join(p->dst, name);
    }
    free(sfull);
    return dfull;
}

/* Operand i (st: its stat), whose name an earlier operand has, once the earlier copies are
 * done: a destination this run made (not what was there before the run, *before; mode 0:
 * nothing) is not replaced, as cp refuses "just-created" ones, after its own checks of -n,
 * the same file, -u and a directory against a non-directory (in check_dest's order, on the
 * library's stat: volume and file index, the write time). An earlier operand that made
 * nothing there (skipped by -u or -n, or failed) leaves the usual rules. Returns whether
 * the copy goes on. */
static int later_ok(const struct plan *p, int i, const struct afs_stat *st,
                    const struct afs_stat *before)
{
    const char *src = p->srcs[i];
    char *dshow = NULL, *dfull = dest_in_dir(p, src, &dshow);
    struct afs_stat d;
    int ok = 1;
    if (!dfull || wafcp_stat(dfull, 1, &d) < 0 ||
        (before->mode && d.dev == before->dev && d.ino == before->ino))
        goto out; /* not made by this run */
    ok = 0;
    if (afcp.o.noclobber)
        goto out;
    if (st->dev == d.dev && st->ino == d.ino) {
        afcp_note("'%s' and '%s' are the same file", src, dshow);
    } else if (afcp.o.update && !S_ISDIR(st->mode) &&
               (st->mtime.sec < d.mtime.sec ||
                (st->mtime.sec == d.mtime.sec && st->mtime.nsec <= d.mtime.nsec))) {
        goto out; /* -u: a destination as new as the source (or newer) stays */
    } else if (S_ISDIR(st->mode) && !S_ISDIR(d.mode)) {
        afcp_note("cannot overwrite non-directory '%s' with directory '%s'", dshow, src);
    } else if (S_ISDIR(d.mode) && !S_ISDIR(st->mode)) {
        afcp_note("cannot overwrite directory '%s' with non-directory", dshow);
    } else {
        afcp_note("will not overwrite just-created '%s' with '%s'", dshow, src);
    }
    afcp_fail();
out:
    free(dfull);
    free(dshow);
    return ok;
}

/* The walker's work: one operand after another, each an entry of its own for -v (what is
 * reported about it goes after the lines of the operands before). */
static void walk_operands(struct corio_task *t, void *arg)
{
    const struct plan *p = arg;
    struct seen *seen = NULL;
    struct afs_stat *before = NULL;
    if (wafcp_track_dests) {
        seen = calloc((size_t)p->nsrc, sizeof *seen);
        before = calloc((size_t)p->nsrc, sizeof *before);
        if (!seen || !before) {
            fputs("afcp: out of memory\n", stderr);
            exit(1);
        }
        struct afs_stat d;
        if (wafcp_stat(p->dst_full, 0, &d) == 0)
            wafcp_remember_dest(&d); /* the files of the operands go in there */
        /* What each operand's destination is before the run (mode 0: nothing), not
         * followed: a link there is the link. */
        for (int i = 0; i < p->nsrc; i++) {
            char *dfull = dest_in_dir(p, p->srcs[i], NULL);
            if (!dfull || wafcp_stat(dfull, 1, &before[i]) < 0)
                before[i].mode = 0;
            free(dfull);
        }
    }
    for (int i = 0; i < p->nsrc; i++) {
        /* The operand itself is followed (a link named on the command line is what it
         * names); the library's stat says ENOTDIR of "file\" and "file\x", as POSIX does. */
        struct afs_stat st;
        int err = wafcp_stat(p->srcs[i], 0, &st);
        /* cp copies one operand after the other: one that an earlier one may be making (or
         * writing) is looked at once the copies in flight are done. */
        if (i > 0 && maybe_ours(p->srcs[i], err, &st)) {
            corio_wait(t);
            err = wafcp_stat(p->srcs[i], 0, &st);
        }
        uint64_t vn = afcp_vnum();
        afcp_vtask(t, vn);
        int merges = 0, later = 0;
        if (err < 0) {
            afcp_err(err, "cannot stat '%s'", p->srcs[i]);
            afcp_vend(vn);
        } else if (!seen || operand_ok(p, i, &st, seen, &merges, &later)) {
            /* Merged into a directory an earlier operand copies to: cp copies that one whole
             * first, so the later operand's files replace its files, in order. A file whose
             * name an earlier operand has is judged once that one is done. */
            if (merges || later)
                corio_wait(t);
            if (!later || later_ok(p, i, &st, &before[i]))
                copy_operand(t, p->srcs[i], &st, p, vn);
            else
                afcp_vend(vn);
        } else {
            afcp_vend(vn);
        }
    }
    afcp_vtask(t, 0);
    for (int i = 0; seen && i < p->nsrc; i++)
        free(seen[i].name);
    free(seen);
    free(before);
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
    /* The context first: the target is looked at through it, as POSIX stat looks at it
     * ("file\" and "file\x" are not directories, ENOTDIR). */
    afcp_me = &sched_state;
    struct afs_config acfg;
    afs_config_default(&acfg);
    if ((err = afs_ctx_new(&afcp_me->ctx, &acfg)) < 0) {
        fprintf(stderr, "afcp: cannot create an I/O context: %s\n", afs_strerror(err));
        return 1;
    }
    struct afs_stat dst;
    int dst_err = wafcp_stat(plan.dst, 0, &dst);
    plan.dst_is_dir = !o->no_target_dir && !dst_err && S_ISDIR(dst.mode);
    if (o->target_dir && !plan.dst_is_dir) {
        fprintf(stderr, "afcp: target directory %s: %s\n", afcp_q(plan.dst),
                afs_strerror(dst_err ? dst_err : -ENOTDIR));
        return 1;
    }
    if (nops > 2 && !plan.dst_is_dir) {
        /* as cp: why the target cannot be one */
        fprintf(stderr, "afcp: target %s: %s\n", afcp_q(plan.dst),
                afs_strerror(dst_err ? dst_err : -ENOTDIR));
        return 1;
    }
    wafcp_track_dests = plan.nsrc > 1;

    /* A progress bar needs a console that takes VT sequences (Windows 10 and later). */
    HANDLE herr = GetStdHandle(STD_ERROR_HANDLE);
    DWORD mode;
    afcp.progress = !o->quiet && _isatty(2) && GetConsoleMode(herr, &mode) &&
                    SetConsoleMode(herr, mode | ENABLE_VIRTUAL_TERMINAL_PROCESSING);
    wafcp_temps_init(o->jobs);
    afcp.walking = 1;
    afcp_sem_init(&afcp_me->files, o->jobs);
    afcp_sem_init(&afcp_me->bufs, o->jobs > 2 * o->chunk_workers ? o->jobs
                                                                 : 2 * o->chunk_workers);

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
