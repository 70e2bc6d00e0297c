/* Frame header and TLV codec (see proto.h for the layout). */
#include "codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int frame_hdr_decode(const uint8_t *p, struct frame_hdr *h)
{
	h->len = be32_get(p);
	h->type = be16_get(p + 4);
	h->flags = be16_get(p + 6);
	h->id = be32_get(p + 8);
	return h->len > PROTO_MAX_PAYLOAD ? -EMSGSIZE : 0;
}

void frame_hdr_encode(uint8_t *p, const struct frame_hdr *h)
{
	be32_put(p, h->len);
	be16_put(p + 4, h->type);
	be16_put(p + 6, h->flags);
	be32_put(p + 8, h->id);
}

long frame_next(const uint8_t *p, size_t len, struct frame_hdr *h, const uint8_t **payload)
{
	if (len < PROTO_HEADER_SIZE)
		return 0;
	if (frame_hdr_decode(p, h) < 0)
		return -EMSGSIZE;
	if (len - PROTO_HEADER_SIZE < h->len)
		return 0;
	*payload = p + PROTO_HEADER_SIZE;
	return (long)(PROTO_HEADER_SIZE + h->len);
}

void tlv_iter_init(struct tlv_iter *it, const uint8_t *p, size_t len)
{
	it->p = p;
	it->len = len;
	it->off = 0;
}

int tlv_next(struct tlv_iter *it, struct tlv *t)
{
	size_t left = it->len - it->off;

	if (left == 0)
		return 0;
	if (left < TLV_HEADER_SIZE)
		return -EBADMSG;
	t->tag = be16_get(it->p + it->off);
	t->len = be32_get(it->p + it->off + 2);
	/* compare against what is left, never add to the offset first: no overflow */
	if (t->len > left - TLV_HEADER_SIZE)
		return -EBADMSG;
	t->val = it->p + it->off + TLV_HEADER_SIZE;
	it->off += TLV_HEADER_SIZE + (size_t)t->len;
	return 1;
}

int tlv_u32(const struct tlv *t, uint32_t *v)
{
	if (t->len != 4)
		return -EBADMSG;
	*v = be32_get(t->val);
	return 0;
}

int tlv_u64(const struct tlv *t, uint64_t *v)
{
	if (t->len != 8)
		return -EBADMSG;
	*v = (uint64_t)be32_get(t->val) << 32 | be32_get(t->val + 4);
	return 0;
}

int tlv_bool(const struct tlv *t, int *v)
{
	if (t->len != 1 || t->val[0] > 1)
		return -EBADMSG;
	*v = t->val[0];
	return 0;
}

int tlv_str_check(const struct tlv *t, size_t max)
{
	if (t->len > max || memchr(t->val, 0, t->len))
		return -EBADMSG;
	return 0;
}

int buf_reserve(struct buf *b, size_t extra)
{
	size_t need, cap;
	uint8_t *p;

	if (extra > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	need = b->len + extra;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

int buf_put(struct buf *b, const void *data, size_t len)
{
	if (buf_reserve(b, len) < 0)
		return -ENOMEM;
	if (len)
		memcpy(b->p + b->len, data, len);
	b->len += len;
	return 0;
}

void buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

int tlv_put(struct buf *b, uint16_t tag, const void *val, uint32_t len)
{
	uint8_t h[TLV_HEADER_SIZE];

	be16_put(h, tag);
	be32_put(h + 2, len);
	if (buf_put(b, h, sizeof(h)) < 0 || buf_put(b, val, len) < 0)
		return -ENOMEM;
	return 0;
}

int tlv_put_u32(struct buf *b, uint16_t tag, uint32_t v)
{
	uint8_t x[4];
	be32_put(x, v);
	return tlv_put(b, tag, x, 4);
}

int tlv_put_u64(struct buf *b, uint16_t tag, uint64_t v)
{
	uint8_t x[8];
	be32_put(x, (uint32_t)(v >> 32));
	be32_put(x + 4, (uint32_t)v);
	return tlv_put(b, tag, x, 8);
}

int tlv_put_str(struct buf *b, uint16_t tag, const char *s)
{
	size_t n = strlen(s);
	if (n > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	return tlv_put(b, tag, s, (uint32_t)n);
}
