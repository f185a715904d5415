/* cmd_set.c - backup sets and cluster profiles: `kbackup backup --cluster NAME` (hooks, one etcd
 * snapshot and every volume of the profile, as one set) and `kbackup restore BACKUP --to-cluster
 * NAME` (the set's etcd keys into the profile's etcd, each volume into its mapped path). */
#include <errno.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backupset.h"
#include "cluster_config.h"
#include "etcd.h"
#include "keyrestore_cli.h"

static const char backup_help[] =
    "Usage: kbackup backup --cluster NAME [--tag KEY=VALUE]... [--config FILE] [--threads N]\n"
    "                      [--endpoints URLS --cacert F --cert F --key F --user U]\n"
    "                      [--pre-hook CMD] [--post-hook CMD] [--hook-timeout D]\n"
    "\n"
    "Back up a cluster profile of the config file as one backup set: run its pre_hook (a\n"
    "failure aborts: nothing is recorded), take one etcd snapshot and every listed volume, each\n"
    "a snapshot carrying the set id, then run its post_hook (always, also after a failure;\n"
    "a failing post hook is reported and the exit code is 3). If a member cannot be backed up,\n"
    "the members already recorded are removed again: a set is complete or absent.\n"
    "--pre-hook, --post-hook and --hook-timeout replace the profile's pre_hook, post_hook and\n"
    "hook_timeout. Hooks see the variables of docs/cli.md (KBACKUP_SOURCE is the profile name,\n"
    "KBACKUP_SNAPSHOT_ID the set id) plus KBACKUP_CLUSTER, KBACKUP_SET_ID and, for post,\n"
    "KBACKUP_SET_STATUS (ok/failed).\n"
    "\n"
    "Options:\n"
    "  --cluster NAME          the profile (clusters: NAME: in the config file)\n"
    "  --config FILE           config file (default $KBACKUP_CONFIG, else\n"
    "                          " KB_CONFIG_DEFAULT_PATH ")\n"
    "  --tag KEY=VALUE         a tag on every snapshot of the set (repeatable)\n"
    "  --threads N             worker threads (default: the usable CPUs)\n"
    "  --endpoints, --cacert, --cert, --key, --user, --timeout\n"
    "                          override the profile's etcd settings\n" CLI_HOOK_HELP
        CLI_OBSERVE_HELP "\n"
    "The set id is the last line of standard output.\n";

static const char restore_help[] =
    "Usage: kbackup restore BACKUP --to-cluster NAME [--namespace NS]... [--prefix P]...\n"
    "                       [--exclude P]... [--on-conflict skip|overwrite|fail] [--dry-run]\n"
    "                       [--from-cluster NAME] [--config FILE] [--threads N]\n"
    "\n"
    "Restore a backup set (BACKUP: a set id, a unique prefix, or 'latest') into the cluster\n"
    "profile NAME: the keys of its etcd snapshot into the profile's etcd endpoints, each volume\n"
    "into the path the profile maps its NAMESPACE/PVC to. A volume without a mapping is listed\n"
    "and skipped, never guessed; so is one whose target directory is not empty. With\n"
    "--namespace, only volumes of those namespaces. The repository is only read (a read-only\n"
    "replica works). Exit code 0 when everything selected was restored, 1 if anything failed,\n"
    "3 if some files or chunks failed.\n"
    "\n"
    "Options:\n"
    "  --to-cluster NAME       the target profile\n"
    "  --from-cluster NAME     with 'latest' or a prefix: only sets of this profile\n"
    "  --config FILE           config file (default $KBACKUP_CONFIG, else\n"
    "                          " KB_CONFIG_DEFAULT_PATH ")\n"
    "  --threads N             worker threads for volumes (default: the usable CPUs)\n"
    "  --endpoints, --cacert, --cert, --key, --user, --timeout\n"
    "                          override the target profile's etcd settings\n" CLI_KEYRESTORE_HELP;

enum {
        OPT_CLUSTER = OPT_FIRST_COMMAND,
        OPT_TO_CLUSTER,
        OPT_FROM_CLUSTER,
        OPT_CONFIG,
        OPT_THREADS,
};

/* ---- profile ---- */

static int load_profile(const char *path, const char *name, struct kb_config *cfg,
                        const struct kb_cluster **cl)
{
        struct kb_err err = {0};
        int r;

        if (!path)
                path = getenv("KBACKUP_CONFIG");
        if (!path || !*path)
                path = KB_CONFIG_DEFAULT_PATH;
        r = kb_config_load(path, cfg, &err);
        if (r < 0)
                return cli_fail(&err, r);
        *cl = kb_config_cluster(cfg, name);
        if (!*cl) {
                char *names = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&names, &len);

                for (size_t i = 0; f && i < cfg->n_clusters; i++)
                        fprintf(f, " %s", cfg->clusters[i].name);
                if (f)
                        fclose(f);
                cli_log(CLI_LOG_ERROR, NULL, "%s: no cluster '%s' (clusters:%s)", path, name,
                        names ? names : "");
                free(names);
                kb_config_free(cfg);
                return KB_EXIT_USAGE;
        }
        return KB_EXIT_OK;
}

/* Flags first, the profile for whatever they left unset. */
static int profile_conn(struct cli_etcd_conn *ec, const struct kb_cluster *cl, const char *cmd)
{
        int code;

        if (!ec->eps) {
                if (!ec->conn.cacert)
                        ec->conn.cacert = cl->cacert;
                if (!ec->conn.cert && !ec->conn.key) {
                        ec->conn.cert = cl->cert;
                        ec->conn.key = cl->key;
                }
                if (!ec->conn.user) {
                        ec->conn.user = cl->user;
                        ec->password_file = cl->password_file;
                }
                if (!ec->conn.timeout_ms && cl->timeout_sec) {
                        ec->conn.timeout_ms = (int)cl->timeout_sec * 1000;
                        ec->conn.connect_timeout_ms = (int)cl->timeout_sec * 1000;
                }
        }
        code = cli_etcd_conn_finish(ec, cmd, 1);
        if (code != KB_EXIT_OK)
                return code;
        if (!ec->n_endpoints)
                for (size_t i = 0; i < cl->n_endpoints && i < CLI_ETCD_MAX_ENDPOINTS; i++)
                        ec->endpoints[ec->n_endpoints++] = cl->endpoints[i];
        return KB_EXIT_OK;
}

/* ---- backup --cluster ---- */

struct member {
        const char *kind, *name, *path;
        char id[KB_ID_HEX_LEN + 1];
        uint64_t bytes;
        int partial;
};

static void print_set(const char *set_id, const struct kb_cluster *cl, const struct member *m,
                      size_t n, int post_failed)
{
        char b[32];

        if (cli.json) {
                printf("{\"set\":\"%s\",\"cluster\":", set_id);
                cli_json_string(stdout, cl->name, strlen(cl->name));
                printf(",\"members\":[");
                for (size_t i = 0; i < n; i++) {
                        printf("%s{\"kind\":\"%s\",\"snapshot\":\"%s\",\"name\":", i ? "," : "",
                               m[i].kind, m[i].id);
                        cli_json_string(stdout, m[i].name, strlen(m[i].name));
                        printf(",\"source\":");
                        cli_json_string(stdout, m[i].path, strlen(m[i].path));
                        printf(",\"bytes\":%llu,\"partial\":%s}", (unsigned long long)m[i].bytes,
                               m[i].partial ? "true" : "false");
                }
                printf("],\"post_hook_failed\":%s}\n", post_failed ? "true" : "false");
                return;
        }
        if (!cli.quiet) {
                printf("backup set of cluster %s:\n", cl->name);
                for (size_t i = 0; i < n; i++) {
                        cli_human_bytes(m[i].bytes, b, sizeof(b));
                        printf("  %-6s  %.8s  %-28s  %10s  %s%s\n", m[i].kind, m[i].id, m[i].name,
                               b, m[i].path, m[i].partial ? "  (some items unreadable)" : "");
                }
                printf("backup set saved:\n");
        }
        printf("%s\n", set_id);
}

static void unrecord(struct kb_repo *repo, struct member *m, size_t n)
{
        struct kb_err err = {0};

        for (size_t i = 0; i < n; i++) {
                if (kb_repo_snapshot_remove(repo, m[i].id, &err) < 0)
                        cli_log(CLI_LOG_WARN, NULL,
                                "could not remove member %.8s of the failed set: %s", m[i].id,
                                err.msg);
                else if (!cli.quiet)
                        cli_log(CLI_LOG_INFO, CLI_FIELDS(CLI_STR("snapshot", m[i].id)),
                                "removed member %.8s (%s) of the failed set", m[i].id, m[i].name);
        }
}

/* The settings every member's backup shares (set on the volume and the etcd option structs,
 * which name them alike). */
#define MEMBER_OPTS(o, s)                                                                          \
        do {                                                                                       \
                (o).tags = (s)->tags;                                                              \
                (o).ntags = (s)->ntags;                                                            \
                (o).threads = (s)->threads;                                                        \
                (o).set_id = (s)->set_id;                                                          \
                (o).cluster = (s)->cl->name;                                                       \
                (o).progress = cli_progress;                                                       \
                (o).warn = cli_warn;                                                               \
        } while (0)

/* What taking one set needs. */
struct set_run {
        const struct kb_cluster *cl;
        struct cli_etcd_conn *ec;
        const char *const *tags;
        size_t ntags;
        unsigned threads;
        char set_id[KB_ID_HEX_LEN + 1];
        struct member *m; /* room for the etcd snapshot and every volume */
        size_t nm;
        int partial;
};

static void report_member(const struct kb_volume_backup_result *v,
                          const struct kb_etcd_backup_result *e)
{
        cli_report_add(CLI_STAT_BYTES_READ, v ? v->bytes_read : e->bytes_read);
        cli_report_add(CLI_STAT_BYTES_NEW, v ? v->bytes_new : e->bytes_new);
        cli_report_add(CLI_STAT_BYTES_STORED, v ? v->bytes_stored : e->bytes_stored);
        cli_report_add(CLI_STAT_FILES, v ? v->files : 0);
        cli_report_add(CLI_STAT_ERRORS, v ? v->errors : 0);
}

/* The etcd snapshot and every volume, under one lock; on a failure the members already
 * recorded are removed again. KB_EXIT_OK (s->partial when some items failed) or an exit code. */
static int take_set(struct set_run *s)
{
        const struct kb_cluster *cl = s->cl;
        struct kb_repo *repo = NULL;
        struct kb_lock *lock = NULL;
        struct kb_err err = {0};
        int r, code, failed = 0;

        code = cli_open_locked(CLI_LOCK_SHARED, "backup --cluster", 0, &repo, &lock);
        if (code != KB_EXIT_OK)
                return code;
        if (s->ec->n_endpoints) {
                struct kb_etcd_backup_opts o = {0};
                struct kb_etcd_backup_result res = {0};

                o.endpoints = s->ec->endpoints;
                o.n_endpoints = s->ec->n_endpoints;
                o.conn = s->ec->conn;
                MEMBER_OPTS(o, s);
                r = kb_etcd_backup(repo, &o, &res, &err);
                cli_progress_done();
                if (r < 0) {
                        cli_fail(&err, r);
                        failed = 1;
                } else {
                        s->m[s->nm] = (struct member){.kind = "etcd", .name = "etcd"};
                        memcpy(s->m[s->nm].id, res.snapshot_id, sizeof(s->m[s->nm].id));
                        s->m[s->nm].path = cl->n_endpoints ? cl->endpoints[0] : o.endpoints[0];
                        s->m[s->nm++].bytes = res.bytes_read;
                        report_member(NULL, &res);
                }
        }
        for (size_t i = 0; !failed && i < cl->n_volumes; i++) {
                struct kb_volume_backup_opts o = {0};
                struct kb_volume_backup_result res = {0};

                o.name = cl->volumes[i].name;
                MEMBER_OPTS(o, s);
                r = kb_volume_backup(repo, cl->volumes[i].path, &o, &res, &err);
                cli_progress_done();
                if (r < 0 && r != KB_EPARTIAL) {
                        kb_err_prefix(&err, "volume %s: ", cl->volumes[i].name);
                        cli_fail(&err, r);
                        failed = 1;
                        break;
                }
                s->m[s->nm] = (struct member){.kind = "volume",
                                              .name = cl->volumes[i].name,
                                              .path = cl->volumes[i].path,
                                              .partial = r == KB_EPARTIAL};
                memcpy(s->m[s->nm].id, res.snapshot_id, sizeof(s->m[s->nm].id));
                s->m[s->nm++].bytes = res.bytes_read;
                s->partial |= r == KB_EPARTIAL;
                report_member(&res, NULL);
        }
        if (failed) {
                unrecord(repo, s->m, s->nm);
                /* The members counted so far are gone again: no bytes to report. */
                for (int st = CLI_STAT_BYTES_READ; st <= CLI_STAT_ERRORS; st++)
                        cli_report.have &= ~(1u << st);
        }
        cli_close_locked(repo, lock);
        return failed ? KB_EXIT_ERROR : KB_EXIT_OK;
}

int cli_set_backup(int argc, char **argv)
{
        static const struct option opts[] = {CLI_COMMON_OPTIONS,
                                             CLI_ETCD_CONN_OPTIONS,
                                             CLI_HOOK_OPTIONS,
                                             CLI_BACKUP_OPTIONS,
                                             {"cluster", required_argument, NULL, OPT_CLUSTER},
                                             {"config", required_argument, NULL, OPT_CONFIG},
                                             {NULL, 0, NULL, 0}};
        struct cli_etcd_conn ec = {0};
        struct kb_config cfg = {0};
        struct cli_hooks hooks = {.kind = "cluster"};
        struct set_run run = {.ec = &ec};
        struct cli_backup_args b;
        const char *cluster = NULL, *config = NULL;
        char env_cluster[300], env_set[100], env_status[40];
        size_t i;
        int c, r, code = KB_EXIT_OK;

        if (cli_backup_args_init(&b, argc, backup_help, &hooks, &ec) < 0)
                return KB_EXIT_ERROR;
        while ((c = cli_next_backup_option(argc, argv, opts, &b, &code)) >= 0) {
                switch (c) {
                case OPT_CLUSTER:
                        cluster = optarg;
                        break;
                case OPT_CONFIG:
                        config = optarg;
                        break;
                default:
                        code = cli_usage("backup", "bad option");
                        goto out;
                }
        }
        if (c == CLI_OPT_STOP)
                goto out;
        run.threads = b.threads;
        if (!cluster) {
                code = cli_usage("backup", "what to back up? 'backup --cluster NAME', 'backup "
                                           "volume PATH' or 'backup etcd --endpoints URLS'");
                goto out;
        }
        if (optind != argc) {
                code = cli_usage("backup", "unexpected argument '%s'", argv[optind]);
                goto out;
        }
        hooks.source = cli_report.source = cluster;
        code = load_profile(config, cluster, &cfg, &run.cl);
        if (code != KB_EXIT_OK)
                goto out;
        code = profile_conn(&ec, run.cl, "backup --cluster");
        if (code != KB_EXIT_OK)
                goto out;
        {
                const char **all = realloc(b.tags, (b.ntags + run.cl->n_tags + 1) * sizeof(*all));

                if (!all) {
                        code = KB_EXIT_ERROR;
                        goto out;
                }
                b.tags = all;
                for (i = 0; i < run.cl->n_tags; i++)
                        b.tags[b.ntags++] = run.cl->tags[i];
        }
        run.tags = b.tags;
        run.ntags = b.ntags;
        run.m = calloc(run.cl->n_volumes + 1, sizeof(*run.m));
        if (!run.m) {
                code = KB_EXIT_ERROR;
                goto out;
        }
        /* Command-line hooks replace the profile's; the profile's see the same environment. */
        hooks.pre = hooks.pre ? hooks.pre : run.cl->pre_hook;
        hooks.post = hooks.post ? hooks.post : run.cl->post_hook;
        if (!hooks.timeout_ms)
                hooks.timeout_ms = (uint64_t)run.cl->hook_timeout_sec * 1000;
        kb_backupset_new_id(run.set_id);
        snprintf(env_cluster, sizeof(env_cluster), "KBACKUP_CLUSTER=%s", run.cl->name);
        snprintf(env_set, sizeof(env_set), "KBACKUP_SET_ID=%s", run.set_id);
        hooks.extra_env[hooks.n_extra++] = env_cluster;
        hooks.extra_env[hooks.n_extra++] = env_set;
        code = cli_hook_pre(&hooks);
        if (code == KB_EXIT_OK)
                code = take_set(&run);
        if (code == KB_EXIT_OK) {
                snprintf(cli_report.snapshot, sizeof(cli_report.snapshot), "%s", run.set_id);
                code = run.partial ? KB_EXIT_PARTIAL : KB_EXIT_OK;
        }
        snprintf(env_status, sizeof(env_status), "KBACKUP_SET_STATUS=%s",
                 code == KB_EXIT_OK || code == KB_EXIT_PARTIAL ? "ok" : "failed");
        hooks.extra_env[hooks.n_extra++] = env_status;
        r = code;
        code = cli_hook_post(&hooks, code, cli_report.snapshot);
        if (r == KB_EXIT_OK || r == KB_EXIT_PARTIAL)
                print_set(run.set_id, run.cl, run.m, run.nm, hooks.post_failed);
out:
        free(run.m);
        cli_backup_args_free(&b);
        cli_etcd_conn_free(&ec);
        kb_config_free(&cfg);
        return code;
}

/* ---- restore --to-cluster ---- */

enum { ST_DONE, ST_SKIPPED, ST_NOT_SELECTED, ST_FAILED, ST_PARTIAL, ST_WOULD };
static const char *const st_name[] = {"restored", "skipped", "not_selected",
                                      "failed",   "partial", "would_restore"};

struct outcome {
        const char *kind, *name, *target;
        const char *snap_id;
        int status;
        char detail[600];
};

/* What a volume's restore target is: 0 a missing or empty directory (restore there), 1 a
 * directory with entries, 2 a block device (both left alone), -1 unreadable. */
static int target_state(const char *dir)
{
        struct stat st;
        DIR *d;
        struct dirent *e;
        int any = 0;

        if (stat(dir, &st) == 0 && S_ISBLK(st.st_mode))
                return 2;
        d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : -1;
        while (!any && (e = readdir(d)) != NULL)
                any = strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
        closedir(d);
        return any;
}

static int ns_selected(const struct cli_keyrestore *k, const char *volname)
{
        size_t nl = strcspn(volname, "/");

        if (!k->n_namespaces)
                return 1;
        for (size_t i = 0; i < k->n_namespaces; i++)
                if (strlen(k->namespaces[i]) == nl && !strncmp(k->namespaces[i], volname, nl))
                        return 1;
        return 0;
}

static void print_restore(const struct kb_backupset *set, const char *to, const struct outcome *oc,
                          size_t n, const struct kb_etcd_keyrestore_result *kr, int have_kr,
                          int dry_run)
{
        if (cli.json) {
                printf("{\"set\":\"%s\",\"cluster\":", set->id);
                cli_json_string(stdout, set->cluster, strlen(set->cluster));
                printf(",\"to_cluster\":");
                cli_json_string(stdout, to, strlen(to));
                printf(",\"dry_run\":%s,\"members\":[", dry_run ? "true" : "false");
                for (size_t i = 0; i < n; i++) {
                        printf("%s{\"kind\":\"%s\",\"snapshot\":\"%s\",\"name\":", i ? "," : "",
                               oc[i].kind, oc[i].snap_id);
                        cli_json_string(stdout, oc[i].name, strlen(oc[i].name));
                        printf(",\"target\":");
                        cli_json_string(stdout, oc[i].target, strlen(oc[i].target));
                        printf(",\"status\":\"%s\",\"detail\":", st_name[oc[i].status]);
                        cli_json_string(stdout, oc[i].detail, strlen(oc[i].detail));
                        printf("}");
                }
                printf("],\"etcd\":");
                if (have_kr)
                        cli_keyrestore_json(kr, dry_run);
                else
                        printf("null");
                printf("}\n");
                return;
        }
        if (cli.quiet)
                return;
        printf("backup set %.8s (cluster %s) into cluster %s%s:\n", set->id, set->cluster, to,
               dry_run ? " (dry run: nothing written)" : "");
        for (size_t i = 0; i < n; i++)
                printf("  %-6s  %.8s  %-28s  %-13s  %s\n", oc[i].kind, oc[i].snap_id, oc[i].name,
                       st_name[oc[i].status], oc[i].detail);
}

int cli_set_restore(int argc, char **argv)
{
        static const struct option opts[] = {
            CLI_COMMON_OPTIONS,
            CLI_ETCD_CONN_OPTIONS,
            CLI_KEYRESTORE_OPTIONS,
            {"to-cluster", required_argument, NULL, OPT_TO_CLUSTER},
            {"from-cluster", required_argument, NULL, OPT_FROM_CLUSTER},
            {"config", required_argument, NULL, OPT_CONFIG},
            {"threads", required_argument, NULL, OPT_THREADS},
            {NULL, 0, NULL, 0}};
        struct kb_etcd_keyrestore_result kr = {0};
        struct kb_snapshot_list l = {0};
        struct kb_backupset_list sets = {0};
        struct cli_etcd_conn ec = {0};
        struct cli_keyrestore k;
        struct kb_config cfg = {0};
        const struct kb_cluster *cl = NULL;
        struct kb_repo *repo = NULL;
        struct kb_lock *lock = NULL;
        struct kb_err err = {0};
        struct outcome *oc = NULL;
        const char *to = NULL, *from = NULL, *config = NULL;
        char *end, b[32];
        unsigned threads = 0;
        size_t i, n = 0;
        int c, r, code = KB_EXIT_OK, have_kr = 0, any_failed = 0, any_partial = 0;
        const struct kb_backupset *set;

        if (cli_keyrestore_init(&k, argc) < 0)
                return KB_EXIT_ERROR;
        while ((c = cli_next_option(argc, argv, opts, restore_help)) >= 0) {
                r = cli_etcd_conn_option(c, &ec, "restore");
                if (r == 0)
                        r = cli_keyrestore_option(c, &k, "restore");
                if (r == 1)
                        continue;
                if (r > 1) {
                        code = r;
                        goto out;
                }
                switch (c) {
                case OPT_TO_CLUSTER:
                        to = optarg;
                        break;
                case OPT_FROM_CLUSTER:
                        from = optarg;
                        break;
                case OPT_CONFIG:
                        config = optarg;
                        break;
                case OPT_THREADS:
                        threads = (unsigned)strtoul(optarg, &end, 10);
                        if (*end || threads > 256) {
                                code = cli_usage("restore", "--threads wants a number 1-256");
                                goto out;
                        }
                        break;
                default:
                        code = cli_usage("restore", "bad option");
                        goto out;
                }
        }
        if (c == CLI_OPT_STOP)
                goto out;
        if (!to) {
                code = cli_usage("restore", "restore BACKUP needs --to-cluster NAME");
                goto out;
        }
        if (optind + 1 != argc) {
                code = cli_usage("restore", "restore --to-cluster wants exactly one BACKUP (a set "
                                            "id, a prefix, or 'latest')");
                goto out;
        }
        code = load_profile(config, to, &cfg, &cl);
        if (code != KB_EXIT_OK)
                goto out;
        code = profile_conn(&ec, cl, "restore --to-cluster");
        if (code != KB_EXIT_OK)
                goto out;
        cli_keyrestore_finish(&k);
        code = cli_open_locked(CLI_LOCK_READ, "restore --to-cluster", 1, &repo, &lock);
        if (code != KB_EXIT_OK)
                goto out;
        r = kb_repo_snapshot_list_indexed(repo, &l, &err);
        if (r == 0)
                r = kb_backupset_list(&l, &sets, &err);
        if (r == 0)
                r = kb_backupset_find(&sets, argv[optind], from, &err);
        if (r < 0) {
                code = cli_fail(&err, r);
                goto out;
        }
        set = &sets.items[r];
        oc = calloc(set->n_members, sizeof(*oc));
        if (!oc) {
                code = KB_EXIT_ERROR;
                goto out;
        }
        for (i = 0; i < set->n_members; i++) {
                const struct kb_snapshot_entry *e = &l.items[set->members[i]];
                const Kbackup__Snapshot *s = e->snap;
                struct outcome *o = &oc[n++];

                o->kind = s->kind;
                o->name = s->name;
                o->snap_id = e->id;
                o->target = "";
                if (!strcmp(s->kind, "etcd")) {
                        if (!ec.n_endpoints) {
                                o->status = ST_SKIPPED;
                                snprintf(o->detail, sizeof(o->detail),
                                         "cluster %s has no etcd endpoints", cl->name);
                                continue;
                        }
                        if (have_kr) {
                                o->status = ST_SKIPPED;
                                snprintf(o->detail, sizeof(o->detail),
                                         "a second etcd snapshot in one set: only the first is "
                                         "restored");
                                continue;
                        }
                        k.o.endpoints = ec.endpoints;
                        k.o.n_endpoints = ec.n_endpoints;
                        k.o.conn = ec.conn;
                        k.o.progress = cli_progress;
                        k.o.warn = cli_warn;
                        kb_err_clear(&err);
                        r = kb_etcd_keyrestore(repo, s, &k.o, &kr, &err);
                        cli_progress_done();
                        have_kr = kr.endpoint[0] != 0;
                        o->target = ec.endpoints[0];
                        if (r < 0 && r != KB_EPARTIAL) {
                                o->status = ST_FAILED;
                                snprintf(o->detail, sizeof(o->detail), "%s", err.msg);
                                any_failed = 1;
                                continue;
                        }
                        cli_human_bytes(kr.bytes_written, b, sizeof(b));
                        o->status = r == KB_EPARTIAL ? ST_PARTIAL
                                    : k.o.dry_run    ? ST_WOULD
                                                     : ST_DONE;
                        any_partial |= r == KB_EPARTIAL;
                        snprintf(o->detail, sizeof(o->detail),
                                 "%s: %llu of %llu keys selected, %s %llu (%s), skipped %llu, "
                                 "conflicts %llu, leased skipped %llu",
                                 kr.endpoint, (unsigned long long)kr.selected,
                                 (unsigned long long)kr.keys_total,
                                 k.o.dry_run ? "would write" : "written",
                                 (unsigned long long)kr.written, b, (unsigned long long)kr.skipped,
                                 (unsigned long long)kr.conflicts,
                                 (unsigned long long)kr.leased_skipped);
                        continue;
                }
                if (strcmp(s->kind, "volume") != 0) {
                        o->status = ST_SKIPPED;
                        snprintf(o->detail, sizeof(o->detail), "unknown kind '%s'", s->kind);
                        continue;
                }
                if (!ns_selected(&k, s->name)) {
                        o->status = ST_NOT_SELECTED;
                        snprintf(o->detail, sizeof(o->detail), "namespace not selected");
                        continue;
                }
                o->target = kb_cluster_volume_path(cl, s->name);
                if (!o->target) {
                        o->target = "";
                        o->status = ST_SKIPPED;
                        snprintf(o->detail, sizeof(o->detail),
                                 "no mapping for %s in cluster %s (add it under volumes:)", s->name,
                                 cl->name);
                        continue;
                }
                r = target_state(o->target);
                if (r == 2) {
                        /* Nothing tells whether a device's blocks are data: never guessed. */
                        o->status = ST_SKIPPED;
                        snprintf(o->detail, sizeof(o->detail),
                                 "%s is a block device: not touched (restore it with 'kbackup "
                                 "restore volume ID --target %s --overwrite-device')",
                                 o->target, o->target);
                        continue;
                }
                if (r != 0) {
                        o->status = r < 0 ? ST_FAILED : ST_SKIPPED;
                        any_failed |= r < 0;
                        snprintf(o->detail, sizeof(o->detail), "%s %s", o->target,
                                 r < 0 ? "cannot be read" : "is not empty: not touched");
                        continue;
                }
                if (k.o.dry_run) {
                        cli_human_bytes(s->stats ? s->stats->bytes_read : 0, b, sizeof(b));
                        o->status = ST_WOULD;
                        snprintf(o->detail, sizeof(o->detail), "%llu files, %s to %s",
                                 (unsigned long long)(s->stats ? s->stats->files : 0), b,
                                 o->target);
                        continue;
                }
                {
                        struct kb_volume_restore_opts vo = {0};
                        struct kb_volume_restore_result vr = {0};

                        vo.threads = threads;
                        vo.restore_owner = geteuid() == 0;
                        vo.progress = cli_progress;
                        vo.warn = cli_warn;
                        kb_err_clear(&err);
                        r = kb_volume_restore(repo, s, o->target, &vo, &vr, &err);
                        cli_progress_done();
                        if (r < 0 && r != KB_EPARTIAL) {
                                o->status = ST_FAILED;
                                snprintf(o->detail, sizeof(o->detail), "%s", err.msg);
                                any_failed = 1;
                                continue;
                        }
                        cli_human_bytes(vr.bytes, b, sizeof(b));
                        o->status = r == KB_EPARTIAL ? ST_PARTIAL : ST_DONE;
                        any_partial |= r == KB_EPARTIAL;
                        snprintf(o->detail, sizeof(o->detail), "%llu files, %s to %s%s",
                                 (unsigned long long)vr.files, b, o->target,
                                 r == KB_EPARTIAL ? " (with errors)" : "");
                }
        }
        print_restore(set, to, oc, n, &kr, have_kr, k.o.dry_run);
        for (i = 0; i < n; i++)
                if (oc[i].status == ST_FAILED)
                        fprintf(stderr, "%s: %s %s: %s\n", cli.prog, oc[i].kind, oc[i].name,
                                oc[i].detail);
        code = any_failed ? KB_EXIT_ERROR : any_partial ? KB_EXIT_PARTIAL : KB_EXIT_OK;
out:
        if (repo)
                cli_close_locked(repo, lock);
        free(oc);
        kb_backupset_list_free(&sets);
        kb_snapshot_list_free(&l);
        cli_etcd_conn_free(&ec);
        cli_keyrestore_free(&k);
        kb_config_free(&cfg);
        return code;
}
