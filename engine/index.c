/* index.c - open-addressing hash table of blob locations and the table of pack ids. */
#include "index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kbackup.pb-c.h"

#define INDEX_MIN_SLOTS 1024

struct pack_slot {
        uint8_t id[KB_ID_LEN];
        uint8_t has_data;  /* a blob other than a tree was indexed in it */
        uint64_t data_end; /* the end of its last indexed blob */
};

struct kb_index {
        struct kb_index_entry *slots;
        size_t nslots; /* power of two */
        size_t count;
        struct pack_slot *packs;
        size_t npacks, packs_cap;
};

int kb_index_new(struct kb_index **out)
{
        struct kb_index *ix = calloc(1, sizeof(*ix));

        if (!ix)
                return -ENOMEM;
        ix->slots = calloc(INDEX_MIN_SLOTS, sizeof(*ix->slots));
        if (!ix->slots) {
                free(ix);
                return -ENOMEM;
        }
        ix->nslots = INDEX_MIN_SLOTS;
        *out = ix;
        return 0;
}

void kb_index_free(struct kb_index *ix)
{
        if (!ix)
                return;
        free(ix->slots);
        free(ix->packs);
        free(ix);
}

/* Ids are keyed hashes, so their first bytes are already uniformly distributed. */
static size_t slot_of(const uint8_t id[KB_ID_LEN], size_t mask)
{
        uint64_t h;

        memcpy(&h, id, sizeof(h));
        return (size_t)h & mask;
}

static struct kb_index_entry *find_slot(struct kb_index_entry *slots, size_t nslots,
                                        const uint8_t id[KB_ID_LEN])
{
        size_t mask = nslots - 1, i = slot_of(id, mask);

        while (slots[i].used && memcmp(slots[i].id, id, KB_ID_LEN) != 0)
                i = (i + 1) & mask;
        return &slots[i];
}

static int grow(struct kb_index *ix)
{
        size_t n = ix->nslots * 2, i;
        struct kb_index_entry *s = calloc(n, sizeof(*s));

        if (!s)
                return -ENOMEM;
        for (i = 0; i < ix->nslots; i++)
                if (ix->slots[i].used)
                        *find_slot(s, n, ix->slots[i].id) = ix->slots[i];
        free(ix->slots);
        ix->slots = s;
        ix->nslots = n;
        return 0;
}

int kb_index_insert(struct kb_index *ix, const struct kb_index_entry *e, int *inserted)
{
        struct kb_index_entry *slot;
        int r;

        /* Keep the load factor under 3/4 so probes stay short. */
        if ((ix->count + 1) * 4 > ix->nslots * 3) {
                r = grow(ix);
                if (r < 0)
                        return r;
        }
        slot = find_slot(ix->slots, ix->nslots, e->id);
        if (slot->used) {
                if (inserted)
                        *inserted = 0;
                return 0;
        }
        *slot = *e;
        slot->used = 1;
        ix->count++;
        if (e->pack < ix->npacks) {
                struct pack_slot *p = &ix->packs[e->pack];

                if (e->type != KBACKUP__BLOB_TYPE__BLOB_TREE)
                        p->has_data = 1;
                if ((uint64_t)e->offset + e->length > p->data_end)
                        p->data_end = (uint64_t)e->offset + e->length;
        }
        if (inserted)
                *inserted = 1;
        return 0;
}

struct kb_index_entry *kb_index_lookup_mut(struct kb_index *ix, const uint8_t id[KB_ID_LEN])
{
        struct kb_index_entry *slot = find_slot(ix->slots, ix->nslots, id);

        return slot->used ? slot : NULL;
}

const struct kb_index_entry *kb_index_lookup(const struct kb_index *ix, const uint8_t id[KB_ID_LEN])
{
        return kb_index_lookup_mut((struct kb_index *)ix, id);
}

void kb_index_remove(struct kb_index *ix, const uint8_t id[KB_ID_LEN])
{
        size_t mask = ix->nslots - 1, i, j;
        struct kb_index_entry *slot = kb_index_lookup_mut(ix, id);

        if (!slot)
                return;
        /* Backward-shift deletion keeps probe chains intact without tombstones. */
        i = (size_t)(slot - ix->slots);
        slot->used = 0;
        ix->count--;
        j = i;
        for (;;) {
                size_t home;

                j = (j + 1) & mask;
                if (!ix->slots[j].used)
                        break;
                home = slot_of(ix->slots[j].id, mask);
                /* Move j back to i when its home does not lie cyclically in (i, j]. */
                if ((i <= j) ? (home <= i || home > j) : (home <= i && home > j)) {
                        ix->slots[i] = ix->slots[j];
                        ix->slots[j].used = 0;
                        i = j;
                }
        }
}

size_t kb_index_count(const struct kb_index *ix)
{
        return ix->count;
}

const struct kb_index_entry *kb_index_next(const struct kb_index *ix, size_t *pos)
{
        while (*pos < ix->nslots) {
                const struct kb_index_entry *e = &ix->slots[(*pos)++];

                if (e->used)
                        return e;
        }
        return NULL;
}

int kb_index_pack_reserve(struct kb_index *ix)
{
        if (ix->npacks == ix->packs_cap) {
                size_t cap = ix->packs_cap ? ix->packs_cap * 2 : 256;
                struct pack_slot *p = realloc(ix->packs, cap * sizeof(*p));

                if (!p)
                        return -ENOMEM;
                ix->packs = p;
                ix->packs_cap = cap;
        }
        if (ix->npacks >= INT32_MAX)
                return -ENOMEM;
        memset(&ix->packs[ix->npacks], 0, sizeof(ix->packs[0]));
        return (int)ix->npacks++;
}

int kb_index_pack_add(struct kb_index *ix, const uint8_t id[KB_ID_LEN])
{
        int n;

        /* Index files name each pack once; a linear scan of the last few catches repeats cheaply
         * and a rare duplicate slot costs only 32 bytes. */
        for (size_t i = ix->npacks; i > 0 && i + 8 > ix->npacks; i--)
                if (memcmp(ix->packs[i - 1].id, id, KB_ID_LEN) == 0)
                        return (int)(i - 1);
        n = kb_index_pack_reserve(ix);
        if (n >= 0)
                memcpy(ix->packs[n].id, id, KB_ID_LEN);
        return n;
}

void kb_index_pack_set_id(struct kb_index *ix, uint32_t pack, const uint8_t id[KB_ID_LEN])
{
        memcpy(ix->packs[pack].id, id, KB_ID_LEN);
}

const uint8_t *kb_index_pack_id(const struct kb_index *ix, uint32_t pack)
{
        return pack < ix->npacks ? ix->packs[pack].id : NULL;
}

int kb_index_pack_trees_only(const struct kb_index *ix, uint32_t pack)
{
        return pack < ix->npacks && !ix->packs[pack].has_data;
}

uint64_t kb_index_pack_data_end(const struct kb_index *ix, uint32_t pack)
{
        return pack < ix->npacks ? ix->packs[pack].data_end : 0;
}

size_t kb_index_pack_count(const struct kb_index *ix)
{
        return ix->npacks;
}
