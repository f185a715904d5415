/* objfetch.c - every object of one type, fetched and unsealed several at a time.
 *
 * Opening a repository reads every index file, and most commands then read every snapshot
 * record. Over S3 each of those is a round trip; one after the other, a repository with a few
 * hundred snapshots spent seconds on every command before doing anything. Here FETCH_THREADS
 * threads fetch and unseal up to FETCH_AHEAD objects past the one being handed over, and the
 * caller still sees them one at a time, in listing order, on its own thread, so what it does
 * with them (index inserts, sorting) is unchanged. */
#include "repo_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define FETCH_THREADS 8
#define FETCH_AHEAD   16

struct slot {
        struct kb_buf plain;
        struct kb_err err;
        int rc;
        int done;
};

struct fetch {
        struct kb_repo *r;
        enum kb_obj_type type;
        char **names;
        size_t n, cap;
        struct slot *slots;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        size_t next;     /* the next object to fetch */
        size_t consumed; /* objects handed over */
        int stop;
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

/* Fetch object i into its slot; called without the lock, for a slot nobody else touches. */
static void fetch_one(struct fetch *f, size_t i)
{
        struct slot *s = &f->slots[i];

        s->rc = kb_repo_object_get(f->r, f->type, f->names[i], &s->plain, &s->err);
}

static void *worker(void *arg)
{
        struct fetch *f = arg;

        pthread_mutex_lock(&f->lock);
        while (!f->stop && f->next < f->n) {
                size_t i;

                if (f->next >= f->consumed + FETCH_AHEAD) {
                        pthread_cond_wait(&f->cond, &f->lock);
                        continue;
                }
                i = f->next++;
                pthread_mutex_unlock(&f->lock);
                fetch_one(f, i);
                pthread_mutex_lock(&f->lock);
                f->slots[i].done = 1;
                pthread_cond_broadcast(&f->cond);
        }
        pthread_mutex_unlock(&f->lock);
        return NULL;
}

/* Wait for object i; fetch it here when no worker has taken it (or there are none). */
static void wait_for(struct fetch *f, size_t i)
{
        pthread_mutex_lock(&f->lock);
        if (f->next <= i) {
                f->next = i + 1;
                pthread_mutex_unlock(&f->lock);
                fetch_one(f, i);
                return;
        }
        while (!f->slots[i].done)
                pthread_cond_wait(&f->cond, &f->lock);
        pthread_mutex_unlock(&f->lock);
}

int kb_repo_object_each(struct kb_repo *r, enum kb_obj_type type, kb_repo_object_cb cb, void *arg,
                        struct kb_err *err)
{
        struct fetch f = {.r = r, .type = type};
        pthread_t threads[FETCH_THREADS];
        unsigned nthreads = 0;
        int rc;

        rc = kb_backend_list(r->be, type, collect, &f, err);
        if (rc == -ENOMEM)
                rc = kb_err_set(err, rc, "out of memory listing %ss", kb_obj_type_word(type));
        if (rc == 0 && f.n && !(f.slots = calloc(f.n, sizeof(*f.slots))))
                rc = kb_err_set(err, -ENOMEM, "out of memory listing %ss", kb_obj_type_word(type));
        if (rc < 0)
                goto out;
        for (size_t i = 0; i < f.n; i++)
                f.slots[i].plain = (struct kb_buf)KB_BUF_INIT;
        pthread_mutex_init(&f.lock, NULL);
        pthread_cond_init(&f.cond, NULL);
        /* One object needs no thread; a thread that cannot start leaves its share to this one. */
        while (nthreads < FETCH_THREADS && nthreads + 1 < f.n &&
               pthread_create(&threads[nthreads], NULL, worker, &f) == 0)
                nthreads++;
        for (size_t i = 0; i < f.n && rc == 0; i++) {
                struct slot *s = &f.slots[i];

                wait_for(&f, i);
                rc = cb(f.names[i], s->rc, &s->plain, &s->err, arg);
                kb_buf_free(&s->plain);
                pthread_mutex_lock(&f.lock);
                f.consumed = i + 1;
                if (rc < 0)
                        f.stop = 1;
                pthread_cond_broadcast(&f.cond);
                pthread_mutex_unlock(&f.lock);
        }
        pthread_mutex_lock(&f.lock);
        f.stop = 1;
        pthread_cond_broadcast(&f.cond);
        pthread_mutex_unlock(&f.lock);
        for (unsigned t = 0; t < nthreads; t++)
                pthread_join(threads[t], NULL);
        for (size_t i = 0; i < f.n; i++)
                kb_buf_free(&f.slots[i].plain);
        pthread_mutex_destroy(&f.lock);
        pthread_cond_destroy(&f.cond);
out:
        for (size_t i = 0; i < f.n; i++)
                free(f.names[i]);
        free(f.names);
        free(f.slots);
        return rc;
}
