/* maint.h - what the whole-repository operations (check, prune, stats) share: the pack table
 * made canonical and matched against the backend's listing, a compact id map, and marking every
 * blob reachable from snapshots. Internal to the repository layer (includes repo_internal.h). */
#ifndef KB_MAINT_H
#define KB_MAINT_H

#include <stddef.h>
#include <stdint.h>

#include "repo_internal.h"

/* ---- id map: 32-byte id -> uint64 (also used as a set) ---- */

struct kb_idmap {
        struct kb_idmap_slot *slots;
        size_t nslots, count;
};
int kb_idmap_put(struct kb_idmap *m, const uint8_t id[KB_ID_LEN], uint64_t value);
/* 1 and *value when present, 0 when not. */
int kb_idmap_get(const struct kb_idmap *m, const uint8_t id[KB_ID_LEN], uint64_t *value);
void kb_idmap_free(struct kb_idmap *m);

/* ---- packs ---- */

struct kb_maint_pack {
        uint8_t id[KB_ID_LEN];
        uint32_t no;    /* canonical pack number in the index */
        int64_t size;   /* from the listing; -1 when the backend does not have it */
        uint64_t used;  /* stored bytes of marked (live) blobs */
        uint64_t total; /* stored bytes of every indexed blob */
        uint32_t nblobs, nused;
        int action; /* prune's decision */
};

struct kb_maint_extra {
        uint8_t id[KB_ID_LEN];
        uint64_t size;
};

struct kb_maint_packs {
        struct kb_maint_pack *v; /* every pack the index names, sorted by id */
        size_t n;
        uint32_t *pos_of_no; /* index pack number -> position in v */
        size_t nno;
        struct kb_maint_extra *extra; /* on the backend, named by no index */
        size_t nextra;
        uint64_t listed_bytes; /* every pack the backend has */
};

/* Build from r->index and a listing of the backend's packs. Index files that name one pack
 * twice give it two numbers; entries are rewritten to one canonical number per pack so that
 * per-pack accounting cannot split a pack in two. */
int kb_maint_packs_build(struct kb_repo *r, struct kb_maint_packs *p, struct kb_err *err);
void kb_maint_packs_free(struct kb_maint_packs *p);
struct kb_maint_pack *kb_maint_pack_of(const struct kb_maint_packs *p, uint32_t pack_no);

/* ---- marking ---- */

/* The bit of kb_index_entry.mark that marking sets; the other bits are the caller's. */
#define KB_MARK_LIVE 1

/* Problems met while marking. Without callbacks, marking stops at the first one. */
struct kb_mark_cb {
        /* a blob that a tree or snapshot names and the index does not have */
        void (*missing)(void *arg, const uint8_t id[KB_ID_LEN], int is_tree, size_t snap);
        /* a tree that is indexed but does not load (damaged pack, missing pack, bad encoding) */
        void (*bad_tree)(void *arg, const uint8_t id[KB_ID_LEN], size_t snap,
                         const struct kb_err *why);
        void *arg;
};

/* Set KB_MARK_LIVE in entry->mark for every blob reachable from snapshot `only` (or every snapshot
 * when only == SIZE_MAX), trees included. Trees are walked once however many snapshots share them.
 */
int kb_maint_mark(struct kb_repo *r, const struct kb_snapshot_list *l, size_t only,
                  const struct kb_mark_cb *cb, struct kb_err *err);
void kb_maint_clear_marks(struct kb_repo *r);

#endif
