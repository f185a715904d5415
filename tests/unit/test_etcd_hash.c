/* test_etcd_hash.c - the sha256 trailer check on etcd snapshot streams, fed in any piece sizes. */
#include <criterion/criterion.h>

#include <sodium.h>
#include <string.h>

#include "etcd.h"

#define DB_LEN 100000

static uint8_t stream[DB_LEN + KB_ETCD_TRAILER_LEN];

static void setup(void)
{
        cr_assert_geq(sodium_init(), 0);
        randombytes_buf(stream, DB_LEN);
        crypto_hash_sha256(stream + DB_LEN, stream, DB_LEN);
}

TestSuite(etcd_hash, .init = setup);

/* Feed `len` bytes in pieces of `piece` (the last one shorter) and return final's code. */
static int feed(const uint8_t *data, size_t len, size_t piece)
{
        struct kb_etcd_hasher h;
        uint8_t trailer[KB_ETCD_TRAILER_LEN];
        struct kb_err err = {0};
        int rc;

        cr_assert_eq(kb_etcd_hasher_init(&h, &err), 0);
        for (size_t off = 0; off < len; off += piece)
                kb_etcd_hasher_update(&h, data + off, len - off < piece ? len - off : piece);
        rc = kb_etcd_hasher_final(&h, trailer, &err);
        if (rc == 0)
                cr_assert(memcmp(trailer, data + len - KB_ETCD_TRAILER_LEN, KB_ETCD_TRAILER_LEN) ==
                          0);
        else
                cr_assert_neq(err.msg[0], '\0');
        return rc;
}

Test(etcd_hash, accepts_an_intact_stream_in_any_pieces)
{
        size_t pieces[] = {1, 7, 31, 32, 33, 4096, 32768, sizeof(stream)};

        for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++)
                cr_assert_eq(feed(stream, sizeof(stream), pieces[i]), 0, "piece %zu", pieces[i]);
        cr_assert_eq(kb_etcd_verify_stream(stream, sizeof(stream), NULL), 0);
}

Test(etcd_hash, rejects_a_flipped_byte_anywhere)
{
        size_t spots[] = {0, DB_LEN / 2, DB_LEN - 1, DB_LEN, sizeof(stream) - 1};

        for (size_t i = 0; i < sizeof(spots) / sizeof(spots[0]); i++) {
                stream[spots[i]] ^= 0x01;
                cr_assert_eq(feed(stream, sizeof(stream), 32768), KB_ECORRUPT, "spot %zu",
                             spots[i]);
                cr_assert_eq(feed(stream, sizeof(stream), 5), KB_ECORRUPT, "spot %zu", spots[i]);
                stream[spots[i]] ^= 0x01;
        }
}

Test(etcd_hash, rejects_truncated_and_missing_trailer)
{
        struct kb_err err = {0};

        cr_assert_eq(feed(stream, sizeof(stream) - 1, 32768), KB_ECORRUPT);
        cr_assert_eq(feed(stream, DB_LEN, 32768), KB_ECORRUPT); /* trailer dropped */
        cr_assert_eq(kb_etcd_verify_stream(stream, 31, &err), KB_ECORRUPT);
        cr_assert(strstr(err.msg, "too short") != NULL, "%s", err.msg);
        cr_assert_eq(kb_etcd_verify_stream(stream, 0, &err), KB_ECORRUPT);
}

Test(etcd_hash, accepts_an_empty_database_with_its_trailer)
{
        uint8_t only[KB_ETCD_TRAILER_LEN];

        crypto_hash_sha256(only, NULL, 0);
        cr_assert_eq(kb_etcd_verify_stream(only, sizeof(only), NULL), 0);
}
