/* etcd_client.h - a small etcd v3 client over the gRPC C core: connect (plain or TLS with client
 * certificates), authenticate, Status, MemberList, the Snapshot stream, and KV Range/Txn.
 *
 * One struct kb_etcd is one channel to one endpoint. Error messages name the endpoint and say what
 * went wrong in the user's terms: unreachable, TLS handshake failed, permission denied, not root.
 */
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

/* Connect to one endpoint ("http://H:P" or "https://H:P"; https needs cacert). With a user,
 * authenticates at once, so a wrong password fails here. */
int kb_etcd_connect(const char *endpoint, const struct kb_etcd_opts *opts, struct kb_etcd **out,
                    struct kb_err *err);
void kb_etcd_close(struct kb_etcd *c);
const char *kb_etcd_endpoint(const struct kb_etcd *c);

int kb_etcd_status(struct kb_etcd *c, struct kb_etcd_status *st, struct kb_err *err);
/* Members of the cluster; *out is malloc'd, free() it. */
int kb_etcd_members(struct kb_etcd *c, struct kb_etcd_member **out, size_t *n, struct kb_err *err);

/* Stream Maintenance/Snapshot. cb gets every blob message's bytes in order (the database, then the
 * 32-byte sha256 trailer message, exactly as the server sends them). Returns 0 only when the stream
 * ended with status OK; a non-zero return from cb cancels the call and is returned. */
typedef int (*kb_etcd_stream_cb)(const uint8_t *data, size_t len, void *arg);
int kb_etcd_snapshot(struct kb_etcd *c, kb_etcd_stream_cb cb, void *arg, struct kb_err *err);

/* gRPC library lifetime: call once at program start / end (kb_etcd_connect inits lazily too). */
void kb_etcd_global_init(void);
void kb_etcd_global_shutdown(void);

#endif
