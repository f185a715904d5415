/* etcd_hash.c - verify the sha256 trailer etcd appends to a snapshot stream, as the stream
 * arrives: the last 32 bytes seen are held back, everything before them is hashed. */
#include "etcd.h"

#include <sodium.h>
#include <string.h>

_Static_assert(sizeof(crypto_hash_sha256_state) <= sizeof(((struct kb_etcd_hasher *)0)->state),
               "hasher state too small");

void kb_etcd_hasher_init(struct kb_etcd_hasher *h)
{
        memset(h, 0, sizeof(*h));
        crypto_hash_sha256_init((crypto_hash_sha256_state *)h->state);
}

void kb_etcd_hasher_update(struct kb_etcd_hasher *h, const uint8_t *data, size_t len)
{
        crypto_hash_sha256_state *st = (crypto_hash_sha256_state *)h->state;

        h->total += len;
        if (len >= KB_ETCD_TRAILER_LEN) {
                crypto_hash_sha256_update(st, h->tail, h->tail_len);
                crypto_hash_sha256_update(st, data, len - KB_ETCD_TRAILER_LEN);
                memcpy(h->tail, data + len - KB_ETCD_TRAILER_LEN, KB_ETCD_TRAILER_LEN);
                h->tail_len = KB_ETCD_TRAILER_LEN;
                return;
        }
        /* Short piece: push out of the tail only what no longer fits in the last 32 bytes. */
        if (h->tail_len + len > KB_ETCD_TRAILER_LEN) {
                size_t out = h->tail_len + len - KB_ETCD_TRAILER_LEN;

                crypto_hash_sha256_update(st, h->tail, out);
                memmove(h->tail, h->tail + out, h->tail_len - out);
                h->tail_len -= out;
        }
        memcpy(h->tail + h->tail_len, data, len);
        h->tail_len += len;
}

int kb_etcd_hasher_final(struct kb_etcd_hasher *h, uint8_t trailer[KB_ETCD_TRAILER_LEN],
                         struct kb_err *err)
{
        uint8_t sum[crypto_hash_sha256_BYTES];

        if (h->tail_len < KB_ETCD_TRAILER_LEN)
                return kb_err_set(err, KB_ECORRUPT,
                                  "etcd snapshot stream is too short (%llu bytes): no sha256 "
                                  "trailer",
                                  (unsigned long long)h->total);
        crypto_hash_sha256_final((crypto_hash_sha256_state *)h->state, sum);
        memcpy(trailer, h->tail, KB_ETCD_TRAILER_LEN);
        if (sodium_memcmp(sum, h->tail, KB_ETCD_TRAILER_LEN) != 0)
                return kb_err_set(err, KB_ECORRUPT,
                                  "etcd snapshot stream does not match its sha256 trailer "
                                  "(truncated or corrupted in transit)");
        return 0;
}

int kb_etcd_verify_stream(const uint8_t *data, size_t len, struct kb_err *err)
{
        struct kb_etcd_hasher h;
        uint8_t trailer[KB_ETCD_TRAILER_LEN];

        kb_etcd_hasher_init(&h);
        kb_etcd_hasher_update(&h, data, len);
        return kb_etcd_hasher_final(&h, trailer, err);
}
