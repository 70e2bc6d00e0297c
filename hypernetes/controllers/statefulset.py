"""The StatefulSet controller (upstream pkg/controller/statefulset): pods named `<set>-<ordinal>`
with hostname and subdomain set (so the governing headless service names each one in DNS), each
with its own claims `<template>-<set>-<ordinal>` made before the pod and kept when it goes
(unless persistentVolumeClaimRetentionPolicy says Delete).

OrderedReady makes pods one at a time in ordinal order, each once the ones before are Running
and Ready, and removes them in reverse order; Parallel makes and removes them all at once. Updates
replace one pod at a time from the highest ordinal down to `partition` (RollingUpdate), or only
when someone deletes a pod (OnDelete); every template is kept as a ControllerRevision
(controllers/history.py), the status names the current and update revisions, and `kubectl
rollout status/history/undo` read them."""

from __future__ import annotations

import logging
import re

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import history as h
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Retry, namespace_terminating, update_status
from hypernetes.controllers.informer import InformerFactory
from hypernetes.controllers.podsets import PodSetController
from hypernetes.objects import Obj

log = logging.getLogger(__name__)

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
_ORDINAL = re.compile(r"^(.*)-([0-9]+)$")


def ordinal_of(pod: Obj) -> int | None:
    match = _ORDINAL.match(m.name(pod))
    return int(match.group(2)) if match else None


def member_of(sts: Obj, pod: Obj) -> bool:
    """upstream's isMemberOf: the pod's name is `<set>-<ordinal>`."""
    match = _ORDINAL.match(m.name(pod))
    return match is not None and match.group(1) == m.name(sts)


def claim_name(template: Obj, sts: Obj, ordinal: int) -> str:
    return f"{(template.get('metadata') or {}).get('name')}-{m.name(sts)}-{ordinal}"


def healthy(pod: Obj) -> bool:
    return m.pod_phase(pod) == "Running" and m.pod_ready(pod) and not m.deleting(pod)


def _spec(sts: Obj) -> Obj:
    spec: Obj = sts.get("spec") or {}
    return spec


def _partition(sts: Obj) -> int:
    strategy = _spec(sts).get("updateStrategy") or {}
    return int((strategy.get("rollingUpdate") or {}).get("partition") or 0)


def _rolling(sts: Obj) -> bool:
    return bool((_spec(sts).get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate")


class StatefulSetController(PodSetController):
    name = "statefulset"
    kind = "StatefulSet"
    plural = "statefulsets"
    workers = 2

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.claims = self.informer("v1", "persistentvolumeclaims")

    # -- events --------------------------------------------------------------------------------

    def _pod_moved(self, old: Obj, new: Obj) -> None:
        old_key = self._owner_key(old)
        if old_key is not None and old_key != self._owner_key(new):
            self.queue.add(old_key)
        self._pod(new)
        self._requeue_when_available(self._owner_key(new), old, new)

    # -- sync ----------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        sts = self.sets.get(key)
        if sts is None:
            return
        spec = _spec(sts)
        candidates = [p for p in self.pods.list(m.namespace(sts)) if member_of(sts, p)]
        pods = await self._claim(sts, candidates)
        history = h.owned(self.revisions, sts)
        update = await self._update_revision(sts, history)
        current = history.named((sts.get("status") or {}).get("currentRevision")) or update
        failure: Exception | None = None
        if not m.deleting(sts):
            try:
                await self._manage(sts, pods, current, update)
            except (ApiException, Retry) as e:
                failure = e
        await self._status(sts, self.pods_of(sts), current, update)
        keep = {m.name(current), m.name(update)} | {
            m.labels(p).get(h.REVISION_LABEL, "") for p in self.pods_of(sts)
        }
        await h.truncate(self.client, sts, history, keep, int(spec.get("revisionHistoryLimit", 10)))
        if failure is not None:
            raise failure
        min_ready = int(spec.get("minReadySeconds") or 0)
        if min_ready and any(m.pod_ready(p) and not m.pod_available(p, min_ready) for p in pods):
            self.queue.add_after(key, min_ready)

    def pods_of(self, sts: Obj) -> list[Obj]:
        """The set's pods as the cache holds them now (after this sync's own writes)."""
        return [p for p in self.pods.list(m.namespace(sts)) if m.controlled_by(p, sts) and member_of(sts, p)]

    async def _manage(self, sts: Obj, pods: list[Obj], current: Obj, update: Obj) -> None:
        """One step towards the spec, as upstream's updateStatefulSet: make or replace missing
        and failed pods, remove condemned ones, then roll the template out. Raises Retry where
        OrderedReady waits (returns; the pods' events bring the set back)."""
        spec = _spec(sts)
        start = int((spec.get("ordinals") or {}).get("start") or 0)
        want = int(spec.get("replicas", 1))
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        by_ordinal = {ordinal_of(p): p for p in pods}
        slots = range(start, start + want)
        condemned = sorted(
            (p for o, p in by_ordinal.items() if o is None or o not in slots),
            key=lambda p: ordinal_of(p) or 0,
            reverse=True,
        )
        # 1. every slot gets a pod; failed ones are replaced
        for ordinal in slots:
            pod = by_ordinal.get(ordinal)
            if pod is not None and m.pod_phase(pod) in ("Failed", "Succeeded") and not m.deleting(pod):
                await self._delete(sts, pod)
                if ordered:
                    return
                continue
            if pod is None:
                await self._create(sts, ordinal, current, update)
                if ordered:
                    return  # the next one once this one is Running and Ready
                continue
            if ordered and not healthy(pod):
                return  # waiting: the pod's next update brings the set back
        # 2. condemned pods go, the highest ordinal first; OrderedReady removes one at a time,
        # and only while every other pod is healthy
        for pod in condemned:
            if ordered and m.deleting(pod):
                return
            if ordered and any(not healthy(p) for p in pods if p is not pod):
                return
            if not m.deleting(pod):
                await self._delete(sts, pod)
            if ordered:
                return
        await self._scaled_claims(sts, by_ordinal, slots)
        # 3. the rollout: one pod at a time, from the highest ordinal down to the partition
        if not _rolling(sts):
            return
        live = [by_ordinal[o] for o in slots if o in by_ordinal]
        for ordinal in reversed(slots):
            if ordinal < start + _partition(sts):
                break
            pod = by_ordinal.get(ordinal)
            if pod is None or m.labels(pod).get(h.REVISION_LABEL) == m.name(update):
                continue
            if m.deleting(pod):
                return  # its replacement comes once it is gone
            if any(not healthy(p) for p in live):
                return  # one pod at a time: the last one replaced must be Ready first
            await self._delete(sts, pod)
            return

    def _template_for(self, sts: Obj, ordinal: int, current: Obj, update: Obj) -> tuple[Obj, Obj]:
        """(template, revision) of a new pod: the current revision's below the partition, the
        update revision's above it (upstream's newVersionedStatefulSetPod)."""
        start = int((_spec(sts).get("ordinals") or {}).get("start") or 0)
        if _rolling(sts) and ordinal < start + _partition(sts):
            return h.template_of(current), current
        return h.template_of(update), update

    async def _create(self, sts: Obj, ordinal: int, current: Obj, update: Obj) -> None:
        template, revision = self._template_for(sts, ordinal, current, update)
        name = f"{m.name(sts)}-{ordinal}"
        ns = m.namespace(sts)
        volumes = await self._claims_for(sts, ordinal, name)
        pod = m.pod_from_template(
            template,
            sts,
            extra_labels={
                POD_NAME_LABEL: name,
                POD_INDEX_LABEL: str(ordinal),
                h.REVISION_LABEL: m.name(revision),
            },
        )
        del pod["metadata"]["generateName"]
        pod["metadata"]["name"] = name
        pod_spec = dict(pod["spec"])
        pod_spec["hostname"] = name
        if _spec(sts).get("serviceName"):
            pod_spec["subdomain"] = _spec(sts)["serviceName"]
        if volumes:
            mine = {v["name"] for v in volumes}
            pod_spec["volumes"] = [
                *(v for v in pod_spec.get("volumes") or [] if v.get("name") not in mine),
                *volumes,
            ]
        pod["spec"] = pod_spec
        try:
            await self.client.create("v1", "pods", pod, ns)
        except ApiException as e:
            if e.status == 409:
                return  # made by an earlier sync; its event is on the way
            if namespace_terminating(e):
                return
            await self.events.warning(
                sts,
                "FailedCreate",
                f"create Pod {name} in StatefulSet {m.name(sts)} failed error: {e.message}",
            )
            raise
        await self.events.normal(
            sts, "SuccessfulCreate", f"create Pod {name} in StatefulSet {m.name(sts)} successful"
        )

    async def _claims_for(self, sts: Obj, ordinal: int, pod_name: str) -> list[Obj]:
        """Make the pod's claims that do not exist yet; the pod's volumes that use them."""
        spec = _spec(sts)
        ns = m.namespace(sts)
        retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        selector_labels = dict((spec.get("selector") or {}).get("matchLabels") or {})
        volumes: list[Obj] = []
        for tmpl in spec.get("volumeClaimTemplates") or []:
            tmeta = tmpl.get("metadata") or {}
            cname = claim_name(tmpl, sts, ordinal)
            volumes.append({"name": tmeta.get("name"), "persistentVolumeClaim": {"claimName": cname}})
            existing = self.claims.get(f"{ns}/{cname}")
            if existing is not None:
                if m.deleting(existing):
                    raise Retry(f"claim {cname} is being deleted")
                continue
            meta: Obj = {
                "name": cname,
                "namespace": ns,
                "labels": {**(tmeta.get("labels") or {}), **selector_labels},
            }
            if tmeta.get("annotations"):
                meta["annotations"] = dict(tmeta["annotations"])
            if retention.get("whenDeleted") == "Delete":  # the garbage collector takes it with the set
                meta["ownerReferences"] = [m.owner_ref(sts, controller=True, block=True)]
            body = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": meta,
                "spec": tmpl.get("spec"),
            }
            try:
                await self.client.create("v1", "persistentvolumeclaims", body, ns)
            except ApiException as e:
                if e.status == 409:
                    continue
                await self.events.warning(
                    sts,
                    "FailedCreate",
                    f"create Claim {cname} for Pod {pod_name} in StatefulSet {m.name(sts)} failed error: "
                    f"{e.message}",
                )
                raise
            await self.events.normal(
                sts,
                "SuccessfulCreate",
                f"create Claim {cname} Pod {pod_name} in StatefulSet {m.name(sts)} success",
            )
        return volumes

    async def _scaled_claims(self, sts: Obj, by_ordinal: dict[int | None, Obj], slots: range) -> None:
        """whenScaled: Delete: the claims of ordinals scaled away go once their pod is gone."""
        spec = _spec(sts)
        if (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get("whenScaled") != "Delete":
            return
        templates = spec.get("volumeClaimTemplates") or []
        prefixes = {f"{(t.get('metadata') or {}).get('name')}-{m.name(sts)}-": t for t in templates}
        for c in self.claims.list(m.namespace(sts)):
            for prefix in prefixes:
                rest = m.name(c).removeprefix(prefix)
                if rest != m.name(c) and rest.isdigit():
                    ordinal = int(rest)
                    if ordinal not in slots and ordinal not in by_ordinal and not m.deleting(c):
                        try:
                            await self.client.delete(
                                "v1", "persistentvolumeclaims", m.name(c), m.namespace(c)
                            )
                        except ApiException as e:
                            if e.status != 404:
                                raise

    async def _delete(self, sts: Obj, pod: Obj) -> None:
        try:
            await self.client.delete(
                "v1", "pods", m.name(pod), m.namespace(pod), {"preconditions": {"uid": m.uid(pod)}}
            )
        except ApiException as e:
            if e.status in (404, 409):
                return
            await self.events.warning(
                sts,
                "FailedDelete",
                f"delete Pod {m.name(pod)} in StatefulSet {m.name(sts)} failed error: {e.message}",
            )
            raise
        await self.events.normal(
            sts, "SuccessfulDelete", f"delete Pod {m.name(pod)} in StatefulSet {m.name(sts)} successful"
        )

    async def _status(self, sts: Obj, pods: list[Obj], current: Obj, update: Obj) -> None:
        spec = _spec(sts)
        min_ready = int(spec.get("minReadySeconds") or 0)
        # as upstream's computeReplicaStatus: terminating pods count as replicas, not as revisions'
        live = [p for p in pods if not m.deleting(p)]
        status: Obj = {
            "observedGeneration": int(m.meta(sts).get("generation") or 0),
            "replicas": len(pods),
            "readyReplicas": sum(1 for p in pods if healthy(p)),
            "availableReplicas": sum(1 for p in pods if healthy(p) and m.pod_available(p, min_ready)),
            "currentReplicas": sum(1 for p in live if m.labels(p).get(h.REVISION_LABEL) == m.name(current)),
            "updatedReplicas": sum(1 for p in live if m.labels(p).get(h.REVISION_LABEL) == m.name(update)),
            "currentRevision": m.name(current),
            "updateRevision": m.name(update),
            "collisionCount": int((sts.get("status") or {}).get("collisionCount") or 0),
        }
        # upstream's completeRollingUpdate: once every pod runs the update revision and is
        # ready, it becomes the current one
        if (
            _rolling(sts)
            and status["updatedReplicas"] == status["replicas"]
            and status["readyReplicas"] == status["replicas"]
        ):
            status["currentRevision"] = status["updateRevision"]
            status["currentReplicas"] = status["updatedReplicas"]
        # Go's omitempty: zero counts other than replicas and availableReplicas are left out
        for f in ("observedGeneration", "readyReplicas", "currentReplicas", "updatedReplicas"):
            if not status[f]:
                del status[f]
        if (sts.get("status") or {}).get("conditions"):
            status["conditions"] = sts["status"]["conditions"]
        if status == (sts.get("status") or {}):
            return
        out = await update_status(self.client, "apps/v1", "statefulsets", sts, status)
        if out is not None:
            self.sets.written(out)
