/*
 * A SQLite VFS on asyncfs (built when SQLite's headers are found; POSIX systems).
 *
 * Every file SQLite opens through this VFS is an asyncfs file: page reads and writes are
 * afs_pread()/afs_pwrite(), syncs afs_fsync() (and afs_fsync_dir() when SQLite asks for the
 * directory), truncation afs_ftruncate(), opens, closes and deletes the asyncfs calls of the
 * same name. So inside a corio task a connection's I/O
 * suspends only that task and joins the phase's batch: 32 connections in 32 tasks of one
 * scheduler read their pages in one submission. Outside a task the calls block the thread,
 * as with SQLite's unix VFS.
 *
 * Contexts. A file opened inside a corio task is opened on the scheduler's context
 * (corio_sched_ctx()); reads of at most the context's sync_threshold bytes on a buffered file
 * run inline there when the page cache holds them, and join the batch when it does not (a
 * file whose reads keep missing sends them to the batch without asking first, and on
 * io_uring the context sends cached ones there too when it measured that cheaper: see
 * asyncfs.h, "Inside a corio task"); a scheduler whose context has sync_threshold 0 batches
 * every page read, the cached ones included. A file opened outside a task is opened on a
 * context the VFS keeps for the calling thread (created at first use, default
 * configuration, freed when the thread has exited and its last file is closed).
 * A connection's journal and WAL are on its database's context when the database was opened
 * outside a task on the same thread (a WAL first opened in a task outlives the run), and
 * temporary files (the temp database, statement journals, sorts) are always on the thread's
 * context: they live as long as the connection.
 * Use a connection on the thread that opened it (SQLite's default threading mode allows
 * that); connections opened in tasks, and databases ATTACHed in tasks, must be closed (or
 * DETACHed) before their scheduler is freed.
 * As with SQLite itself, connections do not cross fork(): a child process opens its own (the
 * VFS forgets the parent's lock records and thread context in the child). With the posix-aio
 * backend a child of a parent that did I/O through it cannot use it (asyncfs.h,
 * afs_ctx_new()): use another backend there.
 *
 * Locking is the unix VFS's protocol, through the file's descriptor: POSIX advisory locks
 * (fcntl F_SETLK) on the pending, reserved and shared bytes, so processes using this VFS and
 * processes using the unix VFS exclude each other correctly. POSIX locks belong to the
 * process, not to a descriptor: the VFS keeps one record per file (device and inode) for all
 * connections of the process, counts their locks there, and defers closing a descriptor while
 * another connection of the process holds a lock on the same file (closing any descriptor
 * would drop the process's locks), as the unix VFS does; as there, a new connection to the
 * file takes such a descriptor of its access mode rather than opening another (in WAL mode a
 * connection always holds a lock). Its records are its own: within one
 * process, do not open one database through both this VFS and the unix VFS (or another
 * VFS with POSIX locks). Their connections would not exclude each other (each VFS takes the
 * process's own locks for its own), and a commit of one can be lost to the other; across
 * processes the two exclude each other. When a lock is busy SQLite's busy
 * handler sleeps through xSleep: corio_sleep() inside a task (other tasks run), a plain sleep
 * elsewhere. A task that retries SQLITE_BUSY itself (one SQLite returns without calling the
 * busy handler, as in WAL mode) must let the holder run between tries (corio_yield() or
 * sqlite3_sleep()): a loop that does not suspend never lets another task of its scheduler
 * release the lock.
 *
 * Names, modes and owners are the unix VFS's: a path is made absolute with its symlinks
 * resolved (a database reached through a link has its journal, WAL and -shm beside the real
 * file; SQLITE_OPEN_NOFOLLOW refuses a link); a journal, WAL and -shm file get the database's
 * mode whatever the umask and, when the process is root, its owner; temporary files 0600; a
 * URI's "modeof=", "readonly_shm=" and "psow=" are honoured (a "modeof=" file that cannot
 * be read fails the open with SQLITE_IOERR_FSTAT; psow, powersafe overwrite, is on unless
 * "psow=0"). A -shm file that cannot be written (a read-only file system) is opened
 * read-only and SQLite reads the database without writing. A character device, which
 * asyncfs's positional calls refuse, is read and written with plain pread()/pwrite() on the
 * calling thread, as by the unix VFS: /dev/null opens as an empty database.
 *
 * WAL mode works through version-2 shared memory (xShmMap, xShmLock, xShmBarrier,
 * xShmUnmap): a "-shm" file next to the database, mapped MAP_SHARED (a page at a time where
 * pages are larger than SQLite's 32 KiB regions, as on 64 KiB-page kernels), with POSIX
 * locks on its lock bytes, compatible with the unix VFS. The shm file's own growth and locks
 * are plain system calls (they are rare and must not suspend while the VFS's lock is held).
 *
 * Not implemented: memory-mapped I/O (the VFS is version 2, without xFetch: PRAGMA
 * mmap_size returns no row and pages are read with pread), and the SIZE_HINT, CHUNK_SIZE and
 * TEMPFILENAME file controls. Temporary files go where the unix VFS puts them
 * (sqlite3_temp_directory, then SQLITE_TMPDIR, TMPDIR, /var/tmp, /usr/tmp, /tmp).
 *
 * Errors come back as SQLite codes: -ENOSPC from a write is SQLITE_FULL, other failures the
 * SQLITE_IOERR_* code of the method; sqlite3_system_errno() gives the failure's errno (the
 * VFS keeps the last one per thread: asyncfs returns errors and leaves errno alone).
 */
#ifndef ASYNCFS_SQLITE_H
#define ASYNCFS_SQLITE_H

#include "asyncfs.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Registers the asyncfs VFS with SQLite under `name` (NULL: "asyncfs"), as the default VFS
 * when make_default is non-zero. Registering the same name again is allowed: it makes it the
 * default when asked and otherwise changes nothing (a default stays the default). Calls
 * sqlite3_initialize(). Thread-safe.
 * Returns 0, -EINVAL (a name longer than 63 bytes), -ENOMEM, or -EIO when SQLite refuses
 * (sqlite3_initialize() or sqlite3_vfs_register() failed). Open databases with
 * sqlite3_open_v2(path, &db, flags, name) or, as the default, with any open call. */
AFS_API int afs_sqlite_vfs_register(const char *name, int make_default);

#ifdef __cplusplus
}
#endif
#endif /* ASYNCFS_SQLITE_H */
