"""The process's Prometheus registry (prometheus_client), shared by every component in it.

A component makes its metrics on a `CollectorRegistry` of its own and, while it runs, attaches
that registry here (`attached`); whoever serves /metrics for the process serves `REGISTRY`. In
`hypernetes up` every component runs in one process, so the API server's /metrics shows them
all. An API server's own request counters stay on its application (its /metrics serves them
and `REGISTRY`): tests run several API servers in one process, and each must count only its own
requests. Two running components of one kind in one process (only tests do that) would show
their series twice.

Names follow upstream's where upstream has the metric (`apiserver_request_total`,
`workqueue_depth`, `kubelet_pod_start_duration_seconds`, ...), `hypernetes_*` otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # aiohttp only where /metrics is served: `hypernetes run` never imports it
    from aiohttp import web

CONTENT_TYPE = CONTENT_TYPE_LATEST

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `*_created` series, as upstream
REGISTRY = CollectorRegistry(auto_describe=False)  # components attach and detach: no name checks
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...


def attach(collector: Collector, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve `collector` with the process's metrics (until `detach`); idempotent."""
    registry.register(collector)  # a collector without describe() is never refused


def detach(collector: Collector, registry: CollectorRegistry = REGISTRY) -> None:
    with contextlib.suppress(KeyError):  # not there
        registry.unregister(collector)


@contextlib.contextmanager
def attached(collector: Collector, registry: CollectorRegistry = REGISTRY) -> Iterator[None]:
    """`collector` is served with the process's metrics for the duration of the block."""
    attach(collector, registry)
    try:
        yield
    finally:
        detach(collector, registry)


class _Union:
    def __init__(self, parts: Iterable[Collector]) -> None:
        self.parts = list(parts)

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


async def serve(host: str, port: int) -> web.AppRunner:
    """Plain HTTP /metrics of the process's registry on host:port (0: any free port), for a
    component that runs without an API server in its process (`hypernetes node join
    --metrics-bind-address`). Unauthenticated, as kube-proxy's: bind it to loopback or a
    management network. Stop with `await runner.cleanup()`."""
    from aiohttp import web

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=exposition(REGISTRY), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def exposition(*collectors: Collector) -> bytes:
    """The Prometheus text format of every metric of `collectors` (registries or collectors)."""
    return generate_latest(_Union(collectors))
