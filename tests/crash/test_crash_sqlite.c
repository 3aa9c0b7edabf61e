/* SQLite through the asyncfs VFS (include/asyncfs_sqlite.h) under the crash simulator: a
 * database written by transactions in a corio task whose scheduler's context is in crash
 * mode, cut at 1,000 seeded points (rollback journal and WAL, both with synchronous=FULL),
 * every unsynced write kept, dropped or torn; every other run also with names durable only
 * once their directory is synced (AFS_CRASH_STRICT_DIRS; the rollback journal's runs then
 * with synchronous=EXTRA, which syncs the directory after the journal's unlink). After each reboot the database, opened with
 * SQLite's own unix VFS, passes PRAGMA integrity_check, holds every transaction whose COMMIT
 * returned SQLITE_OK, and holds the transaction that was in flight whole or not at all. */
#include "../common.h"

#include <asyncfs_crash.h>
#include <asyncfs_sqlite.h>
#include <corio.h>

#include "crash_common.h"
#include <sqlite3.h>

#define TXNS_PER_RUN 6
#define MAX_TXNS 100000

/* Rows of transaction n: how many, and each one's blob (length and bytes from n and i). */
static int rows_of(int64_t n)
{
    return 1 + (int)(mix((uint64_t)n) % 12);
}

static void blob_of(int64_t n, int i, unsigned char *buf, int *len)
{
    *len = 16 + (int)(mix((uint64_t)n * 131 + (uint64_t)i) % 700);
    for (int k = 0; k < *len; k++)
        buf[k] = (unsigned char)(mix((uint64_t)n ^ ((uint64_t)i << 24) ^ ((uint64_t)k << 40)) >> 9);
}

struct run {
    const char *path;
    bool        wal;
    bool        extra;     /* synchronous=EXTRA: the rollback journal's unlink synced too */
    int64_t     next;      /* the first transaction number of this run */
    int64_t     committed; /* transactions whose COMMIT returned SQLITE_OK, this run */
    bool        opened;
};

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* The workload, in a task: transactions of inserts and a counter update; stops at the first
 * error (the cut). */
static void workload(struct corio_task *t, void *arg)
{
    (void)t;
    struct run *r = arg;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(r->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "afs-crash") !=
        SQLITE_OK)
        goto out;
    r->opened = true;
    sqlite3_busy_timeout(db, 0);
    if (exec(db, r->wal ? "PRAGMA journal_mode=WAL" : "PRAGMA journal_mode=DELETE") ||
        exec(db, r->extra ? "PRAGMA synchronous=EXTRA" : "PRAGMA synchronous=FULL") ||
        exec(db, "CREATE TABLE IF NOT EXISTS t(txn INTEGER, i INTEGER, v BLOB,"
                 " PRIMARY KEY(txn, i));"
                 "CREATE TABLE IF NOT EXISTS meta(k INTEGER PRIMARY KEY, n INTEGER)"))
        goto out;
    sqlite3_stmt *ins = NULL;
    if (sqlite3_prepare_v2(db, "INSERT INTO t VALUES(?, ?, ?)", -1, &ins, NULL) != SQLITE_OK)
        goto out;
    unsigned char blob[1024];
    for (int64_t n = r->next; n < r->next + TXNS_PER_RUN; n++) {
        if (exec(db, "BEGIN"))
            break;
        bool ok = true;
        for (int i = 0; i < rows_of(n) && ok; i++) {
            int len;
            blob_of(n, i, blob, &len);
            sqlite3_bind_int64(ins, 1, n);
            sqlite3_bind_int(ins, 2, i);
            sqlite3_bind_blob(ins, 3, blob, len, SQLITE_STATIC);
            ok = sqlite3_step(ins) == SQLITE_DONE;
            sqlite3_reset(ins);
        }
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO meta VALUES(1, %lld)", (long long)n);
        if (!ok || exec(db, sql) || exec(db, "COMMIT")) {
            exec(db, "ROLLBACK");
            break;
        }
        r->committed = n - r->next + 1;
    }
    sqlite3_finalize(ins);
out:
    sqlite3_close_v2(db);
}

/* After the reboot, with SQLite's own VFS: integrity, every committed transaction whole, the
 * one in flight whole or absent, nothing else. Returns the transactions present. */
static int64_t check(const char *path, int64_t committed, int64_t upto, uint64_t seed)
{
    if (access(path, F_OK) != 0) {
        /* Strict names: SQLite syncs no directory for a new database file, only for its
         * first journal or WAL (the same directory), so before a commit the file may be gone:
         * nothing can have committed since it was made. */
        cr_assert_eq(committed, 0, "seed %llu: the database is gone", (unsigned long long)seed);
        return 0;
    }
    sqlite3 *db;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, "unix"), SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "seed %llu: integrity_check: %s",
                 (unsigned long long)seed, sqlite3_errmsg(db));
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok", "seed %llu",
                     (unsigned long long)seed);
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(db, "SELECT txn, i, v FROM t ORDER BY txn, i", -1, &st, NULL) !=
        SQLITE_OK) {
        /* The cut came before the schema was durable: nothing can have committed. */
        cr_assert_eq(committed, 0, "seed %llu: %s", (unsigned long long)seed,
                     sqlite3_errmsg(db));
        sqlite3_close(db);
        return 0;
    }
    int64_t present = 0, cur = -1;
    int seen = 0;
    unsigned char blob[1024];
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t n = sqlite3_column_int64(st, 0);
        int i = sqlite3_column_int(st, 1);
        if (n != cur) {
            cr_assert(cur < 0 || seen == rows_of(cur), "seed %llu: transaction %lld is partial",
                      (unsigned long long)seed, (long long)cur);
            cr_assert_eq(n, present, "seed %llu: transaction %lld missing",
                         (unsigned long long)seed, (long long)present);
            cur = n;
            seen = 0;
            present++;
        }
        cr_assert_eq(i, seen);
        int len;
        blob_of(n, i, blob, &len);
        cr_assert_eq(sqlite3_column_bytes(st, 2), len);
        cr_assert_eq(memcmp(sqlite3_column_blob(st, 2), blob, (size_t)len), 0,
                     "seed %llu: row (%lld, %d) differs", (unsigned long long)seed, (long long)n,
                     i);
        seen++;
    }
    cr_assert_eq(rc, SQLITE_DONE);
    cr_assert(cur < 0 || seen == rows_of(cur), "seed %llu: the last transaction is partial",
              (unsigned long long)seed);
    sqlite3_finalize(st);
    cr_assert_geq(present, committed, "seed %llu: %lld transactions committed, %lld present",
                  (unsigned long long)seed, (long long)committed, (long long)present);
    cr_assert_leq(present, upto + 1, "seed %llu: a transaction that never began is there",
                  (unsigned long long)seed);
    sqlite3_close(db);
    return present;
}

static void remove_db(const char *path)
{
    char p[PATH_MAX];
    unlink(path);
    snprintf(p, sizeof p, "%s-journal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

Test(crash_sqlite, committed_transactions_survive_1000_crashes, .init = c_setup,
     .fini = t_teardown, .timeout = 600)
{
    cr_assert_eq(afs_sqlite_vfs_register("afs-crash", 0), 0);
    t_new_ctx();
    unsigned n = runs();
    const char *path = t_path("db");
    int64_t present = 0; /* transactions in the database */
    uint64_t cuts = 0, decided = 0;
    for (unsigned k = 0; k < n; k++) {
        uint64_t seed = seed0() + k;
        if (k % 50 == 0) { /* a fresh database now and then: it stays small */
            remove_db(path);
            present = 0;
        }
        struct afs_crash_options o;
        afs_crash_options_default(&o);
        o.seed = seed;
        struct run r = {.path = path, .wal = (k / 50) % 2 == 1, .next = present};
        /* About the ops of a whole run (afs_crash_ops() after runs without a cut): some
         * runs are cut at their reboot, most in their middle. */
        o.cut_op_max = r.wal ? 110 : 210;
        o.flags = (seed % 3 == 0) ? AFS_CRASH_GARBAGE : 0;
        /* Every other run, names are durable only once their directory is synced: the VFS
         * syncs it where SQLite asks (a new journal or WAL; in DELETE mode, the journal's
         * unlink at commit only with synchronous=EXTRA, as SQLite documents). */
        if (seed % 2 == 0) {
            o.flags |= AFS_CRASH_STRICT_DIRS;
            r.extra = !r.wal;
        }
        cr_assert_eq(afs_crash_enable(t_ctx, &o), 0);
        struct corio_config cc;
        corio_config_default(&cc);
        cc.ctx = t_ctx;
        struct corio_sched *s;
        cr_assert_eq(corio_sched_new(&s, &cc), 0);
        cr_assert_eq(corio_sched_run(s, workload, &r), 0);
        corio_sched_free(s);
        struct afs_crash_report rep;
        cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
        cuts += rep.cut_op > 0;
        decided += rep.kept + rep.dropped + rep.torn;
        present = check(path, r.next + r.committed, r.next + TXNS_PER_RUN - 1, seed);
    }
    cr_assert_gt(cuts, n / 2, "the cuts came in the middle of the runs");
    cr_assert_gt(decided, 0);
}
