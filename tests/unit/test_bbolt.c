/* test_bbolt.c - the bbolt reader and the etcd key space on real etcd snapshots: what the reader
 * finds must equal what etcdctl returned when the snapshot was taken (keys, values, revisions,
 * leases), through files, memory and repository chunks; damaged databases must fail with a
 * message, never crash. The snapshots are made once per run by tests/tools/etcd_fixture.sh. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bbolt.h"
#include "etcd.h"
#include "etcd.pb-c.h"
#include "etcd_keyspace.h"
#include "repo.h"

static char fx[256];

static void tools_path(char *out, size_t len, const char *name)
{
        const char *src = getenv("KB_SOURCE_DIR");

        if (src) {
                snprintf(out, len, "%s/tests/tools/%s", src, name);
        } else {
                /* __FILE__ is absolute under CMake: .../tests/unit/test_bbolt.c */
                char *slash;

                snprintf(out, len, "%s", __FILE__);
                *strrchr(out, '/') = '\0';
                slash = strrchr(out, '/');
                snprintf(slash, len - (size_t)(slash - out), "/tools/%s", name);
        }
}

static const char *fixture_base(pid_t runner, char *buf, size_t len)
{
        const char *t = getenv("TMPDIR");

        snprintf(buf, len, "%s/kbtest-bbolt-%d", t && *t ? t : "/tmp", (int)runner);
        return buf;
}

/* The snapshot files, made by the first test that needs them; the runner removes them at exit. */
static const char *fixture(void)
{
        char lock[300], done[300], script[512], cmd[1200];
        int fd;

        fixture_base(getppid(), fx, sizeof(fx));
        snprintf(done, sizeof(done), "%s/done", fx);
        snprintf(lock, sizeof(lock), "%s.lock", fx);
        fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0);
        flock(fd, LOCK_EX);
        if (access(done, F_OK) != 0) {
                tools_path(script, sizeof(script), "etcd_fixture.sh");
                snprintf(cmd, sizeof(cmd), "bash %s %s --owner %d >/dev/null", script, fx,
                         (int)getppid());
                cr_assert_eq(system(cmd), 0, "%s failed", cmd);
                close(open(done, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        }
        close(fd);
        return fx;
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
        char base[256], cmd[600];

        (void)stats;
        fixture_base(getpid(), base, sizeof(base));
        snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s.lock'", base, base);
        if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", base);
}

static char *fx_path(const char *name)
{
        static char p[4][400];
        static int k;
        char *out = p[k++ % 4];

        snprintf(out, sizeof(p[0]), "%s/%s", fixture(), name);
        return out;
}

static uint8_t *slurp(const char *path, size_t *len)
{
        FILE *f = fopen(path, "rb");
        uint8_t *d;
        long n;

        cr_assert_not_null(f, "cannot open %s", path);
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, 0, SEEK_SET);
        d = malloc((size_t)n + 1);
        cr_assert_not_null(d);
        cr_assert_eq(fread(d, 1, (size_t)n, f), (size_t)n);
        fclose(f);
        d[n] = 0;
        *len = (size_t)n;
        return d;
}

static long fx_number(const char *name)
{
        size_t n;
        char *s = (char *)slurp(fx_path(name), &n);
        long v = strtol(s, NULL, 10);

        free(s);
        return v;
}

/* ---- canonical dumps, as tests/tools/etcd_keyspace.py writes them ---- */

static int dump_line(const struct kb_etcd_entry *kv, const uint8_t *value, void *arg)
{
        FILE *f = arg;
        uint8_t h[crypto_hash_sha256_BYTES];

        for (size_t i = 0; i < kv->key_len; i++)
                fprintf(f, "%02x", kv->key[i]);
        crypto_hash_sha256(h, value, kv->value_len);
        fprintf(f, " %u ", kv->value_len);
        for (size_t i = 0; i < sizeof(h); i++)
                fprintf(f, "%02x", h[i]);
        fprintf(f, " %lld %lld %lld %lld\n", (long long)kv->create_revision,
                (long long)kv->mod_revision, (long long)kv->version, (long long)kv->lease);
        return 0;
}

static char *dump(struct kb_etcd_keyspace *ks)
{
        struct kb_err e = {0};
        char *s = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&s, &n);

        cr_assert_eq(kb_etcd_keyspace_each(ks, 0, dump_line, f, &e), 0, "%s", e.msg);
        fclose(f);
        return s;
}

/* Equal, or fail naming the first line that differs. */
static void assert_same_dump(const char *got, const char *want, const char *what)
{
        size_t i = 0, line = 1;

        while (got[i] && got[i] == want[i]) {
                if (got[i] == '\n')
                        line++;
                i++;
        }
        cr_assert(got[i] == want[i], "%s: dumps differ at line %zu:\n got: %.120s\nwant: %.120s",
                  what, line, got + i - (i && got[i - 1] != '\n' ? 1 : 0), want + i);
}

static struct kb_etcd_keyspace *load(struct kb_bbolt *db, const char *prefix)
{
        struct kb_etcd_keyspace *ks = NULL;
        struct kb_err e = {0};

        cr_assert_eq(kb_etcd_keyspace_load(db, prefix, prefix ? strlen(prefix) : 0, &ks, &e), 0,
                     "%s", e.msg);
        return ks;
}

static struct kb_bbolt *open_file(const char *name)
{
        struct kb_bbolt *db = NULL;
        struct kb_err e = {0};

        cr_assert_eq(kb_bbolt_open_file(fx_path(name), &db, &e), 0, "%s", e.msg);
        return db;
}

static void check_against(const char *dbname, const char *expect)
{
        struct kb_bbolt *db = open_file(dbname);
        struct kb_etcd_keyspace *ks = load(db, NULL);
        size_t n;
        char *want = (char *)slurp(fx_path(expect), &n), *got = dump(ks);

        assert_same_dump(got, want, dbname);
        free(got);
        free(want);
        kb_etcd_keyspace_free(ks);
        kb_bbolt_close(db);
}

TestSuite(bbolt, .timeout = 300);

Test(bbolt, small_snapshot_inline_bucket)
{
        struct kb_bbolt *db = open_file("small.db");
        struct kb_bbolt_bucket b = KB_BBOLT_BUCKET_INIT;
        struct kb_err e = {0};
        const struct kb_etcd_keyspace_info *info;
        struct kb_etcd_keyspace *ks;

        /* A handful of records fits in an inline bucket: the reader must take that path. */
        cr_assert_eq(kb_bbolt_bucket_open(db, NULL, "key", 3, &b, &e), 0, "%s", e.msg);
        cr_assert_eq(b.root, 0, "the small key bucket is expected inline");
        cr_assert_not_null(b.inline_page);
        kb_bbolt_bucket_free(&b);
        cr_assert_eq(kb_bbolt_bucket_open(db, NULL, "nope", 4, &b, &e), KB_ENOTFOUND);

        ks = load(db, NULL);
        info = kb_etcd_keyspace_info(ks);
        /* put /a, put /b, put /a, put /c, del /c on a fresh etcd (revision 1). */
        cr_assert_eq(info->revision, 6);
        cr_assert_eq(info->records, 5);
        cr_assert_eq(info->tombstones, 1);
        cr_assert_eq(kb_etcd_keyspace_count(ks), 2);
        cr_assert_eq(info->db.page_size, 4096);
        cr_assert_not_null(kb_etcd_keyspace_find(ks, "/a", 2));
        cr_assert_eq(kb_etcd_keyspace_find(ks, "/a", 2)->version, 2);
        cr_assert_null(kb_etcd_keyspace_find(ks, "/c", 2), "a deleted key is listed");
        kb_etcd_keyspace_free(ks);
        kb_bbolt_close(db);
        check_against("small.db", "small.expect");
}

Test(bbolt, big_snapshot_equals_etcdctl)
{
        struct kb_bbolt *db = open_file("big.db");
        struct kb_bbolt_bucket b = KB_BBOLT_BUCKET_INIT;
        struct kb_etcd_keyspace *ks = load(db, NULL);
        const struct kb_etcd_keyspace_info *info = kb_etcd_keyspace_info(ks);
        const struct kb_etcd_entry *kv;
        struct kb_buf v = KB_BUF_INIT;
        struct kb_err e = {0};
        size_t n;
        uint8_t *want;

        cr_assert_eq(kb_bbolt_bucket_open(db, NULL, "key", 3, &b, &e), 0, "%s", e.msg);
        cr_assert_neq(b.root, 0, "the big key bucket should be a tree");
        kb_bbolt_bucket_free(&b);
        cr_assert_eq(info->revision, fx_number("big.rev"));
        cr_assert_eq(info->compact_revision, fx_number("big.compact"));
        cr_assert_gt(info->consistent_index, 0);
        cr_assert_gt(kb_etcd_keyspace_count(ks), 2500);

        /* The 200 KB value spans overflow pages; it comes back byte for byte. */
        kv = kb_etcd_keyspace_find(ks, "/big/value", 10);
        cr_assert_not_null(kv);
        want = slurp(fx_path("big.value"), &n);
        cr_assert_eq(kb_etcd_keyspace_value(ks, kv, &v, &e), 0, "%s", e.msg);
        cr_assert_eq(v.len, n);
        cr_assert_eq(memcmp(v.data, want, n), 0);
        free(want);
        kb_buf_free(&v);

        kv = kb_etcd_keyspace_find(ks, "/registry/events/ns-1/ev-3", 26);
        cr_assert_not_null(kv);
        cr_assert_neq(kv->lease, 0, "leased key without its lease");
        kv = kb_etcd_keyspace_find(ks, "/odd/empty", 10);
        cr_assert(kv && kv->value_len == 0);
        cr_assert_null(kb_etcd_keyspace_find(ks, "/zzz/last", 9), "deleted key listed");
        cr_assert_null(kb_etcd_keyspace_find(ks, "/registry/pods/ns-0/pod-00007", 29),
                       "key deleted before the compaction listed");
        cr_assert_not_null(kb_etcd_keyspace_find(ks, "/registry/pods/ns-0/pod-00105", 29),
                           "key recreated after the compaction missing");
        kb_etcd_keyspace_free(ks);
        kb_bbolt_close(db);

        check_against("big.db", "big.expect");
        check_against("big2.db", "big2.expect");
}

Test(bbolt, prefix_filter)
{
        static const char prefix[] = "/registry/pods/ns-1/";
        struct kb_bbolt *db = open_file("big.db");
        struct kb_etcd_keyspace *ks = load(db, prefix);
        char hexp[64] = "", *got = dump(ks), *want, *line, *save = NULL;
        size_t n, k = 0, wn = 0;
        FILE *f;
        char *exp = (char *)slurp(fx_path("big.expect"), &n);

        for (size_t i = 0; prefix[i]; i++)
                sprintf(hexp + 2 * i, "%02x", (unsigned char)prefix[i]);
        f = open_memstream(&want, &wn);
        for (line = strtok_r(exp, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
                if (!strncmp(line, hexp, strlen(hexp))) {
                        fprintf(f, "%s\n", line);
                        k++;
                }
        fclose(f);
        cr_assert_gt(k, 100);
        cr_assert_eq(kb_etcd_keyspace_count(ks), k);
        assert_same_dump(got, want, "prefix");
        free(want);
        free(got);
        free(exp);
        kb_etcd_keyspace_free(ks);
        kb_bbolt_close(db);
}

struct walk_sum {
        uint64_t n, sum, lastlen;
        uint8_t last[64];
        int sorted;
};

static int sum_cb(const struct kb_bbolt_item *it, void *arg)
{
        struct walk_sum *s = arg;
        uint8_t h[8];
        uint64_t x;

        crypto_generichash(h, sizeof(h), it->value, it->value_len, it->key, it->key_len);
        memcpy(&x, h, 8);
        s->sum += x;
        if (s->n) {
                size_t m = s->lastlen < it->key_len ? s->lastlen : it->key_len;
                int c = memcmp(s->last, it->key, m);

                if (c > 0 || (c == 0 && s->lastlen >= it->key_len))
                        s->sorted = 0;
        }
        s->lastlen = it->key_len < 64 ? it->key_len : 64;
        memcpy(s->last, it->key, s->lastlen);
        s->n++;
        return 0;
}

Test(bbolt, walk_orders_agree)
{
        struct kb_bbolt *db = open_file("big.db");
        struct kb_bbolt_bucket b = KB_BBOLT_BUCKET_INIT;
        struct walk_sum ks = {.sorted = 1}, fs = {.sorted = 1};
        struct kb_err e = {0};

        cr_assert_eq(kb_bbolt_bucket_open(db, NULL, "key", 3, &b, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_bbolt_foreach(db, &b, KB_BBOLT_KEY_ORDER, sum_cb, &ks, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_bbolt_foreach(db, &b, KB_BBOLT_FILE_ORDER, sum_cb, &fs, &e), 0, "%s",
                     e.msg);
        cr_assert_gt(ks.n, 2500);
        cr_assert_eq(ks.n, fs.n);
        cr_assert_eq(ks.sum, fs.sum);
        cr_assert(ks.sorted, "key order walk is not in key order");
        cr_assert_not(fs.sorted, "file order walk happened to be sorted: the test shows nothing");
        kb_bbolt_bucket_free(&b);
        kb_bbolt_close(db);
}

struct seen {
        size_t n;
        uint8_t *mark;
        const struct kb_etcd_keyspace *ks;
};

static int seen_cb(const struct kb_etcd_entry *kv, const uint8_t *value, void *arg)
{
        struct seen *s = arg;
        size_t i = (size_t)(kv - kb_etcd_keyspace_at(s->ks, 0));

        (void)value;
        cr_assert_lt(i, kb_etcd_keyspace_count(s->ks));
        cr_assert_eq(s->mark[i], 0, "key visited twice");
        s->mark[i] = 1;
        s->n++;
        return 0;
}

Test(bbolt, each_in_file_order_visits_every_key)
{
        struct kb_bbolt *db = open_file("big.db");
        struct kb_etcd_keyspace *ks = load(db, NULL);
        struct seen s = {0, calloc(kb_etcd_keyspace_count(ks), 1), ks};
        struct kb_err e = {0};

        cr_assert_eq(kb_etcd_keyspace_each(ks, 1, seen_cb, &s, &e), 0, "%s", e.msg);
        cr_assert_eq(s.n, kb_etcd_keyspace_count(ks));
        free(s.mark);
        kb_etcd_keyspace_free(ks);
        kb_bbolt_close(db);
}

struct diffs {
        char out[4096];
        size_t len;
};

static int diff_cb(char op, const struct kb_etcd_entry *a, const struct kb_etcd_entry *b, void *arg)
{
        struct diffs *d = arg;
        const struct kb_etcd_entry *kv = b ? b : a;

        d->len += (size_t)snprintf(d->out + d->len, sizeof(d->out) - d->len, "%c %.*s\n", op,
                                   (int)kv->key_len, kv->key);
        cr_assert_lt(d->len, sizeof(d->out));
        return 0;
}

Test(bbolt, diff_lists_exactly_the_changes)
{
        struct kb_bbolt *a = open_file("big.db"), *b = open_file("big2.db");
        struct kb_etcd_keyspace *ka = load(a, NULL), *kb = load(b, NULL);
        struct kb_etcd_keyspace *pa = load(a, "/odd/"), *pb = load(b, "/odd/");
        struct diffs d = {0}, p = {0}, same = {0};
        const char *want = "~ /odd/empty\n+ /odd/new\n- /odd/with space\n";

        kb_etcd_keyspace_diff(ka, kb, diff_cb, &d);
        cr_assert_str_eq(d.out, want);
        kb_etcd_keyspace_diff(pa, pb, diff_cb, &p);
        cr_assert_str_eq(p.out, want);
        kb_etcd_keyspace_diff(ka, ka, diff_cb, &same);
        cr_assert_eq(same.len, 0);
        kb_etcd_keyspace_free(ka);
        kb_etcd_keyspace_free(kb);
        kb_etcd_keyspace_free(pa);
        kb_etcd_keyspace_free(pb);
        kb_bbolt_close(a);
        kb_bbolt_close(b);
}

Test(bbolt, kv_decode_matches_protobuf_c)
{
        uint8_t buf[512];

        srand(42);
        for (int iter = 0; iter < 2000; iter++) {
                Kbetcd__KeyValue m = KBETCD__KEY_VALUE__INIT, *u;
                struct kb_etcd_kv_wire w;
                uint8_t key[40], val[100];
                size_t n;

                for (size_t i = 0; i < sizeof(key); i++)
                        key[i] = (uint8_t)rand();
                for (size_t i = 0; i < sizeof(val); i++)
                        val[i] = (uint8_t)rand();
                m.key.data = key;
                m.key.len = (size_t)rand() % sizeof(key);
                m.value.data = val;
                m.value.len = (size_t)rand() % sizeof(val);
                m.create_revision = rand() % 3 ? rand() : -(int64_t)rand();
                m.mod_revision = (int64_t)rand() << 20;
                m.version = rand() % 5;
                m.lease = rand() % 2 ? (int64_t)rand() * rand() : 0;
                n = kbetcd__key_value__pack(&m, buf);
                /* Unknown fields (7: varint, 9: bytes, 10: fixed32, 11: fixed64) and a repeated
                 * field 4, which protobuf says overrides the first. */
                if (iter % 2) {
                        static const uint8_t extra[] = {
                            0x38, 0x96, 0x01, 0x4a, 0x02, 'h', 'i', 0x55, 1, 2,    3,   4,
                            0x59, 1,    2,    3,    4,    5,   6,   7,    8, 0x20, 0x09};
                        memcpy(buf + n, extra, sizeof(extra));
                        n += sizeof(extra);
                }
                u = kbetcd__key_value__unpack(NULL, n, buf);
                cr_assert_not_null(u);
                cr_assert_eq(kb_etcd_kv_decode(buf, n, &w), 0, "iteration %d", iter);
                cr_assert_eq(w.key_len, u->key.len);
                cr_assert(!w.key_len || !memcmp(buf + w.key_off, u->key.data, w.key_len));
                cr_assert_eq(w.value_len, u->value.len);
                cr_assert(!w.value_len || !memcmp(buf + w.value_off, u->value.data, w.value_len));
                cr_assert_eq(w.create_revision, u->create_revision);
                cr_assert_eq(w.mod_revision, u->mod_revision);
                cr_assert_eq(w.version, u->version);
                cr_assert_eq(w.lease, u->lease);
                kbetcd__key_value__free_unpacked(u, NULL);
                /* Every truncation that protobuf-c rejects, we reject too. */
                for (size_t cut = 0; cut < n; cut++) {
                        u = kbetcd__key_value__unpack(NULL, cut, buf);
                        if (!u)
                                cr_assert_lt(kb_etcd_kv_decode(buf, cut, &w), 0, "cut at %zu", cut);
                        else
                                kbetcd__key_value__free_unpacked(u, NULL);
                }
        }
}

static int open_mem(const uint8_t *d, size_t n, struct kb_etcd_keyspace **ks, struct kb_bbolt **db,
                    struct kb_err *e)
{
        int rc = kb_bbolt_open_mem(d, n, db, e);

        *ks = NULL;
        if (rc == 0)
                rc = kb_etcd_keyspace_load(*db, NULL, 0, ks, e);
        return rc;
}

static void close_mem(struct kb_etcd_keyspace *ks, struct kb_bbolt *db)
{
        kb_etcd_keyspace_free(ks);
        kb_bbolt_close(db);
}

Test(bbolt, meta_pages_damaged_or_missing)
{
        size_t n;
        uint8_t *d = slurp(fx_path("small.db"), &n);
        struct kb_etcd_keyspace *ks;
        struct kb_bbolt *db;
        struct kb_err e = {0};
        char *ref, *got;

        cr_assert_eq(open_mem(d, n, &ks, &db, &e), 0, "%s", e.msg);
        ref = dump(ks);
        close_mem(ks, db);

        /* One damaged meta page: the other one carries on (as bbolt does). */
        d[16 + 20] ^= 0x40; /* meta 0's root page */
        cr_assert_eq(open_mem(d, n, &ks, &db, &e), 0, "%s", e.msg);
        got = dump(ks);
        cr_assert_str_eq(got, ref);
        free(got);
        close_mem(ks, db);
        d[4096 + 16 + 20] ^= 0x40; /* and meta 1's */
        cr_assert_eq(open_mem(d, n, &ks, &db, &e), KB_ECORRUPT);
        cr_assert(strstr(e.msg, "meta"), "%s", e.msg);
        /* No magic anywhere: not a bbolt file. */
        memset(d, 0, 8192);
        cr_assert_eq(open_mem(d, n, &ks, &db, &e), KB_EFORMAT);
        cr_assert(strstr(e.msg, "not a bbolt"), "%s", e.msg);
        cr_assert_eq(open_mem((const uint8_t *)"hello", 5, &ks, &db, &e), KB_EFORMAT);
        free(ref);
        free(d);
}

Test(bbolt, truncated_files)
{
        size_t n;
        uint8_t *d = slurp(fx_path("big.db"), &n);
        const size_t cuts[] = {0, 10, 100, 4096, 4096 + 80, 8192 + 100, n / 2, n - 33};
        struct kb_etcd_keyspace *ks;
        struct kb_bbolt *db;
        struct kb_err e = {0};

        for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
                int rc = open_mem(d, cuts[i], &ks, &db, &e);

                cr_assert_lt(rc, 0, "a database cut at %zu bytes was accepted", cuts[i]);
                cr_assert(strstr(e.msg, "truncated") || strstr(e.msg, "not a bbolt"),
                          "cut at %zu: %s", cuts[i], e.msg);
                close_mem(ks, db);
        }
        /* Without the 32-byte sha256 trailer the database itself is whole. */
        cr_assert_eq(open_mem(d, n - 32, &ks, &db, &e), 0, "%s", e.msg);
        close_mem(ks, db);
        free(d);
}

/* Flip bytes, then read everything: each run must succeed or fail with a message. */
static void corrupt_runs(const char *name, int runs, unsigned seed, int *failed)
{
        size_t n;
        uint8_t *orig = slurp(fx_path(name), &n), *d = malloc(n);
        uint64_t pages = (n - 32) / 4096;

        srand(seed);
        for (int r = 0; r < runs; r++) {
                struct kb_etcd_keyspace *ks = NULL;
                struct kb_bbolt *db = NULL;
                struct kb_err e = {0};
                struct seen s = {0};
                int flips = 1 + rand() % 4, rc;

                memcpy(d, orig, n);
                for (int k = 0; k < flips; k++) {
                        uint64_t pg = (uint64_t)rand() % pages;
                        /* Mostly page headers and element arrays, where the structure is. */
                        size_t off = (size_t)(pg * 4096) +
                                     (size_t)(rand() % 3 ? rand() % 160 : rand() % 4096);

                        d[off] ^= (uint8_t)(1u << (rand() % 8));
                        if (rand() % 4 == 0)
                                d[off] = (uint8_t)rand();
                }
                rc = open_mem(d, n, &ks, &db, &e);
                if (rc == 0) {
                        s.mark = calloc(kb_etcd_keyspace_count(ks) + 1, 1);
                        s.ks = ks;
                        rc = kb_etcd_keyspace_each(ks, 1, seen_cb, &s, &e);
                        free(s.mark);
                }
                if (rc < 0) {
                        cr_assert(e.msg[0], "run %d: error %d without a message", r, rc);
                        (*failed)++;
                }
                close_mem(ks, db);
        }
        free(d);
        free(orig);
}

Test(bbolt, corruptions_fail_cleanly)
{
        int failed_small = 0, failed_big = 0;

        corrupt_runs("small.db", 300, 1, &failed_small);
        corrupt_runs("big.db", 200, 2, &failed_big);
        cr_log_info("damaged databases refused: small %d/300, big %d/200", failed_small,
                    failed_big);
        /* Enough of them must hit the structure for the test to show anything. */
        cr_assert_gt(failed_small, 15, "only %d of 300 damaged small databases failed",
                     failed_small);
        cr_assert_gt(failed_big, 20, "only %d of 200 damaged big databases failed", failed_big);
}

/* The database stored as repository chunks, read back without a file. */
Test(bbolt, snapshot_chunks_in_repository)
{
        char dir[64] = "/tmp/kbtest-bbolt-repo-XXXXXX", rdir[80], cmd[200];
        static const struct kb_kdf_params fast = {1, 8192};
        struct kb_repo *repo = NULL;
        struct kb_err e = {0};
        Kbackup__Node node = KBACKUP__NODE__INIT, *nodes[1] = {&node};
        Kbackup__Tree tree = KBACKUP__TREE__INIT;
        Kbackup__Snapshot snap = KBACKUP__SNAPSHOT__INIT;
        uint8_t tree_id[KB_ID_LEN];
        struct kb_save_result sr;
        struct kb_bbolt *db = NULL;
        struct kb_etcd_keyspace *ks;
        size_t n, nchunks = 0, off = 0, want_n;
        uint8_t *d = slurp(fx_path("big.db"), &n);
        char *want = (char *)slurp(fx_path("big.expect"), &want_n), *got;
        uint8_t(*ids)[KB_ID_LEN] = calloc(n / 1000 + 2, KB_ID_LEN);
        ProtobufCBinaryData *content = calloc(n / 1000 + 2, sizeof(*content));

        cr_assert_not_null(mkdtemp(dir));
        snprintf(rdir, sizeof(rdir), "%s/r", dir);
        cr_assert_eq(kb_repo_init(rdir, "pw", 2, &fast, NULL, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_repo_open(rdir, "pw", 2, 0, &repo, &e), 0, "%s", e.msg);
        /* Uneven chunk sizes, so pages straddle chunk boundaries. */
        srand(7);
        while (off < n) {
                size_t len = 1000 + (size_t)rand() % 30000;

                if (len > n - off)
                        len = n - off;
                kb_repo_blob_id(repo, d + off, len, ids[nchunks]);
                cr_assert_eq(
                    kb_repo_blob_save(repo, KB_BLOB_DATA, ids[nchunks], d + off, len, &sr, &e), 0,
                    "%s", e.msg);
                content[nchunks].data = ids[nchunks];
                content[nchunks].len = KB_ID_LEN;
                nchunks++;
                off += len;
        }
        node.name.data = (uint8_t *)KB_ETCD_SNAPSHOT_FILE;
        node.name.len = strlen(KB_ETCD_SNAPSHOT_FILE);
        node.size = n;
        node.n_content = nchunks;
        node.content = content;
        tree.n_nodes = 1;
        tree.nodes = nodes;
        cr_assert_eq(kb_repo_tree_save(repo, &tree, tree_id, &sr, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_repo_flush(repo, &e), 0, "%s", e.msg);
        snap.kind = "etcd";
        snap.tree.data = tree_id;
        snap.tree.len = KB_ID_LEN;

        cr_assert_eq(kb_etcd_snapshot_db_open(repo, &snap, &db, &e), 0, "%s", e.msg);
        ks = load(db, NULL);
        got = dump(ks);
        assert_same_dump(got, want, "from chunks");
        free(got);
        kb_etcd_keyspace_free(ks);
        kb_bbolt_close(db);

        /* A record whose chunks do not add up to its size is refused before any read. */
        node.size = n + 1;
        cr_assert_eq(kb_repo_tree_save(repo, &tree, tree_id, &sr, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_repo_flush(repo, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_etcd_snapshot_db_open(repo, &snap, &db, &e), KB_ECORRUPT);
        snap.kind = "volume";
        cr_assert_eq(kb_etcd_snapshot_db_open(repo, &snap, &db, &e), KB_EUSAGE);

        kb_repo_close(repo);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        cr_assert_eq(system(cmd), 0);
        free(ids);
        free(content);
        free(want);
        free(d);
}
