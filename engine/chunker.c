/* chunker.c - FastCDC content-defined chunking with normalized chunking level 2.
 *
 * Follows Xia et al., "FastCDC: a Fast and Efficient Content-Defined Chunking Approach for Data
 * Deduplication" (USENIX ATC 2016): a gear rolling hash (fp = (fp << 1) + gear[byte]), cut-point
 * skipping below min_size, and normalized chunking: a stricter mask (log2(avg) + 2 bits) until the
 * chunk reaches avg_size and a looser one (log2(avg) - 2 bits) after it, so chunk sizes cluster
 * around avg_size. The inner loop rolls two bytes per step as in the 2020 TPDS version; that is
 * only a speedup, the cut points are exactly those of the byte-at-a-time loop.
 *
 * The gear table is a pure function of the repository's 32-byte seed, so boundaries (and thus
 * chunk sizes) do not reveal which known files a repository holds. */
#include "chunker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* Bit k of the gear hash depends on the last k + 1 bytes, so hashing this many bytes before the
 * first possible cut makes every cut decision depend only on content, not on where the chunk
 * started (which helps chunks resynchronise after an insertion). */
#define KB_CDC_WINDOW 64

const struct kb_chunker_params kb_chunker_default_params = {
    .min_size = 512u * 1024,
    .avg_size = 1024u * 1024,
    .max_size = 8u * 1024 * 1024,
};

struct kb_chunker {
        uint64_t gear[256];
        uint64_t gear_ls[256]; /* gear[i] << 1, for the two-bytes-per-step loop */
        uint64_t mask_s;       /* used while the chunk is shorter than avg_size */
        uint64_t mask_l;       /* used from avg_size to max_size */
        size_t skip_end;       /* bytes skipped without hashing (cut-point skipping) */
        size_t warm_end;       /* bytes hashed without testing, to fill the window */
        size_t avg_size;
        size_t max_size;
        /* stream state */
        size_t pos; /* bytes of the current chunk seen so far */
        uint64_t fp;
};

/* Masks use the high bits (ending at bit 62) because high bits of the gear hash depend on the
 * most bytes; low-bit masks would give a window of a few bytes only. Bit 63 stays clear so that
 * mask << 1 loses nothing, which is what makes the two-byte step exact. */
static uint64_t high_mask(unsigned bits)
{
        return ((UINT64_C(1) << bits) - 1) << (63 - bits);
}

static unsigned log2_u32(uint32_t v)
{
        unsigned n = 0;

        while (v >>= 1)
                n++;
        return n;
}

/* A domain-separated subkey keeps the keystream distinct from any other use of the seed. */
static int make_gear(const uint8_t seed[KB_CHUNKER_SEED_LEN], uint64_t gear[256])
{
        static const char ctx[] = "kbackup fastcdc gear table v1";
        static const uint8_t nonce[crypto_stream_chacha20_NONCEBYTES] = {0};
        uint8_t key[crypto_stream_chacha20_KEYBYTES];
        uint8_t stream[256 * 8];

        if (crypto_generichash(key, sizeof(key), (const uint8_t *)ctx, sizeof(ctx) - 1, seed,
                               KB_CHUNKER_SEED_LEN) != 0)
                return -EINVAL;
        crypto_stream_chacha20(stream, sizeof(stream), nonce, key);
        /* Explicit little-endian load: the table must not depend on the host's byte order. */
        for (size_t i = 0; i < 256; i++) {
                uint64_t v = 0;

                for (int b = 7; b >= 0; b--)
                        v = (v << 8) | stream[i * 8 + (size_t)b];
                gear[i] = v;
        }
        sodium_memzero(key, sizeof(key));
        sodium_memzero(stream, sizeof(stream));
        return 0;
}

int kb_chunker_new(const struct kb_chunker_params *p, const uint8_t seed[KB_CHUNKER_SEED_LEN],
                   struct kb_chunker **out)
{
        struct kb_chunker *c;
        unsigned bits;
        int r;

        if (!out)
                return -EINVAL;
        *out = NULL;
        if (!p || !seed)
                return -EINVAL;
        if (p->min_size < KB_CDC_WINDOW || p->min_size >= p->avg_size ||
            p->avg_size >= p->max_size || (p->avg_size & (p->avg_size - 1)) != 0)
                return -EINVAL;
        if (sodium_init() < 0)
                return -ENOMEM;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        r = make_gear(seed, c->gear);
        if (r < 0) {
                free(c);
                return r;
        }
        for (size_t i = 0; i < 256; i++)
                c->gear_ls[i] = c->gear[i] << 1;

        /* avg >= 128 here (a power of two above min >= 64), so bits - 2 >= 5; avg < 2^32 keeps
         * bits + 2 <= 33, well inside 63. */
        bits = log2_u32(p->avg_size);
        c->mask_s = high_mask(bits + 2);
        c->mask_l = high_mask(bits - 2);
        c->skip_end = p->min_size - KB_CDC_WINDOW;
        c->warm_end = p->min_size - 1;
        c->avg_size = p->avg_size;
        c->max_size = p->max_size;
        *out = c;
        return 0;
}

void kb_chunker_free(struct kb_chunker *c)
{
        if (!c)
                return;
        sodium_memzero(c, sizeof(*c)); /* the gear table is derived from the repository seed */
        free(c);
}

void kb_chunker_reset(struct kb_chunker *c)
{
        c->pos = 0;
        c->fp = 0;
}

/* Roll over p[0..n) testing each byte with mask; return the index of the byte after which to
 * cut, or n when there is none. On a cut the hash state is left meaningless: the caller resets. */
static inline size_t roll(const struct kb_chunker *c, const uint8_t *p, size_t n, uint64_t mask,
                          uint64_t *fpp)
{
        const uint64_t *g = c->gear, *gls = c->gear_ls;
        const uint64_t mask_ls = mask << 1;
        uint64_t fp = *fpp;
        size_t i = 0;

        /* (fp << 2) + (g << 1) == (fp_next << 1): testing it against mask << 1 is testing
         * fp_next against mask, and adding the second byte's gear yields the true next state. */
        for (; i + 1 < n; i += 2) {
                fp = (fp << 2) + gls[p[i]];
                if (__builtin_expect(!(fp & mask_ls), 0))
                        return i;
                fp += g[p[i + 1]];
                if (__builtin_expect(!(fp & mask), 0))
                        return i + 1;
        }
        if (i < n) {
                fp = (fp << 1) + g[p[i]];
                if (!(fp & mask))
                        return i;
        }
        *fpp = fp;
        return n;
}

static size_t min_sz(size_t a, size_t b)
{
        return a < b ? a : b;
}

size_t kb_chunker_scan(struct kb_chunker *c, const uint8_t *data, size_t len, int *found)
{
        size_t i = 0, n, k;
        size_t pos = c->pos;
        uint64_t fp = c->fp;

        *found = 0;
        if (pos < c->skip_end) {
                n = min_sz(len, c->skip_end - pos);
                i += n;
                pos += n;
        }
        if (pos < c->warm_end && i < len) {
                n = min_sz(len - i, c->warm_end - pos);
                for (k = 0; k < n; k++)
                        fp = (fp << 1) + c->gear[data[i + k]];
                i += n;
                pos += n;
        }
        if (pos < c->avg_size && i < len) {
                n = min_sz(len - i, c->avg_size - pos);
                k = roll(c, data + i, n, c->mask_s, &fp);
                if (k < n) {
                        i += k + 1;
                        goto cut;
                }
                i += n;
                pos += n;
        }
        if (pos < c->max_size && i < len) {
                n = min_sz(len - i, c->max_size - pos);
                k = roll(c, data + i, n, c->mask_l, &fp);
                if (k < n) {
                        i += k + 1;
                        goto cut;
                }
                i += n;
                pos += n;
                if (pos == c->max_size)
                        goto cut;
        }
        c->pos = pos;
        c->fp = fp;
        return i;

cut:
        *found = 1;
        c->pos = 0;
        c->fp = 0;
        return i;
}
