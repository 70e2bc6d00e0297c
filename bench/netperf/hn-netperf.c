/*
 * hn-netperf: a tiny TCP throughput and latency tester for bench/network.py, built static with
 * `musl-gcc -static -O2` so it runs in a busybox image.
 *
 *   hn-netperf server [-p PORT] [-i IO_TIMEOUT]
 *   hn-netperf stream HOST [-p PORT] [-t SECONDS] [-m BYTES] [-w CONNECT_WAIT] [-i IO_TIMEOUT]
 *   hn-netperf rr HOST [-p PORT] [-t SECONDS] [-w CONNECT_WAIT] [-i IO_TIMEOUT]
 *
 * The client sends one byte naming the test ('S' or 'R'). Stream: the client writes BYTES-sized
 * buffers for SECONDS, then shuts its side down; the server counts what it read until EOF and
 * answers with that count (8 bytes, big endian); throughput = the server's count / (time from
 * the first byte sent to the count received), so nothing still queued in buffers is counted.
 * RR: one byte out, one byte back, TCP_NODELAY on both ends, for SECONDS; every round trip is
 * timed. The client prints one JSON line on stdout; errors go to stderr with exit status 1.
 * The server forks a process per connection; every socket read or write times out after
 * IO_TIMEOUT seconds (default 10), and the client retries connecting for CONNECT_WAIT seconds
 * (default 10) while the peer refuses or is unreachable.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static int port = 5201;
static double seconds = 10.0;
static size_t msg_size = 128 * 1024;
static double connect_wait = 10.0;
static double io_timeout = 10.0;

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void die(const char *fmt, ...)
{
	va_list ap;
	int err = errno;
	fputs("hn-netperf: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (err)
		fprintf(stderr, ": %s", strerror(err));
	fputc('\n', stderr);
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void set_timeouts(int fd, double secs)
{
	struct timeval tv = {.tv_sec = (time_t)secs, .tv_usec = (suseconds_t)((secs - (double)(time_t)secs) * 1e6)};
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
		die("setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)");
}

static void nodelay(int fd)
{
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
		die("setsockopt(TCP_NODELAY)");
}

/* Write all of buf; a timeout or error is fatal. */
static void write_all(int fd, const void *buf, size_t len, const char *what)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (errno == EAGAIN)
				errno = ETIMEDOUT;
			die("%s", what);
		}
		p += n;
		len -= (size_t)n;
	}
}

/* Read exactly len bytes; returns 0 on EOF before the first byte, 1 when done. */
static int read_all(int fd, void *buf, size_t len, const char *what)
{
	char *p = buf;
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, p + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (errno == EAGAIN)
				errno = ETIMEDOUT;
			die("%s", what);
		}
		if (n == 0) {
			if (got == 0)
				return 0;
			errno = 0;
			die("%s: connection closed mid-message", what);
		}
		got += (size_t)n;
	}
	return 1;
}

/* --- server ------------------------------------------------------------------------------ */

static void serve_stream(int fd)
{
	static char buf[256 * 1024];
	uint64_t total = 0;
	unsigned char reply[8];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (errno == EAGAIN)
				errno = ETIMEDOUT;
			die("server: stream read");
		}
		if (n == 0)
			break;
		total += (uint64_t)n;
	}
	for (int i = 0; i < 8; i++)
		reply[i] = (unsigned char)(total >> (56 - 8 * i));
	write_all(fd, reply, sizeof reply, "server: stream reply");
}

static void serve_rr(int fd)
{
	char c;
	nodelay(fd);
	while (read_all(fd, &c, 1, "server: rr read"))
		write_all(fd, &c, 1, "server: rr write");
}

static int server(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				   .sin_addr.s_addr = htonl(INADDR_ANY)};
	int one = 1;
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket");
	if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
		die("setsockopt(SO_REUSEADDR)");
	if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0)
		die("bind to port %d", port);
	if (listen(lfd, 16) < 0)
		die("listen");
	signal(SIGCHLD, SIG_IGN); /* no zombies */
	fprintf(stderr, "hn-netperf: listening on port %d\n", port);
	for (;;) {
		char mode;
		pid_t pid;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		pid = fork();
		if (pid < 0) {
			fprintf(stderr, "hn-netperf: fork: %s\n", strerror(errno));
			close(fd);
			continue;
		}
		if (pid > 0) {
			close(fd);
			continue;
		}
		close(lfd);
		set_timeouts(fd, io_timeout);
		if (!read_all(fd, &mode, 1, "server: mode byte"))
			_exit(0);
		if (mode == 'S')
			serve_stream(fd);
		else if (mode == 'R')
			serve_rr(fd);
		else {
			errno = 0;
			die("server: unknown test %d", mode);
		}
		_exit(0);
	}
}

/* --- client ------------------------------------------------------------------------------ */

static int connect_to(const char *host)
{
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	double deadline = now() + connect_wait;
	if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
		errno = 0;
		die("not an IPv4 address: %s", host);
	}
	for (;;) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			die("socket");
		set_timeouts(fd, io_timeout); /* SO_SNDTIMEO also bounds connect() */
		if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0)
			return fd;
		int err = errno;
		close(fd);
		if (err == EINPROGRESS || err == EAGAIN)
			err = ETIMEDOUT;
		if (now() >= deadline ||
		    (err != ECONNREFUSED && err != EHOSTUNREACH && err != ENETUNREACH && err != ETIMEDOUT &&
		     err != EINTR)) {
			errno = err;
			die("connect to %s:%d", host, port);
		}
		usleep(100 * 1000);
	}
}

static int stream(const char *host)
{
	char *buf = malloc(msg_size);
	unsigned char reply[8];
	uint64_t sent = 0, received = 0;
	double start, stop_at, end;
	int fd;
	if (buf == NULL)
		die("malloc");
	memset(buf, 0x5a, msg_size);
	fd = connect_to(host);
	start = now();
	stop_at = start + seconds;
	write_all(fd, "S", 1, "stream: mode byte");
	while (now() < stop_at) {
		write_all(fd, buf, msg_size, "stream: write");
		sent += msg_size;
	}
	if (shutdown(fd, SHUT_WR) < 0)
		die("shutdown");
	if (!read_all(fd, reply, sizeof reply, "stream: reading the server's count")) {
		errno = 0;
		die("stream: the server closed without a count");
	}
	end = now();
	close(fd);
	for (int i = 0; i < 8; i++)
		received = (received << 8) | reply[i];
	if (received != sent) {
		errno = 0;
		die("stream: sent %llu bytes, the server read %llu", (unsigned long long)sent,
		    (unsigned long long)received);
	}
	printf("{\"test\":\"stream\",\"bytes\":%llu,\"seconds\":%.4f,\"bytes_per_s\":%.0f,\"mbit_s\":%.2f,"
	       "\"msg_size\":%zu}\n",
	       (unsigned long long)received, end - start, (double)received / (end - start),
	       (double)received * 8 / (end - start) / 1e6, msg_size);
	free(buf);
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values, in microseconds. */
static double pct_us(const uint32_t *v, size_t n, double p)
{
	size_t rank = (size_t)(p * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return v[rank - 1] / 1e3;
}

static int rr(const char *host)
{
	size_t cap = 1 << 16, n = 0;
	uint32_t *rtt = malloc(cap * sizeof *rtt);
	double sum_ns = 0, start, end;
	uint64_t stop_at;
	char c = 'x';
	int fd;
	if (rtt == NULL)
		die("malloc");
	fd = connect_to(host);
	nodelay(fd);
	write_all(fd, "R", 1, "rr: mode byte");
	start = now();
	stop_at = now_ns() + (uint64_t)(seconds * 1e9);
	for (;;) {
		uint64_t t0 = now_ns(), t1;
		if (t0 >= stop_at)
			break;
		write_all(fd, &c, 1, "rr: write");
		if (!read_all(fd, &c, 1, "rr: read")) {
			errno = 0;
			die("rr: the server closed the connection");
		}
		t1 = now_ns();
		if (n == cap) {
			uint32_t *more = realloc(rtt, 2 * cap * sizeof *rtt);
			if (more == NULL)
				die("realloc");
			rtt = more;
			cap *= 2;
		}
		rtt[n++] = (uint32_t)(t1 - t0 > UINT32_MAX ? UINT32_MAX : t1 - t0);
		sum_ns += (double)(t1 - t0);
	}
	end = now();
	if (shutdown(fd, SHUT_WR) < 0)
		die("shutdown");
	close(fd);
	if (n == 0) {
		errno = 0;
		die("rr: no transaction completed");
	}
	qsort(rtt, n, sizeof *rtt, cmp_u32);
	printf("{\"test\":\"rr\",\"transactions\":%zu,\"seconds\":%.4f,\"tps\":%.1f,\"rtt_mean_us\":%.1f,"
	       "\"rtt_min_us\":%.1f,\"rtt_p50_us\":%.1f,\"rtt_p90_us\":%.1f,\"rtt_p99_us\":%.1f,"
	       "\"rtt_max_us\":%.1f}\n",
	       n, end - start, (double)n / (end - start), sum_ns / (double)n / 1e3, rtt[0] / 1e3,
	       pct_us(rtt, n, 0.50), pct_us(rtt, n, 0.90), pct_us(rtt, n, 0.99), rtt[n - 1] / 1e3);
	free(rtt);
	return 0;
}

/* --- arguments ---------------------------------------------------------------------------- */

static void usage(void)
{
	fputs("usage: hn-netperf server [-p PORT] [-i IO_TIMEOUT]\n"
	      "       hn-netperf stream HOST [-p PORT] [-t SECONDS] [-m BYTES] [-w CONNECT_WAIT] [-i IO_TIMEOUT]\n"
	      "       hn-netperf rr HOST [-p PORT] [-t SECONDS] [-w CONNECT_WAIT] [-i IO_TIMEOUT]\n",
	      stderr);
	exit(2);
}

static double number(const char *s, double lo, double hi)
{
	char *end;
	double v;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v < lo || v > hi) {
		fprintf(stderr, "hn-netperf: bad number %s (want %g..%g)\n", s, lo, hi);
		usage();
	}
	return v;
}

int main(int argc, char **argv)
{
	const char *mode, *host = NULL;
	int i = 2;
	if (argc < 2)
		usage();
	mode = argv[1];
	if (strcmp(mode, "stream") == 0 || strcmp(mode, "rr") == 0) {
		if (argc < 3)
			usage();
		host = argv[2];
		i = 3;
	} else if (strcmp(mode, "server") != 0) {
		usage();
	}
	for (; i < argc; i++) {
		if (i + 1 >= argc)
			usage();
		const char *opt = argv[i], *val = argv[++i];
		if (strcmp(opt, "-p") == 0)
			port = (int)number(val, 1, 65535);
		else if (strcmp(opt, "-t") == 0)
			seconds = number(val, 0.1, 86400);
		else if (strcmp(opt, "-m") == 0)
			msg_size = (size_t)number(val, 1, 64 << 20);
		else if (strcmp(opt, "-w") == 0)
			connect_wait = number(val, 0, 3600);
		else if (strcmp(opt, "-i") == 0)
			io_timeout = number(val, 0.1, 3600);
		else
			usage();
	}
	signal(SIGPIPE, SIG_IGN); /* a peer gone shows up as EPIPE, reported by write_all */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(mode, "server") == 0)
		return server();
	if (strcmp(mode, "stream") == 0)
		return stream(host);
	return rr(host);
}
