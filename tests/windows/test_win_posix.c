/* Windows: what the same program sees on Linux, where Windows by itself answers otherwise.
 * Renames that would replace a file with a directory or the reverse, a directory renamed over
 * an empty one, a pipe read after its writer closed, the NUL device read, handles opened
 * without FILE_FLAG_OVERLAPPED on every backend (iocp included), paths through a regular
 * file, a name created again while its removed file is still open, and writes and sizes past
 * what a file system holds. Part of contract_win (tests/windows/tests.cmake), run once per
 * backend. */
#include "../common.h"

#include "internal.h"

#include <wchar.h>

#define T_WIN(name, ...)                                                                      \
    Test(winposix, name, .init = t_setup, .fini = t_teardown, .timeout = 60, ##__VA_ARGS__)

static const enum afs_mode both_modes[] = {AFS_MODE_SYNC, AFS_MODE_ASYNC};

static bool t_on_wine(void)
{
    HMODULE nt = GetModuleHandleW(L"ntdll.dll");
    return nt && GetProcAddress(nt, "wine_get_version") != NULL;
}

static void op_done(struct afs_op *op)
{
    *(int *)op->data = 1;
}

/* Runs a queued op (queued with op_done and `done`) to its end; its result. */
static ssize_t op_run(struct afs_op *op, int *done)
{
    while (!*done) {
        int r = afs_ctx_wait(t_ctx, 1, 10LL * 1000 * 1000 * 1000);
        cr_assert_geq(r, 0, "afs_ctx_wait: %s", afs_strerror(r));
    }
    return op->result;
}

/* afs_read/afs_write in either mode: an async-mode op is waited for (afs_last_op_wait). A
 * sync-mode one of at most sync_threshold bytes runs on this thread (src/windows/sys.c), an
 * async-mode one through the backend (the iocp port, the pool, or inline on sync). */
static ssize_t xfer(struct afs_file *f, enum afs_mode mode, bool write, void *buf, size_t len)
{
    ssize_t r = write ? afs_write(f, buf, len) : afs_read(f, buf, len);
    if (mode == AFS_MODE_SYNC || r < 0)
        return r;
    cr_assert_eq(r, 0);
    cr_assert_eq(afs_last_op_wait(f, &r), 1);
    return r;
}

static ssize_t rd(struct afs_file *f, enum afs_mode mode, void *buf, size_t len)
{
    return xfer(f, mode, false, buf, len);
}

static ssize_t wr(struct afs_file *f, enum afs_mode mode, const char *s)
{
    return xfer(f, mode, true, (void *)s, strlen(s));
}

static int64_t t_size(const char *path)
{
    struct afs_stat st;
    int err = afs_statx(t_ctx, AFS_AT_FDCWD, path, 0, &st);
    return err < 0 ? err : st.size;
}

static bool t_is_dir(const char *path)
{
    struct afs_stat st;
    return afs_statx(t_ctx, AFS_AT_FDCWD, path, 0, &st) == 0 && S_ISDIR(st.mode);
}

/* rename(2): a directory replaces only a directory (ENOTDIR), a file only a file (EISDIR);
 * nothing changes when it refuses. Windows's FileRenameInformation would replace the file
 * with the directory. */
T_WIN(rename_keeps_files_and_directories_apart)
{
    t_new_ctx();
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("d"), 0755), 0);
    t_make_file(t_path("d/in"), 10);
    t_make_file(t_path("f"), 1000);
    cr_assert_eq(afs_renameat(t_ctx, AFS_AT_FDCWD, t_path("d"), AFS_AT_FDCWD, t_path("f"), 0),
                 -ENOTDIR);
    cr_assert_eq(t_size(t_path("f")), 1000, "the file is intact");
    cr_assert(t_is_dir(t_path("d")));
    cr_assert_eq(t_size(t_path("d/in")), 10);
    cr_assert_eq(afs_renameat(t_ctx, AFS_AT_FDCWD, t_path("f"), AFS_AT_FDCWD, t_path("d"), 0),
                 -EISDIR);
    cr_assert_eq(t_size(t_path("f")), 1000);
    cr_assert_eq(t_size(t_path("d/in")), 10);

    /* The same relative to a directory handle, and through the queued op. */
    int dfd = afs_openat(t_ctx, AFS_AT_FDCWD, t_dir, AFS_RDONLY | AFS_DIRECTORY, 0);
    cr_assert_geq(dfd, 0);
    cr_assert_eq(afs_mkdirat(t_ctx, dfd, "empty", 0755), 0);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "empty", dfd, "f", 0), -ENOTDIR);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "f", dfd, "empty", 0), -EISDIR);
    cr_assert_eq(t_size(t_path("f")), 1000);
    cr_assert(t_is_dir(t_path("empty")));
    struct afs_op op;
    int done = 0;
    memset(&op, 0, sizeof op);
    cr_assert_eq(afs_queue_renameat(&op, t_ctx, dfd, "d", dfd, "f", 0, op_done, &done), 0);
    cr_assert_eq(op_run(&op, &done), -ENOTDIR);
    cr_assert_eq(t_size(t_path("f")), 1000);

    /* What still renames: a file over a file, a directory to a new name; a target through
     * a file is ENOTDIR. */
    t_make_file(t_path("g"), 20);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "g", dfd, "f", 0), 0);
    cr_assert_eq(t_size(t_path("f")), 20);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "d", dfd, "d2", 0), 0);
    cr_assert_eq(t_size(t_path("d2/in")), 10);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "d2", dfd, "f/x", 0), -ENOTDIR);
    cr_assert(t_is_dir(t_path("d2")));
    /* A new name ending in a separator names a directory: a file is not renamed to it. */
    cr_assert_eq(afs_renameat(t_ctx, dfd, "f", dfd, "new/", 0), -ENOTDIR);
    cr_assert_eq(afs_renameat(t_ctx, dfd, "f", dfd, "new\\", 0), -ENOTDIR);
    cr_assert_eq(t_size(t_path("f")), 20, "the file is intact");
    cr_assert_eq(access(t_path("new"), F_OK), -1, "the file was renamed");
    cr_assert_eq(afs_renameat(t_ctx, dfd, "d2", dfd, "d3/", 0), 0);
    cr_assert(t_is_dir(t_path("d3")));
    cr_assert_eq(afs_close_fd(t_ctx, dfd), 0);
}

/* A pipe has no size (0) and no fsync (-EINVAL), as on POSIX: FlushFileBuffers of a pipe
 * waits until the reader has read everything, here never. */
T_WIN(a_pipe_has_no_size_and_no_fsync)
{
    t_new_ctx();
    for (size_t m = 0; m < 2; m++) {
        HANDLE r, w;
        cr_assert(CreatePipe(&r, &w, NULL, 0));
        struct afs_file *f;
        cr_assert_eq(afs_file_from_fd(t_ctx, (int)(intptr_t)w, AFS_WRONLY, both_modes[m], &f), 0);
        cr_assert_eq(wr(f, both_modes[m], "x"), 1);
        cr_assert_eq(afs_file_size(f), 0);
        cr_assert_eq(afs_fsync(f, 0), -EINVAL);
        cr_assert_eq(afs_fsync(f, AFS_FSYNC_DATA), -EINVAL);
        cr_assert_eq(afs_close(f), 0);
        CloseHandle(r);
    }
}

/* A pipe holding "hello" whose writer closed: read(2) gives the 5 bytes, then 0. The read
 * end from CreatePipe (synchronous) and the server end of an overlapped named pipe (which the
 * iocp backend reads through its port); a write to a pipe without reader stays -EPIPE. */
static void read_hello_then_eof(HANDLE r, enum afs_mode mode, const char *what)
{
    struct afs_file *f;
    int err = afs_file_from_fd(t_ctx, (int)(intptr_t)r, AFS_RDONLY, mode, &f);
    cr_assert_eq(err, 0, "%s, mode %d: afs_file_from_fd: %s", what, mode, afs_strerror(err));
    char buf[16] = {0};
    ssize_t n = rd(f, mode, buf, sizeof buf);
    cr_assert_eq(n, 5, "%s, mode %d: first read %zd (%s)", what, mode, n,
                 n < 0 ? afs_strerror((int)n) : "");
    cr_assert_str_eq(buf, "hello");
    n = rd(f, mode, buf, sizeof buf);
    cr_assert_eq(n, 0, "%s, mode %d: read at the end %zd (%s)", what, mode, n,
                 n < 0 ? afs_strerror((int)n) : "");
    cr_assert_eq(afs_close(f), 0);
}

T_WIN(a_pipe_reads_to_its_end_after_the_writer_closed)
{
    t_new_ctx();
    for (size_t m = 0; m < 2; m++) {
        HANDLE r, w;
        DWORD n;
        cr_assert(CreatePipe(&r, &w, NULL, 0));
        cr_assert(WriteFile(w, "hello", 5, &n, NULL) && n == 5);
        CloseHandle(w);
        read_hello_then_eof(r, both_modes[m], "CreatePipe");

        wchar_t name[96];
        swprintf(name, 96, L"\\\\.\\pipe\\afs-winposix-%lu-%u", GetCurrentProcessId(),
                 (unsigned)m);
        HANDLE srv = CreateNamedPipeW(name, PIPE_ACCESS_INBOUND | FILE_FLAG_OVERLAPPED |
                                                FILE_FLAG_FIRST_PIPE_INSTANCE,
                                      PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT, 1, 4096,
                                      4096, 0, NULL);
        cr_assert(srv != INVALID_HANDLE_VALUE, "CreateNamedPipeW: %lu", GetLastError());
        HANDLE cli = CreateFileW(name, GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0, NULL);
        cr_assert(cli != INVALID_HANDLE_VALUE, "open the pipe: %lu", GetLastError());
        cr_assert(WriteFile(cli, "hello", 5, &n, NULL) && n == 5);
        CloseHandle(cli);
        read_hello_then_eof(srv, both_modes[m], "overlapped named pipe");

        cr_assert(CreatePipe(&r, &w, NULL, 0));
        CloseHandle(r);
        struct afs_file *f;
        cr_assert_eq(afs_file_from_fd(t_ctx, (int)(intptr_t)w, AFS_WRONLY, both_modes[m], &f), 0);
        cr_assert_eq(wr(f, both_modes[m], "x"), -EPIPE, "a write without reader");
        cr_assert_eq(afs_close(f), 0);
    }
}

/* A named pipe's client: a server that ends the session (DisconnectNamedPipe) is an end of
 * file for a read and -EPIPE for a write, as a writer's close is; and on iocp a read-only
 * client closed with a read waiting is not waited for (afs_close() cancels it). */
static HANDLE pipe_server(const wchar_t *name)
{
    HANDLE srv = CreateNamedPipeW(name, PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED,
                                  PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT, 1, 4096,
                                  4096, 0, NULL);
    cr_assert(srv != INVALID_HANDLE_VALUE, "CreateNamedPipeW: %lu", GetLastError());
    return srv;
}

T_WIN(a_pipe_whose_server_disconnected_ends_and_a_waiting_read_does_not_hold_the_close)
{
    t_new_ctx();
    char path[96];
    wchar_t name[96];
    for (size_t m = 0; m < 2; m++) {
        snprintf(path, sizeof path, "\\\\.\\pipe\\afs-disc-%lu-%u", GetCurrentProcessId(),
                 (unsigned)m);
        swprintf(name, 96, L"%hs", path);
        HANDLE srv = pipe_server(name);
        struct afs_file *f;
        cr_assert_eq(afs_open(t_ctx, path, AFS_RDWR, 0, both_modes[m], &f), 0);
        cr_assert(DisconnectNamedPipe(srv), "DisconnectNamedPipe: %lu", GetLastError());
        char buf[8];
        ssize_t n = rd(f, both_modes[m], buf, sizeof buf);
        cr_assert_eq(n, 0, "mode %d: read %zd (%s)", both_modes[m], n,
                     n < 0 ? afs_strerror((int)n) : "");
        cr_assert_eq(wr(f, both_modes[m], "x"), -EPIPE);
        cr_assert_eq(afs_close(f), 0);
        CloseHandle(srv);
    }
    if (strcmp(afs_ctx_backend(t_ctx), "iocp") != 0)
        return; /* the pool's ReadFile, once handed to the system, ends when the pipe moves
                   (asyncfs.h, afs_close()) */
    snprintf(path, sizeof path, "\\\\.\\pipe\\afs-close-%lu", GetCurrentProcessId());
    swprintf(name, 96, L"%hs", path);
    HANDLE srv = pipe_server(name);
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, path, AFS_RDONLY, 0, AFS_MODE_ASYNC, &f), 0);
    char buf[8];
    cr_assert_eq(afs_read(f, buf, sizeof buf), 0);
    cr_assert_eq(afs_ctx_wait(t_ctx, 0, 50 * 1000 * 1000), 0, "the read waits");
    ULONGLONG t0 = GetTickCount64();
    cr_assert_eq(afs_close(f), 0);
    cr_assert_lt(GetTickCount64() - t0, 5000, "the close waited for the read");
    CloseHandle(srv);
}

/* NUL opened by name: reads are at their end (0), writes take everything. */
T_WIN(the_nul_device_reads_as_empty)
{
    t_new_ctx();
    for (size_t m = 0; m < 2; m++) {
        struct afs_file *f;
        int err = afs_open(t_ctx, "NUL", AFS_RDONLY, 0, both_modes[m], &f);
        cr_assert_eq(err, 0, "NUL: %s", afs_strerror(err));
        char buf[16];
        ssize_t n = rd(f, both_modes[m], buf, sizeof buf);
        cr_assert_eq(n, 0, "mode %d: read of NUL %zd (%s)", both_modes[m], n,
                     n < 0 ? afs_strerror((int)n) : "");
        cr_assert_eq(afs_close(f), 0);
        cr_assert_eq(afs_open(t_ctx, "NUL", AFS_RDWR, 0, both_modes[m], &f), 0);
        cr_assert_eq(wr(f, both_modes[m], "gone"), 4);
        cr_assert_eq(rd(f, both_modes[m], buf, sizeof buf), 0);
        cr_assert_eq(afs_close(f), 0);
    }
}

/* Handles opened without FILE_FLAG_OVERLAPPED (docs/WINDOWS.md: they work, each transfer
 * blocking the thread that makes it), on every backend: a CreateFileW file, CreatePipe's
 * ends, NUL. */
T_WIN(file_from_fd_takes_handles_opened_for_synchronous_io)
{
    t_new_ctx();
    for (size_t m = 0; m < 2; m++) {
        enum afs_mode mode = both_modes[m];
        HANDLE h = CreateFileA(t_path("sync"), GENERIC_READ | GENERIC_WRITE,
                               FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                               CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
        cr_assert(h != INVALID_HANDLE_VALUE);
        struct afs_file *f;
        int err = afs_file_from_fd(t_ctx, (int)(intptr_t)h, AFS_RDWR, mode, &f);
        cr_assert_eq(err, 0, "mode %d: a file: %s", mode, afs_strerror(err));
        char big[65536], got[65536];
        t_fill(big, sizeof big, 4096);
        cr_assert_eq(afs_pwrite(f, big, sizeof big, 4096), (ssize_t)sizeof big);
        cr_assert_eq(afs_pwrite(f, "abc", 3, 0), 3);
        cr_assert_eq(afs_pread(f, got, sizeof got, 4096), (ssize_t)sizeof got);
        cr_assert(t_check(got, sizeof got, 4096), "the data where it was written");
        cr_assert_eq(afs_pread(f, got, 3, 0), 3);
        cr_assert_eq(memcmp(got, "abc", 3), 0);
        struct afs_op op;
        int done = 0;
        memset(&op, 0, sizeof op);
        cr_assert_eq(afs_queue_read(&op, f, got, 100, 4096, op_done, &done), 0);
        cr_assert_eq(op_run(&op, &done), 100, "an op of the backend");
        cr_assert(t_check(got, 100, 4096));
        cr_assert_eq(afs_fsync(f, 0), 0);
        cr_assert_eq(afs_close(f), 0);

        HANDLE r, w;
        cr_assert(CreatePipe(&r, &w, NULL, 0));
        struct afs_file *rf, *wf;
        err = afs_file_from_fd(t_ctx, (int)(intptr_t)r, AFS_RDONLY, mode, &rf);
        cr_assert_eq(err, 0, "mode %d: a pipe's read end: %s", mode, afs_strerror(err));
        err = afs_file_from_fd(t_ctx, (int)(intptr_t)w, AFS_WRONLY, mode, &wf);
        cr_assert_eq(err, 0, "mode %d: a pipe's write end: %s", mode, afs_strerror(err));
        cr_assert_eq(wr(wf, mode, "hello"), 5);
        cr_assert_eq(afs_close(wf), 0);
        char buf[16] = {0};
        cr_assert_eq(rd(rf, mode, buf, sizeof buf), 5);
        cr_assert_str_eq(buf, "hello");
        cr_assert_eq(rd(rf, mode, buf, sizeof buf), 0);
        cr_assert_eq(afs_close(rf), 0);

        h = CreateFileA("NUL", GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                        NULL, OPEN_EXISTING, 0, NULL);
        cr_assert(h != INVALID_HANDLE_VALUE);
        err = afs_file_from_fd(t_ctx, (int)(intptr_t)h, AFS_RDWR, mode, &f);
        cr_assert_eq(err, 0, "mode %d: NUL: %s", mode, afs_strerror(err));
        cr_assert_eq(wr(f, mode, "gone"), 4);
        cr_assert_eq(rd(f, mode, buf, sizeof buf), 0);
        cr_assert_eq(afs_close(f), 0);
    }
    /* An overlapped file opened on the same context after them still goes through the
     * backend and reads what it wrote. */
    struct afs_file *f;
    cr_assert_eq(afs_open(t_ctx, t_path("ovl"), AFS_RDWR | AFS_CREAT, 0644, AFS_MODE_ASYNC, &f), 0);
    char got[8] = {0};
    cr_assert_eq(afs_pwrite(f, "overlap", 7, 0), 7);
    cr_assert_eq(afs_pread(f, got, 7, 0), 7);
    cr_assert_str_eq(got, "overlap");
    cr_assert_eq(afs_close(f), 0);
}

/* A path through a regular file: ENOTDIR, as on Linux (Windows says "path not found"); a
 * path through a missing directory stays ENOENT. */
T_WIN(a_path_through_a_file_is_not_a_directory)
{
    t_new_ctx();
    t_make_file(t_path("file"), 10);
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("d"), 0755), 0);
    struct afs_file *f;
    struct afs_stat st;
    cr_assert_eq(afs_open(t_ctx, t_path("file/x"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), -ENOTDIR);
    cr_assert_eq(afs_open(t_ctx, t_path("file/x"), AFS_WRONLY | AFS_CREAT, 0644, AFS_MODE_SYNC,
                          &f),
                 -ENOTDIR);
    cr_assert_eq(afs_open(t_ctx, t_path("file/x/y"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), -ENOTDIR);
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("file/x"), 0755), -ENOTDIR);
    cr_assert_eq(afs_statx(t_ctx, AFS_AT_FDCWD, t_path("file/x"), 0, &st), -ENOTDIR);
    cr_assert_eq(afs_statx(t_ctx, AFS_AT_FDCWD, t_path("d/../file/x"), 0, &st), -ENOTDIR);

    int dfd = afs_openat(t_ctx, AFS_AT_FDCWD, t_dir, AFS_RDONLY | AFS_DIRECTORY, 0);
    cr_assert_geq(dfd, 0);
    cr_assert_eq(afs_statx(t_ctx, dfd, "file/x", 0, &st), -ENOTDIR);
    cr_assert_eq(afs_openat(t_ctx, dfd, "file/x/y", AFS_RDONLY, 0), -ENOTDIR);
    cr_assert_eq(afs_mkdirat(t_ctx, dfd, "file/x", 0755), -ENOTDIR);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "file/x", 0), -ENOTDIR);
    cr_assert_eq(afs_unlinkat(t_ctx, dfd, "file/x", AFS_AT_REMOVEDIR), -ENOTDIR);

    /* Missing directories: ENOENT, relative and absolute. */
    cr_assert_eq(afs_statx(t_ctx, dfd, "missing/x", 0, &st), -ENOENT);
    cr_assert_eq(afs_statx(t_ctx, dfd, "d/missing/x", 0, &st), -ENOENT);
    cr_assert_eq(afs_statx(t_ctx, dfd, "d/missing", 0, &st), -ENOENT);
    cr_assert_eq(afs_open(t_ctx, t_path("missing/x/y"), AFS_RDONLY, 0, AFS_MODE_SYNC, &f), -ENOENT);
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("d/missing/x"), 0755), -ENOENT);
    cr_assert_eq(afs_statx(t_ctx, AFS_AT_FDCWD, "Q:\\afs-no-such-drive\\x\\y", 0, &st), -ENOENT);
    cr_assert_eq(afs_statx(t_ctx, dfd, "file", 0, &st), 0, "the file itself");
    cr_assert_eq(st.size, 10);
    cr_assert_eq(afs_close_fd(t_ctx, dfd), 0);
}

/* A name removed while its file is open, then created again (CREAT|TRUNC), written and
 * synced: Linux keeps the new file. Windows with POSIX delete semantics frees the name at
 * once (the same); without them the create is refused (STATUS_DELETE_PENDING: -ENOENT).
 * Wine 8 opens the delete-pending file instead and reports no DeletePending, so the data
 * goes with the old file: docs/WINDOWS.md, checked here as documented. */
T_WIN(a_name_created_again_while_its_removed_file_is_open)
{
    t_new_ctx();
    struct afs_file *old, *f;
    cr_assert_eq(afs_open(t_ctx, t_path("dp"), AFS_RDWR | AFS_CREAT | AFS_TRUNC, 0644,
                          AFS_MODE_SYNC, &old),
                 0);
    cr_assert_eq(afs_write(old, "old", 3), 3);
    cr_assert_eq(afs_unlinkat(t_ctx, AFS_AT_FDCWD, t_path("dp"), 0), 0);
    int err = afs_open(t_ctx, t_path("dp"), AFS_RDWR | AFS_CREAT | AFS_TRUNC, 0644,
                       AFS_MODE_SYNC, &f);
    if (err < 0) {
        cr_assert_eq(err, -ENOENT, "refused as delete-pending: %s", afs_strerror(err));
        cr_assert_eq(afs_close(old), 0);
        return;
    }
    cr_assert_eq(afs_write(f, "new data", 8), 8);
    cr_assert_eq(afs_fsync(f, 0), 0);
    cr_assert_eq(afs_close(f), 0);
    cr_assert_eq(afs_close(old), 0);
    int64_t size = t_size(t_path("dp"));
    if (size == -ENOENT && t_on_wine()) {
        cr_log_info("wine reopened the delete-pending file (docs/WINDOWS.md)");
        return;
    }
    cr_assert_eq(size, 8, "the new file is kept: %lld", (long long)size);
}

/* rename(2) of a directory over an empty directory replaces it; over a full one it is
 * ENOTEMPTY, into its own subdirectory EINVAL, over its own parent ENOTEMPTY, and nothing
 * changes when it refuses. Windows refuses to replace a directory at all (FileRenameInformation:
 * access denied). */
T_WIN(rename_replaces_an_empty_directory)
{
    t_new_ctx();
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("d"), 0755), 0);
    t_make_file(t_path("d/in"), 10);
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("empty"), 0755), 0);
    int err = afs_renameat(t_ctx, AFS_AT_FDCWD, t_path("d"), AFS_AT_FDCWD, t_path("empty"), 0);
    cr_assert_eq(err, 0, "a directory over an empty one: %s", afs_strerror(err));
    cr_assert_eq(t_size(t_path("empty/in")), 10, "the directory is under the new name");
    cr_assert_eq(t_size(t_path("d")), -ENOENT, "and no longer under the old one");

    /* A full target: ENOTEMPTY, both intact. */
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("full"), 0755), 0);
    t_make_file(t_path("full/keep"), 20);
    err = afs_renameat(t_ctx, AFS_AT_FDCWD, t_path("empty"), AFS_AT_FDCWD, t_path("full"), 0);
    cr_assert_eq(err, -ENOTEMPTY, "over a full directory: %s", afs_strerror(err));
    cr_assert_eq(t_size(t_path("empty/in")), 10);
    cr_assert_eq(t_size(t_path("full/keep")), 20);

    /* Into its own (empty) subdirectory: EINVAL; over its own parent: ENOTEMPTY. */
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("full/sub"), 0755), 0);
    err = afs_renameat(t_ctx, AFS_AT_FDCWD, t_path("full"), AFS_AT_FDCWD, t_path("full/sub"), 0);
    cr_assert_eq(err, -EINVAL, "into its own subdirectory: %s", afs_strerror(err));
    cr_assert(t_is_dir(t_path("full/sub")));
    cr_assert_eq(t_size(t_path("full/keep")), 20);
    err = afs_renameat(t_ctx, AFS_AT_FDCWD, t_path("full/sub"), AFS_AT_FDCWD, t_path("full"), 0);
    cr_assert_eq(err, -ENOTEMPTY, "over its own parent: %s", afs_strerror(err));
    cr_assert(t_is_dir(t_path("full/sub")));

    /* AFS_RENAME_NOREPLACE: EEXIST, both intact. */
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("e2"), 0755), 0);
    cr_assert_eq(afs_renameat(t_ctx, AFS_AT_FDCWD, t_path("empty"), AFS_AT_FDCWD, t_path("e2"),
                              AFS_RENAME_NOREPLACE),
                 -EEXIST);
    cr_assert_eq(t_size(t_path("empty/in")), 10);
    cr_assert(t_is_dir(t_path("e2")));

    /* Relative to a directory handle, through the queued op, over a read-only empty
     * directory (its attribute does not stop rename(2)). */
    int dfd = afs_openat(t_ctx, AFS_AT_FDCWD, t_dir, AFS_RDONLY | AFS_DIRECTORY, 0);
    cr_assert_geq(dfd, 0);
    cr_assert(SetFileAttributesA(t_path("e2"), FILE_ATTRIBUTE_READONLY));
    struct afs_op op;
    int done = 0;
    memset(&op, 0, sizeof op);
    cr_assert_eq(afs_queue_renameat(&op, t_ctx, dfd, "empty", dfd, "e2", 0, op_done, &done), 0);
    ssize_t r = op_run(&op, &done);
    cr_assert_eq(r, 0, "queued, over a read-only empty directory: %s", afs_strerror((int)r));
    cr_assert_eq(t_size(t_path("e2/in")), 10);
    cr_assert_eq(t_size(t_path("empty")), -ENOENT);

    /* A directory over itself: nothing happens. */
    cr_assert_eq(afs_renameat(t_ctx, dfd, "e2", dfd, "e2", 0), 0);
    cr_assert_eq(t_size(t_path("e2/in")), 10);

    /* A target open elsewhere: replaced where the system removes a name at once (POSIX
     * semantics, as Linux), else EBUSY (rename(2)'s answer for a directory in use) and
     * nothing changes: it would go when the other handle closes. */
    cr_assert_eq(afs_mkdirat(t_ctx, dfd, "held", 0755), 0);
    int held = afs_openat(t_ctx, dfd, "held", AFS_RDONLY | AFS_DIRECTORY, 0);
    cr_assert_geq(held, 0);
    err = afs_renameat(t_ctx, dfd, "e2", dfd, "held", 0);
    cr_assert(err == 0 || err == -EBUSY, "over a directory open elsewhere: %s",
              afs_strerror(err));
    cr_assert_eq(afs_close_fd(t_ctx, held), 0);
    if (err == -EBUSY) {
        cr_assert_eq(t_size(t_path("e2/in")), 10);
        cr_assert(t_is_dir(t_path("held")), "the target stays after its handle closed");
        cr_assert_eq(afs_renameat(t_ctx, dfd, "e2", dfd, "held", 0), 0);
    }
    cr_assert_eq(t_size(t_path("held/in")), 10);
    cr_assert_eq(afs_close_fd(t_ctx, dfd), 0);
}

/* afs_fsync_dir() of a path through a regular file: ENOTDIR, as the open of a directory says
 * it (Linux's open(O_DIRECTORY)); the system layer's own open, flush and close (what the core
 * calls where it has no metadata ops) answers the same. */
T_WIN(fsync_dir_through_a_file_is_not_a_directory)
{
    t_new_ctx();
    t_make_file(t_path("file"), 10);
    cr_assert_eq(afs_mkdirat(t_ctx, AFS_AT_FDCWD, t_path("d"), 0755), 0);
    static const char *const through[] = {"file/x", "file/x/y", "file\\x", "file"};
    for (size_t i = 0; i < sizeof through / sizeof *through; i++) {
        int err = afs_fsync_dir(t_ctx, t_path(through[i]));
        cr_assert_eq(err, -ENOTDIR, "afs_fsync_dir(%s): %s", through[i], afs_strerror(err));
        err = afs__sys_fsync_dir(t_path(through[i]));
        cr_assert_eq(err, -ENOTDIR, "the system layer's (%s): %s", through[i], afs_strerror(err));
    }
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("missing/x")), -ENOENT);
    cr_assert_eq(afs__sys_fsync_dir(t_path("missing/x")), -ENOENT);
    cr_assert_eq(afs_fsync_dir(t_ctx, t_path("d")), 0);
    cr_assert_eq(afs__sys_fsync_dir(t_path("d")), 0);
}

/* Writes and sizes near 2^63, past what a file system holds: Linux says EFBIG for a write,
 * ftruncate or fallocate there, and reads give 0 (past the end). Where a file system holds
 * such a file (XFS and btrfs take up to 2^63 - 1 bytes, no Windows one does) the call
 * succeeds instead; never -EIO or -ENOMEM. The file keeps its size when it refuses. */
static void too_big(ssize_t r, ssize_t ok, const char *what, uint64_t off)
{
    cr_assert(r == -EFBIG || r == ok, "%s at %#llx: %zd (%s)", what, (unsigned long long)off, r,
              r < 0 ? afs_strerror((int)r) : "");
}

T_WIN(writes_and_sizes_past_the_limit_are_too_large)
{
    t_new_ctx();
    static const uint64_t offs[] = {(uint64_t)INT64_MAX - 4095, (uint64_t)1 << 62};
    for (size_t m = 0; m < 2; m++) {
        struct afs_file *f;
        cr_assert_eq(afs_open(t_ctx, t_path("big"), AFS_RDWR | AFS_CREAT | AFS_TRUNC, 0644,
                              both_modes[m], &f),
                     0);
        static char buf[65536];
        t_fill(buf, sizeof buf, 0);
        cr_assert_eq(afs_pwrite(f, buf, 100, 0), 100);
        for (size_t i = 0; i < sizeof offs / sizeof *offs; i++) {
            uint64_t off = offs[i];
            too_big(afs_pwrite(f, buf, 10, off), 10, "afs_pwrite", off);
            /* Above sync_threshold: through the backend (the iocp port, the pool). */
            too_big(afs_pwrite(f, buf, sizeof buf, off - sizeof buf), sizeof buf,
                    "a large afs_pwrite", off);
            struct afs_op op;
            int done = 0;
            memset(&op, 0, sizeof op);
            cr_assert_eq(afs_queue_write(&op, f, buf, 10, off, op_done, &done), 0);
            too_big(op_run(&op, &done), 10, "afs_queue_write", off);
            struct iovec iov[2] = {{buf, 6}, {buf + 6, 4}};
            done = 0;
            memset(&op, 0, sizeof op);
            cr_assert_eq(afs_queue_writev(&op, f, iov, 2, off, op_done, &done), 0);
            too_big(op_run(&op, &done), 10, "afs_queue_writev", off);
            too_big(afs_ftruncate(f, off), 0, "afs_ftruncate", off);
            too_big(afs_fallocate(f, 0, off, 10), 0, "afs_fallocate", off);
            too_big(afs_fallocate(f, AFS_FALLOC_ZERO_RANGE, off, 10), 0,
                    "afs_fallocate(ZERO_RANGE)", off);
            cr_assert_eq(afs_pread(f, buf, 10, off), 0, "a read there is past the end");
            int64_t size = afs_file_size(f);
            if (size == 100)
                continue; /* every call refused: nothing changed */
            cr_log_info("the file system holds %#llx bytes", (unsigned long long)size);
            cr_assert_eq(afs_ftruncate(f, 100), 0);
        }
        char got[100];
        cr_assert_eq(afs_pread(f, got, sizeof got, 0), (ssize_t)sizeof got);
        cr_assert(t_check(got, sizeof got, 0), "the data before is intact");
        cr_assert_eq(afs_close(f), 0);
    }
}
