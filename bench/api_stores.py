"""The API benchmark on each store, in one run: SQLite, etcd with one member, etcd with three
members (on loopback, started here). Single-object requests at a fixed rate (50% get, 25%
create, 25% merge patch of ConfigMaps) and one write fanned out to 100 watchers, the API server
in its own process; the stores in ABBA order. With each latency result, the CPU time the API
server and the etcd members spent per request. One JSON object per result.
`python bench/api_stores.py [--rate 200] [--seconds 20] [--rounds 2]`"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.apiload import _child_server, process_cpu, request_latency, watch_fanout
from tests.support.etcd import EtcdCluster, etcd_cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    # where the stores keep their data (default: the system's temporary directory); /dev/shm
    # takes the disk out, to tell the members' shared disk from the rest
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d, contextlib.ExitStack() as stack:
        tmp = Path(d)
        one = stack.enter_context(etcd_cluster(tmp / "etcd1"))
        three = stack.enter_context(etcd_cluster(tmp / "etcd3", size=3))
        stores = {"sqlite": None, "etcd-1": one, "etcd-3": three}
        for rnd in range(args.rounds):
            order = list(stores) if rnd % 2 == 0 else list(reversed(stores))
            for name in order:
                work = tmp / f"{name}-{rnd}"
                work.mkdir()
                cluster = stores[name]
                url = (
                    f"sqlite:///{work}/state.db"
                    if cluster is None
                    else f"{cluster.url}?prefix=/bench{rnd}&compaction-interval=0"
                )
                members = [m.proc.pid for m in cluster.members if m.proc] if cluster else []
                with _child_server(work, url, False) as srv:
                    api, token, ca = srv.url, srv.admin_token, srv.ca
                    cpu0 = process_cpu(srv.pid), sum(process_cpu(p) for p in members)
                    slow0 = _slow_warnings(cluster) if cluster else 0
                    lat = asyncio.run(request_latency(api, token, ca, rate=args.rate, seconds=args.seconds))
                    cpu1 = process_cpu(srv.pid), sum(process_cpu(p) for p in members)
                    # CPU per request: what the load costs, whatever else runs on the machine
                    per = {
                        "api_cpu_ms_per_req": round((cpu1[0] - cpu0[0]) * 1000 / lat["requests"], 3),
                        "etcd_cpu_ms_per_req": round((cpu1[1] - cpu0[1]) * 1000 / lat["requests"], 3),
                    }
                    per["etcd_slow_warnings"] = _slow_warnings(cluster) - slow0 if cluster else 0
                    print(json.dumps({"store": name, "round": rnd, **lat, **per}), flush=True)
                    fan = asyncio.run(watch_fanout(api, token, ca))
                    print(json.dumps({"store": name, "round": rnd, **fan}), flush=True)


def _slow_warnings(cluster: EtcdCluster) -> int:
    """etcd's own complaints so far: disk syncs and applies slower than it expects (a stalled
    disk shows here, not in the API server)."""
    n = 0
    for m in cluster.members:
        with contextlib.suppress(OSError):
            n += sum(
                1
                for line in m.log.read_text(errors="replace").splitlines()
                if "slow fdatasync" in line or "took too long" in line
            )
    return n


if __name__ == "__main__":
    main()
