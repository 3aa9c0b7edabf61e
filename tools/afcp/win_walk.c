/* afcp on Windows: the walk and the copy of one file.
 *
 * The walker (one task) reads each source directory with FindFirstFileExW/FindNextFileW
 * (the "\\?\" path of the directory + "\*") on a pool thread of the scheduler, depth
 * first with the directories being walked on a heap array (as walk.c), makes the
 * destination directories (afs_mkdirat) and hands each regular file to a file task, at most
 * `jobs` in flight.
 *
 * A file task opens the source (afs_openat + afs_file_from_fd), takes its size, attributes
 * and times from that handle, checks what is at the destination name (afs_statx), creates
 * ".afcp.XXXXXX" next to it with CREATE_NEW semantics (AFS_CREAT|AFS_EXCL), copies the
 * data with afs_pread/afs_pwrite (large files in chunks taken by up to chunk_workers tasks),
 * gives the copy the source's attributes (read-only, hidden, system, archive; with -p also
 * its times) on the open handle, closes it and renames it over the destination name
 * (afs_renameat). So a name only ever shows a complete copy with its attributes; any
 * failure removes the temporary (afs_unlinkat), and Ctrl+C removes every temporary
 * (win_fs.c).
 *
 * Symbolic links and junctions in a tree (reparse points whose tag is a name surrogate) are
 * not followed and not copied: each is reported and the copy goes on (exit status 1). Other
 * reparse points (deduplicated files, cloud placeholders) are copied as what they hold. */
#include "win_afcp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

/* The attributes a copy takes from its source (robocopy's /COPY:A set). */
#define KEEP_ATTRS (FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM | \
                    FILE_ATTRIBUTE_ARCHIVE | FILE_ATTRIBUTE_NOT_CONTENT_INDEXED)

static void dir_get(struct wafcp_dir *d)
{
    d->refs++;
}

/* The last reference: every entry is in place; the directory gets the source's
 * attributes (a directory this run made, or any with -p: then also when the source has none,
 * as cp gives an existing directory the source's mode) and with -p its times;
 * --no-preserve=mode leaves it the attributes it has, as cp leaves a directory the mode it
 * was made with. What it reports goes after its entries' lines (-v: its end's number, as in
 * walk.c). */
static void dir_finish(struct wafcp_dir *d)
{
    int p = afcp.o.preserve;
    DWORD attrs = d->attrs & KEEP_ATTRS;
    int set = (p & AFCP_P_MODE) || (d->created && attrs && !afcp.o.default_mode);
    if (set || (p & AFCP_P_TIMES)) {
        struct corio_task *t = corio_current();
        uint64_t prev = afcp_vtask(t, d->end_vn);
        FILETIME ft[3] = {d->ctime, d->atime, d->mtime};
        /* FILE_ATTRIBUTE_NORMAL clears them all (0 would leave them unchanged). */
        DWORD a = !set ? 0 : attrs ? attrs : FILE_ATTRIBUTE_NORMAL;
        int err = wafcp_set_basic(d->dfull, a, (p & AFCP_P_TIMES) ? ft : NULL);
        if (err < 0)
            afcp_err(err, "preserving attributes for '%s'", d->dshow);
        afcp_vtask(t, prev);
    }
    afcp_vend(d->end_vn);
}

void wafcp_dir_put(struct wafcp_dir *d)
{
    while (d && --d->refs == 0) {
        if (d->dfull)
            dir_finish(d);
        struct wafcp_dir *p = d->parent;
        free(d->sfull);
        free(d->dfull);
        free(d->sshow);
        free(d->dshow);
        free(d);
        d = p;
    }
}

/* ------------------------------------------------------------------------------------------
 * One file
 * ---------------------------------------------------------------------------------------- */
struct fcopy {
    struct wafcp_job *job;
    struct afs_file  *in, *out;
    uint64_t          size, copied;
    int               err, err_side; /* first error (negative); 0 read, 1 write */
};

static void fail(struct fcopy *c, int err, int side)
{
    if (!c->err) {
        c->err = err;
        c->err_side = side;
    }
}

/* Tests only: AFCP_TEST_FAIL_READ=N fails the N-th chunk read with EIO (a read error half
 * way through a file, which wine cannot make: it does not enforce byte-range locks). */
static int test_read_fault(void)
{
    static unsigned at, count;
    static int init;
    if (!init) {
        const char *e = getenv("AFCP_TEST_FAIL_READ");
        at = e ? (unsigned)strtoul(e, NULL, 10) : 0;
        init = 1;
    }
    return at && ++count == at;
}

static void copy_chunk(struct fcopy *c, char *buf, uint64_t off, size_t len)
{
    ssize_t n = test_read_fault() ? -EIO : afs_pread(c->in, buf, len, off);
    if (n < 0 || (size_t)n < len) {
        fail(c, n < 0 ? (int)n : -ENODATA, 0); /* shorter than its size: it shrank */
        return;
    }
    for (size_t done = 0; done < len;) {
        ssize_t w = afs_pwrite(c->out, buf + done, len - done, off + done);
        if (w <= 0) {
            fail(c, w < 0 ? (int)w : -EIO, 1);
            return;
        }
        done += (size_t)w;
    }
    afcp.bytes_done += len;
    c->copied += len;
}

static void chunk_copy(void *c, void *buf, uint64_t off, size_t len)
{
    copy_chunk(c, buf, off, len);
}

/* A file that grew while it was copied: one read past the size must find the end. */
static void check_grown(struct fcopy *c)
{
    char b;
    ssize_t n = afs_pread(c->in, &b, 1, c->size);
    if (n > 0)
        fail(c, -EAGAIN, 0); /* reported as "changed during the copy" */
}

static void report(struct fcopy *c)
{
    struct wafcp_job *j = c->job;
    if (c->err == -ENODATA && c->err_side == 0)
        afcp_note("error reading '%s': file shrank during the copy", j->sshow);
    else if (c->err == -EAGAIN && c->err_side == 0)
        afcp_note("error reading '%s': file grew during the copy", j->sshow);
    else
        afcp_err(c->err, c->err_side ? "error writing '%s'" : "error reading '%s'",
                 c->err_side ? j->dshow : j->sshow);
    afcp_fail();
}

/* The identity of a file: volume and file index, from a handle. */
static int same_file(HANDLE a, const char *path)
{
    wchar_t *w = wafcp_wide(path);
    HANDLE b = w ? CreateFileW(w, FILE_READ_ATTRIBUTES,
                               FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                               OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL)
                 : INVALID_HANDLE_VALUE;
    free(w);
    if (b == INVALID_HANDLE_VALUE)
        return 0;
    BY_HANDLE_FILE_INFORMATION x, y;
    int same = GetFileInformationByHandle(a, &x) && GetFileInformationByHandle(b, &y) &&
               x.dwVolumeSerialNumber == y.dwVolumeSerialNumber &&
               x.nFileIndexHigh == y.nFileIndexHigh && x.nFileIndexLow == y.nFileIndexLow;
    CloseHandle(b);
    return same;
}

/* What is at the destination. 0: go on (*exists set), 1: leave it (-n, -u), -1: an error
 * was reported. announce: -v's line goes out where cp prints it, after what cp checks before
 * it, before what its open of the destination finds. */
static int check_dest(struct wafcp_job *j, HANDLE src, const FILE_BASIC_INFO *sbi,
                      int *exists, int announce)
{
    struct afs_stat st;
    *exists = 0;
    int err = wafcp_stat(j->dfull, 1, &st);
    if (err == -ENOENT) {
        if (announce)
            afcp_vline(j->vn, j->sshow, j->dshow);
        return 0;
    }
    if (err < 0) {
        afcp_err(err, "cannot stat '%s'", j->dshow);
        return -1;
    }
    *exists = 1;
    /* In cp's order: -n, the same file, -u, and only then a directory in the way (which -n
     * and -u leave, silently, as cp does). */
    if (afcp.o.noclobber)
        return 1;
    if (!S_ISDIR(st.mode) && same_file(src, j->dfull)) {
        afcp_note("'%s' and '%s' are the same file", j->sshow, j->dshow);
        afcp_fail();
        return -1;
    }
    if (afcp.o.update) {
        /* -u: a destination as new as the source (or newer) stays. */
        int64_t dm = st.mtime.sec * 10000000 + st.mtime.nsec / 100 + 116444736000000000LL;
        if (sbi->LastWriteTime.QuadPart <= dm)
            return 1;
    }
    if (S_ISDIR(st.mode)) {
        afcp_note("cannot overwrite directory '%s' with non-directory", j->dshow);
        afcp_fail();
        return -1;
    }
    if (announce)
        afcp_vline(j->vn, j->sshow, j->dshow);
    /* A read-only file is not replaced without -f (as cp does not write into a file
     * without write permission): Windows refuses the rename, and so does afcp, before any
     * data moves, whatever the file system says. */
    wchar_t *w = wafcp_wide(j->dfull);
    DWORD a = w ? GetFileAttributesW(w) : INVALID_FILE_ATTRIBUTES;
    free(w);
    if (a != INVALID_FILE_ATTRIBUTES && (a & FILE_ATTRIBUTE_READONLY) && !afcp.o.force) {
        afcp_err(EACCES, "cannot create regular file '%s'", j->dshow);
        return -1;
    }
    return 0;
}

/* Renames the finished temporary over the destination. -f: a read-only destination loses
 * that attribute first (Windows refuses to replace it), and -v says it was removed, as cp
 * says of a file it could not open. In a directory this run made (fresh) nothing was looked
 * at before: the rename refuses to replace, and only a name that appeared there meanwhile
 * is checked (check_dest) and then replaced or left.
 * 0, 1 when left (-n, -u), 2 when refused (reported), or -errno. */
static int install(struct wafcp_job *j, const char *tmp, int exists, int fresh, HANDLE src,
                   const FILE_BASIC_INFO *sbi)
{
    int err = wafcp_rename(tmp, j->dfull, afcp.o.noclobber || fresh);
    if (err == -EEXIST && fresh && !afcp.o.noclobber) {
        int r = check_dest(j, src, sbi, &exists, 0);
        if (r != 0)
            return r < 0 ? 2 : 1;
        err = wafcp_rename(tmp, j->dfull, 0);
    }
    if ((err == -EACCES || err == -EPERM) && exists && afcp.o.force) {
        wchar_t *w = wafcp_wide(j->dfull);
        DWORD a = w ? GetFileAttributesW(w) : INVALID_FILE_ATTRIBUTES;
        if (a != INVALID_FILE_ATTRIBUTES && (a & FILE_ATTRIBUTE_READONLY) &&
            SetFileAttributesW(w, a & ~(DWORD)FILE_ATTRIBUTE_READONLY)) {
            err = wafcp_rename(tmp, j->dfull, afcp.o.noclobber);
            if (err == 0)
                afcp_vremoved(j->vn, j->dshow);
        }
        free(w);
    }
    if (err == -EEXIST && afcp.o.noclobber)
        return 1; /* it appeared meanwhile: it stays */
    return err;
}

static void file_task(struct corio_task *t, void *arg)
{
    struct wafcp_job *j = arg;
    struct fcopy c = {.job = j};
    char *tmp = NULL;
    int tslot = -1, exists = 0;
    uint64_t prev_vn = afcp_vtask(t, j->vn); /* what it reports goes with its lines */
    int err = afcp_open_file(AFS_AT_FDCWD, j->sfull, AFS_RDONLY, 0, &c.in);
    if (err < 0) {
        /* cp prints its line before it opens the source. */
        afcp_vline(j->vn, j->sshow, j->dshow);
        afcp_err(err, "cannot open '%s' for reading", j->sshow);
        afcp.bytes_total -= j->size;
        goto out;
    }
    HANDLE hin = (HANDLE)afs_file_fd(c.in);
    FILE_BASIC_INFO sbi;
    int64_t size = afs_file_size(c.in);
    if (!GetFileInformationByHandleEx(hin, FileBasicInfo, &sbi, sizeof sbi) || size < 0) {
        afcp_err(size < 0 ? (int)size : wafcp_errno(GetLastError()), "cannot stat '%s'",
                 j->sshow);
        goto out_in;
    }
    /* The open follows a link: a reparse point still there is one that names no other file
     * (deduplicated, a cloud placeholder), read as a file. */
    if (sbi.FileAttributes & FILE_ATTRIBUTE_DIRECTORY) {
        afcp_note("cannot copy '%s': changed during the copy (no longer a regular file)",
                  j->sshow);
        afcp_fail();
        goto out_in;
    }
    c.size = (uint64_t)size;
    afcp.bytes_total += c.size - j->size;
    j->size = c.size;
    /* A directory this run made holds only what afcp put there: no need to look (see
     * install). check_dest prints -v's line. */
    const int fresh = j->dd->created;
    if (fresh)
        afcp_vline(j->vn, j->sshow, j->dshow);
    int r = fresh ? 0 : check_dest(j, hin, &sbi, &exists, 1);
    if (r != 0)
        goto out_in;

    /* The temporary, registered before the create so that Ctrl+C removes it. */
    char name[16];
    tslot = wafcp_temp_get();
    size_t dl = strlen(j->dfull);
    while (dl && j->dfull[dl - 1] != '\\')
        dl--;
    tmp = afcp_xmalloc(dl + sizeof name);
    for (int tries = 0;; tries++) {
        afcp_tmpname(name);
        memcpy(tmp, j->dfull, dl);
        memcpy(tmp + dl, name, sizeof name);
        wafcp_temp_set(t, tslot, tmp);
        err = afcp_open_file(AFS_AT_FDCWD, tmp, AFS_WRONLY | AFS_CREAT | AFS_EXCL | AFS_NOFOLLOW,
                             0666, &c.out);
        wafcp_test_hook_create();
        wafcp_temp_created(tslot, err == 0);
        if (err != -EEXIST || tries > 100)
            break;
    }
    if (err < 0) {
        afcp_err(err, "cannot create regular file '%s'", j->dshow);
        goto out_in;
    }

    if (c.size > 0) {
        struct afcp_chunks k = {.size = c.size, .c = &c, .copy = chunk_copy, .err = &c.err,
                                .err_side = &c.err_side};
        afcp_chunks_run(t, &k);
    }
    if (!c.err)
        check_grown(&c);
    if (!c.err && afcp.o.fsync && (r = afs_fsync(c.out, 0)) < 0)
        fail(&c, r, 1);
    if (!c.err) {
        /* The source's attributes (and with -p its times) on the copy, after its last
         * write: the name shows them from the rename on. */
        FILE_BASIC_INFO bi;
        memset(&bi, 0, sizeof bi);
        if (afcp.o.preserve & AFCP_P_TIMES) {
            bi.CreationTime = sbi.CreationTime;
            bi.LastAccessTime = sbi.LastAccessTime;
            bi.LastWriteTime = sbi.LastWriteTime;
            bi.ChangeTime = sbi.ChangeTime;
        }
        /* --no-preserve=mode: the attributes a new file gets (a read-only source gives a
         * writable copy, as cp gives a new file's mode); 0 leaves them. */
        DWORD attrs = sbi.FileAttributes & KEEP_ATTRS;
        if (!afcp.o.default_mode || (afcp.o.preserve & AFCP_P_MODE))
            bi.FileAttributes = attrs ? attrs : FILE_ATTRIBUTE_NORMAL;
        if (!SetFileInformationByHandle((HANDLE)afs_file_fd(c.out), FileBasicInfo, &bi,
                                        sizeof bi))
            fail(&c, wafcp_errno(GetLastError()), 1);
    }
    if ((r = afs_close(c.out)) < 0)
        fail(&c, r, 1);
    if (c.err) {
        report(&c);
        wafcp_unlink(tmp); /* no partial copy stays, not even under a temporary name */
        afcp.bytes_done -= c.copied;
        goto out_in;
    }
    wafcp_temp_hold(t); /* Ctrl+C came: the temporary is gone, the process goes */
    r = install(j, tmp, exists, fresh, hin, &sbi);
    if (r < 0) {
        afcp_err(r, "cannot create regular file '%s'", j->dshow);
        wafcp_unlink(tmp);
    } else if (r > 0) {
        wafcp_unlink(tmp); /* left (-n, -u) or refused (reported) */
    }
    afs_close(c.in);
    goto out;
out_in:
    afcp.bytes_total -= c.size;
    afs_close(c.in);
out:
    afcp_vend(j->vn);
    afcp_vtask(t, prev_vn);
    if (tslot >= 0)
        wafcp_temp_put(tslot);
    free(tmp);
    afcp.files_done++;
    wafcp_dir_put(j->sd);
    wafcp_dir_put(j->dd);
    free(j->sfull);
    free(j->dfull);
    free(j->sshow);
    free(j->dshow);
    free(j);
    afcp_sem_release(&afcp_me->files);
}

/* A file task for one file, -v's number vn (the task ends it). */
static void spawn_file(struct corio_task *t, struct wafcp_dir *sd, struct wafcp_dir *dd,
                       const char *sfull, const char *dfull, const char *sshow,
                       const char *dshow, uint64_t size, uint64_t vn)
{
    struct wafcp_job *j = afcp_xmalloc(sizeof *j);
    *j = (struct wafcp_job){.sd = sd, .dd = dd, .sfull = afcp_xstrdup(sfull),
                            .dfull = afcp_xstrdup(dfull), .sshow = afcp_xstrdup(sshow),
                            .dshow = afcp_xstrdup(dshow), .size = size, .vn = vn};
    afcp.files_total++;
    afcp.bytes_total += size;
    afcp_sem_acquire(t, &afcp_me->files);
    dir_get(sd);
    dir_get(dd);
    if (corio_spawn(t, file_task, j, NULL) < 0)
        file_task(t, j); /* no stack left: copy it in the walker itself */
}

/* ------------------------------------------------------------------------------------------
 * Directories
 * ---------------------------------------------------------------------------------------- */
struct ent {
    char    *name;
    DWORD    attrs;
    DWORD    tag;   /* the reparse tag, with FILE_ATTRIBUTE_REPARSE_POINT */
    uint64_t size;
    FILETIME ctime, atime, mtime;
};

static int ent_cmp(const void *a, const void *b)
{
    return strcmp(((const struct ent *)a)->name, ((const struct ent *)b)->name);
}

/* A directory listing, made on one of the scheduler's pool threads (corio_run_blocking):
 * FindFirstFileExW/FindNextFileW wait for the disk on a cold tree, and the file tasks go on
 * meanwhile. No message is printed there: the walker reports what it found. */
struct listing {
    const char *dir;   /* "\\?\" path */
    struct ent *ents;
    size_t      n;
    DWORD       open_err, read_err; /* Win32 errors; 0 when none */
    unsigned    bad_names;          /* names with an unpaired surrogate (no UTF-8) */
};

static int list_dir(void *arg)
{
    struct listing *l = arg;
    char *pattern = wafcp_join(l->dir, "*");
    wchar_t *w = wafcp_wide(pattern);
    free(pattern);
    WIN32_FIND_DATAW fd;
    HANDLE h = w ? FindFirstFileExW(w, FindExInfoBasic, &fd, FindExSearchNameMatch, NULL,
                                    FIND_FIRST_EX_LARGE_FETCH)
                 : INVALID_HANDLE_VALUE;
    free(w);
    if (h == INVALID_HANDLE_VALUE) {
        DWORD e = GetLastError();
        /* An empty root directory has no "." to find. */
        l->open_err = e == ERROR_FILE_NOT_FOUND || e == ERROR_NO_MORE_FILES ? 0 : e;
        return 0;
    }
    size_t cap = 0;
    do {
        if (!wcscmp(fd.cFileName, L".") || !wcscmp(fd.cFileName, L".."))
            continue;
        char *name = wafcp_utf8(fd.cFileName);
        if (!name) {
            l->bad_names++;
            continue;
        }
        if (l->n == cap) {
            cap = cap ? cap * 2 : 64;
            l->ents = realloc(l->ents, cap * sizeof *l->ents);
            if (!l->ents) {
                fputs("afcp: out of memory\n", stderr);
                exit(1);
            }
        }
        l->ents[l->n++] = (struct ent){name, fd.dwFileAttributes, fd.dwReserved0,
                                       (uint64_t)fd.nFileSizeHigh << 32 | fd.nFileSizeLow,
                                       fd.ftCreationTime, fd.ftLastAccessTime,
                                       fd.ftLastWriteTime};
    } while (FindNextFileW(h, &fd));
    DWORD e = GetLastError();
    FindClose(h);
    l->read_err = e == ERROR_NO_MORE_FILES ? 0 : e;
    return 0;
}

/* The entries of d's source directory (sorted by name, for a stable order of copies and
 * messages). 0, or -1 when it could not be read (reported); a read error part-way is
 * reported and the entries read so far are kept. */
static int read_entries(struct corio_task *t, struct wafcp_dir *d, struct ent **out,
                        size_t *count)
{
    struct listing l = {.dir = d->sfull};
    if (corio_run_blocking(t, list_dir, &l) < 0)
        list_dir(&l); /* no pool thread: list it here */
    *out = l.ents;
    *count = l.n;
    if (l.open_err) {
        afcp_err(wafcp_errno(l.open_err), "cannot access '%s'", d->sshow);
        return -1;
    }
    if (l.bad_names)
        afcp_err(EILSEQ, "cannot copy %d names that are not valid UTF-16 in '%s'",
                 (int)l.bad_names, d->sshow);
    if (l.read_err)
        afcp_err(wafcp_errno(l.read_err), "cannot read directory '%s'", d->sshow);
    if (l.n > 1)
        qsort(l.ents, l.n, sizeof *l.ents, ent_cmp);
    return 0;
}

/* dfull is under sfull (case-insensitive, as NTFS names compare by default); a drive's
 * root ("\\?\C:\") ends in its separator already. */
static int under(const char *dfull, const char *sfull)
{
    wchar_t *a = wafcp_wide(dfull), *b = wafcp_wide(sfull);
    size_t lb = b ? wcslen(b) : 0;
    int r = a && b && wcslen(a) > lb && (a[lb] == L'\\' || (lb && b[lb - 1] == L'\\')) &&
            CompareStringOrdinal(a, (int)lb, b, (int)lb, TRUE) == CSTR_EQUAL;
    free(a);
    free(b);
    return r;
}

/* The copy dfull of the directory sfull (st: its identity) would be the directory itself or
 * go into it, reached by another name than its own (a drive letter mapped onto it, as subst
 * makes, a junction or share on the way to dfull): dfull and each directory above it that
 * exists is compared with it by volume and file index. 0, or -1 when it is (reported in
 * cp's words). */
static int reaches_source(const char *sfull, const struct afs_stat *st, const char *dfull,
                          const char *sshow, const char *dshow)
{
    if (under(dfull, sfull)) {
        afcp_into_itself(sshow, dshow);
        return -1;
    }
    char *p = afcp_xstrdup(dfull);
    int r = 0;
    for (int self = 1;; self = 0) {
        struct afs_stat a;
        if (wafcp_stat(p, 0, &a) == 0 && S_ISDIR(a.mode) && a.dev == st->dev &&
            a.ino == st->ino) {
            if (self) {
                afcp_note("'%s' and '%s' are the same file", sshow, dshow);
                afcp_fail();
            } else {
                afcp_into_itself(sshow, dshow);
            }
            r = -1;
            break;
        }
        if (!wafcp_up(p))
            break;
    }
    free(p);
    return r;
}

/* The destination directories of this run (made, or written into), when there are several
 * operands: one of them that is such a directory, or in one, waits for the copies in flight
 * (win_afcp.c), as cp copies one operand after the other. A set (open addressing, linear
 * probing; a zero slot is free). Only the walker touches it. */
int wafcp_track_dests;
static struct devino {
    uint64_t dev, ino;
} *dests;
static size_t dests_len, dests_cap;

static size_t dest_slot(uint64_t dev, uint64_t ino)
{
    uint64_t h = (ino ^ (dev << 32 | dev >> 32)) * 0x9E3779B97F4A7C15ull;
    size_t mask = dests_cap - 1, i = (size_t)(h >> 32) & mask;
    while ((dests[i].ino || dests[i].dev) && (dests[i].ino != ino || dests[i].dev != dev))
        i = (i + 1) & mask;
    return i;
}

int wafcp_is_dest(const struct afs_stat *st)
{
    if (!dests_len || (!st->ino && !st->dev))
        return 0;
    size_t i = dest_slot(st->dev, st->ino);
    return dests[i].ino == st->ino && dests[i].dev == st->dev;
}

int wafcp_dests_known(void)
{
    return dests_len != 0;
}

void wafcp_remember_dest(const struct afs_stat *st)
{
    if (!wafcp_track_dests || (!st->ino && !st->dev))
        return;
    if (2 * (dests_len + 1) > dests_cap) { /* at most half full */
        struct devino *old = dests;
        size_t n = dests_cap;
        dests_cap = n ? 2 * n : 64;
        dests = calloc(dests_cap, sizeof *dests);
        if (!dests) {
            fputs("afcp: out of memory\n", stderr);
            exit(1);
        }
        for (size_t i = 0; i < n; i++)
            if (old[i].ino || old[i].dev)
                dests[dest_slot(old[i].dev, old[i].ino)] = old[i];
        free(old);
    }
    size_t i = dest_slot(st->dev, st->ino);
    if (dests[i].ino != st->ino || dests[i].dev != st->dev) {
        dests[i] = (struct devino){st->dev, st->ino};
        dests_len++;
    }
}

/* Opens (makes, when missing) the destination of a source directory; -v: its line (number
 * vn) once it is made, as cp prints it. The new directory has one reference, the caller's;
 * NULL when it failed (reported). */
static struct wafcp_dir *enter_dir(struct wafcp_dir *parent, const char *sfull,
                                   const char *dfull, const char *sshow, const char *dshow,
                                   const struct ent *e, uint64_t vn)
{
    struct afs_stat st;
    int created = 0, err = wafcp_stat(dfull, 1, &st);
    if (err == -ENOENT) {
        err = wafcp_mkdir(dfull);
        created = err == 0;
        if (err < 0) {
            afcp_err(err, "cannot create directory '%s'", dshow);
            return NULL;
        }
        afcp_vline(vn, sshow, dshow);
        if (wafcp_track_dests && wafcp_stat(dfull, 1, &st) == 0)
            wafcp_remember_dest(&st);
    } else if (err < 0) {
        afcp_err(err, "cannot stat '%s'", dshow);
        return NULL;
    } else if (!S_ISDIR(st.mode)) {
        afcp_note("cannot overwrite non-directory '%s' with directory '%s'", dshow, sshow);
        afcp_fail();
        return NULL;
    } else {
        wafcp_remember_dest(&st);
    }
    struct wafcp_dir *d = afcp_xmalloc(sizeof *d);
    *d = (struct wafcp_dir){.sfull = afcp_xstrdup(sfull), .dfull = afcp_xstrdup(dfull),
                            .sshow = afcp_xstrdup(sshow), .dshow = afcp_xstrdup(dshow),
                            .attrs = e->attrs, .ctime = e->ctime, .atime = e->atime,
                            .mtime = e->mtime, .refs = 1, .created = created,
                            .parent = parent};
    if (parent)
        dir_get(parent);
    return d;
}

struct frame {
    struct wafcp_dir *d;
    struct ent       *ents;
    size_t            n, next;
};

/* Copies the tree at sfull to dfull, depth first, the directories being walked on a heap
 * array (the tree's depth costs no task stack). -v: the operand's number vn (ended here);
 * each entry gets its own, in the walk's order, as walk.c numbers them. */
static void copy_tree(struct corio_task *t, struct wafcp_dir *top, const char *sfull,
                      const char *dfull, const char *sshow, const char *dshow,
                      const struct ent *te, uint64_t vn)
{
    struct frame *stack = NULL;
    size_t depth = 0, cap = 0;
    struct wafcp_dir *d = enter_dir(top, sfull, dfull, sshow, dshow, te, vn);
    afcp_vend(vn);
    while (d || depth) {
        if (d) {
            struct ent *ents;
            size_t n;
            if (read_entries(t, d, &ents, &n) < 0) {
                wafcp_dir_put(d);
            } else {
                if (depth == cap) {
                    cap = cap ? cap * 2 : 16;
                    stack = realloc(stack, cap * sizeof *stack);
                    if (!stack) {
                        fputs("afcp: out of memory\n", stderr);
                        exit(1);
                    }
                }
                stack[depth++] = (struct frame){d, ents, n, 0};
            }
            d = NULL;
            continue;
        }
        struct frame *f = &stack[depth - 1];
        if (f->next == f->n) {
            free(f->ents);
            f->d->end_vn = afcp_vnum(); /* its end comes after its entries (dir_finish) */
            wafcp_dir_put(f->d);
            depth--;
            continue;
        }
        struct ent *e = &f->ents[f->next++];
        struct wafcp_dir *cur = f->d;
        /* -v: many entries wait for one still being copied: no more until they are out. */
        while (afcp_vbehind())
            corio_sleep(t, 1000000);
        uint64_t evn = afcp_vnum();
        afcp_vtask(t, evn); /* what the walker reports goes with this entry */
        char *sf = wafcp_join(cur->sfull, e->name), *df = wafcp_join(cur->dfull, e->name);
        char *ss = wafcp_join(cur->sshow, e->name), *ds = wafcp_join(cur->dshow, e->name);
        /* A link (symbolic link, junction: a name surrogate) is not followed; any other
         * reparse point (deduplicated, a cloud placeholder) is the file or directory it
         * holds. */
        if ((e->attrs & FILE_ATTRIBUTE_REPARSE_POINT) && IsReparseTagNameSurrogate(e->tag)) {
            afcp_err(ENOTSUP, "not copying symbolic link or junction '%s'", ss);
            afcp_vend(evn);
        } else if (e->attrs & FILE_ATTRIBUTE_DIRECTORY) {
            d = enter_dir(cur, sf, df, ss, ds, e, evn);
            afcp_vend(evn);
        } else {
            spawn_file(t, cur, cur, sf, df, ss, ds, e->size, evn);
        }
        free(sf);
        free(df);
        free(ss);
        free(ds);
        free(e->name);
    }
    free(stack);
}

void wafcp_copy_operand(struct corio_task *t, const char *sfull, const char *sshow,
                        const struct afs_stat *st, const char *dfull, const char *dshow,
                        uint64_t vn)
{
    if (!S_ISDIR(st->mode)) {
        /* A file: its job holds two references of a directory standing for none. */
        struct wafcp_dir *none = afcp_xmalloc(sizeof *none);
        *none = (struct wafcp_dir){.refs = 1};
        spawn_file(t, none, none, sfull, dfull, sshow, dshow, (uint64_t)st->size, vn);
        wafcp_dir_put(none);
        return;
    }
    if (!afcp.o.recursive) {
        afcp_note("-r not specified; omitting directory '%s'", sshow);
        afcp_fail();
        afcp_vend(vn);
        return;
    }
    /* The directory's attributes and times (followed, as the operand is). */
    wchar_t *w = wafcp_wide(sfull);
    WIN32_FILE_ATTRIBUTE_DATA a;
    if (!w || !GetFileAttributesExW(w, GetFileExInfoStandard, &a)) {
        afcp_err(w ? wafcp_errno(GetLastError()) : -EINVAL, "cannot stat '%s'", sshow);
        free(w);
        afcp_vend(vn);
        return;
    }
    free(w);
    if (reaches_source(sfull, st, dfull, sshow, dshow) < 0) {
        afcp_vend(vn);
        return;
    }
    struct ent e = {.attrs = a.dwFileAttributes, .ctime = a.ftCreationTime,
                    .atime = a.ftLastAccessTime, .mtime = a.ftLastWriteTime};
    copy_tree(t, NULL, sfull, dfull, sshow, dshow, &e, vn);
}
