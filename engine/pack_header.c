/* pack_header.c - read a stored pack's trailing header (the list of its blobs) without reading
 * the pack: shared by check, which compares it with the index, and by adoption, which indexes
 * packs an interrupted backup wrote but never named in an index file. */
#include "repo_internal.h"

#include <errno.h>
#include <string.h>

/* One ranged read usually covers the length word and the whole header. */
#define TAIL_READ (64u << 10)

static uint32_t le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int kb_pack_header_read(struct kb_repo *r, const char *name, uint64_t size,
                        Kbackup__PackHeader **out, uint32_t *hlen_out, struct kb_err *err)
{
        struct kb_buf tail = KB_BUF_INIT, more = KB_BUF_INIT, plain = KB_BUF_INIT;
        const uint8_t *hdr;
        uint64_t want;
        uint32_t hlen;
        int rc;

        *out = NULL;
        if (size < 4 + KB_SEAL_OVERHEAD)
                return kb_err_set(err, KB_ECORRUPT, "%llu bytes is too short to be a pack",
                                  (unsigned long long)size);
        want = size < TAIL_READ ? size : TAIL_READ;
        rc = kb_backend_get(r->be, KB_OBJ_PACK, name, size - want, (size_t)want, &tail, err);
        if (rc < 0) {
                kb_err_prefix(err, "cannot read its header: ");
                goto out;
        }
        hlen = le32(tail.data + tail.len - 4);
        if ((uint64_t)hlen + 4 > size || hlen < KB_SEAL_OVERHEAD) {
                rc = kb_err_set(err, KB_ECORRUPT, "its header length (%u) does not fit (damaged)",
                                hlen);
                goto out;
        }
        if ((uint64_t)hlen + 4 <= tail.len) {
                hdr = tail.data + tail.len - 4 - hlen;
        } else {
                rc = kb_backend_get(r->be, KB_OBJ_PACK, name, size - 4 - hlen, hlen, &more, err);
                if (rc < 0) {
                        kb_err_prefix(err, "cannot read its header: ");
                        goto out;
                }
                hdr = more.data;
        }
        rc = kb_crypto_open(r->master.enc_key, hdr, hlen, &plain);
        if (rc == -ENOMEM) {
                kb_err_set(err, rc, "out of memory");
                goto out;
        }
        if (rc < 0) {
                rc = kb_err_set(err, KB_ECORRUPT, "its header does not authenticate (damaged)");
                goto out;
        }
        *out = kbackup__pack_header__unpack(NULL, plain.len, plain.data);
        if (!*out) {
                rc = kb_err_set(err, KB_ECORRUPT, "its header does not parse (damaged)");
                goto out;
        }
        if (hlen_out)
                *hlen_out = hlen;
out:
        kb_buf_free(&tail);
        kb_buf_free(&more);
        kb_buf_free(&plain);
        return rc;
}
