/* Containers: an image disk mounted once, an overlay and a cgroup per container, its main
 * process in new mount + PID namespaces, exec processes joining them, and removal. */
#ifndef HN_CONTAINER_H
#define HN_CONTAINER_H

#include <stdint.h>
#include <sys/types.h>

#include "msg.h"
#include "util.h"

#define CONTAINER_MAX 256
#define CONTAINER_REMOVE_WAIT_MS 5000

struct container {
	struct container *next;
	char id[MSG_MAX_CONTAINER_ID + 1];
	char cgroup[128];
	pid_t init_pid; /* global pid of PID 1 of its namespace; 0 once reaped */
	int has_fsgroup; /* CREATE's FSGROUP: also a supplementary group of every EXEC */
	uint32_t fsgroup;
	size_t nprocs;  /* processes whose EXIT is not sent yet */
	int removing;
	uint32_t remove_req;
	uint32_t remove_conv; /* chan_conversation() of the REMOVE */
	int64_t remove_deadline;
};

int container_create(const struct msg_create *m, pid_t *pid, struct hn_err *e);
int container_exec(const struct msg_exec *m, pid_t *pid, struct hn_err *e);
/* SIGKILLs what is left; the ACK for req_id goes out once every EXIT of the container has. */
int container_remove(const char *id, uint32_t req_id, struct hn_err *e);

/* Hooks from process.c. */
void container_proc_reaped(struct container *c, pid_t pid);
void container_proc_gone(struct container *c);

int container_timeout_ms(void);
void container_tick(void);

/* Reply helpers live in main.c; containers use them for the deferred REMOVE ACK. */
void reply_ack(uint32_t id, int has_pid, uint32_t pid);

#endif
