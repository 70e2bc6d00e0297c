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
import shutil
import signal
import time
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
from hypernetes.runtime.cgroups import cgroup_name
from hypernetes.runtime.confine import ConfineError, Confiner
from hypernetes.runtime.disks import (
    RBD_DIR,
    VOLUME_DISK,
    VolumeDisks,
    block_disks,
    check_disk_count,
    image_disks,
    rbd_files,
    remove_made_disks,
    scratch_disk,
    scratch_volumes,
)
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
from hypernetes.runtime.images import Image, ImageStore
from hypernetes.runtime.interface import (
    ContainerSpec,
    ContainerState,
    ContainerStatus,
    DeviceSpec,
    ExecSpec,
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
    Usage,
    VolumeFile,
    VolumeSpec,
)
from hypernetes.runtime.jail import Jail, JailError, rbd_binds
from hypernetes.runtime.kernels import Kernel, KernelError, KernelRegistry
from hypernetes.runtime.logs import LogWriter
from hypernetes.runtime.paths import private_dir
from hypernetes.runtime.prepare import (
    SANDBOX_ID,
    ProcessPlan,
    check_pod,
    container_process,
    exec_process,
    pod_hostname,
    pull_images,
)
from hypernetes.runtime.qemu import (
    JAIL_RAM,
    JAIL_RBD,
    MAC,
    Nic,
    QemuVM,
    VMConfig,
    qemu_binary,
    remove_socket_dir,
    run_dir,
    running_qemu,
    vhost_usable,
)
from hypernetes.runtime.sandboxes import (
    SandboxTable,
    check_exited,
    exited,
    lost,
    new_container_instance,
    start_failed,
    started,
)
from hypernetes.runtime.sizing import vm_size
from hypernetes.runtime.templates import (
    Shape,
    Template,
    TemplateError,
    TemplateStore,
    clone_config,
    start_shapes,
)
from hypernetes.runtime.templates import restore as restore_clone
from hypernetes.runtime.usage import vm_usage

log = logging.getLogger(__name__)

BOOT_TIMEOUT_TCG = 90.0  # a loaded 2-core host under TCG needs this much, rarely
BOOT_TIMEOUT_KVM = 20.0
START_TIMEOUT = 60.0
SHUTDOWN_MARGIN = 15.0  # beyond the grace period, for sync and power-off
KILL_TIMEOUT = 10.0  # QMP quit, then SIGKILL, must have ended QEMU by then
LOST = "VMExited"  # the reason of a container whose VM ended under it
FILES_BATCH = 512 * 1024  # file bytes per WRITE_FILES, well under the protocol's payload limit
FILES_MAX_FILE = gp.PROTO_MAX_PAYLOAD - 64 * 1024  # one file in one frame, with room for its path


@dataclass
class _Container:
    spec: ContainerSpec
    image: Image
    process: ProcessPlan
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
    volume_disks: VolumeDisks = field(default_factory=dict)


class HyperVM(SandboxTable[_Sandbox, _Container], Runtime):
    name = "hypervm"

    def __init__(
        self,
        root: Path,
        images: ImageStore,
        kernels: KernelRegistry,
        accel: str | None = None,
        die_with_parent: bool = False,
        confine: bool | None = None,
        templates: TemplateStore | None = None,
        template_scope: str = "namespace",
        prepare_templates: bool | None = None,
    ) -> None:
        """`confine`: give each VM its own uid, jail and cgroup (`confine.py`); None = when
        this process may (root), False = never (every QEMU runs as this process, unconfined).
        `templates`: start VMs as clones of templates (`templates.py`), else every VM boots
        cold; `template_scope`: "namespace" (a template serves one namespace's pods) or "node";
        `prepare_templates`: when the node starts (`adopt`), build its start shapes' templates
        in the background, the default pod's with a NIC (True) or without (False); None: not."""
        self.root = root / "hypervm"
        self.images = images
        self.kernels = kernels
        self._accel_override = accel
        self._accel: str | None = None
        self._die_with_parent = die_with_parent
        self._sandboxes: dict[str, _Sandbox] = {}
        self._confiner = Confiner(enabled=confine)
        if template_scope not in ("namespace", "node"):
            raise ValueError(f"template scope {template_scope!r}: expected namespace or node")
        self.templates = templates
        self._template_scope = template_scope
        self._prepare_templates = prepare_templates
        self.preparing: asyncio.Task[int] | None = None
        if templates is not None:
            templates.confine = _TemplateConfine(self._confiner)

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
        check_pod(pod, self._sandboxes)
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
        images = await pull_images(self.images, pod)
        disks = image_disks(images.values())
        containers = {
            c.name: self._prepare(pod, c, images[c.name], disks[images[c.name].id].serial)
            for c in pod.containers
        }

        volume_disks, pv_disks = block_disks(pod)
        scratch = scratch_volumes(pod)
        check_disk_count(len(disks), len(pv_disks), bool(scratch), kernel.acpi, nics)
        sandbox_dir = self.root / pod.id
        shutil.rmtree(sandbox_dir, ignore_errors=True)
        private_dir(self.root)
        private_dir(sandbox_dir)  # the pod's disks, state (its env) and logs: its tenant's only
        disks.update((d.serial, d) for d in pv_disks)
        if scratch:
            try:
                disk, partitions = await scratch_disk(sandbox_dir, scratch)
            except SandboxFailed:
                shutil.rmtree(sandbox_dir, ignore_errors=True)
                raise
            disks[disk.serial] = disk
            volume_disks.update(partitions)
        for c in containers.values():
            c.log = LogWriter(sandbox_dir / "logs" / f"{c.spec.name}.log")
        accel = await self.accel()
        nic = None
        if tap.fd is not None and pod.network.mac:
            nic = Nic(tap.fd, pod.network.mac, vhost=vhost_usable(accel))
        cfg = VMConfig(
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
        )
        template = self._template_for(pod, cfg, kernel.name)
        try:
            cfg.jail = await asyncio.to_thread(
                self._confiner.prepare,
                pod.id,
                sandbox_dir,
                pod.containers,
                size,
                kernel.image,
                kernel.initrd,
                accel,
                self._die_with_parent,
                template_ram=template.ram if template is not None else None,
                overhead=(pod.overhead_millicpu, pod.overhead_memory),
            )
        except ConfineError as e:
            shutil.rmtree(sandbox_dir, ignore_errors=True)
            raise SandboxFailed(f"cannot confine the VM: {e}") from e
        if any(d.rbd_image for d in cfg.disks):
            try:
                self._rbd_jail(cfg, pod, sandbox_dir)
            except (OSError, JailError) as e:
                await asyncio.to_thread(self._confiner.release, pod.id, sandbox_dir)
                shutil.rmtree(sandbox_dir, ignore_errors=True)
                raise SandboxFailed(f"cannot prepare the RBD volumes: {e}") from e
        vm = QemuVM(cfg)
        client = AgentClient(f"agent-{pod.id}")
        sandbox = _Sandbox(pod, sandbox_dir, vm, client, containers, volume_disks=volume_disks)
        self._sandboxes[pod.id] = sandbox
        warnings: tuple[tuple[str, str], ...] = ()
        try:
            if template is not None:
                if failed := await self._boot_clone(sandbox, template, accel, tap):
                    warnings = (("TemplateRestoreFailed", failed),)
            else:
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
        return dataclasses.replace(self._status(sandbox), warnings=warnings)

    @staticmethod
    def _rbd_jail(cfg: VMConfig, pod: PodSpec, sandbox_dir: Path) -> None:
        """RBD disks: their client conf and key files (readable by the VM's uid only), bound into
        the jail with QEMU's rbd module and libraries; the jail keeps the node's network, which
        QEMU needs to reach Ceph (docs/volumes.md, "Ceph RBD")."""
        cfg.disks = rbd_files(sandbox_dir, pod, cfg.disks, cfg.jail.uid if cfg.jail else None)
        if cfg.jail is not None:
            have = {b.target for b in cfg.jail.binds}
            more = rbd_binds(qemu_binary(), sandbox_dir / RBD_DIR, JAIL_RBD)
            binds = [b for b in more if b.target not in have]
            cfg.jail = dataclasses.replace(cfg.jail, binds=(*cfg.jail.binds, *binds), host_network=True)

    def _prepare(self, pod: PodSpec, spec: ContainerSpec, image: Image, serial: str) -> _Container:
        process = container_process(pod, spec, image)
        status = ContainerStatus(name=spec.name, image=spec.image, image_id=image.digest)
        return _Container(spec, image, process, serial, status, log=None)  # type: ignore[arg-type]

    def _template_for(self, pod: PodSpec, cfg: VMConfig, kernel: str) -> Template | None:
        """The template this VM can be a clone of (a build starts on a shape's first use)."""
        if self.templates is None:
            return None
        scope = pod.namespace if self._template_scope == "namespace" else ""
        return self.templates.get(Shape.of(cfg, scope), kernel)

    async def prepare_templates(self, nic: bool) -> int:
        """Build the missing templates of the node's start shapes (`templates.start_shapes`),
        one at a time; the scopes of the default pod's shape: the node's, or the namespaces
        of the pods it runs. How many were built."""
        if self.templates is None:
            return 0
        scopes = (
            [""] if self._template_scope == "node" else [s.pod.namespace for s in self._sandboxes.values()]
        )
        shapes = start_shapes(self.templates, self.kernels, await self.accel(), scopes, nic)
        return await self.templates.prepare(shapes)

    async def _boot_clone(self, sandbox: _Sandbox, template: Template, accel: str, tap: _HandedFd) -> str:
        """Start the VM as a clone of `template`; if that fails, boot it cold (and drop the
        template, rebuilt on next use) and say why: "" when the clone started."""
        cold = sandbox.vm.cfg
        try:
            clone = clone_config(template, cold)
        except (TemplateError, OSError) as e:
            clone = None
            reason = str(e)
        if clone is not None:
            sandbox.vm = QemuVM(clone)
            try:
                await self._boot(sandbox, None, accel, tap, restore=True)
                tap.close()
                return ""
            except SandboxFailed as e:
                reason = str(e)
            finally:
                assert clone.incoming_fd is not None
                with contextlib.suppress(OSError):
                    os.close(clone.incoming_fd)
            await sandbox.client.close("restore failed")
            await self._kill(sandbox)
            remove_socket_dir(cold.dir)
        log.warning(
            "sandbox %s: restore from template %s failed, booting cold: %s",
            sandbox.pod.id,
            template.key[:12],
            reason,
        )
        assert self.templates is not None
        self.templates.discard(template, reason)
        if cold.jail is not None:  # the template's RAM file may be gone: not bound any more
            binds = tuple(b for b in cold.jail.binds if b.target != JAIL_RAM)
            cold.jail = dataclasses.replace(cold.jail, binds=binds)
        sandbox.vm = QemuVM(cold)
        sandbox.client = AgentClient(f"agent-{sandbox.pod.id}")
        await self._boot(sandbox, None, accel, tap)
        return f"Restoring the VM from template {template.key[:12]} failed, booted cold instead: {reason}"

    async def _boot(
        self, sandbox: _Sandbox, kernel: Kernel | None, accel: str, tap: _HandedFd, restore: bool = False
    ) -> None:
        vm, client, pod = sandbox.vm, sandbox.client, sandbox.pod
        try:
            await vm.start()
        except OSError as e:
            raise SandboxFailed(f"cannot start QEMU: {e}") from e
        if not restore:
            tap.close()  # QEMU has its copy: the tap now goes away with the QEMU process
        timeout = BOOT_TIMEOUT_KVM if accel == "kvm" else BOOT_TIMEOUT_TCG
        try:
            if restore:
                await restore_clone(vm)
            await client.connect(str(vm.cfg.ctl_socket), timeout, vm.alive)
            net = pod.network
            setup = gp.TLV().add_str(gp.TAG_HOSTNAME, pod_hostname(pod))
            if restore:  # the guest probed the template's empty placeholder disks: re-probe
                setup.add_bool(gp.TAG_RESTORED, True)
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
        except TemplateError as e:
            raise SandboxFailed(f"cannot restore the VM from its template: {e}") from e
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
        if {v.name: v.kind for v in sandbox.pod.volumes}.get(volume) != "files":
            raise PodRuntimeError(f"volume {volume!r} is not a file volume of this pod")
        if any(d.serial == VOLUME_DISK for d in sandbox.vm.cfg.disks):
            raise PodRuntimeError(
                f"volume {volume} is on a read-only disk (a VM started by an older "
                "version): its files cannot change"
            )
        await self._write_files(sandbox, volume, files)

    async def resize_block(self, sandbox_id: str, volume: str, size: int) -> None:
        """QMP block_resize of a running VM's RBD disk: QEMU sets the image to that size (already
        grown by the control plane: no change) and raises virtio-blk's config-change interrupt;
        then the guest grows the volume's filesystem online (GROW_FS), as kubelet's
        NodeExpandVolume does."""
        sandbox = self._get(sandbox_id)
        serial = sandbox.volume_disks.get(volume, ("", 0))[0]
        index = next(
            (i for i, d in enumerate(sandbox.vm.cfg.disks) if d.serial == serial and d.rbd_image), None
        )
        if index is None:
            raise PodRuntimeError(f"volume {volume!r} is not an RBD volume of this pod")
        try:
            await sandbox.vm.qmp("block_resize", {"node-name": f"disk{index}", "size": size}, timeout=60)
        except Exception as e:  # QMP errors, a VM gone meanwhile
            raise PodRuntimeError(f"cannot resize volume {volume}: {e}") from e
        spec = next((v for v in sandbox.pod.volumes if v.name == volume), None)
        if spec is None or spec.block is None or not spec.block.fs_type:
            return  # a raw block volume: the device is all there is
        tlv = gp.TLV().add_str(gp.TAG_SOURCE, serial).add_u64(gp.TAG_SIZE_LIMIT, size)
        try:
            await sandbox.client.request(gp.MSG_GROW_FS, tlv)
        except AgentError as e:
            if e.errno != errno.ENOENT:  # not mounted yet: it is grown when a container mounts it
                raise PodRuntimeError(f"volume {volume}: the guest could not grow its filesystem: {e}") from e
        except AgentUnavailable as e:
            raise SandboxFailed(self._explain(sandbox, str(e))) from e

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
        if c.main is None:  # a started container's reaper says how it ended
            lost(c, LOST, message)

    async def start_container(self, sandbox_id: str, name: str, attach: bool = False) -> Process | None:
        sandbox = self._get(sandbox_id)
        c = self._container(sandbox, name)
        if c.status.state is not ContainerState.CREATED:
            raise PodRuntimeError(f"container {name} was already started")
        if sandbox.state is not SandboxState.READY:
            raise SandboxFailed(f"sandbox is {sandbox.state.value}: {sandbox.message}")
        proc = sandbox.client.new_process(c.log.write, attach, c.spec.stdin)
        tlv = gp.TLV().add_str(gp.TAG_CONTAINER_ID, name).add_str(gp.TAG_IMAGE_DISK, c.disk_serial)
        tlv.add_tlv(gp.TAG_PROCESS, _wire(c.process).encode(proc.id))
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
            start_failed(c, str(e))
            raise StartFailed(f"container {name}: {e}", e.errno) from e
        except AgentUnavailable as e:
            raise SandboxFailed(self._explain(sandbox, str(e))) from e
        c.main = proc
        started(c, proc.pid)
        c.reaper = asyncio.create_task(self._reap(sandbox, c, proc))
        self._save(sandbox)
        return proc if attach else None

    async def _reap(self, sandbox: _Sandbox, c: _Container, proc: GuestProcess) -> None:
        status = await proc.wait()
        # With neither code nor signal, the channel dropped before the guest said how the
        # process ended: the VM is probably going down; report it with why, not a bare "ready".
        if status.code is None and status.signal is None and await sandbox.vm.wait(5.0):
            self._vm_ended(sandbox)
        exited(c, status, LOST, sandbox.message or proc.client.disconnect_reason)
        if sandbox.state is SandboxState.READY:
            self._save(sandbox)

    async def exec(self, sandbox_id: str, container: str, spec: ExecSpec) -> Process:
        sandbox = self._get(sandbox_id)
        c = self._container(sandbox, container)
        if c.status.state is not ContainerState.RUNNING:
            raise PodRuntimeError(f"container {container} is not running")
        pspec = _wire(exec_process(container, c.process, c.image, spec))
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
        remove_made_disks(sandbox.dir)
        remove_socket_dir(sandbox.dir)
        with contextlib.suppress(*ConfineError):  # no cgroup nor uid held for a VM that is gone
            await asyncio.to_thread(self._confiner.release, sandbox_id, sandbox.dir)
        self._save(sandbox)

    async def usage(self, sandbox_id: str) -> Usage | None:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None or not sandbox.vm.alive():
            return None
        name = cgroup_name(sandbox_id, sandbox.dir)
        return await asyncio.to_thread(vm_usage, self._confiner.cgroups, name, sandbox.vm.pid)

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
        if self._prepare_templates is not None and self.templates is not None and self.preparing is None:
            self.preparing = asyncio.create_task(self._prepare_in_background(self._prepare_templates))
        return adopted

    async def _prepare_in_background(self, nic: bool) -> int:
        try:
            return await self.prepare_templates(nic)
        except (KernelError, OSError) as e:  # no kernel yet: pods cannot start either
            log.warning("templates not prepared at start: %s", e)
            return 0

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
            proc_spec = _plan_from_dict(rec["process"])
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
            proc_spec = _plan_from_dict(rec["process"])
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
        if self.preparing is not None:  # a template build under way: its VM dies with us anyway
            self.preparing.cancel()
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
        check_exited(c)
        try:
            await sandbox.client.request(gp.MSG_REMOVE, gp.TLV().add_str(gp.TAG_CONTAINER_ID, name))
        except AgentError as e:
            log.info("remove of exited container %s: %s", name, e)  # it may never have started
        except AgentUnavailable as e:
            raise SandboxFailed(self._explain(sandbox, str(e))) from e
        new_container_instance(c)
        c.main = None
        await self.start_container(sandbox_id, name)


def _wire(plan: ProcessPlan) -> ProcessSpec:
    """The guest protocol's form of a process."""
    return ProcessSpec(**{**dataclasses.asdict(plan), "args": list(plan.args), "env": list(plan.env)})


def _plan_from_dict(data: dict[str, Any]) -> ProcessPlan:
    """A process kept in state.json (JSON lists where the plan has tuples)."""
    seqs = ("args", "env", "groups")
    fields: dict[str, Any] = {k: tuple(v) if k in seqs else v for k, v in data.items()}
    return ProcessPlan(**fields)


class _TemplateConfine:
    """A template's QEMU jailed as a pod's (its own uid, chroot, no capabilities), no cgroup."""

    def __init__(self, confiner: Confiner) -> None:
        self._confiner = confiner

    async def jail(self, name: str, directory: Path, shape: Shape, ram: Path) -> Jail | None:
        try:
            return await asyncio.to_thread(
                self._confiner.prepare,
                name,
                directory,
                (),
                vm_size(()),
                shape.kernel,
                shape.initrd,
                shape.accel,
                True,
                cgroup=False,
                template_ram=ram,
            )
        except ConfineError as e:
            raise TemplateError(f"cannot confine the template VM: {e}") from e

    async def release(self, name: str, directory: Path) -> None:
        with contextlib.suppress(*ConfineError):
            await asyncio.to_thread(self._confiner.release, name, directory)


class _HandedFd:
    """An fd the caller handed over (the pod's tap): closed exactly once, whoever gets there first."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


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
