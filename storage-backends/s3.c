/* s3.c - the S3 backend: a repository is a key prefix in a bucket of any S3-compatible object
 * store (AWS S3, MinIO, Ceph RGW, StorageGRID, ONTAP S3).
 *
 * Location: s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]. Keys are PREFIX/ followed by the names the
 * filesystem backend uses (kbackup, config, keys/<id>, data/<xx>/<id>, index/<id>,
 * snapshots/<id>, locks/<id>), so docs/repository-format.md describes both, and a bucket synced to
 * a directory (or back) is a valid repository.
 *
 * A PUT is a whole object, which S3 makes visible atomically; the repository never overwrites, so
 * put() first asks HEAD (servers that ignore conditional writes still get -EEXIST) and then sends
 * If-None-Match: * (servers that honour it close the race between the two). Options come from
 * the environment (see docs/s3.md); credentials never appear in a message. */
#include "s3_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#define S3_NAME_MAX        128
#define S3_LIST_BODY_MAX   (32u << 20)
#define S3_DELETE_BATCH    1000
#define S3_CONNECTIONS_MAX 64

static const struct kb_backend_ops s3_ops;

static struct s3_backend *s3_of(struct kb_backend *be)
{
        return (struct s3_backend *)be;
}

/* ---- names ---- */

static int valid_name(const char *name)
{
        size_t n;

        if (!name || !name[0] || name[0] == '.')
                return 0;
        for (n = 0; name[n]; n++) {
                char c = name[n];

                if (n >= S3_NAME_MAX ||
                    !(isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-'))
                        return 0;
        }
        return 1;
}

static int lower_hex(char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int valid_pack_name(const char *name)
{
        return valid_name(name) && lower_hex(name[0]) && lower_hex(name[1]);
}

/* A pack named like a SHA-256 (backend.h): its name is the payload hash a PUT must carry. */
static int is_sha256_hex(const char *name)
{
        size_t i;

        for (i = 0; name[i]; i++)
                if (!lower_hex(name[i]))
                        return 0;
        return i == 64;
}

/* The full key of an object; `name` is replaced by the fixed word for marker and config. */
static int object_key(struct s3_backend *s3, enum kb_obj_type type, const char **name, char *key,
                      size_t n, struct kb_err *err)
{
        if ((int)type < 0 || type >= KB_OBJ_TYPE_COUNT)
                return kb_err_set(err, -EINVAL, "unknown object type %d", (int)type);
        if (type == KB_OBJ_MARKER || type == KB_OBJ_CONFIG) {
                *name = type == KB_OBJ_MARKER ? "kbackup" : "config";
                snprintf(key, n, "%s%s", s3->prefix, *name);
                return 0;
        }
        if (type == KB_OBJ_PACK ? !valid_pack_name(*name) : !valid_name(*name))
                return kb_err_set(err, -EINVAL, "invalid %s name \"%.*s\"", kb_obj_type_word(type),
                                  S3_NAME_MAX, *name ? *name : "(null)");
        if (type == KB_OBJ_PACK)
                snprintf(key, n, "%sdata/%c%c/%s", s3->prefix, (*name)[0], (*name)[1], *name);
        else
                snprintf(key, n, "%s%s/%s", s3->prefix, kb_obj_type_dir(type), *name);
        return 0;
}

/* ---- operations ---- */

static int head(struct s3_backend *s3, const char *key, const char *op, struct s3_req *req,
                struct kb_err *err)
{
        memset(req, 0, sizeof(*req));
        req->method = "HEAD";
        req->op = op;
        req->key = key;
        return s3_perform(s3, req, err);
}

static int s3_stat(struct kb_backend *be, enum kb_obj_type type, const char *name, uint64_t *size,
                   struct kb_err *err)
{
        struct s3_backend *s3 = s3_of(be);
        char key[S3_KEY_MAX + 1];
        struct s3_req req;
        int r;

        r = object_key(s3, type, &name, key, sizeof(key), err);
        if (r < 0)
                return r;
        r = head(s3, key, "HEAD", &req, err);
        if (r == 0 && req.status == 200) {
                if (req.content_length < 0)
                        r = kb_err_set(err, -EIO, "S3 HEAD s3://%s/%s: no Content-Length",
                                       s3->bucket, key);
                else if (size)
                        *size = (uint64_t)req.content_length;
        } else if (r == 0) {
                r = s3_fail(s3, &req, kb_obj_type_word(type), name, err);
        }
        s3_req_free(&req);
        return r;
}

/* Headers every new object gets: integrity, no overwrite, retention, encryption, class. */
int s3_put_headers(struct s3_backend *s3, enum kb_obj_type type, const void *data, size_t len,
                   int conditional, struct curl_slist **out)
{
        struct curl_slist *l = NULL;
        char line[256], md5[25], until[32];
        int ok = 1;

        s3_md5_base64(data, len, md5);
        snprintf(line, sizeof(line), "Content-MD5: %s", md5);
        ok = ok && (l = curl_slist_append(l, line));
        if (conditional)
                ok = ok && (l = curl_slist_append(l, "If-None-Match: *"));
        /* Locks must stay removable, so they get no retention. */
        if (s3->retention_days > 0 && type != KB_OBJ_LOCK) {
                time_t t = time(NULL) + (time_t)s3->retention_days * 86400;
                struct tm tm;

                gmtime_r(&t, &tm);
                strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
                snprintf(line, sizeof(line), "x-amz-object-lock-mode: %s", s3->retention_mode);
                ok = ok && (l = curl_slist_append(l, line));
                snprintf(line, sizeof(line), "x-amz-object-lock-retain-until-date: %s", until);
                ok = ok && (l = curl_slist_append(l, line));
        }
        if (s3->sse) {
                snprintf(line, sizeof(line), "x-amz-server-side-encryption: %s", s3->sse);
                ok = ok && (l = curl_slist_append(l, line));
                if (s3->sse_kms_key) {
                        snprintf(line, sizeof(line),
                                 "x-amz-server-side-encryption-aws-kms-key-id: %s",
                                 s3->sse_kms_key);
                        ok = ok && (l = curl_slist_append(l, line));
                }
        }
        /* Only packs: metadata is read on every run and stays in the default class. */
        if (s3->storage_class && type == KB_OBJ_PACK) {
                snprintf(line, sizeof(line), "x-amz-storage-class: %s", s3->storage_class);
                ok = ok && (l = curl_slist_append(l, line));
        }
        if (!ok) {
                curl_slist_free_all(l);
                return -ENOMEM;
        }
        *out = l;
        return 0;
}

/* After a retried PUT answered 412, find out whether the object is ours: an earlier attempt
 * may have landed and only its answer got lost. A single-part PUT's ETag is its MD5. */
static int put_landed(struct s3_backend *s3, const char *key, const void *data, size_t len)
{
        struct s3_req req;
        char md5[33];
        int ours = 0;

        if (head(s3, key, "HEAD", &req, NULL) == 0 && req.status == 200 &&
            req.content_length == (int64_t)len) {
                s3_md5_hex(data, len, md5);
                ours = strcasecmp(req.etag, md5) == 0;
        }
        s3_req_free(&req);
        return ours;
}

static int s3_put(struct kb_backend *be, enum kb_obj_type type, const char *name, const void *data,
                  size_t len, struct kb_err *err)
{
        struct s3_backend *s3 = s3_of(be);
        char key[S3_KEY_MAX + 1];
        struct s3_req req;
        int r, conditional;

        r = object_key(s3, type, &name, key, sizeof(key), err);
        if (r < 0)
                return r;
        if (len > 0 && !data)
                return kb_err_set(err, -EINVAL, "cannot write %s: no data", key);
        if (!data)
                data = "";

        /* 403 is what S3 says for a missing key to a writer without s3:ListBucket: go on and
         * let the PUT (and If-None-Match) decide. */
        r = head(s3, key, "PUT", &req, err);
        if (r == 0 && req.status == 200)
                r = kb_err_set(err, -EEXIST, "%s %s already exists", kb_obj_type_word(type), name);
        else if (r == 0 && req.status != 404 && req.status != 403)
                r = s3_fail(s3, &req, kb_obj_type_word(type), name, err);
        s3_req_free(&req);
        if (r < 0)
                return r;

        for (;;) {
                conditional = !__atomic_load_n(&s3->no_conditional_put, __ATOMIC_RELAXED);
                memset(&req, 0, sizeof(req));
                req.method = "PUT";
                req.op = "PUT";
                req.key = key;
                req.body = data;
                req.body_len = len;
                req.has_body = 1;
                req.body_sha256 = type == KB_OBJ_PACK && is_sha256_hex(name) ? name : NULL;
                if (s3_put_headers(s3, type, data, len, conditional, &req.headers) < 0)
                        return kb_err_set(err, -ENOMEM, "S3 PUT: out of memory");
                r = s3_perform(s3, &req, err);
                curl_slist_free_all(req.headers);
                if (r == 0 && req.status == 501 && conditional) {
                        /* This server cannot do conditional writes: rely on the HEAD above. */
                        __atomic_store_n(&s3->no_conditional_put, 1, __ATOMIC_RELAXED);
                        s3_req_free(&req);
                        continue;
                }
                break;
        }
        if (r == 0 && req.status != 200) {
                if (req.status == 412 && req.retried_after_send && put_landed(s3, key, data, len))
                        r = 0;
                else
                        r = s3_fail(s3, &req, kb_obj_type_word(type), name, err);
        }
        s3_req_free(&req);
        return r;
}

static int s3_get(struct kb_backend *be, enum kb_obj_type type, const char *name, uint64_t off,
                  size_t len, struct kb_buf *out, struct kb_err *err)
{
        struct s3_backend *s3 = s3_of(be);
        char key[S3_KEY_MAX + 1];
        struct s3_req req;
        size_t old_len = out->len;
        uint64_t size;
        int r;

        r = object_key(s3, type, &name, key, sizeof(key), err);
        if (r < 0)
                return r;
        if (len > 0 && (uint64_t)len > UINT64_MAX - off)
                return kb_err_set(err, -EINVAL, "cannot read %s: range overflows", key);
        memset(&req, 0, sizeof(req));
        req.method = "GET";
        req.op = "GET";
        req.key = key;
        req.out = out;
        req.out_limit = len;
        req.range = off > 0 || len > 0;
        req.range_off = off;
        req.range_len = len;
        r = s3_perform(s3, &req, err);
        if (r == 0 && (req.status == 200 || req.status == 206)) {
                if (req.range && req.status == 200 && off > 0)
                        r = kb_err_set(err, -EIO, "S3 GET s3://%s/%s: the server ignored the Range",
                                       s3->bucket, key);
                else if (len > 0 && out->len - old_len != len)
                        r = kb_err_set(err, -EIO,
                                       "cannot read %s: truncated (wanted %zu bytes at offset "
                                       "%llu, got %zu)",
                                       key, len, (unsigned long long)off, out->len - old_len);
        } else if (r == 0 && req.status == 416) {
                /* Reading from the very end is an empty read, not an error (as on a file). */
                s3_req_free(&req);
                r = s3_stat(be, type, name, &size, err);
                if (r == 0 && !(len == 0 && size == off))
                        r = kb_err_set(err, -EIO,
                                       "cannot read %s: truncated (%llu bytes, wanted %zu at "
                                       "offset %llu)",
                                       key, (unsigned long long)size, len, (unsigned long long)off);
        } else if (r == 0) {
                r = s3_fail(s3, &req, kb_obj_type_word(type), name, err);
        }
        if (r < 0)
                out->len = old_len;
        s3_req_free(&req);
        return r;
}

/* Query string for one ListObjectsV2 page: parameters sorted, values encoded. */
static int list_query(const char *prefix, const char *token, const char *max_keys, struct kb_buf *q)
{
        int r = 0;

        if (token) {
                r = kb_buf_append(q, "continuation-token=", 19);
                r = r ?: s3_uri_encode(token, 0, q);
                r = r ?: kb_buf_append(q, "&", 1);
        }
        r = r ?: kb_buf_append(q, "list-type=2&", 12);
        if (max_keys) {
                r = r ?: kb_buf_append(q, "max-keys=", 9);
                r = r ?: kb_buf_append(q, max_keys, strlen(max_keys));
                r = r ?: kb_buf_append(q, "&", 1);
        }
        r = r ?: kb_buf_append(q, "prefix=", 7);
        r = r ?: s3_uri_encode(prefix, 0, q);
        return r ?: kb_buf_append(q, "", 1);
}

int s3_list_request(struct s3_backend *s3, const char *prefix, const char *token,
                    const char *max_keys, struct s3_list_page *page, struct s3_req *req,
                    struct kb_err *err)
{
        struct kb_buf q = KB_BUF_INIT, body = KB_BUF_INIT;
        char where[KB_ERR_MSG_MAX / 2];
        int r;

        memset(page, 0, sizeof(*page));
        memset(req, 0, sizeof(*req));
        if (list_query(prefix, token, max_keys, &q) < 0)
                return kb_err_set(err, -ENOMEM, "S3 LIST: out of memory");
        req->method = "GET";
        req->op = "LIST";
        req->query = (const char *)q.data;
        req->out = &body;
        req->out_limit = S3_LIST_BODY_MAX;
        r = s3_perform(s3, req, err);
        if (r == 0 && req->status == 200) {
                r = s3_xml_list(body.data, body.len, page);
                if (r < 0) {
                        snprintf(where, sizeof(where), "s3://%s/%s", s3->bucket, prefix);
                        r = kb_err_set(err, r == -ENOMEM ? -ENOMEM : -EIO,
                                       "S3 LIST %s: the server's answer does not parse", where);
                }
        }
        req->query = NULL;
        kb_buf_free(&q);
        kb_buf_free(&body);
        return r;
}

/* Which listed keys are objects of the type, and their names (as fs.c's list skips strays). */
static const char *listed_name(enum kb_obj_type type, const char *rel)
{
        if (type != KB_OBJ_PACK)
                return valid_name(rel) ? rel : NULL;
        if (!lower_hex(rel[0]) || !lower_hex(rel[1]) || rel[2] != '/')
                return NULL;
        if (!valid_pack_name(rel + 3) || strncmp(rel, rel + 3, 2) != 0)
                return NULL;
        return rel + 3;
}

static int s3_list(struct kb_backend *be, enum kb_obj_type type, kb_backend_list_cb cb, void *arg,
                   struct kb_err *err)
{
        struct s3_backend *s3 = s3_of(be);
        struct s3_list_page page;
        struct s3_req req;
        char prefix[S3_KEY_MAX + 1];
        char *token = NULL;
        size_t plen, i;
        uint64_t size;
        int r = 0;

        if ((int)type < 0 || type >= KB_OBJ_TYPE_COUNT)
                return kb_err_set(err, -EINVAL, "unknown object type %d", (int)type);
        if (type == KB_OBJ_MARKER || type == KB_OBJ_CONFIG) {
                const char *name = type == KB_OBJ_MARKER ? "kbackup" : "config";

                r = s3_stat(be, type, name, &size, err);
                if (r == KB_ENOTFOUND) {
                        kb_err_clear(err);
                        return 0;
                }
                return r < 0 ? r : cb(name, size, arg);
        }
        snprintf(prefix, sizeof(prefix), "%s%s/", s3->prefix, kb_obj_type_dir(type));
        plen = strlen(prefix);
        for (;;) {
                r = s3_list_request(s3, prefix, token, NULL, &page, &req, err);
                if (r == 0 && req.status != 200)
                        r = s3_fail(s3, &req, NULL, NULL, err);
                s3_req_free(&req);
                if (r < 0)
                        break;
                /* Callbacks run with no connection held: they may call the backend again. */
                for (i = 0; i < page.n && r == 0; i++) {
                        const char *key = page.entries[i].key, *name;

                        if (strncmp(key, prefix, plen) != 0)
                                continue;
                        name = listed_name(type, key + plen);
                        if (name)
                                r = cb(name, page.entries[i].size, arg);
                }
                if (r == 0 && page.truncated && token && !strcmp(token, page.next_token))
                        r = kb_err_set(err, -EIO,
                                       "S3 LIST s3://%s/%s: the server repeats its continuation "
                                       "token",
                                       s3->bucket, prefix);
                free(token);
                token = NULL;
                if (r == 0 && page.truncated) {
                        token = page.next_token;
                        page.next_token = NULL;
                }
                s3_list_page_free(&page);
                if (r != 0 || !token)
                        break;
        }
        free(token);
        return r;
}

static int s3_remove(struct kb_backend *be, enum kb_obj_type type, const char *name,
                     struct kb_err *err)
{
        struct s3_backend *s3 = s3_of(be);
        char key[S3_KEY_MAX + 1];
        struct s3_req req;
        int r;

        r = object_key(s3, type, &name, key, sizeof(key), err);
        if (r < 0)
                return r;
        memset(&req, 0, sizeof(req));
        req.method = "DELETE";
        req.op = "DELETE";
        req.key = key;
        r = s3_perform(s3, &req, err);
        if (r == 0 && req.status != 204 && req.status != 200 && req.status != 404)
                r = s3_fail(s3, &req, kb_obj_type_word(type), name, err);
        s3_req_free(&req);
        return r;
}

/* One Multi-Object Delete request for up to 1000 names. */
static int delete_batch(struct s3_backend *s3, enum kb_obj_type type, const char *const *names,
                        size_t n, struct kb_err *err)
{
        static const char head_xml[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete xmlns="
                                       "\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true"
                                       "</Quiet>";
        struct kb_buf xml = KB_BUF_INIT, answer = KB_BUF_INIT;
        char key[S3_KEY_MAX + 1], md5[25], line[64], first_key[S3_KEY_MAX + 1];
        struct s3_error first;
        struct curl_slist *h = NULL;
        struct s3_req req;
        size_t i, nerr = 0;
        int r;

        r = kb_buf_append(&xml, head_xml, sizeof(head_xml) - 1);
        for (i = 0; i < n && r == 0; i++) {
                const char *name = names[i];

                r = object_key(s3, type, &name, key, sizeof(key), err);
                if (r < 0)
                        goto out;
                r = kb_buf_append(&xml, "<Object><Key>", 13);
                r = r ?: s3_xml_escape(key, &xml);
                r = r ?: kb_buf_append(&xml, "</Key></Object>", 15);
        }
        r = r ?: kb_buf_append(&xml, "</Delete>", 9);
        s3_md5_base64(xml.data, xml.len, md5);
        snprintf(line, sizeof(line), "Content-MD5: %s", md5);
        if (r == 0 && (!(h = curl_slist_append(NULL, "Content-Type: application/xml")) ||
                       !curl_slist_append(h, line)))
                r = -ENOMEM;
        if (r < 0) {
                r = kb_err_set(err, -ENOMEM, "S3 DELETE: out of memory");
                goto out;
        }
        memset(&req, 0, sizeof(req));
        req.method = "POST";
        req.op = "DELETE";
        req.query = "delete=";
        req.body = xml.data;
        req.body_len = xml.len;
        req.has_body = 1;
        req.headers = h;
        req.out = &answer;
        req.out_limit = S3_LIST_BODY_MAX;
        r = s3_perform(s3, &req, err);
        if (r == 0 && req.status != 200) {
                r = s3_fail(s3, &req, NULL, NULL, err);
        } else if (r == 0) {
                r = s3_xml_delete_result(answer.data, answer.len, &nerr, first_key,
                                         sizeof(first_key), &first);
                if (r < 0)
                        r = kb_err_set(err, -EIO,
                                       "S3 DELETE s3://%s: the server's answer does not parse",
                                       s3->bucket);
                else if (nerr > 0)
                        r = kb_err_set(
                            err,
                            first.code[0] && !strcmp(first.code, "AccessDenied") ? -EACCES : -EIO,
                            "S3 DELETE s3://%s/%s: %s: %s (%zu of %zu objects not "
                            "deleted)",
                            s3->bucket, first_key, first.code, first.message, nerr, n);
        }
        s3_req_free(&req);
out:
        curl_slist_free_all(h);
        kb_buf_free(&xml);
        kb_buf_free(&answer);
        return r;
}

int kb_s3_delete_many(struct kb_backend *be, enum kb_obj_type type, const char *const *names,
                      size_t n, struct kb_err *err)
{
        size_t done, batch;
        int r;

        if (!be || be->ops != &s3_ops)
                return kb_err_set(err, KB_EUSAGE, "not an S3 repository");
        if (type == KB_OBJ_MARKER || type == KB_OBJ_CONFIG || (int)type < 0 ||
            type >= KB_OBJ_TYPE_COUNT)
                return kb_err_set(err, -EINVAL, "batched delete of object type %d", (int)type);
        for (done = 0; done < n; done += batch) {
                batch = n - done < S3_DELETE_BATCH ? n - done : S3_DELETE_BATCH;
                r = delete_batch(s3_of(be), type, names + done, batch, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void s3_close(struct kb_backend *be)
{
        struct s3_backend *s3 = s3_of(be);

        s3_pool_destroy(s3);
        if (s3->secret_key)
                sodium_memzero(s3->secret_key, strlen(s3->secret_key));
        if (s3->session_token)
                sodium_memzero(s3->session_token, strlen(s3->session_token));
        free(s3->endpoint);
        free(s3->scheme);
        free(s3->hostport);
        free(s3->bucket);
        free(s3->prefix);
        free(s3->access_key);
        free(s3->secret_key);
        free(s3->session_token);
        free(s3->region);
        free(s3->ca_file);
        free(s3->retention_mode);
        free(s3->sse);
        free(s3->sse_kms_key);
        free(s3->storage_class);
        free(s3);
}

static const struct kb_backend_ops s3_ops = {
    .put = s3_put,
    .get = s3_get,
    .stat = s3_stat,
    .list = s3_list,
    .remove = s3_remove,
    .close = s3_close,
};

int kb_s3_backend_open(const char *location, int create, struct kb_backend **out,
                       struct kb_err *err)
{
        struct s3_backend *s3;
        int r;

        *out = NULL;
        s3 = calloc(1, sizeof(*s3));
        if (!s3)
                return kb_err_set(err, -ENOMEM, "out of memory");
        s3->base.ops = &s3_ops;
        r = s3_configure(s3, location, err);
        if (r == 0) {
                r = s3_pool_init(s3, s3->capacity);
                if (r < 0)
                        kb_err_set(err, r, "cannot initialise libcurl");
        }
        if (r == 0)
                r = s3_check_bucket(s3, create, err);
        if (r < 0) {
                s3_close(&s3->base);
                return r;
        }
        *out = &s3->base;
        return 0;
}
