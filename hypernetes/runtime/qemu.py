"""One QEMU `-M microvm` process: its command line, its life, its QMP monitor, its console.

The VM's files live in one directory (pid file, QEMU's own stderr, the console tail) and its
sockets in a short one under the run directory, so that removing a sandbox is removing those
after the process is gone.

QEMU opens nothing of the pod's by path: its disks (an fd set each, `/dev/fdset/N`), its tap and
vhost-net, and its QMP, console and agent sockets (bound and listening here) are opened by the
node agent and inherited. Only the kernel, initrd and QEMU's own files are opened by path, which
is what lets `jail.py` run it in a chroot holding nothing else, as a uid that owns nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from qemu.qmp import QMPClient

from hypernetes.runtime.jail import Jail, launcher

log = logging.getLogger(__name__)
# qemu.qmp logs every failed connect at ERROR; a VM that already exited is not an error to us.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

QEMU = os.environ.get("HYPERNETES_QEMU", "qemu-system-x86_64")
TCG_TB_MIB = 16
CONSOLE_TAIL = 64 * 1024  # bytes of guest console kept for error messages
QEMU_LOG_LIMIT = 1024 * 1024

# Kernel arguments for every guest: hvc0 console, fast exit on reboot/panic, skip slow probes.
BASE_CMDLINE = (
    "console=hvc0 reboot=t panic=-1 quiet loglevel=3 i8042.noaux i8042.nomux i8042.nopnp "
    "i8042.dumbkbd tsc=reliable no_timer_check cryptomgr.notests rcupdate.rcu_expedited=1 "
    "random.trust_cpu=on 8250.nr_uarts=0"
)

PR_SET_PDEATHSIG = 1
SANDBOX_ENV = "HYPERNETES_SANDBOX"  # in QEMU's environment: which sandbox directory it serves
JAIL_KERNEL, JAIL_INITRD = "/vm/kernel", "/vm/initrd"
JAIL_RAM = "/vm/ram"  # a template's RAM file, bound into a clone's jail
JAIL_RBD = "/rbd"  # the sandbox's RBD client files (conf, key), bound read-only


# microvm has a fixed set of virtio-mmio transports: 8 without ACPI, 24 with it (QEMU 7.2,
# measured). Every virtio device takes one: the three below, the NIC if any, then the disks.
MMIO_TRANSPORTS = 8
MMIO_TRANSPORTS_ACPI = 24
FIXED_DEVICES = 3  # virtio-serial (console + control port), balloon, rng
VHOST_NET = Path("/dev/vhost-net")
MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def disk_slots(acpi: bool, nics: int = 0) -> int:
    """How many virtio-blk disks a VM with `nics` virtio-net devices can have."""
    return (MMIO_TRANSPORTS_ACPI if acpi else MMIO_TRANSPORTS) - FIXED_DEVICES - nics


def vhost_usable(accel: str) -> bool:
    """vhost-net moves the NIC's data path into the host kernel; it only pays off (and QEMU only
    supports it properly) with KVM, and the device is absent on many hosts."""
    return accel == "kvm" and VHOST_NET.exists()


@dataclass(frozen=True)
class Nic:
    """A virtio-net NIC on an open tap: QEMU inherits `fd` (same number) and uses it as is."""

    fd: int
    mac: str
    vhost: bool = False

    def __post_init__(self) -> None:
        # The MAC lands in a QEMU option string: a comma in it would add options.
        if not MAC.match(self.mac):
            raise ValueError(f"bad MAC address {self.mac!r}")
        if self.fd < 3:
            raise ValueError(f"tap fd {self.fd} is one of the standard streams")


@dataclass(frozen=True)
class Disk:
    path: Path
    serial: str
    readonly: bool = True
    cache: str = "writeback"  # "none": O_DIRECT, no copy in the host's page cache; "writeback"
    flush: bool = True  # the guest's flushes become fdatasync; False only for data that dies with the VM
    format: str = "raw"  # "raw" | "qcow2"
    discard: bool = False  # pass the guest's discards on: they punch holes in a sparse file
    # an RBD image QEMU opens through librbd: `path` is then its client ceph.conf (monitors,
    # timeouts) and path.with_suffix(".key") the cephx key, both in the sandbox (disks.rbd_files)
    rbd_pool: str = ""
    rbd_image: str = ""
    rbd_user: str = ""


def _blockdev(disk: Disk, node: str, host_device: bool | None = None) -> str:
    """The -blockdev JSON of one disk: JSON needs no escaping of commas in paths, and names the
    file protocol explicitly, so a path is never parsed as "proto:..." or "json:{...}"."""
    spec: dict[str, object] = {
        "driver": disk.format,
        "node-name": node,
        "read-only": disk.readonly,
        "cache": {"direct": disk.cache == "none", "no-flush": not disk.flush},
        # QEMU's image lock: a second VM cannot open for writing what one is using
        "file": {
            "driver": "host_device"
            if (disk.path.is_block_device() if host_device is None else host_device)
            else "file",
            "filename": str(disk.path),
            "locking": "on",
        },
    }
    if disk.discard:
        spec["discard"] = "unmap"
    if disk.format == "qcow2":
        spec["backing"] = None  # never follow a backing file named inside the image
    return json.dumps(spec, separators=(",", ":"))


@dataclass
class VMConfig:
    name: str
    dir: Path
    kernel: Path
    initrd: Path
    vcpus: int
    memory_mib: int
    accel: str = "tcg"
    acpi: bool = False
    cmdline: str = ""
    disks: list[Disk] = field(default_factory=list)
    nic: Nic | None = None
    die_with_parent: bool = False
    jail: Jail | None = None  # None: QEMU runs as the caller, unconfined (not root)
    # Templates (templates.py): guest RAM on this file instead of a memfd; `memory_shared`: the
    # template writes its RAM into the file (share=on), else a clone maps it copy-on-write.
    memory_file: Path | None = None
    memory_shared: bool = False
    incoming_fd: int | None = None  # a clone: its device state is read from this inherited fd
    # Off for templates and their clones: QEMU 7.2 discards reported pages of a file-backed RAM
    # block with fallocate(PUNCH_HOLE) even when it is mapped privately, which would punch
    # holes in the template's file, under every other clone.
    free_page_reporting: bool = True

    @property
    def sock_dir(self) -> Path:
        return socket_dir(self.dir)

    @property
    def ctl_socket(self) -> Path:
        return self.sock_dir / "ctl.sock"

    @property
    def qmp_socket(self) -> Path:
        return self.sock_dir / "qmp.sock"

    @property
    def console_socket(self) -> Path:
        return self.sock_dir / "console.sock"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"


def run_dir() -> Path:
    """Host-wide runtime state that lives as long as the host's boot (sockets, the KVM verdict)."""
    return Path(
        os.environ.get("HYPERNETES_RUN_DIR")
        or ("/run/hypernetes" if os.geteuid() == 0 else f"/tmp/hypernetes-{os.geteuid()}")
    )


def socket_dir(vm_dir: Path) -> Path:
    """A short directory for a VM's Unix sockets: socket paths are limited to 107 bytes, and a
    sandbox directory under a data dir with a pod uid in it is often longer than that."""
    digest = hashlib.sha256(str(vm_dir.resolve()).encode()).hexdigest()[:16]
    return run_dir() / digest


def remove_socket_dir(vm_dir: Path) -> None:
    shutil.rmtree(socket_dir(vm_dir), ignore_errors=True)


def host_tsc_khz() -> int | None:
    """The host's TSC rate, which a TCG guest's TSC runs at.

    Under TCG the guest calibrates its TSC against the emulated PIT, and on a busy host that
    sometimes fails ("could not calculate TSC khz") and the boot hangs; telling the kernel the rate
    (`tsc_early_khz=`) skips that calibration.
    """
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/sys/devices/system/cpu/cpu0/tsc_freq_khz").read_text())
    with contextlib.suppress(OSError, ValueError):
        text = Path("/proc/cpuinfo").read_text()
        if " constant_tsc" in text:
            for line in text.splitlines():
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":")[1]) * 1000)
    return None


@dataclass
class HandedFds:
    """The descriptors QEMU inherits, by number (the same in the child): its three listening
    sockets, one per disk, and vhost-net's."""

    console: int
    ctl: int
    qmp: int
    disks: list[int]
    vhost: int | None = None

    def all(self) -> tuple[int, ...]:
        vhost = () if self.vhost is None else (self.vhost,)
        disks = (fd for fd in self.disks if fd >= 0)  # -1: an RBD image, opened by QEMU
        return (self.console, self.ctl, self.qmp, *disks, *vhost)

    def close(self) -> None:
        for fd in self.all():
            with contextlib.suppress(OSError):
                os.close(fd)


def command_line(cfg: VMConfig, fds: HandedFds | None = None) -> list[str]:
    """QEMU's arguments; with `fds`, the sockets and disks are the inherited descriptors, else
    (for reading the arguments) their paths."""
    # Under TCG there is no kvmclock, so the guest reads the wall clock from the CMOS RTC; without
    # one that read spins for a second ("Unable to read current time from RTC") on every boot.
    rtc = "off" if cfg.accel == "kvm" else "on"
    machine = f"microvm,x-option-roms=off,isa-serial=off,rtc={rtc}"
    if not cfg.acpi:
        machine += ",acpi=off"  # QEMU then lists the virtio-mmio devices on the cmdline
    cpu = "host" if cfg.accel == "kvm" else "max"
    # TCG's translated-code cache defaults to 1 GiB and fills with code run once at boot; a small
    # cache costs a few retranslations and saves tens of MiB of host memory per VM.
    accel = cfg.accel if cfg.accel == "kvm" else f"tcg,tb-size={TCG_TB_MIB}"
    cmdline = f"{BASE_CMDLINE} {cfg.cmdline}".strip()
    khz = host_tsc_khz() if cfg.accel == "tcg" else None
    if khz:
        cmdline += f" tsc_early_khz={khz}"
    kernel, initrd = (JAIL_KERNEL, JAIL_INITRD) if cfg.jail else (str(cfg.kernel), str(cfg.initrd))

    def sock(name: str, path: Path) -> str:
        return f"fd={getattr(fds, name)}" if fds is not None else f"path={path}"

    if cfg.memory_file is not None:
        share = "on" if cfg.memory_shared else "off"
        path = JAIL_RAM if cfg.jail else str(cfg.memory_file)
        ram = f"memory-backend-file,id=ram,size={cfg.memory_mib}M,mem-path={path},share={share}"
    else:
        # Guest RAM on a memfd: small pages (anonymous RAM would get transparent huge pages, so
        # every touched byte costs 2 MiB of host memory), and a file the host could share later.
        ram = f"memory-backend-memfd,id=ram,size={cfg.memory_mib}M"
    args = [
        QEMU,
        "-name",
        cfg.name,
        "-M",
        machine,
        "-accel",
        accel,
        "-cpu",
        cpu,
        "-m",
        str(cfg.memory_mib),
        "-smp",
        str(cfg.vcpus),
        "-object",
        ram,
        "-machine",
        "memory-backend=ram",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        # Defence in depth for the VMM itself: no new processes, no privilege changes.
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-kernel",
        kernel,
        "-initrd",
        initrd,
        "-append",
        cmdline,
        "-device",
        "virtio-serial-device,max_ports=2",
        "-chardev",
        f"socket,id=con,{sock('console', cfg.console_socket)},server=on,wait=off",
        "-device",
        "virtconsole,chardev=con",
        "-chardev",
        f"socket,id=ctl,{sock('ctl', cfg.ctl_socket)},server=on,wait=off",
        "-device",
        "virtserialport,chardev=ctl,name=hn.agent",
        # Free page reporting: pages the guest frees (its init memory, dropped caches) go back
        # to the host instead of staying in the VM's footprint.
        "-device",
        f"virtio-balloon-device,free-page-reporting={'on' if cfg.free_page_reporting else 'off'}",
        # getrandom(2): no /dev/urandom to open (nor to put in the jail)
        "-object",
        "rng-builtin,id=rng0",
        "-device",
        "virtio-rng-device,rng=rng0",
        "-chardev",
        f"socket,id=qmp,{sock('qmp', cfg.qmp_socket)},server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
    ]
    if cfg.incoming_fd is not None:
        # a clone: its device state comes in once QMP has set x-ignore-shared (templates.py)
        args += ["-incoming", "defer"]
    if cfg.nic is not None:
        # fd=: QEMU uses the inherited tap as is (it probes the vnet header itself) and runs no
        # ifup script, so -sandbox spawn=deny stays on; vhostfd=: nor opens /dev/vhost-net.
        vhost = "on" if cfg.nic.vhost else "off"
        if cfg.nic.vhost and fds is not None and fds.vhost is not None:
            vhost += f",vhostfd={fds.vhost}"
        args += [
            "-netdev",
            f"tap,id=net0,fd={cfg.nic.fd},vhost={vhost}",
            "-device",
            f"virtio-net-device,netdev=net0,mac={cfg.nic.mac}",
        ]
    for i, disk in enumerate(cfg.disks):
        if disk.rbd_image:
            args += _rbd_args(disk, i, cfg.jail is not None)
            continue
        host_device = disk.path.is_block_device()
        if fds is not None:
            # an fd set per disk: QEMU dups the one whose access mode matches what it opens
            args += ["-add-fd", f"fd={fds.disks[i]},set={i + 1}"]
            disk = dataclasses.replace(disk, path=Path(f"/dev/fdset/{i + 1}"))
        # write-cache=on: the guest sees a volatile cache and sends flushes, which reach the host
        # file as fdatasync (if disk.flush). An I/O error (a full host filesystem) is reported
        # to the guest instead of pausing the VM, which nothing would resume.
        device = f"virtio-blk-device,drive=disk{i},serial={disk.serial},write-cache=on"
        if not disk.readonly:
            device += ",werror=report,rerror=report"
        args += ["-blockdev", _blockdev(disk, f"disk{i}", host_device), "-device", device]
    return args


def _rbd_args(disk: Disk, i: int, jailed: bool) -> list[str]:
    """An RBD image through QEMU's own librbd driver: the cephx key is a secret object read from
    a file (never an argument), the monitors and timeouts come from the client conf file, so a
    Ceph outage turns into I/O errors reported to the guest rather than a VM stuck forever."""
    conf = Path(JAIL_RBD) / disk.path.name if jailed else disk.path
    node = f"disk{i}"
    spec: dict[str, object] = {
        "driver": "raw",
        "node-name": node,
        "read-only": disk.readonly,
        "discard": "unmap",
        "cache": {"direct": True, "no-flush": False},
        "file": {
            "driver": "rbd",
            "pool": disk.rbd_pool,
            "image": disk.rbd_image,
            "conf": str(conf),
            "user": disk.rbd_user,
            "key-secret": f"{node}-key",
            "auth-client-required": ["cephx"],
        },
    }
    device = f"virtio-blk-device,drive={node},serial={disk.serial},write-cache=on"
    if not disk.readonly:
        device += ",werror=report,rerror=report"
    return [
        "-object",
        f"secret,id={node}-key,format=base64,file={conf.with_suffix('.key')}",
        "-blockdev",
        json.dumps(spec, separators=(",", ":")),
        "-device",
        device,
    ]


def _listen(path: Path, opened: list[int]) -> int:
    """A listening Unix socket at `path` for QEMU to accept on: bound here, so QEMU needs no
    writable directory, and a client may connect before QEMU runs (it waits in the backlog)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(8)
    except OSError:
        sock.close()
        raise
    opened.append(sock.fileno())
    return sock.detach()


def qemu_binary() -> str:
    """QEMU's absolute path: the jail binds it there, and exec does not search PATH in it."""
    found = shutil.which(QEMU)
    return os.path.abspath(found) if found else QEMU


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class QemuVM:
    def __init__(self, cfg: VMConfig) -> None:
        self.cfg = cfg
        self.proc: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.exited = asyncio.Event()
        self.returncode: int | None = None
        self.console: deque[bytes] = deque()
        self._console_size = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start QEMU with its descriptors handed in, in its cgroup and jail if it has one.

        OSError if it cannot be started: a disk that cannot be opened, a jail that cannot be
        built (the message says which step failed)."""
        self.cfg.dir.mkdir(parents=True, exist_ok=True)
        self.cfg.sock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fds = self._open_fds()
        args = command_line(self.cfg, fds)
        args[0] = qemu_binary()
        jail = self.cfg.jail
        preexec = launcher(jail) if jail else _die_with_parent if self.cfg.die_with_parent else None
        inherited: tuple[int, ...] = (self.cfg.nic.fd,) if self.cfg.nic is not None else ()
        if self.cfg.incoming_fd is not None:
            inherited += (self.cfg.incoming_fd,)
        try:
            with open(self.cfg.dir / "qemu.log", "wb") as errlog:
                self.proc = await asyncio.create_subprocess_exec(
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=errlog,
                    stderr=errlog,
                    start_new_session=True,
                    preexec_fn=preexec,
                    # the agent's environment may hold credentials: QEMU gets only the marker
                    # that ties it to its sandbox (running_qemu) and PATH
                    env={
                        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                        SANDBOX_ENV: str(self.cfg.dir.resolve()),
                    },
                    # the fds keep their numbers in the child (and lose close-on-exec there only)
                    pass_fds=(*fds.all(), *inherited),
                )
        except subprocess.SubprocessError as e:  # the jail's preexec step failed
            raise OSError(self.qemu_errors() or str(e)) from e
        finally:
            fds.close()  # QEMU holds its copies: they go away with it
        self.pid = self.proc.pid
        tmp = self.cfg.pidfile.with_suffix(".tmp")
        tmp.write_text(f"{self.pid}\n")
        os.replace(tmp, self.cfg.pidfile)
        self._tasks.append(asyncio.create_task(self._watch()))
        self._tasks.append(asyncio.create_task(self._read_console()))

    def _open_fds(self) -> HandedFds:
        opened: list[int] = []
        try:
            sockets = [
                _listen(path, opened)
                for path in (self.cfg.console_socket, self.cfg.ctl_socket, self.cfg.qmp_socket)
            ]
            disks = []
            for disk in self.cfg.disks:
                if disk.rbd_image:
                    disks.append(-1)  # QEMU connects to Ceph itself
                    continue
                flags = os.O_RDONLY if disk.readonly else os.O_RDWR
                flags |= os.O_DIRECT if disk.cache == "none" else 0
                try:
                    disks.append(os.open(disk.path, flags | os.O_CLOEXEC))
                except OSError as e:
                    raise OSError(e.errno, f"cannot open disk {disk.path}: {e.strerror}") from e
                opened.append(disks[-1])
            vhost = None
            if self.cfg.nic is not None and self.cfg.nic.vhost:
                vhost = os.open(VHOST_NET, os.O_RDWR | os.O_CLOEXEC)
                opened.append(vhost)
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        console, ctl, qmp = sockets
        return HandedFds(console, ctl, qmp, disks=disks, vhost=vhost)

    async def attach(self, pid: int) -> None:
        """Take over a QEMU started by an earlier process (node agent restart).

        It is not our child, so its exit is seen through a pidfd; its exit status is unknown.
        """
        self.pid = pid
        pidfd = os.pidfd_open(pid)
        loop = asyncio.get_running_loop()

        def on_exit() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self.exited.set()

        loop.add_reader(pidfd, on_exit)
        self._tasks.append(asyncio.create_task(self._read_console()))

    def alive(self) -> bool:
        return self.pid is not None and not self.exited.is_set()

    async def _watch(self) -> None:
        assert self.proc is not None
        self.returncode = await self.proc.wait()
        self.exited.set()

    async def _read_console(self) -> None:
        """Keep the last CONSOLE_TAIL bytes the guest printed, to explain a failed boot."""
        for _ in range(250):
            if self.exited.is_set():
                return
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.cfg.console_socket))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                await asyncio.sleep(0.02)
            except OSError as e:
                log.warning("%s: cannot read the guest console: %s", self.cfg.name, e)
                return
        else:
            return
        try:
            while chunk := await reader.read(4096):
                self.console.append(chunk)
                self._console_size += len(chunk)
                while self._console_size > CONSOLE_TAIL:
                    self._console_size -= len(self.console.popleft())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def console_tail(self, lines: int = 10) -> str:
        text = b"".join(self.console).decode("utf-8", errors="replace")
        kept = [ln for ln in text.splitlines() if ln.strip()]
        # A panic's first line says why; the stack trace after it rarely helps a user.
        panic = [ln for ln in kept if "Kernel panic" in ln][:1]
        kept = panic or kept[-lines:]
        return " | ".join("".join(c if c.isprintable() else "?" for c in ln) for ln in kept)

    def qemu_errors(self) -> str:
        try:
            with open(self.cfg.dir / "qemu.log", "rb") as f:
                data = f.read(QEMU_LOG_LIMIT)
        except FileNotFoundError:
            return ""
        return " ".join(data.decode(errors="replace").split())[-500:]

    async def qmp(
        self, command: str, arguments: dict[str, object] | None = None, timeout: float = 5.0
    ) -> object:
        client = QMPClient(self.cfg.name)
        try:
            await asyncio.wait_for(client.connect(str(self.cfg.qmp_socket)), timeout)
            return await asyncio.wait_for(client.execute(command, arguments), timeout)
        finally:
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def wait(self, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(self.exited.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def kill(self) -> None:
        """Make sure the process is gone: QMP quit, then SIGKILL."""
        if self.pid is None:
            return
        if not self.exited.is_set():
            with contextlib.suppress(Exception):
                await self.qmp("quit", timeout=2.0)
            if not await self.wait(3.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                await self.wait(None)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def detach(self) -> None:
        """Stop watching the VM but leave it running (the node agent is going away)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def running_qemu(directory: Path) -> int | None:
    """The pid of the QEMU whose pid file is in `directory`, if that pid really is that QEMU
    (its environment names the directory; a jailed QEMU's arguments hold only jail paths)."""
    try:
        pid = int((directory / "qemu.pid").read_text().strip())
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    marker = f"{SANDBOX_ENV}={directory.resolve()}".encode()
    return pid if marker in environ or str(directory).encode() in cmdline else None
