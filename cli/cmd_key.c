/* cmd_key.c - `kbackup key list|add|remove|passwd`: the passwords that open the repository. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "crypto.h"
#include "keys.h"

#define PASSWORD_MAX 4096

static const char help[] =
    "Usage: kbackup key list\n"
    "       kbackup key add --new-password-file FILE\n"
    "       kbackup key remove ID\n"
    "       kbackup key passwd --new-password-file FILE\n"
    "\n"
    "Every key file wraps the same master key under its own password, so passwords can be\n"
    "added and revoked without touching any data.\n"
    "\n"
    "  list     the key files: id, created, by whom; '*' marks the one your password opened\n"
    "  add      add a key for the password in FILE (a trailing newline is dropped)\n"
    "  remove   remove the key with this id (or unique id prefix). The last key cannot be\n"
    "           removed, nor the key your password opened (use passwd, or remove it with\n"
    "           another key's password), so a typo cannot lock you out\n"
    "  passwd   change your password: a key for FILE's password is written (and checked to\n"
    "           open) before your old key is removed\n";

enum { OPT_NEW_PASSWORD_FILE = OPT_FIRST_COMMAND };

static int read_new_password(const char *path, char **pw, size_t *len)
{
        char *buf = malloc(PASSWORD_MAX + 1);
        size_t n = 0;
        ssize_t got;
        int fd;

        if (!buf)
                return -ENOMEM;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                cli_log(CLI_LOG_ERROR, NULL, "cannot read %s: %s", path, strerror(errno));
                free(buf);
                return -1;
        }
        while (n <= PASSWORD_MAX && (got = read(fd, buf + n, PASSWORD_MAX + 1 - n)) > 0)
                n += (size_t)got;
        close(fd);
        while (n > 0 && n <= PASSWORD_MAX && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
                n--;
        if (n == 0 || n > PASSWORD_MAX) {
                cli_log(CLI_LOG_ERROR, NULL, "%s: the new password is %s", path,
                        n ? "too long" : "empty");
                cli_password_free(buf, PASSWORD_MAX + 1);
                return -1;
        }
        buf[n] = '\0';
        *pw = buf;
        *len = n;
        return 0;
}

static void kdf_params(struct kb_kdf_params *kdf)
{
        const char *test = getenv("KBACKUP_TEST_KDF");

        kb_kdf_params_default(kdf);
        if (test && !strcmp(test, "fast")) { /* test-only, as for init */
                kdf->opslimit = 1;
                kdf->memlimit = 8192;
        }
}

static int key_list(struct kb_repo *repo)
{
        struct kb_key_info *v = NULL;
        struct kb_err err = {0};
        size_t n = 0;
        int r = kb_repo_key_list(repo, &v, &n, &err);

        if (r < 0)
                return cli_fail(&err, r);
        if (cli.json)
                printf("[");
        else
                printf("  %-8s  %-19s  %-16s  %s\n", "ID", "CREATED", "USER", "HOST");
        for (size_t i = 0; i < n; i++) {
                char t[40] = "?";

                if (v[i].readable)
                        cli_format_time(v[i].created_unix * 1000000000LL, t, sizeof(t), cli.json);
                if (cli.json) {
                        printf("%s{\"id\":\"%s\",\"current\":%s,\"created\":\"%s\",\"user\":",
                               i ? "," : "", v[i].id, v[i].current ? "true" : "false", t);
                        cli_json_string(stdout, v[i].user, strlen(v[i].user));
                        printf(",\"host\":");
                        cli_json_string(stdout, v[i].host, strlen(v[i].host));
                        printf("}");
                } else {
                        printf("%s %.8s  %-19s  %-16s  %s%s\n", v[i].current ? "*" : " ", v[i].id,
                               t, v[i].user, v[i].host, v[i].readable ? "" : " (damaged key file)");
                }
        }
        if (cli.json)
                printf("]\n");
        free(v);
        return KB_EXIT_OK;
}

static int key_new(struct kb_repo *repo, const char *file, int passwd)
{
        struct kb_kdf_params kdf;
        struct kb_err err = {0};
        char id[KB_ID_HEX_LEN + 1], *pw = NULL;
        size_t len = 0;
        int r;

        if (read_new_password(file, &pw, &len) < 0)
                return KB_EXIT_ERROR;
        kdf_params(&kdf);
        r = passwd ? kb_repo_key_passwd(repo, pw, len, &kdf, id, &err)
                   : kb_repo_key_add(repo, pw, len, &kdf, id, &err);
        cli_password_free(pw, len);
        if (r < 0)
                return cli_fail(&err, r);
        if (cli.json)
                printf("{\"id\":\"%s\"}\n", id);
        else if (!cli.quiet)
                printf("%s key %.8s\n", passwd ? "password changed: new" : "added", id);
        return KB_EXIT_OK;
}

int cmd_key(int argc, char **argv)
{
        static const struct option opts[] = {
            CLI_COMMON_OPTIONS,
            {"new-password-file", required_argument, NULL, OPT_NEW_PASSWORD_FILE},
            {NULL, 0, NULL, 0}};
        const char *sub, *newfile = NULL;
        struct kb_err err = {0};
        struct kb_repo *repo;
        int c, r, code;

        if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
                cli_report.help = 1;
                fputs(help, stdout);
                return KB_EXIT_OK;
        }
        if (argc < 2 || argv[1][0] == '-')
                return cli_usage("key", "which? key list|add|remove|passwd");
        sub = argv[1];
        argc--;
        argv++;
        while ((c = cli_next_option(argc, argv, opts, help)) >= 0) {
                if (c == OPT_NEW_PASSWORD_FILE)
                        newfile = optarg;
                else
                        return cli_usage("key", "bad option");
        }
        if (c == CLI_OPT_STOP)
                return KB_EXIT_OK;
        if (!strcmp(sub, "list") || !strcmp(sub, "add") || !strcmp(sub, "passwd")) {
                if (optind != argc)
                        return cli_usage("key", "unexpected argument '%s'", argv[optind]);
                if (strcmp(sub, "list") && !newfile)
                        return cli_usage("key", "key %s needs --new-password-file FILE", sub);
        } else if (!strcmp(sub, "remove")) {
                if (optind + 1 != argc)
                        return cli_usage("key", "key remove wants exactly one ID");
        } else {
                return cli_usage("key", "unknown key command '%s' (list, add, remove, passwd)",
                                 sub);
        }
        /* Keys are independent of data: no repository lock and no index needed. */
        code =
            cli_open_repo(KB_REPO_NO_INDEX | (strcmp(sub, "list") ? 0 : KB_REPO_READ_ONLY), &repo);
        if (code != KB_EXIT_OK)
                return code;
        if (!strcmp(sub, "list")) {
                code = key_list(repo);
        } else if (!strcmp(sub, "remove")) {
                r = kb_repo_key_remove(repo, argv[optind], &err);
                code = r < 0 ? cli_fail(&err, r) : KB_EXIT_OK;
                if (r == 0 && !cli.quiet && !cli.json)
                        printf("removed key %s\n", argv[optind]);
        } else {
                code = key_new(repo, newfile, !strcmp(sub, "passwd"));
        }
        kb_repo_close(repo);
        return code;
}
