"""Scheduler throughput: pods bound per second with 100 Node objects and 1,000 pending pods.

The API server runs in its own process (memory store, or `--store sqlite`); no node agents: the
nodes are objects with Ready=True and allocatable CPU/memory. Prints one JSON object.
`python bench/scheduler.py [--nodes 100] [--pods 1000] [--store memory|sqlite]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypernetes.apiclient import ApiClient
from hypernetes.scheduler.loop import Scheduler
from tests.support.apiload import server_process


def node(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"node-{i:03d}", "labels": {"kubernetes.io/hostname": f"node-{i:03d}"}},
        "status": {
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"pod-{i:04d}", "namespace": "default"},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox", "resources": {"limits": {"cpu": "250m", "memory": "128Mi"}}}
            ]
        },
    }


async def run(url: str, token: str, ca: Path, nodes: int, pods: int) -> dict[str, Any]:
    async with ApiClient(url, token=token, ca_file=ca) as c:
        for i in range(nodes):
            created = await c.create("v1", "nodes", node(i))
            await c.patch(
                "v1",
                "nodes",
                created["metadata"]["name"],
                {"status": node(i)["status"]},
                subresource="status",
            )
        sem = asyncio.Semaphore(16)

        async def make(i: int) -> None:
            async with sem:
                await c.create("v1", "pods", pod(i), "default")

        await asyncio.gather(*(make(i) for i in range(pods)))
        scheduler = Scheduler(c)
        start = time.monotonic()
        task = asyncio.create_task(scheduler.run())
        while scheduler.bound < pods:
            await asyncio.sleep(0.05)
            if time.monotonic() - start > 600:
                break
        elapsed = time.monotonic() - start
        task.cancel()
        listed = await c.list("v1", "pods", "default")
        bound = sum(1 for p in listed["items"] if (p.get("spec") or {}).get("nodeName"))
        per_node: dict[str, int] = {}
        for p in listed["items"]:
            per_node[p["spec"].get("nodeName", "")] = per_node.get(p["spec"].get("nodeName", ""), 0) + 1
        return {
            "bench": "scheduler",
            "nodes": nodes,
            "pods": pods,
            "bound": bound,
            "seconds": round(elapsed, 2),
            "pods_per_second": round(bound / elapsed, 1),
            "nodes_used": len([n for n in per_node if n]),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = "memory" if args.store == "memory" else f"sqlite:///{tmp}/state.db"
        with server_process(Path(tmp), store) as (url, token, ca):
            print(json.dumps(asyncio.run(run(url, token, ca, args.nodes, args.pods))), flush=True)


if __name__ == "__main__":
    main()
