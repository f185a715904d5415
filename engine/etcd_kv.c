/* etcd_kv.c - KV calls: Put, a Txn of puts, a conditional Txn, Range walked in pages at one
 * revision; and LeaseGrant. */
#include "etcd_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define RANGE_PAGE 1000

int kb_etcd_put(struct kb_etcd *c, const void *key, size_t klen, const void *val, size_t vlen,
                struct kb_err *err)
{
        Kbetcd__PutRequest req = KBETCD__PUT_REQUEST__INIT;
        ProtobufCMessage *m;
        int rc;

        req.key.data = (uint8_t *)key;
        req.key.len = klen;
        req.value.data = (uint8_t *)val;
        req.value.len = vlen;
        rc = kb_etcd_unary(c, KB_PH_CALL, "/etcdserverpb.KV/Put", &req.base,
                           &kbetcd__put_response__descriptor, &m, err);
        if (!rc)
                protobuf_c_message_free_unpacked(m, NULL);
        return rc;
}

int kb_etcd_txn_put(struct kb_etcd *c, const struct kb_etcd_kv *kvs, size_t n, struct kb_err *err)
{
        Kbetcd__TxnRequest req = KBETCD__TXN_REQUEST__INIT;
        Kbetcd__RequestOp *ops, **opp;
        Kbetcd__PutRequest *puts;
        ProtobufCMessage *m;
        size_t i;
        int rc;

        if (!n)
                return 0;
        ops = calloc(n, sizeof(*ops));
        opp = calloc(n, sizeof(*opp));
        puts = calloc(n, sizeof(*puts));
        if (!ops || !opp || !puts) {
                rc = kb_err_sys(err, -ENOMEM, "etcd txn of %zu puts", n);
                goto out;
        }
        for (i = 0; i < n; i++) {
                kbetcd__put_request__init(&puts[i]);
                puts[i].key.data = (uint8_t *)kvs[i].key;
                puts[i].key.len = kvs[i].klen;
                puts[i].value.data = (uint8_t *)kvs[i].val;
                puts[i].value.len = kvs[i].vlen;
                puts[i].lease = kvs[i].lease;
                kbetcd__request_op__init(&ops[i]);
                ops[i].request_case = KBETCD__REQUEST_OP__REQUEST_REQUEST_PUT;
                ops[i].request_put = &puts[i];
                opp[i] = &ops[i];
        }
        req.n_success = n;
        req.success = opp;
        rc = kb_etcd_unary(c, KB_PH_CALL, "/etcdserverpb.KV/Txn", &req.base,
                           &kbetcd__txn_response__descriptor, &m, err);
        if (!rc)
                protobuf_c_message_free_unpacked(m, NULL);
out:
        free(ops);
        free(opp);
        free(puts);
        return rc;
}

int kb_etcd_range(struct kb_etcd *c, const void *key, size_t klen, const void *range_end,
                  size_t relen, int64_t revision, int64_t limit, kb_etcd_kv_cb cb, void *arg,
                  int64_t *rev_out, struct kb_err *err)
{
        Kbetcd__RangeRequest req = KBETCD__RANGE_REQUEST__INIT;
        uint8_t *cur = NULL;
        int64_t page = RANGE_PAGE, got = 0;
        int rc = 0;

        cur = malloc(klen + 1);
        if (!cur)
                return kb_err_sys(err, -ENOMEM, "etcd range");
        memcpy(cur, key, klen);
        req.key.data = cur;
        req.key.len = klen;
        req.range_end.data = (uint8_t *)range_end;
        req.range_end.len = relen;
        for (;;) {
                Kbetcd__RangeResponse *r;
                ProtobufCMessage *m;
                struct kb_etcd_kv kv;
                size_t i;

                req.revision = revision;
                req.limit = limit && limit - got < page ? limit - got : page;
                rc = kb_etcd_unary(c, KB_PH_CALL, "/etcdserverpb.KV/Range", &req.base,
                                   &kbetcd__range_response__descriptor, &m, err);
                if (rc == -EMSGSIZE && page > 1) {
                        page /= 2; /* a page of big values: ask for fewer at a time */
                        continue;
                }
                if (rc)
                        break;
                r = (Kbetcd__RangeResponse *)m;
                /* Pin the first page's revision so that the pages form one consistent view. */
                if (!revision && r->header)
                        revision = r->header->revision;
                for (i = 0; i < r->n_kvs && !rc; i++) {
                        Kbetcd__KeyValue *e = r->kvs[i];

                        kv.key = e->key.data;
                        kv.klen = e->key.len;
                        kv.val = e->value.data;
                        kv.vlen = e->value.len;
                        kv.create_rev = e->create_revision;
                        kv.mod_rev = e->mod_revision;
                        kv.version = e->version;
                        kv.lease = e->lease;
                        rc = cb(&kv, arg);
                }
                got += (int64_t)r->n_kvs;
                if (!rc && r->more && r->n_kvs && relen && (!limit || got < limit)) {
                        /* Next page: just after the last key. */
                        Kbetcd__KeyValue *last = r->kvs[r->n_kvs - 1];
                        uint8_t *nk = realloc(cur, last->key.len + 1);

                        if (!nk) {
                                rc = kb_err_sys(err, -ENOMEM, "etcd range");
                        } else {
                                cur = nk;
                                memcpy(cur, last->key.data, last->key.len);
                                cur[last->key.len] = 0;
                                req.key.data = cur;
                                req.key.len = last->key.len + 1;
                                protobuf_c_message_free_unpacked(m, NULL);
                                continue;
                        }
                }
                protobuf_c_message_free_unpacked(m, NULL);
                break;
        }
        if (rev_out)
                *rev_out = revision;
        free(cur);
        return rc;
}

int kb_etcd_txn_cas(struct kb_etcd *c, const struct kb_etcd_cas *items, size_t n, int do_put,
                    int *succeeded, kb_etcd_cas_cb cb, void *arg, struct kb_err *err)
{
        Kbetcd__TxnRequest req = KBETCD__TXN_REQUEST__INIT;
        Kbetcd__Compare *cmps = NULL, **cmpp = NULL;
        Kbetcd__RequestOp *puts_op = NULL, **putp = NULL, *rng_op = NULL, **rngp = NULL;
        Kbetcd__PutRequest *puts = NULL;
        Kbetcd__RangeRequest *rngs = NULL;
        Kbetcd__TxnResponse *r;
        ProtobufCMessage *m;
        size_t i;
        int rc;

        *succeeded = 0;
        if (!n) {
                *succeeded = 1;
                return 0;
        }
        cmps = calloc(n, sizeof(*cmps));
        cmpp = calloc(n, sizeof(*cmpp));
        puts_op = calloc(n, sizeof(*puts_op));
        putp = calloc(n, sizeof(*putp));
        puts = calloc(n, sizeof(*puts));
        rng_op = calloc(n, sizeof(*rng_op));
        rngp = calloc(n, sizeof(*rngp));
        rngs = calloc(n, sizeof(*rngs));
        if (!cmps || !cmpp || !puts_op || !putp || !puts || !rng_op || !rngp || !rngs) {
                rc = kb_err_sys(err, -ENOMEM, "etcd txn of %zu keys", n);
                goto out;
        }
        for (i = 0; i < n; i++) {
                kbetcd__compare__init(&cmps[i]);
                cmps[i].result = KBETCD__COMPARE__COMPARE_RESULT__EQUAL;
                cmps[i].target = KBETCD__COMPARE__COMPARE_TARGET__MOD;
                cmps[i].key.data = (uint8_t *)items[i].key;
                cmps[i].key.len = items[i].klen;
                /* A oneof member is sent even when 0: mod_revision 0 is "absent". */
                cmps[i].target_union_case = KBETCD__COMPARE__TARGET_UNION_MOD_REVISION;
                cmps[i].mod_revision = items[i].expect_mod;
                cmpp[i] = &cmps[i];

                kbetcd__put_request__init(&puts[i]);
                puts[i].key.data = (uint8_t *)items[i].key;
                puts[i].key.len = items[i].klen;
                puts[i].value.data = (uint8_t *)items[i].val;
                puts[i].value.len = items[i].vlen;
                puts[i].lease = items[i].lease;
                kbetcd__request_op__init(&puts_op[i]);
                puts_op[i].request_case = KBETCD__REQUEST_OP__REQUEST_REQUEST_PUT;
                puts_op[i].request_put = &puts[i];
                putp[i] = &puts_op[i];

                kbetcd__range_request__init(&rngs[i]);
                rngs[i].key.data = (uint8_t *)items[i].key;
                rngs[i].key.len = items[i].klen;
                kbetcd__request_op__init(&rng_op[i]);
                rng_op[i].request_case = KBETCD__REQUEST_OP__REQUEST_REQUEST_RANGE;
                rng_op[i].request_range = &rngs[i];
                rngp[i] = &rng_op[i];
        }
        req.n_compare = n;
        req.compare = cmpp;
        if (do_put) {
                req.n_success = n;
                req.success = putp;
        }
        if (cb) {
                req.n_failure = n;
                req.failure = rngp;
        }
        rc = kb_etcd_unary(c, KB_PH_CALL, "/etcdserverpb.KV/Txn", &req.base,
                           &kbetcd__txn_response__descriptor, &m, err);
        if (rc)
                goto out;
        r = (Kbetcd__TxnResponse *)m;
        *succeeded = r->succeeded ? 1 : 0;
        if (!r->succeeded && cb) {
                if (r->n_responses != n) {
                        rc = kb_err_set(err, -EPROTO,
                                        "etcd %s: Txn answered %zu ranges for %zu keys",
                                        kb_etcd_endpoint(c), r->n_responses, n);
                }
                for (i = 0; i < n && !rc; i++) {
                        Kbetcd__ResponseOp *op = r->responses[i];
                        Kbetcd__RangeResponse *rr;
                        struct kb_etcd_kv kv;

                        if (op->response_case != KBETCD__RESPONSE_OP__RESPONSE_RESPONSE_RANGE) {
                                rc = kb_err_set(err, -EPROTO, "etcd %s: Txn answer %zu is no range",
                                                kb_etcd_endpoint(c), i);
                                break;
                        }
                        rr = op->response_range;
                        if (!rr || !rr->n_kvs) {
                                rc = cb(i, NULL, arg);
                                continue;
                        }
                        kv.key = rr->kvs[0]->key.data;
                        kv.klen = rr->kvs[0]->key.len;
                        kv.val = rr->kvs[0]->value.data;
                        kv.vlen = rr->kvs[0]->value.len;
                        kv.create_rev = rr->kvs[0]->create_revision;
                        kv.mod_rev = rr->kvs[0]->mod_revision;
                        kv.version = rr->kvs[0]->version;
                        kv.lease = rr->kvs[0]->lease;
                        rc = cb(i, &kv, arg);
                }
        }
        protobuf_c_message_free_unpacked(m, NULL);
out:
        free(cmps);
        free(cmpp);
        free(puts_op);
        free(putp);
        free(puts);
        free(rng_op);
        free(rngp);
        free(rngs);
        return rc;
}

int kb_etcd_lease_grant(struct kb_etcd *c, int64_t ttl, int64_t *id, int64_t *granted_ttl,
                        struct kb_err *err)
{
        Kbetcd__LeaseGrantRequest req = KBETCD__LEASE_GRANT_REQUEST__INIT;
        Kbetcd__LeaseGrantResponse *r;
        ProtobufCMessage *m;
        int rc;

        req.ttl = ttl;
        rc = kb_etcd_unary(c, KB_PH_CALL, "/etcdserverpb.Lease/LeaseGrant", &req.base,
                           &kbetcd__lease_grant_response__descriptor, &m, err);
        if (rc)
                return rc;
        r = (Kbetcd__LeaseGrantResponse *)m;
        if (r->error && r->error[0])
                rc =
                    kb_err_set(err, -EIO, "etcd %s: LeaseGrant: %s", kb_etcd_endpoint(c), r->error);
        else if (!r->id)
                rc = kb_err_set(err, -EPROTO, "etcd %s: LeaseGrant returned no lease id",
                                kb_etcd_endpoint(c));
        else {
                *id = r->id;
                if (granted_ttl)
                        *granted_ttl = r->ttl;
        }
        protobuf_c_message_free_unpacked(m, NULL);
        return rc;
}
