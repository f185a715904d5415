/* volume_file.c - the content of regular files for volume backup: data ranges of sparse files
 * (SEEK_DATA/SEEK_HOLE), reading, content-defined chunking, handing chunks to the saver, files
 * that change while read, and hardlink groups. */
#include "volume_backup_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsmeta.h"
#include "sniff.h"

/* A chunk cannot end before the chunker's minimum size, so that much is read at once; past it,
 * reads are small: what follows the cut is copied into the next chunk's buffer, and 4 MiB reads
 * made the reader copy (and fault in) each byte about twice. */
#define READ_MAX  (4u << 20) /* bytes per read(): bounds progress latency */
#define READ_STEP (256u << 10)
/* A device is read once from end to end: what was read leaves the page cache in steps of this
 * many bytes, so a backup of a large volume does not push the node's workloads out of memory. */
#define DROP_STEP (32u << 20)

/* --- hardlink map -------------------------------------------------------------------------- */

static size_t hl_hash(dev_t dev, ino_t ino)
{
        uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev * 0xC2B2AE3D27D4EB4Full;

        return (size_t)(h ^ (h >> 31));
}

struct hl_entry *kb_vb_hl_find(struct hl_map *m, dev_t dev, ino_t ino)
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

void kb_vb_hl_free(struct hl_map *m)
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

/* Chunk buffers of at least this size come from the pool (bufpool.h); smaller ones from malloc,
 * whose heap already reuses its pages (large allocations are fresh mappings). */
#define POOL_MIN ((size_t)128 << 10)

static uint8_t *chunk_buf_new(struct bctx *c, size_t cap)
{
        return cap >= POOL_MIN ? kb_bufpool_get(c->pool) : malloc(cap);
}

static void chunk_buf_free(struct bctx *c, uint8_t *buf, size_t cap, size_t used)
{
        if (buf && cap >= POOL_MIN)
                kb_bufpool_put(c->pool, buf, used);
        else
                free(buf);
}

static int submit_chunk(struct bctx *c, struct kb_saver_group *g, struct kb_arena *a,
                        struct idlist *ids, uint8_t *data, size_t len, size_t cap, unsigned flags)
{
        struct kb_bufpool *pool = cap >= POOL_MIN ? c->pool : NULL;
        uint8_t *slot;

        if (ids->n == ids->cap) {
                size_t ncap = ids->cap ? ids->cap * 2 : 8;
                ProtobufCBinaryData *v = realloc(ids->v, ncap * sizeof(*v));

                if (!v) {
                        chunk_buf_free(c, data, cap, len);
                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                }
                ids->v = v;
                ids->cap = ncap;
        }
        slot = kb_arena_alloc(a, KB_ID_LEN);
        if (!slot) {
                chunk_buf_free(c, data, cap, len);
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        }
        memset(slot, 0, KB_ID_LEN);
        ids->v[ids->n].data = slot;
        ids->v[ids->n].len = KB_ID_LEN;
        ids->n++;
        return kb_saver_submit_pooled(c->saver, g, KB_BLOB_DATA, flags, pool, data, len, slot,
                                      c->err);
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

/* Read the ranges, chunk and submit; with drop_behind (a device, read once) what was read leaves
 * the page cache as the read goes on. Returns <0 on a fatal error, 0 when read (possibly short:
 * *read_len per range then tells what was read), 1 when a read error was already reported. */
static int read_content(struct bctx *c, int fd, struct range *rg, size_t nrg, int drop_behind,
                        struct kb_saver_group *g, struct kb_arena *a, struct idlist *ids,
                        int *shrank)
{
        uint64_t left = 0;
        uint8_t *cur = NULL;
        size_t used = 0, scanned = 0, cap = 0;
        unsigned flags = 0;   /* for every chunk: the file's first bytes tell */
        uint64_t dropped = 0; /* drop_behind: bytes before this left the page cache */
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
                                cur = chunk_buf_new(c, cap);
                                if (!cur)
                                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                                used = scanned = 0;
                        }
                        want = used < c->chunk_min ? c->chunk_min - used : READ_STEP;
                        want = (size_t)min_u64(min_u64(cap - used, end - pos),
                                               min_u64(want, READ_MAX));
                        if (!want) {
                                /* Full without a cut: the chunker cuts at max, so only defensive.
                                 */
                                rc = submit_chunk(c, g, a, ids, cur, used, cap, flags);
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
                                kb_vb_warn(c, 1, "%s: read error at offset %llu: %s", kb_vb_path(c),
                                           (unsigned long long)pos, strerror(errno));
                                chunk_buf_free(c, cur, cap, used);
                                return 1;
                        }
                        if (got == 0) {
                                rg[i].len = pos - rg[i].off;
                                for (size_t j = i + 1; j < nrg; j++)
                                        rg[j].len = 0;
                                *shrank = 1;
                                break;
                        }
                        /* A file that starts like a gzip or JPEG file is that all along, and
                         * zstd would pay to find out: ~20 us for a 9 KiB .gz, ~0.4 ms per MiB
                         * of a large one, to save 1.6% on the bench tree's 7.5k such files. */
                        if (pos == 0 && kb_sniff_compressed(cur + used, (size_t)got))
                                flags = KB_SAVE_NO_COMPRESS;
                        used += (size_t)got;
                        if (cap >= POOL_MIN)
                                kb_bufpool_touched(cur, used);
                        pos += (uint64_t)got;
                        if (drop_behind && pos - dropped >= DROP_STEP) {
                                posix_fadvise(fd, (off_t)dropped, (off_t)(pos - dropped),
                                              POSIX_FADV_DONTNEED);
                                dropped = pos;
                        }
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
                                        next = chunk_buf_new(c, ncap);
                                        if (!next) {
                                                chunk_buf_free(c, cur, cap, used);
                                                return kb_err_set(c->err, -ENOMEM, "out of memory");
                                        }
                                        memcpy(next, cur + scanned, tail);
                                }
                                rc = submit_chunk(c, g, a, ids, cur, scanned, cap, flags);
                                cur = next;
                                cap = ncap;
                                used = tail;
                                scanned = 0;
                                if (rc < 0) {
                                        chunk_buf_free(c, cur, cap, used);
                                        return rc;
                                }
                        }
                        kb_vb_progress(c, 0);
                }
        }
        if (cur && used)
                return submit_chunk(c, g, a, ids, cur, used, cap, flags);
        chunk_buf_free(c, cur, cap, used);
        return 0;
}

/* The chunk ids read_content gathered become n's content (copied into n's arena). */
static int set_content(struct kb_arena *a, Kbackup__Node *n, const struct idlist *ids)
{
        if (!ids->n)
                return 0;
        n->content = kb_arena_alloc(a, ids->n * sizeof(*n->content));
        if (!n->content)
                return -ENOMEM;
        memcpy(n->content, ids->v, ids->n * sizeof(*n->content));
        n->n_content = ids->n;
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

int kb_vb_open_noatime(int dirfd, const char *name, int flags)
{
        int fd = openat(dirfd, name, flags | O_NOATIME);

        /* O_NOATIME needs ownership or CAP_FOWNER; without it a read may move atime. */
        if (fd < 0 && errno == EPERM)
                fd = openat(dirfd, name, flags);
        return fd;
}

/* Later member of a link group: the content recorded for the first one. */
int kb_vb_link_member(struct bctx *c, struct hl_entry *e, struct kb_arena *a, Kbackup__Node *n)
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

int kb_vb_remember_links(struct bctx *c, const struct stat *st, const Kbackup__Node *n,
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
/* Is the parent snapshot's node for this file still true of it, with every chunk still stored?
 * ctime catches content rewritten with a restored mtime; the inode catches a replaced file. */
static int unchanged(struct bctx *c, const Kbackup__Node *p, const struct stat *st)
{
        if (!p || p->type != KBACKUP__NODE_TYPE__NODE_FILE || p->size != (uint64_t)st->st_size ||
            p->mtime_sec != st->st_mtim.tv_sec || p->mtime_nsec != (uint32_t)st->st_mtim.tv_nsec ||
            p->ctime_sec != st->st_ctim.tv_sec || p->ctime_nsec != (uint32_t)st->st_ctim.tv_nsec ||
            p->inode != (uint64_t)st->st_ino || (p->size && !p->n_content && !p->sparse))
                return 0;
        for (size_t i = 0; i < p->n_content; i++)
                if (p->content[i].len != KB_ID_LEN ||
                    !kb_repo_blob_known(c->repo, p->content[i].data))
                        return 0;
        return 1;
}

/* Take content, xattrs, extents and the sparse flag from the parent's node. */
static int reuse(struct kb_arena *a, const Kbackup__Node *p, Kbackup__Node *n)
{
        if (p->n_content) {
                n->content = kb_arena_alloc(a, p->n_content * sizeof(*n->content));
                if (!n->content)
                        return -ENOMEM;
                for (size_t i = 0; i < p->n_content; i++) {
                        n->content[i].len = KB_ID_LEN;
                        n->content[i].data = kb_arena_dup(a, p->content[i].data, KB_ID_LEN);
                        if (!n->content[i].data)
                                return -ENOMEM;
                }
                n->n_content = p->n_content;
        }
        if (p->n_xattrs) {
                Kbackup__Xattr **v = kb_arena_alloc(a, p->n_xattrs * sizeof(*v));
                Kbackup__Xattr *x = kb_arena_alloc(a, p->n_xattrs * sizeof(*x));

                if (!v || !x)
                        return -ENOMEM;
                for (size_t i = 0; i < p->n_xattrs; i++) {
                        kbackup__xattr__init(&x[i]);
                        x[i].name.len = p->xattrs[i]->name.len;
                        x[i].name.data = kb_arena_dup(a, p->xattrs[i]->name.data, x[i].name.len);
                        x[i].value.len = p->xattrs[i]->value.len;
                        if (x[i].value.len)
                                x[i].value.data =
                                    kb_arena_dup(a, p->xattrs[i]->value.data, x[i].value.len);
                        if (!x[i].name.data || (x[i].value.len && !x[i].value.data))
                                return -ENOMEM;
                        v[i] = &x[i];
                }
                n->xattrs = v;
                n->n_xattrs = p->n_xattrs;
        }
        n->sparse = p->sparse;
        if (p->n_extents) {
                Kbackup__Extent **v = kb_arena_alloc(a, p->n_extents * sizeof(*v));
                Kbackup__Extent *e = kb_arena_alloc(a, p->n_extents * sizeof(*e));

                if (!v || !e)
                        return -ENOMEM;
                for (size_t i = 0; i < p->n_extents; i++) {
                        kbackup__extent__init(&e[i]);
                        e[i].offset = p->extents[i]->offset;
                        e[i].length = p->extents[i]->length;
                        v[i] = &e[i];
                }
                n->extents = v;
                n->n_extents = p->n_extents;
        }
        return 0;
}

int kb_vb_backup_file(struct bctx *c, int dirfd, const char *name, const struct stat *lst,
                      struct kb_arena *a, struct kb_saver_group *dir_group, Kbackup__Node *n)
{
        struct kb_saver_group *g = dir_group, *own = NULL;
        const Kbackup__Node *prev = kb_vb_prev_node(c, name);
        struct idlist ids = {0};
        struct range *rg = NULL;
        struct stat st0, st1;
        ssize_t nrg;
        int fd, sparse, shrank, rc;

        /* Unchanged since the parent snapshot: not even opened. ctime moves with every change of
         * content, xattrs, mode or owner, so the parent's node is still true of it. The first
         * member of a hardlink group seen is remembered as when it is read, for the others. */
        if (unchanged(c, prev, lst)) {
                kb_fsmeta_from_stat(n, lst);
                if (reuse(a, prev, n) < 0)
                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                if (lst->st_nlink > 1) {
                        int rc = kb_vb_remember_links(c, lst, n, &n->link_group);

                        if (rc < 0)
                                return rc;
                }
                c->files++;
                c->files_unchanged++;
                c->bytes_unchanged += n->size;
                c->bytes_read += n->size; /* logical bytes of the snapshot, as for read files */
                return 0;
        }
        fd = kb_vb_open_noatime(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        kb_vb_warn(c, 1, "%s: vanished before it could be read", kb_vb_path(c));
                else
                        kb_vb_warn(c, 1, "%s: cannot open: %s", kb_vb_path(c), strerror(errno));
                return 1;
        }
        if (fstat(fd, &st0) < 0 || !S_ISREG(st0.st_mode)) {
                kb_vb_warn(c, 1, "%s: replaced while being read", kb_vb_path(c));
                close(fd);
                return 1;
        }
        kb_fsmeta_from_stat(n, &st0);
        rc = kb_fsmeta_read_xattrs(fd, -1, NULL, a, n);
        if (rc == -ENOMEM)
                goto oom;
        if (rc < 0)
                kb_vb_warn(c, 1, "%s: cannot read xattrs: %s", kb_vb_path(c), strerror(-rc));

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
        rc = read_content(c, fd, rg, (size_t)nrg, 0, g, a, &ids, &shrank);
        if (rc != 0)
                goto out;
        if (fstat(fd, &st1) < 0 || shrank || !same_version(&st0, &st1))
                kb_vb_warn(c, 1, "%s: changed while being read; saved as read", kb_vb_path(c));
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
        if (set_content(a, n, &ids) < 0)
                goto oom;
        if (own) {
                rc = kb_saver_group_wait(own, c->err);
                if (rc < 0)
                        goto out;
                rc = kb_vb_remember_links(c, &st0, n, &n->link_group);
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

int kb_vb_read_device(struct bctx *c, int fd, uint64_t size, struct kb_arena *a,
                      struct kb_saver_group *g, Kbackup__Node *n)
{
        struct range rg = {.off = 0, .len = size};
        struct idlist ids = {0};
        int shrank, rc;

        /* A device has no holes to ask for: its zero runs are chunks like any other, cut at the
         * chunker's maximum and stored once however often they recur. */
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        rc = read_content(c, fd, &rg, size ? 1 : 0, 1, g, a, &ids, &shrank);
        if (rc == 1)
                rc = kb_err_set(c->err, -EIO, "%s: cannot read the device; no snapshot saved",
                                kb_vb_path(c));
        if (rc == 0 && shrank) {
                kb_vb_warn(c, 1, "%s: the device shrank while being read; saved as read",
                           kb_vb_path(c));
                n->size = rg.len;
        }
        if (rc == 0 && set_content(a, n, &ids) < 0)
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
        if (rc == 0)
                c->files++;
        free(ids.v);
        return rc;
}
