"""The persistent volume controller (upstream's persistentvolume-binder, -expander, pvc-protection
and pv-protection in one loop), for the contract in docs/volumes.md:

- a pending claim binds to an available PersistentVolume of its own tenant (same class, enough
  capacity, its access modes and volumeMode, its selector), the smallest that fits; failing that,
  a class whose provisioner is `local.hypernetes.io` gets it a new PV `pvc-<claim uid>` on the
  Ready node holding the least PV capacity. Binding writes PV.spec.claimRef, PV status Bound,
  claim.spec.volumeName, claim status Bound (access modes, capacity), in that order, each step
  idempotent, so an interrupted bind is finished by the next sync;
- a bound claim asking for more than its PV holds (its class allows expansion: admission checked)
  grows the PV's capacity and gets `FileSystemResizePending`; the node grows the disk when a pod
  next starts with it and writes the claim's new status.capacity;
- a PV whose claim is gone is Released; reclaim policy Delete deletes the PV object (the node
  deletes the backing file, then its `local.hypernetes.io/backing-file` finalizer), Retain keeps it;
- `kubernetes.io/pvc-protection` leaves a deleted claim only when no unfinished pod uses it;
  `kubernetes.io/pv-protection` leaves a deleted PV once it is not Bound.

Tenancy: a claim never binds to a PV of another tenant; such a PV is treated exactly as one that
does not exist (no event or status tells them apart), so claims cannot probe for other tenants'
volume names.

The helpers at the top are pure, shared with tenant admission and the tenant controller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller, Retry
from hypernetes.controllers.informer import Handler, InformerFactory
from hypernetes.objects import Obj
from hypernetes.objects.meta import condition_true
from hypernetes.objects.names import (
    BACKING_FILE_FINALIZER,
    BETA_DEFAULT_CLASS_ANNOTATION,
    BETA_STORAGE_CLASS_ANNOTATION,
    DEFAULT_CLASS_ANNOTATION,
    HOSTNAME_LABEL,
    PV_PROTECTION_FINALIZER,
    PVC_PROTECTION_FINALIZER,
    TENANT_LABEL,
)
from hypernetes.objects.quantity import quantity_value
from hypernetes.volumes.local import VolumeError
from hypernetes.volumes.objects import LOCAL_DRIVER, pv_node
from hypernetes.volumes.rbd import RbdVolumes
from hypernetes.volumes.rbd_objects import (
    DEFAULT_FEATURES,
    EXPAND_SECRET,
    FSTYPE,
    IMAGE_FEATURES,
    NODE_SECRET,
    POOL,
    PROVISIONER_SECRET,
    RBD_DRIVER,
    credentials_from_secret,
    secret_ref,
)

log = logging.getLogger(__name__)

BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
RESIZE_PENDING = "FileSystemResizePending"
RESIZE_MESSAGE = "Waiting for user to (re-)start a pod to finish file system resize of volume on node."
LOST_MESSAGE = "Bound claim has lost its PersistentVolume. Data on the volume is lost!"
PROVISIONERS = (LOCAL_DRIVER, RBD_DRIVER)

# -- pure helpers ------------------------------------------------------------------------------


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _status(obj: Obj) -> Obj:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _quantity_of(holder: Any) -> int:
    value = holder.get("storage") if isinstance(holder, dict) else None
    if value is None:
        return 0
    try:
        return quantity_value(value)
    except ValueError:
        return 0


def claim_request(claim: Obj) -> int:
    """spec.resources.requests.storage in bytes (0 if absent or invalid)."""
    return _quantity_of((_spec(claim).get("resources") or {}).get("requests"))


def claim_class(claim: Obj) -> str:
    """The claim's class: the beta annotation wins, as upstream's GetPersistentVolumeClaimClass."""
    beta = ((claim.get("metadata") or {}).get("annotations") or {}).get(BETA_STORAGE_CLASS_ANNOTATION)
    return str(beta if beta is not None else _spec(claim).get("storageClassName") or "")


def pv_class(pv: Obj) -> str:
    beta = ((pv.get("metadata") or {}).get("annotations") or {}).get(BETA_STORAGE_CLASS_ANNOTATION)
    return str(beta if beta is not None else _spec(pv).get("storageClassName") or "")


def pv_capacity(pv: Obj) -> int:
    return _quantity_of(_spec(pv).get("capacity"))


def tenant_of(obj: Obj) -> str | None:
    """The tenant label of a PV (or a namespace); None for operators'."""
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(TENANT_LABEL)
    return value if isinstance(value, str) and value else None


def is_default_class(sc: Obj) -> bool:
    notes = (sc.get("metadata") or {}).get("annotations") or {}
    return notes.get(DEFAULT_CLASS_ANNOTATION) == "true" or notes.get(BETA_DEFAULT_CLASS_ANNOTATION) == "true"


def default_class(classes: Iterable[Obj]) -> Obj | None:
    """The default StorageClass; with several, the newest (then the first by name), as upstream."""
    found = [c for c in classes if is_default_class(c) and not m.deleting(c)]
    if not found:
        return None
    found.sort(key=lambda c: m.name(c))
    return max(found, key=lambda c: str(m.meta(c).get("creationTimestamp") or ""))


def pod_claims(pod: Obj) -> set[str]:
    """The claim names a pod's volumes use."""
    names = set()
    for v in _spec(pod).get("volumes") or []:
        ref = v.get("persistentVolumeClaim") if isinstance(v, dict) else None
        if isinstance(ref, dict) and ref.get("claimName"):
            names.add(str(ref["claimName"]))
    return names


def pod_finished(pod: Obj) -> bool:
    return _status(pod).get("phase") in ("Succeeded", "Failed")


def storage_usage(claims: Iterable[Obj]) -> tuple[int, int]:
    """(claims, bytes requested) as tenant quotas count them: every claim that exists, being
    deleted or not (its volume holds the space until it is gone), as upstream's quota does."""
    count = total = 0
    for claim in claims:
        count += 1
        total += claim_request(claim)
    return count, total


def _node_ready(node: Obj) -> bool:
    if _spec(node).get("unschedulable"):
        return False
    return condition_true(_status(node), "Ready")


def _has_modes(pv: Obj, wanted: Iterable[str]) -> bool:
    return set(wanted) <= set(_spec(pv).get("accessModes") or [])


def pv_driver(pv: Obj) -> str:
    csi = _spec(pv).get("csi")
    return str(csi.get("driver") or "") if isinstance(csi, dict) else ""


def _mode(obj: Obj) -> str:
    return str(_spec(obj).get("volumeMode") or "Filesystem")


def _ref_names(ref: Any, claim: Obj) -> bool:
    """A PV's claimRef names this claim (and this incarnation of it, when it has a uid)."""
    if not isinstance(ref, dict):
        return False
    return (
        ref.get("namespace") == m.namespace(claim)
        and ref.get("name") == m.name(claim)
        and (not ref.get("uid") or ref.get("uid") == m.uid(claim))
    )


def selector_ok(claim: Obj, pv: Obj) -> bool:
    sel = _spec(claim).get("selector")
    return sel is None or m.selector_matches(sel, m.labels(pv))


def mismatch(pv: Obj, claim: Obj) -> str | None:
    """Why `pv` cannot hold `claim`, as upstream's checkVolumeSatisfyClaim words it; None if it can."""
    if m.deleting(pv):
        return "volume is being deleted"
    if _status(pv).get("phase") in ("Released", "Failed"):
        return f"volume is {_status(pv)['phase']}"
    if pv_capacity(pv) < claim_request(claim):
        return "requested PV is too small"
    if pv_class(pv) != claim_class(claim):
        return "storageClassName does not match"
    if _mode(pv) != _mode(claim):
        return "incompatible volumeMode"
    if not _has_modes(pv, _spec(claim).get("accessModes") or []):
        return "incompatible accessMode"
    if not selector_ok(claim, pv):
        return "volume does not match the claim's selector"
    return None


# -- the controller ----------------------------------------------------------------------------


class VolumeController(Controller):
    """Keys with a "/" are claims ("ns/name"), keys without are PVs (cluster-scoped names)."""

    name = "persistentvolume"

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.claims = self.informer("v1", "persistentvolumeclaims")
        self.volumes = self.informer("v1", "persistentvolumes")
        self.classes = self.informer("storage.k8s.io/v1", "storageclasses")
        self.nodes = self.informer("v1", "nodes")
        self.pods = self.informer("v1", "pods")
        self.namespaces = self.informer("v1", "namespaces")
        self.claims.add_handler(
            Handler(add=self._claim, update=lambda old, new: self._claim(new), delete=self._claim_gone)
        )
        self.volumes.add_handler(
            Handler(add=self._volume, update=lambda old, new: self._volume(new), delete=self._volume_gone)
        )
        self.pods.add_handler(
            Handler(add=self._pod, update=lambda old, new: self._pod(new), delete=self._pod)
        )
        self.classes.add_handler(
            Handler(add=lambda sc: self._pending(), update=lambda old, new: self._pending())
        )
        self.nodes.add_handler(Handler(add=lambda n: self._pending(), update=self._node_changed))
        self.namespaces.add_handler(Handler(update=self._namespace_changed))
        # PVs created but not yet seen by the informer: name -> (node, bytes), for node choice
        self._provisioned: dict[str, tuple[str, int]] = {}
        # the last event said about each object (by uid): the same one is not repeated every sync
        self._said: dict[str, tuple[str, str]] = {}

    # -- handlers ------------------------------------------------------------------------------

    def _claim(self, claim: Obj) -> None:
        self.enqueue(claim)
        if _spec(claim).get("volumeName"):
            self.queue.add(str(_spec(claim)["volumeName"]))

    def _claim_gone(self, claim: Obj) -> None:
        self._said.pop(m.uid(claim), None)
        if _spec(claim).get("volumeName"):
            self.queue.add(str(_spec(claim)["volumeName"]))
        for pv in self.volumes.list():
            if _ref_names(_spec(pv).get("claimRef"), claim):
                self.queue.add(m.name(pv))

    def _volume(self, pv: Obj) -> None:
        self._provisioned.pop(m.name(pv), None)
        self.queue.add(m.name(pv))
        ref = _spec(pv).get("claimRef")
        if isinstance(ref, dict) and ref.get("name"):
            self.queue.add(f"{ref.get('namespace')}/{ref['name']}")
        if not isinstance(ref, dict) or not ref.get("uid"):
            self._pending()  # a static PV may satisfy a waiting claim

    def _volume_gone(self, pv: Obj) -> None:
        self._provisioned.pop(m.name(pv), None)
        self._said.pop(m.uid(pv), None)
        ref = _spec(pv).get("claimRef")
        if isinstance(ref, dict) and ref.get("name"):
            self.queue.add(f"{ref.get('namespace')}/{ref['name']}")

    def _pod(self, pod: Obj) -> None:
        for name in pod_claims(pod):
            claim = self.claims.get(f"{m.namespace(pod)}/{name}")
            if claim is not None and m.deleting(claim):
                self.enqueue(claim)

    def _node_changed(self, old: Obj, new: Obj) -> None:
        if _node_ready(old) != _node_ready(new):  # not every heartbeat
            self._pending()

    def _namespace_changed(self, old: Obj, new: Obj) -> None:
        if tenant_of(old) != tenant_of(new):
            for claim in self.claims.list(m.name(new)):
                self.enqueue(claim)

    def _pending(self) -> None:
        for claim in self.claims.list():
            if (_status(claim).get("phase") or "Pending") == "Pending":
                self.enqueue(claim)

    # -- events --------------------------------------------------------------------------------

    async def _say(self, obj: Obj, etype: str, reason: str, message: str) -> None:
        if self._said.get(m.uid(obj)) == (reason, message):
            return
        self._said[m.uid(obj)] = (reason, message)
        await self.events.record(obj, etype, reason, message)

    # -- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        if "/" in key:
            await self._sync_claim(key)
        else:
            await self._sync_volume(key)

    def _tenant(self, namespace: str) -> tuple[bool, str | None]:
        """(known, tenant) of a namespace from the cache."""
        ns = self.namespaces.get(namespace)
        return (ns is not None, tenant_of(ns) if ns is not None else None)

    def _volume_for(self, name: str, tenant: str | None) -> Obj | None:
        """The PV of that name if it is this tenant's; another tenant's is as good as absent."""
        pv = self.volumes.get(name)
        return pv if pv is not None and tenant_of(pv) == tenant else None

    async def _sync_claim(self, key: str) -> None:
        claim = self.claims.get(key)
        if claim is None:
            return
        if m.deleting(claim):
            await self._protect(claim)
            return
        known, tenant = self._tenant(m.namespace(claim))
        if not known:  # the namespace informer is behind the claim's
            self.queue.add_after(key, 0.5)
            return
        volume_name = str(_spec(claim).get("volumeName") or "")
        if volume_name:
            await self._sync_named(claim, volume_name, tenant)
            return
        await self._sync_unbound(claim, tenant)

    async def _sync_named(self, claim: Obj, volume_name: str, tenant: str | None) -> None:
        """A claim that names its volume: bound by us, or pre-bound by its author."""
        phase = _status(claim).get("phase") or "Pending"
        pv = self._volume_for(volume_name, tenant)
        if pv is None:
            if phase in ("Bound", "Lost"):  # Lost stays so until the volume comes back
                await self._claim_phase(claim, "Lost")
                await self._say(claim, "Warning", "ClaimLost", LOST_MESSAGE)
            else:
                await self._claim_phase(claim, "Pending")  # waits for the volume, silently
            return
        ref = _spec(pv).get("claimRef")
        if _ref_names(ref, claim):
            bound = await self._bind(pv, claim)
            if bound is not None:
                await self._expand(bound)
            return
        if not isinstance(ref, dict) or not ref.get("name"):
            why = mismatch(pv, claim)
            if why is None:
                await self._bind(pv, claim)
                return
            await self._claim_phase(claim, "Pending")
            await self._say(
                claim, "Warning", "VolumeMismatch", f'Cannot bind to requested volume "{volume_name}": {why}'
            )
            return
        if phase == "Bound":
            await self._claim_phase(claim, "Lost")
            await self._say(
                claim,
                "Warning",
                "ClaimMisbound",
                "Two claims are bound to the same volume, this one is bound incorrectly",
            )
            return
        await self._claim_phase(claim, "Pending")
        await self._say(
            claim, "Warning", "FailedBinding", f'volume "{volume_name}" already bound to a different claim.'
        )

    async def _sync_unbound(self, claim: Obj, tenant: str | None) -> None:
        spec = _spec(claim)
        notes = m.meta(claim).get("annotations") or {}
        if "storageClassName" not in spec and BETA_STORAGE_CLASS_ANNOTATION not in notes:
            # retroactive default class (upstream 1.28+): a claim made while there was none
            default = default_class(self.classes.list())
            if default is not None:
                await self._write_claim(claim, {"spec": {"storageClassName": m.name(default)}})
                return
        mine = [pv for pv in self.volumes.list() if tenant_of(pv) == tenant]
        for pv in mine:  # pre-bound by an operator (claimRef without uid, or ours from a crash)
            if _ref_names(_spec(pv).get("claimRef"), claim) and mismatch(pv, claim) is None:
                await self._bind(pv, claim)
                return
        free = [
            pv
            for pv in mine
            if not (_spec(pv).get("claimRef") or {}).get("name") and mismatch(pv, claim) is None
        ]
        if free:
            best = min(free, key=lambda pv: (pv_capacity(pv), m.name(pv)))
            await self._bind(best, claim)
            return
        cls_name = claim_class(claim)
        cls = self.classes.get(cls_name) if cls_name else None
        if cls is not None and cls.get("provisioner") in PROVISIONERS and not m.deleting(cls):
            await self._provision(claim, cls, tenant)
        elif cls is not None:
            await self._claim_phase(claim, "Pending")
            await self._say(
                claim,
                "Normal",
                "ExternalProvisioning",
                f"Waiting for a volume to be created either by the external provisioner "
                f"'{cls.get('provisioner')}' or manually by the system administrator. If "
                "volume creation is delayed, please verify that the provisioner is running "
                "and correctly registered.",
            )
        elif cls_name:
            await self._claim_phase(claim, "Pending")
            await self._say(
                claim, "Warning", "ProvisioningFailed", f'storageclass.storage.k8s.io "{cls_name}" not found'
            )
        else:
            await self._claim_phase(claim, "Pending")
            await self._say(
                claim,
                "Normal",
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            )

    # -- provisioning --------------------------------------------------------------------------

    def pick_node(self) -> str | None:
        """The Ready, schedulable node holding the least PV capacity (then the first by name)."""
        used = {m.name(n): 0 for n in self.nodes.list() if _node_ready(n)}
        for pv in self.volumes.list():
            node = pv_node(pv)
            if node in used:
                used[node] += pv_capacity(pv)
        for name, (node, size) in self._provisioned.items():
            if node in used and self.volumes.get(name) is None:
                used[node] += size
        if not used:
            return None
        return min(used, key=lambda n: (used[n], n))

    async def _provision(self, claim: Obj, cls: Obj, tenant: str | None) -> None:
        name = f"pvc-{m.uid(claim)}"
        if name in self._provisioned:
            return  # made; its informer event brings the claim back to bind it
        if _spec(claim).get("selector") is not None:
            await self._claim_phase(claim, "Pending")
            await self._say(claim, "Warning", "ProvisioningFailed", "claim Selector is not supported")
            return
        node = self.pick_node() if cls.get("provisioner") == LOCAL_DRIVER else ""  # RBD: any node
        if node is None:
            await self._claim_phase(claim, "Pending")
            await self._say(
                claim,
                "Warning",
                "ProvisioningFailed",
                f'failed to provision volume with StorageClass "{m.name(cls)}": '
                "no Ready node to put the volume on",
            )
            return
        # reserved before the first await: the other worker's next pick counts it
        self._provisioned[name] = (node, claim_request(claim))
        try:
            made = await self._create_volume(claim, cls, tenant, node)
        except BaseException:
            self._provisioned.pop(name, None)
            raise
        if not made:
            self._provisioned.pop(name, None)

    async def _create_volume(self, claim: Obj, cls: Obj, tenant: str | None, node: str) -> bool:
        notes = m.meta(claim).get("annotations") or {}
        driver = str(cls.get("provisioner"))
        if notes.get(STORAGE_PROVISIONER) != driver:
            written = await self._write_claim(
                claim,
                {
                    "metadata": {
                        "annotations": {
                            STORAGE_PROVISIONER: driver,
                            BETA_STORAGE_PROVISIONER: driver,
                        }
                    }
                },
            )
            if written is None:
                return False
            claim = written
        await self._say(
            claim,
            "Normal",
            "Provisioning",
            f'External provisioner is provisioning volume for claim "{m.namespace(claim)}/{m.name(claim)}"',
        )
        pv = self.volume_for_claim(claim, cls, tenant, node)
        if driver == RBD_DRIVER:
            await self._create_image(claim, cls, pv)
        try:
            await self.client.create("v1", "persistentvolumes", pv)
        except ApiException as e:
            if e.status != 409:  # 409: made by an earlier sync whose PV the informer has not shown yet
                await self._say(
                    claim,
                    "Warning",
                    "ProvisioningFailed",
                    f'failed to provision volume with StorageClass "{m.name(cls)}": {e}',
                )
                raise
        await self._say(
            claim,
            "Normal",
            "ProvisioningSucceeded",
            f"Successfully provisioned volume {pv['metadata']['name']}",
        )
        return True

    # -- Ceph RBD (docs/volumes.md, "Ceph RBD"): the images are made, grown and deleted here, as
    # ceph-csi's controller plugin does behind upstream's external-provisioner and -resizer

    async def _rbd(self, secret: tuple[str, str] | None, pool: str) -> RbdVolumes:
        """The backend as the cephx user a class's Secret names; VolumeError says what is wrong."""
        if secret is None:
            raise VolumeError("the StorageClass names no Secret for this")
        ns, name = secret
        obj = await self.client.get_or_none("v1", "secrets", name, ns)
        if obj is None:
            raise VolumeError(f'secret "{ns}/{name}" not found')
        try:
            creds = credentials_from_secret(obj)
        except ValueError as e:
            raise VolumeError(f'secret "{ns}/{name}": {e}') from None
        return RbdVolumes(creds, pool)

    async def _create_image(self, claim: Obj, cls: Obj, pv: Obj) -> None:
        params = cls.get("parameters") or {}
        csi = _spec(pv)["csi"]
        try:
            rbd = await self._rbd(secret_ref(params, PROVISIONER_SECRET), str(params.get(POOL)))
            fs = None if _mode(claim) == "Block" else str(csi.get("fsType") or "ext4")
            features = str(params.get(IMAGE_FEATURES) or DEFAULT_FEATURES)
            await asyncio.to_thread(rbd.create, csi["volumeHandle"], claim_request(claim), features, fs)
        except VolumeError as e:
            await self._claim_phase(claim, "Pending")
            await self._say(
                claim,
                "Warning",
                "ProvisioningFailed",
                f'failed to provision volume with StorageClass "{m.name(cls)}": {e}',
            )
            raise Retry(str(e)) from None

    def _pv_secret(self, pv: Obj, role: str) -> tuple[str, str] | None:
        """A Secret for work on an existing image: the class's (if it still exists), else the
        expander's reference the PV carries."""
        cls = self.classes.get(pv_class(pv))
        if cls is not None and cls.get("provisioner") == RBD_DRIVER:
            found = secret_ref(cls.get("parameters") or {}, role)
            if found is not None:
                return found
        ref = _spec(pv)["csi"].get("controllerExpandSecretRef") or {}
        return (str(ref["namespace"]), str(ref["name"])) if ref.get("name") and ref.get("namespace") else None

    async def _delete_image(self, pv: Obj) -> None:
        csi = _spec(pv)["csi"]
        pool = str((csi.get("volumeAttributes") or {}).get(POOL))
        try:
            rbd = await self._rbd(self._pv_secret(pv, PROVISIONER_SECRET), pool)
            await asyncio.to_thread(rbd.delete, str(csi.get("volumeHandle")))
        except VolumeError as e:
            # retried with back-off: a VM still holding the image, or Ceph away for a while
            await self._say(pv, "Warning", "VolumeFailedDelete", str(e))
            raise Retry(str(e)) from None

    async def _grow_image(self, pv: Obj, claim: Obj, size: int) -> bool:
        csi = _spec(pv)["csi"]
        pool = str((csi.get("volumeAttributes") or {}).get(POOL))
        try:
            rbd = await self._rbd(self._pv_secret(pv, EXPAND_SECRET), pool)
            await asyncio.to_thread(rbd.resize, str(csi.get("volumeHandle")), size)
        except VolumeError as e:
            await self._say(claim, "Warning", "VolumeResizeFailed", str(e))
            raise Retry(str(e)) from None
        return True

    @staticmethod
    def volume_for_claim(claim: Obj, cls: Obj, tenant: str | None, node: str) -> Obj:
        """The PV the contract (docs/volumes.md) prescribes for a claim of a local or RBD class."""
        spec, params = _spec(claim), cls.get("parameters") or {}
        name = f"pvc-{m.uid(claim)}"
        if cls.get("provisioner") == RBD_DRIVER:
            return VolumeController._rbd_volume(claim, cls, tenant, name)
        meta: Obj = {
            "name": name,
            "annotations": {PROVISIONED_BY: LOCAL_DRIVER},
            "finalizers": [PV_PROTECTION_FINALIZER, BACKING_FILE_FINALIZER],
        }
        if tenant:
            meta["labels"] = {TENANT_LABEL: tenant}
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": meta,
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": list(spec.get("accessModes") or []),
                "volumeMode": _mode(claim),
                "persistentVolumeReclaimPolicy": cls.get("reclaimPolicy") or "Delete",
                "storageClassName": m.name(cls),
                "claimRef": {
                    "kind": "PersistentVolumeClaim",
                    "apiVersion": "v1",
                    "namespace": m.namespace(claim),
                    "name": m.name(claim),
                    "uid": m.uid(claim),
                },
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}
                                ]
                            }
                        ]
                    }
                },
                "csi": {
                    "driver": LOCAL_DRIVER,
                    "volumeHandle": name,
                    "fsType": params.get("fsType") or "ext4",
                    "volumeAttributes": {"format": params.get("format") or "raw"},
                },
            },
        }

    @staticmethod
    def _rbd_volume(claim: Obj, cls: Obj, tenant: str | None, name: str) -> Obj:
        spec, params = _spec(claim), cls.get("parameters") or {}
        meta: Obj = {
            "name": name,
            "annotations": {PROVISIONED_BY: RBD_DRIVER},
            "finalizers": [PV_PROTECTION_FINALIZER],
        }
        if tenant:
            meta["labels"] = {TENANT_LABEL: tenant}
        node_ns, node_name = secret_ref(params, NODE_SECRET) or ("", "")
        expand_ns, expand_name = secret_ref(params, EXPAND_SECRET) or ("", "")
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": meta,
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": list(spec.get("accessModes") or []),
                "volumeMode": _mode(claim),
                "persistentVolumeReclaimPolicy": cls.get("reclaimPolicy") or "Delete",
                "storageClassName": m.name(cls),
                "claimRef": {
                    "kind": "PersistentVolumeClaim",
                    "apiVersion": "v1",
                    "namespace": m.namespace(claim),
                    "name": m.name(claim),
                    "uid": m.uid(claim),
                },
                # no nodeAffinity: any node reaches the cluster
                "csi": {
                    "driver": RBD_DRIVER,
                    "volumeHandle": name,
                    "fsType": params.get(FSTYPE) or "ext4",
                    "volumeAttributes": {
                        POOL: params.get(POOL),
                        IMAGE_FEATURES: params.get(IMAGE_FEATURES) or DEFAULT_FEATURES,
                    },
                    "nodeStageSecretRef": {"name": node_name, "namespace": node_ns},
                    "controllerExpandSecretRef": {"name": expand_name, "namespace": expand_ns},
                },
            },
        }

    # -- binding -------------------------------------------------------------------------------

    async def _bind(self, pv: Obj, claim: Obj) -> Obj | None:
        """Finish binding `claim` to `pv` (every step that is not done yet); the claim as written,
        None if an object went away meanwhile."""
        ref = _spec(pv).get("claimRef") or {}
        if ref.get("uid") != m.uid(claim):
            new_ref = {
                "kind": "PersistentVolumeClaim",
                "apiVersion": "v1",
                "namespace": m.namespace(claim),
                "name": m.name(claim),
                "uid": m.uid(claim),
            }
            patch: Obj = {"spec": {"claimRef": new_ref}}
            if not ref.get("name"):  # not pre-bound by its author: ours to undo if the claim goes elsewhere
                patch["metadata"] = {"annotations": {BOUND_BY_CONTROLLER: "yes"}}
            written = await self._write_volume(pv, patch)
            if written is None:
                return None
            pv = written
        if _status(pv).get("phase") != "Bound":
            written = await self._volume_status(pv, "Bound")
            if written is None:
                return None
            pv = written
        notes = m.meta(claim).get("annotations") or {}
        if _spec(claim).get("volumeName") != m.name(pv) or notes.get(BIND_COMPLETED) != "yes":
            claim_patch: Obj = {"metadata": {"annotations": {BIND_COMPLETED: "yes"}}}
            if _spec(claim).get("volumeName") != m.name(pv):
                claim_patch["metadata"]["annotations"][BOUND_BY_CONTROLLER] = "yes"
                claim_patch["spec"] = {"volumeName": m.name(pv)}
            written = await self._write_claim(claim, claim_patch)
            if written is None:
                return None
            claim = written
        status = _status(claim)
        want: Obj = {}
        if status.get("phase") != "Bound":
            want["phase"] = "Bound"
        if status.get("accessModes") != _spec(pv).get("accessModes"):
            want["accessModes"] = _spec(pv).get("accessModes")
        if not (status.get("capacity") or {}).get("storage"):
            # later growth is written by the node once the disk has grown (docs/volumes.md)
            want["capacity"] = {"storage": (_spec(pv).get("capacity") or {}).get("storage")}
        if want:
            return await self._claim_status(claim, want)
        return claim

    # -- expansion -----------------------------------------------------------------------------

    async def _expand(self, claim: Obj) -> None:
        pv = self.volumes.get(str(_spec(claim).get("volumeName")))
        if pv is None:
            return
        want, have = claim_request(claim), pv_capacity(pv)
        status = _status(claim)
        if want > have:
            cls = self.classes.get(claim_class(claim))
            if cls is None or cls.get("allowVolumeExpansion") is not True:
                await self._say(
                    claim,
                    "Warning",
                    "VolumeResizeFailed",
                    f'storageclass "{claim_class(claim)}" does not allow volume expansion',
                )
                return
            await self._say(
                claim, "Normal", "ExternalExpanding", "waiting for an external controller to expand this PVC"
            )
            await self._say(claim, "Normal", "Resizing", f"External resizer is resizing volume {m.name(pv)}")
            storage = _spec(claim)["resources"]["requests"]["storage"]
            if pv_driver(pv) == RBD_DRIVER:
                await self._grow_image(pv, claim, want)  # live: a VM using it is told by its node
            if await self._write_volume(pv, {"spec": {"capacity": {"storage": storage}}}) is None:
                return
        elif want <= _quantity_of(status.get("capacity")):
            return  # done (or never needed): the node wrote the new capacity
        if pv_driver(pv) == RBD_DRIVER and _mode(claim) == "Block":
            # nothing for a node to do offline: the image is the device (a running VM is told
            # by its node); a filesystem waits for the guest (docs/volumes.md, "Ceph RBD")
            storage = _spec(claim)["resources"]["requests"]["storage"]
            await self._claim_status(claim, {"capacity": {"storage": storage}})
            return
        if m.get_condition(status, RESIZE_PENDING) is not None:
            return
        storage = _spec(claim)["resources"]["requests"]["storage"]
        cond = m.condition(RESIZE_PENDING, "True", "", RESIZE_MESSAGE)
        del cond["reason"]
        new_status = {
            "conditions": [*(status.get("conditions") or []), cond],
            "allocatedResources": {"storage": storage},
            "allocatedResourceStatuses": {"storage": "NodeResizePending"},
        }
        if await self._claim_status(claim, new_status) is not None:
            await self._say(
                claim, "Normal", "FileSystemResizeRequired", "Require file system resize of volume on node"
            )

    # -- protection ----------------------------------------------------------------------------

    def _users(self, claim: Obj, pods: Iterable[Obj]) -> list[str]:
        name = m.name(claim)
        return [m.name(p) for p in pods if not pod_finished(p) and name in pod_claims(p)]

    async def _protect(self, claim: Obj) -> None:
        """Remove pvc-protection from a deleted claim once no unfinished pod uses it."""
        finalizers = list(m.meta(claim).get("finalizers") or [])
        if PVC_PROTECTION_FINALIZER not in finalizers:
            return
        if self._users(claim, self.pods.list(m.namespace(claim))):
            return  # the pods' events bring it back
        # the cache may not have a pod made a moment ago: ask the API, as upstream does
        listed = await self.client.list("v1", "pods", m.namespace(claim))
        if self._users(claim, listed.get("items") or []):
            return
        rest = [f for f in finalizers if f != PVC_PROTECTION_FINALIZER]
        await self._write_claim(claim, {"metadata": {"finalizers": rest or None}})

    # -- volumes -------------------------------------------------------------------------------

    async def _sync_volume(self, name: str) -> None:
        pv = self.volumes.get(name)
        if pv is None:
            return
        ref = _spec(pv).get("claimRef")
        phase = "Available"
        if isinstance(ref, dict) and ref.get("uid"):
            key = f"{ref.get('namespace')}/{ref.get('name')}"
            claim = self.claims.get(key)
            if claim is None or m.uid(claim) != ref["uid"]:
                # confirm with a fresh read before releasing anything, as upstream does
                claim = await self.client.get_or_none(
                    "v1", "persistentvolumeclaims", str(ref.get("name")), str(ref.get("namespace"))
                )
            if claim is None or m.uid(claim) != ref["uid"]:
                phase = "Failed" if _status(pv).get("phase") == "Failed" else "Released"
            elif _spec(claim).get("volumeName") == name:
                phase = "Bound"
            elif not _spec(claim).get("volumeName"):
                phase = _status(pv).get("phase") or "Pending"  # binding in progress: the claim finishes it
                if phase not in ("Pending", "Available", "Bound"):
                    phase = "Available"
            elif (m.meta(pv).get("annotations") or {}).get(BOUND_BY_CONTROLLER):
                # our binding lost the race: the claim went elsewhere; free the volume
                unbind = {
                    "metadata": {"annotations": {BOUND_BY_CONTROLLER: None}},
                    "spec": {"claimRef": None},
                }
                written = await self._write_volume(pv, unbind)
                if written is None:
                    return
                pv = written
        if _status(pv).get("phase") != phase:
            written = await self._volume_status(pv, phase)
            if written is None:
                return
            pv = written
        if phase == "Released" and not m.deleting(pv):
            if _spec(pv).get("persistentVolumeReclaimPolicy") == "Delete":
                if pv_driver(pv) == RBD_DRIVER:
                    await self._delete_image(pv)  # then the object, as external-provisioner does
                try:
                    await self.client.delete(
                        "v1", "persistentvolumes", name, body={"preconditions": {"uid": m.uid(pv)}}
                    )
                except ApiException as e:
                    if e.status == 409:
                        raise
                    await self._volume_status(pv, "Failed", "VolumeFailedDelete", str(e))
                    await self._say(pv, "Warning", "VolumeFailedDelete", str(e))
            return
        protected = PV_PROTECTION_FINALIZER in (m.meta(pv).get("finalizers") or [])
        if m.deleting(pv) and phase != "Bound" and protected:
            rest = [f for f in m.meta(pv).get("finalizers") or [] if f != PV_PROTECTION_FINALIZER]
            await self._write_volume(pv, {"metadata": {"finalizers": rest or None}})

    # -- writes (merge patches guarded by the resourceVersion read; a 409 requeues) -------------

    async def _write(
        self, informer: Any, plural: str, obj: Obj, patch: Obj, subresource: str | None = None
    ) -> Obj | None:
        patch = {
            **patch,
            "metadata": {
                **(patch.get("metadata") or {}),
                "resourceVersion": m.meta(obj).get("resourceVersion"),
            },
        }
        try:
            out: Obj = await self.client.patch(
                "v1", plural, m.name(obj), patch, m.namespace(obj) or None, subresource=subresource
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        informer.written(out)
        return out

    async def _write_claim(self, claim: Obj, patch: Obj) -> Obj | None:
        return await self._write(self.claims, "persistentvolumeclaims", claim, patch)

    async def _write_volume(self, pv: Obj, patch: Obj) -> Obj | None:
        return await self._write(self.volumes, "persistentvolumes", pv, patch)

    async def _claim_status(self, claim: Obj, status: Obj) -> Obj | None:
        return await self._write(self.claims, "persistentvolumeclaims", claim, {"status": status}, "status")

    async def _claim_phase(self, claim: Obj, phase: str) -> None:
        if _status(claim).get("phase") != phase:
            await self._claim_status(claim, {"phase": phase})

    async def _volume_status(self, pv: Obj, phase: str, reason: str = "", message: str = "") -> Obj | None:
        status: Obj = {
            "phase": phase,
            "lastPhaseTransitionTime": m.rfc3339(),
            "reason": reason or None,
            "message": message or None,
        }
        return await self._write(self.volumes, "persistentvolumes", pv, {"status": status}, "status")
