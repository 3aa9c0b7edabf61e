/* noring: runs a command where io_uring is blocked the way Docker's default seccomp profile
 * blocks it, so tests can check that asyncfs falls back (issue 3).
 *
 *     noring program [args...]
 *
 * Installs a seccomp-BPF filter that makes io_uring_setup, io_uring_enter and
 * io_uring_register fail with EPERM (every other system call is allowed), then execs the
 * program. The filter is inherited by every child, and cannot be removed. Raw seccomp through
 * prctl(), so no libseccomp is needed. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NORING_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NORING_ARCH AUDIT_ARCH_AARCH64
#else
#error "noring: add this architecture's AUDIT_ARCH_* value"
#endif

/* io_uring was added after the system call tables were unified: 425-427 on x86_64 and
 * aarch64 alike. Take the headers' values when they have them. */
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

#define DENY(nr)                                                                              \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1),                                          \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s program [args...]\n"
                        "runs program with io_uring blocked by seccomp (EPERM)\n", argv[0]);
        return 2;
    }
    struct sock_filter filter[] = {
        /* Another ABI (x32, 32-bit compat) numbers system calls differently: kill rather
         * than guess. A test suite does not use them. */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NORING_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
        /* x32 system calls share the ABI tag: refuse them all (bit 30 set). */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
#endif
        DENY(__NR_io_uring_setup),
        DENY(__NR_io_uring_enter),
        DENY(__NR_io_uring_register),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {
        .len = (unsigned short)(sizeof filter / sizeof filter[0]),
        .filter = filter,
    };
    /* Without CAP_SYS_ADMIN a filter needs no_new_privs (the exec'd program cannot gain
     * privileges through setuid bits, which could otherwise be tricked by the filter). */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fprintf(stderr, "noring: prctl(PR_SET_NO_NEW_PRIVS): %s\n", strerror(errno));
        return 127;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
        fprintf(stderr, "noring: prctl(PR_SET_SECCOMP): %s\n", strerror(errno));
        return 127;
    }
    execvp(argv[1], argv + 1);
    fprintf(stderr, "noring: %s: %s\n", argv[1], strerror(errno));
    return 127;
}
