/* Windows system calls behind platform.h. Files are always opened FILE_FLAG_OVERLAPPED (the
 * iocp backend needs it), so the synchronous calls here run an OVERLAPPED on a per-thread
 * event too, and wait for it. The event handle carries its low bit set: a completion port
 * the file may be associated with gets no packet for these (documented for
 * GetQueuedCompletionStatus). Each call returns >= 0 or -errno (error.c translates). */
#include "internal.h"

#include <malloc.h>
#include <winioctl.h>
#include <stdlib.h>
#include <string.h>

/* The most one ReadFile/WriteFile moves here; longer calls return short and are resumed
 * by the caller (the core splits at AFS__CHUNK_MAX = 1 GiB already). */
#define SYS_IO_MAX ((size_t)1 << 30)

/* ------------------------------------------------------------------------------------------
 * The per-thread (per-fiber: FLS) event for synchronous calls, closed when the thread ends.
 * ---------------------------------------------------------------------------------------- */

static DWORD         fls_event = FLS_OUT_OF_INDEXES;
static INIT_ONCE     fls_once = INIT_ONCE_STATIC_INIT;

static void WINAPI event_free(void *ev)
{
    if (ev)
        CloseHandle(ev);
}

static BOOL CALLBACK fls_init(INIT_ONCE *once, void *param, void **ctx)
{
    (void)once, (void)param, (void)ctx;
    fls_event = FlsAlloc(event_free);
    return TRUE;
}

static HANDLE thread_event(void)
{
    InitOnceExecuteOnce(&fls_once, fls_init, NULL, NULL);
    if (fls_event == FLS_OUT_OF_INDEXES)
        return NULL;
    HANDLE ev = FlsGetValue(fls_event);
    if (!ev) {
        ev = CreateEventW(NULL, TRUE, FALSE, NULL);
        if (ev && !FlsSetValue(fls_event, ev)) {
            CloseHandle(ev);
            ev = NULL;
        }
    }
    return ev;
}

/* One synchronous ReadFile or WriteFile at `off`. EOF on a read is 0 bytes. */
static ssize_t rw(HANDLE h, bool write, void *buf, size_t len, uint64_t off)
{
    HANDLE ev = thread_event();
    if (!ev)
        return -ENOMEM;
    OVERLAPPED ov;
    memset(&ov, 0, sizeof ov);
    ov.Offset = (DWORD)off;
    ov.OffsetHigh = (DWORD)(off >> 32);
    ov.hEvent = (HANDLE)((uintptr_t)ev | 1);
    DWORD n = 0, want = (DWORD)AFS_MIN(len, SYS_IO_MAX);
    BOOL ok = write ? WriteFile(h, buf, want, NULL, &ov) : ReadFile(h, buf, want, NULL, &ov);
    DWORD err = ok ? 0 : GetLastError();
    if (ok || err == ERROR_IO_PENDING)
        err = GetOverlappedResult(h, &ov, &n, TRUE) ? 0 : GetLastError();
    if (err == ERROR_HANDLE_EOF && !write)
        return 0;
    if (err)
        return afs__win_errno(err);
    return (ssize_t)n;
}

static ssize_t sys_pread(HANDLE h, void *buf, size_t len, uint64_t off)
{
    return rw(h, false, buf, len, off);
}

static ssize_t sys_pwrite(HANDLE h, const void *buf, size_t len, uint64_t off)
{
    return rw(h, true, (void *)buf, len, off);
}

/* Windows has no positional scatter/gather for buffered files (ReadFileScatter wants page
 * sized, unbuffered segments): one call per iovec, stopping at the first short one. */
static ssize_t rwv(HANDLE h, bool write, const struct iovec *iov, int iovcnt, uint64_t off)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        size_t done = 0;
        while (done < iov[i].iov_len) {
            ssize_t r = rw(h, write, (char *)iov[i].iov_base + done, iov[i].iov_len - done,
                           off + total);
            if (r < 0)
                return total ? (ssize_t)total : r;
            if (r == 0)
                return (ssize_t)total;
            done += (size_t)r;
            total += (size_t)r;
        }
    }
    return (ssize_t)total;
}

static ssize_t sys_preadv(HANDLE h, const struct iovec *iov, int iovcnt, uint64_t off)
{
    return rwv(h, false, iov, iovcnt, off);
}

static ssize_t sys_pwritev(HANDLE h, const struct iovec *iov, int iovcnt, uint64_t off)
{
    return rwv(h, true, iov, iovcnt, off);
}

static int sys_fsync(HANDLE h, bool datasync)
{
    /* FlushFileBuffers writes data and metadata; Windows has no cheaper data-only flush
     * through the Win32 API (NtFlushBuffersFileEx FLUSH_FLAGS_FILE_DATA_SYNC_ONLY needs
     * Windows 10 1709), so AFS_FSYNC_DATA gets the full flush. */
    (void)datasync;
    return FlushFileBuffers(h) ? 0 : afs__win_errno(GetLastError());
}

static int set_eof(HANDLE h, uint64_t size)
{
    FILE_END_OF_FILE_INFO eof;
    eof.EndOfFile.QuadPart = (LONGLONG)size;
    if (!SetFileInformationByHandle(h, FileEndOfFileInfo, &eof, sizeof eof))
        return afs__win_errno(GetLastError());
    return 0;
}

static int sys_ftruncate(HANDLE h, uint64_t size)
{
    return set_eof(h, size);
}

/* FSCTL_SET_ZERO_DATA: on a sparse file the range is freed, on others zeros are written. */
static int zero_data(HANDLE h, uint64_t off, uint64_t end)
{
    if (end <= off)
        return 0;
    HANDLE ev = thread_event();
    if (!ev)
        return -ENOMEM;
    FILE_ZERO_DATA_INFORMATION z;
    z.FileOffset.QuadPart = (LONGLONG)off;
    z.BeyondFinalZero.QuadPart = (LONGLONG)end;
    OVERLAPPED ov;
    memset(&ov, 0, sizeof ov);
    ov.hEvent = (HANDLE)((uintptr_t)ev | 1);
    DWORD n = 0;
    BOOL ok = DeviceIoControl(h, FSCTL_SET_ZERO_DATA, &z, sizeof z, NULL, 0, &n, &ov);
    DWORD err = ok ? 0 : GetLastError();
    if (err == ERROR_IO_PENDING)
        err = GetOverlappedResult(h, &ov, &n, TRUE) ? 0 : GetLastError();
    if (err == ERROR_INVALID_FUNCTION || err == ERROR_NOT_SUPPORTED)
        return -ENOTSUP; /* the file system has no such control */
    return err ? afs__win_errno(err) : 0;
}

/* Zeros written over [off, end): what FSCTL_SET_ZERO_DATA does on a file that is not
 * sparse, for file systems (FAT) and emulations that lack the control. */
static int write_zeros(HANDLE h, uint64_t off, uint64_t end)
{
    static const char zeros[65536];
    while (off < end) {
        size_t n = (size_t)AFS_MIN(end - off, (uint64_t)sizeof zeros);
        ssize_t r = rw(h, true, (void *)zeros, n, off);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return -EIO;
        off += (uint64_t)r;
    }
    return 0;
}

static bool unsupported(int err)
{
    return err == -ENOTSUP || err == -ENOSYS || err == -EOPNOTSUPP;
}

static int sys_fallocate(HANDLE h, int mode, uint64_t off, uint64_t len)
{
    LARGE_INTEGER sz;
    if (!GetFileSizeEx(h, &sz))
        return afs__win_errno(GetLastError());
    uint64_t size = (uint64_t)sz.QuadPart, end = off + len;
    bool keep = mode & (AFS_FALLOC_KEEP_SIZE | AFS_FALLOC_PUNCH_HOLE);
    if (mode & (AFS_FALLOC_PUNCH_HOLE | AFS_FALLOC_ZERO_RANGE)) {
        /* Only the part inside the file: past the end it reads as zeros already. */
        uint64_t zend = end < size ? end : size;
        int err = zero_data(h, off, zend);
        if (unsupported(err))
            err = write_zeros(h, off, zend);
        if (err < 0 || keep || end <= size)
            return err;
        return set_eof(h, end);
    }
    /* Allocate: the allocation size covers the whole file from 0, so it grows to `end`
     * (never shrinks: that would drop data). */
    FILE_STANDARD_INFO si;
    int err = 0;
    if (!GetFileInformationByHandleEx(h, FileStandardInfo, &si, sizeof si)) {
        err = afs__win_errno(GetLastError());
    } else if ((uint64_t)si.AllocationSize.QuadPart < end) {
        FILE_ALLOCATION_INFO ai;
        ai.AllocationSize.QuadPart = (LONGLONG)end;
        if (!SetFileInformationByHandle(h, FileAllocationInfo, &ai, sizeof ai))
            err = afs__win_errno(GetLastError());
    }
    /* Without allocation control (some emulations) a file that is not sparse is still
     * allocated up to its end: extending it is the allocation. */
    if (err < 0 && (keep || !unsupported(err)))
        return err;
    if (!keep && end > size)
        return set_eof(h, end);
    return 0;
}

static int sys_close(HANDLE h)
{
    return CloseHandle(h) ? 0 : afs__win_errno(GetLastError());
}

struct afs__syscalls afs__sys = {
    .close = sys_close,
    .pread = sys_pread,
    .pwrite = sys_pwrite,
    .preadv = sys_preadv,
    .pwritev = sys_pwritev,
    .fsync = sys_fsync,
    .fallocate = sys_fallocate,
    .ftruncate = sys_ftruncate,
    .malloc = malloc,
    .calloc = calloc,
    .realloc = realloc,
    .now = afs__now_ns,
};

/* ------------------------------------------------------------------------------------------
 * Open and close
 * ---------------------------------------------------------------------------------------- */

/* UTF-8 to a malloc'd UTF-16 string; NULL with *err set. */
static wchar_t *widen(const char *s, int *err)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0) {
        *err = -EINVAL; /* not UTF-8 */
        return NULL;
    }
    wchar_t *w = malloc((size_t)n * sizeof *w);
    if (!w) {
        *err = -ENOMEM;
        return NULL;
    }
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n);
    return w;
}

static int open_w(const wchar_t *path, int afs_flags, unsigned perm, afs__fd_t *out)
{
    int acc = afs_flags & (AFS_RDONLY | AFS_WRONLY | AFS_RDWR);
    DWORD access = 0;
    if (acc != AFS_WRONLY)
        access |= FILE_GENERIC_READ;
    if (acc != AFS_RDONLY) {
        access |= FILE_GENERIC_WRITE;
        /* Append-only access: the system puts every write at the end of the file, whatever
         * offset the OVERLAPPED says (O_APPEND). */
        if (afs_flags & AFS_APPEND)
            access &= ~(DWORD)FILE_WRITE_DATA;
    }
    DWORD disp;
    bool creat = afs_flags & AFS_CREAT, trunc = afs_flags & AFS_TRUNC;
    if (creat && (afs_flags & AFS_EXCL))
        disp = CREATE_NEW;
    else if (creat && trunc)
        disp = CREATE_ALWAYS;
    else if (creat)
        disp = OPEN_ALWAYS;
    else if (trunc)
        disp = TRUNCATE_EXISTING;
    else
        disp = OPEN_EXISTING;
    DWORD attrs = FILE_ATTRIBUTE_NORMAL;
    if (creat && !(perm & 0222))
        attrs = FILE_ATTRIBUTE_READONLY; /* what the C runtime's _open does with the mode */
    DWORD fl = FILE_FLAG_OVERLAPPED;
    if (afs_flags & AFS_DIRECT)
        fl |= FILE_FLAG_NO_BUFFERING | FILE_FLAG_WRITE_THROUGH;
    if (afs_flags & AFS_DSYNC)
        fl |= FILE_FLAG_WRITE_THROUGH;
    if (afs_flags & AFS_NOFOLLOW)
        fl |= FILE_FLAG_OPEN_REPARSE_POINT;
    DWORD share = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;

    if (trunc && (afs_flags & AFS_APPEND) && acc != AFS_RDONLY) {
        /* Truncation needs FILE_WRITE_DATA, which append-only access leaves out: truncate
         * through a short-lived handle first, then open for appending. */
        HANDLE t = CreateFileW(path, GENERIC_WRITE, share, NULL, disp, attrs | fl, NULL);
        if (t == INVALID_HANDLE_VALUE)
            return afs__win_errno(GetLastError());
        CloseHandle(t);
        disp = OPEN_EXISTING;
    }
    HANDLE h = CreateFileW(path, access, share, NULL, disp, attrs | fl, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        DWORD e = GetLastError();
        /* Opening a directory without FILE_FLAG_BACKUP_SEMANTICS fails "access denied". */
        DWORD a = GetFileAttributesW(path);
        if (a != INVALID_FILE_ATTRIBUTES && (a & FILE_ATTRIBUTE_DIRECTORY) &&
            !(a & FILE_ATTRIBUTE_REPARSE_POINT && afs_flags & AFS_NOFOLLOW))
            return -EISDIR;
        return afs__win_errno(e);
    }
    BY_HANDLE_FILE_INFORMATION info;
    if (GetFileInformationByHandle(h, &info)) {
        int err = 0;
        if ((afs_flags & AFS_NOFOLLOW) && (info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT))
            err = -ELOOP; /* a symbolic link or junction, opened as itself */
        else if (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)
            err = -EISDIR;
        if (err) {
            CloseHandle(h);
            return err;
        }
    }
    *out = h;
    return 0;
}

int afs__sys_fd_info(afs__fd_t fd, struct afs__fd_info *info)
{
    DWORD type = GetFileType(fd);
    if (type == FILE_TYPE_UNKNOWN && GetLastError() != NO_ERROR)
        return afs__win_errno(GetLastError());
    info->seq = type == FILE_TYPE_PIPE || type == FILE_TYPE_CHAR;
    info->sock = false; /* no sockets on Windows yet (src/windows/sock.c) */
    info->made = false;
    info->size = -1;
    info->dir = false; /* CreateFileW refuses a directory without FILE_FLAG_BACKUP_SEMANTICS */
    LARGE_INTEGER sz;
    if (type == FILE_TYPE_DISK && GetFileSizeEx(fd, &sz))
        info->size = (int64_t)sz.QuadPart;
    return 0;
}

int afs__sys_open(const char *path, int afs_flags, unsigned perm, afs__fd_t *out,
                  struct afs__fd_info *info)
{
    int err = 0;
    wchar_t *w = widen(path, &err);
    if (!w)
        return err;
    err = open_w(w, afs_flags, perm, out);
    free(w);
    if (err == 0 && info && (err = afs__sys_fd_info(*out, info)) < 0)
        CloseHandle(*out);
    return err;
}

int afs__sys_close(afs__fd_t fd)
{
    return afs__sys.close(fd);
}

int64_t afs__sys_size(afs__fd_t fd)
{
    LARGE_INTEGER sz;
    if (!GetFileSizeEx(fd, &sz))
        return afs__win_errno(GetLastError());
    return (int64_t)sz.QuadPart;
}

/* The volume's sector size, which FILE_FLAG_NO_BUFFERING requires for buffers, lengths and
 * offsets. FileStorageInfo (Windows 8) knows the physical sector size too; older systems
 * and wine answer through GetDiskFreeSpaceW on the volume root. */
unsigned afs__sys_dio_align(afs__fd_t fd)
{
    FILE_STORAGE_INFO si;
    if (GetFileInformationByHandleEx(fd, FileStorageInfo, &si, sizeof si)) {
        unsigned a = (unsigned)si.LogicalBytesPerSector;
        if (si.PhysicalBytesPerSectorForPerformance > a &&
            si.PhysicalBytesPerSectorForPerformance <= 65536)
            a = (unsigned)si.PhysicalBytesPerSectorForPerformance;
        if (a >= 512 && (a & (a - 1)) == 0)
            return a;
    }
    wchar_t path[MAX_PATH + 64], root[MAX_PATH + 64];
    DWORD n = GetFinalPathNameByHandleW(fd, path, MAX_PATH + 64, VOLUME_NAME_DOS);
    if (n > 0 && n < MAX_PATH + 64 &&
        GetVolumePathNameW(path, root, MAX_PATH + 64)) {
        DWORD spc, bps, free_clusters, clusters;
        if (GetDiskFreeSpaceW(root, &spc, &bps, &free_clusters, &clusters) && bps >= 512 &&
            (bps & (bps - 1)) == 0)
            return (unsigned)bps;
    }
    return 4096; /* unknown: the largest common sector size is always safe */
}

/* Windows takes no access-pattern advice on an open handle (only at open:
 * FILE_FLAG_SEQUENTIAL_SCAN, FILE_FLAG_RANDOM_ACCESS). */
int afs__sys_fadvise(afs__fd_t fd, uint64_t off, uint64_t len, int advice)
{
    (void)fd, (void)off, (void)len, (void)advice;
    return -ENOTSUP;
}

/* No range writeback either: a flush of the whole file, which is stronger. A read-only
 * handle cannot flush (access denied); writeback is only a hint, so that is no error. */
int afs__sys_sync_range(afs__fd_t fd, uint64_t off, uint64_t len, unsigned flags)
{
    (void)off, (void)len;
    if (!flags)
        return 0;
    int err = afs__sys.fsync(fd, true);
    return err == -EACCES || err == -EPERM ? 0 : err;
}

/* Windows tells no page-cache residency: streams read through the cache. */
int afs__sys_cache_state(afs__fd_t fd, int64_t off, int64_t len, uint64_t *cached, bool *dirty)
{
    (void)fd, (void)off, (void)len, (void)cached, (void)dirty;
    return -ENOTSUP;
}

bool afs__sys_same_file(afs__fd_t a, afs__fd_t b)
{
    BY_HANDLE_FILE_INFORMATION ia, ib;
    return GetFileInformationByHandle(a, &ia) && GetFileInformationByHandle(b, &ib) &&
           ia.dwVolumeSerialNumber == ib.dwVolumeSerialNumber &&
           ia.nFileIndexHigh == ib.nFileIndexHigh && ia.nFileIndexLow == ib.nFileIndexLow;
}

int afs__sys_crash_reopen(afs__fd_t fd, const char *path, afs__fd_t *out, bool *dup)
{
    *dup = false;
    if (path && afs__sys_open(path, AFS_RDWR, 0, out, NULL) == 0) {
        if (afs__sys_same_file(*out, fd))
            return 0;
        CloseHandle(*out);
    }
    /* A new handle of the same file, without the caller's FILE_FLAG_NO_BUFFERING. */
    HANDLE h = ReOpenFile(fd, GENERIC_READ | GENERIC_WRITE,
                          FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                          FILE_FLAG_OVERLAPPED);
    if (h != INVALID_HANDLE_VALUE) {
        *out = h;
        return 0;
    }
    HANDLE p = GetCurrentProcess();
    if (!DuplicateHandle(p, fd, p, &h, 0, FALSE, DUPLICATE_SAME_ACCESS))
        return afs__win_errno(GetLastError());
    *dup = true;
    *out = h;
    return 0;
}

void afs__sys_crash_plain(afs__fd_t fd)
{
    (void)fd; /* a handle's flags are its own: nothing shared to clear */
}

int afs__sys_crash_link(int dfd, const char *from, const char *to)
{
    (void)dfd, (void)from, (void)to;
    return -ENOTSUP; /* no directory fds: strict mode is refused here */
}


/* ------------------------------------------------------------------------------------------
 * Aligned memory
 * ---------------------------------------------------------------------------------------- */

#define BIG_ALLOC ((size_t)64 << 10)

void *afs__aligned_alloc(size_t size, size_t align)
{
    /* Large buffers straight from VirtualAlloc: page aligned (64 KiB in fact), returned to
     * the system on free. */
    if (size >= BIG_ALLOC) {
        AFS_CHECK(align <= 65536, "alignment above the allocation granularity");
        return VirtualAlloc(NULL, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    }
    return _aligned_malloc(size, align);
}

void afs__aligned_free(void *p, size_t size)
{
    if (size >= BIG_ALLOC)
        VirtualFree(p, 0, MEM_RELEASE);
    else
        _aligned_free(p);
}

/* ------------------------------------------------------------------------------------------
 * Metadata ops on Windows: there are no directory fds and no int descriptors to open
 * relative to, so afs_queue_openat() and the rest are refused with -ENOTSUP when queued
 * (afs__sys_meta_supported). These are the platform functions the core links against;
 * none is reached.
 * ---------------------------------------------------------------------------------------- */

bool afs__sys_meta_supported(void)
{
    return false;
}

int afs__sys_openat(int dirfd, const char *path, int afs_flags, unsigned perm)
{
    (void)dirfd, (void)path, (void)afs_flags, (void)perm;
    return -ENOTSUP;
}

int afs__sys_statx(int dirfd, const char *path, int afs_at_flags, struct afs_stat *st)
{
    (void)dirfd, (void)path, (void)afs_at_flags, (void)st;
    return -ENOTSUP;
}

int afs__sys_mkdirat(int dirfd, const char *path, unsigned perm)
{
    (void)dirfd, (void)path, (void)perm;
    return -ENOTSUP;
}

int afs__sys_renameat(int dirfd, const char *path, int dirfd2, const char *path2, int afs_flags)
{
    (void)dirfd, (void)path, (void)dirfd2, (void)path2, (void)afs_flags;
    return -ENOTSUP;
}

int afs__sys_unlinkat(int dirfd, const char *path, int afs_at_flags)
{
    (void)dirfd, (void)path, (void)afs_at_flags;
    return -ENOTSUP;
}

int afs__sys_syncfs(int fd)
{
    (void)fd;
    return -ENOTSUP;
}

int afs__sys_fsync_fd(int fd, bool datasync)
{
    (void)fd, (void)datasync;
    return -ENOTSUP;
}

/* A directory's handle (FILE_FLAG_BACKUP_SEMANTICS) flushed: FlushFileBuffers wants write
 * access to it. */
int afs__sys_fsync_dir(const char *path)
{
    int err = 0;
    wchar_t *w = widen(path, &err);
    if (!w)
        return err;
    HANDLE h = CreateFileW(w, GENERIC_READ | GENERIC_WRITE,
                           FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                           OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
    free(w);
    if (h == INVALID_HANDLE_VALUE)
        return afs__win_errno(GetLastError());
    BY_HANDLE_FILE_INFORMATION info;
    if (GetFileInformationByHandle(h, &info) &&
        !(info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
        CloseHandle(h);
        return -ENOTDIR;
    }
    err = FlushFileBuffers(h) ? 0 : afs__win_errno(GetLastError());
    CloseHandle(h);
    return err;
}

int afs__sys_dio_info(afs__fd_t fd, struct afs_dio_align *out)
{
    memset(out, 0, sizeof *out);
    FILE_STORAGE_INFO si;
    out->exact = GetFileInformationByHandleEx(fd, FileStorageInfo, &si, sizeof si) ? 1 : 0;
    out->mem = out->offset = afs__sys_dio_align(fd);
    return 0;
}

int afs__sys_close_fd(int fd)
{
    (void)fd;
    return -ENOTSUP;
}

int afs__sys_fd_adopt(int fd)
{
    (void)fd;
    return -ENOTSUP;
}

void afs__sys_from_statx(const void *stx, struct afs_stat *st)
{
    (void)stx;
    memset(st, 0, sizeof *st);
}

int afs__sys_open_flags(int afs_flags)
{
    return afs_flags;
}

int afs__sys_at_flags(int afs_at_flags)
{
    return afs_at_flags;
}

int afs__sys_dirfd(int dirfd)
{
    return dirfd;
}
