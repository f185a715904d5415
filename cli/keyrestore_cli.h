/* keyrestore_cli.h - options and output of restoring etcd keys into a live etcd, shared by
 * `restore etcd SNAPSHOT --endpoints` (cmd_keyrestore.c) and `restore BACKUP --to-cluster`
 * (cmd_set.c). */
#ifndef KB_KEYRESTORE_CLI_H
#define KB_KEYRESTORE_CLI_H

#include "cli.h"
#include "etcd_keyrestore.h"

enum {
        OPT_KR_PREFIX = 1950,
        OPT_KR_EXCLUDE,
        OPT_KR_NAMESPACE,
        OPT_KR_ON_CONFLICT,
        OPT_KR_INCLUDE_LEASED,
        OPT_KR_DRY_RUN,
        OPT_KR_MAX_TXN_OPS,
        OPT_KR_MAX_REQUEST_BYTES,
        OPT_KR_LEASE_TTL,
};
#define CLI_KEYRESTORE_OPTIONS                                                                     \
        {"prefix", required_argument, NULL, OPT_KR_PREFIX},                                        \
            {"exclude", required_argument, NULL, OPT_KR_EXCLUDE},                                  \
            {"namespace", required_argument, NULL, OPT_KR_NAMESPACE},                              \
            {"on-conflict", required_argument, NULL, OPT_KR_ON_CONFLICT},                          \
            {"include-leased", no_argument, NULL, OPT_KR_INCLUDE_LEASED},                          \
            {"dry-run", no_argument, NULL, OPT_KR_DRY_RUN},                                        \
            {"max-txn-ops", required_argument, NULL, OPT_KR_MAX_TXN_OPS},                          \
            {"max-request-bytes", required_argument, NULL, OPT_KR_MAX_REQUEST_BYTES},              \
        {                                                                                          \
                "lease-ttl", required_argument, NULL, OPT_KR_LEASE_TTL                             \
        }

#define CLI_KEYRESTORE_HELP                                                                        \
        "  --prefix P              only keys starting with P (repeatable; default: all)\n"         \
        "  --exclude P             no keys starting with P (repeatable)\n"                         \
        "  --namespace NS          only the Kubernetes objects of namespace NS and the\n"          \
        "                          namespace itself (repeatable; see docs/dr-runbook.md)\n"        \
        "  --on-conflict MODE      a key that exists with another value: skip (default),\n"        \
        "                          overwrite, or fail (stop; nothing of its batch written)\n"      \
        "  --include-leased        also keys attached to a lease, under new leases with the\n"     \
        "                          original TTL (default: skipped)\n"                              \
        "  --dry-run               read the target, write nothing, report what would happen\n"     \
        "  --max-txn-ops N         keys per Txn (the target's --max-txn-ops; default 128)\n"       \
        "  --max-request-bytes N   bytes per Txn (the target's --max-request-bytes;\n"             \
        "                          default 1572864)\n"                                             \
        "  --lease-ttl SECONDS     TTL for a lease the snapshot does not describe (3600)\n"

/* The option values; the arrays hold argv pointers. */
struct cli_keyrestore {
        struct kb_etcd_keyrestore_opts o;
        const char **prefixes, **excludes, **namespaces;
        size_t n_prefixes, n_excludes, n_namespaces;
};
int cli_keyrestore_init(struct cli_keyrestore *k, int argc);
void cli_keyrestore_free(struct cli_keyrestore *k);
/* 1 handled, 0 not ours, or a usage exit code (> 1). */
int cli_keyrestore_option(int c, struct cli_keyrestore *k, const char *cmd);
/* Point o.filter at the arrays (after the getopt loop). */
void cli_keyrestore_finish(struct cli_keyrestore *k);
/* Human summary (or nothing with --quiet); JSON is the caller's (cli_keyrestore_json). */
void cli_keyrestore_print(const struct kb_etcd_keyrestore_result *r, int dry_run);
void cli_keyrestore_json(const struct kb_etcd_keyrestore_result *r, int dry_run);

#endif
