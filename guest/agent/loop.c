/* Single epoll loop. Level-triggered, so a handler may read only one chunk per wakeup and the
 * other fds still get their turn. */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "util.h"

static int epfd = -1;

static void **deferred;
static size_t ndeferred, deferred_cap;

int loop_init(void)
{
	epfd = epoll_create1(EPOLL_CLOEXEC);
	return epfd < 0 ? -errno : 0;
}

int loop_add(struct loop_fd *f)
{
	struct epoll_event ev = {.events = f->events, .data.ptr = f};

	if (epoll_ctl(epfd, EPOLL_CTL_ADD, f->fd, &ev) < 0)
		return -errno;
	f->registered = 1;
	return 0;
}

int loop_set_events(struct loop_fd *f, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = f};

	if (f->events == events && f->registered)
		return 0;
	f->events = events;
	if (!f->registered || f->fd < 0)
		return 0;
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, f->fd, &ev) < 0)
		return -errno;
	return 0;
}

void loop_del(struct loop_fd *f)
{
	if (f->registered && f->fd >= 0 && epoll_ctl(epfd, EPOLL_CTL_DEL, f->fd, NULL) < 0)
		hn_log("epoll del fd %d: errno %d", f->fd, errno);
	f->registered = 0;
}

void loop_close(struct loop_fd *f)
{
	if (f->fd < 0)
		return;
	loop_del(f);
	close(f->fd);
	f->fd = -1;
}

void loop_defer_free(void *p)
{
	if (ndeferred == deferred_cap) {
		size_t cap = deferred_cap ? deferred_cap * 2 : 64;
		void **d = realloc(deferred, cap * sizeof(*d));
		if (!d) {
			hn_log("out of memory deferring a free: leaking %p", p);
			return;
		}
		deferred = d;
		deferred_cap = cap;
	}
	deferred[ndeferred++] = p;
}

int loop_run_once(int timeout_ms)
{
	struct epoll_event evs[32];
	int n = epoll_wait(epfd, evs, (int)HN_ARRAY_LEN(evs), timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		struct loop_fd *f = evs[i].data.ptr;
		uint32_t e = evs[i].events;

		if (f->fd < 0 || !f->registered)
			continue;
		if ((e & EPOLLOUT) && f->ops->write)
			f->ops->write(f);
		if (f->fd < 0 || !f->registered)
			continue;
		if ((e & EPOLLIN) && f->ops->read)
			f->ops->read(f);
		else if ((e & (EPOLLHUP | EPOLLERR)) && f->fd >= 0 && f->registered) {
			if (f->ops->hup)
				f->ops->hup(f);
			else if (f->ops->read)
				f->ops->read(f);
		}
	}
	for (size_t i = 0; i < ndeferred; i++)
		free(deferred[i]);
	ndeferred = 0;
	return n;
}
