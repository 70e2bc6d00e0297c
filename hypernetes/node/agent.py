"""The node agent: registers its Node, heartbeats through a Lease, runs the pods bound to it.

One `PodWorker` per pod (by uid). On start it adopts the VMs an earlier agent left running and
removes sandboxes whose pod is gone. It also serves logs and exec for its pods (`NodePodProxy`),
which the API server calls for `kubectl logs` and `kubectl exec`. With a volume store it watches
the local PersistentVolumes of this node and deletes the disk of one being deleted, once no pod
here uses it, then removes its `local.hypernetes.io/backing-file` finalizer (docs/volumes.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hypernetes import __version__
from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.asyncwait import cancel_and_wait, wait_event
from hypernetes.eventrecorder import EventRecorder, object_reference
from hypernetes.logfmt import bind
from hypernetes.metrics import attach, detach
from hypernetes.network.objects import UNDERLAY_ANNOTATION
from hypernetes.node.admission import Rejection, admit
from hypernetes.node.conditions import NODEFS, NodePressure
from hypernetes.node.metrics import NodeMetrics
from hypernetes.node.network import PodNetworks
from hypernetes.node.podspec import CLUSTER_KINDS, ConfigError, pod_claims, sandbox_id
from hypernetes.node.podstatus import TERMINAL_PHASES, rfc3339
from hypernetes.node.worker import TOKEN_REFRESH, PodWorker, VolumeUsers
from hypernetes.objects import Obj
from hypernetes.objects.names import (
    ARCH_LABEL,
    BACKING_FILE_FINALIZER,
    HOSTNAME_LABEL,
    KERNELS_ANNOTATION,
    OS_LABEL,
    RUNTIME_LABEL,
    TENANT_LABEL,
)
from hypernetes.runtime.cgroups import allocatable_millicpu
from hypernetes.runtime.interface import Runtime
from hypernetes.runtime.kernels import KernelRegistry
from hypernetes.runtime.sizing import MiB
from hypernetes.volumes.local import LocalVolumes, VolumeError
from hypernetes.volumes.objects import LOCAL_DRIVER, pv_node

log = logging.getLogger(__name__)

LEASE_SECONDS = 40
HEARTBEAT = 10.0
SYSTEM_RESERVED_MEMORY = 512 * MiB  # for the host, the agent and QEMU's own overhead
RECLAIM_RETRY = 30.0  # a failed disk deletion or finalizer removal is tried again this often
PLURALS = {
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "PersistentVolume": "persistentvolumes",
    "Namespace": "namespaces",
    "Node": "nodes",
}
RESIZE_CONDITIONS = ("FileSystemResizePending", "Resizing")
FINALIZE_TRIES = 8  # deleting a stopped pod's object: retried 1 s doubling to 30 s, then left


def host_ip() -> str:
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the route's source
        return str(s.getsockname()[0])
    return "127.0.0.1"


def machine_capacity() -> tuple[int, int]:
    cpus = os.cpu_count() or 1
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return cpus, mem_kib * 1024


def disk_capacity(path: Path, pressure: NodePressure) -> tuple[int, int]:
    """(capacity, allocatable) ephemeral-storage in bytes: the size of the filesystem holding the
    pods' scratch disks, and that less the hard eviction threshold of nodefs.available (10% by
    default), which pods may never take: as the kubelet's allocatable."""
    st = os.statvfs(path)
    size = st.f_blocks * st.f_frsize
    return size, size - pressure.threshold(NODEFS, size)


class ClientNodeAPI:
    """`NodeAPI` over the API server, for pod workers."""

    def __init__(self, client: ApiClient, node_name: str, metrics: NodeMetrics | None = None) -> None:
        self.client = client
        self.node_name = node_name
        self.metrics = metrics or NodeMetrics()

    async def lookup(self, kind: str, namespace: str, name: str) -> Obj | None:
        ns = None if kind in CLUSTER_KINDS else namespace
        try:
            return await self.client.get_or_none("v1", PLURALS[kind], name, ns)
        except (ApiException, OSError) as e:
            # e.g. refused by the node authorizer: the pod waits and says why, it does not crash
            raise ConfigError(f"cannot read {kind.lower()} {name!r}: {e}") from e

    async def claim_resized(self, namespace: str, name: str, capacity: str) -> None:
        for _ in range(5):
            try:
                pvc = await self.client.get("v1", "persistentvolumeclaims", name, namespace)
                status = resized_claim_status(pvc, capacity)
                if status is None:
                    return
                patch = {
                    "metadata": {"resourceVersion": pvc["metadata"]["resourceVersion"]},
                    "status": status,
                }
                await self.client.patch(
                    "v1", "persistentvolumeclaims", name, patch, namespace, subresource="status"
                )
                log.info("claim %s/%s: capacity %s", namespace, name, capacity)
                return
            except ApiException as e:
                if e.status != 409:
                    log.warning("status of claim %s/%s: %s", namespace, name, e)
                    return

    async def service_account_token(self, pod: Obj, expiration: int, audience: str) -> str | None:
        meta = pod["metadata"]
        account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        bound = {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta.get("uid")}
        body: Obj = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration, "boundObjectRef": bound},
        }
        if audience:
            body["spec"]["audiences"] = [audience]
        try:
            answer = await self.client.create(
                "v1", "serviceaccounts", body, meta.get("namespace"), name=account, subresource="token"
            )
        except ApiException as e:
            log.warning("token for pod %s/%s: %s", meta.get("namespace"), meta["name"], e)
            return None
        token = (answer.get("status") or {}).get("token")
        return token if isinstance(token, str) else None

    async def update_pod_status(self, pod: Obj, status: Obj) -> Obj | None:
        meta = pod["metadata"]
        self.metrics.status_posted(sandbox_id(pod), status)
        for _ in range(5):
            try:
                return await self.client.patch(
                    "v1",
                    "pods",
                    meta["name"],
                    {"status": status},
                    meta.get("namespace"),
                    subresource="status",
                )
            except ApiException as e:
                if e.status == 404:
                    return None
                if e.status != 409:
                    log.warning("status of pod %s/%s: %s", meta.get("namespace"), meta["name"], e)
                    return None
        return None

    async def event(self, pod: Obj, type_: str, reason: str, message: str) -> None:
        """Through the shared recorder, as the kubelet's: a pod failing the same way again and
        again (an image that cannot be pulled) counts up one Event, not one Event a try."""
        ref = object_reference({"apiVersion": "v1", "kind": "Pod", **pod})  # list items may lack kind
        await self._events().record(ref, type_, reason, message[:1024])

    async def node_event(self, reason: str) -> None:
        """A Normal event about this Node, as the kubelet records its status changes."""
        # upstream's node reference: the node's name stands for its uid
        ref = {"kind": "Node", "apiVersion": "v1", "name": self.node_name, "uid": self.node_name}
        await self._events().record(ref, "Normal", reason, f"Node {self.node_name} status is now: {reason}")

    def _events(self) -> EventRecorder:
        recorder: EventRecorder | None = getattr(self, "_recorder", None)  # one per agent, on first use
        if recorder is None:
            recorder = self._recorder = EventRecorder(
                self.client, "kubelet", host=self.node_name, instance=self.node_name
            )
        return recorder

    async def finalize_pod(self, pod: Obj) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta.get("uid")},
        }
        delay = 1.0
        for _ in range(FINALIZE_TRIES):  # a pod left Terminating would stay in its tenant's quota
            try:
                await self.client.delete("v1", "pods", meta["name"], meta.get("namespace"), body)
                return
            except ApiException as e:
                # only a busy or failing server is worth asking again: 404 (gone), 409 (another
                # pod by that name now), 403 (no longer ours, or gone) will not change
                if e.status != 429 and e.status < 500:
                    log.debug("finalizing pod %s/%s: %s", meta.get("namespace"), meta["name"], e)
                    return
                log.warning("finalizing pod %s/%s: %s", meta.get("namespace"), meta["name"], e)
            except OSError as e:
                log.warning("finalizing pod %s/%s: %s", meta.get("namespace"), meta["name"], e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def default_pressure(runtime: Runtime) -> NodePressure:
    """Upstream's thresholds on the filesystems of the runtime's sandboxes (nodefs) and image
    store (imagefs)."""
    root = getattr(runtime, "root", None)
    nodefs = root if isinstance(root, Path) else Path("/")
    images = getattr(getattr(runtime, "images", None), "root", None)
    return NodePressure(nodefs, images if isinstance(images, Path) else nodefs)


def resized_claim_status(pvc: Obj, capacity: str) -> Obj | None:
    """The merge patch of a claim's status once its volume has grown to `capacity`: the new
    capacity, without the resize conditions and the storage resize status (as kubelet leaves a
    claim after NodeExpandVolume); None if the status says so already."""
    status = pvc.get("status") or {}
    conditions = status.get("conditions") or []
    kept = [c for c in conditions if c.get("type") not in RESIZE_CONDITIONS]
    allocated = status.get("allocatedResourceStatuses") or {}
    if (
        (status.get("capacity") or {}).get("storage") == capacity
        and len(kept) == len(conditions)
        and "storage" not in allocated
    ):
        return None
    patch: Obj = {"capacity": {"storage": capacity}, "conditions": kept or None}
    if "storage" in allocated:
        patch["allocatedResourceStatuses"] = {"storage": None}
    return patch


class NodeAgent:
    def __init__(
        self,
        client: ApiClient,
        runtime: Runtime,
        node_name: str | None = None,
        labels: dict[str, str] | None = None,
        volumes: LocalVolumes | None = None,
        networks: PodNetworks | None = None,
        token_refresh: float = TOKEN_REFRESH,
        address: str | None = None,
        server_port: int | None = None,
        pressure: NodePressure | None = None,
    ) -> None:
        """`volumes`: this node's local volume store (DATA/volumes); without it pods with
        persistent volume claims wait with an error and PVs are not reclaimed here.
        `networks`: this node's tenant networks; without it pod VMs have no network.
        `token_refresh`: the fraction of a projected token's lifetime after which pods get a new one.
        `pressure`: how memory, disk and PID pressure are measured (default: upstream's
        thresholds on the filesystems of the runtime's sandboxes and images)."""
        self.token_refresh = token_refresh
        self.client = client
        self.runtime = runtime
        self.name = node_name or self.default_name()
        self.labels = labels or {}
        self.ip = address or host_ip()
        self.server_port = server_port  # this node's server (node/server.py), if it runs one
        self.metrics = NodeMetrics()
        self.api = ClientNodeAPI(client, self.name, self.metrics)
        self.volumes = volumes
        self.networks = networks
        self.volume_users = VolumeUsers()
        self.workers: dict[str, PodWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._published_notes: Obj | None = None  # the annotations the last heartbeat left on the Node
        self._adopted: dict[str, Any] | None = None
        self._pvs: dict[str, Obj] = {}  # this node's local PVs, by name
        self._reclaim_wake = asyncio.Event()
        self._pods_synced = asyncio.Event()
        self._rejected: set[str] = set()  # pods refused at admission: they never run here
        self._rejections: set[asyncio.Task[None]] = set()
        self._allocatable: Obj | None = None
        self.pressure = pressure or default_pressure(runtime)
        self._ready_since = rfc3339()
        self._pressure_reported: dict[str, bool] = {}  # condition type -> pressure, as last posted

    @staticmethod
    def default_name() -> str:
        return socket.gethostname().lower()

    # --- Node and Lease ----------------------------------------------------------------------------

    def node_object(self) -> Obj:
        cpus, memory = machine_capacity()
        allocatable_mem = max(memory - SYSTEM_RESERVED_MEMORY, 0)
        disk: Obj = {}
        root = getattr(self.runtime, "root", None)  # where the pods' scratch disks are made
        if isinstance(root, Path):
            size, allocatable_disk = disk_capacity(
                next(p for p in (root, *root.parents) if p.exists()), self.pressure
            )
            disk = {"capacity": f"{size // 1024}Ki", "allocatable": f"{allocatable_disk // 1024}Ki"}
        now = rfc3339()
        kernels = getattr(self.runtime, "kernels", None)  # admission lets pods pick only these
        notes = {KERNELS_ANNOTATION: ",".join(kernels.names())} if isinstance(kernels, KernelRegistry) else {}
        if self.networks is not None and self.networks.underlay:  # where other nodes send its VXLAN
            notes[UNDERLAY_ANNOTATION] = self.networks.underlay
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": notes,
                "labels": {
                    HOSTNAME_LABEL: self.name,
                    OS_LABEL: "linux",
                    ARCH_LABEL: "amd64",
                    RUNTIME_LABEL: self.runtime.name,
                    **self.labels,
                },
            },
            "spec": {},
            "status": {
                "capacity": {
                    "cpu": str(cpus),
                    "memory": f"{memory // 1024}Ki",
                    "pods": "110",
                    **({"ephemeral-storage": disk["capacity"]} if disk else {}),
                },
                # less what the node keeps for itself: the pod VMs' parent cgroup is capped there
                "allocatable": {
                    "cpu": f"{allocatable_millicpu(cpus)}m",
                    "memory": f"{allocatable_mem // 1024}Ki",
                    "pods": "110",
                    **({"ephemeral-storage": disk["allocatable"]} if disk else {}),
                },
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": f"hypernetes node agent is posting ready status ({self.runtime.name})",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": self._ready_since,
                    },
                    *self.pressure.conditions(now),
                ],
                "addresses": [
                    {"type": "InternalIP", "address": self.ip},
                    {"type": "Hostname", "address": self.name},
                ],
                # where the API servers reach this node's server for pod streams (upstream's field)
                **(
                    {"daemonEndpoints": {"kubeletEndpoint": {"Port": self.server_port}}}
                    if self.server_port
                    else {}
                ),
                "nodeInfo": {
                    "machineID": _machine_id(),
                    "systemUUID": _machine_id(),
                    "bootID": _boot_id(),
                    "kernelVersion": platform.release(),
                    "osImage": _os_image(),
                    "containerRuntimeVersion": f"{self.runtime.name}://{__version__}",
                    "kubeletVersion": "v1.32.0-hypernetes",
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }

    async def register(self) -> None:
        existing = await self.client.get_or_none("v1", "nodes", self.name)
        if existing is not None:  # a restarted agent: conditions that did not change keep their times
            conditions = (existing.get("status") or {}).get("conditions") or []
            self.pressure.seed(conditions)
            ready: Obj = next((c for c in conditions if c.get("type") == "Ready"), {})
            if ready.get("status") == "True" and ready.get("lastTransitionTime"):
                self._ready_since = str(ready["lastTransitionTime"])
        await self._measure()
        node = self.node_object()
        self._allocatable = node["status"]["allocatable"]
        if existing is None:
            try:
                created = await self.client.create("v1", "nodes", node)
                await self.client.patch(
                    "v1", "nodes", self.name, {"status": node["status"]}, subresource="status"
                )
                log.info("registered node %s", created["metadata"]["name"])
                return
            except ApiException as e:
                if e.status != 409:
                    raise
        patch = {"metadata": {k: node["metadata"][k] for k in ("labels", "annotations")}}
        await self.client.patch("v1", "nodes", self.name, patch)
        await self.client.patch("v1", "nodes", self.name, {"status": node["status"]}, subresource="status")

    async def _measure(self) -> None:
        """Measure the host's pressure (off the loop: a stuck filesystem must not stall it) and
        record the kubelet's Node events for what changed (NodeHasDiskPressure, ...)."""
        now = await asyncio.to_thread(self.pressure.update)
        changed = [t for t, on in now.items() if self._pressure_reported.get(t) != on]
        self._pressure_reported = now
        for reason in self.pressure.event_reasons(changed):
            await self.api.node_event(reason)

    async def report_status(self) -> None:
        """Measure the host and post the Node's conditions (the node lifecycle controller taints
        the node by them) and the kernels pods may pick; once a heartbeat."""
        await self._measure()
        self.metrics.running_pods.set(len(await self.runtime.list_sandboxes()))
        node = self.node_object()
        conditions = {"status": {"conditions": node["status"]["conditions"]}}
        await self.client.patch("v1", "nodes", self.name, conditions, subresource="status")
        notes = node["metadata"]["annotations"]
        if notes != self._published_notes:  # a kernel registered since: pods may now pick it
            await self.client.patch("v1", "nodes", self.name, {"metadata": {"annotations": notes}})
            self._published_notes = notes

    async def heartbeat(self) -> None:
        lease_ns = "kube-node-lease"
        while not self._stopping:
            now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": lease_ns},
                "spec": {
                    "holderIdentity": self.name,
                    "leaseDurationSeconds": LEASE_SECONDS,
                    "renewTime": now,
                },
            }
            try:
                try:
                    await self.client.patch(
                        "coordination.k8s.io/v1", "leases", self.name, {"spec": lease["spec"]}, lease_ns
                    )
                except ApiException as e:
                    if e.status != 404:
                        raise
                    await self.client.create("coordination.k8s.io/v1", "leases", lease, lease_ns)
                await self.report_status()
            except (ApiException, OSError) as e:
                log.warning("heartbeat: %s", e)
            await asyncio.sleep(HEARTBEAT)

    # --- pods --------------------------------------------------------------------------------------

    async def adopt(self) -> None:
        """Take over the VMs an earlier agent left running. Call before the API server serves
        logs and exec, so that a request for a surviving pod finds its VM."""
        if self._adopted is None:
            self._adopted = await self._adopt()

    async def run(self) -> None:
        await self.register()
        background = [asyncio.create_task(self.heartbeat())]
        if self.networks is not None:
            background.append(asyncio.create_task(self.networks.run()))
        if self.volumes is not None:
            background += [
                asyncio.create_task(self._watch_volumes()),
                asyncio.create_task(self._reclaim_volumes(self.volumes)),
            ]
        attach(self.metrics.registry)  # on the process's /metrics while it runs
        try:
            await self.adopt()
            adopted, self._adopted = self._adopted or {}, {}
            async for ev in self.client.informer("v1", "pods", field_selector=f"spec.nodeName={self.name}"):
                if ev.type == "SYNC":
                    await self._sync(ev.object.get("items") or [], adopted)
                    adopted = {}
                    self._pods_synced.set()
                elif ev.type == "DELETED":
                    self._gone(ev.object)
                else:
                    self._seen(ev.object)
        finally:
            detach(self.metrics.registry)
            for task in background:
                task.cancel()

    async def _adopt(self) -> dict[str, Any]:
        return {s.id: s for s in await self.runtime.adopt()}

    async def _sync(self, pods: list[Obj], adopted: dict[str, Any]) -> None:
        live = {sandbox_id(p) for p in pods}
        # admitted in the kubelet's order: what already runs, then the oldest first
        for pod in sorted(
            pods,
            key=lambda p: (sandbox_id(p) not in adopted, str(p["metadata"].get("creationTimestamp") or "")),
        ):
            self._seen(pod, adopting=sandbox_id(pod) in adopted)
        for sid in set(adopted) - live:
            log.info("removing sandbox %s: its pod is gone", sid)
            await self.runtime.remove_sandbox(sid)
        for uid in [u for u in self.workers if u not in live]:
            self._gone(self.workers[uid].pod)

    def _seen(self, pod: Obj, adopting: bool = False) -> None:
        uid = sandbox_id(pod)
        worker = self.workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if not adopting and not pod["metadata"].get("deletionTimestamp"):
            if phase in TERMINAL_PHASES or uid in self._rejected:
                return  # finished before this agent started, or refused: nothing to run
            rejection = self.pressure.admit(pod) or admit(
                pod,
                [w.pod for w in self.workers.values() if w.holds_resources],
                self._allocatable or self.node_object()["status"]["allocatable"],
            )
            if rejection is not None:
                self._rejected.add(uid)
                task = asyncio.create_task(
                    self._as_pod(pod, lambda: self._reject(pod, rejection)), name=f"reject-{uid}"
                )
                self._rejections.add(task)
                task.add_done_callback(self._rejections.discard)
                return
        if not adopting:
            self.metrics.seen(uid)
        worker = PodWorker(
            pod,
            self.runtime,
            self.api,
            self.ip,
            self.volumes,
            self.volume_users,
            self.networks,
            self.token_refresh,
        )
        if adopting:
            # its VM has its disks: known before the PV reclaimer runs (see _reclaim_volumes)
            self.volume_users.hold(uid, worker.name, pod_claims(pod))
        self.workers[uid] = worker
        task = asyncio.create_task(
            self._as_pod(pod, worker.adopt if adopting else worker.run), name=f"pod-{uid}"
        )
        self._tasks[uid] = task
        task.add_done_callback(self._done)

    async def _as_pod(self, pod: Obj, work: Callable[[], Awaitable[None]]) -> None:
        """`work` with the pod's log fields on everything it logs, the runtime's lines included
        (the task's own context: hypernetes.logfmt). The tenant is its namespace's label."""
        meta = pod["metadata"]
        ns = meta.get("namespace") or ""
        bind(pod=meta["name"], namespace=ns, sandbox=sandbox_id(pod))
        try:
            namespace = await self.api.lookup("Namespace", "", ns)
        except ConfigError:
            namespace = None  # the fields are worth less than starting the pod
        bind(tenant=((namespace or {}).get("metadata", {}).get("labels") or {}).get(TENANT_LABEL))
        await work()

    async def _reject(self, pod: Obj, rejection: Rejection) -> None:
        log.warning(
            "pod %s/%s rejected: %s",
            pod["metadata"].get("namespace"),
            pod["metadata"]["name"],
            rejection.message,
        )
        await self.api.event(pod, "Warning", rejection.reason, rejection.message)
        await self.api.update_pod_status(pod, rejection.status())

    def _gone(self, pod: Obj) -> None:
        """The pod object is deleted: its worker must stop the VM right away."""
        self._rejected.discard(sandbox_id(pod))
        worker = self.workers.get(sandbox_id(pod))
        if worker is None:
            return
        meta = dict(pod["metadata"])
        meta.setdefault("deletionTimestamp", rfc3339())
        meta["deletionGracePeriodSeconds"] = 0
        worker.update({**pod, "metadata": meta})

    def _done(self, task: asyncio.Task[None]) -> None:
        uid = task.get_name().removeprefix("pod-")
        self.metrics.forget(uid)
        self.workers.pop(uid, None)
        self._tasks.pop(uid, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("pod worker %s ended with %r", uid, task.exception())
        if not self._stopping:
            self.volume_users.release(uid)
            self._reclaim_wake.set()  # a volume being deleted may have waited for this pod

    # --- local persistent volumes ------------------------------------------------------------------

    def _ours(self, pv: Obj) -> bool:
        csi = (pv.get("spec") or {}).get("csi") or {}
        return csi.get("driver") == LOCAL_DRIVER and pv_node(pv) == self.name

    async def _watch_volumes(self) -> None:
        """Keep `_pvs`: all PVs are listed and watched, those of other nodes dropped here (PVs
        carry no node label or field to select on)."""
        while True:  # say once, not once a second, that this node may not read PVs
            try:
                await self.client.list("v1", "persistentvolumes", limit=1)
                break
            except (ApiException, OSError) as e:
                log.warning("cannot list persistentvolumes (retrying in %.0f s): %s", RECLAIM_RETRY, e)
                await asyncio.sleep(RECLAIM_RETRY)
        async for ev in self.client.informer("v1", "persistentvolumes"):
            if ev.type == "SYNC":
                self._pvs = {
                    pv["metadata"]["name"]: pv for pv in ev.object.get("items") or [] if self._ours(pv)
                }
            elif ev.type != "DELETED" and self._ours(ev.object):
                self._pvs[ev.object["metadata"]["name"]] = ev.object
            else:
                self._pvs.pop(ev.object["metadata"]["name"], None)
            self._reclaim_wake.set()

    async def _reclaim_volumes(self, volumes: LocalVolumes) -> None:
        # not before the pods are known: an adopted VM's disk must not go from under it
        await self._pods_synced.wait()
        while not self._stopping:
            self._reclaim_wake.clear()
            for pv in list(self._pvs.values()):
                meta = pv["metadata"]
                if meta.get("deletionTimestamp") and BACKING_FILE_FINALIZER in (meta.get("finalizers") or []):
                    try:
                        await self._reclaim(volumes, pv)
                    except (ApiException, OSError) as e:
                        log.warning("persistentvolume %s: %s", meta["name"], e)
            await wait_event(self._reclaim_wake, RECLAIM_RETRY)

    async def _reclaim(self, volumes: LocalVolumes, pv: Obj) -> None:
        """Delete a deleted PV's disk (unless a pod here still uses it), then its finalizer."""
        name = pv["metadata"]["name"]
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        claim = f"{ref.get('namespace')}/{ref.get('name')}" if ref.get("name") else None
        handle = str(((pv.get("spec") or {}).get("csi") or {}).get("volumeHandle") or "")
        if not self.volume_users.begin_delete(claim, str(pv["metadata"].get("uid") or "")):
            assert claim is not None
            log.info(
                "persistentvolume %s is being deleted: its disk waits for pod(s) %s",
                name,
                ", ".join(self.volume_users.users(claim)),
            )
            return
        try:
            if handle:  # no handle, no disk: nothing was ever made for it
                await asyncio.to_thread(volumes.delete, handle)
        except VolumeError as e:
            log.warning("persistentvolume %s: %s", name, e)
            return
        for _ in range(5):
            finalizers = [f for f in pv["metadata"].get("finalizers") or [] if f != BACKING_FILE_FINALIZER]
            patch = {
                "metadata": {
                    "finalizers": finalizers or None,
                    "resourceVersion": pv["metadata"]["resourceVersion"],
                }
            }
            try:
                await self.client.patch("v1", "persistentvolumes", name, patch)
                log.info("persistentvolume %s: disk %s deleted, finalizer removed", name, handle)
                return
            except ApiException as e:
                if e.status == 404:
                    return
                if e.status != 409:
                    log.warning(
                        "persistentvolume %s: removing the %s finalizer: %s", name, BACKING_FILE_FINALIZER, e
                    )
                    return
            fresh = await self.client.get_or_none("v1", "persistentvolumes", name)
            if fresh is None or BACKING_FILE_FINALIZER not in (fresh["metadata"].get("finalizers") or []):
                return
            pv = fresh

    async def shutdown(self, stop_pods: bool) -> None:
        """Stop the agent; with stop_pods the VMs go too, else they keep running for adoption."""
        self._stopping = True
        await cancel_and_wait(list(self._tasks.values()))
        if stop_pods:
            for sandbox in await self.runtime.list_sandboxes():
                await self.runtime.remove_sandbox(sandbox.id)
        else:
            await self.runtime.detach_all()


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _machine_id() -> str:
    return _read("/etc/machine-id")


def _boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id")


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "Linux"
