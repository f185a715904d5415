/* test_treecache.c - directory records come a block of their pack at a time: walking every tree
 * of a backup of 421 directories takes a handful of pack reads instead of one per directory, every
 * tree still parses to what was backed up, a damaged byte fails only the tree it lies in, and packs
 * that hold file data are never read in blocks.
 *
 * Reads are counted by a wrapper around the real filesystem backend (counting_backend.h). */
#include "ops_testlib.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "counting_backend.h"
#include "snapshot_testlib.h"
#include "volume.h"
#include "volume_int.h"

TestSuite(treecache, .init = ops_setup, .fini = ops_teardown, .timeout = 120);

#define TOP 20
#define SUB 20

static char src[128];

static void put(const char *dir, const char *name, const char *text)
{
        char p[256];
        int fd;

        snprintf(p, sizeof(p), "%s/%s", dir, name);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        cr_assert_geq(fd, 0, "%s", p);
        cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
}

/* src/tNN/sNN/, each directory with a file named after it. Returns the snapshot id. */
static void backup_tree(char *snap_id)
{
        struct kb_volume_backup_result res;
        struct kb_repo *r = NULL;
        struct kb_err e = {0};
        char d[256], name[32];

        snprintf(src, sizeof(src), "%.*s/src", (int)strlen(ops_dir) - 2, ops_dir);
        cr_assert_eq(mkdir(src, 0755), 0);
        for (int i = 0; i < TOP; i++) {
                snprintf(d, sizeof(d), "%s/t%02d", src, i);
                cr_assert_eq(mkdir(d, 0755), 0);
                snprintf(name, sizeof(name), "f-t%02d", i);
                put(d, name, name);
                for (int j = 0; j < SUB; j++) {
                        snprintf(d, sizeof(d), "%s/t%02d/s%02d", src, i, j);
                        cr_assert_eq(mkdir(d, 0755), 0);
                        snprintf(name, sizeof(name), "f-t%02d-s%02d", i, j);
                        put(d, name, name);
                }
        }
        cr_assert_eq(kb_repo_open(ops_dir, "pw", 2, 0, &r, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_volume_backup(r, src, NULL, &res, &e), 0, "%s", e.msg);
        strcpy(snap_id, res.snapshot_id);
        kb_repo_close(r);
}

static const ProtobufCBinaryData *root_of(struct kb_repo *r, const char *id,
                                          struct kb_snapshot_list *l)
{
        return &test_find_snap(r, id, l)->tree;
}

/* Load every tree under `id`: each directory below the root holds its file, named `expect`, and
 * its subdirectories. Counts trees loaded and trees that failed. */
static void walk(struct kb_repo *r, const ProtobufCBinaryData *id, const char *expect, int *loaded,
                 int *failed)
{
        struct kb_err e = {0};
        Kbackup__Tree *t;
        int found = 0;

        if (kb_voltree_load(r, id, &t, &e) < 0) {
                cr_assert_eq(e.code, KB_ECORRUPT, "%s", e.msg);
                (*failed)++;
                return;
        }
        (*loaded)++;
        for (size_t i = 0; i < t->n_nodes; i++) {
                const Kbackup__Node *n = t->nodes[i];
                char child[64];

                if (n->type != KBACKUP__NODE_TYPE__NODE_DIR) {
                        found += expect && n->name.len == strlen(expect) &&
                                 memcmp(n->name.data, expect, n->name.len) == 0;
                        continue;
                }
                snprintf(child, sizeof(child), "%s-%.*s", expect ? expect : "f", (int)n->name.len,
                         n->name.data);
                walk(r, &n->subtree, child, loaded, failed);
        }
        cr_assert(!expect || found == 1, "%s: its file is missing", expect);
        kb_repo_tree_free(t);
}

/* The subtree id of src/tNN/sNN in the snapshot. */
static void leaf_id(struct kb_repo *r, const ProtobufCBinaryData *root, int i, int j,
                    uint8_t out[KB_ID_LEN])
{
        const ProtobufCBinaryData *id = root;
        Kbackup__Tree *t[3] = {0};
        struct kb_err e = {0};
        char name[8];

        for (int depth = 0; depth < 2; depth++) {
                const Kbackup__Node *n;

                cr_assert_eq(kb_voltree_load(r, id, &t[depth], &e), 0, "%s", e.msg);
                snprintf(name, sizeof(name), depth ? "s%02d" : "t%02d", depth ? j : i);
                n = kb_voltree_find(t[depth], name, strlen(name));
                cr_assert_not_null(n, "%s", name);
                id = &n->subtree;
        }
        memcpy(out, id->data, KB_ID_LEN);
        kb_repo_tree_free(t[0]);
        kb_repo_tree_free(t[1]);
}

Test(treecache, a_walk_of_every_tree_reads_a_few_blocks)
{
        char snap[KB_ID_HEX_LEN + 1];
        struct kb_snapshot_list l = {0};
        struct kb_repo *r = NULL;
        struct kb_err e = {0};
        struct counting *c;
        int loaded = 0, failed = 0;

        backup_tree(snap);
        cr_assert_eq(kb_repo_open(ops_dir, "pw", 2, KB_REPO_READ_ONLY, &r, &e), 0, "%s", e.msg);
        c = counting_wrap(r);
        walk(r, root_of(r, snap, &l), NULL, &loaded, &failed);
        cr_assert_eq(failed, 0);
        cr_assert_eq(loaded, 1 + TOP + TOP * SUB);
        /* One block per tree pack (a few: 421 trees take ~100 KB), never one read per tree; the
         * index says where each pack's trees end, so no request asks for a pack's size. */
        cr_expect_leq(c->gets, 4, "%u pack reads for %d trees", c->gets, loaded);
        cr_expect_eq(c->stats, 0, "%u size requests", c->stats);
        kb_snapshot_list_free(&l);
        kb_repo_close(r);
}

/* A damaged byte fails only the tree it lies in: the others of its block still load. */
Test(treecache, damage_fails_only_its_own_tree)
{
        char snap[KB_ID_HEX_LEN + 1], hex[KB_ID_HEX_LEN + 1], path[512];
        struct kb_snapshot_list l = {0};
        const struct kb_index_entry *x;
        struct kb_repo *r = NULL;
        struct kb_err e = {0};
        uint8_t id[KB_ID_LEN];
        int loaded = 0, failed = 0;

        backup_tree(snap);
        cr_assert_eq(kb_repo_open(ops_dir, "pw", 2, 0, &r, &e), 0, "%s", e.msg);
        leaf_id(r, root_of(r, snap, &l), 7, 11, id);
        x = kb_index_lookup(r->index, id);
        cr_assert_not_null(x);
        cr_assert(kb_index_pack_trees_only(r->index, x->pack));
        kb_hex_encode(kb_index_pack_id(r->index, x->pack), KB_ID_LEN, hex);
        snprintf(path, sizeof(path), "%s/data/%.2s/%s", ops_dir, hex, hex);
        ops_flip(path, (off_t)x->offset + x->length / 2);
        kb_snapshot_list_free(&l);
        kb_repo_close(r);

        cr_assert_eq(kb_repo_open(ops_dir, "pw", 2, KB_REPO_READ_ONLY, &r, &e), 0, "%s", e.msg);
        walk(r, root_of(r, snap, &l), NULL, &loaded, &failed);
        cr_assert_eq(failed, 1);
        cr_assert_eq(loaded, TOP + TOP * SUB);
        kb_snapshot_list_free(&l);
        kb_repo_close(r);
}

/* Only packs of nothing but trees are read in blocks: one data blob makes a pack mixed. */
Test(treecache, a_pack_with_data_is_not_trees_only)
{
        struct kb_index *ix;
        struct kb_index_entry t = {.type = KBACKUP__BLOB_TYPE__BLOB_TREE, .id = {1}};
        struct kb_index_entry d = {.type = KBACKUP__BLOB_TYPE__BLOB_DATA, .id = {2}};
        uint8_t a[KB_ID_LEN] = {0xa}, b[KB_ID_LEN] = {0xb};
        int pa, pb;

        cr_assert_eq(kb_index_new(&ix), 0);
        pa = kb_index_pack_add(ix, a);
        pb = kb_index_pack_add(ix, b);
        t.pack = (uint32_t)pa;
        cr_assert_eq(kb_index_insert(ix, &t, NULL), 0);
        t.id[0] = 3;
        t.pack = (uint32_t)pb;
        cr_assert_eq(kb_index_insert(ix, &t, NULL), 0);
        d.pack = (uint32_t)pb;
        cr_assert_eq(kb_index_insert(ix, &d, NULL), 0);
        cr_assert(kb_index_pack_trees_only(ix, (uint32_t)pa));
        cr_assert_not(kb_index_pack_trees_only(ix, (uint32_t)pb));
        cr_assert_not(kb_index_pack_trees_only(ix, 99), "an unknown pack");
        kb_index_free(ix);
}

/* A pack cut short (a replica still being copied, a damaged disk): its block cannot be read whole,
 * so its trees are read alone: those before the cut still load, and a tree past it fails alone
 * with an error naming it. */
Test(treecache, a_cut_pack_fails_only_the_trees_past_the_cut)
{
        char snap[KB_ID_HEX_LEN + 1], hex[KB_ID_HEX_LEN + 1], path[512], bid[17];
        struct kb_snapshot_list l = {0};
        const struct kb_index_entry *first, *cut;
        const ProtobufCBinaryData *root;
        uint8_t first_id[KB_ID_LEN], cut_id[KB_ID_LEN];
        struct kb_repo *r = NULL;
        struct kb_err e = {0};
        Kbackup__Tree *t;
        int rc;

        backup_tree(snap);
        cr_assert_eq(kb_repo_open(ops_dir, "pw", 2, 0, &r, &e), 0, "%s", e.msg);
        root = root_of(r, snap, &l);
        leaf_id(r, root, 0, 0, first_id);
        leaf_id(r, root, 19, 19, cut_id);
        first = kb_index_lookup(r->index, first_id);
        cut = kb_index_lookup(r->index, cut_id);
        cr_assert(first && cut && first->pack == cut->pack);
        cr_assert_lt(first->offset + first->length, cut->offset, "t00/s00 is not stored first");
        kb_hex_encode(kb_index_pack_id(r->index, cut->pack), KB_ID_LEN, hex);
        snprintf(path, sizeof(path), "%s/data/%.2s/%s", ops_dir, hex, hex);
        cr_assert_eq(truncate(path, cut->offset + cut->length / 2), 0);
        kb_snapshot_list_free(&l);
        kb_repo_close(r);

        cr_assert_eq(kb_repo_open(ops_dir, "pw", 2, KB_REPO_READ_ONLY, &r, &e), 0, "%s", e.msg);
        rc = kb_repo_tree_load(r, first_id, &t, &e);
        cr_assert_eq(rc, 0, "%s", e.msg);
        kb_repo_tree_free(t);
        rc = kb_repo_tree_load(r, cut_id, &t, &e);
        cr_assert_lt(rc, 0, "a tree past the end of its pack loaded");
        kb_hex_encode(cut_id, 8, bid);
        cr_assert(strstr(e.msg, bid), "%s", e.msg);
        kb_repo_close(r);
}
