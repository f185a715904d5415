/* volume_util.c - small helpers shared by volume backup, restore and walk: relative path strings,
 * the directory descriptor stack that keeps deep trees within a bounded number of open files, and
 * tree lookups. */
#include "volume_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int kb_relpath_push(struct kb_relpath *p, const void *name, size_t n, size_t *saved)
{
        size_t need = p->len + 1 + n + 1;

        if (need > p->cap) {
                size_t cap = p->cap ? p->cap : 256;
                char *s;

                while (cap < need)
                        cap *= 2;
                s = realloc(p->s, cap);
                if (!s)
                        return -ENOMEM;
                p->s = s;
                p->cap = cap;
        }
        *saved = p->len;
        if (p->len)
                p->s[p->len++] = '/';
        memcpy(p->s + p->len, name, n);
        p->len += n;
        p->s[p->len] = '\0';
        return 0;
}

void kb_relpath_pop(struct kb_relpath *p, size_t saved)
{
        p->len = saved;
        if (p->s)
                p->s[saved] = '\0';
}

const char *kb_relpath_show(const struct kb_relpath *p)
{
        return p->len ? p->s : ".";
}

void kb_relpath_free(struct kb_relpath *p)
{
        free(p->s);
        p->s = NULL;
        p->len = p->cap = 0;
}

void kb_dirstack_init(struct kb_dirstack *ds, size_t budget, int reopen_flags)
{
        memset(ds, 0, sizeof(*ds));
        ds->budget = budget < 2 ? 2 : budget;
        ds->reopen_flags = reopen_flags;
}

int kb_dirstack_push(struct kb_dirstack *ds, int fd)
{
        struct stat st;

        if (fstat(fd, &st) < 0) {
                int e = -errno;

                close(fd);
                return e;
        }
        if (ds->depth == ds->cap) {
                size_t cap = ds->cap ? ds->cap * 2 : 32;
                struct kb_dirstack_level *lv = realloc(ds->lv, cap * sizeof(*lv));

                if (!lv) {
                        close(fd);
                        return -ENOMEM;
                }
                ds->lv = lv;
                ds->cap = cap;
        }
        ds->lv[ds->depth].fd = fd;
        ds->lv[ds->depth].dev = st.st_dev;
        ds->lv[ds->depth].ino = st.st_ino;
        ds->depth++;
        ds->open++;
        if (ds->open > ds->budget) {
                /* Open levels are always the root plus a run at the top, so the shallowest open
                 * one above the root is the first open level after it. */
                for (size_t i = 1; i + 1 < ds->depth; i++) {
                        if (ds->lv[i].fd >= 0) {
                                close(ds->lv[i].fd);
                                ds->lv[i].fd = -1;
                                ds->open--;
                                break;
                        }
                }
        }
        return 0;
}

int kb_dirstack_top(const struct kb_dirstack *ds)
{
        return ds->depth ? ds->lv[ds->depth - 1].fd : -1;
}

int kb_dirstack_root(const struct kb_dirstack *ds)
{
        return ds->depth ? ds->lv[0].fd : -1;
}

int kb_dirstack_ensure_parent(struct kb_dirstack *ds)
{
        struct kb_dirstack_level *top, *parent;
        struct stat st;
        int fd;

        if (ds->depth < 2)
                return 0;
        top = &ds->lv[ds->depth - 1];
        parent = &ds->lv[ds->depth - 2];
        if (parent->fd >= 0)
                return 0;
        fd = openat(top->fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC | ds->reopen_flags);
        if (fd < 0 && errno == EPERM && ds->reopen_flags)
                fd = openat(top->fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0 || st.st_dev != parent->dev || st.st_ino != parent->ino) {
                close(fd);
                return -ESTALE;
        }
        parent->fd = fd;
        ds->open++;
        return 0;
}

int kb_dirstack_pop(struct kb_dirstack *ds)
{
        int r;

        if (!ds->depth)
                return 0;
        r = kb_dirstack_ensure_parent(ds);
        close(ds->lv[ds->depth - 1].fd);
        ds->depth--;
        ds->open--;
        return r;
}

void kb_dirstack_free(struct kb_dirstack *ds)
{
        for (size_t i = 0; i < ds->depth; i++)
                if (ds->lv[i].fd >= 0)
                        close(ds->lv[i].fd);
        free(ds->lv);
        memset(ds, 0, sizeof(*ds));
}

int kb_volpath_normalize(const char *in, char **out, struct kb_err *err)
{
        size_t n = in ? strlen(in) : 0, o = 0;
        char *s = malloc(n + 1);
        const char *p = in, *end = in + n;

        if (!s)
                return kb_err_set(err, -ENOMEM, "out of memory");
        while (p && p < end) {
                const char *q = memchr(p, '/', (size_t)(end - p));
                size_t len = q ? (size_t)(q - p) : (size_t)(end - p);

                if (len == 2 && p[0] == '.' && p[1] == '.') {
                        free(s);
                        return kb_err_set(err, KB_EUSAGE,
                                          "%s: \"..\" is not allowed in a path inside a snapshot",
                                          in);
                }
                if (len && !(len == 1 && p[0] == '.')) {
                        if (o)
                                s[o++] = '/';
                        memcpy(s + o, p, len);
                        o += len;
                }
                p += len + 1;
        }
        s[o] = '\0';
        *out = s;
        return 0;
}

int kb_volname_valid(const ProtobufCBinaryData *name)
{
        if (!name->len || !name->data)
                return 0;
        if (memchr(name->data, '/', name->len) || memchr(name->data, '\0', name->len))
                return 0;
        if (name->len == 1 && name->data[0] == '.')
                return 0;
        if (name->len == 2 && name->data[0] == '.' && name->data[1] == '.')
                return 0;
        return 1;
}

const Kbackup__Node *kb_voltree_find(const Kbackup__Tree *t, const char *name, size_t len)
{
        for (size_t i = 0; i < t->n_nodes; i++) {
                const Kbackup__Node *n = t->nodes[i];

                if (n->name.len == len && !memcmp(n->name.data, name, len))
                        return n;
        }
        return NULL;
}

int kb_voltree_load(struct kb_repo *repo, const ProtobufCBinaryData *id, Kbackup__Tree **out,
                    struct kb_err *err)
{
        if (!id->len)
                return kb_repo_tree_new_empty(out) < 0 ? kb_err_set(err, -ENOMEM, "out of memory")
                                                       : 0;
        if (id->len != KB_ID_LEN)
                return kb_err_set(err, KB_ECORRUPT, "tree id has %zu bytes, expected %d", id->len,
                                  KB_ID_LEN);
        return kb_repo_tree_load(repo, id->data, out, err);
}

int kb_volsnap_check(const Kbackup__Snapshot *snap, struct kb_err *err)
{
        if (!snap)
                return kb_err_set(err, KB_EUSAGE, "no snapshot given");
        if (snap->kind && snap->kind[0] && strcmp(snap->kind, "volume") != 0)
                return kb_err_set(err, KB_EUSAGE, "not a volume snapshot (kind %s)", snap->kind);
        /* No tree id at all is an empty volume, like any directory without a subtree. */
        if (snap->tree.len != KB_ID_LEN && snap->tree.len != 0)
                return kb_err_set(err, KB_ECORRUPT, "snapshot has an invalid root tree id");
        return 0;
}

double kb_volclock(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
