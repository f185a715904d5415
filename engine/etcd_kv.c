/* etcd_kv.c - KV calls: Put, a Txn of puts, and Range walked in pages at one revision. */
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
