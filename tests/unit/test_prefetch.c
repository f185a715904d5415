/* test_prefetch.c - kb_prefetch_run: every item is fetched exactly once and used in order on the
 * caller's thread, fetches never run more than `ahead` items past the one in use, several run at
 * once when threads are given, none when not, and a use that fails stops the run. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "prefetch.h"

TestSuite(prefetch, .timeout = 30);

#define N 200

struct state {
        atomic_int fetched[N];
        atomic_int inflight, max_inflight;
        atomic_size_t used; /* items used so far */
        atomic_int too_far; /* a fetch ran more than `ahead` past the one in use */
        size_t ahead;
        size_t next_use;
        size_t stop_at;
        unsigned use_us; /* a slow use lets fetches run as far ahead as they may */
        pthread_t caller;
};

static void fetch(size_t i, void *arg)
{
        struct state *s = arg;
        int now = atomic_fetch_add(&s->inflight, 1) + 1, max = atomic_load(&s->max_inflight);

        while (now > max && !atomic_compare_exchange_weak(&s->max_inflight, &max, now)) {
        }
        if (i > atomic_load(&s->used) + s->ahead)
                atomic_store(&s->too_far, 1);
        usleep(1000);
        atomic_fetch_add(&s->fetched[i], 1);
        atomic_fetch_sub(&s->inflight, 1);
}

static int use(size_t i, void *arg)
{
        struct state *s = arg;

        cr_assert(pthread_equal(pthread_self(), s->caller), "item %zu used on another thread", i);
        cr_assert_eq(i, s->next_use, "item %zu used out of order", i);
        cr_assert_eq(atomic_load(&s->fetched[i]), 1, "item %zu used before it was fetched", i);
        s->next_use++;
        atomic_store(&s->used, i);
        if (s->use_us)
                usleep(s->use_us);
        return i == s->stop_at ? -42 : 0;
}

static struct state *run(unsigned threads, size_t ahead, size_t stop_at, unsigned use_us, int *rc)
{
        struct state *s = calloc(1, sizeof(*s));

        cr_assert_not_null(s);
        s->ahead = ahead;
        s->stop_at = stop_at;
        s->use_us = use_us;
        s->caller = pthread_self();
        *rc = kb_prefetch_run(N, threads, ahead, fetch, use, s);
        return s;
}

Test(prefetch, every_item_once_in_order_several_at_once)
{
        int rc;
        struct state *s = run(4, 8, SIZE_MAX, 2000, &rc);

        cr_assert_eq(rc, 0);
        cr_assert_eq(s->next_use, N);
        for (size_t i = 0; i < N; i++)
                cr_assert_eq(atomic_load(&s->fetched[i]), 1, "item %zu fetched %d times", i,
                             atomic_load(&s->fetched[i]));
        cr_assert_geq(atomic_load(&s->max_inflight), 2, "fetches ran one at a time");
        cr_assert_eq(atomic_load(&s->too_far), 0, "a fetch ran more than 8 ahead");
        free(s);
}

Test(prefetch, without_threads_each_item_is_fetched_as_it_is_used)
{
        int rc;
        struct state *s = run(0, 8, SIZE_MAX, 0, &rc);

        cr_assert_eq(rc, 0);
        cr_assert_eq(s->next_use, N);
        cr_assert_eq(atomic_load(&s->max_inflight), 1);
        free(s);
}

Test(prefetch, a_failed_use_stops_the_run)
{
        int rc;
        struct state *s = run(4, 4, 50, 2000, &rc);

        cr_assert_eq(rc, -42);
        cr_assert_eq(s->next_use, 51, "items used after the failure");
        for (size_t i = 56; i < N; i++) /* at most `ahead` past the failed one */
                cr_assert_eq(atomic_load(&s->fetched[i]), 0, "item %zu fetched", i);
        free(s);
}
