/* afcp: a cp-like bulk copier on corio. Shared declarations of afcp.c (--help, planning,
 * the schedulers), common.c (options, messages, the root task, the chunk loop: also the
 * Windows front end's), walk.c (directories, symlinks, special files), copy.c (regular
 * files), progress.c (progress bar, semaphore, buffer pool) and verbose.c (-v's lines and
 * the messages in cp's order: also the Windows front end's).
 *
 * Threads: afcp runs on a corio runtime, one scheduler per CPU (--threads). The walker runs
 * on scheduler 0 and sends the entries it finds in batches to the other schedulers first,
 * its own taking the rest (walk.c). What a scheduler's tasks share only among themselves is
 * in its struct afcp_sched (afcp_me, one per thread: semaphores, buffer pool, the measured
 * copy path, commit groups); what all threads share is the options (read-only once the
 * copy starts), the counters below (atomics: afcp_add, afcp_fail), the directories'
 * reference counts (atomics), the table of temporaries (see copy.c) and the hard-link
 * table (a lock). */
#ifndef AFCP_H
#define AFCP_H

#include <corio.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

#define AFCP_VERSION "0.1.0"

enum { AFCP_SPARSE_AUTO, AFCP_SPARSE_NEVER, AFCP_SPARSE_ALWAYS };
enum { AFCP_REFLINK_NEVER, AFCP_REFLINK_AUTO, AFCP_REFLINK_ALWAYS };
/* What --preserve keeps (cp's names): -p is MODE|OWNER|TIMES, -a all of them. */
enum { AFCP_P_MODE = 1, AFCP_P_OWNER = 2, AFCP_P_TIMES = 4, AFCP_P_LINKS = 8, AFCP_P_XATTR = 16,
       AFCP_P_ATTRS = AFCP_P_MODE | AFCP_P_OWNER | AFCP_P_TIMES };

struct afcp_opts {
    int      recursive, verbose, noclobber, force, quiet;
    int      preserve;      /* AFCP_P_* */
    int      xattr_required; /* --preserve=xattr named: a failure is an error (not with -a) */
    int      default_mode;  /* --no-preserve=mode: new files get 0666, new directories and
                               sockets 0777, less the umask (cp's defaults; a directory's
                               sticky bit stays, as with cp), not the source's */
    int      update;        /* -u: only when the source is newer or the destination missing */
    int      one_fs;        /* -x: do not descend into directories on other file systems */
    int      reflink;       /* AFCP_REFLINK_*: FICLONE first (default auto, as cp) */
    int      deref;         /* symlinks in the source: 'P' never followed, 'H' followed on
                               the command line, 'L' followed everywhere; 0: cp's default
                               (-H without -r, -P with it) */
    int      direct, inplace, fsync, copy_range;
    int      sparse;        /* AFCP_SPARSE_*: holes in the copy (--sparse=WHEN) */
    unsigned jobs;          /* files in flight (in all, shared out over the schedulers) */
    unsigned threads;       /* schedulers (0: one per CPU the process may use) */
    unsigned chunk_workers; /* reads/writes in flight per large file */
    size_t   chunk_size;    /* bytes per read/write of a large file */
    uint64_t cfr_min_size;  /* copy_file_range for files of at least this size */
    int      interactive;   /* -i: ask before a destination that is not a directory is
                               replaced (one scheduler, no progress bar) */
    const char *target_dir; /* -t DIR: every operand is a source, copied into DIR */
    int      no_target_dir; /* -T: DST is the copy's name, even where it is a directory */
};

/* A counting semaphore for tasks: acquire waits (FIFO) for a token, release hands it over. */
struct afcp_sem_waiter;
struct afcp_sem {
    long                    avail;
    struct afcp_sem_waiter *head, *tail;
};
void afcp_sem_init(struct afcp_sem *s, long tokens);
void afcp_sem_acquire(struct corio_task *t, struct afcp_sem *s);
void afcp_sem_release(struct afcp_sem *s);

/* A file's identity. */
struct afcp_devino {
    dev_t dev;
    ino_t ino;
};

/* The source's atime before afcp_copy_inline read it and gave it up (id.ino 0: nothing
 * read): the file task's own look at the source comes after that read. */
struct afcp_atime {
    struct afcp_devino id;
    struct timespec    atim;
};

/* A directory being copied: the source and destination directory fds every entry is opened
 * relative to, kept open while the walker or a file task still uses them (refs). When the
 * last reference goes, the destination's final mode and times are applied (see walk.c). */
struct afcp_dir {
    int              sfd, dfd;   /* -1 when unused */
    char            *spath, *dpath; /* for messages */
    struct stat      st;         /* the source directory's */
    dev_t            ddev;       /* the destination's file system */
    dev_t            rootdev;    /* -x: the file system of the operand this is under */
    struct afcp_devino sname_id, dname_id; /* what lstat says of the name each side was
                                    reached by: the directory, or a symlink to it (cp's
                                    test of "the same name": walk.c) */
    int              refs;       /* atomic: file tasks on any scheduler hold references */
    int              created;    /* we made the destination: set its mode at the end */
    int              inherit;    /* made under a default ACL, which gave its mode: no chmod */
    int              plain;      /* --no-preserve=mode and the destination has a default ACL:
                                    what it gives new files goes (afcp_plain_mode) */
    mode_t           dmode;      /* the destination's mode when opened (its set-group-ID bit
                                    stays, as cp leaves it) */
    int              finalize;   /* apply mode/times when done (a copied directory) */
    uint64_t         end_vn;     /* -v: the number its end has (what dir_finish reports
                                    comes after its entries, as with cp) */
    struct afcp_dir *parent;
};

/* One regular file to copy: name in d's source directory -> dname in d's destination. */
struct afcp_file_job {
    struct afcp_dir *sd, *dd;      /* source and destination directories (may be equal) */
    char            *sname, *dname;
    char            *spath, *dpath; /* for messages */
    struct stat      st;           /* lstat/stat of the source at walk time */
    int              follow;       /* a command-line operand without -r: follow a symlink */
    int              operand;      /* a command-line operand itself (-H records it for links) */
    int              exists;       /* something was at dname when we checked */
    uint64_t         vn;           /* -v: its number (afcp_vnum) */
    struct afcp_atime read_before; /* see afcp_copy_inline */
};

struct group;

/* What one scheduler's tasks share: touched only by its own thread (afcp_me). */
struct afcp_sched {
    struct afs_ctx     *ctx;        /* the scheduler's context: every file is opened on it */
    int                 index;
    struct afcp_sem     files;      /* file slots (its share of --jobs) */
    struct afcp_sem     bufs;       /* large-file buffers of chunk_size */
    struct afcp_sem     temps;      /* its slots of the table of temporaries (copy.c) */
    unsigned            temp_base, temp_n, temp_next;
    void               *buf_free;   /* free list of chunk buffers */
    unsigned            copying;    /* file tasks holding a slot */
    unsigned            files_cap;  /* its file slots now, files_debt of them to drop as they
                                       come back (afcp_fd_wait: the descriptors ran out) */
    unsigned            files_debt;
    int                 inline_io;  /* the tree answers from the cache: plain system calls
                                       (measured as the copy goes: see copy.c) */
    unsigned            probe_gap, probe_left, since_yield;
    int                 nowait_broken; /* RWF_NOWAIT refused: time the plain reads instead */
    char               *inline_buf;
    struct group       *cur_group;  /* --fsync: the commit group filling (copy.c) */
    int                 committing;
    struct { dev_t from, to; } no_clone[16]; /* pairs of file systems FICLONE refused */
    unsigned            no_clone_n;
    uint64_t            name_state; /* afcp_tmpname()'s generator */
    struct corio_future never;      /* what a task waits for once afcp is dying */
    int                 never_ready;
    uint64_t            entries;    /* entries copied here (AFCP_TEST_STATS) */
    unsigned            queued;     /* batches sent here, not yet started through (atomic:
                                       the walker adds, this thread takes off; walk.c) */
};

/* The calling thread's scheduler state; set by every task that starts a thread's work
 * (afcp_enter). */
#ifdef _WIN32
/* The Windows afcp (win_afcp.c) runs one scheduler: its state serves every thread, the pool
 * thread that lists directories included. */
extern struct afcp_sched *afcp_me;
#else
extern _Thread_local struct afcp_sched *afcp_me;
#endif
void afcp_enter(struct corio_task *t);
#define AFCP_CTX          (afcp_me->ctx)
#define AFCP_LOCAL(field) (afcp_me->field)

struct afcp_app {
    struct afcp_opts    o;
    struct corio_rt    *rt;
    unsigned            nsched;
    struct afcp_sched  *scheds;    /* nsched of them */
    int                 status;    /* exit status: 1 once anything failed (afcp_fail) */
    int                 is_root;
    mode_t              umask;
    int                 have_proc; /* /proc/self/fd/N/name paths work (see copy.c) */
    /* progress (atomics: afcp_add) */
    int                 progress;  /* draw a bar */
    int                 bar_shown;
    int                 walking;   /* totals may still grow */
    uint64_t            bytes_total, bytes_done, files_total, files_done;
    uint64_t            files_busy; /* file slots held, all schedulers (afcp_fd_wait) */
    int64_t             t_start;
    /* the destination directories of this run (made, or written into): one of them is read
     * as a source only once the copies in flight are done (the walker's: walk.c) */
    struct afcp_devino *dests;
    size_t              dests_len, dests_cap;
};

extern struct afcp_app afcp;

/* A counter of afcp (bytes_done...) moved by delta, from any thread. */
static inline void afcp_add(uint64_t *counter, int64_t delta)
{
    __atomic_fetch_add(counter, (uint64_t)delta, __ATOMIC_RELAXED);
}
static inline uint64_t afcp_get(const uint64_t *counter)
{
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}
/* The exit status becomes 1 (something failed), from any thread. */
static inline void afcp_fail(void)
{
    __atomic_store_n(&afcp.status, 1, __ATOMIC_RELAXED);
}

#ifndef _WIN32
/* -u: whether a destination last modified at dst is as new as a source at src, or newer
 * (cp then leaves it). Windows compares its own times (win_afcp.c). */
static inline int afcp_not_older(const struct stat *dst, const struct stat *src)
{
    return src->st_mtim.tv_sec < dst->st_mtim.tv_sec ||
           (src->st_mtim.tv_sec == dst->st_mtim.tv_sec &&
            src->st_mtim.tv_nsec <= dst->st_mtim.tv_nsec);
}
#endif

/* Messages, cp style: "afcp: <what> '<path>': <strerror>". They clear the progress bar, and
 * each is written whole (the stream is locked), whatever thread prints it. The
 * formats take %s and %d only; a '%s' (with its quotes) is a file name and is printed as
 * afcp_q() quotes it, so a name never reaches the terminal raw. */
#ifdef _WIN32
#define afcp_lock_stream(f)   _lock_file(f)
#define afcp_unlock_stream(f) _unlock_file(f)
#else
#define afcp_lock_stream(f)   flockfile(f)
#define afcp_unlock_stream(f) funlockfile(f)
#endif
/* Set once a signal is ending the run (copy.c): what fails after it (a temporary the handler
 * removed) is not reported, as the process dies of the signal. */
extern volatile sig_atomic_t afcp_signalled;
void afcp_err(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void afcp_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "dir/name" (malloc'd) as cp joins them: the slashes that end dir become one; dir "" is the
 * current directory as the user wrote it (just "name"). */
char *afcp_join(const char *dir, const char *name);
/* "cannot copy a directory, 'src', into itself, 'dst'" (cp's words; the operand as written
 * and the name of its copy), and the exit status 1. */
void afcp_into_itself(const char *src, const char *dst);
/* verbose.c (both front ends): -v in cp's order, from any thread. The walker numbers every
 * entry in the order cp copies it (afcp_vnum: 0 without -v). Whoever copies the entry hands
 * in its lines where cp prints them: afcp_vline ("'SRC' -> 'DST'") when the copy starts,
 * before any error of it, afcp_vremoved ("removed 'DST'") where cp removes the destination;
 * then afcp_vend once, when the entry is done (failed or not). An entry's lines are printed
 * once every entry numbered before it is done. afcp_vbehind: too many entries wait for one
 * still being copied; the walker waits (walk.c). */
uint64_t afcp_vnum(void);
void     afcp_vline(uint64_t n, const char *spath, const char *dpath);
void     afcp_vremoved(uint64_t n, const char *dpath);
void     afcp_vend(uint64_t n);
int      afcp_vbehind(void);
/* Task t now copies entry n (0: none): its messages go with n's lines. Returns the entry it
 * copied before (a file task run inside the walker gives it back). */
uint64_t afcp_vtask(struct corio_task *t, uint64_t n);
/* A message (whole lines) of the running task: 1 when it is taken to go out with the
 * entry the task copies (afcp_vtask), 0 when the caller prints it now. */
int      afcp_vmessage(const char *text);
/* quote.c: name quoted as cp quotes names ('a b', 'it'\''s', ''$'\033''x'). The result lives
 * until the fourth call after this one on the same thread. */
const char *afcp_q(const char *name);
/* quote.c: an option's argument (or the option) quoted as cp quotes them in its messages
 * about options (quotearg's locale style: between U+2018 and U+2019 in a UTF-8 locale, 'x'
 * in others; C escapes such as \n and \033 for what is not printable). Lives as afcp_q's
 * results do. */
const char *afcp_lq(const char *arg);
/* Frees the calling thread's quoting buffers (a scheduler's thread, before it ends). */
void afcp_q_release(void);
void *afcp_xmalloc(size_t n);
char *afcp_xstrdup(const char *s);

/* common.c (both builds): the options into afcp.o: -1 to go on with the operands at
 * argv[optind...], or the exit status (0 after --help and --version, 1 when reported).
 * usage prints --help's text. */
int  afcp_options(int argc, char **argv, void (*usage)(FILE *));
/* The root task's work: the progress bar beside a walker task that runs walk(t, plan), and
 * their end. */
void afcp_root(struct corio_task *t, void (*walk)(struct corio_task *, void *), void *plan);
/* Fills tmp (>= 16 bytes) with a fresh ".afcp.XXXXXX" name (case-insensitive on Windows). */
void afcp_tmpname(char *tmp);
/* Opens name relative to dirfd (AFS_AT_FDCWD: an absolute path) on the calling thread's
 * context and wraps it as an asyncfs file (AFS_* flags, perm with AFS_CREAT); 0 or -errno. */
int  afcp_open_file(int dirfd, const char *name, int flags, unsigned perm, struct afs_file **out);
/* Whether an open of the running task that failed with err should be tried again: on EMFILE
 * or ENFILE (no descriptor left: ulimit -n) while other files in flight hold descriptors they
 * will give back (holds_slot: the caller holds one of those slots itself), it waits a
 * millisecond and says yes, up to 100 ms per open; and the scheduler keeps one file
 * fewer in flight from then on, so that the limit bounds the files in flight instead of
 * failing them, as cp, with its few descriptors, never fails. */
int  afcp_fd_wait(int err, int holds_slot, unsigned *tries);
/* The chunks of one large file, taken in order by up to chunk_workers tasks (the caller and
 * its children), each with a chunk_size buffer of the scheduler's pool: copy(c, buf, off,
 * len) copies one and records a failure in *err (negative) and *err_side (0 read, 1 write);
 * no new chunk starts once *err is set (no buffer: -ENOMEM on the read side). Returns when
 * every chunk is done. */
struct afcp_chunks {
    uint64_t size, next, n;
    void    *c;
    void   (*copy)(void *c, void *buf, uint64_t off, size_t len);
    int     *err, *err_side;
};
void afcp_chunks_run(struct corio_task *t, struct afcp_chunks *k);

/* walk.c */
void afcp_dir_get(struct afcp_dir *d);
void afcp_dir_put(struct afcp_dir *d);
/* Copies entry `sname` of sd (lstat'd into *st) to `dname` in dd: a command-line operand,
 * written src_arg, whose copy is named dst_arg (the names cp shows for them: -v's line,
 * messages; in_dir: dst_arg is "DIR/dname" in a target directory), -v's number vn (ended
 * here). Regular files go to a file task (waiting for a slot), the rest is done inline. */
void afcp_copy_entry(struct corio_task *t, struct afcp_dir *sd, const char *sname,
                     struct afcp_dir *dd, const char *dname, const struct stat *st,
                     int follow, const char *src_arg, const char *dst_arg, int in_dir,
                     uint64_t vn);
/* cp's words where it cannot create the copy of src (st, as followed or not) at dst (err):
 * its -v line first (number vn; none for a directory, whose line comes once it is made). */
void afcp_cannot_create(const char *src, const char *dst, const struct stat *st, int err,
                        uint64_t vn);
/* The walker's end: sends the last batch and waits for every batch (walk.c). */
void afcp_walk_end(struct corio_task *t);
/* The walker waits until every copy in flight is done, before it looks at a source that this
 * run may be writing (cp, copying one entry after the other, would see it complete). */
void afcp_settle(struct corio_task *t);
/* Whether path (followed when follow) may be something this run is still writing: missing,
 * a destination directory of this run, or in one. */
int  afcp_maybe_ours(const char *path, int follow);
/* Checks what is at dname in dd before it is replaced by a copy of sname in sd (spath; sst:
 * what is copied, the symlink itself when it is copied as one; follow: the source was
 * reached through a symlink it names, cp's "dereference"), in cp's order: first what cp
 * checks before it prints -v's line; then, where cp removes the destination before it copies
 * (a source copied as a symlink or a special file, or --preserve=links over a file with
 * other names), the removal and its "removed" line; then -v's line of a file or special
 * file (number vn); then what cp finds when it opens the destination. Nothing is looked at
 * in a directory this run made (it holds only what afcp put there): the line follows at
 * once. 0: go on (*exists: something is there), 1: skip it (-n), 2: skip it (-u: it is as
 * new as the source; with --preserve=links it stands for the inode's copy:
 * afcp_link_kept), -1: an error was reported. */
enum { AFCP_DEST_FILE, AFCP_DEST_DIR, AFCP_DEST_OTHER };
int  afcp_check_dest(struct afcp_dir *dd, const char *dname, struct afcp_dir *sd,
                     const char *sname, const char *spath, const char *dpath,
                     const struct stat *sst, int kind, int follow, uint64_t vn, int *exists);
/* Metadata calls, plain while afcp.inline_io, batched otherwise (see walk.c): 0 or -errno. */
int  afcp_stat(int dirfd, const char *name, int flags, struct stat *out); /* AFS_AT_* */
int  afcp_unlink(int dirfd, const char *name);
/* Final rename of tmp to name in dfd honouring -n; 0, 1 when skipped (-n), or -errno. */
int  afcp_install(int dfd, const char *tmp, const char *name);

/* copy.c: a scheduler's state before the run (main thread, after afcp.nsched is known and
 * the options are final), and its end on its own thread (its buffers). */
void afcp_sched_init(struct afcp_sched *s, int index);
void afcp_sched_free(struct afcp_sched *s);
/* copy.c: spawns a task copying the job (takes ownership of it, holds a file slot). */
void afcp_spawn_file(struct corio_task *t, struct afcp_file_job *job);
/* copy.c: copies the regular file sname of sd to dname in dd here and now, with plain
 * system calls, while the tree answers from the cache (see copy.c). 0: copied (or a
 * failure reported; -v: its number vn is done), 1: not done, give it to a file task
 * (afcp_spawn_file) with *before filled in. The strings stay the caller's. */
int  afcp_copy_inline(struct corio_task *t, struct afcp_dir *sd, const char *sname,
                      struct afcp_dir *dd, const char *dname, const char *spath,
                      const char *dpath, int follow, int operand, uint64_t vn,
                      struct afcp_atime *before);
/* copy.c: hard links within the copy (--preserve=links). afcp_links_track: whether the
 * source (st, as copied: followed where a link is followed; operand: named on the command
 * line) is recorded, as cp records it: a non-directory with more than one link, or any
 * file while symlinks are followed (-L, cp's default without -r; -H for operands).
 * afcp_link_earlier: for a name (dpath, dname in dd) of a source st about to be copied:
 * 1 when it was made a hard link to the copy of an earlier name of its inode (-1: that
 * failed, reported; the task waits while that copy is in flight); 0: copy it, and when
 * *first is set (its inode's first name) say how that went with afcp_link_done(le, ok).
 * Any scheduler. */
struct link_ent;
int              afcp_links_track(const struct stat *st, int operand);
int              afcp_link_earlier(struct corio_task *t, struct afcp_dir *dd, const char *dname,
                                   const char *dpath, uint64_t vn, const struct stat *st,
                                   int operand, struct link_ent **first);
void             afcp_link_done(struct link_ent *le, int ok);
/* A destination -u left in place (dname in dd, of the source st), as cp counts it: the copy
 * of its inode, to which later names link, or, when another name was copied first, made a
 * link to that copy (replacing it, as cp does). 0 or -1 (reported). */
int              afcp_link_kept(struct corio_task *t, struct afcp_dir *dd, const char *dname,
                                const char *dpath, uint64_t vn, const struct stat *st,
                                int operand);
/* The temporaries a signal removes (see copy.c): install the handlers (after the options
 * are known), take a slot (may wait), name the temporary before the call that creates it
 * (parks the task for good once a signal came), say whether the create succeeded, give the
 * slot back. afcp_temp_hold parks the task for good once a signal came (before a rename). */
void afcp_signals_init(void); /* after afcp_sched_init */
int  afcp_temp_get(struct corio_task *t);
void afcp_temp_set(struct corio_task *t, int slot, int dfd, const char *name);
void afcp_temp_created(int slot, int created);
void afcp_temp_hold(struct corio_task *t);
void afcp_temp_put(int slot);
void afcp_test_hook_open(void); /* AFCP_TEST_SIGNAL (tests only, see copy.c) */
void afcp_test_path(const char *path); /* AFCP_TEST_PATH (tests only, see copy.c) */
/* A struct stat from asyncfs's (the fields afcp uses). */
void afcp_stat_from(struct stat *out, const struct afs_stat *in);

/* meta.c: ACLs and what an overwritten destination keeps.
 * afcp_safe_mode: mode (the source's, of sfd) with its group bits cut to what the source's
 * ACL group entry allows (with an ACL they are its mask). afcp_acl_copy (-p): the access ACL
 * of sfd (and the default one for a directory) onto dfd, or their removal when sfd has none;
 * reports a failure (and leaves dfd at afcp_safe_mode(mode)); 0 or -errno. */
mode_t afcp_safe_mode(int sfd, mode_t mode);
/* The bits --preserve=mode gives a copy: the source's (st_mode), less setuid and setgid, and
 * for all but a directory the sticky bit, when its owner was asked for and not kept
 * (owner_kept 0), as cp drops them. */
mode_t afcp_kept_mode(mode_t st_mode, int owner_kept);
/* --preserve=ownership, as cp's set_owner: the source's owner and group (st) onto fd, or
 * onto name in the directory fd dirfd, not followed, when fd < 0. When both cannot be set
 * (EPERM, EINVAL: a user gives a file to nobody else), the group alone is tried when
 * group_too (a user may give it a group of its own; cp does not try it for a symlink). A
 * failure is reported (cp's words) as root, or for another error than those two; a user's
 * is silent, as with cp. 1: owner and group kept, 0: not (then no set-user-ID or
 * set-group-ID bit: afcp_kept_mode). */
int afcp_own(int fd, int dirfd, const char *name, const struct stat *st, int group_too,
             const char *dpath);
/* The permission bits a new copy of a source (st_mode, of sfd; -1 for a node that cannot be
 * opened) is created with, the umask still to apply: the source's (afcp_safe_mode) & 0777, or cp's defaults under
 * --no-preserve=mode (0666; 0777 for directories and sockets). */
mode_t afcp_new_mode(int sfd, mode_t st_mode);
int    afcp_acl_copy(int sfd, int dfd, int is_dir, mode_t mode, const char *dpath);
/* --preserve=xattr: every extended attribute of sfd onto dfd (see meta.c); 0 or -errno. */
int    afcp_xattr_copy(int sfd, int dfd, const char *dpath);
/* The same for an entry that cannot be opened (a symlink, a device...): sname in the
 * directory fd sdir onto dname in ddir, neither followed. */
int    afcp_xattr_copy_at(int sdir, const char *sname, int ddir, const char *dname,
                          const char *dpath);
/* Whether the directory fd dir has a default ACL (what it gives new entries, instead of the
 * umask). */
int    afcp_has_default_acl(int dir);
/* --no-preserve=mode for a new file or directory under a default ACL, as cp's set_acl(dst, -1,
 * mode): the access ACL the default one gave it goes, and its mode is `mode` (umask applied).
 * A failure is reported. */
void   afcp_plain_mode(int fd, mode_t mode, const char *dpath);
/* afcp_acl_copy's access ACL for an entry that cannot be opened (a FIFO, a device): the one
 * of sname in the directory fd sdir onto dname in ddir, or its removal when sname has none
 * (or is NULL: afcp_plain_mode's removal). Through /proc/self/fd names, not followed;
 * nothing without /proc. A failure is reported; 0 or -errno. */
int    afcp_acl_copy_at(int sdir, const char *sname, int ddir, const char *dname,
                        const char *dpath);
/* Whether new entries of the destination directory fd dir take afcp_plain_mode: with
 * --no-preserve=mode (and not --preserve=mode), where dir has a default ACL. */
int    afcp_dir_plain(int dir);
/* What is at dname in dd (not followed), and for a regular file its access ACL. */
struct afcp_old {
    struct stat st;
    void       *acl; /* the system.posix_acl_access value or NULL */
    ssize_t     acl_len;
};
int  afcp_old_get(struct afcp_dir *dd, const char *dname, struct afcp_old *old); /* 0, -errno */
/* Gives fd the old file's owner and group (what it can), ACL and mode. */
void afcp_old_apply(int fd, const struct afcp_old *old, const char *dpath);
void afcp_old_free(struct afcp_old *old);

/* progress.c */
void *afcp_buf_get(void);  /* a chunk_size buffer; pair with afcp_sem bufs */
void  afcp_buf_put(void *buf);
void  afcp_progress_task(struct corio_task *t, void *arg);
void  afcp_progress_clear(void);
void  afcp_progress_final(void);

#endif /* AFCP_H */
