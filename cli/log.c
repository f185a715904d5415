/* log.c - every line kbackup writes to standard error goes through here: as human text (the
 * default), or with --log-format json (KBACKUP_LOG_FORMAT) as one JSON object per line, built with
 * jansson, so fluentd or stern can parse it: {"time", "level", "msg", ...fields}. */
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "cli.h"
#include "utf8.h"

static int log_json;
static char last_error[KB_ERR_MSG_MAX + 256];

int cli_log_format(const char *name)
{
        if (!strcmp(name, "text"))
                log_json = 0;
        else if (!strcmp(name, "json"))
                log_json = 1;
        else
                return -1;
        return 0;
}

int cli_log_is_json(void)
{
        return log_json;
}

const char *cli_log_last_error(void)
{
        return last_error;
}

/* JSON strings must be UTF-8; messages carry file names, which may be any bytes. */
static json_t *string_of(const char *s)
{
        char *clean = kb_utf8_sanitize(s, strlen(s), 0);
        json_t *j = clean ? json_string(clean) : NULL;

        free(clean);
        return j ? j : json_string("?");
}

static void rfc3339_now(char *buf, size_t len)
{
        struct timeval tv;
        struct tm tm;
        size_t n;

        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + n, len - n, ".%03dZ", (int)(tv.tv_usec / 1000));
}

static const char *const level_name[] = {"info", "warn", "error"};
static const char *const text_prefix[] = {"kbackup: ", "warning: ", "kbackup: "};

static void emit_json(int level, const struct cli_field *fields, const char *msg)
{
        json_t *o = json_object();
        char ts[40], *line;

        if (!o)
                return;
        rfc3339_now(ts, sizeof(ts));
        json_object_set_new(o, "time", json_string(ts));
        json_object_set_new(o, "level", json_string(level_name[level]));
        json_object_set_new(o, "msg", string_of(msg));
        for (const struct cli_field *f = fields; f && f->key; f++) {
                json_t *v = NULL;

                switch (f->type) {
                case CLI_FIELD_STR:
                        v = f->s ? string_of(f->s) : json_null();
                        break;
                case CLI_FIELD_U64:
                        /* json_int_t is signed 64-bit; byte counts never get near 2^63. */
                        v = json_integer((json_int_t)f->u);
                        break;
                case CLI_FIELD_I64:
                        v = json_integer((json_int_t)f->i);
                        break;
                case CLI_FIELD_DBL:
                        v = json_real(f->d);
                        break;
                }
                if (v)
                        json_object_set_new(o, f->key, v);
        }
        line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));
        json_decref(o);
        if (!line)
                return;
        /* One write per line, so lines of concurrent writers do not interleave. */
        fprintf(stderr, "%s\n", line);
        fflush(stderr);
        free(line);
}

void cli_vlog(int level, const struct cli_field *fields, const char *fmt, va_list ap)
{
        int plain = level & CLI_LOG_PLAIN;
        char *buf = NULL;
        const char *msg = vasprintf(&buf, fmt, ap) < 0 ? fmt : buf;

        level &= ~CLI_LOG_PLAIN;
        if (level < CLI_LOG_INFO || level > CLI_LOG_ERROR)
                level = CLI_LOG_ERROR;
        cli_progress_done();
        if (level == CLI_LOG_ERROR)
                snprintf(last_error, sizeof(last_error), "%s", msg);
        if (log_json)
                emit_json(level, fields, msg);
        else
                fprintf(stderr, "%s%s\n", plain ? "" : text_prefix[level], msg);
        free(buf);
}

void cli_log(int level, const struct cli_field *fields, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        cli_vlog(level, fields, fmt, ap);
        va_end(ap);
}
