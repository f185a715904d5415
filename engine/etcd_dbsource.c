/* etcd_dbsource.c - a stored etcd snapshot's database as a random-access bbolt source, read
 * straight from the repository's chunks (nothing is written to disk). Chunk offsets come from the
 * index's plaintext lengths, so opening reads no chunk; a small LRU cache of decrypted chunks
 * serves page reads, which the key-space scan issues in nearly sequential order. Chunks come
 * through a pack reader with every chunk announced, so a miss reads the chunks after it in the
 * same range (one GET instead of one per 16 KiB chunk on S3). */
#include "etcd.h"
#include "etcd_keyspace.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pack_reader.h"

/* Read-ahead: windows of a pack, each read with one request. */
#define READ_WINDOWS 4
#define READ_WINDOW  (2u << 20)

/* Chunks average 16 KiB (kb_etcd_chunker_params), at most 128 KiB: 64 of them hold a few levels
 * of branch pages plus the leaves being read, in at most 8 MiB. */
#define CACHE_SLOTS 64

struct slot {
        size_t chunk; /* index, valid when buf.data */
        uint64_t used;
        struct kb_buf buf;
};

struct chunk_src {
        struct kb_repo *repo;
        struct kb_pack_reader *reader;
        size_t n;
        uint8_t (*ids)[KB_ID_LEN];
        uint64_t *start; /* n + 1 offsets: chunk i holds [start[i], start[i+1]) */
        struct slot slot[CACHE_SLOTS];
        uint64_t tick;
};

static void chunk_close(void *arg)
{
        struct chunk_src *c = arg;

        for (int i = 0; i < CACHE_SLOTS; i++)
                kb_buf_free(&c->slot[i].buf);
        kb_pack_reader_free(c->reader);
        free(c->ids);
        free(c->start);
        free(c);
}

static int chunk_get(struct chunk_src *c, size_t i, struct slot **out, struct kb_err *err)
{
        struct slot *victim = &c->slot[0];
        int rc;

        for (int k = 0; k < CACHE_SLOTS; k++) {
                struct slot *s = &c->slot[k];

                if (s->buf.data && s->chunk == i) {
                        s->used = ++c->tick;
                        *out = s;
                        return 0;
                }
                if (!s->buf.data || (victim->buf.data && s->used < victim->used))
                        victim = s;
        }
        kb_buf_reset(&victim->buf);
        rc = kb_pack_reader_load(c->reader, c->ids[i], &victim->buf, err);
        if (rc == 0 && victim->buf.len != c->start[i + 1] - c->start[i])
                rc = kb_err_set(err, KB_ECORRUPT, "etcd snapshot chunk %zu has the wrong size", i);
        if (rc < 0) {
                kb_buf_free(&victim->buf);
                return rc;
        }
        victim->chunk = i;
        victim->used = ++c->tick;
        *out = victim;
        return 0;
}

static int chunk_read(void *arg, uint64_t off, void *buf, size_t len, struct kb_err *err)
{
        struct chunk_src *c = arg;
        uint8_t *p = buf;

        while (len) {
                size_t lo = 0, hi = c->n;
                struct slot *s;
                int rc;

                /* The last chunk whose start is <= off. */
                while (hi - lo > 1) {
                        size_t mid = lo + (hi - lo) / 2;

                        if (c->start[mid] <= off)
                                lo = mid;
                        else
                                hi = mid;
                }
                if (off >= c->start[lo + 1])
                        return kb_err_set(err, KB_ECORRUPT, "read beyond the etcd snapshot");
                rc = chunk_get(c, lo, &s, err);
                if (rc < 0)
                        return rc;
                uint64_t in = off - c->start[lo], avail = c->start[lo + 1] - off;
                size_t k = avail < len ? (size_t)avail : len;

                memcpy(p, s->buf.data + in, k);
                p += k;
                off += k;
                len -= k;
        }
        return 0;
}

int kb_etcd_snapshot_db_open(struct kb_repo *repo, const Kbackup__Snapshot *snap,
                             struct kb_bbolt **out, struct kb_err *err)
{
        Kbackup__Tree *tree = NULL;
        const Kbackup__Node *node = NULL;
        struct chunk_src *c;
        struct kb_bbolt_source src = {chunk_read, chunk_close, NULL, 0};
        int rc;

        *out = NULL;
        rc = kb_etcd_snapshot_node(repo, snap, &tree, &node, err);
        if (rc < 0)
                return rc;
        c = calloc(1, sizeof(*c));
        if (!c || !(c->ids = malloc((node->n_content + 1) * KB_ID_LEN)) ||
            !(c->start = malloc((node->n_content + 1) * sizeof(*c->start)))) {
                rc = kb_err_set(err, -ENOMEM, "out of memory");
                goto fail;
        }
        c->repo = repo;
        c->n = node->n_content;
        c->start[0] = 0;
        for (size_t i = 0; i < c->n; i++) {
                uint32_t len;

                if (node->content[i].len != KB_ID_LEN) {
                        rc = kb_err_set(err, KB_ECORRUPT, "etcd snapshot record is damaged");
                        goto fail;
                }
                memcpy(c->ids[i], node->content[i].data, KB_ID_LEN);
                rc = kb_repo_blob_size(repo, c->ids[i], &len);
                if (rc < 0) {
                        kb_err_set(err, rc, "etcd snapshot chunk %zu is not in the index", i);
                        goto fail;
                }
                c->start[i + 1] = c->start[i] + len;
        }
        if (c->start[c->n] != node->size || node->size < KB_ETCD_TRAILER_LEN) {
                rc = kb_err_set(err, KB_ECORRUPT,
                                "etcd snapshot record is damaged: chunks hold %llu bytes, the "
                                "file %llu",
                                (unsigned long long)c->start[c->n], (unsigned long long)node->size);
                goto fail;
        }
        rc = kb_pack_reader_new(repo, READ_WINDOWS, READ_WINDOW, &c->reader, err);
        if (rc < 0)
                goto fail;
        /* A chunk read again after the cache dropped it is no longer announced: read alone. */
        for (size_t i = 0; i < c->n; i++)
                kb_pack_reader_want(c->reader, c->ids[i], NULL, NULL);
        /* The database without the sha256 trailer (verified when the snapshot was taken; every
         * chunk is authenticated as it is read). */
        src.size = node->size - KB_ETCD_TRAILER_LEN;
        src.arg = c;
        kb_repo_tree_free(tree);
        return kb_bbolt_open(&src, out, err);
fail:
        if (c)
                chunk_close(c);
        kb_repo_tree_free(tree);
        return rc;
}
