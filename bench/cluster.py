"""How long a host takes from `hypernetes node join` to a Ready Node (issue 14).

Each host is a network namespace on one underlay (tests/support/hosts.py); the control plane is
`hypernetes up --no-node` on a real etcd (one member). Each round joins a fresh host with a fresh
token and polls its Node every 0.1 s: the CA fetched and checked against the pin, the credential
and serving certificate issued, the agent started and its Node registered Ready. The gVisor
runtime and no tenant networks, so the figure is the join, not a VM boot. (Controller failover
is `bench/failover.py`.)

`python bench/cluster.py [--joins 5]`; prints one JSON object per result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--joins", type=int, default=5)
    args = ap.parse_args()
    host = {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    emit(machine=platform.node(), **host, loadavg=os.getloadavg())
    with (
        tempfile.TemporaryDirectory() as tmp,
        etcd_cluster(Path(tmp) / "etcd") as etcd,
        hosts(Path(tmp) / "hosts") as underlay,
    ):
        store = "etcd://" + underlay.expose(int(etcd.members[0].endpoint.rsplit(":", 1)[1]))
        cp = ControlPlane(underlay, "--store", store, name="joincp")
        took = joins(underlay, cp, args.joins)
        summary = {"median": round(statistics.median(took), 3), "max": round(max(took), 3)}
        emit(bench="join-to-ready", **summary, loadavg=os.getloadavg())


if __name__ == "__main__":
    main()
