"""The `gvisor` runtime: every pod is one runsc sandbox (gVisor, ptrace platform by default).

Layout under ROOT/gvisor/:

    state/                      runsc --root (its .state and .lock files)
    rootfs/<image hex>/         images unpacked once, shared read-only (gvisor_rootfs.py)
    pause/pause                 the pod's root container
    sandboxes/<id>/             bundles (pause/, <container>/), etc/ files, logs/, runsc errors

A pod's root container is a tiny pause process, not its first container: runsc ends the whole
sandbox when the root container's process exits, and a pod's containers must live and die on
their own. Each container joins that sandbox through the CRI annotations runsc understands, with
its own read-only rootfs under a memory overlay. Whatever happens, removing a sandbox kills its
runsc processes and deletes its directory, its runsc state and its cgroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypernetes.runtime import ocispec
from hypernetes.runtime.gvisor_process import SandboxProcess, set_winsize
from hypernetes.runtime.gvisor_rootfs import RootfsError, ensure_pause, ensure_rootfs
from hypernetes.runtime.gvisor_volumes import (
    container_mounts,
    make_volume_dirs,
    private_root,
    refuse_unsupported,
    write_files,
)
from hypernetes.runtime.images import Image, ImageStore
from hypernetes.runtime.interface import (
    ContainerSpec,
    ContainerState,
    ContainerStatus,
    ExecSpec,
    ExitStatus,
    ImagePullFailed,
    PodRuntimeError,
    PodSpec,
    Process,
    Runtime,
    SandboxFailed,
    SandboxState,
    SandboxStatus,
    StartFailed,
    Stream,
    VolumeFile,
)
from hypernetes.runtime.logs import LogWriter
from hypernetes.runtime.prepare import (
    SANDBOX_ID,
    ProcessPlan,
    check_pod,
    container_process,
    exec_process,
    pod_hostname,
    pull_images,
)
from hypernetes.runtime.runsc import RUNSC_FAILED, Runsc, RunscError, decode_exit, last_error
from hypernetes.runtime.sandboxes import (
    SandboxTable,
    check_exited,
    exited,
    lost,
    new_container_instance,
    start_failed,
    started,
)

log = logging.getLogger(__name__)

BOOT_TIMEOUT = 30.0
START_TIMEOUT = 30.0
KILL_TIMEOUT = 10.0
# The sentry, gofers and the in-memory overlays are charged to the pod's cgroup.
SANDBOX_OVERHEAD = 64 * 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")
LOST = "SandboxExited"  # the reason of a container whose sandbox ended under it


@dataclass
class _Container:
    spec: ContainerSpec
    image: Image
    id: str  # runsc's container id: <sandbox>_<name> (sandbox ids have no "_")
    process: ProcessPlan
    status: ContainerStatus
    log: LogWriter
    done: asyncio.Event = field(default_factory=asyncio.Event)
    rootfs: Path = Path()
    main: SandboxProcess | None = None
    tty: int | None = None  # pty master from --console-socket, until started


@dataclass
class _Sandbox:
    pod: PodSpec
    dir: Path
    containers: dict[str, _Container]
    cgroup: str
    mounts: tuple[ocispec.BindMount, ...] = ()  # every container's: /etc/hosts and such
    volumes: dict[str, Path] = field(default_factory=dict)  # volume name -> its host directory
    state: SandboxState = SandboxState.CREATING
    message: str = ""
    created_at: float = field(default_factory=time.time)
    run: asyncio.subprocess.Process | None = None  # `runsc run` of the pause container
    watcher: asyncio.Task[None] | None = None
    execs: set[SandboxProcess] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    calls: int = 0

    def errlog(self, what: str) -> Path:
        self.calls += 1
        return self.dir / "errors" / f"{what}-{self.calls}.json"


class GVisor(SandboxTable[_Sandbox, _Container], Runtime):
    name = "gvisor"

    def __init__(
        self,
        root: Path,
        images: ImageStore,
        *,
        platform: str = "ptrace",
        die_with_parent: bool = False,
        ignore_cgroups: bool = False,
    ) -> None:
        self.root = root / "gvisor"
        self.images = images
        self.runsc = Runsc(self.root / "state", platform, ignore_cgroups)
        self._die_with_parent = die_with_parent
        self._cgroups = not ignore_cgroups
        # Pods of two runtimes on one host (tests, benchmarks) must not share cgroup names.
        self._cgroup_prefix = "hypernetes-gvisor-" + hashlib.sha256(str(self.root).encode()).hexdigest()[:8]
        self._sandboxes: dict[str, _Sandbox] = {}

    def cgroup_of(self, sandbox_id: str) -> str:
        # Top level, no shared parent: runsc creates and removes it whole, nothing stays behind.
        return f"/{self._cgroup_prefix}-{sandbox_id}"

    # --- lifecycle -----------------------------------------------------------------------------

    async def create_sandbox(self, pod: PodSpec) -> SandboxStatus:
        if pod.network.tap_fd is not None:
            # Ours to close either way; runsc has no way to take a tap, so the pod gets no NIC
            # (closing the fd makes the tap go away).
            log.warning(
                "sandbox %s: the gvisor runtime cannot use a tap; the pod has no network interface", pod.id
            )
            with contextlib.suppress(OSError):
                os.close(pod.network.tap_fd)
            pod = dataclasses.replace(pod, network=dataclasses.replace(pod.network, tap_fd=None))
        check_pod(pod, self._sandboxes)
        refuse_unsupported(pod)
        if not Runsc.available():
            raise SandboxFailed("runsc not found: install Debian's runsc package")
        images = await pull_images(self.images, pod)
        rootfs = await self._unpack(images)
        pause = await asyncio.to_thread(ensure_pause, self.root)
        processes = {c.name: container_process(pod, c, images[c.name]) for c in pod.containers}

        sandbox_dir = self.root / "sandboxes" / pod.id
        await self._cleanup(pod.id, sandbox_dir)  # a previous crash's leftovers
        sandbox_dir.mkdir(parents=True)
        containers = {
            c.name: _Container(
                c,
                images[c.name],
                f"{pod.id}_{c.name}",
                processes[c.name],
                ContainerStatus(name=c.name, image=c.image, image_id=images[c.name].digest),
                LogWriter(sandbox_dir / "logs" / f"{c.name}.log"),
            )
            for c in pod.containers
        }
        sandbox = _Sandbox(pod, sandbox_dir, containers, self.cgroup_of(pod.id))
        self._sandboxes[pod.id] = sandbox
        try:
            sandbox.mounts = self._etc_files(sandbox)
            sandbox.volumes = await asyncio.to_thread(make_volume_dirs, sandbox_dir / "volumes", pod)
            await self._boot(sandbox, pause)
            for c in containers.values():
                c.rootfs = rootfs[c.image.id]
                await self._create(sandbox, c)
        except BaseException:
            await self._destroy(sandbox)
            raise
        sandbox.state = SandboxState.READY
        sandbox.watcher = asyncio.create_task(self._watch(sandbox))
        return self._status(sandbox)

    async def update_files(self, sandbox_id: str, volume: str, files: tuple[VolumeFile, ...]) -> None:
        """Replace files of a running pod's file volume in its host directory, each atomically
        (a subPath mount of one of its files keeps the old file, as upstream)."""
        sandbox = self._get(sandbox_id)
        if sandbox.state is not SandboxState.READY:
            raise SandboxFailed(f"sandbox is {sandbox.state.value}: {sandbox.message}")
        kinds = {v.name: v.kind for v in sandbox.pod.volumes}
        if kinds.get(volume) != "files":
            raise PodRuntimeError(f"volume {volume!r} is not a file volume of this pod")
        await asyncio.to_thread(write_files, sandbox.volumes[volume], files)

    async def _unpack(self, images: dict[str, Image]) -> dict[str, Path]:
        rootfs: dict[str, Path] = {}
        for image in images.values():
            if image.id not in rootfs:
                try:
                    rootfs[image.id] = await asyncio.to_thread(
                        ensure_rootfs, self.root / "rootfs", image.id, image.disk
                    )
                except RootfsError as e:
                    raise ImagePullFailed(f"image {image.short_id}: {e}") from e
        return rootfs

    def _etc_files(self, sandbox: _Sandbox) -> tuple[ocispec.BindMount, ...]:
        pod, net = sandbox.pod, sandbox.pod.network
        etc = sandbox.dir / "etc"
        etc.mkdir()
        hostname = pod_hostname(pod)
        hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost", f"127.0.1.1\t{hostname}", *net.hosts]
        resolv = [f"nameserver {s}" for s in net.dns_servers]
        if net.dns_search:
            resolv.append("search " + " ".join(net.dns_search))
        if net.dns_options:
            resolv.append("options " + " ".join(net.dns_options))
        files = {"hosts": hosts, "hostname": [hostname], "resolv.conf": resolv}  # rootfs ETC_MOUNTS
        for name, lines in files.items():
            (etc / name).write_text("".join(f"{line}\n" for line in lines))
        return tuple(ocispec.BindMount(etc / name, f"/etc/{name}") for name in files)

    def _write_bundle(self, sandbox: _Sandbox, name: str, spec: dict[str, Any]) -> Path:
        bundle = sandbox.dir / "bundles" / name
        bundle.mkdir(parents=True, exist_ok=True)
        (bundle / "config.json").write_text(json.dumps(spec, indent=1))
        return bundle

    def _resources(self, sandbox: _Sandbox) -> ocispec.Resources:
        """The pod's limits, as a Kubernetes pod cgroup: a resource is capped only if every
        container caps it. runsc also sizes the sandbox's memory from this cgroup."""
        specs = [c.spec for c in sandbox.containers.values()]
        cpu = sum(s.cpu_limit_millis or 0 for s in specs)
        memory = sum(s.memory_limit or 0 for s in specs)
        return ocispec.Resources(
            cpu_millis=cpu if all(s.cpu_limit_millis for s in specs) else None,
            memory=memory + SANDBOX_OVERHEAD if all(s.memory_limit for s in specs) else None,
            cgroups_path=sandbox.cgroup if self._cgroups else None,
        )

    async def _boot(self, sandbox: _Sandbox, pause: Path) -> None:
        pod = sandbox.pod
        spec = ocispec.container(
            ocispec.ContainerConfig(
                root=pause,
                process=ocispec.ProcessConfig(args=("/pause",)),
                hostname=pod_hostname(pod),
                annotations={ocispec.CONTAINER_TYPE: "sandbox", ocispec.SANDBOX_ID: pod.id},
                resources=self._resources(sandbox),
            )
        )
        bundle = self._write_bundle(sandbox, "pause", spec)
        errors = sandbox.errlog("run")
        errors.parent.mkdir(exist_ok=True)
        try:
            # `run` (not create+start) keeps runsc attached: its sandbox gets PDEATHSIG from it,
            # so with die_with_parent the whole pod goes if this process dies.
            sandbox.run = await self.runsc.spawn(
                "run", f"--bundle={bundle}", pod.id, log=errors, die_with_parent=self._die_with_parent
            )
        except RunscError as e:
            raise SandboxFailed(str(e)) from e
        deadline = time.monotonic() + BOOT_TIMEOUT
        while (state := await self.runsc.state_of(pod.id)) != "running":
            if sandbox.run.returncode is not None or state == "stopped":
                await sandbox.run.wait()
                why = last_error(errors) or f"runsc run exited with status {sandbox.run.returncode}"
                raise SandboxFailed(f"the sandbox did not start: {why}")
            if time.monotonic() > deadline:
                raise SandboxFailed(f"the sandbox did not start within {BOOT_TIMEOUT:.0f}s")
            await asyncio.sleep(0.01)

    async def _create(self, sandbox: _Sandbox, c: _Container) -> None:
        mounts = sandbox.mounts + container_mounts(sandbox.volumes, sandbox.pod, c.spec)
        root = await asyncio.to_thread(private_root, c.rootfs, mounts, sandbox.dir / "roots" / c.spec.name)
        spec = ocispec.container(
            ocispec.ContainerConfig(
                root=root,
                process=_oci(c.process),
                hostname=pod_hostname(sandbox.pod),
                annotations={ocispec.CONTAINER_TYPE: "container", ocispec.SANDBOX_ID: sandbox.pod.id},
                mounts=mounts,
            )
        )
        bundle = self._write_bundle(sandbox, c.spec.name, spec)
        args = ["create", f"--bundle={bundle}"]
        with contextlib.ExitStack() as stack:
            console: socket.socket | None = None
            if c.spec.tty:
                # A short path: ROOT may be deeper than a Unix socket path allows.
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hn-gvisor-"))
                console = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
                console.bind(f"{tmp}/console")
                console.listen(1)
                args.append(f"--console-socket={tmp}/console")
            try:
                await self.runsc.call(*args, c.id)
            except RunscError as e:
                raise SandboxFailed(f"container {c.spec.name}: {e}") from e
            if console is not None:
                c.tty = _receive_fd(console)
                set_winsize(c.tty, 24, 80)

    async def _watch(self, sandbox: _Sandbox) -> None:
        """A sandbox that ends on its own (killed, crashed) fails its containers."""
        assert sandbox.run is not None
        code = await sandbox.run.wait()
        if sandbox.state is SandboxState.READY:
            sandbox.state = SandboxState.FAILED
            sandbox.message = f"the sandbox ended unexpectedly (runsc exited with status {code})"
            log.warning("sandbox %s: %s", sandbox.pod.id, sandbox.message)
        for c in sandbox.containers.values():
            self._mark_lost(c, sandbox.message or "the sandbox stopped")

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
        proc = SandboxProcess(self.runsc, c.id, c.log.write, attach)
        errors = sandbox.errlog(f"start-{name}")
        with contextlib.ExitStack() as fds:
            if c.tty is not None:
                stdio: list[int] = [os.open(os.devnull, os.O_RDWR)] * 3
                fds.callback(os.close, stdio[0])
            else:
                stdin_r, stdin_w = os.pipe() if c.spec.stdin else (os.open(os.devnull, os.O_RDONLY), -1)
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                for fd in (stdin_r, out_w, err_w):
                    fds.callback(os.close, fd)
                readers = [(out_r, Stream.STDOUT), (err_r, Stream.STDERR)]
                stdio = [stdin_r, out_w, err_w]
            try:
                runsc = await self.runsc.spawn(
                    "start", c.id, log=errors, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2]
                )
            except RunscError as e:
                code, why = RUNSC_FAILED, str(e)
            else:
                try:
                    code = await asyncio.wait_for(runsc.wait(), START_TIMEOUT)
                    why = last_error(errors) or f"runsc start exited with status {code}"
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        runsc.kill()
                    await runsc.wait()
                    code, why = RUNSC_FAILED, f"runsc start did not finish within {START_TIMEOUT:.0f}s"
        if code != 0:
            if c.tty is None:
                for fd in (out_r, err_r, *([stdin_w] if stdin_w >= 0 else [])):
                    os.close(fd)
            start_failed(c, why)
            raise StartFailed(f"container {name}: {why}", _errno_of(why))
        if c.tty is not None:
            proc.pump(os.dup(c.tty), Stream.STDOUT)
            proc.set_stdin(c.tty if c.spec.stdin else None, tty=c.tty)
            c.tty = None
        else:
            for fd, stream in readers:
                proc.pump(fd, stream)
            proc.set_stdin(stdin_w if stdin_w >= 0 else None)
        c.main = proc
        started(c)
        self._spawn_task(sandbox, self._reap(sandbox, c, proc))
        return proc if attach else None

    async def _reap(self, sandbox: _Sandbox, c: _Container, proc: SandboxProcess) -> None:
        status = ExitStatus()
        try:
            out = await self.runsc.call("wait", c.id, timeout=None)
            status = decode_exit(int(json.loads(out)["exitStatus"]))
        except (RunscError, ValueError, KeyError, TypeError) as e:
            log.debug("container %s: runsc wait: %s", c.id, e)
        await proc.finish(status)
        exited(c, status, LOST, sandbox.message or "the sandbox stopped")

    def _spawn_task(self, sandbox: _Sandbox, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        sandbox.tasks.add(task)
        task.add_done_callback(sandbox.tasks.discard)

    # --- exec ----------------------------------------------------------------------------------

    async def exec(self, sandbox_id: str, container: str, spec: ExecSpec) -> Process:
        sandbox = self._get(sandbox_id)
        c = self._container(sandbox, container)
        if c.status.state is not ContainerState.RUNNING:
            raise PodRuntimeError(f"container {container} is not running")
        pconf = _oci(exec_process(container, c.process, c.image, spec))
        sandbox.calls += 1
        base = sandbox.dir / "exec" / str(sandbox.calls)
        base.mkdir(parents=True)
        (base / "process.json").write_text(json.dumps(ocispec.process(pconf)))
        proc = SandboxProcess(self.runsc, c.id, None, attach=True)
        runsc = await self._spawn_exec(sandbox, c, proc, spec, base)
        proc.pid = await _read_pid(base / "pid", runsc)
        if proc.pid is None:
            with contextlib.suppress(ProcessLookupError):
                runsc.kill()
            await runsc.wait()
            proc.abort()
            why = last_error(base / "errors.json") or f"runsc exec exited with status {runsc.returncode}"
            shutil.rmtree(base, ignore_errors=True)
            raise StartFailed(f"exec in {container}: {why}", _errno_of(why))
        sandbox.execs.add(proc)
        self._spawn_task(sandbox, self._reap_exec(sandbox, proc, runsc, base))
        return proc

    async def _spawn_exec(
        self, sandbox: _Sandbox, c: _Container, proc: SandboxProcess, spec: ExecSpec, base: Path
    ) -> asyncio.subprocess.Process:
        args = ["exec", f"--internal-pid-file={base / 'pid'}", f"--process={base / 'process.json'}", c.id]
        with contextlib.ExitStack() as fds:
            if spec.tty:
                master, slave = os.openpty()
                fds.callback(os.close, slave)
                set_winsize(master, spec.rows, spec.cols)
                stdio = [slave] * 3
                proc.pump(os.dup(master), Stream.STDOUT)
                proc.set_stdin(master if spec.stdin else None, tty=master)
            else:
                stdin_r, stdin_w = os.pipe() if spec.stdin else (os.open(os.devnull, os.O_RDONLY), -1)
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                for fd in (stdin_r, out_w, err_w):
                    fds.callback(os.close, fd)
                stdio = [stdin_r, out_w, err_w]
                proc.pump(out_r, Stream.STDOUT)
                proc.pump(err_r, Stream.STDERR)
                proc.set_stdin(stdin_w if stdin_w >= 0 else None)
            try:
                return await self.runsc.spawn(
                    *args, log=base / "errors.json", stdin=stdio[0], stdout=stdio[1], stderr=stdio[2]
                )
            except RunscError as e:
                proc.abort()
                raise StartFailed(f"exec in {c.spec.name}: {e}") from e

    async def _reap_exec(
        self, sandbox: _Sandbox, proc: SandboxProcess, runsc: asyncio.subprocess.Process, base: Path
    ) -> None:
        code = await runsc.wait()
        await proc.finish(decode_exit(code) if code >= 0 else ExitStatus())
        sandbox.execs.discard(proc)
        shutil.rmtree(base, ignore_errors=True)

    # --- stop and remove -----------------------------------------------------------------------

    async def stop_sandbox(self, sandbox_id: str, grace_seconds: int | None = None) -> None:
        sandbox = self._get(sandbox_id)
        grace = sandbox.pod.termination_grace_seconds if grace_seconds is None else grace_seconds
        was_ready = sandbox.state is SandboxState.READY
        if sandbox.state in (SandboxState.READY, SandboxState.CREATING):
            sandbox.state = SandboxState.STOPPED
        running = [c for c in sandbox.containers.values() if c.status.state is ContainerState.RUNNING]
        if was_ready and running and grace > 0:
            for c in running:
                with contextlib.suppress(RunscError):
                    await self.runsc.kill(c.id, 15)
            waits = [asyncio.create_task(c.done.wait()) for c in running]
            _, pending = await asyncio.wait(waits, timeout=grace)
            for task in pending:
                task.cancel()
        await self._kill(sandbox)
        for c in sandbox.containers.values():
            self._mark_lost(c, "the sandbox was stopped")

    async def _kill(self, sandbox: _Sandbox) -> None:
        """SIGKILL everything, then let runsc delete its containers and the sandbox."""
        running = [c for c in sandbox.containers.values() if c.main is not None and not c.done.is_set()]
        if running and sandbox.run is not None and sandbox.run.returncode is None:
            # Containers first: a `runsc wait` still waiting on one blocks `runsc run` from
            # tearing the sandbox down when the pause container dies (10 s seen).
            for c in running:
                with contextlib.suppress(RunscError):
                    await self.runsc.kill(c.id, 9, all_processes=True)
            await asyncio.wait([asyncio.create_task(c.done.wait()) for c in running], timeout=KILL_TIMEOUT)
        # Sub-containers are deleted before the pause dies: otherwise `runsc run` spends 10 s
        # on them while tearing the sandbox down.
        # ~1.4 s each (runsc polls for the container's end), so all at once.
        await asyncio.gather(*(self.runsc.delete(c.id) for c in sandbox.containers.values()))
        if sandbox.run is not None and sandbox.run.returncode is None:
            with contextlib.suppress(RunscError):
                await self.runsc.kill(sandbox.pod.id, 9)
            try:
                await asyncio.wait_for(sandbox.run.wait(), KILL_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    sandbox.run.kill()
                await sandbox.run.wait()
        await self.runsc.delete(sandbox.pod.id)
        # Containers and execs see EOF or are cut after DRAIN_TIMEOUT by their reapers.
        if sandbox.tasks:
            await asyncio.wait(set(sandbox.tasks), timeout=KILL_TIMEOUT)

    async def remove_sandbox(self, sandbox_id: str) -> None:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            # Nothing known in memory; still clear what a crashed process may have left.
            if SANDBOX_ID.match(sandbox_id):
                await self._cleanup(sandbox_id, self.root / "sandboxes" / sandbox_id)
            return
        if sandbox.state is not SandboxState.STOPPED or (sandbox.run and sandbox.run.returncode is None):
            await self.stop_sandbox(sandbox_id, grace_seconds=0)
        await self._destroy(sandbox)

    async def _destroy(self, sandbox: _Sandbox) -> None:
        sandbox.state = SandboxState.STOPPED if sandbox.state is not SandboxState.FAILED else sandbox.state
        await self._kill(sandbox)
        if sandbox.watcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await sandbox.watcher
        for task in list(sandbox.tasks):
            task.cancel()
        await asyncio.gather(*sandbox.tasks, return_exceptions=True)
        for proc in list(sandbox.execs):
            proc.abort()
        for c in sandbox.containers.values():
            if c.main is not None:
                c.main.abort()
            if c.tty is not None:
                os.close(c.tty)
                c.tty = None
            c.log.close()
            c.done.set()
        await self._cleanup(sandbox.pod.id, sandbox.dir)
        self._sandboxes.pop(sandbox.pod.id, None)

    async def _cleanup(self, sandbox_id: str, sandbox_dir: Path) -> None:
        """Remove whatever runsc and we made for this sandbox id, known to us or not."""
        state = self.runsc.state
        suffix = f"_sandbox:{sandbox_id}.state"
        ids = [p.name[: -len(suffix)] for p in state.glob(f"*{suffix}")] if state.is_dir() else []
        for cid in sorted(ids, key=lambda i: i == sandbox_id):  # the sandbox's root last
            await self.runsc.delete(cid)
        _kill_leftovers(sandbox_dir)
        for p in state.glob(f"*_sandbox:{sandbox_id}.*") if state.is_dir() else []:
            p.unlink(missing_ok=True)
        _remove_cgroup(self.cgroup_of(sandbox_id))
        shutil.rmtree(sandbox_dir, ignore_errors=True)

    # --- a node agent restart ------------------------------------------------------------------

    async def adopt(self) -> list[SandboxStatus]:
        """Clear every sandbox an earlier process left, running or not, and adopt none.

        A gVisor sandbox cannot be taken over: its containers' stdio are pipes (or a pty) that
        only the process which started them held, and runsc keeps no shim that could hand them
        on. Its pods are re-created by the node agent from the API's state, as upstream's
        kubelet does with containers whose runtime lost them.
        """
        ids: set[str] = set()
        sandboxes = self.root / "sandboxes"
        if sandboxes.is_dir():
            ids.update(d.name for d in sandboxes.iterdir())
        if self.runsc.state.is_dir():
            ids.update(
                p.name.rsplit("_sandbox:", 1)[1].rsplit(".", 1)[0]
                for p in self.runsc.state.glob("*_sandbox:*")
            )
        for sandbox_id in sorted(ids - set(self._sandboxes)):
            if SANDBOX_ID.match(sandbox_id):
                log.info(
                    "clearing sandbox %s left by an earlier process (gVisor sandboxes are not adopted)",
                    sandbox_id,
                )
                await self._cleanup(sandbox_id, sandboxes / sandbox_id)
        return []

    async def detach_all(self) -> None:
        """Let go of every sandbox without stopping it: its processes run on (without anyone
        reading their output, or until `die_with_parent` takes them with this process) until
        the next `adopt` clears them."""
        for sandbox in list(self._sandboxes.values()):
            tasks = [t for t in (sandbox.watcher, *sandbox.tasks) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for proc in list(sandbox.execs):
                proc.abort()
            for c in sandbox.containers.values():
                if c.main is not None:
                    c.main.abort()
                if c.tty is not None:
                    os.close(c.tty)
                    c.tty = None
                c.log.close()
        self._sandboxes.clear()

    # --- queries -------------------------------------------------------------------------------

    async def signal_container(self, sandbox_id: str, name: str, signum: int) -> None:
        c = self._container(self._get(sandbox_id), name)
        if c.main is None or c.status.state is not ContainerState.RUNNING:
            raise PodRuntimeError(f"container {name} is not running")
        try:
            await c.main.signal(signum)
        except RunscError as e:
            raise PodRuntimeError(f"signal {signum} to {name}: {e}") from e

    async def restart_container(self, sandbox_id: str, name: str) -> None:
        """runsc deletes the exited container and creates it again from its bundle: a new
        memory overlay over the same rootfs, so nothing written by the last instance stays."""
        sandbox = self._get(sandbox_id)
        c = self._container(sandbox, name)
        check_exited(c)
        if sandbox.state is not SandboxState.READY:
            raise SandboxFailed(f"sandbox is {sandbox.state.value}: {sandbox.message}")
        await self.runsc.delete(c.id)
        new_container_instance(c)
        c.main = None
        await self._create(sandbox, c)
        await self.start_container(sandbox_id, name)


def _oci(plan: ProcessPlan) -> ocispec.ProcessConfig:
    """The OCI form of a process (stdin is wired by the runtime, not in the spec)."""
    return ocispec.ProcessConfig(
        args=plan.args,
        env=plan.env,
        cwd=plan.cwd,
        uid=plan.uid,
        gid=plan.gid,
        groups=plan.groups,
        terminal=plan.terminal,
        rows=plan.rows,
        cols=plan.cols,
    )


_ERRNOS = {
    "no such file or directory": errno.ENOENT,
    "permission denied": errno.EACCES,
    "exec format error": errno.ENOEXEC,
    "not a directory": errno.ENOTDIR,
}


def _errno_of(message: str) -> int:
    """runsc reports a failed exec as text ("failed to load X: no such file or directory");
    the CLI and node agent want the errno (ENOENT = command not found)."""
    tail = message.rsplit(": ", 1)[-1].strip().lower()
    return _ERRNOS.get(tail, 0)


async def _read_pid(path: Path, runsc: asyncio.subprocess.Process) -> int | None:
    """The pid `runsc exec` writes once the process runs; None if runsc ended without one."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        ended = runsc.returncode is not None
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text())  # empty while runsc is still writing it
        if ended or time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.005)


def _receive_fd(console: socket.socket) -> int:
    """The pty master runsc sent over the console socket during `runsc create`."""
    console.settimeout(5.0)
    try:
        conn, _ = console.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    except OSError as e:
        raise SandboxFailed(f"no terminal from runsc: {e}") from e
    if not fds:
        raise SandboxFailed("no terminal from runsc: nothing received on the console socket")
    return fds[0]


def runsc_processes_under(path: Path) -> list[int]:
    """Pids of runsc processes (runsc, runsc-gofer, runsc-sandbox) whose command line mentions `path`."""
    found = []
    needle = str(path).encode() + b"/"
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"runsc") and needle in cmdline:
            found.append(int(proc.name))
    return found


def _kill_leftovers(sandbox_dir: Path) -> None:
    # Bundles, logs and exec specs live under the sandbox dir: every runsc process of this pod
    # but `runsc wait` (which ends with the sandbox) names it on its command line.
    for pid in runsc_processes_under(sandbox_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 9)


def _remove_cgroup(path: str) -> None:
    """runsc removes its cgroups on delete; after a crash they may stay (empty) behind."""
    if not CGROUP_ROOT.is_dir():
        return
    for controller in CGROUP_ROOT.iterdir():
        with contextlib.suppress(OSError):
            (controller / path.lstrip("/")).rmdir()
