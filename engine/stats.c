/* stats.c - sizes of a repository or snapshot: logical, after dedup, after compression. Logical
 * sizes are computed once per distinct tree (a memo keyed by tree id), so a thousand snapshots of
 * a mostly unchanged volume cost little more than one. */
#include "stats.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "maint.h"

struct tree_sum {
        uint64_t logical, files, dirs;
};

struct sctx {
        struct kb_repo *r;
        struct kb_stats *st;
        struct kb_err *err;
        struct kb_idmap memo; /* tree id -> position in sums */
        struct tree_sum *sums;
        size_t nsums, cap;
};

static int tree_total(struct sctx *c, const uint8_t *id, struct tree_sum *out)
{
        Kbackup__Tree *t;
        struct tree_sum sum = {0};
        uint64_t at;
        int rc;

        if (kb_idmap_get(&c->memo, id, &at)) {
                *out = c->sums[at];
                return 0;
        }
        rc = kb_repo_tree_load(c->r, id, &t, c->err);
        if (rc < 0)
                return rc;
        for (size_t i = 0; i < t->n_nodes && rc == 0; i++) {
                const Kbackup__Node *n = t->nodes[i];

                if (n->type == KBACKUP__NODE_TYPE__NODE_DIR)
                        sum.dirs++;
                else
                        sum.files++;
                for (size_t j = 0; j < n->n_content; j++) {
                        const struct kb_index_entry *e =
                            n->content[j].len == KB_ID_LEN
                                ? kb_index_lookup(c->r->index, n->content[j].data)
                                : NULL;

                        if (e)
                                sum.logical += e->raw_length;
                }
                if (n->subtree.len == KB_ID_LEN) {
                        struct tree_sum sub;

                        rc = tree_total(c, n->subtree.data, &sub);
                        if (rc < 0)
                                break;
                        sum.logical += sub.logical;
                        sum.files += sub.files;
                        sum.dirs += sub.dirs;
                }
        }
        kb_repo_tree_free(t);
        if (rc < 0)
                return rc;
        if (c->nsums == c->cap) {
                size_t cap = c->cap ? c->cap * 2 : 256;
                struct tree_sum *p = realloc(c->sums, cap * sizeof(*p));

                if (!p)
                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                c->sums = p;
                c->cap = cap;
        }
        c->sums[c->nsums] = sum;
        if (kb_idmap_put(&c->memo, id, c->nsums++) < 0)
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        *out = sum;
        return 0;
}

static void count_missing(void *arg, const uint8_t id[KB_ID_LEN], int is_tree, size_t snap)
{
        (void)id, (void)is_tree, (void)snap;
        ((struct sctx *)arg)->st->missing++;
}

static void ignore_bad_tree(void *arg, const uint8_t id[KB_ID_LEN], size_t snap,
                            const struct kb_err *why)
{
        (void)id, (void)snap, (void)why;
        ((struct sctx *)arg)->st->missing++;
}

int kb_stats_compute(struct kb_repo *r, const struct kb_snapshot_list *l, size_t only,
                     struct kb_stats *st, struct kb_err *err)
{
        struct sctx c = {.r = r, .st = st, .err = err};
        struct kb_mark_cb cb = {count_missing, ignore_bad_tree, &c};
        struct kb_maint_packs packs;
        const struct kb_index_entry *e;
        size_t pos = 0;
        int rc;

        memset(st, 0, sizeof(*st));
        rc = kb_maint_packs_build(r, &packs, err);
        if (rc < 0)
                return rc;
        st->repo_packs = packs.n + packs.nextra;
        for (size_t i = 0; i < packs.n; i++)
                if (packs.v[i].size < 0)
                        st->repo_packs--;
        st->repo_bytes = packs.listed_bytes;
        kb_maint_packs_free(&packs);

        for (size_t s = 0; s < l->count && rc == 0; s++) {
                const Kbackup__Snapshot *snap = l->items[s].snap;
                struct tree_sum sum;

                if (only != SIZE_MAX && only != s)
                        continue;
                st->snapshots++;
                if (snap->tree.len != KB_ID_LEN)
                        continue;
                rc = tree_total(&c, snap->tree.data, &sum);
                if (rc < 0) {
                        kb_err_prefix(err, "snapshot %.8s: ", l->items[s].id);
                        break;
                }
                st->logical += sum.logical;
                st->files += sum.files;
                st->dirs += sum.dirs;
        }
        if (rc == 0)
                rc = kb_maint_mark(r, l, only, &cb, err);
        while (rc == 0 && (e = kb_index_next(r->index, &pos)) != NULL) {
                st->index_blobs++;
                st->index_stored += e->length;
                if (!(e->mark & KB_MARK_LIVE))
                        continue;
                if (e->type == KB_BLOB_TREE) {
                        st->tree_blobs++;
                        st->tree_raw += e->raw_length;
                        st->tree_stored += e->length;
                } else {
                        st->data_blobs++;
                        st->data_raw += e->raw_length;
                        st->data_stored += e->length;
                }
        }
        kb_maint_clear_marks(r);
        kb_idmap_free(&c.memo);
        free(c.sums);
        return rc;
}
