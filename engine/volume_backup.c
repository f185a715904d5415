/* volume_backup.c - back up a directory tree (a mounted persistent volume), or a raw block device,
 * into a repository.
 *
 * The walk is depth-first in name order on the producer thread; file data is cut by the chunker and
 * handed to the saver's worker threads, so reading overlaps hashing, compression and storing. Each
 * directory's entries become a Tree blob once every chunk they name is stored (one saver group per
 * directory), and a snapshot record is written last, after the repository is flushed.
 *
 * Never follows symlinks and stays on the file system of PATH (mount points below it are recorded
 * as empty directories, with a warning). Entries that vanish, cannot be read or change while read
 * are reported through opts->warn and counted as errors; the snapshot is still recorded.
 *
 * A block device (a PV of volumeMode Block) is read whole into one file of the snapshot's tree
 * (KB_VOLUME_DEVICE_IMAGE), through the same chunker and saver: its unchanged regions dedup
 * against the previous backup, but it is always read, since writing to a device moves none of
 * the times an incremental backup trusts. */
#include "volume.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "fsmeta.h"
#include "volume_backup_int.h"

#define DIR_FD_BUDGET 64 /* open directory descriptors kept while descending */
/* Chunk bytes queued for the workers. The walk no longer waits at directory ends, so the bound is
 * always reached: 16 MiB (16 average chunks) kept both cores busy as well as 64 MiB did, and
 * peak RSS went from 178 to 92 MB on the benchmark tree (docs/performance.md). */
#define VOLUME_INFLIGHT ((size_t)8 << 20)
/* Chunk buffers (bufpool.h): idle ones keep up to twice what is in flight when the queue is
 * full (with small files the walk falls behind and the workers hand every buffer back at once),
 * each trimmed back to 1.5 times the chunker's average size, which most chunks fit in. */
#define VOLUME_POOL_KEEP  (2 * VOLUME_INFLIGHT)
#define PROGRESS_INTERVAL 0.25
#define IDCACHE_MAX       1024

void kb_vb_warn(struct bctx *c, int counted, const char *fmt, ...)
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

const char *kb_vb_path(const struct bctx *c)
{
        return kb_relpath_show(&c->path);
}

void kb_vb_progress(struct bctx *c, int force)
{
        struct kb_progress p = {0};
        double now;

        if (!c->o || !c->o->progress)
                return;
        now = kb_volclock();
        if (!force && now - c->last_progress < PROGRESS_INTERVAL)
                return;
        c->last_progress = now;
        p.files_done = c->files;
        p.bytes_done = c->bytes_read;
        p.files_total = c->files_total;
        p.bytes_total = c->bytes_total;
        p.current = force ? NULL : kb_vb_path(c);
        c->o->progress(&p, c->o->cb_arg);
}

/* --- owner names --------------------------------------------------------------------------- */

static char *lookup_name(int group, uint32_t id)
{
        char buf[16384];
        char *name = NULL;

        if (group) {
                struct group g, *res = NULL;

                if (getgrgid_r(id, &g, buf, sizeof(buf), &res) == 0 && res)
                        name = strdup(res->gr_name);
        } else {
                struct passwd pw, *res = NULL;

                if (getpwuid_r(id, &pw, buf, sizeof(buf), &res) == 0 && res)
                        name = strdup(res->pw_name);
        }
        return name;
}

/* Names are informative only (restore uses the numeric ids), so any failure yields "". */
static char *id_name(struct idcache *cache, int group, uint32_t id)
{
        struct idname *v;

        for (size_t i = 0; i < cache->n; i++)
                if (cache->v[i].id == id)
                        return cache->v[i].name ? cache->v[i].name : (char *)"";
        if (cache->n >= IDCACHE_MAX)
                return (char *)"";
        v = realloc(cache->v, (cache->n + 1) * sizeof(*v));
        if (!v)
                return (char *)"";
        cache->v = v;
        v[cache->n].id = id;
        v[cache->n].name = lookup_name(group, id);
        return v[cache->n++].name ? v[cache->n - 1].name : (char *)"";
}

static void idcache_free(struct idcache *cache)
{
        for (size_t i = 0; i < cache->n; i++)
                free(cache->v[i].name);
        free(cache->v);
}

static int backup_dir(struct bctx *c, Kbackup__Node *self, struct kb_arena *parent_arena,
                      struct kb_saver_group *parent);
const Kbackup__Node *kb_vb_prev_node(const struct bctx *c, const char *name)
{
        size_t lo = 0, hi = c->prev ? c->prev->n_nodes : 0, len = strlen(name);

        /* Trees are written sorted by name bytes; an unsorted (foreign) one only costs misses. */
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const ProtobufCBinaryData *nm = &c->prev->nodes[mid]->name;
                size_t n = nm->len < len ? nm->len : len;
                int cmp = memcmp(nm->data, name, n);

                if (cmp == 0)
                        cmp = nm->len < len ? -1 : nm->len > len;
                if (cmp == 0)
                        return c->prev->nodes[mid];
                if (cmp < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

/* Load the parent snapshot's tree for subdirectory `name` (NULL when there is none or it cannot
 * be read: the backup then simply reads everything below). */
static Kbackup__Tree *prev_subtree(struct bctx *c, const char *name)
{
        const Kbackup__Node *p = kb_vb_prev_node(c, name);
        Kbackup__Tree *t = NULL;

        if (!p || p->type != KBACKUP__NODE_TYPE__NODE_DIR || p->subtree.len != KB_ID_LEN)
                return NULL;
        if (kb_repo_tree_load(c->repo, p->subtree.data, &t, NULL) < 0)
                return NULL;
        return t;
}

/* A subdirectory: its metadata, then its tree. Returns <0 fatal, 0 done, 1 omitted. */
static int backup_subdir(struct bctx *c, int dirfd, const char *name, const struct stat *lst,
                         struct kb_arena *a, struct kb_saver_group *g, Kbackup__Node *n)
{
        struct stat st;
        int fd, rc;

        kb_fsmeta_from_stat(n, lst);
        if (lst->st_dev != c->root_dev) {
                kb_vb_warn(c, 0, "%s: mount point of another file system, recorded empty",
                           kb_vb_path(c));
                c->dirs++;
                return 0;
        }
        fd = kb_vb_open_noatime(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        kb_vb_warn(c, 1, "%s: vanished before it could be read", kb_vb_path(c));
                else if (errno == ENOTDIR || errno == ELOOP)
                        kb_vb_warn(c, 1, "%s: replaced while being read", kb_vb_path(c));
                else {
                        /* Keep the directory itself so the restored tree has its shape. */
                        kb_vb_warn(c, 1, "%s: cannot open directory, recorded empty: %s",
                                   kb_vb_path(c), strerror(errno));
                        c->dirs++;
                        return 0;
                }
                return 1;
        }
        if (fstat(fd, &st) == 0)
                kb_fsmeta_from_stat(n, &st);
        rc = kb_fsmeta_read_xattrs(fd, -1, NULL, a, n);
        if (rc == -ENOMEM) {
                close(fd);
                return kb_err_set(c->err, rc, "out of memory");
        }
        if (rc < 0)
                kb_vb_warn(c, 1, "%s: cannot read xattrs: %s", kb_vb_path(c), strerror(-rc));
        rc = kb_dirstack_push(&c->ds, fd);
        if (rc < 0)
                return kb_err_sys(c->err, rc, "%s", kb_vb_path(c));
        const Kbackup__Tree *outer = c->prev;
        Kbackup__Tree *inner = prev_subtree(c, name);

        c->prev = inner;
        rc = backup_dir(c, n, a, g);
        c->prev = outer;
        kb_repo_tree_free(inner);
        int prc = kb_dirstack_pop(&c->ds);
        if (rc == 0 && prc < 0)
                rc =
                    kb_err_sys(c->err, prc, "%s: directory moved during the backup", kb_vb_path(c));
        return rc;
}

static int backup_symlink(struct bctx *c, int dirfd, const char *name, const struct stat *st,
                          struct kb_arena *a, Kbackup__Node *n)
{
        size_t size = (size_t)st->st_size + 1;

        for (;;) {
                char *buf = kb_arena_alloc(a, size);
                ssize_t len;

                if (!buf)
                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                len = readlinkat(dirfd, name, buf, size);
                if (len < 0) {
                        if (errno == ENOENT)
                                kb_vb_warn(c, 1, "%s: vanished before it could be read",
                                           kb_vb_path(c));
                        else
                                kb_vb_warn(c, 1, "%s: cannot read link: %s", kb_vb_path(c),
                                           strerror(errno));
                        return 1;
                }
                if ((size_t)len < size) {
                        n->link_target.data = (uint8_t *)buf;
                        n->link_target.len = (size_t)len;
                        n->size = (uint64_t)len;
                        return 0;
                }
                size *= 2; /* the target grew since lstat */
        }
}

/* One directory entry into *out (NULL when omitted). Returns <0 on a fatal error. */
static int backup_entry(struct bctx *c, const char *name, struct kb_arena *a,
                        struct kb_saver_group *g, Kbackup__Node **out)
{
        int dirfd = kb_dirstack_top(&c->ds), rc = 0;
        struct hl_entry *link = NULL;
        Kbackup__Node *n;
        struct stat st;

        *out = NULL;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                        kb_vb_warn(c, 1, "%s: vanished before it could be read", kb_vb_path(c));
                else
                        kb_vb_warn(c, 1, "%s: cannot stat: %s", kb_vb_path(c), strerror(errno));
                return 0;
        }
        if (S_ISSOCK(st.st_mode)) {
                kb_vb_warn(c, 0, "%s: socket skipped", kb_vb_path(c));
                return 0;
        }
        if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode) &&
            !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
                kb_vb_warn(c, 0, "%s: file type %o skipped", kb_vb_path(c), st.st_mode & S_IFMT);
                return 0;
        }
        n = kb_arena_alloc(a, sizeof(*n));
        if (!n)
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        kbackup__node__init(n);
        n->name.len = strlen(name);
        n->name.data = (uint8_t *)name;

        if (!S_ISDIR(st.st_mode) && st.st_nlink > 1)
                link = kb_vb_hl_find(&c->links, st.st_dev, st.st_ino);
        if (S_ISREG(st.st_mode) && !link) {
                rc = kb_vb_backup_file(c, dirfd, name, &st, a, g, n);
        } else if (S_ISDIR(st.st_mode)) {
                rc = backup_subdir(c, dirfd, name, &st, a, g, n);
        } else {
                kb_fsmeta_from_stat(n, &st);
                if (S_ISLNK(st.st_mode))
                        rc = backup_symlink(c, dirfd, name, &st, a, n);
                if (rc == 0) {
                        rc = kb_fsmeta_read_xattrs(-1, dirfd, name, a, n);
                        if (rc == -ENOMEM)
                                return kb_err_set(c->err, rc, "out of memory");
                        if (rc == -ENOENT) {
                                kb_vb_warn(c, 1, "%s: vanished before it could be read",
                                           kb_vb_path(c));
                                return 0;
                        }
                        if (rc < 0)
                                kb_vb_warn(c, 1, "%s: cannot read xattrs: %s", kb_vb_path(c),
                                           strerror(-rc));
                        rc = 0;
                }
                if (rc == 0 && link)
                        rc = kb_vb_link_member(c, link, a, n);
                else if (rc == 0 && st.st_nlink > 1)
                        rc = kb_vb_remember_links(c, &st, n, &n->link_group);
                if (rc == 0)
                        c->files++;
        }
        if (rc < 0)
                return rc;
        if (rc == 0) {
                n->user = id_name(&c->users, 0, n->uid);
                n->group = id_name(&c->groups, 1, n->gid);
                *out = n;
        }
        kb_vb_progress(c, 0);
        return 0;
}

static int name_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b); /* compares as unsigned bytes */
}

/* The names in the directory at fd, sorted by bytes, allocated from a. */
static int read_names(int fd, struct kb_arena *a, char ***out, size_t *count)
{
        char **v = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        int dfd = dup(fd), rc = 0;
        DIR *d;

        if (dfd < 0)
                return -errno;
        d = fdopendir(dfd);
        if (!d) {
                rc = -errno;
                close(dfd);
                return rc;
        }
        rewinddir(d);
        for (;;) {
                errno = 0;
                de = readdir(d);
                if (!de) {
                        rc = -errno;
                        break;
                }
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                if (n == cap) {
                        char **nv;

                        cap = cap ? cap * 2 : 32;
                        nv = realloc(v, cap * sizeof(*v));
                        if (!nv) {
                                rc = -ENOMEM;
                                break;
                        }
                        v = nv;
                }
                v[n] = kb_arena_dup(a, de->d_name, strlen(de->d_name));
                if (!v[n]) {
                        rc = -ENOMEM;
                        break;
                }
                n++;
        }
        closedir(d);
        if (n)
                qsort(v, n, sizeof(*v), name_cmp);
        *out = v;
        *count = n;
        return rc;
}

/* A directory whose entries have been walked, waiting for what they name to be stored. Its tree
 * blob is encoded and saved when the last of its chunks and subdirectories is (dir_done, in
 * whichever thread that happens), so the walk never stops to let the workers drain. */
struct dirjob {
        struct bctx *c;
        struct kb_arena arena; /* the entries' nodes, names, xattrs, chunk id slots */
        Kbackup__Node **nodes;
        size_t nn;
        char **names;
        /* The directory's own node in its parent's tree: subtree.data is a slot allocated by
         * the walk; its length is set here once the id is written. */
        Kbackup__Node *self;
        struct kb_saver_group *parent; /* holds one pending item for this directory */
};

static void dirjob_free(struct dirjob *d)
{
        kb_arena_free(&d->arena);
        free(d->nodes);
        free(d->names);
        free(d);
}

static void dir_done(void *arg, int rc, const struct kb_err *err)
{
        struct dirjob *d = arg;
        struct bctx *c = d->c;
        Kbackup__Tree tree = KBACKUP__TREE__INIT;
        struct kb_save_result res = {0};
        struct kb_err e = {0};

        if (rc == 0 && d->nn) {
                tree.n_nodes = d->nn;
                tree.nodes = d->nodes;
                rc = kb_repo_tree_save(c->repo, &tree, d->self->subtree.data, &res, &e);
                err = &e;
                if (rc == 0) {
                        d->self->subtree.len = KB_ID_LEN;
                        if (res.added) {
                                __atomic_add_fetch(&c->tree_new,
                                                   kbackup__tree__get_packed_size(&tree),
                                                   __ATOMIC_RELAXED);
                                __atomic_add_fetch(&c->tree_stored, res.stored_bytes,
                                                   __ATOMIC_RELAXED);
                        }
                }
        }
        /* Releasing may complete the parent, which reads self: everything is written first. */
        kb_saver_group_release(d->parent, rc, rc < 0 ? err : NULL);
        dirjob_free(d);
}

/* The directory at the top of the dir stack: walk its entries, then leave its tree blob to
 * dir_done; the id goes to self->subtree (a slot allocated from the parent's arena, which no
 * other thread uses while the walk is in the parent). `parent` is held until then. A directory
 * without entries gets no subtree id (as for mount points). */
static int backup_dir(struct bctx *c, Kbackup__Node *self, struct kb_arena *parent_arena,
                      struct kb_saver_group *parent)
{
        struct dirjob *d = calloc(1, sizeof(*d));
        struct kb_saver_group *g = kb_saver_group_new(c->saver);
        size_t count = 0;
        int rc;

        self->subtree.data = kb_arena_alloc(parent_arena, KB_ID_LEN);
        self->subtree.len = 0;
        if (!d || !g || !self->subtree.data) {
                free(d);
                free(g);
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        }
        d->c = c;
        d->self = self;
        d->parent = parent;
        kb_saver_group_hold(parent);
        rc = read_names(kb_dirstack_top(&c->ds), &d->arena, &d->names, &count);
        if (rc == -ENOMEM) {
                kb_err_set(c->err, rc, "out of memory");
                goto out;
        }
        if (rc < 0)
                kb_vb_warn(c, 1, "%s: cannot list directory: %s", kb_vb_path(c), strerror(-rc));
        rc = 0;
        d->nodes = malloc((count ? count : 1) * sizeof(*d->nodes));
        if (!d->nodes) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                goto out;
        }
        for (size_t i = 0; i < count; i++) {
                Kbackup__Node *n;
                size_t saved;

                rc = kb_relpath_push(&c->path, d->names[i], strlen(d->names[i]), &saved);
                if (rc < 0) {
                        kb_err_set(c->err, rc, "out of memory");
                        goto out;
                }
                rc = backup_entry(c, d->names[i], &d->arena, g, &n);
                kb_relpath_pop(&c->path, saved);
                if (rc < 0)
                        goto out;
                if (n)
                        d->nodes[d->nn++] = n;
        }
        c->dirs++;
out:
        if (rc < 0) {
                /* Fail the directory (and so the snapshot) once its pending chunks are done. */
                kb_saver_group_hold(g);
                kb_saver_group_release(g, rc, c->err);
        }
        kb_saver_group_close(g, dir_done, d);
        return rc;
}

/* The walk from the root; returns once every tree is stored, with the first error of any. */
static int backup_root(struct bctx *c, Kbackup__Node *root, struct kb_arena *root_arena)
{
        struct kb_saver_group *all = kb_saver_group_new(c->saver);
        struct kb_err e = {0};
        int rc, wrc;

        if (!all)
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        rc = backup_dir(c, root, root_arena, all);
        wrc = kb_saver_group_wait(all, &e);
        kb_saver_group_free(all);
        if (rc == 0 && wrc < 0) {
                rc = wrc;
                *c->err = e;
        }
        return rc;
}

/* A block device: its bytes become the one file of the root's tree. */
static int backup_device(struct bctx *c, int fd, const char *src, Kbackup__Node *root,
                         struct kb_arena *a)
{
        Kbackup__Tree tree = KBACKUP__TREE__INIT;
        Kbackup__Node *img = kb_arena_alloc(a, sizeof(*img)), *nodes[1];
        struct kb_saver_group *g;
        struct kb_save_result sr = {0};
        uint64_t size;
        size_t saved;
        int rc, wrc;

        if (ioctl(fd, BLKGETSIZE64, &size) < 0)
                return kb_err_sys(c->err, -errno, "%s: cannot get the device's size", src);
        root->subtree.data = kb_arena_alloc(a, KB_ID_LEN);
        if (!img || !root->subtree.data || kb_relpath_push(&c->path, src, strlen(src), &saved) < 0)
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        /* Only the bytes: no times, so an unchanged device gives the same tree blob (and dedups
         * like its chunks); the root node keeps the device node's own metadata. */
        kbackup__node__init(img);
        img->name.data = (uint8_t *)KB_VOLUME_DEVICE_IMAGE;
        img->name.len = strlen(KB_VOLUME_DEVICE_IMAGE);
        img->type = KBACKUP__NODE_TYPE__NODE_FILE;
        img->mode = 0600;
        img->size = size;
        c->bytes_total = size;
        c->files_total = 1;
        g = kb_saver_group_new(c->saver);
        if (!g)
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        rc = kb_vb_read_device(c, fd, size, a, g, img);
        /* Even after a failure, the chunks in flight settle before the group goes. */
        wrc = kb_saver_group_wait(g, rc < 0 ? NULL : c->err);
        kb_saver_group_free(g);
        if (rc == 0)
                rc = wrc;
        if (rc < 0)
                return rc;
        nodes[0] = img;
        tree.n_nodes = 1;
        tree.nodes = nodes;
        rc = kb_repo_tree_save(c->repo, &tree, root->subtree.data, &sr, c->err);
        if (rc < 0)
                return rc;
        root->subtree.len = KB_ID_LEN;
        if (sr.added) {
                c->tree_new += kbackup__tree__get_packed_size(&tree);
                c->tree_stored += sr.stored_bytes;
        }
        return 0;
}

/* When PATH is the root of its file system (a mounted PV), that file system's used blocks and
 * inodes are a free estimate of the work ahead; a subdirectory gets no estimate. */
static void estimate_totals(struct bctx *c, int fd, const struct stat *st)
{
        struct statvfs vfs;
        struct stat up;

        if (fstatat(fd, "..", &up, 0) < 0 || (up.st_dev == st->st_dev && up.st_ino != st->st_ino))
                return;
        if (fstatvfs(fd, &vfs) < 0 || vfs.f_blocks < vfs.f_bfree || vfs.f_files < vfs.f_ffree)
                return;
        c->bytes_total = (uint64_t)(vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize;
        c->files_total = (uint64_t)(vfs.f_files - vfs.f_ffree);
}

/* --- the snapshot -------------------------------------------------------------------------- */

static int save_snapshot(struct bctx *c, const char *src, Kbackup__Node *root, int64_t start_ns,
                         double start_mono, struct kb_volume_backup_result *res)
{
        Kbackup__Snapshot snap = KBACKUP__SNAPSHOT__INIT;
        Kbackup__SnapshotStats stats = KBACKUP__SNAPSHOT_STATS__INIT;
        struct kb_snapshot_meta meta;
        struct kb_saver_stats ss;
        char id_hex[KB_ID_HEX_LEN + 1];
        int rc;

        rc = kb_snapshot_meta_init(&meta, &snap, "volume", c->o ? c->o->name : NULL,
                                   c->o ? c->o->tags : NULL, c->o ? c->o->ntags : 0, c->err);
        if (rc < 0)
                return rc;
        if (c->o && c->o->set_id)
                snap.set_id = (char *)c->o->set_id;
        if (c->o && c->o->cluster)
                snap.cluster = (char *)c->o->cluster;
        kb_saver_get_stats(c->saver, &ss);

        stats.files = c->files;
        stats.dirs = c->dirs;
        stats.bytes_read = c->bytes_read;
        stats.bytes_new = ss.bytes_new + __atomic_load_n(&c->tree_new, __ATOMIC_RELAXED);
        stats.bytes_stored = ss.bytes_stored + __atomic_load_n(&c->tree_stored, __ATOMIC_RELAXED);
        stats.errors = c->errors;
        stats.duration_sec = kb_volclock() - start_mono;

        snap.time_unix_nsec = start_ns; /* when the walk began, not when it ended */
        if (c->have_parent) {
                snap.parent.data = c->parent_id;
                snap.parent.len = KB_ID_LEN;
        }
        snap.source_path = (char *)src;
        snap.tree = root->subtree;
        snap.stats = &stats;
        snap.root = root;

        rc = kb_repo_flush(c->repo, c->err);
        if (rc == 0)
                rc = kb_repo_snapshot_save(c->repo, &snap, id_hex, c->err);
        if (rc == 0 && res) {
                memcpy(res->snapshot_id, id_hex, sizeof(res->snapshot_id));
                res->files = stats.files;
                res->dirs = stats.dirs;
                res->bytes_read = stats.bytes_read;
                res->bytes_new = stats.bytes_new;
                res->bytes_stored = stats.bytes_stored;
                res->errors = stats.errors;
                res->files_unchanged = c->files_unchanged;
                res->bytes_unchanged = c->bytes_unchanged;
                if (c->have_parent)
                        kb_hex_encode(c->parent_id, KB_ID_LEN, res->parent_id);
                res->threads = ss.threads;
                res->duration_sec = stats.duration_sec;
        }
        kb_snapshot_meta_free(&meta);
        return rc;
}

/* The newest earlier snapshot of the same source (kind, host, path and name): its trees let
 * unchanged files be skipped. Loads its root tree into *tree; leaves *tree NULL when none. */
static void find_parent(struct bctx *c, const char *src, const char *host, Kbackup__Tree **tree,
                        uint8_t parent_id[KB_ID_LEN], int *found)
{
        const char *name = c->o && c->o->name ? c->o->name : "";
        struct kb_snapshot_list l;

        *tree = NULL;
        *found = 0;
        if ((c->o && c->o->no_parent) || kb_repo_snapshot_list(c->repo, &l, NULL) < 0)
                return;
        for (size_t i = l.count; i > 0; i--) {
                const Kbackup__Snapshot *s = l.items[i - 1].snap;

                if (strcmp(s->kind, "volume") || strcmp(s->source_path, src) ||
                    strcmp(s->host, host) || strcmp(s->name, name))
                        continue;
                if (kb_hex_decode(l.items[i - 1].id, parent_id, KB_ID_LEN) == 0) {
                        *found = 1;
                        if (s->tree.len == KB_ID_LEN)
                                kb_repo_tree_load(c->repo, s->tree.data, tree, NULL);
                }
                break;
        }
        kb_snapshot_list_free(&l);
}

int kb_volume_backup(struct kb_repo *repo, const char *path,
                     const struct kb_volume_backup_opts *opts, struct kb_volume_backup_result *res,
                     struct kb_err *err)
{
        struct bctx c = {.repo = repo, .o = opts, .err = err};
        struct kb_arena root_arena = {0};
        Kbackup__Node root = KBACKUP__NODE__INIT;
        Kbackup__Tree *prev_root = NULL;
        struct timespec now;
        double start_mono = kb_volclock();
        char *src = NULL;
        const char *base;
        struct stat st;
        int fd, rc;

        if (res)
                memset(res, 0, sizeof(*res));
        {
                /* Refuse bad tags before reading anything. */
                Kbackup__Snapshot probe = KBACKUP__SNAPSHOT__INIT;
                struct kb_snapshot_meta meta;

                rc = kb_snapshot_meta_init(&meta, &probe, "volume", NULL, opts ? opts->tags : NULL,
                                           opts ? opts->ntags : 0, err);
                if (rc < 0)
                        return rc;
                kb_snapshot_meta_free(&meta);
        }
        clock_gettime(CLOCK_REALTIME, &now);
        src = realpath(path, NULL);
        if (!src)
                return kb_err_sys(err, -errno, "%s", path);
        /* O_NONBLOCK: a fifo given as PATH must not hang the open; it is refused below. */
        fd = kb_vb_open_noatime(AT_FDCWD, src, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
                rc = kb_err_sys(err, -errno, "%s", path);
                free(src);
                return rc;
        }
        if (fstat(fd, &st) < 0)
                rc = kb_err_sys(err, -errno, "%s", path);
        else if (!S_ISDIR(st.st_mode) && !S_ISBLK(st.st_mode))
                rc = kb_err_set(err, KB_EUSAGE, "%s: not a directory or a block device", path);
        else if (S_ISBLK(st.st_mode) && fcntl(fd, F_SETFL, 0) < 0)
                rc = kb_err_sys(err, -errno, "%s", path);
        else
                rc = 0;
        if (rc < 0) {
                close(fd);
                free(src);
                return rc;
        }
        c.root_dev = st.st_dev;
        if (S_ISDIR(st.st_mode))
                estimate_totals(&c, fd, &st);
        c.chunk_min = kb_repo_chunker_params(repo)->min_size;
        c.chunk_max = kb_repo_chunker_params(repo)->max_size;
        kb_fsmeta_from_stat(&root, &st);
        base = strrchr(src, '/');
        base = base && base[1] ? base + 1 : src;
        root.name.data = (uint8_t *)base;
        root.name.len = strlen(base);
        /* A device node's xattrs belong to /dev, not to the volume. */
        rc = S_ISBLK(st.st_mode) ? 0 : kb_fsmeta_read_xattrs(fd, -1, NULL, &root_arena, &root);
        if (rc < 0 && rc != -ENOMEM)
                kb_vb_warn(&c, 1, ".: cannot read xattrs: %s", strerror(-rc));
        else if (rc < 0)
                goto fail_fd;
        root.user = id_name(&c.users, 0, root.uid);
        root.group = id_name(&c.groups, 1, root.gid);

        rc = kb_chunker_new(kb_repo_chunker_params(repo), kb_repo_chunker_seed(repo), &c.chunker);
        if (rc < 0) {
                kb_err_sys(err, rc, "chunker");
                goto fail_fd;
        }
        {
                uint64_t packs, blobs;

                rc = kb_repo_adopt_packs(repo, &packs, &blobs, err);
                if (rc < 0)
                        goto fail_fd;
        }
        rc = kb_bufpool_new(c.chunk_max, kb_repo_chunker_params(repo)->avg_size / 2 * 3,
                            VOLUME_POOL_KEEP, &c.pool);
        if (rc < 0)
                goto fail_fd;
        rc = kb_saver_new(repo, opts ? opts->threads : 0, VOLUME_INFLIGHT, &c.saver, err);
        if (rc < 0)
                goto fail_fd;
        {
                char host[256] = "";

                gethostname(host, sizeof(host) - 1);
                find_parent(&c, src, host, &prev_root, c.parent_id, &c.have_parent);
                c.prev = prev_root;
        }
        kb_dirstack_init(&c.ds, DIR_FD_BUDGET, O_NOATIME);
        if (S_ISBLK(st.st_mode)) {
                rc = backup_device(&c, fd, src, &root, &root_arena);
                close(fd);
        } else if ((rc = kb_dirstack_push(&c.ds, fd)) < 0) {
                kb_err_sys(err, rc, "%s", path);
        } else {
                rc = backup_root(&c, &root, &root_arena);
        }
        if (rc == 0)
                rc = save_snapshot(&c, src, &root, (int64_t)now.tv_sec * 1000000000 + now.tv_nsec,
                                   start_mono, res);
        kb_dirstack_free(&c.ds);
        goto done;

fail_fd:
        close(fd);
        if (rc == -ENOMEM)
                kb_err_set(err, rc, "out of memory");
done:
        if (c.saver) {
                struct kb_err e2 = {0};
                int r2 = kb_saver_free(c.saver, &e2);

                if (rc == 0 && r2 < 0) {
                        rc = r2;
                        if (err)
                                *err = e2;
                }
        }
        kb_bufpool_free(c.pool);
        kb_chunker_free(c.chunker);
        kb_vb_progress(&c, 1);
        kb_vb_hl_free(&c.links);
        idcache_free(&c.users);
        idcache_free(&c.groups);
        kb_relpath_free(&c.path);
        kb_arena_free(&root_arena);
        kb_repo_tree_free(prev_root);
        free(src);
        if (rc == 0 && c.errors)
                rc = kb_err_set(err, KB_EPARTIAL,
                                "snapshot saved, but %llu item(s) could not be backed up",
                                (unsigned long long)c.errors);
        return rc;
}
