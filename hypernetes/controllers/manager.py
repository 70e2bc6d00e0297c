"""The controller manager: every controller on one asyncio loop, sharing one set of informers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from hypernetes.apiclient import ApiClient
from hypernetes.controllers.base import Controller
from hypernetes.controllers.cronjob import CronJobController
from hypernetes.controllers.daemonset import DaemonSetController
from hypernetes.controllers.deployment import DeploymentController
from hypernetes.controllers.disruption import DisruptionController
from hypernetes.controllers.endpoints import EndpointsController
from hypernetes.controllers.garbagecollector import GarbageCollector
from hypernetes.controllers.hpa import HPAController
from hypernetes.controllers.informer import InformerFactory
from hypernetes.controllers.job import JobController
from hypernetes.controllers.namespace import NamespaceController
from hypernetes.controllers.networks import NetworkController
from hypernetes.controllers.nodelifecycle import NodeLifecycleConfig, NodeLifecycleController
from hypernetes.controllers.podgc import PodGCController
from hypernetes.controllers.replicaset import ReplicaSetController, ReplicationControllerController
from hypernetes.controllers.resourcequota import ResourceQuotaController
from hypernetes.controllers.rootca import RootCAPublisher
from hypernetes.controllers.serviceaccount import ServiceAccountController
from hypernetes.controllers.statefulset import StatefulSetController
from hypernetes.controllers.tainteviction import TaintEvictionController
from hypernetes.controllers.tenant import TenantController
from hypernetes.controllers.volumes import VolumeController
from hypernetes.metrics import attached, exposition

log = logging.getLogger(__name__)

CONTROLLERS: dict[str, type[Controller]] = {
    c.name: c
    for c in (
        NamespaceController,
        ServiceAccountController,
        ReplicaSetController,
        ReplicationControllerController,
        DeploymentController,
        StatefulSetController,
        DaemonSetController,
        JobController,
        CronJobController,
        DisruptionController,
        ResourceQuotaController,
        EndpointsController,
        GarbageCollector,
        TenantController,
        VolumeController,
        NetworkController,
        NodeLifecycleController,
        TaintEvictionController,
        PodGCController,
        HPAController,
    )
}


class ControllerMetrics:
    """Every controller's work queue under upstream's names (`workqueue_*{name}`), and its syncs
    and events (`hypernetes_controller_*{controller}`), read when scraped."""

    def __init__(self, controllers: dict[str, Controller]) -> None:
        self.controllers = controllers

    def collect(self) -> Iterator[Metric]:
        series: tuple[tuple[type[Any], str, str, str, Callable[[Controller], float]], ...] = (
            (
                GaugeMetricFamily,
                "workqueue_depth",
                "name",
                "Current depth of workqueue.",
                lambda c: len(c.queue),
            ),
            (
                CounterMetricFamily,
                "workqueue_adds",
                "name",
                "Total number of adds handled by workqueue.",
                lambda c: c.queue.adds,
            ),
            (
                CounterMetricFamily,
                "workqueue_retries",
                "name",
                "Total number of retries handled by workqueue.",
                lambda c: c.queue.retries,
            ),
            (
                GaugeMetricFamily,
                "hypernetes_workqueue_delayed",
                "name",
                "Keys due later: backing off after a failed sync, or scheduled.",
                lambda c: c.queue.waiting,
            ),
            (
                CounterMetricFamily,
                "hypernetes_controller_syncs",
                "controller",
                "Keys synced.",
                lambda c: c.syncs,
            ),
            (
                CounterMetricFamily,
                "hypernetes_controller_sync_errors",
                "controller",
                "Syncs that failed and were requeued.",
                lambda c: c.sync_errors,
            ),
            (
                CounterMetricFamily,
                "hypernetes_controller_sync_seconds",
                "controller",
                "Time spent syncing.",
                lambda c: c.sync_seconds,
            ),
            (
                CounterMetricFamily,
                "hypernetes_controller_events_written",
                "controller",
                "Events created or counted up (PATCH) in the API.",
                lambda c: c.events.recorder.written,
            ),
            (
                CounterMetricFamily,
                "hypernetes_controller_events_dropped",
                "controller",
                "Events the spam filter kept from the API (25 per object, then 1 per 5 minutes).",
                lambda c: c.events.recorder.dropped,
            ),
        )
        for family, metric, label, text, value in series:
            out = family(metric, text, labels=[label])
            for name, c in self.controllers.items():
                out.add_metric([name], value(c))
            yield out


class ControllerManager:
    """`await ControllerManager(client).run()` runs until cancelled. `only` picks controllers by
    name (see CONTROLLERS); each is reachable as `manager[name]` to tune it before `run`."""

    def __init__(
        self,
        client: ApiClient,
        only: Iterable[str] | None = None,
        *,
        root_ca: str = "",
        node_lifecycle: NodeLifecycleConfig | None = None,
    ) -> None:
        """`root_ca`: the cluster CA (PEM) to publish in every namespace; "" publishes nothing.
        `node_lifecycle`: grace periods of the node lifecycle and taint eviction controllers."""
        self.client = client
        self.node_lifecycle = node_lifecycle or NodeLifecycleConfig()
        self.informers = InformerFactory(client)
        names = list(only) if only is not None else [*CONTROLLERS, RootCAPublisher.name]
        unknown = set(names) - set(CONTROLLERS) - {RootCAPublisher.name}
        if unknown:
            raise ValueError(f"unknown controllers: {', '.join(sorted(unknown))}")
        self.controllers: dict[str, Controller] = {
            n: self._new(CONTROLLERS[n]) for n in names if n in CONTROLLERS
        }
        if RootCAPublisher.name in names:
            self.controllers[RootCAPublisher.name] = RootCAPublisher(client, self.informers, root_ca)
        self.collector = ControllerMetrics(self.controllers)

    def _new(self, cls: type[Controller]) -> Controller:
        if issubclass(cls, NodeLifecycleController | TaintEvictionController | PodGCController):
            return cls(self.client, self.informers, self.node_lifecycle)
        return cls(self.client, self.informers)

    def __getitem__(self, name: str) -> Controller:
        return self.controllers[name]

    def metrics(self) -> str:
        """Prometheus text of the controllers' metrics (served with the process's, see run)."""
        return exposition(self.collector).decode()

    async def run(self) -> None:
        self.informers.start()
        tasks = [asyncio.create_task(c.run(), name=f"controller {n}") for n, c in self.controllers.items()]
        log.info("controllers running: %s", ", ".join(self.controllers))
        try:
            with attached(self.collector):  # on the process's /metrics while running
                await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.informers.stop()
