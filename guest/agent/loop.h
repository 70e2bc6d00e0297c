/* The agent's single epoll loop, hyperstart-style: every fd carries its own read/write/hup ops. */
#ifndef HN_LOOP_H
#define HN_LOOP_H

#include <stdint.h>

struct loop_fd;

struct loop_ops {
	void (*read)(struct loop_fd *f);
	void (*write)(struct loop_fd *f);
	void (*hup)(struct loop_fd *f); /* EPOLLHUP/EPOLLERR without readable data; may be NULL */
};

struct loop_fd {
	int fd;
	uint32_t events; /* EPOLLIN/EPOLLOUT wanted */
	int registered;
	const struct loop_ops *ops;
	void *data;
};

int loop_init(void);
/* Registers f->fd with f->events. Returns 0 or -errno. */
int loop_add(struct loop_fd *f);
int loop_set_events(struct loop_fd *f, uint32_t events);
/* Unregisters (if registered) and closes the fd; f->fd becomes -1 so that events for it still
 * pending in the current batch are skipped. */
void loop_close(struct loop_fd *f);
void loop_del(struct loop_fd *f);

/* Objects holding a loop_fd are freed through here, after the current batch of events. */
void loop_defer_free(void *p);

/* Waits up to timeout_ms (-1 = forever) and runs the ops of ready fds. */
int loop_run_once(int timeout_ms);

#endif
