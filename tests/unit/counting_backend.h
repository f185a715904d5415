/* counting_backend.h - a thin wrapper around a repository's real backend that counts pack reads
 * and the most reads at once, and can slow every read down like a remote store (the bytes still
 * come from the real store): instrumentation for tests, not a mock. */
#ifndef KB_COUNTING_BACKEND_H
#define KB_COUNTING_BACKEND_H

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "backend.h"
#include "repo_internal.h"

struct counting {
        struct kb_backend base;
        struct kb_backend *real;
        atomic_uint gets, stats; /* pack reads, size requests of any type */
        _Atomic uint64_t bytes;
        atomic_uint inflight, max_inflight;           /* reads of any type */
        atomic_uint pack_inflight, max_pack_inflight; /* reads of packs */
        unsigned delay_us;                            /* added to every read */
};

static inline struct counting *counting_of(struct kb_backend *be)
{
        return (struct counting *)be;
}

static inline int c_put(struct kb_backend *be, enum kb_obj_type t, const char *name,
                        const void *data, size_t len, struct kb_err *err)
{
        return kb_backend_put(counting_of(be)->real, t, name, data, len, err);
}

/* Count one more read in flight, raising the high-water mark. */
static inline void counting_enter(atomic_uint *inflight, atomic_uint *max_inflight)
{
        unsigned now = atomic_fetch_add(inflight, 1) + 1, max = atomic_load(max_inflight);

        while (now > max && !atomic_compare_exchange_weak(max_inflight, &max, now)) {
        }
}

static inline int c_get(struct kb_backend *be, enum kb_obj_type t, const char *name, uint64_t off,
                        size_t len, struct kb_buf *out, struct kb_err *err)
{
        struct counting *c = counting_of(be);
        int rc;

        counting_enter(&c->inflight, &c->max_inflight);
        if (t == KB_OBJ_PACK) {
                counting_enter(&c->pack_inflight, &c->max_pack_inflight);
                atomic_fetch_add(&c->gets, 1);
                atomic_fetch_add(&c->bytes, len);
        }
        if (c->delay_us)
                usleep(c->delay_us);
        rc = kb_backend_get(c->real, t, name, off, len, out, err);
        if (t == KB_OBJ_PACK)
                atomic_fetch_sub(&c->pack_inflight, 1);
        atomic_fetch_sub(&c->inflight, 1);
        return rc;
}

static inline int c_stat(struct kb_backend *be, enum kb_obj_type t, const char *name,
                         uint64_t *size, struct kb_err *err)
{
        atomic_fetch_add(&counting_of(be)->stats, 1);
        return kb_backend_stat(counting_of(be)->real, t, name, size, err);
}

static inline int c_list(struct kb_backend *be, enum kb_obj_type t, kb_backend_list_cb cb,
                         void *arg, struct kb_err *err)
{
        return kb_backend_list(counting_of(be)->real, t, cb, arg, err);
}

static inline int c_remove(struct kb_backend *be, enum kb_obj_type t, const char *name,
                           struct kb_err *err)
{
        return kb_backend_remove(counting_of(be)->real, t, name, err);
}

static inline void c_close(struct kb_backend *be)
{
        kb_backend_close(counting_of(be)->real);
        free(be);
}

static const struct kb_backend_ops counting_ops = {c_put, c_get, c_stat, c_list, c_remove, c_close};

/* Put a counter between the open repository r and its backend (closed with r). */
static inline struct counting *counting_wrap(struct kb_repo *r)
{
        struct counting *c = calloc(1, sizeof(*c));

        cr_assert_not_null(c);
        c->base.ops = &counting_ops;
        c->base.read_only = r->be->read_only;
        c->real = r->be;
        r->be = &c->base;
        return c;
}

#endif
