/* etcd_int.h - what the etcd client's files (etcd_client.c, etcd_snapshot.c, etcd_kv.c) share:
 * the client struct and the call machinery. Not for use outside them. */
#ifndef KB_ETCD_INT_H
#define KB_ETCD_INT_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "etcd.pb-c.h"
#include "etcd_client.h"

#define KB_ETCD_GRACE_MS                                                                           \
        5000 /* calls end by their own deadline; this only guards against a bug                    \
              */

/* Completion-queue tags of one call. */
enum { KB_T_START = 1, KB_T_STATUS = 2, KB_T_MSG = 4, KB_T_UNARY = 8 };

struct kb_etcd {
        char endpoint[256];
        char target[256];
        int tls;
        int has_ca;   /* a CA file was given (else the system's roots) */
        int has_cert; /* a client certificate was given */
        int connect_timeout_ms;
        int timeout_ms;
        char *user;
        char *password;
        char *token; /* from Authenticate; sent as "token" metadata */
        grpc_channel *ch;
        grpc_completion_queue *cq;
};

/* How a call ended. */
struct kb_etcd_rst {
        grpc_status_code code;
        char details[256];
        char debug[512]; /* gRPC's own error string */
};

/* Which call failed, for messages that say what the user can do about it. */
enum kb_etcd_phase { KB_PH_CONNECT, KB_PH_AUTH, KB_PH_CALL, KB_PH_SNAPSHOT };

/* Events of one call: which tags are still outstanding and which completed successfully. */
struct kb_etcd_pend {
        unsigned out;
        unsigned ok;
};

gpr_timespec kb_etcd_after_ms(int ms);
grpc_byte_buffer *kb_etcd_pack(const ProtobufCMessage *m);
ProtobufCMessage *kb_etcd_unpack(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb);
/* Pass a received SnapshotResponse's blob to cb without copying it, in one piece per slice it
 * spans (none for an empty blob); *delivered is set once cb has seen a byte, and *cb_rc is what
 * cb last returned (0 if not called; a non-zero return ends the message). Returns 0, or
 * KB_ECORRUPT for a malformed message, which cb never sees. etcd_snapmsg.c. */
int kb_etcd_snapshot_blob(grpc_byte_buffer *bb, kb_etcd_stream_cb cb, void *arg, int *delivered,
                          int *cb_rc);

/* Wait until tag completes. 0: it succeeded; -EIO: it failed; -ETIMEDOUT: dl passed first;
 * -EPIPE: the queue is shut down. */
int kb_etcd_wait_tag(struct kb_etcd *c, struct kb_etcd_pend *p, unsigned tag, gpr_timespec dl);
/* Cancel if asked, collect every outstanding event, release the call. */
void kb_etcd_end_call(struct kb_etcd *c, grpc_call *call, struct kb_etcd_pend *p, int cancel);
/* Fill st from a finished RECV_STATUS_ON_CLIENT, releasing details and debug. */
void kb_etcd_take_status(struct kb_etcd_rst *st, grpc_slice *details, const char *debug);

/* The call's initial metadata: the token if we have one (n = 0 or 1); unref when done. */
void kb_etcd_token_md(struct kb_etcd *c, grpc_metadata *md, size_t *n, int with_token);
void kb_etcd_token_md_unref(grpc_metadata *md, size_t n);
/* The server refused the token because it expired or predates an auth change. */
int kb_etcd_token_expired(const struct kb_etcd_rst *st);
int kb_etcd_authenticate(struct kb_etcd *c, enum kb_etcd_phase ph, struct kb_err *err);

/* The opening ops of a call: send the initial metadata (md: nmd = 0 or 1 entries) and the
 * request `out`, close the sending side, receive the initial metadata into init_md. */
#define KB_ETCD_OPEN_OPS 4
void kb_etcd_open_ops(grpc_op ops[KB_ETCD_OPEN_OPS], grpc_metadata *md, size_t nmd,
                      grpc_byte_buffer *out, grpc_metadata_array *init_md);
/* The op that receives the final status into st->code, details and debug. */
void kb_etcd_status_op(grpc_op *op, grpc_metadata_array *trail_md, struct kb_etcd_rst *st,
                       grpc_slice *details, const char **debug);

/* Turn a failed call into one line in err, and a code (see etcd_client.h). */
int kb_etcd_map_error(struct kb_etcd *c, enum kb_etcd_phase ph, const char *method,
                      const struct kb_etcd_rst *st, struct kb_err *err);

/* A unary call to method (a path) with the token; an expired token is renewed once and the call
 * retried. 0 with *resp (free with protobuf_c_message_free_unpacked), or a mapped error. */
int kb_etcd_unary(struct kb_etcd *c, enum kb_etcd_phase ph, const char *method,
                  const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
                  ProtobufCMessage **resp, struct kb_err *err);

#endif
