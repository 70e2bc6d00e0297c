"""Density and start rate (issue 15): templates vs cold boots vs gVisor, in one process.

Start rate: `--pods` idle `sleep` pods (128 MiB VMs) started at once, at most `--parallel` at a
time (what a node agent with that many pod workers does), from the first create to the last
pod's first output line: pods per second on this host (2 cores here). Then, with all of them
idle: the host PSS per pod (shared pages split among the pods; a template's RAM file counted as
far as the clones map it, plus its whole tmpfs size once per node) and what follows for a host
memory budget: how many such idle pods fit in `--budget-gib` GiB. The peers run in ABBA order.

Run as root after `make setup`: `.venv/bin/python bench/density.py --pods 16 --parallel 2`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.startup import image_and_template_dirs, pids_matching, pss_kib, start_idle  # noqa: E402
from bench.templates import loadavg, tmpfs_resident_mib  # noqa: E402
from hypernetes.runtime.images import ImageStore  # noqa: E402
from hypernetes.runtime.interface import Runtime  # noqa: E402
from hypernetes.runtime.kernels import KernelRegistry  # noqa: E402
from hypernetes.runtime.paths import agent_binary  # noqa: E402


async def one_peer(
    peer: str, runtime: Runtime, prefix: str, pods: int, parallel: int, budget_gib: float, tpl_root: Path
) -> dict[str, object]:
    names = [f"{prefix}-{i:03d}" for i in range(pods)]
    gate = asyncio.Semaphore(parallel)

    async def start(name: str) -> None:
        async with gate:
            await start_idle(runtime, name)

    try:
        t0 = time.monotonic()
        await asyncio.gather(*(start(n) for n in names))
        elapsed = time.monotonic() - t0
        await asyncio.sleep(3)  # idle
        per_pod = statistics.mean(pss_kib(pids_matching(n)) for n in names) / 1024
        fixed = tmpfs_resident_mib(tpl_root) if peer == "template" else 0.0
        row: dict[str, object] = {
            "bench": "density",
            "peer": peer,
            "pods": pods,
            "parallel": parallel,
            "start_s": round(elapsed, 2),
            "pods_per_s": round(pods / elapsed, 2),
            "pss_mib_per_pod": round(per_pod, 1),
            "node_fixed_mib": round(fixed, 1),
            f"pods_in_{budget_gib:g}_gib": int((budget_gib * 1024 - fixed) // per_pod),
            "loadavg": loadavg(),
        }
        print(json.dumps(row), flush=True)
        return row
    finally:
        await asyncio.gather(*(runtime.remove_sandbox(n) for n in names), return_exceptions=True)


async def run(args: argparse.Namespace, data: Path, tpl_root: Path) -> list[dict[str, object]]:
    from hypernetes.runtime.gvisor import GVisor
    from hypernetes.runtime.hypervm import HyperVM
    from hypernetes.runtime.templates import TemplateStore

    store = ImageStore(data / "images")
    kernels = KernelRegistry(data / "kernels", agent_binary())
    templates = TemplateStore(tpl_root)
    peers: list[tuple[str, Runtime]] = [
        ("template", HyperVM(data / "rt-tpl", store, kernels, accel="tcg", templates=templates)),
        ("cold", HyperVM(data / "rt-cold", store, kernels, accel="tcg")),
        ("gvisor", GVisor(data / "rt-gvisor", store)),
    ]
    peers = [(n, r) for n, r in peers if n not in args.skip]
    if any(n == "template" for n, _ in peers):  # the shape's first pod boots cold and has it built
        await one_peer("template", peers[0][1], "warm", 1, 1, args.budget_gib, tpl_root)
        await templates.wait_built()
    rows = []
    for r in range(args.rounds):
        for name, runtime in peers if r % 2 == 0 else list(reversed(peers)):
            rows.append(
                await one_peer(
                    name, runtime, f"d{r}{name[0]}", args.pods, args.parallel, args.budget_gib, tpl_root
                )
            )
    await templates.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=2, help="pods started at a time")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds")
    parser.add_argument("--budget-gib", type=float, default=8.0)
    parser.add_argument("--skip", action="append", default=[], help="peer names to skip")
    args = parser.parse_args()
    print(json.dumps({"bench": "machine", "loadavg_start": loadavg()}), flush=True)
    with image_and_template_dirs("hn-bench-density-") as (data, tpl):
        rows = asyncio.run(run(args, data, tpl))
    key = f"pods_in_{args.budget_gib:g}_gib"
    budget = f"{args.budget_gib:g} GiB"
    print(f"\n| peer | pods/s ({args.parallel} at a time) | PSS MiB/pod | idle pods in {budget} |")
    print("|---|---|---|---|")
    for peer in dict.fromkeys(str(r["peer"]) for r in rows):
        mine = [r for r in rows if r["peer"] == peer]
        rate = statistics.median(float(r["pods_per_s"]) for r in mine)  # type: ignore[arg-type]
        pss = statistics.median(float(r["pss_mib_per_pod"]) for r in mine)  # type: ignore[arg-type]
        fits = statistics.median(int(r[key]) for r in mine)  # type: ignore[call-overload]
        print(f"| {peer} | {rate:.2f} | {pss:.1f} | {fits:g} |")
    print(json.dumps({"bench": "machine_end", "loadavg_end": loadavg()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
