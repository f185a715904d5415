/* test_check.c - check finds and names each kind of damage, and the snapshots and files it
 * affects; a sound repository (leftovers included) passes; over a slow store it reads several
 * records and pack headers at once and still reports in a fixed order. */
#include "ops_testlib.h"

#include "check.h"
#include "counting_backend.h"
#include "maint.h"

TestSuite(check, .init = ops_setup, .fini = ops_teardown);

#define NFILES 6

static struct ops_log *run_check(int read_data, unsigned subset, struct kb_check_result *res)
{
        struct kb_repo *r = ops_open_flags(KB_REPO_NO_INDEX);
        struct kb_check_opts o = {
            .read_data = read_data, .read_subset_pct = subset, .report = ops_report};
        struct ops_log *log = calloc(1, sizeof(*log));
        struct kb_err e = {0};

        o.arg = log;
        cr_assert_eq(kb_check(r, &o, res, &e), 0, "%s", e.msg);
        cr_assert_eq(res->errors, log->errors);
        kb_repo_close(r);
        return log;
}

static void two_snapshots(char a[KB_ID_HEX_LEN + 1], char b[KB_ID_HEX_LEN + 1])
{
        struct kb_repo *r = ops_open();

        ops_snapshot(r, 1, NFILES, 2, 1700000000, a);
        ops_snapshot(r, 2, NFILES, 2, 1700001000, b);
        kb_repo_close(r);
}

/* Which pack holds file `n` of generation `gen`, and at what offset. */
static void locate(unsigned gen, unsigned n, char pack[KB_ID_HEX_LEN + 1], uint32_t *offset)
{
        struct kb_repo *r = ops_open();
        uint8_t *buf = malloc(OPS_FILE_SIZE), id[KB_ID_LEN];
        const struct kb_index_entry *e;

        ops_content(gen, n, buf, OPS_FILE_SIZE);
        kb_repo_blob_id(r, buf, OPS_FILE_SIZE, id);
        e = kb_index_lookup(r->index, id);
        cr_assert_not_null(e);
        kb_hex_encode(kb_index_pack_id(r->index, e->pack), KB_ID_LEN, pack);
        *offset = e->offset;
        free(buf);
        kb_repo_close(r);
}

static void pack_path(const char *pack, char *out, size_t len)
{
        snprintf(out, len, "%s/data/%.2s/%s", ops_dir, pack, pack);
}

Test(check, sound_repository_passes)
{
        char a[KB_ID_HEX_LEN + 1], b[KB_ID_HEX_LEN + 1];
        struct kb_check_result res;
        struct ops_log *log;

        two_snapshots(a, b);
        log = run_check(1, 0, &res);
        cr_expect_eq(res.errors, 0, "%s", log->buf);
        cr_expect_eq(res.snapshots, 2);
        cr_expect_gt(res.packs, 1);
        cr_expect_eq(res.packs_read, res.packs);
        cr_expect_eq(res.trees, 4, "two root trees and two sub trees");
        free(log);
}

Test(check, flipped_byte_is_found_with_read_data_and_named)
{
        char a[KB_ID_HEX_LEN + 1], b[KB_ID_HEX_LEN + 1], pack[KB_ID_HEX_LEN + 1], path[256];
        struct kb_check_result res;
        struct ops_log *log;
        uint32_t off;

        two_snapshots(a, b);
        /* f4 of generation 2: only snapshot b has it. */
        locate(2, 4, pack, &off);
        pack_path(pack, path, sizeof(path));
        ops_flip(path, off + 100);

        log = run_check(0, 0, &res);
        cr_expect_eq(res.errors, 0, "structure alone cannot see inside a chunk:\n%s", log->buf);
        free(log);

        log = run_check(1, 0, &res);
        cr_expect_gt(res.errors, 0);
        cr_expect(strstr(log->buf, pack) != NULL, "the pack is named:\n%s", log->buf);
        cr_expect(strstr(log->buf, "does not match its name"), "%s", log->buf);
        cr_expect(strstr(log->buf, "authentication failed"), "%s", log->buf);
        {
                char line[160];

                snprintf(line, sizeof(line), "snapshot %.8s: f4: 1 of 1 chunk(s) damaged", b);
                cr_expect(strstr(log->buf, line), "want '%s' in:\n%s", line, log->buf);
                snprintf(line, sizeof(line), "snapshot %.8s:", a);
                cr_expect(strstr(log->buf, line) == NULL, "snapshot a is not affected:\n%s",
                          log->buf);
        }
        cr_expect_eq(res.damaged_snapshots, 1);
        free(log);

        /* A subset of 100% reads everything too. */
        log = run_check(0, 100, &res);
        cr_expect_gt(res.errors, 0);
        free(log);
}

Test(check, missing_pack_names_snapshots_and_files)
{
        char a[KB_ID_HEX_LEN + 1], b[KB_ID_HEX_LEN + 1], pack[KB_ID_HEX_LEN + 1], path[256];
        char line[200];
        struct kb_check_result res;
        struct ops_log *log;
        uint32_t off;

        two_snapshots(a, b);
        /* f0 is shared by both generations. */
        locate(0, 0, pack, &off);
        pack_path(pack, path, sizeof(path));
        cr_assert_eq(unlink(path), 0);
        log = run_check(0, 0, &res);
        cr_expect_gt(res.errors, 0);
        snprintf(line, sizeof(line), "pack %s is missing", pack);
        cr_expect(strstr(log->buf, line), "%s", log->buf);
        snprintf(line, sizeof(line), "snapshot %.8s: f0: 1 of 1 chunk(s) damaged", a);
        cr_expect(strstr(log->buf, line), "want '%s' in:\n%s", line, log->buf);
        snprintf(line, sizeof(line), "snapshot %.8s: f0: 1 of 1 chunk(s) damaged", b);
        cr_expect(strstr(log->buf, line), "want '%s' in:\n%s", line, log->buf);
        cr_expect_eq(res.damaged_snapshots, 2);
        free(log);
}

Test(check, truncated_pack_and_damaged_header)
{
        char a[KB_ID_HEX_LEN + 1], b[KB_ID_HEX_LEN + 1], pack[KB_ID_HEX_LEN + 1], path[256];
        struct kb_check_result res;
        struct ops_log *log;
        struct stat st;
        uint32_t off;

        two_snapshots(a, b);
        locate(2, 5, pack, &off);
        pack_path(pack, path, sizeof(path));
        cr_assert_eq(stat(path, &st), 0);
        /* The last bytes are the header's tag and the length word. */
        ops_flip(path, st.st_size - 10);
        log = run_check(0, 0, &res);
        cr_expect_gt(res.errors, 0);
        cr_expect(strstr(log->buf, "header does not authenticate"), "%s", log->buf);
        cr_expect(strstr(log->buf, pack), "%s", log->buf);
        free(log);

        cr_assert_eq(truncate(path, st.st_size - 1000), 0);
        log = run_check(0, 0, &res);
        cr_expect_gt(res.errors, 0);
        cr_expect(strstr(log->buf, pack), "%s", log->buf);
        free(log);
}

Test(check, damaged_index_and_snapshot_records_are_reported)
{
        char a[KB_ID_HEX_LEN + 1], b[KB_ID_HEX_LEN + 1], path[512];
        struct kb_check_result res;
        struct ops_log *log;

        two_snapshots(a, b);
        snprintf(path, sizeof(path), "%s/snapshots/%s", ops_dir, a);
        ops_flip(path, 30);
        log = run_check(0, 0, &res);
        cr_expect_gt(res.errors, 0);
        cr_expect(strstr(log->buf, "snapshot ") && strstr(log->buf, "authentication failed"), "%s",
                  log->buf);
        cr_expect_eq(res.snapshots, 1, "the other snapshot is still checked");
        free(log);
}

Test(check, damaged_index_file_is_reported_and_check_goes_on)
{
        char a[KB_ID_HEX_LEN + 1], b[KB_ID_HEX_LEN + 1], path[512];
        struct kb_check_result res;
        struct ops_log *log;
        DIR *d;
        struct dirent *de;

        two_snapshots(a, b);
        snprintf(path, sizeof(path), "%s/index", ops_dir);
        d = opendir(path);
        cr_assert_not_null(d);
        while ((de = readdir(d)) != NULL && de->d_name[0] == '.')
                ;
        cr_assert_not_null(de);
        snprintf(path, sizeof(path), "%s/index/%s", ops_dir, de->d_name);
        closedir(d);
        ops_flip(path, 40);
        log = run_check(0, 0, &res);
        cr_expect_gt(res.errors, 0);
        cr_expect(strstr(log->buf, "index "), "%s", log->buf);
        cr_expect(strstr(log->buf, "in no index"), "the blobs it named are missing:\n%s", log->buf);
        free(log);
}

/* A file that is not kbackup's among the index files and snapshot records (a README, a stray
 * upload) is not an object: opening, listing and check skip it instead of failing to unseal it. */
Test(check, stray_names_beside_records_are_ignored)
{
        char a[KB_ID_HEX_LEN + 1], b[KB_ID_HEX_LEN + 1], path[512];
        static const char *const stray[] = {"index/README", "snapshots/notes.txt",
                                            "snapshots/0123456789abcdef"};
        struct kb_snapshot_list l;
        struct kb_check_result res;
        struct ops_log *log;
        struct kb_repo *r;
        struct kb_err e = {0};

        two_snapshots(a, b);
        for (size_t i = 0; i < sizeof(stray) / sizeof(stray[0]); i++) {
                FILE *f;

                snprintf(path, sizeof(path), "%s/%s", ops_dir, stray[i]);
                f = fopen(path, "w");
                cr_assert_not_null(f, "%s", path);
                fputs("not kbackup's\n", f);
                fclose(f);
        }
        r = ops_open(); /* loads every index file */
        cr_assert_eq(kb_repo_snapshot_list(r, &l, &e), 0, "%s", e.msg);
        cr_expect_eq(l.count, 2);
        kb_snapshot_list_free(&l);
        kb_repo_close(r);
        log = run_check(1, 0, &res);
        cr_expect_eq(res.errors, 0, "%s", log->buf);
        cr_expect_eq(res.snapshots, 2);
        cr_expect_eq(res.damaged_snapshots, 0);
        free(log);
}

Test(check, leftover_packs_are_a_note_not_an_error)
{
        char a[KB_ID_HEX_LEN + 1], b[KB_ID_HEX_LEN + 1];
        struct kb_repo *r;
        struct kb_check_result res;
        struct ops_log *log;
        uint8_t buf[70000], id[KB_ID_LEN];
        struct kb_err e = {0};

        two_snapshots(a, b);
        r = ops_open();
        ops_content(77, 1, buf, sizeof(buf));
        kb_repo_blob_id(r, buf, sizeof(buf), id);
        cr_assert_eq(kb_repo_blob_save(r, KB_BLOB_DATA, id, buf, sizeof(buf), NULL, &e), 0);
        kb_repo_close(r); /* the pack was written (it was full), no index names it */
        log = run_check(1, 0, &res);
        cr_expect_eq(res.errors, 0, "%s", log->buf);
        cr_expect_eq(res.leftover_packs, 1);
        cr_expect(strstr(log->buf, "N 1 pack(s)"), "%s", log->buf);
        free(log);
}

Test(check, subset_reads_a_share_of_the_packs)
{
        char a[KB_ID_HEX_LEN + 1], b[KB_ID_HEX_LEN + 1];
        struct kb_check_result res;
        struct ops_log *log;

        two_snapshots(a, b);
        log = run_check(0, 50, &res);
        cr_expect_eq(res.errors, 0, "%s", log->buf);
        cr_expect_eq(res.packs_read, (res.packs + 1) / 2, "%llu of %llu",
                     (unsigned long long)res.packs_read, (unsigned long long)res.packs);
        free(log);
}

/* check without --read-data over a store slowed down like a remote one (each read 10 ms); the
 * most pack (header) reads at once in *max_inflight. */
static struct ops_log *run_check_slow(struct kb_check_result *res, unsigned *max_inflight)
{
        struct kb_repo *r = ops_open_flags(KB_REPO_NO_INDEX);
        struct kb_check_opts o = {.report = ops_report};
        struct ops_log *log = calloc(1, sizeof(*log));
        struct counting *c = counting_wrap(r);
        struct kb_err e = {0};

        c->delay_us = 10000;
        o.arg = log;
        cr_assert_eq(kb_check(r, &o, res, &e), 0, "%s", e.msg);
        *max_inflight = atomic_load(&c->max_pack_inflight);
        kb_repo_close(r);
        return log;
}

#define NGEN 12

Test(check, slow_store_is_read_several_at_once_and_reported_in_order)
{
        char id[KB_ID_HEX_LEN + 1], p3[KB_ID_HEX_LEN + 1], p9[KB_ID_HEX_LEN + 1], path[256];
        struct kb_check_result res, res2;
        struct ops_log *log, *log2;
        unsigned inflight, inflight2;
        struct stat st;
        uint32_t off;

        for (unsigned g = 1; g <= NGEN; g++) { /* a pack (or more) per snapshot */
                struct kb_repo *r = ops_open();

                ops_snapshot(r, g, 2, 0, 1700000000 + g, id);
                kb_repo_close(r);
        }
        locate(3, 0, p3, &off);
        locate(9, 0, p9, &off);
        pack_path(p3, path, sizeof(path));
        cr_assert_eq(stat(path, &st), 0);
        ops_flip(path, st.st_size - 10);
        pack_path(p9, path, sizeof(path));
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq(truncate(path, st.st_size - 3), 0);

        log = run_check_slow(&res, &inflight);
        cr_expect_eq(res.snapshots, NGEN);
        cr_expect_geq(res.packs, NGEN);
        cr_expect(strstr(log->buf, p3) && strstr(log->buf, p9), "%s", log->buf);
        cr_expect_geq(inflight, 4, "at most %u pack header read(s) at once", inflight);
        /* Reads finish in another order on another run; the report does not. */
        log2 = run_check_slow(&res2, &inflight2);
        cr_expect_eq(res.errors, res2.errors);
        cr_expect_str_eq(log->buf, log2->buf);
        free(log);
        free(log2);
}

static size_t live_count(struct kb_repo *r)
{
        const struct kb_index_entry *e;
        size_t pos = 0, n = 0;

        while ((e = kb_index_next(r->index, &pos)) != NULL)
                n += (e->mark & KB_MARK_LIVE) != 0;
        return n;
}

/* Marking every snapshot (check, prune, stats) reads the next snapshots' tree blocks while it
 * walks one, over a slow store several at once, and marks what a walk of one snapshot at a time
 * marks. */
Test(check, the_mark_walk_reads_the_next_snapshots_trees_ahead)
{
        struct kb_snapshot_list l = {0};
        struct kb_err e = {0};
        struct kb_repo *r;
        struct counting *c;
        char id[KB_ID_HEX_LEN + 1];
        size_t one_by_one;

        for (unsigned g = 1; g <= NGEN; g++) { /* a tree pack per snapshot */
                r = ops_open();
                ops_snapshot(r, g, 2, 0, 1700000000 + g, id);
                kb_repo_close(r);
        }
        r = ops_open_flags(KB_REPO_READ_ONLY);
        cr_assert_eq(kb_repo_snapshot_list(r, &l, &e), 0, "%s", e.msg);
        cr_assert_eq(l.count, NGEN);
        for (size_t s = 0; s < l.count; s++)
                cr_assert_eq(kb_maint_mark(r, &l, s, NULL, &e), 0, "%s", e.msg);
        one_by_one = live_count(r);
        kb_maint_clear_marks(r);
        kb_repo_close(r);

        /* A fresh open: no tree block is cached yet. */
        r = ops_open_flags(KB_REPO_READ_ONLY);
        kb_snapshot_list_free(&l);
        cr_assert_eq(kb_repo_snapshot_list(r, &l, &e), 0, "%s", e.msg);
        c = counting_wrap(r);
        c->delay_us = 10000;
        cr_assert_eq(kb_maint_mark(r, &l, SIZE_MAX, NULL, &e), 0, "%s", e.msg);
        cr_expect_eq(live_count(r), one_by_one);
        cr_expect_geq(c->max_pack_inflight, 2, "tree blocks read one at a time");
        cr_expect_leq(c->gets, 2 * NGEN, "%u reads for %d snapshots", c->gets, NGEN);
        kb_snapshot_list_free(&l);
        kb_repo_close(r);
}
