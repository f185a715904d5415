/* metrics_push.c - delivering a run's metrics elsewhere than a file: the Pushgateway, over
 * libcurl; and the repository totals the metrics report (see metrics.h). */
#include "metrics.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

#define PUSH_BODY_MAX 512u /* of an error response, for the message */

static int put_str(struct kb_buf *out, const char *s)
{
        return kb_buf_append(out, s, strlen(s));
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_rc;

static void curl_init(void)
{
        curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -ENOMEM;
}

/* "/job/VALUE" of the grouping key. A value with a slash, or an empty one, cannot be a path
 * segment: the Pushgateway takes those as "/job@base64/URLSAFE_BASE64" ("=" for empty). */
static int put_key(struct kb_buf *url, CURL *c, const char *name, const char *value)
{
        int r = put_str(url, "/");

        r = r ?: put_str(url, name);
        if (!*value || strchr(value, '/')) {
                size_t n = sodium_base64_encoded_len(strlen(value),
                                                     sodium_base64_VARIANT_URLSAFE_NO_PADDING);
                char *b = malloc(n);

                if (!b)
                        return -ENOMEM;
                sodium_bin2base64(b, n, (const unsigned char *)value, strlen(value),
                                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
                r = r ?: put_str(url, "@base64/");
                r = r ?: put_str(url, *value ? b : "=");
                free(b);
        } else {
                char *e = curl_easy_escape(c, value, 0);

                if (!e)
                        return -ENOMEM;
                r = r ?: put_str(url, "/");
                r = r ?: put_str(url, e);
                curl_free(e);
        }
        return r;
}

/* The URL for messages: without user:password@. */
static void url_for_msg(const char *url, char *buf, size_t len)
{
        const char *scheme = strstr(url, "://"), *host = scheme ? scheme + 3 : url;
        const char *at = strchr(host, '@'), *slash = strchr(host, '/');

        if (at && (!slash || at < slash))
                snprintf(buf, len, "%.*s%s", (int)(host - url), url, at + 1);
        else
                snprintf(buf, len, "%s", url);
}

static size_t keep_body(char *p, size_t size, size_t n, void *arg)
{
        struct kb_buf *b = arg;
        size_t len = size * n;

        if (b->len < PUSH_BODY_MAX)
                kb_buf_append(b, p, len < PUSH_BODY_MAX - b->len ? len : PUSH_BODY_MAX - b->len);
        return len;
}

int kb_metrics_push(const struct kb_metrics *run, const char *url, const char *job,
                    const char *instance, int replace, long timeout_ms, struct kb_err *err)
{
        struct kb_buf body = KB_BUF_INIT, full = KB_BUF_INIT, resp = KB_BUF_INIT;
        struct curl_slist *hdr = NULL;
        char shown[512];
        size_t ulen = strlen(url);
        long status = 0;
        CURL *c = NULL;
        CURLcode cr;
        int r;

        url_for_msg(url, shown, sizeof(shown));
        pthread_once(&curl_once, curl_init);
        if (curl_rc < 0 || !(c = curl_easy_init())) {
                r = kb_err_set(err, -ENOMEM, "pushgateway %s: cannot start libcurl", shown);
                goto out;
        }
        while (ulen && url[ulen - 1] == '/')
                ulen--;
        r = kb_buf_append(&full, url, ulen);
        r = r ?: put_str(&full, "/metrics");
        r = r ?: put_key(&full, c, "job", job);
        r = r ?: put_key(&full, c, "instance", instance);
        r = r ?: kb_buf_append(&full, "", 1);
        r = r ?: kb_metrics_render(run, &body);
        hdr = curl_slist_append(NULL, "Content-Type: text/plain; version=0.0.4; charset=utf-8");
        if (r < 0 || !hdr) {
                r = kb_err_set(err, -ENOMEM, "out of memory");
                goto out;
        }
        curl_easy_setopt(c, CURLOPT_URL, (const char *)full.data);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, replace ? "PUT" : "POST");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.len ? (const char *)body.data : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body.len);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 10000 ? timeout_ms : 10000L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
        cr = curl_easy_perform(c);
        if (cr != CURLE_OK) {
                r = kb_err_set(err, -EIO, "pushgateway %s: %s", shown, curl_easy_strerror(cr));
                goto out;
        }
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (status != 200 && status != 202) {
                size_t n = 0;

                while (n < resp.len && resp.data[n] != '\n' && resp.data[n] != '\r')
                        n++;
                r = kb_err_set(err, -EIO, "pushgateway %s: HTTP %ld%s%.*s", shown, status,
                               n ? ": " : "", (int)n, (const char *)resp.data);
        }
out:
        curl_slist_free_all(hdr);
        if (c)
                curl_easy_cleanup(c);
        kb_buf_free(&body);
        kb_buf_free(&full);
        kb_buf_free(&resp);
        return r;
}

/* ---- repository totals ---- */

struct totals {
        uint64_t n, bytes;
};

static int count_object(const char *name, uint64_t size, void *arg)
{
        struct totals *t = arg;

        (void)name;
        t->n++;
        t->bytes += size;
        return 0;
}

int kb_metrics_repo_totals(struct kb_repo *r, uint64_t *snapshots, uint64_t *pack_bytes,
                           struct kb_err *err)
{
        struct totals snaps = {0}, packs = {0};
        int rc;

        rc = kb_repo_list(r, KB_OBJ_SNAPSHOT, count_object, &snaps, err);
        if (rc == 0)
                rc = kb_repo_list(r, KB_OBJ_PACK, count_object, &packs, err);
        if (rc < 0)
                return rc;
        *snapshots = snaps.n;
        *pack_bytes = packs.bytes;
        return 0;
}
