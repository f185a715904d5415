/* utf8.c - UTF-8 validation and repair for outputs that must be UTF-8 (see utf8.h). */
#include "utf8.h"

#include <stdint.h>
#include <stdlib.h>

size_t kb_utf8_seq_len(const unsigned char *s, size_t len)
{
        size_t n, i;
        uint32_t cp;

        if (len == 0 || s[0] < 0xc2 || s[0] > 0xf4)
                return 0;
        n = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : 2;
        if (n > len)
                return 0;
        cp = s[0] & (0x7f >> n);
        for (i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return n;
}

char *kb_utf8_sanitize(const char *s, size_t len, int no_controls)
{
        const unsigned char *u = (const unsigned char *)s;
        char *out = malloc(len * 2 + 1), *o = out; /* a byte becomes at most two */
        size_t i = 0, n;

        if (!out)
                return NULL;
        while (i < len) {
                unsigned char c = u[i];

                if (c < 0x80) {
                        *o++ = no_controls && (c < 0x20 || c == 0x7f) ? '?' : (char)c;
                        i++;
                } else if ((n = kb_utf8_seq_len(u + i, len - i)) > 0) {
                        for (size_t k = 0; k < n; k++)
                                *o++ = (char)u[i + k];
                        i += n;
                } else {
                        *o++ = (char)(0xc0 | c >> 6);
                        *o++ = (char)(0x80 | (c & 0x3f));
                        i++;
                }
        }
        *o = '\0';
        return out;
}
