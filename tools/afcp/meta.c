/* afcp: permissions beyond the mode bits, and what an overwritten destination keeps.
 *
 * POSIX ACLs are copied as the kernel stores them, the xattrs system.posix_acl_access (and
 * system.posix_acl_default on directories), with fgetxattr/fsetxattr: no libacl. With an
 * access ACL the group bits of the mode are the ACL's mask, not what the owning group may
 * do, so a copy that keeps only the mode would give the group every right a named user or
 * group had. afcp_safe_mode() takes the group bits from the ACL's group entry instead.
 *
 * An overwritten destination is still replaced by a new inode (temporary + rename: no name
 * ever shows a partial copy), but the new inode gets the old one's owner, group, mode and
 * ACL, as cp's result has (cp writes into the old inode). Hard links of the old file keep
 * the old data: they are another inode now. Where no temporary may replace it (copy.c:
 * open_dest, write_over) the old file is written into, and keeps all of that itself. */
#define _GNU_SOURCE
#include "afcp.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#define ACL_ACCESS  "system.posix_acl_access"
#define ACL_DEFAULT "system.posix_acl_default"
enum { ACL_XATTR_VERSION = 2, ACL_TAG_GROUP_OBJ = 0x04, ACL_ENTRY_SIZE = 8, ACL_HEAD_SIZE = 4 };

/* An xattr of fd (or of path when fd < 0, not following a symlink) into *out (malloc'd).
 * Returns its length, 0 when there is none (or the file system has no xattrs), -errno. */
static ssize_t get_xattr(int fd, const char *path, const char *name, void **out)
{
    *out = NULL;
    for (int tries = 0; tries < 4; tries++) {
        ssize_t n = fd >= 0 ? fgetxattr(fd, name, NULL, 0) : lgetxattr(path, name, NULL, 0);
        if (n < 0)
            return errno == ENODATA || errno == ENOTSUP ? 0 : -errno;
        void *buf = afcp_xmalloc((size_t)n);
        ssize_t m = fd >= 0 ? fgetxattr(fd, name, buf, (size_t)n)
                            : lgetxattr(path, name, buf, (size_t)n);
        if (m >= 0) {
            *out = buf;
            return m;
        }
        free(buf);
        if (errno != ERANGE) /* ERANGE: it grew between the calls */
            return errno == ENODATA || errno == ENOTSUP ? 0 : -errno;
    }
    return -ERANGE;
}

/* The permissions of the ACL's owning-group entry (ACL_GROUP_OBJ), or -1. */
static int acl_group_obj(const unsigned char *acl, size_t len)
{
    if (len < ACL_HEAD_SIZE || acl[0] != ACL_XATTR_VERSION) /* little-endian u32 */
        return -1;
    for (size_t off = ACL_HEAD_SIZE; off + ACL_ENTRY_SIZE <= len; off += ACL_ENTRY_SIZE) {
        unsigned tag = acl[off] | (unsigned)acl[off + 1] << 8;
        if (tag == ACL_TAG_GROUP_OBJ)
            return (acl[off + 2] | acl[off + 3] << 8) & 7;
    }
    return -1;
}

mode_t afcp_safe_mode(int sfd, mode_t mode)
{
    void *acl;
    ssize_t n = get_xattr(sfd, NULL, ACL_ACCESS, &acl);
    if (n <= 0)
        return mode;
    int g = acl_group_obj(acl, (size_t)n);
    free(acl);
    if (g < 0)
        return mode & ~(mode_t)S_IRWXG; /* an ACL we cannot read: the group gets nothing */
    return (mode & ~(mode_t)S_IRWXG) | (mode & ((mode_t)g << 3));
}

mode_t afcp_kept_mode(mode_t st_mode, int owner_kept)
{
    mode_t mode = st_mode & 07777;
    if (!(afcp.o.preserve & AFCP_P_OWNER) || owner_kept)
        return mode;
    /* cp makes a directory with its sticky bit (mkdir keeps it), a file without: its special
     * bits come with the chmod that cp leaves out then. */
    return mode & (S_ISDIR(st_mode) ? 01777 : 0777);
}

int afcp_own(int fd, int dirfd, const char *name, const struct stat *st, int group_too,
             const char *dpath)
{
    int r = fd >= 0 ? fchown(fd, st->st_uid, st->st_gid)
                    : fchownat(dirfd, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW);
    if (r == 0)
        return 1;
    int e = errno;
    if ((e == EPERM || e == EINVAL) && group_too) {
        if (fd >= 0)
            r = fchown(fd, (uid_t)-1, st->st_gid);
        else
            r = fchownat(dirfd, name, (uid_t)-1, st->st_gid, AT_SYMLINK_NOFOLLOW);
        (void)r; /* the group alone: kept when it can be, silently (cp's set_owner) */
    }
    if (afcp.is_root || (e != EPERM && e != EINVAL))
        afcp_err(e, "failed to preserve ownership for '%s'", dpath);
    return 0;
}

mode_t afcp_new_mode(int sfd, mode_t st_mode)
{
    if (afcp.o.default_mode && !(afcp.o.preserve & AFCP_P_MODE))
        return S_ISDIR(st_mode) || S_ISSOCK(st_mode) ? 0777 : 0666;
    return (sfd >= 0 ? afcp_safe_mode(sfd, st_mode) : st_mode) & 0777;
}

/* Sets (or removes, acl NULL) one ACL xattr of fd (of path, not followed, when fd < 0). */
static int put_acl_at(int fd, const char *path, const char *name, const void *acl, ssize_t len)
{
    int r;
    if (acl)
        r = fd >= 0 ? fsetxattr(fd, name, acl, (size_t)len, 0)
                    : lsetxattr(path, name, acl, (size_t)len, 0);
    else
        r = fd >= 0 ? fremovexattr(fd, name) : lremovexattr(path, name);
    if (r == 0 || (!acl && (errno == ENODATA || errno == ENOTSUP)))
        return 0;
    return -errno;
}

static int put_acl(int fd, const char *name, const void *acl, ssize_t len)
{
    return put_acl_at(fd, NULL, name, acl, len);
}

int afcp_acl_copy(int sfd, int dfd, int is_dir, mode_t mode, const char *dpath)
{
    int ret = 0;
    for (int i = 0; i < (is_dir ? 2 : 1); i++) {
        const char *name = i ? ACL_DEFAULT : ACL_ACCESS;
        void *acl;
        ssize_t n = get_xattr(sfd, NULL, name, &acl);
        int err = n < 0 ? (int)n : put_acl(dfd, name, acl, n);
        free(acl);
        if (i == 1 && err == -ENOTSUP)
            err = 0; /* a default ACL the file system cannot hold is dropped, as cp does */
        if (err < 0 && !ret) {
            /* The copy cannot carry the ACL: at least its group gets no more than the
             * source's group entry allowed. */
            if (i == 0)
                fchmod(dfd, afcp_safe_mode(sfd, mode));
            afcp_err(err, "preserving permissions for %s", afcp_lq(dpath)); /* gnulib's quote() */
            ret = err;
        }
    }
    return ret;
}

static char *fd_path(int dir, const char *name);

int afcp_old_get(struct afcp_dir *dd, const char *dname, struct afcp_old *old)
{
    memset(old, 0, sizeof *old);
    struct afs_stat ast;
    int err = afs_statx(AFCP_CTX, dd->dfd, dname, AFS_AT_SYMLINK_NOFOLLOW, &ast);
    if (err < 0)
        return err;
    afcp_stat_from(&old->st, &ast);
    if (!S_ISREG(old->st.st_mode))
        return 0;
    /* No fgetxattrat(): the name in the directory fd, through /proc (no path walk above it;
     * lgetxattr does not follow a symlink swapped in at the name). */
    char *path = fd_path(dd->dfd, dname);
    ssize_t n = get_xattr(-1, path ? path : dname, ACL_ACCESS, &old->acl);
    free(path);
    if (n < 0)
        return (int)n;
    old->acl_len = n;
    return 0;
}

void afcp_old_apply(int fd, const struct afcp_old *old, const char *dpath)
{
    mode_t mode = old->st.st_mode & 07777;
    uid_t uid = afcp.is_root ? old->st.st_uid : (uid_t)-1;
    /* Another owner or group only as root or for a group we are in; what cannot be given
     * back stays ours, without setuid/setgid (as cp -p does when it cannot keep an owner). */
    if (fchown(fd, uid, old->st.st_gid) < 0 || (!afcp.is_root && old->st.st_uid != geteuid()))
        mode &= ~(mode_t)(S_ISUID | S_ISGID);
    /* cp's write into the old file makes the kernel clear its set-user-ID bit, and its
     * set-group-ID bit where the group may execute, unless the writer is privileged: the
     * new contents keep neither either. */
    if (!afcp.is_root) {
        mode &= ~(mode_t)S_ISUID;
        if (mode & S_IXGRP)
            mode &= ~(mode_t)S_ISGID;
    }
    int err = put_acl(fd, ACL_ACCESS, old->acl, old->acl_len);
    if (err < 0)
        afcp_err(err, "setting permissions for '%s'", dpath);
    if (fchmod(fd, mode) < 0)
        afcp_err(errno, "setting permissions for '%s'", dpath);
}

void afcp_old_free(struct afcp_old *old)
{
    free(old->acl);
    old->acl = NULL;
}

/* The names of the xattrs of fd (or of path when fd < 0, not following a symlink), into
 * *names (stackbuf, or malloc'd when larger): their length, or -errno. */
static ssize_t list_xattrs(int fd, const char *path, char *stackbuf, size_t cap, char **names)
{
    *names = stackbuf;
    ssize_t len = fd >= 0 ? flistxattr(fd, stackbuf, cap) : llistxattr(path, stackbuf, cap);
    for (int tries = 0; len < 0 && errno == ERANGE && tries < 4; tries++) {
        if (*names != stackbuf)
            free(*names);
        *names = stackbuf;
        len = fd >= 0 ? flistxattr(fd, NULL, 0) : llistxattr(path, NULL, 0);
        if (len <= 0)
            break;
        *names = afcp_xmalloc((size_t)len);
        len = fd >= 0 ? flistxattr(fd, *names, (size_t)len) : llistxattr(path, *names, (size_t)len);
    }
    return len < 0 ? -errno : len;
}

/* Every extended attribute of the source onto the destination, as cp copies them: not the
 * ACLs (the mode carries them: afcp_acl_copy, with -p and -a) and not security.selinux (the
 * context, which cp keeps only with --preserve=context). Each side is an fd, or (fd < 0) a
 * path whose last component is not followed: a symlink's or a special file's own
 * attributes. A failure is reported (once per file, in cp's words), and counts as one, only
 * when --preserve=xattr asked for them; with -a a destination that refuses an attribute (a
 * file system without user xattrs, trusted.* for a user) is skipped silently, as cp does
 * with -a. */
static int xattr_copy(int sfd, const char *spath, int dfd, const char *dsys, const char *dpath)
{
    char stackbuf[1024], *names;
    ssize_t len = list_xattrs(sfd, spath, stackbuf, sizeof stackbuf, &names);
    int ret = 0;
    if (len < 0) {
        if (len != -ENOTSUP && afcp.o.xattr_required) {
            afcp_err((int)-len, "listing attributes of '%s'", dpath);
            ret = (int)len;
        }
        len = 0;
    }
    for (ssize_t off = 0; off < len; off += (ssize_t)strlen(names + off) + 1) {
        const char *name = names + off;
        if (!strcmp(name, "security.selinux") || !strncmp(name, "system.posix_acl_", 17))
            continue;
        void *val;
        ssize_t n = get_xattr(sfd, spath, name, &val);
        const void *v = val ? val : "";
        int err = n < 0                                                  ? (int)n
                  : (dfd >= 0 ? fsetxattr(dfd, name, v, (size_t)n, 0)
                              : lsetxattr(dsys, name, v, (size_t)n, 0)) < 0 ? -errno
                                                                         : 0;
        free(val);
        if (err < 0 && afcp.o.xattr_required && !ret) {
            afcp_err(-err, "setting attributes for '%s'", dpath);
            ret = err;
        }
    }
    if (names != stackbuf)
        free(names);
    return ret;
}

int afcp_xattr_copy(int sfd, int dfd, const char *dpath)
{
    return xattr_copy(sfd, NULL, dfd, NULL, dpath);
}

/* "/proc/self/fd/DIR/name" (malloc'd): the entry name of the directory fd dir, reached
 * without a walk of the path above it; NULL without /proc. */
static char *fd_path(int dir, const char *name)
{
    if (!afcp.have_proc)
        return NULL;
    char pfx[40];
    snprintf(pfx, sizeof pfx, "/proc/self/fd/%d", dir);
    return afcp_join(pfx, name);
}

int afcp_xattr_copy_at(int sdir, const char *sname, int ddir, const char *dname,
                       const char *dpath)
{
    char *s = fd_path(sdir, sname), *d = fd_path(ddir, dname);
    int ret = s && d ? xattr_copy(-1, s, -1, d, dpath) : 0;
    free(s);
    free(d);
    return ret;
}

int afcp_has_default_acl(int dir)
{
    return fgetxattr(dir, ACL_DEFAULT, NULL, 0) > 0;
}

void afcp_plain_mode(int fd, mode_t mode, const char *dpath)
{
    int err = put_acl(fd, ACL_ACCESS, NULL, 0);
    if (err == 0 && fchmod(fd, mode) < 0)
        err = -errno;
    if (err < 0)
        afcp_err(err, "setting permissions for '%s'", dpath);
}

int afcp_acl_copy_at(int sdir, const char *sname, int ddir, const char *dname,
                     const char *dpath)
{
    char *s = sname ? fd_path(sdir, sname) : NULL, *d = fd_path(ddir, dname);
    void *acl = NULL;
    ssize_t n = 0;
    int err = 0;
    if (d && (s || !sname)) { /* a source not reached (no /proc): nothing is removed */
        if (s)
            n = get_xattr(-1, s, ACL_ACCESS, &acl);
        err = n < 0 ? (int)n : put_acl_at(-1, d, ACL_ACCESS, acl, n);
        if (err < 0)
            afcp_err(err, sname ? "preserving permissions for %s" : "setting permissions for %s",
                     afcp_lq(dpath)); /* gnulib's quote(), as above */
    }
    free(acl);
    free(s);
    free(d);
    return err;
}

int afcp_dir_plain(int dir)
{
    return afcp.o.default_mode && !(afcp.o.preserve & AFCP_P_MODE) && dir >= 0 &&
           afcp_has_default_acl(dir);
}
