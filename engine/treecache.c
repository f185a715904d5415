/* treecache.c - directory records read a block of their pack at a time (see treecache.h).
 *
 * A block is the BLOCK_BYTES-aligned stretch of a pack around the tree asked for, extended to
 * the tree's end when the tree crosses into the next block and cut at the pack's size (a read past
 * the end is an error for a backend). The last few blocks stay, least recently used first out, so
 * memory is bounded by BLOCKS x BLOCK_BYTES whatever the repository. Blocks are keyed by pack name:
 * an index reload renumbers packs. Every tree is still opened and verified on its own, so damage
 * in a block fails only the trees it touches; a block that cannot be read falls back to reading
 * the tree alone, which reports the error as before. */
#include "treecache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "repo_internal.h"

#define BLOCK_BYTES (4u << 20)
#define BLOCKS      4
/* Pack sizes remembered (one stat each); tree packs are few. */
#define SIZES 16

struct block {
        char pack[KB_ID_HEX_LEN + 1];
        uint64_t start;
        struct kb_buf data;
        uint64_t used; /* tick of the last hit; 0: empty */
};

struct pack_size {
        char pack[KB_ID_HEX_LEN + 1];
        uint64_t size;
};

struct kb_treecache {
        pthread_mutex_t lock;
        struct block blocks[BLOCKS];
        struct pack_size sizes[SIZES];
        unsigned next_size;
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

static int pack_size(struct kb_treecache *c, struct kb_repo *r, const char *pack, uint64_t *size,
                     struct kb_err *err)
{
        struct pack_size *s;
        int rc;

        for (int i = 0; i < SIZES; i++)
                if (strcmp(c->sizes[i].pack, pack) == 0) {
                        *size = c->sizes[i].size;
                        return 0;
                }
        rc = kb_backend_stat(r->be, KB_OBJ_PACK, pack, size, err);
        if (rc < 0)
                return rc;
        s = &c->sizes[c->next_size++ % SIZES];
        memcpy(s->pack, pack, sizeof(s->pack));
        s->size = *size;
        return 0;
}

/* Read the block holding the blob into the least recently used slot; NULL when it cannot be. */
static struct block *read_block(struct kb_treecache *c, struct kb_repo *r,
                                const struct kb_blob_loc *loc)
{
        uint64_t off = loc->e.offset, end = off + loc->e.length, start, stop, size;
        struct block *b = &c->blocks[0];
        struct kb_err e = {0};

        if (pack_size(c, r, loc->pack, &size, &e) < 0 || end > size)
                return NULL;
        start = off / BLOCK_BYTES * BLOCK_BYTES;
        stop = start + BLOCK_BYTES > end ? start + BLOCK_BYTES : end;
        if (stop > size)
                stop = size;
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
