/* afcp on Windows: the declarations shared by win_afcp.c (UTF-8 argv, options, messages,
 * the plan for the operands), win_walk.c (the walk with FindFirstFileExW and the copy of one
 * file: temporary + rename) and win_fs.c (paths, the metadata calls, Ctrl+C).
 *
 * The POSIX afcp works on directory fds (openat and friends); Windows afcp names every file
 * by its absolute path, always in the "\\?\" form (no MAX_PATH limit, no reinterpretation
 * of "." or trailing dots), and passes it to asyncfs with AFS_AT_FDCWD. Paths are UTF-8
 * inside afcp and in the library; they become UTF-16 only at the Win32 calls. progress.c
 * (semaphore, buffers, bar) and quote.c (names in messages) are the POSIX afcp's. */
#ifndef WIN_AFCP_H
#define WIN_AFCP_H

#include "afcp.h"

#include <windows.h>

/* A directory being copied: kept until its last file is done, then given the source's
 * attributes (and with -p its times). */
struct wafcp_dir {
    char             *sfull, *dfull; /* "\\?\" absolute paths (UTF-8) */
    char             *sshow, *dshow; /* as the user wrote them, for messages */
    DWORD             attrs;         /* the source directory's attributes */
    FILETIME          ctime, atime, mtime;
    int               refs;
    int               created;       /* made by this run */
    uint64_t          end_vn;        /* -v: the number its end has (see dir_finish) */
    struct wafcp_dir *parent;
};

/* One regular file to copy. */
struct wafcp_job {
    struct wafcp_dir *sd, *dd;   /* holding references while the file is copied */
    char             *sfull, *dfull, *sshow, *dshow;
    uint64_t          size;      /* as the walk saw it (the copy takes the open file's) */
    uint64_t          vn;        /* -v: its number (afcp_vnum; verbose.c) */
};

/* win_fs.c: conversions (malloc'd, NULL when s is not valid UTF-8 / UTF-16). */
wchar_t *wafcp_wide(const char *s);
char    *wafcp_utf8(const wchar_t *w);
/* The "\\?\" absolute form of a path as the user wrote it ("\\?\UNC\..." for a share);
 * NULL and *err set when it cannot be made. */
char    *wafcp_full(const char *path, int *err);
/* Cuts the "\\?\" path full to its directory ("\\?\C:\x" to "\\?\C:\"); 0 when full is a
 * root and has none. */
int      wafcp_up(char *full);
/* dir + '\' + name (dir may end in '\' or '/' already; none after a bare "X:"); malloc'd. */
char    *wafcp_join(const char *dir, const char *name);
int      wafcp_errno(DWORD err); /* a Win32 error as a negative errno */

/* The metadata calls on absolute paths, through asyncfs (afs_statx, afs_mkdirat,
 * afs_renameat, afs_unlinkat with AFS_AT_FDCWD); 0 or -errno. wafcp_unlink also removes a
 * read-only file (afcp's own temporaries carry the source's attributes). */
int wafcp_stat(const char *path, int nofollow, struct afs_stat *st);
int wafcp_mkdir(const char *path);
int wafcp_rename(const char *from, const char *to, int noreplace);
int wafcp_unlink(const char *path);
/* Sets attributes (0: unchanged) and times (NULL: unchanged) of path; 0 or -errno. */
int wafcp_set_basic(const char *path, DWORD attrs, const FILETIME *times3);

/* Ctrl+C, Ctrl+Break and the console closing: every temporary registered here is removed
 * before the process ends (see win_fs.c). */
void wafcp_temps_init(unsigned slots);
int  wafcp_temp_get(void);                 /* a free slot (one per file in flight) */
/* Registers path before the create that may make it (parks the task for good when afcp is
 * ending), then says whether the create made it, then frees the slot once the temporary is
 * renamed or removed. wafcp_temp_hold parks the task for good when afcp is ending. */
void wafcp_temp_set(struct corio_task *t, int slot, const char *path);
void wafcp_temp_created(int slot, int created);
void wafcp_temp_hold(struct corio_task *t);
void wafcp_temp_put(int slot);
void wafcp_test_hook_create(void);         /* AFCP_TEST_CTRL (tests only) */
int  wafcp_ending(void);                   /* a console event came: afcp is ending */

/* win_walk.c */
void wafcp_dir_put(struct wafcp_dir *d);
/* Copies the operand src (full path sfull, shown as sshow; st: what afs_statx says of it,
 * followed) to dfull (shown as dshow), -v's number vn (ended when it is done). */
void wafcp_copy_operand(struct corio_task *t, const char *sfull, const char *sshow,
                        const struct afs_stat *st, const char *dfull, const char *dshow,
                        uint64_t vn);
/* The destination directories of this run (made, or written into), kept when
 * wafcp_track_dests is set (several operands): whether st is one of them, whether there is
 * any yet, and one more (the walker's only). */
extern int wafcp_track_dests;
int  wafcp_is_dest(const struct afs_stat *st);
int  wafcp_dests_known(void);
void wafcp_remember_dest(const struct afs_stat *st);

#endif /* WIN_AFCP_H */
