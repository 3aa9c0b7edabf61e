/* The crash simulator (include/asyncfs_crash.h): each decision (drop, keep, tear) checked on
 * the file's bytes, the same seed giving the same files, synced data never altered, the cut
 * at the Nth op and what ops return after it; on every backend the suite runs. */
#include "../common.h"

#include <asyncfs_crash.h>
#include <dirent.h>

#include "platform.h"

/* The files live on tmpfs when there is one: the simulator decides what is durable, and a
 * real fsync per op would make a thousand crashes take minutes. */
static void c_setup(void)
{
    struct stat st;
    if (!getenv("AFS_TEST_TMPDIR") && stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode))
        setenv("AFS_TEST_TMPDIR", "/dev/shm", 1);
    t_setup();
}

#define T_CRASH(name, ...)                                                                     \
    Test(crash, name, .init = c_setup, .fini = t_teardown, .timeout = 120, ##__VA_ARGS__)

#define SEC 512

static struct afs_ctx *crash_ctx(unsigned policy, uint64_t seed)
{
    t_new_ctx();
    struct afs_crash_options o;
    afs_crash_options_default(&o);
    o.policy = policy;
    o.seed = seed;
    cr_assert_eq(afs_crash_enable(t_ctx, &o), 0);
    return t_ctx;
}

/* The whole file, read with plain stdio; *len gets its size. */
static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp, "open %s: %s", path, strerror(errno));
    size_t cap = 65536, n = 0, r;
    unsigned char *p = malloc(cap);
    cr_assert_not_null(p);
    while ((r = fread(p + n, 1, cap - n, fp)) > 0) {
        n += r;
        if (n == cap) {
            p = realloc(p, cap *= 2);
            cr_assert_not_null(p);
        }
    }
    fclose(fp);
    *len = n;
    return p;
}

static void fill_byte(unsigned char *p, size_t len, unsigned char v)
{
    memset(p, v, len);
}

/* A file of 8 sectors of 'A', written and synced in crash mode; then 8 sectors of 'B' over
 * it and 2 sectors of 'C' appended, not synced. Returns the file, still open. */
static struct afs_file *synced_then_dirty(void)
{
    struct afs_file *f;
    cr_assert_eq(afs_create(t_ctx, t_path("f"), AFS_MODE_SYNC, &f), 0);
    unsigned char buf[8 * SEC];
    fill_byte(buf, sizeof buf, 'A');
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    cr_assert_eq(afs_fsync(f, AFS_FSYNC_DATA), 0);
    fill_byte(buf, sizeof buf, 'B');
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    fill_byte(buf, 2 * SEC, 'C');
    cr_assert_eq(afs_pwrite(f, buf, 2 * SEC, 8 * SEC), 2 * SEC);
    return f;
}

T_CRASH(drop_gives_the_file_as_of_its_last_sync)
{
    crash_ctx(AFS_CRASH_DROP, 1);
    synced_then_dirty();
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
    cr_assert_eq(rep.files, 1);
    cr_assert_eq(rep.dropped, 2);
    cr_assert_eq(rep.kept + rep.torn, 0);
    size_t len;
    unsigned char *p = slurp(t_path("f"), &len);
    cr_assert_eq(len, 8 * SEC, "the unsynced append is gone: size %zu", len);
    for (size_t i = 0; i < len; i++)
        cr_assert_eq(p[i], 'A', "byte %zu is %c", i, p[i]);
    free(p);
}

/* fsyncgate: a sync that failed may have lost the writes it covered for good (the kernel
 * marks their pages clean), so a later sync that succeeds does not make them durable; the
 * writes after the failure it does. */
static struct afs__syscalls gate_saved;
static int                  gate_fail;
static int gate_fsync(afs__fd_t fd, bool datasync)
{
    if (gate_fail) {
        gate_fail = 0;
        return -EIO;
    }
    return gate_saved.fsync(fd, datasync);
}

T_CRASH(a_write_a_failed_sync_covered_stays_volatile_after_a_later_sync)
{
    gate_saved = afs__sys;
    afs__sys.fsync = gate_fsync;
    crash_ctx(AFS_CRASH_DROP, 1);
    struct afs_file *f;
    cr_assert_eq(afs_create(t_ctx, t_path("f"), AFS_MODE_SYNC, &f), 0);
    unsigned char buf[4 * SEC];
    fill_byte(buf, sizeof buf, 'W');
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    gate_fail = 1;
    int first = afs_fsync(f, AFS_FSYNC_DATA);
    gate_fail = 0;
    fill_byte(buf, 2 * SEC, 'X');
    cr_assert_eq(afs_pwrite(f, buf, 2 * SEC, SEC), 2 * SEC); /* over the middle of W */
    cr_assert_eq(afs_fsync(f, AFS_FSYNC_DATA), 0);
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
    afs__sys = gate_saved;
    size_t len;
    unsigned char *p = slurp(t_path("f"), &len);
    if (first == 0) {
        /* The backend's sync did not go through the hook (io_uring's own op): W is durable. */
        cr_assert_eq(len, 4 * SEC);
    } else {
        cr_assert_eq(first, -EIO);
        /* Dropped: the file holds X where the later sync put it, zeros below it. */
        cr_assert_eq(len, 3 * SEC, "size %zu", len);
        for (size_t i = 0; i < len; i++)
            cr_assert_eq(p[i], i < SEC ? 0 : 'X', "byte %zu is %#x", i, p[i]);
    }
    free(p);
}

/* afs_openat_file follows afs_open with AFS_AT_FDCWD (the simulator sees the file: a crash
 * drops its unsynced data); relative to another directory it is refused. */
T_CRASH(openat_file_works_by_path_only)
{
    crash_ctx(AFS_CRASH_DROP, 1);
    struct afs_file *f = (struct afs_file *)1;
    int dfd = afs_openat(t_ctx, AFS_AT_FDCWD, t_dir, AFS_RDONLY | AFS_DIRECTORY, 0);
    cr_assert_geq(dfd, 0);
    cr_assert_eq(afs_openat_file(t_ctx, dfd, "f", AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_SYNC,
                                 NULL, &f), -ENOTSUP);
    cr_assert_null(f);
    cr_assert_eq(afs_close_fd(t_ctx, dfd), 0);
    struct afs_stat st;
    cr_assert_eq(afs_openat_file(t_ctx, AFS_AT_FDCWD, t_path("f"), AFS_RDWR | AFS_CREAT, 0644,
                                 AFS_MODE_SYNC, &st, &f), 0);
    cr_assert_eq(st.size, 0);
    unsigned char buf[4 * SEC];
    fill_byte(buf, sizeof buf, 'A');
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
    cr_assert_eq(rep.files, 1);
    size_t len;
    unsigned char *p = slurp(t_path("f"), &len);
    cr_assert_eq(len, 0, "never synced: dropped, size %zu", len);
    free(p);
}

T_CRASH(keep_gives_the_file_as_written)
{
    crash_ctx(AFS_CRASH_KEEP, 1);
    synced_then_dirty();
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
    cr_assert_eq(rep.kept, 2);
    size_t len;
    unsigned char *p = slurp(t_path("f"), &len);
    cr_assert_eq(len, 10 * SEC);
    for (size_t i = 0; i < len; i++)
        cr_assert_eq(p[i], i < 8 * SEC ? 'B' : 'C', "byte %zu is %c", i, p[i]);
    free(p);
}

/* Each sector of a torn write is old or new as a whole, and both occur. */
T_CRASH(tear_lands_whole_sectors_some_not_all)
{
    crash_ctx(AFS_CRASH_TEAR, 7);
    struct afs_file *f = synced_then_dirty();
    (void)f;
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
    cr_assert_eq(rep.torn, 2);
    size_t len;
    unsigned char *p = slurp(t_path("f"), &len);
    size_t olds = 0, news = 0;
    for (size_t s = 0; s < 8; s++) {
        unsigned char v = p[s * SEC];
        cr_assert(v == 'A' || v == 'B', "sector %zu holds %c", s, v);
        for (size_t i = 0; i < SEC; i++)
            cr_assert_eq(p[s * SEC + i], v, "sector %zu is not whole", s);
        olds += v == 'A';
        news += v == 'B';
    }
    cr_assert(olds > 0 && news > 0, "a torn write is neither all old nor all new");
    /* The appended part: its sectors landed or not, the size follows the last that did,
     * and a sector that did not land below one that did reads as zeros. */
    cr_assert(len == 8 * SEC || len == 9 * SEC || len == 10 * SEC, "size %zu", len);
    for (size_t i = 8 * SEC; i < len; i++)
        cr_assert(p[i] == 'C' || p[i] == 0, "byte %zu is %d", i, p[i]);
    free(p);
}

T_CRASH(tear_with_garbage_leaves_random_sectors)
{
    t_new_ctx();
    struct afs_crash_options o;
    afs_crash_options_default(&o);
    o.policy = AFS_CRASH_TEAR;
    o.flags = AFS_CRASH_GARBAGE;
    o.seed = 3;
    cr_assert_eq(afs_crash_enable(t_ctx, &o), 0);
    synced_then_dirty();
    cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
    size_t len;
    unsigned char *p = slurp(t_path("f"), &len);
    size_t junk = 0;
    for (size_t s = 0; s < 8; s++) {
        bool b = true;
        for (size_t i = 0; i < SEC; i++)
            b &= p[s * SEC + i] == 'B';
        if (!b) {
            /* Not the new data: random bytes, not the old sector either. */
            size_t a = 0;
            for (size_t i = 0; i < SEC; i++)
                a += p[s * SEC + i] == 'A';
            cr_assert_lt(a, SEC / 8, "sector %zu kept its old bytes", s);
            junk++;
        }
    }
    cr_assert_gt(junk, 0);
    free(p);
}

/* One workload of many writes, syncs and a cut, run under a seed; returns a hash of the
 * resulting file. */
static uint64_t mixed_run(const char *name, uint64_t seed, struct afs_crash_report *rep)
{
    t_new_ctx();
    struct afs_crash_options o;
    afs_crash_options_default(&o);
    o.seed = seed;
    o.cut_op_max = 60;
    cr_assert_eq(afs_crash_enable(t_ctx, &o), 0);
    struct afs_file *f;
    cr_assert_eq(afs_create(t_ctx, t_path(name), AFS_MODE_SYNC, &f), 0);
    static unsigned char buf[4 * SEC];
    for (int i = 0; i < 80; i++) {
        size_t len = (size_t)(1 + (i * 37) % (4 * SEC));
        t_fill(buf, len, (uint64_t)i * 1000);
        if (afs_pwrite(f, buf, len, (uint64_t)((i * 211) % (16 * SEC))) < 0)
            break;
        if (i % 7 == 6 && afs_fsync(f, 0) < 0)
            break;
    }
    cr_assert_eq(afs_crash_reboot(t_ctx, rep), 0);
    afs_ctx_free(t_ctx);
    t_ctx = NULL;
    size_t len;
    unsigned char *p = slurp(t_path(name), &len);
    uint64_t h = 1469598103934665603ull ^ len;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    free(p);
    return h;
}

T_CRASH(the_same_seed_gives_the_same_files)
{
    struct afs_crash_report r1, r2, r3;
    uint64_t a = mixed_run("a", 42, &r1);
    uint64_t b = mixed_run("b", 42, &r2);
    cr_assert_eq(a, b, "two runs with seed 42 left different files");
    cr_assert_eq(r1.cut_op, r2.cut_op);
    cr_assert_eq(r1.kept, r2.kept);
    cr_assert_eq(r1.dropped, r2.dropped);
    cr_assert_eq(r1.torn, r2.torn);
    cr_assert_gt(r1.cut_op, 0);
    /* Other seeds cut elsewhere and decide otherwise. */
    int differ = 0;
    for (uint64_t s = 1; s <= 4; s++)
        differ += mixed_run("c", s, &r3) != a;
    cr_assert_geq(differ, 3);
}

/* Under every policy, with garbage, at any cut: a file synced after its last write comes
 * back byte for byte, and the synced part of a file written afterwards elsewhere too. */
T_CRASH(synced_data_is_never_altered)
{
    for (uint64_t seed = 1; seed <= 40; seed++) {
        t_new_ctx();
        struct afs_crash_options o;
        afs_crash_options_default(&o);
        o.seed = seed;
        o.policy = (unsigned)(seed % 4);
        o.flags = AFS_CRASH_GARBAGE;
        cr_assert_eq(afs_crash_enable(t_ctx, &o), 0);
        struct afs_file *a, *b;
        cr_assert_eq(afs_create(t_ctx, t_path("synced"), AFS_MODE_SYNC, &a), 0);
        cr_assert_eq(afs_create(t_ctx, t_path("half"), AFS_MODE_SYNC, &b), 0);
        static unsigned char buf[3 * SEC + 100];
        for (int i = 0; i < 6; i++) {
            t_fill(buf, sizeof buf, (uint64_t)i * sizeof buf);
            cr_assert_eq(afs_pwrite(a, buf, sizeof buf, (uint64_t)i * sizeof buf),
                         (ssize_t)sizeof buf);
            cr_assert_eq(afs_pwrite(b, buf, sizeof buf, (uint64_t)i * sizeof buf),
                         (ssize_t)sizeof buf);
        }
        cr_assert_eq(afs_fsync(a, 0), 0);
        cr_assert_eq(afs_fsync(b, AFS_FSYNC_DATA), 0);
        cr_assert_eq(afs_close(a), 0);
        /* b: more, unsynced, after the synced part. */
        memset(buf, 0x5a, sizeof buf);
        for (int i = 6; i < 9; i++)
            cr_assert_eq(afs_pwrite(b, buf, sizeof buf, (uint64_t)i * sizeof buf),
                         (ssize_t)sizeof buf);
        cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
        afs_ctx_free(t_ctx);
        t_ctx = NULL;
        size_t len;
        unsigned char *p = slurp(t_path("synced"), &len);
        cr_assert_eq(len, 6 * sizeof buf, "seed %llu", (unsigned long long)seed);
        cr_assert(t_check(p, len, 0), "seed %llu: synced file altered", (unsigned long long)seed);
        free(p);
        p = slurp(t_path("half"), &len);
        cr_assert_geq(len, 6 * sizeof buf);
        cr_assert(t_check(p, 6 * sizeof buf, 0), "seed %llu: synced part altered",
                  (unsigned long long)seed);
        free(p);
    }
}

T_CRASH(the_cut_fails_the_nth_op_and_all_later)
{
    t_new_ctx();
    struct afs_crash_options o;
    afs_crash_options_default(&o);
    o.cut_at_op = 3;
    cr_assert_eq(afs_crash_enable(t_ctx, &o), 0);
    struct afs_file *f;
    cr_assert_eq(afs_create(t_ctx, t_path("f"), AFS_MODE_SYNC, &f), 0);
    char buf[100];
    memset(buf, 'x', sizeof buf);
    cr_assert_eq(afs_crash_happened(t_ctx), 0);
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 0), (ssize_t)sizeof buf); /* op 1 */
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), (ssize_t)sizeof buf); /* op 2 */
    cr_assert_eq(afs_crash_ops(t_ctx), 2);
    cr_assert_eq(afs_fsync(f, 0), -EIO); /* op 3: the cut */
    cr_assert_eq(afs_crash_happened(t_ctx), 1);
    cr_assert_eq(afs_pread(f, buf, sizeof buf, 0), -EIO);
    cr_assert_eq(afs_pwrite(f, buf, sizeof buf, 0), -EIO);
    struct afs_file *g;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &g), -EIO);
    cr_assert_eq(afs_crash_ops(t_ctx), 2, "ops after the cut are not counted");
    cr_assert_eq(afs_close(f), -EIO);
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
    cr_assert_eq(rep.cut_op, 3);
    cr_assert_eq(rep.ops, 2);
    cr_assert_eq(rep.files, 1);
}

static void result_cb(struct afs_op *op)
{
    *(ssize_t *)op->data = op->result;
}

/* Ops queued before the cut report -EIO from their callbacks, and a sync that did so made
 * nothing durable. */
T_CRASH(ops_completing_after_the_cut_fail)
{
    crash_ctx(AFS_CRASH_DROP, 5);
    struct afs_file *f;
    cr_assert_eq(afs_create(t_ctx, t_path("f"), AFS_MODE_SYNC, &f), 0);
    static char buf[8192];
    memset(buf, 'w', sizeof buf);
    struct afs_op w, s;
    ssize_t wr = 1, sr = 1;
    cr_assert_eq(afs_queue_write(&w, f, buf, sizeof buf, 0, result_cb, &wr), 0);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, -1), 1);
    cr_assert_eq(wr, (ssize_t)sizeof buf);
    cr_assert_eq(afs_queue_fsync(&s, f, 0, result_cb, &sr), 0);
    cr_assert_eq(afs_crash_cut(t_ctx), 0);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, -1), 1);
    cr_assert_eq(sr, -EIO, "a sync completing after the cut reports -EIO, got %zd", sr);
    /* Queued after the cut: accepted, and its callback reports -EIO. */
    cr_assert_eq(afs_queue_write(&w, f, buf, sizeof buf, 0, result_cb, &wr), 0);
    cr_assert_eq(afs_ctx_wait(t_ctx, 1, -1), 1);
    cr_assert_eq(wr, -EIO);
    cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
    size_t len;
    free(slurp(t_path("f"), &len));
    cr_assert_eq(len, 0, "the failed sync made the write durable");
}

/* A sync covers the writes completed when it was queued: one in flight then is not. */
T_CRASH(a_sync_does_not_cover_a_write_in_flight)
{
    crash_ctx(AFS_CRASH_DROP, 5);
    struct afs_file *f;
    cr_assert_eq(afs_create(t_ctx, t_path("f"), AFS_MODE_SYNC, &f), 0);
    static char buf[8192];
    memset(buf, 'w', sizeof buf);
    cr_assert_eq(afs_pwrite(f, buf, 100, 0), 100); /* done before the sync: covered */
    struct afs_op w, s;
    ssize_t wr = 1, sr = 1;
    cr_assert_eq(afs_queue_write(&w, f, buf, sizeof buf, 100, result_cb, &wr), 0);
    cr_assert_eq(afs_queue_fsync(&s, f, 0, result_cb, &sr), 0);
    while (wr == 1 || sr == 1)
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, -1), 0);
    cr_assert_eq(wr, (ssize_t)sizeof buf);
    cr_assert_eq(sr, 0);
    cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
    size_t len;
    unsigned char *p = slurp(t_path("f"), &len);
    cr_assert_eq(len, 100);
    free(p);
}

/* A truncating open is a change like a write: undone by a drop, kept by a keep. */
T_CRASH(a_truncating_open_is_volatile_until_synced)
{
    t_make_file(t_path("f"), 5000);
    for (unsigned policy = AFS_CRASH_DROP; policy <= AFS_CRASH_KEEP; policy++) {
        if (policy == AFS_CRASH_KEEP)
            t_make_file(t_path("f"), 5000);
        crash_ctx(policy, 9);
        struct afs_file *f;
        cr_assert_eq(afs_create(t_ctx, t_path("f"), AFS_MODE_SYNC, &f), 0);
        cr_assert_eq(afs_file_size(f), 0);
        cr_assert_eq(afs_pwrite(f, "new", 3, 0), 3);
        cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
        afs_ctx_free(t_ctx);
        t_ctx = NULL;
        size_t len;
        unsigned char *p = slurp(t_path("f"), &len);
        if (policy == AFS_CRASH_DROP) {
            cr_assert_eq(len, 5000);
            cr_assert(t_check(p, len, 0), "the old contents are back");
        } else {
            cr_assert_eq(len, 3);
            cr_assert_eq(memcmp(p, "new", 3), 0);
        }
        free(p);
    }
}

T_CRASH(bad_input_and_misuse)
{
    t_new_ctx();
    struct afs_crash_options o;
    afs_crash_options_default(&o);
    cr_assert_eq(afs_crash_enable(t_ctx, NULL), -EINVAL);
    o.sector_size = 1000;
    cr_assert_eq(afs_crash_enable(t_ctx, &o), -EINVAL);
    o.sector_size = 4096;
    o.policy = 99;
    cr_assert_eq(afs_crash_enable(t_ctx, &o), -EINVAL);
    o.policy = 0;
    o.flags = 0x100;
    cr_assert_eq(afs_crash_enable(t_ctx, &o), -EINVAL);
    o.flags = 0;
    cr_assert_eq(afs_crash_happened(t_ctx), -EINVAL);
    cr_assert_eq(afs_crash_cut(t_ctx), -EINVAL);
    struct afs_file *f;
    cr_assert_eq(afs_create(t_ctx, t_path("f"), AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_crash_enable(t_ctx, &o), -EBUSY);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_crash_enable(t_ctx, &o), 0);
    cr_assert_eq(afs_crash_enable(t_ctx, &o), -EALREADY);
    cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
    cr_assert_eq(afs_crash_happened(t_ctx), -EINVAL, "the reboot leaves crash mode");
}

/* Names: durable at once by default. */
T_CRASH(names_are_durable_at_once_by_default)
{
    t_make_file(t_path("old"), 1000);
    crash_ctx(AFS_CRASH_DROP, 1);
    struct afs_file *f;
    cr_assert_eq(afs_create(t_ctx, t_path("new"), AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_pwrite(f, "data", 4, 0), 4);
    cr_assert_eq(afs_renameat(t_ctx, AFS_AT_FDCWD, t_path("old"), AFS_AT_FDCWD, t_path("moved"),
                              0), 0);
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
    cr_assert_eq(rep.names_undone, 0);
    size_t len;
    free(slurp(t_path("new"), &len));
    cr_assert_eq(len, 0, "the name stays, its unsynced data do not");
    unsigned char *p = slurp(t_path("moved"), &len);
    cr_assert(len == 1000 && t_check(p, len, 0));
    free(p);
}

static bool exists(const char *path)
{
#ifdef _WIN32
    return GetFileAttributesA(path) != INVALID_FILE_ATTRIBUTES;
#else
    struct stat st;
    return lstat(path, &st) == 0;
#endif
}

/* No file of the simulator's own is left in dir. */
static void no_stash_left(const char *dir)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        cr_assert(strncmp(e->d_name, ".afs-crash-", 11) != 0, "%s left in %s", e->d_name, dir);
    closedir(d);
}

/* The name ops of the strict-mode tests: a creation (data synced, the directory not), a
 * rename over an existing file, a removal, a new directory. */
static void name_ops(void)
{
    t_make_file(t_path("a"), 1000);
    t_make_file(t_path("c"), 3000);
    t_make_file(t_path("victim"), 500);
    struct afs_file *f;
    cr_assert_eq(afs_create(t_ctx, t_path("new"), AFS_MODE_SYNC, &f), 0);
    cr_assert_eq(afs_pwrite(f, "data", 4, 0), 4);
    cr_assert_eq(afs_fsync(f, 0), 0);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_renameat(t_ctx, AFS_AT_FDCWD, t_path("a"), AFS_AT_FDCWD, t_path("victim"),
                              0), 0);
    cr_assert_eq(afs_unlinkat(t_ctx, AFS_AT_FDCWD, t_path("c"), 0), 0);
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("d"), 0755), 0);
    cr_assert(!exists(t_path("a")) && !exists(t_path("c")) && exists(t_path("d")));
}

static struct afs_ctx *strict_ctx(void)
{
    t_new_ctx();
    struct afs_crash_options o;
    afs_crash_options_default(&o);
    o.policy = AFS_CRASH_DROP;
    o.flags = AFS_CRASH_STRICT_DIRS;
    cr_assert_eq(afs_crash_enable(t_ctx, &o), 0);
    return t_ctx;
}

T_CRASH(strict_names_are_undone_without_a_directory_sync)
{
    strict_ctx();
    name_ops();
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
    cr_assert_eq(rep.names_undone, 4);
    cr_assert(!exists(t_path("new")), "a creation not synced in its directory is gone");
    cr_assert(!exists(t_path("d")));
    size_t len;
    unsigned char *p = slurp(t_path("a"), &len);
    cr_assert(len == 1000 && t_check(p, len, 0), "the renamed file is back under its name");
    free(p);
    p = slurp(t_path("victim"), &len);
    cr_assert(len == 500 && t_check(p, len, 0), "the file the rename replaced is back");
    free(p);
    p = slurp(t_path("c"), &len);
    cr_assert(len == 3000 && t_check(p, len, 0), "the removed file is back");
    free(p);
    no_stash_left(t_dir);
}

T_CRASH(strict_names_are_durable_after_a_directory_sync)
{
    strict_ctx();
    name_ops();
    int dfd = afs_openat(t_ctx, AFS_AT_FDCWD, t_dir, AFS_RDONLY | AFS_DIRECTORY, 0);
    cr_assert_geq(dfd, 0);
    struct afs_file *d;
    cr_assert_eq(afs_file_from_fd(t_ctx, dfd, AFS_RDONLY, AFS_MODE_SYNC, &d), 0);
    cr_assert_eq(afs_fsync(d, 0), 0);
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
    cr_assert_eq(rep.names_undone, 0);
    size_t len;
    unsigned char *p = slurp(t_path("new"), &len);
    cr_assert(len == 4 && memcmp(p, "data", 4) == 0);
    free(p);
    p = slurp(t_path("victim"), &len);
    cr_assert(len == 1000 && t_check(p, len, 0));
    free(p);
    cr_assert(!exists(t_path("a")) && !exists(t_path("c")) && exists(t_path("d")));
    no_stash_left(t_dir);
}

T_CRASH(strict_names_are_durable_after_a_syncfs)
{
    strict_ctx();
    name_ops();
    int dfd = afs_openat(t_ctx, AFS_AT_FDCWD, t_dir, AFS_RDONLY | AFS_DIRECTORY, 0);
    cr_assert_geq(dfd, 0);
    int r = afs_syncfs(t_ctx, dfd);
    cr_assert_eq(afs_close_fd(t_ctx, dfd), 0);
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
#ifdef _WIN32
    if (r == -ENOTSUP) {
        /* No volume flush (wine, or no administrator rights): nothing became durable. */
        cr_assert_eq(rep.names_undone, 4);
        cr_assert(!exists(t_path("new")) && exists(t_path("a")) && exists(t_path("c")));
        no_stash_left(t_dir);
        return;
    }
#endif
    cr_assert_eq(r, 0);
    cr_assert_eq(rep.names_undone, 0);
    cr_assert(exists(t_path("new")) && !exists(t_path("a")) && !exists(t_path("c")));
    no_stash_left(t_dir);
}

/* ftruncate and fallocate are volatile changes too: a synced file of pattern bytes, then a
 * truncation, a punched hole or a zeroed range growing the file, not synced. Dropped: the
 * file is back; kept: the change is there; synced: it stays whatever the policy. */
static void size_op(struct afs_file *f, int which)
{
    switch (which) {
    case 0: cr_assert_eq(afs_ftruncate(f, 1000), 0); break;
    case 1: cr_assert_eq(afs_fallocate(f, AFS_FALLOC_PUNCH_HOLE, 4096, 8192), 0); break;
    default: cr_assert_eq(afs_fallocate(f, AFS_FALLOC_ZERO_RANGE, 12288, 8192), 0); break;
    }
}

static void check_size_op(int which, bool applied)
{
    size_t len;
    unsigned char *p = slurp(t_path("f"), &len);
    if (!applied) {
        cr_assert_eq(len, 16384, "op %d", which);
        cr_assert(t_check(p, len, 0), "op %d: the file is back as synced", which);
    } else if (which == 0) {
        cr_assert_eq(len, 1000);
        cr_assert(t_check(p, len, 0));
    } else if (which == 1) {
        cr_assert_eq(len, 16384);
        cr_assert(t_check(p, 4096, 0) && t_check(p + 12288, 4096, 12288));
        for (size_t i = 4096; i < 12288; i++)
            cr_assert_eq(p[i], 0, "op 1: byte %zu of the hole", i);
    } else {
        cr_assert_eq(len, 20480, "op 2: the zeroed range moved the end");
        cr_assert(t_check(p, 12288, 0));
        for (size_t i = 12288; i < len; i++)
            cr_assert_eq(p[i], 0, "op 2: byte %zu", i);
    }
    free(p);
}

/* On the default test directory (a disk): tmpfs has no ZERO_RANGE. */
Test(crash, ftruncate_and_fallocate_are_volatile_until_synced, .init = t_setup,
     .fini = t_teardown, .timeout = 120)
{
    for (int which = 0; which < 3; which++) {
        for (int mode = 0; mode < 3; mode++) { /* drop, keep, synced then dropped */
            t_make_file(t_path("f"), 16384);
            crash_ctx(mode == 1 ? AFS_CRASH_KEEP : AFS_CRASH_DROP, 11);
            struct afs_file *f;
            cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDWR, 0, AFS_MODE_SYNC, &f), 0);
            size_op(f, which);
            if (mode == 2)
                cr_assert_eq(afs_fsync(f, 0), 0);
            cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
            afs_ctx_free(t_ctx);
            t_ctx = NULL;
            check_size_op(which, mode != 0);
        }
    }
}

/* A chain "write, then fsync" in one submission: the fsync runs after the write, so it covers
 * it (the same two ops queued side by side do not: a_sync_does_not_cover_a_write_in_flight). */
T_CRASH(a_chained_fsync_covers_the_chains_writes)
{
    crash_ctx(AFS_CRASH_DROP, 6);
    struct afs_file *f;
    cr_assert_eq(afs_create(t_ctx, t_path("f"), AFS_MODE_SYNC, &f), 0);
    static char buf[4 * SEC], rec[SEC];
    memset(buf, 'w', sizeof buf);
    memset(rec, 'c', sizeof rec);
    struct afs_op w, s, c;
    ssize_t wr = 1, sr = 1, cr = 1;
    cr_assert_eq(afs_chain_begin(t_ctx), 0);
    cr_assert_eq(afs_queue_write(&w, f, buf, sizeof buf, 0, result_cb, &wr), 0);
    cr_assert_eq(afs_queue_fsync(&s, f, AFS_FSYNC_DATA, result_cb, &sr), 0);
    cr_assert_eq(afs_queue_write(&c, f, rec, sizeof rec, sizeof buf, result_cb, &cr), 0);
    cr_assert_eq(afs_chain_end(t_ctx, AFS_CHAIN_WAIT), 0);
    cr_assert_eq(wr, (ssize_t)sizeof buf);
    cr_assert_eq(sr, 0);
    cr_assert_eq(cr, (ssize_t)sizeof rec);
    cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
    size_t len;
    unsigned char *p = slurp(t_path("f"), &len);
    cr_assert_eq(len, sizeof buf, "size %zu: the record after the fsync is not durable", len);
    for (size_t i = 0; i < len; i++)
        cr_assert_eq(p[i], 'w', "byte %zu is %c", i, p[i]);
    free(p);
}

/* AFS_WRITE_DSYNC: the write is durable when it completes, the writes around it are not, and
 * an older write replayed at the reboot does not cover it. */
static void dsync_case(unsigned policy, char below)
{
    crash_ctx(policy, 7);
    struct afs_file *f = synced_then_dirty(); /* 'A' synced, 'B' over it, 'C' appended */
    unsigned char d[2 * SEC];
    fill_byte(d, sizeof d, 'D');
    ssize_t r = afs_pwrite_flags(f, d, sizeof d, 2 * SEC, AFS_WRITE_DSYNC);
    if (r == -ENOTSUP)
        cr_skip_test("no AFS_WRITE_DSYNC here");
    cr_assert_eq(r, (ssize_t)sizeof d);
    fill_byte(d, SEC, 'E');
    cr_assert_eq(afs_pwrite(f, d, SEC, 7 * SEC), SEC); /* after it: volatile again */
    cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
    size_t len;
    unsigned char *p = slurp(t_path("f"), &len);
    cr_assert_eq(len, policy == AFS_CRASH_DROP ? 8 * SEC : 10 * SEC, "size %zu", len);
    for (size_t i = 0; i < 8 * SEC; i++) {
        char want = i >= 2 * SEC && i < 4 * SEC ? 'D'
                    : i >= 7 * SEC              ? (policy == AFS_CRASH_DROP ? 'A' : 'E')
                                                : below;
        cr_assert_eq(p[i], want, "byte %zu is %c, not %c", i, p[i], want);
    }
    free(p);
}

T_CRASH(a_dsync_write_is_durable_when_it_completes)
{
    dsync_case(AFS_CRASH_DROP, 'A');
}

T_CRASH(a_dsync_write_stays_above_older_writes_at_the_reboot)
{
    dsync_case(AFS_CRASH_KEEP, 'B');
}

/* A file opened with AFS_DSYNC: every write is durable when it completes. */
T_CRASH(writes_to_a_dsync_file_are_durable_when_they_complete)
{
    crash_ctx(AFS_CRASH_DROP, 8);
    struct afs_file *f;
    int err = afs_open(t_ctx, t_path("f"), AFS_RDWR | AFS_CREAT | AFS_DSYNC, 0600,
                       AFS_MODE_SYNC, &f);
    if (err == -ENOTSUP)
        cr_skip_test("no AFS_DSYNC here");
    cr_assert_eq(err, 0, "afs_open: %s", afs_strerror(err));
    unsigned char b[3 * SEC];
    fill_byte(b, sizeof b, 'S');
    cr_assert_eq(afs_pwrite(f, b, sizeof b, 0), (ssize_t)sizeof b);
    cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
    size_t len;
    unsigned char *p = slurp(t_path("f"), &len);
    cr_assert_eq(len, sizeof b, "size %zu", len);
    cr_assert(memcmp(p, b, len) == 0);
    free(p);
}

#ifndef _WIN32
/* afs_fsync_fd of a directory is the sync of its names in strict mode. */
T_CRASH(strict_names_are_durable_after_fsync_fd_of_the_directory)
{
    strict_ctx();
    name_ops();
    int dfd = open(t_dir, O_RDONLY | O_DIRECTORY);
    cr_assert_geq(dfd, 0);
    cr_assert_eq(afs_fsync_fd(t_ctx, dfd, 0), 0);
    close(dfd);
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
    cr_assert_eq(rep.names_undone, 0);
    cr_assert(exists(t_path("new")) && !exists(t_path("a")) && !exists(t_path("c")) &&
              exists(t_path("d")));
    no_stash_left(t_dir);
}

T_CRASH(strict_names_are_durable_after_fsync_dir)
{
    strict_ctx();
    name_ops();
    cr_assert_eq(afs_fsync_dir(t_ctx, t_dir), 0);
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
    cr_assert_eq(rep.names_undone, 0);
    cr_assert(exists(t_path("new")) && !exists(t_path("a")) && exists(t_path("d")));
    no_stash_left(t_dir);
}

/* afs_fsync_fd of a file's descriptor syncs that file. */
T_CRASH(fsync_fd_of_a_file_makes_its_writes_durable)
{
    crash_ctx(AFS_CRASH_DROP, 9);
    struct afs_file *f = synced_then_dirty();
    cr_assert_eq(afs_fsync_fd(t_ctx, (int)afs_file_fd(f), AFS_FSYNC_DATA), 0);
    cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
    size_t len;
    unsigned char *p = slurp(t_path("f"), &len);
    cr_assert_eq(len, 10 * SEC, "size %zu", len);
    for (size_t i = 0; i < len; i++)
        cr_assert_eq(p[i], i < 8 * SEC ? 'B' : 'C', "byte %zu is %c", i, p[i]);
    free(p);
}
#endif

#ifndef _WIN32
#include <signal.h>
#include <sys/resource.h>

/* Runs the change `how` (0 fallocate, 1 ftruncate, 2 a write) of an AFS_APPEND file under a
 * file size limit that fails it with -EFBIG. */
static int change_over_the_limit(struct afs_file *f, int how)
{
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = how == 2 ? 100 : 1 << 20;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    static char x[4096];
    int r = how == 2   ? (int)afs_write(f, x, sizeof x)
            : how == 1 ? afs_ftruncate(f, 4 << 20)
                       : afs_fallocate(f, 0, 0, 4 << 20);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    return r;
}

/* A change that failed did not move the file's end: the next append lands where the kernel
 * put it, and the reboot (keeping everything) gives the file as the program left it. */
T_CRASH(an_append_after_a_failed_change_lands_at_the_files_real_end)
{
    for (int how = 0; how < 3; how++) {
        crash_ctx(AFS_CRASH_KEEP, 11);
        char name[16];
        snprintf(name, sizeof name, "a%d", how);
        struct afs_file *f;
        cr_assert_eq(afs_open(t_ctx, t_path(name), AFS_RDWR | AFS_CREAT | AFS_APPEND, 0644,
                              AFS_MODE_SYNC, &f), 0);
        unsigned char a[100], b[100];
        fill_byte(a, sizeof a, 'A');
        fill_byte(b, sizeof b, 'B');
        cr_assert_eq(afs_write(f, a, sizeof a), 100);
        int r = change_over_the_limit(f, how);
        cr_assert_eq(r, -EFBIG, "change %d: %s", how, afs_strerror(r));
        cr_assert_eq(afs_write(f, b, sizeof b), 100);
        cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
        afs_ctx_free(t_ctx);
        t_ctx = NULL;
        size_t len;
        unsigned char *p = slurp(t_path(name), &len);
        cr_assert_eq(len, 200, "change %d: %zu bytes after the reboot", how, len);
        cr_assert(memcmp(p, a, 100) == 0 && memcmp(p + 100, b, 100) == 0, "change %d", how);
        free(p);
    }
}

/* A write that failed part way left its prefix in the file (asyncfs.h): kept at a reboot that
 * keeps what was written, as the rest of the program's writes. */
T_CRASH(the_prefix_a_failed_write_left_is_a_change_like_any_other)
{
    crash_ctx(AFS_CRASH_KEEP, 14);
    struct afs_file *f;
    cr_assert_eq(afs_create(t_ctx, t_path("p"), AFS_MODE_SYNC, &f), 0);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 1000;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    static unsigned char x[4096];
    fill_byte(x, sizeof x, 'X');
    ssize_t r = afs_pwrite(f, x, sizeof x, 0);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    cr_assert_eq(r, -EFBIG, "%zd", r);
    cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
    size_t len;
    unsigned char *p = slurp(t_path("p"), &len);
    cr_assert_eq(len, 1000, "%zu bytes after the reboot, 1000 before", len);
    for (size_t i = 0; i < len; i++)
        cr_assert_eq(p[i], 'X', "byte %zu", i);
    free(p);
}

/* fsync(2) syncs the file whatever descriptor it is given: a read-only handle's, or another
 * descriptor of the file. */
T_CRASH(an_fsync_through_another_descriptor_of_the_file_makes_its_writes_durable)
{
    for (int how = 0; how < 2; how++) {
        crash_ctx(AFS_CRASH_DROP, 12);
        struct afs_file *f = synced_then_dirty(), *ro = NULL;
        if (how == 0) {
            cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &ro), 0);
            cr_assert_eq(afs_fsync(ro, AFS_FSYNC_DATA), 0);
        } else {
            int fd = afs_openat(t_ctx, AFS_AT_FDCWD, t_path("f"), AFS_RDWR, 0);
            cr_assert_geq(fd, 0);
            cr_assert_eq(afs_fsync_fd(t_ctx, fd, AFS_FSYNC_DATA), 0);
            cr_assert_eq(afs_close_fd(t_ctx, fd), 0);
        }
        (void)f;
        cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
        afs_ctx_free(t_ctx);
        t_ctx = NULL;
        size_t len;
        unsigned char *p = slurp(t_path("f"), &len);
        cr_assert_eq(len, 10 * SEC, "way %d: size %zu", how, len);
        for (size_t i = 0; i < len; i++)
            cr_assert_eq(p[i], i < 8 * SEC ? 'B' : 'C', "way %d: byte %zu is %c", how, i, p[i]);
        free(p);
    }
}

/* The program dies with a stream open and a pipe's read waiting (AFS_NONBLOCK: no pool thread
 * blocked inside it, see afs_close()): the reboot closes the stream (its buffer lost) and
 * cancels the read, as afs_ctx_free() would. */
T_CRASH(the_reboot_closes_streams_and_ends_reads_that_wait_on_a_pipe)
{
    crash_ctx(AFS_CRASH_KEEP, 13);
    struct afs_stream *s;
    cr_assert_eq(afs_fopen(t_ctx, t_path("s"), "w", &s), 0);
    cr_assert_eq(afs_fwrite("lost", 1, 4, s), 4);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct afs_file *rd;
    cr_assert_eq(afs_file_from_fd(t_ctx, p[0], AFS_RDONLY | AFS_NONBLOCK, AFS_MODE_ASYNC, &rd), 0);
    char buf[16];
    cr_assert_eq(afs_read(rd, buf, sizeof buf), 0);
    cr_assert_eq(afs_crash_reboot(t_ctx, NULL), 0);
    close(p[1]);
    struct stat st;
    cr_assert_eq(stat(t_path("s"), &st), 0);
    cr_assert_eq(st.st_size, 0, "the stream's buffer was never written");
}

/* AFS_CRASH_STRICT_DIRS: a directory whose own name was never synced goes at the reboot, even
 * when names inside it were made durable by a sync of it. */
T_CRASH(strict_a_directory_never_synced_in_its_parent_goes_with_what_it_holds)
{
    strict_ctx();
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("D"), 0755), 0);
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("D/sub"), 0755), 0);
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("D/sub/f"), AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_SYNC,
                          &f), 0);
    cr_assert_eq(afs_pwrite(f, "data", 4, 0), 4);
    cr_assert_eq(afs_fsync(f, 0), 0);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("D/sub")), 0);
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("D")), 0);
    struct afs_crash_report rep;
    cr_assert_eq(afs_crash_reboot(t_ctx, &rep), 0);
    cr_assert(!exists(t_path("D")), "D's name was never durable");
    cr_assert_eq(rep.names_undone, 1, "undone %llu", (unsigned long long)rep.names_undone);
}
#endif
