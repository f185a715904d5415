/* hook.h - run a user's hook command (a backup's --pre-hook / --post-hook): /bin/sh -c CMD in its
 * own process group, with environment variables added and removed, its output handed back line by
 * line, and a timeout after which the whole group is terminated (SIGTERM, then SIGKILL). */
#ifndef KB_HOOK_H
#define KB_HOOK_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define KB_HOOK_KILL_GRACE_MS 5000u /* SIGTERM to SIGKILL */
#define KB_HOOK_LINE_MAX      4096u /* longer output lines are handed over in pieces */

/* One line of the hook's output (stdout and stderr together, in order), without its newline. */
typedef void (*kb_hook_line_cb)(const char *line, size_t len, void *arg);

struct kb_hook_opts {
        const char *cmd;
        const char *const *env_set; /* "NAME=VALUE": added, or replacing an inherited NAME */
        size_t n_env_set;
        const char *const *env_unset; /* NAMEs removed from the inherited environment */
        size_t n_env_unset;
        uint64_t timeout_ms;    /* 0: no timeout */
        uint64_t kill_grace_ms; /* 0: KB_HOOK_KILL_GRACE_MS */
        kb_hook_line_cb line;   /* NULL: output discarded */
        void *arg;
};

struct kb_hook_result {
        int exited; /* 1: exited with exit_status; 0: killed by signal */
        int exit_status;
        int signal;
        int timed_out; /* the timeout struck and the group was terminated */
        double duration_sec;
};

/* Run the hook to its end (or its timeout). Returns 0 when it exited with status 0; -ECANCELED
 * when it exited non-zero or was killed by a signal, -ETIMEDOUT after the timeout (the message
 * says which); another negative code when it could not be started. The hook's stdin is
 * /dev/null; it inherits no descriptor of ours but stdout/stderr, which are a pipe to us. */
int kb_hook_run(const struct kb_hook_opts *o, struct kb_hook_result *res, struct kb_err *err);

#endif
