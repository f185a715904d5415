/* fuzz_bbolt.c - libFuzzer target: arbitrary bytes as an etcd backend database through the bbolt
 * reader and the key-space scan. Built with -DKB_FUZZ=ON and clang (tests/fuzz/CMakeLists.txt);
 * tests/integration/test_fuzz_bbolt.sh runs it for a bounded time from real snapshots. The build
 * defines FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, which makes the reader accept meta pages with
 * a wrong checksum, so mutations of the meta fields reach the code behind them. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bbolt.h"
#include "etcd_keyspace.h"

struct fz {
        struct kb_bbolt *db;
        uint64_t n;
};

static int count_cb(const struct kb_bbolt_item *it, void *arg)
{
        struct fz *f = arg;

        f->n += it->key_len + it->value_len;
        return 0;
}

/* Every bucket of the root, opened and walked in key order (the etcd scan uses file order). */
static int root_cb(const struct kb_bbolt_item *it, void *arg)
{
        struct fz *f = arg;
        struct kb_bbolt_bucket b = KB_BBOLT_BUCKET_INIT;
        struct kb_err e;

        if (it->is_bucket && kb_bbolt_bucket_open(f->db, NULL, it->key, it->key_len, &b, &e) == 0)
                kb_bbolt_foreach(f->db, &b, KB_BBOLT_KEY_ORDER, count_cb, f, &e);
        kb_bbolt_bucket_free(&b);
        return 0;
}

static int value_cb(const struct kb_etcd_entry *kv, const uint8_t *value, void *arg)
{
        uint64_t *sum = arg;

        if (kv->value_len)
                *sum += value[0] + value[kv->value_len - 1];
        return 0;
}

static int diff_cb(char op, const struct kb_etcd_entry *a, const struct kb_etcd_entry *b, void *arg)
{
        (void)op, (void)a, (void)b, (void)arg;
        __builtin_trap(); /* a key space differs from itself */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct fz f = {0};
        struct kb_etcd_keyspace *ks = NULL;
        struct kb_err e;
        uint64_t sum = 0;

        if (kb_bbolt_open_mem(data, size, &f.db, &e) < 0)
                return 0;
        kb_bbolt_foreach(f.db, NULL, KB_BBOLT_KEY_ORDER, root_cb, &f, &e);
        if (kb_etcd_keyspace_load(f.db, NULL, 0, &ks, &e) == 0) {
                size_t n = kb_etcd_keyspace_count(ks);

                kb_etcd_keyspace_each(ks, 1, value_cb, &sum, &e);
                kb_etcd_keyspace_diff(ks, ks, diff_cb, NULL);
                for (size_t i = 0; i < n; i++) {
                        const struct kb_etcd_entry *kv = kb_etcd_keyspace_at(ks, i);

                        if (kb_etcd_keyspace_find(ks, kv->key, kv->key_len) != kv)
                                __builtin_trap(); /* keys are unique and sorted */
                }
                kb_etcd_keyspace_free(ks);
        }
        kb_bbolt_close(f.db);
        return 0;
}
