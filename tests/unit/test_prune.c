/* test_prune.c - prune: frees what forgotten snapshots used, repacks partly used packs, keeps
 * every remaining snapshot whole, removes leftovers, refuses to run on a damaged repository, and
 * survives being killed after any single step (each step tried in turn in a child process). */
#include "ops_testlib.h"

#include <sys/wait.h>

#include "check.h"
#include "prune.h"

TestSuite(prune, .init = ops_setup, .fini = ops_teardown);

#define NFILES 12
#define SHARED 4

/* Generations 1..n, snapshot times 1000 s apart; ids into ids[gen]. */
static void history(struct kb_repo *r, unsigned n, char ids[][KB_ID_HEX_LEN + 1])
{
        for (unsigned g = 1; g <= n; g++)
                ops_snapshot(r, g, NFILES, SHARED, 1700000000 + g * 1000, ids[g]);
}

static uint64_t bytes_of_packs(void)
{
        char cmd[256];
        unsigned long long n = 0;
        FILE *p;

        snprintf(cmd, sizeof(cmd), "du -sb --apparent-size %s/data | cut -f1", ops_dir);
        p = popen(cmd, "r");
        cr_assert_not_null(p);
        cr_assert_eq(fscanf(p, "%llu", &n), 1);
        pclose(p);
        return n;
}

static void check_clean(void)
{
        struct kb_repo *r = ops_open_flags(KB_REPO_NO_INDEX);
        struct kb_check_opts o = {.read_data = 1, .report = ops_report};
        struct kb_check_result res;
        struct ops_log *log = calloc(1, sizeof(*log));
        struct kb_err e = {0};

        o.arg = log;
        cr_assert_eq(kb_check(r, &o, &res, &e), 0, "%s", e.msg);
        cr_assert_eq(res.errors, 0, "check found problems:\n%s", log->buf);
        free(log);
        kb_repo_close(r);
}

static int prune(struct kb_repo *r, unsigned max_unused, struct kb_prune_result *res)
{
        struct kb_prune_opts o = {.max_unused_pct = max_unused};
        struct kb_err e = {0};
        int rc = kb_prune(r, &o, res, &e);

        cr_assert_eq(rc, 0, "%s", e.msg);
        return rc;
}

Test(prune, forget_then_prune_frees_space_and_keeps_the_rest)
{
        char ids[7][KB_ID_HEX_LEN + 1];
        struct kb_repo *r = ops_open();
        struct kb_prune_result res;
        struct kb_err e = {0};
        uint64_t before, after;

        history(r, 6, ids);
        kb_repo_close(r);
        before = bytes_of_packs();
        r = ops_open();
        /* Nothing forgotten: nothing to delete. */
        prune(r, KB_PRUNE_DEFAULT_MAX_UNUSED, &res);
        cr_expect_eq(res.packs_unused + res.packs_repacked + res.packs_unindexed, 0);
        kb_repo_close(r);
        cr_expect_eq(bytes_of_packs(), before);

        r = ops_open();
        for (unsigned g = 1; g <= 4; g++)
                cr_assert_eq(kb_repo_snapshot_remove(r, ids[g], &e), 0, "%s", e.msg);
        prune(r, KB_PRUNE_DEFAULT_MAX_UNUSED, &res);
        cr_expect_eq(res.snapshots, 2);
        cr_expect_gt(res.packs_unused + res.packs_repacked, 0);
        cr_expect_eq(res.index_written, 1);
        kb_repo_close(r);
        after = bytes_of_packs();
        cr_expect_lt(after * 10, before * 6, "before %llu after %llu", (unsigned long long)before,
                     (unsigned long long)after);

        r = ops_open();
        ops_verify(r, 5, NFILES, SHARED);
        ops_verify(r, 6, NFILES, SHARED);
        cr_expect_eq(ops_count(r, KB_OBJ_INDEX), 1);
        kb_repo_close(r);
        check_clean();
}

Test(prune, repacks_partly_used_packs)
{
        char ids[4][KB_ID_HEX_LEN + 1];
        struct kb_repo *r = ops_open();
        struct kb_prune_result res;
        struct kb_err e = {0};

        history(r, 3, ids);
        /* Generation 1's packs also hold the content every generation shares. */
        cr_assert_eq(kb_repo_snapshot_remove(r, ids[1], &e), 0);
        kb_repo_close(r);
        r = ops_open();
        /* 100: never repack; packs with something live stay as they are. */
        prune(r, 100, &res);
        cr_expect_eq(res.packs_repacked, 0);
        kb_repo_close(r);
        r = ops_open();
        prune(r, 0, &res);
        cr_expect_gt(res.packs_repacked, 0, "generation 1 packs are partly used");
        cr_expect_gt(res.packs_written, 0);
        cr_expect_lt(res.packs_written, res.packs_repacked + 1);
        kb_repo_close(r);
        r = ops_open();
        ops_verify(r, 2, NFILES, SHARED);
        ops_verify(r, 3, NFILES, SHARED);
        kb_repo_close(r);
        check_clean();
        /* A second prune finds nothing to do. */
        r = ops_open();
        prune(r, 0, &res);
        cr_expect_eq(res.packs_unused + res.packs_repacked + res.packs_unindexed, 0);
        cr_expect_eq(res.index_written, 0);
        kb_repo_close(r);
}

Test(prune, removes_leftovers_of_an_interrupted_backup)
{
        char ids[2][KB_ID_HEX_LEN + 1];
        struct kb_repo *r = ops_open();
        struct kb_prune_result res;
        uint8_t buf[70000], id[KB_ID_LEN];
        struct kb_err e = {0};
        size_t packs;

        history(r, 1, ids);
        /* A pack written, never indexed: what a killed backup leaves. */
        ops_content(99, 1, buf, sizeof(buf));
        kb_repo_blob_id(r, buf, sizeof(buf), id);
        packs = ops_count(r, KB_OBJ_PACK);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, id, buf, sizeof(buf), NULL, &e), 0);
        kb_repo_close(r); /* without flush: no index names it (close lets the writers finish) */
        r = ops_open();
        packs++;
        cr_assert_eq(ops_count(r, KB_OBJ_PACK), packs);
        cr_assert(!kb_repo_blob_known(r, id));
        prune(r, KB_PRUNE_DEFAULT_MAX_UNUSED, &res);
        cr_expect_eq(res.packs_unindexed, 1);
        cr_expect_eq(ops_count(r, KB_OBJ_PACK), packs - 1);
        kb_repo_close(r);
        r = ops_open();
        ops_verify(r, 1, NFILES, SHARED);
        kb_repo_close(r);
}

Test(prune, dry_run_changes_nothing)
{
        char ids[3][KB_ID_HEX_LEN + 1];
        struct kb_repo *r = ops_open();
        struct kb_prune_opts o = {.max_unused_pct = 0, .dry_run = 1};
        struct kb_prune_result res;
        struct kb_err e = {0};
        size_t packs, index;

        history(r, 2, ids);
        cr_assert_eq(kb_repo_snapshot_remove(r, ids[1], &e), 0);
        packs = ops_count(r, KB_OBJ_PACK);
        index = ops_count(r, KB_OBJ_INDEX);
        kb_repo_close(r);
        r = ops_open();
        cr_assert_eq(kb_prune(r, &o, &res, &e), 0, "%s", e.msg);
        cr_expect_gt(res.packs_unused + res.packs_repacked, 0);
        cr_expect_lt(res.bytes_after, res.bytes_before);
        cr_expect_eq(ops_count(r, KB_OBJ_PACK), packs);
        cr_expect_eq(ops_count(r, KB_OBJ_INDEX), index);
        kb_repo_close(r);
}

Test(prune, refuses_when_a_used_pack_is_missing)
{
        char ids[2][KB_ID_HEX_LEN + 1], pack[256];
        struct kb_repo *r = ops_open();
        struct kb_prune_opts o = {.max_unused_pct = 0};
        struct kb_prune_result res;
        struct kb_err e = {0};
        size_t packs, index;

        history(r, 1, ids);
        kb_repo_close(r);
        ops_some_pack(pack, sizeof(pack), 1);
        cr_assert_eq(unlink(pack), 0);
        r = ops_open();
        packs = ops_count(r, KB_OBJ_PACK);
        index = ops_count(r, KB_OBJ_INDEX);
        cr_assert_neq(kb_prune(r, &o, &res, &e), 0);
        cr_expect(strstr(e.msg, "check"), "%s", e.msg);
        cr_expect_eq(ops_count(r, KB_OBJ_PACK), packs, "nothing deleted");
        cr_expect_eq(ops_count(r, KB_OBJ_INDEX), index);
        kb_repo_close(r);
}

/* Kill after step `k` (counted over every progress call of the prune). */
static int kill_at, steps;

static void die_at_step(const char *phase, uint64_t done, uint64_t total, void *arg)
{
        (void)phase, (void)done, (void)total, (void)arg;
        if (++steps == kill_at)
                _exit(42);
}

Test(prune, killed_after_any_step_leaves_a_sound_repository, .timeout = 300)
{
        char ids[7][KB_ID_HEX_LEN + 1];
        char base[128], work[160], cmd[512];
        struct kb_repo *r = ops_open();
        struct kb_err e = {0};
        int k, finished = 0;

        history(r, 6, ids);
        for (unsigned g = 1; g <= 3; g++)
                cr_assert_eq(kb_repo_snapshot_remove(r, ids[g], &e), 0);
        kb_repo_close(r);
        /* Keep a pristine copy; every attempt starts from it. */
        snprintf(base, sizeof(base), "%s.base", ops_dir);
        snprintf(cmd, sizeof(cmd), "cp -a %s %s", ops_dir, base);
        cr_assert_eq(system(cmd), 0);
        snprintf(work, sizeof(work), "%s", ops_dir);
        for (k = 1; !finished && k < 1000; k++) {
                pid_t child;
                int status;

                snprintf(cmd, sizeof(cmd), "rm -rf %s && cp -a %s %s", work, base, work);
                cr_assert_eq(system(cmd), 0);
                child = fork();
                if (child == 0) {
                        struct kb_prune_opts o = {.max_unused_pct = 0, .progress = die_at_step};
                        struct kb_prune_result res;
                        struct kb_repo *cr = NULL;
                        struct kb_err ce = {0};

                        kill_at = k;
                        if (kb_repo_open(work, "pw", 2, 0, &cr, &ce) < 0)
                                _exit(1);
                        cr->pack_size = 64 << 10;
                        _exit(kb_prune(cr, &o, &res, &ce) == 0 ? 0 : 1);
                }
                cr_assert_gt(child, 0);
                cr_assert_eq(waitpid(child, &status, 0), child);
                cr_assert(WIFEXITED(status));
                cr_assert(WEXITSTATUS(status) == 42 || WEXITSTATUS(status) == 0,
                          "prune failed at step %d", k);
                finished = WEXITSTATUS(status) == 0;
                /* Whatever step it died after: sound, and what is left restores. */
                check_clean();
                r = ops_open();
                for (unsigned g = 4; g <= 6; g++)
                        ops_verify(r, g, NFILES, SHARED);
                kb_repo_close(r);
                if (finished)
                        break;
                /* The next prune finishes the job from there. */
                {
                        struct kb_prune_result res;

                        r = ops_open();
                        prune(r, 0, &res);
                        kb_repo_close(r);
                        check_clean();
                        r = ops_open();
                        for (unsigned g = 4; g <= 6; g++)
                                ops_verify(r, g, NFILES, SHARED);
                        cr_expect_eq(ops_count(r, KB_OBJ_INDEX), 1);
                        kb_repo_close(r);
                }
        }
        cr_expect(finished);
        cr_expect_gt(k, 8, "prune had only %d steps: the test did not exercise much", k);
        snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
        system(cmd);
}
