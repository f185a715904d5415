/* test_metrics.c - Prometheus metrics of a run: exact rendering, label escaping and UTF-8 repair,
 * parsing back, the textfile written atomically (readers never see a partial file, concurrent
 * writers lose nothing), and a failed run keeping the time of the last success. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics.h"

#define LAST_SUCCESS "kbackup_last_success_timestamp_seconds"

static char dir[64];

static void setup(void)
{
        snprintf(dir, sizeof(dir), "/tmp/kbtest-metrics.XXXXXX");
        cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        cr_assert_eq(system(cmd), 0);
}

TestSuite(metrics, .init = setup, .fini = teardown);

static char *render(const struct kb_metrics *m)
{
        struct kb_buf b = KB_BUF_INIT;

        cr_assert_eq(kb_metrics_render(m, &b), 0);
        cr_assert_eq(kb_buf_append(&b, "", 1), 0);
        return (char *)b.data;
}

static char *slurp(const char *path)
{
        static char buf[1 << 16];
        FILE *f = fopen(path, "r");
        size_t n;

        cr_assert_not_null(f, "cannot open %s", path);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        return buf;
}

static double value(const struct kb_metrics *m, const char *name, const char *command,
                    const char *source)
{
        struct kb_label l[] = {{"command", command}, {"kind", "volume"}, {"source", source}};
        double v = -1;

        cr_assert_eq(kb_metrics_get(m, name, l, 3, &v), 0, "%s{%s,%s} missing", name, command,
                     source);
        return v;
}

static int has(const struct kb_metrics *m, const char *name, const char *command,
               const char *source)
{
        struct kb_label l[] = {{"command", command}, {"kind", "volume"}, {"source", source}};
        double v;

        return kb_metrics_get(m, name, l, 3, &v) == 0;
}

static struct kb_metrics *load(const char *path)
{
        struct kb_metrics *m = kb_metrics_new();
        struct kb_err e = {0};
        char *text = slurp(path);

        cr_assert_eq(kb_metrics_parse(m, text, strlen(text), &e), 0, "%s", e.msg);
        return m;
}

/* One run's series as report.c makes them. */
static struct kb_metrics *run(const char *command, const char *source, int ok, double t,
                              double bytes)
{
        struct kb_label l[] = {{"command", command}, {"kind", "volume"}, {"source", source}};
        struct kb_metrics *m = kb_metrics_new();

        cr_assert_eq(kb_metrics_set(m, "kbackup_last_run_timestamp_seconds", "end", l, 3, t), 0);
        if (ok)
                cr_assert_eq(kb_metrics_set(m, LAST_SUCCESS, "success", l, 3, t), 0);
        cr_assert_eq(kb_metrics_set(m, "kbackup_last_run_success", "ok", l, 3, ok), 0);
        if (bytes >= 0)
                cr_assert_eq(kb_metrics_set(m, "kbackup_bytes_read", "bytes", l, 3, bytes), 0);
        return m;
}

Test(metrics, renders_the_text_format_exactly)
{
        struct kb_metrics *m = kb_metrics_new();
        struct kb_label a[] = {{"kind", "volume"}, {"command", "backup"}};
        struct kb_label b[] = {{"command", "check"}, {"kind", ""}};
        char *text;

        cr_assert_eq(kb_metrics_set(m, "kbackup_files", "Files processed", a, 2, 42), 0);
        cr_assert_eq(kb_metrics_set(m, "kbackup_duration_seconds", "Run time\\s", a, 2, 1.5), 0);
        cr_assert_eq(kb_metrics_set(m, "kbackup_files", NULL, b, 2, 7), 0);
        cr_assert_eq(kb_metrics_set(m, "kbackup_files", NULL, a, 2, 43), 0, "replaces");
        cr_assert_eq(kb_metrics_set(m, "kbackup_big", "b", NULL, 0, 1795717460.0), 0);
        cr_assert_eq(kb_metrics_set(m, "kbackup_frac", "f", NULL, 0, 0.1), 0);
        text = render(m);
        cr_assert_str_eq(text, "# HELP kbackup_files Files processed\n"
                               "# TYPE kbackup_files gauge\n"
                               "kbackup_files{command=\"backup\",kind=\"volume\"} 43\n"
                               "kbackup_files{command=\"check\",kind=\"\"} 7\n"
                               "# HELP kbackup_duration_seconds Run time\\\\s\n"
                               "# TYPE kbackup_duration_seconds gauge\n"
                               "kbackup_duration_seconds{command=\"backup\",kind=\"volume\"} 1.5\n"
                               "# HELP kbackup_big b\n"
                               "# TYPE kbackup_big gauge\n"
                               "kbackup_big 1795717460\n"
                               "# HELP kbackup_frac f\n"
                               "# TYPE kbackup_frac gauge\n"
                               "kbackup_frac 0.1\n");
        free(text);
        kb_metrics_free(m);
}

Test(metrics, rejects_bad_names)
{
        struct kb_metrics *m = kb_metrics_new();
        struct kb_label dup[] = {{"a", "1"}, {"a", "2"}};
        struct kb_label bad[] = {{"1a", "x"}};
        struct kb_label reserved[] = {{"__name__", "x"}};

        cr_assert_eq(kb_metrics_set(m, "kbackup-files", NULL, NULL, 0, 1), -EINVAL);
        cr_assert_eq(kb_metrics_set(m, "", NULL, NULL, 0, 1), -EINVAL);
        cr_assert_eq(kb_metrics_set(m, "x", NULL, dup, 2, 1), -EINVAL);
        cr_assert_eq(kb_metrics_set(m, "x", NULL, bad, 1, 1), -EINVAL);
        cr_assert_eq(kb_metrics_set(m, "x", NULL, reserved, 1, 1), -EINVAL);
        kb_metrics_free(m);
}

Test(metrics, escapes_label_values_and_repairs_utf8)
{
        struct kb_metrics *m = kb_metrics_new(), *back = kb_metrics_new();
        struct kb_label l[] = {{"source", "/mnt/a\\b\"c\nd\xff\xc3\xa9"}};
        struct kb_err e = {0};
        double v = 0;
        char *text;

        cr_assert_eq(kb_metrics_set(m, "kbackup_files", "f", l, 1, 3), 0);
        text = render(m);
        /* \xff is not UTF-8: it becomes U+00FF; the valid é stays. */
        cr_assert_str_eq(text,
                         "# HELP kbackup_files f\n# TYPE kbackup_files gauge\n"
                         "kbackup_files{source=\"/mnt/a\\\\b\\\"c\\nd\xc3\xbf\xc3\xa9\"} 3\n");
        cr_assert_eq(kb_metrics_parse(back, text, strlen(text), &e), 0, "%s", e.msg);
        l[0].value = "/mnt/a\\b\"c\nd\xc3\xbf\xc3\xa9";
        cr_assert_eq(kb_metrics_get(back, "kbackup_files", l, 1, &v), 0, "parsed back unescaped");
        cr_assert_eq(v, 3);
        free(text);
        kb_metrics_free(m);
        kb_metrics_free(back);
}

Test(metrics, parses_what_it_renders_and_refuses_garbage)
{
        static const char *const garbage[] = {"# HELP x y\nx 1\nx{a=\"1\" 2\n", "x one\n",
                                              "x{a=1} 2\n", "x{a=\"1\"\n", "{a=\"1\"} 1\n"};
        struct kb_metrics *m = run("backup", "/data", 1, 1700000000, 123456789012.0), *back;
        struct kb_err e = {0};
        char *text = render(m), *again;

        back = kb_metrics_new();
        cr_assert_eq(kb_metrics_parse(back, text, strlen(text), &e), 0, "%s", e.msg);
        again = render(back);
        cr_assert_str_eq(again, text, "render(parse(render)) differs");
        cr_assert_eq(value(back, "kbackup_bytes_read", "backup", "/data"), 123456789012.0);
        free(again);
        kb_metrics_free(back);

        back = kb_metrics_new();
        for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
                cr_assert_eq(kb_metrics_parse(back, garbage[i], strlen(garbage[i]), &e),
                             KB_ECORRUPT, "accepted: %s", garbage[i]);
                cr_assert(strstr(e.msg, "line "), "%s", e.msg);
        }
        cr_assert_eq(kb_metrics_parse(back, garbage[0], strlen(garbage[0]), &e), KB_ECORRUPT);
        cr_assert(strstr(e.msg, "line 3"), "%s", e.msg);
        kb_metrics_free(back);
        free(text);
        kb_metrics_free(m);
}

/* Only the metrics file itself is left in the directory: no temp file. */
static void assert_alone(const char *name)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        int n = 0;

        cr_assert_not_null(d);
        while ((e = readdir(d)) != NULL) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                        continue;
                cr_assert_str_eq(e->d_name, name, "stray file %s", e->d_name);
                n++;
        }
        closedir(d);
        cr_assert_eq(n, 1);
}

Test(metrics, writes_the_file_and_a_failed_run_keeps_the_last_success)
{
        char path[128];
        struct kb_metrics *ok = run("backup", "/data", 1, 1000, 500);
        struct kb_metrics *other = run("check", "", 1, 1100, -1);
        struct kb_metrics *failed = run("backup", "/data", 0, 2000, -1), *f;
        struct kb_err e = {0};
        struct stat st;

        snprintf(path, sizeof(path), "%s/kbackup.prom", dir);
        cr_assert_eq(kb_metrics_write_file(ok, path, LAST_SUCCESS, &e), 0, "%s", e.msg);
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0644, "node-exporter must be able to read it");
        cr_assert_eq(kb_metrics_write_file(other, path, LAST_SUCCESS, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_metrics_write_file(failed, path, LAST_SUCCESS, &e), 0, "%s", e.msg);
        assert_alone("kbackup.prom");

        f = load(path);
        cr_assert_eq(value(f, LAST_SUCCESS, "backup", "/data"), 1000, "last success kept");
        cr_assert_eq(value(f, "kbackup_last_run_success", "backup", "/data"), 0);
        cr_assert_eq(value(f, "kbackup_last_run_timestamp_seconds", "backup", "/data"), 2000);
        cr_assert_not(has(f, "kbackup_bytes_read", "backup", "/data"),
                      "a metric the failed run did not report is not left from the old run");
        cr_assert_eq(value(f, LAST_SUCCESS, "check", ""), 1100, "another command's series stay");
        cr_assert_eq(value(f, "kbackup_last_run_success", "check", ""), 1);
        kb_metrics_free(f);

        /* The next success replaces it. */
        cr_assert_eq(kb_metrics_write_file(ok, path, LAST_SUCCESS, &e), 0, "%s", e.msg);
        f = load(path);
        cr_assert_eq(value(f, "kbackup_last_run_success", "backup", "/data"), 1);
        cr_assert_eq(value(f, "kbackup_bytes_read", "backup", "/data"), 500);
        kb_metrics_free(f);
        kb_metrics_free(ok);
        kb_metrics_free(other);
        kb_metrics_free(failed);
}

Test(metrics, a_damaged_previous_file_is_replaced)
{
        char path[128];
        struct kb_metrics *failed = run("backup", "/data", 0, 2000, -1), *f;
        struct kb_err e = {0};
        FILE *fp;

        snprintf(path, sizeof(path), "%s/kbackup.prom", dir);
        fp = fopen(path, "w");
        fputs(LAST_SUCCESS "{command=\"backup\",kind=\"volume\",source=\"/data\"} 5\ngarbage\n",
              fp);
        fclose(fp);
        cr_assert_eq(kb_metrics_write_file(failed, path, LAST_SUCCESS, &e), 0, "%s", e.msg);
        f = load(path);
        cr_assert_not(has(f, LAST_SUCCESS, "backup", "/data"), "nothing taken from garbage");
        cr_assert_eq(value(f, "kbackup_last_run_success", "backup", "/data"), 0);
        kb_metrics_free(f);
        kb_metrics_free(failed);
        cr_assert_eq(kb_metrics_write_file(failed = run("x", "y", 1, 1, 1), "/nonexistent-dir/m",
                                           LAST_SUCCESS, &e),
                     -ENOENT);
        cr_assert(strstr(e.msg, "/nonexistent-dir/m"), "%s", e.msg);
        kb_metrics_free(failed);
}

/* Is any of the children still running (without reaping them)? */
static int running(const pid_t *pids, int n)
{
        for (int i = 0; i < n; i++) {
                siginfo_t si = {0};

                if (waitid(P_PID, (id_t)pids[i], &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                    si.si_pid == 0)
                        return 1;
        }
        return 0;
}

Test(metrics, concurrent_writers_lose_nothing_and_readers_see_whole_files)
{
        enum { WRITERS = 4, ROUNDS = 40 };
        char path[128];
        pid_t pids[WRITERS];
        int reads = 0;

        snprintf(path, sizeof(path), "%s/kbackup.prom", dir);
        for (int w = 0; w < WRITERS; w++) {
                pids[w] = fork();
                cr_assert_geq(pids[w], 0);
                if (pids[w] == 0) {
                        char src[16];
                        struct kb_err e = {0};

                        snprintf(src, sizeof(src), "/vol%d", w);
                        for (int i = 0; i < ROUNDS; i++) {
                                struct kb_metrics *m = run("backup", src, i % 2, i, i * 1000.0);

                                if (kb_metrics_write_file(m, path, LAST_SUCCESS, &e) < 0)
                                        _exit(1);
                                kb_metrics_free(m);
                        }
                        _exit(0);
                }
        }
        /* Meanwhile, every version of the file that can be opened parses completely. */
        for (int i = 0; i < 200000 && running(pids, WRITERS); i++) {
                int fd = open(path, O_RDONLY);
                char *text;
                struct kb_metrics *m;
                struct kb_err e = {0};

                if (fd < 0)
                        continue;
                close(fd);
                text = slurp(path);
                m = kb_metrics_new();
                cr_assert_eq(kb_metrics_parse(m, text, strlen(text), &e), 0, "partial file: %s",
                             e.msg);
                cr_assert(text[0] == '\0' || text[strlen(text) - 1] == '\n', "cut short");
                kb_metrics_free(m);
                reads++;
        }
        for (int w = 0; w < WRITERS; w++) {
                int st = 0;

                cr_assert_eq(waitpid(pids[w], &st, 0), pids[w]);
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d failed", w);
        }
        cr_assert_gt(reads, 0);
        {
                struct kb_metrics *f = load(path);

                for (int w = 0; w < WRITERS; w++) {
                        char src[16];

                        snprintf(src, sizeof(src), "/vol%d", w);
                        /* Round ROUNDS-1 (odd) succeeded: its own values, nobody else's. */
                        cr_assert_eq(value(f, "kbackup_last_run_success", "backup", src), 1);
                        cr_assert_eq(value(f, LAST_SUCCESS, "backup", src), ROUNDS - 1);
                        cr_assert_eq(value(f, "kbackup_bytes_read", "backup", src),
                                     (ROUNDS - 1) * 1000.0);
                }
                kb_metrics_free(f);
        }
        assert_alone("kbackup.prom");
}
