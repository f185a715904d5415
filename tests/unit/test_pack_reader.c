/* test_pack_reader.c - the pack reader on a real filesystem repository: announced blobs that sit
 * back to back come in few reads and nothing else is read, every blob decodes byte-identical, a
 * blob larger than a window, a damaged blob fails alone, a missing or cut pack is a clean error,
 * and threads sharing one reader get the right bytes.
 *
 * Reads are counted by a thin wrapper around the real filesystem backend (the bytes still come
 * from the files): instrumentation, not a mock. */
#include "ops_testlib.h"

#include <pthread.h>
#include <stdatomic.h>

#include "counting_backend.h"
#include "pack_reader.h"

TestSuite(pack_reader, .init = ops_setup, .fini = ops_teardown);

#define NBLOBS   2000
#define BIG_SIZE (300u << 10)

/* --- fixture ------------------------------------------------------------------------------- */

/* Blob i: 64 bytes to ~3 KiB (compressible for even i), or BIG_SIZE of random bytes for i == big.
 */
static size_t blob_make(unsigned i, unsigned big, uint8_t *buf)
{
        size_t len = i == big ? BIG_SIZE : 64 + (i * 7919u) % 3000;

        ops_content(3, i, buf, len);
        if (i % 2 == 0 && i != big)
                for (size_t k = 16; k < len; k++)
                        buf[k] = buf[k % 16];
        return len;
}

static uint8_t ids[NBLOBS][KB_ID_LEN];
static uint64_t sealed_total; /* stored bytes of all blobs */

/* Store NBLOBS blobs in order (blob `big` is BIG_SIZE) in 1 MiB packs. */
static void store_blobs(unsigned big)
{
        struct kb_repo *r = ops_open();
        uint8_t *buf = malloc(BIG_SIZE);
        struct kb_err e = {0};

        r->pack_size = 1u << 20;
        sealed_total = 0;
        for (unsigned i = 0; i < NBLOBS; i++) {
                size_t len = blob_make(i, big, buf);
                struct kb_save_result res;

                kb_repo_blob_id(r, buf, len, ids[i]);
                cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, ids[i], buf, len, &res, &e), 0,
                             "%s", e.msg);
                cr_assert(res.added);
                sealed_total += res.stored_bytes;
        }
        cr_assert_eq(kb_repo_flush(r, &e), 0, "%s", e.msg);
        kb_repo_close(r);
        free(buf);
}

/* One test's repository (its backend behind a counter) and reader, and buffers for checking. */
struct fx {
        struct counting *c;
        struct kb_repo *r;
        struct kb_pack_reader *pr;
        struct kb_buf got;
        uint8_t *want;
        unsigned big;
};

static void fx_open(struct fx *f, unsigned big, unsigned windows, size_t window_bytes)
{
        struct kb_err e = {0};

        store_blobs(big);
        f->r = ops_open_flags(KB_REPO_READ_ONLY);
        f->c = counting_wrap(f->r);
        cr_assert_eq(kb_pack_reader_new(f->r, windows, window_bytes, &f->pr, &e), 0, "%s", e.msg);
        f->got = (struct kb_buf)KB_BUF_INIT;
        f->want = malloc(BIG_SIZE);
        f->big = big;
}

static void fx_close(struct fx *f)
{
        kb_pack_reader_free(f->pr);
        kb_repo_close(f->r);
        kb_buf_free(&f->got);
        free(f->want);
}

static void fx_want_all(struct fx *f)
{
        struct kb_err e = {0};

        for (unsigned i = 0; i < NBLOBS; i++)
                cr_assert_eq(kb_pack_reader_want(f->pr, ids[i], NULL, &e), 0, "%s", e.msg);
}

/* Blob i loads and is byte-identical. */
static void fx_check(struct fx *f, unsigned i)
{
        struct kb_err e = {0};
        size_t len = blob_make(i, f->big, f->want);

        kb_buf_reset(&f->got);
        cr_assert_eq(kb_pack_reader_load(f->pr, ids[i], &f->got, &e), 0, "blob %u: %s", i, e.msg);
        cr_assert_eq(f->got.len, len, "blob %u", i);
        cr_assert(memcmp(f->got.data, f->want, len) == 0, "blob %u differs", i);
}

/* Blob i fails, adding nothing, with a message that names it. Returns the code. */
static int fx_fails(struct fx *f, unsigned i)
{
        struct kb_err e = {0};
        char bid[17];
        int rc;

        kb_buf_reset(&f->got);
        rc = kb_pack_reader_load(f->pr, ids[i], &f->got, &e);
        cr_assert_lt(rc, 0, "blob %u loaded", i);
        cr_expect_eq(f->got.len, 0);
        kb_hex_encode(ids[i], 8, bid);
        cr_expect(strstr(e.msg, bid) != NULL, "message does not name chunk %s: %s", bid, e.msg);
        return rc;
}

/* The pack file holding blob i, and the blob's place in it. */
static void pack_file(struct fx *f, unsigned i, char *path, size_t n, uint32_t *off, uint32_t *len)
{
        const struct kb_index_entry *x = kb_index_lookup(f->r->index, ids[i]);
        char hex[KB_ID_HEX_LEN + 1];

        cr_assert_not_null(x);
        kb_hex_encode(kb_index_pack_id(f->r->index, x->pack), KB_ID_LEN, hex);
        snprintf(path, n, "%s/data/%.2s/%s", ops_dir, hex, hex);
        *off = x->offset;
        *len = x->length;
}

/* After loading every blob: few reads, each stored byte read once and nothing else (no pack
 * header, no blob twice). */
static void fx_expect_read_once(struct fx *f)
{
        cr_expect_lt(f->c->gets, NBLOBS / 10, "%u reads for %u blobs", f->c->gets, NBLOBS);
        cr_expect_eq(f->c->bytes, sealed_total, "read %llu bytes, blobs take %llu",
                     (unsigned long long)f->c->bytes, (unsigned long long)sealed_total);
}

/* Announce every blob, load each in order: all byte-identical, each byte read once. */
static void fx_load_all(struct fx *f)
{
        fx_want_all(f);
        for (unsigned i = 0; i < NBLOBS; i++)
                fx_check(f, i);
        fx_expect_read_once(f);
}

static uint32_t stored_len(struct fx *f, unsigned i)
{
        return kb_index_lookup(f->r->index, ids[i])->length;
}

/* --- tests --------------------------------------------------------------------------------- */

Test(pack_reader, announced_run_takes_few_reads_and_no_extra_bytes)
{
        struct fx f;

        fx_open(&f, NBLOBS, 4, 1u << 20);
        fx_load_all(&f);
        fx_close(&f);
}

Test(pack_reader, unannounced_blobs_are_never_read)
{
        struct fx f;
        struct kb_err e = {0};
        uint64_t needed = 0;

        fx_open(&f, NBLOBS, 4, 1u << 20);
        /* Runs of 50 announced blobs with 10 skipped between them. */
        for (unsigned i = 0; i < NBLOBS; i++)
                if (i % 60 < 50)
                        cr_assert_eq(kb_pack_reader_want(f.pr, ids[i], NULL, &e), 0, "%s", e.msg);
        for (unsigned i = 0; i < NBLOBS; i++) {
                if (i % 60 >= 50)
                        continue;
                needed += stored_len(&f, i);
                fx_check(&f, i);
        }
        cr_expect_eq(f.c->bytes, needed);
        cr_expect_lt(f.c->gets, NBLOBS / 25, "%u reads", f.c->gets);
        /* Without an announcement a blob is read alone. */
        f.c->gets = 0;
        f.c->bytes = 0;
        fx_check(&f, 55);
        fx_check(&f, 56);
        cr_expect_eq(f.c->gets, 2);
        cr_expect_eq(f.c->bytes, stored_len(&f, 55) + stored_len(&f, 56));
        fx_close(&f);
}

Test(pack_reader, blob_larger_than_a_window)
{
        struct fx f;
        const unsigned big = 700;

        fx_open(&f, big, 2, 64u << 10);
        cr_assert_gt(stored_len(&f, big), 64u << 10);
        fx_load_all(&f);
        fx_close(&f);
}

Test(pack_reader, damaged_blob_fails_alone)
{
        struct fx f;
        const unsigned bad = 1000;
        char path[512];
        uint32_t off, len;
        uint8_t b;
        int fd;

        fx_open(&f, NBLOBS, 4, 1u << 20);
        pack_file(&f, bad, path, sizeof(path), &off, &len);
        fd = open(path, O_RDWR);
        cr_assert_geq(fd, 0);
        cr_assert_eq(pread(fd, &b, 1, off + len / 2), 1);
        b ^= 0x20;
        cr_assert_eq(pwrite(fd, &b, 1, off + len / 2), 1);
        close(fd);

        fx_want_all(&f);
        for (unsigned i = 0; i < NBLOBS; i++) {
                if (i == bad)
                        cr_expect_eq(fx_fails(&f, i), KB_ECORRUPT);
                else
                        fx_check(&f, i);
        }
        /* The neighbours came from the same windows: no read was repeated. */
        fx_expect_read_once(&f);
        fx_close(&f);
}

Test(pack_reader, missing_pack_is_a_clean_error)
{
        struct fx f;
        char path[512], here[512];
        uint32_t off, len;
        unsigned failed = 0;

        fx_open(&f, NBLOBS, 4, 1u << 20);
        pack_file(&f, 0, path, sizeof(path), &off, &len);
        pack_file(&f, NBLOBS - 1, here, sizeof(here), &off, &len);
        cr_assert_str_neq(path, here, "the blobs should fill several packs");
        cr_assert_eq(unlink(path), 0);

        fx_want_all(&f);
        for (unsigned i = 0; i < NBLOBS; i++) {
                pack_file(&f, i, here, sizeof(here), &off, &len);
                if (strcmp(here, path) != 0) {
                        fx_check(&f, i);
                        continue;
                }
                cr_expect_eq(fx_fails(&f, i), KB_ENOTFOUND);
                failed++;
        }
        cr_expect_gt(failed, 10);
        fx_close(&f);
}

/* A pack cut short: the blobs before the cut still load (each on its own after the window read
 * failed), the ones after it fail with the chunk named. */
Test(pack_reader, cut_pack_keeps_the_blobs_before_the_cut)
{
        struct fx f;
        char path[512], here[512];
        uint32_t off, len, cut = 300u << 10;
        unsigned ok = 0, failed = 0;

        fx_open(&f, NBLOBS, 4, 1u << 20);
        pack_file(&f, 0, path, sizeof(path), &off, &len);
        cr_assert_eq(truncate(path, cut), 0);

        fx_want_all(&f);
        for (unsigned i = 0; i < NBLOBS; i++) {
                pack_file(&f, i, here, sizeof(here), &off, &len);
                if (strcmp(here, path) != 0) {
                        fx_check(&f, i);
                } else if (off + len <= cut) {
                        fx_check(&f, i);
                        ok++;
                } else {
                        fx_fails(&f, i);
                        failed++;
                }
        }
        cr_expect_gt(ok, 50);
        cr_expect_gt(failed, 50);
        fx_close(&f);
}

/* --- threads ------------------------------------------------------------------------------- */

#define NTHREADS 4

struct worker {
        struct kb_pack_reader *pr;
        unsigned t;
        unsigned bad; /* blobs that failed or differ */
};

static void *worker(void *arg)
{
        struct worker *w = arg;
        uint8_t *want = malloc(BIG_SIZE);
        struct kb_buf got = KB_BUF_INIT;
        struct kb_err e;

        /* Interleaved: neighbouring blobs go to different threads, as jobs do in a restore. */
        for (unsigned i = w->t; i < NBLOBS; i += NTHREADS) {
                size_t len = blob_make(i, NBLOBS, want);

                kb_buf_reset(&got);
                if (kb_pack_reader_load(w->pr, ids[i], &got, &e) < 0 || got.len != len ||
                    memcmp(got.data, want, len) != 0)
                        w->bad++;
        }
        kb_buf_free(&got);
        free(want);
        return NULL;
}

static void run_threads(unsigned windows, size_t window_bytes, unsigned *gets)
{
        struct worker w[NTHREADS];
        pthread_t th[NTHREADS];
        struct fx f;

        fx_open(&f, NBLOBS, windows, window_bytes);
        fx_want_all(&f);
        for (unsigned t = 0; t < NTHREADS; t++) {
                w[t] = (struct worker){f.pr, t, 0};
                cr_assert_eq(pthread_create(&th[t], NULL, worker, &w[t]), 0);
        }
        for (unsigned t = 0; t < NTHREADS; t++) {
                pthread_join(th[t], NULL);
                cr_expect_eq(w[t].bad, 0, "thread %u: %u blobs wrong", t, w[t].bad);
        }
        *gets = f.c->gets;
        fx_close(&f);
}

Test(pack_reader, threads_share_windows)
{
        unsigned gets;

        run_threads(NTHREADS + 2, 1u << 20, &gets);
        cr_expect_lt(gets, NBLOBS / 10, "%u reads", gets);
}

/* Fewer windows than threads: some blobs are read alone, every one still right. */
Test(pack_reader, threads_with_few_small_windows)
{
        unsigned gets;

        run_threads(2, 16u << 10, &gets);
        cr_expect_lt(gets, NBLOBS);
}
