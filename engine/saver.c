/* saver.c - worker threads that hash, dedup, compress, seal and pack submitted chunks.
 *
 * One mutex guards the queue, the groups' counters and the stats: jobs are chunk-sized (hundreds of
 * KiB), so the lock is taken a few thousand times a second at most and never contended for long. */
#include "saver.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpus.h"

#define SAVER_MAX_THREADS 64

struct job {
        struct kb_saver_group *group;
        enum kb_blob_type type;
        struct kb_bufpool *pool; /* where data goes back; NULL: malloc'd */
        uint8_t *data;
        size_t len;
        uint8_t *id_slot;
        struct job *next;
};

static void release_data(struct kb_bufpool *pool, uint8_t *data, size_t len)
{
        if (pool)
                kb_bufpool_put(pool, data, len);
        else
                free(data);
}

struct kb_saver_group {
        struct kb_saver *s;
        size_t pending;
        int rc;
        struct kb_err err;
        int closed; /* kb_saver_group_close: `done` runs when pending reaches 0 */
        kb_saver_done_fn done;
        void *done_arg;
};

struct kb_saver {
        struct kb_repo *repo;
        pthread_t threads[SAVER_MAX_THREADS];
        unsigned nthreads;
        size_t max_bytes;

        pthread_mutex_t lock;
        pthread_cond_t work;  /* a job was queued, or stop */
        pthread_cond_t space; /* queued bytes went down */
        pthread_cond_t done;  /* a job finished */
        struct job *head, *tail;
        size_t queued_bytes; /* queued and in progress */
        size_t active;       /* jobs queued or in progress */
        int stop;
        int rc; /* first error of any job */
        struct kb_err err;
        struct kb_saver_stats stats;
};

/* One pending item of g is finished (with rc). Called with the lock held; returns g when it is
 * closed and now complete, for run_done() once the lock is released. */
static struct kb_saver_group *group_settle(struct kb_saver_group *g, int rc, const struct kb_err *e)
{
        if (rc < 0 && g->rc == 0) {
                g->rc = rc;
                g->err = *e;
        }
        g->pending--;
        return g->closed && g->pending == 0 ? g : NULL;
}

static void run_done(struct kb_saver_group *g)
{
        if (!g)
                return;
        g->done(g->done_arg, g->rc, g->rc < 0 ? &g->err : NULL);
        free(g);
}

static void finish_job(struct kb_saver *s, struct job *j, int rc, const struct kb_err *e,
                       const struct kb_save_result *res)
{
        struct kb_saver_group *complete = NULL;

        pthread_mutex_lock(&s->lock);
        s->stats.blobs++;
        s->stats.bytes += j->len;
        if (res->added) {
                s->stats.blobs_new++;
                s->stats.bytes_new += j->len;
                s->stats.bytes_stored += res->stored_bytes;
        }
        if (rc < 0 && s->rc == 0) {
                s->rc = rc;
                s->err = *e;
        }
        if (j->group)
                complete = group_settle(j->group, rc, e);
        s->queued_bytes -= j->len;
        s->active--;
        pthread_cond_broadcast(&s->done);
        pthread_cond_broadcast(&s->space);
        pthread_mutex_unlock(&s->lock);
        run_done(complete);
}

static void *worker(void *arg)
{
        struct kb_saver *s = arg;

        for (;;) {
                struct kb_save_result res = {0};
                struct kb_err e = {0};
                struct job *j;
                int rc;

                pthread_mutex_lock(&s->lock);
                while (!s->head && !s->stop)
                        pthread_cond_wait(&s->work, &s->lock);
                j = s->head;
                if (!j) {
                        pthread_mutex_unlock(&s->lock);
                        break;
                }
                s->head = j->next;
                if (!s->head)
                        s->tail = NULL;
                pthread_mutex_unlock(&s->lock);

                kb_repo_blob_id(s->repo, j->data, j->len, j->id_slot);
                rc = kb_repo_blob_save(s->repo, j->type, j->id_slot, j->data, j->len, &res, &e);
                release_data(j->pool, j->data, j->len);
                finish_job(s, j, rc, &e, &res);
                free(j);
        }
        kb_repo_zstd_release_thread(s->repo);
        return NULL;
}

int kb_saver_new(struct kb_repo *repo, unsigned threads, size_t max_inflight_bytes,
                 struct kb_saver **out, struct kb_err *err)
{
        struct kb_saver *s = calloc(1, sizeof(*s));

        if (!s)
                return kb_err_set(err, -ENOMEM, "out of memory");
        if (threads == 0)
                threads = kb_cpus_available();
        if (threads > SAVER_MAX_THREADS)
                threads = SAVER_MAX_THREADS;
        s->repo = repo;
        s->max_bytes = max_inflight_bytes ? max_inflight_bytes : 64u << 20;
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->work, NULL);
        pthread_cond_init(&s->space, NULL);
        pthread_cond_init(&s->done, NULL);
        for (s->nthreads = 0; s->nthreads < threads; s->nthreads++) {
                if (pthread_create(&s->threads[s->nthreads], NULL, worker, s) != 0)
                        break;
        }
        if (s->nthreads == 0) {
                kb_saver_free(s, NULL);
                return kb_err_set(err, -EAGAIN, "cannot start worker threads");
        }
        *out = s;
        return 0;
}

int kb_saver_free(struct kb_saver *s, struct kb_err *err)
{
        int rc;

        if (!s)
                return 0;
        pthread_mutex_lock(&s->lock);
        s->stop = 1;
        pthread_cond_broadcast(&s->work);
        pthread_mutex_unlock(&s->lock);
        for (unsigned i = 0; i < s->nthreads; i++)
                pthread_join(s->threads[i], NULL);
        rc = s->rc;
        if (rc < 0 && err)
                *err = s->err;
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->work);
        pthread_cond_destroy(&s->space);
        pthread_cond_destroy(&s->done);
        free(s);
        return rc;
}

struct kb_saver_group *kb_saver_group_new(struct kb_saver *s)
{
        struct kb_saver_group *g = calloc(1, sizeof(*g));

        if (g)
                g->s = s;
        return g;
}

int kb_saver_group_wait(struct kb_saver_group *g, struct kb_err *err)
{
        struct kb_saver *s = g->s;
        int rc;

        pthread_mutex_lock(&s->lock);
        while (g->pending)
                pthread_cond_wait(&s->done, &s->lock);
        rc = g->rc;
        if (rc < 0 && err)
                *err = g->err;
        pthread_mutex_unlock(&s->lock);
        return rc;
}

void kb_saver_group_free(struct kb_saver_group *g)
{
        if (!g)
                return;
        kb_saver_group_wait(g, NULL);
        free(g);
}

void kb_saver_group_hold(struct kb_saver_group *g)
{
        pthread_mutex_lock(&g->s->lock);
        g->pending++;
        pthread_mutex_unlock(&g->s->lock);
}

void kb_saver_group_release(struct kb_saver_group *g, int rc, const struct kb_err *err)
{
        struct kb_saver *s = g->s;
        struct kb_saver_group *complete;

        pthread_mutex_lock(&s->lock);
        complete = group_settle(g, rc, err);
        pthread_cond_broadcast(&s->done);
        pthread_mutex_unlock(&s->lock);
        run_done(complete);
}

void kb_saver_group_close(struct kb_saver_group *g, kb_saver_done_fn done, void *arg)
{
        struct kb_saver *s = g->s;
        int now;

        pthread_mutex_lock(&s->lock);
        g->closed = 1;
        g->done = done;
        g->done_arg = arg;
        now = g->pending == 0;
        pthread_mutex_unlock(&s->lock);
        if (now)
                run_done(g);
}

int kb_saver_submit(struct kb_saver *s, struct kb_saver_group *g, enum kb_blob_type type,
                    uint8_t *data, size_t len, uint8_t *id_slot, struct kb_err *err)
{
        return kb_saver_submit_pooled(s, g, type, NULL, data, len, id_slot, err);
}

int kb_saver_submit_pooled(struct kb_saver *s, struct kb_saver_group *g, enum kb_blob_type type,
                           struct kb_bufpool *pool, uint8_t *data, size_t len, uint8_t *id_slot,
                           struct kb_err *err)
{
        struct job *j = malloc(sizeof(*j));

        if (!j) {
                release_data(pool, data, len);
                return kb_err_set(err, -ENOMEM, "out of memory queueing a chunk");
        }
        j->group = g;
        j->type = type;
        j->pool = pool;
        j->data = data;
        j->len = len;
        j->id_slot = id_slot;
        j->next = NULL;

        pthread_mutex_lock(&s->lock);
        /* A chunk larger than the whole budget still goes through, alone. */
        while (s->queued_bytes && s->queued_bytes + len > s->max_bytes && s->rc == 0)
                pthread_cond_wait(&s->space, &s->lock);
        if (s->rc < 0) {
                int rc = s->rc;

                if (err)
                        *err = s->err;
                pthread_mutex_unlock(&s->lock);
                release_data(pool, data, len);
                free(j);
                return rc;
        }
        if (s->tail)
                s->tail->next = j;
        else
                s->head = j;
        s->tail = j;
        s->queued_bytes += len;
        s->active++;
        if (g)
                g->pending++;
        pthread_cond_signal(&s->work);
        pthread_mutex_unlock(&s->lock);
        return 0;
}

void kb_saver_get_stats(struct kb_saver *s, struct kb_saver_stats *out)
{
        pthread_mutex_lock(&s->lock);
        *out = s->stats;
        out->threads = s->nthreads;
        pthread_mutex_unlock(&s->lock);
}
