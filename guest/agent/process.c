/* Container processes.
 *
 * Spawning: the agent forks a short-lived helper (C1) that joins the container's cgroup and,
 * for EXEC, setns()es into the container's PID and mount namespaces (setns on a PID namespace
 * only applies to children). C1 then clones the real process (C2) with CLONE_PARENT, so C2 is
 * the agent's own child: the agent reaps it, and SIGNAL goes straight to it, with no relay
 * process in between. For CREATE the clone also gets CLONE_NEWPID | CLONE_NEWNS, making C2
 * PID 1 of the container. C2 assembles the rootfs (CREATE only), sets up stdio, drops to the
 * requested uid/gid/groups, chdirs and execs. C1 and C2 report to the agent over a CLOEXEC
 * "status" pipe: C1 sends C2's pid, C2 sends an error record if anything before or including
 * execve fails; EOF with no error means the exec succeeded.
 *
 * Output: each process has a stdout and a stderr pipe (or one pty master), read in chunks of
 * at most PROTO_MAX_CHUNK into STDOUT/STDERR frames. EXIT goes out once the process is reaped
 * and its outputs are at EOF, or PROC_EXIT_DRAIN_MS after the exit if a grandchild keeps them
 * open. */
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "chan.h"
#include "codec.h"
#include "container.h"
#include "loop.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct proc {
	struct proc *next;
	uint32_t id;
	pid_t pid;
	struct container *c;
	int terminal;
	struct loop_fd out, err, in;
	uint8_t *inbuf;
	size_t inlen;
	uint32_t stdin_conv; /* chan_conversation() of the last STDIN: WINDOW credit is its host's */
	int in_eof;
	int exited;
	int status;
	int64_t drain_deadline;
};

static struct proc *procs;
static int output_paused;

/* ---- status pipe between the spawned helpers and the agent ---- */

enum { ST_PID = 1, ST_ERR = 2 };

struct status_rec {
	int32_t kind;
	int32_t pid;
	int32_t err;
	char msg[sizeof(((struct hn_err *)0)->msg)];
}; /* < PIPE_BUF: each record is written atomically */

static void send_status(int fd, int kind, pid_t pid, const struct hn_err *e)
{
	struct status_rec r;

	memset(&r, 0, sizeof(r));
	r.kind = kind;
	r.pid = pid;
	if (e) {
		r.err = e->code;
		memcpy(r.msg, e->msg, sizeof(r.msg));
	}
	if (hn_write_all(fd, &r, sizeof(r)) < 0) {
		/* the agent then sees EOF without a pid or an error and reports that */
	}
}

static __attribute__((noreturn)) void child_fail(int st, const struct hn_err *e)
{
	send_status(st, ST_ERR, 0, e);
	_exit(127);
}

/* ---- the process itself (C2) ---- */

static void exec_path(char **argv, char **envp, struct hn_err *e)
{
	const char *file = argv[0], *path = DEFAULT_PATH;
	int eacces = 0;

	if (strchr(file, '/')) {
		execve(file, argv, envp);
		hn_fail(e, errno, "exec %s: %s", file, strerror(errno));
		return;
	}
	for (char **v = envp; *v; v++)
		if (!strncmp(*v, "PATH=", 5))
			path = *v + 5;
	for (const char *p = path;; p++) {
		const char *end = strchr(p, ':');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		char full[4200];
		snprintf(full, sizeof(full), "%.*s%s%s", (int)n, p, n ? "/" : "", file);
		execve(full, argv, envp);
		switch (errno) {
		case EACCES:
			eacces = 1;
			/* fall through */
		case ENOENT:
		case ENOTDIR:
		case ESTALE:
		case ELOOP:
		case ENAMETOOLONG:
			break;
		default:
			hn_fail(e, errno, "exec %s: %s", full, strerror(errno));
			return;
		}
		if (!end)
			break;
		p = end;
	}
	hn_fail(e, eacces ? EACCES : ENOENT, "exec %s: %s", file,
		strerror(eacces ? EACCES : ENOENT));
}

/* Passes the pty master to the agent over the spawn's socketpair (SCM_RIGHTS). */
static int send_fd(int sock, int fd)
{
	char byte = 0, ctrl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
			    .msg_controllen = sizeof(ctrl)};
	struct cmsghdr *c;

	memset(ctrl, 0, sizeof(ctrl));
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

static int recv_fd(int sock)
{
	char byte, ctrl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
			    .msg_controllen = sizeof(ctrl)};
	struct cmsghdr *c;
	int fd;

	if (recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0)
		return -errno;
	c = CMSG_FIRSTHDR(&mh);
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
	    c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -EBADMSG;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

/* The pty comes from the container's own devpts instance, so that ttyname(), `tty` and ps see
 * /dev/pts/N inside the container; the master goes to the agent. Returns the slave. */
static int child_pty(int sock, const struct msg_process *p, struct hn_err *e)
{
	struct winsize ws = {.ws_row = (unsigned short)p->rows, .ws_col = (unsigned short)p->cols};
	char name[64];
	int m, s, rc;

	m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0)
		return hn_fail(e, errno, "open /dev/ptmx: %s", strerror(errno));
	if (unlockpt(m) < 0 || ptsname_r(m, name, sizeof(name)) != 0)
		return hn_fail(e, errno, "unlockpt/ptsname: %s", strerror(errno));
	s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (s < 0)
		return hn_fail(e, errno, "open %s: %s", name, strerror(errno));
	if (fchown(s, p->uid, (gid_t)-1) < 0)
		return hn_fail(e, errno, "chown %s: %s", name, strerror(errno));
	if (p->rows && p->cols && ioctl(m, TIOCSWINSZ, &ws) < 0)
		return hn_fail(e, errno, "TIOCSWINSZ: %s", strerror(errno));
	rc = send_fd(sock, m);
	if (rc < 0)
		return hn_fail(e, -rc, "send pty master: %s", strerror(-rc));
	close(m);
	close(sock);
	return s;
}

static __attribute__((noreturn)) void child(const struct spawn_req *r, int st, const int stdio[3])
{
	const struct msg_process *p = r->proc;
	gid_t groups[MSG_MAX_GROUPS + 1]; /* + a CREATE's FSGROUP */
	struct hn_err e = {0};
	int fds[3] = {stdio[0], stdio[1], stdio[2]};
	sigset_t none;

	/* the agent blocks SIGCHLD (signalfd) and ignores SIGPIPE; both survive exec */
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0 || signal(SIGPIPE, SIG_DFL) == SIG_ERR)
		hn_fail(&e, errno, "reset signals: %s", strerror(errno)), child_fail(st, &e);
	if (setsid() < 0)
		hn_fail(&e, errno, "setsid: %s", strerror(errno)), child_fail(st, &e);
	if (r->create && mount_rootfs(r->root, r->mounts, r->nmounts, r->devices, r->ndevices, &e) < 0)
		child_fail(st, &e);
	if (p->terminal) {
		/* stdio[0] is the socket to the agent; the pty is made inside the container */
		int s = child_pty(stdio[0], p, &e);
		if (s < 0)
			child_fail(st, &e);
		fds[0] = fds[1] = fds[2] = s;
	}
	for (int i = 0; i < 3; i++)
		if (dup2(fds[i], i) < 0)
			hn_fail(&e, errno, "dup2: %s", strerror(errno)), child_fail(st, &e);
	if (p->terminal && ioctl(0, TIOCSCTTY, 0) < 0)
		hn_fail(&e, errno, "TIOCSCTTY: %s", strerror(errno)), child_fail(st, &e);
	for (size_t i = 0; i < p->ngroups; i++)
		groups[i] = p->groups[i];
	if (setgroups(p->ngroups, groups) < 0)
		hn_fail(&e, errno, "setgroups: %s", strerror(errno)), child_fail(st, &e);
	if (setgid(p->gid) < 0)
		hn_fail(&e, errno, "setgid %u: %s", p->gid, strerror(errno)), child_fail(st, &e);
	if (setuid(p->uid) < 0)
		hn_fail(&e, errno, "setuid %u: %s", p->uid, strerror(errno)), child_fail(st, &e);
	if (chdir(p->cwd) < 0)
		hn_fail(&e, errno, "chdir %s: %s", p->cwd, strerror(errno)), child_fail(st, &e);
	exec_path(p->argv, p->envp, &e);
	child_fail(st, &e);
}

/* ---- the helper (C1) ---- */

static __attribute__((noreturn)) void helper(const struct spawn_req *r, int st, const int fds[3])
{
	unsigned long flags = CLONE_PARENT | SIGCHLD;
	struct hn_err e = {0};
	char path[200];
	long pid;
	int rc;

	/* this copy of the agent must never write to the control port */
	hn_set_log_sink(NULL);
	/* join the cgroup first: every descendant is then accounted there */
	snprintf(path, sizeof(path), "%s/cgroup.procs", r->cgroup);
	rc = hn_write_file(path, "0", 1, 0, 0);
	if (rc < 0)
		hn_fail(&e, -rc, "join cgroup %s: %s", r->cgroup, strerror(-rc)), child_fail(st, &e);
	/* the agent protects itself from the OOM killer; its containers must not inherit that */
	if (hn_write_file("/proc/self/oom_score_adj", "0", 1, 0, 0) < 0)
		hn_log("reset oom_score_adj: %s", strerror(errno));
	if (r->create) {
		flags |= CLONE_NEWNS | CLONE_NEWPID;
	} else {
		static const struct {
			const char *name;
			int type;
		} ns[] = {{"pid", CLONE_NEWPID}, {"mnt", CLONE_NEWNS}};
		int nsfd[2];
		for (int i = 0; i < 2; i++) {
			snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)r->ns_pid, ns[i].name);
			nsfd[i] = open(path, O_RDONLY | O_CLOEXEC);
			if (nsfd[i] < 0)
				hn_fail(&e, errno, "open %s: %s", path, strerror(errno)), child_fail(st, &e);
		}
		for (int i = 0; i < 2; i++)
			if (setns(nsfd[i], ns[i].type) < 0)
				hn_fail(&e, errno, "setns %s: %s", ns[i].name, strerror(errno)),
					child_fail(st, &e);
	}
	/* fork-like raw clone: no new stack, the child continues here */
	pid = syscall(SYS_clone, flags, NULL, NULL, NULL, NULL);
	if (pid < 0)
		hn_fail(&e, errno, "clone: %s", strerror(errno)), child_fail(st, &e);
	if (pid == 0)
		child(r, st, fds);
	send_status(st, ST_PID, (pid_t)pid, NULL);
	_exit(0);
}

/* ---- agent side ---- */

static int wait_status(int fd, pid_t *pid, struct hn_err *e)
{
	int64_t deadline = hn_now_ms() + PROC_SPAWN_TIMEOUT_MS;
	int have_err = 0;

	*pid = 0;
	for (;;) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		struct status_rec r;
		int64_t left = deadline - hn_now_ms();
		ssize_t n;
		if (left <= 0) {
			if (*pid > 0)
				kill(*pid, SIGKILL);
			return hn_fail(e, ETIMEDOUT, "process set-up did not finish in %d ms",
				       PROC_SPAWN_TIMEOUT_MS);
		}
		if (poll(&pf, 1, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			return hn_fail(e, errno, "poll status pipe: %s", strerror(errno));
		}
		if (!pf.revents)
			continue;
		n = read(fd, &r, sizeof(r));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return hn_fail(e, errno, "read status pipe: %s", strerror(errno));
		if (n == 0)
			break;
		if (n != (ssize_t)sizeof(r))
			continue; /* cannot happen with atomic pipe writes; ignore a torn record */
		r.msg[sizeof(r.msg) - 1] = '\0';
		if (r.kind == ST_PID) {
			*pid = r.pid;
		} else if (r.kind == ST_ERR && !have_err) {
			have_err = 1;
			hn_fail(e, r.err, "%s", r.msg);
		}
	}
	if (have_err)
		return -e->code;
	if (*pid <= 0)
		return hn_fail(e, EIO, "process set-up failed without a report");
	return 0;
}

static const struct loop_ops out_ops;
static const struct loop_ops in_ops;

static struct proc *find(uint32_t id)
{
	for (struct proc *p = procs; p; p = p->next)
		if (p->id == id)
			return p;
	return NULL;
}

int proc_exists(uint32_t id)
{
	return find(id) != NULL;
}

static void init_lfd(struct loop_fd *f, int fd, const struct loop_ops *ops, struct proc *p)
{
	f->fd = fd;
	f->ops = ops;
	f->data = p;
	f->events = ops == &out_ops ? EPOLLIN : EPOLLOUT;
	f->registered = 0;
}

static void close_fds(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (fds[i] >= 0) {
			close(fds[i]);
			fds[i] = -1;
		}
}

/* Makes the stdio fds: parent[] = agent ends (out, err, in), child[] = process's 0, 1, 2.
 * For a terminal, only a socketpair: parent[0] and child[0] are its ends, over which the child
 * sends the master of the pty it opens inside the container (see child_pty). */
static int make_stdio(const struct msg_process *mp, int parent[3], int child[3], struct hn_err *e)
{
	int pp[2];

	if (mp->terminal) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pp) < 0)
			goto fail;
		parent[0] = pp[0], child[0] = pp[1];
		return 0;
	}
	if (pipe2(pp, O_CLOEXEC) < 0)
		goto fail;
	parent[0] = pp[0], child[1] = pp[1];
	if (pipe2(pp, O_CLOEXEC) < 0)
		goto fail;
	parent[1] = pp[0], child[2] = pp[1];
	if (mp->stdin_open) {
		if (pipe2(pp, O_CLOEXEC) < 0)
			goto fail;
		child[0] = pp[0], parent[2] = pp[1];
	} else {
		child[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (child[0] < 0)
			goto fail;
	}
	return 0;
fail:
	hn_fail(e, errno, "stdio set-up: %s", strerror(errno));
	close_fds(parent, 3);
	close_fds(child, 3);
	return -e->code;
}

/* After a successful terminal spawn: trade the socket for the pty master it carried. */
static int take_pty(const struct msg_process *mp, int parent[3], struct hn_err *e)
{
	int m = recv_fd(parent[0]);

	if (m < 0)
		return hn_fail(e, -m, "receive pty master: %s", strerror(-m));
	close(parent[0]);
	parent[0] = m;
	if (mp->stdin_open) {
		parent[2] = fcntl(m, F_DUPFD_CLOEXEC, 3);
		if (parent[2] < 0)
			return hn_fail(e, errno, "dup pty master: %s", strerror(errno));
	}
	return 0;
}

int proc_spawn(const struct spawn_req *r, pid_t *pid, struct hn_err *e)
{
	int parent[3] = {-1, -1, -1}, child_fds[3] = {-1, -1, -1}, st[2];
	struct proc *p;
	pid_t c1;
	int rc;

	if (find(r->proc->process_id))
		return hn_fail(e, EEXIST, "process id %u is in use", r->proc->process_id);
	p = calloc(1, sizeof(*p));
	if (!p)
		return hn_fail(e, ENOMEM, "out of memory");
	rc = make_stdio(r->proc, parent, child_fds, e);
	if (rc < 0)
		goto fail_free;
	if (pipe2(st, O_CLOEXEC) < 0) {
		rc = hn_fail(e, errno, "pipe: %s", strerror(errno));
		goto fail_fds;
	}
	c1 = fork();
	if (c1 < 0) {
		rc = hn_fail(e, errno, "fork: %s", strerror(errno));
		close_fds(st, 2);
		goto fail_fds;
	}
	if (c1 == 0) {
		close(st[0]);
		helper(r, st[1], child_fds);
	}
	close(st[1]);
	close_fds(child_fds, 3); /* or the agent would hold the pipes open and never see EOF */
	rc = wait_status(st[0], pid, e);
	close(st[0]);
	if (rc == 0 && r->proc->terminal && take_pty(r->proc, parent, e) < 0) {
		rc = -e->code;
		kill(*pid, SIGKILL);
	}
	if (rc < 0) {
		if (*pid > 0 && waitpid(*pid, NULL, __WALL) < 0)
			hn_log("reap failed process %d: %s", (int)*pid, strerror(errno));
		goto fail_fds;
	}

	p->id = r->proc->process_id;
	p->pid = *pid;
	p->c = r->container;
	p->terminal = r->proc->terminal;
	p->stdin_conv = chan_conversation();
	init_lfd(&p->out, parent[0], &out_ops, p);
	init_lfd(&p->err, parent[1], &out_ops, p);
	init_lfd(&p->in, parent[2], &in_ops, p);
	for (int i = 0; i < 3; i++)
		if (parent[i] >= 0 && hn_set_nonblock(parent[i]) < 0)
			hn_log("O_NONBLOCK: %s", strerror(errno));
	if (p->in.fd >= 0) {
		p->inbuf = malloc(PROTO_STDIN_WINDOW);
		if (!p->inbuf) {
			hn_log("no memory for a stdin buffer: stdin of process %u closed", p->id);
			loop_close(&p->in);
		}
	}
	if (!output_paused) {
		if ((p->out.fd >= 0 && loop_add(&p->out) < 0) || (p->err.fd >= 0 && loop_add(&p->err) < 0))
			hn_log("epoll add for process %u: %s", p->id, strerror(errno));
	}
	p->next = procs;
	procs = p;
	return 0;

fail_fds:
	close_fds(parent, 3);
	close_fds(child_fds, 3);
fail_free:
	free(p);
	return rc;
}

static void send_window(struct proc *p, size_t n)
{
	struct buf b = {0};

	if (p->stdin_conv != chan_conversation())
		return; /* credit for bytes an earlier host sent; the current one never had them */
	if (tlv_put_u32(&b, TAG_BYTES, (uint32_t)n) == 0)
		chan_send(MSG_WINDOW, p->id, b.p, b.len);
	buf_free(&b);
}

static void finish(struct proc *p)
{
	struct buf b = {0};
	int rc;

	loop_close(&p->in);
	if (WIFSIGNALED(p->status))
		rc = tlv_put_u32(&b, TAG_EXIT_SIGNAL, (uint32_t)WTERMSIG(p->status));
	else
		rc = tlv_put_u32(&b, TAG_EXIT_CODE, (uint32_t)WEXITSTATUS(p->status));
	if (rc == 0)
		chan_send(MSG_EXIT, p->id, b.p, b.len);
	buf_free(&b);
	for (struct proc **pp = &procs; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	if (p->c)
		container_proc_gone(p->c);
	free(p->inbuf);
	p->inbuf = NULL;
	loop_defer_free(p);
}

static void check_done(struct proc *p)
{
	if (p->exited && p->out.fd < 0 && p->err.fd < 0)
		finish(p);
}

/* One read per wakeup; returns 1 if data was forwarded, 0 at EOF (fd closed), -1 if none now. */
static int pump(struct proc *p, struct loop_fd *f)
{
	static uint8_t chunk[PROTO_MAX_CHUNK];
	ssize_t n = read(f->fd, chunk, sizeof(chunk));

	if (n > 0) {
		chan_send(f == &p->err ? MSG_STDERR : MSG_STDOUT, p->id, chunk, (size_t)n);
		return 1;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return -1;
	/* EOF; a pty master reports EIO once the last slave fd is closed */
	loop_close(f);
	return 0;
}

static void out_read(struct loop_fd *f)
{
	struct proc *p = f->data;

	if (pump(p, f) == 0)
		check_done(p);
}

static const struct loop_ops out_ops = {.read = out_read};

static void close_stdin(struct proc *p)
{
	if (p->terminal && p->in.fd >= 0) {
		/* a pty has no half-close: send the EOF character, as a user's ^D would */
		struct termios t;
		char eof = 4;
		if (tcgetattr(p->in.fd, &t) == 0)
			eof = (char)t.c_cc[VEOF];
		if (write(p->in.fd, &eof, 1) < 0)
			hn_log("send EOF to the terminal of process %u: %s", p->id, strerror(errno));
	}
	loop_close(&p->in);
	p->inlen = 0;
}

static void in_flush(struct proc *p)
{
	while (p->inlen > 0 && p->in.fd >= 0) {
		ssize_t n = write(p->in.fd, p->inbuf, p->inlen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (!p->in.registered && loop_add(&p->in) < 0)
				hn_log("epoll add stdin %u: %s", p->id, strerror(errno));
			return;
		}
		if (n < 0) {
			/* reader gone (EPIPE): drop the bytes but return their credit */
			send_window(p, p->inlen);
			close_stdin(p);
			return;
		}
		memmove(p->inbuf, p->inbuf + n, p->inlen - (size_t)n);
		p->inlen -= (size_t)n;
		send_window(p, (size_t)n);
	}
	if (p->in.registered)
		loop_del(&p->in);
	if (p->inlen == 0 && p->in_eof && p->in.fd >= 0)
		close_stdin(p);
}

static void in_write(struct loop_fd *f)
{
	in_flush(f->data);
}

static void in_hup(struct loop_fd *f)
{
	struct proc *p = f->data;
	send_window(p, p->inlen);
	close_stdin(p);
}

static const struct loop_ops in_ops = {.write = in_write, .hup = in_hup};

void proc_stdin(uint32_t id, const uint8_t *data, size_t len)
{
	struct proc *p = find(id);
	size_t room;

	if (!p) {
		hn_log("STDIN for unknown process %u dropped", id);
		return;
	}
	p->stdin_conv = chan_conversation();
	if (len == 0) {
		p->in_eof = 1;
		if (p->inlen == 0 && p->in.fd >= 0)
			close_stdin(p);
		return;
	}
	if (p->in.fd < 0 || p->in_eof) {
		send_window(p, len); /* nobody reads it: discard, but keep the host's credit right */
		return;
	}
	room = PROTO_STDIN_WINDOW - p->inlen;
	if (len > room) {
		hn_log("process %u: host overran the stdin window by %zu bytes", id, len - room);
		send_window(p, len - room);
		len = room;
	}
	memcpy(p->inbuf + p->inlen, data, len);
	p->inlen += len;
	in_flush(p);
}

int proc_signal(uint32_t id, int sig, struct hn_err *e)
{
	struct proc *p = find(id);

	if (!p)
		return hn_fail(e, ESRCH, "no process %u", id);
	if (p->exited)
		return hn_fail(e, ESRCH, "process %u has exited", id);
	if (kill(p->pid, sig) < 0)
		return hn_fail(e, errno, "kill %d: %s", (int)p->pid, strerror(errno));
	return 0;
}

int proc_resize(uint32_t id, unsigned rows, unsigned cols, struct hn_err *e)
{
	struct proc *p = find(id);
	struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};

	if (!p)
		return hn_fail(e, ESRCH, "no process %u", id);
	if (!p->terminal)
		return hn_fail(e, ENOTTY, "process %u has no terminal", id);
	if (p->out.fd < 0)
		return hn_fail(e, ESRCH, "process %u: terminal closed", id);
	if (ioctl(p->out.fd, TIOCSWINSZ, &ws) < 0)
		return hn_fail(e, errno, "TIOCSWINSZ: %s", strerror(errno));
	return 0;
}

void proc_reap(void)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG | __WALL);
		if (pid <= 0)
			break;
		for (struct proc *p = procs; p; p = p->next) {
			if (p->pid != pid || p->exited)
				continue;
			p->exited = 1;
			p->status = status;
			p->drain_deadline = hn_now_ms() + PROC_EXIT_DRAIN_MS;
			if (p->c)
				container_proc_reaped(p->c, pid);
			check_done(p);
			break;
		}
		/* anything else was a spawn helper or a failed spawn: nothing to report */
	}
}

void proc_pause_output(int paused)
{
	output_paused = paused;
	for (struct proc *p = procs; p; p = p->next) {
		struct loop_fd *fs[2] = {&p->out, &p->err};
		for (int i = 0; i < 2; i++) {
			if (fs[i]->fd < 0)
				continue;
			if (paused)
				loop_del(fs[i]); /* not just events=0: a HUP would still wake us */
			else if (!fs[i]->registered && loop_add(fs[i]) < 0)
				hn_log("epoll add output of %u: %s", p->id, strerror(errno));
		}
	}
}

int proc_timeout_ms(void)
{
	int64_t now = hn_now_ms(), best = -1;

	for (struct proc *p = procs; p; p = p->next) {
		int64_t d;
		if (!p->exited)
			continue;
		d = p->drain_deadline - now;
		if (d < 0)
			d = 0;
		if (best < 0 || d < best)
			best = d;
	}
	return best > 60000 ? 60000 : (int)best;
}

void proc_tick(void)
{
	int64_t now = hn_now_ms();
	struct proc *next;

	for (struct proc *p = procs; p; p = next) {
		next = p->next;
		if (!p->exited || now < p->drain_deadline)
			continue;
		if (output_paused) {
			p->drain_deadline = now + 100; /* the host is slow, not the process */
			continue;
		}
		/* a grandchild holds the output open: take what is there and stop */
		struct loop_fd *fs[2] = {&p->out, &p->err};
		for (int i = 0; i < 2; i++) {
			for (int n = 0; n < 64 && fs[i]->fd >= 0 && pump(p, fs[i]) > 0; n++)
				;
			loop_close(fs[i]);
		}
		check_done(p);
	}
}

size_t proc_count(const struct container *c)
{
	size_t n = 0;
	for (struct proc *p = procs; p; p = p->next)
		if (!c || p->c == c)
			n++;
	return n;
}

void proc_kill(const struct container *c, int sig)
{
	for (struct proc *p = procs; p; p = p->next)
		if (!p->exited && (!c || p->c == c) && kill(p->pid, sig) < 0)
			hn_log("kill %d: %s", (int)p->pid, strerror(errno));
}

void proc_disown(const struct container *c)
{
	for (struct proc *p = procs; p; p = p->next)
		if (p->c == c)
			p->c = NULL;
}
