/* restore_pool.c - worker threads that create restored files and load, verify and write their
 * content.
 *
 * A file's chunk list is cut into jobs of consecutive chunks (JOB_BYTES of plaintext, known from
 * the index without reading anything); a job knows where in the file its first chunk goes, so jobs
 * run in any order and one large file keeps every worker busy. Jobs are queued in walk order, and
 * the saver stored chunks in that order, so workers read the packs roughly front to back. Chunks
 * are announced to a pack reader (pack_reader.h) as their jobs are queued and read through it,
 * so a run of queued chunks that sit back to back in a pack (the chunks of one large file, or
 * of many small files) comes in one ranged read instead of one per chunk.
 *
 * Problems of one file (a damaged chunk, a write error, a node whose chunks do not fit its size)
 * are collected in the file's state and only the one at the lowest offset is reported, by whoever
 * finishes the file last: the message names the same offset a sequential restore would, and the
 * file is cut there, so it keeps exactly the bytes before the damage.
 *
 * One mutex guards the queue, the counters of open files and groups, the problem messages and the
 * warning queue; it is taken a few times per job (several MiB), never while reading or writing.
 *
 * A file handed over by name is created by the worker that runs its only job (or, without any
 * job, by whoever finishes it): the walking thread, which creates directories and hands files
 * over in walk order, then stops for nothing but the tree it reads. Files of more than one job
 * are created by the walking thread, so no job of one ever waits for another to create it. */
#include "restore_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cpus.h"
#include "crypto.h"
#include "fsmeta.h"
#include "pack_reader.h"

#define POOL_MAX_THREADS 64
#define JOB_BYTES        (8u << 20)
#define MAX_JOBS         1024
#define DEFAULT_FILES    256
#define TICK_NSEC        250000000L
#define NO_PROBLEM       UINT64_MAX
/* rfile.fd before a worker created the file, and after its creation failed. */
#define FD_LATER  (-2)
#define FD_FAILED (-1)
/* Pack reads: windows of READ_WINDOW bytes, two more than the workers (a worker holds at most
 * one at a time, so one is free to read into), at most READ_WINDOWS_MAX (past 14 workers one that
 * finds none free reads its chunk alone). The cache thus holds at most READ_WINDOWS_MAX x
 * READ_WINDOW = 64 MiB, 16 MiB with 2 workers; a chunk larger than a window is read alone, as
 * before. */
#define READ_WINDOW      (4u << 20)
#define READ_WINDOWS_MAX 16
/* Zeroed ranges on a device start and end on page boundaries, never inside a page that another
 * worker's pwrite may be filling through the device's page cache. */
#define ZERO_ALIGN 4096u

/* Where the next content byte goes: extent `ei`, `epos` bytes into it. */
struct cursor {
        size_t ei;
        uint64_t epos;
};

struct rfile {
        struct kb_restore_pool *p;
        struct kb_restore_group *g;
        const Kbackup__Node *n;
        Kbackup__Extent one; /* the whole file, for a file without recorded extents */
        Kbackup__Extent **ext;
        size_t next;
        int fd;                  /* or FD_LATER / FD_FAILED */
        const char *name;        /* for FD_LATER: in the group's directory */
        int meta;                /* kb_fsmeta_apply flags, but for the times */
        size_t refs;             /* queued or running jobs, +1 while being handed over */
        _Atomic uint64_t bad_at; /* offset of the first problem; read without the lock */
        _Atomic uint64_t end;    /* end of the furthest write: the file's size so far */
        char *bad_msg;           /* its message */
        char path[];             /* then the name, for FD_LATER */
};

struct job {
        struct rfile *f;
        size_t first, end; /* chunk indices */
        struct cursor at;  /* where chunk `first` goes */
        struct job *next;
};

struct warning {
        struct warning *next;
        int counted;
        char *msg;
};

struct kb_restore_group {
        struct kb_restore_pool *p;
        size_t refs; /* unfinished files, +1 until closed */
        int dirfd;
        int gid_ok; /* the directory's group is ours: so is that of a file created in it */
        void (*release)(void *, int);
        void *arg;
};

struct kb_restore_pool {
        struct kb_restore_pool_cfg cfg;
        struct kb_pack_reader *reader;
        pthread_t threads[POOL_MAX_THREADS];
        unsigned nthreads;
        size_t max_files;

        pthread_mutex_t lock;
        pthread_cond_t work; /* a job was queued, or stop */
        pthread_cond_t done; /* the walking thread may go on (see wake_walker_locked) */
        struct job *head, *tail;
        size_t queued;     /* jobs waiting in the queue */
        unsigned idle;     /* workers waiting for a job */
        size_t files_open; /* handed over and not finished */
        /* The walking thread sleeps until both counts are down to these. */
        int walker_waiting;
        size_t wake_files, wake_jobs;
        int stop;
        struct warning *warn_head, **warn_tail;
        uint64_t warn_lost; /* counted warnings that could not be queued */
        _Atomic int warned; /* warnings wait: kb_restore_pool_poll takes the lock only then */
        _Atomic int rc;     /* first fatal error */
        struct kb_err err;
        uid_t euid;
        gid_t egid;
        mode_t umask;
        int umask_known;
        _Atomic uint64_t files, bytes;
};

/* --- warnings and errors ------------------------------------------------------------------- */

static void queue_warning(struct kb_restore_pool *p, int counted, char *msg)
{
        struct warning *w = msg ? malloc(sizeof(*w)) : NULL;

        pthread_mutex_lock(&p->lock);
        if (w) {
                w->next = NULL;
                w->counted = counted;
                w->msg = msg;
                *p->warn_tail = w;
                p->warn_tail = &w->next;
        } else {
                free(msg);
                if (counted)
                        p->warn_lost++;
        }
        atomic_store(&p->warned, 1);
        pthread_mutex_unlock(&p->lock);
}

void kb_restore_pool_warnf(struct kb_restore_pool *p, int counted, const char *fmt, ...)
{
        va_list ap;
        char *msg;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        queue_warning(p, counted, msg);
}

/* Called with the lock held; hands the queued warnings to cfg.warn without it. */
static void deliver_locked(struct kb_restore_pool *p)
{
        struct warning *w = p->warn_head;
        uint64_t lost = p->warn_lost;

        atomic_store(&p->warned, 0);
        if (!w && !lost)
                return;
        p->warn_head = NULL;
        p->warn_tail = &p->warn_head;
        p->warn_lost = 0;
        pthread_mutex_unlock(&p->lock);
        while (w) {
                struct warning *next = w->next;

                if (p->cfg.warn)
                        p->cfg.warn(p->cfg.arg, w->counted, w->msg);
                free(w->msg);
                free(w);
                w = next;
        }
        for (; lost && p->cfg.warn; lost--)
                p->cfg.warn(p->cfg.arg, 1, "(out of memory formatting a warning)");
        pthread_mutex_lock(&p->lock);
}

/* Wake the walking thread once what it waits for has come. It waits for a quarter of the open
 * files (or queued jobs) to finish, so it hands over a batch per wake-up rather than one file:
 * every wake-up is a futex call and a context switch on a core the workers are using, and one
 * per file cost ~5% of a restore of many small files. */
static void wake_walker_locked(struct kb_restore_pool *p)
{
        if (p->walker_waiting && p->files_open <= p->wake_files && p->queued <= p->wake_jobs)
                pthread_cond_signal(&p->done);
}

/* The walking thread waits (lock held) until at most `files` files are open and at most `jobs`
 * jobs queued, or a fatal error, or a tick: it delivers warnings and ticks meanwhile. */
static void wait_locked(struct kb_restore_pool *p, size_t files, size_t jobs)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += TICK_NSEC;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        p->wake_files = files;
        p->wake_jobs = jobs;
        p->walker_waiting = 1;
        pthread_cond_timedwait(&p->done, &p->lock, &ts);
        p->walker_waiting = 0;
        deliver_locked(p);
        if (p->cfg.tick) {
                pthread_mutex_unlock(&p->lock);
                p->cfg.tick(p->cfg.arg);
                pthread_mutex_lock(&p->lock);
        }
}

static void set_fatal(struct kb_restore_pool *p, const struct kb_err *e)
{
        pthread_mutex_lock(&p->lock);
        if (atomic_load(&p->rc) == 0) {
                p->err = *e;
                atomic_store(&p->rc, e->code ? e->code : -EIO);
        }
        pthread_cond_broadcast(&p->done);
        pthread_mutex_unlock(&p->lock);
}

static int fatal_nomem(struct kb_restore_pool *p)
{
        struct kb_err e = {0};

        kb_err_set(&e, -ENOMEM, "out of memory");
        set_fatal(p, &e);
        return atomic_load(&p->rc);
}

/* Record a problem of f at file offset `at`; the lowest offset wins. */
static void file_problem(struct rfile *f, uint64_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void file_problem(struct rfile *f, uint64_t at, const char *fmt, ...)
{
        va_list ap;
        char *msg;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        pthread_mutex_lock(&f->p->lock);
        if (at < atomic_load(&f->bad_at)) {
                char *old = f->bad_msg;

                f->bad_msg = msg;
                atomic_store(&f->bad_at, at);
                msg = old;
        }
        pthread_mutex_unlock(&f->p->lock);
        free(msg);
}

static void meta_report(void *arg, const char *what, int errnum, int counted)
{
        struct rfile *f = arg;

        kb_restore_pool_warnf(f->p, counted, "%s: cannot restore metadata (%s): %s", f->path, what,
                              strerror(errnum));
}

/* --- data ranges --------------------------------------------------------------------------- */

/* The file's data ranges, checked against its size. Returns the count or -1 when inconsistent. */
static ssize_t file_extents(const Kbackup__Node *n, Kbackup__Extent *one, Kbackup__Extent ***out)
{
        uint64_t prev_end = 0;

        if (!n->sparse) {
                one->offset = 0;
                one->length = n->size;
                *out = NULL;
                return n->size ? 1 : 0;
        }
        for (size_t i = 0; i < n->n_extents; i++) {
                const Kbackup__Extent *e = n->extents[i];

                if (e->offset < prev_end || e->length > UINT64_MAX - e->offset ||
                    e->offset + e->length > n->size)
                        return -1;
                prev_end = e->offset + e->length;
        }
        *out = n->extents;
        return (ssize_t)n->n_extents;
}

static const Kbackup__Extent *ext_at(const struct rfile *f, size_t i)
{
        return f->ext ? f->ext[i] : &f->one;
}

/* Step over used-up and empty extents. */
static void cursor_norm(const struct rfile *f, struct cursor *c)
{
        while (c->ei < f->next && ext_at(f, c->ei)->length == c->epos) {
                c->ei++;
                c->epos = 0;
        }
}

/* File offset of the next content byte (the file size once every range is used up). */
static uint64_t cursor_at(const struct rfile *f, const struct cursor *c)
{
        return c->ei < f->next ? ext_at(f, c->ei)->offset + c->epos : f->n->size;
}

/* Move over len content bytes; returns 1 when the ranges end first. */
static int cursor_advance(const struct rfile *f, struct cursor *c, uint64_t len)
{
        while (len) {
                uint64_t k;

                cursor_norm(f, c);
                if (c->ei >= f->next)
                        return 1;
                k = ext_at(f, c->ei)->length - c->epos;
                if (k > len)
                        k = len;
                c->epos += k;
                len -= k;
        }
        return 0;
}

/* --- workers ------------------------------------------------------------------------------- */

static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
        while (n) {
                ssize_t w = pwrite(fd, p, n, (off_t)off);

                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += w;
                n -= (size_t)w;
                off += (uint64_t)w;
        }
        return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
        return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Zeros (n bytes of them at `zeros`) onto a device at off. The whole pages inside become one
 * zeroed range, which a thin or loop device does without writing them (blkdev_issue_zeroout
 * writes zeros itself where the device has no better way); the partial pages at the edges, which
 * other workers' chunks share, are written like data. */
static int zero_device(int fd, const uint8_t *zeros, size_t n, uint64_t off)
{
        uint64_t lo = (off + ZERO_ALIGN - 1) / ZERO_ALIGN * ZERO_ALIGN;
        uint64_t hi = (off + n) / ZERO_ALIGN * ZERO_ALIGN;
        int rc;

        if (hi <= lo || fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)lo,
                                  (off_t)(hi - lo)) < 0)
                return pwrite_all(fd, zeros, n, off);
        rc = pwrite_all(fd, zeros, (size_t)(lo - off), off);
        if (rc == 0)
                rc = pwrite_all(fd, zeros, (size_t)(off + n - hi), hi);
        return rc;
}

/* Write one chunk's bytes from cursor c on. Returns 0, or -1 when the job must stop. */
static int write_chunk(struct rfile *f, struct cursor *c, const uint8_t *data, size_t len)
{
        struct kb_restore_pool *p = f->p;
        /* A new file reads as zeros where nothing was written: a run of zeros becomes a hole
         * (files recorded as sparse keep the holes they had and nothing more). */
        int hole = !f->n->sparse && all_zero(data, len);

        while (len) {
                const Kbackup__Extent *x;
                uint64_t k;
                int rc;

                cursor_norm(f, c);
                if (c->ei >= f->next)
                        return 0; /* the rest does not fit: the walker reported it */
                x = ext_at(f, c->ei);
                k = x->length - c->epos;
                if (k > len)
                        k = len;
                if (!hole || p->cfg.device) {
                        uint64_t end = x->offset + c->epos + k, seen = atomic_load(&f->end);

                        rc = hole ? zero_device(f->fd, data, (size_t)k, x->offset + c->epos)
                                  : pwrite_all(f->fd, data, (size_t)k, x->offset + c->epos);
                        while (rc == 0 && end > seen &&
                               !atomic_compare_exchange_weak(&f->end, &seen, end)) {
                        }
                        if (rc == -ENOSPC || rc == -EDQUOT || rc == -EROFS) {
                                struct kb_err e = {0};

                                kb_err_sys(&e, rc, "%s: cannot write", f->path);
                                set_fatal(p, &e);
                                return -1;
                        }
                        if (rc < 0) {
                                file_problem(f, x->offset + c->epos, "%s: cannot write: %s",
                                             f->path, strerror(-rc));
                                return -1;
                        }
                }
                data += k;
                len -= (size_t)k;
                c->epos += k;
                atomic_fetch_add(&p->bytes, k);
        }
        return 0;
}

/* The mode to create n with, and *meta: the kb_fsmeta_apply steps that are then left. A file
 * created with its recorded permission bits is what it will be from its first moment, so chown and
 * chmod would change nothing (two of the six system calls of a small file). That holds when
 * owners are not restored (the file stays the restoring user's), or when they are and the recorded
 * owner is the one creating it, in a directory of its group (a new file takes the directory's
 * group under setgid or the grpid mount option). Otherwise the file is created 0600 and gets its
 * owner before its bits, so nobody else can read it meanwhile. */
static mode_t create_mode(const struct kb_restore_pool *p, const struct kb_restore_group *g,
                          const Kbackup__Node *n, int *meta)
{
        mode_t bits = n->mode & 0777;

        *meta = p->cfg.owner ? KB_FSMETA_OWNER : 0;
        if (!p->umask_known)
                return 0600;
        if (p->cfg.owner) {
                if (n->uid != p->euid || n->gid != p->egid || !g->gid_ok)
                        return 0600;
                *meta = 0;
        }
        /* Special bits, and bits the umask takes away, still need the chmod. */
        if ((bits & ~p->umask) == (n->mode & 07777))
                *meta |= KB_FSMETA_MODE_SET;
        return bits;
}

/* Create a new file in g's directory; an entry already there is reported, never overwritten.
 * Returns the descriptor or FD_FAILED; sets *meta as create_mode. */
static int create_at(struct kb_restore_pool *p, struct kb_restore_group *g, const char *name,
                     const Kbackup__Node *n, const char *path, int *meta)
{
        mode_t mode = create_mode(p, g, n, meta);
        int fd = openat(g->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);

        if (fd >= 0)
                return fd;
        if (errno == EEXIST)
                kb_restore_pool_warnf(p, 1, "%s: already exists in the target, not overwritten",
                                      path);
        else
                kb_restore_pool_warnf(p, 1, "%s: cannot create: %s", path, strerror(errno));
        return FD_FAILED;
}

/* Create a file handed over by name. A file of one job (kb_restore_pool_create sees to that) has
 * only that job, or its finish, to run this: never two threads at once. Returns 0 when f->fd is
 * open. */
static int file_create(struct rfile *f)
{
        if (f->fd == FD_LATER)
                f->fd = create_at(f->p, f->g, f->name, f->n, f->path, &f->meta);
        return f->fd >= 0 ? 0 : -1;
}

static void run_job(struct job *j, struct kb_buf *buf)
{
        struct rfile *f = j->f;
        struct kb_restore_pool *p = f->p;
        struct cursor c = j->at;
        size_t i = j->first;

        if (file_create(f) < 0)
                goto unwant;
        for (; i < j->end; i++) {
                const uint8_t *id = f->n->content[i].data;
                struct kb_err e = {0};
                uint64_t at;
                int rc;

                cursor_norm(f, &c);
                at = cursor_at(f, &c);
                /* Past a problem nothing is kept, and after a fatal error nothing matters. */
                if (atomic_load(&p->rc) || at >= atomic_load(&f->bad_at))
                        break;
                kb_buf_reset(buf);
                rc = kb_pack_reader_load(p->reader, id, buf, &e);
                if (rc == -ENOMEM) {
                        fatal_nomem(p);
                        i++;
                        break;
                }
                if (rc < 0) {
                        file_problem(f, at, "%s: damaged data at offset %llu: %s", f->path,
                                     (unsigned long long)at, e.msg);
                        i++;
                        break;
                }
                if (write_chunk(f, &c, buf->data, buf->len) < 0) {
                        i++;
                        break;
                }
        }
unwant:
        /* The chunks left unread must not draw later reads over them. */
        for (; i < j->end; i++)
                kb_pack_reader_unwant(p->reader, f->n->content[i].data);
}

static void group_put(struct kb_restore_group *g)
{
        struct kb_restore_pool *p = g->p;
        int last;

        pthread_mutex_lock(&p->lock);
        last = --g->refs == 0;
        pthread_mutex_unlock(&p->lock);
        if (last) {
                if (g->release)
                        g->release(g->arg, g->dirfd);
                if (g->dirfd >= 0)
                        close(g->dirfd);
                free(g);
        }
}

/* The problem at the lowest offset of f, as its one warning. */
static void report_problem(struct rfile *f)
{
        if (f->bad_msg)
                queue_warning(f->p, 1, f->bad_msg);
        else
                kb_restore_pool_warnf(f->p, 1, "%s: damaged", f->path);
        f->bad_msg = NULL;
}

/* A device keeps its size and node, and its bytes count as restored only once on the device:
 * the page cache of a block device is lost with the node that restores it. */
static void device_finish(struct rfile *f, int ok)
{
        struct kb_restore_pool *p = f->p;

        if (!ok)
                report_problem(f);
        if (fsync(f->fd) < 0 && ok)
                kb_restore_pool_warnf(p, 1, "%s: cannot write: %s", f->path, strerror(errno));
        else if (ok)
                atomic_fetch_add(&p->files, 1);
        close(f->fd);
}

/* Every job of f is done: size, metadata, close. */
static void file_finish(struct rfile *f)
{
        struct kb_restore_pool *p = f->p;
        uint64_t bad = atomic_load(&f->bad_at);
        int ok = bad == NO_PROBLEM;

        /* A file without content (or a problem before its first chunk) had no job to create it;
         * one that could not be created was reported and is not one of the files restored. */
        if (p->cfg.device && f->fd >= 0) {
                device_finish(f, ok);
        } else if (atomic_load(&p->rc) == 0 && file_create(f) == 0) {
                /* Extends over a trailing hole (or zero run) without writing zeros; most files
                 * already have their size (one system call less per file). */
                if (ok && atomic_load(&f->end) != f->n->size &&
                    ftruncate(f->fd, (off_t)f->n->size) < 0) {
                        kb_restore_pool_warnf(p, 1, "%s: cannot set size: %s", f->path,
                                              strerror(errno));
                        ok = 0;
                }
                if (bad != NO_PROBLEM) {
                        /* Later jobs may have written past the damage: keep what comes before. */
                        if (ftruncate(f->fd, (off_t)bad) < 0) {
                                /* The damage is reported below; the size is wrong anyway. */
                        }
                        report_problem(f);
                }
                kb_fsmeta_apply(f->fd, -1, NULL, f->n, f->meta | (ok ? KB_FSMETA_TIMES : 0),
                                meta_report, f);
                if (close(f->fd) < 0 && ok)
                        kb_restore_pool_warnf(p, 1, "%s: cannot write: %s", f->path,
                                              strerror(errno));
                atomic_fetch_add(&p->files, 1);
        } else if (f->fd >= 0) {
                close(f->fd);
        }
        if (f->g)
                group_put(f->g);
        free(f->bad_msg);
        free(f);
        pthread_mutex_lock(&p->lock);
        p->files_open--;
        wake_walker_locked(p);
        pthread_mutex_unlock(&p->lock);
}

static void file_put(struct rfile *f)
{
        struct kb_restore_pool *p = f->p;
        int last;

        pthread_mutex_lock(&p->lock);
        last = --f->refs == 0;
        pthread_mutex_unlock(&p->lock);
        if (last)
                file_finish(f);
}

static void *worker(void *arg)
{
        struct kb_restore_pool *p = arg;
        struct kb_buf buf = KB_BUF_INIT;

        for (;;) {
                struct job *j;

                pthread_mutex_lock(&p->lock);
                while (!p->head && !p->stop) {
                        p->idle++;
                        pthread_cond_wait(&p->work, &p->lock);
                        p->idle--;
                }
                j = p->head;
                if (!j) {
                        pthread_mutex_unlock(&p->lock);
                        break;
                }
                p->head = j->next;
                if (!p->head)
                        p->tail = NULL;
                p->queued--;
                wake_walker_locked(p);
                pthread_mutex_unlock(&p->lock);

                run_job(j, &buf);
                file_put(j->f);
                free(j);
        }
        kb_buf_free(&buf);
        kb_repo_zstd_release_thread(p->cfg.repo);
        return NULL;
}

/* --- the walking thread's side ------------------------------------------------------------- */

static size_t files_budget(size_t want)
{
        struct rlimit rl;

        if (!want)
                want = DEFAULT_FILES;
        /* Leave room for the directory stack, the backend and the caller, and for a directory
         * descriptor (its group's) per open file. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
                rlim_t spare = rl.rlim_cur > 256 ? (rl.rlim_cur - 192) / 3 : 4;

                if (want > spare)
                        want = (size_t)spare;
        }
        return want < 4 ? 4 : want;
}

int kb_restore_pool_new(const struct kb_restore_pool_cfg *cfg, struct kb_restore_pool **out,
                        struct kb_err *err)
{
        struct kb_restore_pool *p = calloc(1, sizeof(*p));
        pthread_condattr_t ca;
        unsigned threads = cfg->threads;
        int rc;

        if (!p)
                return kb_err_set(err, -ENOMEM, "out of memory");
        if (threads == 0)
                threads = kb_cpus_available();
        if (threads > POOL_MAX_THREADS)
                threads = POOL_MAX_THREADS;
        p->cfg = *cfg;
        p->max_files = files_budget(cfg->max_files);
        p->euid = geteuid();
        p->egid = getegid();
        p->umask_known = kb_fsmeta_umask(&p->umask) == 0;
        rc = kb_pack_reader_new(cfg->repo,
                                threads + 2 < READ_WINDOWS_MAX ? threads + 2 : READ_WINDOWS_MAX,
                                READ_WINDOW, &p->reader, err);
        if (rc < 0) {
                free(p);
                return rc;
        }
        p->warn_tail = &p->warn_head;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->work, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&p->done, &ca);
        pthread_condattr_destroy(&ca);
        for (p->nthreads = 0; p->nthreads < threads; p->nthreads++)
                if (pthread_create(&p->threads[p->nthreads], NULL, worker, p) != 0)
                        break;
        if (p->nthreads == 0) {
                kb_restore_pool_free(p, NULL);
                return kb_err_set(err, -EAGAIN, "cannot start worker threads");
        }
        *out = p;
        return 0;
}

static int status_locked(struct kb_restore_pool *p, struct kb_err *err)
{
        int rc = atomic_load(&p->rc);

        if (rc < 0 && err)
                *err = p->err;
        return rc;
}

int kb_restore_pool_poll(struct kb_restore_pool *p, struct kb_err *err)
{
        int rc;

        /* Called for every entry: nothing to deliver and no error is the common case. */
        if (!atomic_load(&p->warned) && !atomic_load(&p->rc))
                return 0;
        pthread_mutex_lock(&p->lock);
        deliver_locked(p);
        rc = status_locked(p, err);
        pthread_mutex_unlock(&p->lock);
        return rc;
}

int kb_restore_pool_wait(struct kb_restore_pool *p, struct kb_err *err)
{
        int rc;

        pthread_mutex_lock(&p->lock);
        while (p->files_open)
                wait_locked(p, 0, SIZE_MAX);
        deliver_locked(p);
        rc = status_locked(p, err);
        pthread_mutex_unlock(&p->lock);
        return rc;
}

int kb_restore_pool_free(struct kb_restore_pool *p, struct kb_err *err)
{
        int rc;

        if (!p)
                return 0;
        kb_restore_pool_wait(p, NULL);
        pthread_mutex_lock(&p->lock);
        p->stop = 1;
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->lock);
        for (unsigned i = 0; i < p->nthreads; i++)
                pthread_join(p->threads[i], NULL);
        rc = kb_restore_pool_poll(p, err);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->work);
        pthread_cond_destroy(&p->done);
        kb_pack_reader_free(p->reader);
        free(p);
        return rc;
}

void kb_restore_pool_stats(struct kb_restore_pool *p, uint64_t *files, uint64_t *bytes,
                           unsigned *threads)
{
        *threads = p->nthreads;
        *files = atomic_load(&p->files);
        *bytes = atomic_load(&p->bytes);
}

struct kb_restore_group *kb_restore_group_new(struct kb_restore_pool *p, int dirfd,
                                              void (*release)(void *, int), void *arg)
{
        struct kb_restore_group *g = calloc(1, sizeof(*g));
        struct stat st;

        if (!g) {
                if (dirfd >= 0)
                        close(dirfd);
                return NULL;
        }
        g->p = p;
        g->refs = 1;
        g->dirfd = dirfd;
        g->gid_ok = dirfd >= 0 && fstat(dirfd, &st) == 0 && st.st_gid == p->egid;
        g->release = release;
        g->arg = arg;
        return g;
}

void kb_restore_group_close(struct kb_restore_group *g)
{
        if (g)
                group_put(g);
}

/* Queue a job; it holds a reference to its file. Returns 0 or the fatal error (j freed). */
static int submit(struct kb_restore_pool *p, struct job *j)
{
        int rc;

        pthread_mutex_lock(&p->lock);
        while (p->queued >= MAX_JOBS && !atomic_load(&p->rc))
                wait_locked(p, SIZE_MAX, MAX_JOBS - MAX_JOBS / 4);
        rc = atomic_load(&p->rc);
        if (rc < 0) {
                pthread_mutex_unlock(&p->lock);
                free(j);
                return rc;
        }
        j->f->refs++;
        if (p->tail)
                p->tail->next = j;
        else
                p->head = j;
        p->tail = j;
        p->queued++;
        /* Signalling a condition nobody waits on still costs glibc a lot of bookkeeping. */
        if (p->idle)
                pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->lock);
        return 0;
}

/* Cut the chunk list into jobs. Problems found in the node itself end the list early. */
static void split_jobs(struct rfile *f)
{
        struct kb_restore_pool *p = f->p;
        const Kbackup__Node *n = f->n;
        struct cursor c = {0, 0};
        struct job *j = NULL;
        uint64_t jbytes = 0;
        size_t i;

        for (i = 0; i < n->n_content; i++) {
                const uint8_t *id = n->content[i].data;
                struct kb_err e = {0};
                uint32_t len;
                uint64_t at;

                cursor_norm(f, &c);
                at = cursor_at(f, &c);
                if (n->content[i].len != KB_ID_LEN) {
                        file_problem(f, at, "%s: damaged metadata at offset %llu: bad chunk id",
                                     f->path, (unsigned long long)at);
                        break;
                }
                if (kb_pack_reader_want(p->reader, id, &len, &e) < 0) {
                        file_problem(f, at, "%s: damaged data at offset %llu: %s", f->path,
                                     (unsigned long long)at, e.msg);
                        break;
                }
                if (c.ei >= f->next) {
                        kb_pack_reader_unwant(p->reader, id);
                        file_problem(f, at, "%s: damaged metadata: content longer than the file",
                                     f->path);
                        break;
                }
                if (!j) {
                        j = calloc(1, sizeof(*j));
                        if (!j) {
                                fatal_nomem(p);
                                return;
                        }
                        j->f = f;
                        j->first = i;
                        j->at = c;
                }
                j->end = i + 1;
                jbytes += len;
                if (cursor_advance(f, &c, len)) {
                        /* The job writes the part that fits. */
                        file_problem(f, n->size,
                                     "%s: damaged metadata: content longer than the file", f->path);
                        break;
                }
                if (jbytes >= JOB_BYTES) {
                        if (submit(p, j) < 0)
                                return;
                        j = NULL;
                        jbytes = 0;
                }
        }
        if (i == n->n_content) {
                cursor_norm(f, &c);
                if (c.ei < f->next)
                        file_problem(f, cursor_at(f, &c),
                                     "%s: damaged metadata: content shorter than the file",
                                     f->path);
        }
        if (j)
                submit(p, j);
}

/* Hand over a file: fd open, or FD_LATER with its name in g's directory. */
static int hand_over(struct kb_restore_pool *p, struct kb_restore_group *g, int fd, int meta,
                     const char *name, const Kbackup__Node *n, const char *path, struct kb_err *err)
{
        size_t plen = strlen(path), nlen = name ? strlen(name) : 0;
        struct rfile *f = calloc(1, sizeof(*f) + plen + 1 + nlen + 1);
        ssize_t next;
        int rc;

        if (!f) {
                if (fd >= 0)
                        close(fd);
                fatal_nomem(p);
                return kb_restore_pool_poll(p, err);
        }
        memcpy(f->path, path, plen + 1);
        if (name) {
                f->name = f->path + plen + 1;
                memcpy(f->path + plen + 1, name, nlen + 1);
        }
        f->p = p;
        f->g = g;
        f->n = n;
        f->fd = fd;
        f->meta = meta;
        f->refs = 1;
        atomic_init(&f->bad_at, NO_PROBLEM);

        pthread_mutex_lock(&p->lock);
        while (p->files_open >= p->max_files && !atomic_load(&p->rc))
                wait_locked(p, p->max_files - p->max_files / 4, SIZE_MAX);
        rc = status_locked(p, err);
        if (rc < 0) {
                pthread_mutex_unlock(&p->lock);
                if (fd >= 0)
                        close(fd);
                free(f);
                return rc;
        }
        p->files_open++;
        if (g)
                g->refs++;
        pthread_mutex_unlock(&p->lock);

        next = file_extents(n, &f->one, &f->ext);
        if (next < 0)
                file_problem(f, 0, "%s: damaged metadata: data ranges do not fit the file size",
                             path);
        else {
                f->next = (size_t)next;
                split_jobs(f);
        }
        file_put(f);
        return kb_restore_pool_poll(p, err);
}

int kb_restore_pool_file(struct kb_restore_pool *p, struct kb_restore_group *g, int fd,
                         const Kbackup__Node *n, const char *path, struct kb_err *err)
{
        return hand_over(p, g, fd, p->cfg.owner ? KB_FSMETA_OWNER : 0, NULL, n, path, err);
}

int kb_restore_pool_create(struct kb_restore_pool *p, struct kb_restore_group *g, const char *name,
                           const Kbackup__Node *n, const char *path, struct kb_err *err)
{
        int fd, meta;

        /* A file of more than one job is created here, so that each job finds it open. Its
         * content is at most its size, and a job takes JOB_BYTES. */
        if (n->size > JOB_BYTES) {
                fd = create_at(p, g, name, n, path, &meta);
                if (fd < 0)
                        return kb_restore_pool_poll(p, err);
                return hand_over(p, g, fd, meta, NULL, n, path, err);
        }
        return hand_over(p, g, FD_LATER, 0, name, n, path, err);
}
