/* main.c - kbackup's entry point: global help and dispatch to the command files. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char usage[] =
    "Usage: kbackup [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "Backup and disaster recovery for Kubernetes: etcd snapshots and persistent volumes in one\n"
    "deduplicated, compressed, encrypted repository.\n"
    "\n"
    "Commands:\n"
    "  init                          create a repository\n"
    "  backup volume PATH            back up a directory tree (a mounted volume)\n"
    "  backup etcd --endpoints URLS  snapshot etcd over its gRPC API\n"
    "  snapshots                     list snapshots\n"
    "  ls SNAPSHOT [PATH]            list the files stored in a snapshot\n"
    "  restore volume SNAPSHOT       restore a volume snapshot into --target DIR\n"
    "  restore etcd SNAPSHOT         write an etcd snapshot file (--output FILE) for\n"
    "                                'etcdctl snapshot restore', or its keys into a live\n"
    "                                etcd (--endpoints URLS)\n"
    "  backup --cluster NAME         a backup set: etcd and volumes of a config profile\n"
    "  restore BACKUP --to-cluster NAME  a backup set into another cluster's profile\n"
    "  forget [--keep-* N] [--prune]  remove snapshots by a retention policy\n"
    "  prune                         remove data no snapshot uses any more\n"
    "  check [--read-data]           verify the repository's structure (and data)\n"
    "  stats [SNAPSHOT]              sizes: logical, after dedup, stored; ratios\n"
    "  key list|add|remove|passwd    manage the passwords that open the repository\n"
    "  unlock [--all]                list locks, remove stale ones\n"
    "  etcd ls|get|diff|info ...     read the keys inside etcd snapshots (kbackup etcd --help)\n"
    "\n"
    "Options for every command:\n"
    "  --repo LOCATION               repository (default: $KBACKUP_REPOSITORY): a directory,\n"
    "                                or s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]\n"
    "  --password-file FILE          read the password from FILE (default:\n"
    "                                $KBACKUP_PASSWORD_FILE, else $KBACKUP_PASSWORD)\n"
    "  --json                        machine-readable output\n"
    "  --s3-ca-file FILE             CA of an https S3 endpoint ($KBACKUP_S3_CA_FILE)\n"
    "  --retention-days N            S3 Object Lock retention of every new object\n"
    "  --retention-mode MODE         GOVERNANCE (default) or COMPLIANCE (docs/s3.md)\n"
    "  -q, --quiet                   no progress or summary\n"
    "  -h, --help                    help (also after a command: kbackup backup --help)\n"
    "  --version                     print the version\n"
    "  --lock-wait DURATION          wait this long for a conflicting repository lock\n"
    "                                (default $KBACKUP_LOCK_WAIT, else 10m)\n"
    "  --no-lock                     read without a lock, the repository opened read-only\n"
    "                                (restore, ls, check, stats)\n"
    "  --compression LEVEL           zstd level of new data: 1 (default: fastest), up to 19\n"
    "                                (smaller, slower), negative (faster), or off\n"
    "                                ($KBACKUP_COMPRESSION; docs/performance.md)\n"
    "  --log-format text|json        stderr as text (default) or one JSON object per line\n"
    "                                (time, level, msg, fields); $KBACKUP_LOG_FORMAT\n"
    "  --metrics-file FILE           after the command, write Prometheus metrics (textfile\n"
    "                                collector format) into FILE, atomically\n"
    "  --pushgateway URL             ... or push them to a Pushgateway, as\n"
    "  --pushgateway-job NAME        job NAME (default kbackup) and\n"
    "  --pushgateway-instance NAME   instance NAME (default: the host name)\n"
    "\n"
    "Backups also take --pre-hook CMD, --post-hook CMD and --hook-timeout DURATION\n"
    "(kbackup backup volume --help). Metrics, hooks and log fields: docs/cli.md.\n"
    "\n"
    "SNAPSHOT is a full id, a unique prefix of one, or 'latest'.\n"
    "\n"
    "Exit codes:\n"
    "  0  success\n"
    "  1  error: the operation failed (wrong password, missing repository, I/O error, ...)\n"
    "  2  usage error: bad command line\n"
    "  3  finished with errors: some files could not be read, or some data was damaged;\n"
    "     each one was reported on stderr\n";

struct command {
        const char *name;
        int (*run)(int argc, char **argv);
};

static const struct command commands[] = {
    {"init", cmd_init},     {"backup", cmd_backup},   {"snapshots", cmd_snapshots},
    {"ls", cmd_ls},         {"restore", cmd_restore}, {"etcd", cmd_etcd},
    {"forget", cmd_forget}, {"prune", cmd_prune},     {"check", cmd_check},
    {"key", cmd_key},       {"stats", cmd_stats},     {"unlock", cmd_unlock},
    {NULL, NULL},
};

static double now_sec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* "--name VALUE" of a global option that takes a value; argv[*i] advances past it. */
static int global_value(int argc, char **argv, int *i, const char *name, const char **value)
{
        size_t n = strlen(name);

        if (strncmp(argv[*i], name, n) != 0)
                return 0;
        if (argv[*i][n] == '=') {
                *value = argv[*i] + n + 1;
                return 1;
        }
        if (argv[*i][n] || *i + 1 >= argc)
                return 0;
        *value = argv[++*i];
        return 1;
}

static int run(int argc, char **argv)
{
        const char *ignored, *env;
        int i;

        /* Global options before the command: the same ones every command accepts. */
        for (i = 1; i < argc && argv[i][0] == '-'; i++) {
                if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
                        fputs(usage, stdout);
                        return KB_EXIT_OK;
                } else if (!strcmp(argv[i], "--version")) {
                        printf("kbackup %s\n", KB_VERSION);
                        return KB_EXIT_OK;
                } else if (!strcmp(argv[i], "--json")) {
                        cli.json = 1;
                } else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
                        cli.quiet = 1;
                } else if ((!strcmp(argv[i], "--repo") || !strcmp(argv[i], "--password-file")) &&
                           i + 1 < argc) {
                        if (argv[i][2] == 'r')
                                cli.repo = argv[i + 1];
                        else
                                cli.password_file = argv[i + 1];
                        i++;
                } else if (!strcmp(argv[i], "--no-lock")) {
                        cli_no_lock = 1;
                } else if (!strcmp(argv[i], "--lock-wait") && i + 1 < argc) {
                        cli_lock_wait = argv[++i];
                } else if ((env = cli_env_of_flag(argv[i])) && i + 1 < argc) {
                        setenv(env, argv[++i], 1);
                } else if (global_value(argc, argv, &i, "--log-format", &ignored) ||
                           global_value(argc, argv, &i, "--metrics-file", &ignored) ||
                           global_value(argc, argv, &i, "--pushgateway", &ignored) ||
                           global_value(argc, argv, &i, "--pushgateway-job", &ignored) ||
                           global_value(argc, argv, &i, "--pushgateway-instance", &ignored)) {
                        continue; /* taken by cli_early_options */
                } else if (!strncmp(argv[i], "--repo=", 7)) {
                        cli.repo = argv[i] + 7;
                } else if (!strncmp(argv[i], "--password-file=", 16)) {
                        cli.password_file = argv[i] + 16;
                } else {
                        return cli_usage(NULL, "unknown option '%s'", argv[i]);
                }
        }
        if (i >= argc) {
                if (cli_log_is_json())
                        return cli_usage(NULL, "no command given");
                fputs(usage, stderr);
                return KB_EXIT_USAGE;
        }
        for (const struct command *c = commands; c->name; c++)
                if (!strcmp(argv[i], c->name)) {
                        cli_report.command = c->name;
                        return c->run(argc - i, argv + i);
                }
        return cli_usage(NULL, "unknown command '%s'", argv[i]);
}

int main(int argc, char **argv)
{
        double t0 = now_sec();
        int code;

        /* Chunk and pack buffers are large and short-lived; glibc's adaptive mmap threshold would
         * otherwise keep freed ones on the heap and peak RSS swings between 120 and 370 MB on the
         * same backup (docs/performance.md). */
        mallopt(M_MMAP_THRESHOLD, 128 << 10);
        code = cli_early_options(argc, argv);
        if (code != KB_EXIT_OK)
                return code;
        code = run(argc, argv);
        /* The one place every command passes: metrics and the json summary line. */
        cli_report_finish(code, now_sec() - t0);
        return code;
}
