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

/* ---- key management on an open repository (keymgmt.c) ---- */

struct kb_repo;

struct kb_key_info {
        char id[KB_ID_HEX_LEN + 1];
        int current;  /* the key file that opened this repository */
        int readable; /* 0: the key file does not parse */
        int64_t created_unix;
        char host[256];
        char user[64];
};

/* Every key file, oldest first. Free *out with free(). */
int kb_repo_key_list(struct kb_repo *r, struct kb_key_info **out, size_t *n, struct kb_err *err);

/* Wrap the repository's master key under a new password; writes the new key's id. */
int kb_repo_key_add(struct kb_repo *r, const char *password, size_t pwlen,
                    const struct kb_kdf_params *kdf, char id[KB_ID_HEX_LEN + 1],
                    struct kb_err *err);

/* Remove a key file by id or unique id prefix. Refused (KB_EUSAGE) for the last key, and for
 * the key this repository was opened with (change that one with kb_repo_key_passwd, or open with
 * another key's password to remove it). */
int kb_repo_key_remove(struct kb_repo *r, const char *id, struct kb_err *err);

/* Change the password of the key in use: write a new key file (checked to open with the new
 * password) and only then remove the old one. */
int kb_repo_key_passwd(struct kb_repo *r, const char *password, size_t pwlen,
                       const struct kb_kdf_params *kdf, char id[KB_ID_HEX_LEN + 1],
                       struct kb_err *err);

#endif
