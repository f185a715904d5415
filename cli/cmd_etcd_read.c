/* cmd_etcd_read.c - `kbackup etcd ls|get|diff|info`: look inside stored etcd snapshots without
 * restoring them (the keys as `etcdctl get --rev R` would show them at the snapshot's revision). */
#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "etcd_keyspace.h"

static const char help[] =
    "Usage: kbackup etcd ls SNAPSHOT [--prefix P] [--values] [--json]\n"
    "       kbackup etcd get SNAPSHOT KEY [--json]\n"
    "       kbackup etcd diff SNAP_A SNAP_B [--prefix P] [--json]\n"
    "       kbackup etcd info SNAPSHOT [--json]\n"
    "\n"
    "Read the keys of an etcd snapshot in the repository without restoring it: the live keys\n"
    "at the snapshot's revision, as 'etcdctl get --prefix \"\" --rev R' returns them (latest\n"
    "version of each key, deleted keys absent). The snapshot's chunks are read and\n"
    "authenticated on the fly; nothing is written anywhere but a shared lock (none with\n"
    "--no-lock, or on a read-only repository).\n"
    "\n"
    "  ls      one line per key, sorted: KEY, value size, create revision, mod revision,\n"
    "          version, lease (16 hex digits as etcdctl prints it, 0 for none), separated by tabs; "
    "control characters\n"
    "          and backslashes in keys are escaped as \\xNN and \\\\\n"
    "  get     the value of KEY, byte for byte, on standard output (exit 1: key not found)\n"
    "  diff    keys added (+), removed (-) and changed (~, another value) from SNAP_A to\n"
    "          SNAP_B, one per line; the counts follow on standard error\n"
    "  info    the snapshot's revision, compaction, raft index and key counts\n"
    "\n"
    "Options:\n"
    "  --prefix P   only keys starting with P (e.g. /registry/deployments/)\n"
    "  --values     ls --json: add each value (base64)\n"
    "  --json       one JSON object per line (info: one object)\n"
    "\n"
    "SNAPSHOT is an etcd snapshot id, a unique prefix of one, 'latest', or file:PATH for a\n"
    "snapshot file ('etcdctl snapshot save' output) or an etcd member's db file (no\n"
    "repository needed).\n";

enum { OPT_PREFIX = OPT_FIRST_COMMAND, OPT_VALUES };

/* An opened snapshot: its database and its key space. */
struct snap {
        struct kb_bbolt *db;
        struct kb_etcd_keyspace *ks;
};

struct ctx {
        struct kb_repo *repo;
        struct kb_lock *lock; /* shared: a prune cannot delete packs while we read */
        struct kb_snapshot_list list;
        int listed;
};

static void snap_close(struct snap *s)
{
        kb_etcd_keyspace_free(s->ks);
        kb_bbolt_close(s->db);
        s->ks = NULL;
        s->db = NULL;
}

static void ctx_close(struct ctx *c)
{
        if (c->listed)
                kb_snapshot_list_free(&c->list);
        if (c->repo)
                cli_close_locked(c->repo, c->lock);
}

/* Open ref (a repository snapshot or file:PATH) and load its key space under prefix. Returns an
 * exit code, having printed the error. */
static int snap_open(struct ctx *c, const char *ref, const char *prefix, struct snap *s)
{
        struct kb_err err = {0};
        int r, code;

        if (!strncmp(ref, "file:", 5)) {
                r = kb_bbolt_open_file(ref + 5, &s->db, &err);
        } else {
                if (!c->repo) {
                        code = cli_open_locked(CLI_LOCK_READ, "etcd", 1, &c->repo, &c->lock);
                        if (code != KB_EXIT_OK)
                                return code;
                }
                if (!c->listed) {
                        r = kb_repo_snapshot_list_indexed(c->repo, &c->list, &err);
                        if (r < 0)
                                return cli_fail(&err, r);
                        c->listed = 1;
                }
                r = kb_snapshot_list_find(&c->list, ref, "etcd", &err);
                if (r >= 0)
                        r = kb_etcd_snapshot_db_open(c->repo, c->list.items[r].snap, &s->db, &err);
        }
        if (r == 0)
                r = kb_etcd_keyspace_load(s->db, prefix, prefix ? strlen(prefix) : 0, &s->ks, &err);
        if (r < 0) {
                snap_close(s);
                return cli_fail(&err, r);
        }
        return KB_EXIT_OK;
}

static void print_base64(FILE *f, const uint8_t *p, size_t n)
{
        char small[256];
        size_t len = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
        char *b = len <= sizeof(small) ? small : malloc(len);

        if (!b) {
                fputs("\"<out of memory>\"", f);
                return;
        }
        sodium_bin2base64(b, len, p, n, sodium_base64_VARIANT_ORIGINAL);
        fprintf(f, "\"%s\"", b);
        if (b != small)
                free(b);
}

static void print_key(const struct kb_etcd_entry *kv)
{
        cli_print_escaped(stdout, (const char *)kv->key, kv->key_len);
}

/* The JSON fields every key has: "key" (readable; bytes that are not UTF-8 become \u00XX),
 * "key_base64" (exact), then size and revisions. No braces. */
static void json_kv_fields(const struct kb_etcd_entry *kv)
{
        printf("\"key\":");
        cli_json_string(stdout, (const char *)kv->key, kv->key_len);
        printf(",\"key_base64\":");
        print_base64(stdout, kv->key, kv->key_len);
        printf(",\"size\":%u,\"create_revision\":%lld,\"mod_revision\":%lld,\"version\":%lld,"
               "\"lease\":%lld",
               kv->value_len, (long long)kv->create_revision, (long long)kv->mod_revision,
               (long long)kv->version, (long long)kv->lease);
}

struct ls_arg {
        int values;
};

static int ls_line(const struct kb_etcd_entry *kv, const uint8_t *value, void *arg)
{
        (void)arg;
        if (cli.json) {
                putchar('{');
                json_kv_fields(kv);
                if (value) {
                        printf(",\"value_base64\":");
                        print_base64(stdout, value, kv->value_len);
                }
                printf("}\n");
                return 0;
        }
        print_key(kv);
        /* Lease ids as etcdctl prints them (16 hex digits), so they can be grepped for. */
        printf("\t%u\t%lld\t%lld\t%lld\t", kv->value_len, (long long)kv->create_revision,
               (long long)kv->mod_revision, (long long)kv->version);
        if (kv->lease)
                printf("%016llx\n", (unsigned long long)kv->lease);
        else
                printf("0\n");
        return 0;
}

static int do_ls(struct ctx *c, char **args, int nargs, const char *prefix, int values)
{
        struct snap s = {0};
        struct kb_err err = {0};
        int code, r = 0;

        if (nargs != 1)
                return cli_usage("etcd", "etcd ls wants exactly one SNAPSHOT");
        code = snap_open(c, args[0], prefix, &s);
        if (code != KB_EXIT_OK)
                return code;
        if (values && cli.json) {
                r = kb_etcd_keyspace_each(s.ks, 0, ls_line, NULL, &err);
        } else {
                for (size_t i = 0; i < kb_etcd_keyspace_count(s.ks); i++)
                        ls_line(kb_etcd_keyspace_at(s.ks, i), NULL, NULL);
        }
        snap_close(&s);
        if (fflush(stdout) != 0)
                return KB_EXIT_ERROR;
        return r < 0 ? cli_fail(&err, r) : KB_EXIT_OK;
}

static int do_get(struct ctx *c, char **args, int nargs)
{
        struct snap s = {0};
        struct kb_err err = {0};
        struct kb_buf v = KB_BUF_INIT;
        const struct kb_etcd_entry *kv;
        int code, r;

        if (nargs != 2)
                return cli_usage("etcd", "etcd get wants SNAPSHOT KEY");
        /* The key itself as the prefix: only it and the keys it prefixes are kept in memory. */
        code = snap_open(c, args[0], args[1], &s);
        if (code != KB_EXIT_OK)
                return code;
        kv = kb_etcd_keyspace_find(s.ks, args[1], strlen(args[1]));
        if (!kv) {
                char *shown = NULL;
                size_t n = 0;
                FILE *m = open_memstream(&shown, &n);

                snap_close(&s);
                if (m) {
                        cli_print_escaped(m, args[1], strlen(args[1]));
                        fclose(m);
                }
                cli_log(CLI_LOG_ERROR, NULL, "key not found: %s", shown ? shown : "?");
                free(shown);
                return KB_EXIT_ERROR;
        }
        r = kb_etcd_keyspace_value(s.ks, kv, &v, &err);
        if (r == 0) {
                if (cli.json) {
                        putchar('{');
                        json_kv_fields(kv);
                        printf(",\"value_base64\":");
                        print_base64(stdout, v.data ? v.data : (const uint8_t *)"", v.len);
                        printf("}\n");
                } else if (v.len) {
                        fwrite(v.data, 1, v.len, stdout);
                }
        }
        kb_buf_free(&v);
        snap_close(&s);
        if (r < 0)
                return cli_fail(&err, r);
        return fflush(stdout) == 0 ? KB_EXIT_OK : KB_EXIT_ERROR;
}

struct diff_count {
        uint64_t added, removed, changed;
};

static int diff_line(char op, const struct kb_etcd_entry *a, const struct kb_etcd_entry *b,
                     void *arg)
{
        struct diff_count *n = arg;
        const struct kb_etcd_entry *kv = b ? b : a;

        if (op == '+')
                n->added++;
        else if (op == '-')
                n->removed++;
        else
                n->changed++;
        if (cli.json) {
                printf("{\"change\":\"%s\",", op == '+'   ? "added"
                                              : op == '-' ? "removed"
                                                          : "changed");
                json_kv_fields(kv);
                if (a && b)
                        printf(",\"old_size\":%u,\"old_mod_revision\":%lld", a->value_len,
                               (long long)a->mod_revision);
                printf("}\n");
                return 0;
        }
        printf("%c ", op);
        print_key(kv);
        putchar('\n');
        return 0;
}

static int do_diff(struct ctx *c, char **args, int nargs, const char *prefix)
{
        struct snap a = {0}, b = {0};
        struct diff_count n = {0};
        int code;

        if (nargs != 2)
                return cli_usage("etcd", "etcd diff wants SNAP_A SNAP_B");
        code = snap_open(c, args[0], prefix, &a);
        if (code != KB_EXIT_OK)
                return code;
        code = snap_open(c, args[1], prefix, &b);
        if (code != KB_EXIT_OK) {
                snap_close(&a);
                return code;
        }
        kb_etcd_keyspace_diff(a.ks, b.ks, diff_line, &n);
        if (!cli.quiet)
                cli_log(CLI_LOG_INFO | CLI_LOG_PLAIN,
                        CLI_FIELDS(CLI_U64("added", n.added), CLI_U64("removed", n.removed),
                                   CLI_U64("changed", n.changed)),
                        "%llu added, %llu removed, %llu changed (revision %lld -> %lld)",
                        (unsigned long long)n.added, (unsigned long long)n.removed,
                        (unsigned long long)n.changed,
                        (long long)kb_etcd_keyspace_info(a.ks)->revision,
                        (long long)kb_etcd_keyspace_info(b.ks)->revision);
        snap_close(&a);
        snap_close(&b);
        return fflush(stdout) == 0 ? KB_EXIT_OK : KB_EXIT_ERROR;
}

static int do_info(struct ctx *c, char **args, int nargs, const char *prefix)
{
        struct snap s = {0};
        const struct kb_etcd_keyspace_info *i;
        char size[32];
        int code;

        if (nargs != 1)
                return cli_usage("etcd", "etcd info wants exactly one SNAPSHOT");
        code = snap_open(c, args[0], prefix, &s);
        if (code != KB_EXIT_OK)
                return code;
        i = kb_etcd_keyspace_info(s.ks);
        if (cli.json) {
                printf("{\"revision\":%lld,\"compact_revision\":%lld,"
                       "\"scheduled_compact_revision\":%lld,\"consistent_index\":%llu,"
                       "\"keys\":%llu,\"value_bytes\":%llu,\"records\":%llu,\"tombstones\":%llu,"
                       "\"db_size\":%llu,\"page_size\":%u,\"txid\":%llu}\n",
                       (long long)i->revision, (long long)i->compact_revision,
                       (long long)i->scheduled_compact_revision,
                       (unsigned long long)i->consistent_index, (unsigned long long)i->keys,
                       (unsigned long long)i->value_bytes, (unsigned long long)i->records,
                       (unsigned long long)i->tombstones, (unsigned long long)i->db.db_size,
                       i->db.page_size, (unsigned long long)i->db.txid);
        } else {
                cli_human_bytes(i->db.db_size, size, sizeof(size));
                printf("revision:          %lld\n", (long long)i->revision);
                printf("compact revision:  %lld\n", (long long)i->compact_revision);
                printf("consistent index:  %llu\n", (unsigned long long)i->consistent_index);
                printf("keys:              %llu (%llu bytes of values)\n",
                       (unsigned long long)i->keys, (unsigned long long)i->value_bytes);
                printf("revisions stored:  %llu (%llu tombstones)\n",
                       (unsigned long long)i->records, (unsigned long long)i->tombstones);
                printf("database:          %s, %u-byte pages, bbolt txid %llu\n", size,
                       i->db.page_size, (unsigned long long)i->db.txid);
        }
        snap_close(&s);
        return KB_EXIT_OK;
}

int cmd_etcd(int argc, char **argv)
{
        static const struct option opts[] = {CLI_COMMON_OPTIONS,
                                             {"prefix", required_argument, NULL, OPT_PREFIX},
                                             {"values", no_argument, NULL, OPT_VALUES},
                                             {NULL, 0, NULL, 0}};
        struct ctx ctx = {0};
        const char *prefix = NULL, *sub;
        int c, values = 0, code;

        if (argc < 2 || argv[1][0] == '-') {
                if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
                        cli_report.help = 1;
                        fputs(help, stdout);
                        return KB_EXIT_OK;
                }
                return cli_usage("etcd", "which one? 'kbackup etcd ls|get|diff|info ...'");
        }
        sub = argv[1];
        argc--;
        argv++;
        while ((c = cli_next_option(argc, argv, opts, help)) >= 0) {
                if (c == OPT_PREFIX)
                        prefix = optarg;
                else if (c == OPT_VALUES)
                        values = 1;
                else
                        return cli_usage("etcd", "bad option");
        }
        if (c == CLI_OPT_STOP)
                return KB_EXIT_OK;
        if (!strcmp(sub, "ls"))
                code = do_ls(&ctx, argv + optind, argc - optind, prefix, values);
        else if (!strcmp(sub, "get") && !prefix)
                code = do_get(&ctx, argv + optind, argc - optind);
        else if (!strcmp(sub, "diff"))
                code = do_diff(&ctx, argv + optind, argc - optind, prefix);
        else if (!strcmp(sub, "info"))
                code = do_info(&ctx, argv + optind, argc - optind, prefix);
        else if (!strcmp(sub, "get"))
                code = cli_usage("etcd", "etcd get takes no --prefix");
        else
                code = cli_usage("etcd", "unknown etcd command '%s' (ls, get, diff, info)", sub);
        ctx_close(&ctx);
        return code;
}
