/* Control channel over the "hn.agent" virtio-serial port.
 *
 * virtio_console semantics that shape this file: while no host process has the socket open,
 * the port polls readable+HUP and read() returns 0, and writes would block. So "read returned
 * 0" means "host not connected": the port leaves epoll and is polled on a short timer until the
 * host connects. A new connection starts a new conversation: the agent writes nothing until it
 * has read the host's first frame, and bytes queued for an earlier connection are dropped. */
#include "chan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loop.h"
#include "util.h"

#define RECONNECT_POLL_MS 20
#define WRITE_CHUNK 32768 /* virtio_console takes at most 32 KiB per write() */

static struct {
	struct loop_fd lfd;
	int connected; /* host end open, as far as we know */
	int greeted;   /* a frame was read on this connection: we may write */
	int broken;    /* framing error: ignore input until the host reconnects */
	int64_t next_poll;
	uint8_t *in;
	size_t inlen;
	struct buf out;
	size_t outhead;
	int paused;
	chan_frame_fn on_frame;
	chan_pressure_fn on_pressure;
} ch = {.lfd = {.fd = -1}};

static void update_events(void);
static void chan_write(struct loop_fd *f);

static size_t outq_len(void)
{
	return ch.out.len - ch.outhead;
}

static void check_pressure(void)
{
	size_t n = outq_len();

	if (!ch.paused && n > CHAN_OUTQ_HIGH) {
		ch.paused = 1;
		ch.on_pressure(1);
	} else if (ch.paused && n < CHAN_OUTQ_LOW) {
		ch.paused = 0;
		ch.on_pressure(0);
	}
}

int chan_paused(void)
{
	return ch.paused;
}

static void drop_output(void)
{
	ch.out.len = 0;
	ch.outhead = 0;
	check_pressure();
}

static void disconnected(void)
{
	if (ch.connected && ch.greeted)
		hn_log("host end of the control port closed");
	ch.connected = 0;
	ch.greeted = 0;
	ch.broken = 0;
	ch.inlen = 0;
	drop_output();
	loop_del(&ch.lfd);
	ch.next_poll = hn_now_ms() + RECONNECT_POLL_MS;
}

static void log_sink(const char *line, size_t len)
{
	static int busy; /* a failing write logs too: do not recurse */

	if (busy || !ch.connected || !ch.greeted || outq_len() > CHAN_OUTQ_HIGH * 2)
		return;
	busy = 1;
	chan_send(MSG_LOG, 0, line, len);
	busy = 0;
}

/* Moves the first `n` queued bytes behind the rest. */
static int rotate_queue(size_t n)
{
	uint8_t *tmp = malloc(n);

	if (!tmp)
		return -ENOMEM;
	memcpy(tmp, ch.out.p + ch.outhead, n);
	memmove(ch.out.p + ch.outhead, ch.out.p + ch.outhead + n, outq_len() - n);
	memcpy(ch.out.p + ch.out.len - n, tmp, n);
	free(tmp);
	return 0;
}

static void process_input(void)
{
	size_t off = 0;

	for (;;) {
		struct frame_hdr h;
		const uint8_t *payload;
		long n = frame_next(ch.in + off, ch.inlen - off, &h, &payload);
		if (n < 0) {
			ch.broken = 1;
			hn_log("protocol error: frame of %u bytes exceeds PROTO_MAX_PAYLOAD; "
			       "ignoring input until the host reconnects", h.len);
			ch.inlen = 0;
			return;
		}
		if (n == 0)
			break;
		if (!ch.greeted) {
			/* frames queued while no host was connected (output, EXITs) go after the reply
			 * to the first request, so that a new host hears READY first */
			size_t before = outq_len();
			ch.on_frame(&h, payload);
			if (before > 0 && rotate_queue(before) < 0)
				hn_log("out of memory reordering the output queue");
			ch.greeted = 1;
			chan_write(&ch.lfd);
		} else {
			ch.on_frame(&h, payload);
		}
		off += (size_t)n;
	}
	if (off > 0) {
		memmove(ch.in, ch.in + off, ch.inlen - off);
		ch.inlen -= off;
	}
}

static void chan_read(struct loop_fd *f)
{
	size_t cap = PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD;
	ssize_t n = read(f->fd, ch.in + ch.inlen, cap - ch.inlen);

	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		hn_log("control port read: %s", strerror(errno));
		disconnected();
		return;
	}
	if (n == 0) {
		disconnected();
		return;
	}
	if (ch.broken)
		return;
	ch.inlen += (size_t)n;
	process_input();
}

static void chan_write(struct loop_fd *f)
{
	while (outq_len() > 0) {
		size_t n = outq_len() < WRITE_CHUNK ? outq_len() : WRITE_CHUNK;
		ssize_t w = write(f->fd, ch.out.p + ch.outhead, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				hn_log("control port write: %s", strerror(errno));
			break;
		}
		ch.outhead += (size_t)w;
	}
	if (ch.outhead == ch.out.len) {
		ch.outhead = ch.out.len = 0;
	} else if (ch.outhead > CHAN_OUTQ_LOW) {
		memmove(ch.out.p, ch.out.p + ch.outhead, outq_len());
		ch.out.len -= ch.outhead;
		ch.outhead = 0;
	}
	check_pressure();
	update_events();
}

static const struct loop_ops chan_ops = {.read = chan_read, .write = chan_write};

static void update_events(void)
{
	uint32_t ev = EPOLLIN;

	if (ch.greeted && outq_len() > 0)
		ev |= EPOLLOUT;
	if (ch.connected && loop_set_events(&ch.lfd, ev) < 0)
		hn_log("epoll mod control port: %s", strerror(errno));
}

int chan_send(uint16_t type, uint32_t id, const void *payload, size_t len)
{
	struct frame_hdr h = {.len = (uint32_t)len, .type = type, .flags = 0, .id = id};
	uint8_t hdr[PROTO_HEADER_SIZE];

	if (len > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	frame_hdr_encode(hdr, &h);
	if (buf_reserve(&ch.out, sizeof(hdr) + len) < 0)
		return -ENOMEM;
	buf_put(&ch.out, hdr, sizeof(hdr));
	buf_put(&ch.out, payload, len);
	check_pressure();
	if (ch.connected && ch.greeted)
		chan_write(&ch.lfd);
	return 0;
}

/* Finds /sys/class/virtio-ports/<vportNpM>/name == PROTO_PORT_NAME and opens /dev/<vportNpM>. */
static int find_port(void)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	struct dirent *de;
	int fd = -ENOENT;

	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		char path[300], name[64];
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", de->d_name);
		if (hn_read_line(path, name, sizeof(name)) < 0 || strcmp(name, PROTO_PORT_NAME))
			continue;
		snprintf(path, sizeof(path), "/dev/%s", de->d_name);
		fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (fd < 0)
			fd = -errno;
		break;
	}
	closedir(d);
	return fd;
}

int chan_open(int wait_ms, chan_frame_fn on_frame, chan_pressure_fn on_pressure)
{
	int64_t deadline = hn_now_ms() + wait_ms;
	int fd;

	ch.on_frame = on_frame;
	ch.on_pressure = on_pressure;
	ch.in = malloc(PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD);
	if (!ch.in)
		return -ENOMEM;
	/* no udev: the port's device node may show up a moment after the driver binds */
	while ((fd = find_port()) < 0 && hn_now_ms() < deadline)
		usleep(10000);
	if (fd < 0)
		return fd;
	ch.lfd.fd = fd;
	ch.lfd.ops = &chan_ops;
	ch.lfd.events = EPOLLIN;
	ch.connected = 1;
	if (loop_add(&ch.lfd) < 0)
		return -errno;
	hn_set_log_sink(log_sink);
	return 0;
}

int chan_timeout_ms(void)
{
	int64_t d;

	if (ch.connected || ch.lfd.fd < 0)
		return -1;
	d = ch.next_poll - hn_now_ms();
	return d < 0 ? 0 : (int)d;
}

void chan_tick(void)
{
	struct pollfd p = {.fd = ch.lfd.fd, .events = POLLIN};

	if (ch.connected || ch.lfd.fd < 0 || hn_now_ms() < ch.next_poll)
		return;
	ch.next_poll = hn_now_ms() + RECONNECT_POLL_MS;
	if (poll(&p, 1, 0) < 0 || (p.revents & POLLHUP))
		return;
	ch.connected = 1;
	ch.lfd.events = EPOLLIN;
	if (loop_add(&ch.lfd) < 0) {
		hn_log("epoll add control port: %s", strerror(errno));
		ch.connected = 0;
		return;
	}
	hn_log("host connected to the control port");
}

int chan_flush_blocking(int timeout_ms)
{
	int64_t deadline = hn_now_ms() + timeout_ms;

	while (outq_len() > 0 && ch.connected && ch.greeted) {
		struct pollfd p = {.fd = ch.lfd.fd, .events = POLLOUT};
		int64_t left = deadline - hn_now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
			return -errno;
		if (p.revents & POLLHUP)
			return -EPIPE;
		if (p.revents & POLLOUT)
			chan_write(&ch.lfd);
	}
	return outq_len() == 0 ? 0 : -EPIPE;
}
