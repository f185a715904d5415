/* etcd_conn.c - the etcd connection options every etcd-facing command shares, parsed once:
 * --endpoints --cacert --cert --key --user --timeout, and the password for --user. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_etcd_conn_option(int c, struct cli_etcd_conn *ec, const char *cmd)
{
        char *end;
        long v;

        switch (c) {
        case OPT_ETCD_ENDPOINTS:
                ec->eps = optarg;
                return 1;
        case OPT_ETCD_CACERT:
                ec->conn.cacert = optarg;
                return 1;
        case OPT_ETCD_CERT:
                ec->conn.cert = optarg;
                return 1;
        case OPT_ETCD_KEY:
                ec->conn.key = optarg;
                return 1;
        case OPT_ETCD_USER:
                ec->conn.user = optarg;
                return 1;
        case OPT_ETCD_TIMEOUT:
                v = strtol(optarg, &end, 10);
                if (*end || v < 1 || v > 3600)
                        return cli_usage(cmd, "--timeout wants seconds, 1-3600");
                ec->conn.connect_timeout_ms = (int)v * 1000;
                ec->conn.timeout_ms = (int)v * 1000;
                return 1;
        default:
                return 0;
        }
}

int cli_etcd_conn_finish(struct cli_etcd_conn *ec, const char *cmd, int optional)
{
        struct kb_err err = {0};
        int r;

        ec->n_endpoints = 0;
        if (ec->eps) {
                /* Split "a,b,c" in place. */
                for (char *tok = strtok(ec->eps, ","); tok; tok = strtok(NULL, ",")) {
                        if (!*tok)
                                continue;
                        if (ec->n_endpoints == CLI_ETCD_MAX_ENDPOINTS)
                                return cli_usage(cmd, "at most %d endpoints",
                                                 CLI_ETCD_MAX_ENDPOINTS);
                        ec->endpoints[ec->n_endpoints++] = tok;
                }
        }
        if (!ec->n_endpoints && !optional)
                return cli_usage(cmd, "%s needs --endpoints URL[,URL...]", cmd);
        if ((ec->conn.cert != NULL) != (ec->conn.key != NULL))
                return cli_usage(cmd, "--cert and --key go together");
        if (ec->conn.user && !ec->pw) {
                if (ec->password_file) {
                        setenv("KBACKUP_ETCD_PASSWORD_FILE", ec->password_file, 1);
                }
                r = cli_secret("KBACKUP_ETCD_PASSWORD", &ec->pw, &ec->pwlen, &err);
                if (r < 0)
                        return cli_fail(&err, r);
                ec->conn.password = ec->pw;
        }
        return KB_EXIT_OK;
}

void cli_etcd_conn_free(struct cli_etcd_conn *ec)
{
        cli_password_free(ec->pw, ec->pwlen);
        ec->pw = NULL;
        ec->pwlen = 0;
}
