/*
 * A hostile guest agent for tests: PID 1 of a test VM that breaks the protocol on purpose, so the
 * host's defences are tested against a real guest rather than a mock. The kernel command line
 * picks the misbehaviour: hn.evil=garbage|oversize|silent|hang|die|flood|badexit.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../agent/proto.h"

static int port = -1;

static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }

static void send_frame(uint16_t type, uint32_t id, const void *payload, uint32_t len, uint32_t claimed)
{
	uint8_t h[PROTO_HEADER_SIZE];
	put32(h, claimed); put16(h + 4, type); put16(h + 6, 0); put32(h + 8, id);
	if (write(port, h, sizeof h) < 0 || (len && write(port, payload, len) < 0))
		_exit(1);
}

static uint32_t tlv_u32(uint8_t *buf, uint16_t tag, uint32_t v)
{
	put16(buf, tag); put32(buf + 2, 4); put32(buf + 6, v);
	return 10;
}

/* Read one frame from the host; return its type and id, discard the payload. */
static int read_frame(uint16_t *type, uint32_t *id)
{
	uint8_t h[PROTO_HEADER_SIZE], junk[4096];
	size_t got = 0;
	while (got < sizeof h) {
		ssize_t n = read(port, h + got, sizeof h - got);
		if (n <= 0) return -1;
		got += n;
	}
	uint32_t len = (uint32_t)h[0] << 24 | h[1] << 16 | h[2] << 8 | h[3];
	*type = h[4] << 8 | h[5];
	*id = (uint32_t)h[8] << 24 | h[9] << 16 | h[10] << 8 | h[11];
	while (len > 0) {
		ssize_t n = read(port, junk, len < sizeof junk ? len : sizeof junk);
		if (n <= 0) return -1;
		len -= n;
	}
	return 0;
}

static void open_port(void)
{
	char path[300], name[64];
	for (int tries = 0; tries < 500; tries++) {
		DIR *d = opendir("/sys/class/virtio-ports");
		struct dirent *e;
		while (d && (e = readdir(d))) {
			snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
			int fd = open(path, O_RDONLY);
			if (fd < 0) continue;
			ssize_t n = read(fd, name, sizeof name - 1);
			close(fd);
			if (n <= 0) continue;
			name[n] = 0;
			if (strncmp(name, PROTO_PORT_NAME, strlen(PROTO_PORT_NAME)) == 0) {
				snprintf(path, sizeof path, "/dev/%s", e->d_name);
				port = open(path, O_RDWR);
				closedir(d);
				if (port >= 0) return;
				d = NULL;
				break;
			}
		}
		if (d) closedir(d);
		usleep(10000);
	}
	_exit(1);
}

int main(void)
{
	char cmdline[1024] = "", *mode;
	mkdir("/proc", 0755); mkdir("/sys", 0755); mkdir("/dev", 0755);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	int fd = open("/proc/cmdline", O_RDONLY);
	if (fd >= 0) { ssize_t n = read(fd, cmdline, sizeof cmdline - 1); if (n > 0) cmdline[n] = 0; close(fd); }
	mode = strstr(cmdline, "hn.evil=");
	mode = mode ? mode + 8 : "garbage";
	open_port();

	uint16_t type; uint32_t id;
	uint8_t buf[64];
	if (read_frame(&type, &id) < 0) _exit(1);
	if (!strncmp(mode, "silent", 6)) { for (;;) pause(); }
	if (!strncmp(mode, "garbage", 7)) {
		memset(buf, 0xA5, sizeof buf);
		for (;;) if (write(port, buf, sizeof buf) < 0) _exit(1);
	}
	if (!strncmp(mode, "oversize", 8)) {
		send_frame(MSG_READY, id, NULL, 0, 0xFFFFFFF0u);
		for (;;) pause();
	}
	uint32_t n = tlv_u32(buf, TAG_VERSION, PROTO_VERSION);
	send_frame(MSG_READY, id, buf, n, n);
	if (!strncmp(mode, "hang", 4)) { for (;;) pause(); }
	/* ACK SETUP and CREATE, then misbehave with the container's process (id 1). */
	for (int i = 0; i < 2; i++) {
		if (read_frame(&type, &id) < 0) _exit(1);
		n = tlv_u32(buf, TAG_PID, 7);
		send_frame(MSG_ACK, id, buf, n, n);
	}
	send_frame(MSG_STDOUT, 1, "before the end\n", 15, 15);
	if (!strncmp(mode, "die", 3)) { sync(); _exit(0); } /* PID 1 exits: kernel panic, VM ends */
	if (!strncmp(mode, "badexit", 7)) {
		n = tlv_u32(buf, TAG_EXIT_CODE, 999);
		send_frame(MSG_EXIT, 1, buf, n, n);
		for (;;) pause();
	}
	if (!strncmp(mode, "flood", 5)) {
		static char chunk[PROTO_MAX_CHUNK];
		memset(chunk, 'x', sizeof chunk);
		for (uint32_t k = 0; k < 512; k++) send_frame(MSG_STDOUT, 1000 + k, chunk, sizeof chunk, sizeof chunk);
		for (int k = 0; k < 100000; k++) send_frame(MSG_LOG, 0, "spam", 4, 4);
		n = tlv_u32(buf, TAG_EXIT_CODE, 3);
		send_frame(MSG_EXIT, 1, buf, n, n);
		for (;;) pause();
	}
	for (;;) pause();
}
