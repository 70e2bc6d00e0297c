/* The control channel: the "hn.agent" virtio-serial port, its frame reader and its output
 * queue. Output is queued and written as the port accepts it; a long queue, or no host to write
 * to, pauses the process output readers (back-pressure) instead of growing without bound. Whole
 * frames queued when a host goes away are kept for the next one (see chan.c). */
#ifndef HN_CHAN_H
#define HN_CHAN_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

#define CHAN_OUTQ_HIGH (512 * 1024) /* pause process output above this */
#define CHAN_OUTQ_LOW (128 * 1024)  /* and resume below this */

typedef void (*chan_frame_fn)(const struct frame_hdr *h, const uint8_t *payload);
typedef void (*chan_pressure_fn)(int paused);

/* Finds and opens the port, waiting up to wait_ms for it to appear. Returns 0 or -errno. */
int chan_open(int wait_ms, chan_frame_fn on_frame, chan_pressure_fn on_pressure);

/* Queues one frame. Returns 0 or -ENOMEM. */
int chan_send(uint16_t type, uint32_t id, const void *payload, size_t len);
int chan_paused(void);
/* Which conversation (host connection) this is: a request's reply that is sent later (REMOVE,
 * PROBE, SHUTDOWN) is dropped when the number changed, as its id meant something only to the
 * host that asked. */
uint32_t chan_conversation(void);
/* Timers: reconnect polling while the host end is closed. */
int chan_timeout_ms(void);
void chan_tick(void);
/* Writes the queue out synchronously (shutdown path). Returns 0 if it all went out. */
int chan_flush_blocking(int timeout_ms);

#endif
