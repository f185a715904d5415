/* cli.h - what the command files share: options common to every command, opening the repository
 * with the password from the environment, printing (progress, sizes, JSON strings), exit codes. */
#ifndef KB_CLI_H
#define KB_CLI_H

#include <getopt.h>
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
        OPT_FIRST_COMMAND
};
#define CLI_COMMON_OPTIONS                                                                         \
        {"repo", required_argument, NULL, OPT_REPO},                                               \
            {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},                         \
            {"json", no_argument, NULL, OPT_JSON}, {"quiet", no_argument, NULL, 'q'},              \
            {"s3-ca-file", required_argument, NULL, OPT_S3_CA_FILE},                               \
            {"retention-days", required_argument, NULL, OPT_RETENTION_DAYS},                       \
            {"retention-mode", required_argument, NULL, OPT_RETENTION_MODE},                       \
        {                                                                                          \
                "help", no_argument, NULL, 'h'                                                     \
        }

/* Handle a common option inside a command's getopt loop. Returns 1 when handled, 0 when not
 * common, or -1 after printing help (the command then returns KB_EXIT_OK). */
int cli_common_option(int c, const char *help);

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

/* Progress and warnings for engine callbacks. */
void cli_progress(const struct kb_progress *p, void *arg);
void cli_progress_done(void);
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
