/* stats.h - how big a repository or a snapshot is: logical size (file data as a restore would
 * write it), the distinct blobs it needs (after dedup), and what they take stored (after
 * compression and encryption). */
#ifndef KB_STATS_H
#define KB_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "repo.h"

struct kb_stats {
        uint64_t snapshots;
        uint64_t files, dirs; /* counted in every snapshot they appear in */
        uint64_t logical;     /* file data bytes, counted in every snapshot (holes excluded) */
        uint64_t data_blobs;  /* distinct file chunks the snapshots need */
        uint64_t data_raw;    /* their plaintext bytes: what is left after dedup */
        uint64_t data_stored; /* their bytes in packs: after compression and encryption */
        uint64_t tree_blobs, tree_raw, tree_stored; /* the directory records */
        uint64_t missing; /* chunks named by a snapshot that the index does not have */
        /* The repository as a whole, whatever the selection. */
        uint64_t repo_packs, repo_bytes; /* every pack on the backend */
        uint64_t index_blobs, index_stored;
};

/* Statistics of snapshot l->items[only], or of every snapshot in l when only == SIZE_MAX. */
int kb_stats_compute(struct kb_repo *r, const struct kb_snapshot_list *l, size_t only,
                     struct kb_stats *st, struct kb_err *err);

#endif
