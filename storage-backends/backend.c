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
