/* The SQLite VFS's WAL mode on a kernel of 64 KiB pages (aarch64 and ppc64 configurations),
 * simulated: this binary is linked with mmap, munmap and sysconf wrapped (tests/CMakeLists.txt),
 * so that the page size is 65536 and a mapping of a file at an offset that is not a multiple of
 * it fails with EINVAL, as there. The -shm file's 32 KiB regions are mapped two at a time. */
#include "../common.h"

#include <asyncfs_sqlite.h>
#include <sqlite3.h>
#include "sql.h"
#include <sys/mman.h>

#define PAGE 65536

void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *__real_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int   __real_munmap(void *addr, size_t len);
long  __real_sysconf(int name);

/* The mappings of regular files (the -shm's) still mapped, and how many were made. */
static struct {
    char  *addr;
    size_t len;
} maps[64];
static int maps_made;

static void *map(void *(*real)(void *, size_t, int, int, int, off_t), void *addr, size_t len,
                 int prot, int flags, int fd, off_t off)
{
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return real(addr, len, prot, flags, fd, off);
    if (off % PAGE) {
        errno = EINVAL;
        return MAP_FAILED;
    }
    void *m = real(addr, len, prot, flags, fd, off);
    if (m != MAP_FAILED) {
        for (int i = 0; i < 64; i++) {
            if (!maps[i].addr) {
                maps[i].addr = m;
                maps[i].len = len;
                break;
            }
        }
        maps_made++;
    }
    return m;
}

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return map(__real_mmap, addr, len, prot, flags, fd, off);
}

/* The name the library calls with _FILE_OFFSET_BITS=64. */
void *__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return map(__real_mmap64, addr, len, prot, flags, fd, off);
}

/* Unmapping a mapping's first page only would leave the rest mapped (a 64 KiB page kernel
 * unmaps whole pages; here they are 4 KiB): the length must be the mapping's. */
int __wrap_munmap(void *addr, size_t len)
{
    for (int i = 0; i < 64; i++) {
        if (maps[i].addr == addr && maps[i].len == len)
            maps[i].addr = NULL;
    }
    return __real_munmap(addr, len);
}

long __wrap_sysconf(int name)
{
    return name == _SC_PAGESIZE ? PAGE : __real_sysconf(name);
}

static void v_setup(void)
{
    t_setup();
    cr_assert_eq(afs_sqlite_vfs_register(NULL, 0), 0);
}

Test(sqlite_vfs_pg64k, wal_mode_maps_the_shm_file_at_page_offsets, .init = v_setup,
     .fini = t_teardown, .timeout = 120)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(t_path("w.db"), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                 "asyncfs"),
                 SQLITE_OK);
    /* Over 8,158 frames: the wal-index needs a third region, in a second mapping. */
    exec_ok(db, "PRAGMA page_size=512; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
                "CREATE TABLE t(x)");
    exec_ok(db, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 9000)"
                " INSERT INTO t SELECT randomblob(400) FROM c");
    sqlite3 *r = NULL;
    cr_assert_eq(sqlite3_open_v2(t_path("w.db"), &r, SQLITE_OPEN_READONLY, "asyncfs"),
                 SQLITE_OK);
    cr_assert_eq(query_int(r, "SELECT count(*) FROM t"), 9000);
    cr_assert_eq(query_int(db, "SELECT count(*) FROM pragma_integrity_check WHERE "
                               "integrity_check = 'ok'"),
                 1);
    sqlite3_close(r);
    sqlite3_close(db);
    cr_assert_geq(maps_made, 2, "%d mappings of the -shm file", maps_made);
    for (int i = 0; i < 64; i++)
        cr_assert_null(maps[i].addr, "a mapping of %zu bytes left after the close", maps[i].len);
}
