/* volume_device.c - restore a block device's snapshot onto a block device (a PV of volumeMode
 * Block at the DR site, or the same one after a bad release).
 *
 * The snapshot's one file (KB_VOLUME_DEVICE_IMAGE) goes to the device through the restore pool in
 * device mode: every worker writes its part at once, zero runs are written too (as zeroed ranges
 * where the device can), and the device is flushed before the restore counts it done. Its content
 * is replaced only when the caller says so, never while it is mounted or held open exclusively
 * (O_EXCL on a block device claims it), and never when the image does not fit. */
#include "volume.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "restore_pool.h"
#include "volume_int.h"

struct dctx {
        const struct kb_volume_restore_opts *o;
        struct kb_restore_pool *pool;
        uint64_t total;
};

static void dev_warn(void *arg, int counted, const char *msg)
{
        struct dctx *d = arg;

        (void)counted; /* every problem of a device fails its restore: the pool counts them */
        if (d->o && d->o->warn)
                d->o->warn(msg, d->o->cb_arg);
}

static void dev_tick(void *arg)
{
        struct dctx *d = arg;
        struct kb_progress pr = {.files_total = 1, .bytes_total = d->total};
        uint64_t files;
        unsigned threads;

        if (!d->o || !d->o->progress || !d->pool)
                return;
        kb_restore_pool_stats(d->pool, &files, &pr.bytes_done, &threads);
        pr.files_done = files;
        pr.current = KB_VOLUME_DEVICE_IMAGE;
        d->o->progress(&pr, d->o->cb_arg);
}

/* The image node of a block device's snapshot, in *t (loaded here; free with kb_repo_tree_free). */
static int device_image(struct kb_repo *repo, const Kbackup__Snapshot *snap, Kbackup__Tree **t,
                        const Kbackup__Node **img, struct kb_err *err)
{
        int rc;

        *t = NULL;
        if (!snap->root || snap->root->type != KBACKUP__NODE_TYPE__NODE_BLK)
                return kb_err_set(err, KB_EUSAGE,
                                  "the snapshot is of a directory, not of a block device: "
                                  "restore it into a directory");
        rc = kb_voltree_load(repo, &snap->tree, t, err);
        if (rc < 0)
                return rc;
        *img = kb_voltree_find(*t, KB_VOLUME_DEVICE_IMAGE, strlen(KB_VOLUME_DEVICE_IMAGE));
        if (!*img || (*img)->type != KBACKUP__NODE_TYPE__NODE_FILE || (*img)->sparse ||
            (*img)->n_extents)
                return kb_err_set(err, KB_ECORRUPT, "the block device's snapshot holds no %s",
                                  KB_VOLUME_DEVICE_IMAGE);
        return 0;
}

int kb_volume_restore_device(struct kb_repo *repo, const Kbackup__Snapshot *snap,
                             const char *target, const struct kb_volume_restore_opts *opts,
                             struct kb_volume_restore_result *res, struct kb_err *err)
{
        struct dctx d = {.o = opts};
        const Kbackup__Node *img = NULL;
        Kbackup__Tree *t = NULL;
        double start = kb_volclock();
        uint64_t size, files = 0, bytes = 0;
        unsigned threads = 0;
        int fd = -1, rc, prc;

        rc = device_image(repo, snap, &t, &img, err);
        if (rc < 0)
                goto out;
        if (!opts || !opts->overwrite_device) {
                rc = kb_err_set(err, KB_EUSAGE,
                                "%s is a block device: restoring onto it replaces all of its "
                                "content; add --overwrite-device to do that",
                                target);
                goto out;
        }
        if (opts->include && *opts->include) {
                rc = kb_err_set(err, KB_EUSAGE,
                                "--include does not apply to a block device's snapshot");
                goto out;
        }
        fd = open(target, O_WRONLY | O_EXCL | O_CLOEXEC);
        if (fd < 0) {
                rc = errno == EBUSY ? kb_err_set(err, -EBUSY,
                                                 "%s is in use (mounted, or open by another "
                                                 "program): unmount or detach it first",
                                                 target)
                                    : kb_err_sys(err, -errno, "%s", target);
                goto out;
        }
        if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
                rc = kb_err_sys(err, -errno, "%s: cannot get the device's size", target);
                goto out;
        }
        if (size < img->size) {
                rc = kb_err_set(err, KB_EUSAGE,
                                "%s holds %llu bytes, too few for the snapshot's %llu: nothing "
                                "was written",
                                target, (unsigned long long)size, (unsigned long long)img->size);
                goto out;
        }
        if (size > img->size && opts->warn) {
                char msg[512];

                snprintf(msg, sizeof(msg),
                         "%s holds %llu bytes, more than the snapshot's %llu: the last %llu are "
                         "left as they were",
                         target, (unsigned long long)size, (unsigned long long)img->size,
                         (unsigned long long)(size - img->size));
                opts->warn(msg, opts->cb_arg);
        }
        d.total = img->size;
        {
                struct kb_restore_pool_cfg pc = {.repo = repo,
                                                 .threads = opts->threads,
                                                 .device = 1,
                                                 .warn = dev_warn,
                                                 .tick = dev_tick,
                                                 .arg = &d};

                rc = kb_restore_pool_new(&pc, &d.pool, err);
                if (rc < 0)
                        goto out;
        }
        /* The pool owns fd from here on, and closes it once the device is flushed. */
        rc = kb_restore_pool_file(d.pool, NULL, fd, img, target, err);
        fd = -1;
        prc = kb_restore_pool_wait(d.pool, rc < 0 ? NULL : err);
        if (rc == 0)
                rc = prc;
        kb_restore_pool_stats(d.pool, &files, &bytes, &threads);
        prc = kb_restore_pool_free(d.pool, rc < 0 ? NULL : err);
        if (rc == 0)
                rc = prc;
        d.pool = NULL;
        /* A damaged chunk or a failed flush was reported; the device is not what was saved. */
        if (rc == 0 && files == 0)
                rc = kb_err_set(err, KB_EPARTIAL, "%s: not restored completely", target);
out:
        if (fd >= 0)
                close(fd);
        kb_repo_tree_free(t);
        if (res) {
                memset(res, 0, sizeof(*res));
                res->files = files;
                res->bytes = bytes;
                res->errors = rc == KB_EPARTIAL;
                res->threads = threads;
                res->duration_sec = kb_volclock() - start;
        }
        return rc;
}
