/* cmd_init.c - `kbackup init`: create a repository. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char help[] =
    "Usage: kbackup init [--repo LOCATION] [--id-hash keyed-blake3|hmac-sha256]\n"
    "\n"
    "Create a new, empty repository protected by the password from $KBACKUP_PASSWORD_FILE\n"
    "(or --password-file, or $KBACKUP_PASSWORD). Keep the password: without it nothing in\n"
    "the repository can be read.\n"
    "\n"
    "  --id-hash NAME   the keyed hash that names chunks, fixed for the repository's life:\n"
    "                   keyed-blake3 (default; fastest with AVX2 or AVX-512) or hmac-sha256\n"
    "                   (faster on CPUs with SHA extensions but without AVX2)\n";

enum { OPT_ID_HASH = OPT_FIRST_COMMAND };

int cmd_init(int argc, char **argv)
{
        static const struct option opts[] = {CLI_COMMON_OPTIONS,
                                             {"id-hash", required_argument, NULL, OPT_ID_HASH},
                                             {NULL, 0, NULL, 0}};
        struct kb_kdf_params kdf;
        struct kb_err err = {0};
        const char *loc, *test_kdf, *id_hash = NULL;
        char *pw = NULL;
        size_t len = 0;
        int c, r;

        while ((c = cli_next_option(argc, argv, opts, help)) >= 0) {
                if (c != OPT_ID_HASH)
                        return cli_usage("init", "bad option");
                if (kb_id_hash_parse(optarg, &(enum kb_id_hash){0}) < 0)
                        return cli_usage("init", "--id-hash wants keyed-blake3 or hmac-sha256");
                id_hash = optarg;
        }
        if (c == CLI_OPT_STOP)
                return KB_EXIT_OK;
        if (optind != argc)
                return cli_usage("init", "unexpected argument '%s'", argv[optind]);
        r = cli_repo_location(&loc, &err);
        if (r == 0)
                r = cli_password(&pw, &len, &err);
        if (r < 0)
                return cli_fail(&err, r);
        kb_kdf_params_default(&kdf);
        /* Test suites create hundreds of repositories; the full Argon2 cost would dominate them. */
        test_kdf = getenv("KBACKUP_TEST_KDF");
        if (test_kdf && !strcmp(test_kdf, "fast")) {
                kdf.opslimit = 1;
                kdf.memlimit = 8192;
        }
        r = kb_repo_init(loc, pw, len, &kdf, id_hash, &err);
        cli_password_free(pw, len);
        if (r < 0)
                return cli_fail(&err, r);
        if (!cli.quiet) {
                if (cli.json) {
                        printf("{\"repository\":");
                        cli_json_string(stdout, loc, strlen(loc));
                        printf("}\n");
                } else
                        printf("created kbackup repository at %s\n", loc);
        }
        return KB_EXIT_OK;
}
