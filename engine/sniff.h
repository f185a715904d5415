/* sniff.h - recognising data that is already compressed from its first bytes, so that the chunks
 * of a gzip, xz or zstd file, a JPEG or a PNG are stored as they are without paying zstd to find
 * out (volume_file.c asks about a file's first bytes; KB_SAVE_NO_COMPRESS, repo.h). */
#ifndef KB_SNIFF_H
#define KB_SNIFF_H

#include <stddef.h>

/* 1 when p[0..len) starts with the signature of a format whose body is entropy-coded (gzip, xz,
 * zstd, bzip2, lz4 frame, 7z, PNG, JPEG), 0 otherwise. Containers that may hold stored members
 * (zip, tar) are not listed. A false positive only costs compression of that one file. */
int kb_sniff_compressed(const void *p, size_t len);

#endif
