/* lock.c - repository locks: take (write, then look for conflicts), refresh from a thread, check
 * before recording a snapshot or deleting, list and remove stale ones. See lock.h. */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "repo_internal.h"

#define LOCK_VERSION    1
#define HOLDER_LEN      16
#define BACKOFF_MIN_MS  100
#define BACKOFF_MAX_MS  5000
#define LOCK_RECORD_MAX 4096

/* Who we are, as a lock record says it. */
struct ident {
        char host[256];
        char user[64];
        char boot_id[64];
        char pid_ns[64];
        uint64_t pid_start;
};

struct kb_lock {
        struct kb_repo *r;
        int exclusive;
        char command[32];
        uint8_t holder[HOLDER_LEN];
        int64_t created_ns;
        uint64_t stale_ms, refresh_ms;
        struct ident me;

        pthread_mutex_t mu;
        pthread_cond_t cond;
        pthread_t thread;
        int thread_started, stop;
        char name[KB_ID_HEX_LEN + 1]; /* the current record */
        uint64_t last_ok_ms;          /* monotonic time of the last successful write */
        int lost;
        char lost_why[200];
        int stale_reported; /* say "ignoring stale lock" once, not on every retry */
};

static int64_t wall_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t mono_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void read_line(const char *path, char *out, size_t len)
{
        FILE *f = fopen(path, "re");

        out[0] = '\0';
        if (!f)
                return;
        if (fgets(out, (int)len, f))
                out[strcspn(out, "\n")] = '\0';
        fclose(f);
}

/* Field 22 of /proc/PID/stat: start time in clock ticks after boot; 0 when unknown. Two
 * processes with the same pid have different start times, so this tells a recycled pid apart. */
static uint64_t pid_start_time(int64_t pid)
{
        char path[64], buf[1024], *p;
        unsigned long long v = 0;
        size_t n;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%lld/stat", (long long)pid);
        f = fopen(path, "re");
        if (!f)
                return 0;
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
        if (!p)
                return 0;
        /* After ") " come fields 3 (state) ... 22 (starttime): skip 19 of them. */
        for (int i = 0; i < 20 && p; i++)
                p = strchr(p + 1, ' ');
        if (p && sscanf(p + 1, "%llu", &v) != 1)
                v = 0;
        return v;
}

static void ident_init(struct ident *id)
{
        struct passwd *pw = getpwuid(geteuid());
        ssize_t n;

        memset(id, 0, sizeof(*id));
        gethostname(id->host, sizeof(id->host) - 1);
        snprintf(id->user, sizeof(id->user), "%s", pw ? pw->pw_name : "");
        read_line("/proc/sys/kernel/random/boot_id", id->boot_id, sizeof(id->boot_id));
        n = readlink("/proc/self/ns/pid", id->pid_ns, sizeof(id->pid_ns) - 1);
        id->pid_ns[n > 0 ? n : 0] = '\0';
        id->pid_start = pid_start_time(getpid());
}

int kb_lock_write_record(struct kb_repo *r, const Kbackup__Lock *rec, char name[KB_ID_HEX_LEN + 1],
                         struct kb_err *err)
{
        uint8_t buf[LOCK_RECORD_MAX];
        size_t n = kbackup__lock__get_packed_size(rec);

        if (n > sizeof(buf))
                return kb_err_set(err, -EINVAL, "lock record too large");
        n = kbackup__lock__pack(rec, buf);
        return kb_repo_object_put(r, KB_OBJ_LOCK, buf, n, name, err);
}

static int write_ours(struct kb_lock *l, char name[KB_ID_HEX_LEN + 1], struct kb_err *err)
{
        Kbackup__Lock rec = KBACKUP__LOCK__INIT;

        rec.version = LOCK_VERSION;
        rec.exclusive = l->exclusive;
        rec.host = l->me.host;
        rec.pid = getpid();
        rec.pid_start = l->me.pid_start;
        rec.boot_id = l->me.boot_id;
        rec.pid_ns = l->me.pid_ns;
        rec.created_unix_nsec = l->created_ns;
        rec.time_unix_nsec = wall_ns();
        rec.username = l->me.user;
        rec.command = l->command;
        rec.holder.data = l->holder;
        rec.holder.len = HOLDER_LEN;
        return kb_lock_write_record(l->r, &rec, name, err);
}

static void format_age(int64_t ns, char *out, size_t len)
{
        int64_t s = ns / 1000000000;

        if (s < 0)
                s = 0;
        if (s < 120)
                snprintf(out, len, "%llds", (long long)s);
        else if (s < 7200)
                snprintf(out, len, "%lldm", (long long)(s / 60));
        else
                snprintf(out, len, "%lldh%02lldm", (long long)(s / 3600), (long long)(s / 60 % 60));
}

/* Decide whether a record is stale, from here and now; fills info->state. */
static void judge(const Kbackup__Lock *rec, const struct ident *me, uint64_t stale_ms,
                  struct kb_lock_info *info)
{
        int64_t age = wall_ns() - rec->time_unix_nsec;
        char agebuf[32];

        format_age(age, agebuf, sizeof(agebuf));
        /* The pid means something only in our pid namespace on our host since its last boot. */
        if (strcmp(rec->host, me->host) == 0 && rec->pid_ns[0] && me->pid_ns[0] &&
            strcmp(rec->pid_ns, me->pid_ns) == 0) {
                if (rec->boot_id[0] && me->boot_id[0] && strcmp(rec->boot_id, me->boot_id) != 0) {
                        info->stale = 1;
                        snprintf(info->state, sizeof(info->state),
                                 "stale: this host rebooted since it was taken");
                        return;
                }
                if (rec->pid > 0 && kill((pid_t)rec->pid, 0) < 0 && errno == ESRCH) {
                        info->stale = 1;
                        snprintf(info->state, sizeof(info->state),
                                 "stale: process %lld on this host is gone", (long long)rec->pid);
                        return;
                }
                if (rec->pid_start && pid_start_time(rec->pid) != rec->pid_start) {
                        info->stale = 1;
                        snprintf(info->state, sizeof(info->state),
                                 "stale: process %lld on this host is gone (pid reused)",
                                 (long long)rec->pid);
                        return;
                }
                /* A live holder here may be stopped; it notices a lost lock itself when it
                 * resumes, but while it lives it keeps its claim. */
                snprintf(info->state, sizeof(info->state),
                         "active: process %lld on this host is running (refreshed %s ago)",
                         (long long)rec->pid, agebuf);
                return;
        }
        if (age > (int64_t)stale_ms * 1000000) {
                info->stale = 1;
                snprintf(info->state, sizeof(info->state), "stale: not refreshed for %s", agebuf);
                return;
        }
        snprintf(info->state, sizeof(info->state), "active: refreshed %s ago", agebuf);
}

/* Load and judge one record. KB_ENOTFOUND when it vanished meanwhile (a refresh). */
static int read_info(struct kb_repo *r, const char *name, const struct ident *me, uint64_t stale_ms,
                     struct kb_lock_info *info, uint8_t holder[HOLDER_LEN], struct kb_err *err)
{
        struct kb_buf plain = KB_BUF_INIT;
        Kbackup__Lock *rec = NULL;
        struct kb_err e = {0};
        int rc;

        memset(info, 0, sizeof(*info));
        snprintf(info->name, sizeof(info->name), "%s", name);
        if (holder)
                memset(holder, 0, HOLDER_LEN);
        rc = kb_repo_object_get(r, KB_OBJ_LOCK, name, &plain, &e);
        if (rc == KB_ENOTFOUND) {
                kb_buf_free(&plain);
                return rc;
        }
        if (rc == 0)
                rec = kbackup__lock__unpack(NULL, plain.len, plain.data);
        kb_buf_free(&plain);
        if (rc < 0 && rc != KB_ECORRUPT) /* I/O trouble: say so rather than guess */
                return kb_err_set(err, rc, "lock %.16s: %s", name, e.msg);
        if (!rec) {
                /* Atomic writes under our key never produce this: it is no kbackup's claim. */
                info->stale = 1;
                snprintf(info->state, sizeof(info->state),
                         "stale: the record is damaged or not a kbackup lock");
                return 0;
        }
        info->readable = 1;
        info->exclusive = rec->exclusive;
        snprintf(info->host, sizeof(info->host), "%s", rec->host);
        snprintf(info->user, sizeof(info->user), "%s", rec->username);
        snprintf(info->command, sizeof(info->command), "%s", rec->command);
        info->pid = rec->pid;
        info->created_ns = rec->created_unix_nsec;
        info->time_ns = rec->time_unix_nsec;
        if (holder && rec->holder.len == HOLDER_LEN)
                memcpy(holder, rec->holder.data, HOLDER_LEN);
        judge(rec, me, stale_ms, info);
        kbackup__lock__free_unpacked(rec, NULL);
        return 0;
}

struct name_list {
        char (*names)[KB_ID_HEX_LEN + 1];
        size_t n, cap;
};

static int collect_name(const char *name, uint64_t size, void *arg)
{
        struct name_list *nl = arg;

        (void)size;
        if (nl->n == nl->cap) {
                size_t cap = nl->cap ? nl->cap * 2 : 16;
                char(*p)[KB_ID_HEX_LEN + 1] = realloc(nl->names, cap * sizeof(*p));

                if (!p)
                        return -ENOMEM;
                nl->names = p;
                nl->cap = cap;
        }
        memcpy(nl->names[nl->n++], name, KB_ID_HEX_LEN + 1);
        return 0;
}

static int list_names(struct kb_repo *r, struct name_list *nl, struct kb_err *err)
{
        int rc;

        memset(nl, 0, sizeof(*nl));
        rc = kb_repo_list(r, KB_OBJ_LOCK, collect_name, nl, err);
        if (rc == -ENOMEM)
                rc = kb_err_set(err, rc, "out of memory listing locks");
        if (rc < 0) {
                free(nl->names);
                nl->names = NULL;
        }
        return rc;
}

static void describe(const struct kb_lock_info *i, char *out, size_t len)
{
        char t[32] = "?";
        time_t s = (time_t)(i->created_ns / 1000000000);
        struct tm tm;

        if (gmtime_r(&s, &tm))
                strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%SZ", &tm);
        /* A long host name may cut the message short; it is only a description. */
        if (snprintf(out, len, "%s lock %.8s of %s (pid %lld on %s, since %s; %s)",
                     i->exclusive ? "an exclusive" : "a shared", i->name,
                     i->command[0] ? i->command : "?", (long long)i->pid, i->host, t,
                     i->state) >= (int)len)
                out[len - 1] = '\0';
}

/* One attempt: after our record is written, is any other record in the way? Fills `blocker`
 * with a description of the first conflicting holder. */
static int find_conflict(struct kb_lock *l, const char *ours, const struct kb_lock_opts *o,
                         char *blocker, size_t blen, int *nconflicts, struct kb_err *err)
{
        struct name_list nl;
        struct kb_lock_info info;
        uint8_t holder[HOLDER_LEN];
        int rc;

        *nconflicts = 0;
        rc = list_names(l->r, &nl, err);
        if (rc < 0)
                return rc;
        for (size_t i = 0; i < nl.n; i++) {
                if (strcmp(nl.names[i], ours) == 0)
                        continue;
                rc = read_info(l->r, nl.names[i], &l->me, l->stale_ms, &info, holder, err);
                if (rc == KB_ENOTFOUND) {
                        rc = 0;
                        continue;
                }
                if (rc < 0)
                        break;
                if (memcmp(holder, l->holder, HOLDER_LEN) == 0)
                        continue;
                if (info.stale) {
                        char desc[400], msg[480];

                        describe(&info, desc, sizeof(desc));
                        snprintf(msg, sizeof(msg), "ignoring %s; 'kbackup unlock' removes it",
                                 desc);
                        if (o->notify && !l->stale_reported)
                                o->notify(msg, o->arg);
                        continue;
                }
                if (l->exclusive || info.exclusive) {
                        if ((*nconflicts)++ == 0)
                                describe(&info, blocker, blen);
                }
        }
        free(nl.names);
        return rc;
}

static void *refresher(void *arg)
{
        struct kb_lock *l = arg;
        char fresh[KB_ID_HEX_LEN + 1], old[KB_ID_HEX_LEN + 1];
        struct kb_err err = {0};
        uint64_t size;
        int rc;

        pthread_mutex_lock(&l->mu);
        while (!l->stop) {
                struct timespec until;
                uint64_t wait_ms = l->refresh_ms;

                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_sec += (time_t)(wait_ms / 1000);
                until.tv_nsec += (long)(wait_ms % 1000) * 1000000;
                if (until.tv_nsec >= 1000000000) {
                        until.tv_sec++;
                        until.tv_nsec -= 1000000000;
                }
                while (!l->stop && pthread_cond_timedwait(&l->cond, &l->mu, &until) != ETIMEDOUT)
                        ;
                if (l->stop || l->lost)
                        break;
                memcpy(old, l->name, sizeof(old));
                pthread_mutex_unlock(&l->mu);

                /* A record someone removed (`unlock --all`) means the lock is gone: do not
                 * quietly take it again, a prune may be running now. */
                rc = kb_backend_stat(l->r->be, KB_OBJ_LOCK, old, &size, &err);
                if (rc == KB_ENOTFOUND) {
                        pthread_mutex_lock(&l->mu);
                        l->lost = 1;
                        snprintf(l->lost_why, sizeof(l->lost_why),
                                 "the repository lock %.8s was removed by someone else", old);
                        break;
                }
                rc = rc < 0 ? rc : write_ours(l, fresh, &err);
                pthread_mutex_lock(&l->mu);
                if (rc == 0) {
                        memcpy(l->name, fresh, sizeof(l->name));
                        l->last_ok_ms = mono_ms();
                        pthread_mutex_unlock(&l->mu);
                        kb_backend_remove(l->r->be, KB_OBJ_LOCK, old, NULL);
                        pthread_mutex_lock(&l->mu);
                }
                /* On failure keep going: kb_lock_check declares the lock lost once refreshes
                 * have failed for too long. */
        }
        pthread_mutex_unlock(&l->mu);
        return NULL;
}

int kb_lock_check(struct kb_lock *l, struct kb_err *err)
{
        char name[KB_ID_HEX_LEN + 1];
        uint64_t since, size, limit;
        int rc;

        if (!l)
                return 0;
        pthread_mutex_lock(&l->mu);
        since = mono_ms() - l->last_ok_ms;
        /* Others call us stale after stale_ms; stop a refresh interval before that. */
        limit = l->stale_ms > l->refresh_ms ? l->stale_ms - l->refresh_ms : l->stale_ms;
        if (!l->lost && since >= limit) {
                l->lost = 1;
                snprintf(l->lost_why, sizeof(l->lost_why),
                         "the repository lock could not be refreshed for %llus",
                         (unsigned long long)(since / 1000));
        }
        memcpy(name, l->name, sizeof(name));
        rc = l->lost ? -ESTALE : 0;
        if (rc < 0)
                kb_err_set(err, rc, "%s; stopping before writing anything that depends on it",
                           l->lost_why);
        pthread_mutex_unlock(&l->mu);
        if (rc < 0)
                return rc;
        rc = kb_backend_stat(l->r->be, KB_OBJ_LOCK, name, &size, err);
        if (rc == KB_ENOTFOUND) {
                pthread_mutex_lock(&l->mu);
                /* The refresher may have just replaced it: only a current name that is gone
                 * counts. */
                if (strcmp(name, l->name) == 0) {
                        l->lost = 1;
                        snprintf(l->lost_why, sizeof(l->lost_why),
                                 "the repository lock %.8s was removed by someone else", name);
                        rc = kb_err_set(err, -ESTALE, "%s", l->lost_why);
                } else {
                        rc = 0;
                }
                pthread_mutex_unlock(&l->mu);
        } else if (rc < 0) {
                kb_err_prefix(err, "checking the repository lock: ");
        }
        return rc;
}

static int guard(void *arg, struct kb_err *err)
{
        return kb_lock_check(arg, err);
}

static void lock_free(struct kb_lock *l)
{
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cond);
        free(l);
}

static void sleep_ms(uint64_t ms)
{
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

int kb_lock_acquire(struct kb_repo *r, const struct kb_lock_opts *o, struct kb_lock **out,
                    struct kb_err *err)
{
        char name[KB_ID_HEX_LEN + 1], blocker[512] = "";
        uint64_t start = mono_ms(), backoff = BACKOFF_MIN_MS;
        struct kb_lock *l;
        int rc, nconf = 0, waited = 0;

        *out = NULL;
        if (r->read_only)
                return 0; /* nothing can change a read-only repository under us */
        l = calloc(1, sizeof(*l));
        if (!l)
                return kb_err_set(err, -ENOMEM, "out of memory");
        pthread_mutex_init(&l->mu, NULL);
        pthread_cond_init(&l->cond, NULL);
        l->r = r;
        l->exclusive = !!o->exclusive;
        snprintf(l->command, sizeof(l->command), "%s", o->command ? o->command : "");
        kb_crypto_random(l->holder, sizeof(l->holder));
        l->created_ns = wall_ns();
        l->stale_ms = o->stale_ms ? o->stale_ms : KB_LOCK_DEFAULT_STALE_MS;
        l->refresh_ms = o->refresh_ms ? o->refresh_ms : l->stale_ms / 6;
        if (l->refresh_ms == 0)
                l->refresh_ms = 1;
        ident_init(&l->me);

        for (;;) {
                rc = write_ours(l, name, err);
                if (rc < 0) {
                        kb_err_prefix(err, "cannot take the repository lock: ");
                        lock_free(l);
                        return rc;
                }
                rc = find_conflict(l, name, o, blocker, sizeof(blocker), &nconf, err);
                l->stale_reported = 1;
                if (rc == 0 && nconf == 0)
                        break;
                kb_backend_remove(r->be, KB_OBJ_LOCK, name, NULL);
                if (rc < 0) {
                        lock_free(l);
                        return rc;
                }
                if (mono_ms() - start >= o->wait_ms) {
                        rc = kb_err_set(err, -EBUSY, "the repository is locked by %s%s%s", blocker,
                                        nconf > 1 ? " and other holders" : "",
                                        o->wait_ms ? " (gave up waiting)" : "");
                        lock_free(l);
                        return rc;
                }
                if (!waited && o->notify) {
                        char msg[600];

                        snprintf(msg, sizeof(msg), "waiting for %s", blocker);
                        o->notify(msg, o->arg);
                }
                waited = 1;
                /* Jitter keeps two exclusive lockers from backing off in step forever. */
                sleep_ms(backoff / 2 + (uint64_t)randombytes_uniform((uint32_t)(backoff / 2 + 1)));
                if (backoff < BACKOFF_MAX_MS)
                        backoff *= 2;
        }
        memcpy(l->name, name, sizeof(l->name));
        l->last_ok_ms = mono_ms();
        if (pthread_create(&l->thread, NULL, refresher, l) != 0) {
                kb_backend_remove(r->be, KB_OBJ_LOCK, name, NULL);
                lock_free(l);
                return kb_err_set(err, -EAGAIN, "cannot start the lock refresh thread");
        }
        l->thread_started = 1;
        r->guard = guard;
        r->guard_arg = l;
        *out = l;
        return 0;
}

int kb_lock_release(struct kb_lock *l, struct kb_err *err)
{
        int rc;

        if (!l)
                return 0;
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cond);
        pthread_mutex_unlock(&l->mu);
        if (l->thread_started)
                pthread_join(l->thread, NULL);
        if (l->r->guard_arg == l) {
                l->r->guard = NULL;
                l->r->guard_arg = NULL;
        }
        rc = kb_backend_remove(l->r->be, KB_OBJ_LOCK, l->name, err);
        lock_free(l);
        return rc;
}

int kb_lock_list(struct kb_repo *r, uint64_t stale_ms, struct kb_lock_info **out, size_t *n,
                 struct kb_err *err)
{
        struct name_list nl;
        struct kb_lock_info *v;
        struct ident me;
        size_t k = 0;
        int rc;

        *out = NULL;
        *n = 0;
        ident_init(&me);
        rc = list_names(r, &nl, err);
        if (rc < 0)
                return rc;
        v = calloc(nl.n ? nl.n : 1, sizeof(*v));
        if (!v) {
                free(nl.names);
                return kb_err_set(err, -ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < nl.n; i++) {
                rc = read_info(r, nl.names[i], &me, stale_ms ? stale_ms : KB_LOCK_DEFAULT_STALE_MS,
                               &v[k], NULL, err);
                if (rc == KB_ENOTFOUND) {
                        rc = 0;
                        continue;
                }
                if (rc < 0)
                        break;
                k++;
        }
        free(nl.names);
        if (rc < 0) {
                free(v);
                return rc;
        }
        *out = v;
        *n = k;
        return 0;
}

int kb_lock_remove(struct kb_repo *r, const char *name, struct kb_err *err)
{
        if (r->read_only)
                return kb_err_set(err, -EROFS, "repository is opened read-only");
        return kb_backend_remove(r->be, KB_OBJ_LOCK, name, err);
}
