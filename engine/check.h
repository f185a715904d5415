/* check.h - verify a repository: every index file loads, every indexed pack is present with the
 * size and header the index says, every snapshot's trees load and every blob they name is
 * indexed; optionally every blob (or a share of the packs) is read, decrypted and its id
 * recomputed. Problems are reported one per line, naming the damaged objects and then the
 * snapshots and files they affect. */
#ifndef KB_CHECK_H
#define KB_CHECK_H

#include <stdint.h>

#include "err.h"
#include "repo.h"

struct kb_check_opts {
        int read_data;            /* read every pack */
        unsigned read_subset_pct; /* 1-100: read this share of the packs, chosen at random */
        /* One call per problem (is_error 1) or per note such as leftovers (is_error 0). */
        void (*report)(int is_error, const char *msg, void *arg);
        void (*progress)(const char *phase, uint64_t done, uint64_t total, void *arg);
        void *arg;
};

struct kb_check_result {
        uint64_t index_files, packs, blobs, snapshots, trees;
        uint64_t packs_read, bytes_read;
        uint64_t leftover_packs, leftover_bytes; /* named by no index: not errors */
        uint64_t errors;                         /* problems found (0: the repository is sound) */
        uint64_t damaged_snapshots;
};

/* Open the repository with KB_REPO_NO_INDEX (check loads the index itself, so that a damaged
 * index file is reported instead of stopping the open). Returns 0 when the check ran, whatever
 * it found (see res->errors); negative when it could not run. */
int kb_check(struct kb_repo *r, const struct kb_check_opts *o, struct kb_check_result *res,
             struct kb_err *err);

#endif
