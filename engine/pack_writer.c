/* pack_writer.c - background threads that write full packs.
 *
 * Writing a pack means hashing 16 MiB for its name, then a write and two fsyncs on a filesystem or
 * a whole-object PUT on S3: tens to hundreds of milliseconds in which the thread is mostly
 * waiting. Done by the worker that filled the pack, that wait idled one of the cores that compress.
 * Here the filling worker hands the pack over and goes back to compressing; the writers take
 * packs in order. At most KB_PACK_WRITERS packs are detached at any time (the same memory as when
 * each worker wrote its own), so a worker that fills a pack while every writer is busy waits. */
#include "repo_internal.h"

#include <errno.h>
#include <stdlib.h>

static void *writer_main(void *arg)
{
        struct kb_repo *r = arg;

        pthread_mutex_lock(&r->lock);
        for (;;) {
                struct pack_builder *b = r->write_head;
                struct kb_err e = {0};
                int rc;

                if (!b) {
                        if (r->writers_stop)
                                break;
                        pthread_cond_wait(&r->write_cond, &r->lock);
                        continue;
                }
                r->write_head = b->next;
                if (!r->write_head)
                        r->write_tail = NULL;
                b->next = NULL;
                pthread_mutex_unlock(&r->lock);
                rc = kb_pack_finish(r, b, &e);
                pthread_mutex_lock(&r->lock);
                if (rc < 0 && r->write_rc == 0) {
                        r->write_rc = rc;
                        r->write_err = e;
                }
        }
        pthread_mutex_unlock(&r->lock);
        return NULL;
}

/* Called with r->lock held. */
static int start_writers(struct kb_repo *r, struct kb_err *err)
{
        while (r->n_writers < KB_PACK_WRITERS) {
                if (pthread_create(&r->writers[r->n_writers], NULL, writer_main, r) != 0)
                        break;
                r->n_writers++;
        }
        if (r->n_writers == 0)
                return kb_err_set(err, -EAGAIN, "cannot start the pack writer thread");
        return 0;
}

int kb_pack_writer_submit(struct kb_repo *r, struct pack_builder *b, struct kb_err *err)
{
        int rc = 0;

        pthread_mutex_lock(&r->lock);
        if (!r->n_writers)
                rc = start_writers(r, err);
        if (rc == 0) {
                /* r->inflight already counts b (detached under the lock by the caller). */
                while (r->inflight > r->n_writers && r->write_rc == 0)
                        pthread_cond_wait(&r->cond, &r->lock);
                if (r->write_rc < 0) {
                        rc = r->write_rc;
                        *err = r->write_err;
                }
        }
        if (rc < 0) {
                pthread_mutex_unlock(&r->lock);
                kb_pack_finish_failed(r, b);
                return rc;
        }
        if (r->write_tail)
                r->write_tail->next = b;
        else
                r->write_head = b;
        r->write_tail = b;
        pthread_cond_signal(&r->write_cond);
        pthread_mutex_unlock(&r->lock);
        return 0;
}

void kb_pack_writer_stop(struct kb_repo *r)
{
        pthread_mutex_lock(&r->lock);
        r->writers_stop = 1;
        pthread_cond_broadcast(&r->write_cond);
        pthread_mutex_unlock(&r->lock);
        for (unsigned i = 0; i < r->n_writers; i++)
                pthread_join(r->writers[i], NULL);
        r->n_writers = 0;
}
