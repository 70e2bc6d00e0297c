"""Pod VM templates: boot a VM of a shape once, save it, start pods as copy-on-write clones.

A template is a VM booted to the point where the guest agent has said READY and waits for its
SETUP, then paused: its guest RAM is a file on tmpfs (QEMU's `memory-backend-file,share=on`
wrote every page there) and its device state a small file QEMU's migration wrote with the
`x-ignore-shared` capability (the RAM is not in the stream: it is the file). A clone is a QEMU
with the same command line except that its RAM maps that file privately (`share=off`: pages
are shared with the template until the guest writes them) and its device state comes in as an
incoming migration; the guest resumes where the template stopped, still waiting for SETUP,
which gives it its identity (hostname, clock, entropy, network). Kata Containers' VM factory
(`virtcontainers/factory/template`) does the same.

A template fits a VM only if everything the guest saw is the same: kernel, initrd (the agent),
QEMU, vCPUs, memory, the machine's devices in the same order, including one placeholder per
disk slot (read-only or not, as virtio-blk tells the guest) and the NIC slot. Placeholder disks
are empty files: the guest's kernel reads nothing of a disk with no sectors, so no pod can see
data of a placeholder; a clone's slots are backed by the pod's own files.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from qemu.qmp import QMPClient, QMPError

from hypernetes.runtime.agentclient import AgentClient, AgentUnavailable
from hypernetes.runtime.filecache import cached
from hypernetes.runtime.interface import ContainerSpec
from hypernetes.runtime.jail import Jail
from hypernetes.runtime.kernels import KernelError, KernelRegistry
from hypernetes.runtime.qemu import (
    Disk,
    Nic,
    QemuVM,
    VMConfig,
    qemu_binary,
    remove_socket_dir,
    vhost_usable,
)
from hypernetes.runtime.sizing import vm_size

log = logging.getLogger(__name__)

FORMAT = "hn-template-1"  # bump when what a template holds changes: older ones are rebuilt
SAVE_TIMEOUT = 60.0
STATE_FD_NAME = "template-state"
# the RAM is the template's file, which the clone maps: only device state goes through migration
IGNORE_SHARED = {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}


class TemplateError(Exception):
    pass


@dataclass(frozen=True)
class Shape:
    """What a guest sees of its VM before SETUP: a template fits exactly the VMs of its shape."""

    kernel: Path
    initrd: Path
    cmdline: str
    acpi: bool
    accel: str
    vcpus: int
    memory_mib: int
    disks: tuple[bool, ...]  # one slot per disk, in order: read-only or not
    nic: bool = False
    scope: str = ""  # "" = the node's; else whose (a namespace) the template is

    @staticmethod
    def of(cfg: VMConfig, scope: str = "") -> Shape:
        return Shape(
            kernel=cfg.kernel,
            initrd=cfg.initrd,
            cmdline=cfg.cmdline,
            acpi=cfg.acpi,
            accel=cfg.accel,
            vcpus=cfg.vcpus,
            memory_mib=cfg.memory_mib,
            disks=tuple(d.readonly for d in cfg.disks),
            nic=cfg.nic is not None,
            scope=scope,
        )

    def key(self) -> str:
        """Changes when anything the saved guest depends on changes: the kernel's and initrd's
        bytes, QEMU's binary, the shape."""
        h = hashlib.sha256(FORMAT.encode())
        for path in (self.kernel, self.initrd, Path(qemu_binary())):
            h.update(_file_digest(path).encode())
        fields = dataclasses.asdict(self) | {"kernel": "", "initrd": ""}
        h.update(json.dumps(fields, sort_keys=True, default=str).encode())
        return h.hexdigest()[:32]


TEMPLATE_MAC = "02:00:00:00:00:00"  # the template's NIC's; a clone's agent sets the pod's
_TUNSETIFF, _IFF_TAP, _IFF_NO_PI, _IFF_VNET_HDR = 0x400454CA, 0x0002, 0x1000, 0x4000


def _open_tap() -> int:
    """A tap as pods get theirs (IFF_VNET_HDR: the virtio-net device offers the same features),
    named by the kernel. Needs CAP_NET_ADMIN, as pods with a NIC do."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        flags = _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", b"hntpl%d", flags))
    except OSError:
        os.close(fd)
        raise
    return fd


def _file_digest(path: Path) -> str:
    """A file's content hash, kept while the file stays the same (`filecache.py`): kernels
    and QEMU are megabytes, and every `hypernetes run` is a new process."""
    return cached("sha256", [path], lambda: _sha256(path))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Template:
    dir: Path
    shape: Shape
    key: str

    @property
    def ram(self) -> Path:
        return self.dir / "ram"

    @property
    def state(self) -> Path:
        return self.dir / "state"


def template_root() -> Path:
    """Templates live on tmpfs: their RAM file is guest memory that clones map."""
    return Path(os.environ.get("HYPERNETES_TEMPLATE_DIR") or f"/dev/shm/hypernetes-{os.geteuid()}/templates")


def load(root: Path, shape: Shape) -> Template | None:
    """The saved template of `shape`, if there is a complete one."""
    key = shape.key()
    directory = root / key
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key or not (directory / "ram").is_file() or not (directory / "state").is_file():
        return None
    return Template(directory, shape, key)


class Confine(Protocol):
    """Jails a template's QEMU as pods' are (the runtime's confiner), and frees what that took."""

    async def jail(self, name: str, directory: Path, shape: Shape, ram: Path) -> Jail | None: ...

    async def release(self, name: str, directory: Path) -> None: ...


async def build(
    root: Path, shape: Shape, timeout: float = 90.0, confine: Confine | None = None, kernel_name: str = ""
) -> Template:
    """Boot a VM of `shape` up to the agent's READY, pause it and save it under root/KEY.
    `kernel_name`: the registered kernel it runs, kept in its meta.json so that a node starting
    later can rebuild the shape with that kernel's newer build (`start_shapes`).

    The directory appears complete or not at all (built under a temporary name, then renamed)."""
    key = shape.key()
    final = root / key
    work = root / f".build-{key}-{os.getpid()}-{time.monotonic_ns()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, mode=0o700)
    try:
        ram = work / "ram"
        with open(ram, "wb") as f:
            f.truncate(shape.memory_mib << 20)
        # A jailed clone's QEMU (its own uid) must open it O_RDWR (QEMU 7.2 has no read-only file
        # with private writable mapping): only through its jail's bind, the directory is 0700.
        ram.chmod(0o666)
        placeholders = []
        for i, readonly in enumerate(shape.disks):
            path = work / f"slot{i}.img"
            path.touch()  # no sectors: the guest reads nothing from it
            placeholders.append(Disk(path=path, serial=f"hn-slot{i}", readonly=readonly))
        nic = None
        if shape.nic:  # a tap of its own, on no bridge, gone with the template's QEMU
            nic = Nic(_open_tap(), TEMPLATE_MAC, vhost=vhost_usable(shape.accel))
        cfg = VMConfig(
            name=f"hn-template-{key[:12]}",
            dir=work / "vm",
            kernel=shape.kernel,
            initrd=shape.initrd,
            vcpus=shape.vcpus,
            memory_mib=shape.memory_mib,
            accel=shape.accel,
            acpi=shape.acpi,
            cmdline=shape.cmdline,
            disks=placeholders,
            nic=nic,
            die_with_parent=True,
            memory_file=ram,
            memory_shared=True,
            free_page_reporting=False,
        )
        vm = QemuVM(cfg)
        client = AgentClient(f"template-{key[:12]}")
        try:
            try:
                if confine is not None:
                    cfg.jail = await confine.jail(f"template-{key[:12]}", cfg.dir, shape, ram)
                await vm.start()
            finally:
                if nic is not None:
                    os.close(nic.fd)
            await client.connect(str(cfg.ctl_socket), timeout, vm.alive)
            await save_state(vm, work / "state")
        except (OSError, AgentUnavailable) as e:
            raise TemplateError(
                f"template VM did not come up: {e}; {vm.qemu_errors()} {vm.console_tail()}"
            ) from e
        finally:
            await client.close("template saved")
            await vm.kill()
            if confine is not None:
                await confine.release(f"template-{key[:12]}", cfg.dir)
            shutil.rmtree(cfg.dir, ignore_errors=True)
            remove_socket_dir(cfg.dir)
        (work / "meta.json").write_text(
            json.dumps({"key": key, "shape": dataclasses.asdict(shape), "kernel": kernel_name}, default=str)
        )
        shutil.rmtree(final, ignore_errors=True)
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Template(final, shape, key)


async def save_state(vm: QemuVM, path: Path, timeout: float = SAVE_TIMEOUT) -> None:
    """Pause the VM and write its device state (not its RAM: x-ignore-shared) to `path`.

    QEMU 7.2 has no `file:` migration and its sandbox forbids `exec:`; it gets the open file
    as a descriptor over QMP (getfd) and migrates to it."""
    client = QMPClient(vm.cfg.name)
    try:
        await asyncio.wait_for(client.connect(str(vm.cfg.qmp_socket)), timeout)
        await client.execute("stop")
        await client.execute("migrate-set-capabilities", IGNORE_SHARED)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            client.send_fd_scm(fd)
        finally:
            os.close(fd)
        await client.execute("getfd", {"fdname": STATE_FD_NAME})
        await client.execute("migrate", {"uri": f"fd:{STATE_FD_NAME}"})
        await _migrated(client, timeout)
    except (QMPError, OSError, TimeoutError) as e:
        raise TemplateError(f"saving the template's state: {e or type(e).__name__}") from e
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def _migrated(client: QMPClient, timeout: float) -> None:
    """Wait for the migration (out or in) to complete."""
    deadline = time.monotonic() + timeout
    while True:
        info = await client.execute("query-migrate")
        status = info.get("status") if isinstance(info, dict) else None
        if status == "completed":
            return
        if status in ("failed", "cancelled") or time.monotonic() > deadline:
            raise TemplateError(f"migration {status}: {info}")
        await asyncio.sleep(0.005)


def clone_config(template: Template, cfg: VMConfig) -> VMConfig:
    """`cfg` (a pod's VM, of the template's shape) as a clone of `template`: its RAM the
    template's file mapped privately, its device state the template's. The caller owns the
    returned config's `incoming_fd` (QEMU inherits it; close it after start)."""
    if Shape.of(cfg, template.shape.scope) != template.shape:
        raise TemplateError("the VM does not have the template's shape")
    fd = os.open(template.state, os.O_RDONLY | os.O_CLOEXEC)
    return dataclasses.replace(
        cfg, memory_file=template.ram, memory_shared=False, incoming_fd=fd, free_page_reporting=False
    )


async def restore(vm: QemuVM, timeout: float = SAVE_TIMEOUT) -> None:
    """Load a started clone's device state (its `incoming_fd`, inherited by QEMU under the same
    number); the guest runs from there."""
    fd = vm.cfg.incoming_fd
    if fd is None:
        raise TemplateError("not a clone")
    client = QMPClient(vm.cfg.name)
    try:
        await asyncio.wait_for(client.connect(str(vm.cfg.qmp_socket)), timeout)
        await client.execute("migrate-set-capabilities", IGNORE_SHARED)
        await client.execute("migrate-incoming", {"uri": f"fd:{fd}"})
        await _migrated(client, timeout)
        # the template was paused when saved, so the clone is too: resume it
        await client.execute("cont")
    except (QMPError, OSError, TimeoutError) as e:  # a QEMU that refused the state exits
        raise TemplateError(f"{e or type(e).__name__}; {vm.qemu_errors()}") from e
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


def start_shapes(
    store: TemplateStore, kernels: KernelRegistry, accel: str, scopes: Iterable[str], nic: bool
) -> list[tuple[Shape, str]]:
    """The shapes whose templates a node builds when it starts, with today's kernels, agent and
    QEMU: the default pod's (one container without limits: the default VM size, one read-only
    image disk, a NIC if the node's pods get one) in each of `scopes`, then each shape a template
    served within max_idle for a kernel of this node's registry (its initrd was built there),
    with the current build of that kernel. So a kernel, agent or
    QEMU upgrade has its templates rebuilt before the first pod asks, and the old ones idle out."""
    default = kernels.default()
    size = vm_size([ContainerSpec(name="default", image="")])
    wanted = [
        (
            Shape(
                default.image,
                default.initrd,
                default.cmdline,
                default.acpi,
                accel,
                size.vcpus,
                size.memory_mib,
                (True,),
                nic,
                scope,
            ),
            default.name,
        )
        for scope in sorted(set(scopes))
    ]
    for old, name in store.recent():
        if not old.initrd.is_relative_to(kernels.root):
            continue  # another registry's (another data dir's node, a test): not this node's pods
        try:
            kernel = kernels.get(name or None)
        except (KernelError, OSError):
            continue  # unregistered since: its pods cannot ask for it either
        current = dataclasses.replace(
            old,
            kernel=kernel.image,
            initrd=kernel.initrd,
            cmdline=kernel.cmdline,
            acpi=kernel.acpi,
            accel=accel,
        )
        wanted.append((current, kernel.name))
    unique: dict[Shape, str] = {}
    for shape, name in wanted:
        unique.setdefault(shape, name)
    return list(unique.items())


USED = "used"  # touched at every clone: its mtime says when the template last served a VM


def _builder_alive(name: str) -> bool:
    """Whether the process building `.build-KEY-PID-NS` (this one or another node agent
    sharing the directory) still runs."""
    try:
        pid = int(name.split("-")[2])
        os.kill(pid, 0)
    except (IndexError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass
    return True


class TemplateStore:
    """The node's templates: looked up per VM, built in the background on a shape's first use
    (that VM boots cold), removed when unused for `max_idle` seconds, when anything they were
    built from changed (their key then is never asked for again: it idles out), and beyond
    `max_templates`, the least recently used first."""

    def __init__(
        self, root: Path, max_idle: float = 3600.0, retry_after: float = 600.0, max_templates: int = 8
    ) -> None:
        self.root = root
        self.max_idle = max_idle
        self.max_templates = max_templates  # each holds its guest's touched RAM on tmpfs
        self.retry_after = retry_after
        self._building: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, float] = {}  # key -> when its build failed: not retried before
        self.confine: Confine | None = None  # set by the runtime that jails its VMs
        self.builds = 0
        self.clones = 0
        self._pruned = time.monotonic()

    PRUNE_EVERY = 600.0  # seconds: a node that builds nothing still drops idle templates

    def get(self, shape: Shape, kernel_name: str = "") -> Template | None:
        """The template of `shape`, or None, after starting its build if none is under way."""
        if time.monotonic() - self._pruned > self.PRUNE_EVERY:
            self.prune()
        template = load(self.root, shape)
        if template is not None:
            with contextlib.suppress(OSError):
                (template.dir / USED).touch()
            self.clones += 1
            return template
        key = shape.key()
        failed = self._failed.get(key)
        if key not in self._building and (failed is None or time.monotonic() - failed > self.retry_after):
            self._building[key] = asyncio.create_task(
                self._build(key, shape, kernel_name), name=f"template-{key[:12]}"
            )
        return None

    async def prepare(self, shapes: Iterable[tuple[Shape, str]]) -> int:
        """Build the templates of `shapes` (shape, kernel name) that are missing, one at a time
        (a node starting up has other work), skipping failed ones as `get` does; how many
        were built. Pods that ask meanwhile boot cold, as on a shape's first use."""
        self.prune()
        built = 0
        for shape, kernel_name in shapes:
            if load(self.root, shape) is not None:
                continue
            key = shape.key()
            failed = self._failed.get(key)
            if failed is not None and time.monotonic() - failed <= self.retry_after:
                continue
            task = self._building.get(key)
            if task is None:
                task = asyncio.create_task(self._build(key, shape, kernel_name), name=f"template-{key[:12]}")
                self._building[key] = task
            await asyncio.shield(task)
            built += load(self.root, shape) is not None
        return built

    def recent(self) -> list[tuple[Shape, str]]:
        """The shapes (and kernel names) of the complete templates used within max_idle, the
        most recently used first: what this node's pods looked like."""
        found: list[tuple[float, Shape, str]] = []
        now = time.time()
        for directory in self.root.glob("[0-9a-f]*") if self.root.exists() else []:
            try:
                meta = json.loads((directory / "meta.json").read_text())
                fields = dict(meta["shape"])
                shape = Shape(
                    **fields
                    | {"kernel": Path(fields["kernel"]), "initrd": Path(fields["initrd"])}
                    | {"disks": tuple(bool(d) for d in fields["disks"])}
                )
                stamp = directory / USED if (directory / USED).exists() else directory / "meta.json"
                used = stamp.stat().st_mtime
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if now - used <= self.max_idle:
                found.append((used, shape, str(meta.get("kernel") or "")))
        return [(shape, name) for _used, shape, name in sorted(found, key=lambda f: -f[0])]

    async def wait_built(self) -> None:
        """Wait for the builds under way (tests, benchmarks, node start-up)."""
        while self._building:
            await asyncio.gather(*self._building.values(), return_exceptions=True)

    async def _build(self, key: str, shape: Shape, kernel_name: str = "") -> None:
        try:
            t0 = time.monotonic()
            await build(self.root, shape, confine=self.confine, kernel_name=kernel_name)
            self.builds += 1
            log.info("template %s built in %.1fs", key[:12], time.monotonic() - t0)
        except (TemplateError, OSError) as e:
            self._failed[key] = time.monotonic()
            log.warning("template %s: build failed: %s", key[:12], e)
        finally:
            self._building.pop(key, None)
            self.prune()

    def discard(self, template: Template, reason: str) -> None:
        """A template a clone could not be restored from: removed, rebuilt on next use."""
        log.warning("template %s: removed: %s", template.key[:12], reason)
        shutil.rmtree(template.dir, ignore_errors=True)

    def prune(self) -> None:
        """Remove templates unused for max_idle, and leftovers of interrupted builds. Running
        clones keep their mappings of a removed RAM file: tmpfs frees it after the last."""
        now = time.time()
        self._pruned = time.monotonic()
        kept: list[tuple[float, Path]] = []
        for directory in self.root.glob("*") if self.root.exists() else []:
            if directory.name.startswith(".build-"):
                if not _builder_alive(directory.name):
                    shutil.rmtree(directory, ignore_errors=True)
                continue
            try:
                stamp = directory / USED if (directory / USED).exists() else directory / "meta.json"
                used = stamp.stat().st_mtime
            except OSError:
                used = 0.0
            if now - used > self.max_idle:
                shutil.rmtree(directory, ignore_errors=True)
            else:
                kept.append((used, directory))
        for _used, directory in sorted(kept, reverse=True)[self.max_templates :]:
            shutil.rmtree(directory, ignore_errors=True)  # the least recently used beyond the cap

    async def close(self) -> None:
        for task in list(self._building.values()):
            task.cancel()
        await asyncio.gather(*self._building.values(), return_exceptions=True)
