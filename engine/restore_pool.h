/* restore_pool.h - worker threads that create and write restored files for kb_volume_restore.
 *
 * The walking thread hands each regular file over with its directory and node. A worker creates it
 * (so the walk does not stop for every file's creation, the slowest system call of a restore of
 * many small files) and writes its content; a file large enough to be split is created by the
 * walking thread itself, so that every range of it can be written at once: the pool splits the
 * file's chunk list into ranges of consecutive chunks (a few MiB each), and one large file is
 * written by every worker at once; each range is loaded, verified and written with pwrite at its
 * place. The range that finishes last sets the size, applies the metadata and closes the file.
 *
 * Files of one directory form a group, which owns a descriptor of that directory; the group's
 * release callback runs once its last file is done, which is when the directory's own metadata
 * (its times above all) can be applied.
 *
 * The walking thread calls the functions below, except kb_restore_pool_warnf: warnings met
 * elsewhere are queued and handed to cfg.warn from the walking thread's calls, so callbacks never
 * run on a worker thread. */
#ifndef KB_RESTORE_POOL_H
#define KB_RESTORE_POOL_H

#include <stdint.h>

#include "err.h"
#include "kbackup.pb-c.h"
#include "repo.h"

struct kb_restore_pool;
struct kb_restore_group;

struct kb_restore_pool_cfg {
        struct kb_repo *repo;
        unsigned threads; /* 0 = the CPUs this process may use (kb_cpus_available) */
        int owner;        /* chown restored files to their recorded owner */
        /* Files are handed over as block devices whose blocks hold old data: zero runs are
         * written (as zeroed ranges where the device can), size and metadata are left alone, and
         * each device is flushed (fsync) before it counts as restored. */
        int device;
        size_t max_files; /* files open at once; 0 = 256 (less under a low descriptor limit) */
        /* A problem with one file; counted is 0 for limits of the target (see fsmeta.h). */
        void (*warn)(void *arg, int counted, const char *msg);
        /* Called now and then while a call blocks (for progress reports). */
        void (*tick)(void *arg);
        void *arg;
};

int kb_restore_pool_new(const struct kb_restore_pool_cfg *cfg, struct kb_restore_pool **out,
                        struct kb_err *err);

/* Wait for every file, stop the workers, free. Returns the first fatal error (see
 * kb_restore_pool_file), also left in err. */
int kb_restore_pool_free(struct kb_restore_pool *p, struct kb_err *err);

/* The files of one directory, whose nodes live in one place (the directory's tree). The group
 * owns dirfd, a descriptor of that directory, from here on (closed even on failure; -1 for none).
 * release(arg, dirfd) runs, on whichever thread finishes last, once kb_restore_group_close was
 * called and every file of the group is done; dirfd is closed after it. A release that has
 * something to report uses kb_restore_pool_warnf. NULL when out of memory. */
struct kb_restore_group *kb_restore_group_new(struct kb_restore_pool *p, int dirfd,
                                              void (*release)(void *arg, int dirfd), void *arg);
void kb_restore_group_close(struct kb_restore_group *g);

/* Restore the content of regular file n (size, data ranges, chunk list) into fd, which must be a
 * new empty file opened for writing; then set its size and metadata (times only when the content is
 * complete) and close it. The pool owns fd from here on, even when this fails. n must stay valid
 * until the group (or, with g NULL, the pool) is done; `path` is copied for messages.
 *
 * A damaged chunk or an inconsistent node is reported once, through warn, with the file and the
 * offset of the first problem; the file keeps the bytes before it. Blocks while the pool is full.
 * Returns 0, or the first fatal error of the restore (the target is full or read-only, out of
 * memory), after which every later call fails with it too and the caller should stop. */
int kb_restore_pool_file(struct kb_restore_pool *p, struct kb_restore_group *g, int fd,
                         const Kbackup__Node *n, const char *path, struct kb_err *err);

/* Create regular file `name` (new: an existing entry is not overwritten but reported as a counted
 * warning) in g's directory and restore n into it as kb_restore_pool_file does. A worker creates
 * it, unless its content is large enough to be split, in which case this call does. */
int kb_restore_pool_create(struct kb_restore_pool *p, struct kb_restore_group *g, const char *name,
                           const Kbackup__Node *n, const char *path, struct kb_err *err);

/* Queue a warning (counted: as for cfg.warn) for the walking thread to deliver; any thread. */
void kb_restore_pool_warnf(struct kb_restore_pool *p, int counted, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Deliver queued warnings; returns the first fatal error so far, or 0. Does not block. */
int kb_restore_pool_poll(struct kb_restore_pool *p, struct kb_err *err);

/* Block until every file handed over so far is done; returns as kb_restore_pool_poll. */
int kb_restore_pool_wait(struct kb_restore_pool *p, struct kb_err *err);

/* Files finished (closed with their metadata) and content bytes written so far, and the number
 * of workers. */
void kb_restore_pool_stats(struct kb_restore_pool *p, uint64_t *files, uint64_t *bytes,
                           unsigned *threads);

#endif
