/* sniff.c - signatures of already-compressed formats (see sniff.h). */
#include "sniff.h"

#include <string.h>

struct signature {
        const char *bytes;
        size_t len;
};

#define SIG(s)                                                                                     \
        {                                                                                          \
                s, sizeof(s) - 1                                                                   \
        }

/* Each is long enough (>= 3 bytes, most 4-8) that ordinary data rarely starts with it by chance.
 * gzip's third byte is its method (8, deflate: the only one in use); bzip2's is followed by the
 * block size digit and the first block's magic (checked apart); JPEG's third byte starts the first
 * marker segment. */
static const struct signature signatures[] = {
    SIG("\x1f\x8b\x08"),       /* gzip */
    SIG("\xfd\x37zXZ\x00"),    /* xz */
    SIG("\x28\xb5\x2f\xfd"),   /* zstd frame */
    SIG("\x04\x22\x4d\x18"),   /* lz4 frame */
    SIG("7z\xbc\xaf\x27\x1c"), /* 7z */
    SIG("\x89PNG\r\n\x1a\n"),  /* PNG */
    SIG("\xff\xd8\xff"),       /* JPEG */
};

/* "BZh", the block size '1'..'9', then the first block's magic (pi's digits in BCD) or, for an
 * empty stream, the end-of-stream magic (sqrt(pi)). */
static int is_bzip2(const unsigned char *p, size_t len)
{
        return len >= 10 && memcmp(p, "BZh", 3) == 0 && p[3] >= '1' && p[3] <= '9' &&
               (memcmp(p + 4, "1AY&SY", 6) == 0 ||
                memcmp(p + 4, "\x17\x72\x45\x38\x50\x90", 6) == 0);
}

int kb_sniff_compressed(const void *p, size_t len)
{
        const unsigned char *b = p;

        for (size_t i = 0; i < sizeof(signatures) / sizeof(signatures[0]); i++)
                if (len >= signatures[i].len &&
                    memcmp(b, signatures[i].bytes, signatures[i].len) == 0)
                        return 1;
        return is_bzip2(b, len);
}
