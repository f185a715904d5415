/* repo_internal.h - the repository's private state, shared by repo.c (open, keys, objects) and
 * pack.c (blob storage). Nothing outside those two files includes this. */
#ifndef KB_REPO_INTERNAL_H
#define KB_REPO_INTERNAL_H

#include <pthread.h>

#include "backend.h"
#include "index.h"
#include "keys.h"
#include "repo.h"

#define KB_REPO_DEFAULT_PACK_SIZE (16u << 20)
/* An index file is written once this many blobs sit in written packs not yet indexed, so an
 * interrupted backup leaves most of its uploaded data findable and index files stay small. */
#define KB_INDEX_FLUSH_BLOBS 65536

struct pack_blob {
        uint8_t id[KB_ID_LEN];
        uint8_t type;
        uint32_t offset, length, raw_length;
};

/* A pack being filled, or written and waiting to be named in an index file. */
struct pack_builder {
        struct kb_buf data;
        struct pack_blob *blobs;
        size_t nblobs, cap;
        uint32_t pack_no; /* slot in the index's pack table */
        struct pack_builder *next;
};

struct kb_repo {
        struct kb_backend *be;
        struct kb_master master;
        struct kb_chunker_params chunker;
        uint32_t pack_size;
        int zstd_level;
        int read_only;

        pthread_mutex_t lock; /* guards index, current, unindexed, inflight */
        pthread_cond_t cond;
        struct kb_index *index;
        struct pack_builder *current;   /* being filled */
        struct pack_builder *unindexed; /* written, not yet in an index file */
        size_t unindexed_blobs;
        unsigned inflight; /* packs being written outside the lock */
        pthread_key_t zstd_key;
};

/* pack.c */
void kb_pack_builder_free(struct pack_builder *b);
int kb_repo_index_load(struct kb_repo *r, struct kb_err *err);
void kb_repo_zstd_ctx_destroy(void *ctx); /* pthread key destructor */

#endif
