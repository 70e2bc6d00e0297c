/* Filesystems: the agent's own boot mounts, image disks, per-container overlays, and the
 * container-side rootfs assembly that runs in the child just before exec. */
#ifndef HN_MOUNT_H
#define HN_MOUNT_H

#include <stddef.h>

#include "msg.h"
#include "util.h"

#define HN_RUN_DIR "/run/hn"
#define HN_IMAGES_DIR "/run/hn/images"
#define HN_CONTAINERS_DIR "/run/hn/c"
#define HN_CGROUP_DIR "/sys/fs/cgroup"

/* PID 1 boot: makes / pivotable, mounts /proc /sys /dev /dev/pts /dev/shm /run cgroup2. */
int mount_boot(void);

/* /dev path of the virtio-blk disk whose serial is `serial`. */
int mount_find_disk(const char *serial, char *dev, size_t cap, struct hn_err *e);
/* Mounts the erofs image disk read-only under HN_IMAGES_DIR/<serial> unless already there. */
int mount_image(const char *serial, char *dir, size_t cap, struct hn_err *e);
/* tmpfs at HN_CONTAINERS_DIR/<id>, then overlay(lower=image, upper+work on that tmpfs) at
 * .../merged. */
int mount_overlay(const char *id, const char *image_dir, char *merged, size_t cap, struct hn_err *e);
/* Detaches the container's overlay and tmpfs and removes its directory. */
void mount_overlay_drop(const char *id);

/* One extra mount resolved by the agent (disk serial -> /dev path) before fork. */
struct rootfs_mount {
	const char *source; /* "tmpfs" or a /dev path */
	const char *target;
	const char *fstype;
	int readonly;
};

/* Runs in the container's first process, in its fresh mount + PID namespaces: volumes, /proc,
 * /sys, /dev, the etc files, then pivot_root into merged. */
int mount_rootfs(const char *merged, const struct rootfs_mount *mounts, size_t n, struct hn_err *e);

/* Shutdown: detach every container and image mount. */
void mount_teardown(void);

#endif
