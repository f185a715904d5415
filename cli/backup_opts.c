/* backup_opts.c - the options the three backup commands (volume, etcd, --cluster) share, parsed
 * in one place: the options of every command, the hooks, the etcd connection where the command
 * has one, --tag and --threads. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_backup_args_init(struct cli_backup_args *b, int argc, const char *help,
                         struct cli_hooks *hooks, struct cli_etcd_conn *ec)
{
        memset(b, 0, sizeof(*b));
        /* One slot per argument is more than enough, plus one for a NULL end. */
        b->tags = calloc((size_t)argc + 1, sizeof(*b->tags));
        b->help = help;
        b->hooks = hooks;
        b->ec = ec;
        return b->tags ? 0 : -1;
}

void cli_backup_args_free(struct cli_backup_args *b)
{
        free(b->tags);
        b->tags = NULL;
}

/* 1 when c was one of the backup options, 0 when not, -1 when the command must return *code. */
static int backup_option(int c, struct cli_backup_args *b, int *code)
{
        char *end;
        int r;

        r = cli_common_option(c, b->help);
        if (r != 0) {
                *code = KB_EXIT_OK; /* handled, or --help printed */
                return r > 0 ? 1 : -1;
        }
        r = b->ec ? cli_etcd_conn_option(c, b->ec, "backup") : 0;
        if (r == 0)
                r = cli_hook_option(c, b->hooks, "backup");
        if (r > 1) {
                *code = r;
                return -1;
        }
        if (r == 1)
                return 1;
        switch (c) {
        case OPT_BACKUP_TAG:
                if (!strchr(optarg, '=') || optarg[0] == '=') {
                        *code = cli_usage("backup", "--tag wants KEY=VALUE, not '%s'", optarg);
                        return -1;
                }
                b->tags[b->ntags++] = optarg;
                return 1;
        case OPT_BACKUP_THREADS:
                b->threads = (unsigned)strtoul(optarg, &end, 10);
                if (*end || !*optarg || b->threads > 256) {
                        *code = cli_usage("backup", "--threads wants a number 1-256");
                        return -1;
                }
                return 1;
        }
        return 0;
}

int cli_next_backup_option(int argc, char **argv, const struct option *opts,
                           struct cli_backup_args *b, int *code)
{
        int c, r;

        while ((c = cli_getopt(argc, argv, opts)) != -1) {
                r = backup_option(c, b, code);
                if (r < 0)
                        return CLI_OPT_STOP;
                if (r == 0)
                        return c;
        }
        return -1;
}
