/* cmd_forget.c - `kbackup forget`: remove snapshot records by a retention policy (or by id),
 * optionally pruning right after. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lock.h"
#include "prune.h"
#include "retention.h"

static const char help[] =
    "Usage: kbackup forget [POLICY...] [--group-by LIST] [--kind KIND] [--name NAME]\n"
    "                      [--dry-run] [--prune [--max-unused PERCENT]]\n"
    "       kbackup forget SNAPSHOT... [--dry-run] [--prune]\n"
    "\n"
    "Remove snapshots that the retention policy does not keep (or the SNAPSHOTs named). Only\n"
    "the snapshot records go; the data they alone used stays until 'kbackup prune' (or\n"
    "--prune here). Snapshots are grouped by source, and each group is judged alone, newest\n"
    "first; a snapshot is kept when any rule keeps it:\n"
    "\n"
    "  --keep-last N          the N newest\n"
    "  --keep-hourly N        the newest of each of the last N hours that have a snapshot\n"
    "  --keep-daily N         ... days\n"
    "  --keep-weekly N        ... ISO weeks\n"
    "  --keep-monthly N       ... months\n"
    "  --keep-yearly N        ... years (N = -1: every period, no limit)\n"
    "  --keep-within DURATION everything newer than the group's newest snapshot minus\n"
    "                         DURATION (units y, m = months, w, d, h: 1y6m, 14d, 36h)\n"
    "  --keep-tag TAG         snapshots tagged TAG (KEY=VALUE, or KEY for any value;\n"
    "                         repeatable)\n"
    "\n"
    "Periods are in local time ($TZ).\n"
    "\n"
    "Options:\n"
    "  --group-by LIST        what makes a group besides the kind (volume, etcd): any of\n"
    "                         host, source, tags (default host,source; source is a volume's\n"
    "                         --name or path, or an etcd cluster id). CronJob pods get a new\n"
    "                         host name every run: use --group-by source for them\n"
    "  --kind KIND            only judge snapshots of this kind (volume or etcd)\n"
    "  --name NAME            only judge snapshots with this name\n"
    "  --dry-run              list what would be kept and removed, and why; change nothing\n"
    "  --prune                prune right after (see 'kbackup prune --help')\n"
    "  --max-unused PERCENT   for --prune (default 20)\n"
    "  --lock-wait DURATION   how long to wait for the exclusive lock (default 10m)\n";

enum {
        OPT_LAST = OPT_FIRST_COMMAND,
        OPT_HOURLY,
        OPT_DAILY,
        OPT_WEEKLY,
        OPT_MONTHLY,
        OPT_YEARLY,
        OPT_WITHIN,
        OPT_TAG,
        OPT_GROUP_BY,
        OPT_KIND,
        OPT_NAME,
        OPT_DRY_RUN,
        OPT_PRUNE,
        OPT_MAX_UNUSED,
        OPT_LOCK_WAIT,
};

struct forget_args {
        struct kb_retention_policy pol;
        unsigned group_by;
        const char *kind, *name;
        int dry_run, prune;
        unsigned max_unused;
        const char **tags;
        char **ids;
        size_t nids;
};

static int parse_count(const char *s, int *out)
{
        char *end;
        long v = strtol(s, &end, 10);

        if (end == s || *end || v < -1 || v > 1000000)
                return -1;
        *out = (int)v;
        return 0;
}

static void print_item(const struct kb_snapshot_entry *e, const struct kb_retention_item *it,
                       int first)
{
        char t[40];

        if (cli.json) {
                cli_format_time(e->snap->time_unix_nsec, t, sizeof(t), 1);
                printf("%s{\"id\":\"%s\",\"time\":\"%s\",\"keep\":%s,\"reasons\":",
                       first ? "" : ",", e->id, t, it->keep ? "true" : "false");
                cli_json_string(stdout, it->reasons, strlen(it->reasons));
                printf("}");
                return;
        }
        cli_format_time(e->snap->time_unix_nsec, t, sizeof(t), 0);
        printf("  %-6s  %.8s  %s  %s\n", it->keep ? "keep" : "remove", e->id, t,
               it->keep ? it->reasons : "no rule keeps it");
}

static int selected(const struct forget_args *a, const Kbackup__Snapshot *s)
{
        return (!a->kind || !strcmp(s->kind, a->kind)) && (!a->name || !strcmp(s->name, a->name));
}

/* Decide: by policy, or mark exactly the named snapshots for removal. */
static int decide(const struct forget_args *a, struct kb_snapshot_list *all,
                  struct kb_snapshot_list *l, struct kb_retention_result *res, struct kb_err *err)
{
        /* l borrows the selected entries of all; it owns nothing. */
        l->items = calloc(all->count ? all->count : 1, sizeof(*l->items));
        l->count = 0;
        if (!l->items)
                return kb_err_set(err, -ENOMEM, "out of memory");
        if (a->nids) {
                memset(res, 0, sizeof(*res));
                res->items = calloc(a->nids, sizeof(*res->items));
                res->group_names = calloc(1, sizeof(char *));
                if (!res->items || !res->group_names || !(res->group_names[0] = strdup("named")))
                        return kb_err_set(err, -ENOMEM, "out of memory");
                res->ngroups = 1;
                for (size_t i = 0; i < a->nids; i++) {
                        int k = kb_snapshot_list_find(all, a->ids[i], NULL, err);

                        if (k < 0)
                                return k;
                        for (size_t j = 0; j < l->count; j++)
                                if (!strcmp(l->items[j].id, all->items[k].id))
                                        k = -1;
                        if (k < 0)
                                continue;
                        res->items[l->count].snap = l->count;
                        l->items[l->count++] = all->items[k];
                }
                res->count = l->count;
                return 0;
        }
        for (size_t i = 0; i < all->count; i++)
                if (selected(a, all->items[i].snap))
                        l->items[l->count++] = all->items[i];
        return kb_retention_apply(l, &a->pol, a->group_by, res, err);
}

static int run(const struct forget_args *a)
{
        struct kb_snapshot_list all = {0}, l = {0};
        struct kb_retention_result res = {0};
        struct kb_repo *repo;
        struct kb_lock *lock;
        struct kb_err err = {0};
        size_t removed = 0, remove_total = 0;
        int code, r;

        code = cli_open_locked(a->dry_run ? CLI_LOCK_READ : CLI_LOCK_EXCLUSIVE, "forget", 1, &repo,
                               &lock);
        if (code != KB_EXIT_OK)
                return code;
        r = kb_repo_snapshot_list(repo, &all, &err);
        if (r == 0)
                r = decide(a, &all, &l, &res, &err);
        if (r < 0)
                goto out;
        for (size_t i = 0; i < res.count; i++)
                remove_total += !res.items[i].keep;
        if (cli.json)
                printf("{\"dry_run\":%s,\"groups\":[", a->dry_run ? "true" : "false");
        for (size_t g = 0; g < res.ngroups; g++) {
                size_t keep = 0, n = 0, first = 1;

                for (size_t i = 0; i < res.count; i++)
                        if (res.items[i].group == g) {
                                n++;
                                keep += res.items[i].keep;
                        }
                if (!n)
                        continue;
                if (cli.json) {
                        printf("%s{\"group\":", g ? "," : "");
                        cli_json_string(stdout, res.group_names[g], strlen(res.group_names[g]));
                        printf(",\"snapshots\":[");
                } else if (!cli.quiet) {
                        printf("%s: keep %zu, remove %zu\n", res.group_names[g], keep, n - keep);
                }
                /* Newest first, as the rules judged them. */
                for (size_t i = res.count; i > 0; i--) {
                        if (res.items[i - 1].group != g)
                                continue;
                        if (cli.json || !cli.quiet)
                                print_item(&l.items[res.items[i - 1].snap], &res.items[i - 1],
                                           first);
                        first = 0;
                }
                if (cli.json)
                        printf("]}");
        }
        if (!a->dry_run) {
                for (size_t i = 0; i < res.count && r == 0; i++) {
                        if (res.items[i].keep)
                                continue;
                        r = kb_lock_check(lock, &err);
                        if (r == 0)
                                r = kb_repo_snapshot_remove(repo, l.items[res.items[i].snap].id,
                                                            &err);
                        if (r == 0)
                                removed++;
                }
        }
        if (cli.json)
                printf("],\"removed\":%zu}\n", removed);
        else if (!cli.quiet)
                printf("%s %zu snapshot(s)\n", a->dry_run ? "would remove" : "removed",
                       a->dry_run ? remove_total : removed);
        if (r == 0 && a->prune && a->dry_run) {
                if (!cli.quiet && !cli.json)
                        printf(
                            "(a dry run does not prune: run prune --dry-run after the forget)\n");
        } else if (r == 0 && a->prune) {
                fflush(stdout);
                r = kb_repo_index_reload(repo, &err);
                if (r == 0) {
                        code = cli_prune_run(repo, lock, a->max_unused, a->dry_run);
                        r = 0;
                }
        }
out:
        free(l.items);
        kb_retention_result_free(&res);
        kb_snapshot_list_free(&all);
        cli_close_locked(repo, lock);
        if (r < 0)
                return cli_fail(&err, r);
        return code;
}

int cmd_forget(int argc, char **argv)
{
        static const struct option opts[] = {
            CLI_COMMON_OPTIONS,
            {"keep-last", required_argument, NULL, OPT_LAST},
            {"keep-hourly", required_argument, NULL, OPT_HOURLY},
            {"keep-daily", required_argument, NULL, OPT_DAILY},
            {"keep-weekly", required_argument, NULL, OPT_WEEKLY},
            {"keep-monthly", required_argument, NULL, OPT_MONTHLY},
            {"keep-yearly", required_argument, NULL, OPT_YEARLY},
            {"keep-within", required_argument, NULL, OPT_WITHIN},
            {"keep-tag", required_argument, NULL, OPT_TAG},
            {"group-by", required_argument, NULL, OPT_GROUP_BY},
            {"kind", required_argument, NULL, OPT_KIND},
            {"name", required_argument, NULL, OPT_NAME},
            {"dry-run", no_argument, NULL, OPT_DRY_RUN},
            {"prune", no_argument, NULL, OPT_PRUNE},
            {"max-unused", required_argument, NULL, OPT_MAX_UNUSED},
            {"lock-wait", required_argument, NULL, OPT_LOCK_WAIT},
            {NULL, 0, NULL, 0}};
        struct forget_args a = {.group_by = KB_GROUP_DEFAULT,
                                .max_unused = KB_PRUNE_DEFAULT_MAX_UNUSED};
        struct kb_err err = {0};
        int *count, c, r, code;

        a.tags = calloc((size_t)argc, sizeof(*a.tags));
        if (!a.tags)
                return KB_EXIT_ERROR;
        a.pol.tags = a.tags;
        while ((c = cli_next_option(argc, argv, opts, help)) >= 0) {
                count = c == OPT_LAST      ? &a.pol.last
                        : c == OPT_HOURLY  ? &a.pol.hourly
                        : c == OPT_DAILY   ? &a.pol.daily
                        : c == OPT_WEEKLY  ? &a.pol.weekly
                        : c == OPT_MONTHLY ? &a.pol.monthly
                        : c == OPT_YEARLY  ? &a.pol.yearly
                                           : NULL;
                if (count) {
                        if (parse_count(optarg, count) < 0) {
                                code = cli_usage("forget", "--keep-* wants a count (or -1)");
                                goto done;
                        }
                        continue;
                }
                switch (c) {
                case OPT_WITHIN:
                        r = kb_retention_parse_within(optarg, &a.pol, &err);
                        break;
                case OPT_TAG:
                        a.tags[a.pol.ntags++] = optarg;
                        break;
                case OPT_GROUP_BY:
                        r = kb_retention_parse_group_by(optarg, &a.group_by, &err);
                        break;
                case OPT_KIND:
                        a.kind = optarg;
                        break;
                case OPT_NAME:
                        a.name = optarg;
                        break;
                case OPT_DRY_RUN:
                        a.dry_run = 1;
                        break;
                case OPT_PRUNE:
                        a.prune = 1;
                        break;
                case OPT_MAX_UNUSED:
                        if (cli_parse_percent(optarg, &a.max_unused) < 0)
                                r = kb_err_set(&err, KB_EUSAGE,
                                               "--max-unused wants a percentage 0-100");
                        break;
                case OPT_LOCK_WAIT:
                        cli_lock_wait = optarg;
                        break;
                default:
                        code = cli_usage("forget", "bad option");
                        goto done;
                }
                if (r < 0) {
                        code = cli_usage("forget", "%s", err.msg);
                        goto done;
                }
        }
        if (c == CLI_OPT_STOP) {
                code = KB_EXIT_OK;
                goto done;
        }
        a.ids = argv + optind;
        a.nids = (size_t)(argc - optind);
        if (a.nids && (!kb_retention_policy_empty(&a.pol) || a.kind || a.name)) {
                code = cli_usage("forget", "give either SNAPSHOT ids or a policy, not both");
                goto done;
        }
        if (!a.nids && kb_retention_policy_empty(&a.pol)) {
                code = cli_usage("forget", "no policy: give --keep-* rules or SNAPSHOT ids (a "
                                           "forget without rules would remove everything)");
                goto done;
        }
        code = run(&a);
done:
        free(a.tags);
        return code;
}
