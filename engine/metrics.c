/* metrics.c - Prometheus gauges of a run: keep, render, parse, and write a textfile atomically
 * (see metrics.h; pushing is in metrics_push.c). Every label value goes through kb_utf8_sanitize,
 * so a path of arbitrary bytes still gives a file Prometheus accepts. */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "utf8.h"

#define FILE_MAX (16u << 20) /* a previous metrics file larger than this is not ours */

struct series {
        size_t nl;
        char **ln, **lv; /* sorted by label name */
        double v;
};

struct family {
        char *name, *help;
        struct series *s;
        size_t n, cap;
};

struct kb_metrics {
        struct family *f;
        size_t n, cap;
};

struct kb_metrics *kb_metrics_new(void)
{
        return calloc(1, sizeof(struct kb_metrics));
}

static void series_free(struct series *s)
{
        for (size_t i = 0; i < s->nl; i++) {
                free(s->ln[i]);
                free(s->lv[i]);
        }
        free(s->ln);
        free(s->lv);
}

void kb_metrics_free(struct kb_metrics *m)
{
        if (!m)
                return;
        for (size_t i = 0; i < m->n; i++) {
                for (size_t j = 0; j < m->f[i].n; j++)
                        series_free(&m->f[i].s[j]);
                free(m->f[i].s);
                free(m->f[i].name);
                free(m->f[i].help);
        }
        free(m->f);
        free(m);
}

static int valid_name(const char *s, int colon)
{
        if (!s || !*s || (*s >= '0' && *s <= '9'))
                return 0;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9') || *s == '_' || (colon && *s == ':')))
                        return 0;
        return 1;
}

static struct family *family_find(const struct kb_metrics *m, const char *name)
{
        for (size_t i = 0; i < m->n; i++)
                if (!strcmp(m->f[i].name, name))
                        return &m->f[i];
        return NULL;
}

static struct family *family_get(struct kb_metrics *m, const char *name, const char *help)
{
        struct family *f = family_find(m, name);

        if (f) {
                if (!f->help && help)
                        f->help = strdup(help);
                return f;
        }
        if (m->n == m->cap) {
                size_t cap = m->cap ? m->cap * 2 : 16;
                struct family *nf = realloc(m->f, cap * sizeof(*nf));

                if (!nf)
                        return NULL;
                m->f = nf;
                m->cap = cap;
        }
        f = &m->f[m->n];
        memset(f, 0, sizeof(*f));
        f->name = strdup(name);
        f->help = help ? strdup(help) : NULL;
        if (!f->name || (help && !f->help)) {
                free(f->name);
                free(f->help);
                return NULL;
        }
        m->n++;
        return f;
}

/* Label sets are kept sorted by name, so comparing two is comparing arrays. */
static int same_labels(const struct series *s, char *const *ln, char *const *lv, size_t nl)
{
        if (s->nl != nl)
                return 0;
        for (size_t i = 0; i < nl; i++)
                if (strcmp(s->ln[i], ln[i]) || strcmp(s->lv[i], lv[i]))
                        return 0;
        return 1;
}

static struct series *series_find(const struct family *f, char *const *ln, char *const *lv,
                                  size_t nl)
{
        for (size_t i = 0; f && i < f->n; i++)
                if (same_labels(&f->s[i], ln, lv, nl))
                        return &f->s[i];
        return NULL;
}

/* Store a series whose labels are already sorted, valid and sanitised (copied here). */
static int put_sorted(struct kb_metrics *m, const char *name, const char *help, char *const *ln,
                      char *const *lv, size_t nl, double v)
{
        struct family *f = family_get(m, name, help);
        struct series *s, ns = {0};

        if (!f)
                return -ENOMEM;
        s = series_find(f, ln, lv, nl);
        if (s) {
                s->v = v;
                return 0;
        }
        if (f->n == f->cap) {
                size_t cap = f->cap ? f->cap * 2 : 4;
                struct series *a = realloc(f->s, cap * sizeof(*a));

                if (!a)
                        return -ENOMEM;
                f->s = a;
                f->cap = cap;
        }
        ns.ln = calloc(nl + 1, sizeof(char *));
        ns.lv = calloc(nl + 1, sizeof(char *));
        ns.v = v;
        if (!ns.ln || !ns.lv)
                goto nomem;
        for (; ns.nl < nl; ns.nl++) {
                ns.ln[ns.nl] = strdup(ln[ns.nl]);
                ns.lv[ns.nl] = strdup(lv[ns.nl]);
                if (!ns.ln[ns.nl] || !ns.lv[ns.nl]) {
                        ns.nl++;
                        goto nomem;
                }
        }
        f->s[f->n++] = ns;
        return 0;
nomem:
        series_free(&ns);
        return -ENOMEM;
}

/* Sorted, validated, sanitised copies of a label set (freed with free_labels). */
static int sort_labels(const struct kb_label *labels, size_t nl, char ***ln, char ***lv)
{
        size_t i, j;

        *ln = calloc(nl + 1, sizeof(char *));
        *lv = calloc(nl + 1, sizeof(char *));
        if (!*ln || !*lv)
                return -ENOMEM;
        for (i = 0; i < nl; i++) {
                if (!valid_name(labels[i].name, 0) || !strncmp(labels[i].name, "__", 2))
                        return -EINVAL;
                for (j = 0; j < i; j++)
                        if (!strcmp((*ln)[j], labels[i].name))
                                return -EINVAL;
                for (j = i; j > 0 && strcmp((*ln)[j - 1], labels[i].name) > 0; j--) {
                        (*ln)[j] = (*ln)[j - 1];
                        (*lv)[j] = (*lv)[j - 1];
                }
                (*ln)[j] = strdup(labels[i].name);
                (*lv)[j] = kb_utf8_sanitize(labels[i].value ? labels[i].value : "",
                                            labels[i].value ? strlen(labels[i].value) : 0, 0);
                if (!(*ln)[j] || !(*lv)[j])
                        return -ENOMEM;
        }
        return 0;
}

static void free_labels(char **ln, char **lv, size_t nl)
{
        for (size_t i = 0; i < nl; i++) {
                free(ln ? ln[i] : NULL);
                free(lv ? lv[i] : NULL);
        }
        free(ln);
        free(lv);
}

int kb_metrics_set(struct kb_metrics *m, const char *name, const char *help,
                   const struct kb_label *labels, size_t nlabels, double value)
{
        char **ln, **lv;
        int r;

        if (!valid_name(name, 1))
                return -EINVAL;
        r = sort_labels(labels, nlabels, &ln, &lv);
        if (r == 0)
                r = put_sorted(m, name, help, ln, lv, nlabels, value);
        free_labels(ln, lv, nlabels);
        return r;
}

int kb_metrics_get(const struct kb_metrics *m, const char *name, const struct kb_label *labels,
                   size_t nlabels, double *value)
{
        const struct series *s = NULL;
        char **ln, **lv;

        if (sort_labels(labels, nlabels, &ln, &lv) == 0)
                s = series_find(family_find(m, name), ln, lv, nlabels);
        free_labels(ln, lv, nlabels);
        if (!s)
                return KB_ENOTFOUND;
        *value = s->v;
        return 0;
}

/* ---- rendering ---- */

static int put_escaped(struct kb_buf *out, const char *s, int quote)
{
        int r = 0;

        for (; *s && r == 0; s++) {
                if (*s == '\\')
                        r = kb_buf_append(out, "\\\\", 2);
                else if (*s == '\n')
                        r = kb_buf_append(out, "\\n", 2);
                else if (quote && *s == '"')
                        r = kb_buf_append(out, "\\\"", 2);
                else
                        r = kb_buf_append(out, s, 1);
        }
        return r;
}

static int put_str(struct kb_buf *out, const char *s)
{
        return kb_buf_append(out, s, strlen(s));
}

/* The shortest text that reads back as the same double; integers without a fraction. */
static void format_value(double v, char *buf, size_t len)
{
        if (isnan(v))
                snprintf(buf, len, "NaN");
        else if (isinf(v))
                snprintf(buf, len, "%sInf", v > 0 ? "+" : "-");
        else if (fabs(v) < 1e15 && v == (double)(int64_t)v)
                snprintf(buf, len, "%lld", (long long)v);
        else
                for (int prec = 15; prec <= 17; prec++) {
                        snprintf(buf, len, "%.*g", prec, v);
                        if (strtod(buf, NULL) == v)
                                break;
                }
}

int kb_metrics_render(const struct kb_metrics *m, struct kb_buf *out)
{
        char num[40];
        int r = 0;

        for (size_t i = 0; i < m->n && r == 0; i++) {
                const struct family *f = &m->f[i];

                if (!f->n)
                        continue;
                r = put_str(out, "# HELP ");
                r = r ?: put_str(out, f->name);
                r = r ?: put_str(out, " ");
                r = r ?: put_escaped(out, f->help ? f->help : f->name, 0);
                r = r ?: put_str(out, "\n# TYPE ");
                r = r ?: put_str(out, f->name);
                r = r ?: put_str(out, " gauge\n");
                for (size_t j = 0; j < f->n && r == 0; j++) {
                        const struct series *s = &f->s[j];

                        r = put_str(out, f->name);
                        for (size_t k = 0; k < s->nl && r == 0; k++) {
                                r = put_str(out, k ? "," : "{");
                                r = r ?: put_str(out, s->ln[k]);
                                r = r ?: put_str(out, "=\"");
                                r = r ?: put_escaped(out, s->lv[k], 1);
                                r = r ?: put_str(out, "\"");
                        }
                        format_value(s->v, num, sizeof(num));
                        r = r ?: put_str(out, s->nl ? "} " : " ");
                        r = r ?: put_str(out, num);
                        r = r ?: put_str(out, "\n");
                }
        }
        return r;
}

/* ---- parsing ---- */

struct cursor {
        const char *p, *end;
};

static int parse_name(struct cursor *c, char *buf, size_t len)
{
        size_t n = 0;

        while (c->p < c->end && n + 1 < len &&
               ((*c->p >= 'a' && *c->p <= 'z') || (*c->p >= 'A' && *c->p <= 'Z') ||
                (*c->p >= '0' && *c->p <= '9') || *c->p == '_' || *c->p == ':'))
                buf[n++] = *c->p++;
        buf[n] = '\0';
        return n ? 0 : -1;
}

/* A quoted label value with \\ \" \n escapes, into a new string. */
static char *parse_value(struct cursor *c)
{
        struct kb_buf b = KB_BUF_INIT;
        char ch;

        if (c->p >= c->end || *c->p++ != '"')
                return NULL;
        while (c->p < c->end && *c->p != '"') {
                ch = *c->p++;
                if (ch == '\\' && c->p < c->end) {
                        ch = *c->p++;
                        if (ch == 'n')
                                ch = '\n';
                }
                if (kb_buf_append(&b, &ch, 1) < 0)
                        goto bad;
        }
        if (c->p >= c->end || kb_buf_append(&b, "", 1) < 0)
                goto bad;
        c->p++;
        return (char *)b.data;
bad:
        kb_buf_free(&b);
        return NULL;
}

static void skip_spaces(struct cursor *c)
{
        while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
                c->p++;
}

static int parse_sample(struct kb_metrics *m, struct cursor *c)
{
        struct kb_label labels[32];
        char name[256], lnames[32][128], num[64], *end;
        size_t nl = 0, n = 0;
        double v;
        int r = -1;

        if (parse_name(c, name, sizeof(name)) < 0)
                return -1;
        if (c->p < c->end && *c->p == '{') {
                c->p++;
                for (;;) {
                        skip_spaces(c);
                        if (c->p < c->end && *c->p == '}')
                                break;
                        if (nl == 32 || parse_name(c, lnames[nl], sizeof(lnames[nl])) < 0 ||
                            c->p >= c->end || *c->p++ != '=')
                                goto out;
                        labels[nl].name = lnames[nl];
                        labels[nl].value = parse_value(c);
                        if (!labels[nl++].value)
                                goto out;
                        skip_spaces(c);
                        if (c->p < c->end && *c->p == ',')
                                c->p++;
                }
                c->p++;
        }
        skip_spaces(c);
        while (c->p < c->end && *c->p != ' ' && *c->p != '\t' && n + 1 < sizeof(num))
                num[n++] = *c->p++;
        num[n] = '\0';
        v = strtod(num, &end);
        if (!n || *end)
                goto out;
        r = kb_metrics_set(m, name, NULL, labels, nl, v) == 0 ? 0 : -1;
out:
        if (nl && !labels[nl - 1].value)
                nl--;
        for (size_t i = 0; i < nl; i++)
                free((char *)labels[i].value);
        return r;
}

/* "# HELP name text": keep the text for the family. */
static int parse_help(struct kb_metrics *m, struct cursor *c)
{
        struct kb_buf b = KB_BUF_INIT;
        char name[256];
        int r = 0;

        skip_spaces(c);
        if (parse_name(c, name, sizeof(name)) < 0)
                return 0; /* a comment like any other */
        skip_spaces(c);
        while (r == 0 && c->p < c->end) {
                char ch = *c->p++;

                if (ch == '\\' && c->p < c->end) {
                        ch = *c->p++;
                        if (ch == 'n')
                                ch = '\n';
                }
                r = kb_buf_append(&b, &ch, 1);
        }
        r = r ?: kb_buf_append(&b, "", 1);
        if (r == 0 && valid_name(name, 1) && !family_get(m, name, (char *)b.data))
                r = -ENOMEM;
        kb_buf_free(&b);
        return r;
}

int kb_metrics_parse(struct kb_metrics *m, const char *text, size_t len, struct kb_err *err)
{
        const char *p = text, *end = text + len;
        int line = 0;

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                struct cursor c = {p, nl ? nl : end};

                line++;
                p = nl ? nl + 1 : end;
                skip_spaces(&c);
                if (c.p == c.end)
                        continue;
                if (*c.p == '#') {
                        c.p++;
                        skip_spaces(&c);
                        if (c.end - c.p > 5 && !strncmp(c.p, "HELP ", 5)) {
                                c.p += 5;
                                if (parse_help(m, &c) < 0)
                                        return kb_err_set(err, -ENOMEM, "out of memory");
                        }
                        continue;
                }
                if (parse_sample(m, &c) < 0)
                        return kb_err_set(err, KB_ECORRUPT, "line %d is not a metric sample", line);
        }
        return 0;
}

/* ---- the textfile ---- */

static int has_labelset(const struct kb_metrics *m, const struct series *s)
{
        for (size_t i = 0; i < m->n; i++)
                if (series_find(&m->f[i], s->ln, s->lv, s->nl))
                        return 1;
        return 0;
}

/* run's series, then those of prev that survive (see kb_metrics_write_file). */
static int merge(struct kb_metrics *out, const struct kb_metrics *run,
                 const struct kb_metrics *prev, const char *sticky)
{
        int r = 0;

        for (size_t i = 0; i < run->n && r == 0; i++)
                for (size_t j = 0; j < run->f[i].n && r == 0; j++) {
                        const struct series *s = &run->f[i].s[j];

                        r = put_sorted(out, run->f[i].name, run->f[i].help, s->ln, s->lv, s->nl,
                                       s->v);
                }
        for (size_t i = 0; prev && i < prev->n && r == 0; i++) {
                const struct family *f = &prev->f[i];
                int is_sticky = sticky && !strcmp(f->name, sticky);

                for (size_t j = 0; j < f->n && r == 0; j++) {
                        const struct series *s = &f->s[j];

                        if (has_labelset(run, s) &&
                            (!is_sticky ||
                             series_find(family_find(run, f->name), s->ln, s->lv, s->nl)))
                                continue;
                        r = put_sorted(out, f->name, f->help, s->ln, s->lv, s->nl, s->v);
                }
        }
        return r;
}

/* The previous file, parsed; NULL when there is none or it does not parse. */
static struct kb_metrics *load_previous(int dfd, const char *base)
{
        struct kb_metrics *prev = NULL;
        struct kb_buf b = KB_BUF_INIT;
        struct kb_err err = {0};
        ssize_t got;
        int fd = openat(dfd, base, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return NULL;
        for (;;) {
                if (kb_buf_reserve(&b, 65536) < 0)
                        goto out;
                got = read(fd, b.data + b.len, 65536);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0 || b.len > FILE_MAX)
                        goto out;
                if (got == 0)
                        break;
                b.len += (size_t)got;
        }
        prev = kb_metrics_new();
        if (prev && kb_metrics_parse(prev, (const char *)b.data, b.len, &err) < 0) {
                kb_metrics_free(prev);
                prev = NULL;
        }
out:
        close(fd);
        kb_buf_free(&b);
        return prev;
}

/* Write body to dir/base through a hidden temp file (the textfile collector reads only *.prom,
 * and a dot file is no .prom). */
static int replace_file(int dfd, const char *dir, const char *base, const struct kb_buf *body,
                        struct kb_err *err)
{
        char tmp[4096];
        FILE *f;
        int fd, r = 0;

        if (snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, base) >= (int)sizeof(tmp))
                return kb_err_set(err, -ENAMETOOLONG, "metrics file name too long");
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return kb_err_sys(err, -errno, "cannot create a temp file beside %s/%s", dir, base);
        f = fdopen(fd, "w");
        if (!f) {
                r = -errno;
                close(fd);
        } else {
                if (fwrite(body->data, 1, body->len, f) != body->len || fflush(f) != 0)
                        r = -errno;
                if (r == 0 && fchmod(fd, 0644) < 0) /* node-exporter runs as another user */
                        r = -errno;
                if (r == 0 && fsync(fd) < 0)
                        r = -errno;
                if (fclose(f) != 0 && r == 0)
                        r = -errno;
        }
        if (r == 0 && renameat(AT_FDCWD, tmp, dfd, base) < 0)
                r = -errno;
        if (r < 0) {
                unlink(tmp);
                return kb_err_sys(err, r, "cannot write metrics file %s/%s", dir, base);
        }
        fsync(dfd); /* the rename itself durable; failure here loses nothing already written */
        return 0;
}

int kb_metrics_write_file(const struct kb_metrics *run, const char *path, const char *sticky,
                          struct kb_err *err)
{
        struct kb_metrics *prev = NULL, *out = kb_metrics_new();
        struct kb_buf body = KB_BUF_INIT;
        const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
        char *dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
        int dfd = -1, r;

        if (!out || !dir) {
                r = kb_err_set(err, -ENOMEM, "out of memory");
                goto done;
        }
        if (!*base) {
                r = kb_err_set(err, -EINVAL, "metrics file %s names a directory", path);
                goto done;
        }
        if (!*dir) { /* "/x.prom" */
                free(dir);
                dir = strdup("/");
        }
        dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        if (dfd < 0) {
                r = kb_err_sys(err, dir ? -errno : -ENOMEM, "cannot open directory of %s", path);
                goto done;
        }
        /* Two runs sharing a file must not lose each other's series between read and rename. */
        while ((r = flock(dfd, LOCK_EX)) < 0 && errno == EINTR)
                ;
        if (r < 0) {
                r = kb_err_sys(err, -errno, "cannot lock directory of %s", path);
                goto done;
        }
        prev = load_previous(dfd, base);
        r = merge(out, run, prev, sticky);
        r = r ?: kb_metrics_render(out, &body);
        if (r < 0)
                kb_err_set(err, r, "out of memory");
        else
                r = replace_file(dfd, dir, base, &body, err);
done:
        if (dfd >= 0)
                close(dfd); /* releases the lock */
        kb_metrics_free(prev);
        kb_metrics_free(out);
        kb_buf_free(&body);
        free(dir);
        return r;
}
