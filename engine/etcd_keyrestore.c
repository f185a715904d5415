/* etcd_keyrestore.c - selected keys of a stored etcd snapshot into a live etcd, in conditional
 * Txn batches.
 *
 * One batch: a Txn comparing every key's mod_revision with 0 (absent) that puts them all when
 * every compare holds, and otherwise reads every key back in the same Txn (the failure branch).
 * On a fresh target that is one round trip per batch. When some keys exist, each is classified
 * (absent: to write; same value: already restored; other value: a conflict) and the keys still
 * to write go in another conditional Txn, compared against what was just observed, so a target
 * that changes meanwhile is noticed and the batch classified again instead of overwritten. */
#include "etcd_keyrestore.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bbolt.h"
#include "etcd_keyspace.h"

#define REGISTRY     "/registry/"
#define OP_OVERHEAD  48 /* protobuf framing of one compare + put + range, generously */
#define TXN_OVERHEAD 4096
#define MAX_ATTEMPTS 8
#define MAX_SEGMENTS 5

/* ---- selection ---- */

static int has_dot(const uint8_t *s, size_t n)
{
        return memchr(s, '.', n) != NULL;
}

static int seg_is(const uint8_t *s, size_t n, const char *lit)
{
        return n == strlen(lit) && !memcmp(s, lit, n);
}

int kb_k8s_key_namespace(const uint8_t *key, size_t len, const uint8_t **ns, size_t *ns_len)
{
        const uint8_t *seg[MAX_SEGMENTS];
        size_t sl[MAX_SEGMENTS], n = 0, rl = strlen(REGISTRY), i, start;
        int idx = -1;

        if (len <= rl || memcmp(key, REGISTRY, rl) != 0)
                return 0;
        /* Names never hold '/', so the segment count tells the layouts apart. */
        for (start = i = rl; i <= len; i++) {
                if (i < len && key[i] != '/')
                        continue;
                if (i == start || n == MAX_SEGMENTS)
                        return 0; /* an empty segment, or deeper than any layout we know */
                seg[n] = key + start;
                sl[n++] = i - start;
                start = i + 1;
        }
        if (n == 2 && seg_is(seg[0], sl[0], "namespaces"))
                idx = 1;
        else if (has_dot(seg[0], sl[0]))
                idx = n == 4 ? 2 : -1; /* GROUP/RESOURCE/NS/NAME; GROUP/RESOURCE/NAME is not */
        else if (seg_is(seg[0], sl[0], "services"))
                idx =
                    n == 4 && (seg_is(seg[1], sl[1], "specs") || seg_is(seg[1], sl[1], "endpoints"))
                        ? 2
                        : -1;
        else if (n == 3)
                idx = 1; /* RESOURCE/NS/NAME; RESOURCE/NAME is cluster-scoped */
        if (idx < 0)
                return 0;
        *ns = seg[idx];
        *ns_len = sl[idx];
        return 1;
}

static int starts_with(const uint8_t *key, size_t len, const char *p)
{
        size_t pl = strlen(p);

        return len >= pl && !memcmp(key, p, pl);
}

int kb_etcd_keyfilter_match(const struct kb_etcd_keyfilter *f, const uint8_t *key, size_t len)
{
        size_t i;
        int ok;

        if (!f)
                return 1;
        for (i = 0; i < f->n_excludes; i++)
                if (starts_with(key, len, f->excludes[i]))
                        return 0;
        if (f->n_prefixes) {
                for (ok = 0, i = 0; i < f->n_prefixes && !ok; i++)
                        ok = starts_with(key, len, f->prefixes[i]);
                if (!ok)
                        return 0;
        }
        if (f->n_namespaces) {
                const uint8_t *ns;
                size_t nl;

                if (!kb_k8s_key_namespace(key, len, &ns, &nl))
                        return 0;
                for (ok = 0, i = 0; i < f->n_namespaces && !ok; i++)
                        ok = nl == strlen(f->namespaces[i]) && !memcmp(ns, f->namespaces[i], nl);
                if (!ok)
                        return 0;
        }
        return 1;
}

/* ---- leases ---- */

struct lease {
        int64_t id, ttl, granted;
};

struct restore {
        const struct kb_etcd_keyrestore_opts *o;
        struct kb_etcd_keyrestore_result *res;
        struct kb_err *err;
        struct kb_etcd *c;
        struct lease *leases; /* from the snapshot's lease bucket, sorted by id */
        size_t n_leases, cap_leases;
        /* the batch being filled */
        struct kb_etcd_cas *items;
        int64_t *orig_lease;
        uint8_t *state;
        size_t n, bytes;
        /* the keys still to write in the current attempt: indexes into items */
        size_t *sub;
        struct kb_etcd_cas *sub_items;
        size_t n_sub;
        size_t stop_at; /* fail mode: the conflicting key, for the message */
        int conflict_stop;
        size_t max_ops, max_bytes;
        struct kb_progress prog;
        struct timespec last_prog;
};

enum { ST_WRITE, ST_SAME, ST_CONFLICT };

static int read_varint(const uint8_t *p, size_t n, size_t *pos, uint64_t *v)
{
        unsigned shift = 0;

        *v = 0;
        while (*pos < n && shift < 64) {
                uint8_t b = p[(*pos)++];

                *v |= (uint64_t)(b & 0x7f) << shift;
                if (!(b & 0x80))
                        return 0;
                shift += 7;
        }
        return -1;
}

static int lease_add(struct restore *r, int64_t id, int64_t ttl)
{
        if (r->n_leases == r->cap_leases) {
                size_t cap = r->cap_leases ? 2 * r->cap_leases : 64;
                struct lease *nl = realloc(r->leases, cap * sizeof(*nl));

                if (!nl)
                        return kb_err_sys(r->err, -ENOMEM, "lease table");
                r->leases = nl;
                r->cap_leases = cap;
        }
        r->leases[r->n_leases++] = (struct lease){.id = id, .ttl = ttl};
        return 0;
}

/* leasepb.Lease: ID = 1, TTL = 2 (int64 varints); other fields skipped. */
static int lease_item(const struct kb_bbolt_item *it, void *arg)
{
        struct restore *r = arg;
        size_t pos = 0;
        int64_t id = 0, ttl = 0;

        if (it->is_bucket)
                return 0;
        while (pos < it->value_len) {
                uint64_t tag, v;

                if (read_varint(it->value, it->value_len, &pos, &tag) < 0)
                        return 0; /* not a lease we understand: its keys get the default TTL */
                if ((tag & 7) == 0) {
                        if (read_varint(it->value, it->value_len, &pos, &v) < 0)
                                return 0;
                        if (tag >> 3 == 1)
                                id = (int64_t)v;
                        else if (tag >> 3 == 2)
                                ttl = (int64_t)v;
                } else if ((tag & 7) == 2) {
                        if (read_varint(it->value, it->value_len, &pos, &v) < 0 ||
                            v > it->value_len - pos)
                                return 0;
                        pos += v;
                } else {
                        return 0;
                }
        }
        if (!id || ttl <= 0)
                return 0;
        return lease_add(r, id, ttl);
}

static int lease_cmp(const void *a, const void *b)
{
        const struct lease *x = a, *y = b;

        return x->id < y->id ? -1 : x->id > y->id;
}

static int load_leases(struct restore *r, struct kb_bbolt *db)
{
        struct kb_bbolt_bucket b = KB_BBOLT_BUCKET_INIT;
        struct kb_err e = {0};
        int rc;

        rc = kb_bbolt_bucket_open(db, NULL, "lease", 5, &b, &e);
        if (rc == KB_ENOTFOUND)
                return 0; /* no lease was ever granted */
        if (rc < 0)
                return kb_err_set(r->err, rc, "%s", e.msg);
        rc = kb_bbolt_foreach(db, &b, KB_BBOLT_FILE_ORDER, lease_item, r, &e);
        kb_bbolt_bucket_free(&b);
        if (rc < 0)
                return r->err->code == rc ? rc : kb_err_set(r->err, rc, "%s", e.msg);
        if (r->n_leases) /* an empty bucket leaves the table NULL, which qsort must not get */
                qsort(r->leases, r->n_leases, sizeof(*r->leases), lease_cmp);
        return 0;
}

static struct lease *find_lease(struct restore *r, int64_t id)
{
        struct lease key = {.id = id};

        if (!r->n_leases)
                return NULL;
        return bsearch(&key, r->leases, r->n_leases, sizeof(key), lease_cmp);
}

/* The new lease for the original `id`, granted on first use. Leases the snapshot does not
 * describe get the default TTL (and are remembered, so their keys share one). */
static int lease_for(struct restore *r, int64_t id, int64_t *out)
{
        struct lease *l = find_lease(r, id);
        int64_t def =
            r->o->default_lease_ttl > 0 ? r->o->default_lease_ttl : KB_ETCD_DEFAULT_LEASE_TTL;
        int rc;

        if (!l) {
                rc = lease_add(r, id, def);
                if (rc < 0)
                        return rc;
                qsort(r->leases, r->n_leases, sizeof(*r->leases), lease_cmp);
                l = find_lease(r, id);
                if (r->o->warn) {
                        char m[160];

                        snprintf(m, sizeof(m),
                                 "lease %016llx is not in the snapshot's lease bucket: its keys "
                                 "get a lease of %llds",
                                 (unsigned long long)id, (long long)def);
                        r->o->warn(m, r->o->cb_arg);
                }
        }
        if (!l->granted) {
                if (r->o->dry_run) {
                        l->granted = -1;
                } else {
                        rc = kb_etcd_lease_grant(r->c, l->ttl, &l->granted, NULL, r->err);
                        if (rc)
                                return rc;
                }
                r->res->leases_granted++;
        }
        *out = l->granted > 0 ? l->granted : 0;
        return 0;
}

/* ---- batches ---- */

static void progress(struct restore *r, int last)
{
        struct timespec now;

        if (!r->o->progress)
                return;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!last && (now.tv_sec - r->last_prog.tv_sec) * 1000 +
                             (now.tv_nsec - r->last_prog.tv_nsec) / 1000000 <
                         250)
                return;
        r->last_prog = now;
        r->o->progress(&r->prog, r->o->cb_arg);
}

static void drop_batch(struct restore *r)
{
        for (size_t i = 0; i < r->n; i++)
                free((void *)r->items[i].key); /* key and value share one allocation */
        r->n = 0;
        r->bytes = 0;
}

static int classify(size_t i, const struct kb_etcd_kv *kv, void *arg)
{
        struct restore *r = arg;
        size_t k = r->sub[i];
        struct kb_etcd_cas *it = &r->items[k];

        if (!kv) {
                it->expect_mod = 0;
                r->state[k] = ST_WRITE;
        } else if (kv->vlen == it->vlen && (!kv->vlen || !memcmp(kv->val, it->val, kv->vlen))) {
                r->state[k] = ST_SAME;
        } else {
                it->expect_mod = kv->mod_rev;
                r->state[k] = ST_CONFLICT;
        }
        return 0;
}

static void key_text(const struct kb_etcd_cas *it, char *buf, size_t len)
{
        size_t n = it->klen < len - 1 ? it->klen : len - 1, j;

        for (j = 0; j < n; j++)
                buf[j] = it->key[j] >= 0x20 && it->key[j] < 0x7f ? (char)it->key[j] : '?';
        buf[n] = 0;
}

static int flush(struct restore *r)
{
        const struct kb_etcd_keyrestore_opts *o = r->o;
        size_t i, attempt;
        int rc = 0, ok;

        if (!r->n)
                return 0;
        for (i = 0; i < r->n; i++) {
                r->state[i] = ST_WRITE;
                r->items[i].expect_mod = 0;
                r->items[i].lease = 0;
                if (r->orig_lease[i] &&
                    (rc = lease_for(r, r->orig_lease[i], &r->items[i].lease)) != 0)
                        goto out;
        }
        for (attempt = 0;; attempt++) {
                uint64_t conflicts = 0;

                if (attempt == MAX_ATTEMPTS) {
                        rc = kb_err_set(r->err, -EAGAIN,
                                        "etcd %s: the target keeps changing the keys being "
                                        "restored; gave up after %d attempts",
                                        r->res->endpoint, MAX_ATTEMPTS);
                        goto out;
                }
                r->n_sub = 0;
                for (i = 0; i < r->n; i++) {
                        if (r->state[i] == ST_WRITE || (r->state[i] == ST_CONFLICT &&
                                                        o->on_conflict == KB_CONFLICT_OVERWRITE)) {
                                r->sub[r->n_sub] = i;
                                r->sub_items[r->n_sub++] = r->items[i];
                        }
                        if (r->state[i] == ST_CONFLICT)
                                conflicts++;
                }
                if (conflicts && o->on_conflict == KB_CONFLICT_FAIL) {
                        r->res->conflicts += conflicts;
                        for (i = 0; i < r->n && r->state[i] != ST_CONFLICT; i++)
                                ;
                        if (!r->conflict_stop) {
                                char k[200];

                                key_text(&r->items[i], k, sizeof(k));
                                kb_err_set(r->err, -EEXIST,
                                           "%s exists in the target with another value (and %llu "
                                           "more in its batch): %s",
                                           k, (unsigned long long)(conflicts - 1),
                                           o->dry_run ? "a real run would stop there"
                                                      : "stopped; nothing of its batch of keys "
                                                        "was written");
                        }
                        r->conflict_stop = 1;
                        for (i = 0; i < r->n; i++)
                                if (r->state[i] == ST_SAME)
                                        r->res->skipped++;
                        rc = o->dry_run ? 0 : -EEXIST;
                        goto out;
                }
                if (!r->n_sub) {
                        ok = 1;
                } else {
                        r->res->txns++;
                        rc = kb_etcd_txn_cas(r->c, r->sub_items, r->n_sub, !o->dry_run, &ok,
                                             classify, r, r->err);
                        if (rc)
                                goto out;
                }
                if (!ok)
                        continue;
                for (i = 0; i < r->n; i++) {
                        if (r->state[i] == ST_SAME) {
                                r->res->skipped++;
                        } else if (r->state[i] == ST_CONFLICT) {
                                r->res->conflicts++;
                                if (o->on_conflict == KB_CONFLICT_OVERWRITE)
                                        r->res->overwritten++;
                        }
                }
                for (i = 0; i < r->n_sub; i++) {
                        r->res->written++;
                        r->res->bytes_written += r->sub_items[i].klen + r->sub_items[i].vlen;
                }
                break;
        }
out:
        drop_batch(r);
        return rc;
}

static int add_key(const struct kb_etcd_entry *kv, const uint8_t *value, void *arg)
{
        struct restore *r = arg;
        const struct kb_etcd_keyrestore_opts *o = r->o;
        size_t need = 3 * (size_t)kv->key_len + kv->value_len + OP_OVERHEAD;
        uint8_t *copy;
        int rc;

        if (!kb_etcd_keyfilter_match(&o->filter, kv->key, kv->key_len))
                return 0;
        r->prog.files_done++;
        r->prog.bytes_done += kv->key_len + kv->value_len;
        progress(r, 0);
        if (kv->lease && !o->include_leased) {
                r->res->leased_skipped++;
                return 0;
        }
        if (need + TXN_OVERHEAD > r->max_bytes) {
                char k[200], m[320];
                struct kb_etcd_cas tmp = {.key = kv->key, .klen = kv->key_len};

                key_text(&tmp, k, sizeof(k));
                snprintf(m, sizeof(m),
                         "%s: a value of %u bytes does not fit in a request of %zu bytes "
                         "(the target's --max-request-bytes): not restored",
                         k, kv->value_len, r->max_bytes);
                if (o->warn)
                        o->warn(m, o->cb_arg);
                r->res->failed++;
                return 0;
        }
        if (r->n == r->max_ops || r->bytes + need + TXN_OVERHEAD > r->max_bytes) {
                rc = flush(r);
                if (rc)
                        return rc;
        }
        copy = malloc((size_t)kv->key_len + kv->value_len + 1);
        if (!copy)
                return kb_err_sys(r->err, -ENOMEM, "etcd restore batch");
        memcpy(copy, kv->key, kv->key_len);
        if (kv->value_len)
                memcpy(copy + kv->key_len, value, kv->value_len);
        r->items[r->n] = (struct kb_etcd_cas){
            .key = copy, .klen = kv->key_len, .val = copy + kv->key_len, .vlen = kv->value_len};
        r->orig_lease[r->n] = kv->lease;
        r->n++;
        r->bytes += need;
        return 0;
}

static int connect_any(struct restore *r)
{
        const struct kb_etcd_keyrestore_opts *o = r->o;
        struct kb_err e = {0};
        int rc = KB_EUSAGE;

        if (!o->n_endpoints)
                return kb_err_set(r->err, KB_EUSAGE, "no etcd endpoint to restore into");
        for (size_t i = 0; i < o->n_endpoints; i++) {
                kb_err_clear(&e);
                rc = kb_etcd_connect(o->endpoints[i], &o->conn, &r->c, &e);
                if (!rc) {
                        snprintf(r->res->endpoint, sizeof(r->res->endpoint), "%s", o->endpoints[i]);
                        return 0;
                }
                if (o->warn && i + 1 < o->n_endpoints)
                        o->warn(e.msg, o->cb_arg);
        }
        return kb_err_set(r->err, rc, "%s", e.msg);
}

static double elapsed(const struct timespec *t0)
{
        struct timespec t;

        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

int kb_etcd_keyrestore(struct kb_repo *repo, const Kbackup__Snapshot *snap,
                       const struct kb_etcd_keyrestore_opts *opts,
                       struct kb_etcd_keyrestore_result *res, struct kb_err *err)
{
        struct restore r = {.o = opts, .res = res, .err = err};
        struct kb_bbolt *db = NULL;
        struct kb_etcd_keyspace *ks = NULL;
        struct timespec t0;
        size_t i, n;
        int rc;

        memset(res, 0, sizeof(*res));
        clock_gettime(CLOCK_MONOTONIC, &t0);
        r.max_ops = opts->max_txn_ops ? opts->max_txn_ops : KB_ETCD_DEFAULT_TXN_OPS;
        r.max_bytes =
            opts->max_request_bytes ? opts->max_request_bytes : KB_ETCD_DEFAULT_REQUEST_BYTES;
        if (r.max_bytes < 2 * TXN_OVERHEAD)
                return kb_err_set(err, KB_EUSAGE, "a request size limit of %zu bytes is too small",
                                  r.max_bytes);
        r.items = calloc(r.max_ops, sizeof(*r.items));
        r.sub_items = calloc(r.max_ops, sizeof(*r.sub_items));
        r.orig_lease = calloc(r.max_ops, sizeof(*r.orig_lease));
        r.sub = calloc(r.max_ops, sizeof(*r.sub));
        r.state = calloc(r.max_ops, 1);
        if (!r.items || !r.sub_items || !r.orig_lease || !r.sub || !r.state) {
                rc = kb_err_sys(err, -ENOMEM, "etcd restore");
                goto out;
        }
        rc = kb_etcd_snapshot_db_open(repo, snap, &db, err);
        if (rc)
                goto out;
        rc = kb_etcd_keyspace_load(db, NULL, 0, &ks, err);
        if (rc)
                goto out;
        res->revision = kb_etcd_keyspace_info(ks)->revision;
        n = kb_etcd_keyspace_count(ks);
        res->keys_total = n;
        for (i = 0; i < n; i++) {
                const struct kb_etcd_entry *e = kb_etcd_keyspace_at(ks, i);

                if (kb_etcd_keyfilter_match(&opts->filter, e->key, e->key_len)) {
                        res->selected++;
                        r.prog.files_total++;
                        r.prog.bytes_total += e->key_len + e->value_len;
                }
        }
        if (opts->include_leased && (rc = load_leases(&r, db)) != 0)
                goto out;
        rc = connect_any(&r);
        if (rc)
                goto out;
        /* Key order: batches are runs of consecutive keys, so what a stopped restore wrote is a
         * prefix of the selection. */
        rc = kb_etcd_keyspace_each(ks, 0, add_key, &r, err);
        if (!rc)
                rc = flush(&r);
        if (!rc && r.conflict_stop)
                rc = -EEXIST; /* dry run: err already says what a real run would do */
        if (!rc && res->failed)
                rc = kb_err_set(err, KB_EPARTIAL, "%llu key(s) too large to restore",
                                (unsigned long long)res->failed);
        progress(&r, 1);
out:
        drop_batch(&r);
        if (r.c)
                kb_etcd_close(r.c);
        kb_etcd_keyspace_free(ks);
        if (db)
                kb_bbolt_close(db);
        free(r.items);
        free(r.sub_items);
        free(r.orig_lease);
        free(r.sub);
        free(r.state);
        free(r.leases);
        res->duration_sec = elapsed(&t0);
        return rc;
}
