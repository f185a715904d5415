/* bbolt.h - a read-only reader of the bbolt file format (etcd's backend database), for looking
 * inside stored etcd snapshots without restoring them.
 *
 * The reader never trusts the file: every page id, element offset, length and overflow count is
 * checked against the source size before use, pages are visited at most once per walk, and the
 * tree depth is bounded, so a corrupt or hostile file gives KB_ECORRUPT with a message and never
 * a crash, a hang or an allocation larger than the file. The format is documented in
 * docs/etcd-format.md.
 *
 * It reads through a random-access source callback, so it runs directly over the chunks of a
 * stored snapshot (see etcd_keyspace.h) as well as over a plain file or a memory buffer. */
#ifndef KB_BBOLT_H
#define KB_BBOLT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

/* Reads exactly len bytes at off (the reader never asks beyond size); 0 or a negative code with
 * err filled. */
typedef int (*kb_bbolt_read_fn)(void *arg, uint64_t off, void *buf, size_t len, struct kb_err *err);

struct kb_bbolt_source {
        kb_bbolt_read_fn read;
        void (*close)(void *arg); /* may be NULL; called by kb_bbolt_close */
        void *arg;
        uint64_t size; /* bytes readable; a trailer beyond the database is harmless */
};

struct kb_bbolt;

/* Validate the meta pages and pick the newest valid one. Takes ownership of src: it is closed on
 * failure too. KB_EFORMAT when this is not a bbolt file at all, KB_ECORRUPT when it is damaged. */
int kb_bbolt_open(const struct kb_bbolt_source *src, struct kb_bbolt **out, struct kb_err *err);
/* A plain file (a database, or `etcdctl snapshot save` output: the trailer is ignored). */
int kb_bbolt_open_file(const char *path, struct kb_bbolt **out, struct kb_err *err);
/* A buffer that outlives the reader (tests, the fuzzer). */
int kb_bbolt_open_mem(const void *data, size_t len, struct kb_bbolt **out, struct kb_err *err);
void kb_bbolt_close(struct kb_bbolt *db);

struct kb_bbolt_info {
        uint32_t page_size;
        uint64_t txid;       /* of the meta page in use */
        uint64_t high_water; /* pages in the database (meta "pgid") */
        uint64_t db_size;    /* high_water * page_size */
        uint64_t source_size;
};
void kb_bbolt_info(const struct kb_bbolt *db, struct kb_bbolt_info *out);

/* A bucket: either a B+tree rooted at a page or an inline leaf page held in its parent's value
 * (copied here). Initialise with KB_BBOLT_BUCKET_INIT; free with kb_bbolt_bucket_free. */
struct kb_bbolt_bucket {
        uint64_t root;        /* root page id; 0 for an inline bucket */
        uint8_t *inline_page; /* owned copy of the inline page, or NULL */
        size_t inline_len;
        uint64_t inline_off; /* where the inline page lies in the source */
};
#define KB_BBOLT_BUCKET_INIT                                                                       \
        {                                                                                          \
                0, NULL, 0, 0                                                                      \
        }
void kb_bbolt_bucket_free(struct kb_bbolt_bucket *b);

/* Open the bucket `name` inside parent (NULL: the root bucket, where etcd keeps "key", "meta",
 * ...). KB_ENOTFOUND when there is no such bucket (or the name holds a plain value). */
int kb_bbolt_bucket_open(struct kb_bbolt *db, const struct kb_bbolt_bucket *parent,
                         const void *name, size_t len, struct kb_bbolt_bucket *out,
                         struct kb_err *err);

/* One key/value of a bucket. Pointers are valid during the callback only. */
struct kb_bbolt_item {
        const uint8_t *key;
        size_t key_len;
        const uint8_t *value;
        size_t value_len;
        uint64_t
            value_off; /* where the value lies in the source: read it again with kb_bbolt_read */
        int is_bucket; /* the value is a nested bucket's header (and inline page) */
};

/* Non-zero return stops the walk; kb_bbolt_foreach then returns that value. */
typedef int (*kb_bbolt_item_cb)(const struct kb_bbolt_item *it, void *arg);

enum kb_bbolt_order {
        /* Keys in order: a depth-first walk (random page access). */
        KB_BBOLT_KEY_ORDER = 0,
        /* No particular key order: the tree is walked level by level, each level's pages in file
         * order, so a large bucket is read almost sequentially (cheap over stored chunks). */
        KB_BBOLT_FILE_ORDER = 1,
};

int kb_bbolt_foreach(struct kb_bbolt *db, const struct kb_bbolt_bucket *b,
                     enum kb_bbolt_order order, kb_bbolt_item_cb cb, void *arg, struct kb_err *err);

/* Look up one key (a scan: for small buckets such as etcd's "meta"). The value is appended to
 * out. KB_ENOTFOUND when absent. */
int kb_bbolt_get(struct kb_bbolt *db, const struct kb_bbolt_bucket *b, const void *key, size_t klen,
                 struct kb_buf *out, struct kb_err *err);

/* Bounds-checked raw read from the source (values found by a walk, read again later). */
int kb_bbolt_read(struct kb_bbolt *db, uint64_t off, void *buf, size_t len, struct kb_err *err);

#endif
