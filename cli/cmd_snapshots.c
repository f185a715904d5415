/* cmd_snapshots.c - `kbackup snapshots`: list snapshot records. */
#include <string.h>

#include "backupset.h"
#include "cli.h"

static const char help[] = "Usage: kbackup snapshots [--json]\n"
                           "\n"
                           "List the repository's snapshots, oldest first, etcd and volume\n"
                           "snapshots apart. --json prints one array of objects with id, time\n"
                           "(RFC 3339, UTC), kind, name, tags, host, source and stats.\n";

static void print_json(const struct kb_snapshot_list *l)
{
        printf("[");
        for (size_t i = 0; i < l->count; i++) {
                const Kbackup__Snapshot *s = l->items[i].snap;
                const Kbackup__SnapshotStats *st = s->stats;
                char t[40];

                cli_format_time(s->time_unix_nsec, t, sizeof(t), 1);
                printf("%s{\"id\":\"%s\",\"time\":\"%s\",\"kind\":", i ? "," : "", l->items[i].id,
                       t);
                cli_json_string(stdout, s->kind, strlen(s->kind));
                printf(",\"name\":");
                cli_json_string(stdout, s->name, strlen(s->name));
                printf(",\"host\":");
                cli_json_string(stdout, s->host, strlen(s->host));
                printf(",\"source\":");
                cli_json_string(stdout, s->source_path, strlen(s->source_path));
                if (s->set_id && s->set_id[0]) {
                        printf(",\"set\":");
                        cli_json_string(stdout, s->set_id, strlen(s->set_id));
                        printf(",\"cluster\":");
                        cli_json_string(stdout, s->cluster, strlen(s->cluster));
                } else {
                        printf(",\"set\":null");
                }
                printf(",\"tags\":{");
                for (size_t j = 0; j < s->n_tags; j++) {
                        printf("%s", j ? "," : "");
                        cli_json_string(stdout, s->tags[j]->key, strlen(s->tags[j]->key));
                        printf(":");
                        cli_json_string(stdout, s->tags[j]->value, strlen(s->tags[j]->value));
                }
                printf("}");
                if (st)
                        printf(
                            ",\"stats\":{\"files\":%llu,\"dirs\":%llu,\"bytes_read\":%llu,"
                            "\"bytes_new\":%llu,\"bytes_stored\":%llu,\"errors\":%llu}",
                            (unsigned long long)st->files, (unsigned long long)st->dirs,
                            (unsigned long long)st->bytes_read, (unsigned long long)st->bytes_new,
                            (unsigned long long)st->bytes_stored, (unsigned long long)st->errors);
                printf("}");
        }
        printf("]\n");
}

static void print_kind(const struct kb_snapshot_list *l, const char *kind, const char *title)
{
        int header = 0;

        for (size_t i = 0; i < l->count; i++) {
                const Kbackup__Snapshot *s = l->items[i].snap;
                char t[40], size[32] = "-";

                if (strcmp(s->kind, kind) != 0)
                        continue;
                if (!header) {
                        printf("%s\n%-8s  %-19s  %-24s  %-10s  %10s  %-8s  %s\n", title, "ID",
                               "TIME", "NAME", "HOST", "SIZE", "SET", "TAGS");
                        header = 1;
                }
                cli_format_time(s->time_unix_nsec, t, sizeof(t), 0);
                if (s->stats)
                        cli_human_bytes(s->stats->bytes_read, size, sizeof(size));
                printf("%.8s  %-19s  %-24s  %-10s  %10s  %-8.8s  ", l->items[i].id, t,
                       s->name[0] ? s->name : s->source_path, s->host, size,
                       s->set_id && s->set_id[0] ? s->set_id : "-");
                for (size_t j = 0; j < s->n_tags; j++)
                        printf("%s%s=%s", j ? "," : "", s->tags[j]->key, s->tags[j]->value);
                printf("\n");
        }
        if (header)
                printf("\n");
}

/* Backup sets (backup --cluster): their members, grouped. */
static void print_sets(const struct kb_snapshot_list *l)
{
        struct kb_backupset_list sets;
        struct kb_err err = {0};

        if (kb_backupset_list(l, &sets, &err) < 0 || !sets.count)
                return;
        printf("backup sets:\n%-8s  %-19s  %-16s  %s\n", "SET", "TIME", "CLUSTER", "MEMBERS");
        for (size_t i = 0; i < sets.count; i++) {
                const struct kb_backupset *b = &sets.items[i];
                char t[40];

                cli_format_time(b->time_unix_nsec, t, sizeof(t), 0);
                printf("%.8s  %-19s  %-16s  ", b->id, t, b->cluster);
                for (size_t j = 0; j < b->n_members; j++) {
                        const struct kb_snapshot_entry *e = &l->items[b->members[j]];

                        printf("%s%s %.8s", j ? ", " : "", e->snap->name, e->id);
                }
                printf("\n");
        }
        printf("\n");
        kb_backupset_list_free(&sets);
}

int cmd_snapshots(int argc, char **argv)
{
        static const struct option opts[] = {CLI_COMMON_OPTIONS, {NULL, 0, NULL, 0}};
        struct kb_snapshot_list l;
        struct kb_repo *repo;
        struct kb_err err = {0};
        int c, r, code;

        c = cli_next_option(argc, argv, opts, help);
        if (c == CLI_OPT_STOP)
                return KB_EXIT_OK;
        if (c >= 0)
                return cli_usage("snapshots", "bad option");
        if (optind != argc)
                return cli_usage("snapshots", "unexpected argument '%s'", argv[optind]);
        code = cli_open_repo(KB_REPO_READ_ONLY, &repo);
        if (code != KB_EXIT_OK)
                return code;
        r = kb_repo_snapshot_list(repo, &l, &err);
        kb_repo_close(repo);
        if (r < 0)
                return cli_fail(&err, r);
        if (cli.json) {
                print_json(&l);
        } else if (l.count == 0) {
                printf("no snapshots\n");
        } else {
                print_sets(&l);
                print_kind(&l, "etcd", "etcd snapshots:");
                print_kind(&l, "volume", "volume snapshots:");
                printf("%zu snapshot(s)\n", l.count);
        }
        kb_snapshot_list_free(&l);
        return KB_EXIT_OK;
}
