/* blake3_x86.c - BLAKE3 compression of 16 (AVX-512) or 8 (AVX2) inputs at once.
 *
 * Each SIMD lane holds one input's state word, so the rounds are the portable ones on vectors.
 * The messages come in row by row (one input's block per register) and are transposed to word by
 * word. Built with function-level target attributes, so the rest of kbackup keeps the baseline
 * instruction set; blake3.c calls these only where the CPU has the extension. */
#include "blake3_int.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define X86_KERNELS 1

/* Loops over a fixed number of vectors are unrolled whatever the optimisation level: left as
 * loops, their arrays of vectors live in memory, not registers. -O2 (RelWithDebInfo, the image's
 * build) did not unroll them and hashed at 2.2-2.4 GB/s here against 3.1-3.3 GB/s with -O3. */
#define UNROLL _Pragma("GCC unroll 16")

/* The per-lane counters (low and high words) and the 32-byte outputs, which are cheap enough to
 * go through memory once per group. */
static void lane_counters(uint32_t *lo, uint32_t *hi, size_t lanes, uint64_t counter, int increment)
{
        size_t i;

        for (i = 0; i < lanes; i++) {
                uint64_t c = counter + (increment ? i : 0);

                lo[i] = (uint32_t)c;
                hi[i] = (uint32_t)(c >> 32);
        }
}

static void lane_outputs(const uint32_t *words /* [8][lanes] */, size_t lanes, size_t n,
                         uint8_t *out)
{
        size_t i, j;

        for (i = 0; i < n; i++)
                for (j = 0; j < 8; j++)
                        memcpy(out + 32 * i + 4 * j, &words[j * lanes + i], 4);
}

/* ---- AVX-512: 16 lanes ---------------------------------------------------------------------- */

#define T512 __attribute__((target("avx512f")))

#define G512(a, b, c, d, x, y)                                                                     \
        do {                                                                                       \
                a = _mm512_add_epi32(_mm512_add_epi32(a, b), x);                                   \
                d = _mm512_ror_epi32(_mm512_xor_si512(d, a), 16);                                  \
                c = _mm512_add_epi32(c, d);                                                        \
                b = _mm512_ror_epi32(_mm512_xor_si512(b, c), 12);                                  \
                a = _mm512_add_epi32(_mm512_add_epi32(a, b), y);                                   \
                d = _mm512_ror_epi32(_mm512_xor_si512(d, a), 8);                                   \
                c = _mm512_add_epi32(c, d);                                                        \
                b = _mm512_ror_epi32(_mm512_xor_si512(b, c), 7);                                   \
        } while (0)

#define ROUND(G, v, m, r)                                                                          \
        do {                                                                                       \
                const uint8_t *s_ = kb_b3_schedule[r];                                             \
                G(v[0], v[4], v[8], v[12], m[s_[0]], m[s_[1]]);                                    \
                G(v[1], v[5], v[9], v[13], m[s_[2]], m[s_[3]]);                                    \
                G(v[2], v[6], v[10], v[14], m[s_[4]], m[s_[5]]);                                   \
                G(v[3], v[7], v[11], v[15], m[s_[6]], m[s_[7]]);                                   \
                G(v[0], v[5], v[10], v[15], m[s_[8]], m[s_[9]]);                                   \
                G(v[1], v[6], v[11], v[12], m[s_[10]], m[s_[11]]);                                 \
                G(v[2], v[7], v[8], v[13], m[s_[12]], m[s_[13]]);                                  \
                G(v[3], v[4], v[9], v[14], m[s_[14]], m[s_[15]]);                                  \
        } while (0)

#define ROUNDS(G, v, m)                                                                            \
        do {                                                                                       \
                ROUND(G, v, m, 0);                                                                 \
                ROUND(G, v, m, 1);                                                                 \
                ROUND(G, v, m, 2);                                                                 \
                ROUND(G, v, m, 3);                                                                 \
                ROUND(G, v, m, 4);                                                                 \
                ROUND(G, v, m, 5);                                                                 \
                ROUND(G, v, m, 6);                                                                 \
        } while (0)

/* m[w] = word w of the block at p[i] + off, in lane i. A 16x16 transpose of 32-bit words: pairs
 * of rows interleave by words, then by quad-words, and four 128-bit lanes swap across registers. */
T512 static inline void load_msg16(const uint8_t *const *p, size_t off, __m512i m[16])
{
        __m512i r[16], a[16], b[16];
        int i, g, w;

        UNROLL
        for (i = 0; i < 16; i++)
                r[i] = _mm512_loadu_si512((const void *)(p[i] + off));
        UNROLL
        for (i = 0; i < 16; i += 2) {
                a[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
                a[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
        }
        /* b[4g + w], 128-bit lane k: word 4k + w of rows 4g..4g+3 */
        UNROLL
        for (g = 0; g < 4; g++) {
                b[4 * g + 0] = _mm512_unpacklo_epi64(a[4 * g], a[4 * g + 2]);
                b[4 * g + 1] = _mm512_unpackhi_epi64(a[4 * g], a[4 * g + 2]);
                b[4 * g + 2] = _mm512_unpacklo_epi64(a[4 * g + 1], a[4 * g + 3]);
                b[4 * g + 3] = _mm512_unpackhi_epi64(a[4 * g + 1], a[4 * g + 3]);
        }
        UNROLL
        for (w = 0; w < 4; w++) {
                __m512i c0 = _mm512_shuffle_i32x4(b[w], b[4 + w], 0x44);
                __m512i c1 = _mm512_shuffle_i32x4(b[w], b[4 + w], 0xEE);
                __m512i c2 = _mm512_shuffle_i32x4(b[8 + w], b[12 + w], 0x44);
                __m512i c3 = _mm512_shuffle_i32x4(b[8 + w], b[12 + w], 0xEE);

                m[w] = _mm512_shuffle_i32x4(c0, c2, 0x88);
                m[4 + w] = _mm512_shuffle_i32x4(c0, c2, 0xDD);
                m[8 + w] = _mm512_shuffle_i32x4(c1, c3, 0x88);
                m[12 + w] = _mm512_shuffle_i32x4(c1, c3, 0xDD);
        }
}

/* ---- AVX2: 8 lanes -------------------------------------------------------------------------- */

#define T256 __attribute__((target("avx2")))

/* Rotations by 16 and 8 are byte shuffles; 12 and 7 take two shifts. */
#define ROR256_16(x)                                                                               \
        _mm256_shuffle_epi8(x,                                                                     \
                            _mm256_set_epi8(13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2,  \
                                            13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2))
#define ROR256_8(x)                                                                                \
        _mm256_shuffle_epi8(x,                                                                     \
                            _mm256_set_epi8(12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1,  \
                                            12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1))
#define ROR256(x, n) _mm256_or_si256(_mm256_srli_epi32(x, n), _mm256_slli_epi32(x, 32 - (n)))

#define G256(a, b, c, d, x, y)                                                                     \
        do {                                                                                       \
                a = _mm256_add_epi32(_mm256_add_epi32(a, b), x);                                   \
                d = ROR256_16(_mm256_xor_si256(d, a));                                             \
                c = _mm256_add_epi32(c, d);                                                        \
                b = ROR256(_mm256_xor_si256(b, c), 12);                                            \
                a = _mm256_add_epi32(_mm256_add_epi32(a, b), y);                                   \
                d = ROR256_8(_mm256_xor_si256(d, a));                                              \
                c = _mm256_add_epi32(c, d);                                                        \
                b = ROR256(_mm256_xor_si256(b, c), 7);                                             \
        } while (0)

/* m[w] = word w of the 32 bytes at p[i] + off, in lane i: an 8x8 transpose of 32-bit words. */
T256 static inline void load_msg8(const uint8_t *const *p, size_t off, __m256i m[8])
{
        __m256i r[8], a[8], b[8];
        int i, w;

        UNROLL
        for (i = 0; i < 8; i++)
                r[i] = _mm256_loadu_si256((const void *)(p[i] + off));
        UNROLL
        for (i = 0; i < 8; i += 2) {
                a[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
                a[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
        }
        /* b[4g + w], 128-bit half k: word 4k + w of rows 4g..4g+3 */
        UNROLL
        for (i = 0; i < 8; i += 4) {
                b[i + 0] = _mm256_unpacklo_epi64(a[i], a[i + 2]);
                b[i + 1] = _mm256_unpackhi_epi64(a[i], a[i + 2]);
                b[i + 2] = _mm256_unpacklo_epi64(a[i + 1], a[i + 3]);
                b[i + 3] = _mm256_unpackhi_epi64(a[i + 1], a[i + 3]);
        }
        UNROLL
        for (w = 0; w < 4; w++) {
                m[w] = _mm256_permute2x128_si256(b[w], b[4 + w], 0x20);
                m[4 + w] = _mm256_permute2x128_si256(b[w], b[4 + w], 0x31);
        }
}

T256 static inline void load_block8(const uint8_t *const *p, size_t off, __m256i m[16])
{
        load_msg8(p, off, m);
        load_msg8(p, off + 32, m + 8);
}

/* ---- both widths ---------------------------------------------------------------------------- */

/* One group of `width` inputs through all their blocks: the same code for each vector type. */
#define DEFINE_GROUP(name, attr, vec, width, set1, loadu, storeu, xor, G, load_block)              \
        attr static void name(const uint8_t *const *p, size_t n, size_t blocks,                    \
                              const uint32_t key[8], uint64_t counter, int increment,              \
                              uint8_t flags, uint8_t flags_start, uint8_t flags_end, uint8_t *out) \
        {                                                                                          \
                uint32_t lo[width], hi[width], words[8 * width];                                   \
                vec h[8], v[16], m[16], ctr_lo, ctr_hi;                                            \
                size_t b;                                                                          \
                int i;                                                                             \
                                                                                                   \
                lane_counters(lo, hi, width, counter, increment);                                  \
                ctr_lo = loadu((const void *)lo);                                                  \
                ctr_hi = loadu((const void *)hi);                                                  \
                UNROLL                                                                             \
                for (i = 0; i < 8; i++)                                                            \
                        h[i] = set1((int)key[i]);                                                  \
                for (b = 0; b < blocks; b++) {                                                     \
                        uint8_t f = flags | (b == 0 ? flags_start : 0) |                           \
                                    (b + 1 == blocks ? flags_end : 0);                             \
                                                                                                   \
                        load_block(p, b *B3_BLOCK_LEN, m);                                         \
                        UNROLL                                                                     \
                        for (i = 0; i < 8; i++)                                                    \
                                v[i] = h[i];                                                       \
                        UNROLL                                                                     \
                        for (i = 0; i < 4; i++)                                                    \
                                v[8 + i] = set1((int)kb_b3_iv[i]);                                 \
                        v[12] = ctr_lo;                                                            \
                        v[13] = ctr_hi;                                                            \
                        v[14] = set1(B3_BLOCK_LEN);                                                \
                        v[15] = set1(f);                                                           \
                        ROUNDS(G, v, m);                                                           \
                        UNROLL                                                                     \
                        for (i = 0; i < 8; i++)                                                    \
                                h[i] = xor(v[i], v[i + 8]);                                        \
                }                                                                                  \
                UNROLL                                                                             \
                for (i = 0; i < 8; i++)                                                            \
                        storeu((void *)(words + width * i), h[i]);                                 \
                lane_outputs(words, width, n, out);                                                \
        }

DEFINE_GROUP(group16, T512, __m512i, 16, _mm512_set1_epi32, _mm512_loadu_si512, _mm512_storeu_si512,
             _mm512_xor_si512, G512, load_msg16)
DEFINE_GROUP(group8, T256, __m256i, 8, _mm256_set1_epi32, _mm256_loadu_si256, _mm256_storeu_si256,
             _mm256_xor_si256, G256, load_block8)

typedef void group_fn(const uint8_t *const *p, size_t n, size_t blocks, const uint32_t key[8],
                      uint64_t counter, int increment, uint8_t flags, uint8_t flags_start,
                      uint8_t flags_end, uint8_t *out);

/* Inputs in groups as wide as the widest kernel allowed (16 lanes, or 8), narrower ones for what
 * is left. Measured here, a group of 16 takes 1.2 times a group of 8, which takes 1.5 times one
 * input through the portable code: so up to 8 inputs (a small file's chunks, the top levels of
 * the tree) go 8 wide, and a single one goes alone. Idle lanes of a group repeat its first input;
 * their results are dropped. */
static void many_groups(size_t widest, const uint8_t *in, size_t stride, size_t n, size_t blocks,
                        const uint32_t key[8], uint64_t counter, int increment, uint8_t flags,
                        uint8_t flags_start, uint8_t flags_end, uint8_t *out)
{
        while (n > 0) {
                const uint8_t *lanes[16];
                size_t width = widest == 16 && n > 8 ? 16 : n > 1 ? 8 : 1;
                size_t k = n < width ? n : width, i;

                for (i = 0; i < width; i++)
                        lanes[i] = in + (i < k ? i : 0) * stride;
                if (width == 16)
                        group16(lanes, k, blocks, key, counter, increment, flags, flags_start,
                                flags_end, out);
                else if (width == 8)
                        group8(lanes, k, blocks, key, counter, increment, flags, flags_start,
                               flags_end, out);
                else
                        kb_b3_many_portable(in, stride, 1, blocks, key, counter, increment, flags,
                                            flags_start, flags_end, out);
                in += k * stride;
                n -= k;
                out += 32 * k;
                if (increment)
                        counter += k;
        }
}

/* AVX-512F CPUs all have AVX2, so the 8-wide groups are there too. */
static void many_avx512(const uint8_t *in, size_t stride, size_t n, size_t blocks,
                        const uint32_t key[8], uint64_t counter, int increment, uint8_t flags,
                        uint8_t flags_start, uint8_t flags_end, uint8_t *out)
{
        many_groups(16, in, stride, n, blocks, key, counter, increment, flags, flags_start,
                    flags_end, out);
}

static void many_avx2(const uint8_t *in, size_t stride, size_t n, size_t blocks,
                      const uint32_t key[8], uint64_t counter, int increment, uint8_t flags,
                      uint8_t flags_start, uint8_t flags_end, uint8_t *out)
{
        many_groups(8, in, stride, n, blocks, key, counter, increment, flags, flags_start,
                    flags_end, out);
}

kb_b3_many_fn *const kb_b3_many_avx512 = many_avx512;
kb_b3_many_fn *const kb_b3_many_avx2 = many_avx2;

#else

kb_b3_many_fn *const kb_b3_many_avx512 = NULL;
kb_b3_many_fn *const kb_b3_many_avx2 = NULL;

#endif
