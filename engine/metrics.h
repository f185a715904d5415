/* metrics.h - Prometheus metrics of a kbackup run: a set of gauges with labels, rendered in the
 * text exposition format, written to a node-exporter textfile-collector file atomically, or
 * pushed to a Pushgateway. The CLI decides what to measure; this module only keeps, formats and
 * delivers the numbers. */
#ifndef KB_METRICS_H
#define KB_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"
#include "repo.h"

struct kb_label {
        const char *name;
        const char *value; /* any bytes: made valid UTF-8 when stored */
};

struct kb_metrics;

struct kb_metrics *kb_metrics_new(void);
void kb_metrics_free(struct kb_metrics *m);

/* Set gauge `name` (a valid metric name) for this label set (names valid and distinct) to
 * value, replacing an earlier value of the same series. `help` is kept from the first call for
 * the name. 0, -EINVAL for a bad name, or -ENOMEM. */
int kb_metrics_set(struct kb_metrics *m, const char *name, const char *help,
                   const struct kb_label *labels, size_t nlabels, double value);
/* The value of a series (labels in any order): 0, or KB_ENOTFOUND. */
int kb_metrics_get(const struct kb_metrics *m, const char *name, const struct kb_label *labels,
                   size_t nlabels, double *value);

/* Append the text exposition format: per metric "# HELP", "# TYPE name gauge", then one line per
 * series, label values escaped (\\, \", \n). */
int kb_metrics_render(const struct kb_metrics *m, struct kb_buf *out);

/* Add the series of a text-format document (what kb_metrics_render writes; other comments are
 * ignored) to m. KB_ECORRUPT, naming the line, for a line that is not a sample; what was parsed
 * before it stays in m. */
int kb_metrics_parse(struct kb_metrics *m, const char *text, size_t len, struct kb_err *err);

/* Merge `run` into the metrics file at path, atomically (a temp file in the same directory,
 * fsync, rename, fsync of the directory; readers see the old file or the new one): series of
 * the label sets `run` has are replaced by run's, except that `sticky` (may be NULL) keeps its
 * old value when run does not set it for that label set (so a failed run leaves the time of the
 * last success in place). Series of other label sets stay, so commands can share a file. Writers
 * of the same file are serialised by a lock on its directory. A previous file that does not
 * parse is replaced. */
int kb_metrics_write_file(const struct kb_metrics *run, const char *path, const char *sticky,
                          struct kb_err *err);

/* Push to a Pushgateway at url (http[s]://HOST:PORT[/PATH]) under the grouping key job/instance:
 * PUT (replace everything of the group) when `replace`, else POST (replace only the metrics
 * pushed, so a metric left out keeps its pushed value). timeout_ms bounds the whole request. */
int kb_metrics_push(const struct kb_metrics *run, const char *url, const char *job,
                    const char *instance, int replace, long timeout_ms, struct kb_err *err);

/* Snapshot records and the bytes of packs on the repository's backend (listings only, nothing
 * is read or decrypted). */
int kb_metrics_repo_totals(struct kb_repo *r, uint64_t *snapshots, uint64_t *pack_bytes,
                           struct kb_err *err);

#endif
