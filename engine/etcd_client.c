/* etcd_client.c - etcd v3 client on the gRPC C core: messages packed with protobuf-c
 * (proto/etcd.proto) and sent as raw byte buffers to methods named by path, one channel and one
 * completion queue per endpoint, one call at a time. The Snapshot stream is in etcd_snapshot.c,
 * the KV calls in etcd_kv.c.
 *
 * Calls are fail-fast (no wait-for-ready): a server that refuses connections or fails the TLS
 * handshake fails the call at once with the reason in the status details, and every wait on the
 * queue has a deadline, so nothing can hang. kb_etcd_connect makes one call bounded by the
 * connect timeout, so reachability, TLS and the password are all checked there. */
#include "etcd_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>

#define PEM_MAX        (1 << 20)
#define MAX_RECV_MSG   (64 << 20) /* Range pages of big values; the default 4 MiB is too small */
#define KEEPALIVE_MS   30000      /* etcd refuses pings more often than every 5 s */
#define KEEPALIVE_WAIT 10000

/* ---- library lifetime ---- */

static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t global_mu = PTHREAD_MUTEX_INITIALIZER;
static int global_ref;

static void quiet_log(gpr_log_func_args *args)
{
        (void)args; /* kbackup prints only its own one-line errors */
}

static void set_quiet_log(void)
{
        gpr_set_log_function(quiet_log);
}

/* grpc_init/grpc_shutdown are reference-counted: every client holds one reference, and the
 * global pair holds another so a program that connects repeatedly does not re-init gRPC. */
static void grpc_ref(void)
{
        pthread_once(&log_once, set_quiet_log);
        grpc_init();
}

void kb_etcd_global_init(void)
{
        pthread_mutex_lock(&global_mu);
        if (!global_ref++)
                grpc_ref();
        pthread_mutex_unlock(&global_mu);
}

void kb_etcd_global_shutdown(void)
{
        pthread_mutex_lock(&global_mu);
        if (global_ref > 0 && !--global_ref)
                grpc_shutdown();
        pthread_mutex_unlock(&global_mu);
}

/* ---- small helpers ---- */

gpr_timespec kb_etcd_after_ms(int ms)
{
        return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

grpc_byte_buffer *kb_etcd_pack(const ProtobufCMessage *m)
{
        size_t n = protobuf_c_message_get_packed_size(m);
        grpc_slice s = grpc_slice_malloc(n);
        grpc_byte_buffer *bb;

        protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
        bb = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        return bb;
}

ProtobufCMessage *kb_etcd_unpack(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb)
{
        grpc_byte_buffer_reader r;
        ProtobufCMessage *m;
        grpc_slice s;

        if (!grpc_byte_buffer_reader_init(&r, bb))
                return NULL;
        s = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        m = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
        grpc_slice_unref(s);
        return m;
}

static int read_pem(const char *what, const char *path, char **out, struct kb_err *err)
{
        FILE *f = fopen(path, "re");
        size_t n;
        char *b;

        if (!f)
                return kb_err_sys(err, -errno, "cannot read %s %s", what, path);
        b = malloc(PEM_MAX + 1);
        if (!b) {
                fclose(f);
                return kb_err_sys(err, -ENOMEM, "reading %s", path);
        }
        n = fread(b, 1, PEM_MAX + 1, f);
        if (ferror(f) || n > PEM_MAX || !n) {
                int e = ferror(f) ? -EIO : -EINVAL;
                fclose(f);
                free(b);
                return kb_err_set(err, e, "cannot read %s %s: %s", what, path,
                                  n ? "read error or larger than 1 MiB" : "empty file");
        }
        fclose(f);
        b[n] = '\0';
        *out = b;
        return 0;
}

int kb_etcd_wait_tag(struct kb_etcd *c, struct kb_etcd_pend *p, unsigned tag, gpr_timespec dl)
{
        while (p->out & tag) {
                grpc_event ev = grpc_completion_queue_next(c->cq, dl, NULL);
                unsigned t;

                if (ev.type == GRPC_QUEUE_TIMEOUT)
                        return -ETIMEDOUT;
                if (ev.type != GRPC_OP_COMPLETE)
                        return -EPIPE; /* the queue was shut down: cannot happen while in use */
                t = (unsigned)(uintptr_t)ev.tag;
                p->out &= ~t;
                if (ev.success)
                        p->ok |= t;
                else
                        p->ok &= ~t;
        }
        return (p->ok & tag) ? 0 : -EIO;
}

/* Cancel (harmless on a finished call), collect every outstanding event, release the call. */
void kb_etcd_end_call(struct kb_etcd *c, grpc_call *call, struct kb_etcd_pend *p, int cancel)
{
        if (cancel)
                grpc_call_cancel(call, NULL);
        while (p->out) {
                unsigned t = p->out & -p->out;
                /* After a cancel every batch completes promptly; the deadline is a backstop. */
                int rc = kb_etcd_wait_tag(c, p, t, kb_etcd_after_ms(KB_ETCD_GRACE_MS));

                if (rc == -ETIMEDOUT)
                        grpc_call_cancel(call, NULL);
                else if (rc == -EPIPE)
                        break;
        }
        grpc_call_unref(call);
}

void kb_etcd_take_status(struct kb_etcd_rst *st, grpc_slice *details, const char *debug)
{
        size_t n = GRPC_SLICE_LENGTH(*details);

        if (n >= sizeof(st->details))
                n = sizeof(st->details) - 1;
        memcpy(st->details, GRPC_SLICE_START_PTR(*details), n);
        st->details[n] = '\0';
        snprintf(st->debug, sizeof(st->debug), "%s", debug ? debug : "");
        grpc_slice_unref(*details);
        gpr_free((void *)debug);
}

static int contains(const struct kb_etcd_rst *st, const char *needle)
{
        return strcasestr(st->details, needle) || strcasestr(st->debug, needle);
}

/* ---- error mapping: one line, naming the endpoint, in the user's terms ---- */

static int is_tls_failure(const struct kb_etcd_rst *st)
{
        return contains(st, "handshake") || contains(st, "ssl") || contains(st, "certificate");
}

/* The innermost reason of a gRPC connect failure: "...: Connection refused". */
static const char *reason(const struct kb_etcd_rst *st)
{
        const char *p = st->details, *q;

        while ((q = strstr(p, ": ")))
                p = q + 2;
        return *p ? p : "no details";
}

static int closed_early(const struct kb_etcd_rst *st)
{
        return contains(st, "Endpoint read failed") || contains(st, "Socket closed") ||
               contains(st, "Connection reset") || contains(st, "Broken pipe");
}

static int map_unavailable(struct kb_etcd *c, enum kb_etcd_phase ph, const char *method,
                           const struct kb_etcd_rst *st, struct kb_err *err)
{
        const char *ep = c->endpoint;
        int connecting = ph == KB_PH_CONNECT || ph == KB_PH_AUTH;

        if (c->tls && (contains(st, "CERTIFICATE_VERIFY_FAILED") ||
                       contains(st, "certificate verify failed")))
                return kb_err_set(err, -EPROTO,
                                  "etcd %s: TLS handshake failed: the server's certificate is not "
                                  "signed by %s",
                                  ep, c->has_ca ? "the given CA" : "a CA the system trusts");
        if (c->tls && is_tls_failure(st))
                return kb_err_set(err, -EPROTO, "etcd %s: TLS handshake failed (%s)", ep,
                                  reason(st));
        /* A server that rejects the client certificate just drops the connection, and with
         * TLS 1.3 the client may see that only after its side of the handshake: the details
         * vary ("Socket closed", "Endpoint read failed") and look like a non-TLS server's. */
        if (c->tls && connecting && closed_early(st))
                return kb_err_set(err, -EPROTO,
                                  "etcd %s: TLS handshake failed: the server closed the connection "
                                  "(%s, or it is not a TLS endpoint)",
                                  ep,
                                  c->has_cert ? "it did not accept the client certificate"
                                              : "it requires a client certificate");
        if (!c->tls && connecting && closed_early(st))
                return kb_err_set(err, -EPROTO,
                                  "etcd %s: the server closed the connection at once (is it an "
                                  "https:// endpoint?)",
                                  ep);
        if (connecting)
                return kb_err_set(err, -EHOSTUNREACH, "etcd %s: unreachable (%s)", ep, reason(st));
        return kb_err_set(err, -ECONNRESET, "etcd %s: connection lost during %s (%s)", ep, method,
                          reason(st));
}

int kb_etcd_map_error(struct kb_etcd *c, enum kb_etcd_phase ph, const char *method,
                      const struct kb_etcd_rst *st, struct kb_err *err)
{
        const char *ep = c->endpoint;
        const char *who = c->user ? c->user : "the client certificate's user";

        if (st->code == GRPC_STATUS_UNAVAILABLE)
                return map_unavailable(c, ph, method, st, err);
        if (st->code == GRPC_STATUS_DEADLINE_EXCEEDED) {
                if (ph == KB_PH_CONNECT || ph == KB_PH_AUTH)
                        return kb_err_set(
                            err, -EHOSTUNREACH, "etcd %s: unreachable (no answer within %d ms)", ep,
                            ph == KB_PH_CONNECT ? c->connect_timeout_ms : c->timeout_ms);
                return kb_err_set(err, -ETIMEDOUT, "etcd %s: %s: no answer within %d ms", ep,
                                  method, c->timeout_ms);
        }
        if (contains(st, "authentication failed"))
                return kb_err_set(err, KB_EAUTH,
                                  "etcd %s: authentication failed for user %s (wrong user name "
                                  "or password)",
                                  ep, c->user ? c->user : "?");
        if (contains(st, "user name is empty") || contains(st, "user name not found"))
                return kb_err_set(err, -EACCES,
                                  "etcd %s: authentication required: the server has auth "
                                  "enabled (give a user, or a client certificate)",
                                  ep);
        if (contains(st, "invalid auth token"))
                return kb_err_set(err, KB_EAUTH,
                                  "etcd %s: the auth token was refused even after "
                                  "re-authenticating",
                                  ep);
        if (st->code == GRPC_STATUS_PERMISSION_DENIED || contains(st, "permission denied")) {
                if (ph == KB_PH_SNAPSHOT)
                        return kb_err_set(err, -EACCES,
                                          "etcd %s: not a root user: %s may not take snapshots "
                                          "(Snapshot needs the root role)",
                                          ep, who);
                return kb_err_set(err, -EACCES, "etcd %s: %s: permission denied for %s", ep, method,
                                  who);
        }
        if (st->code == GRPC_STATUS_UNIMPLEMENTED)
                return kb_err_set(err, -EPROTONOSUPPORT,
                                  "etcd %s: %s is not implemented there (not an etcd v3 server?)",
                                  ep, method);
        /* Only gRPC's own size limit; etcd also says RESOURCE_EXHAUSTED for a full database. */
        if (st->code == GRPC_STATUS_RESOURCE_EXHAUSTED && contains(st, "larger than max"))
                return kb_err_set(err, -EMSGSIZE, "etcd %s: %s: %s", ep, method, st->details);
        return kb_err_set(err, -EIO, "etcd %s: %s failed: %s (gRPC code %d)", ep, method,
                          st->details[0] ? st->details : "no details", (int)st->code);
}

/* ---- calls ---- */

int kb_etcd_token_expired(const struct kb_etcd_rst *st)
{
        /* "revision of auth store is old": the token predates a user/role change. */
        return contains(st, "invalid auth token") || contains(st, "auth store is old");
}

/* The initial metadata of a call: the token, if we have one. */
void kb_etcd_token_md(struct kb_etcd *c, grpc_metadata *md, size_t *n, int with_token)
{
        *n = 0;
        if (with_token && c->token) {
                md->key = grpc_slice_from_static_string("token");
                md->value = grpc_slice_from_copied_string(c->token);
                *n = 1;
        }
}

void kb_etcd_token_md_unref(grpc_metadata *md, size_t n)
{
        if (n)
                grpc_slice_unref(md->value);
}

void kb_etcd_open_ops(grpc_op ops[KB_ETCD_OPEN_OPS], grpc_metadata *md, size_t nmd,
                      grpc_byte_buffer *out, grpc_metadata_array *init_md)
{
        memset(ops, 0, KB_ETCD_OPEN_OPS * sizeof(*ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[0].data.send_initial_metadata.count = nmd;
        ops[0].data.send_initial_metadata.metadata = nmd ? md : NULL;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = out;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[3].data.recv_initial_metadata.recv_initial_metadata = init_md;
}

void kb_etcd_status_op(grpc_op *op, grpc_metadata_array *trail_md, struct kb_etcd_rst *st,
                       grpc_slice *details, const char **debug)
{
        memset(op, 0, sizeof(*op));
        op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        op->data.recv_status_on_client.trailing_metadata = trail_md;
        op->data.recv_status_on_client.status = &st->code;
        op->data.recv_status_on_client.status_details = details;
        op->data.recv_status_on_client.error_string = debug;
}

/* One unary call. Returns 0 with *resp set, or -EIO with st filled (or a local error). */
static int unary_once(struct kb_etcd *c, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, int ms,
                      int with_token, struct kb_etcd_rst *st)
{
        gpr_timespec dl = kb_etcd_after_ms(ms);
        grpc_metadata md;
        size_t nmd;
        grpc_metadata_array init_md, trail_md;
        grpc_byte_buffer *out = kb_etcd_pack(req), *in = NULL;
        grpc_slice details = grpc_empty_slice();
        const char *debug = NULL;
        struct kb_etcd_pend p = {0, 0};
        grpc_op ops[6];
        grpc_call *call;
        int rc;

        memset(st, 0, sizeof(*st));
        *resp = NULL;
        call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                        grpc_slice_from_static_string(method), NULL, dl, NULL);
        kb_etcd_token_md(c, &md, &nmd, with_token);
        grpc_metadata_array_init(&init_md);
        grpc_metadata_array_init(&trail_md);
        kb_etcd_open_ops(ops, &md, nmd, out, &init_md);
        memset(&ops[4], 0, sizeof(ops[4]));
        ops[4].op = GRPC_OP_RECV_MESSAGE;
        ops[4].data.recv_message.recv_message = &in;
        kb_etcd_status_op(&ops[5], &trail_md, st, &details, &debug);
        if (grpc_call_start_batch(call, ops, 6, (void *)(uintptr_t)KB_T_UNARY, NULL) !=
            GRPC_CALL_OK) {
                st->code = GRPC_STATUS_INTERNAL;
                snprintf(st->details, sizeof(st->details), "could not start the call");
                rc = -EIO;
        } else {
                p.out = KB_T_UNARY;
                /* The call's own deadline ends it; the grace is a backstop against a hang. */
                rc = kb_etcd_wait_tag(
                    c, &p, KB_T_UNARY,
                    gpr_time_add(dl, gpr_time_from_millis(KB_ETCD_GRACE_MS, GPR_TIMESPAN)));
                if (rc == -ETIMEDOUT) {
                        kb_etcd_end_call(c, call, &p, 1);
                        call = NULL;
                }
                if (rc == 0)
                        rc = st->code == GRPC_STATUS_OK ? 0 : -EIO;
                kb_etcd_take_status(st, &details, debug);
        }
        if (call)
                kb_etcd_end_call(c, call, &p, 0);
        if (rc == -ETIMEDOUT) {
                st->code = GRPC_STATUS_DEADLINE_EXCEEDED;
                rc = -EIO;
        }
        if (rc == 0) {
                *resp = in ? kb_etcd_unpack(rd, in) : NULL;
                if (!*resp) {
                        st->code = GRPC_STATUS_INTERNAL;
                        snprintf(st->details, sizeof(st->details), "malformed %s response", method);
                        rc = -EIO;
                }
        }
        if (in)
                grpc_byte_buffer_destroy(in);
        grpc_byte_buffer_destroy(out);
        grpc_metadata_array_destroy(&init_md);
        grpc_metadata_array_destroy(&trail_md);
        kb_etcd_token_md_unref(&md, nmd);
        return rc;
}

int kb_etcd_authenticate(struct kb_etcd *c, enum kb_etcd_phase ph, struct kb_err *err)
{
        Kbetcd__AuthenticateRequest req = KBETCD__AUTHENTICATE_REQUEST__INIT;
        Kbetcd__AuthenticateResponse *resp;
        ProtobufCMessage *m;
        struct kb_etcd_rst st;
        int ms = ph == KB_PH_CONNECT ? c->connect_timeout_ms : c->timeout_ms;

        req.name = c->user;
        req.password = c->password ? c->password : "";
        if (unary_once(c, "/etcdserverpb.Auth/Authenticate", &req.base,
                       &kbetcd__authenticate_response__descriptor, &m, ms, 0, &st)) {
                /* Like etcd's own client: a user on a server without auth is no error. */
                if (contains(&st, "authentication is not enabled"))
                        return 0;
                return kb_etcd_map_error(c, ph, "Authenticate", &st, err);
        }
        resp = (Kbetcd__AuthenticateResponse *)m;
        free(c->token);
        c->token = resp->token && resp->token[0] ? strdup(resp->token) : NULL;
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
}

/* A unary call with the token; an expired token is renewed once and the call retried. */
int kb_etcd_unary(struct kb_etcd *c, enum kb_etcd_phase ph, const char *method,
                  const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
                  ProtobufCMessage **resp, struct kb_err *err)
{
        struct kb_etcd_rst rst, *st = &rst;
        int ms = ph == KB_PH_CONNECT ? c->connect_timeout_ms : c->timeout_ms;
        const char *name = strrchr(method, '/') + 1;
        int rc;

        rc = unary_once(c, method, req, rd, resp, ms, 1, st);
        if (rc && c->user && c->token && kb_etcd_token_expired(st)) {
                rc = kb_etcd_authenticate(c, KB_PH_AUTH, err);
                if (rc)
                        return rc;
                rc = unary_once(c, method, req, rd, resp, ms, 1, st);
        }
        return rc ? kb_etcd_map_error(c, ph, name, st, err) : 0;
}

/* ---- connect ---- */

/* "http://h:p/" -> "h:p"; TLS from the scheme, or from the presence of certificates. */
static int parse_endpoint(struct kb_etcd *c, const char *ep, const struct kb_etcd_opts *o,
                          struct kb_err *err)
{
        const char *h = ep, *slash;
        size_t n;

        if (!strncmp(ep, "https://", 8)) {
                c->tls = 1;
                h = ep + 8;
        } else if (!strncmp(ep, "http://", 7)) {
                h = ep + 7;
        } else if (strstr(ep, "://")) {
                return kb_err_set(err, KB_EUSAGE,
                                  "etcd endpoint %s: only http:// and https:// are supported", ep);
        } else {
                c->tls = o && (o->cacert || o->cert);
        }
        slash = strchr(h, '/');
        n = slash ? (size_t)(slash - h) : strlen(h);
        if (!n || n >= sizeof(c->target) - 8)
                return kb_err_set(err, KB_EUSAGE, "etcd endpoint %s: no host", ep);
        memcpy(c->target, h, n);
        c->target[n] = '\0';
        /* No port (the colon after a bracketed IPv6 address counts): etcd's client port. */
        if (!strchr(strchr(c->target, ']') ? strchr(c->target, ']') : c->target, ':'))
                strcat(c->target, ":2379");
        snprintf(c->endpoint, sizeof(c->endpoint), "%s", ep);
        return 0;
}

/* gRPC reports a client certificate and key that do not belong together only as a failed
 * connection, which reads like an unreachable server: check the pair before connecting. */
static int check_key_pair(const char *cert_pem, const char *key_pem, const struct kb_etcd_opts *o,
                          struct kb_err *err)
{
        BIO *cb = BIO_new_mem_buf(cert_pem, -1), *kb = BIO_new_mem_buf(key_pem, -1);
        X509 *x = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
        EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
        int rc = 0;

        if (!x)
                rc = kb_err_set(err, -EINVAL, "client certificate %s: not a PEM certificate",
                                o->cert);
        else if (!k)
                rc =
                    kb_err_set(err, -EINVAL,
                               "client key %s: not a PEM private key (or it is encrypted)", o->key);
        else if (X509_check_private_key(x, k) != 1)
                rc = kb_err_set(err, -EINVAL,
                                "client certificate %s and key %s do not belong together", o->cert,
                                o->key);
        ERR_clear_error();
        X509_free(x);
        EVP_PKEY_free(k);
        BIO_free(cb);
        BIO_free(kb);
        return rc;
}

static int make_creds(struct kb_etcd *c, const struct kb_etcd_opts *o,
                      grpc_channel_credentials **out, struct kb_err *err)
{
        char *ca = NULL, *cert = NULL, *key = NULL;
        grpc_ssl_pem_key_cert_pair pair;
        int rc = 0;

        if (!c->tls) {
                if (o->cert || o->key || o->cacert)
                        return kb_err_set(err, KB_EUSAGE,
                                          "etcd endpoint %s is http://, but certificates were "
                                          "given: use https://",
                                          c->endpoint);
                *out = grpc_insecure_credentials_create();
                return 0;
        }
        if (!o->cert != !o->key)
                return kb_err_set(err, KB_EUSAGE,
                                  "a client certificate needs both the cert and the key file");
        if ((o->cacert && (rc = read_pem("CA file", o->cacert, &ca, err))) ||
            (o->cert && (rc = read_pem("client certificate", o->cert, &cert, err))) ||
            (o->key && (rc = read_pem("client key", o->key, &key, err))) ||
            (cert && (rc = check_key_pair(cert, key, o, err))))
                goto out;
        c->has_ca = !!ca;
        c->has_cert = !!cert;
        pair.private_key = key;
        pair.cert_chain = cert;
        /* No CA file: NULL makes gRPC use the system's roots. */
        *out = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
        if (!*out)
                rc = kb_err_set(err, -EINVAL, "etcd %s: the TLS files could not be used",
                                c->endpoint);
out:
        free(ca);
        free(cert);
        if (key) {
                explicit_bzero(key, strlen(key));
                free(key);
        }
        return rc;
}

static char *dup_opt(const char *s)
{
        return s ? strdup(s) : NULL;
}

int kb_etcd_connect(const char *endpoint, const struct kb_etcd_opts *opts, struct kb_etcd **out,
                    struct kb_err *err)
{
        static const struct kb_etcd_opts none;
        const struct kb_etcd_opts *o = opts ? opts : &none;
        grpc_channel_credentials *creds = NULL;
        grpc_arg a[4];
        grpc_channel_args args = {4, a};
        struct kb_etcd *c;
        int rc;

        *out = NULL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return kb_err_sys(err, -ENOMEM, "etcd client");
        c->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000;
        c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
        rc = parse_endpoint(c, endpoint, o, err);
        if (!rc)
                rc = make_creds(c, o, &creds, err);
        if (rc) {
                free(c);
                return rc;
        }
        c->user = dup_opt(o->user && o->user[0] ? o->user : NULL);
        c->password = dup_opt(o->password);

        grpc_ref();
        memset(a, 0, sizeof(a));
        a[0].type = GRPC_ARG_INTEGER;
        a[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
        a[0].value.integer = MAX_RECV_MSG;
        a[1].type = GRPC_ARG_INTEGER;
        a[1].key = (char *)GRPC_ARG_KEEPALIVE_TIME_MS;
        a[1].value.integer = KEEPALIVE_MS;
        a[2].type = GRPC_ARG_INTEGER;
        a[2].key = (char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS;
        a[2].value.integer = KEEPALIVE_WAIT;
        /* Our own subchannel: clients never share connections, so closing one is final. */
        a[3].type = GRPC_ARG_INTEGER;
        a[3].key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
        a[3].value.integer = 1;
        c->ch = grpc_channel_create(c->target, creds, &args);
        grpc_channel_credentials_release(creds);
        c->cq = grpc_completion_queue_create_for_next(NULL);

        if (c->user) {
                rc = kb_etcd_authenticate(c, KB_PH_CONNECT, err);
        } else {
                /* Status needs no permission, so it checks reachability and TLS alone. */
                Kbetcd__StatusRequest req = KBETCD__STATUS_REQUEST__INIT;
                ProtobufCMessage *m;

                rc = kb_etcd_unary(c, KB_PH_CONNECT, "/etcdserverpb.Maintenance/Status", &req.base,
                                   &kbetcd__status_response__descriptor, &m, err);
                if (!rc)
                        protobuf_c_message_free_unpacked(m, NULL);
        }
        if (rc) {
                kb_etcd_close(c);
                return rc;
        }
        *out = c;
        return 0;
}

void kb_etcd_close(struct kb_etcd *c)
{
        if (!c)
                return;
        grpc_channel_destroy(c->ch);
        grpc_completion_queue_shutdown(c->cq);
        while (grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
                ;
        grpc_completion_queue_destroy(c->cq);
        if (c->password) {
                explicit_bzero(c->password, strlen(c->password));
                free(c->password);
        }
        if (c->token) {
                explicit_bzero(c->token, strlen(c->token));
                free(c->token);
        }
        free(c->user);
        free(c);
        /* Blocking: when this is the last reference, gRPC's teardown otherwise runs on a thread of
         * its own that can outlive main(), still using OpenSSL as exit() cleans it up
         * (LeakSanitizer saw OpenSSL's per-thread state leak at exit, once in many runs). */
        grpc_shutdown_blocking();
}

const char *kb_etcd_endpoint(const struct kb_etcd *c)
{
        return c->endpoint;
}

/* ---- Maintenance and Cluster ---- */

int kb_etcd_status(struct kb_etcd *c, struct kb_etcd_status *st, struct kb_err *err)
{
        Kbetcd__StatusRequest req = KBETCD__STATUS_REQUEST__INIT;
        Kbetcd__StatusResponse *r;
        ProtobufCMessage *m;
        size_t i, n = 0;
        int rc;

        rc = kb_etcd_unary(c, KB_PH_CALL, "/etcdserverpb.Maintenance/Status", &req.base,
                           &kbetcd__status_response__descriptor, &m, err);
        if (rc)
                return rc;
        r = (Kbetcd__StatusResponse *)m;
        memset(st, 0, sizeof(*st));
        if (r->header) {
                st->cluster_id = r->header->cluster_id;
                st->member_id = r->header->member_id;
                st->revision = (uint64_t)r->header->revision;
        }
        st->leader = r->leader;
        st->raft_index = r->raftindex;
        st->raft_term = r->raftterm;
        st->raft_applied_index = r->raftappliedindex;
        st->db_size = r->dbsize;
        st->is_learner = r->islearner;
        snprintf(st->version, sizeof(st->version), "%s", r->version ? r->version : "");
        for (i = 0; i < r->n_errors && n + 1 < sizeof(st->errors); i++)
                n += snprintf(st->errors + n, sizeof(st->errors) - n, "%s%s", i ? "; " : "",
                              r->errors[i]);
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
}

int kb_etcd_members(struct kb_etcd *c, struct kb_etcd_member **out, size_t *n, struct kb_err *err)
{
        Kbetcd__MemberListRequest req = KBETCD__MEMBER_LIST_REQUEST__INIT;
        Kbetcd__MemberListResponse *r;
        struct kb_etcd_member *v;
        ProtobufCMessage *m;
        size_t i;
        int rc;

        *out = NULL;
        *n = 0;
        rc = kb_etcd_unary(c, KB_PH_CALL, "/etcdserverpb.Cluster/MemberList", &req.base,
                           &kbetcd__member_list_response__descriptor, &m, err);
        if (rc)
                return rc;
        r = (Kbetcd__MemberListResponse *)m;
        v = calloc(r->n_members ? r->n_members : 1, sizeof(*v));
        if (!v) {
                protobuf_c_message_free_unpacked(m, NULL);
                return kb_err_sys(err, -ENOMEM, "etcd member list");
        }
        for (i = 0; i < r->n_members; i++) {
                v[i].id = r->members[i]->id;
                snprintf(v[i].name, sizeof(v[i].name), "%s",
                         r->members[i]->name ? r->members[i]->name : "");
        }
        *out = v;
        *n = r->n_members;
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
}
