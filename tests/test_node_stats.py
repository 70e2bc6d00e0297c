"""The node side of metrics: a pod VM's usage read from its cgroup (a real one on this host) or
its process, the node server's /stats/summary over mutual TLS as the API server fetches it, and
the API server's scraper keeping out what a node should not say."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, cast

import pytest

from hypernetes.api.metricsapi import MAX_COUNTER, ResourceMetrics
from hypernetes.api.nodeclient import RemotePods, client_ssl
from hypernetes.api.subresources import PodProxyError
from hypernetes.auth.ca import ensure_ca
from hypernetes.auth.nodecerts import ensure_apiserver_client, node_key_and_csr, sign_node_serving
from hypernetes.node.proxy import NodePodProxy
from hypernetes.node.server import NodeServer, server_ssl
from hypernetes.objects import Obj
from hypernetes.runtime.cgroups import Cgroups, Layout, Limits, detect
from hypernetes.runtime.interface import (
    ContainerState,
    ContainerStatus,
    Runtime,
    SandboxState,
    SandboxStatus,
    Usage,
)
from hypernetes.runtime.usage import process_usage
from hypernetes.store.keys import object_key
from tests.support.memstore import MemoryStore

BUSY = "import time\nwhile time.process_time() < 0.6: pass\n"  # 0.6 s of CPU, however loaded


@pytest.mark.skipif(os.geteuid() != 0 or detect() is None, reason="needs root and a cgroup hierarchy")
@pytest.mark.allow_skip_on_ci("CI runs as root on a host with cgroups; a developer's shell may not")
def test_cgroup_usage_of_a_busy_process() -> None:
    """A real cgroup (v1 or v2, whichever this host has) with a process spinning 0.6 s in it."""
    layout = detect()
    assert layout is not None
    groups = Cgroups(layout, parent=f"/hn-stats-test-{os.getpid()}")
    name = "hn-busy"
    procs = groups.create(name, Limits(cpu_shares=1024, cpu_quota_us=None, memory_max=256 << 20, pids_max=64))
    try:
        proc = subprocess.Popen(
            ["python3", "-c", f"import sys; sys.stdin.readline()\n{BUSY}"], stdin=subprocess.PIPE
        )
        for f in procs:
            f.write_text(str(proc.pid))
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        proc.wait(10)
        used = groups.usage(name)
        assert used is not None
        assert 0.6e9 <= used.cpu_ns < 5e9, used  # 0.6 s of CPU at least (and Python's start)
        assert 0 < used.memory_working_set < 256 << 20, used
    finally:
        groups.remove(name)
        for d in groups.parent_dirs():
            d.rmdir()
    assert groups.usage(name) is None  # gone: no figures, no error


def test_cgroup_v2_files(tmp_path: Path) -> None:
    """cgroup v2's figures: cpu.stat usage_usec, memory.current less inactive_file."""
    layout = Layout(
        2, dict.fromkeys(("cpu", "memory", "pids", "io"), tmp_path), dict.fromkeys(("cpu", "memory"), "/")
    )
    groups = Cgroups(layout, parent="/hypernetes.slice")
    d = tmp_path / "hypernetes.slice" / "hn-x"
    d.mkdir(parents=True)
    (d / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    (d / "memory.current").write_text(str(300 << 20))
    (d / "memory.stat").write_text(f"anon {200 << 20}\nactive_file 0\ninactive_file {100 << 20}\n")
    assert groups.usage("hn-x") == Usage(1_500_000_000, 200 << 20)
    (d / "cpu.stat").write_text("user_usec 1\n")  # a file without the figure: not known
    assert groups.usage("hn-x") is None


def test_process_usage_of_this_process() -> None:
    start = process_usage(os.getpid())
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    after = process_usage(os.getpid())
    assert start is not None and after is not None
    assert after.cpu_ns - start.cpu_ns >= 0.2e9
    assert after.memory_working_set > 10 << 20
    assert process_usage(2**22 + 7) is None  # no such process


class OneVM:
    """The runtime's two calls NodeStats makes, for a pod VM with two running containers."""

    async def list_sandboxes(self) -> list[SandboxStatus]:
        running = [ContainerStatus(n, ContainerState.RUNNING, started_at=time.time()) for n in ("a", "b")]
        return [
            SandboxStatus(
                "uid-1", "web", "shop", SandboxState.READY, "hypervm", containers=running, created_at=1.0
            )
        ]

    async def usage(self, sandbox_id: str) -> Usage | None:
        return Usage(3_000_000_001, 101 << 20) if sandbox_id == "uid-1" else None


async def test_node_server_summary_over_mutual_tls(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path / "pki")
    key = tmp_path / "node.key"
    cert = tmp_path / "node.crt"
    cert.write_bytes(sign_node_serving(ca, "n1", node_key_and_csr(key, "n1"), ["127.0.0.1"]))
    server = NodeServer(NodePodProxy(cast(Runtime, OneVM())), "n1")
    runner = await server.start("127.0.0.1", 0, server_ssl(cert, key, ca.ca_cert))
    port = runner.addresses[0][1]
    store = MemoryStore()
    node = {
        "metadata": {"name": "n1"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        },
    }
    await store.create(object_key("", "nodes", None, "n1"), json.dumps(node).encode())
    remote = RemotePods(store, client_ssl(ca.ca_cert, *ensure_apiserver_client(ca)))
    try:
        summary = await remote.node_stats("n1")
        [pod] = summary["pods"]
        assert pod["podRef"] == {"name": "web", "namespace": "shop", "uid": "uid-1"}
        assert pod["cpu"]["usageCoreNanoSeconds"] == 3_000_000_001
        # two containers share the VM's figures; their sum is the VM's
        shares = [c["cpu"]["usageCoreNanoSeconds"] for c in pod["containers"]]
        assert sum(shares) == 3_000_000_001 and [c["name"] for c in pod["containers"]] == ["a", "b"]
        assert sum(c["memory"]["workingSetBytes"] for c in pod["containers"]) == 101 << 20
        assert summary["node"]["nodeName"] == "n1" and summary["node"]["cpu"]["usageCoreNanoSeconds"] > 0
        # a client without the API servers' certificate is not served
        stranger = RemotePods(store, client_ssl(ca.ca_cert, cert, key))
        with pytest.raises(PodProxyError):
            await stranger.node_stats("n1")
        await stranger.close()
    finally:
        await remote.close()
        await runner.cleanup()


class Liar:
    """A node that says what it should not: other nodes' pods, unknown pods, bad numbers."""

    def __init__(self) -> None:
        self.cpu = 0

    async def node_stats(self, node: str) -> Obj:
        self.cpu += 10**9

        def figures(cpu: Any, memory: Any = 1 << 20) -> Obj:
            return {"cpu": {"usageCoreNanoSeconds": cpu}, "memory": {"workingSetBytes": memory}}

        def pod(name: str, uid: str, containers: list[Obj]) -> Obj:
            return {
                "podRef": {"name": name, "namespace": "ns", "uid": uid},
                **figures(self.cpu),
                "containers": containers,
            }

        return {
            "node": figures(self.cpu),
            "pods": [
                pod(
                    "mine",
                    "u-mine",
                    [
                        {"name": "c", **figures(self.cpu)},
                        {"name": "ghost", **figures(self.cpu)},
                        {"name": ["c"], **figures(self.cpu)},  # not even a name
                    ],
                ),
                pod("theirs", "u-theirs", [{"name": "c", **figures(self.cpu)}]),  # bound elsewhere
                pod("nobody", "u-nobody", [{"name": "c", **figures(self.cpu)}]),  # no such pod
                pod(
                    "bad",
                    "u-bad",
                    [
                        {"name": "c", **figures("1e9")},
                        {"name": "d", **figures(-1)},
                        {"name": "e", **figures(MAX_COUNTER)},
                    ],
                ),
                "not a pod",
            ],
        }


async def test_the_scraper_keeps_out_what_a_node_should_not_say() -> None:
    store = MemoryStore()

    async def put(key: str, obj: Obj) -> None:
        await store.create(key, json.dumps(obj).encode())

    for n in ("n1", "n2"):
        await put(object_key("", "nodes", None, n), {"metadata": {"name": n}})
    for name, node in (("mine", "n1"), ("theirs", "n2"), ("bad", "n1")):
        spec = {"nodeName": node, "containers": [{"name": c} for c in ("c", "d", "e")]}
        await put(
            object_key("", "pods", "ns", name),
            {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}"}, "spec": spec},
        )
    liar = Liar()
    metrics = ResourceMetrics(store, liar, every=1.0)
    for _ in range(2):
        await metrics.scrape()
        await asyncio.sleep(0.05)
    # only n1's own pod, only its declared containers; n2 (which the liar also answers for) reports
    # "theirs" itself, so it is known, but from n2's answer only
    mine = metrics.pod_metrics(("ns", "mine"))
    assert mine is not None and [c["name"] for c in mine["containers"]] == ["c"]
    assert metrics.pod_metrics(("ns", "nobody")) is None
    assert metrics.pod_metrics(("ns", "bad")) is None  # no container with usable numbers
    theirs = metrics.pod_metrics(("ns", "theirs"))
    assert theirs is not None  # n2 reported it; n1's claim to it was dropped
    assert metrics.pods[("ns", "theirs")].node == "n2"
