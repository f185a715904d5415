/* etcd_client.h - a small etcd v3 client over the gRPC C core: connect (plain or TLS with client
 * certificates), authenticate, Status, MemberList, the Snapshot stream, KV Range/Txn, and
 * LeaseGrant.
 *
 * One struct kb_etcd is one channel to one endpoint, for one thread at a time. Error messages
 * name the endpoint and say what went wrong in the user's terms; the codes tell them apart:
 *   -EHOSTUNREACH  unreachable (connection refused, or no answer within connect_timeout_ms)
 *   -EPROTO        TLS handshake failed (wrong CA, client certificate missing or refused), or
 *                  a plain client on a TLS port
 *   KB_EAUTH       authentication failed (wrong user or password)
 *   -EACCES        permission denied; not a root user (Snapshot); auth enabled but none given
 *   -ETIMEDOUT     no answer within timeout_ms, or a snapshot stream idle that long
 *   -ECONNRESET    connection lost during a call (e.g. the server died mid-stream)
 *   KB_EUSAGE      an endpoint or option combination that cannot work
 *   -EIO           anything else the server said (quoted in the message)
 * A token that expired is renewed once, transparently. */
#ifndef KB_ETCD_CLIENT_H
#define KB_ETCD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct kb_etcd_opts {
        const char *cacert;     /* PEM file of the CA that signed the server, or NULL */
        const char *cert;       /* client certificate PEM file, or NULL */
        const char *key;        /* client key PEM file, or NULL */
        const char *user;       /* etcd user, or NULL for no auth */
        const char *password;   /* that user's password (never logged) */
        int connect_timeout_ms; /* 0: 5000 */
        int timeout_ms; /* unary calls; also the idle limit between snapshot messages; 0: 30000 */
};

struct kb_etcd_status {
        uint64_t cluster_id;
        uint64_t member_id;
        uint64_t leader;
        uint64_t raft_index;
        uint64_t raft_term;
        uint64_t raft_applied_index;
        uint64_t revision; /* header revision at the time of the call */
        int64_t db_size;
        char version[32];
        int is_learner;
        char errors[256]; /* the member's own alarms/errors, joined; empty when healthy */
};

struct kb_etcd_member {
        uint64_t id;
        char name[128];
};

struct kb_etcd;

/* Connect to one endpoint ("http://H:P" or "https://H:P"; https without cacert trusts the
 * system roots; a bare "H:P" is TLS when cacert or cert is given). With a user,
 * authenticates at once, so a wrong password fails here. */
int kb_etcd_connect(const char *endpoint, const struct kb_etcd_opts *opts, struct kb_etcd **out,
                    struct kb_err *err);
void kb_etcd_close(struct kb_etcd *c);
const char *kb_etcd_endpoint(const struct kb_etcd *c);

int kb_etcd_status(struct kb_etcd *c, struct kb_etcd_status *st, struct kb_err *err);
/* Members of the cluster; *out is malloc'd, free() it. */
int kb_etcd_members(struct kb_etcd *c, struct kb_etcd_member **out, size_t *n, struct kb_err *err);

/* Stream Maintenance/Snapshot. cb gets the stream's bytes in order (the database, then its
 * 32-byte sha256 trailer, as the server sends them) straight from gRPC's receive buffers, in
 * pieces that may end anywhere: one or more per message. Returns 0 only when the stream
 * ended with status OK; a non-zero return from cb cancels the call and is returned (err keeps
 * the message if cb set err->code to that value, else gets a generic one). There is no deadline
 * for the whole stream, but timeout_ms without a message fails it. */
typedef int (*kb_etcd_stream_cb)(const uint8_t *data, size_t len, void *arg);
int kb_etcd_snapshot(struct kb_etcd *c, kb_etcd_stream_cb cb, void *arg, struct kb_err *err);

/* One key of a Range answer, or one put of a Txn (only key, val and lease are used there). The
 * pointers are valid only during the callback. */
struct kb_etcd_kv {
        const uint8_t *key;
        size_t klen;
        const uint8_t *val;
        size_t vlen;
        int64_t create_rev;
        int64_t mod_rev;
        int64_t version;
        int64_t lease;
};

/* Put one key. */
int kb_etcd_put(struct kb_etcd *c, const void *key, size_t klen, const void *val, size_t vlen,
                struct kb_err *err);

/* Put n keys in one Txn, no compares. The server limits n (--max-txn-ops, default 128) and the
 * request size (--max-request-bytes, default 1.5 MiB): batch accordingly. */
int kb_etcd_txn_put(struct kb_etcd *c, const struct kb_etcd_kv *kvs, size_t n, struct kb_err *err);

/* Keys in [key, range_end) as etcd defines it (relen 0: only key; range_end "\0": every key
 * >= key), in key order, at revision (0: the current one), at most limit keys (0: all). Fetched
 * in pages, all at the revision of the first page, which *rev_out (may be NULL) receives. A
 * non-zero return from cb stops the walk and is returned (err is then cb's business). */
typedef int (*kb_etcd_kv_cb)(const struct kb_etcd_kv *kv, void *arg);
int kb_etcd_range(struct kb_etcd *c, const void *key, size_t klen, const void *range_end,
                  size_t relen, int64_t revision, int64_t limit, kb_etcd_kv_cb cb, void *arg,
                  int64_t *rev_out, struct kb_err *err);

/* One key of a conditional Txn (kb_etcd_txn_cas): the Txn succeeds only when the key's
 * mod_revision equals expect_mod (0: the key is absent). */
struct kb_etcd_cas {
        const uint8_t *key;
        size_t klen;
        const uint8_t *val;
        size_t vlen;
        int64_t lease;      /* for the put; 0: none */
        int64_t expect_mod; /* 0: must be absent */
};

/* What a key holds now, per item, when a kb_etcd_txn_cas did not succeed: kv is NULL when the key
 * is absent. A non-zero return stops and is returned. */
typedef int (*kb_etcd_cas_cb)(size_t i, const struct kb_etcd_kv *kv, void *arg);

/* One Txn: compare every item's mod_revision with its expect_mod; if all hold, put every item
 * (when do_put; with do_put 0 nothing is written either way: a check) and set *succeeded = 1.
 * Otherwise nothing is written, *succeeded = 0, and cb (may be NULL) learns what each key holds
 * now, read in the same Txn. n is limited by the server like kb_etcd_txn_put. */
int kb_etcd_txn_cas(struct kb_etcd *c, const struct kb_etcd_cas *items, size_t n, int do_put,
                    int *succeeded, kb_etcd_cas_cb cb, void *arg, struct kb_err *err);

/* Grant a lease of ttl seconds; *id (and *granted_ttl, may be NULL) from the server. */
int kb_etcd_lease_grant(struct kb_etcd *c, int64_t ttl, int64_t *id, int64_t *granted_ttl,
                        struct kb_err *err);

/* gRPC library lifetime: call once at program start / end (kb_etcd_connect inits lazily too). */
void kb_etcd_global_init(void);
void kb_etcd_global_shutdown(void);

#endif
