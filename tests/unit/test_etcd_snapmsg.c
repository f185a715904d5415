/* test_etcd_snapmsg.c - the snapshot stream's blob found in place in a message's slices: the
 * same bytes protobuf-c unpacks, wherever the slices are cut, and malformed messages refused
 * before the callback sees anything. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "etcd_int.h"

static void setup(void)
{
        grpc_init();
}

static void teardown(void)
{
        grpc_shutdown();
}

TestSuite(snapmsg, .init = setup, .fini = teardown);

struct got {
        uint8_t data[4096];
        size_t len, calls;
        int fail_at; /* return -EIO on this call (1-based), 0: never */
};

static int got_cb(const uint8_t *d, size_t n, void *arg)
{
        struct got *g = arg;

        cr_assert(n > 0, "empty piece");
        cr_assert(g->len + n <= sizeof(g->data));
        memcpy(g->data + g->len, d, n);
        g->len += n;
        if (++g->calls == (size_t)g->fail_at)
                return -EIO;
        return 0;
}

/* msg cut at the given offsets (ascending) into slices, then parsed. */
static int parse_cut(const uint8_t *msg, size_t len, const size_t *cuts, size_t ncuts,
                     struct got *g, int *delivered, int *cb_rc)
{
        grpc_slice s[8];
        size_t from = 0, n = 0;
        grpc_byte_buffer *bb;
        int rc;

        cr_assert(ncuts < 8);
        for (size_t i = 0; i <= ncuts; i++) {
                size_t to = i < ncuts ? cuts[i] : len;

                s[n++] = grpc_slice_from_copied_buffer((const char *)msg + from, to - from);
                from = to;
        }
        bb = grpc_raw_byte_buffer_create(s, n);
        for (size_t i = 0; i < n; i++)
                grpc_slice_unref(s[i]);
        *delivered = 0;
        rc = kb_etcd_snapshot_blob(bb, got_cb, g, delivered, cb_rc);
        grpc_byte_buffer_destroy(bb);
        return rc;
}

static size_t pack_response(const uint8_t *blob, size_t blen, uint8_t *out)
{
        Kbetcd__SnapshotResponse r = KBETCD__SNAPSHOT_RESPONSE__INIT;
        Kbetcd__ResponseHeader h = KBETCD__RESPONSE_HEADER__INIT;

        h.cluster_id = 0x1f4adef4b9418950ULL;
        h.member_id = 42;
        h.revision = 123456;
        h.raft_term = 7;
        r.header = &h;
        r.remaining_bytes = 987654321;
        r.blob.data = (uint8_t *)blob;
        r.blob.len = blen;
        r.version = "3.6.0";
        return protobuf_c_message_pack(&r.base, out);
}

/* What protobuf-c makes of msg: 1 and the blob, or 0 when it refuses it. */
static int reference(const uint8_t *msg, size_t len, uint8_t *blob, size_t *blen)
{
        Kbetcd__SnapshotResponse *r = kbetcd__snapshot_response__unpack(NULL, len, msg);

        if (!r)
                return 0;
        if (r->blob.len) /* else data may be NULL */
                memcpy(blob, r->blob.data, r->blob.len);
        *blen = r->blob.len;
        kbetcd__snapshot_response__free_unpacked(r, NULL);
        return 1;
}

Test(snapmsg, blob_in_place_at_every_cut)
{
        uint8_t blob[300], msg[512];
        size_t len;

        for (size_t i = 0; i < sizeof(blob); i++)
                blob[i] = (uint8_t)(i * 131 + 7);
        len = pack_response(blob, sizeof(blob), msg);
        for (size_t a = 0; a <= len; a++)
                for (size_t b = a; b <= len; b += 13) {
                        size_t cuts[2] = {a, b};
                        struct got g = {0};
                        int delivered, cb_rc;

                        cr_assert_eq(parse_cut(msg, len, cuts, 2, &g, &delivered, &cb_rc), 0);
                        cr_assert_eq(cb_rc, 0);
                        cr_assert_eq(delivered, 1);
                        cr_assert_eq(g.len, sizeof(blob), "cuts %zu %zu", a, b);
                        cr_assert_eq(memcmp(g.data, blob, sizeof(blob)), 0, "cuts %zu %zu", a, b);
                        cr_assert_leq(g.calls, 3);
                }
}

Test(snapmsg, fields_in_any_order_unknown_ones_skipped_last_blob_wins)
{
        /* field 99 (LEN), field 5 (varint), field 6 (fixed64), field 7 (fixed32), blob "old",
         * the header (field 1), blob "new" */
        static const uint8_t msg[] = {0x9a, 0x06, 0x02, 'x',  'y',  0x28, 0x96, 0x01, 0x31,
                                      1,    2,    3,    4,    5,    6,    7,    8,    0x3d,
                                      1,    2,    3,    4,    0x1a, 3,    'o',  'l',  'd',
                                      0x0a, 2,    0x08, 0x05, 0x1a, 3,    'n',  'e',  'w'};
        uint8_t ref[16];
        size_t rlen;
        struct got g = {0};
        int delivered, cb_rc;

        cr_assert_eq(reference(msg, sizeof(msg), ref, &rlen), 1);
        cr_assert_eq(parse_cut(msg, sizeof(msg), NULL, 0, &g, &delivered, &cb_rc), 0);
        cr_assert_eq(g.len, 3);
        cr_assert_eq(memcmp(g.data, "new", 3), 0);
        cr_assert_eq(rlen, 3);
        cr_assert_eq(memcmp(ref, "new", 3), 0);
}

Test(snapmsg, no_blob_or_empty_blob_calls_nothing)
{
        static const uint8_t header_only[] = {0x0a, 2, 0x08, 0x05, 0x10, 0x01};
        static const uint8_t empty_blob[] = {0x1a, 0x00};
        struct got g = {0};
        int delivered, cb_rc;

        cr_assert_eq(parse_cut(header_only, sizeof(header_only), NULL, 0, &g, &delivered, &cb_rc),
                     0);
        cr_assert_eq(parse_cut(empty_blob, sizeof(empty_blob), NULL, 0, &g, &delivered, &cb_rc), 0);
        cr_assert_eq(parse_cut(empty_blob, 0, NULL, 0, &g, &delivered, &cb_rc), 0);
        cr_assert_eq(g.calls, 0);
        cr_assert_eq(delivered, 0);
}

Test(snapmsg, malformed_messages_are_refused_before_the_callback)
{
        static const struct {
                const char *what;
                uint8_t msg[16];
                size_t len;
        } bad[] = {
            {"blob longer than the message", {0x1a, 0x05, 'a', 'b'}, 4},
            {"blob as a varint", {0x18, 0x05}, 2},
            {"field number 0", {0x02, 0x01, 'a', 0x1a, 0x01, 'b'}, 6},
            {"group wire type", {0x0b, 0x1a, 0x01, 'b'}, 4},
            {"wire type 7", {0x0f, 0x1a, 0x01, 'b'}, 4},
            {"11-byte varint",
             {0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
             12},
            {"truncated key", {0x1a, 0x01, 'b', 0x9a}, 4},
            {"truncated fixed64", {0x1a, 0x01, 'b', 0x31, 1, 2, 3}, 7},
            {"blob before a broken field", {0x1a, 0x02, 'o', 'k', 0x22, 0x09, 'x'}, 7},
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                for (size_t cut = 0; cut <= bad[i].len; cut++) {
                        struct got g = {0};
                        int delivered, cb_rc;

                        cr_assert_eq(
                            parse_cut(bad[i].msg, bad[i].len, &cut, 1, &g, &delivered, &cb_rc),
                            KB_ECORRUPT, "%s", bad[i].what);
                        cr_assert_eq(g.calls, 0, "%s", bad[i].what);
                        cr_assert_eq(delivered, 0, "%s", bad[i].what);
                }
}

/* Truncations and random damage of a real message: wherever protobuf-c accepts it, the same blob
 * comes out; wherever ours refuses it, the callback saw nothing. */
Test(snapmsg, agrees_with_protobuf_c_on_damaged_messages)
{
        uint8_t blob[200], msg[512], damaged[512], ref[512];
        size_t len, rlen, accepted = 0;

        srand(7);
        for (size_t i = 0; i < sizeof(blob); i++)
                blob[i] = (uint8_t)rand();
        len = pack_response(blob, sizeof(blob), msg);
        for (int round = 0; round < 20000; round++) {
                size_t n = round < (int)len ? (size_t)round : len, cut = (size_t)rand() % (n + 1);
                struct got g = {0};
                int delivered, cb_rc, rc;

                memcpy(damaged, msg, n);
                if (round >= (int)len)
                        for (int k = rand() % 3; k >= 0; k--)
                                damaged[rand() % n] ^= (uint8_t)(1u << (rand() % 8));
                rc = parse_cut(damaged, n, &cut, 1, &g, &delivered, &cb_rc);
                if (reference(damaged, n, ref, &rlen)) {
                        accepted++;
                        cr_assert_eq(rc, 0, "round %d", round);
                        cr_assert_eq(g.len, rlen, "round %d", round);
                        cr_assert_eq(memcmp(g.data, ref, rlen), 0, "round %d", round);
                } else if (rc != 0) {
                        cr_assert_eq(rc, KB_ECORRUPT);
                        cr_assert_eq(g.calls, 0, "round %d", round);
                }
        }
        cr_assert_gt(accepted, 100); /* the comparison was made, not skipped */
}

Test(snapmsg, callback_failure_stops_the_pieces)
{
        uint8_t blob[100], msg[256];
        size_t len, cuts[2];
        struct got g = {.fail_at = 1};
        int delivered, cb_rc;

        memset(blob, 'z', sizeof(blob));
        len = pack_response(blob, sizeof(blob), msg);
        cuts[0] = len - 70;
        cuts[1] = len - 40; /* the blob ends a few bytes before the end: the version follows */
        cr_assert_eq(parse_cut(msg, len, cuts, 2, &g, &delivered, &cb_rc), 0);
        cr_assert_eq(cb_rc, -EIO);
        cr_assert_eq(g.calls, 1);
        cr_assert_eq(delivered, 1);
}
