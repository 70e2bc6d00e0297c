"""One pod on this node, from bound to gone: the kubelet's pod worker, for VM pods.

Makes (or grows) the pod's persistent volumes' disks, creates the sandbox, starts containers,
restarts them per restartPolicy with back-off, runs probes, reports status and events, and on
deletion stops the VM with the grace period and then finalizes the Pod object. Everything it says
about the pod goes through `NodeAPI`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import astuple, dataclass, replace
from typing import Any, Protocol

from hypernetes.asyncwait import wait_event
from hypernetes.node.network import NetworkNotReady, PodNetworks, pod_address
from hypernetes.node.podspec import (
    CLUSTER_KINDS,
    PV_KIND,
    PVC_KIND,
    TOKEN_KIND,
    ClaimDisk,
    ConfigError,
    VolumeConfigError,
    claim_disks,
    claim_volume_names,
    pod_spec,
    rbd_secrets,
    referenced_objects,
    sandbox_id,
    storage_size,
)
from hypernetes.node.podstatus import (
    TERMINAL_PHASES,
    ContainerRecord,
    container_status,
    pod_phase,
    pod_status,
    terminated_state,
)
from hypernetes.node.probes import ProbeRunner
from hypernetes.objects import Obj
from hypernetes.runtime.interface import (
    ContainerState,
    ImagePullFailed,
    PodRuntimeError,
    PodSpec,
    Runtime,
    SandboxFailed,
    SandboxNotFound,
    StartFailed,
)
from hypernetes.volumes.local import LocalVolumes, VolumeError, align
from hypernetes.volumes.rbd import RbdVolumes
from hypernetes.volumes.rbd_objects import RBD_DRIVER, credentials_from_secret

log = logging.getLogger(__name__)
Objects = dict[tuple[str, str, str], Obj]  # (kind, namespace or "", name) -> object

BACKOFF_START = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0  # running this long forgives earlier crashes, as kubelet does
CONFIG_RETRY = 10.0
RBD_RESIZE_POLL = 5.0  # how often a pod with claims reads its PVs for a live-grown RBD image
# A runtime that does not stop a sandbox within its grace period plus this is not waited for: the
# sandbox is removed (its VM killed) and the pod finalized all the same.
STOP_MARGIN = 30.0
# A projected service-account token is replaced in the VM once this much of its lifetime has
# passed (the kubelet's token manager); a failed refresh is retried with the usual back-off.
TOKEN_REFRESH = 0.8
DEFAULT_TOKEN_SECONDS = 3600  # a serviceAccountToken source without expirationSeconds


class NodeAPI(Protocol):
    """What a pod worker needs from the API server."""

    async def lookup(self, kind: str, namespace: str, name: str) -> Obj | None: ...

    async def service_account_token(self, pod: Obj, expiration: int, audience: str) -> str | None:
        """A token of the pod's service account bound to the pod (TokenRequest), or None."""

    async def update_pod_status(self, pod: Obj, status: Obj) -> Obj | None:
        """Write pods/status; return the updated pod, or None if it is gone."""

    async def event(self, pod: Obj, type_: str, reason: str, message: str) -> None: ...

    async def finalize_pod(self, pod: Obj) -> None:
        """Delete the pod object for good (grace 0, uid precondition): its VM is gone."""

    async def claim_resized(self, namespace: str, name: str, capacity: str) -> None:
        """The claim's filesystem has grown to its PV's capacity: set status.capacity and drop
        FileSystemResizePending (what kubelet does after NodeExpandVolume)."""


class MultiAttachError(VolumeConfigError):
    event = "FailedAttachVolume"


class VolumeUsers:
    """Which pods on this node hold which claims (`namespace/name`), read-only or not. A disk is
    attached read-write to one VM at a time: two guest kernels writing one ext4 would corrupt
    it (pods sharing a volume upstream share one kernel's mount; ours are separate VMs). Shared by
    the node's pod workers and its PV reclaimer, from the event loop only, so that a check and
    what it allows happen with no await between them."""

    def __init__(self) -> None:
        self._holders: dict[str, dict[str, tuple[bool, str]]] = {}  # claim -> pod uid -> (ro, name)
        # uids of PVs whose disk is being (or was) deleted here: never made again by a late pod
        self._deleted: set[str] = set()

    def acquire(self, uid: str, pod: str, disks: list[ClaimDisk]) -> None:
        """Hold all of the pod's claims, or none (MultiAttachError)."""
        for d in disks:
            if d.pv_uid in self._deleted:
                raise VolumeConfigError(f'volume "{d.volume}": persistentvolume "{d.pv}" is being deleted')
            others = {u: h for u, h in self._holders.get(d.key, {}).items() if u != uid}
            if others and not (d.read_only and all(ro for ro, _ in others.values())):
                names = ", ".join(sorted(name for _, name in others.values()))
                raise MultiAttachError(
                    f'Multi-Attach error for volume "{d.pv}": volume is already used by pod(s) {names}; '
                    "a local volume is attached read-write to one pod VM at a time"
                )
        self.hold(uid, pod, {d.key: d.read_only for d in disks})

    def hold(self, uid: str, pod: str, claims: dict[str, bool]) -> None:
        for key, ro in claims.items():
            self._holders.setdefault(key, {})[uid] = (ro, pod)

    def release(self, uid: str) -> None:
        for key in list(self._holders):
            self._holders[key].pop(uid, None)
            if not self._holders[key]:
                del self._holders[key]

    def users(self, key: str) -> list[str]:
        return sorted(name for _, name in self._holders.get(key, {}).values())

    def sole(self, key: str, uid: str) -> bool:
        return set(self._holders.get(key, {})) <= {uid}

    def begin_delete(self, claim: str | None, pv_uid: str) -> bool:
        """May the disk of a PV bound to `claim` be deleted now? Not while a pod here holds the
        claim; once allowed, no pod may make that PV's disk again."""
        if claim is not None and self._holders.get(claim):
            return False
        self._deleted.add(pv_uid)
        return True


@dataclass
class _Backoff:
    delay: float = 0.0
    last_start: float = 0.0

    def next(self) -> float:
        if self.last_start and time.monotonic() - self.last_start > BACKOFF_RESET:
            self.delay = 0.0
        self.delay = BACKOFF_START if not self.delay else min(self.delay * 2, BACKOFF_MAX)
        return self.delay


class PodWorker:
    def __init__(
        self,
        pod: Obj,
        runtime: Runtime,
        api: NodeAPI,
        host_ip: str,
        volumes: LocalVolumes | None = None,
        users: VolumeUsers | None = None,
        networks: PodNetworks | None = None,
        token_refresh: float = TOKEN_REFRESH,
    ) -> None:
        """`networks`: this node's tenant networks; without it the VM has no network interface.
        `token_refresh`: the fraction of a projected token's lifetime after which it is replaced."""
        self.pod = pod
        self.networks = networks
        self.pod_ip: str | None = None
        self.runtime = runtime
        self.api = api
        self.host_ip = host_ip
        self.volumes = volumes
        self.users = users if users is not None else VolumeUsers()
        self.id = sandbox_id(pod)
        self.changed = asyncio.Event()
        containers = (pod.get("spec") or {}).get("containers") or []
        self.records = {c["name"]: ContainerRecord(c["name"], c["image"]) for c in containers}
        self.backoff = {c["name"]: _Backoff() for c in containers}
        self.sandbox_ready = False
        self.start_time: float | None = None
        self.message = ""
        self._last_status: Obj | None = None
        self._written_rv = 0  # resourceVersion of our last status write
        self.probes: ProbeRunner | None = None
        self._restarts: set[asyncio.Task[None]] = set()
        self._handled: set[str] = set()  # containers whose current instance's exit was acted on
        self._spec_key = _spec_key(pod)
        self._stopped = False  # the sandbox of a finished pod was stopped
        self.token_refresh = token_refresh
        self._tokens: asyncio.Task[None] | None = None
        self._rbd_resize: asyncio.Task[None] | None = None

    # --- inputs ----------------------------------------------------------------------------------

    def update(self, pod: Obj) -> None:
        self.pod = pod
        self._spec_key = _spec_key(pod)
        if self._last_status is not None and _overwritten(pod, self._last_status, self._written_rv):
            # someone else changed our status (the node lifecycle controller marks pods not Ready
            # while their node is unreachable): post ours again, as the kubelet's status manager does
            self._last_status = None
        self.changed.set()

    @property
    def deleting(self) -> bool:
        return bool(self.pod["metadata"].get("deletionTimestamp"))

    @property
    def holds_resources(self) -> bool:
        """Counted in the node's admission: its VM runs or will (a finished pod's is stopped)."""
        return not self._stopped and (self.pod.get("status") or {}).get("phase") not in TERMINAL_PHASES

    @property
    def name(self) -> str:
        return f"{self.pod['metadata'].get('namespace')}/{self.pod['metadata']['name']}"

    # --- the worker --------------------------------------------------------------------------------

    async def run(self) -> None:
        await self._guarded(self._run())

    async def _run(self) -> None:
        if await self._create():
            await self._supervise()

    async def adopt(self) -> None:
        """Continue a pod whose sandbox survived a node agent restart. (The agent has noted the
        claims it holds: `VolumeUsers.hold`.)"""
        status = await self.runtime.status(self.id)
        self.sandbox_ready = True
        self.start_time = status.created_at
        if self.networks is not None and (addr := pod_address(self.pod)) is not None:
            self.pod_ip = addr.ip  # its tap lives on in QEMU, and in the network state
        for cs in status.containers:
            rec = self.records.get(cs.name)
            if rec is not None:
                rec.runtime, rec.waiting = cs, ("", "")
                rec.container_id = f"{self.runtime.name}://{self.id}/{cs.name}"
                old: Obj = next(
                    (
                        s
                        for s in (self.pod.get("status") or {}).get("containerStatuses") or []
                        if s.get("name") == cs.name
                    ),
                    {},
                )
                rec.restart_count = int(old.get("restartCount", 0))
                rec.last_terminated = (old.get("lastState") or {}).get("terminated")
        self._start_token_refresh(fresh=False)  # when its tokens were issued is not known
        self._start_rbd_resize()
        await self._guarded(self._supervise())

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run the pod, then tear it down once deleted. A worker whose loop failed still waits for
        the deletion and tears down: else the VM would outlive its pod, and the pod stay
        Terminating (and counted in its tenant's quota) for good."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("pod worker %s failed; its pod is torn down when deleted", self.name)
            self.message = f"node agent error: {e}"
            with contextlib.suppress(Exception):
                await self._report()
        finally:
            await self._stop_token_refresh()
            await self._stop_rbd_resize()
            if self.probes is not None:
                await self.probes.stop()
        while not self.deleting:
            await self._sleep_or_change(None)
        await self._terminate()

    async def _create(self) -> bool:
        """Make the sandbox and start the containers; False if the pod was deleted meanwhile.

        Failures back off as the kubelet's do (10 s doubling to 5 min; pulls and sandbox creation
        each their own), and only the pod's deletion or a change of its spec cuts a back-off short:
        the worker's own status writes come back as pod updates and must not."""
        self.start_time = time.time()
        pull_backoff, create_backoff = _Backoff(), _Backoff()
        while not self.deleting:
            spec = await self._spec_until_valid()
            if spec is None:
                return False
            for rec in self.records.values():
                await self.api.event(self.pod, "Normal", "Pulling", f'Pulling image "{rec.image}"')
            key = self._spec_key
            try:
                if self.networks is not None:
                    # a tap per attempt: a failed create closes the one it was given
                    spec = replace(spec, network=await self.networks.attach(self.pod))
                created = await self.runtime.create_sandbox(spec)
                break
            except NetworkNotReady as e:
                await self._waiting_all(e.reason, str(e))
                await self.api.event(self.pod, "Warning", e.event, e.event_message)
                delay = CONFIG_RETRY
            except ImagePullFailed as e:
                await self._waiting_all(e.reason, str(e))
                await self.api.event(self.pod, "Warning", "Failed", f"Failed to pull image: {e}")
                delay = pull_backoff.next()
                if e.reason == "ErrImagePull":  # between tries, as the kubelet says it
                    await self._waiting_all("ImagePullBackOff", f"Back-off pulling image: {e}")
                await self.api.event(self.pod, "Normal", "BackOff", "Back-off pulling image")
            except (PodRuntimeError, OSError) as e:
                if isinstance(e, OSError):
                    log.exception("creating the sandbox of %s", self.name)
                await self._waiting_all("CreateContainerError", str(e))
                await self.api.event(
                    self.pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}"
                )
                delay = create_backoff.next()
            why = next(iter(self.records.values())).waiting[1] if self.records else ""
            log.info("pod %s: sandbox not created (%s), next try in %.0f s", self.name, why, delay)
            if await self._wait_backoff(delay, key) == "spec":
                pull_backoff, create_backoff = _Backoff(), _Backoff()  # a new spec starts afresh
        else:
            return False
        for reason, message in created.warnings:
            await self.api.event(self.pod, "Warning", reason, message)
        self.sandbox_ready = True
        self.pod_ip = spec.network.addresses[0].split("/")[0] if spec.network.addresses else None
        for rec in self.records.values():
            await self.api.event(self.pod, "Normal", "Pulled", f'Container image "{rec.image}" is ready')
        self.probes = ProbeRunner(self.pod, self.runtime, self.id, self._on_probe)
        for name in self.records:
            await self._start(name)
        self._start_token_refresh(fresh=True)
        self._start_rbd_resize()
        return True

    async def _spec_until_valid(self) -> PodSpec | None:
        """The runtime spec of the pod, once what it references exists; None if deleted first."""
        while not self.deleting:
            key = self._spec_key
            try:
                objects = await self._referenced_objects()
                lookup = _lookup_in(objects)
                block_path = None if self.volumes is None else self._block_path
                spec = pod_spec(self.pod, lookup, block_path)
                await self._prepare_volumes(claim_disks(self.pod, lookup), objects)
                for c in spec.containers:  # a spec change may have changed an image
                    if c.name in self.records:
                        self.records[c.name].image = c.image
                return spec
            except ConfigError as e:
                await self._waiting_all(e.reason, str(e))
                await self.api.event(self.pod, "Warning", e.event, e.event_message)
                await self._wait_backoff(CONFIG_RETRY, key)
        return None

    async def _referenced_objects(self) -> Objects:
        ns = self.pod["metadata"].get("namespace", "default")
        found: Objects = {}
        wanted = referenced_objects(self.pod)
        for _ in range(2):  # then the PVs the claims are bound to
            for kind, name in wanted:
                key = (kind, "" if kind in CLUSTER_KINDS else ns, name)
                if kind == TOKEN_KIND:
                    seconds, _, audience = name.partition("|")
                    token = await self.api.service_account_token(self.pod, int(seconds), audience)
                    obj = {"token": token} if token else None
                else:
                    obj = await self.api.lookup(kind, key[1], name)
                if obj is not None:
                    found[key] = obj
            wanted = claim_volume_names([o for (k, _, _), o in found.items() if k == PVC_KIND])
        # an RBD PV's node-stage Secret, in the namespace the class named
        for secret_ns, name in rbd_secrets(o for (k, _, _), o in found.items() if k == PV_KIND):
            obj = await self.api.lookup("Secret", secret_ns, name)
            if obj is not None:
                found[("Secret", secret_ns, name)] = obj
        return found

    async def _attach_rbd(self, d: ClaimDisk, objects: Objects) -> None:
        """Before QEMU opens an image read-write: if a client still has it open and the node
        that attached it last is declared dead (not Ready, or gone), fence it: blocklist its
        clients, so its VM can never write again even if the node comes back (docs/volumes.md,
        "Ceph RBD"); if that node is alive, wait as for a Multi-Attach. Then record this node
        and pod as the holder."""
        if d.read_only:
            return
        secret = objects.get(("Secret", *d.secret)) or {}
        node = str((self.pod.get("spec") or {}).get("nodeName") or "")
        me = f"{node}/{self.pod['metadata'].get('uid', '')}"
        try:
            rbd = RbdVolumes(credentials_from_secret(secret), d.pool)
            # a lock without a watcher is a dead client's: librbd breaks it (and blocklists that
            # client) when QEMU first writes; a watcher is a live client, maybe a "dead" node's VM
            holder, watchers = await asyncio.to_thread(lambda: (rbd.holder(d.handle), rbd.watchers(d.handle)))
            if watchers and holder != me:
                old = holder.split("/", 1)[0]
                if not holder or old == node or await self._node_ready(old):
                    raise MultiAttachError(
                        f'Multi-Attach error for volume "{d.pv}": rbd image {d.pool}/{d.handle} is '
                        f"in use by {holder or 'a client that is not a pod'}; waiting for it to be released"
                    )
                fenced = await asyncio.to_thread(rbd.fence, d.handle)
                await self.api.event(
                    self.pod,
                    "Warning",
                    "VolumeFenced",
                    f'volume "{d.volume}": node "{old}" is not Ready: blocklisted its client(s) '
                    f"{', '.join(fenced)} of rbd image {d.pool}/{d.handle} before attaching it here",
                )
            await asyncio.to_thread(rbd.set_holder, d.handle, me)
        except (VolumeError, ValueError) as e:
            raise VolumeConfigError(f'volume "{d.volume}": {e}') from None

    async def _node_ready(self, name: str) -> bool:
        node = await self.api.lookup("Node", "", name)
        conditions = ((node or {}).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def _block_path(self, handle: str, fmt: str) -> str:
        assert self.volumes is not None
        return str(self.volumes.path(handle, fmt))

    async def _prepare_volumes(self, disks: list[ClaimDisk], objects: Objects) -> None:
        """Hold the pod's claims, make their disks if new, grow them (and their filesystems) to
        their PVs' capacity while no other VM here has them, and report the claims' capacity."""
        if not disks:
            return
        if self.volumes is None and any(d.driver != RBD_DRIVER for d in disks):
            raise VolumeConfigError("this node has no volume store for persistent volumes")
        volumes = self.volumes
        self.users.acquire(self.id, self.name, disks)
        for d in disks:
            if d.driver == RBD_DRIVER:
                try:
                    await self._attach_rbd(d, objects)
                except ConfigError:
                    self.users.release(self.id)
                    raise
                continue
            assert volumes is not None
            try:
                await asyncio.to_thread(
                    volumes.ensure, d.handle, d.size, d.fs_type or "ext4", d.format, not d.fs_type
                )
                before = await asyncio.to_thread(volumes.capacity, d.handle, d.format)
                if self.users.sole(d.key, self.id) and await asyncio.to_thread(
                    volumes.grow, d.handle, d.size, d.fs_type, d.format
                ):
                    after = await asyncio.to_thread(volumes.capacity, d.handle, d.format)
                    what = "disk and filesystem" if d.fs_type else "disk"
                    await self.api.event(
                        self.pod,
                        "Normal",
                        "VolumeResized",
                        f'volume "{d.volume}" ({d.pv}): {what} grown from {before} to {after} bytes',
                    )
                else:
                    after = before
            except VolumeError as e:
                self.users.release(self.id)
                raise VolumeConfigError(f'volume "{d.volume}": {e}') from e
            pvc = objects.get((PVC_KIND, d.namespace, d.claim)) or {}
            reported = storage_size(pvc, "status.capacity")
            pending = any(
                c.get("type") == "FileSystemResizePending"
                for c in (pvc.get("status") or {}).get("conditions") or []
            )
            if after >= d.size and (reported != d.size or pending):
                pv = objects.get((PV_KIND, "", d.pv)) or {}
                capacity = str(((pv.get("spec") or {}).get("capacity") or {}).get("storage"))
                await self.api.claim_resized(d.namespace, d.claim, capacity)

    async def _start(self, name: str) -> None:
        rec = self.records[name]
        self._handled.discard(name)
        rec.container_id = f"{self.runtime.name}://{self.id}/{name}"
        try:
            if rec.runtime is None:
                await self.runtime.start_container(self.id, name)
            else:
                await self.runtime.restart_container(self.id, name)
            await self.api.event(self.pod, "Normal", "Created", f"Created container {name}")
            await self.api.event(self.pod, "Normal", "Started", f"Started container {name}")
        except StartFailed as e:
            await self.api.event(self.pod, "Warning", "Failed", f"Error: {e}")
        except (SandboxFailed, SandboxNotFound) as e:
            self.message = str(e)
        self.backoff[name].last_start = time.monotonic()
        await self._refresh()
        rec.started = rec.runtime is not None and rec.runtime.state is ContainerState.RUNNING
        if self.probes is not None:
            self.probes.container_started(name)
        await self._report()

    async def _refresh(self) -> None:
        try:
            status = await self.runtime.status(self.id)
        except SandboxNotFound:
            return
        self.message = status.message or self.message
        for cs in status.containers:
            rec = self.records.get(cs.name)
            if rec is not None:
                rec.runtime = cs
                if cs.state in (ContainerState.RUNNING, ContainerState.EXITED):
                    rec.waiting = ("", "")

    async def _supervise(self) -> None:
        """Wait for container exits, restart per policy with back-off, until the pod is deleted."""
        policy = (self.pod.get("spec") or {}).get("restartPolicy", "Always")
        waiters: dict[str, asyncio.Task[Any]] = {}
        try:
            while not self.deleting:
                for name, rec in self.records.items():
                    state = rec.runtime.state if rec.runtime is not None else None
                    if state is ContainerState.RUNNING and name not in waiters:
                        waiters[name] = asyncio.create_task(self.runtime.wait_container(self.id, name))
                    elif state is ContainerState.EXITED and name not in self._handled and name not in waiters:
                        await self._exited(name, policy)  # it ended before we started waiting
                pending = self._restart_pending(policy)
                if not waiters and not pending:
                    await self._report()
                    if self._finished():
                        await self._stop_finished()
                    await self._sleep_or_change(None)  # finished: wait for deletion
                    continue
                change = asyncio.create_task(self.changed.wait())
                done, _ = await asyncio.wait([change, *waiters.values()], return_when=asyncio.FIRST_COMPLETED)
                change.cancel()
                self.changed.clear()
                for name in [n for n, t in waiters.items() if t in done]:
                    waiters.pop(name)
                    await self._exited(name, policy)
                await self._report()
        finally:
            for t in waiters.values():
                t.cancel()

    def _restart_pending(self, policy: str) -> bool:
        return any(r.waiting[0] == "CrashLoopBackOff" for r in self.records.values())

    async def _exited(self, name: str, policy: str) -> None:
        await self._refresh()
        self._handled.add(name)
        rec = self.records[name]
        if rec.runtime is None or rec.runtime.state is not ContainerState.EXITED:
            return
        rec.ready = False
        exit_ = rec.runtime.exit
        failed = exit_ is None or exit_.signal is not None or exit_.code != 0
        if self.deleting or policy == "Never" or (policy == "OnFailure" and not failed):
            await self._report()
            return
        if self.message and rec.runtime.reason == "VMExited":
            await self._report()
            return  # the VM is gone: nothing to restart in; deletion/re-creation is above us
        rec.last_terminated = terminated_state(rec.runtime)
        delay = self.backoff[name].next()
        rec.waiting = (
            "CrashLoopBackOff",
            f"back-off {delay:.0f}s restarting failed container={name} "
            f"pod={self.pod['metadata']['name']}_{self.pod['metadata'].get('namespace')}"
            f"({self.pod['metadata'].get('uid')})",
        )
        await self.api.event(
            self.pod,
            "Warning",
            "BackOff",
            f"Back-off restarting failed container {name} in pod {self.pod['metadata']['name']}",
        )
        await self._report()
        self._spawn_restart(name, delay)

    def _spawn_restart(self, name: str, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            if not self.deleting:
                self.records[name].restart_count += 1
                await self._start(name)
                self.changed.set()

        task = asyncio.create_task(later())
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    # --- RBD volumes grown while attached (docs/volumes.md, "Ceph RBD") ---------------------------

    def _start_rbd_resize(self) -> None:
        if self._rbd_resize is None and any(
            ((v.get("persistentVolumeClaim") or {}).get("claimName"))
            for v in self.pod["spec"].get("volumes") or []
        ):
            self._rbd_resize = asyncio.create_task(self._follow_rbd_sizes(), name=f"rbd-resize-{self.id}")

    async def _stop_rbd_resize(self) -> None:
        task, self._rbd_resize = self._rbd_resize, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow_rbd_sizes(self) -> None:
        """The control plane grows an RBD image live, then its PV's capacity: tell QEMU, so the
        guest sees the new size without a restart and grows the filesystem on it, then report the
        claim's new capacity."""
        seen: dict[str, int] = {}
        while True:
            try:
                objects = await self._referenced_objects()
                disks = [d for d in claim_disks(self.pod, _lookup_in(objects)) if d.driver == RBD_DRIVER]
                if not disks:
                    return  # local volumes grow offline only
                for d in disks:
                    before = seen.setdefault(d.pv, d.size)
                    pvc = objects.get((PVC_KIND, d.namespace, d.claim)) or {}
                    if d.size > before:
                        await self.runtime.resize_block(self.id, d.volume, align(d.size))
                        seen[d.pv] = d.size
                        what = "device and filesystem" if d.fs_type else "device"
                        await self.api.event(
                            self.pod,
                            "Normal",
                            "VolumeResized",
                            f'volume "{d.volume}" ({d.pv}): {what} grown from {before} to {d.size} bytes '
                            "while attached",
                        )
                    elif not _resize_pending(pvc, d.size):
                        continue
                    # grown live, or when its container mounted it (a claim grown while no pod had
                    # it): the claim's resize is done, as kubelet reports after NodeExpandVolume
                    pv = objects.get((PV_KIND, "", d.pv)) or {}
                    await self.api.claim_resized(
                        d.namespace,
                        d.claim,
                        str(((pv.get("spec") or {}).get("capacity") or {}).get("storage")),
                    )
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the next round tries again
                log.info("pod %s: following RBD volume sizes: %s", self.name, e)
            await asyncio.sleep(RBD_RESIZE_POLL)

    # --- projected service-account tokens ----------------------------------------------------------

    def _start_token_refresh(self, fresh: bool) -> None:
        volumes = token_volumes(self.pod)
        if volumes and self._tokens is None:
            self._tokens = asyncio.create_task(self._refresh_tokens(volumes, fresh), name=f"tokens-{self.id}")

    async def _stop_token_refresh(self) -> None:
        task, self._tokens = self._tokens, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh_tokens(self, volumes: dict[str, int], fresh: bool) -> None:
        """Put new tokens into the VM's projected volumes once `token_refresh` of the shortest
        lifetime has passed, as the kubelet's token manager does: a pod-bound token expires (an
        hour, by default), and a pod that reads its token file again keeps working."""
        period = self.token_refresh * min(volumes.values())
        delay = period if fresh else 0.0
        retry = _Backoff()
        while True:
            await asyncio.sleep(delay)
            try:
                await self._write_tokens(volumes)
                delay, retry = period, _Backoff()
            except Exception as e:  # whatever failed, a token is due: try again
                delay = min(retry.next(), period)
                log.warning(
                    "pod %s: refreshing its service-account token: %r; again in %.0f s", self.name, e, delay
                )

    async def _write_tokens(self, volumes: dict[str, int]) -> None:
        objects = await self._referenced_objects()  # new tokens, and the other files of those volumes
        spec = pod_spec(self.pod, _lookup_in(objects), None if self.volumes is None else self._block_path)
        for v in spec.volumes:
            if v.name in volumes:
                await self.runtime.update_files(self.id, v.name, v.files)
        log.info("pod %s: service-account token refreshed", self.name)

    async def _on_probe(self, name: str, kind: str, ok: bool, message: str) -> None:
        rec = self.records[name]
        if kind == "readiness":
            if rec.ready != ok:
                rec.ready = ok
                await self._report()
        elif kind == "startup":
            rec.started = ok
            await self._report()
        elif kind == "liveness" and not ok:
            await self.api.event(self.pod, "Warning", "Unhealthy", f"Liveness probe failed: {message}")
            await self.api.event(
                self.pod, "Normal", "Killing", f"Container {name} failed liveness probe, will be restarted"
            )
            with contextlib.suppress(PodRuntimeError):
                await self.runtime.signal_container(self.id, name, signal.SIGKILL)
        if not ok and kind != "liveness":
            what = f"{kind.capitalize()} probe failed: {message}"
            await self.api.event(self.pod, "Warning", "Unhealthy", what)

    # --- termination -------------------------------------------------------------------------------

    def _finished(self) -> bool:
        """Succeeded or Failed: no container runs and none will be restarted."""
        statuses = [container_status(r) for r in self.records.values()]
        return pod_phase(self.pod, statuses) in TERMINAL_PHASES

    async def _stop_finished(self) -> None:
        """A finished pod keeps no VM, as the kubelet kills a terminal pod's sandbox: else it would
        go on taking host CPU and memory that neither quotas nor the scheduler count. Its logs
        stay readable (the runtime keeps them until the pod is deleted); its claims are let go."""
        if self._stopped:
            return
        self._stopped = True
        await self._stop_token_refresh()
        await self._stop_rbd_resize()
        if self.probes is not None:
            await self.probes.stop()
        try:
            await asyncio.wait_for(self.runtime.stop_sandbox(self.id, 0), STOP_MARGIN)
        except SandboxNotFound:
            pass
        except (TimeoutError, PodRuntimeError) as e:
            log.warning("pod %s finished: stopping its sandbox: %r; removing it", self.name, e)
            await self.runtime.remove_sandbox(self.id)
        self.users.release(self.id)
        self.sandbox_ready = False
        log.info("pod %s finished: its sandbox is stopped", self.name)
        await self._report()

    async def _terminate(self) -> None:
        if not self.deleting:
            return
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        for name, rec in self.records.items():
            if rec.runtime is not None and rec.runtime.state is ContainerState.RUNNING:
                await self.api.event(self.pod, "Normal", "Killing", f"Stopping container {name}")
        if grace is None:
            grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        try:
            # bounded whatever the runtime and the guest do: removal below kills what is left
            await asyncio.wait_for(
                self.runtime.stop_sandbox(self.id, int(grace)), max(0, int(grace)) + STOP_MARGIN
            )
        except SandboxNotFound:
            pass
        except TimeoutError:
            log.warning("pod %s: the sandbox did not stop within %s s of grace; killing it", self.name, grace)
        await self.runtime.remove_sandbox(self.id)
        self.users.release(self.id)  # the VM is gone, and its disks with it
        await self.api.finalize_pod(self.pod)

    # --- reporting ---------------------------------------------------------------------------------

    async def _waiting_all(self, reason: str, message: str) -> None:
        for rec in self.records.values():
            rec.waiting = (reason, message)
        await self._report()

    async def _report(self) -> None:
        status = pod_status(
            self.pod,
            list(self.records.values()),
            pod_ip=self.pod_ip,
            host_ip=self.host_ip,
            start_time=self.start_time,
            sandbox_ready=self.sandbox_ready,
            message=self.message,
        )
        if status == self._last_status:
            return
        updated = await self.api.update_pod_status(self.pod, status)
        if updated is not None:
            self._written_rv = _rv(updated)
            self.pod = {**updated, "metadata": {**updated["metadata"], **_deletion_fields(self.pod, updated)}}
        self._last_status = status

    async def _wait_backoff(self, seconds: float, key: str) -> str:
        """Sleep out a back-off. "deleted" or "spec" (the pod's spec is no longer the one `key`
        was taken from) end it early; any other pod update (our own status writes) does not."""
        deadline = time.monotonic() + seconds
        while True:
            if self.deleting:
                return "deleted"
            if self._spec_key != key:
                return "spec"
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            await self._sleep_or_change(left)

    async def _sleep_or_change(self, seconds: float | None) -> bool:
        """Sleep, waking early on a pod update; True if woken by an update."""
        if await wait_event(self.changed, seconds):
            self.changed.clear()
            return True
        return False


def token_volumes(pod: Obj) -> dict[str, int]:
    """The pod's projected volumes that hold a service-account token, with the shortest lifetime
    (seconds) one of their tokens asks for."""
    found: dict[str, int] = {}
    for v in (pod.get("spec") or {}).get("volumes") or []:
        for source in (v.get("projected") or {}).get("sources") or []:
            token = source.get("serviceAccountToken")
            if isinstance(token, dict):
                seconds = int(token.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
                found[v["name"]] = min(found.get(v["name"], seconds), seconds)
    return found


def _spec_key(pod: Obj) -> str:
    """What ends a back-off when it changes: the spec, and the tenant-network address the network
    controller annotates (a pod the node saw before its address starts when it has one)."""
    address = pod_address(pod)
    return json.dumps([pod.get("spec"), address and astuple(address)], sort_keys=True)


def _lookup_in(objects: Objects) -> Callable[[str, str, str], Obj | None]:
    def lookup(kind: str, namespace: str, name: str) -> Obj | None:
        return objects.get((kind, namespace, name))

    return lookup


def _rv(pod: Obj) -> int:
    rv = str(pod["metadata"].get("resourceVersion") or "0")
    return int(rv) if rv.isdigit() else 0


def _overwritten(pod: Obj, ours: Obj, written_rv: int) -> bool:
    """A newer version of the pod than our last status write, whose conditions say otherwise."""

    def conditions(status: Obj) -> dict[str, str]:
        return {str(c.get("type")): str(c.get("status")) for c in status.get("conditions") or []}

    return _rv(pod) > written_rv and conditions(pod.get("status") or {}) != conditions(ours)


def _deletion_fields(old: Obj, new: Obj) -> Obj:
    """Never forget a deletion we have seen, even if a status reply raced with it."""
    keys = ("deletionTimestamp", "deletionGracePeriodSeconds")
    return {k: old["metadata"][k] for k in keys if k in old["metadata"] and k not in new["metadata"]}


def _resize_pending(pvc: Obj, size: int) -> bool:
    """Whether a claim still waits for its node to finish a resize (FileSystemResizePending, or
    a reported capacity under its volume's)."""
    pending = any(
        c.get("type") == "FileSystemResizePending" for c in (pvc.get("status") or {}).get("conditions") or []
    )
    reported = storage_size(pvc, "status.capacity")
    return pending or reported is None or reported < size
