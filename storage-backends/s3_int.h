/* s3_int.h - what the S3 backend's files share (s3.c: the backend operations and opening;
 * s3_http.c: the connection pool, signing options, retries and error messages; s3_xml.c: the
 * expat parsers; s3_open.c: configuration). Not part of the backend interface; tests include it to
 * reach the parsers. */
#ifndef KB_S3_INT_H
#define KB_S3_INT_H

#include <pthread.h>
#include <stdint.h>

#include <curl/curl.h>

#include "backend.h"

#define S3_KEY_MAX      1024 /* S3's own limit on a key, in bytes */
#define S3_CODE_MAX     64
#define S3_XML_TEXT_MAX 2048

struct s3_backend {
        struct kb_backend base; /* must stay first: ops receive a struct kb_backend * */

        char *endpoint; /* "http[s]://host[:port]" as given, for messages */
        char *scheme;   /* "http" or "https" */
        char *hostport; /* "host[:port]" (IPv6 in brackets) */
        char *bucket;
        char *prefix;     /* "" or "a/b/" (always ends in '/') */
        int virtual_host; /* bucket.host/key instead of host/bucket/key */

        char *access_key;
        char *secret_key; /* wiped on close */
        char *session_token;
        char *region;
        char sigv4[96]; /* "aws:amz:REGION:s3" */
        char *ca_file;

        int retention_days; /* 0 = no object lock headers */
        char *retention_mode;
        char *sse;
        char *sse_kms_key;
        char *storage_class;
        int max_retries;
        long timeout_sec;
        /* Set once a server answers 501 to If-None-Match: *; later puts rely on the HEAD alone. */
        int no_conditional_put;

        /* Pool of easy handles: each keeps its own connection alive between requests. */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        CURL **handles;
        int nhandles, nfree, capacity;
};

/* One request and, after s3_perform, its response. */
struct s3_req {
        const char *method; /* GET, HEAD, PUT, POST, DELETE */
        const char *op;     /* word for messages: "GET", "LIST", ... */
        const char *key;    /* full object key (unencoded), or NULL for the bucket itself */
        const char *query;  /* canonical query (sorted, encoded, "k=v&k=v"), or NULL */
        const void *body;   /* request body for PUT/POST */
        size_t body_len;
        int has_body;
        const char *body_sha256;    /* the body's SHA-256 (lowercase hex) when known, or NULL */
        struct curl_slist *headers; /* extra headers (signed along), owned by the caller */
        int range;                  /* send "Range: bytes=range_off-[range_off+range_len-1]" */
        uint64_t range_off;
        size_t range_len; /* 0 = to the end */

        /* Response. */
        long status;
        struct kb_buf *out;     /* 2xx body is appended here (may be NULL: discarded) */
        size_t out_limit;       /* > 0: more 2xx body than this is an error */
        struct kb_buf errbody;  /* non-2xx body (bounded), for the S3 error code */
        int64_t content_length; /* from the response headers, -1 when absent */
        char etag[80];          /* ETag header without quotes, "" when absent */
        int attempts;           /* how many times the request was sent */
        int retried_after_send; /* an earlier attempt may have reached the server */
};

/* S3's error document, <Error><Code/><Message/>...</Error>. */
struct s3_error {
        char code[S3_CODE_MAX];
        char message[256];
        char region[64];    /* <Region>, in AuthorizationHeaderMalformed / redirects */
        char endpoint[128]; /* <Endpoint>, in PermanentRedirect */
};

/* One listed object. */
struct s3_list_entry {
        char *key;
        uint64_t size;
};

struct s3_list_page {
        struct s3_list_entry *entries;
        size_t n, cap;
        int truncated;
        char *next_token;
};

/* s3_open.c: the location and the environment; the bucket checked (or, with create, made). */
int s3_configure(struct s3_backend *s3, const char *location, struct kb_err *err);
int s3_check_bucket(struct s3_backend *s3, int create, struct kb_err *err);

/* s3.c: the headers a new object is written with (exposed for tests). */
int s3_put_headers(struct s3_backend *s3, enum kb_obj_type type, const void *data, size_t len,
                   int conditional, struct curl_slist **out);

/* s3.c: one ListObjectsV2 request for keys starting with `prefix` (token: from the previous
 * page, or NULL; max_keys: NULL for the server's default). 0 when an answer arrived: the page is
 * filled when req->status is 200 and is the caller's to free, as is req. */
int s3_list_request(struct s3_backend *s3, const char *prefix, const char *token,
                    const char *max_keys, struct s3_list_page *page, struct s3_req *req,
                    struct kb_err *err);

/* s3_http.c */
int s3_pool_init(struct s3_backend *s3, int size);
void s3_pool_destroy(struct s3_backend *s3);
/* Send the request (retrying transient failures). 0 when an HTTP answer arrived (any status,
 * in req->status), or a negative code with the "cannot reach ..." message in err. */
int s3_perform(struct s3_backend *s3, struct s3_req *req, struct kb_err *err);
/* Turn a non-2xx answer into a one-line message naming operation, bucket and key. `what` and
 * `name` describe a missing object ("pack 1a2b..."), used for 404. Returns the code. */
int s3_fail(struct s3_backend *s3, struct s3_req *req, const char *what, const char *name,
            struct kb_err *err);
/* The request's URL (NUL-terminated in url): path or virtual-hosted style, key and query
 * encoded as they are signed. */
int s3_build_url(struct s3_backend *s3, const struct s3_req *req, struct kb_buf *url);
/* "s3://bucket/key" for messages. */
void s3_display(const struct s3_backend *s3, const char *key, char *out, size_t n);
void s3_req_free(struct s3_req *req);

/* Percent-encode for a URL path (keep_slash) or a query value, RFC 3986 unreserved kept. */
int s3_uri_encode(const char *in, int keep_slash, struct kb_buf *out);
/* Hex SHA-256 and base64 MD5 of a body, for x-amz-content-sha256 and Content-MD5. */
void s3_sha256_hex(const void *data, size_t len, char out[65]);
void s3_md5_base64(const void *data, size_t len, char out[25]);
void s3_md5_hex(const void *data, size_t len, char out[33]);

/* s3_xml.c: bounded parsers of untrusted XML; return 0 or -EBADMSG / -ENOMEM. */
int s3_xml_error(const void *xml, size_t len, struct s3_error *out);
int s3_xml_list(const void *xml, size_t len, struct s3_list_page *page);
void s3_list_page_free(struct s3_list_page *page);
/* Multi-Object Delete answer: the number of <Error> entries, with the first one's key and code. */
int s3_xml_delete_result(const void *xml, size_t len, size_t *nerrors, char *first_key,
                         size_t key_n, struct s3_error *first);
/* Append `s` to out with XML's five special characters escaped. */
int s3_xml_escape(const char *s, struct kb_buf *out);

#endif
