/* The "sync" backend: every op runs inline, on the owner thread, when it is submitted.
 * Deterministic, for debugging and for comparing against the asynchronous backends. */
#include "internal.h"

static int sync_init(struct afs_ctx *ctx, char *why, size_t why_len)
{
    return 0;
}

static void sync_fini(struct afs_ctx *ctx)
{
}

static int sync_prep(struct afs_ctx *ctx, struct afs_op *op)
{
    ctx->stats.kernel_submits++; /* its system call hands the op to the kernel */
    afs__op_finished(ctx, op, afs__op_run_sync(op));
    return 0;
}

const struct afs__backend afs__backend_sync = {
    .name = "sync",
    .id = AFS_BACKEND_SYNC,
    .init = sync_init,
    .fini = sync_fini,
    .accepts = NULL,
    .prep = sync_prep,
    .enter = afs__enter_waker,
    .cancel = NULL,
};
