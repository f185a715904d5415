/* backupset.c - backup sets found by grouping snapshots on their set id. */
#include "backupset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

static const struct kb_snapshot_list *sort_list; /* qsort has no argument; single-threaded use */

static int member_cmp(const void *a, const void *b)
{
        const Kbackup__Snapshot *x = sort_list->items[*(const size_t *)a].snap;
        const Kbackup__Snapshot *y = sort_list->items[*(const size_t *)b].snap;
        int ex = !strcmp(x->kind, "etcd"), ey = !strcmp(y->kind, "etcd"), c;

        if (ex != ey)
                return ey - ex;
        c = strcmp(x->name, y->name);
        if (c)
                return c;
        return x->time_unix_nsec < y->time_unix_nsec ? -1 : x->time_unix_nsec > y->time_unix_nsec;
}

static int set_cmp(const void *a, const void *b)
{
        const struct kb_backupset *x = a, *y = b;

        if (x->time_unix_nsec != y->time_unix_nsec)
                return x->time_unix_nsec < y->time_unix_nsec ? -1 : 1;
        return strcmp(x->id, y->id);
}

int kb_backupset_list(const struct kb_snapshot_list *l, struct kb_backupset_list *out,
                      struct kb_err *err)
{
        size_t i, j, cap = 0;

        memset(out, 0, sizeof(*out));
        for (i = 0; i < l->count; i++) {
                const Kbackup__Snapshot *s = l->items[i].snap;
                struct kb_backupset *set = NULL;
                size_t *nm;

                if (!s->set_id || !s->set_id[0])
                        continue;
                for (j = 0; j < out->count && !set; j++)
                        if (!strcmp(out->items[j].id, s->set_id))
                                set = &out->items[j];
                if (!set) {
                        if (out->count == cap) {
                                struct kb_backupset *n;

                                cap = cap ? 2 * cap : 16;
                                n = realloc(out->items, cap * sizeof(*n));
                                if (!n)
                                        goto nomem;
                                out->items = n;
                        }
                        set = &out->items[out->count++];
                        memset(set, 0, sizeof(*set));
                        snprintf(set->id, sizeof(set->id), "%s", s->set_id);
                        set->cluster = s->cluster ? s->cluster : "";
                        set->time_unix_nsec = s->time_unix_nsec;
                }
                nm = realloc(set->members, (set->n_members + 1) * sizeof(*nm));
                if (!nm)
                        goto nomem;
                set->members = nm;
                nm[set->n_members++] = i;
                if (!strcmp(s->kind, "etcd"))
                        set->n_etcd++;
                if (s->time_unix_nsec < set->time_unix_nsec)
                        set->time_unix_nsec = s->time_unix_nsec;
        }
        sort_list = l;
        for (i = 0; i < out->count; i++)
                qsort(out->items[i].members, out->items[i].n_members, sizeof(size_t), member_cmp);
        sort_list = NULL;
        if (out->count)
                qsort(out->items, out->count, sizeof(*out->items), set_cmp);
        return 0;
nomem:
        kb_backupset_list_free(out);
        return kb_err_sys(err, -ENOMEM, "backup sets");
}

void kb_backupset_list_free(struct kb_backupset_list *s)
{
        for (size_t i = 0; i < s->count; i++)
                free(s->items[i].members);
        free(s->items);
        memset(s, 0, sizeof(*s));
}

int kb_backupset_find(const struct kb_backupset_list *s, const char *ref, const char *cluster,
                      struct kb_err *err)
{
        size_t n = strlen(ref), i;
        int found = -1;

        for (i = s->count; i > 0; i--) {
                const struct kb_backupset *b = &s->items[i - 1];

                if (cluster && strcmp(b->cluster, cluster) != 0)
                        continue;
                if (!strcmp(ref, "latest"))
                        return (int)(i - 1);
                if (n == 0 || strncmp(b->id, ref, n) != 0)
                        continue;
                if (found >= 0)
                        return kb_err_set(err, KB_EAMBIG,
                                          "backup set id prefix '%s' is ambiguous: give more "
                                          "digits",
                                          ref);
                found = (int)(i - 1);
        }
        if (found >= 0)
                return found;
        if (!strcmp(ref, "latest"))
                return kb_err_set(err, KB_ENOTFOUND, "the repository has no backup set%s%s",
                                  cluster ? " of cluster " : "", cluster ? cluster : "");
        return kb_err_set(err, KB_ENOTFOUND, "no backup set with id '%s'%s%s", ref,
                          cluster ? " of cluster " : "", cluster ? cluster : "");
}

void kb_backupset_new_id(char id[KB_ID_HEX_LEN + 1])
{
        uint8_t raw[KB_ID_LEN];

        kb_crypto_random(raw, sizeof(raw));
        kb_hex_encode(raw, sizeof(raw), id);
}
