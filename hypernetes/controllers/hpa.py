"""The HorizontalPodAutoscaler controller (upstream's pkg/controller/podautoscaler/horizontal.go):
every SYNC_PERIOD each HPA reads its target's scale subresource, the pods its selector matches,
and their PodMetrics (metrics.k8s.io, as upstream reads them through the API); computes the
replica count (controllers/hpascale.py); writes it to the scale subresource; and reports
status (currentReplicas, desiredReplicas, currentMetrics, lastScaleTime) with the conditions
AbleToScale, ScalingActive and ScalingLimited.

It acts with the controller manager's identity, but only on the scale subresource of the
target named in the HPA's own namespace, and the pods it adds are the workload's, created by its
controller as the tenant's (DESIGN: "every path a tenant's intent takes is checked as that
tenant"); the tenant's quota bounds them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller
from hypernetes.controllers.hpascale import (
    MetricsUnavailable,
    PodInfo,
    PodUsage,
    Recommender,
    Replicas,
    epoch,
    milli_usage,
    resource_replicas,
    target_ref_problems,
)
from hypernetes.controllers.informer import Handler, InformerFactory, key_of, split_key
from hypernetes.objects import Obj
from hypernetes.objects.selectors import SelectorError, parse_selector

log = logging.getLogger(__name__)

API_VERSION, PLURAL = "autoscaling/v2", "horizontalpodautoscalers"
METRICS_API = "metrics.k8s.io/v1beta1"
SYNC_PERIOD = 15.0  # --horizontal-pod-autoscaler-sync-period
# the scalable kinds' resources (upstream asks the RESTMapper; controllers cannot import the API)
PLURALS = {
    "Deployment": "deployments",
    "ReplicaSet": "replicasets",
    "StatefulSet": "statefulsets",
    "ReplicationController": "replicationcontrollers",
}


def _format(resource: str, milli: int) -> str:
    """An average usage as a quantity: millicores for cpu, bytes for memory (upstream's status)."""
    return f"{milli}m" if resource == "cpu" else str(milli // 1000)


def pod_info(pod: Obj) -> PodInfo:
    """What the calculation reads of a pod: phase, readiness, start and summed requests."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    ready = m.pod_condition(pod, "Ready")
    requests: dict[str, int] = {}
    missing: dict[str, str] = {}
    for c in spec.get("containers") or []:
        asked = (c.get("resources") or {}).get("requests") or {}
        for resource in ("cpu", "memory"):
            if resource in asked:
                requests[resource] = requests.get(resource, 0) + milli_usage(resource, asked[resource])
            else:
                missing.setdefault(resource, str(c.get("name") or ""))
    return PodInfo(
        name=str(meta.get("name")),
        phase=str(status.get("phase") or "Pending"),
        deleting=bool(meta.get("deletionTimestamp")),
        ready=None if ready is None else ready.get("status") == "True",
        ready_since=epoch((ready or {}).get("lastTransitionTime")),
        started=epoch(status.get("startTime")),
        requests=requests,
        missing_requests=missing,
    )


def _duration(text: Any) -> float:
    """A PodMetrics window ("15s", "1m0s") in seconds; metrics-server writes Go durations."""
    total, number = 0.0, ""
    for ch in str(text or ""):
        if ch.isdigit() or ch == ".":
            number += ch
        else:
            total += float(number or 0) * {"h": 3600, "m": 60, "s": 1}.get(ch, 0)
            number = ""
    return total


def pod_usage(metrics: Obj, resource: str) -> dict[str, PodUsage]:
    """PodMetrics items -> pod name -> summed container usage of `resource`."""
    out = {}
    for item in metrics.get("items") or []:
        total = 0
        for c in item.get("containers") or []:
            value = (c.get("usage") or {}).get(resource)
            if value is not None:
                total += milli_usage(resource, value)
        name = (item.get("metadata") or {}).get("name")
        when = epoch(item.get("timestamp"))
        if name and when is not None:
            out[str(name)] = PodUsage(total, when, _duration(item.get("window")))
    return out


class HPAController(Controller):
    name = "horizontal-pod-autoscaler"
    workers = 1
    sync_period = SYNC_PERIOD

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.hpas = self.informer(API_VERSION, PLURAL)
        self.hpas.add_handler(Handler(add=self.enqueue, update=self._updated, delete=self._deleted))
        self.pods = self.informer("v1", "pods")
        self.recommenders: dict[str, Recommender] = {}

    def _updated(self, old: Obj, new: Obj) -> None:
        # our own status writes come back as updates: only a changed spec is worth a sync now
        if old.get("spec") != new.get("spec"):
            self.enqueue(new)

    def _deleted(self, obj: Obj) -> None:
        self.recommenders.pop(key_of(obj), None)

    async def reconcile(self, key: str) -> None:
        hpa = self.hpas.get(key)
        if hpa is None:
            self.recommenders.pop(key, None)
            return
        await self._sync(key, hpa)
        self.queue.add_after(key, self.sync_period)

    async def _sync(self, key: str, hpa: Obj) -> None:
        ns, _ = split_key(key)
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        status: Obj = {k: v for k, v in (hpa.get("status") or {}).items() if k != "desiredReplicas"}
        target_api = str(ref.get("apiVersion") or "apps/v1")
        plural = PLURALS.get(str(ref.get("kind")), str(ref.get("kind", "")).lower() + "s")
        reference = f"{ref.get('kind')}/{ref.get('name')}"
        try:
            if problems := target_ref_problems(ref):  # (validation keeps these out of the store)
                raise ApiException(422, "Invalid", f"spec.scaleTargetRef.{problems[0][0]}: {problems[0][2]}")
            scale = await self.client.get(target_api, plural, str(ref.get("name")), ns, subresource="scale")
        except ApiException as e:
            message = f"the HPA controller was unable to get the target's current scale: {e}"
            m.set_condition(status, m.condition("AbleToScale", "False", "FailedGetScale", message))
            await self.events.warning(hpa, "FailedGetScale", message)
            await self._write(hpa, status)
            return
        m.set_condition(
            status,
            m.condition(
                "AbleToScale",
                "True",
                "SucceededGetScale",
                "the HPA controller was able to get the target's current scale",
            ),
        )
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        status["currentReplicas"] = int((scale.get("status") or {}).get("replicas") or 0)
        low, high = int(spec.get("minReplicas") or 1), int(spec.get("maxReplicas") or 1)
        now = time.time()
        desired, reason = current, ""
        if key not in self.recommenders:
            # upstream's recordInitialRecommendation: a new HPA (or a restarted controller) starts
            # its downscale window at today's size, so it never scales down at once
            self.recommenders[key] = Recommender(recommendations=[(current, now)])
        recommender = self.recommenders[key]
        if current == 0 and low != 0:
            desired = 0
            m.set_condition(
                status,
                m.condition(
                    "ScalingActive",
                    "False",
                    "ScalingDisabled",
                    "scaling is disabled since the replica count of the target is zero",
                ),
            )
        elif current > high:
            desired, reason = high, "Current number of replicas above Spec.MaxReplicas"
        elif current < low:
            desired, reason = low, "Current number of replicas below Spec.MinReplicas"
        else:
            try:
                proposal, metric_name, metrics = await self._replicas_for_metrics(
                    ns, spec, scale, current, now
                )
            except MetricsUnavailable as e:
                m.set_condition(
                    status, m.condition("ScalingActive", "False", "FailedGetResourceMetric", str(e))
                )
                await self.events.warning(hpa, "FailedGetResourceMetric", str(e))
                status["desiredReplicas"] = current
                await self._write(hpa, status)
                return
            status["currentMetrics"] = metrics
            m.set_condition(
                status,
                m.condition(
                    "ScalingActive",
                    "True",
                    "ValidMetricFound",
                    f"the HPA was able to successfully calculate a replica count from {metric_name}",
                ),
            )
            limited = recommender.normalize(spec.get("behavior"), current, proposal, low, high, now)
            desired = limited.replicas
            m.set_condition(
                status, m.condition("AbleToScale", "True", limited.able_reason, limited.able_message)
            )
            m.set_condition(
                status,
                m.condition(
                    "ScalingLimited",
                    "True" if limited.limited else "False",
                    limited.limit_reason,
                    limited.limit_message,
                ),
            )
            if desired > current:
                reason = f"{metric_name} above target"
            elif desired < current:
                reason = "All metrics below target"
        if desired != current:
            try:
                await self.client.patch(
                    target_api,
                    plural,
                    str(ref.get("name")),
                    {"spec": {"replicas": desired}},
                    ns,
                    subresource="scale",
                )
            except ApiException as e:
                message = f"the HPA controller was unable to update the target scale: {e}"
                m.set_condition(status, m.condition("AbleToScale", "False", "FailedUpdateScale", message))
                await self.events.warning(
                    hpa, "FailedRescale", f"New size: {desired}; reason: {reason}; error: {e}"
                )
                status["desiredReplicas"] = current
                await self._write(hpa, status)
                raise
            recommender.record_scale(spec.get("behavior"), current, desired, now)
            m.set_condition(
                status,
                m.condition(
                    "AbleToScale",
                    "True",
                    "SucceededRescale",
                    f"the HPA controller was able to update the target scale to {desired}",
                ),
            )
            await self.events.normal(hpa, "SuccessfulRescale", f"New size: {desired}; reason: {reason}")
            log.info("%s: %s scaled %d -> %d: %s", key, reference, current, desired, reason)
            status["lastScaleTime"] = m.rfc3339()
        status["desiredReplicas"] = desired
        await self._write(hpa, status)

    async def _replicas_for_metrics(
        self, ns: str | None, spec: Obj, scale: Obj, current: int, now: float
    ) -> tuple[int, str, list[Obj]]:
        """The highest count any metric asks for (upstream's computeReplicasForMetrics), the name
        of that metric for the messages, and status.currentMetrics."""
        selector_text = str((scale.get("status") or {}).get("selector") or "")
        if not selector_text:
            raise MetricsUnavailable("selector is required: the target's scale reports none")
        try:
            selector = parse_selector(selector_text)
        except SelectorError as e:
            raise MetricsUnavailable(
                f"couldn't convert selector into a corresponding internal selector object: {e}"
            ) from None
        pods = [
            pod_info(p)
            for p in self.pods.list(ns)
            if selector.matches((p.get("metadata") or {}).get("labels"))
        ]
        try:
            listed = await self.client.list(METRICS_API, "pods", ns, label_selector=selector_text)
        except ApiException as e:
            raise MetricsUnavailable(
                f"unable to get metrics for resource: unable to fetch metrics from resource metrics API: {e}"
            ) from None
        best: tuple[int, str] | None = None
        statuses = []
        errors = []
        for metric in spec.get("metrics") or []:
            res = metric.get("resource") or {}
            resource, target = str(res.get("name")), res.get("target") or {}
            utilization = target.get("type") == "Utilization"
            goal = (
                int(target["averageUtilization"])
                if utilization
                else milli_usage(resource, target.get("averageValue"))
            )
            try:
                found: Replicas = resource_replicas(
                    current, pods, pod_usage(listed, resource), resource, goal, utilization, now
                )
            except MetricsUnavailable as e:
                errors.append(f"failed to get {resource} utilization: {e}")
                continue
            shown: Obj = {"averageValue": _format(resource, found.average)}
            if found.utilization is not None:
                shown["averageUtilization"] = found.utilization
            statuses.append({"type": "Resource", "resource": {"name": resource, "current": shown}})
            label = (
                f"{resource} resource utilization (percentage of request)"
                if utilization
                else f"{resource} resource"
            )
            if best is None or found.count > best[0]:
                best = (found.count, label)
        if best is None:
            raise MetricsUnavailable("; ".join(errors) or "no metrics")
        return best[0], best[1], statuses

    async def _write(self, hpa: Obj, status: Obj) -> None:
        status["observedGeneration"] = (hpa.get("metadata") or {}).get("generation")
        if status.get("observedGeneration") is None:
            status.pop("observedGeneration")
        if status == hpa.get("status"):
            return
        out = await self.client.replace(API_VERSION, PLURAL, {**hpa, "status": status}, subresource="status")
        self.hpas.written(out)
