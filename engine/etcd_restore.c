/* etcd_restore.c - write a stored etcd snapshot back out as the exact file etcdctl takes.
 *
 * The snapshot's chunks are announced to a pack reader up front and read through it, so chunks
 * stored back to back come in reads of up to READ_WINDOW bytes rather than one read each. */
#include "etcd.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pack_reader.h"

/* Two windows (the chunks of one snapshot may alternate between an old and a new pack): at most
 * 16 MiB of pack bytes held. */
#define READ_WINDOWS 2
#define READ_WINDOW  (8u << 20)

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

static int write_all(int fd, const uint8_t *p, size_t n)
{
        while (n) {
                ssize_t w = write(fd, p, n);

                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0)
                        return -errno;
                p += w;
                n -= (size_t)w;
        }
        return 0;
}

int kb_etcd_snapshot_node(struct kb_repo *repo, const Kbackup__Snapshot *snap, Kbackup__Tree **tree,
                          const Kbackup__Node **node, struct kb_err *err)
{
        if (strcmp(snap->kind, "etcd") != 0 || snap->tree.len != KB_ID_LEN)
                return kb_err_set(err, KB_EUSAGE, "not an etcd snapshot");
        int rc = kb_repo_tree_load(repo, snap->tree.data, tree, err);

        if (rc < 0)
                return rc;
        for (size_t i = 0; i < (*tree)->n_nodes; i++) {
                const Kbackup__Node *n = (*tree)->nodes[i];

                if (n->name.len == strlen(KB_ETCD_SNAPSHOT_FILE) &&
                    !memcmp(n->name.data, KB_ETCD_SNAPSHOT_FILE, n->name.len)) {
                        *node = n;
                        return 0;
                }
        }
        kb_repo_tree_free(*tree);
        *tree = NULL;
        return kb_err_set(err, KB_ECORRUPT, "etcd snapshot has no %s", KB_ETCD_SNAPSHOT_FILE);
}

static int fsync_dir_of(const char *path)
{
        char *copy = strdup(path);
        int fd, rc = 0;

        if (!copy)
                return -ENOMEM;
        fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        free(copy);
        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                rc = -errno;
        close(fd);
        return rc;
}

int kb_etcd_restore_file(struct kb_repo *repo, const Kbackup__Snapshot *snap, const char *output,
                         kb_progress_cb progress, void *cb_arg, struct kb_err *err)
{
        Kbackup__Tree *tree = NULL;
        const Kbackup__Node *node = NULL;
        struct kb_etcd_hasher h = {0};
        struct kb_pack_reader *reader = NULL;
        struct kb_buf chunk = KB_BUF_INIT;
        uint8_t trailer[KB_ETCD_TRAILER_LEN];
        char *tmp = NULL;
        int fd = -1, rc;

        rc = kb_etcd_snapshot_node(repo, snap, &tree, &node, err);
        if (rc < 0)
                return rc;
        if (access(output, F_OK) == 0) {
                rc = kb_err_set(err, -EEXIST, "%s already exists; not replacing it", output);
                goto out;
        }
        if (asprintf(&tmp, "%s.kbackup-tmp-%d", output, (int)getpid()) < 0) {
                tmp = NULL;
                rc = kb_err_set(err, -ENOMEM, "out of memory");
                goto out;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
                rc = kb_err_sys(err, -errno, "cannot create %s", tmp);
                goto out;
        }
        rc = kb_etcd_hasher_init(&h, err);
        if (rc == 0)
                rc = kb_pack_reader_new(repo, READ_WINDOWS, READ_WINDOW, &reader, err);
        if (rc < 0)
                goto out;
        for (size_t i = 0; i < node->n_content; i++) {
                if (node->content[i].len != KB_ID_LEN) {
                        rc = kb_err_set(err, KB_ECORRUPT, "etcd snapshot record is damaged");
                        goto out;
                }
                /* One the index does not know fails below, when its turn comes. */
                kb_pack_reader_want(reader, node->content[i].data, NULL, NULL);
        }
        for (size_t i = 0; i < node->n_content; i++) {
                kb_buf_reset(&chunk);
                rc = kb_pack_reader_load(reader, node->content[i].data, &chunk, err);
                if (rc < 0)
                        goto out;
                kb_etcd_hasher_update(&h, chunk.data, chunk.len);
                rc = write_all(fd, chunk.data, chunk.len);
                if (rc < 0) {
                        kb_err_sys(err, rc, "cannot write %s", tmp);
                        goto out;
                }
                if (progress) {
                        struct kb_progress p = {0, h.total, 1, node->size, NULL};

                        progress(&p, cb_arg);
                }
        }
        if (h.total != node->size) {
                rc = kb_err_set(err, KB_ECORRUPT,
                                "etcd snapshot record is damaged: %llu bytes instead of %llu",
                                (unsigned long long)h.total, (unsigned long long)node->size);
                goto out;
        }
        rc = kb_etcd_hasher_final(&h, trailer, err);
        if (rc < 0)
                goto out;
        if (fsync(fd) < 0 || close(fd) < 0) {
                fd = -1;
                rc = kb_err_sys(err, -errno, "cannot write %s", tmp);
                goto out;
        }
        fd = -1;
        if (syscall(SYS_renameat2, AT_FDCWD, tmp, AT_FDCWD, output, RENAME_NOREPLACE) < 0) {
                /* File systems without RENAME_NOREPLACE: link() also refuses to replace. */
                if (errno != EINVAL || link(tmp, output) < 0) {
                        rc = kb_err_sys(err, -errno, "cannot create %s", output);
                        goto out;
                }
                unlink(tmp);
        }
        free(tmp);
        tmp = NULL;
        rc = fsync_dir_of(output);
        if (rc < 0)
                kb_err_sys(err, rc, "cannot sync the directory of %s", output);
out:
        kb_pack_reader_free(reader);
        kb_etcd_hasher_free(&h);
        if (fd >= 0)
                close(fd);
        if (tmp) {
                unlink(tmp);
                free(tmp);
        }
        kb_buf_free(&chunk);
        if (tree)
                kb_repo_tree_free(tree);
        return rc;
}
