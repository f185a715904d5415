/* cmd_prune.c - `kbackup prune`: remove data no snapshot references (also run by forget
 * --prune). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "lock.h"
#include "prune.h"

static const char help[] =
    "Usage: kbackup prune [--max-unused PERCENT] [--dry-run] [--lock-wait DURATION]\n"
    "\n"
    "Remove the data that no snapshot references any more (after 'kbackup forget'): packs\n"
    "nobody uses are deleted, packs that are partly unused are rewritten (their live chunks\n"
    "copied into new packs) when more than PERCENT of them is unused, and one new index for\n"
    "every live chunk replaces the old index files. New packs and the new index are written\n"
    "before anything is deleted, so an interrupted prune leaves a sound repository.\n"
    "\n"
    "Prune takes the exclusive repository lock: it waits (up to --lock-wait, default 10m)\n"
    "for running backups and restores to finish, and backups started meanwhile wait for it.\n"
    "\n"
    "Options:\n"
    "  --max-unused PERCENT   repack packs more than PERCENT unused (default 20; 100: never\n"
    "                         repack, only delete packs nobody uses)\n"
    "  --dry-run              say what would be done, change nothing\n"
    "  --lock-wait DURATION   how long to wait for the lock (e.g. 90s, 10m; 0: do not wait)\n";

enum { OPT_MAX_UNUSED = OPT_FIRST_COMMAND, OPT_DRY_RUN, OPT_LOCK_WAIT };

/* Progress on a TTY; and, for the crash tests only, a pause after every step so that a kill
 * can land between any two of them (KBACKUP_TEST_PRUNE_STEP_MS, like KBACKUP_TEST_KDF). */
static void prune_progress(const char *phase, uint64_t done, uint64_t total, void *arg)
{
        const char *delay = getenv("KBACKUP_TEST_PRUNE_STEP_MS");

        (void)arg;
        if (delay && *delay) {
                long ms = strtol(delay, NULL, 10);
                struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

                if (ms > 0)
                        nanosleep(&ts, NULL);
        }
        if (cli.quiet || cli.json || !isatty(STDOUT_FILENO))
                return;
        printf("\r\033[K%s %llu/%llu", phase, (unsigned long long)done, (unsigned long long)total);
        fflush(stdout);
        if (done == total)
                printf("\r\033[K");
}

static void print_result(const struct kb_prune_result *p, int dry_run)
{
        char before[32], after[32], live[32], written[32], freed[32];
        uint64_t f = p->bytes_before > p->bytes_after ? p->bytes_before - p->bytes_after : 0;

        if (cli.json) {
                printf("{\"dry_run\":%s,\"snapshots\":%llu,\"packs_before\":%llu,"
                       "\"bytes_before\":%llu,\"packs_unused\":%llu,\"packs_repacked\":%llu,"
                       "\"packs_unindexed\":%llu,\"packs_missing\":%llu,\"packs_written\":%llu,"
                       "\"bytes_written\":%llu,\"blobs_live\":%llu,\"bytes_live\":%llu,"
                       "\"index_written\":%llu,\"index_deleted\":%llu,\"packs_after\":%llu,"
                       "\"bytes_after\":%llu,\"bytes_freed\":%llu}\n",
                       dry_run ? "true" : "false", (unsigned long long)p->snapshots,
                       (unsigned long long)p->packs_before, (unsigned long long)p->bytes_before,
                       (unsigned long long)p->packs_unused, (unsigned long long)p->packs_repacked,
                       (unsigned long long)p->packs_unindexed, (unsigned long long)p->packs_missing,
                       (unsigned long long)p->packs_written, (unsigned long long)p->bytes_written,
                       (unsigned long long)p->blobs_live, (unsigned long long)p->bytes_live,
                       (unsigned long long)p->index_written, (unsigned long long)p->index_deleted,
                       (unsigned long long)p->packs_after, (unsigned long long)p->bytes_after,
                       (unsigned long long)f);
                return;
        }
        if (cli.quiet)
                return;
        cli_human_bytes(p->bytes_before, before, sizeof(before));
        cli_human_bytes(p->bytes_after, after, sizeof(after));
        cli_human_bytes(p->bytes_live, live, sizeof(live));
        cli_human_bytes(p->bytes_written, written, sizeof(written));
        cli_human_bytes(f, freed, sizeof(freed));
        printf("%llu snapshot(s) use %llu chunk(s), %s stored\n", (unsigned long long)p->snapshots,
               (unsigned long long)p->blobs_live, live);
        printf("packs before: %llu (%s)\n", (unsigned long long)p->packs_before, before);
        printf("%s %llu unused pack(s), %llu pack(s) no index names (leftovers), %llu "
               "partly used pack(s) to repack\n",
               dry_run ? "would delete" : "deleted", (unsigned long long)p->packs_unused,
               (unsigned long long)p->packs_unindexed, (unsigned long long)p->packs_repacked);
        if (!dry_run)
                printf("wrote %llu new pack(s) (%s) and %llu index file(s); removed %llu old "
                       "index file(s)\n",
                       (unsigned long long)p->packs_written, written,
                       (unsigned long long)p->index_written, (unsigned long long)p->index_deleted);
        if (p->packs_missing)
                printf("dropped %llu missing pack(s) that held nothing in use from the index\n",
                       (unsigned long long)p->packs_missing);
        printf("packs after: %llu (%s), %s %s\n", (unsigned long long)p->packs_after, after, freed,
               dry_run ? "would be freed (about)" : "freed");
}

int cli_prune_run(struct kb_repo *repo, struct kb_lock *lock, unsigned max_unused, int dry_run)
{
        struct kb_prune_opts o = {.max_unused_pct = max_unused, .dry_run = dry_run, .lock = lock};
        struct kb_prune_result res;
        struct kb_err err = {0};
        int r;

        o.progress = prune_progress;
        r = kb_prune(repo, &o, &res, &err);
        if (r < 0)
                return cli_fail(&err, r);
        print_result(&res, dry_run);
        return KB_EXIT_OK;
}

int cli_parse_percent(const char *s, unsigned *out)
{
        char *end;
        unsigned long v = strtoul(s, &end, 10);

        if (end == s || (*end && strcmp(end, "%")) || v > 100)
                return -1;
        *out = (unsigned)v;
        return 0;
}

int cmd_prune(int argc, char **argv)
{
        static const struct option opts[] = {
            CLI_COMMON_OPTIONS,
            {"max-unused", required_argument, NULL, OPT_MAX_UNUSED},
            {"dry-run", no_argument, NULL, OPT_DRY_RUN},
            {"lock-wait", required_argument, NULL, OPT_LOCK_WAIT},
            {NULL, 0, NULL, 0}};
        unsigned max_unused = KB_PRUNE_DEFAULT_MAX_UNUSED;
        struct kb_repo *repo;
        struct kb_lock *lock;
        int c, dry_run = 0, code;

        while ((c = cli_next_option(argc, argv, opts, help)) >= 0) {
                switch (c) {
                case OPT_MAX_UNUSED:
                        if (cli_parse_percent(optarg, &max_unused) < 0)
                                return cli_usage("prune", "--max-unused wants a percentage 0-100");
                        break;
                case OPT_DRY_RUN:
                        dry_run = 1;
                        break;
                case OPT_LOCK_WAIT:
                        cli_lock_wait = optarg;
                        break;
                default:
                        return cli_usage("prune", "bad option");
                }
        }
        if (c == CLI_OPT_STOP)
                return KB_EXIT_OK;
        if (optind != argc)
                return cli_usage("prune", "unexpected argument '%s'", argv[optind]);
        /* A dry run deletes nothing: a shared lock is enough and does not stop backups. */
        code =
            cli_open_locked(dry_run ? CLI_LOCK_READ : CLI_LOCK_EXCLUSIVE, "prune", 0, &repo, &lock);
        if (code != KB_EXIT_OK)
                return code;
        code = cli_prune_run(repo, lock, max_unused, dry_run);
        fflush(stdout); /* the summary is out before the lock is released */
        cli_close_locked(repo, lock);
        return code;
}
