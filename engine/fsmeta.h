/* fsmeta.h - file system metadata of one entry: read it into a Node at backup, apply a Node's
 * metadata to a restored entry.
 *
 * Entries are named by an open descriptor (regular files, directories) or by a parent directory
 * descriptor and a name (symlinks, fifos, devices, which must not be opened for reading). */
#ifndef KB_FSMETA_H
#define KB_FSMETA_H

#include <sys/stat.h>

#include "kbackup.pb-c.h"
#include "volume_int.h"

/* Fill the stat-derived fields: type from st_mode, permission bits, owner, times, size, inode,
 * device, nlink, rdev. */
void kb_fsmeta_from_stat(Kbackup__Node *n, const struct stat *st);

/* Read the entry's extended attributes (every namespace this process may read, POSIX ACLs
 * included) into n->xattrs, sorted by name, allocated from a. Reads through fd when fd >= 0, else
 * through "/proc/self/fd/DIRFD/NAME" without following a final symlink (so long paths work).
 * A file system without xattr support yields none. Returns 0 or -errno. */
int kb_fsmeta_read_xattrs(int fd, int dirfd, const char *name, struct kb_arena *a,
                          Kbackup__Node *n);

/* One problem met while applying metadata: `what` names the step ("chown", "xattr user.x", ...);
 * counted is 1 when it should count as a failed item, 0 when it is a limit of the target
 * (an xattr namespace the target or this user cannot set). */
typedef void (*kb_fsmeta_report_cb)(void *arg, const char *what, int errnum, int counted);

enum {
        KB_FSMETA_OWNER = 1 << 0, /* chown to the recorded uid/gid */
        KB_FSMETA_TIMES = 1 << 1, /* set atime/mtime */
        /* The entry was created with its recorded permission bits: no chmod, unless an xattr (a
         * POSIX ACL) was set, which may have changed them. */
        KB_FSMETA_MODE_SET = 1 << 2,
};

/* Apply ownership, xattrs, mode and times in the only order that keeps them all: chown first (it
 * clears setuid bits and file capabilities), then xattrs (an ACL also sets mode bits), then chmod,
 * then times last (every other change touches ctime only, but writes would move mtime). Entry as
 * for kb_fsmeta_read_xattrs. Returns the number of counted problems. */
int kb_fsmeta_apply(int fd, int dirfd, const char *name, const Kbackup__Node *n, int flags,
                    kb_fsmeta_report_cb report, void *arg);

/* This process's umask, read without changing it (umask(2) would, for every thread). Returns 0,
 * or -errno when the kernel does not tell (before Linux 4.7). */
int kb_fsmeta_umask(mode_t *out);

#endif
