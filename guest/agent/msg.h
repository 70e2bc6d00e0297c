/* Parsers from request payloads (TLV) to plain structs, with every bound and validity check the
 * agent relies on. Nothing here has side effects, so fuzz_decode.c runs all of it. */
#ifndef HN_MSG_H
#define HN_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Count and size limits: a request beyond them fails, the VM goes on. */
#define MSG_MAX_ARGS 4096
#define MSG_MAX_ENV 4096
#define MSG_MAX_GROUPS 256
#define MSG_MAX_MOUNTS 64
#define MSG_MAX_DEVICES 64
#define MSG_MAX_PARTITION 128 /* GPT's usual entry count */
#define MSG_MAX_IFACES 16
#define MSG_MAX_ADDRS 16
#define MSG_MAX_ROUTES 128
#define MSG_MAX_DNS 16
#define MSG_MAX_DNS_OPTION 64 /* bytes of one resolv.conf option word ("ndots:5") */
#define MSG_MAX_HOSTS_LINES 1024
#define MSG_MAX_SEED 4096
#define MSG_MAX_ARG_LEN 131072 /* the kernel's MAX_ARG_STRLEN */
#define MSG_MAX_PATH 4095
#define MSG_MAX_LINE 1024
#define MSG_MAX_CONTAINER_ID 64
#define MSG_MAX_SERIAL 20 /* virtio-blk serials are at most 20 bytes */
#define MSG_MAX_GRACE_MS 600000
#define MSG_MAX_VOLUME_NAME 63 /* "pod:<name>", name [a-z0-9-]{1,63} */
#define MSG_MAX_SOURCE (4 + MSG_MAX_VOLUME_NAME)
#define MSG_MAX_HEADERS 64
#define MSG_MAX_PROBE_PATH 2048
#define MSG_MAX_PROBE_TIMEOUT_MS 600000
#define MSG_DEFAULT_PROBE_TIMEOUT_MS 1000
#define MSG_MAX_FILES 256 /* files per WRITE_FILES */

/* Every string and array of one parsed message lives in its arena; msg_arena_free drops all. */
struct msg_arena {
	struct msg_chunk *head;
};

void msg_arena_free(struct msg_arena *a);

struct msg_cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned prefix;
};

struct msg_process {
	uint32_t process_id;
	char **argv; /* NULL-terminated, argc >= 1 */
	size_t argc;
	char **envp; /* NULL-terminated */
	size_t envc;
	const char *cwd; /* absolute, "/" by default */
	uint32_t uid, gid;
	uint32_t *groups;
	size_t ngroups;
	int terminal;
	int stdin_open;
	uint32_t rows, cols;
};

enum msg_source_kind { SOURCE_TMPFS, SOURCE_DISK, SOURCE_POD };

struct msg_mount {
	const char *source; /* "tmpfs", a disk serial, or "pod:<name>" */
	enum msg_source_kind kind;
	const char *name;    /* the disk serial or the pod volume's name (after "pod:") */
	const char *target;  /* absolute, no ".." component, not "/" */
	const char *fstype;
	const char *subpath; /* NULL, or relative without ".." components (disk and pod only) */
	uint64_t size_limit; /* tmpfs and tmpfs pod volumes; 0 = none */
	int readonly;
	const char *disk;    /* pod volume on a disk: its serial (else NULL: a tmpfs) */
	uint32_t partition;  /* with disk: 1..MSG_MAX_PARTITION, or 0 = the whole disk */
};

/* A raw disk as a block device node in the container (Kubernetes volumeDevices). */
struct msg_device {
	const char *serial;
	const char *target; /* absolute, no "." or ".." component, not "/" */
	int readonly;
};

struct msg_create {
	const char *container_id;
	const char *image_disk;
	uint64_t memory_limit;
	uint32_t fsgroup;
	int has_fsgroup;
	struct msg_mount *mounts;
	size_t nmounts;
	struct msg_device *devices;
	size_t ndevices;
	struct msg_process proc;
};

struct msg_exec {
	const char *container_id;
	struct msg_process proc;
};

struct msg_iface {
	const char *mac;
	uint8_t hwaddr[6];
	struct msg_cidr *addrs;
	size_t naddrs;
	uint32_t mtu; /* 0 = leave as is */
};

struct msg_route {
	struct msg_cidr dest;
	struct msg_cidr gateway; /* prefix unused */
	int has_gateway;
};

struct msg_setup {
	const char *hostname; /* NULL = leave as is */
	uint64_t time_ns;
	int has_time;
	int restored; /* RESTORED: re-probe the disks (a clone of a template) */
	const uint8_t *seed;
	size_t seed_len;
	const char **dns_servers;
	size_t ndns_servers;
	const char **dns_search;
	size_t ndns_search;
	const char **dns_options; /* printable, no spaces: one word each of the "options" line */
	size_t ndns_options;
	const char **hosts_lines;
	size_t nhosts_lines;
	struct msg_iface *ifaces;
	size_t nifaces;
	struct msg_route *routes;
	size_t nroutes;
};

struct msg_signal {
	uint32_t process_id;
	uint32_t signal;
};

struct msg_resize {
	uint32_t process_id;
	uint32_t rows, cols;
};

struct msg_remove {
	const char *container_id;
};

struct msg_shutdown {
	uint32_t grace_ms;
};

enum msg_probe_kind { PROBE_TCP = 1, PROBE_HTTP = 2 };

struct msg_probe {
	enum msg_probe_kind kind;
	uint8_t addr[4];  /* IPv4, network order */
	const char *host; /* as given (or "127.0.0.1"): for messages and the Host header */
	uint32_t port;
	const char *path; /* http: starts with '/', printable ASCII without spaces */
	uint32_t timeout_ms;
	const char **headers; /* http: "Name: value", no CR/LF */
	size_t nheaders;
};

struct msg_file {
	const char *path; /* relative, no empty, "." or ".." component */
	const uint8_t *data; /* into the frame's payload */
	size_t len;
	uint32_t mode;
};

struct msg_write_files {
	const char *name; /* the pod volume's name (from SOURCE "pod:<name>") */
	struct msg_file *files;
	size_t nfiles;
};

/* Each returns 0, or -errno with e set (EINVAL/EBADMSG/E2BIG/ENOMEM). */
int msg_parse_setup(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_setup *m, struct hn_err *e);
int msg_parse_create(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_create *m, struct hn_err *e);
int msg_parse_exec(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_exec *m, struct hn_err *e);
int msg_parse_signal(const uint8_t *p, size_t len, struct msg_signal *m, struct hn_err *e);
int msg_parse_resize(const uint8_t *p, size_t len, struct msg_resize *m, struct hn_err *e);
int msg_parse_remove(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_remove *m, struct hn_err *e);
struct msg_grow_fs {
	const char *serial;
	uint64_t size; /* bytes the host made the disk; 0 = whatever the guest sees now */
};

int msg_parse_shutdown(const uint8_t *p, size_t len, struct msg_shutdown *m, struct hn_err *e);
int msg_parse_grow_fs(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_grow_fs *m,
		      struct hn_err *e);
int msg_parse_probe(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_probe *m, struct hn_err *e);
int msg_parse_write_files(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_write_files *m,
			  struct hn_err *e);

/* "10.0.0.2/24", "fd00::2/64"; with want_prefix=0 a bare address (prefix = full length). */
int msg_parse_cidr(const char *s, int want_prefix, struct msg_cidr *c);
int msg_parse_mac(const char *s, uint8_t mac[6]);

#endif
