/* bbolt.c - read-only, bounds-checked reader of bbolt database files (see bbolt.h and
 * docs/etcd-format.md for the layout relied on). Every number read from the file is treated as
 * hostile: it is range-checked before it becomes an offset, a length or a page id. */
#include "bbolt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BOLT_MAGIC    0xED0CDAEDu
#define BOLT_VERSION  2
#define PAGE_HDR      16 /* id u64, flags u16, count u16, overflow u32 */
#define ELEM_SIZE     16 /* leaf: flags, pos, ksize, vsize; branch: pos, ksize, pgid */
#define META_LEN      64 /* magic .. checksum */
#define META_SUM_LEN  56 /* the checksum covers the meta up to the checksum field */
#define BUCKET_HDR    16 /* root pgid u64, sequence u64 */
#define FLAG_BRANCH   0x01
#define FLAG_LEAF     0x02
#define LEAF_BUCKET   0x01
#define MIN_PAGE_SIZE 512
#define MAX_PAGE_SIZE (16u << 20)
/* bbolt trees are balanced with a fan-out of at least 2; real ones are 3-6 levels deep. */
#define MAX_DEPTH 64
/* One page plus its overflow pages (a value of up to this size). */
#define MAX_SPAN (1ull << 30)
/* A fuzzer cannot forge checksums: its builds check everything behind them instead. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define CHECK_META_SUM 0
#else
#define CHECK_META_SUM 1
#endif

struct kb_bbolt {
        struct kb_bbolt_source src;
        uint32_t page_size;
        uint64_t txid;
        uint64_t high_water;
        uint64_t root; /* root bucket's page */
};

struct page {
        const uint8_t *data; /* header included */
        size_t len;          /* (1 + overflow) * page size, or the inline page's length */
        uint64_t off;        /* where data[0] lies in the source */
        uint64_t id;
        uint16_t flags, count;
};

/* One walk: pages already visited (each page belongs to exactly one node, so a second visit means
 * a cycle or a shared subtree: corrupt) and a reusable page buffer. */
struct walk {
        struct kb_bbolt *db;
        uint8_t *seen;
        kb_bbolt_item_cb cb;
        void *arg;
        struct kb_err *err;
};

static uint16_t le16(const uint8_t *p)
{
        return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
        return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

int kb_bbolt_read(struct kb_bbolt *db, uint64_t off, void *buf, size_t len, struct kb_err *err)
{
        if (off > db->src.size || len > db->src.size - off)
                return kb_err_set(err, KB_ECORRUPT,
                                  "bbolt database is truncated: needs bytes %llu..%llu of %llu",
                                  (unsigned long long)off, (unsigned long long)(off + len),
                                  (unsigned long long)db->src.size);
        if (len == 0)
                return 0;
        return db->src.read(db->src.arg, off, buf, len, err);
}

/* ---- sources ---- */

struct file_src {
        int fd;
};

static int file_read(void *arg, uint64_t off, void *buf, size_t len, struct kb_err *err)
{
        struct file_src *f = arg;
        uint8_t *p = buf;

        while (len) {
                ssize_t n = pread(f->fd, p, len, (off_t)off);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return kb_err_sys(err, -errno, "cannot read the database");
                if (n == 0)
                        return kb_err_set(err, -EIO, "the database file shrank while being read");
                p += n;
                off += (uint64_t)n;
                len -= (size_t)n;
        }
        return 0;
}

static void file_close(void *arg)
{
        struct file_src *f = arg;

        close(f->fd);
        free(f);
}

int kb_bbolt_open_file(const char *path, struct kb_bbolt **out, struct kb_err *err)
{
        struct kb_bbolt_source src = {file_read, file_close, NULL, 0};
        struct file_src *f = malloc(sizeof(*f));
        struct stat st;

        if (!f)
                return kb_err_set(err, -ENOMEM, "out of memory");
        f->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (f->fd < 0) {
                free(f);
                return kb_err_sys(err, -errno, "cannot open %s", path);
        }
        if (fstat(f->fd, &st) < 0) {
                int rc = -errno;

                file_close(f);
                return kb_err_sys(err, rc, "cannot read %s", path);
        }
        if (!S_ISREG(st.st_mode)) {
                file_close(f);
                return kb_err_set(err, KB_EUSAGE, "%s is not a regular file", path);
        }
        src.arg = f;
        src.size = (uint64_t)st.st_size;
        int rc = kb_bbolt_open(&src, out, err);

        if (rc < 0)
                kb_err_prefix(err, "%s: ", path);
        return rc;
}

struct mem_src {
        const uint8_t *data;
};

static int mem_read(void *arg, uint64_t off, void *buf, size_t len, struct kb_err *err)
{
        struct mem_src *m = arg;

        (void)err;
        memcpy(buf, m->data + off, len);
        return 0;
}

int kb_bbolt_open_mem(const void *data, size_t len, struct kb_bbolt **out, struct kb_err *err)
{
        struct mem_src *m = malloc(sizeof(*m));
        struct kb_bbolt_source src = {mem_read, free, m, len};

        if (!m)
                return kb_err_set(err, -ENOMEM, "out of memory");
        m->data = data;
        return kb_bbolt_open(&src, out, err);
}

/* ---- meta pages ---- */

struct meta {
        int state; /* 0 valid, or why not: KB_EFORMAT (no magic / other version), KB_ECORRUPT */
        uint32_t version, page_size;
        uint64_t root, pgid, txid;
};

static uint64_t fnv64a(const uint8_t *p, size_t n)
{
        uint64_t h = 0xcbf29ce484222325ull;

        for (size_t i = 0; i < n; i++) {
                h ^= p[i];
                h *= 0x100000001b3ull;
        }
        return h;
}

static int read_meta(struct kb_bbolt *db, uint64_t off, struct meta *m, struct kb_err *err)
{
        uint8_t b[PAGE_HDR + META_LEN];
        const uint8_t *x = b + PAGE_HDR;
        int rc;

        m->state = KB_EFORMAT;
        if (off > db->src.size || db->src.size - off < sizeof(b))
                return 0;
        rc = db->src.read(db->src.arg, off, b, sizeof(b), err);
        if (rc < 0)
                return rc;
        if (le32(x) != BOLT_MAGIC)
                return 0;
        m->version = le32(x + 4);
        if (m->version != BOLT_VERSION)
                return 0;
        m->state = KB_ECORRUPT;
        if (CHECK_META_SUM && fnv64a(x, META_SUM_LEN) != le64(x + META_SUM_LEN))
                return 0;
        m->page_size = le32(x + 8);
        m->root = le64(x + 16);
        m->pgid = le64(x + 40);
        m->txid = le64(x + 48);
        /* A checksummed meta can still come from a hostile writer. */
        if (m->page_size < MIN_PAGE_SIZE || m->page_size > MAX_PAGE_SIZE ||
            (m->page_size & (m->page_size - 1)) || m->pgid < 3 ||
            m->pgid > UINT64_MAX / MAX_PAGE_SIZE || m->root < 2 || m->root >= m->pgid)
                return 0;
        m->state = 0;
        return 0;
}

int kb_bbolt_open(const struct kb_bbolt_source *src, struct kb_bbolt **out, struct kb_err *err)
{
        struct kb_bbolt *db = calloc(1, sizeof(*db));
        struct meta m0 = {.state = KB_EFORMAT}, m1 = {.state = KB_EFORMAT};
        const struct meta *m;
        int rc;

        *out = NULL;
        if (!db) {
                if (src->close)
                        src->close(src->arg);
                return kb_err_set(err, -ENOMEM, "out of memory");
        }
        db->src = *src;
        rc = read_meta(db, 0, &m0, err);
        if (rc < 0)
                goto fail;
        if (m0.state == 0) {
                rc = read_meta(db, m0.page_size, &m1, err);
                if (rc < 0)
                        goto fail;
                if (m1.state == 0 && m1.page_size != m0.page_size)
                        m1.state = KB_ECORRUPT;
        } else {
                /* Meta 0 is damaged: meta 1 sits one page in, at a page size we must guess. */
                for (uint64_t ps = 1024; ps <= MAX_PAGE_SIZE && m1.state != 0; ps <<= 1) {
                        struct meta t = {.state = KB_EFORMAT};

                        rc = read_meta(db, ps, &t, err);
                        if (rc < 0)
                                goto fail;
                        if (t.state == 0 && t.page_size != ps)
                                t.state = KB_ECORRUPT;
                        if (t.state == 0 || (t.state == KB_ECORRUPT && m1.state == KB_EFORMAT))
                                m1 = t;
                }
        }
        if (m0.state == 0 && (m1.state != 0 || m0.txid >= m1.txid))
                m = &m0;
        else if (m1.state == 0)
                m = &m1;
        else if (m0.state == KB_ECORRUPT || m1.state == KB_ECORRUPT) {
                rc = kb_err_set(err, KB_ECORRUPT, "bbolt database: both meta pages are damaged");
                goto fail;
        } else if (m0.version && m0.version != BOLT_VERSION) {
                rc = kb_err_set(err, KB_EFORMAT, "unsupported bbolt format version %u",
                                (unsigned)m0.version);
                goto fail;
        } else {
                rc = kb_err_set(err, KB_EFORMAT, "not a bbolt database (no meta page)");
                goto fail;
        }
        db->page_size = m->page_size;
        db->txid = m->txid;
        db->high_water = m->pgid;
        db->root = m->root;
        if (db->high_water > db->src.size / db->page_size) {
                rc = kb_err_set(err, KB_ECORRUPT,
                                "bbolt database is truncated: %llu pages of %u bytes need %llu "
                                "bytes, have %llu",
                                (unsigned long long)db->high_water, (unsigned)db->page_size,
                                (unsigned long long)(db->high_water * db->page_size),
                                (unsigned long long)db->src.size);
                goto fail;
        }
        *out = db;
        return 0;
fail:
        kb_bbolt_close(db);
        return rc;
}

void kb_bbolt_close(struct kb_bbolt *db)
{
        if (!db)
                return;
        if (db->src.close)
                db->src.close(db->src.arg);
        free(db);
}

void kb_bbolt_info(const struct kb_bbolt *db, struct kb_bbolt_info *out)
{
        out->page_size = db->page_size;
        out->txid = db->txid;
        out->high_water = db->high_water;
        out->db_size = db->high_water * db->page_size;
        out->source_size = db->src.size;
}

void kb_bbolt_bucket_free(struct kb_bbolt_bucket *b)
{
        free(b->inline_page);
        b->inline_page = NULL;
        b->inline_len = 0;
}

/* ---- pages ---- */

/* Read page `id` with its overflow pages into buf, checking its header. */
static int read_page(struct walk *w, uint64_t id, struct kb_buf *buf, struct page *p)
{
        struct kb_bbolt *db = w->db;
        uint64_t span;
        uint32_t overflow;
        int rc;

        if (id < 2 || id >= db->high_water)
                return kb_err_set(w->err, KB_ECORRUPT,
                                  "bbolt database is damaged: page id %llu out of range",
                                  (unsigned long long)id);
        kb_buf_reset(buf);
        rc = kb_buf_reserve(buf, db->page_size);
        if (rc < 0)
                return kb_err_set(w->err, rc, "out of memory");
        rc = kb_bbolt_read(db, id * db->page_size, buf->data, db->page_size, w->err);
        if (rc < 0)
                return rc;
        if (le64(buf->data) != id)
                return kb_err_set(w->err, KB_ECORRUPT,
                                  "bbolt database is damaged: page %llu claims to be page %llu",
                                  (unsigned long long)id, (unsigned long long)le64(buf->data));
        p->flags = le16(buf->data + 8);
        p->count = le16(buf->data + 10);
        overflow = le32(buf->data + 12);
        if (p->flags != FLAG_BRANCH && p->flags != FLAG_LEAF)
                return kb_err_set(w->err, KB_ECORRUPT,
                                  "bbolt database is damaged: page %llu has type %#x where a tree "
                                  "page belongs",
                                  (unsigned long long)id, p->flags);
        span = (uint64_t)overflow + 1;
        if (span > db->high_water - id || span * db->page_size > MAX_SPAN)
                return kb_err_set(w->err, KB_ECORRUPT,
                                  "bbolt database is damaged: page %llu overflows by %u pages",
                                  (unsigned long long)id, (unsigned)overflow);
        for (uint64_t i = id; i < id + span; i++) {
                if (w->seen[i / 8] & (1u << (i % 8)))
                        return kb_err_set(w->err, KB_ECORRUPT,
                                          "bbolt database is damaged: page %llu is reached twice",
                                          (unsigned long long)i);
                w->seen[i / 8] |= (uint8_t)(1u << (i % 8));
        }
        if (span > 1) {
                size_t rest = (size_t)((span - 1) * db->page_size);

                rc = kb_buf_reserve(buf, (size_t)(span * db->page_size));
                if (rc < 0)
                        return kb_err_set(w->err, rc, "out of memory for a %zu-byte page", rest);
                rc = kb_bbolt_read(db, (id + 1) * db->page_size, buf->data + db->page_size, rest,
                                   w->err);
                if (rc < 0)
                        return rc;
        }
        buf->len = (size_t)(span * db->page_size);
        p->data = buf->data;
        p->len = buf->len;
        p->off = id * db->page_size;
        p->id = id;
        if (PAGE_HDR + (size_t)p->count * ELEM_SIZE > p->len)
                return kb_err_set(w->err, KB_ECORRUPT,
                                  "bbolt database is damaged: page %llu has more elements than fit",
                                  (unsigned long long)id);
        if (p->flags == FLAG_BRANCH && p->count == 0)
                return kb_err_set(w->err, KB_ECORRUPT,
                                  "bbolt database is damaged: branch page %llu is empty",
                                  (unsigned long long)id);
        return 0;
}

static int bad_element(struct walk *w, const struct page *p, unsigned i)
{
        return kb_err_set(w->err, KB_ECORRUPT,
                          "bbolt database is damaged: element %u of page %llu lies outside it", i,
                          (unsigned long long)p->id);
}

/* Child page id of branch element i, with its key checked to lie inside the page. */
static int branch_child(struct walk *w, const struct page *p, unsigned i, uint64_t *child)
{
        const uint8_t *e = p->data + PAGE_HDR + (size_t)i * ELEM_SIZE;
        uint64_t start = PAGE_HDR + (uint64_t)i * ELEM_SIZE + le32(e);

        if (start + le32(e + 4) > p->len)
                return bad_element(w, p, i);
        *child = le64(e + 8);
        return 0;
}

/* bbolt lays a page's keys and values out one after the other behind the element array, in
 * element order; requiring exactly that (no overlap, no going back) keeps the work per page
 * proportional to its size even when the elements are hostile. */
static int leaf_items(struct walk *w, const struct page *p)
{
        uint64_t end = PAGE_HDR + (uint64_t)p->count * ELEM_SIZE;

        for (unsigned i = 0; i < p->count; i++) {
                const uint8_t *e = p->data + PAGE_HDR + (size_t)i * ELEM_SIZE;
                uint64_t start = PAGE_HDR + (uint64_t)i * ELEM_SIZE + le32(e + 4);
                uint64_t ksize = le32(e + 8), vsize = le32(e + 12);
                struct kb_bbolt_item it;
                int rc;

                if (start < end || start + ksize + vsize > p->len)
                        return bad_element(w, p, i);
                end = start + ksize + vsize;
                it.key = p->data + start;
                it.key_len = (size_t)ksize;
                it.value = it.key + ksize;
                it.value_len = (size_t)vsize;
                it.value_off = p->off + start + ksize;
                it.is_bucket = (le32(e) & LEAF_BUCKET) != 0;
                rc = w->cb(&it, w->arg);
                if (rc)
                        return rc;
        }
        return 0;
}

/* Depth-first, keys in order. */
static int walk_keys(struct walk *w, uint64_t id, int depth)
{
        struct kb_buf buf = KB_BUF_INIT;
        struct page p;
        int rc;

        if (depth > MAX_DEPTH)
                return kb_err_set(w->err, KB_ECORRUPT, "bbolt database is damaged: tree too deep");
        rc = read_page(w, id, &buf, &p);
        if (rc == 0 && p.flags == FLAG_LEAF)
                rc = leaf_items(w, &p);
        for (unsigned i = 0; rc == 0 && p.flags == FLAG_BRANCH && i < p.count; i++) {
                uint64_t child = 0;

                rc = branch_child(w, &p, i, &child);
                if (rc == 0)
                        rc = walk_keys(w, child, depth + 1);
        }
        kb_buf_free(&buf);
        return rc;
}

struct idvec {
        uint64_t *v;
        size_t n, cap;
};

static int idvec_push(struct idvec *a, uint64_t id)
{
        if (a->n == a->cap) {
                size_t cap = a->cap ? a->cap * 2 : 64;
                uint64_t *v = realloc(a->v, cap * sizeof(*v));

                if (!v)
                        return -ENOMEM;
                a->v = v;
                a->cap = cap;
        }
        a->v[a->n++] = id;
        return 0;
}

static int cmp_id(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

/* Level by level, each level's pages in file order. A level cannot hold more ids than there are
 * pages, because every id pushed comes from a page read once. */
static int walk_file_order(struct walk *w, uint64_t root)
{
        struct idvec cur = {0}, next = {0}, tmp;
        struct kb_buf buf = KB_BUF_INIT;
        struct page p;
        int rc = idvec_push(&cur, root), depth = 0;

        if (rc < 0)
                return kb_err_set(w->err, rc, "out of memory");
        while (rc == 0 && cur.n) {
                if (++depth > MAX_DEPTH) {
                        rc = kb_err_set(w->err, KB_ECORRUPT,
                                        "bbolt database is damaged: tree too deep");
                        break;
                }
                qsort(cur.v, cur.n, sizeof(*cur.v), cmp_id);
                next.n = 0;
                for (size_t k = 0; rc == 0 && k < cur.n; k++) {
                        rc = read_page(w, cur.v[k], &buf, &p);
                        if (rc == 0 && p.flags == FLAG_LEAF)
                                rc = leaf_items(w, &p);
                        for (unsigned i = 0; rc == 0 && p.flags == FLAG_BRANCH && i < p.count;
                             i++) {
                                uint64_t child = 0;

                                rc = branch_child(w, &p, i, &child);
                                if (rc == 0 && idvec_push(&next, child) < 0)
                                        rc = kb_err_set(w->err, -ENOMEM, "out of memory");
                        }
                }
                tmp = cur;
                cur = next;
                next = tmp;
        }
        free(cur.v);
        free(next.v);
        kb_buf_free(&buf);
        return rc;
}

int kb_bbolt_foreach(struct kb_bbolt *db, const struct kb_bbolt_bucket *b,
                     enum kb_bbolt_order order, kb_bbolt_item_cb cb, void *arg, struct kb_err *err)
{
        struct walk w = {db, NULL, cb, arg, err};
        uint64_t root = b ? b->root : db->root;
        int rc;

        if (b && root == 0) {
                /* Inline bucket: one leaf page inside the parent's value, no page id of its own. */
                struct page p = {b->inline_page, b->inline_len, b->inline_off, 0, 0, 0};

                if (!b->inline_page || b->inline_len < PAGE_HDR)
                        return kb_err_set(err, KB_ECORRUPT,
                                          "bbolt database is damaged: inline bucket too short");
                p.flags = le16(p.data + 8);
                p.count = le16(p.data + 10);
                if (!(p.flags & FLAG_LEAF) || PAGE_HDR + (size_t)p.count * ELEM_SIZE > p.len)
                        return kb_err_set(err, KB_ECORRUPT,
                                          "bbolt database is damaged: bad inline bucket page");
                return leaf_items(&w, &p);
        }
        w.seen = calloc((size_t)(db->high_water / 8 + 1), 1);
        if (!w.seen)
                return kb_err_set(err, -ENOMEM, "out of memory");
        if (order == KB_BBOLT_FILE_ORDER)
                rc = walk_file_order(&w, root);
        else
                rc = walk_keys(&w, root, 0);
        free(w.seen);
        return rc;
}

/* ---- lookups ---- */

struct find {
        const void *key;
        size_t klen;
        int want_bucket;
        int found, is_bucket;
        uint64_t value_off;
        struct kb_buf *out;
        int rc;
};

static int find_cb(const struct kb_bbolt_item *it, void *arg)
{
        struct find *f = arg;

        if (it->key_len != f->klen || memcmp(it->key, f->key, f->klen) != 0)
                return 0;
        f->found = 1;
        f->is_bucket = it->is_bucket;
        f->value_off = it->value_off;
        if (f->is_bucket == f->want_bucket) {
                f->rc = kb_buf_append(f->out, it->value, it->value_len);
                if (f->rc < 0)
                        return 1;
        }
        return 1;
}

static int lookup(struct kb_bbolt *db, const struct kb_bbolt_bucket *b, const void *key,
                  size_t klen, int want_bucket, struct kb_buf *out, uint64_t *value_off,
                  struct kb_err *err)
{
        struct find f = {key, klen, want_bucket, 0, 0, 0, out, 0};
        int rc = kb_bbolt_foreach(db, b, KB_BBOLT_KEY_ORDER, find_cb, &f, err);

        if (rc < 0)
                return rc;
        if (f.rc < 0)
                return kb_err_set(err, f.rc, "out of memory");
        if (!f.found || f.is_bucket != want_bucket)
                return kb_err_set(err, KB_ENOTFOUND, "no %s '%.*s' in the bbolt database",
                                  want_bucket ? "bucket" : "key", (int)(klen > 64 ? 64 : klen),
                                  (const char *)key);
        if (value_off)
                *value_off = f.value_off;
        return 0;
}

int kb_bbolt_get(struct kb_bbolt *db, const struct kb_bbolt_bucket *b, const void *key, size_t klen,
                 struct kb_buf *out, struct kb_err *err)
{
        return lookup(db, b, key, klen, 0, out, NULL, err);
}

int kb_bbolt_bucket_open(struct kb_bbolt *db, const struct kb_bbolt_bucket *parent,
                         const void *name, size_t len, struct kb_bbolt_bucket *out,
                         struct kb_err *err)
{
        struct kb_buf v = KB_BUF_INIT;
        uint64_t off = 0;
        int rc = lookup(db, parent, name, len, 1, &v, &off, err);

        *out = (struct kb_bbolt_bucket)KB_BBOLT_BUCKET_INIT;
        if (rc < 0)
                goto out;
        rc = KB_ECORRUPT;
        if (v.len < BUCKET_HDR) {
                kb_err_set(err, rc, "bbolt database is damaged: bucket header too short");
                goto out;
        }
        out->root = le64(v.data);
        if (out->root == 0) {
                if (v.len < BUCKET_HDR + PAGE_HDR) {
                        kb_err_set(err, rc, "bbolt database is damaged: inline bucket too short");
                        goto out;
                }
                out->inline_len = v.len - BUCKET_HDR;
                out->inline_page = malloc(out->inline_len);
                if (!out->inline_page) {
                        rc = kb_err_set(err, -ENOMEM, "out of memory");
                        goto out;
                }
                memcpy(out->inline_page, v.data + BUCKET_HDR, out->inline_len);
                out->inline_off = off + BUCKET_HDR;
        } else if (out->root < 2 || out->root >= db->high_water) {
                kb_err_set(err, rc, "bbolt database is damaged: bucket root page out of range");
                goto out;
        }
        rc = 0;
out:
        kb_buf_free(&v);
        return rc;
}
