/* saver.h - the parallel store pipeline: worker threads hash, dedup, compress, encrypt and pack
 * chunks that a producer (the volume walker, the etcd stream) submits in order.
 *
 * Memory stays bounded: submit() blocks while `max_inflight_bytes` of chunk data are queued.
 * Results land in caller-provided id slots; a group lets the producer wait for a set of chunks
 * (one file's, one directory's) before it encodes the metadata that names them. */
#ifndef KB_SAVER_H
#define KB_SAVER_H

#include <stddef.h>
#include <stdint.h>

#include "bufpool.h"
#include "err.h"
#include "repo.h"

struct kb_saver;
struct kb_saver_group;

struct kb_saver_stats {
        uint64_t blobs;        /* chunks submitted */
        uint64_t bytes;        /* plaintext bytes submitted */
        uint64_t blobs_new;    /* chunks not already in the repository */
        uint64_t bytes_new;    /* plaintext bytes of those */
        uint64_t bytes_stored; /* bytes they take in packs */
        unsigned threads;      /* workers running */
};

/* threads == 0 picks the CPUs this process may use (kb_cpus_available). */
int kb_saver_new(struct kb_repo *repo, unsigned threads, size_t max_inflight_bytes,
                 struct kb_saver **out, struct kb_err *err);

/* Waits for every submitted chunk, then frees. Returns the first error any worker met (also left
 * in err), or 0. Does not flush the repository. */
int kb_saver_free(struct kb_saver *s, struct kb_err *err);

struct kb_saver_group *kb_saver_group_new(struct kb_saver *s);
/* Block until every chunk submitted to the group is stored; returns the group's first error. */
int kb_saver_group_wait(struct kb_saver_group *g, struct kb_err *err);
/* Waits, then frees. */
void kb_saver_group_free(struct kb_saver_group *g);

/* Groups that finish by themselves, so the producer never has to stop and wait (a directory's
 * tree is encoded once its files' chunks and its subdirectories are stored, while the walk goes
 * on). After kb_saver_group_close, `done(arg, rc, err)` runs exactly once, when nothing is
 * pending in the group any more: in the worker that stored its last chunk, in the thread that
 * released its last hold, or in the caller of close when nothing is pending then. rc is the
 * group's first error (0 when none; err is then NULL). The group is freed after done returns. A
 * hold counts as pending until released; a release may carry an error for the group. */
typedef void (*kb_saver_done_fn)(void *arg, int rc, const struct kb_err *err);
void kb_saver_group_hold(struct kb_saver_group *g);
void kb_saver_group_release(struct kb_saver_group *g, int rc, const struct kb_err *err);
void kb_saver_group_close(struct kb_saver_group *g, kb_saver_done_fn done, void *arg);

/* Queue one chunk. The saver takes ownership of `data` (malloc'd; freed when stored). The worker
 * writes the chunk's id to id_slot, which must stay valid until the group has been waited for. */
int kb_saver_submit(struct kb_saver *s, struct kb_saver_group *g, enum kb_blob_type type,
                    uint8_t *data, size_t len, uint8_t *id_slot, struct kb_err *err);
/* The same for a buffer of `pool`: it goes back there once stored (or on error); `flags` are
 * kb_repo_blob_save_flags's. */
int kb_saver_submit_pooled(struct kb_saver *s, struct kb_saver_group *g, enum kb_blob_type type,
                           unsigned flags, struct kb_bufpool *pool, uint8_t *data, size_t len,
                           uint8_t *id_slot, struct kb_err *err);

void kb_saver_get_stats(struct kb_saver *s, struct kb_saver_stats *out);

#endif
