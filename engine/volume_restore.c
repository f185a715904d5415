/* volume_restore.c - restore a volume snapshot's tree (or one entry of it) under a target
 * directory.
 *
 * Everything is created relative to directory descriptors with O_NOFOLLOW / O_EXCL, so paths may
 * exceed PATH_MAX and neither a hostile repository nor a symlink already in the target can make the
 * restore write outside the target.
 *
 * Policy for a target that already has content: directories that exist are merged into; any other
 * existing entry is never overwritten - it is reported through warn and counted as a failed item
 * (the call returns KB_EPARTIAL), and a non-directory in the way of a directory skips that subtree.
 * Metadata (owner, mode, xattrs, times) is applied only to entries the restore created: an existing
 * directory keeps its own. The same goes for the target itself: it receives the metadata of the
 * backed-up root only when the restore created it or it was empty, so restoring into a populated
 * directory never changes that directory's mode or owner.
 *
 * This thread walks the tree in name order and creates directories, symlinks, special files and
 * the files of link groups itself, so conflicts and link groups behave as in a sequential restore.
 * Other regular files go to the worker pool (restore_pool.h), which creates them, writes several
 * files, and parts of one large file, at once and gives each file its metadata when its content is
 * complete. Creating a file changes its directory's times, so a directory gets its metadata when
 * its last file is done (its group's release, on whichever thread that is), not when the walk
 * leaves it; until then its tree, which holds the nodes the workers read, and its parent's tree,
 * which holds its own node, are kept.
 *
 * Every chunk is verified as it is read (pack_reader.c, which fetches neighbouring chunks in one
 * range); the first damaged chunk of a file is reported with the file and offset, and the restore
 * moves on to the next file. A damaged file keeps the bytes before the damage and does not get its
 * size and times restored, so tools that compare size and mtime see it differ from the original. */
#include "volume.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fsmeta.h"
#include "restore_pool.h"
#include "volume_int.h"

#define DIR_FD_BUDGET     64
#define PROGRESS_INTERVAL 0.25

/* Where the first restored member of each link group is, relative to the target root. */
struct holder {
        uint64_t group;
        char *path;
};

struct holders {
        struct holder *v;
        size_t cap, count;
};

/* A directory being restored: its entries, and what its metadata needs once they are done. It
 * lives until its files are done and every subdirectory (whose node is in t) let go of it. */
struct rdir {
        _Atomic unsigned refs;
        Kbackup__Tree *t;
        const Kbackup__Node *n; /* its own node, in the parent's tree; NULL: no metadata */
        struct rdir *parent;    /* holds n */
        struct kb_restore_pool *pool;
        int flags; /* for kb_fsmeta_apply */
        char path[];
};

struct rctx {
        struct kb_repo *repo;
        const struct kb_volume_restore_opts *o;
        struct kb_err *err;
        int owner;
        struct kb_dirstack ds;
        struct kb_relpath path;
        struct holders links;
        struct kb_restore_pool *pool;
        struct kb_restore_group *group; /* of the tree being walked; NULL for --include's entry */
        struct rdir *dir;               /* the same directory */
        uint64_t files, dirs, bytes, errors;
        uint64_t pool_files;
        unsigned threads; /* the pool's workers */
        uint64_t files_total, bytes_total;
        double last_progress;
};

static void warnf(struct rctx *c, int counted, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void warnf(struct rctx *c, int counted, const char *fmt, ...)
{
        va_list ap;

        if (counted)
                c->errors++;
        if (!c->o)
                return;
        va_start(ap, fmt);
        kb_warn_fmt(c->o->warn, c->o->cb_arg, fmt, ap);
        va_end(ap);
}

/* The pool's warnings arrive here, on this thread. */
static void pool_warn(void *arg, int counted, const char *msg)
{
        warnf(arg, counted, "%s", msg);
}

static const char *cur_path(const struct rctx *c)
{
        return kb_relpath_show(&c->path);
}

static void progress(struct rctx *c, int force)
{
        struct kb_progress p = {0};
        double now;

        if (!c->o || !c->o->progress)
                return;
        now = kb_volclock();
        if (!force && now - c->last_progress < PROGRESS_INTERVAL)
                return;
        c->last_progress = now;
        if (c->pool)
                kb_restore_pool_stats(c->pool, &c->pool_files, &c->bytes, &c->threads);
        p.files_done = c->files + c->pool_files;
        p.bytes_done = c->bytes;
        p.files_total = c->files_total;
        p.bytes_total = c->bytes_total;
        p.current = force ? NULL : cur_path(c);
        c->o->progress(&p, c->o->cb_arg);
}

static void pool_tick(void *arg)
{
        progress(arg, 0);
}

static void conflict(struct rctx *c)
{
        warnf(c, 1, "%s: already exists in the target, not overwritten", cur_path(c));
}

static void meta_report(void *arg, const char *what, int errnum, int counted)
{
        struct rctx *c = arg;

        warnf(c, counted, "%s: cannot restore metadata (%s): %s", cur_path(c), what,
              strerror(errnum));
}

static void apply_meta(struct rctx *c, int fd, int dirfd, const char *name, const Kbackup__Node *n,
                       int times)
{
        int flags = (c->owner ? KB_FSMETA_OWNER : 0) | (times ? KB_FSMETA_TIMES : 0);

        kb_fsmeta_apply(fd, dirfd, name, n, flags, meta_report, c);
}

/* --- link groups --------------------------------------------------------------------------- */

static size_t group_hash(uint64_t g)
{
        g *= 0x9E3779B97F4A7C15ull;
        return (size_t)(g ^ (g >> 29));
}

static struct holder *holder_find(struct holders *h, uint64_t group)
{
        if (!h->cap)
                return NULL;
        for (size_t i = group_hash(group) & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
                if (!h->v[i].path)
                        return NULL;
                if (h->v[i].group == group)
                        return &h->v[i];
        }
}

static int holder_add(struct holders *h, uint64_t group, const char *path)
{
        size_t i;
        char *p;

        if ((h->count + 1) * 10 > h->cap * 7) {
                size_t cap = h->cap ? h->cap * 2 : 64;
                struct holder *v = calloc(cap, sizeof(*v));

                if (!v)
                        return -ENOMEM;
                for (size_t j = 0; j < h->cap; j++) {
                        if (!h->v[j].path)
                                continue;
                        i = group_hash(h->v[j].group) & (cap - 1);
                        while (v[i].path)
                                i = (i + 1) & (cap - 1);
                        v[i] = h->v[j];
                }
                free(h->v);
                h->v = v;
                h->cap = cap;
        }
        p = strdup(path);
        if (!p)
                return -ENOMEM;
        i = group_hash(group) & (h->cap - 1);
        while (h->v[i].path)
                i = (i + 1) & (h->cap - 1);
        h->v[i].group = group;
        h->v[i].path = p;
        h->count++;
        return 0;
}

static void holders_free(struct holders *h)
{
        for (size_t i = 0; i < h->cap; i++)
                free(h->v[i].path);
        free(h->v);
        memset(h, 0, sizeof(*h));
}

/* Hardlink dirfd/name to `rel` (relative to the target root), resolving rel one component at a
 * time without following symlinks. Returns 0 or -errno. */
static int link_to(int rootfd, const char *rel, int dirfd, const char *name)
{
        const char *p = rel, *slash;
        int fd = rootfd, rc;

        while ((slash = strchr(p, '/'))) {
                char *comp = strndup(p, (size_t)(slash - p));
                int nfd;

                if (!comp) {
                        rc = -ENOMEM;
                        goto out;
                }
                nfd = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                rc = nfd < 0 ? -errno : 0;
                free(comp);
                if (fd != rootfd)
                        close(fd);
                fd = nfd;
                if (rc < 0)
                        return rc;
                p = slash + 1;
        }
        rc = linkat(fd, p, dirfd, name, 0) < 0 ? -errno : 0;
out:
        if (fd != rootfd && fd >= 0)
                close(fd);
        return rc;
}

/* --- entries ------------------------------------------------------------------------------- */

/* Returns <0 fatal, 0 created (or handed to a worker that creates it), 1 not created (reported). */
static int restore_file(struct rctx *c, int dirfd, const char *name, const Kbackup__Node *n)
{
        int fd, rc;

        /* A link group's first member must exist before the walk meets the next one. */
        if (c->group && !n->link_group) {
                rc = kb_restore_pool_create(c->pool, c->group, name, n, cur_path(c), c->err);
                return rc < 0 ? rc : 0;
        }
        fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
                if (errno == EEXIST)
                        conflict(c);
                else
                        warnf(c, 1, "%s: cannot create: %s", cur_path(c), strerror(errno));
                return 1;
        }
        /* The pool writes the content, sets the size and metadata and closes fd. */
        rc = kb_restore_pool_file(c->pool, c->group, fd, n, cur_path(c), c->err);
        return rc < 0 ? rc : 0;
}

/* Symlinks, fifos and device nodes. Returns 0 created, 1 not created (reported). */
static int restore_special(struct rctx *c, int dirfd, const char *name, const Kbackup__Node *n)
{
        int r;

        switch (n->type) {
        case KBACKUP__NODE_TYPE__NODE_SYMLINK: {
                char *target;

                if (!n->link_target.len || memchr(n->link_target.data, '\0', n->link_target.len)) {
                        warnf(c, 1, "%s: damaged metadata: invalid symlink target", cur_path(c));
                        return 1;
                }
                target = kb_bytes_strdup(n->link_target.data, n->link_target.len);
                if (!target)
                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                r = symlinkat(target, dirfd, name);
                free(target);
                break;
        }
        case KBACKUP__NODE_TYPE__NODE_FIFO:
                r = mkfifoat(dirfd, name, 0600);
                break;
        case KBACKUP__NODE_TYPE__NODE_CHR:
        case KBACKUP__NODE_TYPE__NODE_BLK: {
                mode_t type = n->type == KBACKUP__NODE_TYPE__NODE_CHR ? S_IFCHR : S_IFBLK;

                r = mknodat(dirfd, name, type | 0600, (dev_t)n->rdev);
                if (r < 0 && errno == EPERM) {
                        /* Not an error of the backup: only root may create device nodes. */
                        warnf(c, 0, "%s: device node skipped (creating one needs root)",
                              cur_path(c));
                        return 1;
                }
                break;
        }
        default:
                warnf(c, 1, "%s: damaged metadata: unknown entry type %d", cur_path(c),
                      (int)n->type);
                return 1;
        }
        if (r < 0) {
                if (errno == EEXIST)
                        conflict(c);
                else
                        warnf(c, 1, "%s: cannot create: %s", cur_path(c), strerror(errno));
                return 1;
        }
        apply_meta(c, -1, dirfd, name, n, 1);
        c->files++;
        return 0;
}

static int restore_tree(struct rctx *c, const ProtobufCBinaryData *id, const Kbackup__Node *dirn);

static int restore_dir(struct rctx *c, int dirfd, const char *name, const Kbackup__Node *n)
{
        struct stat st;
        int created = 0, fd, rc, prc;

        if (mkdirat(dirfd, name, 0700) == 0) {
                created = 1;
        } else if (errno == EEXIST) {
                if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode)) {
                        conflict(c);
                        return 0;
                }
        } else {
                warnf(c, 1, "%s: cannot create directory: %s", cur_path(c), strerror(errno));
                return 0;
        }
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                warnf(c, 1, "%s: cannot open directory: %s", cur_path(c), strerror(errno));
                return 0;
        }
        rc = kb_dirstack_push(&c->ds, fd);
        if (rc < 0)
                return kb_err_sys(c->err, rc, "%s", cur_path(c));
        rc = restore_tree(c, &n->subtree, created ? n : NULL);
        prc = kb_dirstack_pop(&c->ds);
        if (rc == 0 && prc < 0)
                rc = kb_err_sys(c->err, prc, "%s: directory moved during the restore", cur_path(c));
        c->dirs++;
        return rc;
}

static int restore_node(struct rctx *c, const Kbackup__Node *n, const char *name)
{
        int dirfd = kb_dirstack_top(&c->ds), rc;
        struct holder *h = NULL;

        if (n->type == KBACKUP__NODE_TYPE__NODE_DIR)
                return restore_dir(c, dirfd, name, n);
        if (n->link_group)
                h = holder_find(&c->links, n->link_group);
        if (h) {
                rc = link_to(kb_dirstack_root(&c->ds), h->path, dirfd, name);
                if (rc == 0) {
                        c->files++;
                        return 0;
                }
                if (rc == -EEXIST) {
                        conflict(c);
                        return 0;
                }
                if (rc != -ENOENT) {
                        warnf(c, 1, "%s: cannot link to %s: %s", cur_path(c), h->path,
                              strerror(-rc));
                        return 0;
                }
                /* The first member disappeared meanwhile: this one becomes the holder. */
        }
        if (n->type == KBACKUP__NODE_TYPE__NODE_FILE)
                rc = restore_file(c, dirfd, name, n);
        else
                rc = restore_special(c, dirfd, name, n);
        if (rc < 0)
                return rc;
        if (rc == 0 && n->link_group && (!h || strcmp(h->path, c->path.s) != 0)) {
                if (h) {
                        char *p = strdup(c->path.s);

                        if (!p)
                                return kb_err_set(c->err, -ENOMEM, "out of memory");
                        free(h->path);
                        h->path = p;
                } else if (holder_add(&c->links, n->link_group, c->path.s) < 0) {
                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                }
        }
        progress(c, 0);
        return 0;
}

/* --- directories ---------------------------------------------------------------------------- */

static void rdir_put(struct rdir *d)
{
        while (d && atomic_fetch_sub(&d->refs, 1) == 1) {
                struct rdir *parent = d->parent;

                kb_repo_tree_free(d->t);
                free(d);
                d = parent;
        }
}

static void dir_meta_report(void *arg, const char *what, int errnum, int counted)
{
        struct rdir *d = arg;

        kb_restore_pool_warnf(d->pool, counted, "%s: cannot restore metadata (%s): %s", d->path,
                              what, strerror(errnum));
}

/* The directory's last file is done (on any thread): its metadata, times last, can go on now. */
static void dir_release(void *arg, int dirfd)
{
        struct rdir *d = arg;

        if (d->n && dirfd >= 0)
                kb_fsmeta_apply(dirfd, -1, NULL, d->n, d->flags, dir_meta_report, d);
        rdir_put(d);
}

/* Leaving a directory: before its metadata may take away the search permission that reopening
 * its parent (through "..") needs. */
static int leave_dir(struct rctx *c, const Kbackup__Node *dirn)
{
        int rc = dirn ? kb_dirstack_ensure_parent(&c->ds) : 0;

        return rc < 0
                   ? kb_err_sys(c->err, rc, "%s: directory moved during the restore", cur_path(c))
                   : 0;
}

/* Start the group of the directory at the top of the stack, whose entries are t. Takes t. */
static int enter_dir(struct rctx *c, Kbackup__Tree *t, const Kbackup__Node *dirn)
{
        size_t plen = strlen(cur_path(c));
        struct rdir *d = calloc(1, sizeof(*d) + plen + 1);
        int fd;

        if (!d) {
                kb_repo_tree_free(t);
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        }
        /* The group's own descriptor: the walk's may be closed and reopened meanwhile. */
        fd = fcntl(kb_dirstack_top(&c->ds), F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
                kb_repo_tree_free(t);
                free(d);
                return kb_err_sys(c->err, -errno, "%s", cur_path(c));
        }
        atomic_init(&d->refs, 1);
        d->t = t;
        d->n = dirn;
        d->pool = c->pool;
        d->flags = (c->owner ? KB_FSMETA_OWNER : 0) | KB_FSMETA_TIMES;
        memcpy(d->path, cur_path(c), plen + 1);
        if (dirn && c->dir) {
                atomic_fetch_add(&c->dir->refs, 1);
                d->parent = c->dir;
        }
        c->group = kb_restore_group_new(c->pool, fd, dir_release, d);
        if (!c->group) {
                rdir_put(d);
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        }
        c->dir = d;
        return 0;
}

/* The entries of the directory with tree `id` into the directory at the top of the stack; dirn is
 * that directory's node when it gets its metadata (the restore created it), else NULL. */
static int restore_tree(struct rctx *c, const ProtobufCBinaryData *id, const Kbackup__Node *dirn)
{
        struct kb_restore_group *parent = c->group;
        struct rdir *parent_dir = c->dir;
        struct kb_err e = {0};
        Kbackup__Tree *t;
        int rc, lrc;

        rc = kb_voltree_load(c->repo, id, &t, &e);
        if (rc == -ENOMEM)
                return kb_err_set(c->err, rc, "out of memory");
        if (rc < 0) {
                warnf(c, 1, "%s: damaged directory listing, its entries are missing: %s",
                      cur_path(c), e.msg);
                rc = leave_dir(c, dirn);
                if (rc == 0 && dirn)
                        apply_meta(c, kb_dirstack_top(&c->ds), -1, NULL, dirn, 1);
                return rc;
        }
        rc = enter_dir(c, t, dirn);
        if (rc < 0)
                return rc;
        for (size_t i = 0; i < t->n_nodes && rc == 0; i++) {
                const Kbackup__Node *n = t->nodes[i];
                char *name;
                size_t saved;

                if (!kb_volname_valid(&n->name)) {
                        warnf(c, 1, "%s: damaged metadata: an entry with an invalid name skipped",
                              cur_path(c));
                        continue;
                }
                name = kb_bytes_strdup(n->name.data, n->name.len);
                if (!name || kb_relpath_push(&c->path, name, n->name.len, &saved) < 0) {
                        free(name);
                        rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                        break;
                }
                rc = restore_node(c, n, name);
                kb_relpath_pop(&c->path, saved);
                free(name);
                /* Stop at the first fatal error of a worker (the target is full). */
                if (rc == 0)
                        rc = kb_restore_pool_poll(c->pool, c->err);
        }
        lrc = leave_dir(c, dirn);
        if (rc == 0)
                rc = lrc;
        kb_restore_group_close(c->group);
        c->group = parent;
        c->dir = parent_dir;
        return rc;
}

/* --- the target ---------------------------------------------------------------------------- */

/* mkdir -p; returns 1 when the last component was created, 0 when it existed, or -errno. */
static int mkdir_p(const char *path)
{
        char *p = strdup(path);
        int rc = 0;

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, 0777) < 0 && errno != EEXIST) {
                        rc = -errno;
                        break;
                }
                *s = '/';
        }
        if (rc == 0) {
                if (mkdir(p, 0777) == 0)
                        rc = 1;
                else if (errno != EEXIST)
                        rc = -errno;
        }
        free(p);
        return rc;
}

static int dir_is_empty(int fd)
{
        int dfd = dup(fd), empty = 1;
        struct dirent *de;
        DIR *d;

        if (dfd < 0)
                return 0;
        d = fdopendir(dfd);
        if (!d) {
                close(dfd);
                return 0;
        }
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                        empty = 0;
                        break;
                }
        closedir(d);
        return empty;
}

/* Split a normalised include path into components (pointers into a modified copy). */
static int split_path(char *s, char ***out, size_t *n)
{
        size_t count = *s ? 1 : 0;
        char **v;

        for (char *p = s; *p; p++)
                count += *p == '/';
        v = calloc(count ? count : 1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < count; i++) {
                char *slash = strchr(s, '/');

                v[i] = s;
                if (slash) {
                        *slash = '\0';
                        s = slash + 1;
                }
        }
        *out = v;
        *n = count;
        return 0;
}

/* Find the include path's nodes: chain[i] is the node of component i; trees[] keep them alive. */
static int resolve_include(struct rctx *c, const Kbackup__Snapshot *snap, char **comp, size_t k,
                           const char *shown, Kbackup__Tree **trees, const Kbackup__Node **chain)
{
        const ProtobufCBinaryData *id = &snap->tree;
        int rc;

        for (size_t i = 0; i < k; i++) {
                rc = kb_voltree_load(c->repo, id, &trees[i], c->err);
                if (rc < 0)
                        return rc;
                chain[i] = kb_voltree_find(trees[i], comp[i], strlen(comp[i]));
                if (!chain[i])
                        return kb_err_set(c->err, KB_ENOTFOUND, "%s: not in the snapshot", shown);
                if (i + 1 < k && chain[i]->type != KBACKUP__NODE_TYPE__NODE_DIR)
                        return kb_err_set(c->err, KB_ENOTFOUND,
                                          "%s: not in the snapshot (%s is not a directory)", shown,
                                          comp[i]);
                id = &chain[i]->subtree;
        }
        return 0;
}

/* Create (or enter) the include path's parent directories, restore the entry, then give the
 * parents the restore created their recorded metadata. */
static int restore_included(struct rctx *c, char **comp, size_t k, const Kbackup__Node **chain)
{
        int *created = calloc(k, sizeof(*created));
        size_t *saved = calloc(k, sizeof(*saved));
        size_t depth = 0;
        int rc = 0;

        if (!created || !saved) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                goto out;
        }
        for (; depth + 1 < k; depth++) {
                int top = kb_dirstack_top(&c->ds), fd;
                struct stat st;

                if (kb_relpath_push(&c->path, comp[depth], strlen(comp[depth]), &saved[depth]) <
                    0) {
                        rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                        goto unwind;
                }
                if (mkdirat(top, comp[depth], 0700) == 0) {
                        created[depth] = 1;
                } else if (errno != EEXIST) {
                        rc = kb_err_sys(c->err, -errno, "%s: cannot create directory in the target",
                                        cur_path(c));
                        goto unwind_one;
                } else if (fstatat(top, comp[depth], &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                           !S_ISDIR(st.st_mode)) {
                        rc = kb_err_set(c->err, KB_EUSAGE,
                                        "%s: exists in the target and is not a directory",
                                        cur_path(c));
                        goto unwind_one;
                }
                fd = openat(top, comp[depth], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0 || (rc = kb_dirstack_push(&c->ds, fd)) < 0) {
                        rc = kb_err_sys(c->err, fd < 0 ? -errno : rc, "%s", cur_path(c));
                        goto unwind_one;
                }
        }
        if (kb_relpath_push(&c->path, comp[k - 1], strlen(comp[k - 1]), &saved[k - 1]) < 0) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                goto unwind;
        }
        rc = restore_node(c, chain[k - 1], comp[k - 1]);
        kb_relpath_pop(&c->path, saved[k - 1]);
        goto unwind;
unwind_one:
        kb_relpath_pop(&c->path, saved[depth]);
unwind:
        while (depth > 0) {
                depth--;
                if (rc == 0 && created[depth] && kb_dirstack_ensure_parent(&c->ds) == 0)
                        apply_meta(c, kb_dirstack_top(&c->ds), -1, NULL, chain[depth], 1);
                kb_dirstack_pop(&c->ds);
                kb_relpath_pop(&c->path, saved[depth]);
        }
out:
        free(created);
        free(saved);
        return rc;
}

int kb_volume_restore(struct kb_repo *repo, const Kbackup__Snapshot *snap, const char *target,
                      const struct kb_volume_restore_opts *opts,
                      struct kb_volume_restore_result *res, struct kb_err *err)
{
        struct rctx c = {.repo = repo, .o = opts, .err = err};
        double start = kb_volclock();
        char *inc = NULL, **comp = NULL;
        Kbackup__Tree **trees = NULL;
        const Kbackup__Node **chain = NULL;
        size_t k = 0;
        int rc, prc, fresh, fd;

        if (res)
                memset(res, 0, sizeof(*res));
        c.owner = opts && opts->restore_owner >= 0 ? opts->restore_owner != 0 : geteuid() == 0;
        rc = kb_volsnap_check(snap, err);
        if (rc < 0)
                return rc;
        {
                struct stat st;

                if (stat(target, &st) == 0 && S_ISBLK(st.st_mode))
                        return kb_volume_restore_device(repo, snap, target, opts, res, err);
        }
        rc = kb_volpath_normalize(opts ? opts->include : NULL, &inc, err);
        if (rc < 0)
                return rc;
        if (split_path(inc, &comp, &k) < 0 || !(trees = calloc(k + 1, sizeof(*trees))) ||
            !(chain = calloc(k + 1, sizeof(*chain)))) {
                rc = kb_err_set(err, -ENOMEM, "out of memory");
                goto out;
        }
        /* Resolve --include before touching the target, so a wrong path changes nothing. */
        if (k && (rc = resolve_include(&c, snap, comp, k, opts->include, trees, chain)) < 0)
                goto out;

        rc = mkdir_p(target);
        if (rc < 0) {
                kb_err_sys(err, rc, "%s", target);
                goto out;
        }
        fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                rc = errno == ENOTDIR ? kb_err_set(err, KB_EUSAGE, "%s: not a directory", target)
                                      : kb_err_sys(err, -errno, "%s", target);
                goto out;
        }
        fresh = rc == 1 || dir_is_empty(fd);
        if (!k && snap->stats) {
                c.files_total = snap->stats->files;
                c.bytes_total = snap->stats->bytes_read;
        }
        kb_dirstack_init(&c.ds, DIR_FD_BUDGET, 0);
        rc = kb_dirstack_push(&c.ds, fd);
        if (rc < 0) {
                kb_err_sys(err, rc, "%s", target);
                goto out;
        }
        {
                struct kb_restore_pool_cfg pc = {.repo = repo,
                                                 .threads = opts ? opts->threads : 0,
                                                 .owner = c.owner,
                                                 .warn = pool_warn,
                                                 .tick = pool_tick,
                                                 .arg = &c};

                rc = kb_restore_pool_new(&pc, &c.pool, err);
                if (rc < 0)
                        goto out;
        }
        if (k)
                rc = restore_included(&c, comp, k, chain);
        else
                rc = restore_tree(&c, &snap->tree, NULL);
        /* Every file is complete before the result is told (and before the target's metadata,
         * though workers never touch it). */
        prc = kb_restore_pool_wait(c.pool, rc < 0 ? NULL : err);
        if (rc == 0)
                rc = prc;
        /* The target stands for the backed-up root (a PV's root directory). */
        if (rc == 0 && fresh && snap->root && snap->root->type == KBACKUP__NODE_TYPE__NODE_DIR)
                apply_meta(&c, kb_dirstack_root(&c.ds), -1, NULL, snap->root, 1);

out:
        if (c.pool) {
                kb_restore_pool_stats(c.pool, &c.pool_files, &c.bytes, &c.threads);
                prc = kb_restore_pool_free(c.pool, rc < 0 ? NULL : err);
                if (rc == 0)
                        rc = prc;
                c.pool = NULL;
        }
        kb_dirstack_free(&c.ds);
        for (size_t i = 0; trees && i < k; i++)
                kb_repo_tree_free(trees[i]);
        free(trees);
        free(chain);
        free(comp);
        free(inc);
        holders_free(&c.links);
        kb_relpath_free(&c.path);
        progress(&c, 1);
        if (res) {
                res->files = c.files + c.pool_files;
                res->dirs = c.dirs;
                res->bytes = c.bytes;
                res->errors = c.errors;
                res->threads = c.threads;
                res->duration_sec = kb_volclock() - start;
        }
        if (rc == 0 && c.errors)
                rc = kb_err_set(err, KB_EPARTIAL, "restored, but %llu item(s) failed",
                                (unsigned long long)c.errors);
        return rc;
}
