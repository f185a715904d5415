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

#define PASSWORD_MAX 4096

struct cli_global cli = {.prog = "kbackup"};
uint64_t cli_warnings;

static int progress_shown;

int cli_common_option(int c, const char *help)
{
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
        /* S3 backend options travel as the environment variables docs/s3.md documents, so a
         * CronJob can set them either way; the backend validates them when it opens. */
        case OPT_S3_CA_FILE:
                setenv("KBACKUP_S3_CA_FILE", optarg, 1);
                return 1;
        case OPT_RETENTION_DAYS:
                setenv("KBACKUP_S3_RETENTION_DAYS", optarg, 1);
                return 1;
        case OPT_RETENTION_MODE:
                setenv("KBACKUP_S3_RETENTION_MODE", optarg, 1);
                return 1;
        case 'h':
                fputs(help, stdout);
                return -1;
        default:
                return 0;
        }
}

int cli_fail(const struct kb_err *err, int rc)
{
        cli_progress_done();
        fprintf(stderr, "%s: %s\n", cli.prog, err && err->msg[0] ? err->msg : kb_err_name(rc));
        if (rc == KB_EPARTIAL)
                return KB_EXIT_PARTIAL;
        if (rc == KB_EUSAGE)
                return KB_EXIT_USAGE;
        return KB_EXIT_ERROR;
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "%s: ", cli.prog);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nTry '%s %s%s--help'.\n", cli.prog, cmd ? cmd : "", cmd ? " " : "");
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

int cli_open_repo(int flags, struct kb_repo **out)
{
        struct kb_err err = {0};
        const char *loc;
        char *pw = NULL;
        size_t len = 0;
        int r;

        r = cli_repo_location(&loc, &err);
        if (r < 0)
                return cli_fail(&err, r);
        r = cli_password(&pw, &len, &err);
        if (r < 0)
                return cli_fail(&err, r == KB_EUSAGE ? KB_EUSAGE : -1);
        r = kb_repo_open(loc, pw, len, flags, out, &err);
        cli_password_free(pw, len);
        if (r < 0)
                return cli_fail(&err, r);
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

void cli_warn(const char *msg, void *arg)
{
        (void)arg;
        cli_progress_done();
        cli_warnings++;
        fprintf(stderr, "warning: %s\n", msg);
}

/* Length of a valid UTF-8 sequence at s (at most len bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t len)
{
        size_t n, i;
        uint32_t cp;

        if (s[0] < 0xc2 || s[0] > 0xf4)
                return 0;
        n = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : 2;
        if (n > len)
                return 0;
        cp = s[0] & (0x7f >> n);
        for (i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return n;
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
                else if ((n = utf8_len(u + i, len - i)) > 0) {
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
