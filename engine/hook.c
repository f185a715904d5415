/* hook.c - run a hook command with a timeout (see hook.h).
 *
 * The hook gets its own process group so that a timeout reaches everything it started (a shell
 * running `sleep`, a script's children), not just the shell. Its output comes back through one
 * pipe for stdout and stderr, so lines keep their order. We stop waiting when the shell exits: a
 * daemon it left in the background may hold the pipe open forever, and is not ours to wait for.
 * The child only calls async-signal-safe functions between fork and exec (the environment is
 * built before the fork), since other threads of ours may hold locks at that moment. */
#include "hook.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define POLL_MS 20

extern char **environ;

static uint64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int name_is(const char *entry, const char *name)
{
        size_t n = strcspn(name, "=");

        return !strncmp(entry, name, n) && entry[n] == '=';
}

/* The inherited environment less env_unset and the names env_set replaces, plus env_set. The
 * strings are not copied: the child execs right away. */
static char **build_env(const struct kb_hook_opts *o)
{
        size_t n = 0, k = 0, i, j;
        char **env;

        while (environ && environ[n])
                n++;
        env = calloc(n + o->n_env_set + 1, sizeof(*env));
        if (!env)
                return NULL;
        for (i = 0; i < n; i++) {
                int drop = 0;

                for (j = 0; !drop && j < o->n_env_unset; j++)
                        drop = name_is(environ[i], o->env_unset[j]);
                for (j = 0; !drop && j < o->n_env_set; j++)
                        drop = name_is(environ[i], o->env_set[j]);
                if (!drop)
                        env[k++] = environ[i];
        }
        for (j = 0; j < o->n_env_set; j++)
                env[k++] = (char *)o->env_set[j];
        return env;
}

static void child(const char *cmd, char **env, int devnull, int out)
{
        char *argv[] = {"sh", "-c", (char *)cmd, NULL};
        struct sigaction sa = {.sa_handler = SIG_DFL};
        sigset_t none;

        setpgid(0, 0);
        if (dup2(devnull, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 ||
            dup2(out, STDERR_FILENO) < 0)
                _exit(127);
        if (close_range(3, ~0u, 0) < 0)
                for (int fd = 3; fd < 1024; fd++)
                        close(fd);
        /* Ignored signals (SIGPIPE, say) would stay ignored across exec. */
        for (int s = 1; s < NSIG; s++)
                sigaction(s, &sa, NULL);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve("/bin/sh", argv, env);
        _exit(127);
}

struct lines {
        char buf[KB_HOOK_LINE_MAX];
        size_t len;
        kb_hook_line_cb cb;
        void *arg;
};

static void lines_feed(struct lines *l, const char *p, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                if (p[i] != '\n')
                        l->buf[l->len++] = p[i];
                if (p[i] == '\n' || l->len == sizeof(l->buf)) {
                        if (l->cb)
                                l->cb(l->buf, l->len, l->arg);
                        l->len = 0;
                }
        }
}

/* Read what the pipe has now. 1 at end of file, 0 when it would block. */
static int drain(int fd, struct lines *l)
{
        char chunk[4096];
        ssize_t got;

        for (;;) {
                got = read(fd, chunk, sizeof(chunk));
                if (got > 0)
                        lines_feed(l, chunk, (size_t)got);
                else if (got == 0)
                        return 1;
                else if (errno != EINTR)
                        return 0; /* EAGAIN, or an error that no retry mends */
        }
}

static void ms_text(uint64_t ms, char *buf, size_t len)
{
        if (ms % 1000)
                snprintf(buf, len, "%llums", (unsigned long long)ms);
        else
                snprintf(buf, len, "%llus", (unsigned long long)(ms / 1000));
}

/* Anyone left in the process group? Reaps those of them that are our children. */
static int group_alive(pid_t pgid)
{
        int st;

        while (waitpid(-pgid, &st, WNOHANG) > 0)
                ;
        return kill(-pgid, 0) == 0;
}

int kb_hook_run(const struct kb_hook_opts *o, struct kb_hook_result *res, struct kb_err *err)
{
        struct lines *l = calloc(1, sizeof(*l));
        char **env = build_env(o);
        uint64_t t0 = now_ms(), grace = o->kill_grace_ms ? o->kill_grace_ms : KB_HOOK_KILL_GRACE_MS;
        uint64_t kill_at = 0, now;
        int p[2] = {-1, -1}, devnull = -1, st = 0, done = 0, eof = 0, termed = 0, killed = 0, r;
        char tmo[32];
        pid_t pid;

        memset(res, 0, sizeof(*res));
        if (!l || !env) {
                r = kb_err_set(err, -ENOMEM, "out of memory");
                goto out;
        }
        l->cb = o->line;
        l->arg = o->arg;
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0 || pipe2(p, O_CLOEXEC) < 0) {
                r = kb_err_sys(err, -errno, "cannot start the hook");
                goto out;
        }
        pid = fork();
        if (pid < 0) {
                r = kb_err_sys(err, -errno, "cannot start the hook: fork");
                goto out;
        }
        if (pid == 0)
                child(o->cmd, env, devnull, p[1]);
        setpgid(pid, pid); /* also here, so the group exists before any kill below */
        close(p[1]);
        p[1] = -1;
        fcntl(p[0], F_SETFL, O_NONBLOCK);
        while (!done) {
                struct pollfd pfd = {.fd = p[0], .events = POLLIN};

                if (eof) {
                        struct timespec d = {0, POLL_MS * 1000000L};

                        nanosleep(&d, NULL);
                } else if (poll(&pfd, 1, POLL_MS) > 0)
                        eof = drain(p[0], l);
                if (waitpid(pid, &st, WNOHANG) == pid)
                        done = 1;
                now = now_ms();
                if (!termed && o->timeout_ms && now - t0 >= o->timeout_ms) {
                        kill(-pid, SIGTERM);
                        termed = 1;
                        kill_at = now + grace;
                }
                if (termed && !killed && now >= kill_at) {
                        kill(-pid, SIGKILL);
                        killed = 1;
                }
        }
        if (!eof)
                drain(p[0], l);
        /* After a timeout the group goes, whatever ignored SIGTERM included. */
        while (termed && !killed && group_alive(pid)) {
                struct timespec d = {0, POLL_MS * 1000000L};

                if (now_ms() >= kill_at) {
                        kill(-pid, SIGKILL);
                        killed = 1;
                }
                nanosleep(&d, NULL);
        }
        if (l->len && l->cb)
                l->cb(l->buf, l->len, l->arg);
        res->duration_sec = (double)(now_ms() - t0) / 1000.0;
        res->exited = WIFEXITED(st);
        res->exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 0;
        res->signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
        res->timed_out = termed;
        ms_text(o->timeout_ms, tmo, sizeof(tmo));
        if (termed)
                r = kb_err_set(err, -ETIMEDOUT, "timed out after %s; its process group was %s", tmo,
                               killed ? "killed" : "terminated");
        else if (res->exited && res->exit_status == 0)
                r = 0;
        else if (res->exited)
                r = kb_err_set(err, -ECANCELED, "exit status %d", res->exit_status);
        else
                r = kb_err_set(err, -ECANCELED, "killed by signal %d", res->signal);
out:
        if (p[0] >= 0)
                close(p[0]);
        if (p[1] >= 0)
                close(p[1]);
        if (devnull >= 0)
                close(devnull);
        free(env);
        free(l);
        return r;
}
