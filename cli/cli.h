/* cli.h - what the command files share: options common to every command, opening the repository
 * with the password from the environment, printing (progress, sizes, JSON strings), exit codes. */
#ifndef KB_CLI_H
#define KB_CLI_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"
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
enum { OPT_REPO = 1000, OPT_PASSWORD_FILE, OPT_JSON, OPT_QUIET, OPT_HELP, OPT_FIRST_COMMAND };
#define CLI_COMMON_OPTIONS                                                                         \
        {"repo", required_argument, NULL, OPT_REPO},                                               \
            {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},                         \
            {"json", no_argument, NULL, OPT_JSON}, {"quiet", no_argument, NULL, 'q'},              \
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

/* Commands. */
int cmd_init(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_snapshots(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cli_etcd_backup(int argc, char **argv);
int cli_etcd_restore(int argc, char **argv);

#endif
