/* test_retention.c - retention policies against a synthetic history at chosen times, compared
 * with keep sets worked out by hand in the table below. */
#include "ops_testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "retention.h"

/* The history (UTC). 2024-01-01 is a Monday, so ISO week 2024-W01 is Jan 1-7; Dec 31 2023 is
 * in 2023-W52. Snapshots 0 and 5 carry env=prod, 3 carries env=dev. */
static const char *const times[] = {
    "2023-11-15 10:00", /* 0 */
    "2023-12-31 23:00", /* 1 */
    "2024-01-01 01:00", /* 2 */
    "2024-01-01 13:00", /* 3 */
    "2024-01-07 12:00", /* 4 */
    "2024-01-08 09:00", /* 5 */
    "2024-01-08 09:30", /* 6 */
    "2024-01-08 18:00", /* 7 */
    "2024-01-09 08:00", /* 8 */
    "2024-01-09 08:45", /* 9 */
    "2024-01-09 09:10", /* 10 */
};
#define NSNAP (sizeof(times) / sizeof(times[0]))

static Kbackup__Snapshot snaps[NSNAP];
static Kbackup__Tag prod = KBACKUP__TAG__INIT, dev = KBACKUP__TAG__INIT;
static Kbackup__Tag *prod_tags[] = {&prod}, *dev_tags[] = {&dev};
static struct kb_snapshot_entry entries[NSNAP];
static struct kb_snapshot_list list = {entries, NSNAP};

static int64_t parse_utc(const char *s)
{
        struct tm tm = {0};

        cr_assert_not_null(strptime(s, "%Y-%m-%d %H:%M", &tm), "%s", s);
        return (int64_t)timegm(&tm) * 1000000000LL;
}

static void setup(void)
{
        setenv("TZ", "UTC", 1);
        tzset();
        prod.key = "env";
        prod.value = "prod";
        dev.key = "env";
        dev.value = "dev";
        for (size_t i = 0; i < NSNAP; i++) {
                kbackup__snapshot__init(&snaps[i]);
                snaps[i].time_unix_nsec = parse_utc(times[i]);
                snaps[i].kind = "volume";
                snaps[i].name = "ns/data";
                snaps[i].host = "node1";
                snaps[i].source_path = "/data";
                if (i == 0 || i == 5) {
                        snaps[i].n_tags = 1;
                        snaps[i].tags = prod_tags;
                } else if (i == 3) {
                        snaps[i].n_tags = 1;
                        snaps[i].tags = dev_tags;
                }
                snprintf(entries[i].id, sizeof(entries[i].id), "%064zx", i);
                entries[i].snap = &snaps[i];
        }
}

TestSuite(retention, .init = setup);

/* Apply and compare with the expected keep set, given as a string of 0/1 per snapshot. */
static void expect(const struct kb_retention_policy *p, const char *want, const char *what)
{
        struct kb_retention_result res;
        struct kb_err e = {0};
        char got[NSNAP + 1];

        cr_assert_eq(kb_retention_apply(&list, p, KB_GROUP_DEFAULT, &res, &e), 0, "%s", e.msg);
        cr_assert_eq(res.count, NSNAP);
        cr_assert_eq(res.ngroups, 1);
        for (size_t i = 0; i < NSNAP; i++) {
                got[i] = res.items[i].keep ? '1' : '0';
                cr_assert_eq(res.items[i].snap, i);
                /* A kept snapshot says why; a removed one has no reason. */
                cr_assert_eq(res.items[i].keep, res.items[i].reasons[0] != '\0');
        }
        got[NSNAP] = '\0';
        cr_expect_str_eq(got, want, "%s: got %s want %s", what, got, want);
        kb_retention_result_free(&res);
}

Test(retention, table)
{
        static const char *const prod_only[] = {"env=prod"};
        static const char *const env_any[] = {"env"};
        /*                                      snapshot: 0123456789A */
        struct {
                const char *what;
                struct kb_retention_policy p;
                const char *keep;
        } table[] = {
            {"last 3", {.last = 3}, "00000000111"},
            {"hourly 3", {.hourly = 3}, "00000001011"},
            {"daily 3", {.daily = 3}, "00001001001"},
            {"weekly 2", {.weekly = 2}, "00001000001"},
            {"weekly 4", {.weekly = 4}, "11001000001"},
            {"monthly 2", {.monthly = 2}, "01000000001"},
            {"yearly 5", {.yearly = 5}, "01000000001"},
            {"hourly unlimited", {.hourly = KB_KEEP_UNLIMITED}, "11111011011"},
            {"within 1d", {.within_days = 1}, "00000011111"},
            {"within 2w", {.within_days = 14}, "01111111111"},
            {"within 1m", {.within_months = 1}, "01111111111"},
            {"within 2m", {.within_months = 2}, "11111111111"},
            {"within 24h", {.within_hours = 24}, "00000011111"},
            {"tag env=prod", {.tags = prod_only, .ntags = 1}, "10000100000"},
            {"tag env", {.tags = env_any, .ntags = 1}, "10010100000"},
            {"daily 2 + monthly 3 + tag env=prod",
             {.daily = 2, .monthly = 3, .tags = prod_only, .ntags = 1},
             "11000101001"},
            {"last 1 + yearly 1", {.last = 1, .yearly = 1}, "00000000001"},
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
                expect(&table[i].p, table[i].keep, table[i].what);
}

Test(retention, reasons_name_every_rule)
{
        static const char *const prod_only[] = {"env=prod"};
        struct kb_retention_policy p = {
            .last = 1, .daily = 2, .monthly = 3, .tags = prod_only, .ntags = 1};
        struct kb_retention_result res;
        struct kb_err e = {0};

        cr_assert_eq(kb_retention_apply(&list, &p, KB_GROUP_DEFAULT, &res, &e), 0);
        cr_expect_str_eq(res.items[10].reasons, "last, daily, monthly");
        cr_expect_str_eq(res.items[0].reasons, "monthly, tag env=prod");
        cr_expect_str_eq(res.items[7].reasons, "daily");
        cr_expect_str_eq(res.items[9].reasons, "");
        kb_retention_result_free(&res);
}

Test(retention, groups_are_judged_apart)
{
        struct kb_retention_policy p = {.last = 1};
        struct kb_retention_result res;
        struct kb_err e = {0};

        /* Odd snapshots move to another host, 4 to another volume, 2 is an etcd snapshot. */
        for (size_t i = 1; i < NSNAP; i += 2)
                snaps[i].host = "node2";
        snaps[4].name = "ns/other";
        snaps[2].kind = "etcd";
        cr_assert_eq(kb_retention_apply(&list, &p, KB_GROUP_DEFAULT, &res, &e), 0);
        /* groups: volume ns/data node1 {0,6,8,10}, node2 {1,3,5,7,9}, etcd {2}, ns/other {4} */
        cr_expect_eq(res.ngroups, 4);
        for (size_t i = 0; i < NSNAP; i++)
                cr_expect_eq(res.items[i].keep, i == 10 || i == 9 || i == 2 || i == 4,
                             "snapshot %zu", i);
        kb_retention_result_free(&res);

        /* Grouping by source only joins the two hosts. */
        cr_assert_eq(kb_retention_apply(&list, &p, KB_GROUP_SOURCE, &res, &e), 0);
        cr_expect_eq(res.ngroups, 3);
        for (size_t i = 0; i < NSNAP; i++)
                cr_expect_eq(res.items[i].keep, i == 10 || i == 2 || i == 4, "snapshot %zu", i);
        kb_retention_result_free(&res);
}

Test(retention, etcd_groups_by_cluster_id)
{
        Kbackup__EtcdInfo a = KBACKUP__ETCD_INFO__INIT, b = KBACKUP__ETCD_INFO__INIT;
        struct kb_retention_policy p = {.last = 1};
        struct kb_retention_result res;
        struct kb_err e = {0};

        a.cluster_id = 0x1111;
        b.cluster_id = 0x2222;
        for (size_t i = 0; i < NSNAP; i++) {
                snaps[i].kind = "etcd";
                snaps[i].name = "same-name";
                snaps[i].etcd = i % 2 ? &a : &b;
        }
        cr_assert_eq(kb_retention_apply(&list, &p, KB_GROUP_DEFAULT, &res, &e), 0);
        cr_expect_eq(res.ngroups, 2);
        for (size_t i = 0; i < NSNAP; i++)
                cr_expect_eq(res.items[i].keep, i == 10 || i == 9, "snapshot %zu", i);
        kb_retention_result_free(&res);
}

Test(retention, parsing)
{
        struct kb_retention_policy p = {0};
        struct kb_err e = {0};
        unsigned g;

        cr_assert_eq(kb_retention_parse_within("1y6m2w3d4h", &p, &e), 0);
        cr_expect_eq(p.within_years, 1);
        cr_expect_eq(p.within_months, 6);
        cr_expect_eq(p.within_days, 17);
        cr_expect_eq(p.within_hours, 4);
        cr_expect_eq(kb_retention_parse_within("", &p, &e), KB_EUSAGE);
        cr_expect_eq(kb_retention_parse_within("10", &p, &e), KB_EUSAGE);
        cr_expect_eq(kb_retention_parse_within("5x", &p, &e), KB_EUSAGE);
        cr_expect_eq(kb_retention_parse_within("d", &p, &e), KB_EUSAGE);
        cr_assert_eq(kb_retention_parse_group_by("host,tags", &g, &e), 0);
        cr_expect_eq(g, KB_GROUP_HOST | KB_GROUP_TAGS);
        cr_assert_eq(kb_retention_parse_group_by("", &g, &e), 0);
        cr_expect_eq(g, 0);
        cr_expect_eq(kb_retention_parse_group_by("hostname", &g, &e), KB_EUSAGE);
        memset(&p, 0, sizeof(p));
        cr_expect(kb_retention_policy_empty(&p));
        p.within_hours = 1;
        cr_expect(!kb_retention_policy_empty(&p));
}

/* The same rules on a real repository: snapshots written at chosen times (the engine lets a test
 * set a snapshot's time; the CLI does not), forgotten by policy, listed back. */

TestSuite(retention_repo, .init = ops_setup, .fini = ops_teardown);

Test(retention_repo, forget_by_policy_in_a_repository)
{
        struct kb_repo *r = ops_open();
        struct kb_retention_policy p = {.daily = 2, .monthly = 2};
        struct kb_snapshot_list l;
        struct kb_retention_result res;
        char ids[NSNAP][KB_ID_HEX_LEN + 1];
        struct kb_err e = {0};
        size_t kept = 0;

        setenv("TZ", "UTC", 1);
        tzset();
        for (size_t i = 0; i < NSNAP; i++)
                ops_snapshot(r, (unsigned)i + 1, 2, 1, parse_utc(times[i]) / 1000000000, ids[i]);
        cr_assert_eq(kb_repo_snapshot_list(r, &l, &e), 0, "%s", e.msg);
        cr_assert_eq(l.count, NSNAP);
        cr_assert_eq(kb_retention_apply(&l, &p, KB_GROUP_DEFAULT, &res, &e), 0);
        for (size_t i = 0; i < res.count; i++)
                if (!res.items[i].keep)
                        cr_assert_eq(kb_repo_snapshot_remove(r, l.items[i].id, &e), 0);
        kb_retention_result_free(&res);
        kb_snapshot_list_free(&l);
        /* daily 2: 10, 7; monthly 2: 10 (January), 1 (December) */
        cr_assert_eq(kb_repo_snapshot_list(r, &l, &e), 0);
        for (size_t i = 0; i < l.count; i++) {
                int want = 0;

                for (size_t k = 0; k < NSNAP; k++)
                        if (!strcmp(l.items[i].id, ids[k]))
                                want = k == 10 || k == 7 || k == 1;
                cr_expect(want, "snapshot %zu should have gone", i);
                kept++;
        }
        cr_expect_eq(kept, 3);
        kb_snapshot_list_free(&l);
        kb_repo_close(r);
}
