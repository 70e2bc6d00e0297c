"""metrics.k8s.io/v1beta1, served from memory as metrics-server serves it: every RESOLUTION
seconds each node's usage summary is scraped (its server's /stats/summary, or this process's
own node agent), and a pod's or node's CPU is the rate between its last two scrapes (the
window); memory is the working set at the last one. Nothing is stored: every API server scrapes
for itself, and a restarted one serves figures again after two scrapes.

Pods are matched to the summary by uid, so PodMetrics carry the pod's labels (`kubectl top pod
-l`, the HPA's selector) and a pod re-created under the same name never inherits its
predecessor's counters. What a node sends is bounded and checked; a node that cannot be reached
or answers nonsense is skipped (its pods have no metrics until it answers again), as
metrics-server does.

Tenancy: the authorizer decides as for any kind (a tenant reads the PodMetrics of its own
namespaces; NodeMetrics are for whoever may read nodes) and its scope filters lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from hypernetes.api import schema
from hypernetes.api.loopslice import LoopBudget
from hypernetes.api.routing import JSON_CT, SCOPE, TABLE_CT, Target, respond, wants
from hypernetes.api.selectors import Selectors, parse_field_selector, parse_label_selector
from hypernetes.api.status import method_not_allowed, not_found
from hypernetes.api.tables import render_table
from hypernetes.objects import Obj
from hypernetes.store.interface import Store
from hypernetes.store.keys import key_prefix

log = logging.getLogger(__name__)

RESOLUTION = 15.0  # metrics-server's --metric-resolution; HYPERNETES_METRICS_RESOLUTION overrides
SCRAPE_TIMEOUT = 10.0
MAX_PODS = 10_000  # pods one node's summary may list
MAX_COUNTER = 1 << 62


class NodeStatsSource(Protocol):
    async def node_stats(self, node: str) -> Obj: ...


def resolution() -> float:
    with contextlib.suppress(ValueError):
        return max(1.0, float(os.environ.get("HYPERNETES_METRICS_RESOLUTION") or RESOLUTION))
    return RESOLUTION


@dataclass(frozen=True)
class Point:
    """One scrape of one pod, container or node: when, CPU time so far, memory working set."""

    at: float
    cpu_ns: int
    memory: int


def _counter(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_COUNTER else None


def _figure(figures: Obj, section: str, key: str) -> int | None:
    part = figures.get(section)
    return _counter(part.get(key)) if isinstance(part, dict) else None


def point(figures: Any, at: float) -> Point | None:
    """A Summary entry's cpu/memory, checked: None if either is missing or not a counter."""
    if not isinstance(figures, dict):
        return None
    cpu = _figure(figures, "cpu", "usageCoreNanoSeconds")
    memory = _figure(figures, "memory", "workingSetBytes")
    return Point(at, cpu, memory) if cpu is not None and memory is not None else None


@dataclass
class Series:
    """The last two points of one thing measured."""

    prev: Point | None = None
    last: Point | None = None

    def add(self, p: Point) -> None:
        if self.last is not None and p.cpu_ns < self.last.cpu_ns:  # counter reset: start again
            self.prev, self.last = None, p
            return
        self.prev, self.last = self.last, p

    def usage(self) -> tuple[int, int, float] | None:
        """(nanocores, memory bytes, window seconds), once two points are in."""
        if self.prev is None or self.last is None or self.last.at <= self.prev.at:
            return None
        window = self.last.at - self.prev.at
        return int((self.last.cpu_ns - self.prev.cpu_ns) / window), self.last.memory, window


@dataclass
class PodSeries:
    uid: str
    node: str
    containers: dict[str, Series] = field(default_factory=dict)
    seen: float = 0.0


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _window(seconds: float) -> str:
    return f"{round(seconds)}s"


def _usage(nanocores: int, memory: int) -> Obj:
    return {"cpu": f"{nanocores}n", "memory": f"{memory // 1024}Ki"}


class ResourceMetrics:
    """The scraped figures and the metrics.k8s.io handlers of one API server."""

    def __init__(
        self, store: Store | None, source: NodeStatsSource | None, every: float | None = None
    ) -> None:
        self.store, self.source = store, source
        self.every = every if every is not None else resolution()
        self.nodes: dict[str, Series] = {}
        self.pods: dict[tuple[str, str], PodSeries] = {}  # (namespace, name)
        self.node_objs: dict[str, Obj] = {}
        self.pod_objs: dict[tuple[str, str], Obj] = {}
        self.scrapes = 0

    # -- scraping ------------------------------------------------------------------------------

    async def run(self) -> None:
        if self.source is None or self.store is None:
            return
        while True:
            start = time.monotonic()
            try:
                await self.scrape()
            except Exception:  # a store hiccup must not end metrics for good
                log.exception("metrics scrape failed")
            await asyncio.sleep(max(0.0, self.every - (time.monotonic() - start)))

    async def _list(self, group: str, plural: str) -> list[Obj]:
        assert self.store is not None
        page = await self.store.list(key_prefix(group, plural, None))
        # decoded a slice at a time (api/loopslice.py): thousands of pods every round would
        # otherwise hold the API server's loop for hundreds of milliseconds
        budget, out = LoopBudget(), []
        for kv in page.items:
            out.append(json.loads(kv.value))
            await budget.tick()
        return out

    async def scrape(self) -> None:
        assert self.source is not None
        nodes = await self._list("", "nodes")
        pods = await self._list("", "pods")
        self.node_objs = {o["metadata"]["name"]: o for o in nodes}
        by_uid = {str(p["metadata"].get("uid", "")).lower(): p for p in pods}
        answers = await asyncio.gather(
            *(self._fetch(name) for name in self.node_objs), return_exceptions=False
        )
        now = time.time()
        for name, summary in zip(self.node_objs, answers, strict=True):
            if summary is not None:
                self._take(name, summary, by_uid, now)
        # forget what is gone: nodes deleted, pods deleted or not reported for two rounds
        self.nodes = {n: s for n, s in self.nodes.items() if n in self.node_objs}
        stale = now - 2.5 * self.every
        self.pods = {k: s for k, s in self.pods.items() if s.seen >= stale and k in self.pod_objs}
        self.scrapes += 1

    async def _fetch(self, node: str) -> Obj | None:
        assert self.source is not None
        try:
            return await asyncio.wait_for(self.source.node_stats(node), SCRAPE_TIMEOUT)
        except Exception as e:  # unreachable, refused, malformed: that node is skipped this round
            log.debug("metrics: node %s: %s", node, e)
            return None

    def _take(self, node: str, summary: Obj, by_uid: dict[str, Obj], now: float) -> None:
        p = point(summary.get("node"), now)
        if p is not None:
            self.nodes.setdefault(node, Series()).add(p)
        entries = summary.get("pods")
        if not isinstance(entries, list):
            return
        live: dict[tuple[str, str], Obj] = {}
        for entry in entries[:MAX_PODS]:
            ref = entry.get("podRef") if isinstance(entry, dict) else None
            uid = str((ref or {}).get("uid") or "").lower() if isinstance(ref, dict) else ""
            pod = by_uid.get(uid)
            # only pods the API knows, bound to the node that reports them
            if pod is None or (pod.get("spec") or {}).get("nodeName") != node:
                continue
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            series = self.pods.get(key)
            if series is None or series.uid != uid:
                series = self.pods[key] = PodSeries(uid, node)
            names = {c.get("name") for c in (pod.get("spec") or {}).get("containers") or []}
            containers = entry.get("containers")
            for c in containers if isinstance(containers, list) else []:
                cp = point(c, now) if isinstance(c, dict) else None
                if cp is not None and isinstance(c.get("name"), str) and c["name"] in names:
                    series.containers.setdefault(str(c["name"]), Series()).add(cp)
            series.seen = now
            live[key] = pod
        self.pod_objs = {k: v for k, v in self.pod_objs.items() if v["spec"].get("nodeName") != node}
        self.pod_objs.update(live)

    # -- objects ---------------------------------------------------------------------------------

    def pod_metrics(self, key: tuple[str, str]) -> Obj | None:
        series, pod = self.pods.get(key), self.pod_objs.get(key)
        if series is None or pod is None:
            return None
        containers, last, window = [], 0.0, 0.0
        for name, s in sorted(series.containers.items()):
            u = s.usage()
            if u is None or s.last is None:
                continue
            containers.append({"name": name, "usage": _usage(u[0], u[1])})
            last, window = max(last, s.last.at), max(window, u[2])
        if not containers:
            return None
        meta = pod["metadata"]
        return {
            "kind": "PodMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "creationTimestamp": _rfc3339(time.time()),
                "labels": dict(meta.get("labels") or {}),
            },
            "timestamp": _rfc3339(last),
            "window": _window(window),
            "containers": containers,
        }

    def node_metrics(self, name: str) -> Obj | None:
        series, node = self.nodes.get(name), self.node_objs.get(name)
        u = series.usage() if series is not None else None
        if u is None or node is None or series is None or series.last is None:
            return None
        return {
            "kind": "NodeMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {
                "name": name,
                "creationTimestamp": _rfc3339(time.time()),
                "labels": dict(node["metadata"].get("labels") or {}),
            },
            "timestamp": _rfc3339(series.last.at),
            "window": _window(u[2]),
            "usage": _usage(u[0], u[1]),
        }

    # -- serving -------------------------------------------------------------------------------

    async def handle(self, request: web.Request, t: Target, verb: str) -> web.StreamResponse:
        if verb not in ("get", "list"):
            raise method_not_allowed(request.method)
        pods = t.kind.kind == "PodMetrics"
        if verb == "get":
            assert t.name is not None
            obj = self.pod_metrics((t.namespace or "", t.name)) if pods else self.node_metrics(t.name)
            if obj is None:
                raise not_found(t.resource, t.name, t.group)
            if wants(request.headers.get("Accept"), "Table"):
                return respond(render_table(t.kind, [obj], request.query.get("includeObject")), 200, TABLE_CT)
            return respond(obj)
        sel = Selectors(
            parse_label_selector(request.query.get("labelSelector")),
            parse_field_selector(request.query.get("fieldSelector"), t.group, t.kind.kind),
            scope if callable(scope := request.get(SCOPE)) else None,
        )
        build: Callable[[Any], Obj | None]
        if pods:
            keys: list[Any] = sorted(k for k in self.pods if t.namespace in (None, "", k[0]))
            build = self.pod_metrics
        else:
            keys, build = sorted(self.nodes), self.node_metrics
        items = [o for k in keys if (o := build(k)) is not None and sel.matches(o)]
        if wants(request.headers.get("Accept"), "Table"):
            table = render_table(t.kind, items, request.query.get("includeObject"))
            table["metadata"] = {}
            return respond(table, 200, TABLE_CT)
        head = {"kind": t.kind.list_kind, "apiVersion": t.kind.api_version, "metadata": {}}
        return respond({**head, "items": items}, 200, JSON_CT)


def served(kind: schema.Kind) -> bool:
    """A kind this module serves (from memory) instead of the store."""
    return kind.group == "metrics.k8s.io"


def stats_source(pod_proxy: object) -> NodeStatsSource | None:
    """The server's pod proxy, if it reaches nodes' usage (api/nodeclient.NodeStreams)."""
    return pod_proxy if callable(getattr(pod_proxy, "node_stats", None)) else None  # type: ignore[return-value]


async def handle(
    metrics: ResourceMetrics | None, request: web.Request, t: Target, verb: str
) -> web.StreamResponse:
    return await (metrics or _NONE).handle(request, t, verb)


_NONE = ResourceMetrics(None, None)  # what a server without nodes serves: nothing
