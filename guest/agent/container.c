/* Containers: CREATE assembles image disk -> overlay -> cgroup -> main process; EXEC joins a
 * running one; REMOVE kills, waits for the EXITs (bounded), unmounts and forgets. */
#include "container.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chan.h"
#include "mount.h"
#include "process.h"

static struct container *containers;

static struct container *find(const char *id)
{
	for (struct container *c = containers; c; c = c->next)
		if (!strcmp(c->id, id))
			return c;
	return NULL;
}

static size_t count(void)
{
	size_t n = 0;
	for (struct container *c = containers; c; c = c->next)
		n++;
	return n;
}

static int make_cgroup(struct container *c, uint64_t memory_limit, struct hn_err *e)
{
	char path[200], val[32];
	int rc;

	snprintf(c->cgroup, sizeof(c->cgroup), HN_CGROUP_DIR "/%s", c->id);
	if (mkdir(c->cgroup, 0755) < 0 && errno != EEXIST)
		return hn_fail(e, errno, "mkdir %s: %s", c->cgroup, strerror(errno));
	if (memory_limit == 0)
		return 0;
	snprintf(path, sizeof(path), "%s/memory.max", c->cgroup);
	snprintf(val, sizeof(val), "%llu", (unsigned long long)memory_limit);
	rc = hn_write_file(path, val, strlen(val), 0, 0);
	if (rc < 0) {
		if (rmdir(c->cgroup) < 0)
			hn_log("rmdir %s: %s", c->cgroup, strerror(errno));
		return hn_fail(e, -rc, "set %s: %s", path, strerror(-rc));
	}
	return 0;
}

static void drop_cgroup(struct container *c)
{
	if (c->cgroup[0] && rmdir(c->cgroup) < 0 && errno != ENOENT)
		hn_log("rmdir %s: %s", c->cgroup, strerror(errno));
}

/* proc with fsgroup appended to its supplementary groups (kubelet's fsGroup), in buf. */
static const struct msg_process *with_fsgroup(const struct msg_process *in, struct msg_process *out,
					      uint32_t buf[MSG_MAX_GROUPS + 1], int has, uint32_t gid)
{
	if (!has)
		return in;
	*out = *in;
	memcpy(buf, in->groups, in->ngroups * sizeof(*buf));
	out->groups = buf;
	for (size_t i = 0; i < in->ngroups; i++)
		if (in->groups[i] == gid)
			return out;
	buf[out->ngroups++] = gid;
	return out;
}

int container_create(const struct msg_create *m, pid_t *pid, struct hn_err *e)
{
	struct rootfs_mount mounts[MSG_MAX_MOUNTS];
	struct rootfs_device devices[MSG_MAX_DEVICES];
	uint32_t groups[MSG_MAX_GROUPS + 1];
	struct msg_process proc;
	char image[128], merged[160];
	struct container *c;
	int rc;

	if (find(m->container_id))
		return hn_fail(e, EEXIST, "container %s exists", m->container_id);
	if (count() >= CONTAINER_MAX)
		return hn_fail(e, EMFILE, "too many containers (%d)", CONTAINER_MAX);
	if (proc_exists(m->proc.process_id))
		return hn_fail(e, EEXIST, "process id %u is in use", m->proc.process_id);
	rc = mount_image(m->image_disk, image, sizeof(image), e);
	if (rc < 0)
		return rc;
	/* disks and pod volumes are mounted once per VM, in the agent's namespace; the container
	 * binds them (or a sub-path of them) */
	for (size_t i = 0; i < m->nmounts; i++) {
		rc = mount_volume(&m->mounts[i], m->has_fsgroup ? &m->fsgroup : NULL, &mounts[i], e);
		if (rc < 0)
			return rc;
	}
	for (size_t i = 0; i < m->ndevices; i++) {
		rc = mount_device(&m->devices[i], m->has_fsgroup ? &m->fsgroup : NULL, &devices[i], e);
		if (rc < 0)
			return rc;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return hn_fail(e, ENOMEM, "out of memory");
	snprintf(c->id, sizeof(c->id), "%s", m->container_id);
	c->has_fsgroup = m->has_fsgroup;
	c->fsgroup = m->fsgroup;
	rc = mount_overlay(c->id, image, merged, sizeof(merged), e);
	if (rc < 0)
		goto fail_free;
	rc = make_cgroup(c, m->memory_limit, e);
	if (rc < 0)
		goto fail_overlay;

	struct spawn_req r = {.proc = with_fsgroup(&m->proc, &proc, groups, m->has_fsgroup, m->fsgroup),
			      .container = c, .cgroup = c->cgroup, .create = 1,
			      .root = merged, .mounts = mounts, .nmounts = m->nmounts,
			      .devices = devices, .ndevices = m->ndevices};
	rc = proc_spawn(&r, pid, e);
	if (rc < 0)
		goto fail_cgroup;
	c->init_pid = *pid;
	c->nprocs = 1;
	c->next = containers;
	containers = c;
	return 0;

fail_cgroup:
	drop_cgroup(c);
fail_overlay:
	mount_overlay_drop(c->id);
fail_free:
	free(c);
	return rc;
}

int container_exec(const struct msg_exec *m, pid_t *pid, struct hn_err *e)
{
	struct container *c = find(m->container_id);
	uint32_t groups[MSG_MAX_GROUPS + 1];
	struct msg_process proc;
	int rc;

	if (!c || c->removing)
		return hn_fail(e, ENOENT, "no container %s", m->container_id);
	if (c->init_pid == 0)
		return hn_fail(e, ESRCH, "container %s is not running", m->container_id);
	struct spawn_req r = {.proc = with_fsgroup(&m->proc, &proc, groups, c->has_fsgroup, c->fsgroup),
			      .container = c, .cgroup = c->cgroup, .ns_pid = c->init_pid};
	rc = proc_spawn(&r, pid, e);
	if (rc == 0)
		c->nprocs++;
	return rc;
}

static void finish_remove(struct container *c)
{
	proc_disown(c);
	mount_overlay_drop(c->id);
	drop_cgroup(c);
	if (c->remove_conv == chan_conversation())
		reply_ack(c->remove_req, 0, 0);
	for (struct container **pp = &containers; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	free(c);
}

int container_remove(const char *id, uint32_t req_id, struct hn_err *e)
{
	struct container *c = find(id);

	if (!c)
		return hn_fail(e, ENOENT, "no container %s", id);
	if (c->removing)
		return hn_fail(e, EALREADY, "container %s is being removed", id);
	c->removing = 1;
	c->remove_req = req_id;
	c->remove_conv = chan_conversation();
	c->remove_deadline = hn_now_ms() + CONTAINER_REMOVE_WAIT_MS;
	/* SIGKILL to PID 1 of the namespace takes every process in it along */
	proc_kill(c, SIGKILL);
	if (c->nprocs == 0)
		finish_remove(c);
	return 0;
}

void container_proc_reaped(struct container *c, pid_t pid)
{
	if (c->init_pid == pid)
		c->init_pid = 0;
}

void container_proc_gone(struct container *c)
{
	if (c->nprocs > 0)
		c->nprocs--;
	if (c->removing && c->nprocs == 0)
		finish_remove(c);
}

int container_timeout_ms(void)
{
	int64_t now = hn_now_ms(), best = -1;

	for (struct container *c = containers; c; c = c->next) {
		int64_t d;
		if (!c->removing)
			continue;
		d = c->remove_deadline - now;
		if (d < 0)
			d = 0;
		if (best < 0 || d < best)
			best = d;
	}
	return (int)best;
}

void container_tick(void)
{
	int64_t now = hn_now_ms();
	struct container *next;

	for (struct container *c = containers; c; c = next) {
		next = c->next;
		if (c->removing && now >= c->remove_deadline) {
			hn_log("container %s: %zu processes outlived REMOVE", c->id, c->nprocs);
			finish_remove(c);
		}
	}
}
