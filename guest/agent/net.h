/* Sandbox-wide settings from SETUP: clock, entropy, hostname, interfaces, routes, and the
 * resolv.conf/hosts/hostname files under HN_ETC_DIR that every container gets bind-mounted. */
#ifndef HN_NET_H
#define HN_NET_H

#include "msg.h"
#include "util.h"

#define HN_ETC_DIR "/run/hn/etc"

int net_lo_up(void);
/* Writes default etc files so containers created without SETUP still get valid ones. */
int net_write_default_etc(void);
int net_setup(const struct msg_setup *m, struct hn_err *e);

#endif
