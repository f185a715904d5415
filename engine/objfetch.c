/* objfetch.c - every object of one type, fetched and unsealed several at a time.
 *
 * Opening a repository reads every index file, and most commands then read every snapshot
 * record. Over S3 each of those is a round trip; one after the other, a repository with a few
 * hundred snapshots spent seconds on every command before doing anything. Here threads fetch
 * and unseal objects ahead of the one being handed over (prefetch.h), and the
 * caller still sees them one at a time, in listing order, on its own thread, so what it does
 * with them (index inserts, sorting) is unchanged. */
#include "repo_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "prefetch.h"

struct slot {
        struct kb_buf plain;
        struct kb_err err;
        int rc;
};

struct fetch {
        struct kb_repo *r;
        enum kb_obj_type type;
        char **names;
        size_t n, cap;
        struct slot *slots;
        kb_repo_object_cb cb;
        void *cb_arg;
};

static int collect(const char *name, uint64_t size, void *arg)
{
        struct fetch *f = arg;

        (void)size;
        if (f->n == f->cap) {
                size_t cap = f->cap ? f->cap * 2 : 64;
                char **v = realloc(f->names, cap * sizeof(*v));

                if (!v)
                        return -ENOMEM;
                f->names = v;
                f->cap = cap;
        }
        f->names[f->n] = strdup(name);
        if (!f->names[f->n])
                return -ENOMEM;
        f->n++;
        return 0;
}

static void fetch_one(size_t i, void *arg)
{
        struct fetch *f = arg;
        struct slot *s = &f->slots[i];

        s->rc = kb_repo_object_get(f->r, f->type, f->names[i], &s->plain, &s->err);
}

static int use_one(size_t i, void *arg)
{
        struct fetch *f = arg;
        struct slot *s = &f->slots[i];
        int rc = f->cb(f->names[i], s->rc, &s->plain, &s->err, f->cb_arg);

        kb_buf_free(&s->plain);
        return rc;
}

int kb_repo_object_each(struct kb_repo *r, enum kb_obj_type type, kb_repo_object_cb cb, void *arg,
                        struct kb_err *err)
{
        struct fetch f = {.r = r, .type = type, .cb = cb, .cb_arg = arg};
        int rc;

        rc = kb_repo_list(r, type, collect, &f, err);
        if (rc == 0 && f.n && !(f.slots = calloc(f.n, sizeof(*f.slots))))
                rc = -ENOMEM;
        if (rc == -ENOMEM) /* from the listing's collect, or the slots */
                rc = kb_err_set(err, rc, "out of memory listing %ss", kb_obj_type_word(type));
        if (rc == 0) {
                for (size_t i = 0; i < f.n; i++)
                        f.slots[i].plain = (struct kb_buf)KB_BUF_INIT;
                rc = kb_prefetch_run(f.n, KB_PREFETCH_THREADS, KB_PREFETCH_AHEAD, fetch_one,
                                     use_one, &f);
                for (size_t i = 0; i < f.n; i++)
                        kb_buf_free(&f.slots[i].plain);
        }
        for (size_t i = 0; i < f.n; i++)
                free(f.names[i]);
        free(f.names);
        free(f.slots);
        return rc;
}
