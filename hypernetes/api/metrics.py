"""The API server's metrics (prometheus_client), on a registry of its own application: requests
by verb/resource/subresource/code with latency histograms, store operations, open watchers; and
collectors of the flow control's and the connection gate's state, read when scraped. `/metrics`
serves them with the process's registry (`hypernetes.metrics`), where the process's other
components are."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from hypernetes.api.connections import ConnectionGate
    from hypernetes.api.fairness import FlowControl

GAUGE_HELP = {"apiserver_registered_watchers": "Open watches served from the watch caches."}
# the verb label as upstream's metrics.CleanVerb writes it (the rest are upper-cased API verbs)
UPSTREAM_VERBS = {"CREATE": "POST", "UPDATE": "PUT"}
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "apiserver_request_total",
            "Requests by verb, resource, subresource and code.",
            ["verb", "resource", "subresource", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "apiserver_request_duration_seconds",
            "Request latency (non-streaming).",
            ["verb", "resource"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.store_ops: dict[str, int] = defaultdict(int)  # counted by the server's CountingStore
        self.gauges: dict[str, Callable[[], float]] = {}
        self.registry.register(_Counts(self))

    def observe(self, verb: str, resource: str, subresource: str, code: int, seconds: float) -> None:
        verb = UPSTREAM_VERBS.get(verb, verb)
        self._requests.labels(verb, resource, subresource, str(code)).inc()
        if verb in ("WATCH", "CONNECT"):
            return  # long-running: their duration is not a latency
        self._latency.labels(verb, resource).observe(seconds)

    def request_count(self, verb: str, resource: str, subresource: str = "") -> int:
        """Requests answered so far with this verb and resource, whatever their code."""
        labels = {"verb": verb, "resource": resource, "subresource": subresource}
        return int(
            sum(
                s.value
                for m in self._requests.collect()
                for s in m.samples
                if s.name == "apiserver_request_total" and labels.items() <= s.labels.items()
            )
        )


class _Counts:
    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        ops = CounterMetricFamily(
            "apiserver_storage_operations", "Store operations by type.", labels=["operation"]
        )
        for op, n in sorted(self.m.store_ops.items()):
            ops.add_metric([op], n)
        yield ops
        for name, fn in sorted(self.m.gauges.items()):
            yield GaugeMetricFamily(name, GAUGE_HELP.get(name, name), value=fn())


class FlowControlMetrics:
    """The flow control's seats, queues and refusals (hypernetes.api.fairness)."""

    def __init__(self, flow: FlowControl) -> None:
        self.flow = flow

    def collect(self) -> Iterator[Metric]:
        f = self.flow
        executing = GaugeMetricFamily(
            "apiserver_flowcontrol_current_executing_requests",
            "Requests executing, by level.",
            labels=["priority_level"],
        )
        waiting = GaugeMetricFamily(
            "apiserver_flowcontrol_current_inqueue_requests",
            "Requests waiting for a seat.",
            labels=["priority_level"],
        )
        for name, level in f.levels.items():
            executing.add_metric([name], level.executing)
            waiting.add_metric([name], level.waiting)
        rejected = CounterMetricFamily(
            "apiserver_flowcontrol_rejected_requests",
            "Requests refused with 429.",
            labels=["priority_level", "reason"],
        )
        for (level_name, reason), n in sorted(f.rejected.items()):
            rejected.add_metric([level_name, reason], n)
        open_ = GaugeMetricFamily(
            "apiserver_longrunning_requests", "Open watches and streams.", labels=["kind"]
        )
        for kind in ("watch", "stream"):
            open_.add_metric([kind], sum(n for (k, _), n in f.long_running.items() if k == kind))
        yield from (executing, waiting, rejected, open_)


class ConnectionMetrics:
    """The connection gate's counts (hypernetes.api.connections)."""

    def __init__(self, gate: ConnectionGate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[Metric]:
        g = self.gate
        yield GaugeMetricFamily("apiserver_open_connections", "Open connections.", value=g.total)
        yield GaugeMetricFamily(
            "apiserver_max_connections", "Most open connections allowed.", value=g.max_total
        )
        refused = CounterMetricFamily(
            "apiserver_refused_connections", "Connections refused, by reason.", labels=["reason"]
        )
        for reason, n in sorted(g.shed.total.items()):
            refused.add_metric([reason], n)
        yield refused
        yield CounterMetricFamily(
            "apiserver_timed_out_connections", "Connections closed for idling.", value=g.timed_out
        )
