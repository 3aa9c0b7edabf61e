/* The one place where Windows error codes become the library's negative errno values
 * (libuv's uv_translate_sys_error, narrowed to what file and socket I/O meet). Every other
 * file in src/windows/ calls afs__win_errno(GetLastError()), afs__nt_errno(status) for an
 * NTSTATUS, or, for Winsock calls, afs__win_errno(WSAGetLastError()) (WSAE* codes are Windows
 * error codes too), and nothing else; a write or size change then passes the result through
 * afs__win_size_errno() with the end it asked for. */
#include "internal.h"

/* Newer than some SDKs (MinGW-w64's headers among them). */
#ifndef ERROR_OFFSET_ALIGNMENT_VIOLATION
#define ERROR_OFFSET_ALIGNMENT_VIOLATION 327L
#endif
#ifndef ERROR_DIRECTORY_NOT_SUPPORTED
#define ERROR_DIRECTORY_NOT_SUPPORTED 336L
#endif
#ifndef ERROR_STOPPED_ON_SYMLINK
#define ERROR_STOPPED_ON_SYMLINK 681L
#endif

int afs__win_errno(DWORD err)
{
    switch (err) {
    case ERROR_SUCCESS: return 0;

    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_DRIVE:
    case ERROR_BAD_NETPATH:
    case ERROR_BAD_NET_NAME:
    case ERROR_MOD_NOT_FOUND:
    case ERROR_BAD_PATHNAME: return -ENOENT;

    case ERROR_FILE_EXISTS:
    case ERROR_ALREADY_EXISTS: return -EEXIST;

    case ERROR_ACCESS_DENIED:
    case ERROR_CANNOT_MAKE:
    case ERROR_NETWORK_ACCESS_DENIED:
    case ERROR_PRIVILEGE_NOT_HELD: return -EACCES;

    case ERROR_SHARING_VIOLATION:
    case ERROR_LOCK_VIOLATION:
    case ERROR_BUSY:
    case ERROR_PIPE_BUSY:
    case ERROR_DRIVE_LOCKED: return -EBUSY;

    case ERROR_WRITE_PROTECT: return -EROFS;

    case ERROR_INVALID_HANDLE: return -EBADF;

    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
    case ERROR_COMMITMENT_LIMIT: return -ENOMEM;

    /* Too many asynchronous requests outstanding for the process's quota or non-paged
     * pool: transient, the core resubmits. */
    case ERROR_NOT_ENOUGH_QUOTA:
    case ERROR_INVALID_USER_BUFFER:
    case ERROR_NO_SYSTEM_RESOURCES:
    case ERROR_WORKING_SET_QUOTA:
    case ERROR_NONPAGED_SYSTEM_RESOURCES: return -EAGAIN;

    case ERROR_DISK_FULL:
    case ERROR_HANDLE_DISK_FULL: return -ENOSPC;

    case ERROR_FILE_TOO_LARGE: return -EFBIG;
    case ERROR_NEGATIVE_SEEK: return -EINVAL;

    case ERROR_TOO_MANY_OPEN_FILES: return -EMFILE;

    case ERROR_DIR_NOT_EMPTY: return -ENOTEMPTY;
    case ERROR_NOT_SAME_DEVICE: return -EXDEV;

    case ERROR_DIRECTORY:         /* a directory name was expected */
        return -ENOTDIR;
    case ERROR_DIRECTORY_NOT_SUPPORTED: return -EISDIR;

    case ERROR_CANT_RESOLVE_FILENAME:
    case ERROR_STOPPED_ON_SYMLINK: return -ELOOP;

    case ERROR_FILENAME_EXCED_RANGE:
    case ERROR_BUFFER_OVERFLOW: return -ENAMETOOLONG;

    case ERROR_INVALID_PARAMETER:
    case ERROR_INVALID_NAME:
    case ERROR_INVALID_FLAGS:
    case ERROR_INVALID_FUNCTION:
    case ERROR_INVALID_ADDRESS:
    case ERROR_NO_UNICODE_TRANSLATION:
    case ERROR_OFFSET_ALIGNMENT_VIOLATION: return -EINVAL;

    case ERROR_NOT_SUPPORTED:
    case ERROR_CALL_NOT_IMPLEMENTED: return -ENOTSUP;

    case ERROR_OPERATION_ABORTED: return -ECANCELED;

    case ERROR_BROKEN_PIPE:
    case ERROR_PIPE_NOT_CONNECTED: /* the server ended the session (DisconnectNamedPipe) */
    case ERROR_NO_DATA: return -EPIPE;

    case ERROR_SEM_TIMEOUT:
    case WAIT_TIMEOUT: return -ETIMEDOUT;

    /* Sockets: Winsock's own codes, and what GetOverlappedResult says for the same
     * conditions (the NTSTATUS of a socket op as a Windows error). */
    case WSAECONNREFUSED:
    case ERROR_CONNECTION_REFUSED: return -ECONNREFUSED;
    case WSAECONNRESET:
    case ERROR_NETNAME_DELETED: return -ECONNRESET;
    case WSAECONNABORTED:
    case ERROR_CONNECTION_ABORTED:
    case ERROR_REQUEST_ABORTED: return -ECONNABORTED;
    case WSAENETUNREACH:
    case ERROR_NETWORK_UNREACHABLE: return -ENETUNREACH;
    case WSAEHOSTUNREACH:
    case WSAEHOSTDOWN:
    case ERROR_HOST_UNREACHABLE: return -EHOSTUNREACH;
    case WSAETIMEDOUT: return -ETIMEDOUT;
    case WSAENOTCONN: return -ENOTCONN;
    case WSAEISCONN: return -EISCONN;
    case WSAESHUTDOWN:
    case WSAEDISCON: return -EPIPE; /* a send after SHUT_WR, as on POSIX */
    case WSAEAFNOSUPPORT:
    case WSAEPFNOSUPPORT: return -EAFNOSUPPORT;
    case WSAEPROTONOSUPPORT:
    case WSAESOCKTNOSUPPORT: return -EPROTONOSUPPORT;
    case WSAEPROTOTYPE: return -EPROTOTYPE;
    case WSAEOPNOTSUPP: return -EOPNOTSUPP;
    case WSAENOTSOCK: return -ENOTSOCK;
    case WSAEADDRINUSE: return -EADDRINUSE;
    case WSAEADDRNOTAVAIL: return -EADDRNOTAVAIL;
    case WSAEMFILE: return -EMFILE;
    case WSAENOBUFS: return -ENOBUFS;
    case WSAEMSGSIZE: return -EMSGSIZE;
    case WSAEINVAL: return -EINVAL;
    case WSAEFAULT: return -EFAULT;
    case WSAEALREADY: return -EALREADY;
    case WSAEINPROGRESS: return -EINPROGRESS;
    case WSAEWOULDBLOCK: return -EAGAIN;
    case WSAEINTR: return -EINTR;
    case WSAENETDOWN: return -ENETDOWN;
    case WSAENETRESET: return -ENETRESET;
    case WSAEACCES: return -EACCES;
    case WSAEDESTADDRREQ: return -EDESTADDRREQ;
    case WSAENOPROTOOPT: return -ENOPROTOOPT;
    case WSAEBADF: return -EBADF;

    case ERROR_CRC:
    case ERROR_SECTOR_NOT_FOUND:
    case ERROR_READ_FAULT:
    case ERROR_WRITE_FAULT:
    case ERROR_GEN_FAILURE:
    case ERROR_IO_DEVICE:
    case ERROR_DEVICE_NOT_CONNECTED:
    case ERROR_NOT_READY:
    default: return -EIO;
    }
}

/* NTSTATUS values (ntstatus.h clashes with winnt.h in some SDKs). */
#define NT_FILE_IS_A_DIRECTORY ((LONG)0xC00000BAL)
#define NT_DELETE_PENDING      ((LONG)0xC0000056L)
#define NT_CANNOT_DELETE       ((LONG)0xC0000121L)
#define NT_OBJECT_NAME_INVALID ((LONG)0xC0000033L)
#define NT_NAME_TOO_LONG       ((LONG)0xC0000106L)
#define NT_OBJECT_TYPE_MISMATCH ((LONG)0xC0000024L)
#define NT_SECTION_TOO_BIG     ((LONG)0xC0000040L)

typedef ULONG(NTAPI *status_to_dos_fn)(LONG status);
static status_to_dos_fn status_to_dos;
static INIT_ONCE        status_once = INIT_ONCE_STATIC_INIT;

static BOOL CALLBACK status_init(INIT_ONCE *once, void *param, void **ctx)
{
    (void)once, (void)param, (void)ctx;
    HMODULE nt = GetModuleHandleW(L"ntdll.dll");
    if (nt)
        status_to_dos = (status_to_dos_fn)(void (*)(void))GetProcAddress(nt, "RtlNtStatusToDosError");
    return TRUE;
}

int afs__nt_errno(LONG status)
{
    switch (status) {
    case 0: return 0;
    /* Windows says "access denied" for these; POSIX has its own words. */
    case NT_FILE_IS_A_DIRECTORY: return -EISDIR;
    case NT_DELETE_PENDING: return -ENOENT;  /* removed, waiting for its last handle */
    case NT_CANNOT_DELETE: return -EACCES;   /* read-only, or mapped */
    case NT_OBJECT_NAME_INVALID: return -EINVAL;
    case NT_NAME_TOO_LONG: return -ENAMETOOLONG;
    case NT_OBJECT_TYPE_MISMATCH: return -EBADF; /* a handle that is not a file's */
    /* Wine's answer when the host's file system refuses a size (its EFBIG) to a size change;
     * Windows gives it only for sections (mappings), which the library does not make. As a
     * Windows error it would be ERROR_NOT_ENOUGH_MEMORY. */
    case NT_SECTION_TOO_BIG: return -EFBIG;
    default: break;
    }
    InitOnceExecuteOnce(&status_once, status_init, NULL, NULL);
    return status_to_dos ? afs__win_errno(status_to_dos(status)) : -EIO;
}

/* No Windows file system holds a file of 2^60 bytes (1 EiB): NTFS takes up to 8 PiB, ReFS
 * 35 PB, exFAT has no sparse files and volumes of 128 PiB at most. */
#define WIN_FILE_MAX ((uint64_t)1 << 60)

/* Past it a write or size change fails for its size, whatever the system calls it: NTFS
 * says "invalid parameter" for a size above its limit (MS-FSCC FileEndOfFileInformation),
 * others "disk full"; wine passes on the host's EFBIG as "unsuccessful" (-EIO) for a write
 * and as STATUS_SECTION_TOO_BIG (ERROR_NOT_ENOUGH_MEMORY) for a size. Below it the library
 * cannot tell a size the file system refuses from a device error, and err stays. */
int afs__win_size_errno(int err, uint64_t end)
{
    if (end > WIN_FILE_MAX &&
        (err == -EIO || err == -EINVAL || err == -ENOSPC || err == -ENOMEM))
        return -EFBIG;
    return err;
}
