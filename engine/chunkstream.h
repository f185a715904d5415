/* chunkstream.h - turn one byte stream of unknown length (an etcd snapshot, a block device) into
 * chunks stored through the saver, remembering their ids in order. */
#ifndef KB_CHUNKSTREAM_H
#define KB_CHUNKSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "chunker.h"
#include "err.h"
#include "saver.h"

struct kb_chunkstream;

int kb_chunkstream_new(struct kb_saver *s, const struct kb_chunker_params *p,
                       const uint8_t seed[KB_CHUNKER_SEED_LEN], struct kb_chunkstream **out,
                       struct kb_err *err);
/* Append bytes; full chunks are queued to the saver (which may block for memory). */
int kb_chunkstream_write(struct kb_chunkstream *cs, const void *data, size_t len,
                         struct kb_err *err);
/* Queue the last partial chunk and wait until every chunk is stored. */
int kb_chunkstream_finish(struct kb_chunkstream *cs, struct kb_err *err);
/* After finish: the ids in stream order, count * KB_ID_LEN bytes, valid until free. */
const uint8_t *kb_chunkstream_ids(const struct kb_chunkstream *cs, size_t *count);
uint64_t kb_chunkstream_bytes(const struct kb_chunkstream *cs);
/* Waits for queued chunks (so no worker writes into freed slots), then frees. */
void kb_chunkstream_free(struct kb_chunkstream *cs);

#endif
