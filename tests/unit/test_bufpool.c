/* test_bufpool.c - recycled chunk buffers: a returned buffer is handed out again (its pages
 * still mapped, its content still there), idle buffers beyond `keep` are dropped, a buffer that
 * held more than `trim` bytes is cut back (the cut pages read as zeros again), and a pool freed
 * while workers still hold buffers goes away with the last one put back. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bufpool.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

/* How many of the n bytes at p are in memory. */
static size_t resident(const uint8_t *p, size_t n)
{
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        uintptr_t start = (uintptr_t)p & ~(page - 1);
        size_t pages = ((uintptr_t)p + n - start + page - 1) / page, count = 0;
        unsigned char vec[4096];

        cr_assert_leq(pages, sizeof(vec));
        cr_assert_eq(mincore((void *)start, pages * page, vec), 0);
        for (size_t i = 0; i < pages; i++)
                count += vec[i] & 1;
        return count * page;
}

Test(bufpool, reuses_the_last_buffer_returned)
{
        struct kb_bufpool *p;
        uint8_t *a, *b, *c;

        cr_assert_eq(kb_bufpool_new(8 * MIB, 8 * MIB, 16 * MIB, &p), 0);
        cr_assert_eq(kb_bufpool_size(p), 8 * MIB);
        a = kb_bufpool_get(p);
        b = kb_bufpool_get(p);
        cr_assert(a && b && a != b);
        cr_assert_eq((uintptr_t)a % 64, 0);
        memset(a, 0xa5, 1 * MIB);
        memset(b, 0x5a, 2 * MIB);
        a[8 * MIB - 1] = 1; /* the whole size is usable */
        kb_bufpool_put(p, a, 1 * MIB);
        kb_bufpool_put(p, b, 2 * MIB);
        c = kb_bufpool_get(p);
        cr_assert_eq(c, b, "LIFO: the warmest buffer first");
        cr_assert_eq(c[2 * MIB - 1], 0x5a, "pages stay mapped: no new zeroed pages");
        cr_assert_eq(kb_bufpool_get(p), a);
        kb_bufpool_put(p, a, 1 * MIB);
        kb_bufpool_put(p, c, 2 * MIB);
        kb_bufpool_free(p);
}

Test(bufpool, idle_buffers_beyond_keep_are_dropped)
{
        struct kb_bufpool *p;
        uint8_t *v[4];

        /* keep 3 MiB: two idle buffers of 1.5 MiB fit, the third does not */
        cr_assert_eq(kb_bufpool_new(2 * MIB, 2 * MIB, 3 * MIB, &p), 0);
        for (int i = 0; i < 3; i++) {
                v[i] = kb_bufpool_get(p);
                memset(v[i], i + 1, 1536 * KIB);
        }
        for (int i = 0; i < 3; i++)
                kb_bufpool_put(p, v[i], 1536 * KIB);
        /* v[2] went back last but did not fit: the first two are handed out again, then new */
        cr_assert_eq(kb_bufpool_get(p), v[1]);
        cr_assert_eq(kb_bufpool_get(p), v[0]);
        v[3] = kb_bufpool_get(p);
        cr_assert_eq(v[3][0], 0, "a new buffer is zeroed");
        kb_bufpool_put(p, v[0], 0);
        kb_bufpool_put(p, v[1], 0);
        kb_bufpool_put(p, v[3], 0);
        kb_bufpool_free(p);
}

Test(bufpool, large_buffers_are_trimmed_back)
{
        struct kb_bufpool *p;
        uint8_t *a;

        cr_assert_eq(kb_bufpool_new(8 * MIB, 1 * MIB, 64 * MIB, &p), 0);
        a = kb_bufpool_get(p);
        memset(a, 0x11, 6 * MIB);
        kb_bufpool_touched(a, 6 * MIB + 100 * KIB); /* read past the chunk handed on */
        memset(a + 6 * MIB, 0x11, 100 * KIB);
        kb_bufpool_put(p, a, 512 * KIB);
        cr_assert_eq(kb_bufpool_get(p), a);
        cr_assert_leq(resident(a, 8 * MIB), 1 * MIB + 4 * KIB, "trimmed to 1 MiB");
        cr_assert_geq(resident(a, 8 * MIB), 1 * MIB, "what it will likely hold stays");
        cr_assert_eq(a[1 * MIB - 1], 0x11);
        cr_assert_eq(a[3 * MIB], 0, "cut pages are fresh");
        cr_assert_eq(a[6 * MIB + 50 * KIB], 0, "so are those read past the chunk");
        /* a buffer that held a large chunk last keeps it: the next one may be as large */
        memset(a, 0x22, 4 * MIB);
        kb_bufpool_put(p, a, 4 * MIB);
        cr_assert_eq(kb_bufpool_get(p), a);
        cr_assert_eq(a[4 * MIB - 1], 0x22);
        kb_bufpool_put(p, a, 0);
        kb_bufpool_free(p);
}

struct holder {
        struct kb_bufpool *p;
        uint8_t *buf;
};

static void *put_later(void *arg)
{
        struct holder *h = arg;

        usleep(20000);
        h->buf[0] = 7; /* the buffer is still valid after kb_bufpool_free */
        kb_bufpool_put(h->p, h->buf, 1);
        return NULL;
}

Test(bufpool, freed_while_buffers_are_out)
{
        struct holder h[4];
        pthread_t t[4];

        cr_assert_eq(kb_bufpool_new(1 * MIB, 1 * MIB, 4 * MIB, &h[0].p), 0);
        for (int i = 0; i < 4; i++) {
                h[i].p = h[0].p;
                h[i].buf = kb_bufpool_get(h[0].p);
                cr_assert_not_null(h[i].buf);
                cr_assert_eq(pthread_create(&t[i], NULL, put_later, &h[i]), 0);
        }
        kb_bufpool_free(h[0].p); /* the last put frees it (ASan sees any use after) */
        for (int i = 0; i < 4; i++)
                pthread_join(t[i], NULL);
}
