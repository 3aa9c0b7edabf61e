/* afs_cancel of an op that is really in flight, on every backend, made deterministic: the
 * transfer is held until the test has cancelled it, so a cancel that does nothing cannot
 * pass by "the op completed anyway".
 *
 * How each backend holds a read:
 *   threads, libaio  the op runs on the thread pool (libaio sends buffered files there); the
 *                    pool's pread goes through the system-call table, and the hook below
 *                    blocks in it until the test releases it, after afs_cancel. A worker
 *                    cannot be stopped inside a system call: the op completes with
 *                    -ECANCELED once the worker has returned. On Windows the threads
 *                    backend's pool goes through the same table's pread.
 *   io_uring,        a read of an empty FIFO, which the kernel (io_uring) or the readiness
 *   posix-aio        engine (posix-aio: files without offsets never go to POSIX AIO) holds
 *                    until data comes, and cancels. The test then writes one byte: a
 *                    cancelled op never resubmits the rest of a short transfer, it completes
 *                    with -ECANCELED. (A read held inside POSIX AIO itself: test_posix_aio.c.)
 *   iocp             a read of an empty named pipe (Windows): the test is the server end, the
 *                    library opens the client end by its \\.\pipe\ name. The ReadFile stays
 *                    pending until data comes; CancelIoEx ends it with
 *                    ERROR_OPERATION_ABORTED, and no byte leaves the pipe.
 *   sync             runs every op to its end inside the submit: nothing is ever in flight,
 *                    and a cancel after the submit leaves the result alone.
 * In every case: the callback runs exactly once, with -ECANCELED, and the buffer is not
 * written after it.
 *
 * Also here: a close that fails with -EIO (through the same table) is reported by afs_close,
 * and the descriptor and the file are gone all the same. */
#include "../common.h"

#include "internal.h" /* afs__queue_seq */

#include "platform.h"

#include <stdatomic.h>
#include <sys/stat.h>

#define BS 4096

static struct afs__syscalls saved;

static void c_setup(void)
{
    t_setup();
    saved = afs__sys;
}

static void release(void);
#ifdef _WIN32
static HANDLE pipe_srv = INVALID_HANDLE_VALUE; /* cancel_a_pipe_read's server end */
#endif

static void c_teardown(void)
{
    release(); /* a failed test must not leave a worker held (the context waits for it) */
#ifdef _WIN32
    /* Nor a read pending on the pipe: without the server end it ends (broken pipe). */
    if (pipe_srv != INVALID_HANDLE_VALUE)
        CloseHandle(pipe_srv);
    pipe_srv = INVALID_HANDLE_VALUE;
#endif
    afs__sys = saved;
    t_teardown();
}

#define T_CANCEL(name) Test(cancel, name, .init = c_setup, .fini = c_teardown, .timeout = 60)

/* ------------------------------------------------------------------------------------------
 * The hold: a pread on one fd blocks until released, then really reads.
 * ---------------------------------------------------------------------------------------- */

static struct hold {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    afs__fd_t       fd;        /* the fd whose first pread is held */
    bool            entered;   /* a worker is inside the held pread */
    bool            released;  /* the test let it go on */
    atomic_bool     returned;  /* the held pread wrote the buffer and returned */
    atomic_bool     late;      /* it wrote the buffer after the callback had run */
} h = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .fd = AFS__FD_NONE};

static struct cb_log {
    atomic_int  calls;
    ssize_t     result;
    bool        pread_was_done; /* the held pread had returned when the callback ran */
} lg;

/* The worker in a held call: says so, and waits until the test releases it. */
static void hold_here(void)
{
    pthread_mutex_lock(&h.mu);
    h.fd = AFS__FD_NONE; /* only the first one */
    h.entered = true;
    pthread_cond_broadcast(&h.cv);
    while (!h.released)
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);
}

static ssize_t hold_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    if (fd != h.fd)
        return saved.pread(fd, buf, len, off);
    hold_here();
    ssize_t r = saved.pread(fd, buf, len, off);
    if (atomic_load(&lg.calls) > 0)
        atomic_store(&h.late, true);
    atomic_store(&h.returned, true);
    return r;
}

static void log_cb(struct afs_op *op)
{
    lg.result = op->result;
    lg.pread_was_done = atomic_load(&h.returned);
    atomic_fetch_add(&lg.calls, 1);
}

/* Waits until a worker is in the held pread (10 s: a guard against a hang, not a bound). */
static bool wait_entered(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&h.mu);
    while (!h.entered)
        if (pthread_cond_timedwait(&h.cv, &h.mu, &ts) != 0)
            break;
    bool in = h.entered;
    pthread_mutex_unlock(&h.mu);
    return in;
}

static void release(void)
{
    pthread_mutex_lock(&h.mu);
    h.released = true;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
}

/* Runs the context until the callback ran, for at most 10 seconds. */
static void wait_callback(struct afs_ctx *c)
{
    for (int i = 0; i < 100 && atomic_load(&lg.calls) == 0; i++)
        cr_assert_geq(afs_ctx_wait(c, 1, 100LL * 1000 * 1000), 0);
    cr_assert_eq(atomic_load(&lg.calls), 1,
                 "no callback 10 s after afs_cancel: the cancel was ignored");
}

/* A few more turns of the context: nothing else may arrive. */
static void settle(struct afs_ctx *c)
{
    for (int i = 0; i < 3; i++)
        cr_assert_geq(afs_ctx_wait(c, 0, 0), 0);
    cr_assert_eq(atomic_load(&lg.calls), 1, "the callback ran %d times", atomic_load(&lg.calls));
}

static struct afs_ctx *ctx_under_test(void)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.sync_threshold = 0; /* every op through the backend */
    t_ctx = t_ctx_cfg(&cfg);
    return t_ctx;
}

static const char *be(void)
{
    return afs_ctx_backend(t_ctx);
}

/* threads, libaio: the pool's pread is held until afs_cancel has been called. */
static void cancel_on_the_pool(void)
{
    t_make_file(t_path("f"), BS);
    struct afs_file *f = NULL;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_ASYNC, &f), 0);
    h.fd = (afs__fd_t)afs_file_fd(f);
    afs__sys.pread = hold_pread;

    static char buf[BS];
    memset(buf, 0xee, sizeof buf);
    struct afs_op op = {0};
    cr_assert_eq(afs_queue_read(&op, f, buf, BS, 0, log_cb, NULL), 0);
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    cr_assert(wait_entered(), "the read never reached the pool's pread");
    cr_assert_eq(afs_cancel(&op), 0);
    /* A callback now would be too early: the worker is still in the pread. */
    for (int i = 0; i < 3; i++)
        cr_assert_geq(afs_ctx_wait(t_ctx, 0, 0), 0);
    cr_assert_eq(atomic_load(&lg.calls), 0,
                 "the callback ran while a worker could still write the buffer");
    release();
    wait_callback(t_ctx);
    settle(t_ctx);
    cr_assert_eq(lg.result, -ECANCELED, "%s: a cancelled read completed with %zd", be(),
                 lg.result);
    cr_assert(lg.pread_was_done, "the callback ran before the worker's pread returned");
    cr_assert(!atomic_load(&h.late), "the buffer was written after the callback");
    cr_assert_eq(afs_close(f), 0);
}

#ifndef _WIN32
/* io_uring, posix-aio: a read of an empty FIFO. */
static void cancel_a_fifo_read(void)
{
    const char *p = t_path("fifo");
    cr_assert_eq(mkfifo(p, 0600), 0, "mkfifo: %s", strerror(errno));
    struct afs_file *f = NULL;
    /* O_RDWR on a FIFO does not block in open on Linux, and the test writes through it. */
    cr_assert_eq(afs_open(t_ctx, p, AFS_RDWR, 0, AFS_MODE_ASYNC, &f), 0);
    int fd = (int)afs_file_fd(f);

    static char buf[BS];
    memset(buf, 0xee, sizeof buf);
    struct afs_op op = {0};
    /* A FIFO has no offsets: the op API refuses it (-ESPIPE), the core's sequential read
     * (the one afs_read and streams use) takes it. */
    cr_assert_eq(afs_queue_read(&op, f, buf, BS, 0, log_cb, NULL), -ESPIPE);
    cr_assert_eq(afs__queue_seq(&op, f, false, buf, BS, false, log_cb, NULL), 0);
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_geq(afs_ctx_wait(t_ctx, 0, 0), 0);
    cr_assert_eq(atomic_load(&lg.calls), 0, "a read of an empty FIFO completed: %zd",
                 lg.result);
    cr_assert_eq(afs_cancel(&op), 0);
    /* One byte for a read the OS could not cancel (glibc's AIO thread is inside read()):
     * a short transfer of a cancelled op ends it. Where the cancel worked, it stays in the
     * FIFO. Without a working cancel the op waits for the rest, and no callback comes. */
    cr_assert_eq(write(fd, "x", 1), 1);
    wait_callback(t_ctx);
    /* A cancelled transfer of a pipe that moved bytes reports them (they left the pipe):
     * the byte, when the read took it before the cancel reached the kernel or when the OS
     * could not cancel it. Without a working cancel the read would wait for BS bytes. */
    if (lg.result == 1)
        cr_assert_eq(buf[0], 'x', "%s: read 1 byte, not the one written", be());
    else
        cr_assert_eq(lg.result, -ECANCELED, "%s: a cancelled read completed with %zd", be(),
                     lg.result);

    /* Nothing reads the FIFO any more: data written now stays there, the buffer stays as
     * the callback left it. */
    static char after[BS], back[BS + 1];
    memcpy(after, buf, BS);
    static char data[BS];
    memset(data, 'y', BS);
    cr_assert_eq(write(fd, data, BS), BS);
    settle(t_ctx);
    cr_assert(memcmp(after, buf, BS) == 0, "the buffer was written after the callback");
    int fl = fcntl(fd, F_GETFL);
    cr_assert_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
    ssize_t n = read(fd, back, sizeof back);
    cr_assert(n == BS || n == BS + 1, "%zd bytes left in the FIFO: someone read it", n);
    cr_assert_eq(back[n - 1], 'y');
    cr_assert_eq(afs_close(f), 0);
}
#else
/* iocp: a read of an empty named pipe. Windows cancels a pending pipe read for good
 * (CancelIoEx: the read ends with ERROR_OPERATION_ABORTED and has taken nothing), so no byte
 * is written before the callback, unlike the FIFO case: with a cancel that does nothing the
 * read stays pending and no callback comes. */
static void cancel_a_pipe_read(void)
{
    char name[128];
    snprintf(name, sizeof name, "\\\\.\\pipe\\afs-cancel-%lu-%lu",
             (unsigned long)GetCurrentProcessId(), (unsigned long)GetTickCount());
    /* The server end, overlapped so that the test's write cannot block it; room for the
     * BS bytes written below. */
    pipe_srv = CreateNamedPipeA(name, PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED,
                                PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT, 1, 2 * BS,
                                2 * BS, 0, NULL);
    HANDLE srv = pipe_srv;
    cr_assert(srv != INVALID_HANDLE_VALUE, "CreateNamedPipe: error %lu",
              (unsigned long)GetLastError());
    struct afs_file *f = NULL;
    cr_assert_eq(afs_open(t_ctx, name, AFS_RDWR, 0, AFS_MODE_ASYNC, &f), 0);
    HANDLE cli = (HANDLE)afs_file_fd(f);
    /* The client is connected already: ConnectNamedPipe says so. */
    OVERLAPPED cov = {0};
    cov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
    cr_assert(!ConnectNamedPipe(srv, &cov) && GetLastError() == ERROR_PIPE_CONNECTED,
              "ConnectNamedPipe: error %lu", (unsigned long)GetLastError());

    static char buf[BS];
    memset(buf, 0xee, sizeof buf);
    struct afs_op op = {0};
    cr_assert_eq(afs_queue_read(&op, f, buf, BS, 0, log_cb, NULL), -ESPIPE);
    cr_assert_eq(afs__queue_seq(&op, f, false, buf, BS, false, log_cb, NULL), 0);
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_geq(afs_ctx_wait(t_ctx, 0, 0), 0);
    cr_assert_eq(atomic_load(&lg.calls), 0, "a read of an empty pipe completed: %zd",
                 lg.result);
    cr_assert_eq(afs_cancel(&op), 0);
    wait_callback(t_ctx);
    settle(t_ctx);
    cr_assert_eq(lg.result, -ECANCELED, "%s: a cancelled read completed with %zd", be(),
                 lg.result);
    for (size_t i = 0; i < BS; i++)
        cr_assert_eq((unsigned char)buf[i], 0xee, "the cancelled read wrote byte %zu", i);

    /* Nothing reads the pipe any more: data written now stays there, the buffer as it is. */
    static char data[BS], back[2 * BS];
    memset(data, 'y', BS);
    DWORD wrote = 0;
    BOOL ok = WriteFile(srv, data, BS, NULL, &cov);
    if (!ok && GetLastError() == ERROR_IO_PENDING)
        cr_assert_eq(WaitForSingleObject(cov.hEvent, 10000), WAIT_OBJECT_0,
                     "the pipe took no data (10 s)");
    cr_assert(GetOverlappedResult(srv, &cov, &wrote, FALSE), "WriteFile: error %lu",
              (unsigned long)GetLastError());
    cr_assert_eq(wrote, (DWORD)BS);
    settle(t_ctx);
    for (size_t i = 0; i < BS; i++)
        cr_assert_eq((unsigned char)buf[i], 0xee, "byte %zu written after the callback", i);
    DWORD got = 0, avail = 0;
    cr_assert(PeekNamedPipe(cli, back, sizeof back, &got, &avail, NULL), "PeekNamedPipe: %lu",
              (unsigned long)GetLastError());
    cr_assert_eq(avail, (DWORD)BS, "%lu bytes left in the pipe: someone read it",
                 (unsigned long)avail);
    cr_assert_eq(got, (DWORD)BS);
    cr_assert(memcmp(back, data, BS) == 0);
    cr_assert_eq(afs_close(f), 0);
    CloseHandle(cov.hEvent);
}
#endif

/* sync: the op is done when the submit returns; a cancel then changes nothing. */
static void cancel_after_a_sync_submit(void)
{
    t_make_file(t_path("f"), BS);
    struct afs_file *f = NULL;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_ASYNC, &f), 0);
    static char buf[BS];
    struct afs_op op = {0};
    cr_assert_eq(afs_queue_read(&op, f, buf, BS, 0, log_cb, NULL), 0);
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    /* What afs_cancel returns for an op that is done is test_ops.c's business; here: the
     * result stands. */
    (void)afs_cancel(&op);
    wait_callback(t_ctx);
    settle(t_ctx);
    cr_assert_eq(lg.result, BS);
    cr_assert(t_check(buf, BS, 0));
    cr_assert_eq(afs_close(f), 0);
}

T_CANCEL(an_op_in_flight_completes_cancelled_once_and_leaves_its_buffer)
{
    ctx_under_test();
    cr_log_info("backend %s", be());
    if (!strcmp(be(), "threads") || !strcmp(be(), "libaio"))
        cancel_on_the_pool();
#ifndef _WIN32
    else if (!strcmp(be(), "io_uring") || !strcmp(be(), "posix-aio"))
        cancel_a_fifo_read();
#else
    else if (!strcmp(be(), "iocp"))
        cancel_a_pipe_read();
#endif
    else if (!strcmp(be(), "sync"))
        cancel_after_a_sync_submit();
    else
        cr_assert_fail("no cancel test for backend %s", be());
}

static int hold_ftruncate(afs__fd_t fd, uint64_t size)
{
    if (fd == h.fd)
        hold_here();
    return saved.ftruncate(fd, size);
}

/* threads, libaio: an ftruncate a worker had started when it was cancelled ran; its result
 * says so (0), not -ECANCELED, which would read as "the size did not change". */
T_CANCEL(a_pool_ftruncate_cancelled_in_flight_reports_that_it_ran)
{
    ctx_under_test();
    if (strcmp(be(), "threads") && strcmp(be(), "libaio"))
        cr_skip_test("%s runs no ftruncate on a pool thread", be());
    struct afs_file *f = NULL;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDWR | AFS_CREAT, 0600, AFS_MODE_ASYNC, &f),
                 0);
    h.fd = (afs__fd_t)afs_file_fd(f);
    afs__sys.ftruncate = hold_ftruncate;
    struct afs_op op = {0};
    cr_assert_eq(afs_queue_ftruncate(&op, f, 12345, log_cb, NULL), 0);
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    cr_assert(wait_entered(), "the ftruncate never reached the pool");
    cr_assert_eq(afs_cancel(&op), 0);
    release();
    wait_callback(t_ctx);
    settle(t_ctx);
    cr_assert_eq(lg.result, 0, "%s: the cancelled ftruncate completed with %zd", be(),
                 lg.result);
    cr_assert_eq(afs_file_size(f), 12345);
    cr_assert_eq(afs_close(f), 0);
}

#ifndef _WIN32
/* threads, libaio: a blocking pipe (adopted without AFS_NONBLOCK) is read by a pool worker.
 * Cancelled while the worker was in the read, the op reports the bytes that read took: they
 * have left the pipe, and -ECANCELED would lose them. */
T_CANCEL(a_pool_read_of_a_pipe_cancelled_in_flight_reports_its_bytes)
{
    ctx_under_test();
    if (strcmp(be(), "threads") && strcmp(be(), "libaio"))
        cr_skip_test("%s reads no pipe on a pool thread", be());
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct afs_file *f = NULL;
    cr_assert_eq(afs_file_from_fd(t_ctx, p[0], AFS_RDONLY, AFS_MODE_ASYNC, &f), 0);
    cr_assert_eq(write(p[1], "late", 4), 4);
    h.fd = (afs__fd_t)p[0];
    afs__sys.pread = hold_pread;

    static char buf[BS];
    struct afs_op op = {0};
    cr_assert_eq(afs__queue_seq(&op, f, false, buf, BS, true, log_cb, NULL), 0);
    cr_assert_geq(afs_ctx_submit(t_ctx), 0);
    cr_assert(wait_entered(), "the read never reached the pool's pread");
    cr_assert_eq(afs_cancel(&op), 0);
    release();
    wait_callback(t_ctx);
    settle(t_ctx);
    cr_assert_eq(lg.result, 4, "%s: the cancelled read completed with %zd", be(), lg.result);
    cr_assert(memcmp(buf, "late", 4) == 0);
    cr_assert_eq(afs_close(f), 0);
    close(p[1]);
}
#endif

/* ------------------------------------------------------------------------------------------
 * A close that fails
 * ---------------------------------------------------------------------------------------- */

static int eio_close(afs__fd_t fd)
{
    saved.close(fd); /* the descriptor is gone, as after a real failed close */
    return -EIO;
}

T_CANCEL(a_close_that_fails_with_eio_is_reported_and_frees_the_file)
{
    ctx_under_test();
    struct afs_file *f = NULL;
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDWR | AFS_CREAT, 0600, AFS_MODE_SYNC, &f), 0);
    intptr_t fd = afs_file_fd(f);
    static char w[BS];
    t_fill(w, BS, 0);
    cr_assert_eq(afs_pwrite(f, w, BS, 0), BS);
    afs__sys.close = eio_close;
    cr_assert_eq(afs_close(f), -EIO, "%s: a failed close was not reported", be());
    afs__sys.close = saved.close;
#ifdef _WIN32
    DWORD hflags;
    cr_assert(!GetHandleInformation((HANDLE)fd, &hflags), "the handle is still open");
#else
    errno = 0;
    cr_assert_eq(fcntl((int)fd, F_GETFD), -1, "the descriptor is still open");
    cr_assert_eq(errno, EBADF);
#endif
    /* The context has no file left to wait for: it frees at once, and opens again. */
    cr_assert_eq(afs_open(t_ctx, t_path("f"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), 0);
    static char r[BS];
    cr_assert_eq(afs_pread(f, r, BS, 0), BS);
    cr_assert(t_check(r, BS, 0));
    cr_assert_eq(afs_close(f), 0);
}
