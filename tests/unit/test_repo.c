/* test_repo.c - repository init/open, blob storage through packs and the index, snapshots. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keys.h"
#include "repo.h"
#include "repo_internal.h"
#include "saver.h"

static char dir[64];
static const struct kb_kdf_params fast = {1, 8192};

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
        (void)st, (void)flag, (void)f;
        return remove(p);
}

static void setup(void)
{
        strcpy(dir, "/tmp/kbtest-repo-XXXXXX");
        cr_assert_not_null(mkdtemp(dir));
        strcat(dir, "/r");
}

static void teardown(void)
{
        dir[strlen(dir) - 2] = '\0';
        nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(repo, .init = setup, .fini = teardown);

static struct kb_repo *open_ok(void)
{
        struct kb_repo *r = NULL;
        struct kb_err e = {0};

        cr_assert_eq(kb_repo_open(dir, "pw", 2, 0, &r, &e), 0, "%s", e.msg);
        return r;
}

Test(repo, init_then_wrong_password)
{
        struct kb_repo *r = NULL;
        struct kb_err e = {0};

        cr_assert_eq(kb_repo_init(dir, "pw", 2, &fast, NULL, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_repo_init(dir, "pw", 2, &fast, NULL, &e), -EEXIST);
        cr_assert_eq(kb_repo_open(dir, "nope", 4, 0, &r, &e), KB_EAUTH);
        cr_assert_str_eq(e.msg, "wrong password");
        r = open_ok();
        kb_repo_close(r);
}

/* A file beside the key files that is not one (a README) is no key: a wrong password still says
 * so, whichever the listing hands over first, the right one opens, and `key list` shows one key. */
Test(repo, stray_file_in_keys_is_not_a_key)
{
        struct kb_key_info *keys = NULL;
        struct kb_repo *r = NULL;
        size_t n = 0;
        struct kb_err e = {0};
        char path[128];
        FILE *f;

        cr_assert_eq(kb_repo_init(dir, "pw", 2, &fast, NULL, &e), 0, "%s", e.msg);
        for (int i = 0; i < 2; i++) {
                snprintf(path, sizeof(path), "%s/keys/%s", dir, i ? "zz-notes" : "00-README");
                f = fopen(path, "w");
                cr_assert_not_null(f, "%s", path);
                fputs("not a key file\n", f);
                fclose(f);
        }
        cr_assert_eq(kb_repo_open(dir, "nope", 4, 0, &r, &e), KB_EAUTH, "%s", e.msg);
        cr_assert_str_eq(e.msg, "wrong password");
        r = open_ok();
        cr_assert_eq(kb_repo_key_list(r, &keys, &n, &e), 0, "%s", e.msg);
        cr_expect_eq(n, 1, "the strays are listed as keys");
        free(keys);
        kb_repo_close(r);
}

/* init --id-hash decides how every chunk is named, for the repository's life: what is stored in
 * its config comes back at open and names the chunks (default: keyed BLAKE3). */
Test(repo, id_hash_is_chosen_at_init_and_kept)
{
        static const struct {
                const char *arg;
                enum kb_id_hash want, other;
        } cases[] = {{NULL, KB_ID_BLAKE3, KB_ID_HMAC_SHA256},
                     {"keyed-blake3", KB_ID_BLAKE3, KB_ID_HMAC_SHA256},
                     {"hmac-sha256", KB_ID_HMAC_SHA256, KB_ID_BLAKE3}};
        char path[96];
        struct kb_err e = {0};

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uint8_t got[KB_ID_LEN], want[KB_ID_LEN], other[KB_ID_LEN];
                struct kb_repo *r = NULL;

                snprintf(path, sizeof(path), "%s%zu", dir, i);
                cr_assert_eq(kb_repo_init(path, "pw", 2, &fast, cases[i].arg, &e), 0, "%s", e.msg);
                cr_assert_eq(kb_repo_open(path, "pw", 2, 0, &r, &e), 0, "%s", e.msg);
                kb_repo_blob_id(r, "chunk", 5, got);
                kb_crypto_blob_id(cases[i].want, r->master.id_key, "chunk", 5, want);
                kb_crypto_blob_id(cases[i].other, r->master.id_key, "chunk", 5, other);
                cr_assert(memcmp(got, want, KB_ID_LEN) == 0, "--id-hash %s: wrong hash",
                          cases[i].arg ? cases[i].arg : "(default)");
                cr_assert(memcmp(got, other, KB_ID_LEN) != 0);
                kb_repo_close(r);
        }
        snprintf(path, sizeof(path), "%sx", dir);
        cr_assert_eq(kb_repo_init(path, "pw", 2, &fast, "sha1", &e), -EINVAL);
        cr_assert(strstr(e.msg, "unknown id hash"), "%s", e.msg);
        cr_assert_eq(access(path, F_OK), -1, "a refused init left %s behind", path);
}

Test(repo, open_missing_is_clear)
{
        struct kb_repo *r = NULL;
        struct kb_err e = {0};

        cr_assert_lt(kb_repo_open(dir, "pw", 2, 0, &r, &e), 0);
        cr_assert_neq(e.msg[0], '\0');
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
        randombytes_buf_deterministic(p, n, (const uint8_t[32]){(uint8_t)seed, 1, 2, 3});
}

/* Save many blobs through the saver, reopen, and read each back. */
Test(repo, blobs_round_trip_and_dedup)
{
        enum { N = 300, SZ = 100000 };
        static uint8_t ids[N][KB_ID_LEN];
        struct kb_saver_stats st;
        struct kb_saver *s;
        struct kb_saver_group *g;
        struct kb_repo *r;
        struct kb_err e = {0};
        int i;

        cr_assert_eq(kb_repo_init(dir, "pw", 2, &fast, NULL, &e), 0, "%s", e.msg);
        r = open_ok();
        cr_assert_eq(kb_saver_new(r, 2, 1 << 20, &s, &e), 0);
        g = kb_saver_group_new(s);
        for (i = 0; i < N; i++) {
                uint8_t *p = malloc(SZ);

                fill(p, SZ, (unsigned)(i % 200)); /* 100 duplicates */
                if (i % 3 == 0)
                        memset(p, 'a', SZ / 2); /* compressible */
                cr_assert_eq(kb_saver_submit(s, g, KB_BLOB_DATA, p, SZ, ids[i], &e), 0);
        }
        cr_assert_eq(kb_saver_group_wait(g, &e), 0, "%s", e.msg);
        kb_saver_group_free(g);
        kb_saver_get_stats(s, &st);
        cr_assert_eq(kb_saver_free(s, &e), 0);
        cr_assert_eq(st.blobs, N);
        cr_assert_lt(st.blobs_new, N); /* duplicates were found */
        cr_assert_eq(kb_repo_flush(r, &e), 0, "%s", e.msg);
        kb_repo_close(r);

        r = open_ok();
        for (i = 0; i < N; i++) {
                struct kb_buf b = KB_BUF_INIT;
                uint8_t *want = malloc(SZ);

                fill(want, SZ, (unsigned)(i % 200));
                if (i % 3 == 0)
                        memset(want, 'a', SZ / 2);
                cr_assert_eq(kb_repo_blob_load(r, ids[i], &b, &e), 0, "%d: %s", i, e.msg);
                cr_assert_eq(b.len, SZ);
                cr_assert(memcmp(b.data, want, SZ) == 0);
                kb_buf_free(&b);
                free(want);
        }
        kb_repo_close(r);
}

/* An index entry that points at another authentic blob of the same repository (a bug, or an
 * index edited by someone holding the key) must not restore the other blob's bytes: the seal
 * binds each blob's id. */
Test(repo, blob_read_from_the_wrong_place_is_refused)
{
        static const char a[] = "the first chunk's bytes", b[] = "the second chunk's bytes";
        uint8_t ida[KB_ID_LEN], idb[KB_ID_LEN];
        struct kb_index_entry *ea, *eb, saved;
        struct kb_buf out = KB_BUF_INIT;
        struct kb_repo *r;
        struct kb_err e = {0};

        cr_assert_eq(kb_repo_init(dir, "pw", 2, &fast, NULL, &e), 0, "%s", e.msg);
        r = open_ok();
        kb_repo_blob_id(r, a, sizeof(a), ida);
        kb_repo_blob_id(r, b, sizeof(b), idb);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, ida, a, sizeof(a), NULL, &e), 0);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, idb, b, sizeof(b), NULL, &e), 0);
        cr_assert_eq(kb_repo_flush(r, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_repo_blob_load(r, ida, &out, &e), 0, "%s", e.msg);
        cr_assert(out.len == sizeof(a) && memcmp(out.data, a, sizeof(a)) == 0);
        kb_buf_reset(&out);

        ea = kb_index_lookup_mut(r->index, ida);
        eb = kb_index_lookup_mut(r->index, idb);
        cr_assert(ea && eb);
        saved = *ea;
        ea->pack = eb->pack;
        ea->offset = eb->offset;
        ea->length = eb->length;
        ea->raw_length = eb->raw_length;
        cr_assert_eq(kb_repo_blob_load(r, ida, &out, &e), KB_ECORRUPT);
        cr_assert(strstr(e.msg, "authentication failed"), "%s", e.msg);
        cr_assert_eq(out.len, 0);
        *ea = saved;
        kb_buf_free(&out);
        kb_repo_close(r);
}

/* Compressible chunks shrink; incompressible ones are stored raw (the probe of their first 64 KiB
 * gives up), and so are tiny ones and ones saved as already compressed; level 0 stores
 * everything raw. Each still loads back byte for byte. */
Test(repo, compression_levels_and_incompressible_chunks)
{
        enum { SZ = 1 << 20 };
        static uint8_t text[SZ], noise[SZ], gz[64 << 10];
        struct kb_save_result res;
        struct kb_buf out = KB_BUF_INIT;
        uint8_t id[KB_ID_LEN];
        struct kb_repo *r;
        struct kb_err e = {0};

        for (size_t i = 0; i < SZ; i++)
                text[i] = "kbackup compresses repeated words "[i % 34];
        randombytes_buf(noise, SZ);
        cr_assert_eq(kb_repo_init(dir, "pw", 2, &fast, NULL, &e), 0, "%s", e.msg);
        r = open_ok();
        kb_repo_blob_id(r, text, SZ, id);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, id, text, SZ, &res, &e), 0);
        cr_assert(res.added && res.stored_bytes < SZ / 20, "%llu",
                  (unsigned long long)res.stored_bytes);
        kb_repo_blob_id(r, noise, SZ, id);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, id, noise, SZ, &res, &e), 0);
        cr_assert_eq(res.stored_bytes, SZ + 1 + KB_SEAL_OVERHEAD);
        /* At a slow level the probe of the first 64 KiB gives up on noise... */
        kb_repo_set_compression(r, 9);
        noise[0] ^= 1;
        kb_repo_blob_id(r, noise, SZ, id);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, id, noise, SZ, &res, &e), 0);
        cr_assert_eq(res.stored_bytes, SZ + 1 + KB_SEAL_OVERHEAD);
        /* ...but noise after a compressible start is compressed as a whole (the probe passes). */
        memcpy(noise, text, 128 << 10);
        kb_repo_blob_id(r, noise, SZ, id);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, id, noise, SZ, &res, &e), 0);
        cr_assert_lt(res.stored_bytes, SZ - (100 << 10));
        /* A blob too small to be worth a zstd frame is stored raw, one just above it is not. */
        kb_repo_blob_id(r, text + 1, 511, id);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, id, text + 1, 511, &res, &e), 0);
        cr_assert_eq(res.stored_bytes, 511 + 1 + KB_SEAL_OVERHEAD);
        kb_repo_blob_id(r, text + 1, 512, id);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, id, text + 1, 512, &res, &e), 0);
        cr_assert_lt(res.stored_bytes, 200);
        /* A chunk its caller knows to be compressed already (a gzip file's: the volume backup
         * sniffs) is not tried, however well it would compress; without the flag it shrinks. */
        memcpy(gz, text, sizeof(gz));
        memcpy(gz, "\x1f\x8b\x08", 3);
        kb_repo_blob_id(r, gz, sizeof(gz), id);
        cr_assert_eq(kb_repo_blob_save_flags(r, KB_BLOB_DATA, KB_SAVE_NO_COMPRESS, id, gz,
                                             sizeof(gz), &res, &e),
                     0);
        cr_assert_eq(res.stored_bytes, sizeof(gz) + 1 + KB_SEAL_OVERHEAD);
        gz[0] = 0;
        kb_repo_blob_id(r, gz, sizeof(gz), id);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, id, gz, sizeof(gz), &res, &e), 0);
        cr_assert_lt(res.stored_bytes, sizeof(gz) / 20);
        gz[0] = 0x1f;
        kb_repo_set_compression(r, 0);
        text[0] ^= 1;
        kb_repo_blob_id(r, text, SZ, id);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, id, text, SZ, &res, &e), 0);
        cr_assert_eq(res.stored_bytes, SZ + 1 + KB_SEAL_OVERHEAD);
        cr_assert_eq(kb_repo_flush(r, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_repo_blob_load(r, id, &out, &e), 0, "%s", e.msg);
        cr_assert(out.len == SZ && memcmp(out.data, text, SZ) == 0);
        kb_buf_reset(&out);
        kb_repo_blob_id(r, noise, SZ, id);
        cr_assert_eq(kb_repo_blob_load(r, id, &out, &e), 0, "%s", e.msg);
        cr_assert(out.len == SZ && memcmp(out.data, noise, SZ) == 0);
        kb_buf_reset(&out);
        kb_repo_blob_id(r, gz, sizeof(gz), id);
        cr_assert_eq(kb_repo_blob_load(r, id, &out, &e), 0, "%s", e.msg);
        cr_assert(out.len == sizeof(gz) && memcmp(out.data, gz, sizeof(gz)) == 0);
        kb_buf_free(&out);
        kb_repo_close(r);
}

static int first_pack(const char *name, uint64_t size, void *arg)
{
        (void)size;
        strcpy(arg, name);
        return 1;
}

Test(repo, corrupted_byte_is_detected)
{
        uint8_t id[KB_ID_LEN], data[4096];
        char pack[KB_ID_HEX_LEN + 1], path[512];
        struct kb_buf b = KB_BUF_INIT;
        struct kb_repo *r;
        struct kb_err e = {0};
        int fd;
        uint8_t c;

        cr_assert_eq(kb_repo_init(dir, "pw", 2, &fast, NULL, &e), 0, "%s", e.msg);
        r = open_ok();
        fill(data, sizeof(data), 7);
        kb_repo_blob_id(r, data, sizeof(data), id);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, id, data, sizeof(data), NULL, &e), 0);
        cr_assert_eq(kb_repo_flush(r, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_backend_list(kb_repo_backend(r), KB_OBJ_PACK, first_pack, pack, &e), 1);
        kb_repo_close(r);

        snprintf(path, sizeof(path), "%s/data/%.2s/%s", dir, pack, pack);
        fd = open(path, O_RDWR);
        cr_assert_geq(fd, 0, "%s", path);
        cr_assert_eq(pread(fd, &c, 1, 100), 1);
        c ^= 0x10;
        cr_assert_eq(pwrite(fd, &c, 1, 100), 1);
        close(fd);

        r = open_ok();
        cr_assert_eq(kb_repo_blob_load(r, id, &b, &e), KB_ECORRUPT);
        cr_assert(strstr(e.msg, "authentication failed") != NULL, "%s", e.msg);
        kb_buf_free(&b);
        kb_repo_close(r);
}

Test(repo, snapshots_save_list_find)
{
        Kbackup__Snapshot s = KBACKUP__SNAPSHOT__INIT;
        struct kb_snapshot_list l;
        char id1[KB_ID_HEX_LEN + 1], id2[KB_ID_HEX_LEN + 1], pre[9];
        struct kb_repo *r;
        struct kb_err e = {0};

        cr_assert_eq(kb_repo_init(dir, "pw", 2, &fast, NULL, &e), 0, "%s", e.msg);
        r = open_ok();
        s.kind = "volume";
        s.name = "ns/a";
        s.time_unix_nsec = 2000;
        cr_assert_eq(kb_repo_snapshot_save(r, &s, id1, &e), 0, "%s", e.msg);
        s.kind = "etcd";
        s.time_unix_nsec = 1000;
        cr_assert_eq(kb_repo_snapshot_save(r, &s, id2, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_repo_snapshot_list(r, &l, &e), 0, "%s", e.msg);
        cr_assert_eq(l.count, 2);
        cr_assert_str_eq(l.items[0].id, id2); /* oldest first */
        cr_assert_eq(kb_snapshot_list_find(&l, "latest", NULL, &e), 1);
        cr_assert_eq(kb_snapshot_list_find(&l, "latest", "etcd", &e), 0);
        memcpy(pre, id1, 8);
        pre[8] = 0;
        cr_assert_eq(kb_snapshot_list_find(&l, pre, NULL, &e), 1);
        cr_assert_eq(kb_snapshot_list_find(&l, "", NULL, &e), KB_ENOTFOUND);
        cr_assert_eq(kb_snapshot_list_find(&l, "zzzz", NULL, &e), KB_ENOTFOUND);
        kb_snapshot_list_free(&l);
        kb_repo_close(r);
}
