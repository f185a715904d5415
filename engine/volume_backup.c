/* volume_backup.c - back up a directory tree (a mounted persistent volume) into a repository.
 *
 * The walk is depth-first in name order on the producer thread; file data is cut by the chunker and
 * handed to the saver's worker threads, so reading overlaps hashing, compression and storing. Each
 * directory's entries become a Tree blob once every chunk they name is stored (one saver group per
 * directory), and a snapshot record is written last, after the repository is flushed.
 *
 * Never follows symlinks and stays on the file system of PATH (mount points below it are recorded
 * as empty directories, with a warning). Entries that vanish, cannot be read or change while read
 * are reported through opts->warn and counted as errors; the snapshot is still recorded. */
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chunker.h"
#include "fsmeta.h"
#include "saver.h"
#include "volume_int.h"

#define READ_MAX          (4u << 20) /* bytes per read(): bounds progress latency */
#define DIR_FD_BUDGET     64         /* open directory descriptors kept while descending */
#define PROGRESS_INTERVAL 0.25
#define IDCACHE_MAX       1024

/* A multiply-linked inode already seen. Every member of a link group records the content (ids are
 * cheap and dedup stores the data once), so restoring any subset with --include still yields the
 * bytes; a full restore makes the later members links to the first. */
struct hl_entry {
        dev_t dev;
        ino_t ino;
        uint64_t group;
        int have_content; /* regular file whose content is recorded below */
        uint64_t size;
        int sparse;
        size_t n_ext;
        Kbackup__Extent *ext;
        size_t n_ids;
        uint8_t *ids; /* n_ids * KB_ID_LEN */
};

struct hl_map {
        struct hl_entry **slot;
        size_t cap, count;
        uint64_t next_group;
};

struct idname {
        uint32_t id;
        char *name;
};

struct idcache {
        struct idname *v;
        size_t n;
};

struct bctx {
        struct kb_repo *repo;
        const struct kb_volume_backup_opts *o;
        struct kb_err *err;
        struct kb_saver *saver;
        struct kb_chunker *chunker;
        uint32_t chunk_max;
        dev_t root_dev;
        struct kb_dirstack ds;
        struct kb_relpath path;
        struct hl_map links;
        struct idcache users, groups;
        uint64_t files, dirs, bytes_read, errors;
        uint64_t tree_new, tree_stored;
        double last_progress;
};

static void warnf(struct bctx *c, int counted, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void warnf(struct bctx *c, int counted, const char *fmt, ...)
{
        va_list ap;
        char *msg = NULL;

        if (counted)
                c->errors++;
        if (!c->o || !c->o->warn)
                return;
        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        c->o->warn(msg ? msg : "(out of memory formatting a warning)", c->o->cb_arg);
        free(msg);
}

static const char *cur_path(const struct bctx *c)
{
        return kb_relpath_show(&c->path);
}

static void progress(struct bctx *c, int force)
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
        p.current = force ? NULL : cur_path(c);
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

/* --- hardlink map -------------------------------------------------------------------------- */

static size_t hl_hash(dev_t dev, ino_t ino)
{
        uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev * 0xC2B2AE3D27D4EB4Full;

        return (size_t)(h ^ (h >> 31));
}

static struct hl_entry *hl_find(struct hl_map *m, dev_t dev, ino_t ino)
{
        if (!m->cap)
                return NULL;
        for (size_t i = hl_hash(dev, ino) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
                struct hl_entry *e = m->slot[i];

                if (!e)
                        return NULL;
                if (e->dev == dev && e->ino == ino)
                        return e;
        }
}

static int hl_insert(struct hl_map *m, struct hl_entry *e)
{
        if ((m->count + 1) * 10 > m->cap * 7) {
                size_t cap = m->cap ? m->cap * 2 : 64;
                struct hl_entry **slot = calloc(cap, sizeof(*slot));

                if (!slot)
                        return -ENOMEM;
                for (size_t i = 0; i < m->cap; i++) {
                        struct hl_entry *x = m->slot[i];

                        if (!x)
                                continue;
                        size_t j = hl_hash(x->dev, x->ino) & (cap - 1);
                        while (slot[j])
                                j = (j + 1) & (cap - 1);
                        slot[j] = x;
                }
                free(m->slot);
                m->slot = slot;
                m->cap = cap;
        }
        size_t i = hl_hash(e->dev, e->ino) & (m->cap - 1);
        while (m->slot[i])
                i = (i + 1) & (m->cap - 1);
        m->slot[i] = e;
        m->count++;
        return 0;
}

static void hl_free(struct hl_map *m)
{
        for (size_t i = 0; i < m->cap; i++) {
                if (m->slot[i]) {
                        free(m->slot[i]->ext);
                        free(m->slot[i]->ids);
                        free(m->slot[i]);
                }
        }
        free(m->slot);
        memset(m, 0, sizeof(*m));
}

/* --- file content -------------------------------------------------------------------------- */

struct range {
        uint64_t off, len;
};

/* Chunk ids of the file being read: the array may move, the 32-byte slots (in the arena) not. */
struct idlist {
        ProtobufCBinaryData *v;
        size_t n, cap;
};

static int submit_chunk(struct bctx *c, struct kb_saver_group *g, struct kb_arena *a,
                        struct idlist *ids, uint8_t *data, size_t len, size_t cap)
{
        uint8_t *slot;

        if (cap - len > (64u << 10)) {
                uint8_t *p = realloc(data, len); /* don't queue the unused tail */

                if (p)
                        data = p;
        }
        if (ids->n == ids->cap) {
                size_t ncap = ids->cap ? ids->cap * 2 : 8;
                ProtobufCBinaryData *v = realloc(ids->v, ncap * sizeof(*v));

                if (!v) {
                        free(data);
                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                }
                ids->v = v;
                ids->cap = ncap;
        }
        slot = kb_arena_alloc(a, KB_ID_LEN);
        if (!slot) {
                free(data);
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        }
        memset(slot, 0, KB_ID_LEN);
        ids->v[ids->n].data = slot;
        ids->v[ids->n].len = KB_ID_LEN;
        ids->n++;
        return kb_saver_submit(c->saver, g, KB_BLOB_DATA, data, len, slot, c->err);
}

/* Data ranges of the file: SEEK_DATA/SEEK_HOLE only when fewer blocks are allocated than the size
 * needs (a cheap test that spares every dense file two syscalls). Returns the count, or -ENOMEM. */
static ssize_t file_ranges(int fd, const struct stat *st, struct range **out, int *sparse)
{
        uint64_t size = (uint64_t)st->st_size, off = 0;
        struct range *v = NULL;
        size_t n = 0, cap = 0;

        *sparse = 0;
        if ((uint64_t)st->st_blocks * 512 < size) {
                for (;;) {
                        off_t d = lseek(fd, (off_t)off, SEEK_DATA), h;

                        if (d < 0 && errno == ENXIO) {
                                *sparse = 1; /* no data after off */
                                break;
                        }
                        if (d < 0 || (h = lseek(fd, d, SEEK_HOLE)) < 0) {
                                n = 0; /* no hole support here: read it all */
                                break;
                        }
                        if ((uint64_t)d >= size) {
                                *sparse = 1;
                                break;
                        }
                        if ((uint64_t)h > size)
                                h = (off_t)size;
                        if (n == cap) {
                                struct range *nv;

                                cap = cap ? cap * 2 : 16;
                                nv = realloc(v, cap * sizeof(*v));
                                if (!nv) {
                                        free(v);
                                        return -ENOMEM;
                                }
                                v = nv;
                        }
                        v[n].off = (uint64_t)d;
                        v[n].len = (uint64_t)(h - d);
                        n++;
                        off = (uint64_t)h;
                        if (off >= size) {
                                *sparse = 1;
                                break;
                        }
                }
                if (*sparse && n == 1 && v[0].off == 0 && v[0].len == size)
                        *sparse = 0;
        }
        if (!*sparse) {
                n = 0;
                if (size) {
                        free(v);
                        v = malloc(sizeof(*v));
                        if (!v)
                                return -ENOMEM;
                        v[0].off = 0;
                        v[0].len = size;
                        n = 1;
                }
        }
        *out = v;
        return (ssize_t)n;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
        return a < b ? a : b;
}

/* Read the ranges, chunk and submit. Returns <0 on a fatal error, 0 when read (possibly short:
 * *read_len per range then tells what was read), 1 when a read error was already reported. */
static int read_content(struct bctx *c, int fd, struct range *rg, size_t nrg,
                        struct kb_saver_group *g, struct kb_arena *a, struct idlist *ids,
                        int *shrank)
{
        uint64_t left = 0;
        uint8_t *cur = NULL;
        size_t used = 0, scanned = 0, cap = 0;
        int rc = 0;

        *shrank = 0;
        for (size_t i = 0; i < nrg; i++)
                left += rg[i].len;
        kb_chunker_reset(c->chunker);
        for (size_t i = 0; i < nrg && !*shrank; i++) {
                uint64_t pos = rg[i].off, end = rg[i].off + rg[i].len;

                while (pos < end) {
                        size_t want;
                        ssize_t got;

                        if (!cur) {
                                cap = (size_t)min_u64(c->chunk_max, left);
                                cur = malloc(cap);
                                if (!cur)
                                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                                used = scanned = 0;
                        }
                        want = (size_t)min_u64(min_u64(cap - used, end - pos), READ_MAX);
                        if (!want) {
                                /* Full without a cut: the chunker cuts at max, so only defensive. */
                                rc = submit_chunk(c, g, a, ids, cur, used, cap);
                                cur = NULL;
                                kb_chunker_reset(c->chunker);
                                if (rc < 0)
                                        return rc;
                                continue;
                        }
                        got = pread(fd, cur + used, want, (off_t)pos);
                        if (got < 0 && errno == EINTR)
                                continue;
                        if (got < 0) {
                                warnf(c, 1, "%s: read error at offset %llu: %s", cur_path(c),
                                      (unsigned long long)pos, strerror(errno));
                                free(cur);
                                return 1;
                        }
                        if (got == 0) {
                                rg[i].len = pos - rg[i].off;
                                for (size_t j = i + 1; j < nrg; j++)
                                        rg[j].len = 0;
                                *shrank = 1;
                                break;
                        }
                        used += (size_t)got;
                        pos += (uint64_t)got;
                        left -= (uint64_t)got;
                        c->bytes_read += (uint64_t)got;
                        while (scanned < used) {
                                int found;
                                size_t k = kb_chunker_scan(c->chunker, cur + scanned,
                                                           used - scanned, &found);

                                scanned += k;
                                if (!found)
                                        continue;
                                size_t tail = used - scanned;
                                size_t ncap = (size_t)min_u64(c->chunk_max, tail + left);
                                uint8_t *next = NULL;

                                if (ncap) {
                                        next = malloc(ncap);
                                        if (!next) {
                                                free(cur);
                                                return kb_err_set(c->err, -ENOMEM,
                                                                  "out of memory");
                                        }
                                        memcpy(next, cur + scanned, tail);
                                }
                                rc = submit_chunk(c, g, a, ids, cur, scanned, cap);
                                cur = next;
                                cap = ncap;
                                used = tail;
                                scanned = 0;
                                if (rc < 0) {
                                        free(cur);
                                        return rc;
                                }
                        }
                        progress(c, 0);
                }
        }
        if (cur && used)
                return submit_chunk(c, g, a, ids, cur, used, cap);
        free(cur);
        return 0;
}

static int same_version(const struct stat *a, const struct stat *b)
{
        return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
               a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
               a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static int set_extents(struct kb_arena *a, Kbackup__Node *n, const struct range *rg, size_t nrg)
{
        size_t k = 0;

        n->extents = kb_arena_alloc(a, (nrg ? nrg : 1) * sizeof(*n->extents));
        if (!n->extents)
                return -ENOMEM;
        for (size_t i = 0; i < nrg; i++) {
                Kbackup__Extent *e;

                if (!rg[i].len)
                        continue;
                e = kb_arena_alloc(a, sizeof(*e));
                if (!e)
                        return -ENOMEM;
                kbackup__extent__init(e);
                e->offset = rg[i].off;
                e->length = rg[i].len;
                n->extents[k++] = e;
        }
        n->n_extents = k;
        return 0;
}

static int open_noatime(int dirfd, const char *name, int flags)
{
        int fd = openat(dirfd, name, flags | O_NOATIME);

        /* O_NOATIME needs ownership or CAP_FOWNER; without it a read may move atime. */
        if (fd < 0 && errno == EPERM)
                fd = openat(dirfd, name, flags);
        return fd;
}

/* Later member of a link group: the content recorded for the first one. */
static int link_member(struct bctx *c, struct hl_entry *e, struct kb_arena *a, Kbackup__Node *n)
{
        n->link_group = e->group;
        if (!e->have_content)
                return 0;
        n->size = e->size;
        n->sparse = e->sparse;
        if (e->n_ids) {
                n->content = kb_arena_alloc(a, e->n_ids * sizeof(*n->content));
                if (!n->content)
                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                for (size_t i = 0; i < e->n_ids; i++) {
                        n->content[i].data = e->ids + i * KB_ID_LEN; /* lives until the end */
                        n->content[i].len = KB_ID_LEN;
                }
                n->n_content = e->n_ids;
        }
        if (e->sparse) {
                struct range *rg = malloc((e->n_ext ? e->n_ext : 1) * sizeof(*rg));
                int r;

                if (!rg)
                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                for (size_t i = 0; i < e->n_ext; i++) {
                        rg[i].off = e->ext[i].offset;
                        rg[i].len = e->ext[i].length;
                }
                r = set_extents(a, n, rg, e->n_ext);
                free(rg);
                if (r < 0)
                        return kb_err_set(c->err, r, "out of memory");
        }
        return 0;
}

static int remember_links(struct bctx *c, const struct stat *st, const Kbackup__Node *n,
                          uint64_t *group)
{
        struct hl_entry *e = calloc(1, sizeof(*e));

        if (!e)
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        e->dev = st->st_dev;
        e->ino = st->st_ino;
        e->group = ++c->links.next_group;
        if (n->type == KBACKUP__NODE_TYPE__NODE_FILE) {
                e->have_content = 1;
                e->size = n->size;
                e->sparse = n->sparse;
                e->n_ext = n->n_extents;
                e->n_ids = n->n_content;
                e->ext = calloc(e->n_ext ? e->n_ext : 1, sizeof(*e->ext));
                e->ids = malloc(e->n_ids ? e->n_ids * KB_ID_LEN : 1);
                if (!e->ext || !e->ids) {
                        free(e->ext);
                        free(e->ids);
                        free(e);
                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                }
                for (size_t i = 0; i < e->n_ext; i++)
                        e->ext[i] = *n->extents[i];
                for (size_t i = 0; i < e->n_ids; i++)
                        memcpy(e->ids + i * KB_ID_LEN, n->content[i].data, KB_ID_LEN);
        }
        if (hl_insert(&c->links, e) < 0) {
                free(e->ext);
                free(e->ids);
                free(e);
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        }
        *group = e->group;
        return 0;
}

/* A regular file. Returns <0 fatal, 0 done, 1 omitted (reported). */
static int backup_file(struct bctx *c, int dirfd, const char *name, struct kb_arena *a,
                       struct kb_saver_group *dir_group, Kbackup__Node *n)
{
        struct kb_saver_group *g = dir_group, *own = NULL;
        struct idlist ids = {0};
        struct range *rg = NULL;
        struct stat st0, st1;
        ssize_t nrg;
        int fd, sparse, shrank, rc;

        fd = open_noatime(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        warnf(c, 1, "%s: vanished before it could be read", cur_path(c));
                else
                        warnf(c, 1, "%s: cannot open: %s", cur_path(c), strerror(errno));
                return 1;
        }
        if (fstat(fd, &st0) < 0 || !S_ISREG(st0.st_mode)) {
                warnf(c, 1, "%s: replaced while being read", cur_path(c));
                close(fd);
                return 1;
        }
        kb_fsmeta_from_stat(n, &st0);
        rc = kb_fsmeta_read_xattrs(fd, -1, NULL, a, n);
        if (rc == -ENOMEM)
                goto oom;
        if (rc < 0)
                warnf(c, 1, "%s: cannot read xattrs: %s", cur_path(c), strerror(-rc));

        nrg = file_ranges(fd, &st0, &rg, &sparse);
        if (nrg < 0)
                goto oom;
        if (st0.st_nlink > 1) {
                /* Its ids must be final before a later member copies them. */
                own = kb_saver_group_new(c->saver);
                if (!own)
                        goto oom;
                g = own;
        }
        rc = read_content(c, fd, rg, (size_t)nrg, g, a, &ids, &shrank);
        if (rc != 0)
                goto out;
        if (fstat(fd, &st1) < 0 || shrank || !same_version(&st0, &st1))
                warnf(c, 1, "%s: changed while being read; saved as read", cur_path(c));
        if (shrank) {
                uint64_t end = 0;

                for (ssize_t i = 0; i < nrg; i++)
                        if (rg[i].len)
                                end = rg[i].off + rg[i].len;
                n->size = end;
        }
        n->sparse = sparse;
        if (sparse && set_extents(a, n, rg, (size_t)nrg) < 0)
                goto oom;
        if (ids.n) {
                n->content = kb_arena_alloc(a, ids.n * sizeof(*n->content));
                if (!n->content)
                        goto oom;
                memcpy(n->content, ids.v, ids.n * sizeof(*n->content));
                n->n_content = ids.n;
        }
        if (own) {
                rc = kb_saver_group_wait(own, c->err);
                if (rc < 0)
                        goto out;
                rc = remember_links(c, &st0, n, &n->link_group);
        }
        c->files++;
out:
        kb_saver_group_free(own);
        free(ids.v);
        free(rg);
        close(fd);
        return rc;
oom:
        rc = kb_err_set(c->err, -ENOMEM, "out of memory");
        goto out;
}

static int backup_dir(struct bctx *c, Kbackup__Node *self, struct kb_arena *parent_arena);

/* A subdirectory: its metadata, then its tree. Returns <0 fatal, 0 done, 1 omitted. */
static int backup_subdir(struct bctx *c, int dirfd, const char *name, const struct stat *lst,
                         struct kb_arena *a, Kbackup__Node *n)
{
        struct stat st;
        int fd, rc;

        kb_fsmeta_from_stat(n, lst);
        if (lst->st_dev != c->root_dev) {
                warnf(c, 0, "%s: mount point of another file system, recorded empty",
                      cur_path(c));
                c->dirs++;
                return 0;
        }
        fd = open_noatime(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        warnf(c, 1, "%s: vanished before it could be read", cur_path(c));
                else if (errno == ENOTDIR || errno == ELOOP)
                        warnf(c, 1, "%s: replaced while being read", cur_path(c));
                else {
                        /* Keep the directory itself so the restored tree has its shape. */
                        warnf(c, 1, "%s: cannot open directory, recorded empty: %s",
                              cur_path(c), strerror(errno));
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
                warnf(c, 1, "%s: cannot read xattrs: %s", cur_path(c), strerror(-rc));
        rc = kb_dirstack_push(&c->ds, fd);
        if (rc < 0)
                return kb_err_sys(c->err, rc, "%s", cur_path(c));
        rc = backup_dir(c, n, a);
        int prc = kb_dirstack_pop(&c->ds);
        if (rc == 0 && prc < 0)
                rc = kb_err_sys(c->err, prc, "%s: directory moved during the backup",
                                cur_path(c));
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
                                warnf(c, 1, "%s: vanished before it could be read", cur_path(c));
                        else
                                warnf(c, 1, "%s: cannot read link: %s", cur_path(c),
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
                        warnf(c, 1, "%s: vanished before it could be read", cur_path(c));
                else
                        warnf(c, 1, "%s: cannot stat: %s", cur_path(c), strerror(errno));
                return 0;
        }
        if (S_ISSOCK(st.st_mode)) {
                warnf(c, 0, "%s: socket skipped", cur_path(c));
                return 0;
        }
        if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode) &&
            !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
                warnf(c, 0, "%s: file type %o skipped", cur_path(c), st.st_mode & S_IFMT);
                return 0;
        }
        n = kb_arena_alloc(a, sizeof(*n));
        if (!n)
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        kbackup__node__init(n);
        n->name.len = strlen(name);
        n->name.data = (uint8_t *)name;

        if (!S_ISDIR(st.st_mode) && st.st_nlink > 1)
                link = hl_find(&c->links, st.st_dev, st.st_ino);
        if (S_ISREG(st.st_mode) && !link) {
                rc = backup_file(c, dirfd, name, a, g, n);
        } else if (S_ISDIR(st.st_mode)) {
                rc = backup_subdir(c, dirfd, name, &st, a, n);
        } else {
                kb_fsmeta_from_stat(n, &st);
                if (S_ISLNK(st.st_mode))
                        rc = backup_symlink(c, dirfd, name, &st, a, n);
                if (rc == 0) {
                        rc = kb_fsmeta_read_xattrs(-1, dirfd, name, a, n);
                        if (rc == -ENOMEM)
                                return kb_err_set(c->err, rc, "out of memory");
                        if (rc == -ENOENT) {
                                warnf(c, 1, "%s: vanished before it could be read",
                                      cur_path(c));
                                return 0;
                        }
                        if (rc < 0)
                                warnf(c, 1, "%s: cannot read xattrs: %s", cur_path(c),
                                      strerror(-rc));
                        rc = 0;
                }
                if (rc == 0 && link)
                        rc = link_member(c, link, a, n);
                else if (rc == 0 && st.st_nlink > 1)
                        rc = remember_links(c, &st, n, &n->link_group);
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
        progress(c, 0);
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

/* The directory at the top of the dir stack: its entries, then its tree blob, whose id goes to
 * self->subtree (allocated from the parent's arena). */
static int backup_dir(struct bctx *c, Kbackup__Node *self, struct kb_arena *parent_arena)
{
        struct kb_arena a = {0};
        struct kb_saver_group *g = kb_saver_group_new(c->saver);
        Kbackup__Node **nodes = NULL;
        Kbackup__Tree tree = KBACKUP__TREE__INIT;
        struct kb_save_result res = {0};
        uint8_t id[KB_ID_LEN];
        char **names = NULL;
        size_t count = 0, nn = 0;
        int rc;

        if (!g)
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        rc = read_names(kb_dirstack_top(&c->ds), &a, &names, &count);
        if (rc == -ENOMEM) {
                kb_err_set(c->err, rc, "out of memory");
                goto out;
        }
        if (rc < 0)
                warnf(c, 1, "%s: cannot list directory: %s", cur_path(c), strerror(-rc));
        nodes = malloc((count ? count : 1) * sizeof(*nodes));
        if (!nodes) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                goto out;
        }
        for (size_t i = 0; i < count; i++) {
                Kbackup__Node *n;
                size_t saved;

                rc = kb_relpath_push(&c->path, names[i], strlen(names[i]), &saved);
                if (rc < 0) {
                        kb_err_set(c->err, rc, "out of memory");
                        goto out;
                }
                rc = backup_entry(c, names[i], &a, g, &n);
                kb_relpath_pop(&c->path, saved);
                if (rc < 0)
                        goto out;
                if (n)
                        nodes[nn++] = n;
        }
        rc = kb_saver_group_wait(g, c->err);
        if (rc < 0)
                goto out;
        c->dirs++;
        if (!nn)
                goto out; /* no subtree id: an empty directory (as for mount points) */
        tree.n_nodes = nn;
        tree.nodes = nodes;
        rc = kb_repo_tree_save(c->repo, &tree, id, &res, c->err);
        if (rc < 0)
                goto out;
        if (res.added) {
                c->tree_new += kbackup__tree__get_packed_size(&tree);
                c->tree_stored += res.stored_bytes;
        }
        self->subtree.data = kb_arena_dup(parent_arena, id, KB_ID_LEN);
        if (!self->subtree.data) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                goto out;
        }
        self->subtree.len = KB_ID_LEN;
out:
        kb_saver_group_free(g); /* before the arena: workers write into its id slots */
        kb_arena_free(&a);
        free(nodes);
        free(names);
        return rc;
}

/* --- the snapshot -------------------------------------------------------------------------- */

static void free_tags(Kbackup__Tag **tags, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                if (tags[i]) {
                        free(tags[i]->key);
                        free(tags[i]->value);
                        free(tags[i]);
                }
        }
        free(tags);
}

static int parse_tags(const struct kb_volume_backup_opts *o, Kbackup__Tag ***out,
                      struct kb_err *err)
{
        size_t n = o ? o->ntags : 0;
        Kbackup__Tag **tags = calloc(n ? n : 1, sizeof(*tags));

        if (!tags)
                return kb_err_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                const char *s = o->tags[i], *eq = s ? strchr(s, '=') : NULL;

                if (!eq || eq == s) {
                        free_tags(tags, n);
                        return kb_err_set(err, KB_EUSAGE, "tag '%s': expected KEY=VALUE",
                                          s ? s : "");
                }
                tags[i] = malloc(sizeof(**tags));
                if (!tags[i]) {
                        free_tags(tags, n);
                        return kb_err_set(err, -ENOMEM, "out of memory");
                }
                kbackup__tag__init(tags[i]);
                tags[i]->key = strndup(s, (size_t)(eq - s));
                tags[i]->value = strdup(eq + 1);
                if (!tags[i]->key || !tags[i]->value) {
                        free_tags(tags, n);
                        return kb_err_set(err, -ENOMEM, "out of memory");
                }
        }
        *out = tags;
        return 0;
}

static int save_snapshot(struct bctx *c, const char *src, Kbackup__Node *root, int64_t start_ns,
                         double start_mono, struct kb_volume_backup_result *res)
{
        Kbackup__Snapshot snap = KBACKUP__SNAPSHOT__INIT;
        Kbackup__SnapshotStats stats = KBACKUP__SNAPSHOT_STATS__INIT;
        struct kb_saver_stats ss;
        Kbackup__Tag **tags = NULL;
        char host[256] = "", user[256] = "";
        char id_hex[KB_ID_HEX_LEN + 1];
        char *who;
        int rc;

        rc = parse_tags(c->o, &tags, c->err);
        if (rc < 0)
                return rc;
        kb_saver_get_stats(c->saver, &ss);
        gethostname(host, sizeof(host) - 1);
        who = lookup_name(0, geteuid());
        snprintf(user, sizeof(user), "%s", who ? who : "");
        free(who);

        stats.files = c->files;
        stats.dirs = c->dirs;
        stats.bytes_read = c->bytes_read;
        stats.bytes_new = ss.bytes_new + c->tree_new;
        stats.bytes_stored = ss.bytes_stored + c->tree_stored;
        stats.errors = c->errors;
        stats.duration_sec = kb_volclock() - start_mono;

        snap.version = 1;
        snap.time_unix_nsec = start_ns;
        snap.kind = (char *)"volume";
        snap.name = (char *)(c->o && c->o->name ? c->o->name : "");
        snap.n_tags = c->o ? c->o->ntags : 0;
        snap.tags = tags;
        snap.host = host;
        snap.username = user;
        snap.source_path = (char *)src;
        snap.tree = root->subtree;
        snap.stats = &stats;
        snap.program_version = (char *)KB_VERSION;
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
                res->duration_sec = stats.duration_sec;
        }
        free_tags(tags, snap.n_tags);
        return rc;
}

int kb_volume_backup(struct kb_repo *repo, const char *path,
                     const struct kb_volume_backup_opts *opts,
                     struct kb_volume_backup_result *res, struct kb_err *err)
{
        struct bctx c = {.repo = repo, .o = opts, .err = err};
        struct kb_arena root_arena = {0};
        Kbackup__Node root = KBACKUP__NODE__INIT;
        Kbackup__Tag **tags = NULL;
        struct timespec now;
        double start_mono = kb_volclock();
        char *src = NULL;
        const char *base;
        struct stat st;
        int fd, rc;

        if (res)
                memset(res, 0, sizeof(*res));
        rc = parse_tags(opts, &tags, err); /* refuse bad tags before reading anything */
        if (rc < 0)
                return rc;
        free_tags(tags, opts ? opts->ntags : 0);
        clock_gettime(CLOCK_REALTIME, &now);
        src = realpath(path, NULL);
        if (!src)
                return kb_err_sys(err, -errno, "%s", path);
        fd = open_noatime(AT_FDCWD, src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                rc = errno == ENOTDIR ? kb_err_set(err, KB_EUSAGE, "%s: not a directory", path)
                                      : kb_err_sys(err, -errno, "%s", path);
                free(src);
                return rc;
        }
        if (fstat(fd, &st) < 0) {
                rc = kb_err_sys(err, -errno, "%s", path);
                close(fd);
                free(src);
                return rc;
        }
        c.root_dev = st.st_dev;
        c.chunk_max = kb_repo_chunker_params(repo)->max_size;
        kb_fsmeta_from_stat(&root, &st);
        base = strrchr(src, '/');
        base = base && base[1] ? base + 1 : src;
        root.name.data = (uint8_t *)base;
        root.name.len = strlen(base);
        rc = kb_fsmeta_read_xattrs(fd, -1, NULL, &root_arena, &root);
        if (rc < 0 && rc != -ENOMEM)
                warnf(&c, 1, ".: cannot read xattrs: %s", strerror(-rc));
        else if (rc < 0)
                goto fail_fd;
        root.user = id_name(&c.users, 0, root.uid);
        root.group = id_name(&c.groups, 1, root.gid);

        rc = kb_chunker_new(kb_repo_chunker_params(repo), kb_repo_chunker_seed(repo), &c.chunker);
        if (rc < 0) {
                kb_err_sys(err, rc, "chunker");
                goto fail_fd;
        }
        /* Enough queued chunks to keep every worker busy while the reader waits on a slow disk. */
        rc = kb_saver_new(repo, opts ? opts->threads : 0, (size_t)64 << 20, &c.saver, err);
        if (rc < 0)
                goto fail_fd;
        kb_dirstack_init(&c.ds, DIR_FD_BUDGET, O_NOATIME);
        rc = kb_dirstack_push(&c.ds, fd);
        if (rc < 0)
                kb_err_sys(err, rc, "%s", path);
        else
                rc = backup_dir(&c, &root, &root_arena);
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
        kb_chunker_free(c.chunker);
        progress(&c, 1);
        hl_free(&c.links);
        idcache_free(&c.users);
        idcache_free(&c.groups);
        kb_relpath_free(&c.path);
        kb_arena_free(&root_arena);
        free(src);
        if (rc == 0 && c.errors)
                rc = kb_err_set(err, KB_EPARTIAL,
                                "snapshot saved, but %llu item(s) could not be backed up",
                                (unsigned long long)c.errors);
        return rc;
}
