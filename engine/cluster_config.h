/* cluster_config.h - cluster profiles from the kbackup config file (YAML): per cluster, how to
 * reach its etcd, where its volumes are mounted on this host, and the hooks around a backup set.
 * The parser is strict (unknown keys are errors, so a typo never silently drops a setting) and
 * every error names the file and line. The rest of the engine takes the plain structs below.
 *
 *   clusters:
 *     prod:
 *       etcd:
 *         endpoints: [https://10.0.0.11:2379, https://10.0.0.12:2379]   # or a block list
 *         cacert: /etc/kubernetes/pki/etcd/ca.crt
 *         cert: /etc/kubernetes/pki/etcd/healthcheck-client.crt
 *         key: /etc/kubernetes/pki/etcd/healthcheck-client.key
 *         user: backup                  # optional; password from password_file or the env
 *         password_file: /etc/kbackup/etcd-password
 *         timeout: 30s
 *       volumes:
 *         shop/data-postgres-0: /var/lib/kubelet/pods/UID/volumes/.../mount
 *       pre_hook: /usr/local/bin/freeze.sh  # run by /bin/sh -c before the set; failure aborts
 *       post_hook: /usr/local/bin/thaw.sh   # after it, always; failure is reported
 *       hook_timeout: 5m                    # default 10m
 *       tags: {site: paris}                 # added to every snapshot of the set
 */
#ifndef KB_CLUSTER_CONFIG_H
#define KB_CLUSTER_CONFIG_H

#include <stddef.h>

#include "err.h"

#define KB_CONFIG_DEFAULT_PATH      "/etc/kbackup/config.yaml"
#define KB_CONFIG_DEFAULT_HOOK_SECS 600
#define KB_CONFIG_MAX_BYTES         (4u << 20)

struct kb_cluster_volume {
        char *name; /* NAMESPACE/PVC */
        char *path; /* where it is mounted on this host (at restore: where its new PV is) */
        int line;
};

struct kb_cluster {
        char *name;
        int line;
        /* etcd: n_endpoints 0 when the profile has no etcd section */
        char **endpoints;
        size_t n_endpoints;
        char *cacert, *cert, *key, *user, *password_file;
        unsigned timeout_sec; /* 0: the client's defaults */
        struct kb_cluster_volume *volumes;
        size_t n_volumes;
        char *pre_hook, *post_hook;
        unsigned hook_timeout_sec;
        char **tags; /* "KEY=VALUE" */
        size_t n_tags;
};

struct kb_config {
        char *path; /* where it was read from (for messages) */
        struct kb_cluster *clusters;
        size_t n_clusters;
};

/* Parse YAML text; `name` is used in messages ("FILE:LINE: ..."). KB_EUSAGE with a message for
 * anything malformed or unknown. On success free with kb_config_free. */
int kb_config_parse(const char *text, size_t len, const char *name, struct kb_config *out,
                    struct kb_err *err);
/* Read and parse a file (at most KB_CONFIG_MAX_BYTES). -ENOENT when it does not exist. */
int kb_config_load(const char *path, struct kb_config *out, struct kb_err *err);
void kb_config_free(struct kb_config *c);

/* The profile called name, or NULL. */
const struct kb_cluster *kb_config_cluster(const struct kb_config *c, const char *name);
/* The path mapped to volume NAMESPACE/PVC in a profile, or NULL. */
const char *kb_cluster_volume_path(const struct kb_cluster *cl, const char *name);

#endif
