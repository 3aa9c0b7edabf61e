/* afcp on Windows: paths, the metadata calls and the temporaries Ctrl+C removes.
 *
 * Every file is named by its "\\?\" absolute path: no MAX_PATH limit (a copied tree may be
 * deeper than 260 characters), and no rewriting of trailing dots or spaces by the Win32
 * path parser. The metadata calls go through asyncfs (afs_openat, afs_statx, afs_mkdirat,
 * afs_renameat, afs_unlinkat) with AFS_AT_FDCWD: inside a task they suspend only the task
 * and run on the library's threads.
 *
 * Temporaries and console events. Ctrl+C, Ctrl+Break and closing the console run
 * on_console() on a thread of its own while the scheduler goes on. Every temporary that may
 * exist is in `temps`: its path is registered before the create is made (CREATING) and the
 * task marks it EXISTS or frees it once the create came back. The handler marks afcp as
 * ending (from then on no task starts a create or a rename: they park), removes every
 * registered name, waits until no create is still in flight, removes them again and ends
 * the process with STATUS_CONTROL_C_EXIT, as the default handler would. One lock orders
 * the handler's scans against the tasks' registrations, so a create is either seen by the
 * handler or never started. A name a rename already moved into place is complete: it
 * stays. */
#include "win_afcp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

/* ------------------------------------------------------------------------------------------
 * Strings and paths
 * ---------------------------------------------------------------------------------------- */
wchar_t *wafcp_wide(const char *s)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0)
        return NULL;
    wchar_t *w = afcp_xmalloc((size_t)n * sizeof *w);
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n);
    return w;
}

char *wafcp_utf8(const wchar_t *w)
{
    int n = WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, w, -1, NULL, 0, NULL, NULL);
    if (n <= 0)
        return NULL;
    char *s = afcp_xmalloc((size_t)n);
    WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, w, -1, s, n, NULL, NULL);
    return s;
}

static int is_sep(char c)
{
    return c == '\\' || c == '/';
}

char *wafcp_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = afcp_xmalloc(a + b + 2);
    memcpy(p, dir, a);
    /* "X:" alone is the current directory of drive X: "X:name" is in it, "X:\name" in the
     * root. */
    int drive_cwd = a == 2 && dir[1] == ':';
    if (a && !is_sep(dir[a - 1]) && !drive_cwd)
        p[a++] = '\\';
    memcpy(p + a, name, b + 1);
    return p;
}

int wafcp_up(char *full)
{
    char *sep = strrchr(full + 4, '\\'); /* past "\\?\" */
    if (!sep || !sep[1])
        return 0; /* a root: "\\?\C:\" (or no directory: "\\?\UNC") */
    sep[sep[-1] == ':'] = 0; /* "\\?\C:\x" goes to "\\?\C:\" */
    return 1;
}

char *wafcp_full(const char *path, int *err)
{
    wchar_t *w = wafcp_wide(path);
    if (!w) {
        *err = -EINVAL; /* not UTF-8: cannot name a Windows file */
        return NULL;
    }
    wchar_t *full;
    if (!wcsncmp(w, L"\\\\?\\", 4)) {
        full = w; /* already literal: taken as it is */
    } else {
        DWORD n = GetFullPathNameW(w, 0, NULL, NULL);
        wchar_t *f = n ? afcp_xmalloc((n + 1) * sizeof *f) : NULL;
        if (!f || !GetFullPathNameW(w, n + 1, f, NULL)) {
            *err = wafcp_errno(GetLastError());
            free(f);
            free(w);
            return NULL;
        }
        free(w);
        size_t len = wcslen(f);
        full = afcp_xmalloc((len + 8) * sizeof *full);
        if (!wcsncmp(f, L"\\\\.\\", 4) || !wcsncmp(f, L"\\\\?\\", 4))
            wcscpy(full, f); /* a device path: already literal */
        else if (!wcsncmp(f, L"\\\\", 2))
            swprintf(full, len + 8, L"\\\\?\\UNC\\%ls", f + 2);
        else
            swprintf(full, len + 8, L"\\\\?\\%ls", f);
        free(f);
    }
    /* No trailing separator, except the root of a drive ("\\?\C:\"). */
    size_t len = wcslen(full);
    while (len > 7 && full[len - 1] == L'\\' && full[len - 2] != L':')
        full[--len] = 0;
    char *s = wafcp_utf8(full);
    free(full);
    if (!s)
        *err = -EINVAL;
    return s;
}

/* The Win32 errors file copies meet, as negative errno values (the library's table,
 * narrowed: asyncfs keeps its own private). */
int wafcp_errno(DWORD err)
{
    switch (err) {
    case ERROR_FILE_NOT_FOUND: case ERROR_PATH_NOT_FOUND: case ERROR_INVALID_DRIVE:
    case ERROR_BAD_NETPATH: case ERROR_BAD_NET_NAME: case ERROR_BAD_PATHNAME:
        return -ENOENT;
    case ERROR_FILE_EXISTS: case ERROR_ALREADY_EXISTS: return -EEXIST;
    case ERROR_ACCESS_DENIED: case ERROR_CANNOT_MAKE: case ERROR_PRIVILEGE_NOT_HELD:
        return -EACCES;
    case ERROR_SHARING_VIOLATION: case ERROR_LOCK_VIOLATION: case ERROR_BUSY: return -EBUSY;
    case ERROR_WRITE_PROTECT: return -EROFS;
    case ERROR_NOT_ENOUGH_MEMORY: case ERROR_OUTOFMEMORY: return -ENOMEM;
    case ERROR_DISK_FULL: case ERROR_HANDLE_DISK_FULL: return -ENOSPC;
    case ERROR_DIRECTORY: return -ENOTDIR;
    case ERROR_DIR_NOT_EMPTY: return -ENOTEMPTY;
    case ERROR_FILENAME_EXCED_RANGE: return -ENAMETOOLONG;
    case ERROR_NOT_SAME_DEVICE: return -EXDEV;
    case ERROR_INVALID_NAME: case ERROR_INVALID_PARAMETER: return -EINVAL;
    case ERROR_NOT_SUPPORTED: case ERROR_INVALID_FUNCTION: return -ENOTSUP;
    default: return -EIO;
    }
}

/* ------------------------------------------------------------------------------------------
 * Metadata calls
 * ---------------------------------------------------------------------------------------- */
int wafcp_stat(const char *path, int nofollow, struct afs_stat *st)
{
    return afs_statx(AFCP_CTX, AFS_AT_FDCWD, path, nofollow ? AFS_AT_SYMLINK_NOFOLLOW : 0, st);
}

int wafcp_mkdir(const char *path)
{
    return afs_mkdirat(AFCP_CTX, AFS_AT_FDCWD, path, 0777);
}

int wafcp_rename(const char *from, const char *to, int noreplace)
{
    return afs_renameat(AFCP_CTX, AFS_AT_FDCWD, from, AFS_AT_FDCWD, to,
                        noreplace ? AFS_RENAME_NOREPLACE : 0);
}

int wafcp_set_basic(const char *path, DWORD attrs, const FILETIME *t)
{
    wchar_t *w = wafcp_wide(path);
    if (!w)
        return -EINVAL;
    HANDLE h = CreateFileW(w, FILE_WRITE_ATTRIBUTES,
                           FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                           OPEN_EXISTING,
                           FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT, NULL);
    free(w);
    if (h == INVALID_HANDLE_VALUE)
        return wafcp_errno(GetLastError());
    FILE_BASIC_INFO bi;
    memset(&bi, 0, sizeof bi); /* zero: unchanged */
    if (t) {
        bi.CreationTime.LowPart = t[0].dwLowDateTime;
        bi.CreationTime.HighPart = (LONG)t[0].dwHighDateTime;
        bi.LastAccessTime.LowPart = t[1].dwLowDateTime;
        bi.LastAccessTime.HighPart = (LONG)t[1].dwHighDateTime;
        bi.LastWriteTime.LowPart = t[2].dwLowDateTime;
        bi.LastWriteTime.HighPart = (LONG)t[2].dwHighDateTime;
        bi.ChangeTime = bi.LastWriteTime;
    }
    bi.FileAttributes = attrs;
    int err = SetFileInformationByHandle(h, FileBasicInfo, &bi, sizeof bi)
                  ? 0 : wafcp_errno(GetLastError());
    CloseHandle(h);
    return err;
}

int wafcp_unlink(const char *path)
{
    int err = afs_unlinkat(AFCP_CTX, AFS_AT_FDCWD, path, 0);
    if (err == -EACCES || err == -EPERM) {
        /* Read-only, where the file system refuses to remove it as it is: afcp's own
         * temporaries carry the source's attributes once complete. */
        wchar_t *w = wafcp_wide(path);
        DWORD a = w ? GetFileAttributesW(w) : INVALID_FILE_ATTRIBUTES;
        if (a != INVALID_FILE_ATTRIBUTES && (a & FILE_ATTRIBUTE_READONLY) &&
            SetFileAttributesW(w, a & ~(DWORD)FILE_ATTRIBUTE_READONLY))
            err = afs_unlinkat(AFCP_CTX, AFS_AT_FDCWD, path, 0);
        free(w);
    }
    return err;
}

/* ------------------------------------------------------------------------------------------
 * Temporaries and console events
 * ---------------------------------------------------------------------------------------- */
enum { TEMP_FREE, TEMP_CREATING, TEMP_EXISTS };

struct temp {
    int      state; /* TEMP_*, under `lock` */
    wchar_t *path;  /* under `lock` */
    int      taken; /* main thread only */
};

static struct temp        *temps;
static unsigned            ntemps;
static CRITICAL_SECTION    lock;
static volatile LONG       ending;
static struct corio_future never; /* what a task waits for once afcp is ending */
static unsigned            hook_at, hook_count;

/* Removes every registered name (the lock held); returns how many creates are in flight. */
static unsigned remove_temps(void)
{
    unsigned creating = 0;
    for (unsigned i = 0; i < ntemps; i++) {
        if (temps[i].state == TEMP_FREE)
            continue;
        creating += temps[i].state == TEMP_CREATING;
        if (!DeleteFileW(temps[i].path) && GetLastError() == ERROR_ACCESS_DENIED) {
            SetFileAttributesW(temps[i].path, FILE_ATTRIBUTE_NORMAL); /* read-only */
            DeleteFileW(temps[i].path);
        }
    }
    return creating;
}

static void end_process(void)
{
    for (;;) {
        EnterCriticalSection(&lock);
        unsigned creating = remove_temps();
        if (creating == 0) {
            fflush(stdout);
            ExitProcess((UINT)STATUS_CONTROL_C_EXIT); /* the lock stays held: nothing else runs */
        }
        LeaveCriticalSection(&lock);
        Sleep(1); /* a create in flight on the library's threads: its task marks it */
    }
}

static BOOL WINAPI on_console(DWORD event)
{
    (void)event; /* Ctrl+C, Ctrl+Break, close, logoff, shutdown: all end the copy */
    EnterCriticalSection(&lock);
    InterlockedExchange(&ending, 1);
    LeaveCriticalSection(&lock);
    end_process();
    return TRUE;
}

static DWORD WINAPI hook_thread(void *arg)
{
    (void)arg;
    on_console(CTRL_C_EVENT);
    return 0;
}

void wafcp_temps_init(unsigned slots)
{
    InitializeCriticalSection(&lock);
    ntemps = slots;
    temps = calloc(slots, sizeof *temps);
    if (!temps) {
        fputs("afcp: out of memory\n", stderr);
        exit(1);
    }
    corio_future_init(&never);
    SetConsoleCtrlHandler(on_console, TRUE);
    /* Tests only: AFCP_TEST_CTRL=N delivers a Ctrl+C (on a thread, as the console does)
     * when the N-th create of a destination returns, before its task looks at it. */
    const char *hook = getenv("AFCP_TEST_CTRL");
    if (hook)
        hook_at = (unsigned)strtoul(hook, NULL, 10);
}

void wafcp_test_hook_create(void)
{
    if (hook_at && ++hook_count == hook_at) {
        HANDLE th = CreateThread(NULL, 0, hook_thread, NULL, 0, NULL);
        if (th) {
            /* Let the handler register the event first: the task then finds afcp ending. */
            while (!InterlockedCompareExchange(&ending, 0, 0))
                Sleep(1);
            CloseHandle(th);
        }
    }
}

int wafcp_ending(void)
{
    return InterlockedCompareExchange(&ending, 0, 0) != 0;
}

void wafcp_temp_hold(struct corio_task *t)
{
    if (wafcp_ending())
        corio_future_await_shielded(t, &never, NULL); /* until the process ends */
}

int wafcp_temp_get(void)
{
    for (unsigned i = 0; i < ntemps; i++)
        if (!temps[i].taken) {
            temps[i].taken = 1;
            return (int)i;
        }
    fputs("afcp: no slot for a temporary\n", stderr); /* one per file slot: cannot happen */
    abort();
}

void wafcp_temp_set(struct corio_task *t, int i, const char *path)
{
    wchar_t *w = wafcp_wide(path);
    EnterCriticalSection(&lock);
    int stop = ending != 0;
    if (!stop) {
        free(temps[i].path);
        temps[i].path = w;
        temps[i].state = TEMP_CREATING;
    }
    LeaveCriticalSection(&lock);
    if (stop) {
        free(w);
        wafcp_temp_hold(t); /* no new create once ending */
    }
}

void wafcp_temp_created(int i, int created)
{
    EnterCriticalSection(&lock);
    temps[i].state = created ? TEMP_EXISTS : TEMP_FREE;
    LeaveCriticalSection(&lock);
}

void wafcp_temp_put(int i)
{
    EnterCriticalSection(&lock);
    temps[i].state = TEMP_FREE;
    free(temps[i].path);
    temps[i].path = NULL;
    LeaveCriticalSection(&lock);
    temps[i].taken = 0;
}
