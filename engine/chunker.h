/* chunker.h - content-defined chunking (FastCDC with normalized chunking, level 2).
 *
 * Cut points depend only on content and on a 32-byte per-repository seed that generates the gear
 * table, so chunk boundaries do not fingerprint known files across repositories. The chunker is
 * stateful over a stream: feed it any-sized buffers and it reports cut points. */
#ifndef KB_CHUNKER_H
#define KB_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

#define KB_CHUNKER_SEED_LEN 32

struct kb_chunker_params {
        uint32_t min_size; /* no cut before this many bytes */
        uint32_t avg_size; /* power of two: the normalized target */
        uint32_t max_size; /* forced cut here */
};

/* Defaults for volume data: 512 KiB / 1 MiB / 8 MiB. */
extern const struct kb_chunker_params kb_chunker_default_params;

struct kb_chunker;

/* Returns 0, or -EINVAL when the sizes are not min < avg < max with avg a power of two and
 * min >= 64, or -ENOMEM. */
int kb_chunker_new(const struct kb_chunker_params *p, const uint8_t seed[KB_CHUNKER_SEED_LEN],
                   struct kb_chunker **out);
void kb_chunker_free(struct kb_chunker *c);

/* Forget any partial chunk: the next byte fed starts a new chunk (start of a new file). */
void kb_chunker_reset(struct kb_chunker *c);

/* Scan `len` bytes that continue the current chunk. Returns the number of bytes consumed up to
 * and including a cut point when one is found there (the chunk ends after those bytes), or
 * `len` when no cut lies within the buffer (the chunk continues). Feed the rest of the buffer in
 * the next call. The caller keeps the bytes; the chunker only tracks position and hash state. */
size_t kb_chunker_scan(struct kb_chunker *c, const uint8_t *data, size_t len, int *found);

#endif
