/* hooks.c - --pre-hook / --post-hook / --hook-timeout of backup volume, backup etcd and backup
 * --cluster: the environment that describes the backup to the hook, running it (engine/hook.c)
 * with its output passed on as log lines, and what its failure means for the exit code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "hook.h"

/* Removed from the hook's environment: secrets (the files they may come from stay named, their
 * contents are never put anywhere), and our own variables an outer kbackup may have set. */
static const char *const env_unset[] = {
    "KBACKUP_PASSWORD",    "KBACKUP_ETCD_PASSWORD", "KBACKUP_STATUS",           "KBACKUP_EXIT_CODE",
    "KBACKUP_SNAPSHOT_ID", "KBACKUP_ERROR",         "KBACKUP_DURATION_SECONDS",
};

static uint64_t mono_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int cli_hook_option(int c, struct cli_hooks *h, const char *cmd)
{
        switch (c) {
        case OPT_PRE_HOOK:
                h->pre = optarg;
                return 1;
        case OPT_POST_HOOK:
                h->post = optarg;
                return 1;
        case OPT_HOOK_TIMEOUT:
                if (cli_parse_duration_ms(optarg, &h->timeout_ms) < 0 || h->timeout_ms == 0)
                        return cli_usage(cmd,
                                         "--hook-timeout: '%s' is not a duration (e.g. 90s, "
                                         "10m)",
                                         optarg);
                return 1;
        default:
                return 0;
        }
}

static void hook_line(const char *line, size_t len, void *arg)
{
        cli_log(CLI_LOG_INFO | CLI_LOG_PLAIN, CLI_FIELDS(CLI_STR("hook", arg)), "%.*s", (int)len,
                line);
}

struct env {
        char *set[16];
        size_t n;
};

static void env_add(struct env *e, const char *name, const char *value)
{
        if (e->n < sizeof(e->set) / sizeof(e->set[0]) &&
            asprintf(&e->set[e->n], "%s=%s", name, value ? value : "") >= 0)
                e->n++;
}

static void env_free(struct env *e)
{
        for (size_t i = 0; i < e->n; i++)
                free(e->set[i]);
}

/* Run one hook; 0, or -1 after logging "WHICH-hook failed: ...". */
static int run(struct cli_hooks *h, const char *which, const char *cmd, struct env *e)
{
        struct kb_hook_opts o = {0};
        struct kb_hook_result res;
        struct kb_err err = {0};
        struct kb_err lerr = {0};
        const char *repo = "";

        cli_repo_location(&repo, &lerr); /* a location names no secret */
        env_add(e, "KBACKUP_HOOK", which);
        env_add(e, "KBACKUP_COMMAND", "backup");
        env_add(e, "KBACKUP_KIND", h->kind);
        env_add(e, "KBACKUP_SOURCE", h->source);
        env_add(e, "KBACKUP_REPOSITORY", repo);
        for (size_t i = 0; i < h->n_extra; i++)
                if (e->n < sizeof(e->set) / sizeof(e->set[0]) &&
                    (e->set[e->n] = strdup(h->extra_env[i])))
                        e->n++;
        o.cmd = cmd;
        o.env_set = (const char *const *)e->set;
        o.n_env_set = e->n;
        o.env_unset = env_unset;
        o.n_env_unset = sizeof(env_unset) / sizeof(env_unset[0]);
        o.timeout_ms = h->timeout_ms ? h->timeout_ms : CLI_HOOK_DEFAULT_TIMEOUT_MS;
        o.line = hook_line;
        o.arg = (void *)which;
        fflush(stdout); /* what we printed comes before anything the hook makes us print */
        if (kb_hook_run(&o, &res, &err) == 0)
                return 0;
        cli_log(CLI_LOG_ERROR, CLI_FIELDS(CLI_STR("hook", which)), "%s-hook failed: %s (%s)", which,
                err.msg, cmd);
        return -1;
}

int cli_hook_pre(struct cli_hooks *h)
{
        struct env e = {0};
        int r = 0;

        if (h->pre)
                r = run(h, "pre", h->pre, &e);
        env_free(&e);
        h->t0_ms = mono_ms();
        return r == 0 ? KB_EXIT_OK : KB_EXIT_ERROR;
}

int cli_hook_post(struct cli_hooks *h, int code, const char *snapshot)
{
        struct env e = {0};
        char num[32], dur[32];
        int r;

        if (!h->post)
                return code;
        snprintf(num, sizeof(num), "%d", code);
        snprintf(dur, sizeof(dur), "%.3f",
                 h->t0_ms ? (double)(mono_ms() - h->t0_ms) / 1000.0 : 0.0);
        env_add(&e, "KBACKUP_STATUS",
                code == KB_EXIT_OK        ? "success"
                : code == KB_EXIT_PARTIAL ? "partial"
                                          : "failure");
        env_add(&e, "KBACKUP_EXIT_CODE", num);
        env_add(&e, "KBACKUP_DURATION_SECONDS", dur);
        if (snapshot && *snapshot)
                env_add(&e, "KBACKUP_SNAPSHOT_ID", snapshot);
        if (code != KB_EXIT_OK && code != KB_EXIT_PARTIAL)
                env_add(&e, "KBACKUP_ERROR", cli_log_last_error());
        r = run(h, "post", h->post, &e);
        env_free(&e);
        h->post_failed = r < 0;
        return r < 0 && code == KB_EXIT_OK ? KB_EXIT_PARTIAL : code;
}
