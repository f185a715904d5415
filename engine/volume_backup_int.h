/* volume_backup_int.h - state shared by the two halves of volume backup: the tree walk
 * (volume_backup.c) and file content and hardlinks (volume_file.c). Not an interface. */
#ifndef KB_VOLUME_BACKUP_INT_H
#define KB_VOLUME_BACKUP_INT_H

#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "chunker.h"
#include "saver.h"
#include "volume.h"
#include "volume_int.h"

/* A multiply-linked inode already seen. Every member of a link group records the content (ids are
 * cheap and dedup stores the data once), so restoring any subset with --include still yields the
 * bytes; a full restore makes the later members links to the first. */
struct hl_entry {
        dev_t dev;
        ino_t ino;
        uint64_t group;
        int have_content; /* regular file whose content is recorded below */
        uint64_t size;
        int sparse;
        size_t n_ext;
        Kbackup__Extent *ext;
        size_t n_ids;
        uint8_t *ids; /* n_ids * KB_ID_LEN */
};

struct hl_map {
        struct hl_entry **slot;
        size_t cap, count;
        uint64_t next_group;
};

struct idname {
        uint32_t id;
        char *name;
};

struct idcache {
        struct idname *v;
        size_t n;
};

struct bctx {
        struct kb_repo *repo;
        const struct kb_volume_backup_opts *o;
        struct kb_err *err;
        struct kb_saver *saver;
        struct kb_bufpool *pool; /* chunk buffers (volume_file.c) */
        struct kb_chunker *chunker;
        uint32_t chunk_min, chunk_max;
        dev_t root_dev;
        struct kb_dirstack ds;
        struct kb_relpath path;
        struct hl_map links;
        struct idcache users, groups;
        /* The same directory in the parent snapshot (NULL: none): files whose size, mtime, ctime
         * and inode are unchanged take their chunk list from it without being read. */
        const Kbackup__Tree *prev;
        uint8_t parent_id[KB_ID_LEN];
        int have_parent;
        uint64_t files, dirs, bytes_read, errors;
        uint64_t files_unchanged, bytes_unchanged;
        uint64_t tree_new, tree_stored;
        uint64_t files_total, bytes_total; /* estimates for progress, 0 when unknown */
        double last_progress;
};

void kb_vb_warn(struct bctx *c, int counted, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The entry being processed, for messages. */
const char *kb_vb_path(const struct bctx *c);
/* Report progress, at most every PROGRESS_INTERVAL unless forced. */
void kb_vb_progress(struct bctx *c, int force);

/* openat with O_NOATIME when this process may use it. */
int kb_vb_open_noatime(int dirfd, const char *name, int flags);

struct hl_entry *kb_vb_hl_find(struct hl_map *m, dev_t dev, ino_t ino);
void kb_vb_hl_free(struct hl_map *m);
/* A later member of a link group: link_group and the content recorded for the first one. */
int kb_vb_link_member(struct bctx *c, struct hl_entry *e, struct kb_arena *a, Kbackup__Node *n);
/* The first member of a link group: remember it; *group receives the new group number. */
int kb_vb_remember_links(struct bctx *c, const struct stat *st, const Kbackup__Node *n,
                         uint64_t *group);
/* The entry `name` of the parent snapshot's current directory, or NULL. */
const Kbackup__Node *kb_vb_prev_node(const struct bctx *c, const char *name);

/* A regular file (lst: its lstat): metadata, xattrs, content. Returns <0 fatal, 0 done, 1 omitted
 * (reported). */
int kb_vb_backup_file(struct bctx *c, int dirfd, const char *name, const struct stat *lst,
                      struct kb_arena *a, struct kb_saver_group *dir_group, Kbackup__Node *n);

/* The whole content of block device fd (`size` bytes) into n, a regular file node: read, chunked
 * and handed to the saver in g. A read error fails the backup (a device image with a gap is not
 * a backup); 0 or a negative error. */
int kb_vb_read_device(struct bctx *c, int fd, uint64_t size, struct kb_arena *a,
                      struct kb_saver_group *g, Kbackup__Node *n);

#endif
