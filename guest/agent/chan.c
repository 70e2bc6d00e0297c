/* Control channel over the "hn.agent" virtio-serial port.
 *
 * virtio_console semantics that shape this file: while no host process has the socket open,
 * the port polls readable+HUP and read() returns 0, and writes would block. So "read returned
 * 0" means "host not connected": the port leaves epoll and is polled on a short timer until the
 * host connects (a write QEMU takes before the guest learns of the disconnect is discarded). A new connection starts
 * a new conversation: the agent writes nothing until it has read the host's first frame.
 *
 * Reconnects (a restarted node agent adopting the VM) lose no output the agent still holds
 * (what it had handed to QEMU and the old host never read is gone). While no host listens the
 * process output readers are paused (as under back-pressure: processes block on a full pipe) and
 * the queue is kept, minus what only meant something to the old conversation: replies (their ids
 * are the old host's) and WINDOW credits. The queue tracks frame boundaries and keeps the written
 * part of the head frame, so a frame that was partly written when the host went away goes again
 * whole to the next host (the old one could not use a part), never just its rest.
 * On the new connection the reply to the first frame (READY) goes first; the kept frames follow
 * once the host sends its next frame, or CHAN_HOLD_MS after READY, whichever comes first: a host
 * re-registers the process ids it adopts only after READY, and would drop output for ids it does
 * not know yet. Deferred replies (REMOVE, PROBE, SHUTDOWN) check chan_conversation() so a reply
 * to an old request never reaches a new host. */
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
#define CHAN_HOLD_MS 1000 /* longest wait for the new host's second frame before flushing */

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
	/* frame boundaries: head_done bytes of the frame at the head (head_len bytes in all, header
	 * included) are written, and still in out.p just before outhead; 0 at a frame boundary */
	size_t head_done, head_len;
	uint16_t head_type;
	uint32_t head_id;
	/* after a reconnect: only hold_allow bytes (the first reply) go out until released */
	int hold;
	size_t hold_allow;
	int64_t hold_until;
	uint32_t conv; /* conversation number, bumped on every disconnect */
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

/* Process output is read only while a host has spoken on the current connection and the queue
 * is short (with hysteresis between the two marks). */
static void check_pressure(void)
{
	size_t n = outq_len();
	int want = ch.paused;

	if (!ch.connected || !ch.greeted || n > CHAN_OUTQ_HIGH)
		want = 1;
	else if (n < CHAN_OUTQ_LOW)
		want = 0;
	if (want != ch.paused && ch.on_pressure) {
		ch.paused = want;
		ch.on_pressure(want);
	}
}

/* Bytes that may be written now. */
static size_t writable_len(void)
{
	size_t n = outq_len();

	if (!ch.connected || !ch.greeted)
		return 0;
	if (ch.hold && n > ch.hold_allow)
		n = ch.hold_allow;
	return n;
}

/* Marks w more bytes at the head as written, following frame boundaries. */
static void consumed(size_t w)
{
	if (ch.hold)
		ch.hold_allow -= w < ch.hold_allow ? w : ch.hold_allow;
	while (w > 0) {
		size_t rest, k;
		if (ch.head_done == 0) {
			struct frame_hdr h;
			frame_hdr_decode(ch.out.p + ch.outhead, &h); /* whole frames are queued */
			ch.head_len = PROTO_HEADER_SIZE + h.len;
			ch.head_type = h.type;
			ch.head_id = h.id;
		}
		rest = ch.head_len - ch.head_done;
		k = w < rest ? w : rest;
		ch.head_done += k;
		ch.outhead += k;
		w -= k;
		if (ch.head_done == ch.head_len)
			ch.head_done = 0;
	}
}

uint32_t chan_conversation(void)
{
	return ch.conv;
}

int chan_paused(void)
{
	return ch.paused;
}

static const char *frame_name(uint16_t type)
{
	switch (type) {
	case MSG_STDOUT:
		return "STDOUT";
	case MSG_STDERR:
		return "STDERR";
	case MSG_EXIT:
		return "EXIT";
	case MSG_LOG:
		return "LOG";
	default:
		return "reply";
	}
}

/* Frames that mean something only to the conversation they were queued for. */
static int stale_after_disconnect(uint16_t type)
{
	return type == MSG_READY || type == MSG_ACK || type == MSG_ERROR || type == MSG_WINDOW;
}

/* The host went away: keep the whole frames that still mean something to the next one. */
static void keep_whole_frames(void)
{
	size_t r, w = 0, replies = 0, cut = ch.head_done;

	if (cut > 0) {
		/* the old host had at most a part of it, which it could not use: resending only the
		 * rest would break the framing of the next connection, so the frame goes again whole */
		ch.outhead -= cut;
		ch.head_done = 0;
	}
	for (r = ch.outhead; r < ch.out.len;) {
		struct frame_hdr h;
		size_t n;
		frame_hdr_decode(ch.out.p + r, &h);
		n = PROTO_HEADER_SIZE + h.len;
		if (stale_after_disconnect(h.type)) {
			replies++; /* ids and credit of the old conversation */
		} else {
			memmove(ch.out.p + w, ch.out.p + r, n);
			w += n;
		}
		r += n;
	}
	ch.out.len = w;
	ch.outhead = 0;
	ch.hold = 0;
	ch.hold_allow = 0;
	if (cut > 0 && !stale_after_disconnect(ch.head_type))
		hn_log("control port closed in the middle of a frame (%s of process %u, %zu of %zu bytes "
		       "written): it goes again whole to the next host", frame_name(ch.head_type),
		       ch.head_id, cut, ch.head_len);
	if (replies > 0)
		hn_log("%zu replies to the previous connection dropped", replies);
}

static void disconnected(void)
{
	int was_talking = ch.connected && ch.greeted;

	ch.connected = 0;
	ch.greeted = 0;
	ch.broken = 0;
	ch.inlen = 0;
	ch.conv++;
	loop_del(&ch.lfd);
	ch.next_poll = hn_now_ms() + RECONNECT_POLL_MS;
	keep_whole_frames();
	check_pressure();
	if (was_talking)
		hn_log("host end of the control port closed; %zu bytes of output kept", outq_len());
}

/* The new host has spoken again (or had time to): the kept frames may follow its first reply. */
static void release_hold(void)
{
	if (!ch.hold)
		return;
	ch.hold = 0;
	ch.hold_allow = 0;
	chan_write(&ch.lfd);
}

static void log_sink(const char *line, size_t len)
{
	static int busy; /* a failing write logs too: do not recurse */

	/* queued also while no host listens: the next one gets the lines after READY */
	if (busy || outq_len() > CHAN_OUTQ_HIGH * 2)
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
			/* frames kept while no host was connected (output, EXITs) go after the reply to
			 * the first request, so that a new host hears READY first, and only once it
			 * speaks again (or CHAN_HOLD_MS later): by then it knows its processes */
			size_t before = outq_len();
			ch.on_frame(&h, payload);
			if (before > 0 && rotate_queue(before) < 0) {
				hn_log("out of memory reordering the output queue");
			} else if (before > 0) {
				ch.hold = 1;
				ch.hold_allow = outq_len() - before;
				ch.hold_until = hn_now_ms() + CHAN_HOLD_MS;
			}
			ch.greeted = 1;
			chan_write(&ch.lfd);
		} else {
			release_hold();
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
	size_t n;

	while ((n = writable_len()) > 0) {
		ssize_t w = write(f->fd, ch.out.p + ch.outhead, n < WRITE_CHUNK ? n : WRITE_CHUNK);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				hn_log("control port write: %s", strerror(errno));
			break;
		}
		consumed((size_t)w);
	}
	if (ch.outhead == ch.out.len) {
		ch.outhead = ch.out.len = 0;
	} else if (ch.outhead - ch.head_done > CHAN_OUTQ_LOW) {
		/* keep the written part of the head frame: a disconnect sends it again whole */
		size_t start = ch.outhead - ch.head_done;
		memmove(ch.out.p, ch.out.p + start, ch.out.len - start);
		ch.out.len -= start;
		ch.outhead = ch.head_done;
	}
	check_pressure();
	update_events();
}

static const struct loop_ops chan_ops = {.read = chan_read, .write = chan_write};

static void update_events(void)
{
	uint32_t ev = EPOLLIN;

	if (writable_len() > 0)
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
	check_pressure(); /* no process output is read before a host has spoken */
	return 0;
}

int chan_timeout_ms(void)
{
	int64_t d;

	if (ch.lfd.fd < 0)
		return -1;
	if (ch.connected && ch.hold)
		d = ch.hold_until - hn_now_ms();
	else if (!ch.connected)
		d = ch.next_poll - hn_now_ms();
	else
		return -1;
	return d < 0 ? 0 : (int)d;
}

void chan_tick(void)
{
	struct pollfd p = {.fd = ch.lfd.fd, .events = POLLIN};

	if (ch.connected && ch.hold && hn_now_ms() >= ch.hold_until)
		release_hold();
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

	if (ch.connected && ch.greeted)
		release_hold();
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
