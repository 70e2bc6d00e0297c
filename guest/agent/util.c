/* Small helpers shared by every part of the agent. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int console_fd = -1;
static void (*log_sink)(const char *line, size_t len);

int hn_fail(struct hn_err *e, int code, const char *fmt, ...)
{
	if (code <= 0)
		code = EIO;
	if (e) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
		e->code = code;
	}
	return -code;
}

void hn_log_console(int fd)
{
	console_fd = fd;
}

void hn_set_log_sink(void (*sink)(const char *line, size_t len))
{
	log_sink = sink;
}

static void vlog(const char *fmt, va_list ap)
{
	char line[512];
	int n = snprintf(line, sizeof(line), "hn-agent: ");
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	size_t len;

	if (m < 0)
		m = 0;
	len = (size_t)n + (size_t)m;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	line[len] = '\0';
	if (console_fd >= 0 && write(console_fd, line, len) < 0) {
		/* nowhere left to report a console failure */
	}
	if (log_sink)
		log_sink(line, len);
}

void hn_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

void hn_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
	sync();
	if (getpid() == 1)
		reboot(RB_AUTOBOOT);
	_exit(1);
}

int64_t hn_now_ms(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int hn_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int hn_write_file(const char *path, const char *data, size_t len, int flags, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | flags, mode);
	int rc;

	if (fd < 0)
		return -errno;
	rc = hn_write_all(fd, data, len);
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	return rc;
}

int hn_read_file(const char *path, char *buf, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t off = 0;

	if (fd < 0)
		return -errno;
	while (off < cap) {
		ssize_t n = read(fd, buf + off, cap - off);
		if (n < 0) {
			int e = errno;
			if (e == EINTR)
				continue;
			close(fd);
			return -e;
		}
		if (n == 0)
			break;
		off += (size_t)n;
	}
	close(fd);
	*len = off;
	return 0;
}

int hn_read_line(const char *path, char *buf, size_t cap)
{
	size_t len = 0;
	int rc;

	if (cap == 0)
		return -EINVAL;
	rc = hn_read_file(path, buf, cap - 1, &len);
	if (rc < 0)
		return rc;
	buf[len] = '\0';
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	return 0;
}

int hn_mkdir_p(const char *path, mode_t mode)
{
	char tmp[4096];
	int n = snprintf(tmp, sizeof(tmp), "%s", path);

	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int hn_valid_name(const char *s, size_t max)
{
	size_t n = 0;

	if (!s || !*s || !strcmp(s, ".") || !strcmp(s, ".."))
		return 0;
	for (; s[n]; n++) {
		char c = s[n];
		if (n >= max)
			return 0;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return 0;
	}
	return 1;
}

int hn_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}
