/* repo.h - a kbackup repository: keys, config, chunk storage through packs and the index, and
 * snapshot records. This is the engine's content-addressed store; everything above it (volume and
 * etcd backup) speaks in blobs and snapshots, everything below it in backend objects.
 *
 * Thread safety: after open, kb_repo_blob_* and kb_repo_blob_known may be called from many threads
 * at once; snapshot and flush calls from one thread. */
#ifndef KB_REPO_H
#define KB_REPO_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "chunker.h"
#include "crypto.h"
#include "err.h"
#include "backend.h"
#include "kbackup.pb-c.h"

struct kb_repo;

enum kb_blob_type {
        KB_BLOB_DATA = KBACKUP__BLOB_TYPE__BLOB_DATA,
        KB_BLOB_TREE = KBACKUP__BLOB_TYPE__BLOB_TREE,
};

/* Password-derivation cost. Tests may lower it through KBACKUP_TEST_KDF=fast (documented as
 * test-only); real repositories use the interactive-plus defaults. */
struct kb_kdf_params {
        uint64_t opslimit;
        uint64_t memlimit;
};
void kb_kdf_params_default(struct kb_kdf_params *p);

enum {
        KB_REPO_READ_ONLY = 1 << 0, /* never write (restore from a read-only replica) */
        /* Do not load the index at open: the caller takes a lock first, then calls
         * kb_repo_index_reload (an index loaded before the lock may name packs a prune that
         * finished meanwhile has deleted). */
        KB_REPO_NO_INDEX = 1 << 1,
};

/* Create a new repository at `location` protected by `password`, naming chunks with `id_hash`
 * ("keyed-blake3", "hmac-sha256"; NULL: the default, keyed BLAKE3). Fails with -EEXIST when one
 * is already there. */
int kb_repo_init(const char *location, const char *password, size_t pwlen,
                 const struct kb_kdf_params *kdf, const char *id_hash, struct kb_err *err);

/* Open with a password: tries every key file; KB_EAUTH when none opens. Loads the index. */
int kb_repo_open(const char *location, const char *password, size_t pwlen, int flags,
                 struct kb_repo **out, struct kb_err *err);
/* Closes without flushing: blobs saved since the last flush are abandoned (their packs, if
 * written, become unreferenced leftovers that prune removes). */
void kb_repo_close(struct kb_repo *r);

/* Forget the in-memory index and load every index file again. Only between operations: no blob
 * may be pending (call after open or after kb_repo_flush). */
int kb_repo_index_reload(struct kb_repo *r, struct kb_err *err);

/* Opened read-only (by flag, or because the backend cannot be written)? */
int kb_repo_read_only(const struct kb_repo *r);

struct kb_backend *kb_repo_backend(struct kb_repo *r);
const struct kb_chunker_params *kb_repo_chunker_params(struct kb_repo *r);
const uint8_t *kb_repo_chunker_seed(struct kb_repo *r);

/* Keyed id of plaintext blob content. */
void kb_repo_blob_id(struct kb_repo *r, const void *data, size_t len, uint8_t id[KB_ID_LEN]);

/* Is the blob already stored (or queued in a pack being written by this process)? */
int kb_repo_blob_known(struct kb_repo *r, const uint8_t id[KB_ID_LEN]);

struct kb_save_result {
        int added;             /* 1 if this call stored it, 0 if it was already known */
        uint64_t stored_bytes; /* bytes added to a pack (0 when known) */
};

/* Store a blob if it is not known yet. `id` must be kb_repo_blob_id() of the data (computed by the
 * caller so workers can hash in parallel). Compresses with zstd when that shrinks it, seals it and
 * appends it to the current pack; full packs are written to the backend. Thread-safe. */
int kb_repo_blob_save(struct kb_repo *r, enum kb_blob_type type, const uint8_t id[KB_ID_LEN],
                      const void *data, size_t len, struct kb_save_result *res, struct kb_err *err);
/* Flags of kb_repo_blob_save_flags. KB_SAVE_NO_COMPRESS: the caller knows the bytes are already
 * compressed (a chunk of a gzip or JPEG file: sniff.h): stored raw without trying zstd. */
enum { KB_SAVE_NO_COMPRESS = 1 };
int kb_repo_blob_save_flags(struct kb_repo *r, enum kb_blob_type type, unsigned flags,
                            const uint8_t id[KB_ID_LEN], const void *data, size_t len,
                            struct kb_save_result *res, struct kb_err *err);

/* kb_repo_blob_load for a tree (a directory record): read with its neighbours, one block of its
 * pack at a time, and served from the blocks kept (treecache.h). */
int kb_repo_blob_load_tree(struct kb_repo *r, const uint8_t id[KB_ID_LEN], struct kb_buf *out,
                           struct kb_err *err);
/* Bring the block of tree `id` into those kept, for a load to come (errors are left to it). */
void kb_repo_tree_prefetch(struct kb_repo *r, const uint8_t id[KB_ID_LEN]);
/* Read, verify (AEAD and id) and decompress a blob, appending its plaintext to out. */
int kb_repo_blob_load(struct kb_repo *r, const uint8_t id[KB_ID_LEN], struct kb_buf *out,
                      struct kb_err *err);

/* Plaintext length of a stored blob, from the index (nothing is read). KB_ENOTFOUND when absent. */
int kb_repo_blob_size(struct kb_repo *r, const uint8_t id[KB_ID_LEN], uint32_t *raw_len);

/* Before a backup: index the packs an interrupted backup wrote but no index file names, so their
 * chunks are reused instead of uploaded again; the next flush names them in an index file.
 * Damaged ones are left alone (check reports them, prune removes them). */
int kb_repo_adopt_packs(struct kb_repo *r, uint64_t *packs, uint64_t *blobs, struct kb_err *err);

/* Write the open pack and a new index file for every pack written since the last flush. When this
 * returns 0, every blob saved so far is durable and findable by a fresh open. */
int kb_repo_flush(struct kb_repo *r, struct kb_err *err);

/* Encode, seal and store a snapshot record (after kb_repo_flush). Writes its id as hex. */
int kb_repo_snapshot_save(struct kb_repo *r, const Kbackup__Snapshot *snap,
                          char id_hex[KB_ID_HEX_LEN + 1], struct kb_err *err);

/* What every new snapshot records about its making: time, host, user, program version, kind,
 * name and tags (parsed from "KEY=VALUE"; KB_EUSAGE for a malformed one). Fills `snap` (which
 * must be initialised) with pointers into `m`; free with kb_snapshot_meta_free after saving. */
struct kb_snapshot_meta {
        char host[256];
        char user[256];
        Kbackup__Tag **tags;
        size_t ntags;
};
int kb_snapshot_meta_init(struct kb_snapshot_meta *m, Kbackup__Snapshot *snap, const char *kind,
                          const char *name, const char *const *tags, size_t ntags,
                          struct kb_err *err);
void kb_snapshot_meta_free(struct kb_snapshot_meta *m);

struct kb_snapshot_entry {
        char id[KB_ID_HEX_LEN + 1];
        Kbackup__Snapshot *snap; /* owned by the list */
};

struct kb_snapshot_list {
        struct kb_snapshot_entry *items; /* sorted by time, oldest first */
        size_t count;
};

/* Load one snapshot record by full id; *out is freed with kbackup__snapshot__free_unpacked. */
int kb_repo_snapshot_load(struct kb_repo *r, const char *id, Kbackup__Snapshot **out,
                          struct kb_err *err);
/* Remove a snapshot record (forget). The data it referenced stays until prune. */
int kb_repo_snapshot_remove(struct kb_repo *r, const char *id, struct kb_err *err);

/* Load every snapshot record. An unreadable one fails the call with its id named; one removed
 * while listing (a concurrent forget) is skipped. */
int kb_repo_snapshot_list(struct kb_repo *r, struct kb_snapshot_list *out, struct kb_err *err);
void kb_snapshot_list_free(struct kb_snapshot_list *l);

/* For readers opened with KB_REPO_NO_INDEX: list the snapshots, then load the index. A snapshot
 * recorded meanwhile had its index files written before it, so the index loaded second covers
 * every snapshot listed (the other order can miss the newest snapshot's chunks). */
int kb_repo_snapshot_list_indexed(struct kb_repo *r, struct kb_snapshot_list *out,
                                  struct kb_err *err);

/* Find a snapshot by full id, unique prefix or "latest" (optionally only of `kind`, may be NULL).
 * Returns an index into l->items, or KB_ENOTFOUND / KB_EAMBIG. */
int kb_snapshot_list_find(const struct kb_snapshot_list *l, const char *ref, const char *kind,
                          struct kb_err *err);

/* Seal `len` bytes with the master key and store them as a new object named by the hash of the
 * sealed bytes (for index, snapshot and other whole-object records). */
int kb_repo_object_put(struct kb_repo *r, enum kb_obj_type type, const void *data, size_t len,
                       char name_hex[KB_ID_HEX_LEN + 1], struct kb_err *err);
/* Load and unseal a whole object, appending the plaintext to out. A failed unseal
 * (KB_ECORRUPT) leaves a message that does not name the object: the caller does. */
int kb_repo_object_get(struct kb_repo *r, enum kb_obj_type type, const char *name,
                       struct kb_buf *out, struct kb_err *err);
/* kb_backend_list for the repository's own objects: only names that are object ids (64 hex
 * digits; kbackup names every key, pack, index, snapshot and lock by one) reach cb. Anything else
 * in an object directory (a README, a stray upload) is not kbackup's: never read, never an error
 * (fetched, it would fail to unseal and stop every command that opens the repository). */
int kb_repo_list(struct kb_repo *r, enum kb_obj_type type, kb_backend_list_cb cb, void *arg,
                 struct kb_err *err);
/* One object of kb_repo_object_each: rc is what kb_repo_object_get gave for it (0, or the error
 * described in ferr, such as KB_ENOTFOUND for an object removed since the listing), plain its
 * plaintext. A negative return (with the callback's own error set) stops the walk. */
typedef int (*kb_repo_object_cb)(const char *name, int rc, struct kb_buf *plain,
                                 const struct kb_err *ferr, void *arg);
/* Every object of `type` in listing order, handed to cb on the calling thread while threads
 * fetch and unseal the next ones (objfetch.c): over S3 a round trip each, which one at a time
 * cost every command a second per hundred objects. Listed by kb_repo_list. Returns the
 * listing's error or cb's. */
int kb_repo_object_each(struct kb_repo *r, enum kb_obj_type type, kb_repo_object_cb cb, void *arg,
                        struct kb_err *err);

/* zstd level for new blobs (default KB_REPO_DEFAULT_ZSTD_LEVEL): 1-19, negative for zstd's
 * faster levels, 0 for none. A chunk that compression does not shrink is stored raw; above level
 * 3, one whose first 64 KiB do not shrink by 3% is not compressed further (docs/performance.md). */
#define KB_REPO_DEFAULT_ZSTD_LEVEL 1
#define KB_REPO_MAX_ZSTD_LEVEL     19
#define KB_REPO_MIN_ZSTD_LEVEL     (-7)
void kb_repo_set_compression(struct kb_repo *r, int level);

/* Largest blob the repository stores or accepts on load. */
#define KB_BLOB_MAX (256u << 20)

/* Free the calling thread's compression contexts (worker threads call it before they exit). */
void kb_repo_zstd_release_thread(struct kb_repo *r);

/* Serialise and store / load-and-parse a tree blob. */
int kb_repo_tree_save(struct kb_repo *r, const Kbackup__Tree *tree, uint8_t id[KB_ID_LEN],
                      struct kb_save_result *res, struct kb_err *err);
int kb_repo_tree_load(struct kb_repo *r, const uint8_t id[KB_ID_LEN], Kbackup__Tree **out,
                      struct kb_err *err);
/* An empty tree that kb_repo_tree_free takes (0 or -ENOMEM). */
int kb_repo_tree_new_empty(Kbackup__Tree **out);
/* Free a tree from kb_repo_tree_load or kb_repo_tree_new_empty (never with protobuf-c's own
 * free: it lives in an arena). NULL is fine. */
void kb_repo_tree_free(Kbackup__Tree *t);

#endif
