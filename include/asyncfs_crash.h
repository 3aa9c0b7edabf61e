/*
 * asyncfs crash simulator: a simulated power cut for testing the crash safety of a storage
 * engine (a log, a database, a key-value store) built on asyncfs.
 *
 * A context in crash mode writes through to the real files, so the program reads back what
 * it wrote as it would on a real system, and keeps beside them, per file, what a power cut
 * could still take away: the file's durable contents (as of its last sync) and every write
 * and size change made since. At the cut, chosen as the Nth op or an op drawn from a seed,
 * the machine "dies": that op and every later one fail with -EIO. afs_crash_reboot() then
 * decides for each change made since its file's last sync whether it reached the disk
 * (kept), did not (dropped) or did in part (torn, sector by sector), writes the files as the
 * disk would hold them after the power came back, and hands the context back. The program
 * then opens the files again, as after a reboot, and checks its own promises: a record it
 * reported durable must be there.
 *
 * Decisions come from the seed and the number of the op that made the change (not from
 * timing): the same program with the same seed gives the same files, on every backend.
 *
 * What is modelled (docs/CRASHSIM.md has the details and the reasons):
 *  - Writes (afs_pwrite, afs_write, the afs_queue_write family, streams' write-behind) are
 *    volatile until a sync of their file covers them. A sync covers the writes whose
 *    callbacks ran (or whose blocking call returned) before the sync was queued, and makes
 *    them durable when it reports success; a write still in flight when a sync is queued is
 *    not covered by it. afs_fsync with or without AFS_FSYNC_DATA, and afs_syncfs (every file
 *    of the context), are syncs; nothing else is (closing a file is not). A sync that fails
 *    leaves the changes it covered volatile for good: no later sync makes them durable (after
 *    a failed writeback the kernel may drop them and mark their pages clean).
 *  - Unsynced writes to a file may reach the disk in any order (a volatile write cache):
 *    each is kept, dropped or torn independently. Sectors (sector_size bytes of the file,
 *    aligned) are atomic: a torn write lands as whole sectors, unless AFS_CRASH_GARBAGE asks
 *    for sectors that did not land to hold random bytes. A write past the end of the file
 *    moves the end only if (the part of) it that reached the disk does; a gap left below a
 *    landed sector reads as zeros.
 *  - afs_ftruncate, afs_fallocate (every mode: moving the end, punching a hole, zeroing a
 *    range) and afs_open or afs_create with AFS_TRUNC are volatile changes too, like writes:
 *    each kept or dropped as a whole until a sync of the file covers it. afs_fadvise and
 *    afs_sync_file_range change nothing and are never a sync. A change that failed changed
 *    nothing, except a write that failed part way: the prefix the file holds (asyncfs.h)
 *    is a change like any other.
 *  - Names (creating, renaming and removing files and directories, through afs_open,
 *    afs_create and the metadata calls): by default durable at once, as a journaling file
 *    system that commits them with the next sync of any file mostly behaves, so that only
 *    file contents and sizes are simulated; a file created since its last sync survives the
 *    cut, empty or with whatever of its writes landed. With AFS_CRASH_STRICT_DIRS (what
 *    POSIX promises) a name op is durable only once a sync of its directory (both, for a
 *    rename) completed after it: an fsync of the directory (afs_openat with AFS_DIRECTORY,
 *    afs_file_from_fd, afs_fsync) or an afs_syncfs. The reboot undoes the others, the
 *    latest first: a created file or directory is removed, a renamed file gets its old
 *    name back and the file it replaced comes back, a removed file comes back with its
 *    contents (kept meanwhile under a hidden name in its directory, ".afs-crash-*"), a
 *    removed directory comes back empty.
 *  - After the cut every op of the context (reads too) fails with -EIO, as do afs_open,
 *    afs_file_from_fd, and the ops queued before the cut whose callbacks run after it
 *    (whatever the kernel did with them; their writes may still have landed). A sync that
 *    reports -EIO made nothing durable. afs_close still closes and frees the file, and
 *    returns -EIO. Pipes, sockets and ttys are not storage: their ops are not counted and
 *    run normally.
 *
 * What is not: changes made around the library (system calls on afs_file_fd(), another
 * context or process writing the same files), data
 * in the drive that a sync reported durable (never altered: that is the promise a sync
 * makes), metadata such as times and permissions, and reads that return damaged data.
 * Several writes to one file with AFS_APPEND in flight at once are placed in the order they
 * were queued.
 *
 * Cost: the durable contents of each file written in crash mode are read into memory at
 * its first write, and every unsynced write is copied. Meant for tests, not for production.
 *
 * Threads: the calls below follow the context's rule (its thread only).
 */
#ifndef ASYNCFS_CRASH_H
#define ASYNCFS_CRASH_H

#include "asyncfs.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What becomes of each unsynced change at the cut. */
enum afs_crash_policy {
    AFS_CRASH_MIXED = 0, /* each change is kept, dropped or torn, one chance in three each */
    AFS_CRASH_DROP,      /* none reached the disk: every file as of its last sync */
    AFS_CRASH_KEEP,      /* all did: the files as the program left them */
    AFS_CRASH_TEAR       /* every write is torn: of a write of two sectors or more at least
                            one sector landed and one did not; a write of one sector (or a
                            size change) landed or not, one chance in two */
};

#define AFS_CRASH_GARBAGE 0x1u /* a sector of a torn write that did not land holds random
                                  bytes, not its old contents (a device that does not write
                                  sectors atomically) */
#define AFS_CRASH_STRICT_DIRS 0x2u /* names are durable only once their directory is synced:
                                      see "Names" above. POSIX systems only (-ENOTSUP on
                                      Windows) */

struct afs_crash_options {
    uint64_t seed;        /* every random choice comes from it */
    uint64_t cut_at_op;   /* the cut comes as op number cut_at_op starts (1: the first op):
                             that op and all later ones fail with -EIO. 0: see cut_op_max */
    uint64_t cut_op_max;  /* with cut_at_op 0: the cut comes at an op drawn by the seed from
                             1..cut_op_max. Both 0: only afs_crash_cut() or
                             afs_crash_reboot() cut */
    unsigned sector_size; /* the atomic unit of a torn write, a power of two up to 1 MiB;
                             0 = 512 */
    unsigned policy;      /* enum afs_crash_policy */
    unsigned flags;       /* AFS_CRASH_* */
};

/* Fills *o with the defaults: seed 0, no cut point, 512-byte sectors, AFS_CRASH_MIXED. */
AFS_API void afs_crash_options_default(struct afs_crash_options *o);

/* Puts ctx in crash mode. Ops are counted from here: every op of the context on a file or
 * a path (reads, writes, syncs, ftruncate, fallocate, and the metadata ops: openat, statx,
 * close, mkdir, rename, unlink, syncfs), queued or blocking, is one op, including those a
 * corio task's afs_open or afs_close makes; afs_open and afs_close outside a task are plain
 * system calls and are not counted, nor are ops on pipes, sockets and ttys. Call it on a fresh context: no file open and no op outstanding.
 * Returns 0, -EINVAL (opts NULL, a bad sector size, policy or flag), -EBUSY (a file is open
 * or an op outstanding on ctx), -EALREADY (ctx is in crash mode already) or -ENOMEM. */
AFS_API int afs_crash_enable(struct afs_ctx *ctx, const struct afs_crash_options *opts);

/* Cuts the power now, if the cut has not come yet: the next op fails with -EIO. Returns 0,
 * or -EINVAL when ctx is not in crash mode. */
AFS_API int afs_crash_cut(struct afs_ctx *ctx);

/* 1 once the cut has come, 0 before it, -EINVAL when ctx is not in crash mode. */
AFS_API int afs_crash_happened(const struct afs_ctx *ctx);

/* The ops counted so far, the one the cut failed excluded: run a program once without a cut
 * point to learn how many ops it makes, then draw cut points from that range. 0 when ctx
 * is not in crash mode. */
AFS_API uint64_t afs_crash_ops(const struct afs_ctx *ctx);

/* What afs_crash_reboot() did. */
struct afs_crash_report {
    uint64_t cut_op;   /* the op the cut failed (1-based); 0 when it came from afs_crash_cut()
                          or afs_crash_reboot() */
    uint64_t ops;      /* ops counted before the cut */
    uint64_t files;    /* files with unsynced changes at the cut (those rewritten) */
    uint64_t kept;     /* unsynced writes and size changes that reached the disk */
    uint64_t dropped;  /* ... that did not */
    uint64_t torn;     /* ... that did in part */
    uint64_t names_undone; /* AFS_CRASH_STRICT_DIRS: creations, renames and removals undone */
};

/* The reboot: cuts the power if the cut has not come yet, waits for every op of ctx (their
 * callbacks run, with -EIO; ops waiting on a pipe or socket are cancelled), closes every
 * stream and file still open on ctx (their handles are freed, as afs_ctx_free() does; what
 * a stream still buffered is lost, as in a crash), then writes each file as the disk holds it after the cut (the
 * kept, dropped and torn changes above) and leaves crash mode. ctx is a plain context again
 * (free it, or use it to open the files and check them). report may be NULL.
 * Returns 0, or the first error met while rewriting a file (-EIO, -ENOSPC...); the other
 * files are rewritten all the same. Must not be called from a callback or a corio task of
 * ctx's scheduler; aborts when ctx is not in crash mode. */
AFS_API int afs_crash_reboot(struct afs_ctx *ctx, struct afs_crash_report *report);

#ifdef __cplusplus
}
#endif
#endif /* ASYNCFS_CRASH_H */
