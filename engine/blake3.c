/* blake3.c - BLAKE3's tree over one in-memory buffer, and its portable compression function.
 *
 * The input is cut into 1 KiB chunks; each chunk's chaining value (CV) comes from compressing its
 * 64-byte blocks in turn, and CVs are merged pairwise by parent nodes up to the root. The left
 * subtree of every node holds the largest power of two of chunks that leaves the right one
 * non-empty, which is the same as pairing each level's CVs left to right and carrying an odd last
 * one up unchanged. Chunks (and parents) of one level are independent, so the SIMD kernels hash
 * 16 (AVX-512) or 8 (AVX2) of them at once; only a final partial chunk goes one block at a time.
 * Subtrees of up to LEAF_CHUNKS chunks are reduced with their CVs on the stack; larger inputs
 * split by the rule above, so memory stays constant whatever the input size. */
#include "blake3.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "blake3_int.h"

/* Chunks reduced together with their CVs on the stack (4 KiB). A power of two, so every leaf
 * subtree but the last is whole. */
#define LEAF_CHUNKS 128

const uint32_t kb_b3_iv[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                              0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};

const uint8_t kb_b3_schedule[B3_ROUNDS][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

struct hasher {
        uint32_t key[8]; /* the key words, or the IV */
        uint8_t flags;   /* 0, or B3_KEYED_HASH */
        kb_b3_many_fn *many;
};

static inline uint32_t load32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void store32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
        p[2] = (uint8_t)(v >> 16);
        p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t rotr32(uint32_t x, int n)
{
        return (x >> n) | (x << (32 - n));
}

#define G(v, a, b, c, d, x, y)                                                                     \
        do {                                                                                       \
                v[a] += v[b] + (x);                                                                \
                v[d] = rotr32(v[d] ^ v[a], 16);                                                    \
                v[c] += v[d];                                                                      \
                v[b] = rotr32(v[b] ^ v[c], 12);                                                    \
                v[a] += v[b] + (y);                                                                \
                v[d] = rotr32(v[d] ^ v[a], 8);                                                     \
                v[c] += v[d];                                                                      \
                v[b] = rotr32(v[b] ^ v[c], 7);                                                     \
        } while (0)

/* One compression: cv becomes the first half of the output, which is all a 32-byte hash uses. */
static void compress(uint32_t cv[8], const uint8_t block[B3_BLOCK_LEN], uint32_t block_len,
                     uint64_t counter, uint8_t flags)
{
        uint32_t m[16], v[16];
        int i, r;

        for (i = 0; i < 16; i++)
                m[i] = load32(block + 4 * i);
        memcpy(v, cv, 8 * sizeof(uint32_t));
        memcpy(v + 8, kb_b3_iv, 4 * sizeof(uint32_t));
        v[12] = (uint32_t)counter;
        v[13] = (uint32_t)(counter >> 32);
        v[14] = block_len;
        v[15] = flags;
        for (r = 0; r < B3_ROUNDS; r++) {
                const uint8_t *s = kb_b3_schedule[r];

                G(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
                G(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
                G(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
                G(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
                G(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
                G(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
                G(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
                G(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
        }
        for (i = 0; i < 8; i++)
                cv[i] = v[i] ^ v[i + 8];
}

static void store_cv(uint8_t out[32], const uint32_t cv[8])
{
        int i;

        for (i = 0; i < 8; i++)
                store32(out + 4 * i, cv[i]);
}

void kb_b3_many_portable(const uint8_t *in, size_t stride, size_t n, size_t blocks,
                         const uint32_t key[8], uint64_t counter, int increment, uint8_t flags,
                         uint8_t flags_start, uint8_t flags_end, uint8_t *out)
{
        size_t i, b;

        for (i = 0; i < n; i++) {
                uint32_t cv[8];

                memcpy(cv, key, sizeof(cv));
                for (b = 0; b < blocks; b++) {
                        uint8_t f = flags;

                        if (b == 0)
                                f |= flags_start;
                        if (b + 1 == blocks)
                                f |= flags_end;
                        compress(cv, in + i * stride + b * B3_BLOCK_LEN, B3_BLOCK_LEN,
                                 counter + (increment ? i : 0), f);
                }
                store_cv(out + 32 * i, cv);
        }
}

/* One chunk of 0..1024 bytes, block by block (a partial last block is zero-padded). */
static void chunk_cv(const struct hasher *h, const uint8_t *in, size_t len, uint64_t counter,
                     uint8_t root, uint8_t out[32])
{
        uint32_t cv[8];
        uint8_t block[B3_BLOCK_LEN];
        size_t off = 0;

        memcpy(cv, h->key, sizeof(cv));
        do {
                size_t n = len - off < B3_BLOCK_LEN ? len - off : B3_BLOCK_LEN;
                uint8_t f = h->flags;

                if (off == 0)
                        f |= B3_CHUNK_START;
                if (off + n == len)
                        f |= B3_CHUNK_END | root;
                memset(block, 0, sizeof(block));
                if (n)
                        memcpy(block, in + off, n);
                compress(cv, block, (uint32_t)n, counter, f);
                off += n;
        } while (off < len);
        store_cv(out, cv);
}

static void parent_cv(const struct hasher *h, const uint8_t pair[64], uint8_t root, uint8_t out[32])
{
        uint32_t cv[8];

        memcpy(cv, h->key, sizeof(cv));
        compress(cv, pair, B3_BLOCK_LEN, 0, h->flags | B3_PARENT | root);
        store_cv(out, cv);
}

/* A subtree of 1..LEAF_CHUNKS chunks: every chunk's CV, then level after level of parents. A
 * single chunk is the right half of a larger tree (a root spans more than one chunk here), so its
 * CV is the subtree's. */
static void leaf_subtree(const struct hasher *h, const uint8_t *in, size_t len, uint64_t counter,
                         uint8_t root, uint8_t out[32])
{
        uint8_t cvs[LEAF_CHUNKS * 32], next[LEAF_CHUNKS / 2 * 32];
        size_t whole = len / B3_CHUNK_LEN, n = whole;

        h->many(in, B3_CHUNK_LEN, whole, B3_CHUNK_LEN / B3_BLOCK_LEN, h->key, counter, 1, h->flags,
                B3_CHUNK_START, B3_CHUNK_END, cvs);
        if (len % B3_CHUNK_LEN)
                chunk_cv(h, in + whole * B3_CHUNK_LEN, len % B3_CHUNK_LEN, counter + whole, 0,
                         cvs + 32 * n++);
        while (n > 2) {
                size_t pairs = n / 2;

                h->many(cvs, 64, pairs, 1, h->key, 0, 0, h->flags | B3_PARENT, 0, 0, next);
                if (n % 2)
                        memcpy(next + 32 * pairs, cvs + 32 * (n - 1), 32);
                n = pairs + n % 2;
                memcpy(cvs, next, 32 * n);
        }
        if (n == 1)
                memcpy(out, cvs, 32);
        else
                parent_cv(h, cvs, root, out);
}

/* The CV of the subtree over in[0..len) (len >= 1), whose first chunk is number `counter`; with
 * `root` (the whole input, then more than one chunk), the hash. */
static void subtree(const struct hasher *h, const uint8_t *in, size_t len, uint64_t counter,
                    uint8_t root, uint8_t out[32])
{
        size_t chunks = (len + B3_CHUNK_LEN - 1) / B3_CHUNK_LEN, left = 1;
        uint8_t pair[64];

        if (chunks <= LEAF_CHUNKS) {
                leaf_subtree(h, in, len, counter, root, out);
                return;
        }
        while (left * 2 < chunks)
                left *= 2;
        subtree(h, in, left * B3_CHUNK_LEN, counter, 0, pair);
        subtree(h, in + left * B3_CHUNK_LEN, len - left * B3_CHUNK_LEN, counter + left, 0,
                pair + 32);
        parent_cv(h, pair, root, out);
}

/* ---- kernel choice ------------------------------------------------------------------------- */

static pthread_once_t kernel_once = PTHREAD_ONCE_INIT;
static kb_b3_many_fn *kernel_many = kb_b3_many_portable;
static const char *kernel_name = "portable";
static int have_avx2, have_avx512;
static _Thread_local kb_b3_many_fn *thread_many;
static _Thread_local const char *thread_name;

static void kernel_choose(void)
{
#if defined(__x86_64__)
        __builtin_cpu_init();
        have_avx2 = kb_b3_many_avx2 && __builtin_cpu_supports("avx2");
        /* The AVX-512 kernel runs its small groups on the AVX2 one. */
        have_avx512 = have_avx2 && kb_b3_many_avx512 && __builtin_cpu_supports("avx512f");
#endif
        if (have_avx512) {
                kernel_many = kb_b3_many_avx512;
                kernel_name = "avx512";
        } else if (have_avx2) {
                kernel_many = kb_b3_many_avx2;
                kernel_name = "avx2";
        }
}

const char *kb_blake3_kernel(void)
{
        pthread_once(&kernel_once, kernel_choose);
        return thread_name ? thread_name : kernel_name;
}

int kb_blake3_use_kernel(const char *name)
{
        pthread_once(&kernel_once, kernel_choose);
        if (!name) {
                thread_many = NULL;
                thread_name = NULL;
        } else if (!strcmp(name, "portable")) {
                thread_many = kb_b3_many_portable;
                thread_name = "portable";
        } else if (!strcmp(name, "avx2") && have_avx2) {
                thread_many = kb_b3_many_avx2;
                thread_name = "avx2";
        } else if (!strcmp(name, "avx512") && have_avx512) {
                thread_many = kb_b3_many_avx512;
                thread_name = "avx512";
        } else {
                return -ENOTSUP;
        }
        return 0;
}

static void hash(const uint32_t key[8], uint8_t flags, const void *data, size_t len,
                 uint8_t out[KB_BLAKE3_OUT_LEN])
{
        struct hasher h;

        pthread_once(&kernel_once, kernel_choose);
        memcpy(h.key, key, sizeof(h.key));
        h.flags = flags;
        h.many = thread_many ? thread_many : kernel_many;
        if (len <= B3_CHUNK_LEN)
                chunk_cv(&h, data, len, 0, B3_ROOT, out);
        else
                subtree(&h, data, len, 0, B3_ROOT, out);
}

void kb_blake3_keyed(const uint8_t key[KB_BLAKE3_KEY_LEN], const void *data, size_t len,
                     uint8_t out[KB_BLAKE3_OUT_LEN])
{
        uint32_t k[8];
        int i;

        for (i = 0; i < 8; i++)
                k[i] = load32(key + 4 * i);
        hash(k, B3_KEYED_HASH, data, len, out);
}

void kb_blake3(const void *data, size_t len, uint8_t out[KB_BLAKE3_OUT_LEN])
{
        hash(kb_b3_iv, 0, data, len, out);
}
