/* crypto.c - sealing, ids, key derivation: the thin layer over libsodium that owns key handling. */
#include "crypto.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

int kb_crypto_init(struct kb_err *err)
{
        if (sodium_init() < 0)
                return kb_err_set(err, -EIO, "cannot initialise libsodium");
        return 0;
}

int kb_crypto_seal(const uint8_t key[KB_KEY_LEN], const void *plain, size_t len, struct kb_buf *out)
{
        unsigned long long clen;
        uint8_t *p;
        int r;

        r = kb_buf_reserve(out, len + KB_SEAL_OVERHEAD);
        if (r < 0)
                return r;
        p = out->data + out->len;
        randombytes_buf(p, KB_SEAL_NONCE);
        crypto_aead_xchacha20poly1305_ietf_encrypt(p + KB_SEAL_NONCE, &clen, plain, len, NULL, 0,
                                                   NULL, p, key);
        out->len += KB_SEAL_NONCE + (size_t)clen;
        return 0;
}

int kb_crypto_open(const uint8_t key[KB_KEY_LEN], const void *sealed, size_t len,
                   struct kb_buf *out)
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
                                                       s + KB_SEAL_NONCE, len - KB_SEAL_NONCE, NULL,
                                                       0, s, key) != 0)
                return KB_ECORRUPT;
        out->len += (size_t)plen;
        return 0;
}

void kb_crypto_blob_id(const uint8_t id_key[KB_KEY_LEN], const void *data, size_t len,
                       uint8_t id[KB_ID_LEN])
{
        crypto_generichash(id, KB_ID_LEN, data, len, id_key, KB_KEY_LEN);
}

void kb_crypto_object_id(const void *data, size_t len, uint8_t id[KB_ID_LEN])
{
        crypto_generichash(id, KB_ID_LEN, data, len, NULL, 0);
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
