/* PROBE: Kubernetes tcp and http probes run from the agent, i.e. from the pod's network
 * namespace. Each probe is a non-blocking socket in the epoll loop with its own deadline, so a
 * probe never stalls the agent. */
#ifndef HN_PROBE_H
#define HN_PROBE_H

#include <stdint.h>

#include "msg.h"
#include "util.h"

#define PROBE_MAX 64            /* probes in flight */
#define PROBE_MAX_RESPONSE 4096 /* bytes of an http response looked at for the status line */

/* Starts the probe; its ACK or ERROR (for id req) goes out when it ends or times out. Returns 0,
 * or -errno with e set when it could not start (the caller replies). */
int probe_start(const struct msg_probe *m, uint32_t req, struct hn_err *e);

int probe_timeout_ms(void);
void probe_tick(void);

#endif
