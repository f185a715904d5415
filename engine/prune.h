/* prune.h - remove data no snapshot references: delete packs nobody uses, repack packs that are
 * mostly unused, write one new index for every live blob, then delete what it supersedes.
 *
 * The caller holds the exclusive lock (taken BEFORE the index was loaded: open with
 * KB_REPO_NO_INDEX, lock, kb_repo_index_reload). Order of writes, so that a kill at any point
 * leaves a repository that `check` passes: new packs, new index files, then old index files are
 * deleted, then old packs. Memory: the loaded index plus 8 bytes per live blob and one pack. */
#ifndef KB_PRUNE_H
#define KB_PRUNE_H

#include <stdint.h>

#include "err.h"
#include "lock.h"
#include "repo.h"

#define KB_PRUNE_DEFAULT_MAX_UNUSED 20

struct kb_prune_opts {
        /* Repack a pack when more than this percentage of it is unused (0-100; 100 never
         * repacks, packs nobody uses are deleted whatever it is). */
        unsigned max_unused_pct;
        int dry_run;
        struct kb_lock *lock; /* checked before each batch of deletions; NULL: not checked */
        /* Called after each step of the work (a pack repacked, an index file written, an object
         * deleted): phase is "repack", "index", "delete-index" or "delete-pack". */
        void (*progress)(const char *phase, uint64_t done, uint64_t total, void *arg);
        void *arg;
};

struct kb_prune_result {
        uint64_t snapshots;
        uint64_t packs_before, bytes_before; /* every pack on the backend */
        uint64_t packs_unused;               /* deleted: no live blob */
        uint64_t packs_repacked;             /* live blobs copied out, then deleted */
        uint64_t packs_unindexed;            /* deleted: named by no index (interrupted writes) */
        uint64_t packs_written, bytes_written;
        uint64_t
            packs_missing; /* indexed but absent, holding nothing live: dropped from the index */
        uint64_t blobs_live, bytes_live;
        uint64_t index_written, index_deleted;
        uint64_t packs_after, bytes_after;
};

int kb_prune(struct kb_repo *r, const struct kb_prune_opts *o, struct kb_prune_result *res,
             struct kb_err *err);

#endif
