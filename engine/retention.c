/* retention.c - apply a retention policy to a snapshot list, group by group (see retention.h).
 * The bucket rules follow restic's forget, so people who know one know the other. */
#include "retention.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int kb_retention_parse_within(const char *s, struct kb_retention_policy *p, struct kb_err *err)
{
        const char *q = s;
        int any = 0;

        p->within_years = p->within_months = p->within_days = p->within_hours = 0;
        while (*q) {
                char *end;
                long v;

                if (!isdigit((unsigned char)*q))
                        goto bad;
                v = strtol(q, &end, 10);
                if (v < 0 || v > 100000)
                        goto bad;
                switch (*end) {
                case 'y':
                        p->within_years += (int)v;
                        break;
                case 'm':
                        p->within_months += (int)v;
                        break;
                case 'w':
                        p->within_days += (int)v * 7;
                        break;
                case 'd':
                        p->within_days += (int)v;
                        break;
                case 'h':
                        p->within_hours += (int)v;
                        break;
                default:
                        goto bad;
                }
                any = 1;
                q = end + 1;
        }
        if (any)
                return 0;
bad:
        return kb_err_set(err, KB_EUSAGE,
                          "duration '%s': want NUMBER+UNIT repeated, units y, m (months), w, d, h "
                          "(e.g. 1y6m, 14d, 36h)",
                          s);
}

int kb_retention_parse_group_by(const char *s, unsigned *group_by, struct kb_err *err)
{
        const char *p = s;

        *group_by = 0;
        while (*p) {
                size_t n = strcspn(p, ",");

                if (n == 4 && !strncmp(p, "host", 4))
                        *group_by |= KB_GROUP_HOST;
                else if ((n == 6 && !strncmp(p, "source", 6)) || (n == 4 && !strncmp(p, "name", 4)))
                        *group_by |= KB_GROUP_SOURCE;
                else if (n == 4 && !strncmp(p, "tags", 4))
                        *group_by |= KB_GROUP_TAGS;
                else if (n)
                        return kb_err_set(err, KB_EUSAGE,
                                          "--group-by: unknown field '%.*s' (host, source, tags)",
                                          (int)n, p);
                p += n;
                if (*p == ',')
                        p++;
        }
        return 0;
}

int kb_retention_policy_empty(const struct kb_retention_policy *p)
{
        return !p->last && !p->hourly && !p->daily && !p->weekly && !p->monthly && !p->yearly &&
               !p->within_years && !p->within_months && !p->within_days && !p->within_hours &&
               !p->ntags;
}

/* ---- grouping ---- */

static int tag_cmp(const void *a, const void *b)
{
        const Kbackup__Tag *x = *(Kbackup__Tag *const *)a, *y = *(Kbackup__Tag *const *)b;
        int c = strcmp(x->key, y->key);

        return c ? c : strcmp(x->value, y->value);
}

static void source_of(const Kbackup__Snapshot *s, char *out, size_t len)
{
        if (strcmp(s->kind, "etcd") == 0 && s->etcd && s->etcd->cluster_id)
                snprintf(out, len, "cluster %016llx", (unsigned long long)s->etcd->cluster_id);
        else
                snprintf(out, len, "%s", s->name[0] ? s->name : s->source_path);
}

/* A group's key doubles as its human name. Fields are joined with ", "; names may hold it, so
 * two groups could in theory share a key: that only merges their retention, never loses data
 * that the rules of the merged group would keep. */
static char *group_key(const Kbackup__Snapshot *s, unsigned by)
{
        char src[300], *key = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&key, &len);

        if (!f)
                return NULL;
        fprintf(f, "%s", s->kind);
        if (by & KB_GROUP_SOURCE) {
                source_of(s, src, sizeof(src));
                fprintf(f, " %s", src);
        }
        if (by & KB_GROUP_HOST)
                fprintf(f, " on host %s", s->host);
        if ((by & KB_GROUP_TAGS) && s->n_tags) {
                Kbackup__Tag **t = malloc(s->n_tags * sizeof(*t));

                if (t) {
                        memcpy(t, s->tags, s->n_tags * sizeof(*t));
                        qsort(t, s->n_tags, sizeof(*t), tag_cmp);
                        fprintf(f, " tags");
                        for (size_t i = 0; i < s->n_tags; i++)
                                fprintf(f, "%s%s=%s", i ? "," : " ", t[i]->key, t[i]->value);
                        free(t);
                }
        }
        if (fclose(f) != 0) {
                free(key);
                return NULL;
        }
        return key;
}

/* ---- buckets ---- */

enum { R_LAST, R_HOURLY, R_DAILY, R_WEEKLY, R_MONTHLY, R_YEARLY, R_COUNT };

static const char *const rule_name[R_COUNT] = {"last",   "hourly",  "daily",
                                               "weekly", "monthly", "yearly"};

static int64_t bucket(int rule, int64_t unix_nsec, size_t serial)
{
        time_t t = (time_t)(unix_nsec / 1000000000);
        struct tm tm;
        char wk[16];

        if (rule == R_LAST)
                return (int64_t)serial; /* every snapshot is a period of its own */
        if (!localtime_r(&t, &tm))
                return (int64_t)serial;
        switch (rule) {
        case R_HOURLY:
                return ((int64_t)tm.tm_year * 1000 + tm.tm_yday) * 100 + tm.tm_hour;
        case R_DAILY:
                return (int64_t)tm.tm_year * 1000 + tm.tm_yday;
        case R_WEEKLY:
                /* ISO 8601 weeks: a week belongs to the year of its Thursday. */
                strftime(wk, sizeof(wk), "%G%V", &tm);
                return strtoll(wk, NULL, 10);
        case R_MONTHLY:
                return (int64_t)tm.tm_year * 100 + tm.tm_mon;
        default:
                return tm.tm_year;
        }
}

static int has_tag(const Kbackup__Snapshot *s, const char *want)
{
        const char *eq = strchr(want, '=');
        size_t klen = eq ? (size_t)(eq - want) : strlen(want);

        for (size_t i = 0; i < s->n_tags; i++) {
                if (strlen(s->tags[i]->key) != klen || strncmp(s->tags[i]->key, want, klen))
                        continue;
                if (!eq || strcmp(s->tags[i]->value, eq + 1) == 0)
                        return 1;
        }
        return 0;
}

static void add_reason(struct kb_retention_item *it, const char *why)
{
        size_t n = strlen(it->reasons);

        snprintf(it->reasons + n, sizeof(it->reasons) - n, "%s%s", n ? ", " : "", why);
}

/* Snapshots newer than this (strictly) are kept by keep-within. */
static int64_t within_limit(const struct kb_retention_policy *p, int64_t newest_nsec)
{
        time_t t = (time_t)(newest_nsec / 1000000000);
        struct tm tm;

        localtime_r(&t, &tm);
        tm.tm_year -= p->within_years;
        tm.tm_mon -= p->within_months;
        tm.tm_mday -= p->within_days;
        tm.tm_hour -= p->within_hours;
        tm.tm_isdst = -1;
        return (int64_t)mktime(&tm) * 1000000000 + newest_nsec % 1000000000;
}

/* Judge one group; members[] are list positions, oldest first. */
static void judge_group(const struct kb_snapshot_list *l, const struct kb_retention_policy *p,
                        const size_t *members, size_t n, struct kb_retention_item *items)
{
        int left[R_COUNT] = {p->last, p->hourly, p->daily, p->weekly, p->monthly, p->yearly};
        int64_t last_bucket[R_COUNT];
        int have_last[R_COUNT] = {0};
        int within = p->within_years || p->within_months || p->within_days || p->within_hours;
        int64_t limit = 0;
        char why[160];

        if (within && n)
                limit = within_limit(p, l->items[members[n - 1]].snap->time_unix_nsec);
        for (size_t k = n; k > 0; k--) {
                size_t idx = members[k - 1];
                const Kbackup__Snapshot *s = l->items[idx].snap;
                struct kb_retention_item *it = &items[idx];

                for (int rule = 0; rule < R_COUNT; rule++) {
                        int64_t b;

                        if (left[rule] == 0)
                                continue;
                        b = bucket(rule, s->time_unix_nsec, k);
                        if (have_last[rule] && b == last_bucket[rule])
                                continue;
                        have_last[rule] = 1;
                        last_bucket[rule] = b;
                        if (left[rule] > 0)
                                left[rule]--;
                        it->keep = 1;
                        add_reason(it, rule_name[rule]);
                }
                if (within && s->time_unix_nsec > limit) {
                        it->keep = 1;
                        add_reason(it, "within");
                }
                for (size_t t = 0; t < p->ntags; t++) {
                        if (has_tag(s, p->tags[t])) {
                                it->keep = 1;
                                snprintf(why, sizeof(why), "tag %s", p->tags[t]);
                                add_reason(it, why);
                        }
                }
        }
}

void kb_retention_result_free(struct kb_retention_result *r)
{
        for (size_t i = 0; i < r->ngroups; i++)
                free(r->group_names[i]);
        free(r->group_names);
        free(r->items);
        memset(r, 0, sizeof(*r));
}

int kb_retention_apply(const struct kb_snapshot_list *l, const struct kb_retention_policy *p,
                       unsigned group_by, struct kb_retention_result *out, struct kb_err *err)
{
        size_t *members = NULL, n;
        int rc = 0;

        memset(out, 0, sizeof(*out));
        out->items = calloc(l->count ? l->count : 1, sizeof(*out->items));
        out->group_names = calloc(l->count ? l->count : 1, sizeof(*out->group_names));
        members = malloc((l->count ? l->count : 1) * sizeof(*members));
        if (!out->items || !out->group_names || !members) {
                rc = kb_err_set(err, -ENOMEM, "out of memory");
                goto out;
        }
        out->count = l->count;
        for (size_t i = 0; i < l->count; i++) {
                char *key = group_key(l->items[i].snap, group_by);
                size_t g;

                if (!key) {
                        rc = kb_err_set(err, -ENOMEM, "out of memory");
                        goto out;
                }
                for (g = 0; g < out->ngroups; g++)
                        if (strcmp(out->group_names[g], key) == 0)
                                break;
                if (g == out->ngroups)
                        out->group_names[out->ngroups++] = key;
                else
                        free(key);
                out->items[i].snap = i;
                out->items[i].group = g;
        }
        for (size_t g = 0; g < out->ngroups; g++) {
                n = 0;
                for (size_t i = 0; i < l->count; i++) /* the list is oldest first */
                        if (out->items[i].group == g)
                                members[n++] = i;
                judge_group(l, p, members, n, out->items);
        }
out:
        free(members);
        if (rc < 0)
                kb_retention_result_free(out);
        return rc;
}
