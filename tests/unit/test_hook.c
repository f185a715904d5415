/* test_hook.c - running hook commands: environment added and removed, exit status and signals,
 * output handed back line by line in order, stdin empty, and timeouts that end the hook's whole
 * process group (children that ignore SIGTERM included) within a bounded time. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hook.h"

struct out {
        char lines[64][KB_HOOK_LINE_MAX + 1];
        size_t len[64];
        int n;
};

static void collect(const char *line, size_t len, void *arg)
{
        struct out *o = arg;

        cr_assert_lt(o->n, 64);
        memcpy(o->lines[o->n], line, len);
        o->lines[o->n][len] = '\0';
        o->len[o->n++] = len;
}

static int run(const char *cmd, struct out *o, struct kb_hook_result *res, struct kb_err *e)
{
        struct kb_hook_opts opts = {.cmd = cmd, .line = collect, .arg = o, .timeout_ms = 30000};

        memset(o, 0, sizeof(*o));
        return kb_hook_run(&opts, res, e);
}

static double now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A process is gone when it no longer exists, or is a zombie waiting for a parent that is not
 * us (whoever adopted it reaps it). */
static int gone(pid_t pid)
{
        char path[64], buf[256], *p;
        FILE *f;

        if (kill(pid, 0) < 0 && errno == ESRCH)
                return 1;
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        f = fopen(path, "r");
        if (!f)
                return 1;
        p = fgets(buf, sizeof(buf), f);
        fclose(f);
        p = p ? strrchr(buf, ')') : NULL;
        return p && p[1] == ' ' && p[2] == 'Z';
}

static int wait_gone(pid_t pid, double seconds)
{
        double t0 = now();

        while (!gone(pid) && now() - t0 < seconds)
                usleep(10000);
        return gone(pid);
}

static struct out o;

Test(hook, environment_is_added_replaced_and_removed)
{
        const char *set[] = {"KB_TEST_NEW=new value", "KB_TEST_OLD=replaced"};
        const char *unset[] = {"KBACKUP_PASSWORD", "KB_TEST_GONE"};
        struct kb_hook_opts opts = {.cmd = "echo \"$KB_TEST_NEW|$KB_TEST_OLD|"
                                           "${KBACKUP_PASSWORD-unset}|${KB_TEST_GONE-unset}|"
                                           "$KB_TEST_KEPT\"",
                                    .env_set = set,
                                    .n_env_set = 2,
                                    .env_unset = unset,
                                    .n_env_unset = 2,
                                    .line = collect,
                                    .arg = &o};
        struct kb_hook_result res;
        struct kb_err e = {0};

        setenv("KB_TEST_OLD", "inherited", 1);
        setenv("KBACKUP_PASSWORD", "secret", 1);
        setenv("KB_TEST_GONE", "x", 1);
        setenv("KB_TEST_KEPT", "kept", 1);
        memset(&o, 0, sizeof(o));
        cr_assert_eq(kb_hook_run(&opts, &res, &e), 0, "%s", e.msg);
        cr_assert_eq(o.n, 1);
        cr_assert_str_eq(o.lines[0], "new value|replaced|unset|unset|kept");
        cr_assert_str_eq(getenv("KBACKUP_PASSWORD"), "secret", "our own environment untouched");
        cr_assert(res.exited && res.exit_status == 0 && !res.timed_out);
}

Test(hook, exit_status_and_signals)
{
        struct kb_hook_result res;
        struct kb_err e = {0};

        cr_assert_eq(run("exit 7", &o, &res, &e), -ECANCELED);
        cr_assert(res.exited && res.exit_status == 7);
        cr_assert_str_eq(e.msg, "exit status 7");
        cr_assert_eq(run("kill -KILL $$", &o, &res, &e), -ECANCELED);
        cr_assert(!res.exited && res.signal == SIGKILL);
        cr_assert_str_eq(e.msg, "killed by signal 9");
        cr_assert_eq(run("no-such-command-kb", &o, &res, &e), -ECANCELED);
        cr_assert_eq(res.exit_status, 127);
        cr_assert_eq(run("true", &o, &res, &e), 0);
}

Test(hook, output_comes_back_line_by_line_in_order)
{
        struct kb_hook_result res;
        struct kb_err e = {0};
        char cmd[256];

        cr_assert_eq(run("echo one; echo two >&2; printf 'three\\n\\nfive'", &o, &res, &e), 0);
        cr_assert_eq(o.n, 5);
        cr_assert_str_eq(o.lines[0], "one");
        cr_assert_str_eq(o.lines[1], "two");
        cr_assert_str_eq(o.lines[2], "three");
        cr_assert_str_eq(o.lines[3], "");
        cr_assert_str_eq(o.lines[4], "five", "a last line without newline is not lost");

        /* A line longer than KB_HOOK_LINE_MAX comes in pieces, none of it lost. */
        snprintf(cmd, sizeof(cmd), "head -c %u /dev/zero | tr '\\0' x; echo; echo end",
                 KB_HOOK_LINE_MAX + 100);
        cr_assert_eq(run(cmd, &o, &res, &e), 0);
        cr_assert_eq(o.n, 3);
        cr_assert_eq(o.len[0], KB_HOOK_LINE_MAX);
        cr_assert_eq(o.len[1], 100);
        cr_assert_str_eq(o.lines[2], "end");

        /* Much more output than a pipe holds: read while it runs. */
        cr_assert_eq(run("seq 1 50000 | tail -n 3", &o, &res, &e), 0);
        cr_assert_eq(o.n, 3);
        cr_assert_str_eq(o.lines[2], "50000");
}

Test(hook, stdin_is_empty)
{
        struct kb_hook_result res;
        struct kb_err e = {0};
        double t0 = now();

        cr_assert_eq(run("cat; echo done", &o, &res, &e), 0);
        cr_assert_str_eq(o.lines[o.n - 1], "done");
        cr_assert_lt(now() - t0, 10.0);
}

/* Run cmd (which prints the pid of a child it started, then waits) with a timeout; it must be
 * stopped between min_s and 5 s, with a message containing want, and its child must be gone. */
static void timeout_case(const char *cmd, uint64_t timeout_ms, uint64_t grace_ms, double min_s,
                         const char *want)
{
        struct kb_hook_opts opts = {.cmd = cmd,
                                    .timeout_ms = timeout_ms,
                                    .kill_grace_ms = grace_ms,
                                    .line = collect,
                                    .arg = &o};
        struct kb_hook_result res;
        struct kb_err e = {0};
        double t0 = now(), took;
        pid_t child;

        memset(&o, 0, sizeof(o));
        cr_assert_eq(kb_hook_run(&opts, &res, &e), -ETIMEDOUT);
        took = now() - t0;
        cr_assert(res.timed_out);
        cr_assert(strstr(e.msg, want), "'%s' lacks '%s'", e.msg, want);
        cr_assert_geq(took, min_s, "stopped too early (%.2fs)", took);
        cr_assert_lt(took, 5.0, "not stopped in time (%.2fs)", took);
        cr_assert_eq(o.n, 1);
        child = (pid_t)atoi(o.lines[0]);
        cr_assert_gt(child, 1);
        cr_assert(wait_gone(child, 5), "the hook's child %d survived the timeout", (int)child);
}

Test(hook, timeout_terminates_the_whole_group)
{
        /* SIGTERM is enough: well before the (default, 5 s) grace. */
        timeout_case("sleep 60 & echo $!; wait", 300, 0, 0.29, "timed out after 300ms");
}

Test(hook, sigterm_ignored_means_sigkill_after_the_grace)
{
        /* Both the shell and its child ignore SIGTERM. */
        timeout_case("trap '' TERM; sleep 60 & echo $!; wait; wait", 200, 500, 0.69, "killed");
}

Test(hook, a_background_child_holding_the_output_does_not_block)
{
        struct kb_hook_result res;
        struct kb_err e = {0};
        double t0 = now();
        pid_t child;

        /* The daemon keeps the output pipe open; the hook has ended when its shell has. */
        cr_assert_eq(run("sleep 30 & echo $!", &o, &res, &e), 0, "%s", e.msg);
        cr_assert_lt(now() - t0, 10.0);
        cr_assert_eq(o.n, 1);
        child = (pid_t)atoi(o.lines[0]);
        cr_assert_gt(child, 1);
        cr_assert(!gone(child), "only a timeout kills what the hook left running");
        kill(child, SIGKILL);
        cr_assert(wait_gone(child, 5));
}
