/* Request parsers: TLV payload -> structs, validating every field the agent will act on. */
#include "msg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "codec.h"

struct msg_chunk {
	struct msg_chunk *next;
	max_align_t data[];
};

static void *arena_alloc(struct msg_arena *a, size_t n, size_t size)
{
	struct msg_chunk *c;

	if (size && n > (SIZE_MAX - sizeof(*c)) / size)
		return NULL;
	c = calloc(1, sizeof(*c) + n * size + 1);
	if (!c)
		return NULL;
	c->next = a->head;
	a->head = c;
	return c->data;
}

void msg_arena_free(struct msg_arena *a)
{
	while (a->head) {
		struct msg_chunk *c = a->head;
		a->head = c->next;
		free(c);
	}
}

/* Copies a validated string value into the arena (NUL-terminated). */
static int get_str(struct msg_arena *a, const struct tlv *t, size_t max, const char **out,
		   struct hn_err *e, const char *what)
{
	char *s;

	if (tlv_str_check(t, max) < 0)
		return hn_fail(e, EINVAL, "%s: bad string (too long or contains NUL)", what);
	s = arena_alloc(a, t->len + 1, 1);
	if (!s)
		return hn_fail(e, ENOMEM, "%s: out of memory", what);
	memcpy(s, t->val, t->len);
	s[t->len] = '\0';
	*out = s;
	return 0;
}

static int get_u32(const struct tlv *t, uint32_t *v, struct hn_err *e, const char *what)
{
	if (tlv_u32(t, v) < 0)
		return hn_fail(e, EINVAL, "%s: expected a 4-byte u32", what);
	return 0;
}

static int get_u64(const struct tlv *t, uint64_t *v, struct hn_err *e, const char *what)
{
	if (tlv_u64(t, v) < 0)
		return hn_fail(e, EINVAL, "%s: expected an 8-byte u64", what);
	return 0;
}

static int get_bool(const struct tlv *t, int *v, struct hn_err *e, const char *what)
{
	if (tlv_bool(t, v) < 0)
		return hn_fail(e, EINVAL, "%s: expected a bool (one byte 0 or 1)", what);
	return 0;
}

/* Structural pass: counts occurrences of tags[i] into counts[i]; fails on malformed TLV. */
static int count_tags(const uint8_t *p, size_t len, const uint16_t *tags, size_t *counts,
		      size_t ntags, struct hn_err *e, const char *what)
{
	struct tlv_iter it;
	struct tlv t;
	int rc;

	memset(counts, 0, ntags * sizeof(*counts));
	tlv_iter_init(&it, p, len);
	while ((rc = tlv_next(&it, &t)) > 0)
		for (size_t i = 0; i < ntags; i++)
			if (t.tag == tags[i])
				counts[i]++;
	if (rc < 0)
		return hn_fail(e, EBADMSG, "%s: malformed TLV", what);
	return 0;
}

static int no_newline(const char *s)
{
	return !strchr(s, '\n') && !strchr(s, '\r');
}

/* Non-empty, and only ASCII 0x21..0x7e: one word of a config line, nothing that ends or splits it. */
static int printable_word(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

int msg_parse_mac(const char *s, uint8_t mac[6])
{
	for (int i = 0; i < 6; i++) {
		unsigned v = 0;
		for (int j = 0; j < 2; j++) {
			char c = *s++;
			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v |= (unsigned)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F')
				v |= (unsigned)(c - 'A' + 10);
			else
				return -EINVAL;
		}
		mac[i] = (uint8_t)v;
		if (*s != (i == 5 ? '\0' : ':'))
			return -EINVAL;
		s++;
	}
	return 0;
}

int msg_parse_cidr(const char *s, int want_prefix, struct msg_cidr *c)
{
	char tmp[64];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned maxp;

	if (alen == 0 || alen >= sizeof(tmp) || (want_prefix && !slash) || (!want_prefix && slash))
		return -EINVAL;
	memcpy(tmp, s, alen);
	tmp[alen] = '\0';
	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, tmp, c->addr) == 1) {
		c->family = AF_INET;
		maxp = 32;
	} else if (inet_pton(AF_INET6, tmp, c->addr) == 1) {
		c->family = AF_INET6;
		maxp = 128;
	} else {
		return -EINVAL;
	}
	c->prefix = maxp;
	if (slash) {
		const char *d = slash + 1;
		unsigned v = 0;
		if (!*d || strlen(d) > 3)
			return -EINVAL;
		for (; *d; d++) {
			if (*d < '0' || *d > '9')
				return -EINVAL;
			v = v * 10 + (unsigned)(*d - '0');
		}
		if (v > maxp)
			return -EINVAL;
		c->prefix = v;
	}
	return 0;
}

static int parse_process(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_process *m,
			 struct hn_err *e)
{
	static const uint16_t tags[] = {TAG_ARG, TAG_ENV, TAG_GROUP};
	size_t n[3], ia = 0, ie = 0, ig = 0;
	struct tlv_iter it;
	struct tlv t;
	int rc;

	memset(m, 0, sizeof(*m));
	m->cwd = "/";
	rc = count_tags(p, len, tags, n, 3, e, "PROCESS");
	if (rc < 0)
		return rc;
	if (n[0] == 0)
		return hn_fail(e, EINVAL, "PROCESS: at least one ARG is required");
	if (n[0] > MSG_MAX_ARGS || n[1] > MSG_MAX_ENV || n[2] > MSG_MAX_GROUPS)
		return hn_fail(e, E2BIG, "PROCESS: too many ARG, ENV or GROUP fields");
	m->argv = arena_alloc(a, n[0] + 1, sizeof(char *));
	m->envp = arena_alloc(a, n[1] + 1, sizeof(char *));
	m->groups = arena_alloc(a, n[2] + 1, sizeof(uint32_t));
	if (!m->argv || !m->envp || !m->groups)
		return hn_fail(e, ENOMEM, "PROCESS: out of memory");

	tlv_iter_init(&it, p, len);
	while (tlv_next(&it, &t) > 0) {
		const char *s;
		switch (t.tag) {
		case TAG_PROCESS_ID:
			rc = get_u32(&t, &m->process_id, e, "PROCESS_ID");
			break;
		case TAG_ARG:
			rc = get_str(a, &t, MSG_MAX_ARG_LEN, &s, e, "ARG");
			m->argv[ia++] = (char *)s;
			break;
		case TAG_ENV:
			rc = get_str(a, &t, MSG_MAX_ARG_LEN, &s, e, "ENV");
			if (rc == 0 && (!strchr(s, '=') || s[0] == '='))
				rc = hn_fail(e, EINVAL, "ENV: expected KEY=VALUE");
			m->envp[ie++] = (char *)s;
			break;
		case TAG_CWD:
			rc = get_str(a, &t, MSG_MAX_PATH, &m->cwd, e, "CWD");
			if (rc == 0 && m->cwd[0] != '/')
				rc = hn_fail(e, EINVAL, "CWD: must be absolute");
			break;
		case TAG_UID:
			rc = get_u32(&t, &m->uid, e, "UID");
			break;
		case TAG_GID:
			rc = get_u32(&t, &m->gid, e, "GID");
			break;
		case TAG_GROUP:
			rc = get_u32(&t, &m->groups[ig++], e, "GROUP");
			break;
		case TAG_TERMINAL:
			rc = get_bool(&t, &m->terminal, e, "TERMINAL");
			break;
		case TAG_STDIN:
			rc = get_bool(&t, &m->stdin_open, e, "STDIN");
			break;
		case TAG_ROWS:
			rc = get_u32(&t, &m->rows, e, "ROWS");
			break;
		case TAG_COLS:
			rc = get_u32(&t, &m->cols, e, "COLS");
			break;
		default:
			rc = 0; /* unknown tags are skipped */
		}
		if (rc < 0)
			return rc;
	}
	m->argc = ia;
	m->envc = ie;
	m->ngroups = ig;
	if (m->process_id == 0)
		return hn_fail(e, EINVAL, "PROCESS: PROCESS_ID is required and must not be 0");
	if (m->argv[0][0] == '\0')
		return hn_fail(e, EINVAL, "PROCESS: ARG[0] is empty");
	if (m->uid == (uint32_t)-1 || m->gid == (uint32_t)-1)
		return hn_fail(e, EINVAL, "PROCESS: UID/GID 4294967295 is invalid");
	if (m->rows > 65535 || m->cols > 65535)
		return hn_fail(e, EINVAL, "PROCESS: ROWS/COLS out of range");
	return 0;
}

/* Absolute, no "." or ".." component, not "/" itself: a mount target inside the rootfs. */
static int valid_target(const char *s)
{
	const char *c = s;

	if (s[0] != '/' || s[1] == '\0')
		return 0;
	while (*c) {
		const char *next;
		size_t n;
		while (*c == '/')
			c++;
		next = strchr(c, '/');
		n = next ? (size_t)(next - c) : strlen(c);
		if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return 0;
		c += n;
	}
	return 1;
}

/* Relative, no ".." component: a sub-path inside a volume. */
static int valid_subpath(const char *s)
{
	const char *c = s;

	if (s[0] == '/')
		return 0;
	while (*c) {
		const char *next;
		size_t n;
		while (*c == '/')
			c++;
		next = strchr(c, '/');
		n = next ? (size_t)(next - c) : strlen(c);
		if (n == 2 && c[0] == '.' && c[1] == '.')
			return 0;
		c += n;
	}
	return 1;
}

/* [a-z0-9-]{1,63}: a pod volume's name. */
static int valid_volume_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > MSG_MAX_VOLUME_NAME)
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
			return 0;
	return 1;
}

static int parse_mount(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_mount *m,
		       struct hn_err *e)
{
	struct tlv_iter it;
	struct tlv t;
	int rc, has_partition = 0;

	memset(m, 0, sizeof(*m));
	tlv_iter_init(&it, p, len);
	while ((rc = tlv_next(&it, &t)) > 0) {
		switch (t.tag) {
		case TAG_SOURCE:
			rc = get_str(a, &t, MSG_MAX_SOURCE, &m->source, e, "SOURCE");
			break;
		case TAG_DISK:
			rc = get_str(a, &t, MSG_MAX_SERIAL, &m->disk, e, "DISK");
			break;
		case TAG_PARTITION:
			rc = get_u32(&t, &m->partition, e, "PARTITION");
			has_partition = 1;
			break;
		case TAG_TARGET:
			rc = get_str(a, &t, MSG_MAX_PATH, &m->target, e, "TARGET");
			break;
		case TAG_FSTYPE:
			rc = get_str(a, &t, 16, &m->fstype, e, "FSTYPE");
			break;
		case TAG_READONLY:
			rc = get_bool(&t, &m->readonly, e, "READONLY");
			break;
		case TAG_SUBPATH:
			rc = get_str(a, &t, MSG_MAX_PATH, &m->subpath, e, "SUBPATH");
			break;
		case TAG_SIZE_LIMIT:
			rc = get_u64(&t, &m->size_limit, e, "SIZE_LIMIT");
			break;
		default:
			rc = 0;
		}
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return hn_fail(e, EBADMSG, "MOUNT: malformed TLV");
	if (!m->source)
		return hn_fail(e, EINVAL, "MOUNT: SOURCE is required");
	if (!strncmp(m->source, "pod:", 4)) {
		m->kind = SOURCE_POD;
		m->name = m->source + 4;
		if (!valid_volume_name(m->name))
			return hn_fail(e, EINVAL, "MOUNT: pod volume names must match [a-z0-9-]{1,63}");
	} else if (!strcmp(m->source, "tmpfs")) {
		m->kind = SOURCE_TMPFS;
		m->name = m->source;
	} else if (hn_valid_name(m->source, MSG_MAX_SERIAL)) {
		m->kind = SOURCE_DISK;
		m->name = m->source;
	} else {
		return hn_fail(e, EINVAL, "MOUNT: SOURCE must be \"tmpfs\", \"pod:<name>\" or a disk serial");
	}
	if (!m->target || !valid_target(m->target))
		return hn_fail(e, EINVAL, "MOUNT: TARGET must be an absolute path without . or ..");
	if (m->subpath && !m->subpath[0])
		m->subpath = NULL; /* Kubernetes: an empty subPath is the whole volume */
	if (m->subpath && !valid_subpath(m->subpath))
		return hn_fail(e, EINVAL, "MOUNT: SUBPATH must be relative without .. components");
	if (m->subpath && m->kind == SOURCE_TMPFS)
		return hn_fail(e, EINVAL, "MOUNT: SUBPATH needs a disk or pod volume SOURCE");
	if (m->disk && (m->kind != SOURCE_POD || !hn_valid_name(m->disk, MSG_MAX_SERIAL)))
		return hn_fail(e, EINVAL, "MOUNT: DISK must be a disk serial, with a pod volume SOURCE");
	if (has_partition && (!m->disk || m->partition > MSG_MAX_PARTITION))
		return hn_fail(e, EINVAL, "MOUNT: PARTITION needs DISK and is at most %d", MSG_MAX_PARTITION);
	if (!m->fstype)
		m->fstype = m->kind == SOURCE_DISK || m->disk ? "ext4" : "tmpfs";
	if (m->kind != SOURCE_DISK && !m->disk && strcmp(m->fstype, "tmpfs"))
		return hn_fail(e, EINVAL, "MOUNT: FSTYPE of a tmpfs or pod volume must be tmpfs");
	if (m->disk && !strcmp(m->fstype, "tmpfs"))
		return hn_fail(e, EINVAL, "MOUNT: FSTYPE of a pod volume on a disk cannot be tmpfs");
	for (const char *c = m->fstype; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
			return hn_fail(e, EINVAL, "MOUNT: bad FSTYPE");
	if (!m->fstype[0])
		return hn_fail(e, EINVAL, "MOUNT: bad FSTYPE");
	return 0;
}

static int parse_device(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_device *m,
			struct hn_err *e)
{
	struct tlv_iter it;
	struct tlv t;
	int rc;

	memset(m, 0, sizeof(*m));
	tlv_iter_init(&it, p, len);
	while ((rc = tlv_next(&it, &t)) > 0) {
		if (t.tag == TAG_SOURCE)
			rc = get_str(a, &t, MSG_MAX_SERIAL, &m->serial, e, "DEVICE SOURCE");
		else if (t.tag == TAG_TARGET)
			rc = get_str(a, &t, MSG_MAX_PATH, &m->target, e, "DEVICE TARGET");
		else if (t.tag == TAG_READONLY)
			rc = get_bool(&t, &m->readonly, e, "DEVICE READONLY");
		else
			rc = 0;
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return hn_fail(e, EBADMSG, "DEVICE: malformed TLV");
	if (!m->serial || !hn_valid_name(m->serial, MSG_MAX_SERIAL))
		return hn_fail(e, EINVAL, "DEVICE: SOURCE must be a disk serial");
	if (!m->target || !valid_target(m->target))
		return hn_fail(e, EINVAL, "DEVICE: TARGET must be an absolute path without . or ..");
	return 0;
}

int msg_parse_create(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_create *m,
		     struct hn_err *e)
{
	static const uint16_t tags[] = {TAG_MOUNT, TAG_PROCESS, TAG_DEVICE};
	size_t n[3], im = 0, id = 0;
	struct tlv_iter it;
	struct tlv t;
	int rc;

	memset(m, 0, sizeof(*m));
	rc = count_tags(p, len, tags, n, 3, e, "CREATE");
	if (rc < 0)
		return rc;
	if (n[0] > MSG_MAX_MOUNTS)
		return hn_fail(e, E2BIG, "CREATE: more than %d MOUNT fields", MSG_MAX_MOUNTS);
	if (n[1] == 0)
		return hn_fail(e, EINVAL, "CREATE: PROCESS is required");
	if (n[2] > MSG_MAX_DEVICES)
		return hn_fail(e, E2BIG, "CREATE: more than %d DEVICE fields", MSG_MAX_DEVICES);
	m->mounts = arena_alloc(a, n[0] + 1, sizeof(*m->mounts));
	m->devices = arena_alloc(a, n[2] + 1, sizeof(*m->devices));
	if (!m->mounts || !m->devices)
		return hn_fail(e, ENOMEM, "CREATE: out of memory");
	tlv_iter_init(&it, p, len);
	while (tlv_next(&it, &t) > 0) {
		switch (t.tag) {
		case TAG_CONTAINER_ID:
			rc = get_str(a, &t, MSG_MAX_CONTAINER_ID, &m->container_id, e, "CONTAINER_ID");
			break;
		case TAG_IMAGE_DISK:
			rc = get_str(a, &t, MSG_MAX_SERIAL, &m->image_disk, e, "IMAGE_DISK");
			break;
		case TAG_MEMORY_LIMIT:
			rc = tlv_u64(&t, &m->memory_limit) < 0
				     ? hn_fail(e, EINVAL, "MEMORY_LIMIT: expected an 8-byte u64")
				     : 0;
			break;
		case TAG_MOUNT:
			rc = parse_mount(t.val, t.len, a, &m->mounts[im++], e);
			break;
		case TAG_DEVICE:
			rc = parse_device(t.val, t.len, a, &m->devices[id++], e);
			break;
		case TAG_FSGROUP:
			rc = get_u32(&t, &m->fsgroup, e, "FSGROUP");
			m->has_fsgroup = 1;
			if (rc == 0 && m->fsgroup == (uint32_t)-1)
				rc = hn_fail(e, EINVAL, "FSGROUP: 4294967295 is invalid");
			break;
		case TAG_PROCESS:
			rc = parse_process(t.val, t.len, a, &m->proc, e);
			break;
		default:
			rc = 0;
		}
		if (rc < 0)
			return rc;
	}
	m->nmounts = im;
	m->ndevices = id;
	if (!m->container_id || !hn_valid_name(m->container_id, MSG_MAX_CONTAINER_ID))
		return hn_fail(e, EINVAL, "CREATE: CONTAINER_ID must match [a-zA-Z0-9_.-]{1,64}");
	if (!m->image_disk || !hn_valid_name(m->image_disk, MSG_MAX_SERIAL))
		return hn_fail(e, EINVAL, "CREATE: IMAGE_DISK must be a disk serial");
	return 0;
}

int msg_parse_exec(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_exec *m,
		   struct hn_err *e)
{
	struct tlv_iter it;
	struct tlv t;
	int rc, have_proc = 0;

	memset(m, 0, sizeof(*m));
	tlv_iter_init(&it, p, len);
	while ((rc = tlv_next(&it, &t)) > 0) {
		if (t.tag == TAG_CONTAINER_ID)
			rc = get_str(a, &t, MSG_MAX_CONTAINER_ID, &m->container_id, e, "CONTAINER_ID");
		else if (t.tag == TAG_PROCESS) {
			rc = parse_process(t.val, t.len, a, &m->proc, e);
			have_proc = 1;
		} else
			rc = 0;
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return hn_fail(e, EBADMSG, "EXEC: malformed TLV");
	if (!m->container_id || !hn_valid_name(m->container_id, MSG_MAX_CONTAINER_ID))
		return hn_fail(e, EINVAL, "EXEC: CONTAINER_ID must match [a-zA-Z0-9_.-]{1,64}");
	if (!have_proc)
		return hn_fail(e, EINVAL, "EXEC: PROCESS is required");
	return 0;
}

static int parse_iface(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_iface *m,
		       struct hn_err *e)
{
	static const uint16_t tags[] = {TAG_ADDRESS};
	size_t n;
	struct tlv_iter it;
	struct tlv t;
	int rc;

	memset(m, 0, sizeof(*m));
	rc = count_tags(p, len, tags, &n, 1, e, "IFACE");
	if (rc < 0)
		return rc;
	if (n > MSG_MAX_ADDRS)
		return hn_fail(e, E2BIG, "IFACE: more than %d ADDRESS fields", MSG_MAX_ADDRS);
	m->addrs = arena_alloc(a, n + 1, sizeof(*m->addrs));
	if (!m->addrs)
		return hn_fail(e, ENOMEM, "IFACE: out of memory");
	tlv_iter_init(&it, p, len);
	while (tlv_next(&it, &t) > 0) {
		const char *s;
		switch (t.tag) {
		case TAG_MAC:
			rc = get_str(a, &t, 17, &m->mac, e, "MAC");
			if (rc == 0 && msg_parse_mac(m->mac, m->hwaddr) < 0)
				rc = hn_fail(e, EINVAL, "MAC: expected aa:bb:cc:dd:ee:ff");
			break;
		case TAG_ADDRESS:
			rc = get_str(a, &t, 63, &s, e, "ADDRESS");
			if (rc == 0 && msg_parse_cidr(s, 1, &m->addrs[m->naddrs++]) < 0)
				rc = hn_fail(e, EINVAL, "ADDRESS: expected ADDR/PREFIX, got \"%s\"", s);
			break;
		case TAG_MTU:
			rc = get_u32(&t, &m->mtu, e, "MTU");
			if (rc == 0 && m->mtu != 0 && (m->mtu < 68 || m->mtu > 65535))
				rc = hn_fail(e, EINVAL, "MTU: out of range");
			break;
		default:
			rc = 0;
		}
		if (rc < 0)
			return rc;
	}
	if (!m->mac)
		return hn_fail(e, EINVAL, "IFACE: MAC is required");
	return 0;
}

static int parse_route(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_route *m,
		       struct hn_err *e)
{
	struct tlv_iter it;
	struct tlv t;
	int rc, have_dest = 0;

	memset(m, 0, sizeof(*m));
	tlv_iter_init(&it, p, len);
	while ((rc = tlv_next(&it, &t)) > 0) {
		const char *s;
		if (t.tag == TAG_DEST) {
			rc = get_str(a, &t, 63, &s, e, "DEST");
			if (rc == 0 && msg_parse_cidr(s, 1, &m->dest) < 0)
				rc = hn_fail(e, EINVAL, "DEST: expected ADDR/PREFIX, got \"%s\"", s);
			have_dest = 1;
		} else if (t.tag == TAG_GATEWAY) {
			rc = get_str(a, &t, 63, &s, e, "GATEWAY");
			if (rc == 0 && msg_parse_cidr(s, 0, &m->gateway) < 0)
				rc = hn_fail(e, EINVAL, "GATEWAY: expected an address, got \"%s\"", s);
			m->has_gateway = 1;
		} else
			rc = 0;
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return hn_fail(e, EBADMSG, "ROUTE: malformed TLV");
	if (!have_dest)
		return hn_fail(e, EINVAL, "ROUTE: DEST is required");
	if (m->has_gateway && m->gateway.family != m->dest.family)
		return hn_fail(e, EINVAL, "ROUTE: DEST and GATEWAY address families differ");
	return 0;
}

int msg_parse_setup(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_setup *m,
		    struct hn_err *e)
{
	static const uint16_t tags[] = {TAG_DNS_SERVER, TAG_DNS_SEARCH, TAG_HOSTS_LINE, TAG_IFACE,
					TAG_ROUTE, TAG_DNS_OPTION};
	size_t n[6];
	struct tlv_iter it;
	struct tlv t;
	int rc;

	memset(m, 0, sizeof(*m));
	rc = count_tags(p, len, tags, n, 6, e, "SETUP");
	if (rc < 0)
		return rc;
	if (n[0] > MSG_MAX_DNS || n[1] > MSG_MAX_DNS || n[2] > MSG_MAX_HOSTS_LINES ||
	    n[3] > MSG_MAX_IFACES || n[4] > MSG_MAX_ROUTES || n[5] > MSG_MAX_DNS)
		return hn_fail(e, E2BIG, "SETUP: too many DNS, HOSTS_LINE, IFACE or ROUTE fields");
	m->dns_servers = arena_alloc(a, n[0] + 1, sizeof(char *));
	m->dns_search = arena_alloc(a, n[1] + 1, sizeof(char *));
	m->hosts_lines = arena_alloc(a, n[2] + 1, sizeof(char *));
	m->ifaces = arena_alloc(a, n[3] + 1, sizeof(*m->ifaces));
	m->routes = arena_alloc(a, n[4] + 1, sizeof(*m->routes));
	m->dns_options = arena_alloc(a, n[5] + 1, sizeof(char *));
	if (!m->dns_servers || !m->dns_search || !m->hosts_lines || !m->ifaces || !m->routes ||
	    !m->dns_options)
		return hn_fail(e, ENOMEM, "SETUP: out of memory");

	tlv_iter_init(&it, p, len);
	while (tlv_next(&it, &t) > 0) {
		const char *s = NULL;
		switch (t.tag) {
		case TAG_HOSTNAME:
			rc = get_str(a, &t, 64, &m->hostname, e, "HOSTNAME");
			if (rc == 0 && (!m->hostname[0] || !no_newline(m->hostname) ||
					strchr(m->hostname, ' ') || strchr(m->hostname, '/')))
				rc = hn_fail(e, EINVAL, "HOSTNAME: invalid");
			break;
		case TAG_TIME_NS:
			rc = tlv_u64(&t, &m->time_ns) < 0
				     ? hn_fail(e, EINVAL, "TIME_NS: expected an 8-byte u64")
				     : 0;
			m->has_time = 1;
			break;
		case TAG_RANDOM_SEED:
			rc = 0;
			if (t.len > MSG_MAX_SEED)
				rc = hn_fail(e, E2BIG, "RANDOM_SEED: more than %d bytes", MSG_MAX_SEED);
			m->seed = t.val;
			m->seed_len = t.len;
			break;
		case TAG_DNS_SERVER:
			rc = get_str(a, &t, 63, &s, e, "DNS_SERVER");
			if (rc == 0) {
				struct msg_cidr c;
				if (msg_parse_cidr(s, 0, &c) < 0)
					rc = hn_fail(e, EINVAL, "DNS_SERVER: expected an address");
			}
			m->dns_servers[m->ndns_servers++] = s;
			break;
		case TAG_DNS_SEARCH:
			rc = get_str(a, &t, 253, &s, e, "DNS_SEARCH");
			if (rc == 0 && (!s[0] || !no_newline(s) || strchr(s, ' ') || strchr(s, '\t')))
				rc = hn_fail(e, EINVAL, "DNS_SEARCH: invalid domain");
			m->dns_search[m->ndns_search++] = s;
			break;
		case TAG_DNS_OPTION:
			rc = get_str(a, &t, MSG_MAX_DNS_OPTION, &s, e, "DNS_OPTION");
			if (rc == 0 && !printable_word(s))
				rc = hn_fail(e, EINVAL, "DNS_OPTION: not one word of printable ASCII");
			m->dns_options[m->ndns_options++] = s;
			break;
		case TAG_HOSTS_LINE:
			rc = get_str(a, &t, MSG_MAX_LINE, &s, e, "HOSTS_LINE");
			if (rc == 0 && !no_newline(s))
				rc = hn_fail(e, EINVAL, "HOSTS_LINE: contains a newline");
			m->hosts_lines[m->nhosts_lines++] = s;
			break;
		case TAG_IFACE:
			rc = parse_iface(t.val, t.len, a, &m->ifaces[m->nifaces++], e);
			break;
		case TAG_ROUTE:
			rc = parse_route(t.val, t.len, a, &m->routes[m->nroutes++], e);
			break;
		case TAG_RESTORED:
			rc = tlv_bool(&t, &m->restored) < 0
				     ? hn_fail(e, EINVAL, "RESTORED: expected a 1-byte bool")
				     : 0;
			break;
		default:
			rc = 0;
		}
		if (rc < 0)
			return rc;
	}
	return 0;
}

int msg_parse_signal(const uint8_t *p, size_t len, struct msg_signal *m, struct hn_err *e)
{
	struct tlv_iter it;
	struct tlv t;
	int rc;

	memset(m, 0, sizeof(*m));
	tlv_iter_init(&it, p, len);
	while ((rc = tlv_next(&it, &t)) > 0) {
		if (t.tag == TAG_PROCESS_ID)
			rc = get_u32(&t, &m->process_id, e, "PROCESS_ID");
		else if (t.tag == TAG_SIGNAL)
			rc = get_u32(&t, &m->signal, e, "SIGNAL");
		else
			rc = 0;
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return hn_fail(e, EBADMSG, "SIGNAL: malformed TLV");
	if (m->process_id == 0)
		return hn_fail(e, EINVAL, "SIGNAL: PROCESS_ID is required");
	if (m->signal < 1 || m->signal > 64)
		return hn_fail(e, EINVAL, "SIGNAL: SIGNAL must be 1..64");
	return 0;
}

int msg_parse_resize(const uint8_t *p, size_t len, struct msg_resize *m, struct hn_err *e)
{
	struct tlv_iter it;
	struct tlv t;
	int rc;

	memset(m, 0, sizeof(*m));
	tlv_iter_init(&it, p, len);
	while ((rc = tlv_next(&it, &t)) > 0) {
		if (t.tag == TAG_PROCESS_ID)
			rc = get_u32(&t, &m->process_id, e, "PROCESS_ID");
		else if (t.tag == TAG_ROWS)
			rc = get_u32(&t, &m->rows, e, "ROWS");
		else if (t.tag == TAG_COLS)
			rc = get_u32(&t, &m->cols, e, "COLS");
		else
			rc = 0;
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return hn_fail(e, EBADMSG, "RESIZE: malformed TLV");
	if (m->process_id == 0)
		return hn_fail(e, EINVAL, "RESIZE: PROCESS_ID is required");
	if (m->rows > 65535 || m->cols > 65535)
		return hn_fail(e, EINVAL, "RESIZE: ROWS/COLS out of range");
	return 0;
}

int msg_parse_remove(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_remove *m,
		     struct hn_err *e)
{
	struct tlv_iter it;
	struct tlv t;
	int rc;

	memset(m, 0, sizeof(*m));
	tlv_iter_init(&it, p, len);
	while ((rc = tlv_next(&it, &t)) > 0) {
		rc = t.tag == TAG_CONTAINER_ID
			     ? get_str(a, &t, MSG_MAX_CONTAINER_ID, &m->container_id, e, "CONTAINER_ID")
			     : 0;
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return hn_fail(e, EBADMSG, "REMOVE: malformed TLV");
	if (!m->container_id || !hn_valid_name(m->container_id, MSG_MAX_CONTAINER_ID))
		return hn_fail(e, EINVAL, "REMOVE: CONTAINER_ID must match [a-zA-Z0-9_.-]{1,64}");
	return 0;
}

int msg_parse_shutdown(const uint8_t *p, size_t len, struct msg_shutdown *m, struct hn_err *e)
{
	struct tlv_iter it;
	struct tlv t;
	int rc;

	m->grace_ms = 10000;
	tlv_iter_init(&it, p, len);
	while ((rc = tlv_next(&it, &t)) > 0) {
		rc = t.tag == TAG_GRACE_MS ? get_u32(&t, &m->grace_ms, e, "GRACE_MS") : 0;
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return hn_fail(e, EBADMSG, "SHUTDOWN: malformed TLV");
	if (m->grace_ms > MSG_MAX_GRACE_MS)
		m->grace_ms = MSG_MAX_GRACE_MS;
	return 0;
}

int msg_parse_grow_fs(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_grow_fs *m,
		      struct hn_err *e)
{
	struct tlv_iter it;
	struct tlv t;
	int rc;

	memset(m, 0, sizeof(*m));
	tlv_iter_init(&it, p, len);
	while ((rc = tlv_next(&it, &t)) > 0) {
		if (t.tag == TAG_SOURCE)
			rc = get_str(a, &t, MSG_MAX_SERIAL, &m->serial, e, "SOURCE");
		else if (t.tag == TAG_SIZE_LIMIT)
			rc = get_u64(&t, &m->size, e, "SIZE_LIMIT");
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return hn_fail(e, EBADMSG, "GROW_FS: malformed TLV");
	if (!m->serial || !hn_valid_name(m->serial, MSG_MAX_SERIAL))
		return hn_fail(e, EINVAL, "GROW_FS: SOURCE must be a disk serial");
	return 0;
}

/* Printable ASCII without spaces: safe in a request line. */
static int valid_http_path(const char *s)
{
	if (s[0] != '/')
		return 0;
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
			return 0;
	return 1;
}

/* "Name: value": a token name, then a value without CR, LF or other control bytes (tab ok). */
static int valid_header(const char *s)
{
	const char *colon = strchr(s, ':');

	if (!colon || colon == s)
		return 0;
	for (const char *c = s; c < colon; c++)
		if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f || strchr("()<>@,;\\\"/[]?={}", *c))
			return 0;
	for (const char *c = colon + 1; *c; c++)
		if (((unsigned char)*c < ' ' && *c != '\t') || (unsigned char)*c == 0x7f)
			return 0;
	return 1;
}

int msg_parse_probe(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_probe *m,
		    struct hn_err *e)
{
	static const uint16_t tags[] = {TAG_HEADER};
	const char *kind = NULL;
	size_t n;
	struct tlv_iter it;
	struct tlv t;
	int rc;

	memset(m, 0, sizeof(*m));
	m->host = "127.0.0.1";
	m->path = "/";
	m->timeout_ms = MSG_DEFAULT_PROBE_TIMEOUT_MS;
	rc = count_tags(p, len, tags, &n, 1, e, "PROBE");
	if (rc < 0)
		return rc;
	if (n > MSG_MAX_HEADERS)
		return hn_fail(e, E2BIG, "PROBE: more than %d HEADER fields", MSG_MAX_HEADERS);
	m->headers = arena_alloc(a, n + 1, sizeof(char *));
	if (!m->headers)
		return hn_fail(e, ENOMEM, "PROBE: out of memory");
	tlv_iter_init(&it, p, len);
	while (tlv_next(&it, &t) > 0) {
		const char *s = NULL;
		switch (t.tag) {
		case TAG_PROBE_KIND:
			rc = get_str(a, &t, 8, &kind, e, "PROBE_KIND");
			break;
		case TAG_PORT:
			rc = get_u32(&t, &m->port, e, "PORT");
			break;
		case TAG_HOST:
			rc = get_str(a, &t, 15, &m->host, e, "HOST");
			break;
		case TAG_PATH:
			rc = get_str(a, &t, MSG_MAX_PROBE_PATH, &m->path, e, "PATH");
			if (rc == 0 && !valid_http_path(m->path))
				rc = hn_fail(e, EINVAL, "PATH: must start with / and be printable ASCII without spaces");
			break;
		case TAG_TIMEOUT_MS:
			rc = get_u32(&t, &m->timeout_ms, e, "TIMEOUT_MS");
			break;
		case TAG_HEADER:
			rc = get_str(a, &t, MSG_MAX_LINE, &s, e, "HEADER");
			if (rc == 0 && !valid_header(s))
				rc = hn_fail(e, EINVAL, "HEADER: expected \"Name: value\" without control characters");
			m->headers[m->nheaders++] = s;
			break;
		default:
			rc = 0;
		}
		if (rc < 0)
			return rc;
	}
	if (!kind)
		return hn_fail(e, EINVAL, "PROBE: PROBE_KIND is required");
	if (!strcmp(kind, "tcp"))
		m->kind = PROBE_TCP;
	else if (!strcmp(kind, "http"))
		m->kind = PROBE_HTTP;
	else
		return hn_fail(e, EINVAL, "PROBE: PROBE_KIND must be \"tcp\" or \"http\"");
	if (m->port < 1 || m->port > 65535)
		return hn_fail(e, EINVAL, "PROBE: PORT must be 1..65535");
	if (inet_pton(AF_INET, m->host, m->addr) != 1)
		return hn_fail(e, EINVAL, "PROBE: HOST must be an IPv4 address");
	if (m->timeout_ms == 0)
		m->timeout_ms = MSG_DEFAULT_PROBE_TIMEOUT_MS;
	if (m->timeout_ms > MSG_MAX_PROBE_TIMEOUT_MS)
		return hn_fail(e, EINVAL, "PROBE: TIMEOUT_MS must be at most %d", MSG_MAX_PROBE_TIMEOUT_MS);
	return 0;
}

/* Relative, at least one component, none empty, "." or "..": a file inside a volume. */
static int valid_file_path(const char *s)
{
	const char *c = s;

	if (!*s || s[0] == '/')
		return 0;
	for (;;) {
		const char *next = strchr(c, '/');
		size_t n = next ? (size_t)(next - c) : strlen(c);
		if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return 0;
		if (!next)
			return 1;
		c = next + 1;
	}
}

static int parse_file(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_file *f,
		      struct hn_err *e)
{
	struct tlv_iter it;
	struct tlv t;
	int rc, has_data = 0;

	memset(f, 0, sizeof(*f));
	f->mode = 0644;
	tlv_iter_init(&it, p, len);
	while ((rc = tlv_next(&it, &t)) > 0) {
		if (t.tag == TAG_SUBPATH)
			rc = get_str(a, &t, MSG_MAX_PATH, &f->path, e, "FILE.SUBPATH");
		else if (t.tag == TAG_MODE)
			rc = get_u32(&t, &f->mode, e, "FILE.MODE");
		else if (t.tag == TAG_DATA) {
			f->data = t.val;
			f->len = t.len;
			has_data = 1;
		}
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return hn_fail(e, EBADMSG, "FILE: malformed TLV");
	if (!f->path || !valid_file_path(f->path))
		return hn_fail(e, EINVAL, "FILE: SUBPATH must be a relative path without empty, . or .. components");
	if (!has_data)
		return hn_fail(e, EINVAL, "FILE %s: no DATA", f->path);
	if (f->mode > 0777)
		return hn_fail(e, EINVAL, "FILE %s: MODE %o is more than permission bits", f->path, f->mode);
	return 0;
}

int msg_parse_write_files(const uint8_t *p, size_t len, struct msg_arena *a, struct msg_write_files *m,
			  struct hn_err *e)
{
	static const uint16_t tags[] = {TAG_FILE};
	const char *source = NULL;
	struct tlv_iter it;
	struct tlv t;
	size_t count;
	int rc;

	memset(m, 0, sizeof(*m));
	if (count_tags(p, len, tags, &count, 1, e, "WRITE_FILES") < 0)
		return -EBADMSG;
	if (count > MSG_MAX_FILES)
		return hn_fail(e, E2BIG, "WRITE_FILES: more than %d files", MSG_MAX_FILES);
	m->files = arena_alloc(a, count ? count : 1, sizeof(*m->files));
	if (!m->files)
		return hn_fail(e, ENOMEM, "WRITE_FILES: out of memory");
	tlv_iter_init(&it, p, len);
	while ((rc = tlv_next(&it, &t)) > 0) {
		if (t.tag == TAG_SOURCE)
			rc = get_str(a, &t, MSG_MAX_SOURCE, &source, e, "SOURCE");
		else if (t.tag == TAG_FILE)
			rc = parse_file(t.val, t.len, a, &m->files[m->nfiles++], e);
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return hn_fail(e, EBADMSG, "WRITE_FILES: malformed TLV");
	if (!source || strncmp(source, "pod:", 4) != 0 || !valid_volume_name(source + 4))
		return hn_fail(e, EINVAL, "WRITE_FILES: SOURCE must be pod:<name>, name [a-z0-9-]{1,63}");
	m->name = source + 4;
	return 0;
}
