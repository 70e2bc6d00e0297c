/* SETUP: clock, entropy, hostname, interfaces (by MAC), routes and the etc files.
 * Addresses and routes go through rtnetlink (IPv4 and IPv6 alike); link flags and MTU through
 * the classic ioctls, which are enough for that. */
#include "net.h"

#include "codec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <linux/netlink.h>
#include <linux/random.h>
#include <linux/rtnetlink.h>

static int link_set(const char *name, int up, uint32_t mtu)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rc = 0;

	if (s < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (mtu) {
		ifr.ifr_mtu = (int)mtu;
		if (ioctl(s, SIOCSIFMTU, &ifr) < 0)
			rc = -errno;
	}
	if (rc == 0 && up) {
		if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
			rc = -errno;
		else {
			ifr.ifr_flags |= IFF_UP;
			if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
				rc = -errno;
		}
	}
	close(s);
	return rc;
}

int net_lo_up(void)
{
	return link_set("lo", 1, 0);
}

/* Sends one rtnetlink request and waits for its ACK. Returns 0 or -errno (EEXIST = 0). */
static int nl_request(struct nlmsghdr *req)
{
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
	char resp[4096];
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	int rc = -EIO;
	ssize_t n;

	if (s < 0)
		return -errno;
	req->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	req->nlmsg_seq = 1;
	if (sendto(s, req, req->nlmsg_len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		goto out;
	}
	n = recv(s, resp, sizeof(resp), 0);
	if (n < 0) {
		rc = -errno;
		goto out;
	}
	for (struct nlmsghdr *h = (struct nlmsghdr *)resp; NLMSG_OK(h, (size_t)n);
	     h = NLMSG_NEXT(h, n)) {
		if (h->nlmsg_type == NLMSG_ERROR) {
			const struct nlmsgerr *err = NLMSG_DATA(h);
			if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*err)))
				break;
			rc = err->error == -EEXIST ? 0 : err->error;
			break;
		}
	}
out:
	close(s);
	return rc;
}

struct nl_req {
	struct nlmsghdr h;
	union {
		struct ifaddrmsg ifa;
		struct rtmsg rt;
	} u;
	char attrs[256];
};

static void nl_attr(struct nl_req *r, unsigned short type, const void *data, size_t len)
{
	struct rtattr *a = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->h.nlmsg_len));

	/* callers add at most three 16-byte addresses: attrs[] always has room */
	a->rta_type = type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	memcpy(RTA_DATA(a), data, len);
	r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

static size_t addr_len(int family)
{
	return family == AF_INET ? 4 : 16;
}

static int addr_add(unsigned ifindex, const struct msg_cidr *c)
{
	struct nl_req r;

	memset(&r, 0, sizeof(r));
	r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
	r.h.nlmsg_type = RTM_NEWADDR;
	r.h.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
	r.u.ifa.ifa_family = (unsigned char)c->family;
	r.u.ifa.ifa_prefixlen = (unsigned char)c->prefix;
	r.u.ifa.ifa_index = ifindex;
	/* the host assigned the address: skip IPv6 duplicate detection, which would leave it
	 * unusable ("tentative") for the first second or two */
	if (c->family == AF_INET6)
		r.u.ifa.ifa_flags = IFA_F_NODAD;
	nl_attr(&r, IFA_LOCAL, c->addr, addr_len(c->family));
	nl_attr(&r, IFA_ADDRESS, c->addr, addr_len(c->family));
	if (c->family == AF_INET && c->prefix < 31) {
		uint8_t bc[4];
		uint32_t mask = c->prefix ? ~0u << (32 - c->prefix) : 0;
		uint32_t a = (uint32_t)c->addr[0] << 24 | (uint32_t)c->addr[1] << 16 |
			     (uint32_t)c->addr[2] << 8 | c->addr[3];
		a |= ~mask;
		bc[0] = (uint8_t)(a >> 24); bc[1] = (uint8_t)(a >> 16);
		bc[2] = (uint8_t)(a >> 8); bc[3] = (uint8_t)a;
		nl_attr(&r, IFA_BROADCAST, bc, 4);
	}
	return nl_request(&r.h);
}

static int route_add(const struct msg_route *rt)
{
	struct nl_req r;

	memset(&r, 0, sizeof(r));
	r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
	r.h.nlmsg_type = RTM_NEWROUTE;
	r.h.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
	r.u.rt.rtm_family = (unsigned char)rt->dest.family;
	r.u.rt.rtm_dst_len = (unsigned char)rt->dest.prefix;
	r.u.rt.rtm_table = RT_TABLE_MAIN;
	r.u.rt.rtm_protocol = RTPROT_BOOT;
	r.u.rt.rtm_scope = RT_SCOPE_UNIVERSE;
	r.u.rt.rtm_type = RTN_UNICAST;
	if (rt->dest.prefix > 0)
		nl_attr(&r, RTA_DST, rt->dest.addr, addr_len(rt->dest.family));
	nl_attr(&r, RTA_GATEWAY, rt->gateway.addr, addr_len(rt->gateway.family));
	return nl_request(&r.h);
}

/* Finds the interface whose MAC is hw; writes its name. */
static int find_iface(const uint8_t hw[6], char *name, size_t cap)
{
	DIR *d = opendir("/sys/class/net");
	struct dirent *de;
	int rc = -ENODEV;

	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		char path[300], line[64];
		uint8_t mac[6];
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/class/net/%s/address", de->d_name);
		if (hn_read_line(path, line, sizeof(line)) < 0 || msg_parse_mac(line, mac) < 0)
			continue;
		if (memcmp(mac, hw, 6) == 0 && strlen(de->d_name) < cap) {
			memcpy(name, de->d_name, strlen(de->d_name) + 1);
			rc = 0;
			break;
		}
	}
	closedir(d);
	return rc;
}

/* The kernel marks a link operational (IFF_RUNNING) from its linkwatch work, which batches
 * events and may run up to a second after the carrier came; containers started before that see
 * the interface as down. Waits for it, bounded: a link without carrier must not stall SETUP. */
#define LINK_RUNNING_WAIT_MS 2000

static void wait_running(const char *name)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%.*s", IFNAMSIZ - 1, name);
	for (int waited = 0; waited < LINK_RUNNING_WAIT_MS; waited += 10) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000000L};
		if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0 || (ifr.ifr_flags & IFF_RUNNING))
			break;
		nanosleep(&ts, NULL);
	}
	close(s);
}

/* A clone of a template has the template's NIC, with the template's MAC: the only Ethernet
 * interface (our VMs have at most one NIC) takes the pod's MAC, which the virtio-net driver
 * also tells the device (its receive filter). */
static int take_mac(const uint8_t hw[6], char *name, size_t cap)
{
	DIR *d = opendir("/sys/class/net");
	struct dirent *de;
	struct ifreq ifr;
	int found = 0, rc = 0, s;

	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		char path[300], line[16];
		if (de->d_name[0] == '.' || strlen(de->d_name) >= cap || strlen(de->d_name) >= IFNAMSIZ)
			continue;
		snprintf(path, sizeof(path), "/sys/class/net/%s/type", de->d_name);
		if (hn_read_line(path, line, sizeof(line)) < 0 || strcmp(line, "1") != 0)
			continue; /* ARPHRD_ETHER only: not lo */
		if (found++)
			break;
		memcpy(name, de->d_name, strlen(de->d_name) + 1);
	}
	closedir(d);
	if (found != 1)
		return -ENODEV;
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, name, strlen(name) + 1);
	ifr.ifr_hwaddr.sa_family = 1; /* ARPHRD_ETHER */
	memcpy(ifr.ifr_hwaddr.sa_data, hw, 6);
	if (ioctl(s, SIOCSIFHWADDR, &ifr) < 0)
		rc = -errno;
	close(s);
	return rc;
}

static int setup_iface(const struct msg_iface *f, int restored, struct hn_err *e)
{
	char name[IFNAMSIZ + 1];
	unsigned idx;
	int rc = find_iface(f->hwaddr, name, sizeof(name));

	if (rc < 0 && restored)
		rc = take_mac(f->hwaddr, name, sizeof(name));
	if (rc < 0)
		return hn_fail(e, -rc, "IFACE %s: no interface with that MAC", f->mac);
	idx = if_nametoindex(name);
	if (idx == 0)
		return hn_fail(e, errno, "IFACE %s: if_nametoindex(%s): %s", f->mac, name, strerror(errno));
	rc = link_set(name, 1, f->mtu);
	if (rc < 0)
		return hn_fail(e, -rc, "IFACE %s (%s): set MTU/up: %s", f->mac, name, strerror(-rc));
	for (size_t i = 0; i < f->naddrs; i++) {
		rc = addr_add(idx, &f->addrs[i]);
		if (rc < 0)
			return hn_fail(e, -rc, "IFACE %s (%s): add address #%zu: %s", f->mac, name, i + 1,
				       strerror(-rc));
	}
	wait_running(name);
	return 0;
}

static int add_entropy(const uint8_t *seed, size_t len)
{
	struct rand_pool_info *info;
	int fd, rc = 0;

	if (len == 0)
		return 0;
	info = calloc(1, sizeof(*info) + len + 4);
	if (!info)
		return -ENOMEM;
	info->entropy_count = (int)(len * 8);
	info->buf_size = (int)len;
	memcpy(info->buf, seed, len);
	fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	/* Reseed the CRNG now: once it is initialised, added entropy is otherwise used only at its
	 * next periodic reseed, and clones of one template would meanwhile draw the same bytes. */
	if (fd < 0 || ioctl(fd, RNDADDENTROPY, info) < 0 || ioctl(fd, RNDRESEEDCRNG) < 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	free(info);
	return rc;
}

/* Builds a file from lines in a growing buffer (sizes are bounded by the parser). */
static int write_etc(const char *name, const char *const *lines, size_t n, const char *fallback)
{
	char path[64];
	struct buf b = {0};
	int rc = 0;

	snprintf(path, sizeof(path), HN_ETC_DIR "/%s", name);
	for (size_t i = 0; i < n && rc == 0; i++)
		if (buf_put(&b, lines[i], strlen(lines[i])) < 0 || buf_put(&b, "\n", 1) < 0)
			rc = -ENOMEM;
	if (rc == 0 && n == 0 && fallback)
		rc = buf_put(&b, fallback, strlen(fallback));
	if (rc == 0)
		rc = hn_write_file(path, (const char *)b.p, b.len, O_CREAT | O_TRUNC, 0644);
	buf_free(&b);
	return rc;
}

#define DEFAULT_HOSTS "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"

int net_write_default_etc(void)
{
	char host[65] = "localhost";
	const char *line = host;
	int rc = hn_mkdir_p(HN_ETC_DIR, 0755);

	if (gethostname(host, sizeof(host) - 1) < 0)
		snprintf(host, sizeof(host), "localhost");
	if (rc == 0)
		rc = write_etc("hostname", &line, 1, NULL);
	if (rc == 0)
		rc = write_etc("hosts", NULL, 0, DEFAULT_HOSTS);
	if (rc == 0)
		rc = write_etc("resolv.conf", NULL, 0, "");
	return rc;
}

static int write_resolv(const struct msg_setup *m)
{
	struct buf b = {0};
	char path[] = HN_ETC_DIR "/resolv.conf";
	int rc = 0;

	for (size_t i = 0; i < m->ndns_servers && rc == 0; i++)
		if (buf_put(&b, "nameserver ", 11) < 0 ||
		    buf_put(&b, m->dns_servers[i], strlen(m->dns_servers[i])) < 0 ||
		    buf_put(&b, "\n", 1) < 0)
			rc = -ENOMEM;
	if (m->ndns_search > 0 && rc == 0) {
		if (buf_put(&b, "search", 6) < 0)
			rc = -ENOMEM;
		for (size_t i = 0; i < m->ndns_search && rc == 0; i++)
			if (buf_put(&b, " ", 1) < 0 ||
			    buf_put(&b, m->dns_search[i], strlen(m->dns_search[i])) < 0)
				rc = -ENOMEM;
		if (rc == 0 && buf_put(&b, "\n", 1) < 0)
			rc = -ENOMEM;
	}
	if (m->ndns_options > 0 && rc == 0) {
		if (buf_put(&b, "options", 7) < 0)
			rc = -ENOMEM;
		for (size_t i = 0; i < m->ndns_options && rc == 0; i++)
			if (buf_put(&b, " ", 1) < 0 ||
			    buf_put(&b, m->dns_options[i], strlen(m->dns_options[i])) < 0)
				rc = -ENOMEM;
		if (rc == 0 && buf_put(&b, "\n", 1) < 0)
			rc = -ENOMEM;
	}
	if (rc == 0)
		rc = hn_write_file(path, b.p ? (const char *)b.p : "", b.len, O_CREAT | O_TRUNC, 0644);
	buf_free(&b);
	return rc;
}

#define VIRTIO_BLK_DRIVER "/sys/bus/virtio/drivers/virtio_blk"
#define MAX_REPROBE 32

/* A clone of a template probed its disks as the template's placeholders, which have no sectors
 * (so nothing of them was read, nor is cached). Unbinding and binding each virtio-blk device
 * makes the kernel probe the pod's disk behind the slot: its size and partition table. */
static int reprobe_disks(void)
{
	char names[MAX_REPROBE][32];
	size_t n = 0;
	struct dirent *de;
	DIR *d = opendir(VIRTIO_BLK_DRIVER);
	int rc = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d)) != NULL && n < MAX_REPROBE) {
		size_t len = strlen(de->d_name);
		if (strncmp(de->d_name, "virtio", 6) == 0 && len < sizeof(names[0]))
			memcpy(names[n++], de->d_name, len + 1);
	}
	closedir(d);
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = hn_write_file(VIRTIO_BLK_DRIVER "/unbind", names[i], strlen(names[i]), 0, 0);
		if (rc == 0)
			rc = hn_write_file(VIRTIO_BLK_DRIVER "/bind", names[i], strlen(names[i]), 0, 0);
	}
	return rc;
}

int net_setup(const struct msg_setup *m, struct hn_err *e)
{
	int rc;

	if (m->has_time) {
		struct timespec ts = {.tv_sec = (time_t)(m->time_ns / 1000000000u),
				      .tv_nsec = (long)(m->time_ns % 1000000000u)};
		if (clock_settime(CLOCK_REALTIME, &ts) < 0)
			return hn_fail(e, errno, "set clock: %s", strerror(errno));
	}
	rc = add_entropy(m->seed, m->seed_len);
	if (rc < 0)
		return hn_fail(e, -rc, "RNDADDENTROPY: %s", strerror(-rc));
	if (m->restored) {
		rc = reprobe_disks();
		if (rc < 0)
			return hn_fail(e, -rc, "re-probe disks: %s", strerror(-rc));
	}
	if (m->hostname) {
		if (sethostname(m->hostname, strlen(m->hostname)) < 0)
			return hn_fail(e, errno, "sethostname: %s", strerror(errno));
		rc = write_etc("hostname", &m->hostname, 1, NULL);
		if (rc < 0)
			return hn_fail(e, -rc, "write hostname: %s", strerror(-rc));
	}
	for (size_t i = 0; i < m->nifaces; i++) {
		rc = setup_iface(&m->ifaces[i], m->restored, e);
		if (rc < 0)
			return rc;
	}
	for (size_t i = 0; i < m->nroutes; i++) {
		if (!m->routes[i].has_gateway)
			return hn_fail(e, EINVAL, "ROUTE #%zu: GATEWAY is required", i + 1);
		rc = route_add(&m->routes[i]);
		if (rc < 0)
			return hn_fail(e, -rc, "ROUTE #%zu: %s", i + 1, strerror(-rc));
	}
	rc = write_resolv(m);
	if (rc == 0)
		rc = write_etc("hosts", m->hosts_lines, m->nhosts_lines, DEFAULT_HOSTS);
	if (rc < 0)
		return hn_fail(e, -rc, "write %s files: %s", HN_ETC_DIR, strerror(-rc));
	return 0;
}
