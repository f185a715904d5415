/* bufpool.h - recycled chunk buffers.
 *
 * A backup reads every chunk into a buffer of up to the chunker's maximum size. Freshly
 * allocated buffers of that size are new mappings: the kernel zeroes and faults in every page the
 * read touches, then unmaps them when the chunk is stored, about a tenth of a backup's CPU. The
 * pool hands the same buffers out again, so their pages stay mapped. Idle buffers keep at most
 * `keep` bytes resident; beyond that a returned buffer is unmapped. Thread-safe. */
#ifndef KB_BUFPOOL_H
#define KB_BUFPOOL_H

#include <stddef.h>
#include <stdint.h>

struct kb_bufpool;

/* Buffers of `size` bytes each. A buffer given back with more than `trim` bytes resident is cut
 * back to `trim` (or to what it held last, when more), or all buffers would grow to the largest
 * chunk seen. Returns 0 or -ENOMEM. */
int kb_bufpool_new(size_t size, size_t trim, size_t keep, struct kb_bufpool **out);
/* Buffers still out may be put back later (by a saver's workers finishing): the pool goes away
 * with the last of them. */
void kb_bufpool_free(struct kb_bufpool *p);

size_t kb_bufpool_size(const struct kb_bufpool *p);
/* A buffer of kb_bufpool_size() bytes, or NULL when out of memory. */
uint8_t *kb_bufpool_get(struct kb_bufpool *p);
/* The first n bytes of buf have been written: a producer that reads past the data it hands on
 * says so, so that put() can trim what it touched. */
void kb_bufpool_touched(uint8_t *buf, size_t n);
/* Give back a buffer whose first `used` bytes are what it held last. Pages beyond those are
 * released when there are many of them. */
void kb_bufpool_put(struct kb_bufpool *p, uint8_t *buf, size_t used);

#endif
