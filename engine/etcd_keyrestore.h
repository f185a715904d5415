/* etcd_keyrestore.h - put selected keys of a stored etcd snapshot into a live etcd (a DR cluster),
 * as opposed to kb_etcd_restore_file, which writes the whole snapshot file for `etcdctl snapshot
 * restore`. Keys are selected by prefix, exclusion and Kubernetes namespace, written in Txn
 * batches that respect the target's limits, and never blindly: every batch compares each key's
 * mod_revision first, so existing keys are detected as conflicts (or as already restored when
 * they hold the same value, which makes re-runs idempotent). */
#ifndef KB_ETCD_KEYRESTORE_H
#define KB_ETCD_KEYRESTORE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "etcd_client.h"
#include "repo.h"
#include "volume.h"

/* Which keys. A key is selected when it starts with one of `prefixes` (none given: any key), and
 * belongs to one of `namespaces` (none given: any key; see kb_k8s_key_namespace), and starts with
 * none of `excludes`. Every filter narrows the selection. */
struct kb_etcd_keyfilter {
        const char *const *prefixes;
        size_t n_prefixes;
        const char *const *excludes;
        size_t n_excludes;
        const char *const *namespaces;
        size_t n_namespaces;
};

/* The Kubernetes namespace of an API server key under /registry/ (docs/dr-runbook.md lists the
 * mapping and its limits): 1 with the namespace's bytes in *ns for /registry/namespaces/NS,
 * /registry/RESOURCE/NS/NAME, /registry/services/{specs,endpoints}/NS/NAME and
 * /registry/GROUP.WITH.DOTS/RESOURCE/NS/NAME; 0 for anything else (cluster-scoped objects,
 * other layouts, keys outside /registry/). */
int kb_k8s_key_namespace(const uint8_t *key, size_t len, const uint8_t **ns, size_t *ns_len);

int kb_etcd_keyfilter_match(const struct kb_etcd_keyfilter *f, const uint8_t *key, size_t len);

enum kb_etcd_on_conflict {
        KB_CONFLICT_SKIP = 0,  /* leave the target's value, count it */
        KB_CONFLICT_OVERWRITE, /* put ours */
        KB_CONFLICT_FAIL,      /* write nothing of the batch that holds it, and stop */
};

#define KB_ETCD_DEFAULT_TXN_OPS       128           /* etcd's --max-txn-ops default */
#define KB_ETCD_DEFAULT_REQUEST_BYTES (1536 * 1024) /* etcd's --max-request-bytes default */
#define KB_ETCD_DEFAULT_LEASE_TTL     3600

struct kb_etcd_keyrestore_opts {
        const char *const *endpoints; /* tried in order; the first that answers is used */
        size_t n_endpoints;
        struct kb_etcd_opts conn;
        struct kb_etcd_keyfilter filter;
        enum kb_etcd_on_conflict on_conflict;
        /* Keys attached to a lease are skipped unless this is set; then one new lease is granted
         * per original lease, with the TTL the snapshot's lease bucket records for it (or
         * default_lease_ttl when it is not there). */
        int include_leased;
        int64_t default_lease_ttl; /* 0: KB_ETCD_DEFAULT_LEASE_TTL */
        int dry_run;               /* read the target, write nothing, count what would happen */
        unsigned max_txn_ops;      /* 0: KB_ETCD_DEFAULT_TXN_OPS */
        size_t max_request_bytes;  /* 0: KB_ETCD_DEFAULT_REQUEST_BYTES */
        kb_progress_cb progress;   /* files_* count keys, bytes_* key+value bytes */
        kb_warn_cb warn;
        void *cb_arg;
};

struct kb_etcd_keyrestore_result {
        uint64_t keys_total;     /* live keys in the snapshot */
        uint64_t selected;       /* keys the filter selected (leased ones included) */
        uint64_t written;        /* put (dry run: would be) */
        uint64_t overwritten;    /* of written: replaced another value */
        uint64_t skipped;        /* already there with the same value */
        uint64_t conflicts;      /* there with another value */
        uint64_t leased_skipped; /* attached to a lease, not included */
        uint64_t leases_granted; /* dry run: that would be */
        uint64_t failed;         /* too large for one request to the target */
        uint64_t bytes_written;  /* key + value bytes of the written keys */
        uint64_t txns;
        int64_t revision; /* the snapshot's */
        char endpoint[256];
        double duration_sec;
};

/* Restore the selected keys of etcd snapshot `snap` into the cluster at opts->endpoints. Returns
 * 0; -EEXIST when on_conflict is FAIL and a conflict stopped the restore (batches before the one
 * that holds it were written, nothing of that one; in a dry run: the conflicts a real run would
 * stop at); KB_EPARTIAL when some keys were too large to write (each reported through warn); or
 * another negative code (then res says how far it got). */
int kb_etcd_keyrestore(struct kb_repo *repo, const Kbackup__Snapshot *snap,
                       const struct kb_etcd_keyrestore_opts *opts,
                       struct kb_etcd_keyrestore_result *res, struct kb_err *err);

#endif
