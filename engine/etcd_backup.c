/* etcd_backup.c - choose an etcd member, stream its snapshot into the repository, verify it, and
 * record an etcd snapshot. */
#include "etcd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunkstream.h"
#include "saver.h"

/* Measured on a 20k-key etcd with 1% of keys rewritten and compacted between snapshots: see
 * docs/etcd-format.md, "Chunk size". */
const struct kb_chunker_params kb_etcd_chunker_params = {4096, 16384, 131072};

#define SAVER_INFLIGHT  (64u << 20)
#define DEFAULT_MAX_LAG 10000

struct member {
        const char *endpoint;
        struct kb_etcd *conn;
        struct kb_etcd_status st;
};

static double mono(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void warnf(const struct kb_etcd_backup_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void warnf(const struct kb_etcd_backup_opts *o, const char *fmt, ...)
{
        char msg[KB_ERR_MSG_MAX + 128];
        va_list ap;

        if (!o->warn)
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        o->warn(msg, o->cb_arg);
}

/* Ask every endpoint for Status and pick the source: members reporting errors or trailing the
 * most advanced one are refused; a healthy follower is preferred to spare the leader. */
static int choose_member(const struct kb_etcd_backup_opts *o, struct member *ms, int *chosen,
                         struct kb_err *err)
{
        uint64_t lag = o->max_lag ? o->max_lag : DEFAULT_MAX_LAG, top = 0;
        struct kb_err first = {0};
        size_t i, ok = 0;
        int best = -1;

        for (i = 0; i < o->n_endpoints; i++) {
                struct kb_err e = {0};
                int rc = kb_etcd_connect(o->endpoints[i], &o->conn, &ms[i].conn, &e);

                if (rc == 0)
                        rc = kb_etcd_status(ms[i].conn, &ms[i].st, &e);
                if (rc == 0 && ms[i].st.errors[0]) {
                        rc = kb_err_set(&e, -EIO, "%s reports errors: %s", o->endpoints[i],
                                        ms[i].st.errors);
                }
                if (rc < 0) {
                        if (!first.code)
                                first = e;
                        if (o->n_endpoints > 1)
                                warnf(o, "skipping etcd member %s: %s", o->endpoints[i], e.msg);
                        kb_etcd_close(ms[i].conn);
                        ms[i].conn = NULL;
                        continue;
                }
                ok++;
                if (ms[i].st.raft_applied_index > top)
                        top = ms[i].st.raft_applied_index;
        }
        if (!ok) {
                if (o->n_endpoints == 1 && err) {
                        *err = first;
                        return first.code;
                }
                return kb_err_set(err, first.code ? first.code : -EHOSTUNREACH,
                                  "no etcd member could be used; first error: %s", first.msg);
        }
        for (i = 0; i < o->n_endpoints; i++) {
                const struct kb_etcd_status *st = &ms[i].st;
                int follower, best_follower;

                if (!ms[i].conn)
                        continue;
                if (st->raft_applied_index + lag < top) {
                        warnf(o,
                              "skipping etcd member %s: %" PRIu64 " raft entries behind the most "
                              "advanced member",
                              ms[i].endpoint, top - st->raft_applied_index);
                        continue;
                }
                follower = st->member_id != st->leader && !st->is_learner;
                if (best < 0) {
                        best = (int)i;
                        continue;
                }
                best_follower =
                    ms[best].st.member_id != ms[best].st.leader && !ms[best].st.is_learner;
                if ((follower && !best_follower) ||
                    (follower == best_follower &&
                     st->raft_applied_index > ms[best].st.raft_applied_index))
                        best = (int)i;
        }
        *chosen = best;
        return 0;
}

struct stream_ctx {
        const struct kb_etcd_backup_opts *o;
        struct kb_chunkstream *cs;
        struct kb_etcd_hasher hasher;
        struct kb_err err;
        uint64_t expected;
        double last_progress;
};

static int on_stream(const uint8_t *data, size_t len, void *arg)
{
        struct stream_ctx *s = arg;
        int rc;

        kb_etcd_hasher_update(&s->hasher, data, len);
        rc = kb_chunkstream_write(s->cs, data, len, &s->err);
        if (rc < 0)
                return rc;
        if (s->o->progress) {
                double t = mono();

                if (t - s->last_progress >= 0.25) {
                        struct kb_progress p = {0, s->hasher.total, 1, s->expected, NULL};

                        s->last_progress = t;
                        s->o->progress(&p, s->o->cb_arg);
                }
        }
        return 0;
}

/* The snapshot's tree: one file node holding the whole stream. */
static int save_tree(struct kb_repo *repo, const struct kb_chunkstream *cs, uint64_t size,
                     uint8_t tree_id[KB_ID_LEN], struct kb_save_result *res, struct kb_err *err)
{
        Kbackup__Tree tree = KBACKUP__TREE__INIT;
        Kbackup__Node node = KBACKUP__NODE__INIT, *nodes[1] = {&node};
        ProtobufCBinaryData *content;
        const uint8_t *ids;
        size_t n;
        int rc;

        ids = kb_chunkstream_ids(cs, &n);
        content = calloc(n ? n : 1, sizeof(*content));
        if (!content)
                return kb_err_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                content[i].data = (uint8_t *)ids + i * KB_ID_LEN;
                content[i].len = KB_ID_LEN;
        }
        node.name.data = (uint8_t *)KB_ETCD_SNAPSHOT_FILE;
        node.name.len = strlen(KB_ETCD_SNAPSHOT_FILE);
        node.type = KBACKUP__NODE_TYPE__NODE_FILE;
        node.mode = 0600;
        node.size = size;
        /* No times: the snapshot record has them, and an unchanged database then yields the
         * same tree blob, which dedups like its chunks. */
        node.n_content = n;
        node.content = content;
        tree.n_nodes = 1;
        tree.nodes = nodes;
        rc = kb_repo_tree_save(repo, &tree, tree_id, res, err);
        free(content);
        return rc;
}

static int record(struct kb_repo *repo, const struct kb_etcd_backup_opts *o, const struct member *m,
                  const char *member_name, const uint8_t *trailer, const uint8_t tree_id[KB_ID_LEN],
                  Kbackup__SnapshotStats *stats, char id_hex[KB_ID_HEX_LEN + 1], struct kb_err *err)
{
        Kbackup__Snapshot snap = KBACKUP__SNAPSHOT__INIT;
        Kbackup__EtcdInfo info = KBACKUP__ETCD_INFO__INIT;
        struct kb_snapshot_meta meta;
        char name[64];
        int rc;

        snprintf(name, sizeof(name), "etcd-%016" PRIx64, m->st.cluster_id);
        rc = kb_snapshot_meta_init(&meta, &snap, "etcd", o->name ? o->name : name, o->tags,
                                   o->ntags, err);
        if (rc < 0)
                return rc;
        if (o->set_id)
                snap.set_id = (char *)o->set_id;
        if (o->cluster)
                snap.cluster = (char *)o->cluster;
        info.cluster_id = m->st.cluster_id;
        info.member_id = m->st.member_id;
        info.member_name = (char *)member_name;
        info.revision = m->st.revision;
        info.raft_index = m->st.raft_index;
        info.raft_term = m->st.raft_term;
        info.db_size = (int64_t)(stats->bytes_read - KB_ETCD_TRAILER_LEN);
        info.version = (char *)m->st.version;
        info.sha256.data = (uint8_t *)trailer;
        info.sha256.len = KB_ETCD_TRAILER_LEN;
        info.endpoint = (char *)m->endpoint;
        info.chunk_min = kb_etcd_chunker_params.min_size;
        info.chunk_avg = kb_etcd_chunker_params.avg_size;
        info.chunk_max = kb_etcd_chunker_params.max_size;
        info.leader = m->st.member_id == m->st.leader;
        snap.etcd = &info;
        snap.source_path = (char *)m->endpoint;
        snap.tree.data = (uint8_t *)tree_id;
        snap.tree.len = KB_ID_LEN;
        snap.stats = stats;
        rc = kb_repo_flush(repo, err);
        if (rc == 0)
                rc = kb_repo_snapshot_save(repo, &snap, id_hex, err);
        kb_snapshot_meta_free(&meta);
        return rc;
}

static void member_name(struct kb_etcd *c, uint64_t id, char *out, size_t len)
{
        struct kb_etcd_member *ms = NULL;
        size_t n = 0;

        out[0] = '\0';
        if (kb_etcd_members(c, &ms, &n, NULL) < 0)
                return;
        for (size_t i = 0; i < n; i++)
                if (ms[i].id == id)
                        snprintf(out, len, "%s", ms[i].name);
        free(ms);
}

int kb_etcd_backup(struct kb_repo *repo, const struct kb_etcd_backup_opts *o,
                   struct kb_etcd_backup_result *res, struct kb_err *err)
{
        Kbackup__SnapshotStats stats = KBACKUP__SNAPSHOT_STATS__INIT;
        struct stream_ctx sc = {0};
        struct kb_saver *saver = NULL;
        struct kb_saver_stats ss;
        struct kb_save_result tres = {0};
        struct member *ms;
        uint8_t trailer[KB_ETCD_TRAILER_LEN], tree_id[KB_ID_LEN];
        char mname[128], id_hex[KB_ID_HEX_LEN + 1];
        double start = mono();
        int chosen = -1, rc;

        if (!o->n_endpoints)
                return kb_err_set(err, KB_EUSAGE, "no etcd endpoints given");
        ms = calloc(o->n_endpoints, sizeof(*ms));
        if (!ms)
                return kb_err_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < o->n_endpoints; i++)
                ms[i].endpoint = o->endpoints[i];
        rc = choose_member(o, ms, &chosen, err);
        if (rc < 0)
                goto out;
        member_name(ms[chosen].conn, ms[chosen].st.member_id, mname, sizeof(mname));

        {
                uint64_t packs, blobs;

                rc = kb_repo_adopt_packs(repo, &packs, &blobs, err);
                if (rc < 0)
                        goto out;
        }
        rc = kb_saver_new(repo, o->threads, SAVER_INFLIGHT, &saver, err);
        if (rc < 0)
                goto out;
        rc = kb_chunkstream_new(saver, &kb_etcd_chunker_params, kb_repo_chunker_seed(repo), &sc.cs,
                                err);
        if (rc < 0)
                goto out;
        sc.o = o;
        sc.expected = (uint64_t)ms[chosen].st.db_size + KB_ETCD_TRAILER_LEN;
        rc = kb_etcd_hasher_init(&sc.hasher, err);
        if (rc < 0)
                goto out;
        rc = kb_etcd_snapshot(ms[chosen].conn, on_stream, &sc, err);
        if (rc < 0 && sc.err.code && err)
                *err = sc.err; /* our own failure (storage) says more than "cancelled" */
        if (rc == 0)
                rc = kb_etcd_hasher_final(&sc.hasher, trailer, err);
        if (rc == 0)
                rc = kb_chunkstream_finish(sc.cs, err);
        if (rc < 0) {
                kb_err_prefix(
                    err, "etcd snapshot from %s failed, nothing recorded: ", ms[chosen].endpoint);
                goto out;
        }
        kb_saver_get_stats(saver, &ss);
        rc = save_tree(repo, sc.cs, sc.hasher.total, tree_id, &tres, err);
        if (rc < 0)
                goto out;
        stats.files = 1;
        stats.bytes_read = sc.hasher.total;
        stats.bytes_new = ss.bytes_new + (tres.added ? tres.stored_bytes : 0);
        stats.bytes_stored = ss.bytes_stored + tres.stored_bytes;
        stats.duration_sec = mono() - start;
        rc = record(repo, o, &ms[chosen], mname, trailer, tree_id, &stats, id_hex, err);
        if (rc < 0)
                goto out;
        if (res) {
                const struct kb_etcd_status *st = &ms[chosen].st;

                memcpy(res->snapshot_id, id_hex, sizeof(res->snapshot_id));
                snprintf(res->endpoint, sizeof(res->endpoint), "%s", ms[chosen].endpoint);
                snprintf(res->member_name, sizeof(res->member_name), "%s", mname);
                res->member_id = st->member_id;
                res->cluster_id = st->cluster_id;
                res->revision = st->revision;
                res->leader = st->member_id == st->leader;
                res->bytes_read = stats.bytes_read;
                res->bytes_new = stats.bytes_new;
                res->bytes_stored = stats.bytes_stored;
                res->duration_sec = mono() - start;
        }
out:
        kb_etcd_hasher_free(&sc.hasher);
        kb_chunkstream_free(sc.cs);
        if (saver)
                kb_saver_free(saver, NULL);
        /* After a failed stream, index what was uploaded so the next backup reuses it. Nothing
         * references it until a snapshot does. */
        if (rc < 0 && chosen >= 0)
                kb_repo_flush(repo, NULL);
        for (size_t i = 0; i < o->n_endpoints; i++)
                kb_etcd_close(ms[i].conn);
        free(ms);
        return rc;
}
