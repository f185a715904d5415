/* snapshot.c - snapshot records (store, list, resolve "latest" and id prefixes) and tree blobs. */
#include "repo.h"
#include "repo_internal.h"

#include "arena.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int kb_repo_snapshot_save(struct kb_repo *r, const Kbackup__Snapshot *snap,
                          char id_hex[KB_ID_HEX_LEN + 1], struct kb_err *err)
{
        struct kb_buf plain = KB_BUF_INIT;
        int rc;

        rc = kb_buf_reserve(&plain, kbackup__snapshot__get_packed_size(snap));
        if (rc < 0)
                return kb_err_set(err, rc, "out of memory encoding the snapshot");
        plain.len = kbackup__snapshot__pack(snap, plain.data);
        rc = kb_repo_object_put(r, KB_OBJ_SNAPSHOT, plain.data, plain.len, id_hex, err);
        kb_buf_free(&plain);
        return rc;
}

void kb_snapshot_meta_free(struct kb_snapshot_meta *m)
{
        for (size_t i = 0; m->tags && i < m->ntags; i++) {
                if (m->tags[i]) {
                        free(m->tags[i]->key);
                        free(m->tags[i]->value);
                        free(m->tags[i]);
                }
        }
        free(m->tags);
        m->tags = NULL;
        m->ntags = 0;
}

static int parse_tag(const char *s, Kbackup__Tag **out, struct kb_err *err)
{
        const char *eq = s ? strchr(s, '=') : NULL;
        Kbackup__Tag *t;

        if (!eq || eq == s)
                return kb_err_set(err, KB_EUSAGE, "tag '%s': expected KEY=VALUE", s ? s : "");
        t = malloc(sizeof(*t));
        if (!t)
                return kb_err_set(err, -ENOMEM, "out of memory");
        kbackup__tag__init(t);
        t->key = strndup(s, (size_t)(eq - s));
        t->value = strdup(eq + 1);
        *out = t;
        if (!t->key || !t->value)
                return kb_err_set(err, -ENOMEM, "out of memory");
        return 0;
}

int kb_snapshot_meta_init(struct kb_snapshot_meta *m, Kbackup__Snapshot *snap, const char *kind,
                          const char *name, const char *const *tags, size_t ntags,
                          struct kb_err *err)
{
        struct passwd *pw = getpwuid(geteuid());
        struct timespec ts;
        int rc;

        memset(m, 0, sizeof(*m));
        m->tags = calloc(ntags ? ntags : 1, sizeof(*m->tags));
        if (!m->tags)
                return kb_err_set(err, -ENOMEM, "out of memory");
        m->ntags = ntags;
        for (size_t i = 0; i < ntags; i++) {
                rc = parse_tag(tags[i], &m->tags[i], err);
                if (rc < 0) {
                        kb_snapshot_meta_free(m);
                        return rc;
                }
        }
        gethostname(m->host, sizeof(m->host) - 1);
        snprintf(m->user, sizeof(m->user), "%s", pw ? pw->pw_name : "");
        clock_gettime(CLOCK_REALTIME, &ts);
        snap->version = 1;
        snap->time_unix_nsec = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        snap->kind = (char *)kind;
        snap->name = (char *)(name ? name : "");
        snap->tags = m->tags;
        snap->n_tags = m->ntags;
        snap->host = m->host;
        snap->username = m->user;
        snap->program_version = (char *)KB_VERSION;
        return 0;
}

struct list_ctx {
        struct kb_repo *r;
        struct kb_snapshot_list *l;
        size_t cap;
        struct kb_err *err;
};

int kb_repo_snapshot_parse(const char *id, const struct kb_buf *plain, Kbackup__Snapshot **out,
                           struct kb_err *err)
{
        *out = kbackup__snapshot__unpack(NULL, plain->len, plain->data);
        return *out ? 0 : kb_err_set(err, KB_ECORRUPT, "snapshot %.16s does not parse", id);
}

int kb_repo_snapshot_load(struct kb_repo *r, const char *id, Kbackup__Snapshot **out,
                          struct kb_err *err)
{
        struct kb_buf plain = KB_BUF_INIT;
        int rc;

        rc = kb_repo_object_get(r, KB_OBJ_SNAPSHOT, id, &plain, err);
        if (rc < 0)
                kb_err_prefix(err, "snapshot %.16s: ", id);
        else
                rc = kb_repo_snapshot_parse(id, &plain, out, err);
        kb_buf_free(&plain);
        return rc;
}

int kb_repo_snapshot_remove(struct kb_repo *r, const char *id, struct kb_err *err)
{
        if (kb_repo_read_only(r))
                return kb_err_set(err, -EROFS, "repository is opened read-only");
        if (strlen(id) != KB_ID_HEX_LEN)
                return kb_err_set(err, KB_EUSAGE, "snapshot id '%s' is not a full id", id);
        return kb_backend_remove(kb_repo_backend(r), KB_OBJ_SNAPSHOT, id, err);
}

static int load_snapshot(const char *name, int rc, struct kb_buf *plain, const struct kb_err *ferr,
                         void *arg)
{
        struct list_ctx *c = arg;
        Kbackup__Snapshot *s;

        if (rc == KB_ENOTFOUND)
                return 0; /* forgotten between the listing and now */
        if (rc < 0) {
                if (c->err) {
                        *c->err = *ferr;
                        kb_err_prefix(c->err, "snapshot %.16s: ", name);
                }
                return rc;
        }
        rc = kb_repo_snapshot_parse(name, plain, &s, c->err);
        if (rc < 0)
                return rc;
        if (kb_snapshot_list_add(c->l, &c->cap, name, s) < 0) {
                kbackup__snapshot__free_unpacked(s, NULL);
                return kb_err_set(c->err, -ENOMEM, "out of memory listing snapshots");
        }
        return 0;
}

static int by_time(const void *a, const void *b)
{
        const struct kb_snapshot_entry *x = a, *y = b;

        if (x->snap->time_unix_nsec != y->snap->time_unix_nsec)
                return x->snap->time_unix_nsec < y->snap->time_unix_nsec ? -1 : 1;
        return strcmp(x->id, y->id);
}

int kb_repo_snapshot_list(struct kb_repo *r, struct kb_snapshot_list *out, struct kb_err *err)
{
        struct list_ctx c = {r, out, 0, err};
        int rc;

        out->items = NULL;
        out->count = 0;
        rc = kb_repo_object_each(r, KB_OBJ_SNAPSHOT, load_snapshot, &c, err);
        if (rc < 0) {
                kb_snapshot_list_free(out);
                return rc;
        }
        kb_snapshot_list_sort(out);
        return 0;
}

int kb_snapshot_list_add(struct kb_snapshot_list *l, size_t *cap, const char *id,
                         Kbackup__Snapshot *s)
{
        if (l->count == *cap) {
                size_t n = *cap ? *cap * 2 : 32;
                struct kb_snapshot_entry *p = realloc(l->items, n * sizeof(*p));

                if (!p)
                        return -ENOMEM;
                l->items = p;
                *cap = n;
        }
        memcpy(l->items[l->count].id, id, KB_ID_HEX_LEN + 1);
        l->items[l->count++].snap = s;
        return 0;
}

void kb_snapshot_list_sort(struct kb_snapshot_list *l)
{
        if (l->count)
                qsort(l->items, l->count, sizeof(l->items[0]), by_time);
}

void kb_snapshot_list_free(struct kb_snapshot_list *l)
{
        for (size_t i = 0; i < l->count; i++)
                kbackup__snapshot__free_unpacked(l->items[i].snap, NULL);
        free(l->items);
        l->items = NULL;
        l->count = 0;
}

int kb_snapshot_list_find(const struct kb_snapshot_list *l, const char *ref, const char *kind,
                          struct kb_err *err)
{
        size_t n = strlen(ref), i;
        int found = -1;

        if (strcmp(ref, "latest") == 0) {
                for (i = l->count; i > 0; i--)
                        if (!kind || strcmp(l->items[i - 1].snap->kind, kind) == 0)
                                return (int)(i - 1);
                return kb_err_set(err, KB_ENOTFOUND, "the repository has no %s%ssnapshot",
                                  kind ? kind : "", kind ? " " : "");
        }
        if (n == 0 || n > KB_ID_HEX_LEN)
                return kb_err_set(err, KB_ENOTFOUND, "no snapshot with id '%s'", ref);
        for (i = 0; i < l->count; i++) {
                if (strncmp(l->items[i].id, ref, n) != 0)
                        continue;
                if (kind && strcmp(l->items[i].snap->kind, kind) != 0)
                        continue;
                if (found >= 0)
                        return kb_err_set(err, KB_EAMBIG,
                                          "snapshot id prefix '%s' is ambiguous: give more digits",
                                          ref);
                found = (int)i;
        }
        if (found < 0)
                return kb_err_set(err, KB_ENOTFOUND, "no %s%ssnapshot with id '%s'",
                                  kind ? kind : "", kind ? " " : "", ref);
        return found;
}

int kb_repo_tree_save(struct kb_repo *r, const Kbackup__Tree *tree, uint8_t id[KB_ID_LEN],
                      struct kb_save_result *res, struct kb_err *err)
{
        struct kb_buf plain = KB_BUF_INIT;
        int rc;

        rc = kb_buf_reserve(&plain, kbackup__tree__get_packed_size(tree));
        if (rc < 0)
                return kb_err_set(err, rc, "out of memory encoding a directory");
        plain.len = kbackup__tree__pack(tree, plain.data);
        kb_repo_blob_id(r, plain.data, plain.len, id);
        rc = kb_repo_blob_save(r, KB_BLOB_TREE, id, plain.data, plain.len, res, err);
        kb_buf_free(&plain);
        return rc;
}

/* A parsed tree lives in an arena of its own (arena.h): a directory of a thousand files is
 * thousands of small fields, which malloc would hand out and take back one by one, and restore
 * frees each tree on a worker thread while the walking thread allocates the next, so the two
 * contended for malloc's lock. The arena's own record starts its first block, right before the
 * tree (protobuf-c allocates the message first), so kb_repo_tree_free finds it from the tree. */
#define TREE_HEAD_LEN  16 /* sizeof(struct kb_arena), rounded to the arena's alignment */
#define TREE_SIZE_MULT 4  /* a parsed tree takes about 2-4 times its encoded size */

static void *tree_alloc(void *arena, size_t n)
{
        return kb_arena_alloc(arena, n);
}

static void tree_nofree(void *arena, void *p)
{
        (void)arena;
        (void)p;
}

static struct kb_arena *tree_arena_new(size_t encoded_len)
{
        struct kb_arena a = {.first_block = TREE_SIZE_MULT * encoded_len + 4096}, *home;

        _Static_assert(sizeof(struct kb_arena) <= TREE_HEAD_LEN, "tree arena record too big");
        home = kb_arena_alloc(&a, TREE_HEAD_LEN);
        if (home)
                *home = a;
        return home;
}

static void tree_arena_free(struct kb_arena *home)
{
        struct kb_arena a = *home; /* home is inside the blocks being freed */

        kb_arena_free(&a);
}

/* Parse into a new arena; *out NULL when the record does not parse. Returns 0, -ENOMEM, or
 * -ENOTSUP when protobuf-c did not allocate the message first (kb_repo_tree_free relies on it). */
static int tree_parse(const uint8_t *data, size_t len, Kbackup__Tree **out)
{
        struct kb_arena *home = tree_arena_new(len);
        ProtobufCAllocator al = {tree_alloc, tree_nofree, home};
        Kbackup__Tree *t;

        *out = NULL;
        if (!home)
                return -ENOMEM;
        t = kbackup__tree__unpack(&al, len, data);
        if (!t || (char *)t != (char *)home + TREE_HEAD_LEN) {
                tree_arena_free(home);
                return t ? -ENOTSUP : 0;
        }
        *out = t;
        return 0;
}

int kb_repo_tree_load(struct kb_repo *r, const uint8_t id[KB_ID_LEN], Kbackup__Tree **out,
                      struct kb_err *err)
{
        struct kb_buf plain = KB_BUF_INIT;
        int rc;

        rc = kb_repo_blob_load_tree(r, id, &plain, err);
        if (rc < 0)
                return rc;
        rc = tree_parse(plain.data, plain.len, out);
        kb_buf_free(&plain);
        if (rc == -ENOTSUP)
                return kb_err_set(err, rc,
                                  "internal error: this protobuf-c lays out a parsed "
                                  "directory record in an unexpected order");
        if (rc < 0)
                return kb_err_set(err, rc, "out of memory reading a directory record");
        if (!*out)
                return kb_err_set(err, KB_ECORRUPT, "a directory record does not parse");
        return 0;
}

int kb_repo_tree_new_empty(Kbackup__Tree **out)
{
        struct kb_arena *home = tree_arena_new(0);

        /* The first allocation after the arena's record, as kb_repo_tree_free expects. */
        *out = home ? kb_arena_alloc(home, sizeof(**out)) : NULL;
        if (!*out) {
                if (home)
                        tree_arena_free(home);
                return -ENOMEM;
        }
        kbackup__tree__init(*out);
        return 0;
}

void kb_repo_tree_free(Kbackup__Tree *t)
{
        if (t)
                tree_arena_free((struct kb_arena *)((char *)t - TREE_HEAD_LEN));
}

int kb_repo_snapshot_list_indexed(struct kb_repo *r, struct kb_snapshot_list *out,
                                  struct kb_err *err)
{
        int rc = kb_repo_snapshot_list(r, out, err);

        if (rc == 0) {
                rc = kb_repo_index_reload(r, err);
                if (rc < 0)
                        kb_snapshot_list_free(out);
        }
        return rc;
}
