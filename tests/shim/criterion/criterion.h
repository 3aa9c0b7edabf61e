/* A minimal Criterion-compatible test header, for platforms where Criterion is not packaged
 * (MinGW-w64, cross builds run under wine or qemu). It implements the subset our suites use:
 *
 *   Test(suite, name, .init = f, .fini = f, .timeout = seconds, .signal = SIGABRT,
 *        .exit_code = n, .disabled = true, .description = "...")
 *   cr_assert(cond [, fmt, ...]), cr_assert_not, cr_assert_fail
 *   cr_assert_eq/neq/lt/leq/gt/geq(a, b [, fmt, ...]), cr_assert_null/not_null,
 *   cr_assert_str_eq/str_neq, the cr_expect_* forms (record a failure, go on),
 *   cr_skip_test([fmt, ...]), cr_log_info/warn/error.
 *
 * Tests register themselves from constructors; tests/shim/runner.c provides main(), which
 * runs every test in its own process (fork on POSIX, CreateProcess of itself on Windows),
 * enforces .timeout, checks .signal / .exit_code, and prints one line per test and a final
 * "N passed, M failed, K skipped". Run the program with --help for its options. */
#ifndef CRS_CRITERION_H
#define CRS_CRITERION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* MinGW: with __USE_MINGW_ANSI_STDIO the messages take C99 formats (%zd...). */
#if defined(__MINGW_PRINTF_FORMAT)
#define CRS_PRINTF(f, a) __attribute__((format(__MINGW_PRINTF_FORMAT, f, a)))
#elif defined(__GNUC__)
#define CRS_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CRS_PRINTF(f, a)
#endif

struct crs_test {
    const char *suite;
    const char *name;
    void (*fn)(void);
    void (*init)(void);
    void (*fini)(void);
    double      timeout;     /* seconds; 0: none */
    int         signal;      /* the test passes only if it dies of this signal */
    int         exit_code;   /* the test passes only if it exits with this code */
    bool        disabled;
    const char *description;
    struct crs_test *next;
};

void crs_register(struct crs_test *t);
/* Report a failed assertion; `fatal` ends the test (after running .fini). */
void crs_fail(const char *file, int line, bool fatal, const char *what, const char *fmt, ...)
    CRS_PRINTF(5, 6);
__attribute__((noreturn)) void crs_skip(const char *fmt, ...) CRS_PRINTF(1, 2);
void crs_log(const char *level, const char *fmt, ...) CRS_PRINTF(2, 3);

#define CRS_CAT_(a, b) a##b
#define CRS_CAT(a, b) CRS_CAT_(a, b)

#define CRS_ID(prefix, Suite_, Name_) CRS_CAT(prefix, CRS_CAT(Suite_, CRS_CAT(_, Name_)))
#define Test(Suite_, Name_, ...)                                                              \
    static void CRS_ID(crs_fn_, Suite_, Name_)(void);                                         \
    static struct crs_test CRS_ID(crs_t_, Suite_, Name_) = {                                  \
        .suite = #Suite_, .name = #Name_, .fn = CRS_ID(crs_fn_, Suite_, Name_), __VA_ARGS__}; \
    __attribute__((constructor)) static void CRS_ID(crs_reg_, Suite_, Name_)(void)            \
    {                                                                                         \
        crs_register(&CRS_ID(crs_t_, Suite_, Name_));                                         \
    }                                                                                         \
    static void CRS_ID(crs_fn_, Suite_, Name_)(void)

/* The optional message: `" " __VA_ARGS__` turns "no message" into " " and prefixes a
 * format string literal with one space that crs_fail() skips (messages are literals, as in
 * Criterion; the space keeps -Wformat-zero-length quiet while printf checking stays on). */
#define CRS_CHECK(fatal, cond, what, ...)                                                     \
    do {                                                                                      \
        if (!(cond))                                                                          \
            crs_fail(__FILE__, __LINE__, fatal, what, " " __VA_ARGS__);                        \
    } while (0)

/* Comparisons convert both sides to their usual arithmetic type, as Criterion's do;
 * mixing signed and unsigned operands is intended in the suites (sizes vs. results). */
#define CRS_CMP(fatal, a, op, b, ...)                                                         \
    do {                                                                                      \
        _Pragma("GCC diagnostic push")                                                        \
        _Pragma("GCC diagnostic ignored \"-Wsign-compare\"")                                  \
        int crs_ok_ = ((a)op(b));                                                             \
        _Pragma("GCC diagnostic pop")                                                         \
        if (!crs_ok_)                                                                         \
            crs_fail(__FILE__, __LINE__, fatal, "(" #a ") " #op " (" #b ")", " " __VA_ARGS__); \
    } while (0)

#define cr_assert(cond, ...) CRS_CHECK(true, cond, #cond, __VA_ARGS__)
#define cr_assert_not(cond, ...) CRS_CHECK(true, !(cond), "!(" #cond ")", __VA_ARGS__)
#define cr_assert_fail(...) crs_fail(__FILE__, __LINE__, true, "cr_assert_fail", " " __VA_ARGS__)
#define cr_assert_eq(a, b, ...) CRS_CMP(true, a, ==, b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) CRS_CMP(true, a, !=, b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...) CRS_CMP(true, a, <, b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) CRS_CMP(true, a, <=, b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...) CRS_CMP(true, a, >, b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) CRS_CMP(true, a, >=, b, __VA_ARGS__)
#define cr_assert_null(p, ...) CRS_CHECK(true, (p) == NULL, "(" #p ") == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...) CRS_CHECK(true, (p) != NULL, "(" #p ") != NULL", __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...)                                                           \
    CRS_CHECK(true, strcmp((a), (b)) == 0, "strcmp(" #a ", " #b ") == 0", __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...)                                                          \
    CRS_CHECK(true, strcmp((a), (b)) != 0, "strcmp(" #a ", " #b ") != 0", __VA_ARGS__)

#define cr_expect(cond, ...) CRS_CHECK(false, cond, #cond, __VA_ARGS__)
#define cr_expect_not(cond, ...) CRS_CHECK(false, !(cond), "!(" #cond ")", __VA_ARGS__)
#define cr_expect_eq(a, b, ...) CRS_CMP(false, a, ==, b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...) CRS_CMP(false, a, !=, b, __VA_ARGS__)
#define cr_expect_lt(a, b, ...) CRS_CMP(false, a, <, b, __VA_ARGS__)
#define cr_expect_leq(a, b, ...) CRS_CMP(false, a, <=, b, __VA_ARGS__)
#define cr_expect_gt(a, b, ...) CRS_CMP(false, a, >, b, __VA_ARGS__)
#define cr_expect_geq(a, b, ...) CRS_CMP(false, a, >=, b, __VA_ARGS__)
#define cr_expect_null(p, ...) CRS_CHECK(false, (p) == NULL, "(" #p ") == NULL", __VA_ARGS__)
#define cr_expect_not_null(p, ...) CRS_CHECK(false, (p) != NULL, "(" #p ") != NULL", __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...)                                                           \
    CRS_CHECK(false, strcmp((a), (b)) == 0, "strcmp(" #a ", " #b ") == 0", __VA_ARGS__)

#define cr_skip_test(...) crs_skip(" " __VA_ARGS__)
#define cr_log_info(...) crs_log("info", __VA_ARGS__)
#define cr_log_warn(...) crs_log("warn", __VA_ARGS__)
#define cr_log_error(...) crs_log("error", __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
