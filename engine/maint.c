/* maint.c - shared machinery of check, prune and stats: id map, canonical pack table matched
 * with the backend's listing, and marking reachable blobs. See maint.h. */
#include "maint.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "prefetch.h"

/* ---- id map ---- */

struct kb_idmap_slot {
        uint8_t id[KB_ID_LEN];
        uint64_t value;
        uint8_t used;
};

static size_t idslot(const uint8_t id[KB_ID_LEN], size_t mask)
{
        uint64_t h;

        memcpy(&h, id, sizeof(h)); /* ids are hashes: their bytes are already uniform */
        return (size_t)h & mask;
}

static struct kb_idmap_slot *idfind(struct kb_idmap_slot *s, size_t n, const uint8_t *id)
{
        size_t mask = n - 1, i = idslot(id, mask);

        while (s[i].used && memcmp(s[i].id, id, KB_ID_LEN) != 0)
                i = (i + 1) & mask;
        return &s[i];
}

int kb_idmap_put(struct kb_idmap *m, const uint8_t id[KB_ID_LEN], uint64_t value)
{
        struct kb_idmap_slot *slot;

        if ((m->count + 1) * 4 > m->nslots * 3) {
                size_t n = m->nslots ? m->nslots * 2 : 256;
                struct kb_idmap_slot *s = calloc(n, sizeof(*s));

                if (!s)
                        return -ENOMEM;
                for (size_t i = 0; i < m->nslots; i++)
                        if (m->slots[i].used)
                                *idfind(s, n, m->slots[i].id) = m->slots[i];
                free(m->slots);
                m->slots = s;
                m->nslots = n;
        }
        slot = idfind(m->slots, m->nslots, id);
        if (!slot->used) {
                memcpy(slot->id, id, KB_ID_LEN);
                slot->used = 1;
                m->count++;
        }
        slot->value = value;
        return 0;
}

int kb_idmap_get(const struct kb_idmap *m, const uint8_t id[KB_ID_LEN], uint64_t *value)
{
        struct kb_idmap_slot *slot;

        if (!m->nslots)
                return 0;
        slot = idfind(m->slots, m->nslots, id);
        if (!slot->used)
                return 0;
        if (value)
                *value = slot->value;
        return 1;
}

void kb_idmap_free(struct kb_idmap *m)
{
        free(m->slots);
        memset(m, 0, sizeof(*m));
}

/* ---- packs ---- */

struct numbered {
        uint8_t id[KB_ID_LEN];
        uint32_t no;
};

static int by_id_then_no(const void *a, const void *b)
{
        const struct numbered *x = a, *y = b;
        int c = memcmp(x->id, y->id, KB_ID_LEN);

        if (c)
                return c;
        return x->no < y->no ? -1 : x->no > y->no;
}

static int by_extra_id(const void *a, const void *b)
{
        return memcmp(((const struct kb_maint_extra *)a)->id,
                      ((const struct kb_maint_extra *)b)->id, KB_ID_LEN);
}

struct listing {
        struct kb_maint_extra *v;
        size_t n, cap;
        uint64_t bytes;
};

static int collect_pack(const char *name, uint64_t size, void *arg)
{
        struct listing *ls = arg;
        uint8_t id[KB_ID_LEN];

        if (kb_hex_decode(name, id, KB_ID_LEN) < 0) /* kb_repo_list passes ids only */
                return 0;
        if (ls->n == ls->cap) {
                size_t cap = ls->cap ? ls->cap * 2 : 1024;
                struct kb_maint_extra *p = realloc(ls->v, cap * sizeof(*p));

                if (!p)
                        return -ENOMEM;
                ls->v = p;
                ls->cap = cap;
        }
        memcpy(ls->v[ls->n].id, id, KB_ID_LEN);
        ls->v[ls->n].size = size;
        ls->n++;
        ls->bytes += size;
        return 0;
}

static int pack_cmp_key(const void *key, const void *elem)
{
        return memcmp(key, ((const struct kb_maint_pack *)elem)->id, KB_ID_LEN);
}

int kb_maint_packs_build(struct kb_repo *r, struct kb_maint_packs *p, struct kb_err *err)
{
        static const uint8_t zero[KB_ID_LEN];
        size_t nno = kb_index_pack_count(r->index), k = 0, pos = 0, i;
        struct numbered *num = calloc(nno ? nno : 1, sizeof(*num));
        struct listing ls = {0};
        struct kb_index_entry *e;
        int rc;

        memset(p, 0, sizeof(*p));
        p->pos_of_no = malloc((nno ? nno : 1) * sizeof(*p->pos_of_no));
        p->v = calloc(nno ? nno : 1, sizeof(*p->v));
        if (!num || !p->pos_of_no || !p->v) {
                rc = kb_err_set(err, -ENOMEM, "out of memory building the pack table");
                goto fail;
        }
        p->nno = nno;
        for (i = 0; i < nno; i++) {
                const uint8_t *id = kb_index_pack_id(r->index, (uint32_t)i);

                p->pos_of_no[i] = UINT32_MAX;
                if (memcmp(id, zero, KB_ID_LEN) == 0)
                        continue; /* reserved by a writer and never named */
                memcpy(num[k].id, id, KB_ID_LEN);
                num[k].no = (uint32_t)i;
                k++;
        }
        qsort(num, k, sizeof(*num), by_id_then_no);
        for (i = 0; i < k; i++) {
                if (i == 0 || memcmp(num[i].id, num[i - 1].id, KB_ID_LEN) != 0) {
                        memcpy(p->v[p->n].id, num[i].id, KB_ID_LEN);
                        p->v[p->n].no = num[i].no; /* the lowest number is canonical */
                        p->v[p->n].size = -1;
                        p->n++;
                }
                p->pos_of_no[num[i].no] = (uint32_t)(p->n - 1);
        }
        free(num);
        num = NULL;

        /* Entries are the index's own slots; nothing else runs while a scan does. */
        while ((e = (struct kb_index_entry *)kb_index_next(r->index, &pos)) != NULL) {
                struct kb_maint_pack *mp = kb_maint_pack_of(p, e->pack);

                if (!mp)
                        continue;
                e->pack = mp->no;
                mp->total += e->length;
                mp->nblobs++;
        }

        rc = kb_repo_list(r, KB_OBJ_PACK, collect_pack, &ls, err);
        if (rc == -ENOMEM)
                rc = kb_err_set(err, rc, "out of memory listing packs");
        if (rc < 0)
                goto fail;
        p->listed_bytes = ls.bytes;
        if (ls.n) /* qsort(NULL, 0) is undefined */
                qsort(ls.v, ls.n, sizeof(*ls.v), by_extra_id);
        for (i = 0; i < ls.n; i++) {
                struct kb_maint_pack *mp =
                    bsearch(ls.v[i].id, p->v, p->n, sizeof(*p->v), pack_cmp_key);

                if (mp)
                        mp->size = (int64_t)ls.v[i].size;
                else
                        ls.v[p->nextra++] = ls.v[i]; /* compacts in place: nextra <= i */
        }
        p->extra = ls.v;
        return 0;
fail:
        free(num);
        free(ls.v);
        kb_maint_packs_free(p);
        return rc;
}

void kb_maint_packs_free(struct kb_maint_packs *p)
{
        free(p->v);
        free(p->pos_of_no);
        free(p->extra);
        memset(p, 0, sizeof(*p));
}

struct kb_maint_pack *kb_maint_pack_of(const struct kb_maint_packs *p, uint32_t pack_no)
{
        if (pack_no >= p->nno || p->pos_of_no[pack_no] == UINT32_MAX)
                return NULL;
        return &p->v[p->pos_of_no[pack_no]];
}

/* ---- marking ---- */

struct idstack {
        uint8_t (*v)[KB_ID_LEN];
        size_t n, cap;
};

static int push(struct idstack *s, const uint8_t id[KB_ID_LEN])
{
        if (s->n == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 256;
                uint8_t(*p)[KB_ID_LEN] = realloc(s->v, cap * sizeof(*p));

                if (!p)
                        return -ENOMEM;
                s->v = p;
                s->cap = cap;
        }
        memcpy(s->v[s->n++], id, KB_ID_LEN);
        return 0;
}

static int missing(struct kb_repo *r, const struct kb_mark_cb *cb, const uint8_t id[KB_ID_LEN],
                   int is_tree, size_t snap, const struct kb_snapshot_list *l, struct kb_err *err)
{
        char hex[KB_ID_HEX_LEN + 1];

        (void)r;
        if (cb && cb->missing) {
                cb->missing(cb->arg, id, is_tree, snap);
                return 0;
        }
        kb_hex_encode(id, KB_ID_LEN, hex);
        return kb_err_set(err, KB_ECORRUPT,
                          "%s %.16s used by snapshot %.8s is not in the index (run 'kbackup "
                          "check')",
                          is_tree ? "directory record" : "chunk", hex, l->items[snap].id);
}

/* Walk one snapshot's trees (depth first, with an explicit stack so deep trees cost no C stack)
 * marking what they reach. */
static int mark_snapshot(struct kb_repo *r, const struct kb_snapshot_list *l, size_t s,
                         const struct kb_mark_cb *cb, struct idstack *st, struct kb_err *err)
{
        const Kbackup__Snapshot *snap = l->items[s].snap;
        uint8_t id[KB_ID_LEN];
        int rc = 0;

        if (snap->tree.len != KB_ID_LEN) {
                struct kb_err why;

                kb_err_set(&why, KB_ECORRUPT, "the snapshot record names no root directory");
                if (cb && cb->bad_tree) {
                        cb->bad_tree(cb->arg, (const uint8_t[KB_ID_LEN]){0}, s, &why);
                        return 0;
                }
                return kb_err_set(err, KB_ECORRUPT, "snapshot %.8s: %s", l->items[s].id, why.msg);
        }
        st->n = 0;
        if (push(st, snap->tree.data) < 0)
                return kb_err_set(err, -ENOMEM, "out of memory");
        while (st->n > 0 && rc == 0) {
                struct kb_index_entry *e;
                Kbackup__Tree *t = NULL;
                struct kb_err why = {0};

                memcpy(id, st->v[--st->n], KB_ID_LEN);
                e = kb_index_lookup_mut(r->index, id);
                if (!e) {
                        rc = missing(r, cb, id, 1, s, l, err);
                        continue;
                }
                if (e->mark & KB_MARK_LIVE)
                        continue; /* shared with a snapshot already walked */
                e->mark |= KB_MARK_LIVE;
                rc = kb_repo_tree_load(r, id, &t, &why);
                if (rc < 0) {
                        if (cb && cb->bad_tree) {
                                cb->bad_tree(cb->arg, id, s, &why);
                                rc = 0;
                        } else {
                                kb_err_set(err, rc, "snapshot %.8s: %s (run 'kbackup check')",
                                           l->items[s].id, why.msg);
                        }
                        continue;
                }
                for (size_t i = 0; i < t->n_nodes && rc == 0; i++) {
                        const Kbackup__Node *n = t->nodes[i];

                        for (size_t j = 0; j < n->n_content && rc == 0; j++) {
                                struct kb_index_entry *c;

                                if (n->content[j].len != KB_ID_LEN) {
                                        kb_err_set(&why, KB_ECORRUPT,
                                                   "a file lists an invalid chunk id");
                                        if (cb && cb->bad_tree)
                                                cb->bad_tree(cb->arg, id, s, &why);
                                        else
                                                rc = kb_err_set(err, KB_ECORRUPT,
                                                                "snapshot %.8s: %s", l->items[s].id,
                                                                why.msg);
                                        continue;
                                }
                                c = kb_index_lookup_mut(r->index, n->content[j].data);
                                if (c)
                                        c->mark |= KB_MARK_LIVE;
                                else
                                        rc = missing(r, cb, n->content[j].data, 0, s, l, err);
                        }
                        if (rc == 0 && n->subtree.len == KB_ID_LEN && push(st, n->subtree.data) < 0)
                                rc = kb_err_set(err, -ENOMEM, "out of memory");
                }
                kb_repo_tree_free(t);
        }
        return rc;
}

/* Walking every snapshot: each one's trees usually sit in a tree pack of their own, one round
 * trip each over S3. The next snapshots' root blocks are read ahead while one is walked. */
#define MARK_AHEAD_THREADS 4
#define MARK_AHEAD         4

struct mark_run {
        struct kb_repo *r;
        const struct kb_snapshot_list *l;
        const struct kb_mark_cb *cb;
        struct idstack *st;
        struct kb_err *err;
};

static void mark_prefetch(size_t s, void *arg)
{
        struct mark_run *m = arg;
        const Kbackup__Snapshot *snap = m->l->items[s].snap;

        if (snap->tree.len == KB_ID_LEN)
                kb_repo_tree_prefetch(m->r, snap->tree.data);
}

static int mark_one(size_t s, void *arg)
{
        struct mark_run *m = arg;

        return mark_snapshot(m->r, m->l, s, m->cb, m->st, m->err);
}

int kb_maint_mark(struct kb_repo *r, const struct kb_snapshot_list *l, size_t only,
                  const struct kb_mark_cb *cb, struct kb_err *err)
{
        struct idstack st = {0};
        struct mark_run m = {r, l, cb, &st, err};
        int rc;

        if (only == SIZE_MAX) {
                rc = kb_prefetch_run(l->count, MARK_AHEAD_THREADS, MARK_AHEAD, mark_prefetch,
                                     mark_one, &m);
        } else {
                rc = only < l->count ? mark_snapshot(r, l, only, cb, &st, err) : 0;
        }
        free(st.v);
        return rc;
}

void kb_maint_clear_marks(struct kb_repo *r)
{
        struct kb_index_entry *e;
        size_t pos = 0;

        while ((e = (struct kb_index_entry *)kb_index_next(r->index, &pos)) != NULL)
                e->mark = 0;
}
