/* prefetch.c - fetch items ahead on a few threads, use them in order on the caller's thread. */
#include "prefetch.h"

#include <pthread.h>
#include <stdlib.h>

#define PREFETCH_MAX_THREADS 16

struct run {
        size_t n, ahead;
        kb_prefetch_fetch_fn fetch;
        void *arg;
        unsigned char *done; /* per item, under lock */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        size_t next; /* the next item to fetch */
        size_t used; /* items used so far */
        int stop;
};

static void *worker(void *arg)
{
        struct run *r = arg;

        pthread_mutex_lock(&r->lock);
        while (!r->stop && r->next < r->n) {
                size_t i;

                if (r->next >= r->used + r->ahead) {
                        pthread_cond_wait(&r->cond, &r->lock);
                        continue;
                }
                i = r->next++;
                pthread_mutex_unlock(&r->lock);
                r->fetch(i, r->arg);
                pthread_mutex_lock(&r->lock);
                r->done[i] = 1;
                pthread_cond_broadcast(&r->cond);
        }
        pthread_mutex_unlock(&r->lock);
        return NULL;
}

/* Wait for item i; fetch it here when no worker has taken it (or there are none). */
static void wait_for(struct run *r, size_t i)
{
        pthread_mutex_lock(&r->lock);
        if (r->next <= i) {
                r->next = i + 1;
                pthread_mutex_unlock(&r->lock);
                r->fetch(i, r->arg);
                return;
        }
        while (!r->done[i])
                pthread_cond_wait(&r->cond, &r->lock);
        pthread_mutex_unlock(&r->lock);
}

int kb_prefetch_run(size_t n, unsigned threads, size_t ahead, kb_prefetch_fetch_fn fetch,
                    kb_prefetch_use_fn use, void *arg)
{
        struct run r = {.n = n, .ahead = ahead ? ahead : 1, .fetch = fetch, .arg = arg};
        pthread_t t[PREFETCH_MAX_THREADS];
        unsigned nt = 0;
        int rc = 0;

        if (n == 0)
                return 0;
        r.done = calloc(n, 1);
        if (!r.done)
                threads = 0; /* no room to track items ahead: fetch each as it is used */
        pthread_mutex_init(&r.lock, NULL);
        pthread_cond_init(&r.cond, NULL);
        if (threads > PREFETCH_MAX_THREADS)
                threads = PREFETCH_MAX_THREADS;
        /* One item needs no thread; a thread that cannot start leaves its share to this one. */
        while (nt < threads && nt + 1 < n && pthread_create(&t[nt], NULL, worker, &r) == 0)
                nt++;
        for (size_t i = 0; i < n && rc >= 0; i++) {
                wait_for(&r, i);
                rc = use(i, arg);
                pthread_mutex_lock(&r.lock);
                r.used = i + 1;
                if (rc < 0)
                        r.stop = 1;
                pthread_cond_broadcast(&r.cond);
                pthread_mutex_unlock(&r.lock);
        }
        pthread_mutex_lock(&r.lock);
        r.stop = 1;
        pthread_cond_broadcast(&r.cond);
        pthread_mutex_unlock(&r.lock);
        while (nt)
                pthread_join(t[--nt], NULL);
        pthread_mutex_destroy(&r.lock);
        pthread_cond_destroy(&r.cond);
        free(r.done);
        return rc < 0 ? rc : 0;
}
