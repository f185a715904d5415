/* cmd_restore.c - `kbackup restore volume SNAPSHOT --target DIR [--include PATH]`, or onto a
 * block device with --overwrite-device. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char help[] =
    "Usage: kbackup restore volume SNAPSHOT --target DIR [--include PATH] [--threads N]\n"
    "       kbackup restore volume SNAPSHOT --target DEVICE --overwrite-device [--threads N]\n"
    "\n"
    "Restore a volume snapshot: the contents of the backed-up directory are placed directly\n"
    "under DIR (created if missing), with their bytes, holes, hardlinks, modes, times, xattrs,\n"
    "and owners (when run as root). Every chunk is authenticated as it is read; a damaged one\n"
    "is reported with the file it belongs to, the rest is restored, and the exit code is 3.\n"
    "Existing files in DIR are never overwritten (each conflict is reported).\n"
    "\n"
    "A block device's snapshot restores into DIR as the file " KB_VOLUME_DEVICE_IMAGE
    ", or onto a\n"
    "block device given as --target with --overwrite-device: all of the device's content up to\n"
    "the image's size is replaced, and the device is flushed before kbackup exits. A device\n"
    "that is mounted or in use, or smaller than the image, is refused and left untouched.\n"
    "\n"
    "Options:\n"
    "  --target DIR       where to restore (required); or a block device\n"
    "  --overwrite-device replace the content of the block device given as --target\n"
    "  --include PATH     restore only PATH (a file or directory, relative to the\n"
    "                     backed-up directory), at DIR/PATH\n"
    "  --threads N        worker threads (default: the usable CPUs)\n";

enum { OPT_TARGET = OPT_FIRST_COMMAND, OPT_INCLUDE, OPT_THREADS, OPT_OVERWRITE_DEVICE };

static int restore_volume(int argc, char **argv)
{
        static const struct option opts[] = {
            CLI_COMMON_OPTIONS,
            {"target", required_argument, NULL, OPT_TARGET},
            {"include", required_argument, NULL, OPT_INCLUDE},
            {"threads", required_argument, NULL, OPT_THREADS},
            {"overwrite-device", no_argument, NULL, OPT_OVERWRITE_DEVICE},
            {NULL, 0, NULL, 0}};
        struct kb_volume_restore_opts o = {0};
        struct kb_volume_restore_result res = {0};
        struct kb_snapshot_list l = {0};
        struct kb_err err = {0};
        struct kb_repo *repo;
        struct kb_lock *lock;
        const char *target = NULL;
        char bytes[32], *end;
        int c, r, code;

        while ((c = cli_next_option(argc, argv, opts, help)) >= 0) {
                switch (c) {
                case OPT_TARGET:
                        target = optarg;
                        break;
                case OPT_INCLUDE:
                        o.include = optarg;
                        break;
                case OPT_THREADS:
                        o.threads = (unsigned)strtoul(optarg, &end, 10);
                        if (*end || o.threads > 256)
                                return cli_usage("restore", "--threads wants a number 1-256");
                        break;
                case OPT_OVERWRITE_DEVICE:
                        o.overwrite_device = 1;
                        break;
                default:
                        return cli_usage("restore", "bad option");
                }
        }
        if (c == CLI_OPT_STOP)
                return KB_EXIT_OK;
        if (optind + 1 != argc)
                return cli_usage("restore", "restore volume wants exactly one SNAPSHOT");
        if (!target || !*target)
                return cli_usage("restore", "restore volume needs --target DIR");
        o.restore_owner = geteuid() == 0;
        o.progress = cli_progress;
        o.warn = cli_warn;
        code = cli_open_locked(CLI_LOCK_READ, "restore", 1, &repo, &lock);
        if (code != KB_EXIT_OK)
                return code;
        r = kb_repo_snapshot_list_indexed(repo, &l, &err);
        if (r == 0) {
                r = kb_snapshot_list_find(&l, argv[optind], "volume", &err);
                if (r >= 0)
                        r = kb_volume_restore(repo, l.items[r].snap, target, &o, &res, &err);
                kb_snapshot_list_free(&l);
        }
        cli_progress_done();
        cli_close_locked(repo, lock);
        if (r < 0 && r != KB_EPARTIAL)
                return cli_fail(&err, r);
        cli_report_stat(CLI_STAT_FILES, res.files);
        cli_report_stat(CLI_STAT_BYTES_READ, res.bytes);
        cli_report_stat(CLI_STAT_ERRORS, res.errors);
        if (cli.json) {
                printf("{\"files\":%llu,\"dirs\":%llu,\"bytes\":%llu,\"errors\":%llu,"
                       "\"threads\":%u,\"duration_sec\":%.3f}\n",
                       (unsigned long long)res.files, (unsigned long long)res.dirs,
                       (unsigned long long)res.bytes, (unsigned long long)res.errors, res.threads,
                       res.duration_sec);
        } else if (!cli.quiet) {
                cli_human_bytes(res.bytes, bytes, sizeof(bytes));
                printf("restored %llu files, %llu dirs, %s in %.2f s to %s (%u thread%s)\n",
                       (unsigned long long)res.files, (unsigned long long)res.dirs, bytes,
                       res.duration_sec, target, res.threads, res.threads == 1 ? "" : "s");
        }
        if (r == KB_EPARTIAL) {
                cli_log(CLI_LOG_WARN, NULL, "restore finished with %llu error(s)",
                        (unsigned long long)res.errors);
                return KB_EXIT_PARTIAL;
        }
        return KB_EXIT_OK;
}

int cmd_restore(int argc, char **argv)
{
        if (argc >= 2 && !strcmp(argv[1], "volume")) {
                cli_report.kind = "volume";
                return restore_volume(argc - 1, argv + 1);
        }
        if (argc >= 2 && !strcmp(argv[1], "etcd")) {
                cli_report.kind = "etcd";
                return cli_etcd_restore(argc - 1, argv + 1);
        }
        if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
                cli_report.help = 1;
                fputs(help, stdout);
                printf("\nor: kbackup restore etcd SNAPSHOT --output FILE (kbackup restore etcd "
                       "--help)\n"
                       "or: kbackup restore BACKUP --to-cluster NAME (kbackup restore x "
                       "--to-cluster y --help)\n");
                return KB_EXIT_OK;
        }
        for (int i = 1; i < argc; i++)
                if (!strncmp(argv[i], "--to-cluster", 12)) {
                        cli_report.kind = "cluster";
                        return cli_set_restore(argc, argv); /* a backup set (cmd_set.c) */
                }
        return cli_usage("restore",
                         "what to restore? 'kbackup restore volume SNAPSHOT --target DIR', "
                         "'kbackup restore etcd SNAPSHOT --output FILE' or 'kbackup restore "
                         "BACKUP --to-cluster NAME'");
}
