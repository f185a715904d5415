/* cmd_check.c - `kbackup check [--read-data | --read-data-subset N%]`. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "cli.h"
#include "lock.h"

static const char help[] =
    "Usage: kbackup check [--read-data | --read-data-subset PERCENT] [--lock-wait DURATION]\n"
    "\n"
    "Verify the repository. Always: every index file loads; every pack the index names is\n"
    "present, has the size its header accounts for, and its header agrees with the index;\n"
    "every snapshot record and every directory record of every snapshot loads, and every\n"
    "chunk they name is indexed. With --read-data every pack is read whole: its name is\n"
    "checked against its content, and every chunk is decrypted and its id recomputed\n"
    "(--read-data-subset reads a random PERCENT of the packs, e.g. 10% a night covers\n"
    "everything in about ten nights).\n"
    "\n"
    "Each problem is printed on its own line, naming the damaged pack, index file, chunk or\n"
    "directory record, followed by the snapshots and files it affects. Packs that no index\n"
    "names (left by an interrupted backup or prune) are noted but are not problems: prune\n"
    "removes them.\n"
    "\n"
    "Exit code 0: no problems; 1: problems found (or the check could not run).\n";

enum { OPT_READ_DATA = OPT_FIRST_COMMAND, OPT_SUBSET, OPT_LOCK_WAIT };

struct out {
        FILE *problems; /* JSON: collected, printed at the end */
        int nprob;
};

static void report(int is_error, const char *msg, void *arg)
{
        struct out *o = arg;

        cli_progress_done();
        if (cli.json) {
                fprintf(o->problems, "%s{\"error\":%s,\"message\":", o->nprob++ ? "," : "",
                        is_error ? "true" : "false");
                cli_json_string(o->problems, msg, strlen(msg));
                fprintf(o->problems, "}");
                return;
        }
        printf("%s%s\n", is_error ? "error: " : (msg[0] == ' ' ? "" : "note: "), msg);
}

static void progress(const char *phase, uint64_t done, uint64_t total, void *arg)
{
        (void)arg;
        if (cli_log_is_json()) {
                if (cli_progress_log_due())
                        cli_log(CLI_LOG_INFO,
                                CLI_FIELDS(CLI_STR("phase", phase), CLI_U64("done", done),
                                           CLI_U64("total", total)),
                                "checking %s %llu/%llu", phase, (unsigned long long)done,
                                (unsigned long long)total);
                return;
        }
        if (cli.quiet || cli.json || !isatty(STDOUT_FILENO))
                return;
        printf("\r\033[Kchecking %s %llu/%llu", phase, (unsigned long long)done,
               (unsigned long long)total);
        fflush(stdout);
        if (done == total)
                printf("\r\033[K");
}

int cmd_check(int argc, char **argv)
{
        static const struct option opts[] = {
            CLI_COMMON_OPTIONS,
            {"read-data", no_argument, NULL, OPT_READ_DATA},
            {"read-data-subset", required_argument, NULL, OPT_SUBSET},
            {"lock-wait", required_argument, NULL, OPT_LOCK_WAIT},
            {NULL, 0, NULL, 0}};
        struct kb_check_opts o = {0};
        struct kb_check_result res;
        struct kb_err err = {0};
        struct kb_repo *repo;
        struct kb_lock *lock;
        struct out out = {0};
        char *pbuf = NULL, read[32];
        size_t plen = 0;
        int c, r, code;

        while ((c = cli_next_option(argc, argv, opts, help)) >= 0) {
                switch (c) {
                case OPT_READ_DATA:
                        o.read_data = 1;
                        break;
                case OPT_SUBSET:
                        if (cli_parse_percent(optarg, &o.read_subset_pct) < 0 ||
                            o.read_subset_pct == 0)
                                return cli_usage("check",
                                                 "--read-data-subset wants a percentage 1-100");
                        break;
                case OPT_LOCK_WAIT:
                        cli_lock_wait = optarg;
                        break;
                default:
                        return cli_usage("check", "bad option");
                }
        }
        if (c == CLI_OPT_STOP)
                return KB_EXIT_OK;
        if (optind != argc)
                return cli_usage("check", "unexpected argument '%s'", argv[optind]);
        if (o.read_data && o.read_subset_pct)
                return cli_usage("check", "--read-data and --read-data-subset exclude each other");
        if (cli.json && !(out.problems = open_memstream(&pbuf, &plen)))
                return KB_EXIT_ERROR;
        o.report = report;
        o.progress = progress;
        o.arg = &out;
        code = cli_open_locked(CLI_LOCK_READ, "check", 1, &repo, &lock);
        if (code != KB_EXIT_OK)
                goto done;
        r = kb_check(repo, &o, &res, &err);
        cli_close_locked(repo, lock);
        if (r < 0) {
                code = cli_fail(&err, r);
                goto done;
        }
        code = res.errors ? KB_EXIT_ERROR : KB_EXIT_OK;
        cli_report_stat(CLI_STAT_ERRORS, res.errors);
        if (cli.json) {
                fclose(out.problems);
                out.problems = NULL;
                printf("{\"errors\":%llu,\"index_files\":%llu,\"packs\":%llu,\"blobs\":%llu,"
                       "\"snapshots\":%llu,\"trees\":%llu,\"packs_read\":%llu,\"bytes_read\":%llu,"
                       "\"leftover_packs\":%llu,\"damaged_snapshots\":%llu,\"problems\":[%s]}\n",
                       (unsigned long long)res.errors, (unsigned long long)res.index_files,
                       (unsigned long long)res.packs, (unsigned long long)res.blobs,
                       (unsigned long long)res.snapshots, (unsigned long long)res.trees,
                       (unsigned long long)res.packs_read, (unsigned long long)res.bytes_read,
                       (unsigned long long)res.leftover_packs,
                       (unsigned long long)res.damaged_snapshots, pbuf ? pbuf : "");
                goto done;
        }
        if (!cli.quiet || res.errors) {
                cli_human_bytes(res.bytes_read, read, sizeof(read));
                printf("%llu snapshot(s), %llu directory record(s), %llu pack(s), %llu chunk(s) "
                       "in %llu index file(s) checked",
                       (unsigned long long)res.snapshots, (unsigned long long)res.trees,
                       (unsigned long long)res.packs, (unsigned long long)res.blobs,
                       (unsigned long long)res.index_files);
                if (res.packs_read)
                        printf("; %llu pack(s) read (%s)", (unsigned long long)res.packs_read,
                               read);
                printf("\n");
                if (res.errors)
                        printf("%llu problem(s) found; %llu snapshot(s) damaged\n",
                               (unsigned long long)res.errors,
                               (unsigned long long)res.damaged_snapshots);
                else
                        printf("no problems found\n");
        }
done:
        if (out.problems)
                fclose(out.problems);
        free(pbuf);
        return code;
}
