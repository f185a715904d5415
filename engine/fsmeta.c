/* fsmeta.c - read and apply the metadata of one file system entry (stat fields, xattrs). */
#include "fsmeta.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

void kb_fsmeta_from_stat(Kbackup__Node *n, const struct stat *st)
{
        switch (st->st_mode & S_IFMT) {
        case S_IFDIR:
                n->type = KBACKUP__NODE_TYPE__NODE_DIR;
                break;
        case S_IFLNK:
                n->type = KBACKUP__NODE_TYPE__NODE_SYMLINK;
                break;
        case S_IFIFO:
                n->type = KBACKUP__NODE_TYPE__NODE_FIFO;
                break;
        case S_IFCHR:
                n->type = KBACKUP__NODE_TYPE__NODE_CHR;
                break;
        case S_IFBLK:
                n->type = KBACKUP__NODE_TYPE__NODE_BLK;
                break;
        default:
                n->type = KBACKUP__NODE_TYPE__NODE_FILE;
                break;
        }
        n->mode = st->st_mode & 07777;
        n->uid = st->st_uid;
        n->gid = st->st_gid;
        n->mtime_sec = st->st_mtim.tv_sec;
        n->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
        n->atime_sec = st->st_atim.tv_sec;
        n->atime_nsec = (uint32_t)st->st_atim.tv_nsec;
        n->ctime_sec = st->st_ctim.tv_sec;
        n->ctime_nsec = (uint32_t)st->st_ctim.tv_nsec;
        /* A directory's size is a file system artefact; leaving it out keeps tree blobs of
         * unchanged directories identical across backups. */
        n->size = (S_ISREG(st->st_mode) || S_ISLNK(st->st_mode)) ? (uint64_t)st->st_size : 0;
        n->inode = st->st_ino;
        n->device = st->st_dev;
        n->nlink = (uint32_t)st->st_nlink;
        n->rdev = (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) ? st->st_rdev : 0;
}

static void proc_path(char *buf, size_t sz, int dirfd, const char *name)
{
        snprintf(buf, sz, "/proc/self/fd/%d/%s", dirfd, name);
}

static int xattr_cmp(const void *a, const void *b)
{
        const Kbackup__Xattr *x = *(Kbackup__Xattr *const *)a, *y = *(Kbackup__Xattr *const *)b;
        size_t n = x->name.len < y->name.len ? x->name.len : y->name.len;
        int c = memcmp(x->name.data, y->name.data, n);

        if (c)
                return c;
        return x->name.len < y->name.len ? -1 : x->name.len > y->name.len;
}

static int unsupported(int e)
{
        return e == ENOTSUP || e == EOPNOTSUPP;
}

/* Read one value into the arena. Returns 0, 1 when the attribute vanished, or -errno. */
static int read_value(int fd, const char *path, const char *key, struct kb_arena *a,
                      ProtobufCBinaryData *out)
{
        for (int tries = 0; tries < 8; tries++) {
                ssize_t sz = fd >= 0 ? fgetxattr(fd, key, NULL, 0) : lgetxattr(path, key, NULL, 0);
                ssize_t got;
                uint8_t *v;

                if (sz < 0)
                        return errno == ENODATA ? 1 : -errno;
                v = kb_arena_alloc(a, (size_t)sz + 1);
                if (!v)
                        return -ENOMEM;
                got = fd >= 0 ? fgetxattr(fd, key, v, (size_t)sz)
                              : lgetxattr(path, key, v, (size_t)sz);
                if (got < 0) {
                        if (errno == ERANGE)
                                continue; /* grew meanwhile */
                        return errno == ENODATA ? 1 : -errno;
                }
                out->data = v;
                out->len = (size_t)got;
                return 0;
        }
        return -EAGAIN;
}

int kb_fsmeta_read_xattrs(int fd, int dirfd, const char *name, struct kb_arena *a, Kbackup__Node *n)
{
        char path[320];
        char *list = NULL;
        ssize_t len = 0;
        size_t count = 0, i;
        Kbackup__Xattr **xs;
        int r = 0;

        n->n_xattrs = 0;
        n->xattrs = NULL;
        if (fd < 0)
                proc_path(path, sizeof(path), dirfd, name);
        for (int tries = 0;; tries++) {
                ssize_t sz = fd >= 0 ? flistxattr(fd, NULL, 0) : llistxattr(path, NULL, 0);

                if (sz < 0) {
                        r = unsupported(errno) ? 0 : -errno;
                        goto out;
                }
                if (sz == 0)
                        goto out;
                free(list);
                list = malloc((size_t)sz);
                if (!list) {
                        r = -ENOMEM;
                        goto out;
                }
                len =
                    fd >= 0 ? flistxattr(fd, list, (size_t)sz) : llistxattr(path, list, (size_t)sz);
                if (len >= 0)
                        break;
                if (errno != ERANGE || tries >= 8) {
                        r = -errno;
                        goto out;
                }
        }
        for (i = 0; i < (size_t)len; i += strlen(list + i) + 1)
                count++;
        xs = kb_arena_alloc(a, count * sizeof(*xs));
        if (!xs) {
                r = -ENOMEM;
                goto out;
        }
        for (i = 0; i < (size_t)len; i += strlen(list + i) + 1) {
                const char *key = list + i;
                Kbackup__Xattr *x = kb_arena_alloc(a, sizeof(*x));
                size_t klen = strlen(key);

                if (!x || !klen) {
                        r = x ? 0 : -ENOMEM;
                        if (r)
                                goto out;
                        continue;
                }
                kbackup__xattr__init(x);
                r = read_value(fd, fd >= 0 ? NULL : path, key, a, &x->value);
                if (r == 1) {
                        r = 0;
                        continue;
                }
                if (r < 0)
                        goto out;
                x->name.data = kb_arena_dup(a, key, klen);
                if (!x->name.data) {
                        r = -ENOMEM;
                        goto out;
                }
                x->name.len = klen;
                xs[n->n_xattrs++] = x;
        }
        /* listxattr order is the file system's; sorting keeps unchanged nodes byte-identical. */
        qsort(xs, n->n_xattrs, sizeof(*xs), xattr_cmp);
        n->xattrs = xs;
out:
        if (r < 0)
                n->n_xattrs = 0;
        free(list);
        return r;
}

int kb_fsmeta_apply(int fd, int dirfd, const char *name, const Kbackup__Node *n, int flags,
                    kb_fsmeta_report_cb report, void *arg)
{
        int is_link = n->type == KBACKUP__NODE_TYPE__NODE_SYMLINK;
        char path[320], what[300];
        int errors = 0, r;

        if (fd < 0)
                proc_path(path, sizeof(path), dirfd, name);
        if (flags & KB_FSMETA_OWNER) {
                r = fd >= 0 ? fchown(fd, n->uid, n->gid)
                            : fchownat(dirfd, name, n->uid, n->gid, AT_SYMLINK_NOFOLLOW);
                if (r < 0) {
                        report(arg, "chown", errno, 1);
                        errors++;
                }
        }
        for (size_t i = 0; i < n->n_xattrs; i++) {
                const Kbackup__Xattr *x = n->xattrs[i];
                char key[XATTR_NAME_MAX + 1];

                if (!x->name.len || x->name.len > XATTR_NAME_MAX ||
                    memchr(x->name.data, '\0', x->name.len)) {
                        report(arg, "xattr with an invalid name", EINVAL, 1);
                        errors++;
                        continue;
                }
                memcpy(key, x->name.data, x->name.len);
                key[x->name.len] = '\0';
                r = fd >= 0 ? fsetxattr(fd, key, x->value.data, x->value.len, 0)
                            : lsetxattr(path, key, x->value.data, x->value.len, 0);
                if (r < 0) {
                        int e = errno;
                        /* Namespaces the target file system or this user cannot set are a limit
                         * of where we restore to, not damage. */
                        int counted = !(unsupported(e) || e == EPERM || e == EACCES);

                        snprintf(what, sizeof(what), "xattr %s", key);
                        report(arg, what, e, counted);
                        errors += counted;
                }
        }
        if (!is_link && (!(flags & KB_FSMETA_MODE_SET) || n->n_xattrs)) {
                mode_t mode = n->mode & 07777;

                r = fd >= 0 ? fchmod(fd, mode) : fchmodat(dirfd, name, mode, 0);
                if (r < 0) {
                        report(arg, "chmod", errno, 1);
                        errors++;
                }
        }
        if (flags & KB_FSMETA_TIMES) {
                struct timespec ts[2] = {
                    {.tv_sec = n->atime_sec, .tv_nsec = n->atime_nsec % 1000000000u},
                    {.tv_sec = n->mtime_sec, .tv_nsec = n->mtime_nsec % 1000000000u},
                };

                r = fd >= 0 ? futimens(fd, ts) : utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW);
                if (r < 0) {
                        report(arg, "set times", errno, 1);
                        errors++;
                }
        }
        return errors;
}

int kb_fsmeta_umask(mode_t *out)
{
        FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        int rc = -ENOENT;

        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f)) {
                unsigned mask;

                if (sscanf(line, "Umask: %o", &mask) == 1) {
                        *out = (mode_t)(mask & 0777);
                        rc = 0;
                        break;
                }
        }
        fclose(f);
        return rc;
}
