"""Many hosts: how long a host takes from `hypernetes node join` to a Ready Node, and how long the
controllers are gone when the leading control plane dies (issue 14).

Each host is a network namespace on one underlay (tests/support/hosts.py); the store is a real
etcd (one member); two control planes share it with a copied PKI, at upstream's leader-election
defaults (lease 15 s, renew deadline 10 s, retry 2 s) unless told otherwise.

- join-to-Ready: a fresh host each round, `node join` started → its Node is Ready (kubectl polled
  every 0.1 s), gVisor runtime and no network so the figure is the join itself, not a VM boot.
- failover: SIGKILL the leading control plane while a Deployment is scaled up through the other;
  measured: kill → the other holds kube-controller-manager, and kill → the ReplicaSet's new pod
  exists (the controllers acting again). The killed one comes back as the standby, and the next
  round kills the other: the two alternate.

`python bench/cluster.py [--joins 5] [--failovers 3]`; prints one JSON object per result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.etcd import etcd_cluster
from tests.support.hosts import ControlPlane, Hosts, hosts, node_ready, start_node
from tests.support.waiting import wait_for


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def holder(cp: ControlPlane) -> str:
    got = cp.kubectl(
        "-n", "kube-system", "get", "lease", "kube-controller-manager", "-o", "json", check=False
    )
    return (json.loads(got.stdout)["spec"].get("holderIdentity") or "") if got.returncode == 0 else ""


def pods(cp: ControlPlane) -> int:
    got = cp.kubectl("get", "pods", "-l", "app=f", "-o", "name", check=False)
    return len(got.stdout.split()) if got.returncode == 0 else -1


def joins(underlay: Hosts, cp: ControlPlane, rounds: int) -> list[float]:
    took = []
    for i in range(rounds):
        host = underlay.add(f"j{i}")
        token = cp.token()
        start = time.monotonic()
        start_node(host, cp, token, "--runtime", "gvisor")
        wait_for(lambda h=host: node_ready(cp, h.name.rsplit("x", 1)[1]), timeout=120, interval=0.1)
        took.append(time.monotonic() - start)
        emit(bench="join-to-ready", round=i, seconds=round(took[-1], 3))
        host.kill()
    return took


def failovers(underlay: Hosts, store: str, rounds: int, election: list[str]) -> list[tuple[float, float]]:
    first = ControlPlane(underlay, "--store", store, *election, name="cp1")
    wait_for(lambda: holder(first), timeout=60, what="a leader")
    second = ControlPlane(underlay, "--store", store, *election, name="cp2", pki=first.host.data / "pki")
    leader, standby = first, second
    leader.kubectl("create", "deployment", "f", "--image=busybox:1", "--replicas=0")
    took = []
    for i in range(rounds):
        took.append(_failover(leader, standby))
        emit(
            bench="failover",
            round=i,
            elected_seconds=round(took[-1][0], 3),
            acting_seconds=round(took[-1][1], 3),
        )
        # the dead one comes back as the standby; next round the other dies
        leader.host.start(*_up_args(leader, store, election), log="up.log")
        wait_for(leader._ready, timeout=90)
        leader, standby = standby, leader
    return took


def _failover(leader: ControlPlane, standby: ControlPlane) -> tuple[float, float]:
    """SIGKILL `leader`; (seconds until `standby` holds the lease, until its controllers act)."""
    wait_for(lambda: holder(standby), timeout=60)
    was = holder(standby)
    want = pods(standby) + 1
    start = time.monotonic()
    leader.stop(signal.SIGKILL)
    standby.kubectl("scale", "deployment", "f", f"--replicas={want}")
    try:
        wait_for(lambda: holder(standby) not in ("", was), timeout=120, interval=0.1)
    except AssertionError:
        print(standby.host.log("up.log"), file=sys.stderr)
        raise
    elected = time.monotonic() - start
    wait_for(lambda: pods(standby) >= want, timeout=120, interval=0.1)
    return elected, time.monotonic() - start


def _up_args(cp: ControlPlane, store: str, election: list[str]) -> list[str]:
    return [
        "up", "--no-node", "--host", cp.host.address, "--port", "6443", "--data-dir", str(cp.host.data),
        "--tls-san", cp.host.address, "--store", store, *election,
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--joins", type=int, default=5)
    ap.add_argument("--failovers", type=int, default=3)
    ap.add_argument("--lease-duration", default="15")
    ap.add_argument("--renew-deadline", default="10")
    ap.add_argument("--retry-period", default="2")
    args = ap.parse_args()
    election = [
        "--leader-elect-lease-duration", args.lease_duration, "--leader-elect-renew-deadline",
        args.renew_deadline, "--leader-elect-retry-period", args.retry_period,
    ]  # fmt: skip
    host = {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    emit(machine=platform.node(), **host, loadavg=os.getloadavg(), election=election)
    with (
        tempfile.TemporaryDirectory() as tmp,
        etcd_cluster(Path(tmp) / "etcd") as etcd,
        hosts(Path(tmp) / "hosts") as underlay,
    ):
        store = "etcd://" + underlay.expose(int(etcd.members[0].endpoint.rsplit(":", 1)[1]))
        cp = ControlPlane(underlay, "--store", store, "--no-leader-elect", name="joincp")
        took = joins(underlay, cp, args.joins)
        emit(bench="join-to-ready", median=round(statistics.median(took), 3), max=round(max(took), 3))
        cp.stop()
        fo = failovers(underlay, store, args.failovers, election)
        emit(
            bench="failover",
            elected_median=round(statistics.median(e for e, _ in fo), 3),
            acting_median=round(statistics.median(a for _, a in fo), 3),
            acting_max=round(max(a for _, a in fo), 3),
            loadavg=os.getloadavg(),
        )


if __name__ == "__main__":
    main()
