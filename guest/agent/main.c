/* hn-agent: PID 1 of a Hypernetes pod VM. Boots the guest's filesystems, opens the control port
 * and serves guest-protocol requests (docs/guest-protocol.md) from one epoll loop. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chan.h"
#include "codec.h"
#include "container.h"
#include "loop.h"
#include "mount.h"
#include "msg.h"
#include "net.h"
#include "probe.h"
#include "process.h"
#include "util.h"

#ifndef HN_AGENT_VERSION
#define HN_AGENT_VERSION "dev"
#endif
#define AGENT_NAME "hn-agent " HN_AGENT_VERSION " (proto " "1" ")"
#define PORT_WAIT_MS 30000
#define SHUTDOWN_KILL_WAIT_MS 3000

static int setup_done;

static struct {
	int active;
	int killed; /* SIGKILL sent after the grace period */
	uint32_t req;
	uint32_t conv; /* chan_conversation() of the SHUTDOWN */
	int64_t deadline;
} shutdown_state;

/* ---- replies ---- */

void reply_ack(uint32_t id, int has_pid, uint32_t pid)
{
	struct buf b = {0};

	if (has_pid && tlv_put_u32(&b, TAG_PID, pid) < 0) {
		hn_log("out of memory replying to %u", id);
		return;
	}
	chan_send(MSG_ACK, id, b.p, b.len);
	buf_free(&b);
}

static void reply_error(uint32_t id, const struct hn_err *e)
{
	struct buf b = {0};

	if (tlv_put_u32(&b, TAG_ERRNO, (uint32_t)e->code) == 0 &&
	    tlv_put_str(&b, TAG_MESSAGE, e->msg) == 0)
		chan_send(MSG_ERROR, id, b.p, b.len);
	buf_free(&b);
}

static void reply(uint32_t id, int rc, const struct hn_err *e)
{
	if (rc < 0)
		reply_error(id, e);
	else
		reply_ack(id, 0, 0);
}

static void reply_ready(uint32_t id)
{
	struct buf b = {0};

	if (tlv_put_u32(&b, TAG_VERSION, PROTO_VERSION) == 0 &&
	    tlv_put_str(&b, TAG_AGENT, AGENT_NAME) == 0)
		chan_send(MSG_READY, id, b.p, b.len);
	buf_free(&b);
}

/* ---- shutdown ---- */

static __attribute__((noreturn)) void power_off(void)
{
	sync();
	if (shutdown_state.conv == chan_conversation())
		reply_ack(shutdown_state.req, 0, 0);
	if (chan_flush_blocking(5000) < 0)
		hn_log("shutdown: the ACK may not have reached the host");
	mount_teardown();
	sync();
	reboot(RB_AUTOBOOT);
	hn_fatal("reboot: %s", strerror(errno));
}

static void shutdown_tick(void)
{
	if (!shutdown_state.active)
		return;
	if (proc_count(NULL) == 0)
		power_off();
	if (hn_now_ms() < shutdown_state.deadline)
		return;
	if (!shutdown_state.killed) {
		hn_log("shutdown: grace period over, SIGKILL to %zu processes", proc_count(NULL));
		proc_kill(NULL, SIGKILL);
		shutdown_state.killed = 1;
		shutdown_state.deadline = hn_now_ms() + SHUTDOWN_KILL_WAIT_MS;
		return;
	}
	hn_log("shutdown: %zu processes did not report their exit", proc_count(NULL));
	power_off();
}

static void start_shutdown(uint32_t id, uint32_t grace_ms)
{
	shutdown_state.active = 1;
	shutdown_state.req = id;
	shutdown_state.conv = chan_conversation();
	shutdown_state.deadline = hn_now_ms() + grace_ms;
	proc_kill(NULL, SIGTERM);
	shutdown_tick();
}

/* ---- dispatch: every request gets exactly one ACK/READY or ERROR ---- */

static void on_frame(const struct frame_hdr *h, const uint8_t *payload)
{
	struct msg_arena arena = {0};
	struct hn_err e = {0};
	pid_t pid = 0;
	int rc;

	if (h->type == MSG_STDIN) {
		if (h->len > PROTO_MAX_CHUNK)
			hn_log("STDIN chunk of %u bytes exceeds PROTO_MAX_CHUNK", h->len);
		proc_stdin(h->id, payload, h->len);
		return;
	}
	if (h->flags != 0) {
		hn_fail(&e, EINVAL, "frame flags must be 0");
		reply_error(h->id, &e);
		return;
	}
	if (shutdown_state.active && h->type != MSG_HELLO && h->type != MSG_PING) {
		hn_fail(&e, ESHUTDOWN, "shutting down");
		reply_error(h->id, &e);
		return;
	}
	switch (h->type) {
	case MSG_HELLO:
		reply_ready(h->id);
		break;
	case MSG_PING:
		reply_ack(h->id, 0, 0);
		break;
	case MSG_SETUP: {
		struct msg_setup m;
		rc = msg_parse_setup(payload, h->len, &arena, &m, &e);
		if (rc == 0 && setup_done)
			rc = hn_fail(&e, EALREADY, "SETUP was already done");
		if (rc == 0)
			rc = net_setup(&m, &e);
		if (rc == 0)
			setup_done = 1;
		reply(h->id, rc, &e);
		break;
	}
	case MSG_CREATE: {
		struct msg_create m;
		rc = msg_parse_create(payload, h->len, &arena, &m, &e);
		if (rc == 0)
			rc = container_create(&m, &pid, &e);
		if (rc == 0)
			reply_ack(h->id, 1, (uint32_t)pid);
		else
			reply_error(h->id, &e);
		break;
	}
	case MSG_EXEC: {
		struct msg_exec m;
		rc = msg_parse_exec(payload, h->len, &arena, &m, &e);
		if (rc == 0)
			rc = container_exec(&m, &pid, &e);
		if (rc == 0)
			reply_ack(h->id, 1, (uint32_t)pid);
		else
			reply_error(h->id, &e);
		break;
	}
	case MSG_SIGNAL: {
		struct msg_signal m;
		rc = msg_parse_signal(payload, h->len, &m, &e);
		if (rc == 0)
			rc = proc_signal(m.process_id, (int)m.signal, &e);
		reply(h->id, rc, &e);
		break;
	}
	case MSG_RESIZE: {
		struct msg_resize m;
		rc = msg_parse_resize(payload, h->len, &m, &e);
		if (rc == 0)
			rc = proc_resize(m.process_id, m.rows, m.cols, &e);
		reply(h->id, rc, &e);
		break;
	}
	case MSG_REMOVE: {
		struct msg_remove m;
		rc = msg_parse_remove(payload, h->len, &arena, &m, &e);
		if (rc == 0)
			rc = container_remove(m.container_id, h->id, &e);
		if (rc < 0) /* on success the ACK follows the container's last EXIT */
			reply_error(h->id, &e);
		break;
	}
	case MSG_PROBE: {
		struct msg_probe m;
		rc = msg_parse_probe(payload, h->len, &arena, &m, &e);
		if (rc == 0)
			rc = probe_start(&m, h->id, &e);
		if (rc < 0) /* on success the probe replies when it ends */
			reply_error(h->id, &e);
		break;
	}
	case MSG_WRITE_FILES: {
		struct msg_write_files m;
		rc = msg_parse_write_files(payload, h->len, &arena, &m, &e);
		if (rc == 0)
			rc = mount_write_files(&m, &e);
		reply(h->id, rc, &e);
		break;
	}
	case MSG_GROW_FS: {
		struct msg_grow_fs m;
		rc = msg_parse_grow_fs(payload, h->len, &arena, &m, &e);
		if (rc == 0)
			rc = mount_grow_fs(m.serial, m.size, &e);
		reply(h->id, rc, &e);
		break;
	}
	case MSG_SHUTDOWN: {
		struct msg_shutdown m;
		rc = msg_parse_shutdown(payload, h->len, &m, &e);
		if (rc < 0)
			reply_error(h->id, &e);
		else
			start_shutdown(h->id, m.grace_ms);
		break;
	}
	default:
		hn_fail(&e, ENOSYS, "unknown message type %u", h->type);
		reply_error(h->id, &e);
	}
	msg_arena_free(&arena);
}

/* ---- boot ---- */

static void console_stdio(void)
{
	int fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);

	if (fd < 0)
		fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	/* keep 0..2 taken so that no pipe of ours ever lands there */
	for (int i = 0; i < 3 && fd >= 0; i++)
		if (fcntl(i, F_GETFD) < 0 && dup2(fd, i) < 0)
			break;
	if (fd > 2)
		hn_log_console(fd);
	else
		hn_log_console(2);
}

static void sigchld_read(struct loop_fd *f)
{
	struct signalfd_siginfo si[16];

	/* one read drains the coalesced signals; waitpid finds every exited child */
	if (read(f->fd, si, sizeof(si)) < 0 && errno != EAGAIN)
		hn_log("signalfd read: %s", strerror(errno));
	proc_reap();
}

static const struct loop_ops sigchld_ops = {.read = sigchld_read};

static int min_timeout(int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

static void on_pressure(int paused)
{
	proc_pause_output(paused);
}

int main(void)
{
	static struct loop_fd sigfd = {.fd = -1};
	sigset_t set;
	int rc;

	if (getpid() != 1)
		fprintf(stderr, "hn-agent: not PID 1; continuing for testing\n");
	/* /dev may be empty in an initramfs: devtmpfs first, so /dev/console exists */
	if (mkdir("/dev", 0755) < 0 && errno != EEXIST)
		hn_fatal("mkdir /dev: %s", strerror(errno));
	if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") < 0 && errno != EBUSY)
		hn_fatal("mount /dev: %s", strerror(errno));
	console_stdio();
	rc = mount_boot();
	if (rc < 0)
		hn_fatal("boot mounts failed: %s", strerror(-rc));
	if (hn_write_file("/proc/self/oom_score_adj", "-1000", 5, 0, 0) < 0)
		hn_log("oom_score_adj: %s", strerror(errno));
	if (net_lo_up() < 0)
		hn_log("lo up: %s", strerror(errno));
	if (net_write_default_etc() < 0)
		hn_log("default etc files: %s", strerror(errno));

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		hn_fatal("sigprocmask: %s", strerror(errno));
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		hn_fatal("ignore SIGPIPE: %s", strerror(errno));
	if (loop_init() < 0)
		hn_fatal("epoll: %s", strerror(errno));
	sigfd.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	sigfd.ops = &sigchld_ops;
	sigfd.events = EPOLLIN;
	if (sigfd.fd < 0 || loop_add(&sigfd) < 0)
		hn_fatal("signalfd: %s", strerror(errno));

	rc = chan_open(PORT_WAIT_MS, on_frame, on_pressure);
	if (rc < 0)
		hn_fatal("no virtio-serial port named %s: %s", PROTO_PORT_NAME, strerror(-rc));
	hn_log("%s ready", AGENT_NAME);

	for (;;) {
		int t = min_timeout(chan_timeout_ms(), min_timeout(proc_timeout_ms(), container_timeout_ms()));
		t = min_timeout(t, probe_timeout_ms());
		if (shutdown_state.active)
			t = min_timeout(t, 50);
		rc = loop_run_once(t);
		if (rc < 0)
			hn_fatal("epoll_wait: %s", strerror(-rc));
		chan_tick();
		proc_tick();
		container_tick();
		probe_tick();
		shutdown_tick();
	}
}
