/* chunkstream.c - chunk a stream into the saver; ids collected in submission order. */
#include "chunkstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

/* Id slots are handed to workers, so they live in blocks that never move. */
#define IDS_PER_BLOCK 4096

/* Resident bytes of idle chunk buffers kept for reuse (bufpool.h). */
#define POOL_KEEP ((size_t)8 << 20)

struct id_block {
        uint8_t ids[IDS_PER_BLOCK][KB_ID_LEN];
        struct id_block *next;
};

struct kb_chunkstream {
        struct kb_saver *saver;
        struct kb_saver_group *group;
        struct kb_chunker *chunker;
        struct kb_bufpool *pool; /* chunk buffers of max_size bytes */
        uint8_t *cur;            /* the chunk being filled */
        size_t cur_len;
        struct id_block *first, *last;
        size_t count;
        uint64_t bytes;
        uint8_t *flat; /* ids copied contiguously by finish */
};

int kb_chunkstream_new(struct kb_saver *s, const struct kb_chunker_params *p,
                       const uint8_t seed[KB_CHUNKER_SEED_LEN], struct kb_chunkstream **out,
                       struct kb_err *err)
{
        struct kb_chunkstream *cs = calloc(1, sizeof(*cs));
        int r;

        if (!cs)
                return kb_err_set(err, -ENOMEM, "out of memory");
        r = kb_chunker_new(p, seed, &cs->chunker);
        if (r < 0) {
                free(cs);
                return kb_err_set(err, r, "invalid chunker parameters");
        }
        cs->saver = s;
        cs->group = kb_saver_group_new(s);
        if (cs->group && kb_bufpool_new(p->max_size, p->max_size, POOL_KEEP, &cs->pool) == 0)
                cs->cur = kb_bufpool_get(cs->pool);
        if (!cs->cur) {
                kb_chunkstream_free(cs);
                return kb_err_set(err, -ENOMEM, "out of memory");
        }
        *out = cs;
        return 0;
}

static uint8_t *next_slot(struct kb_chunkstream *cs)
{
        size_t i = cs->count % IDS_PER_BLOCK;

        if (i == 0) {
                struct id_block *b = calloc(1, sizeof(*b));

                if (!b)
                        return NULL;
                if (cs->last)
                        cs->last->next = b;
                else
                        cs->first = b;
                cs->last = b;
        }
        cs->count++;
        return cs->last->ids[i];
}

/* Hand the current chunk to the saver and start a new buffer. */
static int emit(struct kb_chunkstream *cs, struct kb_err *err)
{
        size_t len = cs->cur_len;
        uint8_t *slot, *data = cs->cur;

        if (!len)
                return 0;
        slot = next_slot(cs);
        if (!slot)
                return kb_err_set(err, -ENOMEM, "out of memory");
        cs->cur = kb_bufpool_get(cs->pool);
        if (!cs->cur) {
                cs->cur = data;
                return kb_err_set(err, -ENOMEM, "out of memory");
        }
        cs->bytes += len;
        cs->cur_len = 0;
        return kb_saver_submit_pooled(cs->saver, cs->group, KB_BLOB_DATA, 0, cs->pool, data, len,
                                      slot, err);
}

int kb_chunkstream_write(struct kb_chunkstream *cs, const void *data, size_t len,
                         struct kb_err *err)
{
        const uint8_t *p = data;
        int r;

        while (len) {
                int found = 0;
                size_t n = kb_chunker_scan(cs->chunker, p, len, &found);

                /* The chunker never lets a chunk pass max_size, so cur always has room. */
                memcpy(cs->cur + cs->cur_len, p, n);
                cs->cur_len += n;
                p += n;
                len -= n;
                if (found) {
                        r = emit(cs, err);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int kb_chunkstream_finish(struct kb_chunkstream *cs, struct kb_err *err)
{
        struct id_block *b;
        size_t left, n;
        int r;

        r = emit(cs, err);
        if (r == 0)
                r = kb_saver_group_wait(cs->group, err);
        if (r < 0)
                return r;
        free(cs->flat);
        cs->flat = malloc(cs->count ? cs->count * KB_ID_LEN : 1);
        if (!cs->flat)
                return kb_err_set(err, -ENOMEM, "out of memory");
        for (b = cs->first, left = cs->count; b && left; b = b->next, left -= n) {
                n = left < IDS_PER_BLOCK ? left : IDS_PER_BLOCK;
                memcpy(cs->flat + (cs->count - left) * KB_ID_LEN, b->ids, n * KB_ID_LEN);
        }
        return 0;
}

const uint8_t *kb_chunkstream_ids(const struct kb_chunkstream *cs, size_t *count)
{
        *count = cs->flat ? cs->count : 0;
        return cs->flat;
}

uint64_t kb_chunkstream_bytes(const struct kb_chunkstream *cs)
{
        return cs->bytes + cs->cur_len;
}

void kb_chunkstream_free(struct kb_chunkstream *cs)
{
        struct id_block *b, *next;

        if (!cs)
                return;
        kb_saver_group_free(cs->group); /* waits: workers may still write into the slots */
        kb_chunker_free(cs->chunker);
        for (b = cs->first; b; b = next) {
                next = b->next;
                free(b);
        }
        if (cs->cur)
                kb_bufpool_put(cs->pool, cs->cur, cs->cur_len);
        kb_bufpool_free(cs->pool);
        free(cs->flat);
        free(cs);
}
