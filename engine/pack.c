/* pack.c - blob storage: compress, seal and gather blobs into packs; write packs and the index
 * files that name them; load and verify single blobs.
 *
 * Pack layout: blob || blob || ... || sealed PackHeader || uint32 LE length of the sealed header.
 * A stored blob is seal(flag || payload) where flag 0 means payload is the plaintext and 1 means it
 * is a zstd frame. Packs are named by the SHA-256 hash of their bytes and never change. */
#include "repo_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* For ZSTD_customMem and ZSTD_createCCtx_advanced (exported by the shared library). */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#define BLOB_RAW  0
#define BLOB_ZSTD 1

/* Per-thread state of blob encoding and decoding: zstd contexts and scratch buffers that are
 * kept between blobs, so chunk-sized buffers are not mapped and faulted in for every blob. */
struct zstd_ctx {
        ZSTD_CCtx *c;
        ZSTD_DCtx *d;
        struct kb_buf plain, sealed;
        void *spare; /* a freed zstd workspace kept for its next allocation (zmem_alloc) */
};

/* zstd sizes a context's workspace to each input's parameters, and frees and allocates it anew
 * when they grow (a large chunk after small files) or when it has been too large for a while:
 * on a tree of small files that was 470 fresh mappings, 150 MB of page faults, per backup. The
 * contexts allocate through these: the largest freed block is kept and handed back to any
 * request it can hold. Blocks carry their size in front (16 bytes, keeping malloc's alignment). */
#define ZMEM_HEAD 16

static void *zmem_alloc(void *opaque, size_t size)
{
        struct zstd_ctx *z = opaque;
        size_t *b = z->spare;

        if (b && b[0] >= size) {
                z->spare = NULL;
                return (uint8_t *)b + ZMEM_HEAD;
        }
        b = malloc(ZMEM_HEAD + size);
        if (!b)
                return NULL;
        b[0] = size;
        return (uint8_t *)b + ZMEM_HEAD;
}

static void zmem_free(void *opaque, void *p)
{
        struct zstd_ctx *z = opaque;
        size_t *b, *old = z->spare;

        if (!p)
                return;
        b = (size_t *)((uint8_t *)p - ZMEM_HEAD);
        if (old && old[0] >= b[0]) {
                free(b);
                return;
        }
        free(old);
        z->spare = b;
}

/* Scratch buffers larger than this are freed after use: the few largest chunks should not keep
 * 8 MiB per thread resident for the rest of the run. */
#define SCRATCH_KEEP (2u << 20)
/* A pack buffer's first size: a full pack plus a large last chunk and its header, in one
 * page-aligned piece that need not move (the file backend writes it with O_DIRECT). */
#define PACK_RESERVE(r) ((size_t)(r)->pack_size + (16u << 20))

/* Which of kb_repo.current a blob goes to. */
enum { PACK_DATA, PACK_TREES };

static void scratch_done(struct kb_buf *b)
{
        if (b->cap > SCRATCH_KEEP)
                kb_buf_free(b);
        else
                kb_buf_reset(b);
}

void kb_repo_zstd_ctx_destroy(void *p)
{
        struct zstd_ctx *z = p;

        if (!z)
                return;
        ZSTD_freeCCtx(z->c);
        ZSTD_freeDCtx(z->d);
        kb_buf_free(&z->plain);
        kb_buf_free(&z->sealed);
        free(z->spare);
        free(z);
}

/* One context pair per thread: creating them per blob would cost more than compressing. */
static struct zstd_ctx *zstd_ctx(struct kb_repo *r)
{
        struct zstd_ctx *z = pthread_getspecific(r->zstd_key);
        ZSTD_customMem mem;

        if (z)
                return z;
        z = calloc(1, sizeof(*z));
        if (!z)
                return NULL;
        mem = (ZSTD_customMem){zmem_alloc, zmem_free, z};
        z->c = ZSTD_createCCtx_advanced(mem);
        z->d = ZSTD_createDCtx_advanced(mem);
        if (!z->c || !z->d || pthread_setspecific(r->zstd_key, z) != 0) {
                kb_repo_zstd_ctx_destroy(z);
                return NULL;
        }
        return z;
}

void kb_repo_zstd_release_thread(struct kb_repo *r)
{
        kb_repo_zstd_ctx_destroy(pthread_getspecific(r->zstd_key));
        pthread_setspecific(r->zstd_key, NULL);
}

void kb_index_entry_from_blob(struct kb_index_entry *e, const Kbackup__IndexBlob *b, uint32_t pack)
{
        memcpy(e->id, b->id.data, KB_ID_LEN);
        e->pack = pack;
        e->offset = b->offset;
        e->length = b->length;
        e->raw_length = b->raw_length;
        e->type = (uint8_t)b->type;
}

void kb_pack_builder_free(struct pack_builder *b)
{
        if (!b)
                return;
        kb_buf_free(&b->data);
        free(b->blobs);
        free(b);
}

int kb_repo_blob_known(struct kb_repo *r, const uint8_t id[KB_ID_LEN])
{
        int known;

        pthread_mutex_lock(&r->lock);
        known = kb_index_lookup(r->index, id) != NULL;
        pthread_mutex_unlock(&r->lock);
        return known;
}

int kb_repo_blob_size(struct kb_repo *r, const uint8_t id[KB_ID_LEN], uint32_t *raw_len)
{
        const struct kb_index_entry *e;
        int rc = KB_ENOTFOUND;

        pthread_mutex_lock(&r->lock);
        e = kb_index_lookup(r->index, id);
        if (e) {
                *raw_len = e->raw_length;
                rc = 0;
        }
        pthread_mutex_unlock(&r->lock);
        return rc;
}

/* At levels above PROBE_MIN_LEVEL, chunks at least twice PROBE_BYTES are compressed as a stream
 * whose first PROBE_BYTES are flushed on their own: when they shrink by less than 3%, the chunk is
 * taken as incompressible (media, archives, encrypted files) and stored raw without compressing
 * the rest. At the fast levels zstd itself skips through incompressible data (level 1 runs at
 * ~3 GB/s on random bytes), and streaming would cost ~10% on compressible data: one call there. */
#define PROBE_BYTES       (64u << 10)
#define PROBE_KEEP_PERMIL 970
#define PROBE_MIN_LEVEL   3
/* Blobs shorter than this are stored raw. zstd's fixed cost per frame (tables, headers: 5-14 us)
 * dwarfs what it saves on them: of the bench tree's 29k files, the 6.3k under 512 bytes took 1.1%
 * of the backup's CPU to compress and saved 0.27 MB of 287 (43 bytes a file). */
#define COMPRESS_MIN_BYTES 512

/* zstd-compress data into out (capacity `bound`); returns the compressed size, or 0 when the
 * chunk is not worth compressing (incompressible, known to be compressed already: flags has
 * KB_SAVE_NO_COMPRESS, or an error: it is then stored raw). */
static size_t compress_blob(struct kb_repo *r, struct zstd_ctx *z, const void *data, size_t len,
                            unsigned flags, uint8_t *out, size_t bound)
{
        ZSTD_outBuffer ob = {out, bound, 0};
        ZSTD_inBuffer ib = {data, PROBE_BYTES, 0};
        size_t n;

        if (r->zstd_level == 0 || len < COMPRESS_MIN_BYTES || (flags & KB_SAVE_NO_COMPRESS))
                return 0;
        if (len < 2 * PROBE_BYTES || r->zstd_level <= PROBE_MIN_LEVEL) {
                n = ZSTD_compressCCtx(z->c, out, bound, data, len, r->zstd_level);
                return ZSTD_isError(n) ? 0 : n;
        }
        if (ZSTD_isError(ZSTD_CCtx_reset(z->c, ZSTD_reset_session_only)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(z->c, ZSTD_c_compressionLevel, r->zstd_level)) ||
            ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(z->c, len)))
                return 0;
        do {
                n = ZSTD_compressStream2(z->c, &ob, &ib, ZSTD_e_flush);
        } while (n && !ZSTD_isError(n));
        if (ZSTD_isError(n) || ob.pos * 1000 > (size_t)PROBE_BYTES * PROBE_KEEP_PERMIL)
                return 0;
        ib.size = len;
        do {
                n = ZSTD_compressStream2(z->c, &ob, &ib, ZSTD_e_end);
        } while (n && !ZSTD_isError(n));
        return ZSTD_isError(n) ? 0 : ob.pos;
}

/* Compress (when it pays) and seal a blob into the thread's z->sealed. */
static int encode_blob(struct kb_repo *r, struct zstd_ctx *z, const uint8_t id[KB_ID_LEN],
                       const void *data, size_t len, unsigned flags, struct kb_err *err)
{
        struct kb_buf *plain = &z->plain;
        size_t bound = ZSTD_compressBound(len), n;
        int rc;

        kb_buf_reset(plain);
        kb_buf_reset(&z->sealed);
        if (kb_buf_reserve(plain, 1 + (bound > len ? bound : len)) < 0)
                return kb_err_set(err, -ENOMEM, "out of memory compressing a chunk");
        n = compress_blob(r, z, data, len, flags, plain->data + 1, bound);
        /* Keep the compressed form only when it saves something worth a decompression. */
        if (n && n + 64 < len) {
                plain->data[0] = BLOB_ZSTD;
                plain->len = 1 + n;
        } else {
                plain->data[0] = BLOB_RAW;
                if (len)
                        memcpy(plain->data + 1, data, len);
                plain->len = 1 + len;
        }
        rc = kb_crypto_seal_ad(r->master.enc_key, id, r->blob_id_ad ? KB_ID_LEN : 0, plain->data,
                               plain->len, &z->sealed);
        scratch_done(plain);
        if (rc < 0)
                return kb_err_set(err, rc, "out of memory sealing a chunk");
        return 0;
}

static int builder_add(struct pack_builder *b, const uint8_t id[KB_ID_LEN], uint8_t type,
                       const struct kb_buf *sealed, uint32_t raw_len)
{
        struct pack_blob *pb;
        int rc;

        if (b->nblobs == b->cap) {
                size_t cap = b->cap ? b->cap * 2 : 64;
                struct pack_blob *p = realloc(b->blobs, cap * sizeof(*p));

                if (!p)
                        return -ENOMEM;
                b->blobs = p;
                b->cap = cap;
        }
        pb = &b->blobs[b->nblobs];
        memcpy(pb->id, id, KB_ID_LEN);
        pb->type = type;
        pb->offset = (uint32_t)b->data.len;
        pb->length = (uint32_t)sealed->len;
        pb->raw_length = raw_len;
        rc = kb_buf_append(&b->data, sealed->data, sealed->len);
        if (rc < 0)
                return rc;
        b->nblobs++;
        return 0;
}

int kb_pack_builder_add_sealed(struct pack_builder *b, const uint8_t id[KB_ID_LEN], uint8_t type,
                               const void *sealed, size_t len, uint32_t raw_len)
{
        struct kb_buf view = {(uint8_t *)sealed, len, len};

        return builder_add(b, id, type, &view, raw_len);
}

/* Fill the protobuf view of a builder's blobs (pointing into it) for a header or index entry. */
static Kbackup__IndexBlob **blob_views(const struct pack_builder *b, Kbackup__IndexBlob *store)
{
        Kbackup__IndexBlob **v = malloc((b->nblobs ? b->nblobs : 1) * sizeof(*v));
        size_t i;

        if (!v)
                return NULL;
        for (i = 0; i < b->nblobs; i++) {
                kbackup__index_blob__init(&store[i]);
                store[i].id.data = (uint8_t *)b->blobs[i].id;
                store[i].id.len = KB_ID_LEN;
                store[i].type = b->blobs[i].type;
                store[i].offset = b->blobs[i].offset;
                store[i].length = b->blobs[i].length;
                store[i].raw_length = b->blobs[i].raw_length;
                v[i] = &store[i];
        }
        return v;
}

/* Append the sealed header and its length, then store the pack under its hash. */
int kb_pack_write(struct kb_repo *r, struct pack_builder *b, uint8_t pack_id[KB_ID_LEN],
                  struct kb_err *err)
{
        Kbackup__PackHeader h = KBACKUP__PACK_HEADER__INIT;
        Kbackup__IndexBlob *store = calloc(b->nblobs ? b->nblobs : 1, sizeof(*store));
        Kbackup__IndexBlob **views = store ? blob_views(b, store) : NULL;
        struct kb_buf plain = KB_BUF_INIT;
        char name[KB_ID_HEX_LEN + 1];
        size_t before = b->data.len;
        uint8_t len_le[4];
        uint32_t hlen;
        int rc;

        if (!views) {
                rc = kb_err_set(err, -ENOMEM, "out of memory writing a pack");
                goto out;
        }
        h.n_blobs = b->nblobs;
        h.blobs = views;
        rc = kb_buf_reserve(&plain, kbackup__pack_header__get_packed_size(&h));
        if (rc == 0) {
                plain.len = kbackup__pack_header__pack(&h, plain.data);
                rc = kb_crypto_seal(r->master.enc_key, plain.data, plain.len, &b->data);
        }
        if (rc < 0) {
                kb_err_set(err, rc, "out of memory writing a pack");
                goto out;
        }
        hlen = (uint32_t)(b->data.len - before);
        len_le[0] = hlen & 0xff;
        len_le[1] = (hlen >> 8) & 0xff;
        len_le[2] = (hlen >> 16) & 0xff;
        len_le[3] = hlen >> 24;
        rc = kb_buf_append(&b->data, len_le, sizeof(len_le));
        if (rc < 0) {
                kb_err_set(err, rc, "out of memory writing a pack");
                goto out;
        }
        kb_crypto_object_id(b->data.data, b->data.len, pack_id);
        kb_hex_encode(pack_id, KB_ID_LEN, name);
        rc = kb_backend_put(r->be, KB_OBJ_PACK, name, b->data.data, b->data.len, err);
        if (rc == -EEXIST) /* same bytes already there: content addressing makes it ours */
                rc = 0;
out:
        kb_buf_free(&plain);
        free(views);
        free(store);
        return rc;
}

static int write_index(struct kb_repo *r, struct pack_builder *list, struct kb_err *err)
{
        Kbackup__Index ix = KBACKUP__INDEX__INIT;
        Kbackup__IndexPack *packs, **pviews;
        Kbackup__IndexBlob **stores = NULL;
        struct pack_builder *b;
        struct kb_buf plain = KB_BUF_INIT;
        char name[KB_ID_HEX_LEN + 1];
        size_t n = 0, i;
        int rc = 0;

        for (b = list; b; b = b->next)
                n++;
        if (!n)
                return 0;
        packs = calloc(n, sizeof(*packs));
        pviews = calloc(n, sizeof(*pviews));
        stores = calloc(n, sizeof(*stores));
        if (!packs || !pviews || !stores) {
                rc = kb_err_set(err, -ENOMEM, "out of memory writing the index");
                goto out;
        }
        for (b = list, i = 0; b; b = b->next, i++) {
                Kbackup__IndexBlob *store = calloc(b->nblobs ? b->nblobs : 1, sizeof(*store));

                stores[i] = store;

                kbackup__index_pack__init(&packs[i]);
                pthread_mutex_lock(&r->lock);
                packs[i].pack_id.data = (uint8_t *)kb_index_pack_id(r->index, b->pack_no);
                pthread_mutex_unlock(&r->lock);
                packs[i].pack_id.len = KB_ID_LEN;
                packs[i].blobs = store ? blob_views(b, store) : NULL;
                if (!packs[i].blobs) {
                        rc = kb_err_set(err, -ENOMEM, "out of memory writing the index");
                        goto out;
                }
                packs[i].n_blobs = b->nblobs;
                pviews[i] = &packs[i];
        }
        ix.n_packs = n;
        ix.packs = pviews;
        rc = kb_buf_reserve(&plain, kbackup__index__get_packed_size(&ix));
        if (rc < 0) {
                kb_err_set(err, rc, "out of memory writing the index");
                goto out;
        }
        plain.len = kbackup__index__pack(&ix, plain.data);
        rc = kb_repo_object_put(r, KB_OBJ_INDEX, plain.data, plain.len, name, err);
        if (rc == -EEXIST)
                rc = 0;
out:
        for (i = 0; packs && stores && i < n; i++) {
                free(packs[i].blobs);
                free(stores[i]);
        }
        free(stores);
        free(packs);
        free(pviews);
        kb_buf_free(&plain);
        return rc;
}

/* Forget a detached pack's blobs, so a retry in this process stores them again. Called with the
 * lock held. */
static void forget_pack(struct kb_repo *r, struct pack_builder *b)
{
        for (size_t i = 0; i < b->nblobs; i++)
                kb_index_remove(r->index, b->blobs[i].id);
        r->inflight--;
        pthread_cond_broadcast(&r->cond);
}

void kb_pack_finish_failed(struct kb_repo *r, struct pack_builder *b)
{
        pthread_mutex_lock(&r->lock);
        forget_pack(r, b);
        pthread_mutex_unlock(&r->lock);
        kb_pack_builder_free(b);
}

int kb_pack_finish(struct kb_repo *r, struct pack_builder *b, struct kb_err *err)
{
        uint8_t pack_id[KB_ID_LEN];
        int rc = kb_pack_write(r, b, pack_id, err);

        /* The pack's bytes are on the backend; only the blob list is kept for the index file. The
         * buffer is kept for the next pack while there are few (they are the same memory as the
         * packs being written). */
        pthread_mutex_lock(&r->lock);
        if (r->n_spare < KB_PACK_SPARE && !b->tree_pack) {
                kb_buf_reset(&b->data);
                r->spare[r->n_spare++] = b->data;
                b->data = (struct kb_buf)KB_BUF_INIT;
        }
        pthread_mutex_unlock(&r->lock);
        kb_buf_free(&b->data);
        if (rc < 0) {
                kb_pack_finish_failed(r, b);
                return rc;
        }
        pthread_mutex_lock(&r->lock);
        kb_index_pack_set_id(r->index, b->pack_no, pack_id);
        b->next = r->unindexed;
        r->unindexed = b;
        r->unindexed_blobs += b->nblobs;
        r->inflight--;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        return 0;
}

/* Take the list of written-but-unindexed packs when it is large enough (or `force`). */
static struct pack_builder *take_unindexed(struct kb_repo *r, int force)
{
        struct pack_builder *list = NULL;

        if (force || r->unindexed_blobs >= KB_INDEX_FLUSH_BLOBS) {
                list = r->unindexed;
                r->unindexed = NULL;
                r->unindexed_blobs = 0;
        }
        return list;
}

static int index_and_free(struct kb_repo *r, struct pack_builder *list, struct kb_err *err)
{
        int rc = write_index(r, list, err);
        struct pack_builder *next;

        if (rc < 0) {
                /* Put them back: a later flush retries, and nothing claims they are indexed. */
                pthread_mutex_lock(&r->lock);
                for (struct pack_builder *b = list; b; b = next) {
                        next = b->next;
                        b->next = r->unindexed;
                        r->unindexed = b;
                        r->unindexed_blobs += b->nblobs;
                }
                pthread_mutex_unlock(&r->lock);
                return rc;
        }
        for (; list; list = next) {
                next = list->next;
                kb_pack_builder_free(list);
        }
        return 0;
}

int kb_repo_blob_save(struct kb_repo *r, enum kb_blob_type type, const uint8_t id[KB_ID_LEN],
                      const void *data, size_t len, struct kb_save_result *res, struct kb_err *err)
{
        return kb_repo_blob_save_flags(r, type, 0, id, data, len, res, err);
}

int kb_repo_blob_save_flags(struct kb_repo *r, enum kb_blob_type type, unsigned flags,
                            const uint8_t id[KB_ID_LEN], const void *data, size_t len,
                            struct kb_save_result *res, struct kb_err *err)
{
        struct zstd_ctx *z;
        struct kb_buf *sealed;
        struct pack_builder **cur, *full = NULL, *toindex = NULL;
        struct kb_index_entry e = {0};
        int rc, inserted = 0;

        if (res) {
                res->added = 0;
                res->stored_bytes = 0;
        }
        if (r->read_only)
                return kb_err_set(err, -EROFS, "repository is opened read-only");
        if (len > KB_BLOB_MAX)
                return kb_err_set(err, -EFBIG, "blob of %zu bytes is too large", len);
        if (kb_repo_blob_known(r, id))
                return 0;
        z = zstd_ctx(r);
        if (!z)
                return kb_err_set(err, -ENOMEM, "out of memory compressing a chunk");
        rc = encode_blob(r, z, id, data, len, flags, err);
        if (rc < 0)
                return rc;
        sealed = &z->sealed;

        pthread_mutex_lock(&r->lock);
        cur = &r->current[type == KB_BLOB_DATA ? PACK_DATA : PACK_TREES];
        if (!*cur) {
                *cur = calloc(1, sizeof(**cur));
                rc = *cur ? kb_index_pack_reserve(r->index) : -ENOMEM;
                if (rc < 0) {
                        free(*cur);
                        *cur = NULL;
                        goto unlock;
                }
                (*cur)->pack_no = (uint32_t)rc;
                rc = 0;
                /* A written pack's buffer, its pages already mapped: faulting in 16 MiB of fresh
                 * memory per pack cost several percent of a backup's CPU. Tree packs grow as
                 * plain buffers, which are not page-aligned: the file backend then writes them
                 * through the page cache, where the next backup's walk finds them. */
                if (cur == &r->current[PACK_TREES])
                        (*cur)->tree_pack = 1;
                else if (r->n_spare)
                        (*cur)->data = r->spare[--r->n_spare];
                else
                        rc = kb_buf_reserve_aligned(&(*cur)->data, PACK_RESERVE(r));
                if (rc < 0)
                        goto unlock;
        }
        memcpy(e.id, id, KB_ID_LEN);
        e.pack = (*cur)->pack_no;
        e.offset = (uint32_t)(*cur)->data.len;
        e.length = (uint32_t)sealed->len;
        e.raw_length = (uint32_t)len;
        e.type = (uint8_t)type;
        rc = kb_index_insert(r->index, &e, &inserted);
        if (rc == 0 && inserted) {
                rc = builder_add(*cur, id, (uint8_t)type, sealed, (uint32_t)len);
                if (rc < 0)
                        kb_index_remove(r->index, id);
        }
        if (rc == 0 && (*cur)->data.len >= r->pack_size) {
                full = *cur;
                *cur = NULL;
                r->inflight++;
        }
        if (rc == 0)
                toindex = take_unindexed(r, 0);
unlock:
        pthread_mutex_unlock(&r->lock);
        if (rc < 0) {
                scratch_done(sealed);
                return kb_err_set(err, rc, "out of memory adding a chunk to a pack");
        }
        if (res && inserted) {
                res->added = 1;
                res->stored_bytes = sealed->len;
        }
        scratch_done(sealed);
        if (full)
                rc = kb_pack_writer_submit(r, full, err);
        if (rc == 0 && toindex)
                rc = index_and_free(r, toindex, err);
        return rc;
}

int kb_repo_flush(struct kb_repo *r, struct kb_err *err)
{
        struct pack_builder *last[KB_PACK_KINDS], *list;
        int rc = 0;

        if (r->read_only)
                return 0;
        pthread_mutex_lock(&r->lock);
        for (int k = 0; k < KB_PACK_KINDS; k++) {
                last[k] = r->current[k];
                r->current[k] = NULL;
                if (last[k])
                        r->inflight++;
        }
        pthread_mutex_unlock(&r->lock);
        for (int k = 0; k < KB_PACK_KINDS; k++) {
                if (last[k] && rc == 0)
                        rc = kb_pack_finish(r, last[k], err);
                else if (last[k])
                        kb_pack_finish(r, last[k], NULL);
        }
        pthread_mutex_lock(&r->lock);
        while (r->inflight)
                pthread_cond_wait(&r->cond, &r->lock);
        if (rc == 0 && r->write_rc < 0) {
                rc = r->write_rc;
                *err = r->write_err;
        }
        list = take_unindexed(r, 1);
        pthread_mutex_unlock(&r->lock);
        if (rc == 0)
                rc = index_and_free(r, list, err);
        else
                index_and_free(r, list, NULL);
        return rc;
}

static void short_hex(const uint8_t *id, char out[17])
{
        kb_hex_encode(id, 8, out);
}

int kb_repo_blob_decode(struct kb_repo *r, const uint8_t id[KB_ID_LEN], const void *sealed,
                        size_t len, uint32_t raw_length, int verify_id, struct kb_buf *out,
                        struct kb_err *err)
{
        struct zstd_ctx *z = zstd_ctx(r);
        struct kb_buf *plain;
        uint8_t check[KB_ID_LEN];
        char bid[17];
        int rc;

        short_hex(id, bid);
        if (raw_length > KB_BLOB_MAX)
                return kb_err_set(err, KB_ECORRUPT, "chunk %s: index entry is invalid", bid);
        if (!z)
                return kb_err_set(err, -ENOMEM, "out of memory loading chunk %s", bid);
        plain = &z->plain;
        kb_buf_reset(plain);
        rc = kb_crypto_open_ad(r->master.enc_key, id, r->blob_id_ad ? KB_ID_LEN : 0, sealed, len,
                               plain);
        if (rc < 0 || plain->len < 1) {
                rc = kb_err_set(err, KB_ECORRUPT, "chunk %s: authentication failed (damaged data)",
                                bid);
                goto out;
        }
        rc = kb_buf_reserve(out, raw_length);
        if (rc < 0) {
                kb_err_set(err, rc, "out of memory loading chunk %s", bid);
                goto out;
        }
        if (plain->data[0] == BLOB_RAW && plain->len - 1 == raw_length) {
                if (raw_length)
                        memcpy(out->data + out->len, plain->data + 1, raw_length);
        } else if (plain->data[0] == BLOB_ZSTD) {
                size_t n = ZSTD_decompressDCtx(z->d, out->data + out->len, raw_length,
                                               plain->data + 1, plain->len - 1);

                if (ZSTD_isError(n) || n != raw_length) {
                        rc = kb_err_set(err, KB_ECORRUPT, "chunk %s: does not decompress", bid);
                        goto out;
                }
        } else {
                rc = kb_err_set(err, KB_ECORRUPT, "chunk %s: unknown encoding", bid);
                goto out;
        }
        /* Without the id bound in the seal (format 1), only this catches an index that points at
         * the wrong (but authentic) blob. */
        if (verify_id || !r->blob_id_ad) {
                kb_repo_blob_id(r, out->data + out->len, raw_length, check);
                if (memcmp(check, id, KB_ID_LEN) != 0) {
                        rc = kb_err_set(err, KB_ECORRUPT, "chunk %s: content does not match its id",
                                        bid);
                        goto out;
                }
        }
        out->len += raw_length;
out:
        scratch_done(plain);
        return rc;
}

int kb_repo_blob_locate(struct kb_repo *r, const uint8_t id[KB_ID_LEN], struct kb_blob_loc *loc,
                        struct kb_err *err)
{
        const struct kb_index_entry *found;
        uint8_t pack_id[KB_ID_LEN];
        static const uint8_t zero[KB_ID_LEN];
        char bid[17];

        pthread_mutex_lock(&r->lock);
        found = kb_index_lookup(r->index, id);
        if (found) {
                /* Field by field: a scan's thread may be setting this entry's mark meanwhile
                 * (kb_maint_mark reads ahead with kb_repo_tree_prefetch). A field added to the
                 * entry must be copied here too. */
                _Static_assert(sizeof(struct kb_index_entry) == KB_ID_LEN + 4 * 4 + 4,
                               "kb_repo_blob_locate copies every field but mark");
                memset(&loc->e, 0, sizeof(loc->e));
                memcpy(loc->e.id, found->id, KB_ID_LEN);
                loc->e.pack = found->pack;
                loc->e.offset = found->offset;
                loc->e.length = found->length;
                loc->e.raw_length = found->raw_length;
                loc->e.type = found->type;
                loc->e.used = found->used;
                memcpy(pack_id, kb_index_pack_id(r->index, found->pack), KB_ID_LEN);
                loc->trees_only = kb_index_pack_trees_only(r->index, found->pack);
                loc->data_end = kb_index_pack_data_end(r->index, found->pack);
        }
        pthread_mutex_unlock(&r->lock);
        short_hex(id, bid);
        if (!found)
                return kb_err_set(err, KB_ENOTFOUND, "chunk %s is not in the index", bid);
        if (memcmp(pack_id, zero, KB_ID_LEN) == 0)
                return kb_err_set(err, -EAGAIN, "chunk %s is not written yet", bid);
        if (loc->e.raw_length > KB_BLOB_MAX)
                return kb_err_set(err, KB_ECORRUPT, "chunk %s: index entry is invalid", bid);
        kb_hex_encode(pack_id, KB_ID_LEN, loc->pack);
        return 0;
}

int kb_repo_blob_open(struct kb_repo *r, const struct kb_blob_loc *loc, const void *sealed,
                      struct kb_buf *out, struct kb_err *err)
{
        int rc = kb_repo_blob_decode(r, loc->e.id, sealed, loc->e.length, loc->e.raw_length, 0, out,
                                     err);

        if (rc < 0)
                kb_err_prefix(err, "pack %.16s: ", loc->pack);
        return rc;
}

int kb_repo_blob_fetch(struct kb_repo *r, const struct kb_blob_loc *loc, struct kb_buf *out,
                       struct kb_err *err)
{
        struct kb_buf sealed = KB_BUF_INIT;
        char bid[17];
        int rc;

        rc = kb_backend_get(r->be, KB_OBJ_PACK, loc->pack, loc->e.offset, loc->e.length, &sealed,
                            err);
        if (rc < 0) {
                short_hex(loc->e.id, bid);
                kb_err_prefix(err, "chunk %s: ", bid);
        } else {
                rc = kb_repo_blob_open(r, loc, sealed.data, out, err);
        }
        kb_buf_free(&sealed);
        return rc;
}

int kb_repo_blob_load(struct kb_repo *r, const uint8_t id[KB_ID_LEN], struct kb_buf *out,
                      struct kb_err *err)
{
        struct kb_blob_loc loc;
        int rc = kb_repo_blob_locate(r, id, &loc, err);

        return rc < 0 ? rc : kb_repo_blob_fetch(r, &loc, out, err);
}

int kb_repo_blob_load_tree(struct kb_repo *r, const uint8_t id[KB_ID_LEN], struct kb_buf *out,
                           struct kb_err *err)
{
        struct kb_blob_loc loc;
        int rc = kb_repo_blob_locate(r, id, &loc, err);

        return rc < 0 ? rc : kb_treecache_load(r->trees, r, &loc, out, err);
}

void kb_repo_tree_prefetch(struct kb_repo *r, const uint8_t id[KB_ID_LEN])
{
        struct kb_blob_loc loc;

        if (kb_repo_blob_locate(r, id, &loc, NULL) == 0)
                kb_treecache_prefetch(r->trees, r, &loc);
}

/* ---- loading index files ---- */

struct index_load {
        struct kb_repo *r;
        struct kb_err *err;
};

static int remember_index_name(struct kb_repo *r, const char *name)
{
        if (strlen(name) != KB_ID_HEX_LEN)
                return 0; /* not a name prune could supersede safely: leave it alone */
        if (r->n_index_names == r->index_names_cap) {
                size_t cap = r->index_names_cap ? r->index_names_cap * 2 : 64;
                char(*p)[KB_ID_HEX_LEN + 1] = realloc(r->index_names, cap * sizeof(*p));

                if (!p)
                        return -ENOMEM;
                r->index_names = p;
                r->index_names_cap = cap;
        }
        memcpy(r->index_names[r->n_index_names++], name, KB_ID_HEX_LEN + 1);
        return 0;
}

int kb_repo_index_apply(struct kb_repo *r, const char *name, const struct kb_buf *plain,
                        struct kb_err *err)
{
        Kbackup__Index *ix;
        size_t i, j;
        int rc = 0;

        ix = kbackup__index__unpack(NULL, plain->len, plain->data);
        if (!ix)
                return kb_err_set(err, KB_ECORRUPT, "index %.16s does not parse", name);
        for (i = 0; i < ix->n_packs && rc == 0; i++) {
                Kbackup__IndexPack *p = ix->packs[i];
                int pack_no;

                if (p->pack_id.len != KB_ID_LEN) {
                        rc = kb_err_set(err, KB_ECORRUPT, "index %.16s is invalid", name);
                        break;
                }
                pack_no = kb_index_pack_add(r->index, p->pack_id.data);
                if (pack_no < 0) {
                        rc = kb_err_set(err, pack_no, "out of memory loading the index");
                        break;
                }
                for (j = 0; j < p->n_blobs; j++) {
                        Kbackup__IndexBlob *b = p->blobs[j];
                        struct kb_index_entry e = {0};

                        if (b->id.len != KB_ID_LEN) {
                                rc = kb_err_set(err, KB_ECORRUPT, "index %.16s is invalid", name);
                                break;
                        }
                        kb_index_entry_from_blob(&e, b, (uint32_t)pack_no);
                        rc = kb_index_insert(r->index, &e, NULL);
                        if (rc < 0) {
                                kb_err_set(err, rc, "out of memory loading the index");
                                break;
                        }
                }
        }
        kbackup__index__free_unpacked(ix, NULL);
        if (rc == 0 && remember_index_name(r, name) < 0)
                rc = kb_err_set(err, -ENOMEM, "out of memory loading the index");
        return rc;
}

static int load_listed_index(const char *name, int rc, struct kb_buf *plain,
                             const struct kb_err *ferr, void *arg)
{
        struct index_load *l = arg;

        if (rc == 0)
                return kb_repo_index_apply(l->r, name, plain, l->err);
        if (l->err) {
                *l->err = *ferr;
                kb_err_prefix(l->err, "index %.16s: ", name);
        }
        return rc;
}

int kb_repo_index_load(struct kb_repo *r, struct kb_err *err)
{
        struct index_load l = {r, err};

        return kb_repo_object_each(r, KB_OBJ_INDEX, load_listed_index, &l, err);
}
