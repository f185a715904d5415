/* repo.c - repository lifecycle: init, open with a password, config, sealed whole objects. */
#include "repo_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#define MARKER_TEXT "kbackup repository\nformat 1\n"
/* Version 2 seals each blob with its id as associated data (docs/repository-format.md); version 1
 * repositories are still read, verifying each blob by recomputing its id instead. */
#define CONFIG_VERSION     2
#define CONFIG_VERSION_MIN 1
#define CONFIG_AEAD        "xchacha20poly1305"
/* New repositories name chunks with keyed BLAKE3; older ones keep HMAC-SHA-256 (crypto.h). */
#define CONFIG_IDHASH_DEFAULT KB_ID_BLAKE3

void kb_kdf_params_default(struct kb_kdf_params *p)
{
        /* Argon2id, 4 passes over 48 MiB: the memory-hard work of RFC 9106's second
         * recommendation (3 passes over 64 MiB), about 0.15 s here. Every command pays it once and
         * its memory is every command's peak RSS floor (a CronJob's memory limit must fit it), so
         * the same work is done in less memory; more would cost every small backup more than it
         * buys against guessing. The parameters live in each key file: changing them here only
         * changes new keys. */
        p->opslimit = 4;
        p->memlimit = 48ULL << 20;
}

static int store_config(struct kb_backend *be, const struct kb_master *m, enum kb_id_hash id_hash,
                        struct kb_err *err)
{
        Kbackup__Config c = KBACKUP__CONFIG__INIT;
        uint8_t repo_id[16], plain[256];
        struct kb_buf sealed = KB_BUF_INIT;
        size_t n;
        int r;

        kb_crypto_random(repo_id, sizeof(repo_id));
        c.version = CONFIG_VERSION;
        c.repo_id.data = repo_id;
        c.repo_id.len = sizeof(repo_id);
        c.aead = (char *)CONFIG_AEAD;
        c.id_hash = (char *)kb_id_hash_name(id_hash);
        c.chunk_min = kb_chunker_default_params.min_size;
        c.chunk_avg = kb_chunker_default_params.avg_size;
        c.chunk_max = kb_chunker_default_params.max_size;
        c.pack_size = KB_REPO_DEFAULT_PACK_SIZE;
        c.created_unix = time(NULL);
        n = kbackup__config__pack(&c, plain);
        r = kb_crypto_seal(m->enc_key, plain, n, &sealed);
        if (r == 0)
                r = kb_backend_put(be, KB_OBJ_CONFIG, "config", sealed.data, sealed.len, err);
        kb_buf_free(&sealed);
        return r;
}

int kb_repo_init(const char *location, const char *password, size_t pwlen,
                 const struct kb_kdf_params *kdf, const char *id_hash, struct kb_err *err)
{
        enum kb_id_hash idh = CONFIG_IDHASH_DEFAULT;
        struct kb_backend *be = NULL;
        struct kb_buf keyfile = KB_BUF_INIT;
        struct kb_master m;
        uint8_t kid[KB_ID_LEN];
        char kname[KB_ID_HEX_LEN + 1];
        uint64_t size;
        int r;

        r = kb_crypto_init(err);
        if (r < 0)
                return r;
        if (id_hash && kb_id_hash_parse(id_hash, &idh) < 0)
                return kb_err_set(err, -EINVAL, "unknown id hash '%s' (keyed-blake3, hmac-sha256)",
                                  id_hash);
        r = kb_backend_open(location, 1, &be, err);
        if (r < 0)
                return r;
        if (kb_backend_stat(be, KB_OBJ_MARKER, "kbackup", &size, NULL) == 0) {
                r = kb_err_set(err, -EEXIST, "a repository already exists at %s", location);
                goto out;
        }
        if (kb_backend_stat(be, KB_OBJ_CONFIG, "config", &size, NULL) == 0) {
                r = kb_err_set(err, -EEXIST,
                               "%s holds an incomplete repository (an interrupted init); remove "
                               "it and run init again",
                               location);
                goto out;
        }
        kb_master_generate(&m);
        r = kb_keyfile_create(&m, password, pwlen, kdf, &keyfile, err);
        if (r < 0)
                goto out;
        kb_crypto_object_id(keyfile.data, keyfile.len, kid);
        kb_hex_encode(kid, sizeof(kid), kname);
        r = kb_backend_put(be, KB_OBJ_KEY, kname, keyfile.data, keyfile.len, err);
        if (r == 0)
                r = store_config(be, &m, idh, err);
        /* The marker comes last: a directory without it is not (yet) a repository. */
        if (r == 0)
                r = kb_backend_put(be, KB_OBJ_MARKER, "kbackup", MARKER_TEXT, strlen(MARKER_TEXT),
                                   err);
out:
        kb_crypto_wipe(&m, sizeof(m));
        kb_buf_free(&keyfile);
        kb_backend_close(be);
        return r;
}

static int check_marker(struct kb_backend *be, const char *location, struct kb_err *err)
{
        struct kb_buf b = KB_BUF_INIT;
        int r = kb_backend_get(be, KB_OBJ_MARKER, "kbackup", 0, 0, &b, err);

        if (r == KB_ENOTFOUND)
                r = kb_err_set(err, KB_EFORMAT,
                               "%s is not a kbackup repository (run 'kbackup init' first)",
                               location);
        else if (r == 0 && (b.len != strlen(MARKER_TEXT) || memcmp(b.data, MARKER_TEXT, b.len)))
                r = kb_err_set(err, KB_EFORMAT,
                               "%s has an unknown repository format (newer kbackup?)", location);
        kb_buf_free(&b);
        return r;
}

struct key_try {
        struct kb_repo *r;
        const char *password;
        size_t pwlen;
        int opened;
        int rc;
        struct kb_err *err;
};

static int try_key(const char *name, uint64_t size, void *arg)
{
        struct key_try *t = arg;
        struct kb_buf b = KB_BUF_INIT;
        struct kb_err e;
        int r;

        (void)size;
        r = kb_backend_get(t->r->be, KB_OBJ_KEY, name, 0, 0, &b, &e);
        if (r == 0)
                r = kb_keyfile_open(b.data, b.len, t->password, t->pwlen, &t->r->master, &e);
        kb_buf_free(&b);
        if (r == 0) {
                t->opened = 1;
                snprintf(t->r->key_name, sizeof(t->r->key_name), "%s", name);
                return 1; /* stop listing */
        }
        /* Remember the most telling failure: anything beats "wrong password". */
        if (t->rc == 0 || t->rc == KB_EAUTH) {
                t->rc = r;
                if (t->err)
                        *t->err = e;
        }
        return 0;
}

static int load_config(struct kb_repo *r, struct kb_err *err)
{
        struct kb_buf b = KB_BUF_INIT;
        Kbackup__Config *c;
        int rc;

        rc = kb_repo_object_get(r, KB_OBJ_CONFIG, "config", &b, err);
        if (rc < 0) {
                kb_buf_free(&b);
                if (rc == KB_ECORRUPT)
                        kb_err_prefix(err, "config: ");
                return rc;
        }
        c = kbackup__config__unpack(NULL, b.len, b.data);
        kb_buf_free(&b);
        if (!c)
                return kb_err_set(err, KB_ECORRUPT, "repository config does not parse");
        if (c->version < CONFIG_VERSION_MIN || c->version > CONFIG_VERSION ||
            strcmp(c->aead, CONFIG_AEAD) || kb_id_hash_parse(c->id_hash, &r->id_hash) < 0) {
                rc = kb_err_set(err, KB_EFORMAT, "repository config has an unknown format");
        } else {
                r->blob_id_ad = c->version >= 2;
                r->chunker.min_size = c->chunk_min;
                r->chunker.avg_size = c->chunk_avg;
                r->chunker.max_size = c->chunk_max;
                r->pack_size = c->pack_size;
                if (r->pack_size < (1u << 20) || r->pack_size > (1u << 30) ||
                    c->chunk_max > KB_BLOB_MAX)
                        rc = kb_err_set(err, KB_ECORRUPT, "repository config has invalid sizes");
        }
        kbackup__config__free_unpacked(c, NULL);
        return rc;
}

int kb_repo_open(const char *location, const char *password, size_t pwlen, int flags,
                 struct kb_repo **out, struct kb_err *err)
{
        struct key_try t = {0};
        struct kb_repo *r;
        int rc;

        rc = kb_crypto_init(err);
        if (rc < 0)
                return rc;
        r = calloc(1, sizeof(*r));
        if (!r)
                return kb_err_set(err, -ENOMEM, "out of memory");
        pthread_mutex_init(&r->lock, NULL);
        pthread_cond_init(&r->cond, NULL);
        pthread_cond_init(&r->write_cond, NULL);
        pthread_key_create(&r->zstd_key, kb_repo_zstd_ctx_destroy);
        r->zstd_level = KB_REPO_DEFAULT_ZSTD_LEVEL;
        rc = kb_index_new(&r->index);
        if (rc == 0)
                rc = kb_treecache_new(&r->trees);
        if (rc < 0) {
                kb_err_set(err, rc, "out of memory");
                goto fail;
        }
        rc = kb_backend_open(location, 0, &r->be, err);
        if (rc < 0)
                goto fail;
        r->read_only = (flags & KB_REPO_READ_ONLY) || r->be->read_only;
        rc = check_marker(r->be, location, err);
        if (rc < 0)
                goto fail;

        t.r = r;
        t.password = password;
        t.pwlen = pwlen;
        t.err = err;
        rc = kb_repo_list(r, KB_OBJ_KEY, try_key, &t, err);
        if (rc < 0)
                goto fail;
        if (!t.opened) {
                rc = t.rc ? t.rc : kb_err_set(err, KB_EFORMAT, "repository has no key files");
                goto fail;
        }
        kb_err_clear(err);
        rc = load_config(r, err);
        if (rc == 0 && !(flags & KB_REPO_NO_INDEX))
                rc = kb_repo_index_load(r, err);
        if (rc < 0)
                goto fail;
        *out = r;
        return 0;
fail:
        kb_repo_close(r);
        return rc;
}

void kb_repo_close(struct kb_repo *r)
{
        struct pack_builder *b, *next;

        if (!r)
                return;
        kb_pack_writer_stop(r);
        kb_repo_zstd_release_thread(r);
        pthread_key_delete(r->zstd_key);
        for (int k = 0; k < KB_PACK_KINDS; k++)
                kb_pack_builder_free(r->current[k]);
        while (r->n_spare)
                kb_buf_free(&r->spare[--r->n_spare]);
        for (b = r->unindexed; b; b = next) {
                next = b->next;
                kb_pack_builder_free(b);
        }
        kb_index_free(r->index);
        kb_treecache_free(r->trees);
        free(r->index_names);
        kb_backend_close(r->be);
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
        pthread_cond_destroy(&r->write_cond);
        kb_crypto_wipe(&r->master, sizeof(r->master));
        free(r);
}

int kb_repo_index_reload(struct kb_repo *r, struct kb_err *err)
{
        struct kb_index *fresh;
        int rc = kb_index_new(&fresh), filling = 0;

        if (rc < 0)
                return kb_err_set(err, rc, "out of memory");
        pthread_mutex_lock(&r->lock);
        for (int k = 0; k < KB_PACK_KINDS; k++)
                filling |= r->current[k] != NULL;
        if (filling || r->unindexed || r->inflight) {
                pthread_mutex_unlock(&r->lock);
                kb_index_free(fresh);
                return kb_err_set(err, KB_EUSAGE, "index reload with blobs pending");
        }
        kb_index_free(r->index);
        r->index = fresh;
        r->n_index_names = 0;
        pthread_mutex_unlock(&r->lock);
        return kb_repo_index_load(r, err);
}

int kb_repo_read_only(const struct kb_repo *r)
{
        return r->read_only;
}

struct kb_backend *kb_repo_backend(struct kb_repo *r)
{
        return r->be;
}

const struct kb_chunker_params *kb_repo_chunker_params(struct kb_repo *r)
{
        return &r->chunker;
}

const uint8_t *kb_repo_chunker_seed(struct kb_repo *r)
{
        return r->master.chunker_seed;
}

void kb_repo_set_compression(struct kb_repo *r, int level)
{
        r->zstd_level = level;
}

void kb_repo_blob_id(struct kb_repo *r, const void *data, size_t len, uint8_t id[KB_ID_LEN])
{
        kb_crypto_blob_id(r->id_hash, r->master.id_key, data, len, id);
}

int kb_repo_object_put(struct kb_repo *r, enum kb_obj_type type, const void *data, size_t len,
                       char name_hex[KB_ID_HEX_LEN + 1], struct kb_err *err)
{
        struct kb_buf sealed = KB_BUF_INIT;
        uint8_t id[KB_ID_LEN];
        int rc;

        if (r->read_only)
                return kb_err_set(err, -EROFS, "repository is opened read-only");
        if (type == KB_OBJ_SNAPSHOT && r->guard) {
                rc = r->guard(r->guard_arg, err);
                if (rc < 0)
                        return rc;
        }
        rc = kb_crypto_seal(r->master.enc_key, data, len, &sealed);
        if (rc < 0)
                return kb_err_set(err, rc, "out of memory");
        kb_crypto_object_id(sealed.data, sealed.len, id);
        kb_hex_encode(id, sizeof(id), name_hex);
        rc = kb_backend_put(r->be, type, name_hex, sealed.data, sealed.len, err);
        kb_buf_free(&sealed);
        return rc;
}

struct id_filter {
        kb_backend_list_cb cb;
        void *arg;
};

static int only_ids(const char *name, uint64_t size, void *arg)
{
        const struct id_filter *f = arg;
        uint8_t id[KB_ID_LEN];

        return kb_hex_decode(name, id, KB_ID_LEN) < 0 ? 0 : f->cb(name, size, f->arg);
}

int kb_repo_list(struct kb_repo *r, enum kb_obj_type type, kb_backend_list_cb cb, void *arg,
                 struct kb_err *err)
{
        struct id_filter f = {cb, arg};

        return kb_backend_list(r->be, type, only_ids, &f, err);
}

int kb_repo_object_get(struct kb_repo *r, enum kb_obj_type type, const char *name,
                       struct kb_buf *out, struct kb_err *err)
{
        struct kb_buf sealed = KB_BUF_INIT;
        int rc;

        rc = kb_backend_get(r->be, type, name, 0, 0, &sealed, err);
        if (rc == 0) {
                rc = kb_crypto_open(r->master.enc_key, sealed.data, sealed.len, out);
                /* Callers name the object ("index 241e715ff7669b69: ..."). */
                if (rc == KB_ECORRUPT)
                        kb_err_set(err, rc, "authentication failed (damaged or foreign data)");
                else if (rc < 0)
                        kb_err_set(err, rc, "out of memory");
        }
        kb_buf_free(&sealed);
        return rc;
}
