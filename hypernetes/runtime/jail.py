"""Jail a pod's QEMU the way Firecracker's jailer jails Firecracker.

Before QEMU's first instruction (in the forked child, before exec) the launcher:

1. joins the pod's cgroups (writes its own pid to each `cgroup.procs`), so everything QEMU ever
   allocates or runs is charged to the pod;
2. enters new mount, network, IPC and UTS namespaces: the network namespace is empty, because
   QEMU needs none (its tap and sockets are handed in as file descriptors);
3. mounts a small tmpfs as the new root and binds into it, read-only, only what QEMU must open by
   path: its binary, its shared libraries and accelerator modules, its firmware, the guest kernel
   and initrd, and `/dev/kvm` under KVM; then makes that root read-only, pivots into it and
   detaches the host's root from the namespace;
4. becomes the pod's own uid and gid (one per pod from a reserved range; no passwd entry), with no
   supplementary group but the KVM device's, an empty capability bounding set and no-new-privs.

Setting the uid from 0 to a non-zero one clears the permitted and effective capabilities, and
the bounding set and no-new-privs keep them from coming back through exec. QEMU then adds its
own seccomp filter (`-sandbox on,...`). Disks, the tap, vhost-net and the QMP, console and agent
sockets are opened by the node agent and inherited, so nothing tenant-owned on the host is
reachable by path from inside, and nothing in the jail is writable.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_UID_RANGE = (900_000, 65_536)  # above the usual subuid ranges (100000 + 65536 * users)
SUBUID = Path("/etc/subuid")
SUBUID_NAME = "hypernetes"  # `hypernetes:START:COUNT` in /etc/subuid reserves the range
KVM = Path("/dev/kvm")
LD_CACHE = Path("/etc/ld.so.cache")  # rewritten by ldconfig whenever a library is installed
JAIL_TMPFS = "size=64k,nr_inodes=1024,mode=0755"  # only placeholders for the binds live in it

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET = 0x20000, 0x4000000, 0x8000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
SYS_PIVOT_ROOT = 155  # x86_64


class JailError(Exception):
    pass


def can_jail() -> bool:
    """Jailing needs root (mounts, namespaces, setuid); a user's `hypernetes run` goes without."""
    return os.geteuid() == 0


# --- uids ----------------------------------------------------------------------------------------


def uid_range(subuid: Path = SUBUID) -> tuple[int, int]:
    """(first uid, count) reserved for VMMs: the `hypernetes` line of /etc/subuid if there is
    one (so no other user's user namespaces map these ids), else DEFAULT_UID_RANGE."""
    with contextlib.suppress(OSError):
        for line in subuid.read_text().splitlines():
            name, _, rest = line.strip().partition(":")
            start, _, count = rest.partition(":")
            if name == SUBUID_NAME and start.isdigit() and count.isdigit() and int(count) > 0:
                return int(start), int(count)
    return DEFAULT_UID_RANGE


class UidPool:
    """One uid per VM, unique on the host across every node agent and runtime: a file per uid
    taken, created with O_EXCL, naming the sandbox directory that holds it."""

    def __init__(self, directory: Path, subuid: Path = SUBUID) -> None:
        self.directory = directory
        self.subuid = subuid

    def acquire(self, owner: Path) -> int:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        start, count = uid_range(self.subuid)
        first = int(hashlib.sha256(str(owner).encode()).hexdigest(), 16) % count
        for i in range(count):
            uid = start + (first + i) % count
            if self._take(uid, owner) or (self._stale(uid) and self._take(uid, owner)):
                return uid
        raise JailError(f"all {count} VMM uids from {start} are taken")

    def release(self, uid: int, owner: Path) -> None:
        record = self.directory / str(uid)
        with contextlib.suppress(OSError):
            if record.read_text() == str(owner):
                record.unlink()

    def release_owner(self, owner: Path) -> None:
        """Free whatever uid `owner` holds (the sandbox's record is all that is needed)."""
        with contextlib.suppress(FileNotFoundError):
            for record in self.directory.iterdir():
                with contextlib.suppress(OSError):
                    if record.read_text() == str(owner):
                        record.unlink()

    def held_by(self, owner: Path) -> int | None:
        with contextlib.suppress(FileNotFoundError):
            for record in self.directory.iterdir():
                with contextlib.suppress(OSError):
                    if record.read_text() == str(owner):
                        return int(record.name)
        return None

    def _take(self, uid: int, owner: Path) -> bool:
        try:
            fd = os.open(self.directory / str(uid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(str(owner))
        return True

    def _stale(self, uid: int) -> bool:
        """A record whose sandbox is gone and whose uid runs nothing: a crashed agent's."""
        record = self.directory / str(uid)
        try:
            owner = Path(record.read_text())
        except OSError:
            return False
        if owner.exists() or uid_in_use(uid):
            return False
        with contextlib.suppress(OSError):
            record.unlink()
        return True


def uid_in_use(uid: int) -> bool:
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    if str(uid) in line.split()[1:]:
                        return True
                    break
    return False


# --- what goes into the jail ---------------------------------------------------------------------


@dataclass(frozen=True)
class Bind:
    source: Path  # on the host
    target: str  # absolute, inside the jail
    device: bool = False  # a device node (/dev/kvm): its mount must not be nodev
    writable: bool = False  # a template's RAM file, which QEMU 7.2 opens O_RDWR (templates.py)


@dataclass(frozen=True)
class Jail:
    uid: int
    gid: int
    root: Path  # an empty host directory the jail's tmpfs is mounted over (in its namespace only)
    binds: tuple[Bind, ...]
    groups: tuple[int, ...] = ()
    cgroup_procs: tuple[Path, ...] = ()  # joined before anything else
    die_with_parent: bool = False
    # stay in the node's network namespace: a QEMU that opens Ceph RBD images talks to the
    # monitors and OSDs itself (docs/volumes.md, "Ceph RBD"); every other VMM gets an empty one
    host_network: bool = False


def vmm_binds(qemu: str) -> tuple[Bind, ...]:
    """QEMU's binary, the shared libraries it and its accelerator modules load (by `ldd`), and
    the microvm firmware, each bound at the path QEMU and the dynamic loader look for it.
    Worked out again when the binary changes (a package upgrade under a running agent)."""
    binary = shutil.which(qemu)
    if binary is None:
        raise JailError(f"{qemu} not found")
    binary = os.path.abspath(binary)
    return _vmm_binds(binary, os.stat(binary).st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _vmm_binds(binary: str, _mtime_ns: int) -> tuple[Bind, ...]:
    # kept across processes (a `hypernetes run` each) while QEMU and the loader's cache stay
    from hypernetes.runtime.filecache import cached  # here: it imports qemu, which imports us

    files = cached("vmm-files", [Path(binary), LD_CACHE], lambda: _vmm_files(binary))
    seen: dict[str, Bind] = {}
    for f in files:
        seen.setdefault(f, Bind(Path(os.path.realpath(f)), f))
    # QEMU opens /dev/null to probe for OFD locks (and would fall back to POSIX locks, which a
    # second open of the same image by the VM itself can lose)
    seen["/dev/null"] = Bind(Path("/dev/null"), "/dev/null", device=True)
    return tuple(seen.values())


def _vmm_files(binary: str) -> list[str]:
    files = [binary]
    libs = _ldd(binary)
    libc = next((p for p in libs if Path(p).name.startswith("libc.so")), None)
    if libc is not None:
        # Debian's module directory: <libdir>/qemu (accel-tcg-*.so holds TCG's x86 code)
        for module in sorted(Path(os.path.realpath(libc)).parent.joinpath("qemu").glob("accel-*.so")):
            files.append(str(module))
            libs += _ldd(str(module))
    files += libs
    datadir = Path(os.path.realpath(binary)).parent.parent / "share" / "qemu"
    # microvm's firmware (QEMU 7.2 loads qboot.rom; later ones name it bios-microvm.bin)
    files += [str(datadir / name) for name in ("qboot.rom", "bios-microvm.bin") if (datadir / name).exists()]
    return files


def _ldd(path: str) -> list[str]:
    try:
        out = subprocess.run(["ldd", path], check=True, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise JailError(f"cannot list the libraries of {path}: {e}") from e
    libs = []
    for line in out.splitlines():
        words = line.split()
        if "not" in words and "found" in words:
            raise JailError(f"{path}: library {words[0]} not found")
        libs += [w for w in words if w.startswith("/")]
    return libs


def rbd_binds(qemu: str, rbd_dir: Path, target: str) -> tuple[Bind, ...]:
    """What a QEMU that opens RBD images needs beyond vmm_binds: QEMU's rbd block module and the
    libraries it loads (librbd, librados, ...), Ceph's plugin directory (librados loads its
    crypto and compressor plugins by path), and the sandbox's client conf and key."""
    libs = _ldd(qemu)
    libc = next((p for p in libs if Path(p).name.startswith("libc.so")), None)
    if libc is None:
        raise JailError("cannot find QEMU's module directory")
    libdir = Path(os.path.realpath(libc)).parent
    module = libdir / "qemu" / "block-rbd.so"
    if not module.exists():
        raise JailError(f"{module} is missing: install Debian's qemu-block-extra to use Ceph RBD volumes")
    seen: dict[str, Bind] = {}
    for f in [str(module), *_ldd(str(module))]:
        seen.setdefault(f, Bind(Path(os.path.realpath(f)), f))
    plugins = libdir / "ceph"
    if plugins.is_dir():
        seen[str(plugins)] = Bind(plugins, str(plugins))
    seen[target] = Bind(rbd_dir, target)
    return tuple(seen.values())


def kvm_binds_and_groups() -> tuple[tuple[Bind, ...], tuple[int, ...]]:
    """/dev/kvm in the jail, and the group that lets the jailed uid open it (never group 0)."""
    st = KVM.stat()
    if st.st_mode & 0o006 == 0o006:
        return (Bind(KVM, str(KVM), device=True),), ()
    if st.st_gid == 0 or st.st_mode & 0o060 != 0o060:
        raise JailError(
            f"{KVM} is not read-write for a group other than root "
            f"(mode {oct(st.st_mode & 0o777)}, gid {st.st_gid}): a jailed QEMU cannot open it"
        )
    return (Bind(KVM, str(KVM), device=True),), (st.st_gid,)


# --- the launcher (runs in the forked child, before exec) ----------------------------------------


def launcher(jail: Jail) -> Callable[[], None]:
    """The preexec function that jails the child. Everything is resolved here, in the parent; the
    child only makes system calls. A failure is written to the child's stderr (QEMU's log) with
    the step that failed, then raised (subprocess reports it as a SubprocessError)."""
    libc = ctypes.CDLL(None, use_errno=True)  # the loaded libc (find_library runs ldconfig -p)
    root = os.fsencode(jail.root)
    binds = [
        (os.fsencode(b.source), root + os.fsencode(b.target), b.source.is_dir(), b.device, b.writable)
        for b in jail.binds
    ]
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    namespaces = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | (0 if jail.host_network else CLONE_NEWNET)
    procs = [os.fsencode(p) for p in jail.cgroup_procs]

    def check(result: int, step: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{step}: {os.strerror(err)}")

    def mount(
        src: bytes | None, dst: bytes, fstype: bytes | None, flags: int, data: bytes | None, step: str
    ) -> None:
        check(libc.mount(src, dst, fstype, ctypes.c_ulong(flags), data), step)

    def child() -> None:
        try:
            for p in procs:
                with open(p, "wb", buffering=0) as f:
                    f.write(b"0")  # "0": the writing process itself
            check(libc.unshare(namespaces), "unshare")
            mount(None, b"/", None, MS_REC | MS_PRIVATE, None, "make mounts private")
            mount(
                b"hn-jail",
                root,
                b"tmpfs",
                MS_NOSUID | MS_NODEV | MS_NOEXEC,
                JAIL_TMPFS.encode(),
                "mount the jail's tmpfs",
            )
            for src, dst, is_dir, device, writable in binds:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                if is_dir:
                    os.makedirs(dst, exist_ok=True)
                else:
                    os.close(os.open(dst, os.O_WRONLY | os.O_CREAT, 0o000))
                mount(src, dst, None, MS_BIND, None, f"bind {src.decode()}")
                ro = MS_BIND | MS_REMOUNT | (0 if writable else MS_RDONLY) | MS_NOSUID
                ro |= 0 if device else MS_NODEV
                mount(None, dst, None, ro, None, f"make {dst.decode()} read-only")
            mount(
                None,
                root,
                None,
                MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                JAIL_TMPFS.encode(),
                "make the jail read-only",
            )
            os.chdir(root)
            check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
            check(libc.umount2(b".", MNT_DETACH), "detach the host's root")
            os.chdir("/")
            os.setgroups(list(jail.groups))
            os.setresgid(jail.gid, jail.gid, jail.gid)
            for cap in range(last_cap + 1):
                check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
            os.setresuid(jail.uid, jail.uid, jail.uid)  # clears the permitted and effective sets
            check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
            if jail.die_with_parent:  # after setresuid, which would clear it
                check(libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "pdeathsig")
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.write(2, f"hypernetes jail: {e}\n".encode())
            raise

    return child
