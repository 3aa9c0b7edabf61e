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

SWITCH_TEST(pingpong)
SWITCH_TEST(callee_saved)
SWITCH_TEST(fp_values)
SWITCH_TEST(fp_control)
SWITCH_TEST(entry_frame)
SWITCH_TEST(many)
SWITCH_TEST(deep_recursion)
SWITCH_TEST(pool)
SWITCH_TEST(overflow)
SWITCH_TEST(overflow_other_thread)
SWITCH_TEST(other_segv)

/* The same overflow, seen by Criterion itself: the process dies of SIGABRT. */
Test(corio_switch, overflow_signal, .timeout = 10, .signal = SIGABRT)
{
    overflow_child();
}

/* Every check is above; keep the table in switch_smoke.c in step with this list. */
Test(corio_switch, all_checks_listed, .timeout = 10)
{
    cr_assert_eq(sizeof(smoke_checks) / sizeof(smoke_checks[0]), 11);
}
