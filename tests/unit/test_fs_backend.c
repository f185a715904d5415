/* test_fs_backend.c - the filesystem backend against the backend.h contract: round trips for
 * every object type, no-overwrite, truncation, missing objects, name validation, temp-file
 * hygiene, read-only behaviour and concurrent writers. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "backend.h"

static char tmpdir[64];
static char repo[128];
static struct kb_backend *be;
static struct kb_err err;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        return remove(path);
}

static void rm_rf(const char *path)
{
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup_dir(void)
{
        strcpy(tmpdir, "/tmp/kb-fs-test-XXXXXX");
        cr_assert_not_null(mkdtemp(tmpdir));
        snprintf(repo, sizeof(repo), "%s/repo", tmpdir);
}

static void setup_repo(void)
{
        setup_dir();
        kb_err_clear(&err);
        cr_assert_eq(kb_fs_backend_open(repo, 1, &be, &err), 0, "%s", err.msg);
        cr_assert_not_null(be);
}

static void teardown(void)
{
        kb_backend_close(be);
        be = NULL;
        if (tmpdir[0]) {
                /* restore write permission in case a test removed it */
                chmod(repo, 0700);
                rm_rf(tmpdir);
        }
}

static const char *const hexnames[] = {
    "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809",
    "00ff",
    "ff00aa",
};

/* Expected path of an object under the repo, for checks that look at the disk directly. */
static void disk_path(enum kb_obj_type t, const char *name, char *out, size_t n)
{
        static const char *const dirs[] = {NULL,    NULL,        "keys", "data",
                                           "index", "snapshots", "locks"};

        if (t == KB_OBJ_MARKER)
                snprintf(out, n, "%s/kbackup", repo);
        else if (t == KB_OBJ_CONFIG)
                snprintf(out, n, "%s/config", repo);
        else if (t == KB_OBJ_PACK)
                snprintf(out, n, "%s/data/%.2s/%s", repo, name, name);
        else
                snprintf(out, n, "%s/%s/%s", repo, dirs[t], name);
}

struct collected {
        char names[1200][140];
        uint64_t sizes[1200];
        int n;
        int stop_after;
};

static int collect_cb(const char *name, uint64_t size, void *arg)
{
        struct collected *c = arg;

        cr_assert_lt(c->n, 1200);
        snprintf(c->names[c->n], sizeof(c->names[0]), "%s", name);
        c->sizes[c->n] = size;
        c->n++;
        if (c->stop_after && c->n >= c->stop_after)
                return 42;
        return 0;
}

static int find_name(const struct collected *c, const char *name)
{
        for (int i = 0; i < c->n; i++)
                if (strcmp(c->names[i], name) == 0)
                        return i;
        return -1;
}

/* Count entries whose name starts with ".tmp" anywhere under dir. */
static int count_temp(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        char sub[512];
        int n = 0;

        cr_assert_not_null(d, "opendir %s", dir);
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                if (!strncmp(de->d_name, ".tmp", 4))
                        n++;
                snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
                if (de->d_type == DT_DIR)
                        n += count_temp(sub);
        }
        closedir(d);
        return n;
}

TestSuite(fs_backend, .init = setup_repo, .fini = teardown);

Test(fs_backend, open_creates_layout)
{
        static const char *const dirs[] = {"keys", "data", "index", "snapshots", "locks"};
        char p[256];
        struct stat st;

        cr_assert_eq(be->read_only, 0);
        cr_assert_eq(stat(repo, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0700);
        for (size_t i = 0; i < 5; i++) {
                snprintf(p, sizeof(p), "%s/%s", repo, dirs[i]);
                cr_assert_eq(stat(p, &st), 0, "%s missing", p);
                cr_assert(S_ISDIR(st.st_mode));
                cr_assert_eq(st.st_mode & 0777, 0700);
        }
}

Test(fs_backend, round_trip_every_type)
{
        for (int t = 0; t < KB_OBJ_TYPE_COUNT; t++) {
                for (size_t k = 0; k < 3; k++) {
                        const char *name = hexnames[k];
                        char body[300], path[512];
                        struct kb_buf out = KB_BUF_INIT;
                        struct collected *c = calloc(1, sizeof(*c));
                        struct stat st;
                        uint64_t size = 0;
                        size_t len = 100 + (size_t)t * 20 + k;

                        for (size_t i = 0; i < len; i++)
                                body[i] = (char)(i * 7 + (size_t)t + k);

                        int r = kb_backend_put(be, t, name, body, len, &err);
                        if (t == KB_OBJ_MARKER || t == KB_OBJ_CONFIG) {
                                /* fixed objects: the name is ignored, so the 2nd put collides */
                                cr_assert_eq(r, k == 0 ? 0 : -EEXIST, "type %d: %s", t, err.msg);
                                if (k > 0) {
                                        free(c);
                                        continue;
                                }
                        } else {
                                cr_assert_eq(r, 0, "type %d: %s", t, err.msg);
                        }

                        disk_path(t, name, path, sizeof(path));
                        cr_assert_eq(stat(path, &st), 0, "not at %s", path);
                        cr_assert_eq(st.st_mode & 0777, 0600);
                        cr_assert_eq((size_t)st.st_size, len);

                        /* whole object, appended to what the buffer already holds */
                        kb_buf_append(&out, "XY", 2);
                        cr_assert_eq(kb_backend_get(be, t, name, 0, 0, &out, &err), 0, "%s",
                                     err.msg);
                        cr_assert_eq(out.len, len + 2);
                        cr_assert_eq(memcmp(out.data, "XY", 2), 0);
                        cr_assert_eq(memcmp(out.data + 2, body, len), 0);

                        /* a range in the middle, then from an offset to the end */
                        kb_buf_reset(&out);
                        cr_assert_eq(kb_backend_get(be, t, name, 10, 25, &out, &err), 0);
                        cr_assert_eq(out.len, 25);
                        cr_assert_eq(memcmp(out.data, body + 10, 25), 0);
                        kb_buf_reset(&out);
                        cr_assert_eq(kb_backend_get(be, t, name, 40, 0, &out, &err), 0);
                        cr_assert_eq(out.len, len - 40);
                        cr_assert_eq(memcmp(out.data, body + 40, len - 40), 0);
                        /* the exact tail is not truncated */
                        kb_buf_reset(&out);
                        cr_assert_eq(kb_backend_get(be, t, name, len - 5, 5, &out, &err), 0);
                        cr_assert_eq(memcmp(out.data, body + len - 5, 5), 0);

                        cr_assert_eq(kb_backend_stat(be, t, name, &size, &err), 0);
                        cr_assert_eq(size, len);

                        cr_assert_eq(kb_backend_list(be, t, collect_cb, c, &err), 0);
                        int idx = find_name(c, (t == KB_OBJ_MARKER)   ? "kbackup"
                                               : (t == KB_OBJ_CONFIG) ? "config"
                                                                      : name);
                        cr_assert_geq(idx, 0, "type %d: %s not listed", t, name);
                        cr_assert_eq(c->sizes[idx], len);
                        cr_assert_eq(c->n, (t <= KB_OBJ_CONFIG) ? 1 : (int)k + 1);

                        kb_buf_free(&out);
                        free(c);
                }
                /* remove everything of this type; removing again is fine */
                for (size_t k = 0; k < 3; k++) {
                        uint64_t size;
                        struct collected *c = calloc(1, sizeof(*c));

                        cr_assert_eq(kb_backend_remove(be, t, hexnames[k], &err), 0, "%s", err.msg);
                        cr_assert_eq(kb_backend_remove(be, t, hexnames[k], &err), 0);
                        cr_assert_eq(kb_backend_stat(be, t, hexnames[k], &size, &err),
                                     KB_ENOTFOUND);
                        if (k == 2) {
                                cr_assert_eq(kb_backend_list(be, t, collect_cb, c, &err), 0);
                                cr_assert_eq(c->n, 0, "type %d still lists %d", t, c->n);
                        }
                        free(c);
                }
        }
        cr_assert_eq(count_temp(repo), 0);
}

Test(fs_backend, empty_object)
{
        struct kb_buf out = KB_BUF_INIT;
        uint64_t size = 1;

        cr_assert_eq(kb_backend_put(be, KB_OBJ_LOCK, "empty", NULL, 0, &err), 0, "%s", err.msg);
        cr_assert_eq(kb_backend_stat(be, KB_OBJ_LOCK, "empty", &size, &err), 0);
        cr_assert_eq(size, 0);
        cr_assert_eq(kb_backend_get(be, KB_OBJ_LOCK, "empty", 0, 0, &out, &err), 0);
        cr_assert_eq(out.len, 0);
        cr_assert_eq(kb_backend_get(be, KB_OBJ_LOCK, "empty", 0, 1, &out, &err), -EIO);
        kb_buf_free(&out);
}

Test(fs_backend, put_existing_keeps_original)
{
        struct kb_buf out = KB_BUF_INIT;

        cr_assert_eq(kb_backend_put(be, KB_OBJ_PACK, "abcd", "original", 8, &err), 0);
        kb_err_clear(&err);
        cr_assert_eq(kb_backend_put(be, KB_OBJ_PACK, "abcd", "replacement!", 12, &err), -EEXIST);
        cr_assert_eq(err.code, -EEXIST);
        cr_assert_not_null(strstr(err.msg, "abcd"), "%s", err.msg);
        cr_assert_eq(kb_backend_get(be, KB_OBJ_PACK, "abcd", 0, 0, &out, &err), 0);
        cr_assert_eq(out.len, 8);
        cr_assert_eq(memcmp(out.data, "original", 8), 0);
        cr_assert_eq(kb_backend_put(be, KB_OBJ_MARKER, NULL, "m1", 2, &err), 0);
        cr_assert_eq(kb_backend_put(be, KB_OBJ_MARKER, NULL, "m2", 2, &err), -EEXIST);
        kb_buf_reset(&out);
        cr_assert_eq(kb_backend_get(be, KB_OBJ_MARKER, NULL, 0, 0, &out, &err), 0);
        cr_assert_eq(memcmp(out.data, "m1", 2), 0);
        cr_assert_eq(count_temp(repo), 0, "failed put left a temp file");
        kb_buf_free(&out);
}

Test(fs_backend, truncated_read_is_eio)
{
        struct kb_buf out = KB_BUF_INIT;
        char body[100] = {0};

        cr_assert_eq(kb_backend_put(be, KB_OBJ_INDEX, "idx1", body, sizeof(body), &err), 0);
        kb_buf_append(&out, "keep", 4);
        kb_err_clear(&err);
        cr_assert_eq(kb_backend_get(be, KB_OBJ_INDEX, "idx1", 50, 100, &out, &err), -EIO);
        cr_assert_not_null(strstr(err.msg, "truncated"), "%s", err.msg);
        cr_assert_not_null(strstr(err.msg, "index/idx1"), "%s", err.msg);
        cr_assert_eq(out.len, 4, "a failed get must not append");
        cr_assert_eq(kb_backend_get(be, KB_OBJ_INDEX, "idx1", 101, 0, &out, &err), -EIO);
        cr_assert_eq(kb_backend_get(be, KB_OBJ_INDEX, "idx1", UINT64_MAX, 10, &out, &err), -EINVAL);

        /* an object cut short on disk (say, by a broken copy) */
        char path[512];
        disk_path(KB_OBJ_INDEX, "idx1", path, sizeof(path));
        cr_assert_eq(truncate(path, 30), 0);
        cr_assert_eq(kb_backend_get(be, KB_OBJ_INDEX, "idx1", 0, 100, &out, &err), -EIO);
        cr_assert_eq(out.len, 4);
        kb_buf_free(&out);
}

Test(fs_backend, missing_is_notfound)
{
        struct kb_buf out = KB_BUF_INIT;
        uint64_t size;

        kb_err_clear(&err);
        cr_assert_eq(kb_backend_get(be, KB_OBJ_SNAPSHOT, "deadbeef", 0, 0, &out, &err),
                     KB_ENOTFOUND);
        cr_assert_eq(err.code, KB_ENOTFOUND);
        cr_assert_not_null(strstr(err.msg, "snapshot"), "%s", err.msg);
        cr_assert_not_null(strstr(err.msg, "deadbeef"), "%s", err.msg);
        cr_assert_eq(kb_backend_get(be, KB_OBJ_PACK, "deadbeef", 0, 0, &out, &err), KB_ENOTFOUND);
        cr_assert_not_null(strstr(err.msg, "pack"), "%s", err.msg);
        cr_assert_eq(kb_backend_stat(be, KB_OBJ_KEY, "k1", &size, &err), KB_ENOTFOUND);
        cr_assert_eq(kb_backend_get(be, KB_OBJ_CONFIG, NULL, 0, 0, &out, &err), KB_ENOTFOUND);
        cr_assert_not_null(strstr(err.msg, "config"), "%s", err.msg);
        cr_assert_eq(kb_backend_remove(be, KB_OBJ_LOCK, "nolock", &err), 0);
        cr_assert_eq(out.len, 0);
        kb_buf_free(&out);
}

Test(fs_backend, invalid_names_rejected)
{
        static const char *const bad[] = {
            "",    ".hidden", ".tmp-1234", "..",  "a/b", "../escape",
            "a b", "caf\xc3", "x\n",       "a:b", "*",   NULL,
        };
        char longname[200];
        struct kb_buf out = KB_BUF_INIT;
        uint64_t size;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cr_assert_eq(kb_backend_put(be, KB_OBJ_KEY, bad[i], "x", 1, &err), -EINVAL,
                             "accepted \"%s\"", bad[i] ? bad[i] : "NULL");
                cr_assert_eq(kb_backend_get(be, KB_OBJ_KEY, bad[i], 0, 0, &out, &err), -EINVAL);
                cr_assert_eq(kb_backend_stat(be, KB_OBJ_KEY, bad[i], &size, &err), -EINVAL);
                cr_assert_eq(kb_backend_remove(be, KB_OBJ_KEY, bad[i], &err), -EINVAL);
        }
        memset(longname, 'a', 129);
        longname[129] = '\0';
        cr_assert_eq(kb_backend_put(be, KB_OBJ_INDEX, longname, "x", 1, &err), -EINVAL);
        longname[128] = '\0';
        cr_assert_eq(kb_backend_put(be, KB_OBJ_INDEX, longname, "x", 1, &err), 0, "%s", err.msg);
        cr_assert_eq(kb_backend_put(be, KB_OBJ_SNAPSHOT, "Ok_name-1.v2", "x", 1, &err), 0);
        /* packs need two lowercase hex digits to pick their data/xx directory */
        cr_assert_eq(kb_backend_put(be, KB_OBJ_PACK, "a", "x", 1, &err), -EINVAL);
        cr_assert_eq(kb_backend_put(be, KB_OBJ_PACK, "zz00", "x", 1, &err), -EINVAL);
        cr_assert_eq(kb_backend_put(be, KB_OBJ_PACK, "AB00", "x", 1, &err), -EINVAL);
        cr_assert_eq(kb_backend_put(be, KB_OBJ_PACK, "ab", "x", 1, &err), 0);
        cr_assert_eq(kb_backend_put(be, (enum kb_obj_type)99, "ab", "x", 1, &err), -EINVAL);
        cr_assert_eq(access("/tmp/escape", F_OK), -1);
        kb_buf_free(&out);
}

Test(fs_backend, list_thousand_packs_and_ignore_junk)
{
        struct collected *c = calloc(1, sizeof(*c));
        char names[1000][17], path[512];
        int seen[1000] = {0};

        for (int i = 0; i < 1000; i++) {
                /* spread over many prefixes, several per prefix */
                snprintf(names[i], sizeof(names[i]), "%02x%014x", (i * 37) & 0xff, i);
                cr_assert_eq(kb_backend_put(be, KB_OBJ_PACK, names[i], &i, sizeof(i), &err), 0,
                             "%s", err.msg);
        }
        /* a stale temp file, a stray file in data/ and a misplaced pack are not listed */
        snprintf(path, sizeof(path), "%s/data/00/.tmp-0123456789abcdef", repo);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fclose(f);
        snprintf(path, sizeof(path), "%s/data/00/1100aa", repo);
        f = fopen(path, "w");
        cr_assert_not_null(f);
        fclose(f);
        snprintf(path, sizeof(path), "%s/data/README", repo);
        f = fopen(path, "w");
        cr_assert_not_null(f);
        fclose(f);

        cr_assert_eq(kb_backend_list(be, KB_OBJ_PACK, collect_cb, c, &err), 0, "%s", err.msg);
        cr_assert_eq(c->n, 1000);
        for (int i = 0; i < c->n; i++) {
                int j;

                for (j = 0; j < 1000 && strcmp(names[j], c->names[i]); j++)
                        ;
                cr_assert_lt(j, 1000, "unexpected %s", c->names[i]);
                cr_assert_eq(seen[j], 0, "%s listed twice", c->names[i]);
                cr_assert_eq(c->sizes[i], sizeof(int));
                seen[j] = 1;
        }
        /* nothing else type-wise */
        c->n = 0;
        cr_assert_eq(kb_backend_list(be, KB_OBJ_INDEX, collect_cb, c, &err), 0);
        cr_assert_eq(c->n, 0);

        /* a non-zero callback return stops the listing and is passed back */
        c->n = 0;
        c->stop_after = 3;
        cr_assert_eq(kb_backend_list(be, KB_OBJ_PACK, collect_cb, c, &err), 42);
        cr_assert_eq(c->n, 3);
        free(c);
}

Test(fs_backend, no_temp_files_after_puts)
{
        char name[32];

        for (int i = 0; i < 50; i++) {
                snprintf(name, sizeof(name), "%02x%06d", i * 5, i);
                cr_assert_eq(kb_backend_put(be, KB_OBJ_PACK, name, name, strlen(name), &err), 0);
                snprintf(name, sizeof(name), "snap%d", i);
                cr_assert_eq(kb_backend_put(be, KB_OBJ_SNAPSHOT, name, name, strlen(name), &err),
                             0);
        }
        cr_assert_eq(kb_backend_put(be, KB_OBJ_SNAPSHOT, "snap1", "zz", 2, &err), -EEXIST);
        cr_assert_eq(count_temp(repo), 0);
}

Test(fs_backend, data_subdir_recreated_on_demand)
{
        char path[512];
        struct stat st;
        struct kb_buf out = KB_BUF_INIT;

        snprintf(path, sizeof(path), "%s/data", repo);
        cr_assert_eq(rmdir(path), 0);
        snprintf(path, sizeof(path), "%s/locks", repo);
        cr_assert_eq(rmdir(path), 0);
        cr_assert_eq(kb_backend_put(be, KB_OBJ_PACK, "7f01", "p", 1, &err), 0, "%s", err.msg);
        cr_assert_eq(kb_backend_put(be, KB_OBJ_LOCK, "l1", "l", 1, &err), 0, "%s", err.msg);
        snprintf(path, sizeof(path), "%s/data/7f", repo);
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0700);
        cr_assert_eq(kb_backend_get(be, KB_OBJ_PACK, "7f01", 0, 0, &out, &err), 0);
        cr_assert_eq(out.len, 1);
        kb_buf_free(&out);
}

Test(fs_backend, errors_name_the_object)
{
        char path[512];

        /* a directory where the object would go makes the final rename fail */
        snprintf(path, sizeof(path), "%s/keys/blocked", repo);
        cr_assert_eq(mkdir(path, 0700), 0);
        kb_err_clear(&err);
        int r = kb_backend_put(be, KB_OBJ_KEY, "blocked", "x", 1, &err);
        cr_assert_lt(r, 0);
        cr_assert_not_null(strstr(err.msg, "blocked"), "%s", err.msg);
        cr_assert_null(strchr(err.msg, '\n'));
        cr_assert_eq(count_temp(repo), 0);
}

/* ---- opening ---- */

struct snap_entry {
        char path[300];
        struct stat st;
};

struct tree_snap {
        struct snap_entry e[64];
        int n;
};

static void snap_tree(const char *dir, struct tree_snap *s)
{
        DIR *d = opendir(dir);
        struct dirent *de;

        cr_assert_not_null(d);
        cr_assert_lt(s->n, 64);
        snprintf(s->e[s->n].path, sizeof(s->e[0].path), "%s", dir);
        cr_assert_eq(lstat(dir, &s->e[s->n].st), 0);
        s->n++;
        while ((de = readdir(d))) {
                char sub[300];

                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
                if (de->d_type == DT_DIR) {
                        snap_tree(sub, s);
                } else {
                        cr_assert_lt(s->n, 64);
                        snprintf(s->e[s->n].path, sizeof(s->e[0].path), "%s", sub);
                        cr_assert_eq(lstat(sub, &s->e[s->n].st), 0);
                        s->n++;
                }
        }
        closedir(d);
}

static int ts_eq(struct timespec a, struct timespec b)
{
        return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

Test(fs_backend, open_existing_writes_nothing)
{
        struct tree_snap *before = calloc(1, sizeof(*before));
        struct tree_snap *after = calloc(1, sizeof(*after));
        struct kb_backend *ro = NULL;
        struct kb_buf out = KB_BUF_INIT;

        cr_assert_eq(kb_backend_put(be, KB_OBJ_MARKER, NULL, "kbackup-v1", 10, &err), 0);
        cr_assert_eq(kb_backend_put(be, KB_OBJ_PACK, "abcdef", "pack", 4, &err), 0);
        snap_tree(repo, before);
        usleep(20000); /* so that any write would show in the timestamps */

        cr_assert_eq(kb_fs_backend_open(repo, 0, &ro, &err), 0, "%s", err.msg);
        cr_assert_eq(kb_backend_get(ro, KB_OBJ_PACK, "abcdef", 0, 0, &out, &err), 0);
        kb_backend_close(ro);

        snap_tree(repo, after);
        cr_assert_eq(after->n, before->n, "open added or removed entries");
        for (int i = 0; i < before->n; i++) {
                cr_assert_str_eq(after->e[i].path, before->e[i].path);
                cr_assert(ts_eq(after->e[i].st.st_mtim, before->e[i].st.st_mtim), "%s modified",
                          before->e[i].path);
                cr_assert(ts_eq(after->e[i].st.st_ctim, before->e[i].st.st_ctim), "%s changed",
                          before->e[i].path);
                cr_assert_eq(after->e[i].st.st_size, before->e[i].st.st_size);
                cr_assert_eq(after->e[i].st.st_mode, before->e[i].st.st_mode);
        }
        kb_buf_free(&out);
        free(before);
        free(after);
}

Test(fs_backend, read_only_refuses_writes)
{
        struct kb_buf out = KB_BUF_INIT;
        uint64_t size;

        cr_assert_eq(kb_backend_put(be, KB_OBJ_KEY, "k1", "key", 3, &err), 0);
        be->read_only = 1;
        kb_err_clear(&err);
        cr_assert_eq(kb_backend_put(be, KB_OBJ_KEY, "k2", "key", 3, &err), -EROFS);
        cr_assert_eq(err.code, -EROFS);
        cr_assert_not_null(strstr(err.msg, "read-only"), "%s", err.msg);
        cr_assert_not_null(strstr(err.msg, "keys/k2"), "%s", err.msg);
        cr_assert_eq(kb_backend_remove(be, KB_OBJ_KEY, "k1", &err), -EROFS);
        /* reads still work and nothing was written or removed */
        cr_assert_eq(kb_backend_get(be, KB_OBJ_KEY, "k1", 0, 0, &out, &err), 0);
        cr_assert_eq(kb_backend_stat(be, KB_OBJ_KEY, "k2", &size, &err), KB_ENOTFOUND);
        kb_buf_free(&out);
}

/* Permission bits do not bind root, so this can only run as an ordinary user. */
Test(fs_backend, unwritable_dir_detected_as_read_only)
{
        struct kb_backend *ro = NULL;

        if (geteuid() == 0) {
                teardown(); /* a skipped test does not run .fini */
                cr_skip_test("running as root: permission bits are not enforced");
        }
        cr_assert_eq(chmod(repo, 0555), 0);
        cr_assert_eq(kb_fs_backend_open(repo, 0, &ro, &err), 0, "%s", err.msg);
        cr_assert_eq(ro->read_only, 1);
        cr_assert_eq(kb_backend_put(ro, KB_OBJ_MARKER, NULL, "x", 1, &err), -EROFS);
        kb_backend_close(ro);
}

Test(fs_backend, open_missing_or_not_a_directory)
{
        struct kb_backend *b = (struct kb_backend *)1;
        char path[512];

        snprintf(path, sizeof(path), "%s/nope", tmpdir);
        kb_err_clear(&err);
        cr_assert_eq(kb_fs_backend_open(path, 0, &b, &err), KB_ENOTFOUND);
        cr_assert_null(b);
        cr_assert_not_null(strstr(err.msg, "does not exist"), "%s", err.msg);
        cr_assert_not_null(strstr(err.msg, path), "%s", err.msg);
        cr_assert_eq(access(path, F_OK), -1, "open without create made the directory");

        snprintf(path, sizeof(path), "%s/config", repo);
        cr_assert_eq(kb_backend_put(be, KB_OBJ_CONFIG, NULL, "c", 1, &err), 0);
        cr_assert_eq(kb_fs_backend_open(path, 0, &b, &err), KB_ENOTFOUND);

        /* create makes only the last component */
        snprintf(path, sizeof(path), "%s/a/b", tmpdir);
        cr_assert_lt(kb_fs_backend_open(path, 1, &b, &err), 0);
        cr_assert_null(b);
        cr_assert_not_null(strstr(err.msg, path), "%s", err.msg);

        /* create on an existing repository is fine and keeps its objects */
        cr_assert_eq(kb_fs_backend_open(repo, 1, &b, &err), 0, "%s", err.msg);
        cr_assert_eq(kb_backend_stat(b, KB_OBJ_CONFIG, NULL, NULL, &err), 0);
        kb_backend_close(b);
}

Test(fs_backend, location_dispatch)
{
        struct kb_backend *b = NULL;
        char loc[512];

        cr_assert_eq(kb_backend_put(be, KB_OBJ_MARKER, NULL, "m", 1, &err), 0);
        cr_assert_eq(kb_backend_open(repo, 0, &b, &err), 0, "%s", err.msg);
        cr_assert_eq(kb_backend_stat(b, KB_OBJ_MARKER, NULL, NULL, &err), 0);
        kb_backend_close(b);

        snprintf(loc, sizeof(loc), "file:%s", repo);
        cr_assert_eq(kb_backend_open(loc, 0, &b, &err), 0, "%s", err.msg);
        cr_assert_eq(kb_backend_stat(b, KB_OBJ_MARKER, NULL, NULL, &err), 0);
        kb_backend_close(b);

        snprintf(loc, sizeof(loc), "file://%s", repo);
        cr_assert_eq(kb_backend_open(loc, 0, &b, &err), 0, "%s", err.msg);
        kb_backend_close(b);

        snprintf(loc, sizeof(loc), "file:%s/new", tmpdir);
        cr_assert_eq(kb_backend_open(loc, 1, &b, &err), 0, "%s", err.msg);
        kb_backend_close(b);
        snprintf(loc, sizeof(loc), "%s/new/keys", tmpdir);
        cr_assert_eq(access(loc, F_OK), 0);

        b = (struct kb_backend *)1;
        kb_err_clear(&err);
        cr_assert_eq(kb_backend_open("s3:my-bucket/prefix", 1, &b, &err), KB_EUSAGE);
        cr_assert_null(b);
        /* "s3:" goes to the S3 backend, which wants a URL. */
        cr_assert(strstr(err.msg, "s3:https://HOST") != NULL, "%s", err.msg);
        cr_assert_eq(kb_backend_open("", 0, &b, &err), KB_EUSAGE);
        cr_assert_eq(kb_backend_open("file:", 0, &b, &err), KB_EUSAGE);
}

/* ---- concurrency ---- */

struct writer {
        struct kb_backend *be;
        int id;
        int failures;
        char msg[KB_ERR_MSG_MAX];
};

static void obj_name(int thread, int i, char *out, size_t n)
{
        /* the prefix mixes threads into the same data/xx directories */
        snprintf(out, n, "%02x%02x%06x", (i * 13) & 0xff, thread, i);
}

static void *writer_main(void *arg)
{
        struct writer *w = arg;
        struct kb_err e;
        char name[32];

        for (int i = 0; i < 200; i++) {
                obj_name(w->id, i, name, sizeof(name));
                if (kb_backend_put(w->be, KB_OBJ_PACK, name, name, strlen(name), &e) != 0) {
                        w->failures++;
                        memcpy(w->msg, e.msg, sizeof(w->msg));
                }
        }
        return NULL;
}

Test(fs_backend, concurrent_puts_all_land)
{
        pthread_t th[4];
        struct writer w[4];
        struct collected *c = calloc(1, sizeof(*c));
        struct kb_buf out = KB_BUF_INIT;
        char name[32];

        for (int t = 0; t < 4; t++) {
                w[t] = (struct writer){.be = be, .id = t};
                cr_assert_eq(pthread_create(&th[t], NULL, writer_main, &w[t]), 0);
        }
        for (int t = 0; t < 4; t++) {
                pthread_join(th[t], NULL);
                cr_assert_eq(w[t].failures, 0, "thread %d: %s", t, w[t].msg);
        }
        cr_assert_eq(kb_backend_list(be, KB_OBJ_PACK, collect_cb, c, &err), 0);
        cr_assert_eq(c->n, 800);
        for (int t = 0; t < 4; t++) {
                for (int i = 0; i < 200; i++) {
                        obj_name(t, i, name, sizeof(name));
                        kb_buf_reset(&out);
                        cr_assert_eq(kb_backend_get(be, KB_OBJ_PACK, name, 0, 0, &out, &err), 0,
                                     "%s", err.msg);
                        cr_assert_eq(out.len, strlen(name));
                        cr_assert_eq(memcmp(out.data, name, out.len), 0);
                }
        }
        cr_assert_eq(count_temp(repo), 0);
        kb_buf_free(&out);
        free(c);
}

/* Several threads racing to create the same object: exactly one wins, the rest see -EEXIST. */
static void *racer_main(void *arg)
{
        struct writer *w = arg;
        struct kb_err e;
        char body[16];

        snprintf(body, sizeof(body), "racer-%d", w->id);
        w->failures = kb_backend_put(w->be, KB_OBJ_SNAPSHOT, "contested", body, strlen(body), &e);
        return NULL;
}

Test(fs_backend, racing_puts_one_winner)
{
        pthread_t th[4];
        struct writer w[4];
        struct kb_buf out = KB_BUF_INIT;
        int wins = 0, winner = -1;

        for (int t = 0; t < 4; t++) {
                w[t] = (struct writer){.be = be, .id = t};
                cr_assert_eq(pthread_create(&th[t], NULL, racer_main, &w[t]), 0);
        }
        for (int t = 0; t < 4; t++) {
                pthread_join(th[t], NULL);
                if (w[t].failures == 0) {
                        wins++;
                        winner = t;
                } else {
                        cr_assert_eq(w[t].failures, -EEXIST);
                }
        }
        cr_assert_eq(wins, 1);
        cr_assert_eq(kb_backend_get(be, KB_OBJ_SNAPSHOT, "contested", 0, 0, &out, &err), 0);
        char expect[32];
        snprintf(expect, sizeof(expect), "racer-%d", winner);
        cr_assert_eq(out.len, strlen(expect));
        cr_assert_eq(memcmp(out.data, expect, out.len), 0);
        cr_assert_eq(count_temp(repo), 0);
        kb_buf_free(&out);
}

/* How many of a file's pages are in the page cache. */
static size_t cached_pages(const char *path, size_t *total)
{
        int fd = open(path, O_RDONLY);
        struct stat st;
        size_t page = (size_t)sysconf(_SC_PAGESIZE), n, count = 0;
        unsigned char *vec;
        void *m;

        cr_assert_geq(fd, 0);
        cr_assert_eq(fstat(fd, &st), 0);
        n = ((size_t)st.st_size + page - 1) / page;
        m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        cr_assert_neq(m, MAP_FAILED);
        vec = malloc(n);
        cr_assert_eq(mincore(m, (size_t)st.st_size, vec), 0);
        for (size_t i = 0; i < n; i++)
                count += vec[i] & 1;
        free(vec);
        munmap(m, (size_t)st.st_size);
        close(fd);
        *total = n;
        return count;
}

/* Packs go around the page cache (O_DIRECT) when their buffer is page-aligned, with the tail that
 * is not a whole block written through it; a misaligned buffer, or a file system that refuses
 * O_DIRECT (tmpfs), writes through the cache. Either way the bytes round-trip. */
static void large_objects_in(const char *base)
{
        const size_t sizes[] = {(1u << 20) + 123, 3u << 20, (2u << 20) - 1};
        char dir[128], probe[160], path[512], name[65];
        struct kb_backend *b;
        struct statfs fs;
        int direct;

        snprintf(dir, sizeof(dir), "%s/kb-fs-direct-XXXXXX", base);
        cr_assert_not_null(mkdtemp(dir));
        snprintf(probe, sizeof(probe), "%s/probe", dir);
        /* Pages of tmpfs are always in memory, O_DIRECT or not. */
        cr_assert_eq(statfs(dir, &fs), 0);
        direct = open(probe, O_WRONLY | O_CREAT | O_DIRECT, 0600);
        if (direct >= 0)
                close(direct);
        direct = direct >= 0 && fs.f_type != TMPFS_MAGIC && fs.f_type != RAMFS_MAGIC;
        snprintf(probe, sizeof(probe), "%s/repo", dir);
        cr_assert_eq(kb_fs_backend_open(probe, 1, &b, &err), 0, "%s", err.msg);
        for (size_t k = 0; k < 3; k++) {
                for (int misalign = 0; misalign < 2; misalign++) {
                        struct kb_buf in = KB_BUF_INIT, out = KB_BUF_INIT;
                        size_t len = sizes[k], cached, pages;
                        uint8_t *body;

                        cr_assert_eq(kb_buf_reserve_aligned(&in, len + 1), 0);
                        cr_assert_eq((uintptr_t)in.data % 4096, 0);
                        body = in.data + misalign;
                        for (size_t i = 0; i < len; i++)
                                body[i] = (uint8_t)(i * 131 + (i >> 12) + k);
                        snprintf(name, sizeof(name), "%064zx", k * 2 + (size_t)misalign + 1);
                        cr_assert_eq(kb_backend_put(b, KB_OBJ_PACK, name, body, len, &err), 0, "%s",
                                     err.msg);
                        snprintf(path, sizeof(path), "%s/data/%.2s/%s", probe, name, name);
                        cached = cached_pages(path, &pages);
                        if (direct && !misalign)
                                cr_assert_leq(cached, 1, "%zu of %zu pages in the cache", cached,
                                              pages);
                        cr_assert_eq(kb_backend_get(b, KB_OBJ_PACK, name, 0, 0, &out, &err), 0,
                                     "%s", err.msg);
                        cr_assert_eq(out.len, len);
                        cr_assert_eq(memcmp(out.data, body, len), 0, "size %zu, misaligned %d", len,
                                     misalign);
                        kb_buf_free(&in);
                        kb_buf_free(&out);
                }
        }
        kb_backend_close(b);
        rm_rf(dir);
}

Test(fs_backend, large_objects_direct_and_buffered)
{
        large_objects_in("/tmp");
        if (access("/dev/shm", W_OK) == 0)
                large_objects_in("/dev/shm");
}
