/* etcd_keyspace.h - the live key space inside an etcd (3.4) backend database: what
 * `etcdctl get --prefix "" --rev R` would return at the snapshot's revision R, read from the bbolt
 * file without running etcd (and, for stored snapshots, straight from the repository's chunks).
 *
 * Memory: one entry per distinct key of the database's history that matches the prefix (keys
 * deleted before the snapshot included, until a compaction drops their tombstones): about 100
 * bytes plus the key itself (an 88-byte entry, its key in a block arena, 8-16 bytes of hash table
 * during the load). Values are not kept: each entry records where its value lies in the database
 * and a 64-bit hash of it, and kb_etcd_keyspace_value reads it again on demand. So a million
 * 60-byte Kubernetes keys take about 160 MB, whatever the size of the values. */
#ifndef KB_ETCD_KEYSPACE_H
#define KB_ETCD_KEYSPACE_H

#include <stddef.h>
#include <stdint.h>

#include "bbolt.h"
#include "buf.h"
#include "err.h"
#include "repo.h"

/* One live key at the snapshot's revision, as mvccpb.KeyValue has it. */
struct kb_etcd_entry {
        const uint8_t *key;
        uint32_t key_len;
        uint32_t value_len;
        uint64_t value_off;  /* where the value lies in the database */
        uint64_t value_hash; /* SipHash-2-4 of the value under a fixed key (equal values, equal
                                hashes: used to compare snapshots without reading values) */
        int64_t create_revision, mod_revision, version, lease;
        /* The record's revision (the bbolt key); mod_revision for a put. */
        uint64_t rev_main, rev_sub;
        uint8_t tombstone; /* internal: never set in a loaded key space */
};

struct kb_etcd_keyspace_info {
        int64_t revision;         /* the snapshot's revision: what `--rev R` to compare at */
        int64_t compact_revision; /* finishedCompactRev, 0 if none */
        int64_t scheduled_compact_revision; /* scheduledCompactRev, 0 if none */
        uint64_t consistent_index;          /* raft index applied to this database */
        uint64_t records;                   /* revisions in the key bucket (puts and tombstones) */
        uint64_t tombstones;
        uint64_t keys;        /* live keys matching the prefix */
        uint64_t value_bytes; /* their values' total size */
        struct kb_bbolt_info db;
};

struct kb_etcd_keyspace;

/* Scan the `key` bucket (in file order: sequential over stored chunks) and keep the latest
 * revision of every key that starts with prefix (NULL or empty: all); tombstones drop keys. The
 * key space keeps a pointer to db for reading values: close db only after freeing it. KB_ECORRUPT
 * for a damaged database or a record that is not a revision/KeyValue pair, KB_EFORMAT when the
 * file is not an etcd database. */
int kb_etcd_keyspace_load(struct kb_bbolt *db, const void *prefix, size_t prefix_len,
                          struct kb_etcd_keyspace **out, struct kb_err *err);
void kb_etcd_keyspace_free(struct kb_etcd_keyspace *ks);

const struct kb_etcd_keyspace_info *kb_etcd_keyspace_info(const struct kb_etcd_keyspace *ks);
/* Live keys sorted by key (bytewise, as etcd orders them). */
size_t kb_etcd_keyspace_count(const struct kb_etcd_keyspace *ks);
const struct kb_etcd_entry *kb_etcd_keyspace_at(const struct kb_etcd_keyspace *ks, size_t i);
const struct kb_etcd_entry *kb_etcd_keyspace_find(const struct kb_etcd_keyspace *ks,
                                                  const void *key, size_t key_len);

/* Append kv's value to out, read again from the database and checked against its hash. */
int kb_etcd_keyspace_value(struct kb_etcd_keyspace *ks, const struct kb_etcd_entry *kv,
                           struct kb_buf *out, struct kb_err *err);

/* Every live key with its value. file_order = 1 reads values in database order (fast over stored
 * chunks; keys then come in no particular order), 0 in key order. A non-zero return of cb stops
 * and is returned. */
typedef int (*kb_etcd_entry_cb)(const struct kb_etcd_entry *kv, const uint8_t *value, void *arg);
int kb_etcd_keyspace_each(struct kb_etcd_keyspace *ks, int file_order, kb_etcd_entry_cb cb,
                          void *arg, struct kb_err *err);

/* Differences from a to b, in key order: '+' only in b, '-' only in a, '~' in both with another
 * value (size or hash). A non-zero return of cb stops and is returned. */
typedef int (*kb_etcd_diff_cb)(char op, const struct kb_etcd_entry *a,
                               const struct kb_etcd_entry *b, void *arg);
int kb_etcd_keyspace_diff(const struct kb_etcd_keyspace *a, const struct kb_etcd_keyspace *b,
                          kb_etcd_diff_cb cb, void *arg);

/* Decode an mvccpb.KeyValue without copying: fields 1-6, unknown fields skipped, the last
 * occurrence of a field wins (protobuf rules). Offsets of key and value are into p. 0 or
 * KB_ECORRUPT. */
struct kb_etcd_kv_wire {
        size_t key_off, key_len, value_off, value_len;
        int64_t create_revision, mod_revision, version, lease;
};
int kb_etcd_kv_decode(const uint8_t *p, size_t n, struct kb_etcd_kv_wire *out);

/* The database of a stored etcd snapshot, read through its chunks (never written to disk): a
 * small cache of decrypted chunks serves the reader's page reads. */
int kb_etcd_snapshot_db_open(struct kb_repo *repo, const Kbackup__Snapshot *snap,
                             struct kb_bbolt **out, struct kb_err *err);

#endif
