/* err.c - the caller-owned error message that travels with negative return codes. */
#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void err_vset(struct kb_err *err, int code, const char *fmt, va_list ap)
{
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

int kb_err_set(struct kb_err *err, int code, const char *fmt, ...)
{
        va_list ap;

        if (!err)
                return code;
        va_start(ap, fmt);
        err_vset(err, code, fmt, ap);
        va_end(ap);
        return code;
}

int kb_err_sys(struct kb_err *err, int code, const char *fmt, ...)
{
        va_list ap;
        size_t n;

        if (!err)
                return code;
        va_start(ap, fmt);
        err_vset(err, code, fmt, ap);
        va_end(ap);
        n = strlen(err->msg);
        if (code < 0 && code > -4096 && n < sizeof(err->msg))
                snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", strerror(-code));
        return code;
}

int kb_err_prefix(struct kb_err *err, const char *fmt, ...)
{
        char old[KB_ERR_MSG_MAX];
        va_list ap;
        size_t n;

        if (!err)
                return 0;
        memcpy(old, err->msg, sizeof(old));
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        n = strlen(err->msg);
        if (n < sizeof(err->msg))
                snprintf(err->msg + n, sizeof(err->msg) - n, "%s", old);
        return err->code;
}

void kb_err_clear(struct kb_err *err)
{
        if (err) {
                err->code = 0;
                err->msg[0] = '\0';
        }
}

const char *kb_err_name(int code)
{
        switch (code) {
        case 0:
                return "ok";
        case KB_EAUTH:
                return "auth";
        case KB_ECORRUPT:
                return "corrupt";
        case KB_ENOTFOUND:
                return "not-found";
        case KB_EFORMAT:
                return "format";
        case KB_EAMBIG:
                return "ambiguous";
        case KB_EPARTIAL:
                return "partial";
        case KB_EUSAGE:
                return "usage";
        default:
                return code < 0 && code > -4096 ? strerrorname_np(-code) : "unknown";
        }
}

void kb_warn_fmt(void (*warn)(const char *msg, void *arg), void *arg, const char *fmt, va_list ap)
{
        char *msg = NULL;

        if (!warn)
                return;
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        warn(msg ? msg : "(out of memory formatting a warning)", arg);
        free(msg);
}
