/* Frame header and TLV encoding/decoding for the wire format in proto.h. Pure functions, no I/O,
 * so the fuzz harness links exactly what the agent uses. */
#ifndef HN_CODEC_H
#define HN_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

struct frame_hdr {
	uint32_t len;
	uint16_t type;
	uint16_t flags;
	uint32_t id;
};

/* Decodes the 12-byte header at p. Returns 0, or -EMSGSIZE if len > PROTO_MAX_PAYLOAD. */
int frame_hdr_decode(const uint8_t *p, struct frame_hdr *h);
void frame_hdr_encode(uint8_t *p, const struct frame_hdr *h);
/* Splits the next frame off a byte stream: returns the bytes it spans (header + payload) with
 * *h and *payload set, 0 if more bytes are needed, or -EMSGSIZE (the stream is unusable). */
long frame_next(const uint8_t *p, size_t len, struct frame_hdr *h, const uint8_t **payload);

/* TLV walk over a payload: tlv_next returns 1 with a field, 0 at the end, -EBADMSG when a
 * header or a value would run past the end. */
struct tlv_iter {
	const uint8_t *p;
	size_t len;
	size_t off;
};

struct tlv {
	uint16_t tag;
	uint32_t len;
	const uint8_t *val;
};

#define TLV_HEADER_SIZE 6

void tlv_iter_init(struct tlv_iter *it, const uint8_t *p, size_t len);
int tlv_next(struct tlv_iter *it, struct tlv *t);

/* Typed accessors: -EBADMSG on a wrong size, a bool other than 0/1, or a NUL in a string. */
int tlv_u32(const struct tlv *t, uint32_t *v);
int tlv_u64(const struct tlv *t, uint64_t *v);
int tlv_bool(const struct tlv *t, int *v);
int tlv_str_check(const struct tlv *t, size_t max);

/* Growable output buffer for building payloads. Functions return 0 or -ENOMEM. */
struct buf {
	uint8_t *p;
	size_t len;
	size_t cap;
};

int buf_reserve(struct buf *b, size_t extra);
int buf_put(struct buf *b, const void *data, size_t len);
void buf_free(struct buf *b);
int tlv_put(struct buf *b, uint16_t tag, const void *val, uint32_t len);
int tlv_put_u32(struct buf *b, uint16_t tag, uint32_t v);
int tlv_put_u64(struct buf *b, uint16_t tag, uint64_t v);
int tlv_put_str(struct buf *b, uint16_t tag, const char *s);

static inline uint16_t be16_get(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void be16_put(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void be32_put(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

#endif
