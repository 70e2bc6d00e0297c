"""The node agent's metrics under the kubelet's names, on a registry of its own that the agent
attaches to the process's (hypernetes.metrics) while it runs."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# upstream's kubelet_pod_start_duration_seconds buckets
START_BUCKETS = (
    0.5,
    1,
    2,
    3,
    4,
    5,
    6,
    8,
    10,
    20,
    30,
    45,
    60,
    120,
    180,
    240,
    300,
    360,
    480,
    600,
    900,
    1200,
    1800,
    2700,
    3600,
)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.started = Counter(
            "kubelet_started_pods_total", "Cumulative number of pods started", registry=self.registry
        )
        self.start_duration = Histogram(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from the node agent seeing a pod for the first time to the pod running",
            buckets=START_BUCKETS,
            registry=self.registry,
        )
        self.running_pods = Gauge(
            "kubelet_running_pods", "Number of pods that have a running pod sandbox", registry=self.registry
        )
        self._first_seen: dict[str, float] = {}  # pod uid -> when this agent first saw it, until it runs

    def seen(self, uid: str) -> None:
        self._first_seen.setdefault(uid, time.monotonic())

    def status_posted(self, uid: str, status: dict[str, Any]) -> None:
        """The first Running status a pod gets here: it started."""
        if status.get("phase") != "Running":
            return
        since = self._first_seen.pop(uid, None)
        if since is not None:
            self.started.inc()
            self.start_duration.observe(time.monotonic() - since)

    def forget(self, uid: str) -> None:
        self._first_seen.pop(uid, None)
