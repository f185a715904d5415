/* prefetch.h - slow, independent steps (a round trip each over S3) run ahead on several threads,
 * while their results are used one at a time, in order, on the caller's thread.
 *
 * Reading every index file, every snapshot record or every pack header one after the other cost
 * a round trip each; with the results still used in order on one thread, what the caller does
 * with them (index inserts, messages, counters) needs no locking and stays deterministic. */
#ifndef KB_PREFETCH_H
#define KB_PREFETCH_H

#include <stddef.h>

/* For work bound by round trips rather than CPU: enough requests in flight to hide a remote
 * store's latency, few enough to stay polite to it. */
#define KB_PREFETCH_THREADS 8
#define KB_PREFETCH_AHEAD   16

/* Produce item i. Runs on any thread, at most once per item, and must touch only item i's own
 * state (the caller keeps one slot per item). */
typedef void (*kb_prefetch_fetch_fn)(size_t i, void *arg);
/* Use item i, on the caller's thread, in order 0, 1, ...; a negative return stops the run. */
typedef int (*kb_prefetch_use_fn)(size_t i, void *arg);

/* Items 0..n-1: up to `threads` threads fetch up to `ahead` items past the one being used (none,
 * each item fetched right before its use, when memory or threads are short). Returns 0, or the
 * first negative value of use: nothing is used after it, and items fetched ahead stay in their
 * slots for the caller to free. */
int kb_prefetch_run(size_t n, unsigned threads, size_t ahead, kb_prefetch_fetch_fn fetch,
                    kb_prefetch_use_fn use, void *arg);

#endif
