"""`kubectl top` on real pod VMs: `hypernetes up` (its node agent in process), a pod whose guest
spins a CPU and an idle one, measured from the VMs' cgroups on the host and served as
metrics.k8s.io by the API server's scraper."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster, phase, pod_manifest, running_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    os.environ["HYPERNETES_METRICS_RESOLUTION"] = "3"  # the scrape interval, for a quicker test
    try:
        with running_cluster(tmp_path_factory.mktemp("metrics") / "data") as c:
            yield c
    finally:
        del os.environ["HYPERNETES_METRICS_RESOLUTION"]


def millicores(text: str) -> int:
    return int(text.removesuffix("m")) if text.endswith("m") else int(text) * 1000


def test_top_shows_a_spinning_pod_busy_and_an_idle_pod_low(cluster: Cluster, busybox_ref: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=pod_manifest("spin", busybox_ref, "while :; do :; done"))
    cluster.kubectl("apply", "-f", "-", input=pod_manifest("idle", busybox_ref, "sleep 3600"))
    cluster.wait_for("pods running", lambda: phase(cluster, "spin") == phase(cluster, "idle") == "Running")

    def usage() -> dict[str, tuple[int, str]] | None:
        out = cluster.kubectl("top", "pods", "--no-headers", check=False)
        if out.returncode != 0:
            return None
        rows = {r[0]: (millicores(r[1]), r[2]) for r in (line.split() for line in out.stdout.splitlines())}
        # a window after both booted: the spinning guest is busy, the idle one settled
        if set(rows) != {"spin", "idle"} or rows["spin"][0] <= 100 or rows["idle"][0] >= 100:
            return None
        return rows

    rows = cluster.wait_for("top pods to show spin busy and idle low", usage, timeout=120)
    # spin is held to its limit (500m) by its VM's cgroup; idle's VM barely runs
    assert 100 < rows["spin"][0] <= 600, rows
    assert rows["idle"][0] < 100, rows
    # memory: the VM's working set (guest RAM touched + QEMU), in Mi
    assert all(m.endswith("Mi") and int(m.removesuffix("Mi")) > 10 for _, m in rows.values()), rows
    containers = cluster.kubectl("top", "pods", "--containers", "--no-headers").stdout.split()
    assert containers[:2] in (["idle", "main"], ["spin", "main"]), containers
    nodes = cluster.kubectl("top", "nodes", "--no-headers").stdout.split()
    assert nodes[0] == "node1" and millicores(nodes[1]) >= rows["spin"][0] - 50, nodes
