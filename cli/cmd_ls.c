/* cmd_ls.c - `kbackup ls SNAPSHOT [PATH]`: list the stored tree of a volume snapshot. */
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "cli.h"

static const char help[] = "Usage: kbackup ls SNAPSHOT [PATH] [--json]\n"
                           "\n"
                           "List the files of a volume snapshot (below PATH, relative to the\n"
                           "backed-up directory), like 'ls -l': mode, owner, size, mtime, path.\n"
                           "--json prints one object per line.\n";

static char type_char(Kbackup__NodeType t)
{
        switch (t) {
        case KBACKUP__NODE_TYPE__NODE_DIR:
                return 'd';
        case KBACKUP__NODE_TYPE__NODE_SYMLINK:
                return 'l';
        case KBACKUP__NODE_TYPE__NODE_FIFO:
                return 'p';
        case KBACKUP__NODE_TYPE__NODE_CHR:
                return 'c';
        case KBACKUP__NODE_TYPE__NODE_BLK:
                return 'b';
        default:
                return '-';
        }
}

static const char *type_name(Kbackup__NodeType t)
{
        static const char *names[] = {"file", "dir", "symlink", "fifo", "chardev", "blockdev"};

        return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
}

static void mode_string(const Kbackup__Node *n, char out[11])
{
        static const char rwx[] = "rwxrwxrwx";
        uint32_t m = n->mode;

        out[0] = type_char(n->type);
        for (int i = 0; i < 9; i++)
                out[i + 1] = (m & (1u << (8 - i))) ? rwx[i] : '-';
        if (m & S_ISUID)
                out[3] = (m & S_IXUSR) ? 's' : 'S';
        if (m & S_ISGID)
                out[6] = (m & S_IXGRP) ? 's' : 'S';
        if (m & S_ISVTX)
                out[9] = (m & S_IXOTH) ? 't' : 'T';
        out[10] = '\0';
}

static int print_entry(const char *path, const Kbackup__Node *n, void *arg)
{
        char mode[11], t[40];

        (void)arg;
        cli_format_time(n->mtime_sec * 1000000000LL + n->mtime_nsec, t, sizeof(t), !!cli.json);
        if (cli.json) {
                printf("{\"path\":");
                cli_json_string(stdout, path, strlen(path));
                printf(",\"type\":\"%s\",\"mode\":%u,\"uid\":%u,\"gid\":%u,\"size\":%llu,"
                       "\"mtime\":\"%s\"",
                       type_name(n->type), n->mode, n->uid, n->gid, (unsigned long long)n->size, t);
                if (n->type == KBACKUP__NODE_TYPE__NODE_SYMLINK) {
                        printf(",\"target\":");
                        cli_json_string(stdout, (const char *)n->link_target.data,
                                        n->link_target.len);
                }
                printf("}\n");
                return 0;
        }
        mode_string(n, mode);
        printf("%s %5u %5u %12llu %s ", mode, n->uid, n->gid, (unsigned long long)n->size, t);
        cli_print_escaped(stdout, path, strlen(path));
        if (n->type == KBACKUP__NODE_TYPE__NODE_SYMLINK) {
                printf(" -> ");
                cli_print_escaped(stdout, (const char *)n->link_target.data, n->link_target.len);
        }
        printf("\n");
        return 0;
}

int cmd_ls(int argc, char **argv)
{
        static const struct option opts[] = {CLI_COMMON_OPTIONS, {NULL, 0, NULL, 0}};
        struct kb_snapshot_list l;
        struct kb_repo *repo;
        struct kb_lock *lock;
        struct kb_err err = {0};
        int c, r, code;

        c = cli_next_option(argc, argv, opts, help);
        if (c == CLI_OPT_STOP)
                return KB_EXIT_OK;
        if (c >= 0)
                return cli_usage("ls", "bad option");
        if (optind >= argc || argc - optind > 2)
                return cli_usage("ls", "ls wants SNAPSHOT [PATH]");
        code = cli_open_locked(CLI_LOCK_READ, "ls", 1, &repo, &lock);
        if (code != KB_EXIT_OK)
                return code;
        r = kb_repo_snapshot_list_indexed(repo, &l, &err);
        if (r == 0) {
                r = kb_snapshot_list_find(&l, argv[optind], "volume", &err);
                if (r >= 0)
                        r = kb_volume_walk(repo, l.items[r].snap, argv[optind + 1], print_entry,
                                           NULL, &err);
                kb_snapshot_list_free(&l);
        }
        cli_close_locked(repo, lock);
        if (r < 0)
                return cli_fail(&err, r);
        return KB_EXIT_OK;
}
