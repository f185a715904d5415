/* test_etcd_keyrestore.c - key selection for restoring into a live etcd: the Kubernetes
 * namespace mapping and how prefixes, excludes and namespaces combine; backup set grouping. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "backupset.h"
#include "etcd_keyrestore.h"

/* The namespace of key, or NULL when it has none. */
static const char *ns(const char *key)
{
        static char buf[256];
        const uint8_t *p;
        size_t n;

        if (!kb_k8s_key_namespace((const uint8_t *)key, strlen(key), &p, &n))
                return NULL;
        memcpy(buf, p, n);
        buf[n] = 0;
        return buf;
}

Test(keyrestore, namespace_mapping)
{
        cr_assert_str_eq(ns("/registry/pods/shop/web-0"), "shop");
        cr_assert_str_eq(ns("/registry/namespaces/shop"), "shop");
        cr_assert_str_eq(ns("/registry/services/specs/shop/web"), "shop");
        cr_assert_str_eq(ns("/registry/services/endpoints/shop/web"), "shop");
        cr_assert_str_eq(ns("/registry/example.com/foos/shop/foo-1"), "shop");
        cr_assert_str_eq(ns("/registry/events/kube-system/e.17a"), "kube-system");
        cr_assert_str_eq(ns("/registry/deployments/default/api"), "default");
        /* cluster-scoped */
        cr_assert_null(ns("/registry/namespaces"));
        cr_assert_null(ns("/registry/clusterroles/admin"));
        cr_assert_null(ns("/registry/minions/node-1"));
        cr_assert_null(ns("/registry/ranges/serviceips"));
        cr_assert_null(
            ns("/registry/apiextensions.k8s.io/customresourcedefinitions/foos.example.com"));
        cr_assert_null(ns("/registry/example.com/clusterfoos/c-1"));
        /* not a layout we know */
        cr_assert_null(ns("/registry/services/specs/web")); /* too short for services */
        cr_assert_null(ns("/registry/pods/shop/web/extra/deeper"));
        cr_assert_null(ns("/registry/pods//web"));
        cr_assert_null(ns("/registry/pods/shop/"));
        cr_assert_null(ns("/other/pods/shop/web"));
        cr_assert_null(ns("/registry/"));
        cr_assert_null(ns("registry/pods/shop/web"));
        cr_assert_null(ns(""));
}

static int match(const struct kb_etcd_keyfilter *f, const char *key)
{
        return kb_etcd_keyfilter_match(f, (const uint8_t *)key, strlen(key));
}

Test(keyrestore, filters_narrow)
{
        const char *pre[] = {"/registry/configmaps/", "/registry/secrets/"};
        const char *exc[] = {"/registry/secrets/shop/"};
        const char *nss[] = {"shop", "web"};
        struct kb_etcd_keyfilter all = {0}, f = {0};

        cr_assert(match(&all, "/anything"));
        cr_assert(match(NULL, "/anything"));

        f.prefixes = pre;
        f.n_prefixes = 2;
        f.excludes = exc;
        f.n_excludes = 1;
        cr_assert(match(&f, "/registry/configmaps/shop/a"));
        cr_assert(match(&f, "/registry/secrets/web/s"));
        cr_assert_not(match(&f, "/registry/secrets/shop/s"));
        cr_assert_not(match(&f, "/registry/pods/shop/p"));

        f.namespaces = nss;
        f.n_namespaces = 2;
        cr_assert(match(&f, "/registry/configmaps/shop/a"));
        cr_assert(match(&f, "/registry/configmaps/web/a"));
        cr_assert_not(match(&f, "/registry/configmaps/other/a"));
        cr_assert_not(
            match(&f, "/registry/configmaps/shopping/a"));     /* a whole name, not a prefix */
        cr_assert_not(match(&f, "/registry/namespaces/shop")); /* not under the prefixes */

        f.n_prefixes = 0;
        f.n_excludes = 0;
        cr_assert(match(&f, "/registry/namespaces/shop"));
        cr_assert_not(match(&f, "/registry/namespaces/other"));
        cr_assert_not(match(&f, "/registry/clusterroles/admin"));
}

Test(keyrestore, backup_sets)
{
        Kbackup__Snapshot s[4];
        struct kb_snapshot_entry items[4];
        struct kb_snapshot_list l = {items, 4};
        struct kb_backupset_list sets;
        struct kb_err e = {0};
        char a[KB_ID_HEX_LEN + 1], b[KB_ID_HEX_LEN + 1];

        kb_backupset_new_id(a);
        kb_backupset_new_id(b);
        cr_assert_eq(strlen(a), KB_ID_HEX_LEN);
        cr_assert_str_neq(a, b);
        for (int i = 0; i < 4; i++) {
                kbackup__snapshot__init(&s[i]);
                items[i].snap = &s[i];
                snprintf(items[i].id, sizeof(items[i].id), "%02d", i);
                s[i].time_unix_nsec = 100 + i;
        }
        s[0].kind = "volume", s[0].name = "ns/b", s[0].set_id = a, s[0].cluster = "src";
        s[1].kind = "etcd", s[1].name = "etcd", s[1].set_id = a, s[1].cluster = "src";
        s[2].kind = "volume", s[2].name = "ns/x"; /* no set */
        s[3].kind = "etcd", s[3].name = "etcd", s[3].set_id = b, s[3].cluster = "other";
        cr_assert_eq(kb_backupset_list(&l, &sets, &e), 0);
        cr_assert_eq(sets.count, 2);
        cr_assert_str_eq(sets.items[0].id, a); /* oldest first */
        cr_assert_eq(sets.items[0].n_members, 2);
        cr_assert_eq(sets.items[0].members[0], 1); /* etcd first */
        cr_assert_eq(sets.items[0].n_etcd, 1);
        cr_assert_eq(sets.items[0].time_unix_nsec, 100);
        cr_assert_eq(kb_backupset_find(&sets, "latest", NULL, &e), 1);
        cr_assert_eq(kb_backupset_find(&sets, "latest", "src", &e), 0);
        cr_assert_eq(kb_backupset_find(&sets, a, NULL, &e), 0);
        cr_assert_eq(kb_backupset_find(&sets, "", NULL, &e), KB_ENOTFOUND);
        cr_assert_eq(kb_backupset_find(&sets, "latest", "nope", &e), KB_ENOTFOUND);
        cr_assert_eq(kb_backupset_find(&sets, b, "src", &e), KB_ENOTFOUND);
        kb_backupset_list_free(&sets);
}
