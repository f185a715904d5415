/* cmd_backup.c - `kbackup backup volume PATH`: back up a directory tree or a block device. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char help[] =
    "Usage: kbackup backup volume PATH [--name NAMESPACE/PVC] [--tag KEY=VALUE]...\n"
    "                                  [--threads N] [--force]\n"
    "                                  [--pre-hook CMD] [--post-hook CMD] [--hook-timeout D]\n"
    "\n"
    "Back up the directory tree at PATH (a mounted persistent volume): file contents, holes,\n"
    "hardlinks, symlinks, fifos, device nodes, owners, modes, nanosecond times and xattrs\n"
    "(POSIX ACLs included). Sockets are skipped with a warning; a file that vanishes or changes\n"
    "while it is read is reported and the backup goes on (exit code 3).\n"
    "\n"
    "PATH may also be a block device (a PV of volumeMode Block): every byte of it is read\n"
    "and stored as the snapshot's one file, " KB_VOLUME_DEVICE_IMAGE
    " (regions unchanged since the\n"
    "last backup are stored once). Back up a device nothing writes to meanwhile (a CSI\n"
    "VolumeSnapshot's clone, or a stopped workload): otherwise the image is only "
    "crash-consistent.\n"
    "\n"
    "The new snapshot's id is the last line of standard output.\n"
    "\n"
    "Options:\n"
    "  --name NAMESPACE/PVC    what this volume is, for listing and restore\n"
    "  --tag KEY=VALUE         a tag (repeatable)\n"
    "  --threads N             worker threads (default: the usable CPUs)\n"
    "  --force                 read every file (no parent snapshot)\n" CLI_HOOK_HELP
        CLI_OBSERVE_HELP;

enum { OPT_NAME = OPT_FIRST_COMMAND, OPT_FORCE };

static void print_summary(const struct kb_volume_backup_result *res)
{
        char read[32], added[32], stored[32];

        if (cli.json) {
                printf("{\"snapshot\":\"%s\",\"files\":%llu,\"dirs\":%llu,\"bytes_read\":%llu,"
                       "\"bytes_new\":%llu,\"bytes_stored\":%llu,\"errors\":%llu,"
                       "\"files_unchanged\":%llu,\"parent\":\"%s\",\"threads\":%u,"
                       "\"duration_sec\":%.3f}\n",
                       res->snapshot_id, (unsigned long long)res->files,
                       (unsigned long long)res->dirs, (unsigned long long)res->bytes_read,
                       (unsigned long long)res->bytes_new, (unsigned long long)res->bytes_stored,
                       (unsigned long long)res->errors, (unsigned long long)res->files_unchanged,
                       res->parent_id, res->threads, res->duration_sec);
                return;
        }
        if (!cli.quiet) {
                cli_human_bytes(res->bytes_read, read, sizeof(read));
                cli_human_bytes(res->bytes_new, added, sizeof(added));
                cli_human_bytes(res->bytes_stored, stored, sizeof(stored));
                printf("files: %llu, dirs: %llu, errors: %llu\n", (unsigned long long)res->files,
                       (unsigned long long)res->dirs, (unsigned long long)res->errors);
                if (res->parent_id[0])
                        printf("unchanged since %.8s: %llu files, not read\n", res->parent_id,
                               (unsigned long long)res->files_unchanged);
                printf("read: %s, new after dedup: %s, stored after compression: %s\n", read, added,
                       stored);
                printf("duration: %.2f s (%.1f MB/s, %u thread%s)\n", res->duration_sec,
                       res->duration_sec > 0 ? (double)res->bytes_read / 1e6 / res->duration_sec
                                             : 0.0,
                       res->threads, res->threads == 1 ? "" : "s");
                printf("snapshot saved:\n");
        }
        printf("%s\n", res->snapshot_id);
}

/* The numbers the metrics and the json summary line report: the summary's own. */
static void report(const struct kb_volume_backup_result *res)
{
        snprintf(cli_report.snapshot, sizeof(cli_report.snapshot), "%s", res->snapshot_id);
        cli_report_add(CLI_STAT_BYTES_READ, res->bytes_read);
        cli_report_add(CLI_STAT_BYTES_NEW, res->bytes_new);
        cli_report_add(CLI_STAT_BYTES_STORED, res->bytes_stored);
        cli_report_add(CLI_STAT_FILES, res->files);
        cli_report_add(CLI_STAT_ERRORS, res->errors);
}

/* The backup itself, between the hooks; *written set when a snapshot was recorded. */
static int run_volume(const char *path, const struct kb_volume_backup_opts *o, int *written)
{
        struct kb_volume_backup_result res = {0};
        struct kb_err err = {0};
        struct kb_repo *repo = NULL;
        struct kb_lock *lock = NULL;
        struct stat st;
        int r, code;

        /* A backup that cannot start must not touch the repository, not even with a lock. */
        if (stat(path, &st) < 0 || access(path, S_ISDIR(st.st_mode) ? R_OK | X_OK : R_OK) < 0) {
                r = kb_err_sys(&err, -errno, "%s", path);
                return cli_fail(&err, r);
        }
        if (!S_ISDIR(st.st_mode) && !S_ISBLK(st.st_mode)) {
                r = kb_err_set(&err, KB_EUSAGE, "%s: not a directory or a block device", path);
                return cli_fail(&err, r);
        }
        code = cli_open_locked(CLI_LOCK_SHARED, "backup", 0, &repo, &lock);
        if (code != KB_EXIT_OK)
                return code;
        r = kb_volume_backup(repo, path, o, &res, &err);
        cli_progress_done();
        cli_close_locked(repo, lock);
        if (r < 0 && r != KB_EPARTIAL)
                return cli_fail(&err, r);
        *written = 1;
        report(&res);
        print_summary(&res);
        if (r == KB_EPARTIAL) {
                cli_log(CLI_LOG_WARN, CLI_FIELDS(CLI_STR("snapshot", res.snapshot_id)),
                        "snapshot %.8s saved, but %llu item(s) could not be read", res.snapshot_id,
                        (unsigned long long)res.errors);
                return KB_EXIT_PARTIAL;
        }
        return KB_EXIT_OK;
}

static int backup_volume(int argc, char **argv)
{
        static const struct option opts[] = {CLI_COMMON_OPTIONS,
                                             CLI_HOOK_OPTIONS,
                                             CLI_BACKUP_OPTIONS,
                                             {"name", required_argument, NULL, OPT_NAME},
                                             {"force", no_argument, NULL, OPT_FORCE},
                                             {NULL, 0, NULL, 0}};
        struct kb_volume_backup_opts o = {0};
        struct cli_hooks hooks = {.kind = "volume"};
        struct cli_backup_args b;
        int c, code = KB_EXIT_OK, written = 0;

        if (cli_backup_args_init(&b, argc, help, &hooks, NULL) < 0)
                return KB_EXIT_ERROR;
        while ((c = cli_next_backup_option(argc, argv, opts, &b, &code)) >= 0) {
                switch (c) {
                case OPT_NAME:
                        o.name = optarg;
                        break;
                case OPT_FORCE:
                        o.no_parent = 1;
                        break;
                default:
                        code = cli_usage("backup", "bad option");
                        goto out;
                }
        }
        if (c == CLI_OPT_STOP)
                goto out;
        if (optind + 1 != argc) {
                code = cli_usage("backup", "backup volume wants exactly one PATH");
                goto out;
        }
        hooks.source = argv[optind];
        /* The metrics' source label: the volume's --name when given, since a PV's mount path
         * changes with every new pod (its uid) and would leave stale series behind. */
        cli_report.source = o.name ? o.name : argv[optind];
        o.tags = b.tags;
        o.ntags = b.ntags;
        o.threads = b.threads;
        o.progress = cli_progress;
        o.warn = cli_warn;
        code = cli_hook_pre(&hooks);
        if (code == KB_EXIT_OK)
                code = run_volume(argv[optind], &o, &written);
        code = cli_hook_post(&hooks, code, written ? cli_report.snapshot : NULL);
out:
        cli_backup_args_free(&b);
        return code;
}

int cmd_backup(int argc, char **argv)
{
        if (argc >= 2 && !strcmp(argv[1], "volume")) {
                cli_report.kind = "volume";
                return backup_volume(argc - 1, argv + 1);
        }
        if (argc >= 2 && !strcmp(argv[1], "etcd")) {
                cli_report.kind = "etcd";
                return cli_etcd_backup(argc - 1, argv + 1);
        }
        if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
                cli_report.help = 1;
                fputs(help, stdout);
                printf(
                    "\nor: kbackup backup etcd --endpoints URL ... (kbackup backup etcd --help)\n"
                    "or: kbackup backup --cluster NAME (kbackup backup --cluster x --help)\n");
                return KB_EXIT_OK;
        }
        if (argc >= 2 && argv[1][0] == '-') {
                cli_report.kind = "cluster";
                return cli_set_backup(argc, argv); /* backup --cluster NAME (cmd_set.c) */
        }
        return cli_usage("backup",
                         "what to back up? 'kbackup backup volume PATH', 'kbackup backup etcd "
                         "--endpoints URL' or 'kbackup backup --cluster NAME'");
}
