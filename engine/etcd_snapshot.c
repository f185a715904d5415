/* etcd_snapshot.c - the Maintenance/Snapshot stream: every message handed on as it arrives,
 * with an idle limit instead of a deadline, and the token renewed if it had expired. */
#include "etcd_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* One attempt. *delivered tells whether cb saw any bytes (then a retry would repeat them);
 * *server_failed that the server ended the call with an error, described in st. */
static int snapshot_once(struct kb_etcd *c, kb_etcd_stream_cb cb, void *arg, int *delivered,
                         int *server_failed, struct kb_etcd_rst *st, struct kb_err *err)
{
        Kbetcd__SnapshotRequest req = KBETCD__SNAPSHOT_REQUEST__INIT;
        grpc_metadata md;
        size_t nmd;
        grpc_metadata_array init_md, trail_md;
        grpc_byte_buffer *out = kb_etcd_pack(&req.base), *in = NULL;
        grpc_slice details = grpc_empty_slice();
        const char *debug = NULL;
        struct kb_etcd_pend p = {0, 0};
        grpc_op ops[KB_ETCD_OPEN_OPS], st_op, msg_op;
        grpc_call *call;
        int rc = 0, have_status = 0, malformed;

        memset(st, 0, sizeof(*st));
        /* No overall deadline: a big database takes as long as it takes. Stalls are caught
         * by the idle limit on each message instead. */
        call = grpc_channel_create_call(
            c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
            grpc_slice_from_static_string("/etcdserverpb.Maintenance/Snapshot"), NULL,
            gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        kb_etcd_token_md(c, &md, &nmd, 1);
        grpc_metadata_array_init(&init_md);
        grpc_metadata_array_init(&trail_md);
        kb_etcd_open_ops(ops, &md, nmd, out, &init_md);
        kb_etcd_status_op(&st_op, &trail_md, st, &details, &debug);
        if (grpc_call_start_batch(call, ops, 4, (void *)(uintptr_t)KB_T_START, NULL) !=
            GRPC_CALL_OK)
                goto start_failed;
        p.out |= KB_T_START;
        if (grpc_call_start_batch(call, &st_op, 1, (void *)(uintptr_t)KB_T_STATUS, NULL) !=
            GRPC_CALL_OK)
                goto start_failed;
        p.out |= KB_T_STATUS;

        for (;;) {
                memset(&msg_op, 0, sizeof(msg_op));
                msg_op.op = GRPC_OP_RECV_MESSAGE;
                msg_op.data.recv_message.recv_message = &in;
                in = NULL;
                if (grpc_call_start_batch(call, &msg_op, 1, (void *)(uintptr_t)KB_T_MSG, NULL) !=
                    GRPC_CALL_OK)
                        break; /* the call is over: the status says why */
                p.out |= KB_T_MSG;
                rc = kb_etcd_wait_tag(c, &p, KB_T_MSG, kb_etcd_after_ms(c->timeout_ms));
                if (rc == -ETIMEDOUT) {
                        rc = kb_err_set(err, -ETIMEDOUT,
                                        "etcd %s: snapshot stream stalled: no data for %d ms",
                                        c->endpoint, c->timeout_ms);
                        break;
                }
                rc = 0;
                if (!in)
                        break; /* end of stream (or failure): the status decides */
                malformed = kb_etcd_snapshot_blob(in, cb, arg, delivered, &rc) < 0;
                grpc_byte_buffer_destroy(in);
                in = NULL;
                if (malformed) {
                        rc = kb_err_set(err, KB_ECORRUPT,
                                        "etcd %s: malformed message in the snapshot stream",
                                        c->endpoint);
                        break;
                }
                if (rc) {
                        if (err && err->code != rc)
                                kb_err_set(err, rc, "etcd %s: snapshot stream cancelled: %s",
                                           c->endpoint, kb_err_name(rc));
                        break;
                }
        }
        if (!rc) {
                /* The stream has ended; the status follows at once. */
                if (kb_etcd_wait_tag(c, &p, KB_T_STATUS, kb_etcd_after_ms(c->timeout_ms)) ==
                    -ETIMEDOUT)
                        rc = kb_err_set(err, -ETIMEDOUT,
                                        "etcd %s: no end-of-stream status within %d ms",
                                        c->endpoint, c->timeout_ms);
                else
                        have_status = 1;
        }
        kb_etcd_end_call(c, call, &p, !have_status);
        kb_etcd_take_status(st, &details, debug);
        if (!rc && st->code != GRPC_STATUS_OK) {
                *server_failed = 1; /* mapped by the caller, which may re-authenticate */
                rc = -EIO;
        }
        goto out;
start_failed:
        kb_etcd_end_call(c, call, &p, 1);
        rc = kb_err_set(err, -EIO, "etcd %s: could not start Snapshot", c->endpoint);
out:
        if (in)
                grpc_byte_buffer_destroy(in);
        grpc_byte_buffer_destroy(out);
        grpc_metadata_array_destroy(&init_md);
        grpc_metadata_array_destroy(&trail_md);
        kb_etcd_token_md_unref(&md, nmd);
        return rc;
}

int kb_etcd_snapshot(struct kb_etcd *c, kb_etcd_stream_cb cb, void *arg, struct kb_err *err)
{
        struct kb_etcd_rst st;
        int delivered = 0, failed = 0, rc;

        kb_err_clear(err);
        rc = snapshot_once(c, cb, arg, &delivered, &failed, &st, err);
        if (failed && !delivered && c->user && c->token && kb_etcd_token_expired(&st)) {
                failed = 0;
                rc = kb_etcd_authenticate(c, KB_PH_AUTH, err);
                if (!rc)
                        rc = snapshot_once(c, cb, arg, &delivered, &failed, &st, err);
        }
        if (failed)
                rc = kb_etcd_map_error(c, KB_PH_SNAPSHOT, "Snapshot", &st, err);
        return rc;
}
