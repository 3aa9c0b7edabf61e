/* main() for the Criterion-compatible shim (criterion/criterion.h beside this file).
 *
 * Every test runs in its own process, as under Criterion: on POSIX a fork() of the runner,
 * on Windows the runner started again by CreateProcess with --crs-child=suite/name. The
 * parent enforces .timeout, checks .signal and .exit_code, and prints one line per test,
 * then "N passed, M failed, K skipped". Exit status: 0 when nothing failed, 1 otherwise.
 *
 * Options: --list, --filter=GLOB (on "suite/name", * and ?), --timeout-scale=X (or the
 * environment variable CRS_TIMEOUT_SCALE, for slow emulators), --crs-child=suite/name (run
 * one test in this process: for debuggers). Criterion's --jobs/-j and --verbose are
 * accepted and ignored: tests run one at a time. */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include "criterion/criterion.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <errno.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#endif

/* Child exit codes the parent understands. */
#define CRS_EXIT_FAIL 1
#define CRS_EXIT_SKIP 77

static struct crs_test *tests;
static size_t           ntests;
static struct crs_test *current;   /* in a child: the test running */
static bool             failed;    /* in a child: a non-fatal expectation failed */
static bool             in_fini;

void crs_register(struct crs_test *t)
{
    t->next = tests;
    tests = t;
    ntests++;
}

static void child_exit(int code)
{
    if (current && current->fini && !in_fini) {
        in_fini = true;
        current->fini();
    }
    fflush(stdout);
    fflush(stderr);
    exit(code);
}

void crs_fail(const char *file, int line, bool fatal, const char *what, const char *fmt, ...)
{
    fprintf(stderr, "  %s:%d: assertion failed: %s", file, line, what);
    if (fmt && *fmt == ' ')
        fmt++; /* the header's prefix */
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs(": ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    failed = true;
    if (fatal)
        child_exit(CRS_EXIT_FAIL);
}

void crs_skip(const char *fmt, ...)
{
    fflush(stderr);
    printf("[SKIP] %s::%s", current ? current->suite : "?", current ? current->name : "?");
    if (fmt && *fmt == ' ')
        fmt++;
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs(": ", stdout);
        vprintf(fmt, ap);
        va_end(ap);
    }
    putchar('\n');
    child_exit(CRS_EXIT_SKIP);
    abort(); /* not reached */
}

void crs_log(const char *level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  [%s] ", level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Runs t in this process; does not return. */
static void run_here(struct crs_test *t)
{
    current = t;
    if (t->init)
        t->init();
    t->fn();
    child_exit(failed ? CRS_EXIT_FAIL : 0);
}

static bool glob_match(const char *p, const char *s)
{
    for (; *p; p++, s++) {
        if (*p == '*') {
            for (const char *q = s;; q++) {
                if (glob_match(p + 1, q))
                    return true;
                if (!*q)
                    return false;
            }
        }
        if (!*s || (*p != '?' && *p != *s))
            return false;
    }
    return !*s;
}

static int cmp_tests(const void *a, const void *b)
{
    const struct crs_test *x = *(struct crs_test *const *)a, *y = *(struct crs_test *const *)b;
    int c = strcmp(x->suite, y->suite);
    return c ? c : strcmp(x->name, y->name);
}

static char *full_name(const struct crs_test *t, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", t->suite, t->name);
    return buf;
}

/* How a child ended. */
enum outcome { OUT_EXIT, OUT_SIGNAL, OUT_TIMEOUT, OUT_ERROR };

#ifdef _WIN32
/* Exit codes a Windows process has when it dies the way a POSIX one dies of a signal.
 * abort() exits with 3 (the shim's SIGABRT handler makes sure no dialog comes first). */
static bool win_signal_matches(int sig, unsigned long code)
{
    switch (sig) {
    case SIGABRT: return code == 3;
    case SIGSEGV:
        return code == (unsigned long)EXCEPTION_ACCESS_VIOLATION ||
               code == (unsigned long)EXCEPTION_STACK_OVERFLOW ||
               code == (unsigned long)EXCEPTION_GUARD_PAGE;
    case SIGILL: return code == (unsigned long)EXCEPTION_ILLEGAL_INSTRUCTION;
    case SIGFPE:
        return code == (unsigned long)EXCEPTION_INT_DIVIDE_BY_ZERO ||
               code == (unsigned long)EXCEPTION_FLT_DIVIDE_BY_ZERO;
    default: return false;
    }
}

static void on_sigabrt(int sig)
{
    (void)sig;
    fflush(stdout);
    fflush(stderr);
    _exit(3);
}

static LONG WINAPI on_exception(EXCEPTION_POINTERS *e)
{
    DWORD code = e->ExceptionRecord->ExceptionCode;
    fprintf(stderr, "  exception 0x%08lx at %p\n", (unsigned long)code,
            e->ExceptionRecord->ExceptionAddress);
    fflush(stderr);
    TerminateProcess(GetCurrentProcess(), code);
    return EXCEPTION_CONTINUE_SEARCH;
}

static void child_setup(void)
{
    /* No error boxes: a test that crashes must end, not wait for a click. */
    SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX | SEM_NOOPENFILEERRORBOX);
    signal(SIGABRT, on_sigabrt);
    SetUnhandledExceptionFilter(on_exception);
}

static enum outcome run_child(struct crs_test *t, double timeout, unsigned long *status)
{
    wchar_t exe[32768];
    DWORD n = GetModuleFileNameW(NULL, exe, sizeof exe / sizeof exe[0]);
    if (n == 0 || n >= sizeof exe / sizeof exe[0])
        return OUT_ERROR;
    char name[512];
    full_name(t, name, sizeof name);
    wchar_t cmd[33000];
    _snwprintf(cmd, sizeof cmd / sizeof cmd[0], L"\"%ls\" --crs-child=%hs", exe, name);
    cmd[sizeof cmd / sizeof cmd[0] - 1] = 0;
    STARTUPINFOW si;
    PROCESS_INFORMATION pi;
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
    si.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
    si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
    fflush(stdout);
    fflush(stderr);
    /* Starting a process can fail for a moment on a loaded machine (wine answers
     * ERROR_INTERNAL_ERROR then): the test has not run, so it is started again, a few times. */
    for (int attempt = 1;; attempt++) {
        if (CreateProcessW(exe, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi))
            break;
        fprintf(stderr, "  CreateProcess failed: error %lu (attempt %d of 5)\n",
                (unsigned long)GetLastError(), attempt);
        if (attempt == 5)
            return OUT_ERROR;
        Sleep(250u * (unsigned)attempt);
    }
    CloseHandle(pi.hThread);
    DWORD ms = timeout > 0 ? (DWORD)(timeout * 1000) : INFINITE;
    enum outcome out = OUT_EXIT;
    if (WaitForSingleObject(pi.hProcess, ms) == WAIT_TIMEOUT) {
        TerminateProcess(pi.hProcess, 1);
        WaitForSingleObject(pi.hProcess, INFINITE);
        out = OUT_TIMEOUT;
    }
    DWORD code = 0;
    GetExitCodeProcess(pi.hProcess, &code);
    CloseHandle(pi.hProcess);
    *status = code;
    return out;
}

static double now_s(void)
{
    LARGE_INTEGER c, f;
    QueryPerformanceCounter(&c);
    QueryPerformanceFrequency(&f);
    return (double)c.QuadPart / (double)f.QuadPart;
}
#else
static void child_setup(void)
{
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static enum outcome run_child(struct crs_test *t, double timeout, unsigned long *status)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("  fork");
        return OUT_ERROR;
    }
    if (pid == 0) {
        setpgid(0, 0); /* so a timeout can end the test's own children too */
        child_setup();
        run_here(t);
    }
    double deadline = timeout > 0 ? now_s() + timeout : 0;
    long sleep_ns = 50000;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            perror("  waitpid");
            return OUT_ERROR;
        }
        if (deadline && now_s() > deadline) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
            return OUT_TIMEOUT;
        }
        struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL);
        if (sleep_ns < 10000000)
            sleep_ns *= 2;
    }
    if (WIFSIGNALED(st)) {
        *status = (unsigned long)WTERMSIG(st);
        return OUT_SIGNAL;
    }
    *status = (unsigned long)WEXITSTATUS(st);
    return OUT_EXIT;
}
#endif

/* 1 passed, 0 failed, -1 skipped. */
static int run_test(struct crs_test *t, double scale)
{
    if (t->disabled) {
        printf("[SKIP] %s::%s: disabled\n", t->suite, t->name);
        return -1;
    }
    unsigned long st = 0;
    double t0 = now_s();
    enum outcome out = run_child(t, t->timeout * scale, &st);
    double dt = now_s() - t0;
    char why[128] = "";
    int verdict = 0;
    switch (out) {
    case OUT_ERROR: snprintf(why, sizeof why, "could not start the test"); break;
    case OUT_TIMEOUT: snprintf(why, sizeof why, "timed out after %.1fs", t->timeout * scale); break;
    case OUT_SIGNAL:
        if (t->signal && (int)st == t->signal)
            verdict = 1;
        else
#ifdef _WIN32
            snprintf(why, sizeof why, "killed by signal %lu", st);
#else
            snprintf(why, sizeof why, "killed by signal %lu (%s)", st, strsignal((int)st));
#endif
        break;
    case OUT_EXIT:
#ifdef _WIN32
        if (t->signal) {
            if (win_signal_matches(t->signal, st))
                verdict = 1;
            else
                snprintf(why, sizeof why, "exit code 0x%lx, expected the code of signal %d",
                         st, t->signal);
            break;
        }
#endif
        if (t->signal)
            snprintf(why, sizeof why, "exited with %lu, expected signal %d", st, t->signal);
        else if (st == CRS_EXIT_SKIP && t->exit_code != CRS_EXIT_SKIP)
            verdict = -1; /* the child printed the reason */
        else if ((int)st == t->exit_code)
            verdict = 1;
        else if (st > 255)
            snprintf(why, sizeof why, "crashed: exit code 0x%lx", st);
        else
            snprintf(why, sizeof why, "exit code %lu", st);
        break;
    }
    if (verdict == 1)
        printf("[PASS] %s::%s (%.2fs)\n", t->suite, t->name, dt);
    else if (verdict == 0)
        printf("[FAIL] %s::%s: %s\n", t->suite, t->name, why);
    fflush(stdout);
    return verdict;
}

static void usage(const char *argv0)
{
    printf("usage: %s [--list] [--filter=SUITE/NAME-GLOB] [--timeout-scale=X]\n"
           "          [--crs-child=SUITE/NAME]\n", argv0);
}

int main(int argc, char **argv)
{
    const char *filter = NULL, *child = NULL;
    bool list = false;
    double scale = 1;
    const char *env = getenv("CRS_TIMEOUT_SCALE");
    if (env && atof(env) > 0)
        scale = atof(env);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--list") || !strcmp(a, "-l")) {
            list = true;
        } else if (!strncmp(a, "--filter=", 9)) {
            filter = a + 9;
        } else if (!strcmp(a, "--filter") && i + 1 < argc) {
            filter = argv[++i];
        } else if (!strncmp(a, "--crs-child=", 12)) {
            child = a + 12;
        } else if (!strncmp(a, "--timeout-scale=", 16)) {
            scale = atof(a + 16) > 0 ? atof(a + 16) : 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(argv[0]);
            return 0;
        } else if ((!strcmp(a, "--jobs") || !strcmp(a, "-j")) && i + 1 < argc) {
            i++; /* Criterion's: accepted, tests run one at a time here */
        } else if (!strncmp(a, "--jobs=", 7) || !strncmp(a, "-j", 2) ||
                   !strncmp(a, "--verbose", 9) || !strcmp(a, "--color=never") ||
                   !strcmp(a, "--no-early-exit") || !strcmp(a, "--ascii")) {
            /* Criterion's: accepted and ignored */
        } else {
            fprintf(stderr, "%s: unknown option %s\n", argv[0], a);
            usage(argv[0]);
            return 2;
        }
    }

    struct crs_test **v = calloc(ntests ? ntests : 1, sizeof *v);
    if (!v)
        return 2;
    size_t n = 0;
    for (struct crs_test *t = tests; t; t = t->next)
        v[n++] = t;
    qsort(v, n, sizeof *v, cmp_tests);

    char name[512];
    if (child) {
        for (size_t i = 0; i < n; i++)
            if (!strcmp(full_name(v[i], name, sizeof name), child)) {
                child_setup();
                run_here(v[i]);
            }
        fprintf(stderr, "%s: no test named %s\n", argv[0], child);
        return 2;
    }

    unsigned passed = 0, fails = 0, skipped = 0;
    for (size_t i = 0; i < n; i++) {
        full_name(v[i], name, sizeof name);
        if (filter && !glob_match(filter, name))
            continue;
        if (list) {
            printf("%s\n", name);
            continue;
        }
        int r = run_test(v[i], scale);
        if (r > 0)
            passed++;
        else if (r == 0)
            fails++;
        else
            skipped++;
    }
    free(v);
    if (!list)
        printf("%u passed, %u failed, %u skipped\n", passed, fails, skipped);
    return fails ? 1 : 0;
}
