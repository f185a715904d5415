/* etcd_keyspace.c - the live key space of an etcd backend database (see etcd_keyspace.h): scan
 * the `key` bucket, keep the newest revision of each key, drop keys whose newest revision is a
 * tombstone. Records are processed in file order, not revision order, so "newest" is decided by
 * comparing revisions, never by arrival. */
#include "etcd_keyspace.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define REV_LEN     17 /* 8-byte big-endian main, '_', 8-byte big-endian sub */
#define ARENA_BLOCK (1u << 20)
#define MAX_ENTRIES (UINT32_MAX / 4)

struct arena_block {
        struct arena_block *next;
        size_t used, cap;
        uint8_t data[];
};

struct kb_etcd_keyspace {
        struct kb_bbolt *db;
        struct kb_etcd_entry *e;
        size_t n, cap;
        struct arena_block *blocks; /* key bytes: blocks never move, so kv->key stays valid */
        struct kb_etcd_keyspace_info info;
};

/* Values are hashed under one fixed key so that hashes compare across key spaces. */
static const uint8_t value_hash_key[crypto_shorthash_KEYBYTES] = "kbackup-etcd-v1";

static uint64_t hash64(const uint8_t *p, size_t n, const uint8_t *key)
{
        uint8_t h[crypto_shorthash_BYTES];
        uint64_t v;

        crypto_shorthash(h, p, n, key);
        memcpy(&v, h, sizeof(v));
        return v;
}

static uint64_t be64(const uint8_t *p)
{
        uint64_t v = 0;

        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

/* ---- mvccpb.KeyValue ---- */

static int varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
        uint64_t r = 0;

        for (unsigned s = 0; s < 64; s += 7) {
                if (*i >= n)
                        return -1;
                uint8_t b = p[(*i)++];

                r |= (uint64_t)(b & 0x7f) << s;
                if (!(b & 0x80)) {
                        *v = r;
                        return 0;
                }
        }
        return -1;
}

int kb_etcd_kv_decode(const uint8_t *p, size_t n, struct kb_etcd_kv_wire *out)
{
        size_t i = 0;

        memset(out, 0, sizeof(*out));
        while (i < n) {
                uint64_t tag, v;
                unsigned field, wt;

                if (varint(p, n, &i, &tag) < 0 || tag >> 3 == 0 || tag >> 3 > UINT32_MAX >> 3)
                        return KB_ECORRUPT;
                field = (unsigned)(tag >> 3);
                wt = (unsigned)(tag & 7);
                switch (wt) {
                case 0:
                        if (varint(p, n, &i, &v) < 0)
                                return KB_ECORRUPT;
                        if (field == 2)
                                out->create_revision = (int64_t)v;
                        else if (field == 3)
                                out->mod_revision = (int64_t)v;
                        else if (field == 4)
                                out->version = (int64_t)v;
                        else if (field == 6)
                                out->lease = (int64_t)v;
                        else if (field == 1 || field == 5)
                                return KB_ECORRUPT;
                        break;
                case 2:
                        if (varint(p, n, &i, &v) < 0 || v > n - i)
                                return KB_ECORRUPT;
                        if (field == 1) {
                                out->key_off = i;
                                out->key_len = (size_t)v;
                        } else if (field == 5) {
                                out->value_off = i;
                                out->value_len = (size_t)v;
                        } else if (field >= 2 && field <= 6) {
                                return KB_ECORRUPT;
                        }
                        i += (size_t)v;
                        break;
                case 1:
                case 5:
                        if ((field >= 1 && field <= 6) || n - i < (wt == 1 ? 8u : 4u))
                                return KB_ECORRUPT;
                        i += wt == 1 ? 8 : 4;
                        break;
                default: /* groups (3, 4) are not in KeyValue; 6 and 7 do not exist */
                        return KB_ECORRUPT;
                }
        }
        return 0;
}

/* ---- loading ---- */

struct loader {
        struct kb_etcd_keyspace *ks;
        const uint8_t *prefix;
        size_t prefix_len;
        uint32_t *table; /* entry index + 1; 0 = empty */
        size_t tcap;     /* power of two */
        uint8_t hkey[crypto_shorthash_KEYBYTES];
        int64_t max_rev;
        struct kb_err *err;
        int rc;
};

static const uint8_t *arena_copy(struct kb_etcd_keyspace *ks, const uint8_t *p, size_t n)
{
        struct arena_block *b = ks->blocks;

        if (!b || b->cap - b->used < n) {
                size_t cap = n > ARENA_BLOCK / 16 ? n : ARENA_BLOCK;

                /* A big key gets its own block, behind the current one, so the current one's
                 * free space is not abandoned. */
                b = malloc(sizeof(*b) + (cap ? cap : 1));
                if (!b)
                        return NULL;
                b->used = 0;
                b->cap = cap;
                if (n > ARENA_BLOCK / 16 && ks->blocks) {
                        b->next = ks->blocks->next;
                        ks->blocks->next = b;
                } else {
                        b->next = ks->blocks;
                        ks->blocks = b;
                }
        }
        uint8_t *dst = b->data + b->used;

        if (n)
                memcpy(dst, p, n);
        b->used += n;
        return dst;
}

static int grow_table(struct loader *l)
{
        size_t cap = l->tcap ? l->tcap * 2 : 1024;
        uint32_t *t = calloc(cap, sizeof(*t));

        if (!t)
                return -ENOMEM;
        for (size_t i = 0; i < l->ks->n; i++) {
                const struct kb_etcd_entry *e = &l->ks->e[i];
                size_t h = (size_t)hash64(e->key, e->key_len, l->hkey) & (cap - 1);

                while (t[h])
                        h = (h + 1) & (cap - 1);
                t[h] = (uint32_t)(i + 1);
        }
        free(l->table);
        l->table = t;
        l->tcap = cap;
        return 0;
}

static int corrupt(struct loader *l, uint64_t main, uint64_t sub, const char *what)
{
        l->rc = kb_err_set(l->err, KB_ECORRUPT,
                           "etcd database is damaged: key bucket record %llu_%llu %s",
                           (unsigned long long)main, (unsigned long long)sub, what);
        return 1;
}

static int record_cb(const struct kb_bbolt_item *it, void *arg)
{
        struct loader *l = arg;
        struct kb_etcd_keyspace *ks = l->ks;
        struct kb_etcd_kv_wire w;
        struct kb_etcd_entry *e;
        uint64_t main, sub;
        const uint8_t *key;
        size_t h;
        int tomb;

        if (it->key_len < REV_LEN || it->key_len > REV_LEN + 1 || it->key[8] != '_') {
                l->rc = kb_err_set(l->err, KB_ECORRUPT,
                                   "etcd database is damaged: a key bucket key of %zu bytes is not "
                                   "a revision",
                                   it->key_len);
                return 1;
        }
        main = be64(it->key);
        sub = be64(it->key + 9);
        tomb = it->key_len == REV_LEN + 1;
        if (tomb && it->key[REV_LEN] != 't')
                return corrupt(l, main, sub, "has an unknown mark");
        if (it->is_bucket)
                return corrupt(l, main, sub, "is a bucket");
        if (main > INT64_MAX || sub > INT64_MAX)
                return corrupt(l, main, sub, "is out of range");
        if (kb_etcd_kv_decode(it->value, it->value_len, &w) < 0)
                return corrupt(l, main, sub, "is not an mvccpb.KeyValue");
        ks->info.records++;
        ks->info.tombstones += (uint64_t)tomb;
        if ((int64_t)main > l->max_rev)
                l->max_rev = (int64_t)main;
        key = it->value + w.key_off;
        if (w.key_len < l->prefix_len || memcmp(key, l->prefix, l->prefix_len) != 0)
                return 0;
        if (w.key_len > UINT32_MAX)
                return corrupt(l, main, sub, "has an oversized key");

        if (ks->n * 2 >= l->tcap && grow_table(l) < 0)
                goto nomem;
        h = (size_t)hash64(key, w.key_len, l->hkey) & (l->tcap - 1);
        for (e = NULL; l->table[h]; h = (h + 1) & (l->tcap - 1)) {
                struct kb_etcd_entry *c = &ks->e[l->table[h] - 1];

                if (c->key_len == w.key_len && memcmp(c->key, key, w.key_len) == 0) {
                        e = c;
                        break;
                }
        }
        if (e && (main < e->rev_main || (main == e->rev_main && sub < e->rev_sub)))
                return 0; /* an older revision of a key already seen */
        if (!e) {
                if (ks->n >= MAX_ENTRIES) {
                        l->rc = kb_err_set(l->err, -E2BIG, "too many keys in the etcd database");
                        return 1;
                }
                if (ks->n == ks->cap) {
                        size_t cap = ks->cap ? ks->cap * 2 : 1024;
                        struct kb_etcd_entry *v = realloc(ks->e, cap * sizeof(*v));

                        if (!v)
                                goto nomem;
                        ks->e = v;
                        ks->cap = cap;
                }
                e = &ks->e[ks->n];
                memset(e, 0, sizeof(*e));
                e->key = arena_copy(ks, key, w.key_len);
                if (!e->key)
                        goto nomem;
                e->key_len = (uint32_t)w.key_len;
                l->table[h] = (uint32_t)(++ks->n);
        }
        e->rev_main = main;
        e->rev_sub = sub;
        e->tombstone = (uint8_t)tomb;
        e->value_off = it->value_off + w.value_off;
        e->value_len = (uint32_t)w.value_len;
        e->value_hash = hash64(it->value + w.value_off, w.value_len, value_hash_key);
        e->create_revision = w.create_revision;
        e->mod_revision = w.mod_revision;
        e->version = w.version;
        e->lease = w.lease;
        return 0;
nomem:
        l->rc = kb_err_set(l->err, -ENOMEM, "out of memory reading the etcd key space");
        return 1;
}

static int cmp_kv_key(const struct kb_etcd_entry *a, const void *key, size_t len)
{
        size_t n = a->key_len < len ? a->key_len : len;
        int c = n ? memcmp(a->key, key, n) : 0;

        if (c)
                return c;
        return a->key_len < len ? -1 : a->key_len > len;
}

static int cmp_kv(const void *x, const void *y)
{
        const struct kb_etcd_entry *b = y;

        return cmp_kv_key(x, b->key, b->key_len);
}

/* A revision stored as a meta value: 17 bytes like a key bucket key, the main part first. */
static int64_t meta_rev(struct kb_bbolt *db, const struct kb_bbolt_bucket *meta, const char *name,
                        struct kb_err *err, int *rc)
{
        struct kb_buf v = KB_BUF_INIT;
        int64_t rev = 0;
        int r = kb_bbolt_get(db, meta, name, strlen(name), &v, err);

        if (r == 0 && v.len >= 8 && be64(v.data) <= INT64_MAX)
                rev = (int64_t)be64(v.data);
        else if (r < 0 && r != KB_ENOTFOUND)
                *rc = r;
        kb_buf_free(&v);
        return rev;
}

static int read_meta(struct kb_etcd_keyspace *ks, struct kb_err *err)
{
        struct kb_bbolt_bucket meta = KB_BBOLT_BUCKET_INIT;
        struct kb_buf v = KB_BUF_INIT;
        int rc = kb_bbolt_bucket_open(ks->db, NULL, "meta", 4, &meta, err);

        if (rc == KB_ENOTFOUND)
                return 0;
        if (rc < 0)
                return rc;
        ks->info.compact_revision = meta_rev(ks->db, &meta, "finishedCompactRev", err, &rc);
        ks->info.scheduled_compact_revision =
            meta_rev(ks->db, &meta, "scheduledCompactRev", err, &rc);
        if (rc == 0) {
                int r = kb_bbolt_get(ks->db, &meta, "consistent_index", 16, &v, err);

                if (r == 0 && v.len == 8)
                        ks->info.consistent_index = be64(v.data);
                else if (r < 0 && r != KB_ENOTFOUND)
                        rc = r;
        }
        kb_buf_free(&v);
        kb_bbolt_bucket_free(&meta);
        return rc;
}

int kb_etcd_keyspace_load(struct kb_bbolt *db, const void *prefix, size_t prefix_len,
                          struct kb_etcd_keyspace **out, struct kb_err *err)
{
        struct kb_etcd_keyspace *ks = calloc(1, sizeof(*ks));
        struct kb_bbolt_bucket kb = KB_BBOLT_BUCKET_INIT;
        struct loader l = {0};
        size_t n = 0;
        int rc;

        *out = NULL;
        if (!ks || sodium_init() < 0) {
                free(ks);
                return kb_err_set(err, -ENOMEM, "out of memory");
        }
        ks->db = db;
        kb_bbolt_info(db, &ks->info.db);
        rc = kb_bbolt_bucket_open(db, NULL, "key", 3, &kb, err);
        if (rc == KB_ENOTFOUND) {
                rc = kb_err_set(err, KB_EFORMAT, "not an etcd database: it has no 'key' bucket");
                goto fail;
        }
        if (rc < 0)
                goto fail;
        l.ks = ks;
        l.prefix = prefix_len ? prefix : (const uint8_t *)"";
        l.prefix_len = prefix_len;
        l.err = err;
        randombytes_buf(l.hkey, sizeof(l.hkey)); /* a crafted database cannot aim collisions */
        rc = grow_table(&l);
        if (rc < 0) {
                kb_err_set(err, rc, "out of memory");
                goto fail;
        }
        rc = kb_bbolt_foreach(db, &kb, KB_BBOLT_FILE_ORDER, record_cb, &l, err);
        if (rc > 0)
                rc = l.rc;
        if (rc < 0)
                goto fail;
        free(l.table);
        l.table = NULL;
        rc = read_meta(ks, err);
        if (rc < 0)
                goto fail;

        for (size_t i = 0; i < ks->n; i++) {
                if (ks->e[i].tombstone)
                        continue;
                ks->e[n++] = ks->e[i];
                ks->info.value_bytes += ks->e[n - 1].value_len;
        }
        ks->n = n;
        ks->info.keys = n;
        if (n)
                qsort(ks->e, n, sizeof(*ks->e), cmp_kv);
        ks->info.revision =
            l.max_rev > ks->info.compact_revision ? l.max_rev : ks->info.compact_revision;
        kb_bbolt_bucket_free(&kb);
        *out = ks;
        return 0;
fail:
        free(l.table);
        kb_bbolt_bucket_free(&kb);
        kb_etcd_keyspace_free(ks);
        return rc;
}

void kb_etcd_keyspace_free(struct kb_etcd_keyspace *ks)
{
        if (!ks)
                return;
        while (ks->blocks) {
                struct arena_block *b = ks->blocks;

                ks->blocks = b->next;
                free(b);
        }
        free(ks->e);
        free(ks);
}

const struct kb_etcd_keyspace_info *kb_etcd_keyspace_info(const struct kb_etcd_keyspace *ks)
{
        return &ks->info;
}

size_t kb_etcd_keyspace_count(const struct kb_etcd_keyspace *ks)
{
        return ks->n;
}

const struct kb_etcd_entry *kb_etcd_keyspace_at(const struct kb_etcd_keyspace *ks, size_t i)
{
        return i < ks->n ? &ks->e[i] : NULL;
}

const struct kb_etcd_entry *kb_etcd_keyspace_find(const struct kb_etcd_keyspace *ks,
                                                  const void *key, size_t key_len)
{
        size_t lo = 0, hi = ks->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = cmp_kv_key(&ks->e[mid], key, key_len);

                if (c == 0)
                        return &ks->e[mid];
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

int kb_etcd_keyspace_value(struct kb_etcd_keyspace *ks, const struct kb_etcd_entry *kv,
                           struct kb_buf *out, struct kb_err *err)
{
        int rc = kb_buf_reserve(out, kv->value_len ? kv->value_len : 1);

        if (rc < 0)
                return kb_err_set(err, rc, "out of memory for a %u-byte value", kv->value_len);
        rc = kb_bbolt_read(ks->db, kv->value_off, out->data + out->len, kv->value_len, err);
        if (rc < 0)
                return rc;
        /* The source may be a file that changed since the scan. */
        if (hash64(out->data + out->len, kv->value_len, value_hash_key) != kv->value_hash)
                return kb_err_set(err, KB_ECORRUPT,
                                  "the value of an etcd key changed since the database was read");
        out->len += kv->value_len;
        return 0;
}

static int cmp_by_off(const void *x, const void *y, void *arg)
{
        const struct kb_etcd_keyspace *ks = arg;
        uint64_t a = ks->e[*(const uint32_t *)x].value_off;
        uint64_t b = ks->e[*(const uint32_t *)y].value_off;

        return a < b ? -1 : a > b;
}

int kb_etcd_keyspace_each(struct kb_etcd_keyspace *ks, int file_order, kb_etcd_entry_cb cb,
                          void *arg, struct kb_err *err)
{
        struct kb_buf v = KB_BUF_INIT;
        uint32_t *order = NULL;
        int rc = 0;

        if (file_order && ks->n) {
                order = malloc(ks->n * sizeof(*order));
                if (!order)
                        return kb_err_set(err, -ENOMEM, "out of memory");
                for (size_t i = 0; i < ks->n; i++)
                        order[i] = (uint32_t)i;
                qsort_r(order, ks->n, sizeof(*order), cmp_by_off, ks);
        }
        for (size_t i = 0; rc == 0 && i < ks->n; i++) {
                const struct kb_etcd_entry *kv = &ks->e[order ? order[i] : i];

                kb_buf_reset(&v);
                rc = kb_etcd_keyspace_value(ks, kv, &v, err);
                if (rc == 0)
                        rc = cb(kv, v.data ? v.data : (const uint8_t *)"", arg);
        }
        free(order);
        kb_buf_free(&v);
        return rc;
}

int kb_etcd_keyspace_diff(const struct kb_etcd_keyspace *a, const struct kb_etcd_keyspace *b,
                          kb_etcd_diff_cb cb, void *arg)
{
        size_t i = 0, j = 0;
        int rc = 0;

        while (rc == 0 && (i < a->n || j < b->n)) {
                int c;

                if (i == a->n)
                        c = 1;
                else if (j == b->n)
                        c = -1;
                else
                        c = cmp_kv(&a->e[i], &b->e[j]);
                if (c < 0) {
                        rc = cb('-', &a->e[i++], NULL, arg);
                } else if (c > 0) {
                        rc = cb('+', NULL, &b->e[j++], arg);
                } else {
                        if (a->e[i].value_len != b->e[j].value_len ||
                            a->e[i].value_hash != b->e[j].value_hash)
                                rc = cb('~', &a->e[i], &b->e[j], arg);
                        i++;
                        j++;
                }
        }
        return rc;
}
