/* cpus.h - how many CPUs this process may really use, to size worker pools by default.
 *
 * A container sees every CPU of its node (sysconf); what it may use is its affinity mask (a
 * cpuset, the kubelet's static CPU manager) and the CPU quota of its cgroup (a pod's CPU limit). */
#ifndef KB_CPUS_H
#define KB_CPUS_H

/* The CPUs of this process's affinity mask, capped by the CPU quota of its cgroup and of the
 * cgroup's ancestors (v1 or v2), a fractional quota rounded up; at least 1. */
unsigned kb_cpus_available(void);

/* The CPU quota of this process's cgroup in whole CPUs (rounded up), the lowest along the path
 * to the hierarchy's root, or 0 when none applies. `root` is prefixed to every path read
 * (/proc/self/cgroup, /proc/self/mountinfo and the cgroup files) so tests can build a fake
 * hierarchy; NULL reads the real ones. Unreadable or malformed files mean no quota. */
unsigned kb_cpus_cgroup_limit(const char *root);

#endif
