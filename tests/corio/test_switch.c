/* Criterion tests of the coroutine switch and stacks (src/corio/switch.h, src/corio/stack.h).
 * The checks themselves live in switch_smoke.c, which also builds as a plain program for
 * targets without Criterion (qemu cross runs); here each one is a test of its own, in its own
 * process, with a timeout. */
#define SWITCH_SMOKE_NO_MAIN
#include "switch_smoke.c"

#include <criterion/criterion.h>

#define SWITCH_TEST(name)                                                                     \
    Test(corio_switch, name, .timeout = 10)                                                   \
    {                                                                                         \
        const char *err = check_##name();                                                     \
        cr_assert_null(err, "%s", err);                                                       \
    }

/* The checks that have a test of their own; every entry of switch_smoke.c's table must be
 * here (all_checks_listed below). */
#define SWITCH_TESTS(X)                                                                       \
    X(pingpong) X(callee_saved) X(fp_values) X(fp_control) X(entry_frame) X(many)             \
    X(deep_recursion) X(pool) X(pool_chunks) X(overflow) X(overflow_other_thread)             \
    X(overflow_in_chunk) X(other_segv)

SWITCH_TESTS(SWITCH_TEST)

/* The same overflow, seen by Criterion itself: the process dies of SIGABRT. */
Test(corio_switch, overflow_signal, .timeout = 10, .signal = SIGABRT)
{
    overflow_child();
}

/* Every check of switch_smoke.c's table has its test above, and no test is listed twice. */
#define SWITCH_FN(name) check_##name,
Test(corio_switch, all_checks_listed, .timeout = 10)
{
    static const char *(*const listed[])(void) = {SWITCH_TESTS(SWITCH_FN)};
    size_t nl = sizeof listed / sizeof listed[0];
    size_t nt = sizeof smoke_checks / sizeof smoke_checks[0];
    for (size_t i = 0; i < nt; i++) {
        size_t hits = 0;
        for (size_t j = 0; j < nl; j++)
            hits += listed[j] == smoke_checks[i].fn;
        cr_assert_eq(hits, 1, "check %s has %zu tests in test_switch.c", smoke_checks[i].name,
                     hits);
    }
    cr_assert_eq(nl, nt, "%zu tests for %zu checks", nl, nt);
}
