/* crypto.h - the only module that touches key material.
 *
 * Sealed format (every encrypted object and blob): nonce (24 bytes) || ciphertext || tag (16
 * bytes), XChaCha20-Poly1305-IETF. Random 192-bit nonces make accidental reuse negligible even
 * across concurrent writers that share the master key. Chunk ids are a keyed hash of the plaintext
 * under the repository's id key (keyed BLAKE3; HMAC-SHA-256 in repositories made before it), so
 * equal content dedups while ids reveal nothing without the key; object names are the SHA-256 of
 * the stored bytes. */
#ifndef KB_CRYPTO_H
#define KB_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

#define KB_KEY_LEN       32
#define KB_ID_LEN        32
#define KB_ID_HEX_LEN    (2 * KB_ID_LEN)
#define KB_SEAL_NONCE    24
#define KB_SEAL_TAG      16
#define KB_SEAL_OVERHEAD (KB_SEAL_NONCE + KB_SEAL_TAG)

/* libsodium init; safe to call many times and from many threads after the first. */
int kb_crypto_init(struct kb_err *err);

/* Encrypt `len` bytes, appending nonce || ciphertext || tag to out. */
int kb_crypto_seal(const uint8_t key[KB_KEY_LEN], const void *plain, size_t len,
                   struct kb_buf *out);
/* Verify and decrypt, appending the plaintext to out; KB_ECORRUPT when it fails to authenticate. */
int kb_crypto_open(const uint8_t key[KB_KEY_LEN], const void *sealed, size_t len,
                   struct kb_buf *out);
/* The same with associated data: authenticated, not stored; opening needs the same bytes. Blobs
 * are sealed with their id as associated data, so a blob read from the wrong place fails to open.
 */
int kb_crypto_seal_ad(const uint8_t key[KB_KEY_LEN], const void *ad, size_t adlen,
                      const void *plain, size_t len, struct kb_buf *out);
int kb_crypto_open_ad(const uint8_t key[KB_KEY_LEN], const void *ad, size_t adlen,
                      const void *sealed, size_t len, struct kb_buf *out);

/* The keyed hash a repository names its chunks with (its config says which). */
enum kb_id_hash {
        KB_ID_HMAC_SHA256, /* "hmac-sha256": repositories made before keyed BLAKE3 */
        KB_ID_BLAKE3,      /* "keyed-blake3": the default, several times faster (blake3.h) */
};

/* The config name of h, or NULL for no such hash. */
const char *kb_id_hash_name(enum kb_id_hash h);
/* Returns 0 and sets *h, or -EINVAL for an unknown name. */
int kb_id_hash_parse(const char *name, enum kb_id_hash *h);

/* Keyed chunk id. */
void kb_crypto_blob_id(enum kb_id_hash h, const uint8_t id_key[KB_KEY_LEN], const void *data,
                       size_t len, uint8_t id[KB_ID_LEN]);
/* The HMAC-SHA-256 id computed by libsodium alone: the reference the tests hold the fast path to.
 */
void kb_crypto_blob_id_reference(const uint8_t id_key[KB_KEY_LEN], const void *data, size_t len,
                                 uint8_t id[KB_ID_LEN]);
/* Open with libsodium alone: tests cross-check the fast path against it. */
int kb_crypto_open_reference(const uint8_t key[KB_KEY_LEN], const void *ad, size_t adlen,
                             const void *sealed, size_t len, struct kb_buf *out);

/* Unkeyed hash of stored bytes: names packs, index and snapshot objects by their content. */
void kb_crypto_object_id(const void *data, size_t len, uint8_t id[KB_ID_LEN]);

void kb_crypto_random(void *buf, size_t len);
/* Zero memory the compiler cannot optimise away. */
void kb_crypto_wipe(void *buf, size_t len);

/* Argon2id: derive a key from a password. opslimit/memlimit as for crypto_pwhash. */
int kb_crypto_derive(const char *password, size_t pwlen, const uint8_t *salt, uint64_t opslimit,
                     uint64_t memlimit, uint8_t key[KB_KEY_LEN], struct kb_err *err);

void kb_hex_encode(const uint8_t *bin, size_t len, char *hex /* 2*len+1 */);
/* Returns 0, or -EINVAL when hex is not exactly 2*len hex digits. */
int kb_hex_decode(const char *hex, uint8_t *bin, size_t len);

#endif
