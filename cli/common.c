/* common.c - option, password, repository, progress and printing helpers shared by commands. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto.h"
#include "utf8.h"

#define PASSWORD_MAX 4096

struct cli_global cli = {.prog = "kbackup"};
uint64_t cli_warnings;

static int progress_shown;

/* Options that travel as the environment variables docs/s3.md and docs/cli.md document, so a
 * CronJob can set them either way; what reads them (the S3 backend, the repository's opening)
 * checks them. */
static const struct env_option {
        int code;
        const char *flag, *env;
} env_options[] = {
    {OPT_S3_CA_FILE, "--s3-ca-file", "KBACKUP_S3_CA_FILE"},
    {OPT_RETENTION_DAYS, "--retention-days", "KBACKUP_S3_RETENTION_DAYS"},
    {OPT_RETENTION_MODE, "--retention-mode", "KBACKUP_S3_RETENTION_MODE"},
    {OPT_COMPRESSION, "--compression", "KBACKUP_COMPRESSION"},
};

const char *cli_env_of_flag(const char *flag)
{
        for (size_t i = 0; i < sizeof(env_options) / sizeof(env_options[0]); i++)
                if (!strcmp(flag, env_options[i].flag))
                        return env_options[i].env;
        return NULL;
}

static int env_option(int c)
{
        for (size_t i = 0; i < sizeof(env_options) / sizeof(env_options[0]); i++)
                if (c == env_options[i].code) {
                        setenv(env_options[i].env, optarg, 1);
                        return 1;
                }
        return 0;
}

int cli_common_option(int c, const char *help)
{
        if (env_option(c))
                return 1;
        switch (c) {
        case OPT_REPO:
                cli.repo = optarg;
                return 1;
        case OPT_PASSWORD_FILE:
                cli.password_file = optarg;
                return 1;
        case OPT_JSON:
                cli.json = 1;
                return 1;
        case 'q':
                cli.quiet = 1;
                return 1;
        case OPT_LOG_FORMAT: /* checked by cli_early_options */
                cli_log_format(optarg);
                return 1;
        case OPT_METRICS_FILE:
                cli.metrics_file = optarg;
                return 1;
        case OPT_PUSHGATEWAY:
                cli.pushgateway = optarg;
                return 1;
        case OPT_PUSH_JOB:
                cli.push_job = optarg;
                return 1;
        case OPT_PUSH_INSTANCE:
                cli.push_instance = optarg;
                return 1;
        case 'h':
                cli_report.help = 1;
                fputs(help, stdout);
                return -1;
        default:
                return 0;
        }
}

int cli_getopt(int argc, char **argv, const struct option *opts)
{
        int c;

        /* getopt's own message would be a line of plain text among the JSON ones. */
        opterr = !cli_log_is_json();
        c = getopt_long(argc, argv, "qh", opts, NULL);
        if (c == '?' && !opterr && optind > 0 && optind <= argc)
                cli_log(CLI_LOG_ERROR, NULL, "unrecognized option or missing argument: '%s'",
                        argv[optind - 1]);
        return c;
}

int cli_next_option(int argc, char **argv, const struct option *opts, const char *help)
{
        int c, r;

        while ((c = cli_getopt(argc, argv, opts)) != -1) {
                r = cli_common_option(c, help);
                if (r < 0)
                        return CLI_OPT_STOP;
                if (r == 0)
                        return c;
        }
        return -1;
}

/* Which global option argv[i] is, and its value (the next argument, or after '='). */
static const char *early_value(int argc, char **argv, int *i, const char *name)
{
        size_t n = strlen(name);

        if (strncmp(argv[*i], name, n) != 0)
                return NULL;
        if (argv[*i][n] == '=')
                return argv[*i] + n + 1;
        if (argv[*i][n] || *i + 1 >= argc)
                return NULL;
        return argv[++*i];
}

int cli_early_options(int argc, char **argv)
{
        const char *env = getenv("KBACKUP_LOG_FORMAT"), *v;

        if (env && *env && cli_log_format(env) < 0)
                return cli_usage(NULL, "KBACKUP_LOG_FORMAT: '%s' is not text or json", env);
        for (int i = 1; i < argc && strcmp(argv[i], "--"); i++) {
                if ((v = early_value(argc, argv, &i, "--log-format"))) {
                        if (cli_log_format(v) < 0)
                                return cli_usage(NULL, "--log-format wants text or json, not '%s'",
                                                 v);
                } else if ((v = early_value(argc, argv, &i, "--metrics-file")))
                        cli.metrics_file = v;
                else if ((v = early_value(argc, argv, &i, "--pushgateway")))
                        cli.pushgateway = v;
                else if ((v = early_value(argc, argv, &i, "--pushgateway-job")))
                        cli.push_job = v;
                else if ((v = early_value(argc, argv, &i, "--pushgateway-instance")))
                        cli.push_instance = v;
        }
        return KB_EXIT_OK;
}

int cli_fail(const struct kb_err *err, int rc)
{
        cli_log(CLI_LOG_ERROR, NULL, "%s", err && err->msg[0] ? err->msg : kb_err_name(rc));
        if (rc == KB_EPARTIAL)
                return KB_EXIT_PARTIAL;
        if (rc == KB_EUSAGE)
                return KB_EXIT_USAGE;
        return KB_EXIT_ERROR;
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
        char hint[128];
        va_list ap;

        snprintf(hint, sizeof(hint), "Try '%s %s%s--help'.", cli.prog, cmd ? cmd : "",
                 cmd ? " " : "");
        va_start(ap, fmt);
        cli_vlog(CLI_LOG_ERROR, CLI_FIELDS(CLI_STR("hint", hint)), fmt, ap);
        va_end(ap);
        if (!cli_log_is_json())
                cli_log(CLI_LOG_INFO | CLI_LOG_PLAIN, NULL, "%s", hint);
        return KB_EXIT_USAGE;
}

static int read_password_file(const char *path, char **pw, size_t *len, struct kb_err *err)
{
        char *buf = malloc(PASSWORD_MAX + 1);
        size_t n = 0;
        ssize_t got;
        int fd;

        if (!buf)
                return kb_err_set(err, -ENOMEM, "out of memory");
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                free(buf);
                return kb_err_sys(err, -errno, "cannot read password file %s", path);
        }
        while (n <= PASSWORD_MAX && (got = read(fd, buf + n, PASSWORD_MAX + 1 - n)) > 0)
                n += (size_t)got;
        close(fd);
        if (n > PASSWORD_MAX) {
                cli_password_free(buf, PASSWORD_MAX + 1);
                return kb_err_set(err, -EINVAL, "password file %s is too large", path);
        }
        /* A Secret mounted as a file, or `echo pw > f`, often ends in a newline: not part of it. */
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
                n--;
        buf[n] = '\0';
        *pw = buf;
        *len = n;
        return 0;
}

static int secret_from(const char *file, const char *env, const char *what, char **pw, size_t *len,
                       struct kb_err *err)
{
        int r;

        if (file && *file)
                r = read_password_file(file, pw, len, err);
        else if (env) {
                *pw = strdup(env);
                *len = strlen(env);
                r = *pw ? 0 : kb_err_set(err, -ENOMEM, "out of memory");
        } else
                return kb_err_set(err, -EINVAL, "no %s", what);
        if (r == 0 && *len == 0) {
                cli_password_free(*pw, 1);
                r = kb_err_set(err, -EINVAL, "the %s is empty", what);
        }
        return r;
}

int cli_password(char **pw, size_t *len, struct kb_err *err)
{
        const char *file = cli.password_file ? cli.password_file : getenv("KBACKUP_PASSWORD_FILE");

        return secret_from(file, getenv("KBACKUP_PASSWORD"),
                           "password: set KBACKUP_PASSWORD_FILE (or --password-file) or "
                           "KBACKUP_PASSWORD",
                           pw, len, err);
}

int cli_secret(const char *env_name, char **secret, size_t *len, struct kb_err *err)
{
        char file_var[128], what[192];

        snprintf(file_var, sizeof(file_var), "%s_FILE", env_name);
        snprintf(what, sizeof(what), "password: set %s or %s", file_var, env_name);
        return secret_from(getenv(file_var), getenv(env_name), what, secret, len, err);
}

void cli_password_free(char *pw, size_t len)
{
        if (!pw)
                return;
        kb_crypto_wipe(pw, len);
        free(pw);
}

int cli_repo_location(const char **loc, struct kb_err *err)
{
        *loc = cli.repo ? cli.repo : getenv("KBACKUP_REPOSITORY");
        if (!*loc || !**loc)
                return kb_err_set(err, KB_EUSAGE,
                                  "no repository: give --repo or set KBACKUP_REPOSITORY");
        return 0;
}

/* --compression / $KBACKUP_COMPRESSION: "off", or a zstd level. */
static int compression_level(int *level, struct kb_err *err)
{
        const char *s = getenv("KBACKUP_COMPRESSION");
        char *end;
        long v;

        *level = KB_REPO_DEFAULT_ZSTD_LEVEL;
        if (!s || !*s)
                return 0;
        if (!strcmp(s, "off")) {
                *level = 0;
                return 0;
        }
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno || *end || end == s || v == 0 || v < KB_REPO_MIN_ZSTD_LEVEL ||
            v > KB_REPO_MAX_ZSTD_LEVEL)
                return kb_err_set(err, KB_EUSAGE,
                                  "--compression '%s': give off, or a zstd level from %d to %d "
                                  "other than 0",
                                  s, KB_REPO_MIN_ZSTD_LEVEL, KB_REPO_MAX_ZSTD_LEVEL);
        *level = (int)v;
        return 0;
}

int cli_open_repo(int flags, struct kb_repo **out)
{
        struct kb_err err = {0};
        const char *loc;
        char *pw = NULL;
        size_t len = 0;
        int r, level = KB_REPO_DEFAULT_ZSTD_LEVEL;

        r = cli_repo_location(&loc, &err);
        if (r == 0)
                r = compression_level(&level, &err);
        if (r < 0)
                return cli_fail(&err, r);
        r = cli_password(&pw, &len, &err);
        if (r < 0)
                return cli_fail(&err, r == KB_EUSAGE ? KB_EUSAGE : -1);
        r = kb_repo_open(loc, pw, len, flags, out, &err);
        cli_password_free(pw, len);
        if (r < 0)
                return cli_fail(&err, r);
        kb_repo_set_compression(*out, level);
        return KB_EXIT_OK;
}

void cli_human_bytes(uint64_t n, char *buf, size_t len)
{
        static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
        double v = (double)n;
        int u = 0;

        while (v >= 1024 && u < 5) {
                v /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, len, "%llu B", (unsigned long long)n);
        else
                snprintf(buf, len, "%.2f %s", v, units[u]);
}

static double now_sec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void cli_progress(const struct kb_progress *p, void *arg)
{
        static double start;
        char done[32], rate[32], line[160];
        double t, el;
        int n;

        (void)arg;
        if (cli_log_is_json()) {
                if (cli_progress_log_due())
                        cli_log(CLI_LOG_INFO,
                                CLI_FIELDS(CLI_U64("files", p->files_done),
                                           CLI_U64("bytes", p->bytes_done),
                                           CLI_U64("files_total", p->files_total),
                                           CLI_U64("bytes_total", p->bytes_total),
                                           CLI_STR("path", p->current)),
                                "progress");
                return;
        }
        if (cli.quiet || cli.json || !isatty(STDOUT_FILENO))
                return;
        t = now_sec();
        if (!start)
                start = t;
        el = t - start;
        cli_human_bytes(p->bytes_done, done, sizeof(done));
        cli_human_bytes(el > 0.1 ? (uint64_t)((double)p->bytes_done / el) : 0, rate, sizeof(rate));
        n = snprintf(line, sizeof(line), "%llu files, %s, %s/s", (unsigned long long)p->files_done,
                     done, rate);
        if (p->bytes_total && p->bytes_done && p->bytes_done < p->bytes_total && el > 1) {
                double eta = el * (double)(p->bytes_total - p->bytes_done) / (double)p->bytes_done;

                snprintf(line + n, sizeof(line) - (size_t)n, ", %.0f%%, ETA %d:%02d",
                         100.0 * (double)p->bytes_done / (double)p->bytes_total, (int)eta / 60,
                         (int)eta % 60);
        }
        printf("\r\033[K%s", line);
        fflush(stdout);
        progress_shown = 1;
}

void cli_progress_done(void)
{
        if (progress_shown) {
                printf("\r\033[K");
                fflush(stdout);
                progress_shown = 0;
        }
}

int cli_progress_log_due(void)
{
        static double last;
        double t;

        if (!cli_log_is_json() || cli.quiet)
                return 0;
        t = now_sec();
        if (!last)
                last = t; /* the first line after CLI_PROGRESS_LOG_SEC: short runs log none */
        if (t - last < CLI_PROGRESS_LOG_SEC)
                return 0;
        last = t;
        return 1;
}

void cli_warn(const char *msg, void *arg)
{
        (void)arg;
        cli_warnings++;
        cli_log(CLI_LOG_WARN, NULL, "%s", msg);
}

/* JSON wants UTF-8; file names may be any bytes. A byte that is not part of valid UTF-8 is written
 * as the code point of the same value (\u00XX), which keeps the output parseable. */
void cli_json_string(FILE *f, const char *s, size_t len)
{
        const unsigned char *u = (const unsigned char *)s;

        fputc('"', f);
        for (size_t i = 0; i < len; i++) {
                unsigned char c = u[i];
                size_t n;

                if (c == '"' || c == '\\')
                        fprintf(f, "\\%c", c);
                else if (c < 0x20 || c == 0x7f)
                        fprintf(f, "\\u%04x", c);
                else if (c < 0x80)
                        fputc(c, f);
                else if ((n = kb_utf8_seq_len(u + i, len - i)) > 0) {
                        fwrite(u + i, 1, n, f);
                        i += n - 1;
                } else
                        fprintf(f, "\\u%04x", c);
        }
        fputc('"', f);
}

void cli_print_escaped(FILE *f, const char *s, size_t len)
{
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];

                if (c == '\\')
                        fputs("\\\\", f);
                else if (c < 0x20 || c == 0x7f)
                        fprintf(f, "\\x%02x", c);
                else
                        fputc(c, f);
        }
}

void cli_format_time(int64_t unix_nsec, char *buf, size_t len, int utc_rfc3339)
{
        time_t t = (time_t)(unix_nsec / 1000000000);
        struct tm tm;

        if (utc_rfc3339) {
                gmtime_r(&t, &tm);
                strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
        } else {
                localtime_r(&t, &tm);
                strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
        }
}
