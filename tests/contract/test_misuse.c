/* Misuse and error reporting: a handle that is NULL, closed or closed twice aborts with the
 * library's own message naming the call (checked in a child process whose stderr is read, then
 * once more in the test process for Criterion's .signal); afs_strerror keeps the system's
 * texts; afs_last_ctx_error says why a context was not made. */
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function" /* these tests make their own directories */
#endif
#include "../common.h"

#include <corio.h>
#include <limits.h>
#include <stdatomic.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#if defined(__SANITIZE_ADDRESS__)
#define M_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define M_ASAN 1
#endif
#endif

/* Under AddressSanitizer a use after free is reported by the sanitizer before the library's
 * check can run (the library relies on it for memory already reused). */
static void m_need_ctx(void);

static void m_need_no_asan(void)
{
#ifdef M_ASAN
    cr_skip_test("AddressSanitizer reports a use after free first");
#endif
    m_need_ctx();
}

/* Each scenario makes its own directory and file, removes both, then misuses the handle:
 * nothing is left behind when it aborts. Scenarios run in a forked child first, where
 * Criterion's calls must not be made: a step that fails there exits with M_SETUP_FAILED. */
enum { M_SETUP_FAILED = 3 };
static char m_dir[PATH_MAX], m_file[PATH_MAX + 8];

#define M_REQ(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "misuse test: %s:%d: %s failed\n", __FILE__, __LINE__, #cond);     \
            m_cleanup();                                                                       \
            _exit(M_SETUP_FAILED);                                                             \
        }                                                                                      \
    } while (0)

static void m_cleanup(void)
{
    if (m_file[0])
        unlink(m_file);
    if (m_dir[0])
        rmdir(m_dir);
    m_file[0] = m_dir[0] = '\0';
}

static const char *m_base(void)
{
    const char *base = getenv("AFS_TEST_TMPDIR");
    if (!base)
        base = getenv("TMPDIR");
    return base ? base : "/var/tmp";
}

static struct afs_ctx *m_begin(void)
{
    snprintf(m_dir, sizeof m_dir, "%s/afs-misuse-XXXXXX", m_base());
    if (!mkdtemp(m_dir)) {
        m_dir[0] = '\0';
        M_REQ(!"mkdtemp");
    }
    snprintf(m_file, sizeof m_file, "%s/f", m_dir);
    int fd = open(m_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    M_REQ(fd >= 0);
    char buf[8192];
    memset(buf, 'x', sizeof buf);
    M_REQ(write(fd, buf, sizeof buf) == (ssize_t)sizeof buf);
    close(fd);
    struct afs_ctx *c = NULL;
    M_REQ(afs_ctx_new(&c, NULL) == 0);
    return c;
}

/* Skips the test where the backend under test cannot make a context (checked before any
 * fork, with Criterion's own calls). */
static void m_need_ctx(void)
{
    struct afs_ctx *c = NULL;
    int err = afs_ctx_new(&c, NULL);
    if (err == -ENOTSUP)
        cr_skip_test("backend %s not available here", getenv("ASYNCFS_BACKEND"));
    cr_assert_eq(err, 0, "afs_ctx_new: %s", afs_strerror(err));
    afs_ctx_free(c);
}

/* Runs fn in a child process and checks that it aborted with "asyncfs: <call>: " and `what`
 * on stderr, which tells the library's check from glibc's "double free" or a crash. */
static void expect_abort(void (*fn)(void), const char *call, const char *what)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        signal(SIGABRT, SIG_DFL);
        fn();
        _exit(0); /* no abort: the parent reports it */
    }
    close(p[1]);
    char out[8192];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof out - 1 && ((r = read(p[0], out + n, sizeof out - 1 - n)) > 0 ||
                                  (r < 0 && errno == EINTR)))
        n += r > 0 ? (size_t)r : 0;
    out[n] = '\0';
    close(p[0]);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(!WIFEXITED(st) || WEXITSTATUS(st) != M_SETUP_FAILED, "%s: setup failed: %s", call,
              out);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
              "%s: expected an abort, status %#x, stderr: %s", call, st, out);
    char want[128];
    snprintf(want, sizeof want, "asyncfs: %s: ", call);
    cr_assert_not_null(strstr(out, want), "%s: the library's message, got: %s", call, out);
    cr_assert_not_null(strstr(out, what), "%s: message says \"%s\", got: %s", call, what, out);
}

#define T_ABORT(name) Test(misuse, name, .signal = SIGABRT, .timeout = 30)
/* A use of a freed handle: under AddressSanitizer the test skips (m_need_no_asan), so it
 * expects no signal there. */
#ifdef M_ASAN
#define T_ABORT_UAF(name) Test(misuse, name, .timeout = 30)
#else
#define T_ABORT_UAF(name) T_ABORT(name)
#endif

/* ---- Files ---- */

static void file_double_close(void)
{
    struct afs_ctx *c = m_begin();
    struct afs_file *f;
    M_REQ(afs_open(c, m_file, AFS_RDONLY, 0, AFS_MODE_SYNC, &f) == 0);
    m_cleanup();
    M_REQ(afs_close(f) == 0);
    afs_close(f);
}

T_ABORT_UAF(file_closed_twice)
{
    m_need_no_asan();
    expect_abort(file_double_close, "afs_close", "closed");
    file_double_close();
}

/* corio's buffered streams check their handle as files do. */
static void cstream_double_close(void)
{
    struct afs_ctx *c = m_begin();
    struct afs_file *f;
    struct corio_stream *s;
    M_REQ(afs_open(c, m_file, AFS_RDONLY, 0, AFS_MODE_SYNC, &f) == 0);
    m_cleanup();
    M_REQ(corio_stream_new(f, 0, &s) == 0);
    M_REQ(corio_stream_close(s) == 0);
    corio_stream_close(s);
}

T_ABORT_UAF(corio_stream_closed_twice)
{
    m_need_no_asan();
    expect_abort(cstream_double_close, "corio_stream_close", "closed");
    cstream_double_close();
}

static int log_use_getter; /* what uses the closed log: an append, or a getter */

static void log_after_close_root(struct corio_task *t, void *arg)
{
    struct afs_file *f = arg;
    struct corio_log *log;
    uint64_t off;
    M_REQ(corio_log_open(t, f, 0, &log) == 0);
    M_REQ(corio_log_append(t, log, "x", 1, &off) == 0);
    M_REQ(corio_log_close(t, log) == 0);
    if (log_use_getter)
        corio_log_durable(log);
    else
        corio_log_append(t, log, "y", 1, &off);
}

static void log_after_close(void)
{
    struct afs_ctx *c = m_begin();
    struct afs_file *f;
    M_REQ(afs_open(c, m_file, AFS_RDWR, 0, AFS_MODE_SYNC, &f) == 0);
    m_cleanup();
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = c;
    struct corio_sched *s;
    M_REQ(corio_sched_new(&s, &cfg) == 0);
    corio_sched_run(s, log_after_close_root, f);
}

T_ABORT_UAF(corio_log_used_after_close)
{
    m_need_no_asan();
    expect_abort(log_after_close, "corio_log_append", "closed");
    log_after_close();
}

static void cstream_on_closed_file(void)
{
    struct afs_ctx *c = m_begin();
    struct afs_file *f;
    struct corio_stream *s;
    M_REQ(afs_open(c, m_file, AFS_RDONLY, 0, AFS_MODE_SYNC, &f) == 0);
    m_cleanup();
    M_REQ(afs_close(f) == 0);
    corio_stream_new(f, 0, &s);
}

T_ABORT_UAF(corio_stream_on_a_closed_file)
{
    m_need_no_asan();
    expect_abort(cstream_on_closed_file, "corio_stream_new", "closed");
    cstream_on_closed_file();
}

/* The descriptor a closed file had is another file's now: a late read must not reach it. */
static void file_read_after_close(void)
{
    struct afs_ctx *c = m_begin();
    struct afs_file *f;
    M_REQ(afs_open(c, m_file, AFS_RDONLY, 0, AFS_MODE_SYNC, &f) == 0);
    int old_fd = (int)afs_file_fd(f);
    M_REQ(afs_close(f) == 0);
    int other = open(m_file, O_RDONLY);
    M_REQ(other == old_fd); /* the descriptor is reused */
    m_cleanup();
    char buf[16];
    afs_pread(f, buf, sizeof buf, 0);
}

T_ABORT_UAF(file_used_after_close)
{
    m_need_no_asan();
    expect_abort(file_read_after_close, "afs_pread", "closed");
    file_read_after_close();
}

static void file_seek_after_close(void)
{
    struct afs_ctx *c = m_begin();
    struct afs_file *f;
    M_REQ(afs_open(c, m_file, AFS_RDONLY, 0, AFS_MODE_SYNC, &f) == 0);
    m_cleanup();
    M_REQ(afs_close(f) == 0);
    afs_seek(f, 0, SEEK_SET);
}

T_ABORT_UAF(file_position_call_after_close)
{
    m_need_no_asan();
    expect_abort(file_seek_after_close, "afs_seek", "closed");
    file_seek_after_close();
}

/* ---- Streams ---- */

static void stream_double_close(void)
{
    struct afs_ctx *c = m_begin();
    struct afs_stream *s;
    M_REQ(afs_fopen(c, m_file, "r", &s) == 0);
    m_cleanup();
    M_REQ(afs_fclose(s) == 0);
    afs_fclose(s);
}

/* A stream's own file closed with afs_close: caught there, not at the stream's next use. */
static void stream_file_closed(void)
{
    struct afs_ctx *c = m_begin();
    struct afs_stream *s;
    M_REQ(afs_fopen(c, m_file, "r", &s) == 0);
    m_cleanup();
    afs_close(afs_stream_file(s));
}

T_ABORT(stream_file_closed_with_afs_close)
{
    expect_abort(stream_file_closed, "afs_close", "afs_fclose closes it");
    stream_file_closed();
}

T_ABORT_UAF(stream_closed_twice)
{
    m_need_no_asan();
    expect_abort(stream_double_close, "afs_fclose", "closed");
    stream_double_close();
}

static void stream_read_after_close(void)
{
    struct afs_ctx *c = m_begin();
    struct afs_stream *s;
    M_REQ(afs_fopen(c, m_file, "r", &s) == 0);
    m_cleanup();
    char buf[16];
    M_REQ(afs_fread(buf, 1, sizeof buf, s) == sizeof buf);
    M_REQ(afs_fclose(s) == 0);
    afs_fread(buf, 1, sizeof buf, s);
}

T_ABORT_UAF(stream_used_after_close)
{
    m_need_no_asan();
    expect_abort(stream_read_after_close, "afs_fread", "closed");
    stream_read_after_close();
}

/* ---- Contexts ---- */

static void ctx_double_free(void)
{
    struct afs_ctx *c = m_begin();
    m_cleanup();
    afs_ctx_free(c);
    afs_ctx_free(c);
}

T_ABORT_UAF(ctx_freed_twice)
{
    m_need_no_asan();
    expect_abort(ctx_double_free, "afs_ctx_free", "freed");
    ctx_double_free();
}

/* A freed context still "worked": an open on it returned 0. */
static void ctx_open_after_free(void)
{
    struct afs_ctx *c = m_begin();
    afs_ctx_free(c);
    char path[sizeof m_file];
    snprintf(path, sizeof path, "%s", m_file);
    m_cleanup(); /* the abort skips what comes after it */
    struct afs_file *f;
    int err = afs_open(c, path, AFS_RDONLY | AFS_CREAT, 0600, AFS_MODE_SYNC, &f);
    fprintf(stderr, "afs_open on a freed context returned %d\n", err);
}

T_ABORT_UAF(ctx_used_after_free)
{
    m_need_no_asan();
    expect_abort(ctx_open_after_free, "afs_open", "freed");
    ctx_open_after_free();
}

static void ctx_bogus(void)
{
    static uintptr_t junk[512] = {1, 2, 3, 4, 5, 6, 7, 8};
    afs_ctx_wait((struct afs_ctx *)junk, 0, 0);
}

T_ABORT(memory_that_is_no_context_aborts)
{
    expect_abort(ctx_bogus, "afs_ctx_wait", "not a context");
    ctx_bogus();
}

/* A close that would wait for ops a chain still holds names itself, not afs_ctx_wait. */
static void close_in_a_chain(void)
{
    struct afs_ctx *c = m_begin();
    struct afs_file *f;
    M_REQ(afs_open(c, m_file, AFS_RDONLY, 0, AFS_MODE_ASYNC, &f) == 0);
    m_cleanup();
    static char buf[16];
    static struct afs_op op;
    M_REQ(afs_chain_begin(c) == 0);
    M_REQ(afs_queue_read(&op, f, buf, sizeof buf, 0, NULL, NULL) == 0);
    afs_close(f);
}

T_ABORT(close_with_a_chain_open_names_afs_close)
{
    expect_abort(close_in_a_chain, "afs_close", "a chain is open");
    close_in_a_chain();
}

/* ---- corio's schedulers, runtimes and channels ---- */

static void m_noop_root(struct corio_task *t, void *arg)
{
    (void)t;
    (void)arg;
}

static void sched_run_after_free(void)
{
    struct corio_sched *s;
    M_REQ(corio_sched_new(&s, NULL) == 0);
    corio_sched_free(s);
    m_cleanup();
    corio_sched_run(s, m_noop_root, NULL);
}

static void sched_ctx_after_free(void)
{
    struct corio_sched *s;
    M_REQ(corio_sched_new(&s, NULL) == 0);
    corio_sched_free(s);
    m_cleanup();
    corio_sched_ctx(s);
}

static void sched_stats_after_free(void)
{
    struct corio_sched *s;
    struct corio_stats st;
    M_REQ(corio_sched_new(&s, NULL) == 0);
    corio_sched_free(s);
    m_cleanup();
    corio_sched_stats(s, &st);
}

static void sched_index_after_free(void)
{
    struct corio_sched *s;
    M_REQ(corio_sched_new(&s, NULL) == 0);
    corio_sched_free(s);
    m_cleanup();
    corio_sched_index(s);
}

T_ABORT_UAF(corio_sched_used_after_free)
{
    m_need_no_asan();
    expect_abort(sched_ctx_after_free, "corio_sched_ctx", "freed");
    expect_abort(sched_stats_after_free, "corio_sched_stats", "freed");
    expect_abort(sched_index_after_free, "corio_sched_index", "freed");
    expect_abort(sched_run_after_free, "corio_sched_run", "freed");
    sched_run_after_free();
}

static void sched_double_free(void)
{
    struct corio_sched *s;
    M_REQ(corio_sched_new(&s, NULL) == 0);
    corio_sched_free(s);
    m_cleanup();
    corio_sched_free(s);
}

T_ABORT_UAF(corio_sched_freed_twice)
{
    m_need_no_asan();
    expect_abort(sched_double_free, "corio_sched_free", "freed");
    sched_double_free();
}

static struct corio_rt *m_rt_freed(void)
{
    struct corio_rt_config cfg;
    corio_rt_config_default(&cfg);
    cfg.schedulers = 2;
    struct corio_rt *rt;
    M_REQ(corio_rt_new(&rt, &cfg) == 0);
    corio_rt_free(rt);
    m_cleanup();
    return rt;
}

static void rt_run_after_free(void) { corio_rt_run(m_rt_freed(), m_noop_root, NULL); }
static void rt_schedulers_after_free(void) { corio_rt_schedulers(m_rt_freed()); }
static void rt_stats_after_free(void)
{
    struct corio_rt_stats st;
    corio_rt_stats(m_rt_freed(), 0, &st, NULL);
}

T_ABORT_UAF(corio_rt_used_after_free)
{
    m_need_no_asan();
    expect_abort(rt_schedulers_after_free, "corio_rt_schedulers", "freed");
    expect_abort(rt_stats_after_free, "corio_rt_stats", "freed");
    expect_abort(rt_run_after_free, "corio_rt_run", "freed");
    rt_run_after_free();
}

static void rt_double_free(void) { corio_rt_free(m_rt_freed()); }

T_ABORT_UAF(corio_rt_freed_twice)
{
    m_need_no_asan();
    expect_abort(rt_double_free, "corio_rt_free", "freed");
    rt_double_free();
}

/* The channel is made and freed inside the task: nothing is allocated between the free and
 * the misuse, so the freed memory still has its mark. */
static struct corio_chan *m_chan_freed(void)
{
    struct corio_chan *c;
    M_REQ(corio_chan_new(&c, 1, sizeof(int)) == 0);
    corio_chan_free(c);
    m_cleanup();
    return c;
}

static void chan_send_root(struct corio_task *t, void *arg)
{
    (void)arg;
    int v = 1;
    corio_chan_send(t, m_chan_freed(), &v);
}

static void chan_recv_root(struct corio_task *t, void *arg)
{
    (void)arg;
    int v;
    corio_chan_recv(t, m_chan_freed(), &v);
}

static void m_run_task(corio_fn *fn)
{
    struct corio_sched *s;
    M_REQ(corio_sched_new(&s, NULL) == 0);
    corio_sched_run(s, fn, NULL);
}

static void chan_send_after_free(void) { m_run_task(chan_send_root); }
static void chan_recv_after_free(void) { m_run_task(chan_recv_root); }
static void chan_try_send_after_free(void)
{
    int v = 1;
    corio_chan_try_send(m_chan_freed(), &v);
}
static void chan_try_recv_after_free(void)
{
    int v;
    corio_chan_try_recv(m_chan_freed(), &v);
}
static void chan_close_after_free(void) { corio_chan_close(m_chan_freed()); }
static void chan_len_after_free(void) { corio_chan_len(m_chan_freed()); }

T_ABORT_UAF(corio_chan_used_after_free)
{
    m_need_no_asan();
    expect_abort(chan_send_after_free, "corio_chan_send", "freed");
    expect_abort(chan_recv_after_free, "corio_chan_recv", "freed");
    expect_abort(chan_try_recv_after_free, "corio_chan_try_recv", "freed");
    expect_abort(chan_close_after_free, "corio_chan_close", "freed");
    expect_abort(chan_len_after_free, "corio_chan_len", "freed");
    expect_abort(chan_try_send_after_free, "corio_chan_try_send", "freed");
    chan_try_send_after_free();
}

static void chan_double_free(void) { corio_chan_free(m_chan_freed()); }

T_ABORT_UAF(corio_chan_freed_twice)
{
    m_need_no_asan();
    expect_abort(chan_double_free, "corio_chan_free", "freed");
    chan_double_free();
}

/* Memory that never was a scheduler, runtime or channel: all zeros, so a channel call on it
 * without the check would lock the zeroed mutex and go on. */
static uintptr_t m_junk[1024];

static void junk_chan(void)
{
    int v = 1;
    corio_chan_try_send((struct corio_chan *)m_junk, &v);
}
static void junk_sched(void) { corio_sched_ctx((struct corio_sched *)m_junk); }
static void junk_rt(void) { corio_rt_schedulers((struct corio_rt *)m_junk); }

T_ABORT(memory_that_is_no_corio_handle_aborts)
{
    expect_abort(junk_sched, "corio_sched_ctx", "not a scheduler");
    expect_abort(junk_rt, "corio_rt_schedulers", "not a runtime");
    expect_abort(junk_chan, "corio_chan_try_send", "not a channel");
    junk_chan();
}

/* ---- corio: objects given again while in use, and one scheduler's objects used by another ---- */

static int m_slow_job(void *arg)
{
    (void)arg;
    usleep(100 * 1000);
    return 4;
}

static void go_busy_root(struct corio_task *t, void *arg)
{
    (void)arg;
    static struct corio_blocking b;
    M_REQ(corio_go(t, &b, m_slow_job, NULL) == 0);
    corio_go(t, &b, m_slow_job, NULL); /* still running */
}

static void go_busy(void)
{
    m_cleanup();
    corio_run(go_busy_root, NULL);
}

T_ABORT(corio_go_on_a_job_in_flight_aborts)
{
    m_need_ctx();
    expect_abort(go_busy, "corio_go", "still queued or running");
    go_busy();
}

static int m_quick_job(void *arg)
{
    (void)arg;
    return 4;
}

/* The job has ended on its thread, but its result still waits in the scheduler's inbox: the
 * task holds the thread (no resume phase runs) until the pool is done with it. */
static void go_undelivered_root(struct corio_task *t, void *arg)
{
    (void)arg;
    static struct corio_blocking b;
    M_REQ(corio_go(t, &b, m_quick_job, NULL) == 0);
    usleep(200 * 1000);
    corio_go(t, &b, m_quick_job, NULL); /* its result not taken yet */
}

static void go_undelivered(void)
{
    m_cleanup();
    corio_run(go_undelivered_root, NULL);
}

T_ABORT(corio_go_on_a_job_whose_result_is_not_taken_yet_aborts)
{
    m_need_ctx();
    expect_abort(go_undelivered, "corio_go", "still queued or running");
    go_undelivered();
}

static int m_job_run(struct corio_task *t, struct corio_job_task *jt)
{
    (void)t;
    (void)jt;
    return CORIO_JOB_DONE;
}

static void job_added_twice(void)
{
    static struct corio_job j;
    static struct corio_job_task x = {.run = m_job_run};
    corio_job_init(&j);
    corio_job_add(&j, &x);
    corio_job_add(&j, &x);
}

T_ABORT(corio_job_task_added_twice_aborts)
{
    expect_abort(job_added_twice, "corio_job_add", "in the job already");
    job_added_twice();
}

static int m_self_next(struct corio_task *t, struct corio_gen *g, void *arg)
{
    (void)arg;
    void *v;
    corio_gen_next(t, g, &v);
    return 0;
}

static void gen_next_by_producer_root(struct corio_task *t, void *arg)
{
    (void)arg;
    static struct corio_gen g;
    corio_gen_start(t, &g, m_self_next, NULL);
}

static void gen_next_by_producer(void)
{
    m_cleanup();
    corio_run(gen_next_by_producer_root, NULL);
}

T_ABORT(corio_gen_next_by_its_producer_aborts)
{
    m_need_ctx();
    expect_abort(gen_next_by_producer, "corio_gen_next", "producer");
    gen_next_by_producer();
}

static struct corio_mutex m_mu = CORIO_MUTEX_INIT;
static struct corio_queue m_q;

static int lock_elsewhere(struct corio_task *t, void *arg)
{
    (void)arg;
    return corio_mutex_lock(t, &m_mu);
}

static void mutex_across_root(struct corio_task *t, void *arg)
{
    (void)arg;
    struct corio_future fut;
    M_REQ(corio_mutex_lock(t, &m_mu) == 0);
    M_REQ(corio_spawn_on(t, 1, lock_elsewhere, NULL, &fut) == 0);
    corio_future_await(t, &fut, NULL);
}

static int get_elsewhere(struct corio_task *t, void *arg)
{
    (void)arg;
    void *v;
    return corio_queue_get(t, &m_q, &v);
}

static void queue_across_root(struct corio_task *t, void *arg)
{
    (void)arg;
    struct corio_future fut;
    M_REQ(corio_spawn_on(t, 1, get_elsewhere, NULL, &fut) == 0);
    while (corio_queue_len(&m_q) == 0 && corio_sleep(t, 20 * 1000 * 1000) == 0) {
        /* the getter waits on scheduler 1: this put would wake it from here */
        corio_queue_put(t, &m_q, &m_q);
    }
}

static void run_on_two(corio_fn *root)
{
    m_cleanup();
    corio_queue_init(&m_q, 0);
    struct corio_rt_config cfg;
    corio_rt_config_default(&cfg);
    cfg.schedulers = 2;
    struct corio_rt *rt;
    M_REQ(corio_rt_new(&rt, &cfg) == 0);
    corio_rt_run(rt, root, NULL);
}

static void mutex_across(void) { run_on_two(mutex_across_root); }
static void queue_across(void) { run_on_two(queue_across_root); }

T_ABORT(one_schedulers_mutex_and_queue_used_from_another_abort)
{
    m_need_ctx();
    expect_abort(mutex_across, "corio_mutex_lock", "another scheduler");
    expect_abort(queue_across, "corio", "woken from another thread");
    mutex_across();
}

static _Atomic(struct corio_task *) m_victim;

static void victim_sleeps(struct corio_task *t, void *arg)
{
    (void)arg;
    atomic_store(&m_victim, t);
    corio_sleep(t, 2000LL * 1000 * 1000);
}

static int cancel_elsewhere(struct corio_task *t, void *arg)
{
    struct corio_task *v;
    while (!(v = atomic_load(&m_victim)))
        corio_sleep(t, 1000 * 1000);
    if (arg)
        corio_set_deadline(v, corio_now() + 1000);
    else
        corio_cancel(v);
    return 0;
}

static void cancel_across_root(struct corio_task *t, void *arg)
{
    struct corio_future fut;
    M_REQ(corio_spawn(t, victim_sleeps, NULL, NULL) == 0);
    M_REQ(corio_spawn_on(t, 1, cancel_elsewhere, arg, &fut) == 0);
    corio_future_await(t, &fut, NULL);
}

static void deadline_across_root(struct corio_task *t, void *arg)
{
    (void)arg;
    cancel_across_root(t, &m_victim);
}

static void cancel_across(void) { atomic_store(&m_victim, NULL); run_on_two(cancel_across_root); }
static void deadline_across(void) { atomic_store(&m_victim, NULL); run_on_two(deadline_across_root); }

T_ABORT(another_schedulers_task_cancelled_or_given_a_deadline_aborts)
{
    m_need_ctx();
    expect_abort(cancel_across, "corio_cancel", "another scheduler's thread");
    expect_abort(deadline_across, "corio_set_deadline", "another scheduler's thread");
    cancel_across();
}

static void stream_write_in_a_chain(void)
{
    struct afs_ctx *c = m_begin();
    struct afs_stream *s;
    M_REQ(afs_fopen(c, m_file, "w", &s) == 0);
    m_cleanup();
    M_REQ(afs_chain_begin(c) == 0);
    static char big[4 << 20];
    afs_fwrite(big, 1, sizeof big, s);
}

T_ABORT(stream_write_while_a_chain_is_open_names_the_call)
{
    m_need_ctx();
    expect_abort(stream_write_in_a_chain, "afs_fwrite", "a chain is open");
    stream_write_in_a_chain();
}

/* After a failed write, afs_clearerr waits for the stream's writes to settle: with a chain
 * open that is refused under its own name, whether or not a write is still in flight. */
static void stream_clearerr_in_a_chain(void)
{
    struct afs_ctx *c = m_begin();
    struct afs_stream *s;
    M_REQ(afs_fopen(c, m_file, "w", &s) == 0);
    m_cleanup();
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {64 * 1024, RLIM_INFINITY};
    M_REQ(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    static char big[1 << 20];
    afs_fwrite(big, 1, sizeof big, s);
    M_REQ(afs_fflush(s) == -EFBIG);
    M_REQ(afs_chain_begin(c) == 0);
    afs_clearerr(s);
}

T_ABORT(stream_clearerr_after_a_write_error_while_a_chain_is_open_names_the_call)
{
    m_need_ctx();
    expect_abort(stream_clearerr_in_a_chain, "afs_clearerr", "a chain is open");
    stream_clearerr_in_a_chain();
}

static void log_getter_after_close(void)
{
    log_use_getter = 1;
    log_after_close();
}

T_ABORT_UAF(corio_log_getter_after_close)
{
    m_need_no_asan();
    expect_abort(log_getter_after_close, "corio_log_durable", "closed");
    log_getter_after_close();
}

/* ---- NULL: one rule for every handle ---- */

static void null_pread(void)
{
    char buf[4];
    afs_pread(NULL, buf, sizeof buf, 0);
}
static void null_close(void) { afs_close(NULL); }
static void null_fclose(void) { afs_fclose(NULL); }
static void null_fread(void)
{
    char buf[4];
    afs_fread(buf, 1, sizeof buf, NULL);
}
static void null_queue_read(void)
{
    struct afs_op op = {0};
    char buf[4];
    afs_queue_read(&op, NULL, buf, sizeof buf, 0, (afs_cb *)abort, NULL);
}
static void null_ctx(void) { afs_ctx_wait(NULL, 1, 0); }
static void null_log(void) { corio_log_error(NULL); }
static void null_batch(void) { corio_batch_len(NULL); }

T_ABORT(null_handles_abort_naming_the_call)
{
    expect_abort(null_pread, "afs_pread", "file is NULL");
    expect_abort(null_close, "afs_close", "file is NULL");
    expect_abort(null_fclose, "afs_fclose", "stream is NULL");
    expect_abort(null_fread, "afs_fread", "stream is NULL");
    expect_abort(null_queue_read, "afs_queue_read", "file is NULL");
    expect_abort(null_ctx, "afs_ctx_wait", "ctx is NULL");
    expect_abort(null_log, "corio_log_error", "log is NULL");
    expect_abort(null_batch, "corio_batch_len", "batch is NULL");
    null_close();
}

/* ---- Error texts and reasons ---- */

Test(misuse, strerror_keeps_the_system_texts, .timeout = 10)
{
    int errs[] = {EBUSY, ENOTSUP, EOPNOTSUPP, EALREADY, ECANCELED, EDEADLK, EINVAL, ENOENT, EIO};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        char sys[256];
        snprintf(sys, sizeof sys, "%s", strerror(errs[i]));
        cr_assert_str_eq(afs_strerror(-errs[i]), sys, "errno %d", errs[i]);
        cr_assert_str_eq(afs_strerror(errs[i]), sys, "errno %d", errs[i]);
    }
    cr_assert_str_eq(afs_strerror(0), "Success");
    /* Values that are no errno value, the most negative int among them (no -x for it). */
    cr_assert_str_eq(afs_strerror(INT_MIN), "Unknown error -2147483648");
    cr_assert(strncmp(afs_strerror(-99999), "Unknown error", 13) == 0, "%s", afs_strerror(-99999));
}

Test(misuse, ctx_error_names_the_variable_and_the_reason, .timeout = 10)
{
    struct afs_ctx *c = NULL;
    setenv("ASYNCFS_BACKEND", "bogus", 1);
    cr_assert_eq(afs_ctx_new(&c, NULL), -EINVAL);
    const char *why = afs_last_ctx_error();
    cr_assert(why && strstr(why, "ASYNCFS_BACKEND=bogus") && strstr(why, "unknown backend"),
              "reason: %s", why ? why : "(null)");
    unsetenv("ASYNCFS_BACKEND");
    /* A backend that is not built here (one of them never is). */
    struct afs_config cfg;
    afs_config_default(&cfg);
#ifdef _WIN32
    cfg.backend = AFS_BACKEND_IO_URING;
#else
    cfg.backend = AFS_BACKEND_IOCP;
#endif
    cr_assert_eq(afs_ctx_new(&c, &cfg), -ENOTSUP);
    why = afs_last_ctx_error();
    cr_assert(why && strstr(why, "not built on this platform"), "reason: %s",
              why ? why : "(null)");
    afs_config_default(&cfg);
    cfg.queue_depth = 0;
    cr_assert_eq(afs_ctx_new(&c, &cfg), -EINVAL);
    why = afs_last_ctx_error();
    cr_assert(why && strstr(why, "queue_depth"), "reason: %s", why ? why : "(null)");
    /* A success clears it. */
    cfg.queue_depth = 8;
    cfg.backend = AFS_BACKEND_SYNC;
    cr_assert_eq(afs_ctx_new(&c, &cfg), 0);
    cr_assert_null(afs_last_ctx_error());
    afs_ctx_free(c);
}
