/* pack_reader.h - reads the blobs of a restore in ranges of packs instead of one ranged read per
 * blob, for the readers that know ahead which blobs they will load (volume and etcd restore).
 *
 * The caller announces each blob it is going to load (kb_pack_reader_want) before loading it.
 * A load that finds its blob in no cached window reads one range of the blob's pack: from the
 * blob on over the announced blobs that follow it back to back, up to the window size; blobs
 * nobody announced, and so the pack header after the last blob, are never read. Later loads of
 * the blobs in that range are served from memory; loads of blobs whose range is being read wait
 * for that one read. Each blob is verified on its own (a damaged blob fails alone, its neighbours
 * in the window still load). A blob larger than a window is read alone, as is any blob when
 * every window is in use.
 *
 * Memory: `windows` buffers of `window_bytes` each (allocated as they are first used) plus a hash
 * of the announced blobs (16 bytes each, at most twice their count). Thread-safe: one reader is
 * shared by all the threads of a restore. Engine-internal. */
#ifndef KB_PACK_READER_H
#define KB_PACK_READER_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "crypto.h"
#include "err.h"
#include "repo.h"

struct kb_pack_reader;

/* windows >= 1; window_bytes >= 1. */
int kb_pack_reader_new(struct kb_repo *r, unsigned windows, size_t window_bytes,
                       struct kb_pack_reader **out, struct kb_err *err);
void kb_pack_reader_free(struct kb_pack_reader *pr);

/* Announce one coming load of blob `id` (a blob loaded twice is announced twice) and give its
 * plaintext length from the index (raw_len may be NULL). Nothing is read. Fails as the load would
 * when the index cannot place the blob (KB_ENOTFOUND "chunk ... is not in the index", an invalid
 * entry); nothing is announced then. */
int kb_pack_reader_want(struct kb_pack_reader *pr, const uint8_t id[KB_ID_LEN], uint32_t *raw_len,
                        struct kb_err *err);
/* Withdraw one announcement of a blob that will not be loaded after all (so windows do not
 * extend over it). */
void kb_pack_reader_unwant(struct kb_pack_reader *pr, const uint8_t id[KB_ID_LEN]);

/* Load, verify and decompress blob `id`, appending its plaintext to out; takes back one
 * announcement of it. Same results and messages as kb_repo_blob_load: KB_ENOTFOUND (not in the
 * index, or its pack is missing), KB_ECORRUPT naming the chunk and pack, -ENOMEM, the backend's
 * errors prefixed with the chunk. */
int kb_pack_reader_load(struct kb_pack_reader *pr, const uint8_t id[KB_ID_LEN], struct kb_buf *out,
                        struct kb_err *err);

#endif
