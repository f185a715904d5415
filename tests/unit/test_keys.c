/* test_keys.c - key management: add, list, remove (never the last key nor the one in use),
 * change a password. */
#include "ops_testlib.h"

#include "keys.h"

TestSuite(keys, .init = ops_setup, .fini = ops_teardown);

static int try_open(const char *pw, struct kb_repo **out)
{
        struct kb_err e = {0};

        *out = NULL;
        return kb_repo_open(ops_dir, pw, strlen(pw), KB_REPO_NO_INDEX, out, &e);
}

static size_t list(struct kb_repo *r, struct kb_key_info **v)
{
        struct kb_err e = {0};
        size_t n = 0;

        cr_assert_eq(kb_repo_key_list(r, v, &n, &e), 0, "%s", e.msg);
        return n;
}

Test(keys, add_list_remove_round_trip)
{
        struct kb_repo *r = ops_open(), *r2;
        struct kb_key_info *v = NULL;
        char id[KB_ID_HEX_LEN + 1], first[KB_ID_HEX_LEN + 1];
        struct kb_err e = {0};
        size_t n;

        n = list(r, &v);
        cr_assert_eq(n, 1);
        cr_expect(v[0].current && v[0].readable);
        memcpy(first, v[0].id, sizeof(first));
        free(v);

        cr_assert_eq(kb_repo_key_add(r, "second", 6, &ops_fast, id, &e), 0, "%s", e.msg);
        n = list(r, &v);
        cr_assert_eq(n, 2);
        for (size_t i = 0; i < n; i++)
                cr_expect_eq(v[i].current, strcmp(v[i].id, first) == 0);
        free(v);

        /* Both passwords open the same repository: data saved under one reads under the
         * other. */
        cr_assert_eq(try_open("second", &r2), 0);
        n = list(r2, &v);
        for (size_t i = 0; i < n; i++)
                cr_expect_eq(v[i].current, strcmp(v[i].id, id) == 0);
        free(v);

        /* The key in use cannot be removed; the other one can, by prefix. */
        cr_assert_eq(kb_repo_key_remove(r2, id, &e), KB_EUSAGE);
        cr_expect(strstr(e.msg, "passwd"), "%s", e.msg);
        cr_assert_eq(kb_repo_key_remove(r2, "zz", &e), KB_ENOTFOUND);
        {
                char prefix[9];

                snprintf(prefix, sizeof(prefix), "%.8s", first);
                cr_assert_eq(kb_repo_key_remove(r2, prefix, &e), 0, "%s", e.msg);
        }
        kb_repo_close(r2);
        kb_repo_close(r);
        cr_assert_eq(try_open("pw", &r2), KB_EAUTH, "the removed password no longer opens");
        cr_assert_eq(try_open("second", &r2), 0);
        /* Now "second" is the last key: refused, whoever asks. */
        cr_assert_eq(kb_repo_key_remove(r2, id, &e), KB_EUSAGE);
        cr_expect(strstr(e.msg, "last key"), "%s", e.msg);
        kb_repo_close(r2);
}

Test(keys, passwd_replaces_the_key_in_use)
{
        struct kb_repo *r = ops_open(), *r2;
        struct kb_key_info *v = NULL;
        char id[KB_ID_HEX_LEN + 1], old[KB_ID_HEX_LEN + 1];
        struct kb_err e = {0};
        uint8_t blob[100] = {1, 2, 3}, bid[KB_ID_LEN];
        struct kb_buf got = KB_BUF_INIT;

        kb_repo_blob_id(r, blob, sizeof(blob), bid);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, bid, blob, sizeof(blob), NULL, &e), 0);
        cr_assert_eq(kb_repo_flush(r, &e), 0);
        list(r, &v);
        memcpy(old, v[0].id, sizeof(old));
        free(v);
        cr_assert_eq(kb_repo_key_passwd(r, "new password", 12, &ops_fast, id, &e), 0, "%s", e.msg);
        cr_expect_str_neq(id, old);
        cr_assert_eq(list(r, &v), 1);
        cr_expect_str_eq(v[0].id, id);
        cr_expect(v[0].current, "the new key is now the one in use");
        free(v);
        kb_repo_close(r);
        cr_assert_eq(try_open("pw", &r2), KB_EAUTH);
        cr_assert_eq(kb_repo_open(ops_dir, "new password", 12, 0, &r2, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_repo_blob_load(r2, bid, &got, &e), 0, "%s", e.msg);
        cr_assert_eq(memcmp(got.data, blob, sizeof(blob)), 0);
        kb_buf_free(&got);
        kb_repo_close(r2);
}

Test(keys, read_only_repository_refuses_changes)
{
        struct kb_repo *r = ops_open_flags(KB_REPO_READ_ONLY);
        char id[KB_ID_HEX_LEN + 1];
        struct kb_err e = {0};

        cr_assert_eq(kb_repo_key_add(r, "x", 1, &ops_fast, id, &e), -EROFS);
        cr_assert_eq(kb_repo_key_passwd(r, "x", 1, &ops_fast, id, &e), -EROFS);
        cr_assert_eq(ops_count(r, KB_OBJ_KEY), 1);
        kb_repo_close(r);
}
