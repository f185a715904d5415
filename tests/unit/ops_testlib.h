/* ops_testlib.h - helpers for the operations tests (lock, check, prune, keys): a scratch
 * repository, and snapshots built directly through the engine with chosen contents and times.
 * Included by test_*.c files; not a test on its own. */
#ifndef KB_OPS_TESTLIB_H
#define KB_OPS_TESTLIB_H

#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "repo.h"
#include "repo_internal.h"

static char ops_dir[96];
static const struct kb_kdf_params ops_fast = {1, 8192};

static inline int ops_rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
        (void)st, (void)flag, (void)f;
        return remove(p);
}

/* A fresh repository at ops_dir (password "pw"). */
static inline void ops_setup(void)
{
        struct kb_err e = {0};

        strcpy(ops_dir, "/tmp/kbtest-ops-XXXXXX");
        cr_assert_not_null(mkdtemp(ops_dir));
        strcat(ops_dir, "/r");
        cr_assert_eq(kb_repo_init(ops_dir, "pw", 2, &ops_fast, NULL, &e), 0, "%s", e.msg);
}

static inline void ops_teardown(void)
{
        ops_dir[strlen(ops_dir) - 2] = '\0';
        nftw(ops_dir, ops_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Open; small packs (test-only: the field is internal) so a few files make several packs. */
static inline struct kb_repo *ops_open_flags(int flags)
{
        struct kb_repo *r = NULL;
        struct kb_err e = {0};

        cr_assert_eq(kb_repo_open(ops_dir, "pw", 2, flags, &r, &e), 0, "%s", e.msg);
        r->pack_size = 64 << 10;
        return r;
}

static inline struct kb_repo *ops_open(void)
{
        return ops_open_flags(0);
}

/* Deterministic content of file `n` of generation `gen`. */
static inline void ops_content(unsigned gen, unsigned n, uint8_t *buf, size_t len)
{
        uint8_t seed[32] = {(uint8_t)gen, (uint8_t)(gen >> 8), (uint8_t)n, (uint8_t)(n >> 8), 7};

        randombytes_buf_deterministic(buf, len, seed);
}

#define OPS_FILE_SIZE 20000

/* A file node whose content is one chunk; the blob is saved. */
static inline Kbackup__Node *ops_file(struct kb_repo *r, const char *name, unsigned gen, unsigned n)
{
        Kbackup__Node *node = calloc(1, sizeof(*node));
        uint8_t *buf = malloc(OPS_FILE_SIZE);
        struct kb_err e = {0};

        kbackup__node__init(node);
        node->name.data = (uint8_t *)strdup(name);
        node->name.len = strlen(name);
        node->type = KBACKUP__NODE_TYPE__NODE_FILE;
        node->size = OPS_FILE_SIZE;
        node->n_content = 1;
        node->content = calloc(1, sizeof(*node->content));
        node->content[0].data = malloc(KB_ID_LEN);
        node->content[0].len = KB_ID_LEN;
        ops_content(gen, n, buf, OPS_FILE_SIZE);
        kb_repo_blob_id(r, buf, OPS_FILE_SIZE, node->content[0].data);
        cr_assert_eq(
            kb_repo_blob_save(r, KB_BLOB_DATA, node->content[0].data, buf, OPS_FILE_SIZE, NULL, &e),
            0, "%s", e.msg);
        free(buf);
        return node;
}

static inline void ops_node_free(Kbackup__Node *n)
{
        free(n->name.data);
        for (size_t i = 0; i < n->n_content; i++)
                free(n->content[i].data);
        free(n->content);
        free(n->subtree.data);
        free(n);
}

/* Snapshot of generation `gen`: files f0..f(nfiles-1) at the top with contents of (gen, i) for
 * i < shared (shared with every generation: gen 0's content) else (gen, i); and "sub/g" with
 * content (gen, 1000). Written with the given time. Returns the snapshot id. */
static inline void ops_snapshot(struct kb_repo *r, unsigned gen, unsigned nfiles, unsigned shared,
                                int64_t time_sec, char id[KB_ID_HEX_LEN + 1])
{
        Kbackup__Node **top = calloc(nfiles + 1, sizeof(*top));
        Kbackup__Node *subfile, *subdir = calloc(1, sizeof(*subdir));
        Kbackup__Tree t = KBACKUP__TREE__INIT, st = KBACKUP__TREE__INIT;
        Kbackup__Snapshot s = KBACKUP__SNAPSHOT__INIT;
        uint8_t root[KB_ID_LEN];
        struct kb_err e = {0};
        char name[32];

        subfile = ops_file(r, "g", gen, 1000);
        st.n_nodes = 1;
        st.nodes = &subfile;
        kbackup__node__init(subdir);
        subdir->name.data = (uint8_t *)strdup("sub");
        subdir->name.len = 3;
        subdir->type = KBACKUP__NODE_TYPE__NODE_DIR;
        subdir->subtree.data = malloc(KB_ID_LEN);
        subdir->subtree.len = KB_ID_LEN;
        cr_assert_eq(kb_repo_tree_save(r, &st, subdir->subtree.data, NULL, &e), 0, "%s", e.msg);
        for (unsigned i = 0; i < nfiles; i++) {
                snprintf(name, sizeof(name), "f%u", i);
                top[i] = ops_file(r, name, i < shared ? 0 : gen, i);
        }
        top[nfiles] = subdir; /* "sub" sorts after "f..." */
        t.n_nodes = nfiles + 1;
        t.nodes = top;
        cr_assert_eq(kb_repo_tree_save(r, &t, root, NULL, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_repo_flush(r, &e), 0, "%s", e.msg);
        s.version = 1;
        s.time_unix_nsec = time_sec * 1000000000LL;
        s.kind = "volume";
        s.name = "ns/pvc";
        s.host = "testhost";
        s.username = "";
        s.source_path = "/data";
        s.program_version = "test";
        s.tree.data = root;
        s.tree.len = KB_ID_LEN;
        cr_assert_eq(kb_repo_snapshot_save(r, &s, id, &e), 0, "%s", e.msg);
        for (unsigned i = 0; i <= nfiles; i++)
                ops_node_free(top[i]);
        ops_node_free(subfile);
        free(top);
}

/* Every file of snapshot generation `gen` reads back with the right content. */
static inline void ops_verify(struct kb_repo *r, unsigned gen, unsigned nfiles, unsigned shared)
{
        uint8_t *want = malloc(OPS_FILE_SIZE), id[KB_ID_LEN];
        struct kb_buf got = KB_BUF_INIT;
        struct kb_err e = {0};

        for (unsigned i = 0; i <= nfiles; i++) {
                unsigned n = i == nfiles ? 1000 : i;

                ops_content(i < shared ? 0 : gen, n, want, OPS_FILE_SIZE);
                kb_repo_blob_id(r, want, OPS_FILE_SIZE, id);
                kb_buf_reset(&got);
                cr_assert_eq(kb_repo_blob_load(r, id, &got, &e), 0, "gen %u file %u: %s", gen, n,
                             e.msg);
                cr_assert_eq(got.len, OPS_FILE_SIZE);
                cr_assert_eq(memcmp(got.data, want, OPS_FILE_SIZE), 0);
        }
        kb_buf_free(&got);
        free(want);
}

/* Count the objects of a type directory (packs: every data/xx). */
static inline int ops_count_cb(const char *name, uint64_t size, void *arg)
{
        (void)name, (void)size;
        ++*(size_t *)arg;
        return 0;
}

static inline size_t ops_count(struct kb_repo *r, enum kb_obj_type t)
{
        size_t n = 0;
        struct kb_err e = {0};

        cr_assert_eq(kb_backend_list(kb_repo_backend(r), t, ops_count_cb, &n, &e), 0, "%s", e.msg);
        return n;
}

/* Messages a check or prune reported, one per line. */
struct ops_log {
        char buf[1 << 16];
        size_t len;
        unsigned errors;
};

static inline void ops_report(int is_error, const char *msg, void *arg)
{
        struct ops_log *l = arg;
        int n = snprintf(l->buf + l->len, sizeof(l->buf) - l->len, "%s%s\n", is_error ? "E " : "N ",
                         msg);

        if (n > 0 && l->len + (size_t)n < sizeof(l->buf))
                l->len += (size_t)n;
        l->errors += is_error;
}

/* The path of the first pack file (data/xx/id), into out. */
static inline void ops_some_pack(char *out, size_t len, int largest)
{
        char d[160];
        off_t best = largest ? -1 : (off_t)1 << 62;

        out[0] = '\0';
        for (int i = 0; i < 256; i++) {
                DIR *dir;
                struct dirent *de;

                snprintf(d, sizeof(d), "%s/data/%02x", ops_dir, i);
                dir = opendir(d);
                if (!dir)
                        continue;
                while ((de = readdir(dir)) != NULL) {
                        char p[512];
                        struct stat st;

                        if (de->d_name[0] == '.')
                                continue;
                        snprintf(p, sizeof(p), "%s/%s", d, de->d_name);
                        if (stat(p, &st) == 0 &&
                            (largest ? st.st_size > best : st.st_size < best)) {
                                best = st.st_size;
                                /* Callers pass PATH_MAX-sized buffers; a longer path is a bug. */
                                cr_assert_lt(strlen(p), len);
                                memcpy(out, p, strlen(p) + 1);
                        }
                }
                closedir(dir);
        }
        cr_assert_neq(out[0], '\0', "no pack found");
}

static inline void ops_flip(const char *path, off_t off)
{
        int fd = open(path, O_RDWR);
        uint8_t b;

        cr_assert_geq(fd, 0);
        cr_assert_eq(pread(fd, &b, 1, off), 1);
        b ^= 0x40;
        cr_assert_eq(pwrite(fd, &b, 1, off), 1);
        close(fd);
}

#endif
