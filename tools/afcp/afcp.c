/* afcp: copy files and trees like cp, with many files and chunks in flight on corio.
 * This file: --help, the plan for the command-line operands, the schedulers. common.c holds
 * the options, messages and root task (shared with the Windows front end), walk.c walks
 * directories, copy.c copies regular files, progress.c draws the bar. */
#define _GNU_SOURCE
#include "afcp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

struct afcp_app afcp;
_Thread_local struct afcp_sched *afcp_me;

/* The calling task's scheduler state (a task never changes threads, nor does a scheduler). */
void afcp_enter(struct corio_task *t)
{
    struct corio_sched *s = corio_task_sched(t);
    afcp_me = &afcp.scheds[corio_sched_index(s)];
    afcp_me->ctx = corio_sched_ctx(s);
}


void afcp_stat_from(struct stat *out, const struct afs_stat *in)
{
    memset(out, 0, sizeof *out);
    out->st_dev = (dev_t)in->dev;
    out->st_ino = (ino_t)in->ino;
    out->st_rdev = (dev_t)in->rdev;
    out->st_mode = (mode_t)in->mode;
    out->st_nlink = (nlink_t)in->nlink;
    out->st_uid = (uid_t)in->uid;
    out->st_gid = (gid_t)in->gid;
    out->st_size = (off_t)in->size;
    out->st_blocks = (blkcnt_t)in->blocks;
    out->st_blksize = (blksize_t)in->blksize;
    out->st_atim.tv_sec = (time_t)in->atime.sec;
    out->st_atim.tv_nsec = (long)in->atime.nsec;
    out->st_mtim.tv_sec = (time_t)in->mtime.sec;
    out->st_mtim.tv_nsec = (long)in->mtime.nsec;
    out->st_ctim.tv_sec = (time_t)in->ctime.sec;
    out->st_ctim.tv_nsec = (long)in->ctime.nsec;
}

/* Splits a path into its directory (as written, "" for none) and last component. */
static void split(const char *path, char **dir, char **base)
{
    char *s = afcp_xstrdup(path);
    size_t n = strlen(s);
    while (n > 1 && s[n - 1] == '/')
        s[--n] = 0;
    char *slash = strrchr(s, '/');
    if (!slash) {
        *dir = afcp_xstrdup("");
        *base = s;
        return;
    }
    *base = afcp_xstrdup(slash[1] ? slash + 1 : ".");
    if (slash == s)
        slash[1] = 0; /* "/x": the directory is "/" */
    else
        *slash = 0;
    *dir = s;
}

/* A directory given on the command line (or the parent of one): its symlinks are followed,
 * as the user named it. */
static struct afcp_dir *top_dir(const char *path, const char *shown, int dst)
{
    const char *p = *path ? path : ".";
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct afcp_dir *d = afcp_xmalloc(sizeof *d);
    *d = (struct afcp_dir){.sfd = dst ? -1 : fd, .dfd = dst ? fd : -1,
                           .spath = afcp_xstrdup(shown), .dpath = afcp_xstrdup(shown),
                           .refs = 1};
    if (fstat(fd, &d->st) == 0)
        d->ddev = d->st.st_dev;
    d->plain = dst && afcp_dir_plain(fd);
    /* The name as lstat sees it (a symlink to the directory stays the symlink): what cp's
     * test of "the same name" compares (walk.c). */
    struct stat l;
    if (lstat(p, &l) < 0)
        l = d->st;
    d->sname_id = d->dname_id = (struct afcp_devino){l.st_dev, l.st_ino};
    return d;
}

/* ------------------------------------------------------------------------------------------
 * The plan: cp's rules for SRC DST and SRC... DIR
 * ---------------------------------------------------------------------------------------- */
struct plan {
    char **srcs;
    int    nsrc;
    char  *dst;
    int    dst_is_dir;
};

static int ends_in_slash(const char *path)
{
    size_t n = strlen(path);
    return n > 1 && path[n - 1] == '/';
}

/* Whether cp follows the operand src when it is a symlink: -H or -L, or without -r (cp -r
 * copies a symlink operand as a symlink), or when it ends in '/' ("link/" names the
 * directory the link points to). */
static int follows(const char *src)
{
    return ends_in_slash(src) || (afcp.o.deref ? afcp.o.deref != 'P' : !afcp.o.recursive);
}

/* The directory the copy dst of src (st) is to be made in cannot be opened (open_err). cp
 * never opens it: it looks at dst itself (stat), and where that finds nothing, fails to
 * create it; afcp says the same. A directory it can search but not read (so that afcp cannot
 * open it) is named as such. */
static void no_dest_dir(const char *src, const char *dst, const char *ddir,
                        const struct stat *st, int open_err, uint64_t vn)
{
    struct stat x;
    int err = lstat(dst, &x) < 0 ? errno : 0;
    if (S_ISDIR(st->st_mode) && !afcp.o.recursive) {
        afcp_note("-r not specified; omitting directory '%s'", src);
        afcp_fail();
    } else if (err && err != ENOENT) {
        afcp_err(err, "cannot stat '%s'", dst);
    } else if (err == ENOENT && open_err == ENOENT) {
        afcp_cannot_create(src, dst, st, ENOENT, vn);
    } else {
        afcp_err(open_err, "cannot access '%s'", *ddir ? ddir : ".");
    }
}

/* Copies one operand, -v's number vn (ended here). */
static void copy_operand(struct corio_task *t, const char *src, const struct plan *p,
                         uint64_t vn)
{
    char *sdir, *sbase;
    split(src, &sdir, &sbase);
    struct afcp_dir *sd = top_dir(sdir, sdir, 0);
    struct stat st;
    int follow = follows(src);
    if (!sd || fstatat(sd->sfd, sbase, &st, follow ? 0 : AT_SYMLINK_NOFOLLOW) < 0) {
        afcp_err(errno, "cannot stat '%s'", src);
        goto out;
    }
    /* "SRC/" names a directory (split dropped the slash): a file, or a link to one, is not
     * copied, as stat("SRC/") fails for cp. */
    if (ends_in_slash(src) && !S_ISDIR(st.st_mode)) {
        afcp_err(ENOTDIR, "cannot stat '%s'", src);
        goto out;
    }
    if (!p->dst_is_dir && ends_in_slash(p->dst)) {
        /* "DST/" names a directory: it is never a file to create or overwrite. */
        struct stat dst;
        if (stat(p->dst, &dst) < 0 && errno == ENOTDIR) {
            afcp_err(ENOTDIR, "cannot stat '%s'", p->dst);
            goto out;
        }
        if (!S_ISDIR(st.st_mode)) {
            afcp_cannot_create(src, p->dst, &st, ENOTDIR, vn);
            goto out;
        }
    }
    /* cp's name of the copy: the target as written, or DIR/NAME, where a NAME of ".." is "."
     * ('a/..' goes into 'dir/.', not next to it). */
    char *ddir, *dbase, *dst_arg;
    if (p->dst_is_dir) {
        ddir = afcp_xstrdup(p->dst);
        size_t n = strlen(ddir);
        while (n > 1 && ddir[n - 1] == '/')
            ddir[--n] = 0;
        dbase = afcp_xstrdup(strcmp(sbase, "..") ? sbase : ".");
        dst_arg = afcp_join(ddir, dbase);
    } else {
        split(p->dst, &ddir, &dbase);
        dst_arg = afcp_xstrdup(p->dst);
    }
    struct afcp_dir *dd = top_dir(ddir, ddir, 1);
    /* cp opens a target directory (a symlink to one followed) and names the copies from
     * there: "the same name" compares the directory itself ("ls/s", ls a link to s, is a
     * name in s). A DST named in full is a name in its parent as written. */
    if (dd && p->dst_is_dir)
        dd->dname_id = (struct afcp_devino){dd->st.st_dev, dd->st.st_ino};
    if (!dd) {
        no_dest_dir(src, dst_arg, ddir, &st, errno, vn);
    } else {
        afcp_copy_entry(t, sd, sbase, dd, dbase, &st, follow, src, dst_arg, p->dst_is_dir,
                        vn);
        vn = 0; /* ended */
        afcp_dir_put(dd);
    }
    free(dst_arg);
    free(ddir);
    free(dbase);
out:
    afcp_vend(vn);
    if (sd)
        afcp_dir_put(sd);
    free(sdir);
    free(sbase);
}

/* Several operands into a directory: whether operand i may go, as cp decides. The same
 * source named twice is copied once (a warning). Two directories of one name are merged
 * (*merges). A file whose name an earlier operand has (*later) waits for the copies in
 * flight, and is then judged by what is there (later_ok). */
static int operand_ok(const struct plan *p, int i, struct stat *seen, int *merges, int *later)
{
    *merges = *later = 0;
    const char *src = p->srcs[i];
    if ((follows(src) ? stat(src, &seen[i]) : lstat(src, &seen[i])) < 0) {
        seen[i].st_mode = 0; /* copy_operand reports it */
        return 1;
    }
    char *dir, *base;
    split(src, &dir, &base);
    int ok = 1;
    for (int j = 0; j < i && ok; j++) {
        if (!seen[j].st_mode)
            continue;
        char *jdir, *jbase;
        split(p->srcs[j], &jdir, &jbase);
        if (!strcmp(base, jbase)) {
            if (seen[j].st_dev == seen[i].st_dev && seen[j].st_ino == seen[i].st_ino) {
                afcp_note("warning: source %s '%s' specified more than once",
                          S_ISDIR(seen[i].st_mode) ? "directory" : "file", src);
                ok = 0;
            } else if (!S_ISDIR(seen[i].st_mode) || !S_ISDIR(seen[j].st_mode)) {
                *later = 1;
            } else {
                *merges = 1; /* two directories of one name: the later one's files win */
            }
        }
        free(jdir);
        free(jbase);
    }
    free(dir);
    free(base);
    return ok;
}

/* Operand i, whose name an earlier operand has, once the earlier copies are done: a
 * destination this run made (not what was there before the run, *before) is not replaced,
 * as cp refuses "just-created" ones, after its own checks of -n, the same file, -u and a
 * directory against a non-directory. An earlier operand that made nothing there (skipped by
 * -u or -n, or failed) leaves the usual rules. Returns whether the copy goes on. */
static int later_ok(const struct plan *p, int i, const struct stat *before)
{
    const char *src = p->srcs[i];
    char *dir, *base;
    split(src, &dir, &base);
    char *dpath = afcp_join(p->dst, base);
    free(dir);
    free(base);
    struct stat d, s;
    int ok = 1;
    if (lstat(dpath, &d) < 0 || (before->st_mode && d.st_dev == before->st_dev &&
                                 d.st_ino == before->st_ino))
        goto out; /* not made by this run */
    if ((follows(src) ? stat(src, &s) : lstat(src, &s)) < 0)
        goto out; /* copy_operand reports it */
    ok = 0;
    if (afcp.o.noclobber)
        goto out;
    if (s.st_dev == d.st_dev && s.st_ino == d.st_ino) {
        afcp_note("'%s' and '%s' are the same file", src, dpath);
    } else if (afcp.o.update && !S_ISDIR(s.st_mode) && afcp_not_older(&d, &s)) {
        goto out;
    } else if (S_ISDIR(s.st_mode) && !S_ISDIR(d.st_mode)) {
        afcp_note("cannot overwrite non-directory '%s' with directory '%s'", dpath, src);
    } else if (S_ISDIR(d.st_mode) && !S_ISDIR(s.st_mode)) {
        afcp_note("cannot overwrite directory '%s' with non-directory", dpath);
    } else {
        afcp_note("will not overwrite just-created '%s' with '%s'", dpath, src);
    }
    afcp_fail();
out:
    free(dpath);
    return ok;
}

/* The walker's work: one operand after another, then the last batches. */
static void walk_operands(struct corio_task *t, void *arg)
{
    const struct plan *p = arg;
    struct stat *seen = NULL, *before = NULL;
    if (p->dst_is_dir && p->nsrc > 1) {
        seen = afcp_xmalloc((size_t)p->nsrc * sizeof *seen);
        before = afcp_xmalloc((size_t)p->nsrc * sizeof *before);
        /* What each operand's destination is before the run (st_mode 0: nothing). */
        for (int i = 0; i < p->nsrc; i++) {
            char *dir, *base;
            split(p->srcs[i], &dir, &base);
            char *dpath = afcp_join(p->dst, base);
            if (lstat(dpath, &before[i]) < 0)
                before[i].st_mode = 0;
            free(dpath);
            free(dir);
            free(base);
        }
    }
    for (int i = 0; i < p->nsrc; i++) {
        /* cp copies one operand after the other: one that an earlier one may be making (or
         * writing) is looked at once the copies in flight are done. */
        if (i > 0 && afcp_maybe_ours(p->srcs[i], follows(p->srcs[i])))
            afcp_settle(t);
        /* -v: the operand is an entry of its own; what is reported about it goes after the
         * lines of the operands before. */
        uint64_t vn = afcp_vnum();
        afcp_vtask(t, vn);
        int merges = 0, later = 0;
        if (!seen || operand_ok(p, i, seen, &merges, &later)) {
            /* Merged into a directory an earlier operand copies to: cp copies that one
             * whole first, so the later operand's files replace its files, in order. A
             * file whose name an earlier operand has is judged once that one is done. */
            if (merges || later)
                afcp_settle(t);
            if (!later || later_ok(p, i, &before[i]))
                copy_operand(t, p->srcs[i], p, vn);
            else
                afcp_vend(vn);
        } else {
            afcp_vend(vn);
        }
    }
    afcp_vtask(t, 0);
    free(seen);
    free(before);
    afcp_walk_end(t);
}

/* The end of the run on each scheduler's own thread: what it allocated on its context. */
static int sched_end_task(struct corio_task *t, void *arg)
{
    (void)arg;
    afcp_enter(t);
    afcp_sched_free(afcp_me);
    afcp_q_release();
    return 0;
}

static void root_task(struct corio_task *t, void *arg)
{
    afcp_enter(t);
    afcp_root(t, walk_operands, arg);
    for (unsigned i = 0; i < afcp.nsched; i++)
        if (corio_spawn_on(t, (int)i, sched_end_task, NULL, NULL) < 0 && i == 0)
            afcp_sched_free(afcp_me);
    corio_wait(t);
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
          "flight (asyncfs + corio).\n\n"
          "  -r, -R, --recursive  copy directories recursively (symlinks stay symlinks)\n"
          "  -p                   same as --preserve=mode,ownership,timestamps\n"
          "      --preserve[=LIST]  keep the attributes in LIST (default:\n"
          "                       mode,ownership,timestamps); also links (hard links\n"
          "                       between copied files stay hard links), xattr (extended\n"
          "                       attributes), context (accepted, ignored), all; mode\n"
          "                       carries the ACLs (as with cp), ownership needs root\n"
          "      --no-preserve=LIST  do not keep the attributes in LIST; without mode,\n"
          "                       new files get 0666 and new directories 0777, less the\n"
          "                       umask, as with cp (not the source's modes; under a\n"
          "                       default ACL, without the ACL it would give them)\n"
          "  -a, --archive        same as -dR --preserve=all (an extended attribute the\n"
          "                       destination refuses is skipped silently, as cp does)\n"
          "  -d                   same as --no-dereference --preserve=links\n"
          "  -L, --dereference    follow every symlink in SRC\n"
          "  -H                   follow symlinks named on the command line\n"
          "  -P, --no-dereference never follow symlinks in SRC (the default with -r)\n"
          "  -u, --update         copy only when SRC is newer than DST or DST is missing\n"
          "  -x, --one-file-system  stay on the file system of each SRC: a directory on\n"
          "                       another one (a mount point) is made, empty, as cp does\n"
          "      --reflink[=WHEN] clone the data (FICLONE) instead of copying it: auto (the\n"
          "                       default, as cp: copy where the file system cannot clone),\n"
          "                       always (fail where it cannot), never\n"
          "  -t, --target-directory=DIR  copy every SRC into DIR\n"
          "  -T, --no-target-directory  DST is the name of the copy, even when it is a\n"
          "                       directory (SRC's contents are copied into it)\n"
          "  -i, --interactive    ask before overwriting (a line from stdin starting with\n"
          "                       'y' or 'Y' is yes; one thread); the last of -i and -n wins\n"
          "  -n, --no-clobber     do not overwrite an existing file\n"
          "  -f, --force          remove a destination that cannot be opened (--inplace)\n"
          "                       or that is a symlink, and try again\n"
          "  -v, --verbose        print each copy as 'SRC' -> 'DST'\n"
          "  -q, --quiet          no progress bar\n"
          "      --direct         O_DIRECT where the file system allows it (per file)\n"
          "      --inplace        write into DST directly, not a temporary name + rename\n"
          "      --fsync          rename each copy into place only once it is on disk,\n"
          "                       and fsync each destination directory after its renames\n"
          "      --no-fsync       do not wait for the disk (the default, as cp)\n"
          "      --no-copy-range  never use copy_file_range\n"
          "      --sparse=WHEN    holes in the copies: auto (default: the source's holes\n"
          "                       stay holes), always (blocks of zeros become holes too;\n"
          "                       no copy_file_range), never (write every byte)\n"
          "  -j, --jobs=N         files in flight (default 64, shared out over the threads)\n"
          "      --threads=N      copy on N threads, one scheduler each (default: one per\n"
          "                       CPU afcp may use, or one for at most 32 files known\n"
          "                       from the operands); the entries of every directory are\n"
          "                       spread over them\n"
          "      --chunk-size=N   bytes per read/write of a large file (default 1M)\n"
          "      --chunk-jobs=N   reads/writes in flight per large file (default 8)\n"
          "      --help           display this help and exit\n"
          "      --version        output version information and exit\n\n"
          "Not supported (refused): cp's -l, -s, -b/--backup, -Z, --parents,\n"
          "--attributes-only, --copy-contents, --remove-destination,\n"
          "--strip-trailing-slashes.\n\n"
          "Safety: each file is written under a temporary name (.afcp.XXXXXX) next to its\n"
          "destination and renamed into place once complete; in a directory afcp makes\n"
          "(writable by its owner only until its entries are done; 0700 with -p or -a,\n"
          "as with cp) a file is written under its own name. On an error, or on SIGINT,\n"
          "SIGTERM, SIGHUP or SIGPIPE, every temporary and every file not yet complete is\n"
          "removed: once afcp has exited, no name shows a partial copy (but with --inplace,\n"
          "which writes the destination itself, as cp does). Like cp, afcp leaves the data\n"
          "to the kernel to write back, so after a crash or power loss a recent copy may\n"
          "still be empty or partial under its name.\n"
          "--fsync closes that gap: a file takes its name only once its data is on disk,\n"
          "and each destination directory is fsynced once its entries are all in place\n"
          "(small files in groups, one syncfs per file system and group while the next\n"
          "group fills; files of 8 MiB or more with their own fdatasync). --inplace writes\n"
          "the destination directly (no temporary, no sync).\n\n"
          "Overwriting: a file the user may not write is refused without -f, as by cp.\n"
          "The copy is a new file renamed over the old one, which it follows in\n"
          "owner, group, mode and ACL (as far as the user may: only root gives a file to\n"
          "another user), but for what -p or --preserve takes from the source. Its other\n"
          "extended attributes are not kept, and other hard links of the old file keep the\n"
          "old data (cp, and --inplace, write into the old file instead). Where no new\n"
          "file may replace it (a directory the user may not write; a sticky one, the\n"
          "file another user's), a file the user may write is written into, as by cp.\n"
          "With -f, one the user may not write is removed and made anew, as by cp. A\n"
          "device or FIFO at the destination is written into, as cp does, and never\n"
          "replaced or changed; a socket there is refused (replaced with -f, as by cp).\n"
          "With -r, a FIFO, socket or device copied over the\n"
          "same kind of node (a device: the same device) makes it again, so that a second\n"
          "-a run over a copy succeeds. Without -p, a copy's group gets no more than the\n"
          "group entry of the source's ACL allowed.\n"
          "A signal ignored when afcp starts stays ignored (nohup, background jobs), as\n"
          "for cp: then nothing removes the temporaries.\n\n"
          "Without -r, a FIFO or device operand is read until EOF, as cp reads it; so are\n"
          "files whose size says nothing (/proc, sysfs). A directory deeper than PATH_MAX\n"
          "is not copied (cp's limit), the rest is.\n\n"
          "Exit status: 0 when everything was copied, 1 when anything failed (afcp goes on\n"
          "with the other files and reports each failure).\n",
          f);
}

/* Whether the sources are known, before anything is copied, to be too few files for a second
 * scheduler to pay for its thread and ring (some 0.3 ms, about what ten small cached files
 * take to copy): at most SMALL_WORK entries in all, counting a file as one and a directory
 * as its entries when it has no subdirectory (nor anything that may be one: a symlink, an
 * entry of unknown type). Anything else, or any doubt, leaves the default. */
enum { SMALL_WORK = 32 };
static int small_work(const struct plan *p)
{
    int n = 0;
    /* A look that must not change what -p and -a keep: an operand symlink the copy does not
     * follow is not followed here (that would set its access time), and a directory is read
     * without setting its access time, or not at all. */
    int follow = afcp.o.deref == 'L' || afcp.o.deref == 'H' ||
                 (afcp.o.deref == 0 && !afcp.o.recursive);
    for (int i = 0; i < p->nsrc && n <= SMALL_WORK; i++) {
        struct stat st;
        if ((follow ? stat(p->srcs[i], &st) : lstat(p->srcs[i], &st)) != 0)
            return 0;
        if (!S_ISDIR(st.st_mode)) {
            n++;
            continue;
        }
        if (!afcp.o.recursive)
            continue; /* cp omits it */
        int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
        int fd = open(p->srcs[i], flags | O_NOATIME);
        if (fd < 0 && errno == EPERM && !(afcp.o.preserve & AFCP_P_TIMES))
            fd = open(p->srcs[i], flags); /* not ours: O_NOATIME is the owner's */
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d) {
            if (fd >= 0)
                close(fd);
            return 0;
        }
        struct dirent *e;
        while (n <= SMALL_WORK && (e = readdir(d))) {
            if (e->d_name[0] == '.' &&
                (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
                continue;
            if (e->d_type != DT_REG) {
                n = SMALL_WORK + 1;
                break;
            }
            n++;
        }
        closedir(d);
    }
    return n <= SMALL_WORK;
}

int main(int argc, char **argv)
{
    setlocale(LC_CTYPE, ""); /* which bytes of a name are printable characters (quote.c) */
    int r = afcp_options(argc, argv, usage);
    if (r >= 0)
        return r;
    const struct afcp_opts *o = &afcp.o;
    int nops = argc - optind;
    struct plan plan = {argv + optind, nops - 1, argv[argc - 1], 0};
    if (o->target_dir) {
        plan.nsrc = nops;
        plan.dst = (char *)o->target_dir;
    }
    struct stat dst;
    int dst_err = stat(plan.dst, &dst) == 0 ? 0 : errno;
    plan.dst_is_dir = !o->no_target_dir && !dst_err && S_ISDIR(dst.st_mode);
    if (o->target_dir && !plan.dst_is_dir) {
        fprintf(stderr, "afcp: target directory %s: %s\n", afcp_q(plan.dst),
                strerror(dst_err ? dst_err : ENOTDIR));
        return 1;
    }
    if (nops > 2 && !plan.dst_is_dir) {
        /* as cp: why the target cannot be one */
        fprintf(stderr, "afcp: target %s: %s\n", afcp_q(plan.dst),
                strerror(dst_err ? dst_err : ENOTDIR));
        return 1;
    }

    afcp.is_root = geteuid() == 0;
    afcp.umask = umask(0);
    umask(afcp.umask);
    int rootfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd >= 0) {
        char probe[48];
        snprintf(probe, sizeof probe, "/proc/self/fd/%d/.", rootfd);
        afcp.have_proc = access(probe, F_OK) == 0; /* see copy.c: why /proc/self/fd */
        close(rootfd);
    }
    afcp.progress = !o->quiet && !o->interactive && isatty(2);
    afcp.walking = 1;
    afcp_test_path(getenv("AFCP_TEST_PATH")); /* tests only: see copy.c */
    /* Each file in flight holds up to 3 descriptors, plus the open directories. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    /* sync_threshold 0: even small reads go through the batch; on a cold cache an inline
     * pread of 4 KiB would block every task behind one disk seek. */
    struct corio_rt_config rcfg;
    corio_rt_config_default(&rcfg);
    rcfg.schedulers = o->threads > 4096 ? 4096 : o->threads;
    if ((o->threads == 0 && small_work(&plan)) || o->interactive)
        rcfg.schedulers = 1; /* -i: one question at a time, on the one thread */
    rcfg.ctx.sync_threshold = 0;
    rcfg.sched.stack_size = 1u << 20; /* the walker keeps its directories on the heap (walk.c) */
    int err = corio_rt_new(&afcp.rt, &rcfg);
    if (err < 0) {
        fprintf(stderr, "afcp: cannot create the schedulers: %s\n", afs_strerror(err));
        return 1;
    }
    afcp.nsched = corio_rt_schedulers(afcp.rt);
    /* A low descriptor limit (ulimit -n) bounds the files in flight: each holds up to 3,
     * each scheduler's context a few, the walker's directories some more (afcp_fd_wait
     * covers what this leaves out). */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
        rl.rlim_cur < (rlim_t)afcp.o.jobs * 3 + 4 * afcp.nsched + 256) {
        long used = 0, lim = (long)rl.rlim_cur;
        for (int fd = 0; fd < lim; fd++)
            used += fcntl(fd, F_GETFD) != -1;
        long spare = lim - used - 4 * (long)afcp.nsched - 16;
        unsigned fit = spare > 3 ? (unsigned)(spare / 3) : 1;
        if (afcp.o.jobs > fit)
            afcp.o.jobs = fit;
    }
    afcp.scheds = calloc(afcp.nsched, sizeof *afcp.scheds);
    if (!afcp.scheds) {
        fputs("afcp: out of memory\n", stderr);
        return 1;
    }
    for (unsigned i = 0; i < afcp.nsched; i++)
        afcp_sched_init(&afcp.scheds[i], (int)i);
    afcp_signals_init();
    afcp.t_start = corio_now();
    err = corio_rt_run(afcp.rt, root_task, &plan);
    if (err < 0) {
        fprintf(stderr, "afcp: scheduler: %s\n", afs_strerror(err));
        afcp_fail();
    }
    afcp_progress_final();
    if (getenv("AFCP_TEST_STATS")) /* tests only: how the entries spread */
        for (unsigned i = 0; i < afcp.nsched; i++) {
            struct corio_rt_stats rs = {0};
            corio_rt_stats(afcp.rt, i, &rs, NULL);
            fprintf(stderr, "afcp: scheduler %u: %llu entries, %llu spawns in, %llu out, "
                    "%llu steals, %llu wake-ups\n", i,
                    (unsigned long long)afcp.scheds[i].entries,
                    (unsigned long long)rs.spawns_in, (unsigned long long)rs.spawns_out,
                    (unsigned long long)rs.steals,
                    (unsigned long long)(rs.wakes_ring + rs.wakes_waker));
        }
    corio_rt_free(afcp.rt);
    free(afcp.scheds);
    free(afcp.dests);
    /* -v into a full disk or a closed pipe: an error, as cp's "write error". */
    int out_bad = ferror(stdout);
    errno = 0;
    if (fclose(stdout) != 0)
        out_bad = 1;
    if (out_bad) {
        if (errno)
            fprintf(stderr, "afcp: write error: %s\n", afs_strerror(-errno));
        else
            fputs("afcp: write error\n", stderr);
        afcp_fail();
    }
    return afcp.status;
}
