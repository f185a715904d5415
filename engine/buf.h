/* buf.h - a growable byte buffer, the currency for object bodies between layers. */
#ifndef KB_BUF_H
#define KB_BUF_H

#include <stddef.h>
#include <stdint.h>

struct kb_buf {
        uint8_t *data;
        size_t len;
        size_t cap;
};

#define KB_BUF_INIT                                                                                \
        {                                                                                          \
                NULL, 0, 0                                                                         \
        }

/* Make room for at least `extra` more bytes; returns 0 or -ENOMEM. */
int kb_buf_reserve(struct kb_buf *b, size_t extra);
int kb_buf_append(struct kb_buf *b, const void *p, size_t n);
/* Give an empty buffer room for `cap` bytes at a page-aligned address, as O_DIRECT writes want
 * (storage-backends/fs.c); a later growth past cap may move it off alignment. 0 or -ENOMEM. */
int kb_buf_reserve_aligned(struct kb_buf *b, size_t cap);
void kb_buf_reset(struct kb_buf *b);
/* Release the memory and empty the buffer. */
void kb_buf_free(struct kb_buf *b);

/* A NUL-terminated copy of n bytes that need not be terminated (protobuf bytes fields); NULL
 * when out of memory. strndup would scan past n looking for a NUL that is not there. */
char *kb_bytes_strdup(const void *p, size_t n);

#endif
