/* fs.c - the filesystem backend: a repository is a directory on a local disk or an NFS mount.
 *
 * Layout under the repository directory:
 *   kbackup, config          the two fixed objects
 *   keys/<name>, index/<name>, snapshots/<name>, locks/<name>
 *   data/<xx>/<name>         packs, where xx is the first two hex digits of the name, so no
 *                            single directory has to hold millions of entries
 *
 * Every object is written to a ".tmp-*" file in its final directory, fsynced, then moved into place
 * with a no-replace rename, and the directory fsynced: a reader (or a SnapMirror replica taken at
 * any instant) sees either the whole object or none of it, and an existing object is never
 * overwritten. All operations work relative to a directory fd opened once, hold no shared mutable
 * state and so may run from several threads at once. */
#include "backend.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

#define FS_NAME_MAX 128
#define FS_DIR_MODE 0700
#define FS_OBJ_MODE 0600

struct fs_backend {
        struct kb_backend base; /* must stay first: ops receive a struct kb_backend * */
        int rootfd;
};

/* Where an object lives: `dir` relative to the root ("." for the fixed files), `base` inside
 * that directory, `rel` = dir/base for messages. */
struct fs_path {
        char dir[16];
        char base[FS_NAME_MAX + 1];
        char rel[FS_NAME_MAX + 32];
        const char *what; /* "pack", "key", ... for messages */
};

static const char *const subdirs[] = {"keys", "data", "index", "snapshots", "locks"};

static struct fs_backend *fs_of(struct kb_backend *be)
{
        return (struct fs_backend *)be;
}

static int valid_char(char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '.' || c == '_' || c == '-';
}

static int lower_hex(char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* A name the backend accepts; anything else could escape the repository or collide with our own
 * temp files, which are the only names starting with '.'. */
static int valid_name(const char *name)
{
        size_t n;

        if (!name || !name[0] || name[0] == '.')
                return 0;
        for (n = 0; name[n]; n++)
                if (n >= FS_NAME_MAX || !valid_char(name[n]))
                        return 0;
        return 1;
}

/* Packs must start with two lowercase hex digits: they pick one of the 256 data subdirectories,
 * and list() only walks those. */
static int valid_pack_name(const char *name)
{
        return valid_name(name) && lower_hex(name[0]) && lower_hex(name[1]);
}

static int fs_resolve(enum kb_obj_type type, const char *name, struct fs_path *p,
                      struct kb_err *err)
{
        if ((int)type < 0 || type >= KB_OBJ_TYPE_COUNT)
                return kb_err_set(err, -EINVAL, "unknown object type %d", (int)type);
        p->what = kb_obj_type_word(type);
        if (type == KB_OBJ_MARKER || type == KB_OBJ_CONFIG) {
                strcpy(p->dir, ".");
                strcpy(p->base, type == KB_OBJ_MARKER ? "kbackup" : "config");
                strcpy(p->rel, p->base);
                return 0;
        }
        if (type == KB_OBJ_PACK ? !valid_pack_name(name) : !valid_name(name))
                return kb_err_set(err, -EINVAL, "invalid %s name \"%.*s\"", p->what, FS_NAME_MAX,
                                  name ? name : "(null)");
        if (type == KB_OBJ_PACK)
                snprintf(p->dir, sizeof(p->dir), "data/%c%c", name[0], name[1]);
        else
                snprintf(p->dir, sizeof(p->dir), "%s", kb_obj_type_dir(type));
        snprintf(p->base, sizeof(p->base), "%s", name);
        snprintf(p->rel, sizeof(p->rel), "%s/%s", p->dir, name);
        return 0;
}

static int not_found(const struct fs_path *p, struct kb_err *err)
{
        return kb_err_set(err, KB_ENOTFOUND, "%s %s not found", p->what, p->base);
}

/* Make a directory's entries durable. Some filesystems cannot fsync a directory (EINVAL); there
 * is nothing more we can do there, so that is not an error. */
static int fsync_dirfd(int fd)
{
        if (fsync(fd) < 0 && errno != EINVAL)
                return -errno;
        return 0;
}

static int fsync_dir_at(int rootfd, const char *rel)
{
        int fd = openat(rootfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int r;

        if (fd < 0)
                return -errno;
        r = fsync_dirfd(fd);
        close(fd);
        return r;
}

/* mkdir one level and fsync its parent so the new entry survives a crash. The parent is synced
 * even when another thread won the mkdir: that thread may still be syncing, and our object must
 * not become durable before its directory does. Only the rare first put into a directory gets
 * here. */
static int mkdir_durable(int rootfd, const char *rel, const char *parent, struct kb_err *err)
{
        int r;

        if (mkdirat(rootfd, rel, FS_DIR_MODE) < 0 && errno != EEXIST)
                return kb_err_sys(err, -errno, "cannot create directory %s", rel);
        r = fsync_dir_at(rootfd, parent);
        if (r < 0)
                return kb_err_sys(err, r, "cannot sync directory %s", parent);
        return 0;
}

/* Open the directory an object goes into, creating data/xx (or a type directory someone
 * removed) on demand. */
static int open_dir_for_put(struct fs_backend *fs, const struct fs_path *p, struct kb_err *err)
{
        int fd, r;

        fd = openat(fs->rootfd, p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0)
                return fd;
        if (errno != ENOENT)
                return kb_err_sys(err, -errno, "cannot open directory %s", p->dir);
        if (strncmp(p->dir, "data/", 5) == 0) {
                r = mkdir_durable(fs->rootfd, "data", ".", err);
                if (r < 0)
                        return r;
                r = mkdir_durable(fs->rootfd, p->dir, "data", err);
        } else {
                r = mkdir_durable(fs->rootfd, p->dir, ".", err);
        }
        if (r < 0)
                return r;
        fd = openat(fs->rootfd, p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return kb_err_sys(err, -errno, "cannot open directory %s", p->dir);
        return fd;
}

static void temp_name(char *out, size_t n)
{
        static atomic_ullong counter;
        unsigned long long r;

        /* Random so that several hosts sharing an NFS repository do not collide; O_EXCL catches
         * the rest. */
        if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
                struct timespec ts;

                clock_gettime(CLOCK_REALTIME, &ts);
                r = ((unsigned long long)getpid() << 40) ^ ((unsigned long long)ts.tv_nsec << 8) ^
                    (unsigned long long)ts.tv_sec;
                r ^= atomic_fetch_add(&counter, 1) * 0x9e3779b97f4a7c15ULL;
        }
        snprintf(out, n, ".tmp-%016llx", r);
}

static int write_all(int fd, const void *data, size_t len)
{
        const unsigned char *p = data;

        while (len > 0) {
                ssize_t w = write(fd, p, len);

                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (w == 0)
                        return -EIO;
                p += w;
                len -= (size_t)w;
        }
        return 0;
}

/* Large objects (packs) skip the page cache: copying 16 MiB into it, managing its pages and
 * writing them back cost 7% of a backup's CPU, on the same cores as compression, for data that
 * fsync sends to the disk at once anyway (and that would push the node's applications out of the
 * cache). O_DIRECT wants the buffer, offsets and lengths in whole blocks: the aligned part of a
 * page-aligned buffer goes direct, the tail through the cache; where a file system refuses
 * (tmpfs, some FUSE mounts) or the buffer is not aligned, all of it does. */
#define DIRECT_MIN   ((size_t)1 << 20)
#define DIRECT_ALIGN ((size_t)4096)

static int write_object(int fd, const void *data, size_t len)
{
        size_t head = len / DIRECT_ALIGN * DIRECT_ALIGN, done = 0;
        int fl;

        if (len >= DIRECT_MIN && (uintptr_t)data % DIRECT_ALIGN == 0 &&
            (fl = fcntl(fd, F_GETFL)) >= 0 && fcntl(fd, F_SETFL, fl | O_DIRECT) == 0) {
                while (done < head) {
                        ssize_t w = write(fd, (const uint8_t *)data + done, head - done);

                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w <= 0)
                                break; /* the rest goes through the cache, errors included */
                        done += (size_t)w;
                        if ((size_t)w % DIRECT_ALIGN)
                                break;
                }
                if (fcntl(fd, F_SETFL, fl) < 0)
                        return -errno;
        }
        return write_all(fd, (const uint8_t *)data + done, len - done);
}

static int sys_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                         unsigned int flags)
{
#ifdef SYS_renameat2
        return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
#else
        (void)olddirfd, (void)oldpath, (void)newdirfd, (void)newpath, (void)flags;
        errno = ENOSYS;
        return -1;
#endif
}

/* Move tmp to base inside dirfd without ever replacing an existing base. Returns 0 (tmp is gone),
 * -EEXIST (tmp still there) or -errno (tmp still there). */
static int publish(int dirfd, const char *tmp, const char *base)
{
        struct stat st;

        if (sys_renameat2(dirfd, tmp, dirfd, base, RENAME_NOREPLACE) == 0)
                return 0;
        if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
                return -errno;
        /* The kernel or filesystem (older NFS clients, some FUSE) has no RENAME_NOREPLACE:
         * link() fails atomically when the target exists. */
        if (linkat(dirfd, tmp, dirfd, base, 0) == 0) {
                unlinkat(dirfd, tmp, 0);
                return 0;
        }
        if (errno != EPERM && errno != EOPNOTSUPP && errno != ENOSYS)
                return -errno;
        /* No hard links either (vfat, some FUSE and SMB mounts): check then rename. Not atomic
         * against a concurrent writer of the same name, but names are content ids or random, so
         * a racing writer would be writing the same bytes. */
        if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0)
                return -EEXIST;
        if (errno != ENOENT)
                return -errno;
        if (renameat(dirfd, tmp, dirfd, base) < 0)
                return -errno;
        return 0;
}

static int fs_put(struct kb_backend *be, enum kb_obj_type type, const char *name, const void *data,
                  size_t len, struct kb_err *err)
{
        struct fs_backend *fs = fs_of(be);
        struct fs_path p;
        char tmp[32];
        int dirfd, fd = -1, r, tries;

        r = fs_resolve(type, name, &p, err);
        if (r < 0)
                return r;
        if (be->read_only)
                return kb_err_set(err, -EROFS, "cannot write %s: the repository is read-only",
                                  p.rel);
        if (len > 0 && !data)
                return kb_err_set(err, -EINVAL, "cannot write %s: no data", p.rel);
        dirfd = open_dir_for_put(fs, &p, err);
        if (dirfd < 0)
                return dirfd;

        for (tries = 0; tries < 16; tries++) {
                temp_name(tmp, sizeof(tmp));
                fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, FS_OBJ_MODE);
                if (fd >= 0 || errno != EEXIST)
                        break;
        }
        if (fd < 0) {
                r = kb_err_sys(err, -errno, "cannot write %s", p.rel);
                close(dirfd);
                return r;
        }

        r = write_object(fd, data, len);
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        /* NFS reports deferred write errors at close. */
        if (close(fd) < 0 && r == 0 && errno != EINTR)
                r = -errno;
        if (r < 0) {
                kb_err_sys(err, r, "cannot write %s", p.rel);
                goto fail;
        }

        r = publish(dirfd, tmp, p.base);
        if (r == -EEXIST) {
                kb_err_set(err, r, "%s %s already exists", p.what, p.base);
                goto fail;
        }
        if (r < 0) {
                kb_err_sys(err, r, "cannot write %s", p.rel);
                goto fail;
        }
        r = fsync_dirfd(dirfd);
        close(dirfd);
        if (r < 0)
                return kb_err_sys(err, r, "cannot sync directory %s after writing %s", p.dir,
                                  p.base);
        return 0;

fail:
        unlinkat(dirfd, tmp, 0);
        close(dirfd);
        return r;
}

static int fs_get(struct kb_backend *be, enum kb_obj_type type, const char *name, uint64_t off,
                  size_t len, struct kb_buf *out, struct kb_err *err)
{
        struct fs_backend *fs = fs_of(be);
        struct fs_path p;
        struct stat st;
        size_t old_len = out->len, done = 0;
        uint64_t size;
        int fd, r;

        r = fs_resolve(type, name, &p, err);
        if (r < 0)
                return r;
        fd = openat(fs->rootfd, p.rel, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        return not_found(&p, err);
                return kb_err_sys(err, -errno, "cannot read %s", p.rel);
        }
        if (fstat(fd, &st) < 0) {
                r = kb_err_sys(err, -errno, "cannot read %s", p.rel);
                goto out;
        }
        if (!S_ISREG(st.st_mode)) {
                r = kb_err_set(err, -EIO, "cannot read %s: not a regular file", p.rel);
                goto out;
        }
        size = (uint64_t)st.st_size;
        if (len > 0 && (uint64_t)len > UINT64_MAX - off) {
                r = kb_err_set(err, -EINVAL, "cannot read %s: range overflows", p.rel);
                goto out;
        }
        if (off > size || (len > 0 && off + len > size)) {
                r = kb_err_set(err, -EIO,
                               "cannot read %s: truncated (%llu bytes, wanted %llu at offset %llu)",
                               p.rel, (unsigned long long)size, (unsigned long long)len,
                               (unsigned long long)off);
                goto out;
        }
        if (len == 0) {
                if (size - off > SIZE_MAX) {
                        r = kb_err_set(err, -EFBIG, "cannot read %s: too large", p.rel);
                        goto out;
                }
                len = (size_t)(size - off);
        }
        r = kb_buf_reserve(out, len);
        if (r < 0) {
                kb_err_sys(err, r, "cannot read %s", p.rel);
                goto out;
        }
        while (done < len) {
                ssize_t n = pread(fd, out->data + old_len + done, len - done, (off_t)(off + done));

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = kb_err_sys(err, -errno, "cannot read %s", p.rel);
                        goto out;
                }
                if (n == 0) {
                        r = kb_err_set(err, -EIO, "cannot read %s: truncated while reading", p.rel);
                        goto out;
                }
                done += (size_t)n;
        }
        out->len = old_len + len;
        r = 0;
out:
        close(fd);
        return r;
}

static int fs_stat(struct kb_backend *be, enum kb_obj_type type, const char *name, uint64_t *size,
                   struct kb_err *err)
{
        struct fs_backend *fs = fs_of(be);
        struct fs_path p;
        struct stat st;
        int r;

        r = fs_resolve(type, name, &p, err);
        if (r < 0)
                return r;
        if (fstatat(fs->rootfd, p.rel, &st, 0) < 0) {
                if (errno == ENOENT)
                        return not_found(&p, err);
                return kb_err_sys(err, -errno, "cannot stat %s", p.rel);
        }
        if (!S_ISREG(st.st_mode))
                return kb_err_set(err, -EIO, "cannot stat %s: not a regular file", p.rel);
        if (size)
                *size = (uint64_t)st.st_size;
        return 0;
}

/* List one directory; a missing directory is an empty list. `prefix` (packs only) skips
 * misplaced files that get() could not find anyway. */
static int list_dir(struct fs_backend *fs, const char *rel, enum kb_obj_type type,
                    const char *prefix, kb_backend_list_cb cb, void *arg, struct kb_err *err)
{
        struct dirent *de;
        struct stat st;
        DIR *d;
        int fd, r = 0;

        fd = openat(fs->rootfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        return 0;
                return kb_err_sys(err, -errno, "cannot list %s", rel);
        }
        d = fdopendir(fd);
        if (!d) {
                r = kb_err_sys(err, -errno, "cannot list %s", rel);
                close(fd);
                return r;
        }
        for (;;) {
                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno)
                                r = kb_err_sys(err, -errno, "cannot list %s", rel);
                        break;
                }
                /* Skips ".", "..", temp files and anything get() would refuse. */
                if (type == KB_OBJ_PACK ? !valid_pack_name(de->d_name) : !valid_name(de->d_name))
                        continue;
                if (prefix && strncmp(de->d_name, prefix, 2) != 0)
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, 0) < 0) {
                        if (errno == ENOENT) /* removed while we were listing */
                                continue;
                        r = kb_err_sys(err, -errno, "cannot stat %s/%s", rel, de->d_name);
                        break;
                }
                if (!S_ISREG(st.st_mode))
                        continue;
                r = cb(de->d_name, (uint64_t)st.st_size, arg);
                if (r)
                        break;
        }
        closedir(d);
        return r;
}

static int fs_list(struct kb_backend *be, enum kb_obj_type type, kb_backend_list_cb cb, void *arg,
                   struct kb_err *err)
{
        struct fs_backend *fs = fs_of(be);
        struct fs_path p;
        struct stat st;
        char rel[16], prefix[3];
        int r, i;

        if ((int)type < 0 || type >= KB_OBJ_TYPE_COUNT)
                return kb_err_set(err, -EINVAL, "unknown object type %d", (int)type);
        if (type == KB_OBJ_MARKER || type == KB_OBJ_CONFIG) {
                fs_resolve(type, NULL, &p, err);
                if (fstatat(fs->rootfd, p.base, &st, 0) < 0) {
                        if (errno == ENOENT)
                                return 0;
                        return kb_err_sys(err, -errno, "cannot stat %s", p.base);
                }
                return S_ISREG(st.st_mode) ? cb(p.base, (uint64_t)st.st_size, arg) : 0;
        }
        if (type != KB_OBJ_PACK)
                return list_dir(fs, kb_obj_type_dir(type), type, NULL, cb, arg, err);
        for (i = 0; i < 256; i++) {
                snprintf(prefix, sizeof(prefix), "%02x", i);
                snprintf(rel, sizeof(rel), "data/%s", prefix);
                r = list_dir(fs, rel, type, prefix, cb, arg, err);
                if (r)
                        return r;
        }
        return 0;
}

static int fs_remove(struct kb_backend *be, enum kb_obj_type type, const char *name,
                     struct kb_err *err)
{
        struct fs_backend *fs = fs_of(be);
        struct fs_path p;
        int dirfd, r;

        r = fs_resolve(type, name, &p, err);
        if (r < 0)
                return r;
        if (be->read_only)
                return kb_err_set(err, -EROFS, "cannot remove %s: the repository is read-only",
                                  p.rel);
        dirfd = openat(fs->rootfd, p.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0) {
                if (errno == ENOENT)
                        return 0;
                return kb_err_sys(err, -errno, "cannot remove %s", p.rel);
        }
        if (unlinkat(dirfd, p.base, 0) < 0) {
                r = errno == ENOENT ? 0 : kb_err_sys(err, -errno, "cannot remove %s", p.rel);
                close(dirfd);
                return r;
        }
        r = fsync_dirfd(dirfd);
        close(dirfd);
        if (r < 0)
                return kb_err_sys(err, r, "cannot sync directory %s after removing %s", p.dir,
                                  p.base);
        return 0;
}

static void fs_close(struct kb_backend *be)
{
        struct fs_backend *fs = fs_of(be);

        close(fs->rootfd);
        free(fs);
}

static const struct kb_backend_ops fs_ops = {
    .put = fs_put,
    .get = fs_get,
    .stat = fs_stat,
    .list = fs_list,
    .remove = fs_remove,
    .close = fs_close,
};

/* mkdir the repository directory itself (its parent must exist) and make the entry durable. */
static int create_root(const char *path, struct kb_err *err)
{
        char *copy, *parent;
        int fd, r = 0;

        if (mkdir(path, FS_DIR_MODE) < 0) {
                if (errno == EEXIST)
                        return 0; /* an existing (say, freshly mounted) directory is fine */
                return kb_err_sys(err, -errno, "cannot create repository %s", path);
        }
        copy = strdup(path);
        if (!copy)
                return kb_err_sys(err, -ENOMEM, "cannot create repository %s", path);
        parent = dirname(copy);
        fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        r = fd < 0 ? -errno : fsync_dirfd(fd);
        if (r < 0)
                kb_err_sys(err, r, "cannot sync directory %s", parent);
        if (fd >= 0)
                close(fd);
        free(copy);
        return r;
}

static int create_layout(int rootfd, const char *path, struct kb_err *err)
{
        size_t i;
        int r;

        for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
                if (mkdirat(rootfd, subdirs[i], FS_DIR_MODE) < 0 && errno != EEXIST)
                        return kb_err_sys(err, -errno, "cannot create directory %s/%s", path,
                                          subdirs[i]);
        }
        r = fsync_dirfd(rootfd);
        if (r < 0)
                return kb_err_sys(err, r, "cannot sync directory %s", path);
        return 0;
}

int kb_fs_backend_open(const char *path, int create, struct kb_backend **out, struct kb_err *err)
{
        struct fs_backend *fs;
        struct statvfs sv;
        int fd, r;

        *out = NULL;
        if (!path || !path[0])
                return kb_err_set(err, KB_EUSAGE, "no repository path given");
        if (create) {
                r = create_root(path, err);
                if (r < 0)
                        return r;
        }
        /* Opening only reads: a read-only SnapMirror destination must stay untouched. */
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        return kb_err_set(err, KB_ENOTFOUND, "repository %s does not exist", path);
                if (errno == ENOTDIR)
                        return kb_err_set(err, KB_ENOTFOUND, "repository %s is not a directory",
                                          path);
                return kb_err_sys(err, -errno, "cannot open repository %s", path);
        }
        if (create) {
                r = create_layout(fd, path, err);
                if (r < 0) {
                        close(fd);
                        return r;
                }
        }
        fs = calloc(1, sizeof(*fs));
        if (!fs) {
                close(fd);
                return kb_err_sys(err, -ENOMEM, "cannot open repository %s", path);
        }
        fs->base.ops = &fs_ops;
        fs->rootfd = fd;
        if (access(path, W_OK) < 0 || (fstatvfs(fd, &sv) == 0 && (sv.f_flag & ST_RDONLY)))
                fs->base.read_only = 1;
        *out = &fs->base;
        return 0;
}
