/* cmd_stats.c - `kbackup stats [SNAPSHOT]`: logical size, size after dedup and after
 * compression, and the ratios. */
#include <stdint.h>
#include <string.h>

#include "cli.h"
#include "lock.h"
#include "stats.h"

static const char help[] =
    "Usage: kbackup stats [SNAPSHOT] [--json]\n"
    "\n"
    "Sizes of one snapshot, or of all of them:\n"
    "  logical      file data as a restore writes it (holes excluded), summed over the\n"
    "               snapshots\n"
    "  after dedup  the distinct chunks they need, uncompressed\n"
    "  stored       those chunks as stored: compressed and encrypted\n"
    "and the ratios logical/after-dedup (dedup), after-dedup/stored (compression) and their\n"
    "product, plus what the whole repository takes on its backend.\n";

static double ratio(uint64_t a, uint64_t b)
{
        return b ? (double)a / (double)b : 0.0;
}

static void print(const struct kb_stats *st, const char *which)
{
        uint64_t raw = st->data_raw + st->tree_raw, stored = st->data_stored + st->tree_stored;
        char lg[32], dd[32], sd[32], rb[32];

        if (cli.json) {
                printf("{\"snapshots\":%llu,\"files\":%llu,\"dirs\":%llu,\"logical_bytes\":%llu,"
                       "\"data_blobs\":%llu,\"data_raw_bytes\":%llu,\"data_stored_bytes\":%llu,"
                       "\"tree_blobs\":%llu,\"tree_raw_bytes\":%llu,\"tree_stored_bytes\":%llu,"
                       "\"missing\":%llu,\"dedup_ratio\":%.4f,\"compression_ratio\":%.4f,"
                       "\"total_ratio\":%.4f,\"repo_packs\":%llu,\"repo_bytes\":%llu,"
                       "\"index_blobs\":%llu}\n",
                       (unsigned long long)st->snapshots, (unsigned long long)st->files,
                       (unsigned long long)st->dirs, (unsigned long long)st->logical,
                       (unsigned long long)st->data_blobs, (unsigned long long)st->data_raw,
                       (unsigned long long)st->data_stored, (unsigned long long)st->tree_blobs,
                       (unsigned long long)st->tree_raw, (unsigned long long)st->tree_stored,
                       (unsigned long long)st->missing, ratio(st->logical, st->data_raw),
                       ratio(raw, stored), ratio(st->logical, stored),
                       (unsigned long long)st->repo_packs, (unsigned long long)st->repo_bytes,
                       (unsigned long long)st->index_blobs);
                return;
        }
        cli_human_bytes(st->logical, lg, sizeof(lg));
        cli_human_bytes(raw, dd, sizeof(dd));
        cli_human_bytes(stored, sd, sizeof(sd));
        cli_human_bytes(st->repo_bytes, rb, sizeof(rb));
        printf("%s\n", which);
        printf("  snapshots:          %llu\n", (unsigned long long)st->snapshots);
        printf("  files, dirs:        %llu, %llu\n", (unsigned long long)st->files,
               (unsigned long long)st->dirs);
        printf("  logical size:       %s\n", lg);
        printf("  after dedup:        %s (%llu chunks, %llu directory records)\n", dd,
               (unsigned long long)st->data_blobs, (unsigned long long)st->tree_blobs);
        printf("  stored:             %s (compressed and encrypted)\n", sd);
        printf("  dedup ratio:        %.2fx\n", ratio(st->logical, st->data_raw));
        printf("  compression ratio:  %.2fx\n", ratio(raw, stored));
        printf("  total ratio:        %.2fx\n", ratio(st->logical, stored));
        if (st->missing)
                printf("  MISSING:            %llu chunk(s) not in the index: run 'kbackup "
                       "check'\n",
                       (unsigned long long)st->missing);
        printf("repository: %llu pack(s), %s on the backend\n", (unsigned long long)st->repo_packs,
               rb);
}

int cmd_stats(int argc, char **argv)
{
        static const struct option opts[] = {CLI_COMMON_OPTIONS, {NULL, 0, NULL, 0}};
        struct kb_snapshot_list l = {0};
        struct kb_stats st;
        struct kb_err err = {0};
        struct kb_repo *repo;
        struct kb_lock *lock;
        size_t only = SIZE_MAX;
        char which[128] = "all snapshots:";
        int c, r, code;

        c = cli_next_option(argc, argv, opts, help);
        if (c == CLI_OPT_STOP)
                return KB_EXIT_OK;
        if (c >= 0)
                return cli_usage("stats", "bad option");
        if (argc - optind > 1)
                return cli_usage("stats", "stats wants at most one SNAPSHOT");
        code = cli_open_locked(CLI_LOCK_READ, "stats", 1, &repo, &lock);
        if (code != KB_EXIT_OK)
                return code;
        r = kb_repo_snapshot_list_indexed(repo, &l, &err);
        if (r == 0 && optind < argc) {
                r = kb_snapshot_list_find(&l, argv[optind], NULL, &err);
                if (r >= 0) {
                        only = (size_t)r;
                        snprintf(which, sizeof(which), "snapshot %.8s:", l.items[r].id);
                        r = 0;
                }
        }
        if (r == 0)
                r = kb_stats_compute(repo, &l, only, &st, &err);
        kb_snapshot_list_free(&l);
        cli_close_locked(repo, lock);
        if (r < 0)
                return cli_fail(&err, r);
        print(&st, which);
        return KB_EXIT_OK;
}
