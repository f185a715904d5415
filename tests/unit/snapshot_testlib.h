/* snapshot_testlib.h - find a snapshot by id in a test's repository. */
#ifndef KB_SNAPSHOT_TESTLIB_H
#define KB_SNAPSHOT_TESTLIB_H

#include <criterion/criterion.h>

#include "repo.h"

/* The volume snapshot `id` (a prefix will do); l must be freed with kb_snapshot_list_free. */
static inline const Kbackup__Snapshot *test_find_snap(struct kb_repo *r, const char *id,
                                                      struct kb_snapshot_list *l)
{
        struct kb_err e = {0};
        int i;

        cr_assert_eq(kb_repo_snapshot_list(r, l, &e), 0, "%s", e.msg);
        i = kb_snapshot_list_find(l, id, "volume", &e);
        cr_assert_geq(i, 0, "%s", e.msg);
        return l->items[i].snap;
}

#endif
