/* volume.h - backup and restore of a file tree (a mounted persistent volume) or of a raw block
 * device (a PV of volumeMode Block) into a repository. */
#ifndef KB_VOLUME_H
#define KB_VOLUME_H

#include <stdint.h>

#include "err.h"
#include "repo.h"

/* Progress, called from the producer thread at most a few times per second and once at the end. */
struct kb_progress {
        uint64_t files_done;
        uint64_t bytes_done;
        uint64_t files_total; /* 0 when unknown */
        uint64_t bytes_total; /* 0 when unknown */
        const char *current;  /* path being processed, may be NULL */
};
typedef void (*kb_progress_cb)(const struct kb_progress *p, void *arg);

/* Non-fatal problems (a file vanished, a socket skipped, a damaged chunk): one call each. */
typedef void (*kb_warn_cb)(const char *msg, void *arg);

struct kb_volume_backup_opts {
        const char *name;        /* NAMESPACE/PVC or NULL */
        const char *const *tags; /* "KEY=VALUE" strings */
        size_t ntags;
        unsigned threads; /* 0 = the CPUs this process may use (kb_cpus_available) */
        /* Read every file. By default the newest snapshot of the same source (host, path, name)
         * is the parent, and files unchanged since it (size, mtime, ctime, inode) are not read. */
        int no_parent;
        const char *set_id;  /* member of this backup set (backup --cluster), or NULL */
        const char *cluster; /* ... taken from this cluster profile, or NULL */
        kb_progress_cb progress;
        kb_warn_cb warn;
        void *cb_arg;
};

struct kb_volume_backup_result {
        char snapshot_id[KB_ID_HEX_LEN + 1];
        char parent_id[KB_ID_HEX_LEN + 1]; /* "" when there was none */
        uint64_t files, dirs, bytes_read, bytes_new, bytes_stored, errors;
        uint64_t files_unchanged, bytes_unchanged; /* taken from the parent without reading */
        unsigned threads;                          /* workers that ran */
        double duration_sec;
};

/* A block device's snapshot: its root node is the device (type NODE_BLK) and its tree holds one
 * regular file of this name, the device's bytes. Restored into a directory it is that file; onto
 * a block device, it is the device's new content. */
#define KB_VOLUME_DEVICE_IMAGE "device.img"

/* Back up the tree at `path`, or every byte of the block device at `path` (never skipped as
 * unchanged: a device's times do not move when its content does). Returns 0, or KB_EPARTIAL when
 * the snapshot was recorded but some items could not be read (each reported through warn), or
 * another negative code when no snapshot was recorded. */
int kb_volume_backup(struct kb_repo *repo, const char *path,
                     const struct kb_volume_backup_opts *opts, struct kb_volume_backup_result *res,
                     struct kb_err *err);

struct kb_volume_restore_opts {
        const char *include; /* restore only this path (relative to the backup root), or NULL */
        int restore_owner;   /* chown to the recorded uid/gid: 1 yes, 0 no, <0 only as root */
        /* `target` may be a block device, whose content the snapshot of a block device then
         * replaces; without this a block device target is refused. */
        int overwrite_device;
        unsigned threads;
        kb_progress_cb progress;
        kb_warn_cb warn;
        void *cb_arg;
};

struct kb_volume_restore_result {
        uint64_t files, dirs, bytes, errors;
        unsigned threads; /* workers that ran */
        double duration_sec;
};

/* Restore a volume snapshot's tree under `target` (created if missing). Damaged chunks are
 * reported through warn with the file they belong to and the restore goes on; the call then
 * returns KB_EPARTIAL. A block device's snapshot may also go onto a block device `target` (with
 * opts->overwrite_device; one that is mounted or held open exclusively is refused): every byte
 * of the image is written, zero runs included, and the device is flushed before the call
 * returns. */
int kb_volume_restore(struct kb_repo *repo, const Kbackup__Snapshot *snap, const char *target,
                      const struct kb_volume_restore_opts *opts,
                      struct kb_volume_restore_result *res, struct kb_err *err);

/* Walk the stored tree depth-first in name order, calling cb with each entry's path relative to
 * the root ("dir/file") and its node. With `path` (relative to the root) the entry at path comes
 * first, then everything below it; NULL or "" walks everything below the root. A missing path is
 * KB_ENOTFOUND. A non-zero return from cb stops the walk and is returned. */
typedef int (*kb_volume_walk_cb)(const char *path, const Kbackup__Node *node, void *arg);
int kb_volume_walk(struct kb_repo *repo, const Kbackup__Snapshot *snap, const char *path,
                   kb_volume_walk_cb cb, void *arg, struct kb_err *err);

#endif
