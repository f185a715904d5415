/* s3_xml.c - parse the little XML S3 sends back (ListObjectsV2 pages, error documents,
 * Multi-Object Delete results) with expat, and escape keys for the XML we send.
 *
 * The input is untrusted (any server, or anything in between on plain http), so every parser is
 * bounded: element depth, text length and entry count are capped, and a document type
 * declaration or entity declaration stops the parse (S3 never sends one; refusing them takes
 * entity-expansion attacks off the table whatever expat's own defences). Element names are
 * matched on their local part, so a namespace prefix or a different xmlns does not matter. */
#include "s3_int.h"

#include <errno.h>
#include <expat.h>
#include <stdlib.h>
#include <string.h>

#define XML_DEPTH_MAX 8
#define XML_NAME_MAX  48
#define LIST_ENTRIES_MAX                                                                           \
        100000 /* S3 pages hold at most 1000; anything far past that is hostile                    \
                */

struct xml_ctx {
        XML_Parser p;
        int depth; /* elements open */
        char path[XML_DEPTH_MAX][XML_NAME_MAX];
        char text[S3_XML_TEXT_MAX + 1];
        size_t text_len;
        int bad; /* -EBADMSG or -ENOMEM once something went wrong */
        /* Called at every closing tag with the element's text (only leaf text is kept). */
        void (*end)(struct xml_ctx *x, const char *text);
        void *arg;
};

static const char *local_name(const char *name)
{
        const char *sep = strrchr(name, '|');

        return sep ? sep + 1 : name;
}

static void stop(struct xml_ctx *x, int code)
{
        if (!x->bad)
                x->bad = code;
        XML_StopParser(x->p, XML_FALSE);
}

static void XMLCALL on_start(void *arg, const XML_Char *name, const XML_Char **attrs)
{
        struct xml_ctx *x = arg;
        const char *l = local_name(name);

        (void)attrs;
        if (x->depth >= XML_DEPTH_MAX) {
                /* Deeper than anything S3 sends: count it so the ends balance, keep no name. */
                x->depth++;
                if (x->depth > 64)
                        stop(x, -EBADMSG);
                return;
        }
        snprintf(x->path[x->depth], XML_NAME_MAX, "%s", l);
        x->depth++;
        x->text_len = 0;
}

static void XMLCALL on_end(void *arg, const XML_Char *name)
{
        struct xml_ctx *x = arg;

        (void)name;
        x->text[x->text_len] = '\0';
        if (x->depth <= XML_DEPTH_MAX && x->end)
                x->end(x, x->text);
        x->depth--;
        x->text_len = 0;
}

static void XMLCALL on_text(void *arg, const XML_Char *s, int len)
{
        struct xml_ctx *x = arg;

        if (len < 0 || (size_t)len > S3_XML_TEXT_MAX - x->text_len) {
                stop(x, -EBADMSG);
                return;
        }
        memcpy(x->text + x->text_len, s, (size_t)len);
        x->text_len += (size_t)len;
}

static void XMLCALL on_doctype(void *arg, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
        (void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
        stop(arg, -EBADMSG);
}

static void XMLCALL on_entity(void *arg, const XML_Char *name, int is_param, const XML_Char *value,
                              int value_len, const XML_Char *base, const XML_Char *sysid,
                              const XML_Char *pubid, const XML_Char *notation)
{
        (void)name, (void)is_param, (void)value, (void)value_len, (void)base, (void)sysid;
        (void)pubid, (void)notation;
        stop(arg, -EBADMSG);
}

/* Does the open element path (root first) equal the given names? */
static int at(const struct xml_ctx *x, int depth, const char *a, const char *b, const char *c)
{
        const char *want[3] = {a, b, c};
        int i;

        if (x->depth != depth)
                return 0;
        for (i = 0; i < depth && i < 3; i++)
                if (strcmp(x->path[i], want[i]) != 0)
                        return 0;
        return 1;
}

static int run(struct xml_ctx *x, const void *xml, size_t len, const char *root)
{
        enum XML_Status st;

        if (len > INT32_MAX)
                return -EBADMSG;
        x->p = XML_ParserCreateNS(NULL, '|');
        if (!x->p)
                return -ENOMEM;
        XML_SetUserData(x->p, x);
        XML_SetElementHandler(x->p, on_start, on_end);
        XML_SetCharacterDataHandler(x->p, on_text);
        XML_SetStartDoctypeDeclHandler(x->p, on_doctype);
        XML_SetEntityDeclHandler(x->p, on_entity);
        st = XML_Parse(x->p, xml, (int)len, XML_TRUE);
        XML_ParserFree(x->p);
        x->p = NULL;
        if (x->bad)
                return x->bad;
        if (st != XML_STATUS_OK)
                return -EBADMSG;
        /* The root element's name is kept in path[0] after the parse. */
        if (strcmp(x->path[0], root) != 0)
                return -EBADMSG;
        return 0;
}

/* ---- error documents ---- */

static void copy_text(char *dst, size_t n, const char *text)
{
        snprintf(dst, n, "%s", text);
}

static void error_end(struct xml_ctx *x, const char *text)
{
        struct s3_error *e = x->arg;

        if (at(x, 2, "Error", "Code", NULL))
                copy_text(e->code, sizeof(e->code), text);
        else if (at(x, 2, "Error", "Message", NULL))
                copy_text(e->message, sizeof(e->message), text);
        else if (at(x, 2, "Error", "Region", NULL))
                copy_text(e->region, sizeof(e->region), text);
        else if (at(x, 2, "Error", "Endpoint", NULL))
                copy_text(e->endpoint, sizeof(e->endpoint), text);
}

int s3_xml_error(const void *xml, size_t len, struct s3_error *out)
{
        struct xml_ctx *x;
        int r;

        memset(out, 0, sizeof(*out));
        if (!xml || len == 0)
                return -EBADMSG;
        x = calloc(1, sizeof(*x));
        if (!x)
                return -ENOMEM;
        x->end = error_end;
        x->arg = out;
        r = run(x, xml, len, "Error");
        free(x);
        if (r < 0)
                memset(out, 0, sizeof(*out));
        return r;
}

/* ---- ListObjectsV2 ---- */

struct list_state {
        struct s3_list_page *page;
        char *key; /* of the <Contents> being read */
        uint64_t size;
        int have_size;
};

static int parse_u64(const char *s, uint64_t *out)
{
        uint64_t v = 0;

        if (!*s)
                return -1;
        for (; *s; s++) {
                if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
                        return -1;
                v = v * 10 + (uint64_t)(*s - '0');
        }
        *out = v;
        return 0;
}

static void list_end(struct xml_ctx *x, const char *text)
{
        struct list_state *ls = x->arg;
        struct s3_list_page *pg = ls->page;

        if (at(x, 3, "ListBucketResult", "Contents", "Key")) {
                free(ls->key);
                ls->key = strdup(text);
                if (!ls->key)
                        stop(x, -ENOMEM);
        } else if (at(x, 3, "ListBucketResult", "Contents", "Size")) {
                if (parse_u64(text, &ls->size) < 0)
                        stop(x, -EBADMSG);
                ls->have_size = 1;
        } else if (at(x, 2, "ListBucketResult", "Contents", NULL)) {
                if (!ls->key || !ls->have_size || !ls->key[0] || strlen(ls->key) > S3_KEY_MAX) {
                        stop(x, -EBADMSG);
                        return;
                }
                if (pg->n == pg->cap) {
                        size_t cap = pg->cap ? pg->cap * 2 : 64;
                        struct s3_list_entry *e;

                        if (cap > LIST_ENTRIES_MAX) {
                                stop(x, -EBADMSG);
                                return;
                        }
                        e = realloc(pg->entries, cap * sizeof(*e));
                        if (!e) {
                                stop(x, -ENOMEM);
                                return;
                        }
                        pg->entries = e;
                        pg->cap = cap;
                }
                pg->entries[pg->n].key = ls->key;
                pg->entries[pg->n].size = ls->size;
                pg->n++;
                ls->key = NULL;
                ls->have_size = 0;
        } else if (at(x, 2, "ListBucketResult", "IsTruncated", NULL)) {
                pg->truncated = strcmp(text, "true") == 0;
        } else if (at(x, 2, "ListBucketResult", "NextContinuationToken", NULL)) {
                free(pg->next_token);
                pg->next_token = strdup(text);
                if (!pg->next_token)
                        stop(x, -ENOMEM);
        }
}

int s3_xml_list(const void *xml, size_t len, struct s3_list_page *page)
{
        struct list_state ls = {.page = page};
        struct xml_ctx *x;
        int r;

        memset(page, 0, sizeof(*page));
        if (!xml || len == 0)
                return -EBADMSG;
        x = calloc(1, sizeof(*x));
        if (!x)
                return -ENOMEM;
        x->end = list_end;
        x->arg = &ls;
        r = run(x, xml, len, "ListBucketResult");
        free(x);
        free(ls.key);
        if (r == 0 && page->truncated && (!page->next_token || !page->next_token[0]))
                r = -EBADMSG; /* would list the same page forever */
        if (r < 0)
                s3_list_page_free(page);
        return r;
}

void s3_list_page_free(struct s3_list_page *page)
{
        size_t i;

        for (i = 0; i < page->n; i++)
                free(page->entries[i].key);
        free(page->entries);
        free(page->next_token);
        memset(page, 0, sizeof(*page));
}

/* ---- Multi-Object Delete ---- */

struct delete_state {
        size_t nerrors;
        char key[S3_KEY_MAX + 1];
        struct s3_error cur;
        char *first_key;
        size_t key_n;
        struct s3_error *first;
};

static void delete_end(struct xml_ctx *x, const char *text)
{
        struct delete_state *ds = x->arg;

        if (at(x, 3, "DeleteResult", "Error", "Key"))
                copy_text(ds->key, sizeof(ds->key), text);
        else if (at(x, 3, "DeleteResult", "Error", "Code"))
                copy_text(ds->cur.code, sizeof(ds->cur.code), text);
        else if (at(x, 3, "DeleteResult", "Error", "Message"))
                copy_text(ds->cur.message, sizeof(ds->cur.message), text);
        else if (at(x, 2, "DeleteResult", "Error", NULL)) {
                if (ds->nerrors++ == 0) {
                        if (ds->first_key && ds->key_n)
                                snprintf(ds->first_key, ds->key_n, "%s", ds->key);
                        if (ds->first)
                                *ds->first = ds->cur;
                }
                memset(&ds->cur, 0, sizeof(ds->cur));
                ds->key[0] = '\0';
        }
}

int s3_xml_delete_result(const void *xml, size_t len, size_t *nerrors, char *first_key,
                         size_t key_n, struct s3_error *first)
{
        struct delete_state *ds;
        struct xml_ctx *x;
        int r;

        *nerrors = 0;
        if (first)
                memset(first, 0, sizeof(*first));
        if (first_key && key_n)
                first_key[0] = '\0';
        /* Quiet mode with nothing to report may send an empty DeleteResult, or nothing. */
        if (!xml || len == 0)
                return 0;
        x = calloc(1, sizeof(*x));
        ds = calloc(1, sizeof(*ds));
        if (!x || !ds) {
                free(x);
                free(ds);
                return -ENOMEM;
        }
        ds->first_key = first_key;
        ds->key_n = key_n;
        ds->first = first;
        x->end = delete_end;
        x->arg = ds;
        r = run(x, xml, len, "DeleteResult");
        if (r == 0)
                *nerrors = ds->nerrors;
        free(x);
        free(ds);
        return r;
}

int s3_xml_escape(const char *s, struct kb_buf *out)
{
        int r = 0;

        for (; *s && r == 0; s++) {
                switch (*s) {
                case '&':
                        r = kb_buf_append(out, "&amp;", 5);
                        break;
                case '<':
                        r = kb_buf_append(out, "&lt;", 4);
                        break;
                case '>':
                        r = kb_buf_append(out, "&gt;", 4);
                        break;
                case '"':
                        r = kb_buf_append(out, "&quot;", 6);
                        break;
                case '\'':
                        r = kb_buf_append(out, "&apos;", 6);
                        break;
                default:
                        r = kb_buf_append(out, s, 1);
                }
        }
        return r;
}
