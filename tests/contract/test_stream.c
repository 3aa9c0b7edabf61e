/* Streams (afs_fopen...): stdio semantics, read-ahead and write-behind, errors that are not
 * lost, and streams inside corio tasks. */
#include "../common.h"

#include <corio.h>
#include <signal.h>
#include <stdatomic.h>
#ifndef _WIN32
#include <sys/resource.h>
#endif

#define KIB 1024
#define AFS_TEST_MIN(a, b) ((a) < (b) ? (a) : (b))

/* A stream with small chunks, so that a few hundred KiB cross many of them. */
static struct afs_stream *s_open(const char *name, const char *mode, size_t chunk,
                                 unsigned chunks)
{
    struct afs_stream_options o;
    afs_stream_options_default(&o);
    o.chunk_size = chunk;
    o.chunks = chunks;
    struct afs_stream *s = NULL;
    /* The path on this stack: in a task the open suspends until the batch ran, and t_path()'s
     * few shared buffers would be reused by the other tasks meanwhile. */
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", t_path(name));
    int err = afs_fopen_opts(t_ctx, path, mode, &o, &s);
    cr_assert_eq(err, 0, "afs_fopen_opts(%s, %s): %s", name, mode, afs_strerror(err));
    return s;
}

/* A stream reading name with direct I/O (AFS_STREAM_DIRECT); the test is skipped where the
 * file system has no O_DIRECT. */
static struct afs_stream *direct_open(const char *name, size_t chunk, unsigned chunks)
{
    struct afs_stream_options o;
    afs_stream_options_default(&o);
    o.chunk_size = chunk;
    o.chunks = chunks ? chunks : o.chunks;
    o.flags = AFS_STREAM_DIRECT;
    struct afs_stream *s = NULL;
    int err = afs_fopen_opts(t_ctx, t_path(name), "r", &o, &s);
    if (err == -EINVAL)
        cr_skip_test("no O_DIRECT on this file system");
    cr_assert_eq(err, 0, "%s", afs_strerror(err));
    return s;
}

/* The file's bytes, read with plain POSIX calls. */
static unsigned char *slurp(const char *name, size_t *len)
{
    int fd = open(t_path(name), O_RDONLY);
    cr_assert(fd >= 0, "open %s: %s", name, strerror(errno));
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    unsigned char *p = malloc((size_t)st.st_size + 1);
    cr_assert_not_null(p);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, p + got, (size_t)st.st_size - got);
        cr_assert_gt(n, 0);
        got += (size_t)n;
    }
    close(fd);
    *len = got;
    return p;
}

T_IO(sequential_read_of_many_chunks)
{
    t_new_ctx();
    /* Default options: 1 MiB chunks, 4 ahead; the file is 6.5 chunks. */
    const size_t len = 6 * 1024 * KIB + 512 * KIB + 77;
    t_make_file(t_path("f"), len);
    struct afs_stream *s = NULL;
    cr_assert_eq(afs_fopen(t_ctx, t_path("f"), "rb", &s), 0);
    unsigned char *buf = malloc(100000);
    size_t off = 0;
    for (;;) {
        size_t n = afs_fread(buf, 1, 100000, s);
        cr_assert(t_check(buf, n, off), "bad data at %zu", off);
        off += n;
        if (n < 100000)
            break;
    }
    cr_assert_eq(off, len);
    cr_assert(afs_feof(s));
    cr_assert_eq(afs_ferror(s), 0);
    cr_assert_eq(afs_ftell(s), (int64_t)len);
    struct afs_stats st;
    afs_ctx_stats(t_ctx, &st);
    cr_assert_leq(st.ops, 8, "one read per chunk, got %llu", (unsigned long long)st.ops);
    free(buf);
    cr_assert_eq(afs_fclose(s), 0);
}

T_IO(small_freads_cross_chunk_boundaries)
{
    t_new_ctx();
    const size_t len = 200 * KIB + 3;
    t_make_file(t_path("f"), len);
    struct afs_stream *s = s_open("f", "r", 4 * KIB, 3);
    unsigned char buf[64];
    size_t off = 0, step = 1;
    while (off < len) {
        size_t want = step % 61 + 1, n = afs_fread(buf, 1, want, s);
        cr_assert_eq(n, AFS_TEST_MIN(want, len - off), "at %zu", off);
        cr_assert(t_check(buf, n, off), "bad data at %zu", off);
        off += n;
        step = step * 7 + 3;
    }
    cr_assert_eq(afs_fread(buf, 1, 1, s), 0);
    cr_assert(afs_feof(s));
    cr_assert_eq(afs_fclose(s), 0);
}

T_IO(eof_and_partial_items)
{
    t_new_ctx();
    t_make_file(t_path("f"), 1000);
    struct afs_stream *s = s_open("f", "r", 4 * KIB, 2);
    unsigned char buf[1200];
    cr_assert_eq(afs_fread(buf, 300, 4, s), 3, "3 whole items of 300, then 100 bytes");
    cr_assert(t_check(buf, 1000, 0), "the partial item's bytes are there too");
    cr_assert(afs_feof(s));
    cr_assert_eq(afs_ftell(s), 1000, "the partial item is consumed");
    cr_assert_eq(afs_fread(buf, 1, 1, s), 0, "EOF is sticky");
    afs_clearerr(s);
    cr_assert_not(afs_feof(s));
    cr_assert_eq(afs_fread(buf, 1, 1, s), 0);
    cr_assert(afs_feof(s));
    /* Data appended by someone else is seen after clearerr. */
    int fd = open(t_path("f"), O_WRONLY | O_APPEND);
    cr_assert_eq(write(fd, "xyz", 3), 3);
    close(fd);
    cr_assert_eq(afs_fread(buf, 1, 3, s), 0, "still EOF until clearerr");
    afs_clearerr(s);
    cr_assert_eq(afs_fread(buf, 1, 10, s), 3);
    cr_assert_eq(memcmp(buf, "xyz", 3), 0);
    cr_assert_eq(afs_fread(buf, 0, 10, s), 0, "size 0");
    cr_assert_eq(afs_fread(buf, SIZE_MAX / 2, 3, s), 0, "size * nmemb overflows");
    cr_assert_eq(afs_ferror(s), -EINVAL);
    cr_assert_eq(afs_fclose(s), -EINVAL, "fclose reports the error kept");
}

/* Data appended by another writer while the stream is inside the file, before any read met
 * its end, is read on, as stdio reads again at the end of its buffer (small files, read
 * whole by the first read, and a file of a few chunks; default and small chunks). */
T_IO(a_file_that_grows_before_its_end_is_read_reads_on)
{
    t_new_ctx();
    static const size_t lens[] = {11, 5000, 70000, 300 * KIB + 5};
    unsigned char buf[512 * KIB];
    for (int k = 0; k < 8; k++) {
        size_t len = lens[k % 4];
        t_make_file(t_path("f"), len);
        struct afs_stream *s;
        if (k < 4)
            cr_assert_eq(afs_fopen(t_ctx, t_path("f"), "r", &s), 0);
        else
            s = s_open("f", "r", 64 * KIB, 2);
        cr_assert_eq(afs_fread(buf, 1, 2, s), 2);
        int fd = open(t_path("f"), O_WRONLY | O_APPEND);
        cr_assert_eq(write(fd, "xyz", 3), 3);
        close(fd);
        size_t n = afs_fread(buf, 1, sizeof buf, s);
        cr_assert_eq(n, len + 1, "file of %zu bytes (case %d): %zu read after 2", len, k, n);
        cr_assert(t_check(buf, len - 2, 2));
        cr_assert_eq(memcmp(buf + len - 2, "xyz", 3), 0);
        cr_assert(afs_feof(s));
        cr_assert_eq(afs_fclose(s), 0);
    }
}

/* The same once a read met the end, after afs_clearerr: the reads ahead that went past the
 * end (empty or short) are not taken for the end again (direct reads of small chunks: read
 * ahead whatever the cache holds). */
T_IO(a_file_that_grows_after_its_end_was_read_reads_on_after_clearerr)
{
    t_new_ctx();
    const size_t len = 10000, more = 30000;
    static unsigned char buf[64 * KIB];
    t_make_file(t_path("f"), len);
    struct afs_stream *s = direct_open("f", 4 * KIB, 4);
    cr_assert_eq(afs_fread(buf, 1, len + more, s), len);
    cr_assert(afs_feof(s));
    afs_clearerr(s);
    cr_assert_eq(afs_fread(buf, 1, len + more, s), 0, "nothing new yet");
    t_fill(buf, more, len);
    int fd = open(t_path("f"), O_WRONLY | O_APPEND);
    cr_assert_eq(write(fd, buf, more), (ssize_t)more);
    close(fd);
    memset(buf, 0, sizeof buf);
    afs_clearerr(s);
    size_t n = afs_fread(buf, 1, more, s);
    cr_assert_eq(n, more, "%zu of the %zu bytes appended", n, more);
    cr_assert(t_check(buf, more, len));
    cr_assert(!afs_feof(s));
    cr_assert_eq(afs_fclose(s), 0);
}

/* Options left zero are the defaults: a file made through them is 0666 less the umask. */
T_IO(zeroed_options_are_the_defaults)
{
    t_new_ctx();
    struct afs_stream_options o;
    memset(&o, 0, sizeof o);
    struct afs_stream *s;
    cr_assert_eq(afs_fopen_opts(t_ctx, t_path("z"), "w", &o, &s), 0);
    cr_assert_eq(afs_fwrite("z", 1, 1, s), 1);
    cr_assert_eq(afs_fclose(s), 0);
#ifndef _WIN32
    mode_t um = umask(022);
    umask(um);
    struct stat st;
    cr_assert_eq(stat(t_path("z"), &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0666 & ~um, "mode %o", (unsigned)(st.st_mode & 0777));
#endif
}

T_IO(empty_file_is_eof_at_once)
{
    t_new_ctx();
    t_make_file(t_path("f"), 0);
    struct afs_stream *s = NULL;
    cr_assert_eq(afs_fopen(t_ctx, t_path("f"), "r", &s), 0);
    char c;
    cr_assert_eq(afs_fread(&c, 1, 1, s), 0);
    cr_assert(afs_feof(s));
    cr_assert_eq(afs_ferror(s), 0);
    cr_assert_eq(afs_fclose(s), 0);
}

T_IO(writes_then_read_back)
{
    t_new_ctx();
    const size_t len = 300 * KIB + 11;
    unsigned char *src = malloc(len), *back = malloc(len);
    t_fill(src, len, 0);
    struct afs_stream *s = s_open("f", "w+", 16 * KIB, 3);
    size_t off = 0, step = 5;
    while (off < len) {
        size_t n = AFS_TEST_MIN(step % 40000 + 1, len - off);
        cr_assert_eq(afs_fwrite(src + off, 1, n, s), n);
        off += n;
        step = step * 13 + 7;
    }
    cr_assert_eq(afs_ftell(s), (int64_t)len);
    /* Straight to reading, without fflush: the stream flushes on switching. */
    cr_assert_eq(afs_fseek(s, 0, SEEK_SET), 0);
    cr_assert_eq(afs_fread(back, 1, len, s), len);
    cr_assert_eq(memcmp(src, back, len), 0);
    /* Overwrite in the middle, then read across it. */
    cr_assert_eq(afs_fseek(s, 1000, SEEK_SET), 0);
    cr_assert_eq(afs_fwrite("HELLO", 1, 5, s), 5);
    cr_assert_eq(afs_fread(back, 1, 10, s), 10, "reading right after writing");
    cr_assert(t_check(back, 10, 1005));
    cr_assert_eq(afs_fseek(s, 998, SEEK_SET), 0);
    cr_assert_eq(afs_fread(back, 1, 9, s), 9);
    cr_assert_eq(memcmp(back + 2, "HELLO", 5), 0);
    cr_assert(t_check(back, 2, 998));
    cr_assert_eq(afs_fclose(s), 0);
    size_t flen;
    unsigned char *disk = slurp("f", &flen);
    cr_assert_eq(flen, len);
    memcpy(src + 1000, "HELLO", 5);
    cr_assert_eq(memcmp(disk, src, len), 0);
    free(disk);
    free(src);
    free(back);
}

/* A write of the same region twice with both in flight: the later one must win. */
T_IO(overlapping_writes_keep_their_order)
{
    t_new_ctx();
    struct afs_stream *s = s_open("f", "w", 4 * KIB, 8);
    static unsigned char a[4 * KIB], b[4 * KIB];
    for (int round = 0; round < 50; round++) {
        memset(a, 'a' + round % 26, sizeof a);
        memset(b, 'A' + round % 26, sizeof b);
        cr_assert_eq(afs_fseek(s, 0, SEEK_SET), 0);
        cr_assert_eq(afs_fwrite(a, 1, sizeof a, s), sizeof a);
        cr_assert_eq(afs_fseek(s, 0, SEEK_SET), 0);
        cr_assert_eq(afs_fwrite(b, 1, sizeof b, s), sizeof b);
    }
    cr_assert_eq(afs_fclose(s), 0);
    size_t flen;
    unsigned char *disk = slurp("f", &flen);
    cr_assert_eq(flen, sizeof b);
    cr_assert_eq(memcmp(disk, b, sizeof b), 0);
    free(disk);
}

T_IO(append_mode)
{
    t_new_ctx();
    t_make_file(t_path("f"), 1000);
    struct afs_stream *s = s_open("f", "a", 4 * KIB, 4);
    cr_assert_eq(afs_ftell(s), 1000, "\"a\" starts at the end");
    char line[32];
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(line, sizeof line, "line %05d\n", i);
        cr_assert_eq(afs_fwrite(line, 1, (size_t)n, s), (size_t)n);
    }
    cr_assert_eq(afs_ftell(s), 1000 + 2000 * 11);
    /* Writes land at the end even after a seek. */
    cr_assert_eq(afs_fseek(s, 0, SEEK_SET), 0);
    cr_assert_eq(afs_fwrite("end\n", 1, 4, s), 4);
    cr_assert_eq(afs_fclose(s), 0);
    size_t len;
    unsigned char *disk = slurp("f", &len);
    cr_assert_eq(len, 1000 + 2000 * 11 + 4);
    cr_assert(t_check(disk, 1000, 0));
    for (int i = 0; i < 2000; i++) {
        snprintf(line, sizeof line, "line %05d\n", i);
        cr_assert_eq(memcmp(disk + 1000 + i * 11, line, 11), 0, "line %d in order", i);
    }
    cr_assert_eq(memcmp(disk + len - 4, "end\n", 4), 0);
    free(disk);

    /* "a+": reads from 0, writes at the end, and reads see the writes. */
    s = s_open("f", "a+", 4 * KIB, 4);
    cr_assert_eq(afs_ftell(s), 0);
    unsigned char buf[100];
    cr_assert_eq(afs_fread(buf, 1, 100, s), 100);
    cr_assert(t_check(buf, 100, 0));
    cr_assert_eq(afs_fwrite("tail", 1, 4, s), 4);
    int64_t at = afs_ftell(s);
    cr_assert_eq(at, (int64_t)len + 4, "ftell %lld", (long long)at);
    cr_assert_eq(afs_fseek(s, -8, SEEK_END), 0);
    cr_assert_eq(afs_fread(buf, 1, 100, s), 8);
    cr_assert_eq(memcmp(buf, "end\ntail", 8), 0);
    cr_assert_eq(afs_fclose(s), 0);
}

T_IO(seek_and_read_drop_stale_read_ahead)
{
    t_new_ctx();
    const size_t len = 1024 * KIB;
    t_make_file(t_path("f"), len);
    struct afs_stream *s = s_open("f", "r+", 8 * KIB, 4);
    unsigned char buf[20000];
    cr_assert_eq(afs_fread(buf, 1, 100, s), 100);
    /* Forward inside the read-ahead window, backward inside the chunk, then far. */
    int64_t offs[] = {9000, 5, 30000, 700000, 8192, 1024 * KIB - 10, 123456, 0};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        cr_assert_eq(afs_fseek(s, offs[i], SEEK_SET), 0);
        cr_assert_eq(afs_ftell(s), offs[i]);
        size_t want = AFS_TEST_MIN(sizeof buf, len - (size_t)offs[i]);
        cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), want, "at %lld", (long long)offs[i]);
        cr_assert(t_check(buf, want, (uint64_t)offs[i]), "bad data at %lld", (long long)offs[i]);
    }
    /* Pseudo-random reads. */
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 300; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int64_t off = (int64_t)(x % len);
        size_t n = (size_t)(x >> 40) % 3000 + 1;
        cr_assert_eq(afs_fseek(s, off, SEEK_SET), 0);
        size_t want = AFS_TEST_MIN(n, len - (size_t)off);
        cr_assert_eq(afs_fread(buf, 1, n, s), want);
        cr_assert(t_check(buf, want, (uint64_t)off), "bad data at %lld", (long long)off);
    }
    /* Read-ahead must not hide a change the stream made itself. */
    cr_assert_eq(afs_fseek(s, 0, SEEK_SET), 0);
    cr_assert_eq(afs_fread(buf, 1, 10, s), 10); /* read-ahead of the next chunks starts */
    cr_assert_eq(afs_fseek(s, 20000, SEEK_SET), 0);
    cr_assert_eq(afs_fwrite("changed", 1, 7, s), 7);
    cr_assert_eq(afs_fseek(s, 19999, SEEK_SET), 0);
    cr_assert_eq(afs_fread(buf, 1, 9, s), 9);
    cr_assert_eq(memcmp(buf + 1, "changed", 7), 0);
    cr_assert_eq(afs_fseek(s, -10, SEEK_CUR), 0);
    cr_assert_eq(afs_ftell(s), 19998);
    cr_assert_eq(afs_fseek(s, -1, SEEK_SET), -EINVAL);
    cr_assert_eq(afs_fseek(s, 0, 42), -EINVAL);
    cr_assert_eq(afs_ftell(s), 19998, "a refused seek changes nothing");
    cr_assert_eq(afs_fclose(s), 0);
}

T_IO(seek_past_eof_and_write_leaves_a_hole)
{
    t_new_ctx();
    struct afs_stream *s = s_open("f", "w+", 4 * KIB, 2);
    cr_assert_eq(afs_fwrite("head", 1, 4, s), 4);
    cr_assert_eq(afs_fseek(s, 100000, SEEK_SET), 0);
    cr_assert_eq(afs_fwrite("tail", 1, 4, s), 4);
    cr_assert_eq(afs_fseek(s, 0, SEEK_END), 0);
    cr_assert_eq(afs_ftell(s), 100004);
    cr_assert_eq(afs_fseek(s, 0, SEEK_SET), 0);
    unsigned char *buf = malloc(200000);
    cr_assert_eq(afs_fread(buf, 1, 200000, s), 100004);
    cr_assert(afs_feof(s));
    cr_assert_eq(memcmp(buf, "head", 4), 0);
    for (size_t i = 4; i < 100000; i++)
        cr_assert_eq(buf[i], 0, "hole at %zu", i);
    cr_assert_eq(memcmp(buf + 100000, "tail", 4), 0);
    free(buf);
    cr_assert_eq(afs_fclose(s), 0);
}

#ifndef _WIN32
/* What fseeko answers for a FILE of the file at 10 (a fresh one each time: glibc's FILE
 * may lose its position after a refused seek). */
static int fseeko_answer(const char *name, int64_t off, int whence)
{
    FILE *ref = fopen(t_path(name), "r");
    cr_assert_not_null(ref);
    char b[10];
    cr_assert_eq(fread(b, 1, 10, ref), 10);
    errno = 0;
    int r = fseeko(ref, (off_t)off, whence) == 0 ? 0 : -errno;
    fclose(ref);
    return r;
}

/* afs_fseek refuses what stdio's fseeko refuses on the same file, with its errno, and the
 * position stays: past the file system's largest offset (ext4: 16 TiB - 4 KiB; 2^63 - 1 is
 * refused there, taken by tmpfs, xfs, btrfs), and overflows of the base. Checked against
 * fseeko on the same file, reading and with writes buffered. */
T_IO(fseek_refuses_what_fseeko_refuses)
{
    t_new_ctx();
    const size_t len = 100 * KIB;
    t_make_file(t_path("f"), len);
    struct afs_stream *s = s_open("f", "r+", 64 * KIB, 4);
    unsigned char buf[16];
    cr_assert_eq(afs_fread(buf, 1, 10, s), 10);
    const int64_t tb16 = (int64_t)1 << 44;
    const struct {
        int64_t off;
        int     whence;
    } seeks[] = {
        {INT64_MAX, SEEK_SET},          {INT64_MAX - 4095, SEEK_SET},
        {tb16, SEEK_SET},               {tb16 - 4095, SEEK_SET},
        {INT64_MAX - 5, SEEK_CUR},      {INT64_MAX - (int64_t)len, SEEK_END},
        {tb16 - (int64_t)len, SEEK_END}, {INT64_MAX, SEEK_END},
        {-11, SEEK_CUR},                {-(int64_t)len - 1, SEEK_END},
        {tb16 - 4096, SEEK_SET},        {(int64_t)1 << 40, SEEK_SET}, /* taken on ext4 */
        {(int64_t)1 << 39, SEEK_SET},   {(int64_t)1 << 40, SEEK_CUR},
    };
    int refused = 0;
    for (size_t i = 0; i < sizeof seeks / sizeof seeks[0]; i++) {
        int want = fseeko_answer("f", seeks[i].off, seeks[i].whence);
        int got = afs_fseek(s, seeks[i].off, seeks[i].whence);
        cr_assert_eq(got, want, "seek %zu (%lld, whence %d): %s, fseeko: %s", i,
                     (long long)seeks[i].off, seeks[i].whence, afs_strerror(got),
                     afs_strerror(want));
        refused += want < 0;
        if (got == 0)
            cr_assert_eq(afs_fseek(s, 10, SEEK_SET), 0); /* back */
        cr_assert_eq(afs_ftell(s), 10, "seek %zu moved the position", i);
    }
    cr_log_info("%d of the %zu seeks refused here", refused, sizeof seeks / sizeof seeks[0]);
    cr_assert_eq(afs_fread(buf, 1, 16, s), 16);
    cr_assert(t_check(buf, 16, 10), "the read after the refused seeks");

    /* Writing: a refused seek queues nothing and moves nothing; the data goes where it was
     * taken. */
    int want = fseeko_answer("f", INT64_MAX, SEEK_SET);
    cr_assert_eq(afs_fwrite("written", 1, 7, s), 7);
    cr_assert_eq(afs_fseek(s, INT64_MAX, SEEK_SET), want);
    cr_assert_eq(afs_ftell(s), want ? 33 : INT64_MAX);
    if (!want)
        cr_assert_eq(afs_fseek(s, 33, SEEK_SET), 0);
    cr_assert_eq(afs_fwrite("!", 1, 1, s), 1);
    cr_assert_eq(afs_fclose(s), 0);
    size_t got;
    unsigned char *all = slurp("f", &got);
    cr_assert_eq(got, len);
    cr_assert(t_check(all, 26, 0) && memcmp(all + 26, "written!", 8) == 0 &&
              t_check(all + 34, len - 34, 34), "the file after the writes");
    free(all);
}
#endif

/* Chunk buffers of a closed stream stay with the context for the next stream of the same
 * chunk size (no memory mapped, faulted in and unmapped per file), at most 8 of them and
 * 8 MiB; another size replaces them, and afs_ctx_free gives every one back. */
static int buf_allocs, buf_releases;

static void *counting_alloc(size_t size, void *user)
{
    (void)user;
    buf_allocs++;
#ifdef _WIN32
    return _aligned_malloc(size, 4096);
#else
    void *p = NULL;
    return posix_memalign(&p, 4096, size) == 0 ? p : NULL;
#endif
}

static void counting_release(void *buf, size_t size, void *user)
{
    (void)size;
    (void)user;
    buf_releases++;
#ifdef _WIN32
    _aligned_free(buf);
#else
    free(buf);
#endif
}

/* Writes `len` pattern bytes through a new stream on t_ctx, reads them back, closes it. */
static void stream_round_trip(size_t chunk, unsigned chunks, size_t len)
{
    struct afs_stream *s = s_open("f", "w+", chunk, chunks);
    unsigned char *buf = malloc(len);
    t_fill(buf, len, 0);
    cr_assert_eq(afs_fwrite(buf, 1, len, s), len);
    cr_assert_eq(afs_fseek(s, 0, SEEK_SET), 0);
    memset(buf, 0, len);
    cr_assert_eq(afs_fread(buf, 1, len, s), len);
    cr_assert(t_check(buf, len, 0));
    cr_assert_eq(afs_fclose(s), 0);
    free(buf);
}

/* The test context, with its buffers counted. */
static void counting_ctx(void)
{
    struct afs_config cfg;
    afs_config_default(&cfg);
    cfg.alloc = counting_alloc;
    cfg.release = counting_release;
    buf_allocs = buf_releases = 0;
    t_ctx = t_ctx_cfg(&cfg);
}

T_IO(stream_buffers_are_kept_for_the_next_stream)
{
    counting_ctx();
    stream_round_trip(64 * KIB, 4, 300 * KIB + 7);
    cr_assert_eq(buf_allocs, 5);
    cr_assert_eq(buf_releases, 0, "kept for the next stream");
    stream_round_trip(64 * KIB, 4, 200 * KIB);
    stream_round_trip(64 * KIB, 2, 100 * KIB);
    cr_assert_eq(buf_allocs, 5, "the same size: the kept buffers, none new");
    stream_round_trip(128 * KIB, 2, 300 * KIB);
    cr_assert_eq(buf_allocs, 8);
    cr_assert_eq(buf_releases, 5, "another size: the older ones given back");
    /* Buffers are made as the stream needs them: three chunks written, a big read
     * straight into the caller's buffer. */
    stream_round_trip(1024 * KIB, 15, 3 * 1024 * KIB);
    cr_assert_leq(buf_allocs, 11, "three buffers made at most, not 16");
    cr_assert_eq(buf_releases, 8, "another size: the 128 KiB ones given back");
    /* Twelve streams at once, one buffer each: 8 MiB of them kept at the closes. */
    struct afs_stream *many[12];
    for (int i = 0; i < 12; i++) {
        char name[8];
        snprintf(name, sizeof name, "g%d", i);
        many[i] = s_open(name, "w", 1024 * KIB, 15);
        cr_assert_eq(afs_fwrite("x", 1, 1, many[i]), 1);
    }
    for (int i = 0; i < 12; i++)
        cr_assert_eq(afs_fclose(many[i]), 0);
    cr_assert_eq(buf_allocs, 20, "the kept ones, and new ones for the rest");
    cr_assert_eq(buf_allocs - buf_releases, 8, "at most 8 MiB kept");
    afs_ctx_free(t_ctx);
    t_ctx = NULL;
    cr_assert_eq(buf_releases, buf_allocs, "every buffer given back with the context");
}

#ifndef _WIN32
static void limit_file_size(rlim_t bytes)
{
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {bytes, bytes};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

T_IO(fflush_reports_write_behind_errors_and_keeps_them)
{
    t_new_ctx();
    limit_file_size(1 << 20);
    struct afs_stream *s = s_open("f", "w", 64 * KIB, 4);
    static unsigned char buf[64 * KIB];
    size_t items = 0;
    for (int i = 0; i < 40; i++)
        items += afs_fwrite(buf, sizeof buf, 1, s);
    cr_assert_lt(items, 40, "the error stops afs_fwrite before 2.5 MiB");
    cr_assert_geq(items, 16, "the first 1 MiB went through");
    cr_assert_eq(afs_fflush(s), -EFBIG);
    cr_assert_eq(afs_ferror(s), -EFBIG);
    cr_assert_eq(afs_fflush(s), -EFBIG, "kept, not lost");
    cr_assert_eq(afs_fwrite(buf, 1, 1, s), 0, "no writes while the error is set");
    afs_clearerr(s);
    cr_assert_eq(afs_ferror(s), 0);
    cr_assert_eq(afs_fseek(s, 0, SEEK_SET), 0);
    cr_assert_eq(afs_fwrite("ok", 1, 2, s), 2, "works again after clearerr");
    cr_assert_eq(afs_fflush(s), 0);
    cr_assert_eq(afs_fclose(s), 0);
}

/* A write failure seen only after a seek: what afs_fwrite took after the seek is dropped
 * with the rest (it would land after the failure's hole), and the position says so: it is
 * where the data stopped, at the latest where the dropped data began, and afs_clearerr
 * writes on from there. */
T_IO(a_write_failure_seen_after_a_seek_moves_the_position_back)
{
    t_new_ctx();
    limit_file_size(3 << 19); /* 1.5 MiB */
    const size_t total = 3 << 20;
    unsigned char *data = malloc(total);
    memset(data, 'A', total);
    struct afs_stream *s;
    cr_assert_eq(afs_fopen(t_ctx, t_path("f"), "w", &s), 0);
    afs_fwrite(data, 1, total, s); /* fails at 1.5 MiB, maybe not seen yet */
    cr_assert_eq(afs_fseek(s, 0, SEEK_SET), 0);
    size_t took = afs_fwrite("NNNN", 1, 4, s);
    cr_assert_eq(afs_fflush(s), -EFBIG);
    cr_assert_eq(afs_ftell(s), 0, "%zu bytes taken after the seek, dropped: the position is "
                 "where they began", took);
    afs_clearerr(s);
    cr_assert_eq(afs_ftell(s), 0);
    cr_assert_eq(afs_fwrite("ok", 1, 2, s), 2);
    cr_assert_eq(afs_fclose(s), 0);
    char head[4];
    int fd = open(t_path("f"), O_RDONLY);
    cr_assert_eq(read(fd, head, 4), 4);
    close(fd);
    cr_assert(memcmp(head, "okAA", 4) == 0, "the file begins with %.4s", head);
    free(data);
}

/* Offsets end at INT64_MAX: a write that would go past it takes what fits and fails with
 * -EFBIG; the position stays a position. */
#ifdef __linux__
T_IO(a_write_at_the_last_offsets_stops_at_int64_max)
{
    t_new_ctx();
    /* tmpfs takes any offset (ext4 refuses the seek past its largest file). */
    char path[] = "/dev/shm/afs-last-offsets-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0, "/dev/shm: %s", strerror(errno));
    close(fd);
    struct afs_stream *s;
    cr_assert_eq(afs_fopen(t_ctx, path, "w", &s), 0);
    static unsigned char buf[100];
    int err = afs_fseek(s, INT64_MAX - 10, SEEK_SET);
    cr_assert_eq(err, 0, "%s", afs_strerror(err));
    size_t n = afs_fwrite(buf, 1, sizeof buf, s);
    cr_assert_leq(n, 10);
    cr_assert_eq(afs_ferror(s), -EFBIG);
    int64_t at = afs_ftell(s);
    cr_assert(at >= 0, "afs_ftell: %lld", (long long)at);
    cr_assert_eq(afs_fclose(s), -EFBIG);
    unlink(path);
}
#endif

T_IO(fclose_returns_the_first_error)
{
    t_new_ctx();
    limit_file_size(100 * KIB);
    struct afs_stream *s = s_open("f", "w", 64 * KIB, 4);
    static unsigned char buf[150 * KIB];
    /* All buffered or in flight: the error has not been seen yet. */
    cr_assert_eq(afs_fwrite(buf, 1, sizeof buf, s), sizeof buf);
    cr_assert_eq(afs_fclose(s), -EFBIG);
}
#endif

T_IO(bad_modes_and_access)
{
    t_new_ctx();
    t_make_file(t_path("f"), 10);
    struct afs_stream *s = (struct afs_stream *)1;
    const char *bad[] = {"", "q", "rw", "r++", "rbb", "ax", "rx", "r+x", "w+z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(afs_fopen(t_ctx, t_path("f"), bad[i], &s), -EINVAL, "mode \"%s\"", bad[i]);
        cr_assert_null(s);
    }
    cr_assert_eq(afs_fopen(t_ctx, t_path("nope"), "r", &s), -ENOENT);
    cr_assert_eq(afs_fopen(t_ctx, t_path("f"), "wx", &s), -EEXIST);
    struct afs_stream_options o;
    afs_stream_options_default(&o);
    o.flags = AFS_STREAM_DIRECT;
    cr_assert_eq(afs_fopen_opts(t_ctx, t_path("f"), "w", &o, &s), -EINVAL);
    o.flags = 0x80;
    cr_assert_eq(afs_fopen_opts(t_ctx, t_path("f"), "r", &o, &s), -EINVAL);
    afs_stream_options_default(&o);
    o.chunks = 1000;
    cr_assert_eq(afs_fopen_opts(t_ctx, t_path("f"), "r", &o, &s), -EINVAL);

    const char *good[] = {"rb", "r+b", "rb+", "a+b", "wbx"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (good[i][0] == 'w')
            remove(t_path("f"));
        cr_assert_eq(afs_fopen(t_ctx, t_path("f"), good[i], &s), 0, "mode \"%s\"", good[i]);
        cr_assert_eq(afs_fclose(s), 0);
    }
    cr_assert_eq(afs_fopen(t_ctx, t_path("f"), "r", &s), 0);
    cr_assert_eq(afs_fwrite("x", 1, 1, s), 0);
    cr_assert_eq(afs_ferror(s), -EBADF);
    afs_clearerr(s);
    cr_assert_eq(afs_fclose(s), 0);
    cr_assert_eq(afs_fopen(t_ctx, t_path("f"), "w", &s), 0);
    char c;
    cr_assert_eq(afs_fread(&c, 1, 1, s), 0);
    cr_assert_eq(afs_ferror(s), -EBADF);
    cr_assert_eq(afs_fclose(s), -EBADF);
}

T_IO(direct_reads)
{
    t_new_ctx();
    const size_t len = 1024 * KIB + 1234;
    t_make_file(t_path("f"), len);
    struct afs_stream *s = direct_open("f", 64 * KIB, 0);
    unsigned char *buf = malloc(len + 10);
    cr_assert_eq(afs_fread(buf, 1, 1000, s), 1000);
    cr_assert_eq(afs_fseek(s, 3, SEEK_SET), 0, "unaligned positions are fine");
    cr_assert_eq(afs_fread(buf, 1, len + 10, s), len - 3);
    cr_assert(t_check(buf, len - 3, 3));
    cr_assert(afs_feof(s));
    free(buf);
    cr_assert_eq(afs_fclose(s), 0);
}

/* Close with read-ahead and cancelled reads still in flight: nothing leaks (ASan), nothing
 * is written into freed buffers. */
T_IO(close_with_reads_in_flight)
{
    t_new_ctx();
    t_make_file(t_path("f"), 2048 * KIB);
    for (int i = 0; i < 20; i++) {
        struct afs_stream *s = s_open("f", "r", 64 * KIB, 8);
        char c;
        cr_assert_eq(afs_fread(&c, 1, 1, s), 1);
        cr_assert_eq(afs_fseek(s, 1500 * KIB, SEEK_SET), 0); /* cancels the read-ahead */
        cr_assert_eq(afs_fread(&c, 1, 1, s), 1);
        cr_assert_eq(afs_fclose(s), 0);
    }
}

/* ---- Inside corio tasks: waiting suspends the task only. ---- */

struct co_job {
    int    id;
    size_t len;
    int    ok;
};

static void co_reader(struct corio_task *t, void *arg)
{
    struct co_job *j = arg;
    char name[32];
    snprintf(name, sizeof name, "r%d", j->id);
    struct afs_stream *s = s_open(name, "r", 16 * KIB, 4);
    unsigned char *buf = malloc(5000);
    size_t off = 0, n;
    while ((n = afs_fread(buf, 1, 5000, s)) > 0) {
        if (!t_check(buf, n, off))
            return;
        off += n;
        corio_yield(t); /* the others go on meanwhile */
    }
    free(buf);
    j->ok = afs_feof(s) && afs_ferror(s) == 0 && off == j->len && afs_fclose(s) == 0;
}

static void co_writer(struct corio_task *t, void *arg)
{
    struct co_job *j = arg;
    struct afs_stream *s = s_open("w", "w+", 16 * KIB, 4);
    unsigned char *buf = malloc(j->len);
    t_fill(buf, j->len, 0);
    for (size_t off = 0; off < j->len; off += 3000) {
        size_t n = AFS_TEST_MIN(3000, j->len - off);
        if (afs_fwrite(buf + off, 1, n, s) != n)
            return;
    }
    memset(buf, 0, j->len);
    if (afs_fflush(s) != 0 || afs_fseek(s, 0, SEEK_SET) != 0)
        return;
    if (afs_fread(buf, 1, j->len, s) != j->len || !t_check(buf, j->len, 0))
        return;
    free(buf);
    j->ok = afs_fclose(s) == 0;
}

static void co_root(struct corio_task *t, void *arg)
{
    struct co_job *jobs = arg;
    for (int i = 0; i < 4; i++)
        cr_assert_eq(corio_spawn(t, co_reader, &jobs[i], NULL), 0);
    cr_assert_eq(corio_spawn(t, co_writer, &jobs[4], NULL), 0);
}

T_IO(streams_in_corio_tasks)
{
    struct afs_config acfg;
    afs_config_default(&acfg);
    t_ctx = t_ctx_cfg(&acfg);
    struct co_job jobs[5];
    for (int i = 0; i < 5; i++) {
        jobs[i] = (struct co_job){i, (size_t)(100 + 37 * i) * KIB + (size_t)i, 0};
        if (i < 4) {
            char name[32];
            snprintf(name, sizeof name, "r%d", i);
            t_make_file(t_path(name), jobs[i].len);
        }
    }
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    struct corio_sched *sched = NULL;
    cr_assert_eq(corio_sched_new(&sched, &cfg), 0);
    cr_assert_eq(corio_sched_run(sched, co_root, jobs), 0);
    for (int i = 0; i < 5; i++)
        cr_assert(jobs[i].ok, "task %d", i);
    struct corio_stats st;
    corio_sched_stats(sched, &st);
    cr_assert_gt(st.ios, 0, "the tasks suspended on their chunks (the waiter was used)");
    corio_sched_free(sched);
}

/* A deadline that passes while writes are behind: what the stream reports is -ETIMEDOUT
 * (the op's own result says -ECANCELED), where the backend could cut a write at all; what
 * afs_ftell says after afs_clearerr is where the file's data stop being the stream's. */
struct dl_write {
    int     err, flushed;
    int64_t told;
    size_t  taken;
};

static void dl_writer(struct corio_task *t, void *arg)
{
    struct dl_write *d = arg;
    enum { LEN = 64 << 20 };
    struct afs_stream *s = s_open("dl", "w", 1 << 20, 8);
    char *buf = malloc(LEN);
    t_fill((unsigned char *)buf, LEN, 0);
    corio_set_deadline(t, corio_now() + 1000 * 1000);
    d->taken = afs_fwrite(buf, 1, LEN, s);
    d->err = afs_ferror(s);
    d->flushed = afs_fflush(s);
    corio_set_deadline(t, INT64_MAX);
    afs_clearerr(s);
    d->told = afs_ftell(s);
    afs_fclose(s);
    free(buf);
}

T_IO(stream_write_behind_past_a_deadline_is_etimedout)
{
    t_ctx = t_new_ctx();
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    struct corio_sched *sched = NULL;
    cr_assert_eq(corio_sched_new(&sched, &cfg), 0);
    struct dl_write d = {0};
    cr_assert_eq(corio_sched_run(sched, dl_writer, &d), 0);
    corio_sched_free(sched);
    cr_assert(d.err == 0 || d.err == -ETIMEDOUT, "afs_ferror: %s", afs_strerror(d.err));
    cr_assert(d.flushed == 0 || d.flushed == -ETIMEDOUT, "afs_fflush: %s",
              afs_strerror(d.flushed));
    /* What the file holds up to where the stream says its data stop is the stream's. */
    size_t n = (size_t)d.told;
    unsigned char *got = malloc(n ? n : 1);
    FILE *f = fopen(t_path("dl"), "rb");
    cr_assert_not_null(f);
    cr_assert_eq(fread(got, 1, n, f), n);
    fclose(f);
    cr_assert(t_check(got, n, 0), "the first %zu bytes", n);
    free(got);
}

/* ---- Cold reads of read-only streams go direct (Linux): same bytes, coherent. ---- */
#if defined(__linux__)
#include "platform.h"

#include <sys/mman.h>
#include <sched.h>
#include <sys/syscall.h>

/* Drops the file's clean pages from the page cache (no root needed). */
static void make_cold(const char *name)
{
    int fd = open(t_path(name), O_RDONLY);
    cr_assert(fd >= 0);
    cr_assert_eq(fdatasync(fd), 0);
    cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    close(fd);
}

/* Bytes of the file in the page cache (mincore). */
static size_t cached_bytes(const char *name)
{
    int fd = open(t_path(name), O_RDONLY);
    cr_assert(fd >= 0);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert(m != MAP_FAILED);
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), pages = ((size_t)st.st_size + pg - 1) / pg, in = 0;
    unsigned char *v = malloc(pages);
    cr_assert_eq(mincore(m, (size_t)st.st_size, v), 0);
    for (size_t i = 0; i < pages; i++)
        in += v[i] & 1;
    free(v);
    munmap(m, (size_t)st.st_size);
    return in * pg;
}

/* Whether streams here read cold files direct: O_DIRECT allowed on the test directory, the
 * kernel tells what is cached (cachestat, Linux 6.5), and a backend that reads ahead. */
static int direct_expected(const char *name)
{
    if (strcmp(afs_ctx_backend(t_ctx), "sync") == 0)
        return 0;
    int fd = open(t_path(name), O_RDONLY | O_DIRECT);
    if (fd < 0)
        return 0;
    struct {
        uint64_t off, len;
    } range = {0, 0};
    uint64_t cs[5];
    int ok = syscall(451, fd, &range, cs, 0) == 0; /* __NR_cachestat */
    close(fd);
    return ok;
}

/* Not in the API: the chunks a stream queued for direct reads (stream.c). */
uint64_t afs__stream_direct_reads(const struct afs_stream *s);

/* Runs every callback of the test context: a consumer that calls this between reads never
 * waits for a chunk (the read-ahead is complete when it gets there). */
static void drain(void)
{
    for (;;) {
        struct afs_stats st;
        afs_ctx_stats(t_ctx, &st);
        if (st.completions >= st.ops)
            return;
        cr_assert_geq(afs_ctx_wait(t_ctx, 1, 5000000000LL), 0);
    }
}

/* Reads the whole stream in odd pieces, with a seek back and forth, checking every byte.
 * With `computing`, the reader lets the read-ahead complete before each read, as a consumer
 * that computes more than it waits for the disk. Returns the direct reads of the sequential
 * pass. */
static uint64_t read_all_checked(struct afs_stream *s, size_t len, int computing)
{
    unsigned char *buf = malloc(4093);
    size_t off = 0, n;
    for (;;) {
        if (computing)
            drain();
        if ((n = afs_fread(buf, 1, 4093, s)) == 0)
            break;
        cr_assert(t_check(buf, n, off), "bad data at %zu", off);
        off += n;
    }
    uint64_t direct = afs__stream_direct_reads(s);
    cr_assert_eq(off, len);
    cr_assert(afs_feof(s));
    cr_assert_eq(afs_ferror(s), 0);
    /* Unaligned positions and the unaligned tail, read again. */
    cr_assert_eq(afs_fseek(s, (int64_t)len - 70000, SEEK_SET), 0);
    cr_assert_eq(afs_fread(buf, 1, 4093, s), 4093);
    cr_assert(t_check(buf, 4093, len - 70000));
    free(buf);
    return direct;
}

/* A consumer that never waits for a chunk reads a cold file direct, every chunk of it. */
T_IO(cold_reads_go_direct_with_the_same_bytes)
{
    t_new_ctx();
    /* Unaligned sizes: the last chunk is short and ends inside a sector. */
    const size_t lens[] = {2048 * KIB + 1234, 1024 * KIB + 4096, 3000 * KIB - 1};
    /* A path too long to be kept in the stream itself is kept on the heap. */
    const char *names[] = {"f", "f",
                           ("a-name-long-enough-that-the-whole-path-does-not-fit-in-the-"
                            "streams-own-place-for-it-and-goes-to-the-heap")};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        const char *f = names[i];
        t_make_file(t_path(f), lens[i]);
        make_cold(f);
        struct afs_stream *s = s_open(f, "r", 64 * KIB, 4);
        uint64_t direct = read_all_checked(s, lens[i], 1);
        cr_assert_eq(afs_fclose(s), 0);
        if (direct_expected(f)) {
            uint64_t chunks = (lens[i] + 64 * KIB - 1) / (64 * KIB);
            cr_assert_eq(direct, chunks, "%llu of %llu chunks read direct",
                         (unsigned long long)direct, (unsigned long long)chunks);
            cr_assert_lt(cached_bytes(f), lens[i] / 2,
                         "a cold sequential read bypassed the page cache");
        } else {
            cr_assert_eq(direct, 0);
        }
    }
}

/* AFS_STREAM_BUFFERED: the same consumer, but every chunk goes through the page cache. */
T_IO(opt_out_never_reads_direct)
{
    t_new_ctx();
    const size_t len = 2048 * KIB + 1234;
    t_make_file(t_path("f"), len);
    make_cold("f");
    struct afs_stream_options o;
    afs_stream_options_default(&o);
    o.chunk_size = 64 * KIB;
    o.flags = AFS_STREAM_BUFFERED | AFS_STREAM_DIRECT;
    struct afs_stream *s = NULL;
    cr_assert_eq(afs_fopen_opts(t_ctx, t_path("f"), "r", &o, &s), -EINVAL);
    cr_assert_null(s);
    o.flags = AFS_STREAM_BUFFERED;
    cr_assert_eq(afs_fopen_opts(t_ctx, t_path("f"), "r", &o, &s), 0);
    cr_assert_eq(read_all_checked(s, len, 1), 0, "no direct read");
    cr_assert_eq(afs__stream_direct_reads(s), 0, "read through the page cache");
    cr_assert_eq(afs_fclose(s), 0);
    /* Accepted on streams that write too (it changes nothing there). */
    cr_assert_eq(afs_fopen_opts(t_ctx, t_path("g"), "w+", &o, &s), 0);
    cr_assert_eq(afs_fwrite("x", 1, 1, s), 1);
    cr_assert_eq(afs_fclose(s), 0);
}

/* A consumer that waits for every chunk (the disk is the bottleneck: here reads take 100 ms,
 * injected where the threads backend runs them) starts direct and goes buffered after two
 * windows of 8 chunks in which it waited: later chunks come through the page cache. */
static struct afs__syscalls slow_saved;
static pthread_t slow_reader; /* the test's thread: its reads are of cached data */

static atomic_size_t slow_buffered; /* bytes read through descriptors without O_DIRECT */

static void count_buffered(afs__fd_t fd, ssize_t r)
{
    if (r > 0 && !(fcntl(fd, F_GETFL) & O_DIRECT))
        atomic_fetch_add(&slow_buffered, (size_t)r);
}

static ssize_t slow_pread_nowait(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    ssize_t r = slow_saved.pread_nowait(fd, buf, len, off);
    count_buffered(fd, r);
    return r;
}

static ssize_t slow_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    /* Far slower than the consumer, even under ThreadSanitizer on a machine whose CPUs are
     * busy with other work (at 5 ms a chunk the consumer fell behind there): 4 in flight,
     * 25 ms a chunk. Reads on the reader's own thread are of windows found cached (the
     * kernel's read-ahead behind the buffered reads gets there first): those take what
     * cached reads take. */
    if (!pthread_equal(pthread_self(), slow_reader)) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    ssize_t r = slow_saved.pread(fd, buf, len, off);
    count_buffered(fd, r);
    return r;
}

T_IO(waiting_consumer_goes_buffered)
{
    t_new_ctx();
    const size_t len = 64 * 64 * KIB + 333; /* 65 chunks */
    t_make_file(t_path("f"), len);
    make_cold("f");
    int slow = strcmp(afs_ctx_backend(t_ctx), "threads") == 0;
    if (slow) {
        slow_saved = afs__sys;
        slow_reader = pthread_self();
        afs__sys.pread = slow_pread;
        if (afs__sys.pread_nowait)
            afs__sys.pread_nowait = slow_pread_nowait;
        atomic_store(&slow_buffered, 0);
    }
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    uint64_t direct = read_all_checked(s, len, 0);
    cr_assert_eq(afs_fclose(s), 0);
    if (slow)
        afs__sys = slow_saved;
    if (slow && direct_expected("f")) {
        /* Two windows of 8 chunks, then what was read ahead when the second one closed. */
        cr_assert_gt(direct, 0, "a fresh stream starts direct");
        cr_assert_leq(direct, 2 * 8 + 1 + 4, "%llu chunks read direct",
                      (unsigned long long)direct);
        /* Counted as read, not as still cached: the kernel may reclaim pages meanwhile. */
        cr_assert_geq(atomic_load(&slow_buffered), len - (direct + 1) * 64 * KIB,
                      "the rest came through the page cache");
    }
}

/* The same consumer, and a stretch of the file in the page cache after the first 31 chunks:
 * the cached windows are read on the consumer's thread, with nothing to wait for, and do
 * not count as windows where it kept up with the disk. The cold chunks after them are read
 * buffered too, as before the stretch, not direct again. */
T_IO(cached_stretch_does_not_send_a_waiting_consumer_back_to_direct)
{
    t_new_ctx();
    if (strcmp(afs_ctx_backend(t_ctx), "threads") != 0)
        return; /* the slow disk is injected where the threads backend reads */
    const size_t len = 96 * 64 * KIB + 333; /* 97 chunks */
    t_make_file(t_path("f"), len);
    make_cold("f");
    if (!direct_expected("f"))
        return;
    /* Chunks 31 to 48: a whole window of the cached-data rule (16 chunks from 2 MiB and a
     * page) and a chunk either side; no kernel read-ahead past them. */
    int fd = open(t_path("f"), O_RDONLY);
    cr_assert(fd >= 0);
    cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
    static unsigned char stretch[18 * 64 * KIB];
    cr_assert_eq(pread(fd, stretch, sizeof stretch, 31 * 64 * KIB), (ssize_t)sizeof stretch);
    close(fd);
    slow_saved = afs__sys;
    slow_reader = pthread_self();
    afs__sys.pread = slow_pread;
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    static unsigned char buf[4093];
    size_t off = 0, n;
    uint64_t before = 0;
    while ((n = afs_fread(buf, 1, sizeof buf, s)) > 0) {
        cr_assert(t_check(buf, n, off), "bad data at %zu", off);
        off += n;
        if (off <= 31 * 64 * KIB)
            before = afs__stream_direct_reads(s);
    }
    uint64_t direct = afs__stream_direct_reads(s);
    cr_assert_eq(afs_fclose(s), 0);
    afs__sys = slow_saved;
    cr_assert_eq(off, len);
    cr_assert_gt(before, 0, "a fresh stream starts direct");
    cr_assert_leq(before, 2 * 8 + 1 + 4, "%llu chunks read direct", (unsigned long long)before);
    cr_assert_eq(direct, before, "%llu chunks read direct after the cached stretch",
                 (unsigned long long)(direct - before));
}

T_IO(warm_reads_stay_buffered)
{
    t_new_ctx();
    const size_t len = 2048 * KIB + 99;
    t_make_file(t_path("f"), len); /* just written: cached */
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    read_all_checked(s, len, 0);
    cr_assert_eq(afs_fclose(s), 0);
}

/* Files under 16 chunks stay with the page cache, which serves them again next time. */
T_IO(small_cold_files_are_read_buffered)
{
    t_new_ctx();
    const size_t len = 15 * 64 * KIB + 5;
    t_make_file(t_path("f"), len);
    make_cold("f");
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    read_all_checked(s, len, 0);
    /* Counted by the stream (this machine's page cache may be emptied from outside at any
     * moment: what mincore finds after the read says little). */
    cr_assert_eq(afs__stream_direct_reads(s), 0, "read through the page cache");
    cr_assert_eq(afs_fclose(s), 0);
}

/* Another file descriptor writes (buffered, not synced) while the stream reads: the stream
 * sees the new bytes wherever it had not read ahead yet, direct or not. */
T_IO(cold_reads_see_buffered_writes_of_others)
{
    t_new_ctx();
    const size_t len = 4096 * KIB + 777;
    t_make_file(t_path("f"), len);
    make_cold("f");
    int fd = open(t_path("f"), O_WRONLY);
    cr_assert(fd >= 0);
    unsigned char patch[10000];
    memset(patch, 0xA5, sizeof patch);
    /* Before the stream opens: dirty pages in the middle of a cold file. */
    const size_t at1 = 1000 * KIB + 3;
    cr_assert_eq(pwrite(fd, patch, sizeof patch, (off_t)at1), (ssize_t)sizeof patch);
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    unsigned char *buf = malloc(len);
    cr_assert_eq(afs_fread(buf, 1, 100 * KIB, s), 100 * KIB);
    /* While it reads: far past its read-ahead window, and at the unaligned tail. */
    const size_t at2 = 3000 * KIB + 5, at3 = len - 500;
    cr_assert_eq(pwrite(fd, patch, sizeof patch, (off_t)at2), (ssize_t)sizeof patch);
    cr_assert_eq(pwrite(fd, patch, 500, (off_t)at3), 500);
    size_t got = 100 * KIB;
    size_t n;
    while ((n = afs_fread(buf + got, 1, 30000, s)) > 0)
        got += n;
    cr_assert_eq(got, len);
    cr_assert_eq(afs_fclose(s), 0);
    close(fd);
    for (size_t off = 0; off < len;) {
        int in1 = off >= at1 && off < at1 + sizeof patch;
        int in2 = off >= at2 && off < at2 + sizeof patch;
        int in3 = off >= at3;
        size_t end = in1 ? at1 + sizeof patch : in2 ? at2 + sizeof patch : in3 ? len
                   : off < at1 ? at1 : off < at2 ? at2 : at3;
        for (size_t i = off; i < end; i++) {
            if (in1 || in2 || in3)
                cr_assert_eq(buf[i], 0xA5, "new byte at %zu", i);
            else
                cr_assert(t_check(buf + i, 1, i), "old byte at %zu", i);
        }
        off = end;
    }
    free(buf);
}

/* A file system that refuses a direct read (-EINVAL) costs nothing: the stream reads that
 * chunk and the rest buffered. Injected where the core runs the reads (threads backend). */
static struct afs__syscalls saved_sys;
static int refused;

static ssize_t refuse_direct_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_DIRECT)) {
        __atomic_add_fetch(&refused, 1, __ATOMIC_RELAXED);
        return -EINVAL;
    }
    return saved_sys.pread(fd, buf, len, off);
}

T_IO(refused_direct_reads_fall_back)
{
    t_new_ctx();
    const size_t len = 2048 * KIB + 1234;
    t_make_file(t_path("f"), len);
    make_cold("f");
    saved_sys = afs__sys;
    afs__sys.pread = refuse_direct_pread;
    refused = 0;
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    read_all_checked(s, len, 0);
    cr_assert_eq(afs_fclose(s), 0);
    afs__sys = saved_sys;
    if (direct_expected("f") && strcmp(afs_ctx_backend(t_ctx), "threads") == 0)
        cr_assert_gt(refused, 0, "the stream tried a direct read");
}

/* tmpfs: everything is cached, O_DIRECT may be refused; the stream just reads. */
T_IO(reads_on_tmpfs)
{
    t_new_ctx();
    char dir[] = "/dev/shm/afs-test-XXXXXX";
    if (!mkdtemp(dir))
        cr_skip_test("no /dev/shm");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/f", dir);
    const size_t len = 1024 * KIB + 321;
    t_make_file(path, len);
    struct afs_stream_options o;
    afs_stream_options_default(&o);
    o.chunk_size = 64 * KIB;
    struct afs_stream *s = NULL;
    int err = afs_fopen_opts(t_ctx, path, "r", &o, &s);
    cr_assert_eq(err, 0, "%s", afs_strerror(err));
    unsigned char *buf = malloc(len + 1);
    cr_assert_eq(afs_fread(buf, 1, len + 1, s), len);
    cr_assert(t_check(buf, len, 0));
    free(buf);
    cr_assert_eq(afs_fclose(s), 0);
    unlink(path);
    rmdir(dir);
}
/* ------------------------------------------------------------------------------------------
 * Cached data: who copies it (docs/STREAMS.md), driven here by a clock of the test's own.
 * Every read on the test's thread costs `inline_cost` ns of that clock, every read on another
 * thread (a pool thread) `pool_cost`; the thread's CPU time is the clock times cpu_share / 100
 * (100: the thread had its CPU to itself). Faults: every `short_every`-th read moves at most
 * 1000 bytes, every `eintr_every`-th fails with EINTR first, and a read at `eio_at` fails
 * with EIO once.
 * ---------------------------------------------------------------------------------------- */

/* Not in the API: the cached reads a stream made on its caller's thread and on pool threads
 * (stream.c). */
void afs__stream_cached_reads(const struct afs_stream *s, uint64_t *inline_n, uint64_t *pool_n);
void afs__stream_windows(const struct afs_stream *s, uint32_t seen[3]);

static struct afs__syscalls cached_saved;
static pthread_t cached_thread;
static int64_t cached_clock, inline_cost, pool_cost, cpu_share = 100;
static int64_t work_cost; /* the consumer's work per afs_fread call, on the fake clock */
static unsigned short_every, eintr_every, cached_calls;
static int64_t eio_at = -1;
static const void *caller_lo, *caller_hi; /* the caller's buffer */
static int into_caller;                    /* reads that went straight into it */

static int64_t fake_now(void)
{
    return __atomic_load_n(&cached_clock, __ATOMIC_SEQ_CST);
}

static int64_t fake_cpu(void)
{
    return fake_now() * cpu_share / 100;
}

static ssize_t costed_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    int mine = pthread_equal(pthread_self(), cached_thread);
    __atomic_add_fetch(&cached_clock, mine ? inline_cost : pool_cost, __ATOMIC_SEQ_CST);
    unsigned n = __atomic_add_fetch(&cached_calls, 1, __ATOMIC_SEQ_CST);
    if ((const char *)buf >= (const char *)caller_lo && (const char *)buf < (const char *)caller_hi)
        __atomic_add_fetch(&into_caller, 1, __ATOMIC_SEQ_CST);
    if (eintr_every && n % eintr_every == 0)
        return -EINTR;
    if (eio_at >= 0 && (int64_t)off <= eio_at && eio_at < (int64_t)(off + len)) {
        eio_at = -1;
        return -EIO;
    }
    if (short_every && n % short_every == 0 && len > 1000)
        len = 1000;
    return cached_saved.pread(fd, buf, len, off);
}

/* The tests' reads of cached files are all served: a stream's reads that must not wait
 * (windows taken as cached without asking) go through the test's pread as well. */
static ssize_t served_nowait(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    return afs__sys.pread(fd, buf, len, off);
}

static void *pinned; /* the test file's pages, held in memory (make_cached) */
static size_t pinned_len;

/* Makes the test file and keeps its pages in the page cache until costs_end: a file just
 * written is the first the kernel drops when memory is short (a machine running other suites,
 * a container's memory limit), and the stream then rightly stops taking it for cached.
 * Where mlock is refused, the pages are read once, and cached_throughout tells. */
static void make_cached(const char *name, size_t len)
{
    t_make_file(t_path(name), len);
    int fd = open(t_path(name), O_RDONLY);
    cr_assert(fd >= 0);
    pinned = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert(pinned != MAP_FAILED, "mmap: %s", strerror(errno));
    pinned_len = len;
    if (mlock(pinned, len) != 0) {
        volatile unsigned char sum = 0;
        for (size_t i = 0; i < len; i += 4096)
            sum += ((const unsigned char *)pinned)[i];
        (void)sum;
    }
}

static void unpin(void)
{
    if (pinned)
        munmap(pinned, pinned_len);
    pinned = NULL;
}

static void costs(int64_t in_ns, int64_t pool_ns, int64_t share)
{
    cached_saved = afs__sys;
    cached_thread = pthread_self();
    cached_clock = 1000000000;
    inline_cost = in_ns;
    pool_cost = pool_ns;
    cpu_share = share;
    work_cost = 0;
    short_every = eintr_every = cached_calls = 0;
    eio_at = -1;
    into_caller = 0;
    caller_lo = caller_hi = NULL;
    afs__sys.pread = costed_pread;
    if (afs__sys.pread_nowait)
        afs__sys.pread_nowait = served_nowait;
    afs__sys.now = fake_now;
    afs__sys.cpu_now = fake_cpu;
}

static void costs_end(void)
{
    afs__sys = cached_saved;
    unpin();
}

/* Whether the rule could see the test file as cached all along: the kernel tells what is
 * cached (cachestat, Linux 6.5), and every page of the file is still there. A file the
 * kernel dropped pages of (mlock refused, memory short) cannot show the rule's choice. */
static int cached_throughout(const char *name)
{
    int fd = open(t_path(name), O_RDONLY);
    cr_assert(fd >= 0);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    struct {
        uint64_t off, len;
    } range = {0, 0};
    uint64_t cs[5];
    int ok = syscall(451, fd, &range, cs, 0) == 0; /* __NR_cachestat */
    close(fd);
    if (ok && cs[0] * 4096 < (uint64_t)st.st_size)
        cr_skip_test("the kernel dropped cached pages of the test's file (memory short)");
    return ok;
}

/* More than one CPU allowed, and a backend with threads: where pool reads may happen. */
static int pool_possible(void)
{
    cpu_set_t set;
    return strcmp(afs_ctx_backend(t_ctx), "sync") != 0 &&
           sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 1;
}

/* Reads the rest of the stream, from `off`, in pieces of `piece` bytes, checking every
 * byte. */
static void read_through_from(struct afs_stream *s, size_t len, size_t off, size_t piece)
{
    unsigned char *buf = malloc(piece);
    caller_lo = buf;
    caller_hi = buf + piece;
    size_t n;
    while ((n = afs_fread(buf, 1, piece, s)) > 0) {
        cr_assert(t_check(buf, n, off), "bad data at %zu", off);
        off += n;
        __atomic_add_fetch(&cached_clock, work_cost, __ATOMIC_SEQ_CST);
    }
    cr_assert_eq(afs_ferror(s), 0, "%s", afs_strerror(afs_ferror(s)));
    cr_assert(afs_feof(s));
    cr_assert_eq(off, len);
    caller_lo = caller_hi = NULL;
    free(buf);
}

/* Reads the whole stream in pieces of `piece` bytes, checking every byte. */
static void read_through(struct afs_stream *s, size_t len, size_t piece)
{
    read_through_from(s, len, 0, piece);
}

/* Not in the API: the stream's page-cache probe (stream.c). */
extern int (*afs__stream_cache_probe)(afs__fd_t fd, int64_t off, int64_t len, uint64_t *cached,
                                      bool *dirty);

/* A probe that finds every range all cached and clean. */
static int all_cached_probe(afs__fd_t fd, int64_t off, int64_t len, uint64_t *cached,
                            bool *dirty)
{
    (void)fd, (void)off;
    *cached = (uint64_t)len;
    *dirty = false;
    return 0;
}

/* A big read of cached data goes straight into the caller's buffer, one copy, as stdio's
 * fread does; small ones come from the chunks. The kernel's answers are the test's own
 * (every window all cached): the pinned pages may not stay pinned (mlock refused where the
 * locked-memory limit is small), and a page the kernel drops meanwhile makes a window the
 * stream rightly reads through chunks (a run in CI read one such window of 1 MiB so: 12 of
 * 17 reads straight), which says nothing of the rule tested here. */
T_IO(cached_big_freads_read_into_the_callers_buffer)
{
    t_new_ctx();
    const size_t len = 3 * 1024 * KIB + 4321;
    make_cached("f", len);
    costs(1000, 1000, 50); /* a busy machine: the consumer's thread copies */
    int (*probe)(afs__fd_t, int64_t, int64_t, uint64_t *, bool *) = afs__stream_cache_probe;
    afs__stream_cache_probe = all_cached_probe;
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    read_through(s, len, 200 * KIB + 3);
    int big = into_caller;
    uint32_t seen[3];
    afs__stream_windows(s, seen);
    uint64_t in_n, pool_n;
    afs__stream_cached_reads(s, &in_n, &pool_n);
    cr_assert_eq(afs_fseek(s, 0, SEEK_SET), 0);
    into_caller = 0;
    read_through(s, len, 4093);
    int small = into_caller;
    cr_assert_eq(afs_fclose(s), 0);
    afs__stream_cache_probe = probe;
    costs_end();
    /* Every full piece and the short last one; no read to find the end: the last one
     * stopped at the size the open saw. */
    int all = (int)(len / (200 * KIB + 3)) + 1;
    cr_assert_eq(big, all,
                 "%d reads into the caller's buffer of %d; windows found all cached %u, "
                 "not all cached %u, no answer %u; pool reads %llu, inline %llu", big, all,
                 seen[0], seen[1], seen[2], (unsigned long long)pool_n,
                 (unsigned long long)in_n);
    cr_assert_eq(seen[1] + seen[2], 0);
    cr_assert_eq(pool_n, 0, "the consumer's thread was busy: no pool reads");
    cr_assert_eq(small, 0);
}

/* For tests (stream.c): the windows a stream took as cached without asking the kernel. */
uint32_t afs__stream_trusted_windows(const struct afs_stream *s);

/* The test's picture of the page cache: all cached but [miss_lo, miss_hi); the probe says
 * so, and a read that must not wait stops there (the data before it, or -EAGAIN). */
static int64_t miss_lo = -1, miss_hi = -1;
static unsigned probe_calls, probe_not_cached, nowait_misses, nowait_calls;
static int64_t probe_miss_off = -1; /* where the probe first found a window not all cached */

static int picture_probe(afs__fd_t fd, int64_t off, int64_t len, uint64_t *cached, bool *dirty)
{
    (void)fd;
    probe_calls++;
    int64_t lo = off > miss_lo ? off : miss_lo;
    int64_t hi = off + len < miss_hi ? off + len : miss_hi;
    *cached = (uint64_t)(len - (hi > lo ? hi - lo : 0));
    *dirty = false;
    if (hi > lo && probe_not_cached++ == 0)
        probe_miss_off = off;
    return 0;
}

static ssize_t picture_nowait(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    nowait_calls++;
    int64_t o = (int64_t)off, end = o + (int64_t)len;
    if (o < miss_hi && end > miss_lo) {
        nowait_misses++;
        if (o >= miss_lo)
            return -EAGAIN;
        len = (size_t)(miss_lo - o);
    }
    return afs__sys.pread(fd, buf, len, off);
}

static int (*saved_probe)(afs__fd_t, int64_t, int64_t, uint64_t *, bool *);

/* A 12 MiB cached file "f" and the picture above with [lo, lo + 2 MiB) not cached; false
 * (nothing to undo) where the system has no read that never waits: every window is asked. */
static bool picture_begin(int64_t lo)
{
    if (!t_ctx) /* one context for every picture of a test */
        t_new_ctx();
    make_cached("f", 12 * 1024 * KIB + 5);
    costs(1000, 1000, 50);
    if (!afs__sys.pread_nowait) {
        costs_end();
        return false;
    }
    afs__sys.pread_nowait = picture_nowait;
    saved_probe = afs__stream_cache_probe;
    afs__stream_cache_probe = picture_probe;
    miss_lo = lo;
    miss_hi = lo + 2 * 1024 * KIB;
    probe_calls = probe_not_cached = nowait_misses = nowait_calls = 0;
    probe_miss_off = -1;
    return true;
}

static void picture_end(void)
{
    afs__stream_cache_probe = saved_probe;
    costs_end();
    miss_lo = miss_hi = -1;
}

/* A stream counts its cached reads itself (a read touches no page of the context): the
 * context's stats have them while the stream is open, once, and keep them after its close.
 * The page cache is the test's picture, all cached (under qemu the kernel cannot be asked). */
T_IO(a_streams_cached_reads_are_in_the_contexts_stats_while_open_and_after_close)
{
    t_new_ctx();
    const size_t len = 4 * 1024 * KIB;
    make_cached("f", len);
    static unsigned char buf[64 * KIB];
    struct afs_stats a, b, c;
    afs_ctx_stats(t_ctx, &a);
    int (*probe)(afs__fd_t, int64_t, int64_t, uint64_t *, bool *) = afs__stream_cache_probe;
    afs__stream_cache_probe = picture_probe;
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    for (size_t off = 0; off < len; off += sizeof buf) {
        cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), sizeof buf);
        cr_assert(t_check(buf, sizeof buf, off));
    }
    uint64_t inline_n, pool_n;
    afs__stream_cached_reads(s, &inline_n, &pool_n);
    afs_ctx_stats(t_ctx, &b);
    cr_assert_eq(afs_fclose(s), 0);
    afs_ctx_stats(t_ctx, &c);
    afs__stream_cache_probe = probe;
    cr_assert_geq(inline_n, 1, "no read on the caller's thread");
    cr_assert_eq(b.inline_ops - a.inline_ops, inline_n, "open: %llu inline ops for %llu reads",
                 (unsigned long long)(b.inline_ops - a.inline_ops),
                 (unsigned long long)inline_n);
    cr_assert_eq(c.inline_ops, b.inline_ops, "closed: %llu inline ops, %llu before",
                 (unsigned long long)c.inline_ops, (unsigned long long)b.inline_ops);
}

/* After a window found all cached, the next ones are not asked about: their reads never
 * wait for the device, so they tell. The probe's cost grows with the folios it looks at (15
 * to 30 us per 16 MiB where the file is in small ones), about 0.6% of copying them. */
T_IO(cached_windows_after_an_all_cached_one_are_not_asked_about)
{
    t_new_ctx();
    const size_t len = 20 * 1024 * KIB + 77; /* 321 chunks of 64 KiB: windows of 1 MiB */
    make_cached("f", len);
    costs(1000, 1000, 50); /* a busy machine: the consumer's thread copies */
    int (*probe)(afs__fd_t, int64_t, int64_t, uint64_t *, bool *) = afs__stream_cache_probe;
    afs__stream_cache_probe = picture_probe;
    if (afs__sys.pread_nowait)
        afs__sys.pread_nowait = picture_nowait; /* counts; all cached (undone by costs_end) */
    miss_lo = miss_hi = -1;
    static const size_t pieces[] = {100 * KIB + 1, 4093};
    for (size_t i = 0; i < 2; i++) {
        probe_calls = nowait_calls = 0;
        struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
        read_through(s, len, pieces[i]);
        uint32_t seen[3], trusted = afs__stream_trusted_windows(s);
        afs__stream_windows(s, seen);
        cr_assert_eq(afs_fclose(s), 0);
        if (afs__sys.pread_nowait) {
            /* The first window (one chunk) and the second (the rest of 16 chunks). */
            cr_assert_leq(probe_calls, 2, "pieces of %zu: the cache asked %u times (%u "
                          "windows not asked)", pieces[i], probe_calls, trusted);
            cr_assert_geq(trusted, 18, "pieces of %zu: %u windows not asked", pieces[i],
                          trusted);
            /* Reads that never wait cost more than plain ones: a window's first and then
             * one per 4 MiB read (STREAM_NOWAIT_SPAN) check for pages not cached. */
            unsigned most = (unsigned)(len / (1024 * KIB)) + 2 * trusted + 2;
            cr_assert_leq(nowait_calls, most, "pieces of %zu: %u reads that never wait "
                          "(at most %u)", pieces[i], nowait_calls, most);
        } else {
            cr_assert_eq(trusted, 0, "no read that never waits: every window asked");
        }
        cr_assert_eq(seen[1] + seen[2], 0);
    }
    afs__stream_cache_probe = probe;
    costs_end();
}

/* A window not asked about that meets data not cached ends there: the kernel is asked about
 * the next one at once, from the reader's position, and the rest is read as for any window
 * not all cached; every byte arrives. */
T_IO(a_window_not_asked_about_that_meets_uncached_data_asks_again)
{
    static const size_t pieces[] = {100 * KIB + 1, 4093};
    for (size_t i = 0; i < 2; i++) {
        /* Inside the fifth window, not on a chunk's edge. */
        if (!picture_begin(4 * 1024 * KIB + 300 * KIB + 4096))
            return;
        const size_t len = 12 * 1024 * KIB + 5;
        struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
        read_through(s, len, pieces[i]);
        uint32_t seen[3], trusted = afs__stream_trusted_windows(s);
        afs__stream_windows(s, seen);
        cr_assert_eq(afs_fclose(s), 0);
        int64_t lo = miss_lo;
        picture_end();
        cr_assert_geq(nowait_misses, 1, "pieces of %zu: the miss was never met", pieces[i]);
        cr_assert_geq(seen[1], 1, "pieces of %zu: no window found not all cached", pieces[i]);
        /* From the reader's position, at the first checked read that meets the miss: a
         * window's first read is checked (and then one per 4 MiB read, STREAM_NOWAIT_SPAN),
         * and the windows here are of 1 MiB, so within a MiB and a read of it, or up to a
         * chunk before it (a chunk is filled ahead of the reader). */
        cr_assert(probe_miss_off > lo - (int64_t)(64 * KIB) &&
                      probe_miss_off <= lo + (int64_t)(1024 * KIB + pieces[i] + 64 * KIB),
                  "pieces of %zu: asked again from %lld, not near the miss (%lld)", pieces[i],
                  (long long)probe_miss_off, (long long)lo);
        /* Windows before the miss, and after it once a window was found all cached again. */
        cr_assert_geq(trusted, 4, "pieces of %zu: %u windows not asked", pieces[i], trusted);
        cr_assert_eq(seen[2], 0);
    }
}

/* A seek inside a chunk past what its fill read, in a window not asked about: the fill stops
 * at a page not cached before the reader's position. That is no end of the file: the next
 * window is asked about, and the data come as for any window not all cached. (Chunks of 256
 * KiB: a chunk entered in order after a seek is filled 64 KiB first.) */
T_IO(a_fill_cut_short_before_the_reader_is_no_end_of_file)
{
    const int64_t chunk_at = 9 * 1024 * KIB;
    if (!picture_begin(chunk_at + 100 * KIB))
        return;
    struct afs_stream *s = s_open("f", "r", 256 * KIB, 4);
    /* Windows found all cached, then ones not asked about. */
    static unsigned char piece[4093];
    for (size_t off = 0; off < 8 * 1024 * KIB; off += sizeof piece) {
        cr_assert_eq(afs_fread(piece, 1, sizeof piece, s), sizeof piece);
        cr_assert(t_check(piece, sizeof piece, off));
    }
    unsigned char buf[16];
    /* Out of the chunks, up to the chunk's start: the reader's pages are read as stdio
     * reads them... */
    cr_assert_eq(afs_fseek(s, chunk_at - 4 * KIB, SEEK_SET), 0);
    cr_assert_eq(afs_fread(piece, 1, 4 * KIB - 16, s), 4 * KIB - 16);
    cr_assert(t_check(piece, 4 * KIB - 16, (size_t)chunk_at - 4 * KIB));
    cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), sizeof buf);
    cr_assert(t_check(buf, sizeof buf, (size_t)chunk_at - 16));
    /* ...then in order, into a window not asked about: the chunk there is filled with its
     * first 64 KiB... */
    cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), sizeof buf);
    cr_assert(t_check(buf, sizeof buf, (size_t)chunk_at));
    /* ...and a seek inside it, past the fill and the miss. */
    cr_assert_eq(afs_fseek(s, chunk_at + 140 * KIB, SEEK_SET), 0);
    size_t got = afs_fread(buf, 1, sizeof buf, s);
    int eof = afs_feof(s), err = afs_ferror(s);
    uint32_t trusted = afs__stream_trusted_windows(s);
    cr_assert_eq(afs_fclose(s), 0);
    picture_end();
    cr_assert_eq(got, sizeof buf, "%zu bytes, eof %d, error %d", got, eof, err);
    cr_assert(t_check(buf, sizeof buf, (size_t)(chunk_at + 140 * KIB)));
    cr_assert_geq(trusted, 1, "no window was taken as cached without asking");
    cr_assert_geq(nowait_misses, 1, "the miss was never met");
}

/* Reads a 40 MiB cached file in 100 KiB pieces (64 KiB chunks) with the given costs (and
 * pread, or NULL for costed_pread) and `work` ns of work per piece; returns the stream's
 * cached reads of each kind. */
static void read_40mib(int64_t in_ns, int64_t pool_ns, int64_t share, int64_t work,
                       ssize_t (*pread)(afs__fd_t, void *, size_t, uint64_t), uint64_t *in,
                       uint64_t *pool)
{
    t_new_ctx();
    const size_t len = 40 * 1024 * KIB + 99; /* 640 chunks, 40 windows */
    make_cached("f", len);
    costs(in_ns, pool_ns, share);
    if (pread)
        afs__sys.pread = pread;
    work_cost = work;
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    read_through(s, len, 100 * KIB + 1);
    afs__stream_cached_reads(s, in, pool);
    cr_assert_eq(afs_fclose(s), 0);
    costs_end();
}

/* Where a pool thread's copy is cheaper than the consumer's (it overlaps the consumer's
 * work), the stream has pool threads read its cached chunks, and keeps the consumer's thread
 * for the rest: the first window, and the other mode timed again now and then. */
T_IO(cached_chunks_go_to_a_pool_thread_when_that_is_cheaper)
{
    uint64_t in, pool;
    read_40mib(10000000, 1000, 100, 20000000, NULL, &in, &pool);
    if (cached_throughout("f") && pool_possible()) {
        cr_assert_gt(pool, 500, "%llu pool reads, %llu inline", (unsigned long long)pool,
                     (unsigned long long)in);
        cr_assert_lt(in, 120, "%llu inline reads", (unsigned long long)in);
    } else {
        cr_assert_eq(pool, 0);
    }
}

/* The other way round: the consumer's own copy is cheaper; the pool is tried, then left. */
T_IO(cached_chunks_stay_inline_when_that_is_cheaper)
{
    t_new_ctx();
    const size_t len = 40 * 1024 * KIB + 99;
    make_cached("f", len);
    costs(1000, 10000000, 100);
    work_cost = 1000;
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    read_through(s, len, 4096);
    uint64_t in, pool;
    afs__stream_cached_reads(s, &in, &pool);
    cr_assert_eq(afs_fclose(s), 0);
    costs_end();
    if (cached_throughout("f")) {
        /* Window 3 tried the pool, window 19 again: 16 chunks each, a few more in flight. */
        cr_assert_leq(pool, 2 * 16 + 8, "%llu pool reads", (unsigned long long)pool);
        cr_assert_gt(in, 500, "%llu inline reads", (unsigned long long)in);
    }
}

/* The stream's first window pays for first touches (here: its reads cost 100,000 times
 * more): it is not timed, so it does not make the consumer's own copies look dearer than a
 * pool thread's for the rest of the file. */
static ssize_t first_window_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    if (pthread_equal(pthread_self(), cached_thread))
        inline_cost = off < 1024 * KIB ? 100000000 : 1000;
    return costed_pread(fd, buf, len, off);
}

T_IO(cached_first_window_is_not_timed)
{
    uint64_t in, pool;
    read_40mib(1000, 2000000, 100, 1000000, first_window_pread, &in, &pool);
    if (cached_throughout("f"))
        cr_assert_leq(pool, 2 * 16 + 8, "%llu pool reads, %llu inline",
                      (unsigned long long)pool, (unsigned long long)in);
}

/* Cached data read in small pieces: the first fill of a big file reads what is asked, in
 * pages (a reader of a few bytes copies 4 KiB, as stdio does), the next ones 64 KiB, then
 * twice as much each, up to whole chunks, and again from 4 KiB after a seek; every
 * byte is read from the file once while the reader goes on in order, and right with short
 * reads, EINTR and an EIO in the middle of a chunk (kept until afs_clearerr, then read
 * again). */
static size_t first_len, bytes_read; /* asked by the first pread; read in all */

static ssize_t counting_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    ssize_t r = costed_pread(fd, buf, len, off);
    if (pthread_equal(pthread_self(), cached_thread)) {
        if (!first_len)
            first_len = len;
        bytes_read += r > 0 ? (size_t)r : 0;
    }
    return r;
}

/* A seek into the middle of a cached chunk and a small read there read the reader's pages,
 * as stdio reads its buffer there, not the chunk from its start up to the reader; a seek back
 * inside the chunk, before what it holds, reads again from there. Every byte checked. */
T_IO(cached_small_freads_after_a_seek_read_from_the_readers_page)
{
    t_new_ctx();
    const size_t len = 8 * 1024 * KIB + 11;
    make_cached("f", len);
    costs(1000, 1000, 50);
    afs__sys.pread = counting_pread;
    struct afs_stream *s = s_open("f", "r", 1024 * KIB, 4);
    /* Offsets in the middle of 1 MiB chunks, none in a chunk read before. */
    static const int64_t at[] = {5 * 1024 * KIB + 700 * KIB + 13, 2 * 1024 * KIB + 900 * KIB,
                                 6 * 1024 * KIB + 333 * KIB + 4095, 1024 * KIB + 512 * KIB + 1};
    unsigned char buf[100];
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        bytes_read = 0;
        cr_assert_eq(afs_fseek(s, at[i], SEEK_SET), 0);
        cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), sizeof buf);
        cr_assert(t_check(buf, sizeof buf, (size_t)at[i]));
        if (cached_throughout("f"))
            cr_assert_leq(bytes_read, 8 * KIB, "a read of 100 bytes at %lld read %zu bytes",
                          (long long)at[i], bytes_read);
    }
    /* Back inside the last chunk, before the page read there. */
    int64_t back = at[3] - 300 * KIB;
    cr_assert_eq(afs_fseek(s, back, SEEK_SET), 0);
    cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), sizeof buf);
    cr_assert(t_check(buf, sizeof buf, (size_t)back));
    read_through_from(s, len, (size_t)back + sizeof buf, 4093);
    cr_assert_eq(afs_fclose(s), 0);
    costs_end();
}


T_IO(cached_small_freads_fill_chunks_as_far_as_needed)
{
    t_new_ctx();
    const size_t len = 5 * 1024 * KIB + 333;
    make_cached("f", len);
    costs(1000, 1000, 50); /* a busy machine: the consumer's thread copies */
    afs__sys.pread = counting_pread;
    first_len = bytes_read = 0;
    struct afs_stream *s = s_open("f", "r", 1024 * KIB, 4);
    unsigned char buf[4093];
    cr_assert_eq(afs_fread(buf, 1, 10, s), 10);
    cr_assert(t_check(buf, 10, 0));
    size_t first = first_len;
    read_through_from(s, len, 10, sizeof buf);
    size_t once = bytes_read;
    /* Read on this thread, each window found cached: what the count below is about. Under a
     * heavy load the rule can still take the pool for a window (the choice is timed), and
     * the bytes are then read on its threads, which the count leaves out. */
    uint32_t seen[3];
    uint64_t in_n, pool_n;
    afs__stream_windows(s, seen);
    afs__stream_cached_reads(s, &in_n, &pool_n);
    bool on_this_thread = seen[1] == 0 && seen[2] == 0 && pool_n == 0;
    cr_assert_eq(afs_fseek(s, 3 * 1024 * KIB + 5, SEEK_SET), 0);
    first_len = 0;
    cr_assert_eq(afs_fread(buf, 1, 100, s), 100);
    cr_assert(t_check(buf, 100, 3 * 1024 * KIB + 5));
    size_t after_seek = first_len;
    /* Short reads, EINTR and an EIO, from a seek on. */
    short_every = 7;
    eintr_every = 5;
    eio_at = 3 * 1024 * KIB + 300 * KIB + 1;
    size_t off = 3 * 1024 * KIB + 105, n;
    int eio_seen = 0;
    for (;;) {
        n = afs_fread(buf, 1, sizeof buf, s);
        cr_assert(t_check(buf, n, off), "bad data at %zu", off);
        off += n;
        if (n == sizeof buf)
            continue;
        if (!afs_ferror(s))
            break;
        cr_assert_eq(afs_ferror(s), -EIO);
        eio_seen++;
        afs_clearerr(s);
    }
    cr_assert(afs_feof(s));
    cr_assert_eq(off, len);
    cr_assert_leq(eio_seen, 1);
    cr_assert_eq(afs_fclose(s), 0);
    costs_end();
    /* Where the kernel cannot tell what is cached (qemu's user mode has no cachestat), the
     * chunk with the EIO was read whole before the fault was set: only the cached path's
     * growing fills reach it. */
    if (cached_throughout("f")) {
        cr_assert_eq(eio_seen, 1);
        cr_assert_eq(first, 4 * KIB, "the first fill: %zu bytes", first);
        cr_assert_eq(after_seek, 4 * KIB, "the first fill after a seek: %zu", after_seek);
        if (on_this_thread)
            cr_assert_eq(once, len, "%zu bytes read for %zu", once, len);
        else
            cr_log_info("windows %u/%u/%u, %llu pool reads: the count is not checked", seen[0],
                        seen[1], seen[2], (unsigned long long)pool_n);
    }
}

/* Descriptors of this process open on the test file with O_DIRECT. */
static int direct_fds(const char *name)
{
    struct stat want, st;
    cr_assert_eq(stat(t_path(name), &want), 0);
    int n = 0;
    for (int fd = 0; fd < 1024; fd++) {
        char path[64], line[128];
        if (fstat(fd, &st) != 0 || st.st_ino != want.st_ino || st.st_dev != want.st_dev)
            continue;
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "flags:", 6) == 0)
                n += (strtoul(line + 6, NULL, 8) & O_DIRECT) != 0;
        fclose(f);
    }
    return n;
}

/* The O_DIRECT file of a big read-only stream is opened when a window is first found not
 * all cached: never for a cached file, nor for the head of it; for a cold one, not for the
 * pages of its first small read (read as stdio reads them, nothing asked), at the first
 * window after them found not all cached. */
T_IO(direct_file_is_opened_at_the_first_uncached_window)
{
    t_new_ctx();
    const size_t len = 64 * 64 * KIB + 333; /* 65 chunks */
    make_cached("f", len);
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    unsigned char buf[16];
    cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), sizeof buf);
    cr_assert(t_check(buf, sizeof buf, 0));
    uint32_t head_seen[3], all_seen[3];
    afs__stream_windows(s, head_seen);
    int cached_head = direct_fds("f");
    read_through_from(s, len, sizeof buf, 100 * KIB);
    afs__stream_windows(s, all_seen);
    int cached_all = direct_fds("f");
    cr_assert_eq(afs_fclose(s), 0);
    int held = cached_throughout("f");
    unpin();
    /* Opened exactly when the kernel said a window was not all cached (where the file
     * system takes O_DIRECT at all). */
    int can = direct_expected("f");
    cr_assert_eq(cached_head, can && head_seen[1] > 0, "head: direct %d, not all cached %u",
                 cached_head, head_seen[1]);
    cr_assert_eq(cached_all, can && all_seen[1] > 0, "all: direct %d, not all cached %u",
                 cached_all, all_seen[1]);
    if (held) {
        /* Seen once under a loaded full run, never alone: cachestat counting pages of the
         * locked file out of the cache for a moment. What the stream did with that answer
         * is checked above. */
        if (all_seen[1] > 0)
            cr_skip_test("cachestat found pages of the test's locked file not cached");
        cr_assert_eq(cached_head, 0);
        cr_assert_eq(cached_all, 0);
    }
    make_cold("f");
    s = s_open("f", "r", 64 * KIB, 4);
    int at_open = direct_fds("f");
    cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), sizeof buf);
    cr_assert(t_check(buf, sizeof buf, 0));
    int at_read = direct_fds("f"); /* the first read's page, read as stdio would */
    /* Past it, through the first windows: the kernel's own read-ahead behind that page may
     * have cached the first one meanwhile, not all of the second (up to 1 MiB). */
    static unsigned char more[1024 * KIB];
    cr_assert_eq(afs_fread(more, 1, sizeof more, s), sizeof more);
    cr_assert(t_check(more, sizeof more, sizeof buf));
    int past_it = direct_fds("f");
    uint32_t seen[3];
    afs__stream_windows(s, seen);
    cr_assert_eq(afs_fclose(s), 0);
    cr_assert_eq(at_open, 0);
    cr_assert_eq(at_read, 0);
    if (direct_expected("f")) {
        cr_assert_gt(seen[1], 0, "no window of the cold file found not all cached");
        cr_assert_eq(past_it, 1);
    }
}

/* A cached file with less than 64 KiB to read is read whole by its first fill: its end is
 * seen by that one read. */
T_IO(cached_small_file_is_read_whole_at_once)
{
    t_new_ctx();
    const size_t len = 20 * KIB + 7;
    make_cached("f", len);
    costs(1000, 1000, 50);
    afs__sys.pread = counting_pread;
    first_len = bytes_read = 0;
    struct afs_stream *s = s_open("f", "r", 1024 * KIB, 4);
    unsigned char buf[16];
    cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), sizeof buf);
    cr_assert(t_check(buf, sizeof buf, 0));
    size_t first = first_len, calls = cached_calls;
    read_through_from(s, len, sizeof buf, 1000);
    cr_assert_eq(afs_fclose(s), 0);
    costs_end();
    if (cached_throughout("f")) {
        cr_assert_eq(first, 64 * KIB, "the first fill: %zu bytes", first);
        cr_assert_eq(calls, 1, "%zu reads for the first fill", calls);
        cr_assert_eq(bytes_read, len);
    }
}

/* Opening a stream makes no buffer; a read of a whole small file goes into the caller's
 * buffer and makes none either, and asks the kernel nothing about the cache (stdio reads it
 * the same way); the head of a bigger file takes one buffer, and the cache is asked about
 * only when the reader goes past the first read's pages. */
T_IO(small_files_and_heads_cost_what_stdio_pays)
{
    counting_ctx();
    t_make_file(t_path("small"), 4 * KIB);
    struct afs_stream *s = s_open("small", "r", 1024 * KIB, 4);
    cr_assert_eq(buf_allocs, 0, "no buffer at the open");
    unsigned char buf[16 * KIB];
    cr_assert_eq(afs_fread(buf, 1, 4 * KIB, s), 4 * KIB);
    cr_assert(t_check(buf, 4 * KIB, 0));
    cr_assert_eq(afs_fread(buf, 1, 4 * KIB, s), 0);
    cr_assert(afs_feof(s));
    uint32_t seen[3];
    afs__stream_windows(s, seen);
    cr_assert_eq(seen[0] + seen[1] + seen[2], 0, "the cache was asked about");
    cr_assert_eq(buf_allocs, 0, "a buffer for a file read whole");
    cr_assert_eq(afs_fclose(s), 0);
    /* 48 KiB in 4 KiB reads: the first fill reads it whole, into one buffer. */
    t_make_file(t_path("mid"), 48 * KIB);
    s = s_open("mid", "r", 1024 * KIB, 4);
    for (size_t off = 0; off < 48 * KIB; off += 4 * KIB) {
        cr_assert_eq(afs_fread(buf, 1, 4 * KIB, s), 4 * KIB);
        cr_assert(t_check(buf, 4 * KIB, off));
    }
    cr_assert_eq(afs_fread(buf, 1, 4 * KIB, s), 0);
    afs__stream_windows(s, seen);
    cr_assert_eq(seen[0] + seen[1] + seen[2], 0, "the cache was asked about");
    cr_assert_eq(afs_fclose(s), 0);
    cr_assert_eq(buf_allocs, 1);
    /* The head of a 2 MiB file: its first page, nothing asked; then past it. */
    t_make_file(t_path("big"), 2048 * KIB);
    s = s_open("big", "r", 1024 * KIB, 4);
    cr_assert_eq(afs_fread(buf, 1, 16, s), 16);
    cr_assert(t_check(buf, 16, 0));
    afs__stream_windows(s, seen);
    cr_assert_eq(seen[0] + seen[1] + seen[2], 0, "the cache was asked about the head");
    cr_assert_eq(buf_allocs, 1, "the head in the buffer kept from before");
    cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), sizeof buf);
    cr_assert(t_check(buf, sizeof buf, 16));
    afs__stream_windows(s, seen);
    cr_assert_eq(seen[0] + seen[1] + seen[2], 1, "the cache asked about past the head");
    cr_assert_eq(afs_fclose(s), 0);
    afs_ctx_free(t_ctx);
    t_ctx = NULL;
    cr_assert_eq(buf_releases, buf_allocs);
}

/* Big reads of cached data go straight into the caller's buffer, right with short reads and
 * EINTR, and mixed with small reads that fill a chunk, a seek back into that chunk and big
 * reads again: every byte where it belongs. */
T_IO(cached_big_freads_go_into_the_callers_buffer)
{
    t_new_ctx();
    const size_t len = 5 * 1024 * KIB + 333, piece = 64 * KIB + 1;
    make_cached("f", len);
    costs(1000, 1000, 50); /* a busy machine: the consumer's thread copies */
    short_every = 3;
    eintr_every = 4;
    struct afs_stream *s = s_open("f", "r", 1024 * KIB, 4);
    unsigned char *buf = malloc(piece);
    caller_lo = buf;
    caller_hi = buf + piece;
    cr_assert_eq(afs_fread(buf, 1, 10, s), 10); /* fills part of chunk 0 */
    cr_assert(t_check(buf, 10, 0));
    size_t off = 10, n;
    while (off < 3 * 1024 * KIB && (n = afs_fread(buf, 1, piece, s)) > 0) {
        cr_assert(t_check(buf, n, off), "bad data at %zu", off);
        off += n;
    }
    cr_assert_eq(afs_fseek(s, 100, SEEK_SET), 0);
    cr_assert_eq(afs_fread(buf, 1, 50, s), 50);
    cr_assert(t_check(buf, 50, 100));
    off = 150;
    while ((n = afs_fread(buf, 1, piece, s)) > 0) {
        cr_assert(t_check(buf, n, off), "bad data at %zu", off);
        off += n;
    }
    cr_assert_eq(afs_ferror(s), 0, "%s", afs_strerror(afs_ferror(s)));
    cr_assert(afs_feof(s));
    cr_assert_eq(off, len);
    int direct = into_caller;
    caller_lo = caller_hi = NULL;
    free(buf);
    cr_assert_eq(afs_fclose(s), 0);
    costs_end();
    if (cached_throughout("f"))
        cr_assert_gt(direct, 2 * 64, "%d reads into the caller's buffer", direct);
}

/* Reads a 40 MiB cached file in 100 KiB pieces where pool reads look far cheaper than the
 * consumer's own, with `work` ns of work per piece and `share`% of the wall time on a CPU,
 * and checks that no read went to the pool. */
static void stays_inline(int64_t work, int64_t share)
{
    uint64_t in, pool;
    read_40mib(10000000, 1000, share, work, NULL, &in, &pool);
    cr_assert_eq(pool, 0, "%llu pool reads", (unsigned long long)pool);
    if (cached_throughout("f"))
        cr_assert_gt(in, 0);
}

/* A consumer that does nothing but read has no work to hide a pool thread's copy behind (it
 * would wait for that copy, then copy once more): the pool is not even tried, however cheap
 * its reads look, and the stream costs what fread costs. */
T_IO(cached_reads_stay_inline_for_a_consumer_that_only_reads)
{
    stays_inline(0, 100);
}

/* A consumer whose thread waits for a CPU (others run on it) has no idle core to hand
 * copies to: the pool is not even tried. */
T_IO(cached_reads_stay_inline_on_a_busy_machine)
{
    stays_inline(20000000, 50);
}

/* Whatever the mode, and while it changes: every byte right, with short reads, EINTR, an
 * EIO (kept until afs_clearerr, then read again), seeks, ftell and EOF. The costs change
 * every few reads, so the windows pick one mode and then the other. */
static ssize_t flipping_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    unsigned n = __atomic_load_n(&cached_calls, __ATOMIC_SEQ_CST);
    int64_t c = (n / 40) % 2 ? 10000000 : 1000;
    inline_cost = c;
    pool_cost = 10001000 - c;
    return costed_pread(fd, buf, len, off);
}

T_IO(cached_reads_keep_every_byte_while_modes_change)
{
    t_new_ctx();
    const size_t len = 20 * 1024 * KIB + 777;
    make_cached("f", len);
    costs(1000, 1000, 100);
    afs__sys.pread = flipping_pread;
    short_every = 7;
    eintr_every = 5;
    eio_at = 9 * 1024 * KIB + 5;
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    const size_t pieces[] = {4093, 100 * KIB + 1, 64 * KIB, 1, 300 * KIB};
    unsigned char *buf = malloc(300 * KIB);
    size_t off = 0;
    int eio_seen = 0;
    for (unsigned i = 0;; i++) {
        size_t want = pieces[i % 5];
        size_t n = afs_fread(buf, 1, want, s);
        cr_assert(t_check(buf, n, off), "bad data at %zu", off);
        off += n;
        cr_assert_eq(afs_ftell(s), (int64_t)off);
        __atomic_add_fetch(&cached_clock, 5000000, __ATOMIC_SEQ_CST); /* the work */
        if (n < want) {
            if (afs_ferror(s)) {
                cr_assert_eq(afs_ferror(s), -EIO);
                eio_seen++;
                afs_clearerr(s);
                continue;
            }
            cr_assert(afs_feof(s));
            break;
        }
        if (i % 50 == 49) {
            /* Back a little, and forward again, out of the read-ahead window. */
            size_t back = AFS_TEST_MIN(off, 500 * KIB + 3);
            cr_assert_eq(afs_fseek(s, -(int64_t)back, SEEK_CUR), 0);
            off -= back;
        }
    }
    cr_assert_eq(off, len);
    if (eio_at < 0)
        cr_assert_eq(eio_seen, 1, "the injected EIO reported once");
    else /* Never injected: its window was read by the backend, not through the pread seen
          * here (posix-aio where the kernel does not say what is cached). */
        cr_assert(eio_seen == 0 && !cached_throughout("f"), "%d EIO seen", eio_seen);
    cr_assert_eq(afs_fread(buf, 1, 1, s), 0, "EOF is sticky");
    cr_assert_eq(afs_fseek(s, (int64_t)len - 5000, SEEK_SET), 0);
    cr_assert_eq(afs_fread(buf, 1, 300 * KIB, s), 5000);
    cr_assert(t_check(buf, 5000, len - 5000));
    uint64_t in, pool;
    afs__stream_cached_reads(s, &in, &pool);
    cr_assert_eq(afs_fclose(s), 0);
    costs_end();
    free(buf);
    if (cached_throughout("f") && pool_possible())
        cr_assert(in > 0 && pool > 0, "both modes ran: %llu inline, %llu pool",
                  (unsigned long long)in, (unsigned long long)pool);
}

/* ---- Random reads after seeks ---- */

/* The next of a fixed-seed xorshift sequence: the tests' offsets and sizes. */
static uint64_t next_rand(uint64_t *x)
{
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

/* Many seeks (from the start, from the position, from the end), each followed by one to
 * three reads of any size, some crossing chunks or the end of the file: every byte is what
 * pread reads there, on a cached file, then on one whose pages were dropped. */
T_IO(random_seeks_read_every_byte_right)
{
    t_new_ctx();
    const size_t len = 3 * 1024 * KIB + 12345;
    make_cached("f", len);
    int fd = open(t_path("f"), O_RDONLY);
    cr_assert(fd >= 0);
    unsigned char *buf = malloc(300 * KIB), *want = malloc(300 * KIB);
    static const size_t chunks[] = {64 * KIB, 1024 * KIB};
    for (int pass = 0; pass < 4; pass++) {
        if (pass == 2) {
            unpin();
            make_cold("f");
        }
        struct afs_stream *s = s_open("f", "r", chunks[pass % 2], 4);
        uint64_t x = 0x9E3779B97F4A7C15ull + (uint64_t)pass;
        int64_t pos = 0;
        for (int i = 0; i < 600; i++) {
            int64_t to = (int64_t)(next_rand(&x) % (len + 100));
            if (i % 3 == 0)
                to &= ~(int64_t)4095; /* a page's start, as record readers seek */
            int whence = (int)(next_rand(&x) % 3);
            int64_t arg = whence == SEEK_SET ? to : whence == SEEK_CUR ? to - pos
                                                                         : to - (int64_t)len;
            cr_assert_eq(afs_fseek(s, arg, whence), 0, "seek %d to %lld", whence,
                         (long long)to);
            pos = to;
            for (uint64_t k = next_rand(&x) % 3 + 1; k > 0; k--) {
                uint64_t r = next_rand(&x);
                size_t ask = r % 4 == 0 ? (size_t)(r >> 8) % (300 * KIB) + 1
                             : r % 4 == 1 ? 4 * KIB
                                          : (size_t)(r >> 8) % (8 * KIB) + 1;
                size_t n = afs_fread(buf, 1, ask, s);
                size_t exp = pos < (int64_t)len ? AFS_TEST_MIN(ask, len - (size_t)pos) : 0;
                cr_assert_eq(n, exp, "pass %d: %zu of %zu bytes at %lld", pass, n, ask,
                             (long long)pos);
                cr_assert_eq(afs_ferror(s), 0, "%s", afs_strerror(afs_ferror(s)));
                cr_assert_eq(pread(fd, want, exp, pos), (ssize_t)exp);
                cr_assert_eq(memcmp(buf, want, n), 0, "pass %d: bad data at %lld", pass,
                             (long long)pos);
                pos += (int64_t)n;
                cr_assert_eq(afs_ftell(s), pos);
                if (n < ask) {
                    cr_assert(afs_feof(s));
                    break;
                }
            }
        }
        cr_assert_eq(afs_fclose(s), 0);
    }
    close(fd);
    free(buf);
    free(want);
    unpin();
}

/* What a random read of cached data costs the stream: its system calls and the bytes they
 * read, counted at the system-call table and the page-cache probe. */
static struct afs__syscalls seek_saved;
static int (*seek_saved_probe)(afs__fd_t, int64_t, int64_t, uint64_t *, bool *);
static unsigned seek_clocks, seek_probes, seek_reads;
static uint64_t seek_bytes;

static int64_t seek_now(void)
{
    seek_clocks++;
    return seek_saved.now();
}

static int64_t seek_cpu_now(void)
{
    seek_clocks++;
    return seek_saved.cpu_now();
}

static ssize_t seek_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    seek_reads++;
    seek_bytes += len;
    return seek_saved.pread(fd, buf, len, off);
}

static ssize_t seek_pread_nowait(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    seek_reads++;
    seek_bytes += len;
    return seek_saved.pread_nowait(fd, buf, len, off);
}

static int seek_probe(afs__fd_t fd, int64_t off, int64_t len, uint64_t *cached, bool *dirty)
{
    seek_probes++;
    return seek_saved_probe(fd, off, len, cached, dirty);
}

/* Random reads after seeks cost what stdio's fseek and fread cost (lseek and one read of
 * what is asked): one read system call of the pages asked for, no clock read (the thread's
 * CPU time is a system call) and no page-cache probe, whether the stream read in order
 * before (its windows taken as cached) or seeks from its start. Before, each read after a
 * seek opened a window of the cached-data rule: two clocks, and the probe where the last
 * window was not all cached. */
T_IO(a_random_read_after_a_seek_costs_one_read_and_no_clock)
{
    t_new_ctx();
    const size_t len = 8 * 1024 * KIB + 5;
    make_cached("f", len);
    unsigned char *buf = malloc(64 * KIB);
    static const size_t asks[] = {4 * KIB, 64 * KIB};
    for (int pass = 0; pass < 4; pass++) {
        size_t ask = asks[pass / 2];
        struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
        if (pass % 2 == 0) {
            /* In order first: windows asked about, then taken as cached. */
            for (size_t off = 0; off < 2 * 1024 * KIB; off += 4 * KIB) {
                cr_assert_eq(afs_fread(buf, 1, 4 * KIB, s), 4 * KIB);
                cr_assert(t_check(buf, 4 * KIB, off));
            }
        }
        /* Nothing of the in-order phase left in flight when the hooks go in. */
        for (;;) {
            struct afs_stats st;
            afs_ctx_stats(t_ctx, &st);
            if (st.ops == st.completions)
                break;
            cr_assert_geq(afs_ctx_wait(t_ctx, 1, 10LL * 1000 * 1000), 0);
        }
        seek_saved = afs__sys;
        seek_saved_probe = afs__stream_cache_probe;
        afs__sys.now = seek_now;
        if (afs__sys.cpu_now)
            afs__sys.cpu_now = seek_cpu_now;
        afs__sys.pread = seek_pread;
        if (afs__sys.pread_nowait)
            afs__sys.pread_nowait = seek_pread_nowait;
        afs__stream_cache_probe = seek_probe;
        seek_clocks = seek_probes = seek_reads = 0;
        seek_bytes = 0;
        uint64_t x = 0x2545F4914F6CDD1Dull;
        const unsigned n = 200;
        for (unsigned i = 0; i < n; i++) {
            uint64_t off = next_rand(&x) % (len / ask) * ask;
            cr_assert_eq(afs_fseek(s, (int64_t)off, SEEK_SET), 0);
            cr_assert_eq(afs_fread(buf, 1, ask, s), ask);
            cr_assert(t_check(buf, ask, off), "bad data at %llu", (unsigned long long)off);
        }
        unsigned clocks = seek_clocks, probes = seek_probes, reads = seek_reads;
        uint64_t bytes = seek_bytes;
        afs__sys = seek_saved;
        afs__stream_cache_probe = seek_saved_probe;
        cr_assert_eq(afs_fclose(s), 0);
        cr_assert_eq(clocks, 0, "pass %d, reads of %zu: %u clock reads for %u random reads",
                     pass, ask, clocks, n);
        cr_assert_eq(probes, 0, "pass %d, reads of %zu: %u probes for %u random reads", pass,
                     ask, probes, n);
        cr_assert_eq(reads, n, "pass %d, reads of %zu: %u read calls for %u random reads",
                     pass, ask, reads, n);
        /* What is asked, but within 64 KiB of the end of the file (a fill there reads on to
         * the end, to see it), where a few of the reads may land. */
        cr_assert(bytes >= (uint64_t)n * ask && bytes <= (uint64_t)n * ask + 64 * KIB * 3,
                  "pass %d: %llu bytes read for %u reads of %zu", pass,
                  (unsigned long long)bytes, n, ask);
    }
    free(buf);
    unpin();
}

/* A task's reads that wait for the device must suspend the task, not its thread (with every
 * other task on it): the read after a seek, which reads as stdio does, never waits there.
 * The test's picture of the cache has [4 MiB + 100 KiB, + 2 MiB) not cached; a blocking read
 * of it on the task's thread is counted. */
static pthread_t task_thread;
static unsigned task_blocked;
static ssize_t (*task_inner_pread)(afs__fd_t, void *, size_t, uint64_t);

static ssize_t task_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    int64_t o = (int64_t)off;
    if (pthread_equal(pthread_self(), task_thread) && o < miss_hi && o + (int64_t)len > miss_lo)
        __atomic_add_fetch(&task_blocked, 1, __ATOMIC_SEQ_CST);
    return task_inner_pread(fd, buf, len, off);
}

static void seeking_task(struct corio_task *t, void *arg)
{
    (void)t;
    int *ok = arg;
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    static unsigned char buf[4 * KIB];
    /* In order first (windows asked about, then taken as cached), then seeks: into the
     * pages not cached, back into cached ones, and from one seek's window to another. */
    for (size_t off = 0; off < 2 * 1024 * KIB; off += sizeof buf)
        if (afs_fread(buf, 1, sizeof buf, s) != sizeof buf || !t_check(buf, sizeof buf, off))
            return;
    static const size_t at[] = {5 * 1024 * KIB, 1024 * KIB + 8 * KIB, 9 * 1024 * KIB,
                                5 * 1024 * KIB + 700 * KIB, 4 * 1024 * KIB + 96 * KIB};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
        if (afs_fseek(s, (int64_t)at[i], SEEK_SET) != 0 ||
            afs_fread(buf, 1, sizeof buf, s) != sizeof buf || !t_check(buf, sizeof buf, at[i]))
            return;
    *ok = afs_fclose(s) == 0;
}

T_IO(a_random_read_in_a_task_waits_for_the_device_in_the_task_only)
{
    if (!picture_begin(4 * 1024 * KIB + 100 * KIB))
        return;
    if (strcmp(afs_ctx_backend(t_ctx), "sync") == 0) {
        picture_end();
        cr_skip_test("the sync backend reads on the caller's thread");
    }
    task_thread = pthread_self();
    task_inner_pread = afs__sys.pread;
    afs__sys.pread = task_pread;
    task_blocked = 0;
    struct corio_config cfg;
    corio_config_default(&cfg);
    cfg.ctx = t_ctx;
    struct corio_sched *sched = NULL;
    cr_assert_eq(corio_sched_new(&sched, &cfg), 0);
    int ok = 0;
    int err = corio_sched_run(sched, seeking_task, &ok);
    corio_sched_free(sched);
    picture_end();
    cr_assert_eq(err, 0);
    cr_assert(ok, "a read after a seek failed or read wrong bytes");
    cr_assert_eq(task_blocked, 0, "%u blocking reads of pages not cached on the task's thread",
                 task_blocked);
    cr_assert_geq(nowait_misses, 1, "the pages not cached were never met");
}

/* Every read the inline path could make, counted on any thread. */
static struct afs__syscalls end_saved;
static atomic_int end_reads;

static ssize_t end_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    atomic_fetch_add(&end_reads, 1);
    return end_saved.pread(fd, buf, len, off);
}

static ssize_t end_pread_nowait(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    atomic_fetch_add(&end_reads, 1);
    return end_saved.pread_nowait(fd, buf, len, off);
}

static ssize_t end_preadv(afs__fd_t fd, const struct iovec *iov, int n, uint64_t off)
{
    atomic_fetch_add(&end_reads, 1);
    return end_saved.preadv(fd, iov, n, off);
}

/* A small file read whole into a bigger buffer: one read, as its end is the size the open
 * saw (stdio makes a second read, which returns 0, to learn it). The end-of-file indicator
 * is set by that call, and the next call reads nothing. */
T_IO(a_small_file_read_into_a_bigger_buffer_takes_one_read)
{
    t_new_ctx();
    static const size_t sizes[] = {1, 3920, 4096, 100 * KIB + 7};
    static unsigned char buf[256 * KIB];
    end_saved = afs__sys;
    afs__sys.pread = end_pread;
    afs__sys.preadv = end_preadv;
    if (afs__sys.pread_nowait)
        afs__sys.pread_nowait = end_pread_nowait;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        t_make_file(t_path("f"), sizes[i]);
        struct afs_stream *s;
        cr_assert_eq(afs_fopen(t_ctx, t_path("f"), "r", &s), 0);
        if (!cached_throughout("f")) {
            afs_fclose(s);
            break; /* no cachestat: the first read may go through a chunk */
        }
        atomic_store(&end_reads, 0);
        cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), sizes[i]);
        cr_assert(t_check(buf, sizes[i], 0));
        cr_assert(afs_feof(s));
        int reads = atomic_load(&end_reads);
        cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), 0);
        cr_assert_eq(afs_ferror(s), 0);
        cr_assert_eq(afs_fclose(s), 0);
        cr_assert_eq(reads, 1, "%d reads for a file of %zu bytes", reads, sizes[i]);
        cr_assert_eq(atomic_load(&end_reads), 1, "a read after the end of file was seen");
    }
    afs__sys = end_saved;
}


/* Appends n bytes of the pattern at the end of path (another writer). */
static void grow_file(const char *path, size_t n)
{
    int fd = open(path, O_WRONLY);
    cr_assert(fd >= 0);
    off_t end = lseek(fd, 0, SEEK_END);
    char *b = malloc(n);
    t_fill(b, n, (uint64_t)end);
    cr_assert_eq(pwrite(fd, b, n, end), (ssize_t)n);
    free(b);
    close(fd);
}

static int no_cachestat_probe(afs__fd_t fd, int64_t off, int64_t len, uint64_t *cached,
                              bool *dirty)
{
    (void)fd, (void)off, (void)len, (void)cached, (void)dirty;
    return -ENOSYS; /* as before Linux 6.5: the chunks are read ahead by ops */
}

/* A file another writer grows twice while a stream reads it: one read that crosses the short
 * chunk read on at the first growth then met chunks read ahead before the second, short or
 * empty, and stopped there with the end of file. An afs_fread returns what the file held when
 * it began, as fread does. */
T_IO(a_read_across_a_file_that_grew_twice_returns_what_the_file_holds)
{
    t_new_ctx();
    t_make_file(t_path("f"), 10000);
    int (*probe)(afs__fd_t, int64_t, int64_t, uint64_t *, bool *) = afs__stream_cache_probe;
    afs__stream_cache_probe = no_cachestat_probe;
    struct afs_stream *s = s_open("f", "r", 4 * KIB, 4);
    grow_file(t_path("f"), 5000); /* 15,000 */
    static unsigned char buf[64 * KIB];
    size_t pos = 0, size = 15000;
    const size_t asks[] = {100, 12288 - 100, 1, 0 /* grows */, 20000, 0, 30000, 5000};
    for (unsigned i = 0; i < sizeof asks / sizeof *asks; i++) {
        if (!asks[i]) {
            grow_file(t_path("f"), 40000);
            size += 40000;
            continue;
        }
        size_t want = size - pos < asks[i] ? size - pos : asks[i];
        size_t n = afs_fread(buf, 1, asks[i], s);
        cr_assert_eq(n, want, "read %u at %zu, file of %zu: %zu of %zu", i, pos, size, n, want);
        cr_assert(t_check(buf, n, pos), "read %u at %zu", i, pos);
        pos += n;
        if (afs_feof(s))
            afs_clearerr(s);
    }
    cr_assert_eq(afs_ferror(s), 0);
    cr_assert_eq(afs_fclose(s), 0);
    afs__stream_cache_probe = probe;
}

/* AFS_STREAM_DIRECT: a short last chunk read on once the file grew read from its end, an
 * offset O_DIRECT refuses (-EINVAL, kept by the stream and by every read after clearerr). It
 * reads from the page the data ends in. */
T_IO(a_direct_stream_reads_on_where_a_grown_file_s_short_chunk_ended)
{
    t_new_ctx();
    t_make_file(t_path("f"), 5000);
    struct afs_stream *s = direct_open("f", 4 * KIB, 2);
    static unsigned char buf[32 * KIB];
    cr_assert_eq(afs_fread(buf, 1, 4096, s), 4096);
    cr_assert_eq(afs_fread(buf, 1, 100, s), 100);
    grow_file(t_path("f"), 10000); /* 15,000 */
    size_t n = afs_fread(buf, 1, 8000, s);
    cr_assert_eq(n, 8000, "%zu (error %d)", n, afs_ferror(s));
    cr_assert(t_check(buf, n, 4196));
    n = afs_fread(buf, 1, sizeof buf, s);
    cr_assert_eq(n, 15000 - 12196, "%zu (error %d)", n, afs_ferror(s));
    cr_assert(t_check(buf, n, 12196));
    cr_assert_eq(afs_ferror(s), 0);
    cr_assert_eq(afs_fclose(s), 0);
}

/* An O_DIRECT read the kernel cut short at an unaligned end (the file grew after its open,
 * so that is not the end the library knew) was continued from there: refused (-EINVAL) once
 * the file grew again before the rest ran. Such a short read is the end of the file. The
 * growth comes inside the read, on the backends whose reads go through the library's system
 * call table (threads, sync); elsewhere the read ends at the first end. */
static struct afs__syscalls grow_saved;
static char grow_path[PATH_MAX];
static int grow_calls;

static ssize_t growing_pread(afs__fd_t fd, void *buf, size_t len, uint64_t off)
{
    ssize_t r = grow_saved.pread(fd, buf, len, off);
    if (r > 0 && (size_t)r < len && grow_calls++ == 0)
        grow_file(grow_path, 10000);
    return r;
}

T_IO(a_direct_read_cut_short_off_the_alignment_ends_at_the_end_of_the_file)
{
    t_new_ctx();
    t_make_file(t_path("f"), 3000);
    struct afs_file *f;
    int err = afs_open(t_ctx, t_path("f"), AFS_RDONLY | AFS_DIRECT, 0, AFS_MODE_SYNC, &f);
    if (err == -EINVAL)
        cr_skip_test("no O_DIRECT on this file system");
    cr_assert_eq(err, 0);
    grow_file(t_path("f"), 2000); /* 5,000: past the size afs_open saw */
    snprintf(grow_path, sizeof grow_path, "%s", t_path("f"));
    grow_saved = afs__sys;
    grow_calls = 0;
    afs__sys.pread = growing_pread;
    char *buf = afs_buf_alloc(t_ctx, 8192);
    ssize_t n = afs_pread(f, buf, 8192, 0);
    afs__sys = grow_saved;
    cr_assert(n == 5000 || n == 8192, "%zd (%s)", n, n < 0 ? afs_strerror((int)n) : "");
    cr_assert(t_check(buf, (size_t)n, 0));
    afs_buf_free(t_ctx, buf, 8192);
    cr_assert_eq(afs_close(f), 0);
}

#endif

/* The end of a file is seen only by a read in the call that reports it, as with stdio: a
 * call that read exactly to the end leaves the indicator clear, and the file that grew
 * meanwhile reads on; once the indicator is set, only afs_clearerr() (or a seek) reads
 * again. */
T_IO(a_file_that_grows_between_two_freads_reads_on)
{
    t_new_ctx();
    unsigned char buf[8192];
    t_make_file(t_path("f"), 4096);
    struct afs_stream *s;
    cr_assert_eq(afs_fopen(t_ctx, t_path("f"), "r", &s), 0);
    cr_assert_eq(afs_fread(buf, 1, 4096, s), 4096);
    cr_assert(t_check(buf, 4096, 0));
    cr_assert_eq(afs_feof(s), 0);
    t_make_file(t_path("f"), 4196);
    cr_assert_eq(afs_fread(buf, 1, 4096, s), 100);
    cr_assert(t_check(buf, 100, 4096));
    cr_assert(afs_feof(s));
    t_make_file(t_path("f"), 4300);
    cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), 0, "the indicator is sticky, as in stdio");
    afs_clearerr(s);
    cr_assert_eq(afs_fread(buf, 1, sizeof buf, s), 104);
    cr_assert(t_check(buf, 104, 4196));
    cr_assert(afs_feof(s));
    cr_assert_eq(afs_fclose(s), 0);
}

/* Reads of a few bytes, most of them copies from the chunk the last read ended in, cross
 * chunk and window boundaries with every byte in place, and the end is seen where it is. */
T_IO(small_reads_of_every_size_read_every_byte)
{
    t_new_ctx();
    static const size_t lens[] = {700 * KIB + 13, 2 * 1024 * KIB + 512 * KIB + 3};
    static const size_t chunks[] = {64 * KIB, 0};
    unsigned char buf[128];
    for (int k = 0; k < 2; k++) {
        t_make_file(t_path("f"), lens[k]);
        struct afs_stream *s;
        if (chunks[k])
            s = s_open("f", "r", chunks[k], 4);
        else
            cr_assert_eq(afs_fopen(t_ctx, t_path("f"), "r", &s), 0);
        size_t off = 0, n = 0;
        for (unsigned i = 0; off < lens[k]; i++) {
            size_t want = 1 + (i * 7919u) % 97, r = lens[k] - off < want ? lens[k] - off : want;
            n = afs_fread(buf, 1, want, s);
            cr_assert_eq(n, r, "at %zu: %zu of %zu bytes", off, n, want);
            cr_assert(t_check(buf, n, off), "wrong bytes at %zu (%zu)", off, n);
            off += n;
            cr_assert_eq(afs_ftell(s), (int64_t)off);
        }
        cr_assert_eq(afs_fread(buf, 1, 1, s), 0);
        cr_assert(afs_feof(s));
        cr_assert_eq(afs_ferror(s), 0);
        cr_assert_eq(afs_fclose(s), 0);
    }
}

/* Writes of a few bytes, most of them copies into the buffer being filled, with tells,
 * seeks, reads and appends between them: every byte lands where it was written. */
T_IO(small_writes_with_tells_seeks_reads_and_appends)
{
    t_new_ctx();
    const size_t len = 300 * KIB + 11;
    unsigned char *want = malloc(len + 4096), rec[128];
    cr_assert_not_null(want);
    t_fill(want, len, 0);
    struct afs_stream *s = s_open("f", "w+", 64 * KIB, 4);
    size_t off = 0;
    for (unsigned i = 0; off < len; i++) {
        size_t n = AFS_TEST_MIN(1 + (i * 7919u) % 97, len - off);
        cr_assert_eq(afs_fwrite(want + off, 1, n, s), n);
        off += n;
        if (i % 13 == 0)
            cr_assert_eq(afs_ftell(s), (int64_t)off);
    }
    /* Back into the middle: a small write there, then a read after it. */
    cr_assert_eq(afs_fseek(s, 70000, SEEK_SET), 0);
    cr_assert_eq(afs_fwrite("abc", 1, 3, s), 3);
    memcpy(want + 70000, "abc", 3);
    cr_assert_eq(afs_fread(rec, 1, 5, s), 5);
    cr_assert_eq(memcmp(rec, want + 70003, 5), 0, "the read after a small write");
    cr_assert_eq(afs_fwrite("de", 1, 2, s), 2);
    memcpy(want + 70008, "de", 2);
    cr_assert_eq(afs_ftell(s), 70010);
    cr_assert_eq(afs_fseek(s, 69999, SEEK_SET), 0);
    cr_assert_eq(afs_fread(rec, 1, 12, s), 12);
    cr_assert_eq(memcmp(rec, want + 69999, 12), 0, "read back after a seek");
    cr_assert_eq(afs_fclose(s), 0);

    /* Appending: small writes go to the end, and a tell says where that is. */
    s = s_open("f", "a", 64 * KIB, 4);
    for (int i = 0; i < 40; i++) {
        cr_assert_eq(afs_fwrite("0123456789", 1, 1 + i % 10, s), (size_t)(1 + i % 10));
        memcpy(want + off, "0123456789", (size_t)(1 + i % 10));
        off += (size_t)(1 + i % 10);
        if (i % 9 == 0)
            cr_assert_eq(afs_ftell(s), (int64_t)off);
    }
    cr_assert_eq(afs_fclose(s), 0);
    size_t got;
    unsigned char *all = slurp("f", &got);
    cr_assert_eq(got, off);
    cr_assert_eq(memcmp(all, want, off), 0, "the file as written");
    free(all);
    free(want);
}

static void put_bytes(const char *name, uint64_t off, const char *bytes)
{
    int fd = open(t_path(name), O_WRONLY);
    cr_assert(fd >= 0, "open %s: %s", name, strerror(errno));
    size_t n = strlen(bytes);
    cr_assert_eq(pwrite(fd, bytes, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static void read_ones(struct afs_stream *s, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(afs_fread(out + i, 1, 1, s), 1, "byte %zu of %zu", i, n);
}

/* Small reads, then writes, seeks and flushes on the same stream: each of these calls ends
 * what the reads kept of the chunk (a read that still copied from it would skip the writes'
 * flush, read bytes a seek back never filled, or bytes a flush dropped). */
T_IO(small_reads_then_writes_seeks_and_flushes)
{
    t_new_ctx();
    unsigned char b[16];
    /* A seek into a chunk that a read after a seek filled from its middle page, then back
     * before that page: the bytes there are read, not the chunk's unfilled start. */
    t_make_file(t_path("f"), 200 * KIB);
    struct afs_stream *s = s_open("f", "r", 64 * KIB, 4);
    cr_assert_eq(afs_fseek(s, 40000, SEEK_SET), 0);
    read_ones(s, b, 3);
    cr_assert(t_check(b, 3, 40000));
    cr_assert_eq(afs_fseek(s, 100, SEEK_SET), 0);
    read_ones(s, b, 3);
    cr_assert(t_check(b, 3, 100), "read after a seek back before the filled pages");

    /* A flush drops what was read ahead (as glibc does on a file): the next read sees the
     * file as it is now. */
    put_bytes("f", 103, "abc");
    cr_assert_eq(afs_fflush(s), 0);
    read_ones(s, b, 4);
    cr_assert(memcmp(b, "abc", 3) == 0 && t_check(b + 3, 1, 106), "read after a flush");
    cr_assert_eq(afs_fclose(s), 0);

    /* Writes between small reads land where they were made. */
    t_make_file(t_path("f"), 200 * KIB);
    s = s_open("f", "r+", 64 * KIB, 4);
    read_ones(s, b, 10);
    cr_assert(t_check(b, 10, 0));
    cr_assert_eq(afs_fwrite("ZZZZZ", 1, 5, s), 5);
    read_ones(s, b, 5);
    cr_assert(t_check(b, 5, 15), "the bytes after the write");
    cr_assert_eq(afs_fwrite("YYYYY", 1, 5, s), 5);
    read_ones(s, b, 3);
    cr_assert(t_check(b, 3, 25));
    cr_assert_eq(afs_fseek(s, 9, SEEK_SET), 0);
    read_ones(s, b, 12);
    cr_assert(t_check(b, 1, 9) && memcmp(b + 1, "ZZZZZ", 5) == 0 && t_check(b + 6, 5, 15) &&
              b[11] == 'Y', "read back after a seek");
    cr_assert_eq(afs_fclose(s), 0);
    size_t len;
    unsigned char *all = slurp("f", &len);
    cr_assert_eq(len, 200 * KIB);
    cr_assert(t_check(all, 10, 0) && memcmp(all + 10, "ZZZZZ", 5) == 0 &&
              t_check(all + 15, 5, 15) && memcmp(all + 20, "YYYYY", 5) == 0 &&
              t_check(all + 25, len - 25, 25), "the writes landed where they were made");
    free(all);
}

/* afs_ctx_free() with streams still open closes them as afs_fclose() does: a write still
 * buffered reaches the file (as exit() flushes stdio's), nothing is leaked (the valgrind
 * and ASan runs of this suite). */
T_IO(ctx_free_closes_the_streams_left_open)
{
    t_ctx = t_ctx_cfg(NULL);
    struct afs_stream *w, *r;
    cr_assert_eq(afs_fopen(t_ctx, t_path("left"), "w", &w), 0);
    cr_assert_eq(afs_fwrite("hello, world", 1, 12, w), 12);
    cr_assert_eq(afs_fopen(t_ctx, t_path("left"), "r", &r), 0);
    afs_ctx_free(t_ctx);
    t_ctx = NULL;
    FILE *f = fopen(t_path("left"), "rb");
    cr_assert_not_null(f);
    char got[32] = {0};
    size_t n = fread(got, 1, sizeof got, f);
    fclose(f);
    cr_assert_eq(n, 12, "the file holds %zu bytes", n);
    cr_assert(memcmp(got, "hello, world", 12) == 0);
}

/* A write-behind that fails part way (the file size limit: EFBIG) leaves the stream where
 * the data stopped, as stdio's: afs_ftell says so, and after afs_clearerr the next write
 * goes on there, not after a hole of zeros where the failed data was to go. Then glibc's
 * mode letters "e" and "m" are taken, ",ccs=" is not. */
T_IO(a_failed_write_behind_leaves_the_position_where_the_data_stopped)
{
#ifndef _WIN32
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {100 * 1024, RLIM_INFINITY};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    t_ctx = t_ctx_cfg(NULL);
    struct afs_stream *s;
    cr_assert_eq(afs_fopen(t_ctx, t_path("limited"), "we", &s), 0);
    static char data[300 * 1024];
    memset(data, 'd', sizeof data);
    afs_fwrite(data, 1, sizeof data, s);
    int err = afs_fflush(s);
    cr_assert_eq(err, -EFBIG, "afs_fflush: %s", afs_strerror(err));
    cr_assert_eq(afs_ftell(s), 100 * 1024);
    afs_clearerr(s);
    lim.rlim_cur = RLIM_INFINITY;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    cr_assert_eq(afs_fwrite("TAIL", 1, 4, s), 4);
    cr_assert_eq(afs_ftell(s), 100 * 1024 + 4);
    cr_assert_eq(afs_fclose(s), 0);
    struct stat st;
    cr_assert_eq(stat(t_path("limited"), &st), 0);
    cr_assert_eq(st.st_size, 100 * 1024 + 4, "size %lld", (long long)st.st_size);
    FILE *f = fopen(t_path("limited"), "rb");
    char tail[4];
    cr_assert_eq(fseek(f, 100 * 1024, SEEK_SET), 0);
    cr_assert_eq(fread(tail, 1, 4, f), 4);
    fclose(f);
    cr_assert(memcmp(tail, "TAIL", 4) == 0);

    /* The error seen at a short afs_fwrite instead (writes still in flight, more data
     * buffered after the failure): afs_ftell and afs_fseek(SEEK_CUR) settle them first. */
    lim.rlim_cur = 100 * 1024;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    cr_assert_eq(afs_fopen(t_ctx, t_path("limited2"), "w", &s), 0);
    size_t took = 0;
    for (int i = 0; i < 16384 && afs_fwrite(data, 1, 4096, s) == 4096; i++)
        took += 4096;
    cr_assert_eq(afs_ferror(s), -EFBIG, "no error after %zu bytes", took);
    cr_assert_eq(afs_ftell(s), 100 * 1024);
    lim.rlim_cur = RLIM_INFINITY;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    cr_assert_eq(afs_fseek(s, 0, SEEK_CUR), 0);
    afs_clearerr(s);
    cr_assert_eq(afs_fwrite("TAIL", 1, 4, s), 4);
    cr_assert_eq(afs_fclose(s), 0);
    cr_assert_eq(stat(t_path("limited2"), &st), 0);
    cr_assert_eq(st.st_size, 100 * 1024 + 4, "size %lld", (long long)st.st_size);
#endif
    if (!t_ctx)
        t_ctx = t_ctx_cfg(NULL);
    struct afs_stream *m;
    cr_assert_eq(afs_fopen(t_ctx, t_path("modes"), "wxe", &m), 0);
    cr_assert_eq(afs_fclose(m), 0);
    cr_assert_eq(afs_fopen(t_ctx, t_path("modes"), "rm", &m), 0);
    cr_assert_eq(afs_fclose(m), 0);
    cr_assert_eq(afs_fopen(t_ctx, t_path("modes"), "r,ccs=UTF-8", &m), -EINVAL);
}

/* ---- A full disk under write-behind: nothing buffered after a failure reaches the file ----
 * The disk is made full for the stream's file alone: a write that starts in [from, to) and
 * is at least min_len bytes long fails with ENOSPC and writes nothing (min_len: a full ext4
 * still takes a small write, as the flush of a user's last partial chunk did). The
 * transfers the core makes (threads, sync, and every buffered write on libaio, which gives
 * them to the pool) fail in afs__sys.pwrite; io_uring's and posix-aio's go to /dev/full
 * instead of the file (afs__sys.uring_enter, afs__sys.paio_listio), where the kernel or the C
 * library fails them with ENOSPC. */
#if defined(__linux__)
#include "internal.h" /* afs__op: the file of an io_uring write */

#include <aio.h>
#if defined(AFS_HAVE_URING) && __has_include(<liburing.h>)
#include <liburing.h>
#define FULL_URING 1
#endif

static struct afs__syscalls full_saved;
static struct {
    struct afs_file *f; /* the stream's file; NULL: no fault */
    intptr_t         fd;
    int64_t          from, to;
    size_t           min_len;
    int              devfull;
    atomic_int       failed; /* writes made to fail */
} full;

static bool full_hit(intptr_t fd, int64_t off, size_t len)
{
    bool hit = full.f && fd == full.fd && off >= full.from && off < full.to &&
               len >= full.min_len;
    if (hit)
        atomic_fetch_add(&full.failed, 1);
    return hit;
}

static ssize_t full_pwrite(afs__fd_t fd, const void *buf, size_t len, uint64_t off)
{
    if (full_hit(fd, (int64_t)off, len))
        return -ENOSPC;
    return full_saved.pwrite(fd, buf, len, off);
}

static ssize_t full_pwritev(afs__fd_t fd, const struct iovec *iov, int n, uint64_t off)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    if (full_hit(fd, (int64_t)off, len))
        return -ENOSPC;
    return full_saved.pwritev(fd, iov, n, off);
}

#ifdef FULL_URING
static int full_enter(struct io_uring *ring, unsigned wait_nr, struct __kernel_timespec *ts)
{
    struct io_uring_sq *sq = &ring->sq;
    for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
        struct io_uring_sqe *sqe = &sq->sqes[i & *sq->kring_mask];
        /* user_data 1 and 2 are the backend's own (cancels, the waker's read). */
        if (sqe->user_data <= 2 || !full.f ||
            (sqe->opcode != IORING_OP_WRITE && sqe->opcode != IORING_OP_WRITE_FIXED &&
             sqe->opcode != IORING_OP_WRITEV))
            continue;
        struct afs__op *o = afs__op((struct afs_op *)(uintptr_t)sqe->user_data);
        if (o->file != full.f)
            continue;
        size_t len = sqe->len;
        if (sqe->opcode == IORING_OP_WRITEV) {
            const struct iovec *iov = (const struct iovec *)(uintptr_t)sqe->addr;
            len = 0;
            for (unsigned k = 0; k < sqe->len; k++)
                len += iov[k].iov_len;
        }
        if (full_hit(full.fd, (int64_t)sqe->off, len)) {
            sqe->fd = full.devfull;
            sqe->flags &= (uint8_t)~IOSQE_FIXED_FILE;
        }
    }
    return full_saved.uring_enter ? full_saved.uring_enter(ring, wait_nr, ts)
                                  : afs__uring_enter_real(ring, wait_nr, ts);
}
#endif

static int full_listio(int mode, struct aiocb *const list[], int n, struct sigevent *sev)
{
    for (int i = 0; i < n; i++) {
        struct aiocb *cb = list[i];
        if (cb && cb->aio_lio_opcode == LIO_WRITE &&
            full_hit(cb->aio_fildes, (int64_t)cb->aio_offset, cb->aio_nbytes))
            cb->aio_fildes = full.devfull;
    }
    return full_saved.paio_listio ? full_saved.paio_listio(mode, list, n, sev)
                                  : lio_listio(mode, list, n, sev);
}

static void full_setup(void)
{
    t_setup();
    full_saved = afs__sys;
    full.f = NULL;
    atomic_store(&full.failed, 0);
    full.devfull = open("/dev/full", O_WRONLY | O_CLOEXEC);
    cr_assert(full.devfull >= 0, "/dev/full: %s", strerror(errno));
    afs__sys.pwrite = full_pwrite;
    afs__sys.pwritev = full_pwritev;
#ifdef FULL_URING
    afs__sys.uring_enter = full_enter;
#endif
    afs__sys.paio_listio = full_listio;
}

static void full_teardown(void)
{
    if (t_ctx)
        afs_ctx_free(t_ctx); /* streams left open close with the faults still there */
    t_ctx = NULL;
    afs__sys = full_saved;
    full.f = NULL;
    close(full.devfull);
    t_teardown();
}

/* From now on the writes of s's file in [from, to) of min_len bytes or more fail. */
static void full_arm(struct afs_stream *s, int64_t from, int64_t to, size_t min_len)
{
    full.fd = afs_file_fd(afs_stream_file(s));
    full.from = from;
    full.to = to;
    full.min_len = min_len;
    full.f = afs_stream_file(s);
}

static bool on_sync(void)
{
    return strcmp(afs_ctx_backend(t_ctx), "sync") == 0;
}

#define T_FULL(name) Test(io, name, .init = full_setup, .fini = full_teardown, .timeout = 30)

/* The user's loop: records written until one is short. The chunks from 3 * cs on fail; what
 * was buffered after the failure (the partial chunk) is not written by afs_fflush or
 * afs_fclose past the hole, though the disk would take it: the file ends where the data
 * stopped, as afs_ftell says, as with stdio. */
T_FULL(write_error_flush_and_close_drop_what_was_buffered_after_it)
{
    t_ctx = t_ctx_cfg(NULL);
    const size_t cs = 64 * KIB, rec = 10000;
    static char buf[10000];
    for (int close_only = 0; close_only < 2; close_only++) {
        const char *name = close_only ? "full_close" : "full_flush";
        struct afs_stream *s = s_open(name, "w", cs, 4);
        full_arm(s, 3 * (int64_t)cs, INT64_MAX, cs);
        int64_t off = 0;
        int i;
        for (i = 0; i < 1000; i++) {
            t_fill(buf, rec, (uint64_t)off);
            if (afs_fwrite(buf, 1, rec, s) != rec)
                break;
            off += (int64_t)rec;
        }
        cr_assert_lt(i, 1000, "no short afs_fwrite");
        cr_assert_eq(afs_ferror(s), -ENOSPC);
        if (!close_only) {
            cr_assert_eq(afs_fflush(s), -ENOSPC);
            cr_assert_eq(afs_ftell(s), 3 * (int64_t)cs);
        }
        cr_assert_eq(afs_fclose(s), -ENOSPC);
        full.f = NULL;
        size_t len;
        unsigned char *all = slurp(name, &len);
        cr_assert_eq(len, 3 * cs, "%s: size %zu, the data stopped at %zu", name, len, 3 * cs);
        cr_assert(t_check(all, len, 0), "%s: the data before the failure", name);
        free(all);
    }
}

/* The failure not known yet when more is buffered: an "r+" stream writes a chunk, which
 * fails, then 10 bytes. afs_fflush (or afs_fclose) must not write those at the chunk's end:
 * the file stays as it was (stdio writes nothing), and the position is where the data
 * stopped. */
T_FULL(write_error_not_seen_yet_drops_what_was_buffered_after_it)
{
    t_ctx = t_ctx_cfg(NULL);
    const size_t cs = 64 * KIB;
    static char a[64 * KIB];
    memset(a, 'A', sizeof a);
    for (int close_only = 0; close_only < 2; close_only++) {
        t_make_file(t_path("rplus"), 3 * cs);
        struct afs_stream *s = s_open("rplus", "r+", cs, 4);
        full_arm(s, 0, 1, 1); /* the write at 0 fails; any other would fit */
        cr_assert_eq(afs_fwrite(a, 1, cs, s), cs, "taken, written behind");
        size_t b = afs_fwrite("BBBBBBBBBB", 1, 10, s);
        cr_assert(b == 10 || b == 0, "%zu", b); /* 0 where the failure is known by now */
        if (!close_only) {
            cr_assert_eq(afs_fflush(s), -ENOSPC);
            cr_assert_eq(afs_ftell(s), 0);
        }
        cr_assert_eq(afs_fclose(s), -ENOSPC);
        full.f = NULL;
        cr_assert_geq(atomic_load(&full.failed), 1, "the write at 0 was made to fail");
        size_t len;
        unsigned char *all = slurp("rplus", &len);
        cr_assert_eq(len, 3 * cs);
        cr_assert(t_check(all, len, 0), "close_only %d: written after the failure", close_only);
        free(all);
        atomic_store(&full.failed, 0);
    }
}

/* One afs_fwrite of four chunks and a bit whose first chunk fails. The rest of the call is
 * not written after the failure where the failure is known before the next chunk is queued
 * (sync: the write ran when it was queued); elsewhere chunks 1-3 were queued with it, before
 * any failure could be known, and may land (the header: writes already in flight). The
 * part buffered after them never does, and the position is where the data stopped. */
T_FULL(write_error_stops_a_long_fwrite_and_drops_its_tail)
{
    t_ctx = t_ctx_cfg(NULL);
    const size_t cs = 64 * KIB;
    static char data[4 * 64 * KIB + 100];
    t_fill(data, sizeof data, 0);
    struct afs_stream *s = s_open("long", "w", cs, 4);
    full_arm(s, 0, 1, 1);
    size_t n = afs_fwrite(data, 1, sizeof data, s);
    cr_assert_eq(afs_fflush(s), -ENOSPC);
    cr_assert_eq(afs_ftell(s), 0);
    cr_assert_eq(afs_fclose(s), -ENOSPC);
    full.f = NULL;
    size_t len;
    unsigned char *all = slurp("long", &len);
    if (on_sync()) {
        cr_assert_lt(n, sizeof data, "the failure was known: a short count");
        cr_assert_eq(len, 0, "size %zu: chunks written after the failure", len);
    }
    cr_assert_leq(len, 4 * cs, "size %zu: the part buffered after the failure was written",
                  len);
    for (size_t i = 0; i < len && i < cs; i++)
        cr_assert_eq(all[i], 0);
    if (len > cs)
        cr_assert(t_check(all + cs, len - cs, cs), "the chunks in flight hold their data");
    free(all);
}

/* Append: after a failed write, afs_ftell gives where the data stopped (the end of the
 * file, as the header says), not the error; after afs_clearerr writing goes on there. */
T_FULL(write_error_in_append_mode_ftell_is_where_the_data_stopped)
{
    t_ctx = t_ctx_cfg(NULL);
    const size_t cs = 64 * KIB;
    static char data[64 * KIB];
    memset(data, 'D', sizeof data);
    const char *modes[] = {"a", "a+"};
    for (int m = 0; m < 2; m++) {
        t_make_file(t_path("app"), 1000);
        struct afs_stream *s = s_open("app", modes[m], cs, 4);
        full_arm(s, 0, INT64_MAX, 1);
        cr_assert_eq(afs_fwrite(data, 1, cs, s), cs);
        afs_fwrite("x", 1, 1, s);
        cr_assert_eq(afs_fflush(s), -ENOSPC, "%s", modes[m]);
        cr_assert_eq(afs_ftell(s), 1000, "%s", modes[m]);
        full.f = NULL;
        afs_clearerr(s);
        cr_assert_eq(afs_fwrite("TAIL", 1, 4, s), 4);
        cr_assert_eq(afs_ftell(s), 1004, "%s", modes[m]);
        cr_assert_eq(afs_fclose(s), 0);
        size_t len;
        unsigned char *all = slurp("app", &len);
        cr_assert_eq(len, 1004, "%s: size %zu", modes[m], len);
        cr_assert(t_check(all, 1000, 0) && memcmp(all + 1000, "TAIL", 4) == 0, "%s", modes[m]);
        free(all);
    }
}
#endif
