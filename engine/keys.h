/* keys.h - key files: the repository master key, wrapped by a key derived from a password.
 *
 * Several key files may wrap the same master key (one per password), so a password can be added or
 * revoked without re-encrypting any data. */
#ifndef KB_KEYS_H
#define KB_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "crypto.h"
#include "err.h"

struct kb_kdf_params;

struct kb_master {
        uint8_t enc_key[KB_KEY_LEN];
        uint8_t id_key[KB_KEY_LEN];
        uint8_t chunker_seed[KB_KEY_LEN];
};

void kb_master_generate(struct kb_master *m);

/* Serialise a key file that wraps m under `password`. */
int kb_keyfile_create(const struct kb_master *m, const char *password, size_t pwlen,
                      const struct kb_kdf_params *kdf, struct kb_buf *out, struct kb_err *err);

/* Unwrap: KB_EAUTH when the password does not open it, KB_ECORRUPT when it does not parse. */
int kb_keyfile_open(const void *data, size_t len, const char *password, size_t pwlen,
                    struct kb_master *m, struct kb_err *err);

#endif
