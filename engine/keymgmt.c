/* keymgmt.c - list, add, remove key files and change a password, on an open repository. Every
 * key file wraps the same master key, so none of this touches data. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "repo_internal.h"

struct key_list {
        struct kb_repo *r;
        struct kb_key_info *v;
        size_t n, cap;
        struct kb_err *err;
};

static int collect_key(const char *name, uint64_t size, void *arg)
{
        struct key_list *kl = arg;
        struct kb_buf b = KB_BUF_INIT;
        Kbackup__KeyFile *kf = NULL;
        struct kb_key_info *ki;
        int rc;

        (void)size;
        if (kl->n == kl->cap) {
                size_t cap = kl->cap ? kl->cap * 2 : 8;
                struct kb_key_info *p = realloc(kl->v, cap * sizeof(*p));

                if (!p)
                        return kb_err_set(kl->err, -ENOMEM, "out of memory");
                kl->v = p;
                kl->cap = cap;
        }
        rc = kb_backend_get(kl->r->be, KB_OBJ_KEY, name, 0, 0, &b, kl->err);
        if (rc == KB_ENOTFOUND) { /* removed meanwhile */
                kb_buf_free(&b);
                kb_err_clear(kl->err);
                return 0;
        }
        if (rc < 0) {
                kb_buf_free(&b);
                return rc;
        }
        ki = &kl->v[kl->n++];
        memset(ki, 0, sizeof(*ki));
        snprintf(ki->id, sizeof(ki->id), "%s", name);
        ki->current = strcmp(name, kl->r->key_name) == 0;
        kf = kbackup__key_file__unpack(NULL, b.len, b.data);
        kb_buf_free(&b);
        if (kf) {
                ki->readable = 1;
                ki->created_unix = kf->created_unix;
                snprintf(ki->host, sizeof(ki->host), "%s", kf->host);
                snprintf(ki->user, sizeof(ki->user), "%s", kf->username);
                kbackup__key_file__free_unpacked(kf, NULL);
        }
        return 0;
}

static int by_created(const void *a, const void *b)
{
        const struct kb_key_info *x = a, *y = b;

        if (x->created_unix != y->created_unix)
                return x->created_unix < y->created_unix ? -1 : 1;
        return strcmp(x->id, y->id);
}

int kb_repo_key_list(struct kb_repo *r, struct kb_key_info **out, size_t *n, struct kb_err *err)
{
        struct key_list kl = {.r = r, .err = err};
        int rc = kb_repo_list(r, KB_OBJ_KEY, collect_key, &kl, err);

        if (rc < 0) {
                free(kl.v);
                return rc;
        }
        if (kl.n)
                qsort(kl.v, kl.n, sizeof(*kl.v), by_created);
        *out = kl.v;
        *n = kl.n;
        return 0;
}

/* Write a key file for the master key under `password`; with `verify`, first make sure the
 * serialized file opens with it (before anything is removed on the strength of it). */
static int write_key(struct kb_repo *r, const char *password, size_t pwlen,
                     const struct kb_kdf_params *kdf, int verify, char id[KB_ID_HEX_LEN + 1],
                     struct kb_err *err)
{
        struct kb_buf kf = KB_BUF_INIT;
        struct kb_master check;
        uint8_t kid[KB_ID_LEN];
        int rc;

        if (r->read_only)
                return kb_err_set(err, -EROFS, "repository is opened read-only");
        rc = kb_keyfile_create(&r->master, password, pwlen, kdf, &kf, err);
        if (rc == 0 && verify) {
                rc = kb_keyfile_open(kf.data, kf.len, password, pwlen, &check, err);
                if (rc == 0 && memcmp(&check, &r->master, sizeof(check)) != 0)
                        rc = kb_err_set(err, KB_ECORRUPT, "the new key file does not round-trip");
                kb_crypto_wipe(&check, sizeof(check));
                if (rc < 0)
                        kb_err_prefix(err, "new key not written: ");
        }
        if (rc == 0) {
                kb_crypto_object_id(kf.data, kf.len, kid);
                kb_hex_encode(kid, KB_ID_LEN, id);
                rc = kb_backend_put(r->be, KB_OBJ_KEY, id, kf.data, kf.len, err);
        }
        kb_buf_free(&kf);
        return rc;
}

int kb_repo_key_add(struct kb_repo *r, const char *password, size_t pwlen,
                    const struct kb_kdf_params *kdf, char id[KB_ID_HEX_LEN + 1], struct kb_err *err)
{
        return write_key(r, password, pwlen, kdf, 0, id, err);
}

int kb_repo_key_remove(struct kb_repo *r, const char *id, struct kb_err *err)
{
        struct kb_key_info *v = NULL;
        size_t n = 0, len = strlen(id);
        int found = -1, rc;

        if (r->read_only)
                return kb_err_set(err, -EROFS, "repository is opened read-only");
        if (len == 0 || len > KB_ID_HEX_LEN)
                return kb_err_set(err, KB_ENOTFOUND, "no key with id '%s'", id);
        rc = kb_repo_key_list(r, &v, &n, err);
        if (rc < 0)
                return rc;
        for (size_t i = 0; i < n; i++) {
                if (strncmp(v[i].id, id, len) != 0)
                        continue;
                if (found >= 0) {
                        rc = kb_err_set(err, KB_EAMBIG,
                                        "key id prefix '%s' is ambiguous: give more digits", id);
                        goto out;
                }
                found = (int)i;
        }
        if (found < 0) {
                rc = kb_err_set(err, KB_ENOTFOUND, "no key with id '%s'", id);
        } else if (n == 1) {
                rc = kb_err_set(err, KB_EUSAGE,
                                "key %.8s is the repository's last key: without it nobody can "
                                "open the repository",
                                v[found].id);
        } else if (v[found].current) {
                rc = kb_err_set(err, KB_EUSAGE,
                                "key %.8s is the one this command opened the repository with; "
                                "change its password with 'kbackup key passwd', or remove it "
                                "using another key's password",
                                v[found].id);
        } else {
                rc = kb_backend_remove(r->be, KB_OBJ_KEY, v[found].id, err);
        }
out:
        free(v);
        return rc;
}

int kb_repo_key_passwd(struct kb_repo *r, const char *password, size_t pwlen,
                       const struct kb_kdf_params *kdf, char id[KB_ID_HEX_LEN + 1],
                       struct kb_err *err)
{
        char old[KB_ID_HEX_LEN + 1];
        int rc;

        memcpy(old, r->key_name, sizeof(old));
        rc = write_key(r, password, pwlen, kdf, 1, id, err);
        if (rc < 0)
                return rc;
        /* Both keys open the repository until this returns: a crash here leaves two, not none. */
        rc = kb_backend_remove(r->be, KB_OBJ_KEY, old, err);
        if (rc < 0)
                return kb_err_prefix(err,
                                     "new key %.8s written, but the old key %.8s is still "
                                     "there: ",
                                     id, old);
        memcpy(r->key_name, id, sizeof(r->key_name));
        return 0;
}
