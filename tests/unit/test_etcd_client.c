/* test_etcd_client.c - the etcd client against a real etcd 3.4 on loopback (plain, TLS with
 * client certificates, auth), started and stopped around every test by tests/tools/etcd_server.sh.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "etcd_client.h"

/* What etcd_server.sh printed about the server of the current test. */
static struct {
        char endpoint[128], dir[256], name[64], ctlflags[1536];
        char cacert[300], cert[300], key[300], alice_cert[300], alice_key[300], other_ca[300];
        int pid, port;
} srv;

static const char *script(void)
{
        static char path[512];
        const char *src = getenv("KB_SOURCE_DIR");

        if (src) {
                snprintf(path, sizeof(path), "%s/tests/tools/etcd_server.sh", src);
        } else {
                /* __FILE__ is absolute under CMake: .../tests/unit/test_etcd_client.c */
                snprintf(path, sizeof(path), "%s", __FILE__);
                *strrchr(path, '/') = '\0';
                *strrchr(path, '/') = '\0';
                strcat(path, "/tools/etcd_server.sh");
        }
        return path;
}

static void copy_val(char *dst, size_t n, const char *v)
{
        size_t l = strlen(v);

        if (l && v[l - 1] == '\n')
                l--;
        if (l >= 2 && v[0] == '\'' && v[l - 1] == '\'') {
                v++;
                l -= 2;
        }
        cr_assert_lt(l, n, "value too long: %s", v);
        memcpy(dst, v, l);
        dst[l] = '\0';
}

static void start_etcd(const char *flags)
{
        char cmd[1024], line[2048];
        FILE *p;

        memset(&srv, 0, sizeof(srv));
        snprintf(cmd, sizeof(cmd), "bash %s start %s --owner %d", script(), flags, (int)getpid());
        p = popen(cmd, "r");
        cr_assert_not_null(p);
        while (fgets(line, sizeof(line), p)) {
                char *eq = strchr(line, '=');
                struct {
                        const char *k;
                        char *dst;
                        size_t n;
                } map[] = {
                    {"ETCD_ENDPOINT", srv.endpoint, sizeof(srv.endpoint)},
                    {"ETCD_DIR", srv.dir, sizeof(srv.dir)},
                    {"ETCD_NAME", srv.name, sizeof(srv.name)},
                    {"ETCDCTL_FLAGS", srv.ctlflags, sizeof(srv.ctlflags)},
                    {"ETCD_CACERT", srv.cacert, sizeof(srv.cacert)},
                    {"ETCD_CERT", srv.cert, sizeof(srv.cert)},
                    {"ETCD_KEY", srv.key, sizeof(srv.key)},
                    {"ETCD_ALICE_CERT", srv.alice_cert, sizeof(srv.alice_cert)},
                    {"ETCD_ALICE_KEY", srv.alice_key, sizeof(srv.alice_key)},
                    {"ETCD_OTHER_CACERT", srv.other_ca, sizeof(srv.other_ca)},
                };

                if (!eq)
                        continue;
                *eq++ = '\0';
                if (!strcmp(line, "ETCD_PID"))
                        srv.pid = atoi(eq);
                else if (!strcmp(line, "ETCD_CLIENT_PORT"))
                        srv.port = atoi(eq);
                for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
                        if (!strcmp(line, map[i].k))
                                copy_val(map[i].dst, map[i].n, eq);
        }
        cr_assert_eq(pclose(p), 0, "etcd_server.sh start %s failed", flags);
        cr_assert(srv.pid > 0 && srv.endpoint[0] && srv.dir[0]);
}

static void stop_etcd(void)
{
        char cmd[1024];

        if (srv.pid > 0)
                kill(srv.pid, SIGCONT); /* in case a test left it stopped */
        if (srv.dir[0]) {
                snprintf(cmd, sizeof(cmd), "bash %s stop '%s'", script(), srv.dir);
                cr_expect_eq(system(cmd), 0);
        }
        kb_etcd_global_shutdown();
}

static void start_plain(void)
{
        kb_etcd_global_init();
        start_etcd("--name kbtest-plain");
}

static void start_tls(void)
{
        kb_etcd_global_init();
        start_etcd("--tls");
}

static void start_auth(void)
{
        kb_etcd_global_init();
        start_etcd("--auth");
}

static void start_tls_auth(void)
{
        kb_etcd_global_init();
        start_etcd("--tls --auth");
}

static void start_auth_ttl(void)
{
        kb_etcd_global_init();
        start_etcd("--auth --token-ttl 1");
}

static void no_server(void)
{
        memset(&srv, 0, sizeof(srv));
        kb_etcd_global_init();
}

TestSuite(etcd_plain, .init = start_plain, .fini = stop_etcd, .timeout = 120);
TestSuite(etcd_tls, .init = start_tls, .fini = stop_etcd, .timeout = 120);
TestSuite(etcd_auth, .init = start_auth, .fini = stop_etcd, .timeout = 120);
TestSuite(etcd_tls_auth, .init = start_tls_auth, .fini = stop_etcd, .timeout = 120);
TestSuite(etcd_auth_ttl, .init = start_auth_ttl, .fini = stop_etcd, .timeout = 120);
TestSuite(etcd_none, .init = no_server, .fini = stop_etcd, .timeout = 60);

/* ---- helpers ---- */

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct kb_etcd *connect_ok(const struct kb_etcd_opts *o)
{
        struct kb_etcd *c = NULL;
        struct kb_err e = {0};

        cr_assert_eq(kb_etcd_connect(srv.endpoint, o, &c, &e), 0, "%s", e.msg);
        cr_assert_str_eq(kb_etcd_endpoint(c), srv.endpoint);
        return c;
}

static int connect_fails(const char *ep, const struct kb_etcd_opts *o, struct kb_err *e)
{
        struct kb_etcd *c = NULL;
        int rc = kb_etcd_connect(ep, o, &c, e);

        cr_assert_neq(rc, 0, "connect to %s should fail", ep);
        cr_assert_null(c);
        cr_assert_not_null(strstr(e->msg, ep), "message names the endpoint: %s", e->msg);
        cr_assert_null(strchr(e->msg, '\n'));
        return rc;
}

/* dbSize as etcdctl reports it. */
static long long etcdctl_db_size(void)
{
        char cmd[2048], out[4096];
        size_t n;
        FILE *p;
        char *q;

        snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 etcdctl %s endpoint status -w json 2>/dev/null",
                 srv.ctlflags);
        p = popen(cmd, "r");
        cr_assert_not_null(p);
        n = fread(out, 1, sizeof(out) - 1, p);
        out[n] = '\0';
        cr_assert_eq(pclose(p), 0, "etcdctl endpoint status failed: %s", out);
        q = strstr(out, "\"dbSize\":");
        cr_assert_not_null(q, "%s", out);
        return strtoll(q + 9, NULL, 10);
}

/* n keys PREFIX%06d with values of vsize bytes derived from seed, in Txns under 3 MiB. */
static void load_keys(struct kb_etcd *c, const char *prefix, int n, size_t vsize, int seed)
{
        size_t batch = (3u << 20) / (vsize + 64);
        struct kb_etcd_kv *kv;
        char(*keys)[64];
        uint8_t *vals;
        struct kb_err e = {0};

        if (batch > 500)
                batch = 500;
        kv = calloc(batch, sizeof(*kv));
        keys = calloc(batch, sizeof(*keys));
        vals = malloc(batch * (vsize ? vsize : 1));
        cr_assert(kv && keys && vals);
        for (int i = 0; i < n;) {
                size_t m = 0;

                for (; m < batch && i < n; m++, i++) {
                        snprintf(keys[m], sizeof(keys[m]), "%s%06d", prefix, i);
                        for (size_t j = 0; j < vsize; j++)
                                vals[m * vsize + j] = (uint8_t)(i * 31 + j * 7 + seed);
                        kv[m].key = (const uint8_t *)keys[m];
                        kv[m].klen = strlen(keys[m]);
                        kv[m].val = vals + m * vsize;
                        kv[m].vlen = vsize;
                }
                cr_assert_eq(kb_etcd_txn_put(c, kv, m, &e), 0, "%s", e.msg);
        }
        free(kv);
        free(keys);
        free(vals);
}

struct collect {
        uint8_t *data;
        size_t len, cap;
        size_t msgs, last_len;
        int stop_after; /* >0: after that many messages, do `action` */
        int action;     /* a signal to send to etcd, or <0: return that code */
};

static int collect_cb(const uint8_t *d, size_t n, void *arg)
{
        struct collect *s = arg;

        if (s->len + n > s->cap) {
                s->cap = (s->len + n) * 2;
                s->data = realloc(s->data, s->cap);
                cr_assert_not_null(s->data);
        }
        memcpy(s->data + s->len, d, n);
        s->len += n;
        s->last_len = n;
        if (++s->msgs == (size_t)s->stop_after) {
                if (s->action < 0)
                        return s->action;
                kill(srv.pid, s->action);
        }
        return 0;
}

/* The stream is the database followed by a separate 32-byte message: its sha256. The callback gets
 * pieces of messages as gRPC received them, so the last piece holds no database byte, but may
 * hold only the end of the trailer. */
static void check_stream(const struct collect *s, long long db_size)
{
        uint8_t h[crypto_hash_sha256_BYTES];

        cr_assert_eq(s->len, (size_t)db_size + 32, "stream %zu bytes, db %lld", s->len, db_size);
        cr_assert(s->last_len > 0 && s->last_len <= 32, "last piece %zu bytes", s->last_len);
        crypto_hash_sha256(h, s->data, s->len - 32);
        cr_assert_eq(memcmp(h, s->data + s->len - 32, 32), 0, "sha256 trailer mismatch");
}

static void snapshot_ok(struct kb_etcd *c)
{
        struct kb_etcd_status st;
        struct collect s = {0};
        struct kb_err e = {0};

        cr_assert_eq(kb_etcd_snapshot(c, collect_cb, &s, &e), 0, "%s", e.msg);
        /* After the snapshot: Status reports the size as of the last backend commit, and the
         * snapshot forces one, so before it the figure may lag recent writes. */
        cr_assert_eq(kb_etcd_status(c, &st, &e), 0, "%s", e.msg);
        check_stream(&s, st.db_size);
        cr_assert_gt(s.msgs, 1);
        free(s.data);
}

struct seen {
        int n;
        int bad;
        int64_t old_rev_of_late_key;
        struct kb_etcd *c; /* when set: overwrite a later key while walking */
        char prefix[32];
};

static int range_cb(const struct kb_etcd_kv *kv, void *arg)
{
        struct seen *s = arg;
        char want[64];

        snprintf(want, sizeof(want), "%s%06d", s->prefix, s->n);
        if (kv->klen != strlen(want) || memcmp(kv->key, want, kv->klen) ||
            kv->vlen != (size_t)(s->n % 97) || kv->create_rev <= 0 || kv->mod_rev <= 0 ||
            kv->version != 1 || kv->lease != 0)
                s->bad++;
        for (size_t j = 0; j < kv->vlen; j++)
                if (kv->val[j] != (uint8_t)(s->n * 31 + j * 7 + 1))
                        s->bad++;
        if (s->c && s->n == 10) {
                struct kb_err e = {0};
                char k[64];

                /* A later page must still show the revision the walk started at. */
                snprintf(k, sizeof(k), "%s%06d", s->prefix, 2400);
                cr_assert_eq(kb_etcd_put(s->c, k, strlen(k), "changed", 7, &e), 0, "%s", e.msg);
        }
        s->n++;
        return 0;
}

/* Values of i % 97 bytes, seed 1 (see range_cb). */
static void load_varied(struct kb_etcd *c, const char *prefix, int n)
{
        for (int i = 0; i < n; i += 100) {
                struct kb_etcd_kv kv[100];
                char keys[100][64];
                uint8_t vals[100][97];
                struct kb_err e = {0};
                int m = 0;

                for (; m < 100 && i + m < n; m++) {
                        int k = i + m;

                        snprintf(keys[m], sizeof(keys[m]), "%s%06d", prefix, k);
                        for (int j = 0; j < k % 97; j++)
                                vals[m][j] = (uint8_t)(k * 31 + j * 7 + 1);
                        kv[m] = (struct kb_etcd_kv){.key = (uint8_t *)keys[m],
                                                    .klen = strlen(keys[m]),
                                                    .val = vals[m],
                                                    .vlen = (size_t)(k % 97)};
                }
                cr_assert_eq(kb_etcd_txn_put(c, kv, (size_t)m, &e), 0, "%s", e.msg);
        }
}

/* ---- plain ---- */

Test(etcd_plain, status_matches_etcdctl)
{
        struct kb_etcd *c = connect_ok(NULL);
        struct kb_etcd_status st;
        struct kb_err e = {0};

        load_keys(c, "/status/", 300, 1000, 0);
        usleep(500000); /* let the backend commit (every 100 ms), so the size is settled */
        cr_assert_eq(kb_etcd_status(c, &st, &e), 0, "%s", e.msg);
        cr_assert_neq(st.cluster_id, 0);
        cr_assert_neq(st.member_id, 0);
        cr_assert_eq(st.leader, st.member_id, "a single member leads itself");
        cr_assert_gt(st.raft_index, 0);
        cr_assert_gt(st.raft_term, 0);
        cr_assert_gt(st.raft_applied_index, 0);
        cr_assert_gt(st.revision, 1);
        cr_assert_gt(st.db_size, 300000);
        cr_assert_eq(strncmp(st.version, "3.", 2), 0, "version %s", st.version);
        cr_assert_str_empty(st.errors);
        cr_assert_not(st.is_learner);
        cr_assert_eq(st.db_size, etcdctl_db_size());
        kb_etcd_close(c);
}

Test(etcd_plain, members_name_the_member)
{
        struct kb_etcd *c = connect_ok(NULL);
        struct kb_etcd_member *m = NULL;
        struct kb_etcd_status st;
        struct kb_err e = {0};
        size_t n = 0;

        cr_assert_eq(kb_etcd_members(c, &m, &n, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_etcd_status(c, &st, &e), 0, "%s", e.msg);
        cr_assert_eq(n, 1);
        cr_assert_str_eq(m[0].name, "kbtest-plain");
        cr_assert_eq(m[0].id, st.member_id);
        free(m);
        kb_etcd_close(c);
}

Test(etcd_plain, snapshot_stream_is_db_plus_sha256)
{
        struct kb_etcd *c = connect_ok(NULL);

        load_keys(c, "/snap/", 2000, 700, 3);
        snapshot_ok(c);
        kb_etcd_close(c);
}

struct one {
        int n;
        char val[128];
        size_t vlen;
        int64_t version;
};

static int one_cb(const struct kb_etcd_kv *kv, void *arg)
{
        struct one *o = arg;

        o->n++;
        cr_assert_lt(kv->vlen, sizeof(o->val));
        memcpy(o->val, kv->val, kv->vlen);
        o->vlen = kv->vlen;
        o->version = kv->version;
        return 0;
}

Test(etcd_plain, put_range_paged_and_pinned)
{
        struct kb_etcd *c = connect_ok(NULL);
        struct seen s = {.prefix = "/kv/"};
        struct kb_err e = {0};
        struct one o = {0};
        int64_t rev = 0, rev2 = 0;

        /* 2500 keys: three pages of 1000. */
        load_varied(c, "/kv/", 2500);
        s.c = c;
        cr_assert_eq(kb_etcd_range(c, "/kv/", 4, "/kv0", 4, 0, 0, range_cb, &s, &rev, &e), 0, "%s",
                     e.msg);
        cr_assert_eq(s.n, 2500);
        cr_assert_eq(s.bad, 0, "%d keys differ (or the change made mid-walk showed)", s.bad);
        cr_assert_gt(rev, 0);

        /* A limit that crosses a page boundary; the revision moved by the one put. */
        memset(&s, 0, sizeof(s));
        strcpy(s.prefix, "/kv/");
        cr_assert_eq(kb_etcd_range(c, "/kv/", 4, "/kv0", 4, 0, 1500, range_cb, &s, &rev2, &e), 0,
                     "%s", e.msg);
        cr_assert_eq(s.n, 1500);
        cr_assert_eq(s.bad, 0);
        cr_assert_eq(rev2, rev + 1);

        /* One key: the new value now, the old one at the old revision. */
        cr_assert_eq(kb_etcd_range(c, "/kv/002400", 10, NULL, 0, 0, 0, one_cb, &o, NULL, &e), 0,
                     "%s", e.msg);
        cr_assert_eq(o.n, 1);
        cr_assert_eq(o.vlen, 7);
        cr_assert_eq(memcmp(o.val, "changed", 7), 0);
        cr_assert_eq(o.version, 2);
        memset(&o, 0, sizeof(o));
        cr_assert_eq(kb_etcd_range(c, "/kv/002400", 10, NULL, 0, rev, 0, one_cb, &o, NULL, &e), 0,
                     "%s", e.msg);
        cr_assert_eq(o.n, 1);
        cr_assert_eq(o.vlen, 2400 % 97);
        cr_assert_eq(o.version, 1);

        /* A missing key: no callback. */
        memset(&o, 0, sizeof(o));
        cr_assert_eq(kb_etcd_range(c, "/nope", 5, NULL, 0, 0, 0, one_cb, &o, NULL, &e), 0);
        cr_assert_eq(o.n, 0);
        kb_etcd_close(c);
}

static struct kb_etcd *connect_big(int timeout_ms)
{
        struct kb_etcd_opts o = {.timeout_ms = timeout_ms};
        struct kb_etcd *c = connect_ok(&o);

        /* 24 MB: more than gRPC's flow-control windows let the server push ahead. */
        load_keys(c, "/big/", 1500, 16000, 5);
        return c;
}

Test(etcd_plain, snapshot_stalled_server_times_out)
{
        struct kb_etcd *c = connect_big(1000);
        struct collect s = {.stop_after = 2, .action = SIGSTOP};
        struct kb_err e = {0};
        double t0 = now_s();

        cr_assert_eq(kb_etcd_snapshot(c, collect_cb, &s, &e), -ETIMEDOUT, "%s", e.msg);
        cr_assert_lt(now_s() - t0, 20.0);
        cr_assert_not_null(strstr(e.msg, "stalled"), "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, srv.endpoint), "%s", e.msg);
        kill(srv.pid, SIGCONT);
        free(s.data);
        kb_etcd_close(c);
}

Test(etcd_plain, snapshot_server_killed_midway)
{
        struct kb_etcd *c = connect_big(5000);
        struct collect s = {.stop_after = 2, .action = SIGKILL};
        struct kb_err e = {0};
        int rc = kb_etcd_snapshot(c, collect_cb, &s, &e);

        cr_assert_eq(rc, -ECONNRESET, "rc %d: %s", rc, e.msg);
        cr_assert_not_null(strstr(e.msg, "connection lost"), "%s", e.msg);
        free(s.data);
        kb_etcd_close(c);
}

Test(etcd_plain, snapshot_cancelled_by_callback)
{
        struct kb_etcd *c = connect_big(5000);
        struct collect s = {.stop_after = 3, .action = -ECANCELED};
        struct kb_etcd_status st;
        struct kb_err e = {0};

        cr_assert_eq(kb_etcd_snapshot(c, collect_cb, &s, &e), -ECANCELED, "%s", e.msg);
        cr_assert_eq(s.msgs, 3);
        cr_assert_not_null(strstr(e.msg, "cancelled"), "%s", e.msg);
        /* The client stays usable. */
        cr_assert_eq(kb_etcd_status(c, &st, &e), 0, "%s", e.msg);
        free(s.data);
        kb_etcd_close(c);
}

Test(etcd_plain, http_client_to_https_style_errors)
{
        struct kb_etcd_opts o = {.cacert = "/nonexistent/ca.crt"};
        struct kb_etcd *c = NULL;
        struct kb_err e = {0};
        char ep[160];

        /* A CA file that does not exist, certificates on an http:// endpoint, half a pair. */
        snprintf(ep, sizeof(ep), "https://127.0.0.1:%d", srv.port);
        cr_assert_eq(kb_etcd_connect(ep, &o, &c, &e), -ENOENT, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "/nonexistent/ca.crt"));
        cr_assert_eq(kb_etcd_connect(srv.endpoint, &o, &c, &e), KB_EUSAGE, "%s", e.msg);
        o = (struct kb_etcd_opts){.cert = "/x.crt"};
        cr_assert_eq(kb_etcd_connect(ep, &o, &c, &e), KB_EUSAGE, "%s", e.msg);
        cr_assert_eq(kb_etcd_connect("unix:///run/etcd.sock", NULL, &c, &e), KB_EUSAGE);
        cr_assert_null(c);

        /* TLS to a plain server: the handshake fails, quickly. */
        o = (struct kb_etcd_opts){.cacert = "/etc/ssl/certs/ca-certificates.crt"};
        if (access(o.cacert, R_OK) == 0) {
                cr_assert_eq(connect_fails(ep, &o, &e), -EPROTO, "%s", e.msg);
                cr_assert_not_null(strstr(e.msg, "TLS handshake failed"), "%s", e.msg);
        }
}

/* ---- TLS ---- */

Test(etcd_tls, client_certificate_works)
{
        struct kb_etcd_opts o = {.cacert = srv.cacert, .cert = srv.cert, .key = srv.key};
        struct kb_etcd *c = connect_ok(&o);
        struct kb_etcd_member *m = NULL;
        struct kb_err e = {0};
        size_t n;

        load_keys(c, "/tls/", 200, 500, 1);
        snapshot_ok(c);
        cr_assert_eq(kb_etcd_members(c, &m, &n, &e), 0, "%s", e.msg);
        cr_assert_eq(n, 1);
        free(m);
        kb_etcd_close(c);
}

Test(etcd_tls, wrong_ca)
{
        struct kb_etcd_opts o = {.cacert = srv.other_ca, .cert = srv.cert, .key = srv.key};
        struct kb_err e = {0};

        cr_assert_eq(connect_fails(srv.endpoint, &o, &e), -EPROTO, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "TLS handshake failed"), "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "not signed by the given CA"), "%s", e.msg);
}

Test(etcd_tls, missing_client_certificate)
{
        struct kb_etcd_opts o = {.cacert = srv.cacert};
        struct kb_err e = {0};

        cr_assert_eq(connect_fails(srv.endpoint, &o, &e), -EPROTO, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "TLS handshake failed"), "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "requires a client certificate"), "%s", e.msg);
}

Test(etcd_tls, client_certificate_from_another_ca)
{
        char key[320];
        struct kb_etcd_opts o = {.cacert = srv.cacert, .cert = srv.other_ca, .key = key};
        struct kb_err e = {0};

        snprintf(key, sizeof(key), "%s/tls/other-ca.key", srv.dir);
        cr_assert_eq(connect_fails(srv.endpoint, &o, &e), -EPROTO, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "TLS handshake failed"), "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "did not accept the client certificate"), "%s", e.msg);
}

Test(etcd_tls, plain_client_on_tls_port)
{
        char ep[160];
        struct kb_err e = {0};

        snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", srv.port);
        cr_assert_eq(connect_fails(ep, NULL, &e), -EPROTO, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "https://"), "%s", e.msg);
}

/* ---- auth ---- */

Test(etcd_auth, root_password_works)
{
        struct kb_etcd_opts o = {.user = "root", .password = "rootpw"};
        struct kb_etcd *c = connect_ok(&o);
        struct kb_err e = {0};
        struct one one = {0};

        cr_assert_eq(kb_etcd_put(c, "k", 1, "v1", 2, &e), 0, "%s", e.msg);
        cr_assert_eq(kb_etcd_range(c, "k", 1, NULL, 0, 0, 0, one_cb, &one, NULL, &e), 0, "%s",
                     e.msg);
        cr_assert_eq(one.n, 1);
        cr_assert_eq(memcmp(one.val, "v1", 2), 0);
        snapshot_ok(c);
        kb_etcd_close(c);
}

Test(etcd_auth, wrong_password)
{
        struct kb_etcd_opts o = {.user = "root", .password = "nope"};
        struct kb_err e = {0};

        cr_assert_eq(connect_fails(srv.endpoint, &o, &e), KB_EAUTH, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "authentication failed for user root"), "%s", e.msg);
        cr_assert_null(strstr(e.msg, "nope"), "the password never shows: %s", e.msg);
}

Test(etcd_auth, non_root_user_cannot_snapshot)
{
        struct kb_etcd_opts o = {.user = "alice", .password = "alicepw"};
        struct kb_etcd *c = connect_ok(&o);
        struct collect s = {0};
        struct kb_err e = {0};

        cr_assert_eq(kb_etcd_snapshot(c, collect_cb, &s, &e), -EACCES, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "not a root user"), "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "alice"), "%s", e.msg);
        cr_assert_eq(s.len, 0);
        /* Other calls name the permission problem too. */
        cr_assert_eq(kb_etcd_put(c, "k", 1, "v", 1, &e), -EACCES, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "permission denied"), "%s", e.msg);
        kb_etcd_close(c);
}

Test(etcd_auth, no_user_on_auth_server)
{
        struct kb_etcd *c = connect_ok(NULL); /* Status needs no user */
        struct collect s = {0};
        struct kb_err e = {0};

        cr_assert_eq(kb_etcd_snapshot(c, collect_cb, &s, &e), -EACCES, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "authentication required"), "%s", e.msg);
        kb_etcd_close(c);
}

Test(etcd_auth_ttl, expired_token_is_renewed)
{
        struct kb_etcd_opts o = {.user = "root", .password = "rootpw"};
        struct kb_etcd *c = connect_ok(&o);
        struct kb_err e = {0};
        struct collect s = {0};

        cr_assert_eq(kb_etcd_put(c, "a", 1, "1", 1, &e), 0, "%s", e.msg);
        sleep(3); /* the server forgets tokens idle for more than --auth-token-ttl 1 */
        cr_assert_eq(kb_etcd_put(c, "a", 1, "2", 1, &e), 0, "%s", e.msg);
        sleep(3);
        cr_assert_eq(kb_etcd_snapshot(c, collect_cb, &s, &e), 0, "%s", e.msg);
        free(s.data);
        kb_etcd_close(c);
}

Test(etcd_tls_auth, certificate_cn_is_the_user)
{
        struct kb_etcd_opts root = {.cacert = srv.cacert, .cert = srv.cert, .key = srv.key};
        struct kb_etcd_opts alice = {
            .cacert = srv.cacert, .cert = srv.alice_cert, .key = srv.alice_key};
        struct kb_etcd *c = connect_ok(&root);
        struct collect s = {0};
        struct kb_err e = {0};

        snapshot_ok(c);
        kb_etcd_close(c);
        c = connect_ok(&alice);
        cr_assert_eq(kb_etcd_snapshot(c, collect_cb, &s, &e), -EACCES, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "not a root user"), "%s", e.msg);
        kb_etcd_close(c);
}

/* ---- no server ---- */

/* A loopback port nobody listens on (bound, then closed). */
static int closed_port(void)
{
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t l = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
        close(fd);
        return ntohs(a.sin_port);
}

Test(etcd_none, closed_port_is_unreachable_at_once)
{
        struct kb_etcd_opts o = {.connect_timeout_ms = 3000};
        struct kb_err e = {0};
        char ep[64];
        double t0 = now_s();

        snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", closed_port());
        cr_assert_eq(connect_fails(ep, &o, &e), -EHOSTUNREACH, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "unreachable"), "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "refused"), "%s", e.msg);
        cr_assert_lt(now_s() - t0, 3.0);
}

Test(etcd_none, silent_server_is_unreachable_after_the_timeout)
{
        struct kb_etcd_opts o = {.connect_timeout_ms = 1000};
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t l = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct kb_err e = {0};
        char ep[64];
        double t0, dt;

        /* Listens, never accepts: TCP connects, HTTP/2 never answers. */
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        cr_assert_eq(listen(fd, 4), 0);
        cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
        snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", ntohs(a.sin_port));
        t0 = now_s();
        cr_assert_eq(connect_fails(ep, &o, &e), -EHOSTUNREACH, "%s", e.msg);
        dt = now_s() - t0;
        cr_assert_not_null(strstr(e.msg, "no answer within 1000 ms"), "%s", e.msg);
        cr_assert(dt >= 0.9 && dt < 5.0, "took %.2f s", dt);
        close(fd);
}

Test(etcd_plain, server_errors_are_quoted)
{
        struct kb_etcd *c = connect_ok(NULL);
        static struct kb_etcd_kv kv[1100];
        static char keys[1100][16];
        struct kb_err e = {0};

        /* More puts in one Txn than the server's --max-txn-ops 1024. */
        for (int i = 0; i < 1100; i++) {
                snprintf(keys[i], sizeof(keys[i]), "t%d", i);
                kv[i] = (struct kb_etcd_kv){.key = (uint8_t *)keys[i], .klen = strlen(keys[i])};
        }
        cr_assert_eq(kb_etcd_txn_put(c, kv, 1100, &e), -EIO, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, "too many operations"), "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, srv.endpoint), "%s", e.msg);
        cr_assert_eq(kb_etcd_txn_put(c, kv, 1000, &e), 0, "%s", e.msg);
        kb_etcd_close(c);
}
