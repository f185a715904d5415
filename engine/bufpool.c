/* bufpool.c - a LIFO of mapped buffers: the most recently returned one has the most pages in
 * the CPU caches and is the first handed out again.
 *
 * Each mapping starts with a small header that remembers how much of it has ever been written
 * (its resident bytes, since untouched pages of a private anonymous mapping take no memory). */
#include "bufpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

/* Keeps the buffer cache-line aligned. */
#define BUF_HEADER 64
/* A buffer given back with this much more resident than was just used is trimmed to what was
 * used: chunks vary in size, and buffers would otherwise all grow to the largest chunk seen. */
#define PAGE       ((size_t)4096)
#define TRIM_SLACK ((size_t)256 << 10)
#define TRIM_FLOOR ((size_t)atoi(getenv("TF")) << 10)

struct buf {
        struct buf *next;
        size_t resident;
};

struct kb_bufpool {
        pthread_mutex_t lock;
        size_t size, trim, keep;
        size_t idle_bytes; /* resident bytes of the idle buffers */
        struct buf *idle;
        size_t out;  /* buffers handed out and not put back */
        int closing; /* kb_bufpool_free was called: the last put frees */
};

int kb_bufpool_new(size_t size, size_t trim, size_t keep, struct kb_bufpool **out)
{
        struct kb_bufpool *p = calloc(1, sizeof(*p));

        if (!p)
                return -ENOMEM;
        pthread_mutex_init(&p->lock, NULL);
        p->size = size;
        p->trim = trim;
        p->keep = keep;
        *out = p;
        return 0;
}

static void unmap(struct kb_bufpool *p, struct buf *b)
{
        munmap(b, BUF_HEADER + p->size);
}

static void destroy(struct kb_bufpool *p)
{
        while (p->idle) {
                struct buf *b = p->idle;

                p->idle = b->next;
                unmap(p, b);
        }
        pthread_mutex_destroy(&p->lock);
        free(p);
}

void kb_bufpool_free(struct kb_bufpool *p)
{
        int now;

        if (!p)
                return;
        pthread_mutex_lock(&p->lock);
        p->closing = 1;
        now = p->out == 0;
        pthread_mutex_unlock(&p->lock);
        if (now)
                destroy(p);
}

size_t kb_bufpool_size(const struct kb_bufpool *p)
{
        return p->size;
}

uint8_t *kb_bufpool_get(struct kb_bufpool *p)
{
        struct buf *b;

        pthread_mutex_lock(&p->lock);
        b = p->idle;
        if (b) {
                p->idle = b->next;
                p->idle_bytes -= b->resident;
        }
        p->out++;
        pthread_mutex_unlock(&p->lock);
        if (!b) {
                void *m = mmap(NULL, BUF_HEADER + p->size, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

                if (m == MAP_FAILED) {
                        pthread_mutex_lock(&p->lock);
                        p->out--;
                        pthread_mutex_unlock(&p->lock);
                        return NULL;
                }
                b = m;
                b->resident = 0;
        }
        return (uint8_t *)b + BUF_HEADER;
}

void kb_bufpool_touched(uint8_t *buf, size_t n)
{
        struct buf *b = (struct buf *)(buf - BUF_HEADER);

        if (n > b->resident)
                b->resident = n;
}

void kb_bufpool_put(struct kb_bufpool *p, uint8_t *buf, size_t used)
{
        struct buf *b = (struct buf *)(buf - BUF_HEADER);
        int last;

        kb_bufpool_touched(buf, used);
        if (b->resident > p->trim && b->resident - used > TRIM_SLACK) {
                size_t keep =
                    (BUF_HEADER + (used > p->trim ? used : p->trim) + PAGE - 1) / PAGE * PAGE;

                if (madvise((uint8_t *)b + keep, BUF_HEADER + b->resident - keep, MADV_DONTNEED) ==
                    0)
                        b->resident = keep - BUF_HEADER;
        }
        pthread_mutex_lock(&p->lock);
        p->out--;
        if (!p->closing && p->idle_bytes + b->resident <= p->keep) {
                b->next = p->idle;
                p->idle = b;
                p->idle_bytes += b->resident;
                b = NULL;
        }
        last = p->closing && p->out == 0;
        pthread_mutex_unlock(&p->lock);
        if (b)
                unmap(p, b);
        if (last)
                destroy(p);
}
