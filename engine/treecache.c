/* treecache.c - directory records read a block of their pack at a time (see treecache.h).
 *
 * A block is the BLOCK_BYTES-aligned stretch of a pack around the tree asked for, extended to
 * the tree's end when the tree crosses into the next block and cut where the pack's indexed blobs
 * end (the index knows that, so no request asks for the pack's size, and the header behind the
 * blobs is not read; a read past a pack's end is an error for a backend). The last few blocks stay,
 * least recently used first out, so memory is bounded by BLOCKS x BLOCK_BYTES whatever the
 * repository. Blocks are keyed by pack name: an index reload renumbers packs. Every tree is still
 * opened and verified on its own, so damage in a block fails only the trees it touches; a block
 * that cannot be read falls back to reading the tree alone, which reports the error as before. */
#include "treecache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "repo_internal.h"

#define BLOCK_BYTES (4u << 20)
#define BLOCKS      4

struct block {
        char pack[KB_ID_HEX_LEN + 1];
        uint64_t start;
        struct kb_buf data;
        uint64_t used; /* tick of the last hit; 0: empty */
};

struct kb_treecache {
        pthread_mutex_t lock;
        struct block blocks[BLOCKS];
        uint64_t tick;
};

int kb_treecache_new(struct kb_treecache **out)
{
        struct kb_treecache *c = calloc(1, sizeof(*c));

        if (!c)
                return -ENOMEM;
        pthread_mutex_init(&c->lock, NULL);
        for (int i = 0; i < BLOCKS; i++)
                c->blocks[i].data = (struct kb_buf)KB_BUF_INIT;
        *out = c;
        return 0;
}

void kb_treecache_free(struct kb_treecache *c)
{
        if (!c)
                return;
        for (int i = 0; i < BLOCKS; i++)
                kb_buf_free(&c->blocks[i].data);
        pthread_mutex_destroy(&c->lock);
        free(c);
}

static struct block *find_block(struct kb_treecache *c, const struct kb_blob_loc *loc)
{
        uint64_t off = loc->e.offset, end = off + loc->e.length;

        for (int i = 0; i < BLOCKS; i++) {
                struct block *b = &c->blocks[i];

                if (b->used && strcmp(b->pack, loc->pack) == 0 && b->start <= off &&
                    end <= b->start + b->data.len)
                        return b;
        }
        return NULL;
}

/* Read the block holding the blob into the least recently used slot; NULL when it cannot be. */
static struct block *read_block(struct kb_treecache *c, struct kb_repo *r,
                                const struct kb_blob_loc *loc)
{
        uint64_t off = loc->e.offset, end = off + loc->e.length, start, stop;
        struct block *b = &c->blocks[0];
        struct kb_err e = {0};

        if (end > loc->data_end)
                return NULL; /* cannot be, short of a changed index: read the tree alone */
        start = off / BLOCK_BYTES * BLOCK_BYTES;
        stop = start + BLOCK_BYTES > end ? start + BLOCK_BYTES : end;
        if (stop > loc->data_end)
                stop = loc->data_end;
        for (int i = 1; i < BLOCKS; i++)
                if (c->blocks[i].used < b->used)
                        b = &c->blocks[i];
        b->used = 0;
        kb_buf_reset(&b->data);
        if (kb_backend_get(r->be, KB_OBJ_PACK, loc->pack, start, (size_t)(stop - start), &b->data,
                           &e) < 0 ||
            b->data.len != stop - start)
                return NULL;
        memcpy(b->pack, loc->pack, sizeof(b->pack));
        b->start = start;
        return b;
}

int kb_treecache_load(struct kb_treecache *c, struct kb_repo *r, const struct kb_blob_loc *loc,
                      struct kb_buf *out, struct kb_err *err)
{
        struct block *b;
        int rc;

        if (!loc->trees_only)
                return kb_repo_blob_fetch(r, loc, out, err);
        pthread_mutex_lock(&c->lock);
        b = find_block(c, loc);
        if (!b)
                b = read_block(c, r, loc);
        if (!b) {
                pthread_mutex_unlock(&c->lock);
                return kb_repo_blob_fetch(r, loc, out, err);
        }
        b->used = ++c->tick;
        rc = kb_repo_blob_open(r, loc, b->data.data + (loc->e.offset - b->start), out, err);
        pthread_mutex_unlock(&c->lock);
        return rc;
}
