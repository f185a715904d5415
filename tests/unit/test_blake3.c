/* test_blake3.c - BLAKE3 against the published test vectors (every tree shape up to 100 chunks),
 * against b3sum (the BLAKE3 team's own Rust implementation, a Debian package) on random data up
 * to 9 MiB, and each SIMD kernel held to the portable one on random lengths, offsets and keys. */
#include <criterion/criterion.h>

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blake3.h"
#include "crypto.h"

/* From BLAKE3's test_vectors/test_vectors.json: input byte i is i % 251; the key is the ASCII
 * string below; the first 32 bytes of each extended output. */
static const char vector_key[] = "whats the Elvish word for friend";

static const struct {
        size_t len;
        int keyed; /* keyed_hash, else hash */
        const char *out;
} vectors[] = {
    {0, 1, "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26"},
    {1, 1, "6d7878dfff2f485635d39013278ae14f1454b8c0a3a2d34bc1ab38228a80c95b"},
    {1023, 1, "c951ecdf03288d0fcc96ee3413563d8a6d3589547f2c2fb36d9786470f1b9d6e"},
    {1024, 1, "75c46f6f3d9eb4f55ecaaee480db732e6c2105546f1e675003687c31719c7ba4"},
    {1025, 1, "357dc55de0c7e382c900fd6e320acc04146be01db6a8ce7210b7189bd664ea69"},
    {2048, 1, "879cf1fa2ea0e79126cb1063617a05b6ad9d0b696d0d757cf053439f60a99dd1"},
    {2049, 1, "9f29700902f7c86e514ddc4df1e3049f258b2472b6dd5267f61bf13983b78dd5"},
    {3072, 1, "044a0e7b172a312dc02a4c9a818c036ffa2776368d7f528268d2e6b5df191770"},
    {3073, 1, "68dede9bef00ba89e43f31a6825f4cf433389fedae75c04ee9f0cf16a427c95a"},
    {4096, 1, "befc660aea2f1718884cd8deb9902811d332f4fc4a38cf7c7300d597a081bfc0"},
    {4097, 1, "00df940cd36bb9fa7cbbc3556744e0dbc8191401afe70520ba292ee3ca80abbc"},
    {5120, 1, "2c493e48e9b9bf31e0553a22b23503c0a3388f035cece68eb438d22fa1943e20"},
    {5121, 1, "6ccf1c34753e7a044db80798ecd0782a8f76f33563accaddbfbb2e0ea4b2d024"},
    {6144, 1, "3d6b6d21281d0ade5b2b016ae4034c5dec10ca7e475f90f76eac7138e9bc8f1d"},
    {6145, 1, "9ac301e9e39e45e3250a7e3b3df701aa0fb6889fbd80eeecf28dbc6300fbc539"},
    {7168, 1, "b42835e40e9d4a7f42ad8cc04f85a963a76e18198377ed84adddeaecacc6f3fc"},
    {7169, 1, "ed9b1a922c046fdb3d423ae34e143b05ca1bf28b710432857bf738bcedbfa511"},
    {8192, 1, "dc9637c8845a770b4cbf76b8daec0eebf7dc2eac11498517f08d44c8fc00d58a"},
    {8193, 1, "954a2a75420c8d6547e3ba5b98d963e6fa6491addc8c023189cc519821b4a1f5"},
    {16384, 1, "9e9fc4eb7cf081ea7c47d1807790ed211bfec56aa25bb7037784c13c4b707b0d"},
    {31744, 1, "efa53b389ab67c593dba624d898d0f7353ab99e4ac9d42302ee64cbf9939a419"},
    {102400, 1, "1c35d1a5811083fd7119f5d5d1ba027b4d01c0c6c49fb6ff2cf75393ea5db4a7"},
    {0, 0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
    {1024, 0, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
    {102400, 0, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"},
};

static const char *const kernels[] = {"portable", "avx2", "avx512"};
#define NKERNELS (sizeof(kernels) / sizeof(kernels[0]))

static uint8_t *pattern(size_t len)
{
        uint8_t *p = malloc(len ? len : 1);

        cr_assert(p);
        for (size_t i = 0; i < len; i++)
                p[i] = (uint8_t)(i % 251);
        return p;
}

static void assert_hex(const uint8_t out[32], const char *want, const char *what, size_t len)
{
        char hex[65];

        kb_hex_encode(out, 32, hex);
        cr_assert_str_eq(hex, want, "%s, %zu bytes", what, len);
}

Test(blake3, published_vectors_on_every_kernel)
{
        int tested = 0;

        for (size_t k = 0; k < NKERNELS; k++) {
                if (kb_blake3_use_kernel(kernels[k]) == -ENOTSUP)
                        continue;
                tested++;
                for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
                        uint8_t *in = pattern(vectors[i].len), out[32];

                        if (vectors[i].keyed)
                                kb_blake3_keyed((const uint8_t *)vector_key, in, vectors[i].len,
                                                out);
                        else
                                kb_blake3(in, vectors[i].len, out);
                        assert_hex(out, vectors[i].out, kernels[k], vectors[i].len);
                        free(in);
                }
        }
        kb_blake3_use_kernel(NULL);
        cr_assert_geq(tested, 1);
        cr_log_info("default kernel: %s", kb_blake3_kernel());
}

Test(blake3, unknown_kernel_is_refused)
{
        cr_assert_eq(kb_blake3_use_kernel("sse9"), -ENOTSUP);
        cr_assert_eq(kb_blake3_use_kernel(NULL), 0);
}

/* Lengths around every boundary the kernels and the tree care about (blocks, chunks, lane groups,
 * the 128-chunk leaf subtrees) plus random ones up to 3 MiB, at odd offsets, under random keys. */
Test(blake3, simd_kernels_match_portable)
{
        static const size_t edges[] = {63,
                                       64,
                                       65,
                                       1023,
                                       1024,
                                       1025,
                                       8 * 1024,
                                       16 * 1024 - 1,
                                       16 * 1024 + 1,
                                       17 * 1024,
                                       128 * 1024,
                                       128 * 1024 + 1,
                                       129 * 1024,
                                       256 * 1024 + 7,
                                       1 << 20};
        size_t max = 3 << 20;
        uint8_t *buf = malloc(max + 64);

        cr_assert(buf);
        randombytes_buf(buf, max + 64);
        for (size_t k = 1; k < NKERNELS; k++) {
                if (kb_blake3_use_kernel(kernels[k]) == -ENOTSUP) {
                        cr_log_info("kernel %s: not on this CPU", kernels[k]);
                        continue;
                }
                for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]) + 16; i++) {
                        size_t len = i < sizeof(edges) / sizeof(edges[0])
                                         ? edges[i]
                                         : randombytes_uniform((uint32_t)max);
                        size_t off = randombytes_uniform(64);
                        uint8_t key[32], a[32], b[32], c[32], d[32];

                        randombytes_buf(key, sizeof(key));
                        kb_blake3_use_kernel(kernels[k]);
                        kb_blake3_keyed(key, buf + off, len, a);
                        kb_blake3(buf + off, len, c);
                        kb_blake3_use_kernel("portable");
                        kb_blake3_keyed(key, buf + off, len, b);
                        kb_blake3(buf + off, len, d);
                        cr_assert(memcmp(a, b, 32) == 0, "%s keyed, %zu bytes", kernels[k], len);
                        cr_assert(memcmp(c, d, 32) == 0, "%s plain, %zu bytes", kernels[k], len);
                }
        }
        kb_blake3_use_kernel(NULL);
        free(buf);
}

Test(blake3, every_byte_and_the_key_matter)
{
        uint8_t *in = pattern(5000), key[32], ref[32], out[32];

        memcpy(key, vector_key, 32);
        kb_blake3_keyed(key, in, 5000, ref);
        for (size_t pos = 0; pos < 5000; pos += 97) {
                in[pos] ^= 1;
                kb_blake3_keyed(key, in, 5000, out);
                cr_assert(memcmp(out, ref, 32) != 0, "flip at %zu", pos);
                in[pos] ^= 1;
        }
        key[31] ^= 0x80;
        kb_blake3_keyed(key, in, 5000, out);
        cr_assert(memcmp(out, ref, 32) != 0);
        free(in);
}

/* b3sum's hex digest of `len` bytes, keyed (key on its standard input) or not. */
static void b3sum(const uint8_t *data, size_t len, const uint8_t *key, char hex[65])
{
        char dir[] = "/tmp/kb-blake3-XXXXXX", file[64], keyfile[64], cmd[256];
        FILE *f, *p;

        cr_assert(mkdtemp(dir));
        snprintf(file, sizeof(file), "%s/data", dir);
        snprintf(keyfile, sizeof(keyfile), "%s/key", dir);
        f = fopen(file, "wb");
        cr_assert(f && fwrite(data, 1, len, f) == len && fclose(f) == 0);
        f = fopen(keyfile, "wb");
        cr_assert(f &&
                  fwrite(key ? key : (const uint8_t *)"", 1, key ? 32 : 0, f) == (key ? 32 : 0) &&
                  fclose(f) == 0);
        snprintf(cmd, sizeof(cmd), "b3sum --no-names %s %s <%s", key ? "--keyed" : "", file,
                 keyfile);
        p = popen(cmd, "r");
        cr_assert(p, "cannot run b3sum (scripts/setup.sh installs it)");
        memset(hex, 0, 65);
        cr_assert_eq(fread(hex, 1, 64, p), 64,
                     "no digest from b3sum (scripts/setup.sh installs it)");
        cr_assert_eq(pclose(p), 0);
        unlink(file);
        unlink(keyfile);
        rmdir(dir);
}

Test(blake3, matches_b3sum)
{
        /* Every tree shape: one chunk, two, a right half of one chunk at several depths (129 and
         * 1025 chunks), a whole power of two (8 MiB), and an odd size past it. */
        static const size_t sizes[] = {0,
                                       1,
                                       1024,
                                       1025,
                                       64 * 1024 + 3,
                                       129 * 1024,
                                       129 * 1024 + 5,
                                       (1 << 20) + 17,
                                       8 << 20,
                                       (9 << 20) - 3};
        uint8_t *buf = malloc(9 << 20);

        cr_assert(buf);
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                uint8_t key[32], out[32];
                char want[65];

                randombytes_buf(buf, sizes[i]);
                randombytes_buf(key, sizeof(key));
                b3sum(buf, sizes[i], key, want);
                kb_blake3_keyed(key, buf, sizes[i], out);
                assert_hex(out, want, "keyed, against b3sum", sizes[i]);
                b3sum(buf, sizes[i], NULL, want);
                kb_blake3(buf, sizes[i], out);
                assert_hex(out, want, "plain, against b3sum", sizes[i]);
        }
        free(buf);
}
