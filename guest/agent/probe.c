/* PROBE: tcp connect and http GET probes from the agent's (the pod's) network namespace.
 *
 * A probe is a non-blocking socket in the epoll loop: connect (EPOLLOUT), then for http write the
 * request and read until the status line is complete (at most PROBE_MAX_RESPONSE bytes are
 * looked at). Its deadline is checked by probe_tick. The reply is ACK (http: with STATUS_CODE;
 * success or failure by status is the host's call) or ERROR with messages shaped like the ones
 * Kubernetes' prober gives ("dial tcp 127.0.0.1:8080: connect: connection refused"). */
#include "probe.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chan.h"
#include "codec.h"
#include "loop.h"

#define PROBE_USER_AGENT "kube-probe/1.33"

enum { ST_CONNECTING, ST_SENDING, ST_READING };

struct probe {
	struct probe *next;
	struct loop_fd lfd;
	uint32_t req;
	uint32_t conv; /* chan_conversation() of the PROBE */
	enum msg_probe_kind kind;
	int state;
	int64_t deadline;
	char target[32];  /* "127.0.0.1:8080" */
	char url[160];    /* "http://127.0.0.1:8080/path" (cut) for messages */
	struct buf out;   /* the http request */
	size_t out_off;
	char in[PROBE_MAX_RESPONSE + 1];
	size_t in_len;
};

static struct probe *probes;

static size_t count(void)
{
	size_t n = 0;
	for (struct probe *p = probes; p; p = p->next)
		n++;
	return n;
}

/* strerror, lower-cased like Go's syscall errors: "connection refused". */
static const char *errstr(int code, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s", strerror(code));
	if (buf[0])
		buf[0] = (char)tolower((unsigned char)buf[0]);
	return buf;
}

static void send_error(uint32_t req, const struct hn_err *e)
{
	struct buf b = {0};

	if (tlv_put_u32(&b, TAG_ERRNO, (uint32_t)e->code) == 0 &&
	    tlv_put_str(&b, TAG_MESSAGE, e->msg) == 0)
		chan_send(MSG_ERROR, req, b.p, b.len);
	buf_free(&b);
}

static void finish(struct probe *p, int status_code, const struct hn_err *e)
{
	struct buf b = {0};

	if (p->conv != chan_conversation()) {
		/* the host that asked is gone: its request id means nothing to the next one */
	} else if (e) {
		send_error(p->req, e);
	} else {
		if (status_code == 0 || tlv_put_u32(&b, TAG_STATUS_CODE, (uint32_t)status_code) == 0)
			chan_send(MSG_ACK, p->req, b.p, b.len);
		buf_free(&b);
	}
	loop_close(&p->lfd);
	for (struct probe **pp = &probes; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	buf_free(&p->out);
	loop_defer_free(p);
}

/* Fails the probe; for http the message is wrapped as Go's client does: Get "url": ... */
static void fail(struct probe *p, int code, const char *detail)
{
	struct hn_err e;

	if (p->kind == PROBE_HTTP)
		hn_fail(&e, code, "Get \"%s\": %s", p->url, detail);
	else
		hn_fail(&e, code, "%s", detail);
	finish(p, 0, &e);
}

static void fail_dial(struct probe *p, int code)
{
	char detail[160], s[64];

	snprintf(detail, sizeof(detail), "dial tcp %s: connect: %s", p->target, errstr(code, s, sizeof(s)));
	fail(p, code, detail);
}

/* "HTTP/1.1 200 OK": the status code, or -1. */
static int parse_status(const char *line, size_t len)
{
	int code = 0;

	if (len < 12 || strncmp(line, "HTTP/", 5))
		return -1;
	const char *sp = memchr(line, ' ', len);
	if (!sp || (size_t)(sp - line) + 4 > len)
		return -1;
	for (int i = 1; i <= 3; i++) {
		if (sp[i] < '0' || sp[i] > '9')
			return -1;
		code = code * 10 + (sp[i] - '0');
	}
	if ((size_t)(sp - line) + 4 < len && sp[4] != ' ' && sp[4] != '\r' && sp[4] != '\n')
		return -1;
	return code >= 100 ? code : -1;
}

static void on_connected(struct probe *p)
{
	if (p->kind == PROBE_TCP) {
		finish(p, 0, NULL);
		return;
	}
	p->state = ST_SENDING;
}

static void do_send(struct probe *p)
{
	while (p->out_off < p->out.len) {
		ssize_t n = send(p->lfd.fd, p->out.p + p->out_off, p->out.len - p->out_off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return; /* EPOLLOUT again */
		if (n < 0) {
			char detail[160], s[64];
			snprintf(detail, sizeof(detail), "write tcp %s: %s", p->target, errstr(errno, s, sizeof(s)));
			fail(p, errno, detail);
			return;
		}
		p->out_off += (size_t)n;
	}
	p->state = ST_READING;
	if (loop_set_events(&p->lfd, EPOLLIN) < 0)
		fail(p, errno, "epoll: cannot wait for the response");
}

static void probe_write(struct loop_fd *f)
{
	struct probe *p = f->data;
	int err = 0;
	socklen_t len = sizeof(err);

	if (p->state == ST_CONNECTING) {
		if (getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			fail_dial(p, err);
			return;
		}
		on_connected(p);
		if (f->fd < 0) /* tcp: done */
			return;
	}
	if (p->state == ST_SENDING)
		do_send(p);
}

static void probe_read(struct loop_fd *f)
{
	struct probe *p = f->data;
	ssize_t n;
	char *nl;
	int code;

	if (p->state != ST_READING) {
		/* an error or hang-up before the connect completed or the request went out */
		probe_write(f);
		return;
	}
	n = recv(f->fd, p->in + p->in_len, PROBE_MAX_RESPONSE - p->in_len, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		char detail[160], s[64];
		snprintf(detail, sizeof(detail), "read tcp %s: %s", p->target, errstr(errno, s, sizeof(s)));
		fail(p, errno, detail);
		return;
	}
	p->in_len += (size_t)n;
	p->in[p->in_len] = '\0';
	nl = memchr(p->in, '\n', p->in_len);
	if (!nl && n > 0 && p->in_len < PROBE_MAX_RESPONSE)
		return; /* the status line is not complete yet */
	code = parse_status(p->in, nl ? (size_t)(nl - p->in) : p->in_len);
	if (code < 0) {
		fail(p, EPROTO, n == 0 && p->in_len == 0 ? "EOF" : "malformed HTTP response");
		return;
	}
	finish(p, code, NULL);
}

static const struct loop_ops probe_ops = {.read = probe_read, .write = probe_write};

static int header_given(const struct msg_probe *m, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < m->nheaders; i++)
		if (!strncasecmp(m->headers[i], name, n) && m->headers[i][n] == ':')
			return 1;
	return 0;
}

static int build_request(struct probe *p, const struct msg_probe *m)
{
	struct buf *b = &p->out;
	char line[128];
	int rc;

	rc = buf_put(b, "GET ", 4);
	if (rc == 0)
		rc = buf_put(b, m->path, strlen(m->path));
	if (rc == 0)
		rc = buf_put(b, " HTTP/1.1\r\n", 11);
	/* Kubernetes: a HEADER named Host, User-Agent or Accept replaces the default */
	if (rc == 0 && !header_given(m, "Host")) {
		snprintf(line, sizeof(line), "Host: %s\r\n", p->target);
		rc = buf_put(b, line, strlen(line));
	}
	if (rc == 0 && !header_given(m, "User-Agent"))
		rc = buf_put(b, "User-Agent: " PROBE_USER_AGENT "\r\n", strlen("User-Agent: " PROBE_USER_AGENT "\r\n"));
	if (rc == 0 && !header_given(m, "Accept"))
		rc = buf_put(b, "Accept: */*\r\n", 13);
	if (rc == 0)
		rc = buf_put(b, "Connection: close\r\n", 19);
	for (size_t i = 0; rc == 0 && i < m->nheaders; i++) {
		rc = buf_put(b, m->headers[i], strlen(m->headers[i]));
		if (rc == 0)
			rc = buf_put(b, "\r\n", 2);
	}
	if (rc == 0)
		rc = buf_put(b, "\r\n", 2);
	return rc;
}

int probe_start(const struct msg_probe *m, uint32_t req, struct hn_err *e)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)m->port)};
	struct probe *p;
	int fd, rc;

	if (count() >= PROBE_MAX)
		return hn_fail(e, EAGAIN, "too many probes in flight (%d)", PROBE_MAX);
	p = calloc(1, sizeof(*p));
	if (!p)
		return hn_fail(e, ENOMEM, "out of memory");
	p->req = req;
	p->conv = chan_conversation();
	p->kind = m->kind;
	p->deadline = hn_now_ms() + m->timeout_ms;
	snprintf(p->target, sizeof(p->target), "%s:%u", m->host, m->port);
	snprintf(p->url, sizeof(p->url), "http://%s%s", p->target, m->path);
	if (m->kind == PROBE_HTTP && build_request(p, m) < 0) {
		buf_free(&p->out);
		free(p);
		return hn_fail(e, ENOMEM, "out of memory");
	}
	memcpy(&sa.sin_addr, m->addr, 4);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = hn_fail(e, errno, "socket: %s", strerror(errno));
		buf_free(&p->out);
		free(p);
		return rc;
	}
	p->lfd.fd = fd;
	p->lfd.ops = &probe_ops;
	p->lfd.data = p;
	p->lfd.events = EPOLLOUT;
	p->state = ST_CONNECTING;
	p->next = probes;
	probes = p;
	rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (rc < 0 && errno != EINPROGRESS) {
		fail_dial(p, errno); /* replies now: e.g. refused on loopback, no route */
		return 0;
	}
	if (loop_add(&p->lfd) < 0) {
		char detail[64];
		snprintf(detail, sizeof(detail), "epoll: %s", strerror(errno));
		fail(p, errno, detail);
		return 0;
	}
	/* connected at once (possible on loopback): EPOLLOUT fires right away and goes on */
	return 0;
}

int probe_timeout_ms(void)
{
	int64_t now = hn_now_ms(), best = -1;

	for (struct probe *p = probes; p; p = p->next) {
		int64_t d = p->deadline - now;
		if (d < 0)
			d = 0;
		if (best < 0 || d < best)
			best = d;
	}
	return (int)best;
}

void probe_tick(void)
{
	int64_t now = hn_now_ms();
	struct probe *next;

	for (struct probe *p = probes; p; p = next) {
		char detail[160];
		next = p->next;
		if (now < p->deadline)
			continue;
		if (p->kind == PROBE_HTTP)
			fail(p, ETIMEDOUT,
			     "context deadline exceeded (Client.Timeout exceeded while awaiting headers)");
		else {
			snprintf(detail, sizeof(detail), "dial tcp %s: i/o timeout", p->target);
			fail(p, ETIMEDOUT, detail);
		}
	}
}
