/* The one internal header that knows about operating systems. The core and corio call the
 * functions declared here; src/unix/ (Linux and BSD), src/linux/, src/bsd/ and src/windows/
 * implement them. */
#ifndef AFS_PLATFORM_H
#define AFS_PLATFORM_H

#include "asyncfs.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
typedef HANDLE             afs__fd_t;
typedef SRWLOCK            afs__mutex;
#define AFS__MUTEX_INITIALIZER SRWLOCK_INIT
typedef CONDITION_VARIABLE afs__cond;
typedef HANDLE             afs__thread;
#define AFS__FD_NONE INVALID_HANDLE_VALUE
#else
#include <pthread.h>
typedef int             afs__fd_t;
typedef pthread_mutex_t afs__mutex;
#define AFS__MUTEX_INITIALIZER PTHREAD_MUTEX_INITIALIZER
typedef pthread_cond_t  afs__cond;
typedef pthread_t       afs__thread;
#define AFS__FD_NONE (-1)
#endif

/* Threads. Failures of these are bugs or exhaustion and abort, as in libuv. */
void afs__mutex_init(afs__mutex *m);
void afs__mutex_destroy(afs__mutex *m);
void afs__mutex_lock(afs__mutex *m);
void afs__mutex_unlock(afs__mutex *m);
void afs__cond_init(afs__cond *c);
void afs__cond_destroy(afs__cond *c);
void afs__cond_signal(afs__cond *c);
void afs__cond_broadcast(afs__cond *c);
void afs__cond_wait(afs__cond *c, afs__mutex *m);
/* Waits at most ns nanoseconds (rounded up to what the system offers); false on timeout. */
bool afs__cond_timedwait(afs__cond *c, afs__mutex *m, int64_t ns);
int  afs__thread_start(afs__thread *t, void (*fn)(void *), void *arg); /* 0 or -errno */
void afs__thread_join(afs__thread t);
unsigned afs__cpu_count(void);
/* The CPUs this process may run on (sched_getaffinity), at least 1. */
unsigned afs__cpu_usable(void);
/* Pins the calling thread to the nth CPU the process may run on (modulo their number).
 * 0, or -errno (-ENOTSUP where the OS has no such call). */
int      afs__thread_pin(unsigned nth);

/* Monotonic clock, nanoseconds. */
int64_t afs__now_ns(void);
/* Whether afs__now_ns() has reached t. A t far off is told by a cheaper coarse clock where
 * there is one (Linux: CLOCK_MONOTONIC_COARSE, which trails the monotonic clock by about a
 * tick at most, a few ms, and does not lead it by more than an adjustment's few ns); a t
 * within AFS__COARSE_MARGIN_NS of it by the precise clock. */
bool afs__now_reached(int64_t t);
#define AFS__COARSE_MARGIN_NS 50000000
#ifndef _WIN32
int64_t afs__thread_cpu_ns(void); /* CLOCK_THREAD_CPUTIME_ID */
int64_t afs__proc_cpu_ns(void);   /* CLOCK_PROCESS_CPUTIME_ID: every thread of the process */
/* Blocks SIGPIPE on the calling thread for good: for the library's own threads, whose pipe
 * writes then need no signal-mask calls (src/unix/sys.c). */
void afs__sys_block_sigpipe(void);
/* Linux: sendfile(2) of len bytes of in_fd from off to out_fd (one call, EINTR not retried);
 * a SIGPIPE it raises is taken back as for a pipe's write. Bytes or -errno. */
ssize_t afs__sys_sendfile(int out_fd, int in_fd, uint64_t off, size_t len);
/* Linux: splice(2) of up to len bytes from the pipe rfd to the socket sock without waiting
 * for room (the socket non-blocking for that call; SPLICE_F_MORE when `more`); a SIGPIPE it
 * raises is taken back. Bytes, -EAGAIN when the socket has no room, or -errno. */
ssize_t afs__sys_splice_to_sock(int rfd, int sock, size_t len, bool more);
#endif

/* A hint inside a spin-wait loop (PAUSE / YIELD). */
static inline void afs__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A waker lets other threads interrupt the owner's wait. On Linux it is an eventfd that the
 * backends can hand to the kernel (io_uring read, libaio io_set_eventfd). */
typedef struct afs__waker {
    intptr_t   fd;       /* eventfd / read end of a pipe / event handle */
    intptr_t   wfd;      /* write end (pipe) or same as fd */
    volatile int armed;  /* 1 while a signal is pending, to skip redundant writes */
} afs__waker;
int  afs__waker_open(afs__waker *w);
void afs__waker_close(afs__waker *w);
void afs__waker_signal(afs__waker *w);            /* any thread */
void afs__waker_drain(afs__waker *w);             /* owner: consume pending signals */
/* Owner: wait until signalled or the timeout (ns, < 0 = none). Returns 1 signalled, 0 not. */
int  afs__waker_wait(afs__waker *w, int64_t timeout_ns);

/* What fstat tells about an open file: whether it has offsets at all, and its size. */
struct afs__fd_info {
    bool    seq;  /* no offsets: a pipe, FIFO, socket or character device (tty...) */
    bool    sock; /* a socket */
    bool    dgram; /* a socket whose messages keep their bounds (not SOCK_STREAM) */
    bool    fifo; /* a pipe or FIFO */
    bool    own;  /* the library opened this description (afs_open), or the caller asked
                     (afs_file_from_fd with AFS_NONBLOCK): a pipe or FIFO may be made
                     non-blocking, which others sharing the description would see */
    bool    made; /* a socket the library just made for this context (afs_socket, afs_accept):
                     already as the context wants it */
    int64_t size; /* bytes of a regular file; -1 for anything else */
    bool    dir;  /* a directory */
};

/* The offset of a transfer on a file without offsets (afs__fd_info.seq): the table's pread
 * and pwrite calls below then read() and write() at the descriptor's own position. */
#define AFS__OFF_SEQ UINT64_MAX

/* Files and system calls, each returning >= 0 or -errno; open and close retry EINTR.
 * afs__sys_open also fills *info (when not NULL) from the fstat it makes anyway. */
int     afs__sys_open(const char *path, int afs_flags, unsigned perm, afs__fd_t *out,
                      struct afs__fd_info *info);
int     afs__sys_fd_info(afs__fd_t fd, struct afs__fd_info *info);
/* afs__sys_fd_info, and *st (when not NULL) from the same look where one gives both (POSIX:
 * one fstat; Windows: a second query). */
int     afs__sys_fd_info_st(afs__fd_t fd, struct afs__fd_info *info, struct afs_stat *st);
int     afs__sys_close(afs__fd_t fd);
int64_t afs__sys_size(afs__fd_t fd);
/* The alignment AFS_DIRECT I/O needs on this file (buffer, length, offset), 0 for none. */
unsigned afs__sys_dio_align(afs__fd_t fd);

/* Storage hints, each once (the caller retries EINTR): posix_fadvise with an AFS_FADV_*
 * advice, and sync_file_range with AFS_SYNC_RANGE_* flags (a data sync of the whole file
 * where the system has no such call). len 0: to the end of the file. 0 or -errno. */
int  afs__sys_fadvise(afs__fd_t fd, uint64_t off, uint64_t len, int advice);
int  afs__sys_sync_range(afs__fd_t fd, uint64_t off, uint64_t len, unsigned flags);

/* The page-cache probe of streams: how many bytes of [off, off + len) of fd are in the page
 * cache (*cached) and whether any of them is dirty or under writeback (*dirty). 0, or
 * -ENOTSUP where the kernel cannot tell (cachestat: Linux 6.5; every other system). */
int  afs__sys_cache_state(afs__fd_t fd, int64_t off, int64_t len, uint64_t *cached,
                          bool *dirty);
/* Whether a and b are open on the same file (device and file number). */
bool afs__sys_same_file(afs__fd_t a, afs__fd_t b);

/* The crash simulator's own read-write descriptor of the open file fd, on a new open of it
 * (by path when given; else /proc/self/fd on Linux, ReOpenFile on Windows) so that it has
 * neither O_APPEND nor O_DIRECT; where neither works, a dup of fd (*dup set). 0 or -errno. */
int  afs__sys_crash_reopen(afs__fd_t fd, const char *path, afs__fd_t *out, bool *dup);
/* Clears O_APPEND and O_DIRECT from a dup made above (the user's descriptors are closed). */
void afs__sys_crash_plain(afs__fd_t fd);
/* A hard link: name `to` for the file `from`, both in directory dfd (linkat). 0 or -errno;
 * -ENOTSUP on Windows. */
int  afs__sys_crash_link(int dfd, const char *from, const char *to);

/* Aligned memory for the built-in allocator. */
void *afs__aligned_alloc(size_t size, size_t align);
void  afs__aligned_free(void *p, size_t size);

#ifdef __linux__
struct io_uring;
struct io_uring_params;
struct __kernel_timespec;
struct io_context; /* libaio's io_context_t points to one */
struct iocb;
#endif
#ifndef _WIN32
struct aiocb;
struct sigevent;
#endif
struct addrinfo;

/* The transfers, through a table that tests can change to inject faults (SQLite's aSyscall
 * idea). One call each: the caller (afs__op_run_sync) retries EINTR, EAGAIN and short
 * transfers. Offset AFS__OFF_SEQ: at the descriptor's position (read, write, readv, writev). */
struct kevent;
struct timespec;
struct afs__syscalls {
    ssize_t (*pread)(afs__fd_t fd, void *buf, size_t len, uint64_t off);
    /* A read that never waits for the device (Linux: preadv2 with RWF_NOWAIT): -EAGAIN when
     * the data is not in the page cache (the kernel may have started to read it), or
     * -EOPNOTSUPP where the file or the kernel cannot tell. NULL where the system has none. */
    ssize_t (*pread_nowait)(afs__fd_t fd, void *buf, size_t len, uint64_t off);
    ssize_t (*pwrite)(afs__fd_t fd, const void *buf, size_t len, uint64_t off);
    /* A write at the descriptor's position (off AFS__OFF_SEQ only: a pipe or FIFO) that never
     * waits for the reader (Linux: pwritev2 with RWF_NOWAIT): -EAGAIN when the pipe cannot
     * take it now (a write of at most PIPE_BUF bytes moves whole or not at all), -EOPNOTSUPP
     * where the file or the kernel cannot tell, -EPIPE (no SIGPIPE, as for pwrite). NULL
     * where the system has none. */
    ssize_t (*pwrite_nowait)(afs__fd_t fd, const void *buf, size_t len, uint64_t off);
    ssize_t (*preadv)(afs__fd_t fd, const struct iovec *iov, int iovcnt, uint64_t off);
    ssize_t (*pwritev)(afs__fd_t fd, const struct iovec *iov, int iovcnt, uint64_t off);
    int     (*fsync)(afs__fd_t fd, bool datasync);
    /* The storage ops: mode is AFS_FALLOC_*, lengths and sizes at most INT64_MAX. */
    int     (*fallocate)(afs__fd_t fd, int afs_mode, uint64_t off, uint64_t len);
    int     (*ftruncate)(afs__fd_t fd, uint64_t size);
    /* Every close of a file's descriptor or handle (afs__sys_close); after it the descriptor
     * is gone whatever the result. */
    int     (*close)(afs__fd_t fd);
    /* The library's heap allocations (contexts, files, streams, tasks...), so tests can make
     * one fail; free() is not in the table. */
    void   *(*malloc)(size_t size);
    void   *(*calloc)(size_t n, size_t size);
    void   *(*realloc)(void *p, size_t size);
    /* The monotonic clock (afs__now_ns) where the library measures time to decide something
     * (a stream's share of time spent waiting for chunks), so tests can drive it. */
    int64_t (*now)(void);
    /* The calling thread's CPU time in ns (afs__thread_cpu_ns), with `now` where the library
     * asks whether its thread had a CPU to itself; NULL where the system cannot tell. */
    int64_t (*cpu_now)(void);
    /* The process's CPU time in ns, all its threads (afs__proc_cpu_ns): the io_uring
     * backend's offload rule, which counts the kernel's I/O workers too; NULL where the
     * system cannot tell. */
    int64_t (*proc_cpu_now)(void);
#ifdef __linux__
    /* The io_uring backend's kernel calls; NULL (the default) makes the real liburing call.
     * uring_setup is io_uring_queue_init_params(). uring_enter is every io_uring_enter that
     * submits or waits: wait_nr 0 is io_uring_submit(), else io_uring_submit_and_wait() when
     * ts is NULL, io_uring_submit_and_wait_timeout() when not. Both return >= 0 or -errno. */
    int     (*uring_setup)(unsigned entries, struct io_uring *ring, struct io_uring_params *p);
    int     (*uring_enter)(struct io_uring *ring, unsigned wait_nr, struct __kernel_timespec *ts);
    /* The libaio backend's io_submit(); NULL makes the real call. Returns what io_submit()
     * does: the iocbs taken, or -errno. */
    int     (*laio_submit)(struct io_context *aio, long nr, struct iocb **iocbs);
    /* The readiness engine's sendfile(2) (afs__sys_sendfile, below): bytes or -errno. */
    ssize_t (*sendfile)(int out_fd, int in_fd, uint64_t off, size_t len);
#endif
#ifndef _WIN32
    /* The posix-aio backend's lio_listio(LIO_NOWAIT, ...); NULL makes the real call. Returns
     * 0, or -1 with errno set, as lio_listio() does (the backend reads errno). */
    int     (*paio_listio)(int mode, struct aiocb *const list[], int n, struct sigevent *sev);
#endif
#ifndef _WIN32
    /* The readiness engine's kqueue flavour (src/unix/ready.c, src/unix/kq.h): kqueue() and
     * kevent(), both or neither, returning as those do (-1 with errno set). The system's calls
     * on FreeBSD and macOS; NULL elsewhere (no kqueue flavour), where tests may install a
     * stand-in. */
    int     (*kq_open)(void);
    int     (*kq_event)(int kq, const struct kevent *changes, int nchanges,
                        struct kevent *events, int nevents, const struct timespec *timeout);
#endif
    /* corio's name resolution (corio_dial, corio_listen), both or neither; NULL makes the
     * real getaddrinfo() / freeaddrinfo(). Tests give a name the addresses they need. */
    int     (*getaddrinfo)(const char *host, const char *port, const struct addrinfo *hints,
                           struct addrinfo **res);
    void    (*freeaddrinfo)(struct addrinfo *res);
};
extern struct afs__syscalls afs__sys;

#ifndef _WIN32
/* The table's own pread (afs__sys.pread until a test puts another in its place). Returns
 * the bytes read or -errno. */
ssize_t afs__sys_pread(int fd, void *buf, size_t len, uint64_t off);
#endif

/* A zeroed block from afs__sys.malloc, for what is made per open, accept or stream: glibc's
 * calloc (2.36) does not take from the thread's cache of freed blocks, malloc does, and at a
 * file's 616 bytes calloc cost some 230 instructions against 60 for this. */
static inline void *afs__zalloc(size_t size)
{
    void *p = afs__sys.malloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}
#ifdef __linux__
/* What the io_uring backend does when afs__sys.uring_enter is NULL (the real liburing call,
 * as described there); for hooks that count or alter enters and then pass them on. */
int afs__uring_enter_real(struct io_uring *ring, unsigned wait_nr, struct __kernel_timespec *ts);
#endif

#ifdef _WIN32
/* src/windows/error.c: the one translation of Windows error codes into -errno values. */
int afs__win_errno(DWORD err);
/* Whether a read that failed with err met an end of file: at or past the end, or a pipe
 * whose other end closed or ended the session (every byte written before was read), as
 * read(2) returns 0. */
static inline bool afs__win_read_eof(DWORD err)
{
    return err == ERROR_HANDLE_EOF || err == ERROR_BROKEN_PIPE || err == ERROR_PIPE_NOT_CONNECTED;
}
/* The same for an NTSTATUS from ntdll (the metadata ops of src/windows/sys.c): a few statuses
 * whose Windows error would lose the POSIX meaning, then afs__win_errno(). */
int afs__nt_errno(LONG status);
/* err (-errno, already translated) of a write or size change that would have made a file end
 * at `end` (off + len, or the new size). Past the largest file a Windows file system holds,
 * the answers that mean "too large" there become -EFBIG, as Linux says past the file
 * system's limit; any other err is returned as it is. */
int afs__win_size_errno(int err, uint64_t end);
/* Makes afs__waker_signal() also post a wake packet to this completion port (NULL: stop);
 * the iocp backend attaches its port so that one GetQueuedCompletionStatusEx waits for both
 * I/O and wakes. The port is kept in w->wfd. */
void afs__waker_set_port(afs__waker *w, HANDLE port);
#define AFS__WAKE_KEY ((ULONG_PTR)0x77616b65u) /* the completion key of wake packets */
/* src/windows/sock.c: the completion packets of socket ops carry AFS__SOCK_KEY. The iocp
 * backend hands those it dequeues to afs__win_sock_packet() (owner thread), and gives socket
 * ops its port (afs__iocp_port: NULL for a context of another backend). */
#define AFS__SOCK_KEY ((ULONG_PTR)0x736f636bu)
void   afs__win_sock_packet(struct afs_ctx *ctx, OVERLAPPED_ENTRY *e);
/* A wait of ms on the port, shortened while socket cancels are to be asked again. */
DWORD  afs__win_sock_wait_ms(struct afs_ctx *ctx, DWORD ms);
HANDLE afs__iocp_port(struct afs_ctx *ctx);
/* Starts Winsock once per process (every socket call of the library does): 0 or -errno. */
int    afs__win_sock_init(void);
#endif

#endif
