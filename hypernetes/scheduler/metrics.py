"""The scheduler's metrics under upstream's names, on a registry of its own that the scheduler
attaches to the process's (hypernetes.metrics) while it runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

PROFILE = "default-scheduler"
SCHEDULED, UNSCHEDULABLE, ERROR = "scheduled", "unschedulable", "error"


class SchedulerMetrics:
    def __init__(self, pending: Callable[[], tuple[int, int]]) -> None:
        """`pending`: (pods waiting to be tried again, pods found unschedulable), read when scraped."""
        self.registry = CollectorRegistry()
        self._attempts = Counter(
            "scheduler_schedule_attempts_total",
            "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could "
            "not be scheduled, while 'error' means an internal scheduler problem.",
            ["result", "profile"],
            registry=self.registry,
        )
        self.registry.register(_Pending(pending))

    def attempt(self, result: str) -> None:
        self._attempts.labels(result, PROFILE).inc()


class _Pending:
    def __init__(self, pending: Callable[[], tuple[int, int]]) -> None:
        self.pending = pending

    def collect(self) -> Iterator[Metric]:
        active, unschedulable = self.pending()
        family = GaugeMetricFamily(
            "scheduler_pending_pods", "Number of pending pods, by the queue type.", labels=["queue"]
        )
        family.add_metric(["active"], active)
        family.add_metric(["unschedulable"], unschedulable)
        yield family
