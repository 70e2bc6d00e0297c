/* Small helpers shared by every part of the agent: errors, logging, files, time. */
#ifndef HN_UTIL_H
#define HN_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HN_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A failed request carries an errno and a human message back to the host as ERROR. */
struct hn_err {
	int code;
	char msg[256];
};

/* Sets e (if non-NULL) and returns -code so callers can `return hn_fail(...)`. */
int hn_fail(struct hn_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Diagnostics: always to the console; also to the host as MSG_LOG once a sink is set. */
void hn_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void hn_set_log_sink(void (*sink)(const char *line, size_t len));
void hn_log_console(int fd);

/* Cannot go on: sync and reboot, which ends the VM (reboot=t, QEMU -no-reboot). */
void hn_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

int64_t hn_now_ms(void);

/* Whole-file helpers; return 0 or -errno. */
int hn_write_file(const char *path, const char *data, size_t len, int flags, mode_t mode);
int hn_read_file(const char *path, char *buf, size_t cap, size_t *len);
/* Reads a one-line sysfs attribute and strips the trailing newline. */
int hn_read_line(const char *path, char *buf, size_t cap);
int hn_mkdir_p(const char *path, mode_t mode);
/* Writes all of len bytes to a blocking fd, retrying on EINTR. */
int hn_write_all(int fd, const void *buf, size_t len);

/* [A-Za-z0-9_.-]{1,max}, and not "." or "..": safe as one path component. */
int hn_valid_name(const char *s, size_t max);

int hn_set_nonblock(int fd);

#endif
