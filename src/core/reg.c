/* Registered buffers and files: the checks and the bookkeeping every backend shares. The
 * kernel side is the backend's (io_uring: src/linux/uring_reg.c); a backend without it
 * accepts the registration as a no-op and says so, because registering changes only speed
 * and a portable program should not have to branch on the backend to stay correct. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static void no_backend_support(struct afs_ctx *ctx, char *why, size_t len, const char *what)
{
    snprintf(why, len, "%s: the backend has no registered %s (ops run as plain ones)",
             ctx->be->name, what);
}

int afs_ctx_register_buffers(struct afs_ctx *ctx, const struct iovec *bufs, unsigned nr)
{
    afs__ctx_check(ctx, __func__);
    if (!bufs || nr == 0 || nr > AFS_MAX_REG_BUFFERS)
        return -EINVAL;
    for (unsigned i = 0; i < nr; i++) {
        uintptr_t b = (uintptr_t)bufs[i].iov_base;
        size_t len = bufs[i].iov_len;
        if (!b || len == 0 || len > AFS_MAX_REG_BUFFER_SIZE || b + len < b)
            return -EINVAL;
        /* Overlaps: nr is at most AFS_MAX_REG_BUFFERS, and this runs once. */
        for (unsigned j = 0; j < i; j++) {
            uintptr_t c = (uintptr_t)bufs[j].iov_base;
            if (b < c + bufs[j].iov_len && c < b + len)
                return -EINVAL;
        }
    }
    if (ctx->reg_bufs_asked)
        return -EBUSY;
    ctx->reg_bufs_asked = nr;
    ctx->reg_bufs_why[0] = '\0';
    int r = 0;
    if (ctx->be->reg_buffers)
        r = ctx->be->reg_buffers(ctx, bufs, nr, ctx->reg_bufs_why, sizeof ctx->reg_bufs_why);
    else
        no_backend_support(ctx, ctx->reg_bufs_why, sizeof ctx->reg_bufs_why, "buffers");
    ctx->reg_bufs = r > 0 ? nr : 0;
    return r > 0 ? 1 : 0;
}

int afs_ctx_unregister_buffers(struct afs_ctx *ctx)
{
    afs__ctx_check(ctx, __func__);
    if (ctx->reg_bufs && ctx->be->unreg_buffers)
        ctx->be->unreg_buffers(ctx);
    ctx->reg_bufs_asked = 0;
    ctx->reg_bufs = 0;
    ctx->reg_bufs_why[0] = '\0';
    return 0;
}

int afs_ctx_register_files(struct afs_ctx *ctx, unsigned slots)
{
    afs__ctx_check(ctx, __func__);
    if (slots == 0 || slots > AFS_MAX_REG_FILES)
        return -EINVAL;
    if (ctx->reg_slots_asked)
        return -EBUSY;
    ctx->reg_slots_asked = slots;
    ctx->reg_files_why[0] = '\0';
    int r = 0;
    if (ctx->be->reg_files)
        r = ctx->be->reg_files(ctx, slots, ctx->reg_files_why, sizeof ctx->reg_files_why);
    else
        no_backend_support(ctx, ctx->reg_files_why, sizeof ctx->reg_files_why, "files");
    ctx->reg_slots = r > 0 ? slots : 0;
    return r > 0 ? 1 : 0;
}

int afs_ctx_unregister_files(struct afs_ctx *ctx)
{
    afs__ctx_check(ctx, __func__);
    if (ctx->reg_slots && ctx->be->unreg_files)
        ctx->be->unreg_files(ctx);
    ctx->reg_slots_asked = 0;
    ctx->reg_slots = 0;
    ctx->reg_files_why[0] = '\0';
    return 0;
}

void afs_ctx_registration(const struct afs_ctx *ctx, struct afs_registration *out)
{
    afs__ctx_check(ctx, __func__);
    AFS_CHECK(out != NULL, "out is NULL");
    memset(out, 0, sizeof *out);
    out->buffers = ctx->reg_bufs;
    out->file_slots = ctx->reg_slots;
    if (ctx->reg_slots) {
        for (const struct afs_list_node *n = ctx->files.first; n; n = n->next)
            out->files += AFS_LIST_ITEM(n, struct afs_file, node)->reg_slot != 0;
    }
    out->buffers_why = ctx->reg_bufs_why[0] ? ctx->reg_bufs_why : NULL;
    out->files_why = ctx->reg_files_why[0] ? ctx->reg_files_why : NULL;
}

void afs_ctx_read_rule(const struct afs_ctx *ctx, struct afs_read_rule *out)
{
    afs__ctx_check(ctx, __func__);
    AFS_CHECK(out != NULL, "out is NULL");
    memset(out, 0, sizeof *out);
    if (!ctx->read_rule_on)
        return;
    const struct afs__tune *t = &ctx->read_rule;
    out->batching = t->choice;
    out->samples = t->samples;
    out->inline_rate = t->rate[0];
    out->batch_rate = t->rate[1];
    out->inline_cpu_ns = t->cpu_ns[0];
    out->batch_cpu_ns = t->cpu_ns[1];
}

void afs_ctx_offload(const struct afs_ctx *ctx, struct afs_offload *out)
{
    afs__ctx_check(ctx, __func__);
    AFS_CHECK(out != NULL, "out is NULL");
    memset(out, 0, sizeof *out);
    if (ctx->be->offload)
        ctx->be->offload(ctx, out);
}
