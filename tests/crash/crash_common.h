/* What the crash-simulator tests share: a setup that keeps their files in memory where it can
 * (/dev/shm: a thousand reboots write a lot), and the run count, first seed and mixer that
 * make every run reproducible. Include after common.h. */
#ifndef AFS_TEST_CRASH_COMMON_H
#define AFS_TEST_CRASH_COMMON_H

static void c_setup(void)
{
    struct stat st;
    if (!getenv("AFS_TEST_TMPDIR") && stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode))
        setenv("AFS_TEST_TMPDIR", "/dev/shm", 1);
    t_setup();
}

/* Crashes per run: AFS_CRASH_RUNS overrides (scripts/crash_soak.sh runs many more). Under
 * wine every file call is a round trip to its server: 50 crashes there, not 1,000. */
static unsigned runs(void)
{
    const char *e = getenv("AFS_CRASH_RUNS");
#ifdef _WIN32
    return e && *e ? (unsigned)strtoul(e, NULL, 10) : 50;
#else
    return e && *e ? (unsigned)strtoul(e, NULL, 10) : 1000;
#endif
}

/* The first seed: AFS_CRASH_SEED overrides (the soak script draws one). */
static uint64_t seed0(void)
{
    const char *e = getenv("AFS_CRASH_SEED");
    return e && *e ? strtoull(e, NULL, 10) : 1000;
}

/* splitmix64's finaliser: a seed or a record number into well-mixed bits. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

#endif
