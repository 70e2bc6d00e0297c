/* Fuzz harness for the agent's decoders, built with ASan+UBSan (guest/Makefile).
 *
 * stdin: a sequence of inputs, each a u32 big-endian length then that many bytes. Each input is
 * copied into an exactly-sized heap block (so any overread trips ASan) and fed to:
 *   - the frame header decoder and the stream splitter (all inputs also form one stream),
 *   - the generic TLV walker and every typed accessor,
 *   - every request parser (PROBE included), on the payload of the input read as a frame and on the raw input,
 *   - the address and MAC parsers, on the input as a C string.
 * It exits 0 at the end of stdin; any memory error or UB aborts with a sanitizer report. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec.h"
#include "msg.h"

#define MAX_INPUT (PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD + 64)

static size_t parsed_ok, parsed_err;

static void count(int rc)
{
	if (rc == 0)
		parsed_ok++;
	else
		parsed_err++;
}

static void walk_tlv(const uint8_t *p, size_t len, int depth)
{
	struct tlv_iter it;
	struct tlv t;
	volatile uint64_t sink = 0;

	tlv_iter_init(&it, p, len);
	while (tlv_next(&it, &t) > 0) {
		uint32_t u;
		uint64_t q;
		int b;
		if (tlv_u32(&t, &u) == 0)
			sink += u;
		if (tlv_u64(&t, &q) == 0)
			sink += q;
		if (tlv_bool(&t, &b) == 0)
			sink += (uint64_t)b;
		if (tlv_str_check(&t, 1u << 20) == 0 && t.len)
			sink += t.val[t.len - 1];
		if (depth < 4)
			walk_tlv(t.val, t.len, depth + 1);
	}
	(void)sink;
}

static void parse_all(const uint8_t *p, size_t len)
{
	struct msg_arena a = {0};
	struct hn_err e;
	struct msg_setup s;
	struct msg_create c;
	struct msg_exec x;
	struct msg_signal sg;
	struct msg_resize rz;
	struct msg_remove rm;
	struct msg_shutdown sd;
	struct msg_probe pr;
	struct msg_write_files wf;
	struct msg_grow_fs gf;
	int rc;

	walk_tlv(p, len, 0);
	rc = msg_parse_setup(p, len, &a, &s, &e);
	count(rc);
	/* the strings write_resolv and write_etc use, after a successful SETUP */
	for (size_t i = 0; rc == 0 && i < s.ndns_options; i++)
		(void)strlen(s.dns_options[i]);
	for (size_t i = 0; rc == 0 && i < s.ndns_search; i++)
		(void)strlen(s.dns_search[i]);
	msg_arena_free(&a);
	count(msg_parse_create(p, len, &a, &c, &e));
	if (c.proc.argv)
		for (size_t i = 0; i < c.proc.argc; i++)
			(void)strlen(c.proc.argv[i]);
	msg_arena_free(&a);
	count(msg_parse_exec(p, len, &a, &x, &e));
	msg_arena_free(&a);
	count(msg_parse_signal(p, len, &sg, &e));
	count(msg_parse_resize(p, len, &rz, &e));
	count(msg_parse_remove(p, len, &a, &rm, &e));
	msg_arena_free(&a);
	count(msg_parse_shutdown(p, len, &sd, &e));
	rc = msg_parse_grow_fs(p, len, &a, &gf, &e);
	count(rc);
	if (rc == 0)
		(void)strlen(gf.serial);
	msg_arena_free(&a);
	rc = msg_parse_probe(p, len, &a, &pr, &e);
	count(rc);
	for (size_t i = 0; rc == 0 && i < pr.nheaders; i++)
		(void)strlen(pr.headers[i]);
	if (rc == 0)
		(void)strlen(pr.path), (void)strlen(pr.host);
	msg_arena_free(&a);
	/* the MOUNT fields the agent acts on, after a successful CREATE */
	rc = msg_parse_create(p, len, &a, &c, &e);
	for (size_t i = 0; rc == 0 && i < c.nmounts; i++) {
		(void)strlen(c.mounts[i].name);
		(void)strlen(c.mounts[i].fstype);
		if (c.mounts[i].subpath)
			(void)strlen(c.mounts[i].subpath);
		if (c.mounts[i].disk)
			(void)strlen(c.mounts[i].disk);
	}
	for (size_t i = 0; rc == 0 && i < c.ndevices; i++)
		(void)strlen(c.devices[i].serial), (void)strlen(c.devices[i].target);
	msg_arena_free(&a);
	/* the files WRITE_FILES would write: paths and every byte of their data */
	rc = msg_parse_write_files(p, len, &a, &wf, &e);
	count(rc);
	for (size_t i = 0; rc == 0 && i < wf.nfiles; i++) {
		unsigned sum = 0;
		(void)strlen(wf.files[i].path);
		for (size_t j = 0; j < wf.files[i].len; j++)
			sum += wf.files[i].data[j];
		(void)sum;
	}
	if (rc == 0)
		(void)strlen(wf.name);
	msg_arena_free(&a);
}

static void one_input(const uint8_t *p, size_t len)
{
	struct frame_hdr h;
	const uint8_t *payload;
	char *str;
	long n;

	parse_all(p, len);
	n = frame_next(p, len, &h, &payload);
	if (n > 0)
		parse_all(payload, h.len);
	else if (len >= PROTO_HEADER_SIZE) /* truncated frame: parse what follows the header */
		parse_all(p + PROTO_HEADER_SIZE, len - PROTO_HEADER_SIZE);

	str = malloc(len + 1);
	if (!str)
		abort();
	memcpy(str, p, len);
	str[len] = '\0';
	{
		struct msg_cidr cidr;
		uint8_t mac[6];
		count(msg_parse_cidr(str, 0, &cidr));
		count(msg_parse_cidr(str, 1, &cidr));
		count(msg_parse_mac(str, mac));
	}
	free(str);
}

static int read_full(uint8_t *buf, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t r = read(0, buf + off, len - off);
		if (r <= 0)
			return -1;
		off += (size_t)r;
	}
	return 0;
}

int main(void)
{
	struct buf stream = {0};
	size_t inputs = 0, frames = 0;

	for (;;) {
		uint8_t lenb[4], *in;
		uint32_t len;
		if (read_full(lenb, 4) < 0)
			break;
		len = be32_get(lenb);
		if (len > MAX_INPUT) {
			fprintf(stderr, "fuzz-decode: input of %u bytes over the %d limit\n", len, MAX_INPUT);
			return 2;
		}
		in = malloc(len ? len : 1);
		if (!in || read_full(in, len) < 0) {
			fprintf(stderr, "fuzz-decode: truncated input\n");
			return 2;
		}
		one_input(in, len);
		if (buf_put(&stream, in, len) < 0)
			abort();
		free(in);
		inputs++;
	}

	/* the concatenation, split like the control channel does; stop at an oversized header */
	{
		size_t off = 0;
		for (;;) {
			struct frame_hdr h;
			const uint8_t *payload;
			long n = frame_next(stream.p + off, stream.len - off, &h, &payload);
			if (n <= 0)
				break;
			parse_all(payload, h.len);
			off += (size_t)n;
			frames++;
		}
	}
	buf_free(&stream);
	printf("fuzz-decode: %zu inputs, %zu stream frames, %zu parses ok, %zu rejected\n", inputs,
	       frames, parsed_ok, parsed_err);
	return 0;
}
