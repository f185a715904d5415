/* treecache.h - directory records read a block of their pack at a time.
 *
 * Restore, ls, prune and an incremental backup's walk of its parent snapshot load one tree per
 * directory. Read alone, each is one request: one GET on S3, one seek on a cold disk, which for
 * thousands of directories is most of a restore's time over a remote link. Trees have packs of
 * their own (pack.c), stored in the order their directories were finished, so the trees of one
 * subtree are neighbours: reading the aligned block of the pack around a tree brings them along,
 * and a few cached blocks serve a depth-first walk. Trees in packs that hold file data too (written
 * before tree packs, or mixed by prune) are read one at a time as before.
 *
 * Thread-safe; blocks are read outside the lock, so a prefetch can run beside a walk.
 */
#ifndef KB_TREECACHE_H
#define KB_TREECACHE_H

#include "buf.h"
#include "err.h"

struct kb_repo;
struct kb_blob_loc;
struct kb_treecache;

int kb_treecache_new(struct kb_treecache **out);
void kb_treecache_free(struct kb_treecache *c);

/* Load the located tree blob as kb_repo_blob_fetch does (the same errors), from a cached block of
 * its pack when one holds it, else by reading its block. A blob in a pack that is not trees only
 * (loc->trees_only) is read alone: a block of it would bring file data nobody asked for. */
int kb_treecache_load(struct kb_treecache *c, struct kb_repo *r, const struct kb_blob_loc *loc,
                      struct kb_buf *out, struct kb_err *err);

/* Read the block of the located tree into the cache now, so that a load soon after finds it
 * (nothing for trees that are read alone, or when the read fails: the load reports that). */
void kb_treecache_prefetch(struct kb_treecache *c, struct kb_repo *r,
                           const struct kb_blob_loc *loc);

#endif
