/* Filesystems for the agent and its containers. */
#include "mount.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define RAMFS_MAGIC_ 0x858458f6
#define TMPFS_MAGIC_ 0x01021994

static int do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
		    const char *data, struct hn_err *e)
{
	if (mount(src, dst, type, flags, data) < 0)
		return hn_fail(e, errno, "mount %s on %s (%s): %s", src ? src : "none", dst,
			       type ? type : "bind", strerror(errno));
	return 0;
}

/* pivot_root refuses a root that is the initramfs itself (it has no parent mount), so PID 1
 * first moves a bind mount of / onto /, like switch_root does. */
static int make_root_pivotable(struct hn_err *e)
{
	struct statfs st;
	int rc;

	if (statfs("/", &st) < 0)
		return hn_fail(e, errno, "statfs /: %s", strerror(errno));
	if (st.f_type != RAMFS_MAGIC_ && st.f_type != TMPFS_MAGIC_)
		return 0;
	if (mkdir("/.hn-root", 0700) < 0 && errno != EEXIST)
		return hn_fail(e, errno, "mkdir /.hn-root: %s", strerror(errno));
	rc = do_mount("/", "/.hn-root", NULL, MS_BIND, NULL, e);
	if (rc < 0)
		return rc;
	if (chdir("/.hn-root") < 0)
		return hn_fail(e, errno, "chdir /.hn-root: %s", strerror(errno));
	rc = do_mount(".", "/", NULL, MS_MOVE, NULL, e);
	if (rc < 0)
		return rc;
	if (chroot(".") < 0 || chdir("/") < 0)
		return hn_fail(e, errno, "chroot into the bound root: %s", strerror(errno));
	/* the now-unused mount point, visible through the bind */
	if (rmdir("/.hn-root") < 0)
		hn_log("rmdir /.hn-root: %s", strerror(errno));
	return 0;
}

int mount_boot(void)
{
	static const struct {
		const char *src, *dst, *type;
		unsigned long flags;
		const char *data;
	} m[] = {
		{"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
		{"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
		{"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
		{"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{"tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"},
		{"cgroup2", HN_CGROUP_DIR, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
	};
	struct hn_err e;
	int rc = make_root_pivotable(&e);

	if (rc < 0) {
		hn_log("%s", e.msg);
		return rc;
	}
	for (size_t i = 0; i < HN_ARRAY_LEN(m); i++) {
		if (hn_mkdir_p(m[i].dst, 0755) < 0) {
			hn_log("mkdir %s: %s", m[i].dst, strerror(errno));
			return -errno;
		}
		rc = do_mount(m[i].src, m[i].dst, m[i].type, m[i].flags, m[i].data, &e);
		if (rc == -EBUSY)
			continue; /* already mounted (e.g. devtmpfs by the kernel) */
		if (rc < 0) {
			hn_log("%s", e.msg);
			return rc;
		}
	}
	if (symlink("pts/ptmx", "/dev/ptmx") < 0 && errno == EEXIST) {
		/* devtmpfs has a /dev/ptmx node for the initial devpts instance; use ours */
		if (unlink("/dev/ptmx") < 0 || symlink("pts/ptmx", "/dev/ptmx") < 0)
			hn_log("/dev/ptmx -> pts/ptmx: %s", strerror(errno));
	}
	/* containers get memory.max (and pids accounting) in their own cgroups */
	if (hn_write_file(HN_CGROUP_DIR "/cgroup.subtree_control", "+memory", 7, 0, 0) < 0)
		hn_log("enable memory controller: %s", strerror(errno));
	if (hn_write_file(HN_CGROUP_DIR "/cgroup.subtree_control", "+pids", 5, 0, 0) < 0)
		hn_log("enable pids controller: %s", strerror(errno));
	if (hn_mkdir_p(HN_IMAGES_DIR, 0700) < 0 || hn_mkdir_p(HN_CONTAINERS_DIR, 0700) < 0)
		return -errno;
	return 0;
}

/* The block device of serial's disk (part 0) or of its partition `part`: its /dev path (the
 * node made from sysfs if devtmpfs lacks it) and, if devno is not NULL, its number. */
static int find_disk(const char *serial, uint32_t part, char *dev, size_t cap, dev_t *devno,
		     struct hn_err *e)
{
	DIR *d = opendir("/sys/block");
	struct dirent *de;
	int rc = hn_fail(e, ENODEV, "no virtio disk with serial \"%s\"", serial);

	if (!d)
		return hn_fail(e, errno, "opendir /sys/block: %s", strerror(errno));
	while ((de = readdir(d)) != NULL) {
		char path[700], line[64], name[300];
		struct stat st;
		unsigned maj, min;
		if (strncmp(de->d_name, "vd", 2))
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/serial", de->d_name);
		if (hn_read_line(path, line, sizeof(line)) < 0 || strcmp(line, serial))
			continue;
		/* vd names end in a letter, so the kernel names partitions vdb1, vdb2, ... */
		if (part)
			snprintf(name, sizeof(name), "%s%u", de->d_name, part);
		else
			snprintf(name, sizeof(name), "%s", de->d_name);
		if (part)
			snprintf(path, sizeof(path), "/sys/block/%s/%s/dev", de->d_name, name);
		else
			snprintf(path, sizeof(path), "/sys/block/%s/dev", de->d_name);
		if (hn_read_line(path, line, sizeof(line)) < 0 || sscanf(line, "%u:%u", &maj, &min) != 2) {
			rc = part ? hn_fail(e, ENXIO, "disk \"%s\" has no partition %u", serial, part)
				  : hn_fail(e, ENODEV, "no device number for disk \"%s\"", serial);
			break;
		}
		if ((size_t)snprintf(dev, cap, "/dev/%s", name) >= cap) {
			rc = hn_fail(e, ENAMETOOLONG, "device name %s too long", name);
			break;
		}
		if (devno)
			*devno = makedev(maj, min);
		rc = 0;
		if (stat(dev, &st) == 0)
			break;
		/* devtmpfs normally has it; if not, make the node from sysfs */
		if (mknod(dev, S_IFBLK | 0600, makedev(maj, min)) < 0)
			rc = hn_fail(e, errno, "no device node for %s: %s", dev, strerror(errno));
		break;
	}
	closedir(d);
	return rc;
}

int mount_find_disk(const char *serial, char *dev, size_t cap, struct hn_err *e)
{
	return find_disk(serial, 0, dev, cap, NULL, e);
}

static int is_mountpoint(const char *path)
{
	char parent[4200];
	struct stat a, b;

	snprintf(parent, sizeof(parent), "%s/..", path);
	if (stat(path, &a) < 0 || stat(parent, &b) < 0)
		return 0;
	return a.st_dev != b.st_dev;
}

int mount_image(const char *serial, char *dir, size_t cap, struct hn_err *e)
{
	char dev[64];
	int rc;

	snprintf(dir, cap, HN_IMAGES_DIR "/%s", serial);
	if (is_mountpoint(dir))
		return 0;
	rc = mount_find_disk(serial, dev, sizeof(dev), e);
	if (rc < 0)
		return rc;
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return hn_fail(e, errno, "mkdir %s: %s", dir, strerror(errno));
	return do_mount(dev, dir, "erofs", MS_RDONLY | MS_NODEV, NULL, e);
}

int mount_overlay(const char *id, const char *image_dir, char *merged, size_t cap, struct hn_err *e)
{
	char base[128], upper[160], work[160], opts[600];
	int rc;

	snprintf(base, sizeof(base), HN_CONTAINERS_DIR "/%s", id);
	snprintf(upper, sizeof(upper), "%s/upper", base);
	snprintf(work, sizeof(work), "%s/work", base);
	snprintf(merged, cap, "%s/merged", base);
	if (mkdir(base, 0700) < 0)
		return hn_fail(e, errno, "mkdir %s: %s", base, strerror(errno));
	/* own tmpfs, so REMOVE frees the container's writes with one unmount */
	rc = do_mount("tmpfs", base, "tmpfs", MS_NOSUID, "mode=0700", e);
	if (rc < 0)
		goto fail_dir;
	if (mkdir(upper, 0755) < 0 || mkdir(work, 0700) < 0 || mkdir(merged, 0755) < 0) {
		rc = hn_fail(e, errno, "mkdir under %s: %s", base, strerror(errno));
		goto fail_tmpfs;
	}
	snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s", image_dir, upper, work);
	rc = do_mount("overlay", merged, "overlay", 0, opts, e);
	if (rc == 0)
		return 0;
fail_tmpfs:
	if (umount2(base, MNT_DETACH) < 0)
		hn_log("umount %s: %s", base, strerror(errno));
fail_dir:
	if (rmdir(base) < 0)
		hn_log("rmdir %s: %s", base, strerror(errno));
	return rc;
}

void mount_overlay_drop(const char *id)
{
	char base[128], merged[160];

	snprintf(base, sizeof(base), HN_CONTAINERS_DIR "/%s", id);
	snprintf(merged, sizeof(merged), "%s/merged", base);
	if (umount2(merged, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		hn_log("umount %s: %s", merged, strerror(errno));
	if (umount2(base, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		hn_log("umount %s: %s", base, strerror(errno));
	if (rmdir(base) < 0 && errno != ENOENT)
		hn_log("rmdir %s: %s", base, strerror(errno));
}

/* ---- volumes (agent side) ---- */

static int grow_ext4(const char *dir, const char *dev, uint64_t want, struct hn_err *e);

static int mount_disk(const struct msg_mount *m, char *dir, size_t cap, struct hn_err *e)
{
	struct statvfs sv;
	char dev[64];
	int rc;

	snprintf(dir, cap, HN_DISKS_DIR "/%s", m->name);
	if (is_mountpoint(dir)) {
		if (m->readonly)
			return 0;
		if (statvfs(dir, &sv) < 0)
			return hn_fail(e, errno, "statvfs %s: %s", dir, strerror(errno));
		if (!(sv.f_flag & ST_RDONLY))
			return 0;
		/* first mounted for a read-only use: this writable one makes it read-write (the
		 * read-only binds made so far stay read-only) */
		if (mount(NULL, dir, NULL, MS_REMOUNT, NULL) < 0)
			return hn_fail(e, errno, "disk %s is mounted read-only and cannot be made writable: %s",
				       m->name, strerror(errno));
		return 0;
	}
	rc = mount_find_disk(m->name, dev, sizeof(dev), e);
	if (rc < 0)
		return rc;
	rc = hn_mkdir_p(dir, 0755);
	if (rc < 0)
		return hn_fail(e, -rc, "mkdir %s: %s", dir, strerror(-rc));
	rc = do_mount(dev, dir, m->fstype, m->readonly ? MS_RDONLY : 0, NULL, e);
	if (rc == 0 && !m->readonly) {
		/* a disk grown while no VM had it (a claim expanded): the filesystem follows now */
		struct hn_err grow = {0};
		if (grow_ext4(dir, dev, 0, &grow) < 0)
			hn_log("disk %s: %s", m->name, grow.msg);
	}
	return rc;
}

#define EXT4_MAGIC 0xEF53
#define EXT4_RESIZE_FS _IOW('f', 16, uint64_t) /* EXT4_IOC_RESIZE_FS: new block count */

/* Grow the ext4 at `dir` on device `dev` to fill the device (the kernel refuses to shrink one,
 * and a count equal to today's is a no-op). */
static int grow_ext4(const char *dir, const char *dev, uint64_t want, struct hn_err *e)
{
	struct statfs sf;
	uint64_t bytes = 0, blocks;
	int fd, rc = 0, tries;

	if (statfs(dir, &sf) < 0)
		return hn_fail(e, errno, "statfs %s: %s", dir, strerror(errno));
	if (sf.f_type != EXT4_MAGIC || (sf.f_flags & ST_RDONLY) || sf.f_bsize <= 0)
		return 0;
	fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hn_fail(e, errno, "open %s: %s", dev, strerror(errno));
	for (tries = 0; tries < 200; tries++) { /* 2 s for the resize to reach the guest */
		if (ioctl(fd, BLKGETSIZE64, &bytes) < 0) {
			rc = hn_fail(e, errno, "size of %s: %s", dev, strerror(errno));
			break;
		}
		if (bytes >= want)
			break;
		usleep(10000);
	}
	close(fd);
	if (rc < 0)
		return rc;
	if (bytes < want)
		return hn_fail(e, EAGAIN, "disk %s: %llu bytes, not yet the %llu the host gave it", dev,
			       (unsigned long long)bytes, (unsigned long long)want);
	blocks = bytes / (uint64_t)sf.f_bsize;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return hn_fail(e, errno, "open %s: %s", dir, strerror(errno));
	if (ioctl(fd, EXT4_RESIZE_FS, &blocks) < 0)
		rc = hn_fail(e, errno, "grow the filesystem of %s to %llu blocks: %s", dev,
			     (unsigned long long)blocks, strerror(errno));
	close(fd);
	return rc;
}

int mount_grow_fs(const char *serial, uint64_t size, struct hn_err *e)
{
	char dir[128], dev[64];
	int rc;

	snprintf(dir, sizeof(dir), HN_DISKS_DIR "/%s", serial);
	if (!is_mountpoint(dir))
		return hn_fail(e, ENOENT, "disk \"%s\" is not mounted", serial);
	rc = mount_find_disk(serial, dev, sizeof(dev), e);
	if (rc < 0)
		return rc;
	return grow_ext4(dir, dev, size, e);
}

/* A pod volume on a scratch disk (partition): a fresh filesystem the host made for this pod.
 * Its root gets an emptyDir's mode 0777, and mkfs's empty lost+found is not part of one. */
static int mount_scratch(const struct msg_mount *m, const char *dir, struct hn_err *e)
{
	char dev[80], lf[160];
	int rc = find_disk(m->disk, m->partition, dev, sizeof(dev), NULL, e);

	if (rc < 0)
		return rc;
	rc = do_mount(dev, dir, m->fstype, MS_NOSUID | MS_NODEV, NULL, e);
	if (rc < 0)
		return rc;
	if (chmod(dir, 0777) < 0) {
		rc = hn_fail(e, errno, "chmod %s: %s", dir, strerror(errno));
		if (umount2(dir, MNT_DETACH) < 0) /* else the next MOUNT would take it as it is */
			hn_log("umount %s: %s", dir, strerror(errno));
		return rc;
	}
	snprintf(lf, sizeof(lf), "%s/lost+found", dir);
	if (rmdir(lf) < 0 && errno != ENOENT)
		hn_log("rmdir %s: %s", lf, strerror(errno));
	return 0;
}

static int mount_pod_volume(const struct msg_mount *m, char *dir, size_t cap, struct hn_err *e)
{
	char opts[64];
	int rc;

	snprintf(dir, cap, HN_VOLUMES_DIR "/%s", m->name);
	if (is_mountpoint(dir))
		return 0; /* the first MOUNT of a pod volume fixed its size */
	rc = hn_mkdir_p(dir, 0755);
	if (rc < 0)
		return hn_fail(e, -rc, "mkdir %s: %s", dir, strerror(-rc));
	if (m->disk)
		return mount_scratch(m, dir, e);
	if (m->size_limit)
		snprintf(opts, sizeof(opts), "mode=0777,size=%llu", (unsigned long long)m->size_limit);
	else
		snprintf(opts, sizeof(opts), "mode=0777");
	return do_mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts, e);
}

/* The directory of `rel`'s parent under `root`, made if missing, walked one component at a time
 * without following symlinks; *base points at the last component. Returns an fd or -errno. */
static int open_parent(int root, const char *rel, const char **base)
{
	char comp[256];
	int fd = dup(root);
	const char *c = rel;

	if (fd < 0)
		return -errno;
	for (;;) {
		const char *next = strchr(c, '/');
		size_t n;
		int sub;
		if (!next) {
			*base = c;
			return fd;
		}
		n = (size_t)(next - c);
		if (n >= sizeof(comp)) {
			close(fd);
			return -ENAMETOOLONG;
		}
		memcpy(comp, c, n);
		comp[n] = '\0';
		if (mkdirat(fd, comp, 0755) < 0 && errno != EEXIST) {
			int err = errno;
			close(fd);
			return -err;
		}
		sub = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(fd);
		if (sub < 0)
			return -errno;
		fd = sub;
		c = next + 1;
	}
}

/* One file, replaced atomically: written beside it under a temporary name, then renamed over it,
 * so a reader sees the old contents or the new, never a part. */
static int write_one(int root, const struct msg_file *f, struct hn_err *e)
{
	char tmp[300];
	const char *base = f->path;
	int dir = open_parent(root, f->path, &base);
	int fd, rc;

	if (dir < 0)
		return hn_fail(e, -dir, "file %s: its directory: %s", f->path, strerror(-dir));
	if (strlen(base) > 255 - 10) {
		close(dir);
		return hn_fail(e, ENAMETOOLONG, "file %s: name too long", f->path);
	}
	snprintf(tmp, sizeof(tmp), ".%s.hn-tmp", base);
	fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		close(dir);
		return hn_fail(e, -rc, "file %s: %s", f->path, strerror(-rc));
	}
	rc = hn_write_all(fd, f->data, f->len);
	if (rc == 0 && fchmod(fd, (mode_t)f->mode) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && renameat(dir, tmp, dir, base) < 0)
		rc = -errno;
	if (rc < 0)
		unlinkat(dir, tmp, 0);
	close(dir);
	return rc < 0 ? hn_fail(e, -rc, "file %s: %s", f->path, strerror(-rc)) : 0;
}

int mount_write_files(const struct msg_write_files *m, struct hn_err *e)
{
	char dir[128];
	int root, rc = 0;

	snprintf(dir, sizeof(dir), HN_VOLUMES_DIR "/%s", m->name);
	if (!is_mountpoint(dir)) {
		rc = hn_mkdir_p(dir, 0755);
		if (rc < 0)
			return hn_fail(e, -rc, "mkdir %s: %s", dir, strerror(-rc));
		/* only the agent writes here; containers get read-only binds */
		rc = do_mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=" HN_FILES_MAX, e);
		if (rc < 0)
			return rc;
	}
	root = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (root < 0)
		return hn_fail(e, errno, "open %s: %s", dir, strerror(errno));
	for (size_t i = 0; i < m->nfiles && rc == 0; i++)
		rc = write_one(root, &m->files[i], e);
	close(root);
	return rc;
}

static int chmod_fd(int fd, mode_t mode)
{
	char p[40];

	/* O_PATH fds take neither fchmod nor fchmodat(AT_EMPTY_PATH) on this kernel */
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	return chmod(p, mode);
}

/* kubelet's fsGroup on one directory: group-owned by gid, setgid, group rwx. */
static int apply_fsgroup(int fd, uint32_t gid, const char *what, struct hn_err *e)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return hn_fail(e, errno, "stat %s: %s", what, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return 0;
	if (fchownat(fd, "", (uid_t)-1, (gid_t)gid, AT_EMPTY_PATH) < 0)
		return hn_fail(e, errno, "fsGroup: chown %s to group %u: %s", what, gid, strerror(errno));
	if (chmod_fd(fd, (st.st_mode & 07777) | S_ISGID | S_IRWXG) < 0)
		return hn_fail(e, errno, "fsGroup: chmod %s: %s", what, strerror(errno));
	return 0;
}

/* Walks sub-path components from root without following any symlink; missing ones are made
 * (with the volume root's mode) when writable. Returns an O_PATH fd or -errno. */
static int open_subpath(int root, const char *volume, const char *subpath, int writable,
			int *is_file, struct hn_err *e)
{
	struct stat st;
	mode_t mode;
	const char *c = subpath;
	int fd = root, nfd;

	if (fstat(root, &st) < 0)
		return hn_fail(e, errno, "stat volume %s: %s", volume, strerror(errno));
	mode = st.st_mode & 07777;
	*is_file = 0;
	while (*c) {
		char comp[256];
		const char *next;
		size_t n;
		while (*c == '/')
			c++;
		next = strchr(c, '/');
		n = next ? (size_t)(next - c) : strlen(c);
		if (n == 0 || (n == 1 && c[0] == '.')) {
			c += n;
			continue;
		}
		if (*is_file) {
			nfd = hn_fail(e, ENOTDIR, "sub-path %s of volume %s: a file is in the way", subpath, volume);
			goto fail;
		}
		if (n >= sizeof(comp)) {
			nfd = hn_fail(e, ENAMETOOLONG, "sub-path %s: component too long", subpath);
			goto fail;
		}
		memcpy(comp, c, n);
		comp[n] = '\0';
		c += n;
		nfd = openat(fd, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0 && errno == ENOENT) {
			if (!writable) {
				nfd = hn_fail(e, ENOENT, "sub-path %s does not exist in read-only volume %s",
					      subpath, volume);
				goto fail;
			}
			if (mkdirat(fd, comp, 0700) < 0 && errno != EEXIST) {
				nfd = hn_fail(e, errno, "create sub-path %s in volume %s: %s", subpath, volume,
					      strerror(errno));
				goto fail;
			}
			nfd = openat(fd, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
			if (nfd >= 0 && chmod_fd(nfd, mode) < 0) /* the umask would cut mkdirat's mode */
				hn_log("chmod sub-path %s: %s", subpath, strerror(errno));
		}
		if (nfd < 0) {
			nfd = hn_fail(e, errno, "open sub-path %s in volume %s: %s", subpath, volume,
				      strerror(errno));
			goto fail;
		}
		if (fd != root)
			close(fd);
		fd = nfd;
		if (fstat(fd, &st) < 0) {
			nfd = hn_fail(e, errno, "stat sub-path %s: %s", subpath, strerror(errno));
			goto fail;
		}
		if (S_ISLNK(st.st_mode)) {
			nfd = hn_fail(e, ELOOP, "sub-path %s of volume %s: %s is a symlink (not followed)",
				      subpath, volume, comp);
			goto fail;
		}
		if (S_ISREG(st.st_mode))
			*is_file = 1;
		else if (!S_ISDIR(st.st_mode)) {
			nfd = hn_fail(e, ENOTDIR, "sub-path %s of volume %s: %s is not a directory or file",
				      subpath, volume, comp);
			goto fail;
		}
	}
	if (fd == root) /* only "." components: the volume itself */
		fd = fcntl(root, F_DUPFD_CLOEXEC, 3);
	return fd;
fail:
	if (fd != root)
		close(fd);
	return nfd;
}

int mount_volume(const struct msg_mount *m, const uint32_t *fsgroup, struct rootfs_mount *r,
		 struct hn_err *e)
{
	struct statvfs sv;
	int rc, root, fd, writable;

	memset(r, 0, sizeof(*r));
	r->target = m->target;
	r->readonly = m->readonly;
	r->size_limit = m->size_limit;
	r->subpath = m->subpath;
	if (m->kind == SOURCE_TMPFS)
		return 0; /* made by the container itself, private to it */
	rc = m->kind == SOURCE_POD ? mount_pod_volume(m, r->dirbuf, sizeof(r->dirbuf), e)
				   : mount_disk(m, r->dirbuf, sizeof(r->dirbuf), e);
	if (rc < 0)
		return rc;
	r->dir = r->dirbuf;
	if (statvfs(r->dir, &sv) < 0)
		return hn_fail(e, errno, "statvfs %s: %s", r->dir, strerror(errno));
	writable = !m->readonly && !(sv.f_flag & ST_RDONLY);
	root = open(r->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return hn_fail(e, errno, "open %s: %s", r->dir, strerror(errno));
	if (fsgroup && writable)
		rc = apply_fsgroup(root, *fsgroup, m->source, e);
	if (rc == 0 && m->subpath) {
		fd = open_subpath(root, m->source, m->subpath, writable, &r->is_file, e);
		if (fd < 0)
			rc = fd;
		else if (fsgroup && writable)
			rc = apply_fsgroup(fd, *fsgroup, m->subpath, e);
		if (fd >= 0)
			close(fd);
	}
	close(root);
	return rc;
}

int mount_device(const struct msg_device *d, const uint32_t *fsgroup, struct rootfs_device *r,
		 struct hn_err *e)
{
	char dev[80];
	int rc = find_disk(d->serial, 0, dev, sizeof(dev), &r->devno, e);

	if (rc < 0)
		return rc;
	r->target = d->target;
	/* mode bits do not stop root: a read-only claim is enforced by QEMU (readonly=on) */
	r->mode = d->readonly ? 0440 : 0660;
	r->gid = fsgroup ? (gid_t)*fsgroup : 0;
	return 0;
}

static int mkdir_in(const char *root, const char *rel, mode_t mode, char *out, size_t cap,
		    struct hn_err *e)
{
	int n = snprintf(out, cap, "%s%s", root, rel);
	int rc;

	if (n < 0 || (size_t)n >= cap)
		return hn_fail(e, ENAMETOOLONG, "path too long: %s", rel);
	rc = hn_mkdir_p(out, mode);
	if (rc < 0)
		return hn_fail(e, -rc, "mkdir %s: %s", rel, strerror(-rc));
	return 0;
}

/* Make sure <root>/etc/<name> is a regular file we can bind over (a symlink there would make
 * the bind follow it). */
static int bind_etc(const char *root, const char *name, struct hn_err *e)
{
	char src[128], dst[4200];
	struct stat st;
	int fd;

	snprintf(src, sizeof(src), "/run/hn/etc/%s", name);
	if (stat(src, &st) < 0)
		return 0;
	snprintf(dst, sizeof(dst), "%s/etc/%s", root, name);
	if (lstat(dst, &st) == 0 && !S_ISREG(st.st_mode) && unlink(dst) < 0 && errno != EISDIR)
		return hn_fail(e, errno, "replace /etc/%s: %s", name, strerror(errno));
	fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return hn_fail(e, errno, "create /etc/%s: %s", name, strerror(errno));
	close(fd);
	return do_mount(src, dst, NULL, MS_BIND, NULL, e);
}

static int make_dev(const char *root, struct hn_err *e)
{
	static const struct {
		const char *name;
		unsigned maj, min;
	} nodes[] = {{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7},
		     {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
	static const struct {
		const char *target, *name;
	} links[] = {{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		     {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}};
	char dev[4200], p[4300];
	int rc = mkdir_in(root, "/dev", 0755, dev, sizeof(dev), e);

	if (rc == 0)
		rc = do_mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=65536k", e);
	for (size_t i = 0; rc == 0 && i < HN_ARRAY_LEN(nodes); i++) {
		snprintf(p, sizeof(p), "%s/%s", dev, nodes[i].name);
		if (mknod(p, S_IFCHR | 0666, makedev(nodes[i].maj, nodes[i].min)) < 0 ||
		    chmod(p, 0666) < 0) /* mknod's mode is cut by the umask */
			rc = hn_fail(e, errno, "mknod /dev/%s: %s", nodes[i].name, strerror(errno));
	}
	for (size_t i = 0; rc == 0 && i < HN_ARRAY_LEN(links); i++) {
		snprintf(p, sizeof(p), "%s/%s", dev, links[i].name);
		if (symlink(links[i].target, p) < 0)
			rc = hn_fail(e, errno, "symlink /dev/%s: %s", links[i].name, strerror(errno));
	}
	if (rc == 0) {
		snprintf(p, sizeof(p), "%s/pts", dev);
		if (mkdir(p, 0755) < 0)
			rc = hn_fail(e, errno, "mkdir /dev/pts: %s", strerror(errno));
	}
	if (rc == 0)
		rc = do_mount("devpts", p, "devpts", MS_NOSUID | MS_NOEXEC,
			      "newinstance,ptmxmode=0666,mode=0620,gid=5", e);
	if (rc == 0) {
		snprintf(p, sizeof(p), "%s/shm", dev);
		if (mkdir(p, 01777) < 0)
			rc = hn_fail(e, errno, "mkdir /dev/shm: %s", strerror(errno));
	}
	if (rc == 0)
		rc = do_mount("shm", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", e);
	return rc;
}

/* A bind's mount point: a directory, or for a file sub-path an empty file. */
static int make_target(const char *root, const struct rootfs_mount *m, char *p, size_t cap,
		       struct hn_err *e)
{
	char parent[4200];
	const char *slash;
	int fd, rc;

	if (!m->is_file)
		return mkdir_in(root, m->target, 0755, p, cap, e);
	slash = strrchr(m->target, '/');
	snprintf(parent, sizeof(parent), "%.*s", (int)(slash - m->target), m->target);
	rc = mkdir_in(root, parent, 0755, p, cap, e);
	if (rc < 0)
		return rc;
	if (snprintf(p, cap, "%s%s", root, m->target) >= (int)cap)
		return hn_fail(e, ENAMETOOLONG, "path too long: %s", m->target);
	fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 && errno != EISDIR)
		return hn_fail(e, errno, "create %s: %s", m->target, strerror(errno));
	if (fd >= 0)
		close(fd);
	return 0;
}

static int mount_one(const char *root, const struct rootfs_mount *m, struct hn_err *e)
{
	unsigned long ro = m->readonly ? MS_RDONLY : 0;
	char p[4200], src[40], opts[64];
	struct statvfs sv;
	unsigned long keep = 0;
	int rc = make_target(root, m, p, sizeof(p), e), fd, is_file;

	if (rc < 0)
		return rc;
	if (!m->dir) {
		if (m->size_limit)
			snprintf(opts, sizeof(opts), "mode=0777,size=%llu", (unsigned long long)m->size_limit);
		else
			snprintf(opts, sizeof(opts), "mode=0777");
		return do_mount("tmpfs", p, "tmpfs", ro | MS_NOSUID | MS_NODEV, opts, e);
	}
	/* the same walk as the agent's, without creating: no symlink is followed */
	fd = open(m->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return hn_fail(e, errno, "open %s: %s", m->dir, strerror(errno));
	if (m->subpath) {
		int sub = open_subpath(fd, m->dir, m->subpath, 0, &is_file, e);
		close(fd);
		if (sub < 0)
			return sub;
		fd = sub;
	}
	snprintf(src, sizeof(src), "/proc/self/fd/%d", fd);
	rc = do_mount(src, p, NULL, MS_BIND, NULL, e);
	close(fd);
	if (rc < 0 || !m->readonly)
		return rc;
	/* a bind-remount sets every per-mount flag: keep nosuid/nodev/noexec of the source */
	if (statvfs(p, &sv) == 0) {
		if (sv.f_flag & ST_NOSUID)
			keep |= MS_NOSUID;
		if (sv.f_flag & ST_NODEV)
			keep |= MS_NODEV;
		if (sv.f_flag & ST_NOEXEC)
			keep |= MS_NOEXEC;
	}
	return do_mount(NULL, p, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | keep, NULL, e);
}

/* A raw disk's node at its target, made after the container's /dev so that it may live there;
 * whatever non-directory the image has at that path is replaced. */
static int make_device(const char *root, const struct rootfs_device *d, struct hn_err *e)
{
	const char *slash = strrchr(d->target, '/');
	char parent[4200], p[4200];
	struct stat st;
	int rc;

	snprintf(parent, sizeof(parent), "%.*s", (int)(slash - d->target), d->target);
	rc = mkdir_in(root, parent, 0755, p, sizeof(p), e);
	if (rc < 0)
		return rc;
	if (snprintf(p, sizeof(p), "%s%s", root, d->target) >= (int)sizeof(p))
		return hn_fail(e, ENAMETOOLONG, "path too long: %s", d->target);
	if (lstat(p, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return hn_fail(e, EISDIR, "device %s: a directory is in the way", d->target);
		if (unlink(p) < 0)
			return hn_fail(e, errno, "device %s: remove what is there: %s", d->target,
				       strerror(errno));
	}
	/* mknod's mode is cut by the umask */
	if (mknod(p, S_IFBLK | d->mode, d->devno) < 0 || chmod(p, d->mode) < 0 ||
	    lchown(p, 0, d->gid) < 0)
		return hn_fail(e, errno, "mknod %s: %s", d->target, strerror(errno));
	return 0;
}

int mount_rootfs(const char *root, const struct rootfs_mount *mounts, size_t n,
		 const struct rootfs_device *devices, size_t ndevices, struct hn_err *e)
{
	char p[4200];
	int rc;

	/* nothing done here may propagate back to the agent's namespace */
	rc = do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL, e);
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = mount_one(root, &mounts[i], e);
	if (rc == 0)
		rc = mkdir_in(root, "/proc", 0555, p, sizeof(p), e);
	if (rc == 0)
		rc = do_mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, e);
	if (rc == 0)
		rc = mkdir_in(root, "/sys", 0555, p, sizeof(p), e);
	if (rc == 0)
		rc = do_mount("sysfs", p, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, e);
	if (rc == 0)
		rc = make_dev(root, e);
	if (rc == 0)
		rc = mkdir_in(root, "/etc", 0755, p, sizeof(p), e);
	if (rc == 0)
		rc = bind_etc(root, "hosts", e);
	if (rc == 0)
		rc = bind_etc(root, "resolv.conf", e);
	if (rc == 0)
		rc = bind_etc(root, "hostname", e);
	for (size_t i = 0; rc == 0 && i < ndevices; i++)
		rc = make_device(root, &devices[i], e);
	if (rc < 0)
		return rc;
	/* pivot_root(".", "."): the old root ends up on top of the new one, then goes away */
	if (chdir(root) < 0)
		return hn_fail(e, errno, "chdir %s: %s", root, strerror(errno));
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return hn_fail(e, errno, "pivot_root: %s", strerror(errno));
	if (umount2(".", MNT_DETACH) < 0)
		return hn_fail(e, errno, "detach old root: %s", strerror(errno));
	if (chdir("/") < 0)
		return hn_fail(e, errno, "chdir /: %s", strerror(errno));
	return 0;
}

void mount_teardown(void)
{
	const char *dirs[] = {HN_CONTAINERS_DIR, HN_IMAGES_DIR, HN_DISKS_DIR, HN_VOLUMES_DIR};

	for (size_t i = 0; i < HN_ARRAY_LEN(dirs); i++) {
		DIR *d = opendir(dirs[i]);
		struct dirent *de;
		if (!d)
			continue;
		while ((de = readdir(d)) != NULL) {
			char p[600];
			if (de->d_name[0] == '.')
				continue;
			/* best effort on the way to power-off: EINVAL just means "not mounted" */
			snprintf(p, sizeof(p), "%s/%s/merged", dirs[i], de->d_name);
			if (umount2(p, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
				hn_log("umount %s: %s", p, strerror(errno));
			snprintf(p, sizeof(p), "%s/%s", dirs[i], de->d_name);
			if (umount2(p, MNT_DETACH) < 0 && errno != EINVAL)
				hn_log("umount %s: %s", p, strerror(errno));
		}
		closedir(d);
	}
}
