/* backend.c - turn a repository location string into an open backend.
 *
 * "PATH", "file:PATH" and "file://PATH" name a directory (local disk or NFS);
 * "s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]" names a key prefix in an S3 bucket. */
#include "backend.h"

#include <string.h>

int kb_backend_open(const char *location, int create, struct kb_backend **out, struct kb_err *err)
{
        const char *path = location;

        *out = NULL;
        if (!location || !location[0])
                return kb_err_set(err, KB_EUSAGE, "no repository location given");
        if (strncmp(location, "s3:", 3) == 0)
                return kb_s3_backend_open(location, create, out, err);
        if (strncmp(location, "file://", 7) == 0)
                path = location + 7;
        else if (strncmp(location, "file:", 5) == 0)
                path = location + 5;
        if (!path[0])
                return kb_err_set(err, KB_EUSAGE, "repository location \"%s\" has no path",
                                  location);
        return kb_fs_backend_open(path, create, out, err);
}

static const char *const type_dir[KB_OBJ_TYPE_COUNT] = {
    [KB_OBJ_KEY] = "keys",           [KB_OBJ_PACK] = "data",  [KB_OBJ_INDEX] = "index",
    [KB_OBJ_SNAPSHOT] = "snapshots", [KB_OBJ_LOCK] = "locks",
};

static const char *const type_word[KB_OBJ_TYPE_COUNT] = {
    [KB_OBJ_MARKER] = "repository file",
    [KB_OBJ_CONFIG] = "repository file",
    [KB_OBJ_KEY] = "key",
    [KB_OBJ_PACK] = "pack",
    [KB_OBJ_INDEX] = "index",
    [KB_OBJ_SNAPSHOT] = "snapshot",
    [KB_OBJ_LOCK] = "lock",
};

const char *kb_obj_type_dir(enum kb_obj_type type)
{
        return (unsigned)type < KB_OBJ_TYPE_COUNT ? type_dir[type] : NULL;
}

const char *kb_obj_type_word(enum kb_obj_type type)
{
        return (unsigned)type < KB_OBJ_TYPE_COUNT ? type_word[type] : "object";
}
