/* Placeholder until the backend lands: reports "not available". */
#include "internal.h"

static int init(struct afs_ctx *ctx, char *why, size_t why_len)
{
    afs__why(why, why_len, "libaio", -ENOTSUP, "backend not built yet");
    return -ENOTSUP;
}
static void fini(struct afs_ctx *ctx) {}
static int prep(struct afs_ctx *ctx, struct afs_op *op) { return -ENOTSUP; }
static int enter(struct afs_ctx *ctx, bool wait, int64_t t) { return 0; }

const struct afs__backend afs__backend_libaio = {
    .name = "libaio", .id = AFS_BACKEND_LIBAIO, .init = init, .fini = fini, .prep = prep, .enter = enter,
};
