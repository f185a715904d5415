/* pack_reader.c - blobs of a restore read in ranges of packs (see pack_reader.h).
 *
 * A restore reads chunks in the order the backup stored them, so the blobs it loads one after the
 * other usually sit back to back in one pack. Reading each with its own ranged GET made an S3
 * restore of many small files latency-bound (one round trip per file); here one read covers a run
 * of them. Which blobs follow is known only from what the caller announced: a window never reaches
 * over a blob nobody will load, so the bytes read stay the bytes needed (plus re-reads of windows
 * evicted early), and nothing past the last indexed blob (the pack header) is read.
 *
 * Announcements live in a hash keyed by (pack number, offset): extending a window is one lookup
 * per following blob, at the offset where the previous one ends. Windows are a small array under
 * one mutex; the lock is never held while reading the backend or decoding. */
#include "pack_reader.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "repo_internal.h"

/* One announced blob; count 0 marks an empty slot. */
struct want {
        uint32_t pack, offset, length, count;
};

enum win_state {
        WIN_FREE,    /* holds nothing */
        WIN_LOADING, /* being read by the thread that started it */
        WIN_READY,   /* [start, end) of pack `pack` in buf */
        WIN_FAILED,  /* the read failed (rc, err); freed by its last user */
};

struct window {
        enum win_state state;
        uint32_t pack;
        uint64_t start, end;
        unsigned pins; /* threads reading it or waiting for it: it is not reused meanwhile */
        uint64_t used; /* last use, for least-recently-used reuse */
        int rc;
        struct kb_err err;
        struct kb_buf buf; /* window_bytes of capacity once first used */
};

struct kb_pack_reader {
        struct kb_repo *r;
        size_t window_bytes;
        unsigned nwin;
        struct window *win;

        pthread_mutex_t lock; /* guards the windows and everything below */
        pthread_cond_t cond;  /* a window finished loading */
        uint64_t clock;
        struct want *wants;
        size_t wcap, wused; /* power of two (or 0); occupied slots */
};

/* --- announcements ------------------------------------------------------------------------- */

static size_t want_slot(uint32_t pack, uint32_t offset, size_t mask)
{
        uint64_t h = ((uint64_t)pack << 32 | offset) * 0x9e3779b97f4a7c15ull;

        return (size_t)(h ^ h >> 29) & mask;
}

static struct want *want_find(struct kb_pack_reader *pr, uint32_t pack, uint64_t offset)
{
        size_t mask = pr->wcap - 1, i;

        if (!pr->wcap || offset > UINT32_MAX)
                return NULL;
        for (i = want_slot(pack, (uint32_t)offset, mask); pr->wants[i].count; i = (i + 1) & mask)
                if (pr->wants[i].pack == pack && pr->wants[i].offset == offset)
                        return &pr->wants[i];
        return NULL;
}

static int want_grow(struct kb_pack_reader *pr)
{
        size_t cap = pr->wcap ? pr->wcap * 2 : 256, mask = cap - 1;
        struct want *t = calloc(cap, sizeof(*t));

        if (!t)
                return -ENOMEM;
        for (size_t i = 0; i < pr->wcap; i++) {
                const struct want *w = &pr->wants[i];
                size_t j;

                if (!w->count)
                        continue;
                for (j = want_slot(w->pack, w->offset, mask); t[j].count; j = (j + 1) & mask)
                        ;
                t[j] = *w;
        }
        free(pr->wants);
        pr->wants = t;
        pr->wcap = cap;
        return 0;
}

static int want_add(struct kb_pack_reader *pr, const struct kb_index_entry *e)
{
        struct want *w = want_find(pr, e->pack, e->offset);
        size_t i, mask;

        if (w) {
                w->count++;
                return 0;
        }
        /* At most half full: probes stay short. */
        if ((pr->wused + 1) * 2 > pr->wcap && want_grow(pr) < 0)
                return -ENOMEM;
        mask = pr->wcap - 1;
        for (i = want_slot(e->pack, e->offset, mask); pr->wants[i].count; i = (i + 1) & mask)
                ;
        pr->wants[i] = (struct want){e->pack, e->offset, e->length, 1};
        pr->wused++;
        return 0;
}

/* Take back one announcement; the last one frees its slot (backward-shift deletion, so linear
 * probing needs no tombstones). */
static void want_drop(struct kb_pack_reader *pr, uint32_t pack, uint32_t offset)
{
        struct want *w = want_find(pr, pack, offset);
        size_t mask = pr->wcap - 1, i, j;

        if (!w || --w->count)
                return;
        i = (size_t)(w - pr->wants);
        for (j = (i + 1) & mask; pr->wants[j].count; j = (j + 1) & mask) {
                size_t home = want_slot(pr->wants[j].pack, pr->wants[j].offset, mask);

                /* An entry whose home lies cyclically in (i, j] is still reachable. */
                if (i <= j ? (home > i && home <= j) : (home > i || home <= j))
                        continue;
                pr->wants[i] = pr->wants[j];
                i = j;
        }
        pr->wants[i].count = 0;
        pr->wused--;
}

int kb_pack_reader_want(struct kb_pack_reader *pr, const uint8_t id[KB_ID_LEN], uint32_t *raw_len,
                        struct kb_err *err)
{
        struct kb_blob_loc loc;
        int rc = kb_repo_blob_locate(pr->r, id, &loc, err);

        if (rc < 0)
                return rc;
        pthread_mutex_lock(&pr->lock);
        /* Out of memory only costs this blob a read of its own. */
        (void)want_add(pr, &loc.e);
        pthread_mutex_unlock(&pr->lock);
        if (raw_len)
                *raw_len = loc.e.raw_length;
        return 0;
}

void kb_pack_reader_unwant(struct kb_pack_reader *pr, const uint8_t id[KB_ID_LEN])
{
        struct kb_blob_loc loc;

        if (kb_repo_blob_locate(pr->r, id, &loc, NULL) < 0)
                return;
        pthread_mutex_lock(&pr->lock);
        want_drop(pr, loc.e.pack, loc.e.offset);
        pthread_mutex_unlock(&pr->lock);
}

/* --- windows ------------------------------------------------------------------------------- */

static int win_live(const struct window *w)
{
        return w->state == WIN_LOADING || w->state == WIN_READY;
}

/* A window (being) read that holds all of [off, end) of `pack`. */
static struct window *win_covering(struct kb_pack_reader *pr, uint32_t pack, uint64_t off,
                                   uint64_t end)
{
        for (unsigned i = 0; i < pr->nwin; i++) {
                struct window *w = &pr->win[i];

                if (win_live(w) && w->pack == pack && w->start <= off && end <= w->end)
                        return w;
        }
        return NULL;
}

/* The window to read into: a free one, else the least recently used one nobody is reading. */
static struct window *win_victim(struct kb_pack_reader *pr)
{
        struct window *best = NULL;

        for (unsigned i = 0; i < pr->nwin; i++) {
                struct window *w = &pr->win[i];

                if (w->state == WIN_FREE)
                        return w;
                if (w->state == WIN_READY && !w->pins && (!best || w->used < best->used))
                        best = w;
        }
        return best;
}

/* Where a window that starts with blob [off, end) of `pack` ends: over the announced blobs that
 * follow back to back, while they fit and no other window already holds them. (An empty entry,
 * which only a damaged index has, ends it: it would not move on.) */
static uint64_t win_extend(struct kb_pack_reader *pr, uint32_t pack, uint64_t off, uint64_t end)
{
        const struct want *w;

        while ((w = want_find(pr, pack, end)) && w->length &&
               w->length <= pr->window_bytes - (end - off) && !win_covering(pr, pack, end, end + 1))
                end += w->length;
        return end;
}

static void win_unpin(struct window *w)
{
        if (--w->pins == 0 && w->state == WIN_FAILED)
                w->state = WIN_FREE;
}

/* With the lock held: a pinned window that was meant to hold the blob at `loc`, read by this
 * call or by another one; NULL when every window is in use. The lock is dropped while reading. */
static struct window *win_get(struct kb_pack_reader *pr, const struct kb_blob_loc *loc)
{
        uint64_t off = loc->e.offset, end = off + loc->e.length;
        struct window *w = win_covering(pr, loc->e.pack, off, end);
        int rc;

        if (w) {
                w->pins++;
                while (w->state == WIN_LOADING)
                        pthread_cond_wait(&pr->cond, &pr->lock);
                w->used = ++pr->clock;
                return w;
        }
        w = win_victim(pr);
        if (!w)
                return NULL;
        if (!w->buf.data) {
                w->buf.data = malloc(pr->window_bytes);
                if (!w->buf.data)
                        return NULL;
                w->buf.cap = pr->window_bytes;
        }
        w->state = WIN_FREE; /* its old range must not stop the extension */
        w->end = win_extend(pr, loc->e.pack, off, end);
        w->pack = loc->e.pack;
        w->start = off;
        w->state = WIN_LOADING;
        w->pins = 1;
        w->used = ++pr->clock;
        kb_buf_reset(&w->buf);
        pthread_mutex_unlock(&pr->lock);
        rc = kb_backend_get(pr->r->be, KB_OBJ_PACK, loc->pack, w->start,
                            (size_t)(w->end - w->start), &w->buf, &w->err);
        pthread_mutex_lock(&pr->lock);
        w->rc = rc;
        w->state = rc < 0 ? WIN_FAILED : WIN_READY;
        pthread_cond_broadcast(&pr->cond);
        return w;
}

int kb_pack_reader_load(struct kb_pack_reader *pr, const uint8_t id[KB_ID_LEN], struct kb_buf *out,
                        struct kb_err *err)
{
        struct kb_blob_loc loc;
        struct window *w;
        int rc = kb_repo_blob_locate(pr->r, id, &loc, err), failed, alone = 0;
        char bid[17];

        if (rc < 0)
                return rc;
        pthread_mutex_lock(&pr->lock);
        want_drop(pr, loc.e.pack, loc.e.offset);
        w = loc.e.length <= pr->window_bytes ? win_get(pr, &loc) : NULL;
        failed = w && w->state == WIN_FAILED;
        if (failed) {
                rc = w->rc;
                if (err)
                        *err = w->err;
                alone = w->start == loc.e.offset && w->end == loc.e.offset + loc.e.length;
                win_unpin(w);
        }
        pthread_mutex_unlock(&pr->lock);
        if (!w)
                return kb_repo_blob_fetch(pr->r, &loc, out, err);
        if (!failed) {
                /* Pinned: neither reused nor changed while it is decoded without the lock. */
                rc = kb_repo_blob_open(pr->r, &loc, w->buf.data + (loc.e.offset - w->start), out,
                                       err);
                pthread_mutex_lock(&pr->lock);
                win_unpin(w);
                pthread_mutex_unlock(&pr->lock);
                return rc;
        }
        /* A pack cut short or a read that failed after its retries: the blobs before the damage
         * still read on their own, as they would without windows. A missing pack stays missing. */
        if (rc != KB_ENOTFOUND && !alone)
                return kb_repo_blob_fetch(pr->r, &loc, out, err);
        kb_hex_encode(id, 8, bid);
        kb_err_prefix(err, "chunk %s: ", bid);
        return rc;
}

/* --- lifetime ------------------------------------------------------------------------------ */

int kb_pack_reader_new(struct kb_repo *r, unsigned windows, size_t window_bytes,
                       struct kb_pack_reader **out, struct kb_err *err)
{
        struct kb_pack_reader *pr = calloc(1, sizeof(*pr));

        if (pr)
                pr->win = calloc(windows ? windows : 1, sizeof(*pr->win));
        if (!pr || !pr->win) {
                free(pr);
                return kb_err_set(err, -ENOMEM, "out of memory");
        }
        pr->r = r;
        pr->nwin = windows ? windows : 1;
        pr->window_bytes = window_bytes ? window_bytes : 1;
        pthread_mutex_init(&pr->lock, NULL);
        pthread_cond_init(&pr->cond, NULL);
        *out = pr;
        return 0;
}

void kb_pack_reader_free(struct kb_pack_reader *pr)
{
        if (!pr)
                return;
        for (unsigned i = 0; i < pr->nwin; i++)
                kb_buf_free(&pr->win[i].buf);
        free(pr->win);
        free(pr->wants);
        pthread_mutex_destroy(&pr->lock);
        pthread_cond_destroy(&pr->cond);
        free(pr);
}
