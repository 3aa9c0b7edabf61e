/* A program outside the project: built against an installed asyncfs (CMake package or
 * pkg-config), it checks the version three ways and does one write and read.
 * Usage: consumer DIR EXPECTED_VERSION [EXPECTED_BACKEND_REASON]
 *   DIR: an empty directory it may write to; EXPECTED_VERSION: what the package manager
 *   reported (find_package's asyncfs_VERSION, pkg-config --modversion); the third argument,
 *   if given, must appear in afs_ctx_fallback_reason() of an AUTO context. */
#include <asyncfs.h>

#include <stdio.h>
#include <string.h>

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "consumer: %s: %s\n", what, detail);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return fail("usage", "consumer DIR EXPECTED_VERSION [EXPECTED_REASON]");

    char hdr[32];
    snprintf(hdr, sizeof hdr, "%d.%d.%d", ASYNCFS_VERSION_MAJOR, ASYNCFS_VERSION_MINOR,
             ASYNCFS_VERSION_PATCH);
    if (strcmp(afs_version(), hdr) != 0)
        return fail("afs_version() differs from the header's macros", afs_version());
    if (strcmp(afs_version(), argv[2]) != 0)
        return fail("afs_version() differs from the package version", argv[2]);
    if (ASYNCFS_VERSION != ((ASYNCFS_VERSION_MAJOR << 16) | (ASYNCFS_VERSION_MINOR << 8) |
                            ASYNCFS_VERSION_PATCH) ||
        ASYNCFS_VERSION == 0)
        return fail("ASYNCFS_VERSION", "not the three numbers in one");

    struct afs_ctx *ctx;
    int err = afs_ctx_new(&ctx, NULL);
    if (err < 0)
        return fail("afs_ctx_new", afs_strerror(err));
    const char *reason = afs_ctx_fallback_reason(ctx);
    printf("consumer: asyncfs %s, backend %s%s%s\n", afs_version(), afs_ctx_backend(ctx),
           reason ? ", fallback reason: " : "", reason ? reason : "");
    if (argc > 3 && (!reason || !strstr(reason, argv[3]))) {
        afs_ctx_free(ctx);
        return fail("the fallback reason does not say", argv[3]);
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/consumer.dat", argv[1]);
    struct afs_file *f;
    err = afs_open(ctx, path, AFS_RDWR | AFS_CREAT | AFS_TRUNC, 0600, AFS_MODE_SYNC, &f);
    if (err < 0) {
        afs_ctx_free(ctx);
        return fail("afs_open", afs_strerror(err));
    }
    static const char text[] = "installed asyncfs";
    char back[sizeof text] = {0};
    ssize_t w = afs_pwrite(f, text, sizeof text, 0);
    ssize_t r = afs_pread(f, back, sizeof back, 0);
    afs_close(f);
    afs_ctx_free(ctx);
    remove(path);
    if (w != (ssize_t)sizeof text || r != (ssize_t)sizeof text || memcmp(text, back, sizeof text))
        return fail("write and read back", "the bytes differ");
    return 0;
}
