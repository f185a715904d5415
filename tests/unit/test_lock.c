/* test_lock.c - repository locks: conflicts, waiting, refresh, stale detection (dead holder on
 * this host, old record of another host), a lost lock stopping a snapshot, read-only repos. */
#include "ops_testlib.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "lock.h"

TestSuite(lock, .init = ops_setup, .fini = ops_teardown);

static int take(struct kb_repo *r, int exclusive, uint64_t wait_ms, struct kb_lock **l)
{
        struct kb_lock_opts o = {.exclusive = exclusive, .command = "test", .wait_ms = wait_ms};
        struct kb_err e = {0};

        return kb_lock_acquire(r, &o, l, &e);
}

static int64_t now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

Test(lock, shared_and_exclusive_conflict)
{
        struct kb_repo *r = ops_open();
        struct kb_lock *a = NULL, *b = NULL, *x = NULL;
        struct kb_err e = {0};

        cr_assert_eq(take(r, 0, 0, &a), 0);
        cr_assert_eq(take(r, 0, 0, &b), 0, "two shared locks coexist");
        cr_assert_eq(ops_count(r, KB_OBJ_LOCK), 2);
        cr_assert_eq(take(r, 1, 0, &x), -EBUSY);
        cr_assert_null(x);
        cr_assert_eq(ops_count(r, KB_OBJ_LOCK), 2, "a failed attempt leaves no record");
        cr_assert_eq(kb_lock_release(a, &e), 0);
        cr_assert_eq(take(r, 1, 0, &x), -EBUSY);
        cr_assert_eq(kb_lock_release(b, &e), 0);
        cr_assert_eq(take(r, 1, 0, &x), 0);
        cr_assert_eq(take(r, 0, 0, &a), -EBUSY, "exclusive blocks shared");
        cr_assert_eq(take(r, 1, 0, &b), -EBUSY, "exclusive blocks exclusive");
        cr_assert_eq(kb_lock_release(x, &e), 0);
        cr_assert_eq(ops_count(r, KB_OBJ_LOCK), 0);
        kb_repo_close(r);
}

Test(lock, busy_message_names_the_holder)
{
        struct kb_repo *r = ops_open();
        struct kb_lock_opts o = {.exclusive = 1, .command = "prune"};
        struct kb_lock *x = NULL, *y = NULL;
        struct kb_err e = {0};

        cr_assert_eq(kb_lock_acquire(r, &o, &x, &e), 0);
        cr_assert_eq(take(r, 0, 0, &y), -EBUSY);
        o.exclusive = 0;
        cr_assert_eq(kb_lock_acquire(r, &o, &y, &e), -EBUSY);
        cr_expect(strstr(e.msg, "exclusive lock") && strstr(e.msg, "of prune") &&
                      strstr(e.msg, "pid"),
                  "%s", e.msg);
        kb_lock_release(x, NULL);
        kb_repo_close(r);
}

struct delayed {
        struct kb_lock *l;
        int ms;
};

static void *release_later(void *arg)
{
        struct delayed *d = arg;
        struct timespec ts = {0, d->ms * 1000000L};

        nanosleep(&ts, NULL);
        kb_lock_release(d->l, NULL);
        return NULL;
}

Test(lock, waits_for_the_holder)
{
        struct kb_repo *r = ops_open(), *r2 = ops_open();
        struct delayed d = {NULL, 400};
        struct kb_lock *x = NULL;
        struct timespec t0, t1;
        pthread_t th;
        double el;

        cr_assert_eq(take(r, 1, 0, &d.l), 0);
        pthread_create(&th, NULL, release_later, &d);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        cr_assert_eq(take(r2, 0, 10000, &x), 0, "acquired once the holder let go");
        clock_gettime(CLOCK_MONOTONIC, &t1);
        pthread_join(th, NULL);
        el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        cr_expect_geq(el, 0.35, "waited %.3fs", el);
        cr_expect_lt(el, 8.0);
        kb_lock_release(x, NULL);
        /* And a bounded wait gives up. */
        cr_assert_eq(take(r, 1, 0, &d.l), 0);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        cr_assert_eq(take(r2, 0, 300, &x), -EBUSY);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        cr_expect_geq(el, 0.3);
        kb_lock_release(d.l, NULL);
        kb_repo_close(r);
        kb_repo_close(r2);
}

Test(lock, refresh_replaces_the_record)
{
        struct kb_repo *r = ops_open();
        struct kb_lock_opts o = {.command = "test", .stale_ms = 3000, .refresh_ms = 100};
        struct kb_lock_info *v = NULL, first;
        struct kb_lock *l = NULL;
        struct kb_err e = {0};
        struct timespec ts = {0, 450 * 1000000L};
        size_t n = 0;

        cr_assert_eq(kb_lock_acquire(r, &o, &l, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_lock_list(r, 0, &v, &n, &e), 0);
        cr_assert_eq(n, 1);
        first = v[0];
        free(v);
        nanosleep(&ts, NULL);
        cr_assert_eq(kb_lock_list(r, 0, &v, &n, &e), 0);
        cr_assert_eq(n, 1, "the old record is removed after a refresh");
        cr_expect_str_neq(v[0].name, first.name, "a refresh writes a new record");
        cr_expect_gt(v[0].time_ns, first.time_ns);
        cr_expect_eq(v[0].created_ns, first.created_ns, "same holder, same start");
        cr_expect_eq(v[0].stale, 0);
        free(v);
        cr_expect_eq(kb_lock_check(l, &e), 0, "%s", e.msg);
        kb_lock_release(l, NULL);
        cr_expect_eq(ops_count(r, KB_OBJ_LOCK), 0);
        kb_repo_close(r);
}

/* A record as another process would have written it. */
static void write_record(struct kb_repo *r, const char *host, int64_t pid, int64_t time_ns,
                         int exclusive, char name[KB_ID_HEX_LEN + 1])
{
        Kbackup__Lock rec = KBACKUP__LOCK__INIT;
        char ns[64] = "", boot[64] = "";
        uint8_t holder[16];
        struct kb_err e = {0};
        FILE *f;
        ssize_t k;

        k = readlink("/proc/self/ns/pid", ns, sizeof(ns) - 1);
        ns[k > 0 ? k : 0] = '\0';
        f = fopen("/proc/sys/kernel/random/boot_id", "r");
        if (f) {
                if (fgets(boot, sizeof(boot), f))
                        boot[strcspn(boot, "\n")] = '\0';
                fclose(f);
        }
        randombytes_buf(holder, sizeof(holder));
        rec.version = 1;
        rec.exclusive = exclusive;
        rec.host = (char *)host;
        rec.pid = pid;
        rec.pid_ns = ns;
        rec.boot_id = boot;
        rec.created_unix_nsec = time_ns;
        rec.time_unix_nsec = time_ns;
        rec.username = "someone";
        rec.command = "backup";
        rec.holder.data = holder;
        rec.holder.len = sizeof(holder);
        cr_assert_eq(kb_lock_write_record(r, &rec, name, &e), 0, "%s", e.msg);
}

static char notes[2048];

static void note(const char *msg, void *arg)
{
        (void)arg;
        strncat(notes, msg, sizeof(notes) - strlen(notes) - 2);
        strcat(notes, "\n");
}

Test(lock, stale_record_of_another_host_is_ignored_and_listed)
{
        struct kb_repo *r = ops_open();
        struct kb_lock_opts o = {.exclusive = 1, .command = "prune", .notify = note};
        struct kb_lock_info *v = NULL;
        struct kb_lock *l = NULL;
        char old[KB_ID_HEX_LEN + 1], fresh[KB_ID_HEX_LEN + 1];
        struct kb_err e = {0};
        size_t n = 0;

        /* Not refreshed for 2 hours: stale under the default 30 minutes. */
        write_record(r, "elsewhere", 4242, now_ns() - 7200LL * 1000000000, 1, old);
        notes[0] = '\0';
        cr_assert_eq(kb_lock_acquire(r, &o, &l, &e), 0, "%s", e.msg);
        cr_expect(strstr(notes, "ignoring") && strstr(notes, "not refreshed for 2h"), "%s", notes);
        kb_lock_release(l, NULL);

        /* Refreshed a minute ago: active, it blocks. A shorter stale time makes it stale. */
        write_record(r, "elsewhere", 4243, now_ns() - 60LL * 1000000000, 0, fresh);
        cr_assert_eq(kb_lock_acquire(r, &o, &l, &e), -EBUSY);
        o.stale_ms = 30000;
        cr_assert_eq(kb_lock_acquire(r, &o, &l, &e), 0, "%s", e.msg);
        kb_lock_release(l, NULL);

        cr_assert_eq(kb_lock_list(r, 0, &v, &n, &e), 0);
        cr_assert_eq(n, 2);
        for (size_t i = 0; i < n; i++) {
                cr_expect_str_eq(v[i].host, "elsewhere");
                cr_expect_eq(v[i].stale, strcmp(v[i].name, old) == 0, "%s: %s", v[i].name,
                             v[i].state);
        }
        free(v);
        cr_assert_eq(kb_lock_remove(r, old, &e), 0);
        cr_assert_eq(ops_count(r, KB_OBJ_LOCK), 1);
        kb_repo_close(r);
}

Test(lock, dead_holder_on_this_host_is_stale_at_once)
{
        struct kb_repo *r = ops_open();
        struct kb_lock_info *v = NULL;
        struct kb_lock *l = NULL;
        char name[KB_ID_HEX_LEN + 1], host[256] = "";
        struct kb_err e = {0};
        size_t n = 0;
        pid_t child;

        gethostname(host, sizeof(host) - 1);
        child = fork();
        if (child == 0)
                _exit(0);
        waitpid(child, NULL, 0);
        /* Fresh time, but its process is gone. */
        write_record(r, host, child, now_ns(), 1, name);
        cr_assert_eq(kb_lock_list(r, 0, &v, &n, &e), 0);
        cr_assert_eq(n, 1);
        cr_expect_eq(v[0].stale, 1, "%s", v[0].state);
        cr_expect(strstr(v[0].state, "is gone"), "%s", v[0].state);
        free(v);
        cr_assert_eq(take(r, 1, 0, &l), 0, "a dead holder blocks nobody");
        kb_lock_release(l, NULL);

        /* A live process on this host (us) with an old refresh time is still active. */
        write_record(r, host, getpid(), now_ns() - 7200LL * 1000000000, 1, name);
        cr_assert_eq(take(r, 0, 0, &l), -EBUSY);
        kb_repo_close(r);
}

Test(lock, lost_lock_stops_a_snapshot)
{
        struct kb_repo *r = ops_open();
        Kbackup__Snapshot s = KBACKUP__SNAPSHOT__INIT;
        struct kb_lock_info *v = NULL;
        struct kb_lock *l = NULL;
        char id[KB_ID_HEX_LEN + 1];
        struct kb_err e = {0};
        size_t n = 0;

        cr_assert_eq(take(r, 0, 0, &l), 0);
        s.kind = "volume";
        cr_assert_eq(kb_repo_snapshot_save(r, &s, id, &e), 0, "%s", e.msg);
        /* Someone runs `unlock --all`. */
        cr_assert_eq(kb_lock_list(r, 0, &v, &n, &e), 0);
        cr_assert_eq(n, 1);
        cr_assert_eq(kb_lock_remove(r, v[0].name, &e), 0);
        free(v);
        cr_assert_eq(kb_lock_check(l, &e), -ESTALE);
        cr_expect(strstr(e.msg, "removed"), "%s", e.msg);
        s.time_unix_nsec = 1;
        cr_assert_eq(kb_repo_snapshot_save(r, &s, id, &e), -ESTALE, "no snapshot without lock");
        cr_assert_eq(ops_count(r, KB_OBJ_SNAPSHOT), 1);
        kb_lock_release(l, NULL);
        /* Released: the repository no longer asks. */
        cr_assert_eq(kb_repo_snapshot_save(r, &s, id, &e), 0, "%s", e.msg);
        kb_repo_close(r);
}

Test(lock, refresh_failure_for_too_long_loses_the_lock)
{
        struct kb_repo *r = ops_open();
        struct kb_lock_opts o = {.command = "test", .stale_ms = 600, .refresh_ms = 200};
        struct kb_lock *l = NULL;
        struct kb_err e = {0};
        char locks[160];
        struct timespec ts = {0, 700 * 1000000L};

        cr_assert_eq(kb_lock_acquire(r, &o, &l, &e), 0);
        /* The lock directory cannot be written any more: refreshes fail. */
        snprintf(locks, sizeof(locks), "%s/locks", ops_dir);
        cr_assert_eq(chmod(locks, 0500), 0);
        if (access(locks, W_OK) == 0) { /* root ignores modes: nothing to test here */
                chmod(locks, 0700);
                kb_lock_release(l, NULL);
                kb_repo_close(r);
                return;
        }
        nanosleep(&ts, NULL);
        cr_expect_eq(kb_lock_check(l, &e), -ESTALE);
        cr_expect(strstr(e.msg, "could not be refreshed"), "%s", e.msg);
        chmod(locks, 0700);
        kb_lock_release(l, NULL);
        kb_repo_close(r);
}

Test(lock, read_only_repository_needs_no_lock)
{
        struct kb_repo *r = ops_open_flags(KB_REPO_READ_ONLY);
        struct kb_lock *l = (struct kb_lock *)1;

        cr_assert_eq(take(r, 0, 0, &l), 0);
        cr_assert_null(l);
        cr_assert_eq(take(r, 1, 0, &l), 0);
        cr_assert_null(l);
        cr_assert_eq(ops_count(r, KB_OBJ_LOCK), 0, "nothing written");
        cr_assert_eq(kb_lock_release(l, NULL), 0);
        kb_repo_close(r);
}
