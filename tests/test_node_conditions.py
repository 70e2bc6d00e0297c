"""Node pressure conditions measured on this host (hypernetes/node/conditions.py): real /proc and
statvfs readings, thresholds placed so that a condition really flips, on a small tmpfs the test
mounts and fills; then through a real API server, node agent and scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from hypernetes.apiclient import ApiClient
from hypernetes.controllers.manager import ControllerManager
from hypernetes.logfmt import JsonFormatter
from hypernetes.metrics import REGISTRY, exposition
from hypernetes.node.agent import NodeAgent
from hypernetes.node.conditions import (
    IMAGEFS,
    MEMORY,
    NODEFS,
    NODEFS_INODES,
    PIDS,
    NodePressure,
    observe,
    parse_thresholds,
)
from hypernetes.node.podspec import TENANT_LABEL
from hypernetes.node.podstatus import rfc3339
from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.kernels import KernelRegistry
from hypernetes.scheduler.loop import Scheduler
from tests.support.apiserver import ApiServerThread
from tests.support.waiting import wait_for_async

MiB = 1 << 20
TMPFS_SIZE, TMPFS_INODES = 16 * MiB, 1000


class Clock:
    """Seconds that move only when the test says (conditions' transition times are compared)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs with 1000 inodes, mounted for the test and unmounted after it."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (the suite runs as root)")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},nr_inodes={TMPFS_INODES}", "tmpfs", str(mnt)],
        check=True,
    )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(path: Path, size: int) -> Path:
    """A file of `size` real bytes (tmpfs keeps no holes: the pages are taken)."""
    f = path / "filler"
    with open(f, "wb") as out:
        out.write(b"\xa5" * size)
    return f


def test_observations_are_the_hosts(tmp_path: Path) -> None:
    """Each signal against an independent reading of the same host figure."""
    seen = observe(tmp_path, tmp_path)
    mem = psutil.virtual_memory()  # psutil reads MemAvailable too, at another moment
    assert seen[MEMORY].capacity == mem.total
    assert abs(seen[MEMORY].available - mem.available) < 256 * MiB
    disk = shutil.disk_usage(tmp_path)
    assert seen[NODEFS].capacity == disk.total == seen[IMAGEFS].capacity
    assert abs(seen[NODEFS].available - disk.free) < 256 * MiB
    st = os.statvfs(tmp_path)
    assert seen[NODEFS_INODES].capacity == st.f_files
    tasks = sum(len(os.listdir(f"/proc/{p}/task")) for p in psutil.pids() if os.path.isdir(f"/proc/{p}"))
    assert 0 < seen[PIDS].capacity - seen[PIDS].available < tasks + 500


def test_memory_and_pid_pressure_flip_at_thresholds_over_the_real_figures(tmp_path: Path) -> None:
    available = observe(tmp_path, tmp_path)[MEMORY].available
    clock = Clock()
    above = parse_thresholds(f"memory.available<{available // MiB + 1024}Mi,pid.available<100%")
    pressure = NodePressure(tmp_path, tmp_path, above, transition_period=0, clock=clock)
    assert pressure.update() == {"MemoryPressure": True, "DiskPressure": False, "PIDPressure": True}
    by_type = {c["type"]: c for c in pressure.conditions("2027-01-01T00:00:00Z")}
    assert by_type["MemoryPressure"]["reason"] == "KubeletHasInsufficientMemory"
    assert by_type["MemoryPressure"]["message"] == "kubelet has insufficient memory available"
    assert by_type["PIDPressure"]["reason"] == "KubeletHasInsufficientPID"
    assert by_type["DiskPressure"]["reason"] == "KubeletHasNoDiskPressure"
    below = parse_thresholds("memory.available<1Mi,pid.available<1")
    pressure.thresholds = below
    clock.now += 10
    assert pressure.update() == {"MemoryPressure": False, "DiskPressure": False, "PIDPressure": False}
    by_type = {c["type"]: c for c in pressure.conditions("2027-01-01T00:00:10Z")}
    assert by_type["MemoryPressure"]["reason"] == "KubeletHasSufficientMemory"
    assert by_type["PIDPressure"]["message"] == "kubelet has sufficient PID available"


def test_pressure_holds_for_the_transition_period_and_transition_times_move_only_on_change(
    tmp_path: Path,
) -> None:
    clock = Clock()
    available = observe(tmp_path, tmp_path)[MEMORY].available
    pressure = NodePressure(
        tmp_path,
        tmp_path,
        parse_thresholds(f"memory.available<{available + 1024 * MiB}"),
        transition_period=60,
        clock=clock,
    )
    start = clock.now
    assert pressure.update()["MemoryPressure"]
    first = {c["type"]: c["lastTransitionTime"] for c in pressure.conditions("now")}
    pressure.thresholds = parse_thresholds("memory.available<1Mi")
    clock.now += 30  # no longer met, but met within the last 60 s: still under pressure
    assert pressure.update()["MemoryPressure"]
    assert {c["type"]: c["lastTransitionTime"] for c in pressure.conditions("now")} == first
    clock.now += 31
    assert not pressure.update()["MemoryPressure"]
    moved = {c["type"]: c["lastTransitionTime"] for c in pressure.conditions("now")}
    assert moved["MemoryPressure"] != first["MemoryPressure"]
    assert moved["DiskPressure"] == first["DiskPressure"]  # never changed since the start
    assert first["DiskPressure"] == rfc3339(start)


def test_disk_and_inode_pressure_on_a_filled_tmpfs_with_upstreams_defaults(small_fs: Path) -> None:
    """nodefs.available<10% and imagefs.available<15% of 16 MiB; nodefs.inodesFree<5% of 1000."""
    pressure = NodePressure(small_fs / "rt", small_fs / "images", transition_period=0)
    assert pressure.update()["DiskPressure"] is False
    filler = fill(small_fs, 14 * MiB)  # 2 MiB left: under 15% (imagefs), over 10% (nodefs)
    assert pressure.update()["DiskPressure"] is True
    filler.unlink()
    assert pressure.update()["DiskPressure"] is False
    for i in range(960):  # inodes: 1000 minus the root and 960 files leaves under 5% free
        (small_fs / f"f{i}").touch()
    assert observe(small_fs, small_fs)[NODEFS_INODES].available < 50
    assert pressure.update()["DiskPressure"] is True


@pytest.mark.parametrize(
    "text, error",
    [
        ("memory.available>1Gi", "a threshold is SIGNAL<QUANTITY or SIGNAL<PERCENT%"),
        ("cpu.available<1", "unknown signal 'cpu.available'"),
        ("nodefs.available<110%", "between 0% and 100%"),
        ("nodefs.available<lots", "'lots' is not a quantity"),
        ("memory.available<1Gi,memory.available<2Gi", "memory.available given twice"),
    ],
)
def test_bad_thresholds_say_which_part(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_thresholds(text)


def test_thresholds_in_kubelet_syntax() -> None:
    t = parse_thresholds("memory.available<100Mi, nodefs.inodesFree<5%,pid.available<1000")
    assert [str(x) for x in t] == ["memory.available<104857600", "nodefs.inodesFree<5%", "pid.available<1000"]
    assert t[1].limit(2000) == 100 and t[0].limit(1) == 100 * MiB
    assert parse_thresholds("") == ()
    pressure = NodePressure(Path("/"), Path("/"), parse_thresholds("nodefs.available<1Mi"))
    assert pressure.threshold(NODEFS, 10 * MiB) == MiB and pressure.threshold(MEMORY, 10 * MiB) == 0


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "127.0.0.1:1/none:1"}], **spec},
    }


async def taints(admin: ApiClient, count: int = 2) -> list[dict[str, Any]] | None:
    """The Node's taints once there are `count` of them."""
    node = await admin.get("v1", "nodes", "node1")
    got = [{k: v for k, v in t.items() if k != "timeAdded"} for t in node["spec"].get("taints") or []]
    return got if len(got) == count else None


async def test_a_full_disk_taints_the_node_the_scheduler_avoids_it_and_the_agent_refuses_pods(
    small_fs: Path, kernels: KernelRegistry
) -> None:
    """Through the real API server (the agent as a node identity), the node agent, the node
    lifecycle controller (which taints by condition) and the scheduler: DiskPressure with its
    reason, its taint (an operator's taint kept), a pod left Pending with upstream's taint message,
    pods bound to the node anyway Failed as the kubelet rejects them; once the disk is freed, the
    condition and the taint go and the pending pod is bound."""
    api = ApiServerThread(small_fs.parent / "api", tenancy=True).start()
    assert api.tenancy is not None
    admin = ApiClient(api.url, token=api.token, ca_file=api.ca.ca_cert)
    node_token = api.tenancy.issuer.issue_node("node1").token
    node_client = ApiClient(api.url, token=node_token, ca_file=api.ca.ca_cert)
    runtime = HyperVM(small_fs / "rt", ImageStore(small_fs / "images"), kernels, die_with_parent=True)
    clock = Clock()
    pressure = NodePressure(small_fs / "rt", small_fs / "images", transition_period=0, clock=clock)
    agent = NodeAgent(node_client, runtime, "node1", pressure=pressure)
    lifecycle = ControllerManager(admin, only=["nodelifecycle"])
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(lifecycle.run())]
    try:
        await agent.register()
        node = await admin.get("v1", "nodes", "node1")
        conditions = {c["type"]: c for c in node["status"]["conditions"]}
        assert conditions["DiskPressure"]["status"] == "False"
        assert conditions["DiskPressure"]["reason"] == "KubeletHasNoDiskPressure"
        assert not node["spec"].get("taints")
        # allocatable ephemeral-storage keeps nodefs.available's threshold (10%) back, as the kubelet's
        assert node["status"]["capacity"]["ephemeral-storage"] == f"{TMPFS_SIZE // 1024}Ki"
        assert (
            node["status"]["allocatable"]["ephemeral-storage"]
            == f"{(TMPFS_SIZE - TMPFS_SIZE // 10) // 1024}Ki"
        )
        operator_taint = {"key": "example.com/maintenance", "value": "soon", "effect": "PreferNoSchedule"}
        await admin.patch("v1", "nodes", "node1", {"spec": {"taints": [operator_taint]}})

        filler = fill(small_fs, 14 * MiB)
        clock.now += 10
        await agent.report_status()
        node = await admin.get("v1", "nodes", "node1")
        conditions = {c["type"]: c for c in node["status"]["conditions"]}
        assert conditions["DiskPressure"]["status"] == "True"
        assert conditions["DiskPressure"]["reason"] == "KubeletHasDiskPressure"
        assert (
            conditions["DiskPressure"]["lastTransitionTime"]
            != conditions["MemoryPressure"]["lastTransitionTime"]
        )
        events = (await admin.list("v1", "events", "default"))["items"]
        node_events = [(e["reason"], e["message"]) for e in events if e["involvedObject"]["kind"] == "Node"]
        assert ("NodeHasDiskPressure", "Node node1 status is now: NodeHasDiskPressure") in node_events
        assert ("NodeHasSufficientMemory", "Node node1 status is now: NodeHasSufficientMemory") in node_events
        tainted = await wait_for_async(lambda: taints(admin), what="the disk-pressure taint")
        assert tainted == [
            operator_taint,
            {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"},
        ]

        shop = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {TENANT_LABEL: "acme"}},
        }
        acme = {"apiVersion": "hypernetes.io/v1", "kind": "Tenant", "metadata": {"name": "acme"}, "spec": {}}
        await admin.create("hypernetes.io/v1", "tenants", acme)
        await admin.create("v1", "namespaces", shop)
        logs = io.StringIO()
        handler = logging.StreamHandler(logs)
        handler.setFormatter(JsonFormatter())
        logging.getLogger("hypernetes.node").addHandler(handler)
        tasks += [asyncio.create_task(Scheduler(admin).run()), asyncio.create_task(agent.run())]
        await admin.create("v1", "pods", _pod("pending"), "default")
        await admin.create("v1", "pods", _pod("bound", nodeName="node1"), "default")
        # a tenant's pod that tolerates the taint: placed there by the scheduler, refused by the node
        tolerant = _pod(
            "tolerant", tolerations=[{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists"}]
        )
        tolerant_pod = await admin.create(
            "v1", "pods", {**tolerant, "metadata": {"name": "tolerant"}}, "shop"
        )

        async def scheduling_message() -> str | None:
            pod = await admin.get("v1", "pods", "pending", "default")
            for c in (pod.get("status") or {}).get("conditions") or []:
                # (the scheduler may answer "0/0 nodes" before its node cache fills)
                if c["type"] == "PodScheduled" and c["status"] == "False" and "1 node(s)" in c["message"]:
                    return str(c["message"])
            return None

        message = await wait_for_async(scheduling_message, what="the pod's PodScheduled=False")
        assert "1 node(s) had untolerated taint {node.kubernetes.io/disk-pressure: }" in message

        async def rejected() -> dict[str, Any] | None:
            status = (await admin.get("v1", "pods", "bound", "default")).get("status") or {}
            return status if status.get("phase") == "Failed" else None

        status = await wait_for_async(rejected, what="the bound pod refused by the node")

        async def tolerant_rejected() -> bool:
            status = (await admin.get("v1", "pods", "tolerant", "shop")).get("status") or {}
            return status.get("reason") == "Evicted"

        await wait_for_async(tolerant_rejected, what="the tolerant pod scheduled there and refused")
        assert status["reason"] == "Evicted"
        assert status["message"] == "Pod was rejected: The node had condition: [DiskPressure]. "
        # the agent's line about it, as JSON, with the pod's fields (hypernetes.logfmt)
        logging.getLogger("hypernetes.node").removeHandler(handler)
        lines = [json.loads(x) for x in logs.getvalue().splitlines()]
        by_pod = {x.get("pod"): x for x in lines if "rejected" in x["msg"]}
        assert by_pod["bound"]["namespace"] == "default" and "tenant" not in by_pod["bound"]
        line = by_pod["tolerant"]
        assert (line["namespace"], line["tenant"]) == ("shop", "acme")
        assert line["sandbox"] == tolerant_pod["metadata"]["uid"]
        # and its metrics on the process's registry while it runs
        scraped = exposition(REGISTRY).decode()
        assert "kubelet_running_pods 0.0" in scraped and "kubelet_started_pods_total 0.0" in scraped

        tasks.pop().cancel()  # no agent from here: the pod bound below gets no VM
        filler.unlink()
        clock.now += 10
        await agent.report_status()
        untainted = await wait_for_async(lambda: taints(admin, 1), what="the disk-pressure taint removed")
        assert untainted == [operator_taint]
        node = await admin.get("v1", "nodes", "node1")
        after = {c["type"]: c for c in node["status"]["conditions"]}
        assert after["DiskPressure"]["status"] == "False"
        assert after["DiskPressure"]["lastTransitionTime"] != conditions["DiskPressure"]["lastTransitionTime"]
        assert (
            after["MemoryPressure"]["lastTransitionTime"]
            == conditions["MemoryPressure"]["lastTransitionTime"]
        )

        # an agent started again (later) keeps the transition times of what did not change
        again = NodeAgent(
            node_client, runtime, "node1", pressure=NodePressure(small_fs / "rt", small_fs / "images")
        )
        await again.register()
        restarted = {c["type"]: c for c in (await admin.get("v1", "nodes", "node1"))["status"]["conditions"]}
        assert {t: c["lastTransitionTime"] for t, c in restarted.items()} == {
            t: c["lastTransitionTime"] for t, c in after.items()
        }
        assert restarted["Ready"]["lastHeartbeatTime"] >= after["Ready"]["lastHeartbeatTime"]

        async def bound() -> str | None:
            pod = await admin.get("v1", "pods", "pending", "default")
            return str(pod["spec"].get("nodeName") or "") or None

        assert await wait_for_async(bound, what="the pending pod bound") == "node1"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await agent.shutdown(stop_pods=True)
        await node_client.close()
        await admin.close()
        with contextlib.suppress(Exception):
            api.stop()
