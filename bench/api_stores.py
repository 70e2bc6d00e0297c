"""The API benchmark on each store, in one run: SQLite, etcd with one member, etcd with three
members (on loopback, started here). Single-object requests at a fixed rate (50% get, 25%
create, 25% merge patch of ConfigMaps) and one write fanned out to 100 watchers, the API server
in its own process; the stores in ABBA order. One JSON object per result.
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

from tests.support.apiload import request_latency, server_process, watch_fanout
from tests.support.etcd import etcd_cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
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
                with server_process(work, url) as (api, token, ca):
                    lat = asyncio.run(request_latency(api, token, ca, rate=args.rate, seconds=args.seconds))
                    print(json.dumps({"store": name, "round": rnd, **lat}), flush=True)
                    fan = asyncio.run(watch_fanout(api, token, ca))
                    print(json.dumps({"store": name, "round": rnd, **fan}), flush=True)


if __name__ == "__main__":
    main()
