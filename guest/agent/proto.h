/*
 * Hypernetes guest protocol, version 1: the single source of the host <-> guest wire format.
 * The Python mirror is hypernetes/runtime/guestproto.py; tests/test_guestproto.py checks that
 * every constant below has the same value there. Numbers are never reused: a retired message or
 * tag keeps its number with a _RETIRED suffix. Prose: docs/guest-protocol.md.
 *
 * Transport: one virtio-serial port named "hn.agent" (/dev/vportNpM in the guest). The host
 * speaks first (HELLO); the guest never writes before it has read a frame.
 *
 * Frame (all integers big-endian):
 *
 *   0        4        6        8                12
 *   +--------+--------+--------+----------------+------------------------+
 *   | length | type   | flags  |       id       | payload (length bytes) |
 *   | u32    | u16    | u16=0  |      u32       |                        |
 *   +--------+--------+--------+----------------+------------------------+
 *
 *   id: the request id for requests and their ACK/ERROR replies (chosen by the host, never 0);
 *       the process id for STDIN/STDOUT/STDERR/EXIT/WINDOW (chosen by the host, never 0).
 *
 * Payload of control messages: a sequence of TLV fields
 *
 *   +--------+--------+-----------------+
 *   | tag    | length | value           |
 *   | u16    | u32    | (length bytes)  |
 *   +--------+--------+-----------------+
 *
 *   u32/u64 values are 4/8 bytes big-endian, bools one byte (0 or 1), strings UTF-8 without
 *   NUL bytes, nested values are themselves TLV sequences. A tag may repeat where the doc says
 *   "repeated"; otherwise the last occurrence wins. Unknown tags are skipped.
 *   STDIN/STDOUT/STDERR/LOG payloads are raw bytes, not TLV.
 *
 * Version rule: READY carries PROTO_VERSION; the host refuses any other version.
 */
#ifndef HN_PROTO_H
#define HN_PROTO_H

#define PROTO_VERSION 1
#define PROTO_PORT_NAME "hn.agent"
#define PROTO_HEADER_SIZE 12
#define PROTO_MAX_PAYLOAD 1048576 /* either side drops the channel on a bigger frame */
#define PROTO_MAX_CHUNK 32768     /* largest STDOUT/STDERR/STDIN payload a side sends */
#define PROTO_STDIN_WINDOW 65536  /* stdin bytes the host may have in flight per process */

/* Message types: guest -> host */
#define MSG_READY 1   /* reply to HELLO: VERSION, AGENT */
#define MSG_ACK 2     /* request succeeded: PID for CREATE/EXEC */
#define MSG_ERROR 3   /* request failed: ERRNO, MESSAGE */
#define MSG_STDOUT 4  /* raw bytes of a process's stdout (or its terminal) */
#define MSG_STDERR 5  /* raw bytes of a process's stderr */
#define MSG_EXIT 6    /* process ended: EXIT_CODE or EXIT_SIGNAL; sent after all its output */
#define MSG_WINDOW 7  /* BYTES of stdin written to the process; the host may send that many more */
#define MSG_LOG 8     /* raw diagnostic line from the agent, id 0 */

/* Message types: host -> guest */
#define MSG_HELLO 32        /* -> READY */
#define MSG_SETUP 33        /* sandbox-wide settings, once, before any container */
#define MSG_CREATE 34       /* mount a container's rootfs and start its process -> ACK(PID) */
#define MSG_EXEC 35         /* start another process in a running container -> ACK(PID) */
#define MSG_SIGNAL 36       /* PROCESS_ID, SIGNAL */
#define MSG_RESIZE 37       /* PROCESS_ID, ROWS, COLS (terminal processes only) */
#define MSG_STDIN 38        /* raw bytes for process id; an empty payload closes its stdin */
#define MSG_REMOVE 39       /* CONTAINER_ID: SIGKILL what is left, unmount, forget */
#define MSG_SHUTDOWN 40     /* GRACE_MS: SIGTERM all, wait, SIGKILL, sync, ACK, power off */
#define MSG_PING 41         /* -> ACK */
#define MSG_PROBE 42        /* tcp/http probe from the pod's network namespace -> ACK(STATUS_CODE) */
#define MSG_WRITE_FILES 43  /* SOURCE "pod:<name>", FILE...: (re)write files of a file volume -> ACK */
#define MSG_GROW_FS 44      /* SOURCE (disk serial), SIZE_LIMIT (the disk's new size): grow the
                               mounted ext4 on that disk to fill it, online -> ACK */

/* TLV tags */
#define TAG_VERSION 1       /* u32 */
#define TAG_AGENT 2         /* str: agent name and build */
#define TAG_PID 3           /* u32: guest pid */
#define TAG_ERRNO 4         /* u32 */
#define TAG_MESSAGE 5       /* str */
#define TAG_EXIT_CODE 6     /* u32, 0..255 */
#define TAG_EXIT_SIGNAL 7   /* u32, 1..64 */
#define TAG_BYTES 8         /* u32 */

#define TAG_HOSTNAME 16     /* str */
#define TAG_TIME_NS 17      /* u64: host wall clock, ns since the epoch */
#define TAG_RANDOM_SEED 18  /* bytes: credited to the guest's entropy pool */
#define TAG_DNS_SERVER 19   /* str, repeated */
#define TAG_DNS_SEARCH 20   /* str, repeated */
#define TAG_HOSTS_LINE 21   /* str, repeated: one /etc/hosts line */
#define TAG_IFACE 22        /* nested, repeated: MAC, ADDRESS (repeated), MTU */
#define TAG_MAC 23          /* str "aa:bb:cc:dd:ee:ff": selects the guest interface */
#define TAG_ADDRESS 24      /* str "10.0.0.2/24" */
#define TAG_MTU 25          /* u32 */
#define TAG_ROUTE 26        /* nested, repeated: DEST, GATEWAY */
#define TAG_DEST 27         /* str "0.0.0.0/0" */
#define TAG_GATEWAY 28      /* str */
#define TAG_DNS_OPTION 29   /* str, repeated: one resolv.conf "options" word, e.g. "ndots:5" */

#define TAG_CONTAINER_ID 32 /* str [a-zA-Z0-9_.-]{1,64} */
#define TAG_IMAGE_DISK 33   /* str: virtio-blk serial of the read-only erofs image disk */
#define TAG_PROCESS 34      /* nested: the process to start */
#define TAG_MEMORY_LIMIT 35 /* u64 bytes, 0 = none: the container cgroup's memory.max */
#define TAG_MOUNT 36        /* nested, repeated: SOURCE, TARGET, FSTYPE, READONLY, SUBPATH, SIZE_LIMIT,
                               DISK, PARTITION */
#define TAG_SOURCE 37       /* str: a disk serial, "tmpfs", or "pod:<name>" (a pod volume) */
#define TAG_TARGET 38       /* str: absolute path inside the container */
#define TAG_READONLY 39     /* bool */
#define TAG_FSTYPE 40       /* str */

#define TAG_PROCESS_ID 48   /* u32 host-chosen id, never 0 */
#define TAG_ARG 49          /* str, repeated, at least one: argv */
#define TAG_ENV 50          /* str, repeated: "KEY=VALUE" */
#define TAG_CWD 51          /* str: absolute */
#define TAG_UID 52          /* u32 */
#define TAG_GID 53          /* u32 */
#define TAG_GROUP 54        /* u32, repeated: supplementary groups */
#define TAG_TERMINAL 55     /* bool: run on a pty; output comes as STDOUT only */
#define TAG_STDIN 56        /* bool: keep stdin open (else /dev/null) */
#define TAG_ROWS 57         /* u32 */
#define TAG_COLS 58         /* u32 */
#define TAG_SIGNAL 59       /* u32 */
#define TAG_GRACE_MS 60     /* u32 */

#define TAG_SUBPATH 61      /* str, in MOUNT: relative, no "..": mount only that part of SOURCE */
#define TAG_SIZE_LIMIT 62   /* u64 bytes, in MOUNT, 0 = none: tmpfs size of a tmpfs/pod volume */
#define TAG_FSGROUP 63      /* u32, in CREATE: group owning writable volumes, added to groups */
#define TAG_PROBE_KIND 64   /* str: "tcp" or "http" */
#define TAG_PORT 65         /* u32: 1..65535 */
#define TAG_HOST 66         /* str: IPv4 address, default 127.0.0.1 */
#define TAG_PATH 67         /* str: http request path, default "/" */
#define TAG_TIMEOUT_MS 68   /* u32: default 1000 */
#define TAG_HEADER 69       /* str, repeated: http request header "Name: value" */
#define TAG_STATUS_CODE 70  /* u32: http status code, in the ACK of an http PROBE */

#define TAG_DISK 71         /* str, in MOUNT of a "pod:<name>": serial of the disk holding that pod
                               volume's filesystem (a scratch disk), instead of a tmpfs */
#define TAG_PARTITION 72    /* u32, in MOUNT with DISK: 1..128, a partition of DISK; 0 = the whole disk */
#define TAG_DEVICE 73       /* nested, repeated, in CREATE: SOURCE (disk serial), TARGET, READONLY:
                               the raw disk as a block device node in the container */
#define TAG_FILE 74         /* nested, repeated, in WRITE_FILES: SUBPATH (the file's path), DATA, MODE */
#define TAG_DATA 75         /* bytes: a file's contents */
#define TAG_MODE 76         /* u32: a file's permission bits (0..0777) */
#define TAG_RESTORED 77     /* bool, in SETUP: the VM is a clone of a template: re-probe its disks */

#endif
