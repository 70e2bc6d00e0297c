/*
 * hn-modload: /init for guest kernels whose virtio drivers and filesystems are modules.
 *
 * The host (hypernetes/runtime/kernels.py) puts the modules into the initrd with their
 * load order in /lib/modules/hn-load.list (absolute paths, one per line, dependencies first).
 * We load each with finit_module(2), then switch module loading off for good (the minimal
 * kernel has no module support, and a tenant's root should not gain it here), make sure fds
 * 0-2 are open, then exec the agent, which thereby becomes PID 1 exactly as with a kernel that
 * has everything built in.
 *
 * A module that fails to load is reported and skipped: the agent then reports the missing
 * device to the host, which is a better error than a guest that never answers. If the agent
 * cannot be exec'd we reboot; the kernel cmdline has reboot=t and QEMU runs with -no-reboot,
 * so the VM ends instead of hanging.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define LOAD_LIST "/lib/modules/hn-load.list"
#define AGENT "/sbin/hn-agent"
#define MAX_LIST 16384
#define CONSOLE_WAIT_MS 1000 /* hvc0 appears once virtio-serial's control queue has run */

static int log_fd = -1;

/* Write a line to the kernel log (shown on the console even with `quiet`), else to stderr. */
static void say(const char *what, const char *path, int err)
{
    char line[512];
    int n = snprintf(line, sizeof line, "<3>hn-modload: %s %s: %s\n", what, path,
                     err ? strerror(err) : "ok");
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = sizeof line - 1;
    if (log_fd < 0) {
        log_fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
        if (log_fd < 0 && errno == ENOENT &&
            (mkdir("/dev", 0755) == 0 || errno == EEXIST) &&
            mknod("/dev/kmsg", S_IFCHR | 0600, makedev(1, 11)) == 0)
            log_fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    }
    if (log_fd >= 0 && write(log_fd, line, (size_t)n) == n)
        return;
    /* No kmsg: stderr without the priority prefix. Nothing left to try if that fails too. */
    if (write(STDERR_FILENO, line + 3, (size_t)n - 3) < 0)
        return;
}

static int read_list(char *buf, size_t size)
{
    int fd = open(LOAD_LIST, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        say("cannot open", LOAD_LIST, errno);
        return -1;
    }
    size_t len = 0;
    for (;;) {
        ssize_t got = read(fd, buf + len, size - 1 - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            say("cannot read", LOAD_LIST, errno);
            len = 0;
            break;
        }
        if (got == 0)
            break;
        len += (size_t)got;
        if (len == size - 1) {
            say("list too long, ignored:", LOAD_LIST, EFBIG);
            len = 0;
            break;
        }
    }
    buf[len] = '\0';
    if (close(fd) < 0)
        say("cannot close", LOAD_LIST, errno);
    return len ? 0 : -1;
}

static void load(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        say("cannot open module", path, errno);
        return;
    }
    /* musl has no wrapper; "" = no module parameters, 0 = no flags. */
    if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
        say("cannot load module", path, errno);
    if (close(fd) < 0)
        say("cannot close module", path, errno);
}

static void load_all(void)
{
    static char list[MAX_LIST];
    if (read_list(list, sizeof list) < 0)
        return;
    char *line = list;
    while (*line) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        if (line[0] == '/')
            load(line);
        else if (line[0] != '\0' && line[0] != '#')
            say("ignoring relative path", line, EINVAL);
        if (!end)
            break;
        line = end + 1;
    }
}

/* The same as booting with `nomodule`, which would also have stopped us. */
static void disable_modules(void)
{
    static const char knob[] = "/proc/sys/kernel/modules_disabled";
    if (mkdir("/proc", 0555) < 0 && errno != EEXIST) {
        say("cannot create", "/proc", errno);
        return;
    }
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
        say("cannot mount", "/proc", errno);
        return;
    }
    int fd = open(knob, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        say("cannot open", knob, errno);
    else {
        if (write(fd, "1\n", 2) != 2)
            say("cannot write", knob, errno);
        if (close(fd) < 0)
            say("cannot close", knob, errno);
    }
    /* Leave /proc as the kernel gave it: the agent mounts what it needs itself. */
    if (umount("/proc") < 0)
        say("cannot unmount", "/proc", errno);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/*
 * The kernel opens /dev/console for init before our modules are loaded, so with a modular
 * virtio_console it fails and fds 0-2 start closed. The agent must not find its control port
 * or a container's file on fd 2, so give it the console, or /dev/null if there is none.
 */
static void open_stdio(void)
{
    if (fcntl(STDIN_FILENO, F_GETFD) >= 0)
        return;
    int fd = -1;
    for (int waited = 0; fd < 0 && waited <= CONSOLE_WAIT_MS; waited += 10) {
        fd = open("/dev/console", O_RDWR);
        if (fd < 0 && errno != ENODEV && errno != ENXIO)
            break;
        if (fd < 0)
            sleep_ms(10);
    }
    if (fd < 0) {
        say("no console, using", "/dev/null", errno);
        fd = open("/dev/null", O_RDWR);
        if (fd < 0 && errno == ENOENT &&
            (mkdir("/dev", 0755) == 0 || errno == EEXIST) &&
            mknod("/dev/null", S_IFCHR | 0666, makedev(1, 3)) == 0)
            fd = open("/dev/null", O_RDWR);
    }
    if (fd < 0) {
        say("cannot open", "/dev/null", errno);
        return;
    }
    for (int target = 0; target <= 2; target++)
        if (fd != target && dup2(fd, target) < 0)
            say("cannot dup console to stdio", "", errno);
    if (fd > 2 && close(fd) < 0)
        say("cannot close", "/dev/console", errno);
}

int main(int argc, char **argv)
{
    (void)argc;
    load_all();
    disable_modules();
    open_stdio();
    if (log_fd >= 0 && close(log_fd) < 0)
        say("cannot close", "/dev/kmsg", errno);
    log_fd = -1;
    /* Same argv (argv[0] "/init") and environment as the kernel gave us. */
    execv(AGENT, argv);
    say("cannot exec", AGENT, errno);
    sync();
    if (reboot(RB_AUTOBOOT) < 0)
        say("cannot reboot", "", errno);
    return 1; /* init exiting panics the kernel, and panic=-1 reboots it */
}
