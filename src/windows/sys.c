/* Windows system calls behind platform.h. Files are always opened FILE_FLAG_OVERLAPPED (the
 * iocp backend needs it), so the synchronous calls here run an OVERLAPPED on a per-thread
 * event too, and wait for it. The event handle carries its low bit set: a completion port
 * the file may be associated with gets no packet for these (documented for
 * GetQueuedCompletionStatus). Each call returns >= 0 or -errno (error.c translates). */
#include "internal.h"

#include <limits.h>
#include <malloc.h>
#include <winioctl.h>
#include <winternl.h>
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

/* One synchronous ReadFile or WriteFile at `off`. EOF on a read is 0 bytes: the end of a
 * file (ERROR_HANDLE_EOF), and a pipe whose writer closed its end (ERROR_BROKEN_PIPE, after
 * every byte it wrote was read; a write to a pipe without reader stays -EPIPE). A read
 * without offset (AFS__OFF_SEQ: a pipe or character device) is made at offset 0, which such
 * files ignore: 0xFFFFFFFF:FFFFFFFF means "end of file" to WriteFile only, and ReadFile
 * refuses it (NUL: ERROR_INVALID_PARAMETER). */
static ssize_t rw(HANDLE h, bool write, void *buf, size_t len, uint64_t off)
{
    HANDLE ev = thread_event();
    if (!ev)
        return -ENOMEM;
    if (off == AFS__OFF_SEQ && !write)
        off = 0;
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
    if (!write && afs__win_read_eof(err))
        return 0;
    if (err && write && off != AFS__OFF_SEQ)
        return afs__win_size_errno(afs__win_errno(err), off + want);
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
                           off == AFS__OFF_SEQ ? off : off + total);
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

/* FlushFileBuffers wants write access: a handle without it (a directory's, a file opened
 * read-only) is flushed through a second one opened on it with write access (-EACCES where
 * none can be had: a read-only file). */
static int flush_reopened(HANDLE h);
/* The end of file moved to `size` (with the ntdll calls below). */
static int set_eof(HANDLE h, uint64_t size);

static int sys_fsync(HANDLE h, bool datasync)
{
    /* FlushFileBuffers writes data and metadata; Windows has no cheaper data-only flush
     * through the Win32 API (NtFlushBuffersFileEx FLUSH_FLAGS_FILE_DATA_SYNC_ONLY needs
     * Windows 10 1709), so AFS_FSYNC_DATA gets the full flush. */
    (void)datasync;
    if (GetFileType(h) != FILE_TYPE_DISK)
        return -EINVAL; /* as fsync(2) of a pipe, socket or device (FlushFileBuffers of a
                           pipe waits until the reader has read everything) */
    if (FlushFileBuffers(h))
        return 0;
    DWORD e = GetLastError();
    return e == ERROR_ACCESS_DENIED ? flush_reopened(h) : afs__win_errno(e);
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
            err = afs__win_size_errno(afs__win_errno(GetLastError()), end);
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

int afs__sys_fd_info(afs__fd_t fd, struct afs__fd_info *info)
{
    DWORD type = GetFileType(fd);
    if (type == FILE_TYPE_UNKNOWN && GetLastError() != NO_ERROR)
        return afs__win_errno(GetLastError());
    info->seq = type == FILE_TYPE_PIPE || type == FILE_TYPE_CHAR;
    info->sock = false; /* no sockets on Windows yet (src/windows/sock.c) */
    info->dgram = false;
    info->fifo = false; /* pipes there are handles with overlapped I/O, not polled */
    info->own = false;
    info->made = false;
    info->size = -1;
    info->dir = false; /* a directory from afs_openat() */
    FILE_STANDARD_INFO si;
    if (type == FILE_TYPE_DISK && GetFileInformationByHandleEx(fd, FileStandardInfo, &si, sizeof si)) {
        info->size = (int64_t)si.EndOfFile.QuadPart;
        info->dir = si.Directory;
    }
    return 0;
}

int afs__sys_fd_info_st(afs__fd_t fd, struct afs__fd_info *info, struct afs_stat *st)
{
    int err = afs__sys_fd_info(fd, info);
    if (err == 0 && st)
        err = afs__sys_statx((int)(intptr_t)fd, "", AFS_AT_EMPTY_PATH, st);
    return err;
}

/* afs_open(): the open of afs_openat() (NtCreateFile on the NT path: no MAX_PATH limit),
 * refusing a directory as open(2) does for write access and afs_open() promises for all. */
int afs__sys_open(const char *path, int afs_flags, unsigned perm, afs__fd_t *out,
                  struct afs__fd_info *info)
{
    int fd = afs__sys_openat(AFS_AT_FDCWD, path, afs_flags, perm);
    if (fd < 0)
        return fd;
    HANDLE h = (HANDLE)(intptr_t)fd;
    struct afs__fd_info local;
    int err = afs__sys_fd_info(h, info ? info : &local);
    if (err == 0 && (info ? info : &local)->dir)
        err = -EISDIR;
    if (err < 0) {
        CloseHandle(h);
        return err;
    }
    *out = h;
    return 0;
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
 * Metadata ops. The library's descriptors on Windows are HANDLE values as int: Windows
 * documents that a kernel handle's significant bits fit 32 bits (64-bit and 32-bit processes
 * share them), and real handles are positive multiples of 4, so every valid handle is a
 * non-negative int, AFS_AT_FDCWD (-100) is none of them, and afs_file_fd() of a file made by
 * afs_file_from_fd(fd) gives back fd. Directory handles serve as dirfd: paths relative to
 * them open through NtCreateFile with RootDirectory (as openat does, no name is looked up
 * twice); a path that climbs above its directory ("..") is joined to the directory's final
 * path instead. Absolute paths and AFS_AT_FDCWD go through GetFullPathNameW to an NT path
 * ("\??\C:\..."), which has no MAX_PATH limit: long paths need no "\\?\" from the caller.
 * Handles are opened for overlapped I/O (the iocp backend needs it), shared for read, write
 * and delete, not inherited.
 * ---------------------------------------------------------------------------------------- */

/* Information classes and flags of NtSetInformationFile (ntifs.h, not in every SDK). */
#define NT_FILE_RENAME_INFORMATION    10
#define NT_FILE_LINK_INFORMATION      11
#define NT_FILE_RENAME_INFORMATION_EX 65
#define NT_FILE_END_OF_FILE_INFORMATION 20
#define NT_RENAME_REPLACE_IF_EXISTS   0x1
#define NT_RENAME_POSIX_SEMANTICS     0x2
#define NT_RENAME_IGNORE_READONLY     0x40
#define NT_STATUS_INVALID_PARAMETER   ((LONG)0xC000000DL)
#define NT_STATUS_INVALID_INFO_CLASS  ((LONG)0xC0000003L)
#define NT_STATUS_NOT_IMPLEMENTED     ((LONG)0xC0000002L)
#define NT_STATUS_NOT_SUPPORTED       ((LONG)0xC00000BBL)
#define NT_STATUS_ACCESS_DENIED       ((LONG)0xC0000022L)
#define NT_STATUS_CANNOT_DELETE       ((LONG)0xC0000121L)
#define NT_STATUS_OBJECT_NAME_COLLISION ((LONG)0xC0000035L)
#define NT_FILE_DISPOSITION_INFORMATION    13
#define NT_FILE_DISPOSITION_INFORMATION_EX 64
#define NT_DISPOSITION_DELETE              0x1
#define NT_DISPOSITION_POSIX_SEMANTICS     0x2
#define NT_DISPOSITION_IGNORE_READONLY     0x10
#ifndef IO_REPARSE_TAG_MOUNT_POINT
#define IO_REPARSE_TAG_MOUNT_POINT 0xA0000003L
#endif
#ifndef IO_REPARSE_TAG_SYMLINK
#define IO_REPARSE_TAG_SYMLINK 0xA000000CL
#endif

/* The type bits of st_mode, as POSIX numbers them (MinGW's headers lack S_IFLNK). */
#define MODE_DIR 0040000u
#define MODE_REG 0100000u
#define MODE_LNK 0120000u

/* FILE_RENAME_INFORMATION and FILE_LINK_INFORMATION share this layout. */
struct nt_name_info {
    union {
        BOOLEAN replace;
        ULONG   flags;
    };
    HANDLE  root;
    ULONG   len; /* bytes */
    wchar_t name[];
};

typedef NTSTATUS(NTAPI *nt_create_fn)(HANDLE *, ACCESS_MASK, OBJECT_ATTRIBUTES *,
                                      IO_STATUS_BLOCK *, LARGE_INTEGER *, ULONG, ULONG, ULONG,
                                      ULONG, void *, ULONG);
typedef NTSTATUS(NTAPI *nt_set_info_fn)(HANDLE, IO_STATUS_BLOCK *, void *, ULONG, int);

static struct {
    nt_create_fn   create;
    nt_set_info_fn set_info;
} nt;
static INIT_ONCE nt_once = INIT_ONCE_STATIC_INIT;

static BOOL CALLBACK nt_init(INIT_ONCE *once, void *param, void **ctx)
{
    (void)once, (void)param, (void)ctx;
    HMODULE m = GetModuleHandleW(L"ntdll.dll");
    if (m) {
        nt.create = (nt_create_fn)(void (*)(void))GetProcAddress(m, "NtCreateFile");
        nt.set_info = (nt_set_info_fn)(void (*)(void))GetProcAddress(m, "NtSetInformationFile");
    }
    return TRUE;
}

static bool nt_ready(void)
{
    InitOnceExecuteOnce(&nt_once, nt_init, NULL, NULL);
    return nt.create && nt.set_info;
}

/* NtSetInformationFile rather than SetFileInformationByHandle: the NTSTATUS says why a size
 * is refused, where the Windows error may not (wine's STATUS_SECTION_TOO_BIG for a size the
 * host's file system refuses would be ERROR_NOT_ENOUGH_MEMORY). */
static int set_eof(HANDLE h, uint64_t size)
{
    FILE_END_OF_FILE_INFO eof;
    eof.EndOfFile.QuadPart = (LONGLONG)size;
    if (!nt_ready()) {
        if (!SetFileInformationByHandle(h, FileEndOfFileInfo, &eof, sizeof eof))
            return afs__win_size_errno(afs__win_errno(GetLastError()), size);
        return 0;
    }
    IO_STATUS_BLOCK iosb;
    NTSTATUS s = nt.set_info(h, &iosb, &eof, sizeof eof, NT_FILE_END_OF_FILE_INFORMATION);
    return afs__win_size_errno(afs__nt_errno(s), size);
}

static HANDLE fd_handle(int fd)
{
    return (HANDLE)(intptr_t)fd;
}

/* An NT name to open: `buf` relative to `root` (a directory handle), or absolute (root NULL). */
struct nt_name {
    wchar_t *buf;
    size_t   len; /* characters */
    HANDLE   root;
    bool     slash; /* the path ended in a separator: it must be a directory */
};

static bool is_sep(wchar_t c)
{
    return c == L'\\' || c == L'/';
}

/* Each component at most 255 UTF-16 units (NTFS, FAT, wine): POSIX says ENAMETOOLONG,
 * Windows "invalid name". */
static int check_components(const wchar_t *s, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        run = s[i] == L'\\' ? 0 : run + 1;
        if (run > 255)
            return -ENAMETOOLONG;
    }
    return n > 32000 ? -ENAMETOOLONG : 0; /* UNICODE_STRING counts bytes in 16 bits */
}

/* A DOS path (absolute, or relative to the current directory) as an NT path. */
static int nt_full(const wchar_t *w, struct nt_name *out)
{
    const wchar_t *pre = L"\\??\\";
    const wchar_t *rest = w;
    wchar_t *full = NULL;
    if (is_sep(w[0]) && is_sep(w[1]) && (w[2] == L'?' || w[2] == L'.') && is_sep(w[3])) {
        rest = w + 4; /* \\?\ and \\.\ : taken as they are */
    } else {
        DWORD n = GetFullPathNameW(w, 0, NULL, NULL);
        if (n == 0)
            return afs__win_errno(GetLastError());
        if (!(full = malloc((size_t)n * sizeof *full)))
            return -ENOMEM;
        DWORD m = GetFullPathNameW(w, n, full, NULL);
        if (m == 0 || m >= n) {
            free(full);
            return m == 0 ? afs__win_errno(GetLastError()) : -ENAMETOOLONG;
        }
        rest = full;
        if (is_sep(full[0]) && is_sep(full[1]) && (full[2] == L'?' || full[2] == L'.') &&
            is_sep(full[3])) {
            rest = full + 4; /* a device's name (NUL, CON, COM1...) gives \\.\NUL */
        } else if (is_sep(full[0]) && is_sep(full[1])) {
            pre = L"\\??\\UNC\\"; /* \\server\share\... */
            rest = full + 2;
        }
    }
    size_t pl = wcslen(pre), rl = wcslen(rest);
    wchar_t *buf = malloc((pl + rl + 1) * sizeof *buf);
    if (!buf) {
        free(full);
        return -ENOMEM;
    }
    memcpy(buf, pre, pl * sizeof *buf);
    memcpy(buf + pl, rest, (rl + 1) * sizeof *buf);
    free(full);
    size_t n = pl + rl;
    for (size_t i = pl; i < n; i++)
        if (buf[i] == L'/')
            buf[i] = L'\\';
    /* A trailing separator goes, but for a volume's root ("\??\C:\" is the root directory,
     * "\??\C:" the volume device). */
    while (n > pl + 1 && buf[n - 1] == L'\\' && buf[n - 2] != L':' && buf[n - 2] != L'\\')
        buf[--n] = 0;
    out->buf = buf;
    out->len = n;
    out->root = NULL;
    return check_components(buf + pl, n - pl);
}

/* The final path of a directory handle joined with a relative path, as a DOS path. */
static int join_final(HANDLE dir, const wchar_t *rel, wchar_t **out)
{
    DWORD n = GetFinalPathNameByHandleW(dir, NULL, 0, VOLUME_NAME_DOS);
    if (n == 0) {
        DWORD e = GetLastError();
        /* wine 8 gives no path over MAX_PATH this way */
        return e == ERROR_MORE_DATA ? -ENAMETOOLONG : afs__win_errno(e);
    }
    size_t rl = wcslen(rel);
    wchar_t *buf = malloc(((size_t)n + rl + 2) * sizeof *buf);
    if (!buf)
        return -ENOMEM;
    DWORD m = GetFinalPathNameByHandleW(dir, buf, n, VOLUME_NAME_DOS);
    if (m == 0 || m >= n) {
        free(buf);
        return m == 0 ? afs__win_errno(GetLastError()) : -EAGAIN; /* renamed meanwhile */
    }
    buf[m] = L'\\';
    memcpy(buf + m + 1, rel, (rl + 1) * sizeof *buf);
    *out = buf;
    return 0;
}

/* path (UTF-8) relative to dirfd as an NT name. Relative names are cleaned up ("." and empty
 * components go, ".." takes the one before it) since the system resolves neither relative to
 * a handle; one that climbs above dirfd is joined to dirfd's final path instead. Takes the
 * names as text: nt_name() checks first what that skips. */
static int nt_name_text(int dirfd, const char *path, struct nt_name *out)
{
    memset(out, 0, sizeof *out);
    if (!nt_ready())
        return -ENOTSUP;
    if (!path[0])
        return -ENOENT;
    int err = 0;
    wchar_t *w = widen(path, &err);
    if (!w)
        return err;
    size_t n = wcslen(w);
    out->slash = is_sep(w[n - 1]);
    bool absolute = is_sep(w[0]) || (w[0] && w[1] == L':');
    if (dirfd == AFS_AT_FDCWD || absolute) {
        err = nt_full(w, out);
        free(w);
        return err;
    }
    /* Components of w, in place: o is where the cleaned-up name ends. */
    size_t o = 0, i = 0;
    bool above = false;
    while (i < n && !above) {
        while (i < n && is_sep(w[i]))
            i++;
        size_t s = i;
        while (i < n && !is_sep(w[i]))
            i++;
        size_t len = i - s;
        if (len == 0 || (len == 1 && w[s] == L'.'))
            continue;
        if (len == 2 && w[s] == L'.' && w[s + 1] == L'.') {
            if (o == 0) {
                above = true;
                break;
            }
            while (o > 0 && w[o - 1] != L'\\')
                o--;
            if (o > 0)
                o--; /* the separator before it */
            continue;
        }
        if (o > 0)
            w[o++] = L'\\';
        memmove(w + o, w + s, len * sizeof *w);
        o += len;
    }
    if (above) {
        /* Restore the separators of the original and join. */
        wchar_t *orig = widen(path, &err), *joined = NULL;
        free(w);
        if (!orig)
            return err;
        err = join_final(fd_handle(dirfd), orig, &joined);
        free(orig);
        if (err < 0)
            return err;
        /* \\?\C:\dir\..\x is not cleaned up by GetFullPathNameW: drop the prefix first. */
        wchar_t *dos = joined;
        if (!wcsncmp(joined, L"\\\\?\\UNC\\", 8)) {
            dos = joined + 6;
            dos[0] = L'\\';
        } else if (!wcsncmp(joined, L"\\\\?\\", 4)) {
            dos = joined + 4;
        }
        bool slash = out->slash;
        err = nt_full(dos, out);
        out->slash = slash;
        free(joined);
        return err;
    }
    w[o] = 0;
    out->buf = w;
    out->len = o;
    out->root = fd_handle(dirfd);
    return check_components(w, o);
}

#define NT_STATUS_OBJECT_NAME_NOT_FOUND ((LONG)0xC0000034L)
#define NT_STATUS_OBJECT_PATH_NOT_FOUND ((LONG)0xC000003AL)

/* After STATUS_OBJECT_PATH_NOT_FOUND: whether the nearest existing ancestor of the name is
 * not a directory ("file/x", "file/x/y": POSIX says ENOTDIR, Windows "path not found").
 * The ancestors are tried from the longest (each one open for its attributes, following
 * links), down to the directory handle or the volume ("\??\C:\", "\??\UNC\srv\share"),
 * which are not tried. Only on that error path: a successful open costs nothing. */
static bool through_a_file(const struct nt_name *nm)
{
    size_t min = 0; /* prefixes must be longer: the volume's part of an absolute name */
    if (!nm->root) {
        size_t pl = nm->len >= 8 && !wcsncmp(nm->buf, L"\\??\\UNC\\", 8) ? 8 : 4;
        unsigned comps = pl == 8 ? 2 : 1; /* srv\share, or C: (a drive, NUL...) */
        min = pl;
        while (comps-- > 0) {
            while (min < nm->len && nm->buf[min] != L'\\')
                min++;
            if (comps)
                min++;
        }
    }
    for (size_t i = nm->len; i-- > min + 1;) {
        if (nm->buf[i] != L'\\')
            continue;
        UNICODE_STRING us;
        us.Buffer = nm->buf;
        us.Length = us.MaximumLength = (USHORT)(i * sizeof(wchar_t));
        OBJECT_ATTRIBUTES oa;
        InitializeObjectAttributes(&oa, &us, OBJ_CASE_INSENSITIVE, nm->root, NULL);
        IO_STATUS_BLOCK iosb;
        HANDLE h;
        NTSTATUS s = nt.create(&h, FILE_READ_ATTRIBUTES | SYNCHRONIZE, &oa, &iosb, NULL, 0,
                               FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, FILE_OPEN,
                               0, NULL, 0);
        if (s == NT_STATUS_OBJECT_NAME_NOT_FOUND || s == NT_STATUS_OBJECT_PATH_NOT_FOUND)
            continue; /* not there either: its parent decides */
        if (s < 0)
            return false; /* cannot tell (access denied...): the original error stands */
        FILE_BASIC_INFO bi;
        bool file = GetFileType(h) == FILE_TYPE_DISK &&
                    GetFileInformationByHandleEx(h, FileBasicInfo, &bi, sizeof bi) &&
                    !(bi.FileAttributes & FILE_ATTRIBUTE_DIRECTORY);
        CloseHandle(h);
        return file;
    }
    return false;
}

/* Opens name (see nt_name) with NtCreateFile, shared as `share` says. An error on a name
 * relative to a handle that is not an open directory says so (-EBADF, -ENOTDIR), as openat
 * does; so does a name that goes through a file that is not a directory (-ENOTDIR,
 * through_a_file). */
static int nt_open_shared(const struct nt_name *nm, ACCESS_MASK access, ULONG attrs, ULONG disp,
                          ULONG options, ULONG share, HANDLE *out)
{
    UNICODE_STRING us;
    us.Buffer = nm->buf;
    us.Length = us.MaximumLength = (USHORT)(nm->len * sizeof(wchar_t));
    OBJECT_ATTRIBUTES oa;
    InitializeObjectAttributes(&oa, &us, OBJ_CASE_INSENSITIVE, nm->root, NULL);
    IO_STATUS_BLOCK iosb;
    if (nm->slash)
        options |= FILE_DIRECTORY_FILE;
    NTSTATUS s = nt.create(out, access | SYNCHRONIZE | FILE_READ_ATTRIBUTES, &oa, &iosb, NULL,
                           attrs, share, disp, options, NULL, 0);
    if (s >= 0)
        return 0;
    if (nm->root) {
        FILE_BASIC_INFO bi;
        if (!GetFileInformationByHandleEx(nm->root, FileBasicInfo, &bi, sizeof bi))
            return -EBADF;
        if (!(bi.FileAttributes & FILE_ATTRIBUTE_DIRECTORY))
            return -ENOTDIR;
    }
    if (s == NT_STATUS_OBJECT_PATH_NOT_FOUND && through_a_file(nm))
        return -ENOTDIR;
    return afs__nt_errno(s);
}

/* nt_open_shared, shared for reading, writing and deletion (every open of the library). */
static int nt_open(const struct nt_name *nm, ACCESS_MASK access, ULONG attrs, ULONG disp,
                   ULONG options, HANDLE *out)
{
    return nt_open_shared(nm, access, attrs, disp, options,
                          FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, out);
}

static void nt_name_free(struct nt_name *nm)
{
    free(nm->buf);
    nm->buf = NULL;
}

static bool is_sep_c(char c)
{
    return c == '\\' || c == '/';
}

/* Whether the first len bytes of path (relative to dirfd) name a directory: 0, -ENOTDIR (a
 * file, or a path through one), -ENOENT, or the open's error. */
static int dir_check(int dirfd, const char *path, size_t len)
{
    char *p = malloc(len + 1);
    if (!p)
        return -ENOMEM;
    memcpy(p, path, len);
    p[len] = 0;
    struct nt_name nm;
    HANDLE h;
    int err = nt_name_text(dirfd, p, &nm);
    if (err == 0)
        err = nt_open(&nm, 0, 0, FILE_OPEN, FILE_DIRECTORY_FILE, &h);
    nt_name_free(&nm);
    free(p);
    if (err == 0)
        CloseHandle(h);
    return err;
}

/* POSIX resolves "x/.." by going into x and out again, so x must be a directory (-ENOTDIR;
 * -ENOENT when it is not there), and so must x in a path that ends in "x/.". Windows takes
 * both as text ("file\.." is the directory of the file, "file\." the file itself), in a
 * full path (GetFullPathNameW) as relative to a handle (nt_name_text). So each name in
 * front of such a component is opened as a directory first, from left to right (the text
 * clean-up of the names checked by then gives the directory the system reaches): one open
 * each, only for paths that have them. Where the path begins (dirfd, the current directory,
 * a volume's root) and where a ".." came back to are directories already. (A symbolic link
 * before a ".." still goes as text: to its own directory, not its target's parent.) */
static int dots_check(int dirfd, const char *path)
{
    size_t n = strlen(path), i = 0;
    /* A volume's part is not a name to check: "C:", "\\server\share", "\\?\C:". */
    if (n >= 2 && is_sep_c(path[0]) && is_sep_c(path[1])) {
        for (int comps = 0; comps < 2; comps++) {
            while (i < n && is_sep_c(path[i]))
                i++;
            while (i < n && !is_sep_c(path[i]))
                i++;
        }
    } else if (n >= 2 && path[1] == ':') {
        i = 2;
    }
    bool known_dir = true; /* where the components so far lead */
    while (i < n) {
        while (i < n && is_sep_c(path[i]))
            i++;
        size_t c = i;
        while (i < n && !is_sep_c(path[i]))
            i++;
        size_t len = i - c, j = i;
        while (j < n && is_sep_c(path[j]))
            j++;
        bool dot = len == 1 && path[c] == '.';
        bool dotdot = len == 2 && path[c] == '.' && path[c + 1] == '.';
        if (!dot && !dotdot) {
            known_dir = known_dir && len == 0;
            continue;
        }
        if (known_dir || (dot && j < n)) /* "x/./y": the system checks x on its way to y */
            continue;
        size_t end = c;
        while (end > 0 && is_sep_c(path[end - 1]))
            end--;
        int err = dir_check(dirfd, path, end);
        if (err < 0)
            return err;
        known_dir = true;
    }
    return 0;
}

/* nt_name_text() of a path whose "." and ".." components passed dots_check(). */
static int nt_name(int dirfd, const char *path, struct nt_name *out)
{
    memset(out, 0, sizeof *out);
    if (!nt_ready())
        return -ENOTSUP;
    int err = dots_check(dirfd, path);
    return err < 0 ? err : nt_name_text(dirfd, path, out);
}

/* Whether h is a symbolic link or a junction (opened as itself). */
static bool is_link(HANDLE h, DWORD *attrs)
{
    FILE_ATTRIBUTE_TAG_INFO ti;
    if (!GetFileInformationByHandleEx(h, FileAttributeTagInfo, &ti, sizeof ti))
        return false;
    if (attrs)
        *attrs = ti.FileAttributes;
    return (ti.FileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) &&
           (ti.ReparseTag == IO_REPARSE_TAG_SYMLINK || ti.ReparseTag == IO_REPARSE_TAG_MOUNT_POINT);
}

/* A handle as the library's int descriptor, or -EMFILE where it does not fit (never seen:
 * Windows promises 32 significant bits). */
static int handle_fd(HANDLE h)
{
    intptr_t v = (intptr_t)h;
    if (v < 0 || v > INT_MAX) {
        CloseHandle(h);
        return -EMFILE;
    }
    return (int)v;
}

bool afs__sys_meta_supported(void)
{
    return true;
}

int afs__sys_openat(int dirfd, const char *path, int afs_flags, unsigned perm)
{
    struct nt_name nm;
    int err = nt_name(dirfd, path, &nm);
    if (err < 0) {
        nt_name_free(&nm);
        return err;
    }
    int acc = afs_flags & (AFS_RDONLY | AFS_WRONLY | AFS_RDWR);
    bool creat = afs_flags & AFS_CREAT, trunc = afs_flags & AFS_TRUNC;
    ACCESS_MASK access = 0;
    if (acc != AFS_WRONLY)
        access |= FILE_GENERIC_READ;
    if (acc != AFS_RDONLY) {
        access |= FILE_GENERIC_WRITE;
        if (afs_flags & AFS_APPEND)
            access &= ~(ACCESS_MASK)FILE_WRITE_DATA; /* every write at the end (O_APPEND) */
    }
    ULONG disp;
    if (creat && (afs_flags & AFS_EXCL))
        disp = FILE_CREATE;
    else if (creat && trunc)
        disp = FILE_OVERWRITE_IF;
    else if (creat)
        disp = FILE_OPEN_IF;
    else if (trunc)
        disp = FILE_OVERWRITE;
    else
        disp = FILE_OPEN;
    ULONG attrs = creat && !(perm & 0222) ? FILE_ATTRIBUTE_READONLY : FILE_ATTRIBUTE_NORMAL;
    ULONG options = 0;
    if (afs_flags & AFS_DIRECTORY)
        options |= FILE_DIRECTORY_FILE;
    else if (acc != AFS_RDONLY || creat || trunc)
        options |= FILE_NON_DIRECTORY_FILE; /* -EISDIR for a directory */
    if (afs_flags & AFS_DIRECT)
        options |= FILE_NO_INTERMEDIATE_BUFFERING | FILE_WRITE_THROUGH;
    if (afs_flags & AFS_DSYNC)
        options |= FILE_WRITE_THROUGH;
    bool nofollow = (afs_flags & AFS_NOFOLLOW) || (creat && (afs_flags & AFS_EXCL));
    if (nofollow)
        options |= FILE_OPEN_REPARSE_POINT;
    HANDLE h;
    err = -EEXIST;
    if (trunc && (afs_flags & AFS_APPEND) && acc != AFS_RDONLY && disp != FILE_CREATE) {
        /* A file this open makes is empty already (with AFS_EXCL, always): made for
         * appending at once (its handle writes though perm makes it read-only, as open(2)'s
         * does; a second open would be refused). One that exists: truncation needs
         * FILE_WRITE_DATA, which append-only access leaves out, so it is truncated through
         * a short-lived handle first. */
        if (creat && disp == FILE_OVERWRITE_IF)
            err = nt_open(&nm, access, attrs, FILE_CREATE, options, &h);
        if (err == -EEXIST) {
            if ((err = nt_open(&nm, FILE_GENERIC_WRITE, attrs, disp, options, &h)) < 0) {
                nt_name_free(&nm);
                return err;
            }
            CloseHandle(h);
            disp = FILE_OPEN;
            err = -EEXIST;
        }
    }
    if (err == -EEXIST)
        err = nt_open(&nm, access, attrs, disp, options, &h);
    nt_name_free(&nm);
    if (err < 0)
        return err;
    DWORD a = 0;
    if ((afs_flags & AFS_NOFOLLOW) && is_link(h, &a))
        err = -ELOOP; /* a symbolic link or junction, opened as itself */
    else if ((afs_flags & AFS_DIRECTORY) && acc != AFS_RDONLY)
        err = -EISDIR;
    if (err < 0) {
        CloseHandle(h);
        return err;
    }
    return handle_fd(h);
}

/* 100 ns intervals since 1601 -> seconds and nanoseconds since 1970. */
static struct afs_timespec unix_time(LARGE_INTEGER t)
{
    int64_t v = t.QuadPart - 116444736000000000LL;
    int64_t sec = v / 10000000, rem = v % 10000000;
    if (rem < 0) {
        rem += 10000000;
        sec--;
    }
    return (struct afs_timespec){sec, rem * 100};
}

/* st from an open handle: BY_HANDLE_FILE_INFORMATION (volume serial as dev, file index as
 * ino, links), FILE_BASIC_INFO (the four times), FILE_STANDARD_INFO (allocation). The mode
 * is what the C runtime's stat() makes of the attributes: rw for everyone, r-x... without
 * write when read-only; symbolic links and junctions opened as themselves are S_IFLNK. */
static int fill_stat(HANDLE h, bool link_itself, struct afs_stat *st)
{
    BY_HANDLE_FILE_INFORMATION bh;
    FILE_BASIC_INFO bi;
    FILE_STANDARD_INFO si;
    if (!GetFileInformationByHandle(h, &bh) ||
        !GetFileInformationByHandleEx(h, FileBasicInfo, &bi, sizeof bi))
        return afs__win_errno(GetLastError());
    if (!GetFileInformationByHandleEx(h, FileStandardInfo, &si, sizeof si))
        si.AllocationSize.QuadPart = (((int64_t)bh.nFileSizeHigh << 32 | bh.nFileSizeLow) +
                                      4095) & ~(int64_t)4095; /* a guess: no such class here */
    memset(st, 0, sizeof *st);
    DWORD attrs = bh.dwFileAttributes;
    bool ro = attrs & FILE_ATTRIBUTE_READONLY;
    if (link_itself && (attrs & FILE_ATTRIBUTE_REPARSE_POINT) && is_link(h, NULL))
        st->mode = MODE_LNK | 0777;
    else if (attrs & FILE_ATTRIBUTE_DIRECTORY)
        st->mode = MODE_DIR | (ro ? 0555 : 0777);
    else
        st->mode = MODE_REG | (ro ? 0444 : 0666);
    st->dev = bh.dwVolumeSerialNumber;
    st->ino = (uint64_t)bh.nFileIndexHigh << 32 | bh.nFileIndexLow;
    st->size = (int64_t)((uint64_t)bh.nFileSizeHigh << 32 | bh.nFileSizeLow);
    st->blocks = (uint64_t)si.AllocationSize.QuadPart / 512;
    st->nlink = bh.nNumberOfLinks;
    st->blksize = 4096;
    st->atime = unix_time(bi.LastAccessTime);
    st->mtime = unix_time(bi.LastWriteTime);
    st->ctime = unix_time(bi.ChangeTime);
    return 0;
}

int afs__sys_statx(int dirfd, const char *path, int afs_at_flags, struct afs_stat *st)
{
    bool nofollow = afs_at_flags & AFS_AT_SYMLINK_NOFOLLOW;
    if (!path[0] && (afs_at_flags & AFS_AT_EMPTY_PATH) && dirfd != AFS_AT_FDCWD)
        return fill_stat(fd_handle(dirfd), false, st); /* fstat of dirfd */
    struct nt_name nm;
    int err = nt_name(dirfd, path[0] || !(afs_at_flags & AFS_AT_EMPTY_PATH) ? path : ".", &nm);
    HANDLE h;
    if (err == 0)
        err = nt_open(&nm, 0, 0, FILE_OPEN, nofollow ? FILE_OPEN_REPARSE_POINT : 0, &h);
    nt_name_free(&nm);
    if (err < 0)
        return err;
    err = fill_stat(h, nofollow, st);
    CloseHandle(h);
    return err;
}

/* perm is not kept: Windows has no permission bits (a read-only directory attribute means
 * something else to the shell). */
int afs__sys_mkdirat(int dirfd, const char *path, unsigned perm)
{
    (void)perm;
    struct nt_name nm;
    int err = nt_name(dirfd, path, &nm);
    HANDLE h;
    if (err == 0)
        err = nt_open(&nm, FILE_LIST_DIRECTORY, FILE_ATTRIBUTE_NORMAL, FILE_CREATE,
                      FILE_DIRECTORY_FILE | FILE_OPEN_REPARSE_POINT, &h);
    nt_name_free(&nm);
    if (err < 0)
        return err;
    CloseHandle(h);
    return 0;
}

/* path2 relative to dirfd2 as FILE_RENAME_INFORMATION/FILE_LINK_INFORMATION (malloc'd). */
static int name_info(int dirfd2, const char *path2, ULONG flags, struct nt_name_info **out,
                     ULONG *size)
{
    struct nt_name nm;
    int err = nt_name(dirfd2, path2, &nm);
    if (err < 0) {
        nt_name_free(&nm);
        return err;
    }
    size_t bytes = nm.len * sizeof(wchar_t);
    struct nt_name_info *ni = calloc(1, sizeof *ni + bytes + sizeof(wchar_t));
    if (!ni) {
        nt_name_free(&nm);
        return -ENOMEM;
    }
    ni->flags = flags;
    ni->root = nm.root;
    ni->len = (ULONG)bytes;
    memcpy(ni->name, nm.buf, bytes);
    nt_name_free(&nm);
    *out = ni;
    *size = (ULONG)(sizeof *ni + bytes + sizeof(wchar_t));
    return 0;
}

/* Opens path relative to dirfd for deletion or renaming, the name itself (a symbolic link is
 * not followed). */
static int open_for_delete(int dirfd, const char *path, ACCESS_MASK more, HANDLE *h)
{
    struct nt_name nm;
    int err = nt_name(dirfd, path, &nm);
    if (err == 0)
        err = nt_open(&nm, DELETE | more, 0, FILE_OPEN, FILE_OPEN_REPARSE_POINT, h);
    nt_name_free(&nm);
    return err;
}

static bool not_here(NTSTATUS s)
{
    return s == NT_STATUS_INVALID_PARAMETER || s == NT_STATUS_INVALID_INFO_CLASS ||
           s == NT_STATUS_NOT_IMPLEMENTED || s == NT_STATUS_NOT_SUPPORTED;
}

/* Delete-on-close set on an open handle: with POSIX semantics (the name goes at once, even
 * while others have the file open) and past the read-only attribute where the system has
 * FileDispositionInfoEx; otherwise the plain disposition, after clearing the read-only
 * attribute (restored if the delete fails). */
static int delete_handle(HANDLE h, DWORD attrs)
{
    IO_STATUS_BLOCK iosb;
    ULONG flags = NT_DISPOSITION_DELETE | NT_DISPOSITION_POSIX_SEMANTICS |
                  NT_DISPOSITION_IGNORE_READONLY;
    NTSTATUS s = nt.set_info(h, &iosb, &flags, sizeof flags, NT_FILE_DISPOSITION_INFORMATION_EX);
    if (!not_here(s))
        return afs__nt_errno(s);
    BOOLEAN del = TRUE;
    bool ro = attrs & FILE_ATTRIBUTE_READONLY;
    FILE_BASIC_INFO bi;
    if (ro) {
        memset(&bi, 0, sizeof bi);
        bi.FileAttributes = attrs & ~(DWORD)FILE_ATTRIBUTE_READONLY;
        if (!bi.FileAttributes)
            bi.FileAttributes = FILE_ATTRIBUTE_NORMAL;
        if (!SetFileInformationByHandle(h, FileBasicInfo, &bi, sizeof bi))
            return afs__win_errno(GetLastError());
    }
    s = nt.set_info(h, &iosb, &del, sizeof del, NT_FILE_DISPOSITION_INFORMATION);
    if (s < 0 && ro) {
        bi.FileAttributes = attrs;
        (void)SetFileInformationByHandle(h, FileBasicInfo, &bi, sizeof bi);
    }
    return afs__nt_errno(s);
}

/* 1 when path's last component is ".", 2 for "..", else 0 ("a/./" too). Windows resolves
 * them as text, so "dir/." would name dir itself: POSIX refuses to remove or rename such a
 * name, and so does the library. */
static int dot_name(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && (path[n - 1] == '/' || path[n - 1] == '\\'))
        n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/' && path[b - 1] != '\\')
        b--;
    if (n - b == 1 && path[b] == '.')
        return 1;
    if (n - b == 2 && path[b] == '.' && path[b + 1] == '.')
        return 2;
    return 0;
}

/* Whether an open name (as itself: a link is no directory) is a directory. */
static bool is_dir_itself(HANDLE h)
{
    DWORD attrs = 0;
    if (is_link(h, &attrs))
        return false;
    FILE_BASIC_INFO bi; /* where FileAttributeTagInfo is not answered */
    if (!attrs && GetFileInformationByHandleEx(h, FileBasicInfo, &bi, sizeof bi))
        attrs = bi.FileAttributes;
    return attrs & FILE_ATTRIBUTE_DIRECTORY;
}

/* Before a rename that may replace dirfd2/path2, what rename(2) checks and Windows does not
 * (FileRenameInformation replaces a file with a directory): a directory replaces only a
 * directory (-ENOTDIR), a file only a file (-EISDIR; Windows would say -EACCES). Nothing is
 * changed before. A target that cannot be opened is left to the rename, but for -ENOTDIR
 * (a path through a file). *dirs: the target exists and both are directories. */
static int replace_check(HANDLE src, int dirfd2, const char *path2, bool *dirs)
{
    struct nt_name nm;
    HANDLE t;
    *dirs = false;
    int err = nt_name(dirfd2, path2, &nm);
    if (err == 0)
        err = nt_open(&nm, 0, 0, FILE_OPEN, FILE_OPEN_REPARSE_POINT, &t);
    nt_name_free(&nm);
    if (err < 0)
        return err == -ENOTDIR ? err : 0;
    bool dir = is_dir_itself(src), target_dir = is_dir_itself(t);
    CloseHandle(t);
    if (dir && !target_dir)
        return -ENOTDIR;
    if (!dir && target_dir)
        return -EISDIR;
    *dirs = dir;
    return 0;
}

/* The final path of h (malloc'd, "\Device\...\dir"), or NULL. */
static wchar_t *final_path(HANDLE h)
{
    DWORD n = GetFinalPathNameByHandleW(h, NULL, 0, VOLUME_NAME_NT);
    wchar_t *p = n ? malloc(((size_t)n + 1) * sizeof *p) : NULL;
    if (!p)
        return NULL;
    DWORD m = GetFinalPathNameByHandleW(h, p, n + 1, VOLUME_NAME_NT);
    if (m == 0 || m > n) {
        free(p);
        return NULL;
    }
    return p;
}

/* 1 when t is dir or lies below it, 0 when not, -1 when that cannot be told (wine gives no
 * final path over MAX_PATH). */
static int lies_below(HANDLE dir, HANDLE t)
{
    wchar_t *d = final_path(dir), *p = final_path(t);
    int r = -1;
    if (d && p) {
        size_t n = wcslen(d);
        r = !_wcsnicmp(d, p, n) && (p[n] == L'\\' || p[n] == 0);
    }
    free(d);
    free(p);
    return r;
}

/* An empty directory under path's name again, with the attributes `attrs` it had. */
static void remake_dir(int dirfd, const char *path, DWORD attrs)
{
    struct nt_name nm;
    HANDLE h;
    attrs &= FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM |
             FILE_ATTRIBUTE_ARCHIVE | FILE_ATTRIBUTE_NOT_CONTENT_INDEXED;
    if (nt_name(dirfd, path, &nm) == 0 &&
        nt_open(&nm, FILE_LIST_DIRECTORY, attrs ? attrs : FILE_ATTRIBUTE_NORMAL, FILE_CREATE,
                FILE_DIRECTORY_FILE | FILE_OPEN_REPARSE_POINT, &h) == 0)
        CloseHandle(h);
    nt_name_free(&nm);
}

/* The directory src renamed over the directory dirfd2/path2, where the system refused
 * (`denied`: FileRenameInformation never replaces a directory, nor does
 * FileRenameInformationEx without POSIX semantics). rename(2) replaces an empty one: it is
 * removed first, with the delete disposition, which the system refuses for a full directory
 * (-ENOTEMPTY, nothing changed); then src takes its name in one rename that replaces
 * nothing. src is under one of its two names all along: a failure leaves it where it was, and
 * an empty directory with the target's attributes is made again under the target's name
 * (unless another took it meanwhile). As rename(2): the same directory is left as it is (0),
 * one below src is -EINVAL; where that cannot be told, the first refusal stands. */
static int replace_dir(HANDLE src, int dirfd2, const char *path2, struct nt_name_info *ni,
                       ULONG size, NTSTATUS denied)
{
    /* Not shared: a removed name stays until its last handle closes (no POSIX semantics
     * here), so a directory open elsewhere would go later, after a refused rename. It is
     * -EBUSY instead, rename(2)'s answer for a directory in use, and nothing changes. */
    struct nt_name nm;
    HANDLE t;
    int err = nt_name(dirfd2, path2, &nm);
    if (err == 0) {
        err = nt_open_shared(&nm, DELETE | FILE_WRITE_ATTRIBUTES, 0, FILE_OPEN,
                             FILE_OPEN_REPARSE_POINT, 0, &t);
        if (err == -EACCES) /* read-only attribute left as it is */
            err = nt_open_shared(&nm, DELETE, 0, FILE_OPEN, FILE_OPEN_REPARSE_POINT, 0, &t);
    }
    nt_name_free(&nm);
    if (err < 0)
        return err == -EBUSY ? err : afs__nt_errno(denied);
    DWORD attrs = 0;
    FILE_BASIC_INFO bi;
    if (!is_link(t, &attrs) && !attrs &&
        GetFileInformationByHandleEx(t, FileBasicInfo, &bi, sizeof bi))
        attrs = bi.FileAttributes;
    bool same = false;
    if (!is_dir_itself(t)) {
        err = afs__nt_errno(denied); /* replaced by a file or a link meanwhile */
    } else if (!(same = afs__sys_same_file(src, t))) {
        int below = lies_below(src, t);
        err = below > 0 ? -EINVAL : below < 0 ? afs__nt_errno(denied) : delete_handle(t, attrs);
    }
    CloseHandle(t); /* the name goes here, unless the system removed it at once */
    if (err < 0 || same)
        return err;
    IO_STATUS_BLOCK iosb;
    ni->flags = 0; /* replace nothing: a name made meanwhile stays */
    NTSTATUS s = nt.set_info(src, &iosb, ni, size, NT_FILE_RENAME_INFORMATION);
    if (s < 0 && s != NT_STATUS_OBJECT_NAME_COLLISION)
        remake_dir(dirfd2, path2, attrs);
    return afs__nt_errno(s);
}

/* FileRenameInformationEx with POSIX semantics (Windows 10 1709 on NTFS: the name is
 * replaced even while the old file is open, read-only or not); where the system or the
 * file system lacks it, FileRenameInformation with ReplaceIfExists, what MoveFileExW with
 * MOVEFILE_REPLACE_EXISTING does. A directory over a directory that the system refuses to
 * replace goes on in replace_dir. AFS_RENAME_NOREPLACE is the absence of either flag: the
 * system checks and renames in one step, -EEXIST. */
int afs__sys_renameat(int dirfd, const char *path, int dirfd2, const char *path2, int afs_flags)
{
    if (dot_name(path) || dot_name(path2)) {
        /* As Linux: what leads to the name must be a directory first, then -EBUSY. */
        int err = dot_name(path) ? dots_check(dirfd, path) : 0;
        if (err == 0 && dot_name(path2))
            err = dots_check(dirfd2, path2);
        return err < 0 ? err : -EBUSY;
    }
    bool replace = !(afs_flags & AFS_RENAME_NOREPLACE), dirs = false;
    HANDLE h;
    int err = open_for_delete(dirfd, path, 0, &h);
    if (err < 0)
        return err;
    size_t l2 = strlen(path2);
    if (l2 && (path2[l2 - 1] == '/' || path2[l2 - 1] == '\\') && !is_dir_itself(h)) {
        CloseHandle(h); /* a new name "x/" names a directory: not for a file, as on POSIX */
        return -ENOTDIR;
    }
    if (replace && (err = replace_check(h, dirfd2, path2, &dirs)) < 0) {
        CloseHandle(h);
        return err;
    }
    struct nt_name_info *ni;
    ULONG size;
    if ((err = name_info(dirfd2, path2,
                         replace ? NT_RENAME_REPLACE_IF_EXISTS | NT_RENAME_POSIX_SEMANTICS |
                                       NT_RENAME_IGNORE_READONLY
                                 : 0,
                         &ni, &size)) < 0) {
        CloseHandle(h);
        return err;
    }
    IO_STATUS_BLOCK iosb;
    NTSTATUS s = nt.set_info(h, &iosb, ni, size, NT_FILE_RENAME_INFORMATION_EX);
    if (not_here(s)) {
        ni->flags = 0;
        ni->replace = replace;
        s = nt.set_info(h, &iosb, ni, size, NT_FILE_RENAME_INFORMATION);
    }
    err = s == NT_STATUS_ACCESS_DENIED && dirs ? replace_dir(h, dirfd2, path2, ni, size, s)
                                               : afs__nt_errno(s);
    free(ni);
    CloseHandle(h);
    return err;
}

/* A second name in the same directory for the file at dfd/from (a hard link, NTFS). */
int afs__sys_crash_link(int dfd, const char *from, const char *to)
{
    HANDLE h;
    struct nt_name nm;
    int err = nt_name(dfd, from, &nm);
    if (err == 0)
        err = nt_open(&nm, 0, 0, FILE_OPEN, FILE_OPEN_REPARSE_POINT, &h);
    nt_name_free(&nm);
    if (err < 0)
        return err;
    struct nt_name_info *ni;
    ULONG size;
    if ((err = name_info(dfd, to, 0, &ni, &size)) == 0) {
        IO_STATUS_BLOCK iosb;
        err = afs__nt_errno(nt.set_info(h, &iosb, ni, size, NT_FILE_LINK_INFORMATION));
        free(ni);
    }
    CloseHandle(h);
    return err;
}

int afs__sys_rmtree_at(int dirfd, const char *path)
{
    (void)dirfd, (void)path;
    return -ENOTSUP; /* never asked: AFS_CRASH_STRICT_DIRS is for POSIX systems only */
}

int afs__sys_unlinkat(int dirfd, const char *path, int afs_at_flags)
{
    int dot = dot_name(path);
    if (dot && nt_ready()) {
        /* As Linux: what leads to the name must be a directory (dots_check); then rmdir "."
         * is -EINVAL, ".." -ENOTEMPTY, unlink of either -EISDIR. */
        int err = dots_check(dirfd, path);
        if (err < 0)
            return err;
        return !(afs_at_flags & AFS_AT_REMOVEDIR) ? -EISDIR : dot == 1 ? -EINVAL : -ENOTEMPTY;
    }
    HANDLE h;
    int err = open_for_delete(dirfd, path, FILE_WRITE_ATTRIBUTES, &h);
    if (err == -EACCES)
        err = open_for_delete(dirfd, path, 0, &h); /* read-only attribute left as it is */
    if (err < 0)
        return err;
    DWORD attrs = 0;
    bool link = is_link(h, &attrs), dir = (attrs & FILE_ATTRIBUTE_DIRECTORY) && !link;
    if (afs_at_flags & AFS_AT_REMOVEDIR)
        err = dir ? 0 : -ENOTDIR;
    else
        err = dir ? -EISDIR : 0;
    if (err == 0)
        err = delete_handle(h, attrs);
    CloseHandle(h);
    return err;
}

/* The volume that holds fd, flushed: FlushFileBuffers on the volume's handle writes every
 * file's cached data and metadata there. -ENOTSUP where that cannot be done: opening a
 * volume for writing needs administrator rights, and some systems (wine) have no volume
 * flush; the caller flushes its files one by one then. */
int afs__sys_syncfs(int fd)
{
    HANDLE h = fd_handle(fd);
    if (GetFileType(h) == FILE_TYPE_UNKNOWN && GetLastError() != NO_ERROR)
        return -EBADF;
    wchar_t stackbuf[MAX_PATH + 1], *path = stackbuf, root[MAX_PATH + 1];
    DWORD n = GetFinalPathNameByHandleW(h, path, MAX_PATH + 1, VOLUME_NAME_DOS);
    if (n > MAX_PATH) {
        if (!(path = malloc(((size_t)n + 1) * sizeof *path)))
            return -ENOMEM;
        n = GetFinalPathNameByHandleW(h, path, n + 1, VOLUME_NAME_DOS);
    }
    int err = 0;
    if (n == 0 || !GetVolumePathNameW(path, root, MAX_PATH + 1))
        err = afs__win_errno(GetLastError());
    if (path != stackbuf)
        free(path);
    if (err < 0)
        return err;
    /* "\\?\C:\" -> "\\.\C:" (the volume, not its root directory). */
    size_t r = wcslen(root);
    if (r > 0 && root[r - 1] == L'\\')
        root[--r] = 0;
    if (!wcsncmp(root, L"\\\\?\\", 4))
        root[2] = L'.';
    HANDLE v = CreateFileW(root, GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                           NULL, OPEN_EXISTING, 0, NULL);
    if (v == INVALID_HANDLE_VALUE) {
        DWORD e = GetLastError();
        return e == ERROR_ACCESS_DENIED || e == ERROR_PRIVILEGE_NOT_HELD ? -ENOTSUP
                                                                         : afs__win_errno(e);
    }
    DWORD e = FlushFileBuffers(v) ? 0 : GetLastError();
    CloseHandle(v);
    if (e == ERROR_INVALID_FUNCTION || e == ERROR_NOT_SUPPORTED || e == ERROR_ACCESS_DENIED)
        return -ENOTSUP;
    return afs__win_errno(e);
}

/* FlushFileBuffers wants write access, which a directory handle from afs_openat() has not
 * (sys_fsync on access denied): a second handle of the same directory, with it, is flushed
 * instead. */
static int flush_reopened(HANDLE h)
{
    if (!nt_ready())
        return -EACCES;
    wchar_t none[1] = {0};
    struct nt_name nm = {.buf = none, .len = 0, .root = h};
    HANDLE w;
    int err = nt_open(&nm, FILE_WRITE_DATA, 0, FILE_OPEN, 0, &w);
    if (err < 0)
        return err;
    err = FlushFileBuffers(w) ? 0 : afs__win_errno(GetLastError());
    CloseHandle(w);
    return err;
}

int afs__sys_fsync_fd(int fd, bool datasync)
{
    return afs__sys.fsync(fd_handle(fd), datasync);
}

/* afs_fsync_dir()'s open, flush and close without the core (which makes them itself where
 * the system has the metadata calls, as Windows does): the same calls, so the same errors,
 * -ENOTDIR for a path through a file (nt_open) as for one that names a file. */
int afs__sys_fsync_dir(const char *path)
{
    int fd = afs__sys_openat(AFS_AT_FDCWD, path, AFS_RDONLY | AFS_DIRECTORY, 0);
    if (fd < 0)
        return fd;
    int err = afs__sys_fsync_fd(fd, false);
    CloseHandle(fd_handle(fd));
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
    return CloseHandle(fd_handle(fd)) ? 0 : afs__win_errno(GetLastError());
}

/* Any open handle is accepted. One opened without FILE_FLAG_OVERLAPPED works too, but each
 * transfer then blocks the thread that makes it: the iocp backend cannot put it on its port
 * and leaves its transfers to the pool (iocp.c, iocp_open). */
int afs__sys_opened_blocking(afs__fd_t fd, int afs_flags)
{
    (void)fd, (void)afs_flags;
    return 0; /* no open waits for another end, and nothing to clear */
}

int afs__sys_fd_adopt(int fd)
{
    DWORD type = GetFileType(fd_handle(fd));
    if (type == FILE_TYPE_UNKNOWN && GetLastError() != NO_ERROR)
        return -EBADF;
    /* A Winsock SOCKET (a pipe to GetFileType) is not adopted: docs/SOCKETS.md. */
    int so_type;
    int len = sizeof so_type;
    if (type == FILE_TYPE_PIPE &&
        getsockopt((SOCKET)(uintptr_t)fd_handle(fd), SOL_SOCKET, SO_TYPE, (char *)&so_type,
                   &len) == 0)
        return -ENOTSUP;
    return 0;
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
