/* cluster_config.c - the config file's cluster profiles, parsed with libyaml's document API
 * (every node keeps its line) into plain structs. See cluster_config.h for the shape. */
#include "cluster_config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

struct parse {
        yaml_document_t *doc;
        const char *name;
        struct kb_err *err;
};

static int line_of(const yaml_node_t *n)
{
        return n ? (int)n->start_mark.line + 1 : 0;
}

static int fail(struct parse *p, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct parse *p, const yaml_node_t *n, const char *fmt, ...)
{
        char msg[KB_ERR_MSG_MAX - 64];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return kb_err_set(p->err, KB_EUSAGE, "%s:%d: %s", p->name, line_of(n), msg);
}

static yaml_node_t *node(struct parse *p, int id)
{
        return yaml_document_get_node(p->doc, id);
}

/* A scalar's text (NUL-terminated by libyaml), or NULL when n is not a scalar. */
static const char *scalar(const yaml_node_t *n)
{
        if (!n || n->type != YAML_SCALAR_NODE)
                return NULL;
        return (const char *)n->data.scalar.value;
}

static int is_null(const yaml_node_t *n)
{
        const char *s = scalar(n);

        return s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
               (!*s || !strcmp(s, "~") || !strcmp(s, "null"));
}

/* A non-empty string value, copied. A NUL inside it (from an escape) is refused: it would
 * silently shorten a path. */
static int string_value(struct parse *p, const yaml_node_t *n, const char *key, char **out)
{
        const char *s = scalar(n);

        if (!s || is_null(n))
                return fail(p, n, "%s wants a string", key);
        if (strlen(s) != n->data.scalar.length)
                return fail(p, n, "%s holds a NUL character", key);
        if (!*s)
                return fail(p, n, "%s is empty", key);
        if (*out)
                free(*out);
        *out = strdup(s);
        return *out ? 0 : kb_err_sys(p->err, -ENOMEM, "config");
}

/* "90", "90s", "10m", "2h" -> seconds (1 s .. 1 week). */
static int duration_value(struct parse *p, const yaml_node_t *n, const char *key, unsigned *out)
{
        const char *s = scalar(n);
        unsigned long v, mul = 1;
        char *end;

        if (!s || !*s || *s < '0' || *s > '9')
                return fail(p, n, "%s wants a duration such as 90s, 10m or 1h", key);
        v = strtoul(s, &end, 10);
        if (!strcmp(end, "m"))
                mul = 60;
        else if (!strcmp(end, "h"))
                mul = 3600;
        else if (*end && strcmp(end, "s") != 0)
                return fail(p, n, "%s: '%s' is not a duration (90s, 10m, 1h)", key, s);
        if (v == 0 || v > 7ul * 86400 / mul)
                return fail(p, n, "%s: '%s' is out of range (1s to 7 days)", key, s);
        *out = (unsigned)(v * mul);
        return 0;
}

/* Walk a mapping: cb(key text, key node, value node). Duplicate keys are refused. */
typedef int (*map_cb)(struct parse *p, const char *k, yaml_node_t *kn, yaml_node_t *vn, void *a);
static int each_pair(struct parse *p, yaml_node_t *m, const char *what, map_cb cb, void *arg)
{
        yaml_node_pair_t *pr, *q;
        int rc;

        if (!m || m->type != YAML_MAPPING_NODE)
                return fail(p, m, "%s must be a mapping (KEY: VALUE lines)", what);
        for (pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
                yaml_node_t *kn = node(p, pr->key), *vn = node(p, pr->value);
                const char *k = scalar(kn);

                if (!k || !*k)
                        return fail(p, kn, "a key of %s is not a plain name", what);
                for (q = m->data.mapping.pairs.start; q < pr; q++) {
                        const char *o = scalar(node(p, q->key));

                        if (o && !strcmp(o, k))
                                return fail(p, kn, "%s: '%s' given twice (first on line %d)", what,
                                            k, line_of(node(p, q->key)));
                }
                rc = cb(p, k, kn, vn, arg);
                if (rc)
                        return rc;
        }
        return 0;
}

static int push_str(struct parse *p, char ***v, size_t *n, const char *s, size_t len)
{
        char **nv = realloc(*v, (*n + 1) * sizeof(*nv));

        if (!nv)
                return kb_err_sys(p->err, -ENOMEM, "config");
        *v = nv;
        nv[*n] = strndup(s, len);
        if (!nv[*n])
                return kb_err_sys(p->err, -ENOMEM, "config");
        (*n)++;
        return 0;
}

static int endpoint_text(struct parse *p, struct kb_cluster *c, const yaml_node_t *n)
{
        const char *s = scalar(n), *tok;

        if (!s || is_null(n))
                return fail(p, n, "endpoints wants URLs (a list, or one string split at commas)");
        for (tok = s; *tok;) {
                size_t len = strcspn(tok, ", ");
                int rc;

                if (len) {
                        rc = push_str(p, &c->endpoints, &c->n_endpoints, tok, len);
                        if (rc)
                                return rc;
                }
                tok += len;
                tok += strspn(tok, ", ");
        }
        if (!c->n_endpoints)
                return fail(p, n, "endpoints is empty");
        return 0;
}

static int etcd_pair(struct parse *p, const char *k, yaml_node_t *kn, yaml_node_t *vn, void *a)
{
        struct kb_cluster *c = a;

        if (!strcmp(k, "endpoints")) {
                if (vn && vn->type == YAML_SEQUENCE_NODE) {
                        yaml_node_item_t *it;

                        for (it = vn->data.sequence.items.start; it < vn->data.sequence.items.top;
                             it++) {
                                int rc = endpoint_text(p, c, node(p, *it));

                                if (rc)
                                        return rc;
                        }
                        if (!c->n_endpoints)
                                return fail(p, vn, "endpoints is empty");
                        return 0;
                }
                return endpoint_text(p, c, vn);
        }
        if (!strcmp(k, "cacert"))
                return string_value(p, vn, k, &c->cacert);
        if (!strcmp(k, "cert"))
                return string_value(p, vn, k, &c->cert);
        if (!strcmp(k, "key"))
                return string_value(p, vn, k, &c->key);
        if (!strcmp(k, "user"))
                return string_value(p, vn, k, &c->user);
        if (!strcmp(k, "password_file"))
                return string_value(p, vn, k, &c->password_file);
        if (!strcmp(k, "timeout"))
                return duration_value(p, vn, k, &c->timeout_sec);
        return fail(p, kn,
                    "unknown key '%s' under etcd (known: endpoints, cacert, cert, key, user, "
                    "password_file, timeout)",
                    k);
}

static int volume_pair(struct parse *p, const char *k, yaml_node_t *kn, yaml_node_t *vn, void *a)
{
        struct kb_cluster *c = a;
        const char *slash = strchr(k, '/');
        struct kb_cluster_volume *nv, *v;
        int rc;

        if (!slash || slash == k || !slash[1] || strchr(slash + 1, '/'))
                return fail(p, kn, "volume '%s' is not NAMESPACE/PVC", k);
        nv = realloc(c->volumes, (c->n_volumes + 1) * sizeof(*nv));
        if (!nv)
                return kb_err_sys(p->err, -ENOMEM, "config");
        c->volumes = nv;
        v = &nv[c->n_volumes];
        memset(v, 0, sizeof(*v));
        v->line = line_of(kn);
        v->name = strdup(k);
        c->n_volumes++;
        if (!v->name)
                return kb_err_sys(p->err, -ENOMEM, "config");
        rc = string_value(p, vn, k, &v->path);
        if (rc)
                return rc;
        if (v->path[0] != '/')
                return fail(p, vn, "volume %s: the path must be absolute, not '%s'", k, v->path);
        return 0;
}

static int tag_pair(struct parse *p, const char *k, yaml_node_t *kn, yaml_node_t *vn, void *a)
{
        struct kb_cluster *c = a;
        const char *v = scalar(vn);
        char *kv;
        int rc;

        if (strchr(k, '='))
                return fail(p, kn, "tag name '%s' holds '='", k);
        if (!v || is_null(vn))
                return fail(p, vn, "tag %s wants a value", k);
        if (asprintf(&kv, "%s=%s", k, v) < 0)
                return kb_err_sys(p->err, -ENOMEM, "config");
        rc = push_str(p, &c->tags, &c->n_tags, kv, strlen(kv));
        free(kv);
        return rc;
}

static int cluster_pair(struct parse *p, const char *k, yaml_node_t *kn, yaml_node_t *vn, void *a)
{
        struct kb_cluster *c = a;

        if (!strcmp(k, "etcd")) {
                int rc = each_pair(p, vn, "etcd", etcd_pair, c);

                if (rc)
                        return rc;
                if (!c->n_endpoints)
                        return fail(p, vn, "cluster %s: etcd has no endpoints", c->name);
                if ((c->cert != NULL) != (c->key != NULL))
                        return fail(p, vn, "cluster %s: etcd cert and key go together", c->name);
                return 0;
        }
        if (!strcmp(k, "volumes"))
                return is_null(vn) ? 0 : each_pair(p, vn, "volumes", volume_pair, c);
        if (!strcmp(k, "pre_hook"))
                return string_value(p, vn, k, &c->pre_hook);
        if (!strcmp(k, "post_hook"))
                return string_value(p, vn, k, &c->post_hook);
        if (!strcmp(k, "hook_timeout"))
                return duration_value(p, vn, k, &c->hook_timeout_sec);
        if (!strcmp(k, "tags"))
                return each_pair(p, vn, "tags", tag_pair, c);
        return fail(p, kn,
                    "unknown key '%s' in cluster %s (known: etcd, volumes, pre_hook, post_hook, "
                    "hook_timeout, tags)",
                    k, c->name);
}

static int valid_name(const char *s)
{
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
                        return 0;
        return 1;
}

static int clusters_pair(struct parse *p, const char *k, yaml_node_t *kn, yaml_node_t *vn, void *a)
{
        struct kb_config *cfg = a;
        struct kb_cluster *nc, *c;
        int rc;

        if (!valid_name(k))
                return fail(p, kn, "cluster name '%s': use letters, digits, '-', '_' and '.'", k);
        nc = realloc(cfg->clusters, (cfg->n_clusters + 1) * sizeof(*nc));
        if (!nc)
                return kb_err_sys(p->err, -ENOMEM, "config");
        cfg->clusters = nc;
        c = &nc[cfg->n_clusters++];
        memset(c, 0, sizeof(*c));
        c->line = line_of(kn);
        c->hook_timeout_sec = KB_CONFIG_DEFAULT_HOOK_SECS;
        c->name = strdup(k);
        if (!c->name)
                return kb_err_sys(p->err, -ENOMEM, "config");
        if (is_null(vn))
                return fail(p, vn, "cluster %s is empty (give etcd and/or volumes)", k);
        rc = each_pair(p, vn, "a cluster", cluster_pair, c);
        if (rc)
                return rc;
        if (!c->n_endpoints && !c->n_volumes)
                return fail(p, kn, "cluster %s has neither etcd nor volumes", k);
        return 0;
}

static int top_pair(struct parse *p, const char *k, yaml_node_t *kn, yaml_node_t *vn, void *a)
{
        if (!strcmp(k, "clusters"))
                return each_pair(p, vn, "clusters", clusters_pair, a);
        return fail(p, kn, "unknown top-level key '%s' (known: clusters)", k);
}

int kb_config_parse(const char *text, size_t len, const char *name, struct kb_config *out,
                    struct kb_err *err)
{
        struct parse p = {.name = name ? name : "config", .err = err};
        yaml_parser_t parser;
        yaml_document_t doc;
        yaml_node_t *root;
        int rc;

        memset(out, 0, sizeof(*out));
        if (len > KB_CONFIG_MAX_BYTES)
                return kb_err_set(err, KB_EUSAGE, "%s: larger than %u bytes", p.name,
                                  KB_CONFIG_MAX_BYTES);
        if (!yaml_parser_initialize(&parser))
                return kb_err_sys(err, -ENOMEM, "yaml parser");
        yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
        if (!yaml_parser_load(&parser, &doc)) {
                rc = kb_err_set(err, KB_EUSAGE, "%s:%d: %s%s%s", p.name,
                                (int)parser.problem_mark.line + 1,
                                parser.problem ? parser.problem : "not valid YAML",
                                parser.context ? " " : "", parser.context ? parser.context : "");
                yaml_parser_delete(&parser);
                return rc;
        }
        p.doc = &doc;
        root = yaml_document_get_root_node(&doc);
        out->path = strdup(p.name);
        if (!out->path)
                rc = kb_err_sys(err, -ENOMEM, "config");
        else if (!root)
                rc = kb_err_set(err, KB_EUSAGE, "%s: empty (want a 'clusters:' mapping)", p.name);
        else
                rc = each_pair(&p, root, "the file", top_pair, out);
        if (!rc && !out->n_clusters)
                rc = fail(&p, root, "no clusters defined");
        yaml_document_delete(&doc);
        yaml_parser_delete(&parser);
        if (rc)
                kb_config_free(out);
        return rc;
}

int kb_config_load(const char *path, struct kb_config *out, struct kb_err *err)
{
        struct stat st;
        char *buf;
        size_t n = 0;
        ssize_t got;
        int fd, rc;

        memset(out, 0, sizeof(*out));
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return kb_err_sys(err, -errno, "config file %s", path);
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > KB_CONFIG_MAX_BYTES) {
                close(fd);
                return kb_err_set(err, KB_EUSAGE,
                                  "config file %s: not a regular file of at most "
                                  "%u bytes",
                                  path, KB_CONFIG_MAX_BYTES);
        }
        buf = malloc((size_t)st.st_size + 1);
        if (!buf) {
                close(fd);
                return kb_err_sys(err, -ENOMEM, "config file %s", path);
        }
        while (n < (size_t)st.st_size && (got = read(fd, buf + n, (size_t)st.st_size - n)) > 0)
                n += (size_t)got;
        close(fd);
        rc = kb_config_parse(buf, n, path, out, err);
        free(buf);
        return rc;
}

static void free_strv(char **v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

void kb_config_free(struct kb_config *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < c->n_clusters; i++) {
                struct kb_cluster *cl = &c->clusters[i];

                free(cl->name);
                free_strv(cl->endpoints, cl->n_endpoints);
                free(cl->cacert);
                free(cl->cert);
                free(cl->key);
                free(cl->user);
                free(cl->password_file);
                for (size_t j = 0; j < cl->n_volumes; j++) {
                        free(cl->volumes[j].name);
                        free(cl->volumes[j].path);
                }
                free(cl->volumes);
                free(cl->pre_hook);
                free(cl->post_hook);
                free_strv(cl->tags, cl->n_tags);
        }
        free(c->clusters);
        free(c->path);
        memset(c, 0, sizeof(*c));
}

const struct kb_cluster *kb_config_cluster(const struct kb_config *c, const char *name)
{
        for (size_t i = 0; c && i < c->n_clusters; i++)
                if (!strcmp(c->clusters[i].name, name))
                        return &c->clusters[i];
        return NULL;
}

const char *kb_cluster_volume_path(const struct kb_cluster *cl, const char *name)
{
        for (size_t i = 0; cl && i < cl->n_volumes; i++)
                if (!strcmp(cl->volumes[i].name, name))
                        return cl->volumes[i].path;
        return NULL;
}
