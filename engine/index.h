/* index.h - the in-memory chunk index: blob id -> (pack, offset, length), plus the pack table.
 *
 * Open addressing over a flat array keeps it compact (52-byte entries, ids included; with the
 * load kept under 3/4, 70-140 bytes per blob in memory) and fast to load; the repository guards
 * it with its own lock. Index files on the backend are the durable form (pack.c). */
#ifndef KB_INDEX_H
#define KB_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "crypto.h"
#include "err.h"

#define KB_PACK_PENDING UINT32_MAX /* offset of a blob whose pack is still being filled */

struct kb_index_entry {
        uint8_t id[KB_ID_LEN];
        uint32_t pack; /* index into the pack table */
        uint32_t offset;
        uint32_t length;     /* sealed length in the pack */
        uint32_t raw_length; /* plaintext length */
        uint8_t type;
        uint8_t used;
        uint8_t mark; /* scratch for whole-repository scans (prune, check, stats); 0 on insert */
};

struct kb_index;

int kb_index_new(struct kb_index **out);
void kb_index_free(struct kb_index *ix);

/* Register a pack id; returns its number (>= 0) or -ENOMEM. Adding the same id twice returns the
 * same number. A pack whose id is not known yet (still being written) is registered with
 * kb_index_pack_reserve() and named later with kb_index_pack_set_id(). */
int kb_index_pack_add(struct kb_index *ix, const uint8_t id[KB_ID_LEN]);
int kb_index_pack_reserve(struct kb_index *ix);
void kb_index_pack_set_id(struct kb_index *ix, uint32_t pack, const uint8_t id[KB_ID_LEN]);
const uint8_t *kb_index_pack_id(const struct kb_index *ix, uint32_t pack);
size_t kb_index_pack_count(const struct kb_index *ix);
/* No data blob was indexed in the pack (it holds trees only, see treecache.h). */
int kb_index_pack_trees_only(const struct kb_index *ix, uint32_t pack);
/* Where the pack's last indexed blob ends (offset + length): its blobs lie before this, its
 * header after it. A read up to here needs no stat of the pack. */
uint64_t kb_index_pack_data_end(const struct kb_index *ix, uint32_t pack);

/* Insert; an id already present is left as it was (returns 0, *inserted = 0). */
int kb_index_insert(struct kb_index *ix, const struct kb_index_entry *e, int *inserted);
const struct kb_index_entry *kb_index_lookup(const struct kb_index *ix,
                                             const uint8_t id[KB_ID_LEN]);
/* Update a pending entry once its pack is written. */
struct kb_index_entry *kb_index_lookup_mut(struct kb_index *ix, const uint8_t id[KB_ID_LEN]);
void kb_index_remove(struct kb_index *ix, const uint8_t id[KB_ID_LEN]);
size_t kb_index_count(const struct kb_index *ix);

/* Iterate all entries: *pos starts at 0; returns NULL at the end. */
const struct kb_index_entry *kb_index_next(const struct kb_index *ix, size_t *pos);

#endif
