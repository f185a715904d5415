/* prune.c - mark what snapshots use, repack mostly-unused packs, write a new index covering every
 * live blob, then delete the superseded index files and finally the packs nobody needs.
 *
 * Every step only adds until the new index is complete; deletions come last and in the order
 * index files, then packs, so an index never names a pack that is gone. See prune.h and
 * docs/operations.md. */
#include "prune.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "maint.h"

enum { ACT_KEEP, ACT_DELETE, ACT_REPACK, ACT_DROP };

/* Rough size of one blob's entry in a pack header, on the high side, so that a pack of small
 * (tree) blobs that are all used never looks unused because of its header. */
#define HEADER_BYTES_PER_BLOB 56
#define HEADER_BYTES_FIXED    64
#define DELETE_BATCH          1000

struct pctx {
        struct kb_repo *r;
        const struct kb_prune_opts *o;
        struct kb_prune_result *res;
        struct kb_err *err;
        struct kb_maint_packs packs;
        char (*new_index)[KB_ID_HEX_LEN + 1];
        size_t nnew_index;
};

static void progress(struct pctx *c, const char *phase, uint64_t done, uint64_t total)
{
        if (c->o->progress)
                c->o->progress(phase, done, total, c->o->arg);
}

/* Per pack: how much of it is live, and what to do with it. */
static int decide(struct pctx *c)
{
        struct kb_maint_packs *p = &c->packs;
        const struct kb_index_entry *e;
        uint64_t lost = 0;
        size_t pos = 0;

        while ((e = kb_index_next(c->r->index, &pos)) != NULL) {
                struct kb_maint_pack *mp = kb_maint_pack_of(p, e->pack);

                if (!(e->mark & KB_MARK_LIVE) || !mp)
                        continue;
                mp->used += e->length;
                mp->nused++;
                c->res->blobs_live++;
                c->res->bytes_live += e->length;
                if (mp->size < 0)
                        lost++;
        }
        if (lost)
                return kb_err_set(c->err, KB_ECORRUPT,
                                  "%llu chunk(s) that snapshots use are in packs that are "
                                  "missing; run 'kbackup check' (nothing was changed)",
                                  (unsigned long long)lost);
        for (size_t i = 0; i < p->n; i++) {
                struct kb_maint_pack *mp = &p->v[i];
                uint64_t overhead =
                    HEADER_BYTES_FIXED + (uint64_t)HEADER_BYTES_PER_BLOB * mp->nblobs;
                uint64_t size = mp->size > 0 ? (uint64_t)mp->size : 0, unused;

                if (mp->size < 0) {
                        mp->action = ACT_DROP;
                        c->res->packs_missing++;
                } else if (mp->nused == 0) {
                        mp->action = ACT_DELETE;
                        c->res->packs_unused++;
                } else {
                        unused = size > mp->used + overhead ? size - mp->used - overhead : 0;
                        if (c->o->max_unused_pct < 100 &&
                            unused * 100 > (uint64_t)c->o->max_unused_pct * size) {
                                mp->action = ACT_REPACK;
                                c->res->packs_repacked++;
                        } else {
                                mp->action = ACT_KEEP;
                        }
                }
        }
        c->res->packs_unindexed = p->nextra;
        return 0;
}

/* ---- repacking ---- */

struct repacker {
        struct pack_builder *b;
        struct kb_index_entry **ents; /* the entry of each blob in b, to point it at the copy */
        size_t cap;
};

static int flush_builder(struct pctx *c, struct repacker *rp)
{
        uint8_t id[KB_ID_LEN];
        int no, rc;

        if (!rp->b || rp->b->nblobs == 0)
                return 0;
        rc = kb_pack_write(c->r, rp->b, id, c->err);
        if (rc < 0)
                return rc;
        no = kb_index_pack_add(c->r->index, id);
        if (no < 0)
                return kb_err_set(c->err, no, "out of memory");
        for (size_t i = 0; i < rp->b->nblobs; i++) {
                rp->ents[i]->pack = (uint32_t)no;
                rp->ents[i]->offset = rp->b->blobs[i].offset;
                rp->ents[i]->length = rp->b->blobs[i].length;
        }
        c->res->packs_written++;
        c->res->bytes_written += rp->b->data.len;
        kb_pack_builder_free(rp->b);
        rp->b = NULL;
        return 0;
}

static int add_blob(struct pctx *c, struct repacker *rp, struct kb_index_entry *e,
                    const uint8_t *sealed)
{
        int rc;

        if (!rp->b) {
                rp->b = calloc(1, sizeof(*rp->b));
                if (!rp->b)
                        return kb_err_set(c->err, -ENOMEM, "out of memory");
        }
        if (rp->b->nblobs == rp->cap) {
                size_t cap = rp->cap ? rp->cap * 2 : 256;
                struct kb_index_entry **p = realloc(rp->ents, cap * sizeof(*p));

                if (!p)
                        return kb_err_set(c->err, -ENOMEM, "out of memory");
                rp->ents = p;
                rp->cap = cap;
        }
        rp->ents[rp->b->nblobs] = e;
        rc = kb_pack_builder_add_sealed(rp->b, e->id, e->type, sealed, e->length, e->raw_length);
        if (rc < 0)
                return kb_err_set(c->err, rc, "out of memory");
        if (rp->b->data.len >= c->r->pack_size)
                return flush_builder(c, rp);
        return 0;
}

static int by_offset(const void *a, const void *b)
{
        const struct kb_index_entry *x = *(struct kb_index_entry *const *)a;
        const struct kb_index_entry *y = *(struct kb_index_entry *const *)b;

        return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Copy one pack's live blobs (each verified: prune never spreads damage) into new packs. */
static int repack_one(struct pctx *c, struct repacker *rp, const struct kb_maint_pack *mp,
                      struct kb_index_entry **ents, size_t n)
{
        struct kb_buf data = KB_BUF_INIT, plain = KB_BUF_INIT;
        char hex[KB_ID_HEX_LEN + 1];
        int rc;

        kb_hex_encode(mp->id, KB_ID_LEN, hex);
        rc = kb_backend_get(c->r->be, KB_OBJ_PACK, hex, 0, 0, &data, c->err);
        if (rc < 0) {
                kb_err_prefix(c->err, "repacking pack %.16s: ", hex);
                goto out;
        }
        qsort(ents, n, sizeof(*ents), by_offset);
        for (size_t i = 0; i < n && rc == 0; i++) {
                struct kb_index_entry *e = ents[i];

                if ((uint64_t)e->offset + e->length > data.len) {
                        rc = kb_err_set(c->err, KB_ECORRUPT,
                                        "pack %.16s is shorter than its index says; run 'kbackup "
                                        "check' (nothing was deleted)",
                                        hex);
                        break;
                }
                kb_buf_reset(&plain);
                rc = kb_repo_blob_decode(c->r, e->id, data.data + e->offset, e->length,
                                         e->raw_length, 1, &plain, c->err);
                if (rc < 0) {
                        kb_err_prefix(c->err, "pack %.16s: ", hex);
                        kb_err_prefix(c->err, "a live chunk is damaged, run 'kbackup check' "
                                              "(nothing was deleted): ");
                        break;
                }
                rc = add_blob(c, rp, e, data.data + e->offset);
        }
out:
        kb_buf_free(&data);
        kb_buf_free(&plain);
        return rc;
}

static int repack(struct pctx *c)
{
        struct kb_maint_packs *p = &c->packs;
        struct repacker rp = {0};
        struct kb_index_entry **ents = NULL, *e;
        size_t *start = NULL, *fill = NULL, total = 0, pos = 0, done = 0, i;
        int rc = 0;

        if (!c->res->packs_repacked)
                return 0;
        start = calloc(p->n + 1, sizeof(*start));
        fill = calloc(p->n + 1, sizeof(*fill));
        if (!start || !fill) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                goto out;
        }
        for (i = 0; i < p->n; i++) {
                start[i] = total;
                if (p->v[i].action == ACT_REPACK)
                        total += p->v[i].nused;
        }
        start[p->n] = total;
        ents = malloc((total ? total : 1) * sizeof(*ents));
        if (!ents) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                goto out;
        }
        /* Entries are the index's own slots; the table does not grow while we hold them. */
        while ((e = (struct kb_index_entry *)kb_index_next(c->r->index, &pos)) != NULL) {
                struct kb_maint_pack *mp = kb_maint_pack_of(p, e->pack);

                if ((e->mark & KB_MARK_LIVE) && mp && mp->action == ACT_REPACK) {
                        size_t k = (size_t)(mp - p->v);

                        ents[start[k] + fill[k]++] = e;
                }
        }
        for (i = 0; i < p->n && rc == 0; i++) {
                if (p->v[i].action != ACT_REPACK)
                        continue;
                rc = repack_one(c, &rp, &p->v[i], ents + start[i], fill[i]);
                progress(c, "repack", ++done, c->res->packs_repacked);
        }
        if (rc == 0)
                rc = flush_builder(c, &rp);
out:
        kb_pack_builder_free(rp.b);
        free(rp.ents);
        free(ents);
        free(start);
        free(fill);
        return rc;
}

/* ---- the new index ---- */

static int keep_pack(struct pctx *c, uint32_t no)
{
        struct kb_maint_pack *mp;

        if (no >= c->packs.nno)
                return 1; /* written by this prune */
        mp = kb_maint_pack_of(&c->packs, no);
        return mp && mp->action == ACT_KEEP;
}

static int remember_index(struct pctx *c, const char *name)
{
        char(*p)[KB_ID_HEX_LEN + 1] =
            realloc(c->new_index, (c->nnew_index + 1) * sizeof(*c->new_index));

        if (!p)
                return kb_err_set(c->err, -ENOMEM, "out of memory");
        c->new_index = p;
        memcpy(c->new_index[c->nnew_index++], name, KB_ID_HEX_LEN + 1);
        return 0;
}

/* One index file for the packs ents[group_start[g]...] of groups [g0, g1). */
static int write_batch(struct pctx *c, struct kb_index_entry **ents, const size_t *gstart,
                       const uint32_t *gpack, size_t g0, size_t g1)
{
        size_t npk = g1 - g0, nbl = gstart[g1] - gstart[g0];
        Kbackup__IndexPack *packs = calloc(npk, sizeof(*packs));
        Kbackup__IndexPack **pv = calloc(npk, sizeof(*pv));
        Kbackup__IndexBlob *blobs = calloc(nbl ? nbl : 1, sizeof(*blobs));
        Kbackup__IndexBlob **bv = calloc(nbl ? nbl : 1, sizeof(*bv));
        Kbackup__Index ix = KBACKUP__INDEX__INIT;
        struct kb_buf plain = KB_BUF_INIT;
        char name[KB_ID_HEX_LEN + 1];
        size_t k = 0;
        int rc;

        if (!packs || !pv || !blobs || !bv) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory writing the index");
                goto out;
        }
        for (size_t g = g0; g < g1; g++) {
                Kbackup__IndexPack *ip = &packs[g - g0];

                kbackup__index_pack__init(ip);
                ip->pack_id.data = (uint8_t *)kb_index_pack_id(c->r->index, gpack[g]);
                ip->pack_id.len = KB_ID_LEN;
                ip->blobs = &bv[k];
                ip->n_blobs = gstart[g + 1] - gstart[g];
                for (size_t i = gstart[g]; i < gstart[g + 1]; i++, k++) {
                        const struct kb_index_entry *e = ents[i];

                        kbackup__index_blob__init(&blobs[k]);
                        blobs[k].id.data = (uint8_t *)e->id;
                        blobs[k].id.len = KB_ID_LEN;
                        blobs[k].type = e->type;
                        blobs[k].offset = e->offset;
                        blobs[k].length = e->length;
                        blobs[k].raw_length = e->raw_length;
                        bv[k] = &blobs[k];
                }
                pv[g - g0] = ip;
        }
        ix.n_packs = npk;
        ix.packs = pv;
        rc = kb_buf_reserve(&plain, kbackup__index__get_packed_size(&ix));
        if (rc < 0) {
                kb_err_set(c->err, rc, "out of memory writing the index");
                goto out;
        }
        plain.len = kbackup__index__pack(&ix, plain.data);
        rc = kb_repo_object_put(c->r, KB_OBJ_INDEX, plain.data, plain.len, name, c->err);
        if (rc == 0)
                rc = remember_index(c, name);
        if (rc == 0)
                c->res->index_written++;
out:
        free(packs);
        free(pv);
        free(blobs);
        free(bv);
        kb_buf_free(&plain);
        return rc;
}

static int write_index(struct pctx *c)
{
        size_t nno = kb_index_pack_count(c->r->index), total = 0, ngroups = 0, pos = 0, i;
        size_t *count = calloc(nno + 1, sizeof(*count)), *gstart = NULL;
        uint32_t *gpack = NULL;
        struct kb_index_entry **ents = NULL, *e;
        int rc = 0;

        if (!count) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                goto out;
        }
        while ((e = (struct kb_index_entry *)kb_index_next(c->r->index, &pos)) != NULL) {
                if (keep_pack(c, e->pack)) {
                        count[e->pack]++;
                        total++;
                }
        }
        for (i = 0; i < nno; i++)
                ngroups += count[i] > 0;
        ents = malloc((total ? total : 1) * sizeof(*ents));
        gstart = malloc((ngroups + 1) * sizeof(*gstart));
        gpack = malloc((ngroups ? ngroups : 1) * sizeof(*gpack));
        if (!ents || !gstart || !gpack) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                goto out;
        }
        /* Counting sort by pack: count[] becomes each pack's next free slot. */
        {
                size_t at = 0, g = 0;

                for (i = 0; i < nno; i++) {
                        size_t n = count[i];

                        if (!n)
                                continue;
                        gstart[g] = at;
                        gpack[g++] = (uint32_t)i;
                        count[i] = at;
                        at += n;
                }
                gstart[g] = at;
        }
        pos = 0;
        while ((e = (struct kb_index_entry *)kb_index_next(c->r->index, &pos)) != NULL)
                if (keep_pack(c, e->pack))
                        ents[count[e->pack]++] = e;
        /* Files of about KB_INDEX_FLUSH_BLOBS blobs, never splitting a pack. */
        for (size_t g0 = 0; g0 < ngroups && rc == 0;) {
                size_t g1 = g0 + 1;

                while (g1 < ngroups && gstart[g1 + 1] - gstart[g0] <= KB_INDEX_FLUSH_BLOBS)
                        g1++;
                rc = write_batch(c, ents, gstart, gpack, g0, g1);
                progress(c, "index", gstart[g1], total);
                g0 = g1;
        }
out:
        free(count);
        free(ents);
        free(gstart);
        free(gpack);
        return rc;
}

/* ---- deleting ---- */

static int check_lock(struct pctx *c)
{
        return kb_lock_check(c->o->lock, c->err);
}

static int delete_objects(struct pctx *c, enum kb_obj_type type, const char *const *names, size_t n,
                          const char *phase)
{
        int batched = 1, rc = 0;

        for (size_t done = 0; done < n && rc == 0;) {
                size_t k = n - done < DELETE_BATCH ? n - done : DELETE_BATCH;

                rc = check_lock(c);
                if (rc < 0)
                        break;
                if (batched) {
                        rc = kb_s3_delete_many(c->r->be, type, names + done, k, c->err);
                        if (rc == KB_EUSAGE) { /* not S3: one by one */
                                batched = 0;
                                kb_err_clear(c->err);
                                rc = 0;
                                continue;
                        }
                        if (rc == 0) {
                                done += k;
                                progress(c, phase, done, n);
                        }
                        continue;
                }
                for (size_t i = 0; i < k && rc == 0; i++) {
                        /* A stat per removal: cheap next to the removal, and it keeps the window
                         * after a lost lock to one object. */
                        if (i > 0)
                                rc = check_lock(c);
                        if (rc == 0)
                                rc = kb_backend_remove(c->r->be, type, names[done], c->err);
                        if (rc == 0)
                                progress(c, phase, ++done, n);
                }
        }
        return rc;
}

static int is_new_index(const struct pctx *c, const char *name)
{
        for (size_t i = 0; i < c->nnew_index; i++)
                if (strcmp(c->new_index[i], name) == 0)
                        return 1;
        return 0;
}

static int delete_old(struct pctx *c)
{
        struct kb_maint_packs *p = &c->packs;
        size_t n = 0, cap = c->r->n_index_names + p->n + p->nextra;
        char(*hex)[KB_ID_HEX_LEN + 1] = malloc((cap ? cap : 1) * sizeof(*hex));
        const char **names = malloc((cap ? cap : 1) * sizeof(*names));
        int rc;

        if (!hex || !names) {
                rc = kb_err_set(c->err, -ENOMEM, "out of memory");
                goto out;
        }
        /* 1. Index files: every one loaded is superseded by the files just written. */
        for (size_t i = 0; i < c->r->n_index_names; i++)
                if (!is_new_index(c, c->r->index_names[i]))
                        names[n++] = c->r->index_names[i];
        rc = delete_objects(c, KB_OBJ_INDEX, names, n, "delete-index");
        if (rc < 0)
                goto out;
        c->res->index_deleted = n;
        /* 2. Packs: no index names them any more. */
        n = 0;
        for (size_t i = 0; i < p->n; i++) {
                if (p->v[i].action != ACT_DELETE && p->v[i].action != ACT_REPACK)
                        continue;
                kb_hex_encode(p->v[i].id, KB_ID_LEN, hex[n]);
                names[n] = hex[n];
                n++;
        }
        for (size_t i = 0; i < p->nextra; i++) {
                kb_hex_encode(p->extra[i].id, KB_ID_LEN, hex[n]);
                names[n] = hex[n];
                n++;
        }
        rc = delete_objects(c, KB_OBJ_PACK, names, n, "delete-pack");
out:
        free(hex);
        free(names);
        return rc;
}

static void tally_after(struct pctx *c)
{
        struct kb_maint_packs *p = &c->packs;
        struct kb_prune_result *res = c->res;

        res->packs_after = res->packs_before + res->packs_written;
        res->bytes_after = res->bytes_before + res->bytes_written;
        for (size_t i = 0; i < p->n; i++) {
                if (p->v[i].action == ACT_DELETE || p->v[i].action == ACT_REPACK) {
                        res->packs_after--;
                        res->bytes_after -= (uint64_t)p->v[i].size;
                }
        }
        for (size_t i = 0; i < p->nextra; i++) {
                res->packs_after--;
                res->bytes_after -= p->extra[i].size;
        }
}

int kb_prune(struct kb_repo *r, const struct kb_prune_opts *o, struct kb_prune_result *res,
             struct kb_err *err)
{
        struct pctx c = {.r = r, .o = o, .res = res, .err = err};
        struct kb_snapshot_list l = {0};
        int rc;

        memset(res, 0, sizeof(*res));
        if (kb_repo_read_only(r) && !o->dry_run)
                return kb_err_set(err, -EROFS, "repository is opened read-only");
        rc = kb_repo_snapshot_list(r, &l, err);
        if (rc < 0)
                return kb_err_prefix(err, "cannot prune: ");
        res->snapshots = l.count;
        rc = kb_maint_packs_build(r, &c.packs, err);
        if (rc == 0) {
                res->packs_before = c.packs.n + c.packs.nextra;
                for (size_t i = 0; i < c.packs.n; i++)
                        if (c.packs.v[i].size < 0)
                                res->packs_before--;
                res->bytes_before = c.packs.listed_bytes;
                /* Without callbacks marking stops at the first problem: a blob we cannot account
                 * for might be what a snapshot needs, so nothing may be deleted. */
                rc = kb_maint_mark(r, &l, SIZE_MAX, NULL, err);
                if (rc < 0)
                        kb_err_prefix(err, "cannot prune: ");
        }
        if (rc == 0)
                rc = decide(&c);
        if (rc == 0 && o->dry_run) {
                tally_after(&c);
                /* A dry run writes nothing; the repacked copies are estimated as the live bytes
                 * they hold. */
                for (size_t i = 0; i < c.packs.n; i++)
                        if (c.packs.v[i].action == ACT_REPACK)
                                res->bytes_after += c.packs.v[i].used;
                goto out;
        }
        /* Nothing to remove and the index already in one file: leave everything as it is. */
        if (rc == 0 && !res->packs_unused && !res->packs_repacked && !res->packs_unindexed &&
            !res->packs_missing && r->n_index_names <= 1) {
                tally_after(&c);
                goto out;
        }
        if (rc == 0)
                rc = repack(&c);
        if (rc == 0)
                rc = write_index(&c);
        if (rc == 0)
                rc = delete_old(&c);
        if (rc == 0)
                tally_after(&c);
out:
        kb_maint_clear_marks(r);
        kb_maint_packs_free(&c.packs);
        free(c.new_index);
        kb_snapshot_list_free(&l);
        return rc;
}
