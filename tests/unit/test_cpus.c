/* test_cpus.c - the default worker count follows what a container may really use: the lowest CPU
 * quota along its cgroup's path (v2 cpu.max, v1 cfs quota), rounded up, read through fake
 * /proc/self/cgroup, /proc/self/mountinfo and cgroup trees; and the affinity mask, set for real. */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpus.h"

static char root[64];

static void setup(void)
{
        snprintf(root, sizeof(root), "/tmp/kb-cpus-XXXXXX");
        cr_assert_not_null(mkdtemp(root));
}

static void teardown(void)
{
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
        cr_assert_eq(system(cmd), 0);
}

TestSuite(cpus, .init = setup, .fini = teardown, .timeout = 30);

/* Write text to root/rel, making its directories. */
static void put(const char *rel, const char *text)
{
        char path[PATH_MAX], *slash;
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", root, rel);
        for (slash = strchr(path + strlen(root) + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
                *slash = '\0';
                cr_assert(mkdir(path, 0755) == 0 || errno == EEXIST, "mkdir %s", path);
                *slash = '/';
        }
        f = fopen(path, "w");
        cr_assert_not_null(f, "%s", path);
        fputs(text, f);
        fclose(f);
}

#define V2_MOUNT "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw\n"
#define POD      "sys/fs/cgroup/kubepods/burstable/pod1"

Test(cpus, v2_lowest_quota_along_the_path_rounded_up)
{
        put("proc/self/cgroup", "0::/kubepods/burstable/pod1/ctr\n");
        put("proc/self/mountinfo", "22 1 8:1 / / rw - ext4 /dev/vda rw\n" V2_MOUNT);
        put(POD "/ctr/cpu.max", "max 100000\n");
        put(POD "/cpu.max", "250000 100000\n");
        put("sys/fs/cgroup/kubepods/burstable/cpu.max", "max 100000\n");
        put("sys/fs/cgroup/kubepods/cpu.max", "800000 100000\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 3, "the pod's 2.5 CPUs");
        put(POD "/cpu.max", "max 100000\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 8, "no pod limit: the parent's");
        put(POD "/ctr/cpu.max", "50000 100000\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 1, "half a CPU is one worker");
        put("sys/fs/cgroup/kubepods/cpu.max", "max 100000\n");
        put(POD "/ctr/cpu.max", "max 100000\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 0, "no quota anywhere");
}

Test(cpus, v1_cpu_controller_and_not_cpuacct_alone)
{
        /* Hybrid layout as on many nodes: v1 controllers, an empty v2 tree beside them. */
        put("proc/self/cgroup", "7:cpuset:/kubepods/pod2\n"
                                "4:cpu,cpuacct:/kubepods/pod2\n"
                                "0::/kubepods/pod2\n");
        put("proc/self/mountinfo",
            "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
            "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpuacct\n"
            "34 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n");
        put("sys/fs/cgroup/cpu,cpuacct/kubepods/pod2/cpu.cfs_quota_us", "150000\n");
        put("sys/fs/cgroup/cpu,cpuacct/kubepods/pod2/cpu.cfs_period_us", "100000\n");
        /* The cpuacct-only mount holds a quota file too: it must not be the one read. */
        put("sys/fs/cgroup/cpuacct/kubepods/pod2/cpu.cfs_quota_us", "100000\n");
        put("sys/fs/cgroup/cpuacct/kubepods/pod2/cpu.cfs_period_us", "100000\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 2);
        put("sys/fs/cgroup/cpu,cpuacct/kubepods/pod2/cpu.cfs_quota_us", "-1\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 0, "-1 is no limit");
        put("sys/fs/cgroup/unified/kubepods/pod2/cpu.max", "300000 100000\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 3, "a v2 limit counts too");
}

Test(cpus, a_namespaced_view_reads_from_the_mounts_top)
{
        /* With a cgroup namespace the process sees itself at "/" of a mount of its own cgroup. */
        put("proc/self/cgroup", "0::/\n");
        put("proc/self/mountinfo", V2_MOUNT);
        put("sys/fs/cgroup/cpu.max", "200000 100000\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 2);

        /* A mount of a subtree (root field) holding the process's cgroup, and one that does not. */
        put("proc/self/cgroup", "0::/kubepods/pod3/ctr\n");
        put("proc/self/mountinfo",
            "30 23 0:26 /kubepods/pod3 /sys/fs/cgroup rw - cgroup2 none rw\n");
        put("sys/fs/cgroup/ctr/cpu.max", "100000 100000\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 1);
        put("proc/self/mountinfo", "30 23 0:26 /other /sys/fs/cgroup rw - cgroup2 none rw\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 2, "outside the view: the mount's top only");
}

Test(cpus, escaped_mount_point)
{
        put("proc/self/cgroup", "0::/a\n");
        put("proc/self/mountinfo", "30 23 0:26 / /cg\\040root rw - cgroup2 cgroup2 rw\n");
        put("cg root/a/cpu.max", "400000 100000\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 4);
}

Test(cpus, missing_or_malformed_files_mean_no_quota)
{
        cr_assert_eq(kb_cpus_cgroup_limit(root), 0, "no /proc at all");
        put("proc/self/cgroup", "garbage\n0:\n::\n");
        put("proc/self/mountinfo", "short line\n" V2_MOUNT "30 23 - cgroup2\n");
        put("sys/fs/cgroup/cpu.max", "200000 100000\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 0, "no usable cgroup line");
        put("proc/self/cgroup", "0::/x\n");
        put("sys/fs/cgroup/cpu.max", "lots 100000\n");
        put("sys/fs/cgroup/x/cpu.max", "100000 0\n");
        cr_assert_eq(kb_cpus_cgroup_limit(root), 0, "no number, a zero period");
}

Test(cpus, the_affinity_mask_caps_the_count)
{
        cpu_set_t one;
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        unsigned n = kb_cpus_available();

        cr_assert_geq(n, 1);
        cr_assert_leq(n, (unsigned)online);
        /* Criterion runs each test in a process of its own: pinning it touches nothing else. */
        CPU_ZERO(&one);
        CPU_SET(0, &one);
        cr_assert_eq(sched_setaffinity(0, sizeof(one), &one), 0);
        cr_assert_eq(kb_cpus_available(), 1);
}
