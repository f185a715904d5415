/* etcd_hash.c - verify the sha256 trailer etcd appends to a snapshot stream, as the stream
 * arrives: the last 32 bytes seen are held back, everything before them is hashed. */
#include "etcd.h"

#include <errno.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

/* OpenSSL's SHA-256 uses the CPU's SHA extensions: about 5x libsodium's here, which decides
 * whether verifying costs more than streaming. */
int kb_etcd_hasher_init(struct kb_etcd_hasher *h, struct kb_err *err)
{
        memset(h, 0, sizeof(*h));
        h->md = EVP_MD_CTX_new();
        if (!h->md || EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1) {
                kb_etcd_hasher_free(h);
                return kb_err_set(err, -ENOMEM, "cannot start a sha256 digest");
        }
        return 0;
}

void kb_etcd_hasher_free(struct kb_etcd_hasher *h)
{
        EVP_MD_CTX_free(h->md);
        h->md = NULL;
}

void kb_etcd_hasher_update(struct kb_etcd_hasher *h, const uint8_t *data, size_t len)
{
        h->total += len;
        if (len >= KB_ETCD_TRAILER_LEN) {
                EVP_DigestUpdate(h->md, h->tail, h->tail_len);
                EVP_DigestUpdate(h->md, data, len - KB_ETCD_TRAILER_LEN);
                memcpy(h->tail, data + len - KB_ETCD_TRAILER_LEN, KB_ETCD_TRAILER_LEN);
                h->tail_len = KB_ETCD_TRAILER_LEN;
                return;
        }
        /* Short piece: push out of the tail only what no longer fits in the last 32 bytes. */
        if (h->tail_len + len > KB_ETCD_TRAILER_LEN) {
                size_t out = h->tail_len + len - KB_ETCD_TRAILER_LEN;

                EVP_DigestUpdate(h->md, h->tail, out);
                memmove(h->tail, h->tail + out, h->tail_len - out);
                h->tail_len -= out;
        }
        memcpy(h->tail + h->tail_len, data, len);
        h->tail_len += len;
}

int kb_etcd_hasher_final(struct kb_etcd_hasher *h, uint8_t trailer[KB_ETCD_TRAILER_LEN],
                         struct kb_err *err)
{
        uint8_t sum[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        int ok = EVP_DigestFinal_ex(h->md, sum, &n) == 1 && n == KB_ETCD_TRAILER_LEN;

        kb_etcd_hasher_free(h);
        if (!ok)
                return kb_err_set(err, -EIO, "sha256 digest failed");
        if (h->tail_len < KB_ETCD_TRAILER_LEN)
                return kb_err_set(err, KB_ECORRUPT,
                                  "etcd snapshot stream is too short (%llu bytes): no sha256 "
                                  "trailer",
                                  (unsigned long long)h->total);
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
        int rc = kb_etcd_hasher_init(&h, err);

        if (rc < 0)
                return rc;
        kb_etcd_hasher_update(&h, data, len);
        return kb_etcd_hasher_final(&h, trailer, err);
}
