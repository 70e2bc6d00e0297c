"""The HorizontalPodAutoscaler's arithmetic, as upstream's (pkg/controller/podautoscaler:
replica_calculator.go and horizontal.go), free of I/O so it can be fed metrics and checked:

- `resource_replicas`: the replica count one Resource metric asks for, from the pods' usage and
  requests (Utilization) or usage alone (AverageValue), with upstream's tolerance (0.1) and its
  handling of pods that are not ready (CPU only), have no metrics yet, or are being deleted;
- `Recommender`: what the controller remembers between syncs of one HPA (recent
  recommendations, recent scale events) and the step from the metrics' count to the count the
  target gets: stabilization windows, behavior policies (or, without a behavior, the legacy
  scale-up limit), min and max replicas, with the reason that limited it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hypernetes.objects import Obj
from hypernetes.objects.quantity import quantity_milli_value, quantity_value

TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
CPU_INITIALIZATION_PERIOD = 300.0  # --horizontal-pod-autoscaler-cpu-initialization-period
INITIAL_READINESS_DELAY = 30.0  # --horizontal-pod-autoscaler-initial-readiness-delay
DOWNSCALE_STABILIZATION = 300  # --horizontal-pod-autoscaler-downscale-stabilization (seconds)
DEFAULT_CPU_UTILIZATION = 80
SELECT_POLICIES = ("Disabled", "Max", "Min")
GROUP_VERSION = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?v[0-9]+[a-z0-9]*"
)
# upstream's defaults for a behavior given without them (pkg/apis/autoscaling/v2/defaults.go);
# a scale-down window left unset takes DOWNSCALE_STABILIZATION in the controller
SCALE_UP_RULES: Obj = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ],
}
SCALE_DOWN_RULES: Obj = {
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}


DOWN_STABILIZED = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
)
UP_STABILIZED = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
)


class MetricsUnavailable(Exception):
    """No replica count can be computed from this metric now (upstream: FailedGetResourceMetric)."""


def target_ref_problems(ref: Obj) -> list[tuple[str, str, str]]:
    """(field, value, message) for each unusable part of a scaleTargetRef: kind and name are path
    segments (upstream's IsValidPathSegmentName), apiVersion is [group/]version. The controller
    builds a URL of them with its own rights: nothing may lead it outside the HPA's namespace."""
    out = []
    for key in ("kind", "name"):
        value = ref.get(key)
        if not isinstance(value, str) or not value:
            continue
        if value in (".", ".."):
            out.append((key, value, f"may not be '{value}'"))
        for bad in ("/", "%"):
            if bad in value:
                out.append((key, value, f"may not contain '{bad}'"))
    version = ref.get("apiVersion")
    if version is not None and (not isinstance(version, str) or not GROUP_VERSION.fullmatch(version)):
        out.append(("apiVersion", str(version), "must be a version or group/version, e.g. apps/v1"))
    return out


def milli_usage(resource: str, value: object) -> int:
    """A usage or request in the unit the calculation uses: millicores, or bytes * 1000."""
    return quantity_milli_value(value) if resource == "cpu" else quantity_value(value) * 1000


@dataclass(frozen=True)
class PodInfo:
    """What the calculation needs of one pod matched by the target's selector."""

    name: str
    phase: str = "Running"
    deleting: bool = False
    ready: bool | None = True  # the Ready condition; None: no condition
    ready_since: float | None = None  # its lastTransitionTime (epoch seconds)
    started: float | None = None  # status.startTime
    requests: Mapping[str, int] = field(default_factory=dict)  # resource -> milli-units, summed
    # resource -> the first container without a request for it
    missing_requests: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PodUsage:
    """A pod's usage (milli-units) from its PodMetrics, and the window it was measured over."""

    value: int
    timestamp: float
    window: float


@dataclass(frozen=True)
class Replicas:
    count: int
    utilization: int | None  # percent of requests (Utilization targets)
    average: int  # average usage per pod, milli-units


def _group(
    pods: Sequence[PodInfo], metrics: Mapping[str, PodUsage], resource: str, now: float
) -> tuple[int, set[str], set[str], set[str]]:
    """upstream's groupPods: (ready count, unready, missing, ignored) pod names."""
    ready, unready, missing, ignored = 0, set(), set(), set()
    for pod in pods:
        if pod.deleting or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":  # not started: counted as unready
            unready.add(pod.name)
            continue
        metric = metrics.get(pod.name)
        if metric is None:
            missing.add(pod.name)
            continue
        if resource == "cpu":
            # a pod's CPU right after its start (or while not ready) does not count for scale-up
            if pod.ready is None:
                unready.add(pod.name)
                continue
            since = pod.ready_since or 0.0
            if pod.started is not None and pod.started + CPU_INITIALIZATION_PERIOD > now:
                not_ready = not pod.ready or metric.timestamp < since + metric.window
            else:
                started = pod.started or 0.0
                not_ready = not pod.ready and started + INITIAL_READINESS_DELAY > since
            if not_ready:
                unready.add(pod.name)
                continue
        ready += 1
    return ready, unready, missing, ignored


def _usage_ratio(
    usage: Mapping[str, int], requests: Mapping[str, int], target: int, utilization: bool
) -> tuple[float, int, int]:
    """(ratio to the target, utilization percent or the average, the average usage)."""
    if not usage:
        raise MetricsUnavailable("no metrics returned from resource metrics API")
    total = sum(usage.values())
    if utilization:
        requested = sum(requests[p] for p in usage)
        if requested == 0:
            raise MetricsUnavailable("no metrics returned matched known pods")
        percent = total * 100 // requested
        return percent / target, percent, total // len(usage)
    average = total // len(usage)
    return average / target, average, average


def resource_replicas(
    current: int,
    pods: Sequence[PodInfo],
    metrics: Mapping[str, PodUsage],
    resource: str,
    target: int,
    utilization: bool,
    now: float,
    tolerance: float = TOLERANCE,
) -> Replicas:
    """The replica count that brings the pods' `resource` to `target` (percent of requests if
    `utilization`, else milli-units per pod): upstream's GetResourceReplicas and
    GetRawResourceReplicas."""
    if not pods:
        raise MetricsUnavailable("no pods returned by selector while calculating replica count")
    ready, unready, missing, ignored = _group(pods, metrics, resource, now)
    # the metrics of the selected pods only, less those ignored (deleting, failed) or not ready
    known = {p.name for p in pods} - ignored - unready
    usage = {p: m.value for p, m in metrics.items() if p in known}
    requests: dict[str, int] = {}
    if utilization:
        for pod in pods:
            if container := pod.missing_requests.get(resource):
                raise MetricsUnavailable(
                    f"missing request for {resource} in container {container} of Pod {pod.name}"
                )
            requests[pod.name] = pod.requests.get(resource, 0)
    ratio, shown, average = _usage_ratio(usage, requests, target, utilization)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if abs(1.0 - ratio) <= tolerance:
            return Replicas(current, shown if utilization else None, average)
        return Replicas(math.ceil(ratio * ready), shown if utilization else None, average)
    if missing:
        for name in missing:
            if ratio < 1.0:  # scaling down: assume the missing pods at their request (or target)
                usage[name] = requests[name] if utilization else target
            else:  # scaling up: assume them idle
                usage[name] = 0
    if scale_up_with_unready:
        for name in unready:
            usage[name] = 0
    new_ratio, _, _ = _usage_ratio(usage, requests, target, utilization)
    if (
        abs(1.0 - new_ratio) <= tolerance
        or (ratio < 1.0 and new_ratio > 1.0)
        or (ratio > 1.0 and new_ratio < 1.0)
    ):
        return Replicas(current, shown if utilization else None, average)
    count = math.ceil(new_ratio * len(usage))
    if (new_ratio < 1.0 and count > current) or (new_ratio > 1.0 and count < current):
        count = current
    return Replicas(count, shown if utilization else None, average)


# -- from the metrics' count to the target's ----------------------------------------------------


@dataclass(frozen=True)
class Limited:
    replicas: int
    able_reason: str  # AbleToScale (True): ReadyForNewScale or the stabilization that held it
    able_message: str
    limited: bool  # ScalingLimited
    limit_reason: str
    limit_message: str


@dataclass
class _Event:
    change: int
    at: float


@dataclass
class Recommender:
    """One HPA's memory across syncs (upstream keeps it per HPA key in the controller)."""

    recommendations: list[tuple[int, float]] = field(default_factory=list)
    up_events: list[_Event] = field(default_factory=list)
    down_events: list[_Event] = field(default_factory=list)

    def normalize(
        self, behavior: Obj | None, current: int, desired: int, low: int, high: int, now: float
    ) -> Limited:
        if behavior is None:
            return self._legacy(current, desired, low, high, now)
        up = {**SCALE_UP_RULES, **(behavior.get("scaleUp") or {})}
        down = {**SCALE_DOWN_RULES, **(behavior.get("scaleDown") or {})}
        if down.get("stabilizationWindowSeconds") is None:
            down["stabilizationWindowSeconds"] = DOWNSCALE_STABILIZATION
        stabilized, reason, message = self._stabilize(up, down, current, desired, now)
        if stabilized == desired:
            reason, message = "ReadyForNewScale", "recommended size matches current size"
        count, why, text = self._rate_limit(up, down, current, stabilized, low, high, now)
        return Limited(count, reason, message, count != stabilized, why, text)

    def _legacy(self, current: int, desired: int, low: int, high: int, now: float) -> Limited:
        """No behavior: upstream's normalizeDesiredReplicas (the highest recommendation of the
        downscale window, then a scale-up of at most max(2x, 4))."""
        cutoff = now - DOWNSCALE_STABILIZATION
        kept = [(r, t) for r, t in self.recommendations if t > cutoff]
        stabilized = max([desired, *(r for r, _ in kept)])
        self.recommendations = [*kept, (desired, now)]
        if stabilized != desired:
            reason, message = DOWN_STABILIZED
        else:
            reason, message = "ReadyForNewScale", "recommended size matches current size"
        top, why, text = _scale_up_bound(max(2 * current, 4), high)
        if stabilized < low:
            count = low
            why, text = "TooFewReplicas", "the desired replica count is less than the minimum replica count"
        elif stabilized > top:
            count = top
        else:
            count = stabilized
            why, text = "DesiredWithinRange", "the desired count is within the acceptable range"
        return Limited(count, reason, message, count != stabilized, why, text)

    def _stabilize(self, up: Obj, down: Obj, current: int, desired: int, now: float) -> tuple[int, str, str]:
        up_cut = now - int(up["stabilizationWindowSeconds"])
        down_cut = now - int(down["stabilizationWindowSeconds"])
        up_rec = down_rec = desired
        old = None
        for i, (rec, t) in enumerate(self.recommendations):
            if t > up_cut:
                up_rec = min(rec, up_rec)
            if t > down_cut:
                down_rec = max(rec, down_rec)
            if t < up_cut and t < down_cut:
                old = i
        recommendation = min(max(current, up_rec), down_rec)
        if old is not None:
            self.recommendations[old] = (desired, now)
        else:
            self.recommendations.append((desired, now))
        if desired >= current:
            return (recommendation, *UP_STABILIZED)
        return (recommendation, *DOWN_STABILIZED)

    def _changed(self, events: list[_Event], period: int, now: float) -> int:
        return sum(e.change for e in events if e.at > now - period)

    def _period_start(self, policy: Obj, current: int, now: float) -> int:
        period = int(policy.get("periodSeconds") or 0)
        return (
            current
            - self._changed(self.up_events, period, now)
            + self._changed(self.down_events, period, now)
        )

    def _rate_limit(
        self, up: Obj, down: Obj, current: int, desired: int, low: int, high: int, now: float
    ) -> tuple[int, str, str]:
        if desired > current:
            limit = self._up_limit(up, current, now)
            limit = max(limit, current)  # no further scale-up until the events age out
            top, why, text = _scale_up_bound(limit, high)
            if desired > top:
                return top, why, text
        elif desired < current:
            limit = min(self._down_limit(down, current, now), current)
            if low < limit:
                bottom, why, text = (
                    limit,
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                )
            else:
                bottom, why, text = (
                    low,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            if desired < bottom:
                return bottom, why, text
        return desired, "DesiredWithinRange", "the desired count is within the acceptable range"

    def _up_limit(self, rules: Obj, current: int, now: float) -> int:
        select = rules.get("selectPolicy") or "Max"
        if select == "Disabled":
            return current
        pick = min if select == "Min" else max
        result: int | None = None
        for policy in rules.get("policies") or []:
            start = self._period_start(policy, current, now)
            value = int(policy.get("value") or 0)
            proposed = start + value if policy.get("type") == "Pods" else math.ceil(start * (1 + value / 100))
            result = proposed if result is None else pick(result, proposed)
        return current if result is None else result

    def _down_limit(self, rules: Obj, current: int, now: float) -> int:
        select = rules.get("selectPolicy") or "Max"
        if select == "Disabled":
            return current
        pick = max if select == "Min" else min
        result: int | None = None
        for policy in rules.get("policies") or []:
            start = self._period_start(policy, current, now)
            value = int(policy.get("value") or 0)
            proposed = start - value if policy.get("type") == "Pods" else int(start * (1 - value / 100))
            result = proposed if result is None else pick(result, proposed)
        return current if result is None else result

    def record_scale(self, behavior: Obj | None, before: int, after: int, now: float) -> None:
        """upstream's storeScaleEvent: the change counts against the policies' periods."""
        if behavior is None or before == after:
            return
        longest = max(
            (
                int(p.get("periodSeconds") or 0)
                for side in ("scaleUp", "scaleDown")
                for p in ((behavior.get(side) or {}).get("policies") or [])
            ),
            default=0,
        )
        events = self.up_events if after > before else self.down_events
        events[:] = [e for e in events if e.at > now - longest]
        events.append(_Event(abs(after - before), now))


def epoch(ts: object) -> float | None:
    """An RFC 3339 timestamp as epoch seconds."""
    if not isinstance(ts, str) or not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _scale_up_bound(limit: int, high: int) -> tuple[int, str, str]:
    """The most replicas a scale-up may reach and the ScalingLimited reason: the scale rate's
    limit, or maxReplicas where that is lower (upstream's reasons and messages)."""
    if high > limit:
        return (
            limit,
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate",
        )
    return high, "TooManyReplicas", "the desired replica count is more than the maximum replica count"
