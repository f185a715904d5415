/* locking.c - open the repository under a lock: shared for backup, restore, ls, check and stats,
 * exclusive for forget and prune. The index is loaded only once the lock is held, so a backup
 * never dedups against packs that a prune which just finished has deleted. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lock.h"

#define DEFAULT_LOCK_WAIT_MS (10ull * 60 * 1000)

const char *cli_lock_wait;
int cli_no_lock;

int cli_parse_duration_ms(const char *s, uint64_t *ms)
{
        char *end;
        double v;

        if (!s || !*s)
                return -EINVAL;
        v = strtod(s, &end);
        if (end == s || v < 0 || v > 1e9)
                return -EINVAL;
        if (!strcmp(end, "ms"))
                ;
        else if (!*end || !strcmp(end, "s"))
                v *= 1000;
        else if (!strcmp(end, "m"))
                v *= 60 * 1000;
        else if (!strcmp(end, "h"))
                v *= 3600 * 1000;
        else if (!strcmp(end, "d"))
                v *= 86400 * 1000;
        else
                return -EINVAL;
        *ms = (uint64_t)v;
        return 0;
}

/* The value of a duration setting: the option, else the environment, else the default. A bad
 * value is a usage error. */
static int duration_setting(const char *opt, const char *env, uint64_t def, uint64_t *ms)
{
        const char *v = opt ? opt : getenv(env);

        *ms = def;
        if (!v || !*v)
                return 0;
        if (cli_parse_duration_ms(v, ms) < 0)
                return cli_usage(NULL, "%s: '%s' is not a duration (e.g. 90s, 10m, 2h)",
                                 opt ? "--lock-wait" : env, v);
        return 0;
}

int cli_lock_stale_ms(uint64_t *ms)
{
        return duration_setting(NULL, "KBACKUP_LOCK_STALE_AFTER", KB_LOCK_DEFAULT_STALE_MS, ms);
}

static void lock_note(const char *msg, void *arg)
{
        (void)arg;
        cli_log(CLI_LOG_INFO, NULL, "%s", msg);
}

int cli_open_locked(enum cli_lock_mode mode, const char *command, int no_index,
                    struct kb_repo **repo, struct kb_lock **lock)
{
        struct kb_lock_opts lo = {0};
        struct kb_err err = {0};
        int reader = mode == CLI_LOCK_READ, code, r;

        *repo = NULL;
        *lock = NULL;
        if (mode == CLI_LOCK_NONE || (reader && cli_no_lock))
                return cli_open_repo(KB_REPO_READ_ONLY | (no_index ? KB_REPO_NO_INDEX : 0), repo);
        if (cli_no_lock)
                return cli_usage(command, "--no-lock is only for commands that do not write");
        if (duration_setting(cli_lock_wait, "KBACKUP_LOCK_WAIT", DEFAULT_LOCK_WAIT_MS,
                             &lo.wait_ms) != 0 ||
            cli_lock_stale_ms(&lo.stale_ms) != 0)
                return KB_EXIT_USAGE;
        code = cli_open_repo(KB_REPO_NO_INDEX, repo);
        if (code != KB_EXIT_OK)
                return code;
        lo.exclusive = mode == CLI_LOCK_EXCLUSIVE;
        lo.command = command;
        lo.notify = cli.quiet ? NULL : lock_note;
        r = kb_lock_acquire(*repo, &lo, lock, &err);
        if (r < 0 && reader && (r == -EROFS || r == -EACCES || r == -EPERM)) {
                /* A replica the backend did not recognise as read-only: reading needs no lock. */
                if (!cli.quiet)
                        cli_log(CLI_LOG_INFO, NULL, "cannot write a lock (%s); reading without one",
                                err.msg);
                kb_err_clear(&err);
                r = 0;
        }
        if (r == 0 && !no_index)
                r = kb_repo_index_reload(*repo, &err);
        if (r < 0) {
                cli_close_locked(*repo, *lock);
                *repo = NULL;
                *lock = NULL;
                return cli_fail(&err, r);
        }
        return KB_EXIT_OK;
}

void cli_close_locked(struct kb_repo *repo, struct kb_lock *lock)
{
        struct kb_err err = {0};

        /* Every command that opened the repository passes here last: the state after the run,
         * for the metrics (only listed when they are wanted). */
        cli_report_repo(repo);
        if (kb_lock_release(lock, &err) < 0 && !cli.quiet)
                cli_log(CLI_LOG_WARN, NULL, "%s", err.msg);
        kb_repo_close(repo);
}
