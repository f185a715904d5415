/* test_objfetch.c - kb_repo_object_each: every object of a type reaches the callback once, in
 * listing order, with its plaintext; several are fetched at once (over a store slowed down like a
 * remote one); a damaged object is reported for itself and the others still arrive; a callback's
 * error stops the walk. */
#include "ops_testlib.h"

#include "counting_backend.h"

TestSuite(objfetch, .init = ops_setup, .fini = ops_teardown, .timeout = 60);

#define NOBJ 40

/* What store() put under each name: "object N" under stored[N]. */
static char stored[NOBJ][KB_ID_HEX_LEN + 1];

static int stored_as(const char *name)
{
        for (int i = 0; i < NOBJ; i++)
                if (strcmp(stored[i], name) == 0)
                        return i;
        return -1;
}

struct seen {
        char names[NOBJ][KB_ID_HEX_LEN + 1];
        int n, failed, stop_at;
        int rc_at[NOBJ];
};

static int list_cb(const char *name, uint64_t size, void *arg)
{
        struct seen *s = arg;

        (void)size;
        cr_assert_lt(s->n, NOBJ);
        strcpy(s->names[s->n++], name);
        return 0;
}

static int each_cb(const char *name, int rc, struct kb_buf *plain, const struct kb_err *ferr,
                   void *arg)
{
        struct seen *s = arg;
        char want[32];
        int i = s->n++;

        cr_assert_lt(i, NOBJ);
        strcpy(s->names[i], name);
        s->rc_at[i] = rc;
        if (rc < 0) {
                cr_assert(strstr(ferr->msg, "authentication failed"), "%s", ferr->msg);
                s->failed++;
        } else {
                /* The plaintext is the one stored under this name. */
                snprintf(want, sizeof(want), "object %d", stored_as(name));
                cr_assert_eq(plain->len, strlen(want), "%s", name);
                cr_assert(memcmp(plain->data, want, plain->len) == 0, "%s: %.*s, want %s", name,
                          (int)plain->len, (char *)plain->data, want);
        }
        return i == s->stop_at ? -ECANCELED : 0;
}

/* NOBJ snapshot-type objects "object N"; returns the repository, open. */
static struct kb_repo *store(void)
{
        struct kb_repo *r = ops_open();
        struct kb_err e = {0};

        for (int i = 0; i < NOBJ; i++) {
                char text[32];

                snprintf(text, sizeof(text), "object %d", i);
                cr_assert_eq(
                    kb_repo_object_put(r, KB_OBJ_SNAPSHOT, text, strlen(text), stored[i], &e), 0,
                    "%s", e.msg);
        }
        return r;
}

Test(objfetch, every_object_once_in_listing_order_several_at_once)
{
        struct kb_repo *r = store();
        struct seen listed = {0}, got = {.stop_at = -1};
        struct kb_err e = {0};
        struct counting *c = counting_wrap(r);

        c->delay_us = 5000;
        cr_assert_eq(kb_backend_list(r->be, KB_OBJ_SNAPSHOT, list_cb, &listed, &e), 0);
        cr_assert_eq(kb_repo_object_each(r, KB_OBJ_SNAPSHOT, each_cb, &got, &e), 0, "%s", e.msg);
        cr_assert_eq(got.n, NOBJ);
        cr_assert_eq(got.failed, 0);
        for (int i = 0; i < NOBJ; i++)
                cr_assert_str_eq(got.names[i], listed.names[i]);
        cr_assert_gt(c->max_inflight, 1, "objects were fetched one at a time");
        kb_repo_close(r);
}

Test(objfetch, damage_is_reported_for_its_object_and_a_callback_error_stops)
{
        struct kb_repo *r = store();
        struct seen got = {.stop_at = -1}, stopped = {.stop_at = 9};
        struct kb_err e = {0};
        char path[512];
        int bad = -1;

        /* Damage the 8th object listed. */
        cr_assert_eq(kb_backend_list(r->be, KB_OBJ_SNAPSHOT, list_cb, &got, &e), 0);
        snprintf(path, sizeof(path), "%s/snapshots/%s", ops_dir, got.names[7]);
        ops_flip(path, 20);
        memset(&got, 0, sizeof(got));
        got.stop_at = -1;
        cr_assert_eq(kb_repo_object_each(r, KB_OBJ_SNAPSHOT, each_cb, &got, &e), 0, "%s", e.msg);
        cr_assert_eq(got.n, NOBJ);
        cr_assert_eq(got.failed, 1);
        for (int i = 0; i < NOBJ; i++)
                if (got.rc_at[i] < 0)
                        bad = i;
        cr_assert_eq(bad, 7);
        cr_assert_eq(got.rc_at[7], KB_ECORRUPT);

        cr_assert_eq(kb_repo_object_each(r, KB_OBJ_SNAPSHOT, each_cb, &stopped, &e), -ECANCELED);
        cr_assert_eq(stopped.n, 10, "the walk went on after the callback's error");
        kb_repo_close(r);
}
