/* buf.c - growable byte buffer. */
#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int kb_buf_reserve(struct kb_buf *b, size_t extra)
{
        size_t need, cap;
        uint8_t *p;

        if (extra > SIZE_MAX - b->len)
                return -ENOMEM;
        need = b->len + extra;
        if (need <= b->cap)
                return 0;
        cap = b->cap ? b->cap : 256;
        while (cap < need)
                cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        p = realloc(b->data, cap);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->cap = cap;
        return 0;
}

int kb_buf_append(struct kb_buf *b, const void *p, size_t n)
{
        int r = kb_buf_reserve(b, n);

        if (r < 0)
                return r;
        if (n)
                memcpy(b->data + b->len, p, n);
        b->len += n;
        return 0;
}

#define BUF_ALIGN 4096

int kb_buf_reserve_aligned(struct kb_buf *b, size_t cap)
{
        void *p;

        if (b->len == 0 && b->cap >= cap && (uintptr_t)b->data % BUF_ALIGN == 0)
                return 0;
        if (b->len)
                return kb_buf_reserve(b, cap > b->len ? cap - b->len : 0);
        if (posix_memalign(&p, BUF_ALIGN, cap) != 0)
                return -ENOMEM;
        free(b->data);
        b->data = p;
        b->cap = cap;
        return 0;
}

void kb_buf_reset(struct kb_buf *b)
{
        b->len = 0;
}

void kb_buf_free(struct kb_buf *b)
{
        free(b->data);
        b->data = NULL;
        b->len = b->cap = 0;
}

char *kb_bytes_strdup(const void *p, size_t n)
{
        char *s = malloc(n + 1);

        if (!s)
                return NULL;
        if (n)
                memcpy(s, p, n);
        s[n] = '\0';
        return s;
}
