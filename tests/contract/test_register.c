/* Registered buffers and files (afs_ctx_register_buffers/files), on every backend: on
 * io_uring the ops inside registered memory go as READ_FIXED/WRITE_FIXED and the AFS_DIRECT
 * files by their slot in the table; elsewhere the calls are accepted as no-ops and say so.
 * Throughout: the bytes are right whatever the registration did, and a registration the
 * kernel refuses (the locked-memory limit) falls back without failing any I/O. */
#include "../common.h"

#include "internal.h" /* afs__sys: the enter hook that looks at the SQEs */

#include <inttypes.h>

#ifndef _WIN32
#include <sys/resource.h>
#include <sys/wait.h>
#endif
#if defined(__linux__) && defined(AFS_HAVE_URING)
#include <liburing.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#define HAVE_URING_HOOKS 1
#endif

#define T_REG(name, ...)                                                                      \
    Test(reg, name, .init = t_setup, .fini = t_teardown, .timeout = 60, ##__VA_ARGS__)

enum { BS = 4096, NBLK = 64 };

static bool on_uring(void)
{
    return strcmp(afs_ctx_backend(t_ctx), "io_uring") == 0;
}

static struct afs_ctx *reg_ctx(void)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.sync_threshold = 0; /* every op through the backend */
    t_ctx = t_ctx_cfg(&cfg);
    return t_ctx;
}

/* A file of NBLK blocks whose bytes are the pattern at offset + seed (files told apart). */
static void make_seeded(const char *path, uint64_t seed)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    static char buf[NBLK * BS];
    t_fill(buf, sizeof buf, seed);
    cr_assert_eq(pwrite(fd, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    close(fd);
}

/* Opens path AFS_DIRECT where the file system allows it, else buffered. */
static struct afs_file *open_rw(const char *path, bool *direct)
{
    struct afs_file *f = NULL;
    int err = afs_open(t_ctx, path, AFS_RDWR | AFS_CREAT | AFS_DIRECT, 0644, AFS_MODE_ASYNC,
                       &f);
    *direct = err == 0;
    if (err == -EINVAL)
        err = afs_open(t_ctx, path, AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_ASYNC, &f);
    cr_assert_eq(err, 0, "afs_open %s: %s", path, afs_strerror(err));
    return f;
}

static int done_count;
static ssize_t results[NBLK];

static void on_done(struct afs_op *op)
{
    results[(intptr_t)op->data] = op->result;
    done_count++;
}

static void wait_for(int n)
{
    while (done_count < n) {
        int r = afs_ctx_wait(t_ctx, 1, -1);
        cr_assert_geq(r, 0, "afs_ctx_wait: %s", afs_strerror(r));
    }
}

#ifdef HAVE_URING_HOOKS
/* SQEs handed to the kernel, by kind (ops only: user_data 1 and 2 are the backend's own). */
static unsigned sqe_read_fixed, sqe_write_fixed, sqe_plain, sqe_fixed_file;

static int sqe_enter(struct io_uring *ring, unsigned wait_nr, struct __kernel_timespec *ts)
{
    struct io_uring_sq *sq = &ring->sq;
    for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
        const struct io_uring_sqe *sqe = &sq->sqes[i & *sq->kring_mask];
        if (sqe->user_data <= 2)
            continue;
        if (sqe->opcode == IORING_OP_READ_FIXED)
            sqe_read_fixed++;
        else if (sqe->opcode == IORING_OP_WRITE_FIXED)
            sqe_write_fixed++;
        else
            sqe_plain++;
        sqe_fixed_file += (sqe->flags & IOSQE_FIXED_FILE) != 0;
    }
    return afs__uring_enter_real(ring, wait_nr, ts);
}
#endif

static struct afs__syscalls saved_sys;

static void hooks_on(void)
{
    saved_sys = afs__sys;
#ifdef HAVE_URING_HOOKS
    sqe_read_fixed = sqe_write_fixed = sqe_plain = sqe_fixed_file = 0;
    afs__sys.uring_enter = sqe_enter;
#endif
}

/* Restored only once the ops are done (a pool thread may still read the table). */
static void hooks_off(void)
{
    afs__sys = saved_sys;
}

/* Writes the pattern through `src` (n blocks at block offsets 0..n-1 of f), then reads it
 * back into `dst` and checks every byte. */
static void write_then_read(struct afs_file *f, char *src, char *dst, int n)
{
    static struct afs_op ops[NBLK];
    t_fill(src, (size_t)n * BS, 0);
    done_count = 0;
    for (int i = 0; i < n; i++)
        cr_assert_eq(afs_queue_write(&ops[i], f, src + (size_t)i * BS, BS, (uint64_t)i * BS,
                                     on_done, (void *)(intptr_t)i), 0);
    wait_for(n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(results[i], BS, "write %d: %zd", i, results[i]);
    memset(dst, 0, (size_t)n * BS);
    done_count = 0;
    for (int i = 0; i < n; i++)
        cr_assert_eq(afs_queue_read(&ops[i], f, dst + (size_t)i * BS, BS, (uint64_t)i * BS,
                                    on_done, (void *)(intptr_t)i), 0);
    wait_for(n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(results[i], BS, "read %d: %zd", i, results[i]);
        cr_assert(t_check(dst + (size_t)i * BS, BS, (uint64_t)i * BS), "read %d: wrong bytes", i);
    }
}

T_REG(registered_buffer_reads_and_writes_are_byte_correct)
{
    reg_ctx();
    bool direct;
    struct afs_file *f = open_rw(t_path("f"), &direct);
    char *src = afs_buf_alloc(t_ctx, 16 * BS), *dst = afs_buf_alloc(t_ctx, 16 * BS);
    struct iovec iov[2] = {{dst, 16 * BS}, {src, 16 * BS}}; /* not in address order */
    hooks_on();
    int r = afs_ctx_register_buffers(t_ctx, iov, 2);
    struct afs_registration info;
    afs_ctx_registration(t_ctx, &info);
    if (on_uring()) {
        cr_assert_eq(r, 1, "io_uring: registered (%s)", info.buffers_why);
        cr_assert_eq(info.buffers, 2);
        cr_assert_null(info.buffers_why);
    } else {
        cr_assert_eq(r, 0, "%s: accepted as a no-op", afs_ctx_backend(t_ctx));
        cr_assert_eq(info.buffers, 0);
        cr_assert_not_null(info.buffers_why, "the reason is given");
        cr_assert(strstr(info.buffers_why, afs_ctx_backend(t_ctx)), "%s", info.buffers_why);
    }
    struct afs_stats s0, s1;
    afs_ctx_stats(t_ctx, &s0);
    write_then_read(f, src, dst, 16);
    afs_ctx_stats(t_ctx, &s1);
    hooks_off();
    uint64_t fixed = s1.fixed_buffer_ops - s0.fixed_buffer_ops;
    if (on_uring()) {
        cr_assert_eq(fixed, 32, "every op was inside a registered range: %" PRIu64, fixed);
#ifdef HAVE_URING_HOOKS
        cr_assert_eq(sqe_write_fixed, 16, "WRITE_FIXED SQEs: %u", sqe_write_fixed);
        cr_assert_eq(sqe_read_fixed, 16, "READ_FIXED SQEs: %u", sqe_read_fixed);
#endif
    } else {
        cr_assert_eq(fixed, 0);
    }
    /* After unregistering, the same buffers are plain ones, and the bytes still right. */
    cr_assert_eq(afs_ctx_unregister_buffers(t_ctx), 0);
    afs_ctx_registration(t_ctx, &info);
    cr_assert_eq(info.buffers, 0);
    cr_assert_null(info.buffers_why);
    afs_ctx_stats(t_ctx, &s0);
    write_then_read(f, src, dst, 16);
    afs_ctx_stats(t_ctx, &s1);
    cr_assert_eq(s1.fixed_buffer_ops, s0.fixed_buffer_ops, "no fixed op after unregistering");
    cr_assert_eq(afs_ctx_unregister_buffers(t_ctx), 0, "a second unregister is harmless");
    cr_assert_eq(afs_close(f), 0);
    afs_buf_free(t_ctx, src, 16 * BS);
    afs_buf_free(t_ctx, dst, 16 * BS);
    (void)direct;
}

T_REG(an_op_straddling_a_registered_range_is_still_correct)
{
    reg_ctx();
    bool direct;
    struct afs_file *f = open_rw(t_path("f"), &direct);
    char *big = afs_buf_alloc(t_ctx, 16 * BS);
    /* Registered: blocks 0-3 and 8-11 of big; 4-7 and 12-15 are not. */
    struct iovec iov[2] = {{big, 4 * BS}, {big + 8 * BS, 4 * BS}};
    int r = afs_ctx_register_buffers(t_ctx, iov, 2);
    cr_assert_eq(r, on_uring() ? 1 : 0);
    t_make_file(t_path("f"), 16 * BS);
    hooks_on();
    struct { size_t at, len; bool fixed; } cases[] = {
        {0, 4 * BS, true},       /* exactly the first range */
        {3 * BS, 2 * BS, false}, /* straddles the first range's end */
        {5 * BS, BS, false},     /* in the gap */
        {7 * BS, 2 * BS, false}, /* straddles the second range's start */
        {9 * BS, 3 * BS, true},  /* inside the second, up to its end */
        {11 * BS, 2 * BS, false} /* straddles the second range's end */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct afs_stats s0, s1;
        afs_ctx_stats(t_ctx, &s0);
        memset(big, 0, 16 * BS);
        ssize_t n = afs_pread(f, big + cases[k].at, cases[k].len, BS);
        cr_assert_eq(n, (ssize_t)cases[k].len, "case %zu: %zd", k, n);
        cr_assert(t_check(big + cases[k].at, cases[k].len, BS), "case %zu: wrong bytes", k);
        /* A write from the same place, read back with a plain buffer. */
        t_fill(big + cases[k].at, cases[k].len, 5 * BS);
        cr_assert_eq(afs_pwrite(f, big + cases[k].at, cases[k].len, 5 * BS),
                     (ssize_t)cases[k].len);
        afs_ctx_stats(t_ctx, &s1);
        uint64_t fixed = s1.fixed_buffer_ops - s0.fixed_buffer_ops;
        cr_assert_eq(fixed, on_uring() && cases[k].fixed ? 2u : 0u, "case %zu: %" PRIu64
                     " fixed ops", k, fixed);
        char *check = afs_buf_alloc(t_ctx, 4 * BS);
        cr_assert_eq(afs_pread(f, check, cases[k].len, 5 * BS), (ssize_t)cases[k].len);
        cr_assert(t_check(check, cases[k].len, 5 * BS), "case %zu: written bytes", k);
        afs_buf_free(t_ctx, check, 4 * BS);
        t_make_file(t_path("f"), 16 * BS); /* fresh pattern for the next case */
    }
    hooks_off();
    cr_assert_eq(afs_close(f), 0);
    afs_buf_free(t_ctx, big, 16 * BS);
    (void)direct;
}

T_REG(bad_registrations_are_refused_and_change_nothing)
{
    reg_ctx();
    char *b = afs_buf_alloc(t_ctx, 8 * BS);
    struct iovec ok = {b, 8 * BS};
    struct iovec overlap[2] = {{b, 4 * BS}, {b + 3 * BS, 4 * BS}};
    struct iovec zero = {b, 0}, null = {NULL, BS};
    struct iovec huge = {b, AFS_MAX_REG_BUFFER_SIZE + 1};
    cr_assert_eq(afs_ctx_register_buffers(t_ctx, NULL, 1), -EINVAL);
    cr_assert_eq(afs_ctx_register_buffers(t_ctx, &ok, 0), -EINVAL);
    cr_assert_eq(afs_ctx_register_buffers(t_ctx, &ok, AFS_MAX_REG_BUFFERS + 1), -EINVAL);
    cr_assert_eq(afs_ctx_register_buffers(t_ctx, overlap, 2), -EINVAL);
    cr_assert_eq(afs_ctx_register_buffers(t_ctx, &zero, 1), -EINVAL);
    cr_assert_eq(afs_ctx_register_buffers(t_ctx, &null, 1), -EINVAL);
    cr_assert_eq(afs_ctx_register_buffers(t_ctx, &huge, 1), -EINVAL);
    cr_assert_eq(afs_ctx_register_files(t_ctx, 0), -EINVAL);
    cr_assert_eq(afs_ctx_register_files(t_ctx, AFS_MAX_REG_FILES + 1), -EINVAL);
    struct afs_registration info;
    afs_ctx_registration(t_ctx, &info);
    cr_assert_eq(info.buffers + info.file_slots + info.files, 0);
    cr_assert_null(info.buffers_why, "nothing was registered, so there is nothing to explain");
    cr_assert_null(info.files_why);
    /* Once registered (or accepted as a no-op), again is -EBUSY until unregistered. */
    cr_assert_geq(afs_ctx_register_buffers(t_ctx, &ok, 1), 0);
    cr_assert_eq(afs_ctx_register_buffers(t_ctx, &ok, 1), -EBUSY);
    cr_assert_eq(afs_ctx_unregister_buffers(t_ctx), 0);
    cr_assert_geq(afs_ctx_register_buffers(t_ctx, &ok, 1), 0);
    cr_assert_geq(afs_ctx_register_files(t_ctx, 4), 0);
    cr_assert_eq(afs_ctx_register_files(t_ctx, 4), -EBUSY);
    cr_assert_eq(afs_ctx_unregister_files(t_ctx), 0);
    cr_assert_eq(afs_ctx_unregister_files(t_ctx), 0);
    /* t_teardown frees the context with the buffers still registered: it drops them. */
    afs_buf_free(t_ctx, b, 8 * BS);
}

#ifndef _WIN32
/* Drops CAP_IPC_LOCK from this process (root ignores RLIMIT_MEMLOCK with it); harmless
 * where it is not held. */
static void drop_ipc_lock(void)
{
#ifdef HAVE_URING_HOOKS
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) == 0) {
        d[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
        d[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
        (void)syscall(SYS_capset, &h, d);
    }
#endif
}

/* In a child: the context is made, then RLIMIT_MEMLOCK goes to 0, then 1 MiB is registered.
 * Exit status: 0 fine, 77 the kernel pinned the memory all the same (nothing to test),
 * else the line that failed. */
static int memlock_child(void)
{
#define CHILD_CHECK(c)                                                                        \
    do {                                                                                      \
        if (!(c)) {                                                                           \
            fprintf(stderr, "memlock child: line %d: %s\n", __LINE__, #c);                   \
            return 1;                                                                         \
        }                                                                                     \
    } while (0)
    drop_ipc_lock();
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.sync_threshold = 0;
    struct afs_ctx *c = NULL;
    CHILD_CHECK(afs_ctx_new(&c, &cfg) == 0);
    struct rlimit rl = {0, 0};
    CHILD_CHECK(setrlimit(RLIMIT_MEMLOCK, &rl) == 0);
    enum { SZ = 1 << 20 };
    char *buf = afs_buf_alloc(c, SZ);
    CHILD_CHECK(buf != NULL);
    struct iovec iov = {buf, SZ};
    int r = afs_ctx_register_buffers(c, &iov, 1);
    struct afs_registration info;
    afs_ctx_registration(c, &info);
    if (r == 1)
        return 77;
    CHILD_CHECK(r == 0);
    CHILD_CHECK(info.buffers == 0);
    CHILD_CHECK(info.buffers_why != NULL);
    fprintf(stderr, "memlock child (%s): %s\n", afs_ctx_backend(c), info.buffers_why);
    if (!strcmp(afs_ctx_backend(c), "io_uring"))
        CHILD_CHECK(strstr(info.buffers_why, "ENOMEM") && strstr(info.buffers_why, "MEMLOCK"));
    /* The I/O works all the same, through plain ops. */
    struct afs_file *f = NULL;
    CHILD_CHECK(afs_open(c, t_path("m"), AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_SYNC, &f) == 0);
    t_fill(buf, SZ, 0);
    CHILD_CHECK(afs_pwrite(f, buf, SZ, 0) == SZ);
    memset(buf, 0, SZ);
    CHILD_CHECK(afs_pread(f, buf, SZ, 0) == SZ);
    CHILD_CHECK(t_check(buf, SZ, 0));
    struct afs_stats st;
    afs_ctx_stats(c, &st);
    CHILD_CHECK(st.fixed_buffer_ops == 0);
    CHILD_CHECK(afs_close(f) == 0);
    afs_buf_free(c, buf, SZ);
    afs_ctx_free(c);
    return 0;
#undef CHILD_CHECK
}

T_REG(memlock_too_low_falls_back_and_the_io_succeeds)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0)
        _exit(memlock_child());
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "the child died of signal %d", WTERMSIG(status));
    if (WEXITSTATUS(status) == 77)
        cr_skip_test("the kernel pinned the memory under RLIMIT_MEMLOCK 0 (CAP_IPC_LOCK kept?)");
    cr_assert_eq(WEXITSTATUS(status), 0, "the child failed (its stderr says where)");
}
#endif

/* Reads block `blk` of f (its pattern seeded with `seed`) into buf and checks it. */
static void check_block(struct afs_file *f, char *buf, int blk, uint64_t seed)
{
    ssize_t n = afs_pread(f, buf, BS, (uint64_t)blk * BS);
    cr_assert_eq(n, BS, "pread: %zd", n);
    cr_assert(t_check(buf, BS, seed + (uint64_t)blk * BS),
              "block %d of the file seeded %" PRIu64 ": another file's bytes?", blk, seed);
}

T_REG(files_opened_and_closed_with_ops_in_flight_keep_the_table_right)
{
    reg_ctx();
    enum { SLOTS = 3 };
    const uint64_t seeds[5] = {0, 1000003, 2000029, 3000017, 4000037};
    for (int i = 0; i < 5; i++) {
        char name[8];
        snprintf(name, sizeof name, "f%d", i);
        make_seeded(t_path(name), seeds[i]);
    }
    int r = afs_ctx_register_files(t_ctx, SLOTS);
    struct afs_registration info;
    afs_ctx_registration(t_ctx, &info);
    cr_assert_eq(r, on_uring() ? 1 : 0, "%s", info.files_why ? info.files_why : "");
    cr_assert_eq(info.file_slots, on_uring() ? SLOTS : 0u);
    struct afs_file *f[5] = {0};
    int err = afs_open(t_ctx, t_path("f0"), AFS_RDONLY | AFS_DIRECT, 0, AFS_MODE_ASYNC, &f[0]);
    if (err == -EINVAL)
        cr_skip_test("no O_DIRECT on this file system");
    cr_assert_eq(err, 0);
    char *bufs = afs_buf_alloc(t_ctx, NBLK * BS);
    hooks_on();
    /* Every block of f0 in flight while others open and close. */
    static struct afs_op ops[NBLK];
    done_count = 0;
    for (int i = 0; i < NBLK; i++)
        cr_assert_eq(afs_queue_read(&ops[i], f[0], bufs + (size_t)i * BS, BS, (uint64_t)i * BS,
                                    on_done, (void *)(intptr_t)i), 0);
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    for (int i = 1; i <= 3; i++) {
        char name[8];
        snprintf(name, sizeof name, "f%d", i);
        cr_assert_eq(afs_open(t_ctx, t_path(name), AFS_RDONLY | AFS_DIRECT, 0, AFS_MODE_ASYNC,
                              &f[i]), 0);
    }
    afs_ctx_registration(t_ctx, &info);
    cr_assert_eq(info.files, on_uring() ? 3u : 0u, "f0, f1, f2 hold the slots: %u", info.files);
    cr_assert_eq(afs_close(f[1]), 0); /* frees its slot, f0's reads still in flight */
    f[1] = NULL;
    cr_assert_eq(afs_open(t_ctx, t_path("f4"), AFS_RDONLY | AFS_DIRECT, 0, AFS_MODE_ASYNC,
                          &f[4]), 0);
    afs_ctx_registration(t_ctx, &info);
    cr_assert_eq(info.files, on_uring() ? 3u : 0u, "f4 took f1's slot: %u", info.files);
    wait_for(NBLK);
    for (int i = 0; i < NBLK; i++) {
        cr_assert_eq(results[i], BS);
        cr_assert(t_check(bufs + (size_t)i * BS, BS, seeds[0] + (uint64_t)i * BS),
                  "f0 block %d", i);
    }
    /* Each file reads its own bytes, slotted or not (f3 found no free slot). */
    char *one = afs_buf_alloc(t_ctx, BS);
    for (int blk = 0; blk < NBLK; blk += 7)
        for (int i = 0; i < 5; i++)
            if (f[i])
                check_block(f[i], one, blk, seeds[i]);
    struct afs_stats st;
    afs_ctx_stats(t_ctx, &st);
    hooks_off();
    if (on_uring()) {
        cr_assert_geq(st.fixed_file_ops, NBLK, "f0's reads named its slot: %" PRIu64,
                      st.fixed_file_ops);
#ifdef HAVE_URING_HOOKS
        cr_assert_eq(sqe_fixed_file, st.fixed_file_ops);
#endif
    } else {
        cr_assert_eq(st.fixed_file_ops, 0);
    }
    /* Without the table the files go on through their descriptors. */
    cr_assert_eq(afs_ctx_unregister_files(t_ctx), 0);
    afs_ctx_registration(t_ctx, &info);
    cr_assert_eq(info.files + info.file_slots, 0);
    for (int i = 0; i < 5; i++)
        if (f[i]) {
            check_block(f[i], one, 3, seeds[i]);
            cr_assert_eq(afs_close(f[i]), 0);
        }
    afs_buf_free(t_ctx, one, BS);
    afs_buf_free(t_ctx, bufs, NBLK * BS);
}

T_REG(files_open_before_the_table_get_slots_and_buffered_files_do_not)
{
    reg_ctx();
    make_seeded(t_path("d"), 7);
    make_seeded(t_path("b"), 11);
    struct afs_file *d = NULL, *b = NULL;
    int err = afs_open(t_ctx, t_path("d"), AFS_RDONLY | AFS_DIRECT, 0, AFS_MODE_SYNC, &d);
    if (err == -EINVAL)
        cr_skip_test("no O_DIRECT on this file system");
    cr_assert_eq(afs_open(t_ctx, t_path("b"), AFS_RDONLY, 0, AFS_MODE_SYNC, &b), 0);
    afs_ctx_register_files(t_ctx, 8);
    struct afs_registration info;
    afs_ctx_registration(t_ctx, &info);
    cr_assert_eq(info.files, on_uring() ? 1u : 0u, "only the AFS_DIRECT file: %u", info.files);
    char *one = afs_buf_alloc(t_ctx, BS);
    check_block(d, one, 5, 7);
    check_block(b, one, 5, 11);
    cr_assert_eq(afs_close(d), 0);
    cr_assert_eq(afs_close(b), 0);
    afs_ctx_registration(t_ctx, &info);
    cr_assert_eq(info.files, 0);
    afs_buf_free(t_ctx, one, BS);
}

#ifdef HAVE_URING_HOOKS
/* The io-wq cap is the thread's: a ring of the test's own on the same thread reads it back
 * (max_workers with zeros only asks). */
static unsigned iowq_bounded(void)
{
    struct io_uring ring;
    cr_assert_eq(io_uring_queue_init(4, &ring, 0), 0);
    unsigned vals[2] = {0, 0};
    int r = io_uring_register_iowq_max_workers(&ring, vals);
    io_uring_queue_exit(&ring);
    if (r < 0)
        cr_skip_test("kernel without IORING_REGISTER_IOWQ_MAX_WORKERS (5.15)");
    return vals[0];
}

T_REG(io_workers_caps_the_kernels_workers)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.io_workers = 3;
    t_ctx = t_ctx_cfg(&cfg);
    if (!on_uring())
        cr_skip_test("backend under test is %s, not io_uring", afs_ctx_backend(t_ctx));
    cr_assert_eq(iowq_bounded(), 3);
    struct afs_offload o;
    afs_ctx_offload(t_ctx, &o);
    cr_assert_eq(o.io_workers, 3, "afs_offload.io_workers %u", o.io_workers);
    afs_ctx_free(t_ctx);
    afs_config_default(&cfg); /* the default: one per CPU, at least 2 */
    t_ctx = t_ctx_cfg(&cfg);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cr_assert_eq(iowq_bounded(), n < 2 ? 2u : (unsigned)n);
    afs_ctx_offload(t_ctx, &o);
    cr_assert_eq(o.io_workers, n < 2 ? 2u : (unsigned)n, "afs_offload.io_workers %u", o.io_workers);
    afs_ctx_free(t_ctx);
    cfg.io_workers = AFS_IO_WORKERS_KERNEL; /* no cap set: reported as 0 */
    t_ctx = t_ctx_cfg(&cfg);
    afs_ctx_offload(t_ctx, &o);
    cr_assert_eq(o.io_workers, 0, "afs_offload.io_workers %u", o.io_workers);
}
#endif

/* The two forced offload regimes exclude each other, on every backend (the others ignore
 * either alone). */
T_REG(inline_and_offload_together_are_einval)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.flags = AFS_CTX_INLINE_DIRECT | AFS_CTX_OFFLOAD_DIRECT;
    struct afs_ctx *c = NULL;
    cr_assert_eq(afs_ctx_new(&c, &cfg), -EINVAL);
    cr_assert_null(c);
    cr_assert(strstr(afs_last_ctx_error(), "AFS_CTX_OFFLOAD_DIRECT"), "%s", afs_last_ctx_error());
    cfg.flags = AFS_CTX_OFFLOAD_DIRECT;
    t_ctx = t_ctx_cfg(&cfg);
    struct afs_offload o;
    afs_ctx_offload(t_ctx, &o);
    cr_assert_eq(o.offloading, on_uring() ? 1 : 0, "forced: offloading from the start");
}
