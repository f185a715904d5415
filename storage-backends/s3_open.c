/* s3_open.c - what an S3 repository location and the environment say, and the bucket check at
 * open time.
 *
 * The location is taken literally ("s3:https://host/bucket/my prefix" is the prefix "my prefix/";
 * we percent-encode it ourselves). Options are environment variables so that the CLI, a
 * Kubernetes pod spec and the tests all set them the same way; each is validated here, and a
 * bad value is a usage error naming the variable. Opening only reads (one ListObjectsV2 of at
 * most one key, which also proves the credentials early); only `create` (init) may make the
 * bucket. */
#include "s3_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define S3_DEFAULT_CONNECTIONS 4
#define S3_DEFAULT_RETRIES     5
#define S3_DEFAULT_TIMEOUT     300

static const char *env(const char *name)
{
        const char *v = getenv(name);

        return v && v[0] ? v : NULL;
}

static int env_int(const char *name, long min, long max, long def, long *out, struct kb_err *err)
{
        const char *v = env(name);
        char *end;
        long x;

        *out = def;
        if (!v)
                return 0;
        errno = 0;
        x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < min || x > max)
                return kb_err_set(err, KB_EUSAGE, "%s must be a whole number from %ld to %ld", name,
                                  min, max);
        *out = x;
        return 0;
}

static int dup_to(char **dst, const char *src, size_t n)
{
        *dst = strndup(src, n);
        return *dst ? 0 : -ENOMEM;
}

static int printable(const char *s, size_t n)
{
        size_t i;

        for (i = 0; i < n; i++)
                if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                        return 0;
        return 1;
}

static int bucket_ok(const char *b, int dns)
{
        size_t n = strlen(b), i;

        if (n == 0 || n > 255 || (dns && (n < 3 || n > 63)))
                return 0;
        for (i = 0; i < n; i++) {
                char c = b[i];

                if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')
                        continue;
                if (!dns && ((c >= 'A' && c <= 'Z') || c == '_'))
                        continue;
                return 0;
        }
        return !dns || (isalnum((unsigned char)b[0]) && isalnum((unsigned char)b[n - 1]));
}

/* "a//b/c/" -> "a/b/c/"; "" stays "". Dot segments are refused: URL normalisation (ours or a
 * proxy's) would turn them into a different key than the one we signed. */
static int normalize_prefix(const char *in, char **out)
{
        size_t n = strlen(in), i = 0, o = 0, seg;
        char *p = malloc(n + 2);

        if (!p)
                return -ENOMEM;
        while (i < n) {
                while (i < n && in[i] == '/')
                        i++;
                seg = i;
                while (i < n && in[i] != '/')
                        i++;
                if (i == seg)
                        break;
                if ((i - seg == 1 && in[seg] == '.') ||
                    (i - seg == 2 && in[seg] == '.' && in[seg + 1] == '.')) {
                        free(p);
                        return -EINVAL;
                }
                memcpy(p + o, in + seg, i - seg);
                o += i - seg;
                p[o++] = '/';
        }
        p[o] = '\0';
        *out = p;
        return 0;
}

static int parse_location(struct s3_backend *s3, const char *location, struct kb_err *err)
{
        const char *url = location + 3, *host, *slash, *bucket, *end;
        size_t hlen;
        int r;

        if (!strncmp(url, "https://", 8))
                host = url + 8;
        else if (!strncmp(url, "http://", 7))
                host = url + 7;
        else
                return kb_err_set(err, KB_EUSAGE,
                                  "S3 location \"%s\" must look like "
                                  "s3:https://HOST[:PORT]/BUCKET[/PREFIX]",
                                  location);
        if (!printable(location, strlen(location)) || strpbrk(location, "?#"))
                return kb_err_set(err, KB_EUSAGE,
                                  "S3 location \"%s\": control characters, '?' and '#' are not "
                                  "allowed",
                                  location);
        slash = strchr(host, '/');
        hlen = slash ? (size_t)(slash - host) : strlen(host);
        if (hlen == 0 || memchr(host, '@', hlen) || memchr(host, ' ', hlen))
                return kb_err_set(err, KB_EUSAGE,
                                  "S3 location \"%s\": bad host (credentials go in "
                                  "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, not the URL)",
                                  location);
        if (!slash || !slash[1] || slash[1] == '/')
                return kb_err_set(err, KB_EUSAGE, "S3 location \"%s\" names no bucket", location);
        bucket = slash + 1;
        end = strchr(bucket, '/');
        if (!end)
                end = bucket + strlen(bucket);
        r = dup_to(&s3->scheme, url, (size_t)(strstr(url, "://") - url));
        r = r ?: dup_to(&s3->hostport, host, hlen);
        r = r ?: dup_to(&s3->endpoint, url, (size_t)(host + hlen - url));
        r = r ?: dup_to(&s3->bucket, bucket, (size_t)(end - bucket));
        if (r == 0) {
                r = normalize_prefix(end, &s3->prefix);
                if (r == -EINVAL)
                        return kb_err_set(err, KB_EUSAGE,
                                          "S3 location \"%s\": '.' and '..' are not allowed in "
                                          "the prefix",
                                          location);
        }
        if (r < 0)
                return kb_err_set(err, -ENOMEM, "out of memory");
        if (strlen(s3->prefix) > 512)
                return kb_err_set(err, KB_EUSAGE, "S3 location \"%s\": the prefix is too long",
                                  location);
        return 0;
}

static int region_ok(const char *r)
{
        size_t i;

        for (i = 0; r[i]; i++)
                if (!isalnum((unsigned char)r[i]) && r[i] != '-' && r[i] != '_')
                        return 0;
        return i > 0 && i < 64;
}

static int word_ok(const char *s, const char *extra)
{
        size_t i;

        for (i = 0; s[i]; i++)
                if (!isalnum((unsigned char)s[i]) && !strchr(extra, s[i]))
                        return 0;
        return i > 0 && i < 200;
}

static int read_credentials(struct s3_backend *s3, struct kb_err *err)
{
        const char *id = env("AWS_ACCESS_KEY_ID"), *secret = env("AWS_SECRET_ACCESS_KEY");
        const char *token = env("AWS_SESSION_TOKEN");
        const char *region = env("AWS_REGION");

        if (!id || !secret)
                return kb_err_set(err, KB_EUSAGE,
                                  "S3 credentials missing: set AWS_ACCESS_KEY_ID and "
                                  "AWS_SECRET_ACCESS_KEY");
        /* Header injection through a variable is not a thing we let happen. */
        if (!printable(id, strlen(id)) || !printable(secret, strlen(secret)) ||
            (token && !printable(token, strlen(token))))
                return kb_err_set(err, KB_EUSAGE,
                                  "S3 credentials contain control characters (a stray newline?)");
        if (!region)
                region = env("AWS_DEFAULT_REGION");
        if (!region)
                region = "us-east-1";
        if (!region_ok(region))
                return kb_err_set(err, KB_EUSAGE, "AWS_REGION \"%s\" is not a region name", region);
        s3->access_key = strdup(id);
        s3->secret_key = strdup(secret);
        s3->session_token = token ? strdup(token) : NULL;
        s3->region = strdup(region);
        if (!s3->access_key || !s3->secret_key || (token && !s3->session_token) || !s3->region)
                return kb_err_set(err, -ENOMEM, "out of memory");
        snprintf(s3->sigv4, sizeof(s3->sigv4), "aws:amz:%s:s3", region);
        return 0;
}

static int read_options(struct s3_backend *s3, struct kb_err *err)
{
        const char *ca = env("KBACKUP_S3_CA_FILE"), *mode = env("KBACKUP_S3_RETENTION_MODE");
        const char *sse = env("KBACKUP_S3_SSE"), *kms = env("KBACKUP_S3_SSE_KMS_KEY_ID");
        const char *sc = env("KBACKUP_S3_STORAGE_CLASS"), *vh = env("KBACKUP_S3_VIRTUAL_HOST");
        long v;
        int r;

        if (!ca)
                ca = env("AWS_CA_BUNDLE");
        if (ca) {
                if (access(ca, R_OK) < 0)
                        return kb_err_sys(err, -errno, "cannot read the S3 CA file %s", ca);
                s3->ca_file = strdup(ca);
        }
        if (vh && strcmp(vh, "0") != 0) {
                if (strcmp(vh, "1") != 0)
                        return kb_err_set(err, KB_EUSAGE, "KBACKUP_S3_VIRTUAL_HOST must be 0 or 1");
                s3->virtual_host = 1;
        }
        r = env_int("KBACKUP_S3_CONNECTIONS", 1, 64, S3_DEFAULT_CONNECTIONS, &v, err);
        s3->capacity = (int)v;
        r = r ?: env_int("KBACKUP_S3_MAX_RETRIES", 0, 20, S3_DEFAULT_RETRIES, &v, err);
        s3->max_retries = (int)v;
        r = r ?: env_int("KBACKUP_S3_TIMEOUT", 1, 86400, S3_DEFAULT_TIMEOUT, &v, err);
        s3->timeout_sec = v;
        r = r ?: env_int("KBACKUP_S3_RETENTION_DAYS", 0, 36500, 0, &v, err);
        s3->retention_days = (int)v;
        if (r < 0)
                return r;
        if (mode && strcasecmp(mode, "GOVERNANCE") && strcasecmp(mode, "COMPLIANCE"))
                return kb_err_set(err, KB_EUSAGE,
                                  "KBACKUP_S3_RETENTION_MODE must be GOVERNANCE or COMPLIANCE");
        if (mode && !s3->retention_days)
                return kb_err_set(err, KB_EUSAGE,
                                  "KBACKUP_S3_RETENTION_MODE needs KBACKUP_S3_RETENTION_DAYS");
        s3->retention_mode =
            strdup(mode && !strcasecmp(mode, "COMPLIANCE") ? "COMPLIANCE" : "GOVERNANCE");
        if (sse) {
                if (strcmp(sse, "AES256") && strcmp(sse, "aws:kms") && strcmp(sse, "aws:kms:dsse"))
                        return kb_err_set(err, KB_EUSAGE,
                                          "KBACKUP_S3_SSE must be AES256, aws:kms or aws:kms:dsse");
                s3->sse = strdup(sse);
        }
        if (kms) {
                if (!sse || strncmp(sse, "aws:kms", 7) != 0)
                        return kb_err_set(err, KB_EUSAGE,
                                          "KBACKUP_S3_SSE_KMS_KEY_ID needs KBACKUP_S3_SSE=aws:kms");
                if (!word_ok(kms, ":/-_."))
                        return kb_err_set(err, KB_EUSAGE,
                                          "KBACKUP_S3_SSE_KMS_KEY_ID is not a key id or ARN");
                s3->sse_kms_key = strdup(kms);
        }
        if (sc) {
                if (!word_ok(sc, "_"))
                        return kb_err_set(err, KB_EUSAGE,
                                          "KBACKUP_S3_STORAGE_CLASS \"%s\" is not a storage "
                                          "class name",
                                          sc);
                s3->storage_class = strdup(sc);
        }
        if ((ca && !s3->ca_file) || !s3->retention_mode || (sse && !s3->sse) ||
            (kms && !s3->sse_kms_key) || (sc && !s3->storage_class))
                return kb_err_set(err, -ENOMEM, "out of memory");
        return 0;
}

int s3_configure(struct s3_backend *s3, const char *location, struct kb_err *err)
{
        int r;

        if (!location || strncmp(location, "s3:", 3) != 0)
                return kb_err_set(err, KB_EUSAGE, "not an S3 location");
        r = parse_location(s3, location, err);
        r = r ?: read_credentials(s3, err);
        r = r ?: read_options(s3, err);
        if (r == 0 && !bucket_ok(s3->bucket, s3->virtual_host))
                return kb_err_set(err, KB_EUSAGE,
                                  s3->virtual_host ? "bucket name '%s' cannot be used with "
                                                     "virtual-hosted style (KBACKUP_S3_VIRTUAL_"
                                                     "HOST=1): it is not a DNS name"
                                                   : "bucket name '%s' is not valid",
                                  s3->bucket);
        return r;
}

static int create_bucket(struct s3_backend *s3, struct kb_err *err)
{
        struct kb_buf body = KB_BUF_INIT;
        struct curl_slist *h = NULL;
        struct s3_req req;
        char md5[25], line[64];
        int r = 0;

        /* us-east-1 is the default and must not be named; every other region must be. */
        if (strcmp(s3->region, "us-east-1") != 0) {
                static const char a[] = "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws."
                                        "com/doc/2006-03-01/\"><LocationConstraint>";
                static const char b[] = "</LocationConstraint></CreateBucketConfiguration>";

                r = kb_buf_append(&body, a, sizeof(a) - 1);
                r = r ?: kb_buf_append(&body, s3->region, strlen(s3->region));
                r = r ?: kb_buf_append(&body, b, sizeof(b) - 1);
        }
        s3_md5_base64(body.data ? (const void *)body.data : "", body.len, md5);
        snprintf(line, sizeof(line), "Content-MD5: %s", md5);
        if (r == 0 && !(h = curl_slist_append(NULL, line)))
                r = -ENOMEM;
        /* Object Lock can only be switched on when a bucket is made. */
        if (r == 0 && s3->retention_days > 0 &&
            !curl_slist_append(h, "x-amz-bucket-object-lock-enabled: true"))
                r = -ENOMEM;
        if (r < 0) {
                curl_slist_free_all(h);
                kb_buf_free(&body);
                return kb_err_set(err, -ENOMEM, "out of memory");
        }
        memset(&req, 0, sizeof(req));
        req.method = "PUT";
        req.op = "CREATE-BUCKET";
        req.body = body.data ? (const void *)body.data : "";
        req.body_len = body.len;
        req.has_body = 1;
        req.headers = h;
        r = s3_perform(s3, &req, err);
        if (r == 0 && req.status != 200 && req.status != 409)
                r = s3_fail(s3, &req, NULL, NULL, err);
        s3_req_free(&req);
        curl_slist_free_all(h);
        kb_buf_free(&body);
        return r;
}

int s3_check_bucket(struct s3_backend *s3, int create, struct kb_err *err)
{
        struct s3_list_page page;
        struct s3_req req;
        struct s3_error e;
        int r, missing;

        r = s3_list_request(s3, s3->prefix, NULL, "1", &page, &req, err);
        if (r < 0) {
                s3_req_free(&req);
                return r;
        }
        if (req.status == 200) {
                s3_list_page_free(&page);
                s3_req_free(&req);
                return 0;
        }
        missing = req.status == 404 && (s3_xml_error(req.errbody.data, req.errbody.len, &e) < 0 ||
                                        !strcmp(e.code, "NoSuchBucket"));
        if (!missing || !create) {
                r = s3_fail(s3, &req, NULL, NULL, err);
                s3_req_free(&req);
                return r;
        }
        s3_req_free(&req);
        return create_bucket(s3, err);
}
