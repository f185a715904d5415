/* report.c - what a command did, told once after it ends (main.c): Prometheus metrics into
 * --metrics-file and/or to --pushgateway, and with --log-format json one summary line. Both come
 * from the same numbers the command reported, so the metrics equal the command's own summary. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "metrics.h"

#define PUSH_TIMEOUT_MS 15000L
#define LAST_SUCCESS    "kbackup_last_success_timestamp_seconds"

struct cli_report cli_report;

static const struct {
        const char *metric, *help, *field; /* field: its name in the json summary line */
} stat_info[CLI_STAT_COUNT] = {
    [CLI_STAT_BYTES_READ] = {"kbackup_bytes_read",
                             "Logical bytes read by the run (a restore: bytes restored)",
                             "bytes_read"},
    [CLI_STAT_BYTES_NEW] = {"kbackup_bytes_new",
                            "Bytes of chunks new to the repository, before compression",
                            "bytes_new"},
    [CLI_STAT_BYTES_STORED] = {"kbackup_bytes_stored",
                               "Bytes added to the repository, after compression and encryption",
                               "bytes_stored"},
    [CLI_STAT_FILES] = {"kbackup_files", "Files processed", "files"},
    [CLI_STAT_ERRORS] = {"kbackup_errors", "Files or chunks that failed (check: problems found)",
                         "errors"},
    [CLI_STAT_SNAPSHOTS] = {"kbackup_snapshots", "Snapshots in the repository after the run",
                            "snapshots"},
    [CLI_STAT_REPO_BYTES] = {"kbackup_repository_size_bytes",
                             "Bytes of packs in the repository after the run",
                             "repository_size_bytes"},
};

void cli_report_stat(enum cli_stat s, uint64_t v)
{
        cli_report.stat[s] = v;
        cli_report.have |= 1u << s;
}

void cli_report_add(enum cli_stat s, uint64_t v)
{
        cli_report_stat(s, cli_report.stat[s] + v);
}

static int metrics_wanted(void)
{
        return (cli.metrics_file && *cli.metrics_file) || (cli.pushgateway && *cli.pushgateway);
}

void cli_report_repo(struct kb_repo *repo)
{
        struct kb_err err = {0};
        uint64_t snaps, bytes;

        if (!repo || !metrics_wanted())
                return;
        if (kb_metrics_repo_totals(repo, &snaps, &bytes, &err) < 0) {
                cli_log(CLI_LOG_WARN, NULL, "metrics: cannot count the repository: %s", err.msg);
                return;
        }
        cli_report_stat(CLI_STAT_SNAPSHOTS, snaps);
        cli_report_stat(CLI_STAT_REPO_BYTES, bytes);
}

static int build(struct kb_metrics *m, int code, double duration, time_t end)
{
        struct kb_label l[3] = {{"command", cli_report.command ? cli_report.command : ""},
                                {"kind", cli_report.kind ? cli_report.kind : ""},
                                {"source", cli_report.source}};
        size_t nl = cli_report.source ? 3 : 2;
        int r;

        r = kb_metrics_set(m, "kbackup_last_run_timestamp_seconds", "Unix time the last run ended",
                           l, nl, (double)end);
        if (r == 0 && code == KB_EXIT_OK)
                r = kb_metrics_set(m, LAST_SUCCESS, "Unix time the last successful run ended", l,
                                   nl, (double)end);
        r = r
                ?: kb_metrics_set(m, "kbackup_last_run_success",
                                  "1 if the last run succeeded, 0 if it failed or was partial", l,
                                  nl, code == KB_EXIT_OK);
        r = r
                ?: kb_metrics_set(m, "kbackup_last_exit_code", "Exit code of the last run", l, nl,
                                  code);
        r = r
                ?: kb_metrics_set(m, "kbackup_duration_seconds", "Duration of the last run", l, nl,
                                  duration);
        for (int s = 0; s < CLI_STAT_COUNT && r == 0; s++)
                if (cli_report.have & (1u << s))
                        r = kb_metrics_set(m, stat_info[s].metric, stat_info[s].help, l, nl,
                                           (double)cli_report.stat[s]);
        return r;
}

static void deliver(int code, double duration)
{
        struct kb_metrics *m = kb_metrics_new();
        struct kb_err err = {0};
        char host[256] = "";

        if (!m || build(m, code, duration, time(NULL)) < 0) {
                cli_log(CLI_LOG_WARN, NULL, "metrics: out of memory");
                kb_metrics_free(m);
                return;
        }
        if (cli.metrics_file && *cli.metrics_file &&
            kb_metrics_write_file(m, cli.metrics_file, LAST_SUCCESS, &err) < 0)
                cli_log(CLI_LOG_WARN, NULL, "metrics: %s", err.msg);
        if (cli.pushgateway && *cli.pushgateway) {
                const char *instance = cli.push_instance;

                if (!instance) {
                        gethostname(host, sizeof(host) - 1);
                        instance = host;
                }
                /* A failed run must not replace the time of the last success: POST replaces
                 * only the metrics it sends, and it does not send that one. */
                kb_err_clear(&err);
                if (kb_metrics_push(m, cli.pushgateway, cli.push_job ? cli.push_job : "kbackup",
                                    instance, code == KB_EXIT_OK, PUSH_TIMEOUT_MS, &err) < 0)
                        cli_log(CLI_LOG_WARN, NULL, "metrics: %s", err.msg);
        }
        kb_metrics_free(m);
}

static void summary(int code, double duration)
{
        struct cli_field f[CLI_STAT_COUNT + 8] = {CLI_STR("command", cli_report.command),
                                                  CLI_I64("exit_code", code),
                                                  CLI_DBL("duration_seconds", duration)};
        size_t n = 3;
        int level = code == KB_EXIT_OK        ? CLI_LOG_INFO
                    : code == KB_EXIT_PARTIAL ? CLI_LOG_WARN
                                              : CLI_LOG_ERROR;

        if (cli_report.kind)
                f[n++] = (struct cli_field)CLI_STR("kind", cli_report.kind);
        if (cli_report.source)
                f[n++] = (struct cli_field)CLI_STR("source", cli_report.source);
        if (cli_report.snapshot[0])
                f[n++] = (struct cli_field)CLI_STR("snapshot", cli_report.snapshot);
        for (int s = 0; s < CLI_STAT_COUNT; s++)
                if (cli_report.have & (1u << s))
                        f[n++] = (struct cli_field)CLI_U64(stat_info[s].field, cli_report.stat[s]);
        cli_log(level, f, "%s %s", cli_report.command,
                code == KB_EXIT_OK        ? "finished"
                : code == KB_EXIT_PARTIAL ? "finished with errors"
                                          : "failed");
}

void cli_report_finish(int code, double duration_sec)
{
        if (cli_report.help || !cli_report.command)
                return;
        duration_sec = (double)(int64_t)(duration_sec * 1000 + 0.5) / 1000; /* ms are plenty */
        if (metrics_wanted())
                deliver(code, duration_sec);
        if (cli_log_is_json() && !cli.quiet)
                summary(code, duration_sec);
}
