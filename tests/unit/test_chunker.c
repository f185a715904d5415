/* test_chunker.c - FastCDC chunker: parameter checks, determinism, streaming invariance, size
 * bounds and distribution, seed sensitivity, resistance to insertions, reset, and a throughput
 * print (not asserted). */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "chunker.h"

#define MIB (1024u * 1024u)

struct cuts {
        size_t *end; /* end offset of each chunk; the last one is the stream end */
        size_t n, cap;
};

static void cuts_push(struct cuts *c, size_t v)
{
        if (c->n == c->cap) {
                c->cap = c->cap ? 2 * c->cap : 256;
                c->end = realloc(c->end, c->cap * sizeof(*c->end));
                cr_assert_not_null(c->end);
        }
        c->end[c->n++] = v;
}

static void cuts_free(struct cuts *c)
{
        free(c->end);
        memset(c, 0, sizeof(*c));
}

static void fill_random(uint8_t *buf, size_t len, uint8_t tag)
{
        uint8_t seed[randombytes_SEEDBYTES] = {tag, 0x5a, 0xc3};

        randombytes_buf_deterministic(buf, len, seed);
}

static void make_seed(uint8_t seed[KB_CHUNKER_SEED_LEN], uint8_t tag)
{
        for (int i = 0; i < KB_CHUNKER_SEED_LEN; i++)
                seed[i] = (uint8_t)(tag * 31 + i);
}

static struct kb_chunker *new_chunker(uint32_t min, uint32_t avg, uint32_t max, uint8_t seed_tag)
{
        struct kb_chunker_params p = {min, avg, max};
        uint8_t seed[KB_CHUNKER_SEED_LEN];
        struct kb_chunker *c = NULL;

        make_seed(seed, seed_tag);
        cr_assert_eq(kb_chunker_new(&p, seed, &c), 0);
        cr_assert_not_null(c);
        return c;
}

/* piece(): size of the next buffer to feed; 0 means "everything left". */
typedef size_t (*piece_fn)(void *st);

static struct cuts chunk_stream(struct kb_chunker *c, const uint8_t *data, size_t len,
                                piece_fn piece, void *st)
{
        struct cuts out = {0};
        size_t off = 0, chunk_start = 0;

        while (off < len) {
                size_t want = piece ? piece(st) : 0;
                size_t n = (want == 0 || want > len - off) ? len - off : want;
                /* The chunker may stop early at a cut: feed the remainder of this piece again. */
                while (n > 0) {
                        int found = -1;
                        size_t used = kb_chunker_scan(c, data + off, n, &found);

                        cr_assert(found == 0 || found == 1);
                        cr_assert(used <= n);
                        if (!found)
                                cr_assert_eq(used, n, "no cut but only %zu of %zu consumed", used,
                                             n);
                        else
                                cr_assert_gt(used, 0);
                        off += used;
                        n -= used;
                        if (found) {
                                cuts_push(&out, off);
                                chunk_start = off;
                        }
                }
        }
        if (chunk_start < len)
                cuts_push(&out, len);
        return out;
}

static struct cuts chunk_all(uint32_t min, uint32_t avg, uint32_t max, uint8_t seed_tag,
                             const uint8_t *data, size_t len)
{
        struct kb_chunker *c = new_chunker(min, avg, max, seed_tag);
        struct cuts r = chunk_stream(c, data, len, NULL, NULL);

        kb_chunker_free(c);
        return r;
}

static void assert_same_cuts(const struct cuts *a, const struct cuts *b, const char *what)
{
        cr_assert_eq(a->n, b->n, "%s: %zu vs %zu chunks", what, a->n, b->n);
        for (size_t i = 0; i < a->n; i++)
                cr_assert_eq(a->end[i], b->end[i], "%s: chunk %zu ends at %zu vs %zu", what, i,
                             a->end[i], b->end[i]);
}

static void assert_bounds(const struct cuts *c, size_t min, size_t max, size_t len)
{
        size_t prev = 0;

        cr_assert_gt(c->n, 0);
        cr_assert_eq(c->end[c->n - 1], len);
        for (size_t i = 0; i < c->n; i++) {
                size_t sz = c->end[i] - prev;

                cr_assert_gt(sz, 0);
                cr_assert_leq(sz, max, "chunk %zu is %zu bytes > max %zu", i, sz, max);
                if (i + 1 < c->n)
                        cr_assert_geq(sz, min, "chunk %zu is %zu bytes < min %zu", i, sz, min);
                prev = c->end[i];
        }
}

Test(chunker, param_validation)
{
        uint8_t seed[KB_CHUNKER_SEED_LEN] = {0};
        struct kb_chunker *c = (struct kb_chunker *)0x1;
        static const struct kb_chunker_params bad[] = {
            {4096, 4096, 65536},   /* min == avg */
            {8192, 4096, 65536},   /* min > avg */
            {2048, 65536, 65536},  /* avg == max */
            {2048, 131072, 65536}, /* avg > max */
            {2048, 12288, 65536},  /* avg not a power of two */
            {63, 128, 1024},       /* min below 64 */
            {0, 128, 1024},        /* min zero */
            {100, 0, 1024},        /* avg zero */
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                c = (struct kb_chunker *)0x1;
                cr_assert_eq(kb_chunker_new(&bad[i], seed, &c), -EINVAL, "case %zu", i);
                cr_assert_null(c, "case %zu leaves *out set", i);
        }
        cr_assert_eq(kb_chunker_new(NULL, seed, &c), -EINVAL);
        cr_assert_eq(kb_chunker_new(&kb_chunker_default_params, NULL, &c), -EINVAL);
        cr_assert_eq(kb_chunker_new(&kb_chunker_default_params, seed, NULL), -EINVAL);

        cr_assert_eq(kb_chunker_default_params.min_size, 512u * 1024);
        cr_assert_eq(kb_chunker_default_params.avg_size, 1024u * 1024);
        cr_assert_eq(kb_chunker_default_params.max_size, 8u * 1024 * 1024);

        static const struct kb_chunker_params good[] = {
            {64, 128, 129}, /* smallest legal */
            {2048, 8192, 65536},
            {1u << 30, 1u << 31, UINT32_MAX},
        };
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                c = NULL;
                cr_assert_eq(kb_chunker_new(&good[i], seed, &c), 0, "good case %zu", i);
                cr_assert_not_null(c);
                kb_chunker_free(c);
        }
        c = NULL;
        cr_assert_eq(kb_chunker_new(&kb_chunker_default_params, seed, &c), 0);
        kb_chunker_free(c);
        kb_chunker_free(NULL);
}

Test(chunker, empty_scan)
{
        struct kb_chunker *c = new_chunker(256, 1024, 8192, 1);
        uint8_t b = 0;
        int found = -1;

        cr_assert_eq(kb_chunker_scan(c, &b, 0, &found), 0);
        cr_assert_eq(found, 0);
        kb_chunker_free(c);
}

Test(chunker, determinism)
{
        size_t len = 8 * MIB;
        uint8_t *d = malloc(len);

        cr_assert_not_null(d);
        fill_random(d, len, 1);
        struct cuts a = chunk_all(2048, 8192, 65536, 7, d, len);
        struct cuts b = chunk_all(2048, 8192, 65536, 7, d, len);
        assert_same_cuts(&a, &b, "two chunkers, same seed");
        cr_assert_gt(a.n, 500, "only %zu chunks of 8 MiB at avg 8K", a.n);
        cuts_free(&a);
        cuts_free(&b);
        free(d);
}

static size_t piece_random(void *st)
{
        uint64_t *x = st;

        /* xorshift: cheap, fixed sequence; sizes 1..40000 with many small ones */
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        switch (*x % 4) {
        case 0:
                return 1 + (*x >> 8) % 7;
        case 1:
                return 1 + (*x >> 8) % 300;
        default:
                return 1 + (*x >> 8) % 40000;
        }
}

static size_t piece_one(void *st)
{
        (void)st;
        return 1;
}

static size_t piece_tiny(void *st)
{
        size_t *k = st;

        return 1 + (*k)++ % 3;
}

Test(chunker, streaming_invariance)
{
        static const struct kb_chunker_params ps[] = {
            {64, 128, 1024},
            {256, 1024, 8192},
            {2048, 8192, 65536},
        };
        size_t len = 2 * MIB;
        uint8_t *d = malloc(len);

        cr_assert_not_null(d);
        fill_random(d, len, 2);
        for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
                const struct kb_chunker_params *p = &ps[i];
                struct kb_chunker *c = new_chunker(p->min_size, p->avg_size, p->max_size, 3);
                struct cuts whole = chunk_stream(c, d, len, NULL, NULL);
                uint64_t x = 0x9e3779b97f4a7c15ull + i;
                size_t k = 0;

                assert_bounds(&whole, p->min_size, p->max_size, len);
                cr_assert_gt(whole.n, 10);

                /* Each run is a new stream: the previous one ended mid-chunk. */
                kb_chunker_reset(c);
                struct cuts rnd = chunk_stream(c, d, len, piece_random, &x);
                assert_same_cuts(&whole, &rnd, "random pieces");
                kb_chunker_reset(c);
                struct cuts tiny = chunk_stream(c, d, len, piece_tiny, &k);
                assert_same_cuts(&whole, &tiny, "1-3 byte pieces");
                kb_chunker_reset(c);
                struct cuts one = chunk_stream(c, d, len, piece_one, NULL);
                assert_same_cuts(&whole, &one, "1 byte pieces");

                cuts_free(&whole);
                cuts_free(&rnd);
                cuts_free(&tiny);
                cuts_free(&one);
                kb_chunker_free(c);
        }
        free(d);
}

/* Mean chunk size of random data lands near avg, and normalization keeps the tail short. */
static void check_distribution(uint32_t min, uint32_t avg, uint32_t max, const uint8_t *d,
                               size_t len)
{
        struct cuts c = chunk_all(min, avg, max, 4, d, len);
        size_t prev = 0, big = 0, small = 0, n = c.n - 1; /* ignore the tail chunk */
        double mean;

        assert_bounds(&c, min, max, len);
        cr_assert_gt(n, 20);
        for (size_t i = 0; i < n; i++) {
                size_t sz = c.end[i] - prev;

                big += sz > 2 * (size_t)avg;
                small += sz < avg;
                prev = c.end[i];
        }
        mean = (double)c.end[n - 1] / (double)n;
        fprintf(
            stderr,
            "chunker %u/%u/%u: %zu chunks, mean %.0f (%.2f x avg), %.1f%% < avg, %.1f%% > 2avg\n",
            min, avg, max, n, mean, mean / avg, 100.0 * small / n, 100.0 * big / n);
        cr_assert(mean > 0.7 * avg && mean < 1.3 * avg, "mean %.0f vs avg %u", mean, avg);
        /* Plain CDC with the avg mask would put ~17-25% of chunks above 2*avg; NC level 2
         * puts a few percent there. */
        cr_assert_lt((double)big / n, 0.06, "%zu of %zu chunks above 2*avg", big, n);
        cuts_free(&c);
}

Test(chunker, average_size, .timeout = 300)
{
        size_t len = 64 * MIB;
        uint8_t *d = malloc(len);

        cr_assert_not_null(d);
        fill_random(d, len, 5);
        check_distribution(4096, 16384, 65536, d, len);
        check_distribution(2048, 8192, 65536, d, len);
        check_distribution(256 * 1024, MIB, 8 * MIB, d, len);
        check_distribution(512 * 1024, MIB, 8 * MIB, d, len);
        free(d);
}

/* On constant data the gear hash is one fixed value once its 64-byte window is full, so every
 * chunk gets the same size: min (the strict mask matches), avg + 1 (only the loose one does) or
 * max (neither: a forced cut). Returns that size for this seed. */
static size_t constant_chunk_size(uint8_t seed_tag, const uint8_t *zeros, size_t len)
{
        struct cuts c = chunk_all(256, 1024, 8192, seed_tag, zeros, len);
        size_t sz = c.end[0];

        assert_bounds(&c, 256, 8192, len);
        for (size_t i = 1; i + 1 < c.n; i++)
                cr_assert_eq(c.end[i] - c.end[i - 1], sz, "seed %u chunk %zu", seed_tag, i);
        cr_assert(sz == 256 || sz == 1025 || sz == 8192, "seed %u: size %zu", seed_tag, sz);
        cuts_free(&c);
        return sz;
}

/* A seed for which constant data is only ever cut at max with 256/1024/8192. The loose mask has
 * 8 bits, so about 255 seeds in 256 qualify. */
static uint8_t forced_seed(const uint8_t *zeros, size_t len)
{
        for (unsigned tag = 1; tag < 20; tag++)
                if (constant_chunk_size((uint8_t)tag, zeros, len) == 8192)
                        return (uint8_t)tag;
        cr_assert_fail("no seed gives forced cuts on constant data");
        return 0;
}

Test(chunker, forced_cut_at_max)
{
        size_t len = MIB + 100;
        uint8_t *z = calloc(1, len);

        cr_assert_not_null(z);
        for (unsigned tag = 1; tag < 20; tag++)
                (void)constant_chunk_size((uint8_t)tag, z, len);

        struct cuts c = chunk_all(256, 1024, 8192, forced_seed(z, len), z, len);
        cr_assert_eq(c.n, len / 8192 + 1);
        for (size_t i = 0; i + 1 < c.n; i++)
                cr_assert_eq(c.end[i], (i + 1) * 8192);
        cr_assert_eq(c.end[c.n - 1], len);
        cuts_free(&c);
        free(z);
}

Test(chunker, seed_sensitivity)
{
        size_t len = 8 * MIB, shared = 0;
        uint8_t *d = malloc(len);

        cr_assert_not_null(d);
        fill_random(d, len, 7);
        struct cuts a = chunk_all(2048, 8192, 65536, 1, d, len);
        struct cuts b = chunk_all(2048, 8192, 65536, 2, d, len);
        /* Count cut offsets common to both (both lists are sorted). */
        for (size_t i = 0, j = 0; i + 1 < a.n && j + 1 < b.n;) {
                if (a.end[i] == b.end[j]) {
                        shared++;
                        i++;
                        j++;
                } else if (a.end[i] < b.end[j]) {
                        i++;
                } else {
                        j++;
                }
        }
        cr_assert_gt(a.n, 500);
        cr_assert_lt(shared, a.n / 10, "%zu of %zu cut points survive a seed change", shared, a.n);
        cuts_free(&a);
        cuts_free(&b);
        free(d);
}

#define HLEN 16

static int cmp_hash(const void *a, const void *b)
{
        return memcmp(a, b, HLEN);
}

static uint8_t *chunk_hashes(const uint8_t *d, const struct cuts *c)
{
        uint8_t *h = malloc(c->n * HLEN);
        size_t prev = 0;

        cr_assert_not_null(h);
        for (size_t i = 0; i < c->n; i++) {
                crypto_generichash(h + i * HLEN, HLEN, d + prev, c->end[i] - prev, NULL, 0);
                prev = c->end[i];
        }
        return h;
}

/* Chunk orig and a copy with `ins` bytes inserted at `at`; return how many original chunks
 * are missing from the modified stream. */
static size_t lost_after_insert(const uint8_t *orig, size_t len, size_t at, size_t ins,
                                size_t *total)
{
        uint8_t *mod = malloc(len + ins);

        cr_assert_not_null(mod);
        memcpy(mod, orig, at);
        for (size_t i = 0; i < ins; i++)
                mod[at + i] = (uint8_t)(i * 7 + 1);
        memcpy(mod + at + ins, orig + at, len - at);

        struct cuts a = chunk_all(2048, 8192, 65536, 9, orig, len);
        struct cuts b = chunk_all(2048, 8192, 65536, 9, mod, len + ins);
        uint8_t *ha = chunk_hashes(orig, &a);
        uint8_t *hb = chunk_hashes(mod, &b);
        size_t lost = 0;

        qsort(hb, b.n, HLEN, cmp_hash);
        for (size_t i = 0; i < a.n; i++)
                lost += bsearch(ha + i * HLEN, hb, b.n, HLEN, cmp_hash) == NULL;
        *total = a.n;
        free(ha);
        free(hb);
        cuts_free(&a);
        cuts_free(&b);
        free(mod);
        return lost;
}

Test(chunker, shift_resistance, .timeout = 300)
{
        size_t len = 32 * MIB, total = 0, lost;
        uint8_t *d = malloc(len);

        cr_assert_not_null(d);
        fill_random(d, len, 8);

        lost = lost_after_insert(d, len, 0, 100, &total);
        fprintf(stderr, "insert at start: %zu of %zu chunks lost\n", lost, total);
        cr_assert_gt(total, 2000);
        cr_assert_geq(lost, 1, "the first chunk changed, so it cannot survive");
        cr_assert_leq(lost, 3, "%zu of %zu chunks lost after inserting at the start", lost, total);

        lost = lost_after_insert(d, len, len / 2 + 12345, 100, &total);
        fprintf(stderr, "insert in middle: %zu of %zu chunks lost\n", lost, total);
        cr_assert_geq(lost, 1);
        cr_assert_leq(lost, 3, "%zu of %zu chunks lost after inserting in the middle", lost, total);
        free(d);
}

Test(chunker, reset_restarts_chunk)
{
        size_t len = 4 * MIB, k = 0;
        uint8_t *d = malloc(len);
        int found = -1;

        cr_assert_not_null(d);
        fill_random(d, len, 10);

        /* Content-defined params: a partial chunk abandoned by reset leaves no trace. */
        struct kb_chunker *c = new_chunker(2048, 8192, 65536, 11);
        struct cuts fresh = chunk_stream(c, d, len, NULL, NULL);
        cr_assert_eq(kb_chunker_scan(c, d + 100, 1000, &found), 1000); /* < min: no cut */
        cr_assert_eq(found, 0);
        kb_chunker_reset(c);
        struct cuts again = chunk_stream(c, d, len, piece_tiny, &k);
        assert_same_cuts(&fresh, &again, "after reset");
        cuts_free(&fresh);
        cuts_free(&again);
        kb_chunker_free(c);

        /* With cuts forced at max (constant data), the cut is purely positional, which shows
         * that reset really discards the partial chunk. */
        memset(d, 0, len);
        c = new_chunker(256, 1024, 8192, forced_seed(d, len));
        cr_assert_eq(kb_chunker_scan(c, d, 1000, &found), 1000);
        cr_assert_eq(found, 0);
        size_t used = kb_chunker_scan(c, d, len, &found);
        cr_assert_eq(found, 1);
        cr_assert_eq(used, 8192 - 1000, "without reset the partial chunk counts");

        cr_assert_eq(kb_chunker_scan(c, d, 1000, &found), 1000);
        kb_chunker_reset(c);
        used = kb_chunker_scan(c, d, len, &found);
        cr_assert_eq(found, 1);
        cr_assert_eq(used, 8192, "reset must start a new chunk");
        kb_chunker_free(c);
        free(d);
}

Test(chunker, throughput, .timeout = 300)
{
        size_t len = 64 * MIB, total = 0, chunks = 0;
        uint8_t *d = malloc(len);
        struct timespec t0, t1;
        int found;

        cr_assert_not_null(d);
        fill_random(d, len, 12);
        static const struct kb_chunker_params ps[] = {
            {512 * 1024, 1024 * 1024, 8 * 1024 * 1024},
            {2048, 8192, 65536},
            {64, 1u << 30, UINT32_MAX}, /* no cuts: every byte hashed and tested */
        };
        for (size_t pi = 0; pi < sizeof(ps) / sizeof(ps[0]); pi++) {
                struct kb_chunker *c =
                    new_chunker(ps[pi].min_size, ps[pi].avg_size, ps[pi].max_size, 13);
                /* Min-size skipping makes a large min look faster: the last set shows the
                 * raw hashing rate. */
                total = chunks = 0;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                for (int rep = 0; rep < 4; rep++) {
                        for (size_t off = 0; off < len;) {
                                off += kb_chunker_scan(c, d + off, len - off, &found);
                                chunks += found;
                        }
                        total += len;
                }
                clock_gettime(CLOCK_MONOTONIC, &t1);
                double s =
                    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
                fprintf(stderr, "chunker throughput %u/%u/%u: %.0f MB/s (%zu chunks)\n",
                        ps[pi].min_size, ps[pi].avg_size, ps[pi].max_size, total / s / 1e6, chunks);
                if (pi < 2)
                        cr_assert_gt(chunks, 0);
                kb_chunker_free(c);
        }
        free(d);
}
