/* saver.c - worker threads that hash, dedup, compress, seal and pack submitted chunks.
 *
 * One mutex guards the queue, the groups' counters and the stats. A chunk can be a whole small
 * file of a few KiB, tens of thousands a second: handing them over one at a time cost five futex
 * calls and a context switch per file, as workers drained the queue and slept again after every
 * file. So an idle worker is woken only once a batch has queued up (or the producer is about to
 * wait), and a worker takes and settles a batch of jobs per trip through the lock. */
#include "saver.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpus.h"

#define SAVER_MAX_THREADS 64
/* Queued jobs (or bytes) that wake an idle worker; a worker takes at most a batch at once. */
#define WAKE_JOBS   16
#define WAKE_BYTES  (128u << 10)
#define BATCH_JOBS  16
#define BATCH_BYTES (256u << 10)

struct job {
        struct kb_saver_group *group;
        enum kb_blob_type type;
        unsigned flags;          /* kb_repo_blob_save_flags's */
        struct kb_bufpool *pool; /* where data goes back; NULL: malloc'd */
        uint8_t *data;
        size_t len;
        uint8_t *id_slot;
        struct job *next;
        int rc; /* the worker's outcome, settled with its batch */
        struct kb_save_result res;
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
        size_t waiting_jobs, waiting_bytes; /* queued, not taken by a worker yet */
        size_t queued_bytes;                /* queued and in progress */
        size_t active;                      /* jobs queued or in progress */
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

/* Settle a batch of finished jobs under one lock; groups it completes run their done callbacks
 * once the lock is released. errs[i] is job i's error when its rc is negative. */
static void finish_batch(struct kb_saver *s, struct job *batch, const struct kb_err *errs)
{
        struct kb_saver_group *complete[BATCH_JOBS];
        size_t ncomplete = 0, i = 0;
        struct job *j;

        pthread_mutex_lock(&s->lock);
        for (j = batch; j; j = j->next, i++) {
                const struct kb_err *e = &errs[i];

                s->stats.blobs++;
                s->stats.bytes += j->len;
                if (j->res.added) {
                        s->stats.blobs_new++;
                        s->stats.bytes_new += j->len;
                        s->stats.bytes_stored += j->res.stored_bytes;
                }
                if (j->rc < 0 && s->rc == 0) {
                        s->rc = j->rc;
                        s->err = *e;
                }
                if (j->group && (complete[ncomplete] = group_settle(j->group, j->rc, e)) != NULL)
                        ncomplete++;
                s->queued_bytes -= j->len;
                s->active--;
        }
        pthread_cond_broadcast(&s->done);
        pthread_cond_broadcast(&s->space);
        pthread_mutex_unlock(&s->lock);
        for (i = 0; i < ncomplete; i++)
                run_done(complete[i]);
}

/* Take up to a batch of queued jobs (at least one); called with the lock held and a job queued. */
static struct job *take_batch(struct kb_saver *s)
{
        struct job *first = s->head, *last = first;
        size_t n = 1, bytes = first->len;

        while (n < BATCH_JOBS && last->next && bytes + last->next->len <= BATCH_BYTES) {
                last = last->next;
                bytes += last->len;
                n++;
        }
        s->head = last->next;
        if (!s->head)
                s->tail = NULL;
        last->next = NULL;
        s->waiting_jobs -= n;
        s->waiting_bytes -= bytes;
        /* Enough left for another worker: it need not wait for the producer's next batch. */
        if (s->waiting_jobs >= WAKE_JOBS || s->waiting_bytes >= WAKE_BYTES)
                pthread_cond_signal(&s->work);
        return first;
}

static void *worker(void *arg)
{
        struct kb_saver *s = arg;
        struct kb_err errs[BATCH_JOBS];

        for (;;) {
                struct job *batch, *j, *next;
                size_t i = 0;

                pthread_mutex_lock(&s->lock);
                while (!s->head && !s->stop)
                        pthread_cond_wait(&s->work, &s->lock);
                if (!s->head) {
                        pthread_mutex_unlock(&s->lock);
                        break;
                }
                batch = take_batch(s);
                pthread_mutex_unlock(&s->lock);

                for (j = batch; j; j = j->next, i++) {
                        kb_err_clear(&errs[i]);
                        memset(&j->res, 0, sizeof(j->res));
                        kb_repo_blob_id(s->repo, j->data, j->len, j->id_slot);
                        j->rc = kb_repo_blob_save_flags(s->repo, j->type, j->flags, j->id_slot,
                                                        j->data, j->len, &j->res, &errs[i]);
                        release_data(j->pool, j->data, j->len);
                }
                finish_batch(s, batch, errs);
                for (j = batch; j; j = next) {
                        next = j->next;
                        free(j);
                }
        }
        kb_repo_zstd_release_thread(s->repo);
        return NULL;
}

/* Wake every idle worker for what is queued: the producer is about to wait for them. Called with
 * the lock held. */
static void kick(struct kb_saver *s)
{
        if (s->head)
                pthread_cond_broadcast(&s->work);
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
        if (g->pending)
                kick(s);
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
        return kb_saver_submit_pooled(s, g, type, 0, NULL, data, len, id_slot, err);
}

int kb_saver_submit_pooled(struct kb_saver *s, struct kb_saver_group *g, enum kb_blob_type type,
                           unsigned flags, struct kb_bufpool *pool, uint8_t *data, size_t len,
                           uint8_t *id_slot, struct kb_err *err)
{
        struct job *j = malloc(sizeof(*j));

        if (!j) {
                release_data(pool, data, len);
                return kb_err_set(err, -ENOMEM, "out of memory queueing a chunk");
        }
        j->group = g;
        j->type = type;
        j->flags = flags;
        j->pool = pool;
        j->data = data;
        j->len = len;
        j->id_slot = id_slot;
        j->next = NULL;

        pthread_mutex_lock(&s->lock);
        /* A chunk larger than the whole budget still goes through, alone. */
        while (s->queued_bytes && s->queued_bytes + len > s->max_bytes && s->rc == 0) {
                kick(s);
                pthread_cond_wait(&s->space, &s->lock);
        }
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
        s->waiting_jobs++;
        s->waiting_bytes += len;
        s->active++;
        if (g)
                g->pending++;
        if (s->waiting_jobs >= WAKE_JOBS || s->waiting_bytes >= WAKE_BYTES)
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
