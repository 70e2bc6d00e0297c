/* Filesystems: the agent's own boot mounts, image disks, per-container overlays, and the
 * container-side rootfs assembly that runs in the child just before exec. */
#ifndef HN_MOUNT_H
#define HN_MOUNT_H

#include <stddef.h>
#include <sys/types.h>

#include "msg.h"
#include "util.h"

#define HN_RUN_DIR "/run/hn"
#define HN_IMAGES_DIR "/run/hn/images"
#define HN_CONTAINERS_DIR "/run/hn/c"
#define HN_DISKS_DIR "/run/hn/disks"     /* volume disks, each mounted once per VM */
#define HN_VOLUMES_DIR "/run/hn/volumes" /* pod volumes: one tmpfs each */
#define HN_FILES_MAX "16m" /* tmpfs size of a file volume (configMap, secret, projected) */
#define HN_CGROUP_DIR "/sys/fs/cgroup"

/* PID 1 boot: makes / pivotable, mounts /proc /sys /dev /dev/pts /dev/shm /run cgroup2. */
int mount_boot(void);

/* /dev path of the virtio-blk disk whose serial is `serial`. */
/* WRITE_FILES: (re)write files of the file volume HN_VOLUMES_DIR/<name> (a tmpfs, made by the
 * first WRITE_FILES), each replaced atomically; files not named are left as they are. */
int mount_write_files(const struct msg_write_files *m, struct hn_err *e);

int mount_find_disk(const char *serial, char *dev, size_t cap, struct hn_err *e);
/* Mounts the erofs image disk read-only under HN_IMAGES_DIR/<serial> unless already there. */
int mount_image(const char *serial, char *dir, size_t cap, struct hn_err *e);
/* tmpfs at HN_CONTAINERS_DIR/<id>, then overlay(lower=image, upper+work on that tmpfs) at
 * .../merged. */
int mount_overlay(const char *id, const char *image_dir, char *merged, size_t cap, struct hn_err *e);
/* Detaches the container's overlay and tmpfs and removes its directory. */
void mount_overlay_drop(const char *id);

/* One volume of a container, prepared by the agent before fork (mount_volume). */
struct rootfs_mount {
	const char *dir;     /* the mounted source (agent namespace path), or NULL: a fresh tmpfs */
	const char *subpath; /* NULL, or a sub-path of dir that mount_volume has checked */
	int is_file;         /* the sub-path is a regular file */
	const char *target;
	int readonly;
	uint64_t size_limit; /* fresh tmpfs only; 0 = none */
	char dirbuf[128];
};

/* Agent side of one MOUNT: mounts its source once per VM if needed (a disk under
 * HN_DISKS_DIR/<serial>, a pod volume under HN_VOLUMES_DIR/<name>: a tmpfs, or the filesystem
 * of its scratch disk or partition), resolves SUBPATH
 * without following symlinks (creating it when the volume is writable), applies fsgroup (may be
 * NULL) to a writable volume's root and sub-path directory, and fills r. The container binds
 * it: a bind needs a mount of the container's own (copied) namespace, so the container walks
 * the sub-path again, the same way. */
int mount_volume(const struct msg_mount *m, const uint32_t *fsgroup, struct rootfs_mount *r,
		 struct hn_err *e);

/* One raw disk of a container (DEVICE), resolved by the agent before fork (mount_device). */
struct rootfs_device {
	const char *target;
	dev_t devno;
	mode_t mode; /* 0660, 0440 when read-only */
	gid_t gid;   /* fsGroup, else 0 */
};

/* Agent side of one DEVICE: finds the disk's device number by serial and fills r. */
int mount_device(const struct msg_device *d, const uint32_t *fsgroup, struct rootfs_device *r,
		 struct hn_err *e);

/* Runs in the container's first process, in its fresh mount + PID namespaces: volumes, /proc,
 * /sys, /dev, the etc files, the device nodes, then pivot_root into merged. */
int mount_rootfs(const char *merged, const struct rootfs_mount *mounts, size_t n,
		 const struct rootfs_device *devices, size_t ndevices, struct hn_err *e);

/* Shutdown: detach every container, image, disk and pod volume mount. */
void mount_teardown(void);

/* Grows the ext4 filesystem mounted read-write from disk `serial` (under HN_DISKS_DIR) to fill
 * the disk, online (EXT4_IOC_RESIZE_FS); first waits up to 2 s for the guest to see the disk at
 * `size` bytes when given (a virtio config change is handled asynchronously). A no-op when the
 * filesystem fills the disk already, or is not a writable ext4. */
int mount_grow_fs(const char *serial, uint64_t size, struct hn_err *e);

#endif
