/* backend.h - the narrow interface between the repository engine and where bytes are kept.
 *
 * A backend stores immutable, named objects grouped by type. The engine never rewrites or appends
 * to an object: put() either creates a whole object atomically or fails, so a reader (or a replica
 * such as a SnapMirror destination) never sees a partial object. Names are lowercase hex ids or
 * short fixed words; the backend decides how to lay them out (directories, key prefixes). A pack
 * is named by the SHA-256 of its bytes (the repository format), which a backend may use as the
 * body's hash instead of hashing 16 MiB again. */
#ifndef KB_BACKEND_H
#define KB_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

enum kb_obj_type {
        KB_OBJ_MARKER,   /* "kbackup": the plaintext format marker, the only unencrypted file */
        KB_OBJ_CONFIG,   /* "config": repository parameters, encrypted with the master key */
        KB_OBJ_KEY,      /* keys/<id>: the master key wrapped by a password-derived key */
        KB_OBJ_PACK,     /* data/<xx>/<id>: packs of encrypted chunks */
        KB_OBJ_INDEX,    /* index/<id>: chunk id -> pack, offset, length */
        KB_OBJ_SNAPSHOT, /* snapshots/<id>: immutable snapshot records */
        KB_OBJ_LOCK,     /* locks/<id>: lock records */
        KB_OBJ_TYPE_COUNT
};

/* The repository layout every backend shares (docs/repository-format.md): the folder (or key
 * prefix) of a type ("keys", "data", ...; NULL for the marker and config, which sit at the top),
 * and the word messages use for it ("pack", "snapshot", ...). */
const char *kb_obj_type_dir(enum kb_obj_type type);
const char *kb_obj_type_word(enum kb_obj_type type);

/* Called once per listed object; a non-zero return stops the listing and is returned by list(). */
typedef int (*kb_backend_list_cb)(const char *name, uint64_t size, void *arg);

struct kb_backend;

struct kb_backend_ops {
        /* Create object `name` with exactly these bytes, atomically and durably. An object that
         * already exists is left untouched and -EEXIST returned. */
        int (*put)(struct kb_backend *be, enum kb_obj_type type, const char *name, const void *data,
                   size_t len, struct kb_err *err);
        /* Read `len` bytes at `off` into out (appended); len == 0 reads to the end. A short
         * object gives -EIO (truncated), a missing one KB_ENOTFOUND. */
        int (*get)(struct kb_backend *be, enum kb_obj_type type, const char *name, uint64_t off,
                   size_t len, struct kb_buf *out, struct kb_err *err);
        /* Size of an object; KB_ENOTFOUND when it does not exist. */
        int (*stat)(struct kb_backend *be, enum kb_obj_type type, const char *name, uint64_t *size,
                    struct kb_err *err);
        int (*list)(struct kb_backend *be, enum kb_obj_type type, kb_backend_list_cb cb, void *arg,
                    struct kb_err *err);
        /* Remove an object; removing a missing object is not an error. */
        int (*remove)(struct kb_backend *be, enum kb_obj_type type, const char *name,
                      struct kb_err *err);
        void (*close)(struct kb_backend *be);
};

/* Every backend embeds this as its first member. */
struct kb_backend {
        const struct kb_backend_ops *ops;
        /* Set when the backend can only be read (a read-only mount, a SnapMirror destination). */
        int read_only;
};

/* Open the backend a location string names: a filesystem path (or "file:PATH"), or
 * "s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]".
 * `create` makes the location if missing (for init). */
int kb_backend_open(const char *location, int create, struct kb_backend **out, struct kb_err *err);

static inline int kb_backend_put(struct kb_backend *be, enum kb_obj_type t, const char *name,
                                 const void *data, size_t len, struct kb_err *err)
{
        return be->ops->put(be, t, name, data, len, err);
}

static inline int kb_backend_get(struct kb_backend *be, enum kb_obj_type t, const char *name,
                                 uint64_t off, size_t len, struct kb_buf *out, struct kb_err *err)
{
        return be->ops->get(be, t, name, off, len, out, err);
}

static inline int kb_backend_stat(struct kb_backend *be, enum kb_obj_type t, const char *name,
                                  uint64_t *size, struct kb_err *err)
{
        return be->ops->stat(be, t, name, size, err);
}

static inline int kb_backend_list(struct kb_backend *be, enum kb_obj_type t, kb_backend_list_cb cb,
                                  void *arg, struct kb_err *err)
{
        return be->ops->list(be, t, cb, arg, err);
}

static inline int kb_backend_remove(struct kb_backend *be, enum kb_obj_type t, const char *name,
                                    struct kb_err *err)
{
        return be->ops->remove(be, t, name, err);
}

static inline void kb_backend_close(struct kb_backend *be)
{
        if (be)
                be->ops->close(be);
}

/* Filesystem backend (local disk, NFS). */
int kb_fs_backend_open(const char *path, int create, struct kb_backend **out, struct kb_err *err);

/* S3 backend: "s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]"; credentials and options come from the
 * environment (docs/s3.md). Opening only reads; `create` also makes a missing bucket. */
int kb_s3_backend_open(const char *location, int create, struct kb_backend **out,
                       struct kb_err *err);
/* Remove many objects of one type in batches of 1000 (S3 Multi-Object Delete), for prune;
 * missing objects are not an error. KB_EUSAGE when `be` is not an S3 backend. */
int kb_s3_delete_many(struct kb_backend *be, enum kb_obj_type type, const char *const *names,
                      size_t n, struct kb_err *err);

#endif
