/* cmd_keyrestore.c - `kbackup restore etcd SNAPSHOT --endpoints URLS`: selected keys of a stored
 * etcd snapshot into a live etcd; and the option parsing and summary that `restore --to-cluster`
 * shares. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "keyrestore_cli.h"

static const char help[] =
    "Usage: kbackup restore etcd SNAPSHOT --endpoints URL[,URL...] [--cacert F --cert F --key F]\n"
    "                            [--user NAME] [--prefix P]... [--exclude P]...\n"
    "                            [--namespace NS]... [--on-conflict skip|overwrite|fail]\n"
    "                            [--include-leased] [--dry-run]\n"
    "\n"
    "Write the keys of a stored etcd snapshot (as of its revision) into a running etcd, through\n"
    "KV Txn batches that respect the target's limits. Nothing is written blindly: each batch\n"
    "first compares every key's revision, so a key the target already holds is a conflict, or,\n"
    "with the same value, counted as skipped (re-running a restore is idempotent). Keys get new\n"
    "revisions in the target; values are restored byte for byte.\n"
    "\n"
    "Options:\n"
    "  --endpoints URLS        the target's client URLs (the first that answers is used)\n"
    "  --cacert, --cert, --key, --user, --timeout   as for 'backup etcd'\n" CLI_KEYRESTORE_HELP "\n"
    "Every filter narrows the selection: --namespace shop --prefix /registry/configmaps/ is\n"
    "the config maps of shop. Exit codes: 0 done; 1 failed or stopped on a conflict (--on-\n"
    "conflict fail); 3 some keys were too large for the target.\n";

int cli_keyrestore_init(struct cli_keyrestore *k, int argc)
{
        memset(k, 0, sizeof(*k));
        k->prefixes = calloc((size_t)argc + 1, sizeof(char *));
        k->excludes = calloc((size_t)argc + 1, sizeof(char *));
        k->namespaces = calloc((size_t)argc + 1, sizeof(char *));
        if (!k->prefixes || !k->excludes || !k->namespaces) {
                cli_keyrestore_free(k);
                return -ENOMEM;
        }
        return 0;
}

void cli_keyrestore_free(struct cli_keyrestore *k)
{
        free(k->prefixes);
        free(k->excludes);
        free(k->namespaces);
        k->prefixes = k->excludes = k->namespaces = NULL;
}

static int number(const char *s, unsigned long long lo, unsigned long long hi,
                  unsigned long long *out)
{
        char *end;

        if (!*s || *s == '-')
                return -1;
        *out = strtoull(s, &end, 10);
        return *end || *out < lo || *out > hi ? -1 : 0;
}

int cli_keyrestore_option(int c, struct cli_keyrestore *k, const char *cmd)
{
        unsigned long long v;

        switch (c) {
        case OPT_KR_PREFIX:
                if (!*optarg)
                        return cli_usage(cmd, "--prefix wants a non-empty prefix");
                k->prefixes[k->n_prefixes++] = optarg;
                return 1;
        case OPT_KR_EXCLUDE:
                if (!*optarg)
                        return cli_usage(cmd, "--exclude wants a non-empty prefix");
                k->excludes[k->n_excludes++] = optarg;
                return 1;
        case OPT_KR_NAMESPACE:
                if (!*optarg || strchr(optarg, '/'))
                        return cli_usage(cmd, "--namespace wants a namespace name, not '%s'",
                                         optarg);
                k->namespaces[k->n_namespaces++] = optarg;
                return 1;
        case OPT_KR_ON_CONFLICT:
                if (!strcmp(optarg, "skip"))
                        k->o.on_conflict = KB_CONFLICT_SKIP;
                else if (!strcmp(optarg, "overwrite"))
                        k->o.on_conflict = KB_CONFLICT_OVERWRITE;
                else if (!strcmp(optarg, "fail"))
                        k->o.on_conflict = KB_CONFLICT_FAIL;
                else
                        return cli_usage(cmd, "--on-conflict wants skip, overwrite or fail");
                return 1;
        case OPT_KR_INCLUDE_LEASED:
                k->o.include_leased = 1;
                return 1;
        case OPT_KR_DRY_RUN:
                k->o.dry_run = 1;
                return 1;
        case OPT_KR_MAX_TXN_OPS:
                if (number(optarg, 1, 100000, &v) < 0)
                        return cli_usage(cmd, "--max-txn-ops wants a number 1-100000");
                k->o.max_txn_ops = (unsigned)v;
                return 1;
        case OPT_KR_MAX_REQUEST_BYTES:
                if (number(optarg, 16384, 1ull << 31, &v) < 0)
                        return cli_usage(cmd,
                                         "--max-request-bytes wants a number 16384-2147483648");
                k->o.max_request_bytes = (size_t)v;
                return 1;
        case OPT_KR_LEASE_TTL:
                if (number(optarg, 1, 9000000000ull, &v) < 0)
                        return cli_usage(cmd, "--lease-ttl wants seconds");
                k->o.default_lease_ttl = (int64_t)v;
                return 1;
        default:
                return 0;
        }
}

void cli_keyrestore_finish(struct cli_keyrestore *k)
{
        k->o.filter.prefixes = k->prefixes;
        k->o.filter.n_prefixes = k->n_prefixes;
        k->o.filter.excludes = k->excludes;
        k->o.filter.n_excludes = k->n_excludes;
        k->o.filter.namespaces = k->namespaces;
        k->o.filter.n_namespaces = k->n_namespaces;
}

void cli_keyrestore_print(const struct kb_etcd_keyrestore_result *r, int dry_run)
{
        char b[32];

        if (cli.quiet)
                return;
        cli_human_bytes(r->bytes_written, b, sizeof(b));
        printf("etcd %s: %llu of %llu keys selected (snapshot revision %lld)%s\n", r->endpoint,
               (unsigned long long)r->selected, (unsigned long long)r->keys_total,
               (long long)r->revision, dry_run ? ", dry run: nothing written" : "");
        printf("%s %llu keys (%s)", dry_run ? "would write" : "written",
               (unsigned long long)r->written, b);
        if (r->overwritten)
                printf(", %llu of them overwriting another value",
                       (unsigned long long)r->overwritten);
        printf("; skipped %llu (already there, same value); conflicts %llu; leased skipped %llu",
               (unsigned long long)r->skipped, (unsigned long long)r->conflicts,
               (unsigned long long)r->leased_skipped);
        if (r->leases_granted)
                printf("; leases %s %llu", dry_run ? "to grant" : "granted",
                       (unsigned long long)r->leases_granted);
        if (r->failed)
                printf("; too large %llu", (unsigned long long)r->failed);
        printf("\n%llu Txn(s) in %.2f s\n", (unsigned long long)r->txns, r->duration_sec);
}

void cli_keyrestore_json(const struct kb_etcd_keyrestore_result *r, int dry_run)
{
        printf("{\"endpoint\":");
        cli_json_string(stdout, r->endpoint, strlen(r->endpoint));
        printf(",\"revision\":%lld,\"dry_run\":%s,\"keys_total\":%llu,\"selected\":%llu,"
               "\"written\":%llu,\"overwritten\":%llu,\"skipped\":%llu,\"conflicts\":%llu,"
               "\"leased_skipped\":%llu,\"leases_granted\":%llu,\"failed\":%llu,"
               "\"bytes_written\":%llu,\"txns\":%llu,\"duration_sec\":%.3f}",
               (long long)r->revision, dry_run ? "true" : "false",
               (unsigned long long)r->keys_total, (unsigned long long)r->selected,
               (unsigned long long)r->written, (unsigned long long)r->overwritten,
               (unsigned long long)r->skipped, (unsigned long long)r->conflicts,
               (unsigned long long)r->leased_skipped, (unsigned long long)r->leases_granted,
               (unsigned long long)r->failed, (unsigned long long)r->bytes_written,
               (unsigned long long)r->txns, r->duration_sec);
}

int cli_etcd_restore_keys(int argc, char **argv)
{
        static const struct option opts[] = {CLI_COMMON_OPTIONS,
                                             CLI_ETCD_CONN_OPTIONS,
                                             CLI_KEYRESTORE_OPTIONS,
                                             {"output", required_argument, NULL, 'o'},
                                             {NULL, 0, NULL, 0}};
        struct kb_etcd_keyrestore_result res = {0};
        struct kb_snapshot_list l = {0};
        struct cli_etcd_conn ec = {0};
        struct cli_keyrestore k;
        struct kb_err err = {0};
        struct kb_repo *repo;
        struct kb_lock *lock;
        int c, r, code = KB_EXIT_OK;

        if (cli_keyrestore_init(&k, argc) < 0)
                return KB_EXIT_ERROR;
        while ((c = cli_next_option(argc, argv, opts, help)) >= 0) {
                r = cli_etcd_conn_option(c, &ec, "restore");
                if (r == 0)
                        r = cli_keyrestore_option(c, &k, "restore");
                if (r == 1)
                        continue;
                if (c == 'o')
                        code = cli_usage("restore", "--output and --endpoints exclude each other: "
                                                    "a snapshot file, or keys into a live etcd");
                else
                        code = r > 1 ? r : cli_usage("restore", "bad option");
                goto done;
        }
        if (c == CLI_OPT_STOP)
                goto done;
        if (optind + 1 != argc) {
                code = cli_usage("restore", "restore etcd wants exactly one SNAPSHOT");
                goto done;
        }
        code = cli_etcd_conn_finish(&ec, "restore etcd", 0);
        if (code != KB_EXIT_OK)
                goto done;
        cli_keyrestore_finish(&k);
        k.o.endpoints = ec.endpoints;
        k.o.n_endpoints = ec.n_endpoints;
        k.o.conn = ec.conn;
        k.o.progress = cli_progress;
        k.o.warn = cli_warn;
        code = cli_open_locked(CLI_LOCK_READ, "restore etcd", 1, &repo, &lock);
        if (code != KB_EXIT_OK)
                goto done;
        r = kb_repo_snapshot_list_indexed(repo, &l, &err);
        if (r == 0) {
                r = kb_snapshot_list_find(&l, argv[optind], "etcd", &err);
                if (r >= 0)
                        r = kb_etcd_keyrestore(repo, l.items[r].snap, &k.o, &res, &err);
                kb_snapshot_list_free(&l);
        }
        cli_progress_done();
        cli_close_locked(repo, lock);
        if (res.endpoint[0]) {
                if (cli.json) {
                        cli_keyrestore_json(&res, k.o.dry_run);
                        printf("\n");
                } else {
                        cli_keyrestore_print(&res, k.o.dry_run);
                }
        }
        if (r < 0)
                code = cli_fail(&err, r);
done:
        cli_etcd_conn_free(&ec);
        cli_keyrestore_free(&k);
        return code;
}
