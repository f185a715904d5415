/* s3_http.c - the S3 backend's transport: a pool of libcurl easy handles (connection reuse, a
 * bounded number of requests in flight), Signature V4 through libcurl, retries with backoff, and
 * one-line error messages that name the operation, bucket and key.
 *
 * Signing: libcurl (7.75+) computes Signature V4 from CURLOPT_AWS_SIGV4 and the credentials over
 * the method, the URL as we write it (so path and query are encoded here, already in canonical
 * form: RFC 3986, query parameters sorted, always "k=v") and every header we pass. It does not
 * hash the body: S3 then wants x-amz-content-sha256, which we always send (the body's real hash,
 * so the server also checks integrity, plus Content-MD5 on writes; for a pack it is the pack's
 * name, so S3 also checks that name against the bytes).
 *
 * Retries: network failures, 5xx, 429 and S3's RequestTimeout are retried up to max_retries times
 * with exponential backoff and full jitter (base 200 ms, cap 5 s), and no new attempt starts
 * once the request has spent more than its timeout: a request and its retries end within about
 * twice KBACKUP_S3_TIMEOUT. Bodies are re-sent from the start on every attempt. */
#include "s3_int.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sodium.h>

#define BACKOFF_BASE_MS     200
#define BACKOFF_CAP_MS      5000
#define ERRBODY_MAX         (64u << 10)
#define CONNECT_TIMEOUT_MAX 10L
#define STALL_TIME_MAX      60L

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_rc;

static void global_init(void)
{
        /* curl_global_init is not thread-safe on older libcurl: run it once, before any handle. */
        global_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -ENOMEM;
        if (sodium_init() < 0)
                global_rc = -ENOMEM;
}

/* ---- pool ---- */

int s3_pool_init(struct s3_backend *s3, int size)
{
        pthread_once(&global_once, global_init);
        if (global_rc < 0)
                return global_rc;
        s3->handles = calloc((size_t)size, sizeof(CURL *));
        if (!s3->handles)
                return -ENOMEM;
        s3->capacity = size;
        pthread_mutex_init(&s3->lock, NULL);
        pthread_cond_init(&s3->cond, NULL);
        return 0;
}

void s3_pool_destroy(struct s3_backend *s3)
{
        int i;

        if (!s3->handles)
                return;
        for (i = 0; i < s3->nfree; i++)
                curl_easy_cleanup(s3->handles[i]);
        free(s3->handles);
        s3->handles = NULL;
        pthread_mutex_destroy(&s3->lock);
        pthread_cond_destroy(&s3->cond);
}

/* Handles are made on demand, so a short command opens one connection, not `capacity`. */
static CURL *pool_get(struct s3_backend *s3)
{
        CURL *h = NULL;

        pthread_mutex_lock(&s3->lock);
        while (s3->nfree == 0 && s3->nhandles >= s3->capacity)
                pthread_cond_wait(&s3->cond, &s3->lock);
        if (s3->nfree > 0) {
                h = s3->handles[--s3->nfree];
        } else {
                h = curl_easy_init();
                if (h)
                        s3->nhandles++;
        }
        pthread_mutex_unlock(&s3->lock);
        return h;
}

static void pool_put(struct s3_backend *s3, CURL *h)
{
        pthread_mutex_lock(&s3->lock);
        s3->handles[s3->nfree++] = h;
        pthread_cond_signal(&s3->cond);
        pthread_mutex_unlock(&s3->lock);
}

/* ---- encoding and hashing ---- */

int s3_uri_encode(const char *in, int keep_slash, struct kb_buf *out)
{
        static const char hex[] = "0123456789ABCDEF";
        const unsigned char *p;
        int r = 0;

        for (p = (const unsigned char *)in; *p && r == 0; p++) {
                unsigned char c = *p;

                if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/')) {
                        r = kb_buf_append(out, p, 1);
                } else {
                        char e[3] = {'%', hex[c >> 4], hex[c & 15]};

                        r = kb_buf_append(out, e, 3);
                }
        }
        return r;
}

static void digest(const EVP_MD *alg, const void *data, size_t len, unsigned char *md,
                   unsigned *mdlen)
{
        /* OpenSSL rather than libsodium: its SHA-256 uses the CPU's SHA extensions (about 4x
         * faster here), and every byte we upload goes through both digests. */
        EVP_Digest(data, len, md, mdlen, alg, NULL);
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
        static const char hex[] = "0123456789abcdef";
        size_t i;

        for (i = 0; i < n; i++) {
                out[2 * i] = hex[in[i] >> 4];
                out[2 * i + 1] = hex[in[i] & 15];
        }
        out[2 * n] = '\0';
}

void s3_sha256_hex(const void *data, size_t len, char out[65])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n = 0;

        digest(EVP_sha256(), data, len, md, &n);
        hex_encode(md, 32, out);
}

void s3_md5_hex(const void *data, size_t len, char out[33])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n = 0;

        digest(EVP_md5(), data, len, md, &n);
        hex_encode(md, 16, out);
}

void s3_md5_base64(const void *data, size_t len, char out[25])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n = 0;

        digest(EVP_md5(), data, len, md, &n);
        EVP_EncodeBlock((unsigned char *)out, md, 16);
}

/* ---- messages ---- */

void s3_display(const struct s3_backend *s3, const char *key, char *out, size_t n)
{
        if (key)
                snprintf(out, n, "s3://%s/%s", s3->bucket, key);
        else
                snprintf(out, n, "s3://%s", s3->bucket);
}

void s3_req_free(struct s3_req *req)
{
        kb_buf_free(&req->errbody);
}

/* Hints for the error codes a user can act on; the secret itself is never shown. */
static const char *auth_hint(const char *code)
{
        if (!strcmp(code, "SignatureDoesNotMatch"))
                return "check AWS_SECRET_ACCESS_KEY";
        if (!strcmp(code, "InvalidAccessKeyId"))
                return "check AWS_ACCESS_KEY_ID";
        if (!strcmp(code, "ExpiredToken") || !strcmp(code, "InvalidToken") ||
            !strcmp(code, "TokenRefreshRequired"))
                return "the AWS_SESSION_TOKEN is invalid or has expired";
        if (!strcmp(code, "RequestTimeTooSkewed"))
                return "this machine's clock is off";
        return NULL;
}

int s3_fail(struct s3_backend *s3, struct s3_req *req, const char *what, const char *name,
            struct kb_err *err)
{
        struct s3_error e;
        char where[KB_ERR_MSG_MAX / 2];
        const char *hint;

        s3_display(s3, req->key, where, sizeof(where));
        if (s3_xml_error(req->errbody.data, req->errbody.len, &e) < 0)
                memset(&e, 0, sizeof(e));

        if (req->status == 404) {
                if (!strcmp(e.code, "NoSuchBucket") || (!req->key && !e.code[0]))
                        return kb_err_set(err, KB_ENOTFOUND, "bucket '%s' does not exist at %s",
                                          s3->bucket, s3->endpoint);
                if (what)
                        return kb_err_set(err, KB_ENOTFOUND, "%s %s not found (%s)", what,
                                          name ? name : "", where);
                return kb_err_set(err, KB_ENOTFOUND, "S3 %s %s: not found", req->op, where);
        }
        if (req->status == 412)
                return kb_err_set(err, -EEXIST, "%s %s already exists (%s)", what ? what : "object",
                                  name ? name : "", where);
        if (req->status == 416)
                return kb_err_set(err, -EIO, "S3 %s %s: truncated (range not satisfiable)", req->op,
                                  where);
        if (req->status == 403 || req->status == 401) {
                hint = auth_hint(e.code);
                if (hint)
                        return kb_err_set(err, -EACCES, "S3 %s %s: access denied (%s: %s)", req->op,
                                          where, e.code, hint);
                if (e.code[0])
                        return kb_err_set(err, -EACCES, "S3 %s %s: access denied (%s: %s)", req->op,
                                          where, e.code, e.message);
                return kb_err_set(err, -EACCES,
                                  "S3 %s %s: access denied (HTTP %ld: check the credentials and "
                                  "the bucket policy)",
                                  req->op, where, req->status);
        }
        if (!strcmp(e.code, "AuthorizationHeaderMalformed") && e.region[0])
                return kb_err_set(err, -EACCES,
                                  "S3 %s %s: the bucket is in region %s: set AWS_REGION=%s",
                                  req->op, where, e.region, e.region);
        if (req->status == 301 || req->status == 307 || !strcmp(e.code, "PermanentRedirect"))
                return kb_err_set(err, -EIO,
                                  "S3 %s %s: the bucket must be reached through %s (another "
                                  "region or endpoint)",
                                  req->op, where, e.endpoint[0] ? e.endpoint : "another endpoint");
        if (e.code[0])
                return kb_err_set(err, -EIO, "S3 %s %s: HTTP %ld (%s: %s)%s", req->op, where,
                                  req->status, e.code, e.message,
                                  req->attempts > 1 ? " after retries" : "");
        return kb_err_set(err, -EIO, "S3 %s %s: HTTP %ld", req->op, where, req->status);
}

/* ---- one request ---- */

struct xfer {
        struct s3_req *req;
        CURL *h;
        size_t body_pos;
        size_t out_start;
        int overflow;
};

static size_t read_cb(char *buf, size_t size, size_t n, void *arg)
{
        struct xfer *x = arg;
        size_t want = size * n, left = x->req->body_len - x->body_pos;

        if (want > left)
                want = left;
        memcpy(buf, (const char *)x->req->body + x->body_pos, want);
        x->body_pos += want;
        return want;
}

static int seek_cb(void *arg, curl_off_t off, int origin)
{
        struct xfer *x = arg;

        if (origin != SEEK_SET || off < 0 || (uint64_t)off > x->req->body_len)
                return CURL_SEEKFUNC_CANTSEEK;
        x->body_pos = (size_t)off;
        return CURL_SEEKFUNC_OK;
}

static size_t write_cb(char *data, size_t size, size_t n, void *arg)
{
        struct xfer *x = arg;
        struct s3_req *req = x->req;
        size_t len = size * n;
        long status = 0;

        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && status < 300) {
                if (!req->out)
                        return len;
                if (req->out_limit && req->out->len - x->out_start + len > req->out_limit) {
                        x->overflow = 1;
                        return 0;
                }
                return kb_buf_append(req->out, data, len) == 0 ? len : 0;
        }
        /* Error documents are small; keep the start, drop the rest. */
        if (req->errbody.len < ERRBODY_MAX) {
                size_t keep = ERRBODY_MAX - req->errbody.len;

                if (kb_buf_append(&req->errbody, data, len < keep ? len : keep) < 0)
                        return 0;
        }
        return len;
}

static size_t header_cb(char *data, size_t size, size_t n, void *arg)
{
        struct xfer *x = arg;
        size_t len = size * n, i = 0, j;

        if (len >= 5 && !strncmp(data, "HTTP/", 5)) {
                /* A new response (after "100 Continue"): forget the previous one's headers. */
                x->req->etag[0] = '\0';
                return len;
        }
        if (len > 5 && !strncasecmp(data, "ETag:", 5)) {
                i = 5;
                while (i < len && (data[i] == ' ' || data[i] == '"'))
                        i++;
                for (j = 0; i < len && j + 1 < sizeof(x->req->etag); i++) {
                        if (data[i] == '"' || data[i] == '\r' || data[i] == '\n')
                                break;
                        x->req->etag[j++] = data[i];
                }
                x->req->etag[j] = '\0';
        }
        return len;
}

int s3_build_url(struct s3_backend *s3, const struct s3_req *req, struct kb_buf *url)
{
        int r;

        if (s3->virtual_host) {
                r = kb_buf_append(url, s3->scheme, strlen(s3->scheme));
                r = r ?: kb_buf_append(url, "://", 3);
                r = r ?: kb_buf_append(url, s3->bucket, strlen(s3->bucket));
                r = r ?: kb_buf_append(url, ".", 1);
                r = r ?: kb_buf_append(url, s3->hostport, strlen(s3->hostport));
                r = r ?: kb_buf_append(url, "/", 1);
        } else {
                r = kb_buf_append(url, s3->scheme, strlen(s3->scheme));
                r = r ?: kb_buf_append(url, "://", 3);
                r = r ?: kb_buf_append(url, s3->hostport, strlen(s3->hostport));
                r = r ?: kb_buf_append(url, "/", 1);
                r = r ?: s3_uri_encode(s3->bucket, 0, url);
                /* No trailing slash on bucket requests: "/bucket?..." (some servers 403
                 * "/bucket/?..." because the slash changes the canonical path). */
                if (req->key)
                        r = r ?: kb_buf_append(url, "/", 1);
        }
        if (req->key)
                r = r ?: s3_uri_encode(req->key, 1, url);
        if (req->query && req->query[0]) {
                r = r ?: kb_buf_append(url, "?", 1);
                r = r ?: kb_buf_append(url, req->query, strlen(req->query));
        }
        return r ?: kb_buf_append(url, "", 1);
}

static int add_header(struct curl_slist **list, const char *fmt, const char *value)
{
        char line[1024];
        struct curl_slist *n;

        snprintf(line, sizeof(line), fmt, value);
        n = curl_slist_append(*list, line);
        if (!n)
                return -ENOMEM;
        *list = n;
        return 0;
}

static int build_headers(struct s3_backend *s3, const struct s3_req *req, struct curl_slist **out)
{
        struct curl_slist *l = NULL, *h;
        char sha[65], range[64];
        int r;

        if (req->has_body && req->body_sha256) {
                /* A pack's name is this hash: no second pass over 16 MiB, and S3 checks the name
                 * against the bytes. Debug builds (the sanitizer tests) check the claim here. */
                snprintf(sha, sizeof(sha), "%s", req->body_sha256);
#ifndef NDEBUG
                {
                        char real[65];

                        s3_sha256_hex(req->body, req->body_len, real);
                        assert(strcmp(real, sha) == 0);
                }
#endif
        } else if (req->has_body) {
                s3_sha256_hex(req->body, req->body_len, sha);
        } else {
                s3_sha256_hex("", 0, sha);
        }
        r = add_header(&l, "x-amz-content-sha256: %s", sha);
        if (r == 0 && s3->session_token)
                r = add_header(&l, "x-amz-security-token: %s", s3->session_token);
        if (r == 0 && req->range) {
                if (req->range_len)
                        snprintf(range, sizeof(range), "Range: bytes=%llu-%llu",
                                 (unsigned long long)req->range_off,
                                 (unsigned long long)(req->range_off + req->range_len - 1));
                else
                        snprintf(range, sizeof(range), "Range: bytes=%llu-",
                                 (unsigned long long)req->range_off);
                r = add_header(&l, "%s", range);
        }
        for (h = req->headers; r == 0 && h; h = h->next)
                r = add_header(&l, "%s", h->data);
        if (r < 0) {
                curl_slist_free_all(l);
                return r;
        }
        *out = l;
        return 0;
}

static void set_options(struct s3_backend *s3, CURL *h, struct xfer *x, const char *url,
                        struct curl_slist *headers, char *errbuf)
{
        struct s3_req *req = x->req;
        long conn_to =
            s3->timeout_sec < CONNECT_TIMEOUT_MAX ? s3->timeout_sec : CONNECT_TIMEOUT_MAX;
        long stall = s3->timeout_sec < STALL_TIME_MAX ? s3->timeout_sec : STALL_TIME_MAX;

        curl_easy_reset(h); /* keeps the connection and DNS caches */
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s3->sigv4);
        curl_easy_setopt(h, CURLOPT_USERNAME, s3->access_key);
        curl_easy_setopt(h, CURLOPT_PASSWORD, s3->secret_key);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, conn_to);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, s3->timeout_sec);
        /* A connection that moves nothing for `stall` seconds is dead even if the total
         * timeout is far off. */
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, stall);
        if (s3->ca_file)
                curl_easy_setopt(h, CURLOPT_CAINFO, s3->ca_file);
        /* Verification stays on (libcurl's default); there is deliberately no way to turn it
         * off. */

        if (!strcmp(req->method, "HEAD")) {
                curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        } else if (!strcmp(req->method, "PUT")) {
                curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
                curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
                curl_easy_setopt(h, CURLOPT_READDATA, x);
                curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, seek_cb);
                curl_easy_setopt(h, CURLOPT_SEEKDATA, x);
                curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_len);
        } else if (!strcmp(req->method, "POST")) {
                curl_easy_setopt(h, CURLOPT_POST, 1L);
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->has_body ? req->body : "");
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        } else if (strcmp(req->method, "GET") != 0) {
                curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
        }
}

static int retryable_curl(CURLcode c)
{
        switch (c) {
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_WEIRD_SERVER_REPLY:
                return 1;
        default:
                return 0;
        }
}

static int retryable_status(struct s3_req *req)
{
        struct s3_error e;

        if (req->status == 429 || (req->status >= 500 && req->status != 501))
                return 1;
        if (req->status == 400 && s3_xml_error(req->errbody.data, req->errbody.len, &e) == 0 &&
            (!strcmp(e.code, "RequestTimeout") || !strcmp(e.code, "SlowDown")))
                return 1;
        return 0;
}

static double now_sec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Full jitter: a uniform pause in [0, min(cap, base * 2^attempt)). */
static void backoff(int attempt)
{
        uint32_t ceiling = BACKOFF_CAP_MS;
        struct timespec ts;
        uint32_t ms;

        if (attempt < 10 && ((uint32_t)BACKOFF_BASE_MS << attempt) < ceiling)
                ceiling = (uint32_t)BACKOFF_BASE_MS << attempt;
        ms = randombytes_uniform(ceiling);
        ts.tv_sec = ms / 1000;
        ts.tv_nsec = (long)(ms % 1000) * 1000000L;
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static int curl_failure(struct s3_backend *s3, struct s3_req *req, CURLcode c, long os_errno,
                        const char *errbuf, struct kb_err *err)
{
        char where[KB_ERR_MSG_MAX / 2];
        const char *why = errbuf[0] ? errbuf : curl_easy_strerror(c);
        int code;

        s3_display(s3, req->key, where, sizeof(where));
        switch (c) {
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_ISSUER_ERROR:
                return kb_err_set(err, -EPROTO,
                                  "S3 %s %s: cannot verify %s: %s (give the server's CA with "
                                  "KBACKUP_S3_CA_FILE)",
                                  req->op, where, s3->endpoint, why);
        case CURLE_COULDNT_CONNECT:
                code = os_errno ? -(int)os_errno : -ECONNREFUSED;
                if (os_errno)
                        why = strerror((int)os_errno);
                break;
        case CURLE_OPERATION_TIMEDOUT:
                code = -ETIMEDOUT;
                break;
        case CURLE_COULDNT_RESOLVE_HOST:
                code = -EHOSTUNREACH;
                break;
        case CURLE_OUT_OF_MEMORY:
                return kb_err_set(err, -ENOMEM, "S3 %s %s: out of memory", req->op, where);
        default:
                code = -EIO;
        }
        if (req->attempts > 1)
                return kb_err_set(err, code, "S3 %s %s: cannot reach %s: %s (after %d attempts)",
                                  req->op, where, s3->endpoint, why, req->attempts);
        return kb_err_set(err, code, "S3 %s %s: cannot reach %s: %s", req->op, where, s3->endpoint,
                          why);
}

int s3_perform(struct s3_backend *s3, struct s3_req *req, struct kb_err *err)
{
        struct kb_buf url = KB_BUF_INIT;
        struct curl_slist *headers = NULL;
        char errbuf[CURL_ERROR_SIZE];
        struct xfer x = {.req = req};
        double start = now_sec();
        CURLcode c = CURLE_OK;
        long os_errno = 0;
        int r, attempt;
        CURL *h;

        req->status = 0;
        req->content_length = -1;
        req->attempts = 0;
        req->retried_after_send = 0;
        x.out_start = req->out ? req->out->len : 0;
        r = s3_build_url(s3, req, &url);
        r = r ?: build_headers(s3, req, &headers);
        if (r < 0) {
                kb_buf_free(&url);
                return kb_err_set(err, -ENOMEM, "S3 %s: out of memory", req->op);
        }
        h = pool_get(s3);
        if (!h) {
                curl_slist_free_all(headers);
                kb_buf_free(&url);
                return kb_err_set(err, -ENOMEM, "S3 %s: cannot create a connection handle",
                                  req->op);
        }
        for (attempt = 0;; attempt++) {
                x.h = h;
                x.body_pos = 0;
                x.overflow = 0;
                if (req->out)
                        req->out->len = x.out_start;
                kb_buf_reset(&req->errbody);
                req->etag[0] = '\0';
                req->status = 0;
                errbuf[0] = '\0';
                set_options(s3, h, &x, (const char *)url.data, headers, errbuf);
                req->attempts++;
                c = curl_easy_perform(h);
                if (c == CURLE_OK) {
                        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &req->status);
                        if (!retryable_status(req))
                                break;
                } else {
                        os_errno = 0;
                        curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
                        if (!retryable_curl(c))
                                break;
                }
                if (c != CURLE_COULDNT_CONNECT && c != CURLE_COULDNT_RESOLVE_HOST)
                        req->retried_after_send = 1;
                if (attempt >= s3->max_retries || now_sec() - start > (double)s3->timeout_sec)
                        break;
                backoff(attempt);
        }
        if (c == CURLE_OK) {
                curl_off_t cl = -1;

                curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
                req->content_length = cl;
        }
        /* Detach our buffers before the handle goes back to the pool. */
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
        pool_put(s3, h);
        curl_slist_free_all(headers);
        kb_buf_free(&url);

        if (x.overflow) {
                char where[KB_ERR_MSG_MAX / 2];

                s3_display(s3, req->key, where, sizeof(where));
                return kb_err_set(err, -EIO, "S3 %s %s: the server sent more than was asked for",
                                  req->op, where);
        }
        if (c == CURLE_WRITE_ERROR)
                return kb_err_set(err, -ENOMEM, "S3 %s: out of memory", req->op);
        if (c != CURLE_OK)
                return curl_failure(s3, req, c, os_errno, errbuf, err);
        return 0;
}
