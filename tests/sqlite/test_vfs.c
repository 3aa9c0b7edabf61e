/* The SQLite VFS (include/asyncfs_sqlite.h): SQLite's own behaviour through it (tables,
 * transactions, rollback, WAL, truncation, integrity_check), locking between connections of
 * one process and between processes (also against the unix VFS), and 32 connections in 32
 * corio tasks whose page reads share the phases' submissions. Run once per backend. */
#include "../common.h"

#include "platform.h"
#include <asyncfs_sqlite.h>
#include <corio.h>
#include <sqlite3.h>
#include "sql.h"
#include <fcntl.h>
#include <sys/wait.h>

static void v_setup(void)
{
    t_setup();
    cr_assert_eq(afs_sqlite_vfs_register(NULL, 0), 0);
}

#define T_VFS(name, ...)                                                                      \
    Test(sqlite_vfs, name, .init = v_setup, .fini = t_teardown, .timeout = 120, ##__VA_ARGS__)

static sqlite3 *db_open(const char *path, const char *vfs)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs);
    cr_assert_eq(rc, SQLITE_OK, "open %s: %s", path, db ? sqlite3_errmsg(db) : "?");
    sqlite3_busy_timeout(db, 20000);
    return db;
}

static void query_text(sqlite3 *db, const char *sql, char *out, size_t n)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s: %s", sql, sqlite3_errmsg(db));
    snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}

static void integrity_ok(sqlite3 *db)
{
    char res[256];
    query_text(db, "PRAGMA integrity_check", res, sizeof res);
    cr_assert_str_eq(res, "ok");
}

static void vfs_is_ours(sqlite3 *db)
{
    char *name = NULL;
    cr_assert_eq(sqlite3_file_control(db, "main", SQLITE_FCNTL_VFSNAME, &name), SQLITE_OK);
    cr_assert_str_eq(name, "asyncfs");
    sqlite3_free(name);
}

T_VFS(tables_transactions_and_rollback)
{
    sqlite3 *db = db_open(t_path("a.db"), "asyncfs");
    vfs_is_ours(db);
    exec_ok(db, "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)");
    exec_ok(db, "BEGIN");
    for (int i = 0; i < 5000; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "INSERT INTO t VALUES(%d, printf('%%0200d', %d))", i, i);
        exec_ok(db, sql);
    }
    exec_ok(db, "COMMIT");
    /* A rolled-back transaction leaves nothing (the journal's pages are written back). */
    exec_ok(db, "BEGIN; DELETE FROM t WHERE k % 2 = 0; UPDATE t SET v = 'x'; ROLLBACK");
    cr_assert_eq(query_int(db, "SELECT count(*) FROM t"), 5000);
    cr_assert_eq(query_int(db, "SELECT count(*) FROM t WHERE v = 'x'"), 0);
    integrity_ok(db);
    sqlite3_close(db);
    /* Reopened, through the unix VFS too: the file is a plain SQLite database. */
    db = db_open(t_path("a.db"), "unix");
    cr_assert_eq(query_int(db, "SELECT sum(k) FROM t"), 4999LL * 5000 / 2);
    integrity_ok(db);
    sqlite3_close(db);
}

T_VFS(vacuum_truncates_the_file)
{
    sqlite3 *db = db_open(t_path("v.db"), "asyncfs");
    exec_ok(db, "CREATE TABLE big(x BLOB); CREATE TABLE keep(y)");
    exec_ok(db, "INSERT INTO keep VALUES(42)");
    exec_ok(db, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000)"
                " INSERT INTO big SELECT randomblob(2000) FROM c");
    struct stat before, after;
    cr_assert_eq(stat(t_path("v.db"), &before), 0);
    exec_ok(db, "DROP TABLE big; VACUUM");
    cr_assert_eq(stat(t_path("v.db"), &after), 0);
    cr_assert_lt(after.st_size * 10, before.st_size, "%lld -> %lld",
                 (long long)before.st_size, (long long)after.st_size);
    cr_assert_eq(query_int(db, "SELECT y FROM keep"), 42);
    integrity_ok(db);
    sqlite3_close(db);
}

T_VFS(wal_mode_through_shared_memory)
{
    sqlite3 *a = db_open(t_path("w.db"), "asyncfs");
    char mode[32];
    query_text(a, "PRAGMA journal_mode=WAL", mode, sizeof mode);
    cr_assert_str_eq(mode, "wal");
    exec_ok(a, "CREATE TABLE t(k INTEGER PRIMARY KEY, v)");
    sqlite3 *b = db_open(t_path("w.db"), "asyncfs");
    /* A reader's snapshot stays while the writer commits (the wal-index in shared memory). */
    exec_ok(b, "BEGIN");
    cr_assert_eq(query_int(b, "SELECT count(*) FROM t"), 0);
    exec_ok(a, "BEGIN");
    for (int i = 0; i < 1000; i++) {
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT INTO t VALUES(%d, randomblob(100))", i);
        exec_ok(a, sql);
    }
    exec_ok(a, "COMMIT");
    cr_assert_eq(query_int(b, "SELECT count(*) FROM t"), 0);
    exec_ok(b, "COMMIT");
    cr_assert_eq(query_int(b, "SELECT count(*) FROM t"), 1000);
    struct stat st;
    cr_assert_eq(stat(t_path("w.db-shm"), &st), 0);
    cr_assert_eq(stat(t_path("w.db-wal"), &st), 0);
    cr_assert_gt(st.st_size, 0);
    exec_ok(a, "PRAGMA wal_checkpoint(TRUNCATE)");
    integrity_ok(b);
    sqlite3_close(b);
    sqlite3_close(a);
    /* The last connection checkpoints and deletes the WAL and -shm files. */
    cr_assert_neq(stat(t_path("w.db-wal"), &st), 0);
    sqlite3 *u = db_open(t_path("w.db"), "unix");
    cr_assert_eq(query_int(u, "SELECT count(*) FROM t"), 1000);
    sqlite3_close(u);
}

/* A database reached through a symlink has the journal of its real path, as with the unix
 * VFS: a process opening the real path must find a hot journal the other left. */
T_VFS(a_symlinked_database_keeps_its_journal_beside_the_real_file)
{
    sqlite3 *db = db_open(t_path("real.db"), "asyncfs");
    exec_ok(db, "CREATE TABLE t(x); INSERT INTO t VALUES(1)");
    sqlite3_close(db);
    cr_assert_eq(symlink("real.db", t_path("link.db")), 0);
    db = db_open(t_path("link.db"), "asyncfs");
    const char *name = sqlite3_db_filename(db, "main");
    size_t n = strlen(name);
    cr_assert(n > 8 && strcmp(name + n - 8, "/real.db") == 0, "main is %s", name);
    exec_ok(db, "PRAGMA journal_mode=PERSIST; INSERT INTO t VALUES(2)");
    struct stat st;
    cr_assert_eq(stat(t_path("real.db-journal"), &st), 0, "no journal beside real.db");
    cr_assert_neq(lstat(t_path("link.db-journal"), &st), 0, "a journal beside the link");
    sqlite3_close(db);
    /* SQLITE_OPEN_NOFOLLOW refuses the link. */
    db = NULL;
    int rc = sqlite3_open_v2(t_path("link.db"), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW,
                             "asyncfs");
    cr_assert_eq(rc, SQLITE_CANTOPEN);
    cr_assert_eq(sqlite3_extended_errcode(db), SQLITE_CANTOPEN_SYMLINK);
    sqlite3_close(db);
}

/* A journal, WAL and -shm file take their database's mode, whatever the umask (a private
 * database stays private), and for root its owner (who must still be able to open them). */
T_VFS(side_files_take_the_databases_mode_and_owner)
{
    mode_t old = umask(022);
    sqlite3 *db = db_open(t_path("p.db"), "asyncfs");
    exec_ok(db, "CREATE TABLE t(x)");
    cr_assert_eq(chmod(t_path("p.db"), 0600), 0);
    int root = geteuid() == 0;
    if (root)
        cr_assert_eq(chown(t_path("p.db"), 12345, 12346), 0);
    exec_ok(db, "PRAGMA journal_mode=PERSIST; INSERT INTO t VALUES(1)");
    struct stat st;
    cr_assert_eq(stat(t_path("p.db-journal"), &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "p.db-journal: mode %o", st.st_mode & 0777);
    if (root)
        cr_assert(st.st_uid == 12345 && st.st_gid == 12346, "p.db-journal: owner %d:%d",
                  (int)st.st_uid, (int)st.st_gid);
    char mode[32];
    query_text(db, "PRAGMA journal_mode=WAL", mode, sizeof mode);
    cr_assert_str_eq(mode, "wal");
    exec_ok(db, "INSERT INTO t VALUES(2)");
    const char *side[] = {"p.db-wal", "p.db-shm"};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(stat(t_path(side[i]), &st), 0, "%s", side[i]);
        cr_assert_eq(st.st_mode & 0777, 0600, "%s: mode %o", side[i], st.st_mode & 0777);
        if (root)
            cr_assert(st.st_uid == 12345 && st.st_gid == 12346, "%s: owner %d:%d", side[i],
                      (int)st.st_uid, (int)st.st_gid);
    }
    sqlite3_close(db);
    umask(old);
}

#ifdef __linux__
#include <sys/mount.h>
/* A WAL database whose -wal and -shm are on a read-only file system is read, as with the
 * unix VFS (the -shm opened read-only); writes get SQLITE_READONLY. Needs root for a tmpfs. */
T_VFS(a_wal_database_on_a_read_only_file_system_is_read)
{
    const char *m = t_path("m");
    cr_assert_eq(mkdir(m, 0755), 0);
    if (mount("tmpfs", m, "tmpfs", 0, "size=4m") != 0)
        cr_skip_test("cannot mount a tmpfs: %s", strerror(errno));
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/w.db", m);
    sqlite3 *db = db_open(path, "unix");
    char mode[32];
    query_text(db, "PRAGMA journal_mode=WAL", mode, sizeof mode);
    exec_ok(db, "CREATE TABLE t(x); INSERT INTO t VALUES(1), (2)");
    int one = 1;
    sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &one);
    sqlite3_close(db);
    int ro = mount(NULL, m, NULL, MS_REMOUNT | MS_RDONLY, NULL);
    int read_rw = -1, write_rw = -1, read_ro = -1, count = -1;
    if (ro == 0) {
        sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, "asyncfs");
        sqlite3_stmt *st = NULL;
        read_rw = sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL);
        if (read_rw == SQLITE_OK && (read_rw = sqlite3_step(st)) == SQLITE_ROW)
            count = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        write_rw = sqlite3_exec(db, "INSERT INTO t VALUES(3)", NULL, NULL, NULL);
        sqlite3_close(db);
        sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, "asyncfs");
        read_ro = sqlite3_exec(db, "SELECT count(*) FROM t", NULL, NULL, NULL);
        sqlite3_close(db);
    }
    umount2(m, MNT_DETACH);
    cr_assert_eq(ro, 0, "remount read-only");
    cr_assert_eq(read_rw, SQLITE_ROW, "read: %s", sqlite3_errstr(read_rw));
    cr_assert_eq(count, 2);
    cr_assert_eq(write_rw, SQLITE_READONLY, "write: %s", sqlite3_errstr(write_rw));
    cr_assert_eq(read_ro, SQLITE_OK, "read-only open: %s", sqlite3_errstr(read_ro));
}
#endif

/* A child process runs fn and exits with its result (0 = success). */
static pid_t spawn_child(int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        _exit(fn(arg));
    return pid;
}

static int child_status(pid_t pid)
{
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "child died (status %d)", st);
    return WEXITSTATUS(st);
}

struct try_lock {
    const char *path, *vfs, *sql;
};

/* Exit 1 when sql gets SQLITE_BUSY (no waiting), 0 when it succeeds, 2 otherwise. */
static int child_try(void *arg)
{
    struct try_lock *tl = arg;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(tl->path, &db, SQLITE_OPEN_READWRITE, tl->vfs) != SQLITE_OK)
        return 2;
    int rc = sqlite3_exec(db, tl->sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc == SQLITE_BUSY ? 1 : rc == SQLITE_OK ? 0 : 2;
}

static int try_in_child(const char *path, const char *vfs, const char *sql)
{
    struct try_lock tl = {path, vfs, sql};
    return child_status(spawn_child(child_try, &tl));
}

T_VFS(locks_exclude_other_processes_on_either_vfs)
{
    const char *path = t_path("l.db");
    sqlite3 *db = db_open(path, "asyncfs");
    exec_ok(db, "CREATE TABLE t(x); INSERT INTO t VALUES(1)");
    /* A write transaction here: another process's writer is refused, its reader is not. */
    exec_ok(db, "BEGIN IMMEDIATE; INSERT INTO t VALUES(2)");
    cr_assert_eq(try_in_child(path, "asyncfs", "BEGIN IMMEDIATE; COMMIT"), 1);
    cr_assert_eq(try_in_child(path, "unix", "BEGIN IMMEDIATE; COMMIT"), 1);
    cr_assert_eq(try_in_child(path, "unix", "SELECT count(*) FROM t"), 0);
    exec_ok(db, "COMMIT");
    cr_assert_eq(try_in_child(path, "asyncfs", "BEGIN IMMEDIATE; INSERT INTO t VALUES(3); COMMIT"),
                 0);
    /* A read transaction here: a writer elsewhere may not commit. */
    exec_ok(db, "BEGIN");
    cr_assert_eq(query_int(db, "SELECT count(*) FROM t"), 3);
    cr_assert_eq(try_in_child(path, "unix", "BEGIN EXCLUSIVE; COMMIT"), 1);
    cr_assert_eq(try_in_child(path, "asyncfs", "BEGIN EXCLUSIVE; COMMIT"), 1);
    exec_ok(db, "COMMIT");
    sqlite3_close(db);
}

T_VFS(closing_one_connection_keeps_the_others_locks)
{
    const char *path = t_path("c.db");
    sqlite3 *a = db_open(path, "asyncfs");
    exec_ok(a, "CREATE TABLE t(x); INSERT INTO t VALUES(1)");
    exec_ok(a, "BEGIN");
    cr_assert_eq(query_int(a, "SELECT count(*) FROM t"), 1); /* a holds SHARED */
    /* b opens the same file, reads and closes: its descriptor's close would drop every POSIX
     * lock of the process on the file, a's included. */
    sqlite3 *b = db_open(path, "asyncfs");
    cr_assert_eq(query_int(b, "SELECT count(*) FROM t"), 1);
    sqlite3_close(b);
    cr_assert_eq(try_in_child(path, "unix", "BEGIN EXCLUSIVE; COMMIT"), 1,
                 "a's shared lock was lost when b closed");
    exec_ok(a, "COMMIT");
    cr_assert_eq(try_in_child(path, "unix", "BEGIN EXCLUSIVE; COMMIT"), 0);
    sqlite3_close(a);
}

/* The same across the schedulers of a runtime: b's connection, in a task of scheduler 1,
 * closes while a (scheduler 0) holds its lock, and a's commit, on scheduler 0's thread,
 * closes b's descriptor. That descriptor's file was of scheduler 1's context: it left that
 * context at b's close, on its own thread, and the commit closes the descriptor alone
 * (before, the commit called afs_close() on the other scheduler's context from this thread:
 * a race with that scheduler, which the library now refuses with an abort). No descriptor
 * is left open. */
static const char *rt_db;

static int rt_other_conn(struct corio_task *t, void *arg)
{
    (void)t;
    sqlite3 *b = NULL;
    if (sqlite3_open_v2(rt_db, &b, SQLITE_OPEN_READWRITE, "asyncfs") != SQLITE_OK)
        return -EIO;
    sqlite3_stmt *st;
    int n = -1;
    if (sqlite3_prepare_v2(b, "SELECT count(*) FROM t", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    *(int *)arg = n;
    return sqlite3_close(b) == SQLITE_OK ? 0 : -EIO;
}

static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

static void rt_lock_root(struct corio_task *t, void *arg)
{
    int *fds = arg;
    sqlite3 *a = db_open(rt_db, "asyncfs");
    exec_ok(a, "CREATE TABLE t(x); INSERT INTO t VALUES(1)");
    exec_ok(a, "BEGIN");
    cr_assert_eq(query_int(a, "SELECT count(*) FROM t"), 1); /* a holds SHARED */
    int seen = 0;
    struct corio_future f;
    cr_assert_eq(corio_spawn_on(t, 1, rt_other_conn, &seen, &f), 0);
    cr_assert_eq(corio_future_await(t, &f, NULL), 0);
    cr_assert_eq(seen, 1);
    fds[0] = open_fds(); /* b's descriptor still open: a's lock would go with its close */
    exec_ok(a, "COMMIT");
    fds[1] = open_fds();
    sqlite3_close(a);
}

T_VFS(a_connection_closed_on_another_scheduler_while_one_here_holds_the_lock)
{
    rt_db = t_path("rt.db");
    struct corio_rt_config cfg;
    corio_rt_config_default(&cfg);
    cfg.schedulers = 2;
    struct corio_rt *rt;
    cr_assert_eq(corio_rt_new(&rt, &cfg), 0);
    int fds[2] = {0, 0};
    cr_assert_eq(corio_rt_run(rt, rt_lock_root, fds), 0);
    corio_rt_free(rt);
    cr_assert_eq(fds[1], fds[0] - 1, "descriptors open before the commit %d, after %d", fds[0],
                 fds[1]);
}

/* In WAL mode a connection keeps its shared lock: the descriptors of connections closed
 * meanwhile wait for it, and a new connection takes one of them (the unix VFS's reuse),
 * of its own access mode, so that short-lived connections do not pile up descriptors. */
T_VFS(short_lived_connections_beside_a_long_lived_one_reuse_descriptors)
{
    const char *path = t_path("fd.db");
    sqlite3 *a = db_open(path, "asyncfs");
    exec_ok(a, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1)");
    cr_assert_eq(query_int(a, "SELECT count(*) FROM t"), 1);
    sqlite3 *b = db_open(path, "asyncfs");
    cr_assert_eq(query_int(b, "SELECT count(*) FROM t"), 1);
    sqlite3_close(b);
    int before = open_fds();
    for (int i = 0; i < 200; i++) {
        b = db_open(path, "asyncfs");
        cr_assert_eq(query_int(b, "SELECT count(*) FROM t"), 1);
        sqlite3_close(b);
    }
    cr_assert_leq(open_fds(), before, "descriptors %d before, %d after 200 connections",
                  before, open_fds());
    /* A read-only connection's descriptor is not one a writer can take. */
    sqlite3 *ro = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &ro, SQLITE_OPEN_READONLY, "asyncfs"), SQLITE_OK);
    cr_assert_eq(query_int(ro, "SELECT count(*) FROM t"), 1);
    sqlite3_close(ro);
    b = db_open(path, "asyncfs");
    exec_ok(b, "INSERT INTO t VALUES(2)");
    sqlite3_close(b);
    cr_assert_eq(query_int(a, "SELECT count(*) FROM t"), 2);
    integrity_ok(a);
    sqlite3_close(a);
}

T_VFS(connections_of_one_process_exclude_each_other)
{
    const char *path = t_path("p.db");
    sqlite3 *a = db_open(path, "asyncfs");
    sqlite3 *b = db_open(path, "asyncfs");
    sqlite3_busy_timeout(b, 0);
    exec_ok(a, "CREATE TABLE t(x)");
    exec_ok(a, "BEGIN IMMEDIATE; INSERT INTO t VALUES(1)");
    cr_assert_eq(sqlite3_exec(b, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_BUSY);
    cr_assert_eq(query_int(b, "SELECT count(*) FROM t"), 0);
    exec_ok(a, "COMMIT");
    exec_ok(b, "BEGIN IMMEDIATE; INSERT INTO t VALUES(2); COMMIT");
    cr_assert_eq(query_int(a, "SELECT count(*) FROM t"), 2);
    sqlite3_close(b);
    sqlite3_close(a);
}

struct writer {
    const char *path;
    int         id, rows;
    int         wal;
};

/* Inserts rows one transaction each, reading the running total inside the transaction: with
 * broken locking two writers read the same total and the final check fails. */
static int child_writer(void *arg)
{
    struct writer *w = arg;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(w->path, &db, SQLITE_OPEN_READWRITE, "asyncfs") != SQLITE_OK)
        return 2;
    sqlite3_busy_timeout(db, 60000);
    /* Locking is under test, not durability: no fsync per commit. */
    sqlite3_exec(db, "PRAGMA synchronous=OFF", NULL, NULL, NULL);
    for (int i = 0; i < w->rows; i++) {
        char sql[160];
        snprintf(sql, sizeof sql,
                 "BEGIN IMMEDIATE; INSERT INTO t VALUES(%d, %d, (SELECT coalesce(max(total), 0) "
                 "+ 1 FROM t)); COMMIT",
                 w->id, i);
        int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            fprintf(stderr, "writer %d: %s\n", w->id, sqlite3_errmsg(db));
            sqlite3_close(db);
            return 3;
        }
    }
    sqlite3_close(db);
    return 0;
}

static void two_processes(int wal)
{
    const char *path = t_path("two.db");
    sqlite3 *db = db_open(path, "asyncfs");
    if (wal)
        exec_ok(db, "PRAGMA journal_mode=WAL");
    exec_ok(db, "CREATE TABLE t(who, i, total UNIQUE)");
    sqlite3_close(db);
    struct writer w1 = {path, 1, 200, wal}, w2 = {path, 2, 200, wal};
    pid_t p1 = spawn_child(child_writer, &w1);
    pid_t p2 = spawn_child(child_writer, &w2);
    cr_assert_eq(child_status(p1), 0);
    cr_assert_eq(child_status(p2), 0);
    db = db_open(path, "asyncfs");
    cr_assert_eq(query_int(db, "SELECT count(*) FROM t"), 400);
    cr_assert_eq(query_int(db, "SELECT max(total) FROM t"), 400);
    integrity_ok(db);
    sqlite3_close(db);
}

T_VFS(two_processes_write_one_database)
{
    two_processes(0);
}

T_VFS(two_processes_write_one_database_in_wal_mode)
{
    two_processes(1);
}

/* ---- 32 connections in 32 corio tasks ---- */

struct co_shared {
    const char *path;
    int         failures;
    int         lookups_ok;
};

struct co_arg {
    struct co_shared *sh;
    int               id;
};

#define CO_TASKS 32
#define CO_ROWS  4000

static void co_conn(struct corio_task *t, void *p)
{
    struct co_arg *a = p;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(a->sh->path, &db, SQLITE_OPEN_READWRITE, "asyncfs") != SQLITE_OK) {
        a->sh->failures++;
        return;
    }
    sqlite3_busy_timeout(db, 60000);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT v FROM t WHERE k = ?", -1, &st, NULL) != SQLITE_OK) {
        a->sh->failures++;
        sqlite3_close(db);
        return;
    }
    for (int i = 0; i < 200; i++) {
        int k = (a->id * 7919 + i * 104729) % CO_ROWS;
        sqlite3_bind_int(st, 1, k);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == k * 3)
            a->sh->lookups_ok++;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    /* Writers take turns through the locks (busy handler: corio_sleep). */
    for (int i = 0; i < 5; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "BEGIN IMMEDIATE; INSERT INTO w VALUES(%d, %d); COMMIT",
                 a->id, i);
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
            fprintf(stderr, "task %d: %s\n", a->id, sqlite3_errmsg(db));
            a->sh->failures++;
        }
    }
    sqlite3_close(db);
}

static void co_root(struct corio_task *t, void *p)
{
    struct co_shared *sh = p;
    static struct co_arg args[CO_TASKS];
    for (int i = 0; i < CO_TASKS; i++) {
        args[i] = (struct co_arg){sh, i};
        cr_assert_eq(corio_spawn(t, co_conn, &args[i], NULL), 0);
    }
    corio_wait(t);
}

T_VFS(thirty_two_connections_in_thirty_two_tasks)
{
    const char *path = t_path("co.db");
    sqlite3 *db = db_open(path, "asyncfs");
    exec_ok(db, "CREATE TABLE t(k INTEGER PRIMARY KEY, v, pad); CREATE TABLE w(who, i)");
    exec_ok(db, "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < 3999)"
                " INSERT INTO t SELECT i, i * 3, randomblob(300) FROM c");
    sqlite3_close(db);

    struct afs_config acfg;
    afs_config_default(&acfg);
    acfg.sync_threshold = 0; /* every page read joins the phase's batch */
    t_ctx = t_ctx_cfg(&acfg);
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    struct corio_sched *s;
    cr_assert_eq(corio_sched_new(&s, &cfg), 0);
    struct co_shared sh = {path, 0, 0};
    cr_assert_eq(corio_sched_run(s, co_root, &sh), 0);
    struct corio_stats stats;
    corio_sched_stats(s, &stats);
    corio_sched_free(s);
    cr_assert_eq(sh.failures, 0);
    cr_assert_eq(sh.lookups_ok, CO_TASKS * 200);
    /* The connections' reads went through the scheduler's context, many per submission. */
    cr_assert_gt(stats.ios, 1000, "ios %llu", (unsigned long long)stats.ios);
    if (!strcmp(afs_ctx_backend(t_ctx), "io_uring"))
        cr_assert_lt(stats.submits * 4, stats.ios, "submits %llu for %llu ios",
                     (unsigned long long)stats.submits, (unsigned long long)stats.ios);

    db = db_open(path, "asyncfs");
    cr_assert_eq(query_int(db, "SELECT count(*) FROM w"), CO_TASKS * 5);
    integrity_ok(db);
    sqlite3_close(db);
}

/* ---- A full disk: SQLITE_FULL, and the database stays as it was ---- */

static struct afs__syscalls saved_sys;

static ssize_t enospc_pwrite(afs__fd_t fd, const void *buf, size_t len, uint64_t off)
{
    return -ENOSPC;
}

T_VFS(enospc_is_sqlite_full_and_the_database_stays_intact)
{
    const char *path = t_path("full.db");
    sqlite3 *db = db_open(path, "asyncfs");
    exec_ok(db, "CREATE TABLE t(x); INSERT INTO t VALUES(1), (2), (3)");
    /* Page writes are at most the sync threshold: they run inline, through the system-call
     * table, on every backend. */
    saved_sys = afs__sys;
    afs__sys.pwrite = enospc_pwrite;
    int rc = sqlite3_exec(db, "BEGIN; INSERT INTO t SELECT randomblob(3000) FROM t; "
                              "INSERT INTO t SELECT randomblob(3000) FROM t; COMMIT",
                          NULL, NULL, NULL);
    afs__sys = saved_sys;
    cr_assert_eq(rc, SQLITE_FULL, "%s", sqlite3_errmsg(db));
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    cr_assert_eq(query_int(db, "SELECT count(*) FROM t"), 3);
    integrity_ok(db);
    sqlite3_close(db);
    db = db_open(path, "unix");
    cr_assert_eq(query_int(db, "SELECT sum(x) FROM t"), 6);
    integrity_ok(db);
    sqlite3_close(db);
}

/* ---- sqlite3_system_errno(): the errno of the failure, wherever the call ran ---- */

static ssize_t eio_pwrite(afs__fd_t fd, const void *buf, size_t len, uint64_t off)
{
    return -EIO;
}

/* A directory opened as a database inside a task: the open ran as an op (io_uring, a pool
 * thread), not on the task's thread. */
static void open_a_directory_in_a_task(struct corio_task *t, void *arg)
{
    (void)t;
    sqlite3 *db = NULL;
    errno = 0;
    int *out = arg;
    out[0] = sqlite3_open_v2(t_path("dir.db"), &db, SQLITE_OPEN_READWRITE, "asyncfs");
    out[1] = sqlite3_system_errno(db);
    sqlite3_close(db);
}

T_VFS(system_errno_is_the_failures_errno)
{
    /* A page write that fails inline: asyncfs returns -EIO and leaves errno alone. */
    sqlite3 *db = db_open(t_path("e.db"), "asyncfs");
    exec_ok(db, "CREATE TABLE t(x); INSERT INTO t VALUES(1)");
    saved_sys = afs__sys;
    afs__sys.pwrite = eio_pwrite;
    errno = 0;
    int rc = sqlite3_exec(db, "INSERT INTO t VALUES(2)", NULL, NULL, NULL);
    int sys = sqlite3_system_errno(db);
    afs__sys = saved_sys;
    cr_assert_eq(rc & 0xff, SQLITE_IOERR, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sys, EIO, "sqlite3_system_errno %d", sys);
    sqlite3_close(db);

    cr_assert_eq(mkdir(t_path("dir.db"), 0755), 0);
    int got[2] = {-1, -1};
    cr_assert_eq(corio_run(open_a_directory_in_a_task, got), 0);
    cr_assert_eq(got[0], SQLITE_CANTOPEN);
    cr_assert_eq(got[1], EISDIR, "sqlite3_system_errno %d", got[1]);
}

/* ---- Where side files go, and on which context ---- */

/* A connection opened outside any task and then used in one: its WAL, first opened inside
 * the task, stays on the connection's context (the scheduler's is freed when the run ends). */
static sqlite3 *outside_db;

static void write_in_a_task(struct corio_task *t, void *arg)
{
    (void)t;
    (void)arg;
    exec_ok(outside_db, "INSERT INTO t VALUES(2)");
}

T_VFS(a_connection_opened_outside_tasks_outlives_a_run_in_wal_mode)
{
    const char *path = t_path("w.db");
    sqlite3 *db = db_open(path, "asyncfs");
    exec_ok(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1)");
    sqlite3_close(db);
    outside_db = db_open(path, "asyncfs");
    cr_assert_eq(corio_run(write_in_a_task, NULL), 0);
    exec_ok(outside_db, "INSERT INTO t VALUES(3)");
    cr_assert_eq(query_int(outside_db, "SELECT sum(x) FROM t"), 6);
    integrity_ok(outside_db);
    cr_assert_eq(sqlite3_close(outside_db), SQLITE_OK);
}

/* The same connection's temporary database, first written inside a task: it lives as long
 * as the connection, not as the task's scheduler. */
static void temp_in_a_task(struct corio_task *t, void *arg)
{
    (void)t;
    (void)arg;
    exec_ok(outside_db, "PRAGMA temp_store=FILE; CREATE TEMP TABLE tt(x); "
                        "PRAGMA temp.cache_size=10; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
                        "SELECT i + 1 FROM n WHERE i < 5000) INSERT INTO tt SELECT "
                        "randomblob(100) FROM n");
}

T_VFS(a_temporary_table_first_written_in_a_task_outlives_the_run)
{
    outside_db = db_open(t_path("tt.db"), "asyncfs");
    exec_ok(outside_db, "CREATE TABLE t(x); INSERT INTO t VALUES(1)");
    cr_assert_eq(corio_run(temp_in_a_task, NULL), 0);
    cr_assert_eq(query_int(outside_db, "SELECT count(*) FROM tt"), 5000);
    exec_ok(outside_db, "INSERT INTO tt SELECT x FROM tt");
    cr_assert_eq(query_int(outside_db, "SELECT count(*) FROM tt"), 10000);
    cr_assert_eq(sqlite3_close(outside_db), SQLITE_OK);
}

/* Registered under another name, the VFS says that name (SQLITE_FCNTL_VFSNAME). */
T_VFS(the_vfs_answers_to_the_name_it_was_registered_under)
{
    cr_assert_eq(afs_sqlite_vfs_register("asyncfs-other", 0), 0);
    sqlite3 *db = db_open(t_path("n.db"), "asyncfs-other");
    exec_ok(db, "CREATE TABLE t(x)");
    char *name = NULL;
    cr_assert_eq(sqlite3_file_control(db, "main", SQLITE_FCNTL_VFSNAME, &name), SQLITE_OK);
    cr_assert_str_eq(name, "asyncfs-other");
    sqlite3_free(name);
    sqlite3_close(db);
}

/* "psow=0" in a URI turns powersafe overwrite off, as with the unix VFS (on by default). */
static int psow_of(sqlite3 *db)
{
    int v = -1;
    cr_assert_eq(sqlite3_file_control(db, "main", SQLITE_FCNTL_POWERSAFE_OVERWRITE, &v),
                 SQLITE_OK);
    return v;
}

T_VFS(the_psow_uri_parameter_is_honoured)
{
    char uri[PATH_MAX + 32];
    const char *vfs[] = {"unix", "asyncfs"};
    for (int i = 0; i < 2; i++) {
        sqlite3 *db = NULL;
        snprintf(uri, sizeof uri, "file:%s?psow=0", t_path("psow.db"));
        cr_assert_eq(sqlite3_open_v2(uri, &db,
                                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                                     vfs[i]),
                     SQLITE_OK);
        exec_ok(db, "CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES(1)");
        cr_assert_eq(psow_of(db), 0, "%s: psow=0 ignored", vfs[i]);
        sqlite3_close(db);
        db = db_open(t_path("psow.db"), vfs[i]);
        cr_assert_eq(psow_of(db), 1, "%s: psow not on by default", vfs[i]);
        sqlite3_close(db);
    }
}

/* A "modeof=" file that cannot be read fails the open with SQLITE_IOERR_FSTAT, as with the
 * unix VFS: the database is not made with a mode nobody asked for. (The unix VFS is not
 * asked here: its failed open leaks a small allocation, which LeakSanitizer reports.) */
T_VFS(a_missing_modeof_file_fails_the_open)
{
    char uri[PATH_MAX + 64];
    snprintf(uri, sizeof uri, "file:%s?modeof=%s", t_path("m.db"), t_path("missing"));
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                             "asyncfs");
    int ext = sqlite3_extended_errcode(db);
    int err = sqlite3_system_errno(db);
    sqlite3_close(db);
    cr_assert_eq(rc, SQLITE_IOERR, "open: %s", sqlite3_errstr(rc));
    cr_assert_eq(ext, SQLITE_IOERR_FSTAT, "%d", ext);
    cr_assert_eq(err, ENOENT, "sqlite3_system_errno %d", err);
    struct stat st;
    cr_assert_neq(stat(t_path("m.db"), &st), 0, "the database was made");
}

/* /dev/null opens as an empty database, as with the unix VFS (asyncfs's own positional
 * calls refuse a character device; the VFS reads it with pread). */
T_VFS(dev_null_is_an_empty_database)
{
    const char *vfs[] = {"unix", "asyncfs"};
    for (int i = 0; i < 2; i++) {
        for (int ro = 0; ro < 2; ro++) {
            sqlite3 *db = NULL;
            int rc = sqlite3_open_v2("/dev/null", &db,
                                     ro ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE, vfs[i]);
            cr_assert_eq(rc, SQLITE_OK, "%s: open %s", vfs[i], sqlite3_errstr(rc));
            sqlite3_stmt *st = NULL;
            rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &st, NULL);
            if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
            int n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
            sqlite3_finalize(st);
            cr_assert_eq(rc, SQLITE_ROW, "%s%s: %s", vfs[i], ro ? " (read-only)" : "",
                         sqlite3_errmsg(db));
            cr_assert_eq(n, 0);
            sqlite3_close(db);
        }
    }
}

/* Registering again without make_default leaves the default as it was, the VFS included. */
T_VFS(registering_again_keeps_the_default)
{
    sqlite3_vfs *before = sqlite3_vfs_find(NULL);
    cr_assert_eq(afs_sqlite_vfs_register("asyncfs-default", 1), 0);
    cr_assert_str_eq(sqlite3_vfs_find(NULL)->zName, "asyncfs-default");
    cr_assert_eq(afs_sqlite_vfs_register("asyncfs-default", 0), 0);
    cr_assert_str_eq(sqlite3_vfs_find(NULL)->zName, "asyncfs-default");
    cr_assert_eq(afs_sqlite_vfs_register(NULL, 0), 0);
    cr_assert_str_eq(sqlite3_vfs_find(NULL)->zName, "asyncfs-default");
    cr_assert_eq(sqlite3_vfs_register(before, 1), SQLITE_OK);
    cr_assert_eq(sqlite3_vfs_find(NULL), before);
}

/* Forked children each opening their own connection (as SQLite asks) draw their own random
 * numbers (randomblob(), temporary names, WAL salts), as with the unix VFS. */
static int random_child(void *arg)
{
    int *fd = arg;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(t_path("r.db"), &db, SQLITE_OPEN_READWRITE, "asyncfs") != SQLITE_OK)
        return 2;
    sqlite3_stmt *st;
    int ok = sqlite3_prepare_v2(db, "SELECT randomblob(8)", -1, &st, NULL) == SQLITE_OK &&
             sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 8 &&
             write(*fd, sqlite3_column_blob(st, 0), 8) == 8;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return ok ? 0 : 3;
}

T_VFS(forked_children_draw_their_own_random_numbers)
{
    sqlite3 *db = db_open(t_path("r.db"), "asyncfs");
    exec_ok(db, "CREATE TABLE t(x); SELECT randomblob(8)");
    sqlite3_close(db);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    unsigned char got[3][8];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(child_status(spawn_child(random_child, &p[1])), 0);
        cr_assert_eq(read(p[0], got[i], 8), 8);
    }
    close(p[0]);
    close(p[1]);
    cr_assert(memcmp(got[0], got[1], 8) != 0 && memcmp(got[1], got[2], 8) != 0 &&
                  memcmp(got[0], got[2], 8) != 0,
              "two children drew the same randomblob(8)");
}

#ifdef __linux__
/* PRAGMA temp_store_directory (sqlite3_temp_directory) comes first, as in the unix VFS. */
T_VFS(temporary_files_go_to_the_temp_store_directory)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", t_path("tmpdir"));
    cr_assert_eq(mkdir(dir, 0700), 0);
    char *saved = sqlite3_temp_directory;
    sqlite3_temp_directory = sqlite3_mprintf("%s", dir);
    sqlite3 *db = db_open(":memory:", "asyncfs");
    exec_ok(db, "PRAGMA temp_store=FILE; PRAGMA cache_size=10; CREATE TEMP TABLE t(x);"
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < "
                "20000) INSERT INTO t SELECT randomblob(100) FROM n");
    /* The temporary file is unlinked at once: look for it among the open descriptors. */
    int found = 0;
    for (int fd = 0; fd < 1024 && !found; fd++) {
        char link[64], target[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        found = strncmp(target, dir, strlen(dir)) == 0 && strstr(target, "/etilqs_") != NULL;
    }
    sqlite3_close(db);
    sqlite3_free(sqlite3_temp_directory);
    sqlite3_temp_directory = saved;
    cr_assert(found, "no temporary file open in %s", dir);
}

/* A journal that cannot be made in a read-only directory: SQLITE_READONLY_DIRECTORY, as the
 * unix VFS says. Checked as an unprivileged user (root writes anywhere). */
static int readonly_dir_child(void *arg)
{
    const char *path = arg;
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
        return 10;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, "asyncfs") != SQLITE_OK)
        return 11;
    sqlite3_extended_result_codes(db, 1);
    int rc = sqlite3_exec(db, "INSERT INTO t VALUES(1)", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc == SQLITE_READONLY_DIRECTORY ? 0 : rc == SQLITE_CANTOPEN ? 12 : 13;
}

T_VFS(a_journal_in_a_read_only_directory_is_readonly_directory)
{
    const char *dir = t_path("ro");
    cr_assert_eq(mkdir(dir, 0755), 0);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/x.db", dir);
    sqlite3 *db = db_open(path, "unix");
    exec_ok(db, "CREATE TABLE t(x)");
    sqlite3_close(db);
    if (geteuid() == 0) {
        cr_assert_eq(chmod(t_dir, 0711), 0); /* the test's own directory, for the user */
        cr_assert_eq(chown(path, 65534, 65534), 0);
    }
    else
        cr_assert_eq(chmod(dir, 0555), 0);
    int st = child_status(spawn_child(readonly_dir_child, path));
    chmod(dir, 0755);
    cr_assert_eq(st, 0, "child status %d (12: SQLITE_CANTOPEN)", st);
}
#endif
