"""The API under load, with the server in a process of its own: single-object requests at
200 req/s and writes fanned out to 100 watchers lose nothing and fail nothing. Latency is a
benchmark's business, not a test's (a shared CI machine makes timings noisy): bench/api_latency.py
measures it and bench/RESULTS.md records it; the numbers seen here are printed for the log."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from hypernetes.api.client import ApiClient
from tests.support.apiload import request_latency, server_process, watch_fanout


async def _server_p99_bucket(url: str, token: str, ca: Path) -> dict[str, float]:
    """Per verb, the smallest histogram bound holding 99% of configmap requests."""
    async with ApiClient(url, token=token, ca_file=ca) as c, c._http().get(url + "/metrics") as resp:
        text = await resp.text()
    buckets: dict[str, list[tuple[float, int]]] = {}
    pattern = r'duration_seconds_bucket\{verb="(\w+)",resource="configmaps",le="([^"]+)"\} (\d+)'
    for m in re.finditer(pattern, text):
        le = float("inf") if m.group(2) == "+Inf" else float(m.group(2))
        buckets.setdefault(m.group(1), []).append((le, int(m.group(3))))
    out = {}
    for verb, bs in buckets.items():
        total = bs[-1][1]
        out[verb] = next(le for le, n in bs if n >= 0.99 * total)
    return out


def _measure(tmp_path: Path, store_url: str) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    with server_process(tmp_path, store_url) as (url, token, ca):
        load = asyncio.run(request_latency(url, token, ca, rate=200, seconds=5))
        server = asyncio.run(_server_p99_bucket(url, token, ca))
        fan = asyncio.run(watch_fanout(url, token, ca))
    print(
        json.dumps({"store": store_url.split(":")[0], "load": load, "server_p99_le_s": server, "fanout": fan})
    )
    assert load["errors"] == 0
    assert fan["delivered"] == 2000
    return load, server, fan


def test_load_on_the_api_layer(tmp_path: Path) -> None:
    _measure(tmp_path, "memory")


@pytest.mark.slow
def test_load_on_sqlite(tmp_path: Path) -> None:
    _measure(tmp_path, f"sqlite:///{tmp_path}/state.db")
