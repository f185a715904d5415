/* err.h - error reporting shared by every layer.
 *
 * Functions return 0 on success or a negative code: -errno for system errors, or one of the KB_E*
 * codes below. The human sentence travels in a struct kb_err owned by the caller, so the CLI
 * decides how to print it and the engine never prints on its own. */
#ifndef KB_ERR_H
#define KB_ERR_H

#include <stdarg.h>
#include <stddef.h>

/* Project codes live far above any errno value. */
enum {
        KB_EAUTH = -10001,     /* wrong password or key: nothing decrypts */
        KB_ECORRUPT = -10002,  /* authenticated data failed to verify or parse */
        KB_ENOTFOUND = -10003, /* object, snapshot or path does not exist */
        KB_EFORMAT = -10004,   /* not a kbackup repository, or an unknown format version */
        KB_EAMBIG = -10005,    /* an id prefix matches more than one object */
        KB_EPARTIAL = -10006,  /* finished, but some items failed (reported one by one) */
        KB_EUSAGE = -10007,    /* the caller asked for something that cannot be done */
};

#define KB_ERR_MSG_MAX 512

struct kb_err {
        int code;
        char msg[KB_ERR_MSG_MAX];
};

/* Record code and message in err (may be NULL) and return code, so callers can write
 * `return kb_err_set(err, -EIO, "...")`. */
int kb_err_set(struct kb_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like kb_err_set, appending ": strerror(-code)" for errno codes. */
int kb_err_sys(struct kb_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message with context ("reading pack 1a2b: " + old message). */
int kb_err_prefix(struct kb_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void kb_err_clear(struct kb_err *err);

/* Format a warning and hand it to `warn(msg, arg)` (nothing when warn is NULL). Problems with
 * single items (a file that cannot be read, a damaged chunk) travel this way while the work goes
 * on; the callback's owner decides how to print them. */
void kb_warn_fmt(void (*warn)(const char *msg, void *arg), void *arg, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* A short name for a code, for logs and tests. */
const char *kb_err_name(int code);

#endif
