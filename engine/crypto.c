/* crypto.c - sealing, ids, key derivation: the thin layer over libsodium that owns key handling.
 *
 * Chunk ids are keyed BLAKE3 (blake3.c, SIMD). The other per-byte hot paths (HMAC-SHA-256 ids of
 * older repositories, SHA-256 object names, XChaCha20-Poly1305) run through OpenSSL's libcrypto,
 * already linked for gRPC and libcurl, whose assembly (SHA extensions, AVX2) is 1.6-5x faster here
 * than libsodium's portable code (docs/performance.md). The output is bit-identical to libsodium's:
 * XChaCha20-Poly1305 is HChaCha20 (libsodium) deriving a subkey, then IETF ChaCha20-Poly1305 with
 * nonce 0^4 || nonce[16..24). The unit tests hold both to libsodium, which stays the fallback. */
#include "crypto.h"

#include "blake3.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* OpenSSL 3.0 looks an algorithm up, under a global lock, every time a context is initialised
 * from EVP_sha256() or EVP_chacha20_poly1305(): with one lookup per chunk, check's two readers
 * spent a third of their time waiting for each other. So the algorithms are fetched once, and
 * each thread keeps its own contexts, plus the HMAC state of the last id key it used. */
static pthread_once_t fast_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *fast_chacha; /* NULL: use libsodium */
static EVP_MD *fast_sha256;     /* NULL: use libsodium */
static pthread_key_t fast_key;

struct fast_state {
        EVP_CIPHER_CTX *cipher;
        EVP_MD_CTX *inner, *outer, *work; /* HMAC: key^ipad and key^opad absorbed; scratch */
        uint8_t hmac_key[KB_KEY_LEN];
        int hmac_ready;
};

static void fast_state_free(void *p)
{
        struct fast_state *t = p;

        if (!t)
                return;
        EVP_CIPHER_CTX_free(t->cipher);
        EVP_MD_CTX_free(t->inner);
        EVP_MD_CTX_free(t->outer);
        EVP_MD_CTX_free(t->work);
        sodium_memzero(t, sizeof(*t));
        free(t);
}

static void fast_init(void)
{
        if (pthread_key_create(&fast_key, fast_state_free) != 0)
                return;
        fast_chacha = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
        fast_sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
}

/* The calling thread's contexts, or NULL (then libsodium does the work). */
static struct fast_state *fast_state(void)
{
        struct fast_state *t;

        if (!fast_chacha || !fast_sha256)
                return NULL;
        t = pthread_getspecific(fast_key);
        if (t)
                return t;
        t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->cipher = EVP_CIPHER_CTX_new();
        t->inner = EVP_MD_CTX_new();
        t->outer = EVP_MD_CTX_new();
        t->work = EVP_MD_CTX_new();
        if (!t->cipher || !t->inner || !t->outer || !t->work ||
            pthread_setspecific(fast_key, t) != 0) {
                fast_state_free(t);
                return NULL;
        }
        return t;
}

int kb_crypto_init(struct kb_err *err)
{
        if (sodium_init() < 0)
                return kb_err_set(err, -EIO, "cannot initialise libsodium");
        pthread_once(&fast_once, fast_init);
        return 0;
}

/* XChaCha20-Poly1305-IETF through OpenSSL. enc: 1 seal, 0 open. Returns 0, or -1 when the tag does
 * not verify or OpenSSL fails. */
static int xchacha_openssl(int enc, const uint8_t key[KB_KEY_LEN], const uint8_t *nonce,
                           const uint8_t *ad, size_t adlen, const uint8_t *in, size_t inlen,
                           uint8_t *out, uint8_t *tag)
{
        struct fast_state *t = fast_state();
        uint8_t subkey[32], iv[12] = {0};
        EVP_CIPHER_CTX *ctx = t ? t->cipher : NULL;
        int ok = 0, n, fin;

        if (!ctx || inlen > INT32_MAX || adlen > INT32_MAX)
                return -1;
        crypto_core_hchacha20(subkey, nonce, key, NULL);
        memcpy(iv + 4, nonce + 16, 8);
        if (EVP_CipherInit_ex(ctx, fast_chacha, NULL, subkey, iv, enc) == 1 &&
            (enc || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, KB_SEAL_TAG, tag) == 1) &&
            (!adlen || EVP_CipherUpdate(ctx, NULL, &n, ad, (int)adlen) == 1) &&
            EVP_CipherUpdate(ctx, out, &n, in, (int)inlen) == 1 &&
            EVP_CipherFinal_ex(ctx, out + n, &fin) == 1 &&
            (!enc || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, KB_SEAL_TAG, tag) == 1))
                ok = 1;
        sodium_memzero(subkey, sizeof(subkey));
        return ok ? 0 : -1;
}

int kb_crypto_seal(const uint8_t key[KB_KEY_LEN], const void *plain, size_t len, struct kb_buf *out)
{
        return kb_crypto_seal_ad(key, NULL, 0, plain, len, out);
}

int kb_crypto_seal_ad(const uint8_t key[KB_KEY_LEN], const void *ad, size_t adlen,
                      const void *plain, size_t len, struct kb_buf *out)
{
        unsigned long long clen;
        uint8_t *p;
        int r;

        r = kb_buf_reserve(out, len + KB_SEAL_OVERHEAD);
        if (r < 0)
                return r;
        p = out->data + out->len;
        randombytes_buf(p, KB_SEAL_NONCE);
        if (fast_chacha && xchacha_openssl(1, key, p, ad, adlen, plain, len, p + KB_SEAL_NONCE,
                                           p + KB_SEAL_NONCE + len) == 0) {
                out->len += KB_SEAL_NONCE + len + KB_SEAL_TAG;
                return 0;
        }
        crypto_aead_xchacha20poly1305_ietf_encrypt(p + KB_SEAL_NONCE, &clen, plain, len, ad, adlen,
                                                   NULL, p, key);
        out->len += KB_SEAL_NONCE + (size_t)clen;
        return 0;
}

int kb_crypto_open(const uint8_t key[KB_KEY_LEN], const void *sealed, size_t len,
                   struct kb_buf *out)
{
        return kb_crypto_open_ad(key, NULL, 0, sealed, len, out);
}

int kb_crypto_open_ad(const uint8_t key[KB_KEY_LEN], const void *ad, size_t adlen,
                      const void *sealed, size_t len, struct kb_buf *out)
{
        const uint8_t *s = sealed;
        int r;

        if (len < KB_SEAL_OVERHEAD)
                return KB_ECORRUPT;
        r = kb_buf_reserve(out, len - KB_SEAL_OVERHEAD);
        if (r < 0)
                return r;
        if (fast_chacha) {
                uint8_t tag[KB_SEAL_TAG];

                memcpy(tag, s + len - KB_SEAL_TAG, KB_SEAL_TAG);
                if (xchacha_openssl(0, key, s, ad, adlen, s + KB_SEAL_NONCE, len - KB_SEAL_OVERHEAD,
                                    out->data + out->len, tag) != 0)
                        return KB_ECORRUPT;
                out->len += len - KB_SEAL_OVERHEAD;
                return 0;
        }
        return kb_crypto_open_reference(key, ad, adlen, sealed, len, out);
}

int kb_crypto_open_reference(const uint8_t key[KB_KEY_LEN], const void *ad, size_t adlen,
                             const void *sealed, size_t len, struct kb_buf *out)
{
        const uint8_t *s = sealed;
        unsigned long long plen;
        int r;

        if (len < KB_SEAL_OVERHEAD)
                return KB_ECORRUPT;
        r = kb_buf_reserve(out, len - KB_SEAL_OVERHEAD);
        if (r < 0)
                return r;
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(out->data + out->len, &plen, NULL,
                                                       s + KB_SEAL_NONCE, len - KB_SEAL_NONCE, ad,
                                                       adlen, s, key) != 0)
                return KB_ECORRUPT;
        out->len += (size_t)plen;
        return 0;
}

/* HMAC's inner and outer states under `key`, kept so each id hashes only its data. */
static int hmac_prepare(struct fast_state *t, const uint8_t key[KB_KEY_LEN])
{
        uint8_t ipad[64], opad[64]; /* SHA-256's block; the key is shorter, so zero-padded */
        int ok;

        for (size_t i = 0; i < sizeof(ipad); i++) {
                uint8_t k = i < KB_KEY_LEN ? key[i] : 0;

                ipad[i] = k ^ 0x36;
                opad[i] = k ^ 0x5c;
        }
        ok = EVP_DigestInit_ex(t->inner, fast_sha256, NULL) == 1 &&
             EVP_DigestUpdate(t->inner, ipad, sizeof(ipad)) == 1 &&
             EVP_DigestInit_ex(t->outer, fast_sha256, NULL) == 1 &&
             EVP_DigestUpdate(t->outer, opad, sizeof(opad)) == 1;
        sodium_memzero(ipad, sizeof(ipad));
        sodium_memzero(opad, sizeof(opad));
        t->hmac_ready = ok;
        if (ok)
                memcpy(t->hmac_key, key, KB_KEY_LEN);
        return ok ? 0 : -1;
}

static const char *const id_hash_names[] = {
    [KB_ID_HMAC_SHA256] = "hmac-sha256",
    [KB_ID_BLAKE3] = "keyed-blake3",
};

const char *kb_id_hash_name(enum kb_id_hash h)
{
        return (unsigned)h < sizeof(id_hash_names) / sizeof(id_hash_names[0]) ? id_hash_names[h]
                                                                              : NULL;
}

int kb_id_hash_parse(const char *name, enum kb_id_hash *h)
{
        for (size_t i = 0; i < sizeof(id_hash_names) / sizeof(id_hash_names[0]); i++)
                if (name && !strcmp(name, id_hash_names[i])) {
                        *h = (enum kb_id_hash)i;
                        return 0;
                }
        return -EINVAL;
}

/* HMAC-SHA-256 through OpenSSL, from the key's inner and outer states kept per thread. */
static void blob_id_hmac(const uint8_t id_key[KB_KEY_LEN], const void *data, size_t len,
                         uint8_t id[KB_ID_LEN])
{
        struct fast_state *t = fast_state();
        uint8_t h[KB_ID_LEN];
        unsigned int n = 0, m = 0;

        if (t &&
            ((t->hmac_ready && !memcmp(t->hmac_key, id_key, KB_KEY_LEN)) ||
             hmac_prepare(t, id_key) == 0) &&
            EVP_MD_CTX_copy_ex(t->work, t->inner) == 1 &&
            EVP_DigestUpdate(t->work, data, len) == 1 && EVP_DigestFinal_ex(t->work, h, &n) == 1 &&
            n == KB_ID_LEN && EVP_MD_CTX_copy_ex(t->work, t->outer) == 1 &&
            EVP_DigestUpdate(t->work, h, sizeof(h)) == 1 &&
            EVP_DigestFinal_ex(t->work, id, &m) == 1 && m == KB_ID_LEN)
                return;
        kb_crypto_blob_id_reference(id_key, data, len, id);
}

void kb_crypto_blob_id(enum kb_id_hash h, const uint8_t id_key[KB_KEY_LEN], const void *data,
                       size_t len, uint8_t id[KB_ID_LEN])
{
        if (h == KB_ID_BLAKE3)
                kb_blake3_keyed(id_key, data, len, id);
        else
                blob_id_hmac(id_key, data, len, id);
}

void kb_crypto_blob_id_reference(const uint8_t id_key[KB_KEY_LEN], const void *data, size_t len,
                                 uint8_t id[KB_ID_LEN])
{
        crypto_auth_hmacsha256_state st;

        crypto_auth_hmacsha256_init(&st, id_key, KB_KEY_LEN);
        crypto_auth_hmacsha256_update(&st, data, len);
        crypto_auth_hmacsha256_final(&st, id);
        sodium_memzero(&st, sizeof(st));
}

void kb_crypto_object_id(const void *data, size_t len, uint8_t id[KB_ID_LEN])
{
        struct fast_state *t = fast_state();
        unsigned int n = 0;

        /* SHA-256, so an operator can check any object with sha256sum against its name. */
        if (t && EVP_DigestInit_ex(t->work, fast_sha256, NULL) == 1 &&
            EVP_DigestUpdate(t->work, data, len) == 1 && EVP_DigestFinal_ex(t->work, id, &n) == 1 &&
            n == KB_ID_LEN)
                return;
        crypto_hash_sha256(id, data, len);
}

void kb_crypto_random(void *buf, size_t len)
{
        randombytes_buf(buf, len);
}

void kb_crypto_wipe(void *buf, size_t len)
{
        sodium_memzero(buf, len);
}

int kb_crypto_derive(const char *password, size_t pwlen, const uint8_t *salt, uint64_t opslimit,
                     uint64_t memlimit, uint8_t key[KB_KEY_LEN], struct kb_err *err)
{
        /* Bounds also protect against a tampered key file asking for absurd memory. */
        if (opslimit < crypto_pwhash_OPSLIMIT_MIN || opslimit > 64 ||
            memlimit < crypto_pwhash_MEMLIMIT_MIN || memlimit > (4ULL << 30))
                return kb_err_set(err, KB_ECORRUPT, "key file has invalid KDF parameters");
        if (crypto_pwhash(key, KB_KEY_LEN, password, pwlen, salt, opslimit, (size_t)memlimit,
                          crypto_pwhash_ALG_ARGON2ID13) != 0)
                return kb_err_set(err, -ENOMEM, "password derivation ran out of memory");
        return 0;
}

void kb_hex_encode(const uint8_t *bin, size_t len, char *hex)
{
        static const char digits[] = "0123456789abcdef";
        size_t i;

        for (i = 0; i < len; i++) {
                hex[2 * i] = digits[bin[i] >> 4];
                hex[2 * i + 1] = digits[bin[i] & 15];
        }
        hex[2 * len] = '\0';
}

static int hex_val(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int kb_hex_decode(const char *hex, uint8_t *bin, size_t len)
{
        size_t i;

        if (strlen(hex) != 2 * len)
                return -EINVAL;
        for (i = 0; i < len; i++) {
                int hi = hex_val(hex[2 * i]), lo = hex_val(hex[2 * i + 1]);

                if (hi < 0 || lo < 0)
                        return -EINVAL;
                bin[i] = (uint8_t)(hi << 4 | lo);
        }
        return 0;
}
