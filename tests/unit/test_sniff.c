/* test_sniff.c - the output of the real gzip, xz, zstd, bzip2 and lz4 tools (and PNG and JPEG
 * headers) is recognised as already compressed; text, an ELF binary, a zip archive and near
 * misses of each signature are not. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sniff.h"

static const char text[] = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n"
                           "data:\n  retention: 7d\n  schedule: nightly\n";

/* The first bytes of `tool` compressing text, through a shell pipe. */
static size_t run_tool(const char *tool, unsigned char *out, size_t cap)
{
        char cmd[256];
        FILE *f;
        size_t n;

        snprintf(cmd, sizeof(cmd), "printf '%%s' \"$KB_SNIFF_TEXT\" | %s", tool);
        cr_assert_eq(setenv("KB_SNIFF_TEXT", text, 1), 0);
        f = popen(cmd, "r");
        cr_assert(f, "%s", tool);
        n = fread(out, 1, cap, f);
        cr_assert_eq(pclose(f), 0, "%s failed", tool);
        cr_assert_gt(n, 8, "%s wrote %zu bytes", tool, n);
        return n;
}

Test(sniff, real_compressors_are_recognised)
{
        static const char *const tools[] = {"gzip -c",  "gzip -9 -n -c", "xz -c",
                                            "xz -0 -c", "zstd -q -c",    "zstd -q -19 -c",
                                            "bzip2 -c", "bzip2 -1 -c",   "lz4 -q -c"};
        unsigned char buf[4096];

        for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++) {
                size_t n = run_tool(tools[i], buf, sizeof(buf));

                cr_expect_eq(kb_sniff_compressed(buf, n), 1, "%s", tools[i]);
        }
}

Test(sniff, image_headers_are_recognised)
{
        static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                                            0,    0,   0,   13,  'I',  'H',  'D',  'R'};
        static const unsigned char jpeg[] = {0xff, 0xd8, 0xff, 0xe0, 0, 16, 'J', 'F', 'I', 'F'};

        cr_expect_eq(kb_sniff_compressed(png, sizeof(png)), 1);
        cr_expect_eq(kb_sniff_compressed(jpeg, sizeof(jpeg)), 1);
}

Test(sniff, other_data_and_near_misses_are_not)
{
        unsigned char buf[4096];
        size_t n;
        FILE *f;

        cr_expect_eq(kb_sniff_compressed(text, sizeof(text) - 1), 0);
        cr_expect_eq(kb_sniff_compressed("", 0), 0);
        f = fopen("/bin/sh", "rb");
        cr_assert(f);
        n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        cr_expect_eq(kb_sniff_compressed(buf, n), 0, "an ELF binary");
        /* A zip may hold stored members: it is left to zstd. */
        n = run_tool("python3 -c 'import io, sys, zipfile; b = io.BytesIO(); "
                     "zipfile.ZipFile(b, \"w\").writestr(\"a\", sys.stdin.read()); "
                     "sys.stdout.buffer.write(b.getvalue())'",
                     buf, sizeof(buf));
        cr_expect_eq(kb_sniff_compressed(buf, n), 0, "a zip archive");

        /* Each signature cut short, or with its tell-tale byte changed. */
        n = run_tool("gzip -c", buf, sizeof(buf));
        cr_expect_eq(kb_sniff_compressed(buf, 2), 0);
        buf[2] = 7; /* a compression method other than deflate */
        cr_expect_eq(kb_sniff_compressed(buf, n), 0);
        n = run_tool("bzip2 -c", buf, sizeof(buf));
        cr_expect_eq(kb_sniff_compressed(buf, 9), 0);
        buf[3] = '0'; /* block sizes are 1-9 */
        cr_expect_eq(kb_sniff_compressed(buf, n), 0);
        cr_expect_eq(kb_sniff_compressed("BZh91AY&SX", 10), 0);
        n = run_tool("zstd -q -c", buf, sizeof(buf));
        buf[3] ^= 1;
        cr_expect_eq(kb_sniff_compressed(buf, n), 0);
        n = run_tool("xz -c", buf, sizeof(buf));
        cr_expect_eq(kb_sniff_compressed(buf, 5), 0);
        cr_expect_eq(kb_sniff_compressed("\xff\xd8", 2), 0);
}
