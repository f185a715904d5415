/* lock.h - repository locks: shared for writers and readers of data (backup, restore, check),
 * exclusive for what deletes (forget, prune).
 *
 * A lock is an object locks/<id> naming its holder (host, pid, time). Objects are never rewritten,
 * so a held lock is refreshed by writing a new record and removing the old one, from a background
 * thread. A lock is stale when its holder is a dead process on this host, or when it was not
 * refreshed for `stale_ms`; stale locks do not block anyone and `kbackup unlock` removes them. A
 * holder that finds its own lock lost (removed, or not refreshed in time) stops: the repository
 * refuses to record a snapshot, and prune checks before it deletes. docs/operations.md has the
 * argument for why this keeps a concurrent backup safe from prune. */
#ifndef KB_LOCK_H
#define KB_LOCK_H

#include <stddef.h>
#include <stdint.h>

#include "crypto.h"
#include "err.h"
#include "repo.h"

#define KB_LOCK_DEFAULT_STALE_MS (30ull * 60 * 1000)

struct kb_lock;

struct kb_lock_opts {
        int exclusive;
        const char *command; /* recorded for people reading `kbackup unlock` output */
        uint64_t wait_ms;    /* retry a conflicting lock this long (0: fail at once) */
        uint64_t stale_ms;   /* 0: KB_LOCK_DEFAULT_STALE_MS */
        uint64_t refresh_ms; /* 0: stale_ms / 6 */
        /* Messages while acquiring: waiting for a holder, ignoring a stale lock. */
        void (*notify)(const char *msg, void *arg);
        void *arg;
};

/* Take a lock. On a read-only repository nothing is written: returns 0 with *out NULL. When
 * another holder conflicts after wait_ms, fails with -EBUSY naming it. */
int kb_lock_acquire(struct kb_repo *r, const struct kb_lock_opts *o, struct kb_lock **out,
                    struct kb_err *err);

/* Is the lock still held? -ESTALE when it was removed or could not be refreshed in time. */
int kb_lock_check(struct kb_lock *l, struct kb_err *err);

/* Stop refreshing and remove the lock object. NULL is fine. Call before kb_repo_close. */
int kb_lock_release(struct kb_lock *l, struct kb_err *err);

struct kb_lock_info {
        char name[KB_ID_HEX_LEN + 1];
        int readable; /* 0: the record does not open or parse (it counts as stale) */
        int exclusive;
        char host[256];
        char user[64];
        char command[32];
        int64_t pid;
        int64_t created_ns, time_ns;
        int stale;
        char state[160]; /* why it is stale, or that it is active */
};

/* Every lock record with its state as seen from here. Free *out with free(). */
int kb_lock_list(struct kb_repo *r, uint64_t stale_ms, struct kb_lock_info **out, size_t *n,
                 struct kb_err *err);
int kb_lock_remove(struct kb_repo *r, const char *name, struct kb_err *err);

/* Write a lock record as another holder would have (tests: a lock of another host, or one not
 * refreshed for a while). Not used by kbackup itself. */
int kb_lock_write_record(struct kb_repo *r, const Kbackup__Lock *rec, char name[KB_ID_HEX_LEN + 1],
                         struct kb_err *err);

#endif
