"""The `hypervm` runtime: every pod is a QEMU micro-VM whose PID 1 is our guest agent.

A sandbox is one directory under ROOT/hypervm/<id>/ (QEMU's sockets and pid file, the console
tail, the container logs, its scratch disk) plus one QEMU process and one agent channel. Whatever
happens, removing a sandbox kills its QEMU and deletes that directory; nothing else on the host is
made. Persistent volumes are files someone else owns: the VM opens them, nothing here mounts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypernetes.runtime import guestproto as gp
from hypernetes.runtime.accel import PROBE_TIMEOUT, choose_accel
from hypernetes.runtime.agentclient import (
    AgentClient,
    AgentError,
    AgentUnavailable,
    GuestProcess,
    ProcessSpec,
    Runstate,
)
from hypernetes.runtime.confine import ConfineError, Confiner
from hypernetes.runtime.hypervm_state import (
    disk_from_dict,
    disk_to_dict,
    pod_from_dict,
    pod_to_dict,
    read_state,
    status_from_dict,
    status_to_dict,
    write_state,
)
from hypernetes.runtime.images import Image, ImageError, ImageStore, RegistryAuth, resolve_user
from hypernetes.runtime.interface import (
    ContainerSpec,
    ContainerState,
    ContainerStatus,
    DeviceSpec,
    ExecSpec,
    ExitStatus,
    MountSpec,
    PodRuntimeError,
    PodSpec,
    ProbeSpec,
    Process,
    Runtime,
    SandboxFailed,
    SandboxState,
    SandboxStatus,
    StartFailed,
    VolumeFile,
    VolumeSpec,
    image_pull_error,
)
from hypernetes.runtime.kernels import Kernel, KernelError, KernelRegistry
from hypernetes.runtime.logs import LogWriter, new_instance
from hypernetes.runtime.paths import open_private, private_dir
from hypernetes.runtime.podsize import DEFAULT_EMPTYDIR_SIZE
from hypernetes.runtime.qemu import (
    MAC,
    Disk,
    Nic,
    QemuVM,
    VMConfig,
    disk_slots,
    remove_socket_dir,
    run_dir,
    running_qemu,
    vhost_usable,
)
from hypernetes.runtime.sandboxes import SandboxTable
from hypernetes.runtime.sizing import vm_size

log = logging.getLogger(__name__)

SANDBOX_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
CONTAINER_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TIMEOUT_TCG = 90.0  # a loaded 2-core host under TCG needs this much, rarely
BOOT_TIMEOUT_KVM = 20.0
START_TIMEOUT = 60.0
SHUTDOWN_MARGIN = 15.0  # beyond the grace period, for sync and power-off
KILL_TIMEOUT = 10.0  # QMP quit, then SIGKILL, must have ended QEMU by then


@dataclass
class _Container:
    spec: ContainerSpec
    image: Image
    process: ProcessSpec
    disk_serial: str
    status: ContainerStatus
    log: LogWriter
    done: asyncio.Event = field(default_factory=asyncio.Event)
    main: GuestProcess | None = None
    reaper: asyncio.Task[None] | None = None


@dataclass
class _Sandbox:
    pod: PodSpec
    dir: Path
    vm: QemuVM
    client: AgentClient
    containers: dict[str, _Container]
    state: SandboxState = SandboxState.CREATING
    message: str = ""
    created_at: float = field(default_factory=time.time)
    watcher: asyncio.Task[None] | None = None
    # volume name -> (disk serial, partition or 0) for block volumes and disk emptyDirs
    volume_disks: dict[str, tuple[str, int]] = field(default_factory=dict)


class HyperVM(SandboxTable[_Sandbox, _Container], Runtime):
    name = "hypervm"

    def __init__(
        self,
        root: Path,
        images: ImageStore,
        kernels: KernelRegistry,
        accel: str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.root = root / "hypervm"
        self.images = images
        self.kernels = kernels
        self._accel_override = accel
        self._accel: str | None = None
        self._die_with_parent = die_with_parent
        self._sandboxes: dict[str, _Sandbox] = {}
        self._confiner = Confiner()  # each VM's uid, jail and cgroup (root only)

    # --- accelerator ---------------------------------------------------------------------------

    async def accel(self) -> str:
        if self._accel is None:
            self._accel = await choose_accel(self._accel_override, run_dir() / "accel.json", self._probe_kvm)
        return self._accel

    async def _probe_kvm(self) -> bool:
        kernel = self.kernels.default()
        probe_dir = self.root / ".kvm-probe"
        shutil.rmtree(probe_dir, ignore_errors=True)
        vm = QemuVM(
            VMConfig(
                name="hn-kvm-probe",
                dir=probe_dir,
                kernel=kernel.image,
                initrd=kernel.initrd,
                vcpus=1,
                memory_mib=64,
                accel="kvm",
                acpi=kernel.acpi,
                cmdline=kernel.cmdline,
                die_with_parent=True,
            )
        )
        client = AgentClient("kvm-probe")
        try:
            # jailed as pods are, so that KVM is chosen only if a jailed QEMU can use it
            vm.cfg.jail = await asyncio.to_thread(
                self._confiner.prepare,
                "kvm-probe",
                probe_dir,
                (),
                vm_size(()),
                kernel.image,
                kernel.initrd,
                "kvm",
                True,
                cgroup=False,
            )
            await vm.start()
            await client.connect(str(vm.cfg.ctl_socket), PROBE_TIMEOUT, vm.alive)
            return True
        except (AgentUnavailable, *ConfineError):
            return False
        finally:
            await client.close()
            await vm.kill()
            await asyncio.to_thread(self._confiner.release, "kvm-probe", probe_dir)
            shutil.rmtree(probe_dir, ignore_errors=True)
            remove_socket_dir(probe_dir)

    # --- lifecycle -----------------------------------------------------------------------------

    async def create_sandbox(self, pod: PodSpec) -> SandboxStatus:
        # The tap fd is ours from here on: closed once QEMU holds its copy, or on any failure,
        # so that the tap never outlives the VM. The kept spec carries no fd number.
        tap = _HandedFd(pod.network.tap_fd)
        try:
            return await self._create(
                dataclasses.replace(pod, network=dataclasses.replace(pod.network, tap_fd=None)), tap
            )
        finally:
            tap.close()

    async def _create(self, pod: PodSpec, tap: _HandedFd) -> SandboxStatus:
        if not SANDBOX_ID.match(pod.id):
            raise PodRuntimeError(f"invalid sandbox id {pod.id!r}")
        if pod.id in self._sandboxes:
            raise PodRuntimeError(f"sandbox {pod.id} already exists")
        if not pod.containers:
            raise PodRuntimeError("a pod needs at least one container")
        names = [c.name for c in pod.containers]
        if len(set(names)) != len(names) or not all(CONTAINER_NAME.match(n) for n in names):
            raise PodRuntimeError(f"container names must be unique DNS labels: {names}")
        if tap.fd is not None and not (pod.network.mac and MAC.match(pod.network.mac)):
            raise PodRuntimeError(
                f"the pod's NIC needs a MAC address aa:bb:cc:dd:ee:ff, not {pod.network.mac!r}"
            )
        nics = 0 if tap.fd is None else 1
        try:
            kernel = self.kernels.get(pod.kernel)
        except KernelError as e:
            raise SandboxFailed(str(e)) from e
        size = vm_size(pod.containers)
        images = await self._pull(pod)
        disks: dict[str, Disk] = {}
        for image in images.values():
            if image.id not in disks:
                disks[image.id] = Disk(image.disk, f"img{len(disks)}")
        containers = {
            c.name: self._prepare(pod, c, images[c.name], disks[images[c.name].id].serial)
            for c in pod.containers
        }

        _check_mounts(pod)
        volume_disks, block_disks = _block_disks(pod)
        scratch = [v for v in pod.volumes if v.kind == "emptyDir" and v.medium != "Memory"]
        _check_disk_count(len(disks), len(block_disks), bool(scratch), kernel.acpi, nics)
        sandbox_dir = self.root / pod.id
        shutil.rmtree(sandbox_dir, ignore_errors=True)
        private_dir(self.root)
        private_dir(sandbox_dir)  # the pod's disks, state (its env) and logs: its tenant's only
        disks.update((d.serial, d) for d in block_disks)
        if scratch:
            path = sandbox_dir / SCRATCH_FILE
            sizes = [v.size_limit or DEFAULT_EMPTYDIR_SIZE for v in scratch]
            try:
                await asyncio.to_thread(_build_scratch_disk, path, sizes)
                cache = "none" if _direct_io(path) else "writeback"
            except (OSError, subprocess.SubprocessError) as e:
                shutil.rmtree(sandbox_dir, ignore_errors=True)
                raise SandboxFailed(f"cannot build the pod's scratch disk: {_cmd_error(e)}") from e
            # it dies with the VM: the guest's flushes need not reach the host's disk
            disks[SCRATCH_DISK] = Disk(path, SCRATCH_DISK, readonly=False, cache=cache, flush=False)
            volume_disks.update((v.name, (SCRATCH_DISK, i + 1)) for i, v in enumerate(scratch))
        for c in containers.values():
            c.log = LogWriter(sandbox_dir / "logs" / f"{c.spec.name}.log")
        accel = await self.accel()
        nic = None
        if tap.fd is not None and pod.network.mac:
            nic = Nic(tap.fd, pod.network.mac, vhost=vhost_usable(accel))
        try:
            jail = await asyncio.to_thread(
                self._confiner.prepare,
                pod.id,
                sandbox_dir,
                pod.containers,
                size,
                kernel.image,
                kernel.initrd,
                accel,
                self._die_with_parent,
            )
        except ConfineError as e:
            shutil.rmtree(sandbox_dir, ignore_errors=True)
            raise SandboxFailed(f"cannot confine the VM: {e}") from e
        vm = QemuVM(
            VMConfig(
                name=f"hn-{pod.id}",
                dir=sandbox_dir,
                kernel=kernel.image,
                initrd=kernel.initrd,
                vcpus=size.vcpus,
                memory_mib=size.memory_mib,
                accel=accel,
                acpi=kernel.acpi,
                cmdline=kernel.cmdline,
                disks=list(disks.values()),
                nic=nic,
                die_with_parent=self._die_with_parent,
                jail=jail,
            )
        )
        client = AgentClient(f"agent-{pod.id}")
        sandbox = _Sandbox(pod, sandbox_dir, vm, client, containers, volume_disks=volume_disks)
        self._sandboxes[pod.id] = sandbox
        try:
            await self._boot(sandbox, kernel, accel, tap)
            for v in pod.volumes:
                if v.kind == "files":
                    await self._write_files(sandbox, v.name, v.files)
        except BaseException:
            await self._destroy(sandbox)
            raise
        sandbox.state = SandboxState.READY
        sandbox.watcher = asyncio.create_task(self._watch(sandbox))
        self._save(sandbox)
        return self._status(sandbox)

    async def _pull(self, pod: PodSpec) -> dict[str, Image]:
        images: dict[str, Image] = {}
        auth = RegistryAuth(dict(pod.pull_credentials))  # the pod's imagePullSecrets
        for c in pod.containers:
            try:
                images[c.name] = await asyncio.to_thread(
                    self.images.ensure_for_pod, c.image, c.pull_policy, auth
                )
            except ImageError as e:
                raise image_pull_error(e) from e
        return images

    def _prepare(self, pod: PodSpec, spec: ContainerSpec, image: Image, serial: str) -> _Container:
        cfg = image.config
        if spec.command is not None:
            argv = [*spec.command, *(spec.args or ())]
        else:
            argv = [*cfg.entrypoint, *(spec.args if spec.args is not None else cfg.cmd)]
        if not argv:
            raise StartFailed(f"container {spec.name}: no command given and image has none")
        try:
            uid, gid, groups = resolve_user(image, spec.user or cfg.user or "0")
        except ImageError as e:
            raise StartFailed(f"container {spec.name}: {e}") from e
        env = dict(kv.split("=", 1) for kv in cfg.env if "=" in kv)
        env.setdefault("PATH", DEFAULT_PATH)
        env["HOSTNAME"] = pod.hostname or pod.name
        env.update(spec.env)
        process = ProcessSpec(
            args=argv,
            env=[f"{k}={v}" for k, v in env.items()],
            cwd=spec.working_dir or cfg.working_dir or "/",
            uid=uid,
            gid=gid,
            groups=groups,
            terminal=spec.tty,
            stdin=spec.stdin,
        )
        status = ContainerStatus(name=spec.name, image=spec.image, image_id=image.digest)
        return _Container(spec, image, process, serial, status, log=None)  # type: ignore[arg-type]

    async def _boot(self, sandbox: _Sandbox, kernel: Kernel, accel: str, tap: _HandedFd) -> None:
        vm, client, pod = sandbox.vm, sandbox.client, sandbox.pod
        try:
            await vm.start()
        except OSError as e:
            raise SandboxFailed(f"cannot start QEMU: {e}") from e
        tap.close()  # QEMU has its copy: the tap now goes away with the QEMU process
        timeout = BOOT_TIMEOUT_KVM if accel == "kvm" else BOOT_TIMEOUT_TCG
        try:
            await client.connect(str(vm.cfg.ctl_socket), timeout, vm.alive)
            net = pod.network
            setup = gp.TLV().add_str(gp.TAG_HOSTNAME, (pod.hostname or pod.name)[:63])
            setup.add_u64(gp.TAG_TIME_NS, time.time_ns()).add(gp.TAG_RANDOM_SEED, os.urandom(64))
            setup.add_strs(gp.TAG_DNS_SERVER, net.dns_servers).add_strs(gp.TAG_DNS_SEARCH, net.dns_search)
            setup.add_strs(gp.TAG_DNS_OPTION, net.dns_options)
            setup.add_strs(gp.TAG_HOSTS_LINE, ["127.0.0.1\tlocalhost", "::1\tlocalhost", *net.hosts])
            if net.mac and vm.cfg.nic is not None:  # no NIC has the MAC otherwise: SETUP would fail
                iface = gp.TLV().add_str(gp.TAG_MAC, net.mac).add_u32(gp.TAG_MTU, net.mtu)
                setup.add_tlv(gp.TAG_IFACE, iface.add_strs(gp.TAG_ADDRESS, net.addresses))
                if net.gateway:
                    route = gp.TLV().add_str(gp.TAG_DEST, "0.0.0.0/0")
                    setup.add_tlv(gp.TAG_ROUTE, route.add_str(gp.TAG_GATEWAY, net.gateway))
            await client.request(gp.MSG_SETUP, setup)
        except (AgentUnavailable, AgentError) as e:
            await vm.wait(2.0)  # a dead channel usually means QEMU is exiting: say why
            if vm.exited.is_set() and vm.returncode and (err := vm.qemu_errors()):
                # QEMU refused its own configuration (a disk it cannot open or lock): that is why
                raise SandboxFailed(f"QEMU could not start the VM: {err}") from e
            raise SandboxFailed(self._explain(sandbox, f"guest did not come up: {e}")) from e

    async def _write_files(self, sandbox: _Sandbox, volume: str, files: tuple[VolumeFile, ...]) -> None:
        """Write a file volume's files into the guest (WRITE_FILES), in frames under the
        protocol's payload limit: they live in the guest's memory only, never on the host's disk."""
        batch, size = gp.TLV().add_str(gp.TAG_SOURCE, f"pod:{volume}"), 0
        for f in files:
            if len(f.data) > FILES_MAX_FILE:
                raise SandboxFailed(
                    f"volume {volume}: file {f.path} has {len(f.data)} bytes; a file "
                    f"volume's file may have at most {FILES_MAX_FILE}"
                )
            entry = gp.TLV().add_str(gp.TAG_SUBPATH, f.path).add(gp.TAG_DATA, f.data)
            entry.add_u32(gp.TAG_MODE, f.mode & 0o777)
            if size and size + len(f.data) > FILES_BATCH:
                await self._request_files(sandbox, volume, batch)
                batch, size = gp.TLV().add_str(gp.TAG_SOURCE, f"pod:{volume}"), 0
            batch.add_tlv(gp.TAG_FILE, entry)
            size += len(f.path) + len(f.data) + 32
        await self._request_files(sandbox, volume, batch)

    async def _request_files(self, sandbox: _Sandbox, volume: str, tlv: gp.TLV) -> None:
        try:
            await sandbox.client.request(gp.MSG_WRITE_FILES, tlv)
        except AgentError as e:
            raise SandboxFailed(f"volume {volume}: the guest could not write its files: {e}") from e
        except AgentUnavailable as e:
            raise SandboxFailed(self._explain(sandbox, str(e))) from e

    async def update_files(self, sandbox_id: str, volume: str, files: tuple[VolumeFile, ...]) -> None:
        """Replace files of a running pod's file volume (a refreshed service-account token): each
        file atomically, seen at once by containers that mount the volume (not by a subPath
        mount of one of its files, as upstream)."""
        sandbox = self._get(sandbox_id)
        if sandbox.state is not SandboxState.READY:
            raise SandboxFailed(f"sandbox is {sandbox.state.value}: {sandbox.message}")
        if any(d.serial == VOLUME_DISK for d in sandbox.vm.cfg.disks):
            raise PodRuntimeError(
                f"volume {volume} is on a read-only disk (a VM started by an older "
                "version): its files cannot change"
            )
        await self._write_files(sandbox, volume, files)

    def _explain(self, sandbox: _Sandbox, what: str) -> str:
        vm = sandbox.vm
        parts = [what]
        if vm.exited.is_set():
            parts.append(f"QEMU exited with status {vm.returncode}")
            if err := vm.qemu_errors():
                parts.append(f"QEMU said: {err}")
        if tail := vm.console_tail(5):
            parts.append(f"guest console: {tail}")
        return "; ".join(parts)

    async def _watch(self, sandbox: _Sandbox) -> None:
        """A VM that ends on its own (panic, OOM of the VMM, kill -9) fails its containers."""
        await sandbox.vm.exited.wait()
        self._vm_ended(sandbox)
        await sandbox.client.close("VM exited")
        for c in sandbox.containers.values():
            self._mark_lost(c, sandbox.message or "the VM stopped")

    def _vm_ended(self, sandbox: _Sandbox) -> None:
        if sandbox.state is SandboxState.READY:
            sandbox.state = SandboxState.FAILED
            sandbox.message = self._explain(sandbox, "the VM ended unexpectedly")

    def _mark_lost(self, c: _Container, message: str) -> None:
        if c.status.state in (ContainerState.RUNNING, ContainerState.CREATED) and c.main is None:
            c.status.state = ContainerState.EXITED
            c.status.reason, c.status.message = "VMExited", message
            c.done.set()

    async def start_container(self, sandbox_id: str, name: str, attach: bool = False) -> Process | None:
        sandbox = self._get(sandbox_id)
        c = self._container(sandbox, name)
        if c.status.state is not ContainerState.CREATED:
            raise PodRuntimeError(f"container {name} was already started")
        if sandbox.state is not SandboxState.READY:
            raise SandboxFailed(f"sandbox is {sandbox.state.value}: {sandbox.message}")
        proc = sandbox.client.new_process(c.log.write, attach, c.spec.stdin)
        tlv = gp.TLV().add_str(gp.TAG_CONTAINER_ID, name).add_str(gp.TAG_IMAGE_DISK, c.disk_serial)
        tlv.add_tlv(gp.TAG_PROCESS, c.process.encode(proc.id))
        tlv.add_u64(gp.TAG_MEMORY_LIMIT, c.spec.memory_limit or 0)
        volumes = {v.name: v for v in sandbox.pod.volumes}
        files_disk = any(d.serial == VOLUME_DISK for d in sandbox.vm.cfg.disks)
        for m in c.spec.mounts:
            tlv.add_tlv(
                gp.TAG_MOUNT, _mount_tlv(volumes[m.volume], m, sandbox.volume_disks.get(m.volume), files_disk)
            )
        for d in c.spec.devices:
            tlv.add_tlv(gp.TAG_DEVICE, _device_tlv(volumes[d.volume], d, sandbox.volume_disks.get(d.volume)))
        if sandbox.pod.fs_group is not None:
            tlv.add_u32(gp.TAG_FSGROUP, sandbox.pod.fs_group)
        try:
            await sandbox.client.start(gp.MSG_CREATE, tlv, proc, START_TIMEOUT)
        except AgentError as e:
            c.status.state, c.status.reason, c.status.message = ContainerState.EXITED, "StartError", str(e)
            c.status.exit = ExitStatus(code=128)
            c.log.flush_partial()
            c.done.set()
            raise StartFailed(f"container {name}: {e}", e.errno) from e
        except AgentUnavailable as e:
            raise SandboxFailed(self._explain(sandbox, str(e))) from e
        c.main = proc
        c.status.state, c.status.pid, c.status.started_at = ContainerState.RUNNING, proc.pid, time.time()
        c.reaper = asyncio.create_task(self._reap(sandbox, c, proc))
        self._save(sandbox)
        return proc if attach else None

    async def _reap(self, sandbox: _Sandbox, c: _Container, proc: GuestProcess) -> None:
        status = await proc.wait()
        if status.code is None and status.signal is None:
            # The channel dropped before the guest said how the process ended: the VM is
            # probably going down; report it together with why, not a bare "ready".
            if await sandbox.vm.wait(5.0):
                self._vm_ended(sandbox)
            c.status.reason = "VMExited"
            c.status.message = sandbox.message or proc.client.disconnect_reason
        else:
            c.status.reason = "Completed" if status.code == 0 else "Error"
        c.log.flush_partial()
        c.status.state, c.status.exit, c.status.finished_at = ContainerState.EXITED, status, time.time()
        c.done.set()
        if sandbox.state is SandboxState.READY:
            self._save(sandbox)

    async def exec(self, sandbox_id: str, container: str, spec: ExecSpec) -> Process:
        sandbox = self._get(sandbox_id)
        c = self._container(sandbox, container)
        if c.status.state is not ContainerState.RUNNING:
            raise PodRuntimeError(f"container {container} is not running")
        uid, gid, groups = c.process.uid, c.process.gid, c.process.groups
        if spec.user is not None:
            try:
                uid, gid, groups = resolve_user(c.image, spec.user)
            except ImageError as e:
                raise StartFailed(str(e)) from e
        env = dict(kv.split("=", 1) for kv in c.process.env)
        env.update(spec.env)
        pspec = ProcessSpec(
            args=list(spec.command),
            env=[f"{k}={v}" for k, v in env.items()],
            cwd=spec.working_dir or c.process.cwd,
            uid=uid,
            gid=gid,
            groups=groups,
            terminal=spec.tty,
            stdin=spec.stdin,
            rows=spec.rows,
            cols=spec.cols,
        )
        proc = sandbox.client.new_process(None, attach=True, stdin=spec.stdin)
        self._save(sandbox)  # the process id is now taken for the life of the VM
        tlv = gp.TLV().add_str(gp.TAG_CONTAINER_ID, container).add_tlv(gp.TAG_PROCESS, pspec.encode(proc.id))
        try:
            await sandbox.client.start(gp.MSG_EXEC, tlv, proc, START_TIMEOUT)
        except AgentError as e:
            raise StartFailed(f"exec in {container}: {e}", e.errno) from e
        except AgentUnavailable as e:
            raise SandboxFailed(self._explain(sandbox, str(e))) from e
        return proc

    async def stop_sandbox(self, sandbox_id: str, grace_seconds: int | None = None) -> None:
        """Stop the VM: the guest gets the grace period to end its processes, sync and power
        off; past that (plus SHUTDOWN_MARGIN) the VM is killed whatever the guest does, even a
        hung one that no longer reads its channel. The record, its state and the containers'
        logs stay (until `remove_sandbox`); the disks made for the VM, its data, go now."""
        sandbox = self._get(sandbox_id)
        grace = max(0, sandbox.pod.termination_grace_seconds if grace_seconds is None else grace_seconds)
        if sandbox.vm.alive() and sandbox.client.state is Runstate.RUNNING:
            sandbox.state = SandboxState.STOPPED
            try:
                await asyncio.wait_for(self._shutdown(sandbox, grace), grace + SHUTDOWN_MARGIN)
            except TimeoutError:
                log.warning(
                    "sandbox %s: the guest did not power off within %d s; killing the VM",
                    sandbox_id,
                    grace + SHUTDOWN_MARGIN,
                )
        sandbox.state = SandboxState.STOPPED
        await self._kill(sandbox)
        for c in sandbox.containers.values():
            self._mark_lost(c, "the sandbox was stopped")
            if c.log is not None:
                c.log.flush_partial()
        for disk in (VOLUME_DISK_FILE, SCRATCH_FILE):
            (sandbox.dir / disk).unlink(missing_ok=True)
        remove_socket_dir(sandbox.dir)
        with contextlib.suppress(*ConfineError):  # no cgroup nor uid held for a VM that is gone
            await asyncio.to_thread(self._confiner.release, sandbox_id, sandbox.dir)
        self._save(sandbox)

    async def _shutdown(self, sandbox: _Sandbox, grace: int) -> None:
        tlv = gp.TLV().add_u32(gp.TAG_GRACE_MS, grace * 1000)
        with contextlib.suppress(AgentUnavailable, AgentError):
            await sandbox.client.request(gp.MSG_SHUTDOWN, tlv, timeout=grace + SHUTDOWN_MARGIN)
        # After ACK the guest syncs and powers off.
        await sandbox.vm.exited.wait()

    async def _kill(self, sandbox: _Sandbox) -> None:
        """QMP quit, then SIGKILL (QemuVM.kill); a QEMU that still lingers (stopped, or stuck in
        the kernel) gets SIGKILL again and is left to the kernel: the caller is not held up."""
        try:
            await asyncio.wait_for(sandbox.vm.kill(), KILL_TIMEOUT)
        except TimeoutError:
            if sandbox.vm.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(sandbox.vm.pid, signal.SIGKILL)
            log.error("sandbox %s: QEMU (pid %s) did not exit after SIGKILL", sandbox.pod.id, sandbox.vm.pid)

    async def remove_sandbox(self, sandbox_id: str) -> None:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            # Nothing known in memory; still clear what a crashed process may have left.
            await self._clear_leftover(self.root / sandbox_id)
            return
        if sandbox.vm.alive():
            await self.stop_sandbox(sandbox_id, grace_seconds=0)
        await self._destroy(sandbox)

    async def _clear_leftover(self, sandbox_dir: Path) -> None:
        """Kill the sandbox's QEMU, remove its cgroup, free its uid, delete its directory."""
        _kill_leftover(sandbox_dir)
        with contextlib.suppress(*ConfineError):
            await asyncio.to_thread(self._confiner.release, sandbox_dir.name, sandbox_dir)
        shutil.rmtree(sandbox_dir, ignore_errors=True)

    async def _destroy(self, sandbox: _Sandbox) -> None:
        await sandbox.client.close("sandbox removed")
        await self._kill(sandbox)
        if sandbox.watcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await sandbox.watcher
        for c in sandbox.containers.values():
            if c.log is not None:
                c.log.close()
            c.done.set()
        await self._clear_leftover(sandbox.dir)
        self._sandboxes.pop(sandbox.pod.id, None)

    # --- adoption: surviving a node agent restart ------------------------------------------------

    def _save(self, sandbox: _Sandbox) -> None:
        write_state(
            sandbox.dir,
            {
                "pod": pod_to_dict(sandbox.pod),
                "created_at": sandbox.created_at,
                # a stopped sandbox (a finished pod's) is kept for its logs, also across restarts
                "stopped": sandbox.state is SandboxState.STOPPED,
                "message": sandbox.message,
                "disks": [disk_to_dict(d) for d in sandbox.vm.cfg.disks],
                "volume_disks": sandbox.volume_disks,
                "next_process_id": sandbox.client.next_process_id,
                "containers": {
                    name: {
                        "image_id": c.image.id,
                        "disk_serial": c.disk_serial,
                        "process": dataclasses.asdict(c.process),
                        "process_id": c.main.id if c.main is not None else None,
                        "status": status_to_dict(c.status),
                    }
                    for name, c in sandbox.containers.items()
                },
            },
        )

    async def adopt(self) -> list[SandboxStatus]:
        """Find the VMs an earlier process left running and take them over.

        Sandboxes whose VM is gone are removed: their containers' fate is unknown, and the node
        agent re-creates pods from the API's state.
        """
        adopted = []
        for directory in sorted(self.root.glob("*")) if self.root.exists() else []:
            if not SANDBOX_ID.match(directory.name) or directory.name in self._sandboxes:
                continue
            state = read_state(directory)
            pid = running_qemu(directory)
            if state is not None and pid is None and state.get("stopped") is True:
                with contextlib.suppress(PodRuntimeError, KeyError, TypeError, ValueError, OSError):
                    adopted.append(self._adopt_stopped(directory, state))
                    continue
            if state is None or pid is None:
                await self._clear_leftover(directory)
                continue
            try:
                adopted.append(await self._adopt_one(directory, state, pid))
            except (AgentUnavailable, PodRuntimeError, KeyError, TypeError, ValueError, OSError) as e:
                log.warning("cannot adopt sandbox %s: %s; removing it", directory.name, e)
                await self._clear_leftover(directory)
        return adopted

    def _adopt_stopped(self, directory: Path, state: dict[str, Any]) -> SandboxStatus:
        """Take back the record of a sandbox stopped on purpose (a finished pod's): no VM, only
        its containers' last status and logs, kept until the pod is deleted."""
        pod = pod_from_dict(state["pod"])
        vm = QemuVM(
            VMConfig(name=f"hn-{pod.id}", dir=directory, kernel=Path(), initrd=Path(), vcpus=0, memory_mib=0)
        )
        vm.exited.set()
        containers: dict[str, _Container] = {}
        for name, rec in state["containers"].items():
            image = self.images.get(rec["image_id"])
            if image is None:
                raise PodRuntimeError(f"image {rec['image_id']} of container {name} is gone")
            spec = next(c for c in pod.containers if c.name == name)
            proc_spec = ProcessSpec(**{**rec["process"], "groups": tuple(rec["process"]["groups"])})
            c = _Container(
                spec,
                image,
                proc_spec,
                rec["disk_serial"],
                status_from_dict(rec["status"]),
                LogWriter(directory / "logs" / f"{name}.log"),
            )
            c.done.set()
            containers[name] = c
        sandbox = _Sandbox(
            pod,
            directory,
            vm,
            AgentClient(f"agent-{pod.id}"),
            containers,
            state=SandboxState.STOPPED,
            message=str(state.get("message") or ""),
            created_at=float(state["created_at"]),
        )
        self._sandboxes[pod.id] = sandbox
        log.info("took back stopped sandbox %s (its logs)", pod.id)
        return self._status(sandbox)

    async def _adopt_one(self, directory: Path, state: dict[str, Any], pid: int) -> SandboxStatus:
        pod = pod_from_dict(state["pod"])
        disks = [disk_from_dict(d) for d in state.get("disks", ())]
        volume_disks = {
            name: (str(serial), int(part)) for name, (serial, part) in state.get("volume_disks", {}).items()
        }
        vm = QemuVM(
            VMConfig(
                name=f"hn-{pod.id}",
                dir=directory,
                kernel=Path(),
                initrd=Path(),
                vcpus=0,
                memory_mib=0,
                disks=disks,
            )
        )
        await vm.attach(pid)
        client = AgentClient(f"agent-{pod.id}")
        client.reserve_process_ids(int(state["next_process_id"]))
        containers: dict[str, _Container] = {}
        for name, rec in state["containers"].items():
            image = self.images.get(rec["image_id"])
            if image is None:
                raise PodRuntimeError(f"image {rec['image_id']} of container {name} is gone")
            proc_spec = ProcessSpec(**{**rec["process"], "groups": tuple(rec["process"]["groups"])})
            spec = next(c for c in pod.containers if c.name == name)
            c = _Container(
                spec,
                image,
                proc_spec,
                rec["disk_serial"],
                status_from_dict(rec["status"]),
                LogWriter(directory / "logs" / f"{name}.log"),
            )
            containers[name] = c
            if c.status.state is ContainerState.RUNNING and rec["process_id"] is not None:
                # Known before connecting: the guest sends what it kept for these ids right away.
                c.main = client.adopt_process(int(rec["process_id"]), c.log.write)
        try:
            await client.connect(str(vm.cfg.ctl_socket), BOOT_TIMEOUT_KVM, vm.alive)
        except BaseException:
            for c in containers.values():
                c.log.close()
            await vm.detach()
            raise
        sandbox = _Sandbox(
            pod,
            directory,
            vm,
            client,
            containers,
            state=SandboxState.READY,
            created_at=float(state["created_at"]),
            volume_disks=volume_disks,
        )
        self._sandboxes[pod.id] = sandbox
        for c in containers.values():
            if c.main is not None:
                c.reaper = asyncio.create_task(self._reap(sandbox, c, c.main))
            elif c.status.state is ContainerState.EXITED:
                c.done.set()
        sandbox.watcher = asyncio.create_task(self._watch(sandbox))
        log.info("adopted sandbox %s (QEMU pid %d)", pod.id, pid)
        return self._status(sandbox)

    async def detach_all(self) -> None:
        """Let go of every VM without stopping it (node agent shutdown); `adopt` takes them back."""
        for sandbox in list(self._sandboxes.values()):
            if sandbox.watcher is not None:
                sandbox.watcher.cancel()
            for c in sandbox.containers.values():
                if c.reaper is not None:
                    c.reaper.cancel()
                c.log.close()
            await sandbox.client.close("node agent detached")
            await sandbox.vm.detach()
        self._sandboxes.clear()

    # --- queries -------------------------------------------------------------------------------

    async def signal_container(self, sandbox_id: str, name: str, signum: int) -> None:
        c = self._container(self._get(sandbox_id), name)
        if c.main is None or c.status.state is not ContainerState.RUNNING:
            raise PodRuntimeError(f"container {name} is not running")
        try:
            await c.main.signal(signum)
        except (AgentError, AgentUnavailable) as e:
            raise PodRuntimeError(f"signal {signum} to {name}: {e}") from e

    async def probe(self, sandbox_id: str, spec: ProbeSpec) -> tuple[bool, str]:
        sandbox = self._get(sandbox_id)
        tlv = gp.TLV().add_str(gp.TAG_PROBE_KIND, spec.kind).add_u32(gp.TAG_PORT, spec.port)
        tlv.add_str(gp.TAG_HOST, spec.host).add_u32(gp.TAG_TIMEOUT_MS, int(spec.timeout * 1000))
        if spec.kind == "http":
            tlv.add_str(gp.TAG_PATH, spec.path).add_strs(
                gp.TAG_HEADER, [f"{k}: {v}" for k, v in spec.headers]
            )
        try:
            reply = await sandbox.client.request(gp.MSG_PROBE, tlv, timeout=spec.timeout + 10)
        except AgentError as e:
            return False, str(e)
        except AgentUnavailable as e:
            raise SandboxFailed(self._explain(sandbox, str(e))) from e
        if spec.kind != "http":
            return True, ""
        try:
            code = gp.probe_status_code(reply)
        except gp.ProtocolError as e:
            return False, f"guest sent a bad probe result: {e}"
        if 200 <= code < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {code}"

    async def restart_container(self, sandbox_id: str, name: str) -> None:
        sandbox = self._get(sandbox_id)
        c = self._container(sandbox, name)
        if c.status.state is not ContainerState.EXITED:
            raise PodRuntimeError(f"container {name} has not exited")
        try:
            await sandbox.client.request(gp.MSG_REMOVE, gp.TLV().add_str(gp.TAG_CONTAINER_ID, name))
        except AgentError as e:
            log.info("remove of exited container %s: %s", name, e)  # it may never have started
        except AgentUnavailable as e:
            raise SandboxFailed(self._explain(sandbox, str(e))) from e
        c.log = new_instance(c.log)
        c.main, c.done = None, asyncio.Event()
        c.status = ContainerStatus(name=name, image=c.spec.image, image_id=c.image.digest)
        await self.start_container(sandbox_id, name)


# serial of the read-only erofs disk that held the pod's file volumes in VMs started by older
# versions (adopted ones); file volumes are now written into the guest (WRITE_FILES)
VOLUME_DISK = "vol0"
FILES_BATCH = 512 * 1024  # file bytes per WRITE_FILES, well under the protocol's payload limit
FILES_MAX_FILE = gp.PROTO_MAX_PAYLOAD - 64 * 1024  # one file in one frame, with room for its path
SCRATCH_DISK = "scratch"  # serial of the pod's scratch disk: one partition per disk emptyDir
VOLUME_DISK_FILE = "volumes.erofs"  # the vol0 disk of such a VM; held the pod's secrets and token
SCRATCH_FILE = "scratch.img"
# Filesystems a block volume may have: every kernel we boot has ext4 (kernels.DRIVERS), which
# also mounts ext3 and ext2; nothing else is built in, nor loaded from a module.
FS_TYPES = ("ext4", "ext3", "ext2")
MIB = 1 << 20


def _check_mounts(pod: PodSpec) -> None:
    volumes = {v.name: v for v in pod.volumes}
    if len(volumes) != len(pod.volumes):
        raise PodRuntimeError("volume names must be unique")
    for v in pod.volumes:
        if v.kind not in ("emptyDir", "files", "block") or v.medium not in ("", "Memory"):
            raise PodRuntimeError(f"volume {v.name}: unknown kind {v.kind!r} or medium {v.medium!r}")
    for c in pod.containers:
        for m in c.mounts:
            if m.volume not in volumes:
                raise PodRuntimeError(f"container {c.name} mounts unknown volume {m.volume!r}")
            if not m.path.startswith("/") or ".." in m.sub_path.split("/"):
                raise PodRuntimeError(f"container {c.name}: bad mount {m.path!r} (subPath {m.sub_path!r})")
            block = volumes[m.volume].block
            if volumes[m.volume].kind == "block" and block is not None and not block.fs_type:
                raise PodRuntimeError(
                    f"container {c.name}: volume {m.volume!r} is a raw block device "
                    "(volumeMode: Block): it goes in volumeDevices, not volumeMounts"
                )
        for d in c.devices:
            dev = volumes.get(d.volume)
            if dev is None or dev.kind != "block" or dev.block is None or dev.block.fs_type:
                raise PodRuntimeError(
                    f"container {c.name}: volumeDevices need a raw block volume "
                    f"(volumeMode: Block), {d.volume!r} is not one"
                )
            parts = d.path.split("/")
            if not d.path.startswith("/") or d.path == "/" or "." in parts or ".." in parts:
                raise PodRuntimeError(f"container {c.name}: bad devicePath {d.path!r}")


def _block_disks(pod: PodSpec) -> tuple[dict[str, tuple[str, int]], list[Disk]]:
    """The disks of the pod's block volumes (serials pv0, pv1, ...), each backing file checked
    first, so that a missing or unformatted one fails here with a clear message."""
    serials: dict[str, tuple[str, int]] = {}
    disks: list[Disk] = []
    seen: dict[str, str] = {}
    for v in pod.volumes:
        if v.kind != "block":
            continue
        b = v.block
        if b is None:
            raise SandboxFailed(f"volume {v.name}: a block volume without a device")
        if b.format not in ("raw", "qcow2"):
            raise SandboxFailed(f"volume {v.name}: unknown disk format {b.format!r} (raw or qcow2)")
        if b.fs_type and b.fs_type not in FS_TYPES:
            raise SandboxFailed(
                f"volume {v.name}: fsType {b.fs_type!r} is not supported by the "
                f"guest kernel (supported: {', '.join(FS_TYPES)})"
            )
        path = Path(b.path)
        if not path.is_absolute():
            raise SandboxFailed(f"volume {v.name}: backing file {b.path!r} is not an absolute path")
        try:
            key = str(path.resolve(strict=True))
        except OSError as e:
            raise SandboxFailed(f"volume {v.name}: backing file {path}: {e.strerror or e}") from e
        if key in seen:
            raise SandboxFailed(f"volumes {seen[key]} and {v.name} use the same backing file {path}")
        seen[key] = v.name
        cache = _check_backing_file(v.name, path, b.format, b.fs_type)
        serial = f"pv{len(disks)}"
        serials[v.name] = (serial, 0)
        disks.append(Disk(path, serial, readonly=b.read_only, cache=cache, format=b.format, discard=True))
    return serials, disks


def _direct_io(path: Path) -> bool:
    """Whether the file's filesystem takes O_DIRECT (tmpfs does not)."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        return False
    return True


def _check_backing_file(name: str, path: Path, fmt: str, fs_type: str) -> str:
    """Fail clearly on a file QEMU or the guest could not use; return its cache mode: "none"
    (O_DIRECT: no second copy of a tenant's data in the host's page cache), or "writeback"
    where the host filesystem has no O_DIRECT. Either way the guest's flushes are fdatasync."""
    try:
        st = os.stat(path)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise SandboxFailed(f"volume {name}: backing file {path} is not a file or block device")
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(0x438)  # ext2/3/4 superblock (at 1024) magic
            magic = f.read(2)
        cache = "none" if _direct_io(path) else "writeback"
    except OSError as e:
        raise SandboxFailed(f"volume {name}: backing file {path}: {e.strerror or e}") from e
    if fmt == "qcow2" and head != b"QFI\xfb":
        raise SandboxFailed(f"volume {name}: backing file {path} is not a qcow2 image")
    if fmt == "raw" and fs_type.startswith("ext") and magic != b"\x53\xef":
        raise SandboxFailed(
            f"volume {name}: backing file {path} holds no {fs_type} filesystem "
            "(no ext2/3/4 superblock): it is not formatted, or corrupt"
        )
    return cache


def _check_disk_count(images: int, blocks: int, scratch: bool, acpi: bool, nics: int = 0) -> None:
    slots = disk_slots(acpi, nics)
    needed = images + blocks + scratch
    if needed <= slots:
        return
    parts = [f"{images} image disk{'s' * (images != 1)}"]
    if blocks:
        parts.append(f"{blocks} persistent volume{'s' * (blocks != 1)}")
    if scratch:
        parts.append("1 scratch disk for emptyDirs")
    nic = "; its network interface takes one more" if nics else ""
    raise SandboxFailed(
        f"the pod needs {needed} virtio disks ({', '.join(parts)}) but a micro-VM "
        f"{'with' if acpi else 'without'} ACPI has room for {slots} (virtio-mmio transports{nic})"
    )


class _HandedFd:
    """An fd the caller handed over (the pod's tap): closed exactly once, whoever gets there first."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _build_scratch_disk(path: Path, sizes: list[int]) -> None:
    """A sparse disk with a GPT and one ext4 partition per emptyDir, each exactly its size (in
    whole MiB, at least 1 MiB), so that a full emptyDir is ENOSPC in the guest. Made on the host
    with mkfs on the file, never mounted here. No journal: the data dies with the VM."""
    parts: list[tuple[int, int]] = []  # (offset, size) in bytes
    offset = MIB  # partitions aligned on 1 MiB, as partitioning tools do
    for size in sizes:
        size = max(MIB, -(-size // MIB) * MIB)
        parts.append((offset, size))
        offset += size
    total = offset + MIB  # the backup GPT lives in the last MiB
    with os.fdopen(open_private(path), "wb") as f:
        f.truncate(total)
    for start, size in parts:
        # mkfs's discard punches the (already sparse) range, which lets it skip zeroing the
        # inode tables: the file stays a few MiB however large the emptyDir
        subprocess.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-m",
                "0",
                "-O",
                "^has_journal",
                "-E",
                f"offset={start},root_owner=0:0",
                str(path),
                f"{size // 1024}k",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    primary, backup = _gpt(total, parts)
    with open(path, "r+b") as f:
        f.write(primary)
        f.seek(total - len(backup))
        f.write(backup)


def _gpt(total: int, parts: list[tuple[int, int]]) -> tuple[bytes, bytes]:
    """A protective MBR, GPT header and entries (for the start of a disk of `total` bytes), and
    the backup entries and header (for its end)."""
    sector, nentries, entry_size = 512, 128, 128
    last = total // sector - 1
    entry_sectors = nentries * entry_size // sector
    linux_fs = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4").bytes_le
    entries = bytearray(nentries * entry_size)
    for i, (start, size) in enumerate(parts):
        struct.pack_into(
            "<16s16sQQQ72s",
            entries,
            i * entry_size,
            linux_fs,
            uuid.uuid4().bytes_le,
            start // sector,
            (start + size) // sector - 1,
            0,
            "emptydir".encode("utf-16-le"),
        )
    disk_guid, entries_crc = uuid.uuid4().bytes_le, zlib.crc32(entries)

    def header(my_lba: int, alt_lba: int, entries_lba: int) -> bytes:
        h = bytearray(
            struct.pack(
                "<8sIIIIQQQQ16sQIII",
                b"EFI PART",
                0x10000,
                92,
                0,
                0,
                my_lba,
                alt_lba,
                2 + entry_sectors,
                last - 1 - entry_sectors,
                disk_guid,
                entries_lba,
                nentries,
                entry_size,
                entries_crc,
            )
        )
        struct.pack_into("<I", h, 16, zlib.crc32(h))
        return bytes(h).ljust(sector, b"\0")

    mbr = bytearray(sector)
    struct.pack_into("<B3sB3sII", mbr, 446, 0, b"\0\2\0", 0xEE, b"\xff\xff\xff", 1, min(last, 0xFFFFFFFF))
    mbr[510:512] = b"\x55\xaa"
    primary = bytes(mbr) + header(1, last, 2) + bytes(entries)
    backup = bytes(entries) + header(last, 1, last - entry_sectors)
    return primary, backup


def _cmd_error(e: OSError | subprocess.SubprocessError) -> str:
    if isinstance(e, subprocess.CalledProcessError):
        return (e.stderr or b"").decode(errors="replace").strip() or str(e)
    return str(e)


def _mount_tlv(
    volume: VolumeSpec, m: MountSpec, disk: tuple[str, int] | None, files_disk: bool = False
) -> gp.TLV:
    """`files_disk`: the VM (started by an older version) has its file volumes on an erofs disk."""
    tlv = gp.TLV().add_str(gp.TAG_TARGET, m.path)
    if volume.kind == "files" and files_disk:
        sub = f"{volume.name}/{m.sub_path}".rstrip("/")
        tlv.add_str(gp.TAG_SOURCE, VOLUME_DISK).add_str(gp.TAG_FSTYPE, "erofs").add_str(gp.TAG_SUBPATH, sub)
        return tlv.add_bool(gp.TAG_READONLY, True)
    if volume.kind == "files":  # the pod volume WRITE_FILES made and keeps up to date
        tlv.add_str(gp.TAG_SOURCE, f"pod:{volume.name}")
        if m.sub_path:
            tlv.add_str(gp.TAG_SUBPATH, m.sub_path)
        return tlv.add_bool(gp.TAG_READONLY, True)
    if m.sub_path:
        tlv.add_str(gp.TAG_SUBPATH, m.sub_path)
    if volume.kind == "block":
        if volume.block is None or disk is None:
            raise PodRuntimeError(f"volume {volume.name} has no disk in this sandbox")
        tlv.add_str(gp.TAG_SOURCE, disk[0]).add_str(gp.TAG_FSTYPE, volume.block.fs_type)
        return tlv.add_bool(gp.TAG_READONLY, m.read_only or volume.block.read_only)
    tlv.add_str(gp.TAG_SOURCE, f"pod:{volume.name}")  # emptyDir
    if disk is not None:  # a partition of the scratch disk (medium ""), else a tmpfs
        tlv.add_str(gp.TAG_DISK, disk[0]).add_u32(gp.TAG_PARTITION, disk[1])
    else:
        tlv.add_u64(gp.TAG_SIZE_LIMIT, volume.size_limit)
    return tlv.add_bool(gp.TAG_READONLY, m.read_only)


def _device_tlv(volume: VolumeSpec, d: DeviceSpec, disk: tuple[str, int] | None) -> gp.TLV:
    if disk is None:
        raise PodRuntimeError(f"volume {volume.name} has no disk in this sandbox")
    read_only = volume.block is not None and volume.block.read_only
    tlv = gp.TLV().add_str(gp.TAG_SOURCE, disk[0]).add_str(gp.TAG_TARGET, d.path)
    return tlv.add_bool(gp.TAG_READONLY, read_only)


def _kill_leftover(sandbox_dir: Path) -> None:
    """Kill a QEMU whose pid file is in `sandbox_dir`, if that pid really is that QEMU, and drop
    its socket directory."""
    pid = running_qemu(sandbox_dir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    remove_socket_dir(sandbox_dir)
