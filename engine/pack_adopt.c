/* pack_adopt.c - reuse what an interrupted backup uploaded.
 *
 * A backup that dies (killed pod, lost S3 endpoint, full disk) leaves complete packs that no index
 * file names yet: every pack is written whole and atomically, but its index entry waits for the
 * next index flush. Before a backup starts, such packs are read back by their headers (two small
 * ranged reads each), their blobs indexed in memory, and the packs named in the index file this
 * backup writes, so the data is not uploaded twice. Concurrent writers are safe: a pack is
 * immutable and content-addressed, so indexing it twice only repeats an entry; prune, which
 * deletes packs, holds the exclusive lock that a backup's shared lock excludes. */
#include "repo_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "maint.h"

/* A backup should not spend its window re-reading an old pile of leftovers: at most this many are
 * adopted per run (prune removes the rest). */
#define ADOPT_MAX_PACKS 4096

static int blob_fits(const Kbackup__IndexBlob *b, uint64_t data_end)
{
        return b->id.len == KB_ID_LEN && b->raw_length <= KB_BLOB_MAX &&
               b->length > KB_SEAL_OVERHEAD && (uint64_t)b->offset + b->length <= data_end &&
               (b->type == KBACKUP__BLOB_TYPE__BLOB_DATA ||
                b->type == KBACKUP__BLOB_TYPE__BLOB_TREE);
}

/* Index one pack's blobs and queue it for the next index file. Returns blobs adopted, or <0. */
static int adopt_one(struct kb_repo *r, const struct kb_maint_extra *x, struct kb_err *err)
{
        Kbackup__PackHeader *ph = NULL;
        struct pack_builder *b;
        char hex[KB_ID_HEX_LEN + 1];
        uint32_t hlen = 0;
        int rc, pack_no, added = 0;

        kb_hex_encode(x->id, KB_ID_LEN, hex);
        rc = kb_pack_header_read(r, hex, x->size, &ph, &hlen, err);
        if (rc < 0)
                return rc == -ENOMEM ? rc : 0; /* damaged: leave it to check and prune */
        b = calloc(1, sizeof(*b));
        if (!b || (ph->n_blobs && !(b->blobs = calloc(ph->n_blobs, sizeof(*b->blobs))))) {
                free(b);
                kbackup__pack_header__free_unpacked(ph, NULL);
                return kb_err_set(err, -ENOMEM, "out of memory");
        }
        pthread_mutex_lock(&r->lock);
        pack_no = kb_index_pack_add(r->index, x->id);
        for (size_t i = 0; pack_no >= 0 && i < ph->n_blobs; i++) {
                const Kbackup__IndexBlob *pb = ph->blobs[i];
                struct kb_index_entry e = {0};
                int inserted = 0;

                if (!blob_fits(pb, x->size - 4 - hlen))
                        continue;
                kb_index_entry_from_blob(&e, pb, (uint32_t)pack_no);
                if (kb_index_insert(r->index, &e, &inserted) < 0)
                        break;
                if (!inserted)
                        continue; /* already stored elsewhere: nothing to name */
                memcpy(b->blobs[b->nblobs].id, e.id, KB_ID_LEN);
                b->blobs[b->nblobs].type = e.type;
                b->blobs[b->nblobs].offset = e.offset;
                b->blobs[b->nblobs].length = e.length;
                b->blobs[b->nblobs].raw_length = e.raw_length;
                b->nblobs++;
        }
        if (pack_no >= 0 && b->nblobs) {
                b->pack_no = (uint32_t)pack_no;
                b->next = r->unindexed;
                r->unindexed = b;
                r->unindexed_blobs += b->nblobs;
                added = (int)b->nblobs;
                b = NULL;
        }
        pthread_mutex_unlock(&r->lock);
        kb_pack_builder_free(b);
        kbackup__pack_header__free_unpacked(ph, NULL);
        if (pack_no < 0)
                return kb_err_set(err, -ENOMEM, "out of memory");
        return added;
}

int kb_repo_adopt_packs(struct kb_repo *r, uint64_t *packs, uint64_t *blobs, struct kb_err *err)
{
        struct kb_maint_packs mp = {0};
        int rc;

        *packs = *blobs = 0;
        if (r->read_only)
                return 0;
        rc = kb_maint_packs_build(r, &mp, err);
        if (rc < 0)
                return rc;
        for (size_t i = 0; i < mp.nextra && i < ADOPT_MAX_PACKS; i++) {
                rc = adopt_one(r, &mp.extra[i], err);
                if (rc < 0)
                        break;
                if (rc > 0) {
                        (*packs)++;
                        *blobs += (uint64_t)rc;
                }
                rc = 0;
        }
        kb_maint_packs_free(&mp);
        return rc;
}
