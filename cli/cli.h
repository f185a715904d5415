/* cli.h - what the command files share: options common to every command, opening the repository
 * with the password from the environment, printing (progress, sizes, JSON strings), exit codes. */
#ifndef KB_CLI_H
#define KB_CLI_H

#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"
#include "etcd_client.h"
#include "repo.h"
#include "volume.h"

/* Exit codes (documented in `kbackup --help` and docs/cli.md). */
enum {
        KB_EXIT_OK = 0,
        KB_EXIT_ERROR = 1,   /* failed: nothing (or nothing more) was done */
        KB_EXIT_USAGE = 2,   /* bad command line */
        KB_EXIT_PARTIAL = 3, /* finished, but some files or chunks failed (each reported) */
};

struct cli_global {
        const char *repo;
        const char *password_file;
        int json;
        int quiet;
        const char *prog;
        /* Metrics after the command (report.c). */
        const char *metrics_file;
        const char *pushgateway, *push_job, *push_instance;
};

extern struct cli_global cli;

/* Long options every command accepts, and the getopt codes they use. */
enum {
        OPT_REPO = 1000,
        OPT_PASSWORD_FILE,
        OPT_JSON,
        OPT_QUIET,
        OPT_HELP,
        OPT_S3_CA_FILE,
        OPT_RETENTION_DAYS,
        OPT_RETENTION_MODE,
        OPT_LOG_FORMAT,
        OPT_METRICS_FILE,
        OPT_PUSHGATEWAY,
        OPT_PUSH_JOB,
        OPT_PUSH_INSTANCE,
        OPT_COMPRESSION,
        OPT_FIRST_COMMAND
};
#define CLI_COMMON_OPTIONS                                                                         \
        {"repo", required_argument, NULL, OPT_REPO},                                               \
            {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},                         \
            {"json", no_argument, NULL, OPT_JSON}, {"quiet", no_argument, NULL, 'q'},              \
            {"s3-ca-file", required_argument, NULL, OPT_S3_CA_FILE},                               \
            {"retention-days", required_argument, NULL, OPT_RETENTION_DAYS},                       \
            {"retention-mode", required_argument, NULL, OPT_RETENTION_MODE},                       \
            {"log-format", required_argument, NULL, OPT_LOG_FORMAT},                               \
            {"metrics-file", required_argument, NULL, OPT_METRICS_FILE},                           \
            {"pushgateway", required_argument, NULL, OPT_PUSHGATEWAY},                             \
            {"pushgateway-job", required_argument, NULL, OPT_PUSH_JOB},                            \
            {"pushgateway-instance", required_argument, NULL, OPT_PUSH_INSTANCE},                  \
            {"compression", required_argument, NULL, OPT_COMPRESSION},                             \
        {                                                                                          \
                "help", no_argument, NULL, 'h'                                                     \
        }

/* getopt_long with the common short options; in json log mode getopt's own complaint becomes a
 * log line. */
int cli_getopt(int argc, char **argv, const struct option *opts);
/* Handle a common option inside a command's getopt loop. Returns 1 when handled, 0 when not
 * common, or -1 after printing help (the command then returns KB_EXIT_OK). */
int cli_common_option(int c, const char *help);
/* What cli_next_option and cli_next_backup_option return, besides an option and -1 at the end:
 * the command must stop parsing and return (after --help: KB_EXIT_OK). */
#define CLI_OPT_STOP (-2)
/* The next option of a command's own (getopt's value, '?' when unknown), the common options
 * (--repo, --json, ...) taken on the way; -1 at the end, CLI_OPT_STOP after printing HELP. */
int cli_next_option(int argc, char **argv, const struct option *opts, const char *help);
/* The observability options (--log-format, --metrics-file, --pushgateway*) wherever they are in
 * argv, before anything is printed: an early usage error is then already in the chosen format
 * and still gets its metrics. KB_EXIT_OK or a usage exit code. */
int cli_early_options(int argc, char **argv);

/* Logging (log.c): every line for stderr. Text: "kbackup: MSG" (info, error), "warning: MSG",
 * or MSG alone with CLI_LOG_PLAIN; json: {"time","level","msg",...fields} on one line. */
enum { CLI_LOG_INFO, CLI_LOG_WARN, CLI_LOG_ERROR, CLI_LOG_PLAIN = 0x100 };
enum cli_field_type { CLI_FIELD_STR = 1, CLI_FIELD_U64, CLI_FIELD_I64, CLI_FIELD_DBL };
struct cli_field {
        const char *key; /* NULL ends a list */
        enum cli_field_type type;
        const char *s;
        uint64_t u;
        int64_t i;
        double d;
};
#define CLI_STR(k, v)                                                                              \
        {                                                                                          \
                .key = (k), .type = CLI_FIELD_STR, .s = (v)                                        \
        }
#define CLI_U64(k, v)                                                                              \
        {                                                                                          \
                .key = (k), .type = CLI_FIELD_U64, .u = (v)                                        \
        }
#define CLI_I64(k, v)                                                                              \
        {                                                                                          \
                .key = (k), .type = CLI_FIELD_I64, .i = (v)                                        \
        }
#define CLI_DBL(k, v)                                                                              \
        {                                                                                          \
                .key = (k), .type = CLI_FIELD_DBL, .d = (v)                                        \
        }
#define CLI_FIELDS(...) ((const struct cli_field[]){__VA_ARGS__, {0}})
/* "text" or "json": 0; -1 for anything else. */
int cli_log_format(const char *name);
int cli_log_is_json(void);
void cli_log(int level, const struct cli_field *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void cli_vlog(int level, const struct cli_field *fields, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* The message of the last error logged ("" if none): a post-hook's KBACKUP_ERROR. */
const char *cli_log_last_error(void);

/* What the command did, for the metrics and the json summary line written once after it
 * (report.c). Commands fill in what they know; the rest stays unset and is left out. */
enum cli_stat {
        CLI_STAT_BYTES_READ,
        CLI_STAT_BYTES_NEW,
        CLI_STAT_BYTES_STORED,
        CLI_STAT_FILES,
        CLI_STAT_ERRORS,
        CLI_STAT_SNAPSHOTS,
        CLI_STAT_REPO_BYTES,
        CLI_STAT_COUNT
};
struct cli_report {
        const char *command; /* "backup", "check", ... */
        const char *kind;    /* "volume", "etcd", "cluster" or NULL */
        const char *source;  /* backups: the path, the endpoints as given, the profile */
        char snapshot[KB_ID_HEX_LEN + 1]; /* the snapshot (or backup set) written */
        uint64_t stat[CLI_STAT_COUNT];
        unsigned have; /* bit (1 << stat) when stat[stat] is known */
        int help;      /* only help was printed: no metrics, no summary */
};
extern struct cli_report cli_report;
void cli_report_stat(enum cli_stat s, uint64_t v);
void cli_report_add(enum cli_stat s, uint64_t v);
/* Snapshot count and pack bytes of an open repository, when metrics are wanted. */
void cli_report_repo(struct kb_repo *repo);
/* After the command: metrics file, Pushgateway, the json summary line. */
void cli_report_finish(int code, double duration_sec);

/* The environment variable a global option before the command sets (--s3-ca-file, ...), or NULL. */
const char *cli_env_of_flag(const char *flag);

/* Print "kbackup: MSG" on stderr and return the exit code for an engine error. */
int cli_fail(const struct kb_err *err, int rc);
/* Usage error: message, a hint to --help, exit code 2. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Read the password (KBACKUP_PASSWORD_FILE / --password-file, else KBACKUP_PASSWORD). The caller
 * wipes and frees it with cli_password_free. */
int cli_password(char **pw, size_t *len, struct kb_err *err);
void cli_password_free(char *pw, size_t len);

/* Read a secret from $NAME_FILE (a file, trailing newline dropped) or $NAME. */
int cli_secret(const char *env_name, char **secret, size_t *len, struct kb_err *err);

/* Resolve --repo / KBACKUP_REPOSITORY. */
int cli_repo_location(const char **loc, struct kb_err *err);

/* Open the repository the user named; prints the error and returns an exit code on failure. */
int cli_open_repo(int flags, struct kb_repo **out);

/* Progress and warnings for engine callbacks. On a terminal, a progress bar on stdout; with
 * --log-format json, a log line at most every CLI_PROGRESS_LOG_SEC instead. */
#define CLI_PROGRESS_LOG_SEC 10
void cli_progress(const struct kb_progress *p, void *arg);
void cli_progress_done(void);
/* json logs: time for the next progress line? */
int cli_progress_log_due(void);
void cli_warn(const char *msg, void *arg);
extern uint64_t cli_warnings;

void cli_human_bytes(uint64_t n, char *buf, size_t len);
void cli_json_string(FILE *f, const char *s, size_t len);
/* Print bytes with control characters and backslashes escaped (names may hold any byte). */
void cli_print_escaped(FILE *f, const char *s, size_t len);
void cli_format_time(int64_t unix_nsec, char *buf, size_t len, int utc_rfc3339);

/* Repository locks (locking.c). READ: a shared lock when the repository can be written, none
 * on a read-only one or with --no-lock (then opened read-only); SHARED: a writer's shared lock;
 * EXCLUSIVE: forget and prune. The index is loaded after the lock is held unless `no_index`. */
struct kb_lock;
enum cli_lock_mode { CLI_LOCK_NONE, CLI_LOCK_READ, CLI_LOCK_SHARED, CLI_LOCK_EXCLUSIVE };
extern const char *cli_lock_wait; /* --lock-wait DURATION (else $KBACKUP_LOCK_WAIT, 10m) */
extern int cli_no_lock;           /* --no-lock */
int cli_open_locked(enum cli_lock_mode mode, const char *command, int no_index,
                    struct kb_repo **repo, struct kb_lock **lock);
void cli_close_locked(struct kb_repo *repo, struct kb_lock *lock);
/* "500ms", "90s" (or "90"), "10m", "2h", "1d" */
int cli_parse_duration_ms(const char *s, uint64_t *ms);
/* $KBACKUP_LOCK_STALE_AFTER, default 30m */
int cli_lock_stale_ms(uint64_t *ms);
/* Prune under a lock already held (cmd_prune.c; also forget --prune). */
int cli_prune_run(struct kb_repo *repo, struct kb_lock *lock, unsigned max_unused, int dry_run);
/* "20" or "20%", 0-100; -1 when it is not one. */
int cli_parse_percent(const char *s, unsigned *out);

/* etcd connection options shared by backup etcd, restore etcd --endpoints and the cluster
 * commands (etcd_conn.c): --endpoints --cacert --cert --key --user --timeout. */
enum {
        OPT_ETCD_ENDPOINTS = 1900,
        OPT_ETCD_CACERT,
        OPT_ETCD_CERT,
        OPT_ETCD_KEY,
        OPT_ETCD_USER,
        OPT_ETCD_TIMEOUT,
};
#define CLI_ETCD_CONN_OPTIONS                                                                      \
        {"endpoints", required_argument, NULL, OPT_ETCD_ENDPOINTS},                                \
            {"cacert", required_argument, NULL, OPT_ETCD_CACERT},                                  \
            {"cert", required_argument, NULL, OPT_ETCD_CERT},                                      \
            {"key", required_argument, NULL, OPT_ETCD_KEY},                                        \
            {"user", required_argument, NULL, OPT_ETCD_USER},                                      \
        {                                                                                          \
                "timeout", required_argument, NULL, OPT_ETCD_TIMEOUT                               \
        }
#define CLI_ETCD_MAX_ENDPOINTS 32
struct cli_etcd_conn {
        char *eps; /* --endpoints as given (split by cli_etcd_conn_finish) */
        const char *endpoints[CLI_ETCD_MAX_ENDPOINTS];
        size_t n_endpoints;
        struct kb_etcd_opts conn;
        const char *password_file; /* from a cluster profile; else $KBACKUP_ETCD_PASSWORD[_FILE] */
        char *pw;
        size_t pwlen;
};
/* In a getopt loop: 1 when c was a connection option, 0 when not, or a usage exit code (> 1). */
int cli_etcd_conn_option(int c, struct cli_etcd_conn *ec, const char *cmd);
/* After the loop: split the endpoints (none: usage error unless optional), check the options
 * go together, read the password for --user. KB_EXIT_OK or an exit code. */
int cli_etcd_conn_finish(struct cli_etcd_conn *ec, const char *cmd, int optional);
void cli_etcd_conn_free(struct cli_etcd_conn *ec);

/* --pre-hook, --post-hook, --hook-timeout of the backup commands (hooks.c; semantics and
 * environment in docs/cli.md). */
enum { OPT_PRE_HOOK = 1950, OPT_POST_HOOK, OPT_HOOK_TIMEOUT };
#define CLI_HOOK_OPTIONS                                                                           \
        {"pre-hook", required_argument, NULL, OPT_PRE_HOOK},                                       \
            {"post-hook", required_argument, NULL, OPT_POST_HOOK},                                 \
        {                                                                                          \
                "hook-timeout", required_argument, NULL, OPT_HOOK_TIMEOUT                          \
        }
#define CLI_HOOK_HELP                                                                              \
        "  --pre-hook CMD          run CMD (/bin/sh -c) first; if it fails or times out,\n"        \
        "                          nothing is backed up (exit 1)\n"                                \
        "  --post-hook CMD         run CMD last, also after a failure; if it fails, the\n"         \
        "                          exit code is 3 (the snapshot stays)\n"                          \
        "  --hook-timeout DURATION per hook (default 10m): then SIGTERM to its process\n"          \
        "                          group, SIGKILL 5 s later. Hook environment: docs/cli.md\n"
#define CLI_OBSERVE_HELP                                                                           \
        "  --log-format text|json, --metrics-file FILE, --pushgateway URL: see kbackup --help\n"
#define CLI_HOOK_DEFAULT_TIMEOUT_MS (10ull * 60 * 1000)
struct cli_hooks {
        const char *pre, *post;
        uint64_t timeout_ms;       /* 0: not given */
        const char *kind, *source; /* KBACKUP_KIND, KBACKUP_SOURCE */
        const char *extra_env[4];  /* more "NAME=VALUE" (backup --cluster's own variables) */
        size_t n_extra;
        uint64_t t0_ms;  /* the backup's start, for KBACKUP_DURATION_SECONDS */
        int post_failed; /* set by cli_hook_post */
};
/* In a getopt loop: 1 when c was a hook option, 0 when not, or a usage exit code (> 1). */
int cli_hook_option(int c, struct cli_hooks *h, const char *cmd);
/* Run the pre-hook if there is one. KB_EXIT_OK, or KB_EXIT_ERROR after logging "pre-hook failed:
 * ..." (the backup must then not run, and the post-hook still does). */
int cli_hook_pre(struct cli_hooks *h);
/* Run the post-hook if there is one, describing an attempt that ends with exit code `code` and
 * wrote `snapshot` (NULL or "" if none). Returns the exit code to use: KB_EXIT_PARTIAL when
 * the backup succeeded but the hook failed, else `code`. */
int cli_hook_post(struct cli_hooks *h, int code, const char *snapshot);

/* The options the backup commands share (backup_opts.c): the common ones, the hooks, the etcd
 * connection (when `ec` is given), --tag and --threads. */
enum { OPT_BACKUP_TAG = 1970, OPT_BACKUP_THREADS };
#define CLI_BACKUP_OPTIONS                                                                         \
        {"tag", required_argument, NULL, OPT_BACKUP_TAG},                                          \
        {                                                                                          \
                "threads", required_argument, NULL, OPT_BACKUP_THREADS                             \
        }
struct cli_backup_args {
        const char **tags; /* --tag KEY=VALUE, in order */
        size_t ntags;
        unsigned threads; /* --threads; 0: all cores */
        const char *help;
        struct cli_hooks *hooks;
        struct cli_etcd_conn *ec;
};
/* -1 when out of memory. */
int cli_backup_args_init(struct cli_backup_args *b, int argc, const char *help,
                         struct cli_hooks *hooks, struct cli_etcd_conn *ec);
void cli_backup_args_free(struct cli_backup_args *b);
/* cli_next_option for backups: the options every backup takes are taken on the way too. The
 * command's own option, -1 at the end, or CLI_OPT_STOP when the command must return *code now
 * (after --help: KB_EXIT_OK; or a usage error). */
int cli_next_backup_option(int argc, char **argv, const struct option *opts,
                           struct cli_backup_args *b, int *code);

/* Commands. */
int cmd_init(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_snapshots(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cli_etcd_backup(int argc, char **argv);
int cli_etcd_restore(int argc, char **argv);
int cli_etcd_restore_keys(int argc, char **argv); /* restore etcd --endpoints (cmd_keyrestore.c) */
int cli_set_backup(int argc, char **argv);        /* backup --cluster (cmd_set.c) */
int cli_set_restore(int argc, char **argv);       /* restore BACKUP --to-cluster (cmd_set.c) */
int cmd_etcd(int argc, char **argv);              /* etcd ls|get|diff|info (cmd_etcd_read.c) */
int cmd_forget(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_key(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_unlock(int argc, char **argv);

#endif
