/* blake3.h - BLAKE3 (keyed and plain), one-shot, 32-byte output: the chunk-id hash.
 *
 * Chunk ids hash every byte backed up. SHA-256 with the CPU's SHA extensions runs at ~1.3 GB/s
 * here and was a fifth of backup CPU; BLAKE3 hashes 16 of its 1 KiB chunks at once with AVX-512
 * (8 with AVX2), several times faster (docs/performance.md). Written from the BLAKE3 paper and
 * checked against its published test vectors. */
#ifndef KB_BLAKE3_H
#define KB_BLAKE3_H

#include <stddef.h>
#include <stdint.h>

#define KB_BLAKE3_KEY_LEN 32
#define KB_BLAKE3_OUT_LEN 32

/* BLAKE3's keyed_hash mode (a PRF/MAC under a 32-byte key). */
void kb_blake3_keyed(const uint8_t key[KB_BLAKE3_KEY_LEN], const void *data, size_t len,
                     uint8_t out[KB_BLAKE3_OUT_LEN]);
/* BLAKE3's plain hash mode. */
void kb_blake3(const void *data, size_t len, uint8_t out[KB_BLAKE3_OUT_LEN]);

/* The SIMD kernel in use: "avx512", "avx2" or "portable". */
const char *kb_blake3_kernel(void);
/* For tests: make this thread use kernel `name` ("portable", "avx2", "avx512"), or with NULL the
 * fastest one the CPU has. Returns 0, or -ENOTSUP when this CPU or build lacks it. */
int kb_blake3_use_kernel(const char *name);

#endif
