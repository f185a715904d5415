/* blake3_int.h - what blake3.c shares with its SIMD kernels (blake3_x86.c). */
#ifndef KB_BLAKE3_INT_H
#define KB_BLAKE3_INT_H

#include <stddef.h>
#include <stdint.h>

#define B3_BLOCK_LEN 64
#define B3_CHUNK_LEN 1024
#define B3_ROUNDS    7

enum {
        B3_CHUNK_START = 1 << 0,
        B3_CHUNK_END = 1 << 1,
        B3_PARENT = 1 << 2,
        B3_ROOT = 1 << 3,
        B3_KEYED_HASH = 1 << 4,
};

extern const uint32_t kb_b3_iv[8];
/* Message word order of each round: the permutation applied r times. */
extern const uint8_t kb_b3_schedule[B3_ROUNDS][16];

/* Compress `n` inputs of `blocks` whole 64-byte blocks each, input i at in + i * stride, in
 * parallel, from chaining value `key`, writing each input's 32-byte chaining value to
 * out + 32 * i. Input i gets counter + i
 * when increment is set, counter otherwise. flags go on every block, flags_start on the first,
 * flags_end on the last. */
typedef void kb_b3_many_fn(const uint8_t *in, size_t stride, size_t n, size_t blocks,
                           const uint32_t key[8], uint64_t counter, int increment, uint8_t flags,
                           uint8_t flags_start, uint8_t flags_end, uint8_t *out);

kb_b3_many_fn kb_b3_many_portable;
/* NULL where the compiler cannot build them; callers check the CPU first. */
extern kb_b3_many_fn *const kb_b3_many_avx512;
extern kb_b3_many_fn *const kb_b3_many_avx2;

#endif
