/* arena.c - bump allocation in blocks (arena.h). */
#include "arena.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK (64 * 1024)
#define ARENA_ALIGN 16

struct kb_arena_block {
        struct kb_arena_block *next;
        size_t used, cap;
        _Alignas(ARENA_ALIGN) unsigned char data[];
};

void *kb_arena_alloc(struct kb_arena *a, size_t n)
{
        struct kb_arena_block *b = a->head;
        void *p;

        n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
        if (!n)
                n = ARENA_ALIGN;
        if (!b || b->cap - b->used < n) {
                size_t block = !b && a->first_block ? a->first_block : ARENA_BLOCK;
                size_t cap = n > block / 4 ? n : block;

                b = malloc(sizeof(*b) + cap);
                if (!b)
                        return NULL;
                b->used = 0;
                b->cap = cap;
                if (cap == n && a->head) {
                        /* A big one-off: keep filling the current block afterwards. */
                        b->next = a->head->next;
                        a->head->next = b;
                } else {
                        b->next = a->head;
                        a->head = b;
                }
        }
        p = b->data + b->used;
        b->used += n;
        return p;
}

void *kb_arena_dup(struct kb_arena *a, const void *p, size_t n)
{
        void *q = kb_arena_alloc(a, n + 1);

        if (q) {
                if (n)
                        memcpy(q, p, n);
                ((char *)q)[n] = '\0';
        }
        return q;
}

void kb_arena_free(struct kb_arena *a)
{
        struct kb_arena_block *b = a->head, *next;

        for (; b; b = next) {
                next = b->next;
                free(b);
        }
        a->head = NULL;
}
