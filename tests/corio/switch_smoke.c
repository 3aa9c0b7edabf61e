/* Checks of the coroutine switch and stacks (src/corio/switch.h, src/corio/stack.h) in plain C,
 * without Criterion, so that they also run where Criterion is not available (cross builds
 * under qemu: make test-aarch64). Exits 0 and prints "switch smoke: N passed, 0 failed" on
 * success.
 *
 * test_switch.c includes this file with SWITCH_SMOKE_NO_MAIN defined and runs every check as
 * a Criterion test. Each check returns NULL on success or a message saying what went wrong.
 *
 * Build: cc -std=c11 -D_GNU_SOURCE -Isrc tests/corio/switch_smoke.c src/corio/stack.c
 *        src/corio/switch_<arch>.S -lpthread                (see tests/corio/CMakeLists.txt) */
#include "corio/stack.h"
#include "corio/switch.h"

#include <errno.h>
#if __has_include(<execinfo.h>) /* glibc's backtrace(); musl has none */
#include <execinfo.h>
#define SMOKE_HAVE_BACKTRACE 1
#else
#define SMOKE_HAVE_BACKTRACE 0
#endif
#include <fenv.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------
 * Harness: the test's main context plays the scheduler, with the ASan protocol of switch.h.
 * ---------------------------------------------------------------------------------------- */

static char smoke_msg[9000];
#define SMOKE_FAIL(...)                                                                       \
    do {                                                                                      \
        snprintf(smoke_msg, sizeof(smoke_msg), __VA_ARGS__);                                  \
        return smoke_msg;                                                                     \
    } while (0)
#define SMOKE_CHECK(cond, ...)                                                                \
    do {                                                                                      \
        if (!(cond))                                                                          \
            SMOKE_FAIL(__VA_ARGS__);                                                          \
    } while (0)

struct co {
    struct corio__regs  regs;
    struct corio__stack stack;
    void              (*fn)(struct co *c);
    void               *arg;
    int                 done;
};

static struct corio__regs main_regs;
static const void *main_lo; /* the thread stack's bounds, learned at the first entry (ASan) */
static size_t main_size;

/* Switch from a context that will be resumed later. */
static void co_switch(struct corio__regs *from, struct corio__regs *to, const void *to_lo,
                      size_t to_size)
{
    void *fake;
    corio__asan_start_switch(&fake, to_lo, to_size);
    corio__switch(from, to);
    corio__asan_finish_switch(fake, NULL, NULL);
}

static void co_yield(struct co *c)
{
    co_switch(&c->regs, &main_regs, main_lo, main_size);
}

static void co_resume(struct co *c)
{
    co_switch(&main_regs, &c->regs, c->stack.lo, c->stack.size);
}

static void co_entry(void *arg)
{
    struct co *c = arg;
    corio__asan_finish_switch(NULL, &main_lo, &main_size); /* always entered from main here */
    c->fn(c);
    c->done = 1;
    corio__asan_start_switch(NULL, main_lo, main_size);   /* dying: destroy the fake stack */
    corio__switch(&c->regs, &main_regs);
    abort(); /* never resumed */
}

static int co_start(struct co *c, struct corio__stack_pool *pool, void (*fn)(struct co *),
                    void *arg)
{
    memset(c, 0, sizeof(*c));
    int err = corio__stack_get(pool, &c->stack);
    if (err != 0)
        return err;
    c->fn = fn;
    c->arg = arg;
    corio__regs_init(&c->regs, c->stack.lo, c->stack.size, co_entry, c);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Assembly probes: registers cannot be checked from C.
 * smoke_regs_check(from, to) loads known values into every callee-saved register, switches,
 * and when resumed returns a bit mask of the registers that changed. smoke_regs_scramble
 * loads garbage into all of them and switches. smoke_probe_entry records sp and the frame
 * pointer at a coroutine's first instruction, then tail-calls smoke_probe_entry_c.
 * ---------------------------------------------------------------------------------------- */

unsigned smoke_regs_check(struct corio__regs *from, struct corio__regs *to);
void smoke_regs_scramble(struct corio__regs *from, struct corio__regs *to);
void smoke_probe_entry(void *arg);
void smoke_probe_entry_c(void *arg);
uintptr_t smoke_probe_sp, smoke_probe_fp;

#if defined(__x86_64__) && defined(__ELF__)
#define SMOKE_HAVE_ASM 1
#define SMOKE_NREGS 6 /* rbx rbp r12 r13 r14 r15 */
__asm__(
    "    .text\n"
    "    .globl smoke_regs_check\n"
    "    .type smoke_regs_check, @function\n"
    "smoke_regs_check:\n"
    "    push %rbx\n push %rbp\n push %r12\n push %r13\n push %r14\n push %r15\n"
    "    sub $8, %rsp\n"
    "    movabs $0x1111111111111111, %rbx\n"
    "    movabs $0x2222222222222222, %rbp\n"
    "    movabs $0x3333333333333333, %r12\n"
    "    movabs $0x4444444444444444, %r13\n"
    "    movabs $0x5555555555555555, %r14\n"
    "    movabs $0x6666666666666666, %r15\n"
    "    call corio__switch\n"
    "    xor %eax, %eax\n"
    "    movabs $0x1111111111111111, %rcx\n cmp %rcx, %rbx\n je 1f\n or $1, %eax\n1:\n"
    "    movabs $0x2222222222222222, %rcx\n cmp %rcx, %rbp\n je 1f\n or $2, %eax\n1:\n"
    "    movabs $0x3333333333333333, %rcx\n cmp %rcx, %r12\n je 1f\n or $4, %eax\n1:\n"
    "    movabs $0x4444444444444444, %rcx\n cmp %rcx, %r13\n je 1f\n or $8, %eax\n1:\n"
    "    movabs $0x5555555555555555, %rcx\n cmp %rcx, %r14\n je 1f\n or $16, %eax\n1:\n"
    "    movabs $0x6666666666666666, %rcx\n cmp %rcx, %r15\n je 1f\n or $32, %eax\n1:\n"
    "    add $8, %rsp\n"
    "    pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbp\n pop %rbx\n"
    "    ret\n"
    "    .size smoke_regs_check, . - smoke_regs_check\n"
    "    .globl smoke_regs_scramble\n"
    "    .type smoke_regs_scramble, @function\n"
    "smoke_regs_scramble:\n"
    "    push %rbx\n push %rbp\n push %r12\n push %r13\n push %r14\n push %r15\n"
    "    sub $8, %rsp\n"
    "    movabs $0xdeadbeefdeadbee1, %rbx\n"
    "    movabs $0xdeadbeefdeadbee2, %rbp\n"
    "    movabs $0xdeadbeefdeadbee3, %r12\n"
    "    movabs $0xdeadbeefdeadbee4, %r13\n"
    "    movabs $0xdeadbeefdeadbee5, %r14\n"
    "    movabs $0xdeadbeefdeadbee6, %r15\n"
    "    call corio__switch\n"
    "    add $8, %rsp\n"
    "    pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbp\n pop %rbx\n"
    "    ret\n"
    "    .size smoke_regs_scramble, . - smoke_regs_scramble\n"
    "    .globl smoke_probe_entry\n"
    "    .type smoke_probe_entry, @function\n"
    "smoke_probe_entry:\n"
    "    movq %rsp, smoke_probe_sp(%rip)\n"
    "    movq %rbp, smoke_probe_fp(%rip)\n"
    "    jmp smoke_probe_entry_c\n"
    "    .size smoke_probe_entry, . - smoke_probe_entry\n");
#elif defined(__aarch64__) && defined(__ELF__)
#define SMOKE_HAVE_ASM 1
#define SMOKE_NREGS 19 /* x19-x28, x29, d8-d15 */
/* Value of register i (0..18): i + 19 in the low half, a tag in the top 16 bits. */
#define SMOKE_A64_SET(reg, i) "    mov x9, #" #i "\n movk x9, #0xc0de, lsl #48\n" \
                              "    mov " reg ", x9\n"
#define SMOKE_A64_SETD(reg, i) "    mov x9, #" #i "\n movk x9, #0xc0de, lsl #48\n" \
                               "    fmov " reg ", x9\n"
#define SMOKE_A64_CMP(reg, i) "    mov x9, #" #i "\n movk x9, #0xc0de, lsl #48\n" \
                              "    cmp " reg ", x9\n b.eq 1f\n orr w0, w0, #(1 << " #i ")\n1:\n"
#define SMOKE_A64_CMPD(reg, i) "    mov x9, #" #i "\n movk x9, #0xc0de, lsl #48\n" \
                               "    fmov x10, " reg "\n cmp x10, x9\n b.eq 1f\n" \
                               "    orr w0, w0, #(1 << " #i ")\n1:\n"
#define SMOKE_A64_SAVE                                                                        \
    "    stp x29, x30, [sp, #-160]!\n"                                                        \
    "    stp x19, x20, [sp, #16]\n stp x21, x22, [sp, #32]\n stp x23, x24, [sp, #48]\n"        \
    "    stp x25, x26, [sp, #64]\n stp x27, x28, [sp, #80]\n"                                 \
    "    stp d8, d9, [sp, #96]\n stp d10, d11, [sp, #112]\n stp d12, d13, [sp, #128]\n"        \
    "    stp d14, d15, [sp, #144]\n"
#define SMOKE_A64_RESTORE                                                                     \
    "    ldp x19, x20, [sp, #16]\n ldp x21, x22, [sp, #32]\n ldp x23, x24, [sp, #48]\n"        \
    "    ldp x25, x26, [sp, #64]\n ldp x27, x28, [sp, #80]\n"                                 \
    "    ldp d8, d9, [sp, #96]\n ldp d10, d11, [sp, #112]\n ldp d12, d13, [sp, #128]\n"        \
    "    ldp d14, d15, [sp, #144]\n"                                                          \
    "    ldp x29, x30, [sp], #160\n"
#define SMOKE_A64_SETALL(S, SD)                                                               \
    S("x19", 0) S("x20", 1) S("x21", 2) S("x22", 3) S("x23", 4) S("x24", 5) S("x25", 6)       \
    S("x26", 7) S("x27", 8) S("x28", 9) S("x29", 10) SD("d8", 11) SD("d9", 12) SD("d10", 13)  \
    SD("d11", 14) SD("d12", 15) SD("d13", 16) SD("d14", 17) SD("d15", 18)
__asm__(
    "    .text\n"
    "    .globl smoke_regs_check\n"
    "    .type smoke_regs_check, %function\n"
    "smoke_regs_check:\n"
    SMOKE_A64_SAVE
    SMOKE_A64_SETALL(SMOKE_A64_SET, SMOKE_A64_SETD)
    "    bl corio__switch\n"
    "    mov w0, #0\n"
    SMOKE_A64_SETALL(SMOKE_A64_CMP, SMOKE_A64_CMPD)
    /* x29 held a test value, so the frame record is addressed through sp. */
    SMOKE_A64_RESTORE
    "    ret\n"
    "    .size smoke_regs_check, . - smoke_regs_check\n"
    "    .globl smoke_regs_scramble\n"
    "    .type smoke_regs_scramble, %function\n"
    "smoke_regs_scramble:\n"
    SMOKE_A64_SAVE
    SMOKE_A64_SETALL(SMOKE_A64_SET, SMOKE_A64_SETD)
    "    mvn x19, x19\n mvn x20, x20\n mvn x21, x21\n mvn x22, x22\n mvn x23, x23\n"
    "    mvn x24, x24\n mvn x25, x25\n mvn x26, x26\n mvn x27, x27\n mvn x28, x28\n"
    "    mvn x29, x29\n fneg d8, d8\n fneg d9, d9\n fneg d10, d10\n fneg d11, d11\n"
    "    fneg d12, d12\n fneg d13, d13\n fneg d14, d14\n fneg d15, d15\n"
    "    bl corio__switch\n"
    SMOKE_A64_RESTORE
    "    ret\n"
    "    .size smoke_regs_scramble, . - smoke_regs_scramble\n"
    "    .globl smoke_probe_entry\n"
    "    .type smoke_probe_entry, %function\n"
    "smoke_probe_entry:\n"
    "    mov x9, sp\n"
    "    adrp x10, smoke_probe_sp\n str x9, [x10, :lo12:smoke_probe_sp]\n"
    "    adrp x10, smoke_probe_fp\n str x29, [x10, :lo12:smoke_probe_fp]\n"
    "    b smoke_probe_entry_c\n"
    "    .size smoke_probe_entry, . - smoke_probe_entry\n");
#else
#define SMOKE_HAVE_ASM 0
#endif

/* ------------------------------------------------------------------------------------------
 * Checks
 * ---------------------------------------------------------------------------------------- */

static volatile long shared_value;

static void pingpong_fn(struct co *c)
{
    long n = *(long *)c->arg;
    for (long i = 0; i < n; i++) {
        if (shared_value != 2 * i)
            abort();
        shared_value = 2 * i + 1;
        co_yield(c);
    }
}

static const char *check_pingpong(void)
{
    struct corio__stack_pool pool;
    SMOKE_CHECK(corio__stack_pool_init(&pool, 64 * 1024, 4) == 0, "pool init");
    long n = 100000;
    struct co c;
    SMOKE_CHECK(co_start(&c, &pool, pingpong_fn, &n) == 0, "co_start");
    shared_value = 0;
    for (long i = 0; i < n; i++) {
        co_resume(&c);
        SMOKE_CHECK(shared_value == 2 * i + 1, "round %ld: saw %ld", i, (long)shared_value);
        shared_value = 2 * i + 2;
    }
    co_resume(&c);
    SMOKE_CHECK(c.done, "coroutine did not finish");
    corio__stack_put(&pool, &c.stack);
    corio__stack_pool_fini(&pool);
    return NULL;
}

#if SMOKE_HAVE_ASM
static void scramble_fn(struct co *c)
{
    for (int i = 0; i < 3; i++) {
        void *fake;
        corio__asan_start_switch(&fake, main_lo, main_size);
        smoke_regs_scramble(&c->regs, &main_regs);
        corio__asan_finish_switch(fake, NULL, NULL);
    }
}

static unsigned regs_check_from_main(struct co *c)
{
    /* The ASan protocol around a switch made from assembly: same calls, same order. */
    void *fake;
    corio__asan_start_switch(&fake, c->stack.lo, c->stack.size);
    unsigned bad = smoke_regs_check(&main_regs, &c->regs);
    corio__asan_finish_switch(fake, NULL, NULL);
    return bad;
}
#endif

static const char *check_callee_saved(void)
{
#if SMOKE_HAVE_ASM
    struct corio__stack_pool pool;
    SMOKE_CHECK(corio__stack_pool_init(&pool, 64 * 1024, 4) == 0, "pool init");
    struct co c;
    SMOKE_CHECK(co_start(&c, &pool, scramble_fn, NULL) == 0, "co_start");
    for (int i = 0; i < 4; i++) {
        unsigned bad = regs_check_from_main(&c);
        SMOKE_CHECK(bad == 0, "switch %d: callee-saved registers changed, mask 0x%x of %d", i,
                    bad, SMOKE_NREGS);
    }
    SMOKE_CHECK(c.done, "coroutine did not finish");
    corio__stack_put(&pool, &c.stack);
    corio__stack_pool_fini(&pool);
#endif
    return NULL;
}

/* Floating-point values live across switches on both sides. */
static volatile double fp_sink;

static void fp_values_fn(struct co *c)
{
    double acc = 0.0, x = 1.0;
    for (int i = 1; i <= 1000; i++) {
        acc += 1.0 / (double)i;
        x *= 1.0001;
        co_yield(c);
    }
    fp_sink = acc + x;
}

static const char *check_fp_values(void)
{
    double ref_acc = 0.0, ref_x = 1.0;
    for (int i = 1; i <= 1000; i++) {
        ref_acc += 1.0 / (double)i;
        ref_x *= 1.0001;
    }
    struct corio__stack_pool pool;
    SMOKE_CHECK(corio__stack_pool_init(&pool, 64 * 1024, 4) == 0, "pool init");
    struct co c;
    SMOKE_CHECK(co_start(&c, &pool, fp_values_fn, NULL) == 0, "co_start");
    double acc = 0.0, y = 3.0;
    while (!c.done) {
        co_resume(&c);
        acc += 0.5;
        y = y * 0.999 + 0.001;
    }
    SMOKE_CHECK(fp_sink == ref_acc + ref_x, "coroutine's doubles: %.17g != %.17g", fp_sink,
                ref_acc + ref_x);
    SMOKE_CHECK(acc == 0.5 * 1001, "main's doubles: %.17g", acc);
    SMOKE_CHECK(y > 0.0 && y < 3.0, "main's doubles: y = %.17g", y);
    corio__stack_put(&pool, &c.stack);
    corio__stack_pool_fini(&pool);
    return NULL;
}

/* 1/3 rounded in the current mode: the SSE/NEON unit, as opposed to fegetround(), which on
 * x86-64 reads the x87 control word. */
static double __attribute__((noinline)) third(void)
{
    volatile double one = 1.0, three = 3.0;
    return one / three;
}

static volatile int fp_ctl_fail;
static double third_down, third_up;

static void fp_control_fn(struct co *c)
{
    /* Inherited at corio__regs_init time: main had set FE_UPWARD. */
    if (fegetround() != FE_UPWARD || third() != third_up)
        fp_ctl_fail |= 1;
    fesetround(FE_TOWARDZERO);
    co_yield(c);
    /* Main changed to FE_DOWNWARD meanwhile; this coroutine keeps its own mode. */
    if (fegetround() != FE_TOWARDZERO || third() != third_down)
        fp_ctl_fail |= 2;
    fesetround(FE_TONEAREST);
    co_yield(c);
    if (fegetround() != FE_TONEAREST)
        fp_ctl_fail |= 4;
}

static const char *check_fp_control(void)
{
    int saved = fegetround();
    fesetround(FE_DOWNWARD);
    third_down = third();
    fesetround(FE_UPWARD);
    third_up = third();
    struct corio__stack_pool pool;
    SMOKE_CHECK(corio__stack_pool_init(&pool, 64 * 1024, 4) == 0, "pool init");
    struct co c;
    SMOKE_CHECK(co_start(&c, &pool, fp_control_fn, NULL) == 0, "co_start");
    SMOKE_CHECK(third_down != third_up, "rounding modes have no effect here");
    fp_ctl_fail = 0;
    co_resume(&c);
    int mode1 = fegetround();
    double t1 = third();
    fesetround(FE_DOWNWARD);
    co_resume(&c);
    int mode2 = fegetround();
    double t2 = third();
    co_resume(&c);
    int mode3 = fegetround();
    fesetround(saved);
    SMOKE_CHECK(fp_ctl_fail == 0, "coroutine saw the wrong FP control state (mask %d)",
                fp_ctl_fail);
    SMOKE_CHECK(mode1 == FE_UPWARD && t1 == third_up,
                "main lost FE_UPWARD after a switch: mode %d, 1/3 %a", mode1, t1);
    SMOKE_CHECK(mode2 == FE_DOWNWARD && t2 == third_down,
                "main lost FE_DOWNWARD after a switch: mode %d, 1/3 %a", mode2, t2);
    SMOKE_CHECK(mode3 == FE_DOWNWARD, "main lost FE_DOWNWARD after the coroutine ended");
    SMOKE_CHECK(c.done, "coroutine did not finish");
    corio__stack_put(&pool, &c.stack);
    corio__stack_pool_fini(&pool);
    return NULL;
}

/* The entry function sees sp aligned as after a call and a zero frame pointer, and a
 * backtrace from inside a coroutine ends cleanly at the entry frame. */
static struct corio__regs probe_regs;
static int probe_frames;

static int __attribute__((noinline)) probe_backtrace(int depth)
{
    void *frames[64];
    if (depth > 0)
        return probe_backtrace(depth - 1) + 1;
#if SMOKE_HAVE_BACKTRACE
    return backtrace(frames, 64);
#else
    (void)frames;
    return -1;
#endif
}

void smoke_probe_entry_c(void *arg)
{
    corio__asan_finish_switch(NULL, &main_lo, &main_size);
    probe_frames = probe_backtrace(3);
    *(int *)arg = 1;
    corio__asan_start_switch(NULL, main_lo, main_size);
    corio__switch(&probe_regs, &main_regs);
    abort();
}

static const char *check_entry_frame(void)
{
#if SMOKE_HAVE_ASM
    struct corio__stack_pool pool;
    SMOKE_CHECK(corio__stack_pool_init(&pool, 64 * 1024, 4) == 0, "pool init");
    struct corio__stack st;
    SMOKE_CHECK(corio__stack_get(&pool, &st) == 0, "stack_get");
    /* An odd top, to see the rounding down. */
    int ran = 0;
    corio__regs_init(&probe_regs, st.lo, st.size - 24, smoke_probe_entry, &ran);
    smoke_probe_sp = smoke_probe_fp = 1;
    co_switch(&main_regs, &probe_regs, st.lo, st.size);
    SMOKE_CHECK(ran, "entry did not run");
    uintptr_t top = (uintptr_t)st.lo + st.size - 24;
#if defined(CORIO_FORCE_UCONTEXT)
    uintptr_t slack = 1024; /* the libc start routine and our C trampoline have frames */
#else
    uintptr_t slack = 64;
#endif
    SMOKE_CHECK(smoke_probe_sp < top && smoke_probe_sp > top - slack, "sp %#lx, top %#lx",
                (unsigned long)smoke_probe_sp, (unsigned long)top);
#if defined(__x86_64__)
    SMOKE_CHECK(smoke_probe_sp % 16 == 8, "rsp %% 16 == %d at entry, want 8",
                (int)(smoke_probe_sp % 16));
#else
    SMOKE_CHECK(smoke_probe_sp % 16 == 0, "sp %% 16 == %d at entry, want 0",
                (int)(smoke_probe_sp % 16));
#endif
#if !defined(CORIO_FORCE_UCONTEXT)
    SMOKE_CHECK(smoke_probe_fp == 0, "frame pointer %#lx at entry, want 0",
                (unsigned long)smoke_probe_fp);
#endif
    /* probe_backtrace x4, smoke_probe_entry_c, the trampoline, and at most a couple more
     * (backtrace itself, the ucontext start routine). */
    SMOKE_CHECK(!SMOKE_HAVE_BACKTRACE || (probe_frames >= 5 && probe_frames <= 16),
                "backtrace gave %d frames", probe_frames);
    corio__stack_put(&pool, &st);
    corio__stack_pool_fini(&pool);
#endif
    return NULL;
}

/* 1000 coroutines, scheduled round-robin by main, check they run in order. */
#define MANY 1000
#define MANY_ROUNDS 50
static long many_seq;

static void many_fn(struct co *c)
{
    long id = (long)(intptr_t)c->arg;
    for (long r = 0; r < MANY_ROUNDS; r++) {
        if (many_seq != r * MANY + id)
            abort();
        many_seq++;
        co_yield(c);
    }
}

static const char *check_many(void)
{
    struct corio__stack_pool pool;
    SMOKE_CHECK(corio__stack_pool_init(&pool, 16 * 1024, 64) == 0, "pool init");
    struct co *cs = calloc(MANY, sizeof(*cs));
    SMOKE_CHECK(cs != NULL, "calloc");
    for (long i = 0; i < MANY; i++)
        SMOKE_CHECK(co_start(&cs[i], &pool, many_fn, (void *)(intptr_t)i) == 0, "co_start %ld",
                    i);
    many_seq = 0;
    for (long r = 0; r <= MANY_ROUNDS; r++)
        for (long i = 0; i < MANY; i++)
            co_resume(&cs[i]);
    SMOKE_CHECK(many_seq == (long)MANY * MANY_ROUNDS, "sequence %ld", many_seq);
    for (long i = 0; i < MANY; i++) {
        SMOKE_CHECK(cs[i].done, "coroutine %ld did not finish", i);
        corio__stack_put(&pool, &cs[i].stack);
    }
    /* The cache keeps as many stacks as were ever out at once (more than max_cached here). */
    SMOKE_CHECK(pool.cache_len == MANY && pool.n_out == 0, "cache %zu, out %zu", pool.cache_len,
                pool.n_out);
    corio__stack_pool_fini(&pool);
    free(cs);
    return NULL;
}

/* Recursion that uses most of a 256 KiB stack, yielding at the bottom. */
static volatile int recursion_sink;

static long __attribute__((noinline)) deep(struct co *c, int n)
{
    volatile char pad[900];
    pad[0] = (char)n;
    pad[sizeof(pad) - 1] = (char)n;
    if (n == 0) {
        co_yield(c);
        return pad[0];
    }
    long r = deep(c, n - 1);
    return r + pad[0] + pad[sizeof(pad) - 1] - 2 * (char)n + 1;
}

static void deep_fn(struct co *c)
{
    recursion_sink = (int)deep(c, 200); /* ~200 x 1 KiB */
}

static const char *check_deep_recursion(void)
{
    struct corio__stack_pool pool;
    SMOKE_CHECK(corio__stack_pool_init(&pool, 256 * 1024, 4) == 0, "pool init");
    struct co c;
    SMOKE_CHECK(co_start(&c, &pool, deep_fn, NULL) == 0, "co_start");
    co_resume(&c);
    SMOKE_CHECK(!c.done, "yield at the bottom did not come back to main");
    co_resume(&c);
    SMOKE_CHECK(c.done, "coroutine did not finish");
    SMOKE_CHECK(recursion_sink == 200, "recursion result %d", recursion_sink);
    corio__stack_put(&pool, &c.stack);
    corio__stack_pool_fini(&pool);
    return NULL;
}

static const char *check_pool(void)
{
    long page = sysconf(_SC_PAGESIZE);
    struct corio__stack_pool pool;
    SMOKE_CHECK(corio__stack_pool_init(&pool, 1000, 2) == 0, "pool init");
    SMOKE_CHECK(pool.stack_size >= 16 * 1024 && pool.stack_size % (size_t)page == 0,
                "stack_size %zu", pool.stack_size);
    SMOKE_CHECK(corio__stack_pool_init(&pool, 100 * 1024 + 1, 2) == 0, "pool init");
    SMOKE_CHECK(pool.stack_size > 100 * 1024 && pool.stack_size % (size_t)page == 0,
                "stack_size %zu", pool.stack_size);
    struct corio__stack s[3];
    for (int i = 0; i < 3; i++) {
        SMOKE_CHECK(corio__stack_get(&pool, &s[i]) == 0, "get %d", i);
        SMOKE_CHECK(s[i].size == pool.stack_size && (char *)s[i].lo > (char *)s[i].map &&
                        (char *)s[i].lo + s[i].size == (char *)s[i].map + s[i].map_size,
                    "layout of stack %d", i);
        memset(s[i].lo, 0x5a, s[i].size); /* all of it is writable */
    }
    void *lo1 = s[1].lo, *lo2 = s[2].lo;
    corio__stack_put(&pool, &s[0]);
    corio__stack_put(&pool, &s[1]);
    corio__stack_put(&pool, &s[2]); /* over max_cached, but 3 were out at once: kept */
    SMOKE_CHECK(s[2].map == NULL && pool.cache_len == 3 && pool.n_out == 0,
                "cache_len %zu, out %zu", pool.cache_len, pool.n_out);
    struct corio__stack t, u;
    SMOKE_CHECK(corio__stack_get(&pool, &t) == 0 && t.lo == lo2, "LIFO reuse");
    SMOKE_CHECK(corio__stack_get(&pool, &u) == 0 && u.lo == lo1, "LIFO reuse, second");
    SMOKE_CHECK(pool.n_mapped == 3, "mapped %zu", pool.n_mapped);
    corio__stack_put(&pool, &u);
    corio__stack_pool_fini(&pool);
    corio__stack_put(&pool, &t); /* after fini: unmapped, not cached */
    SMOKE_CHECK(t.map == NULL && pool.cache_len == 0 && pool.n_out == 0,
                "late put: cache_len %zu, out %zu", pool.cache_len, pool.n_out);
    SMOKE_CHECK(corio__stack_thread_init() == 0, "thread init");
    SMOKE_CHECK(corio__stack_thread_init() == 0, "thread init, again");
    return NULL;
}

/* Bytes of [lo, hi) that the process has mapped, from /proc/self/maps (which qemu-user
 * emulates too). */
static size_t mapped_bytes(const char *lo, const char *hi)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return (size_t)-1;
    size_t n = 0;
    unsigned long a, b;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%lx-%lx", &a, &b) == 2) {
            uintptr_t x = a > (uintptr_t)lo ? a : (uintptr_t)lo;
            uintptr_t y = b < (uintptr_t)hi ? b : (uintptr_t)hi;
            if (x < y)
                n += y - x;
        }
    fclose(f);
    return n;
}

/* Stacks are carved side by side from chunks of 1, 1, 2, 4... stacks; the pool's end unmaps
 * every cached stack and the rest of the newest chunk. */
static const char *check_pool_chunks(void)
{
    struct corio__stack_pool pool;
    SMOKE_CHECK(corio__stack_pool_init(&pool, 64 * 1024, 0) == 0, "pool init");
    struct corio__stack s[6];
    char *map[6];
    size_t stride = 0;
    for (int i = 0; i < 6; i++) {
        SMOKE_CHECK(corio__stack_get(&pool, &s[i]) == 0, "get %d", i);
        memset(s[i].lo, 0x5a, s[i].size);
        map[i] = s[i].map;
        stride = s[i].map_size;
    }
    SMOKE_CHECK(map[3] == map[2] + stride && map[5] == map[4] + stride,
                "stacks 2 and 3, 4 and 5 side by side");
    SMOKE_CHECK(pool.n_mapped == 6, "made %zu", pool.n_mapped);
    char *chunk = map[4], *chunk_end = chunk + 4 * stride; /* two stacks not carved yet */
    /* The stacks and the rest, not their guards: a guard that is a PROT_NONE mapping merges,
     * under qemu-arm, with the reserve that qemu keeps as its guest's unmapped space, and its
     * /proc/self/maps then leaves it out. */
    for (int i = 4; i < 6; i++)
        SMOKE_CHECK(mapped_bytes(s[i].lo, (char *)s[i].lo + s[i].size) == s[i].size, "stack %d mapped", i);
    SMOKE_CHECK(mapped_bytes(map[5] + stride, chunk_end) == 2 * stride,
                "the newest chunk's rest mapped");
    for (int i = 0; i < 6; i++)
        corio__stack_put(&pool, &s[i]);
    SMOKE_CHECK(pool.cache_len == 6, "cached %zu", pool.cache_len);
    corio__stack_pool_fini(&pool);
    for (int i = 0; i < 6; i++)
        SMOKE_CHECK(mapped_bytes(map[i], map[i] + stride) == 0, "stack %d still mapped", i);
    SMOKE_CHECK(mapped_bytes(chunk, chunk_end) == 0, "the newest chunk's rest still mapped");
    return NULL;
}

/* Death tests: in a child, with stderr captured. */
static int run_child(void (*fn)(void), char *out, size_t cap, int *status)
{
    int pfd[2];
    if (pipe(pfd) != 0)
        return -errno;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        dup2(pfd[1], STDERR_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        fn();
        _exit(0);
    }
    close(pfd[1]);
    size_t len = 0;
    for (;;) {
        ssize_t n = read(pfd[0], out + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == cap - 1)
            break;
    }
    out[len] = '\0';
    close(pfd[0]);
    while (waitpid(pid, status, 0) < 0)
        if (errno != EINTR)
            return -errno;
    return 0;
}

static volatile int overflow_limit = 1 << 30;

static int __attribute__((noinline)) overflow(int n)
{
    volatile char pad[512];
    pad[0] = (char)n;
    if (n >= overflow_limit)
        return pad[0];
    return overflow(n + 1) + pad[0];
}

static void overflow_fn(struct co *c)
{
    (void)c;
    recursion_sink = overflow(0);
}

static void overflow_child(void)
{
    struct corio__stack_pool pool;
    struct co c;
    if (corio__stack_thread_init() != 0 || corio__stack_pool_init(&pool, 64 * 1024, 4) != 0 ||
        co_start(&c, &pool, overflow_fn, NULL) != 0)
        _exit(3);
    co_resume(&c);
    _exit(4); /* not reached */
}

/* The same on a stack carved between two others (chunks of 1, 1, 2, 4: the sixth stack lies
 * right above the fifth), so that its guard is the only thing between them. */
static void overflow_child_chunk(void)
{
    struct corio__stack_pool pool;
    struct corio__stack out[5];
    struct co c;
    if (corio__stack_thread_init() != 0 || corio__stack_pool_init(&pool, 64 * 1024, 4) != 0)
        _exit(3);
    for (int i = 0; i < 5; i++)
        if (corio__stack_get(&pool, &out[i]) != 0)
            _exit(3);
    if (co_start(&c, &pool, overflow_fn, NULL) != 0 ||
        (char *)c.stack.map != (char *)out[4].map + out[4].map_size)
        _exit(7);
    co_resume(&c);
    _exit(4); /* not reached */
}

static void *overflow_thread(void *arg)
{
    overflow_child();
    return arg;
}

static void overflow_child_thread(void)
{
    pthread_t th;
    if (pthread_create(&th, NULL, overflow_thread, NULL) != 0)
        _exit(5);
    pthread_join(th, NULL);
    _exit(6);
}

static const char *check_overflow_common(void (*child)(void))
{
    static char out[8192];
    int status = 0;
    SMOKE_CHECK(run_child(child, out, sizeof(out), &status) == 0, "fork");
    SMOKE_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                "child status %#x (exit %d, signal %d), want SIGABRT; stderr: %s", status,
                WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                WIFSIGNALED(status) ? WTERMSIG(status) : -1, out);
    SMOKE_CHECK(strstr(out, "corio: task stack overflow (stack size 65536 bytes); "
                            "raise corio_config.stack_size\n") != NULL,
                "message missing; stderr: %s", out);
    return NULL;
}

static const char *check_overflow(void)
{
    return check_overflow_common(overflow_child);
}

static const char *check_overflow_in_chunk(void)
{
    return check_overflow_common(overflow_child_chunk);
}

static const char *check_overflow_other_thread(void)
{
    return check_overflow_common(overflow_child_thread);
}

static void segv_child(void)
{
    struct corio__stack_pool pool;
    struct corio__stack st;
    if (corio__stack_thread_init() != 0 || corio__stack_pool_init(&pool, 64 * 1024, 4) != 0 ||
        corio__stack_get(&pool, &st) != 0)
        _exit(3);
    /* Not a guard page, and not NULL either: UBSan would report a NULL store itself. */
    volatile int *volatile bad = (volatile int *)(uintptr_t)64;
    *bad = 1;
    _exit(4);
}

static const char *check_other_segv(void)
{
    static char out[8192];
    int status = 0;
    SMOKE_CHECK(run_child(segv_child, out, sizeof(out), &status) == 0, "fork");
    SMOKE_CHECK(strstr(out, "corio:") == NULL, "reported as an overflow: %s", out);
#if CORIO__ASAN
    /* ASan's own SEGV report, chained from our handler. */
    SMOKE_CHECK(strstr(out, "SEGV") != NULL, "no ASan report: %s", out);
    (void)status;
#else
    SMOKE_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
                "child status %#x, want SIGSEGV; stderr: %s", status, out);
#endif
    return NULL;
}

struct smoke_check {
    const char *name;
    const char *(*fn)(void);
};

static const struct smoke_check smoke_checks[] = {
    { "pingpong", check_pingpong },
    { "callee_saved", check_callee_saved },
    { "fp_values", check_fp_values },
    { "fp_control", check_fp_control },
    { "entry_frame", check_entry_frame },
    { "many", check_many },
    { "deep_recursion", check_deep_recursion },
    { "pool", check_pool },
    { "pool_chunks", check_pool_chunks },
    { "overflow", check_overflow },
    { "overflow_other_thread", check_overflow_other_thread },
    { "overflow_in_chunk", check_overflow_in_chunk },
    { "other_segv", check_other_segv },
};

#ifndef SWITCH_SMOKE_NO_MAIN
int main(void)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof(smoke_checks) / sizeof(smoke_checks[0]); i++) {
        const char *err = smoke_checks[i].fn();
        if (err == NULL) {
            passed++;
        } else {
            failed++;
            printf("FAIL %s: %s\n", smoke_checks[i].name, err);
        }
    }
    printf("switch smoke: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
#endif
