/* Container processes: spawning into namespaces, stdio streaming with the stdin credit window,
 * reaping, and the EXIT frame once all output is out. */
#ifndef HN_PROCESS_H
#define HN_PROCESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mount.h"
#include "msg.h"
#include "util.h"

#define PROC_EXIT_DRAIN_MS 2000   /* after exit, how long a grandchild may hold the output open */
#define PROC_SPAWN_TIMEOUT_MS 30000

struct container;

struct spawn_req {
	const struct msg_process *proc;
	struct container *container;
	const char *cgroup; /* cgroup dir the process joins */
	/* CREATE: new mount + PID namespaces, rootfs assembled from these */
	int create;
	const char *root;
	const struct rootfs_mount *mounts;
	size_t nmounts;
	const struct rootfs_device *devices;
	size_t ndevices;
	/* EXEC: join the namespaces of this (global) pid */
	pid_t ns_pid;
};

/* Starts the process; returns 0 with *pid (global) once it has exec'd, or -errno with e set
 * (including the exec failure itself, e.g. "exec /x: No such file or directory"). */
int proc_spawn(const struct spawn_req *r, pid_t *pid, struct hn_err *e);

int proc_exists(uint32_t id);
int proc_signal(uint32_t id, int sig, struct hn_err *e);
int proc_resize(uint32_t id, unsigned rows, unsigned cols, struct hn_err *e);
void proc_stdin(uint32_t id, const uint8_t *data, size_t len);

/* SIGCHLD: reap everything that has exited. */
void proc_reap(void);

/* Back-pressure from the control channel: stop/start reading process output. */
void proc_pause_output(int paused);

int proc_timeout_ms(void);
void proc_tick(void);

/* Live process records (EXIT not yet sent), in total or for one container. */
size_t proc_count(const struct container *c);
void proc_kill(const struct container *c, int sig); /* c == NULL: every process */
/* The container is going away before its processes: they keep running unowned. */
void proc_disown(const struct container *c);

#endif
