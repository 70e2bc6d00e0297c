"""Prometheus text metrics: requests by verb/resource/code with latency histograms, open
watchers, store operations. Plain counters in process; no client library needed."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, int], int] = defaultdict(int)
        self.latency: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.store_ops: dict[str, int] = defaultdict(int)
        self.gauges: dict[str, Callable[[], float]] = {}

    def observe(self, verb: str, resource: str, subresource: str, code: int, seconds: float) -> None:
        self.requests[(verb, resource, subresource, code)] += 1
        if verb in ("WATCH", "CONNECT"):
            return  # long-running: their duration is not a latency
        key = (verb, resource)
        counts = self.latency.setdefault(key, [0] * (len(BUCKETS) + 1))
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum[key] += seconds

    def render(self) -> str:
        out = ["# HELP apiserver_request_total Requests by verb, resource, subresource and code.",
               "# TYPE apiserver_request_total counter"]
        for (verb, res, sub, code), n in sorted(self.requests.items()):
            out.append(f'apiserver_request_total{{verb="{verb}",resource="{res}",subresource="{sub}",'
                       f'code="{code}"}} {n}')
        out += ["# HELP apiserver_request_duration_seconds Request latency (non-streaming).",
                "# TYPE apiserver_request_duration_seconds histogram"]
        for (verb, res), counts in sorted(self.latency.items()):
            acc = 0
            for le, c in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                acc += c
                out.append(f'apiserver_request_duration_seconds_bucket{{verb="{verb}",resource="{res}",'
                           f'le="{le}"}} {acc}')
            out.append(f'apiserver_request_duration_seconds_sum{{verb="{verb}",resource="{res}"}} '
                       f'{self.latency_sum[(verb, res)]:.6f}')
            out.append(f'apiserver_request_duration_seconds_count{{verb="{verb}",resource="{res}"}} {acc}')
        out += ["# HELP apiserver_storage_operations_total Store operations by type.",
                "# TYPE apiserver_storage_operations_total counter"]
        for op, n in sorted(self.store_ops.items()):
            out.append(f'apiserver_storage_operations_total{{operation="{op}"}} {n}')
        for name, fn in sorted(self.gauges.items()):
            out += [f"# TYPE {name} gauge", f"{name} {fn():g}"]
        return "\n".join(out) + "\n"
