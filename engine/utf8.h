/* utf8.h - UTF-8 validation for the outputs that must be valid UTF-8 (JSON, Prometheus label
 * values) while the data they carry (file names, paths) may be any bytes. */
#ifndef KB_UTF8_H
#define KB_UTF8_H

#include <stddef.h>

/* Length (2-4) of the valid multi-byte UTF-8 sequence at s (at most len bytes), or 0 when s does
 * not start one (an ASCII byte, a stray continuation byte, an overlong or surrogate encoding). */
size_t kb_utf8_seq_len(const unsigned char *s, size_t len);

/* A copy of s[0..len) that is valid UTF-8 without control characters: every byte that is not
 * part of a valid sequence becomes the code point of the same value (U+0080..U+00FF), the way
 * the JSON outputs show such bytes, and with `no_controls` the C0 controls and DEL become '?'.
 * NUL-terminated; NULL when out of memory. */
char *kb_utf8_sanitize(const char *s, size_t len, int no_controls);

#endif
