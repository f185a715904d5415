/* arena.h - bump allocation: many small objects that are freed together.
 *
 * A directory's metadata while it is backed up, and a parsed directory record (tree) while it is
 * read: hundreds of small allocations each, freed at once, often by another thread than the one
 * that made them (where malloc's per-object frees contend for its arena lock). */
#ifndef KB_ARENA_H
#define KB_ARENA_H

#include <stddef.h>

struct kb_arena_block;
struct kb_arena {
        struct kb_arena_block *head;
        size_t first_block; /* capacity of the first block; 0: the default (64 KiB) */
};

/* 16-byte aligned; NULL when out of memory. Memory never moves. */
void *kb_arena_alloc(struct kb_arena *a, size_t n);
/* A copy of p[0..n) with a NUL after it. */
void *kb_arena_dup(struct kb_arena *a, const void *p, size_t n);
void kb_arena_free(struct kb_arena *a);

#endif
