/* test_volume.c - volume backup, restore and walk against a real repository in a temp dir: round
 * trip of every file kind and piece of metadata, --include, walk order, files that change or vanish
 * during a backup, damaged chunks, restoring into a populated target. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "repo.h"
#include "snapshot_testlib.h"
#include "volume.h"

static const struct kb_kdf_params fast = {1, 8192};
static char base[64], repo_dir[128], src[128], dst[128];

/* rm -rf with *at calls: the trees hold paths longer than PATH_MAX. */
static void rm_at(int dfd, const char *name)
{
        struct stat st;
        int fd;
        DIR *d;
        struct dirent *de;

        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return;
        if (!S_ISDIR(st.st_mode)) {
                unlinkat(dfd, name, 0);
                return;
        }
        fchmodat(dfd, name, 0700, 0);
        fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        if (fd < 0)
                return;
        d = fdopendir(fd);
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        rm_at(dirfd(d), de->d_name);
        closedir(d);
        unlinkat(dfd, name, AT_REMOVEDIR);
}

static void setup(void)
{
        struct kb_err e = {0};

        strcpy(base, "/tmp/kbtest-vol-XXXXXX");
        cr_assert_not_null(mkdtemp(base));
        snprintf(repo_dir, sizeof(repo_dir), "%s/repo", base);
        snprintf(src, sizeof(src), "%s/src", base);
        snprintf(dst, sizeof(dst), "%s/dst", base);
        cr_assert_eq(mkdir(src, 0755), 0);
        cr_assert_eq(kb_repo_init(repo_dir, "pw", 2, &fast, NULL, &e), 0, "%s", e.msg);
}

static void teardown(void)
{
        rm_at(AT_FDCWD, base);
}

TestSuite(volume, .init = setup, .fini = teardown, .timeout = 300);

/* --- helpers ------------------------------------------------------------------------------- */

struct warns {
        char *msg[512];
        int n;
};

static void warn_cb(const char *msg, void *arg)
{
        struct warns *w = arg;

        if (w->n < 512)
                w->msg[w->n++] = strdup(msg);
}

static int warned(const struct warns *w, const char *a, const char *b)
{
        for (int i = 0; i < w->n; i++)
                if (strstr(w->msg[i], a) && (!b || strstr(w->msg[i], b)))
                        return 1;
        return 0;
}

static void warns_free(struct warns *w)
{
        for (int i = 0; i < w->n; i++)
                free(w->msg[i]);
        w->n = 0;
}

static struct kb_repo *repo_open(void)
{
        struct kb_repo *r = NULL;
        struct kb_err e = {0};

        cr_assert_eq(kb_repo_open(repo_dir, "pw", 2, 0, &r, &e), 0, "%s", e.msg);
        return r;
}

static int backup(const char *path, struct kb_volume_backup_opts *o,
                  struct kb_volume_backup_result *res, struct kb_err *e)
{
        struct kb_repo *r = repo_open();
        int rc = kb_volume_backup(r, path, o, res, e);

        kb_repo_close(r);
        return rc;
}

static int restore(const char *id, const char *target, const char *include, struct warns *w,
                   struct kb_volume_restore_result *res, struct kb_err *e)
{
        struct kb_volume_restore_opts o = {
            .include = include, .restore_owner = geteuid() == 0, .warn = warn_cb, .cb_arg = w};
        struct kb_snapshot_list l = {0};
        struct kb_repo *r = repo_open();
        int rc = kb_volume_restore(r, test_find_snap(r, id, &l), target, &o, res, e);

        kb_snapshot_list_free(&l);
        kb_repo_close(r);
        return rc;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
        uint8_t key[32] = {(uint8_t)seed, (uint8_t)(seed >> 8), 7};

        randombytes_buf_deterministic(p, n, key);
}

static void put_file(int dfd, const char *name, size_t size, unsigned seed, mode_t mode)
{
        uint8_t *p = malloc(size ? size : 1);
        int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        cr_assert_geq(fd, 0, "create %s: %s", name, strerror(errno));
        fill(p, size, seed);
        cr_assert_eq(write(fd, p, size), (ssize_t)size);
        cr_assert_eq(fchmod(fd, mode), 0);
        close(fd);
        free(p);
}

static void set_mtime(int dfd, const char *name, time_t sec, long nsec)
{
        struct timespec ts[2] = {{sec - 1000, 987654321}, {sec, nsec}};

        cr_assert_eq(utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW), 0, "%s", strerror(errno));
}

static int subdir(int dfd, const char *name, mode_t mode)
{
        int fd;

        cr_assert_eq(mkdirat(dfd, name, 0700), 0, "%s: %s", name, strerror(errno));
        fd = openat(dfd, name, O_RDONLY | O_DIRECTORY);
        cr_assert_geq(fd, 0);
        cr_assert_eq(fchmod(fd, mode), 0);
        return fd;
}

/* A sparse file: `size` bytes with 4 KiB of data at each of `offs`. */
static void put_sparse(int dfd, const char *name, off_t size, const off_t *offs, int n)
{
        uint8_t blk[4096];
        int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0644);

        cr_assert_geq(fd, 0);
        cr_assert_eq(ftruncate(fd, size), 0);
        for (int i = 0; i < n; i++) {
                fill(blk, sizeof(blk), 100 + (unsigned)i);
                cr_assert_eq(pwrite(fd, blk, sizeof(blk), offs[i]), (ssize_t)sizeof(blk));
        }
        close(fd);
}

/* A POSIX access ACL in its xattr form: owner rw, user 1234 r, group r, mask r, other none. */
static size_t acl_xattr(uint8_t *out)
{
        static const struct {
                uint16_t tag, perm;
                uint32_t id;
        } ents[] = {{0x01, 6, UINT32_MAX},
                    {0x02, 4, 1234},
                    {0x04, 4, UINT32_MAX},
                    {0x10, 4, UINT32_MAX},
                    {0x20, 0, UINT32_MAX}};
        uint32_t version = 2;
        size_t n = 0;

        memcpy(out, &version, 4);
        n = 4;
        for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
                memcpy(out + n, &ents[i].tag, 2);
                memcpy(out + n + 2, &ents[i].perm, 2);
                memcpy(out + n + 4, &ents[i].id, 4);
                n += 8;
        }
        return n;
}

#define DEEP_LEVELS 100

/* Build the round-trip tree under src. Returns 1 when the ACL could be set. */
static int build_tree(void)
{
        int root = open(src, O_RDONLY | O_DIRECTORY), sub, fd, has_acl = 0;
        const off_t holes[] = {1 << 20, (64 << 20) - 4096};
        const off_t head[] = {0};
        uint8_t acl[64];
        size_t acl_len;
        char name[80];

        cr_assert_geq(root, 0);
        put_file(root, "a_empty", 0, 1, 0644);
        put_file(root, "b_one", 1, 2, 0644);
        put_file(root, "c_4095", 4095, 3, 0640);
        put_file(root, "d_100k", 100000, 4, 0600);
        set_mtime(root, "d_100k", 1700000000, 123456789);
        put_file(root, "e_big", (3 << 20) + 17, 5, 0644); /* several chunks */
        put_sparse(root, "f_sparse", 64 << 20, holes, 2);
        put_sparse(root, "g_sparse_tail", 10 << 20, head, 1); /* data, then a trailing hole */
        put_sparse(root, "h_all_hole", 10 << 20, NULL, 0);
        put_file(root, "hl1", 5000, 6, 0644);
        put_file(root, "suid", 10, 7, 04755);
        put_file(root, "name with\nnewline", 10, 8, 0644);
        put_file(root, "\xff\xfe bytes", 10, 9, 0644);
        cr_assert_eq(symlinkat("d_100k", root, "link_rel"), 0);
        cr_assert_eq(symlinkat("no/such/target", root, "link_dangling"), 0);
        set_mtime(root, "link_rel", 1600000000, 5);
        cr_assert_eq(mkfifoat(root, "fifo", 0640), 0);
        if (geteuid() == 0) {
                cr_assert_eq(mknodat(root, "chr", S_IFCHR | 0600, makedev(1, 3)), 0);
                cr_assert_eq(fchownat(root, "c_4095", 1234, 5678, 0), 0);
                cr_assert_eq(fchownat(root, "link_rel", 4321, 8765, AT_SYMLINK_NOFOLLOW), 0);
        }

        sub = subdir(root, "sub", 0750);
        cr_assert_eq(linkat(root, "hl1", sub, "h2", 0), 0);
        put_file(sub, "x_file", 3000, 10, 0644);
        fd = openat(sub, "x_file", O_RDONLY);
        cr_assert_eq(fsetxattr(fd, "user.k", "v\0binary", 8, 0), 0, "%s", strerror(errno));
        acl_len = acl_xattr(acl);
        has_acl = fsetxattr(fd, "system.posix_acl_access", acl, acl_len, 0) == 0;
        close(fd);
        cr_assert_eq(fsetxattr(sub, "user.dir", "1", 1, 0), 0);
        close(subdir(sub, "empty_dir", 0705));
        set_mtime(sub, "empty_dir", 1500000000, 999999999);
        close(sub);
        set_mtime(root, "sub", 1400000000, 42);

        /* 100 levels of 60-byte names: past PATH_MAX and past the open-directory budget. */
        fd = dup(root);
        for (int i = 0; i < DEEP_LEVELS; i++) {
                int next;

                snprintf(name, sizeof(name), "d%03d_%055d", i, 0);
                next = subdir(fd, name, 0755);
                close(fd);
                fd = next;
        }
        put_file(fd, "leaf", 777, 11, 0644);
        close(fd);

        {
                struct sockaddr_un sa = {.sun_family = AF_UNIX};
                int s = socket(AF_UNIX, SOCK_STREAM, 0);

                int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/sock", src);

                cr_assert_lt(n, (int)sizeof(sa.sun_path));
                cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
                close(s);
        }
        close(root);
        return has_acl;
}

/* --- comparing trees ----------------------------------------------------------------------- */

static int name_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_dir(int fd, char ***out)
{
        DIR *d = fdopendir(dup(fd));
        struct dirent *de;
        char **v = NULL;
        int n = 0;

        cr_assert_not_null(d);
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                v = realloc(v, (size_t)(n + 1) * sizeof(*v));
                v[n++] = strdup(de->d_name);
        }
        closedir(d);
        if (n)
                qsort(v, (size_t)n, sizeof(*v), name_cmp);
        *out = v;
        return n;
}

static void xattr_set(int dfd, const char *name, char *buf, size_t cap, ssize_t *len)
{
        char path[512];

        snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dfd, name);
        *len = llistxattr(path, buf, cap);
        if (*len < 0)
                *len = 0;
}

static void cmp_xattrs(int sd, int dd, const char *name, const char *rel)
{
        char sl[4096], dl[4096], path[512], sv[4096], dv[4096];
        ssize_t sn, dn;
        int count = 0;

        xattr_set(sd, name, sl, sizeof(sl), &sn);
        xattr_set(dd, name, dl, sizeof(dl), &dn);
        for (ssize_t i = 0; i < sn; i += (ssize_t)strlen(sl + i) + 1) {
                ssize_t a, b;

                if (!strncmp(sl + i, "security.", 9))
                        continue;
                count++;
                snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", sd, name);
                a = lgetxattr(path, sl + i, sv, sizeof(sv));
                snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dd, name);
                b = lgetxattr(path, sl + i, dv, sizeof(dv));
                cr_assert_eq(a, b, "%s: xattr %s: %zd vs %zd bytes", rel, sl + i, a, b);
                cr_assert(a < 0 || !memcmp(sv, dv, (size_t)a), "%s: xattr %s differs", rel, sl + i);
        }
        for (ssize_t i = 0; i < dn; i += (ssize_t)strlen(dl + i) + 1)
                if (strncmp(dl + i, "security.", 9))
                        count--;
        cr_assert_eq(count, 0, "%s: different xattr names", rel);
}

static void cmp_content(int sd, int dd, const char *name, const char *rel)
{
        int a = openat(sd, name, O_RDONLY | O_NOATIME), b = openat(dd, name, O_RDONLY | O_NOATIME);
        static uint8_t x[1 << 20], y[1 << 20];

        cr_assert(a >= 0 && b >= 0, "%s: open", rel);
        for (;;) {
                ssize_t n = read(a, x, sizeof(x)), m = read(b, y, sizeof(y));

                cr_assert_eq(n, m, "%s: lengths differ", rel);
                if (n <= 0)
                        break;
                cr_assert(!memcmp(x, y, (size_t)n), "%s: bytes differ", rel);
        }
        close(a);
        close(b);
}

/* Compare the trees at sd and dd (sockets are expected to be missing from dd). */
static void cmp_tree(int sd, int dd, const char *rel, int *entries)
{
        char **sn, **dn;
        int ns = list_dir(sd, &sn), nd = list_dir(dd, &dn), expect = 0;

        for (int i = 0; i < ns; i++) {
                const char *name = sn[i];
                char *path;
                struct stat s, d;

                cr_assert_eq(fstatat(sd, name, &s, AT_SYMLINK_NOFOLLOW), 0);
                cr_assert_geq(asprintf(&path, "%s/%s", rel, name), 0);
                if (S_ISSOCK(s.st_mode)) {
                        cr_assert_neq(fstatat(dd, name, &d, AT_SYMLINK_NOFOLLOW), 0,
                                      "%s: socket restored", path);
                        free(path);
                        continue;
                }
                expect++;
                (*entries)++;
                cr_assert_eq(fstatat(dd, name, &d, AT_SYMLINK_NOFOLLOW), 0, "%s: missing", path);
                cr_assert_eq(s.st_mode, d.st_mode, "%s: mode %o vs %o", path, s.st_mode, d.st_mode);
                cr_assert_eq(s.st_uid, d.st_uid, "%s: uid", path);
                cr_assert_eq(s.st_gid, d.st_gid, "%s: gid", path);
                cr_assert_eq(s.st_mtim.tv_sec, d.st_mtim.tv_sec, "%s: mtime", path);
                cr_assert_eq(s.st_mtim.tv_nsec, d.st_mtim.tv_nsec, "%s: mtime ns", path);
                if (!S_ISLNK(s.st_mode)) { /* readlink moves a symlink's atime */
                        cr_assert_eq(s.st_atim.tv_sec, d.st_atim.tv_sec, "%s: atime", path);
                        cr_assert_eq(s.st_atim.tv_nsec, d.st_atim.tv_nsec, "%s: atime ns", path);
                }
                if (!S_ISDIR(s.st_mode))
                        cr_assert_eq(s.st_size, d.st_size, "%s: size", path);
                cmp_xattrs(sd, dd, name, path);
                if (S_ISREG(s.st_mode)) {
                        cmp_content(sd, dd, name, path);
                } else if (S_ISLNK(s.st_mode)) {
                        char a[PATH_MAX], b[PATH_MAX];
                        ssize_t x = readlinkat(sd, name, a, sizeof(a)),
                                y = readlinkat(dd, name, b, sizeof(b));

                        cr_assert(x == y && x > 0 && !memcmp(a, b, (size_t)x), "%s: target", path);
                } else if (S_ISCHR(s.st_mode) || S_ISBLK(s.st_mode)) {
                        cr_assert_eq(s.st_rdev, d.st_rdev, "%s: rdev", path);
                } else if (S_ISDIR(s.st_mode)) {
                        int a = openat(sd, name, O_RDONLY | O_DIRECTORY | O_NOATIME),
                            b = openat(dd, name, O_RDONLY | O_DIRECTORY | O_NOATIME);

                        cr_assert(a >= 0 && b >= 0);
                        cmp_tree(a, b, path, entries);
                        close(a);
                        close(b);
                }
                free(path);
        }
        cr_assert_eq(nd, expect, "%s: %d entries restored, %d expected", rel, nd, expect);
        for (int i = 0; i < ns; i++)
                free(sn[i]);
        for (int i = 0; i < nd; i++)
                free(dn[i]);
        free(sn);
        free(dn);
}

static void cmp_paths(const char *a, const char *b)
{
        int x = open(a, O_RDONLY | O_DIRECTORY | O_NOATIME), y = open(b, O_RDONLY | O_DIRECTORY);
        int entries = 0;

        struct stat s, d;

        cr_assert(x >= 0 && y >= 0);
        cr_assert(fstat(x, &s) == 0 && fstat(y, &d) == 0);
        cr_assert_eq(s.st_mode, d.st_mode, "%s: mode %o vs %o", b, s.st_mode, d.st_mode);
        cr_assert_eq(s.st_mtim.tv_sec, d.st_mtim.tv_sec, "%s: mtime", b);
        cr_assert_eq(s.st_mtim.tv_nsec, d.st_mtim.tv_nsec, "%s: mtime ns", b);
        cmp_tree(x, y, ".", &entries);
        cr_assert_gt(entries, 0);
        close(x);
        close(y);
}

static blkcnt_t blocks_of(const char *dir, const char *name)
{
        char p[512];
        struct stat st;

        snprintf(p, sizeof(p), "%s/%s", dir, name);
        cr_assert_eq(lstat(p, &st), 0, "%s", p);
        return st.st_blocks;
}

static ino_t ino_of(const char *dir, const char *name)
{
        char p[512];
        struct stat st;

        snprintf(p, sizeof(p), "%s/%s", dir, name);
        cr_assert_eq(lstat(p, &st), 0, "%s", p);
        return st.st_ino;
}

/* --- tests --------------------------------------------------------------------------------- */

Test(volume, round_trip_every_kind)
{
        const char *tags[] = {"env=test", "team=a=b"};
        struct kb_volume_backup_opts o = {.name = "ns/pvc", .tags = tags, .ntags = 2};
        struct kb_volume_backup_result res;
        struct kb_volume_restore_result rr;
        struct kb_snapshot_list l = {0};
        struct warns w = {0};
        struct kb_err e = {0};
        struct kb_repo *r;
        const Kbackup__Snapshot *s;
        char real[PATH_MAX];
        int has_acl = build_tree(), rc;

        o.warn = warn_cb;
        o.cb_arg = &w;
        rc = backup(src, &o, &res, &e);
        cr_assert_eq(rc, 0, "%s: %s", kb_err_name(rc), e.msg);
        cr_assert(warned(&w, "sock", "socket skipped"), "no warning for the socket");
        cr_assert_eq(res.errors, 0);
        cr_assert_eq(strlen(res.snapshot_id), KB_ID_HEX_LEN);
        cr_assert_geq(res.files, 15);
        cr_assert_eq(res.dirs, 3 + DEEP_LEVELS); /* root, sub, empty_dir, the deep chain */
        /* Holes are not read: 3 MiB and a few small files, not 84 MiB of sparse files. */
        cr_assert_lt(res.bytes_read, 4u << 20);

        r = repo_open();
        s = test_find_snap(r, res.snapshot_id, &l);
        cr_assert_str_eq(s->kind, "volume");
        cr_assert_str_eq(s->name, "ns/pvc");
        cr_assert_eq(s->n_tags, 2);
        cr_assert_str_eq(s->tags[1]->key, "team");
        cr_assert_str_eq(s->tags[1]->value, "a=b");
        cr_assert_not_null(realpath(src, real));
        cr_assert_str_eq(s->source_path, real);
        cr_assert_neq(s->host[0], '\0');
        cr_assert_not_null(s->root);
        cr_assert_eq(s->root->type, KBACKUP__NODE_TYPE__NODE_DIR);
        cr_assert_eq(s->stats->files, res.files);
        kb_snapshot_list_free(&l);
        kb_repo_close(r);

        warns_free(&w);
        rc = restore(res.snapshot_id, dst, NULL, &w, &rr, &e);
        cr_assert_eq(rc, 0, "%s: %s (%s)", kb_err_name(rc), e.msg, w.n ? w.msg[0] : "");
        cr_assert_eq(rr.errors, 0);
        cr_assert_eq(w.n, 0, "%s", w.n ? w.msg[0] : "");

        cmp_paths(src, dst);
        cr_assert_eq(ino_of(dst, "hl1"), ino_of(dst, "sub/h2"), "hardlink not restored as a link");
        cr_assert_leq(blocks_of(dst, "f_sparse") * 512, 256 * 1024, "holes were filled");
        cr_assert_leq(blocks_of(dst, "h_all_hole") * 512, 64 * 1024, "holes were filled");
        cr_assert_leq(blocks_of(dst, "g_sparse_tail") * 512, 256 * 1024, "holes were filled");
        if (has_acl) {
                char p[512];

                snprintf(p, sizeof(p), "%s/sub/x_file", dst);
                cr_assert_gt(getxattr(p, "system.posix_acl_access", NULL, 0), 0);
        }
        warns_free(&w);
}

Test(volume, second_backup_adds_almost_nothing)
{
        struct kb_volume_backup_result a, b;
        struct kb_err e = {0};
        int fd = open(src, O_RDONLY | O_DIRECTORY);

        put_file(fd, "big", 6 << 20, 1, 0644);
        put_file(fd, "small", 1000, 2, 0644);
        close(fd);
        cr_assert_eq(backup(src, NULL, &a, &e), 0, "%s", e.msg);
        cr_assert_geq(a.bytes_new, 6u << 20);
        cr_assert_eq(backup(src, NULL, &b, &e), 0, "%s", e.msg);
        cr_assert_eq(b.bytes_read, a.bytes_read);
        cr_assert_lt(b.bytes_new * 100, b.bytes_read, "second backup stored %llu new bytes",
                     (unsigned long long)b.bytes_new);
        cr_assert_str_neq(a.snapshot_id, b.snapshot_id);
}

Test(volume, include_subset)
{
        struct kb_volume_backup_result res;
        struct kb_volume_restore_result rr;
        struct warns w = {0};
        struct kb_err e = {0};
        char p[512], t2[256], t3[256], t4[256];
        struct stat st;
        int rc;

        build_tree();
        cr_assert_eq(backup(src, NULL, &res, &e), 0, "%s", e.msg);

        /* A subtree, with a hardlink whose first member (hl1) lies outside it. */
        rc = restore(res.snapshot_id, dst, "/sub/", &w, &rr, &e);
        cr_assert_eq(rc, 0, "%s: %s", kb_err_name(rc), e.msg);
        snprintf(p, sizeof(p), "%s/sub", src);
        snprintf(t2, sizeof(t2), "%s/sub", dst);
        cmp_paths(p, t2);
        snprintf(p, sizeof(p), "%s/hl1", dst);
        cr_assert_neq(lstat(p, &st), 0, "an entry outside --include was restored");

        /* One file, its parent created in the target. */
        snprintf(t3, sizeof(t3), "%s/t3", base);
        rc = restore(res.snapshot_id, t3, "./sub/x_file", &w, &rr, &e);
        cr_assert_eq(rc, 0, "%s: %s", kb_err_name(rc), e.msg);
        cr_assert_eq(rr.files, 1);
        snprintf(p, sizeof(p), "%s/sub/x_file", t3);
        cr_assert_eq(lstat(p, &st), 0);
        cr_assert_eq(st.st_size, 3000);
        snprintf(p, sizeof(p), "%s/sub", t3);
        cr_assert_eq(lstat(p, &st), 0);
        cr_assert_eq(st.st_mode & 07777, 0750, "created parent did not get its recorded mode");

        /* Deep inside the long path. */
        snprintf(t4, sizeof(t4), "%s/t4", base);
        rc = restore(res.snapshot_id, t4,
                     "d000_0000000000000000000000000000000000000000000000000000000", &w, &rr, &e);
        cr_assert_eq(rc, 0, "%s: %s", kb_err_name(rc), e.msg);
        cr_assert_eq(rr.dirs, DEEP_LEVELS);
        cr_assert_eq(rr.files, 1);

        /* A path that is not there changes nothing. */
        snprintf(p, sizeof(p), "%s/t5", base);
        cr_assert_eq(restore(res.snapshot_id, p, "sub/nope", &w, &rr, &e), KB_ENOTFOUND);
        cr_assert(strstr(e.msg, "sub/nope"), "%s", e.msg);
        cr_assert_eq(restore(res.snapshot_id, p, "hl1/x", &w, &rr, &e), KB_ENOTFOUND);
        cr_assert_eq(restore(res.snapshot_id, p, "../etc", &w, &rr, &e), KB_EUSAGE);
        cr_assert_neq(lstat(p, &st), 0, "target created for a missing --include path");
        warns_free(&w);
}

struct walked {
        char *paths[64];
        int n;
};

static int walk_cb(const char *path, const Kbackup__Node *n, void *arg)
{
        struct walked *w = arg;

        (void)n;
        cr_assert_lt(w->n, 64);
        w->paths[w->n++] = strdup(path);
        return 0;
}

static void walk_expect(struct kb_repo *r, const Kbackup__Snapshot *s, const char *start,
                        const char *const *want, int nwant)
{
        struct walked w = {0};
        struct kb_err e = {0};

        cr_assert_eq(kb_volume_walk(r, s, start, walk_cb, &w, &e), 0, "%s", e.msg);
        cr_assert_eq(w.n, nwant, "walk %s: %d entries, want %d", start ? start : "(root)", w.n,
                     nwant);
        for (int i = 0; i < nwant; i++) {
                cr_assert_str_eq(w.paths[i], want[i]);
                free(w.paths[i]);
        }
}

static int stop_cb(const char *path, const Kbackup__Node *n, void *arg)
{
        (void)n;
        ++*(int *)arg;
        return strcmp(path, "b/c") == 0 ? 42 : 0;
}

Test(volume, walk_lists_in_name_order)
{
        static const char *const all[] = {"a", "b", "b/c", "b/d", "b/d/e", "z"};
        static const char *const bd[] = {"b/d", "b/d/e"};
        static const char *const a[] = {"a"};
        struct kb_volume_backup_result res;
        struct kb_snapshot_list l = {0};
        struct kb_err e = {0};
        struct kb_repo *r;
        const Kbackup__Snapshot *s;
        int root = open(src, O_RDONLY | O_DIRECTORY), b, d, count = 0;

        put_file(root, "z", 1, 1, 0644);
        put_file(root, "a", 1, 2, 0644);
        b = subdir(root, "b", 0755);
        d = subdir(b, "d", 0755);
        put_file(d, "e", 3, 3, 0644);
        cr_assert_eq(symlinkat("x", b, "c"), 0);
        close(d);
        close(b);
        close(root);
        cr_assert_eq(backup(src, NULL, &res, &e), 0, "%s", e.msg);

        r = repo_open();
        s = test_find_snap(r, res.snapshot_id, &l);
        walk_expect(r, s, NULL, all, 6);
        walk_expect(r, s, "", all, 6);
        walk_expect(r, s, "b/d", bd, 2);
        walk_expect(r, s, "/b/./d/", bd, 2);
        walk_expect(r, s, "a", a, 1);
        cr_assert_eq(kb_volume_walk(r, s, "nope", walk_cb, NULL, &e), KB_ENOTFOUND);
        cr_assert_eq(kb_volume_walk(r, s, "a/x", walk_cb, NULL, &e), KB_ENOTFOUND);
        cr_assert_eq(kb_volume_walk(r, s, "b/../a", walk_cb, NULL, &e), KB_EUSAGE);
        cr_assert_eq(kb_volume_walk(r, s, NULL, stop_cb, &count, &e), 42);
        cr_assert_eq(count, 3);
        kb_snapshot_list_free(&l);
        kb_repo_close(r);
}

/* The first progress call comes while the first file ("a_changing") is being read: change it
 * and delete a later entry. */
static void meddle(const struct kb_progress *p, void *arg)
{
        int *done = arg;
        char path[256];

        if (*done || !p->current || strcmp(p->current, "a_changing") != 0)
                return;
        *done = 1;
        snprintf(path, sizeof(path), "%s/a_changing", src);
        FILE *f = fopen(path, "a");
        fputs("more", f);
        fclose(f);
        snprintf(path, sizeof(path), "%s/z_vanishing", src);
        unlink(path);
}

struct meddle_arg {
        int done;
        struct warns w;
};

static void meddle_progress(const struct kb_progress *p, void *arg)
{
        meddle(p, &((struct meddle_arg *)arg)->done);
}

static void meddle_warn(const char *msg, void *arg)
{
        warn_cb(msg, &((struct meddle_arg *)arg)->w);
}

Test(volume, changes_during_backup_are_not_fatal)
{
        struct meddle_arg m = {0};
        struct kb_volume_backup_opts o = {
            .progress = meddle_progress, .warn = meddle_warn, .cb_arg = &m};
        struct kb_volume_backup_result res;
        struct kb_volume_restore_result rr;
        struct warns w = {0};
        struct kb_err e = {0};
        char p[256];
        struct stat st;
        int fd = open(src, O_RDONLY | O_DIRECTORY), rc;

        put_file(fd, "a_changing", 1 << 20, 1, 0644);
        put_file(fd, "m_steady", 5000, 2, 0644);
        put_file(fd, "z_vanishing", 10, 3, 0644);
        close(fd);
        rc = backup(src, &o, &res, &e);
        cr_assert(m.done, "the progress callback never saw a_changing");
        cr_assert_eq(rc, KB_EPARTIAL, "%s: %s", kb_err_name(rc), e.msg);
        cr_assert(warned(&m.w, "a_changing", "changed"), "no warning for the changed file");
        cr_assert(warned(&m.w, "z_vanishing", "vanished"), "no warning for the vanished file");
        cr_assert_eq(res.errors, 2);
        cr_assert_eq(strlen(res.snapshot_id), KB_ID_HEX_LEN, "no snapshot recorded");

        rc = restore(res.snapshot_id, dst, NULL, &w, &rr, &e);
        cr_assert_eq(rc, 0, "%s: %s", kb_err_name(rc), e.msg);
        snprintf(p, sizeof(p), "%s/a_changing", dst);
        cr_assert_eq(lstat(p, &st), 0);
        cr_assert_eq(st.st_size, 1 << 20, "saved as read: the first size");
        snprintf(p, sizeof(p), "%s/m_steady", dst);
        cr_assert_eq(lstat(p, &st), 0);
        snprintf(p, sizeof(p), "%s/z_vanishing", dst);
        cr_assert_neq(lstat(p, &st), 0);
        warns_free(&m.w);
        warns_free(&w);
}

/* The data pack (written by one worker, in submit order) begins with a_first's chunk; the only
 * other pack holds the trees, a few hundred bytes. */
static void corrupt_first_pack_byte(off_t off)
{
        char cmd[512], path[512];
        FILE *f;
        uint8_t c;
        int fd;

        snprintf(cmd, sizeof(cmd), "find %s/data -type f -size +64k", repo_dir);
        f = popen(cmd, "r");
        cr_assert_not_null(f);
        cr_assert_not_null(fgets(path, sizeof(path), f), "no data pack");
        path[strcspn(path, "\n")] = '\0';
        cr_assert_null(fgets(cmd, sizeof(cmd), f), "more than one data pack");
        pclose(f);
        /* Trees went to a pack of their own. */
        snprintf(cmd, sizeof(cmd), "find %s/data -type f | wc -l", repo_dir);
        f = popen(cmd, "r");
        cr_assert_not_null(f);
        cr_assert_not_null(fgets(cmd, sizeof(cmd), f));
        cr_assert_eq(atoi(cmd), 2, "%s pack(s): want a data pack and a tree pack", cmd);
        pclose(f);
        fd = open(path, O_RDWR);
        cr_assert_geq(fd, 0, "%s", path);
        cr_assert_eq(pread(fd, &c, 1, off), 1);
        c ^= 0x55;
        cr_assert_eq(pwrite(fd, &c, 1, off), 1);
        close(fd);
}

Test(volume, damaged_chunk_is_reported_and_restore_goes_on)
{
        struct kb_volume_backup_opts o = {.threads = 1};
        struct kb_volume_backup_result res;
        struct kb_volume_restore_result rr;
        struct warns w = {0};
        struct kb_err e = {0};
        int fd = open(src, O_RDONLY | O_DIRECTORY), rc;

        put_file(fd, "a_first", 200000, 1, 0644);
        put_file(fd, "b_second", 200000, 2, 0644);
        close(fd);
        cr_assert_eq(backup(src, &o, &res, &e), 0, "%s", e.msg);
        corrupt_first_pack_byte(1000);

        rc = restore(res.snapshot_id, dst, NULL, &w, &rr, &e);
        cr_assert_eq(rc, KB_EPARTIAL, "%s: %s", kb_err_name(rc), e.msg);
        cr_assert_eq(rr.errors, 1);
        cr_assert(warned(&w, "a_first: damaged data at offset 0", NULL), "%s",
                  w.n ? w.msg[0] : "no warning");
        /* The undamaged file is complete. */
        {
                char p[512], q[512];

                snprintf(p, sizeof(p), "%s/b_second", src);
                snprintf(q, sizeof(q), "%s/b_second", dst);
                int a = open(p, O_RDONLY), b = open(q, O_RDONLY);
                static uint8_t x[200000], y[200000];

                cr_assert_eq(read(a, x, sizeof(x)), 200000);
                cr_assert_eq(read(b, y, sizeof(y)), 200000);
                cr_assert(!memcmp(x, y, sizeof(x)));
                close(a);
                close(b);
        }
        warns_free(&w);
}

Test(volume, existing_entries_are_not_overwritten)
{
        struct kb_volume_backup_result res;
        struct kb_volume_restore_result rr;
        struct warns w = {0};
        struct kb_err e = {0};
        char p[512], buf[16] = {0};
        struct stat st;
        int fd = open(src, O_RDONLY | O_DIRECTORY), sub, rc;

        put_file(fd, "keep", 100, 1, 0644);
        put_file(fd, "new", 100, 2, 0644);
        sub = subdir(fd, "dir", 0700);
        put_file(sub, "inner", 10, 3, 0644);
        close(sub);
        close(fd);
        cr_assert_eq(backup(src, NULL, &res, &e), 0, "%s", e.msg);

        cr_assert_eq(mkdir(dst, 0711), 0);
        snprintf(p, sizeof(p), "%s/keep", dst);
        fd = open(p, O_WRONLY | O_CREAT, 0600);
        cr_assert_eq(write(fd, "mine", 4), 4);
        close(fd);
        snprintf(p, sizeof(p), "%s/dir", dst);
        cr_assert_eq(mkdir(p, 0755), 0);

        rc = restore(res.snapshot_id, dst, NULL, &w, &rr, &e);
        cr_assert_eq(rc, KB_EPARTIAL, "%s: %s", kb_err_name(rc), e.msg);
        cr_assert_eq(rr.errors, 1);
        cr_assert(warned(&w, "keep", "already exists"), "no conflict warning");
        snprintf(p, sizeof(p), "%s/keep", dst);
        fd = open(p, O_RDONLY);
        cr_assert_eq(read(fd, buf, sizeof(buf)), 4);
        cr_assert_str_eq(buf, "mine");
        close(fd);
        snprintf(p, sizeof(p), "%s/new", dst);
        cr_assert_eq(lstat(p, &st), 0);
        snprintf(p, sizeof(p), "%s/dir/inner", dst); /* merged into the existing directory */
        cr_assert_eq(lstat(p, &st), 0);
        snprintf(p, sizeof(p), "%s/dir", dst);
        cr_assert_eq(lstat(p, &st), 0);
        cr_assert_eq(st.st_mode & 07777, 0755, "an existing directory's mode was changed");
        cr_assert_eq(lstat(dst, &st), 0);
        cr_assert_eq(st.st_mode & 07777, 0711, "the populated target's mode was changed");
        warns_free(&w);
}

/* Workers create files with their recorded bits when nothing else has to change, and skip the
 * chown and chmod then: the umask, special bits, other owners and a setgid target (whose group a
 * new file takes) must still end with the recorded mode and owner. */
Test(volume, modes_and_owners_survive_umask_and_setgid_target)
{
        static const struct {
                const char *name;
                size_t size;
                mode_t mode;
        } files[] = {
            {"m0666", 100, 0666},  {"m0777", 100, 0777},       {"m0000", 100, 0000},
            {"m0640", 100, 0640},  {"suid", 100, 04711},       {"sgid", 100, 02755},
            {"sticky", 10, 01644}, {"big0664", 9 << 20, 0664}, /* created by the walking thread */
        };
        struct kb_volume_backup_result res;
        struct kb_volume_restore_result rr;
        struct warns w = {0};
        struct kb_err e = {0};
        int fd = open(src, O_RDONLY | O_DIRECTORY), sub, rc;
        int root = geteuid() == 0;

        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
                put_file(fd, files[i].name, files[i].size, 20 + (unsigned)i, files[i].mode);
        sub = subdir(fd, "sub", 0755);
        put_file(sub, "inner", 10, 30, 0644);
        if (root) {
                cr_assert_eq(fchownat(fd, "m0640", 1234, 5678, 0), 0);
                cr_assert_eq(fchmodat(fd, "m0640", 0640, 0), 0); /* chown dropped nothing here */
                cr_assert_eq(fchownat(sub, "inner", 0, 5678, 0), 0);
        }
        close(sub);
        close(fd);
        cr_assert_eq(backup(src, NULL, &res, &e), 0, "%s", e.msg);

        umask(027);
        for (int setgid = 0; setgid <= 1; setgid++) {
                char t[256];

                snprintf(t, sizeof(t), "%s/t%d", base, setgid);
                cr_assert_eq(mkdir(t, 0700), 0);
                /* New files in a setgid target take its group, not the restoring user's. */
                if (setgid && root)
                        cr_assert_eq(chown(t, 0, 4242), 0);
                if (setgid)
                        cr_assert_eq(chmod(t, 02775), 0);
                rc = restore(res.snapshot_id, t, NULL, &w, &rr, &e);
                cr_assert_eq(rc, 0, "%s: %s (%s)", kb_err_name(rc), e.msg, w.n ? w.msg[0] : "");
                cr_assert_eq(w.n, 0, "%s", w.n ? w.msg[0] : "");
                cmp_paths(src, t);
        }
        warns_free(&w);
}

Test(volume, bad_arguments)
{
        const char *bad[] = {"novalue"};
        struct kb_volume_backup_opts o = {.tags = bad, .ntags = 1};
        struct kb_volume_backup_result res;
        struct kb_err e = {0};
        char p[256];
        int fd;

        cr_assert_eq(backup(src, &o, &res, &e), KB_EUSAGE);
        snprintf(p, sizeof(p), "%s/nope", base);
        cr_assert_eq(backup(p, NULL, &res, &e), -ENOENT);
        snprintf(p, sizeof(p), "%s/file", base);
        fd = open(p, O_WRONLY | O_CREAT, 0600);
        close(fd);
        cr_assert_eq(backup(p, NULL, &res, &e), KB_EUSAGE);
}

Test(volume, empty_volume)
{
        struct kb_volume_backup_result res;
        struct kb_volume_restore_result rr;
        struct warns w = {0};
        struct kb_err e = {0};
        struct stat st;
        int rc;

        cr_assert_eq(chmod(src, 0710), 0);
        cr_assert_eq(backup(src, NULL, &res, &e), 0, "%s", e.msg);
        cr_assert_eq(res.dirs, 1);
        cr_assert_eq(res.files, 0);
        rc = restore(res.snapshot_id, dst, NULL, &w, &rr, &e);
        cr_assert_eq(rc, 0, "%s: %s", kb_err_name(rc), e.msg);
        cr_assert_eq(lstat(dst, &st), 0);
        cr_assert(S_ISDIR(st.st_mode));
        cr_assert_eq(st.st_mode & 07777, 0710, "the new target did not get the root's mode");
}

struct prog {
        int calls;
        struct kb_progress last;
};

static void prog_cb(const struct kb_progress *p, void *arg)
{
        struct prog *g = arg;

        g->calls++;
        g->last = *p;
        g->last.current = NULL;
}

Test(volume, progress_ends_with_the_totals)
{
        struct prog bp = {0}, rp = {0};
        struct kb_volume_backup_opts o = {.progress = prog_cb, .cb_arg = &bp};
        struct kb_volume_restore_opts ro = {.progress = prog_cb, .cb_arg = &rp};
        struct kb_volume_backup_result res;
        struct kb_volume_restore_result rr;
        struct kb_snapshot_list l = {0};
        struct kb_err e = {0};
        struct kb_repo *r;
        int fd = open(src, O_RDONLY | O_DIRECTORY);

        put_file(fd, "one", 70000, 1, 0644);
        put_file(fd, "two", 30000, 2, 0644);
        close(fd);
        cr_assert_eq(backup(src, &o, &res, &e), 0, "%s", e.msg);
        cr_assert_geq(bp.calls, 1);
        cr_assert_eq(bp.last.files_done, 2);
        cr_assert_eq(bp.last.bytes_done, 100000);

        r = repo_open();
        cr_assert_eq(
            kb_volume_restore(r, test_find_snap(r, res.snapshot_id, &l), dst, &ro, &rr, &e), 0,
            "%s", e.msg);
        cr_assert_geq(rp.calls, 1);
        cr_assert_eq(rp.last.files_done, 2);
        cr_assert_eq(rp.last.files_total, 2);
        cr_assert_eq(rp.last.bytes_done, 100000);
        cr_assert_eq(rp.last.bytes_total, 100000);
        cr_assert_eq(rr.bytes, 100000);
        kb_snapshot_list_free(&l);
        kb_repo_close(r);
}

/* --- parallel restore ---------------------------------------------------------------------- */

#define PAR_DIRS  10
#define PAR_FILES 30

/* A tree for the worker pool: a large file (many jobs), a non-sparse file with a long run of
 * zeros, a sparse file, many small files in many directories (one read-only), hardlinks across
 * directories. Returns the number of non-directory entries. */
static int build_par_tree(void)
{
        int root = open(src, O_RDONLY | O_DIRECTORY), many, d, ro, fd, count = 0;
        const off_t holes[] = {5 << 20, (40 << 20) - 4096};
        uint8_t *buf = calloc(1, 52 << 20);
        char name[32];

        cr_assert(root >= 0 && buf);
        put_file(root, "m_big", 40 << 20, 40, 0644);
        set_mtime(root, "m_big", 1650000000, 1);
        /* 2 MiB of data, 48 MiB of zeros written out (not a hole), 2 MiB of data. */
        fill(buf, 2 << 20, 41);
        fill(buf + (50 << 20), 2 << 20, 42);
        fd = openat(root, "z_zeros", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        cr_assert_eq(write(fd, buf, 52 << 20), 52 << 20);
        close(fd);
        free(buf);
        put_sparse(root, "s_sparse", 40 << 20, holes, 2);
        count += 3;
        many = subdir(root, "many", 0755);
        for (int i = 0; i < PAR_DIRS; i++) {
                snprintf(name, sizeof(name), "d%02d", i);
                d = subdir(many, name, 0755);
                for (int j = 0; j < PAR_FILES; j++) {
                        snprintf(name, sizeof(name), "f%03d", j);
                        put_file(d, name, (size_t)(i * 7919 + j * 1543) % 70000, 1000 + i * 100 + j,
                                 0644);
                        set_mtime(d, name, 1600000000 + i * 100 + j, j);
                        count++;
                }
                if (i > 0) { /* d01..d09/link -> d00/f00I */
                        char target[32];

                        snprintf(target, sizeof(target), "d00/f%03d", i);
                        cr_assert_eq(linkat(many, target, d, "link", 0), 0, "%s", strerror(errno));
                        count++;
                }
                close(d);
        }
        ro = subdir(many, "ro", 0755);
        put_file(ro, "inside", 30000, 77, 0644);
        put_file(ro, "inside2", 3 << 20, 78, 0644);
        count += 2;
        cr_assert_eq(fchmod(ro, 0555), 0);
        close(ro);
        set_mtime(many, "ro", 1500000000, 5);
        close(many);
        close(root);
        return count;
}

static int restore_threads(const char *id, const char *target, unsigned threads, struct warns *w,
                           struct kb_volume_restore_result *res, struct kb_err *e)
{
        struct kb_volume_restore_opts o = {
            .restore_owner = geteuid() == 0, .threads = threads, .warn = warn_cb, .cb_arg = w};
        struct kb_snapshot_list l = {0};
        struct kb_repo *r = repo_open();
        int rc = kb_volume_restore(r, test_find_snap(r, id, &l), target, &o, res, e);

        kb_snapshot_list_free(&l);
        kb_repo_close(r);
        return rc;
}

Test(volume, parallel_restore_is_identical)
{
        struct kb_volume_backup_result res;
        struct kb_volume_restore_result rr;
        struct warns w = {0};
        struct kb_err e = {0};
        int entries = build_par_tree(), rc;

        cr_assert_eq(backup(src, NULL, &res, &e), 0, "%s", e.msg);
        for (unsigned threads = 1; threads <= 4; threads += 3) {
                char t[256];

                snprintf(t, sizeof(t), "%s/t%u", base, threads);
                rc = restore_threads(res.snapshot_id, t, threads, &w, &rr, &e);
                cr_assert_eq(rc, 0, "%s: %s (%s)", kb_err_name(rc), e.msg, w.n ? w.msg[0] : "");
                cr_assert_eq(w.n, 0, "%s", w.n ? w.msg[0] : "");
                cr_assert_eq(rr.errors, 0);
                cr_assert_eq(rr.files, (uint64_t)entries);
                cr_assert_eq(rr.dirs, PAR_DIRS + 2); /* many, ro, d00.. */
                cr_assert_eq(rr.bytes, res.bytes_read);
                cmp_paths(src, t);
                cr_assert_eq(ino_of(t, "many/d00/f003"), ino_of(t, "many/d03/link"));
                cr_assert_eq(ino_of(t, "many/d00/f009"), ino_of(t, "many/d09/link"));
                cr_assert_leq(blocks_of(t, "s_sparse") * 512, 256 * 1024, "holes were filled");
                /* The zero run became a hole (at most a chunk or two of it is written). */
                cr_assert_leq(blocks_of(t, "z_zeros") * 512, 28 << 20, "zeros were written");
        }
        warns_free(&w);
}

struct chunk_list {
        uint8_t (*ids)[KB_ID_LEN];
        size_t n;
};

static int grab_chunks(const char *path, const Kbackup__Node *n, void *arg)
{
        struct chunk_list *c = arg;

        (void)path;
        c->n = n->n_content;
        c->ids = calloc(c->n, KB_ID_LEN);
        for (size_t i = 0; i < c->n; i++) {
                cr_assert_eq(n->content[i].len, KB_ID_LEN);
                memcpy(c->ids[i], n->content[i].data, KB_ID_LEN);
        }
        return 1;
}

static void flip_byte(const char *path, off_t off)
{
        int fd = open(path, O_RDWR);
        uint8_t c;

        cr_assert_geq(fd, 0, "%s", path);
        cr_assert_eq(pread(fd, &c, 1, off), 1);
        c ^= 0x55;
        cr_assert_eq(pwrite(fd, &c, 1, off), 1);
        close(fd);
}

/* Flip a byte of some pack so that exactly one chunk of `c` no longer loads, one of the first third
 * but not of the first two: workers are then writing later parts of the file while the chunks
 * before the damage are read. Returns that chunk's index. */
static size_t damage_middle_chunk(struct kb_repo *r, const struct chunk_list *c)
{
        char cmd[512], path[512];
        FILE *f;

        snprintf(cmd, sizeof(cmd), "find %s/data -type f -size +1M", repo_dir);
        f = popen(cmd, "r");
        cr_assert_not_null(f);
        while (fgets(path, sizeof(path), f)) {
                struct stat st;

                path[strcspn(path, "\n")] = '\0';
                cr_assert_eq(stat(path, &st), 0);
                for (int k = 1; k < 32; k++) {
                        off_t off = st.st_size * k / 32;
                        size_t bad = 0, which = 0;

                        flip_byte(path, off);
                        for (size_t i = 0; i < c->n; i++) {
                                struct kb_buf b = KB_BUF_INIT;
                                struct kb_err e = {0};

                                if (kb_repo_blob_load(r, c->ids[i], &b, &e) < 0) {
                                        bad++;
                                        which = i;
                                }
                                kb_buf_free(&b);
                        }
                        if (bad == 1 && which >= 2 && which < c->n / 3) {
                                pclose(f);
                                return which;
                        }
                        flip_byte(path, off); /* undo */
                }
        }
        pclose(f);
        cr_assert_fail("no pack byte damages a chunk in the first third");
        return 0;
}

Test(volume, parallel_restore_damaged_chunk_in_a_large_file)
{
        struct kb_volume_backup_opts o = {.threads = 1};
        struct kb_volume_backup_result res;
        struct kb_volume_restore_result rr;
        struct kb_snapshot_list l = {0};
        struct chunk_list c = {0};
        struct warns w = {0};
        struct kb_err e = {0};
        struct kb_repo *r;
        uint64_t at = 0;
        char p[512], q[512], want[128];
        struct stat s, d;
        size_t k;
        int entries = build_par_tree(), named = 0, rc;

        cr_assert_eq(backup(src, &o, &res, &e), 0, "%s", e.msg);
        r = repo_open();
        cr_assert_eq(
            kb_volume_walk(r, test_find_snap(r, res.snapshot_id, &l), "m_big", grab_chunks, &c, &e),
            1, "%s", e.msg);
        cr_assert_gt(c.n, 8, "m_big has only %zu chunks", c.n);
        k = damage_middle_chunk(r, &c);
        for (size_t i = 0; i < k; i++) {
                uint32_t len;

                cr_assert_eq(kb_repo_blob_size(r, c.ids[i], &len), 0);
                at += len;
        }
        kb_snapshot_list_free(&l);
        kb_repo_close(r);

        rc = restore_threads(res.snapshot_id, dst, 4, &w, &rr, &e);
        cr_assert_eq(rc, KB_EPARTIAL, "%s: %s", kb_err_name(rc), e.msg);
        cr_assert_eq(rr.errors, 1);
        cr_assert_eq(rr.files, (uint64_t)entries);
        for (int i = 0; i < w.n; i++)
                named += strstr(w.msg[i], "m_big") != NULL;
        cr_assert_eq(named, 1, "the damage was reported %d times", named);
        cr_assert_eq(w.n, 1, "%s", w.msg[w.n - 1]);
        snprintf(want, sizeof(want),
                 "m_big: damaged data at offset %llu: ", (unsigned long long)at);
        cr_assert(warned(&w, want, NULL), "want '%s', got '%s'", want, w.msg[0]);

        /* The damaged file holds exactly the bytes before the damage, and not its recorded mtime.
         */
        snprintf(p, sizeof(p), "%s/m_big", src);
        snprintf(q, sizeof(q), "%s/m_big", dst);
        cr_assert_eq(stat(p, &s), 0);
        cr_assert_eq(stat(q, &d), 0);
        cr_assert_eq((uint64_t)d.st_size, at);
        cr_assert_neq(s.st_mtim.tv_sec, d.st_mtim.tv_sec);
        {
                int a = open(p, O_RDONLY), b = open(q, O_RDONLY);
                uint8_t *x = malloc(at), *y = malloc(at);

                cr_assert_eq(pread(a, x, at, 0), (ssize_t)at);
                cr_assert_eq(pread(b, y, at, 0), (ssize_t)at);
                cr_assert(!memcmp(x, y, at), "the bytes before the damage differ");
                free(x);
                free(y);
                close(a);
                close(b);
        }
        /* Everything else is intact. */
        snprintf(p, sizeof(p), "%s/many", src);
        snprintf(q, sizeof(q), "%s/many", dst);
        cmp_paths(p, q);
        {
                int a = open(src, O_RDONLY | O_DIRECTORY), b = open(dst, O_RDONLY | O_DIRECTORY);

                cmp_content(a, b, "z_zeros", "z_zeros");
                cmp_content(a, b, "s_sparse", "s_sparse");
                close(a);
                close(b);
        }
        free(c.ids);
        warns_free(&w);
}
