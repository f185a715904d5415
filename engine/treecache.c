/* treecache.c - directory records read a block of their pack at a time (see treecache.h).
 *
 * A block is the BLOCK_BYTES-aligned stretch of a pack around the tree asked for, extended to
 * the tree's end when the tree crosses into the next block and cut where the pack's indexed blobs
 * end (the index knows that, so no request asks for the pack's size, and the header behind the
 * blobs is not read; a read past a pack's end is an error for a backend). Recent blocks stay,
 * least recently used first out, up to BUDGET_BYTES and SLOTS blocks whatever the repository.
 * Blocks are keyed by pack name: an index reload renumbers packs. Every tree is still opened and
 * verified on its own, so damage in a block fails only the trees it touches; a block that cannot
 * be read falls back to reading the tree alone, which reports the error as before.
 *
 * Reads happen outside the lock, so a walk over many snapshots can have the next snapshots'
 * blocks read ahead (kb_treecache_prefetch) while it parses the current one; two threads that
 * miss the same block both read it, and the second copy is dropped. */
#include "treecache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "repo_internal.h"

#define BLOCK_BYTES  (4u << 20)
#define BUDGET_BYTES (4 * (size_t)BLOCK_BYTES)
#define SLOTS        16

struct block {
        char pack[KB_ID_HEX_LEN + 1];
        uint64_t start;
        struct kb_buf data;
        uint64_t used; /* tick of the last hit; 0: empty */
};

struct kb_treecache {
        pthread_mutex_t lock;
        struct block blocks[SLOTS];
        size_t bytes; /* held by the blocks in use */
        uint64_t tick;
};

int kb_treecache_new(struct kb_treecache **out)
{
        struct kb_treecache *c = calloc(1, sizeof(*c));

        if (!c)
                return -ENOMEM;
        pthread_mutex_init(&c->lock, NULL);
        for (int i = 0; i < SLOTS; i++)
                c->blocks[i].data = (struct kb_buf)KB_BUF_INIT;
        *out = c;
        return 0;
}

void kb_treecache_free(struct kb_treecache *c)
{
        if (!c)
                return;
        for (int i = 0; i < SLOTS; i++)
                kb_buf_free(&c->blocks[i].data);
        pthread_mutex_destroy(&c->lock);
        free(c);
}

static struct block *find_block(struct kb_treecache *c, const struct kb_blob_loc *loc)
{
        uint64_t off = loc->e.offset, end = off + loc->e.length;

        for (int i = 0; i < SLOTS; i++) {
                struct block *b = &c->blocks[i];

                if (b->used && strcmp(b->pack, loc->pack) == 0 && b->start <= off &&
                    end <= b->start + b->data.len)
                        return b;
        }
        return NULL;
}

/* Read the block holding the blob into `into` (no lock held); *start is where it begins. */
static int read_block(struct kb_repo *r, const struct kb_blob_loc *loc, struct kb_buf *into,
                      uint64_t *start)
{
        uint64_t off = loc->e.offset, end = off + loc->e.length, stop;
        struct kb_err e = {0};

        if (end > loc->data_end)
                return -1; /* cannot be, short of a changed index: read the tree alone */
        *start = off / BLOCK_BYTES * BLOCK_BYTES;
        stop = *start + BLOCK_BYTES > end ? *start + BLOCK_BYTES : end;
        if (stop > loc->data_end)
                stop = loc->data_end;
        if (kb_backend_get(r->be, KB_OBJ_PACK, loc->pack, *start, (size_t)(stop - *start), into,
                           &e) < 0 ||
            into->len != stop - *start) {
                kb_buf_free(into);
                return -1;
        }
        return 0;
}

/* Keep a block just read (taking its buffer): unless another thread has meanwhile, drop least
 * recently used blocks until it fits. With the lock held; returns the block. */
static struct block *insert(struct kb_treecache *c, const struct kb_blob_loc *loc,
                            struct kb_buf *data, uint64_t start)
{
        struct block *b = find_block(c, loc), *free_slot;

        if (b) {
                kb_buf_free(data);
                return b;
        }
        for (;;) {
                struct block *lru = NULL;

                free_slot = NULL;
                for (int i = 0; i < SLOTS; i++) {
                        struct block *x = &c->blocks[i];

                        if (!x->used)
                                free_slot = x;
                        else if (!lru || x->used < lru->used)
                                lru = x;
                }
                if (!lru || (free_slot && c->bytes + data->len <= BUDGET_BYTES))
                        break;
                c->bytes -= lru->data.len;
                lru->used = 0;
                kb_buf_free(&lru->data);
        }
        b = free_slot;
        kb_buf_free(&b->data);
        b->data = *data;
        *data = (struct kb_buf)KB_BUF_INIT;
        memcpy(b->pack, loc->pack, sizeof(b->pack));
        b->start = start;
        b->used = ++c->tick;
        c->bytes += b->data.len;
        return b;
}

/* The cached block holding the blob, reading it first when needed; NULL when it cannot be read.
 * Returns with the lock held either way. */
static struct block *get_block(struct kb_treecache *c, struct kb_repo *r,
                               const struct kb_blob_loc *loc)
{
        struct kb_buf data = KB_BUF_INIT;
        struct block *b;
        uint64_t start;

        pthread_mutex_lock(&c->lock);
        b = find_block(c, loc);
        if (b)
                return b;
        pthread_mutex_unlock(&c->lock);
        if (read_block(r, loc, &data, &start) < 0) {
                pthread_mutex_lock(&c->lock);
                return NULL;
        }
        pthread_mutex_lock(&c->lock);
        return insert(c, loc, &data, start);
}

int kb_treecache_load(struct kb_treecache *c, struct kb_repo *r, const struct kb_blob_loc *loc,
                      struct kb_buf *out, struct kb_err *err)
{
        struct block *b;
        int rc;

        if (!loc->trees_only)
                return kb_repo_blob_fetch(r, loc, out, err);
        b = get_block(c, r, loc);
        if (!b) {
                pthread_mutex_unlock(&c->lock);
                return kb_repo_blob_fetch(r, loc, out, err);
        }
        b->used = ++c->tick;
        rc = kb_repo_blob_open(r, loc, b->data.data + (loc->e.offset - b->start), out, err);
        pthread_mutex_unlock(&c->lock);
        return rc;
}

void kb_treecache_prefetch(struct kb_treecache *c, struct kb_repo *r, const struct kb_blob_loc *loc)
{
        if (!loc->trees_only)
                return;
        get_block(c, r, loc);
        pthread_mutex_unlock(&c->lock);
}
