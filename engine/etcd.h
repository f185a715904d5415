/* etcd.h - etcd snapshots in the repository: back up a live cluster over gRPC, restore the exact
 * snapshot file that `etcdctl snapshot restore` takes. */
#ifndef KB_ETCD_H
#define KB_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "etcd_client.h"
#include "repo.h"
#include "volume.h"

#define KB_ETCD_SNAPSHOT_FILE "etcd-snapshot.db"
#define KB_ETCD_TRAILER_LEN   32

/* bbolt writes 4 KiB pages and rewrites a few scattered ones per change: small chunks dedup
 * successive snapshots far better than the volume default (measured in docs/etcd-format.md,
 * "Chunk size"). */
extern const struct kb_chunker_params kb_etcd_chunker_params;

struct kb_etcd_backup_opts {
        const char *const *endpoints;
        size_t n_endpoints;
        struct kb_etcd_opts conn;
        const char *name; /* defaults to "etcd-<cluster id in hex>" */
        const char *const *tags;
        size_t ntags;
        unsigned threads;
        /* Members whose applied raft index trails the most advanced member by more than this are
         * refused as sources. */
        uint64_t max_lag;
        const char *set_id;  /* member of this backup set (backup --cluster), or NULL */
        const char *cluster; /* ... taken from this cluster profile, or NULL */
        kb_progress_cb progress;
        kb_warn_cb warn; /* a member that could not be asked or was refused, and why */
        void *cb_arg;
};

struct kb_etcd_backup_result {
        char snapshot_id[KB_ID_HEX_LEN + 1];
        char endpoint[256];
        char member_name[128];
        uint64_t member_id, cluster_id, revision;
        int leader;
        uint64_t bytes_read, bytes_new, bytes_stored;
        double duration_sec;
};

/* Choose a member, stream its snapshot through the chunker into the repository, verify the sha256
 * trailer while streaming, and record the snapshot. Nothing is recorded unless the whole stream
 * arrived and verified. */
int kb_etcd_backup(struct kb_repo *repo, const struct kb_etcd_backup_opts *opts,
                   struct kb_etcd_backup_result *res, struct kb_err *err);

/* Write the snapshot file (database + trailer) to `output` atomically: a temp file beside it,
 * fsync, rename. Refuses to replace an existing file. The trailer is checked again as it is
 * written. */
int kb_etcd_restore_file(struct kb_repo *repo, const Kbackup__Snapshot *snap, const char *output,
                         kb_progress_cb progress, void *cb_arg, struct kb_err *err);

/* Find the snapshot file node (KB_ETCD_SNAPSHOT_FILE) in an etcd snapshot's tree. On success the
 * caller frees *tree (kb_repo_tree_free), which owns *node. KB_EUSAGE for a snapshot of
 * another kind. */
int kb_etcd_snapshot_node(struct kb_repo *repo, const Kbackup__Snapshot *snap, Kbackup__Tree **tree,
                          const Kbackup__Node **node, struct kb_err *err);

/* Check a complete stream buffer's trailer (database || sha256(database)). KB_ECORRUPT on a
 * mismatch or a stream shorter than the trailer. */
int kb_etcd_verify_stream(const uint8_t *data, size_t len, struct kb_err *err);

/* Incremental form of the same check, as the stream arrives. */
struct kb_etcd_hasher {
        void *md; /* OpenSSL digest context */
        uint8_t tail[KB_ETCD_TRAILER_LEN];
        size_t tail_len;
        uint64_t total;
};
int kb_etcd_hasher_init(struct kb_etcd_hasher *h, struct kb_err *err);
/* Release the context (final does it too; safe to call twice). */
void kb_etcd_hasher_free(struct kb_etcd_hasher *h);
void kb_etcd_hasher_update(struct kb_etcd_hasher *h, const uint8_t *data, size_t len);
/* 0 when the last 32 bytes are the sha256 of everything before them; the trailer is copied out. */
int kb_etcd_hasher_final(struct kb_etcd_hasher *h, uint8_t trailer[KB_ETCD_TRAILER_LEN],
                         struct kb_err *err);

#endif
