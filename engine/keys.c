/* keys.c - create and open key files (Argon2id-wrapped master key). */
#include "keys.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <sodium.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kbackup.pb-c.h"
#include "repo.h"

#define KEYFILE_VERSION 1
#define KEYFILE_KDF     "argon2id13"

void kb_master_generate(struct kb_master *m)
{
        kb_crypto_random(m, sizeof(*m));
}

int kb_keyfile_create(const struct kb_master *m, const char *password, size_t pwlen,
                      const struct kb_kdf_params *kdf, struct kb_buf *out, struct kb_err *err)
{
        Kbackup__MasterKey mk = KBACKUP__MASTER_KEY__INIT;
        Kbackup__KeyFile kf = KBACKUP__KEY_FILE__INIT;
        uint8_t salt[crypto_pwhash_SALTBYTES], wrap[KB_KEY_LEN], plain[3 * KB_KEY_LEN + 16];
        struct kb_buf sealed = KB_BUF_INIT;
        char host[256] = "", user[64] = "";
        struct passwd *pw;
        size_t n;
        int r;

        mk.enc_key.data = (uint8_t *)m->enc_key;
        mk.enc_key.len = KB_KEY_LEN;
        mk.id_key.data = (uint8_t *)m->id_key;
        mk.id_key.len = KB_KEY_LEN;
        mk.chunker_seed.data = (uint8_t *)m->chunker_seed;
        mk.chunker_seed.len = KB_KEY_LEN;
        n = kbackup__master_key__pack(&mk, plain);

        kb_crypto_random(salt, sizeof(salt));
        r = kb_crypto_derive(password, pwlen, salt, kdf->opslimit, kdf->memlimit, wrap, err);
        if (r == 0)
                r = kb_crypto_seal(wrap, plain, n, &sealed);
        kb_crypto_wipe(wrap, sizeof(wrap));
        kb_crypto_wipe(plain, sizeof(plain));
        if (r < 0) {
                kb_buf_free(&sealed);
                return err && err->code ? r : kb_err_set(err, r, "cannot seal the master key");
        }

        gethostname(host, sizeof(host) - 1);
        pw = getpwuid(geteuid());
        if (pw)
                snprintf(user, sizeof(user), "%s", pw->pw_name);
        kf.version = KEYFILE_VERSION;
        kf.kdf = (char *)KEYFILE_KDF;
        kf.kdf_opslimit = kdf->opslimit;
        kf.kdf_memlimit = kdf->memlimit;
        kf.salt.data = salt;
        kf.salt.len = sizeof(salt);
        kf.sealed_master.data = sealed.data;
        kf.sealed_master.len = sealed.len;
        kf.created_unix = time(NULL);
        kf.host = host;
        kf.username = user;

        kb_buf_reset(out);
        r = kb_buf_reserve(out, kbackup__key_file__get_packed_size(&kf));
        if (r == 0)
                out->len = kbackup__key_file__pack(&kf, out->data);
        kb_buf_free(&sealed);
        return r;
}

int kb_keyfile_open(const void *data, size_t len, const char *password, size_t pwlen,
                    struct kb_master *m, struct kb_err *err)
{
        Kbackup__KeyFile *kf = kbackup__key_file__unpack(NULL, len, data);
        Kbackup__MasterKey *mk = NULL;
        struct kb_buf plain = KB_BUF_INIT;
        uint8_t wrap[KB_KEY_LEN];
        int r;

        if (!kf)
                return kb_err_set(err, KB_ECORRUPT, "key file does not parse");
        if (kf->version != KEYFILE_VERSION || strcmp(kf->kdf, KEYFILE_KDF) != 0 ||
            kf->salt.len != crypto_pwhash_SALTBYTES) {
                r = kb_err_set(err, KB_EFORMAT, "key file has an unknown format");
                goto out;
        }
        r = kb_crypto_derive(password, pwlen, kf->salt.data, kf->kdf_opslimit, kf->kdf_memlimit,
                             wrap, err);
        if (r < 0)
                goto out;
        r = kb_crypto_open(wrap, kf->sealed_master.data, kf->sealed_master.len, &plain);
        kb_crypto_wipe(wrap, sizeof(wrap));
        if (r < 0) {
                r = kb_err_set(err, KB_EAUTH, "wrong password");
                goto out;
        }
        mk = kbackup__master_key__unpack(NULL, plain.len, plain.data);
        if (!mk || mk->enc_key.len != KB_KEY_LEN || mk->id_key.len != KB_KEY_LEN ||
            mk->chunker_seed.len != KB_KEY_LEN) {
                r = kb_err_set(err, KB_ECORRUPT, "master key does not parse");
                goto out;
        }
        memcpy(m->enc_key, mk->enc_key.data, KB_KEY_LEN);
        memcpy(m->id_key, mk->id_key.data, KB_KEY_LEN);
        memcpy(m->chunker_seed, mk->chunker_seed.data, KB_KEY_LEN);
        r = 0;
out:
        if (mk) {
                kb_crypto_wipe(mk->enc_key.data, mk->enc_key.len);
                kb_crypto_wipe(mk->id_key.data, mk->id_key.len);
                kb_crypto_wipe(mk->chunker_seed.data, mk->chunker_seed.len);
                kbackup__master_key__free_unpacked(mk, NULL);
        }
        if (plain.data)
                kb_crypto_wipe(plain.data, plain.cap);
        kb_buf_free(&plain);
        kbackup__key_file__free_unpacked(kf, NULL);
        return r;
}
