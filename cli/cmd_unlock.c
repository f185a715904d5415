/* cmd_unlock.c - `kbackup unlock [--all] [--dry-run]`: list repository locks, remove stale ones. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lock.h"

static const char help[] =
    "Usage: kbackup unlock [--all] [--dry-run] [--stale-after DURATION]\n"
    "\n"
    "List the repository's locks and remove the stale ones: a lock is stale when its holder\n"
    "was a process on this host that is gone, or when it was not refreshed for DURATION\n"
    "(default 30m, or $KBACKUP_LOCK_STALE_AFTER; holders refresh every sixth of it). Stale\n"
    "locks do not block anyone; this only tidies them away.\n"
    "\n"
    "Options:\n"
    "  --all                  remove every lock, active ones too. Only when you are sure no\n"
    "                         kbackup is running on any host: a holder whose lock is removed\n"
    "                         stops before recording a snapshot or deleting anything\n"
    "  --dry-run              list, remove nothing\n"
    "  --stale-after DURATION see above\n";

enum { OPT_ALL = OPT_FIRST_COMMAND, OPT_DRY_RUN, OPT_STALE };

int cmd_unlock(int argc, char **argv)
{
        static const struct option opts[] = {CLI_COMMON_OPTIONS,
                                             {"all", no_argument, NULL, OPT_ALL},
                                             {"dry-run", no_argument, NULL, OPT_DRY_RUN},
                                             {"stale-after", required_argument, NULL, OPT_STALE},
                                             {NULL, 0, NULL, 0}};
        struct kb_lock_info *v = NULL;
        struct kb_err err = {0};
        struct kb_repo *repo;
        uint64_t stale_ms;
        size_t n = 0, removed = 0;
        int c, r, all = 0, dry_run = 0, code, stale_set = 0;

        while ((c = cli_next_option(argc, argv, opts, help)) >= 0) {
                switch (c) {
                case OPT_ALL:
                        all = 1;
                        break;
                case OPT_DRY_RUN:
                        dry_run = 1;
                        break;
                case OPT_STALE:
                        if (cli_parse_duration_ms(optarg, &stale_ms) < 0 || stale_ms == 0)
                                return cli_usage("unlock", "--stale-after wants a duration");
                        stale_set = 1;
                        break;
                default:
                        return cli_usage("unlock", "bad option");
                }
        }
        if (c == CLI_OPT_STOP)
                return KB_EXIT_OK;
        if (optind != argc)
                return cli_usage("unlock", "unexpected argument '%s'", argv[optind]);
        if (!stale_set && cli_lock_stale_ms(&stale_ms) != 0)
                return KB_EXIT_USAGE;
        code = cli_open_repo(KB_REPO_NO_INDEX | (dry_run ? KB_REPO_READ_ONLY : 0), &repo);
        if (code != KB_EXIT_OK)
                return code;
        r = kb_lock_list(repo, stale_ms, &v, &n, &err);
        if (cli.json && r == 0)
                printf("[");
        for (size_t i = 0; i < n && r == 0; i++) {
                int go = all || v[i].stale;
                char t[40] = "?";

                if (go && !dry_run) {
                        r = kb_lock_remove(repo, v[i].name, &err);
                        if (r < 0)
                                break;
                        removed++;
                }
                if (v[i].readable)
                        cli_format_time(v[i].created_ns, t, sizeof(t), cli.json);
                if (cli.json) {
                        printf("%s{\"id\":\"%s\",\"exclusive\":%s,\"command\":", i ? "," : "",
                               v[i].name, v[i].exclusive ? "true" : "false");
                        cli_json_string(stdout, v[i].command, strlen(v[i].command));
                        printf(",\"host\":");
                        cli_json_string(stdout, v[i].host, strlen(v[i].host));
                        printf(",\"pid\":%lld,\"since\":\"%s\",\"stale\":%s,\"removed\":%s,"
                               "\"state\":",
                               (long long)v[i].pid, t, v[i].stale ? "true" : "false",
                               go && !dry_run ? "true" : "false");
                        cli_json_string(stdout, v[i].state, strlen(v[i].state));
                        printf("}");
                } else if (!cli.quiet) {
                        printf("%-7s %.8s  %-9s %-8s host %s pid %lld since %s: %s\n",
                               go ? (dry_run ? "remove?" : "removed") : "kept", v[i].name,
                               v[i].exclusive ? "exclusive" : "shared", v[i].command, v[i].host,
                               (long long)v[i].pid, t, v[i].state);
                }
        }
        if (cli.json && r == 0)
                printf("]\n");
        else if (r == 0 && !cli.quiet)
                printf("%zu lock(s), %zu removed\n", n, removed);
        free(v);
        kb_repo_close(repo);
        if (r < 0)
                return cli_fail(&err, r);
        return KB_EXIT_OK;
}
