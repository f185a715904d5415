/* volume_walk.c - list a volume snapshot's stored tree (kbackup ls).
 *
 * With a start path the entry at that path is reported first (as `find PATH` does, so `ls SNAP
 * FILE` shows the file), then everything below it; without one, every entry below the root. Paths
 * are relative to the backed-up root, "dir/file", in depth-first name order. */
#include "volume.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "volume_int.h"

struct wctx {
        struct kb_repo *repo;
        kb_volume_walk_cb cb;
        void *arg;
        struct kb_err *err;
        struct kb_relpath path;
};

static int walk_tree(struct wctx *w, const ProtobufCBinaryData *id)
{
        Kbackup__Tree *t;
        int rc;

        rc = kb_voltree_load(w->repo, id, &t, w->err);
        if (rc < 0)
                return kb_err_prefix(w->err, "%s: ", kb_relpath_show(&w->path));
        for (size_t i = 0; i < t->n_nodes && rc == 0; i++) {
                const Kbackup__Node *n = t->nodes[i];
                size_t saved;

                if (!kb_volname_valid(&n->name)) {
                        rc = kb_err_set(w->err, KB_ECORRUPT,
                                        "%s: damaged metadata: an entry has an invalid name",
                                        kb_relpath_show(&w->path));
                        break;
                }
                if (kb_relpath_push(&w->path, n->name.data, n->name.len, &saved) < 0) {
                        rc = kb_err_set(w->err, -ENOMEM, "out of memory");
                        break;
                }
                rc = w->cb(w->path.s, n, w->arg);
                if (rc == 0 && n->type == KBACKUP__NODE_TYPE__NODE_DIR)
                        rc = walk_tree(w, &n->subtree);
                kb_relpath_pop(&w->path, saved);
        }
        kb_repo_tree_free(t);
        return rc;
}

int kb_volume_walk(struct kb_repo *repo, const Kbackup__Snapshot *snap, const char *path,
                   kb_volume_walk_cb cb, void *arg, struct kb_err *err)
{
        struct wctx w = {.repo = repo, .cb = cb, .arg = arg, .err = err};
        const ProtobufCBinaryData *id;
        Kbackup__Tree *t = NULL;
        char *rel = NULL, *p;
        int rc;

        rc = kb_volsnap_check(snap, err);
        if (rc < 0)
                return rc;
        rc = kb_volpath_normalize(path, &rel, err);
        if (rc < 0)
                return rc;
        id = &snap->tree;
        p = rel;
        /* Descend to the start path, one tree at a time; only the last one stays loaded. */
        while (*p) {
                char *slash = strchr(p, '/');
                size_t len = slash ? (size_t)(slash - p) : strlen(p);
                const Kbackup__Node *n;
                Kbackup__Tree *next;
                size_t saved;

                rc = kb_voltree_load(repo, id, &next, err);
                if (rc < 0)
                        goto out;
                kb_repo_tree_free(t);
                t = next;
                n = kb_voltree_find(t, p, len);
                if (!n || (slash && n->type != KBACKUP__NODE_TYPE__NODE_DIR)) {
                        rc = kb_err_set(err, KB_ENOTFOUND, "%s: not in the snapshot", path);
                        goto out;
                }
                if (kb_relpath_push(&w.path, p, len, &saved) < 0) {
                        rc = kb_err_set(err, -ENOMEM, "out of memory");
                        goto out;
                }
                if (!slash) {
                        rc = cb(w.path.s, n, arg);
                        if (rc == 0 && n->type == KBACKUP__NODE_TYPE__NODE_DIR)
                                rc = walk_tree(&w, &n->subtree);
                        goto out;
                }
                id = &n->subtree;
                p = slash + 1;
        }
        rc = walk_tree(&w, id);
out:
        kb_repo_tree_free(t);
        kb_relpath_free(&w.path);
        free(rel);
        return rc;
}
