/* volume_int.h - helpers shared by volume backup, restore and walk; not an interface for callers
 * outside engine/volume_*.c (those use volume.h).
 *
 * Paths inside a volume may be longer than PATH_MAX and names may hold any byte but '/' and NUL,
 * so the code works with directory descriptors and *at() calls, and builds relative path strings
 * only for messages and callbacks. */
#ifndef KB_VOLUME_INT_H
#define KB_VOLUME_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A directory's nodes, names, xattrs and chunk ids live in a kb_arena until its tree blob is
 * written; memory handed out never moves, which the saver's id slots rely on. */
#include "arena.h"
#include "err.h"
#include "repo.h"

/* A relative path ("dir/sub/file", "" for the root) built one component at a time. */
struct kb_relpath {
        char *s;
        size_t len, cap;
};
/* Append a component; *saved receives what kb_relpath_pop needs to undo it. */
int kb_relpath_push(struct kb_relpath *p, const void *name, size_t n, size_t *saved);
void kb_relpath_pop(struct kb_relpath *p, size_t saved);
/* The path for messages: "." for the root. */
const char *kb_relpath_show(const struct kb_relpath *p);
void kb_relpath_free(struct kb_relpath *p);

/* A stack of open directory descriptors from the root of a walk down to the current directory.
 * Deep trees would need one descriptor per level; past `budget` open levels the shallowest ones
 * (never the root) are closed and reopened through ".." of their child on the way back up, checked
 * against the device and inode recorded when they were first opened. */
struct kb_dirstack_level {
        int fd;
        dev_t dev;
        ino_t ino;
};
struct kb_dirstack {
        struct kb_dirstack_level *lv;
        size_t depth, cap;
        size_t open;
        size_t budget;    /* >= 2 */
        int reopen_flags; /* extra open flags for reopening (O_NOATIME when reading) */
};
void kb_dirstack_init(struct kb_dirstack *ds, size_t budget, int reopen_flags);
/* Takes ownership of fd (closed on failure too). */
int kb_dirstack_push(struct kb_dirstack *ds, int fd);
/* Descriptor of the current directory (always open). */
int kb_dirstack_top(const struct kb_dirstack *ds);
/* Descriptor of the root of the walk (always open). */
int kb_dirstack_root(const struct kb_dirstack *ds);
/* Make sure the parent of the top is open (before the top loses search permission). */
int kb_dirstack_ensure_parent(struct kb_dirstack *ds);
/* Close the top; the parent becomes the top. Returns -ESTALE when the parent cannot be reopened
 * as the same directory (it was moved meanwhile). */
int kb_dirstack_pop(struct kb_dirstack *ds);
void kb_dirstack_free(struct kb_dirstack *ds);

/* Normalise a path relative to the snapshot root as a user writes it: leading "/" and "./",
 * repeated and trailing slashes and "." components are dropped; ".." is refused (KB_EUSAGE).
 * *out is malloc'd ("" for the root). */
int kb_volpath_normalize(const char *in, char **out, struct kb_err *err);

/* Is this a name a tree entry may have (non-empty, no '/' or NUL, not "." or "..")? */
int kb_volname_valid(const ProtobufCBinaryData *name);

/* The entry called name in tree, or NULL. Linear: trees from a damaged or hostile repository need
 * not be sorted, and lookups are rare (--include, ls PATH). */
const Kbackup__Node *kb_voltree_find(const Kbackup__Tree *t, const char *name, size_t len);

/* Load a directory node's tree; a directory without a subtree id is empty. Free with
 * kb_repo_tree_free. */
int kb_voltree_load(struct kb_repo *repo, const ProtobufCBinaryData *id, Kbackup__Tree **out,
                    struct kb_err *err);

/* Check that a snapshot is a volume snapshot whose root tree id is absent (empty) or valid. */
int kb_volsnap_check(const Kbackup__Snapshot *snap, struct kb_err *err);

/* kb_volume_restore onto a block device `target` (volume_device.c). */
struct kb_volume_restore_opts;
struct kb_volume_restore_result;
int kb_volume_restore_device(struct kb_repo *repo, const Kbackup__Snapshot *snap,
                             const char *target, const struct kb_volume_restore_opts *opts,
                             struct kb_volume_restore_result *res, struct kb_err *err);

/* Monotonic seconds. */
double kb_volclock(void);

#endif
