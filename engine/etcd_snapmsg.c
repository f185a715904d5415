/* etcd_snapmsg.c - a SnapshotResponse's blob handed on from the received message's own slices.
 *
 * The snapshot stream is the whole database in messages of ~32 KiB. Unpacking each one copied its
 * bytes twice (gRPC's readall into one slice, then protobuf-c into the blob field, both freshly
 * allocated) before the chunker copied them a third time. Only the blob is used, so the message's
 * wire format is walked here (tags and lengths only) and the blob goes to the callback in place,
 * one piece per slice it spans. */
#include "etcd_int.h"

#include <grpc/byte_buffer_reader.h>

#include "err.h"

#define FIELD_BLOB 3 /* SnapshotResponse.blob (proto/etcd.proto) */

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

#define VARINT_MAX_BYTES 10

/* A read position in a message's slices. */
struct pos {
        grpc_byte_buffer_reader r;
        const uint8_t *p, *end; /* what is left of the current slice */
        uint64_t at;            /* offset in the message */
};

/* Make p point at a byte; -1 at the end of the message. */
static int pos_fill(struct pos *s)
{
        grpc_slice *sl;

        while (s->p == s->end) {
                if (!grpc_byte_buffer_reader_peek(&s->r, &sl))
                        return -1;
                s->p = GRPC_SLICE_START_PTR(*sl);
                s->end = s->p + GRPC_SLICE_LENGTH(*sl);
        }
        return 0;
}

static int pos_varint(struct pos *s, uint64_t *v)
{
        *v = 0;
        for (int i = 0; i < VARINT_MAX_BYTES; i++) {
                uint8_t b;

                if (pos_fill(s) < 0)
                        return -1;
                b = *s->p++;
                s->at++;
                *v |= (uint64_t)(b & 0x7f) << (7 * i);
                if (!(b & 0x80))
                        return 0;
        }
        return -1;
}

static int pos_skip(struct pos *s, uint64_t n)
{
        while (n) {
                size_t k;

                if (pos_fill(s) < 0)
                        return -1;
                k = (uint64_t)(s->end - s->p) < n ? (size_t)(s->end - s->p) : (size_t)n;
                s->p += k;
                s->at += k;
                n -= k;
        }
        return 0;
}

/* Where the blob is: the last blob field, as protobuf has it for a field that is not repeated.
 * Every field is checked to lie within the message. */
static int find_blob(grpc_byte_buffer *bb, uint64_t *start, uint64_t *len)
{
        struct pos s = {0};
        int rc = 0;

        *start = *len = 0;
        if (!grpc_byte_buffer_reader_init(&s.r, bb))
                return KB_ECORRUPT;
        while (rc == 0 && pos_fill(&s) == 0) {
                uint64_t key, n;

                if (pos_varint(&s, &key) < 0 || key >> 3 == 0) {
                        rc = -1;
                        break;
                }
                if (key >> 3 == FIELD_BLOB && (key & 7) != WIRE_LEN) {
                        rc = -1;
                        break;
                }
                switch (key & 7) {
                case WIRE_VARINT:
                        rc = pos_varint(&s, &n);
                        break;
                case WIRE_FIXED64:
                        rc = pos_skip(&s, 8);
                        break;
                case WIRE_FIXED32:
                        rc = pos_skip(&s, 4);
                        break;
                case WIRE_LEN:
                        rc = pos_varint(&s, &n);
                        if (rc == 0 && key >> 3 == FIELD_BLOB) {
                                *start = s.at;
                                *len = n;
                        }
                        if (rc == 0)
                                rc = pos_skip(&s, n);
                        break;
                default: /* groups, or no wire type at all: not in this message */
                        rc = -1;
                }
        }
        grpc_byte_buffer_reader_destroy(&s.r);
        return rc < 0 ? KB_ECORRUPT : 0;
}

int kb_etcd_snapshot_blob(grpc_byte_buffer *bb, kb_etcd_stream_cb cb, void *arg, int *delivered,
                          int *cb_rc)
{
        grpc_byte_buffer_reader r;
        grpc_slice *sl;
        uint64_t start, len, at = 0;
        int rc = find_blob(bb, &start, &len);

        *cb_rc = 0;
        if (rc < 0 || len == 0)
                return rc;
        if (!grpc_byte_buffer_reader_init(&r, bb))
                return KB_ECORRUPT;
        while (*cb_rc == 0 && at < start + len && grpc_byte_buffer_reader_peek(&r, &sl)) {
                const uint8_t *p = GRPC_SLICE_START_PTR(*sl);
                uint64_t n = GRPC_SLICE_LENGTH(*sl), lo = at > start ? at : start;
                uint64_t hi = at + n < start + len ? at + n : start + len;

                if (lo < hi) {
                        *delivered = 1;
                        *cb_rc = cb(p + (lo - at), (size_t)(hi - lo), arg);
                }
                at += n;
        }
        grpc_byte_buffer_reader_destroy(&r);
        return 0;
}
