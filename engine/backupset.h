/* backupset.h - backup sets: the snapshots one `kbackup backup --cluster NAME` took together (one
 * etcd snapshot and the cluster's volumes). A set is not an object of its own: its members carry
 * the same set id (Snapshot.set_id) and cluster name, so listing and forgetting snapshots need
 * nothing new, and a set exists exactly as long as one of its members does. A set whose backup
 * failed leaves no members behind (the CLI removes those it recorded). */
#ifndef KB_BACKUPSET_H
#define KB_BACKUPSET_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "repo.h"

struct kb_backupset {
        char id[KB_ID_HEX_LEN + 1];
        const char *cluster;    /* from the members (owned by the snapshot list) */
        int64_t time_unix_nsec; /* the earliest member's */
        size_t *members; /* indexes into the snapshot list: etcd first, then volumes by name */
        size_t n_members;
        size_t n_etcd;
};

struct kb_backupset_list {
        struct kb_backupset *items; /* oldest first */
        size_t count;
};

/* Group the members of l (which must outlive the result) by set id. */
int kb_backupset_list(const struct kb_snapshot_list *l, struct kb_backupset_list *out,
                      struct kb_err *err);
void kb_backupset_list_free(struct kb_backupset_list *s);

/* A set by full id, unique prefix or "latest"; with `cluster`, only sets of that cluster profile.
 * Returns an index into s->items, or KB_ENOTFOUND / KB_EAMBIG. */
int kb_backupset_find(const struct kb_backupset_list *s, const char *ref, const char *cluster,
                      struct kb_err *err);

/* A fresh random set id. */
void kb_backupset_new_id(char id[KB_ID_HEX_LEN + 1]);

#endif
