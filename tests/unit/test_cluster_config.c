/* test_cluster_config.c - the config file parser: good files, every kind of mistake with the
 * line it is on, and lookups. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "cluster_config.h"

static int parse(const char *y, struct kb_config *c, struct kb_err *e)
{
        return kb_config_parse(y, strlen(y), "t.yaml", c, e);
}

Test(cluster_config, full_profile)
{
        const char *y = "clusters:\n"
                        "  prod:\n"
                        "    etcd:\n"
                        "      endpoints: [https://10.0.0.11:2379, https://10.0.0.12:2379]\n"
                        "      cacert: /etc/ca.crt\n"
                        "      cert: /etc/c.crt\n"
                        "      key: /etc/c.key\n"
                        "      user: backup\n"
                        "      timeout: 2m\n"
                        "    volumes:\n"
                        "      shop/data-postgres-0: /var/lib/kubelet/pods/UID/mount\n"
                        "      shop/logs: \"/mnt/with space\"\n"
                        "    pre_hook: fsfreeze -f /mnt\n"
                        "    post_hook: fsfreeze -u /mnt\n"
                        "    hook_timeout: 90\n"
                        "    tags: {site: paris, tier: gold}\n"
                        "  dr:\n"
                        "    etcd:\n"
                        "      endpoints:\n"
                        "        - http://127.0.0.1:2379\n"
                        "    volumes:\n"
                        "      shop/logs: /dr/logs\n"
                        "  volonly:\n"
                        "    etcd:\n"
                        "      endpoints: http://a:1,http://b:2\n";
        struct kb_config c;
        struct kb_err e = {0};
        const struct kb_cluster *p, *d, *v;

        cr_assert_eq(parse(y, &c, &e), 0, "%s", e.msg);
        cr_assert_eq(c.n_clusters, 3);
        p = kb_config_cluster(&c, "prod");
        cr_assert_not_null(p);
        cr_assert_eq(p->line, 2);
        cr_assert_eq(p->n_endpoints, 2);
        cr_assert_str_eq(p->endpoints[1], "https://10.0.0.12:2379");
        cr_assert_str_eq(p->cacert, "/etc/ca.crt");
        cr_assert_str_eq(p->key, "/etc/c.key");
        cr_assert_str_eq(p->user, "backup");
        cr_assert_eq(p->timeout_sec, 120);
        cr_assert_eq(p->n_volumes, 2);
        cr_assert_str_eq(kb_cluster_volume_path(p, "shop/logs"), "/mnt/with space");
        cr_assert_eq(p->volumes[0].line, 11);
        cr_assert_null(kb_cluster_volume_path(p, "shop/nope"));
        cr_assert_str_eq(p->pre_hook, "fsfreeze -f /mnt");
        cr_assert_eq(p->hook_timeout_sec, 90);
        cr_assert_eq(p->n_tags, 2);
        cr_assert_str_eq(p->tags[0], "site=paris");
        d = kb_config_cluster(&c, "dr");
        cr_assert_eq(d->n_endpoints, 1);
        cr_assert_eq(d->hook_timeout_sec, KB_CONFIG_DEFAULT_HOOK_SECS);
        cr_assert_null(d->pre_hook);
        v = kb_config_cluster(&c, "volonly");
        cr_assert_eq(v->n_endpoints, 2);
        cr_assert_str_eq(v->endpoints[1], "http://b:2");
        cr_assert_null(kb_config_cluster(&c, "nope"));
        kb_config_free(&c);
}

/* Each bad file must fail with KB_EUSAGE and a message holding `want` (which includes the
 * "t.yaml:LINE:" it is on). */
static void bad(const char *y, const char *want)
{
        struct kb_config c;
        struct kb_err e = {0};
        int rc = parse(y, &c, &e);

        cr_assert_eq(rc, KB_EUSAGE, "parsed: %s", y);
        cr_assert(strstr(e.msg, want) != NULL, "message '%s' lacks '%s'", e.msg, want);
}

Test(cluster_config, errors_with_lines)
{
        bad("clusters:\n  a:\n    etcd:\n      endpoint: [x]\n",
            "t.yaml:4: unknown key 'endpoint'");
        bad("clusters:\n  a:\n    volume:\n      a/b: /x\n", "t.yaml:3: unknown key 'volume'");
        bad("cluster:\n  a: {}\n", "t.yaml:1: unknown top-level key 'cluster'");
        bad("clusters:\n  a:\n    volumes:\n      nopvc: /x\n", "t.yaml:4: volume 'nopvc'");
        bad("clusters:\n  a:\n    volumes:\n      a/b/c: /x\n", "t.yaml:4: volume 'a/b/c'");
        bad("clusters:\n  a:\n    volumes:\n      a/b: rel/path\n",
            "t.yaml:4: volume a/b: the path must be absolute");
        bad("clusters:\n  a:\n    volumes:\n      a/b:\n", "t.yaml:4: a/b wants a string");
        bad("clusters:\n  a:\n    etcd:\n      cacert: /x\n",
            "t.yaml:4: cluster a: etcd has no endpoints");
        bad("clusters:\n  a:\n    etcd:\n      endpoints: [http://x]\n      cert: /c\n",
            "cert and key go together");
        bad("clusters:\n  a:\n    etcd:\n      endpoints: []\n", "t.yaml:4: endpoints is empty");
        bad("clusters:\n  a:\n    volumes: {a/b: /x}\n    hook_timeout: 5 minutes\n",
            "t.yaml:4: hook_timeout: '5 minutes' is not a duration");
        bad("clusters:\n  a:\n    volumes: {a/b: /x}\n    hook_timeout: 0\n", "out of range");
        bad("clusters:\n  a:\n    volumes: {a/b: /x}\n  a:\n    volumes: {a/b: /y}\n",
            "t.yaml:4: clusters: 'a' given twice (first on line 2)");
        bad("clusters:\n  a:\n", "t.yaml:2: cluster a is empty");
        bad("clusters:\n  a:\n    pre_hook: x\n", "cluster a has neither etcd nor volumes");
        bad("clusters:\n  'b@d':\n    volumes: {a/b: /x}\n", "t.yaml:2: cluster name 'b@d'");
        bad("clusters:\n  a:\n    volumes: {a/b: /x}\n    tags: {k: }\n", "tag k wants a value");
        bad("clusters: [a, b]\n", "t.yaml:1: clusters must be a mapping");
        bad("clusters:\n  a:\n    volumes: {a/b: \"/x\\0y\"}\n", "holds a NUL");
        bad("clusters:\n  a: [\n", "t.yaml:3:"); /* libyaml's own error, with a line */
        bad("clusters:\n\tb: 1\n", "t.yaml:2:"); /* a tab: not YAML */
        bad("", "empty");
        bad("clusters: {}\n", "no clusters defined");
}

Test(cluster_config, load_file)
{
        char path[] = "/tmp/kbcfgXXXXXX";
        int fd = mkstemp(path);
        const char *y = "clusters:\n  x:\n    volumes:\n      n/p: /mnt/p\n";
        struct kb_config c;
        struct kb_err e = {0};

        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, y, strlen(y)), (ssize_t)strlen(y));
        close(fd);
        cr_assert_eq(kb_config_load(path, &c, &e), 0, "%s", e.msg);
        cr_assert_str_eq(kb_cluster_volume_path(kb_config_cluster(&c, "x"), "n/p"), "/mnt/p");
        kb_config_free(&c);
        unlink(path);
        cr_assert_eq(kb_config_load(path, &c, &e), -ENOENT);
        cr_assert(strstr(e.msg, path) != NULL);
}
