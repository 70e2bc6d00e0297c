"""Many hosts end to end (issue 14), each host a network namespace on one underlay: 3 etcd
members, 2 control-plane hosts (API server, elected scheduler and controller manager), 2 node hosts
that join, real VMs. A Deployment spreads over both nodes and every pod's logs, exec and
port-forward work through the API server; a node host dies and its pods come back on the other;
the leading control plane dies and the other carries on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.etcd import etcd_cluster, have_etcd
from tests.support.guests import qemu_processes_under
from tests.support.hosts import ControlPlane, hosts, node_ready, port_forwarded, start_node
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not have_etcd(), reason="etcd is not installed")]

# failover and node loss in seconds, not minutes (upstream's defaults: 15/10/2, 40, 300)
FAST = [
    "--leader-elect-lease-duration", "6", "--leader-elect-renew-deadline", "4",
    "--leader-elect-retry-period", "1",
    "--node-monitor-grace-period", "8", "--default-unreachable-toleration-seconds", "3",
    "--default-not-ready-toleration-seconds", "3", "--scheduling", "spread",
]  # fmt: skip


def running(cp: ControlPlane, selector: str) -> list[dict[str, Any]]:
    pods = json.loads(cp.kubectl("get", "pods", "-l", selector, "-o", "json").stdout)["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def holder(cp: ControlPlane, lease: str) -> str:
    got = cp.kubectl("-n", "kube-system", "get", "lease", lease, "-o", "json", check=False)
    return json.loads(got.stdout)["spec"].get("holderIdentity") or "" if got.returncode == 0 else ""


def test_two_control_planes_two_nodes_on_three_etcd_members(
    tmp_path: Path, registry: object, busybox_ref: str
) -> None:
    with etcd_cluster(tmp_path / "etcd", size=3) as etcd, hosts(tmp_path / "hosts") as underlay:
        members = [underlay.expose(int(m.endpoint.rsplit(":", 1)[1])) for m in etcd.members]
        store = "etcd://" + ",".join(members)
        cp1 = ControlPlane(underlay, "--store", store, *FAST, name="cp1")
        wait_for(lambda: holder(cp1, "kube-controller-manager"), timeout=30, what="cp1 leads")
        cp2 = ControlPlane(underlay, "--store", store, *FAST, name="cp2", pki=cp1.host.data / "pki")
        leader = holder(cp1, "kube-controller-manager")

        served = underlay.expose(int(busybox_ref.split("/")[0].rsplit(":", 1)[1]))
        image = served + "/" + busybox_ref.split("/", 1)[1]
        nodes = [underlay.add(n) for n in ("n1", "n2")]
        tokens: dict[str, str] = {}
        for host in nodes:  # nodes talk to cp2, the API server that stays
            allow = ["--allow-registry", served, "--insecure-registry", served]
            tokens[host.name] = cp2.token()
            start_node(host, cp2, tokens[host.name], *allow, network=True)
        for name in ("n1", "n2"):
            wait_for(lambda n=name: node_ready(cp2, n), timeout=90, interval=0.5, what=f"node {name}")

        # a Deployment of 4 spreads over both nodes; every pod is reachable through either API server
        cp1.kubectl(
            "create", "deployment", "web", f"--image={image}", "--replicas=4", "--",
            "sh", "-c", "echo up on $(hostname); exec httpd -f -p 8080 -h /etc",
        )  # fmt: skip
        pods = wait_for(
            lambda: len(now := running(cp2, "app=web")) == 4 and now,
            timeout=300,
            interval=1,
            what="4 web pods",
        )
        assert sorted(p["spec"]["nodeName"] for p in pods) == ["n1", "n1", "n2", "n2"]
        for pod, cp in zip(pods, (cp1, cp2, cp1, cp2), strict=True):
            name = pod["metadata"]["name"]
            assert f"up on {name}" in wait_for(lambda n=name, c=cp: c.kubectl("logs", n, check=False).stdout)
            assert cp.kubectl("exec", name, "--", "cat", "/etc/hostname").stdout == f"{name}\n"
            assert port_forwarded(cp, name, "/etc/hostname") == f"{name}\n"

        # n2's agent dies and its VMs run on, unreachable: n2 goes NotReady, its pods come back on n1
        on_n2 = {p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == "n2"}
        orphans = qemu_processes_under(nodes[1].data)
        assert len(orphans) == 2
        nodes[1].kill(vms=False)
        wait_for(lambda: not node_ready(cp2, "n2"), timeout=60, interval=1, what="n2 NotReady")
        pods = wait_for(
            lambda: (
                len(now := running(cp2, "app=web")) == 4
                and not on_n2 & {p["metadata"]["name"] for p in now}
                and now
            ),
            timeout=180,
            interval=1,
            what="4 web pods again, none of n2's",
        )
        assert {p["spec"]["nodeName"] for p in pods} == {"n1"}
        # n2 comes back (as systemd restarts it: same command; it renews its saved credential) and
        # stops the VMs of pods that are gone
        start_node(nodes[1], cp2, tokens[nodes[1].name], *allow, network=True)
        wait_for(lambda: node_ready(cp2, "n2"), timeout=90, interval=0.5, what="n2 back")
        wait_for(lambda: not qemu_processes_under(nodes[1].data), timeout=60, what="n2's orphan VMs stopped")

        # the leading control plane dies: the other takes the leases, its controllers carry on
        cp1.stop()
        wait_for(
            lambda: holder(cp2, "kube-controller-manager") not in ("", leader), timeout=30, what="cp2 leads"
        )
        cp2.kubectl("scale", "deployment", "web", "--replicas=5")
        pods = wait_for(lambda: len(now := running(cp2, "app=web")) == 5 and now, timeout=180, interval=1)
        newest = max(pods, key=lambda p: p["metadata"]["creationTimestamp"])
        name = newest["metadata"]["name"]
        assert cp2.kubectl("exec", name, "--", "cat", "/etc/hostname").stdout == f"{name}\n"
