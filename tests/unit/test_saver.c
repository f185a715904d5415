/* test_saver.c - the store pipeline hands jobs to its workers in batches and wakes them lazily:
 * a handful of tiny chunks (fewer than a batch) still complete when the producer waits for them,
 * a budget smaller than a batch does not leave the producer waiting on idle workers, every closed
 * group's callback runs exactly once, and every chunk lands under its id with its bytes. A lost
 * wake-up hangs these tests into their timeout. */
#include "ops_testlib.h"

#include "saver.h"

TestSuite(saver, .init = ops_setup, .fini = ops_teardown, .timeout = 60);

/* Tiny chunk i: distinct bytes of 100 + i % 400 length. */
static uint8_t *tiny(unsigned i, size_t *len)
{
        uint8_t *p;

        *len = 100 + i % 400;
        p = malloc(*len);
        cr_assert_not_null(p);
        for (size_t k = 0; k < *len; k++)
                p[k] = (uint8_t)(i * 131 + k * 7 + (k >> 8));
        memcpy(p, &i, sizeof(i));
        return p;
}

/* Each chunk is in the repository under the id its slot got, with its bytes. */
static void verify(struct kb_repo *r, unsigned n, uint8_t (*ids)[KB_ID_LEN])
{
        struct kb_buf got = KB_BUF_INIT;
        struct kb_err e = {0};

        for (unsigned i = 0; i < n; i++) {
                size_t len;
                uint8_t *want = tiny(i, &len), id[KB_ID_LEN];

                kb_repo_blob_id(r, want, len, id);
                cr_assert(memcmp(id, ids[i], KB_ID_LEN) == 0, "chunk %u under another id", i);
                kb_buf_reset(&got);
                cr_assert_eq(kb_repo_blob_load(r, ids[i], &got, &e), 0, "chunk %u: %s", i, e.msg);
                cr_assert(got.len == len && memcmp(got.data, want, len) == 0, "chunk %u", i);
                free(want);
        }
        kb_buf_free(&got);
}

static void submit_tiny(struct kb_saver *s, struct kb_saver_group *g, unsigned i, uint8_t *slot)
{
        struct kb_err e = {0};
        size_t len;
        uint8_t *data = tiny(i, &len);

        cr_assert_eq(kb_saver_submit(s, g, KB_BLOB_DATA, data, len, slot, &e), 0, "%s", e.msg);
}

/* Submit n tiny chunks in one group to a saver with the budget given (0: default) whose workers
 * are asleep by then, wait for the group, then check every chunk stored. */
static void one_group(unsigned n, size_t budget)
{
        struct kb_repo *r = ops_open();
        uint8_t(*ids)[KB_ID_LEN] = calloc(n, KB_ID_LEN);
        struct kb_saver *s = NULL;
        struct kb_saver_group *g;
        struct kb_err e = {0};

        cr_assert_eq(kb_saver_new(r, 2, budget, &s, &e), 0, "%s", e.msg);
        usleep(50000); /* the workers are asleep: only the producer can wake them */
        g = kb_saver_group_new(s);
        cr_assert_not_null(g);
        for (unsigned i = 0; i < n; i++)
                submit_tiny(s, g, i, ids[i]);
        cr_assert_eq(kb_saver_group_wait(g, &e), 0, "%s", e.msg);
        kb_saver_group_free(g);
        cr_assert_eq(kb_saver_free(s, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_repo_flush(r, &e), 0, "%s", e.msg);
        verify(r, n, ids);
        free(ids);
        kb_repo_close(r);
}

Test(saver, fewer_chunks_than_a_batch_complete_when_waited_for)
{
        one_group(5, 0);
}

/* 1000 bytes in flight: the producer waits for space after two or three chunks. */
Test(saver, a_budget_below_a_batch_does_not_stall_the_producer)
{
        one_group(200, 1000);
}

#define NGROUPS 300

static int done_calls[NGROUPS];
static unsigned group_no[NGROUPS];

static void on_done(void *arg, int rc, const struct kb_err *err)
{
        (void)err;
        cr_assert_eq(rc, 0);
        __atomic_add_fetch(&done_calls[*(unsigned *)arg], 1, __ATOMIC_RELAXED);
}

Test(saver, every_closed_group_finishes_once)
{
        static uint8_t ids[NGROUPS * 3][KB_ID_LEN];
        struct kb_repo *r = ops_open();
        struct kb_saver *s = NULL;
        struct kb_err e = {0};

        cr_assert_eq(kb_saver_new(r, 2, 0, &s, &e), 0, "%s", e.msg);
        for (unsigned k = 0; k < NGROUPS; k++) {
                struct kb_saver_group *g = kb_saver_group_new(s);

                cr_assert_not_null(g);
                for (unsigned j = 0; j < 3; j++)
                        submit_tiny(s, g, 3 * k + j, ids[3 * k + j]);
                group_no[k] = k;
                kb_saver_group_close(g, on_done, &group_no[k]);
        }
        /* Freeing waits for every queued chunk, so every group has finished by then. */
        cr_assert_eq(kb_saver_free(s, &e), 0, "%s", e.msg);
        for (unsigned k = 0; k < NGROUPS; k++)
                cr_assert_eq(done_calls[k], 1, "group %u finished %d times", k, done_calls[k]);
        cr_assert_eq(kb_repo_flush(r, &e), 0, "%s", e.msg);
        verify(r, NGROUPS * 3, ids);
        kb_repo_close(r);
}
