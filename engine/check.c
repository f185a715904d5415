/* check.c - verify a repository's structure and, on request, its data; then name the snapshots
 * and files that any damage affects. See check.h.
 *
 * Entry marks during a check: LIVE (a snapshot reaches it), DAMAGED (its pack is missing, its
 * header disagrees, or its bytes do not verify) and SEEN (found in its pack's header). */
#include "check.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cpus.h"
#include "maint.h"
#include "prefetch.h"

#define M_LIVE    KB_MARK_LIVE
#define M_DAMAGED 2
#define M_SEEN    4

#define MAX_LINES_PER_SNAP 50

struct cctx {
        struct kb_repo *r;
        const struct kb_check_opts *o;
        struct kb_check_result *res;
        struct kb_err *err;
        struct kb_maint_packs packs;
        struct kb_snapshot_list snaps;
        struct kb_idmap missing;   /* ids snapshots use that no index has */
        struct kb_idmap bad_trees; /* trees that do not load */
        struct kb_idmap clean;     /* trees with nothing damaged below (affected-files pass) */
        int damage;
        /* Reading packs runs on several threads: this serializes messages, counters, progress. */
        pthread_mutex_t lock;
};

static void say(struct cctx *c, int is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(struct cctx *c, int is_error, const char *fmt, ...)
{
        char msg[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&c->lock);
        if (is_error)
                c->res->errors++;
        if (c->o->report)
                c->o->report(is_error, msg, c->o->arg);
        pthread_mutex_unlock(&c->lock);
}

static void progress(struct cctx *c, const char *phase, uint64_t done, uint64_t total)
{
        if (c->o->progress)
                c->o->progress(phase, done, total, c->o->arg);
}

static const char *blob_kind(uint8_t type)
{
        return type == KB_BLOB_TREE ? "directory record" : "chunk";
}

/* ---- index files ---- */

static int load_index_file(const char *name, int rc, struct kb_buf *plain,
                           const struct kb_err *ferr, void *arg)
{
        struct cctx *c = arg;
        struct kb_err e = {0};

        c->res->index_files++;
        if (rc == 0)
                rc = kb_repo_index_apply(c->r, name, plain, &e);
        else
                kb_err_set(&e, rc, "index %.16s: %s", name, ferr->msg);
        if (rc == -ENOMEM)
                return kb_err_set(c->err, rc, "out of memory loading the index");
        if (rc < 0)
                say(c, 1, "%s", e.msg); /* names the index file */
        return 0;
}

static int load_index(struct cctx *c)
{
        struct kb_index *fresh;
        int rc = kb_index_new(&fresh);

        if (rc < 0)
                return kb_err_set(c->err, rc, "out of memory");
        kb_index_free(c->r->index);
        c->r->index = fresh;
        c->r->n_index_names = 0;
        return kb_repo_object_each(c->r, KB_OBJ_INDEX, load_index_file, c, c->err);
}

/* ---- pack structure ---- */

/* Entries of pack `no` the header did not list (or every entry of it): their location is
 * unknown, so what they hold counts as damaged. */
static void damage_unseen(struct cctx *c, uint32_t no)
{
        struct kb_index_entry *e;
        size_t pos = 0;

        while ((e = (struct kb_index_entry *)kb_index_next(c->r->index, &pos)) != NULL)
                if (e->pack == no && !(e->mark & M_SEEN))
                        e->mark |= M_DAMAGED;
}

static void compare_header(struct cctx *c, struct kb_maint_pack *mp, const char *hex,
                           const Kbackup__PackHeader *ph, uint32_t hlen)
{
        uint64_t end = 0, seen = 0;

        for (size_t i = 0; i < ph->n_blobs; i++) {
                const Kbackup__IndexBlob *b = ph->blobs[i];
                struct kb_index_entry *e;

                if (b->id.len != KB_ID_LEN) {
                        say(c, 1, "pack %s: its header lists an invalid id", hex);
                        continue;
                }
                if ((uint64_t)b->offset + b->length > end)
                        end = (uint64_t)b->offset + b->length;
                e = kb_index_lookup_mut(c->r->index, b->id.data);
                if (!e || e->pack != mp->no)
                        continue; /* a duplicate the index locates elsewhere, or unused */
                if (e->offset != b->offset || e->length != b->length ||
                    e->raw_length != b->raw_length || e->type != (uint8_t)b->type) {
                        char bid[KB_ID_HEX_LEN + 1];

                        kb_hex_encode(e->id, KB_ID_LEN, bid);
                        say(c, 1,
                            "pack %s: %s %.16s: the index says offset %u length %u, the pack "
                            "header offset %u length %u",
                            hex, blob_kind(e->type), bid, e->offset, e->length, b->offset,
                            b->length);
                        e->mark |= M_DAMAGED;
                }
                e->mark |= M_SEEN;
                seen++;
        }
        if (end + hlen + 4 != (uint64_t)mp->size)
                say(c, 1, "pack %s: it has %lld bytes, its header accounts for %llu", hex,
                    (long long)mp->size, (unsigned long long)(end + hlen + 4));
        if (seen < mp->nblobs) {
                say(c, 1, "pack %s: %llu indexed blob(s) are not in its header", hex,
                    (unsigned long long)(mp->nblobs - seen));
                damage_unseen(c, mp->no);
        }
}

/* Every pack's tail (length word and sealed header), read a few at a time (a round trip each
 * over S3) and compared with the index in listing order. */
struct header_slot {
        Kbackup__PackHeader *ph;
        uint32_t hlen;
        int rc;
        struct kb_err err;
};

struct header_run {
        struct cctx *c;
        struct header_slot *slots;
};

static void fetch_header(size_t i, void *arg)
{
        struct header_run *h = arg;
        struct kb_maint_pack *mp = &h->c->packs.v[i];
        struct header_slot *s = &h->slots[i];
        char hex[KB_ID_HEX_LEN + 1];

        if (mp->size < 0)
                return; /* missing */
        kb_hex_encode(mp->id, KB_ID_LEN, hex);
        s->rc = kb_pack_header_read(h->c->r, hex, (uint64_t)mp->size, &s->ph, &s->hlen, &s->err);
}

static int use_header(size_t i, void *arg)
{
        struct header_run *h = arg;
        struct cctx *c = h->c;
        struct kb_maint_pack *mp = &c->packs.v[i];
        struct header_slot *s = &h->slots[i];
        char hex[KB_ID_HEX_LEN + 1];
        int rc = 0;

        kb_hex_encode(mp->id, KB_ID_LEN, hex);
        if (mp->size < 0)
                say(c, 1, "pack %s is missing (%u indexed blob(s))", hex, mp->nblobs);
        else if (s->rc == -ENOMEM)
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
        else if (s->rc < 0)
                say(c, 1, "pack %s: %s", hex, s->err.msg);
        else
                compare_header(c, mp, hex, s->ph, s->hlen);
        if (s->ph)
                kbackup__pack_header__free_unpacked(s->ph, NULL);
        s->ph = NULL;
        progress(c, "packs", i + 1, c->packs.n);
        return rc;
}

static int check_packs(struct cctx *c)
{
        struct kb_maint_packs *p = &c->packs;
        struct header_run h = {c, NULL};
        struct kb_index_entry *e;
        size_t pos = 0;
        int rc = 0;

        if (p->n && !(h.slots = calloc(p->n, sizeof(*h.slots))))
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        rc = kb_prefetch_run(p->n, KB_PREFETCH_THREADS, KB_PREFETCH_AHEAD, fetch_header, use_header,
                             &h);
        for (size_t i = 0; i < p->n; i++) /* read ahead of a failure */
                if (h.slots[i].ph)
                        kbackup__pack_header__free_unpacked(h.slots[i].ph, NULL);
        free(h.slots);
        if (rc < 0)
                return rc;
        while ((e = (struct kb_index_entry *)kb_index_next(c->r->index, &pos)) != NULL) {
                struct kb_maint_pack *mp = kb_maint_pack_of(p, e->pack);

                if (!mp || mp->size < 0)
                        e->mark |= M_DAMAGED;
        }
        for (size_t i = 0; i < p->nextra; i++) {
                c->res->leftover_packs++;
                c->res->leftover_bytes += p->extra[i].size;
        }
        if (p->nextra)
                say(c, 0,
                    "%llu pack(s) (%llu bytes) are in no index: leftovers of interrupted backups "
                    "or prunes, not used by any snapshot; 'kbackup prune' removes them",
                    (unsigned long long)c->res->leftover_packs,
                    (unsigned long long)c->res->leftover_bytes);
        return rc;
}

/* ---- snapshots and trees ---- */

struct snap_names {
        struct cctx *c;
        size_t cap;
};

static int load_snapshot(const char *name, int rc, struct kb_buf *plain, const struct kb_err *ferr,
                         void *arg)
{
        struct snap_names *sn = arg;
        struct cctx *c = sn->c;
        struct kb_snapshot_list *l = &c->snaps;
        Kbackup__Snapshot *s = NULL;
        struct kb_err e = {0};

        if (rc == KB_ENOTFOUND)
                return 0; /* forgotten meanwhile */
        if (rc == 0)
                rc = kb_repo_snapshot_parse(name, plain, &s, &e);
        else
                kb_err_set(&e, rc, "snapshot %.16s: %s", name, ferr->msg);
        if (rc == -ENOMEM)
                return kb_err_set(c->err, rc, "out of memory");
        if (rc < 0) {
                say(c, 1, "%s", e.msg);
                c->res->damaged_snapshots++;
                return 0;
        }
        if (kb_snapshot_list_add(l, &sn->cap, name, s) < 0) {
                kbackup__snapshot__free_unpacked(s, NULL);
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        }
        return 0;
}

static void on_missing(void *arg, const uint8_t id[KB_ID_LEN], int is_tree, size_t snap)
{
        struct cctx *c = arg;
        char hex[KB_ID_HEX_LEN + 1];

        c->damage = 1;
        if (kb_idmap_get(&c->missing, id, NULL))
                return;
        if (kb_idmap_put(&c->missing, id, (uint64_t)is_tree) < 0)
                return;
        kb_hex_encode(id, KB_ID_LEN, hex);
        say(c, 1, "%s %.16s is used by snapshot %.8s but is in no index",
            is_tree ? "directory record" : "chunk", hex, c->snaps.items[snap].id);
}

static void on_bad_tree(void *arg, const uint8_t id[KB_ID_LEN], size_t snap,
                        const struct kb_err *why)
{
        struct cctx *c = arg;
        char hex[KB_ID_HEX_LEN + 1];

        c->damage = 1;
        kb_idmap_put(&c->bad_trees, id, 0);
        kb_hex_encode(id, KB_ID_LEN, hex);
        say(c, 1, "snapshot %.8s: directory record %.16s does not load: %s",
            c->snaps.items[snap].id, hex, why->msg);
}

/* ---- reading data ---- */

static void pick_packs(struct cctx *c, size_t *sel, size_t *nsel)
{
        size_t n = 0, want;

        for (size_t i = 0; i < c->packs.n; i++)
                if (c->packs.v[i].size >= 0)
                        sel[n++] = i;
        if (c->o->read_data || c->o->read_subset_pct >= 100) {
                *nsel = n;
                return;
        }
        want = (n * c->o->read_subset_pct + 99) / 100;
        /* A partial Fisher-Yates shuffle: the first `want` are a uniform random subset. */
        for (size_t i = 0; i < want; i++) {
                size_t j = i + randombytes_uniform((uint32_t)(n - i));
                size_t t = sel[i];

                sel[i] = sel[j];
                sel[j] = t;
        }
        *nsel = want;
}

static void verify_blob(struct cctx *c, const char *hex, const struct kb_buf *data,
                        struct kb_index_entry *e, struct kb_buf *plain)
{
        char bid[KB_ID_HEX_LEN + 1];
        struct kb_err why = {0};
        const char *msg;

        kb_hex_encode(e->id, KB_ID_LEN, bid);
        kb_buf_reset(plain);
        if ((uint64_t)e->offset + e->length > data->len)
                kb_err_set(&why, KB_ECORRUPT, "it lies beyond the end of the pack");
        else if (kb_repo_blob_decode(c->r, e->id, data->data + e->offset, e->length, e->raw_length,
                                     1, plain, &why) == 0)
                return;
        e->mark |= M_DAMAGED;
        /* The decoder's message starts with "chunk <id>: "; we name the blob ourselves. */
        msg = why.msg;
        if (!strncmp(msg, "chunk ", 6) && strlen(msg) > 6 + 16 + 2 && msg[6 + 16] == ':')
                msg += 6 + 16 + 2;
        say(c, 1, "pack %s: %s %.16s (%u bytes at offset %u) is damaged: %s%s", hex,
            blob_kind(e->type), bid, e->length, e->offset, msg,
            (e->mark & M_LIVE) ? "" : " (no snapshot uses it; prune removes it)");
}

/* The selected packs and their index entries, shared by the reading threads. */
struct readjob {
        struct cctx *c;
        size_t *sel, nsel, next, done;
        size_t *start, *fill;
        struct kb_index_entry **ents;
};

/* Read one pack whole, check its name, then open every blob the index places in it. */
static void read_one_pack(struct readjob *j, size_t s, struct kb_buf *data, struct kb_buf *plain)
{
        struct cctx *c = j->c;
        struct kb_maint_pack *mp = &c->packs.v[j->sel[s]];
        char hex[KB_ID_HEX_LEN + 1];
        uint8_t id[KB_ID_LEN];
        struct kb_err e2 = {0};
        int damaged = 0;

        kb_hex_encode(mp->id, KB_ID_LEN, hex);
        kb_buf_reset(data);
        if (kb_backend_get(c->r->be, KB_OBJ_PACK, hex, 0, 0, data, &e2) < 0) {
                say(c, 1, "pack %s: cannot read it: %s", hex, e2.msg);
                return;
        }
        kb_crypto_object_id(data->data, data->len, id);
        if (memcmp(id, mp->id, KB_ID_LEN) != 0)
                say(c, 1, "pack %s: its content does not match its name (damaged)", hex);
        for (size_t i = j->start[j->sel[s]]; i < j->start[j->sel[s]] + j->fill[j->sel[s]]; i++) {
                verify_blob(c, hex, data, j->ents[i], plain);
                damaged |= (j->ents[i]->mark & (M_DAMAGED | M_LIVE)) == (M_DAMAGED | M_LIVE);
        }
        pthread_mutex_lock(&c->lock);
        c->res->packs_read++;
        c->res->bytes_read += data->len;
        if (damaged)
                c->damage = 1;
        pthread_mutex_unlock(&c->lock);
}

/* A reading thread: packs are taken in order, one at a time, so each thread holds one pack. */
static void *read_worker(void *arg)
{
        struct readjob *j = arg;
        struct cctx *c = j->c;
        struct kb_buf data = KB_BUF_INIT, plain = KB_BUF_INIT;

        for (;;) {
                size_t s, done;

                pthread_mutex_lock(&c->lock);
                s = j->next++;
                pthread_mutex_unlock(&c->lock);
                if (s >= j->nsel)
                        break;
                read_one_pack(j, s, &data, &plain);
                pthread_mutex_lock(&c->lock);
                done = ++j->done;
                progress(c, "read", done, j->nsel);
                pthread_mutex_unlock(&c->lock);
        }
        kb_buf_free(&data);
        kb_buf_free(&plain);
        kb_repo_zstd_release_thread(c->r);
        return NULL;
}

/* Check reads are CPU-bound (hash, decrypt, decompress, hash again): one thread per core. */
#define CHECK_MAX_THREADS 16

static void run_readers(struct readjob *j)
{
        pthread_t t[CHECK_MAX_THREADS];
        size_t want = kb_cpus_available(), n = 0;

        if (want > CHECK_MAX_THREADS)
                want = CHECK_MAX_THREADS;
        if (want > j->nsel)
                want = j->nsel;
        while (n + 1 < want && pthread_create(&t[n], NULL, read_worker, j) == 0)
                n++;
        read_worker(j); /* this thread is a reader too */
        while (n)
                pthread_join(t[--n], NULL);
}

static int read_packs(struct cctx *c)
{
        struct kb_maint_packs *p = &c->packs;
        size_t *sel = NULL, nsel = 0, *start = NULL, *fill = NULL, total = 0, pos = 0;
        struct kb_index_entry **ents = NULL, *e;
        struct readjob j = {0};
        int rc = 0;

        if (!c->o->read_data && !c->o->read_subset_pct)
                return 0;
        sel = malloc((p->n ? p->n : 1) * sizeof(*sel));
        start = calloc(p->n + 1, sizeof(*start));
        fill = calloc(p->n + 1, sizeof(*fill));
        if (!sel || !start || !fill) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                goto out;
        }
        for (size_t i = 0; i < p->n; i++) {
                start[i] = total;
                total += p->v[i].nblobs;
        }
        ents = malloc((total ? total : 1) * sizeof(*ents));
        if (!ents) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                goto out;
        }
        while ((e = (struct kb_index_entry *)kb_index_next(c->r->index, &pos)) != NULL) {
                struct kb_maint_pack *mp = kb_maint_pack_of(p, e->pack);

                if (mp) {
                        size_t k = (size_t)(mp - p->v);

                        ents[start[k] + fill[k]++] = e;
                }
        }
        pick_packs(c, sel, &nsel);
        j.c = c;
        j.sel = sel;
        j.nsel = nsel;
        j.start = start;
        j.fill = fill;
        j.ents = ents;
        run_readers(&j);
out:
        free(sel);
        free(start);
        free(fill);
        free(ents);
        return rc;
}

/* ---- which snapshots and files the damage reaches ---- */

struct path {
        char *s;
        size_t len, cap;
};

/* Append "/name" (or "name" at the top), escaping bytes a terminal would act on. */
static int path_push(struct path *p, const ProtobufCBinaryData *name, size_t *saved)
{
        size_t need = p->len + 1 + name->len * 4 + 1;

        *saved = p->len;
        if (need > p->cap) {
                size_t cap = need * 2;
                char *s = realloc(p->s, cap);

                if (!s)
                        return -ENOMEM;
                p->s = s;
                p->cap = cap;
        }
        if (p->len)
                p->s[p->len++] = '/';
        for (size_t i = 0; i < name->len; i++) {
                unsigned char ch = name->data[i];

                if (ch < 0x20 || ch == 0x7f || ch == '\\')
                        p->len += (size_t)sprintf(p->s + p->len, "\\x%02x", ch);
                else
                        p->s[p->len++] = (char)ch;
        }
        p->s[p->len] = '\0';
        return 0;
}

struct affect {
        struct cctx *c;
        size_t snap;
        uint64_t items, lines;
        struct path path;
};

static int is_damaged(struct cctx *c, const uint8_t *id, int is_tree)
{
        const struct kb_index_entry *e;

        if (kb_idmap_get(&c->missing, id, NULL))
                return 1;
        if (is_tree && kb_idmap_get(&c->bad_trees, id, NULL))
                return 1;
        e = kb_index_lookup(c->r->index, id);
        return e && (e->mark & M_DAMAGED);
}

static void affected(struct affect *a, const char *what)
{
        a->items++;
        if (++a->lines <= MAX_LINES_PER_SNAP)
                say(a->c, 0, "  snapshot %.8s: %s: %s", a->c->snaps.items[a->snap].id,
                    a->path.len ? a->path.s : "(root)", what);
}

/* 1 when something below `id` is damaged, 0 when all is well, negative on a fatal error. */
static int walk_affected(struct affect *a, const uint8_t *id)
{
        struct cctx *c = a->c;
        Kbackup__Tree *t = NULL;
        struct kb_err why = {0};
        int found = 0;

        if (kb_idmap_get(&c->clean, id, NULL))
                return 0;
        if (is_damaged(c, id, 1) || kb_repo_tree_load(c->r, id, &t, &why) < 0) {
                affected(a, "directory record lost: everything below it is missing");
                return 1;
        }
        for (size_t i = 0; i < t->n_nodes && found >= 0; i++) {
                const Kbackup__Node *n = t->nodes[i];
                size_t saved, bad = 0;

                if (path_push(&a->path, &n->name, &saved) < 0) {
                        found = kb_err_set(c->err, -ENOMEM, "out of memory");
                        break;
                }
                for (size_t j = 0; j < n->n_content; j++)
                        if (n->content[j].len != KB_ID_LEN || is_damaged(c, n->content[j].data, 0))
                                bad++;
                if (bad) {
                        char what[96];

                        snprintf(what, sizeof(what), "%zu of %zu chunk(s) damaged or missing", bad,
                                 n->n_content);
                        affected(a, what);
                        found = 1;
                }
                if (n->subtree.len == KB_ID_LEN) {
                        int r = walk_affected(a, n->subtree.data);

                        if (r < 0)
                                found = r;
                        else if (r > 0)
                                found = 1;
                }
                a->path.len = saved;
                if (a->path.s)
                        a->path.s[saved] = '\0';
        }
        kb_repo_tree_free(t);
        if (found == 0 && kb_idmap_put(&c->clean, id, 0) < 0)
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        return found;
}

static int report_affected(struct cctx *c)
{
        struct affect a = {.c = c};
        int rc = 0;

        for (size_t s = 0; s < c->snaps.count && rc >= 0; s++) {
                const Kbackup__Snapshot *snap = c->snaps.items[s].snap;
                time_t t = (time_t)(snap->time_unix_nsec / 1000000000);
                char when[32] = "?";
                struct tm tm;

                a.snap = s;
                a.items = a.lines = 0;
                a.path.len = 0;
                if (snap->tree.len != KB_ID_LEN) {
                        affected(&a, "the snapshot names no root directory");
                        rc = 1;
                } else {
                        rc = walk_affected(&a, snap->tree.data);
                }
                if (rc <= 0)
                        continue;
                if (gmtime_r(&t, &tm))
                        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
                c->res->damaged_snapshots++;
                if (a.lines > MAX_LINES_PER_SNAP)
                        say(c, 0, "  snapshot %.8s: ... and %llu more", c->snaps.items[s].id,
                            (unsigned long long)(a.lines - MAX_LINES_PER_SNAP));
                say(c, 1,
                    "snapshot %s (%s %s, host %s, %s) is damaged: %llu file(s) or "
                    "directories affected",
                    c->snaps.items[s].id, snap->kind,
                    snap->name[0] ? snap->name : snap->source_path, snap->host, when,
                    (unsigned long long)a.items);
        }
        free(a.path.s);
        return rc < 0 ? rc : 0;
}

int kb_check(struct kb_repo *r, const struct kb_check_opts *o, struct kb_check_result *res,
             struct kb_err *err)
{
        struct cctx c = {.r = r, .o = o, .res = res, .err = err};
        struct kb_mark_cb cb = {on_missing, on_bad_tree, &c};
        struct snap_names sn = {&c, 0};
        const struct kb_index_entry *e;
        size_t pos = 0;
        int rc;

        memset(res, 0, sizeof(*res));
        pthread_mutex_init(&c.lock, NULL);
        /* Snapshots before the index, and the index before the packs: each is written after
         * what it names, so a backup finishing meanwhile cannot make a sound repository look
         * damaged (at worst its new packs show up as leftovers). */
        rc = kb_repo_object_each(r, KB_OBJ_SNAPSHOT, load_snapshot, &sn, err);
        if (rc == 0) {
                kb_snapshot_list_sort(&c.snaps);
                res->snapshots = c.snaps.count;
                rc = load_index(&c);
        }
        if (rc == 0)
                rc = kb_maint_packs_build(r, &c.packs, err);
        if (rc == 0) {
                res->packs = c.packs.n;
                res->blobs = kb_index_count(r->index);
                rc = check_packs(&c);
        }
        if (rc == 0)
                rc = kb_maint_mark(r, &c.snaps, SIZE_MAX, &cb, err);
        if (rc == 0) {
                /* Damage found so far in live blobs (missing packs, header disagreements). */
                while ((e = kb_index_next(r->index, &pos)) != NULL) {
                        if (e->mark & M_LIVE && e->type == KB_BLOB_TREE)
                                res->trees++;
                        if ((e->mark & (M_LIVE | M_DAMAGED)) == (M_LIVE | M_DAMAGED))
                                c.damage = 1;
                }
                rc = read_packs(&c);
        }
        if (rc == 0 && c.damage)
                rc = report_affected(&c);
        kb_maint_clear_marks(r);
        kb_maint_packs_free(&c.packs);
        kb_snapshot_list_free(&c.snaps);
        kb_idmap_free(&c.missing);
        kb_idmap_free(&c.bad_trees);
        kb_idmap_free(&c.clean);
        pthread_mutex_destroy(&c.lock);
        return rc;
}
