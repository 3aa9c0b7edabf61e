/* Helpers of the SQLite suites: a statement that must succeed, and a query's one integer. */
#ifndef AFS_TEST_SQLITE_SQL_H
#define AFS_TEST_SQLITE_SQL_H

#include <criterion/criterion.h>
#include <sqlite3.h>

static inline void exec_ok(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, msg ? msg : sqlite3_errstr(rc));
}

/* The first column of the first row of sql, as an integer. */
static inline sqlite3_int64 query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s: %s", sql, sqlite3_errmsg(db));
    sqlite3_int64 v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

#endif
