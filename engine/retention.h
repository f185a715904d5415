/* retention.h - which snapshots a retention policy keeps (kbackup forget). Pure: works on a
 * snapshot list and changes nothing, so the decisions can be shown (--dry-run) or tested with
 * snapshots at chosen times.
 *
 * Snapshots are grouped by source (see KB_GROUP_*) and each group is judged alone, newest
 * first. Hourly/daily/weekly/monthly/yearly rules keep the newest snapshot of each of the last N
 * periods (in local time, TZ) that have one; "last" keeps the N newest; "within" keeps every
 * snapshot newer than the group's newest minus a calendar duration; "tag" keeps every snapshot
 * with that tag. A snapshot is kept when any rule keeps it. */
#ifndef KB_RETENTION_H
#define KB_RETENTION_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "repo.h"

#define KB_KEEP_UNLIMITED (-1)

struct kb_retention_policy {
        /* Number of periods to keep (0: rule off, KB_KEEP_UNLIMITED: every period). */
        int last, hourly, daily, weekly, monthly, yearly;
        /* keep-within as a calendar duration; all zero: rule off. */
        int within_years, within_months, within_days, within_hours;
        /* keep-tag: "KEY=VALUE" keeps snapshots with that tag, "KEY" with any value of it. */
        const char *const *tags;
        size_t ntags;
};

/* Grouping: the kind (volume, etcd) always separates groups; these add to it. "source" is a
 * volume's name (its path when unnamed) or an etcd snapshot's cluster id. */
enum {
        KB_GROUP_HOST = 1 << 0,
        KB_GROUP_SOURCE = 1 << 1,
        KB_GROUP_TAGS = 1 << 2,
};
#define KB_GROUP_DEFAULT (KB_GROUP_HOST | KB_GROUP_SOURCE)

struct kb_retention_item {
        size_t snap;  /* position in the snapshot list */
        size_t group; /* position in group_names */
        int keep;
        char reasons[192]; /* why it is kept: "last, daily, tag env=prod" */
};

struct kb_retention_result {
        struct kb_retention_item *items; /* one per snapshot, in list order (oldest first) */
        size_t count;
        char **group_names; /* "volume ns/data on host n1" */
        size_t ngroups;
};

/* Parse a keep-within duration: digits followed by a unit, repeated: y (years), m (months),
 * w (weeks), d (days), h (hours), e.g. "1y6m", "14d", "36h". */
int kb_retention_parse_within(const char *s, struct kb_retention_policy *p, struct kb_err *err);

/* Parse a --group-by list: comma-separated "host", "source", "tags", or "" for none. */
int kb_retention_parse_group_by(const char *s, unsigned *group_by, struct kb_err *err);

int kb_retention_policy_empty(const struct kb_retention_policy *p);

int kb_retention_apply(const struct kb_snapshot_list *l, const struct kb_retention_policy *p,
                       unsigned group_by, struct kb_retention_result *out, struct kb_err *err);
void kb_retention_result_free(struct kb_retention_result *r);

#endif
