/* cpus.c - how many CPUs this process may use: its affinity mask and its cgroup's CPU quota.
 *
 * Worker pools sized from the node's CPU count would start dozens of threads under a 2-CPU pod
 * limit: the kernel lets them all run, then stops the whole cgroup for the rest of each quota
 * period, and every worker holds buffers of its own (zstd contexts, a restore's pack windows). */
#include "cpus.h"

#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define CPUS_PATH_MAX 4096

/* The hierarchies that can limit CPU time: v1's "cpu" controller and the unified v2 one. */
enum hier { HIER_V1, HIER_V2, HIER_COUNT };

struct cg_mount {
        char root[CPUS_PATH_MAX];  /* the cgroup the mount shows at its top */
        char point[CPUS_PATH_MAX]; /* where it is mounted */
};

/* Is `tok` one of the comma-separated words of `list`? ("cpuacct" is not "cpu".) */
static int has_word(const char *list, const char *tok)
{
        size_t n = strlen(tok);

        while (list) {
                if (!strncmp(list, tok, n) && (list[n] == ',' || list[n] == '\0'))
                        return 1;
                list = strchr(list, ',');
                if (list)
                        list++;
        }
        return 0;
}

static FILE *open_under(const char *root, const char *path)
{
        char full[CPUS_PATH_MAX];

        if ((size_t)snprintf(full, sizeof(full), "%s%s", root ? root : "", path) >= sizeof(full))
                return NULL;
        return fopen(full, "re");
}

/* This process's cgroup path in each hierarchy, "" where it has none (/proc/self/cgroup). */
static void own_paths(const char *root, char paths[HIER_COUNT][CPUS_PATH_MAX])
{
        FILE *f = open_under(root, "/proc/self/cgroup");
        char *line = NULL, *c1, *c2;
        size_t cap = 0;
        ssize_t n;
        int h;

        for (h = 0; h < HIER_COUNT; h++)
                paths[h][0] = '\0';
        if (!f)
                return;
        while ((n = getline(&line, &cap, f)) > 0) {
                if (line[n - 1] == '\n')
                        line[n - 1] = '\0';
                /* "ID:CONTROLLERS:PATH"; the path itself may hold colons. */
                c1 = strchr(line, ':');
                c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c2)
                        continue;
                *c1 = *c2 = '\0';
                if (!strcmp(line, "0") && c1 + 1 == c2)
                        h = HIER_V2;
                else if (has_word(c1 + 1, "cpu"))
                        h = HIER_V1;
                else
                        continue;
                snprintf(paths[h], CPUS_PATH_MAX, "%s", c2 + 1);
        }
        free(line);
        fclose(f);
}

/* Undo mountinfo's octal escapes (a space is "\040"), in place. */
static void unescape(char *s)
{
        char *out = s;

        for (; *s; s++) {
                if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
                    s[3] >= '0' && s[3] <= '7') {
                        *out++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
                        s += 3;
                } else {
                        *out++ = *s;
                }
        }
        *out = '\0';
}

/* Fill the first mount of each hierarchy from /proc/self/mountinfo; found[h] says which. */
static void find_mounts(const char *root, struct cg_mount mounts[HIER_COUNT], int found[HIER_COUNT])
{
        FILE *f = open_under(root, "/proc/self/mountinfo");
        char *line = NULL, *save, *tok[64];
        size_t cap = 0, nt, sep;
        int h;

        for (h = 0; h < HIER_COUNT; h++)
                found[h] = 0;
        if (!f)
                return;
        while (getline(&line, &cap, f) > 0) {
                /* "ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS" */
                nt = 0;
                for (char *t = strtok_r(line, " \n", &save); t && nt < 64;
                     t = strtok_r(NULL, " \n", &save))
                        tok[nt++] = t;
                for (sep = 6; sep < nt && strcmp(tok[sep], "-"); sep++)
                        ;
                if (sep + 3 >= nt)
                        continue;
                if (!strcmp(tok[sep + 1], "cgroup2"))
                        h = HIER_V2;
                else if (!strcmp(tok[sep + 1], "cgroup") && has_word(tok[sep + 3], "cpu"))
                        h = HIER_V1;
                else
                        continue;
                if (found[h])
                        continue;
                unescape(tok[3]);
                unescape(tok[4]);
                snprintf(mounts[h].root, CPUS_PATH_MAX, "%s", tok[3]);
                snprintf(mounts[h].point, CPUS_PATH_MAX, "%s", tok[4]);
                found[h] = 1;
        }
        free(line);
        fclose(f);
}

/* Read the number at the start of the file dir/name into a (with b: the two numbers there):
 * 1 when they were all there, 0 otherwise (no such file, "max"). */
static int read_num(const char *dir, const char *name, long long *a, long long *b)
{
        char path[CPUS_PATH_MAX];
        FILE *f;
        int n;

        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
                return 0;
        f = fopen(path, "re");
        if (!f)
                return 0;
        n = b ? fscanf(f, "%lld %lld", a, b) : fscanf(f, "%lld", a);
        fclose(f);
        return n == (b ? 2 : 1);
}

/* The quota set in one cgroup directory, in whole CPUs rounded up, or 0 for none. */
static unsigned quota_at(enum hier h, const char *dir)
{
        long long quota, period, cpus;

        if (h == HIER_V2) {
                /* "QUOTA PERIOD", or "max PERIOD" for no limit. */
                if (!read_num(dir, "cpu.max", &quota, &period))
                        return 0;
        } else if (!read_num(dir, "cpu.cfs_quota_us", &quota, NULL) ||
                   !read_num(dir, "cpu.cfs_period_us", &period, NULL)) {
                return 0;
        }
        if (quota <= 0 || period <= 0) /* v1 says -1 for no limit */
                return 0;
        cpus = quota / period + (quota % period != 0);
        return cpus > UINT_MAX ? UINT_MAX : (unsigned)cpus;
}

/* The lowest quota from the cgroup at `cgpath` up to the top of the mount. */
static unsigned lowest_quota(enum hier h, const char *root, const struct cg_mount *m,
                             const char *cgpath)
{
        char dir[CPUS_PATH_MAX], *slash;
        const char *rel = cgpath;
        size_t base, rl = strlen(m->root);
        unsigned best = 0, q;

        /* The mount shows the hierarchy from m->root down (a container's view of its own
         * cgroup); a path outside that view can only be read at the mount's top. */
        if (strcmp(m->root, "/")) {
                if (!strncmp(cgpath, m->root, rl) && (cgpath[rl] == '/' || !cgpath[rl]))
                        rel = cgpath + rl;
                else
                        rel = "";
        }
        if (!strcmp(rel, "/"))
                rel = "";
        if ((size_t)snprintf(dir, sizeof(dir), "%s%s", root ? root : "", m->point) >= sizeof(dir))
                return 0;
        base = strlen(dir);
        if ((size_t)snprintf(dir + base, sizeof(dir) - base, "%s", rel) >= sizeof(dir) - base)
                return 0;
        for (;;) {
                q = quota_at(h, dir);
                if (q && (!best || q < best))
                        best = q;
                if (strlen(dir) <= base)
                        break;
                slash = strrchr(dir + base, '/');
                if (!slash)
                        break;
                *slash = '\0';
        }
        return best;
}

unsigned kb_cpus_cgroup_limit(const char *root)
{
        char paths[HIER_COUNT][CPUS_PATH_MAX];
        struct cg_mount mounts[HIER_COUNT];
        int found[HIER_COUNT];
        unsigned best = 0, q;

        own_paths(root, paths);
        find_mounts(root, mounts, found);
        for (int h = 0; h < HIER_COUNT; h++) {
                if (!found[h] || !paths[h][0])
                        continue;
                q = lowest_quota((enum hier)h, root, &mounts[h], paths[h]);
                if (q && (!best || q < best))
                        best = q;
        }
        return best;
}

unsigned kb_cpus_available(void)
{
        cpu_set_t set;
        long n = -1;
        unsigned limit;

        /* More CPUs than a cpu_set_t holds fails with EINVAL: the online count will do. */
        if (sched_getaffinity(0, sizeof(set), &set) == 0)
                n = CPU_COUNT(&set);
        if (n <= 0)
                n = sysconf(_SC_NPROCESSORS_ONLN);
        if (n <= 0)
                n = 1;
        if (n > (long)UINT_MAX)
                n = UINT_MAX;
        limit = kb_cpus_cgroup_limit(NULL);
        return limit && limit < (unsigned long)n ? limit : (unsigned)n;
}
