/* cmd_etcd.c - `kbackup backup etcd` and `kbackup restore etcd`: etcd snapshots in and out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "etcd.h"

static const char backup_help[] =
    "Usage: kbackup backup etcd --endpoints URL[,URL...] [--cacert F --cert F --key F]\n"
    "                           [--user NAME] [--name NAME] [--tag KEY=VALUE]...\n"
    "                           [--pre-hook CMD] [--post-hook CMD] [--hook-timeout D]\n"
    "\n"
    "Take a consistent snapshot of etcd over its gRPC API (Maintenance/Snapshot) and store it\n"
    "deduplicated, compressed and encrypted. Every endpoint is asked for its status; members\n"
    "that report errors or lag behind are refused, and a healthy follower is preferred to the\n"
    "leader. The sha256 etcd appends to the stream is verified while streaming; if the stream\n"
    "is cut short or does not verify, no snapshot is recorded.\n"
    "\n"
    "Options:\n"
    "  --endpoints URLS        comma-separated http:// or https:// client URLs\n"
    "  --cacert FILE           CA of the etcd server certificates (kubeadm:\n"
    "                          /etc/kubernetes/pki/etcd/ca.crt)\n"
    "  --cert FILE, --key FILE client certificate and key (kubeadm:\n"
    "                          /etc/kubernetes/pki/etcd/healthcheck-client.crt/.key)\n"
    "  --user NAME             etcd user (password from $KBACKUP_ETCD_PASSWORD_FILE or\n"
    "                          $KBACKUP_ETCD_PASSWORD); snapshots need the root role\n"
    "  --name NAME             name of the snapshot (default etcd-<cluster id>)\n"
    "  --tag KEY=VALUE         a tag (repeatable)\n"
    "  --timeout SECONDS       connect and idle timeout (default 5 connect, 30 idle)\n"
    "  --threads N             worker threads (default: the usable CPUs)\n" CLI_HOOK_HELP
        CLI_OBSERVE_HELP "\n"
    "The new snapshot's id is the last line of standard output.\n";

static const char restore_help[] =
    "Usage: kbackup restore etcd SNAPSHOT --output FILE\n"
    "   or: kbackup restore etcd SNAPSHOT --endpoints URLS ... (keys into a live etcd; see\n"
    "       kbackup restore etcd --endpoints x --help)\n"
    "\n"
    "Write an etcd snapshot back out, byte for byte as etcd streamed it (the database and its\n"
    "sha256 trailer), atomically, so that 'etcdctl snapshot restore FILE' accepts it. FILE must\n"
    "not exist. See docs/dr-runbook.md for the steps from that file to a running etcd.\n";

enum {
        OPT_NAME = OPT_FIRST_COMMAND,
        OPT_OUTPUT,
};

static void print_backup(const struct kb_etcd_backup_result *r)
{
        char read[32], added[32], stored[32];

        if (cli.json) {
                printf("{\"snapshot\":\"%s\",\"endpoint\":", r->snapshot_id);
                cli_json_string(stdout, r->endpoint, strlen(r->endpoint));
                printf(",\"member\":");
                cli_json_string(stdout, r->member_name, strlen(r->member_name));
                printf(",\"member_id\":\"%016llx\",\"cluster_id\":\"%016llx\",\"revision\":%llu,"
                       "\"leader\":%s,\"bytes_read\":%llu,\"bytes_new\":%llu,\"bytes_stored\":%llu,"
                       "\"duration_sec\":%.3f}\n",
                       (unsigned long long)r->member_id, (unsigned long long)r->cluster_id,
                       (unsigned long long)r->revision, r->leader ? "true" : "false",
                       (unsigned long long)r->bytes_read, (unsigned long long)r->bytes_new,
                       (unsigned long long)r->bytes_stored, r->duration_sec);
                return;
        }
        if (!cli.quiet) {
                cli_human_bytes(r->bytes_read, read, sizeof(read));
                cli_human_bytes(r->bytes_new, added, sizeof(added));
                cli_human_bytes(r->bytes_stored, stored, sizeof(stored));
                printf("etcd member %s (%016llx, %s) at %s, revision %llu\n",
                       r->member_name[0] ? r->member_name : "?", (unsigned long long)r->member_id,
                       r->leader ? "leader" : "follower", r->endpoint,
                       (unsigned long long)r->revision);
                printf("snapshot: %s, new after dedup: %s (%.1f%%), stored after compression: %s\n",
                       read, added,
                       r->bytes_read ? 100.0 * (double)r->bytes_new / (double)r->bytes_read : 0.0,
                       stored);
                printf("duration: %.2f s (%.1f MB/s)\n", r->duration_sec,
                       r->duration_sec > 0 ? (double)r->bytes_read / 1e6 / r->duration_sec : 0.0);
                printf("snapshot saved:\n");
        }
        printf("%s\n", r->snapshot_id);
}

/* The backup itself, between the hooks; *written set when a snapshot was recorded. */
static int run_etcd(const struct kb_etcd_backup_opts *o, int *written)
{
        struct kb_etcd_backup_result res = {0};
        struct kb_err err = {0};
        struct kb_repo *repo = NULL;
        struct kb_lock *lock = NULL;
        int r, code;

        code = cli_open_locked(CLI_LOCK_SHARED, "backup etcd", 0, &repo, &lock);
        if (code != KB_EXIT_OK)
                return code;
        r = kb_etcd_backup(repo, o, &res, &err);
        cli_progress_done();
        cli_close_locked(repo, lock);
        if (r < 0)
                return cli_fail(&err, r);
        *written = 1;
        snprintf(cli_report.snapshot, sizeof(cli_report.snapshot), "%s", res.snapshot_id);
        cli_report_stat(CLI_STAT_BYTES_READ, res.bytes_read);
        cli_report_stat(CLI_STAT_BYTES_NEW, res.bytes_new);
        cli_report_stat(CLI_STAT_BYTES_STORED, res.bytes_stored);
        cli_report_stat(CLI_STAT_ERRORS, 0);
        print_backup(&res);
        return KB_EXIT_OK;
}

int cli_etcd_backup(int argc, char **argv)
{
        static const struct option opts[] = {CLI_COMMON_OPTIONS,
                                             CLI_ETCD_CONN_OPTIONS,
                                             CLI_HOOK_OPTIONS,
                                             CLI_BACKUP_OPTIONS,
                                             {"name", required_argument, NULL, OPT_NAME},
                                             {NULL, 0, NULL, 0}};
        struct kb_etcd_backup_opts o = {0};
        struct cli_hooks hooks = {.kind = "etcd"};
        struct cli_etcd_conn ec = {0};
        struct cli_backup_args b;
        int c, code = KB_EXIT_OK, written = 0;

        if (cli_backup_args_init(&b, argc, backup_help, &hooks, &ec) < 0)
                return KB_EXIT_ERROR;
        while ((c = cli_next_backup_option(argc, argv, opts, &b, &code)) >= 0) {
                switch (c) {
                case OPT_NAME:
                        o.name = optarg;
                        break;
                default:
                        code = cli_usage("backup", "bad option");
                        goto done;
                }
        }
        if (c == CLI_OPT_STOP)
                goto done;
        if (optind != argc) {
                code = cli_usage("backup", "unexpected argument '%s'", argv[optind]);
                goto done;
        }
        /* The endpoints as given, before they are split in place; it stays (reachable) for the
         * metrics written after the command. */
        if (ec.eps && !(cli_report.source = strdup(ec.eps))) {
                code = KB_EXIT_ERROR;
                goto done;
        }
        hooks.source = cli_report.source;
        code = cli_etcd_conn_finish(&ec, "backup etcd", 0);
        if (code != KB_EXIT_OK)
                goto done;
        o.endpoints = ec.endpoints;
        o.n_endpoints = ec.n_endpoints;
        o.conn = ec.conn;
        o.tags = b.tags;
        o.ntags = b.ntags;
        o.threads = b.threads;
        o.progress = cli_progress;
        o.warn = cli_warn;
        code = cli_hook_pre(&hooks);
        if (code == KB_EXIT_OK)
                code = run_etcd(&o, &written);
        code = cli_hook_post(&hooks, code, written ? cli_report.snapshot : NULL);
done:
        cli_etcd_conn_free(&ec);
        cli_backup_args_free(&b);
        return code;
}

int cli_etcd_restore(int argc, char **argv)
{
        static const struct option opts[] = {CLI_COMMON_OPTIONS,
                                             {"output", required_argument, NULL, OPT_OUTPUT},
                                             {NULL, 0, NULL, 0}};
        struct kb_snapshot_list l = {0};
        struct kb_err err = {0};
        struct kb_repo *repo;
        struct kb_lock *lock;
        const char *output = NULL;
        int c, r, code;

        for (c = 1; c < argc; c++)
                if (!strncmp(argv[c], "--endpoints", 11))
                        return cli_etcd_restore_keys(argc, argv); /* into a live etcd */
        while ((c = cli_next_option(argc, argv, opts, restore_help)) >= 0) {
                if (c == OPT_OUTPUT)
                        output = optarg;
                else
                        return cli_usage("restore", "bad option");
        }
        if (c == CLI_OPT_STOP)
                return KB_EXIT_OK;
        if (optind + 1 != argc)
                return cli_usage("restore", "restore etcd wants exactly one SNAPSHOT");
        if (!output || !*output)
                return cli_usage("restore", "restore etcd needs --output FILE (a snapshot file) or "
                                            "--endpoints URLS (keys into a live etcd)");
        code = cli_open_locked(CLI_LOCK_READ, "restore etcd", 1, &repo, &lock);
        if (code != KB_EXIT_OK)
                return code;
        r = kb_repo_snapshot_list_indexed(repo, &l, &err);
        if (r == 0) {
                r = kb_snapshot_list_find(&l, argv[optind], "etcd", &err);
                if (r >= 0)
                        r = kb_etcd_restore_file(repo, l.items[r].snap, output, cli_progress, NULL,
                                                 &err);
                kb_snapshot_list_free(&l);
        }
        cli_progress_done();
        cli_close_locked(repo, lock);
        if (r < 0)
                return cli_fail(&err, r);
        if (!cli.quiet && !cli.json)
                printf("wrote %s; restore it with: ETCDCTL_API=3 etcdctl snapshot restore %s "
                       "--data-dir DIR ...\n",
                       output, output);
        else if (cli.json) {
                printf("{\"output\":");
                cli_json_string(stdout, output, strlen(output));
                printf("}\n");
        }
        return KB_EXIT_OK;
}
