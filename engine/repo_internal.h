/* repo_internal.h - the repository's private state, shared by repo.c (open, keys, objects),
 * pack.c (blob storage) and the repository's own maintenance modules (lock, keymgmt, check, prune,
 * stats), which work on the whole index. Nothing above the repository layer includes this. */
#ifndef KB_REPO_INTERNAL_H
#define KB_REPO_INTERNAL_H

#include <pthread.h>

#include "backend.h"
#include "index.h"
#include "keys.h"
#include "repo.h"
#include "treecache.h"

#define KB_REPO_DEFAULT_PACK_SIZE (16u << 20)
/* An index file is written once this many blobs sit in written packs not yet indexed, so an
 * interrupted backup leaves most of its uploaded data findable and index files stay small. */
#define KB_INDEX_FLUSH_BLOBS 65536
/* Threads writing full packs in the background, and so the most packs detached at once. */
#define KB_PACK_WRITERS 2
/* Buffers of written packs kept for the next ones. */
#define KB_PACK_SPARE 2
/* Packs being filled at once: data, and trees (see kb_repo.current). */
#define KB_PACK_KINDS 2

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
        int tree_pack;    /* holds trees (kb_repo.current) */
        struct pack_builder *next;
};

struct kb_repo {
        struct kb_backend *be;
        struct kb_master master;
        struct kb_chunker_params chunker;
        uint32_t pack_size;
        int zstd_level;
        int read_only;
        int blob_id_ad; /* blobs are sealed with their id as associated data (format 2) */
        enum kb_id_hash id_hash;

        pthread_mutex_t lock; /* guards index, current, unindexed, inflight */
        pthread_cond_t cond;
        struct kb_index *index;
        /* Being filled: one pack for file data, one for everything else (trees). The next backup
         * reads every tree of its parent snapshot, one directory at a time: packed together they
         * are neighbouring bytes of a few packs instead of one seek into 16 MiB of data each, and
         * their packs stay in the page cache (pack.c). */
        struct pack_builder *current[KB_PACK_KINDS];
        struct pack_builder *unindexed; /* written, not yet in an index file */
        size_t unindexed_blobs;
        unsigned inflight; /* packs detached from `current`, not yet written */
        /* Background pack writers (pack_writer.c): a queue of full packs and the first error. */
        pthread_t writers[KB_PACK_WRITERS];
        unsigned n_writers;
        int writers_stop;
        pthread_cond_t write_cond;
        struct pack_builder *write_head, *write_tail;
        int write_rc;
        struct kb_err write_err;
        struct kb_buf spare[KB_PACK_SPARE];
        unsigned n_spare;
        pthread_key_t zstd_key;
        struct kb_treecache *trees; /* blocks of tree packs (treecache.h) */

        char key_name[KB_ID_HEX_LEN + 1]; /* the key file that opened the repository */
        /* Index files loaded into `index` (prune supersedes exactly these). */
        char (*index_names)[KB_ID_HEX_LEN + 1];
        size_t n_index_names, index_names_cap;
        /* Asked before a snapshot record is written: a writer whose lock was lost (removed, or
         * not refreshed in time, so a prune may have run) must not record a snapshot. */
        int (*guard)(void *arg, struct kb_err *err);
        void *guard_arg;
};

/* pack.c */
void kb_pack_builder_free(struct pack_builder *b);
/* An index entry for blob b (of an index file or a pack header) in pack slot `pack`. */
void kb_index_entry_from_blob(struct kb_index_entry *e, const Kbackup__IndexBlob *b, uint32_t pack);
int kb_repo_index_load(struct kb_repo *r, struct kb_err *err);
/* Add the entries of index file `name`, given its plaintext, to r->index (and record its name). */
int kb_repo_index_apply(struct kb_repo *r, const char *name, const struct kb_buf *plain,
                        struct kb_err *err);
/* Append an already sealed blob to a builder (prune copies blobs without re-sealing them). */
int kb_pack_builder_add_sealed(struct pack_builder *b, const uint8_t id[KB_ID_LEN], uint8_t type,
                               const void *sealed, size_t len, uint32_t raw_len);
/* Append the header to a builder's data and store it as a pack named by its hash. */
int kb_pack_write(struct kb_repo *r, struct pack_builder *b, uint8_t pack_id[KB_ID_LEN],
                  struct kb_err *err);
/* Write a detached pack and add it to the unindexed list; on failure its blobs leave the index.
 * Either way r->inflight goes down. */
int kb_pack_finish(struct kb_repo *r, struct pack_builder *b, struct kb_err *err);
/* A detached pack that will not be written: its blobs leave the index, inflight goes down. */
void kb_pack_finish_failed(struct kb_repo *r, struct pack_builder *b);

/* snapshot.c: parse a snapshot record's plaintext (KB_ECORRUPT naming `id` when it does not). */
int kb_repo_snapshot_parse(const char *id, const struct kb_buf *plain, Kbackup__Snapshot **out,
                           struct kb_err *err);
/* Append snapshot s under its full hex id (the list's array grows by doubling; *cap is its
 * size). -ENOMEM leaves s to the caller. */
int kb_snapshot_list_add(struct kb_snapshot_list *l, size_t *cap, const char *id,
                         Kbackup__Snapshot *s);
/* Oldest first, ties by id: the order kb_repo_snapshot_list returns. */
void kb_snapshot_list_sort(struct kb_snapshot_list *l);

/* pack_writer.c: hand a detached full pack to the background writers (blocks while
 * KB_PACK_WRITERS packs are detached); returns an earlier writer's error, if any. */
int kb_pack_writer_submit(struct kb_repo *r, struct pack_builder *b, struct kb_err *err);
/* Let the writers finish the queue, then join them. */
void kb_pack_writer_stop(struct kb_repo *r);

/* Open a stored blob (`sealed`, `len` bytes), decompress it and check it against `raw_length`
 * and `id`: the seal binds the id in format 2, recomputing the id from the plaintext as well
 * (`verify_id`; always in format 1) also catches a writer that named a chunk wrongly. The
 * plaintext is appended to out. KB_ECORRUPT with a message naming the blob. */
int kb_repo_blob_decode(struct kb_repo *r, const uint8_t id[KB_ID_LEN], const void *sealed,
                        size_t len, uint32_t raw_length, int verify_id, struct kb_buf *out,
                        struct kb_err *err);
void kb_repo_zstd_ctx_destroy(void *ctx); /* pthread key destructor */

/* Where the index places a blob (its entry) and its pack's name. KB_ENOTFOUND when the blob is
 * not in the index, -EAGAIN while its pack is being written, KB_ECORRUPT for an invalid entry. */
struct kb_blob_loc {
        struct kb_index_entry e;
        char pack[KB_ID_HEX_LEN + 1];
        int trees_only;    /* its pack holds nothing but trees (kb_index_pack_trees_only) */
        uint64_t data_end; /* where the pack's indexed blobs end (kb_index_pack_data_end) */
};
int kb_repo_blob_locate(struct kb_repo *r, const uint8_t id[KB_ID_LEN], struct kb_blob_loc *loc,
                        struct kb_err *err);
/* Decode a located blob's stored bytes (e.length of them at `sealed`) as kb_repo_blob_load does. */
int kb_repo_blob_open(struct kb_repo *r, const struct kb_blob_loc *loc, const void *sealed,
                      struct kb_buf *out, struct kb_err *err);
/* Read a located blob alone (one ranged read of its pack) and decode it. */
int kb_repo_blob_fetch(struct kb_repo *r, const struct kb_blob_loc *loc, struct kb_buf *out,
                       struct kb_err *err);

/* pack_header.c: the blob list at the end of pack `name` of `size` bytes (and the sealed header's
 * length). KB_ECORRUPT with the reason when it is damaged; free with
 * kbackup__pack_header__free_unpacked. */
int kb_pack_header_read(struct kb_repo *r, const char *name, uint64_t size,
                        Kbackup__PackHeader **out, uint32_t *hlen_out, struct kb_err *err);

#endif
